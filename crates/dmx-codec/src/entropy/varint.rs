//! LEB128 varints: seven bits a byte, least significant group first, the high bit set on
//! every byte but the last.

use crate::CodecError;

/// Appends `v` as a LEB128 varint.
pub(crate) fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Bytes [`put_varint`] writes for `v`.
pub(crate) fn varint_len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros()).div_ceil(7) as usize
}

/// Reads a LEB128 varint at `*pos`, advancing it; rejects a truncated varint and one that
/// does not fit in 64 bits.
pub(crate) fn get_varint(data: &[u8], pos: &mut usize) -> Result<u64, CodecError> {
    let mut v = 0u64;
    for i in 0..10 {
        let b = *data
            .get(*pos)
            .ok_or(CodecError::Corrupt("varint truncated"))?;
        *pos += 1;
        let part = u64::from(b & 0x7F);
        if i == 9 && part > 1 {
            return Err(CodecError::Corrupt("varint overflows 64 bits"));
        }
        v |= part << (7 * i);
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(CodecError::Corrupt("varint overflows 64 bits"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_lengths_and_errors() {
        for v in [0u64, 1, 127, 128, 300, 1 << 35, u64::MAX] {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            assert_eq!(out.len(), varint_len(v), "{v}");
            let mut pos = 0;
            assert_eq!(get_varint(&out, &mut pos), Ok(v));
            assert_eq!(pos, out.len());
            let mut pos = 0;
            assert!(get_varint(&out[..out.len() - 1], &mut pos).is_err());
        }
        // Ten bytes whose last carries more than the 64th bit.
        let mut over = vec![0xFF; 9];
        over.push(0x02);
        assert!(get_varint(&over, &mut 0).is_err());
    }
}
