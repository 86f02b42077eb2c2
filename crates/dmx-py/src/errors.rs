//! Engine errors as Python exceptions. The classes live in `dmx/_errors.py` (one definition,
//! with docstrings and the `OSError` bases); this module picks the class and builds it.

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;

/// The message for an error, as the CLI words it (the flag that overwrites an output is the
/// `force=True` keyword here).
pub fn message(e: &dmx::Error) -> String {
    match e {
        dmx::Error::Exists(path) if path.is_dir() => format!(
            "{} already exists; use force=True to restore into it (only the files the archive \
             holds are replaced; other files are kept)",
            path.display()
        ),
        dmx::Error::Exists(path) => format!(
            "{} already exists; use force=True to overwrite it",
            path.display()
        ),
        dmx::Error::FolderNotEmpty { path, chain: true } => format!(
            "{}: holds a chain; use force=True to replace it, or chain_append to add to it",
            path.display()
        ),
        dmx::Error::FolderNotEmpty { path, chain: false } => format!(
            "{}: exists and is not empty; use force=True to create the chain in it anyway \
             (files other than the chain's are kept)",
            path.display()
        ),
        dmx::Error::BaseNeeded(_) => format!("{e}; give the base it was made from with base="),
        _ => e.to_string(),
    }
}

/// The exception class (a name in `dmx._errors`) for an engine error, and for I/O errors the
/// `errno` and the path.
fn classify(e: &dmx::Error) -> (&'static str, Option<i32>, Option<String>) {
    match e {
        dmx::Error::Io { path, source } => {
            let class = match source.kind() {
                std::io::ErrorKind::NotFound => "DmxFileNotFoundError",
                std::io::ErrorKind::PermissionDenied => "DmxPermissionError",
                std::io::ErrorKind::AlreadyExists => "DmxFileExistsError",
                std::io::ErrorKind::IsADirectory => "DmxIsADirectoryError",
                std::io::ErrorKind::NotADirectory => "DmxNotADirectoryError",
                _ => "DmxOSError",
            };
            (
                class,
                source.raw_os_error(),
                Some(path.display().to_string()),
            )
        }
        dmx::Error::Exists(path) => (
            "DmxFileExistsError",
            Some(17), // EEXIST
            Some(path.display().to_string()),
        ),
        dmx::Error::FolderNotEmpty { path, .. } => (
            "DmxFileExistsError",
            Some(17), // EEXIST
            Some(path.display().to_string()),
        ),
        dmx::Error::Mismatch { .. } => ("VerificationError", None, None),
        dmx::Error::Cancelled => ("CancelledError", None, None),
        dmx::Error::TensorNotFound { .. } => ("TensorNotFoundError", None, None),
        dmx::Error::Internal(_) => ("DmxError", None, None),
        e if e.exit_code() == 1 => ("CorruptArchiveError", None, None),
        _ => ("UsageError", None, None),
    }
}

/// The Python exception for an engine error.
pub fn to_py(py: Python<'_>, e: &dmx::Error) -> PyErr {
    let (class, errno, path) = classify(e);
    let msg = message(e);
    let made = py.import("dmx._errors").and_then(|m| {
        m.getattr("_make")?
            .call1((class, msg.clone(), errno, path))
            .map(|v| v.unbind())
    });
    match made {
        Ok(value) => PyErr::from_value(value.into_bound(py)),
        // The package is broken (dmx._errors missing): still report the message.
        Err(_) => PyRuntimeError::new_err(msg),
    }
}

/// A `DmxError` for a Rust panic caught before it reached Python.
pub fn panic_to_py(py: Python<'_>, payload: &(dyn std::any::Any + Send)) -> PyErr {
    let what = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into());
    let msg = format!("internal error (a bug in dmx; please report it): {what}");
    let made = py.import("dmx._errors").and_then(|m| {
        m.getattr("_make")?
            .call1(("DmxError", msg.clone(), None::<i32>, None::<String>))
            .map(|v| v.unbind())
    });
    match made {
        Ok(value) => PyErr::from_value(value.into_bound(py)),
        Err(_) => PyRuntimeError::new_err(msg),
    }
}

/// A `UsageError` with `msg` (bad arguments found by the bindings themselves).
pub fn usage(msg: impl Into<String>) -> dmx::Error {
    dmx::Error::InvalidArgument(msg.into())
}
