//! Entropy-coding tools shared by the codecs: LEB128 varints ([`varint`]), the static rANS
//! coder of [`crate::bfp`] ([`rans`]) and the zigzag maps of signed integers. The bit readers
//! and writers they build on are in [`crate::bits`]; the Huffman code is in
//! [`crate::huffman`].

pub(crate) mod rans;
pub(crate) mod varint;

/// Maps a signed 64-bit integer to an unsigned one, small magnitudes to small values
/// (0, -1, 1, -2, … → 0, 1, 2, 3, …).
#[inline(always)]
pub fn zigzag_i64(x: i64) -> u64 {
    ((x << 1) ^ (x >> 63)) as u64
}

/// Inverse of [`zigzag_i64`].
#[inline(always)]
pub fn unzigzag_i64(z: u64) -> i64 {
    ((z >> 1) as i64) ^ -((z & 1) as i64)
}

/// [`zigzag_i64`] for 32-bit integers.
#[inline(always)]
pub fn zigzag_i32(x: i32) -> u32 {
    ((x << 1) ^ (x >> 31)) as u32
}

/// Inverse of [`zigzag_i32`].
#[inline(always)]
pub fn unzigzag_i32(z: u32) -> i32 {
    ((z >> 1) as i32) ^ -((z & 1) as i32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zigzag_orders_by_magnitude_and_inverts() {
        for (x, z) in [(0i64, 0u64), (-1, 1), (1, 2), (-2, 3), (2, 4)] {
            assert_eq!(zigzag_i64(x), z);
            assert_eq!(u64::from(zigzag_i32(x as i32)), z);
        }
        assert_eq!(zigzag_i64(i64::MIN), u64::MAX);
        assert_eq!(unzigzag_i64(u64::MAX), i64::MIN);
        assert_eq!(unzigzag_i64(zigzag_i64(i64::MAX)), i64::MAX);
        assert_eq!(zigzag_i32(i32::MIN), u32::MAX);
        assert_eq!(unzigzag_i32(u32::MAX), i32::MIN);
        for x in [i32::MIN, -77, 0, 5, i32::MAX] {
            assert_eq!(unzigzag_i32(zigzag_i32(x)), x);
            assert_eq!(u64::from(zigzag_i32(x)), zigzag_i64(i64::from(x)));
        }
    }
}
