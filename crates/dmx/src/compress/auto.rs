//! `Mode::Auto` with a budget: per tensor, the smallest coding whose relative L2 error
//! stays within [`LossyOptions::max_rel_error`], chosen on a sample.

use rayon::prelude::*;

use super::encode::{Job, run_job};
use super::source::{SegmentData, Source};
use crate::error::Result;
use crate::lossy::{Coding, LossyOptions};
use crate::plan::{PlannedFile, PlannedSegment};

/// Values `Mode::Auto` samples from a tensor to choose its coding (at most; at least an
/// eighth of a large tensor is sampled down to [`AUTO_SAMPLE_MIN`]).
const AUTO_SAMPLE: usize = 1 << 16;
/// Tensors up to this many values are measured whole in `Mode::Auto`.
const AUTO_SAMPLE_MIN: usize = 1 << 14;

/// A sample of a tensor's `data` for `Mode::Auto`: the whole tensor when small, else evenly
/// spaced blocks of 4096 values (a multiple of the BFP group size, so the sample's groups are
/// groups of the whole tensor).
fn auto_sample(data: &[u8], layout: dmx_codec::FloatLayout) -> std::borrow::Cow<'_, [u8]> {
    const BLOCK: usize = 4096;
    let w = layout.bytes();
    let n = data.len() / w;
    let target = (n / 8).clamp(AUTO_SAMPLE_MIN, AUTO_SAMPLE);
    if n <= 2 * target || n / BLOCK < 2 {
        return std::borrow::Cow::Borrowed(data);
    }
    let blocks_total = n / BLOCK;
    let k = (target / BLOCK).clamp(1, blocks_total);
    let mut out = Vec::with_capacity(k * BLOCK * w);
    for i in 0..k {
        let b = i * blocks_total / k;
        out.extend_from_slice(&data[b * BLOCK * w..(b + 1) * BLOCK * w]);
    }
    std::borrow::Cow::Owned(out)
}

/// Per segment, the smallest coding whose relative L2 error is within `budget`, and the
/// largest sum of squared errors it may reach (its allowance).
///
/// The choice is made on a sample ([`auto_sample`]): the smallest BFP `M` within budget is
/// searched (the error roughly halves per bit, and falls as `M` grows), the other candidates
/// are measured, and the smallest within budget wins.
/// [`encode_entry_budgeted`](super::encode::encode_entry_budgeted) then holds the budget
/// exactly: a chunk that would push the tensor's measured error past it is coded again one
/// step more precisely ([`Coding::escalate`]), up to exactly.
pub(super) fn auto_codings(
    file: &PlannedFile,
    bytes: &Source<'_>,
    lossy: &LossyOptions,
    budget: f64,
    opts: &crate::Options,
    warnings: &mut Vec<String>,
) -> Result<(Vec<Coding>, Vec<Option<f64>>)> {
    let fixed = crate::lossy::fixed_codings(file, bytes, lossy, warnings)?;

    let keep = lossy.keep_set()?;
    let chosen = file
        .segments
        .par_iter()
        .zip(fixed)
        .map(|(seg, fixed)| {
            opts.check_cancel()?;
            let (dmx_format::SegmentKind::Tensor(t), Some(layout)) =
                (&seg.kind, crate::lossy::lossy_layout(seg.value))
            else {
                return Ok((fixed, None));
            };
            if seg.len == 0 || keep.is_match(&t.name) {
                return Ok((fixed, None));
            }
            let data = bytes.segment_data(seg).ok_or_else(|| bytes.missing(seg))?;
            let best = auto_choose(seg, &t.name, data, layout, budget, opts)?;
            if best.is_lossless() {
                return Ok((best, None));
            }
            // A hair under the budget: the recorded error is summed in another order.
            let allowance = budget * budget * crate::lossy::sum_sq(layout, data) * (1.0 - 1e-9);
            Ok((best, Some(allowance)))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(chosen.into_iter().unzip())
}

/// The coding [`auto_codings`] picks for tensor `name` (all its values in `data`) from its
/// sample; its integer grids are those of single files ([`crate::lossy::own_grid`]).
fn auto_choose(
    seg: &PlannedSegment,
    name: &str,
    data: &[u8],
    layout: dmx_codec::FloatLayout,
    budget: f64,
    opts: &crate::Options,
) -> Result<Coding> {
    let hints = seg.hints();
    let sample = auto_sample(data, layout);
    let measure = |c: Coding| -> Result<(usize, f64)> {
        // Each trial encodes a sample of up to a few MiB: a cancel stops between trials.
        opts.check_cancel()?;
        let d = run_job(&Job {
            segment: 0,
            data: &sample,
            value: seg.value,
            hints,
            coding: c,
            base: None,
            never_larger: false,
        })?;
        let rel = d.lossy.as_ref().map_or(0.0, |(_, a)| a.rel_l2());
        Ok((d.enc.payload.len(), rel))
    };
    let mut best = Coding::Lossless;
    let (mut best_size, _) = measure(Coding::Lossless)?;
    // As `--mode bfp` codes it (variances and moments keep an exponent per value).
    let spans = crate::lossy::spans_binades(name, layout, data);
    let bfp_at = |m: u32| {
        crate::lossy::bfp_coding(
            name,
            spans,
            dmx_codec::bfp::Params {
                mantissa_bits: m,
                group_size: crate::lossy::DEFAULT_GROUP_SIZE,
            },
        )
    };
    // The smallest M within budget: start at a guess, then jump by the measured error
    // ratio (one bit halves it) inside the bracket [lo_fail + 1, hi_ok - 1] of unknown M.
    let max_m = dmx_codec::bfp::max_mantissa_bits(layout);
    let (mut lo_fail, mut hi_ok) = (1u32, max_m + 1);
    let mut hi_size = 0;
    // BFP's relative L2 error is near 2^-M for weight-like data: start there.
    let mut m = ((1.0 / budget).log2().round()).clamp(2.0, f64::from(max_m)) as u32;
    while lo_fail + 1 < hi_ok {
        let (size, rel) = measure(bfp_at(m))?;
        let ratio = rel / budget;
        let guess = if rel <= budget {
            hi_ok = m;
            hi_size = size;
            if rel == 0.0 {
                f64::from(lo_fail + 1)
            } else {
                f64::from(m) - (1.0 / ratio).log2().floor()
            }
        } else {
            lo_fail = m;
            if ratio.is_finite() {
                f64::from(m) + ratio.log2().ceil()
            } else {
                f64::from(m) + 1.0
            }
        };
        if lo_fail + 1 >= hi_ok {
            break;
        }
        m = (guess.clamp(f64::from(lo_fail + 1), f64::from(hi_ok - 1))) as u32;
    }
    if hi_ok <= max_m && hi_size < best_size {
        best = bfp_at(hi_ok);
        best_size = hi_size;
    }
    let mut others = vec![Coding::Quant {
        grid: crate::lossy::own_grid(name, layout, data, 16),
        bits: 16,
    }];
    if layout == dmx_codec::FloatLayout::F32 {
        others.push(Coding::Quant {
            grid: crate::lossy::own_grid(name, layout, data, 32),
            bits: 32,
        });
        others.push(Coding::Cast(dmx_codec::FloatLayout::BF16));
        // Not where half would restore small values that matter as 0.
        if crate::lossy::half_zeroes(name, data) == 0 {
            others.push(Coding::Cast(dmx_codec::FloatLayout::F16));
        }
    }
    for c in others {
        let (size, rel) = measure(c)?;
        if rel <= budget && size < best_size {
            best = c;
            best_size = size;
        }
    }
    Ok(best)
}
