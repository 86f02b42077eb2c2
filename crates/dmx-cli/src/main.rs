//! `dmx`: compress neural-network weights (safetensors files and model folders) losslessly.
//! The whole tool is [`dmx_cli::main_with_args`].

use std::process::ExitCode;

fn main() -> ExitCode {
    let status = dmx_cli::main_with_args(std::env::args_os());
    ExitCode::from(u8::try_from(status).unwrap_or(2))
}
