//! `extract`: write a new safetensors file holding only the named tensors (or every tensor
//! of one stored file), decoding only their chunks. Tensors of `torch.save` entries are
//! extracted by name path, views gathered contiguous.

use std::path::Path;

use dmx_format::EntryKind;
use serde_json::{Map, Value};

use crate::Options;
use crate::archive::{Archive, TensorRef};
use crate::error::{Error, Result};
use crate::io::AtomicFile;
use crate::tensors::torch_tensor_name;

/// Writes `names` (in the given order) from `archive` into a safetensors file at `output`,
/// keeping the `__metadata__` of the file the first tensor came from. Each tensor's BLAKE3 is
/// checked.
pub fn extract(archive: &Archive, names: &[String], output: &Path, opts: &Options) -> Result<()> {
    if names.is_empty() {
        return Err(Error::InvalidArgument(
            "name at least one tensor to extract".into(),
        ));
    }
    extract_from(archive, None, names, output, opts)
}

/// [`extract`] from the stored file `file` of a folder archive (`None`: any file, a name
/// that several files have is refused). With no `names`, every tensor of that file is
/// written, in archive order (`file` may then be left out when only one stored file has
/// tensors). A tensor of a `torch.save` file goes by its name path (`state.0.exp_avg`);
/// the lone tensor of `torch.save(tensor)`, whose name path is empty, by `tensor`. A dtype
/// that safetensors has no name for is refused, naming the tensor.
pub fn extract_from(
    archive: &Archive,
    file: Option<&str>,
    names: &[String],
    output: &Path,
    opts: &Options,
) -> Result<()> {
    crate::io::check_distinct(archive.path(), output)?;
    let picked = pick(archive, file, names)?;
    let pool = opts.pool()?;
    let metadata = match picked.first() {
        Some(t) => pool.install(|| source_metadata(archive, *t))?,
        None => None,
    };
    let mut header = Map::new();
    if let Some(m) = metadata {
        header.insert("__metadata__".into(), m);
    }
    let mut offset = 0u64;
    for t in &picked {
        let name = output_name(t);
        if header.contains_key(name) {
            return Err(Error::InvalidArgument(format!(
                "tensor {name:?} named twice"
            )));
        }
        check_dtype(archive, t)?;
        let mut info = Map::new();
        info.insert("dtype".into(), Value::from(t.info.dtype.clone()));
        info.insert("shape".into(), Value::from(t.info.shape.clone()));
        info.insert(
            "data_offsets".into(),
            Value::from(vec![offset, offset + t.len]),
        );
        header.insert(name.to_string(), Value::Object(info));
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
        let data = pool.install(|| archive.read_tensor_ref(*t))?;
        out.write_all(&data)?;
    }
    out.commit()
}

/// The tensors to extract: `names` looked up in `file` (or the archive), or every tensor of
/// the one stored file meant.
fn pick<'a>(
    archive: &'a Archive,
    file: Option<&'a str>,
    names: &[String],
) -> Result<Vec<TensorRef<'a>>> {
    if let Some(f) = file
        && !archive.index().entries.iter().any(|e| e.path == f)
    {
        return Err(Error::InvalidArgument(format!(
            "{}: no file {f:?} in the archive",
            archive.path().display()
        )));
    }
    if names.is_empty() {
        let file = match file {
            Some(f) => f,
            None => only_file(archive)?,
        };
        return Ok(archive.tensors_in(Some(file)).collect());
    }
    let mut picked: Vec<TensorRef<'_>> = Vec::with_capacity(names.len());
    for name in names {
        let t = find(archive, file, name).ok_or_else(|| Error::TensorNotFound {
            path: archive.path().to_path_buf(),
            name: name.clone(),
        })?;
        if file.is_none() {
            unique(archive, t)?;
        }
        picked.push(t);
    }
    Ok(picked)
}

/// The one stored file that has tensors, when the caller named none.
fn only_file(archive: &Archive) -> Result<&str> {
    let files: Vec<&str> = (archive.index().entries.iter())
        .filter(|e| e.kind.has_tensors())
        .map(|e| e.path.as_str())
        .collect();
    match files[..] {
        [one] => Ok(one),
        [] => Err(Error::InvalidArgument(format!(
            "{}: the archive holds no safetensors or torch.save file",
            archive.path().display()
        ))),
        _ => Err(Error::InvalidArgument(format!(
            "{}: the archive holds {} files with tensors; name one (or name tensors)",
            archive.path().display(),
            files.len()
        ))),
    }
}

/// The tensor `name` of `file` (any file when `None`): by stored name, or `tensor` for the
/// nameless tensor of a `torch.save` file.
fn find<'a>(archive: &'a Archive, file: Option<&str>, name: &str) -> Option<TensorRef<'a>> {
    archive.tensor_in(file, name).or_else(|| {
        (name == "tensor")
            .then(|| archive.tensor_in(file, ""))
            .flatten()
            .filter(|t| t.entry.kind.is_torch())
    })
}

/// The name `t` gets in the extracted file.
fn output_name<'a>(t: &TensorRef<'a>) -> &'a str {
    if t.entry.kind.is_torch() {
        torch_tensor_name(&t.info.name)
    } else {
        &t.info.name
    }
}

/// Refuses a dtype that safetensors cannot name.
fn check_dtype(archive: &Archive, t: &TensorRef<'_>) -> Result<()> {
    let known =
        serde_json::from_value::<safetensors::Dtype>(Value::from(t.info.dtype.clone())).is_ok();
    if known {
        return Ok(());
    }
    Err(Error::Unsupported(format!(
        "{}: tensor {:?} has dtype {:?}, which a safetensors file cannot hold",
        archive.path().display(),
        output_name(t),
        t.info.dtype
    )))
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
        "{}: {} tensors are named {:?} (in {}); extract cannot tell which one is meant \
         (name the file)",
        archive.path().display(),
        files.len(),
        t.info.name,
        files.join(", ")
    )))
}

/// The `__metadata__` object of the safetensors file holding `t`, if it has one (none for
/// a `torch.save` file).
fn source_metadata(archive: &Archive, t: TensorRef<'_>) -> Result<Option<Value>> {
    if t.entry.kind != EntryKind::Safetensors {
        return Ok(None);
    }
    let Some(header) = t.entry.segments.first() else {
        return Ok(None);
    };
    if !matches!(header.kind, dmx_format::SegmentKind::Bytes) || header.len < 8 {
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
