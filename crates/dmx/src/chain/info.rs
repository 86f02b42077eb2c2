//! `chain-info`: what a chain holds and what each entry costs.

use std::collections::BTreeMap;
use std::path::Path;

use dmx_format::SegmentKind;
use serde::Serialize;

use crate::archive::Archive;
use crate::delta::Precision;
use crate::error::Result;

use super::manifest::{ChainEntryKind, read_manifest};
use super::orphans::find_orphans;

/// Sizes of one checkpoint component in an entry.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ComponentSize {
    /// Tensors.
    pub tensors: usize,
    /// Original bytes.
    pub original_bytes: u64,
    /// Stored bytes (chunk payloads).
    pub stored_bytes: u64,
}

impl ComponentSize {
    fn add(&mut self, o: &ComponentSize) {
        self.tensors += o.tensors;
        self.original_bytes += o.original_bytes;
        self.stored_bytes += o.stored_bytes;
    }
}

/// One entry as [`chain_info`] describes it.
#[derive(Debug, Clone, Serialize)]
pub struct EntryInfo {
    /// Chain index.
    pub index: usize,
    /// Original file name.
    pub name: String,
    /// The stored file.
    pub file: String,
    /// Anchor or delta.
    pub kind: ChainEntryKind,
    /// The entry a delta applies to.
    pub parent: Option<usize>,
    /// The anchor it is restored from.
    pub anchor: usize,
    /// Deltas since the anchor.
    pub depth: usize,
    /// Original size.
    pub original_size: u64,
    /// Stored size.
    pub stored_size: u64,
    /// Size of the checkpoint compressed alone.
    pub standalone_size: u64,
    /// original / stored.
    pub ratio: Option<f64>,
    /// standalone − stored (bytes saved by the chain on this entry).
    pub savings_bytes: i64,
    /// Those savings in percent of the standalone size.
    pub savings_percent: Option<f64>,
    /// Per checkpoint component (`weights`, `exp_avg`, `exp_avg_sq`, `other_state`, and
    /// `header` for the safetensors header), from the entry's index.
    pub components: BTreeMap<String, ComponentSize>,
    /// Stored bytes outside chunk payloads (preamble, index, trailer).
    pub container_bytes: Option<u64>,
    /// Why the entry's index could not be read, if it could not.
    pub error: Option<String>,
}

/// Totals over a chain.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ChainTotals {
    /// Entries.
    pub entries: usize,
    /// Anchors among them.
    pub anchors: usize,
    /// Deltas among them.
    pub deltas: usize,
    /// Original bytes of all checkpoints.
    pub original_bytes: u64,
    /// Stored bytes of all entries.
    pub stored_bytes: u64,
    /// Sum of the standalone sizes.
    pub standalone_bytes: u64,
    /// original / stored.
    pub ratio: Option<f64>,
    /// standalone − stored.
    pub savings_vs_standalone_bytes: i64,
    /// Those savings in percent of the standalone sum.
    pub savings_vs_standalone_percent: Option<f64>,
    /// Per component, over every entry whose index could be read.
    pub components: BTreeMap<String, ComponentSize>,
}

/// What `dmx chain-info` shows.
#[derive(Debug, Clone, Serialize)]
pub struct ChainInfo {
    /// The chain folder.
    pub dir: String,
    /// Manifest version.
    pub version: u32,
    /// The chain's precision.
    pub precision: Precision,
    /// The chain's depth limit.
    pub max_depth: usize,
    /// Per entry.
    pub entries: Vec<EntryInfo>,
    /// Totals.
    pub totals: ChainTotals,
    /// Orphans: see [`find_orphans`].
    pub orphans: Vec<String>,
}

pub(super) fn percent(part: i64, whole: u64) -> Option<f64> {
    (whole > 0).then(|| 100.0 * part as f64 / whole as f64)
}

/// Describes the chain in `dir` from its manifest and the index of every entry (no data is
/// decoded or hashed: use [`chain_verify`](super::chain_verify) for that).
pub fn chain_info(dir: &Path) -> Result<ChainInfo> {
    let m = read_manifest(dir)?;
    let mut totals = ChainTotals::default();
    let mut entries = Vec::with_capacity(m.entries.len());
    for e in &m.entries {
        let mut components: BTreeMap<String, ComponentSize> = BTreeMap::new();
        let mut container_bytes = None;
        let mut error = None;
        match Archive::open(&dir.join(&e.file)) {
            Ok(archive) => {
                let mut payload = 0u64;
                for entry in &archive.index().entries {
                    for seg in &entry.segments {
                        let stored: u64 = seg.chunks.iter().map(|c| u64::from(c.stored_len)).sum();
                        payload += stored;
                        let key = match &seg.kind {
                            SegmentKind::Tensor(t) => crate::names::component(&t.name).as_str(),
                            SegmentKind::Bytes | SegmentKind::Packed(_) => "header",
                        };
                        components
                            .entry(key.to_string())
                            .or_default()
                            .add(&ComponentSize {
                                tensors: usize::from(matches!(seg.kind, SegmentKind::Tensor(_))),
                                original_bytes: seg.len,
                                stored_bytes: stored,
                            });
                    }
                }
                container_bytes = Some(archive.archive_len().saturating_sub(payload));
            }
            Err(err) => error = Some(err.to_string()),
        }
        for (k, c) in &components {
            totals.components.entry(k.clone()).or_default().add(c);
        }
        let savings = e.standalone_size as i64 - e.stored_size as i64;
        totals.entries += 1;
        match e.kind {
            ChainEntryKind::Anchor => totals.anchors += 1,
            ChainEntryKind::Delta => totals.deltas += 1,
        }
        totals.original_bytes += e.original_size;
        totals.stored_bytes += e.stored_size;
        totals.standalone_bytes += e.standalone_size;
        entries.push(EntryInfo {
            index: e.index,
            name: e.name.clone(),
            file: e.file.clone(),
            kind: e.kind,
            parent: e.parent,
            anchor: m.anchor_of(e.index),
            depth: e.depth,
            original_size: e.original_size,
            stored_size: e.stored_size,
            standalone_size: e.standalone_size,
            ratio: (e.stored_size > 0).then(|| e.original_size as f64 / e.stored_size as f64),
            savings_bytes: savings,
            savings_percent: percent(savings, e.standalone_size),
            components,
            container_bytes,
            error,
        });
    }
    totals.ratio = (totals.stored_bytes > 0)
        .then(|| totals.original_bytes as f64 / totals.stored_bytes as f64);
    totals.savings_vs_standalone_bytes =
        totals.standalone_bytes as i64 - totals.stored_bytes as i64;
    totals.savings_vs_standalone_percent =
        percent(totals.savings_vs_standalone_bytes, totals.standalone_bytes);
    Ok(ChainInfo {
        dir: dir.display().to_string(),
        version: m.version,
        precision: m.precision,
        max_depth: m.max_depth,
        entries,
        totals,
        orphans: find_orphans(dir, &m)?,
    })
}
