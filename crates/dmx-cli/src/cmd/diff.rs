//! `dmx diff`: how far checkpoint B moved from A: per tensor, layer, component and role.

use std::path::PathBuf;

use crate::{Common, Outcome, diff_text, escape, options, report};

/// The arguments of `dmx diff`.
#[derive(clap::Args)]
pub struct Args {
    /// First checkpoint (.safetensors, torch.save .pt/.bin, or a .dmx of one).
    a: PathBuf,
    /// Second checkpoint (.safetensors, torch.save .pt/.bin, or a .dmx of one).
    b: PathBuf,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    /// Show the K most changed tensors.
    #[arg(long, value_name = "K", default_value_t = 10)]
    top: usize,
}

/// Runs `dmx diff`.
pub fn run(args: Args, common: &Common) -> Result<Outcome, dmx::Error> {
    let Args { a, b, json, top } = args;
    let mut r = dmx::diff::diff(&a, &b, &options(common, false))?;
    if json {
        report::print_json(&r);
    } else {
        escape::diff_report(&mut r);
        print!("{}", diff_text::render(&r, top));
    }
    Ok(Outcome::Ok)
}
