//! The archive index (§5): entries (files), their segments (header bytes or tensors) and the
//! chunks each segment is cut into.

use crate::wire::{Reader, Writer};
use crate::{FormatError, Limits, PREAMBLE_LEN};

/// Everything an archive holds, in the order it was stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Index {
    /// Whether the archive holds one file or a folder tree.
    pub root: Root,
    /// One entry per original file.
    pub entries: Vec<Entry>,
}

/// What the archive was made from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Root {
    /// A single file: exactly one entry, whose path is the original file name.
    File = 0,
    /// A folder: entries are paths relative to it.
    Directory = 1,
}

/// What kind of file an entry restores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// A safetensors file: a header segment followed by tensor segments.
    Safetensors = 0,
    /// Any other file, stored as one byte segment.
    Blob = 1,
}

/// One original file.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// Relative path with `/` separators (the file name for single-file archives).
    pub path: String,
    /// File kind.
    pub kind: EntryKind,
    /// Original size in bytes.
    pub size: u64,
    /// SHA-256 of the original file.
    pub sha256: [u8; 32],
    /// Segments tiling `0..size` in order.
    pub segments: Vec<Segment>,
}

/// What a segment's bytes are.
#[derive(Debug, Clone, PartialEq)]
pub enum SegmentKind {
    /// Opaque bytes: a safetensors header or a whole non-tensor file.
    Bytes,
    /// A tensor's data.
    Tensor(TensorInfo),
}

/// Name, dtype and shape of a tensor, as in its safetensors header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    /// Tensor name.
    pub name: String,
    /// Safetensors dtype string (`"BF16"`, `"F32"`, `"I64"`, ...).
    pub dtype: String,
    /// Shape.
    pub shape: Vec<u64>,
}

/// How a segment's decoded chunks relate to its original bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transform {
    /// The decoded chunks are the original bytes (lossless).
    Identity = 0,
}

/// A contiguous byte range of an original file.
#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    /// Header bytes or tensor.
    pub kind: SegmentKind,
    /// Relation of decoded bytes to original bytes.
    pub transform: Transform,
    /// Offset within the original file.
    pub offset: u64,
    /// Length in bytes.
    pub len: u64,
    /// BLAKE3 of the original bytes.
    pub blake3: [u8; 32],
    /// Order-0 entropy bound of the segment in bits under the codec's field split.
    pub entropy_bits: f64,
    /// Chunks, whose raw lengths add up to `len`.
    pub chunks: Vec<Chunk>,
}

/// One independently decodable piece of a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chunk {
    /// Absolute offset of the stored bytes in the archive.
    pub offset: u64,
    /// Stored length.
    pub stored_len: u32,
    /// Decoded length.
    pub raw_len: u32,
    /// Codec id (docs/CODECS.md).
    pub codec: u8,
    /// xxh3-64 of the stored bytes.
    pub xxh3: u64,
}

/// Smallest encodings, used to bound counts by the bytes left.
const MIN_ENTRY: usize = 4 + 1 + 8 + 32 + 8;
const MIN_SEGMENT: usize = 2 + 8 + 8 + 32 + 8 + 8;
const CHUNK_LEN: usize = 8 + 4 + 4 + 1 + 8;

impl Index {
    /// Serializes the index (§5).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer(Vec::new());
        w.u8(self.root as u8);
        w.u64(self.entries.len() as u64);
        for e in &self.entries {
            w.str(&e.path);
            w.u8(e.kind as u8);
            w.u64(e.size);
            w.bytes(&e.sha256);
            w.u64(e.segments.len() as u64);
            for s in &e.segments {
                match &s.kind {
                    SegmentKind::Bytes => w.u8(0),
                    SegmentKind::Tensor(t) => {
                        w.u8(1);
                        w.str(&t.name);
                        w.str(&t.dtype);
                        w.u32(t.shape.len() as u32);
                        for &d in &t.shape {
                            w.u64(d);
                        }
                    }
                }
                w.u8(s.transform as u8);
                w.u64(s.offset);
                w.u64(s.len);
                w.bytes(&s.blake3);
                w.f64(s.entropy_bits);
                w.u64(s.chunks.len() as u64);
                for c in &s.chunks {
                    w.u64(c.offset);
                    w.u32(c.stored_len);
                    w.u32(c.raw_len);
                    w.u8(c.codec);
                    w.u64(c.xxh3);
                }
            }
        }
        w.0
    }

    /// Parses and validates an index whose data area ends at `data_end` (the index offset).
    pub fn from_bytes(bytes: &[u8], data_end: u64, limits: &Limits) -> Result<Self, FormatError> {
        let mut r = Reader::new(bytes);
        let root = match r.u8()? {
            0 => Root::File,
            1 => Root::Directory,
            v => {
                return Err(FormatError::Unknown {
                    what: "root kind",
                    value: u64::from(v),
                });
            }
        };
        let n = r.count("entry count", limits.max_entries, MIN_ENTRY)?;
        let mut entries = Vec::with_capacity(n);
        for _ in 0..n {
            entries.push(read_entry(&mut r, data_end, limits)?);
        }
        if r.remaining() != 0 {
            return Err(FormatError::Invalid("trailing bytes after the index"));
        }
        let mut paths: Vec<&str> = entries.iter().map(|e| e.path.as_str()).collect();
        paths.sort_unstable();
        if paths.windows(2).any(|w| w[0] == w[1]) {
            return Err(FormatError::Invalid("two entries share a path"));
        }
        if root == Root::File && entries.len() != 1 {
            return Err(FormatError::Invalid(
                "a single-file archive must hold one entry",
            ));
        }
        Ok(Self { root, entries })
    }
}

fn read_entry(r: &mut Reader<'_>, data_end: u64, limits: &Limits) -> Result<Entry, FormatError> {
    let path = r.str(limits.max_string)?;
    check_path(&path)?;
    let kind = match r.u8()? {
        0 => EntryKind::Safetensors,
        1 => EntryKind::Blob,
        v => {
            return Err(FormatError::Unknown {
                what: "entry kind",
                value: u64::from(v),
            });
        }
    };
    let size = r.u64()?;
    let sha256 = r.array()?;
    let n = r.count("segment count", limits.max_segments, MIN_SEGMENT)?;
    let mut segments = Vec::with_capacity(n);
    let mut cursor = 0u64;
    for _ in 0..n {
        let s = read_segment(r, data_end, limits)?;
        if s.offset != cursor {
            return Err(FormatError::Invalid("segments do not tile the file"));
        }
        cursor = cursor
            .checked_add(s.len)
            .ok_or(FormatError::OutOfRange("segment length"))?;
        segments.push(s);
    }
    if cursor != size {
        return Err(FormatError::Invalid("segments do not cover the file"));
    }
    Ok(Entry {
        path,
        kind,
        size,
        sha256,
        segments,
    })
}

fn read_segment(
    r: &mut Reader<'_>,
    data_end: u64,
    limits: &Limits,
) -> Result<Segment, FormatError> {
    let kind = match r.u8()? {
        0 => SegmentKind::Bytes,
        1 => {
            let name = r.str(limits.max_string)?;
            let dtype = r.str(limits.max_string)?;
            let rank = r.u32()?;
            if rank > limits.max_rank {
                return Err(FormatError::LimitExceeded {
                    what: "tensor rank",
                    value: u64::from(rank),
                    limit: u64::from(limits.max_rank),
                });
            }
            let shape = (0..rank).map(|_| r.u64()).collect::<Result<_, _>>()?;
            SegmentKind::Tensor(TensorInfo { name, dtype, shape })
        }
        v => {
            return Err(FormatError::Unknown {
                what: "segment kind",
                value: u64::from(v),
            });
        }
    };
    let transform = match r.u8()? {
        0 => Transform::Identity,
        v => {
            return Err(FormatError::Unknown {
                what: "segment transform",
                value: u64::from(v),
            });
        }
    };
    let offset = r.u64()?;
    let len = r.u64()?;
    let blake3 = r.array()?;
    let entropy_bits = r.f64()?;
    let n = r.count("chunk count", limits.max_chunks, CHUNK_LEN)?;
    let mut chunks = Vec::with_capacity(n);
    let mut raw_total = 0u64;
    for _ in 0..n {
        let c = Chunk {
            offset: r.u64()?,
            stored_len: r.u32()?,
            raw_len: r.u32()?,
            codec: r.u8()?,
            xxh3: r.u64()?,
        };
        if c.raw_len == 0 {
            return Err(FormatError::Invalid("empty chunk"));
        }
        if c.raw_len > limits.max_chunk_raw {
            return Err(FormatError::LimitExceeded {
                what: "chunk size",
                value: u64::from(c.raw_len),
                limit: u64::from(limits.max_chunk_raw),
            });
        }
        if c.stored_len > c.raw_len {
            return Err(FormatError::Invalid(
                "stored chunk larger than its raw size",
            ));
        }
        let end = c.offset.checked_add(u64::from(c.stored_len));
        if c.offset < PREAMBLE_LEN || end.is_none_or(|e| e > data_end) {
            return Err(FormatError::OutOfRange("chunk offset"));
        }
        raw_total += u64::from(c.raw_len);
        chunks.push(c);
    }
    if raw_total != len {
        return Err(FormatError::Invalid(
            "chunk sizes do not add up to the segment length",
        ));
    }
    Ok(Segment {
        kind,
        transform,
        offset,
        len,
        blake3,
        entropy_bits,
        chunks,
    })
}

/// A stored path must be relative, `/`-separated, without empty, `.` or `..` components.
fn check_path(path: &str) -> Result<(), FormatError> {
    let bad = path.is_empty()
        || path.contains('\\')
        || path.contains('\0')
        || path
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == ".." || c.contains(':'));
    if bad {
        return Err(FormatError::Invalid(
            "entry path is not a safe relative path",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Index {
        Index {
            root: Root::File,
            entries: vec![Entry {
                path: "dir/model.safetensors".into(),
                kind: EntryKind::Safetensors,
                size: 30,
                sha256: [7; 32],
                segments: vec![
                    Segment {
                        kind: SegmentKind::Bytes,
                        transform: Transform::Identity,
                        offset: 0,
                        len: 10,
                        blake3: [1; 32],
                        entropy_bits: 3.5,
                        chunks: vec![Chunk {
                            offset: 16,
                            stored_len: 10,
                            raw_len: 10,
                            codec: 0,
                            xxh3: 9,
                        }],
                    },
                    Segment {
                        kind: SegmentKind::Tensor(TensorInfo {
                            name: "w".into(),
                            dtype: "BF16".into(),
                            shape: vec![2, 5],
                        }),
                        transform: Transform::Identity,
                        offset: 10,
                        len: 20,
                        blake3: [2; 32],
                        entropy_bits: 100.0,
                        chunks: vec![Chunk {
                            offset: 26,
                            stored_len: 12,
                            raw_len: 20,
                            codec: 2,
                            xxh3: 1,
                        }],
                    },
                ],
            }],
        }
    }

    #[test]
    fn round_trip() {
        let idx = sample();
        let bytes = idx.to_bytes();
        assert_eq!(
            Index::from_bytes(&bytes, 38, &Limits::default()).unwrap(),
            idx
        );
    }

    #[test]
    fn rejects_out_of_range_chunks() {
        let bytes = sample().to_bytes();
        assert!(matches!(
            Index::from_bytes(&bytes, 37, &Limits::default()),
            Err(FormatError::OutOfRange(_))
        ));
    }

    #[test]
    fn rejects_bad_paths() {
        for p in ["", "/abs", "a/../b", "a//b", "./a", "c:x", "a\\b"] {
            let mut idx = sample();
            idx.entries[0].path = p.into();
            assert!(
                Index::from_bytes(&idx.to_bytes(), 38, &Limits::default()).is_err(),
                "{p}"
            );
        }
    }

    #[test]
    fn every_truncation_errors() {
        let bytes = sample().to_bytes();
        for cut in 0..bytes.len() {
            assert!(Index::from_bytes(&bytes[..cut], 38, &Limits::default()).is_err());
        }
    }

    #[test]
    fn huge_counts_do_not_allocate() {
        let mut bytes = vec![1u8];
        bytes.extend_from_slice(&u64::MAX.to_le_bytes());
        bytes.extend_from_slice(&[0; 64]);
        assert!(Index::from_bytes(&bytes, 38, &Limits::default()).is_err());
    }
}
