//! `chain-append`: entries added to an existing chain, one committed manifest at a time.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::Options;
use crate::archive::Archive;
use crate::delta::{DeltaOptions, Precision, hex};
use crate::error::{Error, Result};
use crate::io::fs::{lock_dir, sha256_file, sync_dir, work_dir};
use crate::lossy::Grid;
use crate::lossy::{LossyOptions, Mode};

use super::build::{Chain, check_input, check_uniform, grid_of, restore_entry};
use super::compress::unstage;
use super::manifest::{
    ChainEntry, ChainEntryKind, ChainManifest, check_entry_name_len, entry_file_name, input_alias,
    read_manifest, write_manifest,
};
use super::orphans::{clean_temps, set_aside};
use super::{AppendedEntry, ChainReport};

/// Adds `checkpoints` to the chain in `dir`, in order, with the chain's precision and depth
/// limit. The manifest is replaced after every entry, atomically: an interrupted append
/// leaves a valid chain of the entries committed so far; leftovers of interrupted runs are
/// removed first.
pub fn chain_append(dir: &Path, checkpoints: &[PathBuf], opts: &Options) -> Result<ChainReport> {
    let start = Instant::now();
    if checkpoints.is_empty() {
        return Err(Error::InvalidArgument(
            "chain-append needs at least one checkpoint".into(),
        ));
    }
    let m = read_manifest(dir)?;
    let (names, folders): (Vec<String>, Vec<bool>) = checkpoints
        .iter()
        .map(|p| check_input(p, m.precision))
        .collect::<Result<Vec<_>>>()?
        .into_iter()
        .unzip();
    check_uniform(checkpoints, &folders, m.entries.first().map(|e| e.folder))?;
    let _lock = lock_dir(dir)?;
    // Read again under the lock: another writer may have appended meanwhile.
    let mut m = read_manifest(dir)?;
    clean_temps(dir, None)?;
    let listed: BTreeSet<&str> = m.entries.iter().map(|e| e.file.as_str()).collect();
    let set_aside = set_aside(dir, &listed, !opts.no_sync)?;
    let work = work_dir(dir)?;
    let mut cursor = Cursor::default();
    if let Some(last) = m.entries.last()
        && last.depth < m.max_depth
    {
        // The next entry may be a delta: its base is the last entry's reconstruction.
        let chain = Chain::new(dir, &m, opts)?;
        let needed: Vec<usize> = m.needed_for(last.index).collect();
        cursor.base = chain.restore_one(last.index, work.path())?;
        if m.precision != Precision::Lossless {
            let anchor = &m.entries[needed[0]];
            let archive = Archive::open(&dir.join(&anchor.file))?;
            cursor.grid = grid_of(&archive).into_iter().collect();
        }
    }
    let report = append_all(
        dir,
        &mut m,
        checkpoints,
        &names,
        &mut cursor,
        work.path(),
        opts,
        start,
    )
    .map_err(|e| unstage(e, work.path(), dir))?;
    Ok(ChainReport {
        set_aside,
        ..report
    })
}

/// The base for the next delta.
#[derive(Default)]
pub(super) struct Cursor {
    /// The last entry's reconstruction (its original for lossless chains), when the next
    /// entry may be a delta.
    base: Option<PathBuf>,
    /// The current anchor's grid (quantized chains).
    grid: HashMap<String, Grid>,
}

#[allow(clippy::too_many_arguments)]
pub(super) fn append_all(
    dir: &Path,
    m: &mut ChainManifest,
    checkpoints: &[PathBuf],
    names: &[String],
    cursor: &mut Cursor,
    work: &Path,
    opts: &Options,
    start: Instant,
) -> Result<ChainReport> {
    let entries_before = m.entries.len();
    for (j, (p, n)) in checkpoints.iter().zip(names).enumerate() {
        check_entry_name_len(p, entries_before + j, n)?;
    }
    let sync = !opts.no_sync;
    let inner = Options {
        threads: opts.threads,
        force: true,
        no_sync: opts.no_sync,
        progress: opts.progress.clone(),
        cancel: opts.cancel.clone(),
    };
    let lossy = LossyOptions {
        mode: match m.precision {
            Precision::Lossless => Mode::Lossless,
            Precision::Int16 => Mode::Int16,
            Precision::Int32 => Mode::Int32,
        },
        // Later checkpoints keep the anchor's coordinates: a step shared by role leaves the
        // smaller layers headroom.
        shared_grids: m.precision != Precision::Lossless,
        ..LossyOptions::default()
    };
    let pool = opts.pool()?;
    let standalone = work.join("standalone.dmx");
    let delta = work.join("delta.dmxd");
    let mut appended = Vec::with_capacity(checkpoints.len());
    for (j, (ckpt, name)) in checkpoints.iter().zip(names).enumerate() {
        opts.check_cancel()?;
        let t0 = Instant::now();
        let source = input_alias(work, ckpt, name)?;
        let standalone_size =
            crate::compress_with(&source, &standalone, &lossy, &inner)?.output_bytes;
        let prev = m.entries.last();
        let (delta_size, delta_error) = match (prev, &cursor.base) {
            (Some(p), Some(base)) if p.depth < m.max_depth => {
                try_delta(m.precision, cursor, base, &source, &delta, &inner)?
            }
            _ => (None, None),
        };
        // The delta only when strictly smaller: the entry never exceeds its standalone size,
        // and ties go to the anchor, which is cheaper to restore.
        let kind = match delta_size {
            Some(d) if d < standalone_size => ChainEntryKind::Delta,
            _ => ChainEntryKind::Anchor,
        };
        let (src, loser) = match kind {
            ChainEntryKind::Anchor => (&standalone, &delta),
            ChainEntryKind::Delta => (&delta, &standalone),
        };
        let (entry, archive) = new_entry(m, kind, src, ckpt, name, &standalone, standalone_size)?;
        let depth = entry.depth;
        // The base of the next entry, if it may be a delta.
        if j + 1 < checkpoints.len() && depth < m.max_depth {
            next_base(
                m.precision,
                cursor,
                &entry,
                ckpt,
                &archive,
                work,
                &pool,
                opts,
            )?;
        } else {
            cursor.base = None;
        }
        drop(archive);
        // Commit: the entry file first (it replaces any orphan of that name), then the
        // manifest that references it.
        let dest = dir.join(&entry.file);
        std::fs::rename(src, &dest).map_err(|e| Error::io(&dest, e))?;
        if sync {
            sync_dir(dir);
        }
        let _ = std::fs::remove_file(loser);
        m.entries.push(entry.clone());
        write_manifest(dir, m, sync)?;
        appended.push(AppendedEntry {
            entry,
            delta_size,
            delta_error,
            seconds: t0.elapsed().as_secs_f64(),
        });
    }
    Ok(report(dir, m, entries_before, appended, start))
}

/// Stores `source` as a delta from `base` in `delta`: its size, or why the engine refused it
/// (nothing wrong with the chain or the disk: [`Error::is_refusal`]), which leaves the
/// standalone archive: an anchor.
fn try_delta(
    precision: Precision,
    cursor: &Cursor,
    base: &Path,
    source: &Path,
    delta: &Path,
    opts: &Options,
) -> Result<(Option<u64>, Option<String>)> {
    let d = DeltaOptions {
        precision,
        steps: (precision != Precision::Lossless).then(|| cursor.grid.clone()),
    };
    match crate::delta_compress(base, source, delta, &d, opts) {
        Ok(r) => Ok((Some(r.output_bytes), None)),
        Err(e) if e.is_refusal() => Ok((None, Some(e.to_string()))),
        Err(e) => Err(e),
    }
}

/// The SHA-256 of checkpoint `ckpt` as it was read: lossless, the hash both archives took
/// (which must agree); quantized, the file hashed again (its size must not have changed).
fn original_sha256(
    precision: Precision,
    kind: ChainEntryKind,
    ckpt: &Path,
    standalone: &Path,
    restored: &[u8; 32],
    original_size: u64,
) -> Result<String> {
    if precision == Precision::Lossless {
        if kind == ChainEntryKind::Delta
            && Archive::open(standalone)?.index().entries[0].sha256 != *restored
        {
            return Err(Error::changed(ckpt, "the file changed while being read"));
        }
        return Ok(hex(restored));
    }
    let (sha, size) = sha256_file(ckpt)?;
    if size != original_size {
        return Err(Error::changed(ckpt, "the file changed while being read"));
    }
    Ok(sha)
}

/// Makes `entry` (stored in `archive`) the base of the next entry: the checkpoint itself
/// for lossless chains, else its reconstruction (on the anchor's grid, which it records).
#[allow(clippy::too_many_arguments)]
fn next_base(
    precision: Precision,
    cursor: &mut Cursor,
    entry: &ChainEntry,
    ckpt: &Path,
    archive: &Archive,
    work: &Path,
    pool: &rayon::ThreadPool,
    opts: &Options,
) -> Result<()> {
    if precision == Precision::Lossless {
        cursor.base = Some(ckpt.to_path_buf());
        return Ok(());
    }
    let recon = work.join(format!("restored-{:05}.safetensors", entry.index));
    let base = match entry.kind {
        ChainEntryKind::Anchor => None,
        ChainEntryKind::Delta => cursor.base.clone(),
    };
    restore_entry(pool, opts, archive, base.as_deref(), &recon, true, false)?;
    if let Some(old) = cursor.base.replace(recon) {
        let _ = std::fs::remove_file(old);
    }
    if entry.kind == ChainEntryKind::Anchor {
        cursor.grid = entry.steps.clone().into_iter().collect();
    }
    Ok(())
}

/// The manifest entry for checkpoint `ckpt` stored as `kind` in `src` (with the standalone
/// archive `standalone` of `standalone_size` bytes), and the opened archive.
fn new_entry(
    m: &ChainManifest,
    kind: ChainEntryKind,
    src: &Path,
    ckpt: &Path,
    name: &str,
    standalone: &Path,
    standalone_size: u64,
) -> Result<(ChainEntry, Archive)> {
    let index = m.entries.len();
    let prev = m.entries.last();
    let archive = Archive::open(src)?;
    let (restored_sha256, original_size, original_sha256) = if ckpt.is_dir() {
        // Folders: lossless chains only (checked before anything was stored).
        let h = super::folder::folder_hash(ckpt)?;
        super::folder::check_archive(&archive, &h, ckpt)?;
        (h.sha256.clone(), h.size, h.sha256)
    } else {
        let fits = archive.index().entries.first().is_some_and(|e| {
            e.kind.has_tensors() && e.kind.is_delta() == (kind == ChainEntryKind::Delta)
        });
        if !fits {
            return Err(Error::changed(
                ckpt,
                "is no longer a valid checkpoint file (it changed while being read)",
            ));
        }
        let restored = archive.index().entries[0].sha256;
        let original_size = archive.index().entries[0].size;
        let original_sha256 = original_sha256(
            m.precision,
            kind,
            ckpt,
            standalone,
            &restored,
            original_size,
        )?;
        (hex(&restored), original_size, original_sha256)
    };
    let steps = match (kind, m.precision) {
        (ChainEntryKind::Anchor, Precision::Int16 | Precision::Int32) => grid_of(&archive),
        _ => BTreeMap::new(),
    };
    let (stored_sha256, stored_size) = sha256_file(src)?;
    let depth = match kind {
        ChainEntryKind::Anchor => 0,
        ChainEntryKind::Delta => prev.map_or(0, |p| p.depth + 1),
    };
    let entry = ChainEntry {
        index,
        name: name.to_string(),
        file: entry_file_name(index, name, kind),
        kind,
        parent: (kind == ChainEntryKind::Delta).then(|| index - 1),
        depth,
        original_sha256,
        original_size,
        restored_sha256,
        stored_sha256,
        stored_size,
        standalone_size,
        folder: ckpt.is_dir(),
        steps,
    };
    Ok((entry, archive))
}

/// The report of an append that added `appended` to the `entries_before` entries of `m`.
fn report(
    dir: &Path,
    m: &ChainManifest,
    entries_before: usize,
    appended: Vec<AppendedEntry>,
    start: Instant,
) -> ChainReport {
    let sum = |f: fn(&AppendedEntry) -> u64| appended.iter().map(f).sum::<u64>();
    ChainReport {
        dir: dir.display().to_string(),
        precision: m.precision,
        max_depth: m.max_depth,
        entries_before,
        entries: m.entries.len(),
        original_bytes: sum(|a| a.entry.original_size),
        stored_bytes: sum(|a| a.entry.stored_size),
        standalone_bytes: sum(|a| a.entry.standalone_size),
        appended,
        set_aside: Vec::new(),
        seconds: start.elapsed().as_secs_f64(),
    }
}
