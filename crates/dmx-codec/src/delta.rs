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
//! values off the grid are stored exactly (escapes).
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
//! ```
//!
//! Decoding depends only on the payload and the base bytes, so chains of deltas reproduce bit
//! for bit whatever route built them.

use crate::entropy::varint::{get_varint, put_varint};
use crate::float::{self, load};
use crate::grid;
use crate::ints::{self, Hist, Plan, unzigzag, zigzag};
use crate::{CodecError, FloatLayout, ValueKind};

const SAME: u8 = 0;
const ORDER: u8 = 1;
const XOR_FLOAT: u8 = 2;
const ZSTD: u8 = 3;
const QUANT: u8 = 8;

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
    assert_eq!(
        base.len(),
        target.len(),
        "delta of chunks of different sizes"
    );
    if base == target {
        let mut out = vec![SAME];
        put_varint(&mut out, target.len() as u64);
        return (out, 0.0);
    }
    match kind {
        ValueKind::Float(layout)
            if matches!(layout.bytes(), 1 | 2 | 4 | 8)
                && layout.exp_bits >= 1
                && layout.exp_bits + 1 < layout.bits()
                && target.len().is_multiple_of(layout.bytes()) =>
        {
            encode_float(layout, base, target)
        }
        _ => encode_zstd(base, target, &[1, 2, 4, 8]),
    }
}

/// Decodes a payload of [`encode`] or [`encode_quantized`] against `base` into `out` (the
/// chunk's size, equal to the base's).
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
        _ => Err(CodecError::Corrupt("unknown delta variant")),
    }
}

/// Quantized delta: base and target on the grid of `step` and `bits` (2..=32; 16 or 32 in
/// practice). `q_b = grid::quantize(base)`, or 0 where the base value is not representable;
/// a target value with `grid::quantize(target) = Some(q_t)` stores `q_t − q_b`, any other is
/// stored exactly. Returns the payload and its entropy bound in bits.
///
/// # Panics
/// If `base` and `target` differ in length, their length is not a multiple of the value
/// width, or `bits` is outside 2..=32.
pub fn encode_quantized(
    layout: FloatLayout,
    base: &[u8],
    target: &[u8],
    step: f64,
    bits: u32,
) -> (Vec<u8>, f64) {
    assert_eq!(
        base.len(),
        target.len(),
        "delta of chunks of different sizes"
    );
    assert!((2..=32).contains(&bits), "grid width must be 2..=32 bits");
    let b = layout.bytes();
    assert!(target.len().is_multiple_of(b), "partial value in chunk");
    let q = match b {
        1 => quant_residuals::<1>(layout, base, target, step, bits),
        2 => quant_residuals::<2>(layout, base, target, step, bits),
        4 => quant_residuals::<4>(layout, base, target, step, bits),
        _ => quant_residuals::<8>(layout, base, target, step, bits),
    };
    let QuantSplit {
        residuals,
        res_ctx,
        escapes,
        gaps,
    } = q;
    let hist = Hist::new(&residuals, Some(&res_ctx), QUANT_CLASSES);
    let plain = Plan::from_hist(&hist.merged());
    let classed = Plan::from_hist(&hist);
    let (plan, ctx, nctx) = if classed.size < plain.size {
        (classed, Some(res_ctx.as_slice()), QUANT_CLASSES)
    } else {
        (plain, None, 1)
    };
    let mut out = Vec::with_capacity(plan.size + escapes.len() + 32);
    out.extend_from_slice(&[
        QUANT,
        b as u8,
        layout.exp_bits as u8,
        bits as u8,
        nctx as u8,
    ]);
    out.extend_from_slice(&step.to_bits().to_le_bytes());
    put_varint(&mut out, gaps.len() as u64);
    let mut entropy_bits = plan.entropy_bits + 8.0 * escapes.len() as f64;
    if !gaps.is_empty() {
        entropy_bits += ints::encode_ctx(&gaps, None, 1, &mut out);
    }
    ints::encode_with_plan(&residuals, ctx, &plan, &mut out);
    out.extend_from_slice(&escapes);
    (out, entropy_bits)
}

/// A quantized delta before coding.
struct QuantSplit {
    /// Zigzagged `q_t - q_b` of the values on the grid.
    residuals: Vec<u64>,
    /// Their contexts ([`quant_class`] of `q_b`).
    res_ctx: Vec<u8>,
    /// Raw bytes of the escaped target values.
    escapes: Vec<u8>,
    /// Escape positions: the first index, then the differences minus one.
    gaps: Vec<u64>,
}

fn quant_residuals<const B: usize>(
    layout: FloatLayout,
    base: &[u8],
    target: &[u8],
    step: f64,
    bits: u32,
) -> QuantSplit {
    let count = target.len() / B;
    let mut q = QuantSplit {
        residuals: Vec::with_capacity(count),
        res_ctx: Vec::with_capacity(count),
        escapes: Vec::new(),
        gaps: Vec::new(),
    };
    let mut next = 0usize;
    for (i, (bv, tv)) in base.chunks_exact(B).zip(target.chunks_exact(B)).enumerate() {
        let qb = grid::quantize(grid::to_f64(layout, load::<B>(bv)), step, bits).unwrap_or(0);
        match grid::quantize(grid::to_f64(layout, load::<B>(tv)), step, bits) {
            Some(qt) => {
                q.residuals.push(zigzag(qt - qb));
                q.res_ctx.push(quant_class(qb));
            }
            None => {
                q.gaps.push((i - next) as u64);
                next = i + 1;
                q.escapes.extend_from_slice(tv);
            }
        }
    }
    q
}

/// Decodes any delta payload (the same as [`decode`]); a quantized value decodes to
/// `grid::dequantize(layout, q_b + r, step)` in exact integer arithmetic.
pub fn decode_quantized(payload: &[u8], base: &[u8], out: &mut [u8]) -> Result<(), CodecError> {
    decode(payload, base, out)
}

/// Contexts of quantized residuals: bit length of `|q_b|` (0..=32).
const QUANT_CLASSES: usize = 33;

fn quant_class(qb: i64) -> u8 {
    (64 - qb.unsigned_abs().leading_zeros()).min(32) as u8
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

/// Zigzagged order-preserving differences of values of `B` bytes, and the histogram of the
/// base exponents.
fn order_diffs<const B: usize>(
    layout: FloatLayout,
    base: &[u8],
    target: &[u8],
) -> (Vec<u64>, Vec<usize>) {
    let w = 8 * B as u32;
    let shift = w - 1 - layout.exp_bits;
    let emask = (1usize << layout.exp_bits) - 1;
    let wmask = u64::MAX >> (64 - w);
    let mut hist = vec![0usize; emask + 1];
    let z = base
        .chunks_exact(B)
        .zip(target.chunks_exact(B))
        .map(|(bv, tv)| {
            let bu = load::<B>(bv);
            hist[(bu >> shift) as usize & emask] += 1;
            let d = key(load::<B>(tv), w).wrapping_sub(key(bu, w)) & wmask;
            zigzag(sext(d, w))
        })
        .collect();
    (z, hist)
}

fn order_classes<const B: usize>(base: &[u8], c: Classes) -> Vec<u8> {
    base.chunks_exact(B).map(|v| c.of(load::<B>(v))).collect()
}

fn encode_float(layout: FloatLayout, base: &[u8], target: &[u8]) -> (Vec<u8>, f64) {
    let mut best = encode_order(layout, base, target);
    // The XOR of a sample (four slices) predicts whether the other variants may win.
    let sample = sample_xor(base, target, layout.bytes());
    let scale = target.len() as f64 / sample.len().max(1) as f64;
    let predicted = float::Analysis::new(layout, &sample).best_plan().size as f64 * scale;
    if predicted < best.0.len() as f64 * 1.03 {
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
    let z = zstd::bulk::compress(&sample, 1).map_or(usize::MAX, |z| z.len());
    if z as f64 * scale < best.0.len() as f64 * 1.03 {
        let z = encode_zstd(base, target, &[layout.bytes()]);
        if z.0.len() < best.0.len() {
            best = z;
        }
    }
    best
}

/// The XOR of base and target: all of it for small chunks, else four slices of 16 KiB
/// (whole values of `b` bytes) spread over the chunk.
fn sample_xor(base: &[u8], target: &[u8], b: usize) -> Vec<u8> {
    const SAMPLE: usize = 64 * 1024;
    let xor = |r: std::ops::Range<usize>| -> Vec<u8> {
        base[r.clone()]
            .iter()
            .zip(&target[r])
            .map(|(a, b)| a ^ b)
            .collect()
    };
    if target.len() <= 2 * SAMPLE {
        return xor(0..target.len());
    }
    let slice = SAMPLE / 4;
    let mut out = Vec::with_capacity(SAMPLE);
    for i in 0..4 {
        let start = (target.len() - slice) * i / 3 / b * b;
        out.extend(xor(start..start + slice));
    }
    out
}

fn encode_order(layout: FloatLayout, base: &[u8], target: &[u8]) -> (Vec<u8>, f64) {
    let b = layout.bytes();
    let n = target.len() / b;
    let (z, exp_hist) = match b {
        1 => order_diffs::<1>(layout, base, target),
        2 => order_diffs::<2>(layout, base, target),
        4 => order_diffs::<4>(layout, base, target),
        _ => order_diffs::<8>(layout, base, target),
    };
    let classes = choose_classes(layout, &exp_hist, n);
    let ctx: Option<Vec<u8>> = classes.map(|c| match b {
        1 => order_classes::<1>(base, c),
        2 => order_classes::<2>(base, c),
        4 => order_classes::<4>(base, c),
        _ => order_classes::<8>(base, c),
    });
    let hist = Hist::new(&z, ctx.as_deref(), classes.map_or(1, |c| c.nctx));
    let mut plan = Plan::from_hist(&hist);
    let mut used = classes;
    if used.is_some() {
        let single = Plan::from_hist(&hist.merged());
        if single.size <= plan.size {
            plan = single;
            used = None;
        }
    }
    let mut out = Vec::with_capacity(plan.size + 8);
    out.push(ORDER);
    out.push(b as u8);
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
        let slice = SAMPLE / 4;
        let mut sb = Vec::with_capacity(SAMPLE);
        let mut st = Vec::with_capacity(SAMPLE);
        for i in 0..4 {
            let start = ((target.len() - slice) * i / 3) & !7;
            sb.extend_from_slice(&base[start..start + slice]);
            st.extend_from_slice(&target[start..start + slice]);
        }
        let mut ranked: Vec<(usize, usize, (u8, usize))> = cands
            .iter()
            .enumerate()
            .map(|(i, &(op, w))| {
                let z = zstd::bulk::compress(&transform(op, w, &sb, &st), 1)
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
        let z = zstd::bulk::compress(&t, ZSTD_LEVEL).unwrap_or_default();
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

fn decode_quant(rest: &[u8], base: &[u8], out: &mut [u8]) -> Result<(), CodecError> {
    let head = rest
        .get(..12)
        .ok_or(CodecError::Corrupt("quantized delta header truncated"))?;
    let b = usize::from(head[0]);
    let exp_bits = u32::from(head[1]);
    let bits = u32::from(head[2]);
    let nctx = usize::from(head[3]);
    let step = f64::from_bits(u64::from_le_bytes(
        head[4..12]
            .try_into()
            .map_err(|_| CodecError::Corrupt("quantized delta header"))?,
    ));
    if !matches!(b, 1 | 2 | 4 | 8) || exp_bits == 0 || exp_bits + 1 >= 8 * b as u32 {
        return Err(CodecError::Corrupt("quantized delta has an invalid layout"));
    }
    if !(2..=32).contains(&bits) || !(nctx == 1 || nctx == QUANT_CLASSES) {
        return Err(CodecError::Corrupt(
            "quantized delta has invalid parameters",
        ));
    }
    if !out.len().is_multiple_of(b) {
        return Err(CodecError::Corrupt(
            "quantized delta size is not whole values",
        ));
    }
    let layout = FloatLayout {
        bytes: b as u8,
        exp_bits,
    };
    let count = out.len() / b;
    let mut pos = 12;
    let n_esc = get_varint(rest, &mut pos)?;
    if n_esc > count as u64 {
        return Err(CodecError::Corrupt("quantized delta has too many escapes"));
    }
    let n_esc = n_esc as usize;
    let mut is_esc = vec![false; if n_esc > 0 { count } else { 0 }];
    if n_esc > 0 {
        let mut gaps = vec![0u64; n_esc];
        pos += ints::decode_ctx(rest.get(pos..).unwrap_or(&[]), None, 1, &mut gaps)?;
        let mut next = 0u64;
        for g in gaps {
            let i =
                next.checked_add(g)
                    .filter(|&i| i < count as u64)
                    .ok_or(CodecError::Corrupt(
                        "quantized delta escape index out of range",
                    ))?;
            is_esc[i as usize] = true;
            next = i + 1;
        }
    }
    // Element index of every residual (identity when nothing is escaped).
    let map: Option<Vec<usize>> = (n_esc > 0).then(|| (0..count).filter(|&i| !is_esc[i]).collect());
    let g = Grid {
        layout,
        step,
        bits,
        classes: nctx > 1,
    };
    let data = rest.get(pos..).unwrap_or(&[]);
    pos += match b {
        1 => decode_residuals::<1>(data, nctx, base, out, map.as_deref(), g)?,
        2 => decode_residuals::<2>(data, nctx, base, out, map.as_deref(), g)?,
        4 => decode_residuals::<4>(data, nctx, base, out, map.as_deref(), g)?,
        _ => decode_residuals::<8>(data, nctx, base, out, map.as_deref(), g)?,
    };
    let raw = rest
        .get(pos..)
        .filter(|r| r.len() == n_esc * b)
        .ok_or(CodecError::Corrupt("quantized delta escape bytes mismatch"))?;
    let mut e_iter = raw.chunks_exact(b);
    for (ov, &esc) in out.chunks_exact_mut(b).zip(&is_esc) {
        if esc && let Some(e) = e_iter.next() {
            ov.copy_from_slice(e);
        }
    }
    Ok(())
}

/// Grid parameters of a quantized delta.
#[derive(Clone, Copy)]
struct Grid {
    layout: FloatLayout,
    step: f64,
    bits: u32,
    classes: bool,
}

/// Decodes the residual block `data` into the non-escaped values of `out` (element `map[j]`
/// for residual `j`, or `j` without a map); returns the bytes consumed.
fn decode_residuals<const B: usize>(
    data: &[u8],
    nctx: usize,
    base: &[u8],
    out: &mut [u8],
    map: Option<&[usize]>,
    g: Grid,
) -> Result<usize, CodecError> {
    let n = map.map_or(out.len() / B, <[usize]>::len);
    let mut sink = QuantOut::<B> {
        base,
        map,
        out,
        n,
        g,
        qmax: grid::qmax(g.bits),
        group: [0; 4],
        bad: false,
    };
    let used = ints::decode_into(data, nctx, &mut sink)?;
    if sink.bad {
        return Err(CodecError::Corrupt("quantized delta value off the grid"));
    }
    Ok(used)
}

/// Decoded residuals applied to the base grid integers as they come.
struct QuantOut<'a, const B: usize> {
    base: &'a [u8],
    /// Element index per residual; `None` for the identity.
    map: Option<&'a [usize]>,
    out: &'a mut [u8],
    n: usize,
    g: Grid,
    qmax: i64,
    /// Base grid integers of the group of four from the last [`ints::Values::ctx4`].
    group: [i64; 4],
    /// Set when a residual leaves the grid (corrupt payload).
    bad: bool,
}

impl<const B: usize> QuantOut<'_, B> {
    #[inline(always)]
    fn index(&self, j: usize) -> usize {
        match self.map {
            None => j,
            Some(m) => m[j],
        }
    }

    /// The base grid integer of element `i`.
    #[inline(always)]
    fn qb(&self, i: usize) -> i64 {
        let raw = load::<B>(&self.base[i * B..(i + 1) * B]);
        grid::quantize(grid::to_f64(self.g.layout, raw), self.g.step, self.g.bits).unwrap_or(0)
    }

    #[inline(always)]
    fn ctx_of(&self, qb: i64) -> usize {
        if self.g.classes {
            usize::from(quant_class(qb))
        } else {
            0
        }
    }

    /// Stores grid point `qb + r` as element `i`.
    #[inline(always)]
    fn store(&mut self, i: usize, qb: i64, z: u64) {
        let q = qb
            .checked_add(unzigzag(z))
            .filter(|q| q.unsigned_abs() <= self.qmax as u64);
        self.bad |= q.is_none();
        let v = grid::dequantize(self.g.layout, q.unwrap_or(0), self.g.step);
        self.out[i * B..(i + 1) * B].copy_from_slice(&v.to_le_bytes()[..B]);
    }
}

impl<const B: usize> ints::Values for QuantOut<'_, B> {
    #[inline(always)]
    fn count(&self) -> usize {
        self.n
    }

    #[inline(always)]
    fn ctx(&self, j: usize) -> usize {
        self.ctx_of(self.qb(self.index(j)))
    }

    #[inline(always)]
    fn set(&mut self, j: usize, z: u64) {
        let i = self.index(j);
        self.store(i, self.qb(i), z);
    }

    #[inline(always)]
    fn ctx4(&mut self, j: usize) -> [usize; 4] {
        let q = |k: usize| self.qb(self.index(j + k));
        self.group = [q(0), q(1), q(2), q(3)];
        let g = self.group;
        [
            self.ctx_of(g[0]),
            self.ctx_of(g[1]),
            self.ctx_of(g[2]),
            self.ctx_of(g[3]),
        ]
    }

    #[inline(always)]
    fn set4(&mut self, j: usize, z: [u64; 4]) {
        for (k, &z) in z.iter().enumerate() {
            let i = self.index(j + k);
            self.store(i, self.group[k], z);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const LAYOUTS: [FloatLayout; 6] = [
        FloatLayout::BF16,
        FloatLayout::F16,
        FloatLayout::F32,
        FloatLayout::F64,
        FloatLayout::F8_E4M3,
        FloatLayout::F8_E5M2,
    ];

    fn round_trip(kind: ValueKind, base: &[u8], target: &[u8]) -> usize {
        let (payload, bits) = encode(kind, base, target);
        assert!(bits >= 0.0);
        let mut out = vec![0xA5u8; target.len()];
        decode(&payload, base, &mut out).unwrap();
        assert!(out == target, "variant {} mismatch", payload[0]);
        payload.len()
    }

    /// Values near `scale` with a small relative change in the target.
    fn pair(layout: FloatLayout, n: usize, seed: u64) -> (Vec<u8>, Vec<u8>) {
        let r = crate::pseudo_bytes(n * 8, seed);
        let mut base = Vec::new();
        let mut target = Vec::new();
        for c in r.chunks_exact(8) {
            let u = (u32::from_le_bytes(c[..4].try_into().unwrap()) as f64 / 4e9 - 0.5) * 0.1;
            let d = (u32::from_le_bytes(c[4..].try_into().unwrap()) as f64 / 4e9 - 0.5) * 1e-4;
            let bv = grid::from_f64(layout, u);
            let tv = grid::from_f64(layout, u + d);
            base.extend_from_slice(&bv.to_le_bytes()[..layout.bytes()]);
            target.extend_from_slice(&tv.to_le_bytes()[..layout.bytes()]);
        }
        (base, target)
    }

    fn specials(layout: FloatLayout) -> Vec<u8> {
        let w = layout.bits();
        let m = layout.exp_bits;
        let sign = 1u64 << (w - 1);
        let inf = ((1u64 << m) - 1) << (w - 1 - m);
        let vals = [
            0,
            sign,
            inf,
            inf | sign,
            inf | 1,
            inf | sign | 3,
            inf | (1 << (w - 2 - m)),
            1,
            sign | 1,
            (inf - 1) & !sign,
            (inf - 1) | sign,
            1 << (w - 1 - m),
            u64::MAX >> (64 - w),
        ];
        vals.iter()
            .flat_map(|v| v.to_le_bytes()[..layout.bytes()].to_vec())
            .collect()
    }

    #[test]
    fn lossless_every_layout() {
        for layout in LAYOUTS {
            let kind = ValueKind::Float(layout);
            for n in [0usize, 1, 2, 3, 5, 17, 1000, 4099] {
                let (b, t) = pair(layout, n, 7 + n as u64);
                round_trip(kind, &b, &t);
                round_trip(kind, &b, &b);
                round_trip(kind, &t, &b);
                let r = crate::pseudo_bytes(t.len(), 99);
                round_trip(kind, &b, &r);
                round_trip(kind, &r, &t);
            }
            let s = specials(layout);
            let mut rev: Vec<u8> = s.chunks(layout.bytes()).rev().flatten().copied().collect();
            round_trip(kind, &s, &rev);
            round_trip(kind, &rev, &s);
            rev.rotate_left(layout.bytes());
            round_trip(kind, &s, &rev);
            // Every special against every special.
            let n = s.len() / layout.bytes();
            let mut b = Vec::new();
            let mut t = Vec::new();
            for i in 0..n {
                for j in 0..n {
                    b.extend_from_slice(&s[i * layout.bytes()..(i + 1) * layout.bytes()]);
                    t.extend_from_slice(&s[j * layout.bytes()..(j + 1) * layout.bytes()]);
                }
            }
            round_trip(kind, &b, &t);
        }
    }

    #[test]
    fn bytes_and_partial_values() {
        let b = crate::pseudo_bytes(10_001, 1);
        let mut t = b.clone();
        for i in (0..t.len()).step_by(97) {
            t[i] = t[i].wrapping_add(3);
        }
        let size = round_trip(ValueKind::Bytes, &b, &t);
        assert!(size < 1500, "{size}");
        round_trip(ValueKind::Float(FloatLayout::F32), &b, &t);
        // Counters: element-wise difference is constant.
        let b: Vec<u8> = (0..100_000u64)
            .flat_map(|i| (i * 3).to_le_bytes())
            .collect();
        let t: Vec<u8> = (0..100_000u64)
            .flat_map(|i| (i * 3 + 5).to_le_bytes())
            .collect();
        let size = round_trip(ValueKind::Bytes, &b, &t);
        assert!(size < 200, "{size}");
        round_trip(ValueKind::Bytes, &[], &[]);
        round_trip(ValueKind::Bytes, &[1], &[2]);
    }

    #[test]
    fn small_changes_compress() {
        let (b, t) = pair(FloatLayout::F32, 50_000, 3);
        let size = round_trip(ValueKind::Float(FloatLayout::F32), &b, &t);
        let plain = crate::encode(ValueKind::Float(FloatLayout::F32), &t, 3)
            .payload
            .len();
        assert!(size < plain * 9 / 10, "{size} vs {plain}");
        // Sparse changes.
        let mut t = b.clone();
        for i in (0..t.len()).step_by(4 * 1000) {
            t[i] ^= 1;
        }
        let size = round_trip(ValueKind::Float(FloatLayout::F32), &b, &t);
        assert!(size < 2000, "{size}");
    }

    fn check_corruption(payload: &[u8], base: &[u8], len: usize) {
        let mut out = vec![0u8; len];
        for cut in 0..payload.len() {
            assert!(
                decode(&payload[..cut], base, &mut out).is_err(),
                "cut {cut} of {}",
                payload.len()
            );
        }
        for i in 0..payload.len() {
            for flip in [1u8, 0x40, 0xFF] {
                let mut bad = payload.to_vec();
                bad[i] ^= flip;
                let _ = decode(&bad, base, &mut out);
            }
        }
        if !base.is_empty() {
            let mut out = vec![0u8; len];
            assert!(decode(payload, &base[1..], &mut out).is_err());
        }
        let mut longer = payload.to_vec();
        longer.push(0);
        // Trailing bytes are rejected (zstd may tolerate none; no panic either way).
        let _ = decode(&longer, base, &mut out);
    }

    #[test]
    fn corrupt_and_truncated_payloads_error() {
        for layout in [FloatLayout::BF16, FloatLayout::F32, FloatLayout::F64] {
            let kind = ValueKind::Float(layout);
            let (b, t) = pair(layout, 301, 5);
            let (p, _) = encode(kind, &b, &t);
            check_corruption(&p, &b, t.len());
            let mut sparse = b.clone();
            sparse[7] ^= 1;
            let (p, _) = encode(kind, &b, &sparse);
            check_corruption(&p, &b, t.len());
            let (p, _) = encode(kind, &b, &b);
            check_corruption(&p, &b, t.len());
            let step = grid::step_for(0.05, 16);
            let mut t2 = t.clone();
            t2[..layout.bytes()]
                .copy_from_slice(&specials(layout)[2 * layout.bytes()..3 * layout.bytes()]);
            let (p, _) = encode_quantized(layout, &b, &t2, step, 16);
            check_corruption(&p, &b, t.len());
        }
        let b = crate::pseudo_bytes(300, 2);
        let (p, _) = encode(ValueKind::Bytes, &b, &crate::pseudo_bytes(300, 3));
        check_corruption(&p, &b, 300);
    }

    #[test]
    fn unrelated_values_use_xor_float() {
        // Uniform values in a narrow range against unrelated ones: the XOR keeps the sign and
        // exponent fields nearly constant, which the field-split codec exploits.
        let layout = FloatLayout::F32;
        let (b, _) = pair(layout, 1000, 31);
        let (t, _) = pair(layout, 1000, 32);
        let t: Vec<u8> = t
            .chunks_exact(4)
            .zip(b.chunks_exact(4))
            .flat_map(|(t, b)| {
                // Same sign and exponent as the base, unrelated mantissa.
                let (t, b) = (load_any(t) as u32, load_any(b) as u32);
                ((b & 0xFF80_0000) | (t & 0x007F_FFFF)).to_le_bytes()
            })
            .collect();
        let (p, _) = encode(ValueKind::Float(layout), &b, &t);
        assert_eq!(p[0], XOR_FLOAT);
        round_trip(ValueKind::Float(layout), &b, &t);
        check_corruption(&p, &b, t.len());
    }

    /// What a quantized delta must decode to.
    fn expected_quant(layout: FloatLayout, t: &[u8], step: f64, bits: u32) -> Vec<u8> {
        t.chunks_exact(layout.bytes())
            .flat_map(|v| {
                let raw = load_any(v);
                match grid::quantize(grid::to_f64(layout, raw), step, bits) {
                    Some(q) => {
                        grid::dequantize(layout, q, step).to_le_bytes()[..layout.bytes()].to_vec()
                    }
                    None => v.to_vec(),
                }
            })
            .collect()
    }

    fn quant_round_trip(layout: FloatLayout, b: &[u8], t: &[u8], step: f64, bits: u32) -> usize {
        let (p, _) = encode_quantized(layout, b, t, step, bits);
        let mut out = vec![0u8; t.len()];
        decode_quantized(&p, b, &mut out).unwrap();
        assert_eq!(out, expected_quant(layout, t, step, bits));
        p.len()
    }

    #[test]
    fn quantized_deltas() {
        for layout in [
            FloatLayout::BF16,
            FloatLayout::F16,
            FloatLayout::F32,
            FloatLayout::F64,
        ] {
            for bits in [16, 32] {
                for n in [0usize, 1, 3, 1001] {
                    let (b, t) = pair(layout, n, 11 + n as u64);
                    let step = grid::step_for(0.05, bits);
                    quant_round_trip(layout, &b, &t, step, bits);
                    quant_round_trip(layout, &b, &b, step, bits);
                    // Beyond the grid: half the range.
                    quant_round_trip(layout, &b, &t, grid::step_for(0.025, bits), bits);
                }
                let s = specials(layout);
                let mut rev: Vec<u8> = s.chunks(layout.bytes()).rev().flatten().copied().collect();
                quant_round_trip(layout, &s, &rev, 1e-3, bits);
                rev.rotate_left(layout.bytes());
                quant_round_trip(layout, &s, &rev, 1e-3, bits);
                // Degenerate steps give escapes, never panics.
                quant_round_trip(layout, &s, &rev, 0.0, bits);
                quant_round_trip(layout, &s, &rev, f64::NAN, bits);
            }
        }
        let (b, t) = pair(FloatLayout::F32, 20_000, 1);
        let size = quant_round_trip(FloatLayout::F32, &b, &t, grid::step_for(0.06, 16), 16);
        // |delta| <= 5e-5 is at most 28 steps of 1.8e-6: about 6 bits per value.
        assert!(size < 20_000 * 7 / 8, "{size}");
    }

    #[test]
    fn chained_quantized_deltas_are_route_independent() {
        let layout = FloatLayout::BF16;
        let (a, b) = pair(layout, 999, 21);
        let (_, c) = pair(layout, 999, 22);
        let step = grid::step_for(0.05, 16);
        let (p_ab, _) = encode_quantized(layout, &a, &b, step, 16);
        let mut b2 = vec![0u8; b.len()];
        decode_quantized(&p_ab, &a, &mut b2).unwrap();
        let (p_bc, _) = encode_quantized(layout, &b2, &c, step, 16);
        let mut c2 = vec![0u8; c.len()];
        decode_quantized(&p_bc, &b2, &mut c2).unwrap();
        assert_eq!(c2, expected_quant(layout, &c, step, 16));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn random_pairs_round_trip(
            bytes in prop::collection::vec(any::<u8>(), 0..600),
            mask in prop::collection::vec(any::<u8>(), 600),
            li in 0usize..6,
        ) {
            let layout = LAYOUTS[li];
            let n = bytes.len() / layout.bytes() * layout.bytes();
            let b = &bytes[..n];
            let t: Vec<u8> = b.iter().zip(&mask).map(|(x, m)| x ^ (m & 0x0F)).collect();
            round_trip(ValueKind::Float(layout), b, &t);
            round_trip(ValueKind::Bytes, b, &t);
            if layout.bytes() >= 2 {
                let (p, _) = encode_quantized(layout, b, &t, 1e-3, 16);
                let mut out = vec![0u8; n];
                decode_quantized(&p, b, &mut out).unwrap();
                prop_assert_eq!(out, expected_quant(layout, &t, 1e-3, 16));
            }
        }

        #[test]
        fn random_payloads_never_panic(
            p in prop::collection::vec(any::<u8>(), 0..300),
            v in 0u8..9,
            n in 0usize..64,
        ) {
            let mut p = p;
            if let Some(f) = p.first_mut() {
                *f = v;
            }
            let base = vec![0x3Fu8; n];
            let mut out = vec![0u8; n];
            let _ = decode(&p, &base, &mut out);
        }
    }
}
