//! The error type of the crate.

/// Why a file could not be read as a `torch.save` file. Every variant names what was wrong;
/// none of them means that anything was executed (nothing ever is).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PtError {
    /// The file is neither a zip nor a legacy pickle stream (or is a format this crate does
    /// not read, such as the pre-1.0 tar format).
    #[error("not a torch.save file: {0}")]
    NotTorch(String),
    /// The zip structure is malformed or hostile (lying sizes, overlaps, out-of-range
    /// offsets, duplicate names, ...).
    #[error("torch.save zip: {0}")]
    Zip(String),
    /// An entry uses compression or encryption; torch.save writes only STORED entries.
    #[error(
        "torch.save zip: entry {name:?} uses compression method {method} (only STORED is read)"
    )]
    Compressed {
        /// The entry's name.
        name: String,
        /// The zip compression method (0 would be STORED).
        method: u16,
    },
    /// The pickle stream is malformed (bad opcode, truncated, stack underflow, ...).
    #[error("pickle at byte {offset}: {message}")]
    Pickle {
        /// Byte offset of the offending opcode in the file.
        offset: u64,
        /// What was wrong.
        message: String,
    },
    /// A resource limit of [`crate::Limits`] was reached.
    #[error("limit exceeded: {0}")]
    Limit(String),
    /// The pickle and the stored data disagree (a storage without a record, a legacy
    /// storage that runs past the end of the file, ...).
    #[error("torch.save layout: {0}")]
    Layout(String),
}
