//! The `dmx` command-line tool as a library: [`main_with_args`] is the whole CLI (parsing,
//! output, exit status, signal cleanup), so that the `dmx` binary and other front ends (the
//! Python package's console script) run exactly the same tool.
//!
//! Exit status: 0 success, 1 verification failure or corruption found, 2 usage or I/O error
//! (and 128 + N when signal N ended the run).
//!
//! ```no_run
//! let status = dmx_cli::main_with_args(["dmx", "verify", "model.dmx"]);
//! assert!(status == 0 || status == 1 || status == 2);
//! ```

// `out` comes first: its `print!`/`println!`/`eprint!`/`eprintln!` replace std's in every
// module below (terminal escapes made visible, a closed stdout pipe ends output quietly).
#[macro_use]
mod out;

mod chains;
mod cmd;
mod deltas;
mod diff_text;
mod escape;
mod progress;
mod report;
mod signals;

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::Arc;

use clap::{Args, Parser};

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
    #[command(flatten)]
    common: Common,
    #[command(subcommand)]
    command: cmd::Command,
}

/// The options every command takes (global: accepted before or after the command name;
/// listed after each command's own options).
#[derive(Args, Clone)]
struct Common {
    /// Print no progress, summary or report (errors, --json output and the report of a
    /// failed verify still print).
    ///
    /// The exit status tells the outcome: `dmx info -q FILE` only checks that FILE opens.
    #[arg(short, long, global = true, display_order = 900)]
    quiet: bool,
    /// Worker threads (default: all cores). At least 1; capped at twice the cores and, where
    /// the work is known, at one per 1 MiB chunk, so a large N costs nothing.
    #[arg(short = 't', long, global = true, value_name = "N", value_parser = parse_threads, display_order = 901)]
    threads: Option<usize>,
    /// Do not fsync outputs before renaming them into place (faster; a crash still leaves
    /// no partial file, but a power failure may lose a just-written output).
    #[arg(long, global = true, display_order = 902)]
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

fn options(common: &Common, force: bool) -> dmx::Options {
    dmx::Options {
        threads: common.threads,
        force,
        no_sync: common.no_sync,
        progress: progress::bar(common.quiet).map(|b| Arc::new(b) as Arc<dyn dmx::Progress>),
        cancel: None,
    }
}

/// Outcome of a command that ran: success, or a failed check (exit 1).
enum Outcome {
    Ok,
    CheckFailed,
}

fn run(cli: Cli) -> Result<Outcome, dmx::Error> {
    cli.command.run(&cli.common)
}

/// The message for an error, with what the engine cannot know: that a path it could not
/// open is a dangling symbolic link (and to what), and the flags that would help (the
/// engine's messages name no flag).
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
    match e {
        dmx::Error::Exists(path) if path.is_dir() => {
            return format!(
                "{} already exists; use --force to restore into it (only the files the \
                 archive holds are replaced; other files are kept)",
                path.display()
            );
        }
        dmx::Error::Exists(path) => {
            return format!(
                "{} already exists; use --force to overwrite it",
                path.display()
            );
        }
        dmx::Error::FolderNotEmpty { path, chain: true } => {
            return format!(
                "{}: holds a chain; use --force to replace it, or `dmx chain-append` to add to it",
                path.display()
            );
        }
        dmx::Error::FolderNotEmpty { path, chain: false } => {
            return format!(
                "{}: exists and is not empty; use --force to create the chain in it anyway \
                 (files other than the chain's are kept)",
                path.display()
            );
        }
        dmx::Error::BaseNeeded(path) => {
            return format!(
                "{e}; give the base it was made from with `dmx verify [TARGET] {} --base BASE`",
                path.display()
            );
        }
        dmx::Error::TensorNotFound { .. } => {
            return format!("{e} (see `dmx info` for the list)");
        }
        _ => {}
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

/// Runs the `dmx` command line `args` (the first item is the program name, as in
/// [`std::env::args_os`]) and returns the exit status the process should end with: 0
/// success, 1 verification failure or corruption found, 2 usage or I/O error.
///
/// Exactly the `dmx` binary's behaviour: help, version and usage errors are printed as the
/// binary prints them (status 0 for `--help` and `--version`, 2 for a usage error), reports
/// go to standard output and errors to standard error. On the first call, handlers for
/// SIGINT, SIGTERM and SIGHUP are installed for the rest of the process: such a signal
/// removes the temporary files of the run and ends the process with 128 + the signal number.
pub fn main_with_args<I, T>(args: I) -> i32
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            // As clap's `exit` does, without ending the process.
            let _ = e.print();
            return e.exit_code();
        }
    };
    signals::install();
    out::reset();
    let result = run(cli);
    if out::stdout_failed() && matches!(result, Ok(Outcome::Ok)) {
        return 2;
    }
    match result {
        Ok(Outcome::Ok) => 0,
        Ok(Outcome::CheckFailed) => 1,
        Err(_) if let Some(sig) = signals::received() => {
            // The failure is the signal's doing (its handler removed the temporaries under
            // the run): no message; the handler exits with 128 + the signal number.
            std::thread::sleep(std::time::Duration::from_secs(10));
            128 + sig
        }
        Err(e) => {
            eprintln!("dmx: error: {}", describe(&e));
            e.exit_code()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shared options are defined once, on `Cli`, and every command takes them, before
    /// or after its name.
    #[test]
    fn shared_options_are_global() {
        for argv in [
            &["dmx", "-q", "--threads", "2", "--no-sync", "info", "a.dmx"][..],
            &["dmx", "info", "a.dmx", "-q", "-t", "2", "--no-sync"][..],
            &["dmx", "compress", "-q", "a", "b", "-t2", "--no-sync"][..],
        ] {
            let cli = Cli::try_parse_from(argv).unwrap();
            assert!(cli.common.quiet && cli.common.no_sync, "{argv:?}");
            assert_eq!(cli.common.threads, Some(2), "{argv:?}");
        }
        let cli = Cli::try_parse_from(["dmx", "chain-info", "c"]).unwrap();
        assert!(!cli.common.quiet && !cli.common.no_sync && cli.common.threads.is_none());
        assert!(Cli::try_parse_from(["dmx", "info", "a", "-t", "0"]).is_err());
    }

    /// The library entry returns the exit status instead of ending the process.
    #[test]
    fn main_with_args_returns_the_exit_status() {
        assert_eq!(main_with_args(["dmx", "--version"]), 0);
        assert_eq!(main_with_args(["dmx", "no-such-command"]), 2);
        assert_eq!(main_with_args(["dmx", "info"]), 2);
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.dmx");
        assert_eq!(
            main_with_args([OsString::from("dmx"), "info".into(), missing.into()]),
            2
        );
        let junk = dir.path().join("junk.dmx");
        std::fs::write(&junk, b"DMX1 but not an archive at all, only some bytes").unwrap();
        let status = main_with_args([
            OsString::from("dmx"),
            "-q".into(),
            "verify".into(),
            junk.into(),
        ]);
        assert!(status == 1 || status == 2, "{status}");
    }

    /// The CLI adds the flags and commands the engine's messages leave out.
    #[test]
    fn messages_gain_the_cli_hints() {
        let e = dmx::Error::BaseNeeded("d.dmxd".into());
        assert_eq!(
            describe(&e),
            "d.dmxd is a delta: its base is needed to check it; give the base it was made \
             from with `dmx verify [TARGET] d.dmxd --base BASE`"
        );
        let e = dmx::Error::TensorNotFound {
            path: "m.dmx".into(),
            name: "w".into(),
        };
        assert_eq!(
            describe(&e),
            "m.dmx: no tensor named \"w\" (see `dmx info` for the list)"
        );
        let dir = tempfile::tempdir().unwrap();
        let msg = describe(&dmx::Error::Exists(dir.path().to_path_buf()));
        assert!(msg.contains("use --force to restore into it"), "{msg}");
    }

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
