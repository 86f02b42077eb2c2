//! `dmx chain-info`: entries of a chain (anchor or delta, parent, sizes, savings, per component)
//! and totals.

use std::path::PathBuf;

use crate::{Common, Outcome, chains};

/// The arguments of `dmx chain-info`.
#[derive(clap::Args)]
pub struct Args {
    /// The chain folder.
    dir: PathBuf,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// Runs `dmx chain-info`.
pub fn run(args: Args, common: &Common) -> Result<Outcome, dmx::Error> {
    let Args { dir, json } = args;
    let info = dmx::chain_info(&dir)?;
    super::emit(&info, json, common.quiet, chains::info);
    Ok(Outcome::Ok)
}
