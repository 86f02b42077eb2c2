//! Running engine work from Python: on a worker thread with the GIL released, while the
//! calling thread reports progress to an optional callback and checks for Ctrl-C (Python
//! runs signal handlers on the main thread only, so the check stays on the caller's thread).
//! A signal or an exception in the callback cancels the work through [`dmx::Options::cancel`]
//! and is re-raised once the work has stopped (it leaves no partial output). A Rust panic is
//! caught and raised as `DmxError`.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{RecvTimeoutError, channel};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pyo3::prelude::*;

use crate::errors;

/// How often the calling thread wakes to check signals and report progress.
const TICK: Duration = Duration::from_millis(100);

/// Stack of the worker thread (the CLI's main thread has 8 MiB; so does this).
const STACK: usize = 8 << 20;

/// What the worker reports; read by the calling thread at each tick.
#[derive(Default)]
struct Shared {
    phase: Mutex<String>,
    done: AtomicU64,
    total: AtomicU64,
    /// Bumped at every `start`/`finish`, so a tick sees phases that began and ended within it.
    events: AtomicU64,
}

/// The engine's [`dmx::Progress`] receiver: stores the numbers for the calling thread.
struct Recorder(Arc<Shared>);

impl dmx::Progress for Recorder {
    fn start(&self, what: &str, total: u64) {
        if let Ok(mut p) = self.0.phase.lock() {
            what.clone_into(&mut p);
        }
        self.0.done.store(0, Ordering::Relaxed);
        self.0.total.store(total, Ordering::Relaxed);
        self.0.events.fetch_add(1, Ordering::Relaxed);
    }

    fn advance(&self, bytes: u64) {
        self.0.done.fetch_add(bytes, Ordering::Relaxed);
    }

    fn finish(&self) {
        let total = self.0.total.load(Ordering::Relaxed);
        self.0.done.store(total, Ordering::Relaxed);
        self.0.events.fetch_add(1, Ordering::Relaxed);
    }
}

/// The settings of a call from Python.
pub struct Call<'py> {
    /// Worker threads (`None`: every core).
    pub threads: Option<usize>,
    /// Overwrite outputs.
    pub force: bool,
    /// `progress(phase, done_bytes, total_bytes)`, called on the caller's thread.
    pub progress: Option<Bound<'py, PyAny>>,
}

impl<'py> Call<'py> {
    /// Settings with `threads` and `force` and no progress callback.
    pub fn new(threads: Option<usize>, force: bool, progress: Option<Bound<'py, PyAny>>) -> Self {
        Call {
            threads,
            force,
            progress: progress.filter(|p| !p.is_none()),
        }
    }

    /// Runs `work` with engine options built from these settings (see the module docs).
    pub fn run<T, F>(&self, py: Python<'py>, work: F) -> PyResult<T>
    where
        T: Send,
        F: FnOnce(&dmx::Options) -> dmx::Result<T> + Send,
    {
        let shared = Arc::new(Shared::default());
        let cancel = Arc::new(AtomicBool::new(false));
        let opts = dmx::Options {
            threads: self.threads,
            force: self.force,
            no_sync: false,
            progress: self
                .progress
                .as_ref()
                .map(|_| Arc::new(Recorder(Arc::clone(&shared))) as Arc<dyn dmx::Progress>),
            cancel: Some(Arc::clone(&cancel)),
        };
        let (tx, rx) = channel();
        // A `Mutex` makes the receiver `Sync`, so the GIL-free waits can borrow it.
        let rx = Mutex::new(rx);
        std::thread::scope(|s| {
            let spawned = std::thread::Builder::new()
                .name("dmx-call".into())
                .stack_size(STACK)
                .spawn_scoped(s, move || {
                    let r = catch_unwind(AssertUnwindSafe(|| work(&opts)));
                    // The receiver outlives the scope; a send cannot fail.
                    let _ = tx.send(r);
                });
            if let Err(e) = spawned {
                return Err(PyErr::from(e));
            }
            let mut raised: Option<PyErr> = None;
            let mut seen = (String::new(), u64::MAX, u64::MAX, u64::MAX);
            loop {
                let wait = if raised.is_some() { None } else { Some(TICK) };
                let got = py.detach(|| {
                    let rx = rx.lock().unwrap_or_else(|p| p.into_inner());
                    match wait {
                        Some(t) => rx.recv_timeout(t),
                        None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
                    }
                });
                let finished = !matches!(got, Err(RecvTimeoutError::Timeout));
                if raised.is_none() {
                    if let Err(e) = self.report(&shared, &mut seen) {
                        raised = Some(e);
                    } else if let Err(e) = py.check_signals() {
                        raised = Some(e);
                    }
                    if raised.is_some() {
                        cancel.store(true, Ordering::Relaxed);
                    }
                }
                if !finished {
                    continue;
                }
                if let Some(e) = raised {
                    return Err(e);
                }
                return match got {
                    Ok(Ok(Ok(v))) => Ok(v),
                    Ok(Ok(Err(e))) => Err(errors::to_py(py, &e)),
                    Ok(Err(payload)) => Err(errors::panic_to_py(py, payload.as_ref())),
                    Err(_) => Err(errors::panic_to_py(py, &"the worker thread vanished")),
                };
            }
        })
    }

    /// Calls the progress callback when the numbers changed since the last call.
    fn report(&self, shared: &Shared, seen: &mut (String, u64, u64, u64)) -> PyResult<()> {
        let Some(cb) = &self.progress else {
            return Ok(());
        };
        let phase = shared.phase.lock().map(|p| p.clone()).unwrap_or_default();
        let done = shared.done.load(Ordering::Relaxed);
        let total = shared.total.load(Ordering::Relaxed);
        let events = shared.events.load(Ordering::Relaxed);
        if events == 0 || (phase == seen.0 && done == seen.1 && total == seen.2 && events == seen.3)
        {
            return Ok(());
        }
        *seen = (phase.clone(), done, total, events);
        cb.call1((phase, done, total)).map(|_| ())
    }
}
