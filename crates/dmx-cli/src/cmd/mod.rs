//! One module per command, each with its `Args` and `run`; the options every command
//! shares (`Common`) are defined once, on [`crate::Cli`].

pub mod bench;
pub mod chain_append;
pub mod chain_compress;
pub mod chain_info;
pub mod chain_prune;
pub mod chain_reconstruct;
pub mod compress;
pub mod decompress;
pub mod delta_compress;
pub mod delta_info;
pub mod delta_reconstruct;
pub mod diff;
pub mod extract;
pub mod import;
pub mod info;
pub mod verify;

use clap::{Subcommand, ValueEnum};
use serde::Serialize;

use crate::{Common, Outcome, report};

/// The commands, under the flat names users of the tools dmx replaces already know.
#[derive(Subcommand)]
pub enum Command {
    /// Compress a .safetensors file, any file, or a model folder into one .dmx archive.
    Compress(compress::Args),
    /// Store TARGET as a delta from BASE (both safetensors; BASE may be a .dmx).
    DeltaCompress(delta_compress::Args),
    /// Rebuild the target of a delta from its base (refuses any other base).
    DeltaReconstruct(delta_reconstruct::Args),
    /// Sizes of a delta per checkpoint component and role, and the fraction of unchanged values.
    DeltaInfo(delta_info::Args),
    /// How far checkpoint B moved from A (.safetensors, .pt or .dmx): per tensor, layer,
    /// component and role.
    Diff(diff::Args),
    /// Store checkpoints of a training run, in order, as anchors and deltas in a new folder.
    ///
    /// Each entry is the smaller of a delta from the previous checkpoint and the checkpoint
    /// compressed alone, so the chain is never larger than compressing each file on its own.
    ChainCompress(chain_compress::Args),
    /// Add checkpoints to an existing chain (crash-safe: an interrupted append leaves the
    /// chain valid at its previous length).
    ChainAppend(chain_append::Args),
    /// Restore all or some checkpoints of a chain under their original names.
    ChainReconstruct(chain_reconstruct::Args),
    /// Entries of a chain (anchor or delta, parent, sizes, savings, per component) and totals.
    ChainInfo(chain_info::Args),
    /// Remove old entries of a chain; entries a kept entry depends on are re-anchored or kept.
    ChainPrune(chain_prune::Args),
    /// Restore the original file or folder from an archive, byte for byte.
    Decompress(decompress::Args),
    /// Show the tensors, codecs, sizes and bits per weight of an archive (of .pt files too:
    /// tensors by name path, and a summary per checkpoint component).
    Info(info::Args),
    /// Decode everything and check every checksum; with an ORIGINAL, compare every byte.
    ///
    /// `dmx verify FILE.dmx` or `dmx verify ORIGINAL FILE.dmx`; `dmx verify DIR` checks a
    /// whole chain (every stored file's hash, then every entry restored) without originals.
    Verify(verify::Args),
    /// Measure dmx in memory on files: bits/weight per dtype, entropy bound, MB/s both ways.
    Bench(bench::Args),
    /// Write a safetensors file holding the named tensors, or all of one file (decodes only
    /// those); tensors of .pt files by name path, views made contiguous.
    Extract(extract::Args),
    /// Convert a file of dmx-compress (the Python tool dmx replaces) to dmx: a .dmx to a
    /// .dmx, a .dmxd (with --base) to a .dmxd, a chain folder to a chain folder.
    Import(import::Args),
}

impl Command {
    /// Runs the command.
    pub fn run(self, common: &Common) -> Result<Outcome, dmx::Error> {
        match self {
            Command::Compress(args) => compress::run(args, common),
            Command::DeltaCompress(args) => delta_compress::run(args, common),
            Command::DeltaReconstruct(args) => delta_reconstruct::run(args, common),
            Command::DeltaInfo(args) => delta_info::run(args, common),
            Command::Diff(args) => diff::run(args, common),
            Command::ChainCompress(args) => chain_compress::run(args, common),
            Command::ChainAppend(args) => chain_append::run(args, common),
            Command::ChainReconstruct(args) => chain_reconstruct::run(args, common),
            Command::ChainInfo(args) => chain_info::run(args, common),
            Command::ChainPrune(args) => chain_prune::run(args, common),
            Command::Decompress(args) => decompress::run(args, common),
            Command::Info(args) => info::run(args, common),
            Command::Verify(args) => verify::run(args, common),
            Command::Bench(args) => bench::run(args, common),
            Command::Extract(args) => extract::run(args, common),
            Command::Import(args) => import::run(args, common),
        }
    }
}

/// The one output branch of a report: JSON when asked, else the human form unless `quiet`.
pub fn emit<T: Serialize>(value: &T, json: bool, quiet: bool, human: impl FnOnce(&T)) {
    if json {
        report::print_json(value);
    } else if !quiet {
        human(value);
    }
}

/// Precision of a delta.
#[derive(Clone, Copy, ValueEnum)]
pub enum PrecisionArg {
    /// Byte-identical reconstruction (default).
    Lossless,
    /// Base and target on a shared 16-bit grid (lossy).
    Int16,
    /// Base and target on a shared 32-bit grid (lossy).
    Int32,
}

impl PrecisionArg {
    /// The engine's precision.
    pub fn get(self) -> dmx::Precision {
        match self {
            PrecisionArg::Lossless => dmx::Precision::Lossless,
            PrecisionArg::Int16 => dmx::Precision::Int16,
            PrecisionArg::Int32 => dmx::Precision::Int32,
        }
    }
}
