//! `dmx decompress`: restore the original file or folder from an archive, byte for byte.

use std::path::PathBuf;

use crate::{Common, Outcome, options};

/// The arguments of `dmx decompress`.
#[derive(clap::Args)]
pub struct Args {
    /// Input archive.
    input: PathBuf,
    /// Output file (or folder, for folder archives); `-` writes a single-file archive's
    /// file to standard output.
    output: PathBuf,
    /// Replace an existing output file (regular files only); a folder archive restores
    /// into an existing folder, replacing only the files it holds.
    #[arg(short, long)]
    force: bool,
}

/// Runs `dmx decompress`.
pub fn run(args: Args, common: &Common) -> Result<Outcome, dmx::Error> {
    let Args {
        input,
        output,
        force,
    } = args;
    let start = std::time::Instant::now();
    if dmx::is_dash(&output) {
        use std::io::IsTerminal;
        if std::io::stdout().is_terminal() {
            return Err(dmx::Error::Destination(
                "refusing to write binary data to a terminal: redirect standard \
                 output (`dmx decompress ARCHIVE - > FILE`)"
                    .into(),
            ));
        }
        let sent = dmx::decompress_to(
            &input,
            &mut std::io::stdout().lock(),
            &options(common, force),
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
    } else if let Some(old) = dmx::legacy::legacy_file(&input)?.filter(|f| !f.kind.is_delta()) {
        dmx::legacy::restore(&input, None, &output, &options(common, force))?;
        if !common.quiet {
            eprintln!("{}: {}", input.display(), old.summary);
        }
    } else {
        dmx::decompress(&input, &output, &options(common, force))?;
    }
    if !common.quiet {
        eprintln!(
            "{} -> {} in {:.2} s",
            input.display(),
            output.display(),
            start.elapsed().as_secs_f64()
        );
    }
    Ok(Outcome::Ok)
}
