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
    /// A value given by the caller is out of range or contradicts another: no checkpoints,
    /// zero worker threads, a negative error budget, an entry index past the end, the same
    /// tensor named twice, a base given for something that is not a delta, ...
    #[error("{0}")]
    InvalidArgument(String),
    /// An option (named as in [`crate::lossy::LossyOptions`]: `mantissa_bits`,
    /// `keep_lossless`, ...) has a value that is out of range or does not apply with the
    /// others. Front ends show `option` in their own spelling (the CLI as `--mantissa-bits`).
    #[error("{option}={value}: {reason}")]
    InvalidOption {
        /// The option's name in the library.
        option: &'static str,
        /// The value given, as the user wrote it.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The input is not of a kind the operation takes: a folder where one file is needed, a
    /// file that is not safetensors, a delta where an archive is needed (or the reverse), a
    /// chain manifest of an unknown version, an ambiguous tensor name, ...
    #[error("{0}")]
    Unsupported(String),
    /// No tensor of that name in the file or archive.
    #[error("{}: no tensor named {name:?}", path.display())]
    TensorNotFound {
        /// The file or archive searched.
        path: PathBuf,
        /// The name asked for.
        name: String,
    },
    /// A delta was checked without the base it was made from, which is needed to decode it.
    #[error("{} is a delta: its base is needed to check it", .0.display())]
    BaseNeeded(PathBuf),
    /// A delta was given a base other than the one it was made from.
    #[error("{0}")]
    WrongBase(String),
    /// An input changed (size or content) while it was being read; nothing was written.
    #[error("{}: {detail}", path.display())]
    InputChanged {
        /// The input.
        path: PathBuf,
        /// What was noticed.
        detail: String,
    },
    /// The destination cannot be written as asked: it is an input (or inside one), it is not
    /// a regular file or folder where one is needed, it lies on another file system, ...
    #[error("{0}")]
    Destination(String),
    /// The output folder of a new chain holds files (a chain when `chain`) and overwriting
    /// was not asked for ([`crate::Options::force`]).
    #[error("{}: {}", path.display(), if *chain { "holds a chain (`dmx chain-append` adds to it)" } else { "exists and is not empty" })]
    FolderNotEmpty {
        /// The folder.
        path: PathBuf,
        /// Whether it holds a chain.
        chain: bool,
    },
    /// Another dmx process holds the lock of this chain folder.
    #[error("{}: another dmx process is writing this chain; try again when it is done", .0.display())]
    Busy(PathBuf),
    /// The input exceeds a limit of the format or of this machine (a name too long to store,
    /// an index above the reader limit, a segment that does not fit in memory, ...).
    #[error("{0}")]
    Limit(String),
    /// The system refused a resource the operation needs (worker threads).
    #[error("{0}")]
    Resource(String),
    /// A step that cannot fail on valid data failed (a bug: please report it).
    #[error("internal error: {0}")]
    Internal(String),
    /// The output exists and overwriting it was not asked for ([`crate::Options::force`]).
    #[error("{} already exists", .0.display())]
    Exists(PathBuf),
    /// The file was written by dmx-compress, the Python tool dmx replaces (`dmx import`
    /// converts it; `dmx decompress` restores it).
    #[error("{}: not a dmx archive: {summary} (convert it with `dmx import`)", path.display())]
    Legacy {
        /// The file.
        path: PathBuf,
        /// What it is ("written by dmx-compress, format v3, mode bfp — lossy").
        summary: String,
    },
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
            Error::Io { .. }
            | Error::InvalidArgument(_)
            | Error::InvalidOption { .. }
            | Error::Unsupported(_)
            | Error::TensorNotFound { .. }
            | Error::BaseNeeded(_)
            | Error::WrongBase(_)
            | Error::InputChanged { .. }
            | Error::Destination(_)
            | Error::FolderNotEmpty { .. }
            | Error::Busy(_)
            | Error::Limit(_)
            | Error::Resource(_)
            | Error::Internal(_)
            | Error::Legacy { .. }
            | Error::Exists(_)
            | Error::Cancelled => false,
        }
    }

    /// The exit status a command-line tool ends with for this error: 1 for an integrity
    /// failure ([`Error::is_integrity_failure`]), 2 for anything else (usage, I/O, refusals,
    /// cancellation).
    pub fn exit_code(&self) -> i32 {
        if self.is_integrity_failure() { 1 } else { 2 }
    }

    /// True when the request was refused as given, with nothing wrong with the data, the
    /// disk or the run: an invalid argument, an input of an unsupported kind, a limit, a
    /// missing tensor, a wrong base. A chain stores an anchor where a delta is refused so.
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            Error::InvalidArgument(_)
                | Error::InvalidOption { .. }
                | Error::Unsupported(_)
                | Error::TensorNotFound { .. }
                | Error::WrongBase(_)
                | Error::Limit(_)
        )
    }

    /// An [`Error::InvalidOption`]: `option` set to `value` is refused because of `reason`.
    pub(crate) fn option(
        option: &'static str,
        value: impl std::fmt::Display,
        reason: impl std::fmt::Display,
    ) -> Self {
        Error::InvalidOption {
            option,
            value: value.to_string(),
            reason: reason.to_string(),
        }
    }

    /// An [`Error::InputChanged`] for `path`.
    pub(crate) fn changed(path: impl Into<PathBuf>, detail: impl Into<String>) -> Self {
        Error::InputChanged {
            path: path.into(),
            detail: detail.into(),
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Every kind maps to its exit status; only refusals let a chain fall back to an anchor;
    /// no message names a CLI flag.
    #[test]
    fn kinds_exit_codes_and_refusals() {
        let p = PathBuf::from("m.dmx");
        let refusals = [
            Error::InvalidArgument("a".into()),
            Error::Unsupported("s".into()),
            Error::TensorNotFound {
                path: p.clone(),
                name: "w".into(),
            },
            Error::WrongBase("b".into()),
            Error::Limit("l".into()),
        ];
        let others = [
            Error::BaseNeeded(p.clone()),
            Error::changed(&p, "the file changed while being read"),
            Error::Destination("d".into()),
            Error::FolderNotEmpty {
                path: p.clone(),
                chain: true,
            },
            Error::Busy(p.clone()),
            Error::Resource("r".into()),
            Error::Internal("i".into()),
            Error::Exists(p.clone()),
            Error::Cancelled,
            Error::io(&p, std::io::Error::from(std::io::ErrorKind::NotFound)),
        ];
        for e in &refusals {
            assert!(e.is_refusal() && e.exit_code() == 2, "{e:?}");
        }
        for e in &others {
            assert!(!e.is_refusal() && e.exit_code() == 2, "{e:?}");
            assert!(!e.to_string().contains("--"), "{e}");
        }
        let integrity = [
            Error::Corrupt {
                path: p.clone(),
                what: "w".into(),
                detail: "checksum".into(),
            },
            Error::Mismatch {
                path: p.clone(),
                detail: "differs".into(),
            },
        ];
        for e in &integrity {
            assert!(!e.is_refusal() && e.exit_code() == 1, "{e:?}");
        }
        assert_eq!(
            Error::TensorNotFound {
                path: p.clone(),
                name: "w".into()
            }
            .to_string(),
            "m.dmx: no tensor named \"w\""
        );
        assert_eq!(
            Error::changed(&p, "file changed size while being read").to_string(),
            "m.dmx: file changed size while being read"
        );
        assert_eq!(
            Error::BaseNeeded(p).to_string(),
            "m.dmx is a delta: its base is needed to check it"
        );
    }
}
