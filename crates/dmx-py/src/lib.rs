//! `dmx._dmx`: the Rust extension of the `dmx-weights` Python package (import name `dmx`).
//!
//! The Python layer (`python/dmx/`) is the public API; this module is its engine side: the
//! CLI's operations (`ops`), lazy tensor reads into caller-allocated memory (`reader`),
//! archives written from tensor memory (`writer`) and the `dmx` command. All work runs
//! with the GIL released, Ctrl-C cancels it cleanly, and no Rust panic reaches Python
//! (`run`).

mod buffers;
mod errors;
mod ops;
mod reader;
mod run;
mod writer;

use pyo3::prelude::*;

/// The extension module.
#[pymodule]
fn _dmx(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_function(wrap_pyfunction!(ops::compress, m)?)?;
    m.add_function(wrap_pyfunction!(ops::decompress, m)?)?;
    m.add_function(wrap_pyfunction!(ops::info, m)?)?;
    m.add_function(wrap_pyfunction!(ops::verify, m)?)?;
    m.add_function(wrap_pyfunction!(ops::extract, m)?)?;
    m.add_function(wrap_pyfunction!(ops::delta_compress, m)?)?;
    m.add_function(wrap_pyfunction!(ops::delta_reconstruct, m)?)?;
    m.add_function(wrap_pyfunction!(ops::delta_info, m)?)?;
    m.add_function(wrap_pyfunction!(ops::diff, m)?)?;
    m.add_function(wrap_pyfunction!(ops::chain_compress, m)?)?;
    m.add_function(wrap_pyfunction!(ops::chain_append, m)?)?;
    m.add_function(wrap_pyfunction!(ops::chain_reconstruct, m)?)?;
    m.add_function(wrap_pyfunction!(ops::chain_info, m)?)?;
    m.add_function(wrap_pyfunction!(ops::chain_verify, m)?)?;
    m.add_function(wrap_pyfunction!(ops::chain_prune, m)?)?;
    m.add_function(wrap_pyfunction!(writer::save_tensors, m)?)?;
    m.add_function(wrap_pyfunction!(cli_main, m)?)?;
    m.add_function(wrap_pyfunction!(_panic_for_tests, m)?)?;
    m.add_class::<reader::Reader>()?;
    m.add_class::<ops::CompressArgs>()?;
    Ok(())
}

/// Runs the `dmx` command with `argv` (`argv[0]` is the program name) and returns its exit
/// status; output goes to the process's stdout and stderr, exactly as the binary's. For the
/// `dmx` console script: the command installs its own SIGINT/SIGTERM/SIGHUP handlers for the
/// rest of the process.
#[pyfunction]
fn cli_main(py: Python<'_>, argv: Vec<std::ffi::OsString>) -> i32 {
    py.detach(move || {
        std::panic::catch_unwind(move || dmx_cli::main_with_args(argv)).unwrap_or(101)
    })
}

/// Panics inside the engine-call machinery: lets the tests check that a Rust panic arrives
/// in Python as `DmxError`, never as a crash or a `PanicException`.
#[pyfunction]
fn _panic_for_tests(py: Python<'_>) -> PyResult<()> {
    run::Call::new(None, false, None).run(py, |_| -> dmx::Result<()> {
        panic!("deliberate panic for the tests")
    })
}
