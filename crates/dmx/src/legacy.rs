//! Files of `dmx-compress`, the Python tool dmx replaces: recognising them where a dmx
//! archive was expected, restoring them to safetensors, and importing them as dmx archives,
//! deltas and chains (decoding lives in [`dmx_legacy`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use dmx_legacy::{BaseTensor, ChainManifest, Container, DeltaFile, LegacyKind, Limits, Tensor};

/// The reader crate itself, for callers that decode from memory (the fuzz target).
pub use dmx_legacy as reader;

use crate::lossy::LossyOptions;
use crate::{Error, Options, Result, TensorData};

/// What an old-tool file is and holds, for messages and metadata.
#[derive(Debug, Clone)]
pub struct LegacyFile {
    /// Its kind.
    pub kind: LegacyKind,
    /// "written by dmx-compress, format v3, mode bfp — lossy".
    pub summary: String,
    /// Whether the old tool's encoding changed values.
    pub lossy: bool,
}

fn legacy_err(path: &Path, e: dmx_legacy::Error) -> Error {
    match e {
        dmx_legacy::Error::NotLegacy => {
            Error::Unsupported(format!("{}: not a dmx-compress file", path.display()))
        }
        dmx_legacy::Error::Limit(m) => Error::Limit(format!("{}: {m}", path.display())),
        dmx_legacy::Error::Base(m) => Error::WrongBase(format!("{}: {m}", path.display())),
        e @ (dmx_legacy::Error::Unsupported(_) | dmx_legacy::Error::Version { .. }) => {
            Error::Unsupported(format!("{}: {e}", path.display()))
        }
        other => Error::Corrupt {
            path: path.to_path_buf(),
            what: "dmx-compress file".into(),
            detail: other.to_string(),
        },
    }
}

/// Turns "not a dmx archive" about `bytes` into [`Error::Legacy`] when they are a file of
/// the old tool; any other error passes through unchanged.
pub(crate) fn explain_not_archive(path: &Path, bytes: &[u8], e: dmx_format::FormatError) -> Error {
    let legacy = dmx_legacy::detect(bytes).filter(|_| e == dmx_format::FormatError::NotAnArchive);
    if let Some(kind) = legacy {
        let summary = describe_bytes(bytes, kind).map_or_else(
            |_| format!("written by dmx-compress, {}", kind.describe()),
            |f| f.summary,
        );
        return Error::Legacy {
            path: path.to_path_buf(),
            summary,
        };
    }
    Error::Format {
        path: path.to_path_buf(),
        source: e,
    }
}

fn describe_bytes(bytes: &[u8], kind: LegacyKind) -> dmx_legacy::Result<LegacyFile> {
    let l = Limits::default();
    let (summary, lossy) = match kind {
        LegacyKind::DmxV2 | LegacyKind::DmxV3 => {
            let c = Container::parse(bytes, &l)?;
            (c.summary(), c.is_lossy())
        }
        LegacyKind::DeltaLossy | LegacyKind::DeltaLossless => {
            let d = DeltaFile::parse(bytes, &l)?;
            (d.summary(), kind == LegacyKind::DeltaLossy)
        }
        LegacyKind::ChainManifest => {
            ChainManifest::parse(bytes, &l)?;
            ("written by dmx-compress, chain manifest".to_string(), true)
        }
    };
    Ok(LegacyFile {
        kind,
        summary,
        lossy,
    })
}

/// Whether `path` (a file, or a folder holding `chain_manifest.json`) was written by the
/// old tool, and what it is; `None` for anything else.
pub fn legacy_file(path: &Path) -> Result<Option<LegacyFile>> {
    let file = manifest_of(path);
    let mut head = Vec::with_capacity(4096);
    let opened = std::fs::File::open(&file)
        .and_then(|f| std::io::Read::read_to_end(&mut std::io::Read::take(f, 4096), &mut head));
    if opened.is_err() || dmx_legacy::detect(&head).is_none() {
        return Ok(None);
    }
    let bytes = read(&file)?;
    match dmx_legacy::detect(&bytes) {
        Some(kind) => describe_bytes(&bytes, kind)
            .map(Some)
            .map_err(|e| legacy_err(&file, e)),
        None => Ok(None),
    }
}

fn manifest_of(path: &Path) -> PathBuf {
    if path.is_dir() {
        path.join("chain_manifest.json")
    } else {
        path.to_path_buf()
    }
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::io(path, e))
}

/// Loads a safetensors base as the old tool's `load_file` does.
fn load_base(path: &Path) -> Result<Vec<Tensor>> {
    let bytes = read(path)?;
    if dmx_legacy::detect(&bytes).is_some_and(|k| !k.is_delta()) {
        return decode_plain(path, &bytes);
    }
    let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| {
        Error::Unsupported(format!("{}: not a safetensors file: {e}", path.display()))
    })?;
    let mut out = Vec::new();
    for (name, v) in st.tensors() {
        let dtype = st_dtype(v.dtype(), path)?;
        out.push(Tensor {
            name,
            dtype,
            shape: v.shape().iter().map(|&d| d as u64).collect(),
            data: v.data().to_vec(),
        });
    }
    Ok(out)
}

fn st_dtype(d: safetensors::Dtype, path: &Path) -> Result<&'static str> {
    use safetensors::Dtype as D;
    Ok(match d {
        D::F64 => "F64",
        D::F32 => "F32",
        D::F16 => "F16",
        D::BF16 => "BF16",
        D::I64 => "I64",
        D::I32 => "I32",
        D::I16 => "I16",
        D::I8 => "I8",
        D::U64 => "U64",
        D::U32 => "U32",
        D::U16 => "U16",
        D::U8 => "U8",
        D::BOOL => "BOOL",
        other => {
            return Err(Error::Unsupported(format!(
                "{}: dtype {other:?} in a base for an old delta",
                path.display()
            )));
        }
    })
}

fn decode_plain(path: &Path, bytes: &[u8]) -> Result<Vec<Tensor>> {
    Container::parse(bytes, &Limits::default())
        .and_then(|c| c.decode_all())
        .map_err(|e| legacy_err(path, e))
}

/// Decodes an old `.dmx` (no base) or `.dmxd` (with its `base`: a safetensors file or an old
/// `.dmx`) into tensors, with provenance metadata for the import.
pub fn decode_file(
    old: &Path,
    base: Option<&Path>,
) -> Result<(Vec<Tensor>, BTreeMap<String, String>, LegacyFile)> {
    let bytes = read(old)?;
    let kind = dmx_legacy::detect(&bytes)
        .ok_or_else(|| Error::Unsupported(format!("{}: not a dmx-compress file", old.display())))?;
    let info = describe_bytes(&bytes, kind).map_err(|e| legacy_err(old, e))?;
    let mut meta = BTreeMap::new();
    meta.insert("dmx_compress.kind".to_string(), kind.describe().to_string());
    meta.insert("dmx_compress.summary".to_string(), info.summary.clone());
    meta.insert("dmx_compress.lossy".to_string(), info.lossy.to_string());
    let tensors = match kind {
        LegacyKind::DmxV2 | LegacyKind::DmxV3 => {
            let c = Container::parse(&bytes, &Limits::default()).map_err(|e| legacy_err(old, e))?;
            meta.insert(
                "dmx_compress.manifest".into(),
                serde_json::Value::Object(c.manifest.clone()).to_string(),
            );
            if let Some(p) = &c.provenance {
                meta.insert(
                    "dmx_compress.provenance".into(),
                    serde_json::Value::Object(p.clone()).to_string(),
                );
            }
            c.decode_all().map_err(|e| legacy_err(old, e))?
        }
        LegacyKind::DeltaLossy | LegacyKind::DeltaLossless => {
            let base = base.ok_or_else(|| Error::BaseNeeded(old.to_path_buf()))?;
            let base_tensors = load_base(base)?;
            let d = DeltaFile::parse(&bytes, &Limits::default()).map_err(|e| legacy_err(old, e))?;
            let mut m = d.manifest.clone();
            m.remove("decomposition_diagnostics");
            meta.insert(
                "dmx_compress.manifest".into(),
                serde_json::Value::Object(m).to_string(),
            );
            let find = |n: &str| {
                base_tensors
                    .iter()
                    .find(|t| t.name == n)
                    .map(|t| BaseTensor {
                        dtype: t.dtype,
                        shape: &t.shape,
                        data: &t.data,
                    })
            };
            d.reconstruct(find).map_err(|e| legacy_err(old, e))?
        }
        LegacyKind::ChainManifest => {
            return Err(Error::Unsupported(format!(
                "{}: a chain manifest: import its folder",
                old.display()
            )));
        }
    };
    Ok((tensors, meta, info))
}

fn data_of(tensors: &[Tensor]) -> Vec<TensorData<'_>> {
    tensors
        .iter()
        .map(|t| TensorData {
            name: &t.name,
            dtype: t.dtype,
            shape: &t.shape,
            data: &t.data,
        })
        .collect()
}

/// Writes `tensors` as the safetensors file `output` (atomically), with `metadata`.
fn write_safetensors(
    tensors: &[Tensor],
    metadata: Option<&BTreeMap<String, String>>,
    output: &Path,
    opts: &Options,
) -> Result<()> {
    let data = data_of(tensors);
    let (header, order) = crate::safetensors_layout(&data, metadata)?;
    let mut f = crate::io::AtomicFile::create(output, opts.force, !opts.no_sync)?;
    f.write_all(&header)?;
    for i in order {
        f.write_all(data[i].data)?;
    }
    f.commit()
}

/// `dmx decompress OLD out.safetensors` (and `delta-reconstruct` with a base): restores an
/// old file to the safetensors file the old tool's own decoder writes (no metadata, as the
/// old tool drops it).
pub fn restore(
    old: &Path,
    base: Option<&Path>,
    output: &Path,
    opts: &Options,
) -> Result<LegacyFile> {
    crate::check_distinct(old, output)?;
    let (tensors, _, info) = decode_file(old, base)?;
    write_safetensors(&tensors, None, output, opts)?;
    Ok(info)
}

/// What [`import`] wrote.
#[derive(Debug, Clone)]
pub struct ImportReport {
    /// What the old file was.
    pub source: LegacyFile,
    /// Files written (one, or one per checkpoint of a chain before chaining).
    pub tensors: usize,
}

/// Converts an old `.dmx` to a dmx archive, an old `.dmxd` (with `base`) to a dmx delta
/// against that same base, or an old chain folder to a dmx chain folder. The values stored
/// are exactly the old file's decoded ones; the old manifest and provenance are kept in the
/// safetensors metadata (`dmx_compress.*`), with `dmx_compress.lossy` saying whether the old
/// tool had changed values.
pub fn import(old: &Path, new: &Path, base: Option<&Path>, opts: &Options) -> Result<ImportReport> {
    crate::check_distinct(old, new)?;
    if old.is_dir() || dmx_legacy::detect(&read(old)?) == Some(LegacyKind::ChainManifest) {
        return import_chain(old, new, opts);
    }
    let (tensors, meta, info) = decode_file(old, base)?;
    if info.kind.is_delta() {
        let tmp = tempfile::Builder::new()
            .prefix(crate::TEMP_PREFIX)
            .tempdir_in(parent(new))
            .map_err(|e| Error::io(new, e))?;
        let target = tmp.path().join("target.safetensors");
        write_safetensors(
            &tensors,
            Some(&meta),
            &target,
            &Options {
                force: true,
                ..opts.clone()
            },
        )?;
        let mut base = base
            .ok_or_else(|| Error::BaseNeeded(old.to_path_buf()))?
            .to_path_buf();
        if legacy_file(&base)?.is_some() {
            // An old .dmx base: the new delta is made against its restored file.
            let restored = tmp.path().join("base.safetensors");
            let (b, _, _) = decode_file(&base, None)?;
            write_safetensors(
                &b,
                None,
                &restored,
                &Options {
                    force: true,
                    ..opts.clone()
                },
            )?;
            base = restored;
        }
        crate::delta_compress(&base, &target, new, &crate::DeltaOptions::default(), opts)?;
    } else {
        crate::compress_tensors(
            &data_of(&tensors),
            Some(&meta),
            new,
            &LossyOptions::default(),
            opts,
        )?;
    }
    Ok(ImportReport {
        source: info,
        tensors: tensors.len(),
    })
}

fn parent(p: &Path) -> &Path {
    match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

fn import_chain(old: &Path, new: &Path, opts: &Options) -> Result<ImportReport> {
    let mpath = manifest_of(old);
    let folder = parent(&mpath).to_path_buf();
    let m = ChainManifest::parse(&read(&mpath)?, &Limits::default())
        .map_err(|e| legacy_err(&mpath, e))?;
    let tmp = tempfile::Builder::new()
        .prefix(crate::TEMP_PREFIX)
        .tempdir_in(parent(new))
        .map_err(|e| Error::io(new, e))?;
    let quiet = Options {
        force: true,
        progress: None,
        ..opts.clone()
    };
    let mut paths = Vec::new();
    let mut count = 0;
    for (i, e) in m.entries.iter().enumerate() {
        let anchor = m
            .entries
            .iter()
            .find(|a| a.index == e.anchor)
            .ok_or_else(|| Error::Internal("anchor".into()))?;
        let restored = |x: &dmx_legacy::ChainEntry| {
            tmp.path().join(format!(
                "{:06}.safetensors",
                m.entries.iter().position(|y| y == x).unwrap_or(0)
            ))
        };
        let out = restored(e);
        let (tensors, meta, _) = if e.is_delta {
            let base = restored(anchor);
            decode_file(&folder.join(&e.path), Some(&base))?
        } else {
            decode_file(&folder.join(&e.path), None)?
        };
        let mut meta = meta;
        meta.insert("dmx_compress.chain_source".into(), e.source.clone());
        write_safetensors(
            &tensors,
            if e.is_delta { Some(&meta) } else { None },
            &out,
            &quiet,
        )?;
        if !e.is_delta {
            // The anchor file doubles as the base of its deltas; keep a copy with metadata.
            let with_meta = tmp.path().join(format!("{i:06}.m.safetensors"));
            write_safetensors(&tensors, Some(&meta), &with_meta, &quiet)?;
            paths.push(with_meta);
        } else {
            paths.push(out);
        }
        count += 1;
    }
    crate::chain_compress(&paths, new, &crate::ChainOptions::default(), opts)?;
    let source = LegacyFile {
        kind: LegacyKind::ChainManifest,
        summary: format!("written by dmx-compress, chain of {count} checkpoints"),
        lossy: true,
    };
    Ok(ImportReport {
        source,
        tensors: count,
    })
}
