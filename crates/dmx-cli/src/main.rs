//! `dmx`: compress neural-network weights (safetensors files and model folders) losslessly.
//!
//! Exit status: 0 success, 1 verification failure or corruption found, 2 usage or I/O error.

// `out` comes first: its `print!`/`println!`/`eprint!`/`eprintln!` replace std's in every
// module below (terminal escapes made visible, a closed stdout pipe ends output quietly).
#[macro_use]
mod out;

mod chains;
mod deltas;
mod diff_text;
mod escape;
mod progress;
mod report;
mod signals;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(
    name = "dmx",
    version,
    about = "Structure-aware compression for neural-network weights and checkpoints",
    long_about = "Compresses safetensors files and Hugging Face model folders into .dmx \
                  archives that restore every file byte for byte (lossy modes only when \
                  asked), and stores related checkpoints as deltas.\n\n\
                  Exit status: 0 success, 1 verification failure or corruption, 2 usage or \
                  I/O error."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Clone)]
struct Common {
    /// Print no progress or summary.
    #[arg(short, long, global = true)]
    quiet: bool,
    /// Worker threads (default: all cores). At least 1; capped at twice the cores and, where
    /// the work is known, at one per 1 MiB chunk, so a large N costs nothing.
    #[arg(short = 't', long, global = true, value_name = "N", value_parser = parse_threads)]
    threads: Option<usize>,
    /// Do not fsync outputs before renaming them into place (faster; a crash still leaves
    /// no partial file, but a power failure may lose a just-written output).
    #[arg(long, global = true)]
    no_sync: bool,
}

/// `--threads N`: a whole number, at least 1.
fn parse_threads(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

/// Encoding of float tensors.
#[derive(Clone, Copy, ValueEnum)]
enum ModeArg {
    /// Byte-identical (default).
    Lossless,
    /// Block floating point: groups share an exponent, values keep M magnitude bits.
    Bfp,
    /// Aligned 16-bit integer grid, step shared by tensors of the same role.
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

#[derive(Args, Clone)]
struct LossyArgs {
    /// How float tensors are stored. Every mode but lossless changes values and reports
    /// the error; `dmx info` shows it.
    #[arg(long, value_enum, default_value = "lossless")]
    mode: ModeArg,
    /// BFP: magnitude bits per value including the group maximum's leading bit (2..=8 for
    /// 16-bit tensors, up to 24 for F32; default 7).
    #[arg(long, value_name = "M")]
    mantissa_bits: Option<u32>,
    /// BFP: values per shared exponent along the last dimension (default 32).
    #[arg(long, value_name = "G")]
    group_size: Option<u32>,
    /// auto: largest relative L2 error ‖x−x̂‖/‖x‖ allowed per tensor.
    #[arg(long, value_name = "E")]
    max_rel_error: Option<f64>,
    /// Keep tensors whose names match this glob lossless (repeatable; e.g. '*norm*').
    #[arg(long, value_name = "GLOB")]
    keep_lossless: Vec<String>,
    /// Round F32 tensors to bf16 or f16 before coding (restored as F32; lossy). Tensors
    /// with finite values beyond the narrow type's range are kept exact, with a warning.
    #[arg(long, value_enum)]
    cast: Option<CastArg>,
    /// With --cast: cast those tensors too, turning out-of-range values into ±Inf.
    #[arg(long)]
    allow_cast_overflow: bool,
}

impl LossyArgs {
    fn options(&self) -> dmx::lossy::LossyOptions {
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
            cast: self.cast.map(|c| match c {
                CastArg::Bf16 => CastTo::Bf16,
                CastArg::F16 => CastTo::F16,
            }),
            allow_cast_overflow: self.allow_cast_overflow,
        }
    }
}

/// Precision of a delta.
#[derive(Clone, Copy, ValueEnum)]
enum PrecisionArg {
    /// Byte-identical reconstruction (default).
    Lossless,
    /// Base and target on a shared 16-bit grid (lossy).
    Int16,
    /// Base and target on a shared 32-bit grid (lossy).
    Int32,
}

impl PrecisionArg {
    fn get(self) -> dmx::Precision {
        match self {
            PrecisionArg::Lossless => dmx::Precision::Lossless,
            PrecisionArg::Int16 => dmx::Precision::Int16,
            PrecisionArg::Int32 => dmx::Precision::Int32,
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// Compress a .safetensors file, any file, or a model folder into one .dmx archive.
    Compress {
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
        #[command(flatten)]
        common: Common,
    },
    /// Store TARGET as a delta from BASE (both safetensors; BASE may be a .dmx).
    DeltaCompress {
        /// Base model (.safetensors or .dmx).
        base: PathBuf,
        /// Target checkpoint or fine-tune (.safetensors).
        target: PathBuf,
        /// Output delta (.dmxd).
        output: PathBuf,
        /// lossless (default) or a shared integer grid.
        #[arg(long, value_enum, default_value = "lossless")]
        precision: PrecisionArg,
        /// Overwrite the output if it exists.
        #[arg(short, long)]
        force: bool,
        /// Print the summary as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        common: Common,
    },
    /// Rebuild the target of a delta from its base (refuses any other base).
    DeltaReconstruct {
        /// The base the delta was made from (.safetensors or .dmx).
        base: PathBuf,
        /// The delta (.dmxd).
        delta: PathBuf,
        /// Output .safetensors file.
        output: PathBuf,
        /// Overwrite the output if it exists.
        #[arg(short, long)]
        force: bool,
        #[command(flatten)]
        common: Common,
    },
    /// Sizes of a delta per checkpoint component and role, and the fraction of unchanged values.
    DeltaInfo {
        /// The delta (.dmxd).
        delta: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        common: Common,
    },
    /// How far checkpoint B moved from A: per tensor, layer, component and role.
    Diff {
        /// First checkpoint (.safetensors or .dmx).
        a: PathBuf,
        /// Second checkpoint (.safetensors or .dmx).
        b: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// Show the K most changed tensors.
        #[arg(long, value_name = "K", default_value_t = 10)]
        top: usize,
        #[command(flatten)]
        common: Common,
    },
    /// Store checkpoints of a training run, in order, as anchors and deltas in a new folder.
    ///
    /// Each entry is the smaller of a delta from the previous checkpoint and the checkpoint
    /// compressed alone, so the chain is never larger than compressing each file on its own.
    ChainCompress {
        /// Checkpoints (.safetensors), in training order.
        #[arg(required = true, value_name = "CKPT")]
        checkpoints: Vec<PathBuf>,
        /// The chain folder to create (must not exist or be empty, unless --force).
        #[arg(long, value_name = "DIR")]
        output_dir: PathBuf,
        /// lossless (default) or a 16/32-bit grid shared by an anchor and its deltas.
        #[arg(long, value_enum, default_value = "lossless")]
        precision: PrecisionArg,
        /// Most deltas between an entry and its anchor (a new anchor is forced beyond).
        #[arg(long, value_name = "D", default_value_t = dmx::chain::DEFAULT_MAX_DEPTH)]
        max_depth: usize,
        /// Use a non-empty folder: its chain is replaced once the new one is complete; other
        /// files are kept (stray entry files are moved into DIR/orphans/).
        #[arg(short, long)]
        force: bool,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        common: Common,
    },
    /// Add checkpoints to an existing chain (crash-safe: an interrupted append leaves the
    /// chain valid at its previous length).
    ChainAppend {
        /// The chain folder.
        dir: PathBuf,
        /// Checkpoints (.safetensors), in training order.
        #[arg(required = true, value_name = "CKPT")]
        checkpoints: Vec<PathBuf>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        common: Common,
    },
    /// Restore all or some checkpoints of a chain under their original names.
    ChainReconstruct {
        /// The chain folder.
        dir: PathBuf,
        /// Output folder (created if needed; neither the chain folder nor inside it).
        #[arg(long, value_name = "OUT")]
        output_dir: PathBuf,
        /// Entries to restore, by index from 0 (default: all); reads only what they need.
        #[arg(long, num_args = 1.., value_name = "I")]
        indices: Vec<usize>,
        /// Overwrite existing output files (regular files only; other files are kept).
        #[arg(short, long)]
        force: bool,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        common: Common,
    },
    /// Entries of a chain (anchor or delta, parent, sizes, savings, per component) and totals.
    ChainInfo {
        /// The chain folder.
        dir: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        common: Common,
    },
    /// Restore the original file or folder from an archive, byte for byte.
    Decompress {
        /// Input archive.
        input: PathBuf,
        /// Output file (or folder, for folder archives); `-` writes a single-file archive's
        /// file to standard output.
        output: PathBuf,
        /// Replace an existing output file (regular files only); a folder archive restores
        /// into an existing folder, replacing only the files it holds.
        #[arg(short, long)]
        force: bool,
        #[command(flatten)]
        common: Common,
    },
    /// Show the tensors, codecs, sizes and bits per weight of an archive.
    Info {
        /// Archive.
        file: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// List every tensor (default when there are at most 64).
        #[arg(long)]
        tensors: bool,
        #[command(flatten)]
        common: Common,
    },
    /// Decode everything and check every checksum; with an ORIGINAL, compare every byte.
    ///
    /// `dmx verify FILE.dmx` or `dmx verify ORIGINAL FILE.dmx`; `dmx verify DIR` checks a
    /// whole chain (every stored file's hash, then every entry restored) without originals.
    Verify {
        /// FILE.dmx, or ORIGINAL followed by FILE.dmx, or a chain folder.
        #[arg(num_args = 1..=2, required = true, value_name = "[ORIGINAL] FILE.dmx")]
        paths: Vec<PathBuf>,
        /// Write the full report as JSON to this file.
        #[arg(long, value_name = "FILE")]
        report: Option<PathBuf>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        /// Overwrite the report file if it exists.
        #[arg(short, long)]
        force: bool,
        /// Lossy archives: fail any tensor whose relative L2 error exceeds E (default: the
        /// error the archive records).
        #[arg(long, value_name = "E")]
        max_rel_error: Option<f64>,
        /// Deltas (.dmxd): the base they were made from (`dmx verify [TARGET] DELTA --base
        /// BASE`).
        #[arg(long, value_name = "BASE")]
        base: Option<PathBuf>,
        #[command(flatten)]
        common: Common,
    },
    /// Measure dmx in memory on files: bits/weight per dtype, entropy bound, MB/s both ways.
    Bench {
        /// Files (or folders) to measure.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Repetitions per measurement (the median is reported).
        #[arg(long, default_value_t = 5)]
        reps: usize,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        common: Common,
    },
    /// Write a safetensors file holding only the named tensors (decodes only those).
    Extract {
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
        #[command(flatten)]
        common: Common,
    },
}

fn options(common: &Common, force: bool) -> dmx::Options {
    dmx::Options {
        threads: common.threads,
        force,
        no_sync: common.no_sync,
        progress: progress::bar(common.quiet).map(|b| Arc::new(b) as Arc<dyn dmx::Progress>),
    }
}

/// Outcome of a command that ran: success, or a failed check (exit 1).
enum Outcome {
    Ok,
    CheckFailed,
}

fn run(cli: Cli) -> Result<Outcome, dmx::Error> {
    match cli.command {
        Command::Compress {
            input,
            output,
            force,
            json,
            lossy,
            common,
        } => {
            let r =
                dmx::compress_with(&input, &output, &lossy.options(), &options(&common, force))?;
            for w in &r.warnings {
                eprintln!("dmx: warning: {w}");
            }
            if json {
                report::print_json(&r);
            } else if !common.quiet {
                report::compress_summary(&input, &output, &r);
            }
        }
        Command::Decompress {
            input,
            output,
            force,
            common,
        } => {
            let start = std::time::Instant::now();
            if dmx::is_dash(&output) {
                use std::io::IsTerminal;
                if std::io::stdout().is_terminal() {
                    return Err(dmx::Error::Usage(
                        "refusing to write binary data to a terminal: redirect standard \
                         output (`dmx decompress ARCHIVE - > FILE`)"
                            .into(),
                    ));
                }
                let sent = dmx::decompress_to(
                    &input,
                    &mut std::io::stdout().lock(),
                    &options(&common, force),
                );
                match sent {
                    // The reader went away (`dmx decompress x.dmx - | head -c 100`): stop
                    // quietly, as for every other output on a closed pipe.
                    Err(dmx::Error::Io { source, .. })
                        if source.kind() == std::io::ErrorKind::BrokenPipe =>
                    {
                        return Ok(Outcome::Ok);
                    }
                    r => r?,
                }
            } else {
                dmx::decompress(&input, &output, &options(&common, force))?;
            }
            if !common.quiet {
                eprintln!(
                    "{} -> {} in {:.2} s",
                    input.display(),
                    output.display(),
                    start.elapsed().as_secs_f64()
                );
            }
        }
        Command::Info {
            file,
            json,
            tensors,
            common: _,
        } => {
            if dmx::chain::is_chain_dir(&file) {
                return Err(dmx::Error::Usage(format!(
                    "{}: is a chain folder, not an archive; use `dmx chain-info {}`",
                    file.display(),
                    file.display()
                )));
            }
            let archive = dmx::Archive::open(&file)?;
            let stats = dmx::Stats::of_archive(&archive);
            if json {
                report::print_json(&stats);
            } else {
                report::info(&file, &stats, tensors);
            }
        }
        Command::Verify {
            paths,
            report: report_path,
            json,
            force,
            max_rel_error,
            base,
            common,
        } => {
            let (original, archive_path) = match paths.as_slice() {
                [a] => (None, a.clone()),
                [o, a] => (Some(o.clone()), a.clone()),
                _ => return Err(dmx::Error::Usage("verify takes one or two paths".into())),
            };
            if let Some(p) = &report_path {
                dmx::check_distinct(&archive_path, p)?;
                if let Some(o) = &original {
                    dmx::check_distinct(o, p)?;
                }
                // Never over the base, nor over a file of the chain or original folder.
                if let Some(b) = &base {
                    dmx::check_distinct(b, p)?;
                }
                for input in std::iter::once(&archive_path).chain(&original) {
                    dmx::check_outside(input, p)?;
                }
            }
            if let Some(p) = &report_path
                && !force
                && p.exists()
            {
                // Checked before the (possibly long) verification, and again when writing.
                return Err(dmx::Error::Usage(format!(
                    "{} already exists; use --force to overwrite it",
                    p.display()
                )));
            }
            let opts = options(&common, force);
            if original.is_none() && archive_path.is_dir() {
                if max_rel_error.is_some() {
                    return Err(dmx::Error::Usage(
                        "--max-rel-error does not apply to chains".into(),
                    ));
                }
                if base.is_some() {
                    return Err(dmx::Error::Usage(
                        "--base applies to deltas (.dmxd), not to chains".into(),
                    ));
                }
                let rep = dmx::chain_verify(&archive_path, &opts)?;
                if let Some(p) = &report_path {
                    report::write_json(p, &rep, force, !common.no_sync)?;
                }
                if json {
                    report::print_json(&rep);
                } else if !common.quiet || !rep.ok {
                    chains::verify(&rep);
                }
                return Ok(if rep.ok {
                    Outcome::Ok
                } else {
                    Outcome::CheckFailed
                });
            }
            let rep = match dmx::Archive::open(&archive_path) {
                Ok(archive) => dmx::verify_delta(
                    &archive,
                    original.as_deref(),
                    base.as_deref(),
                    max_rel_error,
                    &opts,
                )?,
                Err(e) if e.is_integrity_failure() => {
                    report::unreadable(&archive_path, original.as_deref(), &e)
                }
                Err(e) => return Err(e),
            };
            if let Some(p) = &report_path {
                report::write_json(p, &rep, force, !common.no_sync)?;
            }
            if json {
                report::print_json(&rep);
            } else if !common.quiet || !rep.ok {
                report::verify(&rep);
            }
            if !rep.ok {
                return Ok(Outcome::CheckFailed);
            }
        }
        Command::DeltaCompress {
            base,
            target,
            output,
            precision,
            force,
            json,
            common,
        } => {
            let d = dmx::DeltaOptions {
                precision: precision.get(),
                steps: None,
            };
            let r = dmx::delta_compress(&base, &target, &output, &d, &options(&common, force))?;
            if json {
                report::print_json(&r);
            } else if !common.quiet {
                deltas::compress_summary(&target, &output, &r);
            }
        }
        Command::DeltaReconstruct {
            base,
            delta,
            output,
            force,
            common,
        } => {
            let start = std::time::Instant::now();
            dmx::delta_reconstruct(&base, &delta, &output, &options(&common, force))?;
            if !common.quiet {
                eprintln!(
                    "{} + {} -> {} in {:.2} s (every checksum verified)",
                    base.display(),
                    delta.display(),
                    output.display(),
                    start.elapsed().as_secs_f64()
                );
            }
        }
        Command::DeltaInfo {
            delta,
            json,
            common: _,
        } => {
            let info = dmx::delta_info(&delta)?;
            if json {
                report::print_json(&info);
            } else {
                deltas::info(&info);
            }
        }
        Command::ChainCompress {
            checkpoints,
            output_dir,
            precision,
            max_depth,
            force,
            json,
            common,
        } => {
            let c = dmx::ChainOptions {
                precision: precision.get(),
                max_depth,
            };
            let r = dmx::chain_compress(&checkpoints, &output_dir, &c, &options(&common, force))?;
            chains::warn_set_aside(&r);
            if json {
                report::print_json(&r);
            } else if !common.quiet {
                chains::append_summary(&r);
            }
        }
        Command::ChainAppend {
            dir,
            checkpoints,
            json,
            common,
        } => {
            let r = dmx::chain_append(&dir, &checkpoints, &options(&common, false))?;
            chains::warn_set_aside(&r);
            if json {
                report::print_json(&r);
            } else if !common.quiet {
                chains::append_summary(&r);
            }
        }
        Command::ChainReconstruct {
            dir,
            output_dir,
            indices,
            force,
            json,
            common,
        } => {
            let indices = (!indices.is_empty()).then_some(indices.as_slice());
            let r = dmx::chain_reconstruct(&dir, &output_dir, indices, &options(&common, force))?;
            if json {
                report::print_json(&r);
            }
            if !json || !r.ok {
                chains::reconstruct(&r, common.quiet || json);
            }
            if !r.ok {
                return Ok(Outcome::CheckFailed);
            }
        }
        Command::ChainInfo {
            dir,
            json,
            common: _,
        } => {
            let info = dmx::chain_info(&dir)?;
            if json {
                report::print_json(&info);
            } else {
                chains::info(&info);
            }
        }
        Command::Diff {
            a,
            b,
            json,
            top,
            common,
        } => {
            let mut r = dmx::diff::diff(&a, &b, &options(&common, false))?;
            if json {
                report::print_json(&r);
            } else {
                escape::diff_report(&mut r);
                print!("{}", diff_text::render(&r, top));
            }
        }
        Command::Bench {
            files,
            reps,
            json,
            common,
        } => {
            let all = std::thread::available_parallelism().map_or(1, |n| n.get());
            let counts = match common.threads {
                Some(n) => vec![n],
                None if all > 1 => vec![1, all],
                None => vec![1],
            };
            let mut results = Vec::new();
            'files: for f in &files {
                for &t in &counts {
                    if out::stdout_closed() {
                        break 'files;
                    }
                    let r = dmx::bench(f, t, reps)?;
                    // Threads are capped at one per chunk: a small file is shown once.
                    if results
                        .iter()
                        .any(|p: &dmx::BenchResult| p.file == r.file && p.threads == r.threads)
                    {
                        continue;
                    }
                    if !json && !common.quiet {
                        report::bench_row(&r, results.is_empty());
                    }
                    results.push(r);
                }
            }
            if json {
                report::print_json(&results);
            }
            if results.iter().any(|r| !r.round_trip_ok) {
                eprintln!("dmx: error: a round trip did not reproduce its input");
                return Ok(Outcome::CheckFailed);
            }
        }
        Command::Extract {
            input,
            output,
            tensors,
            force,
            common,
        } => {
            let archive = dmx::Archive::open(&input)?;
            dmx::extract(&archive, &tensors, &output, &options(&common, force))?;
            if !common.quiet {
                eprintln!("{} tensor(s) -> {}", tensors.len(), output.display());
            }
        }
    }
    Ok(Outcome::Ok)
}

/// The message for an error, with what the engine cannot know: that a path it could not
/// open is a dangling symbolic link (and to what), and the flag that overwrites an output.
fn describe(e: &dmx::Error) -> String {
    if let dmx::Error::Io { path, source } = e
        && source.kind() == std::io::ErrorKind::NotFound
        && let Ok(target) = std::fs::read_link(path)
        && std::fs::metadata(path).is_err()
    {
        return format!(
            "{}: dangling symbolic link: its target {} does not exist",
            path.display(),
            target.display()
        );
    }
    if let dmx::Error::Exists(path) = e {
        return format!(
            "{} already exists; use --force to overwrite it",
            path.display()
        );
    }
    let message = e.to_string();
    let path = match e {
        dmx::Error::Io { path, .. }
        | dmx::Error::Format { path, .. }
        | dmx::Error::Corrupt { path, .. }
        | dmx::Error::Mismatch { path, .. } => path,
        _ => return message,
    };
    match user_folder(path) {
        Some(folder) => message.replacen(
            &path.display().to_string(),
            &format!("{} (a temporary file of dmx in it)", folder.display()),
            1,
        ),
        None => message,
    }
}

/// For a path inside one of the engine's temporary files or folders (`.dmx-tmp-*`), which
/// the user never sees, the folder that holds it; `None` for any other path.
fn user_folder(path: &std::path::Path) -> Option<PathBuf> {
    let mut folder = PathBuf::new();
    for c in path.components() {
        if c.as_os_str().to_string_lossy().starts_with(".dmx-tmp-") {
            return Some(if folder.as_os_str().is_empty() {
                PathBuf::from(".")
            } else {
                folder
            });
        }
        folder.push(c);
    }
    None
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    signals::install();
    let result = run(cli);
    if out::stdout_failed() && matches!(result, Ok(Outcome::Ok)) {
        return ExitCode::from(2);
    }
    match result {
        Ok(Outcome::Ok) => ExitCode::SUCCESS,
        Ok(Outcome::CheckFailed) => ExitCode::from(1),
        Err(_) if let Some(sig) = signals::received() => {
            // The failure is the signal's doing (its handler removed the temporaries under
            // the run): no message; the handler exits with 128 + the signal number.
            std::thread::sleep(std::time::Duration::from_secs(10));
            ExitCode::from(128 + sig as u8)
        }
        Err(e) => {
            eprintln!("dmx: error: {}", describe(&e));
            if e.is_integrity_failure() {
                ExitCode::from(1)
            } else {
                ExitCode::from(2)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Errors name the user's folder, never an internal `.dmx-tmp-*` path.
    #[test]
    fn temporary_paths_are_not_shown() {
        use std::path::Path;
        assert_eq!(user_folder(Path::new("out/model.safetensors")), None);
        assert_eq!(
            user_folder(Path::new("chain/.dmx-tmp-Ab12/standalone.dmx")),
            Some(PathBuf::from("chain"))
        );
        assert_eq!(
            user_folder(Path::new(".dmx-tmp-Ab12/x")),
            Some(PathBuf::from("."))
        );
        let e = dmx::Error::Io {
            path: "/data/chain/.dmx-tmp-Ab12/standalone.dmx".into(),
            source: std::io::Error::from(std::io::ErrorKind::StorageFull),
        };
        let msg = describe(&e);
        assert!(!msg.contains(".dmx-tmp-"), "{msg}");
        assert!(
            msg.starts_with("/data/chain (a temporary file of dmx in it): "),
            "{msg}"
        );
        let e = dmx::Error::Mismatch {
            path: "c/.dmx-tmp-x/delta.dmxd".into(),
            detail: "differs".into(),
        };
        assert_eq!(describe(&e), "c (a temporary file of dmx in it): differs");
        let e = dmx::Error::Exists("taken.dmx".into());
        assert_eq!(
            describe(&e),
            "taken.dmx already exists; use --force to overwrite it"
        );
    }
}
