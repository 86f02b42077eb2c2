//! One entry for every kind of verification, as `dmx verify` and the Python package take it:
//! an archive, a delta (with its base) or a chain folder, optionally with the original, and
//! an error budget; the result is one serializable report.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::Options;
use crate::archive::Archive;
use crate::chain::{ChainVerifyReport, chain_verify};
use crate::error::{Error, Result};
use crate::verify::{FileReport, VerifyReport, verify_delta};

/// What [`verify_path`] checks.
#[derive(Debug, Clone, Default)]
pub struct VerifyRequest {
    /// A `.dmx` archive, a `.dmxd` delta, or a chain folder.
    pub target: PathBuf,
    /// The original file or folder to compare every restored byte with (not for chains).
    pub original: Option<PathBuf>,
    /// The base a delta was made from (required for deltas, refused for anything else).
    pub base: Option<PathBuf>,
    /// Lossy archives and deltas: fail any tensor whose relative L2 error exceeds this
    /// (default: the error the archive records). Not for chains.
    pub max_rel_error: Option<f64>,
}

/// What [`verify_path`] found: the report of an archive (or delta), or of a chain. Serialized
/// as the inner report itself (the `--report` JSON of docs/VERIFY.md).
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum PathReport {
    /// An archive or a delta.
    Archive(VerifyReport),
    /// A chain folder.
    Chain(ChainVerifyReport),
}

impl PathReport {
    /// True when every check passed.
    pub fn ok(&self) -> bool {
        match self {
            PathReport::Archive(r) => r.ok,
            PathReport::Chain(r) => r.ok,
        }
    }
}

/// Verifies what `req` names and returns the report. A chain folder (without an original) is
/// checked with [`chain_verify`]; anything else is opened as an archive and checked with
/// [`verify_delta`]. An archive too damaged to open gives a failing report (not an error), so
/// that a corrupt archive is reported like any other failed check; errors are for requests
/// that cannot be carried out (a missing file, a refused base, a cancel).
pub fn verify_path(req: &VerifyRequest, opts: &Options) -> Result<PathReport> {
    if req.original.is_none() && req.target.is_dir() {
        if req.max_rel_error.is_some() {
            return Err(Error::InvalidArgument(format!(
                "{}: an error budget does not apply to chains",
                req.target.display()
            )));
        }
        if req.base.is_some() {
            return Err(Error::InvalidArgument(format!(
                "{}: a base applies to deltas (.dmxd), not to chains",
                req.target.display()
            )));
        }
        return chain_verify(&req.target, opts).map(PathReport::Chain);
    }
    let original = req.original.as_deref();
    let report = match Archive::open(&req.target) {
        Ok(archive) => verify_delta(
            &archive,
            original,
            req.base.as_deref(),
            req.max_rel_error,
            opts,
        )?,
        Err(e) if e.is_integrity_failure() => VerifyReport::unreadable(&req.target, original, &e),
        Err(e) => return Err(e),
    };
    Ok(PathReport::Archive(report))
}

impl VerifyReport {
    /// A failing report for an archive that could not even be opened (`e` says why).
    pub fn unreadable(archive: &Path, original: Option<&Path>, e: &Error) -> Self {
        VerifyReport {
            schema: 2,
            archive: archive.display().to_string(),
            original: original.map(|o| o.display().to_string()),
            ok: false,
            files: vec![FileReport {
                path: archive.display().to_string(),
                size: 0,
                ok: false,
                bit_exact: original.map(|_| false),
                tensors: 0,
                problems: vec![e.to_string()],
                tensor_errors: Vec::new(),
            }],
            components: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A damaged archive is a failing report; a missing one, a chain given a base or an
    /// error budget are errors of the request.
    #[test]
    fn dispatch_and_refusals() {
        let dir = tempfile::tempdir().unwrap();
        let opts = Options {
            no_sync: true,
            ..Options::default()
        };
        let notes = dir.path().join("notes.txt");
        std::fs::write(&notes, b"some text to store").unwrap();
        let junk = dir.path().join("junk.dmx");
        crate::compress(&notes, &junk, &opts).unwrap();
        let mut bytes = std::fs::read(&junk).unwrap();
        bytes.pop();
        std::fs::write(&junk, &bytes).unwrap();
        let req = |target: &Path| VerifyRequest {
            target: target.to_path_buf(),
            ..VerifyRequest::default()
        };
        let r = verify_path(&req(&junk), &opts).unwrap();
        assert!(!r.ok() && matches!(&r, PathReport::Archive(a) if a.files[0].problems.len() == 1));
        let missing = dir.path().join("missing.dmx");
        assert!(matches!(
            verify_path(&req(&missing), &opts),
            Err(Error::Io { .. })
        ));
        let chain = VerifyRequest {
            base: Some(junk.clone()),
            ..req(dir.path())
        };
        assert!(matches!(
            verify_path(&chain, &opts),
            Err(Error::InvalidArgument(_))
        ));
        let chain = VerifyRequest {
            max_rel_error: Some(0.1),
            ..req(dir.path())
        };
        let e = verify_path(&chain, &opts).unwrap_err();
        assert!(
            matches!(&e, Error::InvalidArgument(m) if !m.contains("--")),
            "{e}"
        );
    }
}
