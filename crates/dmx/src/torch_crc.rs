//! The CRC-32 fields of a `torch.save` zip (APPNOTE.TXT 4.3.7, 4.3.9, 4.3.12): where each
//! member's data checksum is recorded, so that a lossy archive can record the CRC-32 of the
//! bytes it will restore and the restored file stays a valid zip. Legacy (non-zip) files
//! have no CRCs.

use std::ops::Range;

use crate::error::{Error, Result};
use crate::plan::PlannedSegment;

/// The zip central directory record signature.
const CENTRAL_SIG: &[u8] = b"PK\x01\x02";
/// The optional data descriptor signature.
const DESCRIPTOR_SIG: &[u8] = b"PK\x07\x08";
/// Offset of the CRC-32 in a local file header (after signature, version, flags, method,
/// time, date).
const LOCAL_CRC: u64 = 14;
/// Offset of the CRC-32 in a central directory record (after signature, two versions,
/// flags, method, time, date).
const CENTRAL_CRC: usize = 16;
/// Fixed size of a central directory record (before name, extra field and comment).
const CENTRAL_FIXED: usize = 46;

/// Where the CRC-32 of one zip member's data is recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CrcFields {
    /// The member's stored data.
    pub data: Range<u64>,
    /// File offsets of the 4-byte little-endian CRC-32 fields of that data: the local
    /// header's (when it holds one: writers that stream set it to zero and use a data
    /// descriptor), the data descriptor's (when there is one) and the central directory
    /// record's.
    pub at: Vec<u64>,
}

fn u16_at(b: &[u8], at: usize) -> Option<usize> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?) as usize)
}

fn u32_at(b: &[u8], at: u64) -> Option<u32> {
    let at = usize::try_from(at).ok()?;
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// The CRC-32 fields of every member of the zip `file`, in central directory order; empty
/// for a legacy `torch.save` file or a zip that `dmx_pt`'s reader refuses (such a file is
/// not read as torch and its bytes are stored exactly).
pub(crate) fn crc_fields(file: &[u8]) -> Vec<CrcFields> {
    if !file.starts_with(b"PK\x03\x04") {
        return Vec::new();
    }
    let Ok(zip) = dmx_pt::zip::read_zip(file, &dmx_pt::Limits::default()) else {
        return Vec::new();
    };
    let mut out = Vec::with_capacity(zip.entries.len());
    let mut cd = usize::try_from(zip.directory.start).unwrap_or(usize::MAX);
    for e in &zip.entries {
        // The central records follow each other in the order the reader returned them.
        let Some(next) = central_next(file, cd, &e.name) else {
            return Vec::new();
        };
        let mut at = Vec::with_capacity(3);
        if u32_at(file, e.header.start + LOCAL_CRC).is_some_and(|c| c != 0) {
            at.push(e.header.start + LOCAL_CRC);
        }
        if !e.descriptor.is_empty() {
            // The signature is optional (APPNOTE 4.3.9.3): the CRC follows it when present.
            let d = e.descriptor.start;
            let signed = file.get(d as usize..d as usize + 4) == Some(DESCRIPTOR_SIG)
                && u32_at(file, d + 4) == Some(e.crc32);
            at.push(if signed { d + 4 } else { d });
        }
        at.push((cd + CENTRAL_CRC) as u64);
        out.push(CrcFields {
            data: e.data.clone(),
            at,
        });
        cd = next;
    }
    out
}

/// Checks that the central directory record at `cd` is the one of `name`; returns where the
/// next record starts.
fn central_next(file: &[u8], cd: usize, name: &str) -> Option<usize> {
    if file.get(cd..cd + 4)? != CENTRAL_SIG {
        return None;
    }
    let (n, m, k) = (
        u16_at(file, cd + 28)?,
        u16_at(file, cd + 30)?,
        u16_at(file, cd + 32)?,
    );
    let stored = file.get(cd + CENTRAL_FIXED..cd + CENTRAL_FIXED + n)?;
    (stored == name.as_bytes()).then_some(cd + CENTRAL_FIXED + n + m + k)
}

/// Copies of the segments of `file` (tiled by `segments`) that hold a CRC field of
/// `patches` (offset, new CRC-32), with the fields rewritten; `None` for the others. Every
/// field must lie inside one bytes segment: the skeleton, which the archive stores as given.
pub(crate) fn patched_copies(
    file: &[u8],
    segments: &[PlannedSegment],
    patches: &[(u64, u32)],
) -> Result<Vec<Option<Vec<u8>>>> {
    let mut copies: Vec<Option<Vec<u8>>> = vec![None; segments.len()];
    for &(at, crc) in patches {
        let i = segments
            .iter()
            .position(|s| s.offset <= at && at + 4 <= s.offset + s.len)
            .filter(|&i| segments[i].kind == dmx_format::SegmentKind::Bytes)
            .ok_or_else(|| {
                Error::Internal(format!(
                    "the zip CRC-32 field at byte {at} is not in the skeleton; please report this"
                ))
            })?;
        let s = &segments[i];
        let copy = copies[i]
            .get_or_insert_with(|| file[s.offset as usize..(s.offset + s.len) as usize].to_vec());
        let off = (at - s.offset) as usize;
        copy[off..off + 4].copy_from_slice(&crc.to_le_bytes());
    }
    Ok(copies)
}

/// The CRC-32 fields (byte ranges) of `original`, a `torch.save` zip, that a lossy `entry`
/// rewrote: those of the members whose data is a lossy segment. `verify` does not count them
/// as differences from the original.
pub(crate) fn lossy_crc_mask(entry: &dmx_format::Entry, original: &[u8]) -> Vec<Range<usize>> {
    let fields = crc_fields(original);
    let mut mask: Vec<Range<usize>> = entry
        .segments
        .iter()
        .filter(|s| !s.transform.is_lossless())
        .filter_map(|s| {
            fields
                .iter()
                .find(|f| f.data == (s.offset..s.offset + s.len))
        })
        .flat_map(|f| f.at.iter().map(|&at| at as usize..at as usize + 4))
        .collect();
    mask.sort_by_key(|r| r.start);
    mask
}

/// The first position where `data` (file bytes from `pos` on) differs from `theirs` outside
/// the `mask` ranges (file offsets); `theirs.len()` when it is shorter and no earlier byte
/// differs; `None` when they agree.
pub(crate) fn first_difference(
    theirs: &[u8],
    data: &[u8],
    pos: usize,
    mask: &[Range<usize>],
) -> Option<usize> {
    let masked = |at: usize| mask.iter().any(|r| r.contains(&at));
    data.iter()
        .zip(theirs)
        .enumerate()
        .find(|(k, (a, b))| a != b && !masked(pos + k))
        .map(|(k, _)| k)
        .or((theirs.len() < data.len()).then_some(theirs.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const F32: &[u8] = include_bytes!("../../dmx-pt/tests/fixtures/model_f32.pt");
    const ADAMW: &[u8] = include_bytes!("../../dmx-pt/tests/fixtures/adamw.pt");
    const LEGACY: &[u8] = include_bytes!("../../dmx-pt/tests/fixtures/legacy.pt");

    /// Every field found holds the CRC-32 of its member's data; torch writes a descriptor
    /// and a central record for each member, and zero in the local header.
    #[test]
    fn fields_hold_each_members_crc() {
        for file in [F32, ADAMW] {
            let fields = crc_fields(file);
            assert!(fields.len() >= 4, "{fields:?}");
            for f in &fields {
                let crc = dmx_pt::zip::crc32(&file[f.data.start as usize..f.data.end as usize]);
                assert_eq!(f.at.len(), 2, "{f:?}");
                for &at in &f.at {
                    assert_eq!(u32_at(file, at), Some(crc), "{f:?}");
                }
            }
        }
        assert!(crc_fields(LEGACY).is_empty());
        assert!(crc_fields(b"PK\x03\x04 but not a zip").is_empty());
    }

    /// A local header that carries the CRC (no streaming) is patched too.
    #[test]
    fn local_header_crcs_are_found() {
        let mut file = F32.to_vec();
        let zip = dmx_pt::zip::read_zip(&file, &dmx_pt::Limits::default()).unwrap();
        let e = &zip.entries[0];
        let at = (e.header.start + LOCAL_CRC) as usize;
        file[at..at + 4].copy_from_slice(&e.crc32.to_le_bytes());
        let fields = crc_fields(&file);
        assert_eq!(fields[0].at.len(), 3);
        assert_eq!(fields[0].at[0], at as u64);
    }

    #[test]
    fn differences_inside_the_mask_do_not_count() {
        let a = [1u8, 2, 3, 4, 5, 6];
        let mask = [12..14, 100..101];
        assert_eq!(first_difference(&a, &a, 10, &mask), None);
        assert_eq!(first_difference(&a, &[1, 2, 9, 9, 5, 6], 10, &mask), None);
        assert_eq!(
            first_difference(&a, &[1, 2, 9, 9, 7, 6], 10, &mask),
            Some(4)
        );
        assert_eq!(
            first_difference(&a, &[0, 2, 3, 4, 5, 6], 10, &mask),
            Some(0)
        );
        assert_eq!(first_difference(&a[..3], &a, 10, &mask), Some(3));
    }

    #[test]
    fn patches_go_into_skeleton_copies_only() {
        let seg = |offset, len, kind| PlannedSegment {
            kind,
            offset,
            len,
            value: dmx_codec::ValueKind::Bytes,
        };
        let tensor = dmx_format::SegmentKind::Tensor(dmx_format::TensorInfo {
            name: "w".into(),
            dtype: "F32".into(),
            shape: vec![2],
        });
        let segments = vec![
            seg(0, 8, dmx_format::SegmentKind::Bytes),
            seg(8, 8, tensor),
            seg(16, 8, dmx_format::SegmentKind::Bytes),
        ];
        let file: Vec<u8> = (0..24).collect();
        let copies = patched_copies(&file, &segments, &[(18, 0xdead_beef)]).unwrap();
        assert!(copies[0].is_none() && copies[1].is_none());
        let c = copies[2].as_ref().unwrap();
        assert_eq!(c[..2], [16, 17]);
        assert_eq!(c[2..6], 0xdead_beef_u32.to_le_bytes());
        assert_eq!(c[6..], [22, 23]);
        assert!(patched_copies(&file, &segments, &[(9, 1)]).is_err());
        assert!(patched_copies(&file, &segments, &[(6, 1)]).is_err());
    }
}
