//! The integer stream coder: blocks of unsigned (or zigzagged signed) 64-bit integers coded by
//! bit length.
//!
//! A value `v` becomes a *token* and raw bits. With a per-block parameter `k` (0..=6), values
//! below `2^k` are their own token; a larger value of bit length `L` has the token
//! `(L - k) << k | m`, where `m` is the `k` bits after its leading one, and its low `L - 1 - k`
//! bits are stored raw. Tokens are coded with canonical Huffman codes (module
//! [`crate::huffman`]), one table per *context*: callers that know something about each value
//! (the delta codec passes the base value's exponent class) select a table per value; the
//! public functions use one context. A context holding a single token codes it in zero bits.
//! `k` is chosen per block by exact coded size. Value `i` goes to bit stream `i % 4`; the
//! four streams are decoded in lockstep for instruction-level parallelism.
//!
//! Block layout (all integers LEB128 varints unless noted):
//!
//! ```text
//! u8 k | count | count > 0: per context { u8 kind: 0 unused, 1 single token (+ token),
//!        2 Huffman (+ huffman::write_lengths table) } | 4 stream byte sizes | 4 streams
//! ```
//!
//! Each stream is LSB-first: per value its token's code, then the raw bits.

use crate::CodecError;
use crate::bits::{Bits, Lane};
use crate::entropy::varint::{get_varint, put_varint, varint_len};
use crate::float::entropy;
use crate::huffman::{self, MAX_CODE_LEN};

#[cfg(test)]
mod tests;

/// Number of interleaved bit streams.
pub const LANES: usize = 4;
/// Largest number of mantissa bits carried in a token.
pub const MAX_K: u32 = 6;
/// Largest context count accepted by the context-aware functions.
pub const MAX_CONTEXTS: usize = 256;

/// Flag in decode entries no code maps to.
const INVALID: u32 = 0x80;

pub use crate::entropy::{unzigzag_i64 as unzigzag, zigzag_i64 as zigzag};

/// Encodes signed integers as one self-delimiting block (zigzag inside).
pub fn encode_signed(values: &[i64]) -> Vec<u8> {
    let z: Vec<u64> = values.iter().map(|&v| zigzag(v)).collect();
    let mut out = Vec::new();
    encode_ctx(&z, None, 1, &mut out);
    out
}

/// Decodes a block made by [`encode_signed`] into `out` (whose length is the value count);
/// returns the bytes consumed. Never panics or over-allocates on arbitrary input; errors on
/// bad data or a count mismatch.
pub fn decode_signed(data: &[u8], out: &mut [i64]) -> Result<usize, CodecError> {
    decode_ctx(data, None, 1, out)
}

/// Order-0 entropy bound (bits) of the values under the coder's model: token entropy plus raw
/// bits, for the `k` the encoder would choose.
pub fn entropy_bits_signed(values: &[i64]) -> f64 {
    let z: Vec<u64> = values.iter().map(|&v| zigzag(v)).collect();
    Plan::new(&z, None, 1).entropy_bits
}

/// Encodes unsigned integers as one block (as [`encode_signed`] without the zigzag).
pub fn encode_unsigned(values: &[u64]) -> Vec<u8> {
    let mut out = Vec::new();
    encode_ctx(values, None, 1, &mut out);
    out
}

/// Decodes a block made by [`encode_unsigned`]; returns the bytes consumed.
pub fn decode_unsigned(data: &[u8], out: &mut [u64]) -> Result<usize, CodecError> {
    decode_ctx(data, None, 1, out)
}

/// An unsigned integer type the coder can take values in: callers whose values fit in fewer
/// bits (the differences of 16- or 32-bit floats) keep them in `u16` or `u32`, a half or a
/// quarter of the memory traffic of `u64`.
pub(crate) trait Word: Copy + Default + Send + Sync + 'static {
    /// The value as a `u64`.
    fn wide(self) -> u64;
}

macro_rules! word {
    ($($t:ty),*) => {$(
        impl Word for $t {
            #[inline(always)]
            fn wide(self) -> u64 {
                u64::from(self)
            }
        }
    )*};
}
word!(u16, u32, u64);

/// Alphabet size for parameter `k`.
fn alphabet(k: u32) -> usize {
    ((65 - k) << k) as usize
}

/// The token of `v` for parameter `k`, without a branch: with `s` the raw bits of `v` (its
/// bit length less `k + 1`, at least 0), `v >> s` is `v` itself below `2^(k+1)`, else the
/// leading one and the `k` bits after it, `2^k + m`; adding `s << k` gives
/// `(L - k) << k | m` for bit length `L`.
#[inline(always)]
fn token(v: u64, k: u32) -> u32 {
    let s = (64 - v.leading_zeros()).saturating_sub(k + 1);
    (v >> s) as u32 + (s << k)
}

/// Raw bits that follow token `t`.
#[inline(always)]
fn token_nraw(t: u32, k: u32) -> u32 {
    (t >> k).saturating_sub(1)
}

/// The smallest value of token `t` (its raw bits zero).
#[inline(always)]
fn token_base(t: u32, k: u32) -> u64 {
    let hi = t >> k;
    let lead = u64::from(hi != 0) << k;
    (lead | u64::from(t & ((1 << k) - 1))) << hi.saturating_sub(1)
}

/// Low `n` bits set (`n <= 63`).
#[inline(always)]
fn mask(n: u32) -> u64 {
    (1u64 << n) - 1
}

/// Per-context coding choice.
#[derive(Clone)]
enum CtxCode {
    Unused,
    Single(u32),
    Huffman(Vec<u8>),
}

/// Tables [`count_bins`] spreads its counts over.
const COUNT_TABLES: usize = 4;

/// The histogram of `bin(i)` (below `bins`) over `i` in `0..n`. Consecutive values go to
/// [`COUNT_TABLES`] tables of `u32` counters, summed at the end: with one table, a run of
/// values in one bin (most values of a peaked block) makes every increment wait for the
/// previous one's store.
#[inline(always)]
fn count_bins(n: usize, bins: usize, bin: impl Fn(usize) -> usize) -> Vec<u64> {
    let mut total = vec![0u64; bins];
    let mut tables = vec![0u32; COUNT_TABLES * bins];
    // `u32` counters cannot overflow within a block of `u32::MAX` values per table.
    let block = COUNT_TABLES * (u32::MAX as usize);
    let mut start = 0;
    while start < n {
        let end = n.min(start + block);
        let mut i = start;
        while i + COUNT_TABLES <= end {
            for t in 0..COUNT_TABLES {
                tables[t * bins + bin(i + t)] += 1;
            }
            i += COUNT_TABLES;
        }
        for (t, j) in (i..end).enumerate() {
            tables[t * bins + bin(j)] += 1;
        }
        for table in tables.chunks_exact_mut(bins) {
            for (a, c) in total.iter_mut().zip(table.iter_mut()) {
                *a += u64::from(std::mem::take(c));
            }
        }
        start = end;
    }
    total
}

/// Token histograms of a block at the finest parameter (`k = MAX_K`), one per context.
pub(crate) struct Hist {
    /// `counts[c * width + t]`: values of context `c` with token `t`.
    counts: Vec<u64>,
    /// Tokens per context row (every token of the block is below it).
    width: usize,
    nctx: usize,
    /// Values per stream.
    lane_values: [usize; LANES],
}

impl Hist {
    /// Histograms of `values` under contexts `ctx` (same length, entries below `nctx`).
    pub(crate) fn new<W: Word>(values: &[W], ctx: Option<&[u8]>, nctx: usize) -> Self {
        debug_assert!((1..=MAX_CONTEXTS).contains(&nctx));
        debug_assert!(ctx.is_none_or(|c| c.len() == values.len()));
        // Under CPU dispatch: `token`'s leading-zero count is one instruction with LZCNT
        // (the baseline's BSR needs a test for zero).
        let (width, counts) = crate::cpu::dispatch(
            crate::cpu::Level::detected(),
            #[inline(always)]
            || {
                // Tokens grow with the value, so the OR of all values bounds them.
                let or = values.iter().fold(0u64, |a, &v| a | v.wide());
                let width = token(or, MAX_K) as usize + 1;
                let counts = match ctx {
                    Some(c) => count_bins(
                        values.len(),
                        nctx * width,
                        #[inline(always)]
                        |i| usize::from(c[i]) * width + token(values[i].wide(), MAX_K) as usize,
                    ),
                    None => count_bins(
                        values.len(),
                        width,
                        #[inline(always)]
                        |i| token(values[i].wide(), MAX_K) as usize,
                    ),
                };
                (width, counts)
            },
        );
        let n = values.len();
        Self {
            counts,
            width,
            nctx,
            lane_values: std::array::from_fn(|j| (n + LANES - 1 - j) / LANES),
        }
    }

    /// The row width [`Hist::new`] gives values whose bitwise OR is `or`.
    pub(crate) fn width_for(or: u64) -> usize {
        token(or, MAX_K) as usize + 1
    }

    /// Counts one value of context `c` into `counts` (rows of `width`, as [`Hist::new`]).
    #[inline(always)]
    pub(crate) fn count(counts: &mut [u64], width: usize, c: usize, v: u64) {
        counts[c * width + token(v, MAX_K) as usize] += 1;
    }

    /// The histogram of `n` values counted with [`Hist::count`] into `counts`
    /// (`nctx` rows of [`Hist::width_for`] the values' OR): what [`Hist::new`] gives them.
    pub(crate) fn from_counts(counts: Vec<u64>, width: usize, nctx: usize, n: usize) -> Self {
        debug_assert_eq!(counts.len(), nctx * width);
        Self {
            counts,
            width,
            nctx,
            lane_values: std::array::from_fn(|j| (n + LANES - 1 - j) / LANES),
        }
    }

    /// The used (token, count) pairs of each context, tokens increasing.
    pub(crate) fn used(&self) -> Vec<Vec<(u32, u64)>> {
        self.counts
            .chunks(self.width)
            .map(|h| {
                h.iter()
                    .enumerate()
                    .filter(|&(_, &f)| f > 0)
                    .map(|(t, &f)| (t as u32, f))
                    .collect()
            })
            .collect()
    }

    /// The same values under a single context.
    pub(crate) fn merged(&self) -> Self {
        let mut counts = vec![0u64; self.width];
        for row in self.counts.chunks(self.width) {
            for (a, &c) in counts.iter_mut().zip(row) {
                *a += c;
            }
        }
        Self {
            counts,
            width: self.width,
            nctx: 1,
            lane_values: self.lane_values,
        }
    }
}

/// The chosen parameter and tables for a block, with a bound on its size.
pub(crate) struct Plan {
    k: u32,
    nctx: usize,
    codes: Vec<CtxCode>,
    /// Order-0 entropy bound in bits (token entropy per context plus raw bits).
    pub(crate) entropy_bits: f64,
    /// Size in bytes of the block [`encode_with_plan`] writes with this plan: exact but for
    /// at most one byte per stream (an upper bound).
    pub(crate) size: usize,
    /// Most bits one value takes (code and raw bits).
    max_bits: u32,
    lane_values: [usize; LANES],
}

impl Plan {
    /// The smallest plan over `k` for `values` under contexts `ctx` (see [`encode_ctx`]).
    pub(crate) fn new(values: &[u64], ctx: Option<&[u8]>, nctx: usize) -> Self {
        Self::from_hist(&Hist::new(values, ctx, nctx))
    }

    /// The smallest plan over `k` for the values of `hist` (the smallest `k` among equal
    /// sizes). Every `k` first gets a lower bound on its size from the entropy of its tokens
    /// (a Huffman code is never shorter); the codes are built only for the `k` whose bound
    /// can still beat the best size found, in order of their bounds.
    pub(crate) fn from_hist(hist: &Hist) -> Self {
        Self::from_hist_within(hist, usize::MAX).expect("at least one parameter")
    }

    /// [`Plan::from_hist`] when its size is at most `limit`, else `None`; codes are built
    /// only for the `k` whose bound is within `limit`, so a caller comparing against another
    /// plan's size usually builds none.
    pub(crate) fn from_hist_within(hist: &Hist, limit: usize) -> Option<Self> {
        let n: usize = hist.lane_values.iter().sum();
        let used = hist.used();
        // The (token, count) pairs per context at each `k`, each level merged from the one
        // above (a token at `k + 1` lies within one token at `k`).
        let mut levels: Vec<Vec<Vec<(u32, u64)>>> = vec![Vec::new(); MAX_K as usize + 1];
        levels[MAX_K as usize] = used;
        for k in (0..MAX_K).rev() {
            let finer = &levels[k as usize + 1];
            levels[k as usize] = finer.iter().map(|u| coarsen(u, k + 1, k)).collect();
        }
        // Per `k`: a lower bound on the size (the exact header, and a lower bound on the
        // entropy for the code bits), `k`, the header bytes, and each context's share of the
        // bits (raw bits and token entropy, from `entropy_floor`).
        let mut order: Vec<(usize, u32, usize, Vec<f64>)> = (0..=MAX_K)
            .map(|k| {
                let (mut bits, mut header) = (0f64, 0usize);
                let lower: Vec<f64> = levels[k as usize]
                    .iter()
                    .map(|merged| {
                        let b = raw_bits(merged, k) as f64 + entropy_floor(merged);
                        bits += b;
                        header += ctx_header(merged);
                        b
                    })
                    .collect();
                (size_bound(n, header, bits), k, header, lower)
            })
            .collect();
        order.sort_unstable_by_key(|a| (a.0, a.1));
        let mut best: Option<Plan> = None;
        for (bound, k, header, lower) in order {
            let cap = best.as_ref().map_or(limit, |b| b.size);
            if bound > cap {
                break;
            }
            let level = &levels[k as usize];
            let Some(plan) = Self::at_k_within(hist, level, k, header, &lower, cap) else {
                continue;
            };
            let better = best
                .as_ref()
                .is_none_or(|b| (plan.size, plan.k) < (b.size, b.k));
            if better {
                best = Some(plan);
            }
        }
        let mut best = best.filter(|b| b.size <= limit)?;
        // The entropy bound the block records: per context, in context order.
        let mut freqs: Vec<u64> = Vec::new();
        best.entropy_bits = levels[best.k as usize]
            .iter()
            .map(|merged| {
                freqs.clear();
                freqs.extend(merged.iter().map(|m| m.1));
                raw_bits(merged, best.k) as f64 + entropy(&freqs)
            })
            .fold(0.0, |a, b| a + b);
        Some(best)
    }

    /// The plan at parameter `k` for `hist`, whose (token, count) pairs at `k` per context
    /// are `level` (its `entropy_bits` left at 0).
    #[cfg(test)]
    fn at_k(hist: &Hist, level: &[Vec<(u32, u64)>], k: u32) -> Self {
        let header = level.iter().map(|m| ctx_header(m)).sum();
        let lower = vec![0.0; level.len()];
        Self::at_k_within(hist, level, k, header, &lower, usize::MAX).expect("no cap")
    }

    /// `Plan::at_k` (the tests' definition) when its size can be at most `cap`: the contexts'
    /// codes are built in turn, and the build stops (`None`) as soon as the bits of the codes
    /// built so far plus the lower bounds `lower` (bits per context) of the others put the
    /// size above `cap`.
    /// `header` is the exact bytes of the context headers.
    fn at_k_within(
        hist: &Hist,
        level: &[Vec<(u32, u64)>],
        k: u32,
        header: usize,
        lower: &[f64],
        cap: usize,
    ) -> Option<Self> {
        let n: usize = hist.lane_values.iter().sum();
        let mut rest: f64 = lower.iter().sum();
        let mut stream_bits = 0u64;
        let mut max_bits = 0u32;
        let mut codes = Vec::with_capacity(hist.nctx);
        for (merged, &low) in level.iter().zip(lower) {
            stream_bits += raw_bits(merged, k);
            let code = match merged.as_slice() {
                [] => CtxCode::Unused,
                [(t, _)] => {
                    max_bits = max_bits.max(token_nraw(*t, k));
                    CtxCode::Single(*t)
                }
                _ => {
                    let freqs: Vec<u64> = merged.iter().map(|m| m.1).collect();
                    let short = huffman::code_lengths(&freqs);
                    let mut lengths = vec![0u8; merged.last().map_or(0, |m| m.0 as usize + 1)];
                    for (&(t, f), &l) in merged.iter().zip(&short) {
                        lengths[t as usize] = l;
                        stream_bits += f * u64::from(l);
                        max_bits = max_bits.max(u32::from(l) + token_nraw(t, k));
                    }
                    CtxCode::Huffman(lengths)
                }
            };
            codes.push(code);
            rest -= low;
            if cap != usize::MAX && size_bound(n, header, stream_bits as f64 + rest.max(0.0)) > cap
            {
                return None;
            }
        }
        let size = block_size(n, header, (stream_bits / 8) as usize + LANES);
        Some(Plan {
            k,
            nctx: hist.nctx,
            codes,
            entropy_bits: 0.0,
            size,
            max_bits,
            lane_values: hist.lane_values,
        })
    }

    /// `code | length << 16 | raw bits << 24` per (context, token): a token of a context with
    /// a single token has no code, and every token its raw bits.
    fn encode_table(&self) -> Vec<u32> {
        let alph = alphabet(self.k);
        let mut enc: Vec<u32> = (0..self.nctx * alph)
            .map(|i| token_nraw((i % alph) as u32, self.k) << 24)
            .collect();
        for (c, code) in self.codes.iter().enumerate() {
            if let CtxCode::Huffman(lengths) = code {
                let codes = huffman::encode_codes(lengths);
                for ((e, &code), &l) in enc[c * alph..].iter_mut().zip(&codes).zip(lengths) {
                    *e |= u32::from(code) | u32::from(l) << 16;
                }
            }
        }
        enc
    }
}

/// The (token, count) pairs at `to` of the pairs at `from` (tokens increasing; every token
/// at `from > to` lies within one token at `to`, so equal ones are adjacent).
fn coarsen(pairs: &[(u32, u64)], from: u32, to: u32) -> Vec<(u32, u64)> {
    let mut out: Vec<(u32, u64)> = Vec::with_capacity(pairs.len());
    for &(t, f) in pairs {
        let t = token(token_base(t, from), to);
        match out.last_mut() {
            Some(last) if last.0 == t => last.1 += f,
            _ => out.push((t, f)),
        }
    }
    out
}

/// A lower bound on the order-0 entropy in bits of the counts of `pairs`, cheaper than
/// [`entropy`]: `T log2 T - sum f log2 f` ([`crate::float::f_log2_f`]),
/// less a margin far above the rounding of the sums. For pruning plans, never recorded.
fn entropy_floor(pairs: &[(u32, u64)]) -> f64 {
    let flog = crate::float::f_log2_f();
    let total: u64 = pairs.iter().map(|p| p.1).sum();
    let sum: f64 = pairs.iter().map(|p| flog(p.1)).sum();
    // Each term is within a few ulps; 1e-9 of the total's term is far above their sum.
    let t = flog(total);
    (t - sum - t * 1e-9).max(0.0)
}

/// The raw bits of the (token, count) pairs at `k`.
fn raw_bits(pairs: &[(u32, u64)], k: u32) -> u64 {
    pairs
        .iter()
        .map(|&(t, f)| f * u64::from(token_nraw(t, k)))
        .sum()
}

/// Header bytes of one context whose merged tokens are `merged`: its kind, then a Huffman
/// table (its size depends only on which tokens are used) or a single token.
fn ctx_header(merged: &[(u32, u64)]) -> usize {
    1 + match merged {
        [] => 0,
        [(t, _)] => varint_len(u64::from(*t)),
        _ => huffman::table_size(merged.iter().map(|m| m.0 as usize)),
    }
}

/// Bytes of a block of `n` values whose context headers take `header` bytes and whose
/// streams take `bytes`: the parameter, the count, then (for `n > 0`) the headers, the stream
/// sizes and the streams.
fn block_size(n: usize, header: usize, bytes: usize) -> usize {
    1 + varint_len(n as u64)
        + if n == 0 {
            0
        } else {
            header + LANES * varint_len(bytes as u64) + bytes
        }
}

/// A lower bound on [`Plan::size`] for `n` values whose context headers take `header` bytes
/// and whose coded bits are at least `bits` (a Huffman code takes no fewer bits than the
/// entropy).
fn size_bound(n: usize, header: usize, bits: f64) -> usize {
    // Relative slack for the rounding of the entropy sums.
    let bytes = (bits * (1.0 - 1e-9) / 8.0).max(0.0) as usize + LANES;
    block_size(n, header, bytes)
}

/// Encodes `values` as one block appended to `out`; `ctx` (same length, every entry below
/// `nctx`) selects a Huffman table per value. Returns the order-0 entropy bound in bits.
pub(crate) fn encode_ctx(
    values: &[u64],
    ctx: Option<&[u8]>,
    nctx: usize,
    out: &mut Vec<u8>,
) -> f64 {
    let plan = Plan::new(values, ctx, nctx);
    encode_with_plan(values, ctx, &plan, out);
    plan.entropy_bits
}

/// Bit lengths of a value (0 to 64): the cells of the histograms of [`context_gain`] and
/// [`class_gains`].
const LENGTHS: usize = 65;

/// An estimate of the bits that the contexts `class(values[i − 1])` (all below `nctx`; the
/// first value's is `class(0)`) save on `values`, from every `stride`-th value: see
/// [`gain_of`]. Cheap enough to run on every block before planning one with contexts.
pub(crate) fn context_gain(
    values: &[u64],
    class: impl Fn(u64) -> usize,
    nctx: usize,
    stride: usize,
) -> f64 {
    let mut h = vec![0u64; nctx * LENGTHS];
    let mut i = 0;
    while i < values.len() {
        let prev = if i == 0 { 0 } else { values[i - 1] };
        let len = (64 - values[i].leading_zeros()) as usize;
        h[class(prev).min(nctx - 1) * LENGTHS + len] += 1;
        i += stride;
    }
    gain_of(&h, stride)
}

/// [`context_gain`] of `N` context assignments at once: `ctx(i)[k]` (below `nctx[k]`) is the
/// context of value `i` in assignment `k`, from one value at a pseudo-random place in each
/// run of `stride` (a fixed stride would see only some columns of rows whose length it
/// divides), the same values for every assignment. `ctx` is called with increasing `i`.
pub(crate) fn class_gains<const N: usize>(
    values: &[u64],
    mut ctx: impl FnMut(usize) -> [u8; N],
    nctx: [usize; N],
    stride: usize,
) -> [f64; N] {
    // Two histograms per assignment, for even and odd runs, summed at the end: runs of
    // equal lengths would otherwise wait on each other's increment in memory.
    let size = nctx.map(|n| n * LENGTHS);
    let mut h: [Vec<u64>; N] = std::array::from_fn(|k| vec![0u64; 2 * size[k]]);
    for (j, run) in values.chunks_exact(stride).enumerate() {
        let at = ((j as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) as usize % stride;
        let len = (64 - run[at].leading_zeros()) as usize;
        let c = ctx(j * stride + at);
        for k in 0..N {
            let bin = usize::from(c[k]).min(nctx[k] - 1) * LENGTHS + len;
            h[k][(j & 1) * size[k] + bin] += 1;
        }
    }
    std::array::from_fn(|k| {
        let (even, odd) = h[k].split_at(size[k]);
        let sum: Vec<u64> = even.iter().zip(odd).map(|(a, b)| a + b).collect();
        gain_of(&sum, stride)
    })
}

/// The gain that the contexts of the bit-length histograms `h` (a row of [`LENGTHS`] per
/// context, from every `stride`-th value) promise: the drop in the entropy of the bit
/// lengths (each histogram's [`entropy_corrected`](crate::float::entropy_corrected)), scaled
/// to all values, less 20 bytes per extra table.
fn gain_of(h: &[u64], stride: usize) -> f64 {
    let mm = crate::float::entropy_corrected;
    let mut merged = vec![0u64; LENGTHS];
    let mut split = 0.0;
    let mut tables = 0usize;
    for row in h.chunks_exact(LENGTHS) {
        split += mm(row);
        tables += usize::from(row.iter().any(|&c| c > 0));
        for (m, &c) in merged.iter_mut().zip(row) {
            *m += c;
        }
    }
    (mm(&merged) - split) * stride as f64 - 160.0 * tables.saturating_sub(1) as f64
}

/// The code of value `v` under row `row` of `enc` (`code | length << 16 | raw bits << 24`
/// per token of parameter `k`), followed by its raw bits: `(bits, length)`. Only for a
/// plan whose codes and raw bits fit [`crate::bits::MAX_PUT_BITS`] together.
#[inline(always)]
fn code_of(enc: &[u32], row: usize, k: u32, v: u64) -> (u64, u32) {
    let e = enc[row + token(v, k) as usize];
    let len = (e >> 16) & 0xFF;
    let nraw = e >> 24;
    (u64::from(e & 0xFFFF) | (v & mask(nraw)) << len, len + nraw)
}

/// Writes value `v` to `lane` with the codes of row `row` of `enc` (`code | length << 16 |
/// raw bits << 24` per token of parameter `k`). `WIDE`: a code and its raw bits may pass
/// [`crate::bits::MAX_PUT_BITS`] together (else they always fit one put).
#[inline(always)]
fn put_value<const WIDE: bool>(
    lane: &mut Lane,
    buf: &mut [u8],
    enc: &[u32],
    row: usize,
    k: u32,
    v: u64,
) {
    let e = enc[row + token(v, k) as usize];
    let len = (e >> 16) & 0xFF;
    let code = u64::from(e & 0xFFFF);
    let nraw = e >> 24;
    let raw = v & mask(nraw);
    if !WIDE || len + nraw <= crate::bits::MAX_PUT_BITS {
        lane.put(buf, code | raw << len, len + nraw);
    } else {
        lane.put(buf, code, len);
        lane.put(buf, raw & mask(32), 32);
        lane.put(buf, raw >> 32, nraw - 32);
    }
}

/// Writes two values that follow each other in `lane` (codes of rows `rows`; see
/// [`code_of`]): in one put where they fit it together, as they nearly always do (the
/// stream is the same bits as from two puts, in half the stores and shifts).
#[inline(always)]
fn put_pair(lane: &mut Lane, buf: &mut [u8], enc: &[u32], rows: [usize; 2], k: u32, v: [u64; 2]) {
    let (a, na) = code_of(enc, rows[0], k, v[0]);
    let (b, nb) = code_of(enc, rows[1], k, v[1]);
    if na + nb <= crate::bits::MAX_PUT_BITS {
        lane.put(buf, a | b << na, na + nb);
    } else {
        lane.put(buf, a, na);
        lane.put(buf, b, nb);
    }
}

/// [`encode_ctx`] with a plan for the same values and contexts; appends at most `plan.size`
/// bytes.
pub(crate) fn encode_with_plan<W: Word>(
    values: &[W],
    ctx: Option<&[u8]>,
    plan: &Plan,
    out: &mut Vec<u8>,
) {
    debug_assert!(ctx.is_none_or(|c| c.len() == values.len()));
    debug_assert_eq!(plan.lane_values.iter().sum::<usize>(), values.len());
    let k = plan.k;
    let start_len = out.len();
    out.push(k as u8);
    put_varint(out, values.len() as u64);
    if values.is_empty() {
        return;
    }
    let alph = alphabet(k);
    for code in &plan.codes {
        match code {
            CtxCode::Unused => out.push(0),
            CtxCode::Single(t) => {
                out.push(1);
                put_varint(out, u64::from(*t));
            }
            CtxCode::Huffman(lengths) => {
                out.push(2);
                huffman::write_lengths(lengths, out);
            }
        }
    }
    let enc = plan.encode_table();
    // Each stream is written into a region sized for its worst case, then copied out.
    let mut starts = [0usize; LANES];
    let mut end = 0;
    for (st, &nv) in starts.iter_mut().zip(&plan.lane_values) {
        *st = end;
        end += (nv * plan.max_bits as usize).div_ceil(8) + 8;
    }
    let mut buf = vec![0u8; end];
    let stops = if plan.max_bits > crate::bits::MAX_PUT_BITS {
        crate::cpu::dispatch(
            crate::cpu::Level::detected(),
            #[inline(always)]
            || put_lanes::<W, true>(values, ctx, &enc, alph, k, starts, &mut buf),
        )
    } else {
        crate::cpu::dispatch(
            crate::cpu::Level::detected(),
            #[inline(always)]
            || put_lanes::<W, false>(values, ctx, &enc, alph, k, starts, &mut buf),
        )
    };
    for (&st, &stop) in starts.iter().zip(&stops) {
        put_varint(out, (stop - st) as u64);
    }
    for (&st, &stop) in starts.iter().zip(&stops) {
        out.extend_from_slice(&buf[st..stop]);
    }
    debug_assert!(out.len() - start_len <= plan.size);
}

/// Writes one step of [`put_lanes`]: a round of four values (`WIDE`), or two rounds, value
/// `j` and `j + 4` in lane `j` as a pair; `row(j)` is the code row of value `j`.
#[inline(always)]
fn put_step<W: Word, const WIDE: bool>(
    [l0, l1, l2, l3]: [&mut Lane; LANES],
    buf: &mut [u8],
    enc: &[u32],
    k: u32,
    g: &[W],
    row: impl Fn(usize) -> usize,
) {
    if WIDE {
        put_value::<WIDE>(l0, buf, enc, row(0), k, g[0].wide());
        put_value::<WIDE>(l1, buf, enc, row(1), k, g[1].wide());
        put_value::<WIDE>(l2, buf, enc, row(2), k, g[2].wide());
        put_value::<WIDE>(l3, buf, enc, row(3), k, g[3].wide());
    } else {
        let rows = |j: usize| [row(j), row(j + LANES)];
        let v = |j: usize| [g[j].wide(), g[j + LANES].wide()];
        put_pair(l0, buf, enc, rows(0), k, v(0));
        put_pair(l1, buf, enc, rows(1), k, v(1));
        put_pair(l2, buf, enc, rows(2), k, v(2));
        put_pair(l3, buf, enc, rows(3), k, v(3));
    }
}

/// Writes the values into the four lanes of `buf` that start at `starts`; returns where
/// they end. Value `i` goes to lane `i % 4`; narrow plans (`!WIDE`) write the values of
/// two rounds (eight values) a pair per lane.
#[inline(always)]
fn put_lanes<W: Word, const WIDE: bool>(
    values: &[W],
    ctx: Option<&[u8]>,
    enc: &[u32],
    alph: usize,
    k: u32,
    starts: [usize; LANES],
    buf: &mut [u8],
) -> [usize; LANES] {
    let [mut l0, mut l1, mut l2, mut l3] = starts.map(Lane::new);
    // Narrow plans take the values in pairs of rounds, wide ones a round at a time; the
    // values after the last whole step one at a time.
    let step = if WIDE { LANES } else { 2 * LANES };
    let done = values.len() / step * step;
    let steps = values[..done].chunks_exact(step);
    match ctx {
        Some(c) => {
            for (g, cg) in steps.zip(c[..done].chunks_exact(step)) {
                let lanes = [&mut l0, &mut l1, &mut l2, &mut l3];
                put_step::<W, WIDE>(lanes, buf, enc, k, g, |j| usize::from(cg[j]) * alph);
            }
        }
        None => {
            for g in steps {
                let lanes = [&mut l0, &mut l1, &mut l2, &mut l3];
                put_step::<W, WIDE>(lanes, buf, enc, k, g, |_| 0);
            }
        }
    }
    let mut lanes = [l0, l1, l2, l3];
    for i in done..values.len() {
        let c = ctx.map_or(0, |c| usize::from(c[i]));
        put_value::<WIDE>(
            &mut lanes[i % LANES],
            buf,
            enc,
            c * alph,
            k,
            values[i].wide(),
        );
    }
    lanes.map(|l| l.finish(buf))
}

/// Decode tables of all contexts of a block, in one allocation. Entries pack everything a
/// value needs: `sig << 14 | nraw << 8 | flags | code length`, where the value is
/// `sig << nraw` plus the `nraw` raw bits after the code. A primary entry with [`LONG`] set
/// instead holds `start << 8`, the first of `1 << (MAX_CODE_LEN - primary bits)` secondary
/// entries indexed by the following bits. Row `nctx` (and any unused context) decodes every
/// code as [`INVALID`].
struct Tables {
    primary: Vec<u32>,
    secondary: Vec<u32>,
    /// Bits resolved by the primary lookup.
    pbits: u32,
    nctx: usize,
}

/// Primary entry flag: the code continues in the secondary table.
const LONG: u32 = 0x40;
/// The entry of an invalid code: consumes one bit, decodes 0.
const INVALID_ENTRY: u32 = INVALID | 1;

/// The packed decode entry of token `t` with a code of `len` bits.
fn entry(t: u32, k: u32, len: u32) -> u32 {
    let hi = t >> k;
    let sig = (u32::from(hi != 0) << k) | (t & ((1 << k) - 1));
    sig << 14 | token_nraw(t, k) << 8 | len
}

impl Tables {
    /// Empty tables for `nctx` contexts; small primary tables when there are many contexts,
    /// so that all of them stay in the first-level cache.
    fn new(nctx: usize) -> Self {
        let pbits = if nctx <= 2 { 11 } else { 9 };
        Self {
            primary: vec![INVALID_ENTRY; (nctx + 1) << pbits],
            secondary: Vec::new(),
            pbits,
            nctx,
        }
    }

    /// Context `c` decodes token `t` whatever the bits.
    fn set_single(&mut self, c: usize, e: u32) {
        self.primary[c << self.pbits..(c + 1) << self.pbits].fill(e);
    }

    /// Context `c` decodes the canonical code of `lengths` (tokens of parameter `k`).
    fn set_huffman(&mut self, c: usize, lengths: &[u8], k: u32) -> Result<(), CodecError> {
        let mut kraft = 0u64;
        for &l in lengths {
            if l > 0 {
                kraft += 1u64 << (MAX_CODE_LEN - u32::from(l));
            }
        }
        if kraft > 1u64 << MAX_CODE_LEN {
            return Err(CodecError::Corrupt("Huffman code lengths oversubscribed"));
        }
        let pbits = self.pbits;
        let sub = 1usize << (MAX_CODE_LEN - pbits);
        let row = c << pbits;
        let pmask = (1usize << pbits) - 1;
        let codes = huffman::encode_codes(lengths);
        for (t, (&len, &code)) in lengths.iter().zip(&codes).enumerate() {
            let len = u32::from(len);
            if len == 0 {
                continue;
            }
            let e = entry(t as u32, k, len);
            let code = usize::from(code);
            if len <= pbits {
                let mut i = code;
                while i <= pmask {
                    self.primary[row + i] = e;
                    i += 1 << len;
                }
            } else {
                let prefix = row + (code & pmask);
                if self.primary[prefix] & LONG == 0 {
                    self.primary[prefix] = (self.secondary.len() as u32) << 8 | LONG;
                    self.secondary
                        .resize(self.secondary.len() + sub, INVALID_ENTRY);
                }
                let start = (self.primary[prefix] >> 8) as usize;
                let mut i = code >> pbits;
                while i < sub {
                    self.secondary[start + i] = e;
                    i += 1 << (len - pbits);
                }
            }
        }
        Ok(())
    }

    /// Primary row offset of context `c` (out-of-range contexts read the invalid row).
    #[inline(always)]
    fn row(&self, c: usize) -> usize {
        c.min(self.nctx) << self.pbits
    }

    #[inline(always)]
    fn lookup(&self, row: usize, bits: u64) -> u32 {
        let e = self.primary[row + (bits as usize & ((1 << self.pbits) - 1))];
        if e & LONG == 0 { e } else { self.long(e, bits) }
    }

    #[cold]
    #[inline(never)]
    fn long(&self, e: u32, bits: u64) -> u32 {
        let sub = 1usize << (MAX_CODE_LEN - self.pbits);
        let i = (e >> 8) as usize + ((bits >> self.pbits) as usize & (sub - 1));
        self.secondary.get(i).copied().unwrap_or(INVALID_ENTRY)
    }
}

/// Output element types of the decoder.
pub(crate) trait Sink: Copy {
    /// The element for coded value `v`.
    fn from_coded(v: u64) -> Self;
}

impl Sink for u64 {
    #[inline(always)]
    fn from_coded(v: u64) -> Self {
        v
    }
}

impl Sink for i64 {
    #[inline(always)]
    fn from_coded(v: u64) -> Self {
        unzigzag(v)
    }
}

/// `n <= 63` bits of `r` at `pos`, for raw fields too long for one word.
#[cold]
fn long_bits(r: Bits<'_>, pos: usize, n: u32) -> u64 {
    let lo = r.word(pos) & mask(32);
    let hi = r.word(pos + 32) & mask(n.saturating_sub(32));
    (lo | hi << 32) & mask(n)
}

/// Decodes one value at `*pos` with the primary row `row` and advances.
#[inline(always)]
fn decode_one(r: Bits<'_>, pos: &mut usize, t: &Tables, row: usize, bad: &mut u32) -> u64 {
    let w = r.word(*pos);
    let e = t.lookup(row, w);
    *bad |= e;
    let len = e & 0x1F;
    let nraw = (e >> 8) & 63;
    let sig = u64::from(e >> 14);
    let raw = if len + nraw <= 57 {
        (w >> len) & mask(nraw)
    } else {
        long_bits(r, *pos + len as usize, nraw)
    };
    *pos += (len + nraw) as usize;
    sig << nraw | raw
}

/// Decodes a block made by [`encode_ctx`] with the same `ctx` and `nctx` into `out`; returns
/// the bytes consumed.
pub(crate) fn decode_ctx<T: Sink>(
    data: &[u8],
    ctx: Option<&[u8]>,
    nctx: usize,
    out: &mut [T],
) -> Result<usize, CodecError> {
    match ctx {
        Some(ctx) => {
            if ctx.len() != out.len() {
                return Err(CodecError::Corrupt("integer block context count mismatch"));
            }
            decode_into(data, nctx, &mut WithCtx { ctx, out })
        }
        None => decode_into(data, nctx, &mut Plain(out)),
    }
}

/// The destination of a decoded block: where value `i` goes and which context it uses.
pub(crate) trait Values {
    /// Number of values.
    fn count(&self) -> usize;
    /// The context of value `i` (below the block's context count).
    fn ctx(&self, i: usize) -> usize;
    /// Stores coded value `v` (zigzagged for signed data) as value `i`.
    fn set(&mut self, i: usize, v: u64);
    /// The contexts of values `i..i + 4` (called before [`Values::set4`] of the same values).
    #[inline(always)]
    fn ctx4(&mut self, i: usize) -> [usize; LANES] {
        [
            self.ctx(i),
            self.ctx(i + 1),
            self.ctx(i + 2),
            self.ctx(i + 3),
        ]
    }
    /// Stores values `i..i + 4`.
    #[inline(always)]
    fn set4(&mut self, i: usize, v: [u64; LANES]) {
        for (j, v) in v.into_iter().enumerate() {
            self.set(i + j, v);
        }
    }
}

struct Plain<'a, T>(&'a mut [T]);

impl<T: Sink> Values for Plain<'_, T> {
    #[inline(always)]
    fn count(&self) -> usize {
        self.0.len()
    }
    #[inline(always)]
    fn ctx(&self, _: usize) -> usize {
        0
    }
    #[inline(always)]
    fn set(&mut self, i: usize, v: u64) {
        self.0[i] = T::from_coded(v);
    }
}

struct WithCtx<'a, T> {
    ctx: &'a [u8],
    out: &'a mut [T],
}

impl<T: Sink> Values for WithCtx<'_, T> {
    #[inline(always)]
    fn count(&self) -> usize {
        self.out.len()
    }
    #[inline(always)]
    fn ctx(&self, i: usize) -> usize {
        usize::from(self.ctx[i])
    }
    #[inline(always)]
    fn set(&mut self, i: usize, v: u64) {
        self.out[i] = T::from_coded(v);
    }
}

/// A block's header parsed: its decode tables and where its four streams lie.
struct Block<'a> {
    tables: Tables,
    /// The concatenated streams.
    streams: Bits<'a>,
    /// Start and end bit of each stream.
    starts: [usize; LANES],
    ends: [usize; LANES],
    /// Bytes of the whole block.
    len: usize,
}

/// Parses the header of a block of `n` values under `nctx` contexts (`n` must equal the
/// block's count).
fn parse_block(data: &[u8], nctx: usize, n: usize) -> Result<Block<'_>, CodecError> {
    if !(1..=MAX_CONTEXTS).contains(&nctx) {
        return Err(CodecError::Corrupt("integer block context count mismatch"));
    }
    let k = u32::from(
        *data
            .first()
            .ok_or(CodecError::Corrupt("integer block truncated"))?,
    );
    if k > MAX_K {
        return Err(CodecError::Corrupt(
            "integer block has an invalid parameter",
        ));
    }
    let mut pos = 1;
    let count = get_varint(data, &mut pos)?;
    if count != n as u64 {
        return Err(CodecError::Corrupt(
            "integer block count disagrees with the output size",
        ));
    }
    if n == 0 {
        return Ok(Block {
            tables: Tables::new(1),
            streams: Bits(&[]),
            starts: [0; LANES],
            ends: [0; LANES],
            len: pos,
        });
    }
    let alph = alphabet(k);
    let mut tables = Tables::new(nctx);
    for c in 0..nctx {
        let kind = *data
            .get(pos)
            .ok_or(CodecError::Corrupt("integer block truncated"))?;
        pos += 1;
        match kind {
            0 => {}
            1 => {
                let t = get_varint(data, &mut pos)?;
                if t >= alph as u64 {
                    return Err(CodecError::Corrupt("integer block token out of range"));
                }
                tables.set_single(c, entry(t as u32, k, 0));
            }
            2 => {
                let rest = data.get(pos..).unwrap_or(&[]);
                let (lengths, used) = huffman::read_lengths(rest, alph)?;
                pos += used;
                tables.set_huffman(c, &lengths, k)?;
            }
            _ => {
                return Err(CodecError::Corrupt(
                    "integer block has an invalid table kind",
                ));
            }
        }
    }
    let mut sizes = [0usize; LANES];
    for s in &mut sizes {
        let v = get_varint(data, &mut pos)?;
        *s = usize::try_from(v)
            .ok()
            .filter(|&v| v <= data.len())
            .ok_or(CodecError::Corrupt("integer block stream exceeds the data"))?;
    }
    let total: usize = sizes.iter().sum();
    let streams = data
        .get(pos..)
        .and_then(|d| d.get(..total))
        .ok_or(CodecError::Corrupt("integer block stream exceeds the data"))?;
    let mut ends = [0usize; LANES];
    let mut starts = [0usize; LANES];
    let mut acc = 0;
    for i in 0..LANES {
        starts[i] = acc * 8;
        acc += sizes[i];
        ends[i] = acc * 8;
    }
    Ok(Block {
        tables,
        streams: Bits(streams),
        starts,
        ends,
        len: pos + total,
    })
}

/// The checks after the last value of a block: no invalid code met (`bad`), and each stream
/// ended within its last byte.
fn finish_block(block: &Block<'_>, ps: [usize; LANES], bad: u32) -> Result<usize, CodecError> {
    if bad & INVALID != 0 {
        return Err(CodecError::Corrupt("invalid Huffman code in integer block"));
    }
    for (&p, &e) in ps.iter().zip(&block.ends) {
        if p > e || p + 8 <= e {
            return Err(CodecError::Corrupt("integer block stream length mismatch"));
        }
    }
    Ok(block.len)
}

/// Decodes a block made by [`encode_ctx`] whose context of value `i` is `prev_class` of the
/// coded (zigzagged) value `i − 1`, and of value 0 `prev_class(0)`; `prev_class` must stay
/// below `nctx`. The values decode one after the other (each waits for its predecessor's
/// context), still from the four streams in turn. Returns the bytes consumed.
pub(crate) fn decode_prev_ctx(
    data: &[u8],
    nctx: usize,
    prev_class: impl Fn(u64) -> usize,
    out: &mut [i64],
) -> Result<usize, CodecError> {
    let block = parse_block(data, nctx, out.len())?;
    if out.is_empty() {
        return Ok(block.len);
    }
    let t = &block.tables;
    let mut bad = 0u32;
    let mut ps = block.starts;
    let mut prev = 0u64;
    for (i, o) in out.iter_mut().enumerate() {
        let v = decode_one(
            block.streams,
            &mut ps[i % LANES],
            t,
            t.row(prev_class(prev)),
            &mut bad,
        );
        *o = unzigzag(v);
        prev = v;
    }
    finish_block(&block, ps, bad)
}

/// Decodes a block into `out` (which supplies the contexts, all below `nctx`); returns the
/// bytes consumed. Values decode in order within each stream; the four streams advance in
/// lockstep.
pub(crate) fn decode_into<V: Values>(
    data: &[u8],
    nctx: usize,
    out: &mut V,
) -> Result<usize, CodecError> {
    let n = out.count();
    let block = parse_block(data, nctx, n)?;
    if n == 0 {
        return Ok(block.len);
    }
    let r = block.streams;
    // A context the caller computes out of range decodes as corrupt, never panics.
    let t = &block.tables;
    let mut bad = 0u32;
    let [mut p0, mut p1, mut p2, mut p3] = block.starts;
    let groups = n / LANES;
    for g in 0..groups {
        let i = g * LANES;
        let [c0, c1, c2, c3] = out.ctx4(i);
        let v0 = decode_one(r, &mut p0, t, t.row(c0), &mut bad);
        let v1 = decode_one(r, &mut p1, t, t.row(c1), &mut bad);
        let v2 = decode_one(r, &mut p2, t, t.row(c2), &mut bad);
        let v3 = decode_one(r, &mut p3, t, t.row(c3), &mut bad);
        out.set4(i, [v0, v1, v2, v3]);
    }
    let mut ps = [p0, p1, p2, p3];
    for i in groups * LANES..n {
        let v = decode_one(r, &mut ps[i % LANES], t, t.row(out.ctx(i)), &mut bad);
        out.set(i, v);
    }
    finish_block(&block, ps, bad)
}
