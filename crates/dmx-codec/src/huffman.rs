//! Canonical, length-limited Huffman codes: construction from a histogram, the compact table
//! serialization used in chunk payloads, LSB-first encode codes and single-lookup decode
//! tables.

use crate::CodecError;

/// Longest code length.
pub const MAX_CODE_LEN: u32 = 14;
/// Largest alphabet (symbols are `0..MAX_SYMBOLS`).
pub const MAX_SYMBOLS: usize = 1 << 12;
/// Bits resolved by the first decode lookup; longer codes take a second one.
pub const PRIMARY_BITS: u32 = 11;
/// Entry flag: the code is longer than `PRIMARY_BITS`; bits 8.. index the secondary table.
pub const LONG: u32 = 0x40;

/// Code lengths for the symbols of `freq`, none longer than `MAX_CODE_LEN`; unused symbols
/// get 0.
///
/// `freq.len()` must be at most `MAX_SYMBOLS`. A single used symbol gets length 1.
pub fn code_lengths(freq: &[u64]) -> Vec<u8> {
    code_lengths_limited(freq, MAX_CODE_LEN)
}

/// [`code_lengths`] with codes of at most `limit` bits (`limit` ≤ [`MAX_CODE_LEN`], and
/// `freq` has at most `2^limit` used symbols). With two or more used symbols the code is
/// complete: its Kraft sum is exactly 1.
pub fn code_lengths_limited(freq: &[u64], limit: u32) -> Vec<u8> {
    assert!(freq.len() <= MAX_SYMBOLS, "alphabet too large");
    assert!(limit <= MAX_CODE_LEN, "code length limit too large");
    let mut lengths = vec![0u8; freq.len()];
    // The used symbols as one sort key each, `f << SYM_BITS | s`: ascending frequency, ties
    // by symbol (the order of `(f, s)` pairs, sorted as plain integers).
    let mut used: Vec<u64> = Vec::with_capacity(freq.len());
    for (s, &f) in freq.iter().enumerate() {
        if f > 0 {
            used.push(f.min(MAX_FREQ) << SYM_BITS | s as u64);
        }
    }
    match used.len() {
        0 => return lengths,
        1 => {
            lengths[(used[0] & SYM_MASK) as usize] = 1;
            return lengths;
        }
        _ => {}
    }
    used.sort_unstable();
    let mut lens = huffman_depths(&used);
    limit_lengths(&mut lens, limit);
    for (&key, &l) in used.iter().zip(&lens) {
        lengths[(key & SYM_MASK) as usize] = l as u8;
    }
    lengths
}

/// Bits of a symbol in the sort keys of [`code_lengths_limited`].
const SYM_BITS: u32 = MAX_SYMBOLS.trailing_zeros();
/// The symbol of a sort key.
const SYM_MASK: u64 = (1 << SYM_BITS) - 1;
/// Frequencies are capped here in the sort keys (far above any chunk's count of values; the
/// tree's weights sum at most `MAX_SYMBOLS` of them without overflow).
const MAX_FREQ: u64 = 1 << 48;

/// Plain Huffman depths for the sort keys `used` ([`code_lengths_limited`]: ascending
/// frequency, at least two), by the two-queue method: leaves in key order, internal nodes in
/// creation order (also ascending weight); each step takes the lighter front, the leaf on a
/// tie, without a branch on the weights.
fn huffman_depths(used: &[u64]) -> Vec<u32> {
    let n = used.len();
    // Each queue ends in a sentinel heavier than any weight: the leaves after the last one,
    // the internal nodes from the next one to be created on.
    let mut leaves: Vec<u64> = Vec::with_capacity(n + 1);
    leaves.extend(used.iter().map(|&k| k >> SYM_BITS));
    leaves.push(u64::MAX);
    let mut internal = vec![u64::MAX; n];
    // Node `i < n` is leaf `i`; node `n + j` internal node `j`.
    let mut parent = vec![0u32; 2 * n - 1];
    let (mut leaf, mut node) = (0usize, 0usize);
    for next in 0..n - 1 {
        let mut weight = 0u64;
        for _ in 0..2 {
            let (wl, wi) = (leaves[leaf], internal[node]);
            let take_leaf = wl <= wi;
            let id = if take_leaf { leaf } else { n + node };
            weight += if take_leaf { wl } else { wi };
            parent[id] = (n + next) as u32;
            leaf += usize::from(take_leaf);
            node += usize::from(!take_leaf);
        }
        internal[next] = weight;
    }
    let root = 2 * n - 2;
    let mut depth = vec![0u32; 2 * n - 1];
    for id in (0..root).rev() {
        depth[id] = depth[parent[id] as usize] + 1;
    }
    depth.truncate(n);
    depth
}

/// Caps lengths (given for symbols in ascending frequency order, so lengths are
/// non-increasing) at `limit` while keeping the Kraft sum at most one: the count of codes per
/// length is repaired as in zlib's `gen_bitlen`, then lengths are handed back longest-first to
/// the rarest symbols.
fn limit_lengths(lens: &mut [u32], limit: u32) {
    if lens.iter().all(|&l| l <= limit) {
        return;
    }
    let limit = limit as usize;
    let mut count = vec![0usize; limit + 1];
    for &l in lens.iter() {
        count[(l as usize).min(limit)] += 1;
    }
    // Kraft sum in units of 2^-limit.
    let kraft = |count: &[usize]| -> u64 {
        count
            .iter()
            .enumerate()
            .skip(1)
            .map(|(l, &c)| (c as u64) << (limit - l))
            .sum()
    };
    // Each step turns a leaf above the limit into a node with two children, one taking a
    // limit-level leaf: the Kraft sum drops by one unit.
    while kraft(&count) > 1u64 << limit {
        let Some(l) = (1..limit).rev().find(|&l| count[l] > 0) else {
            break;
        };
        count[l] -= 1;
        count[l + 1] += 2;
        count[limit] -= 1;
    }
    // Hand lengths back: the rarest symbols (first) get the longest codes.
    let mut i = 0;
    for l in (1..=limit).rev() {
        for _ in 0..count[l] {
            lens[i] = l as u32;
            i += 1;
        }
    }
}

/// Kraft sum of `lengths` in units of `2^-MAX_CODE_LEN` (a complete code sums to
/// `2^MAX_CODE_LEN`). Lengths must be at most [`MAX_CODE_LEN`].
pub fn kraft_units(lengths: &[u8]) -> u64 {
    lengths
        .iter()
        .filter(|&&l| l > 0)
        .map(|&l| 1u64 << (MAX_CODE_LEN - u32::from(l).min(MAX_CODE_LEN)))
        .sum()
}

/// Canonical codes (bit-reversed for LSB-first writing) for the given lengths.
pub fn encode_codes(lengths: &[u8]) -> Vec<u16> {
    let mut count = [0u32; MAX_CODE_LEN as usize + 1];
    for &l in lengths {
        count[l as usize] += 1;
    }
    count[0] = 0;
    let mut next = [0u32; MAX_CODE_LEN as usize + 2];
    let mut code = 0u32;
    for len in 1..=MAX_CODE_LEN as usize {
        code = (code + count[len - 1]) << 1;
        next[len] = code;
    }
    lengths
        .iter()
        .map(|&l| {
            if l == 0 {
                return 0;
            }
            let c = next[l as usize];
            next[l as usize] += 1;
            (c.reverse_bits() >> (32 - u32::from(l))) as u16
        })
        .collect()
}

/// A two-level decode table. Entries are `symbol << 8 | length`; the primary table is indexed
/// by the next `PRIMARY_BITS` bits, and for longer codes holds `start << 8 | LONG`, where
/// `start` is the first of `1 << (MAX_CODE_LEN - PRIMARY_BITS)` secondary entries indexed by
/// the following bits. Indices no code maps to (only in corrupt input) hold `invalid`.
pub struct DecodeTable {
    /// First-level entries.
    pub primary: Box<[u32; 1 << PRIMARY_BITS]>,
    /// Second-level entries for codes longer than `PRIMARY_BITS`.
    pub secondary: Vec<u32>,
    invalid: u32,
}

/// Secondary block size.
const SUB: usize = 1 << (MAX_CODE_LEN - PRIMARY_BITS);

impl DecodeTable {
    /// Builds the table for canonical code `lengths`.
    pub fn new(lengths: &[u8], invalid: u32) -> Result<Self, CodecError> {
        check_kraft(lengths)?;
        let codes = encode_codes(lengths);
        let mut primary = Box::new([invalid; 1 << PRIMARY_BITS]);
        let mut secondary = Vec::new();
        let pmask = (1usize << PRIMARY_BITS) - 1;
        for (sym, (&len, &code)) in lengths.iter().zip(&codes).enumerate() {
            let len = u32::from(len);
            if len == 0 {
                continue;
            }
            let entry = (sym as u32) << 8 | len;
            let code = usize::from(code);
            if len <= PRIMARY_BITS {
                let mut i = code;
                while i <= pmask {
                    primary[i] = entry;
                    i += 1 << len;
                }
            } else {
                let prefix = code & pmask;
                if primary[prefix] & LONG == 0 {
                    primary[prefix] = (secondary.len() as u32) << 8 | LONG;
                    secondary.resize(secondary.len() + SUB, invalid);
                }
                let start = (primary[prefix] >> 8) as usize;
                let rest = code >> PRIMARY_BITS;
                let mut i = rest;
                while i < SUB {
                    secondary[start + i] = entry;
                    i += 1 << (len - PRIMARY_BITS);
                }
            }
        }
        Ok(Self {
            primary,
            secondary,
            invalid,
        })
    }

    /// The entry for the code at the low bits of `bits` (at least `MAX_CODE_LEN` valid).
    #[inline(always)]
    pub fn lookup(&self, bits: u64) -> u32 {
        let e = self.primary[bits as usize & ((1 << PRIMARY_BITS) - 1)];
        if e & LONG == 0 { e } else { self.long(e, bits) }
    }

    #[cold]
    #[inline(never)]
    fn long(&self, e: u32, bits: u64) -> u32 {
        let i = (e >> 8) as usize + ((bits >> PRIMARY_BITS) as usize & (SUB - 1));
        self.secondary.get(i).copied().unwrap_or(self.invalid)
    }
}

fn check_kraft(lengths: &[u8]) -> Result<(), CodecError> {
    let mut kraft = 0u64;
    for &l in lengths {
        if u32::from(l) > MAX_CODE_LEN {
            return Err(CodecError::Corrupt("Huffman code length above 14"));
        }
        if l > 0 {
            kraft += 1u64 << (MAX_CODE_LEN - u32::from(l));
        }
    }
    if kraft > 1u64 << MAX_CODE_LEN {
        return Err(CodecError::Corrupt("Huffman code lengths oversubscribed"));
    }
    Ok(())
}

/// Total coded bits of `freq` under `lengths`.
pub fn coded_bits(freq: &[u64], lengths: &[u8]) -> u64 {
    freq.iter()
        .zip(lengths)
        .map(|(&f, &l)| f * u64::from(l))
        .sum()
}

/// Nibble that introduces a run of zero lengths in the serialized table.
const ZERO_RUN: u8 = 15;

/// Serializes lengths: `u16 first`, `u16 count`, then `count` nibbles (low nibble first),
/// where 0..=14 is a length and 15 followed by a nibble `k` is a run of `k + 2` zeros.
pub fn write_lengths(lengths: &[u8], out: &mut Vec<u8>) {
    let first = lengths.iter().position(|&l| l != 0).unwrap_or(0);
    let last = lengths.iter().rposition(|&l| l != 0).map_or(0, |p| p + 1);
    let span = &lengths[first..last.max(first)];
    out.extend_from_slice(&(first as u16).to_le_bytes());
    out.extend_from_slice(&(span.len() as u16).to_le_bytes());
    let mut nibbles = Vec::with_capacity(span.len());
    let mut i = 0;
    while i < span.len() {
        let run = span[i..].iter().take(17).take_while(|&&l| l == 0).count();
        if run >= 2 {
            nibbles.push(ZERO_RUN);
            nibbles.push((run - 2) as u8);
            i += run;
        } else {
            nibbles.push(span[i]);
            i += 1;
        }
    }
    for pair in nibbles.chunks(2) {
        out.push(pair[0] | pair.get(1).copied().unwrap_or(0) << 4);
    }
}

/// Size in bytes of [`write_lengths`]' output, without writing it.
pub fn lengths_size(lengths: &[u8]) -> usize {
    table_size(
        lengths
            .iter()
            .enumerate()
            .filter(|&(_, &l)| l != 0)
            .map(|(s, _)| s),
    )
}

/// Size in bytes of [`write_lengths`]' output for lengths that are non-zero exactly at the
/// increasing symbols `used`: it depends only on where they are.
pub fn table_size(used: impl IntoIterator<Item = usize>) -> usize {
    let mut nibbles = 0usize;
    let mut prev: Option<usize> = None;
    for s in used {
        if let Some(p) = prev {
            // A gap of zeros: runs of up to 17 as two nibbles, a single zero as one.
            let gap = s - p - 1;
            let rest = gap % 17;
            nibbles += 2 * (gap / 17) + if rest >= 2 { 2 } else { rest };
        }
        nibbles += 1;
        prev = Some(s);
    }
    4 + nibbles.div_ceil(2)
}

/// Parses [`write_lengths`]' output for an alphabet of `alphabet` symbols; returns the lengths
/// and the number of bytes read.
pub fn read_lengths(data: &[u8], alphabet: usize) -> Result<(Vec<u8>, usize), CodecError> {
    let short = CodecError::Corrupt("Huffman table truncated");
    let header = data.get(..4).ok_or(short.clone())?;
    let first = usize::from(u16::from_le_bytes([header[0], header[1]]));
    let count = usize::from(u16::from_le_bytes([header[2], header[3]]));
    if first + count > alphabet {
        return Err(CodecError::Corrupt("Huffman table exceeds the alphabet"));
    }
    let mut lengths = vec![0u8; alphabet];
    let mut filled = 0;
    let mut nib = 0usize;
    let nibble_at = |k: usize| -> Result<u8, CodecError> {
        let byte = data.get(4 + k / 2).ok_or(short.clone())?;
        Ok(if k.is_multiple_of(2) {
            byte & 15
        } else {
            byte >> 4
        })
    };
    while filled < count {
        let v = nibble_at(nib)?;
        nib += 1;
        if v == ZERO_RUN {
            let run = usize::from(nibble_at(nib)?) + 2;
            nib += 1;
            if filled + run > count {
                return Err(CodecError::Corrupt("Huffman table zero run too long"));
            }
            filled += run;
        } else if u32::from(v) > MAX_CODE_LEN {
            return Err(CodecError::Corrupt("Huffman code length above 14"));
        } else {
            lengths[first + filled] = v;
            filled += 1;
        }
    }
    Ok((lengths, 4 + nib.div_ceil(2)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kraft(lengths: &[u8]) -> f64 {
        lengths
            .iter()
            .filter(|&&l| l > 0)
            .map(|&l| 2f64.powi(-i32::from(l)))
            .sum()
    }

    /// The two-queue construction as first written (pairs sorted as tuples, a branch per
    /// pick), then the same length limit: what [`code_lengths_limited`] must give.
    fn reference_lengths(freq: &[u64], limit: u32) -> Vec<u8> {
        let mut lengths = vec![0u8; freq.len()];
        let mut used: Vec<(u64, u32)> = freq
            .iter()
            .enumerate()
            .filter(|&(_, &f)| f > 0)
            .map(|(s, &f)| (f, s as u32))
            .collect();
        if used.len() < 2 {
            if let Some(&(_, s)) = used.first() {
                lengths[s as usize] = 1;
            }
            return lengths;
        }
        used.sort_unstable();
        let n = used.len();
        let mut weight: Vec<u64> = used.iter().map(|&(f, _)| f).collect();
        let mut parent = vec![0usize; 2 * n - 1];
        let (mut leaf, mut internal) = (0usize, n);
        for next in n..2 * n - 1 {
            let mut pick = || {
                if leaf < n && (internal >= next || weight[leaf] <= weight[internal]) {
                    leaf += 1;
                    leaf - 1
                } else {
                    internal += 1;
                    internal - 1
                }
            };
            let (a, b) = (pick(), pick());
            weight.push(weight[a] + weight[b]);
            parent[a] = next;
            parent[b] = next;
        }
        let mut depth = vec![0u32; 2 * n - 1];
        for node in (0..2 * n - 2).rev() {
            depth[node] = depth[parent[node]] + 1;
        }
        depth.truncate(n);
        limit_lengths(&mut depth, limit);
        for (&(_, s), &l) in used.iter().zip(&depth) {
            lengths[s as usize] = l as u8;
        }
        lengths
    }

    #[test]
    fn lengths_are_the_reference_construction() {
        // Ties everywhere (flat and few distinct counts), skewed, Fibonacci-deep and sparse
        // histograms, at every limit that fits the alphabet.
        let mut rng = crate::pseudo_u64(usize::MAX, 0x2545_F491_4F6C_DD1D);
        let mut next = || rng.next().expect("unbounded");
        let mut cases: Vec<Vec<u64>> = vec![vec![], vec![5], vec![0, 3, 0], vec![1; 4096]];
        let mut fib = vec![1u64, 1];
        while fib.len() < 60 {
            let n = fib.len();
            fib.push(fib[n - 1] + fib[n - 2]);
        }
        cases.push(fib);
        for _ in 0..300 {
            let len = 2 + (next() % 1500) as usize;
            let shape = next() % 4;
            let h: Vec<u64> = (0..len)
                .map(|i| match shape {
                    0 => next() % 4,
                    1 => (next() % 1_000_000) >> (next() % 20),
                    2 => u64::from(next() % 3 != 0) * (1 + (i as u64 % 7)),
                    _ => (1u64 << (next() % 40)) + next() % 3,
                })
                .collect();
            cases.push(h);
        }
        for h in &cases {
            let used = h.iter().filter(|&&f| f > 0).count();
            for limit in [MAX_CODE_LEN, 12, 11, 9] {
                if used > 1 << limit {
                    continue;
                }
                assert_eq!(
                    code_lengths_limited(h, limit),
                    reference_lengths(h, limit),
                    "{} symbols, {used} used, limit {limit}",
                    h.len()
                );
            }
        }
    }

    #[test]
    fn lengths_are_optimal_for_dyadic_input() {
        let lens = code_lengths(&[8, 4, 2, 1, 1]);
        assert_eq!(lens, vec![1, 2, 3, 4, 4]);
    }

    #[test]
    fn lengths_are_limited_and_complete() {
        // Fibonacci frequencies give a maximally deep tree.
        let mut freq = vec![1u64, 1];
        while freq.len() < 40 {
            let n = freq.len();
            freq.push(freq[n - 1] + freq[n - 2]);
        }
        let lens = code_lengths(&freq);
        assert!(lens.iter().all(|&l| (1..=14).contains(&l)));
        assert!((kraft(&lens) - 1.0).abs() < 1e-12);
    }

    #[test]
    fn limited_codes_are_complete_and_within_the_limit() {
        // Skewed, flat and Fibonacci-like histograms over alphabets up to 2^limit.
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        for limit in [8u32, 11, 12] {
            for case in 0..60 {
                let n = 2 + (case * 37) % ((1usize << limit) - 1);
                let freq: Vec<u64> = (0..n)
                    .map(|i| {
                        seed ^= seed << 13;
                        seed ^= seed >> 7;
                        seed ^= seed << 17;
                        match case % 3 {
                            0 => 1 + (seed % 1000),
                            1 => 1u64 << (i % 40).min(40),
                            _ => 1 + (seed % 7) * (i as u64 % 5),
                        }
                    })
                    .collect();
                let lens = code_lengths_limited(&freq, limit);
                assert!(lens.iter().all(|&l| (1..=limit as u8).contains(&l)));
                assert_eq!(
                    kraft_units(&lens),
                    1 << MAX_CODE_LEN,
                    "limit {limit} case {case}"
                );
            }
        }
    }

    #[test]
    fn full_alphabet_fits() {
        let freq = vec![1u64; MAX_SYMBOLS];
        let lens = code_lengths(&freq);
        assert!(lens.iter().all(|&l| l == 12));
    }

    #[test]
    fn table_round_trip() {
        let mut lens = vec![0u8; 300];
        lens[3] = 2;
        lens[4] = 2;
        lens[100] = 3;
        lens[299] = 3;
        lens[150] = 2;
        let mut buf = Vec::new();
        write_lengths(&lens, &mut buf);
        assert_eq!(buf.len(), lengths_size(&lens));
        let (back, used) = read_lengths(&buf, 300).unwrap();
        assert_eq!(back, lens);
        assert_eq!(used, buf.len());
    }

    #[test]
    fn decode_table_rejects_oversubscribed() {
        assert!(DecodeTable::new(&[1, 1, 1], 0).is_err());
    }

    #[test]
    fn long_codes_decode_through_the_secondary_table() {
        let mut freq = vec![1u64, 1];
        while freq.len() < 30 {
            let n = freq.len();
            freq.push(freq[n - 1] + freq[n - 2]);
        }
        let lens = code_lengths(&freq);
        assert_eq!(lens.iter().map(|&l| u32::from(l)).max(), Some(MAX_CODE_LEN));
        let codes = encode_codes(&lens);
        let t = DecodeTable::new(&lens, 0x80).unwrap();
        for (sym, (&l, &c)) in lens.iter().zip(&codes).enumerate() {
            // Any bits may follow the code.
            let bits = u64::from(c) | 0xABCD << l;
            let e = t.lookup(bits);
            assert_eq!(e & 0x1F, u32::from(l), "symbol {sym}");
            assert_eq!((e >> 8) as usize, sym);
        }
    }

    #[test]
    fn table_size_is_what_write_lengths_writes() {
        for n in [0usize, 1, 2, 5, 17, 18, 19, 40, 300] {
            for density in [1u64, 2, 5, 20, 60] {
                let lengths: Vec<u8> = crate::pseudo_u64(n, density)
                    .map(|s| {
                        if s.is_multiple_of(density) {
                            1 + (s >> 8) as u8 % 14
                        } else {
                            0
                        }
                    })
                    .collect();
                let mut out = Vec::new();
                write_lengths(&lengths, &mut out);
                assert_eq!(lengths_size(&lengths), out.len(), "{lengths:?}");
            }
        }
    }
}
