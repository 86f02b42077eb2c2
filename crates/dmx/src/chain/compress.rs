//! `chain-compress`: a new chain built in a temporary folder and swapped into place.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::Options;
use crate::error::{Error, Result};
use crate::io::TEMP_PREFIX;
use crate::io::fs::{lock_dir, sync_dir, work_dir};

use super::append::{Cursor, append_all};
use super::build::{check_input, check_uniform};
use super::manifest::{ChainManifest, check_entry_name_len, read_manifest};
use super::orphans::{ORPHANS, clean_temps, orphans_dir, set_aside};
use super::{ChainOptions, ChainReport, MANIFEST};

/// Creates the chain folder `dir` and stores `checkpoints` in it, in order (see the module
/// docs). The chain is built in a temporary folder (`.dmx-tmp-*`) and moved into place only
/// when complete, so a failed run leaves nothing behind. `dir` must not exist or be empty,
/// unless `opts.force`: then the chain in it (its manifest and the entry files it lists) is
/// replaced once the new one is complete; other files are left alone, and entry files that
/// no valid manifest lists, or a `manifest.json` that is not a valid one, are moved into
/// `DIR/orphans/` (listed in [`ChainReport::set_aside`]), never deleted.
pub fn chain_compress(
    checkpoints: &[PathBuf],
    dir: &Path,
    c: &ChainOptions,
    opts: &Options,
) -> Result<ChainReport> {
    let start = Instant::now();
    if checkpoints.is_empty() {
        return Err(Error::InvalidArgument(
            "chain-compress needs at least one checkpoint".into(),
        ));
    }
    let (names, folders): (Vec<String>, Vec<bool>) = checkpoints
        .iter()
        .map(|p| check_input(p, c.precision))
        .collect::<Result<Vec<_>>>()?
        .into_iter()
        .unzip();
    check_uniform(checkpoints, &folders, None)?;
    for (i, (p, n)) in checkpoints.iter().zip(&names).enumerate() {
        check_entry_name_len(p, i, n)?;
    }
    crate::io::refuse_dash(dir, true)?;
    opts.pool()?;
    let existing = match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => true,
        Ok(_) => {
            return Err(Error::Destination(format!(
                "{}: exists and is not a folder",
                dir.display()
            )));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if dir.symlink_metadata().is_ok() {
                return Err(Error::Destination(format!(
                    "{}: is a symbolic link to nothing; remove it or choose another folder",
                    dir.display()
                )));
            }
            false
        }
        Err(e) => return Err(Error::io(dir, e)),
    };
    let mut report = if existing {
        compress_into_existing(checkpoints, &names, dir, c, opts, start)?
    } else {
        compress_into_new(checkpoints, &names, dir, c, opts, start)?
    };
    report.dir = dir.display().to_string();
    report.seconds = start.elapsed().as_secs_f64();
    Ok(report)
}

/// An I/O error on a temporary file inside `dir` (the chain being built, a work folder)
/// reported on `dir` instead: the temporary names mean nothing to the user.
pub(super) fn unstage(err: Error, staging: &Path, dir: &Path) -> Error {
    match err {
        Error::Io { path, source } if path.starts_with(staging) => Error::Io {
            path: dir.to_path_buf(),
            // The OS error alone: some carry the temporary path as context.
            source: match source.raw_os_error() {
                Some(code) => std::io::Error::from_raw_os_error(code),
                None => {
                    let text = source.to_string();
                    match text.split_once(" at path ") {
                        Some((what, _)) => std::io::Error::new(source.kind(), what.to_string()),
                        None => source,
                    }
                }
            },
        },
        other => other,
    }
}

/// Builds the chain in `staging` (a new, empty folder), with its work folder inside.
pub(super) fn build_chain(
    checkpoints: &[PathBuf],
    names: &[String],
    staging: &Path,
    c: &ChainOptions,
    opts: &Options,
    start: Instant,
) -> Result<ChainReport> {
    let mut m = ChainManifest::new(c);
    let work = work_dir(staging)?;
    let mut cursor = Cursor::default();
    let report = append_all(
        staging,
        &mut m,
        checkpoints,
        names,
        &mut cursor,
        work.path(),
        opts,
        start,
    )?;
    drop(work);
    Ok(report)
}

/// `chain_compress` into a folder that does not exist: built in a temporary folder beside it,
/// renamed into place when complete. Parent folders it had to create are removed again on
/// failure.
pub(super) fn compress_into_new(
    checkpoints: &[PathBuf],
    names: &[String],
    dir: &Path,
    c: &ChainOptions,
    opts: &Options,
    start: Instant,
) -> Result<ChainReport> {
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    // The parent folders to create, deepest first (removed again if the run fails).
    let mut created: Vec<PathBuf> = parent
        .ancestors()
        .take_while(|a| !a.as_os_str().is_empty() && a.symlink_metadata().is_err())
        .map(Path::to_path_buf)
        .collect();
    std::fs::create_dir_all(&parent).map_err(|e| Error::io(&parent, e))?;
    let result = (|| {
        // Registered with the signal cleanup (`crate::remove_temps`), like every temporary.
        let staging = crate::io::temp_dir_in(&parent)?;
        let report = build_chain(checkpoints, names, staging.path(), c, opts, start)
            .map_err(|e| unstage(e, staging.path(), dir))?;
        // Rename into place: fails (and the staging folder is removed) if `dir` appeared
        // meanwhile and is not empty.
        match std::fs::rename(staging.path(), dir) {
            Ok(()) => {}
            Err(e) if dir.symlink_metadata().is_ok() => {
                return Err(Error::Destination(format!(
                    "{}: was created by someone else while the chain was being built ({e}); \
                     nothing was written",
                    dir.display()
                )));
            }
            Err(e) => return Err(Error::io(dir, e)),
        }
        let _ = staging.keep();
        if !opts.no_sync {
            sync_dir(&parent);
        }
        Ok(report)
    })();
    if result.is_err() {
        for d in created.drain(..) {
            let _ = std::fs::remove_dir(d);
        }
    }
    result
}

/// `chain_compress` into an existing folder (empty, or any with `opts.force`): the new chain
/// is built in a temporary folder inside it, then swapped in (see [`swap_in`]).
pub(super) fn compress_into_existing(
    checkpoints: &[PathBuf],
    names: &[String],
    dir: &Path,
    c: &ChainOptions,
    opts: &Options,
    start: Instant,
) -> Result<ChainReport> {
    let _lock = lock_dir(dir)?;
    let mut busy = Vec::new();
    for item in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let item = item.map_err(|e| Error::io(dir, e))?;
        let name = item.file_name().to_string_lossy().into_owned();
        if !name.starts_with(TEMP_PREFIX) {
            busy.push(name);
        }
    }
    if !busy.is_empty() && !opts.force {
        return Err(Error::FolderNotEmpty {
            path: dir.to_path_buf(),
            chain: dir.join(MANIFEST).is_file(),
        });
    }
    clean_temps(dir, None)?;
    // The chain being replaced, if the folder holds a valid one.
    let old = if dir.join(MANIFEST).symlink_metadata().is_ok() {
        read_manifest(dir).ok()
    } else {
        None
    };
    let staging = work_dir(dir)?;
    let report = build_chain(checkpoints, names, staging.path(), c, opts, start)
        .map_err(|e| unstage(e, staging.path(), dir))?;
    let set_aside = swap_in(dir, staging.path(), old.as_ref(), !opts.no_sync)?;
    Ok(ChainReport {
        set_aside,
        ..report
    })
}

/// Replaces the chain in `dir` (`old`, if any) by the complete chain in `staging` (a folder
/// inside `dir`): the entry files no valid manifest lists (and an invalid `manifest.json`)
/// are moved into `DIR/orphans/`; the old manifest and the files it lists are moved into a
/// temporary folder; the new entry files are moved in, then the new manifest (the moment the
/// new chain appears); then the old files are deleted. If a step fails, what was moved is
/// moved back (best effort). Returns the files set aside.
pub(super) fn swap_in(
    dir: &Path,
    staging: &Path,
    old: Option<&ChainManifest>,
    sync: bool,
) -> Result<Vec<String>> {
    let listed: BTreeSet<&str> = old
        .map(|m| m.entries.iter().map(|e| e.file.as_str()).collect())
        .unwrap_or_default();
    // Once files start moving, a signal waits for the swap to end (or be undone).
    let _commit = crate::io::commit_guard();
    let mut set_aside = set_aside(dir, &listed, sync)?;
    if old.is_none() && dir.join(MANIFEST).symlink_metadata().is_ok() {
        // Not a valid manifest (or not a file): not ours to delete.
        let aside = dir.join(ORPHANS);
        orphans_dir(&aside, MANIFEST)?;
        let mut target = aside.join(MANIFEST);
        let mut n = 0;
        while target.symlink_metadata().is_ok() {
            n += 1;
            target = aside.join(format!("{MANIFEST}.{n}"));
        }
        std::fs::rename(dir.join(MANIFEST), &target)
            .map_err(|e| Error::io(dir.join(MANIFEST), e))?;
        set_aside.push(format!(
            "{ORPHANS}/{}",
            target.file_name().unwrap_or_default().to_string_lossy()
        ));
    }
    let trash = work_dir(dir)?;
    let mut old_files: Vec<String> = Vec::new();
    if old.is_some() {
        old_files.push(MANIFEST.to_string());
        // Only regular files: anything else of that name is not an entry dmx wrote (if the
        // new chain needs the name, moving the new file in fails and everything is undone).
        old_files.extend(
            listed
                .iter()
                .filter(|f| {
                    dir.join(f)
                        .symlink_metadata()
                        .is_ok_and(|m| m.file_type().is_file())
                })
                .map(|f| f.to_string()),
        );
    }
    let new_files: Vec<String> = {
        let m = read_manifest(staging)?;
        let mut v: Vec<String> = m.entries.into_iter().map(|e| e.file).collect();
        v.push(MANIFEST.to_string());
        v
    };
    // Moves recorded for the rollback: (from, to).
    let mut done: Vec<(PathBuf, PathBuf)> = Vec::new();
    let step =
        |from: PathBuf, to: PathBuf, done: &mut Vec<(PathBuf, PathBuf)>| match std::fs::rename(
            &from, &to,
        ) {
            Ok(()) => {
                done.push((from, to));
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !from.exists() => Ok(()),
            Err(e) => Err(Error::io(&from, e)),
        };
    let result = (|| {
        for f in &old_files {
            step(dir.join(f), trash.path().join(f), &mut done)?;
        }
        for f in &new_files {
            step(staging.join(f), dir.join(f), &mut done)?;
        }
        Ok(())
    })();
    if let Err(e) = result {
        for (from, to) in done.into_iter().rev() {
            let _ = std::fs::rename(to, from);
        }
        return Err(e);
    }
    if sync {
        sync_dir(dir);
    }
    Ok(set_aside)
}
