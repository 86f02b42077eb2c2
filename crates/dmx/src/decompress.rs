//! Decompression: decode an entry's chunks in parallel windows and stream them, in order, to
//! two sinks side by side (the checks of the restored bytes, and an output file or a
//! comparison with the original).

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use dmx_format::{Entry, Root};
use rayon::prelude::*;

use crate::Options;
use crate::archive::Archive;
use crate::error::{Error, Result};
use crate::io::{
    AtomicDir, AtomicFile, Scratch, check_destination, check_distinct, check_writable,
    check_writable_dir, end_reserved, reserve_blocks, temp_file_in, write_plain, write_through,
};
use crate::window::{SegmentHasher, windows};

/// Decodes `entry` window by window and hands every decoded piece, in file order, to both
/// `check` and `sink` as `(segment index, bytes)`. The two take each window at the same time
/// (on two threads where the pool has them), while the next window is decoded: hashing the
/// restored bytes no longer waits for them to be written, nor writing for the hashes. A
/// failure of either stops the stream after that window.
pub(crate) fn stream_entry(
    archive: &Archive,
    entry: &Entry,
    opts: &Options,
    check: impl FnMut(usize, &[u8]) -> Result<()> + Send,
    sink: impl FnMut(usize, &[u8]) -> Result<()> + Send,
) -> Result<()> {
    stream_entry_with(archive, entry, &[], opts, check, sink)
}

/// [`stream_entry`] for entries whose segments may be deltas: `bases[s]` holds the whole base
/// tensor of segment `s` (an empty list means no bases). Stops with [`crate::Error::Cancelled`]
/// between windows once `opts` is cancelled.
pub(crate) fn stream_entry_with(
    archive: &Archive,
    entry: &Entry,
    bases: &[Option<&[u8]>],
    opts: &Options,
    mut check: impl FnMut(usize, &[u8]) -> Result<()> + Send,
    mut sink: impl FnMut(usize, &[u8]) -> Result<()> + Send,
) -> Result<()> {
    let progress = opts.progress.as_deref();
    let jobs: Vec<(usize, usize)> = entry
        .segments
        .iter()
        .enumerate()
        .flat_map(|(s, seg)| (0..seg.chunks.len()).map(move |c| (s, c)))
        .collect();
    // Offset of every chunk within its segment, to find its range of the base tensor.
    let starts: Vec<Vec<usize>> = entry
        .segments
        .iter()
        .map(|seg| {
            let mut at = 0usize;
            seg.chunks
                .iter()
                .map(|c| {
                    let s = at;
                    at += c.raw_len as usize;
                    s
                })
                .collect()
        })
        .collect();
    let base_of = |s: usize, c: usize, len: usize| -> Option<&[u8]> {
        let b = bases.get(s).copied().flatten()?;
        b.get(starts[s][c]..starts[s][c] + len)
    };
    let raw_len = |&(s, c): &(usize, usize)| u64::from(entry.segments[s].chunks[c].raw_len);
    let windows = windows(&jobs.iter().map(raw_len).collect::<Vec<_>>());
    // Raw bytes of a window.
    let window_len = |range: &std::ops::Range<usize>| -> usize {
        jobs[range.clone()].iter().map(raw_len).sum::<u64>() as usize
    };
    let decode = |range: &std::ops::Range<usize>, buf: &mut [u8]| -> Result<()> {
        let jobs = &jobs[range.clone()];
        // Both buffers hold the largest window (so a window shorter than the last one reuses
        // its bytes: every byte handed on is decoded first).
        let len = window_len(range);
        let mut pieces = Vec::with_capacity(jobs.len());
        let mut rest = &mut buf[..len];
        for &(s, c) in jobs {
            let (head, tail) = rest.split_at_mut(entry.segments[s].chunks[c].raw_len as usize);
            pieces.push((s, c, head));
            rest = tail;
        }
        pieces.into_par_iter().try_for_each(|(s, c, out)| {
            let base = base_of(s, c, out.len());
            archive.decode_chunk(entry, &entry.segments[s], c, out, base)
        })?;
        for &(s, c) in jobs {
            archive.release(&entry.segments[s].chunks[c..=c]);
        }
        Ok(())
    };
    let mut deliver = |range: &std::ops::Range<usize>, buf: &[u8]| -> Result<()> {
        let pieces = || {
            jobs[range.clone()].iter().scan(0usize, |pos, job| {
                let len = raw_len(job) as usize;
                *pos += len;
                Some((job.0, &buf[*pos - len..*pos]))
            })
        };
        let (checked, sunk) = rayon::join(
            || pieces().try_for_each(|(s, data)| check(s, data)),
            || pieces().try_for_each(|(s, data)| sink(s, data)),
        );
        checked?;
        sunk?;
        if let Some(p) = progress {
            p.advance(window_len(range) as u64);
        }
        Ok(())
    };
    // Double buffering: window k is delivered while window k + 1 is decoded.
    // Allocated zeroed in one piece each, rather than grown and zero-filled window by window:
    // growing them wrote every byte on one thread before the window's parallel decode began,
    // three times over at the start of every entry; fresh pages are now first touched by the
    // decoders, in parallel, and in huge pages where the kernel has them ([`Scratch`]: 527
    // page faults instead of 3,077 for a 45 MB file, 3 ms less wall time at 2 threads).
    let largest = windows.iter().map(window_len).max().unwrap_or(0);
    let mut ready = Scratch::zeroed(largest);
    let mut next = Scratch::zeroed(largest);
    let mut previous: Option<&std::ops::Range<usize>> = None;
    for range in &windows {
        opts.check_cancel()?;
        match previous {
            // The first window has nothing to deliver beside it: decoded here, its chunks
            // are shared by every thread (a join with an empty first half left them to the
            // one thread that took the second).
            None => decode(range, &mut next)?,
            Some(p) => {
                let (delivered, decoded) =
                    rayon::join(|| deliver(p, &ready), || decode(range, &mut next));
                delivered?;
                decoded?;
            }
        }
        std::mem::swap(&mut ready, &mut next);
        previous = Some(range);
    }
    if let Some(p) = previous {
        deliver(p, &ready)?;
    }
    Ok(())
}

/// Checks the BLAKE3 of every segment as its decoded bytes stream past, so a restored file is
/// renamed into place only when every byte matches what was compressed.
pub(crate) struct SegmentCheck<'a> {
    archive: &'a Archive,
    entry: &'a Entry,
    hasher: SegmentHasher,
}

impl<'a> SegmentCheck<'a> {
    pub(crate) fn new(archive: &'a Archive, entry: &'a Entry) -> Self {
        Self {
            archive,
            entry,
            hasher: SegmentHasher::default(),
        }
    }

    pub(crate) fn update(&mut self, segment: usize, data: &[u8]) -> Result<()> {
        match self.hasher.update(segment, data) {
            Some((s, h)) => self.compare(s, h),
            None => Ok(()),
        }
    }

    /// Checks the last segment and the empty ones.
    pub(crate) fn finish(mut self) -> Result<()> {
        if let Some((s, h)) = self.hasher.finish() {
            self.compare(s, h)?;
        }
        for (s, seg) in self.entry.segments.iter().enumerate() {
            if seg.len == 0 {
                self.compare(s, blake3::hash(&[]))?;
            }
        }
        Ok(())
    }

    fn compare(&self, segment: usize, got: blake3::Hash) -> Result<()> {
        let seg = &self.entry.segments[segment];
        if got.as_bytes() == &seg.blake3 {
            return Ok(());
        }
        let what = seg.kind.describe(seg.offset);
        Err(Error::Corrupt {
            path: self.archive.path().to_path_buf(),
            what: format!("{}: {what}", self.entry.path),
            detail: "decoded bytes do not match the recorded BLAKE3 (the archive is damaged or \
                     was tampered with); nothing was written"
                .into(),
        })
    }
}

/// Restores the archive at `archive_path` to `output`: the original file, or for a folder
/// archive the original folder tree. Every chunk checksum is checked before decoding and every
/// tensor's (and header's) BLAKE3 after, before the output is renamed into place.
///
/// With `force`, a single file replaces an existing regular file (never a folder, link or
/// special file), and a folder archive restores into an existing folder by replacing only the
/// files it holds, after all of them were restored and checked (other files are kept; see
/// `README.md`, Guarantees). A destination that is, holds or lies inside the archive is
/// refused.
pub fn decompress(archive_path: &Path, output: &Path, opts: &Options) -> Result<()> {
    refuse_dash_archive(archive_path)?;
    check_distinct(archive_path, output)?;
    check_destination(archive_path, output)?;
    let archive = Archive::open(archive_path)?;
    refuse_delta(&archive, archive_path)?;
    match archive.index().root {
        Root::File => check_writable(output, opts.force)?,
        Root::Directory => check_writable_dir(output, opts.force)?,
    }
    let total: u64 = archive.index().entries.iter().map(|e| e.size).sum();
    let pool = opts.pool_for(total)?;
    let progress = opts.progress.as_deref();
    if let Some(p) = progress {
        p.start("decompressing", total);
    }
    pool.install(|| -> Result<()> {
        match archive.index().root {
            Root::File => {
                let entry = &archive.index().entries[0];
                let mut out = AtomicFile::create(output, opts.force, !opts.no_sync)?;
                out.reserve(entry.size);
                restore_entry(&archive, entry, opts, |data| out.write_all(data))?;
                out.commit()
            }
            Root::Directory => restore_tree(&archive, output, opts, |entry, write| {
                restore_entry(&archive, entry, opts, write)
            }),
        }
    })?;
    if let Some(p) = progress {
        p.finish();
    }
    Ok(())
}

/// Restores the folder archive `archive` into the folder `output` (new, or existing with
/// `opts.force`) safely: everything is written into a temporary folder and moved into place
/// only when every file was restored and checked (see [`AtomicDir`]); a failed run leaves
/// nothing. Packs of small files are unpacked here; every other entry is handed to
/// `restore_file` with a writer for its bytes (which must check them).
pub(crate) fn restore_tree(
    archive: &Archive,
    output: &Path,
    opts: &Options,
    mut restore_file: impl FnMut(&Entry, &mut (dyn FnMut(&[u8]) -> Result<()> + Send)) -> Result<()>,
) -> Result<()> {
    let progress = opts.progress.as_deref();
    let dir = AtomicDir::create(output, opts.force, !opts.no_sync)?;
    // Refuse before decoding anything if a path cannot be restored into place (packs of
    // small files have no path of their own: their members do).
    dir.check_paths(
        archive
            .index()
            .entries
            .iter()
            .filter(|e| e.kind != dmx_format::EntryKind::Pack)
            .map(|e| e.path.as_str()),
    )?;
    let mut pack = Vec::new();
    for entry in &archive.index().entries {
        opts.check_cancel()?;
        let sync = !opts.no_sync;
        if crate::archive::restore_packed(archive, entry, &mut pack, dir.path(), sync, progress)? {
            continue;
        }
        let path = dir.path().join(&entry.path);
        // Errors name the file the user asked for, not the temporary folder.
        let shown = output.join(&entry.path);
        let mut w = write_plain(&path).map_err(|e| match e {
            Error::Io { source, .. } => Error::io(&shown, source),
            e => e,
        })?;
        // The file's blocks are allocated before its bytes arrive (see `AtomicFile::reserve`).
        let reserved = if reserve_blocks(w.get_ref(), entry.size) {
            entry.size
        } else {
            0
        };
        let mut written = 0u64;
        restore_file(entry, &mut |data: &[u8]| {
            written += data.len() as u64;
            write_through(&mut w, data).map_err(|e| Error::io(&shown, e))
        })?;
        w.flush().map_err(|e| Error::io(&shown, e))?;
        end_reserved(w.get_ref(), reserved, written).map_err(|e| Error::io(&shown, e))?;
        if sync {
            w.get_ref().sync_all().map_err(|e| Error::io(&shown, e))?;
        }
    }
    dir.commit()
}

/// Archives are read from files only (they are memory-mapped and read out of order).
fn refuse_dash_archive(archive_path: &Path) -> Result<()> {
    if crate::io::is_dash(archive_path) {
        return Err(Error::Unsupported(
            "an archive cannot be read from standard input; save it to a file first (use \
             ./- for a file named -)"
                .into(),
        ));
    }
    Ok(())
}

/// Refuses deltas, which need their base.
fn refuse_delta(archive: &Archive, archive_path: &Path) -> Result<()> {
    if archive.index().entries.iter().any(|e| e.base.is_some()) {
        return Err(Error::Unsupported(format!(
            "{} is a delta: restore it with `dmx delta-reconstruct BASE {} OUTPUT`",
            archive_path.display(),
            archive_path.display()
        )));
    }
    Ok(())
}

/// Streams `entry` to `write`, checking every segment's BLAKE3.
fn restore_entry(
    archive: &Archive,
    entry: &Entry,
    opts: &Options,
    mut write: impl FnMut(&[u8]) -> Result<()> + Send,
) -> Result<()> {
    let mut check = SegmentCheck::new(archive, entry);
    stream_entry(
        archive,
        entry,
        opts,
        |s, data| check.update(s, data),
        |_, data| write(data),
    )?;
    check.finish()
}

/// Restores the single-file archive at `archive_path` and writes it to `out` (standard
/// output for `dmx decompress ARCHIVE -`). The file is restored to a temporary file first
/// (beside the archive, or in the system's temporary folder where that is not writable) and
/// every checksum is checked, so no unverified byte reaches `out`. Folder archives and deltas
/// are refused.
pub fn decompress_to(archive_path: &Path, out: &mut dyn Write, opts: &Options) -> Result<()> {
    refuse_dash_archive(archive_path)?;
    let archive = Archive::open(archive_path)?;
    refuse_delta(&archive, archive_path)?;
    if archive.index().root != Root::File {
        return Err(Error::Destination(format!(
            "{} is a folder archive; standard output can take only a single-file archive \
             (restore it to a folder instead)",
            archive_path.display()
        )));
    }
    let beside = archive_path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = match temp_file_in(beside) {
        Ok(t) => t,
        Err(_) => temp_file_in(&std::env::temp_dir())?,
    };
    let tmp_path = tmp.file.path().to_path_buf();
    let pool = opts.pool()?;
    let progress = opts.progress.as_deref();
    let entry = &archive.index().entries[0];
    if let Some(p) = progress {
        p.start("decompressing", entry.size);
    }
    {
        let mut w = std::io::BufWriter::with_capacity(1 << 20, tmp.file.as_file_mut());
        pool.install(|| {
            restore_entry(&archive, entry, opts, |data| {
                write_through(&mut w, data).map_err(|e| Error::io(&tmp_path, e))
            })
        })?;
        w.flush().map_err(|e| Error::io(&tmp_path, e))?;
    }
    if let Some(p) = progress {
        p.finish();
    }
    let f = tmp.file.as_file_mut();
    f.seek(SeekFrom::Start(0))
        .map_err(|e| Error::io(&tmp_path, e))?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|e| Error::io(&tmp_path, e))?;
        if n == 0 {
            break;
        }
        out.write_all(&buf[..n])
            .map_err(|e| Error::io("standard output", e))?;
    }
    out.flush().map_err(|e| Error::io("standard output", e))?;
    Ok(())
}
