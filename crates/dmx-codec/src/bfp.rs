//! Block floating point (BFP): lossy, for BF16, F16 and F32 tensors, in their own dtype.
//!
//! # Quantization
//!
//! Values are cut into groups of `G` consecutive values; groups restart at every row of
//! `row_len` values (the last group of a row may be shorter). Write a finite value as
//! `x = ±sig · 2^(e' − bias − F)`, where `F` is the fraction width (7, 10, 23), `e` the
//! biased exponent field, `e' = max(e, 1)` and `sig` the significand with its implicit bit
//! (`sig < 2^(F+1)`, subnormals included). The group exponent `E` is the largest `e'` of the
//! group (the exponent of its largest magnitude), and every value becomes
//!
//! ```text
//! x̂ = ±q · 2^(E − bias − M + 1),   q = round_half_even(|x| / 2^(E − bias − M + 1)) < 2^M
//! ```
//!
//! so **`M` counts the magnitude bits including the leading 1 of the group maximum**: the
//! largest value keeps its implicit bit and `M − 1` fraction bits, smaller values keep fewer.
//! If rounding carries a magnitude to `2^M`, the group exponent is raised by one and the
//! whole group re-quantized from the original values at the coarser step (no saturation).
//! Every `x̂` is exactly representable in the dtype (normal or subnormal), so decoding
//! involves no second rounding and returns the original dtype.
//!
//! Guarantees:
//! - **Error bound**: for every value of a coded group, `|x − x̂| ≤ 2^(E − bias − M)`, half a
//!   step, with `E` the group's final exponent (after a carry).
//! - Values below half a step round to zero. A zero result keeps the sign only when the input
//!   was itself `±0` (`−0` stays `−0`; a tiny negative value becomes `+0`).
//! - Subnormal inputs are on the same grid as everything else (their exponent counts as 1, as
//!   in IEEE): no flush to zero, no special case. Outputs may be subnormal; a value is kept
//!   exactly whenever it is a multiple of the step (e.g. BF16 at `M = 8` keeps every value of
//!   the group's top binade, and all of a group of subnormals).
//! - A group holding NaN or ±Inf, or whose carry would push `E` past the largest finite
//!   exponent (so that `x̂` could become Inf), is stored raw: bit-exact, NaN payloads included,
//!   and it never affects its neighbours.
//! - **Idempotence**: decoded values are on their group's grid with the same `E`, so encoding
//!   them again with the same `M`, `G` and `row_len` decodes to the same bits.
//!
//! # Entropy coding
//!
//! Each group codes its exponent, then its values, with a static rANS coder (32-bit state,
//! 16-bit renormalization, 12-bit probabilities; raw bits go through the same state). The
//! exponent is coded as the zigzagged difference to a prediction from the levels of the
//! lane's last four groups (one table; symbol 0 marks a raw group). A value is a symbol for
//! its magnitude `q` (for `M > 8`, its top 8 bits, then the other `M − 8` bits raw; one extra
//! symbol for `−0`) and its sign: the magnitude table is used twice, as the two halves of a
//! 13-bit slot space picked by the sign, so a sign costs exactly one bit inside the same rANS
//! step, and zero (which has no sign) owns its slots in both halves. The magnitude table is
//! one of up to 8, chosen per group by a context the decoder also knows: the mean magnitude
//! level of the lane's last four groups relative to this group's exponent, in half octaves,
//! clamped to a window the encoder picks by estimated size. The groups are split into four
//! contiguous lanes, each an independent rANS stream; the decoder advances them in lockstep.
//!
//! # Payload
//!
//! ```text
//! u8 version (1) | u8 value bytes (2, 4) | u8 exponent bits | u8 M
//! varint G | varint row_len (1..=count; 0 if empty) | varint count
//! i8 context low | u8 tables K (1..=8)
//! frequency tables (bit-packed, byte aligned): exponent, then K magnitude tables; each is
//!   u16 first symbol, u16 span, one delta-coded 1/8-octave descriptor per symbol
//! varint lane sizes ×4 | the four lanes: u32 final encoder state, then u16 words (LE)
//! decoding order per group: exponent symbol, then per value: magnitude-and-sign symbol
//!   [M − 8 raw bits] [for M > 8 and a zero top symbol with q ≠ 0: a raw sign bit]; a raw
//!   group: escape symbol, then each value's bits raw, 16 at a time, low half first
//! ```

use crate::bits::{BitReader, BitVec};
use crate::entropy::rans;
use crate::entropy::varint::{get_varint, put_varint};
use crate::entropy::{unzigzag_i32, zigzag_i32};
use crate::{CodecError, FloatLayout};

/// BFP parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Params {
    /// Magnitude bits per value, counting the leading 1 of the group maximum (2 to
    /// [`max_mantissa_bits`]).
    pub mantissa_bits: u32,
    /// Values per group (1 to 4096).
    pub group_size: u32,
}

/// Whether BFP handles `layout`: BF16, F16 and F32.
pub fn supports(layout: FloatLayout) -> bool {
    layout == FloatLayout::BF16 || layout == FloatLayout::F16 || layout == FloatLayout::F32
}

/// Largest `M` for `layout`: 8 for 16-bit layouts, 24 for F32.
pub fn max_mantissa_bits(layout: FloatLayout) -> u32 {
    if layout.bytes() == 2 { 8 } else { 24 }
}

/// Largest group size.
pub const MAX_GROUP: u32 = 4096;

/// Why [`check`] rejects a layout or parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParamError {
    /// The layout is not BF16, F16 or F32.
    #[error("BFP supports BF16, F16 and F32 only")]
    Layout,
    /// `mantissa_bits` is outside `2..=max` ([`max_mantissa_bits`] of the layout).
    #[error("BFP mantissa bits must be in 2..={max} for this dtype, got {got}")]
    MantissaBits {
        /// The rejected value.
        got: u32,
        /// The largest value the layout allows.
        max: u32,
    },
    /// `group_size` is outside `1..=`[`MAX_GROUP`].
    #[error("BFP group size must be in 1..={MAX_GROUP}, got {got}")]
    GroupSize {
        /// The rejected value.
        got: u32,
    },
}

/// Checks that `layout` and `p` are valid for BFP; says why not. The checks run in the order
/// layout, mantissa bits, group size.
pub fn check(layout: FloatLayout, p: Params) -> Result<(), ParamError> {
    if !supports(layout) {
        return Err(ParamError::Layout);
    }
    let max = max_mantissa_bits(layout);
    if !(2..=max).contains(&p.mantissa_bits) {
        return Err(ParamError::MantissaBits {
            got: p.mantissa_bits,
            max,
        });
    }
    if !(1..=MAX_GROUP).contains(&p.group_size) {
        return Err(ParamError::GroupSize { got: p.group_size });
    }
    Ok(())
}

/// Payload format version.
const VERSION: u8 = 1;
/// Independent bit streams.
const LANES: usize = 4;
/// Magnitude bits covered by the entropy-coded symbol; the rest are raw.
const SYM_BITS: u32 = 8;
/// Range of the raw context before the encoder's window.
const CLASS_LO: i32 = -8;
const CLASS_HI: i32 = 7;
const CLASSES: usize = (CLASS_HI - CLASS_LO + 1) as usize;
/// Most magnitude tables.
const MAX_TABLES: usize = 8;

/// Field geometry of a layout plus the chosen M, and the derived coding constants.
#[derive(Debug, Clone, Copy)]
struct Geo {
    /// Fraction bits.
    f: u32,
    /// Exponent field width.
    eb: u32,
    /// The all-ones exponent field (Inf/NaN).
    exp_ones: u32,
    /// Largest finite biased exponent.
    emax: u32,
    /// Exponent bias.
    bias: u32,
    /// Sign bit position.
    sign_shift: u32,
    /// Magnitude bits.
    m: u32,
    /// Raw low magnitude bits after the symbol.
    low: u32,
    /// The symbol of `−0` (`2^min(M, 8)`); the alphabet is `0..=neg0`.
    neg0: u32,
    /// Typical level offset: a group of mean magnitude `2^(M−2)` has level `2E + typical`.
    typical: i32,
    /// `f32::from_bits(magnitude << s32)` is `|x| · 2^-adj` exactly (`adj` is 112 for F16,
    /// whose values sit in the low part of f32's range this way; subnormals included).
    s32: u32,
    adj: u32,
}

impl Geo {
    fn new(layout: FloatLayout, m: u32) -> Self {
        let bits = layout.bits();
        let eb = layout.exp_bits;
        let f = bits - 1 - eb;
        let exp_ones = (1u32 << eb) - 1;
        let hb = m.min(SYM_BITS);
        Self {
            f,
            eb,
            exp_ones,
            emax: exp_ones - 1,
            bias: exp_ones >> 1,
            sign_shift: bits - 1,
            m,
            low: m - hb,
            neg0: 1 << hb,
            typical: 2 * m as i32 + 6,
            s32: 23 - f,
            adj: if eb == 5 { 112 } else { 0 },
        }
    }

    /// Magnitude alphabet size.
    fn alpha(&self) -> usize {
        self.neg0 as usize + 1
    }

    /// Exponent alphabet size: escape plus zigzagged differences.
    fn exp_alpha(&self) -> usize {
        2 << self.eb
    }
}

/// Round half to even of `sig / 2^s` (`sig < 2^25`, `s <= 25`).
#[inline(always)]
fn rne(sig: u32, s: u32) -> u32 {
    let x = sig << 1;
    (x + (1u32 << s) - 1 + ((sig >> s) & 1)) >> (s + 1)
}

/// The exponent of a group whose largest magnitude (value bits without the sign) is
/// `max_mag`, or `None` when the group must be stored raw: it holds NaN/Inf, or its maximum
/// would carry past the largest finite exponent. Rounding is monotonic in the magnitude, so
/// only the maximum can carry to `2^M`; then the group takes the next exponent.
#[inline]
fn group_exponent(g: &Geo, max_mag: u32) -> Option<u32> {
    let e = max_mag >> g.f;
    if e >= g.exp_ones {
        return None;
    }
    let sig = (max_mag & ((1u32 << g.f) - 1)) | (u32::from(e != 0) << g.f);
    let top = e.max(1);
    if rne(sig, g.f + 1 - g.m) >> g.m == 0 {
        Some(top)
    } else if top < g.emax {
        Some(top + 1)
    } else {
        None
    }
}

/// `1 / step` of group exponent `e_grp`, relative to the `f32` image of the magnitudes.
#[inline]
fn inv_step(g: &Geo, e_grp: u32) -> f64 {
    // bias + M − 1 − E + adj lies in −126..=149: a normal f64.
    let k = g.bias as i64 + g.m as i64 - 1 - e_grp as i64 + g.adj as i64;
    f64::from_bits(((1023 + k) as u64) << 52)
}

/// `round_half_even(|x| / step)` for value bits `v`: exact, since the `f32` image and the
/// power-of-two scaling are exact (or the result is far below one half) and adding `2^52`
/// rounds to an integer in the default rounding mode.
#[inline(always)]
fn qmag(g: &Geo, v: u32, inv: f64) -> u32 {
    const MAGIC: f64 = 4_503_599_627_370_496.0;
    let mag = v & ((1u32 << g.sign_shift) - 1);
    let y = f64::from(f32::from_bits(mag << g.s32)) * inv;
    ((y + MAGIC).to_bits() - MAGIC.to_bits()) as u32
}

/// Quantizes one group at exponent `e_grp` into `q << 1 | sign` (a zero keeps the sign only
/// if the input was ±0).
#[inline(always)]
fn quantize_at(g: &Geo, vals: &[u32], e_grp: u32, syms: &mut [u32]) {
    let inv = inv_step(g, e_grp);
    let mag_mask = (1u32 << g.sign_shift) - 1;
    for (&v, s) in vals.iter().zip(syms.iter_mut()) {
        let q = qmag(g, v, inv);
        let keep = u32::from(q != 0 || v & mag_mask == 0);
        *s = q << 1 | ((v >> g.sign_shift) & keep);
    }
}

/// [`quantize_at`] for `M <= 8`, storing `symbol << 1 | sign` (the symbol `neg0` for `−0`,
/// no sign on zero-like symbols) and counting symbols into `h`; returns the sum of the
/// magnitudes and the count of signed values. Works in `f32` (four lanes at a time): the
/// scaling `2^k` is split in two factors that are normal `f32` numbers, and both products
/// are exact unless the result is far below one half.
#[inline(always)]
fn quantize_narrow(
    g: &Geo,
    vals: &[u32],
    e_grp: u32,
    syms: &mut [u32],
    h: &mut [u64],
) -> (u64, u64) {
    const MAGIC: f32 = 12_582_912.0;
    let k = g.bias as i32 + g.m as i32 - 1 - e_grp as i32 + g.adj as i32;
    let ka = k.min(127);
    let a = f32::from_bits(((127 + ka) as u32) << 23);
    let b = f32::from_bits(((127 + k - ka) as u32) << 23);
    let neg_zero = 1u32 << g.sign_shift;
    let mag_mask = neg_zero - 1;
    let (s32, sign_shift, neg0) = (g.s32, g.sign_shift, g.neg0 << 1);
    for (&v, s) in vals.iter().zip(syms.iter_mut()) {
        let y = f32::from_bits((v & mag_mask) << s32) * a * b;
        let q = (y + MAGIC).to_bits() - MAGIC.to_bits();
        let signed = u32::from(q != 0);
        let sv = q << 1 | (v >> sign_shift & signed);
        *s = if v == neg_zero { neg0 } else { sv };
    }
    let (mut sum, mut nz) = (0u32, 0u32);
    for &sv in syms.iter() {
        h[(sv >> 1) as usize] += 1;
        let q = (sv >> 1) & (g.neg0 - 1);
        sum += q;
        nz += u32::from(q != 0);
    }
    (u64::from(sum), u64::from(nz))
}

/// Largest magnitude bits of a group.
#[inline(always)]
fn max_magnitude(g: &Geo, vals: &[u32]) -> u32 {
    let mag_mask = (1u32 << g.sign_shift) - 1;
    vals.iter().fold(0, |m, &v| m.max(v & mag_mask))
}

/// Magnitude bits of `q` (`< 2^M`) for a group whose `scale` is its step times `2^-adj`:
/// `q · scale` is exact in `f64` and exactly representable in `f32` (subnormals included),
/// and the `f32` image of a layout value shifted by `s32` is its bits (see `Geo::s32`).
#[inline(always)]
fn mag_bits(g: &Geo, q: u32, scale: f64) -> u32 {
    ((f64::from(q) * scale) as f32).to_bits() >> g.s32
}

/// Magnitude symbol of `q << 1 | sign`.
#[inline(always)]
fn vsym(g: &Geo, s: u32) -> u32 {
    if s == 1 { g.neg0 } else { s >> (1 + g.low) }
}

/// Mean magnitude level of a group in half octaves, plus twice its exponent.
#[inline]
fn level(e: u32, sum_q: u64, n: usize) -> i32 {
    let z = (sum_q << 5) / n as u64 + 1;
    let p = 63 - z.leading_zeros();
    let t = if p >= 7 { z >> (p - 7) } else { z << (7 - p) };
    (2 * e + 2 * p + u32::from(t >= 182)) as i32
}

/// The levels of the last four coded groups of a lane.
#[derive(Debug, Clone, Copy)]
struct History {
    ring: [i32; 4],
    sum: i32,
    idx: usize,
    fresh: bool,
}

impl History {
    fn new() -> Self {
        Self {
            ring: [0; 4],
            sum: 0,
            idx: 0,
            fresh: true,
        }
    }

    /// Predicted exponent of the next coded group.
    #[inline]
    fn pred(&self, g: &Geo) -> i32 {
        if self.fresh {
            g.bias as i32
        } else {
            ((self.sum - 4 * g.typical) >> 3).clamp(1, g.emax as i32)
        }
    }

    /// Called with the exponent of each coded group: seeds the first one.
    #[inline]
    fn start(&mut self, g: &Geo, e: u32) {
        if self.fresh {
            let l = 2 * e as i32 + g.typical;
            self.ring = [l; 4];
            self.sum = 4 * l;
            self.fresh = false;
        }
    }

    /// The context class of a group of exponent `e` (in `CLASS_LO..=CLASS_HI`).
    #[inline]
    fn class(&self, g: &Geo, e: u32) -> i32 {
        ((self.sum - 8 * e as i32 - 4 * g.typical) >> 2).clamp(CLASS_LO, CLASS_HI)
    }

    #[inline]
    fn push(&mut self, e: u32, sum_q: u64, n: usize) {
        let l = level(e, sum_q, n);
        self.sum += l - self.ring[self.idx];
        self.ring[self.idx] = l;
        self.idx = (self.idx + 1) & 3;
    }
}

/// Group geometry of a chunk.
#[derive(Debug, Clone, Copy)]
struct Shape {
    count: usize,
    row: usize,
    gs: usize,
    per_row: usize,
    groups: usize,
}

impl Shape {
    /// `row` is normalized (`1..=count`, or 0 when empty).
    fn new(count: usize, row: usize, gs: usize) -> Self {
        if count == 0 {
            return Self {
                count,
                row: 0,
                gs,
                per_row: 0,
                groups: 0,
            };
        }
        let per_row = row.div_ceil(gs);
        let groups = count / row * per_row + (count % row).div_ceil(gs);
        Self {
            count,
            row,
            gs,
            per_row,
            groups,
        }
    }

    /// Start and length of group `i`.
    #[inline]
    fn group(&self, i: usize) -> (usize, usize) {
        let (r, k) = (i / self.per_row, i % self.per_row);
        let start = r * self.row + k * self.gs;
        (
            start,
            self.gs.min(self.row - k * self.gs).min(self.count - start),
        )
    }

    /// Group ranges of the lanes.
    fn lanes(&self) -> [(usize, usize); LANES] {
        let per = self.groups.div_ceil(LANES);
        std::array::from_fn(|k| ((k * per).min(self.groups), ((k + 1) * per).min(self.groups)))
    }
}

/// Normalized row length: `0` or past the end means one row.
fn norm_row(count: usize, row_len: usize) -> usize {
    if row_len == 0 || row_len > count {
        count
    } else {
        row_len
    }
}

/// Estimated bits of a table for a histogram: symbol entropy plus table cost.
fn table_cost(h: &[u64]) -> f64 {
    let used = h.iter().filter(|&&c| c > 0).count();
    crate::float::entropy(h) + 32.0 + 3.0 * used as f64
}

// ---------------------------------------------------------------------------------------
// Encoder.

/// Encodes little-endian values of `layout`; groups of `p.group_size` consecutive values
/// share one exponent; groups restart every `row_len` values (the tensor's last dimension;
/// the last group of a row may be shorter); `row_len == 0` means the whole chunk is one row.
/// Returns the self-describing payload (layout, M, G, row_len, counts inside) and the order-0
/// entropy bound in bits of what it coded (symbol entropies plus raw bits).
///
/// # Panics
/// If [`check`] rejects `layout` and `p`, or `data` is not whole values.
pub fn encode(layout: FloatLayout, data: &[u8], row_len: usize, p: Params) -> (Vec<u8>, f64) {
    if let Err(e) = check(layout, p) {
        panic!("bfp::encode: {e}");
    }
    assert!(
        data.len().is_multiple_of(layout.bytes()),
        "bfp::encode: data is not whole values"
    );
    let g = Geo::new(layout, p.mantissa_bits);
    let count = data.len() / layout.bytes();
    let shape = Shape::new(count, norm_row(count, row_len), p.group_size as usize);
    if layout.bytes() == 2 {
        encode_width::<2>(&g, data, shape)
    } else {
        encode_width::<4>(&g, data, shape)
    }
}

#[inline(always)]
fn load<const B: usize>(v: &[u8]) -> u32 {
    let mut w = [0u8; 4];
    w[..B].copy_from_slice(&v[..B]);
    u32::from_le_bytes(w)
}

/// Per-group results of the first pass.
#[derive(Clone, Copy)]
struct GroupCode {
    /// Exponent symbol (0: raw group).
    esym: u16,
    /// Context class.
    class: i8,
}

fn encode_width<const B: usize>(g: &Geo, data: &[u8], shape: Shape) -> (Vec<u8>, f64) {
    let alpha = g.alpha();
    let mut syms = vec![0u32; shape.count];
    let mut codes = Vec::with_capacity(shape.groups);
    let mut vh = vec![0u64; CLASSES * alpha];
    let mut eh = vec![0u64; g.exp_alpha()];
    let mut vals = vec![0u32; shape.gs];
    let mut raw_bits = 0u64;
    let lanes = shape.lanes();
    for &(first, end) in &lanes {
        let mut hist = History::new();
        for i in first..end {
            let (start, len) = shape.group(i);
            let vals = &mut vals[..len];
            for (v, b) in vals.iter_mut().zip(data[start * B..].chunks_exact(B)) {
                *v = load::<B>(b);
            }
            let s = &mut syms[start..start + len];
            let Some(e) = group_exponent(g, max_magnitude(g, vals)) else {
                eh[0] += 1;
                raw_bits += (len * B * 8) as u64;
                codes.push(GroupCode { esym: 0, class: 0 });
                continue;
            };
            let pred = hist.pred(g);
            hist.start(g, e);
            let class = hist.class(g, e);
            let esym = 1 + zigzag_i32(e as i32 - pred);
            eh[esym as usize] += 1;
            let h = &mut vh[(class - CLASS_LO) as usize * alpha..][..alpha];
            let (sum_q, nz) = if g.low == 0 {
                quantize_narrow(g, vals, e, s, h)
            } else {
                quantize_at(g, vals, e, s);
                let mut sum_q = 0u64;
                let mut nz = 0u64;
                let mut neg0 = 0u64;
                for &x in s.iter() {
                    let q = x >> 1;
                    sum_q += u64::from(q);
                    nz += u64::from(q != 0);
                    neg0 += u64::from(x == 1);
                    h[vsym(g, x) as usize] += 1;
                }
                raw_bits += u64::from(g.low) * (len as u64 - neg0);
                (sum_q, nz)
            };
            raw_bits += nz;
            hist.push(e, sum_q, len);
            codes.push(GroupCode {
                esym: esym as u16,
                class: class as i8,
            });
        }
    }
    let (lo, k) = choose_window(&vh, alpha);
    let class_of = |c: i8| (i32::from(c).clamp(lo, lo + k as i32 - 1) - lo) as usize;
    let mut tables = vec![vec![0u64; alpha]; k];
    for (c, h) in vh.chunks_exact(alpha).enumerate() {
        let t = &mut tables[class_of((c as i32 + CLASS_LO) as i8)];
        for (a, &b) in t.iter_mut().zip(h) {
            *a += b;
        }
    }
    let mut entropy = crate::float::entropy(&eh) + raw_bits as f64;
    let mut header_tables = BitVec::default();
    let edesc = rans::describe(&eh);
    rans::write(&edesc, &mut header_tables);
    let esyms = rans::enc_table(&rans::normalize(&edesc));
    let mut vsyms = Vec::with_capacity(k * alpha);
    for t in &tables {
        entropy += crate::float::entropy(t);
        let desc = rans::describe(t);
        rans::write(&desc, &mut header_tables);
        vsyms.extend(rans::venc_table(&rans::normalize(&desc), g.neg0 as usize));
    }

    let mut out = Vec::new();
    out.extend_from_slice(&[VERSION, B as u8, g.eb as u8, g.m as u8]);
    put_varint(&mut out, shape.gs as u64);
    put_varint(&mut out, shape.row as u64);
    put_varint(&mut out, shape.count as u64);
    out.push(lo as i8 as u8);
    out.push(k as u8);
    out.extend(header_tables.finish());

    // Pass 2: rANS, backwards. Round r holds group `first + r` of every lane; rounds whose
    // four groups are coded alike run the four encoders in lockstep.
    let lowmask = (1u32 << g.low) - 1;
    let mut encs: [rans::Encoder; LANES] = std::array::from_fn(|k| {
        let (first, end) = lanes[k];
        rans::Encoder::new((end - first) * shape.gs * (g.m as usize + 2) / 16 + 16)
    });
    let table_of = |i: usize| &vsyms[class_of(codes[i].class) * alpha..][..alpha];
    let one = |enc: &mut rans::Encoder, i: usize| {
        let (start, len) = shape.group(i);
        let gc = codes[i];
        enc.reserve(3 * len + 1);
        if gc.esym == 0 {
            for v in data[start * B..(start + len) * B].chunks_exact(B).rev() {
                let v = load::<B>(v);
                if B == 4 {
                    enc.bits(v >> 16, 16);
                }
                enc.bits(v & 0xFFFF, 16);
            }
        } else {
            let table = table_of(i);
            for &x in syms[start..start + len].iter().rev() {
                if g.low == 0 {
                    // Narrow: `symbol << 1 | sign`.
                    enc.put_v(&table[(x >> 1) as usize], x & 1);
                    continue;
                }
                let sym = vsym(g, x);
                let q = x >> 1;
                if sym == 0 && q != 0 {
                    enc.bits(x & 1, 1);
                }
                if x != 1 {
                    enc.bits(q & lowmask, g.low);
                }
                enc.put_v(&table[sym as usize], x & 1);
            }
        }
        enc.put(&esyms[usize::from(gc.esym)]);
    };
    let rounds = lanes[0].1 - lanes[0].0;
    for r in (0..rounds).rev() {
        let idx = lanes.map(|(first, end)| (first + r < end).then_some(first + r));
        let quad = match idx {
            [Some(i0), Some(i1), Some(i2), Some(i3)] => {
                let ids = [i0, i1, i2, i3];
                let n = shape.group(i0).1;
                let alike = g.low == 0
                    && ids
                        .iter()
                        .all(|&i| codes[i].esym != 0 && shape.group(i).1 == n);
                alike.then_some(ids)
            }
            _ => None,
        };
        let Some(ids) = quad else {
            for (enc, i) in encs.iter_mut().zip(idx) {
                if let Some(i) = i {
                    one(enc, i);
                }
            }
            continue;
        };
        let n = shape.group(ids[0]).1;
        let st = ids.map(|i| shape.group(i).0);
        for enc in &mut encs {
            enc.reserve(n + 1);
        }
        rans::put4(
            &mut encs,
            ids.map(table_of),
            st.map(|st| &syms[st..st + n]),
            |x| ((x >> 1) as usize, x & 1),
        );
        for (enc, i) in encs.iter_mut().zip(ids) {
            enc.put(&esyms[usize::from(codes[i].esym)]);
        }
    }
    let streams: Vec<Vec<u8>> = encs
        .into_iter()
        .map(|enc| {
            let mut lane = Vec::new();
            enc.finish(&mut lane);
            lane
        })
        .collect();
    for s in &streams {
        put_varint(&mut out, s.len() as u64);
    }
    for s in &streams {
        out.extend_from_slice(s);
    }
    (out, entropy)
}

/// Picks the context window `lo..lo + k` that minimizes the estimated size.
fn choose_window(vh: &[u64], alpha: usize) -> (i32, usize) {
    let used: Vec<usize> = (0..CLASSES)
        .filter(|&c| vh[c * alpha..(c + 1) * alpha].iter().any(|&x| x > 0))
        .collect();
    let (Some(&cmin), Some(&cmax)) = (used.first(), used.last()) else {
        return (0, 1);
    };
    let class = |c: usize| &vh[c * alpha..(c + 1) * alpha];
    let single: Vec<f64> = (0..CLASSES).map(|c| table_cost(class(c))).collect();
    // left[c]: classes cmin..=c merged; right[c]: classes c..=cmax merged.
    let mut left = [0f64; CLASSES];
    let mut right = [0f64; CLASSES];
    let mut acc = vec![0u64; alpha];
    for (c, l) in left.iter_mut().enumerate().take(cmax + 1).skip(cmin) {
        for (a, &b) in acc.iter_mut().zip(class(c)) {
            *a += b;
        }
        *l = table_cost(&acc);
    }
    acc.fill(0);
    for (c, r) in right.iter_mut().enumerate().take(cmax + 1).skip(cmin).rev() {
        for (a, &b) in acc.iter_mut().zip(class(c)) {
            *a += b;
        }
        *r = table_cost(&acc);
    }
    let mut best = (left[cmax], cmin, 1usize);
    for k in 2..=MAX_TABLES.min(cmax - cmin + 1) {
        for lo in cmin..=cmax + 1 - k {
            let hi = lo + k - 1;
            let cost = left[lo] + single[lo + 1..hi].iter().sum::<f64>() + right[hi];
            if cost < best.0 {
                best = (cost, lo, k);
            }
        }
    }
    (best.1 as i32 + CLASS_LO, best.2)
}

// ---------------------------------------------------------------------------------------
// Decoder.

/// Decodes a payload of [`encode`] into `out` (its length is the chunk's raw length: the
/// values in the original dtype). Never panics and never allocates more than `O(out.len())`
/// plus small tables on any input; corrupt input gives [`CodecError::Corrupt`].
pub fn decode(payload: &[u8], out: &mut [u8]) -> Result<(), CodecError> {
    let head = payload
        .get(..4)
        .ok_or(CodecError::Corrupt("BFP payload header truncated"))?;
    if head[0] != VERSION {
        return Err(CodecError::Corrupt("unknown BFP payload version"));
    }
    let layout = match (head[1], head[2]) {
        (2, 8) => FloatLayout::BF16,
        (2, 5) => FloatLayout::F16,
        (4, 8) => FloatLayout::F32,
        _ => return Err(CodecError::Corrupt("BFP payload has an unknown dtype")),
    };
    let mut pos = 4;
    let gs = get_varint(payload, &mut pos)?;
    let row = get_varint(payload, &mut pos)?;
    let count = get_varint(payload, &mut pos)?;
    let p = Params {
        mantissa_bits: u32::from(head[3]),
        group_size: gs.min(u64::from(u32::MAX)) as u32,
    };
    if check(layout, p).is_err() {
        return Err(CodecError::Corrupt("BFP payload has invalid parameters"));
    }
    let b = layout.bytes();
    if usize::try_from(count).ok().and_then(|c| c.checked_mul(b)) != Some(out.len()) {
        return Err(CodecError::Corrupt(
            "BFP payload value count disagrees with chunk size",
        ));
    }
    let count = count as usize;
    let row_ok = if count == 0 {
        row == 0
    } else {
        (1..=count as u64).contains(&row)
    };
    if !row_ok {
        return Err(CodecError::Corrupt("BFP payload has an invalid row length"));
    }
    let shape = Shape::new(count, row as usize, gs as usize);
    let win = payload
        .get(pos..pos + 2)
        .ok_or(CodecError::Corrupt("BFP payload header truncated"))?;
    let lo = i32::from(win[0] as i8);
    let k = usize::from(win[1]);
    pos += 2;
    if lo < CLASS_LO || !(1..=MAX_TABLES).contains(&k) || lo + k as i32 - 1 > CLASS_HI {
        return Err(CodecError::Corrupt(
            "BFP payload has an invalid context window",
        ));
    }
    let g = Geo::new(layout, p.mantissa_bits);
    let mut r = BitReader::new(&payload[pos..]);
    let etab = rans::dec_table(&rans::read(&mut r, g.exp_alpha())?);
    let mut vtabs = Vec::with_capacity(k);
    for _ in 0..k {
        vtabs.push(rans::vdec_table(
            &rans::read(&mut r, g.alpha())?,
            g.neg0 as usize,
        ));
    }
    if r.overrun() {
        return Err(CodecError::Corrupt("BFP payload tables truncated"));
    }
    pos += r.bytes_used();
    let mut sizes = [0usize; LANES];
    for s in &mut sizes {
        *s = usize::try_from(get_varint(payload, &mut pos)?)
            .map_err(|_| CodecError::Corrupt("BFP lane size overflows"))?;
    }
    let mut lanes = [(0usize, 0usize); LANES];
    let mut at = 0usize;
    let body = &payload[pos..];
    for (lane, &s) in lanes.iter_mut().zip(&sizes) {
        let end = at
            .checked_add(s)
            .filter(|&e| e <= body.len())
            .ok_or(CodecError::Corrupt("BFP lane exceeds the payload"))?;
        *lane = (at, end);
        at = end;
    }
    if at != body.len() {
        return Err(CodecError::Corrupt("BFP payload has trailing bytes"));
    }
    // A valid encoder pushes at most three words per value and one per group (so the
    // word buffer below stays O(out.len())).
    if body.len() > 8 * count + 8 * LANES {
        return Err(CodecError::Corrupt("BFP payload larger than any encoding"));
    }
    // Each lane: the final encoder state, then 16-bit words; one padding word at the end.
    let mut words = Vec::with_capacity(body.len() / 2 + 1);
    let mut heads = [(0u32, 0usize, 0usize); LANES];
    for (h, &(start, end)) in heads.iter_mut().zip(&lanes) {
        let lane = &body[start..end];
        if lane.len() < 4 || !lane.len().is_multiple_of(2) {
            return Err(CodecError::Corrupt("BFP lane has an invalid size"));
        }
        let x = u32::from_le_bytes([lane[0], lane[1], lane[2], lane[3]]);
        let first = words.len();
        words.extend(
            lane[4..]
                .chunks_exact(2)
                .map(|w| u16::from_le_bytes([w[0], w[1]])),
        );
        *h = (x, first, words.len());
    }
    words.push(0);
    let dec = Dec {
        g,
        shape,
        etab: &etab,
        vtabs: &vtabs,
        lo,
        k: k as i32,
    };
    if b == 2 {
        dec.run::<2>(&words, heads, out)
    } else {
        dec.run::<4>(&words, heads, out)
    }
}

/// Decoder state shared by the lanes.
struct Dec<'a> {
    g: Geo,
    shape: Shape,
    etab: &'a [u64; rans::TOTAL],
    vtabs: &'a [Box<[u64; rans::TOTAL]>],
    lo: i32,
    k: i32,
}

/// One lane being decoded.
#[derive(Clone, Copy)]
struct LaneState<'a> {
    rans: rans::Decoder<'a>,
    /// Next group and the lane's end group.
    next: usize,
    stop: usize,
    hist: History,
}

/// A coded group being decoded.
#[derive(Clone, Copy)]
struct Active<'a> {
    e: u32,
    /// `2^(E − bias − M + 1)`, the step.
    scale: f64,
    t: &'a [u64; rans::TOTAL],
    start: usize,
    len: usize,
}

#[inline(always)]
fn store<const B: usize>(out: &mut [u8], v: u32) {
    out.copy_from_slice(&v.to_le_bytes()[..B]);
}

impl<'a> Dec<'a> {
    /// Decodes the exponent of the lane's next group; raw groups are copied at once (`None`).
    fn group<const B: usize>(
        &self,
        s: &mut LaneState<'_>,
        out: &mut [u8],
    ) -> Result<Option<Active<'a>>, CodecError> {
        let (start, len) = self.shape.group(s.next);
        let esym = s.rans.get(self.etab);
        if esym == 0 {
            for v in out[start * B..(start + len) * B].chunks_exact_mut(B) {
                let lo = s.rans.bits(16);
                let hi = if B == 4 { s.rans.bits(16) } else { 0 };
                store::<B>(v, lo | hi << 16);
            }
            s.next += 1;
            return Ok(None);
        }
        let g = &self.g;
        let e = s.hist.pred(g) + unzigzag_i32(esym - 1);
        if e < 1 || e > g.emax as i32 {
            return Err(CodecError::Corrupt("BFP group exponent out of range"));
        }
        let e = e as u32;
        s.hist.start(g, e);
        let t = (s.hist.class(g, e).clamp(self.lo, self.lo + self.k - 1) - self.lo) as usize;
        // The step, times 2^-adj: the f32 image of the value (see `Geo::s32`).
        let k = e as i64 - g.bias as i64 - g.m as i64 + 1 - g.adj as i64;
        let scale = f64::from_bits(((1023 + k) as u64) << 52);
        Ok(Some(Active {
            e,
            scale,
            t: &self.vtabs[t],
            start,
            len,
        }))
    }

    /// Decodes one value of a coded group.
    #[inline(always)]
    fn value(&self, d: &mut rans::Decoder<'_>, a: &Active<'_>, sum: &mut u64) -> u32 {
        let g = &self.g;
        let c = u32::from(d.code(a.t));
        let (z, neg0) = ((c >> 8) & 1, (c >> 9) & 1);
        let mut q = (c & 0xFF) << g.low;
        let mut sign = (c >> 15 & c >> 10) | neg0;
        if g.low > 0 {
            if neg0 == 0 {
                q |= d.bits(g.low);
            }
            if z == 1 && q != 0 {
                sign = d.bits(1);
            }
        }
        *sum += u64::from(q);
        sign << g.sign_shift | mag_bits(g, q, a.scale)
    }

    /// Values of a group from its codes ([`rans::decode4`], lane `lane` of the interleaved
    /// codes); returns the sum of the magnitudes.
    fn convert<const B: usize>(
        &self,
        codes: &[u16],
        lane: usize,
        a: &Active<'_>,
        out: &mut [u8],
    ) -> u64 {
        let g = &self.g;
        let mut sum = 0u64;
        let codes = codes.chunks_exact(4).map(|c| c[lane & 3]);
        for (c, o) in codes.zip(out.chunks_exact_mut(B)) {
            let c = u32::from(c);
            let q = c & 0xFF;
            let sign = (c >> 15 & c >> 10) | ((c >> 9) & 1);
            sum += u64::from(q);
            store::<B>(o, sign << g.sign_shift | mag_bits(g, q, a.scale));
        }
        sum
    }

    fn run<const B: usize>(
        &self,
        words: &'a [u16],
        heads: [(u32, usize, usize); LANES],
        out: &mut [u8],
    ) -> Result<(), CodecError> {
        let ranges = self.shape.lanes();
        let mut codes = vec![0u16; LANES * self.shape.gs];
        let mut st: [LaneState<'a>; LANES] = std::array::from_fn(|k| LaneState {
            rans: rans::Decoder::new(heads[k].0, words, heads[k].1, heads[k].2),
            next: ranges[k].0,
            stop: ranges[k].1,
            hist: History::new(),
        });
        loop {
            let mut act: [Option<Active<'a>>; LANES] = [None; LANES];
            let mut any = false;
            for (s, a) in st.iter_mut().zip(&mut act) {
                if s.next < s.stop {
                    any = true;
                    *a = self.group::<B>(s, out)?;
                }
            }
            if !any {
                break;
            }
            let mut sums = [0u64; LANES];
            match act {
                [Some(a0), Some(a1), Some(a2), Some(a3)]
                    if a0.len == a1.len
                        && a0.len == a2.len
                        && a0.len == a3.len
                        && self.g.low == 0 =>
                {
                    // Symbols first (four independent rANS chains), then values.
                    let n = a0.len;
                    let mut decs = st.map(|s| s.rans);
                    rans::decode4(&mut decs, [a0.t, a1.t, a2.t, a3.t], &mut codes[..4 * n]);
                    for (s, d) in st.iter_mut().zip(decs) {
                        s.rans = d;
                    }
                    for (k, a) in [a0, a1, a2, a3].iter().enumerate() {
                        let o = &mut out[a.start * B..(a.start + n) * B];
                        sums[k] = self.convert::<B>(&codes[..4 * n], k, a, o);
                    }
                }
                _ => {
                    for ((s, a), sum) in st.iter_mut().zip(&act).zip(&mut sums) {
                        if let Some(a) = a {
                            let o = &mut out[a.start * B..(a.start + a.len) * B];
                            for v in o.chunks_exact_mut(B) {
                                store::<B>(v, self.value(&mut s.rans, a, sum));
                            }
                        }
                    }
                }
            }
            for ((s, a), &sum) in st.iter_mut().zip(&act).zip(&sums) {
                if let Some(a) = a {
                    s.hist.push(a.e, sum, a.len);
                    s.next += 1;
                }
            }
        }
        if st.iter().any(|s| !s.rans.ok()) {
            return Err(CodecError::Corrupt("BFP lane does not decode exactly"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grid;
    use proptest::prelude::*;

    const LAYOUTS: [FloatLayout; 3] = [FloatLayout::BF16, FloatLayout::F16, FloatLayout::F32];

    fn to_bytes(layout: FloatLayout, vals: &[u32]) -> Vec<u8> {
        vals.iter()
            .flat_map(|v| v.to_le_bytes()[..layout.bytes()].to_vec())
            .collect()
    }

    fn from_bytes(layout: FloatLayout, data: &[u8]) -> Vec<u32> {
        data.chunks_exact(layout.bytes())
            .map(|c| {
                let mut w = [0u8; 4];
                w[..c.len()].copy_from_slice(c);
                u32::from_le_bytes(w)
            })
            .collect()
    }

    /// Independent f64 model of one group: the expected decoded bits, or `None` for a raw
    /// group; also checks the error bound.
    fn reference_group(layout: FloatLayout, vals: &[u32], m: u32) -> Option<Vec<u32>> {
        let bits = layout.bits();
        let f = bits - 1 - layout.exp_bits;
        let ones = (1u32 << layout.exp_bits) - 1;
        let bias = (ones >> 1) as i32;
        let emax = ones - 1;
        let exps: Vec<u32> = vals.iter().map(|v| (v >> f) & ones).collect();
        if exps.contains(&ones) {
            return None;
        }
        let e0 = exps.iter().copied().max().unwrap_or(0).max(1);
        for e in [e0, e0 + 1] {
            if e > emax {
                return None;
            }
            let step = 2f64.powi(e as i32 - bias - m as i32 + 1);
            let xs: Vec<f64> = vals
                .iter()
                .map(|&v| grid::to_f64(layout, u64::from(v)))
                .collect();
            let qs: Vec<f64> = xs
                .iter()
                .map(|x| (x.abs() / step).round_ties_even())
                .collect();
            if qs.iter().any(|&q| q >= 2f64.powi(m as i32)) {
                continue;
            }
            return Some(
                xs.iter()
                    .zip(&qs)
                    .map(|(&x, &q)| {
                        let y = if q == 0.0 {
                            if x == 0.0 { x } else { 0.0 }
                        } else {
                            q * step * x.signum()
                        };
                        assert!((x - y).abs() <= step / 2.0, "error bound {x} {y} {step}");
                        let b = grid::from_f64(layout, y) as u32;
                        assert_eq!(grid::to_f64(layout, u64::from(b)), y, "representable");
                        b
                    })
                    .collect(),
            );
        }
        unreachable!("a carry leaves every magnitude below 2^M")
    }

    fn reference(layout: FloatLayout, vals: &[u32], row: usize, p: Params) -> Vec<u32> {
        let row = norm_row(vals.len(), row).max(1);
        let mut out = Vec::with_capacity(vals.len());
        for r in vals.chunks(row) {
            for grp in r.chunks(p.group_size as usize) {
                match reference_group(layout, grp, p.mantissa_bits) {
                    Some(v) => out.extend(v),
                    None => out.extend_from_slice(grp),
                }
            }
        }
        out
    }

    /// Encodes, decodes, compares with the reference and checks idempotence; returns the
    /// payload.
    fn check_round_trip(layout: FloatLayout, vals: &[u32], row: usize, p: Params) -> Vec<u8> {
        let data = to_bytes(layout, vals);
        let (enc, bits) = encode(layout, &data, row, p);
        assert!(bits >= 0.0);
        let mut out = vec![0u8; data.len()];
        decode(&enc, &mut out).unwrap();
        let got = from_bytes(layout, &out);
        let want = reference(layout, vals, row, p);
        assert_eq!(got, want, "{layout:?} {p:?} row {row}");
        let (enc2, _) = encode(layout, &out, row, p);
        let mut out2 = vec![0u8; data.len()];
        decode(&enc2, &mut out2).unwrap();
        assert_eq!(out2, out, "idempotence {layout:?} {p:?} row {row}");
        enc
    }

    fn pseudo_u32(n: usize, seed: u64) -> Vec<u32> {
        crate::pseudo_bytes(4 * n, seed)
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    }

    /// Weight-like values: random signs, exponents in a narrow band per row, random fraction.
    fn weights(layout: FloatLayout, n: usize, seed: u64) -> Vec<u32> {
        let f = layout.bits() - 1 - layout.exp_bits;
        let bias = (1u32 << (layout.exp_bits - 1)) - 1;
        pseudo_u32(n, seed)
            .iter()
            .enumerate()
            .map(|(i, &r)| {
                let sign = r >> 31;
                let band = (i / 50) as u32 % 5;
                let e = bias - 3 - band - (r >> 28 & 7).min(4) * ((r >> 27) & 1);
                let frac = r & ((1 << f) - 1);
                sign << (layout.bits() - 1) | e << f | frac
            })
            .collect()
    }

    /// Special values of a layout: zeros, subnormals, normals, max finite, Inf, NaNs.
    fn specials(layout: FloatLayout) -> Vec<u32> {
        let bits = layout.bits();
        let f = bits - 1 - layout.exp_bits;
        let ones = (1u32 << layout.exp_bits) - 1;
        let sign = 1u32 << (bits - 1);
        let fmask = (1u32 << f) - 1;
        let max = (ones - 1) << f | fmask;
        vec![
            0,
            sign,
            1,
            sign | 1,
            fmask,
            1 << f,
            3 << (f - 1),
            max,
            sign | max,
            max - 1,
            ones << f,
            sign | ones << f,
            ones << f | 1,
            ones << f | fmask,
            sign | ones << f | (1 << (f - 1)) | 5,
            (ones >> 1) << f,
            (ones >> 1) << f | fmask,
            2 << f | fmask,
        ]
    }

    #[test]
    fn every_layout_m_and_group_matches_the_reference() {
        for layout in LAYOUTS {
            let w = weights(layout, 300, 7);
            let r = pseudo_u32(97, 11)
                .iter()
                .map(|v| v & (u32::MAX >> (32 - layout.bits())))
                .collect::<Vec<_>>();
            for m in 2..=max_mantissa_bits(layout) {
                for gs in [1u32, 2, 7, 32, 64] {
                    let p = Params {
                        mantissa_bits: m,
                        group_size: gs,
                    };
                    for row in [0usize, 13, 50] {
                        check_round_trip(layout, &w, row, p);
                    }
                    check_round_trip(layout, &r, 0, p);
                    check_round_trip(layout, &r, 10, p);
                }
            }
        }
    }

    #[test]
    fn special_values() {
        for layout in LAYOUTS {
            let sp = specials(layout);
            let f = layout.bits() - 1 - layout.exp_bits;
            for m in 2..=max_mantissa_bits(layout) {
                for gs in [1u32, 2, 3, 7, 32] {
                    let p = Params {
                        mantissa_bits: m,
                        group_size: gs,
                    };
                    check_round_trip(layout, &sp, 0, p);
                    // Each special value alone in a group of normal values.
                    for &s in &sp {
                        let mut v = weights(layout, 40, u64::from(s) + 1);
                        v[5] = s;
                        check_round_trip(layout, &v, 0, p);
                    }
                }
                // Subnormal-only and tiny groups; values far below the group max.
                let sub: Vec<u32> = (0..64u32).map(|i| (i * 37) & ((1 << f) - 1)).collect();
                let p = Params {
                    mantissa_bits: m,
                    group_size: 8,
                };
                check_round_trip(layout, &sub, 0, p);
                let one = ((1u32 << (layout.exp_bits - 1)) - 1) << f;
                let far: Vec<u32> = vec![one, 1, 2 << f, 1 << f, 0, 0, 1 << (layout.bits() - 1), 3];
                check_round_trip(layout, &far, 0, p);
            }
        }
    }

    #[test]
    fn escapes_are_exact_and_local() {
        for layout in LAYOUTS {
            let f = layout.bits() - 1 - layout.exp_bits;
            let ones = (1u32 << layout.exp_bits) - 1;
            let mut v = weights(layout, 96, 3);
            let nan = ones << f | 0x5;
            v[40] = nan;
            let p = Params {
                mantissa_bits: 4,
                group_size: 32,
            };
            let data = to_bytes(layout, &v);
            let (enc, _) = encode(layout, &data, 0, p);
            let mut out = vec![0u8; data.len()];
            decode(&enc, &mut out).unwrap();
            let got = from_bytes(layout, &out);
            assert_eq!(got[32..64], v[32..64], "the NaN group is exact");
            assert_ne!(got[..32], v[..32], "neighbours are still quantized");
            // Max finite with all-ones fraction would round up to Inf: stored raw.
            let max = (ones - 1) << f | ((1 << f) - 1);
            let w = vec![max, 1 << f, max - 3, 0];
            check_round_trip(layout, &w, 0, p);
            let data = to_bytes(layout, &w);
            let (enc, _) = encode(layout, &data, 0, p);
            let mut out = vec![0u8; data.len()];
            decode(&enc, &mut out).unwrap();
            assert_eq!(from_bytes(layout, &out), w);
        }
    }

    #[test]
    fn carry_raises_the_group_exponent() {
        // BF16 1.9921875 (0x3fff) at M=4: rounds to 2.0, not saturating to 1.875.
        let v = vec![0x3fffu32, 0x3f80];
        let data = to_bytes(FloatLayout::BF16, &v);
        let p = Params {
            mantissa_bits: 4,
            group_size: 2,
        };
        let (enc, _) = encode(FloatLayout::BF16, &data, 0, p);
        let mut out = vec![0u8; 4];
        decode(&enc, &mut out).unwrap();
        assert_eq!(from_bytes(FloatLayout::BF16, &out), vec![0x4000, 0x3f80]);
    }

    #[test]
    fn empty_and_single_value() {
        for layout in LAYOUTS {
            let p = Params {
                mantissa_bits: 3,
                group_size: 32,
            };
            let enc = check_round_trip(layout, &[], 0, p);
            assert!(enc.len() < 40, "{}", enc.len());
            check_round_trip(layout, &[0x1234], 0, p);
            check_round_trip(layout, &[0x1234], 1, p);
        }
    }

    #[test]
    fn sizes_track_m() {
        let layout = FloatLayout::BF16;
        let v = weights(layout, 20_000, 5);
        let data = to_bytes(layout, &v);
        let mut last = 0;
        for m in 2..=8 {
            let p = Params {
                mantissa_bits: m,
                group_size: 32,
            };
            let (enc, bits) = encode(layout, &data, 0, p);
            let per = enc.len() as f64 * 8.0 / v.len() as f64;
            assert!(enc.len() > last, "M={m}");
            assert!(per < m as f64 + 1.5, "M={m}: {per}");
            assert!(bits <= enc.len() as f64 * 8.0 + 1.0, "M={m}");
            last = enc.len();
        }
    }

    #[test]
    fn truncated_and_corrupt_payloads_error() {
        for (layout, m) in [(FloatLayout::BF16, 6), (FloatLayout::F32, 14)] {
            let mut v = weights(layout, 700, 9);
            v[100] = specials(layout)[10];
            let data = to_bytes(layout, &v);
            let p = Params {
                mantissa_bits: m,
                group_size: 32,
            };
            let (enc, _) = encode(layout, &data, 64, p);
            let mut out = vec![0u8; data.len()];
            for cut in 0..enc.len() {
                assert!(decode(&enc[..cut], &mut out).is_err(), "cut {cut}");
            }
            let mut longer = enc.clone();
            longer.push(0);
            assert!(decode(&longer, &mut out).is_err());
            assert!(decode(&enc, &mut out[1..]).is_err());
            for i in 0..enc.len() {
                for flip in [0x01u8, 0x80, 0xFF] {
                    let mut bad = enc.clone();
                    bad[i] ^= flip;
                    let _ = decode(&bad, &mut out);
                }
            }
        }
        let mut out = vec![0u8; 256];
        for seed in 0..300u64 {
            let mut junk = crate::pseudo_bytes(40 + seed as usize, seed + 1);
            junk[0] = VERSION;
            junk[1] = if seed % 2 == 0 { 2 } else { 4 };
            junk[2] = 8;
            let _ = decode(&junk, &mut out);
        }
    }

    #[test]
    fn check_rejects_bad_params() {
        let ok = Params {
            mantissa_bits: 7,
            group_size: 32,
        };
        assert!(check(FloatLayout::BF16, ok).is_ok());
        assert_eq!(check(FloatLayout::F64, ok), Err(ParamError::Layout));
        let bad_m = |got| Err(ParamError::MantissaBits { got, max: 8 });
        let bad_g = |got| Err(ParamError::GroupSize { got });
        for (m, g, want) in [
            (1, 32, bad_m(1)),
            (9, 32, bad_m(9)),
            (7, 0, bad_g(0)),
            (7, 4097, bad_g(4097)),
            (0, 0, bad_m(0)),
        ] {
            let p = Params {
                mantissa_bits: m,
                group_size: g,
            };
            assert_eq!(check(FloatLayout::BF16, p), want, "{m} {g}");
        }
        assert_eq!(
            bad_g(4097).unwrap_err().to_string(),
            "BFP group size must be in 1..=4096, got 4097"
        );
        assert!(
            check(
                FloatLayout::F32,
                Params {
                    mantissa_bits: 24,
                    group_size: 4096
                }
            )
            .is_ok()
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]
        #[test]
        fn random_payloads_never_panic(
            data in prop::collection::vec(any::<u8>(), 0..400),
            n in 0usize..300,
            head in 0u8..3,
        ) {
            let mut data = data;
            // Mostly well-formed headers, so that decoding gets past them.
            if head > 0 && data.len() >= 8 {
                data[0] = VERSION;
                data[1] = if head == 1 { 2 } else { 4 };
                data[2] = 8;
                data[3] = 2 + data[3] % 7;
            }
            let mut out = vec![0u8; n];
            let _ = decode(&data, &mut out);
        }

        #[test]
        fn random_bits_match_the_reference(
            seed in any::<u64>(),
            n in 0usize..300,
            li in 0usize..3,
            m in 2u32..=24,
            gs in 1u32..80,
            row in 0usize..100,
            weightlike in any::<bool>(),
        ) {
            let layout = LAYOUTS[li];
            let m = m.min(max_mantissa_bits(layout));
            let vals = if weightlike {
                weights(layout, n, seed)
            } else {
                pseudo_u32(n, seed)
                    .iter()
                    .map(|v| v & (u32::MAX >> (32 - layout.bits())))
                    .collect()
            };
            check_round_trip(layout, &vals, row, Params { mantissa_bits: m, group_size: gs });
        }
    }
}
