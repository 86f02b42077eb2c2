//! The error type of the container crate.

use thiserror::Error;

/// Why an archive's bytes were rejected. Variants name the `docs/FORMAT.md` section they
/// enforce where one applies.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum FormatError {
    /// The file does not start with the dmx magic (§2).
    #[error("not a dmx archive (bad magic bytes)")]
    NotAnArchive,
    /// The archive's major version is not one this reader understands (§2).
    #[error(
        "archive format version {major}.{minor} is not supported by this dmx (reads 1.x); \
         upgrade dmx"
    )]
    UnsupportedVersion {
        /// Major version found.
        major: u16,
        /// Minor version found.
        minor: u16,
    },
    /// Flag bits this reader does not know are set (§2).
    #[error("archive uses unknown feature flags {0:#x}; upgrade dmx")]
    UnknownFlags(u32),
    /// The bytes end before a structure is complete.
    #[error("archive truncated: {0}")]
    Truncated(&'static str),
    /// An offset or size points outside where it must lie (§4, §5).
    #[error("archive corrupt: {0} out of range")]
    OutOfRange(&'static str),
    /// A checksum does not match (§4, §5).
    #[error("archive corrupt: {0} checksum mismatch")]
    ChecksumMismatch(&'static str),
    /// A field holds a value this version does not define (§5).
    #[error("archive uses unknown {what} {value}; upgrade dmx or the archive is corrupt")]
    Unknown {
        /// Which field.
        what: &'static str,
        /// The value found.
        value: u64,
    },
    /// A structural rule is broken (§5).
    #[error("archive corrupt: {0}")]
    Invalid(&'static str),
    /// A count or size exceeds a reader limit (§6).
    #[error("archive exceeds the {what} limit: {value} > {limit}")]
    LimitExceeded {
        /// Which limit.
        what: &'static str,
        /// The value found.
        value: u64,
        /// The limit.
        limit: u64,
    },
    /// The file does not end with a trailer (§4): it is cut short, or data was appended
    /// after the end of the archive.
    #[error(
        "no archive trailer at the end of the file (end magic missing): the file is cut \
         short or has data appended after the archive"
    )]
    NoTrailer,
    /// A complete archive is followed by other data (found by [`crate::find_archive_end`]).
    #[error(
        "{extra} bytes of other data are appended after the end of the archive (its first \
         {end} bytes); remove them to read it"
    )]
    DataAppended {
        /// Length of the archive at the start of the file.
        end: u64,
        /// Bytes after it.
        extra: u64,
    },
}
