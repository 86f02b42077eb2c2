//! Parsing the index (§5) with every count, offset and size checked before allocating.

use super::{
    BaseRef, Chunk, Entry, EntryKind, ErrorStats, Index, Lossy, LossyMode, PackedTensor, Root,
    Segment, SegmentKind, TensorInfo, TorchView, Transform, ValueErrors, check_entry_path,
};
use crate::wire::Reader;
use crate::{FormatError, Limits, PREAMBLE_LEN};

/// Smallest encodings, used to bound counts by the bytes left (the smallest entry is a packed
/// file: path length, kind, size).
const MIN_ENTRY: usize = 4 + 1 + 8;
/// Smallest packed tensor record: name and dtype lengths, rank, len.
const MIN_MEMBER: usize = 4 + 4 + 4 + 8;
const MIN_SEGMENT: usize = 2 + 8 + 8 + 32 + 8 + 8;
const CHUNK_LEN: usize = 8 + 4 + 4 + 1 + 8;
/// Smallest torch view record: name and dtype lengths, segment, offset, rank.
const MIN_VIEW: usize = 4 + 4 + 8 + 8 + 4;

impl Index {
    /// Parses and validates an index whose data area ends at `data_end` (the index offset).
    pub fn from_bytes(bytes: &[u8], data_end: u64, limits: &Limits) -> Result<Self, FormatError> {
        let mut index = Self::parse(bytes, data_end, limits)?;
        index.check_packs()?;
        Ok(index)
    }

    fn parse(bytes: &[u8], data_end: u64, limits: &Limits) -> Result<Self, FormatError> {
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
        let index = Self { root, entries };
        index.check_entries()?;
        Ok(index)
    }
}

fn read_entry(r: &mut Reader<'_>, data_end: u64, limits: &Limits) -> Result<Entry, FormatError> {
    let path = r.str(limits.max_string)?;
    let kind = match r.u8()? {
        0 => EntryKind::Safetensors,
        1 => EntryKind::Blob,
        2 => EntryKind::SafetensorsDelta,
        3 => EntryKind::Pack,
        4 => EntryKind::Packed,
        5 => EntryKind::Torch,
        6 => EntryKind::TorchDelta,
        v => {
            return Err(FormatError::Unknown {
                what: "entry kind",
                value: u64::from(v),
            });
        }
    };
    if kind == EntryKind::Pack {
        if !path.is_empty() {
            return Err(FormatError::Invalid("a pack entry with a path"));
        }
    } else {
        check_entry_path(&path).map_err(FormatError::Invalid)?;
    }
    let size = r.u64()?;
    if kind == EntryKind::Packed {
        return Ok(Entry {
            path,
            kind,
            size,
            sha256: [0; 32],
            base: None,
            segments: Vec::new(),
            // Set by `check_packs` from the sizes of the packed files before it.
            packed: Some(0),
            views: Vec::new(),
        });
    }
    let sha256 = r.array()?;
    let base = if kind.is_delta() {
        Some(read_base(r, limits)?)
    } else {
        None
    };
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
    if base.is_none() && segments.iter().any(|s| s.transform.base().is_some()) {
        return Err(FormatError::Invalid(
            "a delta segment in an entry that has no base",
        ));
    }
    if kind == EntryKind::Pack && segments.iter().any(|s| s.kind != SegmentKind::Bytes) {
        return Err(FormatError::Invalid("a pack entry with tensor segments"));
    }
    let views = if kind.is_torch() {
        read_views(r, &segments, limits)?
    } else {
        Vec::new()
    };
    Ok(Entry {
        path,
        kind,
        size,
        sha256,
        base,
        segments,
        packed: None,
        views,
    })
}

/// The views of a torch entry (§5.2, format 1.3), each naming one of its tensor segments.
fn read_views(
    r: &mut Reader<'_>,
    segments: &[Segment],
    limits: &Limits,
) -> Result<Vec<TorchView>, FormatError> {
    let n = r.count("view count", limits.max_segments, MIN_VIEW)?;
    let mut views = Vec::with_capacity(n);
    for _ in 0..n {
        let name = r.str(limits.max_string)?;
        let dtype = r.str(limits.max_string)?;
        let segment = r.u64()?;
        let offset = r.u64()?;
        let rank = read_rank(r, limits)?;
        let mut shape = Vec::with_capacity(rank);
        for _ in 0..rank {
            shape.push(r.u64()?);
        }
        let mut stride = Vec::with_capacity(rank);
        for _ in 0..rank {
            stride.push(r.u64()?);
        }
        let is_tensor = usize::try_from(segment)
            .ok()
            .and_then(|i| segments.get(i))
            .is_some_and(|s| matches!(s.kind, SegmentKind::Tensor(_)));
        if !is_tensor {
            return Err(FormatError::Invalid(
                "a torch view that does not name a tensor segment",
            ));
        }
        views.push(TorchView {
            name,
            dtype,
            segment,
            offset,
            shape,
            stride,
        });
    }
    Ok(views)
}

/// The base of a delta entry (§5.2): its SHA-256, size and removed tensor names.
fn read_base(r: &mut Reader<'_>, limits: &Limits) -> Result<BaseRef, FormatError> {
    let sha256 = r.array()?;
    let size = r.u64()?;
    let n = r.count("removed tensor count", limits.max_segments, 4)?;
    let mut removed = Vec::with_capacity(n);
    for _ in 0..n {
        removed.push(r.str(limits.max_string)?);
    }
    Ok(BaseRef {
        sha256,
        size,
        removed,
    })
}

/// One segment (§5.3), its chunks checked against the data area and the limits.
fn read_segment(
    r: &mut Reader<'_>,
    data_end: u64,
    limits: &Limits,
) -> Result<Segment, FormatError> {
    let kind = read_segment_kind(r, limits)?;
    let transform = read_transform(r, limits)?;
    if transform != Transform::Identity && !matches!(kind, SegmentKind::Tensor(_)) {
        return Err(FormatError::Invalid(
            "a non-tensor segment with a transform",
        ));
    }
    let offset = r.u64()?;
    let len = r.u64()?;
    if let SegmentKind::Packed(members) = &kind {
        let total = members
            .iter()
            .try_fold(0u64, |a, m| a.checked_add(m.len))
            .ok_or(FormatError::OutOfRange("packed tensor length"))?;
        if total != len {
            return Err(FormatError::Invalid(
                "packed tensor sizes do not add up to the segment length",
            ));
        }
    }
    let blake3 = r.array()?;
    let entropy_bits = r.f64()?;
    let chunks = read_chunks(r, data_end, limits)?;
    let raw_total: u64 = chunks.iter().map(|c| u64::from(c.raw_len)).sum();
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

/// A segment's kind byte and what follows it: nothing, one tensor, or packed tensors.
fn read_segment_kind(r: &mut Reader<'_>, limits: &Limits) -> Result<SegmentKind, FormatError> {
    Ok(match r.u8()? {
        0 => SegmentKind::Bytes,
        1 => SegmentKind::Tensor(read_tensor_info(r, limits)?),
        2 => {
            let n = r.count("packed tensor count", limits.max_segments, MIN_MEMBER)?;
            if n == 0 {
                return Err(FormatError::Invalid("a packed segment without tensors"));
            }
            let mut members = Vec::with_capacity(n);
            for _ in 0..n {
                members.push(PackedTensor {
                    info: read_tensor_info(r, limits)?,
                    len: r.u64()?,
                });
            }
            SegmentKind::Packed(members)
        }
        v => {
            return Err(FormatError::Unknown {
                what: "segment kind",
                value: u64::from(v),
            });
        }
    })
}

/// A segment's transform byte and its parameters (§5.3).
fn read_transform(r: &mut Reader<'_>, limits: &Limits) -> Result<Transform, FormatError> {
    Ok(match r.u8()? {
        0 => Transform::Identity,
        1 => Transform::Lossy(read_lossy(r, false)?),
        4 => Transform::Lossy(read_lossy(r, true)?),
        2 => Transform::Delta {
            base: r.str(limits.max_string)?,
            unchanged: r.u64()?,
        },
        t @ (3 | 5) => {
            let base = r.str(limits.max_string)?;
            let lossy = read_lossy(r, t == 5)?;
            Transform::QuantDelta {
                base,
                lossy,
                unchanged: r.u64()?,
            }
        }
        v => {
            return Err(FormatError::Unknown {
                what: "segment transform",
                value: u64::from(v),
            });
        }
    })
}

/// A segment's chunk list (§5.4): each chunk non-empty, within the chunk limit, stored no
/// larger than raw, and inside the data area.
fn read_chunks(
    r: &mut Reader<'_>,
    data_end: u64,
    limits: &Limits,
) -> Result<Vec<Chunk>, FormatError> {
    let n = r.count("chunk count", limits.max_chunks, CHUNK_LEN)?;
    let mut chunks = Vec::with_capacity(n);
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
        chunks.push(c);
    }
    Ok(chunks)
}

fn read_tensor_info(r: &mut Reader<'_>, limits: &Limits) -> Result<TensorInfo, FormatError> {
    let name = r.str(limits.max_string)?;
    let dtype = r.str(limits.max_string)?;
    let rank = read_rank(r, limits)?;
    let shape = (0..rank).map(|_| r.u64()).collect::<Result<_, _>>()?;
    Ok(TensorInfo { name, dtype, shape })
}

/// A tensor's rank (rule 5).
fn read_rank(r: &mut Reader<'_>, limits: &Limits) -> Result<usize, FormatError> {
    let rank = r.u32()?;
    if rank > limits.max_rank {
        return Err(FormatError::LimitExceeded {
            what: "tensor rank",
            value: u64::from(rank),
            limit: u64::from(limits.max_rank),
        });
    }
    Ok(rank as usize)
}

/// A lossy record (§5.3): the 61 bytes of format 1.1, and with `extended` (transforms 4
/// and 5, format 1.4) the grid kind and the per-value errors.
fn read_lossy(r: &mut Reader<'_>, extended: bool) -> Result<Lossy, FormatError> {
    let id = r.u8()?;
    let mode = LossyMode::from_id(id).ok_or(FormatError::Unknown {
        what: "lossy mode",
        value: u64::from(id),
    })?;
    let mut l = Lossy {
        mode,
        mantissa_bits: r.u8()?,
        group_size: r.u32()?,
        step: r.f64()?,
        float_grid: false,
        error: ErrorStats {
            max_abs: r.f64()?,
            mean_abs: r.f64()?,
            rel_l2: r.f64()?,
            snr_db: r.f64()?,
            values: None,
        },
    };
    if extended {
        l.float_grid = match r.u8()? {
            0 => false,
            1 if matches!(mode, LossyMode::Int16 | LossyMode::Int32) => true,
            v => {
                return Err(FormatError::Unknown {
                    what: "lossy grid",
                    value: u64::from(v),
                });
            }
        };
        l.error.values = Some(ValueErrors {
            max_rel: r.f64()?,
            nonzero: r.u64()?,
            zeroed: r.u64()?,
        });
    }
    Ok(l)
}
