//! Read-only access to input files: a memory map where the platform allows it, a plain read
//! otherwise. This is the only module with `unsafe` code.
#![allow(unsafe_code)]

use std::fs::File;
use std::io::Read;
use std::ops::{Deref, Range};
use std::path::Path;
use std::sync::Mutex;

use crate::error::{Error, Result};

/// The bytes of a file, mapped or read.
pub enum Bytes {
    /// A read-only memory map.
    Mapped(Mapped),
    /// The file read into memory (empty files, or where mapping failed).
    Owned(Vec<u8>),
}

/// A read-only memory map whose processed ranges are released in batches
/// ([`Bytes::release`]).
pub struct Mapped {
    map: memmap2::Mmap,
    /// Released by the callers but not yet given back to the kernel.
    pending: Mutex<Option<Range<usize>>>,
}

/// Released bytes gathered before one `madvise`: each call unmaps pages on every core (a
/// TLB shootdown), so one per chunk or per window cost more than the unmapping itself
/// (about 6 % of decompress time, BENCHMARKS.md §17.4), while this bounds the mapped pages
/// kept resident to a few tens of MiB whatever the file size.
const RELEASE_BATCH: usize = 32 << 20;

impl Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Bytes::Mapped(m) => &m.map,
            Bytes::Owned(v) => v,
        }
    }
}

impl Bytes {
    /// Maps `path` read-only, falling back to reading it. Only regular files are read (see
    /// [`check_input`]): devices, FIFOs and sockets are refused before they are opened.
    ///
    /// # Contract
    ///
    /// The file must stay **unchanged** while the returned value lives (hence the name): no
    /// process may write to or truncate it, as for every mmap-based tool. A file changed
    /// anyway may give inconsistent bytes (never unsafety in this process: the map is
    /// read-only; a truncation ends the process with SIGBUS). Writers of archives call
    /// [`Stamp::check_unchanged`] after reading, and every stored chunk carries checksums,
    /// so a change is reported rather than stored.
    pub fn open_stable(path: &Path) -> Result<Self> {
        if !check_input(path)?.is_file() {
            return Err(Error::Unsupported(format!(
                "{} is a folder; a file is expected here",
                path.display()
            )));
        }
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        let meta = file.metadata().map_err(|e| Error::io(path, e))?;
        if !meta.is_file() {
            return Err(not_regular(path, crate::io::kind_of(&meta)));
        }
        let len = meta.len();
        if len > 0 {
            // SAFETY: the map is read-only and private to this process; the file must not be
            // changed by others while mapped (the documented contract of `open_stable`, as in
            // ripgrep's MmapChoice). A concurrent truncation could fault, never silently corrupt output:
            // every stored chunk carries checksums of its bytes.
            if let Ok(map) = unsafe { memmap2::MmapOptions::new().map(&file) } {
                let _ = map.advise(memmap2::Advice::Sequential);
                return Ok(Bytes::Mapped(Mapped {
                    map,
                    pending: Mutex::new(None),
                }));
            }
        }
        // Read at most one byte more than the size reported, so a file that reports a wrong
        // size (as some virtual files do) is an error, never an unbounded read.
        let mut data = Vec::new();
        (&file)
            .take(len.saturating_add(1))
            .read_to_end(&mut data)
            .map_err(|e| Error::io(path, e))?;
        if data.len() as u64 != len {
            return Err(Error::changed(
                path,
                format!(
                    "the file reports a size of {len} bytes but holds more (a virtual or \
                     changing file?); copy it to a regular file first"
                ),
            ));
        }
        Ok(Bytes::Owned(data))
    }

    /// Tells the kernel that bytes `start..end` will not be needed again, so mapped pages
    /// already processed do not accumulate in the resident set. Ranges released one after
    /// the other are gathered and given back together once they reach [`RELEASE_BATCH`]
    /// bytes (a range that does not touch the gathered one sends that one off first). A
    /// no-op for read buffers.
    pub fn release(&self, start: usize, end: usize) {
        let Bytes::Mapped(m) = self else {
            return;
        };
        if end <= start {
            return;
        }
        let mut pending = m
            .pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let range = match pending.take() {
            Some(p) if start <= p.end && end >= p.start => p.start.min(start)..p.end.max(end),
            Some(p) => {
                m.drop_pages(p);
                start..end
            }
            None => start..end,
        };
        if range.len() >= RELEASE_BATCH {
            m.drop_pages(range);
        } else {
            *pending = Some(range);
        }
    }
}

impl Mapped {
    /// `MADV_DONTNEED` on the whole pages inside `range`.
    fn drop_pages(&self, range: Range<usize>) {
        let page = page_size();
        let start = range.start.div_ceil(page) * page;
        let end = (range.end / page) * page;
        if end > start && end <= self.map.len() {
            // SAFETY: MADV_DONTNEED on a read-only private file mapping only drops the
            // cached pages; a later access re-reads them from the file, so no data the
            // program can observe changes.
            let _ = unsafe {
                self.map.unchecked_advise_range(
                    memmap2::UncheckedAdvice::DontNeed,
                    start,
                    end - start,
                )
            };
        }
    }
}

/// Size and modification time of a file: what [`Stamp::check_unchanged`] compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stamp {
    len: u64,
    modified: Option<std::time::SystemTime>,
}

impl Stamp {
    /// The stamp of the file at `path` now.
    pub(crate) fn of(path: &Path) -> Result<Self> {
        let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
        Ok(Self {
            len: meta.len(),
            modified: meta.modified().ok(),
        })
    }

    /// An error unless the file at `path` still has this stamp (the contract of
    /// [`Bytes::open_stable`] held while it was read).
    pub(crate) fn check_unchanged(&self, path: &Path) -> Result<()> {
        if Self::of(path)? == *self {
            return Ok(());
        }
        Err(Error::changed(
            path,
            "the file changed while being read; run again once it is no longer written",
        ))
    }
}

/// The size of a memory page, queried once.
fn page_size() -> usize {
    static PAGE: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *PAGE.get_or_init(|| {
        #[cfg(unix)]
        {
            // SAFETY: sysconf only reads a system constant; it has no preconditions.
            let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
            if let Ok(n) = usize::try_from(n)
                && n.is_power_of_two()
            {
                return n;
            }
        }
        // Unknown: the largest common page size keeps released ranges within whole pages.
        65536
    })
}

/// Whether the file at `path` starts with the archive magic ([`dmx_format::MAGIC`]): a
/// `.dmx` or `.dmxd` file, whatever its name. Reads at most 8 bytes.
pub fn is_archive_file(path: &Path) -> Result<bool> {
    let mut magic = Vec::with_capacity(8);
    File::open(path)
        .and_then(|f| f.take(8).read_to_end(&mut magic))
        .map_err(|e| Error::io(path, e))?;
    Ok(magic == dmx_format::MAGIC)
}

/// The error for an input that is not a regular file (or folder where folders are read).
fn not_regular(path: &Path, kind: &str) -> Error {
    Error::Unsupported(format!(
        "{} is {kind}, not a regular file; dmx reads only regular files and folders \
         (to compress standard input, use `dmx compress - OUTPUT.dmx`)",
        path.display()
    ))
}

/// Checks that the input `path` is a regular file or a folder (following symbolic links)
/// without opening it, so a FIFO never blocks and a device is never read; returns its
/// metadata. `-` is not a path here: the CLI handles it.
pub fn check_input(path: &Path) -> Result<std::fs::Metadata> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if meta.is_file() || meta.is_dir() {
        Ok(meta)
    } else {
        Err(not_regular(path, crate::io::kind_of(&meta)))
    }
}

/// Whether the regular file at `path` is a well-formed safetensors file: its header parses
/// and its tensor data fills the rest exactly (used to name data read from standard input).
pub(crate) fn looks_like_safetensors(path: &Path) -> bool {
    let Ok(mut f) = File::open(path) else {
        return false;
    };
    let Ok(size) = f.metadata().map(|m| m.len()) else {
        return false;
    };
    let mut n = [0u8; 8];
    if f.read_exact(&mut n).is_err() {
        return false;
    }
    let n = u64::from_le_bytes(n);
    if n > 100_000_000 || n.saturating_add(8) > size {
        return false;
    }
    let mut header = vec![0u8; n as usize];
    if f.read_exact(&mut header).is_err() {
        return false;
    }
    match serde_json::from_slice::<safetensors::tensor::Metadata>(&header) {
        Ok(meta) => (8 + n).checked_add(meta.data_len() as u64) == Some(size),
        Err(_) => false,
    }
}

/// Copies standard input, with bounded memory, to a file in a new temporary folder beside
/// `output` (removed when the returned folder is dropped, or on a signal), and returns the
/// folder and the file. The file is named after the output (`model.dmx` stores `model`),
/// with `.safetensors` appended when the data is a well-formed safetensors file, so it is
/// stored as tensors; `stdin` when the output's name gives nothing usable.
pub(crate) fn spool_stdin(output: &Path) -> Result<(crate::io::TempDir, std::path::PathBuf)> {
    let parent = match output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let dir = crate::io::temp_dir_in(parent)?;
    let data = dir.path().join("stdin");
    {
        let f = File::create(&data).map_err(|e| Error::io(&data, e))?;
        let mut w = std::io::BufWriter::with_capacity(1 << 20, f);
        std::io::copy(&mut std::io::stdin().lock(), &mut w)
            .map_err(|e| Error::io("standard input", e))?;
        std::io::Write::flush(&mut w).map_err(|e| Error::io(&data, e))?;
    }
    let stem = output
        .file_stem()
        .and_then(|s| s.to_str())
        .filter(|s| !s.is_empty() && !s.starts_with('.'))
        .unwrap_or("stdin");
    let mut name = stem.to_string();
    if looks_like_safetensors(&data) {
        if !name.ends_with(".safetensors") {
            name.push_str(".safetensors");
        }
    } else if name.ends_with(".safetensors") {
        name.truncate(name.len() - ".safetensors".len());
        if name.is_empty() {
            name = "stdin".into();
        }
    }
    let named = dir.path().join(&name);
    std::fs::rename(&data, &named).map_err(|e| Error::io(&named, e))?;
    Ok((dir, named))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_maps_and_reads() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, vec![5u8; 10_000]).unwrap();
        let b = Bytes::open_stable(&p).unwrap();
        assert_eq!(b.len(), 10_000);
        b.release(0, 8192);
        assert!(page_size().is_power_of_two());
        assert!(b.iter().all(|&x| x == 5));
        std::fs::write(&p, b"").unwrap();
        assert!(Bytes::open_stable(&p).unwrap().is_empty());
        assert!(Bytes::open_stable(&dir.path().join("missing")).is_err());
    }

    /// Released ranges are gathered while they touch, sent off when they reach the batch
    /// size or when a range elsewhere arrives; the bytes read the same before and after.
    #[test]
    fn releases_are_gathered_into_batches() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        let len = RELEASE_BATCH + (3 << 20);
        let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        std::fs::write(&p, &data).unwrap();
        let b = Bytes::open_stable(&p).unwrap();
        let Bytes::Mapped(m) = &b else {
            panic!("a regular file is mapped");
        };
        let pending = || m.pending.lock().unwrap().clone();
        b.release(0, 1 << 20);
        b.release(1 << 20, 2 << 20);
        assert_eq!(pending(), Some(0..2 << 20), "touching ranges merge");
        b.release(0, 0);
        assert_eq!(pending(), Some(0..2 << 20), "empty ranges change nothing");
        b.release(5 << 20, 6 << 20);
        assert_eq!(
            pending(),
            Some(5 << 20..6 << 20),
            "a range elsewhere sends the other"
        );
        b.release(2 << 20, RELEASE_BATCH + (2 << 20));
        assert_eq!(pending(), None, "a batch is sent at once");
        assert!(*b == data[..], "the bytes read back the same");
        b.release(len - 10, len);
        assert_eq!(pending(), Some(len - 10..len));
    }

    /// Archives are recognised by their magic, whatever their name; short files are not.
    #[test]
    fn archives_are_known_by_their_magic() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b, c) = (
            dir.path().join("a"),
            dir.path().join("b"),
            dir.path().join("c"),
        );
        std::fs::write(&a, [&dmx_format::MAGIC[..], b"rest"].concat()).unwrap();
        std::fs::write(&b, &dmx_format::MAGIC[..7]).unwrap();
        std::fs::write(&c, b"{\"not\": 1}").unwrap();
        assert!(is_archive_file(&a).unwrap());
        assert!(!is_archive_file(&b).unwrap());
        assert!(!is_archive_file(&c).unwrap());
        assert!(is_archive_file(&dir.path().join("missing")).is_err());
    }
}
