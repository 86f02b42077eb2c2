//! Leftovers in a chain folder: temporaries of interrupted runs, and entry files no manifest
//! lists (set aside in `orphans/`, never deleted).

use std::collections::BTreeSet;
use std::path::Path;

use crate::error::{Error, Result};
use crate::io::TEMP_PREFIX;
use crate::io::fs::sync_dir;

use super::MANIFEST;
use super::manifest::{ChainManifest, entry_file_index};

/// Removes the temporary files and folders (`.dmx-tmp-*`) that interrupted runs may leave in
/// a chain folder (called with the folder locked), except `keep`.
pub(super) fn clean_temps(dir: &Path, keep: Option<&Path>) -> Result<()> {
    let rd = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    for item in rd {
        let item = item.map_err(|e| Error::io(dir, e))?;
        let name = item.file_name();
        let Some(name) = name.to_str() else { continue };
        let path = item.path();
        if !name.starts_with(TEMP_PREFIX) || keep.is_some_and(|k| k == path) {
            continue;
        }
        let removed = if item.file_type().is_ok_and(|t| t.is_dir()) {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        match removed {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(&path, e)),
        }
    }
    Ok(())
}

/// Sub-folder of a chain folder into which entry files that the manifest does not list
/// (orphans) are moved before a chain is written; dmx never deletes them.
pub const ORPHANS: &str = "orphans";

/// Entry files directly in `dir` (named like `NNNNN-NAME.dmx` / `.dmxd`) that are not among
/// `listed`, sorted.
pub(super) fn unlisted_entry_files(dir: &Path, listed: &BTreeSet<&str>) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for item in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let item = item.map_err(|e| Error::io(dir, e))?;
        let name = item.file_name();
        let Some(name) = name.to_str() else { continue };
        if entry_file_index(name).is_some()
            && !listed.contains(name)
            && item
                .file_type()
                .is_ok_and(|t| t.is_file() || t.is_symlink())
        {
            out.push(name.to_string());
        }
    }
    out.sort();
    Ok(out)
}

/// The orphans of the chain in `dir`: entry files that its manifest `m` does not list (left
/// by an interrupted run, or by an older manifest put back), then the files already set aside
/// in `DIR/orphans/` (as `orphans/NAME`). Readers ignore them; `verify` and `chain-info`
/// report them.
pub fn find_orphans(dir: &Path, m: &ChainManifest) -> Result<Vec<String>> {
    let listed: BTreeSet<&str> = m.entries.iter().map(|e| e.file.as_str()).collect();
    let mut out = unlisted_entry_files(dir, &listed)?;
    let aside = dir.join(ORPHANS);
    if aside.is_dir() {
        let mut kept = Vec::new();
        for item in std::fs::read_dir(&aside).map_err(|e| Error::io(&aside, e))? {
            let item = item.map_err(|e| Error::io(&aside, e))?;
            kept.push(format!("{ORPHANS}/{}", item.file_name().to_string_lossy()));
        }
        kept.sort();
        out.extend(kept);
    }
    Ok(out)
}

/// Moves the entry files in `dir` that are not among `listed` into `DIR/orphans/` (never over
/// an existing file there: `NAME.1`, `NAME.2`, ... instead). Returns their new names
/// (`orphans/...`).
pub(super) fn set_aside(dir: &Path, listed: &BTreeSet<&str>, sync: bool) -> Result<Vec<String>> {
    let names = unlisted_entry_files(dir, listed)?;
    if names.is_empty() {
        return Ok(names);
    }
    let aside = dir.join(ORPHANS);
    orphans_dir(&aside, &names.join(", "))?;
    let mut moved = Vec::with_capacity(names.len());
    for name in names {
        let mut target = aside.join(&name);
        let mut n = 0;
        while target.symlink_metadata().is_ok() {
            n += 1;
            target = aside.join(format!("{name}.{n}"));
        }
        std::fs::rename(dir.join(&name), &target).map_err(|e| Error::io(dir.join(&name), e))?;
        moved.push(format!(
            "{ORPHANS}/{}",
            target.file_name().unwrap_or_default().to_string_lossy()
        ));
    }
    if sync {
        sync_dir(&aside);
        sync_dir(dir);
    }
    Ok(moved)
}

/// Creates the folder `aside` (`DIR/orphans`) unless it exists as a real folder: anything else
/// there (a file, or a symbolic link, which would move `what` out of the chain folder) is
/// refused.
pub(super) fn orphans_dir(aside: &Path, what: &str) -> Result<()> {
    match std::fs::create_dir(aside) {
        Ok(()) => Ok(()),
        Err(e)
            if e.kind() == std::io::ErrorKind::AlreadyExists
                && aside.symlink_metadata().is_ok_and(|m| m.is_dir()) =>
        {
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            Err(Error::Destination(format!(
                "{}: exists and is not a folder; dmx needs it to keep files that \
             {MANIFEST} does not list ({what}): move it away",
                aside.display(),
            )))
        }
        Err(e) => Err(Error::io(aside, e)),
    }
}
