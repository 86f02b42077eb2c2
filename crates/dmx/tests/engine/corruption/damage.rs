//! The damage families and the plans that choose among them.

use std::collections::{BTreeMap, BTreeSet};

use dmx::dmx_format::{Index, Limits, Trailer, preamble_flags};
use dmx_testkit::fix_index_checksum;

use super::{Damage, Outcome, Subject};

/// Which damage to apply to a subject; [`Plan::NONE`] applies none.
pub struct Plan {
    /// XOR patterns applied to every byte, checksums left alone.
    pub bytes: &'static [u8],
    /// Every reader runs on every `full_every`-th changed byte (and on every bit flip);
    /// otherwise `Archive::open` and restoring, and every reader when those accept the copy.
    pub full_every: usize,
    /// Single-bit flips (every bit) at every `bit_stride`-th byte (0: none).
    pub bit_stride: usize,
    /// Single-bit flips (every bit) of every preamble, index and trailer byte.
    pub bits_framing: bool,
    /// Truncation at every `cuts`-th length, and at every length near both ends (0: none).
    pub cuts: usize,
    /// XOR patterns applied to every `payload_stride`-th byte of every chunk payload, the
    /// chunk and index checksums recomputed, so that the change reaches the decoders.
    pub payload: &'static [u8],
    /// See `payload`.
    pub payload_stride: usize,
    /// XOR patterns applied to every index byte, the index checksum recomputed, so that the
    /// change reaches the index parser and the engine.
    pub index: &'static [u8],
}

impl Plan {
    /// No damage at all (the base of the plans spelled out in the tests).
    pub const NONE: Plan = Plan {
        bytes: &[],
        full_every: 1,
        bit_stride: 0,
        bits_framing: false,
        cuts: 0,
        payload: &[],
        payload_stride: 1,
        index: &[],
    };
}

/// Sampled, for small archives: every byte XOR 0xff with every reader, bit flips at every
/// 7th byte, every truncation, every third payload byte behind valid checksums (two
/// patterns at every sixth), every index byte behind a valid index checksum.
pub const SAMPLED: Plan = Plan {
    bytes: &[0xff],
    full_every: 1,
    bit_stride: 7,
    bits_framing: false,
    cuts: 1,
    payload: &[0x01, 0xff],
    payload_stride: 6,
    index: &[0xff],
};

/// Exhaustive: every bit of every byte, every payload byte, every index byte.
pub const FULL: Plan = Plan {
    bytes: &[0xff],
    full_every: 1,
    bit_stride: 1,
    bits_framing: false,
    cuts: 1,
    payload: &[0x01, 0xff],
    payload_stride: 1,
    index: &[0xff, 0x01, 0x80],
};

/// Bytes 10..12 hold the minor version, which readers of the same major accept: the only
/// bytes of an archive whose change goes unnoticed (and changes nothing).
const UNUSED: [usize; 2] = [10, 11];

/// What a run of the matrix did.
#[derive(Default)]
pub struct Tally {
    /// Damaged copies per family and outcome.
    pub outcomes: BTreeMap<(&'static str, Outcome), usize>,
    /// Payload variants checked, and the codecs of the chunks they damaged.
    pub payload: (usize, BTreeSet<u8>),
}

/// Applies `plan` to `s`, checks that nothing is left behind, and prints a summary line.
pub fn matrix(s: &Subject, plan: &Plan) -> Tally {
    let start = std::time::Instant::now();
    let mut tally = Tally::default();
    assert_eq!(
        s.check(&s.archive, "undamaged", Damage::Plain, true),
        Outcome::Identical
    );
    let mut times = Vec::new();
    let mut lap = |family: &'static str| {
        times.push((family, format!("{:.1} s", start.elapsed().as_secs_f64())));
    };
    flips(s, plan, &mut tally);
    lap("flips");
    if plan.cuts > 0 {
        truncations(s, plan.cuts, &mut tally);
        lap("cuts");
    }
    if !plan.payload.is_empty() {
        payloads(s, plan, &mut tally);
        lap("payloads");
    }
    for &p in plan.index {
        index(s, p, &mut tally);
    }
    lap("index");
    s.assert_clean();
    eprintln!(
        "corruption {}: {}-byte archive, {times:?}: {:?}",
        s.name,
        s.archive.len(),
        tally.outcomes
    );
    tally
}

/// Byte changes and bit flips, checksums left alone: only the minor version may change
/// unnoticed.
fn flips(s: &Subject, plan: &Plan, tally: &mut Tally) {
    let n = s.archive.len();
    let index = Trailer::from_bytes(&s.archive[n - 32..])
        .expect("trailer")
        .index_offset as usize;
    let mut bytes = s.archive.clone();
    let mut unnoticed = BTreeSet::new();
    for i in 0..n {
        let mut patterns: Vec<(u8, bool)> = plan
            .bytes
            .iter()
            .map(|&p| (p, i % plan.full_every == 0))
            .collect();
        let framing = i < 16 || i >= index;
        if (plan.bit_stride > 0 && i % plan.bit_stride == 0) || (plan.bits_framing && framing) {
            patterns.extend((0..8).map(|b| (1u8 << b, b == 0)));
        }
        for (p, full) in patterns {
            bytes[i] ^= p;
            let what = format!("byte {i} of {n} ^ {p:#04x}");
            let outcome = s.check(&bytes, &what, Damage::Plain, full);
            bytes[i] ^= p;
            *tally.outcomes.entry(("flip", outcome)).or_default() += 1;
            assert!(
                outcome != Outcome::Identical || UNUSED.contains(&i),
                "{}: {what} went unnoticed",
                s.name
            );
            if outcome == Outcome::Identical {
                unnoticed.insert(i);
            }
        }
    }
    if !plan.bytes.is_empty() {
        assert_eq!(
            unnoticed,
            BTreeSet::from(UNUSED),
            "{}: unnoticed bytes",
            s.name
        );
    }
}

/// Truncations at every `stride`-th length and near both ends, and one byte appended: the
/// archive must not even open.
fn truncations(s: &Subject, stride: usize, tally: &mut Tally) {
    let n = s.archive.len();
    let mut cuts: Vec<usize> = (0..n).step_by(stride).collect();
    cuts.extend((n.saturating_sub(40)..n).chain(0..20.min(n)));
    for len in cuts {
        let what = format!("truncated to {len} of {n}");
        let outcome = s.check(&s.archive[..len], &what, Damage::Plain, false);
        assert_eq!(outcome, Outcome::OpenFailed, "{}: {what}", s.name);
        *tally.outcomes.entry(("cut", outcome)).or_default() += 1;
    }
    let mut longer = s.archive.clone();
    longer.push(0);
    let outcome = s.check(&longer, "one byte appended", Damage::Plain, false);
    assert_eq!(outcome, Outcome::OpenFailed, "{}: appended byte", s.name);
}

/// Chunk payload bytes changed behind recomputed chunk and index checksums (the index is
/// rebuilt after the data, as a compressed one may change size).
fn payloads(s: &Subject, plan: &Plan, tally: &mut Tally) {
    let archive = &s.archive;
    let n = archive.len();
    let t = Trailer::from_bytes(&archive[n - 32..]).expect("trailer");
    let (start, len) = (t.index_offset as usize, t.index_len as usize);
    let flags = preamble_flags(archive);
    let index = Index::from_stored(
        &archive[start..start + len],
        flags,
        t.index_offset,
        &Limits::default(),
    )
    .expect("index");
    // Each stored chunk once (chunks of equal bytes may share them), with its codec.
    let chunks: BTreeMap<(u64, u32), u8> = index
        .entries
        .iter()
        .flat_map(|e| e.segments.iter())
        .flat_map(|s| s.chunks.iter())
        .map(|c| ((c.offset, c.stored_len), c.codec))
        .collect();
    for (&(offset, stored_len), &codec) in &chunks {
        let range = offset as usize..offset as usize + stored_len as usize;
        for at in range.step_by(plan.payload_stride) {
            for &p in plan.payload {
                let mut bytes = archive[..start].to_vec();
                bytes[at] ^= p;
                let mut idx = index.clone();
                for c in idx
                    .entries
                    .iter_mut()
                    .flat_map(|e| e.segments.iter_mut())
                    .flat_map(|s| s.chunks.iter_mut())
                {
                    let (o, l) = (c.offset as usize, c.stored_len as usize);
                    c.xxh3 = dmx::dmx_format::xxh3_64(&bytes[o..o + l]);
                }
                let stored = idx.to_stored(flags);
                bytes.extend_from_slice(&stored);
                bytes.extend_from_slice(&Trailer::for_index(t.index_offset, &stored).to_bytes());
                let what = format!("payload byte {at} (codec {codec}) ^ {p:#04x}");
                let outcome = s.check(&bytes, &what, Damage::Payload, true);
                *tally.outcomes.entry(("payload", outcome)).or_default() += 1;
                tally.payload.0 += 1;
                tally.payload.1.insert(codec);
            }
        }
    }
}

/// Every index byte XOR `p` behind a recomputed index checksum: the parser and the engine
/// must reject or survive every variant without panicking or writing outside the output.
fn index(s: &Subject, p: u8, tally: &mut Tally) {
    let n = s.archive.len();
    let t = Trailer::from_bytes(&s.archive[n - 32..]).expect("trailer");
    let start = t.index_offset as usize;
    for at in start..start + t.index_len as usize {
        let mut bytes = s.archive.clone();
        bytes[at] ^= p;
        fix_index_checksum(&mut bytes);
        let what = format!("index byte {} ^ {p:#04x}", at - start);
        let outcome = s.check(&bytes, &what, Damage::Index, true);
        *tally.outcomes.entry(("index", outcome)).or_default() += 1;
    }
}
