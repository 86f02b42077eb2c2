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

fn narrow(to: FloatLayout, x: f32) -> u16 {
    if to == FloatLayout::BF16 {
        half::bf16::from_f32(x).to_bits()
    } else {
        half::f16::from_f32(x).to_bits()
    }
}

fn widen(to: FloatLayout, b: u16) -> f32 {
    if to == FloatLayout::BF16 {
        half::bf16::from_bits(b).to_f32()
    } else {
        half::f16::from_bits(b).to_f32()
    }
}

/// Encodes little-endian `f32` values as `to` (bfloat16 or half). Returns the payload and the
/// order-0 entropy bound of the narrow values under the inner codec's field split.
pub fn encode(to: FloatLayout, data: &[u8], hints: Hints) -> (Vec<u8>, f64) {
    let narrow_bytes: Vec<u8> = data
        .chunks_exact(4)
        .flat_map(|c| narrow(to, f32::from_le_bytes([c[0], c[1], c[2], c[3]])).to_le_bytes())
        .collect();
    // No column transform (codec 16) and no row transform over rANS (codec 17): a reader of
    // an archive's minor version, which counts the chunk's codec (8) and not the one nested
    // here, must be able to decode it. Where codec 17 won, the rows over codec 10 (codec 11)
    // compete with the untransformed candidates instead.
    let hints = Hints { period: 0, ..hints };
    let mut inner = crate::encode_with(ValueKind::Float(to), &narrow_bytes, hints);
    if inner.codec == Codec::FloatSplitRansRows {
        let plain = crate::encode_with(
            ValueKind::Float(to),
            &narrow_bytes,
            Hints {
                row_len: 0,
                ..hints
            },
        );
        inner = crate::rows::encode_huffman(to, &narrow_bytes, hints.row_len, plain.payload.len())
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
    let (payload, bits) = encode(to, data, hints);
    let restored = data
        .chunks_exact(4)
        .flat_map(|c| {
            let n = narrow(to, f32::from_le_bytes([c[0], c[1], c[2], c[3]]));
            widen(to, n).to_le_bytes()
        })
        .collect();
    (payload, bits, restored)
}

/// How many finite little-endian `f32` values of `data` become ±Inf when cast to `to`.
pub fn overflows(to: FloatLayout, data: &[u8]) -> u64 {
    data.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .filter(|x| x.is_finite() && !widen(to, narrow(to, *x)).is_finite())
        .count() as u64
}

/// How many finite non-zero little-endian `f32` values of `data` become ±0 when cast to `to`
/// (below half the narrow type's smallest subnormal: about 3.0e-8 for half, 4.6e-41 for
/// bfloat16).
pub fn underflows(to: FloatLayout, data: &[u8]) -> u64 {
    data.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .filter(|x| x.is_finite() && *x != 0.0 && widen(to, narrow(to, *x)) == 0.0)
        .count() as u64
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
    for (o, n) in out.chunks_exact_mut(4).zip(narrow_bytes.chunks_exact(2)) {
        o.copy_from_slice(&widen(to, u16::from_le_bytes([n[0], n[1]])).to_le_bytes());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
