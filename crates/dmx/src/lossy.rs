//! Lossy compression, only when asked: the settings, the per-tensor choice of encoding
//! (block floating point, aligned integer quantization, a cast to 16 bits, or lossless) and the
//! error of what was stored.
//!
//! Integer modes share one grid step across the tensors of a role: tensors whose names differ
//! only in a layer index ([`crate::names::role_key`]) and that have the same dtype and
//! checkpoint component get the step `max |x| / qmax` over all of them, so every layer of that
//! role sits on the same grid. Tensors under [`OWN_STEP_BELOW`] values get a step of their own.

use std::collections::HashMap;

use dmx_codec::{FloatLayout, ValueKind, bfp, grid};
use dmx_format::{ErrorStats, Lossy, LossyMode, SegmentKind};

use crate::error::{Error, Result};
use crate::plan::PlannedFile;

/// Tensors with fewer values than this get their own quantization step (biases, norms,
/// scalars): sharing would waste their range.
pub const OWN_STEP_BELOW: u64 = 4096;

/// Default BFP magnitude bits.
pub const DEFAULT_MANTISSA_BITS: u32 = 7;
/// Default BFP group size.
pub const DEFAULT_GROUP_SIZE: u32 = 32;

/// How `dmx compress` stores float tensors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Byte-identical (the default).
    #[default]
    Lossless,
    /// Block floating point for BF16, F16 and F32 tensors.
    Bfp,
    /// Aligned integer quantization on a 16-bit grid.
    Int16,
    /// Aligned integer quantization on a 32-bit grid.
    Int32,
    /// Per tensor, the smallest of lossless, BFP and integer grids within
    /// [`LossyOptions::max_rel_error`] (lossless when no budget is given).
    Auto,
}

/// Narrow type for [`LossyOptions::cast`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CastTo {
    /// bfloat16.
    Bf16,
    /// IEEE half.
    F16,
}

/// Lossy settings of a compression run. The default is lossless.
#[derive(Debug, Clone, Default)]
pub struct LossyOptions {
    /// Encoding mode.
    pub mode: Mode,
    /// BFP magnitude bits (`None`: [`DEFAULT_MANTISSA_BITS`], capped at the dtype's maximum).
    pub mantissa_bits: Option<u32>,
    /// BFP group size (`None`: [`DEFAULT_GROUP_SIZE`]).
    pub group_size: Option<u32>,
    /// Largest relative L2 error a tensor may get in [`Mode::Auto`].
    pub max_rel_error: Option<f64>,
    /// Glob patterns of tensor names that stay lossless whatever the mode.
    pub keep_lossless: Vec<String>,
    /// Round F32 tensors to a 16-bit type before coding (restored as F32).
    pub cast: Option<CastTo>,
    /// With [`LossyOptions::cast`]: also cast tensors holding finite values that the narrow
    /// type cannot represent (they become ±Inf). Without it such tensors are stored exactly,
    /// with a warning naming them.
    pub allow_cast_overflow: bool,
}

impl LossyOptions {
    /// Whether these settings can change any value.
    pub fn is_lossless(&self) -> bool {
        self.cast.is_none()
            && (self.mode == Mode::Lossless
                || (self.mode == Mode::Auto && self.max_rel_error.is_none()))
    }

    /// Rejects contradictory or out-of-range settings with a message for the user.
    pub fn check(&self) -> Result<()> {
        let usage = |m: String| Err(Error::Usage(m));
        // The codec's own check, with F32 (the layout with the widest mantissa range; each
        // tensor's bits are capped to its dtype later); the messages add the flag names.
        let p = bfp::Params {
            mantissa_bits: self.mantissa_bits.unwrap_or(DEFAULT_MANTISSA_BITS),
            group_size: self.group_size.unwrap_or(DEFAULT_GROUP_SIZE),
        };
        match bfp::check(FloatLayout::F32, p) {
            Ok(()) => {}
            Err(bfp::ParamError::MantissaBits { got, max }) => {
                return usage(format!(
                    "--mantissa-bits {got}: must be 2..={} for 16-bit tensors, up to {max} for F32",
                    bfp::max_mantissa_bits(FloatLayout::BF16)
                ));
            }
            Err(bfp::ParamError::GroupSize { got }) => {
                return usage(format!(
                    "--group-size {got}: must be 1..={}",
                    bfp::MAX_GROUP
                ));
            }
            Err(e) => return usage(e.to_string()),
        }
        if (self.mantissa_bits.is_some() || self.group_size.is_some())
            && !matches!(self.mode, Mode::Bfp)
        {
            return usage("--mantissa-bits and --group-size apply to --mode bfp".into());
        }
        if let Some(e) = self.max_rel_error {
            if !(e.is_finite() && e >= 0.0) {
                return usage(format!("--max-rel-error {e}: must be a finite number >= 0"));
            }
            if self.mode != Mode::Auto {
                return usage("--max-rel-error applies to --mode auto".into());
            }
        }
        if self.allow_cast_overflow && self.cast.is_none() {
            return usage("--allow-cast-overflow applies to --cast".into());
        }
        if self.cast.is_some() && self.mode != Mode::Lossless {
            return usage("--cast rounds F32 tensors and codes them losslessly; it cannot be combined with --mode".into());
        }
        Ok(())
    }

    pub(crate) fn keep_set(&self) -> Result<globset::GlobSet> {
        let mut b = globset::GlobSetBuilder::new();
        for g in &self.keep_lossless {
            b.add(
                globset::Glob::new(g)
                    .map_err(|e| Error::Usage(format!("--keep-lossless {g:?}: {e}")))?,
            );
        }
        b.build()
            .map_err(|e| Error::Usage(format!("--keep-lossless: {e}")))
    }
}

/// Lossy tensors of an archive or delta and their worst recorded errors: what every lossy
/// summary (`compress`, `delta-compress`, `delta-info`, human and JSON) shows.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LossySummary {
    /// Tensors stored lossily.
    pub lossy_tensors: usize,
    /// The tensor with the largest relative L2 error.
    pub worst_tensor: String,
    /// Its relative L2 error (a number, or the string `"inf"` when infinite).
    #[serde(serialize_with = "json_f64")]
    pub worst_rel_l2: f64,
    /// The largest absolute error of any lossy tensor (a number, or `"inf"`).
    #[serde(serialize_with = "json_f64")]
    pub max_abs_error: f64,
    /// The tensor with that absolute error.
    pub max_abs_tensor: String,
}

impl LossySummary {
    /// The summary of the lossy segments of `index` (`None` when every tensor is exact).
    pub fn of_index(index: &dmx_format::Index) -> Option<Self> {
        let mut out: Option<Self> = None;
        for seg in index.entries.iter().flat_map(|e| &e.segments) {
            let (SegmentKind::Tensor(t), Some(l)) = (&seg.kind, seg.transform.lossy()) else {
                continue;
            };
            let e = &l.error;
            let o = out.get_or_insert_with(|| Self {
                lossy_tensors: 0,
                worst_tensor: t.name.clone(),
                worst_rel_l2: e.rel_l2,
                max_abs_error: e.max_abs,
                max_abs_tensor: t.name.clone(),
            });
            o.lossy_tensors += 1;
            if worse(e.rel_l2, o.worst_rel_l2) {
                o.worst_rel_l2 = e.rel_l2;
                o.worst_tensor = t.name.clone();
            }
            if worse(e.max_abs, o.max_abs_error) {
                o.max_abs_error = e.max_abs;
                o.max_abs_tensor = t.name.clone();
            }
        }
        out
    }

    /// One line for humans: `LOSSY: N tensor(s) ...`.
    pub fn line(&self) -> String {
        format!(
            "LOSSY: {} tensor(s) restore as approximations; worst relative L2 error {} \
             (tensor {:?}), largest absolute error {} (tensor {:?})",
            self.lossy_tensors,
            fmt_err(self.worst_rel_l2),
            self.worst_tensor,
            fmt_err(self.max_abs_error),
            self.max_abs_tensor
        )
    }
}

/// Whether error `a` is worse than `b` (NaN counts as worst).
fn worse(a: f64, b: f64) -> bool {
    a > b || (a.is_nan() && !b.is_nan())
}

/// An error figure for humans: `1.234e-3`, `inf` or `nan`.
pub fn fmt_err(x: f64) -> String {
    if x.is_finite() {
        format!("{x:.3e}")
    } else {
        x.to_string().to_lowercase()
    }
}

/// Serializes a float as a JSON number when finite, else as the string `"inf"`, `"-inf"` or
/// `"nan"` (JSON has no such numbers; `null` would hide them).
pub fn json_f64<S: serde::Serializer>(x: &f64, s: S) -> std::result::Result<S::Ok, S::Error> {
    if x.is_finite() {
        s.serialize_f64(*x)
    } else if x.is_nan() {
        s.serialize_str("nan")
    } else if *x > 0.0 {
        s.serialize_str("inf")
    } else {
        s.serialize_str("-inf")
    }
}

/// [`json_f64`] for optional values (`None` stays `null`: no value).
pub fn json_opt_f64<S: serde::Serializer>(
    x: &Option<f64>,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    match x {
        Some(x) => json_f64(x, s),
        None => s.serialize_none(),
    }
}

/// How one segment is encoded.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Coding {
    /// Byte-identical.
    Lossless,
    /// Block floating point.
    Bfp(bfp::Params),
    /// Integer grid with this step and width.
    Quant { step: f64, bits: u32 },
    /// Rounded to a 16-bit layout.
    Cast(FloatLayout),
    /// Lossless, relative to the base tensor (or standalone, per chunk, when smaller).
    Delta,
    /// On an integer grid, relative to the base tensor (or standalone, per chunk, when
    /// smaller: both decode to the same values).
    QuantDelta { step: f64, bits: u32 },
}

impl Coding {
    pub(crate) fn is_lossless(self) -> bool {
        matches!(self, Coding::Lossless | Coding::Delta)
    }

    /// The next, more precise step of [`Mode::Auto`] for a chunk over its share of the
    /// budget: BFP with one more magnitude bit, else exact.
    pub(crate) fn escalate(self, layout: FloatLayout) -> Coding {
        match self {
            Coding::Bfp(p) if p.mantissa_bits < bfp::max_mantissa_bits(layout) => {
                Coding::Bfp(bfp::Params {
                    mantissa_bits: p.mantissa_bits + 1,
                    ..p
                })
            }
            _ => Coding::Lossless,
        }
    }

    /// The index record of a lossy coding with its measured error.
    pub(crate) fn record(self, error: ErrorStats) -> Option<Lossy> {
        let (mode, mantissa_bits, group_size, step) = match self {
            Coding::Lossless | Coding::Delta => return None,
            Coding::Bfp(p) => (LossyMode::Bfp, p.mantissa_bits as u8, p.group_size, 0.0),
            Coding::Quant { step, bits } | Coding::QuantDelta { step, bits } => (
                if bits == 16 {
                    LossyMode::Int16
                } else {
                    LossyMode::Int32
                },
                0,
                0,
                step,
            ),
            Coding::Cast(l) => (
                if l == FloatLayout::BF16 {
                    LossyMode::CastBf16
                } else {
                    LossyMode::CastF16
                },
                0,
                0,
                0.0,
            ),
        };
        Some(Lossy {
            mode,
            mantissa_bits,
            group_size,
            step,
            error,
        })
    }

    /// Encodes one chunk; `row_len` is the BFP row (last dimension) or 0; `base` is the same
    /// range of the base tensor for the delta codings.
    pub(crate) fn encode(
        self,
        value: ValueKind,
        data: &[u8],
        hints: dmx_codec::Hints,
        bfp_row: usize,
        base: Option<&[u8]>,
    ) -> dmx_codec::Encoded {
        let smaller = |a: dmx_codec::Encoded, b: dmx_codec::Encoded| {
            if b.payload.len() < a.payload.len() {
                b
            } else {
                a
            }
        };
        if let (Coding::Delta, Some(base)) = (self, base) {
            let plain = dmx_codec::encode_with(value, data, hints);
            let (payload, entropy_bits) = dmx_codec::delta::encode(value, base, data);
            return smaller(
                plain,
                dmx_codec::Encoded {
                    codec: dmx_codec::Codec::Delta,
                    payload,
                    entropy_bits,
                },
            );
        }
        let ValueKind::Float(layout) = value else {
            return dmx_codec::encode_with(value, data, hints);
        };
        let (codec, (payload, entropy_bits)) = match self {
            Coding::Lossless | Coding::Delta => {
                return dmx_codec::encode_with(value, data, hints);
            }
            Coding::QuantDelta { step, bits } => {
                let (payload, entropy_bits) = dmx_codec::quant::encode(layout, data, step, bits);
                let alone = dmx_codec::Encoded {
                    codec: dmx_codec::Codec::Quant,
                    payload,
                    entropy_bits,
                };
                match base {
                    None => (alone.codec, (alone.payload, alone.entropy_bits)),
                    Some(base) => {
                        let (payload, entropy_bits) =
                            dmx_codec::delta::encode_quantized(layout, base, data, step, bits);
                        let best = smaller(
                            alone,
                            dmx_codec::Encoded {
                                codec: dmx_codec::Codec::QuantDelta,
                                payload,
                                entropy_bits,
                            },
                        );
                        (best.codec, (best.payload, best.entropy_bits))
                    }
                }
            }
            Coding::Bfp(p) => (dmx_codec::Codec::Bfp, bfp::encode(layout, data, bfp_row, p)),
            Coding::Quant { step, bits } => (
                dmx_codec::Codec::Quant,
                dmx_codec::quant::encode(layout, data, step, bits),
            ),
            Coding::Cast(to) => (
                dmx_codec::Codec::Cast,
                dmx_codec::cast::encode(to, data, hints),
            ),
        };
        if payload.len() >= data.len() {
            // Never larger than the input: such a chunk is stored exactly.
            return dmx_codec::Encoded {
                codec: dmx_codec::Codec::Raw,
                payload: data.to_vec(),
                entropy_bits,
            };
        }
        dmx_codec::Encoded {
            codec,
            payload,
            entropy_bits,
        }
    }
}

/// Running error of decoded values against the originals.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ErrorAcc {
    sum_sq_err: f64,
    sum_sq: f64,
    sum_sq_decoded: f64,
    dot: f64,
    sum_abs_err: f64,
    max_abs: f64,
    count: u64,
    /// Values whose bits are identical (NaN included).
    pub(crate) identical: u64,
    /// Values compared (NaN included).
    pub(crate) values: u64,
}

impl ErrorAcc {
    /// Accumulates the error of `decoded` against `original` (both little-endian `layout`).
    /// Values that are NaN in the original are skipped (they are stored exactly).
    pub(crate) fn add(&mut self, layout: FloatLayout, original: &[u8], decoded: &[u8]) {
        // Monomorphized per layout with a cheap conversion: this runs over every value of
        // every lossy tensor (and of every candidate in auto mode).
        if layout == FloatLayout::BF16 {
            self.add_with::<2>(original, decoded, |r| {
                f64::from(f32::from_bits(u32::from(u16::from_le_bytes(r)) << 16))
            });
        } else if layout == FloatLayout::F16 {
            let lut = f16_table();
            self.add_with::<2>(original, decoded, |r| {
                f64::from(lut[usize::from(u16::from_le_bytes(r))])
            });
        } else if layout == FloatLayout::F32 {
            self.add_with::<4>(original, decoded, |r| f64::from(f32::from_le_bytes(r)));
        } else {
            self.add_with::<8>(original, decoded, f64::from_le_bytes);
        }
    }

    /// The sum of squared errors so far.
    pub(crate) fn sum_sq_err(&self) -> f64 {
        self.sum_sq_err
    }

    #[inline(always)]
    fn add_with<const W: usize>(
        &mut self,
        original: &[u8],
        decoded: &[u8],
        conv: impl Fn([u8; W]) -> f64,
    ) {
        for (a, b) in original.chunks_exact(W).zip(decoded.chunks_exact(W)) {
            let (a, b): ([u8; W], [u8; W]) = (
                a.try_into().expect("chunks_exact"),
                b.try_into().expect("chunks_exact"),
            );
            self.values += 1;
            if a == b {
                self.identical += 1;
            }
            let x = conv(a);
            let y = conv(b);
            if x.is_finite() && y.is_finite() {
                // The common case, straight-line.
                let e = (x - y).abs();
                self.dot += x * y;
                self.sum_sq_decoded += y * y;
                self.sum_sq += x * x;
                self.sum_sq_err += e * e;
                self.sum_abs_err += e;
                if e > self.max_abs {
                    self.max_abs = e;
                }
                self.count += 1;
                continue;
            }
            if x.is_nan() {
                continue;
            }
            if x.is_finite() && y.is_finite() {
                self.dot += x * y;
                self.sum_sq_decoded += y * y;
            }
            let e = if x == y { 0.0 } else { (x - y).abs() };
            let e = if e.is_nan() { f64::INFINITY } else { e };
            if x.is_finite() {
                self.sum_sq += x * x;
            }
            self.sum_sq_err += e * e;
            self.sum_abs_err += e;
            self.max_abs = self.max_abs.max(e);
            self.count += 1;
        }
    }

    pub(crate) fn merge(&mut self, o: &ErrorAcc) {
        self.sum_sq_err += o.sum_sq_err;
        self.sum_sq += o.sum_sq;
        self.sum_sq_decoded += o.sum_sq_decoded;
        self.dot += o.dot;
        self.identical += o.identical;
        self.values += o.values;
        self.sum_abs_err += o.sum_abs_err;
        self.max_abs = self.max_abs.max(o.max_abs);
        self.count += o.count;
    }

    /// Relative L2 error: 0 when exact, +Inf when the original is all zero but the decoded
    /// values are not.
    pub(crate) fn rel_l2(&self) -> f64 {
        if self.sum_sq_err == 0.0 {
            0.0
        } else if self.sum_sq == 0.0 {
            f64::INFINITY
        } else {
            (self.sum_sq_err / self.sum_sq).sqrt()
        }
    }

    /// Cosine similarity of the original and decoded values: 1 when both are all zero, 0 when
    /// only one is.
    pub(crate) fn cosine(&self) -> f64 {
        match (self.sum_sq == 0.0, self.sum_sq_decoded == 0.0) {
            (true, true) => 1.0,
            (true, false) | (false, true) => 0.0,
            (false, false) => {
                (self.dot / (self.sum_sq.sqrt() * self.sum_sq_decoded.sqrt())).clamp(-1.0, 1.0)
            }
        }
    }

    pub(crate) fn stats(&self) -> ErrorStats {
        ErrorStats {
            max_abs: self.max_abs,
            mean_abs: if self.count == 0 {
                0.0
            } else {
                self.sum_abs_err / self.count as f64
            },
            rel_l2: self.rel_l2(),
            snr_db: if self.sum_sq_err == 0.0 {
                f64::INFINITY
            } else {
                10.0 * (self.sum_sq / self.sum_sq_err).log10()
            },
        }
    }
}

/// Every IEEE half value as an `f32` (exact), built once.
fn f16_table() -> &'static [f32] {
    static TABLE: std::sync::OnceLock<Vec<f32>> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        (0..=u16::MAX)
            .map(|b| half::f16::from_bits(b).to_f32())
            .collect()
    })
}

/// Little-endian element bytes as a zero-extended integer.
pub(crate) fn raw(b: &[u8]) -> u64 {
    let mut v = [0u8; 8];
    v[..b.len()].copy_from_slice(b);
    u64::from_le_bytes(v)
}

/// Largest finite magnitude of little-endian `layout` values (0 when none).
pub(crate) fn max_abs(layout: FloatLayout, data: &[u8]) -> f64 {
    // On the bits: for finite values the magnitude orders like its bits without the sign
    // (an integer maximum, which vectorizes).
    #[inline(always)]
    fn max_bits<const W: usize>(
        data: &[u8],
        sign: u32,
        inf: u32,
        load: impl Fn([u8; W]) -> u32,
    ) -> u32 {
        data.chunks_exact(W)
            .map(|c| load(c.try_into().expect("chunks_exact")) & !sign)
            .filter(|&m| m < inf)
            .max()
            .unwrap_or(0)
    }
    if layout == FloatLayout::BF16 || layout == FloatLayout::F16 {
        let inf = if layout == FloatLayout::BF16 {
            0x7f80
        } else {
            0x7c00
        };
        let m = max_bits::<2>(data, 0x8000, inf, |r| u32::from(u16::from_le_bytes(r)));
        return grid::to_f64(layout, u64::from(m));
    }
    if layout == FloatLayout::F32 {
        let m = max_bits::<4>(data, 0x8000_0000, 0x7f80_0000, u32::from_le_bytes);
        return grid::to_f64(layout, u64::from(m));
    }
    let mut m = 0f64;
    for_values(layout, data, |x| {
        if x.is_finite() {
            m = m.max(x.abs());
        }
    });
    m
}

/// The sum of squares of the finite values of little-endian `layout` data (as
/// [`ErrorAcc`] sums the original's norm).
pub(crate) fn sum_sq(layout: FloatLayout, data: &[u8]) -> f64 {
    let mut s = 0f64;
    for_values(layout, data, |x| {
        if x.is_finite() {
            s += x * x;
        }
    });
    s
}

/// Calls `f` with every value of little-endian `layout` data, in order.
fn for_values(layout: FloatLayout, data: &[u8], f: impl FnMut(f64)) {
    #[inline(always)]
    fn each<const W: usize>(data: &[u8], conv: impl Fn([u8; W]) -> f64, mut f: impl FnMut(f64)) {
        for c in data.chunks_exact(W) {
            f(conv(c.try_into().expect("chunks_exact")));
        }
    }
    if layout == FloatLayout::BF16 {
        each::<2>(
            data,
            |r| f64::from(f32::from_bits(u32::from(u16::from_le_bytes(r)) << 16)),
            f,
        );
    } else if layout == FloatLayout::F16 {
        let lut = f16_table();
        each::<2>(
            data,
            |r| f64::from(lut[usize::from(u16::from_le_bytes(r))]),
            f,
        );
    } else if layout == FloatLayout::F32 {
        each::<4>(data, |r| f64::from(f32::from_le_bytes(r)), f);
    } else {
        let w = layout.bytes();
        let mut f = f;
        for c in data.chunks_exact(w) {
            f(grid::to_f64(layout, raw(c)));
        }
    }
}

/// The layouts lossy modes apply to.
pub(crate) fn lossy_layout(value: ValueKind) -> Option<FloatLayout> {
    match value {
        ValueKind::Float(l)
            if l == FloatLayout::BF16 || l == FloatLayout::F16 || l == FloatLayout::F32 =>
        {
            Some(l)
        }
        _ => None,
    }
}

/// The float tensors of a planned file that lossy modes apply to: name, dtype, layout, bytes
/// (`bytes` is the whole file).
pub(crate) fn float_tensors<'a>(
    plan: &'a PlannedFile,
    bytes: &'a [u8],
) -> impl Iterator<Item = (&'a str, &'a str, FloatLayout, &'a [u8])> {
    plan.segments.iter().filter_map(move |s| {
        let SegmentKind::Tensor(t) = &s.kind else {
            return None;
        };
        Some((
            t.name.as_str(),
            t.dtype.as_str(),
            lossy_layout(s.value)?,
            &bytes[s.offset as usize..(s.offset + s.len) as usize],
        ))
    })
}

/// The key of the tensors that share an integer step.
pub(crate) fn step_group(name: &str, dtype: &str, values: u64) -> Option<String> {
    (values >= OWN_STEP_BELOW).then(|| {
        format!(
            "{:?}/{dtype}/{}",
            crate::names::component(name),
            crate::names::role_key(name)
        )
    })
}

/// Integer steps per tensor name for `bits`, shared by role (see the module docs), computed
/// from the data of `files` (`read` gives a tensor's bytes).
pub(crate) fn shared_steps<'a>(
    tensors: impl Iterator<Item = (&'a str, &'a str, FloatLayout, &'a [u8])>,
    bits: u32,
) -> HashMap<String, f64> {
    shared_max(tensors)
        .into_iter()
        .map(|(name, m)| (name, grid::step_for(m, bits)))
        .collect()
}

/// The largest magnitude per tensor name that [`shared_steps`] derives steps from: the
/// maximum over the tensor's role group, or its own.
pub(crate) fn shared_max<'a>(
    tensors: impl Iterator<Item = (&'a str, &'a str, FloatLayout, &'a [u8])>,
) -> HashMap<String, f64> {
    let mut group_max: HashMap<String, f64> = HashMap::new();
    let mut own: Vec<(String, Option<String>, f64)> = Vec::new();
    for (name, dtype, layout, data) in tensors {
        let m = max_abs(layout, data);
        let values = (data.len() / layout.bytes()) as u64;
        let g = step_group(name, dtype, values);
        if let Some(g) = &g {
            let e = group_max.entry(g.clone()).or_insert(0.0);
            *e = e.max(m);
        }
        own.push((name.to_string(), g, m));
    }
    own.into_iter()
        .map(|(name, g, m)| {
            let m = g.and_then(|g| group_max.get(&g).copied()).unwrap_or(m);
            (name, m)
        })
        .collect()
}

/// Per-segment codings of a planned file for a fixed mode (everything but [`Mode::Auto`] with
/// a budget, which needs trial encodings and is decided by the caller).
/// Casts that would turn finite values into ±Inf are replaced by [`Coding::Lossless`] (unless
/// [`LossyOptions::allow_cast_overflow`]) with a warning in `warnings`.
pub(crate) fn fixed_codings(
    file: &PlannedFile,
    bytes: &[u8],
    opts: &LossyOptions,
    warnings: &mut Vec<String>,
) -> Result<Vec<Coding>> {
    let keep = opts.keep_set()?;
    let steps = match opts.mode {
        Mode::Int16 | Mode::Int32 => {
            let bits = if opts.mode == Mode::Int16 { 16 } else { 32 };
            shared_steps(float_tensors(file, bytes), bits)
        }
        _ => HashMap::new(),
    };
    Ok(file
        .segments
        .iter()
        .map(|s| {
            let SegmentKind::Tensor(t) = &s.kind else {
                return Coding::Lossless;
            };
            let Some(layout) = lossy_layout(s.value) else {
                return Coding::Lossless;
            };
            if keep.is_match(&t.name) || s.len == 0 {
                return Coding::Lossless;
            }
            match opts.mode {
                Mode::Lossless | Mode::Auto => match opts.cast {
                    Some(c) if layout == FloatLayout::F32 => {
                        let to = match c {
                            CastTo::Bf16 => FloatLayout::BF16,
                            CastTo::F16 => FloatLayout::F16,
                        };
                        let data = &bytes[s.offset as usize..(s.offset + s.len) as usize];
                        let over = dmx_codec::cast::overflows(to, data);
                        if over > 0 && !opts.allow_cast_overflow {
                            warnings.push(format!(
                                "tensor {:?}: {over} finite value(s) beyond the range of {} \
                                 would become infinite; stored exactly (lossless) instead \
                                 (--allow-cast-overflow casts it anyway)",
                                t.name,
                                cast_name(c)
                            ));
                            Coding::Lossless
                        } else {
                            if over > 0 {
                                warnings.push(format!(
                                    "tensor {:?}: {over} finite value(s) beyond the range of \
                                     {} became infinite (--allow-cast-overflow)",
                                    t.name,
                                    cast_name(c)
                                ));
                            }
                            Coding::Cast(to)
                        }
                    }
                    _ => Coding::Lossless,
                },
                Mode::Bfp => Coding::Bfp(bfp::Params {
                    mantissa_bits: opts
                        .mantissa_bits
                        .unwrap_or(DEFAULT_MANTISSA_BITS)
                        .min(bfp::max_mantissa_bits(layout)),
                    group_size: opts.group_size.unwrap_or(DEFAULT_GROUP_SIZE),
                }),
                Mode::Int16 | Mode::Int32 => Coding::Quant {
                    step: steps.get(&t.name).copied().unwrap_or(1.0),
                    bits: if opts.mode == Mode::Int16 { 16 } else { 32 },
                },
            }
        })
        .collect())
}

fn cast_name(c: CastTo) -> &'static str {
    match c {
        CastTo::Bf16 => "bf16",
        CastTo::F16 => "f16",
    }
}

/// Checks lossy settings against the planned input: refuses `--mantissa-bits` that no float
/// tensor can use (its dtype's maximum is lower), and returns warnings for settings that do
/// nothing or only partly apply: a `--mantissa-bits` some dtypes cap, a `--keep-lossless`
/// pattern that matches no tensor, `--cast` on an input without F32 tensors.
pub(crate) fn plan_warnings(files: &[PlannedFile], opts: &LossyOptions) -> Result<Vec<String>> {
    let keep: Vec<(String, globset::GlobMatcher)> = opts
        .keep_lossless
        .iter()
        .map(|g| {
            globset::Glob::new(g)
                .map(|m| (g.clone(), m.compile_matcher()))
                .map_err(|e| Error::Usage(format!("--keep-lossless {g:?}: {e}")))
        })
        .collect::<Result<_>>()?;
    let mut matched = vec![false; keep.len()];
    let mut layouts: Vec<(FloatLayout, String)> = Vec::new();
    for s in files.iter().flat_map(|f| &f.segments) {
        let SegmentKind::Tensor(t) = &s.kind else {
            continue;
        };
        for (k, (_, m)) in keep.iter().enumerate() {
            matched[k] |= m.is_match(&t.name);
        }
        if let Some(l) = lossy_layout(s.value)
            && !layouts.iter().any(|(x, _)| *x == l)
        {
            layouts.push((l, t.dtype.clone()));
        }
    }
    let mut warnings = Vec::new();
    if opts.is_lossless() && !keep.is_empty() {
        warnings.push(
            "--keep-lossless has no effect without a lossy --mode or --cast: everything is \
             stored losslessly"
                .to_string(),
        );
    }
    for ((g, _), hit) in keep.iter().zip(matched) {
        if !hit {
            warnings.push(format!(
                "--keep-lossless {g:?} matches no tensor of the input; it has no effect"
            ));
        }
    }
    if let Some(c) = opts.cast
        && !layouts.iter().any(|(l, _)| *l == FloatLayout::F32)
    {
        warnings.push(format!(
            "--cast {}: the input has no F32 tensor; nothing was cast",
            cast_name(c)
        ));
    }
    if opts.mode == Mode::Bfp
        && let Some(m) = opts.mantissa_bits
    {
        let capped: Vec<&str> = layouts
            .iter()
            .filter(|(l, _)| bfp::max_mantissa_bits(*l) < m)
            .map(|(_, d)| d.as_str())
            .collect();
        if !layouts.is_empty() && capped.len() == layouts.len() {
            return Err(Error::Usage(format!(
                "--mantissa-bits {m}: no float tensor of the input can use it ({} allow at \
                 most {}); use 2..={}",
                capped.join(", "),
                layouts
                    .iter()
                    .map(|(l, _)| bfp::max_mantissa_bits(*l))
                    .max()
                    .unwrap_or(8),
                layouts
                    .iter()
                    .map(|(l, _)| bfp::max_mantissa_bits(*l))
                    .max()
                    .unwrap_or(8),
            )));
        }
        for (l, d) in layouts
            .iter()
            .filter(|(l, _)| bfp::max_mantissa_bits(*l) < m)
        {
            warnings.push(format!(
                "--mantissa-bits {m}: {d} tensors allow at most {}; they use {} instead",
                bfp::max_mantissa_bits(*l),
                bfp::max_mantissa_bits(*l)
            ));
        }
    }
    Ok(warnings)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_of_exact_and_zero_tensors() {
        let mut e = ErrorAcc::default();
        let z = [0u8; 8];
        e.add(FloatLayout::F32, &z, &z);
        assert_eq!(e.rel_l2(), 0.0);
        assert_eq!(e.stats().snr_db, f64::INFINITY);
        assert_eq!(e.cosine(), 1.0);
        assert_eq!(e.identical, 2);
        let one = 1.0f32.to_le_bytes();
        let mut e = ErrorAcc::default();
        e.add(FloatLayout::F32, &z[..4], &one);
        assert_eq!(e.rel_l2(), f64::INFINITY);
        assert_eq!(e.cosine(), 0.0);
        let mut e = ErrorAcc::default();
        e.add(FloatLayout::F32, &2.0f32.to_le_bytes(), &one);
        assert_eq!(e.rel_l2(), 0.5);
        assert_eq!(e.stats().max_abs, 1.0);
    }

    #[test]
    fn options_are_checked() {
        let mut o = LossyOptions {
            mode: Mode::Bfp,
            mantissa_bits: Some(30),
            ..Default::default()
        };
        assert!(o.check().is_err());
        o.mantissa_bits = Some(4);
        o.check().unwrap();
        o.max_rel_error = Some(0.1);
        assert!(o.check().is_err());
        let o = LossyOptions {
            mode: Mode::Auto,
            ..Default::default()
        };
        assert!(o.is_lossless());
    }

    #[test]
    fn steps_are_shared_by_role() {
        let a: Vec<u8> = [1.0f32; 5000]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        let b: Vec<u8> = [3.0f32; 5000]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        let c: Vec<u8> = [0.5f32; 10].iter().flat_map(|x| x.to_le_bytes()).collect();
        let steps = shared_steps(
            [
                ("h.0.mlp.w", "F32", FloatLayout::F32, &a[..]),
                ("h.1.mlp.w", "F32", FloatLayout::F32, &b[..]),
                ("h.1.mlp.b", "F32", FloatLayout::F32, &c[..]),
            ]
            .into_iter(),
            16,
        );
        assert_eq!(steps["h.0.mlp.w"], steps["h.1.mlp.w"]);
        assert_eq!(steps["h.0.mlp.w"], 3.0 / 32767.0);
        assert_eq!(steps["h.1.mlp.b"], 0.5 / 32767.0);
    }

    #[test]
    fn bfp_ranges_come_from_the_codec_check() {
        let opts = |m: Option<u32>, g: Option<u32>| LossyOptions {
            mode: Mode::Bfp,
            mantissa_bits: m,
            group_size: g,
            ..LossyOptions::default()
        };
        let msg = |o: LossyOptions| match o.check() {
            Err(Error::Usage(m)) => m,
            other => panic!("{other:?}"),
        };
        for (m, g) in [(None, None), (Some(2), Some(1)), (Some(24), Some(4096))] {
            assert!(opts(m, g).check().is_ok(), "{m:?} {g:?}");
        }
        for m in [0, 1, 25] {
            assert_eq!(
                msg(opts(Some(m), None)),
                format!("--mantissa-bits {m}: must be 2..=8 for 16-bit tensors, up to 24 for F32")
            );
        }
        for g in [0, 4097] {
            assert_eq!(
                msg(opts(None, Some(g))),
                format!("--group-size {g}: must be 1..=4096")
            );
        }
        // Mantissa bits are checked first, as before.
        assert!(msg(opts(Some(1), Some(0))).starts_with("--mantissa-bits 1:"));
    }
}
