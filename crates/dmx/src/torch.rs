//! `torch.save` files (`.pt`, `.pth`, `.bin`, `.ckpt`; format 1.3, docs/FORMAT.md §5.2):
//! the file is tiled into its skeleton (zip records, pickles, padding, directory), kept as
//! bytes segments, and its storages, each a tensor segment coded by its dtype. The pickle is
//! read by `dmx_pt`'s non-executing interpreter: nothing in a file is ever run.
//!
//! A storage with exactly one view that covers it, contiguously from its start, is stored as
//! that tensor (its name and shape); any other storage is stored one-dimensional under the
//! name of its first view, and all its views are listed in the entry's view table.

use dmx_format::{SegmentKind, TensorInfo, TorchView};
use dmx_pt::{PtLayout, TensorView};

use crate::plan::{PlannedSegment, bytes_piece, value_kind};

/// First bytes of a zip file (a local file header).
const ZIP_MAGIC: &[u8] = b"PK\x03\x04";
/// First bytes of a legacy `torch.save` file: pickle protocol 2, then `LONG1` of 10 bytes
/// (the magic number 0x1950a86a20f9469cfc6c).
const LEGACY_MAGIC: &[u8] = b"\x80\x02\x8a\x0a";

/// File name endings that `torch.save` files usually have: a file so named that does not
/// scan gets a warning (any other file is only tried when its first bytes look right).
const TORCH_SUFFIXES: &[&str] = &[".pt", ".pth", ".bin", ".ckpt", ".pkl"];

/// Whether a file starting with `head` may be a `torch.save` file (zip or legacy).
pub(crate) fn looks_like_torch(head: &[u8]) -> bool {
    head.starts_with(ZIP_MAGIC) || head.starts_with(LEGACY_MAGIC)
}

/// Whether `name` has a usual `torch.save` file name ending.
pub(crate) fn has_torch_suffix(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    TORCH_SUFFIXES.iter().any(|s| lower.ends_with(s))
}

/// A `torch.save` file cut into segments, with its view table and the scan's warnings.
#[derive(Debug)]
pub(crate) struct TorchPlan {
    /// Segments tiling the file.
    pub segments: Vec<PlannedSegment>,
    /// Views into storages stored one-dimensional.
    pub views: Vec<TorchView>,
    /// What the scan did not understand (kept inert and stored verbatim).
    pub warnings: Vec<String>,
}

/// Scans `file` and plans its segments; the error says why it is not a `torch.save` file
/// that dmx reads (the caller then stores it as opaque bytes).
pub(crate) fn plan_torch(file: &[u8]) -> Result<TorchPlan, String> {
    let layout = dmx_pt::scan(file).map_err(|e| e.to_string())?;
    Ok(plan_layout(&layout, file.len() as u64))
}

/// How one storage is stored: as a tensor segment (`Some`, with its name and shape and
/// whether its views go into the view table) or as bytes (`None`).
struct StorageCoding {
    info: TensorInfo,
    listed: bool,
}

/// The segments and view table of a scanned file of `len` bytes.
pub(crate) fn plan_layout(layout: &PtLayout, len: u64) -> TorchPlan {
    let mut views_of: Vec<Vec<&TensorView>> = vec![Vec::new(); layout.storages.len()];
    for t in &layout.tensors {
        views_of[t.storage].push(t);
    }
    let names = layout.storage_names();
    let mut used: std::collections::HashSet<String> =
        layout.tensors.iter().map(|t| t.name.clone()).collect();
    let codings: Vec<Option<StorageCoding>> = layout
        .storages
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let dtype = s
                .dtype
                .filter(|d| d.is_safetensors() && !layout.big_endian)?;
            if let [only] = views_of[i].as_slice()
                && covers(only, s.numel, dtype)
            {
                return Some(StorageCoding {
                    info: TensorInfo {
                        name: only.name.clone(),
                        dtype: dtype.name().to_string(),
                        shape: only.shape.clone(),
                    },
                    listed: false,
                });
            }
            let name = match names[i] {
                Some(n) => n.to_string(),
                None => unique(format!("storage/{}", s.key), &mut used),
            };
            Some(StorageCoding {
                info: TensorInfo {
                    name,
                    dtype: dtype.name().to_string(),
                    shape: vec![s.numel],
                },
                listed: true,
            })
        })
        .collect();
    // Storages lie in file order without overlapping (`PtLayout::invariants`); the bytes
    // between them are skeleton. An empty storage becomes a zero-length tensor segment where
    // it lies, so that its (zero-element) tensors are listed too.
    let mut segments = Vec::new();
    let mut segment_of = vec![None; layout.storages.len()];
    let mut at = 0;
    for (i, s) in layout.storages.iter().enumerate() {
        let (start, n) = (s.range.start, s.range.end - s.range.start);
        if start > at {
            segments.push(bytes_piece(at, start - at));
        }
        match &codings[i] {
            Some(c) => {
                segment_of[i] = Some(segments.len() as u64);
                segments.push(PlannedSegment {
                    value: value_kind(&c.info.dtype),
                    kind: SegmentKind::Tensor(c.info.clone()),
                    offset: start,
                    len: n,
                });
            }
            None if n > 0 => segments.push(bytes_piece(start, n)),
            None => {}
        }
        at = at.max(s.range.end);
    }
    if len > at {
        segments.push(bytes_piece(at, len - at));
    }
    let views = layout
        .tensors
        .iter()
        .filter_map(|t| {
            let coding = codings[t.storage].as_ref()?;
            if !coding.listed {
                return None;
            }
            Some(TorchView {
                name: t.name.clone(),
                dtype: t.dtype.name().to_string(),
                segment: segment_of[t.storage]?,
                offset: t.offset,
                shape: t.shape.clone(),
                stride: t.stride.clone(),
            })
        })
        .collect();
    let mut warnings = layout.warnings.clone();
    if layout.big_endian {
        warnings.push("big-endian storages are stored as opaque bytes".into());
    }
    TorchPlan {
        segments,
        views,
        warnings,
    }
}

/// Whether view `t` is the whole storage of `numel` elements of `dtype`, in row-major order
/// from its first element (an empty view of an empty storage is).
fn covers(t: &TensorView, numel: u64, dtype: dmx_pt::Dtype) -> bool {
    if t.dtype != dtype || t.offset != 0 {
        return false;
    }
    let Some(n) = t.shape.iter().try_fold(1u64, |a, &d| a.checked_mul(d)) else {
        return false;
    };
    n == numel && is_contiguous(&t.shape, &t.stride)
}

/// Whether `stride` is the row-major stride of `shape` (dimensions of size 1 may have any
/// stride).
pub(crate) fn is_contiguous(shape: &[u64], stride: &[u64]) -> bool {
    let mut expect = 1u64;
    for (&d, &s) in shape.iter().zip(stride).rev() {
        if d != 1 && s != expect {
            return false;
        }
        expect = expect.saturating_mul(d);
    }
    shape.len() == stride.len()
}

/// `name`, or `name#2`, `name#3`, ... if taken; records the result as taken.
fn unique(name: String, used: &mut std::collections::HashSet<String>) -> String {
    let mut candidate = name.clone();
    let mut n = 2;
    while used.contains(&candidate) {
        candidate = format!("{name}#{n}");
        n += 1;
    }
    used.insert(candidate.clone());
    candidate
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contiguity() {
        assert!(is_contiguous(&[2, 3], &[3, 1]));
        assert!(is_contiguous(&[1, 3], &[99, 1]));
        assert!(is_contiguous(&[], &[]));
        assert!(!is_contiguous(&[2, 3], &[1, 2]));
        assert!(!is_contiguous(&[2, 3], &[3]));
    }

    #[test]
    fn sniffing() {
        assert!(looks_like_torch(b"PK\x03\x04rest"));
        assert!(looks_like_torch(b"\x80\x02\x8a\x0a\x6c\xfc"));
        assert!(!looks_like_torch(b"\x80\x04\x95"));
        assert!(has_torch_suffix("optimizer.PT"));
        assert!(has_torch_suffix("pytorch_model.bin"));
        assert!(!has_torch_suffix("model.safetensors"));
    }

    #[test]
    fn unique_names() {
        let mut used = std::collections::HashSet::from(["a".to_string()]);
        assert_eq!(unique("a".into(), &mut used), "a#2");
        assert_eq!(unique("a".into(), &mut used), "a#3");
        assert_eq!(unique("b".into(), &mut used), "b");
    }
}
