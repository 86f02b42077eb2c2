//! Chains of checkpoint folders: the hash the manifest records for a folder checkpoint, and
//! the checks of a folder entry's archive against it.
//!
//! A folder checkpoint's `original_sha256` (and `restored_sha256`) is the SHA-256 of the
//! lines `PATH\0SIZE\0SHA256\n`, one per file of the folder in the byte order of their
//! `/`-separated relative paths, where SIZE is the file's size in decimal and SHA256 the hex
//! SHA-256 of its bytes; its `original_size` is the sum of the file sizes. The files are
//! those `compress` stores (temporaries of dmx runs and `.git` folders left out).

use std::path::Path;

use dmx_format::EntryKind;
use sha2::Digest;

use crate::archive::Archive;
use crate::delta::hex;
use crate::error::{Error, Result};
use crate::io::fs::sha256_file;

/// The manifest hash of a folder checkpoint, with the files it covers.
#[derive(Debug)]
pub(super) struct FolderHash {
    /// SHA-256 of the file lines, hex.
    pub sha256: String,
    /// Total size of the files.
    pub size: u64,
    /// (relative path, size, SHA-256 hex) of every file, in path order.
    pub files: Vec<(String, u64, String)>,
}

/// Hashes the folder `dir` as the module docs define.
pub(super) fn folder_hash(dir: &Path) -> Result<FolderHash> {
    let (_, planned) = crate::plan::plan_input(dir)?;
    let mut files = Vec::with_capacity(planned.len());
    for f in planned {
        let (sha, size) = sha256_file(&f.path)?;
        files.push((f.rel, size, sha));
    }
    files.sort();
    let mut digest = sha2::Sha256::new();
    for (rel, size, sha) in &files {
        digest.update(format!("{rel}\0{size}\0{sha}\n").as_bytes());
    }
    Ok(FolderHash {
        sha256: hex(&digest.finalize()),
        size: files.iter().map(|f| f.1).sum(),
        files,
    })
}

/// Checks that the folder archive `archive`, just written from the folder `ckpt`, holds the
/// files `hash` lists (paths, sizes and, for entries that record one, SHA-256): otherwise the
/// folder changed while it was being read.
pub(super) fn check_archive(archive: &Archive, hash: &FolderHash, ckpt: &Path) -> Result<()> {
    let entries: Vec<_> = archive
        .index()
        .entries
        .iter()
        .filter(|e| e.kind != EntryKind::Pack)
        .collect();
    let same = entries.len() == hash.files.len()
        && entries.iter().all(|e| {
            hash.files
                .binary_search_by(|f| f.0.as_str().cmp(e.path.as_str()))
                .is_ok_and(|i| {
                    let (_, size, sha) = &hash.files[i];
                    *size == e.size && (e.kind == EntryKind::Packed || hex(&e.sha256) == *sha)
                })
        });
    if same {
        Ok(())
    } else {
        Err(Error::changed(
            ckpt,
            "the folder changed while being read (its files differ from what was stored)",
        ))
    }
}

/// Removes a scratch reconstruction: a file, or a folder with everything in it.
pub(super) fn remove_scratch(path: &Path) {
    if path.is_dir() {
        let _ = std::fs::remove_dir_all(path);
    } else {
        let _ = std::fs::remove_file(path);
    }
}
