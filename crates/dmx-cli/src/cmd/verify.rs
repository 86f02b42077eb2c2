//! `dmx verify`: decode everything and check every checksum; with an ORIGINAL, compare every byte.

use std::path::PathBuf;

use crate::{Common, Outcome, chains, options, report};

/// The arguments of `dmx verify`.
#[derive(clap::Args)]
pub struct Args {
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
    #[arg(long, value_name = "E", value_parser = parse_error_budget)]
    max_rel_error: Option<f64>,
    /// Deltas (.dmxd): the base they were made from (`dmx verify [TARGET] DELTA --base
    /// BASE`).
    #[arg(long, value_name = "BASE")]
    base: Option<PathBuf>,
}

/// Runs `dmx verify`.
pub fn run(args: Args, common: &Common) -> Result<Outcome, dmx::Error> {
    let Args {
        paths,
        report: report_path,
        json,
        force,
        max_rel_error,
        base,
    } = args;
    let (original, archive_path) = match paths.as_slice() {
        [a] => (None, a.clone()),
        [o, a] => (Some(o.clone()), a.clone()),
        _ => {
            return Err(dmx::Error::InvalidArgument(
                "verify takes one or two paths".into(),
            ));
        }
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
        return Err(dmx::Error::Exists(p.clone()));
    }
    let opts = options(common, force);
    let request = dmx::VerifyRequest {
        target: archive_path,
        original,
        base,
        max_rel_error,
    };
    let rep = dmx::verify_path(&request, &opts)?;
    if let Some(p) = &report_path {
        report::write_json(p, &rep, force, !common.no_sync)?;
    }
    super::emit(&rep, json, common.quiet && rep.ok(), |rep| match rep {
        dmx::PathReport::Archive(r) => report::verify(r),
        dmx::PathReport::Chain(r) => chains::verify(r),
    });
    Ok(if rep.ok() {
        Outcome::Ok
    } else {
        Outcome::CheckFailed
    })
}

/// `--max-rel-error E`: a finite number >= 0 (a NaN or negative budget would fail every
/// tensor, an infinite one pass any error).
fn parse_error_budget(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(e) if e.is_finite() && e >= 0.0 => Ok(e),
        Ok(_) => Err("must be a finite number >= 0".into()),
        Err(e) => Err(e.to_string()),
    }
}
