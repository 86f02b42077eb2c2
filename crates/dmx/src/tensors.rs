//! A uniform reader over the tensors of one model file, given as a `.safetensors` file, a
//! `torch.save` file (`.pt`, `.bin`, ...) or a `.dmx` archive holding exactly one of either.
//!
//! Safetensors inputs are memory-mapped and tensors are borrowed from the map; `torch.save`
//! files are mapped and scanned by the non-executing reader (nothing in them runs), their
//! tensors named by name path, views gathered contiguous; archive inputs decode a tensor's
//! chunks on demand, checking chunk checksums and the tensor's BLAKE3.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use dmx_format::{EntryKind, SegmentKind, TorchView};
use serde::Serialize;
use sha2::Digest;

use crate::archive::Archive;
use crate::error::{Error, Result};
use crate::io::Bytes;

/// Largest safetensors header accepted, in bytes (as when compressing): a hostile length
/// field cannot make the reader allocate more.
const MAX_HEADER: u64 = 100_000_000;

/// One model file's tensors, from a `.safetensors` file or a single-safetensors `.dmx`.
pub struct TensorFile {
    path: PathBuf,
    source: Source,
    tensors: Vec<TensorMeta>,
    by_name: HashMap<String, usize>,
    metadata: Option<BTreeMap<String, String>>,
    file_len: u64,
}

enum Source {
    /// A mapped safetensors file.
    Safetensors(Bytes),
    /// An archive: the safetensors entry's index, and for each tensor (in `tensors` order)
    /// its segment's index in that entry and its range within the segment (the whole segment
    /// unless the tensor is packed with others, format 1.2).
    Archive {
        archive: Box<Archive>,
        entry: usize,
        segments: Vec<(usize, std::ops::Range<u64>)>,
    },
    /// A mapped `torch.save` file: for each tensor (in `tensors` order) its storage's byte
    /// range in the file and, for a view that is not the whole storage, the view.
    Torch {
        bytes: Bytes,
        places: Vec<(std::ops::Range<u64>, Option<TorchView>)>,
    },
    /// An archive holding one `torch.save` file (entry `file`): tensors are read through
    /// [`Archive::tensor_in`] by their stored name (`names`, in `tensors` order).
    TorchArchive {
        archive: Box<Archive>,
        file: String,
        names: Vec<String>,
    },
}

/// The name a tensor of a `torch.save` file goes by in reports and extracted safetensors
/// files: its name path, or `tensor` for the lone tensor of `torch.save(tensor)`, whose name
/// path is empty.
pub fn torch_tensor_name(name: &str) -> &str {
    if name.is_empty() { "tensor" } else { name }
}

/// Name, dtype, shape and place of one tensor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TensorMeta {
    /// Tensor name.
    pub name: String,
    /// Safetensors dtype string (`"BF16"`, `"F32"`, `"I64"`, ...).
    pub dtype: String,
    /// Shape.
    pub shape: Vec<u64>,
    /// Absolute byte offset of the tensor's data in the (restored) safetensors file.
    pub offset: u64,
    /// Length of the tensor's data in bytes.
    pub len: u64,
}

impl TensorMeta {
    /// Number of elements (the product of the shape; 1 for a scalar).
    pub fn elements(&self) -> u64 {
        if self.shape.contains(&0) {
            return 0;
        }
        self.shape
            .iter()
            .try_fold(1u64, |a, &d| a.checked_mul(d))
            .unwrap_or(u64::MAX)
    }
}

/// A parsed safetensors header.
struct Parsed {
    tensors: Vec<TensorMeta>,
    metadata: Option<BTreeMap<String, String>>,
}

/// Parses the safetensors header at the start of `head` (the 8-byte length and the JSON; more
/// bytes may follow) of a file of `file_len` bytes. The error says why it is not valid.
fn parse_header(head: &[u8], file_len: u64) -> std::result::Result<Parsed, String> {
    let n = head
        .get(..8)
        .ok_or_else(|| "shorter than 8 bytes".to_string())?;
    let n = u64::from_le_bytes(n.try_into().expect("8 bytes"));
    if n > MAX_HEADER || n + 8 > file_len || n + 8 > head.len() as u64 {
        return Err(format!("header length {n} is out of range"));
    }
    let json = &head[8..8 + n as usize];
    let meta: safetensors::tensor::Metadata =
        serde_json::from_slice(json).map_err(|e| format!("header: {e}"))?;
    let data_start = 8 + n;
    if data_start + meta.data_len() as u64 != file_len {
        return Err("tensor data does not fill the file exactly".into());
    }
    let mut tensors: Vec<TensorMeta> = meta
        .tensors()
        .into_iter()
        .map(|(name, info)| TensorMeta {
            name,
            dtype: format!("{:?}", info.dtype),
            shape: info.shape.iter().map(|&d| d as u64).collect(),
            offset: data_start + info.data_offsets.0 as u64,
            len: (info.data_offsets.1 - info.data_offsets.0) as u64,
        })
        .collect();
    // Offset order, then name: zero-length tensors share offsets (as compression orders them).
    tensors.sort_by(|a, b| (a.offset, a.len, &a.name).cmp(&(b.offset, b.len, &b.name)));
    let metadata = meta
        .metadata()
        .as_ref()
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect());
    Ok(Parsed { tensors, metadata })
}

impl TensorFile {
    /// Opens `path`, recognised by content: a `.dmx` archive (which must hold exactly one
    /// safetensors file) or a safetensors file.
    pub fn open(path: &Path) -> Result<Self> {
        let bytes = Bytes::open_stable(path)?;
        if bytes.starts_with(&dmx_format::MAGIC) {
            drop(bytes);
            return Self::open_archive(path);
        }
        if crate::torch::looks_like_torch(&bytes) {
            return Self::open_torch(path, bytes);
        }
        let file_len = bytes.len() as u64;
        let parsed = parse_header(&bytes, file_len).map_err(|why| {
            Error::Unsupported(format!(
                "{}: neither a .dmx archive nor a valid safetensors file ({why})",
                path.display()
            ))
        })?;
        Ok(Self::new(
            path,
            Source::Safetensors(bytes),
            parsed,
            file_len,
        ))
    }

    fn open_archive(path: &Path) -> Result<Self> {
        let archive = Archive::open(path)?;
        let candidates: Vec<usize> = (archive.index().entries.iter().enumerate())
            .filter(|(_, e)| e.kind.has_tensors())
            .map(|(i, _)| i)
            .collect();
        let [entry_i] = candidates[..] else {
            return Err(Error::Unsupported(format!(
                "{}: the archive holds {} safetensors files (or torch.save files); expected exactly one",
                path.display(),
                candidates.len()
            )));
        };
        let entry = &archive.index().entries[entry_i];
        if entry.kind == EntryKind::Torch {
            return Ok(Self::torch_archive(path, archive, entry_i));
        }
        if entry.kind != EntryKind::Safetensors {
            return Err(Error::Unsupported(format!(
                "{}: {} is stored as a delta against a base file; restore it with \
                 `dmx delta-reconstruct BASE DELTA OUTPUT` first (`dmx decompress` refuses \
                 deltas)",
                path.display(),
                entry.path
            )));
        }
        let mismatch = |detail: String| Error::Corrupt {
            path: path.to_path_buf(),
            what: entry.path.clone(),
            detail: format!("{detail} (the archive is damaged; re-create or re-download it)"),
        };
        let header_seg = entry
            .segments
            .first()
            .filter(|s| s.kind == SegmentKind::Bytes && s.offset == 0)
            .ok_or_else(|| mismatch("no header segment".into()))?;
        if header_seg.len > MAX_HEADER + 8 {
            return Err(mismatch(format!(
                "header segment of {} bytes is too large",
                header_seg.len
            )));
        }
        let head = archive.read_segment(entry, header_seg)?;
        if blake3::hash(&head).as_bytes() != &header_seg.blake3 {
            return Err(mismatch(
                "BLAKE3 of the decoded header does not match".into(),
            ));
        }
        let parsed = parse_header(&head, entry.size)
            .map_err(|why| mismatch(format!("invalid safetensors header ({why})")))?;
        if parsed
            .tensors
            .first()
            .is_some_and(|t| t.offset != head.len() as u64)
        {
            return Err(mismatch(
                "header segment does not end where tensor data starts".into(),
            ));
        }
        type Place<'a> = (usize, u64, u64, &'a dmx_format::TensorInfo);
        let by_place: HashMap<(&str, u64), Place<'_>> = entry
            .segments
            .iter()
            .enumerate()
            .flat_map(|(i, s)| {
                s.kind
                    .tensors(s.len)
                    .into_iter()
                    .map(move |(t, at, len)| ((t.name.as_str(), s.offset + at), (i, at, len, t)))
            })
            .collect();
        let mut segments = Vec::with_capacity(parsed.tensors.len());
        for t in &parsed.tensors {
            let &(i, at, _, _) = by_place
                .get(&(t.name.as_str(), t.offset))
                .filter(|(_, _, len, info)| {
                    *len == t.len && info.dtype == t.dtype && info.shape == t.shape
                })
                .ok_or_else(|| {
                    mismatch(format!(
                        "tensor {:?} of the header has no matching segment",
                        t.name
                    ))
                })?;
            segments.push((i, at..at + t.len));
        }
        let file_len = entry.size;
        Ok(Self::new(
            path,
            Source::Archive {
                archive: Box::new(archive),
                entry: entry_i,
                segments,
            },
            parsed,
            file_len,
        ))
    }

    /// A mapped `torch.save` file, scanned without executing anything.
    fn open_torch(path: &Path, bytes: Bytes) -> Result<Self> {
        let file_len = bytes.len() as u64;
        let plan = crate::torch::plan_torch(&bytes).map_err(|why| {
            Error::Unsupported(format!(
                "{}: not a torch.save file dmx can read ({why})",
                path.display()
            ))
        })?;
        let mut tensors = Vec::new();
        let mut places = Vec::new();
        for (s, seg) in plan.segments.iter().enumerate() {
            let SegmentKind::Tensor(info) = &seg.kind else {
                continue;
            };
            let range = seg.offset..seg.offset + seg.len;
            let views: Vec<&TorchView> = plan
                .views
                .iter()
                .filter(|v| v.segment == s as u64)
                .collect();
            if views.is_empty() {
                tensors.push(TensorMeta {
                    name: torch_tensor_name(&info.name).to_string(),
                    dtype: info.dtype.clone(),
                    shape: info.shape.clone(),
                    offset: seg.offset,
                    len: seg.len,
                });
                places.push((range, None));
                continue;
            }
            for v in views {
                let width = crate::archive::view_width(v).unwrap_or(1);
                let n = v.shape.iter().try_fold(1u64, |a, &d| a.checked_mul(d));
                tensors.push(TensorMeta {
                    name: torch_tensor_name(&v.name).to_string(),
                    dtype: v.dtype.clone(),
                    shape: v.shape.clone(),
                    offset: seg.offset.saturating_add(v.offset.saturating_mul(width)),
                    len: n.unwrap_or(0).saturating_mul(width),
                });
                places.push((range.clone(), Some(v.clone())));
            }
        }
        let parsed = Parsed {
            tensors,
            metadata: None,
        };
        Ok(Self::new(
            path,
            Source::Torch { bytes, places },
            parsed,
            file_len,
        ))
    }

    /// The torch entry `entry_i` of `archive`, its tensors (views included) by name path.
    fn torch_archive(path: &Path, archive: Archive, entry_i: usize) -> Self {
        let entry = &archive.index().entries[entry_i];
        let file = entry.path.clone();
        let file_len = entry.size;
        let (tensors, names) = archive
            .tensors_in(Some(&file))
            .map(|t| {
                let meta = TensorMeta {
                    name: torch_tensor_name(&t.info.name).to_string(),
                    dtype: t.info.dtype.clone(),
                    shape: t.info.shape.clone(),
                    offset: t.segment.offset.saturating_add(t.offset),
                    len: t.len,
                };
                (meta, t.info.name.clone())
            })
            .unzip();
        let parsed = Parsed {
            tensors,
            metadata: None,
        };
        let source = Source::TorchArchive {
            archive: Box::new(archive),
            file,
            names,
        };
        Self::new(path, source, parsed, file_len)
    }

    fn new(path: &Path, source: Source, parsed: Parsed, file_len: u64) -> Self {
        let by_name = parsed
            .tensors
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.clone(), i))
            .collect();
        Self {
            path: path.to_path_buf(),
            source,
            tensors: parsed.tensors,
            by_name,
            metadata: parsed.metadata,
            file_len,
        }
    }

    /// The path it was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// True when it reads a `.dmx` archive.
    pub fn is_archive(&self) -> bool {
        matches!(
            self.source,
            Source::Archive { .. } | Source::TorchArchive { .. }
        )
    }

    /// True when the model file is a `torch.save` file (read as such or from an archive).
    pub fn is_torch(&self) -> bool {
        matches!(
            self.source,
            Source::Torch { .. } | Source::TorchArchive { .. }
        )
    }

    /// Every tensor, in file (offset) order.
    pub fn tensors(&self) -> &[TensorMeta] {
        &self.tensors
    }

    /// A tensor by name.
    pub fn get(&self, name: &str) -> Option<&TensorMeta> {
        self.by_name.get(name).map(|&i| &self.tensors[i])
    }

    /// A tensor's bytes: borrowed from the map for a safetensors file; decoded for an archive,
    /// with chunk checksums and the tensor's BLAKE3 checked.
    pub fn read(&self, name: &str) -> Result<Cow<'_, [u8]>> {
        let i = *self
            .by_name
            .get(name)
            .ok_or_else(|| Error::TensorNotFound {
                path: self.path.clone(),
                name: name.to_string(),
            })?;
        let t = &self.tensors[i];
        match &self.source {
            Source::Safetensors(bytes) => Ok(Cow::Borrowed(
                &bytes[t.offset as usize..(t.offset + t.len) as usize],
            )),
            Source::Archive {
                archive,
                entry,
                segments,
            } => {
                let entry = &archive.index().entries[*entry];
                let (s, range) = &segments[i];
                let seg = &entry.segments[*s];
                let data = archive.read_segment(entry, seg)?;
                if blake3::hash(&data).as_bytes() != &seg.blake3 {
                    return Err(Error::Mismatch {
                        path: self.path.clone(),
                        detail: format!("tensor {name:?}: BLAKE3 of decoded bytes does not match"),
                    });
                }
                if range.start == 0 && range.end == seg.len {
                    return Ok(Cow::Owned(data));
                }
                Ok(Cow::Owned(
                    data[range.start as usize..range.end as usize].to_vec(),
                ))
            }
            Source::Torch { bytes, places } => {
                let (range, view) = &places[i];
                let storage = &bytes[range.start as usize..range.end as usize];
                let Some(v) = view else {
                    return Ok(Cow::Borrowed(storage));
                };
                crate::archive::gather_view(storage, v)
                    .map(Cow::Owned)
                    .ok_or_else(|| {
                        Error::Unsupported(format!(
                            "{}: tensor {name:?} lies outside its storage",
                            self.path.display()
                        ))
                    })
            }
            Source::TorchArchive {
                archive,
                file,
                names,
            } => {
                let t = archive.find_tensor(Some(file), &names[i])?;
                Ok(Cow::Owned(archive.read_tensor_ref(t)?))
            }
        }
    }

    /// Lets the kernel drop the mapped pages behind tensor `name`, once read: keeps the
    /// resident set bounded when walking a large file. A no-op for unknown names.
    pub(crate) fn release(&self, name: &str) {
        let Some(&i) = self.by_name.get(name) else {
            return;
        };
        let t = &self.tensors[i];
        match &self.source {
            Source::Safetensors(bytes) => {
                bytes.release(t.offset as usize, (t.offset + t.len) as usize);
            }
            Source::Archive {
                archive,
                entry,
                segments,
            } => {
                let entry = &archive.index().entries[*entry];
                archive.release(&entry.segments[segments[i].0].chunks);
            }
            Source::Torch { bytes, places } => {
                let r = &places[i].0;
                bytes.release(r.start as usize, r.end as usize);
            }
            Source::TorchArchive {
                archive,
                file,
                names,
            } => {
                if let Some(t) = archive.tensor_in(Some(file), &names[i]) {
                    archive.release(&t.segment.chunks);
                }
            }
        }
    }

    /// The header bytes verbatim: the 8-byte little-endian length and the JSON (an error for
    /// a `torch.save` file, which has none).
    pub fn header(&self) -> Result<Vec<u8>> {
        match &self.source {
            Source::Torch { .. } | Source::TorchArchive { .. } => Err(Error::Unsupported(format!(
                "{}: a torch.save file has no safetensors header",
                self.path.display()
            ))),
            Source::Safetensors(bytes) => {
                let n = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"));
                Ok(bytes[..8 + n as usize].to_vec())
            }
            Source::Archive { archive, entry, .. } => {
                let entry = &archive.index().entries[*entry];
                let seg = &entry.segments[0];
                let data = archive.read_segment(entry, seg)?;
                if blake3::hash(&data).as_bytes() != &seg.blake3 {
                    return Err(Error::Mismatch {
                        path: self.path.clone(),
                        detail: "header: BLAKE3 of decoded bytes does not match".into(),
                    });
                }
                Ok(data)
            }
        }
    }

    /// The header's `__metadata__` (string to string), if it has one.
    pub fn metadata(&self) -> Option<&BTreeMap<String, String>> {
        self.metadata.as_ref()
    }

    /// Size in bytes of the safetensors file (the restored one for an archive).
    pub fn file_len(&self) -> u64 {
        self.file_len
    }

    /// SHA-256 of the safetensors file whose tensors this reads: computed over the file, or
    /// for an archive the digest its index records for the file it restores.
    pub fn sha256(&self) -> Result<[u8; 32]> {
        match &self.source {
            Source::Safetensors(bytes) | Source::Torch { bytes, .. } => {
                let mut sha = sha2::Sha256::new();
                let step = 16 << 20;
                for start in (0..bytes.len()).step_by(step) {
                    let end = (start + step).min(bytes.len());
                    sha.update(&bytes[start..end]);
                    bytes.release(start, end);
                }
                Ok(sha.finalize().into())
            }
            Source::Archive { archive, entry, .. } => Ok(archive.index().entries[*entry].sha256),
            Source::TorchArchive { archive, file, .. } => Ok(archive
                .index()
                .entries
                .iter()
                .find(|e| &e.path == file)
                .map_or([0; 32], |e| e.sha256)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(header: &str, data: &[u8]) -> Vec<u8> {
        let mut f = (header.len() as u64).to_le_bytes().to_vec();
        f.extend_from_slice(header.as_bytes());
        f.extend_from_slice(data);
        f
    }

    #[test]
    fn parses_in_offset_order() {
        let f = file(
            r#"{"__metadata__":{"k":"v"},"b":{"dtype":"F32","shape":[1],"data_offsets":[2,6]},"a":{"dtype":"BF16","shape":[],"data_offsets":[0,2]},"z":{"dtype":"I8","shape":[0],"data_offsets":[6,6]}}"#,
            &[1, 2, 3, 4, 5, 6],
        );
        let p = parse_header(&f, f.len() as u64).unwrap();
        let names: Vec<_> = p.tensors.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["a", "b", "z"]);
        let hl = f.len() as u64 - 6;
        assert_eq!(p.tensors[0].offset, hl);
        assert_eq!(p.tensors[1].offset, hl + 2);
        assert_eq!(p.tensors[1].len, 4);
        assert_eq!(p.tensors[1].shape, [1]);
        assert_eq!(p.tensors[0].elements(), 1);
        assert_eq!(p.tensors[2].elements(), 0);
        assert_eq!(p.metadata.unwrap()["k"], "v");
    }

    #[test]
    fn rejects_invalid_headers() {
        assert!(parse_header(b"1234", 4).is_err());
        let mut huge = u64::MAX.to_le_bytes().to_vec();
        huge.extend_from_slice(b"{}");
        assert!(parse_header(&huge, 10).is_err());
        let f = file(
            r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#,
            &[0; 4],
        );
        assert!(parse_header(&f, f.len() as u64).is_err());
        let f = file(
            r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}}"#,
            &[0; 4],
        );
        assert!(parse_header(&f, f.len() as u64).is_err());
        let f = file("not json", &[]);
        assert!(parse_header(&f, f.len() as u64).is_err());
    }
}
