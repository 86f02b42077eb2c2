//! The BFP encoder: quantization and histograms (pass 1), then rANS coding backwards (pass 2).

use super::{
    CLASS_LO, CLASSES, Geo, History, LANES, MAX_CTX_TABLES, MAX_TABLES, PREV_FINE, Params, Shape,
    VERSION, VERSION_CTX, check, coarse, group_exponent, mag_bits, norm_row, prev_fine_of,
    quantize_at, quantize_narrow, step_scale, table_cost, vsym,
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

/// [`encode`], also returning the bytes that [`decode`](fn@super::decode) of the payload
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

/// The bytes [`encode_inner`]'s payload restores (into `restored`, as long as `data`),
/// computed by its quantization pass alone: nothing is coded. The reference the tests hold
/// the writers' shortcuts to.
#[cfg(test)]
pub(super) fn restore_inner(
    layout: FloatLayout,
    data: &[u8],
    row_len: usize,
    p: Params,
    restored: &mut [u8],
) {
    if let Err(e) = check(layout, p) {
        panic!("bfp::encode: {e}");
    }
    assert!(
        data.len().is_multiple_of(layout.bytes()) && restored.len() == data.len(),
        "bfp::encode: data is not whole values"
    );
    let g = Geo::new(layout, p.mantissa_bits);
    let count = data.len() / layout.bytes();
    let shape = Shape::new(count, norm_row(count, row_len), p.group_size as usize);
    let level = crate::cpu::Level::detected();
    if layout.bytes() == 2 {
        crate::cpu::dispatch(
            level,
            #[inline(always)]
            || pass1::<2>(&g, data, shape, None, Some(restored)),
        );
    } else {
        crate::cpu::dispatch(
            level,
            #[inline(always)]
            || pass1::<4>(&g, data, shape, None, Some(restored)),
        );
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
    let (lo, k, cost) = choose_window(vh, 1, alpha, MAX_TABLES);
    let fixed = crate::float::entropy(eh) + p1.raw_bits as f64;
    let (lo, k, np, tables) = match choose_context(g, shape, &p1, (lo, k, cost), fixed) {
        Some(c) => (c.lo, c.k, c.p, c.tables),
        None => (lo, k, 1, window_tables(vh, lo, k, 1, alpha)),
    };
    let class_of = |c: i8| (i32::from(c).clamp(lo, lo + k as i32 - 1) - lo) as usize;
    let mut entropy = fixed;
    let mut header_tables = BitVec::default();
    let edesc = rans::describe(eh);
    rans::write(&edesc, &mut header_tables);
    let esyms = rans::enc_table(&rans::normalize(&edesc));
    let mut vsyms = Vec::with_capacity(k * np * alpha);
    for t in &tables {
        entropy += crate::float::entropy(t);
        let desc = rans::describe(t);
        rans::write(&desc, &mut header_tables);
        vsyms.extend(rans::venc_table(&rans::normalize(&desc), g.neg0 as usize));
    }

    let mut out = Vec::new();
    let version = if np == 1 { VERSION } else { VERSION_CTX };
    out.extend_from_slice(&[version, B as u8, g.eb as u8, g.m as u8]);
    put_varint(&mut out, shape.gs as u64);
    put_varint(&mut out, shape.row as u64);
    put_varint(&mut out, shape.count as u64);
    out.push(lo as i8 as u8);
    out.push(k as u8);
    if np > 1 {
        out.push(np as u8);
    }
    out.extend(header_tables.finish());

    // The previous-value table of each magnitude symbol (`neg0` is the decoder's code 0).
    let pmap: Vec<u8> = (0..alpha as u32)
        .map(|s| coarse(prev_fine_of(g, s), np) as u8)
        .collect();
    let encs = crate::cpu::dispatch(
        level,
        #[inline(always)]
        || pass2::<B>(g, data, shape, &p1, &esyms, (&vsyms, np, &pmap), class_of),
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
    let scale = step_scale(g, e);
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

/// Pass 2: the rANS encoders of the lanes, fed backwards with the symbols of pass 1: the
/// magnitude tables `np` per context class (`pmap`: the previous-value class after each
/// symbol).
#[inline(always)]
fn pass2<const B: usize>(
    g: &Geo,
    data: &[u8],
    shape: Shape,
    p1: &Pass1,
    esyms: &[rans::Sym],
    (vsyms, np, pmap): (&[rans::VSym], usize, &[u8]),
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
    // The `np` tables of group `i`'s class, and the table offset after symbol `s`.
    let table_of = |i: usize| &vsyms[class_of(codes[i].class) * np * alpha..][..np * alpha];
    let after = |s: u32| usize::from(pmap[s as usize]) * alpha;
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
            let group = &syms[start..start + len];
            let sym_of = |x: u32| if g.low == 0 { x >> 1 } else { vsym(g, x) };
            for (j, &x) in group.iter().enumerate().rev() {
                let t = match j {
                    0 => 0,
                    _ if np == 1 => 0,
                    _ => after(sym_of(group[j - 1])),
                };
                if g.low == 0 {
                    // Narrow: `symbol << 1 | sign`.
                    enc.put_v(&table[t + (x >> 1) as usize], x & 1);
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
                enc.put_v(&table[t + sym as usize], x & 1);
            }
        }
        enc.put(&esyms[usize::from(gc.esym)]);
    };
    let rounds = lanes[0].1 - lanes[0].0;
    for r in (0..rounds).rev() {
        let at = |k: usize| (lanes[k].0 + r < lanes[k].1).then_some(lanes[k].0 + r);
        let idx = [at(0), at(1), at(2), at(3)];
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
        for enc in &mut encs {
            enc.reserve(n + 1);
        }
        // Written out rather than with `array::map`, which stays out of line here: a round
        // of groups of one value (own exponents) spent more in four such calls than in its
        // rANS steps.
        let val = |i: usize| {
            let st = shape.group(i).0;
            &syms[st..st + n]
        };
        let vals = [val(ids[0]), val(ids[1]), val(ids[2]), val(ids[3])];
        let base = ids.map(|i| class_of(codes[i].class) * np * alpha);
        if np == 1 {
            rans::put4(&mut encs, vsyms, base, vals, |x| ((x >> 1) as usize, x & 1));
        } else {
            rans::put4_ctx(
                &mut encs,
                vsyms,
                base,
                alpha,
                vals,
                |x| ((x >> 1) as usize, x & 1),
                |x| usize::from(pmap[(x >> 1) as usize]),
            );
        }
        for (enc, i) in encs.iter_mut().zip(ids) {
            enc.put(&esyms[usize::from(codes[i].esym)]);
        }
    }
    encs
}

/// Picks the context window `lo..lo + k` (`k <= max_k`) that minimizes the estimated size
/// of the magnitude tables and symbols, and returns it with that size in bits. `vh` holds,
/// per context class, `subs` histograms of `alpha` symbols (one table each).
fn choose_window(vh: &[u64], subs: usize, alpha: usize, max_k: usize) -> (i32, usize, f64) {
    let width = subs * alpha;
    let class = |c: usize| &vh[c * width..(c + 1) * width];
    let used: Vec<usize> = (0..CLASSES)
        .filter(|&c| class(c).iter().any(|&x| x > 0))
        .collect();
    let (Some(&cmin), Some(&cmax)) = (used.first(), used.last()) else {
        return (0, 1, 0.0);
    };
    let cost = |h: &[u64]| h.chunks_exact(alpha).map(table_cost).sum::<f64>();
    let single: Vec<f64> = (0..CLASSES).map(|c| cost(class(c))).collect();
    // left[c]: classes cmin..=c merged; right[c]: classes c..=cmax merged.
    let mut left = [0f64; CLASSES];
    let mut right = [0f64; CLASSES];
    let mut acc = vec![0u64; width];
    for (c, l) in left.iter_mut().enumerate().take(cmax + 1).skip(cmin) {
        for (a, &b) in acc.iter_mut().zip(class(c)) {
            *a += b;
        }
        *l = cost(&acc);
    }
    acc.fill(0);
    for (c, r) in right.iter_mut().enumerate().take(cmax + 1).skip(cmin).rev() {
        for (a, &b) in acc.iter_mut().zip(class(c)) {
            *a += b;
        }
        *r = cost(&acc);
    }
    let mut best = (left[cmax], cmin, 1usize);
    for k in 2..=max_k.min(cmax - cmin + 1) {
        for lo in cmin..=cmax + 1 - k {
            let hi = lo + k - 1;
            let cost = left[lo] + single[lo + 1..hi].iter().sum::<f64>() + right[hi];
            if cost < best.0 {
                best = (cost, lo, k);
            }
        }
    }
    (best.1 as i32 + CLASS_LO, best.2, best.0)
}

/// Chunks of fewer values are not worth more tables: codec 4.
const MIN_VALUES: usize = 4096;
/// Previous-value classes of [`choose_context`]'s first check.
const TRIAL: usize = 5;
/// Groups sampled when [`choose_context`] first checks whether a previous-value context can
/// pay: one in this many.
const SAMPLE: usize = 8;
/// Codec 13 is written only when its estimate is smaller than codec 4's by more than this
/// share of codec 4's estimated bits (its decoder is slower, and its tables cost memory).
const CTX_GAIN: f64 = 0.005;

#[cfg(test)]
thread_local! {
    /// Set by tests to code codec 4 where codec 13 would pay, to compare the two.
    pub(super) static NO_CONTEXT: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// A previous-value context that pays: the window, the previous-value classes kept, and the
/// histograms of its tables.
struct Context {
    lo: i32,
    k: usize,
    p: usize,
    tables: Vec<Vec<u64>>,
}

/// The histograms of the `k · np` tables of window `lo..lo + k` from histograms per context
/// class and previous-value class (`np` per class): table `t · np + pc` codes window class
/// `t` after previous-value class `pc`.
fn window_tables(vh: &[u64], lo: i32, k: usize, np: usize, alpha: usize) -> Vec<Vec<u64>> {
    let mut tables = vec![vec![0u64; alpha]; k * np];
    for (c, h) in vh.chunks_exact(np * alpha).enumerate() {
        let t = ((c as i32 + CLASS_LO).clamp(lo, lo + k as i32 - 1) - lo) as usize;
        for (pc, h) in h.chunks_exact(alpha).enumerate() {
            for (a, &b) in tables[t * np + pc].iter_mut().zip(h) {
                *a += b;
            }
        }
    }
    tables
}

/// The bits the rANS coder spends on `tables` and their symbols: the descriptors as
/// written, and each magnitude at its normalized probability (signs and raw bits aside,
/// which cost the same whatever the table).
fn coded_bits(tables: &[Vec<u64>]) -> f64 {
    let mut w = BitVec::default();
    let mut bits = 0.0;
    for t in tables {
        let desc = rans::describe(t);
        rans::write(&desc, &mut w);
        for (&c, f) in t.iter().zip(rans::normalize(&desc)) {
            if c > 0 {
                bits += c as f64 * (f64::from(rans::PB) - f64::from(f).log2());
            }
        }
    }
    bits + 8.0 * w.finish().len() as f64
}

/// Decides whether codec 13's previous-value tables pay for a chunk whose codec 4 window
/// `lo..lo + k` has magnitude tables and symbols estimated at `cost` bits, and the rest
/// (exponents, raw bits) at `fixed`. A sample of the groups first bounds the gain
/// (conditioning can only lower the entropy, and a sample overstates how much); only when
/// that bound passes [`CTX_GAIN`] are all groups counted, every number of previous-value
/// classes costed with its tables, and the best compared with codec 4 at the bits the coder
/// will spend (the estimate undercounts many small tables).
fn choose_context(
    g: &Geo,
    shape: Shape,
    p1: &Pass1,
    (lo, k, cost): (i32, usize, f64),
    fixed: f64,
) -> Option<Context> {
    let alpha = g.alpha();
    let need = CTX_GAIN * (cost + fixed);
    #[cfg(test)]
    if NO_CONTEXT.get() {
        return None;
    }
    if shape.gs < 2 || shape.count < MIN_VALUES || cost <= 0.0 {
        return None;
    }
    // Small chunks are counted whole: a sample of a few groups says little.
    let stride = if shape.groups >= 64 * SAMPLE {
        SAMPLE
    } else {
        1
    };
    // The sample's bits in codec 4's window without and with `TRIAL` previous-value
    // classes: bias-corrected entropies (a sample's plug-in entropy understates the true
    // one, the more so the more cells it spreads over), scaled to the chunk, plus the tables.
    let sample = context_hist(g, shape, p1, stride);
    let split = window_tables(&merge_prev(&sample, TRIAL, alpha), lo, k, TRIAL, alpha);
    let one = window_tables(&merge_prev(&sample, 1, alpha), lo, k, 1, alpha);
    let bits = |tables: &[Vec<u64>]| -> f64 {
        tables
            .iter()
            .map(|h| {
                let used = h.iter().filter(|&&c| c > 0).count() as f64;
                crate::float::entropy_corrected(h) * stride as f64 + 32.0 + 3.0 * used
            })
            .sum()
    };
    if bits(&one) - bits(&split) <= need {
        return None;
    }
    let fine = context_hist(g, shape, p1, 1);
    // (estimated bits, (lo, k, p), histograms per class and previous-value class)
    type Best = (f64, (i32, usize, usize), Vec<u64>);
    let mut best: Option<Best> = None;
    for p in 3..=PREV_FINE {
        let hist = merge_prev(&fine, p, alpha);
        let max_k = MAX_TABLES.min(MAX_CTX_TABLES / p);
        let (lo, k, c) = choose_window(&hist, p, alpha, max_k);
        if best.as_ref().is_none_or(|(b, ..)| c < *b) {
            best = Some((c, (lo, k, p), hist));
        }
    }
    let (c, (lo_c, k_c, p), hist) = best?;
    if c >= cost - need {
        return None;
    }
    let tables = window_tables(&hist, lo_c, k_c, p, alpha);
    let plain = window_tables(&p1.vh, lo, k, 1, alpha);
    (coded_bits(&tables) < coded_bits(&plain) - need).then_some(Context {
        lo: lo_c,
        k: k_c,
        p,
        tables,
    })
}

/// Histograms per context class and fine previous-value class (`CLASSES × PREV_FINE ×
/// alpha`) merged to `p` previous-value classes (`CLASSES × p × alpha`).
fn merge_prev(fine: &[u64], p: usize, alpha: usize) -> Vec<u64> {
    let mut hist = vec![0u64; CLASSES * p * alpha];
    for (class, out) in fine
        .chunks_exact(PREV_FINE * alpha)
        .zip(hist.chunks_exact_mut(p * alpha))
    {
        for (f, sub) in class.chunks_exact(alpha).enumerate() {
            let o = &mut out[coarse(f, p) * alpha..][..alpha];
            for (a, &b) in o.iter_mut().zip(sub) {
                *a += b;
            }
        }
    }
    hist
}

/// Magnitude-symbol histograms of every `stride`-th coded group, per context class and fine
/// previous-value class (`CLASSES × PREV_FINE × alpha`).
fn context_hist(g: &Geo, shape: Shape, p1: &Pass1, stride: usize) -> Vec<u64> {
    let alpha = g.alpha();
    let mut h = vec![0u64; CLASSES * PREV_FINE * alpha];
    // The offset of the histogram that follows each symbol.
    let next: Vec<usize> = (0..alpha as u32)
        .map(|s| prev_fine_of(g, s) * alpha)
        .collect();
    for i in (0..shape.groups).step_by(stride) {
        let gc = p1.codes[i];
        if gc.esym == 0 {
            continue;
        }
        let (start, len) = shape.group(i);
        let class = &mut h[(i32::from(gc.class) - CLASS_LO) as usize * PREV_FINE * alpha..]
            [..PREV_FINE * alpha];
        let mut at = 0;
        for &x in &p1.syms[start..start + len] {
            let s = if g.low == 0 { x >> 1 } else { vsym(g, x) } as usize;
            class[at + s] += 1;
            at = next[s];
        }
    }
    h
}
