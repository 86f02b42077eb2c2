use super::*;
use crate::grid;
use proptest::prelude::*;

const LAYOUTS: [FloatLayout; 6] = [
    FloatLayout::BF16,
    FloatLayout::F16,
    FloatLayout::F32,
    FloatLayout::F64,
    FloatLayout::F8_E4M3,
    FloatLayout::F8_E5M2,
];

fn round_trip(kind: ValueKind, base: &[u8], target: &[u8]) -> usize {
    let (payload, bits) = encode(kind, base, target);
    assert!(bits >= 0.0);
    let mut out = vec![0xA5u8; target.len()];
    decode(&payload, base, &mut out).unwrap();
    assert!(out == target, "variant {} mismatch", payload[0]);
    // The counted floor is below the order payload's integer block.
    if let ValueKind::Float(layout) = kind
        && matches!(layout.bytes(), 1 | 2 | 4 | 8)
        && layout.exp_bits >= 1
        && layout.exp_bits + 1 < layout.bits()
        && target.len().is_multiple_of(layout.bytes())
    {
        let order = AnyOrder::plan(layout, base, target).finish(layout).0;
        let floor = order_size_floor(layout, base, target);
        assert!(floor <= order.len() - ORDER_HEAD, "{floor} {}", order.len());
    }
    // Within a limit: exactly `encode`'s payload when it fits, else nothing.
    let n = payload.len();
    for limit in [0, n / 2, n.saturating_sub(1), n, n + 1, n + 100, usize::MAX] {
        match encode_within(kind, base, target, limit) {
            Some((p, b)) => {
                assert!(n <= limit, "limit {limit}, size {n}");
                assert_eq!((p, b.to_bits()), (payload.clone(), bits.to_bits()));
            }
            None => assert!(n > limit, "limit {limit}, size {n}"),
        }
    }
    payload.len()
}

/// Values near `scale` with a small relative change in the target.
fn pair(layout: FloatLayout, n: usize, seed: u64) -> (Vec<u8>, Vec<u8>) {
    let r = crate::pseudo_bytes(n * 8, seed);
    let mut base = Vec::new();
    let mut target = Vec::new();
    for c in r.chunks_exact(8) {
        let u = (u32::from_le_bytes(c[..4].try_into().unwrap()) as f64 / 4e9 - 0.5) * 0.1;
        let d = (u32::from_le_bytes(c[4..].try_into().unwrap()) as f64 / 4e9 - 0.5) * 1e-4;
        let bv = grid::from_f64(layout, u);
        let tv = grid::from_f64(layout, u + d);
        base.extend_from_slice(&bv.to_le_bytes()[..layout.bytes()]);
        target.extend_from_slice(&tv.to_le_bytes()[..layout.bytes()]);
    }
    (base, target)
}

fn specials(layout: FloatLayout) -> Vec<u8> {
    let w = layout.bits();
    let m = layout.exp_bits;
    let sign = 1u64 << (w - 1);
    let inf = ((1u64 << m) - 1) << (w - 1 - m);
    let vals = [
        0,
        sign,
        inf,
        inf | sign,
        inf | 1,
        inf | sign | 3,
        inf | (1 << (w - 2 - m)),
        1,
        sign | 1,
        (inf - 1) & !sign,
        (inf - 1) | sign,
        1 << (w - 1 - m),
        u64::MAX >> (64 - w),
    ];
    vals.iter()
        .flat_map(|v| v.to_le_bytes()[..layout.bytes()].to_vec())
        .collect()
}

#[test]
fn lossless_every_layout() {
    for layout in LAYOUTS {
        let kind = ValueKind::Float(layout);
        for n in [0usize, 1, 2, 3, 5, 17, 1000, 4099] {
            let (b, t) = pair(layout, n, 7 + n as u64);
            round_trip(kind, &b, &t);
            round_trip(kind, &b, &b);
            round_trip(kind, &t, &b);
            let r = crate::pseudo_bytes(t.len(), 99);
            round_trip(kind, &b, &r);
            round_trip(kind, &r, &t);
        }
        let s = specials(layout);
        let mut rev: Vec<u8> = s.chunks(layout.bytes()).rev().flatten().copied().collect();
        round_trip(kind, &s, &rev);
        round_trip(kind, &rev, &s);
        rev.rotate_left(layout.bytes());
        round_trip(kind, &s, &rev);
        // Every special against every special.
        let n = s.len() / layout.bytes();
        let mut b = Vec::new();
        let mut t = Vec::new();
        for i in 0..n {
            for j in 0..n {
                b.extend_from_slice(&s[i * layout.bytes()..(i + 1) * layout.bytes()]);
                t.extend_from_slice(&s[j * layout.bytes()..(j + 1) * layout.bytes()]);
            }
        }
        round_trip(kind, &b, &t);
    }
}

/// The order variant's differences in the values' own word type are the 64-bit definition,
/// on every bit pattern class (specials, random words, every special against every other).
#[test]
fn typed_order_differences_are_the_definition() {
    fn check<const B: usize, W: OrderWord<B>>(layout: FloatLayout) {
        let s = specials(layout);
        let r = crate::pseudo_bytes(4096 * B, 5);
        let values: Vec<&[u8]> = s.chunks_exact(B).chain(r.chunks_exact(B)).collect();
        for (i, &b) in values.iter().enumerate() {
            for &t in values
                .iter()
                .skip(i % 7)
                .step_by(97)
                .chain(&values[..s.len() / B])
            {
                let want = order_diff::<B>(load::<B>(b), t);
                assert_eq!(W::diff(b, t).wide(), want, "{layout:?} {b:?} {t:?}");
            }
        }
    }
    check::<1, u16>(FloatLayout::F8_E4M3);
    check::<2, u16>(FloatLayout::BF16);
    check::<4, u32>(FloatLayout::F32);
    check::<8, u64>(FloatLayout::F64);
}

/// The order variant codes the same payload whatever CPU level its passes run at.
#[test]
fn order_payloads_agree_across_cpu_levels() {
    use crate::cpu::{Level, with_level};
    for layout in LAYOUTS {
        let (b, t) = pair(layout, 5003, 11);
        let run = |level| with_level(level, || encode(ValueKind::Float(layout), &b, &t));
        let want = run(Level::SCALAR);
        // (8-bit values barely change in `pair`: the target equals the base.)
        if layout.bytes() >= 2 {
            assert_eq!(want.0[0], ORDER, "{layout:?}");
        }
        for level in Level::available() {
            assert_eq!(run(level), want, "{layout:?} {}", level.name());
        }
    }
}

/// The writer's early question: the bounds it is asked with enclose the order payload it
/// then codes, declining changes nothing, and accepting codes nothing.
#[test]
fn encode_unless_brackets_the_order_payload() {
    let mut asked = 0;
    for layout in LAYOUTS {
        for n in [1000usize, 5003, 70_000] {
            let (b, t) = pair(layout, n, 3 + n as u64);
            let kind = ValueKind::Float(layout);
            let want = encode(kind, &b, &t);
            let mut bounds = None;
            let got = encode_unless(kind, &b, &t, usize::MAX, |lower, high| {
                bounds = Some((lower, high));
                false
            });
            assert_eq!(got.as_ref(), Some(&want), "{layout:?} {n}");
            if let Some((lower, high)) = bounds {
                asked += 1;
                assert_eq!(want.0[0], ORDER);
                assert!(
                    lower <= want.0.len() && want.0.len() <= high,
                    "{layout:?} {n}"
                );
                assert!(encode_unless(kind, &b, &t, usize::MAX, |_, _| true).is_none());
            }
        }
    }
    assert!(asked >= 8, "{asked}");
}

#[test]
fn bytes_and_partial_values() {
    let b = crate::pseudo_bytes(10_001, 1);
    let mut t = b.clone();
    for i in (0..t.len()).step_by(97) {
        t[i] = t[i].wrapping_add(3);
    }
    let size = round_trip(ValueKind::Bytes, &b, &t);
    assert!(size < 1500, "{size}");
    round_trip(ValueKind::Float(FloatLayout::F32), &b, &t);
    // Counters: element-wise difference is constant.
    let b: Vec<u8> = (0..100_000u64)
        .flat_map(|i| (i * 3).to_le_bytes())
        .collect();
    let t: Vec<u8> = (0..100_000u64)
        .flat_map(|i| (i * 3 + 5).to_le_bytes())
        .collect();
    let size = round_trip(ValueKind::Bytes, &b, &t);
    assert!(size < 200, "{size}");
    round_trip(ValueKind::Bytes, &[], &[]);
    round_trip(ValueKind::Bytes, &[1], &[2]);
}

#[test]
fn small_changes_compress() {
    let (b, t) = pair(FloatLayout::F32, 50_000, 3);
    let size = round_trip(ValueKind::Float(FloatLayout::F32), &b, &t);
    let plain = crate::encode(ValueKind::Float(FloatLayout::F32), &t, 3)
        .payload
        .len();
    assert!(size < plain * 9 / 10, "{size} vs {plain}");
    // Sparse changes.
    let mut t = b.clone();
    for i in (0..t.len()).step_by(4 * 1000) {
        t[i] ^= 1;
    }
    let size = round_trip(ValueKind::Float(FloatLayout::F32), &b, &t);
    assert!(size < 2000, "{size}");
}

fn check_corruption(payload: &[u8], base: &[u8], len: usize) {
    let mut out = vec![0u8; len];
    for cut in 0..payload.len() {
        assert!(
            decode(&payload[..cut], base, &mut out).is_err(),
            "cut {cut} of {}",
            payload.len()
        );
    }
    for i in 0..payload.len() {
        for flip in [1u8, 0x40, 0xFF] {
            let mut bad = payload.to_vec();
            bad[i] ^= flip;
            let _ = decode(&bad, base, &mut out);
        }
    }
    if !base.is_empty() {
        let mut out = vec![0u8; len];
        assert!(decode(payload, &base[1..], &mut out).is_err());
    }
    let mut longer = payload.to_vec();
    longer.push(0);
    // Trailing bytes are rejected (zstd may tolerate none; no panic either way).
    let _ = decode(&longer, base, &mut out);
}

#[test]
fn corrupt_and_truncated_payloads_error() {
    for layout in [FloatLayout::BF16, FloatLayout::F32, FloatLayout::F64] {
        let kind = ValueKind::Float(layout);
        let (b, t) = pair(layout, 301, 5);
        let (p, _) = encode(kind, &b, &t);
        check_corruption(&p, &b, t.len());
        let mut sparse = b.clone();
        sparse[7] ^= 1;
        let (p, _) = encode(kind, &b, &sparse);
        check_corruption(&p, &b, t.len());
        let (p, _) = encode(kind, &b, &b);
        check_corruption(&p, &b, t.len());
        let step = grid::step_for(0.05, 16);
        let mut t2 = t.clone();
        t2[..layout.bytes()]
            .copy_from_slice(&specials(layout)[2 * layout.bytes()..3 * layout.bytes()]);
        let (p, _) = encode_quantized(layout, &b, &t2, step, 16);
        check_corruption(&p, &b, t.len());
    }
    let b = crate::pseudo_bytes(300, 2);
    let (p, _) = encode(ValueKind::Bytes, &b, &crate::pseudo_bytes(300, 3));
    check_corruption(&p, &b, 300);
}

#[test]
fn unrelated_values_use_xor_float() {
    // Uniform values in a narrow range against unrelated ones: the XOR keeps the sign and
    // exponent fields nearly constant, which the field-split codec exploits.
    let layout = FloatLayout::F32;
    let (b, _) = pair(layout, 1000, 31);
    let (t, _) = pair(layout, 1000, 32);
    let t: Vec<u8> = t
        .chunks_exact(4)
        .zip(b.chunks_exact(4))
        .flat_map(|(t, b)| {
            // Same sign and exponent as the base, unrelated mantissa.
            let (t, b) = (load_any(t) as u32, load_any(b) as u32);
            ((b & 0xFF80_0000) | (t & 0x007F_FFFF)).to_le_bytes()
        })
        .collect();
    let (p, _) = encode(ValueKind::Float(layout), &b, &t);
    assert_eq!(p[0], XOR_FLOAT);
    round_trip(ValueKind::Float(layout), &b, &t);
    check_corruption(&p, &b, t.len());
}

/// What a quantized delta must decode to.
fn expected_quant(layout: FloatLayout, t: &[u8], step: f64, bits: u32) -> Vec<u8> {
    t.chunks_exact(layout.bytes())
        .flat_map(|v| {
            let raw = load_any(v);
            match grid::quantize(grid::to_f64(layout, raw), step, bits) {
                Some(q) => {
                    grid::dequantize(layout, q, step).to_le_bytes()[..layout.bytes()].to_vec()
                }
                None => v.to_vec(),
            }
        })
        .collect()
}

/// Values of `t` equal to `b`'s bits, or at the same coordinate (both on the grid), counted
/// separately from the encoder.
fn unchanged(layout: FloatLayout, b: &[u8], t: &[u8], coord: impl Fn(u64) -> Option<i64>) -> u64 {
    b.chunks_exact(layout.bytes())
        .zip(t.chunks_exact(layout.bytes()))
        .filter(|(x, y)| {
            let (x, y) = (load_any(x), load_any(y));
            x == y || coord(x).is_some_and(|q| coord(y) == Some(q))
        })
        .count() as u64
}

fn quant_round_trip(layout: FloatLayout, b: &[u8], t: &[u8], step: f64, bits: u32) -> usize {
    let (p, e) = encode_quantized(layout, b, t, step, bits);
    let (p2, e2, same) = encode_quantized_counted(layout, b, t, step, bits);
    assert_eq!((&p, e.to_bits()), (&p2, e2.to_bits()));
    let coord = |raw| grid::quantize(grid::to_f64(layout, raw), step, bits);
    assert_eq!(same, unchanged(layout, b, t, coord));
    let mut out = vec![0u8; t.len()];
    decode_quantized(&p, b, &mut out).unwrap();
    assert_eq!(out, expected_quant(layout, t, step, bits));
    // The same values as the target quantized alone.
    assert_eq!(out, crate::quant::restore(layout, t, step, bits));
    p.len()
}

#[test]
fn quantized_deltas() {
    for layout in [
        FloatLayout::BF16,
        FloatLayout::F16,
        FloatLayout::F32,
        FloatLayout::F64,
    ] {
        for bits in [16, 32] {
            for n in [0usize, 1, 3, 1001] {
                let (b, t) = pair(layout, n, 11 + n as u64);
                let step = grid::step_for(0.05, bits);
                quant_round_trip(layout, &b, &t, step, bits);
                quant_round_trip(layout, &b, &b, step, bits);
                // Beyond the grid: half the range.
                quant_round_trip(layout, &b, &t, grid::step_for(0.025, bits), bits);
            }
            let s = specials(layout);
            let mut rev: Vec<u8> = s.chunks(layout.bytes()).rev().flatten().copied().collect();
            quant_round_trip(layout, &s, &rev, 1e-3, bits);
            rev.rotate_left(layout.bytes());
            quant_round_trip(layout, &s, &rev, 1e-3, bits);
            // Degenerate steps give escapes, never panics.
            quant_round_trip(layout, &s, &rev, 0.0, bits);
            quant_round_trip(layout, &s, &rev, f64::NAN, bits);
        }
    }
    let (b, t) = pair(FloatLayout::F32, 20_000, 1);
    let size = quant_round_trip(FloatLayout::F32, &b, &t, grid::step_for(0.06, 16), 16);
    // |delta| <= 5e-5 is at most 28 steps of 1.8e-6: about 6 bits per value.
    assert!(size < 20_000 * 7 / 8, "{size}");
}

#[test]
fn chained_quantized_deltas_are_route_independent() {
    let layout = FloatLayout::BF16;
    let (a, b) = pair(layout, 999, 21);
    let (_, c) = pair(layout, 999, 22);
    let step = grid::step_for(0.05, 16);
    let (p_ab, _) = encode_quantized(layout, &a, &b, step, 16);
    let mut b2 = vec![0u8; b.len()];
    decode_quantized(&p_ab, &a, &mut b2).unwrap();
    let (p_bc, _) = encode_quantized(layout, &b2, &c, step, 16);
    let mut c2 = vec![0u8; c.len()];
    decode_quantized(&p_bc, &b2, &mut c2).unwrap();
    assert_eq!(c2, expected_quant(layout, &c, step, 16));
}

const FLOAT_GRID: [FloatLayout; 3] = [FloatLayout::BF16, FloatLayout::F16, FloatLayout::F32];

/// Encodes a float-grid delta and checks that it decodes to `fquant` of the target alone.
fn fgrid_round_trip(layout: FloatLayout, b: &[u8], t: &[u8], m: u32) -> Vec<u8> {
    let (p, bits) = encode_float_quantized(layout, b, t, m);
    assert!(bits >= 0.0);
    let (p2, bits2, same) = encode_float_quantized_counted(layout, b, t, m);
    assert_eq!((&p, bits.to_bits()), (&p2, bits2.to_bits()));
    let coord = |raw| crate::fgrid::coordinate(layout, m, raw);
    assert_eq!(same, unchanged(layout, b, t, coord));
    let mut alone = vec![0u8; t.len()];
    decode_quantized(&p, b, &mut alone).unwrap();
    assert!(alone == crate::fquant::restore(layout, t, m));
    assert_eq!(p[0], FQUANT);
    let mut out = vec![0xA5u8; t.len()];
    decode_quantized(&p, b, &mut out).unwrap();
    assert!(
        out == crate::fquant::tests::expected(layout, m, t),
        "{layout:?} m {m}"
    );
    p
}

#[test]
fn float_quantized_deltas() {
    for layout in FLOAT_GRID {
        let s = crate::fquant::tests::to_bytes(layout, &crate::fquant::tests::specials(layout));
        let mut rev: Vec<u8> = s.chunks(layout.bytes()).rev().flatten().copied().collect();
        for m in 0..=crate::fgrid::max_fraction_bits(layout) {
            for n in [0usize, 1, 3, 1001] {
                let (b, t) = pair(layout, n, 40 + n as u64);
                fgrid_round_trip(layout, &b, &t, m);
                fgrid_round_trip(layout, &b, &b, m);
            }
            // Base values off the grid (NaN, Inf, -0, subnormals) count as coordinate 0.
            fgrid_round_trip(layout, &s, &rev, m);
            fgrid_round_trip(layout, &rev, &s, m);
            rev.rotate_left(layout.bytes());
            fgrid_round_trip(layout, &s, &rev, m);
        }
    }
}

#[test]
fn float_quantized_adam_like_deltas() {
    let base = crate::fquant::tests::adam_like(50_000, 3);
    // The next step's second moment: 0.999 · v + 0.001 · g².
    let g = crate::fquant::tests::adam_like(50_000, 4);
    let target: Vec<u8> = base
        .chunks_exact(4)
        .zip(g.chunks_exact(4))
        .flat_map(|(v, g)| {
            let v = f32::from_le_bytes(v.try_into().unwrap());
            let g = f32::from_le_bytes(g.try_into().unwrap());
            (0.999 * v + 0.001 * g).to_le_bytes()
        })
        .collect();
    let p = fgrid_round_trip(FloatLayout::F32, &base, &target, 10);
    let (alone, _) = crate::fquant::encode(FloatLayout::F32, &target, 10);
    assert!(p.len() < alone.len(), "{} vs {}", p.len(), alone.len());
}

#[test]
fn chained_float_quantized_deltas_are_route_independent() {
    let layout = FloatLayout::F16;
    let (a, b) = pair(layout, 999, 23);
    let (_, c) = pair(layout, 999, 24);
    let (p_ab, _) = encode_float_quantized(layout, &a, &b, 5);
    let mut b2 = vec![0u8; b.len()];
    decode_quantized(&p_ab, &a, &mut b2).unwrap();
    let (p_bc, _) = encode_float_quantized(layout, &b2, &c, 5);
    let mut c2 = vec![0u8; c.len()];
    decode_quantized(&p_bc, &b2, &mut c2).unwrap();
    assert_eq!(c2, crate::fquant::tests::expected(layout, 5, &c));
}

#[test]
fn corrupt_float_quantized_deltas_error() {
    for layout in FLOAT_GRID {
        let (b, mut t) = pair(layout, 301, 6);
        let s = crate::fquant::tests::to_bytes(layout, &crate::fquant::tests::specials(layout));
        t[..s.len()].copy_from_slice(&s);
        let p = fgrid_round_trip(layout, &b, &t, 4);
        check_corruption(&p, &b, t.len());
    }
    let mut out = vec![0u8; 8];
    let base = vec![0u8; 8];
    for (p, msg) in [
        (vec![FQUANT, 2, 8, 3], "quantized delta header truncated"),
        (
            vec![FQUANT, 8, 11, 3, 1, 0],
            "quantized delta has an invalid layout",
        ),
        (
            vec![FQUANT, 2, 8, 8, 1, 0],
            "quantized delta has invalid parameters",
        ),
        (
            vec![FQUANT, 2, 8, 7, 2, 0],
            "quantized delta has invalid parameters",
        ),
        (
            vec![FQUANT, 4, 8, 7, 1, 3],
            "quantized delta has too many escapes",
        ),
    ] {
        assert_eq!(decode(&p, &base, &mut out), Err(CodecError::Corrupt(msg)));
    }
    assert_eq!(
        decode(&[FQUANT, 4, 8, 7, 1, 0], &base[..6], &mut [0u8; 6]),
        Err(CodecError::Corrupt(
            "quantized delta size is not whole values"
        ))
    );
    // BF16 m = 0: coordinate 255 is Inf, beyond the grid.
    let mut p = vec![FQUANT, 2, 8, 0, 1, 0];
    p.extend(ints::encode_signed(&[255]));
    assert_eq!(
        decode(&p, &[0u8; 2], &mut [0u8; 2]),
        Err(CodecError::Corrupt("quantized delta value off the grid"))
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    #[test]
    fn random_float_grid_pairs_round_trip(
        bytes in prop::collection::vec(any::<u8>(), 0..600),
        mask in prop::collection::vec(any::<u8>(), 600),
        li in 0usize..3,
        m in 0u32..24,
    ) {
        let layout = FLOAT_GRID[li];
        let m = m.min(crate::fgrid::max_fraction_bits(layout));
        let n = bytes.len() / layout.bytes() * layout.bytes();
        let b = &bytes[..n];
        let t: Vec<u8> = b.iter().zip(&mask).map(|(x, m)| x ^ m).collect();
        fgrid_round_trip(layout, b, &t, m);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    #[test]
    fn random_pairs_round_trip(
        bytes in prop::collection::vec(any::<u8>(), 0..600),
        mask in prop::collection::vec(any::<u8>(), 600),
        li in 0usize..6,
    ) {
        let layout = LAYOUTS[li];
        let n = bytes.len() / layout.bytes() * layout.bytes();
        let b = &bytes[..n];
        let t: Vec<u8> = b.iter().zip(&mask).map(|(x, m)| x ^ (m & 0x0F)).collect();
        round_trip(ValueKind::Float(layout), b, &t);
        round_trip(ValueKind::Bytes, b, &t);
        if layout.bytes() >= 2 {
            let (p, _) = encode_quantized(layout, b, &t, 1e-3, 16);
            let mut out = vec![0u8; n];
            decode_quantized(&p, b, &mut out).unwrap();
            prop_assert_eq!(out, expected_quant(layout, &t, 1e-3, 16));
        }
    }

    #[test]
    fn random_payloads_never_panic(
        p in prop::collection::vec(any::<u8>(), 0..300),
        v in 0u8..10,
        n in 0usize..64,
    ) {
        let mut p = p;
        if let Some(f) = p.first_mut() {
            *f = v;
        }
        let base = vec![0x3Fu8; n];
        let mut out = vec![0u8; n];
        let _ = decode(&p, &base, &mut out);
    }
}
