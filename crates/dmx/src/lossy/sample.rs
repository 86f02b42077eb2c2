//! A sample of a chunk, coded both ways, that decides whether an integer grid is worth
//! trying on a chunk of 16-bit floats.
//!
//! A lossy writer keeps a chunk's exact form wherever it is no larger than the lossy one. On
//! 16-bit floats the integer grids seldom win: a value of 8 or 11 significant bits becomes an
//! integer of up to 16, and its exact form is the smaller on most chunks (MiniLM BF16: 131 of
//! 137 chunks), or within a few per cent (WordLlama F16). Coding such a chunk on the grid,
//! measuring its error and then throwing the result away cost twice the exact coding.
//!
//! So such a chunk is first sampled: eight evenly spread blocks of whole rows (or kernels), a
//! thirty-second of the chunk but at least 4 Ki values, are coded both ways. The grid is tried
//! only where its sample is at least [`GAIN`] smaller than the exact one; elsewhere the chunk
//! is stored exactly. A lossy form that would save less than that is not worth its error, and
//! the sample's estimate errs by far less than the margin on real weights (docs/CODECS.md §8).

use dmx_codec::{FloatLayout, ValueKind};

use super::Coding;

/// Blocks in a sample.
const BLOCKS: usize = 8;
/// The sample is about `1 / SHARE` of the chunk, and at least [`MIN_SAMPLE`] values (at most
/// a quarter of the chunk).
const SHARE: usize = 32;
/// Values a sample holds at least: enough that the tables of its two forms weigh little.
const MIN_SAMPLE: usize = 4096;
/// Chunks with fewer values are not sampled (their tables weigh too much in a sample).
pub(crate) const MIN_VALUES: usize = 1 << 14;
/// How much smaller than the exact sample the grid's sample must be for the grid to be tried.
const GAIN: f64 = 0.03;

/// Whether the chunk `data` (values `value`, `hints` as the writer gives them) is to be
/// stored exactly without trying `coding`, judged from a sample: true only for integer grids
/// on 16-bit floats (where the grid seldom wins), chunks of at least [`MIN_VALUES`] values,
/// and a sample of whole rows (or kernels) whose grid form is not at least [`GAIN`] smaller
/// than its exact form.
pub(crate) fn exact_by_sample(
    coding: Coding,
    value: ValueKind,
    data: &[u8],
    hints: dmx_codec::Hints,
) -> bool {
    let ValueKind::Float(layout) = value else {
        return false;
    };
    if !matches!(coding, Coding::Quant { .. }) || layout.bytes() != 2 {
        return false;
    }
    let Some((sample, hints)) = sample(layout, data, hints) else {
        return false;
    };
    let exact = dmx_codec::encode_with(value, &sample, hints);
    let lossy = coding.encode(value, &sample, hints, None);
    lossy.payload.len() as f64 > exact.payload.len() as f64 * (1.0 - GAIN)
}

/// [`BLOCKS`] evenly spread blocks of whole units, about `1 / SHARE` of the chunk, joined,
/// with the hints that hold for them. The units are rows of `hints.row_len` values where the
/// chunk has enough of them for the sample to stay within a quarter of it; else kernels of
/// `hints.period` values, else single values, and the sample is then coded without the row
/// hint (and without the kernel hint for single values): its two forms both lose what the row
/// structure gives them. `None` when the chunk is below [`MIN_VALUES`] values or has no such
/// units.
fn sample(
    layout: FloatLayout,
    data: &[u8],
    hints: dmx_codec::Hints,
) -> Option<(Vec<u8>, dmx_codec::Hints)> {
    let b = layout.bytes();
    let n = data.len() / b;
    if n < MIN_VALUES {
        return None;
    }
    let candidates = [
        (hints.row_len, hints),
        (
            hints.period,
            dmx_codec::Hints {
                row_len: 0,
                ..hints
            },
        ),
        (
            1,
            dmx_codec::Hints {
                row_len: 0,
                period: 0,
                ..hints
            },
        ),
    ];
    let want = (n / SHARE).max(MIN_SAMPLE);
    let (unit, per_block, hints) = candidates.into_iter().find_map(|(unit, hints)| {
        let per_block = want.div_ceil(BLOCKS * unit.max(1));
        let units = n / unit.max(1);
        (unit > 0 && units * unit == n && BLOCKS * per_block * 4 <= units)
            .then_some((unit, per_block, hints))
    })?;
    let stride = n / unit / BLOCKS;
    let bytes = per_block * unit * b;
    let mut out = Vec::with_capacity(BLOCKS * bytes);
    for k in 0..BLOCKS {
        let start = (k * stride + (stride - per_block) / 2) * unit * b;
        out.extend_from_slice(&data[start..start + bytes]);
    }
    Some((out, hints))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lossy::Grid;

    fn hints(row_len: usize) -> dmx_codec::Hints {
        dmx_codec::Hints {
            zstd_level: 3,
            row_len,
            period: 0,
        }
    }

    /// BF16 bytes of `n` values from `f`.
    fn bf16(n: usize, f: impl Fn(usize) -> f32) -> Vec<u8> {
        (0..n)
            .flat_map(|i| ((f(i).to_bits() >> 16) as u16).to_le_bytes())
            .collect()
    }

    #[test]
    fn samples_whole_rows_spread_over_the_chunk() {
        let n = 1 << 16;
        // Each value's bytes are its row index (rows of 64 values).
        let data: Vec<u8> = (0..n)
            .flat_map(|i| ((i / 64) as u16).to_le_bytes())
            .collect();
        let (s, h) = sample(FloatLayout::BF16, &data, hints(64)).expect("large enough");
        assert_eq!(h, hints(64));
        let rows: Vec<u16> = s
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        assert_eq!(rows.len(), (n / SHARE).max(MIN_SAMPLE));
        // Whole rows, in order, from every eighth of the chunk.
        for r in rows.chunks(64) {
            assert!(r.iter().all(|&x| x == r[0]));
        }
        let units = n / 64;
        for k in 0..BLOCKS {
            let first = rows[k * rows.len() / BLOCKS] as usize;
            assert!((k * units / BLOCKS..(k + 1) * units / BLOCKS).contains(&first));
        }
        // Too small, or not whole rows: no sample.
        assert!(sample(FloatLayout::BF16, &data[..MIN_VALUES * 2], hints(64)).is_some());
        assert!(sample(FloatLayout::BF16, &data[..MIN_VALUES * 2 - 2], hints(0)).is_none());
        assert_eq!(
            sample(FloatLayout::BF16, &data, hints(n / 32)).unwrap().1,
            hints(n / 32)
        );
        // Rows that do not fill the chunk, or too few of them: single values, coded without
        // the row hint; or kernels where the chunk is whole kernels.
        assert_eq!(
            sample(FloatLayout::BF16, &data, hints(3)).unwrap().1,
            hints(0)
        );
        assert_eq!(
            sample(FloatLayout::BF16, &data, hints(n / 16)).unwrap().1,
            hints(0)
        );
        let kernels = dmx_codec::Hints {
            period: 64,
            ..hints(n / 16)
        };
        let (s, h) = sample(FloatLayout::BF16, &data, kernels).unwrap();
        assert_eq!(
            h,
            dmx_codec::Hints {
                row_len: 0,
                ..kernels
            }
        );
        assert_eq!(s.len() / 2 % (BLOCKS * 64), 0);
    }

    proptest::proptest! {
        /// Any chunk length and row or kernel length: the sample is whole units of the
        /// chunk, within a quarter of it and at least `MIN_SAMPLE` values, or there is none
        /// (never a panic).
        #[test]
        fn samples_are_whole_units_within_the_chunk(
            units in 0usize..4000,
            row_len in proptest::prop_oneof![proptest::strategy::Just(0usize), 1usize..600],
            period in proptest::prop_oneof![proptest::strategy::Just(0usize), 1usize..600],
            extra in 0usize..3,
        ) {
            // Mostly whole units, sometimes a value or two over.
            let n = (units * [row_len, period, 64].into_iter().find(|&u| u > 0).unwrap()
                + extra / 2)
                .min(300_000);
            // Each value holds its index (BF16-sized, modulo 2^16).
            let data: Vec<u8> = (0..n).flat_map(|i| (i as u16).to_le_bytes()).collect();
            let hints = dmx_codec::Hints { zstd_level: 3, row_len, period };
            let Some((s, used)) = sample(FloatLayout::BF16, &data, hints) else {
                return Ok(());
            };
            // The rows as given, else kernels or single values without the row hint.
            let no_rows = dmx_codec::Hints { row_len: 0, ..hints };
            let plain = dmx_codec::Hints { period: 0, ..no_rows };
            let expected = used == hints || used == no_rows || used == plain;
            proptest::prop_assert!(expected, "hints {:?} gave {:?}", hints, used);
            let unit = [used.row_len, used.period, 1].into_iter().find(|&u| u > 0).unwrap();
            let values = s.len() / 2;
            proptest::prop_assert!(n >= MIN_VALUES && n % unit == 0);
            proptest::prop_assert!(values >= MIN_SAMPLE && values * 4 <= n);
            proptest::prop_assert_eq!(values % (BLOCKS * unit), 0);
            // Every block starts a unit and runs on in order.
            let per_block = values / BLOCKS;
            let mut last = None;
            for block in s.chunks_exact(per_block * 2) {
                let first = usize::from(u16::from_le_bytes([block[0], block[1]]));
                for (j, v) in block.chunks_exact(2).enumerate() {
                    let v = usize::from(u16::from_le_bytes([v[0], v[1]]));
                    proptest::prop_assert_eq!(v, (first + j) % 65536);
                }
                if n <= 65536 {
                    proptest::prop_assert_eq!(first % unit, 0);
                    proptest::prop_assert!(last.is_none_or(|l| first >= l + per_block));
                    last = Some(first);
                }
            }
        }
    }

    #[test]
    fn only_integer_grids_on_16_bit_floats_are_judged() {
        let n = 1 << 16;
        // Weights of a trained layer (about normal, largest 1): on an int16 grid most become
        // integers of 11 to 13 bits, where their exact BF16 form takes about 10.
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut uniform = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 11) as f32 / (1u64 << 53) as f32
        };
        let normal: Vec<f32> = (0..n)
            .map(|_| (uniform() + uniform() + uniform() + uniform() - 2.0) * 0.05)
            .collect();
        let data = bf16(n, |i| if i == 5 { 1.0 } else { normal[i] });
        let step = 1.0 / 32767.0;
        let int16 = Coding::Quant {
            grid: Grid::Linear(step),
            bits: 16,
        };
        let value = ValueKind::Float(FloatLayout::BF16);
        assert!(exact_by_sample(int16, value, &data, hints(256)));
        // Other codings and layouts are never judged.
        let bfp = Coding::Bfp(dmx_codec::bfp::Params {
            mantissa_bits: 7,
            group_size: 32,
        });
        assert!(!exact_by_sample(bfp, value, &data, hints(256)));
        let f32s: Vec<u8> = data
            .chunks_exact(2)
            .flat_map(|c| (u32::from(u16::from_le_bytes([c[0], c[1]])) << 16).to_le_bytes())
            .collect();
        let value32 = ValueKind::Float(FloatLayout::F32);
        assert!(!exact_by_sample(int16, value32, &f32s, hints(256)));
        // Values of full precision under a coarse grid: the grid form is the smaller.
        let coarse = bf16(n, |i| normal[i] * 20.0);
        let on = Coding::Quant {
            grid: Grid::Linear(1.0 / 64.0),
            bits: 16,
        };
        assert!(!exact_by_sample(on, value, &coarse, hints(256)));
    }
}
