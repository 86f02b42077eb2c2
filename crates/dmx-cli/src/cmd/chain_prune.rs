//! `dmx chain-prune`: remove old entries of a chain, keeping every entry a kept one needs.

use std::path::PathBuf;

use crate::{Common, Outcome, options};

/// The arguments of `dmx chain-prune`.
#[derive(clap::Args)]
pub struct Args {
    /// The chain folder.
    dir: PathBuf,
    /// Entries to keep, by index from 0.
    #[arg(long, num_args = 1.., value_name = "I", required_unless_present = "keep_last",
          conflicts_with = "keep_last")]
    keep: Vec<usize>,
    /// Keep the last N entries.
    #[arg(long, value_name = "N")]
    keep_last: Option<usize>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

/// Runs `dmx chain-prune`.
pub fn run(args: Args, common: &Common) -> Result<Outcome, dmx::Error> {
    let Args {
        dir,
        keep,
        keep_last,
        json,
    } = args;
    let keep = match keep_last {
        Some(0) => {
            return Err(dmx::Error::InvalidArgument(
                "--keep-last must be at least 1".into(),
            ));
        }
        Some(n) => {
            let len = dmx::chain::read_manifest(&dir)?.entries.len();
            (len.saturating_sub(n)..len).collect()
        }
        None => keep,
    };
    let r = dmx::chain_prune(&dir, &keep, &options(common, false))?;
    for f in &r.set_aside {
        eprintln!(
            "warning: {}: set aside {f} (not listed in the manifest)",
            r.dir
        );
    }
    super::emit(&r, json, common.quiet, |r| {
        println!(
            "{}: kept {} of {} entries, removed {}; stored {} -> {} bytes",
            r.dir,
            r.entries,
            r.entries_before,
            r.removed.len(),
            r.stored_bytes_before,
            r.stored_bytes
        );
        for k in &r.kept {
            let how = match (k.reanchored, k.dependency) {
                (true, _) => " (re-anchored)",
                (false, true) => " (kept: a kept entry depends on it)",
                _ => "",
            };
            println!(
                "  {:>5} <- {:>5}  {:<6} {}{how}",
                k.index,
                k.old_index,
                k.kind.as_str(),
                k.name
            );
        }
    });
    Ok(Outcome::Ok)
}
