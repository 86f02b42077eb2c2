//! Floating-grid quantization (codec 9): lossy, every value on the floating grid of
//! [`crate::fgrid`], for tensors whose values span many binades (optimizer second moments).
//!
//! A value keeps its sign, exponent and the top `m` fraction bits (rounded half to even):
//! `|x − x̂| <= 2^−(m+1) · |x|`, and no non-zero value becomes 0. Values off the grid (NaN,
//! ±Inf, −0, subnormals, values that round into Inf) are *escapes*: stored as their exact bits.
//!
//! Payload:
//!
//! ```text
//! u8 version (1) | u8 value bytes (2, 4) | u8 exponent bits | u8 m (kept fraction bits)
//! varint count | varint escapes
//! escapes > 0: ints::encode_unsigned block of the gaps before each escape
//!              (position − end of the previous escape), then the escaped values' bytes
//! ints::encode_signed block of the coordinates of the other values, in order
//! ```

use crate::fgrid::{self, FloatGrid};
use crate::{CodecError, FloatLayout, escapes};

/// Payload format version.
const VERSION: u8 = 1;
/// Fixed header bytes (version, layout, m).
const HEADER: usize = 4;

/// Quantizes `data` on the floating grid of `m` kept fraction bits ([`crate::fgrid::coordinate`]);
/// values off the grid are escaped and stored exactly. Returns the self-describing payload and
/// the order-0 entropy bound in bits (integer coder bound plus raw escape bits and their
/// positions).
///
/// # Panics
/// If `layout` is not supported ([`crate::fgrid::supports`]), `m` exceeds its fraction bits, or
/// `data` is not whole values.
pub fn encode(layout: FloatLayout, data: &[u8], m: u32) -> (Vec<u8>, f64) {
    let (g, b) = grid_for(layout, data, m, "fquant::encode");
    let count = data.len() / b;
    let split = match b {
        2 => escapes::scan::<2>(data, |raw| g.coordinate(raw)),
        _ => escapes::scan::<4>(data, |raw| g.coordinate(raw)),
    };
    let mut out = Vec::with_capacity(HEADER + 16 + count * (m as usize + 2) / 8);
    out.extend_from_slice(&[VERSION, b as u8, layout.exp_bits as u8, m as u8]);
    let entropy = escapes::put(&split, &mut out);
    (out, entropy)
}

/// The grid of the public encoders and restorers, after checking their arguments (`what`
/// names the caller in the panic message); also the value width in bytes.
fn grid_for(layout: FloatLayout, data: &[u8], m: u32, what: &str) -> (FloatGrid, usize) {
    let g = FloatGrid::new(layout, m)
        .unwrap_or_else(|| panic!("{what}: unsupported dtype or fraction width"));
    let b = layout.bytes();
    assert!(
        data.len().is_multiple_of(b),
        "{what}: data is not whole values"
    );
    (g, b)
}

/// The bytes that [`decode`] of [`encode`]`(layout, data, m)` restores, computed from the
/// values directly (no payload): every value on the grid becomes the value of its coordinate,
/// every escape keeps its bits. Also what a float-grid quantized delta restores
/// ([`crate::delta::encode_float_quantized`]). Tests check it against the decoder.
///
/// # Panics
/// As [`encode`].
pub fn restore(layout: FloatLayout, data: &[u8], m: u32) -> Vec<u8> {
    let (g, b) = grid_for(layout, data, m, "fquant::restore");
    let mut out = vec![0u8; data.len()];
    let level = crate::cpu::Level::detected();
    match b {
        2 => crate::cpu::dispatch(
            level,
            #[inline(always)]
            || restore_plain::<2>(g, data, &mut out),
        ),
        _ => crate::cpu::dispatch(
            level,
            #[inline(always)]
            || restore_plain::<4>(g, data, &mut out),
        ),
    }
    out
}

/// [`restore`]'s pass: every value through [`fgrid::Rounding::round`], branch-free so that the
/// compiler vectorizes it (the floating grid holds every optimizer moment at int16).
#[inline(always)]
fn restore_plain<const B: usize>(g: FloatGrid, data: &[u8], out: &mut [u8]) {
    let r = g.rounding();
    for (v, o) in data.chunks_exact(B).zip(out.chunks_exact_mut(B)) {
        let x = crate::float::load::<B>(v) as u32;
        o.copy_from_slice(&r.round(x).to_le_bytes()[..B]);
    }
}

/// [`restore`], and in the same pass a lower bound on the size of [`encode`]'s payload (as
/// [`crate::quant::restore_bounded`]).
///
/// # Panics
/// As [`encode`].
pub fn restore_bounded(layout: FloatLayout, data: &[u8], m: u32) -> (Vec<u8>, usize) {
    let (g, b) = grid_for(layout, data, m, "fquant::restore");
    let mut out = vec![0u8; data.len()];
    let mut qs = Vec::with_capacity(data.len() / b);
    match b {
        2 => restore_width::<2>(g, data, &mut out, &mut qs),
        _ => restore_width::<4>(g, data, &mut out, &mut qs),
    }
    let bound = HEADER + crate::quant::body_lower_bound(&qs, data.len() / b, b);
    (out, bound)
}

/// [`restore_bounded`]'s pass: what every value restores (into `out`), and the zigzagged
/// coordinates of the values on the grid (into `qs`).
fn restore_width<const B: usize>(g: FloatGrid, data: &[u8], out: &mut [u8], qs: &mut Vec<u64>) {
    for (v, o) in data.chunks_exact(B).zip(out.chunks_exact_mut(B)) {
        let raw = crate::float::load::<B>(v);
        let r = match g.coordinate(raw) {
            Some(q) => {
                qs.push(crate::ints::zigzag(q));
                g.value(q).unwrap_or(raw)
            }
            None => raw,
        };
        o.copy_from_slice(&r.to_le_bytes()[..B]);
    }
}

/// Decodes a payload of [`encode`] into `out` (the chunk's raw length): every value is
/// [`crate::fgrid::value`] of its coordinate or its exact escaped bits. Never panics; allocates
/// `O(out.len())`; corrupt input gives [`CodecError::Corrupt`].
pub fn decode(payload: &[u8], out: &mut [u8]) -> Result<(), CodecError> {
    let (head, layout) = escapes::head(payload, HEADER, VERSION, fgrid::supports, &MESSAGES)?;
    let g = FloatGrid::new(layout, u32::from(head[3])).ok_or(CodecError::Corrupt(
        "fquant payload has an invalid fraction width",
    ))?;
    let b = layout.bytes();
    let body = escapes::get(payload, HEADER, b, out.len(), &MESSAGES)?;
    if body.qs.iter().any(|&q| g.value(q).is_none()) {
        return Err(CodecError::Corrupt("fquant integer beyond the grid"));
    }
    // Every integer is checked: the fallback never happens.
    let value = |q: i64| g.value(q).unwrap_or(0);
    match b {
        2 => escapes::fill::<2>(&body, out, value),
        _ => escapes::fill::<4>(&body, out, value),
    }
    Ok(())
}

/// The reader's messages for the escapes and coordinates.
const MESSAGES: escapes::Messages = escapes::Messages {
    header: "fquant payload header truncated",
    version: "unknown fquant payload version",
    dtype: "fquant payload has an unknown dtype",
    count: "fquant payload value count disagrees with chunk size",
    too_many: "fquant payload has too many escapes",
    position: "fquant escape position out of range",
    truncated: "fquant escaped values truncated",
    trailing: "fquant payload has trailing bytes",
};

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    use proptest::prelude::*;

    const LAYOUTS: [FloatLayout; 3] = [FloatLayout::BF16, FloatLayout::F16, FloatLayout::F32];

    pub(crate) fn to_bytes(layout: FloatLayout, vals: &[u64]) -> Vec<u8> {
        vals.iter()
            .flat_map(|v| v.to_le_bytes()[..layout.bytes()].to_vec())
            .collect()
    }

    /// What decoding must give: every value on the grid, or exactly itself when escaped.
    pub(crate) fn expected(layout: FloatLayout, m: u32, data: &[u8]) -> Vec<u8> {
        let vals: Vec<u64> = crate::quant::tests::raw_values(layout, data)
            .into_iter()
            .map(|x| {
                fgrid::coordinate(layout, m, x).map_or(x, |q| fgrid::value(layout, m, q).unwrap())
            })
            .collect();
        to_bytes(layout, &vals)
    }

    /// The branch-free restore against coordinate-then-value on every 16-bit pattern at
    /// every width, and on F32 patterns around every binade edge and rounding boundary, on
    /// every CPU level.
    #[test]
    fn restore_is_coordinate_then_value_on_every_pattern() {
        for level in crate::cpu::Level::available() {
            crate::cpu::with_level(level, restore_matches_on_every_pattern);
        }
    }

    fn restore_matches_on_every_pattern() {
        let every: Vec<u64> = (0..=u64::from(u16::MAX)).collect();
        for layout in [FloatLayout::BF16, FloatLayout::F16] {
            let data = to_bytes(layout, &every);
            for m in 0..=fgrid::max_fraction_bits(layout) {
                assert!(
                    restore(layout, &data, m) == expected(layout, m, &data),
                    "{layout:?} m {m}"
                );
            }
        }
        let mut f32s = Vec::new();
        for e in 0u64..=255 {
            for sign in [0u64, 1 << 31] {
                let base = sign | e << 23;
                f32s.extend(
                    [
                        0, 1, 2, 3, 0x3F_FFFF, 0x40_0000, 0x40_0001, 0x7F_FFFF, 0x7F_FFFE,
                    ]
                    .map(|f| base | f),
                );
                f32s.extend(
                    (0..23)
                        .flat_map(|b| {
                            [base | (1 << b), base | ((1 << b) - 1), base | (3 << b >> 1)]
                        })
                        .map(|v| v & 0xFFFF_FFFF),
                );
            }
        }
        let data = to_bytes(FloatLayout::F32, &f32s);
        for m in 0..=23 {
            assert!(
                restore(FloatLayout::F32, &data, m) == expected(FloatLayout::F32, m, &data),
                "F32 m {m}"
            );
        }
    }

    /// Encodes and decodes; checks the model and idempotence. Returns the payload.
    fn check(layout: FloatLayout, data: &[u8], m: u32) -> Vec<u8> {
        let (enc, entropy) = encode(layout, data, m);
        assert!(entropy >= 0.0);
        let mut out = vec![0xA5u8; data.len()];
        decode(&enc, &mut out).unwrap();
        assert!(out == expected(layout, m, data), "{layout:?} m {m}");
        assert!(restore(layout, data, m) == out, "restore {layout:?} m {m}");
        let (restored, bound) = restore_bounded(layout, data, m);
        assert!(
            restored == out && bound <= enc.len(),
            "{bound} {}",
            enc.len()
        );
        let (again, _) = encode(layout, &out, m);
        let mut twice = vec![0u8; data.len()];
        decode(&again, &mut twice).unwrap();
        assert!(twice == out, "idempotent");
        enc
    }

    /// Special bit patterns of `layout`: zeros, infinities, NaN payloads, subnormals, the
    /// largest finite values and values that round into the next binade or into Inf.
    pub(crate) fn specials(layout: FloatLayout) -> Vec<u64> {
        let w = layout.bits();
        let f = fgrid::max_fraction_bits(layout);
        let sign = 1u64 << (w - 1);
        let inf = ((1u64 << layout.exp_bits) - 1) << f;
        let one = ((1u64 << (layout.exp_bits - 1)) - 1) << f;
        let mut v = vec![
            0,
            sign,
            inf,
            inf | sign,
            inf | 1,
            inf | sign | 3,
            inf | 1 << (f - 1),
            1,
            sign | 1,
            (1 << f) - 1,
            1 << f,
            sign | 1 << f,
            inf - 1,
            sign | (inf - 1),
            inf - 1 - (1 << (f / 2)),
            one,
            one | ((1 << f) - 1),
            sign | one | ((1 << f) - 1),
            one | 1 << (f - 1),
            one | 3 << (f - 2),
        ];
        for k in 0..f {
            // Exact ties and just above them at every width.
            v.push(one | 1 << k);
            v.push(sign | (inf - (1 << k)));
            v.push(inf - (1 << k) - 1);
        }
        v
    }

    /// The specials of `layout` followed by `n` random bit patterns.
    fn mixed(layout: FloatLayout, n: usize, seed: u64) -> Vec<u8> {
        let mut vals = specials(layout);
        vals.extend(crate::pseudo_u64(n, seed).map(|x| x & (u64::MAX >> (64 - layout.bits()))));
        to_bytes(layout, &vals)
    }

    #[test]
    fn specials_every_width() {
        for layout in LAYOUTS {
            let data = mixed(layout, 300, 5);
            for m in 0..=fgrid::max_fraction_bits(layout) {
                check(layout, &data, m);
                check(layout, &data[..data.len() - layout.bytes()], m);
            }
        }
    }

    #[test]
    fn empty_and_short() {
        for layout in LAYOUTS {
            for n in [0usize, 1, 2, 3, 5, 7] {
                let vals: Vec<u64> = crate::pseudo_u64(n, 9 + n as u64)
                    .map(|x| x & (u64::MAX >> (64 - layout.bits())))
                    .collect();
                check(layout, &to_bytes(layout, &vals), 3);
                check(layout, &to_bytes(layout, &specials(layout)[..n]), 0);
            }
        }
    }

    /// Standard normal samples (Box–Muller on the crate's test generator).
    pub(crate) fn normals(n: usize, seed: u64) -> Vec<f64> {
        let u: Vec<f64> = crate::pseudo_u64(n + 1, seed)
            .map(|x| ((x >> 11) as f64 + 0.5) / (1u64 << 53) as f64)
            .collect();
        u.windows(2)
            .map(|p| (-2.0 * p[0].ln()).sqrt() * (std::f64::consts::TAU * p[1]).cos())
            .collect()
    }

    /// Adam `exp_avg_sq`-like F32 values: `|N(0,1)|² · 10^U(−20, 0)`, about 60 binades.
    pub(crate) fn adam_like(n: usize, seed: u64) -> Vec<u8> {
        let e = crate::pseudo_u64(n, seed ^ 0x5EED);
        normals(n, seed)
            .into_iter()
            .zip(e)
            .flat_map(|(z, e)| {
                let u = (e >> 11) as f64 / (1u64 << 53) as f64;
                ((z * z * 10f64.powf(-20.0 * u)) as f32).to_le_bytes()
            })
            .collect()
    }

    #[test]
    fn adam_like_relative_error_is_bounded() {
        let data = adam_like(200_000, 7);
        let xs: Vec<f32> = data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        let (lo, hi) = xs
            .iter()
            .filter(|x| **x > 0.0)
            .fold((f32::MAX, 0f32), |(a, b), &x| (a.min(x), b.max(x)));
        assert!(
            (hi / lo).log2() > 60.0,
            "spans {} binades",
            (hi / lo).log2()
        );
        for m in [0u32, 3, 7, 10, 23] {
            let enc = check(FloatLayout::F32, &data, m);
            let mut out = vec![0u8; data.len()];
            decode(&enc, &mut out).unwrap();
            for (&x, c) in xs.iter().zip(out.chunks_exact(4)) {
                let y = f32::from_le_bytes(c.try_into().unwrap());
                assert!(x == 0.0 || y != 0.0, "{x} became 0");
                let err = (f64::from(x) - f64::from(y)).abs();
                assert!(
                    err <= f64::from(x).abs() * 2f64.powi(-(m as i32) - 1),
                    "{x} -> {y}"
                );
            }
        }
    }

    #[test]
    fn truncated_and_corrupt_payloads_error() {
        for layout in LAYOUTS {
            let data = mixed(layout, 500, 11);
            let (enc, _) = encode(layout, &data, 4);
            let mut out = vec![0u8; data.len()];
            crate::check_damaged(&enc, |p| decode(p, &mut out));
        }
        let mut out = vec![0u8; 64];
        for (head, msg) in [
            (vec![1u8, 2, 8], "fquant payload header truncated"),
            (vec![2, 2, 8, 3, 32, 0], "unknown fquant payload version"),
            (
                vec![1, 8, 11, 3, 8, 0],
                "fquant payload has an unknown dtype",
            ),
            (
                vec![1, 2, 8, 8, 32, 0],
                "fquant payload has an invalid fraction width",
            ),
            (
                vec![1, 2, 5, 10, 31, 0],
                "fquant payload value count disagrees with chunk size",
            ),
            (
                vec![1, 2, 5, 10, 32, 33],
                "fquant payload has too many escapes",
            ),
        ] {
            assert_eq!(decode(&head, &mut out), Err(CodecError::Corrupt(msg)));
        }
        // A coordinate beyond the finite range: BF16 m = 0 has 255 binades.
        let mut p = vec![1u8, 2, 8, 0, 1, 0];
        p.extend(crate::ints::encode_signed(&[255]));
        assert_eq!(
            decode(&p, &mut [0u8; 2]),
            Err(CodecError::Corrupt("fquant integer beyond the grid"))
        );
        for seed in 0..200u64 {
            let mut junk = crate::pseudo_bytes(30 + seed as usize, seed + 1);
            junk[..4].copy_from_slice(&[VERSION, 2, 8, (seed % 9) as u8]);
            let _ = decode(&junk, &mut out);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]
        #[test]
        fn random_bits_round_trip(
            seed in any::<u64>(),
            n in 0usize..300,
            li in 0usize..3,
            m in 0u32..24,
            special in any::<bool>(),
        ) {
            let layout = LAYOUTS[li];
            let m = m.min(fgrid::max_fraction_bits(layout));
            let mut vals: Vec<u64> = crate::pseudo_u64(n, seed)
                .map(|x| x & (u64::MAX >> (64 - layout.bits())))
                .collect();
            if special {
                let s = specials(layout);
                for (i, v) in vals.iter_mut().enumerate().filter(|(i, _)| i % 3 == 0) {
                    *v = s[(i / 3 + seed as usize) % s.len()];
                }
            }
            check(layout, &to_bytes(layout, &vals), m);
        }
    }
}
