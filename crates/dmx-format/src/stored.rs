//! Format 1.2: the preamble flag for a zstd-compressed index (§2, §4.1) and the stored form of
//! the index.

use std::io::Read;

use crate::{FormatError, Index, Limits};

/// Preamble flag bit 0 (format 1.2): the index bytes are `u64 raw_len` followed by zstd data
/// that decodes to exactly `raw_len` bytes of index (§4.1).
pub const FLAG_COMPRESSED_INDEX: u32 = 1;
/// Every flag this reader understands; any other bit is rejected (`UnknownFlags`).
pub const KNOWN_FLAGS: u32 = FLAG_COMPRESSED_INDEX;

/// zstd level of a compressed index. The index is compressed after every chunk, on no other
/// work's time: level 9 runs at about 50 MB/s on an index of tens of KB and stays within 2 %
/// of level 19's size, which takes 1–2 MB/s (10–25 ms for a CNN's or a checkpoint's index).
const LEVEL: i32 = 9;

/// The preamble of a version `1.minor` archive with `flags` (format 1.2 defines
/// [`FLAG_COMPRESSED_INDEX`]).
pub fn preamble_with(minor: u16, flags: u32) -> [u8; 16] {
    let mut p = crate::preamble_minor(minor);
    p[12..16].copy_from_slice(&flags.to_le_bytes());
    p
}

/// The flags of a preamble already accepted by [`crate::check_preamble`] (0 when `bytes` is
/// shorter than a preamble).
pub fn preamble_flags(bytes: &[u8]) -> u32 {
    bytes
        .get(12..16)
        .map_or(0, |f| u32::from_le_bytes([f[0], f[1], f[2], f[3]]))
}

impl Index {
    /// The index as stored between the data area and the trailer: [`Index::to_bytes`], or
    /// with [`FLAG_COMPRESSED_INDEX`] in `flags` its compressed form (§4.1).
    pub fn to_stored(&self, flags: u32) -> Vec<u8> {
        let raw = self.to_bytes();
        if flags & FLAG_COMPRESSED_INDEX == 0 {
            return raw;
        }
        let mut out = (raw.len() as u64).to_le_bytes().to_vec();
        // One frame with a content checksum (§4.1). Compressing an in-memory buffer into a
        // Vec cannot fail.
        let z = zstd::bulk::Compressor::new(LEVEL)
            .and_then(|mut c| {
                c.include_checksum(true)?;
                c.compress(&raw)
            })
            .unwrap_or_default();
        out.extend_from_slice(&z);
        out
    }

    /// Parses the stored index of an archive whose preamble has `flags`: decompresses it
    /// first when [`FLAG_COMPRESSED_INDEX`] is set, never producing more than the recorded
    /// length, itself bounded by `limits.max_index_len`.
    pub fn from_stored(
        stored: &[u8],
        flags: u32,
        data_end: u64,
        limits: &Limits,
    ) -> Result<Self, FormatError> {
        if flags & FLAG_COMPRESSED_INDEX == 0 {
            return Self::from_bytes(stored, data_end, limits);
        }
        let raw = decompress_index(stored, limits)?;
        Self::from_bytes(&raw, data_end, limits)
    }
}

/// Decodes a compressed index (§4.1), checking its recorded length against the index limit
/// before decoding and the decoded length against the record after.
fn decompress_index(stored: &[u8], limits: &Limits) -> Result<Vec<u8>, FormatError> {
    let len = stored
        .get(..8)
        .ok_or(FormatError::Truncated("compressed index"))?;
    let raw_len = u64::from_le_bytes(len.try_into().unwrap_or([0; 8]));
    if raw_len > limits.max_index_len {
        return Err(FormatError::LimitExceeded {
            what: "index size",
            value: raw_len,
            limit: limits.max_index_len,
        });
    }
    let frame = &stored[8..];
    let expansion_limit = (frame.len() as u64)
        .saturating_mul(limits.max_index_expansion)
        .max(crate::MIN_INDEX_EXPANSION_FLOOR);
    if raw_len > expansion_limit {
        return Err(FormatError::LimitExceeded {
            what: "compressed index expansion",
            value: raw_len,
            limit: expansion_limit,
        });
    }
    let bad = || FormatError::Invalid("the compressed index does not decode");
    // Exactly one zstd frame, whose header sets Content_Checksum_flag (bit 2 of the
    // Frame_Header_Descriptor, the byte after the 4-byte magic number): the decoder then
    // checks the decoded index against it.
    if zstd::zstd_safe::find_frame_compressed_size(frame) != Ok(frame.len())
        || frame.get(4).is_none_or(|d| d & 0x04 == 0)
    {
        return Err(FormatError::Invalid(
            "the compressed index is not one zstd frame with a content checksum",
        ));
    }
    let decoder = zstd::stream::read::Decoder::with_buffer(frame).map_err(|_| bad())?;
    // The output grows only as data decodes, and never past raw_len + 1 bytes.
    let mut raw = Vec::new();
    decoder
        .take(raw_len.saturating_add(1))
        .read_to_end(&mut raw)
        .map_err(|_| bad())?;
    if raw.len() as u64 != raw_len {
        return Err(FormatError::Invalid(
            "the compressed index does not decode to its recorded length",
        ));
    }
    Ok(raw)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Entry, EntryKind, Root};

    fn index(n: usize) -> Index {
        Index {
            root: Root::Directory,
            entries: (0..n)
                .map(|i| Entry {
                    path: format!("f{i:05}"),
                    kind: EntryKind::Blob,
                    size: 0,
                    sha256: [0; 32],
                    base: None,
                    segments: vec![],
                    packed: None,
                    views: Vec::new(),
                })
                .collect(),
        }
    }

    #[test]
    fn compressed_round_trip_and_bounds() {
        let idx = index(1000);
        let plain = idx.to_stored(0);
        let z = idx.to_stored(FLAG_COMPRESSED_INDEX);
        assert!(z.len() * 4 < plain.len());
        let l = Limits::default();
        assert_eq!(
            Index::from_stored(&z, FLAG_COMPRESSED_INDEX, 16, &l).unwrap(),
            idx
        );
        assert_eq!(Index::from_stored(&plain, 0, 16, &l).unwrap(), idx);
        for cut in 0..z.len() {
            assert!(Index::from_stored(&z[..cut], FLAG_COMPRESSED_INDEX, 16, &l).is_err());
        }
        // A recorded length above the limit is refused before decoding.
        let small = Limits {
            max_index_len: 100,
            ..Limits::default()
        };
        assert!(matches!(
            Index::from_stored(&z, FLAG_COMPRESSED_INDEX, 16, &small),
            Err(FormatError::LimitExceeded { .. })
        ));
        // A recorded length beyond the expansion bound (above the 16 MiB floor) is refused
        // before decoding.
        let claim = ((z.len() as u64 - 8) * 1024 + 1).max(17 << 20);
        assert!(claim < l.max_index_len);
        let mut huge = claim.to_le_bytes().to_vec();
        huge.extend_from_slice(&z[8..]);
        assert!(matches!(
            Index::from_stored(&huge, FLAG_COMPRESSED_INDEX, 16, &l),
            Err(FormatError::LimitExceeded {
                what: "compressed index expansion",
                ..
            })
        ));
        // A recorded length that disagrees with the data is refused.
        let mut wrong = z.clone();
        wrong[0] ^= 1;
        assert!(Index::from_stored(&wrong, FLAG_COMPRESSED_INDEX, 16, &l).is_err());
        assert_eq!(preamble_flags(&preamble_with(2, 1)), 1);
        crate::check_preamble(&preamble_with(2, FLAG_COMPRESSED_INDEX)).unwrap();
    }
}
