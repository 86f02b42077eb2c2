//! `chain-prune`: old entries removed from a chain without breaking the entries kept.
//!
//! Kept entries are renumbered from 0 (entry files are named by index). In a lossless chain a
//! kept delta whose parent goes is **re-anchored**: restored (every hash checked), compressed
//! alone, the new anchor restored again and checked against the recorded hash, then stored as
//! an anchor. In a quantized chain a kept delta keeps the entries back to its anchor (a new
//! anchor would quantize on another grid). The new manifest is written atomically before any
//! file is removed: a prune interrupted before it leaves the old chain (new files it wrote
//! are unlisted, set aside by the next writer), one interrupted after it the new chain (old
//! files left behind are likewise unlisted).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;

use crate::Options;
use crate::archive::Archive;
use crate::delta::{Precision, hex};
use crate::error::{Error, Result};
use crate::io::fs::{lock_dir, sha256_file, sync_dir, work_dir};
use crate::lossy::LossyOptions;

use super::build::{Chain, restore_entry};
use super::manifest::{
    ChainEntry, ChainEntryKind, ChainManifest, archived_name, entry_file_name, read_manifest,
    write_manifest,
};
use super::orphans::{clean_temps, set_aside};

/// One entry left in the chain by [`chain_prune`].
#[derive(Debug, Clone, Serialize)]
pub struct PrunedKeptEntry {
    /// Its index before the prune.
    pub old_index: usize,
    /// Its index now.
    pub index: usize,
    /// Original file name of the checkpoint.
    pub name: String,
    /// The stored file now.
    pub file: String,
    /// Anchor or delta.
    pub kind: ChainEntryKind,
    /// True when it was a delta and is now stored as an anchor.
    pub reanchored: bool,
    /// True when it was not asked for but a kept entry depends on it (quantized chains).
    pub dependency: bool,
}

/// What [`chain_prune`] did.
#[derive(Debug, Clone, Serialize)]
pub struct PruneReport {
    /// The chain folder.
    pub dir: String,
    /// Entries before the prune.
    pub entries_before: usize,
    /// Entries after it.
    pub entries: usize,
    /// The entries kept, in their new order.
    pub kept: Vec<PrunedKeptEntry>,
    /// The entries removed, as `(old index, name)`.
    pub removed: Vec<(usize, String)>,
    /// Stored bytes of the chain before.
    pub stored_bytes_before: u64,
    /// Stored bytes of the chain after.
    pub stored_bytes: u64,
    /// Files found in the folder that no manifest listed, moved into `DIR/orphans/` first.
    pub set_aside: Vec<String>,
    /// Wall time in seconds.
    pub seconds: f64,
}

/// One kept entry, planned: its old index, whether it is re-anchored, whether it is kept
/// only as a dependency.
struct Plan {
    old: usize,
    reanchor: bool,
    dependency: bool,
}

/// Keeps only the entries `keep` (indices, any order) of the chain in `dir`, and the entries
/// they depend on: see the module documentation. Refused (nothing written) when `keep` is
/// empty or out of range, or when a kept entry's new file name is that of another entry
/// still listed (two checkpoints with the same name: prune in another order).
pub fn chain_prune(dir: &Path, keep: &[usize], opts: &Options) -> Result<PruneReport> {
    let start = Instant::now();
    if keep.is_empty() {
        return Err(Error::InvalidArgument(
            "chain-prune must keep at least one entry".into(),
        ));
    }
    read_manifest(dir)?;
    let _lock = lock_dir(dir)?;
    let m = read_manifest(dir)?;
    let n = m.entries.len();
    if let Some(&bad) = keep.iter().find(|&&i| i >= n) {
        return Err(Error::InvalidArgument(format!(
            "index {bad} is out of range: the chain in {} has {n} entries",
            dir.display()
        )));
    }
    let plan = plan(&m, &keep.iter().copied().collect());
    let (new_m, renamed) = new_manifest(&m, &plan)?;
    let sync = !opts.no_sync;
    clean_temps(dir, None)?;
    let listed: BTreeSet<&str> = m.entries.iter().map(|e| e.file.as_str()).collect();
    let set_aside = set_aside(dir, &listed, sync)?;
    let mut created: Vec<PathBuf> = Vec::new();
    let written = write_new_files(dir, &m, new_m, &plan, &renamed, opts, &mut created);
    let new_m = match written {
        Ok(new_m) => new_m,
        Err(e) => {
            for p in created {
                let _ = std::fs::remove_file(p);
            }
            return Err(e);
        }
    };
    // Committed: the files only the old manifest listed go.
    let now: BTreeSet<&str> = new_m.entries.iter().map(|e| e.file.as_str()).collect();
    for e in &m.entries {
        if !now.contains(e.file.as_str()) {
            let path = dir.join(&e.file);
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                Err(err) => return Err(Error::io(&path, err)),
            }
        }
    }
    if sync {
        sync_dir(dir);
    }
    Ok(report(dir, &m, &new_m, &plan, set_aside, start))
}

/// The entries to keep, in order: lossless chains re-anchor a kept delta whose parent goes,
/// quantized chains keep its parents back to the anchor.
fn plan(m: &ChainManifest, keep: &BTreeSet<usize>) -> Vec<Plan> {
    let mut all = keep.clone();
    if m.precision != Precision::Lossless {
        for &i in keep {
            all.extend(m.needed_for(i));
        }
    }
    all.iter()
        .map(|&i| {
            let e = &m.entries[i];
            let orphaned = e.parent.is_some_and(|p| !all.contains(&p));
            Plan {
                old: i,
                reanchor: e.kind == ChainEntryKind::Delta && orphaned,
                dependency: !keep.contains(&i),
            }
        })
        .collect()
}

/// The manifest after the prune (re-anchored entries' hashes still to fill in) and, for each
/// kept entry, whether its file changes name. Refuses a new file name that another listed
/// entry still uses.
fn new_manifest(m: &ChainManifest, plan: &[Plan]) -> Result<(ChainManifest, Vec<bool>)> {
    let listed: BTreeSet<&str> = m.entries.iter().map(|e| e.file.as_str()).collect();
    let mut entries: Vec<ChainEntry> = Vec::with_capacity(plan.len());
    let mut renamed = Vec::with_capacity(plan.len());
    for (j, p) in plan.iter().enumerate() {
        let old = &m.entries[p.old];
        let kind = if p.reanchor {
            ChainEntryKind::Anchor
        } else {
            old.kind
        };
        let file = entry_file_name(j, &old.name, kind);
        let moved = file != old.file;
        if moved && listed.contains(file.as_str()) {
            return Err(Error::InvalidArgument(format!(
                "entry {} ({}) would be stored as {file}, the file of another entry still in \
                 the chain (two checkpoints named {:?}); nothing was changed",
                p.old, old.name, old.name
            )));
        }
        let depth = match kind {
            ChainEntryKind::Anchor => 0,
            ChainEntryKind::Delta => entries.last().map_or(0, |e| e.depth + 1),
        };
        entries.push(ChainEntry {
            index: j,
            file,
            kind,
            parent: (kind == ChainEntryKind::Delta).then(|| j.wrapping_sub(1)),
            depth,
            ..old.clone()
        });
        renamed.push(moved);
    }
    let new_m = ChainManifest {
        entries,
        ..m.clone()
    };
    Ok((new_m, renamed))
}

/// Writes the new anchors and the renamed entry files (links, or copies), recording every
/// file made in `created`, then the manifest. Returns the manifest written.
fn write_new_files(
    dir: &Path,
    m: &ChainManifest,
    mut new_m: ChainManifest,
    plan: &[Plan],
    renamed: &[bool],
    opts: &Options,
    created: &mut Vec<PathBuf>,
) -> Result<ChainManifest> {
    let work = work_dir(dir)?;
    let chain = Chain::new(dir, m, opts)?;
    for (j, p) in plan.iter().enumerate() {
        opts.check_cancel()?;
        let dest = dir.join(&new_m.entries[j].file);
        if p.reanchor {
            let anchor = reanchor(&chain, m, p.old, work.path(), opts)?;
            std::fs::rename(&anchor, &dest).map_err(|e| Error::io(&dest, e))?;
            created.push(dest.clone());
            let (sha, size) = sha256_file(&dest)?;
            let e = &mut new_m.entries[j];
            e.stored_sha256 = sha;
            e.stored_size = size;
        } else if renamed[j] {
            let old = &m.entries[p.old];
            chain.check_stored(old)?;
            let src = dir.join(&old.file);
            if std::fs::hard_link(&src, &dest).is_err() {
                std::fs::copy(&src, &dest).map_err(|e| Error::io(&dest, e))?;
                created.push(dest.clone());
                let (sha, size) = sha256_file(&dest)?;
                if sha != old.stored_sha256 || size != old.stored_size {
                    return Err(Error::changed(&src, "the copy differs from the entry file"));
                }
            } else {
                created.push(dest.clone());
            }
        }
    }
    if !opts.no_sync {
        sync_dir(dir);
    }
    write_manifest(dir, &new_m, !opts.no_sync)?;
    Ok(new_m)
}

/// Restores entry `i` (checked against its recorded hashes), compresses it alone, restores
/// that archive again and checks it yields the original: the path of the new anchor.
fn reanchor(
    chain: &Chain<'_>,
    m: &ChainManifest,
    i: usize,
    work: &Path,
    opts: &Options,
) -> Result<PathBuf> {
    let e = &m.entries[i];
    let Some(restored) = chain.restore_one(i, work)? else {
        return Err(Error::Internal(format!("entry {i} was not restored")));
    };
    // Compress it under its own name, as `dmx compress` of the checkpoint would store it.
    let folder = work.join(format!("reanchor-{i:05}"));
    std::fs::create_dir(&folder).map_err(|err| Error::io(&folder, err))?;
    let source = folder.join(archived_name(&e.name).as_ref());
    std::fs::rename(&restored, &source).map_err(|err| Error::io(&source, err))?;
    let anchor = folder.join("anchor.dmx");
    let inner = Options {
        threads: opts.threads,
        force: true,
        no_sync: opts.no_sync,
        progress: opts.progress.clone(),
        cancel: opts.cancel.clone(),
    };
    crate::compress_with(&source, &anchor, &LossyOptions::default(), &inner)?;
    std::fs::remove_file(&source).map_err(|err| Error::io(&source, err))?;
    // Verify: the new anchor restores to the recorded original.
    let archive = Archive::open(&anchor)?;
    let check = folder.join("check");
    restore_entry(&opts.pool()?, &inner, &archive, None, &check, true, false)?;
    let (sha, size) = sha256_file(&check)?;
    let _ = std::fs::remove_file(&check);
    if sha != e.original_sha256
        || size != e.original_size
        || hex(&archive.index().entries[0].sha256) != e.restored_sha256
    {
        return Err(Error::changed(
            &anchor,
            format!(
                "the new anchor of entry {i} does not restore its recorded checkpoint; nothing \
                 was changed"
            ),
        ));
    }
    Ok(anchor)
}

fn report(
    dir: &Path,
    m: &ChainManifest,
    new_m: &ChainManifest,
    plan: &[Plan],
    set_aside: Vec<String>,
    start: Instant,
) -> PruneReport {
    let kept_old: BTreeSet<usize> = plan.iter().map(|p| p.old).collect();
    let kept = plan
        .iter()
        .zip(&new_m.entries)
        .map(|(p, e)| PrunedKeptEntry {
            old_index: p.old,
            index: e.index,
            name: e.name.clone(),
            file: e.file.clone(),
            kind: e.kind,
            reanchored: p.reanchor,
            dependency: p.dependency,
        })
        .collect();
    let removed = m
        .entries
        .iter()
        .filter(|e| !kept_old.contains(&e.index))
        .map(|e| (e.index, e.name.clone()))
        .collect();
    PruneReport {
        dir: dir.display().to_string(),
        entries_before: m.entries.len(),
        entries: new_m.entries.len(),
        kept,
        removed,
        stored_bytes_before: m.entries.iter().map(|e| e.stored_size).sum(),
        stored_bytes: new_m.entries.iter().map(|e| e.stored_size).sum(),
        set_aside,
        seconds: start.elapsed().as_secs_f64(),
    }
}
