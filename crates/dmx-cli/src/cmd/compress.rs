//! `dmx compress`: compress a .safetensors file, any file, or a model folder into one .dmx archive.

use std::path::PathBuf;

use crate::{Common, Outcome, options, report};
use clap::ValueEnum;

/// The arguments of `dmx compress`.
#[derive(clap::Args)]
pub struct Args {
    /// Input file or folder (`-`: standard input).
    input: PathBuf,
    /// Output archive.
    output: PathBuf,
    /// Overwrite the output if it exists.
    #[arg(short, long)]
    force: bool,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    lossy: LossyArgs,
}

/// Runs `dmx compress`.
pub fn run(args: Args, common: &Common) -> Result<Outcome, dmx::Error> {
    let Args {
        input,
        output,
        force,
        json,
        lossy,
    } = args;
    let r = dmx::compress_with(&input, &output, &lossy.options(), &options(common, force))?;
    for w in &r.warnings {
        eprintln!("dmx: warning: {w}");
    }
    super::emit(&r, json, common.quiet, |r| {
        report::compress_summary(&input, &output, r)
    });
    Ok(Outcome::Ok)
}

/// Encoding of float tensors.
#[derive(Clone, Copy, ValueEnum)]
enum ModeArg {
    /// Byte-identical (default).
    Lossless,
    /// Block floating point: groups share an exponent, values keep M magnitude bits.
    Bfp,
    /// Aligned 16-bit integer grid, a step per tensor (per role with --shared-grids); BF16 and
    /// F16 chunks stay exact unless the grid saves 3 %.
    Int16,
    /// Aligned 32-bit integer grid.
    Int32,
    /// Per tensor, the smallest encoding within --max-rel-error (lossless without it).
    Auto,
}

/// Narrow type for --cast.
#[derive(Clone, Copy, ValueEnum)]
enum CastArg {
    /// bfloat16.
    Bf16,
    /// IEEE half.
    F16,
}

#[derive(clap::Args, Clone)]
pub struct LossyArgs {
    /// How float tensors are stored. Every mode but lossless changes values and reports
    /// the error; `dmx info` shows it.
    #[arg(long, value_enum, default_value = "lossless")]
    mode: ModeArg,
    /// BFP: magnitude bits per value including the group maximum's leading bit (2..=8 for
    /// 16-bit tensors, up to 24 for F32; default 7).
    #[arg(long, value_name = "M")]
    mantissa_bits: Option<u32>,
    /// BFP: values per shared exponent: consecutive values of the tensor, across rows and
    /// kernel dimensions (default 32).
    #[arg(long, value_name = "G")]
    group_size: Option<u32>,
    /// auto: largest relative L2 error ‖x−x̂‖/‖x‖ allowed per tensor.
    #[arg(long, value_name = "E")]
    max_rel_error: Option<f64>,
    /// Keep tensors whose names match this glob lossless (repeatable; e.g. '*norm*').
    #[arg(long, value_name = "GLOB")]
    keep_lossless: Vec<String>,
    /// int16/int32: one grid step per role (the layers of a role share it, as chains do)
    /// instead of one per tensor.
    #[arg(long)]
    shared_grids: bool,
    /// Round F32 tensors to bf16 or f16 before coding (restored as F32; lossy). Tensors
    /// with finite values beyond the narrow type's range are kept exact, with a warning.
    #[arg(long, value_enum)]
    cast: Option<CastArg>,
    /// With --cast: cast those tensors too, turning out-of-range values into ±Inf.
    #[arg(long)]
    allow_cast_overflow: bool,
}

impl LossyArgs {
    /// The engine's lossy options.
    pub fn options(&self) -> dmx::lossy::LossyOptions {
        use dmx::lossy::{CastTo, Mode};
        dmx::lossy::LossyOptions {
            mode: match self.mode {
                ModeArg::Lossless => Mode::Lossless,
                ModeArg::Bfp => Mode::Bfp,
                ModeArg::Int16 => Mode::Int16,
                ModeArg::Int32 => Mode::Int32,
                ModeArg::Auto => Mode::Auto,
            },
            mantissa_bits: self.mantissa_bits,
            group_size: self.group_size,
            max_rel_error: self.max_rel_error,
            keep_lossless: self.keep_lossless.clone(),
            shared_grids: self.shared_grids,
            cast: self.cast.map(|c| match c {
                CastArg::Bf16 => CastTo::Bf16,
                CastArg::F16 => CastTo::F16,
            }),
            allow_cast_overflow: self.allow_cast_overflow,
        }
    }
}
