//! `dmx delta-compress`: store TARGET as a delta from BASE (safetensors or torch.save files,
//! BASE may be a .dmx of one; or two checkpoint folders).

use std::path::PathBuf;

use super::PrecisionArg;
use crate::{Common, Outcome, deltas, options};

/// The arguments of `dmx delta-compress`.
#[derive(clap::Args)]
pub struct Args {
    /// Base model (.safetensors, a torch.save file such as .pt, or .dmx), or base checkpoint
    /// folder.
    base: PathBuf,
    /// Target checkpoint or fine-tune (.safetensors or torch.save file), or target checkpoint
    /// folder (files paired with the base folder's by relative path).
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
