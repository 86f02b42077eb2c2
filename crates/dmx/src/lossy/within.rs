//! The exact alternative of a lossy chunk, only when it fits: [`lossless_within`].
//!
//! A lossy chunk is stored exactly when that is no larger (issue 11, finding 8), so the writer
//! needs the lossless encoding only when its size reaches the lossy payload's. Cheap bounds
//! (the float codec's histogram plan, the row transform's and zstd's sampled estimates) rule
//! it out in the common case without coding anything; whenever they cannot, the full
//! [`dmx_codec::encode_with`] runs, so a result is always exactly its output.

use dmx_codec::{Encoded, Hints, ValueKind, float, rows, split};

/// Bytes a float-codec payload can come out below its plan's size bound (one per stream;
/// with room to spare).
const PLAN_SLACK: usize = 16;

/// The row transform is tried when its sampled gain reaches 0.005 bit per value
/// (`rows::encode`); below this it cannot be.
const ROWS_GATE: f64 = 0.004;

/// Bytes of the zstd probe on float data (`dmx_codec::encode_with`).
const ZSTD_PROBE: usize = 16 * 1024;

/// `dmx_codec::encode_with(kind, data, hints)` when its payload is at most `limit` bytes, else
/// `None`, without coding when bounds show that no lossless candidate (float codec, row
/// transform, zstd, raw) can reach `limit`.
pub(crate) fn lossless_within(
    kind: ValueKind,
    data: &[u8],
    hints: Hints,
    limit: usize,
) -> Option<Encoded> {
    let full =
        || Some(dmx_codec::encode_with(kind, data, hints)).filter(|e| e.payload.len() <= limit);
    let ValueKind::Float(layout) = kind else {
        return full();
    };
    let slack = limit.saturating_add(PLAN_SLACK);
    if data.is_empty() || !data.len().is_multiple_of(layout.bytes()) || data.len() <= slack {
        return full();
    }
    // The plain float candidate of `encode_with`: codec 10 where it applies, else codec 2
    // (both sizes exact but for one byte per stream).
    let a = float::Analysis::new(layout, data);
    let plain_size = if split::supports(layout) {
        split::best_plan(&a, Some(data)).size
    } else {
        a.best_plan().size
    };
    if plain_size <= slack {
        return full();
    }
    let count = data.len() / layout.bytes();
    if rows::applies(layout, hints.row_len, count) {
        // The gate of `rows::encode`, on the same sample.
        let stride = (count / hints.row_len / 32).clamp(1, 8);
        let (_, gain) = rows::row_bases(layout, data, hints.row_len, stride, false);
        if gain >= ROWS_GATE {
            return full();
        }
    }
    if zstd_may_be_tried(data, plain_size) {
        return full();
    }
    None
}

/// Whether `encode_with` may try zstd on float data whose float payload is `float_size`: its
/// own sampled prediction, with a margin (it tries below 98 % of the float size).
fn zstd_may_be_tried(data: &[u8], float_size: usize) -> bool {
    if data.len() <= ZSTD_PROBE {
        return true;
    }
    let slice = ZSTD_PROBE / 4;
    let mut sample = Vec::with_capacity(ZSTD_PROBE);
    for i in 0..4 {
        let start = (data.len() - slice) * i / 3;
        sample.extend_from_slice(&data[start..start + slice]);
    }
    // zstd level 1 as `encode_with` probes (capped at the sample's size: a lower estimate,
    // so the test stays conservative).
    let z = dmx_codec::encode(ValueKind::Bytes, &sample, 1)
        .payload
        .len() as f64;
    let predicted = z * data.len() as f64 / sample.len() as f64;
    predicted < float_size as f64 * 1.02
}

#[cfg(test)]
mod tests {
    use super::*;
    use dmx_codec::FloatLayout;

    /// Inputs of every kind the lossless writer handles differently: weights (float codec),
    /// rows of different scales (row transform), repeated and zero values (zstd), noise (raw).
    fn inputs() -> Vec<(ValueKind, Vec<u8>, Hints)> {
        let hints = |row_len| Hints {
            zstd_level: 3,
            row_len,
        };
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut out = Vec::new();
        for layout in [FloatLayout::BF16, FloatLayout::F16, FloatLayout::F32] {
            let b = layout.bytes();
            for n in [1usize, 7, 1000, 40_000, 300_000] {
                let weights: Vec<u8> = (0..n)
                    .flat_map(|i| {
                        let r = (next() >> 11) as f64 / (1u64 << 53) as f64 - 0.5;
                        let scale = if (i / 512) % 2 == 0 { 0.02 } else { 3.0 };
                        let v = dmx_codec::grid::from_f64(layout, r * scale);
                        v.to_le_bytes()[..b].to_vec()
                    })
                    .collect();
                out.push((ValueKind::Float(layout), weights.clone(), hints(0)));
                out.push((ValueKind::Float(layout), weights.clone(), hints(512)));
                let repeated: Vec<u8> = weights
                    .chunks(64)
                    .flat_map(|_| weights[..64.min(weights.len())].to_vec())
                    .take(weights.len())
                    .collect();
                out.push((ValueKind::Float(layout), repeated, hints(0)));
                out.push((ValueKind::Float(layout), vec![0u8; n * b], hints(0)));
                let noise: Vec<u8> = (0..n * b).map(|_| next() as u8).collect();
                out.push((ValueKind::Float(layout), noise, hints(64)));
            }
        }
        out.push((
            ValueKind::Bytes,
            (0..5000u32).map(|i| (i % 7) as u8).collect(),
            hints(0),
        ));
        out
    }

    /// Within a limit: exactly `encode_with`'s output when it fits, else nothing.
    #[test]
    fn within_is_encode_with_when_it_fits() {
        for (kind, data, hints) in inputs() {
            let e = dmx_codec::encode_with(kind, &data, hints);
            let n = e.payload.len();
            for limit in [
                0,
                n / 2,
                n * 9 / 10,
                n.saturating_sub(1),
                n,
                n + 1,
                n + 50,
                usize::MAX,
            ] {
                match lossless_within(kind, &data, hints, limit) {
                    Some(w) => {
                        assert!(n <= limit);
                        assert_eq!(
                            (w.codec, &w.payload, w.entropy_bits.to_bits()),
                            (e.codec, &e.payload, e.entropy_bits.to_bits())
                        );
                    }
                    None => assert!(n > limit, "{kind:?} {} limit {limit} size {n}", data.len()),
                }
            }
        }
    }
}
