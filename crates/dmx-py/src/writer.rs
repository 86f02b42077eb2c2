//! Writing an archive from tensors in memory (`dmx.torch.save_file`, `dmx.numpy.save_file`):
//! the tensors' bytes are read in place through the buffer protocol, with the GIL released.

use std::collections::BTreeMap;
use std::path::PathBuf;

use pyo3::prelude::*;

use crate::buffers::Bytes;
use crate::ops::lossy_options;
use crate::run::Call;

/// One tensor handed over by Python: name, safetensors dtype, shape, bytes.
type TensorArg<'py> = (String, String, Vec<u64>, Bound<'py, PyAny>);

/// Compresses `tensors` (`(name, dtype, shape, buffer)`, buffers C-contiguous) with
/// `metadata` into the archive `dst`, exactly as `dmx compress` would compress the
/// safetensors file holding them; returns the report as JSON.
#[pyfunction]
#[pyo3(signature = (tensors, dst, metadata=None, *, mode="lossless", mantissa_bits=None,
    group_size=None, max_rel_error=None, keep_lossless=Vec::new(), cast=None,
    allow_cast_overflow=false, threads=None, force=false, progress=None))]
#[allow(clippy::too_many_arguments)]
pub fn save_tensors<'py>(
    py: Python<'py>,
    tensors: Vec<TensorArg<'py>>,
    dst: PathBuf,
    metadata: Option<BTreeMap<String, String>>,
    mode: &str,
    mantissa_bits: Option<u32>,
    group_size: Option<u32>,
    max_rel_error: Option<f64>,
    keep_lossless: Vec<String>,
    cast: Option<&str>,
    allow_cast_overflow: bool,
    threads: Option<usize>,
    force: bool,
    progress: Option<Bound<'py, PyAny>>,
) -> PyResult<String> {
    let lossy = lossy_options(
        mode,
        mantissa_bits,
        group_size,
        max_rel_error,
        keep_lossless,
        cast,
        allow_cast_overflow,
    );
    let held = tensors
        .iter()
        .map(|(name, _, _, buf)| Bytes::get(buf, name, false))
        .collect::<PyResult<Vec<_>>>()?;
    let views: Vec<(&str, &str, &[u64], &[u8])> = tensors
        .iter()
        .zip(&held)
        .map(|((name, dtype, shape, _), b)| {
            (
                name.as_str(),
                dtype.as_str(),
                shape.as_slice(),
                b.as_slice(),
            )
        })
        .collect();
    Call::new(threads, force, progress).run(py, move |opts| {
        let lossy = lossy?;
        let data: Vec<dmx::TensorData<'_>> = views
            .iter()
            .map(|&(name, dtype, shape, data)| dmx::TensorData {
                name,
                dtype,
                shape,
                data,
            })
            .collect();
        let report = dmx::compress_tensors(&data, metadata.as_ref(), &dst, &lossy, opts)?;
        serde_json::to_string(&report)
            .map_err(|e| dmx::Error::Internal(format!("cannot serialize the report: {e}")))
    })
}
