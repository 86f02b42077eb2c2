//! Compression: plan the input, encode chunks in parallel windows, stream payloads to a
//! temporary file, append the index and trailer, and rename into place.

mod auto;
mod encode;
mod finish;
mod source;
mod tensors;
mod torch;

use std::path::Path;
use std::time::Instant;

use dmx_format::{Entry, Index};

use crate::Options;
use crate::error::{Error, Result};
use crate::io::AtomicFile;
use crate::io::Bytes;
use crate::lossy::{Coding, LossyOptions, Mode};
use crate::plan::{PlannedFile, plan_input};

use auto::auto_codings;
pub(crate) use encode::{BaseTensor, encode_entry};
use encode::{EntryPlan, encode_entry_budgeted};
pub(crate) use finish::finish_archive;
pub(crate) use source::{SegmentData, Source};
pub use tensors::{TensorData, compress_tensors, safetensors_layout, tensors_entry_name};

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
    let mut warnings = plan_warnings(&files, lossy)?;
    let total: u64 = files.iter().map(|f| f.size).sum();
    let (packing, flags, mut out) = start_archive(&mut files, total, lossy, output, opts)?;
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
            opts.check_cancel()?;
            let packed =
                pool.install(|| compress_pack(input, &files[i..i + run], &mut out, opts))?;
            entries.extend(packed);
            i += run;
            continue;
        }
        let entry = pool.install(|| compress_file(file, lossy, &mut out, opts, &mut warnings))?;
        entries.push(entry);
        i += 1;
    }
    let index = Index { root, entries };
    finish_archive(&index, &mut out, input, flags)?;
    end_archive(index, out, files.len(), total, start, warnings, opts)
}

/// The warnings of lossy settings against the planned `files` (none when lossless).
fn plan_warnings(files: &[PlannedFile], lossy: &LossyOptions) -> Result<Vec<String>> {
    if lossy.is_lossless() && lossy.keep_lossless.is_empty() {
        Ok(Vec::new())
    } else {
        crate::lossy::plan_warnings(files, lossy)
    }
}

/// Chooses the archive's format features for `files` (`total` bytes), packing their small
/// tensors where wanted, creates the output and writes the preamble; starts the progress.
/// Returns whether small files are packed, the preamble flags and the output.
fn start_archive(
    files: &mut [PlannedFile],
    total: u64,
    lossy: &LossyOptions,
    output: &Path,
    opts: &Options,
) -> Result<(bool, u32, AtomicFile)> {
    // Packed small tensors and files (format 1.2) only where the index would otherwise weigh
    // on the archive; lossy archives keep per-tensor segments.
    let big_index = crate::plan::wants_packing(files, total);
    let packing = lossy.is_lossless() && big_index;
    if packing {
        for f in files.iter_mut() {
            if f.kind == dmx_format::EntryKind::Safetensors {
                crate::plan::pack_tensors(f);
            }
        }
    }
    let compress_index = big_index || crate::plan::compresses_index(files);
    let (minor, flags) = if compress_index {
        (2, dmx_format::FLAG_COMPRESSED_INDEX)
    } else {
        (0, 0)
    };
    // Format 1.3: `torch.save` entries; 1.4: lossy records with per-value errors (every lossy
    // option, even if every tensor ends up stored exactly).
    let minor = if !lossy.is_lossless() {
        4
    } else if files.iter().any(|f| f.kind.is_torch()) {
        3
    } else {
        minor
    };
    let mut out = AtomicFile::create(output, opts.force, !opts.no_sync)?;
    // An archive is hardly ever larger than its input; the blocks it does not fill are freed
    // at the commit.
    out.reserve(total);
    out.write_all(&dmx_format::preamble_with(minor, flags))?;
    if let Some(p) = opts.progress.as_deref() {
        p.start("compressing", total);
    }
    Ok((packing, flags, out))
}

/// Commits the archive `out` (its index already written) and reports on it.
fn end_archive(
    index: Index,
    out: AtomicFile,
    files: usize,
    total: u64,
    start: Instant,
    warnings: Vec<String>,
    opts: &Options,
) -> Result<CompressReport> {
    opts.check_cancel()?;
    let output_bytes = out.position();
    out.commit()?;
    if let Some(p) = opts.progress.as_deref() {
        p.finish();
    }
    let stats = crate::info::Stats::of_index(&index);
    let lossy_summary = crate::lossy::LossySummary::of_index(&index);
    Ok(CompressReport {
        lossy: lossy_summary.is_some(),
        lossy_summary,
        input_bytes: total,
        output_bytes,
        files,
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
    if crate::io::is_archive_file(&f.path).unwrap_or(false) {
        return Ok(());
    }
    Err(Error::Destination(format!(
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
    opts: &Options,
) -> Result<Vec<Entry>> {
    let mut data = Vec::with_capacity(members.iter().map(|f| f.size as usize).sum());
    let mut entries = Vec::with_capacity(members.len() + 1);
    for f in members {
        let bytes = std::fs::read(&f.path).map_err(|e| Error::io(&f.path, e))?;
        if bytes.len() as u64 != f.size {
            return Err(Error::changed(
                &f.path,
                "file changed size while being compressed",
            ));
        }
        entries.push(Entry {
            path: f.rel.clone(),
            kind: dmx_format::EntryKind::Packed,
            size: f.size,
            sha256: [0; 32],
            base: None,
            segments: Vec::new(),
            packed: Some(data.len() as u64),
            views: Vec::new(),
        });
        data.extend_from_slice(&bytes);
    }
    let plan = crate::plan::pack_plan(dir, data.len() as u64);
    let digest = crate::archive::pack_digest(members.iter().map(|f| f.size), &data);
    let bytes = Bytes::Owned(data);
    let mut pack = encode_entry(&plan, &bytes, &[Coding::Lossless], &[None], out, opts)?;
    pack.sha256 = digest;
    entries.insert(0, pack);
    Ok(entries)
}

/// Encodes the planned `file` (read from disk) into `out` with the lossy settings `lossy`.
fn compress_file(
    file: &PlannedFile,
    lossy: &LossyOptions,
    out: &mut AtomicFile,
    opts: &Options,
    warnings: &mut Vec<String>,
) -> Result<Entry> {
    let stamp = crate::io::Stamp::of(&file.path)?;
    let bytes = Bytes::open_stable(&file.path)?;
    if bytes.len() as u64 != file.size {
        return Err(Error::changed(
            &file.path,
            "file changed size while being compressed",
        ));
    }
    let entry = encode_planned(file, &Source::Bytes(&bytes), lossy, out, opts, warnings)?;
    stamp.check_unchanged(&file.path)?;
    Ok(entry)
}

/// Encodes the planned `file`, its bytes in `src`, with the lossy settings `lossy`: picks
/// each segment's coding, then streams the chunks to `out`.
fn encode_planned(
    file: &PlannedFile,
    src: &Source<'_>,
    lossy: &LossyOptions,
    out: &mut AtomicFile,
    opts: &Options,
    warnings: &mut Vec<String>,
) -> Result<Entry> {
    let (codings, allowances) = if lossy.is_lossless() {
        (vec![Coding::Lossless; file.segments.len()], None)
    } else if let (Mode::Auto, Some(budget)) = (lossy.mode, lossy.max_rel_error) {
        let (c, a) = auto_codings(file, src, lossy, budget, opts, warnings)?;
        (c, Some(a))
    } else {
        (
            crate::lossy::fixed_codings(file, src, lossy, warnings)?,
            None,
        )
    };
    let bases = vec![None; file.segments.len()];
    let plan = EntryPlan {
        file,
        src,
        codings: &codings,
        bases: &bases,
        allowances: allowances.as_deref(),
    };
    encode_entry_budgeted(&plan, out, opts)
}
