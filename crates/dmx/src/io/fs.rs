//! File-system helpers: streamed hashes, folder locks, folder syncs, work folders.

use std::io::Read;
use std::path::Path;

use sha2::Digest;

use crate::delta::hex;
use crate::error::{Error, Result};

pub(crate) fn sync_dir(dir: &Path) {
    // Best effort, as for every output: makes renames durable where folders can be opened.
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

/// SHA-256 (hex) and size of a file, streamed.
pub(crate) fn sha256_file(path: &Path) -> Result<(String, u64)> {
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut sha = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        sha.update(&buf[..n]);
        size += n as u64;
    }
    Ok((hex(&sha.finalize()), size))
}

/// An exclusive lock on the chain folder (advisory, released when the process ends): one
/// writer at a time. Where the platform cannot lock folders, writers are not serialized.
pub(crate) struct DirLock {
    _file: Option<std::fs::File>,
}

pub(crate) fn lock_dir(dir: &Path) -> Result<DirLock> {
    let file = std::fs::File::open(dir).map_err(|e| Error::io(dir, e))?;
    match file.try_lock() {
        Ok(()) => Ok(DirLock { _file: Some(file) }),
        Err(std::fs::TryLockError::WouldBlock) => Err(Error::Busy(dir.to_path_buf())),
        Err(std::fs::TryLockError::Error(_)) => Ok(DirLock { _file: None }),
    }
}

pub(crate) fn work_dir(dir: &Path) -> Result<crate::io::TempDir> {
    crate::io::temp_dir_in(dir)
}
