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
    /// A safetensors file stored relative to a base file ([`Entry::base`], format 1.1): its
    /// segments may use the delta transforms.
    SafetensorsDelta = 2,
    /// A pack (format 1.2): not a file of its own but the concatenated bytes of the
    /// [`EntryKind::Packed`] entries that directly follow it, stored like a blob. Its path is
    /// empty; its SHA-256 covers every packed file's size and bytes (docs/FORMAT.md §5.2).
    Pack = 3,
    /// A small file whose bytes are `[offset, offset + size)` of the preceding
    /// [`EntryKind::Pack`] entry (offset in [`Entry::packed`], format 1.2): the packed files
    /// after a pack tile it in order. It has no segments and no SHA-256 of its own.
    Packed = 4,
}

/// The base a delta entry was made from (format 1.1).
#[derive(Debug, Clone, PartialEq)]
pub struct BaseRef {
    /// SHA-256 of the base file (a delta must be applied to exactly this file).
    pub sha256: [u8; 32],
    /// Size of the base file in bytes.
    pub size: u64,
    /// Tensors of the base that the target no longer has (recorded, not restored).
    pub removed: Vec<String>,
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
    /// SHA-256 of the file this entry restores (the original file, for lossless entries).
    pub sha256: [u8; 32],
    /// The base of a [`EntryKind::SafetensorsDelta`] entry; `None` for every other kind.
    pub base: Option<BaseRef>,
    /// Segments tiling `0..size` in order (none for a [`EntryKind::Packed`] entry).
    pub segments: Vec<Segment>,
    /// For a [`EntryKind::Packed`] entry, the offset of its bytes in its pack (not stored:
    /// computed when the index is parsed); `None` for every other kind.
    pub packed: Option<u64>,
}

/// What a segment's bytes are.
#[derive(Debug, Clone, PartialEq)]
pub enum SegmentKind {
    /// Opaque bytes: a safetensors header or a whole non-tensor file.
    Bytes,
    /// A tensor's data.
    Tensor(TensorInfo),
    /// The data of consecutive small tensors, in this order, one after the other (format
    /// 1.2): one chunk list and one BLAKE3 for all of them.
    Packed(Vec<PackedTensor>),
}

/// One tensor of a [`SegmentKind::Packed`] segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackedTensor {
    /// Name, dtype and shape.
    pub info: TensorInfo,
    /// Length of its data in bytes; members follow one another from the segment's start.
    pub len: u64,
}

impl SegmentKind {
    /// The tensors this segment holds, with each one's offset from the segment's start and
    /// length (none for a bytes segment).
    pub fn tensors(&self, segment_len: u64) -> Vec<(&TensorInfo, u64, u64)> {
        match self {
            Self::Bytes => Vec::new(),
            Self::Tensor(t) => vec![(t, 0, segment_len)],
            Self::Packed(members) => {
                let mut at = 0u64;
                members
                    .iter()
                    .map(|m| {
                        let start = at;
                        at = at.saturating_add(m.len);
                        (&m.info, start, m.len)
                    })
                    .collect()
            }
        }
    }

    /// A short description for messages: `tensor "name"`, `N packed tensors from "first"`,
    /// or `bytes at offset N` (given the segment offset).
    pub fn describe(&self, offset: u64) -> String {
        match self {
            Self::Tensor(t) => format!("tensor {:?}", t.name),
            Self::Packed(m) => format!(
                "{} packed tensors from {:?}",
                m.len(),
                m.first().map_or("", |t| t.info.name.as_str())
            ),
            Self::Bytes => format!("bytes at offset {offset}"),
        }
    }
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
#[derive(Debug, Clone, PartialEq)]
pub enum Transform {
    /// The decoded chunks are the original bytes (lossless).
    Identity,
    /// The decoded chunks approximate the original bytes (format 1.1); the segment's BLAKE3
    /// is that of the decoded bytes.
    Lossy(Lossy),
    /// Lossless, relative to the base's tensor `base` (format 1.1): chunks may use delta
    /// codecs, which read the same byte range of that tensor.
    Delta {
        /// Name of the base tensor (same dtype and shape).
        base: String,
        /// Number of values bit-identical to the base's.
        unchanged: u64,
    },
    /// Quantized on a grid, relative to the base's tensor `base` (format 1.1).
    QuantDelta {
        /// Name of the base tensor (same dtype and shape).
        base: String,
        /// The grid and the error measured when it was stored.
        lossy: Lossy,
        /// Number of values whose grid integer equals the base's.
        unchanged: u64,
    },
}

impl Transform {
    /// The stored transform id.
    pub fn id(&self) -> u8 {
        match self {
            Self::Identity => 0,
            Self::Lossy(_) => 1,
            Self::Delta { .. } => 2,
            Self::QuantDelta { .. } => 3,
        }
    }

    /// Whether decoded bytes equal the original bytes.
    pub fn is_lossless(&self) -> bool {
        matches!(self, Self::Identity | Self::Delta { .. })
    }

    /// The base tensor name of a delta transform.
    pub fn base(&self) -> Option<&str> {
        match self {
            Self::Delta { base, .. } | Self::QuantDelta { base, .. } => Some(base),
            _ => None,
        }
    }

    /// The number of unchanged values of a delta transform.
    pub fn unchanged(&self) -> Option<u64> {
        match self {
            Self::Delta { unchanged, .. } | Self::QuantDelta { unchanged, .. } => Some(*unchanged),
            _ => None,
        }
    }

    /// The lossy parameters, if any.
    pub fn lossy(&self) -> Option<&Lossy> {
        match self {
            Self::Lossy(l) | Self::QuantDelta { lossy: l, .. } => Some(l),
            _ => None,
        }
    }
}

/// Which lossy encoding a segment uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LossyMode {
    /// Block floating point (codec 4).
    Bfp = 1,
    /// Aligned integer quantization on a 16-bit grid (codec 5).
    Int16 = 2,
    /// Aligned integer quantization on a 32-bit grid (codec 5).
    Int32 = 3,
    /// Rounded to bfloat16, coded losslessly, restored in the original dtype (codec 8).
    CastBf16 = 4,
    /// Rounded to IEEE half, coded losslessly, restored in the original dtype (codec 8).
    CastF16 = 5,
}

impl LossyMode {
    /// Parses a stored mode id.
    pub fn from_id(id: u8) -> Option<Self> {
        Some(match id {
            1 => Self::Bfp,
            2 => Self::Int16,
            3 => Self::Int32,
            4 => Self::CastBf16,
            5 => Self::CastF16,
            _ => return None,
        })
    }

    /// A short lowercase name for reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::Bfp => "bfp",
            Self::Int16 => "int16",
            Self::Int32 => "int32",
            Self::CastBf16 => "cast-bf16",
            Self::CastF16 => "cast-f16",
        }
    }
}

/// Parameters of a lossy segment and the error measured against the original when it was
/// stored.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Lossy {
    /// Encoding.
    pub mode: LossyMode,
    /// BFP magnitude bits (0 for other modes).
    pub mantissa_bits: u8,
    /// BFP group size in values (0 for other modes).
    pub group_size: u32,
    /// Grid step of integer modes (0 for other modes).
    pub step: f64,
    /// Error of the decoded values against the original.
    pub error: ErrorStats,
}

/// Error of decoded values against the original ones (finite values; NaN and ±Inf are always
/// stored exactly).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ErrorStats {
    /// Largest absolute error.
    pub max_abs: f64,
    /// Mean absolute error.
    pub mean_abs: f64,
    /// ‖x − x̂‖₂ / ‖x‖₂ (0 when both are zero).
    pub rel_l2: f64,
    /// Signal-to-noise ratio in dB, 10·log10(‖x‖² / ‖x − x̂‖²) (+Inf when exact).
    pub snr_db: f64,
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

/// Smallest encodings, used to bound counts by the bytes left (the smallest entry is a packed
/// file: path length, kind, size).
const MIN_ENTRY: usize = 4 + 1 + 8;
/// Smallest packed tensor record: name and dtype lengths, rank, len.
const MIN_MEMBER: usize = 4 + 4 + 4 + 8;
/// Largest pack entry (§5.5 rule 17): a reader holds one pack in memory.
pub const MAX_PACK: u64 = 64 << 20;
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
            if e.kind == EntryKind::Packed {
                // Its offset is implied: packed files tile their pack in order.
                continue;
            }
            w.bytes(&e.sha256);
            if let Some(b) = &e.base {
                w.bytes(&b.sha256);
                w.u64(b.size);
                w.u64(b.removed.len() as u64);
                for r in &b.removed {
                    w.str(r);
                }
            }
            w.u64(e.segments.len() as u64);
            for s in &e.segments {
                match &s.kind {
                    SegmentKind::Bytes => w.u8(0),
                    SegmentKind::Tensor(t) => {
                        w.u8(1);
                        write_tensor_info(&mut w, t);
                    }
                    SegmentKind::Packed(members) => {
                        w.u8(2);
                        w.u64(members.len() as u64);
                        for m in members {
                            write_tensor_info(&mut w, &m.info);
                            w.u64(m.len);
                        }
                    }
                }
                w.u8(s.transform.id());
                if let Some(base) = s.transform.base() {
                    w.str(base);
                }
                if let Some(l) = s.transform.lossy() {
                    w.u8(l.mode as u8);
                    w.u8(l.mantissa_bits);
                    w.u32(l.group_size);
                    w.f64(l.step);
                    w.f64(l.error.max_abs);
                    w.f64(l.error.mean_abs);
                    w.f64(l.error.rel_l2);
                    w.f64(l.error.snr_db);
                }
                if let Some(u) = s.transform.unchanged() {
                    w.u64(u);
                }
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
        let mut index = Self::parse(bytes, data_end, limits)?;
        index.check_packs()?;
        Ok(index)
    }

    /// Rules 17 and 18 (format 1.2): packs belong to folders and are bounded; the packed
    /// files right after a pack tile it exactly, in order, which gives each its offset.
    fn check_packs(&mut self) -> Result<(), FormatError> {
        let root = self.root;
        // (size of the current pack, bytes of it covered so far)
        let mut pack: Option<(u64, u64)> = None;
        for e in &mut self.entries {
            match e.kind {
                EntryKind::Packed => {
                    let (size, at) =
                        pack.ok_or(FormatError::Invalid("a packed file without a pack"))?;
                    let end = at
                        .checked_add(e.size)
                        .filter(|&end| end <= size)
                        .ok_or(FormatError::Invalid("packed files do not tile their pack"))?;
                    e.packed = Some(at);
                    pack = Some((size, end));
                    continue;
                }
                _ if pack.is_some_and(|(size, at)| at != size) => {
                    return Err(FormatError::Invalid("packed files do not tile their pack"));
                }
                EntryKind::Pack => {
                    if root != Root::Directory {
                        return Err(FormatError::Invalid("a pack in a single-file archive"));
                    }
                    if e.size > MAX_PACK {
                        return Err(FormatError::LimitExceeded {
                            what: "pack size",
                            value: e.size,
                            limit: MAX_PACK,
                        });
                    }
                    pack = Some((e.size, 0));
                }
                _ => pack = None,
            }
        }
        if pack.is_some_and(|(size, at)| at != size) {
            return Err(FormatError::Invalid("packed files do not tile their pack"));
        }
        Ok(())
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
        let mut paths: Vec<&str> = entries
            .iter()
            .filter(|e| e.kind != EntryKind::Pack)
            .map(|e| e.path.as_str())
            .collect();
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
    let kind = match r.u8()? {
        0 => EntryKind::Safetensors,
        1 => EntryKind::Blob,
        2 => EntryKind::SafetensorsDelta,
        3 => EntryKind::Pack,
        4 => EntryKind::Packed,
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
        });
    }
    let sha256 = r.array()?;
    let base = if kind == EntryKind::SafetensorsDelta {
        let sha256 = r.array()?;
        let size = r.u64()?;
        let n = r.count("removed tensor count", limits.max_segments, 4)?;
        let mut removed = Vec::with_capacity(n);
        for _ in 0..n {
            removed.push(r.str(limits.max_string)?);
        }
        Some(BaseRef {
            sha256,
            size,
            removed,
        })
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
    Ok(Entry {
        path,
        kind,
        size,
        sha256,
        base,
        segments,
        packed: None,
    })
}

fn read_segment(
    r: &mut Reader<'_>,
    data_end: u64,
    limits: &Limits,
) -> Result<Segment, FormatError> {
    let kind = match r.u8()? {
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
    };
    let transform = match r.u8()? {
        0 => Transform::Identity,
        1 => Transform::Lossy(read_lossy(r)?),
        2 => Transform::Delta {
            base: r.str(limits.max_string)?,
            unchanged: r.u64()?,
        },
        3 => {
            let base = r.str(limits.max_string)?;
            let lossy = read_lossy(r)?;
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
    };
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

fn write_tensor_info(w: &mut Writer, t: &TensorInfo) {
    w.str(&t.name);
    w.str(&t.dtype);
    w.u32(t.shape.len() as u32);
    for &d in &t.shape {
        w.u64(d);
    }
}

fn read_tensor_info(r: &mut Reader<'_>, limits: &Limits) -> Result<TensorInfo, FormatError> {
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
    Ok(TensorInfo { name, dtype, shape })
}

fn read_lossy(r: &mut Reader<'_>) -> Result<Lossy, FormatError> {
    let id = r.u8()?;
    let mode = LossyMode::from_id(id).ok_or(FormatError::Unknown {
        what: "lossy mode",
        value: u64::from(id),
    })?;
    Ok(Lossy {
        mode,
        mantissa_bits: r.u8()?,
        group_size: r.u32()?,
        step: r.f64()?,
        error: ErrorStats {
            max_abs: r.f64()?,
            mean_abs: r.f64()?,
            rel_l2: r.f64()?,
            snr_db: r.f64()?,
        },
    })
}

impl Index {
    /// The lowest minor version of format 1 that can hold this index: 2 when it uses packs
    /// or packed tensors, 1 when it uses lossy or delta features, else 0.
    pub fn min_minor(&self) -> u16 {
        let packed = self.entries.iter().any(|e| {
            matches!(e.kind, EntryKind::Pack | EntryKind::Packed)
                || e.segments
                    .iter()
                    .any(|s| matches!(s.kind, SegmentKind::Packed(_)))
        });
        if packed {
            return 2;
        }
        let new = self.entries.iter().any(|e| {
            e.base.is_some()
                || e.segments
                    .iter()
                    .any(|s| s.transform != Transform::Identity)
        });
        u16::from(new)
    }
}

/// Checks a stored entry path (§5.5 rule 6): relative, `/`-separated, without NUL and
/// without empty, `.` or `..` components, so that restoring it can never write outside the
/// destination folder. Any other character, `:` and `\` included, is a valid part of a name
/// on Unix. On Windows, where `\` is a separator and `:` starts a drive or stream name, such
/// paths are refused too. The error says why.
pub fn check_entry_path(path: &str) -> Result<(), &'static str> {
    if path.is_empty() {
        return Err("entry path is empty");
    }
    if path.contains('\0') {
        return Err("entry path contains NUL");
    }
    if path
        .split('/')
        .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err("entry path is not a safe relative path");
    }
    if cfg!(windows) && (path.contains('\\') || path.contains(':')) {
        return Err("entry path holds `\\` or `:`, which cannot be restored safely on Windows");
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
                base: None,
                packed: None,
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
    fn round_trip_of_lossy_and_delta_features() {
        let mut idx = sample();
        assert_eq!(idx.min_minor(), 0);
        let lossy = Lossy {
            mode: LossyMode::Int16,
            mantissa_bits: 0,
            group_size: 0,
            step: 0.25,
            error: ErrorStats {
                max_abs: 0.1,
                mean_abs: 0.05,
                rel_l2: 0.01,
                snr_db: f64::INFINITY,
            },
        };
        idx.entries[0].kind = EntryKind::SafetensorsDelta;
        idx.entries[0].base = Some(BaseRef {
            sha256: [3; 32],
            size: 99,
            removed: vec!["gone".into()],
        });
        idx.entries[0].segments[1].transform = Transform::QuantDelta {
            base: "w".into(),
            lossy,
            unchanged: 4,
        };
        assert_eq!(idx.min_minor(), 1);
        let bytes = idx.to_bytes();
        assert_eq!(
            Index::from_bytes(&bytes, 38, &Limits::default()).unwrap(),
            idx
        );
        for cut in 0..bytes.len() {
            assert!(Index::from_bytes(&bytes[..cut], 38, &Limits::default()).is_err());
        }
        idx.entries[0].segments[1].transform = Transform::Lossy(lossy);
        let bytes = idx.to_bytes();
        assert_eq!(
            Index::from_bytes(&bytes, 38, &Limits::default()).unwrap(),
            idx
        );
        // A delta segment needs a base; a header segment takes no transform.
        idx.entries[0].kind = EntryKind::Safetensors;
        idx.entries[0].base = None;
        idx.entries[0].segments[1].transform = Transform::Delta {
            base: "w".into(),
            unchanged: 0,
        };
        assert!(Index::from_bytes(&idx.to_bytes(), 38, &Limits::default()).is_err());
        let mut idx = sample();
        idx.entries[0].segments[0].transform = Transform::Lossy(lossy);
        assert!(Index::from_bytes(&idx.to_bytes(), 38, &Limits::default()).is_err());
    }

    #[test]
    fn rejects_out_of_range_chunks() {
        let bytes = sample().to_bytes();
        assert!(matches!(
            Index::from_bytes(&bytes, 37, &Limits::default()),
            Err(FormatError::OutOfRange(_))
        ));
    }

    /// Format 1.2: a packed tensor segment and a pack followed by the files it holds.
    fn packed_sample() -> Index {
        let mut idx = sample();
        idx.root = Root::Directory;
        let seg = &mut idx.entries[0].segments[1];
        seg.kind = SegmentKind::Packed(vec![
            PackedTensor {
                info: TensorInfo {
                    name: "a".into(),
                    dtype: "F32".into(),
                    shape: vec![3],
                },
                len: 12,
            },
            PackedTensor {
                info: TensorInfo {
                    name: "b".into(),
                    dtype: "U8".into(),
                    shape: vec![2, 4],
                },
                len: 8,
            },
        ]);
        let mut pack = idx.entries[0].clone();
        pack.path = String::new();
        pack.kind = EntryKind::Pack;
        pack.segments.truncate(1);
        pack.size = 10;
        let file = |path: &str, size: u64, at: u64| Entry {
            path: path.into(),
            kind: EntryKind::Packed,
            size,
            sha256: [0; 32],
            base: None,
            segments: vec![],
            packed: Some(at),
        };
        idx.entries.splice(
            0..0,
            [pack, file("x:1", 4, 0), file("y\\z", 0, 4), file("w", 6, 4)],
        );
        idx
    }

    #[test]
    fn round_trip_of_packs_and_packed_tensors() {
        let idx = packed_sample();
        assert_eq!(idx.min_minor(), 2);
        let bytes = idx.to_bytes();
        assert_eq!(
            Index::from_bytes(&bytes, 38, &Limits::default()).unwrap(),
            idx
        );
        for cut in 0..bytes.len() {
            assert!(Index::from_bytes(&bytes[..cut], 38, &Limits::default()).is_err());
        }
        let tensors = idx.entries[4].segments[1].kind.tensors(20);
        assert_eq!(
            tensors.iter().map(|t| (t.1, t.2)).collect::<Vec<_>>(),
            [(0, 12), (12, 8)]
        );
        // Files that do not tile their pack, a pack in a single-file archive, member sizes
        // that do not add up, a pack with a path: all refused.
        let mut bad = packed_sample();
        bad.entries[1].size = 5;
        assert!(Index::from_bytes(&bad.to_bytes(), 38, &Limits::default()).is_err());
        let mut bad = packed_sample();
        bad.entries.remove(3);
        assert!(Index::from_bytes(&bad.to_bytes(), 38, &Limits::default()).is_err());
        let mut bad = packed_sample();
        bad.entries.remove(0);
        assert!(Index::from_bytes(&bad.to_bytes(), 38, &Limits::default()).is_err());
        let mut bad = packed_sample();
        bad.entries[0].path = "p".into();
        assert!(Index::from_bytes(&bad.to_bytes(), 38, &Limits::default()).is_err());
        let mut bad = packed_sample();
        if let SegmentKind::Packed(m) = &mut bad.entries[4].segments[1].kind {
            m[1].len = 9;
        }
        assert!(Index::from_bytes(&bad.to_bytes(), 38, &Limits::default()).is_err());
        let mut bad = sample();
        bad.entries.insert(0, packed_sample().entries[0].clone());
        bad.entries[1].path = "other".into();
        assert!(Index::from_bytes(&bad.to_bytes(), 38, &Limits::default()).is_err());
    }

    #[test]
    fn names_with_colons_and_backslashes_are_stored() {
        for p in [
            "ckpt-2024-01-01T12:00:00.safetensors",
            "a\\b",
            "c:x",
            "dir/a:b",
        ] {
            let mut idx = sample();
            idx.entries[0].path = p.into();
            let parsed = Index::from_bytes(&idx.to_bytes(), 38, &Limits::default());
            assert_eq!(parsed.is_ok(), !cfg!(windows), "{p}");
        }
    }

    #[test]
    fn rejects_bad_paths() {
        for p in ["", "/abs", "a/../b", "a//b", "./a", "a/", "a\0b", ".."] {
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
