//! `dmx extract`: write a safetensors file holding only the named tensors (decodes only those).

use std::path::PathBuf;

use crate::{Common, Outcome, options};

/// The arguments of `dmx extract`.
#[derive(clap::Args)]
pub struct Args {
    /// Input archive.
    input: PathBuf,
    /// Output .safetensors file.
    output: PathBuf,
    /// Tensor to extract (repeatable).
    #[arg(long = "tensor", required = true, value_name = "NAME")]
    tensors: Vec<String>,
    /// Overwrite the output if it exists.
    #[arg(short, long)]
    force: bool,
}

/// Runs `dmx extract`.
pub fn run(args: Args, common: &Common) -> Result<Outcome, dmx::Error> {
    let Args {
        input,
        output,
        tensors,
        force,
    } = args;
    let archive = dmx::Archive::open(&input)?;
    dmx::extract(&archive, &tensors, &output, &options(common, force))?;
    if !common.quiet {
        eprintln!("{} tensor(s) -> {}", tensors.len(), output.display());
    }
    Ok(Outcome::Ok)
}
