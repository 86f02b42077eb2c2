//! Reads the files written by `dmx-compress`, the Python tool that dmx replaces (versions
//! 0.4 to 1.5): `.dmx` containers v2 ("DMX1") and v3 (the "DMX\0" provenance envelope around
//! a "DMX1" container), lossy `.dmxd` deltas ("DMXD"), lossless `.dmxd` deltas ("DMX\0"
//! envelope around "DMXL" records) and chain manifests (`chain_manifest.json`, version 2).
//!
//! Pure reading, from bytes in memory: [`detect`] names the kind of a file from its first
//! bytes; [`Container::parse`] and [`DeltaFile::parse`] check the structure; decoding gives
//! [`Tensor`]s exactly as the old tool's own `decompress` / `delta-reconstruct` produce them
//! (dtype, shape, bytes). The old files carry no checksums, so every length and offset is
//! bounded by the file and by [`Limits`] before use; hostile input gives an [`Error`], never
//! a panic.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod bfp;
pub mod chain;
mod container;
mod convert;
mod delta;
mod entropy;
mod error;
mod json;

pub use chain::{ChainEntry, ChainManifest};
pub use container::{Container, TensorMeta};
pub use delta::{BaseTensor, DeltaFile, DeltaKind};
pub use error::{Error, Result};

/// The kinds of file the old tool writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LegacyKind {
    /// `.dmx` format v2 (dmx-compress 0.4): "DMX1" magic.
    DmxV2,
    /// `.dmx` format v3 (dmx-compress 1.2+): "DMX\0" provenance envelope, then "DMX1".
    DmxV3,
    /// Lossy quantized `.dmxd` delta: "DMXD" magic.
    DeltaLossy,
    /// Lossless `.dmxd` delta (dmx-compress 1.2+): "DMX\0" envelope, then "DMXL" records.
    DeltaLossless,
    /// A chain manifest (`chain_manifest.json`, format "dmx_chain_manifest").
    ChainManifest,
}

impl LegacyKind {
    /// A short description for messages ("format v3 .dmx", ...).
    pub fn describe(self) -> &'static str {
        match self {
            LegacyKind::DmxV2 => "format v2 .dmx",
            LegacyKind::DmxV3 => "format v3 .dmx",
            LegacyKind::DeltaLossy => "lossy .dmxd delta (DMXD)",
            LegacyKind::DeltaLossless => "lossless .dmxd delta (DMXL)",
            LegacyKind::ChainManifest => "chain manifest",
        }
    }

    /// Whether this kind is a delta (it needs its base to decode).
    pub fn is_delta(self) -> bool {
        matches!(self, LegacyKind::DeltaLossy | LegacyKind::DeltaLossless)
    }
}

/// Magic of the v2 container (and of the inner container of v3).
pub const MAGIC_DMX1: &[u8; 4] = b"DMX1";
/// Magic of the provenance envelope (v3 `.dmx` and lossless deltas).
pub const MAGIC_ENVELOPE: &[u8; 4] = b"DMX\0";
/// Magic of the lossy delta.
pub const MAGIC_DMXD: &[u8; 4] = b"DMXD";
/// Magic of one lossless delta record.
pub const MAGIC_DMXL: &[u8; 4] = b"DMXL";

/// Names the old-tool file kind of `bytes` (the whole file or at least its first few KiB),
/// or `None` when it is none of them. An envelope whose inner magic lies beyond `bytes` is
/// reported as [`LegacyKind::DeltaLossless`] unless "DMX1" follows it.
pub fn detect(bytes: &[u8]) -> Option<LegacyKind> {
    let magic = bytes.get(..4)?;
    if magic == MAGIC_DMX1 {
        return Some(LegacyKind::DmxV2);
    }
    if magic == MAGIC_DMXD {
        return Some(LegacyKind::DeltaLossy);
    }
    if magic == MAGIC_ENVELOPE {
        let len = u32::from_le_bytes(bytes.get(4..8)?.try_into().ok()?) as usize;
        let inner = 8usize.checked_add(len)?;
        return Some(match bytes.get(inner..inner.checked_add(4)?) {
            Some(m) if m == MAGIC_DMX1 => LegacyKind::DmxV3,
            _ => LegacyKind::DeltaLossless,
        });
    }
    let text = bytes.get(..bytes.len().min(4096))?;
    let start = text.iter().position(|b| !b.is_ascii_whitespace())?;
    if text[start] == b'{' && contains(text, b"\"dmx_chain_manifest\"") {
        return Some(LegacyKind::ChainManifest);
    }
    None
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Size limits applied while reading; exceeding one gives [`Error::Limit`].
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest JSON manifest or provenance block, in bytes.
    pub max_manifest_bytes: u64,
    /// Most tensors in one file.
    pub max_tensors: u64,
    /// Largest decoded tensor (and decoded entropy stream), in bytes.
    pub max_tensor_bytes: u64,
    /// Most dimensions of a tensor.
    pub max_ndim: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_manifest_bytes: 256 << 20,
            max_tensors: 1 << 20,
            max_tensor_bytes: 16 << 30,
            max_ndim: 64,
        }
    }
}

/// One decoded tensor, as the old tool's decoder returns it.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    /// Its name.
    pub name: String,
    /// Its safetensors dtype ("F32", "F16", "BF16", "I64", ...).
    pub dtype: &'static str,
    /// Its shape.
    pub shape: Vec<u64>,
    /// Little-endian elements in C order.
    pub data: Vec<u8>,
}

/// The safetensors dtype and element size of a torch dtype name as the old tool writes it
/// ("float32", "bfloat16", "int64", "bool", ...).
pub fn torch_dtype(name: &str) -> Option<(&'static str, usize)> {
    Some(match name {
        "float64" => ("F64", 8),
        "float32" => ("F32", 4),
        "float16" => ("F16", 2),
        "bfloat16" => ("BF16", 2),
        "int64" => ("I64", 8),
        "int32" => ("I32", 4),
        "int16" => ("I16", 2),
        "int8" => ("I8", 1),
        "uint64" => ("U64", 8),
        "uint32" => ("U32", 4),
        "uint16" => ("U16", 2),
        "uint8" => ("U8", 1),
        "bool" => ("BOOL", 1),
        _ => return None,
    })
}

/// Element count of `shape`, checked against overflow and `max_bytes` for `item` bytes each.
pub(crate) fn checked_numel(shape: &[u64], item: usize, limits: &Limits) -> Result<usize> {
    if shape.len() > limits.max_ndim {
        return Err(Error::Limit(format!(
            "{} dimensions (at most {})",
            shape.len(),
            limits.max_ndim
        )));
    }
    let numel = shape.iter().try_fold(1u64, |a, &d| a.checked_mul(d));
    let bytes = numel.and_then(|n| n.checked_mul(item as u64));
    match (numel, bytes) {
        (Some(n), Some(b)) if b <= limits.max_tensor_bytes => {
            usize::try_from(n).map_err(|_| Error::Limit(format!("shape {shape:?}")))
        }
        _ => Err(Error::Limit(format!(
            "shape {shape:?} exceeds {} bytes",
            limits.max_tensor_bytes
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_each_magic() {
        assert_eq!(detect(b"DMX1\x02\0\0\0"), Some(LegacyKind::DmxV2));
        assert_eq!(detect(b"DMXD\x01\0\0\0"), Some(LegacyKind::DeltaLossy));
        assert_eq!(detect(b"DMX\0\x02\0\0\0{}DMX1"), Some(LegacyKind::DmxV3));
        assert_eq!(
            detect(b"DMX\0\x02\0\0\0{}\x01\0\0\0"),
            Some(LegacyKind::DeltaLossless)
        );
        assert_eq!(
            detect(b" {\"format\": \"dmx_chain_manifest\"}"),
            Some(LegacyKind::ChainManifest)
        );
        assert_eq!(
            detect(b"DMX\0\xff\xff\xff\xff"),
            Some(LegacyKind::DeltaLossless)
        );
        assert_eq!(detect(b"{\"a\":1}"), None);
        assert_eq!(detect(b"DM"), None);
        assert_eq!(detect(b"\x89DMX"), None);
    }

    #[test]
    fn numel_is_bounded() {
        let l = Limits::default();
        assert_eq!(checked_numel(&[2, 3], 4, &l).unwrap(), 6);
        assert!(checked_numel(&[u64::MAX, 2], 1, &l).is_err());
        assert!(checked_numel(&[1 << 40], 4, &l).is_err());
        assert!(checked_numel(&[1; 65], 1, &l).is_err());
    }
}
