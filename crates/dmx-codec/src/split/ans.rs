//! The split-stream float codec with an rANS-coded symbol field (codec id 12,
//! `FLOAT_SPLIT_RANS`).
//!
//! Codec 10's field split, low-byte codes and residual area, but the symbols are coded with
//! static rANS at 14-bit probabilities instead of Huffman codes. A Huffman code spends a
//! whole number of bits on each symbol; the exponent distributions of trained weights (a
//! few binades hold most values) lose 0.02–0.06 bits per value to that rounding, which
//! rANS gets back to within a few thousandths. The writer picks this codec per chunk where
//! it is at least 0.1 % smaller than codec 10 ([`plan`]).
//!
//! 32 rANS states take the values round robin (value `i` goes to state `i mod 32`) and
//! share one stream of 16-bit words, read in state order: a decoder runs 32 independent
//! dependency chains (on x86-64 with AVX2, as four vectors of eight lanes, in `cpu.rs`) and
//! reads the residuals in value order. See docs/CODECS.md §10.

use super::{
    FieldStreams, HEADER, Header, Plan as SplitPlan, Shape, decode_low_bytes, encode_width,
    field_bytes, low_coders, read_streams, read_tables, residual_bytes, write_header,
};
use crate::bits::{BitReader, BitVec, peek};
use crate::cpu::{Level, dispatch};
use crate::entropy::rans;
use crate::float::{Analysis, load, quarters};
use crate::{CodecError, FloatLayout, huffman};

/// Probability bits of the symbol model: frequencies add up to `2^PB`.
pub const PB: u32 = 14;
/// Slots of the decode table.
const TOTAL: usize = 1 << PB;
/// Interleaved rANS states: four groups of eight (one AVX2 vector each), so that a decoder
/// has four independent dependency chains of vector operations in flight.
pub const LANES: usize = 32;
/// States per group: values are decoded eight at a time.
const GROUP: usize = 8;
/// Lower bound of a normalized state; states are below `2^32` and words have 16 bits.
const L: u32 = 1 << 16;
/// Widest symbol alphabet (12-bit symbols).
const ALPHA: usize = 1 << super::MAX_SYM_BITS;
/// Fewest values a chunk needs for this codec (and codec 16, which codes with it): two per
/// state.
pub const MIN_VALUES: usize = 2 * LANES;
/// Bytes of the stream header: its length, then the eight final states.
pub(crate) const STREAM_HEAD: usize = 4 + 4 * LANES;

/// A codec-12 plan: codec 10's split with an rANS model of the symbols.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The split (symbol width, trailing zeros, coded low bytes); its Huffman lengths of the
    /// symbols are not used.
    pub split: SplitPlan,
    /// Frequency descriptors of the symbols ([`rans::describe`]).
    desc: Vec<u8>,
    /// The descriptors as written ([`rans::write_runs`]).
    table: Vec<u8>,
    /// Payload size in bytes: an upper bound.
    pub size: usize,
    /// How far below `size` the payload can come out.
    pub slack: usize,
}

/// The codec-12 plan of a chunk when it is smaller than codec 10's `split` plan (the chunk
/// scanned by `a`, with `split` from [`super::best_plan`] on it), else `None`: by any
/// amount for 4-byte values whose low bytes are raw, whose residuals codec 12's vector
/// decoder reads faster than codec 10's decoder, else by at least 1/1000 of it. The estimate
/// prices the symbols at their exact cost under the normalized frequencies.
pub fn plan(a: &Analysis, split: &SplitPlan) -> Option<Plan> {
    let margin = if a.layout().bytes() == 4 && split.low_bytes.is_empty() {
        0
    } else {
        split.size / 1000
    };
    plan_any(a, split).filter(|p| p.size + margin < split.size)
}

/// The codec-12 plan of a chunk whether or not it beats codec 10 (as [`plan`]); `None` only
/// for fewer than 64 values.
pub fn plan_any(a: &Analysis, split: &SplitPlan) -> Option<Plan> {
    let count = a.count();
    if count < MIN_VALUES {
        return None;
    }
    let hist = a.symbol_hist(split.sym_bits);
    let desc = rans::describe(&hist);
    let freqs = rans::normalize_to(&desc, PB);
    let mut bits = 0.0f64;
    for (&c, &f) in hist.iter().zip(&freqs) {
        if c > 0 {
            bits += c as f64 * (f64::from(PB) - f64::from(f).log2());
        }
    }
    let mut w = BitVec::default();
    rans::write_runs(&desc, &mut w);
    let table = w.finish();
    // Each step renormalizes before it codes, so the words carry the information less what
    // the final states hold (at least 16 bits each); a margin covers the rounding.
    let words = (bits * 1.0005 / 16.0).ceil() as usize + 2;
    let huff_symbols = field_bytes(&hist, &split.lengths);
    let size = split.size - huff_symbols + table.len() + STREAM_HEAD + 2 * words;
    // The final states hold up to 16 bits each above L, which the words then lack.
    let slack = 2 * (words - (bits / 16.0).floor() as usize) + 2 * LANES;
    Some(Plan {
        split: split.clone(),
        desc,
        table,
        size,
        slack,
    })
}

/// The level and tables of the vector encoder ([`crate::cpu::ans_encode`]).
struct VecTables<'a> {
    level: Level,
    fc: &'a [u32; ALPHA],
    inv: &'a [f32; ALPHA],
}

/// Encoder constants of a symbol (16 bytes).
#[derive(Debug, Clone, Copy, Default)]
struct Sym {
    /// `ceil(2^46 / f)`: `x / f == (x · rcp) >> 46` for every state `x < 2^(32 − PB) f`.
    rcp: u64,
    f: u32,
    c: u32,
}

impl Sym {
    fn new(f: u32, c: u32) -> Self {
        Self {
            rcp: (1u64 << 46).div_ceil(u64::from(f.max(1))),
            f,
            c,
        }
    }

    /// Codes this symbol into state `x`, after pushing a word to `words[*n]` when the state
    /// must shrink first (the word is always stored and kept only then: no branch;
    /// `words` needs a slot past the last word, and a power-of-two length).
    #[inline(always)]
    fn put(&self, x: &mut u32, words: &mut [u16], n: &mut usize) {
        // Renormalize while x >= 2^(32 − PB) f.
        let emit = u64::from(*x) >= u64::from(self.f) << (32 - PB);
        // `words.len()` is a power of two above every `n`: the mask changes nothing.
        words[*n & (words.len() - 1)] = *x as u16;
        *n += usize::from(emit);
        let v = if emit { *x >> 16 } else { *x };
        // v < 2^18 f, so v · rcp < 2^64, and v · (rcp · f − 2^46) < 2^46: the quotient is
        // exact.
        let q = ((u64::from(v) * self.rcp) >> 46) as u32;
        *x = (q << PB) + (v - q * self.f) + self.c;
    }
}

/// Encodes `data` (whole values of `layout`, which must satisfy [`super::supports`]) with
/// `plan` (from [`plan`] on the same data).
pub fn encode(layout: FloatLayout, data: &[u8], plan: &Plan) -> Vec<u8> {
    encode_at(layout, data, plan, Level::detected())
}

/// [`encode`] with the hot loops compiled for `level` (every level gives the same bytes).
pub fn encode_at(layout: FloatLayout, data: &[u8], plan: &Plan, level: Level) -> Vec<u8> {
    assert!(
        super::supports(layout),
        "codec 12 takes 1-, 2- and 4-byte values"
    );
    let split = &plan.split;
    let mut out = Vec::with_capacity(plan.size.saturating_add(16));
    write_header(&mut out, layout, data, split);
    out.extend_from_slice(&plan.table);
    for lengths in &split.low_bytes {
        huffman::write_lengths(lengths, &mut out);
    }
    let freqs = rans::normalize_to(&plan.desc, PB);
    let mut syms = Box::new([Sym::default(); ALPHA]);
    let mut c = 0;
    for (s, &f) in syms.iter_mut().zip(&freqs) {
        if f > 0 {
            *s = Sym::new(f, c);
        }
        c += f;
    }
    let shift = layout.bits() - split.sym_bits;
    let shape = Shape::of(layout, split);
    let coders: Vec<_> = low_coders(split).collect();
    // The vector encoder's tables: `c << 16 | f` and `1 / f` per symbol.
    let mut vec_fc = Box::new([0u32; ALPHA]);
    let mut vec_inv = Box::new([0f32; ALPHA]);
    for ((fc, inv), s) in vec_fc.iter_mut().zip(vec_inv.iter_mut()).zip(syms.iter()) {
        *fc = s.c << 16 | s.f;
        *inv = if s.f > 0 { 1.0 / s.f as f32 } else { 0.0 };
    }
    let vec = VecTables {
        level,
        fc: &vec_fc,
        inv: &vec_inv,
    };
    let (syms, coders, o, vec) = (&*syms, &coders, &mut out, &vec);
    match layout.bytes() {
        1 => dispatch(
            level,
            #[inline(always)]
            || {
                encode_symbols::<1>(data, shift, syms, vec, o);
                encode_width::<1>(data, shape, coders, o);
            },
        ),
        2 => dispatch(
            level,
            #[inline(always)]
            || {
                encode_symbols::<2>(data, shift, syms, vec, o);
                encode_width::<2>(data, shape, coders, o);
            },
        ),
        _ => dispatch(
            level,
            #[inline(always)]
            || {
                encode_symbols::<4>(data, shift, syms, vec, o);
                encode_width::<4>(data, shape, coders, o);
            },
        ),
    }
    out
}

/// Appends the rANS stream of the symbols (`value >> shift` of each value): its byte
/// length, the final states, then the words in decoding order.
#[inline(always)]
fn encode_symbols<const B: usize>(
    data: &[u8],
    shift: u32,
    syms: &[Sym; ALPHA],
    vec: &VecTables<'_>,
    out: &mut Vec<u8>,
) {
    let count = data.len() / B;
    let sym =
        |i: usize| &syms[(load::<B>(&data[i * B..(i + 1) * B]) >> shift) as usize & (ALPHA - 1)];
    let mut x = [L; LANES];
    // At most one word per value, and room for the eight a vector store may write past the
    // end. A power-of-two length: indices masked with `len − 1` need no bounds check.
    let mut words = vec![0u16; (count + 16).next_power_of_two()];
    let mut n = 0;
    // Symbols are pushed last first: the tail past the last whole round, then the rounds.
    let whole = count / LANES * LANES;
    for i in (whole..count).rev() {
        sym(i).put(&mut x[i % LANES], &mut words, &mut n);
    }
    let words = &mut words[..];
    let vector = crate::cpu::ans_encode(
        vec.level,
        &crate::cpu::AnsEncode {
            data: &data[..whole * B],
            bytes: B,
            shift,
            fc: vec.fc,
            inv: vec.inv,
        },
        &mut x,
        words,
        &mut n,
    );
    let scalar = if vector { 0 } else { whole };
    for round in data[..scalar * B].chunks_exact(LANES * B).rev() {
        for (g, group) in round.chunks_exact(GROUP * B).enumerate().rev() {
            let v: [u64; GROUP] = match B {
                2 => {
                    let (a, b) = (load::<8>(&group[..8]), load::<8>(&group[8..16]));
                    std::array::from_fn(|j| {
                        (if j < 4 {
                            a >> (16 * j)
                        } else {
                            b >> (16 * (j - 4))
                        }) & 0xFFFF
                    })
                }
                _ => std::array::from_fn(|j| load::<B>(&group[j * B..(j + 1) * B])),
            };
            let s = |j: usize| &syms[(v[j] >> shift) as usize & (ALPHA - 1)];
            let Some([x0, x1, x2, x3, x4, x5, x6, x7]) = x
                .get_mut(g * GROUP..(g + 1) * GROUP)
                .and_then(|x| <&mut [u32; GROUP]>::try_from(x).ok())
            else {
                unreachable!("a round holds LANES / GROUP groups");
            };
            s(7).put(x7, words, &mut n);
            s(6).put(x6, words, &mut n);
            s(5).put(x5, words, &mut n);
            s(4).put(x4, words, &mut n);
            s(3).put(x3, words, &mut n);
            s(2).put(x2, words, &mut n);
            s(1).put(x1, words, &mut n);
            s(0).put(x0, words, &mut n);
        }
    }
    out.extend_from_slice(&((STREAM_HEAD - 4 + 2 * n) as u32).to_le_bytes());
    for s in x {
        out.extend_from_slice(&s.to_le_bytes());
    }
    let at = out.len();
    out.resize(at + 2 * n, 0);
    for (o, w) in out[at..].chunks_exact_mut(2).zip(words[..n].iter().rev()) {
        o.copy_from_slice(&w.to_le_bytes());
    }
}

/// Decodes a payload produced by [`encode`] into `out`, whose length is the raw size.
pub fn decode(payload: &[u8], out: &mut [u8]) -> Result<(), CodecError> {
    decode_at(payload, out, Level::detected())
}

/// [`decode`] with the hot loop compiled for `level` (every level gives the same result).
pub fn decode_at(payload: &[u8], out: &mut [u8], level: Level) -> Result<(), CodecError> {
    let h = Header::read(payload, out.len())?;
    let mut pos = HEADER;
    let mut br = BitReader::new(&payload[pos..]);
    let desc = rans::read_runs(&mut br, 1 << h.sym_bits)?;
    if br.overrun() {
        return Err(CodecError::Corrupt("rANS table truncated"));
    }
    pos += br.bytes_used();
    let low_tables = read_tables(payload, &mut pos, std::iter::repeat_n(8, h.low), h.count)?;
    let stream_len = payload
        .get(pos..pos + 4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
        .ok_or(CodecError::Corrupt("rANS stream length truncated"))?;
    pos += 4;
    if stream_len < STREAM_HEAD - 4 || !(stream_len - (STREAM_HEAD - 4)).is_multiple_of(2) {
        return Err(CodecError::Corrupt("rANS stream has an impossible length"));
    }
    let stream = payload
        .get(pos..pos + stream_len)
        .ok_or(CodecError::Corrupt("rANS stream exceeds the payload"))?;
    pos += stream_len;
    let mut x = [0u32; LANES];
    for (s, b) in x.iter_mut().zip(stream.chunks_exact(4)) {
        *s = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    }
    let words = &stream[4 * LANES..];
    let mut fields: Vec<FieldStreams> = Vec::with_capacity(h.low);
    for _ in 0..h.low {
        fields.push(read_streams(payload, &mut pos)?);
    }
    let r = h.r();
    if payload.len() - pos != residual_bytes(h.count, r) {
        return Err(CodecError::Corrupt(
            "split payload residual area has the wrong size",
        ));
    }
    let freqs = rans::normalize_to(&desc, PB);
    if h.count > 0 && freqs.iter().all(|&f| f == 0) {
        return Err(CodecError::Corrupt("rANS table describes no symbol"));
    }
    let tables = DecodeTables::new(&freqs);
    let d = Dec {
        tables: &tables,
        words,
        res: &payload[pos..],
        shift: 8 * h.bytes as u32 - h.sym_bits,
        tz: h.tz + 8 * h.low as u32,
        r,
    };
    let mut k = 0usize;
    // Whole rounds in vector lanes where the CPU has them, the rest here.
    let from = crate::cpu::ans_rounds(
        level,
        &crate::cpu::AnsRounds {
            fb: &tables.fb,
            sym: &tables.sym,
            words,
            res: d.res,
            r,
            shift: d.shift,
            tz: d.tz,
            bytes: h.bytes,
        },
        &mut x,
        &mut k,
        out,
    );
    let (xs, kk) = (&mut x, &mut k);
    // Residuals per load: all eight when they fit 57 bits, else four, two or one.
    let per_load = match r {
        0..=7 => 8,
        8..=14 => 4,
        15..=28 => 2,
        _ => 1,
    };
    match (h.bytes, per_load) {
        (1, _) => dispatch(
            level,
            #[inline(always)]
            || d.run::<1, 8>(xs, kk, from, out),
        ),
        (2, 8) => dispatch(
            level,
            #[inline(always)]
            || d.run::<2, 8>(xs, kk, from, out),
        ),
        (2, _) => dispatch(
            level,
            #[inline(always)]
            || d.run::<2, 4>(xs, kk, from, out),
        ),
        (_, 8) => dispatch(
            level,
            #[inline(always)]
            || d.run::<4, 8>(xs, kk, from, out),
        ),
        (_, 4) => dispatch(
            level,
            #[inline(always)]
            || d.run::<4, 4>(xs, kk, from, out),
        ),
        (_, 2) => dispatch(
            level,
            #[inline(always)]
            || d.run::<4, 2>(xs, kk, from, out),
        ),
        _ => dispatch(
            level,
            #[inline(always)]
            || d.run::<4, 1>(xs, kk, from, out),
        ),
    }
    // The encoder started every state at L: decoding must end there, every word read.
    if 2 * k != words.len() || x.iter().any(|&s| s != L) {
        return Err(CodecError::Corrupt(
            "rANS stream does not end where its symbols do",
        ));
    }
    if h.low > 0 && h.count > 0 {
        decode_low_bytes(
            payload,
            &low_tables,
            &fields,
            &quarters(h.count),
            out,
            level,
        )?;
    }
    Ok(())
}

/// Decode tables of a symbol model, indexed by slot (`state mod 2^PB`).
pub(crate) struct DecodeTables {
    /// `f << 16 | (slot − cum)` of the slot's symbol: the state update.
    pub(crate) fb: Box<[u32; TOTAL]>,
    /// The slot's symbol; two entries of padding, so a 4-byte read at any slot stays inside.
    pub(crate) sym: Box<[u16; TOTAL + 2]>,
}

impl DecodeTables {
    /// Tables for frequencies summing to `2^PB` (or all zero: then every slot decodes
    /// symbol 0 with frequency 0, which ends with a failed end check).
    fn new(freqs: &[u32]) -> Self {
        let mut fb = Box::new([0u32; TOTAL]);
        let mut sym = Box::new([0u16; TOTAL + 2]);
        let mut cum = 0usize;
        for (s, &f) in freqs.iter().enumerate().take(ALPHA) {
            let f = f as usize;
            // Frequencies sum to exactly TOTAL (normalize_to), so the slots stay in range.
            if let (Some(fbs), Some(syms)) = (fb.get_mut(cum..cum + f), sym.get_mut(cum..cum + f)) {
                for (b, (e, y)) in fbs.iter_mut().zip(syms).enumerate() {
                    *e = (f as u32) << 16 | b as u32;
                    *y = s as u16;
                }
            }
            cum += f;
        }
        Self { fb, sym }
    }
}

/// Per-chunk constants of the decoder.
struct Dec<'a> {
    tables: &'a DecodeTables,
    /// The words, two bytes each, little-endian.
    words: &'a [u8],
    res: &'a [u8],
    /// Where the symbol sits in a value.
    shift: u32,
    /// Where the raw residual sits in a value.
    tz: u32,
    /// Width of the raw residual.
    r: u32,
}

impl Dec<'_> {
    /// Advances state `x` by one symbol; returns the symbol. The state may need a refill
    /// after ([`Dec::refill`]).
    #[inline(always)]
    fn step(&self, x: &mut u32) -> u64 {
        let slot = *x as usize & (TOTAL - 1);
        let e = self.tables.fb[slot];
        *x = (e >> 16) * (*x >> PB) + (e & 0xFFFF);
        u64::from(self.tables.sym[slot])
    }

    /// Reads the next word into state `x` when it is below `L` (branch-free: the word is
    /// always read and kept only when needed; reads past the end get zeros and fail the end
    /// check).
    #[inline(always)]
    fn refill(&self, x: &mut u32, k: &mut usize) {
        let need = *x < L;
        let w = self
            .words
            .get(2 * *k..2 * *k + 2)
            .map_or(0, |b| u32::from(u16::from_le_bytes([b[0], b[1]])));
        *x = if need { *x << 16 | w } else { *x };
        *k += usize::from(need);
    }

    /// The eight residuals from bit `at` on, `K` per load.
    #[inline(always)]
    fn residuals<const K: usize>(&self, at: usize) -> [u64; GROUP] {
        let r = self.r as usize;
        let m = (1u64 << r) - 1;
        let mut res = [0u64; GROUP];
        for (i, part) in res.chunks_exact_mut(K).enumerate() {
            let w = peek(self.res, at + i * K * r);
            for (j, v) in part.iter_mut().enumerate() {
                *v = w >> (j * r) & m;
            }
        }
        res
    }

    /// Decodes the values of groups `from..` (of eight values; group `g` belongs to states
    /// `8 (g mod 4)..`) and the tail: per group the eight symbols, then the refills in state
    /// order, then the residuals, `K` per load.
    #[inline(always)]
    fn run<const B: usize, const K: usize>(
        &self,
        x: &mut [u32; LANES],
        k: &mut usize,
        from: usize,
        out: &mut [u8],
    ) {
        let (shift, tz, r) = (self.shift, self.tz, self.r as usize);
        let mut xs = *x;
        let mut kk = *k;
        let mut rpos = from * GROUP * r;
        let first = out.len() / B / GROUP * GROUP;
        let mut chunks = out[from * GROUP * B..].chunks_exact_mut(GROUP * B);
        for (g, o) in (from..).zip(&mut chunks) {
            let base = g % (LANES / GROUP) * GROUP;
            let Some(xg) = xs.get_mut(base..base + GROUP) else {
                unreachable!("groups stay inside the states");
            };
            let mut sym = [0u64; GROUP];
            for (s, x) in sym.iter_mut().zip(xg.iter_mut()) {
                *s = self.step(x);
            }
            // Every state takes at most one word: with eight left, one load serves all.
            if let Some(b) = self.words.get(2 * kk..2 * kk + 2 * GROUP) {
                let block: [u32; GROUP] = std::array::from_fn(|i| {
                    u32::from(u16::from_le_bytes([b[2 * i], b[2 * i + 1]]))
                });
                let mut used = 0;
                for x in xg.iter_mut() {
                    let need = *x < L;
                    let w = block[used & (GROUP - 1)];
                    *x = if need { *x << 16 | w } else { *x };
                    used += usize::from(need);
                }
                kk += used;
            } else {
                for x in xg.iter_mut() {
                    self.refill(x, &mut kk);
                }
            }
            let res = self.residuals::<K>(rpos);
            rpos += GROUP * r;
            let v: [u64; GROUP] = std::array::from_fn(|j| sym[j] << shift | res[j] << tz);
            match B {
                1 => o.copy_from_slice(
                    &v.iter()
                        .enumerate()
                        .fold(0u64, |a, (j, &v)| a | v << (8 * j))
                        .to_le_bytes()[..GROUP * B],
                ),
                2 => {
                    let lo = v[0] | v[1] << 16 | v[2] << 32 | v[3] << 48;
                    let hi = v[4] | v[5] << 16 | v[6] << 32 | v[7] << 48;
                    o[..8].copy_from_slice(&lo.to_le_bytes());
                    o[8..16].copy_from_slice(&hi.to_le_bytes());
                }
                _ => {
                    for (q, pair) in o.chunks_exact_mut(8).zip(v.chunks_exact(2)) {
                        q.copy_from_slice(&(pair[0] | pair[1] << 32).to_le_bytes());
                    }
                }
            }
        }
        let rmask = (1u64 << r) - 1;
        for (i, v) in (first..).zip(chunks.into_remainder().chunks_exact_mut(B)) {
            let j = i % LANES;
            let s = self.step(&mut xs[j]);
            self.refill(&mut xs[j], &mut kk);
            let res = peek(self.res, rpos) & rmask;
            rpos += r;
            let value = s << shift | res << tz;
            v.copy_from_slice(&value.to_le_bytes()[..B]);
        }
        *x = xs;
        *k = kk;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::split::best_plan;

    /// Trained-weight-like values: a few binades hold most values (the skew Huffman codes
    /// round badly), noisy mantissas.
    fn skewed(layout: FloatLayout, n: usize, seed: u64) -> Vec<u8> {
        let bits = layout.bits();
        let mant = bits - 1 - layout.exp_bits;
        let top = (1u64 << (layout.exp_bits - 1)) - 2;
        crate::pseudo_u64(n, seed)
            .flat_map(|x| {
                // Exponent offsets 0, 1, 2, … with probabilities falling by 0.7 (a geometric
                // law Huffman's power-of-two code lengths fit badly).
                let drop = (x >> 8).to_le_bytes()[..6]
                    .iter()
                    .take_while(|&&b| b < 179)
                    .count() as u64;
                let v = (x >> 63) << (bits - 1) | (top - drop) << mant | x & ((1 << mant) - 1);
                v.to_le_bytes()[..layout.bytes()].to_vec()
            })
            .collect()
    }

    /// The codec-12 plan of `data`, if any.
    fn plan_of(layout: FloatLayout, data: &[u8]) -> (SplitPlan, Option<Plan>) {
        let a = Analysis::new(layout, data);
        let split = best_plan(&a, Some(data));
        let p = plan(&a, &split);
        (split, p)
    }

    /// Encodes with a forced codec-12 plan on every CPU level and decodes: the same bytes,
    /// the same values; returns the payload.
    fn round_trip(layout: FloatLayout, data: &[u8]) -> Vec<u8> {
        let a = Analysis::new(layout, data);
        let split = best_plan(&a, Some(data));
        let p = forced(&a, &split);
        let enc = encode_at(layout, data, &p, Level::SCALAR);
        if let Some(planned) = plan(&a, &split) {
            assert!(
                enc.len() <= planned.size,
                "{} > planned {}",
                enc.len(),
                planned.size
            );
            assert!(
                enc.len() + planned.slack >= planned.size,
                "{} + slack",
                enc.len()
            );
        }
        for level in Level::available() {
            assert_eq!(encode_at(layout, data, &p, level), enc, "{}", level.name());
            let mut out = vec![0u8; data.len()];
            decode_at(&enc, &mut out, level).unwrap();
            assert_eq!(out, data, "{}", level.name());
        }
        enc
    }

    /// A codec-12 plan whether or not it pays.
    fn forced(a: &Analysis, split: &SplitPlan) -> Plan {
        let hist = a.symbol_hist(split.sym_bits);
        let desc = rans::describe(&hist);
        let mut w = BitVec::default();
        rans::write_runs(&desc, &mut w);
        let table = w.finish();
        let mut p = plan(a, split).unwrap_or(Plan {
            split: split.clone(),
            desc: desc.clone(),
            table: table.clone(),
            size: 0,
            slack: 0,
        });
        p.size = 0;
        assert_eq!((p.desc == desc, p.table == table), (true, true));
        p
    }

    #[test]
    fn the_quotient_by_reciprocal_is_exact() {
        for f in (1u32..=1 << PB)
            .step_by(97)
            .chain([1, 2, 3, 4095, 16383, 16384])
        {
            let s = Sym::new(f, 0);
            let max = ((u64::from(f) << (32 - PB)) - 1).min(u64::from(u32::MAX));
            for x in crate::pseudo_u64(2000, u64::from(f))
                .map(|r| r % (max + 1))
                .chain([0, 1, max, max - 1, u64::from(f) - 1, u64::from(f)])
            {
                assert_eq!((x * s.rcp) >> 46, x / u64::from(f), "f {f} x {x}");
            }
        }
    }

    #[test]
    fn every_width_and_length_round_trips() {
        for layout in [
            FloatLayout::F8_E4M3,
            FloatLayout::F16,
            FloatLayout::BF16,
            FloatLayout::F32,
        ] {
            for n in [0usize, 1, 2, 7, 8, 9, 15, 16, 17, 33, 1000, 4099] {
                round_trip(layout, &skewed(layout, n, n as u64 + 1));
                round_trip(
                    layout,
                    &crate::pseudo_bytes(n * layout.bytes(), 0x5eed + n as u64),
                );
            }
        }
    }

    #[test]
    fn every_residual_width_round_trips_at_every_level() {
        // Every symbol width of values with 0 to 23 trailing zero bits: residuals of 0 to
        // 23 bits (F32) and 0 to 10 (16-bit), each through the vector decoder's loads.
        let mut widths = std::collections::BTreeSet::new();
        for layout in [FloatLayout::F32, FloatLayout::BF16, FloatLayout::F16] {
            let bits = layout.bits();
            for tz in 0..bits - 8 {
                let data: Vec<u8> = skewed(layout, 3001, u64::from(tz) + 5)
                    .chunks_exact(layout.bytes())
                    .flat_map(|v| {
                        let x = load::<4>(&[v, &[0u8; 4][v.len()..]].concat()) >> tz << tz;
                        x.to_le_bytes()[..layout.bytes()].to_vec()
                    })
                    .collect();
                let a = Analysis::new(layout, &data);
                for w in crate::split::min_width(&a)..=a.hist_bits() {
                    let split = crate::split::plan_at_width(&a, w);
                    let tz = split.tz;
                    widths.insert((bits, bits - w - tz));
                    let p = forced(&a, &split);
                    let enc = encode_at(layout, &data, &p, Level::SCALAR);
                    for level in Level::available() {
                        assert_eq!(encode_at(layout, &data, &p, level), enc);
                        let mut out = vec![0u8; data.len()];
                        decode_at(&enc, &mut out, level).unwrap();
                        assert_eq!(out, data, "{layout:?} w {w} tz {tz} {}", level.name());
                    }
                }
            }
        }
        assert!((0..=23).all(|r| widths.contains(&(32, r))), "{widths:?}");
        assert!((0..=10).all(|r| widths.contains(&(16, r))), "{widths:?}");
    }

    #[test]
    fn pays_on_skewed_symbols_and_is_smaller_than_huffman() {
        // 32-bit values: the symbol is a small part of the value, so the saving is small
        // against the chunk; smaller than codec 10 all the same.
        let data = skewed(FloatLayout::F32, 200_000, 7);
        let a = Analysis::new(FloatLayout::F32, &data);
        let split = best_plan(&a, Some(&data));
        let forced = encode(FloatLayout::F32, &data, &forced(&a, &split));
        assert!(forced.len() < crate::split::encode(FloatLayout::F32, &data, &split).len());
        for layout in [FloatLayout::BF16, FloatLayout::F16] {
            let data = skewed(layout, 200_000, 7);
            let (split, p) = plan_of(layout, &data);
            let p = p.expect("rANS pays on a geometric exponent distribution");
            let enc = encode(layout, &data, &p);
            let huff = crate::split::encode(layout, &data, &split);
            assert!(enc.len() <= p.size && p.size < split.size);
            assert!(
                enc.len() + huff.len() / 1000 < huff.len(),
                "{} vs {}",
                enc.len(),
                huff.len()
            );
            let mut out = vec![0u8; data.len()];
            decode(&enc, &mut out).unwrap();
            assert_eq!(out, data);
        }
        // Uniform symbols: Huffman is already exact, rANS does not pay.
        let noise = crate::pseudo_bytes(100_000, 3);
        assert!(plan_of(FloatLayout::BF16, &noise).1.is_none());
    }

    #[test]
    fn structured_low_bytes_and_trailing_zeros_round_trip() {
        // Low bytes from three patterns: codec 10 codes them, and so does codec 12.
        let data: Vec<u8> = skewed(FloatLayout::F32, 20_000, 9)
            .chunks_exact(4)
            .enumerate()
            .flat_map(|(i, v)| {
                let x = u32::from_le_bytes([v[0], v[1], v[2], v[3]]) & 0xFFFF_0000;
                (x | ((i as u32 % 3) * 0x0101)).to_le_bytes()
            })
            .collect();
        let (split, _) = plan_of(FloatLayout::F32, &data);
        assert_eq!(split.low_bytes.len(), 2);
        round_trip(FloatLayout::F32, &data);
        // Values with zero low bits: the trailing zeros are dropped.
        let data: Vec<u8> = skewed(FloatLayout::F32, 5000, 11)
            .chunks_exact(4)
            .flat_map(|v| (u32::from_le_bytes([v[0], v[1], v[2], v[3]]) & !0xFFF).to_le_bytes())
            .collect();
        round_trip(FloatLayout::F32, &data);
        // A constant chunk: one symbol of frequency 2^PB, which never changes a state.
        let enc = round_trip(FloatLayout::BF16, &[0x80, 0x3f].repeat(1000));
        assert!(enc.len() < 160, "{}", enc.len());
    }

    #[test]
    fn special_values_survive() {
        let data: Vec<u8> = (0..1001)
            .flat_map(|i| crate::F32_SPECIALS[i % 8].to_le_bytes())
            .collect();
        round_trip(FloatLayout::F32, &data);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(100))]
        #[test]
        fn any_values_round_trip(
            li in 0usize..5,
            skew in 0u64..3,
            words in proptest::collection::vec(proptest::prelude::any::<u64>(), 0..600),
        ) {
            let layout = [
                FloatLayout::F8_E4M3,
                FloatLayout::F8_E5M2,
                FloatLayout::F16,
                FloatLayout::BF16,
                FloatLayout::F32,
            ][li];
            // Mix raw patterns (NaN payloads, infinities, subnormals, ±0 included) with
            // skewed values.
            let data: Vec<u8> = words
                .iter()
                .flat_map(|&w| {
                    let v = if w % 3 < skew { w & 0x8000_0000_0000_0000 >> (64 - layout.bits()) } else { w };
                    v.to_le_bytes()[..layout.bytes()].to_vec()
                })
                .collect();
            round_trip(layout, &data);
        }
    }

    #[test]
    fn corrupt_payloads_error_without_panicking() {
        for layout in [FloatLayout::BF16, FloatLayout::F32] {
            let data = skewed(layout, 3000, 5);
            let enc = round_trip(layout, &data);
            let mut out = vec![0u8; data.len()];
            crate::check_damaged(&enc, |p| decode(p, &mut out));
            let mut short = vec![0u8; data.len() - layout.bytes()];
            assert!(decode(&enc, &mut short).is_err());
        }
        // A table that describes no symbol, for a chunk that has values.
        let data = skewed(FloatLayout::BF16, 100, 5);
        let mut enc = round_trip(FloatLayout::BF16, &data);
        // The descriptor table starts after the 8-byte header: u16 first, u16 count.
        enc[10] = 0;
        enc[11] = 0;
        let mut out = vec![0u8; data.len()];
        assert!(decode(&enc, &mut out).is_err());
    }
}
