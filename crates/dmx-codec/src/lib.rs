//! Pure lossless transforms for neural-network tensor bytes: no IO, no threads.
//!
//! A chunk of tensor bytes is encoded by [`encode`] into a [`Codec`] id plus a payload, and
//! restored by [`decode`]. For float data the codec splits every value into a Huffman-coded
//! symbol (sign, exponent and the top mantissa bits) and raw residual bits (module [`float`]);
//! other data uses zstd. The smallest candidate wins and [`Codec::Raw`] bounds the growth, so a
//! payload is never larger than its input.
//!
//! ```
//! use dmx_codec::{decode, encode, FloatLayout, ValueKind};
//! let values: Vec<u8> = (0..4096u32)
//!     .flat_map(|i| half_like(i).to_le_bytes())
//!     .collect();
//! # fn half_like(i: u32) -> u16 { 0x3c00 | (i as u16 & 0x3ff) }
//! let enc = encode(ValueKind::Float(FloatLayout::BF16), &values, 3);
//! let mut back = vec![0u8; values.len()];
//! decode(enc.codec, &enc.payload, &mut back).unwrap();
//! assert_eq!(back, values);
//! ```
#![deny(missing_docs)]
// `unsafe` is fenced in module `cpu` (run-time CPU dispatch), which allows it.
#![deny(unsafe_code)]

pub mod bfp;
pub mod bits;
mod bound;
pub mod cast;
pub mod cols;
pub mod cpu;
pub mod delta;
mod entropy;
mod escapes;
pub mod fgrid;
pub mod float;
pub mod fquant;
pub mod grid;
pub mod huffman;
pub mod ints;
pub mod quant;
pub mod rows;
pub mod split;
mod zstd_ctx;

use thiserror::Error;

/// Errors from decoding a payload.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum CodecError {
    /// The payload is malformed (truncated, inconsistent, or not produced by this codec).
    #[error("corrupt payload: {0}")]
    Corrupt(&'static str),
    /// The payload names a codec id this version does not know.
    #[error("unknown codec id {0}")]
    UnknownCodec(u8),
    /// zstd refused the payload.
    #[error("zstd: {0}")]
    Zstd(String),
}

/// Codec ids as stored in the container index (docs/FORMAT.md §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Codec {
    /// The bytes, stored as they are.
    Raw = 0,
    /// A single zstd frame.
    Zstd = 1,
    /// The field-split float codec of module [`float`].
    FloatHuff = 2,
    /// Codec 2 after the row-relative exponent transform of module [`rows`].
    FloatHuffRows = 3,
    /// Block floating point, module [`bfp`] (lossy).
    Bfp = 4,
    /// Aligned integer quantization, module [`quant`] (lossy).
    Quant = 5,
    /// Lossless delta against the same bytes of a base tensor, module [`delta`].
    Delta = 6,
    /// Quantized delta against a base tensor on a shared grid, module [`delta`] (lossy).
    QuantDelta = 7,
    /// Rounded to a 16-bit float and restored in 32 bits, module [`cast`] (lossy).
    Cast = 8,
    /// Floating-grid quantization, module [`fquant`] (lossy).
    FloatQuant = 9,
    /// The split-stream float codec of module [`split`] (codes and residuals apart).
    FloatSplit = 10,
    /// Codec 10 after the row-relative exponent transform of module [`rows`].
    FloatSplitRows = 11,
    /// Codec 10's split with rANS-coded symbols, module [`split::ans`].
    FloatSplitRans = 12,
    /// Block floating point with a magnitude table per previous value in the group, module
    /// [`bfp`] (lossy).
    BfpContext = 13,
    /// Codec 5 with the integers coded under previous-value contexts, module [`quant`]
    /// (lossy).
    QuantContext = 14,
    /// Codec 5 with the integers coded under row or column classes, module [`quant`]
    /// (lossy).
    QuantRows = 15,
    /// Codec 12 after the column-relative exponent transform of module [`cols`].
    FloatSplitRansCols = 16,
    /// Codec 12 after the row-relative exponent transform of module [`rows`] (codec 11 with
    /// rANS-coded symbols).
    FloatSplitRansRows = 17,
}

impl Codec {
    /// Parses a stored codec id.
    pub fn from_id(id: u8) -> Result<Self, CodecError> {
        match id {
            0 => Ok(Self::Raw),
            1 => Ok(Self::Zstd),
            2 => Ok(Self::FloatHuff),
            3 => Ok(Self::FloatHuffRows),
            4 => Ok(Self::Bfp),
            5 => Ok(Self::Quant),
            6 => Ok(Self::Delta),
            7 => Ok(Self::QuantDelta),
            8 => Ok(Self::Cast),
            9 => Ok(Self::FloatQuant),
            10 => Ok(Self::FloatSplit),
            11 => Ok(Self::FloatSplitRows),
            12 => Ok(Self::FloatSplitRans),
            13 => Ok(Self::BfpContext),
            14 => Ok(Self::QuantContext),
            15 => Ok(Self::QuantRows),
            16 => Ok(Self::FloatSplitRansCols),
            17 => Ok(Self::FloatSplitRansRows),
            other => Err(CodecError::UnknownCodec(other)),
        }
    }

    /// A short lowercase name for reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::Raw => "raw",
            Self::Zstd => "zstd",
            Self::FloatHuff => "float-huff",
            Self::FloatHuffRows => "float-huff-rows",
            Self::Bfp => "bfp",
            Self::Quant => "quant",
            Self::Delta => "delta",
            Self::QuantDelta => "quant-delta",
            Self::Cast => "cast",
            Self::FloatQuant => "fquant",
            Self::FloatSplit => "float-split",
            Self::FloatSplitRows => "float-split-rows",
            Self::FloatSplitRans => "float-split-rans",
            Self::BfpContext => "bfp-ctx",
            Self::QuantContext => "quant-ctx",
            Self::QuantRows => "quant-rows",
            Self::FloatSplitRansCols => "float-split-rans-cols",
            Self::FloatSplitRansRows => "float-split-rans-rows",
        }
    }

    /// Whether decoding needs the base tensor's bytes.
    pub fn needs_base(self) -> bool {
        matches!(self, Self::Delta | Self::QuantDelta)
    }

    /// Whether decoded bytes equal the encoder's input.
    pub fn is_lossless(self) -> bool {
        !matches!(
            self,
            Self::Bfp
                | Self::BfpContext
                | Self::Quant
                | Self::QuantContext
                | Self::QuantRows
                | Self::QuantDelta
                | Self::Cast
                | Self::FloatQuant
        )
    }
}

/// Bit layout of a floating-point value: total width and exponent width (the sign is the top
/// bit, the mantissa the rest).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FloatLayout {
    pub(crate) bytes: u8,
    /// Exponent field width in bits.
    pub exp_bits: u32,
}

impl FloatLayout {
    /// bfloat16: 1 + 8 + 7.
    pub const BF16: Self = Self {
        bytes: 2,
        exp_bits: 8,
    };
    /// IEEE binary16: 1 + 5 + 10.
    pub const F16: Self = Self {
        bytes: 2,
        exp_bits: 5,
    };
    /// IEEE binary32: 1 + 8 + 23.
    pub const F32: Self = Self {
        bytes: 4,
        exp_bits: 8,
    };
    /// IEEE binary64: 1 + 11 + 52.
    pub const F64: Self = Self {
        bytes: 8,
        exp_bits: 11,
    };
    /// FP8 E4M3: 1 + 4 + 3.
    pub const F8_E4M3: Self = Self {
        bytes: 1,
        exp_bits: 4,
    };
    /// FP8 E5M2: 1 + 5 + 2.
    pub const F8_E5M2: Self = Self {
        bytes: 1,
        exp_bits: 5,
    };

    /// Value width in bytes.
    pub fn bytes(self) -> usize {
        usize::from(self.bytes)
    }

    /// Value width in bits.
    pub fn bits(self) -> u32 {
        u32::from(self.bytes) * 8
    }
}

/// What a chunk holds, which decides the candidate codecs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueKind {
    /// Little-endian floats of this layout.
    Float(FloatLayout),
    /// Anything else (integers, bools, unknown dtypes, file headers, other files).
    Bytes,
}

/// An encoded chunk.
#[derive(Debug, Clone)]
pub struct Encoded {
    /// The codec that produced `payload`.
    pub codec: Codec,
    /// The stored bytes.
    pub payload: Vec<u8>,
    /// Order-0 entropy bound of the input in bits under the chosen field split (floats) or of
    /// its bytes (other data).
    pub entropy_bits: f64,
}

/// Bytes sampled (in four slices) to decide whether zstd is worth trying on float data.
const ZSTD_PROBE: usize = 16 * 1024;

/// The zstd level of a float chunk's zstd candidate.
const ZSTD_FLOAT_LEVEL: i32 = 3;

/// What the caller knows about a chunk beyond its value kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hints {
    /// zstd level for [`ValueKind::Bytes`] data.
    pub zstd_level: i32,
    /// Values per row when the chunk holds whole rows of a matrix (one slice along the
    /// tensor's first dimension), else 0. Enables the row-relative exponent transform.
    pub row_len: usize,
    /// Values per kernel when the chunk holds whole kernels of a convolution (the product of
    /// the tensor's dimensions after the first two, when above 1), else 0. Enables the
    /// column-relative exponent transform of [`cols`].
    pub period: usize,
}

/// Encodes one chunk, choosing the smallest of the candidate codecs. `zstd_level` applies to
/// [`ValueKind::Bytes`] data; float data probes zstd at a fast level only when a sample says it
/// may win (long runs, repeated values).
pub fn encode(kind: ValueKind, data: &[u8], zstd_level: i32) -> Encoded {
    encode_with(
        kind,
        data,
        Hints {
            zstd_level,
            row_len: 0,
            period: 0,
        },
    )
}

/// [`encode`] with [`Hints`].
pub fn encode_with(kind: ValueKind, data: &[u8], hints: Hints) -> Encoded {
    encode_within(kind, data, hints, usize::MAX).expect("no size limit")
}

/// The plain float candidate of a chunk: codec 10 or 12 where they apply, else codec 2.
pub(crate) enum FloatPlan {
    Split(split::Plan),
    Rans(split::ans::Plan),
    Huff(float::Plan),
}

impl FloatPlan {
    /// The plan of `data`, from its scan `a`.
    fn new(layout: FloatLayout, a: float::Analysis, data: &[u8]) -> Self {
        if split::supports(layout) {
            let plan = split::best_plan(&a, Some(data));
            match split::ans::plan(&a, &plan) {
                Some(rans) => Self::Rans(rans),
                None => Self::Split(plan),
            }
        } else {
            Self::Huff(a.best_plan())
        }
    }

    pub(crate) fn size(&self) -> usize {
        match self {
            Self::Split(p) => p.size,
            Self::Rans(p) => p.size,
            Self::Huff(p) => p.size,
        }
    }

    /// How far below [`FloatPlan::size`] the payload can come out.
    fn slack(&self) -> usize {
        match self {
            Self::Rans(p) => p.slack,
            Self::Split(_) | Self::Huff(_) => PLAN_SLACK,
        }
    }

    fn entropy_bits(&self) -> f64 {
        match self {
            Self::Split(p) => p.entropy_bits,
            Self::Rans(p) => p.split.entropy_bits,
            Self::Huff(p) => p.entropy_bits,
        }
    }

    pub(crate) fn encode(&self, layout: FloatLayout, data: &[u8]) -> Encoded {
        let (codec, payload) = match self {
            Self::Split(p) => (Codec::FloatSplit, split::encode(layout, data, p)),
            Self::Rans(p) => (Codec::FloatSplitRans, split::ans::encode(layout, data, p)),
            Self::Huff(p) => (Codec::FloatHuff, float::encode(layout, data, p)),
        };
        Encoded {
            codec,
            payload,
            entropy_bits: self.entropy_bits(),
        }
    }
}

/// [`encode_with`] when its payload is at most `limit` bytes, else `None`: what a lossy
/// writer needs to know whether the exact form of a chunk is no larger than its lossy one.
/// The float coder's plan gives its size before anything is coded, so when neither the row
/// transform nor zstd is tried and the plan's size is above `limit`, nothing is coded. A
/// result is always exactly [`encode_with`]'s.
pub fn encode_within(kind: ValueKind, data: &[u8], hints: Hints, limit: usize) -> Option<Encoded> {
    let mut best = match kind {
        ValueKind::Float(layout)
            if data.len().is_multiple_of(layout.bytes()) && !data.is_empty() =>
        {
            encode_float(layout, data, hints, limit)?
        }
        _ => Encoded {
            codec: Codec::Zstd,
            payload: zstd_compress(data, hints.zstd_level),
            entropy_bits: float::entropy(&byte_histogram(data)),
        },
    };
    if best.payload.len() >= data.len() {
        best.codec = Codec::Raw;
        best.payload = data.to_vec();
    }
    (best.payload.len() <= limit).then_some(best)
}

/// Bytes a float payload can come out below its plan's size bound (at most one per code
/// stream, three fields of four streams; with room to spare).
const PLAN_SLACK: usize = 16;

/// The float candidates of a chunk, the smallest kept. `None` only when the plain candidate
/// won, its plan shows it above `limit` and the raw chunk is above `limit` too (so it is not
/// coded).
fn encode_float(layout: FloatLayout, data: &[u8], hints: Hints, limit: usize) -> Option<Encoded> {
    let scan = float::Analysis::new(layout, data);
    if limit < data.len() && bound::exceeds(&scan, data, limit) {
        // Every candidate is provably above `limit`: nothing is planned. Debug builds plan
        // them anyway and check the proof.
        debug_assert!(
            plan_float(layout, scan, data, hints, limit).is_none_or(|e| e.payload.len() > limit),
            "the exact form's lower bound is not one"
        );
        return None;
    }
    plan_float(layout, scan, data, hints, limit)
}

/// [`encode_float`] from the chunk's scan.
fn plan_float(
    layout: FloatLayout,
    scan: float::Analysis,
    data: &[u8],
    hints: Hints,
    limit: usize,
) -> Option<Encoded> {
    let plan = FloatPlan::new(layout, scan, data);
    let mut best: Option<Encoded> = None;
    let mut best_size = plan.size();
    let count = data.len() / layout.bytes();
    if rows::applies(layout, hints.row_len, count)
        && let Some(enc) = rows::encode(layout, data, hints.row_len, best_size)
    {
        best_size = enc.payload.len();
        best = Some(enc);
    }
    if cols::applies(layout, hints.period, count)
        && let Some((payload, entropy_bits)) = cols::encode(layout, data, hints.period, best_size)
    {
        best_size = payload.len();
        best = Some(Encoded {
            codec: Codec::FloatSplitRansCols,
            payload,
            entropy_bits,
        });
    }
    if zstd_may_win(data, best_size) {
        let z = zstd_compress(data, ZSTD_FLOAT_LEVEL);
        if z.len() < best_size {
            best = Some(Encoded {
                codec: Codec::Zstd,
                payload: z,
                entropy_bits: plan.entropy_bits(),
            });
        }
    }
    if best.is_some() {
        return best;
    }
    if plan.size().saturating_sub(plan.slack()) > limit && data.len() > limit {
        return None;
    }
    Some(plan.encode(layout, data))
}

/// Bytes of the sample [`alone_floor`] codes (four slices).
const ALONE_SAMPLE: usize = 32 * 1024;
/// How far below its estimate from a sample a chunk may still code (sampling noise).
const ALONE_MARGIN: f64 = 0.03;
/// Bytes of a sample's payload taken as tables and headers, which a payload carries once
/// (not scaled with the sample).
const ALONE_TABLES: usize = 512;

/// A size that [`encode_with`] is unlikely to bring `data` (a chunk of `kind`, with `hints`)
/// below, from coding four slices of it and scaling, less 3 % (sampling noise); `None` when no
/// sample is taken (chunks below four samples, non-float data, nearly constant chunks). The
/// slices are whole rows and kernels when `hints` name them, so the transforms that use them
/// are tried as on the whole chunk. A delta writer compares its delta with this before it
/// codes the chunk alone, and skips the delta's other variants when they cannot beat it.
pub fn alone_floor(kind: ValueKind, data: &[u8], hints: Hints) -> Option<usize> {
    let ValueKind::Float(layout) = kind else {
        return None;
    };
    let b = layout.bytes();
    let (r, p) = (hints.row_len, hints.period);
    let values = match (r, p) {
        (0, 0) => 1,
        (0, p) => p,
        (r, 0) => r,
        (r, p) if r.is_multiple_of(p) => r,
        (r, p) => r.saturating_mul(p),
    };
    let unit = values.saturating_mul(b);
    let slice = ALONE_SAMPLE / 4 / unit * unit;
    if slice == 0 || data.len() < 4 * ALONE_SAMPLE || !data.len().is_multiple_of(b) {
        return None;
    }
    let sample = sample_of(data, slice, unit);
    let coded = encode_with(kind, &sample, hints).payload.len();
    if coded < ALONE_TABLES * 8 {
        // Tables and headers would dominate the estimate (a nearly constant chunk).
        return None;
    }
    // The tables come once per payload, not once per sample.
    let body = (coded - ALONE_TABLES) as f64;
    let estimate = body * data.len() as f64 / sample.len() as f64 + ALONE_TABLES as f64;
    Some((estimate * (1.0 - ALONE_MARGIN)) as usize)
}

/// The four `slice`-byte ranges a chunk of `len` bytes is sampled by: at its start, a third
/// and two thirds in, and at its end, each starting at a multiple of `unit` (`4 * slice <=
/// len`, and `slice` a multiple of `unit`).
pub(crate) fn sample_ranges(len: usize, slice: usize, unit: usize) -> [std::ops::Range<usize>; 4] {
    std::array::from_fn(|i| {
        let start = (len - slice) * i / 3 / unit * unit;
        start..start + slice
    })
}

/// The bytes of `data` in its four [`sample_ranges`].
fn sample_of(data: &[u8], slice: usize, unit: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 * slice);
    for r in sample_ranges(data.len(), slice, unit) {
        out.extend_from_slice(&data[r]);
    }
    out
}

/// Compresses four slices of the chunk at zstd level 1 and extrapolates.
fn zstd_may_win(data: &[u8], float_size: usize) -> bool {
    if data.len() <= ZSTD_PROBE {
        return zstd_compress(data, 1).len() < float_size;
    }
    zstd_wins_over(zstd_predicted(data), float_size)
}

/// The zstd size of a chunk of more than [`ZSTD_PROBE`] bytes predicted from four slices of
/// it at level 1.
fn zstd_predicted(data: &[u8]) -> f64 {
    let sample = sample_of(data, ZSTD_PROBE / 4, 1);
    let z = zstd_compress(&sample, 1).len() as f64;
    z * data.len() as f64 / sample.len() as f64
}

/// Whether zstd, `predicted` by [`zstd_predicted`], is tried beside a float candidate of
/// `float_size` bytes (never for a larger `predicted`, or a smaller `float_size`).
fn zstd_wins_over(predicted: f64, float_size: usize) -> bool {
    predicted < float_size as f64 * 0.98
}

fn zstd_compress(data: &[u8], level: i32) -> Vec<u8> {
    // Compressing into memory cannot fail for valid levels; fall back to raw on the
    // impossible error so encoding stays infallible.
    zstd_ctx::compress(data, level).unwrap_or_else(|| data.to_vec())
}

fn byte_histogram(data: &[u8]) -> [u64; 256] {
    let mut h = [0u64; 256];
    for &b in data {
        h[usize::from(b)] += 1;
    }
    h
}

/// Decodes `payload` of `codec` into `out`, whose length must be the chunk's raw size. Never
/// writes past `out` and never allocates more than `out.len()` plus small tables. Delta codecs
/// need their base: use [`decode_with_base`].
pub fn decode(codec: Codec, payload: &[u8], out: &mut [u8]) -> Result<(), CodecError> {
    decode_with_base(codec, payload, None, out)
}

/// [`decode`] for any codec: `base` is the same byte range of the base tensor, required by
/// the delta codecs ([`Codec::needs_base`]) and ignored by the others.
pub fn decode_with_base(
    codec: Codec,
    payload: &[u8],
    base: Option<&[u8]>,
    out: &mut [u8],
) -> Result<(), CodecError> {
    let need_base = || base.ok_or(CodecError::Corrupt("a delta chunk outside a delta entry"));
    match codec {
        Codec::Bfp | Codec::BfpContext => bfp::decode_codec(codec, payload, out),
        Codec::Quant | Codec::QuantContext | Codec::QuantRows => {
            quant::decode_codec(codec, payload, out)
        }
        Codec::FloatQuant => fquant::decode(payload, out),
        Codec::Cast => cast::decode(payload, out),
        Codec::Delta => delta::decode(payload, need_base()?, out),
        Codec::QuantDelta => delta::decode_quantized(payload, need_base()?, out),
        Codec::Raw => {
            if payload.len() != out.len() {
                return Err(CodecError::Corrupt(
                    "raw payload size disagrees with chunk size",
                ));
            }
            out.copy_from_slice(payload);
            Ok(())
        }
        Codec::Zstd => {
            let n = zstd::bulk::decompress_to_buffer(payload, out)
                .map_err(|e| CodecError::Zstd(e.to_string()))?;
            if n != out.len() {
                return Err(CodecError::Corrupt("zstd payload shorter than the chunk"));
            }
            Ok(())
        }
        Codec::FloatHuff => float::decode(payload, out),
        Codec::FloatHuffRows => rows::decode(payload, out),
        Codec::FloatSplit => split::decode(payload, out),
        Codec::FloatSplitRows => rows::decode_split(payload, out),
        Codec::FloatSplitRansRows => rows::decode_rans(payload, out),
        Codec::FloatSplitRansCols => cols::decode(payload, out),
        Codec::FloatSplitRans => split::ans::decode(payload, out),
    }
}

/// Deterministic pseudo-random words for the unit tests (xorshift64): the one test generator
/// of the crate.
#[cfg(test)]
pub(crate) fn pseudo_u64(n: usize, seed: u64) -> impl Iterator<Item = u64> {
    let mut x = seed | 1;
    (0..n).map(move |_| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    })
}

/// Checks a decoder on damaged copies of the good payload `enc`: every truncation and one
/// extra byte give an error; flipped bytes never panic.
#[cfg(test)]
pub(crate) fn check_damaged(enc: &[u8], decode: impl FnMut(&[u8]) -> Result<(), CodecError>) {
    check_damaged_every(enc, 1, decode);
}

/// [`check_damaged`] flipping only every `stride`-th byte (for long payloads).
#[cfg(test)]
pub(crate) fn check_damaged_every(
    enc: &[u8],
    stride: usize,
    mut decode: impl FnMut(&[u8]) -> Result<(), CodecError>,
) {
    for cut in 0..enc.len() {
        assert!(decode(&enc[..cut]).is_err(), "cut {cut}");
    }
    let mut longer = enc.to_vec();
    longer.push(0);
    assert!(decode(&longer).is_err());
    for i in (0..enc.len()).step_by(stride.max(1)) {
        for flip in [1u8, 0x80, 0xFF] {
            let mut bad = enc.to_vec();
            bad[i] ^= flip;
            let _ = decode(&bad);
        }
    }
}

/// F32 bit patterns every float codec must restore exactly, for the unit tests: a NaN with a
/// payload, -Inf, +Inf, +0, -0, the smallest subnormal, the largest negative subnormal, 1.0.
#[cfg(test)]
pub(crate) const F32_SPECIALS: [u32; 8] = [
    0x7fc0_0001,
    0xff80_0000,
    0x7f80_0000,
    0,
    0x8000_0000,
    1,
    0x807f_ffff,
    0x3f80_0000,
];

/// `n` little-endian values of `bytes` bytes (2 or 4) whose exponent fields take few values,
/// with one value in `wild` taken from every bit pattern (NaN, ±Inf, zeros and subnormals
/// among them), from [`pseudo_u64`]: inputs for the exponent transforms' tests.
#[cfg(test)]
pub(crate) fn few_exponents(n: usize, bytes: usize, wild: u64, seed: u64) -> Vec<u8> {
    pseudo_u64(n, seed)
        .flat_map(|r| {
            let v = if r % wild == 0 {
                r >> 8
            } else {
                (r >> 40) & 0x0F0F_0F0F
            };
            v.to_le_bytes()[..bytes].to_vec()
        })
        .collect()
}

/// Deterministic pseudo-random bytes for the unit tests: the low bytes of [`pseudo_u64`].
#[cfg(test)]
pub(crate) fn pseudo_bytes(n: usize, seed: u64) -> Vec<u8> {
    pseudo_u64(n, seed).map(|x| x as u8).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_codec_is_rejected() {
        assert_eq!(Codec::from_id(18), Err(CodecError::UnknownCodec(18)));
        assert_eq!(Codec::from_id(17), Ok(Codec::FloatSplitRansRows));
        assert!(Codec::FloatSplitRansRows.is_lossless());
        assert_eq!(Codec::from_id(16), Ok(Codec::FloatSplitRansCols));
        assert!(Codec::FloatSplitRansCols.is_lossless());
        assert_eq!(Codec::from_id(15), Ok(Codec::QuantRows));
        assert!(!Codec::QuantRows.is_lossless());
        assert_eq!(Codec::from_id(14), Ok(Codec::QuantContext));
        assert!(!Codec::QuantContext.is_lossless());
        assert_eq!(Codec::from_id(13), Ok(Codec::BfpContext));
        assert!(!Codec::BfpContext.is_lossless());
        assert_eq!(Codec::from_id(10), Ok(Codec::FloatSplit));
        assert_eq!(Codec::from_id(11), Ok(Codec::FloatSplitRows));
        assert_eq!(Codec::from_id(12), Ok(Codec::FloatSplitRans));
        assert_eq!(Codec::from_id(9), Ok(Codec::FloatQuant));
        assert!(!Codec::FloatQuant.is_lossless());
    }

    #[test]
    fn bytes_round_trip_and_never_grow() {
        for data in [
            vec![],
            vec![7u8],
            (0..=255u8).collect::<Vec<_>>(),
            vec![0u8; 100_000],
        ] {
            let enc = encode(ValueKind::Bytes, &data, 3);
            assert!(enc.payload.len() <= data.len());
            let mut out = vec![0u8; data.len()];
            decode(enc.codec, &enc.payload, &mut out).unwrap();
            assert_eq!(out, data);
        }
    }

    /// Inputs of every kind the lossless writer handles differently: weights (float codec),
    /// rows of different scales (row transform), repeated and zero values (zstd), noise (raw).
    fn within_inputs() -> Vec<(ValueKind, Vec<u8>, Hints)> {
        let hints = |row_len| Hints {
            zstd_level: 3,
            row_len,
            period: 0,
        };
        let mut bits = pseudo_u64(usize::MAX, 0x9E37_79B9_7F4A_7C15);
        let mut next = move || bits.next().expect("endless");
        let mut out = Vec::new();
        for layout in [
            FloatLayout::BF16,
            FloatLayout::F16,
            FloatLayout::F32,
            FloatLayout::F64,
        ] {
            let b = layout.bytes();
            for n in [1usize, 7, 1000, 40_000, 300_000] {
                let weights: Vec<u8> = (0..n)
                    .flat_map(|i| {
                        let r = (next() >> 11) as f64 / (1u64 << 53) as f64 - 0.5;
                        let scale = if (i / 512) % 2 == 0 { 0.02 } else { 3.0 };
                        let v = if b == 8 {
                            (r * scale).to_bits()
                        } else {
                            crate::grid::from_f64(layout, r * scale)
                        };
                        v.to_le_bytes()[..b].to_vec()
                    })
                    .collect();
                out.push((ValueKind::Float(layout), weights.clone(), hints(0)));
                out.push((ValueKind::Float(layout), weights.clone(), hints(512)));
                let repeated: Vec<u8> = weights
                    .chunks(64)
                    .flat_map(|_| weights[..64.min(weights.len())].to_vec())
                    .take(weights.len())
                    .collect();
                out.push((ValueKind::Float(layout), repeated, hints(0)));
                out.push((ValueKind::Float(layout), vec![0u8; n * b], hints(0)));
                let noise: Vec<u8> = (0..n * b).map(|_| next() as u8).collect();
                out.push((ValueKind::Float(layout), noise, hints(64)));
            }
        }
        out.push((
            ValueKind::Bytes,
            (0..5000u32).map(|i| (i % 7) as u8).collect(),
            hints(0),
        ));
        out
    }

    /// Within a limit: exactly `encode_with`'s output when it fits, else nothing.
    #[test]
    fn encode_within_is_encode_with_when_it_fits() {
        for (kind, data, hints) in within_inputs() {
            let e = encode_with(kind, &data, hints);
            let n = e.payload.len();
            for limit in [
                0,
                n / 2,
                n * 9 / 10,
                n.saturating_sub(1),
                n,
                n + 1,
                n + 50,
                usize::MAX,
            ] {
                match encode_within(kind, &data, hints, limit) {
                    Some(w) => {
                        assert!(n <= limit);
                        assert_eq!(
                            (w.codec, &w.payload, w.entropy_bits.to_bits()),
                            (e.codec, &e.payload, e.entropy_bits.to_bits())
                        );
                    }
                    None => assert!(n > limit, "{kind:?} {} limit {limit} size {n}", data.len()),
                }
            }
        }
    }

    /// The sampled floor of a delta writer: on these homogeneous inputs it is at most the
    /// coded size plus 3 %, and above three quarters of it where a sample is taken.
    #[test]
    fn alone_floor_follows_the_coded_size() {
        let mut sampled = 0;
        for (kind, data, hints) in within_inputs() {
            let n = encode_with(kind, &data, hints).payload.len();
            match alone_floor(kind, &data, hints) {
                Some(floor) => {
                    sampled += 1;
                    assert!(data.len() >= 4 * ALONE_SAMPLE);
                    assert!(
                        floor <= n + n / 33,
                        "{kind:?} {} floor {floor} size {n}",
                        data.len()
                    );
                    assert!(
                        floor > n * 3 / 4,
                        "{kind:?} {} floor {floor} size {n}",
                        data.len()
                    );
                }
                None => assert!(
                    data.len() < 4 * ALONE_SAMPLE || n < ALONE_TABLES * 8 * 4,
                    "{kind:?} {} {n}",
                    data.len()
                ),
            }
        }
        assert!(sampled >= 8, "{sampled}");
    }

    /// The four sample slices start on `unit`, stay inside the chunk, do not go backwards,
    /// and cover its start and (when the alignment allows) its end.
    #[test]
    fn sample_ranges_are_aligned_and_inside() {
        for (len, slice, unit) in [
            (64, 16, 1),
            (1000, 200, 8),
            (1 << 20, 8192, 3072),
            (99, 24, 4),
        ] {
            let r = sample_ranges(len, slice, unit);
            assert_eq!(r[0].start, 0);
            for w in r.windows(2) {
                assert!(w[0].start <= w[1].start);
            }
            for x in &r {
                assert_eq!(x.start % unit, 0);
                assert_eq!(x.len(), slice);
                assert!(x.end <= len);
            }
            if (len - slice).is_multiple_of(unit) {
                assert_eq!(r[3].end, len);
            }
        }
    }

    #[test]
    fn constant_float_chunks_take_a_few_bytes() {
        // Codec 10 codes a single symbol with zero bits: smaller than zstd's frame.
        let data = vec![0u8; 1 << 20];
        let enc = encode(ValueKind::Float(FloatLayout::F32), &data, 3);
        assert_eq!(enc.codec, Codec::FloatSplit);
        assert!(enc.payload.len() < 40, "{}", enc.payload.len());
        // F64 stays on codec 2, where zstd wins.
        let enc = encode(ValueKind::Float(FloatLayout::F64), &data, 3);
        assert_eq!(enc.codec, Codec::Zstd);
        assert!(enc.payload.len() < 1000);
    }

    #[test]
    fn wrong_output_size_is_an_error() {
        let data = vec![1u8; 1000];
        let enc = encode(ValueKind::Bytes, &data, 3);
        let mut out = vec![0u8; 999];
        assert!(decode(enc.codec, &enc.payload, &mut out).is_err());
        let mut out = vec![0u8; 1001];
        assert!(decode(enc.codec, &enc.payload, &mut out).is_err());
    }
}
