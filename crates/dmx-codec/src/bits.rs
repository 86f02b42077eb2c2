//! LSB-first bit writer used by the Huffman streams.
//!
//! Bits are packed starting at the least significant bit of each byte: the first field
//! written occupies the lowest bits of the first byte.

/// Largest number of bits one [`BitWriter::put`] call may carry.
pub const MAX_PUT_BITS: u32 = 56;

/// Appends bit fields to a byte buffer sized up front.
#[derive(Debug, Default)]
pub struct BitWriter {
    out: Vec<u8>,
    pos: usize,
    acc: u64,
    n: u32,
}

impl BitWriter {
    /// A writer for at most `bytes` bytes of output; writing more panics.
    pub fn with_capacity(bytes: usize) -> Self {
        Self {
            out: vec![0u8; bytes + 8],
            pos: 0,
            acc: 0,
            n: 0,
        }
    }

    /// Appends the low `nbits` bits of `bits` (`nbits <= MAX_PUT_BITS`; higher bits of `bits`
    /// must be zero).
    #[inline(always)]
    pub fn put(&mut self, bits: u64, nbits: u32) {
        debug_assert!(nbits <= MAX_PUT_BITS);
        debug_assert!(nbits == 64 || bits >> nbits == 0);
        self.acc |= bits << self.n;
        self.n += nbits;
        // Store all eight accumulator bytes; only the whole ones are kept.
        self.out[self.pos..self.pos + 8].copy_from_slice(&self.acc.to_le_bytes());
        let whole = self.n >> 3;
        self.pos += whole as usize;
        // n <= 7 + MAX_PUT_BITS = 63, so the shift stays below 64.
        self.acc >>= whole * 8;
        self.n &= 7;
    }

    /// Flushes the partial last byte (zero padded) and returns the bytes.
    pub fn finish(mut self) -> Vec<u8> {
        let len = self.pos + usize::from(self.n > 0);
        self.out.truncate(len);
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads `n` bits at bit position `pos` of `bytes`.
    fn read(bytes: &[u8], pos: usize, n: u32) -> u64 {
        (0..n as usize).fold(0u64, |acc, i| {
            let bit = (bytes[(pos + i) / 8] >> ((pos + i) % 8)) & 1;
            acc | u64::from(bit) << i
        })
    }

    #[test]
    fn round_trip_mixed_widths() {
        let fields: Vec<(u64, u32)> = (0..1000u64)
            .map(|i| {
                let w = (i % 56) as u32 + 1;
                (i.wrapping_mul(0x9E37_79B9_7F4A_7C15) & ((1u64 << w) - 1), w)
            })
            .collect();
        let total: u32 = fields.iter().map(|f| f.1).sum();
        let mut w = BitWriter::with_capacity(total.div_ceil(8) as usize);
        for &(v, n) in &fields {
            w.put(v, n);
        }
        let bytes = w.finish();
        assert_eq!(bytes.len(), total.div_ceil(8) as usize);
        let mut pos = 0;
        for &(v, n) in &fields {
            assert_eq!(read(&bytes, pos, n), v);
            pos += n as usize;
        }
    }
}
