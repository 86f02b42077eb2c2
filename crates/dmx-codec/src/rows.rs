//! The row-relative exponent transform (codec id 3, `FLOAT_HUFF_ROWS`).
//!
//! Rows of a weight matrix (output neurons, embedding vectors) differ in scale, so the
//! exponents of one row cluster around a row-specific value. Replacing every exponent by its
//! difference (modulo `2^E`) from the median exponent of its row makes the exponent
//! distribution of the whole chunk narrower, which the field-split Huffman code of codec 2
//! turns into fewer bits. Sign and mantissa bits are untouched; the transform is a bijection
//! for any bit pattern (NaN, Inf, zeros and subnormals included).
//!
//! Payload: `u32 row_len` (values per row), `u8 exp_bits`, `u8 bases_codec`, `u32 bases_len`,
//! the per-row bases (one byte each, coded as a chunk of bytes: codec 0 or 1), then the
//! payload of the transformed values: codec 2's for codec 3 (read only), codec 10's for codec
//! 11, codec 12's for codec 17. See docs/CODECS.md.

use crate::float::{self, load};
use crate::{Codec, CodecError, Encoded, FloatLayout};
use crate::{FloatPlan, split};

/// Largest exponent width the transform handles (bases are stored as bytes).
const MAX_EXP_BITS: u32 = 8;

/// Whether the transform is defined for `layout` (2- and 4-byte floats with at most 8
/// exponent bits: BF16, F16, F32).
pub fn supports(layout: FloatLayout) -> bool {
    layout.exp_bits <= MAX_EXP_BITS && matches!(layout.bytes(), 2 | 4)
}

/// Whether the transform applies to `layout` with rows of `row_len` values over `count`
/// values.
pub fn applies(layout: FloatLayout, row_len: usize, count: usize) -> bool {
    supports(layout) && row_len >= 8 && count >= 2 * row_len && count.is_multiple_of(row_len)
}

/// Exponent field position and mask of `layout`.
pub(crate) fn field(layout: FloatLayout) -> (u32, u64) {
    let shift = layout.bits() - 1 - layout.exp_bits;
    (shift, ((1u64 << layout.exp_bits) - 1) << shift)
}

/// The median exponent of every `stride`-th row, and the estimated saving in bits per value of
/// coding exponents relative to them (order-0 exponent entropy before minus after, less the
/// bases' entropy) over those rows. Unless `exact`, each median and the estimate use about
/// 64 values spread over the row; with `exact`, the medians use every value and no estimate
/// is made (0 is returned for it). `layout` must satisfy [`supports`].
pub fn row_bases(
    layout: FloatLayout,
    data: &[u8],
    row_len: usize,
    stride: usize,
    exact: bool,
) -> (Vec<u8>, f64) {
    debug_assert!(supports(layout));
    if exact {
        return (exact_medians(layout, data, row_len, stride), 0.0);
    }
    if layout.bytes() == 2 {
        row_bases_width::<2>(layout, data, row_len, stride, exact)
    } else {
        row_bases_width::<4>(layout, data, row_len, stride, exact)
    }
}

/// The median exponent of every value of every `stride`-th row: the smallest exponent whose
/// count, with the counts of the exponents below it, reaches half the row (rounded up). What
/// [`row_bases_width`] computes with `exact`, in three passes per row that run at vector
/// speed where they can: the exponents with their least and greatest, four histograms
/// (consecutive values of a row often share an exponent, and one table made every count wait
/// for the previous one), and the scan between the least and greatest.
fn exact_medians(layout: FloatLayout, data: &[u8], row_len: usize, stride: usize) -> Vec<u8> {
    let (shift, mask) = field(layout);
    crate::cpu::dispatch(
        crate::cpu::Level::detected(),
        #[inline(always)]
        || {
            if layout.bytes() == 2 {
                exact_medians_width::<2>(data, row_len, stride, shift, mask as u32)
            } else {
                exact_medians_width::<4>(data, row_len, stride, shift, mask as u32)
            }
        },
    )
}

#[inline(always)]
fn exact_medians_width<const B: usize>(
    data: &[u8],
    row_len: usize,
    stride: usize,
    shift: u32,
    mask: u32,
) -> Vec<u8> {
    let half = (row_len as u32).div_ceil(2);
    let mut exps = vec![0u8; row_len];
    let mut hist = vec![[0u32; 4]; 256];
    let mut medians = Vec::with_capacity(data.len() / (row_len * B) / stride.max(1) + 1);
    // A loop, not `map`: a closure is compiled out of line, without the dispatched features.
    for row in data.chunks_exact(row_len * B).step_by(stride.max(1)) {
        // The exponents: whole blocks of 16 values, then the rest one by one.
        for (x, v) in exps.chunks_exact_mut(16).zip(row.chunks_exact(16 * B)) {
            let mut w = [0u32; 16];
            load16::<B>(v, &mut w);
            for (x, w) in x.iter_mut().zip(w) {
                *x = ((w & mask) >> shift) as u8;
            }
        }
        let whole = row_len / 16 * 16;
        for (x, v) in exps[whole..row_len]
            .iter_mut()
            .zip(row[whole * B..].chunks_exact(B))
        {
            *x = ((load::<B>(v) as u32 & mask) >> shift) as u8;
        }
        let lo = exps.iter().copied().fold(u8::MAX, u8::min);
        let hi = exps.iter().copied().fold(0, u8::max);
        let mut quads = exps.chunks_exact(4);
        for q in &mut quads {
            for (k, &e) in q.iter().enumerate() {
                hist[usize::from(e)][k] += 1;
            }
        }
        for &e in quads.remainder() {
            hist[usize::from(e)][0] += 1;
        }
        let mut seen = 0;
        let mut median = None;
        for (e, h) in hist[usize::from(lo)..=usize::from(hi)]
            .iter_mut()
            .enumerate()
        {
            seen += h.iter().sum::<u32>();
            *h = [0; 4];
            if median.is_none() && seen >= half {
                median = Some(lo as usize + e);
            }
        }
        medians.push(median.unwrap_or(usize::from(lo)) as u8);
    }
    medians
}

/// [`row_bases`] by one histogram pass per row. [`row_bases`] sends `exact` requests to
/// [`exact_medians`]; the `exact` path here is the definition its test holds it to.
fn row_bases_width<const B: usize>(
    layout: FloatLayout,
    data: &[u8],
    row_len: usize,
    stride: usize,
    exact: bool,
) -> (Vec<u8>, f64) {
    let (shift, mask) = field(layout);
    let size = 1usize << layout.exp_bits;
    let top = size - 1;
    let mut hist = vec![0u32; size];
    let mut plain = vec![0u64; size];
    let mut moved = vec![0u64; size];
    let mut base_hist = vec![0u64; size];
    // The median of about 64 values spread over the row is a good enough centre (any base
    // is valid; the decoder reads it), and the estimate uses the same values.
    let step = if exact { 1 } else { (row_len / 64).max(1) };
    let half = (row_len.div_ceil(step) as u32).div_ceil(2);
    let bases: Vec<u8> = data
        .chunks_exact(row_len * B)
        .step_by(stride.max(1))
        .map(|row| {
            let (mut lo, mut hi) = (top, 0);
            for v in row.chunks_exact(B).step_by(step) {
                let e = ((load::<B>(v) & mask) >> shift) as usize & top;
                hist[e] += 1;
                lo = lo.min(e);
                hi = hi.max(e);
            }
            let mut seen = 0;
            let mut median = lo;
            for (e, h) in hist[lo..=hi].iter_mut().enumerate() {
                if seen < half {
                    seen += *h;
                    median = lo + e;
                }
                plain[lo + e] += u64::from(*h);
                *h = 0;
            }
            // The exact bases are used as they are: no estimate needed.
            if !exact {
                for v in row.chunks_exact(B).step_by(step) {
                    let e = ((load::<B>(v) & mask) >> shift) as usize;
                    moved[e.wrapping_sub(median) & top] += 1;
                }
            }
            base_hist[median] += 1;
            median as u8
        })
        .collect();
    if exact {
        return (bases, 0.0);
    }
    let values = (bases.len() * row_len.div_ceil(step)).max(1) as f64;
    let gain = float::entropy(&plain) - float::entropy(&moved) - float::entropy(&base_hist);
    (bases, gain / values)
}

/// `data` with each row's base subtracted from the exponent field (the forward transform of
/// [`apply`], into a new buffer).
fn transformed(layout: FloatLayout, data: &[u8], row_len: usize, bases: &[u8]) -> Vec<u8> {
    debug_assert!(supports(layout));
    let mut out = vec![0u8; data.len()];
    if layout.bytes() == 2 {
        transformed_width::<2>(layout, data, row_len, bases, &mut out);
    } else {
        transformed_width::<4>(layout, data, row_len, bases, &mut out);
    }
    out
}

fn transformed_width<const B: usize>(
    layout: FloatLayout,
    data: &[u8],
    row_len: usize,
    bases: &[u8],
    out: &mut [u8],
) {
    let (_, mask) = field(layout);
    crate::cpu::dispatch(
        crate::cpu::Level::detected(),
        #[inline(always)]
        || {
            let rows = data
                .chunks_exact(row_len * B)
                .zip(out.chunks_exact_mut(row_len * B));
            for ((row, dst), &base) in rows.zip(bases) {
                move_values::<B>(row, dst, mask, row_delta(layout, base, true));
            }
        },
    );
}

/// Writes to `dst` the values of `src` (`B` bytes each, little-endian) with `delta` added to
/// their exponent field `mask` (`moved`, the tests' definition), computed in the values' own
/// width and in blocks of 16 so the loop vectorizes (value by value through `u64` it did not:
/// 5.6 instructions per value). `delta` has no bits outside `mask`, so adding it to the whole value carries
/// nothing into the field from below, and masking drops what carries out.
#[inline(always)]
pub(crate) fn move_values<const B: usize>(src: &[u8], dst: &mut [u8], mask: u64, delta: u64) {
    let (m, d) = (mask as u32, delta as u32);
    let mut blocks = src.chunks_exact(16 * B).zip(dst.chunks_exact_mut(16 * B));
    for (s, o) in &mut blocks {
        let mut w = [0u32; 16];
        load16::<B>(s, &mut w);
        w = w.map(|x| move_one(x, m, d));
        store16::<B>(&w, o);
    }
    let rest = src.len() / (16 * B) * (16 * B);
    for (s, o) in src[rest..]
        .chunks_exact(B)
        .zip(dst[rest..].chunks_exact_mut(B))
    {
        o.copy_from_slice(&move_one(load::<B>(s) as u32, m, d).to_le_bytes()[..B]);
    }
}

/// [`move_values`] in place.
#[inline(always)]
pub(crate) fn move_in_place<const B: usize>(data: &mut [u8], mask: u64, delta: u64) {
    let (m, d) = (mask as u32, delta as u32);
    let mut blocks = data.chunks_exact_mut(16 * B);
    for v in &mut blocks {
        let mut w = [0u32; 16];
        load16::<B>(v, &mut w);
        w = w.map(|x| move_one(x, m, d));
        store16::<B>(&w, v);
    }
    for v in blocks.into_remainder().chunks_exact_mut(B) {
        let y = move_one(load::<B>(v) as u32, m, d);
        v.copy_from_slice(&y.to_le_bytes()[..B]);
    }
}

/// The 16 values of `B` bytes at the start of `src`, widened.
#[inline(always)]
pub(crate) fn load16<const B: usize>(src: &[u8], w: &mut [u32; 16]) {
    for (x, v) in w.iter_mut().zip(src.chunks_exact(B)) {
        let mut b = [0u8; 4];
        b[..B].copy_from_slice(v);
        *x = u32::from_le_bytes(b);
    }
}

/// Writes the 16 values back as `B` bytes each.
#[inline(always)]
pub(crate) fn store16<const B: usize>(w: &[u32; 16], dst: &mut [u8]) {
    for (x, v) in w.iter().zip(dst.chunks_exact_mut(B)) {
        v.copy_from_slice(&x.to_le_bytes()[..B]);
    }
}

/// `moved` (the tests' definition) in a value's own width, widened to `u32` (a field of a
/// 16-bit value stays within its low half): exact because `delta` has no bits outside `mask`.
#[inline(always)]
pub(crate) fn move_one(x: u32, mask: u32, delta: u32) -> u32 {
    (x & !mask) | (x.wrapping_add(delta) & mask)
}

/// What is added to the exponent field (`field`'s mask) of every value of a row with `base`:
/// adding `2^E - base` subtracts `base` modulo `2^E` (`forward`), adding `base` restores.
pub(crate) fn row_delta(layout: FloatLayout, base: u8, forward: bool) -> u64 {
    let (shift, _) = field(layout);
    let modulus = 1u64 << layout.exp_bits;
    let base = u64::from(base) % modulus;
    (if forward { modulus - base } else { base }) << shift
}

/// `x` with `delta` added to its exponent field (`mask`); carries out of the field are masked
/// off. The definition the vector loops ([`move_values`]) are tested against.
#[cfg(test)]
fn moved(x: u64, mask: u64, delta: u64) -> u64 {
    (x & !mask) | ((x & mask).wrapping_add(delta) & mask)
}

/// Subtracts (`forward`) or adds back each row's base from the exponent field, in place.
/// `layout` must satisfy [`supports`].
pub fn apply(layout: FloatLayout, data: &mut [u8], row_len: usize, bases: &[u8], forward: bool) {
    debug_assert!(supports(layout));
    if layout.bytes() == 2 {
        apply_width::<2>(layout, data, row_len, bases, forward);
    } else {
        apply_width::<4>(layout, data, row_len, bases, forward);
    }
}

fn apply_width<const B: usize>(
    layout: FloatLayout,
    data: &mut [u8],
    row_len: usize,
    bases: &[u8],
    forward: bool,
) {
    let (_, mask) = field(layout);
    crate::cpu::dispatch(
        crate::cpu::Level::detected(),
        #[inline(always)]
        || {
            for (row, &base) in data.chunks_exact_mut(row_len * B).zip(bases) {
                move_in_place::<B>(row, mask, row_delta(layout, base, forward));
            }
        },
    );
}

/// Encodes with the transform when it beats `plain_size`: codec 17 (rANS-coded symbols)
/// where rANS is smaller on the transformed values under codec 12's rule
/// ([`split::ans::plan`]), else codec 11; returns the encoding with its entropy bound.
pub fn encode(
    layout: FloatLayout,
    data: &[u8],
    row_len: usize,
    plain_size: usize,
) -> Option<Encoded> {
    // Estimate on about 1/8 of the rows (at least 32), and skip the full trial when exponents
    // barely move (under 0.005 bits per value).
    let rows = data.len() / layout.bytes() / row_len;
    let stride = (rows / 32).clamp(1, 8);
    let (_, gain) = row_bases(layout, data, row_len, stride, false);
    if gain < 0.005 {
        return None;
    }
    let (bases, _) = row_bases(layout, data, row_len, 1, true);
    encode_bases(layout, data, row_len, &bases, plain_size, Inner::Split)
}

/// [`encode`] restricted to codec 11 (the transformed values over codec 10): for payloads
/// nested in another codec's, which an archive's minor version does not announce (see
/// [`crate::cast`]).
pub(crate) fn encode_huffman(
    layout: FloatLayout,
    data: &[u8],
    row_len: usize,
    plain_size: usize,
) -> Option<Encoded> {
    let (bases, _) = row_bases(layout, data, row_len, 1, true);
    encode_bases(layout, data, row_len, &bases, plain_size, Inner::Huffman)
}

/// The codec of the transformed values: 12 where it pays, else 10 (written, codecs 17 and
/// 11), 10 only (codec 11, for nested payloads), or 2 (codec 3, read only; written by tests
/// to check the reader).
#[derive(Clone, Copy)]
enum Inner {
    Split,
    Huffman,
    #[cfg(test)]
    Huff,
}

/// Encodes with the given row bases when that beats `plain_size`.
fn encode_bases(
    layout: FloatLayout,
    data: &[u8],
    row_len: usize,
    bases: &[u8],
    plain_size: usize,
    inner: Inner,
) -> Option<Encoded> {
    let moved = transformed(layout, data, row_len, bases);
    let a = float::Analysis::new(layout, &moved);
    let (codec, plan) = match inner {
        // The plain chunk's choice (codec 12 where it pays, else 10), on the moved values.
        Inner::Split => match FloatPlan::new(layout, a, &moved) {
            p @ FloatPlan::Rans(_) => (Codec::FloatSplitRansRows, p),
            p @ FloatPlan::Split(_) => (Codec::FloatSplitRows, p),
            p @ FloatPlan::Huff(_) => (Codec::FloatHuffRows, p),
        },
        Inner::Huffman => (
            Codec::FloatSplitRows,
            FloatPlan::Split(split::best_plan(&a, Some(&moved))),
        ),
        #[cfg(test)]
        Inner::Huff => (Codec::FloatHuffRows, FloatPlan::Huff(a.best_plan())),
    };
    let side = crate::encode(crate::ValueKind::Bytes, bases, 3);
    let size = HEADER + side.payload.len() + plan.size();
    if size >= plain_size {
        return None;
    }
    let mut out = Vec::with_capacity(size);
    write_head(&mut out, row_len, layout, &side);
    let values = plan.encode(layout, &moved);
    out.extend_from_slice(&values.payload);
    Some(Encoded {
        codec,
        payload: out,
        entropy_bits: values.entropy_bits + side.payload.len() as f64 * 8.0,
    })
}

/// Fixed header bytes of a codec-3, codec-11 or codec-16 payload.
pub(crate) const HEADER: usize = 10;

/// Appends the fixed header of an exponent-transform payload (codecs 3, 11 and 16): `unit`
/// (values per row, or the period), the exponent width, the bases' codec and length, then
/// the coded bases `side`.
pub(crate) fn write_head(out: &mut Vec<u8>, unit: usize, layout: FloatLayout, side: &Encoded) {
    out.extend_from_slice(&(unit as u32).to_le_bytes());
    out.push(layout.exp_bits as u8);
    out.push(side.codec as u8);
    out.extend_from_slice(&(side.payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&side.payload);
}

/// The reader's messages for the header of one exponent-transform codec.
pub(crate) struct HeadMessages {
    /// The payload is shorter than [`HEADER`].
    pub(crate) truncated: &'static str,
    /// The bases' codec byte is no codec id.
    pub(crate) unknown_side: &'static str,
    /// The bases' codec is neither raw nor zstd.
    pub(crate) float_side: &'static str,
    /// The bases run past the payload.
    pub(crate) side_past: &'static str,
    /// The inner payload's width is not 2 or 4.
    pub(crate) width: &'static str,
    /// The exponent width is out of range.
    pub(crate) exp_bits: &'static str,
}

/// The header of an exponent-transform payload, read and checked (codecs 3, 11 and 16).
pub(crate) struct Head<'a> {
    /// Values per row, or the period.
    pub(crate) unit: usize,
    /// The values' layout (from the inner payload's width and the header's exponent width).
    pub(crate) layout: FloatLayout,
    side_codec: Codec,
    side: &'a [u8],
    /// The inner payload, to the end.
    pub(crate) inner: &'a [u8],
}

impl Head<'_> {
    /// Decodes the `n` bases.
    pub(crate) fn bases(&self, n: usize) -> Result<Vec<u8>, CodecError> {
        let mut bases = vec![0u8; n];
        crate::decode(self.side_codec, self.side, &mut bases)?;
        Ok(bases)
    }
}

/// Reads the header of an exponent-transform payload; `msg` names the codec's errors.
pub(crate) fn read_head<'a>(payload: &'a [u8], msg: &HeadMessages) -> Result<Head<'a>, CodecError> {
    let head = payload
        .get(..HEADER)
        .ok_or(CodecError::Corrupt(msg.truncated))?;
    let unit = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
    let exp_bits = u32::from(head[4]);
    // A byte of the payload, not the chunk record's codec: say so if it is unknown.
    let side_codec = Codec::from_id(head[5]).map_err(|_| CodecError::Corrupt(msg.unknown_side))?;
    let side_len = u32::from_le_bytes([head[6], head[7], head[8], head[9]]) as usize;
    if !matches!(side_codec, Codec::Raw | Codec::Zstd) {
        return Err(CodecError::Corrupt(msg.float_side));
    }
    let side = payload
        .get(HEADER..HEADER.saturating_add(side_len))
        .ok_or(CodecError::Corrupt(msg.side_past))?;
    let inner = &payload[HEADER + side_len..];
    let bytes = match inner.first() {
        Some(&b @ (2 | 4)) => b,
        _ => return Err(CodecError::Corrupt(msg.width)),
    };
    let layout = FloatLayout { bytes, exp_bits };
    if exp_bits == 0 || exp_bits > MAX_EXP_BITS || exp_bits + 1 >= layout.bits() {
        return Err(CodecError::Corrupt(msg.exp_bits));
    }
    Ok(Head {
        unit,
        layout,
        side_codec,
        side,
        inner,
    })
}

/// The reader's messages of codecs 3 and 11.
const MESSAGES: HeadMessages = HeadMessages {
    truncated: "row payload header truncated",
    unknown_side: "row payload names an unknown codec for its row bases",
    float_side: "row bases use a float codec",
    side_past: "row bases exceed the payload",
    width: "row payload wraps an unsupported width",
    exp_bits: "row payload has an invalid exponent width",
};

/// Decodes a codec-3 payload (the transform over a codec-2 payload) into `out` (its raw
/// length).
pub fn decode(payload: &[u8], out: &mut [u8]) -> Result<(), CodecError> {
    decode_inner(payload, out, float::decode)
}

/// Decodes a codec-11 payload (the transform over a codec-10 payload) into `out` (its raw
/// length).
pub fn decode_split(payload: &[u8], out: &mut [u8]) -> Result<(), CodecError> {
    decode_inner(payload, out, split::decode)
}

/// Decodes a codec-17 payload (the transform over a codec-12 payload) into `out` (its raw
/// length).
pub fn decode_rans(payload: &[u8], out: &mut [u8]) -> Result<(), CodecError> {
    decode_inner(payload, out, split::ans::decode)
}

fn decode_inner(
    payload: &[u8],
    out: &mut [u8],
    inner_decode: fn(&[u8], &mut [u8]) -> Result<(), CodecError>,
) -> Result<(), CodecError> {
    let head = read_head(payload, &MESSAGES)?;
    let (row_len, layout) = (head.unit, head.layout);
    let row_bytes = row_len.saturating_mul(layout.bytes());
    if row_len == 0 || !out.len().is_multiple_of(row_bytes) {
        return Err(CodecError::Corrupt("row length does not divide the chunk"));
    }
    let bases = head.bases(out.len() / row_bytes)?;
    inner_decode(head.inner, out)?;
    apply(layout, out, row_len, &bases, false);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::pseudo_bytes as pseudo;

    /// BF16 rows whose exponents sit around a row-specific value.
    fn scaled_rows(rows: usize, row_len: usize) -> Vec<u8> {
        let noise = pseudo(rows * row_len * 2, 7);
        let mut out = Vec::new();
        for r in 0..rows {
            for i in 0..row_len {
                let b = noise[(r * row_len + i) * 2];
                let exp = 100 + (r % 23) as u16 + u16::from(b % 4);
                let v = u16::from(b & 0x80) << 8
                    | exp << 7
                    | u16::from(noise[(r * row_len + i) * 2 + 1] & 0x7f);
                out.extend_from_slice(&v.to_le_bytes());
            }
        }
        out
    }

    /// The side codec is a payload byte: an unknown one is a corrupt payload, never
    /// reported as the chunk's codec id (the chunk record says 3).
    #[test]
    fn an_unknown_side_codec_is_a_corrupt_payload() {
        let mut payload = vec![0u8; HEADER + 4];
        payload[..4].copy_from_slice(&4u32.to_le_bytes());
        payload[4] = 8;
        payload[5] = 162;
        let err = decode(&payload, &mut [0u8; 8]).unwrap_err();
        assert!(matches!(err, CodecError::Corrupt(_)), "{err:?}");
        assert!(!err.to_string().contains("codec id"), "{err}");
    }

    /// The loops in the values' width against the `u64` definition: every 16-bit pattern
    /// and a spread of 32-bit ones, every base of the 16-bit dtypes and a spread of F32's,
    /// both directions, copied and in place, at every CPU level.
    #[test]
    fn moving_in_the_values_width_is_the_definition() {
        let load = |v: &[u8]| {
            let mut w = [0u8; 8];
            w[..v.len()].copy_from_slice(v);
            u64::from_le_bytes(w)
        };
        let wide: Vec<u8> = (0..70_000u32)
            .map(|i| i.wrapping_mul(0x9E37_79B9) ^ (i << 23))
            .chain([0, u32::MAX, 0x7F80_0000, 0xFF80_0000, 0x8000_0000, 1])
            .flat_map(u32::to_le_bytes)
            .collect();
        let narrow: Vec<u8> = (0..=u16::MAX).flat_map(u16::to_le_bytes).collect();
        for layout in [FloatLayout::BF16, FloatLayout::F16, FloatLayout::F32] {
            let b = layout.bytes();
            let data = if b == 2 { &narrow } else { &wide };
            let bases: Vec<u8> = if b == 2 {
                (0..1u32 << layout.exp_bits).map(|e| e as u8).collect()
            } else {
                vec![0, 1, 2, 63, 126, 127, 128, 129, 200, 254, 255]
            };
            let (_, mask) = field(layout);
            for base in bases {
                for forward in [true, false] {
                    let delta = row_delta(layout, base, forward);
                    let want: Vec<u8> = data
                        .chunks_exact(b)
                        .flat_map(|v| moved(load(v), mask, delta).to_le_bytes()[..b].to_vec())
                        .collect();
                    for level in crate::cpu::Level::available() {
                        let mut got = vec![0u8; data.len()];
                        let mut inplace = data.clone();
                        crate::cpu::dispatch(
                            level,
                            #[inline(always)]
                            || {
                                if b == 2 {
                                    move_values::<2>(data, &mut got, mask, delta);
                                    move_in_place::<2>(&mut inplace, mask, delta);
                                } else {
                                    move_values::<4>(data, &mut got, mask, delta);
                                    move_in_place::<4>(&mut inplace, mask, delta);
                                }
                            },
                        );
                        assert!(got == want, "{layout:?} base {base} forward {forward}");
                        assert!(inplace == want, "{layout:?} base {base} in place");
                    }
                }
            }
        }
    }

    /// The exact medians against the histogram loop they replaced (`row_bases_width`, which
    /// computes the same medians with `exact`), on rows of every length from 1 to 70 and of
    /// 384 and 1,000, with sparse, skewed and special values.
    #[test]
    fn exact_medians_are_the_histogram_loop_s() {
        for layout in [FloatLayout::BF16, FloatLayout::F16, FloatLayout::F32] {
            let b = layout.bytes();
            for row_len in (1..=70).chain([384, 1000]) {
                let seed = 0x1234_5678_9ABC_DEF0 ^ row_len as u64;
                let data = crate::few_exponents(7 * row_len, b, 5, seed);
                for stride in [1, 2, 3] {
                    let want = if b == 2 {
                        row_bases_width::<2>(layout, &data, row_len, stride, true).0
                    } else {
                        row_bases_width::<4>(layout, &data, row_len, stride, true).0
                    };
                    let got = row_bases(layout, &data, row_len, stride, true).0;
                    assert_eq!(got, want, "{layout:?} row_len {row_len} stride {stride}");
                }
            }
        }
    }

    #[test]
    fn transform_is_a_bijection_on_every_pattern() {
        for layout in [FloatLayout::BF16, FloatLayout::F16, FloatLayout::F32] {
            let data = pseudo(64 * layout.bytes() * 5, 3);
            let (bases, _) = row_bases(layout, &data, 64, 1, true);
            let mut t = data.clone();
            apply(layout, &mut t, 64, &bases, true);
            assert_eq!(t, transformed(layout, &data, 64, &bases));
            apply(layout, &mut t, 64, &bases, false);
            assert_eq!(t, data);
        }
    }

    /// Decodes an encoding of this module by its codec id.
    fn decode_any(enc: &Encoded, out: &mut [u8]) -> Result<(), CodecError> {
        crate::decode(enc.codec, &enc.payload, out)
    }

    #[test]
    fn row_scaled_data_round_trips_and_shrinks() {
        let data = scaled_rows(64, 128);
        let layout = FloatLayout::BF16;
        let plain = float::Analysis::new(layout, &data).best_plan().size;
        let enc = encode(layout, &data, 128, usize::MAX).unwrap();
        assert!(
            enc.payload.len() < plain,
            "{} vs {plain}",
            enc.payload.len()
        );
        let mut out = vec![0u8; data.len()];
        decode_any(&enc, &mut out).unwrap();
        assert_eq!(out, data);
        // The same transform over codec 2 (codec 3, written by earlier versions) still reads.
        let (bases, _) = row_bases(layout, &data, 128, 1, true);
        let old = encode_bases(layout, &data, 128, &bases, usize::MAX, Inner::Huff).unwrap();
        assert_eq!(old.codec, Codec::FloatHuffRows);
        let mut out = vec![0u8; data.len()];
        decode(&old.payload, &mut out).unwrap();
        assert_eq!(out, data);
        assert!(decode_split(&old.payload, &mut out).is_err());
    }

    /// Rows whose exponents sit on one level each (a narrow, skewed symbol distribution that
    /// whole-bit codes fit badly) take codec 17; rows of random exponents around their level
    /// keep codec 11 when rANS saves less than 1/1000. Both restore the bytes, and neither
    /// decodes as the other.
    #[test]
    fn rans_is_used_where_it_pays() {
        let layout = FloatLayout::BF16;
        let noise = pseudo(64 * 128 * 2, 11);
        let mut skewed = Vec::new();
        for r in 0..64usize {
            for i in 0..128usize {
                let b = noise[(r * 128 + i) * 2];
                // 90 % at the row's level, the rest one binade below; 4 noisy mantissa bits.
                let exp = 100 + (r % 23) as u16 - u16::from(b.is_multiple_of(10));
                let v = exp << 7 | u16::from(noise[(r * 128 + i) * 2 + 1] & 0x0f);
                skewed.extend_from_slice(&v.to_le_bytes());
            }
        }
        let rans = encode(layout, &skewed, 128, usize::MAX).unwrap();
        assert_eq!(rans.codec, Codec::FloatSplitRansRows);
        let mut out = vec![0u8; skewed.len()];
        decode_any(&rans, &mut out).unwrap();
        assert_eq!(out, skewed);
        assert!(decode_split(&rans.payload, &mut out).is_err());
        // Against codec 11 on the same rows: smaller.
        let (bases, _) = row_bases(layout, &skewed, 128, 1, true);
        let moved = transformed(layout, &skewed, 128, &bases);
        let a = float::Analysis::new(layout, &moved);
        let huffman = split::best_plan(&a, Some(&moved)).size;
        assert!(
            rans.payload.len() < huffman,
            "{} vs {huffman}",
            rans.payload.len()
        );
        let flat = scaled_rows(64, 128);
        let enc = encode(layout, &flat, 128, usize::MAX).unwrap();
        let mut out = vec![0u8; flat.len()];
        decode_any(&enc, &mut out).unwrap();
        assert_eq!(out, flat);
        if enc.codec == Codec::FloatSplitRows {
            assert!(decode_rans(&enc.payload, &mut out).is_err());
        }
    }

    #[test]
    fn special_values_survive() {
        // NaN payloads, infinities, zeros and subnormals in every row.
        let specials = crate::F32_SPECIALS;
        let data: Vec<u8> = (0..32 * 16)
            .flat_map(|i| specials[i % 8].to_le_bytes())
            .collect();
        let layout = FloatLayout::F32;
        let (bases, _) = row_bases(layout, &data, 16, 1, true);
        for inner in [Inner::Split, Inner::Huff] {
            let enc = encode_bases(layout, &data, 16, &bases, usize::MAX, inner).unwrap();
            let mut out = vec![0u8; data.len()];
            decode_any(&enc, &mut out).unwrap();
            assert_eq!(out, data);
        }
    }

    #[test]
    fn corrupt_payloads_error_without_panicking() {
        let data = scaled_rows(16, 64);
        let enc = encode(FloatLayout::BF16, &data, 64, usize::MAX).unwrap();
        let payload = &enc.payload;
        let mut out = vec![0u8; data.len()];
        for cut in 0..payload.len() {
            assert!(
                decode_any(
                    &Encoded {
                        payload: payload[..cut].to_vec(),
                        ..enc.clone()
                    },
                    &mut out
                )
                .is_err()
            );
        }
        for i in 0..payload.len().min(400) {
            let mut bad = payload.clone();
            bad[i] ^= 0xA5;
            let _ = decode_split(&bad, &mut out);
            let _ = decode_rans(&bad, &mut out);
            let _ = decode(&bad, &mut out);
        }
        let mut short = vec![0u8; data.len() - 2];
        assert!(decode_any(&enc, &mut short).is_err());
    }
}
