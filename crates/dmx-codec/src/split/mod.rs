//! The split-stream float codec (codec id 10, `FLOAT_SPLIT`).
//!
//! The same field split as codec 2 ([`crate::float`]): each value is a Huffman-coded
//! *symbol* (its top `w` bits) and a raw *residual* (the next `r = bits - w - tz` bits, with
//! `tz` trailing bits that are zero in every value dropped). What differs is where the bits
//! go and how long codes may be, both chosen for decoding speed:
//!
//! - The codes of the four quarters are four bit streams of codes only, and the residuals
//!   one stream of fixed-width fields after them. Finding a residual never waits on a code
//!   length, and one 8-byte load yields four codes (codes are at most 14 bits).
//! - Codes are always *complete* (Kraft sum exactly 1; a single used symbol takes zero
//!   bits), so a decode table of `2^max_len` two-byte entries (32 KiB at most) resolves every
//!   bit pattern in one lookup: no second level, no invalid entries, no checks in the loop.
//! - For 4-byte values the low one or two bytes may have Huffman codes of their own (four
//!   more streams each) where they are not noise: FP32 weights rounded from a lower
//!   precision, embeddings with a structured low mantissa.
//!
//! Values of 1, 2 and 4 bytes only (FP8, BF16, F16, F32); F64 stays on codec 2. See
//! docs/CODECS.md §9.

pub mod ans;

use crate::bits::{Lane, MAX_PUT_BITS, Streams, peek};
use crate::cpu::{Level, dispatch};
use crate::float::{self, Analysis, load, quarters};
use crate::huffman::{self, MAX_CODE_LEN};
use crate::{CodecError, FloatLayout};

/// Number of code streams per coded field: the values are cut into quarters.
pub const STREAMS: usize = 4;
/// Longest code length.
pub const MAX_LEN: u32 = MAX_CODE_LEN;
/// Entries of the decode table: one per pattern of [`MAX_LEN`] bits.
const TABLE_LEN: usize = 1 << MAX_LEN;
/// Widest symbol.
pub const MAX_SYM_BITS: u32 = 12;
/// Fixed payload header bytes before the Huffman table.
pub(crate) const HEADER: usize = 8;
/// Values per stream in one step of the lockstep loops (four codes fit one 57-bit load).
const ROUND: usize = 4;

/// Whether the codec handles values of `layout` (1-, 2- and 4-byte values).
pub fn supports(layout: FloatLayout) -> bool {
    matches!(layout.bytes(), 1 | 2 | 4)
}

/// The chosen parameters and the exact payload size.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Symbol width in bits.
    pub sym_bits: u32,
    /// Trailing zero bits dropped from every value.
    pub tz: u32,
    /// Code lengths for the `1 << sym_bits` symbols (complete, at most [`MAX_LEN`]).
    pub lengths: Vec<u8>,
    /// Code lengths of the low bytes coded with their own Huffman codes: byte 0 (bits 0–7)
    /// first, then byte 1; empty when the whole residual is stored raw. 4-byte values only.
    pub low_bytes: Vec<Vec<u8>>,
    /// Payload size in bytes: exact but for at most one byte per code stream (an upper
    /// bound).
    pub size: usize,
    /// Order-0 entropy bound in bits for this split (symbol entropy + residual bits).
    pub entropy_bits: f64,
}

/// Bytes of the residual area of `count` values of `r` bits: one bit stream, padded to a
/// whole byte at its end.
fn residual_bytes(count: usize, r: u32) -> usize {
    (count * r as usize).div_ceil(8)
}

/// The smallest plan over all symbol widths from `1 + exponent bits` up to 12 bits, for the
/// chunk scanned by `a` (whose layout must satisfy [`supports`]). With the chunk's `data`,
/// the plan also codes the low bytes of 4-byte values where that is smaller.
pub fn best_plan(a: &Analysis, data: Option<&[u8]>) -> Plan {
    let layout = a.layout();
    let bits = layout.bits();
    let hist_bits = a.hist_bits();
    let count = a.count();
    let mut best: Option<Plan> = None;
    for w in min_width(a)..=hist_bits {
        let (freq, lengths, tz, size) = at_width(a, w);
        let r = bits - w - tz;
        if best.as_ref().is_none_or(|b| size < b.size) {
            let entropy_bits = float::entropy(&freq) + f64::from(r) * count as f64;
            best = Some(Plan {
                sym_bits: w,
                tz,
                lengths,
                low_bytes: Vec::new(),
                size,
                entropy_bits,
            });
        }
    }
    let mut plan = best.expect("at least one symbol width");
    if let Some(data) = data {
        add_low_bytes(&mut plan, layout, data);
    }
    plan
}

/// The plan of width `w` (no low bytes coded, no entropy bound): what tests use to force
/// every residual width, which [`best_plan`] would not choose.
#[cfg(test)]
pub(crate) fn plan_at_width(a: &Analysis, w: u32) -> Plan {
    let (_, lengths, tz, size) = at_width(a, w);
    Plan {
        sym_bits: w,
        tz,
        lengths,
        low_bytes: Vec::new(),
        size,
        entropy_bits: 0.0,
    }
}

/// The narrowest symbol [`best_plan`] tries: the sign and the exponent.
fn min_width(a: &Analysis) -> u32 {
    (1 + a.layout().exp_bits).min(a.hist_bits())
}

/// The symbol histogram, code lengths, dropped trailing zeros and payload size of the plan
/// with `w`-bit symbols and a raw residual, as [`best_plan`] prices each width.
fn at_width(a: &Analysis, w: u32) -> (Vec<u64>, Vec<u8>, u32, usize) {
    let bits = a.layout().bits();
    let freq = a.symbol_hist(w);
    let lengths = huffman::code_lengths_limited(&freq, MAX_LEN);
    let tz = a.trailing_zeros().min(bits - w);
    let size = HEADER + field_bytes(&freq, &lengths) + residual_bytes(a.count(), bits - w - tz);
    (freq, lengths, tz, size)
}

/// An upper bound on the size of [`best_plan`]'s plan for the chunk scanned by `a` (which
/// takes the smallest width, and codes low bytes only where smaller): the plan of its
/// narrowest symbol.
pub(crate) fn size_bound(a: &Analysis) -> usize {
    at_width(a, min_width(a)).3
}

/// Bytes of one Huffman-coded field of a payload with code `lengths` for histogram `freq`:
/// its table, its four stream sizes and its code streams (an upper bound: at most one
/// padding byte per stream). A single used symbol takes no code bits.
fn field_bytes(freq: &[u64], lengths: &[u8]) -> usize {
    let single = lengths.iter().filter(|&&l| l > 0).count() == 1;
    let code_bits = if single {
        0
    } else {
        huffman::coded_bits(freq, lengths)
    };
    huffman::lengths_size(lengths) + 4 * STREAMS + (code_bits / 8) as usize + STREAMS
}

/// Fewest values for which the low bytes are considered (below, they are raw residual bits).
pub(crate) const LOW_MIN_VALUES: usize = 4096;
/// Most low bytes coded.
const MAX_LOW_BYTES: usize = 2;

/// Codes the low bytes of 4-byte values with Huffman codes of their own where that is
/// smaller: FP32 weights rounded from a lower precision, or with a structured low mantissa,
/// are not noise in their low bytes. A probe on every 8th value skips the exact count when
/// no byte could save 1 % of its raw bits.
fn add_low_bytes(plan: &mut Plan, layout: FloatLayout, data: &[u8]) {
    let count = data.len() / layout.bytes();
    let r = layout.bits() - plan.sym_bits - plan.tz;
    if layout.bytes() != 4 || plan.tz != 0 || r < 8 || count < LOW_MIN_VALUES {
        return;
    }
    let n = (r as usize / 8).min(MAX_LOW_BYTES);
    let mut probe = [[0u64; 256]; MAX_LOW_BYTES];
    for v in data.chunks_exact(4).step_by(8) {
        probe[0][usize::from(v[0])] += 1;
        probe[1][usize::from(v[1])] += 1;
    }
    let sampled = probe[0].iter().sum::<u64>() as f64;
    if !probe[..n]
        .iter()
        .any(|h| 8.0 * sampled - float::entropy(h) > 0.08 * sampled)
    {
        return;
    }
    let mut hist = [[0u64; 256]; MAX_LOW_BYTES];
    for v in data.chunks_exact(4) {
        hist[0][usize::from(v[0])] += 1;
        hist[1][usize::from(v[1])] += 1;
    }
    // Size with the low `c` bytes coded, for c = 0..=n; the smallest wins.
    let mut best = (0, plan.size, 0.0);
    let mut tables = Vec::new();
    let mut coded = 0usize;
    let mut entropy = 0.0;
    for (c, h) in hist[..n].iter().enumerate() {
        let lengths = huffman::code_lengths_limited(h, MAX_LEN);
        coded += field_bytes(h, &lengths);
        entropy += float::entropy(h);
        tables.push(lengths);
        let c = c + 1;
        let size =
            plan.size - residual_bytes(count, r) + residual_bytes(count, r - 8 * c as u32) + coded;
        if size < best.1 {
            best = (c, size, entropy - 8.0 * (c * count) as f64);
        }
    }
    let (c, size, delta_bits) = best;
    if c > 0 {
        tables.truncate(c);
        plan.low_bytes = tables;
        plan.size = size;
        plan.entropy_bits += delta_bits;
    }
}

/// Encodes `data` (whole values of `layout`, which must satisfy [`supports`]) with `plan`
/// (from [`best_plan`] on the same data).
pub fn encode(layout: FloatLayout, data: &[u8], plan: &Plan) -> Vec<u8> {
    encode_at(layout, data, plan, Level::detected())
}

/// [`encode`] with the hot loops compiled for `level` (every level gives the same bytes).
pub fn encode_at(layout: FloatLayout, data: &[u8], plan: &Plan, level: Level) -> Vec<u8> {
    assert!(supports(layout), "codec 10 takes 1-, 2- and 4-byte values");
    let bytes = layout.bytes();
    let mut out = Vec::with_capacity(plan.size + 16);
    write_header(&mut out, layout, data, plan);
    huffman::write_lengths(&plan.lengths, &mut out);
    for lengths in &plan.low_bytes {
        huffman::write_lengths(lengths, &mut out);
    }
    let shape = Shape::of(layout, plan);
    let mut coders = vec![Coder::new(
        &plan.lengths,
        layout.bits() - plan.sym_bits,
        0xFFF,
    )];
    coders.extend(low_coders(plan));
    let (coders, o) = (&coders, &mut out);
    match bytes {
        1 => dispatch(
            level,
            #[inline(always)]
            || encode_width::<1>(data, shape, coders, o),
        ),
        2 => dispatch(
            level,
            #[inline(always)]
            || encode_width::<2>(data, shape, coders, o),
        ),
        _ => dispatch(
            level,
            #[inline(always)]
            || encode_width::<4>(data, shape, coders, o),
        ),
    }
    out
}

/// Writes the fixed header of a codec-10 or codec-12 payload (§9.1).
fn write_header(out: &mut Vec<u8>, layout: FloatLayout, data: &[u8], plan: &Plan) {
    let bytes = layout.bytes();
    let low = plan.low_bytes.len();
    assert!(
        low == 0 || (bytes == 4 && plan.tz == 0 && low <= MAX_LOW_BYTES),
        "low bytes are coded for 4-byte values without trailing zeros"
    );
    out.push(bytes as u8);
    out.push(plan.sym_bits as u8);
    out.push(plan.tz as u8);
    out.push(low as u8);
    out.extend_from_slice(&((data.len() / bytes) as u32).to_le_bytes());
}

/// The coders of the low bytes `plan` codes: byte 0, then byte 1.
fn low_coders(plan: &Plan) -> impl Iterator<Item = Coder> + '_ {
    plan.low_bytes
        .iter()
        .enumerate()
        .map(|(j, lengths)| Coder::new(lengths, 8 * j as u32, 0xFF))
}

/// Position and width of the raw residual field of one chunk.
#[derive(Clone, Copy)]
struct Shape {
    tz: u32,
    r: u32,
}

impl Shape {
    /// The raw residual of `plan`'s split: above the coded low bytes and the trailing zeros.
    fn of(layout: FloatLayout, plan: &Plan) -> Self {
        let low_bits = 8 * plan.low_bytes.len() as u32;
        Self {
            tz: plan.tz + low_bits,
            r: layout.bits() - plan.sym_bits - plan.tz - low_bits,
        }
    }
}

/// Four consecutive values of width `B` from `v` (`4 * B` bytes).
#[inline(always)]
fn four<const B: usize>(v: &[u8]) -> [u64; 4] {
    match B {
        1 => {
            let x = u64::from(u32::from_le_bytes([v[0], v[1], v[2], v[3]]));
            [x & 0xFF, x >> 8 & 0xFF, x >> 16 & 0xFF, x >> 24]
        }
        2 => {
            let x = load::<8>(&v[..8]);
            [x & 0xFFFF, x >> 16 & 0xFFFF, x >> 32 & 0xFFFF, x >> 48]
        }
        _ => {
            let (x, y) = (load::<8>(&v[..8]), load::<8>(&v[8..16]));
            [x & 0xFFFF_FFFF, x >> 32, y & 0xFFFF_FFFF, y >> 32]
        }
    }
}

/// Appends, for each coded field, its four stream sizes and code streams, then the residual
/// area of `data`.
#[inline(always)]
fn encode_width<const B: usize>(data: &[u8], s: Shape, coders: &[Coder], out: &mut Vec<u8>) {
    let ranges = quarters(data.len() / B);
    for coder in coders {
        encode_codes::<B>(data, &ranges, coder, out);
    }
    if s.r > 0 {
        encode_residuals::<B>(data, s, out);
    }
}

/// Appends the four stream sizes and code streams of one field.
#[inline(always)]
fn encode_codes<const B: usize>(
    data: &[u8],
    ranges: &[(usize, usize); STREAMS],
    coder: &Coder,
    out: &mut Vec<u8>,
) {
    // Worst-case regions: codes are at most MAX_LEN bits.
    let (streams, mut lanes) = Streams::open(
        out,
        ranges.map(|(a, b)| ((b - a) * MAX_LEN as usize).div_ceil(8)),
    );
    let common = ranges.iter().map(|(a, b)| b - a).min().unwrap_or(0) / ROUND * ROUND;
    {
        let buf = out.as_mut_slice();
        let part = |k: usize| &data[ranges[k].0 * B..(ranges[k].0 + common) * B];
        let [mut l0, mut l1, mut l2, mut l3] = lanes;
        let iter = part(0)
            .chunks_exact(ROUND * B)
            .zip(part(1).chunks_exact(ROUND * B))
            .zip(part(2).chunks_exact(ROUND * B))
            .zip(part(3).chunks_exact(ROUND * B));
        for (((a, b), c), d) in iter {
            coder.put4::<B>(&mut l0, buf, a);
            coder.put4::<B>(&mut l1, buf, b);
            coder.put4::<B>(&mut l2, buf, c);
            coder.put4::<B>(&mut l3, buf, d);
        }
        lanes = [l0, l1, l2, l3];
        for (lane, &(start, end)) in lanes.iter_mut().zip(ranges) {
            for v in data[(start + common) * B..end * B].chunks_exact(B) {
                let (c, l) = coder.code(load::<B>(v));
                lane.put(buf, c, l);
            }
        }
    }
    streams.close(out, lanes);
}

/// The codes of one field of each value (the symbol, or a low byte): a table lookup of the
/// field.
struct Coder {
    /// `code | length << 16` per field value.
    table: Box<[u32; 1 << 12]>,
    shift: u32,
    mask: u64,
}

impl Coder {
    /// The coder of the field `(x >> shift) & mask` (`mask` < 4096) with code `lengths`; a
    /// single used symbol takes zero bits.
    fn new(lengths: &[u8], shift: u32, mask: u64) -> Self {
        let mut table = Box::new([0u32; 1 << 12]);
        let single = lengths.iter().filter(|&&l| l > 0).count() == 1;
        if !single {
            let codes = huffman::encode_codes(lengths);
            for ((t, &c), &l) in table.iter_mut().zip(&codes).zip(lengths) {
                *t = u32::from(c) | u32::from(l) << 16;
            }
        }
        Self { table, shift, mask }
    }

    /// The code of value `x` and its length.
    #[inline(always)]
    fn code(&self, x: u64) -> (u64, u32) {
        let e = self.table[((x >> self.shift) & self.mask) as usize & 0xFFF];
        (u64::from(e & 0xFFFF), e >> 16)
    }

    /// Writes the codes of the four values in `v` with one put.
    #[inline(always)]
    fn put4<const B: usize>(&self, lane: &mut Lane, buf: &mut [u8], v: &[u8]) {
        let [a, b, c, d] = four::<B>(v);
        let (ca, la) = self.code(a);
        let (cb, lb) = self.code(b);
        let (cc, lc) = self.code(c);
        let (cd, ld) = self.code(d);
        let bits = ca | cb << la | cc << (la + lb) | cd << (la + lb + lc);
        lane.put(buf, bits, la + lb + lc + ld);
    }
}

/// The residual of value `x`.
#[inline(always)]
fn res(x: u64, tz: u32, mask: u64) -> u64 {
    (x >> tz) & mask
}

/// The `r`-bit residuals (bits `tz..tz + r`, `tz + r <= 16`, `r <= 8`) of the four 16-bit
/// values in `w` (first value lowest), packed into `4 r` bits, first value lowest: each value
/// is masked in place, then neighbours are folded together, pairs first.
#[inline(always)]
fn gather4(w: u64, tz: u32, r: u32) -> u64 {
    debug_assert!(r <= 8 && tz + r <= 16);
    let lanes = ((1u64 << r) - 1) * 0x0001_0001_0001_0001;
    // Values at bits 0, 16, 32 and 48.
    let x = (w >> tz) & lanes;
    // Pairs: value 1 beside value 0 (bits 0..2r), value 3 beside value 2 (bits 32..32 + 2r).
    let y = x | x >> (16 - r);
    let pair = (1u64 << (2 * r)) - 1;
    // The second pair beside the first; for r <= 8 nothing else of y lands in its place.
    (y & pair) | (y >> (32 - 2 * r) & pair << (2 * r))
}

/// Appends the residual area: the `r`-bit residual of every value in order, LSB first,
/// padded to a byte at its end.
#[inline(always)]
fn encode_residuals<const B: usize>(data: &[u8], s: Shape, out: &mut Vec<u8>) {
    let r = s.r;
    let mask = (1u64 << r) - 1;
    let start = out.len();
    out.resize(start + residual_bytes(data.len() / B, r) + 8, 0);
    let buf = out.as_mut_slice();
    let tz = s.tz;
    let mut lane = Lane::new(start);
    if B == 2 && r == 8 {
        // Whole bytes: the residual of value i is byte i of the area.
        for (o, v) in buf[start..].iter_mut().zip(data.chunks_exact(2)) {
            *o = (u16::from_le_bytes([v[0], v[1]]) >> tz) as u8;
        }
        out.truncate(start + data.len() / 2);
        return;
    }
    if B == 2 && r <= 7 {
        // Eight 16-bit values per put, their residuals gathered four at a time from one
        // 64-bit word (see `gather4`); 8 r <= 56 bits.
        let mut it = data.chunks_exact(16);
        for v in &mut it {
            let f =
                gather4(load::<8>(&v[..8]), tz, r) | gather4(load::<8>(&v[8..]), tz, r) << (4 * r);
            lane.put(buf, f, 8 * r);
        }
        for v in it.remainder().chunks_exact(B) {
            lane.put(buf, res(load::<B>(v), tz, mask), r);
        }
    } else if 4 * r <= MAX_PUT_BITS {
        let mut it = data.chunks_exact(4 * B);
        for v in &mut it {
            let [x0, x1, x2, x3] = four::<B>(v);
            let f = res(x0, tz, mask)
                | res(x1, tz, mask) << r
                | res(x2, tz, mask) << (2 * r)
                | res(x3, tz, mask) << (3 * r);
            lane.put(buf, f, 4 * r);
        }
        for v in it.remainder().chunks_exact(B) {
            lane.put(buf, res(load::<B>(v), tz, mask), r);
        }
    } else if 2 * r <= MAX_PUT_BITS {
        let mut it = data.chunks_exact(2 * B);
        for v in &mut it {
            let f = res(load::<B>(&v[..B]), tz, mask) | res(load::<B>(&v[B..]), tz, mask) << r;
            lane.put(buf, f, 2 * r);
        }
        for v in it.remainder().chunks_exact(B) {
            lane.put(buf, res(load::<B>(v), tz, mask), r);
        }
    } else {
        for v in data.chunks_exact(B) {
            lane.put(buf, res(load::<B>(v), tz, mask), r);
        }
    }
    let stop = lane.finish(buf);
    debug_assert_eq!(stop - start, residual_bytes(data.len() / B, r));
    out.truncate(stop);
}

/// Decodes a payload produced by [`encode`] into `out`, whose length is the raw size.
pub fn decode(payload: &[u8], out: &mut [u8]) -> Result<(), CodecError> {
    decode_at(payload, out, Level::detected())
}

/// [`decode`] with the hot loop compiled for `level` (every level gives the same result).
pub fn decode_at(payload: &[u8], out: &mut [u8], level: Level) -> Result<(), CodecError> {
    let h = Header::read(payload, out.len())?;
    let Header {
        bytes,
        sym_bits,
        tz,
        low,
        count,
    } = h;
    let low_bits = 8 * low as u32;
    let mut pos = HEADER;
    let widths = std::iter::once(sym_bits).chain(std::iter::repeat_n(8, low));
    let tables = read_tables(payload, &mut pos, widths, count)?;
    let mut fields = Vec::with_capacity(1 + low);
    for _ in 0..=low {
        fields.push(read_streams(payload, &mut pos)?);
    }
    // The raw residual sits above the coded low bytes.
    let r = h.r();
    if payload.len() - pos != residual_bytes(count, r) {
        return Err(CodecError::Corrupt(
            "split payload residual area has the wrong size",
        ));
    }
    if count == 0 {
        return Ok(());
    }
    let ranges = quarters(count);
    // Quarter k's residuals start at bit `start_k · r` of the one residual stream.
    let res_starts = ranges.map(|(a, _)| a * r as usize);
    let main = fields[0];
    let d = Dec {
        codes: &payload[main.at..],
        res: &payload[pos..],
        table: &tables[0].entries,
        mask: tables[0].mask,
        tz: tz + low_bits,
        r,
        rmask: (1u64 << r) - 1,
    };
    let mut cpos = main.start_bits;
    let c = &mut cpos;
    match (bytes, r) {
        (1, _) => dispatch(
            level,
            #[inline(always)]
            || d.run::<1, 4>(&ranges, c, res_starts, out),
        ),
        (2, 0..=14) => dispatch(
            level,
            #[inline(always)]
            || d.run::<2, 4>(&ranges, c, res_starts, out),
        ),
        (2, _) => dispatch(
            level,
            #[inline(always)]
            || d.run::<2, 2>(&ranges, c, res_starts, out),
        ),
        (_, 0..=14) => dispatch(
            level,
            #[inline(always)]
            || d.run::<4, 4>(&ranges, c, res_starts, out),
        ),
        (_, 15..=28) => dispatch(
            level,
            #[inline(always)]
            || d.run::<4, 2>(&ranges, c, res_starts, out),
        ),
        _ => dispatch(
            level,
            #[inline(always)]
            || d.run::<4, 1>(&ranges, c, res_starts, out),
        ),
    }
    check_ends(&main, &cpos)?;
    // The coded low bytes: the main pass left them zero.
    decode_low_bytes(payload, &tables[1..], &fields[1..], &ranges, out, level)
}

/// Decodes the coded low bytes of every 4-byte value into place (bytes 0 then 1), one field
/// of four code streams each; the bytes must be zero before.
fn decode_low_bytes(
    payload: &[u8],
    tables: &[Table],
    fields: &[FieldStreams],
    ranges: &[(usize, usize); STREAMS],
    out: &mut [u8],
    level: Level,
) -> Result<(), CodecError> {
    for (j, (table, field)) in tables.iter().zip(fields).enumerate() {
        let d = Dec {
            codes: &payload[field.at..],
            res: &[],
            table: &table.entries,
            mask: table.mask,
            tz: 0,
            r: 0,
            rmask: 0,
        };
        let mut cpos = field.start_bits;
        let c = &mut cpos;
        dispatch(
            level,
            #[inline(always)]
            || d.run_bytes(ranges, c, j, out),
        );
        check_ends(field, &cpos)?;
    }
    Ok(())
}

/// The fixed header of a codec-10 (or codec-12) payload.
#[derive(Debug, Clone, Copy)]
struct Header {
    /// Value width in bytes: 1, 2 or 4.
    bytes: usize,
    /// Symbol width `w`.
    sym_bits: u32,
    /// Trailing zero bits.
    tz: u32,
    /// Coded low bytes `c`.
    low: usize,
    /// Value count `n`.
    count: usize,
}

impl Header {
    /// Reads and checks the header of a payload for a chunk of `raw_len` bytes (§9.1).
    fn read(payload: &[u8], raw_len: usize) -> Result<Self, CodecError> {
        let head = payload
            .get(..HEADER)
            .ok_or(CodecError::Corrupt("split payload header truncated"))?;
        let bytes = usize::from(head[0]);
        let sym_bits = u32::from(head[1]);
        let tz = u32::from(head[2]);
        let low = usize::from(head[3]);
        let count = u32::from_le_bytes([head[4], head[5], head[6], head[7]]) as usize;
        if !matches!(bytes, 1 | 2 | 4) {
            return Err(CodecError::Corrupt(
                "split payload has an invalid value width",
            ));
        }
        let bits = 8 * bytes as u32;
        if sym_bits == 0 || sym_bits > MAX_SYM_BITS.min(bits) || tz > bits - sym_bits {
            return Err(CodecError::Corrupt(
                "split payload has invalid field widths",
            ));
        }
        let low_bits = 8 * low as u32;
        if low > MAX_LOW_BYTES || (low > 0 && (bytes != 4 || tz != 0 || low_bits > bits - sym_bits))
        {
            return Err(CodecError::Corrupt(
                "split payload codes low bytes it cannot have",
            ));
        }
        if count.checked_mul(bytes) != Some(raw_len) {
            return Err(CodecError::Corrupt(
                "split payload value count disagrees with chunk size",
            ));
        }
        Ok(Self {
            bytes,
            sym_bits,
            tz,
            low,
            count,
        })
    }

    /// Width of the raw residual field.
    fn r(&self) -> u32 {
        8 * self.bytes as u32 - self.sym_bits - self.tz - 8 * self.low as u32
    }
}

/// Reads the Huffman tables at `*pos` of fields of `widths` bits (§4.3) for a chunk of
/// `count` values. An empty chunk has no codes, so its tables are read but not built; any
/// other needs valid (complete) tables.
fn read_tables(
    payload: &[u8],
    pos: &mut usize,
    widths: impl Iterator<Item = u32>,
    count: usize,
) -> Result<Vec<Table>, CodecError> {
    let mut tables = Vec::new();
    for w in widths {
        let (lengths, used) = huffman::read_lengths(&payload[*pos..], 1 << w)?;
        *pos += used;
        if count > 0 {
            tables.push(Table::new(&lengths, w)?);
        }
    }
    Ok(tables)
}

/// The code streams of one field, as [`read_streams`] finds them.
#[derive(Clone, Copy)]
struct FieldStreams {
    /// Payload offset of the first stream.
    at: usize,
    /// Each stream's first bit, counted from `at`.
    start_bits: [usize; STREAMS],
    /// Each stream's length in bytes.
    sizes: [usize; STREAMS],
}

/// Reads four stream sizes at `*pos` and skips the streams.
fn read_streams(payload: &[u8], pos: &mut usize) -> Result<FieldStreams, CodecError> {
    let mut sizes = [0usize; STREAMS];
    for s in &mut sizes {
        let b = payload
            .get(*pos..*pos + 4)
            .ok_or(CodecError::Corrupt("split payload stream sizes truncated"))?;
        *s = u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize;
        *pos += 4;
    }
    let at = *pos;
    let mut start_bits = [0usize; STREAMS];
    for (start, &size) in start_bits.iter_mut().zip(&sizes) {
        *start = (*pos - at) * 8;
        *pos = pos
            .checked_add(size)
            .filter(|&end| end <= payload.len())
            .ok_or(CodecError::Corrupt(
                "split payload code stream exceeds the payload",
            ))?;
    }
    Ok(FieldStreams {
        at,
        start_bits,
        sizes,
    })
}

/// Fails if a code stream of `f` needed more bits than it holds (`end_bits` are where its
/// decoding stopped).
fn check_ends(f: &FieldStreams, end_bits: &[usize; STREAMS]) -> Result<(), CodecError> {
    for ((&end, &start), &size) in end_bits.iter().zip(&f.start_bits).zip(&f.sizes) {
        if end > start + size * 8 {
            return Err(CodecError::Corrupt("split payload code stream ended early"));
        }
    }
    Ok(())
}

/// A one-level decode table: entry `i` decodes the code at the low `max_len` bits `i`.
struct Table {
    /// `symbol << (16 - w) | length`: 2^14 entries of 2 bytes, of which the first `2^max_len` are
    /// used, so the part in use stays in L1.
    entries: Box<[u16; TABLE_LEN]>,
    /// `2^max_len - 1`.
    mask: u64,
}

impl Table {
    fn new(lengths: &[u8], sym_bits: u32) -> Result<Self, CodecError> {
        let used: Vec<(usize, u32)> = lengths
            .iter()
            .enumerate()
            .filter(|&(_, &l)| l > 0)
            .map(|(s, &l)| (s, u32::from(l)))
            .collect();
        // Symbols have at most 12 bits, lengths at most 14.
        // The symbol at the top of 16 bits (w ≤ 12 leaves the low 4 bits for the length).
        let entry = |sym: usize, len: u32| ((sym as u32) << (16 - sym_bits) | len) as u16;
        if let [(sym, len)] = used[..] {
            // A single symbol: stored with length 1, coded with zero bits.
            if len != 1 {
                return Err(CodecError::Corrupt(
                    "split payload's single code is not of length 1",
                ));
            }
            let mut entries = Box::new([0u16; TABLE_LEN]);
            entries[0] = entry(sym, 0);
            return Ok(Self { entries, mask: 0 });
        }
        if used.is_empty() || huffman::kraft_units(lengths) != 1 << MAX_CODE_LEN {
            return Err(CodecError::Corrupt(
                "split payload code lengths are not a complete code",
            ));
        }
        let max_len = used.iter().map(|&(_, l)| l).max().unwrap_or(0);
        let codes = huffman::encode_codes(lengths);
        let mut entries = Box::new([0u16; TABLE_LEN]);
        for &(sym, len) in &used {
            let mut i = usize::from(codes[sym]);
            while i < 1 << max_len {
                entries[i] = entry(sym, len);
                i += 1 << len;
            }
        }
        Ok(Self {
            entries,
            mask: (1u64 << max_len) - 1,
        })
    }
}

/// Per-chunk constants of the decoder.
struct Dec<'a> {
    codes: &'a [u8],
    res: &'a [u8],
    table: &'a [u16; TABLE_LEN],
    mask: u64,
    tz: u32,
    r: u32,
    rmask: u64,
}

impl Dec<'_> {
    /// The value bits of table entry `e`: its symbol in place in a `B`-byte value.
    #[inline(always)]
    fn value<const B: usize>(e: u32) -> u64 {
        match B {
            1 => u64::from(e >> 8),
            2 => u64::from(e & 0xFFF0),
            _ => u64::from(e & 0xFFF0) << 16,
        }
    }

    /// The code length of table entry `e`.
    #[inline(always)]
    fn len(e: u32) -> u32 {
        e & 0xF
    }

    #[inline(always)]
    fn entry(&self, w: u64) -> u32 {
        // The mask keeps the index below the table length; the constant one tells the
        // compiler so.
        u32::from(self.table[(w & self.mask) as usize & (TABLE_LEN - 1)])
    }

    /// Decodes one value of a stream's tail.
    #[inline(always)]
    fn one<const B: usize>(&self, cpos: &mut usize, rpos: &mut usize) -> u64 {
        let e = self.entry(peek(self.codes, *cpos));
        *cpos += Self::len(e) as usize;
        let res = peek(self.res, *rpos) & self.rmask;
        *rpos += self.r as usize;
        Self::value::<B>(e) | res << self.tz
    }

    /// Four codes of one stream from one load; returns their entries.
    #[inline(always)]
    fn codes4(&self, cpos: &mut usize) -> [u32; 4] {
        let mut w = peek(self.codes, *cpos);
        let e0 = self.entry(w);
        w >>= Self::len(e0);
        let e1 = self.entry(w);
        w >>= Self::len(e1);
        let e2 = self.entry(w);
        w >>= Self::len(e2);
        let e3 = self.entry(w);
        *cpos += (Self::len(e0) + Self::len(e1) + Self::len(e2) + Self::len(e3)) as usize;
        [e0, e1, e2, e3]
    }

    /// Four residuals of one stream, `K` per load.
    #[inline(always)]
    fn res4<const K: usize>(&self, rpos: &mut usize) -> [u64; 4] {
        let (r, m) = (self.r, self.rmask);
        let at = *rpos;
        *rpos += 4 * r as usize;
        match K {
            4 => {
                let w = peek(self.res, at);
                [w & m, w >> r & m, w >> (2 * r) & m, w >> (3 * r) & m]
            }
            2 => {
                let w = peek(self.res, at);
                let x = peek(self.res, at + 2 * r as usize);
                [w & m, w >> r & m, x & m, x >> r & m]
            }
            _ => std::array::from_fn(|j| peek(self.res, at + j * r as usize) & m),
        }
    }

    /// Stores four values.
    #[inline(always)]
    fn store4<const B: usize>(&self, o: &mut [u8], e: [u32; 4], res: [u64; 4]) {
        let v: [u64; 4] = std::array::from_fn(|j| Self::value::<B>(e[j]) | res[j] << self.tz);
        match B {
            1 => o[..4].copy_from_slice(
                &((v[0] | v[1] << 8 | v[2] << 16 | v[3] << 24) as u32).to_le_bytes(),
            ),
            2 => {
                o[..8].copy_from_slice(&(v[0] | v[1] << 16 | v[2] << 32 | v[3] << 48).to_le_bytes())
            }
            _ => {
                o[..8].copy_from_slice(&(v[0] | v[1] << 32).to_le_bytes());
                o[8..16].copy_from_slice(&(v[2] | v[3] << 32).to_le_bytes());
            }
        }
    }

    /// Decodes four values of one stream into `o`.
    #[inline(always)]
    fn step<const B: usize, const K: usize>(
        &self,
        o: &mut [u8],
        cpos: &mut usize,
        rpos: &mut usize,
    ) {
        let e = self.codes4(cpos);
        let res = self.res4::<K>(rpos);
        self.store4::<B>(o, e, res);
    }

    /// Decodes the codes of low byte `j` of every 4-byte value into place: the four streams
    /// in lockstep, four bytes each per step, then the tails.
    #[inline(always)]
    fn run_bytes(
        &self,
        ranges: &[(usize, usize); STREAMS],
        cpos: &mut [usize; STREAMS],
        j: usize,
        out: &mut [u8],
    ) {
        const B: usize = 4;
        let common = ranges.iter().map(|(a, b)| b - a).min().unwrap_or(0) / ROUND * ROUND;
        {
            let (o0, rest) = out.split_at_mut(ranges[1].0 * B);
            let (o1, rest) = rest.split_at_mut((ranges[2].0 - ranges[1].0) * B);
            let (o2, o3) = rest.split_at_mut((ranges[3].0 - ranges[2].0) * B);
            let [mut c0, mut c1, mut c2, mut c3] = *cpos;
            let iter = o0[..common * B]
                .chunks_exact_mut(ROUND * B)
                .zip(o1[..common * B].chunks_exact_mut(ROUND * B))
                .zip(o2[..common * B].chunks_exact_mut(ROUND * B))
                .zip(o3[..common * B].chunks_exact_mut(ROUND * B));
            let put = |o: &mut [u8], e: [u32; 4]| {
                for (v, e) in o.chunks_exact_mut(B).zip(e) {
                    v[j] = (e >> 8) as u8;
                }
            };
            for (((x0, x1), x2), x3) in iter {
                put(x0, self.codes4(&mut c0));
                put(x1, self.codes4(&mut c1));
                put(x2, self.codes4(&mut c2));
                put(x3, self.codes4(&mut c3));
            }
            *cpos = [c0, c1, c2, c3];
        }
        for (k, c) in cpos.iter_mut().enumerate() {
            let (start, end) = ranges[k];
            for v in out[(start + common) * B..end * B].chunks_exact_mut(B) {
                let e = self.entry(peek(self.codes, *c));
                *c += Self::len(e) as usize;
                v[j] = (e >> 8) as u8;
            }
        }
    }

    /// Decodes every value: the four streams in lockstep, four values each per step, then
    /// the tails one by one.
    #[inline(always)]
    fn run<const B: usize, const K: usize>(
        &self,
        ranges: &[(usize, usize); STREAMS],
        cpos: &mut [usize; STREAMS],
        mut rpos: [usize; STREAMS],
        out: &mut [u8],
    ) {
        let common = ranges.iter().map(|(a, b)| b - a).min().unwrap_or(0) / ROUND * ROUND;
        {
            let (o0, rest) = out.split_at_mut(ranges[1].0 * B);
            let (o1, rest) = rest.split_at_mut((ranges[2].0 - ranges[1].0) * B);
            let (o2, o3) = rest.split_at_mut((ranges[3].0 - ranges[2].0) * B);
            let [mut c0, mut c1, mut c2, mut c3] = *cpos;
            let [mut r0, mut r1, mut r2, mut r3] = rpos;
            let iter = o0[..common * B]
                .chunks_exact_mut(ROUND * B)
                .zip(o1[..common * B].chunks_exact_mut(ROUND * B))
                .zip(o2[..common * B].chunks_exact_mut(ROUND * B))
                .zip(o3[..common * B].chunks_exact_mut(ROUND * B));
            // Each stream's four values are finished before the next stream's start, so few
            // values are live at once; the four chains still overlap in the CPU.
            for (((x0, x1), x2), x3) in iter {
                self.step::<B, K>(x0, &mut c0, &mut r0);
                self.step::<B, K>(x1, &mut c1, &mut r1);
                self.step::<B, K>(x2, &mut c2, &mut r2);
                self.step::<B, K>(x3, &mut c3, &mut r3);
            }
            *cpos = [c0, c1, c2, c3];
            rpos = [r0, r1, r2, r3];
        }
        for (k, (c, r)) in cpos.iter_mut().zip(&mut rpos).enumerate() {
            let (start, end) = ranges[k];
            for v in out[(start + common) * B..end * B].chunks_exact_mut(B) {
                let x = self.one::<B>(c, r);
                v.copy_from_slice(&x.to_le_bytes()[..B]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn gather4_packs_the_residuals_of_four_values() {
        for (i, w) in crate::pseudo_u64(200, 9).enumerate() {
            for r in 1..=8u32 {
                for tz in 0..=16 - r {
                    let mut want = 0u64;
                    for k in 0..4 {
                        want |= (w >> (16 * k + tz) & ((1 << r) - 1)) << (k * r);
                    }
                    assert_eq!(super::gather4(w, tz, r), want, "{i} r {r} tz {tz}");
                }
            }
        }
    }

    use super::*;

    /// Encodes and decodes on every CPU level: the same bytes, the same values.
    fn round_trip(layout: FloatLayout, data: &[u8]) -> usize {
        let plan = best_plan(&Analysis::new(layout, data), Some(data));
        let enc = encode_at(layout, data, &plan, Level::SCALAR);
        assert!(enc.len() <= plan.size, "{} > {}", enc.len(), plan.size);
        for level in Level::available() {
            assert_eq!(
                encode_at(layout, data, &plan, level),
                enc,
                "{}",
                level.name()
            );
            let mut out = vec![0u8; data.len()];
            decode_at(&enc, &mut out, level).unwrap();
            assert_eq!(out, data, "{}", level.name());
        }
        enc.len()
    }

    fn pseudo(n: usize) -> Vec<u8> {
        crate::pseudo_bytes(n, 0x0123_4567_89ab_cdef)
    }

    /// Gaussian-like BF16: narrow exponents, noisy mantissas.
    fn bf16_like(n: usize) -> Vec<u8> {
        let noise = pseudo(2 * n);
        (0..n)
            .flat_map(|i| {
                let b = noise[2 * i];
                let exp = 118 + u16::from(b % 9);
                (u16::from(b & 0x80) << 8 | exp << 7 | u16::from(noise[2 * i + 1] & 0x7f))
                    .to_le_bytes()
            })
            .collect()
    }

    #[test]
    fn every_width_and_length_round_trips() {
        for layout in [
            FloatLayout::F8_E4M3,
            FloatLayout::F16,
            FloatLayout::BF16,
            FloatLayout::F32,
        ] {
            for n in [0usize, 1, 2, 3, 4, 5, 7, 15, 16, 17, 33, 1000, 4099] {
                round_trip(layout, &pseudo(n * layout.bytes()));
            }
        }
    }

    #[test]
    fn matches_codec_2_in_size_on_float_like_data() {
        let data = bf16_like(100_000);
        let size = round_trip(FloatLayout::BF16, &data);
        let a = Analysis::new(FloatLayout::BF16, &data);
        let two = float::encode(FloatLayout::BF16, &data, &a.best_plan()).len();
        assert!(size <= two + two / 500, "{size} vs codec 2's {two}");
        assert!(size < data.len() * 3 / 4);
    }

    #[test]
    fn every_residual_width_round_trips() {
        // F32 values with k trailing zero bits force every residual width from 20 down.
        for tz in [0u32, 3, 8, 12, 16, 19, 20, 24, 31] {
            let data: Vec<u8> = pseudo(4 * 999)
                .chunks_exact(4)
                .enumerate()
                .flat_map(|(i, b)| {
                    let x = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                    let x = (x & 0x8FFF_FFFF | (i as u32 % 3) << 28) >> tz << tz;
                    x.to_le_bytes()
                })
                .collect();
            round_trip(FloatLayout::F32, &data);
        }
    }

    #[test]
    fn every_16_bit_residual_width_round_trips_at_every_level() {
        // Every symbol width of BF16 and F16 values with 0 to 7 trailing zero bits: residuals
        // of 0 to 10 bits, the byte-wide one (8) and those gathered four at a time (1 to 7)
        // included; odd counts leave a tail past the last whole group.
        let mut widths = std::collections::BTreeSet::new();
        for layout in [FloatLayout::BF16, FloatLayout::F16] {
            for tz in 0..8u32 {
                for n in [1usize, 7, 8, 9, 1001] {
                    let data: Vec<u8> = pseudo(2 * n)
                        .chunks_exact(2)
                        .flat_map(|b| (u16::from_le_bytes([b[0], b[1]]) >> tz << tz).to_le_bytes())
                        .collect();
                    let a = Analysis::new(layout, &data);
                    for w in min_width(&a)..=a.hist_bits() {
                        let plan = plan_at_width(&a, w);
                        let tz = plan.tz;
                        widths.insert(16 - w - tz);
                        let enc = encode_at(layout, &data, &plan, Level::SCALAR);
                        assert!(enc.len() <= plan.size, "{layout:?} tz {tz} w {w}");
                        for level in Level::available() {
                            assert_eq!(encode_at(layout, &data, &plan, level), enc);
                            let mut out = vec![0u8; data.len()];
                            decode_at(&enc, &mut out, level).unwrap();
                            assert_eq!(out, data, "{layout:?} tz {tz} w {w} n {n}");
                        }
                    }
                }
            }
        }
        assert!((0..=10).all(|r| widths.contains(&r)), "{widths:?}");
    }

    /// F32 values whose low bytes come from a few patterns (weights rounded from a lower
    /// precision, embeddings with a structured low mantissa).
    fn f32_structured_low(n: usize, patterns: u32) -> Vec<u8> {
        let noise = pseudo(4 * n);
        noise
            .chunks_exact(4)
            .flat_map(|b| {
                let hi = u32::from(u16::from_le_bytes([b[2], b[3] & 0x3f | 0x3c]));
                let lo = u32::from(b[0]) % patterns * 0x0101 + u32::from(b[1] & 0x80);
                (hi << 16 | lo).to_le_bytes()
            })
            .collect()
    }

    #[test]
    fn structured_low_bytes_get_codes_of_their_own() {
        for (patterns, want) in [(3u32, 2usize), (40, 2), (256, 0)] {
            let data = f32_structured_low(20_000, patterns);
            let a = Analysis::new(FloatLayout::F32, &data);
            let plan = best_plan(&a, Some(&data));
            assert_eq!(plan.low_bytes.len(), want, "{patterns} patterns");
            let plain = best_plan(&a, None);
            if want > 0 {
                assert!(
                    plan.size + 20_000 / 4 < plain.size,
                    "{} vs {}",
                    plan.size,
                    plain.size
                );
            }
            round_trip(FloatLayout::F32, &data);
        }
        // Short chunks and chunks with trailing zeros keep the whole residual raw.
        let data = f32_structured_low(1000, 3);
        assert!(
            best_plan(&Analysis::new(FloatLayout::F32, &data), Some(&data))
                .low_bytes
                .is_empty()
        );
    }

    #[test]
    fn low_byte_fields_reject_what_they_cannot_be() {
        let data = f32_structured_low(5000, 5);
        let plan = best_plan(&Analysis::new(FloatLayout::F32, &data), Some(&data));
        assert!(!plan.low_bytes.is_empty());
        let enc = encode(FloatLayout::F32, &data, &plan);
        let mut out = vec![0u8; data.len()];
        for (at, value) in [(3, 3u8), (0, 2), (2, 1)] {
            let mut bad = enc.clone();
            bad[at] = value;
            assert!(decode(&bad, &mut out).is_err(), "byte {at} = {value}");
        }
        crate::check_damaged(&enc, |p| decode(p, &mut out));
    }

    #[test]
    fn constant_chunks_take_no_code_bits() {
        let data = [0x80, 0x3f].repeat(10_000);
        let size = round_trip(FloatLayout::BF16, &data);
        assert!(size < 64, "{size}");
        round_trip(FloatLayout::F32, &[0u8; 4000]);
        round_trip(FloatLayout::F8_E5M2, &[0x7Cu8; 77]);
    }

    #[test]
    fn special_values_survive() {
        let specials = crate::F32_SPECIALS;
        let data: Vec<u8> = (0..1001)
            .flat_map(|i| specials[i % 8].to_le_bytes())
            .collect();
        round_trip(FloatLayout::F32, &data);
    }

    #[test]
    fn incomplete_or_long_codes_are_rejected() {
        let data = bf16_like(1000);
        let plan = best_plan(&Analysis::new(FloatLayout::BF16, &data), Some(&data));
        // Lengthen one code: the code is no longer complete.
        let mut lengths = plan.lengths.clone();
        let i = lengths.iter().position(|&l| (1..12).contains(&l)).unwrap();
        lengths[i] += 1;
        assert!(Table::new(&lengths, 12).is_err());
        assert!(Table::new(&[0, 2, 0], 2).is_err());
    }

    /// Values drawn from a few binades and every special pattern of each width: ±0, NaN
    /// payloads, ±Inf, subnormals, so that every symbol width and table shape is reached.
    fn mixed(layout: FloatLayout, picks: &[(u8, u32)]) -> Vec<u8> {
        let bits = layout.bits();
        let exp_shift = bits - 1 - layout.exp_bits;
        let all_exp = (1u64 << layout.exp_bits) - 1;
        picks
            .iter()
            .flat_map(|&(kind, noise)| {
                let noise = u64::from(noise);
                let mant = noise & ((1u64 << exp_shift) - 1);
                let sign = (noise >> 31 & 1) << (bits - 1);
                let x = match kind % 8 {
                    0 => sign,                                   // ±0
                    1 => sign | all_exp << exp_shift,            // ±Inf
                    2 => sign | all_exp << exp_shift | mant | 1, // NaN payloads
                    3 => sign | mant,                            // subnormals
                    _ => sign | (all_exp / 2 + u64::from(kind % 5)) << exp_shift | mant,
                };
                x.to_le_bytes()[..layout.bytes()].to_vec()
            })
            .collect()
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(150))]
        #[test]
        fn any_values_round_trip_on_every_level(
            li in 0usize..5,
            picks in proptest::collection::vec((0u8..40, proptest::prelude::any::<u32>()), 0..700),
        ) {
            let layout = [
                FloatLayout::F8_E4M3,
                FloatLayout::F8_E5M2,
                FloatLayout::F16,
                FloatLayout::BF16,
                FloatLayout::F32,
            ][li];
            round_trip(layout, &mixed(layout, &picks));
        }
    }

    #[test]
    fn corrupt_payloads_error_without_panicking() {
        let data = bf16_like(3000);
        let plan = best_plan(&Analysis::new(FloatLayout::BF16, &data), Some(&data));
        let enc = encode(FloatLayout::BF16, &data, &plan);
        let mut out = vec![0u8; data.len()];
        crate::check_damaged(&enc, |p| decode(p, &mut out));
        let mut short = vec![0u8; data.len() - 2];
        assert!(decode(&enc, &mut short).is_err());
    }
}
