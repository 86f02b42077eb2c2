//! `Reader`: lazy access to the tensors of an archive (or of a plain safetensors file), the
//! engine side of `dmx.safe_open` and `load_file`. Tensors are decoded straight into buffers
//! the caller allocated (a fresh `torch.empty` / `numpy.empty`), with the GIL released.

use std::collections::BTreeMap;
use std::path::PathBuf;

use pyo3::prelude::*;
use rayon::prelude::*;

use crate::buffers::Bytes;
use crate::errors::usage;
use crate::run::Call;

/// The tensors of one model file: a single-safetensors `.dmx` archive or a `.safetensors`
/// file. Checksums are checked on every decode.
#[pyclass(frozen, module = "dmx._dmx")]
pub struct Reader {
    file: dmx::tensors::TensorFile,
}

impl Reader {
    /// A tensor's metadata, or a usage error naming the file.
    fn meta(&self, name: &str) -> dmx::Result<&dmx::tensors::TensorMeta> {
        self.file.get(name).ok_or_else(|| {
            usage(format!(
                "{}: no tensor named {name:?}",
                self.file.path().display()
            ))
        })
    }

    /// Decodes tensor `name` into `out` (exactly its byte length).
    fn read_one(&self, name: &str, out: &mut [u8]) -> dmx::Result<()> {
        let t = self.meta(name)?;
        if out.len() as u64 != t.len {
            return Err(usage(format!(
                "{name:?}: the buffer holds {} bytes, the tensor {}",
                out.len(),
                t.len
            )));
        }
        let data = self.file.read(name)?;
        out.copy_from_slice(&data);
        Ok(())
    }
}

/// Bytes per row along the first dimension (per element for a scalar or 1-D tensor) and the
/// number of rows.
fn rows_of(t: &dmx::tensors::TensorMeta) -> (u64, u64) {
    let rows = t.shape.first().copied().unwrap_or(1);
    if rows == 0 {
        return (0, 0);
    }
    (t.len / rows, rows)
}

#[pymethods]
impl Reader {
    /// Opens `path` (the GIL is released while the index is read).
    #[new]
    fn new(py: Python<'_>, path: PathBuf) -> PyResult<Self> {
        let file = Call::new(None, false, None)
            .run(py, move |_| dmx::tensors::TensorFile::open(&path))?;
        Ok(Reader { file })
    }

    /// The tensor names, in file order.
    fn keys(&self) -> Vec<String> {
        self.file.tensors().iter().map(|t| t.name.clone()).collect()
    }

    /// `(name, dtype, shape, nbytes)` of every tensor, in file order.
    fn tensors(&self) -> Vec<(String, String, Vec<u64>, u64)> {
        self.file
            .tensors()
            .iter()
            .map(|t| (t.name.clone(), t.dtype.clone(), t.shape.clone(), t.len))
            .collect()
    }

    /// `(dtype, shape, nbytes)` of tensor `name`.
    fn info(&self, py: Python<'_>, name: &str) -> PyResult<(String, Vec<u64>, u64)> {
        let t = self.meta(name).map_err(|e| crate::errors::to_py(py, &e))?;
        Ok((t.dtype.clone(), t.shape.clone(), t.len))
    }

    /// The safetensors `__metadata__`, if any.
    fn metadata(&self) -> Option<BTreeMap<String, String>> {
        self.file.metadata().cloned()
    }

    /// True when the file is a `.dmx` archive (not a plain safetensors file).
    fn is_archive(&self) -> bool {
        self.file.is_archive()
    }

    /// Decodes the tensors `names` into `buffers` (writable, contiguous, each exactly the
    /// tensor's byte length), in parallel on `threads` workers, with the GIL released.
    #[pyo3(signature = (names, buffers, *, threads=None, progress=None))]
    fn read_into<'py>(
        &self,
        py: Python<'py>,
        names: Vec<String>,
        buffers: Vec<Bound<'py, PyAny>>,
        threads: Option<usize>,
        progress: Option<Bound<'py, PyAny>>,
    ) -> PyResult<()> {
        if names.len() != buffers.len() {
            let e = usage("read_into: as many buffers as names are needed");
            return Err(crate::errors::to_py(py, &e));
        }
        let mut held = buffers
            .iter()
            .zip(&names)
            .map(|(b, n)| Bytes::get(b, n, true))
            .collect::<PyResult<Vec<_>>>()?;
        let mut jobs: Vec<(&str, &mut [u8])> = names
            .iter()
            .map(String::as_str)
            .zip(held.iter_mut().map(Bytes::as_mut_slice))
            .collect();
        let total: u64 = jobs.iter().map(|(_, b)| b.len() as u64).sum();
        Call::new(threads, false, progress).run(py, move |opts| {
            let n = dmx::worker_threads(opts.threads, total)?;
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(n)
                .build()
                .map_err(|e| usage(format!("cannot start {n} worker threads: {e}")))?;
            if let Some(p) = &opts.progress {
                p.start("decompress", total);
            }
            pool.install(|| {
                jobs.par_iter_mut().try_for_each(|(name, out)| {
                    opts.check_cancel()?;
                    self.read_one(name, out)?;
                    if let Some(p) = &opts.progress {
                        p.advance(out.len() as u64);
                    }
                    Ok::<(), dmx::Error>(())
                })
            })?;
            if let Some(p) = &opts.progress {
                p.finish();
            }
            Ok(())
        })
    }

    /// Decodes rows `start..stop` along the first dimension of tensor `name` (elements for a
    /// scalar or 1-D tensor) into `buffer` (exactly their byte length).
    fn read_rows_into<'py>(
        &self,
        py: Python<'py>,
        name: String,
        start: u64,
        stop: u64,
        buffer: Bound<'py, PyAny>,
    ) -> PyResult<()> {
        let mut held = Bytes::get(&buffer, &name, true)?;
        let out = held.as_mut_slice();
        Call::new(None, false, None).run(py, move |_| {
            let t = self.meta(&name)?;
            let (row, rows) = rows_of(t);
            if start > stop || stop > rows {
                return Err(usage(format!(
                    "{name:?}: rows {start}..{stop} out of range (the tensor has {rows})"
                )));
            }
            let (a, b) = (start * row, stop * row);
            if out.len() as u64 != b - a {
                return Err(usage(format!(
                    "{name:?}: the buffer holds {} bytes, the rows {}",
                    out.len(),
                    b - a
                )));
            }
            if a == b {
                return Ok(());
            }
            let data = self.file.read(&name)?;
            out.copy_from_slice(&data[a as usize..b as usize]);
            Ok(())
        })
    }
}
