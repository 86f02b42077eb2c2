//! The engine's error type.

use std::path::PathBuf;

use thiserror::Error;

/// Everything that can go wrong in the engine. Each variant names the file (and the tensor or
/// chunk) concerned.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file concerned.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The archive's container structure is invalid or unsupported.
    #[error("{path}: {source}")]
    Format {
        /// The archive.
        path: PathBuf,
        /// What is wrong.
        source: dmx_format::FormatError,
    },
    /// A chunk failed to decode or its checksum did not match: the archive is corrupt.
    #[error("{path}: {what}: {detail}")]
    Corrupt {
        /// The archive.
        path: PathBuf,
        /// Which entry, tensor and chunk.
        what: String,
        /// What failed.
        detail: String,
    },
    /// Decoded data differs from the original or from a recorded hash.
    #[error("{path}: {detail}")]
    Mismatch {
        /// The file concerned.
        path: PathBuf,
        /// What differs.
        detail: String,
    },
    /// The request cannot be carried out as given (existing output, same input and output,
    /// unknown tensor name, ...).
    #[error("{0}")]
    Usage(String),
    /// The output exists and overwriting it was not asked for ([`crate::Options::force`]).
    #[error("{} already exists", .0.display())]
    Exists(PathBuf),
    /// The operation was stopped through [`crate::Options::cancel`]; no partial output is
    /// left behind.
    #[error("cancelled")]
    Cancelled,
}

impl Error {
    /// True when the error means corrupt or mismatching data (exit status 1) rather than a
    /// usage or I/O problem (exit status 2).
    pub fn is_integrity_failure(&self) -> bool {
        match self {
            Error::Corrupt { .. } | Error::Mismatch { .. } => true,
            Error::Format { source, .. } => !matches!(
                source,
                dmx_format::FormatError::NotAnArchive
                    | dmx_format::FormatError::UnsupportedVersion { .. }
                    | dmx_format::FormatError::UnknownFlags(_)
            ),
            Error::Io { .. } | Error::Usage(_) | Error::Exists(_) | Error::Cancelled => false,
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

/// The engine's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
