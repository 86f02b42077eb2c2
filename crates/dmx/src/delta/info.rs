//! `delta-info`: what a delta holds, from its index alone.

use std::collections::BTreeMap;
use std::path::Path;

use dmx_format::{EntryKind, Root, SegmentKind};
use serde::Serialize;

use super::hex;
use crate::archive::Archive;
use crate::error::{Error, Result};
use crate::plan::dtype_bits;

/// Per-group statistics of a delta.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DeltaGroup {
    /// Tensors.
    pub tensors: usize,
    /// Tensor elements.
    pub params: u64,
    /// Stored bytes.
    pub stored_bytes: u64,
    /// Stored bits per element.
    pub bits_per_param: Option<f64>,
    /// Elements equal to the base's (bit for bit, or on the grid), over tensors coded as
    /// deltas.
    pub unchanged_fraction: Option<f64>,
    /// The recorded errors of its quantized (lossy) tensors; `None` when it has none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lossy: Option<crate::info::LossyRollup>,
    #[serde(skip)]
    delta_params: u64,
    #[serde(skip)]
    unchanged: u64,
}

impl DeltaGroup {
    fn add(
        &mut self,
        params: u64,
        stored: u64,
        unchanged: Option<u64>,
        lossy: Option<&dmx_format::Lossy>,
    ) {
        if let Some(l) = lossy {
            self.lossy.get_or_insert_with(Default::default).push(
                l.error.rel_l2,
                l.error.max_abs,
                l.error.values,
            );
        }
        self.tensors += 1;
        self.params += params;
        self.stored_bytes += stored;
        if let Some(u) = unchanged {
            self.delta_params += params;
            self.unchanged += u;
        }
    }

    fn finish(&mut self) {
        self.bits_per_param =
            (self.params > 0).then(|| self.stored_bytes as f64 * 8.0 / self.params as f64);
        self.unchanged_fraction =
            (self.delta_params > 0).then(|| self.unchanged as f64 / self.delta_params as f64);
    }
}

/// What `dmx delta-info` shows.
#[derive(Debug, Clone, Serialize)]
pub struct DeltaInfo {
    /// The delta file.
    pub delta: String,
    /// File name of the target.
    pub target: String,
    /// Size of the target it restores.
    pub target_bytes: u64,
    /// Size of the delta file.
    pub delta_bytes: u64,
    /// target_bytes / delta_bytes.
    pub ratio: Option<f64>,
    /// SHA-256 of the required base.
    pub base_sha256: String,
    /// Size of the required base.
    pub base_bytes: u64,
    /// SHA-256 of the file it restores.
    pub target_sha256: String,
    /// Whether reconstruction is byte-identical to the original target.
    pub lossless: bool,
    /// Total over all tensors.
    pub total: DeltaGroup,
    /// Per checkpoint component: weights, exp_avg, exp_avg_sq, other_state.
    pub components: BTreeMap<String, DeltaGroup>,
    /// Per role: attention, mlp, embedding, norm, output, other.
    pub roles: BTreeMap<String, DeltaGroup>,
    /// Per storage: "delta" (coded against the base) or "whole" (added or reshaped).
    pub storage: BTreeMap<String, DeltaGroup>,
    /// Base tensors the target does not have.
    pub removed: Vec<String>,
    /// Folder deltas: every file of the target folder (empty for a file delta).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<DeltaInfoFile>,
    /// Every quantized (lossy) tensor with its mode, error bound and recorded errors.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub lossy_tensors: Vec<LossyTensor>,
    /// Lossy tensors: how many, and the worst recorded error among them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lossy_summary: Option<crate::lossy::LossySummary>,
}

/// A quantized tensor of a delta, as `dmx delta-info` lists it.
#[derive(Debug, Clone, Serialize)]
pub struct LossyTensor {
    /// Path of its file inside the delta.
    pub path: String,
    /// Tensor name.
    pub name: String,
    /// Checkpoint component.
    pub component: crate::names::Component,
    /// Mode, bound and recorded errors.
    #[serde(flatten)]
    pub lossy: crate::info::LossyStats,
}

/// One file of a folder delta, as `dmx delta-info` lists it.
#[derive(Debug, Clone, Serialize)]
pub struct DeltaInfoFile {
    /// Path relative to the folder.
    pub path: String,
    /// Entry kind name (`safetensors-delta`, `torch-delta`, `blob`, ...).
    pub kind: String,
    /// Size of the file it restores.
    pub size: u64,
    /// SHA-256 of the base file a delta entry needs (`None` for files stored whole).
    pub base_sha256: Option<String>,
}

/// Adds the tensor segments of `entry` to `total` and to the groups by component, role and
/// storage.
fn add_segments(
    entry: &dmx_format::Entry,
    total: &mut DeltaGroup,
    [components, roles, storage]: [&mut BTreeMap<String, DeltaGroup>; 3],
    tensors: &mut Vec<LossyTensor>,
) {
    for seg in &entry.segments {
        let SegmentKind::Tensor(t) = &seg.kind else {
            continue;
        };
        let params = dtype_bits(&t.dtype).map_or(0, |b| seg.len * 8 / b);
        let stored: u64 = seg.chunks.iter().map(|c| u64::from(c.stored_len)).sum();
        let unchanged = seg.transform.unchanged();
        let lossy = seg.transform.lossy();
        total.add(params, stored, unchanged, lossy);
        if let Some(l) = lossy {
            tensors.push(LossyTensor {
                path: entry.path.clone(),
                name: t.name.clone(),
                component: crate::names::component(&t.name),
                lossy: crate::info::LossyStats::of(l),
            });
        }
        let how = if unchanged.is_some() {
            "delta"
        } else {
            "whole"
        };
        for (map, key) in [
            (&mut *components, label(crate::names::component(&t.name))),
            (&mut *roles, label(crate::names::role(&t.name))),
            (&mut *storage, how.to_string()),
        ] {
            map.entry(key)
                .or_default()
                .add(params, stored, unchanged, lossy);
        }
    }
}

fn label<T: Serialize>(v: T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| "other".into())
}

/// Describes a delta file from its index alone.
pub fn delta_info(path: &Path) -> Result<DeltaInfo> {
    let archive = Archive::open(path)?;
    let index = archive.index();
    let folder = index.root == Root::Directory;
    let single = index.entries.len() == 1 && index.entries[0].base.is_some();
    if !(single || folder && index.entries.iter().any(|e| e.base.is_some())) {
        return Err(Error::Unsupported(format!(
            "{} is not a delta; see `dmx info`",
            path.display()
        )));
    }
    let mut total = DeltaGroup::default();
    let mut components: BTreeMap<String, DeltaGroup> = BTreeMap::new();
    let mut roles: BTreeMap<String, DeltaGroup> = BTreeMap::new();
    let mut storage: BTreeMap<String, DeltaGroup> = BTreeMap::new();
    let mut lossless = true;
    let mut files = Vec::new();
    let mut lossy_tensors = Vec::new();
    for entry in &index.entries {
        if folder && entry.kind != EntryKind::Packed {
            files.push(DeltaInfoFile {
                path: entry.path.clone(),
                kind: entry.kind.name().to_string(),
                size: entry.size,
                base_sha256: entry.base.as_ref().map(|b| hex(&b.sha256)),
            });
        }
        lossless &= entry.segments.iter().all(|s| s.transform.is_lossless());
        let groups = [&mut components, &mut roles, &mut storage];
        add_segments(entry, &mut total, groups, &mut lossy_tensors);
    }
    total.finish();
    for g in components
        .values_mut()
        .chain(roles.values_mut())
        .chain(storage.values_mut())
    {
        g.finish();
    }
    let delta_bytes = archive.archive_len();
    let target_bytes: u64 = index
        .entries
        .iter()
        .filter(|e| e.kind != EntryKind::Pack)
        .map(|e| e.size)
        .sum();
    let bases = index.entries.iter().filter_map(|e| e.base.as_ref());
    let removed = index
        .entries
        .iter()
        .filter_map(|e| Some((e, e.base.as_ref()?)))
        .flat_map(|(e, b)| {
            b.removed.iter().map(move |n| match folder {
                true => format!("{}: {n}", e.path),
                false => n.clone(),
            })
        })
        .collect();
    let entry = &index.entries[0];
    let base = entry.base.as_ref().filter(|_| !folder);
    Ok(DeltaInfo {
        delta: path.display().to_string(),
        target: match folder {
            true => format!("{} files", files.len()),
            false => entry.path.clone(),
        },
        target_bytes,
        delta_bytes,
        ratio: (delta_bytes > 0).then(|| target_bytes as f64 / delta_bytes as f64),
        base_sha256: base.map(|b| hex(&b.sha256)).unwrap_or_default(),
        base_bytes: bases.map(|b| b.size).sum(),
        target_sha256: if folder {
            String::new()
        } else {
            hex(&entry.sha256)
        },
        lossless,
        total,
        components,
        roles,
        storage,
        removed,
        files,
        lossy_tensors,
        lossy_summary: crate::lossy::LossySummary::of_index(archive.index()),
    })
}
