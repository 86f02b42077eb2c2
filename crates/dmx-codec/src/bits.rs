//! LSB-first bit streams: [`Lane`] writes into a region of one buffer (the Huffman streams),
//! `BitVec` into a growable buffer (table headers); `peek`, `Bits` and `BitReader` read them.
//!
//! Bits are packed starting at the least significant bit of each byte: the first field
//! written occupies the lowest bits of the first byte.

/// Largest number of bits one [`Lane::put`] call may carry.
pub const MAX_PUT_BITS: u32 = 56;

/// One bit stream being written into a region of a shared buffer. The region must have room
/// for the stream's bytes plus 8 (every `put` stores a whole 64-bit word).
#[derive(Debug, Clone, Copy, Default)]
pub struct Lane {
    pos: usize,
    acc: u64,
    n: u32,
}

impl Lane {
    /// A stream starting at byte `start` of the buffer.
    #[inline(always)]
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
    #[inline(always)]
    pub fn finish(self, buf: &mut [u8]) -> usize {
        if self.n > 0 {
            buf[self.pos] = self.acc as u8;
            self.pos + 1
        } else {
            self.pos
        }
    }
}

/// `N` bit streams written side by side and stored back to back, each after its `u32` byte
/// length: [`Streams::open`] appends the `N` length slots and a worst-case region per stream
/// (one [`Lane`] each), [`Streams::close`] finishes the lanes, packs the streams together and
/// fills in the lengths.
pub(crate) struct Streams<const N: usize> {
    sizes_at: usize,
    starts: [usize; N],
}

impl<const N: usize> Streams<N> {
    /// Appends the length slots and regions of `region_bytes[k]` bytes of stream data each
    /// (8 bytes of slack are added, as [`Lane`] needs); returns the lanes to write.
    pub(crate) fn open(out: &mut Vec<u8>, region_bytes: [usize; N]) -> (Self, [Lane; N]) {
        let sizes_at = out.len();
        out.resize(sizes_at + 4 * N, 0);
        let mut end = out.len();
        let starts = region_bytes.map(|bytes| {
            let start = end;
            end += bytes + 8;
            start
        });
        out.resize(end, 0);
        (Self { sizes_at, starts }, starts.map(Lane::new))
    }

    /// Finishes `lanes` (from [`Streams::open`], written), moves the streams back to back after
    /// their lengths and truncates `out` after the last.
    pub(crate) fn close(self, out: &mut Vec<u8>, lanes: [Lane; N]) {
        let mut write = self.starts.first().copied().unwrap_or(out.len());
        for (k, (lane, &start)) in lanes.into_iter().zip(&self.starts).enumerate() {
            let stop = lane.finish(out);
            let len = stop - start;
            out.copy_within(start..stop, write);
            let at = self.sizes_at + 4 * k;
            out[at..at + 4].copy_from_slice(&(len as u32).to_le_bytes());
            write += len;
        }
        out.truncate(write);
    }
}

/// A growable bit stream: a [`Lane`] over a buffer that grows as needed.
#[derive(Debug, Clone, Default)]
pub(crate) struct BitVec {
    buf: Vec<u8>,
    lane: Lane,
}

impl BitVec {
    /// Appends the low `nbits` (<= [`MAX_PUT_BITS`]) bits of `v` (higher bits must be zero).
    pub(crate) fn put(&mut self, v: u64, nbits: u32) {
        if self.buf.len() < self.lane.pos + 8 {
            self.buf.resize(2 * self.buf.len() + 16, 0);
        }
        self.lane.put(&mut self.buf, v, nbits);
    }

    /// The bytes, zero padded to a whole byte.
    pub(crate) fn finish(mut self) -> Vec<u8> {
        let end = self.lane.finish(&mut self.buf);
        self.buf.truncate(end);
        self.buf
    }
}

/// At least 57 bits of `data` from bit `bitpos` on, LSB first, reading zeros past the end.
#[inline(always)]
pub(crate) fn peek(data: &[u8], bitpos: usize) -> u64 {
    let i = bitpos >> 3;
    let w = match data.get(i..i + 8) {
        Some(b) => u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]),
        None => peek_tail(data, i),
    };
    w >> (bitpos & 7)
}

/// A byte slice read as an LSB-first bit stream at any bit position.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bits<'a>(pub(crate) &'a [u8]);

impl Bits<'_> {
    /// At least 57 valid bits from bit `pos` on ([`peek`]).
    #[inline(always)]
    pub(crate) fn word(self, pos: usize) -> u64 {
        peek(self.0, pos)
    }
}

/// The bytes of `data` from `i` on, zero padded to 8.
#[cold]
fn peek_tail(data: &[u8], i: usize) -> u64 {
    let mut w = [0u8; 8];
    let rest = data.get(i..).unwrap_or(&[]);
    let n = rest.len().min(8);
    w[..n].copy_from_slice(&rest[..n]);
    u64::from_le_bytes(w)
}

/// An LSB-first bit reader over a byte slice that reads zeros past the end; `overrun` tells
/// whether it went past.
pub(crate) struct BitReader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> BitReader<'a> {
    /// A reader at the first bit of `data`.
    pub(crate) fn new(data: &'a [u8]) -> Self {
        Self { data, pos: 0 }
    }

    /// Reads `nbits` (<= 32) bits.
    pub(crate) fn get(&mut self, nbits: u32) -> u64 {
        let v = peek(self.data, self.pos) & ((1u64 << nbits) - 1);
        self.pos += nbits as usize;
        v
    }

    /// Whether reads went past the end of the data.
    pub(crate) fn overrun(&self) -> bool {
        self.pos > self.data.len() * 8
    }

    /// Bytes consumed, rounded up.
    pub(crate) fn bytes_used(&self) -> usize {
        self.pos.div_ceil(8)
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
        // The growable writer and the readers see the same stream.
        let mut bv = BitVec::default();
        for &(v, n) in &fields {
            bv.put(v, n);
        }
        assert_eq!(bv.finish(), bytes);
        let mut r = BitReader::new(bytes);
        let mut pos = 0;
        for &(v, n) in &fields {
            assert_eq!(peek(bytes, pos) & ((1u64 << n) - 1), v);
            if n <= 32 {
                assert_eq!(r.get(n), v);
            } else {
                assert_eq!(r.get(n - 32) | r.get(32) << (n - 32), v);
            }
            pos += n as usize;
        }
        assert!(!r.overrun());
        assert_eq!(r.bytes_used(), bytes.len());
        r.get(9);
        assert!(r.overrun());
        assert_eq!(BitVec::default().finish(), Vec::<u8>::new());
    }
}
