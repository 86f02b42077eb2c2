//! Rate–distortion grouping: the BFP encoder that [`encode_rd`] and [`encode_rd_restored`]
//! run.
//!
//! Plain BFP gives every group of `G` values the step of its largest value. For the squared
//! error that is not where bits pay best: a group of small values spends as many bits on
//! precision that barely counts as a group of large ones. This encoder first cuts every group
//! in two halves of `G / 2` values (each half takes the exponent of its own largest value, so
//! its step can only shrink, and so can its error), which leaves the chunk with *less*
//! squared error than plain BFP at `G`. It then spends that margin: it raises the exponent of
//! the halves where one binade coarser saves the most bits per unit of added squared error
//! (a greedy knapsack on the ratio), as long as the chunk's total squared error stays at or
//! below what plain BFP at `(M, G)` would have. The result is written as an ordinary payload
//! with group size `G / 2` (the decoder reads the exponents as they are), so no format change
//! is involved.
//!
//! Guarantees, beyond those of plain BFP at `(M, G / 2)`:
//! - the chunk's squared error is at most plain BFP's at `(M, G)` (computed with a relative
//!   margin of `1e-6` on the saved error, so floating-point rounding cannot cross it);
//! - every value's error is at most `2^(1−M)` times the largest magnitude of its half (a
//!   raised half moves one binade up from the exponent of its largest value, and no higher;
//!   a half whose maximum already carried to the next exponent is never raised), hence of its
//!   group of `G`.
//!
//! It applies when `M <= 8` (all 16-bit dtypes; F32 at small `M`), `G` is even and the chunk
//! is one row; otherwise, or when the estimate says the halves do not pay for their extra
//! exponents, the chunk is coded as plain BFP at `(M, G)`.
//!
//! The halves need not be smaller than plain BFP: a half of small values beside a half of
//! large ones takes its own, much finer step, which costs bits that the squared error barely
//! notices (convolution kernels `[O, I, k, 1]` of a pretrained CNN, where plain BFP flushes
//! such halves to zero, came out 12 % larger). So the plan also estimates plain BFP's bits,
//! and the chunk is coded as plain BFP when the halves' estimate passes it by more than
//! [`PLAIN`].

use super::encode::{encode_inner, for_each_group, with_restored};
use super::{Geo, Params, Shape, group_exponent_of, inv_step, max_magnitude, norm_row};
use crate::FloatLayout;

/// Estimated bits of one more group exponent (the coded exponent difference).
const EXP_BITS: f64 = 2.0;

/// Plain BFP is coded instead of the halves when the halves' estimated bits pass plain BFP's
/// estimate by more than this factor. The estimate puts the halves up to 2 % above plain BFP
/// where the coder finds them smaller (it overrates their mantissa bits); the halves that lose
/// on real weights lose by far more (50–90 % above).
const PLAIN: f64 = 1.02;

/// [`encode`](fn@super::encode) with rate–distortion grouping (see the module docs): never more
/// squared error than [`encode`](fn@super::encode) at `p`, usually fewer bits.
///
/// # Panics
/// As [`encode`](fn@super::encode).
pub fn encode_rd(layout: FloatLayout, data: &[u8], row_len: usize, p: Params) -> (Vec<u8>, f64) {
    encode_planned(layout, data, row_len, p, None)
}

/// [`encode_rd`], also returning the bytes the decoder restores, as
/// [`encode_restored`](super::encode_restored) does.
///
/// # Panics
/// As [`encode`](fn@super::encode).
pub fn encode_rd_restored(
    layout: FloatLayout,
    data: &[u8],
    row_len: usize,
    p: Params,
) -> (Vec<u8>, f64, Vec<u8>) {
    with_restored(data.len(), |r| encode_planned(layout, data, row_len, p, r))
}

/// The halves and raises of [`plan`] when it finds they pay and their estimated bits are
/// within [`PLAIN`] of plain BFP's, else plain BFP at `p`.
fn encode_planned(
    layout: FloatLayout,
    data: &[u8],
    row_len: usize,
    p: Params,
    restored: Option<&mut [u8]>,
) -> (Vec<u8>, f64) {
    match plan(layout, data, row_len, p) {
        Some(planned) if planned.bits <= planned.plain_bits * PLAIN => encode_inner(
            layout,
            data,
            row_len,
            halved(p),
            Some(&planned.raise),
            restored,
        ),
        _ => encode_inner(layout, data, row_len, p, None, restored),
    }
}

/// What [`plan`] found: the raise of every half and the estimated bits of the halves and of
/// plain BFP (mantissas and group exponents).
struct Planned {
    raise: Vec<u8>,
    bits: f64,
    plain_bits: f64,
}

fn halved(p: Params) -> Params {
    Params {
        group_size: p.group_size / 2,
        ..p
    }
}

/// The exponent raise of every half with the bit estimates, or `None` for plain BFP.
fn plan(layout: FloatLayout, data: &[u8], row_len: usize, p: Params) -> Option<Planned> {
    if super::check(layout, p).is_err() || !data.len().is_multiple_of(layout.bytes()) {
        // The encoder reports these.
        return None;
    }
    let g = Geo::new(layout, p.mantissa_bits);
    let count = data.len() / layout.bytes();
    if g.low != 0
        || p.group_size < 2
        || !p.group_size.is_multiple_of(2)
        || norm_row(count, row_len) != count
    {
        return None;
    }
    let gs = p.group_size as usize;
    crate::cpu::dispatch(
        crate::cpu::Level::detected(),
        #[inline(always)]
        || {
            if layout.bytes() == 2 {
                plan_width::<2>(&g, data, count, gs)
            } else {
                plan_width::<4>(&g, data, count, gs)
            }
        },
    )
}

/// One half's candidate raise: bits saved, squared error added, index.
struct Candidate {
    saved: f32,
    added: f64,
    half: u32,
}

#[inline(always)]
fn plan_width<const B: usize>(g: &Geo, data: &[u8], count: usize, gs: usize) -> Option<Planned> {
    let whole = Shape::new(count, count, gs);
    let halves = Shape::new(count, count, gs / 2);
    let mut raise = vec![0u8; halves.groups];
    let mut cands = Vec::with_capacity(halves.groups);
    let (mut budget, mut base) = (0f64, 0f64);
    // Estimated bits of the halves at their own exponents, and of plain BFP's groups.
    let (mut own_bits, mut plain_bits) = (0f64, 0f64);
    let mut half = 0usize;
    // Inlined, like everything under `cpu::dispatch`: a closure left out of line is compiled
    // without the dispatched CPU features (this one then ran without AVX2).
    for_each_group::<B>(
        data,
        whole,
        #[inline(always)]
        |vals| {
            let (first, second) = vals.split_at(vals.len().min(gs / 2));
            let maxes = [max_magnitude(g, first), max_magnitude(g, second)];
            let e_whole = group_exponent_of(g, vals, maxes[0].max(maxes[1]));
            for (part, max_mag) in [(first, maxes[0]), (second, maxes[1])] {
                if part.is_empty() {
                    break;
                }
                let idx = half;
                half += 1;
                // A raw half (NaN or ±Inf) is exact; plain BFP stores the whole group raw too.
                let Some(e) = group_exponent_of(g, part, max_mag) else {
                    continue;
                };
                let (own, up) = cost(g, part, e);
                base += own.sse;
                own_bits += f64::from(own.bits);
                let whole_at = match e_whole {
                    Some(ew) if ew == e => Some((own.sse, own.bits)),
                    Some(ew) if ew == e + 1 => Some((up.sse, up.bits)),
                    Some(ew) => {
                        let at = cost(g, part, ew).0;
                        Some((at.sse, at.bits))
                    }
                    None => None,
                };
                match whole_at {
                    Some((sse, bits)) => {
                        budget += sse;
                        plain_bits += f64::from(bits);
                    }
                    // Plain BFP stores the group raw.
                    None => plain_bits += (part.len() * B * 8) as f64,
                }
                // Raise only a half whose exponent is its maximum's (no carry), within range.
                let top = (max_mag >> g.f).max(1);
                let saved = own.bits - up.bits;
                if e == top && e < g.emax && saved > 0.0 {
                    cands.push(Candidate {
                        saved,
                        added: (up.sse - own.sse).max(0.0),
                        half: idx as u32,
                    });
                }
            }
        },
    );
    debug_assert_eq!(half, halves.groups);
    if base > budget {
        return None;
    }
    // Most bits saved per unit of added error first: candidates fall into buckets of an
    // eighth of an octave of that ratio (the top 11 bits of its `f32`, below 2048 for any
    // positive value), taken from the best bucket down while they fit, in order within a
    // bucket. A raise that adds no error is free (+Inf, key 2040, the best bucket in use).
    // The added error is taken relative to the budget, so the ratio sits well inside the
    // `f32` range whatever the dtype's units (F16's image units are tiny).
    let key = |c: &Candidate| {
        let r = if c.added > 0.0 {
            (f64::from(c.saved) * budget / c.added) as f32
        } else {
            f32::INFINITY
        };
        ((r.to_bits() >> 20) as usize).min(2047)
    };
    let mut buckets = vec![0u32; 2048];
    for c in &cands {
        buckets[key(c)] += 1;
    }
    let mut at = 0u32;
    for b in buckets.iter_mut().rev() {
        let n = *b;
        *b = at;
        at += n;
    }
    let mut order = vec![0u32; cands.len()];
    for (i, c) in cands.iter().enumerate() {
        let b = &mut buckets[key(c)];
        order[*b as usize] = i as u32;
        *b += 1;
    }
    let mut slack = (budget - base) - budget * 1e-6;
    let mut saved = 0f64;
    for &i in &order {
        let c = &cands[i as usize];
        if c.added <= slack {
            slack -= c.added;
            saved += f64::from(c.saved);
            raise[c.half as usize] = 1;
        }
    }
    let extra = (halves.groups - whole.groups) as f64 * EXP_BITS;
    (saved > extra).then_some(Planned {
        raise,
        bits: own_bits - saved + halves.groups as f64 * EXP_BITS,
        plain_bits: plain_bits + whole.groups as f64 * EXP_BITS,
    })
}

/// Squared error of a half at exponent `e` (image units, see `Geo::s32`) and a bit estimate.
pub(super) struct Cost {
    pub(super) sse: f64,
    bits: f32,
}

/// The error and estimated bits of quantizing `vals` at exponent `e` and at `e + 1`, exactly
/// as the encoder quantizes (for `M <= 8`): the estimate is `log2(1 + q) + 1` per non-zero
/// `q` (Mitchell's approximation of the logarithm). The second is meaningless when
/// `e` is the largest finite exponent.
#[inline(always)]
pub(super) fn cost(g: &Geo, vals: &[u32], e: u32) -> (Cost, Cost) {
    const MAGIC: f32 = 12_582_912.0;
    let k = g.bias as i32 + g.m as i32 - 1 - e as i32 + g.adj as i32;
    let ka = k.min(127);
    let a = f32::from_bits(((127 + ka) as u32) << 23);
    let b = f32::from_bits(((127 + k - ka) as u32) << 23);
    let mag_mask = (1u32 << g.sign_shift) - 1;
    // Everything stays in f32 (SSE2 has no unsigned 32-bit minimum): `q` is rounded to
    // nearest even by adding 1.5 · 2^23 after clamping `y` to `2^M − 1`, which commutes
    // with the rounding since the bound is an integer.
    let qmax = ((1u32 << g.m) - 1) as f32;
    // The values are finite (a half with NaN or ±Inf is stored raw and never costed), so
    // the minima are plain comparisons: `f32::min`'s NaN handling cost three instructions
    // each in this loop.
    let min = |a: f32, b: f32| if a < b { a } else { b };
    let bits_of = |q: f32| {
        // log2(1 + q) by Mitchell's approximation, plus one bit of sign when q > 0.
        let l = ((1.0 + q).to_bits() as i32 as f32) * (1.0 / 8_388_608.0) - 127.0;
        l + min(q, 1.0)
    };
    let round = |y: f32| (min(y, qmax) + MAGIC) - MAGIC;
    // Eight independent accumulators per sum, so the loop vectorizes (a float sum cannot
    // be reordered otherwise).
    let mut acc = [[0f32; 8]; 4];
    let mut one = |lane: usize, v: u32| {
        let y = f32::from_bits((v & mag_mask) << g.s32) * a * b;
        let q0 = round(y);
        let d0 = y - q0;
        // One binade up: `y / 2` is exact (or far below one half).
        let y1 = y * 0.5;
        let q1 = round(y1);
        let d1 = y1 - q1;
        acc[0][lane] += d0 * d0;
        acc[1][lane] += bits_of(q0);
        acc[2][lane] += d1 * d1;
        acc[3][lane] += bits_of(q1);
    };
    let mut it = vals.chunks_exact(8);
    for c in &mut it {
        for (lane, &v) in c.iter().enumerate() {
            one(lane, v);
        }
    }
    for (lane, &v) in it.remainder().iter().enumerate() {
        one(lane, v);
    }
    let [sse0, bits0, sse1, bits1] = acc.map(|a| a.iter().sum::<f32>());
    // Back to image units: one step is `1 / inv_step`, twice that one binade up.
    let step = 1.0 / inv_step(g, e);
    let sq = step * step;
    (
        Cost {
            sse: f64::from(sse0) * sq,
            bits: bits0,
        },
        Cost {
            sse: f64::from(sse1) * sq * 4.0,
            bits: bits1,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cost_matches_the_encoder_rounding() {
        // The f32 path against rounding to nearest even in f64.
        let g = Geo::new(FloatLayout::BF16, 6);
        // Magnitudes from 2^-9 to just below 2^0 (exponent fields 0x76..=0x7E).
        let vals: Vec<u32> = (0u32..2000)
            .map(|i| 0x3B00 + (i * 37) % 0x480 + (i & 1) * 0x8000)
            .collect();
        let e = 0x7E;
        let c = cost(&g, &vals, e).0;
        let step = 1.0 / inv_step(&g, e);
        let mut sse = 0f64;
        for &v in &vals {
            let x = f64::from(f32::from_bits((v & 0x7FFF) << g.s32));
            let y = x / step;
            let q = y.round_ties_even().min(63.0);
            sse += (x - q * step) * (x - q * step);
        }
        assert!((c.sse - sse).abs() <= sse * 1e-5, "{} vs {sse}", c.sse);
    }
}
