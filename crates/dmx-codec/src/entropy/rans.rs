//! Static rANS with a 32-bit state, 16-bit renormalization and 12-bit probabilities, plus
//! raw ("bypass") bits pushed through the same state (used by [`crate::bfp`]).

use crate::CodecError;
use crate::bits::{BitReader, BitVec};

/// Probability bits.
pub const PB: u32 = 12;
/// Sum of the normalized frequencies.
pub const TOTAL: usize = 1 << PB;
/// Lower bound of the normalized state.
pub const L: u32 = 1 << 16;
/// Largest frequency descriptor.
const MAXD: u8 = 104;
/// `256 · 2^(j/8)`, rounded.
const POW: [u64; 8] = [256, 279, 304, 332, 362, 395, 431, 470];

fn weight(d: u8) -> u64 {
    let d = u32::from(d) - 1;
    POW[(d & 7) as usize] << (d >> 3)
}

/// Frequency descriptors of a histogram: 0 for absent symbols, else `1..=MAXD` on a
/// 1/8-octave scale relative to the most frequent symbol.
pub fn describe(counts: &[u64]) -> Vec<u8> {
    let max = counts.iter().copied().max().unwrap_or(0) as f64;
    counts
        .iter()
        .map(|&c| {
            if c == 0 {
                0
            } else {
                let d = f64::from(MAXD) + 8.0 * (c as f64 / max).log2();
                d.round().clamp(1.0, f64::from(MAXD)) as u8
            }
        })
        .collect()
}

/// Frequencies summing to `TOTAL` (every described symbol at least 1) for descriptors;
/// all zero when none is described. Integer arithmetic only: encoder and decoder agree.
pub fn normalize(desc: &[u8]) -> Vec<u32> {
    normalize_to(desc, PB)
}

/// [`normalize`] to a sum of `2^pb` (`desc.len() <= 2^pb`, `pb <= 16`).
pub fn normalize_to(desc: &[u8], pb: u32) -> Vec<u32> {
    let total_target = 1u64 << pb;
    let w: Vec<u64> = desc
        .iter()
        .map(|&d| if d == 0 { 0 } else { weight(d) })
        .collect();
    let total: u64 = w.iter().sum();
    if total == 0 {
        return vec![0; desc.len()];
    }
    let mut f: Vec<u32> = w
        .iter()
        .map(|&x| {
            if x == 0 {
                0
            } else {
                (x * total_target / total).max(1) as u32
            }
        })
        .collect();
    let sum: u32 = f.iter().sum();
    let target = total_target as u32;
    if sum < target {
        let mut best = 0;
        for (i, &x) in f.iter().enumerate() {
            if x > f[best] {
                best = i;
            }
        }
        f[best] += target - sum;
    } else if sum > target {
        // At most `desc.len() <= 2^pb` symbols were raised to 1, so the others can give
        // the excess back.
        let mut excess = sum - target;
        let mut order: Vec<usize> = (0..f.len()).filter(|&i| f[i] > 1).collect();
        order.sort_by(|&a, &b| f[b].cmp(&f[a]).then(a.cmp(&b)));
        for i in order {
            let take = excess.min(f[i] - 1);
            f[i] -= take;
            excess -= take;
            if excess == 0 {
                break;
            }
        }
    }
    f
}

/// Writes descriptors: `u16 first`, `u16 count`, then each descriptor as a delta from the
/// previous one (`0` same, `1 0 s` ±1, `1 1 0 s b` ±(2 + b), `1 1 1 ddddddd` literal).
pub fn write(desc: &[u8], w: &mut BitVec) {
    write_span(desc, w, false);
}

/// [`write`](fn@write) with runs of absent symbols coded by their length: a descriptor of 0 is
/// followed by the number `z ≥ 1` of zero descriptors in its run (itself included), as `k`
/// one bits, a zero bit and the low `k` bits of `z` (`k` = bit length of `z` − 1). Tables
/// whose described symbols sit far apart (the two signs of a float's exponents) cost a few
/// bits per gap instead of one per absent symbol.
pub fn write_runs(desc: &[u8], w: &mut BitVec) {
    write_span(desc, w, true);
}

/// [`write`](fn@write), or with `runs` [`write_runs`].
fn write_span(desc: &[u8], w: &mut BitVec, runs: bool) {
    let first = desc.iter().position(|&d| d != 0).unwrap_or(0);
    let last = desc.iter().rposition(|&d| d != 0).map_or(0, |p| p + 1);
    let span = &desc[first..last.max(first)];
    w.put(first as u64, 16);
    w.put(span.len() as u64, 16);
    let mut prev = 0i32;
    let mut i = 0;
    while i < span.len() {
        let d = span[i];
        put_descriptor(w, d, prev);
        prev = i32::from(d);
        i += 1;
        if runs && d == 0 {
            let z = 1 + span[i..].iter().take_while(|&&d| d == 0).count();
            let k = usize::BITS - 1 - z.leading_zeros();
            w.put((1u64 << k) - 1, k);
            w.put(0, 1);
            w.put(z as u64 & ((1u64 << k) - 1), k);
            i += z - 1;
        }
    }
}

/// Reads [`write_runs`]' output for an alphabet of `alpha` symbols; returns the
/// descriptors.
pub fn read_runs(r: &mut BitReader<'_>, alpha: usize) -> Result<Vec<u8>, CodecError> {
    read_span(r, alpha, true)
}

/// Reads [`write`](fn@write)'s output for an alphabet of `alpha` symbols; returns frequencies.
pub fn read(r: &mut BitReader<'_>, alpha: usize) -> Result<Vec<u32>, CodecError> {
    Ok(normalize(&read_span(r, alpha, false)?))
}

/// Reads [`write`](fn@write)'s output, or with `runs` [`write_runs`]'; returns the descriptors.
fn read_span(r: &mut BitReader<'_>, alpha: usize, runs: bool) -> Result<Vec<u8>, CodecError> {
    let first = r.get(16) as usize;
    let count = r.get(16) as usize;
    if first + count > alpha {
        return Err(CodecError::Corrupt("rANS table exceeds the alphabet"));
    }
    let mut desc = vec![0u8; alpha];
    let mut prev = 0i32;
    let mut i = first;
    while i < first + count {
        prev = get_descriptor(r, prev)?;
        desc[i] = prev as u8;
        i += 1;
        if runs && prev == 0 {
            let mut k = 0;
            while r.get(1) == 1 {
                k += 1;
                if k > 16 || r.overrun() {
                    return Err(CodecError::Corrupt("rANS table run too long"));
                }
            }
            let z = (1usize << k) | r.get(k) as usize;
            if i - 1 + z > first + count {
                return Err(CodecError::Corrupt("rANS table run exceeds its span"));
            }
            i += z - 1;
        }
        if r.overrun() {
            return Err(CodecError::Corrupt("rANS table truncated"));
        }
    }
    Ok(desc)
}

/// Writes one descriptor `d` relative to the previous one (the codes of [`write`](fn@write)).
fn put_descriptor(w: &mut BitVec, d: u8, prev: i32) {
    let delta = i32::from(d) - prev;
    let neg = u64::from(delta < 0);
    match delta.unsigned_abs() {
        0 => w.put(0, 1),
        1 => w.put(0b001 | neg << 2, 3),
        a @ (2 | 3) => w.put(0b011 | neg << 3 | u64::from(a - 2) << 4, 5),
        _ => w.put(0b111 | u64::from(d) << 3, 10),
    }
}

/// Reads one descriptor relative to `prev` (the codes of [`write`](fn@write)).
fn get_descriptor(r: &mut BitReader<'_>, mut prev: i32) -> Result<i32, CodecError> {
    if r.get(1) == 1 {
        if r.get(1) == 0 {
            prev += if r.get(1) == 0 { 1 } else { -1 };
        } else if r.get(1) == 0 {
            let neg = r.get(1) == 1;
            let a = 2 + r.get(1) as i32;
            prev += if neg { -a } else { a };
        } else {
            prev = r.get(7) as i32;
        }
    }
    if !(0..=i32::from(MAXD)).contains(&prev) {
        return Err(CodecError::Corrupt(
            "rANS frequency descriptor out of range",
        ));
    }
    Ok(prev)
}

/// Encoder constants of a symbol.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sym {
    f: u32,
    c: u32,
    /// Renormalize while the state is at least this.
    xmax: u64,
    /// `ceil(2^44 / f)`: `x / f == (x · rcp) >> 44` for every 32-bit `x`.
    rcp: u64,
}

/// Encoder constants for normalized frequencies.
pub fn enc_table(freqs: &[u32]) -> Vec<Sym> {
    let mut c = 0;
    freqs
        .iter()
        .map(|&f| {
            let s = if f == 0 {
                Sym::default()
            } else {
                Sym {
                    f,
                    c,
                    xmax: (1u64 << (32 - PB)) * u64::from(f),
                    rcp: (1u64 << 44).div_ceil(u64::from(f)),
                }
            };
            c += f;
            s
        })
        .collect()
}

/// Decode table: per slot, `symbol << 32 | (slot - cum) << 16 | frequency`. Without
/// symbols every slot decodes symbol 0 with frequency `TOTAL` (leaves the state as it is).
pub fn dec_table(freqs: &[u32]) -> Box<[u64; TOTAL]> {
    let mut t = Box::new([0u64; TOTAL]);
    let mut slot = 0usize;
    for (sym, &f) in freqs.iter().enumerate() {
        for k in 0..f as usize {
            if let Some(e) = t.get_mut(slot) {
                *e = (sym as u64) << 32 | (k as u64) << 16 | u64::from(f);
            }
            slot += 1;
        }
    }
    if slot != TOTAL {
        for (k, e) in t.iter_mut().enumerate() {
            *e = (k as u64) << 16 | TOTAL as u64;
        }
    }
    t
}

/// Encoder constants of a magnitude symbol whose sign shares its step: a table of
/// `TOTAL` slots is used twice, as the two halves of a `2 · TOTAL` slot space (the sign
/// picks the half, so it costs exactly one bit); a *zero-like* symbol (no sign: `+0`,
/// `−0`, or for `M > 8` the symbol of small magnitudes) owns its slots in both halves.
#[derive(Debug, Clone, Copy, Default)]
pub struct VSym {
    /// Renormalize while the state exceeds this (`2^19 fe − 1`).
    xlim: u32,
    /// Frequency in the doubled space: `f`, or `2f` for zero-like symbols.
    fe: u32,
    /// Zero-like: `f` (the remainder picks the half); else `u32::MAX`.
    fcmp: u32,
    /// What the upper half adds: `TOTAL − f` for zero-like symbols, else `TOTAL`.
    hstep: u32,
    /// 1 if the symbol carries a sign.
    smask: u32,
    c: u32,
    /// `ceil(2^45 / fe)`.
    rcp: u64,
}

/// Magnitude encoder constants; symbols 0 and `neg0` are zero-like.
pub fn venc_table(freqs: &[u32], neg0: usize) -> Vec<VSym> {
    let mut c = 0;
    freqs
        .iter()
        .enumerate()
        .map(|(i, &f)| {
            let z = i == 0 || i == neg0;
            let s = if f == 0 {
                VSym::default()
            } else {
                let fe = if z { 2 * f } else { f };
                VSym {
                    xlim: ((1u64 << (31 - PB)) * u64::from(fe) - 1) as u32,
                    fe,
                    fcmp: if z { f } else { u32::MAX },
                    hstep: if z { TOTAL as u32 - f } else { TOTAL as u32 },
                    smask: u32::from(!z),
                    c,
                    rcp: (1u64 << 45).div_ceil(u64::from(fe)),
                }
            };
            c += f;
            s
        })
        .collect()
}

/// Magnitude decode table. Per slot: bits 0..16 the frequency in the doubled space
/// (`fe`), 16..32 `slot − cum`, 32..48 `f` for zero-like symbols (else 0), 48..59 the
/// code (symbol bits, 0 for `neg0` | zero-like << 8 | is-neg0 << 9 | carries a sign
/// << 10).
pub fn vdec_table(freqs: &[u32], neg0: usize) -> Box<[u64; TOTAL]> {
    let mut t = Box::new([0u64; TOTAL]);
    let mut slot = 0usize;
    for (sym, &f) in freqs.iter().enumerate() {
        let z = u64::from(sym == 0 || sym == neg0);
        let n = u64::from(sym == neg0);
        let bits = if sym == neg0 { 0 } else { sym as u64 & 0xFF };
        let f = u64::from(f);
        let fixed = (f << z) | (f * z) << 32 | (bits | z << 8 | n << 9 | (1 - z) << 10) << 48;
        for k in 0..f {
            if let Some(e) = t.get_mut(slot) {
                *e = fixed | k << 16;
            }
            slot += 1;
        }
    }
    if slot != TOTAL {
        // Corrupt or empty table: any valid entry keeps decoding panic-free.
        for (k, e) in t.iter_mut().enumerate() {
            *e = (k as u64 & 0xFFF) << 16 | TOTAL as u64;
        }
    }
    t
}

/// A rANS encoder; symbols are pushed in reverse decoding order. Renormalization is
/// branch-free: a word is always stored and kept only when needed.
pub struct Encoder {
    x: u32,
    words: Vec<u16>,
    n: usize,
}

impl Encoder {
    pub fn new(capacity: usize) -> Self {
        Self {
            x: L,
            words: vec![0; capacity.max(16)],
            n: 0,
        }
    }

    /// Makes room for `k` more steps.
    #[inline(always)]
    pub fn reserve(&mut self, k: usize) {
        if self.n + k > self.words.len() {
            let len = (2 * self.words.len()).max(self.n + k);
            self.words.resize(len, 0);
        }
    }

    #[inline(always)]
    fn emit_if(&mut self, cond: bool) {
        self.words[self.n] = self.x as u16;
        self.n += usize::from(cond);
        self.x = if cond { self.x >> 16 } else { self.x };
    }

    /// Pushes a symbol (after [`Encoder::reserve`]).
    #[inline(always)]
    pub fn put(&mut self, s: &Sym) {
        self.emit_if(u64::from(self.x) >= s.xmax);
        let x = self.x;
        // No overflow: after renormalization x < 2^20 f, so x · rcp < 2^64.
        let q = ((u64::from(x) * s.rcp) >> 44) as u32;
        self.x = (q << PB) + (x - q * s.f) + s.c;
    }

    /// Pushes a magnitude symbol and its sign bit `sign` (ignored for zero-like symbols).
    #[inline(always)]
    pub fn put_v(&mut self, s: &VSym, sign: u32) {
        self.reserve(1);
        vstep(&mut self.x, &mut self.n, &mut self.words, s, sign & s.smask);
    }

    /// Pushes the `n` (0..=16) raw bits of `v` (after [`Encoder::reserve`]).
    #[inline(always)]
    pub fn bits(&mut self, v: u32, n: u32) {
        self.emit_if(u64::from(self.x) >= 1u64 << (32 - n));
        self.x = self.x << n | v;
    }

    /// Appends the stream: the final state, then the words in decoding order.
    pub fn finish(self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.x.to_le_bytes());
        let at = out.len();
        out.resize(at + 2 * self.n, 0);
        for (o, w) in out[at..]
            .chunks_exact_mut(2)
            .zip(self.words[..self.n].iter().rev())
        {
            o.copy_from_slice(&w.to_le_bytes());
        }
    }
}

/// One magnitude step; `sign` must be 0 for zero-like symbols.
#[inline(always)]
fn vstep(x: &mut u32, n: &mut usize, w: &mut [u16], s: &VSym, sign: u32) {
    let c = *x > s.xlim;
    w[*n] = *x as u16;
    *n += usize::from(c);
    let v = if c { *x >> 16 } else { *x };
    // No overflow: v < 2^19 fe, so v · rcp < 2^64.
    let q = ((u64::from(v) * s.rcp) >> 45) as u32;
    let r = v - q * s.fe;
    let hi = u32::from(r >= s.fcmp) | sign;
    *x = (q << (PB + 1)) + s.c + r + (s.hstep & hi.wrapping_neg());
}

/// Pushes one magnitude symbol per element of `vals[k]` (equal lengths, last first) into
/// encoder `k` with the table of `alpha` symbols at `t[base[k]..]`, the four in lockstep;
/// `key` maps an element to its symbol and sign (0 for zero-like symbols). Each encoder must
/// have room for `vals[k].len()` words.
#[inline(always)]
pub fn put4(
    encs: &mut [Encoder; 4],
    t: &[VSym],
    base: [usize; 4],
    vals: [&[u32]; 4],
    key: impl Fn(u32) -> (usize, u32),
) {
    put4_ctx(encs, t, base, 0, vals, key, |_| 0);
}

/// [`put4`] with a table per value: encoder `k` codes element `j` of `vals[k]` with table
/// `ctx(vals[k][j − 1])` of its table set at `t[base[k]..]` (tables of `alpha` symbols, back
/// to back), and its first element with table 0; `key` maps an element to its symbol and
/// sign.
#[inline(always)]
pub fn put4_ctx(
    encs: &mut [Encoder; 4],
    t: &[VSym],
    base: [usize; 4],
    alpha: usize,
    vals: [&[u32]; 4],
    key: impl Fn(u32) -> (usize, u32),
    ctx: impl Fn(u32) -> usize,
) {
    let [e0, e1, e2, e3] = encs;
    let (mut x0, mut x1, mut x2, mut x3) = (e0.x, e1.x, e2.x, e3.x);
    let (mut n0, mut n1, mut n2, mut n3) = (e0.n, e1.n, e2.n, e3.n);
    let (w0, w1, w2, w3) = (&mut e0.words, &mut e1.words, &mut e2.words, &mut e3.words);
    // One length for the four (fewer live registers in the loop, no per-slice checks).
    let len = vals[0].len();
    let vals = vals.map(|v| &v[..len]);
    let table = |k: usize, j: usize| {
        base[k]
            + if j == 0 {
                0
            } else {
                ctx(vals[k][j - 1]) * alpha
            }
    };
    for j in (0..len).rev() {
        let (a, sa) = key(vals[0][j]);
        let (b, sb) = key(vals[1][j]);
        let (c, sc) = key(vals[2][j]);
        let (d, sd) = key(vals[3][j]);
        vstep(&mut x0, &mut n0, w0, &t[table(0, j) + a], sa);
        vstep(&mut x1, &mut n1, w1, &t[table(1, j) + b], sb);
        vstep(&mut x2, &mut n2, w2, &t[table(2, j) + c], sc);
        vstep(&mut x3, &mut n3, w3, &t[table(3, j) + d], sd);
    }
    (e0.x, e1.x, e2.x, e3.x) = (x0, x1, x2, x3);
    (e0.n, e1.n, e2.n, e3.n) = (n0, n1, n2, n3);
}

/// Decodes `codes.len() / 4` magnitude codes ([`Decoder::code`]) from each decoder,
/// the four in lockstep, decoder `k` with table `t[k]`; `codes[4 i + k]` is the `i`-th
/// code of decoder `k`. The decoders must share one word buffer.
pub fn decode4(d: &mut [Decoder<'_>; 4], t: [&[u64; TOTAL]; 4], codes: &mut [u16]) {
    let words = d[0].words;
    let [mut x0, mut x1, mut x2, mut x3] = d.map(|d| d.x);
    let [mut k0, mut k1, mut k2, mut k3] = d.map(|d| d.k);
    let [t0, t1, t2, t3] = t;
    for c in codes.chunks_exact_mut(4) {
        c[0] = code(&mut x0, &mut k0, words, t0);
        c[1] = code(&mut x1, &mut k1, words, t1);
        c[2] = code(&mut x2, &mut k2, words, t2);
        c[3] = code(&mut x3, &mut k3, words, t3);
    }
    for (d, (x, k)) in d.iter_mut().zip([(x0, k0), (x1, k1), (x2, k2), (x3, k3)]) {
        d.x = x;
        d.k = k;
    }
}

/// [`decode4`] with a table per code: decoder `k` decodes its first code with `t[k][0]` and
/// each next one with `t[k][map[previous code & 0xFF]]` (every entry of `map` must index
/// `t[k]`).
pub fn decode4_ctx(
    d: &mut [Decoder<'_>; 4],
    t: [&[Box<[u64; TOTAL]>]; 4],
    map: &[u8; 256],
    codes: &mut [u16],
) {
    let words = d[0].words;
    let [mut x0, mut x1, mut x2, mut x3] = d.map(|d| d.x);
    let [mut k0, mut k1, mut k2, mut k3] = d.map(|d| d.k);
    let [t0, t1, t2, t3] = t;
    let (mut c0, mut c1, mut c2, mut c3) = (&t0[0], &t1[0], &t2[0], &t3[0]);
    let next = |c: u16| usize::from(map[usize::from(c & 0xFF)]);
    for c in codes.chunks_exact_mut(4) {
        c[0] = code(&mut x0, &mut k0, words, c0);
        c[1] = code(&mut x1, &mut k1, words, c1);
        c[2] = code(&mut x2, &mut k2, words, c2);
        c[3] = code(&mut x3, &mut k3, words, c3);
        c0 = &t0[next(c[0])];
        c1 = &t1[next(c[1])];
        c2 = &t2[next(c[2])];
        c3 = &t3[next(c[3])];
    }
    for (d, (x, k)) in d.iter_mut().zip([(x0, k0), (x1, k1), (x2, k2), (x3, k3)]) {
        d.x = x;
        d.k = k;
    }
}

/// Branch-free renormalization: the next word is always read and kept only when needed.
/// `words` ends with a padding word, which reads past the end also get.
#[inline(always)]
fn refill(x: &mut u32, k: &mut usize, words: &[u16]) {
    let need = *x < L;
    let w = u32::from(words[(*k).min(words.len() - 1)]);
    let y = *x << 16 | w;
    *x = if need { y } else { *x };
    *k += usize::from(need);
}

/// One magnitude step with a table of [`vdec_table`]: the entry's code (bits 48..59)
/// with bit 15 set for the upper half of the slot space (the sign, for symbols that
/// carry one).
#[inline(always)]
fn code(x: &mut u32, k: &mut usize, words: &[u16], t: &[u64; TOTAL]) -> u16 {
    let slot = *x & (2 * TOTAL as u32 - 1);
    let half = slot >> PB;
    let e = t[slot as usize & (TOTAL - 1)];
    let fe = u32::from(e as u16);
    let off = u32::from((e >> 16) as u16);
    let fz = u32::from((e >> 32) as u16);
    *x = fe * (*x >> (PB + 1)) + off + half * fz;
    refill(x, k, words);
    (e >> 48) as u16 | (half << 15) as u16
}

/// A rANS decoder over one lane of a word buffer shared by the lanes; reads past its
/// lane are harmless and caught by [`Decoder::ok`].
#[derive(Clone, Copy)]
pub struct Decoder<'a> {
    x: u32,
    words: &'a [u16],
    k: usize,
    end: usize,
}

impl<'a> Decoder<'a> {
    /// A lane with final encoder state `x` and words `words[start..end]`; `words` must
    /// end with one padding word.
    pub fn new(x: u32, words: &'a [u16], start: usize, end: usize) -> Self {
        Self {
            x,
            words,
            k: start,
            end,
        }
    }

    /// Decodes a symbol with a table of [`dec_table`].
    #[inline(always)]
    pub fn get(&mut self, t: &[u64; TOTAL]) -> u32 {
        let e = t[self.x as usize & (TOTAL - 1)];
        self.x = (e as u32 & 0xFFFF) * (self.x >> PB) + ((e >> 16) as u32 & 0xFFFF);
        refill(&mut self.x, &mut self.k, self.words);
        (e >> 32) as u32
    }

    /// Decodes a magnitude code (see [`code`]).
    #[inline(always)]
    pub fn code(&mut self, t: &[u64; TOTAL]) -> u16 {
        code(&mut self.x, &mut self.k, self.words, t)
    }

    /// Reads `n` (0..=16) raw bits.
    #[inline(always)]
    pub fn bits(&mut self, n: u32) -> u32 {
        let v = self.x & ((1u32 << n) - 1);
        self.x >>= n;
        refill(&mut self.x, &mut self.k, self.words);
        v
    }

    /// Whether the lane was consumed exactly, back to the initial state.
    pub fn ok(&self) -> bool {
        self.k == self.end && self.x == L
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptor_runs_round_trip_and_are_short() {
        let mut cases: Vec<Vec<u8>> = vec![vec![0; 4096], vec![104; 7], vec![0, 0, 5, 0, 0]];
        // The two signs of a float's exponents: two clusters 2048 symbols apart.
        let mut two = vec![0u8; 4096];
        for i in 0..40 {
            two[1000 + i] = 60 + (i % 9) as u8;
            two[3048 + i] = 50 + (i % 5) as u8;
        }
        cases.push(two.clone());
        for (i, x) in crate::pseudo_u64(300, 5).enumerate() {
            let mut d = vec![0u8; 1 + i % 700];
            for (j, v) in d.iter_mut().enumerate() {
                if (x >> (j % 64)) & 3 == 0 {
                    *v = ((x >> 8) as usize + j) as u8 % 105;
                }
            }
            cases.push(d);
        }
        for desc in &cases {
            let mut w = BitVec::default();
            write_runs(desc, &mut w);
            let bytes = w.finish();
            let mut r = BitReader::new(&bytes);
            assert_eq!(&read_runs(&mut r, desc.len()).unwrap(), desc);
            assert!(!r.overrun());
            for cut in 0..bytes.len() {
                let mut r = BitReader::new(&bytes[..cut]);
                let ok = read_runs(&mut r, desc.len()).map(|d| &d == desc);
                assert!(
                    ok.is_err() || r.overrun() || desc.iter().all(|&d| d == 0),
                    "cut {cut}"
                );
            }
        }
        let (mut a, mut b) = (BitVec::default(), BitVec::default());
        write(&two, &mut a);
        write_runs(&two, &mut b);
        let (a, b) = (a.finish().len(), b.finish().len());
        assert!(b * 3 < a, "runs {b} bytes, plain {a}");
    }
}
