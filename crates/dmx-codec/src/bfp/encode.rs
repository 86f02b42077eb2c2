//! The BFP encoder: quantization and histograms (pass 1), then rANS coding backwards (pass 2).

use super::{
    CLASS_LO, CLASSES, Geo, History, LANES, MAX_TABLES, Params, Shape, VERSION, check,
    group_exponent, mag_bits, norm_row, quantize_at, quantize_narrow, table_cost, vsym,
};
use crate::FloatLayout;
use crate::bits::BitVec;
use crate::entropy::rans;
use crate::entropy::varint::put_varint;
use crate::entropy::zigzag_i32;

/// Encodes little-endian values of `layout`; groups of `p.group_size` consecutive values
/// share one exponent; groups restart every `row_len` values (the tensor's last dimension;
/// the last group of a row may be shorter); `row_len == 0` means the whole chunk is one row.
/// Returns the self-describing payload (layout, M, G, row_len, counts inside) and the order-0
/// entropy bound in bits of what it coded (symbol entropies plus raw bits).
///
/// # Panics
/// If [`check`] rejects `layout` and `p`, or `data` is not whole values.
pub fn encode(layout: FloatLayout, data: &[u8], row_len: usize, p: Params) -> (Vec<u8>, f64) {
    encode_inner(layout, data, row_len, p, None, None)
}

/// [`encode`], also returning the bytes that [`decode`](super::decode) of the payload
/// restores (the same length as `data`), computed from the quantized values as the encoder
/// makes them instead of decoding the payload again: what a lossy writer needs for its
/// checksums and error. Tests check that they equal the decoder's output.
///
/// # Panics
/// As [`encode`].
pub fn encode_restored(
    layout: FloatLayout,
    data: &[u8],
    row_len: usize,
    p: Params,
) -> (Vec<u8>, f64, Vec<u8>) {
    with_restored(data.len(), |r| {
        encode_inner(layout, data, row_len, p, None, r)
    })
}

/// Runs an encoder that writes the restored bytes into the buffer it is given (`len`
/// bytes) and returns them with its payload and bits.
pub(super) fn with_restored(
    len: usize,
    encode: impl FnOnce(Option<&mut [u8]>) -> (Vec<u8>, f64),
) -> (Vec<u8>, f64, Vec<u8>) {
    let mut restored = vec![0u8; len];
    let (payload, bits) = encode(Some(&mut restored));
    (payload, bits, restored)
}

/// `raise`: per group, how many binades to raise its exponent above the largest value's
/// (see [`super::rd`]); `None` raises none.
pub(super) fn encode_inner(
    layout: FloatLayout,
    data: &[u8],
    row_len: usize,
    p: Params,
    raise: Option<&[u8]>,
    restored: Option<&mut [u8]>,
) -> (Vec<u8>, f64) {
    if let Err(e) = check(layout, p) {
        panic!("bfp::encode: {e}");
    }
    assert!(
        data.len().is_multiple_of(layout.bytes()),
        "bfp::encode: data is not whole values"
    );
    let g = Geo::new(layout, p.mantissa_bits);
    let count = data.len() / layout.bytes();
    let shape = Shape::new(count, norm_row(count, row_len), p.group_size as usize);
    if layout.bytes() == 2 {
        encode_width::<2>(&g, data, shape, raise, restored)
    } else {
        encode_width::<4>(&g, data, shape, raise, restored)
    }
}

#[inline(always)]
fn load<const B: usize>(v: &[u8]) -> u32 {
    let mut w = [0u8; 4];
    w[..B].copy_from_slice(&v[..B]);
    u32::from_le_bytes(w)
}

/// Loads the `vals.len()` values of `B` bytes that start at value `start` of `data`.
#[inline(always)]
pub(super) fn load_group<const B: usize>(data: &[u8], start: usize, vals: &mut [u32]) {
    for (v, b) in vals.iter_mut().zip(data[start * B..].chunks_exact(B)) {
        *v = load::<B>(b);
    }
}

/// Calls `f` with the values of each group of `shape`, in order.
#[inline(always)]
pub(super) fn for_each_group<const B: usize>(data: &[u8], shape: Shape, mut f: impl FnMut(&[u32])) {
    let mut vals = vec![0u32; shape.gs];
    for i in 0..shape.groups {
        let (start, len) = shape.group(i);
        load_group::<B>(data, start, &mut vals[..len]);
        f(&vals[..len]);
    }
}

/// Per-group results of the first pass.
#[derive(Clone, Copy)]
struct GroupCode {
    /// Exponent symbol (0: raw group).
    esym: u16,
    /// Context class.
    class: i8,
}

/// What pass 1 found.
struct Pass1 {
    /// Group ranges of the lanes.
    lanes: [(usize, usize); LANES],
    /// Quantized values, `q << 1 | sign`.
    syms: Vec<u32>,
    /// One per group.
    codes: Vec<GroupCode>,
    /// Magnitude-symbol histograms, `alpha` per context class.
    vh: Vec<u64>,
    /// Exponent-symbol histogram.
    eh: Vec<u64>,
    /// Bits coded raw.
    raw_bits: u64,
}

fn encode_width<const B: usize>(
    g: &Geo,
    data: &[u8],
    shape: Shape,
    raise: Option<&[u8]>,
    restored: Option<&mut [u8]>,
) -> (Vec<u8>, f64) {
    let alpha = g.alpha();
    let level = crate::cpu::Level::detected();
    let p1 = crate::cpu::dispatch(
        level,
        #[inline(always)]
        || pass1::<B>(g, data, shape, raise, restored),
    );
    let (vh, eh) = (&p1.vh, &p1.eh);
    let (lo, k) = choose_window(vh, alpha);
    let class_of = |c: i8| (i32::from(c).clamp(lo, lo + k as i32 - 1) - lo) as usize;
    let mut tables = vec![vec![0u64; alpha]; k];
    for (c, h) in vh.chunks_exact(alpha).enumerate() {
        let t = &mut tables[class_of((c as i32 + CLASS_LO) as i8)];
        for (a, &b) in t.iter_mut().zip(h) {
            *a += b;
        }
    }
    let mut entropy = crate::float::entropy(eh) + p1.raw_bits as f64;
    let mut header_tables = BitVec::default();
    let edesc = rans::describe(eh);
    rans::write(&edesc, &mut header_tables);
    let esyms = rans::enc_table(&rans::normalize(&edesc));
    let mut vsyms = Vec::with_capacity(k * alpha);
    for t in &tables {
        entropy += crate::float::entropy(t);
        let desc = rans::describe(t);
        rans::write(&desc, &mut header_tables);
        vsyms.extend(rans::venc_table(&rans::normalize(&desc), g.neg0 as usize));
    }

    let mut out = Vec::new();
    out.extend_from_slice(&[VERSION, B as u8, g.eb as u8, g.m as u8]);
    put_varint(&mut out, shape.gs as u64);
    put_varint(&mut out, shape.row as u64);
    put_varint(&mut out, shape.count as u64);
    out.push(lo as i8 as u8);
    out.push(k as u8);
    out.extend(header_tables.finish());

    let encs = crate::cpu::dispatch(
        level,
        #[inline(always)]
        || pass2::<B>(g, data, shape, &p1, &esyms, &vsyms, class_of),
    );
    let streams: Vec<Vec<u8>> = encs
        .into_iter()
        .map(|enc| {
            let mut lane = Vec::new();
            enc.finish(&mut lane);
            lane
        })
        .collect();
    for s in &streams {
        put_varint(&mut out, s.len() as u64);
    }
    for s in &streams {
        out.extend_from_slice(s);
    }
    (out, entropy)
}

/// Pass 1: quantizes every group, picks its exponent symbol and context class, and counts
/// the symbols.
/// With `restored`, also writes there the values the decoder restores: raw groups as they
/// are, coded groups from their quantized values (as `Dec::value` computes them).
#[inline(always)]
fn pass1<const B: usize>(
    g: &Geo,
    data: &[u8],
    shape: Shape,
    raise: Option<&[u8]>,
    mut restored: Option<&mut [u8]>,
) -> Pass1 {
    let alpha = g.alpha();
    let mut syms = vec![0u32; shape.count];
    let mut codes = Vec::with_capacity(shape.groups);
    let mut vh = vec![0u64; CLASSES * alpha];
    let mut eh = vec![0u64; g.exp_alpha()];
    let mut vals = vec![0u32; shape.gs];
    let mut raw_bits = 0u64;
    let lanes = shape.lanes();
    for &(first, end) in &lanes {
        let mut hist = History::new();
        for i in first..end {
            let (start, len) = shape.group(i);
            let vals = &mut vals[..len];
            load_group::<B>(data, start, vals);
            let s = &mut syms[start..start + len];
            let Some(e) = group_exponent(g, vals) else {
                if let Some(r) = restored.as_deref_mut() {
                    r[start * B..(start + len) * B]
                        .copy_from_slice(&data[start * B..(start + len) * B]);
                }
                eh[0] += 1;
                raw_bits += (len * B * 8) as u64;
                codes.push(GroupCode { esym: 0, class: 0 });
                continue;
            };
            let e = match raise {
                Some(r) => (e + u32::from(r[i])).min(g.emax),
                None => e,
            };
            let pred = hist.pred(g);
            hist.start(g, e);
            let class = hist.class(g, e);
            let esym = 1 + zigzag_i32(e as i32 - pred);
            eh[esym as usize] += 1;
            let h = &mut vh[(class - CLASS_LO) as usize * alpha..][..alpha];
            let (sum_q, nz) = if g.low == 0 {
                quantize_narrow(g, vals, e, s, h)
            } else {
                quantize_at(g, vals, e, s);
                let mut sum_q = 0u64;
                let mut nz = 0u64;
                let mut neg0 = 0u64;
                for &x in s.iter() {
                    let q = x >> 1;
                    sum_q += u64::from(q);
                    nz += u64::from(q != 0);
                    neg0 += u64::from(x == 1);
                    h[vsym(g, x) as usize] += 1;
                }
                raw_bits += u64::from(g.low) * (len as u64 - neg0);
                (sum_q, nz)
            };
            raw_bits += nz;
            if let Some(r) = restored.as_deref_mut() {
                restore_group::<B>(g, e, s, &mut r[start * B..(start + len) * B]);
            }
            hist.push(e, sum_q, len);
            codes.push(GroupCode {
                esym: esym as u16,
                class: class as i8,
            });
        }
    }
    Pass1 {
        lanes,
        syms,
        codes,
        vh,
        eh,
        raw_bits,
    }
}

/// The values a coded group of exponent `e` restores to, from its quantized values `s`
/// (`q << 1 | sign`, or for `M <= 8` the narrow form `symbol << 1 | sign` with the symbol
/// `neg0` for `−0`): `sign | mag_bits(q)` at the group's step, exactly as the decoder.
#[inline(always)]
fn restore_group<const B: usize>(g: &Geo, e: u32, s: &[u32], out: &mut [u8]) {
    // The step, times 2^-adj, as the decoder computes it.
    let k = e as i64 - g.bias as i64 - g.m as i64 + 1 - g.adj as i64;
    let scale = f64::from_bits(((1023 + k) as u64) << 52);
    let narrow = g.low == 0;
    for (&x, o) in s.iter().zip(out.chunks_exact_mut(B)) {
        let mut q = x >> 1;
        let mut sign = x & 1;
        if narrow && q == g.neg0 {
            q = 0;
            sign = 1;
        }
        let v = sign << g.sign_shift | mag_bits(g, q, scale);
        o.copy_from_slice(&v.to_le_bytes()[..B]);
    }
}

/// Pass 2: the rANS encoders of the lanes, fed backwards with the symbols of pass 1.
#[inline(always)]
fn pass2<const B: usize>(
    g: &Geo,
    data: &[u8],
    shape: Shape,
    p1: &Pass1,
    esyms: &[rans::Sym],
    vsyms: &[rans::VSym],
    class_of: impl Fn(i8) -> usize,
) -> [rans::Encoder; LANES] {
    let alpha = g.alpha();
    let (lanes, syms, codes) = (p1.lanes, &p1.syms, &p1.codes);
    // Pass 2: rANS, backwards. Round r holds group `first + r` of every lane; rounds whose
    // four groups are coded alike run the four encoders in lockstep.
    let lowmask = (1u32 << g.low) - 1;
    let mut encs: [rans::Encoder; LANES] = std::array::from_fn(|k| {
        let (first, end) = lanes[k];
        rans::Encoder::new((end - first) * shape.gs * (g.m as usize + 2) / 16 + 16)
    });
    let table_of = |i: usize| &vsyms[class_of(codes[i].class) * alpha..][..alpha];
    let one = |enc: &mut rans::Encoder, i: usize| {
        let (start, len) = shape.group(i);
        let gc = codes[i];
        enc.reserve(3 * len + 1);
        if gc.esym == 0 {
            for v in data[start * B..(start + len) * B].chunks_exact(B).rev() {
                let v = load::<B>(v);
                if B == 4 {
                    enc.bits(v >> 16, 16);
                }
                enc.bits(v & 0xFFFF, 16);
            }
        } else {
            let table = table_of(i);
            for &x in syms[start..start + len].iter().rev() {
                if g.low == 0 {
                    // Narrow: `symbol << 1 | sign`.
                    enc.put_v(&table[(x >> 1) as usize], x & 1);
                    continue;
                }
                let sym = vsym(g, x);
                let q = x >> 1;
                if sym == 0 && q != 0 {
                    enc.bits(x & 1, 1);
                }
                if x != 1 {
                    enc.bits(q & lowmask, g.low);
                }
                enc.put_v(&table[sym as usize], x & 1);
            }
        }
        enc.put(&esyms[usize::from(gc.esym)]);
    };
    let rounds = lanes[0].1 - lanes[0].0;
    for r in (0..rounds).rev() {
        let idx = lanes.map(|(first, end)| (first + r < end).then_some(first + r));
        let quad = match idx {
            [Some(i0), Some(i1), Some(i2), Some(i3)] => {
                let ids = [i0, i1, i2, i3];
                let n = shape.group(i0).1;
                let alike = g.low == 0
                    && ids
                        .iter()
                        .all(|&i| codes[i].esym != 0 && shape.group(i).1 == n);
                alike.then_some(ids)
            }
            _ => None,
        };
        let Some(ids) = quad else {
            for (enc, i) in encs.iter_mut().zip(idx) {
                if let Some(i) = i {
                    one(enc, i);
                }
            }
            continue;
        };
        let n = shape.group(ids[0]).1;
        let st = ids.map(|i| shape.group(i).0);
        for enc in &mut encs {
            enc.reserve(n + 1);
        }
        rans::put4(
            &mut encs,
            ids.map(table_of),
            st.map(|st| &syms[st..st + n]),
            |x| ((x >> 1) as usize, x & 1),
        );
        for (enc, i) in encs.iter_mut().zip(ids) {
            enc.put(&esyms[usize::from(codes[i].esym)]);
        }
    }
    encs
}

/// Picks the context window `lo..lo + k` that minimizes the estimated size.
fn choose_window(vh: &[u64], alpha: usize) -> (i32, usize) {
    let used: Vec<usize> = (0..CLASSES)
        .filter(|&c| vh[c * alpha..(c + 1) * alpha].iter().any(|&x| x > 0))
        .collect();
    let (Some(&cmin), Some(&cmax)) = (used.first(), used.last()) else {
        return (0, 1);
    };
    let class = |c: usize| &vh[c * alpha..(c + 1) * alpha];
    let single: Vec<f64> = (0..CLASSES).map(|c| table_cost(class(c))).collect();
    // left[c]: classes cmin..=c merged; right[c]: classes c..=cmax merged.
    let mut left = [0f64; CLASSES];
    let mut right = [0f64; CLASSES];
    let mut acc = vec![0u64; alpha];
    for (c, l) in left.iter_mut().enumerate().take(cmax + 1).skip(cmin) {
        for (a, &b) in acc.iter_mut().zip(class(c)) {
            *a += b;
        }
        *l = table_cost(&acc);
    }
    acc.fill(0);
    for (c, r) in right.iter_mut().enumerate().take(cmax + 1).skip(cmin).rev() {
        for (a, &b) in acc.iter_mut().zip(class(c)) {
            *a += b;
        }
        *r = table_cost(&acc);
    }
    let mut best = (left[cmax], cmin, 1usize);
    for k in 2..=MAX_TABLES.min(cmax - cmin + 1) {
        for lo in cmin..=cmax + 1 - k {
            let hi = lo + k - 1;
            let cost = left[lo] + single[lo + 1..hi].iter().sum::<f64>() + right[hi];
            if cost < best.0 {
                best = (cost, lo, k);
            }
        }
    }
    (best.1 as i32 + CLASS_LO, best.2)
}
