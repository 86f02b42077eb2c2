//! `dmx delta-info`: sizes of a delta per checkpoint component and role, and the fraction of
//! unchanged values.

use std::path::PathBuf;

use crate::{Common, Outcome, deltas};

/// The arguments of `dmx delta-info`.
#[derive(clap::Args)]
pub struct Args {
    /// The delta (.dmxd).
    delta: PathBuf,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// Runs `dmx delta-info`.
pub fn run(args: Args, common: &Common) -> Result<Outcome, dmx::Error> {
    let Args { delta, json } = args;
    let info = dmx::delta_info(&delta)?;
    super::emit(&info, json, common.quiet, deltas::info);
    Ok(Outcome::Ok)
}
