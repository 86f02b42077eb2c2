//! The chain manifest (`manifest.json`): its schema, checks, entry file names, reading and
//! writing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::delta::Precision;
use crate::error::{Error, Result};
use crate::io::TEMP_PREFIX;
use crate::lossy::Grid;

use super::{ChainOptions, FORMAT, MANIFEST, VERSION};

/// How a chain entry is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChainEntryKind {
    /// A standalone `.dmx` archive of the checkpoint.
    Anchor,
    /// A `.dmxd` delta from the previous entry's reconstruction.
    Delta,
}

impl ChainEntryKind {
    /// `"anchor"` or `"delta"`.
    pub fn as_str(self) -> &'static str {
        match self {
            ChainEntryKind::Anchor => "anchor",
            ChainEntryKind::Delta => "delta",
        }
    }

    fn extension(self) -> &'static str {
        match self {
            ChainEntryKind::Anchor => "dmx",
            ChainEntryKind::Delta => "dmxd",
        }
    }
}

/// One checkpoint of a chain, as recorded in the manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChainEntry {
    /// Position in the chain, from 0.
    pub index: usize,
    /// File name of the original checkpoint (restored under this name).
    pub name: String,
    /// The stored file inside the chain folder: `{index:05}-{name}.dmx` or `.dmxd`.
    pub file: String,
    /// Anchor or delta.
    pub kind: ChainEntryKind,
    /// The entry a delta applies to (always `index - 1`); `null` for anchors.
    pub parent: Option<usize>,
    /// Deltas to apply after the anchor to restore this entry (0 for anchors).
    pub depth: usize,
    /// SHA-256 of the original checkpoint, hex.
    pub original_sha256: String,
    /// Size of the original checkpoint (and of its reconstruction).
    pub original_size: u64,
    /// SHA-256 of what reconstruction yields, hex: `original_sha256` for lossless chains.
    pub restored_sha256: String,
    /// SHA-256 of the stored file, hex.
    pub stored_sha256: String,
    /// Size of the stored file.
    pub stored_size: u64,
    /// Size of `dmx compress` of this checkpoint alone in the chain's precision (the entry is
    /// never larger).
    pub standalone_size: u64,
    /// The checkpoint is a folder (a Trainer checkpoint folder): its anchor is a folder
    /// archive, its delta a folder delta, and its hashes and size are those of
    /// docs/CHAINS.md ("Folder checkpoints"). Absent (false) for file checkpoints.
    #[serde(default, skip_serializing_if = "is_false")]
    pub folder: bool,
    /// Anchors of quantized chains: the grid of every quantized tensor, as recorded in the
    /// anchor archive's index. Written as strings: a linear grid's step as the shortest
    /// decimal that reads back to the same `f64` (JSON readers need not round-trip numbers bit
    /// for bit), the floating grid as `"float:M"`.
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        with = "steps_serde"
    )]
    pub steps: BTreeMap<String, Grid>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// The content of a chain's `manifest.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChainManifest {
    /// Always [`FORMAT`].
    pub format: String,
    /// Always [`VERSION`].
    pub version: u32,
    /// Lossless, int16 or int32: fixed for the whole chain.
    #[serde(with = "precision_serde")]
    pub precision: Precision,
    /// Most deltas between an entry and its anchor.
    pub max_depth: usize,
    /// The checkpoints in order.
    pub entries: Vec<ChainEntry>,
}

mod precision_serde {
    use serde::{Deserialize, Deserializer, Serialize, Serializer, de::Error as _};

    use crate::delta::Precision;

    pub fn serialize<S: Serializer>(p: &Precision, s: S) -> Result<S::Ok, S::Error> {
        p.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Precision, D::Error> {
        let s = String::deserialize(d)?;
        Precision::from_name(&s).ok_or_else(|| D::Error::custom(format!("unknown precision {s:?}")))
    }
}

/// Grids as text ([`Grid::to_text`]; numbers are accepted on input as linear steps).
mod steps_serde {
    use std::collections::BTreeMap;

    use serde::ser::SerializeMap;
    use serde::{Deserialize, Deserializer, Serializer, de::Error as _};

    use crate::lossy::Grid;

    pub fn serialize<S: Serializer>(m: &BTreeMap<String, Grid>, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(m.len()))?;
        for (k, v) in m {
            map.serialize_entry(k, &v.to_text())?;
        }
        map.end()
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Step {
        Text(String),
        Number(f64),
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<String, Grid>, D::Error> {
        BTreeMap::<String, Step>::deserialize(d)?
            .into_iter()
            .map(|(k, v)| {
                let grid = match &v {
                    Step::Text(t) => Grid::from_text(t),
                    Step::Number(x) => Grid::from_text(&format!("{x:?}")),
                };
                grid.map(|g| (k.clone(), g)).ok_or_else(|| {
                    let shown = match v {
                        Step::Text(t) => format!("{t:?}"),
                        Step::Number(x) => x.to_string(),
                    };
                    D::Error::custom(format!(
                        "grid of {k:?}: {shown} is neither a positive step nor float:M"
                    ))
                })
            })
            .collect()
    }
}

impl ChainManifest {
    pub(super) fn new(c: &ChainOptions) -> Self {
        Self {
            format: FORMAT.into(),
            version: VERSION,
            precision: c.precision,
            max_depth: c.max_depth,
            entries: Vec::new(),
        }
    }

    /// The anchor entry `index` is restored from.
    pub fn anchor_of(&self, index: usize) -> usize {
        let mut i = index;
        while let Some(p) = self.entries[i].parent {
            i = p;
        }
        i
    }

    /// The entries to read to restore `index`: its anchor and the deltas up to it.
    pub fn needed_for(&self, index: usize) -> std::ops::RangeInclusive<usize> {
        self.anchor_of(index)..=index
    }

    /// Checks the structure of the entries: consecutive indices, parents and depths that
    /// follow the chain rules, file names derived from index and name (no paths), hashes.
    fn validate(&self, path: &Path) -> Result<()> {
        let bad = |i: usize, detail: String| Error::Corrupt {
            path: path.to_path_buf(),
            what: format!("entry {i}"),
            detail: format!("{detail} (corrupt manifest)"),
        };
        let is_hex = |s: &str| s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit());
        for (i, e) in self.entries.iter().enumerate() {
            if e.depth > self.max_depth {
                return Err(bad(
                    i,
                    format!(
                        "depth {} is beyond the chain's max_depth {}",
                        e.depth, self.max_depth
                    ),
                ));
            }
            if e.index != i {
                return Err(bad(i, format!("has index {}", e.index)));
            }
            check_name(&e.name).map_err(|d| bad(i, d))?;
            if e.file != entry_file_name(i, &e.name, e.kind) {
                return Err(bad(
                    i,
                    format!(
                        "file {:?} should be {:?}",
                        e.file,
                        entry_file_name(i, &e.name, e.kind)
                    ),
                ));
            }
            match e.kind {
                ChainEntryKind::Anchor if e.parent.is_some() || e.depth != 0 => {
                    return Err(bad(i, "an anchor with a parent or a depth".into()));
                }
                ChainEntryKind::Delta => {
                    if i == 0 || e.parent != Some(i - 1) {
                        return Err(bad(
                            i,
                            "a delta whose parent is not the entry before".into(),
                        ));
                    }
                    if e.depth != self.entries[i - 1].depth + 1 {
                        return Err(bad(
                            i,
                            format!("depth {} does not follow its parent", e.depth),
                        ));
                    }
                }
                ChainEntryKind::Anchor => {}
            }
            for h in [&e.original_sha256, &e.restored_sha256, &e.stored_sha256] {
                if !is_hex(h) {
                    return Err(bad(i, format!("{h:?} is not a SHA-256")));
                }
            }
            if e.folder != self.entries[0].folder {
                return Err(bad(
                    i,
                    "a chain's checkpoints are all files or all folders".into(),
                ));
            }
            if self.precision == Precision::Lossless && e.restored_sha256 != e.original_sha256 {
                return Err(bad(
                    i,
                    "restored_sha256 differs from original_sha256 in a lossless chain".into(),
                ));
            }
        }
        Ok(())
    }
}

/// Rejects names that are not a plain file name on this system (`/` and NUL everywhere, `\\`
/// and `:` on Windows, where they separate paths), or that dmx reserves for its temporary
/// files. Any other name the OS allows is stored.
pub(super) fn check_name(name: &str) -> std::result::Result<(), String> {
    let separators: &[char] = if cfg!(windows) {
        &['/', '\\', ':', '\0']
    } else {
        &['/', '\0']
    };
    if name.is_empty() || name == "." || name == ".." || name.contains(separators) {
        return Err(format!("{name:?} is not a plain file name"));
    }
    if name.starts_with(TEMP_PREFIX) {
        return Err(format!(
            "{name:?} starts with {TEMP_PREFIX:?}, which dmx reserves for its temporary files"
        ));
    }
    Ok(())
}

/// Longest file name most file systems store (bytes).
pub(super) const NAME_MAX: usize = 255;

/// Fails, naming `path`, when the entry file of `name` at `index` would be longer than file
/// systems allow.
pub(super) fn check_entry_name_len(path: &Path, index: usize, name: &str) -> Result<()> {
    let file = entry_file_name(index, name, ChainEntryKind::Delta);
    if file.len() > NAME_MAX {
        return Err(Error::Limit(format!(
            "{}: the file name is too long to store in a chain: entry files are named \
             NNNNN-NAME.dmxd, which must fit in {NAME_MAX} bytes (this one would be {}); \
             rename the checkpoint",
            path.display(),
            file.len()
        )));
    }
    Ok(())
}

/// The name under which a checkpoint is stored *inside* its entry archive: its own name, with
/// `:` and `\\` replaced by `_` (characters archive paths may not hold). The manifest keeps
/// the real name, under which chains restore it.
pub(super) fn archived_name(name: &str) -> std::borrow::Cow<'_, str> {
    if name.contains([':', '\\']) {
        std::borrow::Cow::Owned(name.replace([':', '\\'], "_"))
    } else {
        std::borrow::Cow::Borrowed(name)
    }
}

/// The path to compress `ckpt` from: `ckpt` itself, or, when its name cannot be stored in an
/// archive as it is ([`archived_name`]), a link to it (a copy where links are unavailable)
/// under the archived name in `work`.
pub(super) fn input_alias(work: &Path, ckpt: &Path, name: &str) -> Result<PathBuf> {
    let archived = archived_name(name);
    if archived == name {
        return Ok(ckpt.to_path_buf());
    }
    let folder = work.join("input");
    match std::fs::remove_dir_all(&folder) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io(&folder, e)),
    }
    std::fs::create_dir(&folder).map_err(|e| Error::io(&folder, e))?;
    let alias = folder.join(archived.as_ref());
    let target = std::path::absolute(ckpt).map_err(|e| Error::io(ckpt, e))?;
    #[cfg(unix)]
    std::os::unix::fs::symlink(&target, &alias).map_err(|e| Error::io(&alias, e))?;
    #[cfg(not(unix))]
    std::fs::copy(&target, &alias).map_err(|e| Error::io(&alias, e))?;
    Ok(alias)
}

/// `{index:05}-{name}.dmx` (anchor) or `.dmxd` (delta).
pub(super) fn entry_file_name(index: usize, name: &str, kind: ChainEntryKind) -> String {
    format!("{index:05}-{name}.{}", kind.extension())
}

/// The index of a file named like a chain entry (`NNNNN-….dmx` / `.dmxd`).
pub(super) fn entry_file_index(name: &str) -> Option<usize> {
    if !(name.ends_with(".dmx") || name.ends_with(".dmxd")) {
        return None;
    }
    let (digits, _) = name.split_once('-')?;
    if digits.len() < 5 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Reads and checks `DIR/manifest.json`.
pub fn read_manifest(dir: &Path) -> Result<ChainManifest> {
    let path = dir.join(MANIFEST);
    let text = match std::fs::read(&path) {
        Ok(t) => t,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
            ) =>
        {
            return Err(Error::Unsupported(format!(
                "{}: not a dmx chain (no {MANIFEST}); create one with `dmx chain-compress`",
                dir.display()
            )));
        }
        Err(e) => return Err(Error::io(&path, e)),
    };
    let value: serde_json::Value = serde_json::from_slice(&text).map_err(|e| Error::Corrupt {
        path: path.clone(),
        what: "manifest".into(),
        detail: format!("not valid JSON: {e}"),
    })?;
    if value.get("format").and_then(|f| f.as_str()) != Some(FORMAT) {
        return Err(Error::Unsupported(format!(
            "{}: not a dmx chain manifest (\"format\" is not {FORMAT:?})",
            path.display()
        )));
    }
    match value.get("version").and_then(|v| v.as_u64()) {
        Some(v) if v == u64::from(VERSION) => {}
        v => {
            return Err(Error::Unsupported(format!(
                "{}: chain manifest version {} is not supported (this dmx reads version \
                 {VERSION})",
                path.display(),
                v.map_or("?".into(), |v| v.to_string())
            )));
        }
    }
    let m: ChainManifest = serde_json::from_value(value).map_err(|e| Error::Corrupt {
        path: path.clone(),
        what: "manifest".into(),
        detail: format!("{e} (corrupt manifest)"),
    })?;
    m.validate(&path)?;
    Ok(m)
}

/// Whether `path` is a folder holding a chain manifest.
pub fn is_chain_dir(path: &Path) -> bool {
    path.is_dir() && path.join(MANIFEST).is_file()
}

/// Replaces the manifest atomically: temporary file, fsync, rename, fsync of the folder.
pub(super) fn write_manifest(dir: &Path, m: &ChainManifest, sync: bool) -> Result<()> {
    let mut text = serde_json::to_vec_pretty(m)
        .map_err(|e| Error::Internal(format!("cannot encode the chain manifest: {e}")))?;
    text.push(b'\n');
    crate::io::write_file(&dir.join(MANIFEST), &text, true, sync)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_file_names_round_trip() {
        let f = entry_file_name(7, "step-100.safetensors", ChainEntryKind::Delta);
        assert_eq!(f, "00007-step-100.safetensors.dmxd");
        assert_eq!(entry_file_index(&f), Some(7));
        assert_eq!(entry_file_index("00012-x.dmx"), Some(12));
        assert_eq!(entry_file_index("123456-x.dmx"), Some(123456));
        assert_eq!(entry_file_index("0001-x.dmx"), None);
        assert_eq!(entry_file_index("00001-x.safetensors"), None);
        assert_eq!(entry_file_index("manifest.json"), None);
    }

    #[test]
    fn names_must_be_plain() {
        assert!(check_name("a.safetensors").is_ok());
        for bad in ["", ".", "..", "a/b", "a\0b", ".dmx-tmp-x"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        // Ordinary names are stored; inside the entry archive, `:` and `\\` become `_`.
        for ok in ["ckpt-2024-01-01T12:00:00.safetensors", "a\\b.safetensors"] {
            assert_eq!(check_name(ok).is_ok(), !cfg!(windows), "{ok:?}");
        }
        assert_eq!(
            archived_name("ckpt-2024-01-01T12:00:00.safetensors"),
            "ckpt-2024-01-01T12_00_00.safetensors"
        );
        assert_eq!(archived_name("a\\b.safetensors"), "a_b.safetensors");
        assert_eq!(archived_name("plain.safetensors"), "plain.safetensors");
        let long = "x".repeat(250);
        assert!(check_entry_name_len(Path::new(&long), 0, &long).is_err());
        assert!(check_entry_name_len(Path::new("a"), 0, &"x".repeat(244)).is_ok());
    }

    #[test]
    fn depth_beyond_max_depth_is_corrupt() {
        use ChainEntryKind::{Anchor, Delta};
        let mut m = ChainManifest::new(&ChainOptions {
            precision: Precision::Lossless,
            max_depth: 1,
        });
        m.entries = vec![entry(0, Anchor, 0), entry(1, Delta, 1)];
        m.validate(Path::new("m")).unwrap();
        m.entries.push(entry(2, Delta, 2));
        let err = m.validate(Path::new("m")).unwrap_err();
        assert!(err.is_integrity_failure());
        assert!(err.to_string().contains("corrupt manifest"), "{err}");
        assert!(err.to_string().contains("max_depth 1"), "{err}");
        // A delta whose parent link skips an entry.
        m.max_depth = 16;
        m.validate(Path::new("m")).unwrap();
        m.entries[2].parent = Some(0);
        assert!(m.validate(Path::new("m")).is_err());
    }

    fn entry(index: usize, kind: ChainEntryKind, depth: usize) -> ChainEntry {
        let h = "ab".repeat(32);
        ChainEntry {
            index,
            name: "c.safetensors".into(),
            file: entry_file_name(index, "c.safetensors", kind),
            kind,
            parent: (kind == ChainEntryKind::Delta).then(|| index.wrapping_sub(1)),
            depth,
            original_sha256: h.clone(),
            original_size: 1,
            restored_sha256: h.clone(),
            stored_sha256: h,
            stored_size: 1,
            standalone_size: 1,
            folder: false,
            steps: BTreeMap::new(),
        }
    }

    #[test]
    fn manifest_structure_is_checked() {
        use ChainEntryKind::{Anchor, Delta};
        let mut m = ChainManifest::new(&ChainOptions::default());
        m.entries = vec![entry(0, Anchor, 0), entry(1, Delta, 1), entry(2, Delta, 2)];
        m.validate(Path::new("m")).unwrap();
        assert_eq!(m.anchor_of(2), 0);
        assert_eq!(m.needed_for(2), 0..=2);
        let json = serde_json::to_string(&m).unwrap();
        assert_eq!(serde_json::from_str::<ChainManifest>(&json).unwrap(), m);
        let mut bad = m.clone();
        bad.entries[2].depth = 5;
        assert!(bad.validate(Path::new("m")).is_err());
        let mut bad = m.clone();
        bad.entries[1].file = "../../etc/passwd".into();
        assert!(bad.validate(Path::new("m")).is_err());
        let mut bad = m.clone();
        bad.entries[0] = entry(0, Delta, 0);
        assert!(bad.validate(Path::new("m")).is_err());
        let mut bad = m;
        bad.entries[1].restored_sha256 = "cd".repeat(32);
        assert!(bad.validate(Path::new("m")).is_err());
    }

    #[test]
    fn grid_steps_round_trip_exactly() {
        let mut m = ChainManifest::new(&ChainOptions {
            precision: Precision::Int32,
            max_depth: 3,
        });
        let mut e = entry(0, ChainEntryKind::Anchor, 0);
        // Values a plain JSON float reader may read back one ulp off.
        for (i, x) in [
            4.654_554_174_812_487_5e-11,
            0.1 / 32767.0,
            3.0 / 2147483647.0,
            1.0,
        ]
        .into_iter()
        .enumerate()
        {
            e.steps.insert(format!("t{i}"), Grid::Linear(x));
        }
        e.steps.insert("v".into(), Grid::Float(10));
        m.entries.push(e);
        let mut text = serde_json::to_string_pretty(&m).unwrap();
        for _ in 0..3 {
            let back: ChainManifest = serde_json::from_str(&text).unwrap();
            assert_eq!(back, m);
            text = serde_json::to_string_pretty(&back).unwrap();
        }
        assert!(
            text.contains("\"t0\": \"4.6545541748124875e-11\""),
            "{text}"
        );
        // Numbers are accepted too.
        let numeric = text.replace("\"4.6545541748124875e-11\"", "0.5");
        let back: ChainManifest = serde_json::from_str(&numeric).unwrap();
        assert_eq!(back.entries[0].steps["t0"], Grid::Linear(0.5));
        assert_eq!(back.entries[0].steps["v"], Grid::Float(10));
        assert!(text.contains("\"v\": \"float:10\""), "{text}");
        for bad in ["\"float:x\"", "\"-1\"", "0"] {
            let t = text.replace("\"float:10\"", bad);
            let err = serde_json::from_str::<ChainManifest>(&t).unwrap_err();
            assert!(err.to_string().contains("grid of \"v\""), "{err}");
        }
    }
}
