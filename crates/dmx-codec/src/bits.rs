//! LSB-first bit streams written into regions of one buffer (the Huffman streams).
//!
//! Bits are packed starting at the least significant bit of each byte: the first field
//! written occupies the lowest bits of the first byte.

/// Largest number of bits one [`Lane::put`] call may carry.
pub const MAX_PUT_BITS: u32 = 56;

/// One bit stream being written into a region of a shared buffer. The region must have room
/// for the stream's bytes plus 8 (every `put` stores a whole 64-bit word).
#[derive(Debug, Clone, Copy)]
pub struct Lane {
    pos: usize,
    acc: u64,
    n: u32,
}

impl Lane {
    /// A stream starting at byte `start` of the buffer.
    pub fn new(start: usize) -> Self {
        Self {
            pos: start,
            acc: 0,
            n: 0,
        }
    }

    /// Appends the low `nbits` bits of `bits` (`nbits <= MAX_PUT_BITS`; higher bits of `bits`
    /// must be zero).
    #[inline(always)]
    pub fn put(&mut self, buf: &mut [u8], bits: u64, nbits: u32) {
        debug_assert!(nbits <= MAX_PUT_BITS);
        debug_assert!(bits >> nbits == 0);
        self.acc |= bits << self.n;
        self.n += nbits;
        // Store all eight accumulator bytes; only the whole ones are kept.
        buf[self.pos..self.pos + 8].copy_from_slice(&self.acc.to_le_bytes());
        let whole = self.n >> 3;
        self.pos += whole as usize;
        // n <= 7 + MAX_PUT_BITS = 63, so the shift stays below 64.
        self.acc >>= whole * 8;
        self.n &= 7;
    }

    /// Writes the partial last byte (zero padded); returns the end of the stream.
    pub fn finish(self, buf: &mut [u8]) -> usize {
        if self.n > 0 {
            buf[self.pos] = self.acc as u8;
            self.pos + 1
        } else {
            self.pos
        }
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
        let mut buf = vec![0u8; 3 + total.div_ceil(8) as usize + 8];
        let mut lane = Lane::new(3);
        for &(v, n) in &fields {
            lane.put(&mut buf, v, n);
        }
        let end = lane.finish(&mut buf);
        assert_eq!(end - 3, total.div_ceil(8) as usize);
        let bytes = &buf[3..end];
        let mut pos = 0;
        for &(v, n) in &fields {
            assert_eq!(read(bytes, pos, n), v);
            pos += n as usize;
        }
    }
}
