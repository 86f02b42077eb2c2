//! `dmx`: compress neural-network weights (safetensors files and model folders) losslessly.
//!
//! Exit status: 0 success, 1 verification failure or corruption found, 2 usage or I/O error.

mod progress;
mod report;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "dmx",
    version,
    about = "Structure-aware lossless compression for neural-network weights",
    long_about = "Compresses safetensors files and Hugging Face model folders into .dmx \
                  archives that restore every file byte for byte.\n\n\
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
    /// Worker threads (default: all cores).
    #[arg(short = 't', long, global = true, value_name = "N")]
    threads: Option<usize>,
    /// Do not fsync outputs before renaming them into place (faster; a crash still leaves
    /// no partial file, but a power failure may lose a just-written output).
    #[arg(long, global = true)]
    no_sync: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Compress a .safetensors file, any file, or a model folder into one .dmx archive.
    Compress {
        /// Input file or folder.
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
        common: Common,
    },
    /// Restore the original file or folder from an archive, byte for byte.
    Decompress {
        /// Input archive.
        input: PathBuf,
        /// Output file (or folder, for folder archives).
        output: PathBuf,
        /// Overwrite the output if it exists.
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
    /// `dmx verify FILE.dmx` or `dmx verify ORIGINAL FILE.dmx`.
    Verify {
        /// FILE.dmx, or ORIGINAL followed by FILE.dmx.
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
            common,
        } => {
            let r = dmx::compress(&input, &output, &options(&common, force))?;
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
            dmx::decompress(&input, &output, &options(&common, force))?;
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
            let rep = match dmx::Archive::open(&archive_path) {
                Ok(archive) => dmx::verify(&archive, original.as_deref(), &opts)?,
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
        Command::Bench {
            files,
            reps,
            json,
            common,
        } => {
            if common.threads == Some(0) {
                return Err(dmx::Error::Usage("--threads must be at least 1".into()));
            }
            let all = std::thread::available_parallelism().map_or(1, |n| n.get());
            let counts = match common.threads {
                Some(n) => vec![n],
                None if all > 1 => vec![1, all],
                None => vec![1],
            };
            let mut results = Vec::new();
            for f in &files {
                for &t in &counts {
                    let r = dmx::bench(f, t, reps)?;
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(Outcome::Ok) => ExitCode::SUCCESS,
        Ok(Outcome::CheckFailed) => ExitCode::from(1),
        Err(e) => {
            eprintln!("dmx: error: {e}");
            if e.is_integrity_failure() {
                ExitCode::from(1)
            } else {
                ExitCode::from(2)
            }
        }
    }
}
