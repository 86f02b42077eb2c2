//! `dmx delta-reconstruct`: rebuild the target of a delta from its base (refuses any other base).

use std::path::PathBuf;

use crate::{Common, Outcome, options};

/// The arguments of `dmx delta-reconstruct`.
#[derive(clap::Args)]
pub struct Args {
    /// The base the delta was made from (.safetensors, torch.save file or .dmx; the base folder
    /// for a folder delta).
    base: PathBuf,
    /// The delta (.dmxd).
    delta: PathBuf,
    /// Output file (a folder for a folder delta).
    output: PathBuf,
    /// Overwrite the output if it exists.
    #[arg(short, long)]
    force: bool,
}

/// Runs `dmx delta-reconstruct`.
pub fn run(args: Args, common: &Common) -> Result<Outcome, dmx::Error> {
    let Args {
        base,
        delta,
        output,
        force,
    } = args;
    let start = std::time::Instant::now();
    if let Some(old) = dmx::legacy::legacy_file(&delta)?.filter(|f| f.kind.is_delta()) {
        dmx::legacy::restore(&delta, Some(&base), &output, &options(common, force))?;
        if !common.quiet {
            eprintln!("{}: {}", delta.display(), old.summary);
        }
        return Ok(Outcome::Ok);
    }
    dmx::delta_reconstruct(&base, &delta, &output, &options(common, force))?;
    if !common.quiet {
        eprintln!(
            "{} + {} -> {} in {:.2} s (every checksum verified)",
            base.display(),
            delta.display(),
            output.display(),
            start.elapsed().as_secs_f64()
        );
    }
    Ok(Outcome::Ok)
}
