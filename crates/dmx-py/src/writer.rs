//! Writing an archive from tensors in memory (`dmx.torch.save_file`, `dmx.numpy.save_file`):
//! the tensors' bytes are read in place through the buffer protocol, with the GIL released.

use std::collections::BTreeMap;
use std::path::PathBuf;

use pyo3::prelude::*;

use crate::buffers::Bytes;
use crate::ops::{CompressArgs, json};

/// One tensor handed over by Python: name, safetensors dtype, shape, bytes.
type TensorArg<'py> = (String, String, Vec<u64>, Bound<'py, PyAny>);

/// Compresses `tensors` (`(name, dtype, shape, buffer)`, buffers C-contiguous) with
/// `metadata` into the archive `dst` with the options `args`, exactly as `dmx compress` would compress the
/// safetensors file holding them; returns the report as JSON.
#[pyfunction]
#[pyo3(signature = (tensors, dst, metadata, args))]
pub fn save_tensors<'py>(
    py: Python<'py>,
    tensors: Vec<TensorArg<'py>>,
    dst: PathBuf,
    metadata: Option<BTreeMap<String, String>>,
    args: &Bound<'py, CompressArgs>,
) -> PyResult<String> {
    let args = args.get();
    let lossy = args.lossy();
    let held = tensors
        .iter()
        .map(|(name, _, _, buf)| Bytes::get(buf, name, false))
        .collect::<PyResult<Vec<_>>>()?;
    let data: Vec<dmx::TensorData<'_>> = tensors
        .iter()
        .zip(&held)
        .map(|((name, dtype, shape, _), b)| dmx::TensorData {
            name,
            dtype,
            shape,
            data: b.as_slice(),
        })
        .collect();
    args.call(py).run(py, move |opts| {
        let lossy = lossy?;
        json(&dmx::compress_tensors(
            &data,
            metadata.as_ref(),
            &dst,
            &lossy,
            opts,
        )?)
    })
}
