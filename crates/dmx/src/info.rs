//! Archive statistics for `dmx info`: per tensor, per dtype, per checkpoint component and
//! overall sizes, bits per weight and the order-0 entropy bound recorded at compression time.
//!
//! The tensors of a `torch.save` entry are listed by name path; a storage that views share
//! (tied weights, slices, transposes) is listed as its views, each with its shape, while the
//! rollups (dtypes, components, params) count the storage once.

use std::collections::BTreeMap;

use dmx_codec::Codec;
use dmx_format::{Index, Root, Segment, TensorInfo};
use serde::Serialize;

use crate::archive::Archive;
use crate::names::{self, Component};
use crate::plan::dtype_bits;

/// Everything `dmx info` reports, serializable as its `--json` output.
#[derive(Debug, Clone, Serialize)]
pub struct Stats {
    /// Archive format version (of the archive when opened, else the one dmx writes).
    pub format_version: String,
    /// `"file"` or `"folder"`.
    pub root: &'static str,
    /// True when every segment restores its original bytes exactly.
    pub lossless: bool,
    /// Tensors stored lossily.
    pub lossy_tensors: usize,
    /// Largest relative L2 error of any lossy tensor (`"inf"` when infinite).
    #[serde(serialize_with = "crate::lossy::json_opt_f64")]
    pub max_rel_l2: Option<f64>,
    /// Files stored.
    pub files: Vec<FileStats>,
    /// Number of tensors.
    pub tensors: usize,
    /// Elements in tensors of known dtype.
    pub params: u64,
    /// Original bytes of all files.
    pub original_bytes: u64,
    /// Archive size (container overhead included) when known.
    pub archive_bytes: Option<u64>,
    /// Size of the stored index (compressed in format 1.2 archives that compress it), when
    /// known; included in `archive_bytes` and so in `ratio`.
    pub index_bytes: Option<u64>,
    /// original / archive.
    pub ratio: Option<f64>,
    /// Per dtype rollup.
    pub dtypes: BTreeMap<String, DtypeStats>,
    /// Per checkpoint component (weights, `exp_avg`, `exp_avg_sq`, other optimizer state;
    /// classified by name as `delta-info` does), in that order; only components with
    /// tensors.
    pub components: Vec<ComponentStats>,
}

/// Rollup over the stored tensors (storages) of one checkpoint component.
#[derive(Debug, Clone, Serialize)]
pub struct ComponentStats {
    /// The component.
    pub component: Component,
    /// Stored tensors (a storage shared by several views counts once).
    pub tensors: usize,
    /// Elements.
    pub params: u64,
    /// Original bytes.
    pub original_bytes: u64,
    /// Stored bytes.
    pub stored_bytes: u64,
    /// Stored bits per element.
    pub bits_per_param: Option<f64>,
    /// The errors of its lossy tensors (`None` when it has none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lossy: Option<LossyRollup>,
}

/// The worst errors over a group of lossy tensors (a checkpoint component).
#[derive(Debug, Clone, Default, Serialize)]
pub struct LossyRollup {
    /// Lossy tensors in the group.
    pub tensors: usize,
    /// Largest relative L2 error of a tensor (`"inf"` when infinite).
    #[serde(serialize_with = "crate::lossy::json_f64")]
    pub max_rel_l2: f64,
    /// Largest absolute error of a value (`"inf"` when infinite).
    #[serde(serialize_with = "crate::lossy::json_f64")]
    pub max_abs_error: f64,
    /// Largest `|x − x̂| / |x|` over finite non-zero values, over the tensors with per-value
    /// errors (`null` when none has them: records written before format 1.4).
    #[serde(serialize_with = "crate::lossy::json_opt_f64")]
    pub max_rel_error: Option<f64>,
    /// Finite non-zero original values of the tensors with per-value errors.
    pub nonzero: Option<u64>,
    /// Of those, the values restored as exactly 0.
    pub zeroed: Option<u64>,
    /// `100 · zeroed / nonzero` (0 when `nonzero` is 0).
    #[serde(serialize_with = "crate::lossy::json_opt_f64")]
    pub zeroed_pct: Option<f64>,
}

impl LossyRollup {
    /// Adds one lossy tensor: its relative L2 error, largest absolute error and per-value
    /// errors when known.
    pub fn push(&mut self, rel_l2: f64, max_abs: f64, values: Option<dmx_format::ValueErrors>) {
        self.tensors += 1;
        self.max_rel_l2 = nan_max(self.max_rel_l2, rel_l2);
        self.max_abs_error = nan_max(self.max_abs_error, max_abs);
        if let Some(v) = values {
            self.max_rel_error = Some(nan_max(self.max_rel_error.unwrap_or(0.0), v.max_rel));
            let nonzero = self.nonzero.unwrap_or(0) + v.nonzero;
            let zeroed = self.zeroed.unwrap_or(0) + v.zeroed;
            self.nonzero = Some(nonzero);
            self.zeroed = Some(zeroed);
            self.zeroed_pct = Some(pct(zeroed, nonzero));
        }
    }
}

/// The larger of two errors, NaN winning (an undefined error must not hide).
fn nan_max(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else {
        a.max(b)
    }
}

/// `100 · part / whole` (0 when `whole` is 0).
pub(crate) fn pct(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        100.0 * part as f64 / whole as f64
    }
}

/// One stored file.
#[derive(Debug, Clone, Serialize)]
pub struct FileStats {
    /// Path inside the archive.
    pub path: String,
    /// `"safetensors"`, `"blob"`, `"safetensors-delta"`, `"torch"` (a `torch.save` file),
    /// `"torch-delta"` or `"packed"` (a small file stored in a shared pack; its stored bytes
    /// are its share of the pack's).
    pub kind: &'static str,
    /// Original size.
    pub original_bytes: u64,
    /// Stored size of its chunks.
    pub stored_bytes: u64,
    /// SHA-256 of the original file, hex (the Hugging Face LFS oid); empty for a packed file,
    /// whose pack's digests cover it.
    pub sha256: String,
    /// Its tensors.
    pub tensors: Vec<TensorStats>,
}

/// One tensor.
#[derive(Debug, Clone, Serialize)]
pub struct TensorStats {
    /// Name.
    pub name: String,
    /// Safetensors dtype.
    pub dtype: String,
    /// Shape.
    pub shape: Vec<u64>,
    /// Elements (0 for unknown dtypes).
    pub params: u64,
    /// Original bytes.
    pub original_bytes: u64,
    /// Stored bytes.
    pub stored_bytes: u64,
    /// Codec of its chunks (`"mixed"` when they differ, `"none"` when empty).
    pub codec: String,
    /// Stored bits per element.
    pub bits_per_weight: Option<f64>,
    /// Order-0 entropy bound in bits per element under the chosen field split.
    pub entropy_bits_per_weight: Option<f64>,
    /// How a lossy tensor was stored and the error measured then (`None`: lossless).
    pub lossy: Option<LossyStats>,
    /// For a view into a storage of a `torch.save` file: the storage's stored name (its
    /// sizes are then the view's share of the storage's); `None` otherwise.
    pub view_of: Option<String>,
}

/// Mode, parameters and measured error of a lossy tensor.
#[derive(Debug, Clone, Serialize)]
pub struct LossyStats {
    /// `"bfp"`, `"int16"`, `"int32"`, `"cast-bf16"` or `"cast-f16"`.
    pub mode: &'static str,
    /// Integer modes: `"linear"` (a grid of [`LossyStats::step`]) or `"float"` (the floating
    /// grid, with [`LossyStats::mantissa_bits`] fraction bits).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grid: Option<&'static str>,
    /// BFP magnitude bits, or the fraction bits `m` of a floating grid.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mantissa_bits: Option<u8>,
    /// BFP group size.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group_size: Option<u32>,
    /// Step of a linear integer grid.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step: Option<f64>,
    /// Guaranteed bound on `|x − x̂|` of a value on a linear integer grid: `step / 2`.
    /// The restored value `q · step` is also rounded to the dtype, which adds at most half
    /// an ulp of `x̂` (docs/CODECS.md §8.5); values off the grid are stored exactly.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub abs_bound: Option<f64>,
    /// Guaranteed bound on `|x − x̂| / |x|` of a normal value: `2^−(m+1)` on a floating
    /// grid of `m` fraction bits (no non-zero value becomes 0; subnormals are stored
    /// exactly); `2^−8` for `cast-bf16` and `2^−11` for `cast-f16` (half an ulp of the
    /// narrow type, 7 and 10 fraction bits; values that become subnormal in the narrow type
    /// lose more).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rel_bound: Option<f64>,
    /// BFP: guaranteed bound on `|x − x̂|` relative to the largest magnitude of the value's
    /// group, `2^(1−M)`. The step is `2^(E − bias − M + 1)` for the group exponent `E`, and
    /// the largest magnitude is at least `2^(E − bias)`; a value is off by at most half a
    /// step of the final exponent (`E` or `E + 1` after a carry) or one step for a saturated
    /// maximum, so by at most `2^(E − bias − M + 1)`. Groups whose largest magnitude is
    /// subnormal are held to the same absolute step; raw groups are exact.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group_rel_bound: Option<f64>,
    /// Largest absolute error (`"inf"` when infinite).
    #[serde(serialize_with = "crate::lossy::json_f64")]
    pub max_abs_error: f64,
    /// Mean absolute error (`"inf"` when infinite).
    #[serde(serialize_with = "crate::lossy::json_f64")]
    pub mean_abs_error: f64,
    /// Relative L2 error ‖x − x̂‖ / ‖x‖ (`"inf"` when infinite).
    #[serde(serialize_with = "crate::lossy::json_f64")]
    pub rel_l2: f64,
    /// Signal-to-noise ratio in dB (`"inf"` when exact, `"-inf"` or `"nan"` when the error
    /// is infinite or undefined: never `null`, which would hide it).
    #[serde(serialize_with = "crate::lossy::json_f64")]
    pub snr_db: f64,
    /// Largest `|x − x̂| / |x|` over the finite non-zero values (`"inf"` when infinite;
    /// `null` in records written before format 1.4).
    #[serde(serialize_with = "crate::lossy::json_opt_f64")]
    pub max_rel_error: Option<f64>,
    /// Finite non-zero original values (`null` before format 1.4).
    pub nonzero: Option<u64>,
    /// Of those, the values restored as exactly 0 (`null` before format 1.4).
    pub zeroed: Option<u64>,
    /// `100 · zeroed / nonzero` (`null` before format 1.4).
    #[serde(serialize_with = "crate::lossy::json_opt_f64")]
    pub zeroed_pct: Option<f64>,
}

impl LossyStats {
    /// The report form of a stored lossy record.
    pub fn of(l: &dmx_format::Lossy) -> Self {
        let bfp = l.mode == dmx_format::LossyMode::Bfp;
        let int = matches!(
            l.mode,
            dmx_format::LossyMode::Int16 | dmx_format::LossyMode::Int32
        );
        let float = int && l.float_grid;
        let linear = int && !l.float_grid;
        let v = l.error.values;
        Self {
            mode: l.mode.name(),
            grid: int.then_some(if float { "float" } else { "linear" }),
            mantissa_bits: (bfp || float).then_some(l.mantissa_bits),
            group_size: bfp.then_some(l.group_size),
            step: linear.then_some(l.step),
            abs_bound: (linear && l.step.is_finite() && l.step > 0.0).then(|| l.step / 2.0),
            rel_bound: match l.mode {
                _ if float => Some(pow2(-(i32::from(l.mantissa_bits) + 1))),
                dmx_format::LossyMode::CastBf16 => Some(pow2(-8)),
                dmx_format::LossyMode::CastF16 => Some(pow2(-11)),
                _ => None,
            },
            group_rel_bound: bfp.then(|| pow2(1 - i32::from(l.mantissa_bits))),
            max_abs_error: l.error.max_abs,
            mean_abs_error: l.error.mean_abs,
            rel_l2: l.error.rel_l2,
            snr_db: l.error.snr_db,
            max_rel_error: v.map(|v| v.max_rel),
            nonzero: v.map(|v| v.nonzero),
            zeroed: v.map(|v| v.zeroed),
            zeroed_pct: v.map(|v| pct(v.zeroed, v.nonzero)),
        }
    }
}

/// `2^e` for the small exponents of the error bounds.
fn pow2(e: i32) -> f64 {
    2f64.powi(e)
}

/// Rollup over the tensors of one dtype.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DtypeStats {
    /// Tensors.
    pub tensors: usize,
    /// Elements.
    pub params: u64,
    /// Original bytes.
    pub original_bytes: u64,
    /// Stored bytes.
    pub stored_bytes: u64,
    /// Stored bits per element.
    pub bits_per_weight: Option<f64>,
    /// Entropy bound in bits per element.
    pub entropy_bits_per_weight: Option<f64>,
    /// original / stored.
    pub ratio: Option<f64>,
    #[serde(skip)]
    entropy_bits: f64,
}

fn stored(seg: &Segment) -> u64 {
    seg.chunks.iter().map(|c| u64::from(c.stored_len)).sum()
}

/// The share of `stored` bytes that `part` of `whole` original bytes accounts for (packed
/// tensors and files share their chunks).
fn share(stored: u64, part: u64, whole: u64) -> u64 {
    if part == whole || whole == 0 {
        return stored;
    }
    (u128::from(stored) * u128::from(part) / u128::from(whole)) as u64
}

fn per(bits: f64, n: u64) -> Option<f64> {
    (n > 0).then(|| bits / n as f64)
}

impl Stats {
    /// Statistics of an open archive.
    pub fn of_archive(archive: &Archive) -> Self {
        let mut s = Self::of_index(archive.index());
        let (major, minor) = archive.version();
        s.format_version = format!("{major}.{minor}");
        s.archive_bytes = Some(archive.archive_len());
        s.index_bytes = Some(archive.index_len());
        s.ratio = (archive.archive_len() > 0)
            .then(|| s.original_bytes as f64 / archive.archive_len() as f64);
        s
    }

    /// Statistics computable from an index alone.
    pub fn of_index(index: &Index) -> Self {
        let mut dtypes: BTreeMap<String, DtypeStats> = BTreeMap::new();
        // Per component: stored tensors, params, original and stored bytes.
        let mut components: BTreeMap<Component, (usize, u64, u64, u64)> = BTreeMap::new();
        let mut lossy_components: BTreeMap<Component, LossyRollup> = BTreeMap::new();
        let mut files = Vec::new();
        let mut lossless = true;
        // The current pack (format 1.2): its size and stored bytes, shared by its files.
        let mut pack = (0u64, 0u64);
        for e in &index.entries {
            let mut tensors = Vec::new();
            if e.kind == dmx_format::EntryKind::Pack {
                pack = (e.size, e.segments.iter().map(stored).sum());
                continue;
            }
            let views = crate::archive::ViewTable::of(e);
            for (i, seg) in e.segments.iter().enumerate() {
                lossless &= seg.transform.is_lossless();
                let listed = segment_tensors(seg);
                for (t, entropy) in &listed {
                    let d = dtypes.entry(t.dtype.clone()).or_default();
                    d.tensors += 1;
                    d.params += t.params;
                    d.original_bytes += t.original_bytes;
                    d.stored_bytes += t.stored_bytes;
                    d.entropy_bits += entropy;
                    let c = components.entry(names::component(&t.name)).or_default();
                    c.0 += 1;
                    c.1 += t.params;
                    c.2 += t.original_bytes;
                    c.3 += t.stored_bytes;
                    if let Some(l) = seg.transform.lossy() {
                        lossy_components
                            .entry(names::component(&t.name))
                            .or_default()
                            .push(l.error.rel_l2, l.error.max_abs, l.error.values);
                    }
                }
                match (views.of_segment(i), listed.first()) {
                    (Some(vs), Some((storage, _))) => tensors.extend(
                        vs.iter()
                            .map(|&v| view_stats(&views.infos[v], &e.views[v], seg, storage)),
                    ),
                    _ => tensors.extend(listed.into_iter().map(|(t, _)| t)),
                }
            }
            files.push(FileStats {
                path: e.path.clone(),
                kind: e.kind.name(),
                original_bytes: e.size,
                stored_bytes: if e.kind == dmx_format::EntryKind::Packed {
                    share(pack.1, e.size, pack.0)
                } else {
                    e.segments.iter().map(stored).sum()
                },
                // A packed file has no digest of its own: its pack's cover it.
                sha256: if e.kind == dmx_format::EntryKind::Packed {
                    String::new()
                } else {
                    e.sha256.iter().map(|b| format!("{b:02x}")).collect()
                },
                tensors,
            });
        }
        for d in dtypes.values_mut() {
            d.bits_per_weight = per(d.stored_bytes as f64 * 8.0, d.params);
            d.entropy_bits_per_weight = per(d.entropy_bits, d.params);
            d.ratio = (d.stored_bytes > 0).then(|| d.original_bytes as f64 / d.stored_bytes as f64);
        }
        Self {
            format_version: format!(
                "{}.{}",
                dmx_format::VERSION_MAJOR,
                dmx_format::VERSION_MINOR
            ),
            root: match index.root {
                Root::File => "file",
                Root::Directory => "folder",
            },
            lossless,
            lossy_tensors: files
                .iter()
                .flat_map(|f| &f.tensors)
                .filter(|t| t.lossy.is_some())
                .count(),
            max_rel_l2: files
                .iter()
                .flat_map(|f| &f.tensors)
                .filter_map(|t| t.lossy.as_ref().map(|l| l.rel_l2))
                .reduce(f64::max),
            tensors: files.iter().map(|f| f.tensors.len()).sum(),
            params: dtypes.values().map(|d| d.params).sum(),
            original_bytes: index
                .entries
                .iter()
                .filter(|e| e.kind != dmx_format::EntryKind::Pack)
                .map(|e| e.size)
                .sum(),
            archive_bytes: None,
            index_bytes: None,
            ratio: None,
            files,
            dtypes,
            components: components
                .into_iter()
                .map(
                    |(component, (tensors, params, original, stored))| ComponentStats {
                        component,
                        tensors,
                        params,
                        original_bytes: original,
                        stored_bytes: stored,
                        bits_per_param: per(stored as f64 * 8.0, params),
                        lossy: lossy_components.remove(&component),
                    },
                )
                .collect(),
        }
    }
}

/// The tensors a segment stores (none for bytes), as stored (a storage of a `torch.save`
/// file as one 1-D tensor), each with its entropy bound in bits.
fn segment_tensors(seg: &Segment) -> Vec<(TensorStats, f64)> {
    let mut codecs = seg.chunks.iter().map(|c| c.codec);
    let codec = match codecs.next() {
        None => "none".to_string(),
        Some(first) if codecs.all(|c| c == first) => Codec::from_id(first)
            .map_or("unknown", |c| c.name())
            .to_string(),
        Some(_) => "mixed".to_string(),
    };
    seg.kind
        .tensors(seg.len)
        .into_iter()
        .map(|(t, _, len)| {
            let params = dtype_bits(&t.dtype)
                .filter(|&b| b > 0)
                .map_or(0, |b| len * 8 / b);
            let stored = share(stored(seg), len, seg.len);
            let entropy = seg.entropy_bits * len as f64 / seg.len.max(1) as f64;
            let t = TensorStats {
                name: t.name.clone(),
                dtype: t.dtype.clone(),
                shape: t.shape.clone(),
                params,
                original_bytes: len,
                stored_bytes: stored,
                codec: codec.clone(),
                bits_per_weight: per(stored as f64 * 8.0, params),
                entropy_bits_per_weight: per(entropy, params),
                lossy: seg.transform.lossy().map(LossyStats::of),
                view_of: None,
            };
            (t, entropy)
        })
        .collect()
}

/// The listing of view `v` (described by `info`) into storage segment `seg`, whose stored
/// form is `storage`: its sizes are its share of the storage's.
fn view_stats(
    info: &TensorInfo,
    v: &dmx_format::TorchView,
    seg: &Segment,
    s: &TensorStats,
) -> TensorStats {
    let width = dtype_bits(&v.dtype).map_or(0, |b| b / 8);
    let params = v.shape.iter().try_fold(1u64, |a, &d| a.checked_mul(d));
    let params = params.unwrap_or(0);
    let len = params.saturating_mul(width).min(seg.len);
    TensorStats {
        name: info.name.clone(),
        dtype: info.dtype.clone(),
        shape: info.shape.clone(),
        params,
        original_bytes: params.saturating_mul(width),
        stored_bytes: share(s.stored_bytes, len, seg.len),
        codec: s.codec.clone(),
        bits_per_weight: s.bits_per_weight,
        entropy_bits_per_weight: s.entropy_bits_per_weight,
        lossy: seg.transform.lossy().map(LossyStats::of),
        view_of: Some(s.name.clone()),
    }
}
