//! Deltas between two same-shape tensors: a *target* chunk coded relative to the *base* chunk
//! at the same position.
//!
//! Lossless variants ([`encode`]), the smallest of the candidates wins:
//!
//! * **order** — every float's bits map to an integer that is monotone in the float value
//!   (`key = bits ^ (sign ? 0x7FF…F : 0)` read as a signed integer of the value's width, a
//!   bijection on all bit patterns: NaN payloads and −0 round-trip). The difference
//!   `key(target) − key(base)` (wrapping at the value width), zigzagged, is coded by
//!   [`crate::ints`] with one Huffman table per *exponent class* of the base value: the size of
//!   a difference in ulps depends on the base's exponent, so per-class tables save about
//!   0.7 bit per value on real weight deltas.
//! * **xor-float** — the XOR of the raw bits, coded by the field-split float codec
//!   ([`crate::float`]).
//! * **zstd** — the XOR or the element-wise wrapping difference (1, 2, 4 or 8 byte elements) of
//!   the bytes, one zstd frame (sparse changes, integer and bool tensors).
//! * **same** — target equals base.
//!
//! Quantized variant ([`encode_quantized`]): base and target on the shared integer grid of
//! [`crate::grid`]; the residual `q_target − q_base` per value is coded by [`crate::ints`],
//! values off the grid are stored exactly (escapes). [`encode_float_quantized`] does the same
//! on the floating grid of [`crate::fgrid`].
//!
//! Payload layouts (first byte = variant; varints are LEB128):
//!
//! ```text
//! 0 same:      varint byte_len
//! 1 order:     u8 bytes | u8 exp_bits | u16 lo (LE) | u8 nctx | ints block (nctx tables)
//!              context of value i = 0 if nctx = 1, else from the base exponent e:
//!              0 when e < lo, e − lo + 1 when lo ≤ e < lo + nctx − 2, nctx − 1 otherwise
//! 2 xor-float: float codec payload of base ^ target (layout inside)
//! 3 zstd:      u8 op (0 xor, 1 wrapping target − base) | u8 element bytes | zstd frame
//! 8 quantized: u8 bytes | u8 exp_bits | u8 bits | u8 nctx | f64 step (LE) | varint escapes
//!              | escapes > 0: ints block of index gaps (first index, then differences − 1)
//!              | ints block of zigzag residuals of the non-escaped values (context: bit
//!              length of |q_base| when nctx > 1) | escapes × bytes raw target values
//! 9 float-grid quantized: u8 bytes | u8 exp_bits | u8 m | u8 nctx | varint escapes | then as 8,
//!              on the floating grid of crate::fgrid (coordinates instead of grid integers)
//! ```
//!
//! Decoding depends only on the payload and the base bytes, so chains of deltas reproduce bit
//! for bit whatever route built them.

use crate::entropy::varint::{get_varint, put_varint};
use crate::float::{self, load};
use crate::ints::{self, Hist, Plan, unzigzag, zigzag};
use crate::{CodecError, FloatLayout, ValueKind};

mod quant;
#[cfg(test)]
mod tests;

use quant::{decode_float_quant, decode_quant};
pub use quant::{
    decode_quantized, encode_float_quantized, encode_float_quantized_counted, encode_quantized,
    encode_quantized_counted,
};

const SAME: u8 = 0;
const ORDER: u8 = 1;
const XOR_FLOAT: u8 = 2;
const ZSTD: u8 = 3;
const QUANT: u8 = 8;
const FQUANT: u8 = 9;

/// zstd level of the zstd variants.
const ZSTD_LEVEL: i32 = 3;
/// Most exponent classes given their own table (plus one below and one above).
const MAX_CLASSES: usize = 62;

/// Encodes `target` relative to `base`; returns the payload and the order-0 entropy bound in
/// bits of the chosen representation. Float data tries the order, xor-float and zstd
/// variants, other data ([`ValueKind::Bytes`], or floats of a partial last value) the zstd
/// variants, and keeps the smallest.
///
/// # Panics
/// If `base` and `target` differ in length.
pub fn encode(kind: ValueKind, base: &[u8], target: &[u8]) -> (Vec<u8>, f64) {
    encode_against(kind, base, target, usize::MAX)
}

/// [`encode`] for a writer that will keep another encoding of about `rival` bytes unless the
/// delta is smaller: the order variant is always coded, the others only when a sample
/// predicts them within 3 % of both the order variant and `rival` (with `usize::MAX`, exactly
/// [`encode`]).
///
/// # Panics
/// If `base` and `target` differ in length.
pub fn encode_against(kind: ValueKind, base: &[u8], target: &[u8], rival: usize) -> (Vec<u8>, f64) {
    encode_unless(kind, base, target, rival, |_, _| false).expect("never beaten")
}

/// [`encode_against`] for a writer that keeps the chunk alone when it is no larger than the
/// delta: once the order variant is planned and the samples rule the other variants out,
/// the delta's payload is the order variant's, of `lower` to `high` bytes; then
/// `alone(lower, high)` may code the chunk alone, and if it says that it fits in `lower`
/// bytes (`true`), nothing more is coded and the result is `None`. Otherwise, exactly
/// [`encode_against`]'s result.
///
/// # Panics
/// If `base` and `target` differ in length.
pub fn encode_unless(
    kind: ValueKind,
    base: &[u8],
    target: &[u8],
    rival: usize,
    alone: impl FnOnce(usize, usize) -> bool,
) -> Option<(Vec<u8>, f64)> {
    assert_eq!(
        base.len(),
        target.len(),
        "delta of chunks of different sizes"
    );
    if base == target {
        let mut out = vec![SAME];
        put_varint(&mut out, target.len() as u64);
        return Some((out, 0.0));
    }
    match kind {
        ValueKind::Float(layout)
            if matches!(layout.bytes(), 1 | 2 | 4 | 8)
                && layout.exp_bits >= 1
                && layout.exp_bits + 1 < layout.bits()
                && target.len().is_multiple_of(layout.bytes()) =>
        {
            encode_float(layout, base, target, rival, alone)
        }
        _ => Some(encode_zstd(base, target, &[1, 2, 4, 8])),
    }
}

/// Bytes an integer block can come out below its plan's size bound: one byte per stream, and
/// the stream-size varints, estimated from the total (with room to spare).
const PLAN_SLACK: usize = 64;

/// [`encode`] when its payload would be at most `limit` bytes, else `None`: what a writer that
/// keeps another encoding of `limit` bytes unless this one is no larger needs. Skips the
/// coding (and the variants' trials) whenever size bounds show that no candidate can reach
/// `limit`; whenever one might, the result is [`encode`]'s, so `Some` is always exactly
/// [`encode`]'s output.
///
/// # Panics
/// If `base` and `target` differ in length.
pub fn encode_within(
    kind: ValueKind,
    base: &[u8],
    target: &[u8],
    limit: usize,
) -> Option<(Vec<u8>, f64)> {
    let full = || Some(encode(kind, base, target)).filter(|e| e.0.len() <= limit);
    let ValueKind::Float(layout) = kind else {
        return full();
    };
    if !(matches!(layout.bytes(), 1 | 2 | 4 | 8)
        && layout.exp_bits >= 1
        && layout.exp_bits + 1 < layout.bits()
        && target.len().is_multiple_of(layout.bytes()))
        || base == target
    {
        return full();
    }
    // A lower bound on the order variant first (one counting pass): when it is above the
    // limit, the other variants are judged against the limit itself. Else the order variant's
    // plan: its size is within PLAN_SLACK below the plan's bound.
    let order_hi = if ORDER_HEAD + order_size_floor(layout, base, target) > limit {
        // Judged against the limit, with room for the samples' error: the order variant is
        // above it, so only a variant that fits can make the delta fit.
        limit.saturating_add(limit / 4)
    } else {
        let hi = ORDER_HEAD + AnyOrder::plan(layout, base, target).size();
        if hi <= limit.saturating_add(PLAN_SLACK) {
            return full();
        }
        hi
    };
    // The xor-float variant is tried when a sample predicts it within 3 % of `order_hi`, the
    // zstd variant whenever its sample is sparse; one that is tried may win when it reaches
    // `limit`.
    let sample = sample_xor(base, target, layout.bytes());
    let scale = target.len() as f64 / sample.len().max(1) as f64;
    let predicted = float::Analysis::new(layout, &sample).best_plan().size as f64 * scale;
    if predicted < order_hi as f64 * 1.03 {
        let xor: Vec<u8> = base.iter().zip(target).map(|(a, b)| a ^ b).collect();
        let plan = float::Analysis::new(layout, &xor).best_plan();
        if plan.size < limit.saturating_add(PLAN_SLACK) {
            return full();
        }
    }
    // (A sparse sample: zstd is tried whenever `encode` may try it.)
    if zstd_estimate(&sample, layout.bytes(), scale).is_some()
        && encode_zstd(base, target, &[layout.bytes()]).0.len() <= limit
    {
        return full();
    }
    None
}

/// Decodes a payload of [`encode`], [`encode_quantized`] or [`encode_float_quantized`] against
/// `base` into `out` (the chunk's size, equal to the base's).
pub fn decode(payload: &[u8], base: &[u8], out: &mut [u8]) -> Result<(), CodecError> {
    if base.len() != out.len() {
        return Err(CodecError::Corrupt(
            "delta base size disagrees with chunk size",
        ));
    }
    let (&variant, rest) = payload
        .split_first()
        .ok_or(CodecError::Corrupt("delta payload empty"))?;
    match variant {
        SAME => {
            let mut pos = 0;
            let n = get_varint(rest, &mut pos)?;
            if n != out.len() as u64 || pos != rest.len() {
                return Err(CodecError::Corrupt("delta size disagrees with chunk size"));
            }
            out.copy_from_slice(base);
            Ok(())
        }
        ORDER => decode_order(rest, base, out),
        XOR_FLOAT => {
            float::decode(rest, out)?;
            xor_into(out, base);
            Ok(())
        }
        ZSTD => decode_zstd(rest, base, out),
        QUANT => decode_quant(rest, base, out),
        FQUANT => decode_float_quant(rest, base, out),
        _ => Err(CodecError::Corrupt("unknown delta variant")),
    }
}

/// A little-endian value of 1..=8 bytes.
fn load_any(v: &[u8]) -> u64 {
    let mut w = [0u8; 8];
    w[..v.len()].copy_from_slice(v);
    u64::from_le_bytes(w)
}

fn xor_into(out: &mut [u8], base: &[u8]) {
    for (o, &b) in out.iter_mut().zip(base) {
        *o ^= b;
    }
}

/// Sign extension of the low `w` bits of `x`.
#[inline(always)]
fn sext(x: u64, w: u32) -> i64 {
    ((x << (64 - w)) as i64) >> (64 - w)
}

/// The order-preserving integer of the `w`-bit float bits `u`, wrapped to `w` bits.
#[inline(always)]
fn key(u: u64, w: u32) -> u64 {
    let mag = u64::MAX >> (65 - w);
    u ^ (mag & 0u64.wrapping_sub(u >> (w - 1)))
}

/// Chosen exponent classes of the order variant.
#[derive(Clone, Copy)]
struct Classes {
    lo: u32,
    nctx: usize,
    shift: u32,
    emask: u32,
}

impl Classes {
    #[inline(always)]
    fn of(self, u: u64) -> u8 {
        let e = (u >> self.shift) as u32 & self.emask;
        if e < self.lo {
            0
        } else {
            (e - self.lo + 1).min(self.nctx as u32 - 1) as u8
        }
    }
}

/// Exponent classes from the histogram of base exponents over `n` values: every exponent
/// holding at least `max(256, n / 1024)` values between the smallest and largest such exponent
/// (at most [`MAX_CLASSES`], the largest kept), plus a class below and one above.
fn choose_classes(layout: FloatLayout, hist: &[usize], n: usize) -> Option<Classes> {
    let min = (n / 1024).max(256);
    let hi = hist.iter().rposition(|&c| c >= min)?;
    let lo = hist.iter().position(|&c| c >= min)?;
    let lo = lo.max((hi + 1).saturating_sub(MAX_CLASSES));
    Some(Classes {
        lo: lo as u32,
        nctx: hi - lo + 3,
        shift: layout.bits() - 1 - layout.exp_bits,
        emask: (1u32 << layout.exp_bits) - 1,
    })
}

/// The zigzagged order-preserving difference of target value `tv` (`B` bytes) from base value
/// bits `bu`.
#[inline(always)]
fn order_diff<const B: usize>(bu: u64, tv: &[u8]) -> u64 {
    let w = 8 * B as u32;
    let d = key(load::<B>(tv), w).wrapping_sub(key(bu, w)) & (u64::MAX >> (64 - w));
    zigzag(sext(d, w))
}

fn encode_float(
    layout: FloatLayout,
    base: &[u8],
    target: &[u8],
    rival: usize,
    alone: impl FnOnce(usize, usize) -> bool,
) -> Option<(Vec<u8>, f64)> {
    let order = AnyOrder::plan(layout, base, target);
    // The XOR of a sample (four slices) predicts whether the other variants may win.
    let sample = sample_xor(base, target, layout.bytes());
    let scale = target.len() as f64 / sample.len().max(1) as f64;
    let predicted = float::Analysis::new(layout, &sample).best_plan().size as f64 * scale;
    let zstd = zstd_estimate(&sample, layout.bytes(), scale);
    let xor_may_win = |size: usize| predicted < size.min(rival) as f64 * 1.03;
    let zstd_may_win = |size: usize| zstd.is_some_and(|z| z < size.min(rival) as f64 * 1.03);
    // The order payload is at most `high` bytes: if neither other variant may win even
    // against that, the delta is the order variant, of at least `high - PLAN_SLACK` bytes.
    let high = ORDER_HEAD + order.size();
    if !xor_may_win(high) && !zstd_may_win(high) && alone(high.saturating_sub(PLAN_SLACK), high) {
        return None;
    }
    let mut best = order.finish(layout);
    if xor_may_win(best.0.len()) {
        let xor: Vec<u8> = base.iter().zip(target).map(|(a, b)| a ^ b).collect();
        let plan = float::Analysis::new(layout, &xor).best_plan();
        if plan.size + 1 < best.0.len() {
            let mut out = vec![XOR_FLOAT];
            out.extend_from_slice(&float::encode(layout, &xor, &plan));
            if out.len() < best.0.len() {
                best = (out, plan.entropy_bits);
            }
        }
    }
    if zstd_may_win(best.0.len()) {
        let z = encode_zstd(base, target, &[layout.bytes()]);
        if z.0.len() < best.0.len() {
            best = z;
        }
    }
    Some(best)
}

/// The zstd variant's size, estimated from the XOR `sample` of values of `b` bytes, a
/// `1 / scale` share of the chunk: its zstd size, scaled. zstd gains over the other variants
/// only on sparse changes (runs of unchanged values), so a sample with fewer than one
/// unchanged value in [`SPARSE`] is not even compressed (`None`: the variant is not tried).
fn zstd_estimate(sample: &[u8], b: usize, scale: f64) -> Option<f64> {
    let values = sample.len() / b;
    let unchanged = sample
        .chunks_exact(b)
        .filter(|v| v.iter().all(|&x| x == 0))
        .count();
    if unchanged * SPARSE < values {
        return None;
    }
    let z = crate::zstd_ctx::compress(sample, 1).map_or(usize::MAX, |z| z.len());
    Some(z as f64 * scale)
}

/// See [`zstd_estimate`]: changes denser than one unchanged value in `SPARSE` go to the
/// order or XOR variants without a zstd trial.
const SPARSE: usize = 8;

/// The XOR of base and target: all of it for small chunks, else four slices of 16 KiB
/// (whole values of `b` bytes) spread over the chunk.
fn sample_xor(base: &[u8], target: &[u8], b: usize) -> Vec<u8> {
    const SAMPLE: usize = 64 * 1024;
    let xor = |out: &mut Vec<u8>, r: std::ops::Range<usize>| {
        out.extend(base[r.clone()].iter().zip(&target[r]).map(|(a, b)| a ^ b));
    };
    let small = target.len() <= 2 * SAMPLE;
    let mut out = Vec::with_capacity(if small { target.len() } else { SAMPLE });
    if small {
        xor(&mut out, 0..target.len());
        return out;
    }
    for r in crate::sample_ranges(target.len(), SAMPLE / 4, b) {
        xor(&mut out, r);
    }
    out
}

/// Header bytes of the order variant before its integer block.
const ORDER_HEAD: usize = 6;

/// The order variant before coding: differences (in words of the values' width), contexts
/// and the chosen plan.
struct OrderPlan<W> {
    z: Vec<W>,
    ctx: Option<Vec<u8>>,
    plan: Plan,
    used: Option<Classes>,
}

/// The order variant of values of `B` bytes, planned: the differences as `W` words (a
/// zigzagged `B`-byte difference fits in `B` bytes) and their contexts, from one pass over
/// base and target that the compiler can vectorize ([`order_values`]); then their histogram
/// and its plan.
fn order_plan<const B: usize, W: OrderWord<B>>(
    layout: FloatLayout,
    base: &[u8],
    target: &[u8],
) -> OrderPlan<W> {
    let n = target.len() / B;
    let classes = base_classes::<B>(layout, base);
    let mut z = vec![W::default(); n];
    let mut ctx = classes.map(|_| vec![0u8; n]);
    let level = crate::cpu::Level::detected();
    crate::cpu::dispatch(
        level,
        #[inline(always)]
        || order_values::<B, W>(base, target, classes, &mut z, ctx.as_deref_mut()),
    );
    let nctx = classes.map_or(1, |c| c.nctx);
    let hist = crate::cpu::dispatch(
        level,
        #[inline(always)]
        || Hist::new(&z, ctx.as_deref(), nctx),
    );
    let (plan, used) = choose_order_plan(&hist, classes);
    OrderPlan { z, ctx, plan, used }
}

/// The exponent classes of the order variant for the base values of `B` bytes, if any.
fn base_classes<const B: usize>(layout: FloatLayout, base: &[u8]) -> Option<Classes> {
    let shift = 8 * B as u32 - 1 - layout.exp_bits;
    let emask = (1usize << layout.exp_bits) - 1;
    let mut exp_hist = vec![0usize; emask + 1];
    for bv in base.chunks_exact(B) {
        exp_hist[(load::<B>(bv) >> shift) as usize & emask] += 1;
    }
    choose_classes(layout, &exp_hist, base.len() / B)
}

/// The word type of the order variant's differences of `B`-byte values, and the difference
/// in that type's own arithmetic (which the compiler vectorizes for 16- and 32-bit words).
trait OrderWord<const B: usize>: ints::Word {
    /// The zigzagged order-preserving difference of target value `t` from base value `b`.
    fn diff(b: &[u8], t: &[u8]) -> Self;
}

macro_rules! order_word {
    ($w:ty, $s:ty, $b:literal) => {
        impl OrderWord<$b> for $w {
            #[inline(always)]
            fn diff(b: &[u8], t: &[u8]) -> Self {
                let key = |u: $w| u ^ ((u as $s >> (<$w>::BITS - 1)) as $w >> 1);
                let load = |v: &[u8]| <$w>::from_le_bytes(v.try_into().expect("value bytes"));
                let d = key(load(t)).wrapping_sub(key(load(b)));
                (d << 1) ^ ((d as $s >> (<$w>::BITS - 1)) as $w)
            }
        }
    };
}
order_word!(u16, i16, 2);
order_word!(u32, i32, 4);
order_word!(u64, i64, 8);

impl OrderWord<1> for u16 {
    #[inline(always)]
    fn diff(b: &[u8], t: &[u8]) -> Self {
        order_diff::<1>(load::<1>(b), t) as u16
    }
}

/// The order variant's differences (into `z`) and contexts (into `ctx`, when `classes`)
/// of values of `B` bytes: two branch-free passes.
#[inline(always)]
fn order_values<const B: usize, W: OrderWord<B>>(
    base: &[u8],
    target: &[u8],
    classes: Option<Classes>,
    z: &mut [W],
    ctx: Option<&mut [u8]>,
) {
    let pairs = base.chunks_exact(B).zip(target.chunks_exact(B));
    for (zi, (bv, tv)) in z.iter_mut().zip(pairs.clone()) {
        *zi = W::diff(bv, tv);
    }
    if let (Some(c), Some(ctx)) = (classes, ctx) {
        for (ci, bv) in ctx.iter_mut().zip(base.chunks_exact(B)) {
            *ci = c.of(load::<B>(bv));
        }
    }
}

/// The plan of the order variant for `hist` (counted under `classes`, if any): the classed
/// one, or the single-context one when it is no larger (then no classes are used).
fn choose_order_plan(hist: &Hist, classes: Option<Classes>) -> (Plan, Option<Classes>) {
    let plan = Plan::from_hist(hist);
    if classes.is_some()
        && let Some(single) = Plan::from_hist_within(&hist.merged(), plan.size)
    {
        return (single, None);
    }
    (plan, classes)
}

/// A lower bound in bytes on the order variant's integer block, from one pass that counts
/// the bit length `L` of every difference under the base's exponent classes: a token
/// determines `L`, so no code of the tokens takes fewer bits than the entropy of `L` in its
/// context (one table merges contexts, which only raises it), and the raw bits are at least
/// `L − 1 − MAX_K`.
fn order_size_floor(layout: FloatLayout, base: &[u8], target: &[u8]) -> usize {
    let bits = match layout.bytes() {
        1 => order_bits_floor::<1, u16>(layout, base, target),
        2 => order_bits_floor::<2, u16>(layout, base, target),
        4 => order_bits_floor::<4, u32>(layout, base, target),
        _ => order_bits_floor::<8, u64>(layout, base, target),
    };
    (bits * (1.0 - 1e-9) / 8.0) as usize
}

fn order_bits_floor<const B: usize, W: OrderWord<B>>(
    layout: FloatLayout,
    base: &[u8],
    target: &[u8],
) -> f64 {
    const CELLS: usize = 65;
    let classes = base_classes::<B>(layout, base);
    let nctx = classes.map_or(1, |c| c.nctx);
    let mut counts = vec![0u64; nctx * CELLS];
    let mut raw = 0u64;
    for (bv, tv) in base.chunks_exact(B).zip(target.chunks_exact(B)) {
        let l = 64 - W::diff(bv, tv).wide().leading_zeros();
        raw += u64::from(l.saturating_sub(ints::MAX_K + 1));
        let c = classes.map_or(0, |c| usize::from(c.of(load::<B>(bv))));
        counts[c * CELLS + l as usize] += 1;
    }
    let tokens: f64 = counts.chunks_exact(CELLS).map(float::entropy).sum();
    tokens + raw as f64
}

/// The order variant planned, in the word type of its values' width.
enum AnyOrder {
    W16(OrderPlan<u16>),
    W32(OrderPlan<u32>),
    W64(OrderPlan<u64>),
}

impl AnyOrder {
    fn plan(layout: FloatLayout, base: &[u8], target: &[u8]) -> Self {
        match layout.bytes() {
            1 => Self::W16(order_plan::<1, u16>(layout, base, target)),
            2 => Self::W16(order_plan::<2, u16>(layout, base, target)),
            4 => Self::W32(order_plan::<4, u32>(layout, base, target)),
            _ => Self::W64(order_plan::<8, u64>(layout, base, target)),
        }
    }

    /// The integer block's planned size (at most `PLAN_SLACK` above what it codes to).
    fn size(&self) -> usize {
        match self {
            Self::W16(p) => p.plan.size,
            Self::W32(p) => p.plan.size,
            Self::W64(p) => p.plan.size,
        }
    }

    /// The payload and its entropy bound.
    fn finish(self, layout: FloatLayout) -> (Vec<u8>, f64) {
        match self {
            Self::W16(p) => finish_order(layout, p),
            Self::W32(p) => finish_order(layout, p),
            Self::W64(p) => finish_order(layout, p),
        }
    }
}

fn finish_order<W: ints::Word>(layout: FloatLayout, p: OrderPlan<W>) -> (Vec<u8>, f64) {
    let OrderPlan { z, ctx, plan, used } = p;
    let mut out = Vec::with_capacity(plan.size + 8);
    out.push(ORDER);
    out.push(layout.bytes() as u8);
    out.push(layout.exp_bits as u8);
    let (lo, nctx) = used.map_or((0, 1), |c| (c.lo, c.nctx));
    out.extend_from_slice(&(lo as u16).to_le_bytes());
    out.push(nctx as u8);
    let ctx = if used.is_some() { ctx.as_deref() } else { None };
    ints::encode_with_plan(&z, ctx, &plan, &mut out);
    (out, plan.entropy_bits)
}

fn decode_order(rest: &[u8], base: &[u8], out: &mut [u8]) -> Result<(), CodecError> {
    let head = rest
        .get(..5)
        .ok_or(CodecError::Corrupt("order delta header truncated"))?;
    let b = usize::from(head[0]);
    let exp_bits = u32::from(head[1]);
    let lo = u32::from(u16::from_le_bytes([head[2], head[3]]));
    let nctx = usize::from(head[4]);
    if !matches!(b, 1 | 2 | 4 | 8) || exp_bits == 0 || exp_bits + 1 >= 8 * b as u32 {
        return Err(CodecError::Corrupt("order delta has an invalid layout"));
    }
    if nctx == 0 || nctx > MAX_CLASSES + 2 || !out.len().is_multiple_of(b) {
        return Err(CodecError::Corrupt("order delta has invalid parameters"));
    }
    let w = 8 * b as u32;
    let classes = Classes {
        lo,
        nctx,
        shift: w - 1 - exp_bits,
        emask: (1u32 << exp_bits) - 1,
    };
    let rest = &rest[5..];
    let used = match b {
        1 => ints::decode_into(rest, nctx, &mut OrderOut::<1> { base, out, classes })?,
        2 => ints::decode_into(rest, nctx, &mut OrderOut::<2> { base, out, classes })?,
        4 => ints::decode_into(rest, nctx, &mut OrderOut::<4> { base, out, classes })?,
        _ => ints::decode_into(rest, nctx, &mut OrderOut::<8> { base, out, classes })?,
    };
    if used != rest.len() {
        return Err(CodecError::Corrupt("order delta has trailing bytes"));
    }
    Ok(())
}

/// Decoded differences applied to the base as they come; contexts from the base exponents.
struct OrderOut<'a, const B: usize> {
    base: &'a [u8],
    out: &'a mut [u8],
    classes: Classes,
}

impl<const B: usize> OrderOut<'_, B> {
    /// The target bits for base bits `b` and coded difference `z`.
    #[inline(always)]
    fn apply(b: u64, z: u64) -> u64 {
        let w = 8 * B as u32;
        let kt = key(b, w).wrapping_add(unzigzag(z) as u64) & (u64::MAX >> (64 - w));
        // `key` is its own inverse on `w` bits (the sign bit is unchanged).
        key(kt, w)
    }
}

impl<const B: usize> ints::Values for OrderOut<'_, B> {
    #[inline(always)]
    fn count(&self) -> usize {
        self.out.len() / B
    }

    #[inline(always)]
    fn ctx(&self, i: usize) -> usize {
        usize::from(self.classes.of(load::<B>(&self.base[i * B..(i + 1) * B])))
    }

    #[inline(always)]
    fn set(&mut self, i: usize, z: u64) {
        let b = load::<B>(&self.base[i * B..(i + 1) * B]);
        let u = Self::apply(b, z);
        self.out[i * B..(i + 1) * B].copy_from_slice(&u.to_le_bytes()[..B]);
    }

    #[inline(always)]
    fn ctx4(&mut self, i: usize) -> [usize; 4] {
        let b = &self.base[i * B..(i + 4) * B];
        let c = |j: usize| usize::from(self.classes.of(load::<B>(&b[j * B..(j + 1) * B])));
        [c(0), c(1), c(2), c(3)]
    }

    #[inline(always)]
    fn set4(&mut self, i: usize, z: [u64; 4]) {
        let b = &self.base[i * B..(i + 4) * B];
        let o = &mut self.out[i * B..(i + 4) * B];
        for j in 0..4 {
            let u = Self::apply(load::<B>(&b[j * B..(j + 1) * B]), z[j]);
            o[j * B..(j + 1) * B].copy_from_slice(&u.to_le_bytes()[..B]);
        }
    }
}

/// zstd of the XOR and of the wrapping differences of elements of the given widths (those
/// dividing the length); the smallest wins. Large chunks pick the transform on a sample.
fn encode_zstd(base: &[u8], target: &[u8], widths: &[usize]) -> (Vec<u8>, f64) {
    // Wider elements first: they win ties on the sample.
    let mut cands: Vec<(u8, usize)> = widths
        .iter()
        .rev()
        .filter(|&&w| target.len().is_multiple_of(w))
        .map(|&w| (1, w))
        .collect();
    cands.push((0, 1));
    const SAMPLE: usize = 64 * 1024;
    if target.len() > SAMPLE && cands.len() > 2 {
        // 4 slices of 16 KiB (multiples of 8 bytes) rank the transforms; the best two are
        // compressed in full.
        let mut sb = Vec::with_capacity(SAMPLE);
        let mut st = Vec::with_capacity(SAMPLE);
        for r in crate::sample_ranges(target.len(), SAMPLE / 4, 8) {
            sb.extend_from_slice(&base[r.clone()]);
            st.extend_from_slice(&target[r]);
        }
        let mut ranked: Vec<(usize, usize, (u8, usize))> = cands
            .iter()
            .enumerate()
            .map(|(i, &(op, w))| {
                let z = crate::zstd_ctx::compress(&transform(op, w, &sb, &st), 1)
                    .map_or(usize::MAX, |z| z.len());
                (z, i, (op, w))
            })
            .collect();
        ranked.sort_unstable();
        cands = ranked.iter().take(2).map(|r| r.2).collect();
    }
    let mut best: Option<(Vec<u8>, f64)> = None;
    for (op, w) in cands {
        let t = transform(op, w, base, target);
        let z = crate::zstd_ctx::compress(&t, ZSTD_LEVEL).unwrap_or_default();
        if best.as_ref().is_none_or(|b| z.len() + 3 < b.0.len()) {
            let mut hist = [0u64; 256];
            for &x in &t {
                hist[usize::from(x)] += 1;
            }
            let mut out = vec![ZSTD, op, w as u8];
            out.extend_from_slice(&z);
            best = Some((out, float::entropy(&hist)));
        }
    }
    best.unwrap_or_default()
}

/// `op` 0: XOR of the bytes; 1: wrapping `target − base` of little-endian `w`-byte elements.
fn transform(op: u8, w: usize, base: &[u8], target: &[u8]) -> Vec<u8> {
    if op == 0 {
        return base.iter().zip(target).map(|(a, b)| a ^ b).collect();
    }
    let mut out = Vec::with_capacity(target.len());
    for (bv, tv) in base.chunks_exact(w).zip(target.chunks_exact(w)) {
        let d = load_any(tv).wrapping_sub(load_any(bv));
        out.extend_from_slice(&d.to_le_bytes()[..w]);
    }
    out
}

fn decode_zstd(rest: &[u8], base: &[u8], out: &mut [u8]) -> Result<(), CodecError> {
    let (&[op, w], frame) = rest
        .split_first_chunk::<2>()
        .ok_or(CodecError::Corrupt("zstd delta header truncated"))?;
    let w = usize::from(w);
    if op > 1 || !matches!(w, 1 | 2 | 4 | 8) || !out.len().is_multiple_of(w) {
        return Err(CodecError::Corrupt("zstd delta has invalid parameters"));
    }
    let n = zstd::bulk::decompress_to_buffer(frame, out)
        .map_err(|e| CodecError::Zstd(e.to_string()))?;
    if n != out.len() {
        return Err(CodecError::Corrupt("zstd delta shorter than the chunk"));
    }
    if op == 0 {
        xor_into(out, base);
    } else {
        for (ov, bv) in out.chunks_exact_mut(w).zip(base.chunks_exact(w)) {
            let v = load_any(ov).wrapping_add(load_any(bv));
            ov.copy_from_slice(&v.to_le_bytes()[..w]);
        }
    }
    Ok(())
}
