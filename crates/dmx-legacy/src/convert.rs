//! Float conversions with torch's exact semantics (round to nearest even; NaN as torch
//! writes it).

use half::f16;

/// torch `float32 -> float16` (`.half()`): round to nearest even, overflow to ±Inf, NaN to
/// sign | 0x7E00.
pub(crate) fn f32_to_f16(x: f32) -> u16 {
    if x.is_nan() {
        let sign = ((x.to_bits() >> 16) & 0x8000) as u16;
        return sign | 0x7E00;
    }
    f16::from_f32(x).to_bits()
}

/// torch `float32 -> bfloat16`: round to nearest even, NaN to 0x7FC0.
pub(crate) fn f32_to_bf16(x: f32) -> u16 {
    if x.is_nan() {
        return 0x7FC0;
    }
    let u = x.to_bits();
    let bias = ((u >> 16) & 1) + 0x7FFF;
    (u.wrapping_add(bias) >> 16) as u16
}

/// float16 bits to float32 (exact).
pub(crate) fn f16_to_f32(bits: u16) -> f32 {
    f16::from_bits(bits).to_f32()
}

/// bfloat16 bits to float32 (exact).
pub(crate) fn bf16_to_f32(bits: u16) -> f32 {
    f32::from_bits(u32::from(bits) << 16)
}

/// Little-endian u16 words of `data` (an even number of bytes).
pub(crate) fn u16s(data: &[u8]) -> impl Iterator<Item = u16> + '_ {
    data.chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
}

/// Float32 values of a tensor of float32 results, cast to the output dtype the old tool
/// gives it (`"F16"`, `"BF16"` or `"F32"`), as little-endian bytes.
pub(crate) fn f32s_to(values: &[f32], dtype: &str) -> Vec<u8> {
    match dtype {
        "F16" => values
            .iter()
            .flat_map(|&v| f32_to_f16(v).to_le_bytes())
            .collect(),
        "BF16" => values
            .iter()
            .flat_map(|&v| f32_to_bf16(v).to_le_bytes())
            .collect(),
        _ => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn torch_rounding() {
        assert_eq!(f32_to_f16(1.0), 0x3C00);
        assert_eq!(f32_to_f16(70000.0), 0x7C00);
        assert_eq!(f32_to_f16(-f32::NAN), 0xFE00);
        assert_eq!(f32_to_bf16(1.0), 0x3F80);
        assert_eq!(f32_to_bf16(f32::from_bits(0x3F80_8000)), 0x3F80);
        assert_eq!(f32_to_bf16(f32::from_bits(0x3F81_8000)), 0x3F82);
        assert_eq!(f32_to_bf16(-f32::NAN), 0x7FC0);
        assert_eq!(bf16_to_f32(0x3F80), 1.0);
        assert_eq!(f16_to_f32(0x3C00), 1.0);
    }
}
