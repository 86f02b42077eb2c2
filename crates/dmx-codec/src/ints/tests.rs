use super::*;
use proptest::prelude::*;

fn round_trip(values: &[i64]) -> usize {
    let enc = encode_signed(values);
    let mut out = vec![7i64; values.len()];
    let used = decode_signed(&enc, &mut out).unwrap();
    assert_eq!(used, enc.len());
    assert_eq!(out, values);
    // Self-delimiting: trailing bytes are not consumed.
    let mut longer = enc.clone();
    longer.extend_from_slice(&[0xAB; 5]);
    assert_eq!(decode_signed(&longer, &mut out).unwrap(), enc.len());
    enc.len()
}

fn pseudo_i64(n: usize, seed: u64, shift: u32) -> Vec<i64> {
    crate::pseudo_u64(n, seed)
        .map(|x| (x as i64) >> shift)
        .collect()
}

#[test]
fn tokens_partition_the_values() {
    for k in 0..=MAX_K {
        for v in (0..300u64).chain([u64::MAX, u64::MAX - 1, 1 << 63, (1 << 63) - 1]) {
            let t = token(v, k);
            assert!((t as usize) < alphabet(k));
            let b = token_base(t, k);
            assert!(b <= v && v - b <= mask(token_nraw(t, k)), "k {k} v {v}");
        }
    }
    assert_eq!(zigzag(i64::MIN), u64::MAX);
    assert_eq!(unzigzag(u64::MAX), i64::MIN);
    assert_eq!(unzigzag(zigzag(i64::MAX)), i64::MAX);
}

/// The token by its definition: the value itself below `2^k`, else `(L - k) << k | m` for
/// bit length `L` and the `k` bits `m` after the leading one.
fn token_by_definition(v: u64, k: u32) -> u32 {
    if v < 1 << k {
        v as u32
    } else {
        let l = 64 - v.leading_zeros();
        ((l - k) << k) | ((v >> (l - 1 - k)) as u32 & ((1 << k) - 1))
    }
}

#[test]
fn branch_free_token_is_the_definition() {
    let edges = (0..64).flat_map(|b| {
        let p = 1u64 << b;
        [p - 1, p, p + 1, p | (p >> 1), p | (p - 1)]
    });
    let values: Vec<u64> = edges.chain(crate::pseudo_u64(4000, 9)).collect();
    for k in 0..=MAX_K {
        for &v in &values {
            for v in [v, v >> 17, v >> 40] {
                assert_eq!(token(v, k), token_by_definition(v, k), "k {k} v {v}");
            }
        }
    }
}

#[test]
fn extremes_round_trip() {
    round_trip(&[]);
    round_trip(&[0]);
    round_trip(&[i64::MIN]);
    round_trip(&[i64::MAX, i64::MIN, 0, -1, 1, i64::MAX, i64::MIN + 1, 5, 7]);
    round_trip(&[i64::MIN; 13]);
    let mut mixed = pseudo_i64(1001, 3, 0);
    mixed.extend(pseudo_i64(1001, 5, 50));
    round_trip(&mixed);
}

#[test]
fn zeros_cost_nothing_per_value() {
    let size = round_trip(&vec![0i64; 100_000]);
    assert!(size < 32, "{size}");
    let size = round_trip(&vec![-3i64; 100_001]);
    assert!(size < 32, "{size}");
}

#[test]
fn small_values_compress() {
    let v = pseudo_i64(100_003, 9, 58);
    let size = round_trip(&v);
    // Values in -32..32: about 6 bits each.
    assert!(size < v.len() * 7 / 8, "{size}");
    let bound = entropy_bits_signed(&v);
    assert!(bound / 8.0 <= size as f64 && bound > 5.0 * v.len() as f64);
}

#[test]
fn huge_block() {
    let mut v = pseudo_i64(1 << 20, 11, 40);
    v[12345] = i64::MIN;
    round_trip(&v);
}

#[test]
fn count_mismatch_and_corruption_error() {
    let v = pseudo_i64(999, 17, 45);
    let enc = encode_signed(&v);
    let mut out = vec![0i64; 998];
    assert!(decode_signed(&enc, &mut out).is_err());
    let mut out = vec![0i64; 999];
    for cut in 0..enc.len() {
        assert!(decode_signed(&enc[..cut], &mut out).is_err(), "cut {cut}");
    }
    for i in 0..enc.len() {
        for flip in [1u8, 0x10, 0xFF] {
            let mut bad = enc.clone();
            bad[i] ^= flip;
            let _ = decode_signed(&bad, &mut out);
        }
    }
    let mut x = 1u64;
    for n in 0..200 {
        let junk: Vec<u8> = (0..n)
            .map(|_| {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (x >> 56) as u8
            })
            .collect();
        let mut out = vec![0i64; n % 17];
        let _ = decode_signed(&junk, &mut out);
    }
}

#[test]
fn contexts_round_trip() {
    let v: Vec<u64> = (0..5003u64).map(|i| (i * 7919) >> (i % 5 * 10)).collect();
    let ctx: Vec<u8> = (0..5003).map(|i| (i % 5) as u8).collect();
    let mut enc = Vec::new();
    encode_ctx(&v, Some(&ctx), 7, &mut enc);
    let mut out = vec![0u64; v.len()];
    assert_eq!(
        decode_ctx(&enc, Some(&ctx), 7, &mut out).unwrap(),
        enc.len()
    );
    assert_eq!(out, v);
    // A value in an unused context is corrupt.
    let mut other = ctx.clone();
    other[100] = 6;
    assert!(decode_ctx(&enc, Some(&other), 7, &mut out).is_err());
}

#[test]
fn long_codes_with_small_primary_tables() {
    // Geometric token frequencies force codes of up to 14 bits; three contexts use the
    // 9-bit primary tables.
    let n = 200_003u64;
    let v: Vec<u64> = (1..=n)
        .map(|i| u64::from(i.trailing_zeros()) * 1000 + i % 7)
        .collect();
    let ctx: Vec<u8> = (0..n).map(|i| (i % 3) as u8).collect();
    let mut enc = Vec::new();
    encode_ctx(&v, Some(&ctx), 3, &mut enc);
    let mut out = vec![0u64; v.len()];
    assert_eq!(
        decode_ctx(&enc, Some(&ctx), 3, &mut out).unwrap(),
        enc.len()
    );
    assert_eq!(out, v);
    let z: Vec<i64> = v.iter().map(|&x| x as i64 - 3000).collect();
    round_trip(&z);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn any_values_round_trip(v in prop::collection::vec(any::<i64>(), 0..300), shift in 0u32..64) {
        let v: Vec<i64> = v.into_iter().map(|x| x >> shift).collect();
        round_trip(&v);
    }

    #[test]
    fn random_bytes_never_panic(data in prop::collection::vec(any::<u8>(), 0..200), n in 0usize..40) {
        let mut out = vec![0i64; n];
        let _ = decode_signed(&data, &mut out);
    }
}

/// Every parameter's plan built in full, the smallest (smallest `k` on a tie): what
/// `Plan::from_hist` must choose although it builds codes only where its bounds allow.
fn exhaustive(hist: &Hist) -> (usize, u32) {
    let n: usize = hist.lane_values.iter().sum();
    let used = hist.used();
    (0..=MAX_K)
        .map(|k| {
            let level: Vec<Vec<(u32, u64)>> = used.iter().map(|u| coarsen(u, MAX_K, k)).collect();
            let plan = Plan::at_k(hist, &level, k);
            // The bound never exceeds the size.
            let mut bits = 0f64;
            let mut header = 0;
            for m in &level {
                let f: Vec<u64> = m.iter().map(|x| x.1).collect();
                bits += raw_bits(m, k) as f64 + entropy(&f);
                header += ctx_header(m);
            }
            assert!(size_bound(n, header, bits) <= plan.size, "k {k}");
            (plan.size, k)
        })
        .min()
        .expect("parameters")
}

#[test]
fn the_bounded_search_finds_the_smallest_plan() {
    let shapes: Vec<Vec<u64>> = vec![
        vec![],
        vec![5; 100],
        crate::pseudo_u64(5000, 3).map(|x| x >> 60).collect(),
        crate::pseudo_u64(5000, 4).map(|x| x >> 40).collect(),
        crate::pseudo_u64(5000, 5)
            .map(|x| (x >> 20) >> (x & 31))
            .collect(),
        crate::pseudo_u64(3000, 6).collect(),
        (0..4000u64).map(|i| (i * i) % 977).collect(),
    ];
    for (i, values) in shapes.iter().enumerate() {
        for nctx in [1usize, 3] {
            let ctx: Vec<u8> = (0..values.len()).map(|j| (j * 7 % nctx) as u8).collect();
            let hist = Hist::new(values, (nctx > 1).then_some(&ctx[..]), nctx);
            let plan = Plan::from_hist(&hist);
            assert_eq!(
                (plan.size, plan.k),
                exhaustive(&hist),
                "shape {i}, {nctx} contexts"
            );
        }
    }
}

/// The context of each value is a class of the one before it: its bit length, capped at 9.
fn prev_class_test(z: u64) -> usize {
    ((64 - z.leading_zeros()) as usize).min(9)
}

/// Blocks whose contexts come from the previous decoded value decode to what was encoded,
/// for every length (the four streams in turn), and damaged ones error without panicking.
#[test]
fn previous_value_contexts_round_trip() {
    for n in (0..12).chain([99, 1000, 5003]) {
        for (seed, shift) in [(1u64, 50u32), (2, 60), (3, 1)] {
            let values = pseudo_i64(n, seed + n as u64, shift);
            let z: Vec<u64> = values.iter().map(|&v| zigzag(v)).collect();
            let ctx: Vec<u8> = std::iter::once(0)
                .chain(z.iter().map(|&v| prev_class_test(v) as u8))
                .take(n)
                .collect();
            let mut enc = Vec::new();
            encode_ctx(&z, Some(&ctx), 10, &mut enc);
            let mut out = vec![7i64; n];
            let used = decode_prev_ctx(&enc, 10, prev_class_test, &mut out).unwrap();
            assert_eq!((used, &out), (enc.len(), &values), "n {n} shift {shift}");
            if n == 99 {
                for cut in 0..enc.len() {
                    assert!(decode_prev_ctx(&enc[..cut], 10, prev_class_test, &mut out).is_err());
                }
                for i in 0..enc.len() {
                    let mut bad = enc.clone();
                    bad[i] ^= 0x5A;
                    let _ = decode_prev_ctx(&bad, 10, prev_class_test, &mut out);
                }
            }
            // The wrong context count or length is an error.
            let mut short = vec![0i64; n + 1];
            assert!(decode_prev_ctx(&enc, 10, prev_class_test, &mut short).is_err());
        }
    }
}

/// The plan search's cheap entropy bound never exceeds the entropy and stays close to it, on
/// small and large counts (below and above its table).
#[test]
fn entropy_floor_is_a_tight_lower_bound() {
    let mut words = crate::pseudo_u64(usize::MAX, 17);
    for cells in [1usize, 2, 5, 64, 1000] {
        for scale in [1u64, 100, 5000, 1 << 20, 1 << 40] {
            let pairs: Vec<(u32, u64)> = (0..cells)
                .map(|t| (t as u32, 1 + words.next().expect("endless") % scale))
                .collect();
            let freqs: Vec<u64> = pairs.iter().map(|p| p.1).collect();
            let exact = entropy(&freqs);
            let floor = entropy_floor(&pairs);
            assert!(floor <= exact, "{cells} {scale}: {floor} > {exact}");
            let total: u64 = freqs.iter().sum();
            let room = 1e-8 * total as f64 * (total as f64).log2() + 1e-9;
            assert!(exact - floor <= room, "{cells} {scale}: {floor} vs {exact}");
        }
    }
}

#[test]
fn hist_counts_every_value_once_whatever_the_length() {
    // Lengths around the tables' stride, and contexts: the histogram is the plain count.
    for n in [0usize, 1, 3, 4, 5, 7, 8, 1001] {
        let values: Vec<u64> = crate::pseudo_u64(n, n as u64 + 1)
            .map(|x| x >> (x % 61))
            .collect();
        let ctx: Vec<u8> = values.iter().map(|&v| (v % 5) as u8).collect();
        for c in [None, Some(ctx.as_slice())] {
            let nctx = if c.is_some() { 5 } else { 1 };
            let hist = Hist::new(&values, c, nctx);
            let mut want = vec![0u64; nctx * hist.width];
            for (i, &v) in values.iter().enumerate() {
                let row = c.map_or(0, |c| usize::from(c[i]));
                want[row * hist.width + token(v, MAX_K) as usize] += 1;
            }
            assert_eq!(hist.counts, want, "{n} {}", c.is_some());
        }
    }
}

/// The narrow writer's pairs put exactly the bits of one put per value, for every length
/// (whole steps and each tail), with and without contexts, on codes short and long enough
/// that some pairs need two puts.
#[test]
fn paired_puts_write_the_bits_of_single_puts() {
    for shift in [60u32, 52, 44, 36, 28] {
        for n in (0..40).chain([257, 1001]) {
            let values: Vec<u64> = crate::pseudo_u64(n, u64::from(shift) + n as u64)
                .map(|x| (x >> shift) >> (x % 23))
                .collect();
            let ctx: Vec<u8> = (0..n).map(|i| (i * 7 % 3) as u8).collect();
            for ctx in [None, Some(&ctx[..])] {
                let nctx = if ctx.is_some() { 3 } else { 1 };
                let plan = Plan::new(&values, ctx, nctx);
                assert!(plan.max_bits <= crate::bits::MAX_PUT_BITS, "{shift}");
                let (enc, alph) = (plan.encode_table(), alphabet(plan.k));
                let mut starts = [0usize; LANES];
                let mut end = 0;
                for (st, &nv) in starts.iter_mut().zip(&plan.lane_values) {
                    *st = end;
                    end += (nv * plan.max_bits as usize).div_ceil(8) + 8;
                }
                let mut paired = vec![0u8; end];
                let stops =
                    put_lanes::<u64, false>(&values, ctx, &enc, alph, plan.k, starts, &mut paired);
                let mut single = vec![0u8; end];
                let mut lanes = starts.map(Lane::new);
                for (i, &v) in values.iter().enumerate() {
                    let row = ctx.map_or(0, |c| usize::from(c[i]) * alph);
                    put_value::<false>(&mut lanes[i % LANES], &mut single, &enc, row, plan.k, v);
                }
                assert_eq!(stops, lanes.map(|l| l.finish(&mut single)), "{shift} {n}");
                assert_eq!(paired, single, "{shift} {n}");
            }
        }
    }
}
