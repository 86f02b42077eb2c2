//! Serializing the index (§5): the field order here is the byte layout of FORMAT.md §5.

use super::{Chunk, Entry, EntryKind, Index, Lossy, Segment, SegmentKind, TensorInfo, TorchView};
use crate::wire::Writer;

impl Index {
    /// Serializes the index (§5).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer(Vec::new());
        w.u8(self.root as u8);
        w.u64(self.entries.len() as u64);
        for e in &self.entries {
            write_entry(&mut w, e);
        }
        w.0
    }
}

/// One entry (§5.2): path, kind and size; then, except for a packed file, whose offset is
/// implied (packed files tile their pack in order), its SHA-256, base and segments.
fn write_entry(w: &mut Writer, e: &Entry) {
    w.str(&e.path);
    w.u8(e.kind as u8);
    w.u64(e.size);
    if e.kind == EntryKind::Packed {
        return;
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
        write_segment(w, s);
    }
    if e.kind.is_torch() {
        w.u64(e.views.len() as u64);
        for v in &e.views {
            write_view(w, v);
        }
    }
}

/// One view of a torch entry (§5.2, format 1.3).
fn write_view(w: &mut Writer, v: &TorchView) {
    w.str(&v.name);
    w.str(&v.dtype);
    w.u64(v.segment);
    w.u64(v.offset);
    w.u32(v.shape.len() as u32);
    for &d in v.shape.iter().chain(&v.stride) {
        w.u64(d);
    }
}

/// One segment (§5.3): kind, transform, range, BLAKE3, entropy bound and chunks.
fn write_segment(w: &mut Writer, s: &Segment) {
    match &s.kind {
        SegmentKind::Bytes => w.u8(0),
        SegmentKind::Tensor(t) => {
            w.u8(1);
            write_tensor_info(w, t);
        }
        SegmentKind::Packed(members) => {
            w.u8(2);
            w.u64(members.len() as u64);
            for m in members {
                write_tensor_info(w, &m.info);
                w.u64(m.len);
            }
        }
    }
    w.u8(s.transform.id());
    if let Some(base) = s.transform.base() {
        w.str(base);
    }
    if let Some(l) = s.transform.lossy() {
        write_lossy(w, l, s.transform.id() >= 4);
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
        write_chunk(w, c);
    }
}

fn write_tensor_info(w: &mut Writer, t: &TensorInfo) {
    w.str(&t.name);
    w.str(&t.dtype);
    w.u32(t.shape.len() as u32);
    for &d in &t.shape {
        w.u64(d);
    }
}

/// A lossy record; `extended` (transforms 4 and 5) adds the grid kind and the per-value
/// errors (zeros when a record without them is written as extended: never by
/// [`Transform::id`](super::Transform::id)).
fn write_lossy(w: &mut Writer, l: &Lossy, extended: bool) {
    w.u8(l.mode as u8);
    w.u8(l.mantissa_bits);
    w.u32(l.group_size);
    w.f64(l.step);
    w.f64(l.error.max_abs);
    w.f64(l.error.mean_abs);
    w.f64(l.error.rel_l2);
    w.f64(l.error.snr_db);
    if extended {
        w.u8(u8::from(l.float_grid));
        let v = l.error.values.unwrap_or_default();
        w.f64(v.max_rel);
        w.u64(v.nonzero);
        w.u64(v.zeroed);
    }
}

fn write_chunk(w: &mut Writer, c: &Chunk) {
    w.u64(c.offset);
    w.u32(c.stored_len);
    w.u32(c.raw_len);
    w.u8(c.codec);
    w.u64(c.xxh3);
}
