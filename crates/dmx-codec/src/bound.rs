//! A provable lower bound on the exact (lossless) encoding of a float chunk, so that a lossy
//! writer need not plan the exact form to know that it cannot be smaller than the lossy one.
//!
//! The float candidates of [`crate::encode_within`] are the field-split codecs (10 and 12,
//! and 11 and 16 on exponent-transformed values), zstd when a sample says it may win, and the
//! raw chunk. Each field-split candidate codes every value as a symbol (its top `w` bits,
//! `1 + E <= w <= 12`) under one static code, and a residual of the bits below it, raw but
//! for the low bytes of 4-byte values, which may have static codes of their own. A static
//! code (Huffman or rANS) of a stream spends at least the stream's order-0 entropy, so a
//! field-split payload holds at least
//!
//! ```text
//! H(sign, top 12 − 1 − E mantissa bits) + (bits − 12 − tz − L) · count + H(low byte 0) + H(low byte 1)
//! ```
//!
//! bits (`tz` = the trailing bits that are zero in every value, which a payload may drop;
//! `L` = 16 low coded bits for 4-byte values of chunks of 4096 values or more, where low
//! bytes may be coded, else 0 and those bytes are raw): the symbol of any width holds the
//! sign and the mantissa bits above the residual, which no exponent transform changes, and a
//! symbol `12 − w` bits narrower leaves those bits to the raw residual, which costs at least
//! as much as their share of the entropy. Beside those bits a payload holds fixed bytes
//! ([`HUFFMAN_FIXED`], [`RANS_FIXED`]), which dominate on the small chunks of a CNN's
//! normalization vectors; the rANS candidates may come out up to [`SLACK`] bytes below the
//! entropy, but never below their fixed bytes and raw residual. The low bytes are counted a
//! block of [`LOW_BLOCK`] values at a time, and only until the values counted prove the limit
//! exceeded: entropy is concave, so the bits of a whole histogram are at least those of any
//! part of it. The decision is the one counting every value gives. On a chunk above the zstd
//! probe's size, zstd is tried only when its prediction is below 98 % of the best float
//! candidate's size, which is at most the narrowest symbol's plan
//! ([`crate::split::size_bound`]), so a prediction at least 98 % of that rules it out. Where zstd is tried (on a smaller chunk, always) its
//! candidate is the chunk compressed at the float level, kept only when it is smaller than
//! the others: when that alone is above the limit, so is every candidate (one zstd run, far
//! less than planning the float codecs, and one that stops once its frame passes the limit:
//! [`crate::zstd_ctx::longer_than`]).

use crate::float::{self, Analysis};
use crate::{ZSTD_FLOAT_LEVEL, ZSTD_PROBE, split, zstd_predicted, zstd_wins_over};

/// Bytes allowed below the entropy bound for the rANS-coded candidates (codecs 12 and 16):
/// their final states (32 lanes of 4 bytes) may carry information the words lack; twice
/// that, to spare.
const SLACK: usize = 256;

/// Bytes every Huffman-coded field-split payload (codec 10, and codec 11 around one) holds
/// beyond its coded bits: the 8-byte header, a symbol table of at least 5 bytes (4 bytes of
/// span and a nibble per used symbol) and the four `u32` sizes of the symbol streams
/// (docs/CODECS.md §9.1). Huffman codes spend at least the entropy (Gibbs' inequality), so
/// these candidates need no slack.
const HUFFMAN_FIXED: usize = split::HEADER + 5 + 4 * split::STREAMS;

/// Bytes every rANS-coded field-split payload (codec 12, and codec 16 around one) holds
/// beyond its coded bits: the 8-byte header, a frequency table of at least 4 bytes, the
/// stream length and the 32 final states (docs/CODECS.md §10.1). Chunks of fewer than
/// [`split::ans::MIN_VALUES`] values have no such candidate.
const RANS_FIXED: usize = split::HEADER + 4 + split::ans::STREAM_HEAD;

/// Values per block of the low-byte count in [`field_split_floor`], which stops after the
/// first block that proves the limit exceeded.
const LOW_BLOCK: usize = 1 << 15;

/// Whether every candidate of [`crate::encode_within`] for the float chunk `data`, scanned
/// by `a`, is provably larger than `limit` bytes (so that it returns `None`). `false` says
/// nothing: the chunk may or may not fit. Only chunks of 1-, 2- and 4-byte values are
/// bounded.
pub(crate) fn exceeds(a: &Analysis, data: &[u8], limit: usize) -> bool {
    let layout = a.layout();
    let (bits, h, e) = (layout.bits(), a.hist_bits(), layout.exp_bits);
    if data.len() <= limit || !split::supports(layout) || h < 1 + e {
        return false;
    }
    if field_split_floor(a, data, bits, h, e, limit) <= limit {
        return false;
    }
    // Only zstd can fit now. On a chunk above the probe's size it is tried only where its
    // prediction may beat the float candidates; where it is tried (and on every smaller
    // chunk) it is the chunk at `ZSTD_FLOAT_LEVEL`, kept only when it is the smallest, so its
    // own size decides (a chunk with many zero rows is predicted to shrink under zstd, yet
    // not below a lossy form's size).
    if data.len() > ZSTD_PROBE && !zstd_wins_over(zstd_predicted(data), split::size_bound(a)) {
        return true;
    }
    crate::zstd_ctx::longer_than(data, ZSTD_FLOAT_LEVEL, limit)
}

/// The fewest bytes any field-split payload of the chunk can take (see the module docs); the
/// low bytes of 4-byte values are counted (a pass over the chunk) only when the rest does not
/// already exceed `limit`, and only until the values counted prove it exceeded (then the
/// floor returned is that proof, still above `limit`, not the whole chunk's).
fn field_split_floor(a: &Analysis, data: &[u8], bits: u32, h: u32, e: u32, limit: usize) -> usize {
    // The sign and the mantissa bits of a 12-bit symbol, with the exponent summed out.
    let keep = h - 1 - e;
    let mut marginal = vec![0u64; 1 << (1 + keep)];
    for (s, &n) in a.symbol_hist(h).iter().enumerate() {
        let sign = s >> (h - 1);
        let mantissa = s & ((1 << keep) - 1);
        marginal[sign << keep | mantissa] += n;
    }
    let n = a.count();
    let count = n as f64;
    // The bits below the 12-bit symbol, less the trailing zeros every value has (which a
    // payload drops; none is dropped where low bytes are coded).
    let tz = a.trailing_zeros();
    let below = (bits - h).saturating_sub(tz);
    // Whether low bytes may be coded (otherwise the whole residual is raw).
    let low_coded = tz == 0 && a.layout().bytes() == 4 && below >= 16 && n >= split::LOW_MIN_VALUES;
    // The residual area alone: at least `below` raw bits per value, 16 fewer where low bytes
    // may be coded.
    let raw = (u64::from(below - if low_coded { 16 } else { 0 }) * n as u64 / 8) as usize;
    let bytes = |bits: f64| {
        // Rounding of the sums is far below one part in 10^9.
        let coded = (bits * (1.0 - 1e-9) / 8.0).floor() as usize;
        let huffman = coded + HUFFMAN_FIXED;
        if n < split::ans::MIN_VALUES {
            huffman
        } else {
            let rans = (coded + RANS_FIXED)
                .saturating_sub(SLACK)
                .max(RANS_FIXED + raw);
            huffman.min(rans)
        }
    };
    if !low_coded {
        // No low byte is coded: the whole residual is raw.
        return bytes(float::entropy(&marginal) + f64::from(below) * count);
    }
    // The two low bytes may be coded: at least their entropy each, and at least nothing.
    let floor = float::entropy(&marginal) + f64::from(below - 16) * count;
    if bytes(floor) > limit {
        return bytes(floor);
    }
    // Counted a block at a time, stopping as soon as the values counted so far prove the
    // limit exceeded: entropy is concave, so the chunk's low bytes take at least the
    // entropy bits of any prefix's (`n·H(p) ≥ n₁·H(p₁) + n₂·H(p₂)` for `p` the mixture of
    // the prefix `p₁` and the rest `p₂`).
    let mut low = [[0u64; 256]; 2];
    let mut at_least = floor;
    for block in data.chunks(4 * LOW_BLOCK) {
        for v in block.chunks_exact(4) {
            low[0][usize::from(v[0])] += 1;
            low[1][usize::from(v[1])] += 1;
        }
        at_least = floor + float::entropy(&low[0]) + float::entropy(&low[1]);
        if bytes(at_least) > limit {
            break;
        }
    }
    bytes(at_least)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{FloatLayout, Hints, ValueKind, encode_within, zstd_compress};
    use proptest::prelude::*;

    /// Normal-ish weights (a sum of uniforms) of `layout`, `n` values, scaled by `scale`.
    fn weights(layout: FloatLayout, n: usize, seed: u64, scale: f32) -> Vec<u8> {
        let mut x = seed | 1;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 40) as f32 / (1u64 << 24) as f32
        };
        let mut out = Vec::with_capacity(n * layout.bytes());
        for _ in 0..n {
            let v = (next() + next() + next() - 1.5) * scale;
            match layout.bytes() {
                4 => out.extend_from_slice(&v.to_le_bytes()),
                _ if layout == FloatLayout::BF16 => {
                    out.extend_from_slice(&half::bf16::from_f32(v).to_bits().to_le_bytes())
                }
                _ => out.extend_from_slice(&half::f16::from_f32(v).to_bits().to_le_bytes()),
            }
        }
        out
    }

    /// Clears the low `bits` bits of every value (4-byte values; a quarter as many for
    /// 2-byte ones): weights widened from a narrower precision.
    fn drop_low_bits(layout: FloatLayout, data: &mut [u8], bits: u32) {
        if layout.bytes() == 4 {
            for v in data.chunks_exact_mut(4) {
                let x = u32::from_le_bytes([v[0], v[1], v[2], v[3]]) >> bits << bits;
                v.copy_from_slice(&x.to_le_bytes());
            }
        } else {
            for v in data.chunks_exact_mut(2) {
                let x = u16::from_le_bytes([v[0], v[1]]) >> (bits / 4) << (bits / 4);
                v.copy_from_slice(&x.to_le_bytes());
            }
        }
    }

    /// `n` weights ([`weights`] of `seed` and `scale`) with `dropped` low bits cleared
    /// ([`drop_low_bits`]) and, for `repeat > 1`, in runs of `repeat` equal values (which
    /// zstd and the symbol codes see differently).
    fn chunk(
        layout: FloatLayout,
        n: usize,
        (seed, scale): (u64, f32),
        dropped: u32,
        repeat: usize,
    ) -> Vec<u8> {
        let mut data = weights(layout, n, seed, scale);
        drop_low_bits(layout, &mut data, dropped);
        if repeat > 1 {
            let b = layout.bytes();
            for i in 0..n {
                let j = i / repeat * repeat;
                data.copy_within(j * b..j * b + b, i * b);
            }
        }
        data
    }

    /// Whenever the bound says `data` exceeds a `fraction` of its exact size, that size is
    /// above the limit and the full search finds nothing within it.
    fn no_candidate_fits_when_exceeding(
        layout: FloatLayout,
        data: &[u8],
        h: Hints,
        fraction: f64,
    ) -> Result<(), TestCaseError> {
        let kind = ValueKind::Float(layout);
        let exact = encode_within(kind, data, h, usize::MAX).unwrap();
        let limit = (exact.payload.len() as f64 * fraction) as usize;
        let a = Analysis::new(layout, data);
        if exceeds(&a, data, limit) {
            prop_assert!(exact.payload.len() > limit);
            prop_assert!(encode_within(kind, data, h, limit).is_none());
        }
        Ok(())
    }

    fn hints(row_len: usize) -> Hints {
        Hints {
            zstd_level: 3,
            row_len,
            period: 0,
        }
    }

    #[test]
    fn bounds_weights_below_their_exact_size() {
        for (layout, n) in [
            (FloatLayout::BF16, 1 << 18),
            (FloatLayout::F16, 1 << 18),
            (FloatLayout::F32, 1 << 17),
        ] {
            let data = weights(layout, n, 7, 0.02);
            let kind = ValueKind::Float(layout);
            let exact = encode_within(kind, &data, hints(512), usize::MAX)
                .unwrap()
                .payload
                .len();
            let a = Analysis::new(layout, &data);
            // With no limit to exceed, the low bytes are counted too.
            let floor = field_split_floor(
                &a,
                &data,
                layout.bits(),
                a.hist_bits(),
                layout.exp_bits,
                usize::MAX,
            );
            assert!(floor <= exact, "{layout:?}: floor {floor} > exact {exact}");
            // Tight enough to rule out a lossy form of about 3/4 of the exact bits.
            assert!(
                floor > exact * 7 / 10,
                "{layout:?}: floor {floor}, exact {exact}"
            );
            assert!(exceeds(&a, &data, exact * 3 / 4), "{layout:?}");
            assert!(!exceeds(&a, &data, exact));
        }
    }

    #[test]
    fn low_bytes_counted_until_the_limit_is_proven_exceeded() {
        // Several blocks of F32 weights (and an odd tail): with no limit every low byte is
        // counted; with a limit well below the exact size the count stops early, and what it
        // returns still proves the limit exceeded and bounds the exact size.
        let layout = FloatLayout::F32;
        let n = 3 * LOW_BLOCK + 1001;
        let data = weights(layout, n, 11, 0.02);
        let kind = ValueKind::Float(layout);
        let exact = encode_within(kind, &data, hints(384), usize::MAX)
            .unwrap()
            .payload
            .len();
        let a = Analysis::new(layout, &data);
        let floor = |limit| {
            field_split_floor(
                &a,
                &data,
                layout.bits(),
                a.hist_bits(),
                layout.exp_bits,
                limit,
            )
        };
        let whole = floor(usize::MAX);
        assert!(whole <= exact, "floor {whole} > exact {exact}");
        for fraction in [0.45, 0.6, 0.75] {
            let limit = (exact as f64 * fraction) as usize;
            let early = floor(limit);
            assert!(early > limit, "{fraction}: {early} <= {limit}");
            assert!(early <= whole, "{fraction}: {early} > {whole}");
            assert!(exceeds(&a, &data, limit), "{fraction}");
            assert!(encode_within(kind, &data, hints(384), limit).is_none());
        }
        // Where the first block proves it, the rest is not counted.
        assert!(floor((exact as f64 * 0.45) as usize) < whole);
        // A limit the low bytes cannot prove exceeded: counted to the end.
        assert_eq!(floor(whole - 1), whole);
    }

    #[test]
    fn bounds_hold_where_zstd_or_dropped_bits_win() {
        // Every value the same: a few dozen bytes (one symbol of no bits, no residual).
        let same: Vec<u8> = std::iter::repeat_n(0x3f80u16.to_le_bytes(), 1 << 16)
            .flatten()
            .collect();
        let kind = ValueKind::Float(FloatLayout::BF16);
        let exact = encode_within(kind, &same, hints(0), usize::MAX).unwrap();
        assert!(exact.payload.len() < 64, "{}", exact.payload.len());
        let a = Analysis::new(FloatLayout::BF16, &same);
        assert!(!exceeds(&a, &same, exact.payload.len()));
        // Values that zstd codes far below any field split: runs of a few distinct values.
        let runs: Vec<u8> = (0..1u32 << 16)
            .flat_map(|i| {
                half::bf16::from_f32(((i / 4096) % 3) as f32 * 0.37 - 0.41)
                    .to_bits()
                    .to_le_bytes()
            })
            .collect();
        let exact = encode_within(kind, &runs, hints(0), usize::MAX).unwrap();
        let a = Analysis::new(FloatLayout::BF16, &runs);
        assert!(!exceeds(&a, &runs, exact.payload.len()));
        // F32 values widened from BF16: their 16 zero low bits are dropped, so they cost
        // about as much as the BF16 values.
        let bf16 = weights(FloatLayout::BF16, 1 << 16, 3, 1.0);
        let wide: Vec<u8> = bf16
            .chunks_exact(2)
            .flat_map(|b| [0, 0, b[0], b[1]])
            .collect();
        let kind = ValueKind::Float(FloatLayout::F32);
        let exact = encode_within(kind, &wide, hints(0), usize::MAX).unwrap();
        assert!(exact.payload.len() < bf16.len());
        let a = Analysis::new(FloatLayout::F32, &wide);
        assert!(!exceeds(&a, &wide, exact.payload.len()));
        assert!(exceeds(&a, &wide, exact.payload.len() * 3 / 4));
    }

    #[test]
    fn zstd_predicted_to_win_is_bounded_by_its_size() {
        // An embedding's optimizer moment: the rows of tokens never seen are zero, which
        // zstd's prediction sees, yet the rest keeps the chunk far above a lossy form.
        let mut data = weights(FloatLayout::F32, 256 * 192, 5, 1e-4);
        for row in data.chunks_exact_mut(192 * 4).skip(1).step_by(2) {
            row.fill(0);
        }
        let kind = ValueKind::Float(FloatLayout::F32);
        let exact = encode_within(kind, &data, hints(192), usize::MAX).unwrap();
        let a = Analysis::new(FloatLayout::F32, &data);
        assert!(zstd_wins_over(zstd_predicted(&data), split::size_bound(&a)));
        let limit = exact.payload.len() / 2;
        assert!(exceeds(&a, &data, limit));
        assert!(encode_within(kind, &data, hints(192), limit).is_none());
        assert!(!exceeds(&a, &data, exact.payload.len()));
    }

    #[test]
    fn bounds_small_chunks_by_their_fixed_bytes_and_raw_bits() {
        // Chunks of a BatchNorm vector's size: the entropy of a few dozen values is small,
        // but every float-split payload carries its header, tables and stream sizes, and the
        // rANS ones their 32 states, beside the raw residual.
        for n in [24usize, 32, 63, 64, 96, 192, 1000, 4095] {
            let data = weights(FloatLayout::F32, n, 11, 0.3);
            let kind = ValueKind::Float(FloatLayout::F32);
            let exact = encode_within(kind, &data, hints(0), usize::MAX).unwrap();
            // About what int16 stores.
            let limit = data.len() * 6 / 10;
            assert!(
                exact.payload.len() > limit,
                "n {n}: exact {}",
                exact.payload.len()
            );
            let a = Analysis::new(FloatLayout::F32, &data);
            assert!(exceeds(&a, &data, limit), "n {n}");
            assert!(encode_within(kind, &data, hints(0), limit).is_none());
        }
        // A small chunk that zstd shrinks is not bounded below its zstd size.
        let same: Vec<u8> = std::iter::repeat_n(0.5f32.to_le_bytes(), 1000)
            .flatten()
            .collect();
        let a = Analysis::new(FloatLayout::F32, &same);
        let z = zstd_compress(&same, ZSTD_FLOAT_LEVEL).len();
        assert!(!exceeds(&a, &same, z));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// [`exceeding_means_no_candidate_fits`] on chunks below the zstd probe's size, down
        /// to a few values, with row and kernel hints.
        #[test]
        fn small_chunks_exceeding_means_no_candidate_fits(
            layout in prop_oneof![
                Just(FloatLayout::BF16),
                Just(FloatLayout::F16),
                Just(FloatLayout::F32),
            ],
            seed in any::<u64>(),
            scale in prop_oneof![Just(1e-3f32), Just(0.05f32), Just(3.0f32)],
            n in 1usize..4200,
            repeat in 1usize..4,
            shape in prop_oneof![Just((0usize, 0usize)), Just((16, 0)), Just((0, 9))],
            dropped in prop_oneof![Just(0u32), Just(7), Just(13), Just(16)],
            fraction in 0.3f64..1.0,
        ) {
            let (row_len, period) = shape;
            let whole = |k: usize| k > 0 && n.is_multiple_of(k);
            let h = Hints {
                zstd_level: 3,
                row_len: if whole(row_len) { row_len } else { 0 },
                period: if whole(period) { period } else { 0 },
            };
            let data = chunk(layout, n, (seed, scale), dropped, repeat);
            no_candidate_fits_when_exceeding(layout, &data, h, fraction)?;
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// Whenever the bound says the chunk exceeds a limit, the full search finds nothing
        /// within it (release builds skip the search on that word).
        #[test]
        fn exceeding_means_no_candidate_fits(
            layout in prop_oneof![
                Just(FloatLayout::BF16),
                Just(FloatLayout::F16),
                Just(FloatLayout::F32),
            ],
            seed in any::<u64>(),
            scale in prop_oneof![Just(1e-3f32), Just(0.05f32), Just(3.0f32)],
            repeat in 1usize..4,
            row_len in prop_oneof![Just(0usize), Just(64usize), Just(256usize)],
            dropped in prop_oneof![Just(0u32), Just(7), Just(13), Just(16)],
            fraction in 0.3f64..1.0,
        ) {
            let data = chunk(layout, 16_384, (seed, scale), dropped, repeat);
            no_candidate_fits_when_exceeding(layout, &data, hints(row_len), fraction)?;
        }
    }
}
