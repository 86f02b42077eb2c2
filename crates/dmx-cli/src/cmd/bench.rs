//! `dmx bench`: measure dmx in memory on files: bits/weight per dtype, entropy bound, MB/s both
//! ways.

use std::path::PathBuf;

use crate::{Common, Outcome, out, report};

/// The arguments of `dmx bench`.
#[derive(clap::Args)]
pub struct Args {
    /// Files (or folders) to measure.
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Repetitions per measurement (the median is reported).
    #[arg(long, default_value_t = 5)]
    reps: usize,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// Runs `dmx bench`.
pub fn run(args: Args, common: &Common) -> Result<Outcome, dmx::Error> {
    let Args { files, reps, json } = args;
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
    Ok(Outcome::Ok)
}
