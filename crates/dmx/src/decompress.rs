//! Decompression: decode an entry's chunks in parallel windows and stream them, in order, to
//! a sink (an output file, hashers, or a comparison with the original).

use std::io::Write;
use std::path::Path;

use dmx_format::{Entry, Root};

use crate::archive::Archive;
use crate::compress::WINDOW;
use crate::error::{Error, Result};
use crate::output::{AtomicDir, AtomicFile, check_distinct, write_plain};
use crate::{Options, Progress};

/// Decodes `entry` window by window and hands every decoded piece, in file order, to `sink`
/// as `(segment index, bytes)`.
pub(crate) fn stream_entry(
    archive: &Archive,
    entry: &Entry,
    progress: Option<&dyn Progress>,
    mut sink: impl FnMut(usize, &[u8]) -> Result<()>,
) -> Result<()> {
    let jobs: Vec<(usize, usize)> = entry
        .segments
        .iter()
        .enumerate()
        .flat_map(|(s, seg)| (0..seg.chunks.len()).map(move |c| (s, c)))
        .collect();
    let mut buf = Vec::new();
    let mut done = 0;
    while done < jobs.len() {
        let mut end = done;
        let mut raw = 0u64;
        while end < jobs.len() && (raw < WINDOW || end == done) {
            let (s, c) = jobs[end];
            raw += u64::from(entry.segments[s].chunks[c].raw_len);
            end += 1;
        }
        buf.resize(raw as usize, 0);
        // Split the window buffer into one slice per chunk and decode them in parallel.
        let mut pieces = Vec::with_capacity(end - done);
        let mut rest = buf.as_mut_slice();
        for &(s, c) in &jobs[done..end] {
            let (head, tail) = rest.split_at_mut(entry.segments[s].chunks[c].raw_len as usize);
            pieces.push((s, c, head));
            rest = tail;
        }
        use rayon::prelude::*;
        pieces.par_iter_mut().try_for_each(|(s, c, out)| {
            archive.decode_chunk(entry, &entry.segments[*s], *c, out)
        })?;
        for (s, _, data) in &pieces {
            sink(*s, data)?;
        }
        for &(s, c) in &jobs[done..end] {
            archive.release(&entry.segments[s].chunks[c..=c]);
        }
        if let Some(p) = progress {
            p.advance(raw);
        }
        done = end;
    }
    Ok(())
}

/// Restores the archive at `archive_path` to `output`: the original file, or for a folder
/// archive the original folder tree. Every chunk checksum is checked on the way.
pub fn decompress(archive_path: &Path, output: &Path, opts: &Options) -> Result<()> {
    check_distinct(archive_path, output)?;
    crate::output::check_writable(output, opts.force)?;
    let archive = Archive::open(archive_path)?;
    let pool = opts.pool()?;
    let progress = opts.progress.as_deref();
    let total: u64 = archive.index().entries.iter().map(|e| e.size).sum();
    if let Some(p) = progress {
        p.start("decompressing", total);
    }
    pool.install(|| -> Result<()> {
        match archive.index().root {
            Root::File => {
                let entry = &archive.index().entries[0];
                let mut out = AtomicFile::create(output, opts.force)?;
                stream_entry(&archive, entry, progress, |_, data| out.write_all(data))?;
                out.commit()
            }
            Root::Directory => {
                let dir = AtomicDir::create(output, opts.force)?;
                for entry in &archive.index().entries {
                    let path = dir.path().join(&entry.path);
                    let mut w = write_plain(&path)?;
                    stream_entry(&archive, entry, progress, |_, data| {
                        w.write_all(data).map_err(|e| Error::io(&path, e))
                    })?;
                    w.flush().map_err(|e| Error::io(&path, e))?;
                    w.get_ref().sync_all().map_err(|e| Error::io(&path, e))?;
                }
                dir.commit()
            }
        }
    })?;
    if let Some(p) = progress {
        p.finish();
    }
    Ok(())
}
