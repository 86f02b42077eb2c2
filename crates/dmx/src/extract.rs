//! `extract`: write a new safetensors file holding only the named tensors, decoding only
//! their chunks.

use std::path::Path;

use dmx_format::SegmentKind;
use serde_json::{Map, Value};

use crate::Options;
use crate::archive::{Archive, TensorRef};
use crate::error::{Error, Result};
use crate::io::AtomicFile;

/// Writes `names` (in the given order) from `archive` into a safetensors file at `output`,
/// keeping the `__metadata__` of the file the first tensor came from. Each tensor's BLAKE3 is
/// checked.
pub fn extract(archive: &Archive, names: &[String], output: &Path, opts: &Options) -> Result<()> {
    if names.is_empty() {
        return Err(Error::InvalidArgument(
            "name at least one tensor to extract".into(),
        ));
    }
    crate::io::check_distinct(archive.path(), output)?;
    let mut picked: Vec<TensorRef<'_>> = Vec::with_capacity(names.len());
    for name in names {
        if picked.iter().any(|t| &t.info.name == name) {
            return Err(Error::InvalidArgument(format!(
                "tensor {name:?} named twice"
            )));
        }
        let t = archive.tensor(name).ok_or_else(|| Error::TensorNotFound {
            path: archive.path().to_path_buf(),
            name: name.clone(),
        })?;
        unique(archive, t)?;
        picked.push(t);
    }
    let pool = opts.pool()?;
    let metadata = pool.install(|| source_metadata(archive, picked[0]))?;
    let mut header = Map::new();
    if let Some(m) = metadata {
        header.insert("__metadata__".into(), m);
    }
    let mut offset = 0u64;
    for t in &picked {
        let mut info = Map::new();
        info.insert("dtype".into(), Value::from(t.info.dtype.clone()));
        info.insert("shape".into(), Value::from(t.info.shape.clone()));
        info.insert(
            "data_offsets".into(),
            Value::from(vec![offset, offset + t.len]),
        );
        header.insert(t.info.name.clone(), Value::Object(info));
        offset += t.len;
    }
    let mut json = serde_json::to_vec(&Value::Object(header))
        .map_err(|e| Error::Internal(format!("cannot encode header: {e}")))?;
    while json.len() % 8 != 0 {
        json.push(b' ');
    }
    let mut out = AtomicFile::create(output, opts.force, !opts.no_sync)?;
    out.write_all(&(json.len() as u64).to_le_bytes())?;
    out.write_all(&json)?;
    for t in &picked {
        opts.check_cancel()?;
        let data = pool.install(|| archive.read_tensor(&t.info.name))?;
        out.write_all(&data)?;
    }
    out.commit()
}

/// Refuses a name that more than one tensor of the archive has, rather than extracting the
/// first silently: in two files of a folder archive (a usage error naming the files), or
/// twice in one file, which no safetensors header allows (a damaged index).
fn unique(archive: &Archive, t: TensorRef<'_>) -> Result<()> {
    let files: Vec<&str> = archive
        .tensors()
        .filter(|o| o.info.name == t.info.name)
        .map(|o| o.entry.path.as_str())
        .collect();
    if files.len() < 2 {
        return Ok(());
    }
    if files.iter().all(|f| *f == files[0]) {
        return Err(Error::Corrupt {
            path: archive.path().to_path_buf(),
            what: files[0].to_string(),
            detail: format!("{} tensors are named {:?}", files.len(), t.info.name),
        });
    }
    Err(Error::Unsupported(format!(
        "{}: {} tensors are named {:?} (in {}); extract cannot tell which one is meant",
        archive.path().display(),
        files.len(),
        t.info.name,
        files.join(", ")
    )))
}

/// The `__metadata__` object of the safetensors file holding `t`, if it has one.
fn source_metadata(archive: &Archive, t: TensorRef<'_>) -> Result<Option<Value>> {
    let Some(header) = t.entry.segments.first() else {
        return Ok(None);
    };
    if !matches!(header.kind, SegmentKind::Bytes) || header.len < 8 {
        return Ok(None);
    }
    let bytes = archive.read_segment(t.entry, header)?;
    let parsed: Value = serde_json::from_slice(&bytes[8..]).map_err(|e| Error::Corrupt {
        path: archive.path().to_path_buf(),
        what: format!("{}: safetensors header", t.entry.path),
        detail: e.to_string(),
    })?;
    Ok(parsed.get("__metadata__").cloned())
}
