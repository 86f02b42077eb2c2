//! The field-split float codec (codec id 2, `FLOAT_HUFF`).
//!
//! Each value of `B` bits is split into a *symbol* — its top `w` bits: sign, exponent and the
//! top `k` mantissa bits — and a *residual* of the remaining `B - w - tz` bits, where `tz` is
//! the number of trailing bits that are zero in every value of the chunk (so FP32 tensors
//! holding BF16- or FP16-origin values pay nothing for their zero low bytes). The symbol is
//! coded with a per-chunk canonical Huffman code (at most 12 bits); the residual follows its
//! code raw in the same bit stream. Values are cut into four contiguous quarters coded as four
//! independent bit streams, which the decoder advances in lockstep for instruction-level
//! parallelism. `w` is chosen per chunk by exact coded size. See docs/CODECS.md.

use crate::bits::{BitReader, BitWriter, MAX_PUT_BITS};
use crate::huffman::{self, MAX_CODE_LEN};
use crate::{CodecError, FloatLayout};

/// Number of interleaved bit streams.
pub const STREAMS: usize = 4;
/// Fixed payload header bytes before the Huffman table.
const HEADER: usize = 8;

/// Per-chunk statistics gathered in one pass; enough to price every symbol width.
pub struct Analysis {
    layout: FloatLayout,
    /// Histogram of the top `hist_bits` bits of every value.
    hist: Vec<u64>,
    hist_bits: u32,
    /// Trailing bits that are zero in every value.
    tz: u32,
    count: usize,
}

/// The chosen parameters and their exact size.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Symbol width in bits.
    pub sym_bits: u32,
    /// Trailing zero bits dropped from every value.
    pub tz: u32,
    /// Huffman code lengths for the `1 << sym_bits` symbols.
    pub lengths: Vec<u8>,
    /// Exact payload size in bytes.
    pub size: usize,
    /// Order-0 entropy bound in bits for this split (symbol entropy + residual bits).
    pub entropy_bits: f64,
}

impl Analysis {
    /// Scans `data` (whole values of `layout`).
    pub fn new(layout: FloatLayout, data: &[u8]) -> Self {
        let bits = layout.bits();
        let hist_bits = bits.min(MAX_CODE_LEN);
        let shift = bits - hist_bits;
        let mut hist = vec![0u64; 1 << hist_bits];
        let mut or = 0u64;
        let count = data.len() / layout.bytes();
        match layout.bytes() {
            1 => scan::<1>(data, shift, &mut hist, &mut or),
            2 => scan::<2>(data, shift, &mut hist, &mut or),
            4 => scan::<4>(data, shift, &mut hist, &mut or),
            _ => scan::<8>(data, shift, &mut hist, &mut or),
        }
        let tz = if or == 0 {
            bits
        } else {
            or.trailing_zeros().min(bits)
        };
        Self {
            layout,
            hist,
            hist_bits,
            tz,
            count,
        }
    }

    /// The smallest plan over all symbol widths from `1 + exponent bits` up to 12 bits.
    pub fn best_plan(&self) -> Plan {
        let bits = self.layout.bits();
        let min_w = (1 + self.layout.exp_bits).min(self.hist_bits);
        let mut best: Option<Plan> = None;
        for w in min_w..=self.hist_bits {
            let freq = self.symbol_hist(w);
            let lengths = huffman::code_lengths(&freq);
            let tz = self.tz.min(bits - w);
            let residual = u64::from(bits - w - tz);
            let code_bits = huffman::coded_bits(&freq, &lengths);
            let stream_bits = code_bits + residual * self.count as u64;
            // Each of the streams may end in a partial byte.
            let size = HEADER
                + huffman::lengths_size(&lengths)
                + 4 * STREAMS
                + (stream_bits / 8) as usize
                + STREAMS;
            if best.as_ref().is_none_or(|b| size < b.size) {
                let entropy_bits = entropy(&freq) + (residual * self.count as u64) as f64;
                best = Some(Plan {
                    sym_bits: w,
                    tz,
                    lengths,
                    size,
                    entropy_bits,
                });
            }
        }
        best.expect("at least one symbol width")
    }

    fn symbol_hist(&self, w: u32) -> Vec<u64> {
        let group = 1usize << (self.hist_bits - w);
        self.hist.chunks(group).map(|c| c.iter().sum()).collect()
    }
}

fn scan<const B: usize>(data: &[u8], shift: u32, hist: &mut [u64], or: &mut u64) {
    let mask = hist.len() - 1;
    let mut acc = 0u64;
    for v in data.chunks_exact(B) {
        let x = load::<B>(v);
        acc |= x;
        hist[(x >> shift) as usize & mask] += 1;
    }
    *or = acc;
}

#[inline(always)]
fn load<const B: usize>(v: &[u8]) -> u64 {
    let mut w = [0u8; 8];
    w[..B].copy_from_slice(v);
    u64::from_le_bytes(w)
}

/// Order-0 entropy in bits of a histogram.
pub fn entropy(freq: &[u64]) -> f64 {
    let total: u64 = freq.iter().sum();
    if total == 0 {
        return 0.0;
    }
    let t = total as f64;
    freq.iter()
        .filter(|&&f| f > 0)
        .map(|&f| {
            let f = f as f64;
            -f * (f / t).log2()
        })
        .sum()
}

/// Encodes `data` with `plan` (from [`Analysis::best_plan`] on the same data).
pub fn encode(layout: FloatLayout, data: &[u8], plan: &Plan) -> Vec<u8> {
    let bytes = layout.bytes();
    let count = data.len() / bytes;
    let mut out = Vec::with_capacity(plan.size + 16);
    out.push(layout.bytes() as u8);
    out.push(plan.sym_bits as u8);
    out.push(plan.tz as u8);
    out.push(0);
    out.extend_from_slice(&(count as u32).to_le_bytes());
    huffman::write_lengths(&plan.lengths, &mut out);
    let codes = huffman::encode_codes(&plan.lengths);
    let streams: Vec<Vec<u8>> = quarters(count)
        .map(|(start, end)| {
            let part = &data[start * bytes..end * bytes];
            match bytes {
                1 => encode_stream::<1>(part, layout, plan, &codes),
                2 => encode_stream::<2>(part, layout, plan, &codes),
                4 => encode_stream::<4>(part, layout, plan, &codes),
                _ => encode_stream::<8>(part, layout, plan, &codes),
            }
        })
        .collect();
    for s in &streams {
        out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    }
    for s in &streams {
        out.extend_from_slice(s);
    }
    out
}

/// Value ranges `[start, end)` of the four streams.
fn quarters(count: usize) -> impl Iterator<Item = (usize, usize)> {
    let q = count.div_ceil(STREAMS);
    (0..STREAMS).map(move |i| ((i * q).min(count), ((i + 1) * q).min(count)))
}

fn encode_stream<const B: usize>(
    part: &[u8],
    layout: FloatLayout,
    plan: &Plan,
    codes: &[u16],
) -> Vec<u8> {
    let bits = layout.bits();
    let sym_shift = bits - plan.sym_bits;
    let tz = plan.tz;
    let rbits = bits - plan.sym_bits - tz;
    let rmask = if rbits == 0 {
        0
    } else {
        u64::MAX >> (64 - rbits)
    };
    let count = part.len() / B;
    // A code is at most 12 bits.
    let mut w = BitWriter::with_capacity((count * (MAX_CODE_LEN + rbits) as usize).div_ceil(8));
    // code | length << 16, one lookup per value.
    let table: Vec<u32> = codes
        .iter()
        .zip(&plan.lengths)
        .map(|(&c, &l)| u32::from(c) | u32::from(l) << 16)
        .collect();
    for v in part.chunks_exact(B) {
        let x = load::<B>(v);
        let e = table[(x >> sym_shift) as usize & (table.len() - 1)];
        let len = e >> 16;
        let code = u64::from(e & 0xFFFF);
        let res = (x >> tz) & rmask;
        if len + rbits <= MAX_PUT_BITS {
            w.put(code | res << len, len + rbits);
        } else {
            w.put(code, len);
            w.put(res, rbits);
        }
    }
    w.finish()
}

/// Decodes a payload produced by [`encode`] into `out`, whose length is the raw size.
pub fn decode(payload: &[u8], out: &mut [u8]) -> Result<(), CodecError> {
    let head = payload
        .get(..HEADER)
        .ok_or(CodecError::Corrupt("float payload header truncated"))?;
    let bytes = usize::from(head[0]);
    let sym_bits = u32::from(head[1]);
    let tz = u32::from(head[2]);
    let count = u32::from_le_bytes([head[4], head[5], head[6], head[7]]) as usize;
    if !matches!(bytes, 1 | 2 | 4 | 8) {
        return Err(CodecError::Corrupt(
            "float payload has an invalid value width",
        ));
    }
    let bits = 8 * bytes as u32;
    if head[3] != 0 || sym_bits == 0 || sym_bits > MAX_CODE_LEN.min(bits) || tz > bits - sym_bits {
        return Err(CodecError::Corrupt(
            "float payload has invalid field widths",
        ));
    }
    if bits - sym_bits - tz > 56 {
        return Err(CodecError::Corrupt(
            "float payload residual wider than 56 bits",
        ));
    }
    if count.checked_mul(bytes) != Some(out.len()) {
        return Err(CodecError::Corrupt(
            "float payload value count disagrees with chunk size",
        ));
    }
    let (lengths, used) = huffman::read_lengths(&payload[HEADER..], 1 << sym_bits)?;
    let table = huffman::decode_table(&lengths)?;
    let mut pos = HEADER + used;
    let mut sizes = [0usize; STREAMS];
    for s in &mut sizes {
        let b = payload
            .get(pos..pos + 4)
            .ok_or(CodecError::Corrupt("float payload stream sizes truncated"))?;
        *s = u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize;
        pos += 4;
    }
    let mut streams: [&[u8]; STREAMS] = [&[]; STREAMS];
    for (i, &s) in sizes.iter().enumerate() {
        streams[i] = payload
            .get(pos..pos.saturating_add(s))
            .ok_or(CodecError::Corrupt(
                "float payload stream exceeds the payload",
            ))?;
        pos += s;
    }
    if pos != payload.len() {
        return Err(CodecError::Corrupt("float payload has trailing bytes"));
    }
    let params = Params {
        tz,
        rbits: bits - sym_bits - tz,
        sym_shift: bits - sym_bits,
    };
    match bytes {
        1 => decode_streams::<1>(&streams, &table, params, count, out),
        2 => decode_streams::<2>(&streams, &table, params, count, out),
        4 => decode_streams::<4>(&streams, &table, params, count, out),
        _ => decode_streams::<8>(&streams, &table, params, count, out),
    }
}

#[derive(Clone, Copy)]
struct Params {
    tz: u32,
    rbits: u32,
    sym_shift: u32,
}

/// Decodes one value; returns `None` on an invalid code.
#[inline(always)]
fn decode_one(r: &mut BitReader<'_>, table: &[u32], p: Params) -> Option<u64> {
    r.refill();
    let entry = table[r.peek(MAX_CODE_LEN) as usize & (huffman::MAX_SYMBOLS - 1)];
    let len = entry & 0xFF;
    if len == 0 {
        return None;
    }
    r.consume(len);
    let sym = u64::from(entry >> 8);
    let res = if p.rbits <= 44 {
        r.take(p.rbits)
    } else {
        r.refill();
        r.take(p.rbits)
    };
    Some(sym << p.sym_shift | res << p.tz)
}

#[inline(always)]
fn store<const B: usize>(out: &mut [u8], index: usize, value: u64) {
    out[index * B..index * B + B].copy_from_slice(&value.to_le_bytes()[..B]);
}

fn decode_streams<const B: usize>(
    streams: &[&[u8]; STREAMS],
    table: &[u32],
    p: Params,
    count: usize,
    out: &mut [u8],
) -> Result<(), CodecError> {
    let bad = CodecError::Corrupt("invalid Huffman code in float payload");
    let ranges: Vec<(usize, usize)> = quarters(count).collect();
    let mut readers = streams.map(BitReader::new);
    // Lockstep over the common length of all four quarters.
    let common = ranges.iter().map(|(s, e)| e - s).min().unwrap_or(0);
    let [r0, r1, r2, r3] = &mut readers;
    let (s0, s1, s2, s3) = (ranges[0].0, ranges[1].0, ranges[2].0, ranges[3].0);
    for i in 0..common {
        let v0 = decode_one(r0, table, p);
        let v1 = decode_one(r1, table, p);
        let v2 = decode_one(r2, table, p);
        let v3 = decode_one(r3, table, p);
        match (v0, v1, v2, v3) {
            (Some(v0), Some(v1), Some(v2), Some(v3)) => {
                store::<B>(out, s0 + i, v0);
                store::<B>(out, s1 + i, v1);
                store::<B>(out, s2 + i, v2);
                store::<B>(out, s3 + i, v3);
            }
            _ => return Err(bad),
        }
    }
    // Tails (quarters differ in length by at most one value).
    for (k, r) in readers.iter_mut().enumerate() {
        let (start, end) = ranges[k];
        for i in start + common..end {
            let v = decode_one(r, table, p).ok_or(bad.clone())?;
            store::<B>(out, i, v);
        }
        r.check_end()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(layout: FloatLayout, data: &[u8]) -> usize {
        let a = Analysis::new(layout, data);
        let plan = a.best_plan();
        let enc = encode(layout, data, &plan);
        assert!(
            enc.len() <= plan.size,
            "size estimate must bound the payload"
        );
        let mut out = vec![0u8; data.len()];
        decode(&enc, &mut out).unwrap();
        assert_eq!(out, data);
        enc.len()
    }

    fn pseudo(n: usize) -> Vec<u8> {
        let mut x = 0x1234_5678_9abc_def0u64;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    #[test]
    fn bf16_gaussianish_round_trip_and_compresses() {
        // Values with a narrow exponent range.
        let mut data = Vec::new();
        for (i, b) in pseudo(20_001).iter().enumerate() {
            let exp = 120 + (i % 7) as u16;
            let v = (u16::from(b & 1) << 15) | exp << 7 | u16::from(*b >> 1);
            data.extend_from_slice(&v.to_le_bytes());
        }
        let size = round_trip(FloatLayout::BF16, &data);
        assert!(size < data.len() * 3 / 4);
    }

    #[test]
    fn f32_with_zero_low_bytes_costs_little() {
        let mut data = Vec::new();
        for b in pseudo(4096).chunks(2) {
            let v = u32::from(u16::from_le_bytes([b[0], b[1] & 0x3f | 0x3c])) << 16;
            data.extend_from_slice(&v.to_le_bytes());
        }
        let size = round_trip(FloatLayout::F32, &data);
        assert!(size < data.len() / 2 + 200, "{size}");
    }

    #[test]
    fn random_bits_every_width() {
        for layout in [
            FloatLayout::F8_E4M3,
            FloatLayout::F16,
            FloatLayout::BF16,
            FloatLayout::F32,
            FloatLayout::F64,
        ] {
            for n in [0usize, 1, 2, 3, 5, 17, 1000] {
                round_trip(layout, &pseudo(n * layout.bytes()));
            }
        }
    }

    #[test]
    fn constant_and_zero_values() {
        round_trip(FloatLayout::F32, &[0u8; 4000]);
        round_trip(FloatLayout::F64, &[0xFFu8; 800]);
        round_trip(FloatLayout::BF16, &[0x80, 0x3f].repeat(999));
    }

    #[test]
    fn corrupt_payloads_error() {
        let data = pseudo(4000);
        let a = Analysis::new(FloatLayout::BF16, &data);
        let enc = encode(FloatLayout::BF16, &data, &a.best_plan());
        let mut out = vec![0u8; data.len()];
        for cut in 0..enc.len() {
            let _ = decode(&enc[..cut], &mut out);
        }
        for i in 0..enc.len() {
            let mut bad = enc.clone();
            bad[i] ^= 0x55;
            let _ = decode(&bad, &mut out);
        }
    }
}
