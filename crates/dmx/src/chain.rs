//! Training-run chains: a folder of checkpoints stored in order as anchors (standalone `.dmx`
//! archives) and deltas (`.dmxd`, each from the previous checkpoint), described by a
//! `manifest.json` that records the hash of every original and of every stored file.
//!
//! - [`chain_compress`] creates a chain, [`chain_append`] adds checkpoints to one (crash-safe:
//!   an interrupted append leaves the chain valid at its previous length).
//! - Every entry is whichever is smaller of the delta from the previous checkpoint and
//!   `dmx compress` of the checkpoint alone, so an entry is never larger than its standalone
//!   archive; a new anchor is forced when an entry would be more than
//!   [`ChainOptions::max_depth`] deltas away from its anchor.
//! - [`chain_reconstruct`] restores all or some entries, reading only the anchor and the
//!   deltas each one needs; [`chain_verify`] checks a whole chain without the originals;
//!   [`chain_info`] describes it.
//!
//! Lossless chains restore every checkpoint byte for byte. Quantized chains (int16, int32)
//! restore every checkpoint as its values on its anchor's grid: a delta is computed from the
//! *reconstruction* of the previous entry on the anchor's grid, so errors never accumulate.
//!
//! The layout, the manifest schema and the crash-safety argument are in `docs/CHAINS.md`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Instant;

use dmx_format::{EntryKind, Root, SegmentKind};
use serde::{Deserialize, Serialize};
use sha2::Digest;

use crate::Options;
use crate::archive::Archive;
use crate::delta::{Base, DeltaOptions, Precision, hex, restore_delta_to, write_entry};
use crate::error::{Error, Result};
use crate::lossy::{LossyOptions, Mode};
use crate::output::AtomicFile;

/// File name of a chain's manifest inside its folder.
pub const MANIFEST: &str = "manifest.json";
/// The manifest's `format` value.
pub const FORMAT: &str = "dmx-chain";
/// The manifest version this dmx writes and reads.
pub const VERSION: u32 = 1;
/// Default of [`ChainOptions::max_depth`].
pub const DEFAULT_MAX_DEPTH: usize = 16;

/// Prefix of temporary files and folders (those of [`crate::write_file`] too).
const TEMP_PREFIX: &str = ".dmx-tmp-";

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
    /// Anchors of quantized chains: the grid step of every quantized tensor, as recorded in
    /// the anchor archive's index. Written as strings holding the shortest decimal that reads
    /// back to the same `f64` (JSON readers need not round-trip numbers bit for bit).
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        with = "steps_serde"
    )]
    pub steps: BTreeMap<String, f64>,
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
        super::parse_precision(&s)
            .ok_or_else(|| D::Error::custom(format!("unknown precision {s:?}")))
    }
}

/// Grid steps as exact decimal strings (numbers are accepted on input).
mod steps_serde {
    use std::collections::BTreeMap;

    use serde::ser::SerializeMap;
    use serde::{Deserialize, Deserializer, Serializer, de::Error as _};

    pub fn serialize<S: Serializer>(m: &BTreeMap<String, f64>, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(m.len()))?;
        for (k, v) in m {
            map.serialize_entry(k, &format!("{v:?}"))?;
        }
        map.end()
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Step {
        Text(String),
        Number(f64),
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, f64>, D::Error> {
        BTreeMap::<String, Step>::deserialize(d)?
            .into_iter()
            .map(|(k, v)| match v {
                Step::Text(t) => match t.parse::<f64>() {
                    Ok(x) => Ok((k, x)),
                    Err(_) => Err(D::Error::custom(format!(
                        "step of {k:?}: {t:?} is not a number"
                    ))),
                },
                Step::Number(x) => Ok((k, x)),
            })
            .collect()
    }
}

fn parse_precision(s: &str) -> Option<Precision> {
    match s {
        "lossless" => Some(Precision::Lossless),
        "int16" => Some(Precision::Int16),
        "int32" => Some(Precision::Int32),
        _ => None,
    }
}

/// The name of a precision as the manifest and the CLI spell it.
pub fn precision_str(p: Precision) -> &'static str {
    match p {
        Precision::Lossless => "lossless",
        Precision::Int16 => "int16",
        Precision::Int32 => "int32",
    }
}

impl ChainManifest {
    fn new(c: &ChainOptions) -> Self {
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
fn check_name(name: &str) -> std::result::Result<(), String> {
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
const NAME_MAX: usize = 255;

/// Fails, naming `path`, when the entry file of `name` at `index` would be longer than file
/// systems allow.
fn check_entry_name_len(path: &Path, index: usize, name: &str) -> Result<()> {
    let file = entry_file_name(index, name, ChainEntryKind::Delta);
    if file.len() > NAME_MAX {
        return Err(Error::Usage(format!(
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
fn archived_name(name: &str) -> std::borrow::Cow<'_, str> {
    if name.contains([':', '\\']) {
        std::borrow::Cow::Owned(name.replace([':', '\\'], "_"))
    } else {
        std::borrow::Cow::Borrowed(name)
    }
}

/// The path to compress `ckpt` from: `ckpt` itself, or, when its name cannot be stored in an
/// archive as it is ([`archived_name`]), a link to it (a copy where links are unavailable)
/// under the archived name in `work`.
fn input_alias(work: &Path, ckpt: &Path, name: &str) -> Result<PathBuf> {
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
fn entry_file_name(index: usize, name: &str, kind: ChainEntryKind) -> String {
    format!("{index:05}-{name}.{}", kind.extension())
}

/// The index of a file named like a chain entry (`NNNNN-….dmx` / `.dmxd`).
fn entry_file_index(name: &str) -> Option<usize> {
    if !(name.ends_with(".dmx") || name.ends_with(".dmxd")) {
        return None;
    }
    let (digits, _) = name.split_once('-')?;
    if digits.len() < 5 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Settings of a new chain.
#[derive(Debug, Clone)]
pub struct ChainOptions {
    /// Lossless (default) or a quantized grid shared by an anchor and its deltas.
    pub precision: Precision,
    /// Most deltas between an entry and its anchor ([`DEFAULT_MAX_DEPTH`]); 0 stores every
    /// checkpoint as an anchor.
    pub max_depth: usize,
}

impl Default for ChainOptions {
    fn default() -> Self {
        Self {
            precision: Precision::Lossless,
            max_depth: DEFAULT_MAX_DEPTH,
        }
    }
}

/// One entry added by [`chain_compress`] or [`chain_append`].
#[derive(Debug, Clone, Serialize)]
pub struct AppendedEntry {
    /// What the manifest records.
    #[serde(flatten)]
    pub entry: ChainEntry,
    /// Size of the delta that was tried, if one was (`null` for forced anchors).
    pub delta_size: Option<u64>,
    /// Why the delta could not be written, when it could not (the entry is then an anchor).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delta_error: Option<String>,
    /// Wall time spent on this entry.
    pub seconds: f64,
}

/// What [`chain_compress`] or [`chain_append`] did.
#[derive(Debug, Clone, Serialize)]
pub struct ChainReport {
    /// The chain folder.
    pub dir: String,
    /// The chain's precision.
    pub precision: Precision,
    /// The chain's depth limit.
    pub max_depth: usize,
    /// Entries before this run.
    pub entries_before: usize,
    /// Entries after it.
    pub entries: usize,
    /// The entries added.
    pub appended: Vec<AppendedEntry>,
    /// Original bytes of the added checkpoints.
    pub original_bytes: u64,
    /// Stored bytes of the added entries.
    pub stored_bytes: u64,
    /// Sum of the standalone sizes of the added checkpoints.
    pub standalone_bytes: u64,
    /// Wall time in seconds.
    pub seconds: f64,
    /// Files dmx found in the chain folder and moved into `DIR/orphans/` rather than delete
    /// them (entry files the manifest did not list, an invalid `manifest.json` replaced with
    /// `--force`), as `orphans/NAME`.
    pub set_aside: Vec<String>,
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
            return Err(Error::Usage(format!(
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
        return Err(Error::Usage(format!(
            "{}: not a dmx chain manifest (\"format\" is not {FORMAT:?})",
            path.display()
        )));
    }
    match value.get("version").and_then(|v| v.as_u64()) {
        Some(v) if v == u64::from(VERSION) => {}
        v => {
            return Err(Error::Usage(format!(
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
fn write_manifest(dir: &Path, m: &ChainManifest, sync: bool) -> Result<()> {
    let mut text = serde_json::to_vec_pretty(m)
        .map_err(|e| Error::Usage(format!("cannot encode the chain manifest: {e}")))?;
    text.push(b'\n');
    crate::output::write_file(&dir.join(MANIFEST), &text, true, sync)
}

fn sync_dir(dir: &Path) {
    // Best effort, as for every output: makes renames durable where folders can be opened.
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

/// SHA-256 (hex) and size of a file, streamed.
fn sha256_file(path: &Path) -> Result<(String, u64)> {
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut sha = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        sha.update(&buf[..n]);
        size += n as u64;
    }
    Ok((hex(&sha.finalize()), size))
}

/// An exclusive lock on the chain folder (advisory, released when the process ends): one
/// writer at a time. Where the platform cannot lock folders, writers are not serialized.
struct DirLock {
    _file: Option<std::fs::File>,
}

fn lock_dir(dir: &Path) -> Result<DirLock> {
    let file = std::fs::File::open(dir).map_err(|e| Error::io(dir, e))?;
    match file.try_lock() {
        Ok(()) => Ok(DirLock { _file: Some(file) }),
        Err(std::fs::TryLockError::WouldBlock) => Err(Error::Usage(format!(
            "{}: another dmx process is writing this chain; try again when it is done",
            dir.display()
        ))),
        Err(std::fs::TryLockError::Error(_)) => Ok(DirLock { _file: None }),
    }
}

/// Removes the temporary files and folders (`.dmx-tmp-*`) that interrupted runs may leave in
/// a chain folder (called with the folder locked), except `keep`.
fn clean_temps(dir: &Path, keep: Option<&Path>) -> Result<()> {
    let rd = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    for item in rd {
        let item = item.map_err(|e| Error::io(dir, e))?;
        let name = item.file_name();
        let Some(name) = name.to_str() else { continue };
        let path = item.path();
        if !name.starts_with(TEMP_PREFIX) || keep.is_some_and(|k| k == path) {
            continue;
        }
        let removed = if item.file_type().is_ok_and(|t| t.is_dir()) {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        match removed {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(&path, e)),
        }
    }
    Ok(())
}

/// Sub-folder of a chain folder into which entry files that the manifest does not list
/// (orphans) are moved before a chain is written; dmx never deletes them.
pub const ORPHANS: &str = "orphans";

/// Entry files directly in `dir` (named like `NNNNN-NAME.dmx` / `.dmxd`) that are not among
/// `listed`, sorted.
fn unlisted_entry_files(dir: &Path, listed: &BTreeSet<&str>) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for item in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let item = item.map_err(|e| Error::io(dir, e))?;
        let name = item.file_name();
        let Some(name) = name.to_str() else { continue };
        if entry_file_index(name).is_some()
            && !listed.contains(name)
            && item
                .file_type()
                .is_ok_and(|t| t.is_file() || t.is_symlink())
        {
            out.push(name.to_string());
        }
    }
    out.sort();
    Ok(out)
}

/// The orphans of the chain in `dir`: entry files that its manifest `m` does not list (left
/// by an interrupted run, or by an older manifest put back), then the files already set aside
/// in `DIR/orphans/` (as `orphans/NAME`). Readers ignore them; `verify` and `chain-info`
/// report them.
pub fn find_orphans(dir: &Path, m: &ChainManifest) -> Result<Vec<String>> {
    let listed: BTreeSet<&str> = m.entries.iter().map(|e| e.file.as_str()).collect();
    let mut out = unlisted_entry_files(dir, &listed)?;
    let aside = dir.join(ORPHANS);
    if aside.is_dir() {
        let mut kept = Vec::new();
        for item in std::fs::read_dir(&aside).map_err(|e| Error::io(&aside, e))? {
            let item = item.map_err(|e| Error::io(&aside, e))?;
            kept.push(format!("{ORPHANS}/{}", item.file_name().to_string_lossy()));
        }
        kept.sort();
        out.extend(kept);
    }
    Ok(out)
}

/// Moves the entry files in `dir` that are not among `listed` into `DIR/orphans/` (never over
/// an existing file there: `NAME.1`, `NAME.2`, ... instead). Returns their new names
/// (`orphans/...`).
fn set_aside(dir: &Path, listed: &BTreeSet<&str>, sync: bool) -> Result<Vec<String>> {
    let names = unlisted_entry_files(dir, listed)?;
    if names.is_empty() {
        return Ok(names);
    }
    let aside = dir.join(ORPHANS);
    orphans_dir(&aside, &names.join(", "))?;
    let mut moved = Vec::with_capacity(names.len());
    for name in names {
        let mut target = aside.join(&name);
        let mut n = 0;
        while target.symlink_metadata().is_ok() {
            n += 1;
            target = aside.join(format!("{name}.{n}"));
        }
        std::fs::rename(dir.join(&name), &target).map_err(|e| Error::io(dir.join(&name), e))?;
        moved.push(format!(
            "{ORPHANS}/{}",
            target.file_name().unwrap_or_default().to_string_lossy()
        ));
    }
    if sync {
        sync_dir(&aside);
        sync_dir(dir);
    }
    Ok(moved)
}

/// Refuses the output folder `-`: a chain cannot go to standard output, and a folder named `-`
/// is never created by accident (`./-` names one).
fn refuse_dash(dir: &Path) -> Result<()> {
    if crate::output::is_dash(dir) {
        return Err(Error::Usage(
            "`-` (standard output) cannot hold a chain folder; use ./- for a folder named -".into(),
        ));
    }
    Ok(())
}

/// Creates the folder `aside` (`DIR/orphans`) unless it exists as a real folder: anything else
/// there (a file, or a symbolic link, which would move `what` out of the chain folder) is
/// refused.
fn orphans_dir(aside: &Path, what: &str) -> Result<()> {
    match std::fs::create_dir(aside) {
        Ok(()) => Ok(()),
        Err(e)
            if e.kind() == std::io::ErrorKind::AlreadyExists
                && aside.symlink_metadata().is_ok_and(|m| m.is_dir()) =>
        {
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(Error::Usage(format!(
            "{}: exists and is not a folder; dmx needs it to keep files that \
             {MANIFEST} does not list ({what}): move it away",
            aside.display(),
        ))),
        Err(e) => Err(Error::io(aside, e)),
    }
}

/// Checks a checkpoint to append: one safetensors file. Returns its file name.
fn check_input(path: &Path) -> Result<String> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if meta.is_dir() {
        return Err(Error::Usage(format!(
            "{}: a chain entry must be one .safetensors file, not a folder",
            path.display()
        )));
    }
    if !meta.is_file() {
        return Err(Error::Usage(format!(
            "{}: is {}, not a regular file; a chain entry must be one .safetensors file",
            path.display(),
            kind_of(&meta)
        )));
    }
    let (root, files) = crate::plan::plan_input(path)?;
    match (root, files.first()) {
        (Root::File, Some(f)) if f.kind == EntryKind::Safetensors => {}
        (_, f) => {
            // The planner's warning says why, prefixed with the path and followed by what
            // `compress` would do instead: keep only the reason.
            let prefix = format!("{}: ", path.display());
            let why = match f.and_then(|f| f.warning.as_deref()) {
                Some(w) => {
                    let w = w.strip_prefix(&prefix).unwrap_or(w);
                    w.split("; stored as").next().unwrap_or(w).to_string()
                }
                None => "not named *.safetensors".to_string(),
            };
            return Err(Error::Usage(format!(
                "{}: {why}; chain entries must be safetensors checkpoints",
                path.display()
            )));
        }
    }
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| Error::Usage(format!("{}: file name is not UTF-8", path.display())))?;
    check_name(name).map_err(|d| Error::Usage(format!("{}: {d}", path.display())))?;
    Ok(name.to_string())
}

/// Grid steps of the quantized tensors of an anchor archive.
fn grid_of(archive: &Archive) -> BTreeMap<String, f64> {
    archive.index().entries[0]
        .segments
        .iter()
        .filter_map(|s| match (&s.kind, s.transform.lossy()) {
            (SegmentKind::Tensor(t), Some(l)) if l.step > 0.0 => Some((t.name.clone(), l.step)),
            _ => None,
        })
        .collect()
}

/// A chain opened for reading.
struct Chain<'a> {
    dir: &'a Path,
    m: &'a ChainManifest,
    opts: &'a Options,
    pool: rayon::ThreadPool,
}

/// An error's message without the path it starts with (for messages that already name the
/// file).
fn detail_of(err: &Error) -> String {
    match err {
        Error::Format { source, .. } => source.to_string(),
        Error::Corrupt { what, detail, .. } => format!("{what}: {detail}"),
        Error::Mismatch { detail, .. } => detail.clone(),
        Error::Io { source, .. } => source.to_string(),
        other => other.to_string(),
    }
}

/// What a walk over a chain did to one entry: restored to this path, or failed.
type Outcome = std::result::Result<PathBuf, Error>;

impl<'a> Chain<'a> {
    fn new(dir: &'a Path, m: &'a ChainManifest, opts: &'a Options) -> Result<Self> {
        Ok(Self {
            dir,
            m,
            opts,
            pool: opts.pool()?,
        })
    }

    fn path_of(&self, e: &ChainEntry) -> PathBuf {
        self.dir.join(&e.file)
    }

    fn corrupt(&self, e: &ChainEntry, detail: impl Into<String>) -> Error {
        Error::Corrupt {
            path: self.path_of(e),
            what: format!("chain entry {}", e.index),
            detail: detail.into(),
        }
    }

    /// Checks the size and SHA-256 of the stored file against the manifest.
    fn check_stored(&self, e: &ChainEntry) -> Result<()> {
        let (sha, size) = sha256_file(&self.path_of(e)).map_err(|err| match err {
            Error::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => self
                .corrupt(
                    e,
                    format!("missing: {MANIFEST} lists it but the file does not exist"),
                ),
            Error::Io { source, .. } => self.corrupt(e, format!("cannot be read: {source}")),
            other => other,
        })?;
        if size != e.stored_size {
            return Err(self.corrupt(
                e,
                format!(
                    "{size} bytes where {MANIFEST} records {} (the file is damaged)",
                    e.stored_size
                ),
            ));
        }
        if sha != e.stored_sha256 {
            return Err(self.corrupt(
                e,
                format!(
                    "SHA-256 of the stored file does not match {MANIFEST} (the file is damaged)"
                ),
            ));
        }
        Ok(())
    }

    /// Opens an entry (after [`Chain::check_stored`] unless `hashed`) and checks its index
    /// against the manifest: kind, restored SHA-256 and size, and a delta's base.
    fn load(&self, e: &ChainEntry, hashed: bool) -> Result<Archive> {
        if !hashed {
            self.check_stored(e)?;
        }
        let archive =
            Archive::open(&self.path_of(e)).map_err(|err| self.corrupt(e, detail_of(&err)))?;
        let index = archive.index();
        let want = match e.kind {
            ChainEntryKind::Anchor => EntryKind::Safetensors,
            ChainEntryKind::Delta => EntryKind::SafetensorsDelta,
        };
        if index.root != Root::File || index.entries.len() != 1 || index.entries[0].kind != want {
            return Err(self.corrupt(
                e,
                format!("is not a single-file {} archive", e.kind.as_str()),
            ));
        }
        let entry = &index.entries[0];
        if hex(&entry.sha256) != e.restored_sha256 || entry.size != e.original_size {
            return Err(self.corrupt(
                e,
                format!("restores another file than {MANIFEST} records (SHA-256 or size differ)"),
            ));
        }
        if e.kind == ChainEntryKind::Delta {
            let parent = &self.m.entries[e.index - 1];
            let ok = entry.base.as_ref().is_some_and(|b| {
                hex(&b.sha256) == parent.restored_sha256 && b.size == parent.original_size
            });
            if !ok {
                return Err(self.corrupt(
                    e,
                    format!("was not made from entry {} ({})", parent.index, parent.file),
                ));
            }
        }
        Ok(archive)
    }

    /// Restores an opened entry to `dest`: see [`restore_entry`].
    fn restore(
        &self,
        archive: &Archive,
        base: Option<&Path>,
        dest: &Path,
        force: bool,
        sync: bool,
    ) -> Result<()> {
        restore_entry(&self.pool, self.opts, archive, base, dest, force, sync)
    }

    /// Restores the entries `needed` (ascending, closed under parents) one by one, each from
    /// its parent's reconstruction. `dest(i)` is the output of entry `i`, or `None` for a
    /// scratch file in `scratch` (removed once the next entry is built). `done` gets every
    /// entry's outcome; an entry that fails (corrupt or missing) fails the deltas after it
    /// until the next anchor, and the others go on. Errors that are not about the chain's
    /// data (writing an output) stop the walk. Returns the last entry's reconstruction if it
    /// succeeded.
    fn rebuild(
        &self,
        needed: &[usize],
        scratch: &Path,
        hashed: &dyn Fn(usize) -> bool,
        dest: &dyn Fn(usize) -> Option<PathBuf>,
        done: &mut dyn FnMut(usize, Outcome),
    ) -> Result<Option<(usize, PathBuf)>> {
        // The last reconstruction: (index, path, is a scratch file).
        let mut prev: Option<(usize, PathBuf, bool)> = None;
        // The entry whose failure breaks the current run of deltas, with its error.
        let mut broken: Option<(usize, String)> = None;
        for &i in needed {
            let e = &self.m.entries[i];
            let base = match (e.kind, &prev) {
                (ChainEntryKind::Anchor, _) => None,
                (ChainEntryKind::Delta, Some((p, path, _))) if *p + 1 == i => Some(path.clone()),
                (ChainEntryKind::Delta, _) => {
                    let (j, why) = broken
                        .clone()
                        .unwrap_or((i - 1, "it was not reconstructed".into()));
                    let parent = &self.m.entries[j];
                    done(
                        i,
                        Err(self.corrupt(
                            e,
                            format!(
                                "not reconstructed: it depends on entry {j} ({}), which failed: \
                                 {why}",
                                parent.file
                            ),
                        )),
                    );
                    continue;
                }
            };
            let (path, is_scratch, force, sync) = match dest(i) {
                Some(p) => (p, false, self.opts.force, !self.opts.no_sync),
                None => (
                    scratch.join(format!("{i:05}-{}", e.name)),
                    true,
                    true,
                    false,
                ),
            };
            let result = self
                .load(e, hashed(i))
                .and_then(|a| self.restore(&a, base.as_deref(), &path, force, sync));
            if let Some((_, p, true)) = prev.take() {
                let _ = std::fs::remove_file(p);
            }
            match result {
                Ok(()) => {
                    done(i, Ok(path.clone()));
                    prev = Some((i, path, is_scratch));
                    broken = None;
                }
                Err(err) if err.is_integrity_failure() => {
                    broken = Some((i, detail_of(&err)));
                    done(i, Err(err));
                }
                Err(err) => return Err(err),
            }
        }
        Ok(prev.map(|(i, p, _)| (i, p)))
    }
}

/// Restores an opened chain entry to `dest` (atomically); `base` is the parent's
/// reconstruction for deltas. Checks every chunk, tensor and the file's SHA-256.
fn restore_entry(
    pool: &rayon::ThreadPool,
    opts: &Options,
    archive: &Archive,
    base: Option<&Path>,
    dest: &Path,
    force: bool,
    sync: bool,
) -> Result<()> {
    let o = Options {
        threads: opts.threads,
        force,
        no_sync: !sync,
        progress: opts.progress.clone(),
    };
    let progress = o.progress.as_deref();
    let entry = &archive.index().entries[0];
    if let Some(p) = progress {
        p.start("reconstructing", entry.size);
    }
    pool.install(|| match base {
        Some(b) => {
            let base = Base::open(b, &o)?;
            restore_delta_to(archive, &base, dest, &o)
        }
        None => {
            let mut out = AtomicFile::create(dest, force, sync)?;
            write_entry(archive, entry, &[], progress, |d| out.write_all(d))?;
            out.commit()
        }
    })?;
    if let Some(p) = progress {
        p.finish();
    }
    Ok(())
}

/// Creates the chain folder `dir` and stores `checkpoints` in it, in order (see the module
/// docs). The chain is built in a temporary folder (`.dmx-tmp-*`) and moved into place only
/// when complete, so a failed run leaves nothing behind. `dir` must not exist or be empty,
/// unless `opts.force`: then the chain in it (its manifest and the entry files it lists) is
/// replaced once the new one is complete; other files are left alone, and entry files that
/// no valid manifest lists, or a `manifest.json` that is not a valid one, are moved into
/// `DIR/orphans/` (listed in [`ChainReport::set_aside`]), never deleted.
pub fn chain_compress(
    checkpoints: &[PathBuf],
    dir: &Path,
    c: &ChainOptions,
    opts: &Options,
) -> Result<ChainReport> {
    let start = Instant::now();
    if checkpoints.is_empty() {
        return Err(Error::Usage(
            "chain-compress needs at least one checkpoint".into(),
        ));
    }
    let names = checkpoints
        .iter()
        .map(|p| check_input(p))
        .collect::<Result<Vec<_>>>()?;
    for (i, (p, n)) in checkpoints.iter().zip(&names).enumerate() {
        check_entry_name_len(p, i, n)?;
    }
    refuse_dash(dir)?;
    opts.pool()?;
    let existing = match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => true,
        Ok(_) => {
            return Err(Error::Usage(format!(
                "{}: exists and is not a folder",
                dir.display()
            )));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if dir.symlink_metadata().is_ok() {
                return Err(Error::Usage(format!(
                    "{}: is a symbolic link to nothing; remove it or choose another folder",
                    dir.display()
                )));
            }
            false
        }
        Err(e) => return Err(Error::io(dir, e)),
    };
    let mut report = if existing {
        compress_into_existing(checkpoints, &names, dir, c, opts, start)?
    } else {
        compress_into_new(checkpoints, &names, dir, c, opts, start)?
    };
    report.dir = dir.display().to_string();
    report.seconds = start.elapsed().as_secs_f64();
    Ok(report)
}

/// An I/O error on a temporary file inside `dir` (the chain being built, a work folder)
/// reported on `dir` instead: the temporary names mean nothing to the user.
fn unstage(err: Error, staging: &Path, dir: &Path) -> Error {
    match err {
        Error::Io { path, source } if path.starts_with(staging) => Error::Io {
            path: dir.to_path_buf(),
            // The OS error alone: some carry the temporary path as context.
            source: match source.raw_os_error() {
                Some(code) => std::io::Error::from_raw_os_error(code),
                None => {
                    let text = source.to_string();
                    match text.split_once(" at path ") {
                        Some((what, _)) => std::io::Error::new(source.kind(), what.to_string()),
                        None => source,
                    }
                }
            },
        },
        other => other,
    }
}

/// Builds the chain in `staging` (a new, empty folder), with its work folder inside.
fn build_chain(
    checkpoints: &[PathBuf],
    names: &[String],
    staging: &Path,
    c: &ChainOptions,
    opts: &Options,
    start: Instant,
) -> Result<ChainReport> {
    let mut m = ChainManifest::new(c);
    let work = work_dir(staging)?;
    let mut cursor = Cursor::default();
    let report = append_all(
        staging,
        &mut m,
        checkpoints,
        names,
        &mut cursor,
        work.path(),
        opts,
        start,
    )?;
    drop(work);
    Ok(report)
}

/// `chain_compress` into a folder that does not exist: built in a temporary folder beside it,
/// renamed into place when complete. Parent folders it had to create are removed again on
/// failure.
fn compress_into_new(
    checkpoints: &[PathBuf],
    names: &[String],
    dir: &Path,
    c: &ChainOptions,
    opts: &Options,
    start: Instant,
) -> Result<ChainReport> {
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    // The parent folders to create, deepest first (removed again if the run fails).
    let mut created: Vec<PathBuf> = parent
        .ancestors()
        .take_while(|a| !a.as_os_str().is_empty() && a.symlink_metadata().is_err())
        .map(Path::to_path_buf)
        .collect();
    std::fs::create_dir_all(&parent).map_err(|e| Error::io(&parent, e))?;
    let result = (|| {
        // Registered with the signal cleanup (`crate::remove_temps`), like every temporary.
        let staging = crate::output::temp_dir_in(&parent)?;
        let report = build_chain(checkpoints, names, staging.path(), c, opts, start)
            .map_err(|e| unstage(e, staging.path(), dir))?;
        // Rename into place: fails (and the staging folder is removed) if `dir` appeared
        // meanwhile and is not empty.
        match std::fs::rename(staging.path(), dir) {
            Ok(()) => {}
            Err(e) if dir.symlink_metadata().is_ok() => {
                return Err(Error::Usage(format!(
                    "{}: was created by someone else while the chain was being built ({e}); \
                     nothing was written",
                    dir.display()
                )));
            }
            Err(e) => return Err(Error::io(dir, e)),
        }
        let _ = staging.keep();
        if !opts.no_sync {
            sync_dir(&parent);
        }
        Ok(report)
    })();
    if result.is_err() {
        for d in created.drain(..) {
            let _ = std::fs::remove_dir(d);
        }
    }
    result
}

/// `chain_compress` into an existing folder (empty, or any with `opts.force`): the new chain
/// is built in a temporary folder inside it, then swapped in (see [`swap_in`]).
fn compress_into_existing(
    checkpoints: &[PathBuf],
    names: &[String],
    dir: &Path,
    c: &ChainOptions,
    opts: &Options,
    start: Instant,
) -> Result<ChainReport> {
    let _lock = lock_dir(dir)?;
    let mut busy = Vec::new();
    for item in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let item = item.map_err(|e| Error::io(dir, e))?;
        let name = item.file_name().to_string_lossy().into_owned();
        if !name.starts_with(TEMP_PREFIX) {
            busy.push(name);
        }
    }
    if !busy.is_empty() && !opts.force {
        let what = if dir.join(MANIFEST).is_file() {
            "holds a chain; use --force to replace it, or `dmx chain-append` to add to it"
        } else {
            "exists and is not empty; use --force to create the chain in it anyway (files \
             other than the chain's are kept)"
        };
        return Err(Error::Usage(format!("{}: {what}", dir.display())));
    }
    clean_temps(dir, None)?;
    // The chain being replaced, if the folder holds a valid one.
    let old = if dir.join(MANIFEST).symlink_metadata().is_ok() {
        read_manifest(dir).ok()
    } else {
        None
    };
    let staging = work_dir(dir)?;
    let report = build_chain(checkpoints, names, staging.path(), c, opts, start)
        .map_err(|e| unstage(e, staging.path(), dir))?;
    let set_aside = swap_in(dir, staging.path(), old.as_ref(), !opts.no_sync)?;
    Ok(ChainReport {
        set_aside,
        ..report
    })
}

/// Replaces the chain in `dir` (`old`, if any) by the complete chain in `staging` (a folder
/// inside `dir`): the entry files no valid manifest lists (and an invalid `manifest.json`)
/// are moved into `DIR/orphans/`; the old manifest and the files it lists are moved into a
/// temporary folder; the new entry files are moved in, then the new manifest (the moment the
/// new chain appears); then the old files are deleted. If a step fails, what was moved is
/// moved back (best effort). Returns the files set aside.
fn swap_in(
    dir: &Path,
    staging: &Path,
    old: Option<&ChainManifest>,
    sync: bool,
) -> Result<Vec<String>> {
    let listed: BTreeSet<&str> = old
        .map(|m| m.entries.iter().map(|e| e.file.as_str()).collect())
        .unwrap_or_default();
    // Once files start moving, a signal waits for the swap to end (or be undone).
    let _commit = crate::output::commit_guard();
    let mut set_aside = set_aside(dir, &listed, sync)?;
    if old.is_none() && dir.join(MANIFEST).symlink_metadata().is_ok() {
        // Not a valid manifest (or not a file): not ours to delete.
        let aside = dir.join(ORPHANS);
        orphans_dir(&aside, MANIFEST)?;
        let mut target = aside.join(MANIFEST);
        let mut n = 0;
        while target.symlink_metadata().is_ok() {
            n += 1;
            target = aside.join(format!("{MANIFEST}.{n}"));
        }
        std::fs::rename(dir.join(MANIFEST), &target)
            .map_err(|e| Error::io(dir.join(MANIFEST), e))?;
        set_aside.push(format!(
            "{ORPHANS}/{}",
            target.file_name().unwrap_or_default().to_string_lossy()
        ));
    }
    let trash = work_dir(dir)?;
    let mut old_files: Vec<String> = Vec::new();
    if old.is_some() {
        old_files.push(MANIFEST.to_string());
        // Only regular files: anything else of that name is not an entry dmx wrote (if the
        // new chain needs the name, moving the new file in fails and everything is undone).
        old_files.extend(
            listed
                .iter()
                .filter(|f| {
                    dir.join(f)
                        .symlink_metadata()
                        .is_ok_and(|m| m.file_type().is_file())
                })
                .map(|f| f.to_string()),
        );
    }
    let new_files: Vec<String> = {
        let m = read_manifest(staging)?;
        let mut v: Vec<String> = m.entries.into_iter().map(|e| e.file).collect();
        v.push(MANIFEST.to_string());
        v
    };
    // Moves recorded for the rollback: (from, to).
    let mut done: Vec<(PathBuf, PathBuf)> = Vec::new();
    let step =
        |from: PathBuf, to: PathBuf, done: &mut Vec<(PathBuf, PathBuf)>| match std::fs::rename(
            &from, &to,
        ) {
            Ok(()) => {
                done.push((from, to));
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !from.exists() => Ok(()),
            Err(e) => Err(Error::io(&from, e)),
        };
    let result = (|| {
        for f in &old_files {
            step(dir.join(f), trash.path().join(f), &mut done)?;
        }
        for f in &new_files {
            step(staging.join(f), dir.join(f), &mut done)?;
        }
        Ok(())
    })();
    if let Err(e) = result {
        for (from, to) in done.into_iter().rev() {
            let _ = std::fs::rename(to, from);
        }
        return Err(e);
    }
    if sync {
        sync_dir(dir);
    }
    Ok(set_aside)
}

/// Adds `checkpoints` to the chain in `dir`, in order, with the chain's precision and depth
/// limit. The manifest is replaced after every entry, atomically: an interrupted append
/// leaves a valid chain of the entries committed so far; leftovers of interrupted runs are
/// removed first.
pub fn chain_append(dir: &Path, checkpoints: &[PathBuf], opts: &Options) -> Result<ChainReport> {
    let start = Instant::now();
    if checkpoints.is_empty() {
        return Err(Error::Usage(
            "chain-append needs at least one checkpoint".into(),
        ));
    }
    read_manifest(dir)?;
    let names = checkpoints
        .iter()
        .map(|p| check_input(p))
        .collect::<Result<Vec<_>>>()?;
    let _lock = lock_dir(dir)?;
    // Read again under the lock: another writer may have appended meanwhile.
    let mut m = read_manifest(dir)?;
    clean_temps(dir, None)?;
    let listed: BTreeSet<&str> = m.entries.iter().map(|e| e.file.as_str()).collect();
    let set_aside = set_aside(dir, &listed, !opts.no_sync)?;
    let work = work_dir(dir)?;
    let mut cursor = Cursor::default();
    if let Some(last) = m.entries.last()
        && last.depth < m.max_depth
    {
        // The next entry may be a delta: its base is the last entry's reconstruction.
        let chain = Chain::new(dir, &m, opts)?;
        let needed: Vec<usize> = m.needed_for(last.index).collect();
        let mut failure = None;
        let rebuilt = chain.rebuild(&needed, work.path(), &|_| false, &|_| None, &mut |_, r| {
            if let Err(e) = r
                && failure.is_none()
            {
                failure = Some(e);
            }
        })?;
        if let Some(e) = failure {
            return Err(e);
        }
        cursor.base = rebuilt.map(|(_, p)| p);
        if m.precision != Precision::Lossless {
            let anchor = &m.entries[needed[0]];
            let archive = Archive::open(&dir.join(&anchor.file))?;
            cursor.grid = grid_of(&archive).into_iter().collect();
        }
    }
    let report = append_all(
        dir,
        &mut m,
        checkpoints,
        &names,
        &mut cursor,
        work.path(),
        opts,
        start,
    )
    .map_err(|e| unstage(e, work.path(), dir))?;
    Ok(ChainReport {
        set_aside,
        ..report
    })
}

fn work_dir(dir: &Path) -> Result<crate::output::TempDir> {
    crate::output::temp_dir_in(dir)
}

/// The base for the next delta.
#[derive(Default)]
struct Cursor {
    /// The last entry's reconstruction (its original for lossless chains), when the next
    /// entry may be a delta.
    base: Option<PathBuf>,
    /// The current anchor's grid (quantized chains).
    grid: HashMap<String, f64>,
}

#[allow(clippy::too_many_arguments)]
fn append_all(
    dir: &Path,
    m: &mut ChainManifest,
    checkpoints: &[PathBuf],
    names: &[String],
    cursor: &mut Cursor,
    work: &Path,
    opts: &Options,
    start: Instant,
) -> Result<ChainReport> {
    let entries_before = m.entries.len();
    for (j, (p, n)) in checkpoints.iter().zip(names).enumerate() {
        check_entry_name_len(p, entries_before + j, n)?;
    }
    let sync = !opts.no_sync;
    let inner = Options {
        threads: opts.threads,
        force: true,
        no_sync: opts.no_sync,
        progress: opts.progress.clone(),
    };
    let lossy = LossyOptions {
        mode: match m.precision {
            Precision::Lossless => Mode::Lossless,
            Precision::Int16 => Mode::Int16,
            Precision::Int32 => Mode::Int32,
        },
        ..LossyOptions::default()
    };
    let pool = opts.pool()?;
    let standalone = work.join("standalone.dmx");
    let delta = work.join("delta.dmxd");
    let mut appended = Vec::with_capacity(checkpoints.len());
    for (j, (ckpt, name)) in checkpoints.iter().zip(names).enumerate() {
        let t0 = Instant::now();
        let index = m.entries.len();
        let source = input_alias(work, ckpt, name)?;
        let standalone_size =
            crate::compress_with(&source, &standalone, &lossy, &inner)?.output_bytes;
        let prev = m.entries.last();
        let (mut delta_size, mut delta_error) = (None, None);
        if let (Some(p), Some(base)) = (prev, &cursor.base)
            && p.depth < m.max_depth
        {
            let d = DeltaOptions {
                precision: m.precision,
                steps: (m.precision != Precision::Lossless).then(|| cursor.grid.clone()),
            };
            match crate::delta_compress(base, &source, &delta, &d, &inner) {
                Ok(r) => delta_size = Some(r.output_bytes),
                // A delta the engine refuses to store (a usage-type error: nothing is wrong
                // with the chain or the disk) leaves the standalone archive: an anchor.
                Err(Error::Usage(why)) => delta_error = Some(why),
                Err(e) => return Err(e),
            }
        }
        // The delta only when strictly smaller: the entry never exceeds its standalone size,
        // and ties go to the anchor, which is cheaper to restore.
        let kind = match delta_size {
            Some(d) if d < standalone_size => ChainEntryKind::Delta,
            _ => ChainEntryKind::Anchor,
        };
        let (src, loser) = match kind {
            ChainEntryKind::Anchor => (&standalone, &delta),
            ChainEntryKind::Delta => (&delta, &standalone),
        };
        let archive = Archive::open(src)?;
        let want = match kind {
            ChainEntryKind::Anchor => EntryKind::Safetensors,
            ChainEntryKind::Delta => EntryKind::SafetensorsDelta,
        };
        if archive.index().entries.first().map(|e| e.kind) != Some(want) {
            return Err(Error::Usage(format!(
                "{}: is no longer a valid safetensors file (it changed while being read)",
                ckpt.display()
            )));
        }
        let restored = archive.index().entries[0].sha256;
        let original_size = archive.index().entries[0].size;
        let original_sha256 = if m.precision == Precision::Lossless {
            // Both archives hashed the input as they read it: they must agree.
            if kind == ChainEntryKind::Delta
                && Archive::open(&standalone)?.index().entries[0].sha256 != restored
            {
                return Err(Error::Usage(format!(
                    "{}: the file changed while being read",
                    ckpt.display()
                )));
            }
            hex(&restored)
        } else {
            let (sha, size) = sha256_file(ckpt)?;
            if size != original_size {
                return Err(Error::Usage(format!(
                    "{}: the file changed while being read",
                    ckpt.display()
                )));
            }
            sha
        };
        let steps = match (kind, m.precision) {
            (ChainEntryKind::Anchor, Precision::Int16 | Precision::Int32) => grid_of(&archive),
            _ => BTreeMap::new(),
        };
        let (stored_sha256, stored_size) = sha256_file(src)?;
        let depth = match kind {
            ChainEntryKind::Anchor => 0,
            ChainEntryKind::Delta => prev.map_or(0, |p| p.depth + 1),
        };
        let entry = ChainEntry {
            index,
            name: name.clone(),
            file: entry_file_name(index, name, kind),
            kind,
            parent: (kind == ChainEntryKind::Delta).then(|| index - 1),
            depth,
            original_sha256,
            original_size,
            restored_sha256: hex(&restored),
            stored_sha256,
            stored_size,
            standalone_size,
            steps,
        };
        // The base of the next entry, if it may be a delta.
        if j + 1 < checkpoints.len() && depth < m.max_depth {
            if m.precision == Precision::Lossless {
                cursor.base = Some(ckpt.clone());
            } else {
                let recon = work.join(format!("restored-{index:05}.safetensors"));
                let base = match kind {
                    ChainEntryKind::Anchor => None,
                    ChainEntryKind::Delta => cursor.base.clone(),
                };
                restore_entry(&pool, opts, &archive, base.as_deref(), &recon, true, false)?;
                if let Some(old) = cursor.base.replace(recon) {
                    let _ = std::fs::remove_file(old);
                }
            }
            if kind == ChainEntryKind::Anchor && m.precision != Precision::Lossless {
                cursor.grid = entry.steps.clone().into_iter().collect();
            }
        } else {
            cursor.base = None;
        }
        drop(archive);
        // Commit: the entry file first (it replaces any orphan of that name), then the
        // manifest that references it.
        let dest = dir.join(&entry.file);
        std::fs::rename(src, &dest).map_err(|e| Error::io(&dest, e))?;
        if sync {
            sync_dir(dir);
        }
        let _ = std::fs::remove_file(loser);
        m.entries.push(entry.clone());
        write_manifest(dir, m, sync)?;
        appended.push(AppendedEntry {
            entry,
            delta_size,
            delta_error,
            seconds: t0.elapsed().as_secs_f64(),
        });
    }
    let sum = |f: fn(&AppendedEntry) -> u64| appended.iter().map(f).sum::<u64>();
    Ok(ChainReport {
        dir: dir.display().to_string(),
        precision: m.precision,
        max_depth: m.max_depth,
        entries_before,
        entries: m.entries.len(),
        original_bytes: sum(|a| a.entry.original_size),
        stored_bytes: sum(|a| a.entry.stored_size),
        standalone_bytes: sum(|a| a.entry.standalone_size),
        appended,
        set_aside: Vec::new(),
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// One entry restored by [`chain_reconstruct`].
#[derive(Debug, Clone, Serialize)]
pub struct ReconstructedEntry {
    /// Chain index.
    pub index: usize,
    /// Original file name.
    pub name: String,
    /// The file written, when it succeeded.
    pub output: Option<String>,
    /// Why it failed (the entry is missing or corrupt, or depends on one that is).
    pub error: Option<String>,
}

/// What [`chain_reconstruct`] did.
#[derive(Debug, Clone, Serialize)]
pub struct ReconstructReport {
    /// The chain folder.
    pub dir: String,
    /// The output folder.
    pub output_dir: String,
    /// True when every requested entry was restored.
    pub ok: bool,
    /// The requested entries, in index order.
    pub entries: Vec<ReconstructedEntry>,
    /// Every entry that was read (requested entries, their anchors and the deltas between).
    pub touched: Vec<usize>,
    /// Bytes written.
    pub output_bytes: u64,
    /// Wall time in seconds.
    pub seconds: f64,
}

/// Restores the entries `indices` (all when `None`) of the chain in `dir` into the folder
/// `output` (created if needed) under their original file names, prefixed with their index
/// (`{index:05}-`) only when two requested entries share a name. Reads only the anchors and
/// deltas the requested entries need; checks every stored file's SHA-256 before use and every
/// restored file's after. A missing or corrupt entry fails the entries that depend on it (the
/// report names it) while the others are restored; existing outputs are refused unless
/// `opts.force`.
pub fn chain_reconstruct(
    dir: &Path,
    output: &Path,
    indices: Option<&[usize]>,
    opts: &Options,
) -> Result<ReconstructReport> {
    let start = Instant::now();
    let m = read_manifest(dir)?;
    let n = m.entries.len();
    let requested: BTreeSet<usize> = match indices {
        Some(list) => {
            if let Some(&bad) = list.iter().find(|&&i| i >= n) {
                return Err(Error::Usage(format!(
                    "index {bad} is out of range: the chain in {} has {n} entries (0..{})",
                    dir.display(),
                    n.saturating_sub(1)
                )));
            }
            list.iter().copied().collect()
        }
        None => (0..n).collect(),
    };
    refuse_dash(output)?;
    check_output_dir(dir, output)?;
    let mut count: HashMap<&str, usize> = HashMap::new();
    for &i in &requested {
        *count.entry(m.entries[i].name.as_str()).or_default() += 1;
    }
    let mut out_name: BTreeMap<usize, String> = requested
        .iter()
        .map(|&i| {
            let name = &m.entries[i].name;
            let n = if count[name.as_str()] > 1 {
                format!("{i:05}-{name}")
            } else {
                name.clone()
            };
            (i, n)
        })
        .collect();
    let distinct: BTreeSet<&String> = out_name.values().collect();
    if distinct.len() != out_name.len() {
        for (i, n) in out_name.iter_mut() {
            *n = format!("{i:05}-{}", m.entries[*i].name);
        }
    }
    let chain = Chain::new(dir, &m, opts)?;
    for n in out_name.values() {
        check_output_file(&output.join(n), opts.force)?;
    }
    let created = match std::fs::metadata(output) {
        Ok(_) => false,
        Err(_) => {
            std::fs::create_dir_all(output).map_err(|e| Error::io(output, e))?;
            true
        }
    };
    let needed: BTreeSet<usize> = requested.iter().flat_map(|&i| m.needed_for(i)).collect();
    let needed: Vec<usize> = needed.into_iter().collect();
    let result = restore_into(&chain, &m, output, &requested, &out_name, &needed);
    if created && result.as_ref().map_or(true, |(_, bytes)| *bytes == 0) {
        // Nothing was restored: do not leave the empty folder this run created.
        let _ = std::fs::remove_dir(output);
    }
    let (entries, output_bytes) = result?;
    Ok(ReconstructReport {
        dir: dir.display().to_string(),
        output_dir: output.display().to_string(),
        ok: entries.iter().all(|e| e.error.is_none()),
        entries,
        touched: needed,
        output_bytes,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// The restoring part of [`chain_reconstruct`]: the entries `needed` rebuilt with a scratch
/// folder in `output`, the `requested` ones written there under `out_name`. Returns the
/// requested entries' outcomes and the bytes written.
fn restore_into(
    chain: &Chain<'_>,
    m: &ChainManifest,
    output: &Path,
    requested: &BTreeSet<usize>,
    out_name: &BTreeMap<usize, String>,
    needed: &[usize],
) -> Result<(Vec<ReconstructedEntry>, u64)> {
    let scratch = work_dir(output)?;
    let mut entries: BTreeMap<usize, ReconstructedEntry> = BTreeMap::new();
    let mut output_bytes = 0;
    chain.rebuild(
        needed,
        scratch.path(),
        &|_| false,
        &|i| out_name.get(&i).map(|n| output.join(n)),
        &mut |i, r| {
            if !requested.contains(&i) {
                return;
            }
            let e = &m.entries[i];
            let (out, error) = match r {
                Ok(p) => {
                    output_bytes += e.original_size;
                    (Some(p.display().to_string()), None)
                }
                Err(err) => (None, Some(err.to_string())),
            };
            entries.insert(
                i,
                ReconstructedEntry {
                    index: i,
                    name: e.name.clone(),
                    output: out,
                    error,
                },
            );
        },
    )?;
    Ok((entries.into_values().collect(), output_bytes))
}

/// `path` made absolute with every symbolic link, `.` and `..` resolved, also when its last
/// components do not exist yet (those are resolved by their spelling).
fn resolve(path: &Path) -> Result<PathBuf> {
    let abs = std::path::absolute(path).map_err(|e| Error::io(path, e))?;
    let parts: Vec<std::path::Component> = abs.components().collect();
    for k in (1..=parts.len()).rev() {
        let prefix: PathBuf = parts[..k].iter().collect();
        if let Ok(mut r) = prefix.canonicalize() {
            for c in &parts[k..] {
                match c {
                    std::path::Component::ParentDir => {
                        r.pop();
                    }
                    std::path::Component::Normal(n) => r.push(n),
                    _ => {}
                }
            }
            return Ok(r);
        }
    }
    Ok(abs)
}

/// Refuses an output folder that is the chain folder `dir`, is inside it, or contains it,
/// however spelled (`.`, `..`, `x/..`, symbolic links), or that exists and is not a folder.
fn check_output_dir(dir: &Path, output: &Path) -> Result<()> {
    let chain = dir.canonicalize().map_err(|e| Error::io(dir, e))?;
    let out = resolve(output)?;
    let why = if out == chain {
        Some(("is the chain folder", "a folder outside it"))
    } else if out.starts_with(&chain) {
        Some(("is inside the chain folder", "a folder outside it"))
    } else {
        // An OUT that merely holds the chain folder (`--output-dir .` beside `./chain`) is
        // fine: only the restored files are written, and none may replace a folder.
        None
    };
    if let Some((why, hint)) = why {
        return Err(Error::Usage(format!(
            "output folder {} {why} {}; restore into {hint}",
            output.display(),
            dir.display()
        )));
    }
    match std::fs::symlink_metadata(output) {
        Ok(_) if output.is_dir() => Ok(()),
        Ok(meta) => Err(Error::Usage(format!(
            "output folder {}: exists and is {}, not a folder",
            output.display(),
            kind_of(&meta)
        ))),
        Err(_) => Ok(()),
    }
}

/// "a folder", "a symbolic link", "a FIFO", ... for messages.
fn kind_of(meta: &std::fs::Metadata) -> &'static str {
    let t = meta.file_type();
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if t.is_fifo() {
            return "a FIFO";
        }
        if t.is_char_device() || t.is_block_device() {
            return "a device";
        }
        if t.is_socket() {
            return "a socket";
        }
    }
    if t.is_symlink() {
        "a symbolic link"
    } else if t.is_dir() {
        "a folder"
    } else if t.is_file() {
        "a file"
    } else {
        "a special file"
    }
}

/// An output file of a restore may be written: it does not exist, or is a regular file (not
/// a symbolic link) and `force` is set.
fn check_output_file(path: &Path, force: bool) -> Result<()> {
    match std::fs::symlink_metadata(path) {
        Err(_) => Ok(()),
        Ok(meta) if meta.file_type().is_file() => {
            if force {
                Ok(())
            } else {
                Err(Error::Usage(format!(
                    "{}: already exists; use --force to overwrite it",
                    path.display()
                )))
            }
        }
        Ok(meta) => Err(Error::Usage(format!(
            "{}: exists and is {}; dmx only replaces regular files: move it away",
            path.display(),
            kind_of(&meta)
        ))),
    }
}

/// One entry checked by [`chain_verify`].
#[derive(Debug, Clone, Serialize)]
pub struct VerifiedEntry {
    /// Chain index.
    pub index: usize,
    /// Original file name.
    pub name: String,
    /// The stored file.
    pub file: String,
    /// Anchor or delta.
    pub kind: ChainEntryKind,
    /// The stored file exists and its size and SHA-256 match the manifest.
    pub stored_ok: bool,
    /// It restored (from its parent's reconstruction) to a file whose SHA-256 is
    /// `restored_sha256`.
    pub restored_ok: bool,
    /// The first problem found.
    pub error: Option<String>,
}

/// What [`chain_verify`] found.
#[derive(Debug, Clone, Serialize)]
pub struct ChainVerifyReport {
    /// The chain folder.
    pub dir: String,
    /// The chain's precision.
    pub precision: Precision,
    /// True when every entry passed.
    pub ok: bool,
    /// Per entry.
    pub entries: Vec<VerifiedEntry>,
    /// Files in the folder that look like entries but that the manifest does not list, and
    /// files kept in `DIR/orphans/` (see [`find_orphans`]): ignored, reported as a warning.
    pub orphans: Vec<String>,
    /// Wall time in seconds.
    pub seconds: f64,
}

/// Checks the chain in `dir` without the originals: the size and SHA-256 of every stored
/// file, then every entry restored in order (into a temporary folder, each from its parent's
/// reconstruction) against its `restored_sha256`, with every chunk checksum and tensor hash
/// on the way. A manifest that does not parse is an error (corrupt); problems with entries are
/// reported per entry.
pub fn chain_verify(dir: &Path, opts: &Options) -> Result<ChainVerifyReport> {
    let start = Instant::now();
    let m = read_manifest(dir)?;
    let chain = Chain::new(dir, &m, opts)?;
    let mut entries: Vec<VerifiedEntry> = m
        .entries
        .iter()
        .map(|e| VerifiedEntry {
            index: e.index,
            name: e.name.clone(),
            file: e.file.clone(),
            kind: e.kind,
            stored_ok: false,
            restored_ok: false,
            error: None,
        })
        .collect();
    for (v, e) in entries.iter_mut().zip(&m.entries) {
        match chain.check_stored(e) {
            Ok(()) => v.stored_ok = true,
            Err(err) if err.is_integrity_failure() => v.error = Some(err.to_string()),
            Err(err) => return Err(err),
        }
    }
    let stored: Vec<bool> = entries.iter().map(|v| v.stored_ok).collect();
    let scratch = crate::output::temp_dir_in(&std::env::temp_dir())?;
    let all: Vec<usize> = (0..m.entries.len()).collect();
    chain.rebuild(
        &all,
        scratch.path(),
        &|i| stored[i],
        &|_| None,
        &mut |i, r| {
            let v = &mut entries[i];
            match r {
                Ok(_) => v.restored_ok = true,
                Err(err) => {
                    v.error.get_or_insert_with(|| err.to_string());
                }
            }
        },
    )?;
    Ok(ChainVerifyReport {
        dir: dir.display().to_string(),
        precision: m.precision,
        ok: entries.iter().all(|v| v.stored_ok && v.restored_ok),
        entries,
        orphans: find_orphans(dir, &m)?,
        seconds: start.elapsed().as_secs_f64(),
    })
}

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

fn percent(part: i64, whole: u64) -> Option<f64> {
    (whole > 0).then(|| 100.0 * part as f64 / whole as f64)
}

/// Describes the chain in `dir` from its manifest and the index of every entry (no data is
/// decoded or hashed: use [`chain_verify`] for that).
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
            e.steps.insert(format!("t{i}"), x);
        }
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
        assert_eq!(back.entries[0].steps["t0"], 0.5);
    }
}
