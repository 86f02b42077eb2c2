//! `dmx chain-append`: add checkpoints to an existing chain (crash-safe: an interrupted append
//! leaves the chain valid at its previous length).

use std::path::PathBuf;

use crate::{Common, Outcome, chains, options};

/// The arguments of `dmx chain-append`.
#[derive(clap::Args)]
pub struct Args {
    /// The chain folder.
    dir: PathBuf,
    /// Checkpoints (.safetensors), in training order.
    #[arg(required = true, value_name = "CKPT")]
    checkpoints: Vec<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

/// Runs `dmx chain-append`.
pub fn run(args: Args, common: &Common) -> Result<Outcome, dmx::Error> {
    let Args {
        dir,
        checkpoints,
        json,
    } = args;
    let r = dmx::chain_append(&dir, &checkpoints, &options(common, false))?;
    chains::warn_set_aside(&r);
    super::emit(&r, json, common.quiet, chains::append_summary);
    Ok(Outcome::Ok)
}
