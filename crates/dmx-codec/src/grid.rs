//! The aligned integer grid shared by lossy quantization (`quant`) and quantized deltas
//! (`delta`): a value `x` maps to the integer `q = round_half_even(x / step)` when `x` is
//! finite and `|q| <= qmax(bits)`; otherwise it is not representable and is stored exactly
//! (an escape). A grid point decodes to `q * step`, computed in `f64` and rounded once to the
//! tensor's dtype (round to nearest even). Both directions are pure functions of the value
//! bits and the step, so every encoder and decoder agrees bit for bit.

use crate::FloatLayout;

/// Largest integer magnitude on a grid of `bits` bits (`2^(bits-1) - 1`: the range is
/// symmetric, so negation never overflows).
pub fn qmax(bits: u32) -> i64 {
    (1i64 << (bits - 1)) - 1
}

/// The grid step that maps `max_abs` to `qmax(bits)`; 1.0 when `max_abs` is zero or not finite
/// (a tensor of zeros quantizes exactly on any step).
pub fn step_for(max_abs: f64, bits: u32) -> f64 {
    if max_abs.is_finite() && max_abs > 0.0 {
        max_abs / qmax(bits) as f64
    } else {
        1.0
    }
}

/// The value of the little-endian element `bits_le` (the raw bits, zero-extended) of `layout`
/// as an `f64`. Supports BF16, F16, F32 and F64.
#[inline]
pub fn to_f64(layout: FloatLayout, raw: u64) -> f64 {
    match (layout.bytes, layout.exp_bits) {
        (2, 8) => f64::from(half::bf16::from_bits(raw as u16)),
        (2, 5) => f64::from(half::f16::from_bits(raw as u16)),
        (4, _) => f64::from(f32::from_bits(raw as u32)),
        (8, _) => f64::from_bits(raw),
        _ => f64::NAN,
    }
}

/// `x` rounded to nearest even into `layout`, as raw bits (inverse of [`to_f64`]). Rounded
/// once, exactly: 16-bit layouts go through `f32` rounded to odd, which has enough extra bits
/// for the second rounding to be correct, the same on every machine.
#[inline]
pub fn from_f64(layout: FloatLayout, x: f64) -> u64 {
    match (layout.bytes, layout.exp_bits) {
        (2, 8) => u64::from(round16::<8>(x)),
        (2, 5) => u64::from(round16::<5>(x)),
        (4, _) => u64::from((x as f32).to_bits()),
        (8, _) => x.to_bits(),
        _ => 0,
    }
}

/// `x` rounded to nearest even into the 16-bit layout with `E` exponent bits (8: BF16, 5:
/// F16), as raw bits. Results that are normal numbers of the layout are rounded on the
/// `f64` bits directly (adding half an ulp of the target, less one unless the kept lowest
/// bit is odd, then cutting: round half to even, carries into the exponent included);
/// subnormal, overflowing and non-finite results take the slower path through `f32`
/// rounded to odd. Both give the same bits (tested on every case).
#[inline(always)]
pub(crate) fn round16<const E: u32>(x: f64) -> u16 {
    // Fraction bits of the target, the f64 bits below them, and the exponent range whose
    // results are normal.
    let frac = 15 - E;
    let cut = 52 - frac;
    let bias = (1i64 << (E - 1)) - 1;
    let b = x.to_bits();
    // On the magnitude, which cannot overflow; a non-finite one lands beyond the range.
    let m = b & !(1u64 << 63);
    let r = m + ((1u64 << (cut - 1)) - 1) + ((m >> cut) & 1);
    // The exponent after rounding, rebased to the target's bias.
    let e = ((r >> 52) & 0x7FF) as i64 - 1023 + bias;
    if e >= 1 && e < (1 << E) - 1 {
        let sign = ((b >> 63) as u16) << 15;
        let mant = ((r >> cut) as u16) & ((1u16 << frac) - 1);
        sign | (e as u16) << frac | mant
    } else {
        round16_via_f32::<E>(x)
    }
}

/// [`round16`] through `f32` rounded to odd: exact on every input (the reference, and the
/// path for results that are not normal numbers of the layout).
fn round16_via_f32<const E: u32>(x: f64) -> u16 {
    if E == 8 {
        half::bf16::from_f32(round_to_odd_f32(x)).to_bits()
    } else {
        half::f16::from_f32(round_to_odd_f32(x)).to_bits()
    }
}

/// `x` as an `f32` rounded to odd: exact values stay, others become the neighbour toward
/// zero with its lowest bit set. Rounding that to any format at least two bits narrower gives
/// the correctly rounded result of `x` itself.
fn round_to_odd_f32(x: f64) -> f32 {
    let t = x as f32;
    if !t.is_finite() || f64::from(t) == x {
        return t;
    }
    let mut bits = t.to_bits();
    if f64::from(t).abs() > x.abs() {
        // Rounded away from zero: step back toward zero (same sign, magnitude - 1 ulp).
        bits -= 1;
    }
    f32::from_bits(bits | 1)
}

/// The grid integer of `x`, or `None` when `x` must be escaped (NaN, ±Inf, or beyond
/// `qmax(bits)` steps).
#[inline]
pub fn quantize(x: f64, step: f64, bits: u32) -> Option<i64> {
    // Adding and subtracting 1.5 · 2^52 rounds half to even for |t| < 2^51 (no library
    // call); larger quotients are beyond every grid (qmax < 2^31), as are NaN quotients.
    const MAGIC: f64 = 6_755_399_441_055_744.0;
    if !x.is_finite() {
        return None;
    }
    let t = x / step;
    if t.is_nan() || t.abs() >= 2_251_799_813_685_248.0 {
        return None;
    }
    let q = (t + MAGIC) - MAGIC;
    (q.abs() <= qmax(bits) as f64).then_some(q as i64)
}

/// The raw bits of grid point `q` in `layout`.
#[inline]
pub fn dequantize(layout: FloatLayout, q: i64, step: f64) -> u64 {
    from_f64(layout, q as f64 * step)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fast rounding of [`from_f64`] to 16-bit layouts is the rounding through `f32`
    /// rounded to odd (the reference) on every kind of input: ties, carries into the
    /// exponent, the normal range's edges, subnormals, overflow, ±0, ±Inf and NaN.
    #[test]
    fn round16_is_the_reference() {
        let mut xs: Vec<f64> = crate::pseudo_u64(200_000, 11).map(f64::from_bits).collect();
        // Near every 16-bit value: the value, the ties between neighbours, and a hair
        // either side of them.
        for v in 0..=u16::MAX {
            for y in [
                f64::from(half::bf16::from_bits(v)),
                f64::from(half::f16::from_bits(v)),
            ] {
                if !y.is_finite() {
                    continue;
                }
                xs.push(y);
                for d in [0.5f64, 0.25, 0.75] {
                    let ulp_b = (y.abs() * 2f64.powi(-7)).max(2f64.powi(-133));
                    let ulp_h = (y.abs() * 2f64.powi(-10)).max(2f64.powi(-24));
                    for u in [ulp_b, ulp_h] {
                        let t = y + d * u;
                        xs.extend([
                            t,
                            f64::from_bits(t.to_bits().wrapping_add(1)),
                            f64::from_bits(t.to_bits().wrapping_sub(1)),
                        ]);
                    }
                }
            }
        }
        xs.extend([
            0.0,
            -0.0,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::NAN,
            65504.0,
            65520.0,
            65519.99,
            -65520.0,
            f64::from(f32::MAX),
            3.4e38,
            3.403e38,
            f64::MAX,
            f64::MIN_POSITIVE,
            2f64.powi(-14),
            2f64.powi(-126),
            2f64.powi(-127) * 3.0,
        ]);
        for &x in &xs {
            assert_eq!(
                round16::<8>(x),
                round16_via_f32::<8>(x),
                "bf16 {x:e} ({:#x})",
                x.to_bits()
            );
            assert_eq!(
                round16::<5>(x),
                round16_via_f32::<5>(x),
                "f16 {x:e} ({:#x})",
                x.to_bits()
            );
        }
    }

    /// The library-free rounding of [`quantize`] is `round_ties_even`, on every kind of input.
    #[test]
    fn quantize_is_round_half_even() {
        let reference = |x: f64, step: f64, bits: u32| -> Option<i64> {
            if !x.is_finite() {
                return None;
            }
            let q = (x / step).round_ties_even();
            let m = qmax(bits) as f64;
            if q.is_nan() || q > m || q < -m {
                return None;
            }
            Some(q as i64)
        };
        let mut xs: Vec<f64> = crate::pseudo_u64(20_000, 3)
            .map(|r| f64::from(f32::from_bits(r as u32)))
            .collect();
        xs.extend(crate::pseudo_u64(5_000, 4).map(|r| (r >> 11) as f64 / 1024.0 - 4e12));
        xs.extend([
            0.0,
            -0.0,
            0.5,
            -0.5,
            1.5,
            -2.5,
            32767.5,
            -32767.5,
            32766.5,
            2.5e15,
            -2.5e15,
            f64::MAX,
            f64::MIN_POSITIVE,
            5e-324,
            f64::INFINITY,
            f64::NAN,
        ]);
        for bits in [2u32, 8, 16, 32] {
            for step in [
                1.0,
                0.5,
                3.0 / 32767.0,
                1e-30,
                1e30,
                0.0,
                -0.25,
                f64::NAN,
                f64::INFINITY,
            ] {
                for &x in &xs {
                    assert_eq!(
                        quantize(x, step, bits),
                        reference(x, step, bits),
                        "{x} {step} {bits}"
                    );
                }
            }
        }
    }

    #[test]
    fn grid_round_trips_its_points() {
        let step = step_for(0.37, 16);
        for q in [-32767i64, -1, 0, 1, 12345, 32767] {
            let raw = dequantize(FloatLayout::F32, q, step);
            let x = to_f64(FloatLayout::F32, raw);
            assert_eq!(quantize(x, step, 16), Some(q));
        }
    }

    #[test]
    fn escapes() {
        assert_eq!(quantize(f64::NAN, 1.0, 16), None);
        assert_eq!(quantize(f64::INFINITY, 1.0, 16), None);
        assert_eq!(quantize(32767.4, 1.0, 16), Some(32767));
        assert_eq!(quantize(32767.6, 1.0, 16), None);
        assert_eq!(quantize(-32767.6, 1.0, 16), None);
        assert_eq!(quantize(2.5, 1.0, 16), Some(2));
    }

    #[test]
    fn sixteen_bit_rounding_is_single_and_correct() {
        // Ties broken by bits below f32's precision.
        let x = 1.0 + 2f64.powi(-8) + 2f64.powi(-40);
        assert_eq!(from_f64(FloatLayout::BF16, x), 0x3f81);
        let x = 1.0 + 2f64.powi(-11) + 2f64.powi(-40);
        assert_eq!(from_f64(FloatLayout::F16, x), 0x3c01);
        // Exact ties round to even.
        assert_eq!(from_f64(FloatLayout::BF16, 1.0 + 2f64.powi(-8)), 0x3f80);
        assert_eq!(from_f64(FloatLayout::F16, 1.0 + 2f64.powi(-11)), 0x3c00);
        assert_eq!(
            from_f64(FloatLayout::BF16, -(1.0 + 3.0 * 2f64.powi(-8))),
            0xbf82
        );
        assert!(f32::from_bits(from_f64(FloatLayout::F32, f64::NAN) as u32).is_nan());
        assert_eq!(from_f64(FloatLayout::F16, 1e6), 0x7c00);
        assert_eq!(from_f64(FloatLayout::F16, 2f64.powi(-25) * 1.5), 0x0001);
    }

    #[test]
    fn layouts_convert() {
        assert_eq!(to_f64(FloatLayout::BF16, 0x3f80), 1.0);
        assert_eq!(to_f64(FloatLayout::F16, 0x3c00), 1.0);
        assert_eq!(from_f64(FloatLayout::BF16, 1.0), 0x3f80);
        assert_eq!(from_f64(FloatLayout::F16, -2.0), 0xc000);
        assert_eq!(step_for(0.0, 16), 1.0);
    }
}
