use super::*;
use crate::grid;
use proptest::prelude::*;

const LAYOUTS: [FloatLayout; 3] = [FloatLayout::BF16, FloatLayout::F16, FloatLayout::F32];

pub(super) fn to_bytes(layout: FloatLayout, vals: &[u32]) -> Vec<u8> {
    vals.iter()
        .flat_map(|v| v.to_le_bytes()[..layout.bytes()].to_vec())
        .collect()
}

pub(super) fn from_bytes(layout: FloatLayout, data: &[u8]) -> Vec<u32> {
    data.chunks_exact(layout.bytes())
        .map(|c| {
            let mut w = [0u8; 4];
            w[..c.len()].copy_from_slice(c);
            u32::from_le_bytes(w)
        })
        .collect()
}

/// Independent f64 model of one group: the expected decoded bits, or `None` for a raw
/// group; also checks the error bound.
fn reference_group(layout: FloatLayout, vals: &[u32], m: u32) -> Option<Vec<u32>> {
    let bits = layout.bits();
    let f = bits - 1 - layout.exp_bits;
    let ones = (1u32 << layout.exp_bits) - 1;
    let bias = (ones >> 1) as i32;
    let emax = ones - 1;
    let exps: Vec<u32> = vals.iter().map(|v| (v >> f) & ones).collect();
    if exps.contains(&ones) {
        return None;
    }
    let e0 = exps.iter().copied().max().unwrap_or(0).max(1);
    let xs: Vec<f64> = vals
        .iter()
        .map(|&v| grid::to_f64(layout, u64::from(v)))
        .collect();
    let qmax = 2f64.powi(m as i32) - 1.0;
    // Candidates: E₀ with magnitudes saturated at 2^M − 1, and E₀ + 1 when a value carries.
    let at = |e: u32| -> (f64, Vec<f64>) {
        let step = 2f64.powi(e as i32 - bias - m as i32 + 1);
        let ys: Vec<f64> = xs
            .iter()
            .map(|&x| {
                let q = (x.abs() / step).round_ties_even().min(qmax);
                if q == 0.0 {
                    if x == 0.0 { x } else { 0.0 }
                } else {
                    q * step * x.signum()
                }
            })
            .collect();
        let sse = xs.iter().zip(&ys).map(|(x, y)| (x - y) * (x - y)).sum();
        (sse, ys)
    };
    let step0 = 2f64.powi(e0 as i32 - bias - m as i32 + 1);
    let carry = xs
        .iter()
        .any(|x| (x.abs() / step0).round_ties_even() > qmax);
    let (sse0, ys0) = at(e0);
    let (e, ys) = if carry && e0 < emax {
        let (sse1, ys1) = at(e0 + 1);
        if sse0 < sse1 {
            (e0, ys0)
        } else {
            (e0 + 1, ys1)
        }
    } else {
        (e0, ys0)
    };
    // Half a step at the final exponent, or one step at E₀ for a saturated maximum.
    let bound = 2f64.powi(e0 as i32 - bias - m as i32 + 1);
    let half = 2f64.powi(e as i32 - bias - m as i32);
    Some(
        xs.iter()
            .zip(&ys)
            .map(|(&x, &y)| {
                let err = (x - y).abs();
                assert!(
                    err <= half || (e == e0 && err <= bound),
                    "error bound {x} {y} {half}"
                );
                let b = grid::from_f64(layout, y) as u32;
                assert_eq!(grid::to_f64(layout, u64::from(b)), y, "representable");
                b
            })
            .collect(),
    )
}

fn reference(layout: FloatLayout, vals: &[u32], row: usize, p: Params) -> Vec<u32> {
    let row = norm_row(vals.len(), row).max(1);
    let mut out = Vec::with_capacity(vals.len());
    for r in vals.chunks(row) {
        for grp in r.chunks(p.group_size as usize) {
            match reference_group(layout, grp, p.mantissa_bits) {
                Some(v) => out.extend(v),
                None => out.extend_from_slice(grp),
            }
        }
    }
    out
}

/// Encodes, decodes, compares with the reference and checks idempotence; returns the
/// payload.
fn check_round_trip(layout: FloatLayout, vals: &[u32], row: usize, p: Params) -> Vec<u8> {
    let data = to_bytes(layout, vals);
    let (enc, bits) = encode(layout, &data, row, p);
    assert!(bits >= 0.0);
    let mut out = vec![0u8; data.len()];
    decode(&enc, &mut out).unwrap();
    // The fused restore of the encoder is what the decoder produces, payload included.
    let (enc_r, bits_r, restored) = super::encode_restored(layout, &data, row, p);
    assert_eq!((&enc_r, bits_r.to_bits()), (&enc, bits.to_bits()));
    assert_eq!(restored, out, "restored {layout:?} {p:?} row {row}");
    let got = from_bytes(layout, &out);
    let want = reference(layout, vals, row, p);
    assert_eq!(got, want, "{layout:?} {p:?} row {row}");
    let (enc2, _) = encode(layout, &out, row, p);
    let mut out2 = vec![0u8; data.len()];
    decode(&enc2, &mut out2).unwrap();
    assert_eq!(out2, out, "idempotence {layout:?} {p:?} row {row}");
    enc
}

pub(super) fn pseudo_u32(n: usize, seed: u64) -> Vec<u32> {
    crate::pseudo_bytes(4 * n, seed)
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// `n` values of `layout`, value `i` made by `bits(i, r, f, bias)` from its random word `r`,
/// the layout's fraction width `f` and its exponent bias.
fn from_words(
    layout: FloatLayout,
    n: usize,
    seed: u64,
    bits: impl Fn(usize, u32, u32, u32) -> u32,
) -> Vec<u32> {
    let f = layout.bits() - 1 - layout.exp_bits;
    let bias = (1u32 << (layout.exp_bits - 1)) - 1;
    pseudo_u32(n, seed)
        .iter()
        .enumerate()
        .map(|(i, &r)| bits(i, r, f, bias))
        .collect()
}

/// Weight-like values: random signs, exponents in a narrow band per row, random fraction.
fn weights(layout: FloatLayout, n: usize, seed: u64) -> Vec<u32> {
    from_words(layout, n, seed, |i, r, f, bias| {
        let sign = r >> 31;
        let band = (i / 50) as u32 % 5;
        let e = bias - 3 - band - (r >> 28 & 7).min(4) * ((r >> 27) & 1);
        let frac = r & ((1 << f) - 1);
        sign << (layout.bits() - 1) | e << f | frac
    })
}

/// Convolution-kernel-like values: along each kernel of 64 taps the magnitudes fall by a
/// binade every 6 taps, with random signs and fractions and a few zeros, so a value's
/// magnitude follows its predecessor's (what codec 13's previous-value tables use).
fn kernels(layout: FloatLayout, n: usize, seed: u64) -> Vec<u32> {
    from_words(layout, n, seed, |i, r, f, bias| {
        if r % 11 == 0 {
            return 0;
        }
        let e = bias - 2 - (i % 64) as u32 / 6 - (r >> 28 & 1);
        (r >> 31) << (layout.bits() - 1) | e << f | (r >> 3) & ((1 << f) - 1)
    })
}

/// `n` values of `layout`: weight-like, or any bit patterns.
pub(super) fn random_values(
    layout: FloatLayout,
    n: usize,
    seed: u64,
    weightlike: bool,
) -> Vec<u32> {
    if weightlike {
        weights(layout, n, seed)
    } else {
        pseudo_u32(n, seed)
            .iter()
            .map(|v| v & (u32::MAX >> (32 - layout.bits())))
            .collect()
    }
}

/// Special values of a layout: zeros, subnormals, normals, max finite, Inf, NaNs.
fn specials(layout: FloatLayout) -> Vec<u32> {
    let bits = layout.bits();
    let f = bits - 1 - layout.exp_bits;
    let ones = (1u32 << layout.exp_bits) - 1;
    let sign = 1u32 << (bits - 1);
    let fmask = (1u32 << f) - 1;
    let max = (ones - 1) << f | fmask;
    vec![
        0,
        sign,
        1,
        sign | 1,
        fmask,
        1 << f,
        3 << (f - 1),
        max,
        sign | max,
        max - 1,
        ones << f,
        sign | ones << f,
        ones << f | 1,
        ones << f | fmask,
        sign | ones << f | (1 << (f - 1)) | 5,
        (ones >> 1) << f,
        (ones >> 1) << f | fmask,
        2 << f | fmask,
    ]
}

#[test]
fn every_layout_m_and_group_matches_the_reference() {
    for layout in LAYOUTS {
        let w = weights(layout, 300, 7);
        let r = pseudo_u32(97, 11)
            .iter()
            .map(|v| v & (u32::MAX >> (32 - layout.bits())))
            .collect::<Vec<_>>();
        for m in 2..=max_mantissa_bits(layout) {
            for gs in [1u32, 2, 7, 32, 64] {
                let p = Params {
                    mantissa_bits: m,
                    group_size: gs,
                };
                for row in [0usize, 13, 50] {
                    check_round_trip(layout, &w, row, p);
                }
                check_round_trip(layout, &r, 0, p);
                check_round_trip(layout, &r, 10, p);
            }
        }
    }
}

#[test]
fn special_values() {
    for layout in LAYOUTS {
        let sp = specials(layout);
        let f = layout.bits() - 1 - layout.exp_bits;
        for m in 2..=max_mantissa_bits(layout) {
            for gs in [1u32, 2, 3, 7, 32] {
                let p = Params {
                    mantissa_bits: m,
                    group_size: gs,
                };
                check_round_trip(layout, &sp, 0, p);
                // Each special value alone in a group of normal values.
                for &s in &sp {
                    let mut v = weights(layout, 40, u64::from(s) + 1);
                    v[5] = s;
                    check_round_trip(layout, &v, 0, p);
                }
            }
            // Subnormal-only and tiny groups; values far below the group max.
            let sub: Vec<u32> = (0..64u32).map(|i| (i * 37) & ((1 << f) - 1)).collect();
            let p = Params {
                mantissa_bits: m,
                group_size: 8,
            };
            check_round_trip(layout, &sub, 0, p);
            let one = ((1u32 << (layout.exp_bits - 1)) - 1) << f;
            let far: Vec<u32> = vec![one, 1, 2 << f, 1 << f, 0, 0, 1 << (layout.bits() - 1), 3];
            check_round_trip(layout, &far, 0, p);
        }
    }
}

#[test]
fn escapes_are_exact_and_local() {
    for layout in LAYOUTS {
        let f = layout.bits() - 1 - layout.exp_bits;
        let ones = (1u32 << layout.exp_bits) - 1;
        let mut v = weights(layout, 96, 3);
        let nan = ones << f | 0x5;
        v[40] = nan;
        let p = Params {
            mantissa_bits: 4,
            group_size: 32,
        };
        let data = to_bytes(layout, &v);
        let (enc, _) = encode(layout, &data, 0, p);
        let mut out = vec![0u8; data.len()];
        decode(&enc, &mut out).unwrap();
        let got = from_bytes(layout, &out);
        assert_eq!(got[32..64], v[32..64], "the NaN group is exact");
        assert_ne!(got[..32], v[..32], "neighbours are still quantized");
        // Max finite with all-ones fraction would round up to Inf: it saturates to the
        // largest magnitude of the grid instead (finite, M − 1 fraction bits set).
        let max = (ones - 1) << f | ((1 << f) - 1);
        let w = vec![max, 1 << f, max - 3, 0];
        check_round_trip(layout, &w, 0, p);
        let data = to_bytes(layout, &w);
        let (enc, _) = encode(layout, &data, 0, p);
        let mut out = vec![0u8; data.len()];
        decode(&enc, &mut out).unwrap();
        let got = from_bytes(layout, &out);
        let saturated =
            (ones - 1) << f | (((1 << (p.mantissa_bits - 1)) - 1) << (f + 1 - p.mantissa_bits));
        assert_eq!(got[0], saturated);
        assert_eq!(got[2], saturated);
    }
}

#[test]
fn carry_raises_the_group_exponent_or_saturates() {
    // BF16 1.9921875 (0x3fff) at M=4 with 1.0: rounding to 2.0 at the coarser step (errors
    // 0.0078 and 0) beats saturating to 1.875 (error 0.117).
    let v = vec![0x3fffu32, 0x3f80];
    let data = to_bytes(FloatLayout::BF16, &v);
    let p = Params {
        mantissa_bits: 4,
        group_size: 2,
    };
    let (enc, _) = encode(FloatLayout::BF16, &data, 0, p);
    let mut out = vec![0u8; 4];
    decode(&enc, &mut out).unwrap();
    assert_eq!(from_bytes(FloatLayout::BF16, &out), vec![0x4000, 0x3f80]);
    // With values the coarser step would hurt (1.125 and 1.375 are on the fine grid only),
    // the maximum saturates to 1.875 instead.
    let v = vec![0x3fffu32, 0x3f90, 0x3fb0];
    let data = to_bytes(FloatLayout::BF16, &v);
    let p = Params {
        mantissa_bits: 4,
        group_size: 3,
    };
    let (enc, _) = encode(FloatLayout::BF16, &data, 0, p);
    let mut out = vec![0u8; 6];
    decode(&enc, &mut out).unwrap();
    assert_eq!(
        from_bytes(FloatLayout::BF16, &out),
        vec![0x3ff0, 0x3f90, 0x3fb0]
    );
}

#[test]
fn empty_and_single_value() {
    for layout in LAYOUTS {
        let p = Params {
            mantissa_bits: 3,
            group_size: 32,
        };
        let enc = check_round_trip(layout, &[], 0, p);
        assert!(enc.len() < 40, "{}", enc.len());
        check_round_trip(layout, &[0x1234], 0, p);
        check_round_trip(layout, &[0x1234], 1, p);
    }
}

#[test]
fn sizes_track_m() {
    let layout = FloatLayout::BF16;
    let v = weights(layout, 20_000, 5);
    let data = to_bytes(layout, &v);
    let mut last = 0;
    for m in 2..=8 {
        let p = Params {
            mantissa_bits: m,
            group_size: 32,
        };
        let (enc, bits) = encode(layout, &data, 0, p);
        let per = enc.len() as f64 * 8.0 / v.len() as f64;
        assert!(enc.len() > last, "M={m}");
        assert!(per < m as f64 + 1.5, "M={m}: {per}");
        assert!(bits <= enc.len() as f64 * 8.0 + 1.0, "M={m}");
        last = enc.len();
    }
}

#[test]
fn truncated_and_corrupt_payloads_error() {
    for (layout, m, ctx) in [
        (FloatLayout::BF16, 6, false),
        (FloatLayout::F32, 14, false),
        (FloatLayout::BF16, 6, true),
        (FloatLayout::F32, 24, true),
    ] {
        let mut v = if ctx {
            kernels(layout, 20_000, 9)
        } else {
            weights(layout, 700, 9)
        };
        v[100] = specials(layout)[10];
        let data = to_bytes(layout, &v);
        let p = Params {
            mantissa_bits: m,
            group_size: 32,
        };
        let (enc, _) = encode(layout, &data, 64, p);
        assert_eq!(
            codec(&enc) == crate::Codec::BfpContext,
            ctx,
            "{layout:?} M={m}"
        );
        let mut out = vec![0u8; data.len()];
        assert!(decode(&enc, &mut out[1..]).is_err());
        // Every cut; every byte of the small payloads flipped, about 300 of the larger codec
        // 13 ones.
        let stride = if ctx { enc.len() / 300 } else { 1 };
        crate::check_damaged_every(&enc, stride, |p| decode(p, &mut out));
    }
    let mut out = vec![0u8; 256];
    for seed in 0..300u64 {
        let mut junk = crate::pseudo_bytes(40 + seed as usize, seed + 1);
        junk[0] = if seed % 3 == 0 { VERSION_CTX } else { VERSION };
        junk[1] = if seed % 2 == 0 { 2 } else { 4 };
        junk[2] = 8;
        let _ = decode(&junk, &mut out);
    }
}

#[test]
fn check_rejects_bad_params() {
    let ok = Params {
        mantissa_bits: 7,
        group_size: 32,
    };
    assert!(check(FloatLayout::BF16, ok).is_ok());
    assert_eq!(check(FloatLayout::F64, ok), Err(ParamError::Layout));
    let bad_m = |got| Err(ParamError::MantissaBits { got, max: 8 });
    let bad_g = |got| Err(ParamError::GroupSize { got });
    for (m, g, want) in [
        (1, 32, bad_m(1)),
        (9, 32, bad_m(9)),
        (7, 0, bad_g(0)),
        (7, 4097, bad_g(4097)),
        (0, 0, bad_m(0)),
    ] {
        let p = Params {
            mantissa_bits: m,
            group_size: g,
        };
        assert_eq!(check(FloatLayout::BF16, p), want, "{m} {g}");
    }
    assert_eq!(
        bad_g(4097).unwrap_err().to_string(),
        "BFP group size must be in 1..=4096, got 4097"
    );
    assert!(
        check(
            FloatLayout::F32,
            Params {
                mantissa_bits: 24,
                group_size: 4096
            }
        )
        .is_ok()
    );
}

/// Runs `f` with codec 13 disabled.
fn without_context<T>(f: impl FnOnce() -> T) -> T {
    super::encode::NO_CONTEXT.set(true);
    let out = f();
    super::encode::NO_CONTEXT.set(false);
    out
}

/// Kernels whose magnitudes follow their predecessors' get codec 13, which round-trips like
/// codec 4 (same values: only the coding differs) and is smaller; a codec 13
/// payload is corrupt under codec id 4 and the other way round; independent values keep
/// codec 4.
#[test]
fn previous_value_tables_pay_on_kernels_and_only_there() {
    for layout in LAYOUTS {
        let vals = kernels(layout, 20_000, 5);
        let data = to_bytes(layout, &vals);
        for m in [3u32, 6, 8, max_mantissa_bits(layout)] {
            let p = Params {
                mantissa_bits: m,
                group_size: 32,
            };
            let enc = check_round_trip(layout, &vals, 0, p);
            assert_eq!(codec(&enc), crate::Codec::BfpContext, "{layout:?} M={m}");
            let (plain, _, plain_restored) =
                without_context(|| encode_restored(layout, &data, 0, p));
            assert_eq!(codec(&plain), crate::Codec::Bfp);
            assert!(
                enc.len() * 100 < plain.len() * 99,
                "{layout:?} M={m}: {} vs {}",
                enc.len(),
                plain.len()
            );
            let mut out = vec![0u8; data.len()];
            decode_codec(crate::Codec::BfpContext, &enc, &mut out).unwrap();
            assert_eq!(out, plain_restored, "{layout:?} M={m}: the same values");
            assert!(decode_codec(crate::Codec::Bfp, &enc, &mut out).is_err());
            assert!(decode_codec(crate::Codec::BfpContext, &plain, &mut out).is_err());
            // The rate–distortion writer and the moments' writer use it too where it pays.
            let (rd, _) = encode_rd(layout, &data, 0, p);
            let mut back = vec![0u8; data.len()];
            decode(&rd, &mut back).unwrap();
            assert_eq!(rd, encode_rd_restored(layout, &data, 0, p).0);
        }
        for m in [4u32, 7] {
            let p = Params {
                mantissa_bits: m,
                group_size: 32,
            };
            // Independent values: exponents 2^-3 .. 2^-6, random signs and fractions.
            let iid = from_words(layout, 20_000, 6, |_, r, f, bias| {
                (r >> 31) << (layout.bits() - 1)
                    | (bias - 3 - (r >> 29 & 3)) << f
                    | r & ((1 << f) - 1)
            });
            let enc = check_round_trip(layout, &iid, 0, p);
            assert_eq!(codec(&enc), crate::Codec::Bfp, "{layout:?} M={m}");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]
    #[test]
    fn random_payloads_never_panic(
        data in prop::collection::vec(any::<u8>(), 0..400),
        n in 0usize..300,
        head in 0u8..3,
    ) {
        let mut data = data;
        // Mostly well-formed headers, so that decoding gets past them.
        if head > 0 && data.len() >= 8 {
            data[0] = if data[4] & 1 == 0 { VERSION } else { VERSION_CTX };
            data[1] = if head == 1 { 2 } else { 4 };
            data[2] = 8;
            data[3] = 2 + data[3] % 7;
        }
        let mut out = vec![0u8; n];
        let _ = decode(&data, &mut out);
    }

    #[test]
    fn random_bits_match_the_reference(
        seed in any::<u64>(),
        n in 0usize..300,
        li in 0usize..3,
        m in 2u32..=24,
        gs in 1u32..80,
        row in 0usize..100,
        kind in 0u8..3,
    ) {
        let layout = LAYOUTS[li];
        let m = m.min(max_mantissa_bits(layout));
        let vals = match kind {
            0 => random_values(layout, n, seed, false),
            1 => random_values(layout, n, seed, true),
            _ => kernels(layout, n, seed),
        };
        check_round_trip(layout, &vals, row, Params { mantissa_bits: m, group_size: gs });
    }
}

proptest! {
    // Chunks past codec 13's 4096-value minimum (the cases above are below it): kernels of
    // any length, any M, even group sizes, special values at random places.
    #![proptest_config(ProptestConfig::with_cases(12))]
    #[test]
    fn long_kernels_match_the_reference(
        seed in any::<u64>(),
        n in 4096usize..9000,
        li in 0usize..3,
        m in 2u32..=10,
        half in 4u32..33,
        nspecial in 0usize..6,
    ) {
        let layout = LAYOUTS[li];
        let m = m.min(max_mantissa_bits(layout));
        let mut vals = kernels(layout, n, seed);
        let sp = specials(layout);
        for (j, at) in crate::pseudo_u64(nspecial, seed ^ 1).enumerate() {
            vals[at as usize % n] = sp[j % sp.len()];
        }
        check_round_trip(layout, &vals, 0, Params { mantissa_bits: m, group_size: 2 * half });
    }
}

/// The squared error of `restored` (bytes of `layout`) against the finite values of `vals`.
pub(super) fn sq_error(layout: FloatLayout, vals: &[u32], restored: &[u8]) -> f64 {
    from_bytes(layout, restored)
        .iter()
        .zip(vals)
        .map(|(&y, &x)| (grid::to_f64(layout, u64::from(x)), y))
        .filter(|(x, _)| x.is_finite())
        .map(|(x, y)| {
            let d = grid::to_f64(layout, u64::from(y)) - x;
            d * d
        })
        .sum()
}

/// Rate–distortion grouping: decodes to what it reports, never has more squared error than
/// plain BFP at the same `(M, G)`, keeps NaN/±Inf exact and every other error within
/// `2^(1−M)` of its group of `G`'s largest magnitude.
fn check_rd(layout: FloatLayout, vals: &[u32], row: usize, p: Params) -> (usize, usize) {
    let data = to_bytes(layout, vals);
    let (payload, _, restored) = encode_rd_restored(layout, &data, row, p);
    assert_eq!(encode_rd(layout, &data, row, p).0, payload, "same payload");
    let mut out = vec![0u8; data.len()];
    decode(&payload, &mut out).expect("decodes");
    assert!(out == restored, "restored bytes {layout:?} {p:?}");
    let (plain, _, plain_restored) = encode_restored(layout, &data, row, p);
    let xs: Vec<f64> = vals
        .iter()
        .map(|&v| grid::to_f64(layout, u64::from(v)))
        .collect();
    let (mine, theirs) = (
        sq_error(layout, vals, &out),
        sq_error(layout, vals, &plain_restored),
    );
    assert!(
        mine <= theirs,
        "{layout:?} {p:?}: error {mine} > plain {theirs}"
    );
    let got = from_bytes(layout, &out);
    let gs = p.group_size as usize;
    // As the codec normalizes it (at least 1, so that an empty input has no groups).
    let row_len = norm_row(vals.len(), row).max(1);
    // Groups of G restart at every row.
    let groups = (0..vals.len()).step_by(row_len).flat_map(|r| {
        let end = (r + row_len).min(vals.len());
        (r..end).step_by(gs).map(move |s| s..(s + gs).min(end))
    });
    for range in groups {
        let (xg, yg, vg) = (&xs[range.clone()], &got[range.clone()], &vals[range]);
        let special = xg.iter().any(|x| !x.is_finite());
        // Relative to the largest magnitude, or to the smallest normal for a group of
        // subnormals (their exponent counts as 1).
        let min_normal = 2f64.powi(2 - (1i32 << (layout.exp_bits - 1)));
        let max = xg.iter().fold(min_normal, |m, x| m.max(x.abs()));
        let bound = max * 2f64.powi(1 - p.mantissa_bits as i32);
        for ((&x, &y), &v) in xg.iter().zip(yg).zip(vg) {
            if !x.is_finite() {
                assert_eq!(y, v, "NaN/Inf exact");
            } else if !special {
                let y = grid::to_f64(layout, u64::from(y));
                assert!(
                    (x - y).abs() <= bound,
                    "{layout:?} {p:?}: |{x} - {y}| > {bound} in group {xg:?}"
                );
            }
        }
    }
    (payload.len(), plain.len())
}

#[test]
fn rate_distortion_grouping_saves_bits_at_no_more_error() {
    for layout in LAYOUTS {
        let (mut mine, mut plain) = (0, 0);
        for m in 2..=8u32 {
            for gs in [2u32, 8, 32, 64] {
                let vals = weights(layout, 20_000, u64::from(m * 100 + gs));
                let p = Params {
                    mantissa_bits: m,
                    group_size: gs,
                };
                let (a, b) = check_rd(layout, &vals, 0, p);
                mine += a;
                plain += b;
            }
        }
        // Weight-like values in bands of different exponents: the halves pay, in every
        // dtype's units (F16's are 2^-112 of its values).
        assert!(mine * 1000 < plain * 997, "{layout:?}: {mine} vs {plain}");
    }
}

/// Halves of small values beside halves of large ones (as in the `[O, I, k, 1]` kernels of a
/// pretrained CNN): their own exponents cost more bits than plain BFP, which flushes most of
/// them to 0 at hardly more squared error, so the writer codes plain BFP.
#[test]
fn rate_distortion_grouping_never_pays_for_fine_steps_beside_large_values() {
    for layout in LAYOUTS {
        let f = layout.bits() - 1 - layout.exp_bits;
        let bias = (1u32 << (layout.exp_bits - 1)) - 1;
        let vals: Vec<u32> = pseudo_u32(8192, 11)
            .iter()
            .enumerate()
            .map(|(i, &r)| {
                // First half of each group 2^-9 .. 2^-7, second half 2^-2 .. 2^0.
                let e = if i % 32 < 16 {
                    bias - 9 + r % 2
                } else {
                    bias - 2 + r % 2
                };
                (r >> 31) << (layout.bits() - 1) | e << f | (r >> 8) & ((1 << f) - 1)
            })
            .collect();
        for m in [5u32, 6, 7] {
            let p = Params {
                mantissa_bits: m,
                group_size: 32,
            };
            let (mine, plain) = check_rd(layout, &vals, 0, p);
            assert!(mine <= plain, "{layout:?} M={m}: {mine} > plain {plain}");
        }
    }
}

#[test]
fn rate_distortion_grouping_handles_special_values_and_falls_back() {
    for layout in LAYOUTS {
        let mut vals = specials(layout);
        vals.extend(weights(layout, 500, 7));
        vals.extend(specials(layout));
        for m in [2u32, 5, 8] {
            for gs in [2u32, 4, 7, 32] {
                check_rd(
                    layout,
                    &vals,
                    0,
                    Params {
                        mantissa_bits: m,
                        group_size: gs,
                    },
                );
                check_rd(
                    layout,
                    &vals,
                    33,
                    Params {
                        mantissa_bits: m,
                        group_size: gs,
                    },
                );
            }
        }
        // Plain BFP where it does not apply: odd G, rows, wide M.
        let data = to_bytes(layout, &vals);
        for (row, p) in [
            (
                0,
                Params {
                    mantissa_bits: 6,
                    group_size: 7,
                },
            ),
            (
                33,
                Params {
                    mantissa_bits: 6,
                    group_size: 32,
                },
            ),
            (
                0,
                Params {
                    mantissa_bits: max_mantissa_bits(layout),
                    group_size: 32,
                },
            ),
        ] {
            if layout.bytes() == 2 && p.mantissa_bits > 8 {
                continue;
            }
            let rd = encode_rd(layout, &data, row, p).0;
            let plain = encode(layout, &data, row, p).0;
            if p.mantissa_bits <= 8 && row == 0 && p.group_size % 2 == 0 {
                continue;
            }
            assert_eq!(rd, plain, "{layout:?} {p:?} row {row}");
        }
        check_rd(
            layout,
            &[],
            0,
            Params {
                mantissa_bits: 6,
                group_size: 32,
            },
        );
        check_rd(
            layout,
            &vals[..1],
            0,
            Params {
                mantissa_bits: 6,
                group_size: 32,
            },
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]
    #[test]
    fn rate_distortion_grouping_round_trips(
        seed in any::<u64>(),
        n in 0usize..600,
        li in 0usize..3,
        m in 2u32..=8,
        half in 1u32..40,
        weightlike in any::<bool>(),
    ) {
        let layout = LAYOUTS[li];
        let vals = random_values(layout, n, seed, weightlike);
        check_rd(layout, &vals, 0, Params { mantissa_bits: m, group_size: 2 * half });
    }
}

/// The encoders give the same payloads and restored bytes on every CPU level (the passes
/// and the rate–distortion plan run compiled for the detected one), for every layout, on
/// weight-like values, random bits and special values, at several M.
#[test]
fn every_cpu_level_encodes_alike() {
    use crate::cpu::{Level, with_level};
    for layout in LAYOUTS {
        let mut cases = vec![
            random_values(layout, 5_003, 41, true),
            random_values(layout, 3_001, 42, false),
            kernels(layout, 6_001, 44),
        ];
        let mut mixed = random_values(layout, 2_000, 43, true);
        for (i, s) in specials(layout).into_iter().enumerate() {
            mixed[i * 97 + 5] = s;
        }
        cases.push(mixed);
        for vals in &cases {
            let data = to_bytes(layout, vals);
            for m in [3, 7, max_mantissa_bits(layout)] {
                let p = Params {
                    mantissa_bits: m,
                    group_size: 32,
                };
                let run = |level| {
                    with_level(level, || {
                        (
                            encode_rd_restored(layout, &data, 0, p),
                            encode_restored(layout, &data, 0, p),
                            encode_own_restored(layout, &data, 0, p),
                        )
                    })
                };
                let want = run(Level::SCALAR);
                for level in Level::available() {
                    let got = run(level);
                    assert!(
                        got.0.0 == want.0.0 && got.0.2 == want.0.2,
                        "rd {layout:?} M={m}"
                    );
                    assert!(
                        got.1.0 == want.1.0 && got.1.2 == want.1.2,
                        "plain {layout:?} M={m}"
                    );
                    assert!(
                        got.2.0 == want.2.0 && got.2.2 == want.2.2,
                        "own {layout:?} M={m}"
                    );
                }
            }
        }
    }
}

#[test]
fn level_without_division_is_the_quotient() {
    let by_division = |e: u32, sum_q: u64, n: usize| {
        let z = (sum_q << 5) / n as u64 + 1;
        let p = 63 - z.leading_zeros();
        let t = if p >= 7 { z >> (p - 7) } else { z << (7 - p) };
        (2 * e + 2 * p + u32::from(t >= 182)) as i32
    };
    for n in 1..=64usize {
        for sum_q in (0..2000u64).chain([65_535, 1 << 20, (1 << 40) + 12_345]) {
            assert_eq!(
                level(9, sum_q, n),
                by_division(9, sum_q, n),
                "n {n}, sum {sum_q}"
            );
        }
    }
}

#[test]
fn groups_of_the_first_row_are_found_without_division() {
    for (count, row, gs) in [
        (100, 100, 1),
        (100, 100, 7),
        (100, 10, 4),
        (64, 8, 8),
        (9, 3, 2),
    ] {
        let shape = Shape::new(count, row, gs);
        let mut next = 0;
        for i in 0..shape.groups {
            let (r, k) = (i / shape.per_row, i % shape.per_row);
            let start = r * shape.row + k * shape.gs;
            let len = shape
                .gs
                .min(shape.row - k * shape.gs)
                .min(shape.count - start);
            assert_eq!(shape.group(i), (start, len));
            assert_eq!(start, next);
            next += len;
        }
        assert_eq!(next, count);
    }
}

/// [`own_restored`]'s rounding against the encoder's quantization pass in groups of one, on
/// every BF16 and F16 bit pattern at every M, and on F32 patterns around every binade edge.
#[test]
fn own_rounding_is_the_encoders_in_groups_of_one() {
    let check = |layout: FloatLayout, data: &[u8], m: u32| {
        let p = Params {
            mantissa_bits: m,
            group_size: 1,
        };
        let mut want = vec![0u8; data.len()];
        encode::restore_inner(layout, data, 0, p, &mut want);
        let g = Geo::new(layout, m);
        let mut got = vec![0u8; data.len()];
        if layout.bytes() == 2 {
            own::round_own::<2>(&g, data, &mut got);
        } else {
            own::round_own::<4>(&g, data, &mut got);
        }
        let b = layout.bytes();
        for (i, (x, y)) in want.chunks_exact(b).zip(got.chunks_exact(b)).enumerate() {
            assert_eq!(
                x,
                y,
                "{layout:?} M={m} value {:02x?}",
                &data[i * b..i * b + b]
            );
        }
    };
    let every: Vec<u8> = (0..=u16::MAX).flat_map(u16::to_le_bytes).collect();
    for layout in [FloatLayout::BF16, FloatLayout::F16] {
        for m in 2..=max_mantissa_bits(layout) {
            check(layout, &every, m);
        }
    }
    let mut f32s = Vec::new();
    for e in 0..=255u32 {
        for frac in [
            0u32, 1, 2, 3, 0x3f_ffff, 0x40_0000, 0x7f_fff0, 0x7f_ffff, 0x12_3456,
        ] {
            for low in [0u32, 0x7f, 0x80, 0x81, 0xff, 0x100, 0x17f, 0x180] {
                for sign in [0u32, 1 << 31] {
                    let x = sign | e << 23 | ((frac & !0x1ff) | low) & 0x7f_ffff;
                    f32s.extend_from_slice(&x.to_le_bytes());
                }
            }
        }
    }
    for m in 2..=max_mantissa_bits(FloatLayout::F32) {
        check(FloatLayout::F32, &f32s, m);
    }
}
