//! `dmx delta-compress`: store TARGET as a delta from BASE (both safetensors; BASE may be a .dmx).

use std::path::PathBuf;

use super::PrecisionArg;
use crate::{Common, Outcome, deltas, options};

/// The arguments of `dmx delta-compress`.
#[derive(clap::Args)]
pub struct Args {
    /// Base model (.safetensors or .dmx).
    base: PathBuf,
    /// Target checkpoint or fine-tune (.safetensors).
    target: PathBuf,
    /// Output delta (.dmxd).
    output: PathBuf,
    /// lossless (default) or a shared integer grid.
    #[arg(long, value_enum, default_value = "lossless")]
    precision: PrecisionArg,
    /// Overwrite the output if it exists.
    #[arg(short, long)]
    force: bool,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
}

/// Runs `dmx delta-compress`.
pub fn run(args: Args, common: &Common) -> Result<Outcome, dmx::Error> {
    let Args {
        base,
        target,
        output,
        precision,
        force,
        json,
    } = args;
    let d = dmx::DeltaOptions {
        precision: precision.get(),
        steps: None,
    };
    let r = dmx::delta_compress(&base, &target, &output, &d, &options(common, force))?;
    super::emit(&r, json, common.quiet, |r| {
        deltas::compress_summary(&target, &output, r)
    });
    Ok(Outcome::Ok)
}
