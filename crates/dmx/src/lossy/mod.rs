//! Lossy compression, only when asked: the settings, the per-tensor choice of encoding
//! (block floating point, aligned integer quantization, a cast to 16 bits, or lossless) and the
//! error of what was stored.
//!
//! Integer modes put each tensor of a single file on a grid of its own (step `max |x| / qmax`:
//! the smallest error for the width). Deltas and chains need values to keep their integer
//! coordinates from one file to the next, so there the tensors of a role share one step:
//! tensors whose names differ only in a layer index ([`crate::names::role_key`]) and that have
//! the same dtype and checkpoint component get the step `max |x| / qmax` over all of them (and
//! over the base), so every layer of that role sits on the same grid. Tensors under
//! [`OWN_STEP_BELOW`] values get a step of their own.

mod choose;
mod coding;
mod grid;
mod measure;
mod sample;
mod values;

use dmx_codec::{FloatLayout, bfp};
use dmx_format::SegmentKind;

use crate::error::{Error, Result};

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

impl Mode {
    /// Every mode, in the order its names are listed.
    pub const ALL: [Mode; 5] = [
        Mode::Lossless,
        Mode::Bfp,
        Mode::Int16,
        Mode::Int32,
        Mode::Auto,
    ];

    /// The name the CLI and the Python package spell it with (`"bfp"`).
    pub fn name(self) -> &'static str {
        match self {
            Mode::Lossless => "lossless",
            Mode::Bfp => "bfp",
            Mode::Int16 => "int16",
            Mode::Int32 => "int32",
            Mode::Auto => "auto",
        }
    }

    /// The mode named `name` ([`Mode::name`]), if any.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.name() == name)
    }
}

/// Narrow type for [`LossyOptions::cast`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CastTo {
    /// bfloat16.
    Bf16,
    /// IEEE half.
    F16,
}

impl CastTo {
    /// Both narrow types, in the order their names are listed.
    pub const ALL: [CastTo; 2] = [CastTo::Bf16, CastTo::F16];

    /// The name the CLI and the Python package spell it with (`"bf16"`).
    pub fn name(self) -> &'static str {
        match self {
            CastTo::Bf16 => "bf16",
            CastTo::F16 => "f16",
        }
    }

    /// The type named `name` ([`CastTo::name`]), if any.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.name() == name)
    }
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
    /// Integer modes: the tensors of a role share one linear grid step (as in deltas and
    /// chains, which set it for their anchors) instead of each tensor getting its own. Tensors
    /// that take the floating grid are unaffected.
    pub shared_grids: bool,
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
        // The codec's own check, with F32 (the layout with the widest mantissa range; each
        // tensor's bits are capped to its dtype later); the messages add the flag names.
        let p = bfp::Params {
            mantissa_bits: self.mantissa_bits.unwrap_or(DEFAULT_MANTISSA_BITS),
            group_size: self.group_size.unwrap_or(DEFAULT_GROUP_SIZE),
        };
        match bfp::check(FloatLayout::F32, p) {
            Ok(()) => {}
            Err(bfp::ParamError::MantissaBits { got, max }) => {
                return Err(Error::option(
                    "mantissa_bits",
                    got,
                    format!(
                        "must be 2..={} for 16-bit tensors, up to {max} for F32",
                        bfp::max_mantissa_bits(FloatLayout::BF16)
                    ),
                ));
            }
            Err(bfp::ParamError::GroupSize { got }) => {
                return Err(Error::option(
                    "group_size",
                    got,
                    format!("must be 1..={}", bfp::MAX_GROUP),
                ));
            }
            Err(e) => return Err(Error::InvalidArgument(e.to_string())),
        }
        if !matches!(self.mode, Mode::Bfp) {
            if let Some(m) = self.mantissa_bits {
                return Err(Error::option(
                    "mantissa_bits",
                    m,
                    "applies only to mode bfp",
                ));
            }
            if let Some(g) = self.group_size {
                return Err(Error::option("group_size", g, "applies only to mode bfp"));
            }
        }
        if let Some(e) = self.max_rel_error {
            if !(e.is_finite() && e >= 0.0) {
                return Err(Error::option(
                    "max_rel_error",
                    e,
                    "must be a finite number >= 0",
                ));
            }
            if self.mode != Mode::Auto {
                return Err(Error::option(
                    "max_rel_error",
                    e,
                    "applies only to mode auto",
                ));
            }
        }
        if self.shared_grids && !matches!(self.mode, Mode::Int16 | Mode::Int32) {
            return Err(Error::option(
                "shared_grids",
                true,
                "applies only to modes int16 and int32",
            ));
        }
        if self.allow_cast_overflow && self.cast.is_none() {
            return Err(Error::option(
                "allow_cast_overflow",
                true,
                "applies only with cast",
            ));
        }
        if let Some(c) = self.cast
            && self.mode != Mode::Lossless
        {
            return Err(Error::option(
                "cast",
                c.name(),
                "rounds F32 tensors and codes them losslessly; it cannot be combined with a \
                 lossy mode",
            ));
        }
        Ok(())
    }

    pub(crate) fn keep_set(&self) -> Result<globset::GlobSet> {
        let mut b = globset::GlobSetBuilder::new();
        for g in &self.keep_lossless {
            b.add(
                globset::Glob::new(g)
                    .map_err(|e| Error::option("keep_lossless", format!("{g:?}"), e))?,
            );
        }
        b.build()
            .map_err(|e| Error::InvalidArgument(format!("keep_lossless: {e}")))
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

pub(crate) use choose::{bfp_coding, fixed_codings, half_zeroes, plan_warnings};
pub(crate) use coding::{Coding, LossyChunk};
pub use grid::Grid;
pub(crate) use grid::{float_bits, grid_with_step, optimizer_moment, own_grid, spans_binades};
pub(crate) use measure::ErrorAcc;
pub(crate) use sample::exact_by_sample;
pub(crate) use values::{float_tensors, lossy_layout, raw, shared_steps, sum_sq};

#[cfg(test)]
mod tests {
    use super::*;

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

    /// Names and values map one to one, for modes, cast types and delta precisions.
    #[test]
    fn names_round_trip() {
        for m in Mode::ALL {
            assert_eq!(Mode::from_name(m.name()), Some(m));
        }
        for c in CastTo::ALL {
            assert_eq!(CastTo::from_name(c.name()), Some(c));
        }
        for p in crate::Precision::ALL {
            assert_eq!(crate::Precision::from_name(p.name()), Some(p));
        }
        assert_eq!(Mode::from_name("BFP"), None);
        assert_eq!(CastTo::from_name("fp16"), None);
        assert_eq!(crate::Precision::from_name(""), None);
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
            Err(e @ Error::InvalidOption { .. }) => e.to_string(),
            other => panic!("{other:?}"),
        };
        for (m, g) in [(None, None), (Some(2), Some(1)), (Some(24), Some(4096))] {
            assert!(opts(m, g).check().is_ok(), "{m:?} {g:?}");
        }
        for m in [0, 1, 25] {
            assert_eq!(
                msg(opts(Some(m), None)),
                format!("mantissa_bits={m}: must be 2..=8 for 16-bit tensors, up to 24 for F32")
            );
        }
        for g in [0, 4097] {
            assert_eq!(
                msg(opts(None, Some(g))),
                format!("group_size={g}: must be 1..=4096")
            );
        }
        // Mantissa bits are checked first, as before.
        assert!(msg(opts(Some(1), Some(0))).starts_with("mantissa_bits=1:"));
    }
}
