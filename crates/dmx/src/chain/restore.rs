//! `chain-reconstruct` and `chain-verify`: entries restored from their anchor and deltas.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::time::Instant;

use serde::Serialize;

use crate::Options;
use crate::delta::Precision;
use crate::error::{Error, Result};
use crate::io::fs::work_dir;
use crate::io::kind_of;

use super::build::Chain;
use super::manifest::{ChainEntryKind, ChainManifest, read_manifest};
use super::orphans::find_orphans;

/// One entry restored by [`chain_reconstruct`].
#[derive(Debug, Clone, Serialize)]
pub struct ReconstructedEntry {
    /// Chain index.
    pub index: usize,
    /// Original file name.
    pub name: String,
    /// The file written, when it succeeded.
    pub output: Option<String>,
    /// Why it failed (the entry is missing or corrupt, or depends on one that is).
    pub error: Option<String>,
}

/// What [`chain_reconstruct`] did.
#[derive(Debug, Clone, Serialize)]
pub struct ReconstructReport {
    /// The chain folder.
    pub dir: String,
    /// The output folder.
    pub output_dir: String,
    /// True when every requested entry was restored.
    pub ok: bool,
    /// The requested entries, in index order.
    pub entries: Vec<ReconstructedEntry>,
    /// Every entry that was read (requested entries, their anchors and the deltas between).
    pub touched: Vec<usize>,
    /// Bytes written.
    pub output_bytes: u64,
    /// Wall time in seconds.
    pub seconds: f64,
}

/// Restores the entries `indices` (all when `None`) of the chain in `dir` into the folder
/// `output` (created if needed) under their original file names, prefixed with their index
/// (`{index:05}-`) only when two requested entries share a name. Reads only the anchors and
/// deltas the requested entries need; checks every stored file's SHA-256 before use and every
/// restored file's after. A missing or corrupt entry fails the entries that depend on it (the
/// report names it) while the others are restored; existing outputs are refused unless
/// `opts.force`.
pub fn chain_reconstruct(
    dir: &Path,
    output: &Path,
    indices: Option<&[usize]>,
    opts: &Options,
) -> Result<ReconstructReport> {
    let start = Instant::now();
    let m = read_manifest(dir)?;
    let n = m.entries.len();
    let requested: BTreeSet<usize> = match indices {
        Some(list) => {
            if let Some(&bad) = list.iter().find(|&&i| i >= n) {
                return Err(Error::InvalidArgument(format!(
                    "index {bad} is out of range: the chain in {} has {n} entries (0..{})",
                    dir.display(),
                    n.saturating_sub(1)
                )));
            }
            list.iter().copied().collect()
        }
        None => (0..n).collect(),
    };
    crate::io::refuse_dash(output, true)?;
    check_output_dir(dir, output)?;
    let mut count: HashMap<&str, usize> = HashMap::new();
    for &i in &requested {
        *count.entry(m.entries[i].name.as_str()).or_default() += 1;
    }
    let mut out_name: BTreeMap<usize, String> = requested
        .iter()
        .map(|&i| {
            let name = &m.entries[i].name;
            let n = if count[name.as_str()] > 1 {
                format!("{i:05}-{name}")
            } else {
                name.clone()
            };
            (i, n)
        })
        .collect();
    let distinct: BTreeSet<&String> = out_name.values().collect();
    if distinct.len() != out_name.len() {
        for (i, n) in out_name.iter_mut() {
            *n = format!("{i:05}-{}", m.entries[*i].name);
        }
    }
    let chain = Chain::new(dir, &m, opts)?;
    for (&i, n) in &out_name {
        let path = output.join(n);
        if m.entries[i].folder {
            check_output_folder(&path, opts.force)?;
        } else {
            check_output_file(&path, opts.force)?;
        }
    }
    let created = match std::fs::metadata(output) {
        Ok(_) => false,
        Err(_) => {
            std::fs::create_dir_all(output).map_err(|e| Error::io(output, e))?;
            true
        }
    };
    let needed: BTreeSet<usize> = requested.iter().flat_map(|&i| m.needed_for(i)).collect();
    let needed: Vec<usize> = needed.into_iter().collect();
    let result = restore_into(&chain, &m, output, &requested, &out_name, &needed);
    if created && result.as_ref().map_or(true, |(_, bytes)| *bytes == 0) {
        // Nothing was restored: do not leave the empty folder this run created.
        let _ = std::fs::remove_dir(output);
    }
    let (entries, output_bytes) = result?;
    Ok(ReconstructReport {
        dir: dir.display().to_string(),
        output_dir: output.display().to_string(),
        ok: entries.iter().all(|e| e.error.is_none()),
        entries,
        touched: needed,
        output_bytes,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// The restoring part of [`chain_reconstruct`]: the entries `needed` rebuilt with a scratch
/// folder in `output`, the `requested` ones written there under `out_name`. Returns the
/// requested entries' outcomes and the bytes written.
pub(super) fn restore_into(
    chain: &Chain<'_>,
    m: &ChainManifest,
    output: &Path,
    requested: &BTreeSet<usize>,
    out_name: &BTreeMap<usize, String>,
    needed: &[usize],
) -> Result<(Vec<ReconstructedEntry>, u64)> {
    let scratch = work_dir(output)?;
    let mut entries: BTreeMap<usize, ReconstructedEntry> = BTreeMap::new();
    let mut output_bytes = 0;
    chain.rebuild(
        needed,
        scratch.path(),
        &|_| false,
        &|i| out_name.get(&i).map(|n| output.join(n)),
        &mut |i, r| {
            if !requested.contains(&i) {
                return;
            }
            let e = &m.entries[i];
            let (out, error) = match r {
                Ok(p) => {
                    output_bytes += e.original_size;
                    (Some(p.display().to_string()), None)
                }
                Err(err) => (None, Some(err.to_string())),
            };
            entries.insert(
                i,
                ReconstructedEntry {
                    index: i,
                    name: e.name.clone(),
                    output: out,
                    error,
                },
            );
        },
    )?;
    Ok((entries.into_values().collect(), output_bytes))
}

/// Refuses an output folder that is the chain folder `dir`, is inside it, or contains it,
/// however spelled (`.`, `..`, `x/..`, symbolic links), or that exists and is not a folder.
pub(super) fn check_output_dir(dir: &Path, output: &Path) -> Result<()> {
    let chain = dir.canonicalize().map_err(|e| Error::io(dir, e))?;
    let out = crate::io::resolve(output).ok_or_else(|| {
        Error::io(
            output,
            std::io::Error::other("cannot resolve the path (no current folder)"),
        )
    })?;
    let why = if out == chain {
        Some(("is the chain folder", "a folder outside it"))
    } else if out.starts_with(&chain) {
        Some(("is inside the chain folder", "a folder outside it"))
    } else {
        // An OUT that merely holds the chain folder (`--output-dir .` beside `./chain`) is
        // fine: only the restored files are written, and none may replace a folder.
        None
    };
    if let Some((why, hint)) = why {
        return Err(Error::Destination(format!(
            "output folder {} {why} {}; restore into {hint}",
            output.display(),
            dir.display()
        )));
    }
    match std::fs::symlink_metadata(output) {
        Ok(_) if output.is_dir() => Ok(()),
        Ok(meta) => Err(Error::Destination(format!(
            "output folder {}: exists and is {}, not a folder",
            output.display(),
            kind_of(&meta)
        ))),
        Err(_) => Ok(()),
    }
}

/// An output file of a restore may be written: it does not exist, or is a regular file (not
/// a symbolic link) and `force` is set.
pub(super) fn check_output_file(path: &Path, force: bool) -> Result<()> {
    match std::fs::symlink_metadata(path) {
        Err(_) => Ok(()),
        Ok(meta) if meta.file_type().is_file() => {
            if force {
                Ok(())
            } else {
                Err(Error::Exists(path.to_path_buf()))
            }
        }
        Ok(meta) => Err(Error::Destination(format!(
            "{}: exists and is {}; dmx only replaces regular files: move it away",
            path.display(),
            kind_of(&meta)
        ))),
    }
}

/// An output folder of a restore (a folder checkpoint) may be written: it does not exist, or
/// is a folder (not a symbolic link) and `force` is set (its other files are kept).
fn check_output_folder(path: &Path, force: bool) -> Result<()> {
    match std::fs::symlink_metadata(path) {
        Err(_) => Ok(()),
        Ok(meta) if meta.file_type().is_dir() => {
            if force {
                Ok(())
            } else {
                Err(Error::Exists(path.to_path_buf()))
            }
        }
        Ok(meta) => Err(Error::Destination(format!(
            "{}: exists and is {}; a folder checkpoint restores only into a new or existing \
             folder: move it away",
            path.display(),
            kind_of(&meta)
        ))),
    }
}

/// One entry checked by [`chain_verify`].
#[derive(Debug, Clone, Serialize)]
pub struct VerifiedEntry {
    /// Chain index.
    pub index: usize,
    /// Original file name.
    pub name: String,
    /// The stored file.
    pub file: String,
    /// Anchor or delta.
    pub kind: ChainEntryKind,
    /// The stored file exists and its size and SHA-256 match the manifest.
    pub stored_ok: bool,
    /// It restored (from its parent's reconstruction) to a file whose SHA-256 is
    /// `restored_sha256`.
    pub restored_ok: bool,
    /// The first problem found.
    pub error: Option<String>,
}

/// What [`chain_verify`] found.
#[derive(Debug, Clone, Serialize)]
pub struct ChainVerifyReport {
    /// The chain folder.
    pub dir: String,
    /// The chain's precision.
    pub precision: Precision,
    /// True when every entry passed.
    pub ok: bool,
    /// Per entry.
    pub entries: Vec<VerifiedEntry>,
    /// Files in the folder that look like entries but that the manifest does not list, and
    /// files kept in `DIR/orphans/` (see [`find_orphans`]): ignored, reported as a warning.
    pub orphans: Vec<String>,
    /// Wall time in seconds.
    pub seconds: f64,
}

/// Checks the chain in `dir` without the originals: the size and SHA-256 of every stored
/// file, then every entry restored in order (into a temporary folder, each from its parent's
/// reconstruction) against its `restored_sha256`, with every chunk checksum and tensor hash
/// on the way. A manifest that does not parse is an error (corrupt); problems with entries are
/// reported per entry.
pub fn chain_verify(dir: &Path, opts: &Options) -> Result<ChainVerifyReport> {
    let start = Instant::now();
    let m = read_manifest(dir)?;
    let chain = Chain::new(dir, &m, opts)?;
    let mut entries: Vec<VerifiedEntry> = m
        .entries
        .iter()
        .map(|e| VerifiedEntry {
            index: e.index,
            name: e.name.clone(),
            file: e.file.clone(),
            kind: e.kind,
            stored_ok: false,
            restored_ok: false,
            error: None,
        })
        .collect();
    for (v, e) in entries.iter_mut().zip(&m.entries) {
        opts.check_cancel()?;
        match chain.check_stored(e) {
            Ok(()) => v.stored_ok = true,
            Err(err) if err.is_integrity_failure() => v.error = Some(err.to_string()),
            Err(err) => return Err(err),
        }
    }
    let stored: Vec<bool> = entries.iter().map(|v| v.stored_ok).collect();
    let scratch = crate::io::temp_dir_in(&std::env::temp_dir())?;
    let all: Vec<usize> = (0..m.entries.len()).collect();
    chain.rebuild(
        &all,
        scratch.path(),
        &|i| stored[i],
        &|_| None,
        &mut |i, r| {
            let v = &mut entries[i];
            match r {
                Ok(_) => v.restored_ok = true,
                Err(err) => {
                    v.error.get_or_insert_with(|| err.to_string());
                }
            }
        },
    )?;
    Ok(ChainVerifyReport {
        dir: dir.display().to_string(),
        precision: m.precision,
        ok: entries.iter().all(|v| v.stored_ok && v.restored_ok),
        entries,
        orphans: find_orphans(dir, &m)?,
        seconds: start.elapsed().as_secs_f64(),
    })
}
