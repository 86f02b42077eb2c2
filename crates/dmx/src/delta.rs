//! Deltas between related checkpoints: `delta-compress` stores a target safetensors file
//! relative to a base, `delta-reconstruct` rebuilds it, `delta-info` describes a delta.
//!
//! A delta is a `.dmx` container (format 1.1) holding one [`EntryKind::SafetensorsDelta`]
//! entry: the target's header and tensors as segments, where a tensor that the base also has
//! (same name, dtype and shape) is coded against it, chunk by chunk, with whichever is smaller
//! of the delta codec and the standalone codec. Tensors the base lacks, or whose dtype or
//! shape changed, are stored whole; tensors only the base has are listed as removed. The
//! base's SHA-256 and size are recorded and checked before anything is reconstructed.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::Instant;

use dmx_format::{BaseRef, EntryKind, Index, Root, SegmentKind};
use serde::Serialize;
use sha2::Digest;

use crate::Options;
use crate::archive::Archive;
use crate::compress::{BaseTensor, encode_entry, finish_archive};
use crate::error::{Error, Result};
use crate::io::Bytes;
use crate::io::{AtomicFile, check_distinct};
use crate::lossy::{Coding, float_tensors, lossy_layout, shared_steps};
use crate::plan::{PlannedFile, dtype_bits, plan_input};

/// How the target's float tensors are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// Byte-identical reconstruction (the default).
    #[default]
    Lossless,
    /// Base and target on a shared 16-bit integer grid; the target is restored as its grid
    /// values (values off the grid's range are stored exactly).
    Int16,
    /// As [`Precision::Int16`] on a 32-bit grid.
    Int32,
}

impl Precision {
    /// Every precision, in the order its names are listed.
    pub const ALL: [Precision; 3] = [Precision::Lossless, Precision::Int16, Precision::Int32];

    /// The name the CLI, the Python package and chain manifests spell it with (`"int16"`).
    pub fn name(self) -> &'static str {
        match self {
            Precision::Lossless => "lossless",
            Precision::Int16 => "int16",
            Precision::Int32 => "int32",
        }
    }

    /// The precision named `name` ([`Precision::name`]), if any.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.name() == name)
    }

    /// Grid width of the quantized precisions.
    pub fn bits(self) -> Option<u32> {
        match self {
            Precision::Lossless => None,
            Precision::Int16 => Some(16),
            Precision::Int32 => Some(32),
        }
    }
}

/// Settings of [`delta_compress`].
#[derive(Debug, Clone, Default)]
pub struct DeltaOptions {
    /// Lossless or a quantized grid.
    pub precision: Precision,
    /// Grid steps per tensor name to use instead of computing them (a chain keeps its anchor's
    /// grid this way). Tensors not listed get computed steps.
    pub steps: Option<HashMap<String, f64>>,
}

/// What [`delta_compress`] did.
#[derive(Debug, Clone, Serialize)]
pub struct DeltaReport {
    /// Size of the base file.
    pub base_bytes: u64,
    /// Size of the target file.
    pub target_bytes: u64,
    /// Size of the delta written.
    pub output_bytes: u64,
    /// Precision used.
    pub precision: Precision,
    /// Tensor elements of the target.
    pub params: u64,
    /// Delta size in bits per target parameter.
    pub bits_per_param: Option<f64>,
    /// Tensors coded against the base.
    pub delta_tensors: usize,
    /// Tensors stored whole because the base lacks them.
    pub added: Vec<String>,
    /// Tensors stored whole because their dtype or shape changed.
    pub reshaped: Vec<String>,
    /// Base tensors the target does not have.
    pub removed: Vec<String>,
    /// Grid steps used per tensor (quantized precisions).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub steps: BTreeMap<String, f64>,
    /// Wall time in seconds.
    pub seconds: f64,
    /// True when some tensor restores as an approximation (quantized precisions).
    pub lossy: bool,
    /// Lossy tensors: how many, and the worst recorded error among them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lossy_summary: Option<crate::lossy::LossySummary>,
}

/// A base model opened for reading: a safetensors file, mapped; a `.dmx` base is first
/// restored (verified) into a temporary file.
pub(crate) struct Base {
    /// SHA-256 of the base file.
    pub sha256: [u8; 32],
    /// Its size.
    pub size: u64,
    /// Its bytes.
    pub bytes: Bytes,
    /// Its plan: header and tensors.
    pub plan: PlannedFile,
    _restored: Option<crate::io::TempDir>,
}

impl Base {
    /// Opens `path` (`.safetensors` or a single-file `.dmx` of one).
    pub(crate) fn open(path: &Path, opts: &Options) -> Result<Self> {
        crate::io::check_input(path)?;
        let (file, restored, sha) = if crate::io::is_archive_file(path)? {
            let archive = Archive::open(path)?;
            let index = archive.index();
            let single = index.root == Root::File
                && index.entries.len() == 1
                && index.entries[0].kind == EntryKind::Safetensors;
            if !single {
                return Err(Error::Unsupported(format!(
                    "{}: a base archive must hold exactly one safetensors file (not a folder \
                     or a delta)",
                    path.display()
                )));
            }
            let sha = index.entries[0].sha256;
            let dir = crate::io::temp_dir_in(&std::env::temp_dir())?;
            let file = dir.path().join(&index.entries[0].path);
            let restore = Options {
                no_sync: true,
                progress: None,
                ..opts.clone()
            };
            crate::decompress(path, &file, &restore)?;
            (file, Some(dir), Some(sha))
        } else {
            (path.to_path_buf(), None, None)
        };
        let plan = single_safetensors(&file)?;
        let bytes = Bytes::open_stable(&file)?;
        let sha256 = match sha {
            Some(s) => s,
            None => sha2::Sha256::digest(&bytes[..]).into(),
        };
        Ok(Self {
            sha256,
            size: bytes.len() as u64,
            bytes,
            plan,
            _restored: restored,
        })
    }

    /// The base's tensors by name: (dtype, shape, byte range).
    fn tensors(&self) -> HashMap<&str, (&str, &[u64], &[u8])> {
        self.plan
            .segments
            .iter()
            .filter_map(|s| match &s.kind {
                SegmentKind::Tensor(t) => Some((
                    t.name.as_str(),
                    (
                        t.dtype.as_str(),
                        t.shape.as_slice(),
                        &self.bytes[s.offset as usize..(s.offset + s.len) as usize],
                    ),
                )),
                SegmentKind::Bytes | SegmentKind::Packed(_) => None,
            })
            .collect()
    }
}

/// Why the planner did not take `path` as safetensors: its warning (`default` without one)
/// less the path it starts with and what `compress` would do instead ("stored as opaque
/// bytes"), which deltas and chains do not.
pub(crate) fn planner_reason(path: &Path, warning: Option<&str>, default: &str) -> String {
    let Some(w) = warning else {
        return default.to_string();
    };
    let w = w
        .strip_prefix(&format!("{}: ", path.display()))
        .unwrap_or(w);
    w.split("; stored as").next().unwrap_or(w).to_string()
}

/// Plans `path`, which must be one valid safetensors file.
fn single_safetensors(path: &Path) -> Result<PlannedFile> {
    let (root, mut files) = plan_input(path)?;
    // Detected by content: a valid safetensors file is accepted whatever its name.
    if let (Root::File, Some(f)) = (root, files.last_mut())
        && f.kind != EntryKind::Safetensors
        && !f.rel.ends_with(".safetensors")
    {
        *f = crate::plan::plan_file_by_content(f.rel.clone(), f.path.clone())?;
    }
    match (root, files.pop()) {
        (Root::File, Some(f)) if f.kind == EntryKind::Safetensors => Ok(f),
        (Root::File, Some(f)) => {
            let why = planner_reason(path, f.warning.as_deref(), "not a .safetensors file");
            Err(Error::Unsupported(format!(
                "{}: {why}; deltas take safetensors files",
                path.display()
            )))
        }
        _ => Err(Error::Unsupported(format!(
            "{}: deltas take one safetensors file, not a folder",
            path.display()
        ))),
    }
}

/// Stores `target` relative to `base` in `output` (a `.dmxd` by convention).
pub fn delta_compress(
    base: &Path,
    target: &Path,
    output: &Path,
    d: &DeltaOptions,
    opts: &Options,
) -> Result<DeltaReport> {
    let start = Instant::now();
    check_distinct(target, output)?;
    check_distinct(base, output)?;
    crate::io::check_writable(output, opts.force)?;
    let pool = opts.pool()?;
    let base = pool.install(|| Base::open(base, opts))?;
    let plan = single_safetensors(target)?;
    let bytes = Bytes::open_stable(&plan.path)?;
    if bytes.len() as u64 != plan.size {
        return Err(Error::changed(target, "file changed size while being read"));
    }
    let base_tensors = base.tensors();
    let mut steps = shared_grid(d, &base, &plan, &bytes);
    let mut codings = Vec::with_capacity(plan.segments.len());
    let mut bases = Vec::with_capacity(plan.segments.len());
    let (mut added, mut reshaped, mut delta_tensors) = (Vec::new(), Vec::new(), 0);
    for seg in &plan.segments {
        opts.check_cancel()?;
        let SegmentKind::Tensor(t) = &seg.kind else {
            codings.push(Coding::Lossless);
            bases.push(None);
            continue;
        };
        match base_tensors.get(t.name.as_str()) {
            Some(&(dtype, shape, data)) if dtype == t.dtype && shape == t.shape.as_slice() => {
                delta_tensors += 1;
                let coding = match (d.precision.bits(), lossy_layout(seg.value)) {
                    (Some(bits), Some(_)) => Coding::QuantDelta {
                        step: steps.get(&t.name).copied().unwrap_or(1.0),
                        bits,
                    },
                    _ => Coding::Delta,
                };
                codings.push(coding);
                bases.push(Some(BaseTensor {
                    name: &t.name,
                    data,
                }));
            }
            Some(_) => {
                reshaped.push(t.name.clone());
                codings.push(Coding::Lossless);
                bases.push(None);
            }
            None => {
                added.push(t.name.clone());
                codings.push(Coding::Lossless);
                bases.push(None);
            }
        }
    }
    let removed = removed_tensors(&base.plan, &plan);
    let progress = opts.progress.as_deref();
    if let Some(p) = progress {
        p.start("delta-compressing", plan.size);
    }
    let mut out = AtomicFile::create(output, opts.force, !opts.no_sync)?;
    out.write_all(&dmx_format::preamble_minor(1))?;
    let mut entry =
        pool.install(|| encode_entry(&plan, &bytes, &codings, &bases, &mut out, opts))?;
    entry.kind = EntryKind::SafetensorsDelta;
    entry.base = Some(BaseRef {
        sha256: base.sha256,
        size: base.size,
        removed: removed.clone(),
    });
    let index = Index {
        root: Root::File,
        entries: vec![entry],
    };
    finish_archive(&index, &mut out, target)?;
    let lossy_summary = crate::lossy::LossySummary::of_index(&index);
    let output_bytes = out.position();
    out.commit()?;
    if let Some(p) = progress {
        p.finish();
    }
    let params = params_of(&plan);
    if d.precision == Precision::Lossless {
        steps.clear();
    }
    Ok(DeltaReport {
        base_bytes: base.size,
        target_bytes: plan.size,
        output_bytes,
        precision: d.precision,
        params,
        bits_per_param: (params > 0).then(|| output_bytes as f64 * 8.0 / params as f64),
        delta_tensors,
        added,
        reshaped,
        removed,
        steps,
        seconds: start.elapsed().as_secs_f64(),
        lossy: lossy_summary.is_some(),
        lossy_summary,
    })
}

/// Quantized precisions: one grid for base and target, shared by role (lossy module docs),
/// from the larger range of the two (or the grid `d` gives); empty when lossless.
fn shared_grid(
    d: &DeltaOptions,
    base: &Base,
    plan: &PlannedFile,
    bytes: &[u8],
) -> BTreeMap<String, f64> {
    let mut steps: BTreeMap<String, f64> = BTreeMap::new();
    if let Some(bits) = d.precision.bits() {
        let from_base = shared_steps(float_tensors(&base.plan, &base.bytes), bits);
        let from_target = shared_steps(float_tensors(plan, bytes), bits);
        for (name, s) in from_target {
            let s = match d.steps.as_ref().and_then(|m| m.get(&name)) {
                Some(&given) => given,
                None => s.max(from_base.get(&name).copied().unwrap_or(0.0)),
            };
            steps.insert(name, s);
        }
    }
    steps
}

/// The tensors of the base that the target does not have.
fn removed_tensors(base: &PlannedFile, plan: &PlannedFile) -> Vec<String> {
    let in_target: std::collections::HashSet<&str> = plan
        .segments
        .iter()
        .filter_map(|s| match &s.kind {
            SegmentKind::Tensor(t) => Some(t.name.as_str()),
            SegmentKind::Bytes | SegmentKind::Packed(_) => None,
        })
        .collect();
    base.segments
        .iter()
        .filter_map(|s| match &s.kind {
            SegmentKind::Tensor(t) if !in_target.contains(t.name.as_str()) => Some(t.name.clone()),
            _ => None,
        })
        .collect()
}

fn params_of(plan: &PlannedFile) -> u64 {
    plan.segments
        .iter()
        .filter_map(|s| match &s.kind {
            SegmentKind::Tensor(t) => dtype_bits(&t.dtype).map(|b| s.len * 8 / b),
            SegmentKind::Bytes | SegmentKind::Packed(_) => None,
        })
        .sum()
}

/// The base bytes of every segment of a delta entry (by position), checked against `base`.
pub(crate) fn base_slices<'a>(
    archive: &Archive,
    entry: &dmx_format::Entry,
    base: &'a Base,
) -> Result<Vec<Option<&'a [u8]>>> {
    let Some(r) = &entry.base else {
        return Ok(vec![None; entry.segments.len()]);
    };
    if r.sha256 != base.sha256 || r.size != base.size {
        return Err(Error::WrongBase(format!(
            "wrong base: {} was made from a base of {} bytes with SHA-256 {}, but the given base \
             has {} bytes and SHA-256 {}",
            archive.path().display(),
            r.size,
            hex(&r.sha256),
            base.size,
            hex(&base.sha256)
        )));
    }
    let tensors = base.tensors();
    entry
        .segments
        .iter()
        .map(|s| {
            let Some(name) = s.transform.base() else {
                return Ok(None);
            };
            match tensors.get(name) {
                Some(&(_, _, data)) if data.len() as u64 == s.len => Ok(Some(data)),
                _ => Err(Error::Corrupt {
                    path: archive.path().to_path_buf(),
                    what: format!("{}: base tensor {name:?}", entry.path),
                    detail: "missing or of another size in the base, although the base's \
                             SHA-256 matches (the delta is damaged)"
                        .into(),
                }),
            }
        })
        .collect()
}

pub(crate) fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Rebuilds the target of `delta` from `base` into `output`. Refuses a base whose SHA-256 or
/// size differ from the recorded ones; checks every chunk checksum, every tensor's BLAKE3 and
/// the file's SHA-256 before renaming the output into place.
pub fn delta_reconstruct(base: &Path, delta: &Path, output: &Path, opts: &Options) -> Result<()> {
    check_distinct(delta, output)?;
    check_distinct(base, output)?;
    crate::io::check_writable(output, opts.force)?;
    let archive = Archive::open(delta)?;
    let entry = &archive.index().entries[0];
    if entry.kind != EntryKind::SafetensorsDelta || archive.index().entries.len() != 1 {
        return Err(Error::Unsupported(format!(
            "{} is not a delta; restore it with `dmx decompress`",
            delta.display()
        )));
    }
    let pool = opts.pool()?;
    let base = pool.install(|| Base::open(base, opts))?;
    let slices = base_slices(&archive, entry, &base)?;
    let progress = opts.progress.as_deref();
    if let Some(p) = progress {
        p.start("reconstructing", entry.size);
    }
    pool.install(|| -> Result<()> {
        let mut out = AtomicFile::create(output, opts.force, !opts.no_sync)?;
        write_entry(&archive, entry, &slices, opts, |data| out.write_all(data))?;
        out.commit()
    })?;
    if let Some(p) = progress {
        p.finish();
    }
    Ok(())
}

/// Streams the decoded bytes of `entry` (with its base slices) to `write`, checking every
/// segment's BLAKE3 and the entry's SHA-256.
pub(crate) fn write_entry(
    archive: &Archive,
    entry: &dmx_format::Entry,
    bases: &[Option<&[u8]>],
    opts: &Options,
    mut write: impl FnMut(&[u8]) -> Result<()> + Send,
) -> Result<()> {
    let mut check = crate::decompress::SegmentCheck::new(archive, entry);
    let mut sha = sha2::Sha256::new();
    crate::decompress::stream_entry_with(archive, entry, bases, opts, |s, data| {
        check.update(s, data)?;
        sha.update(data);
        write(data)
    })?;
    check.finish()?;
    if <[u8; 32]>::from(sha.finalize()) != entry.sha256 {
        return Err(Error::Corrupt {
            path: archive.path().to_path_buf(),
            what: entry.path.clone(),
            detail: "SHA-256 of the restored file does not match the recorded one".into(),
        });
    }
    Ok(())
}

/// Per-group statistics of a delta.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DeltaGroup {
    /// Tensors.
    pub tensors: usize,
    /// Tensor elements.
    pub params: u64,
    /// Stored bytes.
    pub stored_bytes: u64,
    /// Stored bits per element.
    pub bits_per_param: Option<f64>,
    /// Elements equal to the base's (bit for bit, or on the grid), over tensors coded as
    /// deltas.
    pub unchanged_fraction: Option<f64>,
    #[serde(skip)]
    delta_params: u64,
    #[serde(skip)]
    unchanged: u64,
}

impl DeltaGroup {
    fn add(&mut self, params: u64, stored: u64, unchanged: Option<u64>) {
        self.tensors += 1;
        self.params += params;
        self.stored_bytes += stored;
        if let Some(u) = unchanged {
            self.delta_params += params;
            self.unchanged += u;
        }
    }

    fn finish(&mut self) {
        self.bits_per_param =
            (self.params > 0).then(|| self.stored_bytes as f64 * 8.0 / self.params as f64);
        self.unchanged_fraction =
            (self.delta_params > 0).then(|| self.unchanged as f64 / self.delta_params as f64);
    }
}

/// What `dmx delta-info` shows.
#[derive(Debug, Clone, Serialize)]
pub struct DeltaInfo {
    /// The delta file.
    pub delta: String,
    /// File name of the target.
    pub target: String,
    /// Size of the target it restores.
    pub target_bytes: u64,
    /// Size of the delta file.
    pub delta_bytes: u64,
    /// target_bytes / delta_bytes.
    pub ratio: Option<f64>,
    /// SHA-256 of the required base.
    pub base_sha256: String,
    /// Size of the required base.
    pub base_bytes: u64,
    /// SHA-256 of the file it restores.
    pub target_sha256: String,
    /// Whether reconstruction is byte-identical to the original target.
    pub lossless: bool,
    /// Total over all tensors.
    pub total: DeltaGroup,
    /// Per checkpoint component: weights, exp_avg, exp_avg_sq, other_state.
    pub components: BTreeMap<String, DeltaGroup>,
    /// Per role: attention, mlp, embedding, norm, output, other.
    pub roles: BTreeMap<String, DeltaGroup>,
    /// Per storage: "delta" (coded against the base) or "whole" (added or reshaped).
    pub storage: BTreeMap<String, DeltaGroup>,
    /// Base tensors the target does not have.
    pub removed: Vec<String>,
    /// Lossy tensors: how many, and the worst recorded error among them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lossy_summary: Option<crate::lossy::LossySummary>,
}

fn label<T: Serialize>(v: T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| "other".into())
}

/// Describes a delta file from its index alone.
pub fn delta_info(path: &Path) -> Result<DeltaInfo> {
    let archive = Archive::open(path)?;
    let entry = &archive.index().entries[0];
    let Some(base) = entry
        .base
        .as_ref()
        .filter(|_| archive.index().entries.len() == 1)
    else {
        return Err(Error::Unsupported(format!(
            "{} is not a delta; see `dmx info`",
            path.display()
        )));
    };
    let mut total = DeltaGroup::default();
    let mut components: BTreeMap<String, DeltaGroup> = BTreeMap::new();
    let mut roles: BTreeMap<String, DeltaGroup> = BTreeMap::new();
    let mut storage: BTreeMap<String, DeltaGroup> = BTreeMap::new();
    let mut lossless = true;
    for seg in &entry.segments {
        lossless &= seg.transform.is_lossless();
        let SegmentKind::Tensor(t) = &seg.kind else {
            continue;
        };
        let params = dtype_bits(&t.dtype).map_or(0, |b| seg.len * 8 / b);
        let stored: u64 = seg.chunks.iter().map(|c| u64::from(c.stored_len)).sum();
        let unchanged = seg.transform.unchanged();
        total.add(params, stored, unchanged);
        for (map, key) in [
            (&mut components, label(crate::names::component(&t.name))),
            (&mut roles, label(crate::names::role(&t.name))),
            (
                &mut storage,
                if unchanged.is_some() {
                    "delta"
                } else {
                    "whole"
                }
                .to_string(),
            ),
        ] {
            map.entry(key).or_default().add(params, stored, unchanged);
        }
    }
    total.finish();
    for g in components
        .values_mut()
        .chain(roles.values_mut())
        .chain(storage.values_mut())
    {
        g.finish();
    }
    let delta_bytes = archive.archive_len();
    Ok(DeltaInfo {
        delta: path.display().to_string(),
        target: entry.path.clone(),
        target_bytes: entry.size,
        delta_bytes,
        ratio: (delta_bytes > 0).then(|| entry.size as f64 / delta_bytes as f64),
        base_sha256: hex(&base.sha256),
        base_bytes: base.size,
        target_sha256: hex(&entry.sha256),
        lossless,
        total,
        components,
        roles,
        storage,
        removed: base.removed.clone(),
        lossy_summary: crate::lossy::LossySummary::of_index(archive.index()),
    })
}

/// Where a delta entry's segments are taken from when it is restored: used by chains.
pub(crate) fn restore_delta_to(
    archive: &Archive,
    base: &Base,
    output: &Path,
    opts: &Options,
) -> Result<()> {
    let entry = &archive.index().entries[0];
    let slices = base_slices(archive, entry, base)?;
    let mut out = AtomicFile::create(output, opts.force, !opts.no_sync)?;
    write_entry(archive, entry, &slices, opts, |d| out.write_all(d))?;
    out.commit()
}
