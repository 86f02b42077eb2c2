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

mod append;
mod build;
mod compress;
mod folder;
mod info;
mod manifest;
mod orphans;
mod restore;

use serde::Serialize;

use crate::delta::Precision;

pub use append::chain_append;
pub use compress::chain_compress;
pub use info::{ChainInfo, ChainTotals, ComponentSize, EntryInfo, chain_info};
pub use manifest::{ChainEntry, ChainEntryKind, ChainManifest, is_chain_dir, read_manifest};
pub use orphans::{ORPHANS, find_orphans};
pub use restore::{
    ChainVerifyReport, ReconstructReport, ReconstructedEntry, VerifiedEntry, chain_reconstruct,
    chain_verify,
};

/// File name of a chain's manifest inside its folder.
pub const MANIFEST: &str = "manifest.json";
/// The manifest's `format` value.
pub const FORMAT: &str = "dmx-chain";
/// The manifest version this dmx writes and reads.
pub const VERSION: u32 = 1;
/// Default of [`ChainOptions::max_depth`].
pub const DEFAULT_MAX_DEPTH: usize = 16;

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
