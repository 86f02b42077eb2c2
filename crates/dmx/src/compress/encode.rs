//! Encoding a planned file: chunks cut from its segments, encoded in parallel windows (lossy
//! chunks in one pass that also gives the bytes they restore, for their checksums and error),
//! payloads streamed to the archive, and the entry's segment records.

use dmx_codec::ValueKind;
use dmx_format::{Chunk, Entry, Segment, Transform};
use rayon::prelude::*;
use sha2::Digest;

use super::source::Source;
use crate::error::Result;
use crate::io::AtomicFile;
use crate::io::Bytes;
use crate::lossy::{Coding, ErrorAcc, LossyChunk};
use crate::plan::PlannedFile;
use crate::window::{SegmentHasher, windows};

/// One chunk to encode.
pub(super) struct Job<'a> {
    pub(super) segment: usize,
    pub(super) data: &'a [u8],
    pub(super) value: ValueKind,
    pub(super) hints: dmx_codec::Hints,
    pub(super) coding: Coding,
    pub(super) base: Option<&'a [u8]>,
    /// Store the chunk exactly when that is no larger than its lossy form.
    pub(super) never_larger: bool,
}

/// What encoding one chunk produced.
pub(super) struct Done {
    pub(super) enc: dmx_codec::Encoded,
    /// The decoded bytes of a lossy chunk, and their error against the original.
    pub(super) lossy: Option<(Vec<u8>, ErrorAcc)>,
    /// Values equal to the base's (delta codings).
    pub(super) unchanged: u64,
    /// The chunk is stored in its lossy form (not exactly).
    pub(super) lossy_coded: bool,
}

/// Encodes one chunk. A lossy chunk is coded in one pass that also gives the bytes
/// decompression will restore ([`Coding::encode_lossy`]), which its checksums and error are
/// computed from; debug builds also decode the payload again and check that they agree.
pub(super) fn run_job(j: &Job<'_>) -> Result<Done> {
    if j.coding.is_lossless() {
        let enc = j.coding.encode(j.value, j.data, j.hints, j.base);
        let unchanged = j
            .base
            .map_or(0, |b| unchanged(j.coding, j.value, b, j.data));
        return Ok(Done {
            enc,
            lossy: None,
            unchanged,
            lossy_coded: false,
        });
    }
    if j.never_larger
        && j.base.is_none()
        && crate::lossy::exact_by_sample(j.coding, j.value, j.data, j.hints)
    {
        // An integer grid on 16-bit floats that a sample shows not worth trying: the chunk
        // is stored exactly.
        let exact = dmx_codec::encode_with(j.value, j.data, j.hints);
        return Ok(stored_exactly(j, exact));
    }
    let LossyChunk {
        enc,
        restored,
        unchanged: counted,
    } = j.coding.encode_lossy(j.value, j.data, j.hints, j.base);
    if j.never_larger {
        // Never store a lossy form larger than the exact one (issue 11, finding 8); the exact
        // form is coded only when it can be no larger.
        if let Some(exact) = exact_within(j, enc.payload.len()) {
            return Ok(stored_exactly(j, exact));
        }
    }
    let unchanged = match (counted, j.base) {
        (Some(n), _) => n,
        (None, Some(b)) => unchanged(j.coding, j.value, b, j.data),
        (None, None) => 0,
    };
    #[cfg(debug_assertions)]
    {
        // The guarantee the decode-again of earlier versions gave, in every debug build.
        let mut decoded = vec![0u8; j.data.len()];
        dmx_codec::decode_with_base(enc.codec, &enc.payload, j.base, &mut decoded).map_err(
            |e| {
                crate::error::Error::Internal(format!(
                    "a {} chunk failed to decode right after encoding ({e}); please report this",
                    enc.codec.name()
                ))
            },
        )?;
        assert!(
            decoded == restored,
            "a {} chunk restores other bytes than its encoder computed",
            enc.codec.name()
        );
        if let Some(base) = j.base {
            assert_eq!(unchanged, self::unchanged(j.coding, j.value, base, j.data));
        }
    }
    let mut acc = ErrorAcc::default();
    if let Some(layout) = crate::lossy::lossy_layout(j.value) {
        acc.add_recorded(layout, j.data, &restored);
    }
    Ok(Done {
        enc,
        lossy: Some((restored, acc)),
        unchanged,
        lossy_coded: true,
    })
}

/// What a lossy job stores when it keeps the chunk's exact encoding `exact` (no error, but its
/// values count in the tensor's norm).
fn stored_exactly(j: &Job<'_>, exact: dmx_codec::Encoded) -> Done {
    let exact_coding = if j.base.is_some() {
        Coding::Delta
    } else {
        Coding::Lossless
    };
    let mut acc = ErrorAcc::default();
    if let Some(layout) = crate::lossy::lossy_layout(j.value) {
        acc.add_exact(layout, j.data);
    }
    Done {
        enc: exact,
        lossy: Some((j.data.to_vec(), acc)),
        unchanged: j
            .base
            .map_or(0, |b| unchanged(exact_coding, j.value, b, j.data)),
        lossy_coded: false,
    }
}

/// The exact encoding of a chunk ([`Coding::Lossless`], or [`Coding::Delta`] against its
/// base) when it is at most `limit` bytes, else `None`: exactly what [`Coding::encode`] gives
/// then, coded only when bounds cannot rule it out.
fn exact_within(j: &Job<'_>, limit: usize) -> Option<dmx_codec::Encoded> {
    let Some(base) = j.base else {
        return dmx_codec::encode_within(j.value, j.data, j.hints, limit);
    };
    // `Coding::Delta`: the delta, unless the chunk alone is no larger.
    let delta = dmx_codec::delta::encode_within(j.value, base, j.data, limit);
    let plain_limit = delta.as_ref().map_or(limit, |d| d.0.len());
    if let Some(plain) = dmx_codec::encode_within(j.value, j.data, j.hints, plain_limit) {
        return Some(plain);
    }
    delta.map(|(payload, entropy_bits)| dmx_codec::Encoded {
        codec: dmx_codec::Codec::Delta,
        payload,
        entropy_bits,
    })
}

/// Keeps a chunk of an `Mode::Auto` segment within what is left of the segment's allowance
/// (`allowance - spent`): if its error would pass it, codes it again one step more precisely,
/// up to exactly. `recorded` becomes the most precise lossy coding used.
fn hold_budget(
    j: &Job<'_>,
    d: &mut Done,
    allowance: f64,
    spent: &mut f64,
    recorded: &mut Coding,
) -> Result<()> {
    let Some(layout) = crate::lossy::lossy_layout(j.value) else {
        return Ok(());
    };
    let mut coding = j.coding;
    loop {
        let err = d.lossy.as_ref().map_or(0.0, |(_, a)| a.sum_sq_err());
        if !d.lossy_coded || *spent + err <= allowance {
            *spent += err;
            if d.lossy_coded
                && let (Coding::Bfp(p), Coding::Bfp(r)) | (Coding::BfpOwn(p), Coding::BfpOwn(r)) =
                    (coding, *recorded)
                && p.mantissa_bits > r.mantissa_bits
            {
                *recorded = coding;
            }
            return Ok(());
        }
        coding = coding.escalate(layout);
        *d = run_job(&Job { coding, ..*j })?;
        if coding.is_lossless() {
            // Exact: no error, but its values still count in the tensor's norm.
            let mut acc = ErrorAcc::default();
            acc.add_exact(layout, j.data);
            d.lossy = Some((j.data.to_vec(), acc));
        }
    }
}

/// Values of `data` equal to the base's: bit for bit, or on the grid for quantized deltas.
fn unchanged(coding: Coding, value: ValueKind, base: &[u8], data: &[u8]) -> u64 {
    match (coding, value) {
        (Coding::QuantDelta { grid, bits }, ValueKind::Float(l)) => base
            .chunks_exact(l.bytes())
            .zip(data.chunks_exact(l.bytes()))
            .filter(|(a, b)| {
                let q = |c: &[u8]| grid.coordinate(l, bits, crate::lossy::raw(c));
                a == b || q(a).is_some_and(|qa| q(b) == Some(qa))
            })
            .count() as u64,
        (_, ValueKind::Float(l)) => match l.bytes() {
            2 => equal_values::<2>(base, data),
            4 => equal_values::<4>(base, data),
            8 => equal_values::<8>(base, data),
            _ => equal_values::<1>(base, data),
        },
        _ => equal_values::<1>(base, data),
    }
}

/// Values of `B` bytes that are equal in `base` and `data`: compared as whole words, not
/// through a `memcmp` call per value.
fn equal_values<const B: usize>(base: &[u8], data: &[u8]) -> u64 {
    let word = |c: &[u8]| -> [u8; B] { c.try_into().expect("chunks_exact") };
    base.chunks_exact(B)
        .zip(data.chunks_exact(B))
        .map(|(a, b)| u64::from(word(a) == word(b)))
        .sum()
}

/// The base tensor a segment is coded against.
#[derive(Clone, Copy)]
pub(crate) struct BaseTensor<'a> {
    /// Its name in the base file.
    pub name: &'a str,
    /// Its bytes (same length as the segment).
    pub data: &'a [u8],
}

/// Encodes the planned `file` (its bytes in `bytes`) with one coding per segment, streaming
/// payloads to `out`; returns its index entry (kind from the plan, no base). Progress goes to
/// `opts.progress`; `opts.cancel` is checked between windows of chunks.
pub(crate) fn encode_entry(
    file: &PlannedFile,
    bytes: &Bytes,
    codings: &[Coding],
    bases: &[Option<BaseTensor<'_>>],
    out: &mut AtomicFile,
    opts: &crate::Options,
) -> Result<Entry> {
    let plan = EntryPlan {
        file,
        src: &Source::Bytes(bytes),
        codings,
        bases,
        allowances: None,
    };
    encode_entry_budgeted(&plan, out, opts)
}

/// What [`encode_entry_budgeted`] encodes: a planned file, its bytes, one coding and base
/// per segment and, in `Mode::Auto`, each segment's allowance.
pub(crate) struct EntryPlan<'p, 'a> {
    /// The planned file.
    pub file: &'p PlannedFile,
    /// Its bytes.
    pub src: &'p Source<'a>,
    /// One coding per segment.
    pub codings: &'p [Coding],
    /// One base per segment (delta codings).
    pub bases: &'p [Option<BaseTensor<'a>>],
    /// With allowances, segment `i` may reach at most `allowances[i]` as its sum of squared
    /// errors: a chunk that would pass it is coded again more precisely
    /// ([`Coding::escalate`]; `Mode::Auto`).
    pub allowances: Option<&'p [Option<f64>]>,
}

/// Where encoded payloads go: the archive being written, or nowhere (a dry run that only
/// learns what decompression will produce).
pub(crate) trait Sink: Send {
    /// Bytes written so far.
    fn position(&self) -> u64;
    /// Appends bytes.
    fn write_all(&mut self, data: &[u8]) -> Result<()>;
}

impl Sink for AtomicFile {
    fn position(&self) -> u64 {
        AtomicFile::position(self)
    }

    fn write_all(&mut self, data: &[u8]) -> Result<()> {
        AtomicFile::write_all(self, data)
    }
}

/// A sink that keeps nothing.
#[derive(Default)]
pub(crate) struct Discard(u64);

impl Sink for Discard {
    fn position(&self) -> u64 {
        self.0
    }

    fn write_all(&mut self, data: &[u8]) -> Result<()> {
        self.0 += data.len() as u64;
        Ok(())
    }
}

/// One chunk of a planned file: its segment and byte range.
struct ChunkAt {
    segment: usize,
    range: std::ops::Range<u64>,
}

/// Encodes `plan` as [`encode_entry`] does (progress to `opts.progress`, `opts.cancel`
/// checked between windows).
pub(crate) fn encode_entry_budgeted(
    plan: &EntryPlan<'_, '_>,
    out: &mut AtomicFile,
    opts: &crate::Options,
) -> Result<Entry> {
    if super::torch::needs_crc_patch(plan) {
        // A lossy torch zip: its CRC-32 fields are rewritten for the restored storages.
        return super::torch::encode_torch_lossy(plan, out, opts);
    }
    encode_inner(plan, out, opts, false).map(|(entry, _)| entry)
}

/// [`encode_entry_budgeted`] into any sink, also returning the CRC-32 (as zip computes it)
/// of each segment's restored bytes: what decompression will produce.
pub(crate) fn encode_entry_crc(
    plan: &EntryPlan<'_, '_>,
    out: &mut impl Sink,
    opts: &crate::Options,
) -> Result<(Entry, Vec<u32>)> {
    encode_inner(plan, out, opts, true)
}

/// [`encode_entry_crc`]; the CRC-32s are only computed (else empty) when `crc` is set.
fn encode_inner(
    plan: &EntryPlan<'_, '_>,
    out: &mut impl Sink,
    opts: &crate::Options,
    crc: bool,
) -> Result<(Entry, Vec<u32>)> {
    let progress = opts.progress.as_deref();
    let file = plan.file;
    // Cut every segment into chunks, in file order.
    let chunks: Vec<ChunkAt> = file
        .segments
        .iter()
        .enumerate()
        .flat_map(|(i, seg)| seg.chunks().map(move |range| ChunkAt { segment: i, range }))
        .collect();
    let mut state = EntryState::new(file, plan.codings, crc);
    let lens: Vec<u64> = chunks.iter().map(|c| c.range.end - c.range.start).collect();
    let allowances = plan.allowances;
    // A pipeline of two stages: window `k` is hashed and written (in file order, on one
    // thread) while the chunks of window `k + 1` are encoded (on every other thread, and on
    // that one once it is done). Before, every window ended at a barrier where all but one
    // thread waited for the writes (and a lossy window's hashing) to finish.
    let mut pending: Option<Window<'_>> = None;
    let mut ranges = windows(&lens).into_iter();
    loop {
        opts.check_cancel()?;
        let next = ranges.next();
        if next.is_none() && pending.is_none() {
            break;
        }
        // Chunks that span pieces of the source (packed segments) are copied together.
        let next_data = match &next {
            Some(r) => chunks[r.clone()]
                .iter()
                .map(|c| plan.src.read(c.range.clone()))
                .collect::<Result<Vec<_>>>()?,
            None => Vec::new(),
        };
        let next_jobs: Vec<Job<'_>> = match &next {
            Some(r) => chunks[r.clone()]
                .iter()
                .zip(&next_data)
                .map(|(c, d)| plan.job(c, d))
                .collect(),
            None => Vec::new(),
        };
        let done = pending
            .as_mut()
            .map(|w| (std::mem::take(&mut w.encoded), w.hashed));
        // A window coded exactly is hashed as it is read, beside its own encoding (its bytes
        // are then still in cache), after the window before it.
        let prehash = next_jobs.iter().all(|j| j.coding.is_lossless());
        let done_jobs: Vec<Job<'_>> = match &pending {
            Some(w) => chunks[w.range.clone()]
                .iter()
                .zip(&w.data)
                .map(|(c, d)| plan.job(c, d))
                .collect(),
            None => Vec::new(),
        };
        let (finished, encoded) = rayon::join(
            || {
                if let Some((encoded, hashed)) = done {
                    finish_window(&done_jobs, encoded, hashed, allowances, &mut state, out)?;
                }
                if prehash {
                    for j in &next_jobs {
                        state.hash(j.segment, j.data);
                    }
                }
                Ok::<_, crate::error::Error>(())
            },
            || {
                next_jobs
                    .par_iter()
                    .map(run_job)
                    .collect::<Result<Vec<_>>>()
            },
        );
        finished?;
        let encoded = encoded?;
        drop(done_jobs);
        if let Some(w) = pending.take() {
            let raw: u64 = w.data.iter().map(|d| d.len() as u64).sum();
            if let Some(first) = chunks.get(w.range.start) {
                plan.src.release(first.range.start..first.range.start + raw);
            }
            if let Some(p) = progress {
                p.advance(raw);
            }
        }
        drop(next_jobs);
        pending = next.map(|range| Window {
            range,
            data: next_data,
            encoded,
            hashed: prehash,
        });
    }
    let crcs = state.crcs.iter().map(|h| h.clone().finalize()).collect();
    Ok((state.finish(file, plan.bases), crcs))
}

/// A window of chunks encoded and not yet written: the chunk indices, their bytes, their
/// encodings, and whether they are hashed already.
struct Window<'a> {
    range: std::ops::Range<usize>,
    data: Vec<std::borrow::Cow<'a, [u8]>>,
    encoded: Vec<Done>,
    hashed: bool,
}

/// The second stage of [`encode_inner`]'s pipeline for one window, in file order: holds
/// `Mode::Auto` chunks within their allowances, hashes what decompression will produce (the
/// decoded bytes of lossy chunks) unless `hashed`, and writes the chunks.
fn finish_window(
    jobs: &[Job<'_>],
    mut encoded: Vec<Done>,
    hashed: bool,
    allowances: Option<&[Option<f64>]>,
    state: &mut EntryState,
    out: &mut impl Sink,
) -> Result<()> {
    if let Some(allow) = allowances {
        for (j, d) in jobs.iter().zip(encoded.iter_mut()) {
            if let Some(a) = allow[j.segment] {
                let (spent, rec) = (&mut state.spent[j.segment], &mut state.recorded);
                hold_budget(j, d, a, spent, &mut rec[j.segment])?;
            }
        }
    }
    if !hashed {
        for (j, d) in jobs.iter().zip(&encoded) {
            state.hash(
                j.segment,
                d.lossy.as_ref().map_or(j.data, |(b, _)| b.as_slice()),
            );
        }
    }
    for (j, done) in jobs.iter().zip(encoded) {
        state.store(j, done, out)?;
    }
    Ok(())
}

impl<'a> EntryPlan<'_, 'a> {
    /// The job of chunk `c`, whose bytes are `data`.
    fn job<'d>(&self, c: &ChunkAt, data: &'d [u8]) -> Job<'d>
    where
        'a: 'd,
    {
        let seg = &self.file.segments[c.segment];
        Job {
            segment: c.segment,
            data,
            value: seg.value,
            hints: self.file.hints(seg),
            coding: self.codings[c.segment],
            base: self.bases[c.segment].map(|b| {
                &b.data[(c.range.start - seg.offset) as usize..(c.range.end - seg.offset) as usize]
            }),
            never_larger: true,
        }
    }
}

/// What [`encode_entry_budgeted`] accumulates over the windows of one entry.
struct EntryState {
    segments: Vec<Segment>,
    errors: Vec<ErrorAcc>,
    unchanged: Vec<u64>,
    lossy_coded: Vec<bool>,
    /// The most precise coding a segment's lossy chunks used (recorded in the index).
    recorded: Vec<Coding>,
    /// The sum of squared errors each segment has reached (`Mode::Auto`).
    spent: Vec<f64>,
    sha: sha2::Sha256,
    hasher: SegmentHasher,
    /// CRC-32 of each segment's restored bytes (empty when not wanted).
    crcs: Vec<crc32fast::Hasher>,
}

impl EntryState {
    fn new(file: &PlannedFile, codings: &[Coding], crc: bool) -> Self {
        let n = file.segments.len();
        let segments = file
            .segments
            .iter()
            .map(|s| Segment {
                kind: s.kind.clone(),
                transform: Transform::Identity,
                offset: s.offset,
                len: s.len,
                blake3: *blake3::hash(&[]).as_bytes(),
                entropy_bits: 0.0,
                chunks: Vec::new(),
            })
            .collect();
        Self {
            segments,
            errors: vec![ErrorAcc::default(); n],
            unchanged: vec![0; n],
            lossy_coded: vec![false; n],
            recorded: codings.to_vec(),
            spent: vec![0.0; n],
            sha: sha2::Sha256::new(),
            hasher: SegmentHasher::default(),
            crcs: vec![crc32fast::Hasher::new(); if crc { n } else { 0 }],
        }
    }

    /// Feeds the file's hashes with the next bytes (of `segment`), in file order.
    fn hash(&mut self, segment: usize, data: &[u8]) {
        self.sha.update(data);
        if let Some(h) = self.crcs.get_mut(segment) {
            h.update(data);
        }
        if let Some((s, h)) = self.hasher.update(segment, data) {
            self.segments[s].blake3 = *h.as_bytes();
        }
    }

    /// Writes an encoded chunk's payload to `out` and records it.
    fn store(&mut self, j: &Job<'_>, done: Done, out: &mut impl Sink) -> Result<()> {
        let enc = done.enc;
        if let Some((_, acc)) = &done.lossy {
            self.errors[j.segment].merge(acc);
        }
        self.unchanged[j.segment] += done.unchanged;
        self.lossy_coded[j.segment] |= done.lossy_coded;
        let offset = out.position();
        out.write_all(&enc.payload)?;
        let seg = &mut self.segments[j.segment];
        seg.entropy_bits += enc.entropy_bits;
        seg.chunks.push(Chunk {
            offset,
            stored_len: enc.payload.len() as u32,
            raw_len: j.data.len() as u32,
            codec: enc.codec as u8,
            xxh3: dmx_format::xxh3_64(&enc.payload),
        });
        Ok(())
    }

    /// The entry's record, once every chunk is stored.
    fn finish(mut self, file: &PlannedFile, bases: &[Option<BaseTensor<'_>>]) -> Entry {
        if let Some((s, h)) = self.hasher.finish() {
            self.segments[s].blake3 = *h.as_bytes();
        }
        for (i, seg) in self.segments.iter_mut().enumerate() {
            // A segment whose every chunk was stored exactly is recorded as exact.
            let lossy = if self.lossy_coded[i] {
                self.recorded[i].record(self.errors[i].stats())
            } else {
                None
            };
            seg.transform = match (bases[i], lossy) {
                (Some(b), Some(lossy)) => Transform::QuantDelta {
                    base: b.name.to_string(),
                    lossy,
                    unchanged: self.unchanged[i],
                },
                (Some(b), None) => Transform::Delta {
                    base: b.name.to_string(),
                    unchanged: self.unchanged[i],
                },
                (None, Some(l)) => Transform::Lossy(l),
                (None, None) => Transform::Identity,
            };
        }
        Entry {
            path: file.rel.clone(),
            kind: file.kind,
            size: file.size,
            sha256: self.sha.finalize().into(),
            base: None,
            segments: self.segments,
            packed: None,
            views: file.views.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unchanged_counts_equal_values_of_every_width() {
        let base: Vec<u8> = (0..64u8).collect();
        let mut data = base.clone();
        // Change byte 5 (in value 5 of 1 byte, 2 of 2, 1 of 4, 0 of 8) and byte 40.
        data[5] ^= 1;
        data[40] ^= 0x80;
        for (layout, expect) in [
            (dmx_codec::FloatLayout::BF16, 32 - 2),
            (dmx_codec::FloatLayout::F32, 16 - 2),
            (dmx_codec::FloatLayout::F64, 8 - 2),
        ] {
            let value = ValueKind::Float(layout);
            assert_eq!(
                unchanged(Coding::Delta, value, &base, &data),
                expect,
                "{layout:?}"
            );
            // The same count as comparing value by value.
            let slow = base
                .chunks_exact(layout.bytes())
                .zip(data.chunks_exact(layout.bytes()))
                .filter(|(a, b)| a == b)
                .count() as u64;
            assert_eq!(slow, expect);
        }
        assert_eq!(unchanged(Coding::Delta, ValueKind::Bytes, &base, &data), 62);
    }
}
