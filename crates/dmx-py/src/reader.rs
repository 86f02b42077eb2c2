//! `Reader`: lazy access to the tensors of an archive (or of a plain safetensors file), the
//! engine side of `dmx.safe_open` and `load_file`. Tensors are decoded straight into buffers
//! the caller allocated (a fresh `torch.empty` / `numpy.empty`), with the GIL released.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use pyo3::prelude::*;
use rayon::prelude::*;

use crate::buffers::Bytes;
use crate::errors::usage;
use crate::run::Call;

/// `(name, dtype, shape, byte length)` of a tensor.
type Meta = (String, String, Vec<u64>, u64);

/// Where the tensors come from.
enum Source {
    /// A `.dmx` archive; `file` selects one safetensors file of a folder archive.
    Archive {
        archive: Box<dmx::Archive>,
        file: Option<String>,
    },
    /// A plain `.safetensors` file (memory-mapped).
    Plain(dmx::tensors::TensorFile),
}

/// The tensors of one model file: a safetensors file stored in a `.dmx` archive, or a plain
/// `.safetensors` file. Checksums are checked on every decode.
#[pyclass(frozen, module = "dmx._dmx")]
pub struct Reader {
    source: Source,
    /// Every tensor, in file order.
    tensors: Vec<Meta>,
    by_name: HashMap<String, usize>,
    path: PathBuf,
}

/// Checks the `file` selector against the archive's safetensors files.
fn check_file(archive: &dmx::Archive, file: Option<&str>) -> dmx::Result<()> {
    let entries = archive.safetensors_entries();
    let path = archive.path().display();
    match file {
        Some(f) if !entries.contains(&f) => Err(usage(format!(
            "{path}: no safetensors file {f:?} in the archive (it holds {entries:?})"
        ))),
        None if entries.len() > 1 => Err(usage(format!(
            "{path}: the archive holds {} safetensors files; choose one with file= (one of \
             {entries:?})",
            entries.len()
        ))),
        None if entries.is_empty() => Err(usage(format!(
            "{path}: the archive holds no safetensors file"
        ))),
        _ => Ok(()),
    }
}

impl Reader {
    /// Opens `path`; `file` names a safetensors file inside a folder archive.
    fn open(path: PathBuf, file: Option<String>) -> dmx::Result<Self> {
        let (source, tensors) = if dmx::is_archive_file(&path)? {
            let archive = dmx::Archive::open(&path)?;
            check_file(&archive, file.as_deref())?;
            let tensors: Vec<Meta> = archive
                .tensors_in(file.as_deref())
                .map(|t| {
                    let i = t.info;
                    (i.name.clone(), i.dtype.clone(), i.shape.clone(), t.len)
                })
                .collect();
            let archive = Box::new(archive);
            (Source::Archive { archive, file }, tensors)
        } else {
            if file.is_some() {
                return Err(usage(format!(
                    "{}: file= applies to archives of folders, not to a safetensors file",
                    path.display()
                )));
            }
            let tf = dmx::tensors::TensorFile::open(&path)?;
            let tensors = tf
                .tensors()
                .iter()
                .map(|t| (t.name.clone(), t.dtype.clone(), t.shape.clone(), t.len))
                .collect();
            (Source::Plain(tf), tensors)
        };
        let by_name = tensors
            .iter()
            .enumerate()
            .map(|(i, t): (usize, &Meta)| (t.0.clone(), i))
            .collect();
        Ok(Reader {
            source,
            tensors,
            by_name,
            path,
        })
    }

    /// A tensor's metadata, or a usage error naming the file.
    fn meta(&self, name: &str) -> dmx::Result<&Meta> {
        self.by_name
            .get(name)
            .map(|&i| &self.tensors[i])
            .ok_or_else(|| dmx::Error::TensorNotFound {
                path: self.path.clone(),
                name: name.to_string(),
            })
    }

    /// Decodes tensor `name` into `out` (exactly its byte length), checking `opts.cancel`
    /// and reporting the decoded bytes to `opts.progress`.
    fn read_one(&self, name: &str, out: &mut [u8], opts: &dmx::Options) -> dmx::Result<()> {
        let len = self.meta(name)?.3;
        if out.len() as u64 != len {
            return Err(usage(format!(
                "{name:?}: the buffer holds {} bytes, the tensor {len}",
                out.len()
            )));
        }
        match &self.source {
            Source::Archive { archive, file } => {
                archive.read_ref_into_with(archive.find_tensor(file.as_deref(), name)?, out, opts)
            }
            Source::Plain(tf) => {
                opts.check_cancel()?;
                out.copy_from_slice(&tf.read(name)?);
                if let Some(p) = &opts.progress {
                    p.advance(out.len() as u64);
                }
                Ok(())
            }
        }
    }

    /// Decodes rows `start..stop` (along the first dimension) of tensor `name` into `out`.
    fn read_rows(&self, name: &str, start: u64, stop: u64, out: &mut [u8]) -> dmx::Result<()> {
        match &self.source {
            Source::Archive { archive, file } => archive.read_ref_rows_into(
                archive.find_tensor(file.as_deref(), name)?,
                start..stop,
                out,
            ),
            Source::Plain(tf) => {
                let (_, _, shape, len) = self.meta(name)?;
                let rows = shape.first().copied().unwrap_or(1);
                let row = len.checked_div(rows).unwrap_or(0);
                if start > stop || stop > rows || out.len() as u64 != (stop - start) * row {
                    return Err(usage(format!(
                        "{}: tensor {name:?} has {rows} rows; rows {start}..{stop} are out of \
                         range or the buffer has the wrong size",
                        self.path.display()
                    )));
                }
                let data = tf.read(name)?;
                out.copy_from_slice(&data[(start * row) as usize..(stop * row) as usize]);
                Ok(())
            }
        }
    }
}

#[pymethods]
impl Reader {
    /// Opens `path` (the GIL is released while the index is read); `file` names one
    /// safetensors file of a folder archive.
    #[new]
    #[pyo3(signature = (path, file=None))]
    fn py_new(py: Python<'_>, path: PathBuf, file: Option<String>) -> PyResult<Self> {
        Call::new(None, false, None).run(py, move |_| Reader::open(path, file))
    }

    /// The tensor names, in file order.
    fn keys(&self) -> Vec<String> {
        self.tensors.iter().map(|t| t.0.clone()).collect()
    }

    /// `(name, dtype, shape, nbytes)` of every tensor, in file order.
    fn tensors(&self) -> Vec<Meta> {
        self.tensors.clone()
    }

    /// `(dtype, shape, nbytes)` of tensor `name`.
    fn info(&self, py: Python<'_>, name: &str) -> PyResult<(String, Vec<u64>, u64)> {
        let t = self.meta(name).map_err(|e| crate::errors::to_py(py, &e))?;
        Ok((t.1.clone(), t.2.clone(), t.3))
    }

    /// The safetensors `__metadata__`, if any (checked against its checksum).
    fn metadata(&self, py: Python<'_>) -> PyResult<Option<BTreeMap<String, String>>> {
        match &self.source {
            Source::Plain(tf) => Ok(tf.metadata().cloned()),
            Source::Archive { archive, file } => Call::new(None, false, None).run(py, move |_| {
                archive.safetensors_metadata_in(file.as_deref())
            }),
        }
    }

    /// The safetensors files of the archive (empty for a plain safetensors file).
    fn files(&self) -> Vec<String> {
        match &self.source {
            Source::Plain(_) => Vec::new(),
            Source::Archive { archive, .. } => archive
                .safetensors_entries()
                .into_iter()
                .map(str::to_string)
                .collect(),
        }
    }

    /// True when the file is a `.dmx` archive (not a plain safetensors file).
    fn is_archive(&self) -> bool {
        matches!(self.source, Source::Archive { .. })
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
                jobs.par_iter_mut()
                    .try_for_each(|(name, out)| self.read_one(name, out, opts))
            })?;
            if let Some(p) = &opts.progress {
                p.finish();
            }
            Ok(())
        })
    }

    /// Decodes rows `start..stop` along the first dimension of tensor `name` (elements for a
    /// 1-D tensor; a scalar has one row) into `buffer` (exactly their byte length); only the
    /// chunks holding those rows are decoded.
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
        Call::new(None, false, None).run(py, move |_| self.read_rows(&name, start, stop, out))
    }
}
