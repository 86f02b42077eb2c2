//! The column-relative exponent transform over rANS-coded symbols (codec id 16,
//! `FLOAT_SPLIT_RANS_COLS`).
//!
//! In the kernels of a CNN (`[O, I, k, 1]`, `[O, I, 3, 3]`) a tap's scale depends on its
//! place in the kernel: the taps of CREPE's 64-long kernels fall off by binades towards the
//! ends. Replacing every exponent by its difference (modulo `2^E`) from the median exponent
//! of its *column*, the value's position modulo a period `P` (the kernel's size), makes the
//! exponents of the whole chunk cluster, which codec 12's symbol coder turns into fewer
//! bits. Sign and mantissa bits are untouched; the transform is a bijection for any bit
//! pattern (NaN, Inf, zeros and subnormals included).
//!
//! Payload: `u32 period`, `u8 exp_bits`, `u8 bases_codec`, `u32 bases_len`, the per-column
//! bases (one byte each, coded as a chunk of bytes: codec 0 or 1), then a codec-12 payload of
//! the transformed values. See docs/CODECS.md §14.

use crate::float::{self, load};
use crate::rows::{
    HEADER, HeadMessages, field, load16, move_one, read_head, row_delta, store16, write_head,
};
use crate::{CodecError, FloatLayout, split};

/// Largest exponent width the transform handles (bases are stored as bytes).
const MAX_EXP_BITS: u32 = 8;
/// Largest period the writer tries (the reader takes any that divides the chunk).
pub const MAX_PERIOD: usize = 4096;
/// The transform is kept when its estimate saves at least this many bits per value.
const MIN_GAIN: f64 = 0.01;

/// Whether the transform applies to `layout` with columns of period `period` over `count`
/// values: BF16, F16 and F32, a period of 2 to [`MAX_PERIOD`] that divides `count`, and at
/// least 16 values per column.
pub fn applies(layout: FloatLayout, period: usize, count: usize) -> bool {
    layout.exp_bits <= MAX_EXP_BITS
        && matches!(layout.bytes(), 2 | 4)
        && (2..=MAX_PERIOD).contains(&period)
        && count.is_multiple_of(period)
        && count >= 16 * period
}

/// The median exponent of each of the `period` columns of `data` (value `i` in column
/// `i mod period`) from every `stride`-th run of `period` values, and the estimated saving
/// in bits per value of coding exponents relative to them (order-0 exponent entropy of those
/// values before minus after, less the bases' own cost of 8 bits each spread over the chunk).
fn column_bases<const B: usize>(
    layout: FloatLayout,
    data: &[u8],
    period: usize,
    stride: usize,
) -> (Vec<u8>, f64) {
    let (shift, mask) = field(layout);
    let size = 1usize << layout.exp_bits;
    let top = size - 1;
    let mut hist = vec![0u32; period * size];
    let mut plain = vec![0u64; size];
    let runs = data.chunks_exact(period * B).step_by(stride.max(1));
    let mut seen_runs = 0u32;
    for run in runs.clone() {
        seen_runs += 1;
        for (j, v) in run.chunks_exact(B).enumerate() {
            let e = ((load::<B>(v) & mask) >> shift) as usize & top;
            hist[j * size + e] += 1;
            plain[e] += 1;
        }
    }
    let half = seen_runs.div_ceil(2);
    let bases: Vec<u8> = hist
        .chunks_exact(size)
        .map(|h| {
            let mut seen = 0;
            let mut median = 0;
            for (e, &c) in h.iter().enumerate() {
                if seen < half {
                    seen += c;
                    median = e;
                }
            }
            median as u8
        })
        .collect();
    let mut shifted = vec![0u64; size];
    for (h, &b) in hist.chunks_exact(size).zip(&bases) {
        for (e, &c) in h.iter().enumerate() {
            shifted[e.wrapping_sub(usize::from(b)) & top] += u64::from(c);
        }
    }
    let values = (u64::from(seen_runs) * period as u64).max(1) as f64;
    let count = (data.len() / B) as f64;
    let gain =
        (float::entropy(&plain) - float::entropy(&shifted)) / values - 8.0 * period as f64 / count;
    (bases, gain)
}

/// Adds each column's delta (`row_delta` of its base, `forward` or back) to the exponent
/// field of every value of `data`, in place.
fn apply_width<const B: usize>(
    layout: FloatLayout,
    data: &mut [u8],
    period: usize,
    bases: &[u8],
    forward: bool,
) {
    let (_, mask) = field(layout);
    // In the values' own width, as `rows::move_values` (see there why that is exact).
    let deltas: Vec<u32> = bases
        .iter()
        .map(|&b| row_delta(layout, b, forward) as u32)
        .collect();
    crate::cpu::dispatch(
        crate::cpu::Level::detected(),
        #[inline(always)]
        || {
            let m = mask as u32;
            for run in data.chunks_exact_mut(period * B) {
                // 16 values and their 16 deltas at a time, as `rows::move_values`.
                let mut ds = deltas.chunks_exact(16);
                let mut blocks = run.chunks_exact_mut(16 * B);
                for (v, d) in (&mut blocks).zip(&mut ds) {
                    let mut w = [0u32; 16];
                    load16::<B>(v, &mut w);
                    for (w, &d) in w.iter_mut().zip(d) {
                        *w = move_one(*w, m, d);
                    }
                    store16::<B>(&w, v);
                }
                for (v, &d) in blocks
                    .into_remainder()
                    .chunks_exact_mut(B)
                    .zip(ds.remainder())
                {
                    let y = move_one(load::<B>(v) as u32, m, d);
                    v.copy_from_slice(&y.to_le_bytes()[..B]);
                }
            }
        },
    );
}

/// Subtracts (`forward`) or adds back each column's base from the exponent field, in place;
/// `data` holds whole runs of `period` values of `layout` (2 or 4 bytes).
pub fn apply(layout: FloatLayout, data: &mut [u8], period: usize, bases: &[u8], forward: bool) {
    if layout.bytes() == 2 {
        apply_width::<2>(layout, data, period, bases, forward);
    } else {
        apply_width::<4>(layout, data, period, bases, forward);
    }
}

/// Encodes with the transform when a sampled estimate says it pays and the coded result is
/// smaller than `plain_size`; returns the payload and its entropy bound. `layout`, `period`
/// and the value count must satisfy [`applies`].
pub fn encode(
    layout: FloatLayout,
    data: &[u8],
    period: usize,
    plain_size: usize,
) -> Option<(Vec<u8>, f64)> {
    debug_assert!(applies(layout, period, data.len() / layout.bytes()));
    let runs = data.len() / layout.bytes() / period;
    // About 64 runs for the estimate, every run for the bases that are kept.
    let stride = (runs / 64).max(1);
    let estimate = |stride| {
        if layout.bytes() == 2 {
            column_bases::<2>(layout, data, period, stride)
        } else {
            column_bases::<4>(layout, data, period, stride)
        }
    };
    if estimate(stride).1 < MIN_GAIN {
        return None;
    }
    let bases = exact_medians(layout, data, period);
    encode_bases(layout, data, period, &bases, plain_size)
}

/// The median exponent of each column over every run: what [`column_bases`] gives with
/// stride 1, without its estimate, and fast. Its one histogram per column took a cache line
/// per value for long periods (counts of a column lay together, `2^E` apart); here the counts
/// of one exponent lie together, for the exponents the chunk holds only, and every column's
/// median comes out of one pass over them that runs across the columns at vector speed.
fn exact_medians(layout: FloatLayout, data: &[u8], period: usize) -> Vec<u8> {
    let (shift, mask) = field(layout);
    crate::cpu::dispatch(
        crate::cpu::Level::detected(),
        #[inline(always)]
        || {
            if layout.bytes() == 2 {
                exact_medians_width::<2>(data, period, shift, mask as u32)
            } else {
                exact_medians_width::<4>(data, period, shift, mask as u32)
            }
        },
    )
}

#[inline(always)]
fn exact_medians_width<const B: usize>(
    data: &[u8],
    period: usize,
    shift: u32,
    mask: u32,
) -> Vec<u8> {
    let exp = |w: u32| (w & mask) >> shift;
    // The least and greatest exponent of the chunk, 16 values at a time.
    let (mut lo, mut hi) = (u32::MAX, 0u32);
    let mut blocks = data.chunks_exact(16 * B);
    for v in &mut blocks {
        let mut w = [0u32; 16];
        load16::<B>(v, &mut w);
        for w in w {
            lo = lo.min(exp(w));
            hi = hi.max(exp(w));
        }
    }
    for v in blocks.remainder().chunks_exact(B) {
        let e = exp(load::<B>(v) as u32);
        lo = lo.min(e);
        hi = hi.max(e);
    }
    if lo > hi {
        return vec![0; period];
    }
    // `hist[(e − lo) · period + j]`: values of column `j` with exponent `e`.
    let mut hist = vec![0u32; (hi - lo + 1) as usize * period];
    let mut runs = 0u32;
    for run in data.chunks_exact(period * B) {
        runs += 1;
        let mut j = 0;
        let mut blocks = run.chunks_exact(16 * B);
        for v in &mut blocks {
            let mut w = [0u32; 16];
            load16::<B>(v, &mut w);
            for (k, w) in w.into_iter().enumerate() {
                hist[(exp(w) - lo) as usize * period + j + k] += 1;
            }
            j += 16;
        }
        for v in blocks.remainder().chunks_exact(B) {
            hist[(exp(load::<B>(v) as u32) - lo) as usize * period + j] += 1;
            j += 1;
        }
    }
    // A column's median is the least exponent whose count, with those below it, reaches
    // half its runs (rounded up).
    let half = runs.div_ceil(2);
    let mut seen = vec![0u32; period];
    let mut median = vec![lo as u8; period];
    for (e, row) in (lo..=hi).zip(hist.chunks_exact(period)) {
        for ((s, m), &c) in seen.iter_mut().zip(median.iter_mut()).zip(row) {
            let below = *s < half;
            *s += if below { c } else { 0 };
            *m = if below { e as u8 } else { *m };
        }
    }
    median
}

/// The payload of `data` under column `bases` when it is smaller than `plain_size`.
fn encode_bases(
    layout: FloatLayout,
    data: &[u8],
    period: usize,
    bases: &[u8],
    plain_size: usize,
) -> Option<(Vec<u8>, f64)> {
    let mut moved = data.to_vec();
    apply(layout, &mut moved, period, bases, true);
    let a = float::Analysis::new(layout, &moved);
    let plan = split::ans::plan_any(&a, &split::best_plan(&a, Some(&moved)))?;
    let side = crate::encode(crate::ValueKind::Bytes, bases, 3);
    let size = HEADER + side.payload.len() + plan.size;
    if size >= plain_size {
        return None;
    }
    let mut out = Vec::with_capacity(size);
    write_head(&mut out, period, layout, &side);
    out.extend_from_slice(&split::ans::encode(layout, &moved, &plan));
    Some((
        out,
        plan.split.entropy_bits + side.payload.len() as f64 * 8.0,
    ))
}

/// Decodes a payload of [`encode`] into `out` (the chunk's raw length). Never panics;
/// allocates the bases (one byte per column) besides `out`.
pub fn decode(payload: &[u8], out: &mut [u8]) -> Result<(), CodecError> {
    let head = read_head(payload, &MESSAGES)?;
    let (period, layout) = (head.unit, head.layout);
    let run_bytes = period.saturating_mul(layout.bytes());
    if period == 0 || period > out.len() || !out.len().is_multiple_of(run_bytes) {
        return Err(CodecError::Corrupt(
            "column period does not divide the chunk",
        ));
    }
    let bases = head.bases(period)?;
    split::ans::decode(head.inner, out)?;
    apply(layout, out, period, &bases, false);
    Ok(())
}

/// The reader's messages of codec 16.
const MESSAGES: HeadMessages = HeadMessages {
    truncated: "column payload header truncated",
    unknown_side: "column payload names an unknown codec for its bases",
    float_side: "column bases use a float codec",
    side_past: "column bases exceed the payload",
    width: "column payload wraps an unsupported width",
    exp_bits: "column payload has an invalid exponent width",
};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pseudo_bytes as pseudo;

    /// The exact medians against [`column_bases`] at stride 1, for every layout, short and
    /// long periods, and values with NaN, ±Inf, zeros and subnormals among them.
    #[test]
    fn exact_medians_are_column_bases_at_stride_one() {
        for layout in [FloatLayout::BF16, FloatLayout::F16, FloatLayout::F32] {
            let b = layout.bytes();
            for period in [2, 3, 16, 100, 1000, 4096] {
                let runs = 16 + period % 9;
                let seed = 0x0DDB_1A5E_5BAD_5EED ^ period as u64;
                let data = crate::few_exponents(runs * period, b, 7, seed);
                let want = if b == 2 {
                    column_bases::<2>(layout, &data, period, 1).0
                } else {
                    column_bases::<4>(layout, &data, period, 1).0
                };
                let got = exact_medians(layout, &data, period);
                assert_eq!(got, want, "{layout:?} period {period}");
            }
        }
    }

    /// Kernels of `period` taps whose exponents fall by one every `period / 8` taps (2-byte
    /// values with random signs and fractions), in `runs` runs.
    fn tapered(layout: FloatLayout, runs: usize, period: usize) -> Vec<u8> {
        let noise = pseudo(runs * period * 4, 11);
        let f = layout.bits() - 1 - layout.exp_bits;
        let bias = (1u32 << (layout.exp_bits - 1)) - 1;
        let mut out = Vec::new();
        for i in 0..runs * period {
            let r = u32::from_le_bytes([
                noise[4 * i],
                noise[4 * i + 1],
                noise[4 * i + 2],
                noise[4 * i + 3],
            ]);
            let tap = i % period;
            let e = bias - 2 - (tap * 8 / period) as u32 - (r >> 30 & 1);
            let v = (r >> 31) << (layout.bits() - 1) | e << f | (r & ((1 << f) - 1));
            out.extend_from_slice(&v.to_le_bytes()[..layout.bytes()]);
        }
        out
    }

    #[test]
    fn transform_is_a_bijection_on_every_pattern() {
        for layout in [FloatLayout::BF16, FloatLayout::F16, FloatLayout::F32] {
            let data = pseudo(64 * layout.bytes() * 5, 3);
            let bases: Vec<u8> = pseudo(64, 4);
            let mut t = data.clone();
            apply(layout, &mut t, 64, &bases, true);
            assert_ne!(t, data);
            apply(layout, &mut t, 64, &bases, false);
            assert_eq!(t, data);
        }
    }

    #[test]
    fn tapered_kernels_round_trip_and_shrink() {
        for layout in [FloatLayout::BF16, FloatLayout::F16, FloatLayout::F32] {
            for period in [9usize, 64, 512] {
                let data = tapered(layout, 40_000 / period + 16, period);
                let plain = crate::encode(crate::ValueKind::Float(layout), &data, 3);
                let (payload, entropy) = encode(layout, &data, period, usize::MAX)
                    .unwrap_or_else(|| panic!("{layout:?} {period}: no payload"));
                assert!(entropy > 0.0);
                assert!(
                    payload.len() * 100 < plain.payload.len() * 97,
                    "{layout:?} {period}: {} vs {}",
                    payload.len(),
                    plain.payload.len()
                );
                let mut out = vec![0u8; data.len()];
                decode(&payload, &mut out).unwrap();
                assert_eq!(out, data, "{layout:?} {period}");
                // Not smaller than a given size: no payload.
                assert!(encode(layout, &data, period, payload.len()).is_none());
            }
        }
        // No column structure: no payload.
        let flat = pseudo(2 * 64 * 200, 5);
        let flat: Vec<u8> = flat
            .chunks_exact(2)
            .flat_map(|c| (u16::from_le_bytes([c[0], c[1]]) & 0x83FF | 0x3C00).to_le_bytes())
            .collect();
        assert!(encode(FloatLayout::BF16, &flat, 64, usize::MAX).is_none());
        assert!(!applies(FloatLayout::BF16, 1, 1000));
        assert!(!applies(FloatLayout::BF16, 64, 64 * 15));
        assert!(!applies(FloatLayout::BF16, 63, 64 * 100));
        assert!(!applies(FloatLayout::F64, 64, 64 * 100));
    }

    #[test]
    fn special_values_survive() {
        let layout = FloatLayout::BF16;
        let mut data = tapered(layout, 200, 64);
        let specials: [u16; 8] = [0x7fc1, 0xff80, 0x7f80, 0, 0x8000, 1, 0x807f, 0x3f80];
        for (j, s) in specials.iter().enumerate() {
            data[j * 130..j * 130 + 2].copy_from_slice(&s.to_le_bytes());
        }
        let (payload, _) = encode(layout, &data, 64, usize::MAX).unwrap();
        let mut out = vec![0u8; data.len()];
        decode(&payload, &mut out).unwrap();
        assert_eq!(out, data);
    }

    #[test]
    fn corrupt_payloads_error_without_panicking() {
        let layout = FloatLayout::BF16;
        let data = tapered(layout, 70, 64);
        let (payload, _) = encode(layout, &data, 64, usize::MAX).unwrap();
        let mut out = vec![0u8; data.len()];
        crate::check_damaged(&payload, |p| decode(p, &mut out));
        for (at, value, message) in [
            (0usize, 0u8, "column period does not divide the chunk"),
            (0, 63, "column period does not divide the chunk"),
            (4, 0, "column payload has an invalid exponent width"),
            (4, 9, "column payload has an invalid exponent width"),
            (5, 2, "column bases use a float codec"),
            (
                5,
                200,
                "column payload names an unknown codec for its bases",
            ),
        ] {
            let mut bad = payload.clone();
            bad[at] = value;
            assert_eq!(
                decode(&bad, &mut out),
                Err(CodecError::Corrupt(message)),
                "byte {at} = {value}"
            );
        }
        let mut bad = payload.clone();
        bad[0..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode(&bad, &mut out).is_err());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(300))]
        /// Random payloads behind a plausible header (a period dividing the output, raw
        /// bases, a 2-byte inner width) never panic.
        #[test]
        fn random_payloads_never_panic(
            seed in proptest::prelude::any::<u64>(),
            len in 0usize..600,
            period in 1u32..40,
            runs in 1usize..20,
        ) {
            let mut payload = pseudo(len + HEADER + 8, seed);
            payload[0..4].copy_from_slice(&period.to_le_bytes());
            payload[4] = 8;
            payload[5] = 0;
            payload[6..10].copy_from_slice(&period.to_le_bytes());
            if let Some(b) = payload.get_mut(HEADER + period as usize) {
                *b = 2;
            }
            let mut out = vec![0u8; 2 * period as usize * runs];
            let _ = decode(&payload, &mut out);
        }
    }
}
