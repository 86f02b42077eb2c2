//! Read-only access to input files: a memory map where the platform allows it, a plain read
//! otherwise. This is the only module with `unsafe` code.
#![allow(unsafe_code)]

use std::fs::File;
use std::ops::Deref;
use std::path::Path;

use crate::error::{Error, Result};

/// The bytes of a file, mapped or read.
pub enum Bytes {
    /// A read-only memory map.
    Mapped(memmap2::Mmap),
    /// The file read into memory (empty files, or where mapping failed).
    Owned(Vec<u8>),
}

impl Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Bytes::Mapped(m) => m,
            Bytes::Owned(v) => v,
        }
    }
}

impl Bytes {
    /// Maps `path` read-only, falling back to reading it.
    ///
    /// The caller must not modify or truncate the file while the returned value lives; dmx
    /// documents that inputs must be stable during a run (as every mmap-based tool does).
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
        if len > 0 {
            // SAFETY: the map is read-only and private to this process; the file must not be
            // changed by others while mapped (documented contract of `open`, as in ripgrep's
            // MmapChoice). A concurrent truncation could fault, never silently corrupt output:
            // every stored chunk carries checksums of its bytes.
            if let Ok(map) = unsafe { memmap2::MmapOptions::new().map(&file) } {
                let _ = map.advise(memmap2::Advice::Sequential);
                return Ok(Bytes::Mapped(map));
            }
        }
        let data = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        Ok(Bytes::Owned(data))
    }

    /// Tells the kernel that `range` will not be needed again, so mapped pages already
    /// processed do not accumulate in the resident set. A no-op for read buffers.
    pub fn release(&self, start: usize, end: usize) {
        if let Bytes::Mapped(map) = self {
            let page = 4096;
            let start = start.div_ceil(page) * page;
            let end = (end / page) * page;
            if end > start && end <= map.len() {
                // SAFETY: MADV_DONTNEED on a read-only private file mapping only drops the
                // cached pages; a later access re-reads them from the file, so no data the
                // program can observe changes.
                let _ = unsafe {
                    map.unchecked_advise_range(
                        memmap2::UncheckedAdvice::DontNeed,
                        start,
                        end - start,
                    )
                };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_maps_and_reads() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, vec![5u8; 10_000]).unwrap();
        let b = Bytes::open(&p).unwrap();
        assert_eq!(b.len(), 10_000);
        b.release(0, 8192);
        assert!(b.iter().all(|&x| x == 5));
        std::fs::write(&p, b"").unwrap();
        assert!(Bytes::open(&p).unwrap().is_empty());
        assert!(Bytes::open(&dir.path().join("missing")).is_err());
    }
}
