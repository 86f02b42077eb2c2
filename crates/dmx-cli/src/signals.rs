//! Signals: SIGINT, SIGTERM and SIGHUP remove the temporary files of the run and exit with
//! 128 + the signal number (130, 143, 129); SIGXFSZ (a `ulimit -f` file-size limit) is caught
//! so that the write past the limit fails with an ordinary I/O error (EFBIG), which removes
//! the temporary file like any other failed write.

use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Once};

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGXFSZ};
use signal_hook::iterator::Signals;

/// The signal being handled (0 while none): set before the temporaries are removed, so the
/// main thread can tell that an error it meets (a temporary vanished under it) is the
/// signal's doing and must not be reported.
static RECEIVED: AtomicI32 = AtomicI32::new(0);

/// The signal that is ending the run, if any.
pub fn received() -> Option<i32> {
    match RECEIVED.load(Ordering::SeqCst) {
        0 => None,
        sig => Some(sig),
    }
}

/// Installs the handlers, once per process (best effort: where a handler cannot be
/// installed, the default action of that signal stays).
pub fn install() {
    static ONCE: Once = Once::new();
    ONCE.call_once(install_now);
}

fn install_now() {
    // A caught SIGXFSZ makes the write that crosses the limit return EFBIG instead of killing
    // the process; the flag itself is not read.
    let _ = signal_hook::flag::register(SIGXFSZ, Arc::new(AtomicBool::new(false)));
    let Ok(mut signals) = Signals::new([SIGINT, SIGTERM, SIGHUP]) else {
        return;
    };
    let _ = std::thread::Builder::new()
        .name("dmx-signals".into())
        .spawn(move || {
            if let Some(sig) = signals.forever().next() {
                RECEIVED.store(sig, Ordering::SeqCst);
                dmx::remove_temps();
                std::process::exit(128 + sig);
            }
        });
}
