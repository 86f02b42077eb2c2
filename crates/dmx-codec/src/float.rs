//! The field-split float codec (codec id 2, `FLOAT_HUFF`).
//!
//! Each value of `B` bits is split into a *symbol* — its top `w` bits: sign, exponent and the
//! top `k` mantissa bits — and a *residual* of the remaining `B - w - tz` bits, where `tz` is
//! the number of trailing bits that are zero in every value of the chunk (so FP32 tensors
//! holding BF16- or FP16-origin values pay nothing for their zero low bytes). The symbol is
//! coded with a per-chunk canonical Huffman code (symbols of at most 12 bits, codes of at most
//! 14 bits); the residual follows its
//! code raw in the same bit stream. Values are cut into four contiguous quarters coded as four
//! independent bit streams, which the decoder advances in lockstep for instruction-level
//! parallelism. `w` is chosen per chunk by exact coded size. See docs/CODECS.md.

use crate::bits::{Bits, Lane, MAX_PUT_BITS, Streams};
use crate::cpu::{Level, dispatch};
use crate::huffman::{self, DecodeTable, MAX_CODE_LEN, MAX_SYMBOLS};
use crate::{CodecError, FloatLayout};

/// Number of interleaved bit streams.
pub const STREAMS: usize = 4;
/// Fixed payload header bytes before the Huffman table.
const HEADER: usize = 8;

/// Per-chunk statistics gathered in one pass; enough to price every symbol width.
pub struct Analysis {
    layout: FloatLayout,
    /// Histogram of the top `hist_bits` bits of every value.
    hist: Vec<u64>,
    hist_bits: u32,
    /// Trailing bits that are zero in every value.
    tz: u32,
    count: usize,
}

/// The chosen parameters and their exact size.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Symbol width in bits.
    pub sym_bits: u32,
    /// Trailing zero bits dropped from every value.
    pub tz: u32,
    /// Huffman code lengths for the `1 << sym_bits` symbols.
    pub lengths: Vec<u8>,
    /// Payload size in bytes: exact but for at most one byte per stream (an upper bound).
    pub size: usize,
    /// Order-0 entropy bound in bits for this split (symbol entropy + residual bits).
    pub entropy_bits: f64,
}

impl Analysis {
    /// Scans `data` (whole values of `layout`).
    pub fn new(layout: FloatLayout, data: &[u8]) -> Self {
        let bits = layout.bits();
        let hist_bits = bits.min(MAX_SYMBOLS.trailing_zeros());
        let shift = bits - hist_bits;
        let mut hist = vec![0u64; 1 << hist_bits];
        let mut or = 0u64;
        let count = data.len() / layout.bytes();
        let (h, o) = (&mut hist, &mut or);
        let level = Level::detected();
        match layout.bytes() {
            1 => dispatch(
                level,
                #[inline(always)]
                || scan::<1>(data, shift, h, o),
            ),
            2 => dispatch(
                level,
                #[inline(always)]
                || scan::<2>(data, shift, h, o),
            ),
            4 => dispatch(
                level,
                #[inline(always)]
                || scan::<4>(data, shift, h, o),
            ),
            _ => dispatch(
                level,
                #[inline(always)]
                || scan::<8>(data, shift, h, o),
            ),
        }
        let tz = if or == 0 {
            bits
        } else {
            or.trailing_zeros().min(bits)
        };
        Self {
            layout,
            hist,
            hist_bits,
            tz,
            count,
        }
    }

    /// The smallest plan over all symbol widths from `1 + exponent bits` up to 12 bits.
    pub fn best_plan(&self) -> Plan {
        let bits = self.layout.bits();
        let min_w = (1 + self.layout.exp_bits).min(self.hist_bits);
        let mut best: Option<Plan> = None;
        for w in min_w..=self.hist_bits {
            let freq = self.symbol_hist(w);
            let lengths = huffman::code_lengths(&freq);
            let tz = self.tz.min(bits - w);
            let residual = u64::from(bits - w - tz);
            let code_bits = huffman::coded_bits(&freq, &lengths);
            let stream_bits = code_bits + residual * self.count as u64;
            // Each of the streams may end in a partial byte.
            let size = HEADER
                + huffman::lengths_size(&lengths)
                + 4 * STREAMS
                + (stream_bits / 8) as usize
                + STREAMS;
            if best.as_ref().is_none_or(|b| size < b.size) {
                let entropy_bits = entropy(&freq) + (residual * self.count as u64) as f64;
                best = Some(Plan {
                    sym_bits: w,
                    tz,
                    lengths,
                    size,
                    entropy_bits,
                });
            }
        }
        best.expect("at least one symbol width")
    }

    /// The value layout scanned.
    pub fn layout(&self) -> FloatLayout {
        self.layout
    }

    /// Widest symbol the histogram resolves (12 bits, or the value width if smaller).
    pub fn hist_bits(&self) -> u32 {
        self.hist_bits
    }

    /// Trailing bits that are zero in every value.
    pub fn trailing_zeros(&self) -> u32 {
        self.tz
    }

    /// Values scanned.
    pub fn count(&self) -> usize {
        self.count
    }

    /// Histogram of the top `w` bits (`w` ≤ [`Self::hist_bits`]).
    pub fn symbol_hist(&self, w: u32) -> Vec<u64> {
        let group = 1usize << (self.hist_bits - w);
        self.hist.chunks(group).map(|c| c.iter().sum()).collect()
    }
}

#[inline(always)]
fn scan<const B: usize>(data: &[u8], shift: u32, hist: &mut [u64], or: &mut u64) {
    let mask = hist.len() - 1;
    let mut acc = 0u64;
    // Two interleaved counters per bin: consecutive equal symbols do not wait on each
    // other's increment.
    let mut pair = vec![[0u32; 2]; hist.len()];
    let mut it = data.chunks_exact(2 * B);
    for v in &mut it {
        let (x, y) = (load::<B>(&v[..B]), load::<B>(&v[B..]));
        acc |= x | y;
        pair[(x >> shift) as usize & mask][0] += 1;
        pair[(y >> shift) as usize & mask][1] += 1;
    }
    for v in it.remainder().chunks_exact(B) {
        let x = load::<B>(v);
        acc |= x;
        pair[(x >> shift) as usize & mask][0] += 1;
    }
    for (h, p) in hist.iter_mut().zip(&pair) {
        *h = u64::from(p[0]) + u64::from(p[1]);
    }
    *or = acc;
}

/// A little-endian value of `B` bytes.
#[inline(always)]
pub(crate) fn load<const B: usize>(v: &[u8]) -> u64 {
    let mut w = [0u8; 8];
    w[..B].copy_from_slice(v);
    u64::from_le_bytes(w)
}

/// Order-0 entropy in bits of a histogram.
pub fn entropy(freq: &[u64]) -> f64 {
    let total: u64 = freq.iter().sum();
    if total == 0 {
        return 0.0;
    }
    let t = total as f64;
    freq.iter()
        .filter(|&&f| f > 0)
        .map(|&f| {
            let f = f as f64;
            -f * (f / t).log2()
        })
        .sum()
}

/// `f · log2(f)` for counts below [`FLOG_SMALL`], built once.
fn flog_table() -> &'static [f64] {
    static TABLE: std::sync::OnceLock<Vec<f64>> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| (0..FLOG_SMALL as u64).map(flog_direct).collect())
}

/// Counts below this take `f · log2(f)` from [`flog_table`].
const FLOG_SMALL: usize = 4096;

/// `f · log2(f)`, 0 for 0.
fn flog_direct(f: u64) -> f64 {
    if f == 0 {
        0.0
    } else {
        f as f64 * (f as f64).log2()
    }
}

/// `f · log2(f)` (0 for 0) by a function that looks counts below [`FLOG_SMALL`] up in a
/// table: the table is fetched once, when this is called, so call it outside the loop.
pub(crate) fn f_log2_f() -> impl Fn(u64) -> f64 {
    let table = flog_table();
    move |f| match table.get(f as usize) {
        Some(&v) => v,
        None => flog_direct(f),
    }
}

/// [`entropy`] as `T log2 T − Σ f log2 f`, each `f log2 f` of a count below 4096 from a
/// table ([`f_log2_f`]): about one logarithm per histogram instead of one per used cell, and
/// equal to [`entropy`] within rounding. For estimates that are only compared with each
/// other (BFP's choice of tables), never recorded.
pub(crate) fn entropy_estimate(freq: &[u64]) -> f64 {
    let flog = f_log2_f();
    let mut total = 0u64;
    let mut cells = 0f64;
    for &f in freq {
        if f > 0 {
            total += f;
            cells += flog(f);
        }
    }
    (flog(total) - cells).max(0.0)
}

/// [`entropy`] of a sample's histogram with the Miller–Madow correction, `(used cells − 1) /
/// (2 ln 2)` bits: a sample's plug-in entropy understates the entropy of what it was drawn
/// from, the more the more cells it spreads over. For comparing a sample's entropy with and
/// without a context, which spreads it over more cells.
pub(crate) fn entropy_corrected(freq: &[u64]) -> f64 {
    let used = freq.iter().filter(|&&f| f > 0).count();
    entropy(freq) + used.saturating_sub(1) as f64 / (2.0 * std::f64::consts::LN_2)
}

/// Encodes `data` with `plan` (from [`Analysis::best_plan`] on the same data).
pub fn encode(layout: FloatLayout, data: &[u8], plan: &Plan) -> Vec<u8> {
    let bytes = layout.bytes();
    let count = data.len() / bytes;
    let mut out = Vec::with_capacity(plan.size + 16);
    out.push(layout.bytes() as u8);
    out.push(plan.sym_bits as u8);
    out.push(plan.tz as u8);
    out.push(0);
    out.extend_from_slice(&(count as u32).to_le_bytes());
    huffman::write_lengths(&plan.lengths, &mut out);
    let codes = huffman::encode_codes(&plan.lengths);
    match bytes {
        1 => encode_streams::<1>(data, layout, plan, &codes, &mut out),
        2 => encode_streams::<2>(data, layout, plan, &codes, &mut out),
        4 => encode_streams::<4>(data, layout, plan, &codes, &mut out),
        _ => encode_streams::<8>(data, layout, plan, &codes, &mut out),
    }
    out
}

/// Value ranges `[start, end)` of the four streams.
pub(crate) fn quarters(count: usize) -> [(usize, usize); STREAMS] {
    let q = count.div_ceil(STREAMS);
    std::array::from_fn(|i| ((i * q).min(count), ((i + 1) * q).min(count)))
}

/// Per-chunk constants of the encoder.
struct Fields<'a> {
    /// `code | length << 16` per symbol.
    table: &'a [u32; MAX_SYMBOLS],
    sym_shift: u32,
    tz: u32,
    rbits: u32,
    rmask: u64,
}

impl Fields<'_> {
    /// Writes the code and residual of value `v` to `lane`.
    #[inline(always)]
    fn put<const B: usize>(&self, lane: &mut Lane, buf: &mut [u8], v: &[u8]) {
        let x = load::<B>(v);
        let e = self.table[(x >> self.sym_shift) as usize & (MAX_SYMBOLS - 1)];
        let len = e >> 16;
        let code = u64::from(e & 0xFFFF);
        let res = (x >> self.tz) & self.rmask;
        if MAX_CODE_LEN + self.rbits <= MAX_PUT_BITS {
            lane.put(buf, code | res << len, len + self.rbits);
        } else {
            lane.put(buf, code, len);
            lane.put(buf, res, self.rbits);
        }
    }
}

/// Appends the four streams of `data` (whole values of width `B`) to `out`: their four
/// `u32` sizes, then their bytes. The quarters are coded in lockstep, four independent
/// dependency chains.
fn encode_streams<const B: usize>(
    data: &[u8],
    layout: FloatLayout,
    plan: &Plan,
    codes: &[u16],
    out: &mut Vec<u8>,
) {
    let bits = layout.bits();
    let sym_shift = bits - plan.sym_bits;
    let tz = plan.tz;
    let rbits = bits - plan.sym_bits - tz;
    let rmask = if rbits == 0 {
        0
    } else {
        u64::MAX >> (64 - rbits)
    };
    // code | length << 16, one lookup per value; symbols are below MAX_SYMBOLS.
    let mut table = Box::new([0u32; MAX_SYMBOLS]);
    for ((t, &c), &l) in table.iter_mut().zip(codes).zip(&plan.lengths) {
        *t = u32::from(c) | u32::from(l) << 16;
    }
    let ranges = quarters(data.len() / B);
    // Worst-case regions: codes are at most MAX_CODE_LEN bits.
    let (streams, mut lanes) = Streams::open(
        out,
        ranges.map(|(s, e)| ((e - s) * (MAX_CODE_LEN + rbits) as usize).div_ceil(8)),
    );
    let buf = out.as_mut_slice();
    let f = Fields {
        table: &table,
        sym_shift,
        tz,
        rbits,
        rmask,
    };
    let one = |lane: &mut Lane, buf: &mut [u8], v: &[u8]| f.put::<B>(lane, buf, v);
    let common = ranges.iter().map(|(s, e)| e - s).min().unwrap_or(0);
    let part = |k: usize| &data[ranges[k].0 * B..(ranges[k].0 + common) * B];
    {
        // Lanes as plain locals so they can live in registers.
        let [mut l0, mut l1, mut l2, mut l3] = lanes;
        let iter = part(0)
            .chunks_exact(B)
            .zip(part(1).chunks_exact(B))
            .zip(part(2).chunks_exact(B))
            .zip(part(3).chunks_exact(B));
        for (((a, b), c), d) in iter {
            one(&mut l0, buf, a);
            one(&mut l1, buf, b);
            one(&mut l2, buf, c);
            one(&mut l3, buf, d);
        }
        lanes = [l0, l1, l2, l3];
    }
    for (lane, &(start, end)) in lanes.iter_mut().zip(&ranges) {
        for v in data[(start + common) * B..end * B].chunks_exact(B) {
            one(lane, buf, v);
        }
    }
    streams.close(out, lanes);
}

/// Decodes a payload produced by [`encode`] into `out`, whose length is the raw size.
pub fn decode(payload: &[u8], out: &mut [u8]) -> Result<(), CodecError> {
    let head = payload
        .get(..HEADER)
        .ok_or(CodecError::Corrupt("float payload header truncated"))?;
    let bytes = usize::from(head[0]);
    let sym_bits = u32::from(head[1]);
    let tz = u32::from(head[2]);
    let count = u32::from_le_bytes([head[4], head[5], head[6], head[7]]) as usize;
    if !matches!(bytes, 1 | 2 | 4 | 8) {
        return Err(CodecError::Corrupt(
            "float payload has an invalid value width",
        ));
    }
    let bits = 8 * bytes as u32;
    if head[3] != 0
        || sym_bits == 0
        || sym_bits > MAX_SYMBOLS.trailing_zeros().min(bits)
        || tz > bits - sym_bits
    {
        return Err(CodecError::Corrupt(
            "float payload has invalid field widths",
        ));
    }
    if bits - sym_bits - tz > 56 {
        return Err(CodecError::Corrupt(
            "float payload residual wider than 56 bits",
        ));
    }
    if count.checked_mul(bytes) != Some(out.len()) {
        return Err(CodecError::Corrupt(
            "float payload value count disagrees with chunk size",
        ));
    }
    let (lengths, used) = huffman::read_lengths(&payload[HEADER..], 1 << sym_bits)?;
    let table = DecodeTable::new(&lengths, INVALID | 1)?;
    let mut pos = HEADER + used;
    let mut sizes = [0usize; STREAMS];
    for s in &mut sizes {
        let b = payload
            .get(pos..pos + 4)
            .ok_or(CodecError::Corrupt("float payload stream sizes truncated"))?;
        *s = u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize;
        pos += 4;
    }
    let mut starts = [0usize; STREAMS];
    let base = pos;
    for (i, &size) in sizes.iter().enumerate() {
        starts[i] = pos - base;
        pos = pos
            .checked_add(size)
            .filter(|&end| end <= payload.len())
            .ok_or(CodecError::Corrupt(
                "float payload stream exceeds the payload",
            ))?;
    }
    if pos != payload.len() {
        return Err(CodecError::Corrupt("float payload has trailing bytes"));
    }
    let rbits = bits - sym_bits - tz;
    let params = Params {
        tz,
        rbits,
        rmask: (1u64 << rbits) - 1,
        sym_shift: bits - sym_bits,
    };
    // The concatenated bit streams; overruns are caught by the end check.
    let streams = Bits(&payload[base..]);
    let mut bitpos = starts.map(|s| s * 8);
    let bad = match bytes {
        1 => decode_streams::<1>(streams, &mut bitpos, &table, params, count, out),
        2 => decode_streams::<2>(streams, &mut bitpos, &table, params, count, out),
        4 => decode_streams::<4>(streams, &mut bitpos, &table, params, count, out),
        _ => decode_streams::<8>(streams, &mut bitpos, &table, params, count, out),
    };
    if bad & INVALID != 0 {
        return Err(CodecError::Corrupt("invalid Huffman code in float payload"));
    }
    for ((&end_bit, &start), &size) in bitpos.iter().zip(&starts).zip(&sizes) {
        if end_bit > (start + size) * 8 {
            return Err(CodecError::Corrupt("float payload stream ended early"));
        }
    }
    Ok(())
}

#[derive(Clone, Copy)]
struct Params {
    tz: u32,
    rbits: u32,
    rmask: u64,
    sym_shift: u32,
}

/// Set in the length byte of decode-table entries no code maps to; such entries consume one
/// bit so decoding always progresses, and the flag is checked once per chunk.
const INVALID: u32 = 0x80;

/// Decodes the value whose code starts at the low bits of `w`, which must hold at least
/// `12 + rbits` bits; returns the value and the bits consumed.
#[inline(always)]
fn from_word(w: u64, table: &DecodeTable, p: Params, bad: &mut u32) -> (u64, u32) {
    let entry = table.lookup(w);
    *bad |= entry;
    let len = entry & 0x1F;
    let res = (w >> len) & p.rmask;
    (
        u64::from(entry >> 8) << p.sym_shift | res << p.tz,
        len + p.rbits,
    )
}

/// Decodes one value at `*bitpos` (any residual width up to 56 bits) and advances.
#[inline(always)]
fn decode_one(
    s: Bits<'_>,
    bitpos: &mut usize,
    table: &DecodeTable,
    p: Params,
    bad: &mut u32,
) -> u64 {
    let w = s.word(*bitpos);
    if p.rbits <= 57 - MAX_CODE_LEN {
        let (v, used) = from_word(w, table, p, bad);
        *bitpos += used as usize;
        v
    } else {
        let entry = table.lookup(w);
        *bad |= entry;
        let len = entry & 0x1F;
        let res = s.word(*bitpos + len as usize) & p.rmask;
        *bitpos += (len + p.rbits) as usize;
        u64::from(entry >> 8) << p.sym_shift | res << p.tz
    }
}

#[inline(always)]
fn store<const B: usize>(out: &mut [u8], value: u64) {
    out.copy_from_slice(&value.to_le_bytes()[..B]);
}

/// Decodes all values; returns the OR of the table entries used (checked for `INVALID`).
fn decode_streams<const B: usize>(
    s: Bits<'_>,
    bitpos: &mut [usize; STREAMS],
    table: &DecodeTable,
    p: Params,
    count: usize,
    out: &mut [u8],
) -> u32 {
    let ranges = quarters(count);
    let mut bad = 0u32;
    // Lockstep over the common length of the four quarters.
    let common = ranges.iter().map(|(s, e)| e - s).min().unwrap_or(0);
    {
        let (o0, rest) = out.split_at_mut(ranges[1].0 * B);
        let (o1, rest) = rest.split_at_mut((ranges[2].0 - ranges[1].0) * B);
        let (o2, o3) = rest.split_at_mut((ranges[3].0 - ranges[2].0) * B);
        let (o0, o1, o2, o3) = (
            &mut o0[..common * B],
            &mut o1[..common * B],
            &mut o2[..common * B],
            &mut o3[..common * B],
        );
        let [mut b0, mut b1, mut b2, mut b3] = *bitpos;
        if 2 * (MAX_CODE_LEN + p.rbits) <= 57 {
            // Two values per 8-byte load.
            let iter = o0
                .chunks_exact_mut(2 * B)
                .zip(o1.chunks_exact_mut(2 * B))
                .zip(o2.chunks_exact_mut(2 * B))
                .zip(o3.chunks_exact_mut(2 * B));
            for (((x0, x1), x2), x3) in iter {
                let (w0, w1, w2, w3) = (s.word(b0), s.word(b1), s.word(b2), s.word(b3));
                let (v0, u0) = from_word(w0, table, p, &mut bad);
                let (v1, u1) = from_word(w1, table, p, &mut bad);
                let (v2, u2) = from_word(w2, table, p, &mut bad);
                let (v3, u3) = from_word(w3, table, p, &mut bad);
                let (y0, t0) = from_word(w0 >> u0, table, p, &mut bad);
                let (y1, t1) = from_word(w1 >> u1, table, p, &mut bad);
                let (y2, t2) = from_word(w2 >> u2, table, p, &mut bad);
                let (y3, t3) = from_word(w3 >> u3, table, p, &mut bad);
                b0 += (u0 + t0) as usize;
                b1 += (u1 + t1) as usize;
                b2 += (u2 + t2) as usize;
                b3 += (u3 + t3) as usize;
                store::<B>(&mut x0[..B], v0);
                store::<B>(&mut x0[B..], y0);
                store::<B>(&mut x1[..B], v1);
                store::<B>(&mut x1[B..], y1);
                store::<B>(&mut x2[..B], v2);
                store::<B>(&mut x2[B..], y2);
                store::<B>(&mut x3[..B], v3);
                store::<B>(&mut x3[B..], y3);
            }
            if common % 2 == 1 {
                let i = (common - 1) * B;
                store::<B>(&mut o0[i..], decode_one(s, &mut b0, table, p, &mut bad));
                store::<B>(&mut o1[i..], decode_one(s, &mut b1, table, p, &mut bad));
                store::<B>(&mut o2[i..], decode_one(s, &mut b2, table, p, &mut bad));
                store::<B>(&mut o3[i..], decode_one(s, &mut b3, table, p, &mut bad));
            }
        } else {
            let iter = o0
                .chunks_exact_mut(B)
                .zip(o1.chunks_exact_mut(B))
                .zip(o2.chunks_exact_mut(B))
                .zip(o3.chunks_exact_mut(B));
            for (((x0, x1), x2), x3) in iter {
                store::<B>(x0, decode_one(s, &mut b0, table, p, &mut bad));
                store::<B>(x1, decode_one(s, &mut b1, table, p, &mut bad));
                store::<B>(x2, decode_one(s, &mut b2, table, p, &mut bad));
                store::<B>(x3, decode_one(s, &mut b3, table, p, &mut bad));
            }
        }
        *bitpos = [b0, b1, b2, b3];
    }
    // Tails: the quarters hold ceil(count / 4) values each except the last ones.
    for (k, pos) in bitpos.iter_mut().enumerate() {
        let (start, end) = ranges[k];
        for v in out[(start + common) * B..end * B].chunks_exact_mut(B) {
            store::<B>(v, decode_one(s, pos, table, p, &mut bad));
        }
    }
    bad
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entropy_estimate_is_the_entropy_within_rounding() {
        // Empty, single-cell, sparse and dense histograms, counts below and above the table.
        let mut rng = crate::pseudo_u64(usize::MAX, 5);
        let mut next = move || rng.next().expect("unbounded");
        let mut hists = vec![
            vec![],
            vec![0, 0],
            vec![7],
            vec![0, 5000, 0],
            vec![1, 1, 1, 1],
        ];
        for cells in [2usize, 17, 129, 1032] {
            for scale in [3u64, 100, 5000, 1 << 20] {
                hists.push(
                    (0..cells)
                        .map(|_| if next() % 3 == 0 { 0 } else { next() % scale })
                        .collect(),
                );
            }
        }
        for h in &hists {
            let (a, b) = (entropy(h), entropy_estimate(h));
            assert!((a - b).abs() <= 1e-9 * a.max(1.0), "{a} vs {b} for {h:?}");
        }
    }

    fn round_trip(layout: FloatLayout, data: &[u8]) -> usize {
        let a = Analysis::new(layout, data);
        let plan = a.best_plan();
        let enc = encode(layout, data, &plan);
        assert!(
            enc.len() <= plan.size,
            "size estimate must bound the payload"
        );
        let mut out = vec![0u8; data.len()];
        decode(&enc, &mut out).unwrap();
        assert_eq!(out, data);
        enc.len()
    }

    fn pseudo(n: usize) -> Vec<u8> {
        crate::pseudo_bytes(n, 0x1234_5678_9abc_def0)
    }

    #[test]
    fn bf16_gaussianish_round_trip_and_compresses() {
        // Values with a narrow exponent range.
        let mut data = Vec::new();
        for (i, b) in pseudo(20_001).iter().enumerate() {
            let exp = 120 + (i % 7) as u16;
            let v = (u16::from(b & 1) << 15) | exp << 7 | u16::from(*b >> 1);
            data.extend_from_slice(&v.to_le_bytes());
        }
        let size = round_trip(FloatLayout::BF16, &data);
        assert!(size < data.len() * 3 / 4);
    }

    #[test]
    fn f32_with_zero_low_bytes_costs_little() {
        let mut data = Vec::new();
        for b in pseudo(4096).chunks(2) {
            let v = u32::from(u16::from_le_bytes([b[0], b[1] & 0x3f | 0x3c])) << 16;
            data.extend_from_slice(&v.to_le_bytes());
        }
        let size = round_trip(FloatLayout::F32, &data);
        assert!(size < data.len() / 2 + 200, "{size}");
    }

    #[test]
    fn random_bits_every_width() {
        for layout in [
            FloatLayout::F8_E4M3,
            FloatLayout::F16,
            FloatLayout::BF16,
            FloatLayout::F32,
            FloatLayout::F64,
        ] {
            for n in [0usize, 1, 2, 3, 5, 17, 1000] {
                round_trip(layout, &pseudo(n * layout.bytes()));
            }
        }
    }

    #[test]
    fn constant_and_zero_values() {
        round_trip(FloatLayout::F32, &[0u8; 4000]);
        round_trip(FloatLayout::F64, &[0xFFu8; 800]);
        round_trip(FloatLayout::BF16, &[0x80, 0x3f].repeat(999));
    }

    #[test]
    fn corrupt_payloads_error() {
        let data = pseudo(4000);
        let a = Analysis::new(FloatLayout::BF16, &data);
        let enc = encode(FloatLayout::BF16, &data, &a.best_plan());
        let mut out = vec![0u8; data.len()];
        for cut in 0..enc.len() {
            let _ = decode(&enc[..cut], &mut out);
        }
        for i in 0..enc.len() {
            let mut bad = enc.clone();
            bad[i] ^= 0x55;
            let _ = decode(&bad, &mut out);
        }
    }
}
