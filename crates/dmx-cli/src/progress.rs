//! A terminal progress bar for the engine's [`dmx::Progress`] hook.

use std::io::IsTerminal;
use std::sync::Mutex;

use indicatif::{ProgressBar, ProgressStyle};

/// The bar's layout. Sizes and speeds are in decimal units (1 MB = 10^6 bytes), like every
/// summary and BENCHMARKS.md, so the bar and the summary after it show the same numbers.
const TEMPLATE: &str = "{msg:>13} [{bar:30}] {decimal_bytes}/{decimal_total_bytes} \
                        {decimal_bytes_per_sec} eta {eta}";

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
        let style = ProgressStyle::with_template(TEMPLATE)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The bar counts in MB (10^6 bytes) as the summaries do, never in MiB.
    #[test]
    fn the_bar_uses_decimal_units() {
        assert!(ProgressStyle::with_template(TEMPLATE).is_ok());
        for key in ["{bytes}", "{total_bytes}", "{bytes_per_sec}", "binary_"] {
            assert!(!TEMPLATE.contains(key), "{key} in {TEMPLATE}");
        }
        for key in [
            "{decimal_bytes}",
            "{decimal_total_bytes}",
            "{decimal_bytes_per_sec}",
        ] {
            assert!(TEMPLATE.contains(key), "{key} missing from {TEMPLATE}");
        }
        assert_eq!(indicatif::DecimalBytes(1_500_000).to_string(), "1.50 MB");
    }
}
