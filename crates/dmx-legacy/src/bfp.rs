//! The old tool's block-floating-point decoder (shared exponent per group, one sign +
//! mantissa byte per value), bit for bit.

/// One decoded value: `sign_mant` byte of a group with shared exponent `shared`, for a float
/// layout of `frac` fraction bits and `exp_max` largest exponent (FP16: 10 and 31; BF16: 7
/// and 255), with `m` kept significand bits (1..=7).
fn value(byte: u8, shared: u8, m: u32, frac: u32, exp_max: i32) -> u16 {
    let sign = u16::from((byte >> m) & 1);
    let truncated = u16::from(byte) & ((1u16 << m) - 1);
    if truncated == 0 {
        return sign << 15;
    }
    // Back to the (frac + 1)-bit significand position; find the leading one.
    let recon = truncated << (frac + 1 - m);
    let top = 15 - recon.leading_zeros(); // bit position of the leading one, <= frac
    let d = frac - top;
    let exp = (i32::from(shared) - d as i32).clamp(0, exp_max) as u16;
    let mant = (u32::from(recon) << d) & ((1u32 << frac) - 1);
    (sign << 15) | (exp << frac) | mant as u16
}

/// Decodes the streams to FP16 bit patterns (`native_bf16` false) or BF16 bit patterns
/// (true), one per value of `sign_mant`, whose length is `exp.len() * group`.
pub(crate) fn decode(
    exp: &[u8],
    sign_mant: &[u8],
    group: usize,
    m: u32,
    native_bf16: bool,
) -> Vec<u16> {
    let (frac, exp_max) = if native_bf16 { (7, 255) } else { (10, 31) };
    sign_mant
        .chunks(group)
        .zip(exp)
        .flat_map(|(g, &shared)| g.iter().map(move |&b| value(b, shared, m, frac, exp_max)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fp16_values() {
        // m = 6, shared exponent 15 (1.0): byte 0b100000 = leading one at the top -> 1.0.
        assert_eq!(value(0b10_0000, 15, 6, 10, 31), 0x3C00);
        // Sign bit set -> -1.0.
        assert_eq!(value(0b110_0000, 15, 6, 10, 31), 0xBC00);
        // One position lower -> 0.5.
        assert_eq!(value(0b01_0000, 15, 6, 10, 31), 0x3800);
        // Zero mantissa keeps the sign only.
        assert_eq!(value(0b100_0000, 15, 6, 10, 31), 0x8000);
        // Exponent clamps at zero.
        assert_eq!(value(0b00_0001, 2, 6, 10, 31) >> 10, 0);
    }

    #[test]
    fn bf16_values() {
        assert_eq!(value(0b10_0000, 127, 6, 7, 255), 0x3F80);
        assert_eq!(decode(&[127], &[0b10_0000; 4], 4, 6, true), vec![0x3F80; 4]);
    }
}
