//! `dmx import`: convert a file of dmx-compress (the Python tool dmx replaces) to dmx.

use std::path::PathBuf;

use crate::{Common, Outcome, options};

/// The arguments of `dmx import`.
#[derive(clap::Args)]
pub struct Args {
    /// The old file: a .dmx (format v2 or v3), a .dmxd, or a chain folder (or its
    /// chain_manifest.json).
    old: PathBuf,
    /// The new .dmx archive, .dmxd delta or chain folder.
    new: PathBuf,
    /// The base of an old .dmxd (the .safetensors file, or old .dmx, it was made from); the
    /// new delta is made against the same base.
    #[arg(long)]
    base: Option<PathBuf>,
    /// Overwrite the output if it exists.
    #[arg(short, long)]
    force: bool,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

/// Runs `dmx import`.
pub fn run(args: Args, common: &Common) -> Result<Outcome, dmx::Error> {
    let start = std::time::Instant::now();
    let report = dmx::legacy::import(
        &args.old,
        &args.new,
        args.base.as_deref(),
        &options(common, args.force),
    )?;
    if args.json {
        crate::report::print_json(&serde_json::json!({
            "input": args.old,
            "output": args.new,
            "source": report.source.summary,
            "lossy": report.source.lossy,
            "count": report.tensors,
        }));
    } else if !common.quiet {
        eprintln!(
            "{} ({}) -> {} in {:.2} s{}",
            args.old.display(),
            report.source.summary,
            args.new.display(),
            start.elapsed().as_secs_f64(),
            if report.source.lossy {
                "; the old tool had changed values: dmx stores its decoded values exactly"
            } else {
                ""
            }
        );
    }
    Ok(Outcome::Ok)
}
