//! The integer grids of quantized tensors, and which one a tensor gets.
//!
//! A *linear* grid holds the integer multiples of a step (codecs 5 and 7 variant 8): the
//! absolute error is at most half a step everywhere, so small values lose their relative
//! precision and values below half a step become 0. A *floating* grid keeps `m` fraction bits
//! of every value (codecs 9 and 7 variant 9): the relative error is at most `2^−(m+1)`
//! everywhere and no non-zero value becomes 0. Weights sit in a few binades and take the linear
//! grid (fewer bits for the same norm error); Adam's moments (read in the ratio
//! `m / (√v + ε)`) and tensors whose values span many binades — running variances,
//! heavy-tailed activations statistics — take the floating one.

use dmx_codec::{FloatLayout, fgrid, grid};

use super::values::max_abs;
use crate::names::{Component, component};

/// The integer grid of one quantized tensor.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Grid {
    /// Integer multiples of this step (codec 5; codec 7 variant 8).
    Linear(f64),
    /// This many fraction bits of every value kept (codec 9; codec 7 variant 9).
    Float(u32),
}

impl Grid {
    /// The text form used in chain manifests and reports: the step as an exact decimal
    /// (`"0.000030518509475997192"`), or `"float:M"`.
    pub fn to_text(self) -> String {
        match self {
            Grid::Linear(step) => format!("{step:?}"),
            Grid::Float(m) => format!("float:{m}"),
        }
    }

    /// Parses [`Grid::to_text`]; `None` for anything else (a step must be finite and > 0).
    pub fn from_text(s: &str) -> Option<Grid> {
        if let Some(m) = s.strip_prefix("float:") {
            return m.parse().ok().filter(|&m| m <= 52).map(Grid::Float);
        }
        s.parse()
            .ok()
            .filter(|x: &f64| x.is_finite() && *x > 0.0)
            .map(Grid::Linear)
    }

    /// The integer coordinate of a value of bits `raw` on this grid of width `bits`, `None`
    /// when the value is off the grid (stored exactly).
    pub(crate) fn coordinate(self, layout: FloatLayout, bits: u32, raw: u64) -> Option<i64> {
        match self {
            Grid::Linear(step) => grid::quantize(grid::to_f64(layout, raw), step, bits),
            Grid::Float(m) => fgrid::coordinate(layout, m, raw),
        }
    }

    /// What a value of bits `raw` restores as on this grid of width `bits`: its grid point, or
    /// itself when it is off the grid (stored exactly).
    pub fn snap(self, layout: FloatLayout, bits: u32, raw: u64) -> u64 {
        match self {
            Grid::Linear(step) => grid::quantize(grid::to_f64(layout, raw), step, bits)
                .map_or(raw, |q| grid::dequantize(layout, q, step)),
            Grid::Float(m) => fgrid::coordinate(layout, m, raw)
                .and_then(|q| fgrid::value(layout, m, q))
                .unwrap_or(raw),
        }
    }

    /// This grid for `layout`: a floating grid's fraction bits capped at what the layout has
    /// (a chain manifest may name more), a linear grid as it is.
    pub(crate) fn capped(self, layout: FloatLayout) -> Grid {
        match self {
            Grid::Float(m) => Grid::Float(m.min(fgrid::max_fraction_bits(layout))),
            linear => linear,
        }
    }

    /// The grid a lossy record of an integer mode names (`None` for BFP, casts, and records
    /// without a grid).
    pub fn of_record(l: &dmx_format::Lossy) -> Option<Grid> {
        if l.float_grid {
            Some(Grid::Float(u32::from(l.mantissa_bits)))
        } else if l.step > 0.0 {
            Some(Grid::Linear(l.step))
        } else {
            None
        }
    }
}

impl serde::Serialize for Grid {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match *self {
            Grid::Linear(step) => s.serialize_f64(step),
            Grid::Float(m) => s.serialize_str(&format!("float:{m}")),
        }
    }
}

/// Fraction bits of the floating grid for an integer width: 16-bit grids keep 10 (relative
/// error at most 2^−11, about 4.9e-4, on every value), 32-bit grids every bit of the dtype.
pub fn float_fraction_bits(bits: u32) -> u32 {
    if bits >= 32 {
        23
    } else {
        bits.saturating_sub(6)
    }
}

/// The grid a tensor of `layout` values gets at width `bits` when no other file needs the
/// same coordinates: the floating grid where [`float_bits`] wants it, else the linear grid of
/// step `max |x| / qmax`, which gives weights a smaller error for fewer bits.
pub(crate) fn own_grid(name: &str, layout: FloatLayout, data: &[u8], bits: u32) -> Grid {
    let step = grid::step_for(max_abs(layout, data), bits);
    grid_with_step(name, layout, data, bits, step)
}

/// The linear grid of `step`, or the floating grid when the tensor wants it ([`float_bits`]).
pub(crate) fn grid_with_step(
    name: &str,
    layout: FloatLayout,
    data: &[u8],
    bits: u32,
    step: f64,
) -> Grid {
    match float_bits(name, layout, data, bits, step) {
        Some(m) => Grid::Float(m),
        None => Grid::Linear(step),
    }
}

/// Name segments of running variances (batch norm): small tensors read as `x / √(var + ε)`.
const RUNNING_VARIANCES: &[&str] = &["running_var", "moving_variance"];

/// Name segments of other optimizers' squared averages, moments like Adam's `exp_avg_sq`
/// (which [`component`] recognises).
const OPTIMIZER_SQUARES: &[&str] = &["square_avg", "max_exp_avg_sq", "max_exp_avg_sqs"];

/// The fraction bits of the floating grid a tensor takes at width `bits`, or `None` for the
/// linear grid of `step`:
/// - running variances keep `bits − 1` (15 at int16): every value's error is then at most
///   `2^−bits · |x|`, no more than the linear grid's `step / 2` and far less for small values;
/// - Adam's moments (and other optimizers' squared averages) keep `bits − 6` (10 at int16): the
///   update `m / (√v + ε)` needs every value's relative precision, and a second moment restored
///   as 0 makes it divide by `ε`;
/// - so do tensors whose values span so many binades that the linear grid would leave the
///   median non-zero magnitude fewer than `bits − 12` significant bits (4 at int16).
///
/// Capped at the dtype's fraction bits (int32 keeps F32 exactly).
pub(crate) fn float_bits(
    name: &str,
    layout: FloatLayout,
    data: &[u8],
    bits: u32,
    step: f64,
) -> Option<u32> {
    if !fgrid::supports(layout) || data.is_empty() {
        return None;
    }
    let cap = |m: u32| Some(m.min(fgrid::max_fraction_bits(layout)));
    let segments = crate::names::segments(name);
    let named = |list: &[&str]| segments.iter().any(|s| list.contains(&s.as_str()));
    if named(RUNNING_VARIANCES) {
        return cap(bits.saturating_sub(1));
    }
    let m = float_fraction_bits(bits);
    if optimizer_moment(name) {
        return cap(m);
    }
    // Significant bits of the median on the linear grid: log2(median / step).
    let limit = f64::from(1u32 << m.min(30).saturating_sub(6));
    median_nonzero_below(layout, data, |median| median / step < limit)?.then(|| cap(m))?
}

/// Whether a tensor is an optimizer's moment: Adam's `exp_avg` and `exp_avg_sq`, or another
/// optimizer's squared average.
pub(crate) fn optimizer_moment(name: &str) -> bool {
    matches!(component(name), Component::ExpAvg | Component::ExpAvgSq)
        || crate::names::segments(name)
            .iter()
            .any(|s| OPTIMIZER_SQUARES.contains(&s.as_str()))
}

/// Whether a tensor is one whose small values matter as much as its large ones (a variance,
/// a moment, or values over many binades: what takes the floating grid at int16); BFP then
/// gives each value its own exponent.
pub(crate) fn spans_binades(name: &str, layout: FloatLayout, data: &[u8]) -> bool {
    let step = grid::step_for(max_abs(layout, data), 16);
    float_bits(name, layout, data, 16, step).is_some()
}

/// Whether `below` holds for [`median_nonzero`] (`None` when there is no median), for a
/// `below` that holds for every magnitude under some bound and for none above it (such as
/// `x / step < limit` with `step > 0`): counts the sampled magnitudes it holds for, on their
/// bits, instead of selecting the median. Falls back to the median itself for any other
/// `below` it cannot bracket.
fn median_nonzero_below(
    layout: FloatLayout,
    data: &[u8],
    below: impl Fn(f64) -> bool,
) -> Option<bool> {
    let bits = layout.bits();
    if bits > 32 {
        return median_nonzero(layout, data).map(below);
    }
    let inf = ((1u64 << layout.exp_bits) - 1) << (bits - 1 - layout.exp_bits);
    let value = |b: u64| grid::to_f64(layout, b);
    // The first magnitude (bits) for which `below` fails: 1..=inf, by bisection (monotone).
    let (mut lo, mut hi) = (1u64, inf);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if below(value(mid)) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    let cut = lo;
    // Check the bracket at its ends: `below` true just under `cut`, false at it.
    if (cut > 1 && !below(value(cut - 1))) || (cut < inf && below(value(cut))) {
        return median_nonzero(layout, data).map(below);
    }
    let (mut total, mut under) = (0usize, 0usize);
    for_each_sampled(layout, data, |m| {
        total += 1;
        under += usize::from(m < cut);
    });
    // The median is the sorted sample's element `total / 2`: `below` holds for it exactly
    // when it holds for more than `total / 2` of them.
    (total > 0).then_some(under > total / 2)
}

/// The median finite non-zero magnitude of a sample of at most 65,536 evenly spaced values.
/// Selected on the magnitude bits (sign cleared), which order finite values like their
/// magnitudes, so no value is converted but the median.
fn median_nonzero(layout: FloatLayout, data: &[u8]) -> Option<f64> {
    let mut mags = Vec::with_capacity((data.len() / layout.bytes()).min(SAMPLE));
    for_each_sampled(layout, data, |m| mags.push(m));
    if mags.is_empty() {
        return None;
    }
    let mid = mags.len() / 2;
    let (_, m, _) = mags.select_nth_unstable(mid);
    Some(grid::to_f64(layout, *m))
}

/// Values in the sample of [`median_nonzero`] (at most this many, evenly spaced).
const SAMPLE: usize = 1 << 16;

/// Calls `f` with the magnitude bits (sign cleared) of every finite non-zero value of the
/// evenly spaced sample of `data`, in order.
fn for_each_sampled(layout: FloatLayout, data: &[u8], f: impl FnMut(u64)) {
    let w = layout.bytes();
    let stride = (data.len() / w).div_ceil(SAMPLE).max(1);
    let bits = layout.bits();
    let mag_mask = u64::MAX >> (65 - bits);
    let inf = ((1u64 << layout.exp_bits) - 1) << (bits - 1 - layout.exp_bits);
    #[inline(always)]
    fn walk<const W: usize>(
        data: &[u8],
        stride: usize,
        mask: u64,
        inf: u64,
        mut f: impl FnMut(u64),
    ) {
        let n = data.len() / W;
        let mut i = 0;
        while i < n {
            let m = super::raw(&data[i * W..(i + 1) * W]) & mask;
            if m != 0 && m < inf {
                f(m);
            }
            i += stride;
        }
    }
    match w {
        2 => walk::<2>(data, stride, mag_mask, inf, f),
        4 => walk::<4>(data, stride, mag_mask, inf, f),
        _ => walk::<8>(data, stride, mag_mask, inf, f),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f32s(v: impl IntoIterator<Item = f32>) -> Vec<u8> {
        v.into_iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    #[test]
    fn text_form_round_trips() {
        for g in [
            Grid::Linear(3.0 / 32767.0),
            Grid::Linear(0.5),
            Grid::Float(10),
        ] {
            assert_eq!(Grid::from_text(&g.to_text()), Some(g));
        }
        for bad in ["", "float:", "float:99", "0", "-1", "inf", "NaN", "x"] {
            assert_eq!(Grid::from_text(bad), None, "{bad}");
        }
    }

    /// The median on the bits is the median of the magnitudes as numbers.
    #[test]
    fn median_on_bits_is_the_numeric_median() {
        let reference = |layout: FloatLayout, data: &[u8]| -> Option<f64> {
            let w = layout.bytes();
            let n = data.len() / w;
            let stride = n.div_ceil(1 << 16).max(1);
            let mut mags: Vec<f64> = (0..n)
                .step_by(stride)
                .map(|i| grid::to_f64(layout, crate::lossy::raw(&data[i * w..(i + 1) * w])).abs())
                .filter(|x| x.is_finite() && *x > 0.0)
                .collect();
            if mags.is_empty() {
                return None;
            }
            let mid = mags.len() / 2;
            Some(*mags.select_nth_unstable_by(mid, f64::total_cmp).1)
        };
        let mut rng = dmx_testkit::Rng(7u64);
        for layout in [FloatLayout::BF16, FloatLayout::F16, FloatLayout::F32] {
            for n in [0usize, 1, 2, 5, 1000, 70_000, 200_001] {
                let data = rng.bytes(n * layout.bytes());
                let got = median_nonzero(layout, &data).map(f64::to_bits);
                assert_eq!(
                    got,
                    reference(layout, &data).map(f64::to_bits),
                    "{layout:?} {n}"
                );
            }
        }
    }

    /// Counting against the bracket is the median's test, on every layout and many steps.
    #[test]
    fn median_below_is_the_median_test() {
        let mut rng = dmx_testkit::Rng(11u64);
        for layout in [FloatLayout::BF16, FloatLayout::F16, FloatLayout::F32] {
            for n in [0usize, 1, 2, 5, 1000, 70_000] {
                let data = rng.bytes(n * layout.bytes());
                let median = median_nonzero(layout, &data);
                for step in [1e-30, 1e-5, 3.0 / 32767.0, 0.5, 7.0, 1e20] {
                    for limit in [1.0, 16.0, 1024.0] {
                        let below = |m: f64| m / step < limit;
                        assert_eq!(
                            median_nonzero_below(layout, &data, below),
                            median.map(below),
                            "{layout:?} {n} {step} {limit}"
                        );
                    }
                }
                if let Some(m) = median {
                    // At the median itself: strict and not.
                    assert_eq!(median_nonzero_below(layout, &data, |v| v < m), Some(false));
                    assert_eq!(median_nonzero_below(layout, &data, |v| v <= m), Some(true));
                }
            }
        }
    }

    /// Weight-like values take a linear grid; values spanning many binades, and every second
    /// moment, take the floating one.
    #[test]
    fn grid_choice() {
        let mut s = 1u64;
        let mut next = move || {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (s >> 11) as f64 / (1u64 << 53) as f64
        };
        let weights: Vec<f32> = (0..10_000).map(|_| (next() as f32 - 0.5) * 0.1).collect();
        let wide: Vec<f32> = (0..10_000)
            .map(|_| 10f32.powf(-(next() as f32) * 12.0))
            .collect();
        let w = f32s(weights);
        let v = f32s(wide);
        let l = FloatLayout::F32;
        assert!(matches!(
            own_grid("h.0.mlp.weight", l, &w, 16),
            Grid::Linear(_)
        ));
        assert_eq!(own_grid("h.0.mlp.weight", l, &v, 16), Grid::Float(10));
        assert_eq!(
            own_grid("optimizer.state.3.exp_avg_sq", l, &w, 16),
            Grid::Float(10)
        );
        assert!(matches!(
            own_grid("x", l, &f32s([0.0; 8]), 16),
            Grid::Linear(_)
        ));
        assert_eq!(own_grid("x", l, &v, 32), Grid::Float(23));
    }
}
