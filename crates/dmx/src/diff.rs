//! Weight-shift analytics between two checkpoints: how far each tensor moved from `A` to `B`,
//! rolled up per layer, per checkpoint component and per role. Nothing is written.
//!
//! Per tensor present in both files with the same dtype and shape:
//! - `fraction_changed`: elements whose bits differ (`-0.0` vs `0.0` counts, an unchanged NaN
//!   does not), for every dtype;
//! - for float tensors (F32, F16, BF16, F64), in f64: the norms `‖A‖`, `‖B‖`, `‖B−A‖`, the
//!   relative change `‖B−A‖/‖A‖`, the cosine similarity and the largest absolute change.
//!   Elements that are NaN or infinite in either file are left out of these (and counted in
//!   `nonfinite`).
//!
//! Edge cases: the relative change is 0 when `‖A‖ = 0` and `B = A`, and `null` (infinite)
//! when `‖A‖ = 0` and `B ≠ A`; the cosine is 1 when both tensors are zero and 0 when exactly
//! one is. A value that is not a finite number (overflow in F64) is reported as `null`, so
//! the JSON never holds NaN.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use half::{bf16, f16};
use rayon::prelude::*;
use serde::Serialize;

use crate::Options;
use crate::error::{Error, Result};
use crate::names::{self, Component, Role};
use crate::plan::dtype_bits;
use crate::tensors::{TensorFile, TensorMeta};

/// Everything `dmx diff` reports, serializable as its `--json` output.
#[derive(Debug, Clone, Serialize)]
pub struct DiffReport {
    /// Path of the first file (`A`).
    pub a: String,
    /// Path of the second file (`B`).
    pub b: String,
    /// True when both files hold the same tensor names, dtypes, shapes and bytes (header
    /// metadata aside).
    pub identical: bool,
    /// The overall summary.
    pub totals: Totals,
    /// Rollup per checkpoint component (weights, `exp_avg`, ...), in that order.
    pub components: Vec<ComponentRollup>,
    /// Rollup per component and layer, for the tensors with a layer index.
    pub layers: Vec<LayerRollup>,
    /// Rollup per component and role.
    pub roles: Vec<RoleRollup>,
    /// Every tensor compared (same name, dtype and shape in both files), in `A`'s order.
    pub tensors: Vec<TensorDiff>,
    /// Tensors only in `B`, in its order.
    pub added: Vec<String>,
    /// Tensors only in `A`, in its order.
    pub removed: Vec<String>,
    /// Tensors in both files whose dtype or shape differ (not compared).
    pub changed_shape_or_dtype: Vec<ShapeChange>,
    /// `__metadata__` keys whose values differ.
    pub metadata_changed: Vec<MetadataChange>,
}

/// The overall summary of a diff.
#[derive(Debug, Clone, Serialize)]
pub struct Totals {
    /// Tensors in `A`.
    pub tensors_a: usize,
    /// Tensors in `B`.
    pub tensors_b: usize,
    /// Tensors compared.
    pub compared: usize,
    /// Compared tensors whose bytes are equal.
    pub identical: usize,
    /// Tensors only in `B`.
    pub added: usize,
    /// Tensors only in `A`.
    pub removed: usize,
    /// Tensors whose dtype or shape changed.
    pub changed_shape_or_dtype: usize,
    /// Elements of the compared tensors, and how much they changed (all components
    /// together).
    #[serde(flatten)]
    pub stats: Rollup,
}

/// How much a group of compared tensors changed.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Rollup {
    /// Tensors in the group.
    pub tensors: usize,
    /// Elements.
    pub params: u64,
    /// Elements whose bits differ.
    pub changed: u64,
    /// `changed / params` (0 for an empty group).
    pub fraction_changed: f64,
    /// `‖B−A‖/‖A‖` of the concatenated float tensors (see the module docs for `‖A‖ = 0`);
    /// `null` when the group has no float tensor.
    pub relative_change: Option<f64>,
    /// `‖A‖` of the concatenated float tensors.
    pub norm_a: Option<f64>,
    /// `‖B−A‖` of the concatenated float tensors.
    pub norm_diff: Option<f64>,
    /// Largest `|B−A| / |A|` over the finite non-zero elements of `A` of the float tensors
    /// (`null` without float tensors, or when infinite).
    pub max_rel_change: Option<f64>,
    /// Finite non-zero elements of `A` in the float tensors.
    pub nonzero_a: Option<u64>,
    /// Of those, the elements that are exactly 0 in `B`.
    pub zeroed: Option<u64>,
    #[serde(skip)]
    sums: Option<Sums>,
}

/// The rollup of one checkpoint component.
#[derive(Debug, Clone, Serialize)]
pub struct ComponentRollup {
    /// The component.
    pub component: Component,
    /// Its numbers.
    #[serde(flatten)]
    pub stats: Rollup,
}

/// The rollup of one layer of one component.
#[derive(Debug, Clone, Serialize)]
pub struct LayerRollup {
    /// The layer index ([`names::layer`]).
    pub layer: u32,
    /// The component.
    pub component: Component,
    /// Its numbers.
    #[serde(flatten)]
    pub stats: Rollup,
}

/// The rollup of one role within one component.
#[derive(Debug, Clone, Serialize)]
pub struct RoleRollup {
    /// The role ([`names::role`]).
    pub role: Role,
    /// The component.
    pub component: Component,
    /// Its numbers.
    #[serde(flatten)]
    pub stats: Rollup,
}

/// How one tensor changed.
#[derive(Debug, Clone, Serialize)]
pub struct TensorDiff {
    /// Name.
    pub name: String,
    /// Safetensors dtype.
    pub dtype: String,
    /// Shape.
    pub shape: Vec<u64>,
    /// Elements.
    pub params: u64,
    /// Checkpoint component ([`names::component`]).
    pub component: Component,
    /// Role ([`names::role`]).
    pub role: Role,
    /// Layer index ([`names::layer`]).
    pub layer: Option<u32>,
    /// Elements whose bits differ.
    pub changed: u64,
    /// `changed / params` (0 for an empty tensor).
    pub fraction_changed: f64,
    /// `‖B−A‖/‖A‖`; `null` for non-float dtypes and when infinite (`‖A‖ = 0`, `B ≠ A`).
    pub relative_change: Option<f64>,
    /// Cosine similarity of `A` and `B`; `null` for non-float dtypes.
    pub cosine: Option<f64>,
    /// Largest `|B−A|` over the elements; `null` for non-float dtypes.
    pub max_abs_change: Option<f64>,
    /// `‖A‖`; `null` for non-float dtypes.
    pub norm_a: Option<f64>,
    /// `‖B‖`; `null` for non-float dtypes.
    pub norm_b: Option<f64>,
    /// `‖B−A‖`; `null` for non-float dtypes.
    pub norm_diff: Option<f64>,
    /// Largest `|B−A| / |A|` over the finite non-zero elements of `A` (0 when none); `null`
    /// for non-float dtypes and when infinite.
    pub max_rel_change: Option<f64>,
    /// Finite non-zero elements of `A` (with a finite `B`); `null` for non-float dtypes.
    pub nonzero_a: Option<u64>,
    /// Of those, the elements that are exactly 0 in `B` (`±0`); `null` for non-float
    /// dtypes.
    pub zeroed: Option<u64>,
    /// Elements left out of the float measures because they are NaN or infinite in `A` or
    /// `B`.
    pub nonfinite: u64,
    #[serde(skip)]
    sums: Option<Sums>,
}

/// A tensor whose dtype or shape differs between the files.
#[derive(Debug, Clone, Serialize)]
pub struct ShapeChange {
    /// Name.
    pub name: String,
    /// Dtype in `A`.
    pub a_dtype: String,
    /// Shape in `A`.
    pub a_shape: Vec<u64>,
    /// Dtype in `B`.
    pub b_dtype: String,
    /// Shape in `B`.
    pub b_shape: Vec<u64>,
}

/// A `__metadata__` key whose value differs.
#[derive(Debug, Clone, Serialize)]
pub struct MetadataChange {
    /// The key.
    pub key: String,
    /// Its value in `A` (`null` when absent).
    pub a: Option<String>,
    /// Its value in `B` (`null` when absent).
    pub b: Option<String>,
}

/// Sums over the finite element pairs of float tensors.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Sums {
    a2: f64,
    b2: f64,
    d2: f64,
    ab: f64,
    max_abs: f64,
    /// Largest `|b − a| / |a|` over finite non-zero `a`.
    max_rel: f64,
    /// Finite non-zero `a`.
    nonzero_a: u64,
    /// Of those, `b == 0`.
    zeroed: u64,
    nonfinite: u64,
}

impl Sums {
    fn add(&mut self, o: &Sums) {
        self.a2 += o.a2;
        self.b2 += o.b2;
        self.d2 += o.d2;
        self.ab += o.ab;
        self.max_abs = self.max_abs.max(o.max_abs);
        self.max_rel = self.max_rel.max(o.max_rel);
        self.nonzero_a += o.nonzero_a;
        self.zeroed += o.zeroed;
        self.nonfinite += o.nonfinite;
    }
}

fn finite(x: f64) -> Option<f64> {
    x.is_finite().then_some(x)
}

/// `‖d‖/‖a‖` with the conventions of the module docs.
fn relative(a2: f64, d2: f64) -> Option<f64> {
    if a2 == 0.0 {
        (d2 == 0.0).then_some(0.0)
    } else {
        finite(d2.sqrt() / a2.sqrt())
    }
}

fn cosine(s: &Sums) -> Option<f64> {
    let (na, nb) = (s.a2.sqrt(), s.b2.sqrt());
    match (na == 0.0, nb == 0.0) {
        (true, true) => Some(1.0),
        (true, false) | (false, true) => Some(0.0),
        _ => {
            // One rounding less than `ab / na / nb` where the product stays in range.
            let p = s.a2 * s.b2;
            let c = if p.is_normal() {
                s.ab / p.sqrt()
            } else {
                s.ab / na / nb
            };
            finite(c).map(|c| c.clamp(-1.0, 1.0))
        }
    }
}

fn fraction(changed: u64, params: u64) -> f64 {
    if params == 0 {
        0.0
    } else {
        changed as f64 / params as f64
    }
}

/// Elements per block of partial sums: keeps f64 accumulation error small on huge tensors.
const BLOCK: usize = 4096;

/// Changed elements and sums of a float tensor stored as `N`-byte little-endian elements.
fn float_sums<const N: usize>(a: &[u8], b: &[u8], value: impl Fn([u8; N]) -> f64) -> (u64, Sums) {
    let mut total = Sums::default();
    let mut changed = 0u64;
    for (ba, bb) in a.chunks(N * BLOCK).zip(b.chunks(N * BLOCK)) {
        let mut s = Sums::default();
        for (x, y) in ba.chunks_exact(N).zip(bb.chunks_exact(N)) {
            let x: [u8; N] = x.try_into().expect("N bytes");
            let y: [u8; N] = y.try_into().expect("N bytes");
            changed += u64::from(x != y);
            let (x, y) = (value(x), value(y));
            if !(x.is_finite() && y.is_finite()) {
                s.nonfinite += 1;
                continue;
            }
            let d = y - x;
            s.a2 += x * x;
            s.b2 += y * y;
            s.ab += x * y;
            s.d2 += d * d;
            let ad = d.abs();
            s.max_abs = s.max_abs.max(ad);
            if x != 0.0 {
                s.nonzero_a += 1;
                s.zeroed += u64::from(y == 0.0);
                // Rarely taken: no division per element.
                if ad > s.max_rel * x.abs() {
                    s.max_rel = ad / x.abs();
                }
            }
        }
        total.add(&s);
    }
    (changed, total)
}

/// Changed elements of a non-float tensor of `bits`-bit elements, compared bit for bit.
/// Sub-byte elements (4 and 6 bits) are compared as bit fields, whichever way they are
/// packed; unknown sizes fall back to bytes. Never more than `params`.
fn changed_elements(a: &[u8], b: &[u8], bits: Option<u64>, params: u64) -> u64 {
    let n = match bits {
        Some(bits) if bits >= 8 && bits.is_multiple_of(8) => {
            let size = (bits / 8) as usize;
            a.chunks_exact(size)
                .zip(b.chunks_exact(size))
                .filter(|(x, y)| x != y)
                .count() as u64
        }
        Some(4) => a
            .iter()
            .zip(b)
            .map(|(x, y)| {
                let d = x ^ y;
                u64::from(d & 0x0f != 0) + u64::from(d & 0xf0 != 0)
            })
            .sum(),
        Some(6) => a
            .chunks(3)
            .zip(b.chunks(3))
            .map(|(x, y)| {
                let d = x
                    .iter()
                    .zip(y)
                    .enumerate()
                    .fold(0u32, |v, (i, (p, q))| v | (u32::from(p ^ q) << (8 * i)));
                (0..4).filter(|k| (d >> (6 * k)) & 0x3f != 0).count() as u64
            })
            .sum(),
        _ => a.iter().zip(b).filter(|(x, y)| x != y).count() as u64,
    };
    n.min(params)
}

/// Compares tensor `t`, present with the same dtype and shape in both files.
fn compare(fa: &TensorFile, fb: &TensorFile, t: &TensorMeta) -> Result<TensorDiff> {
    let da = fa.read(&t.name)?;
    let db = fb.read(&t.name)?;
    if da.len() != db.len() {
        return Err(Error::Unsupported(format!(
            "tensor {:?}: {} bytes in {} but {} in {}",
            t.name,
            da.len(),
            fa.path().display(),
            db.len(),
            fb.path().display()
        )));
    }
    let params = t.elements();
    let (changed, sums) = match t.dtype.as_str() {
        "F32" => float_sums::<4>(&da, &db, |x| f64::from(f32::from_le_bytes(x))),
        "F64" => float_sums::<8>(&da, &db, f64::from_le_bytes),
        "F16" => float_sums::<2>(&da, &db, |x| f16::from_le_bytes(x).to_f64()),
        "BF16" => float_sums::<2>(&da, &db, |x| bf16::from_le_bytes(x).to_f64()),
        _ => {
            let changed = changed_elements(&da, &db, dtype_bits(&t.dtype), params);
            drop((da, db));
            fa.release(&t.name);
            fb.release(&t.name);
            return Ok(TensorDiff::new(t, params, changed, None));
        }
    };
    drop((da, db));
    fa.release(&t.name);
    fb.release(&t.name);
    Ok(TensorDiff::new(t, params, changed, Some(sums)))
}

impl TensorDiff {
    fn new(t: &TensorMeta, params: u64, changed: u64, sums: Option<Sums>) -> Self {
        Self {
            name: t.name.clone(),
            dtype: t.dtype.clone(),
            shape: t.shape.clone(),
            params,
            component: names::component(&t.name),
            role: names::role(&t.name),
            layer: names::layer(&t.name),
            changed,
            fraction_changed: fraction(changed, params),
            relative_change: sums.and_then(|s| relative(s.a2, s.d2)),
            cosine: sums.as_ref().and_then(cosine),
            max_abs_change: sums.and_then(|s| finite(s.max_abs)),
            norm_a: sums.and_then(|s| finite(s.a2.sqrt())),
            norm_b: sums.and_then(|s| finite(s.b2.sqrt())),
            norm_diff: sums.and_then(|s| finite(s.d2.sqrt())),
            max_rel_change: sums.and_then(|s| finite(s.max_rel)),
            nonzero_a: sums.map(|s| s.nonzero_a),
            zeroed: sums.map(|s| s.zeroed),
            nonfinite: sums.map_or(0, |s| s.nonfinite),
            sums,
        }
    }

    /// True for float tensors, which have the norm-based measures.
    pub fn is_float(&self) -> bool {
        self.sums.is_some()
    }
}

impl Rollup {
    /// True when the group holds a float tensor, so that it has the norm-based measures.
    pub fn is_float(&self) -> bool {
        self.sums.is_some()
    }

    fn push(&mut self, t: &TensorDiff) {
        self.tensors += 1;
        self.params += t.params;
        self.changed += t.changed;
        if let Some(s) = &t.sums {
            self.sums.get_or_insert_with(Sums::default).add(s);
        }
    }

    fn finish(mut self) -> Self {
        self.fraction_changed = fraction(self.changed, self.params);
        if let Some(s) = &self.sums {
            self.relative_change = relative(s.a2, s.d2);
            self.norm_a = finite(s.a2.sqrt());
            self.norm_diff = finite(s.d2.sqrt());
            self.max_rel_change = finite(s.max_rel);
            self.nonzero_a = Some(s.nonzero_a);
            self.zeroed = Some(s.zeroed);
        }
        self
    }

    fn of<'a>(tensors: impl IntoIterator<Item = &'a TensorDiff>) -> Self {
        let mut r = Self::default();
        for t in tensors {
            r.push(t);
        }
        r.finish()
    }
}

/// Compares the checkpoints `a` and `b` (each a `.safetensors` file or a single-file `.dmx`
/// archive), tensor by tensor, in parallel on `opts`' threads; one tensor pair per worker
/// is in memory at a time.
pub fn diff(a: &Path, b: &Path, opts: &Options) -> Result<DiffReport> {
    let fa = TensorFile::open(a)?;
    let fb = TensorFile::open(b)?;
    diff_files(&fa, &fb, opts)
}

/// [`diff`] of two files already open.
pub fn diff_files(fa: &TensorFile, fb: &TensorFile, opts: &Options) -> Result<DiffReport> {
    let mut compared = Vec::new();
    let mut removed = Vec::new();
    let mut changed_shape_or_dtype = Vec::new();
    for ta in fa.tensors() {
        match fb.get(&ta.name) {
            None => removed.push(ta.name.clone()),
            Some(tb) if tb.dtype == ta.dtype && tb.shape == ta.shape => compared.push(ta),
            Some(tb) => changed_shape_or_dtype.push(ShapeChange {
                name: ta.name.clone(),
                a_dtype: ta.dtype.clone(),
                a_shape: ta.shape.clone(),
                b_dtype: tb.dtype.clone(),
                b_shape: tb.shape.clone(),
            }),
        }
    }
    let added: Vec<String> = fb
        .tensors()
        .iter()
        .filter(|t| fa.get(&t.name).is_none())
        .map(|t| t.name.clone())
        .collect();

    let progress = opts.progress.as_deref();
    if let Some(p) = progress {
        p.start("diff", compared.iter().map(|t| 2 * t.len).sum());
    }
    let pool = opts.pool()?;
    let tensors = pool.install(|| {
        compared
            .par_iter()
            .map(|t| {
                let r = compare(fa, fb, t);
                if let Some(p) = progress {
                    p.advance(2 * t.len);
                }
                r
            })
            .collect::<Result<Vec<_>>>()
    });
    if let Some(p) = progress {
        p.finish();
    }
    let tensors = tensors?;

    let mut components: BTreeMap<Component, Rollup> = BTreeMap::new();
    let mut layers: BTreeMap<(Component, u32), Rollup> = BTreeMap::new();
    let mut roles: BTreeMap<(Component, Role), Rollup> = BTreeMap::new();
    for t in &tensors {
        components.entry(t.component).or_default().push(t);
        roles.entry((t.component, t.role)).or_default().push(t);
        if let Some(l) = t.layer {
            layers.entry((t.component, l)).or_default().push(t);
        }
    }
    let identical_tensors = tensors.iter().filter(|t| t.changed == 0).count();
    let totals = Totals {
        tensors_a: fa.tensors().len(),
        tensors_b: fb.tensors().len(),
        compared: tensors.len(),
        identical: identical_tensors,
        added: added.len(),
        removed: removed.len(),
        changed_shape_or_dtype: changed_shape_or_dtype.len(),
        stats: Rollup::of(&tensors),
    };
    let (ma, mb) = (fa.metadata(), fb.metadata());
    let keys: BTreeSet<&String> = ma.into_iter().chain(mb).flat_map(|m| m.keys()).collect();
    let metadata_changed = keys
        .into_iter()
        .filter_map(|k| {
            let va = ma.and_then(|m| m.get(k)).cloned();
            let vb = mb.and_then(|m| m.get(k)).cloned();
            (va != vb).then(|| MetadataChange {
                key: k.clone(),
                a: va,
                b: vb,
            })
        })
        .collect();
    Ok(DiffReport {
        a: fa.path().display().to_string(),
        b: fb.path().display().to_string(),
        identical: identical_tensors == tensors.len()
            && added.is_empty()
            && removed.is_empty()
            && changed_shape_or_dtype.is_empty(),
        totals,
        components: components
            .into_iter()
            .map(|(component, r)| ComponentRollup {
                component,
                stats: r.finish(),
            })
            .collect(),
        layers: layers
            .into_iter()
            .map(|((component, layer), r)| LayerRollup {
                layer,
                component,
                stats: r.finish(),
            })
            .collect(),
        roles: roles
            .into_iter()
            .map(|((component, role), r)| RoleRollup {
                role,
                component,
                stats: r.finish(),
            })
            .collect(),
        tensors,
        added,
        removed,
        changed_shape_or_dtype,
        metadata_changed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measures() {
        assert_eq!(relative(0.0, 0.0), Some(0.0));
        assert_eq!(relative(0.0, 1.0), None);
        assert_eq!(relative(4.0, 1.0), Some(0.5));
        assert_eq!(relative(f64::INFINITY, 1.0), Some(0.0));
        assert_eq!(relative(1.0, f64::INFINITY), None);
        let s = |a2, b2, ab| Sums {
            a2,
            b2,
            ab,
            ..Sums::default()
        };
        assert_eq!(cosine(&s(0.0, 0.0, 0.0)), Some(1.0));
        assert_eq!(cosine(&s(1.0, 0.0, 0.0)), Some(0.0));
        assert_eq!(cosine(&s(0.0, 1.0, 0.0)), Some(0.0));
        assert_eq!(cosine(&s(4.0, 1.0, -2.0)), Some(-1.0));
        assert_eq!(fraction(0, 0), 0.0);
    }

    #[test]
    fn float_kernels() {
        let a: Vec<u8> = [1.0f32, -2.0, f32::NAN, 0.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let b: Vec<u8> = [1.0f32, -2.5, f32::NAN, -0.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let (changed, s) = float_sums::<4>(&a, &b, |x| f64::from(f32::from_le_bytes(x)));
        assert_eq!(changed, 2);
        assert_eq!(s.nonfinite, 1);
        assert_eq!(s.a2, 5.0);
        assert_eq!(s.d2, 0.25);
        assert_eq!(s.max_abs, 0.5);
    }

    #[test]
    fn bit_kernels() {
        assert_eq!(changed_elements(&[1, 2, 3], &[1, 2, 4], Some(8), 3), 1);
        assert_eq!(
            changed_elements(&[0, 0, 0, 0], &[0, 1, 0, 0], Some(16), 2),
            1
        );
        assert_eq!(
            changed_elements(&[0x00, 0x00], &[0x11, 0x10], Some(4), 4),
            3
        );
        assert_eq!(
            changed_elements(&[0, 0, 0], &[0x01, 0x00, 0x80], Some(6), 4),
            2
        );
        assert_eq!(changed_elements(&[0xff], &[0x00], Some(4), 1), 1);
        assert_eq!(changed_elements(&[1, 2], &[3, 4], None, 5), 2);
    }
}
