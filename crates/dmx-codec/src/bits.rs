//! LSB-first bit writer and reader used by the Huffman streams.
//!
//! Bits are packed starting at the least significant bit of each byte; a value of `n` bits
//! written with [`BitWriter::put`] is read back by [`BitReader::take`] with the same `n`.

use crate::CodecError;

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

/// Reads bit fields written by [`BitWriter`]. Reading past the end yields zero bits and is
/// reported by [`BitReader::check_end`].
#[derive(Debug)]
pub struct BitReader<'a> {
    data: &'a [u8],
    pos: usize,
    acc: u64,
    n: u32,
    /// Zero bytes fed in past the end of `data`.
    padded: usize,
}

impl<'a> BitReader<'a> {
    /// A reader over `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Self {
            data,
            pos: 0,
            acc: 0,
            n: 0,
            padded: 0,
        }
    }

    /// Ensures at least 56 bits are buffered.
    #[inline(always)]
    pub fn refill(&mut self) {
        if let Some(word) = self.data.get(self.pos..self.pos + 8) {
            let mut w = [0u8; 8];
            w.copy_from_slice(word);
            self.acc |= u64::from_le_bytes(w) << self.n;
            self.pos += ((63 - self.n) >> 3) as usize;
            self.n |= 56;
        } else {
            self.refill_slow();
        }
    }

    #[cold]
    fn refill_slow(&mut self) {
        while self.n <= 56 {
            let byte = match self.data.get(self.pos) {
                Some(&b) => {
                    self.pos += 1;
                    b
                }
                None => {
                    self.padded += 1;
                    0
                }
            };
            self.acc |= u64::from(byte) << self.n;
            self.n += 8;
        }
    }

    /// The next `nbits` bits without consuming them (`nbits <= 56`, after a refill).
    #[inline(always)]
    pub fn peek(&self, nbits: u32) -> u64 {
        self.acc & ((1u64 << nbits) - 1)
    }

    /// Drops `nbits` already-buffered bits.
    #[inline(always)]
    pub fn consume(&mut self, nbits: u32) {
        self.acc >>= nbits;
        self.n -= nbits;
    }

    /// Takes `nbits` buffered bits (`nbits <= ` the buffered count, at most 56).
    #[inline(always)]
    pub fn take(&mut self, nbits: u32) -> u64 {
        let v = self.acc & (1u64 << nbits).wrapping_sub(1);
        self.acc = self.acc.checked_shr(nbits).unwrap_or(0);
        self.n -= nbits;
        v
    }

    /// Number of bits currently buffered.
    #[inline(always)]
    pub fn buffered(&self) -> u32 {
        self.n
    }

    /// Fails when more bits were consumed than the stream holds.
    pub fn check_end(&self) -> Result<(), CodecError> {
        let supplied_bits = (self.pos + self.padded) as u64 * 8;
        let consumed = supplied_bits - u64::from(self.n);
        if consumed > self.data.len() as u64 * 8 {
            return Err(CodecError::Corrupt("bit stream ended early"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_mixed_widths() {
        let fields: Vec<(u64, u32)> = (0..1000u64)
            .map(|i| {
                let w = (i % 56) as u32 + 1;
                (i.wrapping_mul(0x9E37_79B9_7F4A_7C15) & ((1u64 << w) - 1), w)
            })
            .collect();
        let mut w = BitWriter::with_capacity(8000);
        for &(v, n) in &fields {
            w.put(v, n);
        }
        let bytes = w.finish();
        let mut r = BitReader::new(&bytes);
        for &(v, n) in &fields {
            r.refill();
            assert_eq!(r.take(n), v);
        }
        r.check_end().unwrap();
    }

    #[test]
    fn overrun_is_detected() {
        let mut r = BitReader::new(&[0xFF]);
        r.refill();
        r.take(9);
        assert!(r.check_end().is_err());
    }
}
