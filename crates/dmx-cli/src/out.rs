//! All output of the CLI goes through here.
//!
//! The `print!`, `println!`, `eprint!` and `eprintln!` macros below replace the standard ones
//! in every module of this crate (this module is declared first in `lib.rs`, so its macros
//! are in scope everywhere after it). They differ from std's in two ways:
//!
//! - **Terminal safety**: the text is passed through [`crate::escape`], so a name read from
//!   an archive cannot carry escape sequences or forged lines to the terminal. `println!` and
//!   `eprintln!` escape everything, newlines included (each call is one line); `print!` and
//!   `eprint!` keep newlines (for text already laid out in lines, whose names were escaped
//!   one by one). JSON goes through [`json`], unescaped: serde already escapes it exactly.
//! - **Closed pipes**: when the reader of standard output goes away (`dmx info X | head -1`),
//!   a write fails with `BrokenPipe`. std's macros panic then (exit 101). Here the CLI stops
//!   writing to standard output, says nothing, and finishes with the exit status of the
//!   command (0 when it succeeded), as a Unix tool that ignores `SIGPIPE` would; long
//!   printing loops can stop early by checking [`stdout_closed`]. Any other write error on
//!   standard output (a full disk) is reported on standard error and makes the exit status
//!   2. Errors writing to standard error are ignored: there is nowhere left to report them.

use std::fmt;
use std::io::{self, ErrorKind, Write};
use std::sync::atomic::{AtomicBool, Ordering};

/// Like std's `print!`, through [`text`] (newlines kept, other controls escaped).
macro_rules! print {
    ($($arg:tt)*) => {
        $crate::out::text(::std::format_args!($($arg)*), true, false)
    };
}

/// Like std's `println!`, through [`line()`] (every control character escaped).
macro_rules! println {
    () => {
        $crate::out::line(::std::format_args!(""), false)
    };
    ($($arg:tt)*) => {
        $crate::out::line(::std::format_args!($($arg)*), false)
    };
}

/// Like std's `eprint!`, through [`text`] on standard error.
#[allow(unused_macros)]
macro_rules! eprint {
    ($($arg:tt)*) => {
        $crate::out::text(::std::format_args!($($arg)*), true, true)
    };
}

/// Like std's `eprintln!`, through [`line()`] on standard error.
macro_rules! eprintln {
    () => {
        $crate::out::line(::std::format_args!(""), true)
    };
    ($($arg:tt)*) => {
        $crate::out::line(::std::format_args!($($arg)*), true)
    };
}

/// Set when standard output was closed by its reader.
static STDOUT_CLOSED: AtomicBool = AtomicBool::new(false);
/// Set when writing to standard output failed for another reason.
static STDOUT_FAILED: AtomicBool = AtomicBool::new(false);

/// Forgets a closed or failed standard output of an earlier run in this process (each
/// [`crate::main_with_args`] call starts with a clean slate).
pub fn reset() {
    STDOUT_CLOSED.store(false, Ordering::Relaxed);
    STDOUT_FAILED.store(false, Ordering::Relaxed);
}

/// True once the reader of standard output has gone away: nothing more will be shown.
pub fn stdout_closed() -> bool {
    STDOUT_CLOSED.load(Ordering::Relaxed)
}

/// True when a write to standard output failed other than by a closed pipe (the exit
/// status must then say so).
pub fn stdout_failed() -> bool {
    STDOUT_FAILED.load(Ordering::Relaxed)
}

/// Writes one line: the formatted text with every control character escaped, then `\n`.
pub fn line(args: fmt::Arguments<'_>, stderr: bool) {
    let mut s = crate::escape::escape(&args.to_string());
    s.push('\n');
    write(s.as_bytes(), stderr);
}

/// Writes text as it is laid out: control characters escaped, newlines kept unless
/// `keep_newlines` is false.
pub fn text(args: fmt::Arguments<'_>, keep_newlines: bool, stderr: bool) {
    let s = crate::escape::escape_with(&args.to_string(), keep_newlines);
    write(s.as_bytes(), stderr);
}

/// Prints a value as pretty JSON on standard output, exactly (serde's escapes only).
pub fn json<T: serde::Serialize>(value: &T) {
    match serde_json::to_string_pretty(value) {
        Ok(mut s) => {
            s.push('\n');
            write(s.as_bytes(), false);
        }
        Err(e) => eprintln!("dmx: error: cannot encode JSON: {e}"),
    }
}

fn write(bytes: &[u8], stderr: bool) {
    if stderr {
        let mut err = io::stderr().lock();
        let _ = err.write_all(bytes).and_then(|()| err.flush());
        return;
    }
    if stdout_closed() || stdout_failed() {
        return;
    }
    let mut out = io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::BrokenPipe => {
            STDOUT_CLOSED.store(true, Ordering::Relaxed);
        }
        Err(e) => {
            STDOUT_FAILED.store(true, Ordering::Relaxed);
            drop(out);
            eprintln!("dmx: error: cannot write to standard output: {e}");
        }
    }
}
