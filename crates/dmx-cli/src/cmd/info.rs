//! `dmx info`: show the tensors, codecs, sizes and bits per weight of an archive.

use std::path::PathBuf;

use crate::{Common, Outcome, report};

/// The arguments of `dmx info`.
#[derive(clap::Args)]
pub struct Args {
    /// Archive.
    file: PathBuf,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    /// List every tensor (default when there are at most 64).
    #[arg(long)]
    tensors: bool,
}

/// Runs `dmx info`.
pub fn run(args: Args, common: &Common) -> Result<Outcome, dmx::Error> {
    let Args {
        file,
        json,
        tensors,
    } = args;
    if dmx::chain::is_chain_dir(&file) {
        return Err(dmx::Error::Unsupported(format!(
            "{}: is a chain folder, not an archive; use `dmx chain-info {}`",
            file.display(),
            file.display()
        )));
    }
    let archive = dmx::Archive::open(&file)?;
    let stats = dmx::Stats::of_archive(&archive);
    super::emit(&stats, json, common.quiet, |stats| {
        report::info(&file, stats, tensors)
    });
    Ok(Outcome::Ok)
}
