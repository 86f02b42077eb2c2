//! The `.dmx` container: preamble, index and trailer, exactly as specified in
//! `docs/FORMAT.md`. This crate does no IO; it turns index structures into bytes and back,
//! validating every count, offset and size against [`Limits`] before allocating.
//!
//! ```
//! use dmx_format::{Entry, EntryKind, Index, Limits, Root, Trailer};
//! let index = Index { root: Root::File, entries: vec![Entry {
//!     path: "a.bin".into(), kind: EntryKind::Blob, size: 0, sha256: [0; 32], base: None,
//!     segments: vec![], packed: None, views: vec![],
//! }] };
//! let bytes = index.to_bytes();
//! let trailer = Trailer::for_index(16, &bytes);
//! let back = Index::from_bytes(&bytes, 16, &Limits::default()).unwrap();
//! assert_eq!(back, index);
//! assert_eq!(Trailer::from_bytes(&trailer.to_bytes()).unwrap(), trailer);
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod error;
mod index;
mod stored;
mod wire;

pub use error::FormatError;
pub use index::{
    BaseRef, Chunk, Entry, EntryKind, ErrorStats, Index, Lossy, LossyMode, MAX_PACK, PackedTensor,
    Root, Segment, SegmentKind, TensorInfo, TorchView, Transform, ValueErrors, check_entry_path,
};
pub use stored::{FLAG_COMPRESSED_INDEX, KNOWN_FLAGS, preamble_flags, preamble_with};

/// XXH3-64 (seed 0, the default secret) of `data`: the checksum of every chunk payload and of
/// the index (§4, §5.4). twox-hash picks its AVX2 or SSE2 loop when it runs (xxhash-rust,
/// used before, fixed the SSE2 loop at build time for the baseline target): the same value
/// either way, about twice as fast on the megabyte payloads decompression checks.
pub fn xxh3_64(data: &[u8]) -> u64 {
    twox_hash::XxHash3_64::oneshot(data)
}

/// First 8 bytes of every archive (§2).
pub const MAGIC: [u8; 8] = *b"\x89DMX\r\n\x1a\n";
/// Last 8 bytes of every archive (§4).
pub const END_MAGIC: [u8; 8] = *b"DMXINDEX";
/// Major format version written by this crate; readers reject any other (§2).
pub const VERSION_MAJOR: u16 = 1;
/// Highest minor format version written by this crate (1.1 adds lossy segments and delta
/// entries, 1.2 packed tensors, packs of small files and the compressed index, 1.3
/// `torch.save` entries, 1.4 the lossy records with per-value errors and the floating grid,
/// 1.5 the split-stream float codecs 10 and 11, 1.6 the rANS float codec 12, 1.7 the
/// previous-value codecs 13 (BFP) and 14 (integer grid), 1.8 the row-class integer codec 15,
/// 1.9 the column-relative float codec 16, 1.10 the row-relative rANS float codec 17;
/// an archive that uses none of them is written as 1.0). Readers accept any minor of their
/// major and reject the ids (transforms, codecs, kinds, flags) they do not know.
pub const VERSION_MINOR: u16 = 10;
/// Size of the preamble (§2).
pub const PREAMBLE_LEN: u64 = 16;
/// Size of the trailer (§4).
pub const TRAILER_LEN: u64 = 32;

/// Bounds applied to untrusted archives before any allocation (§6).
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest index accepted, in bytes.
    pub max_index_len: u64,
    /// Largest raw (decoded) chunk, in bytes.
    pub max_chunk_raw: u32,
    /// Largest number of entries (files).
    pub max_entries: u64,
    /// Largest number of segments in one entry.
    pub max_segments: u64,
    /// Largest number of chunks in one segment.
    pub max_chunks: u64,
    /// Longest string (path, tensor name, dtype), in bytes.
    pub max_string: u32,
    /// Largest tensor rank.
    pub max_rank: u32,
    /// Largest expansion of a compressed index (§4.1): its `raw_len` may exceed
    /// [`MIN_INDEX_EXPANSION_FLOOR`] only up to this many times its stored length, so that a
    /// small hostile file cannot make a reader allocate a large index.
    pub max_index_expansion: u64,
}

/// A compressed index of up to this many bytes (16 MiB) is accepted whatever its expansion
/// ratio (§4.1, §6).
pub const MIN_INDEX_EXPANSION_FLOOR: u64 = 16 << 20;

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_index_len: 1 << 30,
            max_chunk_raw: 64 << 20,
            max_entries: 1 << 20,
            max_segments: 1 << 24,
            max_chunks: 1 << 26,
            max_string: 1 << 16,
            max_rank: 64,
            max_index_expansion: 1024,
        }
    }
}

/// The fixed 16-byte preamble of a version 1.0 archive (§2).
pub fn preamble() -> [u8; 16] {
    preamble_minor(0)
}

/// The preamble of a version `1.minor` archive (see [`Index::min_minor`]).
pub fn preamble_minor(minor: u16) -> [u8; 16] {
    let mut p = [0u8; 16];
    p[..8].copy_from_slice(&MAGIC);
    p[8..10].copy_from_slice(&VERSION_MAJOR.to_le_bytes());
    p[10..12].copy_from_slice(&minor.to_le_bytes());
    // Bytes 12..16: flags, all zero in version 1.0.
    p
}

/// Checks a preamble (§2): magic, major version and flags; returns `(major, minor)`.
///
/// Fewer than 16 bytes are `Truncated("preamble")` only when they are the start of the magic
/// (a true prefix of an archive); any other short file is [`FormatError::NotAnArchive`].
pub fn check_preamble(bytes: &[u8]) -> Result<(u16, u16), FormatError> {
    let head = &bytes[..bytes.len().min(MAGIC.len())];
    if head != &MAGIC[..head.len()] {
        return Err(FormatError::NotAnArchive);
    }
    let p = bytes.get(..16).ok_or(FormatError::Truncated("preamble"))?;
    let major = u16::from_le_bytes([p[8], p[9]]);
    let minor = u16::from_le_bytes([p[10], p[11]]);
    if major != VERSION_MAJOR {
        return Err(FormatError::UnsupportedVersion { major, minor });
    }
    let flags = u32::from_le_bytes([p[12], p[13], p[14], p[15]]);
    if flags & !KNOWN_FLAGS != 0 {
        return Err(FormatError::UnknownFlags(flags));
    }
    Ok((major, minor))
}

/// The fixed 32-byte trailer that locates the index (§4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trailer {
    /// Absolute offset of the index.
    pub index_offset: u64,
    /// Index length in bytes.
    pub index_len: u64,
    /// xxh3-64 of the index bytes.
    pub index_xxh3: u64,
}

impl Trailer {
    /// The trailer for `index` bytes written at `index_offset`.
    pub fn for_index(index_offset: u64, index: &[u8]) -> Self {
        Self {
            index_offset,
            index_len: index.len() as u64,
            index_xxh3: xxh3_64(index),
        }
    }

    /// Serializes the trailer.
    pub fn to_bytes(&self) -> [u8; 32] {
        let mut t = [0u8; 32];
        t[..8].copy_from_slice(&self.index_offset.to_le_bytes());
        t[8..16].copy_from_slice(&self.index_len.to_le_bytes());
        t[16..24].copy_from_slice(&self.index_xxh3.to_le_bytes());
        t[24..].copy_from_slice(&END_MAGIC);
        t
    }

    /// Parses a trailer (the last 32 bytes of an archive).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, FormatError> {
        let t: &[u8; 32] = bytes
            .try_into()
            .map_err(|_| FormatError::Truncated("trailer"))?;
        if t[24..] != END_MAGIC {
            return Err(FormatError::NoTrailer);
        }
        let u = |i: usize| u64::from_le_bytes(t[i..i + 8].try_into().unwrap_or([0; 8]));
        Ok(Self {
            index_offset: u(0),
            index_len: u(8),
            index_xxh3: u(16),
        })
    }

    /// Checks that the index lies between the preamble and the trailer of a file of
    /// `file_len` bytes and within `limits`.
    pub fn check(&self, file_len: u64, limits: &Limits) -> Result<(), FormatError> {
        let end = self
            .index_offset
            .checked_add(self.index_len)
            .ok_or(FormatError::OutOfRange("index"))?;
        if self.index_offset < PREAMBLE_LEN || end.checked_add(TRAILER_LEN) != Some(file_len) {
            return Err(FormatError::OutOfRange("index"));
        }
        if self.index_len > limits.max_index_len {
            return Err(FormatError::LimitExceeded {
                what: "index size",
                value: self.index_len,
                limit: limits.max_index_len,
            });
        }
        Ok(())
    }

    /// Checks the index bytes against the recorded checksum.
    pub fn check_index(&self, index: &[u8]) -> Result<(), FormatError> {
        if xxh3_64(index) != self.index_xxh3 {
            return Err(FormatError::ChecksumMismatch("index"));
        }
        Ok(())
    }
}

/// How far back from the end of a file [`find_archive_end`] looks for the end of an archive
/// followed by other data.
pub const MAX_APPENDED: u64 = 1 << 20;

/// For a file that does not end with a trailer: the length of a complete archive at its
/// start, when one ends within the last [`MAX_APPENDED`] bytes (an end magic whose trailer
/// locates an index with a matching checksum), so that the error can say that data was
/// appended rather than that the archive is cut short. `None` when there is none.
pub fn find_archive_end(bytes: &[u8], limits: &Limits) -> Option<u64> {
    let len = bytes.len();
    let min_end = (PREAMBLE_LEN + TRAILER_LEN) as usize;
    let from = len.saturating_sub(MAX_APPENDED as usize).max(min_end);
    (from..len)
        .rev()
        .filter(|&end| bytes[..end].ends_with(&END_MAGIC))
        .find(|&end| {
            let Ok(t) = Trailer::from_bytes(&bytes[end - TRAILER_LEN as usize..end]) else {
                return false;
            };
            t.check(end as u64, limits).is_ok()
                && t.check_index(
                    &bytes[t.index_offset as usize..(t.index_offset + t.index_len) as usize],
                )
                .is_ok()
        })
        .map(|end| end as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The checksum is XXH3-64 exactly as the earlier implementation computed it, on every
    /// length class of the algorithm (0–16, 17–128, 129–240 bytes, and the striped long
    /// input with its partial last block and stripe), and on the spec's empty-input value.
    #[test]
    fn xxh3_matches_the_reference_implementation() {
        assert_eq!(xxh3_64(&[]), 0x2D06_8005_38D3_94C2);
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let data: Vec<u8> = (0..70_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let lengths = (0..=300).chain([1023, 1024, 1025, 4096, 65_535, 70_000]);
        for n in lengths {
            assert_eq!(
                xxh3_64(&data[..n]),
                xxhash_rust::xxh3::xxh3_64(&data[..n]),
                "{n} bytes"
            );
        }
    }

    #[test]
    fn preamble_round_trip() {
        check_preamble(&preamble()).unwrap();
        let mut p = preamble();
        p[8] = 2;
        assert!(matches!(
            check_preamble(&p),
            Err(FormatError::UnsupportedVersion { major: 2, .. })
        ));
        let mut p = preamble();
        p[12] = 2;
        assert!(matches!(
            check_preamble(&p),
            Err(FormatError::UnknownFlags(2))
        ));
        p[12] = 1;
        check_preamble(&p).unwrap();
        assert!(matches!(
            check_preamble(b"PK\x03\x04............"),
            Err(FormatError::NotAnArchive)
        ));
        // Short files: a prefix of the magic is a cut archive, anything else is foreign.
        assert_eq!(check_preamble(&[]), Err(FormatError::Truncated("preamble")));
        assert_eq!(
            check_preamble(&[0x89]),
            Err(FormatError::Truncated("preamble"))
        );
        assert_eq!(
            check_preamble(&preamble()[..15]),
            Err(FormatError::Truncated("preamble"))
        );
        assert_eq!(check_preamble(b"hello\n"), Err(FormatError::NotAnArchive));
        assert_eq!(check_preamble(b"\x89DMY"), Err(FormatError::NotAnArchive));
        assert_eq!(
            check_preamble(b"\x89DMX\r\n\x1a\x00"),
            Err(FormatError::NotAnArchive)
        );
    }

    #[test]
    fn a_missing_end_magic_is_no_trailer() {
        let t = Trailer::for_index(16, b"abc").to_bytes();
        let mut junk = t;
        junk[31] ^= 1;
        assert_eq!(Trailer::from_bytes(&junk), Err(FormatError::NoTrailer));
        let msg = FormatError::NoTrailer.to_string();
        assert!(
            msg.contains("cut short") && msg.contains("appended"),
            "{msg}"
        );
        assert_eq!(
            Trailer::from_bytes(&t[..31]),
            Err(FormatError::Truncated("trailer"))
        );
    }

    #[test]
    fn appended_data_is_found() {
        let mut archive = preamble().to_vec();
        let index = b"an index";
        archive.extend_from_slice(index);
        archive.extend_from_slice(&Trailer::for_index(16, index).to_bytes());
        let limits = Limits::default();
        let n = archive.len() as u64;
        let mut longer = archive.clone();
        longer.extend_from_slice(b"junk DMXINDEX more junk");
        assert_eq!(find_archive_end(&longer, &limits), Some(n));
        // A cut archive has no end; neither has one whose index checksum is wrong.
        assert_eq!(
            find_archive_end(&archive[..archive.len() - 1], &limits),
            None
        );
        let mut bad = archive.clone();
        bad[16] ^= 1;
        bad.extend_from_slice(b"junk");
        assert_eq!(find_archive_end(&bad, &limits), None);
        let msg = FormatError::DataAppended { end: n, extra: 4 }.to_string();
        assert!(msg.contains("4 bytes") && msg.contains("appended"), "{msg}");
    }

    #[test]
    fn trailer_bounds() {
        let t = Trailer::for_index(16, b"abc");
        t.check(16 + 3 + 32, &Limits::default()).unwrap();
        assert!(t.check(16 + 3 + 31, &Limits::default()).is_err());
        let bad = Trailer {
            index_offset: u64::MAX,
            ..t
        };
        assert!(bad.check(100, &Limits::default()).is_err());
        t.check_index(b"abc").unwrap();
        assert!(t.check_index(b"abd").is_err());
    }
}
