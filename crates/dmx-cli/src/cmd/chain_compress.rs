//! `dmx chain-compress`: store checkpoints of a training run, in order, as anchors and deltas in a
//! new folder.

use std::path::PathBuf;

use super::PrecisionArg;
use crate::{Common, Outcome, chains, options};

/// The arguments of `dmx chain-compress`.
#[derive(clap::Args)]
pub struct Args {
    /// Checkpoints (.safetensors), in training order.
    #[arg(required = true, value_name = "CKPT")]
    checkpoints: Vec<PathBuf>,
    /// The chain folder to create (must not exist or be empty, unless --force).
    #[arg(long, value_name = "DIR")]
    output_dir: PathBuf,
    /// lossless (default) or a 16/32-bit grid shared by an anchor and its deltas.
    #[arg(long, value_enum, default_value = "lossless")]
    precision: PrecisionArg,
    /// Most deltas between an entry and its anchor (a new anchor is forced beyond).
    #[arg(long, value_name = "D", default_value_t = dmx::chain::DEFAULT_MAX_DEPTH)]
    max_depth: usize,
    /// Use a non-empty folder: its chain is replaced once the new one is complete; other
    /// files are kept (stray entry files are moved into DIR/orphans/).
    #[arg(short, long)]
    force: bool,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

/// Runs `dmx chain-compress`.
pub fn run(args: Args, common: &Common) -> Result<Outcome, dmx::Error> {
    let Args {
        checkpoints,
        output_dir,
        precision,
        max_depth,
        force,
        json,
    } = args;
    let c = dmx::ChainOptions {
        precision: precision.get(),
        max_depth,
    };
    let r = dmx::chain_compress(&checkpoints, &output_dir, &c, &options(common, force))?;
    chains::warn_set_aside(&r);
    super::emit(&r, json, common.quiet, chains::append_summary);
    Ok(Outcome::Ok)
}
