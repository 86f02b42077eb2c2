//! A terminal progress bar for the engine's [`dmx::Progress`] hook.

use std::io::IsTerminal;
use std::sync::Mutex;

use indicatif::{ProgressBar, ProgressStyle};

/// Draws a byte-progress bar on stderr.
pub struct Bar {
    bar: Mutex<Option<ProgressBar>>,
}

/// A bar, or `None` when quiet or when stderr is not a terminal.
pub fn bar(quiet: bool) -> Option<Bar> {
    (!quiet && std::io::stderr().is_terminal()).then(|| Bar {
        bar: Mutex::new(None),
    })
}

impl dmx::Progress for Bar {
    fn start(&self, what: &str, total: u64) {
        let b = ProgressBar::new(total);
        let style = ProgressStyle::with_template(
            "{msg:>13} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
        b.set_style(style);
        b.set_message(what.to_string());
        if let Ok(mut slot) = self.bar.lock() {
            *slot = Some(b);
        }
    }

    fn advance(&self, bytes: u64) {
        if let Ok(slot) = self.bar.lock()
            && let Some(b) = slot.as_ref()
        {
            b.inc(bytes);
        }
    }

    fn finish(&self) {
        if let Ok(mut slot) = self.bar.lock()
            && let Some(b) = slot.take()
        {
            b.finish_and_clear();
        }
    }
}
