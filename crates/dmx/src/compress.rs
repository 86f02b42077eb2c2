//! Compression: plan the input, encode chunks in parallel windows, stream payloads to a
//! temporary file, append the index and trailer, and rename into place.

use std::path::Path;
use std::time::Instant;

use dmx_codec::ValueKind;
use dmx_format::{Chunk, Entry, Index, Segment, Transform};
use rayon::prelude::*;
use sha2::Digest;

use crate::error::{Error, Result};
use crate::output::AtomicFile;
use crate::plan::{PlannedFile, plan_input};
use crate::source::Bytes;
use crate::window::{SegmentHasher, windows};
use crate::{Options, Progress};

/// What a compression run did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CompressReport {
    /// Total size of the input files.
    pub input_bytes: u64,
    /// Size of the archive written.
    pub output_bytes: u64,
    /// Number of files stored.
    pub files: usize,
    /// Number of tensors stored.
    pub tensors: usize,
    /// Number of tensor elements of known dtypes.
    pub params: u64,
    /// Per-dtype sizes, bits per weight and entropy bounds of what was stored.
    pub stats: crate::info::Stats,
    /// Wall time in seconds.
    pub seconds: f64,
    /// Non-fatal remarks (for example a `.safetensors` file that did not parse).
    pub warnings: Vec<String>,
}

struct Job<'a> {
    segment: usize,
    data: &'a [u8],
    value: ValueKind,
    hints: dmx_codec::Hints,
}

/// Compresses `input` (a `.safetensors` file, any file, or a folder) into the archive `output`.
pub fn compress(input: &Path, output: &Path, opts: &Options) -> Result<CompressReport> {
    let start = Instant::now();
    crate::output::check_distinct(input, output)?;
    let (root, files) = plan_input(input)?;
    let total: u64 = files.iter().map(|f| f.size).sum();
    let mut out = AtomicFile::create(output, opts.force, !opts.no_sync)?;
    out.write_all(&dmx_format::preamble())?;
    let progress = opts.progress.as_deref();
    if let Some(p) = progress {
        p.start("compressing", total);
    }
    let pool = opts.pool()?;
    let mut entries = Vec::with_capacity(files.len());
    let mut warnings = Vec::new();
    for file in &files {
        if let Some(w) = &file.warning {
            warnings.push(w.clone());
        }
        let entry = pool.install(|| compress_file(file, &mut out, progress))?;
        entries.push(entry);
    }
    let index = Index { root, entries };
    let index_bytes = index.to_bytes();
    // What readers would reject must not be written: check the index against their limits.
    let index_offset = out.position();
    let limits = dmx_format::Limits::default();
    if index_bytes.len() as u64 > limits.max_index_len {
        return Err(Error::Usage(format!(
            "{}: cannot be stored: the index would be {} bytes, above the reader limit of {} \
             (docs/FORMAT.md §6)",
            input.display(),
            index_bytes.len(),
            limits.max_index_len
        )));
    }
    Index::from_bytes(&index_bytes, index_offset, &limits).map_err(|e| {
        Error::Usage(format!(
            "{}: cannot be stored: {e} (reader limits are documented in docs/FORMAT.md §6)",
            input.display()
        ))
    })?;
    out.write_all(&index_bytes)?;
    out.write_all(&dmx_format::Trailer::for_index(index_offset, &index_bytes).to_bytes())?;
    let output_bytes = out.position();
    out.commit()?;
    if let Some(p) = progress {
        p.finish();
    }
    let stats = crate::info::Stats::of_index(&index);
    Ok(CompressReport {
        input_bytes: total,
        output_bytes,
        files: files.len(),
        tensors: stats.tensors,
        params: stats.params,
        stats,
        seconds: start.elapsed().as_secs_f64(),
        warnings,
    })
}

fn compress_file(
    file: &PlannedFile,
    out: &mut AtomicFile,
    progress: Option<&dyn Progress>,
) -> Result<Entry> {
    let bytes = Bytes::open(&file.path)?;
    if bytes.len() as u64 != file.size {
        return Err(Error::Usage(format!(
            "{}: file changed size while being compressed",
            file.path.display()
        )));
    }
    // Cut every segment into chunks, in file order.
    let mut jobs = Vec::new();
    for (i, seg) in file.segments.iter().enumerate() {
        let hints = seg.hints();
        for r in seg.chunks() {
            jobs.push(Job {
                segment: i,
                data: &bytes[r.start as usize..r.end as usize],
                value: seg.value,
                hints,
            });
        }
    }
    let mut segments: Vec<Segment> = file
        .segments
        .iter()
        .map(|s| Segment {
            kind: s.kind.clone(),
            transform: Transform::Identity,
            offset: s.offset,
            len: s.len,
            blake3: *blake3::hash(&[]).as_bytes(),
            entropy_bits: 0.0,
            chunks: Vec::new(),
        })
        .collect();
    let mut sha = sha2::Sha256::new();
    let mut hasher = SegmentHasher::default();
    let lens: Vec<u64> = jobs.iter().map(|j| j.data.len() as u64).collect();
    for range in windows(&lens) {
        let raw: u64 = lens[range.clone()].iter().sum();
        let window = &jobs[range];
        let (encoded, ()) = rayon::join(
            || {
                window
                    .par_iter()
                    .map(|j| dmx_codec::encode_with(j.value, j.data, j.hints))
                    .collect::<Vec<_>>()
            },
            || {
                for j in window {
                    sha.update(j.data);
                    if let Some((s, h)) = hasher.update(j.segment, j.data) {
                        segments[s].blake3 = *h.as_bytes();
                    }
                }
            },
        );
        for (j, enc) in window.iter().zip(encoded) {
            let offset = out.position();
            out.write_all(&enc.payload)?;
            let seg = &mut segments[j.segment];
            seg.entropy_bits += enc.entropy_bits;
            seg.chunks.push(Chunk {
                offset,
                stored_len: enc.payload.len() as u32,
                raw_len: j.data.len() as u32,
                codec: enc.codec as u8,
                xxh3: xxhash_rust::xxh3::xxh3_64(&enc.payload),
            });
        }
        let first = window[0].data.as_ptr() as usize - bytes.as_ptr() as usize;
        bytes.release(first, first + raw as usize);
        if let Some(p) = progress {
            p.advance(raw);
        }
    }
    if let Some((s, h)) = hasher.finish() {
        segments[s].blake3 = *h.as_bytes();
    }
    Ok(Entry {
        path: file.rel.clone(),
        kind: file.kind,
        size: file.size,
        sha256: sha.finalize().into(),
        base: None,
        segments,
    })
}
