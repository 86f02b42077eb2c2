//! Verification: decode everything and check every hash, optionally comparing the decoded
//! bytes with the original files.

use std::path::Path;

use dmx_format::{Entry, EntryKind, Root, SegmentKind};
use serde::Serialize;
use sha2::Digest;

use crate::Options;
use crate::archive::Archive;
use crate::decompress::stream_entry_with;
use crate::error::{Error, Result};
use crate::io::Bytes;
use crate::lossy::{ErrorAcc, lossy_layout};
use crate::plan::{self, plan_input};
use crate::window::SegmentHasher;

/// Outcome of a verification, serializable as the `--report` JSON (docs/VERIFY.md).
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    /// Schema version of this report.
    pub schema: u32,
    /// The archive checked.
    pub archive: String,
    /// The original compared against, if any.
    pub original: Option<String>,
    /// True when every file passed.
    pub ok: bool,
    /// Per-file results.
    pub files: Vec<FileReport>,
    /// Lossy archives compared with their original: the measured errors per checkpoint
    /// component (weights, `exp_avg`, `exp_avg_sq`, other optimizer state), in that order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub components: Vec<ComponentErrors>,
}

/// The measured errors of the lossy tensors of one checkpoint component.
#[derive(Debug, Clone, Serialize)]
pub struct ComponentErrors {
    /// The component.
    pub component: crate::names::Component,
    /// Its worst errors.
    #[serde(flatten)]
    pub errors: crate::info::LossyRollup,
}

impl VerifyReport {
    /// Fills [`VerifyReport::components`] from the lossy tensors' measured errors.
    fn roll_up(&mut self) {
        let mut by: std::collections::BTreeMap<crate::names::Component, crate::info::LossyRollup> =
            Default::default();
        for e in self.files.iter().flat_map(|f| &f.tensor_errors) {
            if e.mode == "lossless" {
                continue;
            }
            by.entry(crate::names::component(&e.name))
                .or_default()
                .push(
                    e.rel_l2,
                    e.max_abs_error,
                    Some(dmx_format::ValueErrors {
                        max_rel: e.max_rel_error,
                        nonzero: e.nonzero,
                        zeroed: e.zeroed,
                    }),
                );
        }
        self.components = by
            .into_iter()
            .map(|(component, errors)| ComponentErrors { component, errors })
            .collect();
    }
}

/// Verification result of one file.
#[derive(Debug, Clone, Serialize)]
pub struct FileReport {
    /// Path inside the archive.
    pub path: String,
    /// Original size in bytes.
    pub size: u64,
    /// True when every check passed.
    pub ok: bool,
    /// Lossless archives: every decoded byte equals the original.
    pub bit_exact: Option<bool>,
    /// Tensors checked.
    pub tensors: usize,
    /// What failed, one line per problem.
    pub problems: Vec<String>,
    /// Lossy archives compared with their original: the error of every tensor.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tensor_errors: Vec<TensorError>,
}

/// The error of one tensor of a lossy archive against the original (docs/VERIFY.md).
#[derive(Debug, Clone, Serialize)]
pub struct TensorError {
    /// Tensor name.
    pub name: String,
    /// Dtype.
    pub dtype: String,
    /// `"lossless"` or the lossy mode.
    pub mode: String,
    /// Values compared.
    pub values: u64,
    /// Values whose bits are identical to the original's.
    pub identical: u64,
    /// Largest absolute error (a number, or `"inf"`).
    #[serde(serialize_with = "crate::lossy::json_f64")]
    pub max_abs_error: f64,
    /// Mean absolute error (a number, or `"inf"`).
    #[serde(serialize_with = "crate::lossy::json_f64")]
    pub mean_abs_error: f64,
    /// ‖x − x̂‖ / ‖x‖: a number, or the string `"inf"` when infinite (the original is all
    /// zero and the decoded is not, or a finite value became infinite), which always fails.
    #[serde(serialize_with = "crate::lossy::json_f64")]
    pub rel_l2: f64,
    /// Cosine similarity (1 when both are all zero, 0 when one is; `"nan"` if undefined).
    #[serde(serialize_with = "crate::lossy::json_f64")]
    pub cosine: f64,
    /// Signal-to-noise ratio in dB: a number, or the string `"inf"` when exact.
    #[serde(serialize_with = "crate::lossy::json_f64")]
    pub snr_db: f64,
    /// Largest `|x − x̂| / |x|` over the finite non-zero original values (0 when none; a
    /// number, or `"inf"`).
    #[serde(serialize_with = "crate::lossy::json_f64")]
    pub max_rel_error: f64,
    /// Finite non-zero original values.
    pub nonzero: u64,
    /// Of those, the values restored as exactly 0.
    pub zeroed: u64,
    /// `100 · zeroed / nonzero` (0 when `nonzero` is 0).
    #[serde(serialize_with = "crate::lossy::json_f64")]
    pub zeroed_pct: f64,
    /// The relative L2 error the archive records for this tensor (0 for lossless ones; the
    /// string `"inf"` when infinite).
    #[serde(serialize_with = "crate::lossy::json_f64")]
    pub claimed_rel_l2: f64,
    /// The limit checked: `--max-rel-error` when given, else the claim (`"inf"` possible).
    #[serde(serialize_with = "crate::lossy::json_f64")]
    pub limit: f64,
    /// Within the limit (and, for lossless tensors, bit-exact).
    pub ok: bool,
}

/// Decodes every chunk of `archive` and checks chunk checksums, per-tensor BLAKE3 and
/// per-file SHA-256. With `original`, also compares every byte with the original file or
/// folder.
pub fn verify(archive: &Archive, original: Option<&Path>, opts: &Options) -> Result<VerifyReport> {
    verify_with(archive, original, None, opts)
}

/// [`verify`]; for lossy archives compared with their original, each tensor must be within
/// `max_rel_error` (relative L2) when given, else within the error the archive records.
pub fn verify_with(
    archive: &Archive,
    original: Option<&Path>,
    max_rel_error: Option<f64>,
    opts: &Options,
) -> Result<VerifyReport> {
    if archive.index().entries.iter().any(|e| e.base.is_some()) {
        return Err(Error::BaseNeeded(archive.path().to_path_buf()));
    }
    verify_inner(archive, original, None, max_rel_error, opts)
}

/// [`verify_with`] for archives and deltas: a delta (`.dmxd`) is decoded against `base` (the
/// file it was made from, `.safetensors` or `.dmx`; required for deltas, refused otherwise)
/// and, with `original` (the target), its recorded errors are checked like a lossy archive's.
pub fn verify_delta(
    archive: &Archive,
    original: Option<&Path>,
    base: Option<&Path>,
    max_rel_error: Option<f64>,
    opts: &Options,
) -> Result<VerifyReport> {
    let is_delta = archive.index().entries.iter().any(|e| e.base.is_some());
    match (is_delta, base) {
        (false, Some(_)) => Err(Error::InvalidArgument(format!(
            "{} is not a delta; a base applies only to deltas (.dmxd)",
            archive.path().display()
        ))),
        (true, Some(b)) => {
            let pool = opts.pool()?;
            let base = pool.install(|| crate::delta::Base::open(b, opts))?;
            verify_inner(archive, original, Some(&base), max_rel_error, opts)
        }
        (_, None) => verify_with(archive, original, max_rel_error, opts),
    }
}

fn verify_inner(
    archive: &Archive,
    original: Option<&Path>,
    base: Option<&crate::delta::Base>,
    max_rel_error: Option<f64>,
    opts: &Options,
) -> Result<VerifyReport> {
    if let Some(e) = max_rel_error
        && !(e.is_finite() && e >= 0.0)
    {
        // As for `compress --max-rel-error`: a negative or NaN limit would fail every
        // tensor, an infinite one would let any error pass.
        return Err(Error::InvalidArgument(format!(
            "maximum relative error {e}: must be a finite number >= 0"
        )));
    }
    let total: u64 = archive.index().entries.iter().map(|e| e.size).sum();
    let pool = opts.pool_for(total)?;
    let progress = opts.progress.as_deref();
    if let Some(p) = progress {
        p.start("verifying", total);
    }
    let originals = match original {
        Some(o) => Some(original_files(archive, o)?),
        None => None,
    };
    let mut files = Vec::new();
    // The decoded bytes of the current pack (format 1.2), for the packed files after it.
    let mut pack: Option<Vec<u8>> = None;
    for (i, entry) in archive.index().entries.iter().enumerate() {
        opts.check_cancel()?;
        let orig = match originals.as_ref().filter(|_| entry.kind != EntryKind::Pack) {
            Some(list) => Some(match &list[i] {
                Some(path) => Bytes::open_stable(path)?,
                None => {
                    files.push(FileReport {
                        path: entry.path.clone(),
                        size: entry.size,
                        ok: false,
                        bit_exact: Some(false),
                        tensors: 0,
                        problems: vec!["missing from the original".into()],
                        tensor_errors: Vec::new(),
                    });
                    continue;
                }
            }),
            None => None,
        };
        if entry.kind == EntryKind::Packed {
            files.push(check_packed(entry, pack.as_deref(), orig.as_ref()));
            continue;
        }
        let slices = match base {
            Some(b) => crate::delta::base_slices(archive, entry, b)?,
            None => Vec::new(),
        };
        let mut r =
            pool.install(|| check_entry(archive, i, orig.as_ref(), &slices, max_rel_error, opts))?;
        if entry.kind == EntryKind::Pack {
            pack = None;
            match pool.install(|| archive.read_pack(entry)) {
                Ok(p) => pack = Some(p),
                Err(e) if e.is_integrity_failure() => {
                    if r.problems.is_empty() {
                        r.problems.push(e.to_string());
                    }
                    r.ok = false;
                }
                Err(e) => return Err(e),
            }
            r.path = format!("(pack of small files, {} bytes)", entry.size);
        }
        files.push(r);
    }
    if let Some(list) = &originals {
        for extra in list.iter().skip(archive.index().entries.len()).flatten() {
            files.push(FileReport {
                path: extra.display().to_string(),
                size: 0,
                ok: false,
                bit_exact: Some(false),
                tensors: 0,
                problems: vec!["present in the original but not in the archive".into()],
                tensor_errors: Vec::new(),
            });
        }
    }
    if let Some(p) = progress {
        p.finish();
    }
    let mut r = VerifyReport {
        schema: 2,
        archive: archive.path().display().to_string(),
        original: original.map(|o| o.display().to_string()),
        ok: files.iter().all(|f| f.ok),
        files,
        components: Vec::new(),
    };
    r.roll_up();
    Ok(r)
}

/// The original path of every archive entry (`None` when missing), followed by original
/// files the archive lacks.
fn original_files(archive: &Archive, original: &Path) -> Result<Vec<Option<std::path::PathBuf>>> {
    let (root, mut planned) = plan_input(original)?;
    // An archive stored inside the folder it was made from is not part of the original.
    if root == Root::Directory {
        planned.retain(|p| !crate::io::same_file(&p.path, archive.path()));
    }
    if root != archive.index().root {
        return Err(Error::Unsupported(format!(
            "{} is a {} but the archive holds a {}",
            original.display(),
            if root == Root::File { "file" } else { "folder" },
            if archive.index().root == Root::File {
                "file"
            } else {
                "folder"
            },
        )));
    }
    let by_rel: std::collections::HashMap<&str, &std::path::PathBuf> =
        planned.iter().map(|p| (p.rel.as_str(), &p.path)).collect();
    let mut out: Vec<Option<std::path::PathBuf>> = archive
        .index()
        .entries
        .iter()
        .map(|e| {
            if root == Root::File {
                Some(planned[0].path.clone())
            } else {
                by_rel.get(e.path.as_str()).map(|p| (*p).clone())
            }
        })
        .collect();
    if root == Root::Directory {
        let stored: std::collections::HashSet<&str> = archive
            .index()
            .entries
            .iter()
            .map(|e| e.path.as_str())
            .collect();
        for p in &planned {
            if !stored.contains(p.rel.as_str()) {
                out.push(Some(p.path.clone()));
            }
        }
    }
    Ok(out)
}

/// A packed file (format 1.2): its bytes are a range of the pack before it, whose digests
/// were checked with the pack; compared with the original when given.
fn check_packed(
    entry: &dmx_format::Entry,
    pack: Option<&[u8]>,
    original: Option<&Bytes>,
) -> FileReport {
    let start = entry.packed.unwrap_or(0) as usize;
    let Some(data) = pack.and_then(|p| p.get(start..start + entry.size as usize)) else {
        return report(
            entry,
            vec!["the pack holding this file failed its checks".into()],
            original.map(|_| false),
        );
    };
    let bit_exact = original.map(|o| &o[..] == data);
    let problems = match bit_exact {
        Some(false) => vec!["differs from the original".into()],
        _ => Vec::new(),
    };
    report(entry, problems, bit_exact)
}

/// Without the original, the errors a lossy entry records are all there is to check: an
/// infinite or NaN recorded error never passes (values restore as ±Inf or NaN), and with
/// `max_rel_error` each recorded relative L2 error must be within it.
fn recorded_error_problems(entry: &Entry, max_rel_error: Option<f64>, problems: &mut Vec<String>) {
    for seg in &entry.segments {
        let (SegmentKind::Tensor(t), Some(l)) = (&seg.kind, seg.transform.lossy()) else {
            continue;
        };
        let recorded = l.error.rel_l2;
        if !recorded.is_finite() {
            problems.push(format!(
                "tensor {:?}: the archive records a relative L2 error of {} (an infinite or \
                 NaN error never passes)",
                t.name,
                crate::lossy::fmt_err(recorded)
            ));
        } else if let Some(limit) = max_rel_error
            && recorded > limit
        {
            problems.push(format!(
                "tensor {:?}: recorded relative L2 error {} above the limit {}",
                t.name,
                crate::lossy::fmt_err(recorded),
                crate::lossy::fmt_err(limit)
            ));
        }
    }
}

fn check_entry(
    archive: &Archive,
    i: usize,
    original_file: Option<&Bytes>,
    bases: &[Option<&[u8]>],
    max_rel_error: Option<f64>,
    opts: &Options,
) -> Result<FileReport> {
    let entry = &archive.index().entries[i];
    let lossy_entry = entry.segments.iter().any(|s| !s.transform.is_lossless());
    let mut errors = vec![ErrorAcc::default(); entry.segments.len()];
    let original: Option<&[u8]> = original_file.map(|b| &b[..]);
    let mut problems = Vec::new();
    if let Some(o) = original
        && o.len() as u64 != entry.size
    {
        problems.push(format!(
            "size differs: original {} bytes, archive {} bytes",
            o.len(),
            entry.size
        ));
    }
    let mut sha = sha2::Sha256::new();
    let mut hasher = SegmentHasher::default();
    // Segments that receive no bytes keep the hash of the empty input.
    let mut hashes = vec![blake3::hash(&[]); entry.segments.len()];
    let mut pos = 0usize;
    let mut first_diff: Option<usize> = None;
    // A lossy torch zip records the CRC-32s of its restored storages (torch_crc.rs).
    let crc_mask = match original {
        Some(o) if lossy_entry && entry.kind.is_torch() => {
            crate::torch_crc::lossy_crc_mask(entry, o)
        }
        _ => Vec::new(),
    };
    // The hashes on one side; the comparison with the original on the other.
    let hash = |s: usize, data: &[u8]| {
        sha.update(data);
        if let Some((done, h)) = hasher.update(s, data) {
            hashes[done] = h;
        }
        Ok(())
    };
    let result = stream_entry_with(archive, entry, bases, opts, hash, |s, data| {
        let compare = if lossy_entry
            && matches!(entry.segments[s].kind, SegmentKind::Tensor(_))
            && let Some(o) = original
            && let Some(layout) = lossy_layout(plan::value_kind(&tensor(entry, s).dtype))
            && let Some(theirs) = o.get(pos..pos + data.len())
        {
            errors[s].add(layout, theirs, data);
            // Lossless tensors of a lossy archive must still match bit for bit.
            entry.segments[s].transform.is_lossless()
        } else {
            true
        };
        if compare
            && first_diff.is_none()
            && let Some(o) = original
        {
            let theirs = o.get(pos..pos + data.len()).unwrap_or(&[]);
            if theirs != data
                && let Some(k) = crate::torch_crc::first_difference(theirs, data, pos, &crc_mask)
            {
                first_diff = Some(pos + k);
            }
        }
        if let Some(b) = original_file {
            // Compared pages of the original are not needed again.
            b.release(pos, pos + data.len());
        }
        pos += data.len();
        Ok(())
    });
    match result {
        Ok(()) => {}
        Err(e) if e.is_integrity_failure() => {
            problems.push(e.to_string());
            return Ok(report(entry, problems, original.map(|_| false)));
        }
        Err(e) => return Err(e),
    }
    if let Some((done, h)) = hasher.finish() {
        hashes[done] = h;
    }
    let digest: [u8; 32] = sha.finalize().into();
    let tensors = hash_problems(entry, &hashes, &digest, &mut problems);
    if let Some(at) = first_diff {
        problems.push(format!(
            "differs from the original at byte {at}{}",
            locate(entry, at)
        ));
    }
    let bit_exact = original.map(|o| first_diff.is_none() && o.len() as u64 == entry.size);
    let tensor_errors = if lossy_entry && original.is_some() {
        measured_errors(entry, &errors, max_rel_error, &mut problems)
    } else {
        Vec::new()
    };
    if lossy_entry && original.is_none() {
        recorded_error_problems(entry, max_rel_error, &mut problems);
    }
    // A lossy archive differs from its original by design; it passes on its error limits.
    let bit_exact = if lossy_entry {
        bit_exact.map(|b| b && tensor_errors.iter().all(|e| e.identical == e.values))
    } else {
        bit_exact
    };
    let mut r = report(entry, problems, bit_exact);
    if lossy_entry {
        r.ok = r.problems.is_empty();
    }
    r.tensors = tensors;
    r.tensor_errors = tensor_errors;
    Ok(r)
}

/// The measured error of every lossy-codable tensor of `entry` against its original, with a
/// problem for each above its limit.
fn measured_errors(
    entry: &Entry,
    errors: &[ErrorAcc],
    max_rel_error: Option<f64>,
    problems: &mut Vec<String>,
) -> Vec<TensorError> {
    let mut tensor_errors = Vec::new();
    for (s, seg) in entry.segments.iter().enumerate() {
        let SegmentKind::Tensor(t) = &seg.kind else {
            continue;
        };
        if lossy_layout(plan::value_kind(&t.dtype)).is_none() {
            continue;
        }
        let e = tensor_error(t, seg, &errors[s], max_rel_error);
        // Format 1.4 records the per-value errors too: the restored values must not exceed
        // them.
        if let Some(v) = seg.transform.lossy().and_then(|l| l.error.values) {
            if e.zeroed > v.zeroed {
                problems.push(format!(
                    "tensor {:?}: {} non-zero values restore as 0, the archive records {}",
                    t.name, e.zeroed, v.zeroed
                ));
            }
            if e.max_rel_error.is_nan() || e.max_rel_error > v.max_rel * (1.0 + 1e-9) {
                problems.push(format!(
                    "tensor {:?}: largest relative error of a value {} above the recorded {}",
                    t.name,
                    crate::lossy::fmt_err(e.max_rel_error),
                    crate::lossy::fmt_err(v.max_rel)
                ));
            }
        }
        if !e.ok {
            problems.push(format!(
                "tensor {:?}: relative L2 error {} above the limit {}{}",
                t.name,
                crate::lossy::fmt_err(e.rel_l2),
                crate::lossy::fmt_err(e.limit),
                if e.rel_l2.is_finite() {
                    ""
                } else {
                    " (an infinite or NaN error never passes)"
                }
            ));
        }
        tensor_errors.push(e);
    }
    tensor_errors
}

/// Checks every segment's BLAKE3 (`hashes`, as decoded) and the entry's SHA-256 (`digest`),
/// adding a problem for each mismatch; returns the number of tensors in the entry.
fn hash_problems(
    entry: &Entry,
    hashes: &[blake3::Hash],
    digest: &[u8; 32],
    problems: &mut Vec<String>,
) -> usize {
    let mut tensors = 0;
    for (seg, got) in entry.segments.iter().zip(hashes) {
        if got.as_bytes() != &seg.blake3 {
            problems.push(format!(
                "{}: BLAKE3 mismatch",
                seg.kind.describe(seg.offset)
            ));
        }
        tensors += seg.kind.tensors(seg.len).len();
    }
    // A pack's SHA-256 also covers its files' sizes: `Archive::read_pack` checks it.
    if *digest != entry.sha256 && entry.kind != EntryKind::Pack {
        problems.push("SHA-256 of the restored file does not match the recorded one".into());
    }
    tensors
}

fn tensor(entry: &dmx_format::Entry, s: usize) -> &dmx_format::TensorInfo {
    match &entry.segments[s].kind {
        SegmentKind::Tensor(t) => t,
        SegmentKind::Bytes | SegmentKind::Packed(_) => {
            unreachable!("only called for tensor segments")
        }
    }
}

fn tensor_error(
    t: &dmx_format::TensorInfo,
    seg: &dmx_format::Segment,
    acc: &ErrorAcc,
    max_rel_error: Option<f64>,
) -> TensorError {
    let stats = acc.stats();
    let values = stats.values.unwrap_or_default();
    let claimed = seg.transform.lossy().map_or(0.0, |l| l.error.rel_l2);
    // The claim was summed chunk by chunk at compression; allow for summation order.
    let limit = max_rel_error.unwrap_or(claimed * (1.0 + 1e-9) + f64::MIN_POSITIVE);
    let rel = acc.rel_l2();
    let exact_needed = seg.transform.is_lossless();
    TensorError {
        name: t.name.clone(),
        dtype: t.dtype.clone(),
        mode: seg
            .transform
            .lossy()
            .map_or("lossless", |l| l.mode.name())
            .to_string(),
        values: acc.values,
        identical: acc.identical,
        max_abs_error: stats.max_abs,
        mean_abs_error: stats.mean_abs,
        rel_l2: rel,
        cosine: acc.cosine(),
        snr_db: stats.snr_db,
        max_rel_error: values.max_rel,
        nonzero: values.nonzero,
        zeroed: values.zeroed,
        zeroed_pct: crate::info::pct(values.zeroed, values.nonzero),
        claimed_rel_l2: claimed,
        limit,
        // An infinite or NaN error never passes, whatever the archive claims.
        ok: rel.is_finite() && rel <= limit && (!exact_needed || acc.identical == acc.values),
    }
}

fn locate(entry: &dmx_format::Entry, at: usize) -> String {
    entry
        .segments
        .iter()
        .find(|s| (s.offset..s.offset + s.len).contains(&(at as u64)))
        .map(|s| match &s.kind {
            SegmentKind::Tensor(t) => format!(" (tensor {:?})", t.name),
            SegmentKind::Packed(_) => format!(" ({})", s.kind.describe(s.offset)),
            SegmentKind::Bytes => " (header bytes)".to_string(),
        })
        .unwrap_or_default()
}

fn report(entry: &dmx_format::Entry, problems: Vec<String>, bit_exact: Option<bool>) -> FileReport {
    FileReport {
        path: entry.path.clone(),
        size: entry.size,
        ok: problems.is_empty() && bit_exact != Some(false),
        bit_exact,
        tensors: 0,
        problems,
        tensor_errors: Vec::new(),
    }
}
