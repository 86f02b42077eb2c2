//! Codec 8, cast: 32-bit floats rounded to bfloat16 or IEEE half (round to nearest even),
//! coded losslessly by [`crate::encode_with`], and widened back to 32-bit floats on decode,
//! so the restored file keeps its dtype while holding 16-bit values.
//!
//! Payload: one byte naming the narrow layout (0 bfloat16, 1 half), one byte with the inner
//! codec id, then the inner payload, which decodes to the narrow values. The inner codec is a
//! lossless float codec (0–3 and 10–12; the reader also takes 16, which writers before this
//! one could nest for convolution kernels: FORMAT.md §5.5). An archive's minor version
//! counts only its chunks' own codec ids, so the writer nests no codec newer than 12: it does
//! not offer the column transform (16) here.
//!
//! Error bound: half an ulp of the narrow type (relative at most 2⁻⁸ for bfloat16, 2⁻¹¹ for
//! half on normal values); finite values beyond the narrow type's range become ±Inf (half;
//! [`overflows`] counts them, and dmx stores such tensors exactly unless asked otherwise),
//! values below half the smallest subnormal become ±0 ([`underflows`] counts them; dmx casts
//! variances, optimizer moments and tensors over many binades to bfloat16 instead of half
//! when half would do that) and NaN stays NaN (its payload is truncated).

use crate::{Codec, CodecError, FloatLayout, Hints, ValueKind};

/// Whether values of `from` can be cast to `to` by this codec.
pub fn supports(from: FloatLayout, to: FloatLayout) -> bool {
    from == FloatLayout::F32 && (to == FloatLayout::BF16 || to == FloatLayout::F16)
}

/// `x` rounded to `to`, as the `half` crate rounds it (the definition the bulk conversions
/// below are tested against).
#[cfg(test)]
fn narrow(to: FloatLayout, x: f32) -> u16 {
    if to == FloatLayout::BF16 {
        half::bf16::from_f32(x).to_bits()
    } else {
        half::f16::from_f32(x).to_bits()
    }
}

/// `b` of `to` widened to `f32`, as the `half` crate widens it.
#[cfg(test)]
fn widen(to: FloatLayout, b: u16) -> f32 {
    if to == FloatLayout::BF16 {
        half::bf16::from_bits(b).to_f32()
    } else {
        half::f16::from_bits(b).to_f32()
    }
}

/// The little-endian `f32` values of `data` rounded to `to`, as little-endian 16-bit values.
/// Bit for bit what `half` gives one value at a time: bfloat16 by the same rounding written
/// without branches (so the loop vectorizes), half by `half`'s slice conversion (F16C where
/// the CPU has it, as its one-value conversion). Value by value through `half`, the casts
/// took 60 instructions per value.
fn narrow_all(to: FloatLayout, data: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; data.len() / 4 * 2];
    narrow_into(to, data, &mut out);
    out
}

/// [`narrow_all`] into `out` (half as long as `data`'s whole values).
fn narrow_into(to: FloatLayout, data: &[u8], out: &mut [u8]) {
    let n = data.len() / 4;
    if to == FloatLayout::BF16 {
        crate::cpu::dispatch(
            crate::cpu::Level::detected(),
            #[inline(always)]
            || {
                for (v, o) in data.chunks_exact(4).zip(out.chunks_exact_mut(2)) {
                    let x = u32::from_le_bytes([v[0], v[1], v[2], v[3]]);
                    o.copy_from_slice(&narrow_bf16(x).to_le_bytes());
                }
            },
        );
    } else {
        use half::slice::HalfFloatSliceExt;
        let wide: Vec<f32> = data
            .chunks_exact(4)
            .map(|v| f32::from_le_bytes([v[0], v[1], v[2], v[3]]))
            .collect();
        let mut narrow = vec![half::f16::ZERO; n];
        narrow.convert_from_f32_slice(&wide);
        for (h, o) in narrow.iter().zip(out.chunks_exact_mut(2)) {
            o.copy_from_slice(&h.to_le_bytes());
        }
    }
}

/// The 16-bit values of `to` in `narrow` widened into `out` as little-endian `f32` (twice as
/// long), bit for bit as `half` widens them (see [`narrow_all`]).
fn widen_into(to: FloatLayout, narrow: &[u8], out: &mut [u8]) {
    if to == FloatLayout::BF16 {
        crate::cpu::dispatch(
            crate::cpu::Level::detected(),
            #[inline(always)]
            || {
                for (n, o) in narrow.chunks_exact(2).zip(out.chunks_exact_mut(4)) {
                    let b = u16::from_le_bytes([n[0], n[1]]);
                    o.copy_from_slice(&widen_bf16(b).to_le_bytes());
                }
            },
        );
    } else {
        use half::slice::HalfFloatSliceExt;
        let halves: Vec<half::f16> = narrow
            .chunks_exact(2)
            .map(|n| half::f16::from_le_bytes([n[0], n[1]]))
            .collect();
        let mut wide = vec![0f32; halves.len()];
        halves.convert_to_f32_slice(&mut wide);
        for (w, o) in wide.iter().zip(out.chunks_exact_mut(4)) {
            o.copy_from_slice(&w.to_le_bytes());
        }
    }
}

/// The bits of `f32` bits `x` rounded to bfloat16: to nearest, ties to even; a NaN keeps its
/// upper bits with the quiet bit set (as `half::bf16::from_f32`).
#[inline(always)]
fn narrow_bf16(x: u32) -> u16 {
    // Round up when the first dropped bit (15) is set and any other dropped bit (0–14), or
    // the lowest kept bit (16), is too. No carry can leave 16 bits: only a NaN has all
    // upper bits set.
    let up = (x >> 15) & 1 & u32::from(x & 0x1_7FFF != 0);
    let rounded = ((x >> 16) + up) as u16;
    let quiet = ((x >> 16) | 0x40) as u16;
    if x & 0x7FFF_FFFF > 0x7F80_0000 {
        quiet
    } else {
        rounded
    }
}

/// The `f32` bits of bfloat16 bits `b`: a NaN gets the quiet bit (as `half::bf16::to_f32`).
#[inline(always)]
fn widen_bf16(b: u16) -> u32 {
    let quiet = u32::from(b & 0x7FFF > 0x7F80) << 6;
    u32::from(b | quiet as u16) << 16
}

/// Encodes little-endian `f32` values as `to` (bfloat16 or half). Returns the payload and the
/// order-0 entropy bound of the narrow values under the inner codec's field split.
pub fn encode(to: FloatLayout, data: &[u8], hints: Hints) -> (Vec<u8>, f64) {
    encode_narrow(to, &narrow_all(to, data), hints)
}

/// [`encode`] of the values already rounded to `to` (`narrow_bytes`).
fn encode_narrow(to: FloatLayout, narrow_bytes: &[u8], hints: Hints) -> (Vec<u8>, f64) {
    // No column transform (codec 16) and no row transform over rANS (codec 17): a reader of
    // an archive's minor version, which counts the chunk's codec (8) and not the one nested
    // here, must be able to decode it. Where codec 17 won, the rows over codec 10 (codec 11)
    // compete with the untransformed candidates instead.
    let hints = Hints { period: 0, ..hints };
    let mut inner = crate::encode_with(ValueKind::Float(to), narrow_bytes, hints);
    if inner.codec == Codec::FloatSplitRansRows {
        let plain = crate::encode_with(
            ValueKind::Float(to),
            narrow_bytes,
            Hints {
                row_len: 0,
                ..hints
            },
        );
        inner = crate::rows::encode_huffman(to, narrow_bytes, hints.row_len, plain.payload.len())
            .unwrap_or(plain);
    }
    let mut payload = Vec::with_capacity(inner.payload.len() + 2);
    payload.push(u8::from(to != FloatLayout::BF16));
    payload.push(inner.codec as u8);
    payload.extend_from_slice(&inner.payload);
    (payload, inner.entropy_bits)
}

/// [`encode`], also returning the bytes that [`decode`] of the payload restores: the narrow
/// values widened back (the inner codec is lossless), without decoding the payload. Tests check
/// it against the decoder.
pub fn encode_restored(to: FloatLayout, data: &[u8], hints: Hints) -> (Vec<u8>, f64, Vec<u8>) {
    let narrow_bytes = narrow_all(to, data);
    let (payload, bits) = encode_narrow(to, &narrow_bytes, hints);
    let mut restored = vec![0u8; narrow_bytes.len() * 2];
    widen_into(to, &narrow_bytes, &mut restored);
    (payload, bits, restored)
}

/// Values [`count_round_trips`] casts at a time: its buffers stay this small whatever the
/// tensor's size (it runs on whole tensors while a file is planned, several at once).
const ROUND_TRIP_BLOCK: usize = 1 << 14;

/// How many values of `data` (little-endian `f32`) `keep` holds for, given each value and
/// the value it becomes when cast to `to` and back.
fn count_round_trips(to: FloatLayout, data: &[u8], keep: impl Fn(f32, f32) -> bool) -> u64 {
    let mut narrow = vec![0u8; 2 * ROUND_TRIP_BLOCK];
    let mut back = vec![0u8; 4 * ROUND_TRIP_BLOCK];
    let value = |v: &[u8]| f32::from_le_bytes([v[0], v[1], v[2], v[3]]);
    let mut count = 0;
    for block in data.chunks(4 * ROUND_TRIP_BLOCK) {
        let n = block.len() / 4;
        narrow_into(to, block, &mut narrow[..2 * n]);
        widen_into(to, &narrow[..2 * n], &mut back[..4 * n]);
        count += block
            .chunks_exact(4)
            .zip(back.chunks_exact(4))
            .filter(|(a, b)| keep(value(a), value(b)))
            .count() as u64;
    }
    count
}

/// How many finite little-endian `f32` values of `data` become ±Inf when cast to `to`.
pub fn overflows(to: FloatLayout, data: &[u8]) -> u64 {
    count_round_trips(to, data, |x, y| x.is_finite() && !y.is_finite())
}

/// How many finite non-zero little-endian `f32` values of `data` become ±0 when cast to `to`
/// (below half the narrow type's smallest subnormal: about 3.0e-8 for half, 4.6e-41 for
/// bfloat16).
pub fn underflows(to: FloatLayout, data: &[u8]) -> u64 {
    count_round_trips(to, data, |x, y| x.is_finite() && x != 0.0 && y == 0.0)
}

/// Decodes a cast payload into `out` (the 32-bit values).
pub fn decode(payload: &[u8], out: &mut [u8]) -> Result<(), CodecError> {
    let [layout, codec, inner @ ..] = payload else {
        return Err(CodecError::Corrupt("cast payload too short"));
    };
    let to = match layout {
        0 => FloatLayout::BF16,
        1 => FloatLayout::F16,
        _ => return Err(CodecError::Corrupt("unknown cast layout")),
    };
    // A byte of the payload, not the chunk record's codec: say so if it is unknown.
    let codec = Codec::from_id(*codec)
        .map_err(|_| CodecError::Corrupt("cast payload names an unknown inner codec"))?;
    if !matches!(
        codec,
        Codec::Raw
            | Codec::Zstd
            | Codec::FloatHuff
            | Codec::FloatHuffRows
            | Codec::FloatSplit
            | Codec::FloatSplitRows
            | Codec::FloatSplitRans
            | Codec::FloatSplitRansCols
    ) {
        return Err(CodecError::Corrupt(
            "cast payload nests a non-lossless codec",
        ));
    }
    if !out.len().is_multiple_of(4) {
        return Err(CodecError::Corrupt(
            "cast output is not a whole number of f32",
        ));
    }
    let mut narrow_bytes = vec![0u8; out.len() / 2];
    crate::decode(codec, inner, &mut narrow_bytes)?;
    widen_into(to, &narrow_bytes, out);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bulk conversions against `half` one value at a time: every 16-bit pattern widened,
    /// and narrowed from `f32` patterns around every rounding case (ties, carries into the
    /// exponent, overflow to ±Inf, subnormals, NaN payloads), at every CPU level.
    #[test]
    fn bulk_conversions_are_half_s() {
        let mut wide: Vec<u32> = Vec::new();
        for hi in (0..=u16::MAX)
            .step_by(7)
            .chain([0x7F7F, 0x7F80, 0xFF7F, 0x0000, 0x8000])
        {
            for lo in [0, 1, 0x7FFF, 0x8000, 0x8001, 0xFFFF, 0x4000, 0xC000] {
                wide.push(u32::from(hi) << 16 | lo);
            }
        }
        wide.extend([
            0x7F80_0001,
            0xFFC0_0000,
            0x7FFF_FFFF,
            0x3380_0000,
            0x3300_0001,
        ]);
        let data: Vec<u8> = wide.iter().flat_map(|v| v.to_le_bytes()).collect();
        let all16: Vec<u8> = (0..=u16::MAX).flat_map(u16::to_le_bytes).collect();
        for to in [FloatLayout::BF16, FloatLayout::F16] {
            for level in crate::cpu::Level::available() {
                crate::cpu::with_level(level, || {
                    let got = narrow_all(to, &data);
                    for (x, g) in wide.iter().zip(got.chunks_exact(2)) {
                        let want = narrow(to, f32::from_bits(*x));
                        assert_eq!(u16::from_le_bytes([g[0], g[1]]), want, "{to:?} {x:#010x}");
                    }
                    let mut back = vec![0u8; all16.len() * 2];
                    widen_into(to, &all16, &mut back);
                    for (b, w) in all16.chunks_exact(2).zip(back.chunks_exact(4)) {
                        let b = u16::from_le_bytes([b[0], b[1]]);
                        let want = widen(to, b).to_bits();
                        assert_eq!(
                            u32::from_le_bytes([w[0], w[1], w[2], w[3]]),
                            want,
                            "{to:?} {b:#06x}"
                        );
                    }
                });
            }
        }
    }

    fn hints() -> Hints {
        Hints {
            zstd_level: 3,
            row_len: 0,
            period: 0,
        }
    }

    /// The inner codec is a payload byte: an unknown one is a corrupt payload, never
    /// reported as the chunk's codec id (the chunk record says 8).
    #[test]
    fn an_unknown_inner_codec_is_a_corrupt_payload() {
        let err = decode(&[0, 162, 1, 2, 3], &mut [0u8; 8]).unwrap_err();
        assert!(matches!(err, CodecError::Corrupt(_)), "{err:?}");
        assert!(!err.to_string().contains("codec id"), "{err}");
    }

    /// 3×3 kernels whose taps differ in scale by binades: the column transform (codec 16)
    /// wins on their narrow values.
    fn kernels() -> Vec<u8> {
        (0..9 * 4096u32)
            .flat_map(|i| {
                let tap = (i % 9) as i32;
                let u = (i.wrapping_mul(2_654_435_761) >> 8) as f32 / (1u32 << 24) as f32;
                let x = (u - 0.5) * 2f32.powi(-tap);
                x.to_le_bytes()
            })
            .collect()
    }

    /// Rows skewed around a level each, whose narrow values take codec 17 on their own: the
    /// cast nests codec 11 or an untransformed codec instead, and restores the narrow values.
    #[test]
    fn rows_nest_no_rans_row_transform() {
        let mut rng = crate::pseudo_u64(usize::MAX, 0x9E37_79B9_7F4A_7C15);
        let mut next = || rng.next().expect("unbounded");
        let data: Vec<u8> = (0..64 * 128usize)
            .flat_map(|i| {
                let r = next();
                let exp = 100 + (i / 128 % 23) as u32 - u32::from(r.is_multiple_of(10));
                let bits = exp << 7 | (r >> 8) as u32 & 0x0f;
                f32::from_bits(bits << 16).to_le_bytes()
            })
            .collect();
        let rows = Hints {
            row_len: 128,
            ..hints()
        };
        let narrow_bytes: Vec<u8> = data
            .chunks_exact(4)
            .flat_map(|c| {
                narrow(FloatLayout::BF16, f32::from_le_bytes(c.try_into().unwrap())).to_le_bytes()
            })
            .collect();
        let alone = crate::encode_with(ValueKind::Float(FloatLayout::BF16), &narrow_bytes, rows);
        assert_eq!(alone.codec, Codec::FloatSplitRansRows);
        let (p, _, restored) = encode_restored(FloatLayout::BF16, &data, rows);
        assert!(
            p[1] != Codec::FloatSplitRansRows as u8 && p[1] != Codec::FloatSplitRansCols as u8,
            "nests codec {}",
            p[1]
        );
        assert_eq!(restored, data, "bfloat16 values cast exactly");
        let mut out = vec![0u8; data.len()];
        decode(&p, &mut out).unwrap();
        assert_eq!(out, restored);
        // No writer nests codec 17, and readers refuse it.
        let mut nested = vec![0u8, alone.codec as u8];
        nested.extend_from_slice(&alone.payload);
        assert!(decode(&nested, &mut out).is_err());
    }

    /// The writer nests no codec an archive's minor version does not announce (16, the column
    /// transform, is counted only as a chunk's own codec), and the reader takes the codec-16
    /// payloads earlier writers nested for convolution kernels.
    #[test]
    fn kernels_nest_no_column_transform_and_old_nestings_decode() {
        let data = kernels();
        let with_period = Hints {
            period: 9,
            ..hints()
        };
        for to in [FloatLayout::BF16, FloatLayout::F16] {
            let narrow_bytes: Vec<u8> = data
                .chunks_exact(4)
                .flat_map(|c| narrow(to, f32::from_le_bytes(c.try_into().unwrap())).to_le_bytes())
                .collect();
            let nested = crate::encode_with(ValueKind::Float(to), &narrow_bytes, with_period);
            assert_eq!(nested.codec, Codec::FloatSplitRansCols, "{to:?}");
            let (p, _, restored) = encode_restored(to, &data, with_period);
            assert!(
                p[1] <= Codec::FloatSplitRans as u8,
                "{to:?}: nests codec {}",
                p[1]
            );
            let mut out = vec![0u8; data.len()];
            decode(&p, &mut out).unwrap();
            assert_eq!(out, restored);
            // What writers before this one stored.
            let mut old = vec![u8::from(to != FloatLayout::BF16), nested.codec as u8];
            old.extend_from_slice(&nested.payload);
            let mut out = vec![0u8; data.len()];
            decode(&old, &mut out).unwrap();
            assert_eq!(out, restored, "{to:?}");
        }
    }

    #[test]
    fn round_trip_is_the_narrow_value() {
        let xs: Vec<f32> = (0..5000)
            .map(|i| ((i as f32) * 0.37).sin() * 0.05)
            .chain([0.0, -0.0, f32::INFINITY, f32::NEG_INFINITY, 1e-40, 70000.0])
            .collect();
        let data: Vec<u8> = xs.iter().flat_map(|x| x.to_le_bytes()).collect();
        for to in [FloatLayout::BF16, FloatLayout::F16] {
            let (p, _) = encode(to, &data, hints());
            let mut out = vec![0u8; data.len()];
            decode(&p, &mut out).unwrap();
            for (x, o) in xs.iter().zip(out.chunks_exact(4)) {
                let got = f32::from_le_bytes([o[0], o[1], o[2], o[3]]);
                assert_eq!(got.to_bits(), widen(to, narrow(to, *x)).to_bits());
            }
        }
    }

    /// The encoder's restored bytes are the decoder's, NaN payloads and overflows included.
    #[test]
    fn restored_is_what_decode_gives() {
        let mut data: Vec<u8> = crate::pseudo_bytes(4 * 3000, 9);
        data.extend(
            [
                0.0f32,
                -0.0,
                1e-40,
                70000.0,
                3.4e38,
                f32::NAN,
                -f32::INFINITY,
            ]
            .iter()
            .flat_map(|x| x.to_le_bytes()),
        );
        data.extend(0x7F80_0001u32.to_le_bytes());
        data.extend(0xFFC1_2345u32.to_le_bytes());
        for to in [FloatLayout::BF16, FloatLayout::F16] {
            let (p, bits, restored) = encode_restored(to, &data, hints());
            let (p2, bits2) = encode(to, &data, hints());
            assert_eq!(
                (p.as_slice(), bits.to_bits()),
                (p2.as_slice(), bits2.to_bits())
            );
            let mut out = vec![0u8; data.len()];
            decode(&p, &mut out).unwrap();
            assert!(restored == out, "{to:?}");
        }
    }

    #[test]
    fn nan_stays_nan() {
        let data = f32::NAN.to_le_bytes().repeat(3);
        let (p, _) = encode(FloatLayout::BF16, &data, hints());
        let mut out = vec![0u8; 12];
        decode(&p, &mut out).unwrap();
        assert!(f32::from_le_bytes([out[0], out[1], out[2], out[3]]).is_nan());
    }

    #[test]
    fn corrupt_payloads_fail() {
        let data: Vec<u8> = (0..400u32).flat_map(|i| (i as f32).to_le_bytes()).collect();
        let (p, _) = encode(FloatLayout::BF16, &data, hints());
        let mut out = vec![0u8; data.len()];
        for cut in 0..p.len() {
            let _ = decode(&p[..cut], &mut out);
        }
        assert!(decode(&[9, 0], &mut out).is_err());
        assert!(decode(&[0, 8, 1], &mut out).is_err());
        let mut odd = vec![0u8; 6];
        assert!(decode(&p, &mut odd).is_err());
    }

    #[test]
    fn underflows_counts_non_zero_values_that_become_zero() {
        let vals = [
            1e-10f32,
            -2e-8,
            3.5e-8,
            6e-8,
            1e-3,
            0.0,
            -0.0,
            f32::NAN,
            1e-45,
        ];
        let data: Vec<u8> = vals.iter().flat_map(|v| v.to_le_bytes()).collect();
        // Half: 1e-10, -2e-8 and 1e-45 round to ±0; 3.5e-8 rounds up to the smallest
        // subnormal (5.96e-8).
        assert_eq!(underflows(FloatLayout::F16, &data), 3);
        // bfloat16 has F32's exponent range: only the F32 subnormal 1e-45 is lost.
        assert_eq!(underflows(FloatLayout::BF16, &data), 1);
        assert_eq!(overflows(FloatLayout::F16, &data), 0);
    }

    /// The counts over several blocks of [`count_round_trips`] (and a partial one) are the
    /// counts value by value through `half`.
    #[test]
    fn round_trip_counts_span_blocks() {
        let n = 3 * ROUND_TRIP_BLOCK + 5;
        let vals: Vec<f32> = crate::pseudo_u64(n, 17)
            .map(|r| match r % 11 {
                0 => 1e5 * (r % 7) as f32,
                1 => 1e-9,
                2 => -3e-41,
                _ => f32::from_bits(r as u32),
            })
            .collect();
        let data: Vec<u8> = vals.iter().flat_map(|v| v.to_le_bytes()).collect();
        for to in [FloatLayout::BF16, FloatLayout::F16] {
            let back = |x: f32| widen(to, narrow(to, x));
            let over = vals
                .iter()
                .filter(|x| x.is_finite() && !back(**x).is_finite())
                .count() as u64;
            let under = vals
                .iter()
                .filter(|x| x.is_finite() && **x != 0.0 && back(**x) == 0.0)
                .count() as u64;
            assert!(under > 0, "{to:?}");
            assert_eq!(overflows(to, &data), over, "{to:?}");
            assert_eq!(underflows(to, &data), under, "{to:?}");
        }
    }
}
