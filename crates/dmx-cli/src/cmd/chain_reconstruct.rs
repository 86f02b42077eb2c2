//! `dmx chain-reconstruct`: restore all or some checkpoints of a chain under their original names.

use std::path::PathBuf;

use crate::{Common, Outcome, chains, options, report};

/// The arguments of `dmx chain-reconstruct`.
#[derive(clap::Args)]
pub struct Args {
    /// The chain folder.
    dir: PathBuf,
    /// Output folder (created if needed; neither the chain folder nor inside it).
    #[arg(long, value_name = "OUT")]
    output_dir: PathBuf,
    /// Entries to restore, by index from 0 (default: all); reads only what they need.
    #[arg(long, num_args = 1.., value_name = "I")]
    indices: Vec<usize>,
    /// Overwrite existing output files (regular files only; other files are kept).
    #[arg(short, long)]
    force: bool,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

/// Runs `dmx chain-reconstruct`.
pub fn run(args: Args, common: &Common) -> Result<Outcome, dmx::Error> {
    let Args {
        dir,
        output_dir,
        indices,
        force,
        json,
    } = args;
    let indices = (!indices.is_empty()).then_some(indices.as_slice());
    let r = dmx::chain_reconstruct(&dir, &output_dir, indices, &options(common, force))?;
    if json {
        report::print_json(&r);
    }
    if !json || !r.ok {
        chains::reconstruct(&r, common.quiet || json);
    }
    if !r.ok {
        return Ok(Outcome::CheckFailed);
    }
    Ok(Outcome::Ok)
}
