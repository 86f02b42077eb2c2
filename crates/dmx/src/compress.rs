//! Compression: plan the input, encode chunks in parallel windows, stream payloads to a
//! temporary file, append the index and trailer, and rename into place.

use std::path::Path;
use std::time::Instant;

use dmx_codec::ValueKind;
use dmx_format::{Chunk, Entry, Index, Segment, Transform};
use rayon::prelude::*;
use sha2::Digest;

use crate::error::{Error, Result};
use crate::lossy::{Coding, ErrorAcc, LossyOptions, Mode};
use crate::output::AtomicFile;
use crate::plan::{PlannedFile, PlannedSegment, plan_input};
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
    coding: Coding,
    bfp_row: usize,
    base: Option<&'a [u8]>,
}

/// What encoding one chunk produced.
struct Done {
    enc: dmx_codec::Encoded,
    /// The decoded bytes of a lossy chunk, and their error against the original.
    lossy: Option<(Vec<u8>, ErrorAcc)>,
    /// Values equal to the base's (delta codings).
    unchanged: u64,
}

/// Compresses `input` (a `.safetensors` file, any file, or a folder) into the archive `output`,
/// losslessly.
pub fn compress(input: &Path, output: &Path, opts: &Options) -> Result<CompressReport> {
    compress_with(input, output, &LossyOptions::default(), opts)
}

/// [`compress`] with lossy settings (lossless when `lossy` is the default).
pub fn compress_with(
    input: &Path,
    output: &Path,
    lossy: &LossyOptions,
    opts: &Options,
) -> Result<CompressReport> {
    let start = Instant::now();
    lossy.check()?;
    crate::output::check_distinct(input, output)?;
    let (root, mut files) = plan_input(input)?;
    let total: u64 = files.iter().map(|f| f.size).sum();
    // Format 1.2 (packed small tensors and files, compressed index) only where the index
    // would otherwise weigh on the archive; lossy archives keep per-tensor segments but get
    // the compressed index.
    let big_index = crate::plan::wants_packing(&files, total);
    let packing = lossy.is_lossless() && big_index;
    if packing {
        for f in files.iter_mut() {
            if f.kind == dmx_format::EntryKind::Safetensors {
                crate::plan::pack_tensors(f);
            }
        }
    }
    let (minor, flags) = if big_index {
        (2, dmx_format::FLAG_COMPRESSED_INDEX)
    } else {
        (u16::from(!lossy.is_lossless()), 0)
    };
    let mut out = AtomicFile::create(output, opts.force, !opts.no_sync)?;
    out.write_all(&dmx_format::preamble_with(minor, flags))?;
    let progress = opts.progress.as_deref();
    if let Some(p) = progress {
        p.start("compressing", total);
    }
    let pool = opts.pool()?;
    let mut entries = Vec::with_capacity(files.len());
    let mut warnings = Vec::new();
    let mut i = 0;
    while i < files.len() {
        let file = &files[i];
        if let Some(w) = &file.warning {
            warnings.push(w.clone());
        }
        let run = if packing && root == dmx_format::Root::Directory {
            pack_run(&files[i..])
        } else {
            0
        };
        if run >= 2 {
            for f in &files[i + 1..i + run] {
                warnings.extend(f.warning.clone());
            }
            let packed =
                pool.install(|| compress_pack(input, &files[i..i + run], &mut out, progress))?;
            entries.extend(packed);
            i += run;
            continue;
        }
        let entry = pool.install(|| compress_file(file, lossy, &mut out, progress))?;
        entries.push(entry);
        i += 1;
    }
    let index = Index { root, entries };
    finish_archive_with(&index, &mut out, input, flags)?;
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

/// How many of the first `files` go into one pack of small files (format 1.2): consecutive
/// packable files up to [`crate::plan::PACK_SIZE`] bytes.
fn pack_run(files: &[PlannedFile]) -> usize {
    let mut size = 0u64;
    files
        .iter()
        .take_while(|f| {
            size += f.size;
            crate::plan::packable_file(f) && size <= crate::plan::PACK_SIZE
        })
        .count()
}

/// Stores `members`, small files of the folder `dir`, as one pack followed by one packed
/// entry per file (format 1.2): they share chunks and one BLAKE3 and SHA-256.
fn compress_pack(
    dir: &Path,
    members: &[PlannedFile],
    out: &mut AtomicFile,
    progress: Option<&dyn Progress>,
) -> Result<Vec<Entry>> {
    let mut data = Vec::with_capacity(members.iter().map(|f| f.size as usize).sum());
    let mut entries = Vec::with_capacity(members.len() + 1);
    for f in members {
        let bytes = std::fs::read(&f.path).map_err(|e| Error::io(&f.path, e))?;
        if bytes.len() as u64 != f.size {
            return Err(Error::Usage(format!(
                "{}: file changed size while being compressed",
                f.path.display()
            )));
        }
        entries.push(Entry {
            path: f.rel.clone(),
            kind: dmx_format::EntryKind::Packed,
            size: f.size,
            sha256: [0; 32],
            base: None,
            segments: Vec::new(),
            packed: Some(data.len() as u64),
        });
        data.extend_from_slice(&bytes);
    }
    let plan = crate::plan::pack_plan(dir, data.len() as u64);
    let digest = crate::archive::pack_digest(members.iter().map(|f| f.size), &data);
    let bytes = Bytes::Owned(data);
    let mut pack = encode_entry(&plan, &bytes, &[Coding::Lossless], &[None], out, progress)?;
    pack.sha256 = digest;
    entries.insert(0, pack);
    Ok(entries)
}

/// Checks `index` against the reader's limits, then appends it and the trailer to `out`.
/// `input` names the input in errors.
pub(crate) fn finish_archive(index: &Index, out: &mut AtomicFile, input: &Path) -> Result<()> {
    finish_archive_with(index, out, input, 0)
}

/// Why the writer refuses an index that a reader would reject: the reader's error, without
/// the "archive corrupt" wording meant for damaged archives.
fn writer_reason(e: &dmx_format::FormatError) -> String {
    match e {
        dmx_format::FormatError::Invalid(why) => (*why).to_string(),
        dmx_format::FormatError::OutOfRange(what) => format!("{what} out of range"),
        other => other.to_string(),
    }
}

/// [`finish_archive`] for a preamble with `flags`: with
/// [`dmx_format::FLAG_COMPRESSED_INDEX`] the index is stored compressed (format 1.2).
pub(crate) fn finish_archive_with(
    index: &Index,
    out: &mut AtomicFile,
    input: &Path,
    flags: u32,
) -> Result<()> {
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
    let index_bytes = if flags & dmx_format::FLAG_COMPRESSED_INDEX != 0 {
        index.to_stored(flags)
    } else {
        index_bytes
    };
    // Parsed back exactly as a reader will (decompressed first when compressed).
    Index::from_stored(&index_bytes, flags, index_offset, &limits).map_err(|e| {
        Error::Usage(format!(
            "{}: cannot be stored: {} (reader limits and rules are documented in \
             docs/FORMAT.md §5.5 and §6)",
            input.display(),
            writer_reason(&e)
        ))
    })?;
    out.write_all(&index_bytes)?;
    out.write_all(&dmx_format::Trailer::for_index(index_offset, &index_bytes).to_bytes())?;
    Ok(())
}

/// Encodes one chunk; a lossy chunk is decoded again so that its checksums and error are
/// those of what decompression will produce.
fn run_job(j: &Job<'_>) -> Result<Done> {
    let enc = j.coding.encode(j.value, j.data, j.hints, j.bfp_row, j.base);
    let unchanged = j
        .base
        .map_or(0, |b| unchanged(j.coding, j.value, b, j.data));
    if j.coding.is_lossless() {
        return Ok(Done {
            enc,
            lossy: None,
            unchanged,
        });
    }
    let mut decoded = vec![0u8; j.data.len()];
    dmx_codec::decode_with_base(enc.codec, &enc.payload, j.base, &mut decoded).map_err(|e| {
        Error::Usage(format!(
            "internal error: a {} chunk failed to decode right after encoding ({e}); please \
             report this",
            enc.codec.name()
        ))
    })?;
    let mut acc = ErrorAcc::default();
    if let Some(layout) = crate::lossy::lossy_layout(j.value) {
        acc.add(layout, j.data, &decoded);
    }
    Ok(Done {
        enc,
        lossy: Some((decoded, acc)),
        unchanged,
    })
}

/// Values of `data` equal to the base's: bit for bit, or on the grid for quantized deltas.
fn unchanged(coding: Coding, value: ValueKind, base: &[u8], data: &[u8]) -> u64 {
    match (coding, value) {
        (Coding::QuantDelta { step, bits }, ValueKind::Float(l)) => base
            .chunks_exact(l.bytes())
            .zip(data.chunks_exact(l.bytes()))
            .filter(|(a, b)| {
                let q = |c: &[u8]| {
                    dmx_codec::grid::quantize(
                        dmx_codec::grid::to_f64(l, crate::lossy::raw(c)),
                        step,
                        bits,
                    )
                };
                a == b || q(a).is_some_and(|qa| q(b) == Some(qa))
            })
            .count() as u64,
        (_, ValueKind::Float(l)) => base
            .chunks_exact(l.bytes())
            .zip(data.chunks_exact(l.bytes()))
            .filter(|(a, b)| a == b)
            .count() as u64,
        _ => base.iter().zip(data).filter(|(a, b)| a == b).count() as u64,
    }
}

/// The BFP row length for chunks of `seg`: its last dimension when every chunk starts at a
/// row, else 0 (groups then restart at chunk starts).
fn bfp_row(seg: &PlannedSegment) -> usize {
    let (dmx_format::SegmentKind::Tensor(t), Some(layout)) =
        (&seg.kind, crate::lossy::lossy_layout(seg.value))
    else {
        return 0;
    };
    let Some(&last) = t.shape.last() else {
        return 0;
    };
    if t.shape.len() < 2 || last == 0 {
        return 0;
    }
    let (chunk, _) = seg.chunking();
    let chunk_values = chunk / layout.bytes() as u64;
    if chunk_values.is_multiple_of(last) {
        last as usize
    } else {
        0
    }
}

/// Encoded size and error of `coding` on a whole segment (for [`Mode::Auto`]).
fn trial(seg: &PlannedSegment, bytes: &[u8], coding: Coding) -> Result<(u64, ErrorAcc)> {
    let hints = seg.hints();
    let row = bfp_row(seg);
    let ranges: Vec<_> = seg.chunks().collect();
    let results = ranges
        .par_iter()
        .map(|r| {
            run_job(&Job {
                segment: 0,
                data: &bytes[r.start as usize..r.end as usize],
                value: seg.value,
                hints,
                coding,
                bfp_row: row,
                base: None,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let mut acc = ErrorAcc::default();
    let mut size = 0;
    for d in &results {
        size += d.enc.payload.len() as u64;
        if let Some((_, a)) = &d.lossy {
            acc.merge(a);
        }
    }
    Ok((size, acc))
}

/// Per segment, the smallest coding whose relative L2 error is within `budget`.
fn auto_codings(
    file: &PlannedFile,
    bytes: &[u8],
    lossy: &LossyOptions,
    budget: f64,
) -> Result<Vec<Coding>> {
    let mut codings = crate::lossy::fixed_codings(file, bytes, lossy)?;
    let steps16 = crate::lossy::shared_steps(crate::lossy::float_tensors(file, bytes), 16);
    let steps32 = crate::lossy::shared_steps(crate::lossy::float_tensors(file, bytes), 32);
    let keep = lossy.keep_set()?;
    for (i, seg) in file.segments.iter().enumerate() {
        let (dmx_format::SegmentKind::Tensor(t), Some(layout)) =
            (&seg.kind, crate::lossy::lossy_layout(seg.value))
        else {
            continue;
        };
        if seg.len == 0 || keep.is_match(&t.name) {
            continue;
        }
        let (mut best_size, _) = trial(seg, bytes, Coding::Lossless)?;
        let mut best = Coding::Lossless;
        let candidates = crate::lossy::auto_candidates(
            layout,
            steps16.get(&t.name).copied().unwrap_or(1.0),
            steps32.get(&t.name).copied().unwrap_or(1.0),
        );
        // BFP: the error falls as M grows, so find the smallest M within budget by bisection.
        let bfps: Vec<Coding> = candidates
            .iter()
            .copied()
            .filter(|c| matches!(c, Coding::Bfp(_)))
            .collect();
        let (mut lo, mut hi) = (0usize, bfps.len());
        let mut found: Option<(Coding, u64)> = None;
        while lo < hi {
            let mid = (lo + hi) / 2;
            let (size, acc) = trial(seg, bytes, bfps[mid])?;
            if acc.rel_l2() <= budget {
                found = Some((bfps[mid], size));
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        if let Some((c, size)) = found
            && size < best_size
        {
            best = c;
            best_size = size;
        }
        for c in candidates
            .into_iter()
            .filter(|c| !matches!(c, Coding::Bfp(_)))
        {
            let (size, acc) = trial(seg, bytes, c)?;
            if acc.rel_l2() <= budget && size < best_size {
                best = c;
                best_size = size;
            }
        }
        codings[i] = best;
    }
    Ok(codings)
}

fn compress_file(
    file: &PlannedFile,
    lossy: &LossyOptions,
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
    let codings = if lossy.is_lossless() {
        vec![Coding::Lossless; file.segments.len()]
    } else if let (Mode::Auto, Some(budget)) = (lossy.mode, lossy.max_rel_error) {
        auto_codings(file, &bytes, lossy, budget)?
    } else {
        crate::lossy::fixed_codings(file, &bytes, lossy)?
    };
    let bases = vec![None; file.segments.len()];
    encode_entry(file, &bytes, &codings, &bases, out, progress)
}

/// The base tensor a segment is coded against.
#[derive(Clone, Copy)]
pub(crate) struct BaseTensor<'a> {
    /// Its name in the base file.
    pub name: &'a str,
    /// Its bytes (same length as the segment).
    pub data: &'a [u8],
}

/// Encodes the planned `file` (its bytes in `bytes`) with one coding per segment, streaming
/// payloads to `out`; returns its index entry (kind from the plan, no base).
pub(crate) fn encode_entry(
    file: &PlannedFile,
    bytes: &Bytes,
    codings: &[Coding],
    bases: &[Option<BaseTensor<'_>>],
    out: &mut AtomicFile,
    progress: Option<&dyn Progress>,
) -> Result<Entry> {
    let any_lossy = codings.iter().any(|c| !c.is_lossless());
    // Cut every segment into chunks, in file order.
    let mut jobs = Vec::new();
    for (i, seg) in file.segments.iter().enumerate() {
        let hints = seg.hints();
        let row = bfp_row(seg);
        for r in seg.chunks() {
            jobs.push(Job {
                segment: i,
                data: &bytes[r.start as usize..r.end as usize],
                value: seg.value,
                hints,
                coding: codings[i],
                bfp_row: row,
                base: bases[i].map(|b| {
                    &b.data[(r.start - seg.offset) as usize..(r.end - seg.offset) as usize]
                }),
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
    let mut errors = vec![ErrorAcc::default(); segments.len()];
    let mut unchanged = vec![0u64; segments.len()];
    let mut sha = sha2::Sha256::new();
    let mut hasher = SegmentHasher::default();
    let lens: Vec<u64> = jobs.iter().map(|j| j.data.len() as u64).collect();
    for range in windows(&lens) {
        let raw: u64 = lens[range.clone()].iter().sum();
        let window = &jobs[range];
        let encode = || window.par_iter().map(run_job).collect::<Result<Vec<_>>>();
        let encoded = if any_lossy {
            // Hash what decompression will produce: the decoded bytes of lossy chunks.
            let encoded = encode()?;
            for (j, d) in window.iter().zip(&encoded) {
                let data = d.lossy.as_ref().map_or(j.data, |(b, _)| b.as_slice());
                sha.update(data);
                if let Some((s, h)) = hasher.update(j.segment, data) {
                    segments[s].blake3 = *h.as_bytes();
                }
            }
            encoded
        } else {
            let (encoded, ()) = rayon::join(encode, || {
                for j in window {
                    sha.update(j.data);
                    if let Some((s, h)) = hasher.update(j.segment, j.data) {
                        segments[s].blake3 = *h.as_bytes();
                    }
                }
            });
            encoded?
        };
        for (j, done) in window.iter().zip(encoded) {
            let enc = done.enc;
            if let Some((_, acc)) = &done.lossy {
                errors[j.segment].merge(acc);
            }
            unchanged[j.segment] += done.unchanged;
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
    for (i, seg) in segments.iter_mut().enumerate() {
        let lossy = codings[i].record(errors[i].stats());
        seg.transform = match (bases[i], lossy) {
            (Some(b), Some(lossy)) => Transform::QuantDelta {
                base: b.name.to_string(),
                lossy,
                unchanged: unchanged[i],
            },
            (Some(b), None) => Transform::Delta {
                base: b.name.to_string(),
                unchanged: unchanged[i],
            },
            (None, Some(l)) => Transform::Lossy(l),
            (None, None) => Transform::Identity,
        };
    }
    Ok(Entry {
        path: file.rel.clone(),
        kind: file.kind,
        size: file.size,
        sha256: sha.finalize().into(),
        base: None,
        segments,
        packed: None,
    })
}

#[cfg(test)]
mod writer_tests {
    use super::writer_reason;
    use dmx_format::FormatError;

    /// Issue 11, finding 6: the writer's self-check of the index reports its refusals as its
    /// own, never with the "archive corrupt" wording meant for damaged archives.
    #[test]
    fn writer_refusals_never_say_corrupt() {
        for e in [
            FormatError::Invalid("entry path is not a safe relative path"),
            FormatError::OutOfRange("chunk offset"),
            FormatError::LimitExceeded {
                what: "entry count",
                value: 2,
                limit: 1,
            },
        ] {
            let why = writer_reason(&e);
            assert!(!why.contains("corrupt"), "{why}");
            assert!(!why.is_empty());
        }
    }
}
