//! The CLI's operations as Python functions. Each returns its report as the JSON text the
//! CLI's `--json` prints (the Python layer wraps it in a report object), or `None` where the
//! CLI prints no report.

use std::path::PathBuf;

use pyo3::prelude::*;

use crate::errors::usage;
use crate::run::Call;

/// Serializes a report to the CLI's JSON.
pub fn json<T: serde::Serialize>(value: &T) -> dmx::Result<String> {
    serde_json::to_string(value)
        .map_err(|e| dmx::Error::Internal(format!("cannot serialize the report: {e}")))
}

/// The keyword arguments shared by `compress` and `save_tensors` (the lossy options of
/// `dmx.compress` and the run settings), checked by this one Python signature.
#[pyclass(frozen, module = "dmx._dmx")]
pub struct CompressArgs {
    /// The lossy options, or the message of the invalid value (raised when the call runs).
    lossy: Result<dmx::lossy::LossyOptions, String>,
    threads: Option<usize>,
    force: bool,
    progress: Option<Py<PyAny>>,
}

#[pymethods]
impl CompressArgs {
    /// Collects the keyword arguments; names and types are checked here, values when the
    /// call runs.
    #[new]
    #[pyo3(signature = (*, mode="lossless", mantissa_bits=None, group_size=None,
        max_rel_error=None, keep_lossless=Vec::new(), cast=None, allow_cast_overflow=false,
        threads=None, force=false, progress=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        mode: &str,
        mantissa_bits: Option<u32>,
        group_size: Option<u32>,
        max_rel_error: Option<f64>,
        keep_lossless: Vec<String>,
        cast: Option<&str>,
        allow_cast_overflow: bool,
        threads: Option<usize>,
        force: bool,
        progress: Option<Py<PyAny>>,
    ) -> Self {
        let lossy = lossy_mode(mode, cast).map(|(mode, cast)| dmx::lossy::LossyOptions {
            mode,
            mantissa_bits,
            group_size,
            max_rel_error,
            keep_lossless,
            shared_grids: false,
            cast,
            allow_cast_overflow,
        });
        CompressArgs {
            lossy,
            threads,
            force,
            progress,
        }
    }
}

impl CompressArgs {
    /// The engine's lossy options.
    pub fn lossy(&self) -> dmx::Result<dmx::lossy::LossyOptions> {
        self.lossy.clone().map_err(usage)
    }

    /// The run settings (threads, force, progress callback).
    pub fn call<'py>(&self, py: Python<'py>) -> Call<'py> {
        let progress = self.progress.as_ref().map(|p| p.bind(py).clone());
        Call::new(self.threads, self.force, progress)
    }
}

/// The lossy mode and cast by name, or the message saying which name is invalid.
fn lossy_mode(
    mode: &str,
    cast: Option<&str>,
) -> Result<(dmx::lossy::Mode, Option<dmx::lossy::CastTo>), String> {
    use dmx::lossy::{CastTo, Mode};
    let mode = Mode::from_name(mode).ok_or_else(|| {
        format!(
            "invalid mode {mode:?}: expected one of {}",
            quoted(Mode::ALL.map(Mode::name))
        )
    })?;
    let cast = match cast {
        None => None,
        Some(c) => Some(CastTo::from_name(c).ok_or_else(|| {
            format!(
                "invalid cast {c:?}: expected {}",
                quoted(CastTo::ALL.map(CastTo::name)).replace(", ", " or ")
            )
        })?),
    };
    Ok((mode, cast))
}

/// `['a', 'b']` → `'a', 'b'`: names as Python writes string literals.
fn quoted<const N: usize>(names: [&str; N]) -> String {
    names.map(|n| format!("'{n}'")).join(", ")
}

/// A delta precision by name.
fn precision(name: &str) -> dmx::Result<dmx::Precision> {
    dmx::Precision::from_name(name).ok_or_else(|| {
        usage(format!(
            "invalid precision {name:?}: expected one of {}",
            quoted(dmx::Precision::ALL.map(dmx::Precision::name))
        ))
    })
}

/// `dmx compress`: returns the report as JSON.
#[pyfunction]
pub fn compress(
    py: Python<'_>,
    src: PathBuf,
    dst: PathBuf,
    args: &Bound<'_, CompressArgs>,
) -> PyResult<String> {
    let args = args.get();
    let lossy = args.lossy();
    args.call(py).run(py, move |opts| {
        json(&dmx::compress_with(&src, &dst, &lossy?, opts)?)
    })
}

/// `dmx decompress`.
#[pyfunction]
#[pyo3(signature = (src, dst, *, threads=None, force=false, progress=None))]
pub fn decompress<'py>(
    py: Python<'py>,
    src: PathBuf,
    dst: PathBuf,
    threads: Option<usize>,
    force: bool,
    progress: Option<Bound<'py, PyAny>>,
) -> PyResult<()> {
    Call::new(threads, force, progress).run(py, move |opts| dmx::decompress(&src, &dst, opts))
}

/// `dmx info`: returns the statistics as JSON.
#[pyfunction]
pub fn info(py: Python<'_>, path: PathBuf) -> PyResult<String> {
    Call::new(None, false, None).run(py, move |_| {
        if dmx::chain::is_chain_dir(&path) {
            return Err(usage(format!(
                "{}: is a chain folder, not an archive; use chain_info",
                path.display()
            )));
        }
        let archive = dmx::Archive::open(&path)?;
        json(&dmx::Stats::of_archive(&archive))
    })
}

/// `dmx verify [ORIGINAL] ARCHIVE` (an archive, a delta with `base`, or a chain folder):
/// returns the report as JSON.
#[pyfunction]
#[pyo3(signature = (archive, original=None, *, max_rel_error=None, base=None, threads=None,
    progress=None))]
pub fn verify<'py>(
    py: Python<'py>,
    archive: PathBuf,
    original: Option<PathBuf>,
    max_rel_error: Option<f64>,
    base: Option<PathBuf>,
    threads: Option<usize>,
    progress: Option<Bound<'py, PyAny>>,
) -> PyResult<String> {
    Call::new(threads, false, progress).run(py, move |opts| {
        let req = dmx::VerifyRequest {
            target: archive,
            original,
            base,
            max_rel_error,
        };
        json(&dmx::verify_path(&req, opts)?)
    })
}

/// `dmx extract`: a safetensors file holding only the named tensors.
#[pyfunction]
#[pyo3(signature = (archive, dst, tensors, *, threads=None, force=false, progress=None))]
pub fn extract<'py>(
    py: Python<'py>,
    archive: PathBuf,
    dst: PathBuf,
    tensors: Vec<String>,
    threads: Option<usize>,
    force: bool,
    progress: Option<Bound<'py, PyAny>>,
) -> PyResult<()> {
    Call::new(threads, force, progress).run(py, move |opts| {
        let a = dmx::Archive::open(&archive)?;
        dmx::extract(&a, &tensors, &dst, opts)
    })
}

/// `dmx delta-compress`: returns the report as JSON.
#[pyfunction]
#[pyo3(signature = (base, target, dst, *, precision="lossless".to_owned(), threads=None, force=false,
    progress=None))]
#[allow(clippy::too_many_arguments)]
pub fn delta_compress<'py>(
    py: Python<'py>,
    base: PathBuf,
    target: PathBuf,
    dst: PathBuf,
    precision: String,
    threads: Option<usize>,
    force: bool,
    progress: Option<Bound<'py, PyAny>>,
) -> PyResult<String> {
    Call::new(threads, force, progress).run(py, move |opts| {
        let d = dmx::DeltaOptions {
            precision: self::precision(&precision)?,
            steps: None,
        };
        json(&dmx::delta_compress(&base, &target, &dst, &d, opts)?)
    })
}

/// `dmx delta-reconstruct`.
#[pyfunction]
#[pyo3(signature = (base, delta, dst, *, threads=None, force=false, progress=None))]
pub fn delta_reconstruct<'py>(
    py: Python<'py>,
    base: PathBuf,
    delta: PathBuf,
    dst: PathBuf,
    threads: Option<usize>,
    force: bool,
    progress: Option<Bound<'py, PyAny>>,
) -> PyResult<()> {
    Call::new(threads, force, progress).run(py, move |opts| {
        dmx::delta_reconstruct(&base, &delta, &dst, opts)
    })
}

/// `dmx delta-info`: returns the report as JSON.
#[pyfunction]
pub fn delta_info(py: Python<'_>, path: PathBuf) -> PyResult<String> {
    Call::new(None, false, None).run(py, move |_| json(&dmx::delta_info(&path)?))
}

/// `dmx diff`: returns the report as JSON.
#[pyfunction]
#[pyo3(signature = (a, b, *, threads=None, progress=None))]
pub fn diff<'py>(
    py: Python<'py>,
    a: PathBuf,
    b: PathBuf,
    threads: Option<usize>,
    progress: Option<Bound<'py, PyAny>>,
) -> PyResult<String> {
    Call::new(threads, false, progress).run(py, move |opts| json(&dmx::diff::diff(&a, &b, opts)?))
}

/// `dmx chain-compress`: returns the report as JSON.
#[pyfunction]
#[pyo3(signature = (checkpoints, out_dir, *, precision="lossless".to_owned(),
    max_depth=dmx::chain::DEFAULT_MAX_DEPTH, threads=None, force=false, progress=None))]
#[allow(clippy::too_many_arguments)]
pub fn chain_compress<'py>(
    py: Python<'py>,
    checkpoints: Vec<PathBuf>,
    out_dir: PathBuf,
    precision: String,
    max_depth: usize,
    threads: Option<usize>,
    force: bool,
    progress: Option<Bound<'py, PyAny>>,
) -> PyResult<String> {
    Call::new(threads, force, progress).run(py, move |opts| {
        let c = dmx::ChainOptions {
            precision: self::precision(&precision)?,
            max_depth,
        };
        json(&dmx::chain_compress(&checkpoints, &out_dir, &c, opts)?)
    })
}

/// `dmx chain-append`: returns the report as JSON.
#[pyfunction]
#[pyo3(signature = (dir, checkpoints, *, threads=None, progress=None))]
pub fn chain_append<'py>(
    py: Python<'py>,
    dir: PathBuf,
    checkpoints: Vec<PathBuf>,
    threads: Option<usize>,
    progress: Option<Bound<'py, PyAny>>,
) -> PyResult<String> {
    Call::new(threads, false, progress).run(py, move |opts| {
        json(&dmx::chain_append(&dir, &checkpoints, opts)?)
    })
}

/// `dmx chain-reconstruct`: returns the report as JSON (its `ok` says whether every restored
/// file matched its recorded hash).
#[pyfunction]
#[pyo3(signature = (dir, out_dir, indices=None, *, threads=None, force=false, progress=None))]
#[allow(clippy::too_many_arguments)]
pub fn chain_reconstruct<'py>(
    py: Python<'py>,
    dir: PathBuf,
    out_dir: PathBuf,
    indices: Option<Vec<usize>>,
    threads: Option<usize>,
    force: bool,
    progress: Option<Bound<'py, PyAny>>,
) -> PyResult<String> {
    Call::new(threads, force, progress).run(py, move |opts| {
        json(&dmx::chain_reconstruct(
            &dir,
            &out_dir,
            indices.as_deref(),
            opts,
        )?)
    })
}

/// `dmx chain-info`: returns the report as JSON.
#[pyfunction]
pub fn chain_info(py: Python<'_>, dir: PathBuf) -> PyResult<String> {
    Call::new(None, false, None).run(py, move |_| json(&dmx::chain_info(&dir)?))
}

/// `dmx verify DIR` for a chain: returns the report as JSON.
#[pyfunction]
#[pyo3(signature = (dir, *, threads=None, progress=None))]
pub fn chain_verify<'py>(
    py: Python<'py>,
    dir: PathBuf,
    threads: Option<usize>,
    progress: Option<Bound<'py, PyAny>>,
) -> PyResult<String> {
    Call::new(threads, false, progress).run(py, move |opts| json(&dmx::chain_verify(&dir, opts)?))
}

/// `dmx chain-prune`: keeps the entries `keep` (and what they depend on); returns the report
/// as JSON.
#[pyfunction]
#[pyo3(signature = (dir, keep, *, threads=None, progress=None))]
pub fn chain_prune<'py>(
    py: Python<'py>,
    dir: PathBuf,
    keep: Vec<usize>,
    threads: Option<usize>,
    progress: Option<Bound<'py, PyAny>>,
) -> PyResult<String> {
    Call::new(threads, false, progress)
        .run(py, move |opts| json(&dmx::chain_prune(&dir, &keep, opts)?))
}
