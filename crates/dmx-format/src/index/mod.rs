//! The archive index (§5): entries (files), their segments (header bytes or tensors) and the
//! chunks each segment is cut into.

mod read;
#[cfg(test)]
mod tests;
mod validate;
mod write;

pub use validate::check_entry_path;

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
    /// A `torch.save` file (format 1.3): its skeleton (zip records, pickles) as bytes
    /// segments, each storage as a tensor segment coded by its dtype; [`Entry::views`] lists
    /// the tensors that are views into storages (docs/FORMAT.md §5.2).
    Torch = 5,
    /// A `torch.save` file stored relative to a base file ([`Entry::base`], format 1.3): a
    /// [`EntryKind::Torch`] entry whose segments may use the delta transforms.
    TorchDelta = 6,
}

impl EntryKind {
    /// Whether the entry is stored relative to a base file (kinds 2 and 6).
    pub fn is_delta(self) -> bool {
        matches!(self, Self::SafetensorsDelta | Self::TorchDelta)
    }

    /// Whether the entry is a `torch.save` file (kinds 5 and 6).
    pub fn is_torch(self) -> bool {
        matches!(self, Self::Torch | Self::TorchDelta)
    }

    /// Whether the entry's tensor segments are tensors of a checkpoint (kinds 0, 2, 5, 6):
    /// what deltas, chains, `diff` and `extract` work on.
    pub fn has_tensors(self) -> bool {
        matches!(
            self,
            Self::Safetensors | Self::SafetensorsDelta | Self::Torch | Self::TorchDelta
        )
    }

    /// The delta kind of a file kind (and the kind itself for a delta kind); `None` for
    /// kinds that have no delta form.
    pub fn delta(self) -> Option<Self> {
        match self {
            Self::Safetensors | Self::SafetensorsDelta => Some(Self::SafetensorsDelta),
            Self::Torch | Self::TorchDelta => Some(Self::TorchDelta),
            _ => None,
        }
    }

    /// The standalone kind of a delta kind (and the kind itself otherwise).
    pub fn standalone(self) -> Self {
        match self {
            Self::SafetensorsDelta => Self::Safetensors,
            Self::TorchDelta => Self::Torch,
            k => k,
        }
    }

    /// A short lowercase name for reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::Safetensors => "safetensors",
            Self::Blob => "blob",
            Self::SafetensorsDelta => "safetensors-delta",
            Self::Pack | Self::Packed => "packed",
            Self::Torch => "torch",
            Self::TorchDelta => "torch-delta",
        }
    }
}

/// A tensor of a `torch.save` file that is a view into a storage (format 1.3): any part of it,
/// with an offset and strides, possibly one of several views of the same storage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TorchView {
    /// Name path in the checkpoint (`state.3.exp_avg`, `model.layer.0.weight`).
    pub name: String,
    /// Safetensors dtype string of the view's elements.
    pub dtype: String,
    /// Index, within the entry's segments, of the tensor segment holding its storage.
    pub segment: u64,
    /// Offset of the first element in the storage, in elements of `dtype`.
    pub offset: u64,
    /// Shape, outermost first.
    pub shape: Vec<u64>,
    /// Stride of each dimension, in elements (same rank as `shape`).
    pub stride: Vec<u64>,
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
    /// The base of a delta entry ([`EntryKind::is_delta`]); `None` for every other kind.
    pub base: Option<BaseRef>,
    /// Segments tiling `0..size` in order (none for a [`EntryKind::Packed`] entry).
    pub segments: Vec<Segment>,
    /// For a [`EntryKind::Packed`] entry, the offset of its bytes in its pack (not stored:
    /// computed when the index is parsed); `None` for every other kind.
    pub packed: Option<u64>,
    /// The views of a `torch.save` entry ([`EntryKind::is_torch`], format 1.3); empty for
    /// every other kind. A tensor segment that some view names is a storage, whose tensors
    /// are its views; every other tensor segment is one tensor.
    pub views: Vec<TorchView>,
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
            Self::Lossy(l) if Self::extended(l) => 4,
            Self::Lossy(_) => 1,
            Self::Delta { .. } => 2,
            Self::QuantDelta { lossy, .. } if Self::extended(lossy) => 5,
            Self::QuantDelta { .. } => 3,
        }
    }

    /// Whether the lossy record is the extended one of format 1.4 (transforms 4 and 5): it
    /// has per-value errors or a floating grid.
    fn extended(l: &Lossy) -> bool {
        l.float_grid || l.error.values.is_some()
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
    /// Grid step of integer modes on a linear grid (0 for other modes and the floating grid).
    pub step: f64,
    /// Integer modes (format 1.4): the values are on the floating grid of codec 9, with
    /// [`Lossy::mantissa_bits`] fraction bits, instead of a linear grid of [`Lossy::step`].
    pub float_grid: bool,
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
    /// Per-value errors (format 1.4; `None` in records written before).
    pub values: Option<ValueErrors>,
}

/// Per-value errors of a lossy segment (format 1.4): what the norms of [`ErrorStats`] hide
/// when values span many binades.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ValueErrors {
    /// Largest `|x − x̂| / |x|` over the finite non-zero original values (0 when none).
    pub max_rel: f64,
    /// Finite non-zero original values.
    pub nonzero: u64,
    /// Of those, the values restored as zero.
    pub zeroed: u64,
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

/// Largest pack entry (§5.5 rule 17): a reader holds one pack in memory.
pub const MAX_PACK: u64 = 64 << 20;

impl Index {
    /// The lowest minor version of format 1 that can hold this index: 10 when a chunk uses
    /// the row-relative rANS float codec (17), 9 when one uses the column-relative float codec
    /// (16), 8 when one uses the row-class integer codec (15), 7 when one uses the previous-value codecs (13, BFP,
    /// and 14, integers), 6 when one uses the rANS float codec (12), 5 when one uses the
    /// split-stream float codecs (10 and 11),
    /// 4 when it holds the extended lossy records
    /// (transforms 4 and 5), 3 when it holds `torch.save` entries, 2 when it uses packs or
    /// packed tensors, 1 when it uses lossy or delta features, else 0.
    pub fn min_minor(&self) -> u16 {
        let top_codec = self
            .entries
            .iter()
            .flat_map(|e| &e.segments)
            .flat_map(|s| &s.chunks)
            .map(|c| c.codec)
            .max()
            .unwrap_or(0);
        if top_codec >= 17 {
            return 10;
        }
        if top_codec >= 16 {
            return 9;
        }
        if top_codec >= 15 {
            return 8;
        }
        if top_codec >= 13 {
            return 7;
        }
        if top_codec >= 12 {
            return 6;
        }
        if top_codec >= 10 {
            return 5;
        }
        if self
            .entries
            .iter()
            .flat_map(|e| &e.segments)
            .any(|s| s.transform.id() >= 4)
        {
            return 4;
        }
        if self.entries.iter().any(|e| e.kind.is_torch()) {
            return 3;
        }
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
