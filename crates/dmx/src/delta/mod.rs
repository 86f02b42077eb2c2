//! Deltas between related checkpoints: `delta-compress` stores a target checkpoint relative
//! to a base, `delta-reconstruct` rebuilds it, `delta-info` describes a delta.
//!
//! A delta of one file is a `.dmx` container (format 1.1, or 1.3 for `torch.save` files)
//! holding one delta entry ([`EntryKind::SafetensorsDelta`] or [`EntryKind::TorchDelta`]):
//! the target's header (or skeleton) and tensors (or storages) as segments, where a tensor
//! that the base also has (same segment name, dtype and shape) is coded against it, chunk by
//! chunk, with whichever is smaller of the delta codec and the standalone codec. Tensors the
//! base lacks, or whose dtype or shape changed, are stored whole; tensors only the base has
//! are listed as removed. The base's SHA-256 and size are recorded and checked before
//! anything is reconstructed.
//!
//! A delta of a checkpoint folder (`delta::folder`) has a folder root: every file of the target
//! that has a checkpoint file of the same relative path in the base folder is a delta entry
//! with its own base reference; every other file is stored as `compress` stores it.

mod folder;
mod info;

pub(crate) use folder::reconstruct_dirs;

pub use info::{DeltaGroup, DeltaInfo, DeltaInfoFile, LossyTensor, delta_info};

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::Instant;

use dmx_codec::FloatLayout;
use dmx_format::{BaseRef, EntryKind, Index, Root, SegmentKind};
use serde::Serialize;
use sha2::Digest;

use crate::Options;
use crate::archive::Archive;
use crate::compress::{BaseTensor, encode_entry, finish_archive};
use crate::error::{Error, Result};
use crate::io::Bytes;
use crate::io::{AtomicFile, check_distinct};
use crate::lossy::{Coding, Grid, float_bits, float_tensors, lossy_layout, shared_steps};
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
    /// Grids per tensor name to use instead of choosing them (a chain keeps its anchor's
    /// grids this way). Tensors not listed get chosen grids.
    pub steps: Option<HashMap<String, Grid>>,
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
    /// Grids used per tensor (quantized precisions): a linear grid's step as a number, the
    /// floating grid as `"float:M"`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub steps: BTreeMap<String, Grid>,
    /// Wall time in seconds.
    pub seconds: f64,
    /// True when some tensor restores as an approximation (quantized precisions).
    pub lossy: bool,
    /// Lossy tensors: how many, and the worst recorded error among them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lossy_summary: Option<crate::lossy::LossySummary>,
    /// Folder deltas: how each file of the target was stored (empty for a file delta).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<DeltaFile>,
    /// Folder deltas: files of the base folder that the target folder does not have.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub removed_files: Vec<String>,
}

/// How one file of a folder delta was stored.
#[derive(Debug, Clone, Serialize)]
pub struct DeltaFile {
    /// Path relative to the folder.
    pub path: String,
    /// Entry kind name (`safetensors-delta`, `torch-delta`, `safetensors`, `torch`, `blob`).
    pub kind: String,
    /// Size of the file.
    pub size: u64,
    /// Tensors coded against the base file (0 for a file stored whole).
    pub delta_tensors: usize,
}

/// A base model opened for reading: a safetensors or `torch.save` file, mapped; a `.dmx` base
/// is first restored (verified) into a temporary file.
pub(crate) struct Base {
    /// SHA-256 of the base file, once known: recorded in an archive base, else computed on
    /// first use ([`Base::sha256`]), which a writer overlaps with its coding.
    sha: std::sync::OnceLock<[u8; 32]>,
    /// Its size.
    pub size: u64,
    /// Its bytes.
    pub bytes: Bytes,
    /// Its plan: header and tensors.
    pub plan: PlannedFile,
    _restored: Option<crate::io::TempDir>,
}

impl Base {
    /// Opens `path` (a safetensors or `torch.save` file, or a single-file `.dmx` of one).
    pub(crate) fn open(path: &Path, opts: &Options) -> Result<Self> {
        crate::io::check_input(path)?;
        let (file, restored, sha) = if crate::io::is_archive_file(path)? {
            let archive = Archive::open(path)?;
            let index = archive.index();
            let single = index.root == Root::File
                && index.entries.len() == 1
                && matches!(
                    index.entries[0].kind,
                    EntryKind::Safetensors | EntryKind::Torch
                );
            if !single {
                return Err(Error::Unsupported(format!(
                    "{}: a base archive must hold exactly one safetensors or torch.save file \
                     (not a folder or a delta)",
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
        let plan = single_model(&file)?;
        let bytes = Bytes::open_stable(&file)?;
        Ok(Self {
            sha: sha.map(std::sync::OnceLock::from).unwrap_or_default(),
            size: bytes.len() as u64,
            bytes,
            plan,
            _restored: restored,
        })
    }

    /// Opens the checkpoint file `path` (never an archive).
    pub(crate) fn open_file(path: &Path) -> Result<Self> {
        Self::of_plan(single_model(path)?)
    }

    /// The base whose file `plan` planned (mapped and hashed).
    pub(crate) fn of_plan(plan: PlannedFile) -> Result<Self> {
        let bytes = Bytes::open_stable(&plan.path)?;
        if bytes.len() as u64 != plan.size {
            return Err(Error::changed(
                &plan.path,
                "file changed size while being read",
            ));
        }
        Ok(Self {
            sha: std::sync::OnceLock::new(),
            size: bytes.len() as u64,
            bytes,
            plan,
            _restored: None,
        })
    }

    /// SHA-256 of the base file (hashed on the first call; later calls, from any thread,
    /// wait for it or return it).
    pub(crate) fn sha256(&self) -> [u8; 32] {
        *self
            .sha
            .get_or_init(|| sha2::Sha256::digest(&self.bytes[..]).into())
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

/// Plans `path`, which must be one valid safetensors or `torch.save` file (detected by
/// content, whatever its name).
pub(crate) fn single_model(path: &Path) -> Result<PlannedFile> {
    let (root, mut files) = plan_input(path)?;
    // Detected by content: a valid safetensors file is accepted whatever its name.
    if let (Root::File, Some(f)) = (root, files.last_mut())
        && f.kind == EntryKind::Blob
        && !f.rel.ends_with(".safetensors")
    {
        *f = crate::plan::plan_file_by_content(f.rel.clone(), f.path.clone())?;
    }
    match (root, files.pop()) {
        (Root::File, Some(f)) if f.kind.has_tensors() => Ok(f),
        (Root::File, Some(f)) => {
            let why = planner_reason(
                path,
                f.warning.as_deref(),
                "neither a .safetensors file nor a torch.save file",
            );
            Err(Error::Unsupported(format!(
                "{}: {why}; deltas take safetensors or torch.save files",
                path.display()
            )))
        }
        _ => Err(Error::Unsupported(format!(
            "{}: a folder; deltas take two files or two checkpoint folders",
            path.display()
        ))),
    }
}

/// Stores `target` relative to `base` in `output` (a `.dmxd` by convention): two
/// checkpoint files (safetensors or `torch.save`; a base may also be a single-file `.dmx` of
/// one), or two checkpoint folders (`delta::folder`).
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
    let base_meta = crate::io::check_input(base)?;
    match (base_meta.is_dir(), crate::io::check_input(target)?.is_dir()) {
        (true, true) => return folder::compress_dirs(base, target, output, d, opts, start),
        (false, false) => {}
        (b, _) => {
            let (dir, file) = if b { (base, target) } else { (target, base) };
            return Err(Error::Unsupported(format!(
                "{} is a folder but {} is not; deltas take two checkpoint files or two \
                 checkpoint folders",
                dir.display(),
                file.display()
            )));
        }
    }
    let pool = opts.pool()?;
    let base = pool.install(|| Base::open(base, opts))?;
    let plan = single_model(target)?;
    refuse_quantized_torch(d, &plan)?;
    let bytes = Bytes::open_stable(&plan.path)?;
    if bytes.len() as u64 != plan.size {
        return Err(Error::changed(target, "file changed size while being read"));
    }
    let mut steps = shared_grid(d, &base, &plan, &bytes);
    let progress = opts.progress.as_deref();
    if let Some(p) = progress {
        p.start("delta-compressing", plan.size);
    }
    let mut out = AtomicFile::create(output, opts.force, !opts.no_sync)?;
    out.reserve(plan.size);
    let (minor, flags) = delta_format(std::slice::from_ref(&plan), d.precision);
    out.write_all(&dmx_format::preamble_with(minor, flags))?;
    // The base's SHA-256 (recorded at the end) is computed beside the coding.
    let (entry, pairing) = pool.install(|| {
        let encode = || encode_delta(&base, &plan, &bytes, d, &steps, &mut out, opts);
        rayon::join(encode, || base.sha256()).0
    })?;
    let index = Index {
        root: Root::File,
        entries: vec![entry],
    };
    finish_archive(&index, &mut out, target, flags)?;
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
        delta_tensors: pairing.delta_tensors,
        added: pairing.added,
        reshaped: pairing.reshaped,
        removed: pairing.removed,
        steps,
        seconds: start.elapsed().as_secs_f64(),
        lossy: lossy_summary.is_some(),
        lossy_summary,
        files: Vec::new(),
        removed_files: Vec::new(),
    })
}

/// The preamble's minor version and flags of a delta archive of `files`: [`minor_for`], and
/// a compressed index (format 1.2) where [`crate::plan::compresses_index`] wants one.
pub(crate) fn delta_format(files: &[PlannedFile], precision: Precision) -> (u16, u32) {
    let minor = minor_for(files, precision);
    if crate::plan::compresses_index(files) {
        (minor.max(2), dmx_format::FLAG_COMPRESSED_INDEX)
    } else {
        (minor, 0)
    }
}

/// The format minor version a delta of `files` needs: 4 when quantized, 3 with a
/// `torch.save` file, else 1.
fn minor_for(files: &[PlannedFile], precision: Precision) -> u16 {
    if precision != Precision::Lossless {
        // Quantized deltas record per-value errors (format 1.4).
        4
    } else if files.iter().any(|f| f.kind.is_torch()) {
        3
    } else {
        1
    }
}

/// Refuses a quantized delta of a `torch.save` target: its restored storages would no longer
/// match the CRC-32 the zip records for them.
pub(crate) fn refuse_quantized_torch(d: &DeltaOptions, plan: &PlannedFile) -> Result<()> {
    if d.precision == Precision::Lossless || !plan.kind.is_torch() {
        return Ok(());
    }
    Err(Error::Unsupported(format!(
        "{}: --precision {} is not available for torch.save files yet (their zip records a \
         CRC-32 of every storage, which quantized values would break); use --precision \
         lossless",
        plan.path.display(),
        d.precision.name()
    )))
}

/// How the tensors of one target file paired with its base's.
#[derive(Debug, Default)]
pub(crate) struct Pairing {
    /// Tensors coded against the base.
    pub delta_tensors: usize,
    /// Tensors the base lacks.
    pub added: Vec<String>,
    /// Tensors whose dtype or shape changed.
    pub reshaped: Vec<String>,
    /// Base tensors the target lacks.
    pub removed: Vec<String>,
}

/// Encodes the target `plan` (its bytes in `bytes`) against `base` into `out`: a delta entry
/// (kind 2 or 6) whose base reference is `base`'s. `steps` is the grid of quantized
/// precisions. Runs in the caller's thread pool.
pub(crate) fn encode_delta(
    base: &Base,
    plan: &PlannedFile,
    bytes: &Bytes,
    d: &DeltaOptions,
    steps: &BTreeMap<String, Grid>,
    out: &mut AtomicFile,
    opts: &Options,
) -> Result<(dmx_format::Entry, Pairing)> {
    let base_tensors = base.tensors();
    let mut codings = Vec::with_capacity(plan.segments.len());
    let mut bases = Vec::with_capacity(plan.segments.len());
    let mut pairing = Pairing::default();
    for seg in &plan.segments {
        opts.check_cancel()?;
        let SegmentKind::Tensor(t) = &seg.kind else {
            codings.push(Coding::Lossless);
            bases.push(None);
            continue;
        };
        match base_tensors.get(t.name.as_str()) {
            Some(&(dtype, shape, data)) if dtype == t.dtype && shape == t.shape.as_slice() => {
                pairing.delta_tensors += 1;
                let coding = match (d.precision.bits(), lossy_layout(seg.value)) {
                    (Some(bits), Some(_)) => Coding::QuantDelta {
                        grid: steps.get(&t.name).copied().unwrap_or(Grid::Linear(1.0)),
                        bits,
                    },
                    _ => Coding::Delta,
                };
                codings.push(coding);
                bases.push(Some(BaseTensor {
                    name: &t.name,
                    data,
                }));
                continue;
            }
            Some(_) => pairing.reshaped.push(t.name.clone()),
            None => pairing.added.push(t.name.clone()),
        }
        codings.push(Coding::Lossless);
        bases.push(None);
    }
    pairing.removed = removed_tensors(&base.plan, plan);
    let mut entry = encode_entry(plan, bytes, &codings, &bases, out, opts)?;
    entry.kind = plan.kind.delta().ok_or_else(|| {
        Error::Internal(format!("{}: a delta of a file without tensors", plan.rel))
    })?;
    entry.base = Some(BaseRef {
        sha256: base.sha256(),
        size: base.size,
        removed: pairing.removed.clone(),
    });
    Ok((entry, pairing))
}

/// Quantized precisions: one grid for base and target (or the grid `d` gives); empty when
/// lossless. Linear grids are shared by role (lossy module docs), from the larger range of the
/// two; a tensor whose values span many binades in the target or the base takes the floating
/// grid ([`crate::lossy::own_grid`]), whose coordinates need no shared step.
fn shared_grid(
    d: &DeltaOptions,
    base: &Base,
    plan: &PlannedFile,
    bytes: &[u8],
) -> BTreeMap<String, Grid> {
    let mut grids = BTreeMap::new();
    let Some(bits) = d.precision.bits() else {
        return grids;
    };
    let from_base = shared_steps(float_tensors(&base.plan, &base.bytes), bits);
    let from_target = shared_steps(float_tensors(plan, bytes), bits);
    let base_data: HashMap<&str, (FloatLayout, &[u8])> = float_tensors(&base.plan, &base.bytes)
        .map(|(name, _, layout, data)| (name, (layout, data)))
        .collect();
    for (name, _, layout, data) in float_tensors(plan, bytes) {
        if let Some(&given) = d.steps.as_ref().and_then(|m| m.get(name)) {
            grids.insert(name.to_string(), given);
            continue;
        }
        let Some(&target_step) = from_target.get(name) else {
            continue;
        };
        let step = target_step.max(from_base.get(name).copied().unwrap_or(0.0));
        // The finer floating grid of the two, when either file wants one.
        let from_base = base_data
            .get(name)
            .filter(|&&(bl, _)| bl == layout)
            .and_then(|&(_, bd)| float_bits(name, layout, bd, bits, step));
        let grid = match float_bits(name, layout, data, bits, step).max(from_base) {
            Some(m) => Grid::Float(m),
            None => Grid::Linear(step),
        };
        grids.insert(name.to_string(), grid);
    }
    grids
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
    check_base(archive, entry, base, Some(base.sha256()))?;
    slices_of(archive, entry, base)
}

/// Refuses `base` for a delta `entry` when its size, or its SHA-256 `sha` (when given),
/// differ from the recorded ones.
fn check_base(
    archive: &Archive,
    entry: &dmx_format::Entry,
    base: &Base,
    sha: Option<[u8; 32]>,
) -> Result<()> {
    let Some(r) = &entry.base else {
        return Ok(());
    };
    if sha.is_some_and(|s| s != r.sha256) || r.size != base.size {
        let sha = sha.unwrap_or_else(|| base.sha256());
        return Err(Error::WrongBase(format!(
            "wrong base: {} was made from a base of {} bytes with SHA-256 {}, but the given base \
             has {} bytes and SHA-256 {}",
            archive.path().display(),
            r.size,
            hex(&r.sha256),
            base.size,
            hex(&sha)
        )));
    }
    Ok(())
}

/// [`base_slices`] without the SHA-256 check (the caller makes it).
fn slices_of<'a>(
    archive: &Archive,
    entry: &dmx_format::Entry,
    base: &'a Base,
) -> Result<Vec<Option<&'a [u8]>>> {
    if entry.base.is_none() {
        return Ok(vec![None; entry.segments.len()]);
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

/// Rebuilds the target of `delta` from `base` into `output` (for a folder delta, the target
/// folder from the base folder; see `delta::folder`). Refuses a base whose SHA-256 or
/// size differ from the recorded ones; checks every chunk checksum, every tensor's BLAKE3 and
/// the file's SHA-256 before renaming the output into place.
pub fn delta_reconstruct(base: &Path, delta: &Path, output: &Path, opts: &Options) -> Result<()> {
    check_distinct(delta, output)?;
    check_distinct(base, output)?;
    let archive = Archive::open(delta)?;
    let index = archive.index();
    if index.root == Root::Directory && index.entries.iter().any(|e| e.base.is_some()) {
        return folder::reconstruct_dirs(base, &archive, output, opts);
    }
    crate::io::check_writable(output, opts.force)?;
    let entry = &index.entries[0];
    if !entry.kind.is_delta() || index.entries.len() != 1 {
        return Err(Error::Unsupported(format!(
            "{} is not a delta; restore it with `dmx decompress`",
            delta.display()
        )));
    }
    let pool = opts.pool()?;
    let base = pool.install(|| Base::open(base, opts))?;
    let progress = opts.progress.as_deref();
    if let Some(p) = progress {
        p.start("reconstructing", entry.size);
    }
    pool.install(|| restore_checked(&archive, entry, &base, output, opts))?;
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
    // SHA-256 on one side; the BLAKE3 checks and the writes on the other (SHA-256 alone
    // takes about as long as the two).
    crate::decompress::stream_entry_with(
        archive,
        entry,
        bases,
        opts,
        |_, data| {
            sha.update(data);
            Ok(())
        },
        |s, data| {
            check.update(s, data)?;
            write(data)
        },
    )?;
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

/// Where a delta entry's segments are taken from when it is restored: used by chains.
pub(crate) fn restore_delta_to(
    archive: &Archive,
    base: &Base,
    output: &Path,
    opts: &Options,
) -> Result<()> {
    restore_checked(archive, &archive.index().entries[0], base, output, opts)
}

/// Restores the single-file delta `entry` of `archive` against `base` into `output`. The
/// base's size is checked first; its SHA-256 beside the decoding, and before anything else
/// is reported (a wrong base of the right size makes the decoding fail too) or the output
/// renamed into place.
fn restore_checked(
    archive: &Archive,
    entry: &dmx_format::Entry,
    base: &Base,
    output: &Path,
    opts: &Options,
) -> Result<()> {
    check_base(archive, entry, base, None)?;
    let slices = match slices_of(archive, entry, base) {
        Ok(s) => s,
        Err(e) => {
            check_base(archive, entry, base, Some(base.sha256()))?;
            return Err(e);
        }
    };
    let mut out = AtomicFile::create(output, opts.force, !opts.no_sync)?;
    out.reserve(entry.size);
    let write = || write_entry(archive, entry, &slices, opts, |data| out.write_all(data));
    let (written, sha) = rayon::join(write, || base.sha256());
    check_base(archive, entry, base, Some(sha))?;
    written?;
    out.commit()
}
