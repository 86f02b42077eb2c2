//! Lossy `torch.save` zips: a storage coded lossily restores different bytes, so the
//! CRC-32 fields of its zip member (local header, data descriptor, central directory) are
//! rewritten with the CRC-32 of the restored storage, and the restored file is a valid zip.
//!
//! The storages are encoded once in a dry run (payloads discarded) to learn what
//! decompression will produce; the entry is then encoded from the skeleton with the CRCs
//! patched, so the archive stores the patched skeleton and its checksums (segment BLAKE3,
//! entry SHA-256) are of the restored file. Encoding is deterministic, which the second
//! run checks: each storage must restore to the CRC the dry run found.

use dmx_format::Entry;

use super::encode::{Discard, EntryPlan, Sink, encode_entry_crc};
use super::source::Source;
use crate::Options;
use crate::error::{Error, Result};
use crate::lossy::Coding;
use crate::plan::{PlannedFile, PlannedSegment};
use crate::torch_crc::{CrcFields, crc_fields, patched_copies};

/// Whether `plan` is a torch entry with lossy segments (its zip CRCs need rewriting).
pub(super) fn needs_crc_patch(plan: &EntryPlan<'_, '_>) -> bool {
    plan.file.kind.is_torch() && plan.codings.iter().any(|c| !c.is_lossless())
}

/// Encodes the torch entry `plan` (with lossy segments) into `out`, its zip CRC fields
/// rewritten for the restored storages. A lossy segment that is not exactly one zip
/// member's data (which `torch.save` never writes) is coded exactly instead.
pub(super) fn encode_torch_lossy(
    plan: &EntryPlan<'_, '_>,
    out: &mut impl Sink,
    opts: &Options,
) -> Result<Entry> {
    let file = plan.file;
    let whole = plan.src.read(0..file.size)?;
    let fields = crc_fields(&whole);
    let mut codings = plan.codings.to_vec();
    let mut targets: Vec<(usize, &CrcFields)> = Vec::new();
    for (i, seg) in file.segments.iter().enumerate() {
        if codings[i].is_lossless() {
            continue;
        }
        let r = seg.offset..seg.offset + seg.len;
        match fields.iter().find(|f| f.data == r) {
            Some(f) => targets.push((i, f)),
            None if fields
                .iter()
                .any(|f| f.data.start < r.end && r.start < f.data.end) =>
            {
                codings[i] = Coding::Lossless;
            }
            None => {}
        }
    }
    let plan = EntryPlan {
        codings: &codings,
        ..*plan
    };
    if targets.is_empty() {
        return encode_entry_crc(&plan, out, opts).map(|(e, _)| e);
    }
    let dry = restored_crcs(&plan, &targets, opts)?;
    let patches: Vec<(u64, u32)> = targets
        .iter()
        .zip(&dry)
        .flat_map(|((_, f), &crc)| f.at.iter().map(move |&at| (at, crc)))
        .collect();
    let copies = patched_copies(&whole, &file.segments, &patches)?;
    let pieces = file
        .segments
        .iter()
        .zip(&copies)
        .map(|(s, c)| match c {
            Some(c) => c.as_slice(),
            None => &whole[s.offset as usize..(s.offset + s.len) as usize],
        })
        .collect();
    let src = Source::pieces(pieces);
    let patched = EntryPlan { src: &src, ..plan };
    let (entry, crcs) = encode_entry_crc(&patched, out, opts)?;
    for ((i, _), want) in targets.iter().zip(&dry) {
        if crcs[*i] != *want {
            return Err(Error::Internal(format!(
                "{}: storage at byte {} restored differently in two encodings; please report \
                 this",
                file.rel, file.segments[*i].offset
            )));
        }
    }
    Ok(entry)
}

/// The CRC-32 of what decompression will restore for each of the `targets` segments of
/// `plan`: a dry run of their encoding (no progress, payloads discarded).
fn restored_crcs(
    plan: &EntryPlan<'_, '_>,
    targets: &[(usize, &CrcFields)],
    opts: &Options,
) -> Result<Vec<u32>> {
    let f = plan.file;
    let sub = PlannedFile {
        rel: f.rel.clone(),
        path: f.path.clone(),
        kind: f.kind,
        size: f.size,
        segments: targets
            .iter()
            .map(|&(i, _)| {
                let s = &f.segments[i];
                PlannedSegment {
                    kind: s.kind.clone(),
                    offset: s.offset,
                    len: s.len,
                    value: s.value,
                }
            })
            .collect(),
        warning: None,
        views: Vec::new(),
    };
    let pick = |i: &(usize, &CrcFields)| i.0;
    let codings: Vec<Coding> = targets.iter().map(|t| plan.codings[pick(t)]).collect();
    let bases: Vec<_> = targets.iter().map(|t| plan.bases[pick(t)]).collect();
    let allowances: Option<Vec<Option<f64>>> = plan
        .allowances
        .map(|a| targets.iter().map(|t| a[pick(t)]).collect());
    let dry = EntryPlan {
        file: &sub,
        src: plan.src,
        codings: &codings,
        bases: &bases,
        allowances: allowances.as_deref(),
    };
    let quiet = Options {
        progress: None,
        ..opts.clone()
    };
    let (_, crcs) = encode_entry_crc(&dry, &mut Discard::default(), &quiet)?;
    Ok(crcs)
}
