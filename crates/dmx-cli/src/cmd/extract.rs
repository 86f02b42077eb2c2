//! `dmx extract`: write a safetensors file holding only the named tensors (decodes only those),
//! or every tensor of one stored file; tensors of `.pt` files by name path.

use std::path::PathBuf;

use crate::{Common, Outcome, options};

/// The arguments of `dmx extract`.
#[derive(clap::Args)]
#[command(group = clap::ArgGroup::new("what").required(true).args(["tensors", "all"]))]
pub struct Args {
    /// Input archive (of a .safetensors or a torch.save .pt/.bin file, or of a folder).
    input: PathBuf,
    /// Output .safetensors file.
    output: PathBuf,
    /// Tensor to extract (repeatable); a tensor of a .pt file by its name path
    /// (`state.0.exp_avg`; `tensor` for a lone `torch.save(tensor)`).
    #[arg(long = "tensor", value_name = "NAME")]
    tensors: Vec<String>,
    /// Extract every tensor of the file (with --file in an archive of a folder).
    #[arg(long, conflicts_with = "tensors")]
    all: bool,
    /// The stored file to extract from, in an archive of a folder (its relative path).
    #[arg(long, value_name = "PATH")]
    file: Option<String>,
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
        file,
        force,
        all: _,
    } = args;
    let archive = dmx::Archive::open(&input)?;
    let opts = options(common, force);
    dmx::extract_from(&archive, file.as_deref(), &tensors, &output, &opts)?;
    if !common.quiet {
        if tensors.is_empty() {
            eprintln!("all tensors -> {}", output.display());
        } else {
            eprintln!("{} tensor(s) -> {}", tensors.len(), output.display());
        }
    }
    Ok(Outcome::Ok)
}
