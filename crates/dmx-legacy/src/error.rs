//! The crate's error type.

use thiserror::Error;

/// Everything that can go wrong while reading a dmx-compress file.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum Error {
    /// The bytes do not start with any magic of the old tool.
    #[error("not a dmx-compress file (unknown magic bytes)")]
    NotLegacy,
    /// The file ends before a structure it announces.
    #[error("truncated: {0}")]
    Truncated(String),
    /// A structure is present but malformed (bad JSON, missing field, lying offset, ...).
    #[error("malformed: {0}")]
    Malformed(String),
    /// A container or record version the old tool never wrote (or newer than we read).
    #[error("unsupported {what} version {version}")]
    Version {
        /// Which structure.
        what: &'static str,
        /// The version found.
        version: u64,
    },
    /// An encoding, dtype or codec that the old tool's own decoder rejects too.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// A size exceeds the [`crate::Limits`] in force.
    #[error("limit exceeded: {0}")]
    Limit(String),
    /// An entropy-coded stream failed to decode.
    #[error("{codec} stream of tensor {tensor:?} does not decode: {detail}")]
    Codec {
        /// zstd, brotli or flac.
        codec: &'static str,
        /// The tensor concerned.
        tensor: String,
        /// What the decoder said.
        detail: String,
    },
    /// A delta needs a base tensor that the given base lacks or that does not fit.
    #[error("base: {0}")]
    Base(String),
}

/// Shorthand for results of this crate.
pub type Result<T> = std::result::Result<T, Error>;

/// A malformed-structure error with a formatted message.
pub(crate) fn malformed(msg: impl Into<String>) -> Error {
    Error::Malformed(msg.into())
}
