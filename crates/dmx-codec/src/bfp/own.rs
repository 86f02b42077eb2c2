//! Own exponents: the BFP writer for tensors whose small values matter as much as their large
//! ones ([`encode_own`], [`encode_own_restored`]).
//!
//! Optimizer moments, running variances and other tensors that span many binades cannot share
//! an exponent: a group's largest value would flush its small neighbours to 0 (a second moment
//! restored as 0 makes Adam divide by `ε`). Such chunks are coded in groups of one value, each
//! value with its own exponent, so no normal value is restored as 0 and each keeps a relative
//! error below `2^−M`, far less error than the `(M, G)` the caller asked for.
//!
//! For the chunks it is given (the engine gives it optimizer moments; a model's own running
//! variances keep `M`, see docs/CODECS.md §8.2.8), that margin is then spent the only way
//! that keeps the coding free of side information: the whole chunk is coded at `M − 1`
//! magnitude bits (one bit less per value, every value still
//! within `2^(1−M)` of itself, the bound BFP states relative to the group's largest magnitude)
//! when its squared error then stays at most what plain BFP at `(M, G)` would give the chunk,
//! less a relative margin of `1e-6`, and no non-zero value (a deep subnormal) would become 0.
//! Otherwise it is coded at `M`. Mixing the two within a chunk does not pay: the magnitude
//! tables would have to cover both ranges of magnitudes, which costs about what is saved.
//!
//! The payload is an ordinary one (group size 1, its own `M`); no format change is involved.
//! [`own_restored`] computes the values such a payload restores without coding it (with its
//! own exponent a value is rounded on its own binade's grid, in integers); the engine stores
//! those with the lossless float codecs, which is smaller on optimizer moments than the
//! payload of groups of one and several times faster.

use super::encode::{encode_inner, load_group, with_restored};
use super::rd::cost;
use super::{Geo, Params, Shape, group_exponent_of, inv_step, max_magnitude, norm_row, qmag};
use crate::FloatLayout;

/// BFP with every value its own exponent (groups of one), at `M − 1` magnitude bits where that
/// keeps the chunk's squared error at most plain BFP's at `p` (see the module docs), else at
/// `p.mantissa_bits`. `p.group_size` is the group size whose error is the budget.
///
/// # Panics
/// As [`encode`](fn@super::encode).
pub fn encode_own(layout: FloatLayout, data: &[u8], row_len: usize, p: Params) -> (Vec<u8>, f64) {
    encode_inner(
        layout,
        data,
        row_len,
        own_params(layout, data, row_len, p),
        None,
        None,
    )
}

/// [`encode_own`], also returning the bytes the decoder restores, as
/// [`encode_restored`](super::encode_restored) does.
///
/// # Panics
/// As [`encode`](fn@super::encode).
pub fn encode_own_restored(
    layout: FloatLayout,
    data: &[u8],
    row_len: usize,
    p: Params,
) -> (Vec<u8>, f64, Vec<u8>) {
    let own = own_params(layout, data, row_len, p);
    with_restored(data.len(), |r| {
        encode_inner(layout, data, row_len, own, None, r)
    })
}

/// The bytes [`encode_own`]'s payload restores, without coding it (the quantization pass
/// alone), and the magnitude bits it uses (`M − 1` or `M`). Each value is rounded on its own
/// binade's grid, so the restored chunk is an ordinary float chunk that a lossless float
/// codec codes exactly; the engine stores optimizer moments that way (smaller and faster than
/// the BFP payload of groups of one; docs/CODECS.md §8.2.8).
///
/// # Panics
/// As [`encode`](fn@super::encode).
pub fn own_restored(layout: FloatLayout, data: &[u8], row_len: usize, p: Params) -> (Vec<u8>, u32) {
    if let Err(e) = super::check(layout, p) {
        panic!("bfp::encode: {e}");
    }
    assert!(
        data.len().is_multiple_of(layout.bytes()),
        "bfp::encode: data is not whole values"
    );
    let mut restored = vec![0u8; data.len()];
    let m = round_chosen(layout, data, row_len, p, &mut restored);
    (restored, m)
}

/// The choice of the module docs, made and applied: rounds `data` into `restored` (as long)
/// at `M − 1` when that keeps the chunk's squared error within plain BFP's at `p` and no
/// non-zero value becomes 0, else at `M`, and returns the magnitude bits used. `p` must be
/// valid for `layout` and `data` whole values.
fn round_chosen(
    layout: FloatLayout,
    data: &[u8],
    row_len: usize,
    p: Params,
    restored: &mut [u8],
) -> u32 {
    let m = p.mantissa_bits;
    if m > 2 {
        // Round at `M − 1` first, measuring its error in the same pass: on optimizer
        // moments that is the rounding kept, so the values are visited once. (M = 2 has no
        // bit to spare.)
        let count = data.len() / layout.bytes();
        let shape = Shape::new(count, norm_row(count, row_len), p.group_size as usize);
        let coarse = Geo::new(layout, m - 1);
        let (sse, flushed) = if layout.bytes() == 2 {
            round_own_measured::<2>(&coarse, shape, data, restored)
        } else {
            round_own_measured::<4>(&coarse, shape, data, restored)
        };
        if !flushed && budget_covers(layout, data, shape, p, sse) {
            return m - 1;
        }
    }
    let g = Geo::new(layout, m);
    if layout.bytes() == 2 {
        round_own::<2>(&g, data, restored);
    } else {
        round_own::<4>(&g, data, restored);
    }
    m
}

/// The rounding of [`round_own`] for one layout and `M`: a value's bits to the bits it
/// restores.
struct OwnRound {
    mag_mask: u32,
    k: u32,
    half: u32,
    inf: u32,
    top: u32,
}

impl OwnRound {
    #[inline(always)]
    fn new(g: &Geo) -> Self {
        let k = g.f + 1 - g.m;
        Self {
            mag_mask: (1u32 << g.sign_shift) - 1,
            k,
            half: (1u32 << k) >> 1,
            inf: g.exp_ones << g.f,
            // The largest finite magnitude on the grid: `2^M − 1` steps at `emax`.
            top: (g.emax << g.f) | (((1u32 << g.f) - 1) >> k << k),
        }
    }

    #[inline(always)]
    fn round(&self, x: u32) -> u32 {
        let (mag_mask, k) = (self.mag_mask, self.k);
        let mag = x & mag_mask;
        if mag >= self.inf {
            return x;
        }
        let r = if k == 0 {
            mag
        } else {
            ((mag + self.half - 1 + ((mag >> k) & 1)) >> k << k).min(self.top)
        };
        if r == 0 && mag != 0 {
            0
        } else {
            (x & !mag_mask) | r
        }
    }
}

/// [`round_own`] at `g` (into `out`), returning the squared error in image units, summed
/// group by group of `shape`, and whether a non-zero value becomes 0. A value's error is
/// the difference of the images (`f32::from_bits(magnitude << s32)`) of its magnitude and
/// of the restored one: both are exact in `f64`, and so is their difference, which is the
/// distance to the grid in units of the value's binade, times the unit. The tests hold it,
/// bit for bit, to `single_sse`, which counts those distances in integers.
fn round_own_measured<const B: usize>(
    g: &Geo,
    shape: Shape,
    data: &[u8],
    out: &mut [u8],
) -> (f64, bool) {
    let own = OwnRound::new(g);
    let image = |mag: u32| f64::from(f32::from_bits(mag << g.s32));
    let (mut sse, mut flushed) = (0f64, false);
    for i in 0..shape.groups {
        let (start, len) = shape.group(i);
        let range = start * B..(start + len) * B;
        let mut group = 0f64;
        for (v, o) in data[range.clone()]
            .chunks_exact(B)
            .zip(out[range].chunks_exact_mut(B))
        {
            let mut w = [0u8; 4];
            w[..B].copy_from_slice(v);
            let x = u32::from_le_bytes(w);
            let y = own.round(x);
            o.copy_from_slice(&y.to_le_bytes()[..B]);
            let mag = x & own.mag_mask;
            if mag < own.inf {
                let ymag = y & own.mag_mask;
                let d = image(mag) - image(ymag);
                group += d * d;
                flushed |= ymag == 0 && mag != 0;
            }
        }
        sse += group;
    }
    (sse, flushed)
}

/// What BFP in groups of one restores (into `out`), value by value and in integers: with its
/// own exponent a group's largest value is the value itself, so it is rounded to nearest,
/// ties to even, at `2^(F + 1 − M)` units of its significand, which on the bit pattern is a
/// rounding of the magnitude bits (a carry out of the fraction moves it to the next binade,
/// which is what the encoder's choice between saturating and raising the exponent picks for
/// a single value; subnormals round on the grid of the smallest normal binade, as theirs).
/// At the largest finite exponent a carry saturates to `2^M − 1` steps, so nothing becomes
/// ±Inf; a non-zero value rounded to zero becomes `+0`; NaN and ±Inf are kept.
pub(super) fn round_own<const B: usize>(g: &Geo, data: &[u8], out: &mut [u8]) {
    let own = OwnRound::new(g);
    for (v, o) in data.chunks_exact(B).zip(out.chunks_exact_mut(B)) {
        let mut w = [0u8; 4];
        w[..B].copy_from_slice(v);
        let y = own.round(u32::from_le_bytes(w));
        o.copy_from_slice(&y.to_le_bytes()[..B]);
    }
}

/// The parameters [`encode_own`] codes the chunk with: group size 1, and the `M − 1` or `M`
/// of [`round_chosen`] (whose rounding is thrown away: the encoder quantizes again).
fn own_params(layout: FloatLayout, data: &[u8], row_len: usize, p: Params) -> Params {
    let at = |mantissa_bits| Params {
        mantissa_bits,
        group_size: 1,
    };
    if super::check(layout, p).is_err() || !data.len().is_multiple_of(layout.bytes()) {
        // The encoder reports these.
        return at(p.mantissa_bits);
    }
    let mut scratch = vec![0u8; data.len()];
    at(round_chosen(layout, data, row_len, p, &mut scratch))
}

/// Whether `sse` (the own exponents' squared error at `M − 1`) is at most plain BFP's at
/// `p` over the groups of `shape`, less a relative margin of `1e-6`.
fn budget_covers(layout: FloatLayout, data: &[u8], shape: Shape, p: Params, sse: f64) -> bool {
    let g = Geo::new(layout, p.mantissa_bits);
    // The margin covers the rounding of the budget's `f32` sums (about 1e-7 relative).
    let covers = |budget: f64| sse <= budget - budget * 1e-6;
    // The budget, summed group by group in order, only grows (and so does `covers`'s
    // threshold): once it covers `sse` the whole chunk's does. On optimizer moments plain
    // BFP's error passes the own exponents' after a small share of the groups.
    let mut budget = 0f64;
    let mut vals = vec![0u32; shape.gs];
    for i in 0..shape.groups {
        let (start, len) = shape.group(i);
        let vals = &mut vals[..len];
        if layout.bytes() == 2 {
            load_group::<2>(data, start, vals);
        } else {
            load_group::<4>(data, start, vals);
        }
        budget += group_sse(&g, vals);
        if covers(budget) {
            return true;
        }
    }
    false
}

/// The squared error (in the image units of `Geo::s32`) of one group of plain BFP, as the
/// encoder quantizes it: exact in `f64`, or for `M <= 8` from the vectorized `f32` sums of
/// the rate–distortion planner (within about 1e-7 relative).
fn group_sse(g: &Geo, vals: &[u32]) -> f64 {
    // A raw group (NaN or ±Inf) is exact.
    let Some(e) = group_exponent_of(g, vals, max_magnitude(g, vals)) else {
        return 0.0;
    };
    if g.m <= 8 {
        return cost(g, vals, e).0.sse;
    }
    let inv = inv_step(g, e);
    let mag_mask = (1u32 << g.sign_shift) - 1;
    let qmax = (1u32 << g.m) - 1;
    let mut sse = 0f64;
    for &v in vals {
        // The `f32` image times a power of two is exact, and `qmag` rounds it as the encoder.
        let y = f64::from(f32::from_bits((v & mag_mask) << g.s32)) * inv;
        let q = f64::from(qmag(g, v, inv).min(qmax));
        sse += (y - q) * (y - q);
    }
    sse / (inv * inv)
}

/// The squared error (image units) of `vals` coded in groups of one, and whether a non-zero
/// value becomes 0, in integers: a value's error is the distance of its significand to the
/// nearest multiple of the step, `2^(F + 1 − M)` units of its own binade (a carry to the next
/// binade lands on a multiple too), except that at the largest finite exponent a carry
/// saturates to `2^M − 1` steps. The reference the tests hold `round_own_measured` to.
#[cfg(test)]
fn single_sse(g: &Geo, vals: &[u32]) -> (f64, bool) {
    let mag_mask = (1u32 << g.sign_shift) - 1;
    let frac = (1u32 << g.f) - 1;
    let k = g.f + 1 - g.m;
    let unit = 1u32 << k;
    let top = ((1u32 << g.m) - 1) << k;
    // One significand unit of binade `e` in image units is `2^(e − bias − F − adj)`.
    let low = i64::from(g.bias + g.f + g.adj);
    let (mut sse, mut flushed) = (0f64, false);
    for &v in vals {
        let mag = v & mag_mask;
        let e = mag >> g.f;
        if e >= g.exp_ones {
            continue;
        }
        let sig = (mag & frac) | (u32::from(e != 0) << g.f);
        let q = super::rne(sig, k);
        let d = if q >> g.m != 0 && e == g.emax {
            sig - top
        } else {
            let r = sig & (unit - 1);
            r.min(unit - r)
        };
        flushed |= q == 0 && mag != 0;
        let scale = f64::from_bits(((1023 + i64::from(e.max(1)) - low) as u64) << 52);
        let x = f64::from(d) * scale;
        sse += x * x;
    }
    (sse, flushed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bfp::encode::for_each_group;
    use crate::bfp::tests::{from_bytes, pseudo_u32, random_values, sq_error, to_bytes};
    use crate::bfp::{decode, encode, encode_restored, max_mantissa_bits};
    use crate::grid;

    /// Plain BFP's squared error at `p` and whether a non-zero value becomes 0 (groups of
    /// one only), over rows of `row` values.
    fn plain_sse(layout: FloatLayout, data: &[u8], row: usize, p: Params) -> (f64, bool) {
        let g = Geo::new(layout, p.mantissa_bits);
        let shape = Shape::new(data.len() / layout.bytes(), row, p.group_size as usize);
        let (mut sse, mut flushed) = (0f64, false);
        let add = |vals: &[u32]| {
            if p.group_size == 1 {
                let (s, f) = single_sse(&g, vals);
                sse += s;
                flushed |= f;
            } else {
                sse += group_sse(&g, vals);
            }
        };
        match layout.bytes() {
            2 => for_each_group::<2>(data, shape, add),
            _ => for_each_group::<4>(data, shape, add),
        }
        (sse, flushed)
    }

    fn bf16(x: f64) -> u32 {
        u32::from(half::bf16::from_f64(x).to_bits())
    }

    /// Second-moment-like BF16 values: positive, over many binades, in runs of similar size.
    fn moments(n: usize) -> Vec<u32> {
        pseudo_u32(n, 17)
            .iter()
            .enumerate()
            .map(|(i, &r)| {
                let u = f64::from(r) / f64::from(u32::MAX);
                let level = -20.0 - 10.0 * ((i / 64) % 5) as f64 / 4.0;
                bf16((2f64).powf(level + 6.0 * u))
            })
            .collect()
    }

    #[test]
    fn plain_sse_is_what_the_encoder_restores() {
        let cases = [
            (FloatLayout::BF16, moments(5000)),
            (
                FloatLayout::BF16,
                random_values(FloatLayout::BF16, 5000, 1, false),
            ),
            (
                FloatLayout::F16,
                random_values(FloatLayout::F16, 5000, 2, false),
            ),
            (
                FloatLayout::F32,
                random_values(FloatLayout::F32, 5000, 3, false),
            ),
        ];
        for (layout, vals) in &cases {
            let data = to_bytes(*layout, vals);
            for (m, gs) in [(6, 32), (5, 1), (2, 7), (8, 1), (2, 1), (12, 16), (11, 1)] {
                if m > max_mantissa_bits(*layout) {
                    continue;
                }
                let p = Params {
                    mantissa_bits: m,
                    group_size: gs,
                };
                let (_, _, restored) = encode_restored(*layout, &data, 0, p);
                // In the image units of `Geo::s32`: F16 values sit 112 binades down.
                let image = if *layout == FloatLayout::F16 {
                    2f64.powi(-224)
                } else {
                    1.0
                };
                let exact = sq_error(*layout, vals, &restored) * image;
                let value = |v: u32| grid::to_f64(*layout, u64::from(v));
                let zeroed = vals
                    .iter()
                    .zip(from_bytes(*layout, &restored))
                    .any(|(&x, y)| value(x) != 0.0 && value(y) == 0.0);
                let (sse, flushed) = plain_sse(*layout, &data, 5000, p);
                let tag = format!("{layout:?} M={m} G={gs}");
                assert!(
                    (sse - exact).abs() <= exact * 2e-7,
                    "{tag}: {sse} vs {exact}"
                );
                if gs == 1 {
                    assert_eq!(flushed, zeroed, "{tag}");
                }
            }
        }
    }

    /// The fused rounding measures exactly what `single_sse` sums, group by group, and
    /// restores what `round_own` does, on every layout, with specials, subnormals and values
    /// that carry into the next binade or saturate at the largest one.
    #[test]
    fn measured_rounding_sums_what_single_sse_sums() {
        let specials = |layout: FloatLayout| -> Vec<u32> {
            let bits = layout.bits();
            let f = bits - 1 - layout.exp_bits;
            let ones = (1u32 << layout.exp_bits) - 1;
            let sign = 1u32 << (bits - 1);
            let mut v = vec![
                0,
                sign,
                ones << f,
                sign | ones << f,
                (ones << f) | 1,
                1,
                3,
                sign | 5,
            ];
            // The largest finite magnitudes (saturate) and values just below a binade edge.
            let top = ((ones - 1) << f) | ((1 << f) - 1);
            v.extend([top, top - 1, sign | top, (7 << f) - 1, (9 << f) - 1]);
            v
        };
        for layout in [FloatLayout::BF16, FloatLayout::F16, FloatLayout::F32] {
            let mut vals = random_values(layout, 3001, 1, true);
            vals.extend(random_values(layout, 2003, 2, false));
            vals.extend(specials(layout));
            if layout.bytes() == 2 {
                vals.extend(moments(997).iter().map(|&x| {
                    if layout == FloatLayout::F16 {
                        x & 0x7FFF
                    } else {
                        x
                    }
                }));
            }
            let data = to_bytes(layout, &vals);
            let count = vals.len();
            for m in 3..=max_mantissa_bits(layout) {
                for gs in [1usize, 7, 32] {
                    let shape = Shape::new(count, count, gs);
                    let coarse = Geo::new(layout, m - 1);
                    let (mut want_sse, mut want_flushed) = (0f64, false);
                    let b = layout.bytes();
                    for i in 0..shape.groups {
                        let (start, len) = shape.group(i);
                        let group = from_bytes(layout, &data[start * b..(start + len) * b]);
                        let (s, f) = single_sse(&coarse, &group);
                        want_sse += s;
                        want_flushed |= f;
                    }
                    let mut want = vec![0u8; data.len()];
                    let mut got = vec![0u8; data.len()];
                    let (sse, flushed) = if b == 2 {
                        round_own::<2>(&coarse, &data, &mut want);
                        round_own_measured::<2>(&coarse, shape, &data, &mut got)
                    } else {
                        round_own::<4>(&coarse, &data, &mut want);
                        round_own_measured::<4>(&coarse, shape, &data, &mut got)
                    };
                    assert_eq!(sse.to_bits(), want_sse.to_bits(), "{layout:?} M={m} G={gs}");
                    assert_eq!(flushed, want_flushed, "{layout:?} M={m} G={gs}");
                    assert!(
                        got == want,
                        "{layout:?} M={m} G={gs}: restored bytes differ"
                    );
                }
            }
        }
    }

    #[test]
    fn moments_lose_a_bit_within_the_budget_and_none_becomes_zero() {
        let vals = moments(20_000);
        let data = to_bytes(FloatLayout::BF16, &vals);
        let p = Params {
            mantissa_bits: 6,
            group_size: 32,
        };
        let (payload, _, restored) = encode_own_restored(FloatLayout::BF16, &data, 0, p);
        let mut out = vec![0u8; data.len()];
        decode(&payload, &mut out).unwrap();
        assert_eq!(out, restored);
        let (plain, _, plain_restored) = encode_restored(FloatLayout::BF16, &data, 0, p);
        let (one, _, _) = encode_restored(
            FloatLayout::BF16,
            &data,
            0,
            Params {
                mantissa_bits: 6,
                group_size: 1,
            },
        );
        // At M − 1: smaller than groups of one at M, within plain BFP's error at (M, G).
        assert!(
            payload.len() < one.len() * 19 / 20,
            "{} vs {}",
            payload.len(),
            one.len()
        );
        let sse = sq_error(FloatLayout::BF16, &vals, &restored);
        assert!(sse <= sq_error(FloatLayout::BF16, &vals, &plain_restored));
        assert!(plain.len() < payload.len());
        for (&x, y) in vals.iter().zip(from_bytes(FloatLayout::BF16, &restored)) {
            let (x, y) = (
                grid::to_f64(FloatLayout::BF16, u64::from(x)),
                grid::to_f64(FloatLayout::BF16, u64::from(y)),
            );
            assert!(y != 0.0);
            assert!((x - y).abs() <= x.abs() * 2f64.powi(-5), "{x} → {y}");
        }
    }

    #[test]
    fn values_of_one_binade_keep_m_bits() {
        // All values in [1, 2): plain BFP at (M, G) has the same step as one exponent per
        // value, so there is no budget for a coarser one.
        let vals: Vec<u32> = (0..4096u32)
            .map(|i| bf16(1.0 + f64::from(i % 127) / 128.0))
            .collect();
        let data = to_bytes(FloatLayout::BF16, &vals);
        let p = Params {
            mantissa_bits: 6,
            group_size: 32,
        };
        let (payload, _) = encode_own(FloatLayout::BF16, &data, 0, p);
        let one = Params {
            mantissa_bits: 6,
            group_size: 1,
        };
        assert_eq!(payload, encode(FloatLayout::BF16, &data, 0, one).0);
    }

    #[test]
    fn deep_subnormals_are_not_flushed() {
        // F32 values over the whole range, the smallest a subnormal of 1.5 · 2^20 units:
        // 0.75 of a step at M = 3 (kept), 0.375 of one at M = 2 (it would become 0), so the
        // chunk keeps M although the error budget would allow M − 1.
        let vals: Vec<u32> = (0..3000u32).map(|i| 0x0018_0000 + i * 700_000).collect();
        let data = to_bytes(FloatLayout::F32, &vals);
        let p = Params {
            mantissa_bits: 3,
            group_size: 64,
        };
        let (payload, _, restored) = encode_own_restored(FloatLayout::F32, &data, 0, p);
        let at = |m| Params {
            mantissa_bits: m,
            group_size: 1,
        };
        let budget = plain_sse(FloatLayout::F32, &data, 3000, p).0;
        assert!(plain_sse(FloatLayout::F32, &data, 3000, at(2)).0 < budget);
        assert!(plain_sse(FloatLayout::F32, &data, 3000, at(2)).1);
        assert_eq!(payload, encode(FloatLayout::F32, &data, 0, at(3)).0);
        for (&x, y) in vals.iter().zip(from_bytes(FloatLayout::F32, &restored)) {
            let (x, y) = (f32::from_bits(x), f32::from_bits(y));
            assert!(x == 0.0 || y != 0.0, "{x:e} became 0");
        }
    }
}
