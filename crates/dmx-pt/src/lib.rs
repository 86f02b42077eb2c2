//! Reads `torch.save` files — the zip format and the legacy (`_use_new_zipfile_serialization
//! =False`) stream — **without executing any pickle**, and reports where every storage's
//! bytes lie, their dtypes, and every tensor's name path, view offset, shape and stride.
//!
//! The pickle is run by a small interpreter of the pickle opcodes (protocols 0–5) that
//! builds inert values only. Globals are resolved against a fixed allow-list equivalent to
//! `torch.load(weights_only=True)` (tensor rebuild functions, storage classes, dtypes,
//! `OrderedDict`, `set`, `bytearray`, `torch.Size`, ...); anything else — `os.system`,
//! `builtins.eval`, a trainer's own classes — becomes an inert "unknown global" value, and
//! calling it (REDUCE, NEWOBJ, INST, OBJ) gives an inert object. Nothing is imported, looked
//! up or run, by construction: the crate has no way to call code named by a file. Every
//! resource is bounded by [`Limits`]; see `docs/PT.md`.
//!
//! ```
//! let file = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/adamw.pt")).unwrap();
//! let layout = dmx_pt::scan(&file).unwrap();
//! let t = layout.tensors.iter().find(|t| t.name == "optimizer.state.0.exp_avg").unwrap();
//! assert_eq!(dmx_pt::component(&t.name), dmx_pt::Component::ExpAvg);
//! let s = &layout.storages[t.storage];
//! assert_eq!(s.dtype.unwrap().name(), "F32");
//! assert_eq!(s.range.end - s.range.start, s.numel * 4);
//! ```
//!
//! # Using it in the engine
//!
//! [`scan`] takes the whole file (a memory map is fine) and returns a [`PtLayout`];
//! [`PtLayout::segments`] tiles the file into skeleton ranges (zip headers, padding, the
//! pickle, the central directory — to be stored verbatim) and storage ranges (to be coded by
//! [`Storage::dtype`], or as opaque bytes when it is `None`). Rewriting the segments in order
//! restores the file byte for byte. Storages pair across two checkpoints by the name path of
//! their first view ([`PtLayout::storage_names`]), not by key: keys are object ids in the
//! legacy format. [`component`] sorts tensors into weights / `exp_avg` / `exp_avg_sq` /
//! other for `info`. A scan error means "store the file as opaque bytes"; warnings mean the
//! layout is usable but some objects stayed opaque.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod dtype;
mod error;
pub mod globals;
mod layout;
mod names;
pub mod pickle;
pub mod value;
pub mod zip;

use std::ops::Range;

pub use dtype::Dtype;
pub use error::PtError;
pub use layout::scan_with;

/// Resource limits for reading untrusted files. Memory use is bounded by roughly the file
/// size plus `max_alloc` plus `max_nodes` small nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Most zip entries.
    pub max_entries: usize,
    /// Most pickle opcodes executed (all pickles of a file together).
    pub max_ops: u64,
    /// Most values (nodes) built.
    pub max_nodes: usize,
    /// Most memo entries in one pickle.
    pub max_memo: usize,
    /// Deepest stack (and most open MARKs).
    pub max_stack: usize,
    /// Deepest nesting followed when naming tensors.
    pub max_depth: usize,
    /// Longest single string, bytes or int.
    pub max_string: u64,
    /// Bytes that strings, containers and name paths may take together.
    pub max_alloc: u64,
    /// Most storages.
    pub max_storages: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_entries: 1 << 20,
            max_ops: 1 << 27,
            max_nodes: 1 << 24,
            max_memo: 1 << 24,
            max_stack: 1 << 20,
            max_depth: 256,
            max_string: 1 << 30,
            max_alloc: 2 << 30,
            max_storages: 1 << 20,
        }
    }
}

/// Warnings collected during a scan: each distinct message once, at most 64 of them.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Warnings {
    list: Vec<String>,
    dropped: u64,
}

impl Warnings {
    /// Records `msg` unless it is already recorded or the list is full.
    pub fn add(&mut self, msg: &str) {
        if self.list.iter().any(|m| m == msg) {
            return;
        }
        if self.list.len() >= 64 {
            self.dropped += 1;
            return;
        }
        self.list.push(msg.to_owned());
    }

    /// The messages (plus a count of dropped ones, if any).
    pub fn into_vec(mut self) -> Vec<String> {
        if self.dropped > 0 {
            self.list
                .push(format!("{} more warnings not shown", self.dropped));
        }
        self.list
    }
}

/// Which `torch.save` format a file uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Format {
    /// The zip format (torch ≥ 1.6 default); `archive` is the top folder (the file's stem
    /// when saved, `archive` for buffers).
    Zip {
        /// The top folder name of every record.
        archive: String,
    },
    /// The legacy stream: magic, protocol and sys_info pickles, the object pickle, the
    /// storage-key list, then per storage an int64 element count and raw bytes.
    Legacy,
}

/// What a zip record is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordKind {
    /// `<archive>/data.pkl`.
    Pickle,
    /// `.format_version`.
    FormatVersion,
    /// `.storage_alignment`.
    StorageAlignment,
    /// `byteorder`.
    ByteOrder,
    /// `data/<key>`: a storage.
    Storage,
    /// `version`.
    Version,
    /// `.data/serialization_id`.
    SerializationId,
    /// Anything else (TorchScript code, extra files).
    Other,
}

/// One zip record with its exact byte ranges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Full entry name.
    pub name: String,
    /// What it is.
    pub kind: RecordKind,
    /// Local header, name and extra field (alignment padding).
    pub header: Range<u64>,
    /// Stored data.
    pub data: Range<u64>,
    /// Data descriptor (empty if none).
    pub descriptor: Range<u64>,
}

/// A storage: one contiguous run of raw element bytes in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Storage {
    /// Its key (`data/<key>` record in a zip; `str(id)` in the legacy format).
    pub key: String,
    /// Element type, `None` when unknown (code it as opaque bytes).
    pub dtype: Option<Dtype>,
    /// Element count (bytes / dtype size; bytes when the dtype is unknown).
    pub numel: u64,
    /// Exact byte range of the elements in the file.
    pub range: Range<u64>,
    /// Device tag from the pickle (`cpu`, `cuda:0`, ...; empty if none).
    pub location: String,
}

/// A tensor: a strided view into a storage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorView {
    /// Name path in the object tree (`model.layer.0.weight`, `state.3.exp_avg`; the empty
    /// string for a tensor saved on its own).
    pub name: String,
    /// Index into [`PtLayout::storages`].
    pub storage: usize,
    /// Element type of the view.
    pub dtype: Dtype,
    /// Offset into the storage, in elements of `dtype`.
    pub offset: u64,
    /// Shape.
    pub shape: Vec<u64>,
    /// Strides, in elements.
    pub stride: Vec<u64>,
}

/// Everything [`scan`] learns about a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PtLayout {
    /// Zip or legacy.
    pub format: Format,
    /// Zip records in central-directory order (empty for the legacy format).
    pub records: Vec<Record>,
    /// Byte range of the object pickle.
    pub pickle: Range<u64>,
    /// Storages in file order; their ranges do not overlap.
    pub storages: Vec<Storage>,
    /// Tensor views in pickle order.
    pub tensors: Vec<TensorView>,
    /// The file declares big-endian data (`byteorder` record or legacy sys_info).
    pub big_endian: bool,
    /// What stayed opaque or looked odd (unknown globals, inconsistent sizes, ...).
    pub warnings: Vec<String>,
}

/// A piece of the file as [`PtLayout::segments`] tiles it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    /// Bytes to keep verbatim (headers, padding, pickles, directory).
    Skeleton(Range<u64>),
    /// The bytes of storage `index`.
    Storage(usize),
}

impl PtLayout {
    /// Tiles `0..file_len` into skeleton and storage pieces, in file order (storages of zero
    /// bytes are left out).
    pub fn segments(&self, file_len: u64) -> Vec<Segment> {
        let mut out = Vec::new();
        let mut at = 0;
        for (i, s) in self.storages.iter().enumerate() {
            if s.range.is_empty() {
                continue;
            }
            if s.range.start > at {
                out.push(Segment::Skeleton(at..s.range.start));
            }
            out.push(Segment::Storage(i));
            at = s.range.end;
        }
        if file_len > at {
            out.push(Segment::Skeleton(at..file_len));
        }
        out
    }

    /// Checks the layout's promises against a file of `file_len` bytes: storages in file
    /// order, inside the file and not overlapping; each storage a whole number of elements;
    /// every view inside its storage; zip records inside the file and not overlapping.
    /// [`scan`] guarantees all of this; fuzz and property tests call it.
    pub fn invariants(&self, file_len: u64) -> Result<(), String> {
        let mut last = 0;
        for s in &self.storages {
            if s.range.start < last || s.range.start > s.range.end || s.range.end > file_len {
                return Err(format!(
                    "storage {:?} range {:?} out of order or place",
                    s.key, s.range
                ));
            }
            last = s.range.end;
            if s.numel * s.dtype.map_or(1, Dtype::size) != s.range.end - s.range.start {
                return Err(format!("storage {:?} is not {} elements", s.key, s.numel));
            }
        }
        for t in &self.tensors {
            let s = self
                .storages
                .get(t.storage)
                .ok_or("view of a missing storage")?;
            if t.shape.len() != t.stride.len() {
                return Err(format!("{}: shape and stride differ in rank", t.name));
            }
            if view_end(t).is_none_or(|e| e > s.range.end - s.range.start) {
                return Err(format!("{}: view outside its storage", t.name));
            }
        }
        let mut parts: Vec<Range<u64>> = self
            .records
            .iter()
            .map(|r| r.header.start..r.descriptor.end)
            .collect();
        parts.sort_by_key(|r| r.start);
        let mut last = 0;
        for r in parts {
            if r.start < last || r.end > file_len {
                return Err(format!("record range {r:?} overlaps or leaves the file"));
            }
            last = r.end;
        }
        if self.pickle.start > self.pickle.end || self.pickle.end > file_len {
            return Err("pickle range outside the file".into());
        }
        Ok(())
    }

    /// For each storage, the name path of its first tensor view (`None` if no view uses it).
    pub fn storage_names(&self) -> Vec<Option<&str>> {
        let mut names = vec![None; self.storages.len()];
        for t in &self.tensors {
            names[t.storage].get_or_insert(t.name.as_str());
        }
        names
    }
}

/// One past the last byte a view reads, relative to its storage's start (`Some(0)` for a
/// view of no elements); `None` on overflow.
pub fn view_end(t: &TensorView) -> Option<u64> {
    if t.shape.contains(&0) {
        return Some(0);
    }
    let mut last = t.offset;
    for (&n, &s) in t.shape.iter().zip(&t.stride) {
        last = last.checked_add((n - 1).checked_mul(s)?)?;
    }
    last.checked_add(1)?.checked_mul(t.dtype.size())
}

/// The role of a tensor in a training checkpoint, from its name path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Component {
    /// Model weights (anything not in an optimizer state).
    Weights,
    /// Adam first moment (`...state.<i>.exp_avg`).
    ExpAvg,
    /// Adam second moment (`...state.<i>.exp_avg_sq`).
    ExpAvgSq,
    /// Other optimizer state (`step`, `momentum_buffer`, `param_groups`, ...).
    Other,
}

/// Classifies a name path: a last part `exp_avg` / `exp_avg_sq` is Adam state; a path of the
/// form `...state.<int>.<leaf>` or containing `param_groups` is other optimizer state;
/// everything else counts as weights. A `#n` suffix (duplicate names) is ignored.
pub fn component(name: &str) -> Component {
    let name = name.split('#').next().unwrap_or(name);
    let parts: Vec<&str> = name.split('.').collect();
    match parts.last() {
        Some(&"exp_avg") => return Component::ExpAvg,
        Some(&"exp_avg_sq") => return Component::ExpAvgSq,
        _ => {}
    }
    let n = parts.len();
    let optimizer_state = n >= 3 && parts[n - 3] == "state" && parts[n - 2].parse::<u64>().is_ok();
    if optimizer_state || parts.contains(&"param_groups") {
        Component::Other
    } else {
        Component::Weights
    }
}

/// Scans a whole `torch.save` file with the default [`Limits`].
pub fn scan(file: &[u8]) -> Result<PtLayout, PtError> {
    scan_with(file, &Limits::default())
}
