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
pub fn to_f64(layout: FloatLayout, raw: u64) -> f64 {
    match (layout.bytes, layout.exp_bits) {
        (2, 8) => f64::from(half::bf16::from_bits(raw as u16)),
        (2, 5) => f64::from(half::f16::from_bits(raw as u16)),
        (4, _) => f64::from(f32::from_bits(raw as u32)),
        (8, _) => f64::from_bits(raw),
        _ => f64::NAN,
    }
}

/// `x` rounded to nearest even into `layout`, as raw bits (inverse of [`to_f64`]).
pub fn from_f64(layout: FloatLayout, x: f64) -> u64 {
    match (layout.bytes, layout.exp_bits) {
        (2, 8) => u64::from(half::bf16::from_f64(x).to_bits()),
        (2, 5) => u64::from(half::f16::from_f64(x).to_bits()),
        (4, _) => u64::from((x as f32).to_bits()),
        (8, _) => x.to_bits(),
        _ => 0,
    }
}

/// The grid integer of `x`, or `None` when `x` must be escaped (NaN, ±Inf, or beyond
/// `qmax(bits)` steps).
pub fn quantize(x: f64, step: f64, bits: u32) -> Option<i64> {
    if !x.is_finite() {
        return None;
    }
    let q = (x / step).round_ties_even();
    let m = qmax(bits) as f64;
    if q.is_nan() || q > m || q < -m {
        return None;
    }
    Some(q as i64)
}

/// The raw bits of grid point `q` in `layout`.
pub fn dequantize(layout: FloatLayout, q: i64, step: f64) -> u64 {
    from_f64(layout, q as f64 * step)
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn layouts_convert() {
        assert_eq!(to_f64(FloatLayout::BF16, 0x3f80), 1.0);
        assert_eq!(to_f64(FloatLayout::F16, 0x3c00), 1.0);
        assert_eq!(from_f64(FloatLayout::BF16, 1.0), 0x3f80);
        assert_eq!(from_f64(FloatLayout::F16, -2.0), 0xc000);
        assert_eq!(step_for(0.0, 16), 1.0);
    }
}
