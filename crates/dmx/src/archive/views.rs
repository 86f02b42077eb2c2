//! The tensors of `torch.save` entries (format 1.3) that are views into storages: which
//! segments they replace in listings, the rules they must meet at open, and gathering a
//! view's elements (offset and strides, any rank) into contiguous bytes.

use std::collections::BTreeMap;

use dmx_format::{Entry, SegmentKind, TensorInfo, TorchView};

use crate::plan::dtype_bits;

/// The views of one entry: their names, dtypes and shapes as [`TensorInfo`]s (parallel to
/// [`Entry::views`]) and, per storage segment, the views into it in table order.
#[derive(Debug, Default)]
pub(crate) struct ViewTable {
    /// One per view of the entry, in table order.
    pub infos: Vec<TensorInfo>,
    /// Segment index → indices of its views.
    pub by_segment: BTreeMap<usize, Vec<usize>>,
}

impl ViewTable {
    /// The table of `entry` (empty for an entry that is not a `torch.save` file).
    pub fn of(entry: &Entry) -> Self {
        if !entry.kind.is_torch() {
            return Self::default();
        }
        let mut table = Self::default();
        for (i, v) in entry.views.iter().enumerate() {
            table.infos.push(TensorInfo {
                name: v.name.clone(),
                dtype: v.dtype.clone(),
                shape: v.shape.clone(),
            });
            // The index parser guarantees the segment exists (it names a tensor segment).
            table
                .by_segment
                .entry(v.segment as usize)
                .or_default()
                .push(i);
        }
        table
    }

    /// The views into segment `s`, if it is a storage some view names.
    pub fn of_segment(&self, s: usize) -> Option<&[usize]> {
        self.by_segment.get(&s).map(Vec::as_slice)
    }
}

/// Bytes per element of a view's dtype (`None` for unknown or sub-byte dtypes, which no
/// `torch.save` view has).
pub(crate) fn elem_bytes(dtype: &str) -> Option<u64> {
    dtype_bits(dtype)
        .filter(|b| *b > 0 && b % 8 == 0)
        .map(|b| b / 8)
}

/// Number of elements of `shape` (1 for a scalar), `None` on overflow.
pub(crate) fn numel(shape: &[u64]) -> Option<u64> {
    shape.iter().try_fold(1u64, |a, &d| a.checked_mul(d))
}

/// The byte just past the last element `view` reads (0 for a view without elements), or
/// `None` when it overflows.
pub(crate) fn view_end(view: &TorchView, width: u64) -> Option<u64> {
    if view.shape.contains(&0) {
        // A zero-size tensor reads nothing, whatever its offset (as torch allows).
        return Some(0);
    }
    let mut last = view.offset;
    for (&d, &s) in view.shape.iter().zip(&view.stride) {
        last = last.checked_add((d - 1).checked_mul(s)?)?;
    }
    last.checked_add(1)?.checked_mul(width)
}

/// The rule a view of `entry` must meet (docs/FORMAT.md §5.6): a known dtype of whole
/// bytes, the same element width as its storage's (or a `U8` storage), a stride per
/// dimension, and every element inside its storage segment. The error says which failed.
pub(crate) fn check_view(entry: &Entry, view: &TorchView) -> Result<(), String> {
    let seg = usize::try_from(view.segment)
        .ok()
        .and_then(|s| entry.segments.get(s));
    let Some(SegmentKind::Tensor(storage)) = seg.map(|s| &s.kind) else {
        return Err(format!("view {:?} does not name a storage", view.name));
    };
    let seg_len = seg.map_or(0, |s| s.len);
    let Some(width) = elem_bytes(&view.dtype) else {
        return Err(format!(
            "view {:?} has an unknown dtype {:?}",
            view.name, view.dtype
        ));
    };
    if storage.dtype != "U8" && elem_bytes(&storage.dtype) != Some(width) {
        return Err(format!(
            "view {:?} ({}) does not match its storage's dtype {}",
            view.name, view.dtype, storage.dtype
        ));
    }
    if view.shape.len() != view.stride.len() {
        return Err(format!(
            "view {:?}: shape and stride differ in rank",
            view.name
        ));
    }
    if numel(&view.shape)
        .and_then(|n| n.checked_mul(width))
        .is_none()
    {
        return Err(format!("view {:?}: its size overflows", view.name));
    }
    match view_end(view, width) {
        Some(end) if end <= seg_len => Ok(()),
        _ => Err(format!("view outside its storage: {:?}", view.name)),
    }
}

/// Whether `view` reads its elements in row-major order from one contiguous byte range.
pub(crate) fn is_contiguous(view: &TorchView) -> bool {
    crate::torch::is_contiguous(&view.shape, &view.stride)
}

/// The elements of `view` (each `width` bytes) gathered from `storage` in row-major order.
/// `None` when an element lies outside `storage` (which [`check_view`] rules out).
pub(crate) fn gather(storage: &[u8], view: &TorchView, width: u64) -> Option<Vec<u8>> {
    let n = numel(&view.shape)?;
    let w = usize::try_from(width).ok()?;
    let mut out = Vec::with_capacity(usize::try_from(n.checked_mul(width)?).ok()?);
    if n == 0 {
        return Some(out);
    }
    let rank = view.shape.len();
    // Runs along the last dimension: contiguous when its stride is 1.
    let (inner, inner_stride) = match rank {
        0 => (1, 1),
        _ => (view.shape[rank - 1], view.stride[rank - 1]),
    };
    let outer = rank.saturating_sub(1);
    let mut index = vec![0u64; outer];
    loop {
        let mut at = view.offset;
        for (i, &s) in index.iter().zip(&view.stride) {
            at = at.checked_add(i.checked_mul(s)?)?;
        }
        if inner_stride == 1 {
            let start = usize::try_from(at.checked_mul(width)?).ok()?;
            let len = usize::try_from(inner).ok()?.checked_mul(w)?;
            out.extend_from_slice(storage.get(start..start.checked_add(len)?)?);
        } else {
            for k in 0..inner {
                let e = at.checked_add(k.checked_mul(inner_stride)?)?;
                let start = usize::try_from(e.checked_mul(width)?).ok()?;
                out.extend_from_slice(storage.get(start..start.checked_add(w)?)?);
            }
        }
        // Next index of the outer dimensions, last fastest.
        let mut d = outer;
        loop {
            if d == 0 {
                return Some(out);
            }
            d -= 1;
            index[d] += 1;
            if index[d] < view.shape[d] {
                break;
            }
            index[d] = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(offset: u64, shape: &[u64], stride: &[u64]) -> TorchView {
        TorchView {
            name: "v".into(),
            dtype: "U8".into(),
            segment: 0,
            offset,
            shape: shape.to_vec(),
            stride: stride.to_vec(),
        }
    }

    #[test]
    fn gathers_any_rank() {
        let s: Vec<u8> = (0..24).collect();
        assert_eq!(gather(&s, &view(3, &[], &[]), 1).unwrap(), [3]);
        assert_eq!(gather(&s, &view(0, &[0, 3], &[3, 1]), 1).unwrap(), [0u8; 0]);
        assert_eq!(
            gather(&s, &view(0, &[2, 3], &[1, 2]), 1).unwrap(),
            [0, 2, 4, 1, 3, 5]
        );
        assert_eq!(gather(&s, &view(1, &[3], &[5]), 1).unwrap(), [1, 6, 11]);
        assert_eq!(
            gather(&s, &view(2, &[2, 2, 2], &[12, 4, 1]), 1).unwrap(),
            [2, 3, 6, 7, 14, 15, 18, 19]
        );
        // Two-byte elements: offsets and strides count elements.
        assert_eq!(gather(&s, &view(1, &[2], &[3]), 2).unwrap(), [2, 3, 8, 9]);
        assert!(gather(&s, &view(20, &[5], &[1]), 1).is_none());
    }

    #[test]
    fn extents() {
        assert_eq!(view_end(&view(0, &[8, 8], &[1, 8]), 4), Some(256));
        assert_eq!(view_end(&view(3, &[13], &[5]), 4), Some(256));
        assert_eq!(view_end(&view(99, &[0, 3], &[3, 1]), 4), Some(0));
        assert_eq!(view_end(&view(5, &[], &[]), 2), Some(12));
        assert_eq!(view_end(&view(0, &[3], &[u64::MAX]), 1), None);
    }
}
