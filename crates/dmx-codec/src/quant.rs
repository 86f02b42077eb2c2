//! Aligned integer quantization: lossy, every value on the shared grid of [`crate::grid`].
//!
//! A finite value `x` becomes `q = round_half_even(x / step)` when `|q| <= grid::qmax(bits)`
//! and decodes to [`grid::dequantize`]`(layout, q, step)`: `q · step` in `f64`, rounded once
//! to the dtype. So `|x − x̂| <= step / 2 + half an ulp of x̂` (the second term is the
//! rounding of `q · step` to the dtype). Values off the grid (NaN, ±Inf, beyond `qmax` steps)
//! are *escapes*: stored as their exact bits. A zero decodes to `+0` (the grid has one zero).
//!
//! Payload:
//!
//! ```text
//! u8 version (1; 2 for codec 14; 3 for codec 15) | u8 value bytes (2, 4, 8)
//! u8 exponent bits | u8 bits | f64 step (LE bits) | varint count | varint escapes
//! escapes > 0: ints::encode_unsigned block of the gaps before each escape
//!              (position − end of the previous escape), then the escaped values' bytes
//! codec 15: u8 axis (0 rows, 1 columns) | varint values per row | u8 classes (1..=16)
//!           ints::encode_unsigned block of the class of each row or column
//! ints::encode_signed block of the integers of the other values, in order (codec 14: one
//!   Huffman table per context, the context of an integer the bit length of the zigzagged
//!   integer before it, at most 17; decoded one after the other; codec 15: the context of an
//!   integer the class of its row or column)
//! ```
//!
//! Codec 14 is written where its contexts make the integers more than 0.5 % smaller: in the
//! long kernels of CNNs a value's magnitude follows the tap before it (docs/CODECS.md §12).
//! Codec 15 is written for chunks of whole rows where classes of rows or columns of similar
//! scale make the integers more than 0.2 % smaller: an LSTM's gates, a CNN's filters
//! (docs/CODECS.md §13).

use crate::{CodecError, FloatLayout, escapes, grid};

/// The body of the values of width `B` (`F16` selects F16 among 2-byte layouts).
fn scan<const B: usize, const F16: bool>(data: &[u8], step: f64, m: f64) -> escapes::Split {
    escapes::scan::<B>(data, |raw| quantize::<B, F16>(raw, step, m))
}

/// The layout of the monomorphized loops: values of width `B`, `F16` selecting F16 among
/// 2-byte layouts.
#[inline(always)]
fn width_layout<const B: usize, const F16: bool>() -> FloatLayout {
    match (B, F16) {
        (2, false) => FloatLayout::BF16,
        (2, true) => FloatLayout::F16,
        (4, _) => FloatLayout::F32,
        _ => FloatLayout::F64,
    }
}

/// The bits of grid point `q` of a `B`-byte layout: `grid::dequantize`, with F32 and F64
/// converted inline (the same expression as the grid).
#[inline(always)]
fn point<const B: usize>(layout: FloatLayout, q: i64, step: f64) -> u64 {
    point_at::<B>(layout, q as f64, step)
}

/// [`point`] of the grid integer `q` given as an `f64` (exactly `q as f64`).
#[inline(always)]
fn point_at<const B: usize>(layout: FloatLayout, q: f64, step: f64) -> u64 {
    match B {
        4 => u64::from(((q * step) as f32).to_bits()),
        8 => (q * step).to_bits(),
        // `grid::dequantize`, its rounding inlined.
        _ if layout.exp_bits == 8 => u64::from(grid::round16::<8>(q * step)),
        _ => u64::from(grid::round16::<5>(q * step)),
    }
}

/// The integer `r` of [`on_grid`] (an integer-valued `f64`, `|r| < 2^51`) as an `i64`,
/// read from the bits of `r + MAGIC` (whose low bits hold it, in two's complement, above
/// `MAGIC`'s own): vector code where a conversion instruction would be one per value.
#[inline(always)]
fn grid_int(r: f64) -> i64 {
    (r + MAGIC).to_bits() as i64 - MAGIC.to_bits() as i64
}

/// `grid::quantize(grid::to_f64(layout, raw), step, bits)` for the layout of `B` and `F16`
/// ([`width_layout`]) with `m = grid::qmax(bits)`, without library calls: the conversion is
/// exact and [`on_grid`] rounds half to even.
#[inline(always)]
fn quantize<const B: usize, const F16: bool>(raw: u64, step: f64, m: f64) -> Option<i64> {
    // A non-finite value gives a non-finite or NaN quotient, which is off the grid.
    let (r, on) = on_grid(grid_value::<B, F16>(raw) / step, m);
    on.then_some(r as i64)
}

/// `1.5 · 2^52`: adding and subtracting it rounds an `f64` of magnitude below `2^51` to an
/// integer, half to even, in the default rounding mode.
const MAGIC: f64 = 6_755_399_441_055_744.0;

/// The integer nearest the quotient `t` (half to even) and whether it is on the grid of
/// largest integer `m`: `|t| < 2^51` (false for NaN and ±Inf; larger quotients are beyond
/// every grid, whose `m` is below 2^31) and the integer within `±m`.
#[inline(always)]
fn on_grid(t: f64, m: f64) -> (f64, bool) {
    let r = (t + MAGIC) - MAGIC;
    (r, (t.abs() < 2_251_799_813_685_248.0) & (r.abs() <= m))
}

/// The value of raw bits `raw` of the layout of `B` and `F16` ([`width_layout`]) as `f64`
/// (exact), NaN for F16's ±Inf and NaN (whose shifted bits are not a float of the same kind).
#[inline(always)]
fn grid_value<const B: usize, const F16: bool>(raw: u64) -> f64 {
    match (B, F16) {
        (2, false) => f64::from(f32::from_bits((raw as u32) << 16)),
        (2, true) => {
            // The f16 bits shifted into f32 position are the value times 2^-112, exactly.
            let mag = f64::from(f32::from_bits(((raw as u32) & 0x7FFF) << 13)) * 2f64.powi(112);
            let x = if raw & 0x8000 != 0 { -mag } else { mag };
            if raw & 0x7C00 == 0x7C00 { f64::NAN } else { x }
        }
        (4, _) => f64::from(f32::from_bits(raw as u32)),
        _ => f64::from_bits(raw),
    }
}

/// Payload format version of codec 5.
const VERSION: u8 = 1;
/// Payload format version of codec 14: the integers coded with previous-value contexts.
const VERSION_CTX: u8 = 2;
/// Payload format version of codec 15: the integers coded with row or column classes.
const VERSION_ROWS: u8 = 3;

/// The payload version of a body coded in `form`.
fn version_of(form: escapes::Form) -> u8 {
    match form {
        escapes::Form::Plain => VERSION,
        escapes::Form::Prev => VERSION_CTX,
        escapes::Form::Rows => VERSION_ROWS,
    }
}

/// The codec of a payload that this module's encoders wrote: [`Codec::QuantContext`] when
/// its integers are coded with previous-value contexts (payload version 2),
/// [`Codec::QuantRows`] when with row or column classes (version 3), else [`Codec::Quant`].
///
/// [`Codec::QuantContext`]: crate::Codec::QuantContext
/// [`Codec::QuantRows`]: crate::Codec::QuantRows
/// [`Codec::Quant`]: crate::Codec::Quant
pub fn codec(payload: &[u8]) -> crate::Codec {
    match payload.first() {
        Some(&VERSION_CTX) => crate::Codec::QuantContext,
        Some(&VERSION_ROWS) => crate::Codec::QuantRows,
        _ => crate::Codec::Quant,
    }
}
/// Fixed header bytes (version, layout, bits, step).
const HEADER: usize = 12;

/// Whether quantization handles `layout`: BF16, F16, F32 and F64.
pub fn supports(layout: FloatLayout) -> bool {
    layout == FloatLayout::BF16
        || layout == FloatLayout::F16
        || layout == FloatLayout::F32
        || layout == FloatLayout::F64
}

/// Quantizes on the grid of [`crate::grid`] (`q = round_half_even(x / step)`,
/// `|q| <= grid::qmax(bits)`); values that do not fit (NaN, ±Inf, beyond range; every value
/// when `step` is zero or not finite) are escaped and stored exactly. `bits` is the grid
/// width, 16 or 32 (any of 2..=32 works). Returns the self-describing payload and the order-0
/// entropy bound in bits (integer coder bound plus raw escape bits and their positions).
///
/// # Panics
/// If `layout` is not supported, `bits` is outside 2..=32, or `data` is not whole values.
pub fn encode(layout: FloatLayout, data: &[u8], step: f64, bits: u32) -> (Vec<u8>, f64) {
    encode_rows(layout, data, step, bits, 0)
}

/// [`encode`] of a chunk that holds whole rows of `row_len` values (0: no row structure):
/// where it pays, the integers are coded with a table per class of their row or column
/// (codec 15, docs/CODECS.md §13).
///
/// # Panics
/// As [`encode`].
pub fn encode_rows(
    layout: FloatLayout,
    data: &[u8],
    step: f64,
    bits: u32,
    row_len: usize,
) -> (Vec<u8>, f64) {
    let b = check_args(layout, data, bits, "quant::encode");
    let m = grid::qmax(bits) as f64;
    let split = match (b, layout.exp_bits) {
        (2, 8) => scan::<2, false>(data, step, m),
        (2, _) => scan::<2, true>(data, step, m),
        (4, _) => scan::<4, false>(data, step, m),
        _ => scan::<8, false>(data, step, m),
    };
    payload(layout, step, bits, &split, row_len)
}

/// The payload of the body `split` of values of `layout` on the grid (`step`, `bits`): the
/// header, then the body with the contexts that pay (codec 14 or, for whole rows of `row_len`
/// values, codec 15), the version naming them; and its entropy bound.
fn payload(
    layout: FloatLayout,
    step: f64,
    bits: u32,
    split: &escapes::Split,
    row_len: usize,
) -> (Vec<u8>, f64) {
    let count = split.qs.len() + split.gaps.len();
    let mut out = Vec::with_capacity(HEADER + 16 + count * bits as usize / 16);
    let b = layout.bytes() as u8;
    out.extend_from_slice(&[VERSION, b, layout.exp_bits as u8, bits as u8]);
    out.extend_from_slice(&step.to_bits().to_le_bytes());
    let contexts = escapes::Contexts {
        prev: true,
        row_len,
    };
    let (entropy, form) = escapes::put_choosing(split, &mut out, contexts);
    out[0] = version_of(form);
    (out, entropy)
}

/// Checks the arguments of the public encoders and restorers (`what` names the caller in the
/// panic message); returns the value width in bytes.
fn check_args(layout: FloatLayout, data: &[u8], bits: u32, what: &str) -> usize {
    assert!(supports(layout), "{what}: unsupported dtype");
    assert!((2..=32).contains(&bits), "{what}: bits must be in 2..=32");
    let b = layout.bytes();
    assert!(
        data.len().is_multiple_of(b),
        "{what}: data is not whole values"
    );
    b
}

/// The bytes that [`decode`] of [`encode`]`(layout, data, step, bits)` restores, computed
/// from the values directly (no payload): every value on the grid becomes its grid point,
/// every escape keeps its bits. Also what a quantized delta on the same grid restores
/// ([`crate::delta::encode_quantized`]). Tests check it against the decoder.
///
/// # Panics
/// As [`encode`].
pub fn restore(layout: FloatLayout, data: &[u8], step: f64, bits: u32) -> Vec<u8> {
    restore_into(layout, data, step, bits, None)
}

/// [`restore`] after checking its arguments; with `qs`, also collects the zigzagged integers
/// of the values on the grid.
fn restore_into(
    layout: FloatLayout,
    data: &[u8],
    step: f64,
    bits: u32,
    qs: Option<&mut Vec<u64>>,
) -> Vec<u8> {
    check_args(layout, data, bits, "quant::restore");
    let m = grid::qmax(bits) as f64;
    let mut out = vec![0u8; data.len()];
    match (layout.bytes(), layout.exp_bits) {
        (2, 8) => restore_width::<2, false>(data, step, m, &mut out, qs),
        (2, _) => restore_width::<2, true>(data, step, m, &mut out, qs),
        (4, _) => restore_width::<4, false>(data, step, m, &mut out, qs),
        _ => restore_width::<8, false>(data, step, m, &mut out, qs),
    }
    out
}

/// [`encode_rows`], also returning the bytes [`decode`] of the payload restores
/// ([`restore`]), from one quantization pass over the values.
///
/// # Panics
/// As [`encode`].
pub fn encode_restored(
    layout: FloatLayout,
    data: &[u8],
    step: f64,
    bits: u32,
    row_len: usize,
) -> (Vec<u8>, f64, Vec<u8>) {
    let b = check_args(layout, data, bits, "quant::encode");
    let count = data.len() / b;
    let m = grid::qmax(bits) as f64;
    let mut restored = vec![0u8; data.len()];
    let mut body = escapes::Split::counted(count);
    match (b, layout.exp_bits) {
        (2, 8) => split_width::<2, false>(data, step, m, &mut restored, &mut body),
        (2, _) => split_width::<2, true>(data, step, m, &mut restored, &mut body),
        (4, _) => split_width::<4, false>(data, step, m, &mut restored, &mut body),
        _ => split_width::<8, false>(data, step, m, &mut restored, &mut body),
    }
    let (out, entropy) = payload(layout, step, bits, &body, row_len);
    (out, entropy, restored)
}

/// The split of values of width `B` (`F16` selects F16 among 2-byte layouts) into `body` (an
/// [`escapes::Split::counted`]) and, into `out`, what they restore (as [`restore_width`]).
/// Blocks of [`BLOCK`] values without an escape take a branch-free path (compiled for the
/// CPU's level, see [`crate::cpu`]); a block with one goes value by value.
fn split_width<const B: usize, const F16: bool>(
    data: &[u8],
    step: f64,
    m: f64,
    out: &mut [u8],
    body: &mut escapes::Split,
) {
    crate::cpu::dispatch(
        crate::cpu::Level::detected(),
        #[inline(always)]
        || split_blocks::<B, F16>(data, step, m, out, body),
    );
}

/// Values per block of [`split_width`].
const BLOCK: usize = 8;

#[inline(always)]
fn split_blocks<const B: usize, const F16: bool>(
    data: &[u8],
    step: f64,
    m: f64,
    out: &mut [u8],
    body: &mut escapes::Split,
) {
    // Twice the relative error bound of `x * inv` against `x / step` (one rounding of
    // `inv`, one of the product).
    const NEAR: f64 = 1.0 / 2_251_799_813_685_248.0 * 4.0;
    let inv = 1.0 / step;
    // Four histograms, value `i` counted in `i mod 4`, summed at the end: runs of equal
    // tokens would otherwise wait on each other's increment in memory.
    const W: usize = escapes::Split::WIDTH;
    let layout = width_layout::<B, F16>();
    let mut hs = vec![0u64; 4 * W];
    let mut next = 0usize;
    let one = |i: usize,
               v: &[u8],
               o: &mut [u8],
               hs: &mut [u64],
               body: &mut escapes::Split,
               next: &mut usize| {
        let raw = crate::float::load::<B>(v);
        let r = match quantize::<B, F16>(raw, step, m) {
            None => {
                body.gaps.push((i - *next) as u64);
                *next = i + 1;
                body.escaped.extend_from_slice(v);
                raw
            }
            Some(q) => {
                let z = crate::ints::zigzag(q);
                body.qs.push(z);
                crate::ints::Hist::count(hs, W, i & 3, z);
                point::<B>(layout, q, step)
            }
        };
        o.copy_from_slice(&r.to_le_bytes()[..B]);
    };
    let mut blocks = data.chunks_exact(BLOCK * B);
    let mut outs = out.chunks_exact_mut(BLOCK * B);
    let mut i = 0usize;
    for (blk, ob) in (&mut blocks).zip(&mut outs) {
        // The grid integers of the block and whether all are on the grid: `quantize`
        // without its early returns (a NaN or infinite quotient fails the range test).
        // The quotient is taken as a product with `1 / step` (within 2^-51 of `x / step`,
        // relative), which rounds the same unless it lies that close to a half-integer:
        // then the block divides (`near`), so the integers are exactly `quantize`'s.
        let mut xs = [0f64; BLOCK];
        let mut rs = [0f64; BLOCK];
        let mut ok = true;
        let mut near = false;
        for (l, (r, x)) in rs.iter_mut().zip(&mut xs).enumerate() {
            *x = grid_value::<B, F16>(crate::float::load::<B>(&blk[l * B..(l + 1) * B]));
            let t = *x * inv;
            let (rt, on) = on_grid(t, m);
            ok &= on;
            near |= 0.5 - (t - rt).abs() <= t.abs() * NEAR;
            *r = rt;
        }
        if near {
            ok = true;
            for (r, &x) in rs.iter_mut().zip(&xs) {
                let (rt, on) = on_grid(x / step, m);
                ok &= on;
                *r = rt;
            }
        }
        if !ok {
            for l in 0..BLOCK {
                one(
                    i + l,
                    &blk[l * B..(l + 1) * B],
                    &mut ob[l * B..(l + 1) * B],
                    &mut hs,
                    body,
                    &mut next,
                );
            }
            i += BLOCK;
            continue;
        }
        // Every integer is on the grid here (`ok`), so within `2^51`.
        let zs = rs.map(|r| crate::ints::zigzag(grid_int(r)));
        body.qs.extend_from_slice(&zs);
        for (l, (&r, &z)) in rs.iter().zip(&zs).enumerate() {
            crate::ints::Hist::count(&mut hs, W, (i + l) & 3, z);
            let p = point_at::<B>(layout, r, step);
            ob[l * B..(l + 1) * B].copy_from_slice(&p.to_le_bytes()[..B]);
        }
        i += BLOCK;
    }
    for (l, (v, o)) in blocks
        .remainder()
        .chunks_exact(B)
        .zip(outs.into_remainder().chunks_exact_mut(B))
        .enumerate()
    {
        one(i + l, v, o, &mut hs, body, &mut next);
    }
    let counts = body
        .counts
        .as_mut()
        .expect("split_width counts the histogram");
    for (k, c) in counts.iter_mut().enumerate() {
        *c += hs[k] + hs[W + k] + hs[2 * W + k] + hs[3 * W + k];
    }
}

/// [`restore`], and in the same pass a lower bound on the size of [`encode`]'s payload (from
/// the integer coder's plan, without coding): what a writer comparing it with another form
/// needs to know whether to code it at all.
///
/// # Panics
/// As [`encode`].
pub fn restore_bounded(layout: FloatLayout, data: &[u8], step: f64, bits: u32) -> (Vec<u8>, usize) {
    let mut qs = Vec::with_capacity(data.len() / layout.bytes());
    let out = restore_into(layout, data, step, bits, Some(&mut qs));
    let bound = HEADER + body_lower_bound(&qs, data.len() / layout.bytes(), layout.bytes());
    (out, bound)
}

/// A lower bound on the bytes `escapes::put_choosing` writes for `count` values of `b` bytes
/// whose grid integers (zigzagged) are `qs`, the others escaped: the counts, at least one
/// byte of gaps and the escaped bytes, and the smaller integer block's plan (without or,
/// where they may be used, with previous-value contexts) less its slack.
pub(crate) fn body_lower_bound(qs: &[u64], count: usize, b: usize) -> usize {
    use crate::entropy::varint::varint_len;
    /// Bytes an integer block can come out below its plan's size bound.
    const PLAN_SLACK: usize = 64;
    let nesc = count - qs.len();
    let mut size = crate::ints::Plan::new(qs, None, 1).size;
    if qs.len() >= escapes::PREV_MIN {
        let ctx = escapes::prev_contexts(qs);
        size = size.min(crate::ints::Plan::new(qs, Some(&ctx), escapes::PREV_CONTEXTS).size);
    }
    varint_len(count as u64)
        + varint_len(nesc as u64)
        + if nesc > 0 { 1 + nesc * b } else { 0 }
        + size.saturating_sub(PLAN_SLACK)
}

/// [`restore`] of values of width `B` (`F16` selects F16 among 2-byte layouts); the grid
/// points as [`fill`] computes them.
/// With `qs`, also collects the zigzagged integers of the values on the grid.
fn restore_width<const B: usize, const F16: bool>(
    data: &[u8],
    step: f64,
    m: f64,
    out: &mut [u8],
    mut qs: Option<&mut Vec<u64>>,
) {
    let layout = width_layout::<B, F16>();
    for (v, o) in data.chunks_exact(B).zip(out.chunks_exact_mut(B)) {
        let raw = crate::float::load::<B>(v);
        let r = match quantize::<B, F16>(raw, step, m) {
            None => raw,
            Some(q) => {
                if let Some(qs) = qs.as_deref_mut() {
                    qs.push(crate::ints::zigzag(q));
                }
                point::<B>(layout, q, step)
            }
        };
        o.copy_from_slice(&r.to_le_bytes()[..B]);
    }
}

/// Decodes a payload of [`encode`] into `out` (the chunk's raw length): every value is
/// `grid::dequantize(layout, q, step)` or its exact escaped bits. Never panics; allocates
/// `O(out.len())`; corrupt input gives [`CodecError::Corrupt`].
pub fn decode(payload: &[u8], out: &mut [u8]) -> Result<(), CodecError> {
    decode_codec(codec(payload), payload, out)
}

/// [`decode`] of a chunk stored with codec id `codec` ([`Codec::Quant`],
/// [`Codec::QuantContext`] or [`Codec::QuantRows`]): a payload of another one is corrupt.
///
/// [`Codec::Quant`]: crate::Codec::Quant
/// [`Codec::QuantContext`]: crate::Codec::QuantContext
/// [`Codec::QuantRows`]: crate::Codec::QuantRows
pub fn decode_codec(codec: crate::Codec, payload: &[u8], out: &mut [u8]) -> Result<(), CodecError> {
    let form = match codec {
        crate::Codec::QuantContext => escapes::Form::Prev,
        crate::Codec::QuantRows => escapes::Form::Rows,
        _ => escapes::Form::Plain,
    };
    let version = version_of(form);
    let (head, layout) = escapes::head(payload, HEADER, version, supports, &MESSAGES)?;
    let bits = u32::from(head[3]);
    if !(2..=32).contains(&bits) {
        return Err(CodecError::Corrupt(
            "quant payload has an invalid grid width",
        ));
    }
    let mut sb = [0u8; 8];
    sb.copy_from_slice(&head[4..12]);
    let step = f64::from_bits(u64::from_le_bytes(sb));
    let b = layout.bytes();
    let body = escapes::get_with(payload, HEADER, b, out.len(), &MESSAGES, form)?;
    let qmax = grid::qmax(bits);
    if body.qs.iter().any(|q| q.unsigned_abs() > qmax as u64) {
        return Err(CodecError::Corrupt("quant integer beyond the grid"));
    }
    match b {
        2 => fill::<2>(layout, &body, step, out),
        4 => fill::<4>(layout, &body, step, out),
        _ => fill::<8>(layout, &body, step, out),
    }
    Ok(())
}

/// The reader's messages for the escapes and integers.
const MESSAGES: escapes::Messages = escapes::Messages {
    header: "quant payload header truncated",
    version: "unknown quant payload version",
    dtype: "quant payload has an unknown dtype",
    count: "quant payload value count disagrees with chunk size",
    too_many: "quant payload has too many escapes",
    position: "quant escape position out of range",
    truncated: "quant escaped values truncated",
    trailing: "quant payload has trailing bytes",
};

/// Writes the values: the escapes at their positions, `grid::dequantize` of the integers in
/// order elsewhere. F32 and F64 convert inline (the same expression as the grid); 2-byte
/// layouts look the integers present up in a table of the grid's values when that is cheaper
/// than converting each value.
fn fill<const B: usize>(layout: FloatLayout, body: &escapes::Body<'_>, step: f64, out: &mut [u8]) {
    let qs = &body.qs;
    let (lo, hi) = qs
        .iter()
        .fold((i64::MAX, i64::MIN), |(a, b), &q| (a.min(q), b.max(q)));
    let table: Vec<u64> = if B == 2 && hi >= lo && ((hi - lo) as usize) < qs.len() / 2 {
        (lo..=hi)
            .map(|q| grid::dequantize(layout, q, step))
            .collect()
    } else {
        Vec::new()
    };
    escapes::fill::<B>(body, out, |q: i64| -> u64 {
        if B == 2 && !table.is_empty() {
            table[(q - lo) as usize]
        } else {
            point::<B>(layout, q, step)
        }
    });
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::ints;
    use proptest::prelude::*;

    const LAYOUTS: [FloatLayout; 4] = [
        FloatLayout::BF16,
        FloatLayout::F16,
        FloatLayout::F32,
        FloatLayout::F64,
    ];

    fn to_bytes(layout: FloatLayout, vals: &[f64]) -> Vec<u8> {
        vals.iter()
            .flat_map(|&x| grid::from_f64(layout, x).to_le_bytes()[..layout.bytes()].to_vec())
            .collect()
    }

    /// The raw bits of the values of `data`.
    pub(crate) fn raw_values(layout: FloatLayout, data: &[u8]) -> Vec<u64> {
        data.chunks_exact(layout.bytes())
            .map(|c| {
                let mut w = [0u8; 8];
                w[..c.len()].copy_from_slice(c);
                u64::from_le_bytes(w)
            })
            .collect()
    }

    /// Encodes and decodes; checks every value against the grid model and the error bound.
    fn check(layout: FloatLayout, data: &[u8], step: f64, bits: u32) -> Vec<u8> {
        let (enc, entropy) = encode(layout, data, step, bits);
        assert!(entropy >= 0.0);
        let mut out = vec![0u8; data.len()];
        decode(&enc, &mut out).unwrap();
        assert!(
            restore(layout, data, step, bits) == out,
            "restore {layout:?} {bits}"
        );
        let (enc_r, entropy_r, restored_r) = encode_restored(layout, data, step, bits, 0);
        assert!(enc_r == enc && entropy_r.to_bits() == entropy.to_bits() && restored_r == out);
        let (restored, bound) = restore_bounded(layout, data, step, bits);
        assert!(
            restored == out && bound <= enc.len(),
            "{bound} {}",
            enc.len()
        );
        for (&x, &y) in raw_values(layout, data)
            .iter()
            .zip(&raw_values(layout, &out))
        {
            let xf = grid::to_f64(layout, x);
            match grid::quantize(xf, step, bits) {
                Some(q) => {
                    assert_eq!(y, grid::dequantize(layout, q, step));
                    let yf = grid::to_f64(layout, y);
                    let ulp = ulp(layout, yf);
                    assert!(
                        (xf - yf).abs() <= step.abs() / 2.0 + ulp / 2.0,
                        "{xf} -> {yf} step {step}"
                    );
                }
                None => assert_eq!(x, y, "escapes are exact"),
            }
        }
        enc
    }

    /// The spacing of `layout` values around `y`.
    fn ulp(layout: FloatLayout, y: f64) -> f64 {
        let f = layout.bits() - 1 - layout.exp_bits;
        let bias = (1i32 << (layout.exp_bits - 1)) - 1;
        let e = if y == 0.0 {
            1 - bias
        } else {
            (y.abs().log2().floor() as i32).max(1 - bias)
        };
        2f64.powi(e - f as i32)
    }

    fn weights(n: usize, seed: u64, scale: f64) -> Vec<f64> {
        crate::pseudo_bytes(8 * n, seed)
            .chunks_exact(8)
            .map(|c| {
                let u = u64::from_le_bytes(c.try_into().unwrap()) >> 11;
                let v = u as f64 / (1u64 << 53) as f64 * 2.0 - 1.0;
                v * v * v * scale
            })
            .collect()
    }

    #[test]
    fn round_trip_every_layout_and_width() {
        for layout in LAYOUTS {
            let w = weights(5000, 3, 0.05);
            let data = to_bytes(layout, &w);
            for bits in [16u32, 32, 8, 2] {
                let step = grid::step_for(0.05, bits);
                check(layout, &data, step, bits);
            }
        }
    }

    #[test]
    fn no_escapes_cost_one_byte() {
        let w = weights(1000, 5, 1.0);
        let data = to_bytes(FloatLayout::F32, &w);
        let (enc, _) = encode(FloatLayout::F32, &data, grid::step_for(1.0, 16), 16);
        let qs: Vec<i64> = w
            .iter()
            .map(|&x| grid::quantize(f64::from(x as f32), grid::step_for(1.0, 16), 16).unwrap())
            .collect();
        assert_eq!(enc.len(), HEADER + 2 + 1 + ints::encode_signed(&qs).len());
    }

    #[test]
    fn specials_escape_exactly() {
        for layout in LAYOUTS {
            let mut data = to_bytes(layout, &weights(300, 9, 1.0));
            let b = layout.bytes();
            let ones = (1u64 << layout.exp_bits) - 1;
            let f = layout.bits() - 1 - layout.exp_bits;
            let specials = [
                ones << f | 3,
                ones << f,
                1 << (layout.bits() - 1) | ones << f,
                ones << f | 1 << (f - 1),
                1 << (layout.bits() - 1),
                1,
            ];
            for (k, &s) in specials.iter().enumerate() {
                let at = [0, 1, 7, 150, 298, 299][k];
                data[at * b..(at + 1) * b].copy_from_slice(&s.to_le_bytes()[..b]);
            }
            // 4.0 is beyond 1.0 / qmax * qmax: escaped too.
            data[100 * b..101 * b].copy_from_slice(&grid::from_f64(layout, 4.0).to_le_bytes()[..b]);
            for bits in [16, 32] {
                check(layout, &data, grid::step_for(1.0, bits), bits);
            }
            check(layout, &data, f64::NAN, 16);
            check(layout, &data, 0.0, 16);
            check(layout, &data, -0.001, 16);
        }
    }

    #[test]
    fn empty_and_single() {
        for layout in LAYOUTS {
            check(layout, &[], 0.1, 16);
            check(layout, &to_bytes(layout, &[0.3]), 0.1, 16);
            check(layout, &to_bytes(layout, &[f64::INFINITY]), 0.1, 16);
        }
    }

    /// The payload and restored bytes are the same on every CPU level (the block path and
    /// the integer coder's lanes run compiled for the detected one), escapes included.
    #[test]
    fn every_cpu_level_encodes_alike() {
        use crate::cpu::{Level, with_level};
        let raws = crate::pseudo_bytes(8 * 6_001, 91);
        for layout in LAYOUTS {
            let b = layout.bytes();
            let mut vals: Vec<f64> = weights(6_001, 5, 0.05);
            vals[100] = f64::NAN;
            vals[2_000] = f64::INFINITY;
            vals[3_001] = 1e30;
            let weightlike = to_bytes(layout, &vals);
            let random = raws[..6_001 * b].to_vec();
            for data in [weightlike, random] {
                for (step, bits) in [(1e-4, 16), (3e-6, 32), (0.01, 16)] {
                    let run =
                        |level| with_level(level, || encode_restored(layout, &data, step, bits, 0));
                    let want = run(Level::SCALAR);
                    for level in Level::available() {
                        let got = run(level);
                        assert!(
                            got.0 == want.0 && got.2 == want.2,
                            "{layout:?} {level:?} {step}"
                        );
                    }
                }
            }
        }
    }

    /// Kernel-like values: along each kernel of 64 taps the magnitudes fall by half every 6
    /// taps (random signs and fractions, a few zeros), so an integer's size follows the one
    /// before it.
    fn kernels(n: usize, seed: u64) -> Vec<f64> {
        crate::pseudo_u64(n, seed)
            .enumerate()
            .map(|(i, r)| {
                if r % 13 == 0 {
                    return 0.0;
                }
                let mag = (1.0 + (r >> 11) as f64 / (1u64 << 53) as f64) / 2.0;
                let sign = if r >> 63 == 1 { -1.0 } else { 1.0 };
                sign * mag * (-((i % 64) as f64 / 6.0).floor()).exp2()
            })
            .collect()
    }

    /// Kernels get codec 14, which restores what codec 5 restores and is smaller; a payload
    /// of either is corrupt under the other's id; independent values keep codec 5; escapes,
    /// damaged payloads and the lower bound hold for codec 14 too.
    #[test]
    fn previous_value_contexts_pay_on_kernels_and_only_there() {
        for layout in [FloatLayout::BF16, FloatLayout::F32, FloatLayout::F64] {
            let mut vals = kernels(20_000, 3);
            vals[77] = f64::NAN;
            vals[5_000] = f64::INFINITY;
            let data = to_bytes(layout, &vals);
            let step = grid::step_for(1.0, 16);
            let enc = check(layout, &data, step, 16);
            assert_eq!(codec(&enc), crate::Codec::QuantContext, "{layout:?}");
            let (plain_out, plain_len) = {
                let mut split = match layout.bytes() {
                    2 => scan::<2, false>(&data, step, grid::qmax(16) as f64),
                    4 => scan::<4, false>(&data, step, grid::qmax(16) as f64),
                    _ => scan::<8, false>(&data, step, grid::qmax(16) as f64),
                };
                split.counts = None;
                let mut body = Vec::new();
                escapes::put(&split, &mut body);
                (restore(layout, &data, step, 16), HEADER + body.len())
            };
            assert!(
                enc.len() * 100 < plain_len * 97,
                "{layout:?}: {} vs codec 5's {plain_len}",
                enc.len()
            );
            let mut out = vec![0u8; data.len()];
            decode_codec(crate::Codec::QuantContext, &enc, &mut out).unwrap();
            assert_eq!(out, plain_out);
            assert!(decode_codec(crate::Codec::Quant, &enc, &mut out).is_err());
            if layout == FloatLayout::BF16 {
                // Every cut; about 200 bytes of the payload, each flipped three ways.
                crate::check_damaged_every(&enc, enc.len() / 200, |p| decode(p, &mut out));
            }
        }
        let w = weights(20_000, 5, 1.0);
        let data = to_bytes(FloatLayout::F32, &w);
        let enc = check(FloatLayout::F32, &data, grid::step_for(4.0, 16), 16);
        assert_eq!(codec(&enc), crate::Codec::Quant);
        let mut out = vec![0u8; data.len()];
        assert!(decode_codec(crate::Codec::QuantContext, &enc, &mut out).is_err());
    }

    /// A matrix of `rows` rows of `w` values whose scale halves from one row (`by_row`) or
    /// one column to the next, over 8 octaves.
    fn scaled_matrix(rows: usize, w: usize, by_row: bool, seed: u64) -> Vec<f64> {
        weights(rows * w, seed, 1.0)
            .iter()
            .enumerate()
            .map(|(j, &x)| {
                let unit = if by_row { j / w } else { j % w };
                x * (-((unit % 8) as f64)).exp2()
            })
            .collect()
    }

    /// The axis byte of a codec 15 payload without escapes: after the header and the two
    /// one-byte varints (count below 128 is not used here: both counts are read back).
    fn rows_axis(enc: &[u8]) -> u8 {
        let mut pos = HEADER;
        let _count = crate::entropy::varint::get_varint(enc, &mut pos).unwrap();
        let nesc = crate::entropy::varint::get_varint(enc, &mut pos).unwrap();
        assert_eq!(nesc, 0);
        enc[pos]
    }

    /// Matrices whose rows (or columns) differ in scale get codec 15 with classes on that
    /// axis, restore what codec 5 restores and are smaller; escapes keep their places; a
    /// payload is corrupt under another codec's id; data without such structure, a chunk
    /// without rows, or rows that do not divide the chunk keep codec 5 or 14.
    #[test]
    fn row_and_column_classes_pay_where_scales_differ() {
        let step = grid::step_for(1.0, 16);
        for layout in LAYOUTS {
            for (by_row, w) in [(true, 64usize), (false, 64), (true, 300), (false, 7)] {
                let rows = 40_000 / w + 1;
                let mut vals = scaled_matrix(rows, w, by_row, 9 + w as u64);
                let data = to_bytes(layout, &vals);
                let what = format!("{layout:?} by_row {by_row} w {w}");
                let (enc, entropy) = encode_rows(layout, &data, step, 16, w);
                assert!(entropy > 0.0);
                assert_eq!(codec(&enc), crate::Codec::QuantRows, "{what}");
                let axis = if by_row {
                    escapes::AXIS_ROWS
                } else {
                    escapes::AXIS_COLUMNS
                };
                assert_eq!(rows_axis(&enc), axis, "{what}");
                let plain = encode(layout, &data, step, 16).0;
                assert_ne!(codec(&plain), crate::Codec::QuantRows);
                assert!(
                    enc.len() * 100 < plain.len() * 97,
                    "{what}: {} vs {}",
                    enc.len(),
                    plain.len()
                );
                let mut out = vec![0u8; data.len()];
                decode(&enc, &mut out).unwrap();
                assert!(out == restore(layout, &data, step, 16), "{what}");
                let (enc_r, _, restored) = encode_restored(layout, &data, step, 16, w);
                assert!(enc_r == enc && restored == out, "{what}");
                for other in [crate::Codec::Quant, crate::Codec::QuantContext] {
                    assert!(decode_codec(other, &enc, &mut out).is_err(), "{what}");
                }
                // Escapes anywhere, a whole row of them included.
                for p in [0, 1, w, 5 * w + 3, vals.len() - 1] {
                    vals[p] = f64::NAN;
                }
                for v in &mut vals[2 * w..3 * w] {
                    *v = f64::INFINITY;
                }
                let data = to_bytes(layout, &vals);
                let enc = check_rows(layout, &data, step, 16, w);
                assert_eq!(codec(&enc), crate::Codec::QuantRows, "{what} with escapes");
            }
        }
        // No structure, no rows, or rows that do not divide the chunk: no classes.
        let flat = to_bytes(FloatLayout::F32, &weights(20_000, 5, 1.0));
        let enc = encode_rows(FloatLayout::F32, &flat, step, 16, 100).0;
        assert_eq!(codec(&enc), crate::Codec::Quant);
        let data = to_bytes(FloatLayout::F32, &scaled_matrix(100, 100, true, 3));
        for w in [0, 99, 10_000] {
            let enc = encode_rows(FloatLayout::F32, &data, step, 16, w).0;
            assert_ne!(codec(&enc), crate::Codec::QuantRows, "w {w}");
        }
        let mut out = vec![0u8; data.len()];
        let enc = encode(FloatLayout::F32, &data, step, 16).0;
        assert!(decode_codec(crate::Codec::QuantRows, &enc, &mut out).is_err());
    }

    /// [`encode_rows`] and [`decode`], checked against [`restore`].
    fn check_rows(layout: FloatLayout, data: &[u8], step: f64, bits: u32, w: usize) -> Vec<u8> {
        let (enc, _) = encode_rows(layout, data, step, bits, w);
        let mut out = vec![0u8; data.len()];
        decode(&enc, &mut out).unwrap();
        assert!(out == restore(layout, data, step, bits));
        enc
    }

    /// Damaged codec 15 payloads error (every cut, every byte flipped) and never panic; so do
    /// classes that break the reader's rules.
    #[test]
    fn damaged_row_classes_error() {
        let layout = FloatLayout::BF16;
        let step = grid::step_for(1.0, 16);
        let mut vals = scaled_matrix(400, 64, true, 4);
        vals[100] = f64::NAN;
        let data = to_bytes(layout, &vals);
        let (enc, _) = encode_rows(layout, &data, step, 16, 64);
        assert_eq!(codec(&enc), crate::Codec::QuantRows);
        let mut out = vec![0u8; data.len()];
        // Every cut; about 300 bytes of the payload, each flipped three ways.
        crate::check_damaged_every(&enc, enc.len() / 300, |p| decode(p, &mut out));
        // The classes' fields of a payload without escapes: axis, width, class count.
        let data = to_bytes(layout, &scaled_matrix(400, 64, false, 4));
        let (enc, _) = encode_rows(layout, &data, step, 16, 64);
        let mut pos = HEADER;
        let _ = crate::entropy::varint::get_varint(&enc, &mut pos).unwrap();
        let _ = crate::entropy::varint::get_varint(&enc, &mut pos).unwrap();
        let (axis, width, nctx) = (pos, pos + 1, pos + 2);
        assert_eq!((enc[axis], enc[width]), (escapes::AXIS_COLUMNS, 64));
        let mut out = vec![0u8; data.len()];
        decode(&enc, &mut out).unwrap();
        for (at, value, message) in [
            (axis, 2, "quant classes have an unknown axis"),
            (width, 0, "quant row length does not divide the value count"),
            (
                width,
                63,
                "quant row length does not divide the value count",
            ),
            (nctx, 0, "quant class count out of range"),
            (nctx, 17, "quant class count out of range"),
            (nctx, 1, "quant class out of range"),
        ] {
            let mut bad = enc.clone();
            bad[at] = value;
            assert_eq!(
                decode(&bad, &mut out),
                Err(CodecError::Corrupt(message)),
                "byte {at} = {value}"
            );
        }
    }

    #[test]
    fn truncated_and_corrupt_payloads_error() {
        let mut w = weights(2000, 4, 1.0);
        w[10] = f64::NAN;
        w[1999] = 1e9;
        let data = to_bytes(FloatLayout::BF16, &w);
        let (enc, _) = encode(FloatLayout::BF16, &data, grid::step_for(1.0, 16), 16);
        let mut out = vec![0u8; data.len()];
        crate::check_damaged(&enc, |p| decode(p, &mut out));
        for seed in 0..200u64 {
            let mut junk = crate::pseudo_bytes(30 + seed as usize, seed + 1);
            junk[0] = [VERSION, VERSION_CTX, VERSION_ROWS][seed as usize % 3];
            junk[1] = 2;
            junk[2] = 8;
            junk[3] = 16;
            let _ = decode(&junk, &mut out);
        }
    }

    /// Values on and next to the ties between grid points, in blocks with and without
    /// escapes: the product with `1 / step` the block path takes must round as the division
    /// (every restored value is compared with `grid::quantize`'s).
    #[test]
    fn ties_round_as_the_division() {
        for layout in LAYOUTS {
            for step in [2f64.powi(-10), 0.1, 1.0 / 3.0, 3e-3, 2f64.powi(-20) * 5.0] {
                let mut vals = Vec::new();
                for k in -300i32..300 {
                    let t = (f64::from(k) + 0.5) * step;
                    let y = grid::to_f64(layout, grid::from_f64(layout, t));
                    vals.push(y);
                    vals.push(-y);
                }
                let mut with_nan = vals.clone();
                with_nan[17] = f64::NAN;
                for vals in [vals, with_nan] {
                    let data = to_bytes(layout, &vals);
                    let (_, _, restored) = encode_restored(layout, &data, step, 16, 0);
                    for (&x, &y) in raw_values(layout, &data)
                        .iter()
                        .zip(&raw_values(layout, &restored))
                    {
                        let want = match grid::quantize(grid::to_f64(layout, x), step, 16) {
                            Some(q) => grid::dequantize(layout, q, step),
                            None => x,
                        };
                        assert_eq!(y, want, "{layout:?} step {step} {x:#x}");
                    }
                }
            }
        }
    }

    #[test]
    fn fast_quantize_matches_the_grid() {
        let raws = crate::pseudo_bytes(8 * 20_000, 77);
        for layout in LAYOUTS {
            for bits in [16u32, 32, 3] {
                let m = grid::qmax(bits) as f64;
                for step in [1e-3, 0.37, 1e-30, 3e5, 0.0, f64::NAN, 2f64.powi(-140), 7.0] {
                    for c in raws.chunks_exact(8) {
                        let raw = u64::from_le_bytes(c.try_into().unwrap())
                            & (u64::MAX >> (64 - layout.bits()));
                        // Also values near the grid: a few low bits set.
                        for raw in [raw, raw & !0xFFF0] {
                            let want = grid::quantize(grid::to_f64(layout, raw), step, bits);
                            let got = match (layout.bytes(), layout.exp_bits) {
                                (2, 8) => quantize::<2, false>(raw, step, m),
                                (2, _) => quantize::<2, true>(raw, step, m),
                                (4, _) => quantize::<4, false>(raw, step, m),
                                _ => quantize::<8, false>(raw, step, m),
                            };
                            assert_eq!(got, want, "{layout:?} {raw:#x}");
                        }
                    }
                }
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]
        #[test]
        fn random_bits_decode_on_the_grid(
            seed in any::<u64>(),
            n in 0usize..400,
            li in 0usize..4,
            wide in any::<bool>(),
            scale_exp in -20i32..20,
        ) {
            let layout = LAYOUTS[li];
            let data = crate::pseudo_bytes(n * layout.bytes(), seed);
            let bits = if wide { 32 } else { 16 };
            check(layout, &data, grid::step_for(2f64.powi(scale_exp), bits), bits);
        }
    }

    proptest! {
        // Matrices past codec 15's 4096-value minimum whose rows or columns differ in scale:
        // any row length, special values at random places; decoding gives `restore`'s bytes.
        #![proptest_config(ProptestConfig::with_cases(12))]
        #[test]
        fn scaled_matrices_decode_on_the_grid(
            seed in any::<u64>(),
            w in 1usize..400,
            extra in 0usize..3000,
            li in 0usize..4,
            by_row in any::<bool>(),
            wide in any::<bool>(),
            nspecial in 0usize..6,
        ) {
            let layout = LAYOUTS[li];
            let rows = (4096 + extra).div_ceil(w);
            let mut vals = scaled_matrix(rows, w, by_row, seed);
            let specials = [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 1e30, -0.0, 0.0];
            for (j, at) in crate::pseudo_u64(nspecial, seed ^ 1).enumerate() {
                let n = vals.len();
                vals[at as usize % n] = specials[j];
            }
            let data = to_bytes(layout, &vals);
            let bits = if wide { 32 } else { 16 };
            check_rows(layout, &data, grid::step_for(1.0, bits), bits, w);
        }
    }
}
