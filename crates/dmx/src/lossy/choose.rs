//! The per-tensor codings of fixed lossy modes, and the checks of lossy settings against
//! the planned input.

use dmx_codec::{FloatLayout, bfp};
use dmx_format::SegmentKind;
use rayon::prelude::*;

use super::values::lossy_layout;
use super::{CastTo, Coding, DEFAULT_GROUP_SIZE, DEFAULT_MANTISSA_BITS, LossyOptions, Mode};
use crate::compress::SegmentData;
use crate::error::{Error, Result};
use crate::plan::PlannedFile;

/// Per-segment codings of a planned file for a fixed mode (everything but [`Mode::Auto`] with
/// a budget, which needs trial encodings and is decided by the caller).
/// Casts that would turn finite values into ±Inf are replaced by [`Coding::Lossless`] (unless
/// [`LossyOptions::allow_cast_overflow`]) with a warning in `warnings`; half casts that would
/// restore non-zero values of a variance, an optimizer moment or a tensor over many binades
/// as 0 become bfloat16 casts ([`cast_keeping_small_values`]).
///
/// The tensors are looked at in parallel (a pass over each for its range, on the worker
/// threads of the caller's pool); the warnings come out in tensor order.
pub(crate) fn fixed_codings(
    file: &PlannedFile,
    bytes: &(impl SegmentData + Sync + ?Sized),
    opts: &LossyOptions,
    warnings: &mut Vec<String>,
) -> Result<Vec<Coding>> {
    let keep = opts.keep_set()?;
    let shared = match opts.mode {
        Mode::Int16 | Mode::Int32 if opts.shared_grids => {
            let bits = if opts.mode == Mode::Int16 { 16 } else { 32 };
            super::shared_steps(super::float_tensors(file, bytes), bits)
        }
        _ => std::collections::HashMap::new(),
    };
    let per_segment: Vec<(Coding, Vec<String>)> = file
        .segments
        .par_iter()
        .map(|s| {
            let mut warnings = Vec::new();
            let coding = segment_coding(s, bytes, opts, &keep, &shared, &mut warnings);
            (coding, warnings)
        })
        .collect();
    let mut codings = Vec::with_capacity(per_segment.len());
    for (coding, w) in per_segment {
        codings.push(coding);
        warnings.extend(w);
    }
    Ok(codings)
}

/// [`fixed_codings`]'s choice for one segment.
fn segment_coding(
    s: &crate::plan::PlannedSegment,
    bytes: &(impl SegmentData + ?Sized),
    opts: &LossyOptions,
    keep: &globset::GlobSet,
    shared: &std::collections::HashMap<String, f64>,
    warnings: &mut Vec<String>,
) -> Coding {
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
                let data = bytes.segment_data(s).unwrap_or_default();
                let over = dmx_codec::cast::overflows(to, data);
                if over > 0 && !opts.allow_cast_overflow {
                    warnings.push(format!(
                        "tensor {:?}: {over} finite value(s) beyond the range of {} \
                         would become infinite; stored exactly (lossless) instead \
                         (--allow-cast-overflow casts it anyway)",
                        t.name,
                        c.name()
                    ));
                    Coding::Lossless
                } else {
                    if over > 0 {
                        warnings.push(format!(
                            "tensor {:?}: {over} finite value(s) beyond the range of \
                             {} became infinite (--allow-cast-overflow)",
                            t.name,
                            c.name()
                        ));
                    }
                    cast_keeping_small_values(&t.name, to, data, warnings)
                }
            }
            _ => Coding::Lossless,
        },
        Mode::Bfp => {
            let data = bytes.segment_data(s).unwrap_or_default();
            let p = bfp::Params {
                mantissa_bits: opts
                    .mantissa_bits
                    .unwrap_or(DEFAULT_MANTISSA_BITS)
                    .min(bfp::max_mantissa_bits(layout)),
                group_size: opts.group_size.unwrap_or(DEFAULT_GROUP_SIZE),
            };
            bfp_coding(&t.name, super::spans_binades(&t.name, layout, data), p)
        }
        Mode::Int16 | Mode::Int32 => {
            let bits = if opts.mode == Mode::Int16 { 16 } else { 32 };
            let data = bytes.segment_data(s).unwrap_or_default();
            let grid = match shared.get(&t.name) {
                Some(&step) => super::grid_with_step(&t.name, layout, data, bits, step),
                None => super::own_grid(&t.name, layout, data, bits),
            };
            Coding::Quant { grid, bits }
        }
    }
}

/// The BFP coding at `p` of tensor `name`, `spans` telling whether it is a variance, a moment
/// or values over many binades ([`super::spans_binades`]): a shared exponent would flush such
/// a tensor's small values to 0 (a running variance of 0 makes a batch norm divide by √ε, and
/// the relative L2 error, held by the large values, would not show it), so each value keeps
/// its own exponent. Optimizer moments then give up one bit where plain BFP's error at (M, G)
/// allows it (training resumes on them, within 2^(1−M) of each value); a model's own tensors
/// keep M. What `--mode bfp` and `auto`'s BFP candidates use.
pub(crate) fn bfp_coding(name: &str, spans: bool, p: bfp::Params) -> Coding {
    if !spans {
        Coding::Bfp(p)
    } else if super::optimizer_moment(name) {
        Coding::BfpOwn(p)
    } else {
        Coding::Bfp(bfp::Params { group_size: 1, ..p })
    }
}

/// How many non-zero values of F32 tensor `name` a half cast would restore as 0, counted only
/// where they matter (a tensor [`super::spans_binades`]: an Adam second moment below half's
/// range, about 3e-8, is not negligible beside ε); 0 elsewhere.
pub(crate) fn half_zeroes(name: &str, data: &[u8]) -> u64 {
    let lost = dmx_codec::cast::underflows(FloatLayout::F16, data);
    if lost == 0 || !super::spans_binades(name, FloatLayout::F32, data) {
        0
    } else {
        lost
    }
}

/// The cast of F32 tensor `name` to `to`, unless it is half and would restore non-zero values
/// as 0 in a tensor whose small values matter ([`super::spans_binades`]: a running variance
/// of 0 makes a batch norm divide by √ε, an Adam second moment below half's range, about
/// 3e-8, is not negligible beside ε). Such a tensor is cast to bfloat16 instead (F32's
/// exponent range, the same 16 bits a value, relative error at most 2⁻⁸; only F32 subnormals
/// below 4.6e-41 still become 0, as in any bfloat16 cast), or stored exactly when bfloat16
/// would overflow, with a warning.
fn cast_keeping_small_values(
    name: &str,
    to: FloatLayout,
    data: &[u8],
    warnings: &mut Vec<String>,
) -> Coding {
    let lost = if to == FloatLayout::F16 {
        half_zeroes(name, data)
    } else {
        0
    };
    if lost == 0 {
        return Coding::Cast(to);
    }
    let bf16 = dmx_codec::cast::overflows(FloatLayout::BF16, data) == 0;
    warnings.push(format!(
        "tensor {name:?}: {lost} non-zero value(s) would become 0 in f16 (a variance, an \
         optimizer moment or values over many binades, whose small values matter); {}",
        if bf16 {
            "cast to bf16 instead"
        } else {
            "stored exactly (lossless) instead"
        }
    ));
    if bf16 {
        Coding::Cast(FloatLayout::BF16)
    } else {
        Coding::Lossless
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
                .map_err(|e| Error::option("keep_lossless", format!("{g:?}"), e))
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
            c.name()
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
            return Err(Error::option(
                "mantissa_bits",
                m,
                format!(
                    "no float tensor of the input can use it ({} allow at \
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
                ),
            ));
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
