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
//! If rounding carries a magnitude to `2^M`, the encoder either saturates it to `2^M − 1`
//! (keeping the finer step for the rest of the group) or raises the group exponent by one and
//! re-quantizes the whole group from the original values at the coarser step, whichever has
//! the smaller squared error over the group (the decoder does not know which).
//! Every `x̂` is exactly representable in the dtype (normal or subnormal), so decoding
//! involves no second rounding and returns the original dtype.
//!
//! Guarantees:
//! - **Error bound**: for every value of a coded group, `|x − x̂| ≤ 2^(E − bias − M)`, half a
//!   step, with `E` the group's final exponent (after a carry), except a saturated maximum,
//!   whose error is at most one step (`2^(E − bias − M + 1)`, still half a step of `E + 1`).
//! - Values below half a step round to zero. A zero result keeps the sign only when the input
//!   was itself `±0` (`−0` stays `−0`; a tiny negative value becomes `+0`).
//! - Subnormal inputs are on the same grid as everything else (their exponent counts as 1, as
//!   in IEEE): no flush to zero, no special case. Outputs may be subnormal; a value is kept
//!   exactly whenever it is a multiple of the step (e.g. BF16 at `M = 8` keeps every value of
//!   the group's top binade, and all of a group of subnormals).
//! - A group holding NaN or ±Inf is stored raw (a carry at the largest finite exponent
//!   saturates, so `x̂` never becomes Inf): bit-exact, NaN payloads included,
//!   and it never affects its neighbours.
//! - **Idempotence**: decoded values are on their group's grid with the same `E`, so encoding
//!   them again with the same `M`, `G` and `row_len` decodes to the same bits.
//!
//! [`encode_rd`] and [`encode_rd_restored`] (what `dmx compress --mode bfp` uses) write the
//! same payload format with rate–distortion grouping: groups of `G / 2` values, some with an
//! exponent one above their largest value's, chosen so that the chunk's squared error is at
//! most that of [`encode`](fn@encode) at `(M, G)` (see `rd.rs`). Every value's error stays within
//! `2^(1−M)` of its group's largest magnitude; encoding their output again may spend the
//! error budget of the new input again (it is not idempotent).
//!
//! [`encode_own`] and [`encode_own_restored`] code each value with its own exponent (groups
//! of one, so none is flushed to 0 by a larger neighbour), at `M − 1` magnitude bits when the
//! chunk's squared error then stays at most plain BFP's at `(M, G)` and no non-zero value
//! would become 0, else at `M` (see `own.rs`). [`own_restored`] gives the values they restore
//! without coding them: what the engine stores, with the lossless float codecs, for optimizer
//! moments (smaller and faster than a payload of groups of one).
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
//! Codec 13 (payload version 2) also picks the magnitude table by the previous value of the
//! group: `P` tables per context class, the first value of a group coded with table 0, each
//! next one with table `min(1 + bit length of the previous magnitude symbol, P − 1)` (`−0`
//! counts as 0). In the kernels of pretrained CNNs small and zero magnitudes come in runs,
//! which this sees; the encoder writes it only where it saves more than 0.5 % of the chunk
//! ([`codec`] tells which a payload is; docs/CODECS.md §11).
//!
//! # Payload
//!
//! ```text
//! u8 version (1; 2 for codec 13) | u8 value bytes (2, 4) | u8 exponent bits | u8 M
//! varint G | varint row_len (1..=count; 0 if empty) | varint count
//! i8 context low | u8 tables K (1..=8) | version 2 only: u8 previous-value classes P
//!   (2..=10, K · P <= 32)
//! frequency tables (bit-packed, byte aligned): exponent, then K (version 2: K · P, table
//!   t · P + c for window class t after previous-value class c) magnitude tables; each is
//!   u16 first symbol, u16 span, one delta-coded 1/8-octave descriptor per symbol
//! varint lane sizes ×4 | the four lanes: u32 final encoder state, then u16 words (LE)
//! decoding order per group: exponent symbol, then per value: magnitude-and-sign symbol
//!   [M − 8 raw bits] [for M > 8 and a zero top symbol with q ≠ 0: a raw sign bit]; a raw
//!   group: escape symbol, then each value's bits raw, 16 at a time, low half first
//! ```

use crate::FloatLayout;

mod decode;
mod encode;
mod own;
mod rd;
#[cfg(test)]
mod tests;

pub use decode::{decode, decode_codec};
pub use encode::{encode, encode_restored};
pub use own::{encode_own, encode_own_restored, own_restored};
pub use rd::{encode_rd, encode_rd_restored};

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

/// Payload format version of codec 4.
const VERSION: u8 = 1;
/// Payload format version of codec 13: codec 4 plus a table per previous value in the group.
const VERSION_CTX: u8 = 2;
/// Fine previous-value classes: 0 for a group's first value, else 1 + the bit length of the
/// previous value's magnitude symbol byte (0 to 8).
const PREV_FINE: usize = 10;
/// Most magnitude tables of a codec 13 payload.
const MAX_CTX_TABLES: usize = 32;
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

/// The exponent of a group, or `None` when the group must be stored raw (it holds NaN or
/// ±Inf). `E₀` is the exponent of the largest magnitude. Rounding is monotonic in the
/// magnitude, so only values near the maximum can round up to `2^M`; when that happens the
/// group either keeps `E₀` with those magnitudes saturated to `2^M − 1`, or takes `E₀ + 1`
/// and re-quantizes at the coarser step, whichever gives the smaller squared error (the
/// coarser step on a tie; saturation whenever `E₀` is the largest finite exponent).
#[inline(always)]
fn group_exponent(g: &Geo, vals: &[u32]) -> Option<u32> {
    group_exponent_of(g, vals, max_magnitude(g, vals))
}

/// [`group_exponent`] when the largest magnitude bits `max_mag` are known.
#[inline(always)]
fn group_exponent_of(g: &Geo, vals: &[u32], max_mag: u32) -> Option<u32> {
    let e = max_mag >> g.f;
    if e >= g.exp_ones {
        return None;
    }
    let sig = (max_mag & ((1u32 << g.f) - 1)) | (u32::from(e != 0) << g.f);
    let top = e.max(1);
    if rne(sig, g.f + 1 - g.m) >> g.m == 0 || top == g.emax {
        return Some(top);
    }
    // In units of the step at `top`: saturating costs (y − min(rne(y), 2^M − 1))², the next
    // exponent (y − 2·rne(y / 2))².
    let inv = inv_step(g, top);
    let qmax = f64::from((1u32 << g.m) - 1);
    let mag_mask = (1u32 << g.sign_shift) - 1;
    let (mut sat, mut up) = (0f64, 0f64);
    for &v in vals {
        let y = f64::from(f32::from_bits((v & mag_mask) << g.s32)) * inv;
        let a = y - y.round_ties_even().min(qmax);
        let b = y - 2.0 * (y / 2.0).round_ties_even();
        sat += a * a;
        up += b * b;
    }
    Some(if sat < up { top } else { top + 1 })
}

/// `1 / step` of group exponent `e_grp`, relative to the `f32` image of the magnitudes.
#[inline(always)]
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
    let qmax = (1u32 << g.m) - 1;
    for (&v, s) in vals.iter().zip(syms.iter_mut()) {
        let q = qmag(g, v, inv).min(qmax);
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
    let qmax = (1u32 << g.m) - 1;
    for (&v, s) in vals.iter().zip(syms.iter_mut()) {
        let y = f32::from_bits((v & mag_mask) << s32) * a * b;
        let q = ((y + MAGIC).to_bits() - MAGIC.to_bits()).min(qmax);
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

/// The step of group exponent `e_grp` times `2^-adj` ([`mag_bits`]' scale): `2^k` with
/// `k = E − bias − M + 1 − adj`, which lies in `−149..=127` for every coded exponent
/// (`1..=emax`) and `M` the layout allows, so it is an `f32`, subnormal below `2^-126`.
#[inline(always)]
fn step_scale(g: &Geo, e_grp: u32) -> f32 {
    let k = e_grp as i32 - g.bias as i32 - g.m as i32 + 1 - g.adj as i32;
    debug_assert!((-149..=127).contains(&k), "step 2^{k}");
    if k >= -126 {
        f32::from_bits(((127 + k) as u32) << 23)
    } else {
        f32::from_bits(1 << (k + 149))
    }
}

/// Magnitude bits of `q` (`< 2^M <= 2^24`, so an exact `f32`) for a group whose `scale` is
/// its step times `2^-adj` ([`step_scale`]): `q · scale` is exactly representable in `f32`
/// (subnormals included), so the rounded `f32` product is that value, and the `f32` image of a
/// layout value shifted by `s32` is its bits (see `Geo::s32`).
#[inline(always)]
fn mag_bits(g: &Geo, q: u32, scale: f32) -> u32 {
    (q as f32 * scale).to_bits() >> g.s32
}

/// Magnitude symbol of `q << 1 | sign`.
#[inline(always)]
fn vsym(g: &Geo, s: u32) -> u32 {
    if s == 1 { g.neg0 } else { s >> (1 + g.low) }
}

/// Mean magnitude level of a group in half octaves, plus twice its exponent.
#[inline(always)]
fn level(e: u32, sum_q: u64, n: usize) -> i32 {
    // Groups are mostly of a power-of-two size (of one value with own exponents): a shift
    // gives the same quotient without a division.
    let z = if n.is_power_of_two() {
        ((sum_q << 5) >> n.trailing_zeros()) + 1
    } else {
        (sum_q << 5) / n as u64 + 1
    };
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
    #[inline(always)]
    fn pred(&self, g: &Geo) -> i32 {
        if self.fresh {
            g.bias as i32
        } else {
            ((self.sum - 4 * g.typical) >> 3).clamp(1, g.emax as i32)
        }
    }

    /// Called with the exponent of each coded group: seeds the first one.
    #[inline(always)]
    fn start(&mut self, g: &Geo, e: u32) {
        if self.fresh {
            let l = 2 * e as i32 + g.typical;
            self.ring = [l; 4];
            self.sum = 4 * l;
            self.fresh = false;
        }
    }

    /// The context class of a group of exponent `e` (in `CLASS_LO..=CLASS_HI`).
    #[inline(always)]
    fn class(&self, g: &Geo, e: u32) -> i32 {
        ((self.sum - 8 * e as i32 - 4 * g.typical) >> 2).clamp(CLASS_LO, CLASS_HI)
    }

    #[inline(always)]
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
    #[inline(always)]
    fn group(&self, i: usize) -> (usize, usize) {
        // Without rows (the engine's groups run across rows) every group is in row 0: no
        // division.
        let (r, k) = if i < self.per_row {
            (0, i)
        } else {
            (i / self.per_row, i % self.per_row)
        };
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

/// The fine previous-value class of a value whose predecessor in the group has magnitude
/// symbol byte `b` (the decoder's code byte: `0` for `−0`).
#[inline(always)]
fn prev_fine(b: u32) -> usize {
    1 + (32 - (b & 0xFF).leading_zeros()) as usize
}

/// [`prev_fine`] after the encoder's magnitude symbol `s` (`neg0`, `−0`, is the decoder's
/// code byte 0).
#[inline(always)]
fn prev_fine_of(g: &Geo, s: u32) -> usize {
    prev_fine(if s == g.neg0 { 0 } else { s })
}

/// The table of each previous-value class when `p` classes are kept: fine class `f` uses
/// table `min(f, p − 1)`.
#[inline(always)]
fn coarse(fine: usize, p: usize) -> usize {
    fine.min(p - 1)
}

/// The codec of a payload that this module's encoders wrote: [`Codec::BfpContext`] when it
/// codes magnitudes with a table per previous value (payload version 2), else
/// [`Codec::Bfp`].
///
/// [`Codec::BfpContext`]: crate::Codec::BfpContext
/// [`Codec::Bfp`]: crate::Codec::Bfp
pub fn codec(payload: &[u8]) -> crate::Codec {
    if payload.first() == Some(&VERSION_CTX) {
        crate::Codec::BfpContext
    } else {
        crate::Codec::Bfp
    }
}

/// Estimated bits of a table for a histogram: symbol entropy plus table cost.
fn table_cost(h: &[u64]) -> f64 {
    let used = h.iter().filter(|&&c| c > 0).count();
    crate::float::entropy_estimate(h) + 32.0 + 3.0 * used as f64
}
