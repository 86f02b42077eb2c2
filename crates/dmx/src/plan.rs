//! Input discovery: which files an input holds, and how each file is cut into segments
//! (safetensors header, tensors, opaque bytes) with the value kind that picks their codec.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use dmx_codec::{FloatLayout, ValueKind};
use dmx_format::{EntryKind, Root, SegmentKind, TensorInfo, TorchView};

use crate::error::{Error, Result};

/// Raw bytes per chunk (docs/FORMAT.md §5): large enough for a good Huffman table, small
/// enough for parallelism and random access.
pub const CHUNK_SIZE: u64 = 1 << 20;

/// zstd level for non-float data in segments up to `SMALL_SEGMENT` bytes (configs, tokenizers,
/// integer buffers).
const ZSTD_LEVEL_SMALL: i32 = 19;
/// zstd level for larger non-float segments, where level 19 would be too slow.
const ZSTD_LEVEL_LARGE: i32 = 9;
const SMALL_SEGMENT: u64 = 16 << 20;
/// zstd level of the non-tensor bytes of a tensor file: a safetensors header, a `torch.save`
/// zip's pickle, local headers and central directory. Level 19 runs at 1–2 MB/s on such
/// inputs and needs a fresh context for each (16 ms for a 16 KB checkpoint header, a tenth of
/// compressing the 23 MB file; hundreds of zip headers between a checkpoint's storages) to
/// save 50–500 bytes per file over level 9, which takes well under a millisecond.
const ZSTD_LEVEL_METADATA: i32 = 9;

/// Directories never descended into when compressing a folder.
const SKIPPED_DIRS: &[&str] = &[".git"];

/// One file to store.
#[derive(Debug)]
pub struct PlannedFile {
    /// Path relative to the input root (`/`-separated).
    pub rel: String,
    /// Where to read it.
    pub path: PathBuf,
    /// Safetensors or opaque.
    pub kind: EntryKind,
    /// File size.
    pub size: u64,
    /// Segments tiling the file.
    pub segments: Vec<PlannedSegment>,
    /// Why a `.safetensors` file is stored as opaque bytes, if it is; what the scan of a
    /// `torch.save` file did not understand.
    pub warning: Option<String>,
    /// The view table of a `torch.save` file ([`EntryKind::Torch`]); empty otherwise.
    pub views: Vec<TorchView>,
}

impl PlannedFile {
    /// What the codecs are told about `seg`, one of this file's segments:
    /// [`PlannedSegment::hints`], with the bytes around the tensors of a safetensors or
    /// `torch.save` file at [`ZSTD_LEVEL_METADATA`] (whole other files keep their level).
    pub fn hints(&self, seg: &PlannedSegment) -> dmx_codec::Hints {
        let mut hints = seg.hints();
        if self.kind.has_tensors() && matches!(seg.kind, SegmentKind::Bytes) {
            hints.zstd_level = ZSTD_LEVEL_METADATA;
        }
        hints
    }
}

/// One segment of a planned file.
#[derive(Debug)]
pub struct PlannedSegment {
    /// Header bytes or tensor.
    pub kind: SegmentKind,
    /// Offset in the file.
    pub offset: u64,
    /// Length.
    pub len: u64,
    /// What its values are.
    pub value: ValueKind,
}

impl PlannedSegment {
    /// Chunk size in bytes and row length in values (0 when the segment is not a float
    /// matrix): chunks of float matrices hold whole rows, where a row is one slice along the
    /// first dimension (an output channel), so the row transform of codec 3 can apply.
    pub fn chunking(&self) -> (u64, usize) {
        let (SegmentKind::Tensor(t), ValueKind::Float(layout)) = (&self.kind, self.value) else {
            return (CHUNK_SIZE, 0);
        };
        if t.shape.len() < 2 || !dmx_codec::rows::supports(layout) {
            return (CHUNK_SIZE, 0);
        }
        // Hostile headers can declare dimensions whose product overflows (with a zero
        // elsewhere); such a segment is simply not row-chunked.
        let Some(row) = t.shape[1..].iter().try_fold(1u64, |a, &d| a.checked_mul(d)) else {
            return (CHUNK_SIZE, 0);
        };
        let row_bytes = row.saturating_mul(layout.bytes() as u64);
        if row == 0 || row_bytes > CHUNK_SIZE / 2 {
            return (CHUNK_SIZE, 0);
        }
        ((CHUNK_SIZE / row_bytes) * row_bytes, row as usize)
    }

    /// What the codecs are told about this segment's chunks.
    pub fn hints(&self) -> dmx_codec::Hints {
        let row_len = self.chunking().1;
        dmx_codec::Hints {
            zstd_level: if self.len <= SMALL_SEGMENT {
                ZSTD_LEVEL_SMALL
            } else {
                ZSTD_LEVEL_LARGE
            },
            row_len,
            period: self.kernel_len(row_len),
        }
    }

    /// Values per kernel of a convolution weight (the product of the dimensions after the
    /// first two, when above 1 and the chunks hold whole rows of `row_len` values, which it
    /// then divides), else 0.
    fn kernel_len(&self, row_len: usize) -> usize {
        let SegmentKind::Tensor(t) = &self.kind else {
            return 0;
        };
        if row_len == 0 || t.shape.len() < 3 {
            return 0;
        }
        let kernel = t.shape[2..]
            .iter()
            .try_fold(1u64, |a, &d| a.checked_mul(d))
            .and_then(|k| usize::try_from(k).ok())
            .unwrap_or(0);
        if kernel > 1 && row_len.is_multiple_of(kernel) {
            kernel
        } else {
            0
        }
    }

    /// Byte ranges of the segment's chunks, in order.
    pub fn chunks(&self) -> impl Iterator<Item = std::ops::Range<u64>> + '_ {
        let (size, _) = self.chunking();
        let end = self.offset + self.len;
        (self.offset..end)
            .step_by(size as usize)
            .map(move |s| s..(s + size).min(end))
    }
}

/// Lists the files of `input` (a file or a folder) and plans their segments.
pub fn plan_input(input: &Path) -> Result<(Root, Vec<PlannedFile>)> {
    // Regular files and folders only: a FIFO named *.safetensors must not block its read.
    let meta = crate::io::check_input(input)?;
    if meta.is_dir() {
        let mut files = Vec::new();
        walk(input, input, &mut files)?;
        files.sort();
        let planned = files
            .into_iter()
            .map(|(rel, path)| {
                check_name(&rel, &path)?;
                plan_file(rel, path)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok((Root::Directory, planned))
    } else {
        let name = input
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| {
                Error::Unsupported(format!("{}: file name is not UTF-8", input.display()))
            })?
            .to_string();
        check_name(&name, input)?;
        Ok((Root::File, vec![plan_file(name, input.to_path_buf())?]))
    }
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, PathBuf)>) -> Result<()> {
    let rd = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    for item in rd {
        let item = item.map_err(|e| Error::io(dir, e))?;
        let path = item.path();
        // Temporaries of dmx runs (this one's or others') are never part of an input.
        if crate::io::is_temp_name(&item.file_name()) {
            continue;
        }
        // Follow symlinks (Hugging Face cache snapshots link to blobs).
        let meta = std::fs::metadata(&path).map_err(|e| Error::io(&path, e))?;
        let name = item.file_name();
        if meta.is_dir() {
            if SKIPPED_DIRS.iter().any(|s| name == *s) {
                continue;
            }
            walk(root, &path, out)?;
        } else if meta.is_file() {
            let rel = path
                .strip_prefix(root)
                .ok()
                .and_then(|r| {
                    r.components()
                        .map(|c| c.as_os_str().to_str())
                        .collect::<Option<Vec<_>>>()
                })
                .map(|parts| parts.join("/"))
                .ok_or_else(|| {
                    Error::Unsupported(format!("{}: path is not UTF-8; rename it", path.display()))
                })?;
            out.push((rel, path));
        }
    }
    Ok(())
}

fn plan_file(rel: String, path: PathBuf) -> Result<PlannedFile> {
    let size = std::fs::metadata(&path)
        .map_err(|e| Error::io(&path, e))?
        .len();
    let parsed = if rel.ends_with(".safetensors") {
        Some(safetensors_segments(&path, size)?)
    } else {
        if let Some(torch) = torch_file(&rel, &path, size)? {
            return Ok(torch);
        }
        None
    };
    Ok(planned(rel, path, size, parsed))
}

/// Plans `path` as a `torch.save` file when its first bytes say it may be one
/// (docs/PT.md); `None` when it is not one. A file with a torch name (`.pt`, `.bin`, ...)
/// that does not scan is stored as opaque bytes with a warning saying why.
fn torch_file(rel: &str, path: &Path, size: u64) -> Result<Option<PlannedFile>> {
    let mut head = [0u8; 4];
    let n = File::open(path)
        .and_then(|mut f| f.read(&mut head))
        .map_err(|e| Error::io(path, e))?;
    if !crate::torch::looks_like_torch(&head[..n]) {
        return Ok(None);
    }
    let bytes = crate::io::Bytes::open_stable(path)?;
    if bytes.len() as u64 != size {
        return Err(Error::changed(path, "file changed size while being read"));
    }
    let plan = crate::torch::plan_torch(&bytes).and_then(|p| match torch_beyond_limits(&p) {
        Some(why) => Err(format!("{why} (docs/FORMAT.md §6)")),
        None => Ok(p),
    });
    let plan = match plan {
        Ok(p) => p,
        Err(why) if crate::torch::has_torch_suffix(rel) => {
            let mut f = planned(rel.to_string(), path.to_path_buf(), size, None);
            f.warning = Some(format!(
                "{}: not read as a torch.save file ({why}); stored as opaque bytes, losslessly",
                path.display()
            ));
            return Ok(Some(f));
        }
        Err(_) => return Ok(None),
    };
    let warning = (!plan.warnings.is_empty()).then(|| {
        format!(
            "{}: {}; stored byte for byte, nothing executed",
            path.display(),
            plan.warnings.join("; ")
        )
    });
    Ok(Some(PlannedFile {
        rel: rel.to_string(),
        path: path.to_path_buf(),
        kind: EntryKind::Torch,
        size,
        segments: plan.segments,
        warning,
        views: plan.views,
    }))
}

/// Why a scanned `torch.save` file cannot be stored as tensor segments within the reader
/// limits, if it cannot: its segment and view counts and every tensor's name and rank.
fn torch_beyond_limits(p: &crate::torch::TorchPlan) -> Option<String> {
    let count = p.segments.len().max(p.views.len());
    let tensors = p
        .segments
        .iter()
        .filter_map(|s| match &s.kind {
            SegmentKind::Tensor(t) => Some((t.name.as_str(), t.shape.len())),
            _ => None,
        })
        .chain(p.views.iter().map(|v| (v.name.as_str(), v.shape.len())));
    beyond_limits(count, "segments or views", tensors)
}

/// The planned file `rel` (read from `path`, `size` bytes): tensor segments when `parsed`
/// holds them, else one opaque segment, with a warning saying why when `parsed` is an error.
pub(crate) fn planned(
    rel: String,
    path: PathBuf,
    size: u64,
    parsed: Option<std::result::Result<Vec<PlannedSegment>, String>>,
) -> PlannedFile {
    let (kind, segments, warning) = match parsed {
        None => (EntryKind::Blob, bytes_segment(0, size), None),
        Some(Ok(segments)) => (EntryKind::Safetensors, segments, None),
        Some(Err(why)) => {
            let warning = match why.strip_prefix(LIMITED) {
                Some(limit) => format!(
                    "{}: a valid safetensors file, but {limit}; stored as opaque bytes, \
                     losslessly",
                    path.display()
                ),
                None => format!(
                    "{}: not a valid safetensors file ({why}); stored as opaque bytes, \
                     losslessly",
                    path.display()
                ),
            };
            (EntryKind::Blob, bytes_segment(0, size), Some(warning))
        }
    };
    PlannedFile {
        rel,
        path,
        kind,
        size,
        segments,
        warning,
        views: Vec::new(),
    }
}

/// Refuses, naming the file, a name that the format cannot store (§5.5 rule 6): a writer-side
/// refusal, never reported as a corrupt archive.
pub(crate) fn check_name(rel: &str, path: &Path) -> Result<()> {
    dmx_format::check_entry_path(rel).map_err(|why| {
        Error::Unsupported(format!(
            "{}: cannot be stored under the name {rel:?}: {why}",
            path.display()
        ))
    })
}

/// Why a file of `count` records (`what`: "tensors", ...) whose tensors have these names
/// and ranks cannot be stored as tensor segments within the reader limits (docs/FORMAT.md
/// §6), if it cannot: such a file is stored as a blob instead.
fn beyond_limits<'a>(
    count: usize,
    what: &str,
    tensors: impl IntoIterator<Item = (&'a str, usize)>,
) -> Option<String> {
    let limits = dmx_format::Limits::default();
    if count as u64 >= limits.max_segments {
        return Some(format!(
            "{count} {what}, above the limit of {}",
            limits.max_segments - 1
        ));
    }
    for (name, rank) in tensors {
        if rank as u64 > u64::from(limits.max_rank) {
            return Some(format!(
                "tensor {name:?} has rank {rank}, above the limit of {}",
                limits.max_rank
            ));
        }
        if name.len() as u64 > u64::from(limits.max_string) {
            return Some(format!(
                "a tensor name of {} bytes, above the limit of {}",
                name.len(),
                limits.max_string
            ));
        }
    }
    None
}

/// Marks a reason that is a reader limit, not invalid safetensors.
const LIMITED: &str = "limit: ";

fn bytes_segment(offset: u64, len: u64) -> Vec<PlannedSegment> {
    vec![bytes_piece(offset, len)]
}

/// A bytes segment of `len` bytes at `offset`.
pub(crate) fn bytes_piece(offset: u64, len: u64) -> PlannedSegment {
    PlannedSegment {
        kind: SegmentKind::Bytes,
        offset,
        len,
        value: ValueKind::Bytes,
    }
}

/// Parses a safetensors header; the inner error says why the file is not valid safetensors.
fn safetensors_segments(
    path: &Path,
    size: u64,
) -> Result<std::result::Result<Vec<PlannedSegment>, String>> {
    let mut f = File::open(path).map_err(|e| Error::io(path, e))?;
    if size < 8 {
        return Ok(Err("shorter than 8 bytes".into()));
    }
    let mut n = [0u8; 8];
    f.read_exact(&mut n).map_err(|e| Error::io(path, e))?;
    let n = u64::from_le_bytes(n);
    if n > 100_000_000 || n + 8 > size {
        return Ok(Err(format!("header length {n} is out of range")));
    }
    let mut header = vec![0u8; n as usize];
    f.read_exact(&mut header).map_err(|e| Error::io(path, e))?;
    Ok(header_segments(&header, size))
}

/// The segments of a safetensors file of `size` bytes whose JSON header is `header`; the
/// error says why the file is not valid safetensors (or is beyond the reader's limits).
pub(crate) fn header_segments(
    header: &[u8],
    size: u64,
) -> std::result::Result<Vec<PlannedSegment>, String> {
    let meta: safetensors::tensor::Metadata = match serde_json::from_slice(header) {
        Ok(m) => m,
        Err(e) => return Err(e.to_string()),
    };
    let data_start = 8 + header.len() as u64;
    if data_start + meta.data_len() as u64 != size {
        return Err("tensor data does not fill the file exactly".into());
    }
    let mut tensors: Vec<(String, &safetensors::tensor::TensorInfo)> =
        meta.tensors().into_iter().collect();
    // Sort by offset, then name: zero-length tensors share offsets and the archive must not
    // depend on hash-map order.
    tensors.sort_by(|a, b| (a.1.data_offsets, &a.0).cmp(&(b.1.data_offsets, &b.0)));
    let names = tensors.iter().map(|(n, i)| (n.as_str(), i.shape.len()));
    if let Some(why) = beyond_limits(tensors.len(), "tensors", names) {
        return Err(format!("{LIMITED}{why} (docs/FORMAT.md §6)"));
    }
    let mut segments = bytes_segment(0, data_start);
    for (name, info) in tensors {
        let (s, e) = info.data_offsets;
        let dtype = format!("{:?}", info.dtype);
        segments.push(PlannedSegment {
            value: value_kind(&dtype),
            kind: SegmentKind::Tensor(TensorInfo {
                name,
                dtype,
                shape: info.shape.iter().map(|&d| d as u64).collect(),
            }),
            offset: data_start + s as u64,
            len: (e - s) as u64,
        });
    }
    Ok(segments)
}

/// The codec family for a safetensors dtype string.
pub fn value_kind(dtype: &str) -> ValueKind {
    match dtype {
        "BF16" => ValueKind::Float(FloatLayout::BF16),
        "F16" => ValueKind::Float(FloatLayout::F16),
        "F32" => ValueKind::Float(FloatLayout::F32),
        "F64" => ValueKind::Float(FloatLayout::F64),
        "F8_E4M3" | "F8_E4M3FNUZ" => ValueKind::Float(FloatLayout::F8_E4M3),
        "F8_E5M2" | "F8_E5M2FNUZ" => ValueKind::Float(FloatLayout::F8_E5M2),
        _ => ValueKind::Bytes,
    }
}

/// Size of one element of a safetensors dtype in bits, if known.
pub fn dtype_bits(dtype: &str) -> Option<u64> {
    Some(match dtype {
        "BOOL" | "U8" | "I8" | "F8_E5M2" | "F8_E4M3" | "F8_E8M0" | "F8_E4M3FNUZ"
        | "F8_E5M2FNUZ" => 8,
        "F4" => 4,
        "F6_E2M3" | "F6_E3M2" => 6,
        "I16" | "U16" | "F16" | "BF16" => 16,
        "I32" | "U32" | "F32" => 32,
        "F64" | "I64" | "U64" | "C64" => 64,
        _ => return None,
    })
}

/// Plans the file `path` as a safetensors file whatever its name (deltas and chains detect
/// safetensors by content, not by extension); `rel` is its stored name.
pub(crate) fn plan_file_by_content(rel: String, path: PathBuf) -> Result<PlannedFile> {
    let mut f = plan_file(format!("{rel}.safetensors"), path)?;
    f.rel = rel;
    Ok(f)
}

/// Format 1.2 (docs/FORMAT.md §7.1): tensors of at most this many bytes may share a packed
/// segment, and blobs of at most this many bytes a pack.
pub const SMALL_ITEM: u64 = 64 << 10;
/// Largest packed tensor segment (one chunk, so reading one member decodes one chunk).
pub const PACKED_SEGMENT: u64 = CHUNK_SIZE;
/// Largest pack of small files.
pub const PACK_SIZE: u64 = 4 << 20;

/// Size of the 1.0 index of a lossless archive of `files`, less its 9-byte start: what each
/// entry, segment and chunk record costs, names included.
pub(crate) fn index_estimate(files: &[PlannedFile]) -> u64 {
    files
        .iter()
        .map(|f| {
            let segments: u64 = f
                .segments
                .iter()
                .map(|s| {
                    let names = match &s.kind {
                        SegmentKind::Tensor(t) => {
                            12 + t.name.len() + t.dtype.len() + 8 * t.shape.len()
                        }
                        _ => 0,
                    };
                    66 + 25 * s.chunks().count() as u64 + names as u64
                })
                .sum();
            let views: u64 = f
                .views
                .iter()
                .map(|v| 28 + (v.name.len() + v.dtype.len() + 16 * v.shape.len()) as u64)
                .sum();
            53 + f.rel.len() as u64 + segments + views
        })
        .sum()
}

/// Index size, as [`index_estimate`] gives it, above which an archive's index is stored
/// compressed (and below which nothing is packed).
const COMPRESSED_INDEX_ABOVE: u64 = 4000;

/// Whether the archive of `files` stores its index compressed (format 1.2, docs/FORMAT.md
/// §4.1): whenever the index is estimated above 4,000 bytes. Names, shapes and offsets shrink
/// 2–3× (lossy records add 86 bytes per tensor): 0.4–0.6 % of a CNN's lossless archive, for
/// well under a millisecond at the index's zstd level.
pub fn compresses_index(files: &[PlannedFile]) -> bool {
    index_estimate(files) > COMPRESSED_INDEX_ABOVE
}

/// Whether the reference writer packs small tensors and small files (format 1.2) for these
/// files of `total` bytes: only when a 1.0 index would be more than 4,000 bytes and more than
/// 1/64 of the input, so that ordinary archives (few, large tensors) keep one segment per
/// tensor. The archive (preamble, data no larger than the input, index, trailer) then stays
/// within the bound of docs/FORMAT.md §7.1.
pub fn wants_packing(files: &[PlannedFile], total: u64) -> bool {
    let estimate = index_estimate(files);
    estimate > COMPRESSED_INDEX_ABOVE && estimate.saturating_mul(64) > total
}

/// Whether a planned file may go into a pack of small files (format 1.2).
pub fn packable_file(f: &PlannedFile) -> bool {
    f.kind == EntryKind::Blob && f.size <= SMALL_ITEM
}

/// Merges runs of at least two consecutive small tensor segments into packed segments of
/// at most [`PACKED_SEGMENT`] bytes (format 1.2).
pub fn pack_tensors(file: &mut PlannedFile) {
    let small =
        |s: &PlannedSegment| matches!(s.kind, SegmentKind::Tensor(_)) && s.len <= SMALL_ITEM;
    let mut out: Vec<PlannedSegment> = Vec::with_capacity(file.segments.len());
    let mut run: Vec<PlannedSegment> = Vec::new();
    let flush = |run: &mut Vec<PlannedSegment>, out: &mut Vec<PlannedSegment>| {
        if run.len() < 2 {
            out.append(run);
            return;
        }
        let value = if run.iter().all(|s| s.value == run[0].value) {
            run[0].value
        } else {
            ValueKind::Bytes
        };
        let offset = run[0].offset;
        let len = run.iter().map(|s| s.len).sum();
        let members = run
            .drain(..)
            .filter_map(|s| match s.kind {
                SegmentKind::Tensor(info) => Some(dmx_format::PackedTensor { info, len: s.len }),
                _ => None,
            })
            .collect();
        out.push(PlannedSegment {
            kind: SegmentKind::Packed(members),
            offset,
            len,
            value,
        });
    };
    // Bytes in `run`, kept as a running sum (runs may hold tens of thousands of tensors).
    let mut run_len = 0u64;
    for seg in std::mem::take(&mut file.segments) {
        if !small(&seg) {
            flush(&mut run, &mut out);
            run_len = 0;
            out.push(seg);
            continue;
        }
        if run_len + seg.len > PACKED_SEGMENT {
            flush(&mut run, &mut out);
            run_len = 0;
        }
        run_len += seg.len;
        run.push(seg);
    }
    flush(&mut run, &mut out);
    file.segments = out;
}

/// The planned pack (format 1.2) of `members`, small files read into one buffer by the
/// caller: one entry of kind [`EntryKind::Pack`] with an empty path.
pub fn pack_plan(dir: &Path, size: u64) -> PlannedFile {
    PlannedFile {
        rel: String::new(),
        path: dir.to_path_buf(),
        kind: EntryKind::Pack,
        size,
        segments: bytes_segment(0, size),
        warning: None,
        views: Vec::new(),
    }
}
