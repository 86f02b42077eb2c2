//! Compression: plan the input, encode chunks in parallel windows, stream payloads to a
//! temporary file, append the index and trailer, and rename into place.

use std::path::Path;
use std::time::Instant;

use dmx_codec::ValueKind;
use dmx_format::{Chunk, Entry, Index, Segment, Transform};
use rayon::prelude::*;
use sha2::Digest;

use crate::error::{Error, Result};
use crate::io::AtomicFile;
use crate::io::Bytes;
use crate::lossy::{Coding, ErrorAcc, LossyOptions, Mode};
use crate::plan::{PlannedFile, PlannedSegment, plan_input};
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
    /// True when some tensor was stored lossily (restores as an approximation).
    pub lossy: bool,
    /// Lossy tensors: how many, and the worst error among them (docs/VERIFY.md).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lossy_summary: Option<crate::lossy::LossySummary>,
}

struct Job<'a> {
    segment: usize,
    data: &'a [u8],
    value: ValueKind,
    hints: dmx_codec::Hints,
    coding: Coding,
    bfp_row: usize,
    base: Option<&'a [u8]>,
    /// Store the chunk exactly when that is no larger than its lossy form.
    never_larger: bool,
}

/// What encoding one chunk produced.
struct Done {
    enc: dmx_codec::Encoded,
    /// The decoded bytes of a lossy chunk, and their error against the original.
    lossy: Option<(Vec<u8>, ErrorAcc)>,
    /// Values equal to the base's (delta codings).
    unchanged: u64,
    /// The chunk is stored in its lossy form (not exactly).
    lossy_coded: bool,
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
    // `-`: standard input, spooled to a temporary file beside the output (kept until the
    // archive is written) and compressed like a file.
    let spooled;
    let input = if crate::io::is_dash(input) {
        crate::io::check_writable(output, opts.force)?;
        spooled = crate::io::spool_stdin(output)?;
        spooled.1.as_path()
    } else {
        crate::io::check_input(input)?;
        input
    };
    crate::io::check_distinct(input, output)?;
    let (root, mut files) = plan_input(input)?;
    // An archive written inside its own input folder is not part of the input.
    refuse_output_in_input(&files, output)?;
    files.retain(|f| !crate::io::same_file(&f.path, output));
    let mut warnings = if lossy.is_lossless() && lossy.keep_lossless.is_empty() {
        Vec::new()
    } else {
        crate::lossy::plan_warnings(&files, lossy)?
    };
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
    let pool = opts.pool_for(total)?;
    let mut entries = Vec::with_capacity(files.len());
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
        let entry =
            pool.install(|| compress_file(file, lossy, &mut out, progress, &mut warnings))?;
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
    let lossy_summary = crate::lossy::LossySummary::of_index(&index);
    Ok(CompressReport {
        lossy: lossy_summary.is_some(),
        lossy_summary,
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

/// Refuses to replace a file of the input folder that is not a dmx archive: it would be left
/// out of the archive (see the output skip in [`compress_with`]) and then overwritten, lost.
fn refuse_output_in_input(files: &[PlannedFile], output: &Path) -> Result<()> {
    let Some(f) = files.iter().find(|f| crate::io::same_file(&f.path, output)) else {
        return Ok(());
    };
    let mut magic = [0u8; 8];
    let is_archive = std::fs::File::open(&f.path)
        .and_then(|mut h| std::io::Read::read_exact(&mut h, &mut magic))
        .is_ok()
        && magic == dmx_format::MAGIC;
    if is_archive {
        return Ok(());
    }
    Err(Error::Usage(format!(
        "{} is a file of the input folder and not a dmx archive; replacing it would lose \
         it: choose an output outside the folder",
        output.display()
    )))
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
            lossy_coded: false,
        });
    }
    if j.never_larger {
        // Never store a lossy form larger than the exact one (issue 11, finding 8).
        let exact_coding = if j.base.is_some() {
            Coding::Delta
        } else {
            Coding::Lossless
        };
        let exact = exact_coding.encode(j.value, j.data, j.hints, j.bfp_row, j.base);
        if exact.payload.len() <= enc.payload.len() {
            let mut acc = ErrorAcc::default();
            if let Some(layout) = crate::lossy::lossy_layout(j.value) {
                acc.add(layout, j.data, j.data);
            }
            return Ok(Done {
                enc: exact,
                lossy: Some((j.data.to_vec(), acc)),
                unchanged: j
                    .base
                    .map_or(0, |b| self::unchanged(exact_coding, j.value, b, j.data)),
                lossy_coded: false,
            });
        }
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
        lossy_coded: true,
    })
}

/// Keeps a chunk of an [`Mode::Auto`] segment within what is left of the segment's allowance
/// (`allowance - spent`): if its error would pass it, codes it again one step more precisely,
/// up to exactly. `recorded` becomes the most precise lossy coding used.
fn hold_budget(
    j: &Job<'_>,
    d: &mut Done,
    allowance: f64,
    spent: &mut f64,
    recorded: &mut Coding,
) -> Result<()> {
    let Some(layout) = crate::lossy::lossy_layout(j.value) else {
        return Ok(());
    };
    let mut coding = j.coding;
    loop {
        let err = d.lossy.as_ref().map_or(0.0, |(_, a)| a.sum_sq_err());
        if !d.lossy_coded || *spent + err <= allowance {
            *spent += err;
            if d.lossy_coded
                && let (Coding::Bfp(p), Coding::Bfp(r)) = (coding, *recorded)
                && p.mantissa_bits > r.mantissa_bits
            {
                *recorded = coding;
            }
            return Ok(());
        }
        coding = coding.escalate(layout);
        *d = run_job(&Job { coding, ..*j })?;
        if coding.is_lossless() {
            // Exact: no error, but its values still count in the tensor's norm.
            let mut acc = ErrorAcc::default();
            acc.add(layout, j.data, j.data);
            d.lossy = Some((j.data.to_vec(), acc));
        }
    }
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

/// Values [`Mode::Auto`] samples from a tensor to choose its coding (at most; at least an
/// eighth of a large tensor is sampled down to [`AUTO_SAMPLE_MIN`]).
const AUTO_SAMPLE: usize = 1 << 16;
/// Tensors up to this many values are measured whole in [`Mode::Auto`].
const AUTO_SAMPLE_MIN: usize = 1 << 14;

/// A sample of segment `seg` for [`Mode::Auto`]: the whole tensor when small, else evenly
/// spaced blocks of whole rows; and the BFP row length to code it with.
fn auto_sample<'a>(
    seg: &PlannedSegment,
    bytes: &'a [u8],
    layout: dmx_codec::FloatLayout,
) -> (std::borrow::Cow<'a, [u8]>, usize) {
    let w = layout.bytes();
    let data = &bytes[seg.offset as usize..(seg.offset + seg.len) as usize];
    let n = data.len() / w;
    let row = match &seg.kind {
        dmx_format::SegmentKind::Tensor(t) if t.shape.len() >= 2 => {
            t.shape.last().map_or(0, |&l| l as usize)
        }
        _ => 0,
    };
    let target = (n / 8).clamp(AUTO_SAMPLE_MIN, AUTO_SAMPLE);
    let (block, row) = if row > 0 && row <= AUTO_SAMPLE_MIN / 4 {
        (4096usize.div_ceil(row) * row, row)
    } else {
        (4096, 0)
    };
    if n <= 2 * target || n / block < 2 {
        let row = if row > 0 && n.is_multiple_of(row) {
            row
        } else {
            0
        };
        return (std::borrow::Cow::Borrowed(data), row);
    }
    let blocks_total = n / block;
    let k = (target / block).clamp(1, blocks_total);
    let mut out = Vec::with_capacity(k * block * w);
    for i in 0..k {
        let b = i * blocks_total / k;
        out.extend_from_slice(&data[b * block * w..(b + 1) * block * w]);
    }
    (std::borrow::Cow::Owned(out), row)
}

/// Per segment, the smallest coding whose relative L2 error is within `budget`, and the
/// largest sum of squared errors it may reach (its allowance).
///
/// The choice is made on a sample ([`auto_sample`]): the smallest BFP `M` within budget is
/// searched (the error roughly halves per bit, and falls as `M` grows), the other candidates
/// are measured, and the smallest within budget wins. [`encode_entry_budgeted`] then holds
/// the budget exactly: a chunk that would push the tensor's measured error past it is coded
/// again one step more precisely ([`Coding::escalate`]), up to exactly.
fn auto_codings(
    file: &PlannedFile,
    bytes: &[u8],
    lossy: &LossyOptions,
    budget: f64,
    warnings: &mut Vec<String>,
) -> Result<(Vec<Coding>, Vec<Option<f64>>)> {
    let fixed = crate::lossy::fixed_codings(file, bytes, lossy, warnings)?;
    let maxes = crate::lossy::shared_max(crate::lossy::float_tensors(file, bytes));
    let keep = lossy.keep_set()?;
    let chosen = file
        .segments
        .par_iter()
        .zip(fixed)
        .map(|(seg, fixed)| {
            let (dmx_format::SegmentKind::Tensor(t), Some(layout)) =
                (&seg.kind, crate::lossy::lossy_layout(seg.value))
            else {
                return Ok((fixed, None));
            };
            if seg.len == 0 || keep.is_match(&t.name) {
                return Ok((fixed, None));
            }
            let m = maxes.get(&t.name).copied().unwrap_or(0.0);
            let best = auto_choose(seg, bytes, layout, budget, m)?;
            if best.is_lossless() {
                return Ok((best, None));
            }
            let data = &bytes[seg.offset as usize..(seg.offset + seg.len) as usize];
            // A hair under the budget: the recorded error is summed in another order.
            let allowance = budget * budget * crate::lossy::sum_sq(layout, data) * (1.0 - 1e-9);
            Ok((best, Some(allowance)))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(chosen.into_iter().unzip())
}

/// The coding [`auto_codings`] picks for one tensor from its sample; `max_abs` is the
/// magnitude its integer grids are scaled to.
fn auto_choose(
    seg: &PlannedSegment,
    bytes: &[u8],
    layout: dmx_codec::FloatLayout,
    budget: f64,
    max_abs: f64,
) -> Result<Coding> {
    let hints = seg.hints();
    let (sample, row) = auto_sample(seg, bytes, layout);
    let measure = |c: Coding| -> Result<(usize, f64)> {
        let d = run_job(&Job {
            segment: 0,
            data: &sample,
            value: seg.value,
            hints,
            coding: c,
            bfp_row: row,
            base: None,
            never_larger: false,
        })?;
        let rel = d.lossy.as_ref().map_or(0.0, |(_, a)| a.rel_l2());
        Ok((d.enc.payload.len(), rel))
    };
    let mut best = Coding::Lossless;
    let (mut best_size, _) = measure(Coding::Lossless)?;
    let bfp_at = |m: u32| {
        Coding::Bfp(dmx_codec::bfp::Params {
            mantissa_bits: m,
            group_size: crate::lossy::DEFAULT_GROUP_SIZE,
        })
    };
    // The smallest M within budget: start at a guess, then jump by the measured error
    // ratio (one bit halves it) inside the bracket [lo_fail + 1, hi_ok - 1] of unknown M.
    let max_m = dmx_codec::bfp::max_mantissa_bits(layout);
    let (mut lo_fail, mut hi_ok) = (1u32, max_m + 1);
    let mut hi_size = 0;
    // BFP's relative L2 error is near 2^-M for weight-like data: start there.
    let mut m = ((1.0 / budget).log2().round()).clamp(2.0, f64::from(max_m)) as u32;
    while lo_fail + 1 < hi_ok {
        let (size, rel) = measure(bfp_at(m))?;
        let ratio = rel / budget;
        let guess = if rel <= budget {
            hi_ok = m;
            hi_size = size;
            if rel == 0.0 {
                f64::from(lo_fail + 1)
            } else {
                f64::from(m) - (1.0 / ratio).log2().floor()
            }
        } else {
            lo_fail = m;
            if ratio.is_finite() {
                f64::from(m) + ratio.log2().ceil()
            } else {
                f64::from(m) + 1.0
            }
        };
        if lo_fail + 1 >= hi_ok {
            break;
        }
        m = (guess.clamp(f64::from(lo_fail + 1), f64::from(hi_ok - 1))) as u32;
    }
    if hi_ok <= max_m && hi_size < best_size {
        best = bfp_at(hi_ok);
        best_size = hi_size;
    }
    let mut others = vec![Coding::Quant {
        step: dmx_codec::grid::step_for(max_abs, 16),
        bits: 16,
    }];
    if layout == dmx_codec::FloatLayout::F32 {
        others.push(Coding::Quant {
            step: dmx_codec::grid::step_for(max_abs, 32),
            bits: 32,
        });
        others.push(Coding::Cast(dmx_codec::FloatLayout::BF16));
        others.push(Coding::Cast(dmx_codec::FloatLayout::F16));
    }
    for c in others {
        let (size, rel) = measure(c)?;
        if rel <= budget && size < best_size {
            best = c;
            best_size = size;
        }
    }
    Ok(best)
}

fn compress_file(
    file: &PlannedFile,
    lossy: &LossyOptions,
    out: &mut AtomicFile,
    progress: Option<&dyn Progress>,
    warnings: &mut Vec<String>,
) -> Result<Entry> {
    let bytes = Bytes::open(&file.path)?;
    if bytes.len() as u64 != file.size {
        return Err(Error::Usage(format!(
            "{}: file changed size while being compressed",
            file.path.display()
        )));
    }
    let (codings, allowances) = if lossy.is_lossless() {
        (vec![Coding::Lossless; file.segments.len()], None)
    } else if let (Mode::Auto, Some(budget)) = (lossy.mode, lossy.max_rel_error) {
        let (c, a) = auto_codings(file, &bytes, lossy, budget, warnings)?;
        (c, Some(a))
    } else {
        (
            crate::lossy::fixed_codings(file, &bytes, lossy, warnings)?,
            None,
        )
    };
    let bases = vec![None; file.segments.len()];
    encode_entry_budgeted(
        file,
        &bytes,
        &codings,
        &bases,
        allowances.as_deref(),
        out,
        progress,
    )
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
    encode_entry_budgeted(file, bytes, codings, bases, None, out, progress)
}

/// [`encode_entry`]; with `allowances`, segment `i` may reach at most `allowances[i]` as its
/// sum of squared errors: a chunk that would pass it is coded again more precisely
/// ([`Coding::escalate`]; [`Mode::Auto`]).
fn encode_entry_budgeted(
    file: &PlannedFile,
    bytes: &Bytes,
    codings: &[Coding],
    bases: &[Option<BaseTensor<'_>>],
    allowances: Option<&[Option<f64>]>,
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
                never_larger: true,
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
    let mut lossy_coded = vec![false; segments.len()];
    // The most precise coding a segment's lossy chunks used (recorded in the index).
    let mut recorded: Vec<Coding> = codings.to_vec();
    let mut spent = vec![0f64; segments.len()];
    let mut sha = sha2::Sha256::new();
    let mut hasher = SegmentHasher::default();
    let lens: Vec<u64> = jobs.iter().map(|j| j.data.len() as u64).collect();
    for range in windows(&lens) {
        let raw: u64 = lens[range.clone()].iter().sum();
        let window = &jobs[range];
        let encode = || window.par_iter().map(run_job).collect::<Result<Vec<_>>>();
        let encoded = if any_lossy {
            // Hash what decompression will produce: the decoded bytes of lossy chunks.
            let mut encoded = encode()?;
            if let Some(allow) = allowances {
                for (j, d) in window.iter().zip(encoded.iter_mut()) {
                    let Some(a) = allow[j.segment] else {
                        continue;
                    };
                    hold_budget(j, d, a, &mut spent[j.segment], &mut recorded[j.segment])?;
                }
            }
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
            lossy_coded[j.segment] |= done.lossy_coded;
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
        // A segment whose every chunk was stored exactly is recorded as exact.
        let lossy = if lossy_coded[i] {
            recorded[i].record(errors[i].stats())
        } else {
            None
        };
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
