//! Reading archives: open and validate, list tensors, decode chunks, segments and tensors
//! (into caller memory: [`read`]).

mod read;
mod views;

pub(crate) use views::ViewTable;

use std::collections::HashMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

use dmx_codec::{Codec, CodecError};
use dmx_format::{Chunk, Entry, Index, Limits, Segment, TensorInfo, TorchView, Trailer};
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::io::Bytes;
use crate::plan::dtype_bits;

/// An open `.dmx` archive. Opening checks the preamble, the trailer, the index checksum and
/// every structural rule of the index; chunk checksums are checked as chunks are decoded.
pub struct Archive {
    path: PathBuf,
    bytes: Bytes,
    index: Index,
    version: (u16, u16),
    index_len: u64,
    /// Where each tensor name is, built on the first lookup by name.
    names: std::sync::OnceLock<HashMap<String, Vec<Place>>>,
    /// Per entry, its views into storages (empty but for `torch.save` entries).
    views: Vec<views::ViewTable>,
}

/// Where a tensor is in the index: entry, segment, member of a packed segment (0 otherwise)
/// or view into a storage segment, and its offset and length within the segment.
#[derive(Debug, Clone, Copy)]
struct Place {
    entry: usize,
    segment: usize,
    member: usize,
    view: Option<usize>,
    offset: u64,
    len: u64,
}

/// A tensor stored in an archive.
#[derive(Debug, Clone, Copy)]
pub struct TensorRef<'a> {
    /// The file it belongs to.
    pub entry: &'a Entry,
    /// Its segment (for a packed tensor, the packed segment holding it and its neighbours).
    pub segment: &'a Segment,
    /// Name, dtype and shape.
    pub info: &'a TensorInfo,
    /// Offset of its data from the start of the segment (0 unless packed).
    pub offset: u64,
    /// Length of its data in bytes (the segment's length unless packed or a view).
    pub len: u64,
    /// For a tensor of a `torch.save` entry that is a view into a storage segment: its
    /// offset and strides (`offset` above is then where its first element starts, `len` the
    /// bytes of its elements gathered contiguously). `None` for every other tensor.
    pub view: Option<&'a TorchView>,
}

impl TensorRef<'_> {
    /// Whether its bytes are the segment's bytes `offset..offset + len` as stored; `false`
    /// for a view whose elements must be gathered (strided, transposed).
    pub fn is_contiguous(&self) -> bool {
        self.view.is_none_or(views::is_contiguous)
    }
}

impl Archive {
    /// Opens and validates `path` with the default [`Limits`].
    pub fn open(path: &Path) -> Result<Self> {
        Self::open_with_limits(path, &Limits::default())
    }

    /// Opens and validates `path` with explicit limits for untrusted input.
    pub fn open_with_limits(path: &Path, limits: &Limits) -> Result<Self> {
        if path.is_dir() {
            return Err(Error::Unsupported(format!(
                "{}: is a folder, not a dmx archive{}",
                path.display(),
                if crate::chain::is_chain_dir(path) {
                    " (a chain folder: see `dmx chain-info`)"
                } else {
                    ""
                }
            )));
        }
        let bytes = Bytes::open_stable(path)?;
        let fmt = |source| Error::Format {
            path: path.to_path_buf(),
            source,
        };
        let version = dmx_format::check_preamble(&bytes)
            .map_err(|e| crate::legacy::explain_not_archive(path, &bytes, e))?;
        let len = bytes.len() as u64;
        if len < dmx_format::PREAMBLE_LEN + dmx_format::TRAILER_LEN {
            return Err(fmt(dmx_format::FormatError::Truncated("archive")));
        }
        let trailer = Trailer::from_bytes(&bytes[(len - dmx_format::TRAILER_LEN) as usize..])
            .map_err(|e| match dmx_format::find_archive_end(&bytes, limits) {
                // No trailer at the end, but a whole archive before: data was appended.
                Some(end) if e == dmx_format::FormatError::NoTrailer => {
                    dmx_format::FormatError::DataAppended {
                        end,
                        extra: len - end,
                    }
                }
                _ => e,
            })
            .map_err(fmt)?;
        trailer.check(len, limits).map_err(fmt)?;
        let start = trailer.index_offset as usize;
        let index_bytes = &bytes[start..start + trailer.index_len as usize];
        trailer.check_index(index_bytes).map_err(fmt)?;
        let flags = dmx_format::preamble_flags(&bytes);
        let index =
            Index::from_stored(index_bytes, flags, trailer.index_offset, limits).map_err(fmt)?;
        let views = index.entries.iter().map(views::ViewTable::of).collect();
        let archive = Self {
            path: path.to_path_buf(),
            bytes,
            index,
            version,
            index_len: trailer.index_len,
            names: std::sync::OnceLock::new(),
            views,
        };
        archive.validate()?;
        Ok(archive)
    }

    /// Rules the engine adds to the container's: known codec ids, tensor sizes that match
    /// their dtype and shape, views of `torch.save` entries inside their storages.
    fn validate(&self) -> Result<()> {
        for entry in &self.index.entries {
            if entry.kind.is_torch() {
                for v in &entry.views {
                    views::check_view(entry, v).map_err(|e| self.corrupt_entry(entry, &e))?;
                }
            }
            for seg in &entry.segments {
                for c in &seg.chunks {
                    let codec =
                        Codec::from_id(c.codec).map_err(|e| self.unknown_codec(entry, seg, e))?;
                    let fits = (!codec.needs_base() || seg.transform.base().is_some())
                        && (codec.is_lossless() || seg.transform.lossy().is_some());
                    if !fits {
                        return Err(self.corrupt(
                            entry,
                            seg,
                            None,
                            format!("codec {} does not belong in this segment", c.codec),
                        ));
                    }
                }
                for (t, _, len) in seg.kind.tensors(seg.len) {
                    let Some(bits) = dtype_bits(&t.dtype) else {
                        continue;
                    };
                    let elems = t
                        .shape
                        .iter()
                        .try_fold(1u64, |a, &d| a.checked_mul(d))
                        .and_then(|n| n.checked_mul(bits));
                    if elems.map(|b| b.div_ceil(8)) != Some(len) {
                        return Err(self.corrupt(
                            entry,
                            seg,
                            None,
                            format!("tensor {:?}: size disagrees with shape", t.name),
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// The format version `(major, minor)` the archive was written with.
    pub fn version(&self) -> (u16, u16) {
        self.version
    }

    /// The archive's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The parsed index.
    pub fn index(&self) -> &Index {
        &self.index
    }

    /// Size of the archive file in bytes.
    pub fn archive_len(&self) -> u64 {
        self.bytes.len() as u64
    }

    /// Size of the stored index in bytes (compressed, for a format 1.2 archive with a
    /// compressed index).
    pub fn index_len(&self) -> u64 {
        self.index_len
    }

    /// Every tensor, in archive order (the members of packed segments one by one; for a
    /// storage of a `torch.save` entry that views name, those views in table order).
    pub fn tensors(&self) -> impl Iterator<Item = TensorRef<'_>> {
        (0..self.index.entries.len()).flat_map(move |e| {
            (0..self.index.entries[e].segments.len()).flat_map(move |s| {
                self.places(e, s)
                    .into_iter()
                    .filter_map(move |p| self.tensor_at(p))
            })
        })
    }

    /// The places of the tensors of segment `s` of entry `e`.
    fn places(&self, e: usize, s: usize) -> Vec<Place> {
        let entry = &self.index.entries[e];
        let seg = &entry.segments[s];
        if let Some(vs) = self.views.get(e).and_then(|t| t.of_segment(s)) {
            return vs
                .iter()
                .map(|&v| {
                    let view = &entry.views[v];
                    // Validated at open: width known, extent inside the segment.
                    let w = views::elem_bytes(&view.dtype).unwrap_or(1);
                    let n = views::numel(&view.shape).unwrap_or(0);
                    Place {
                        entry: e,
                        segment: s,
                        member: 0,
                        view: Some(v),
                        offset: view.offset.saturating_mul(w),
                        len: n.saturating_mul(w),
                    }
                })
                .collect();
        }
        seg.kind
            .tensors(seg.len)
            .into_iter()
            .enumerate()
            .map(|(m, (_, offset, len))| Place {
                entry: e,
                segment: s,
                member: m,
                view: None,
                offset,
                len,
            })
            .collect()
    }

    /// Finds a tensor by name (the first match in archive order).
    pub fn tensor(&self, name: &str) -> Option<TensorRef<'_>> {
        self.tensors_named(name).next()
    }

    /// The tensors named `name`, in archive order (a folder archive may hold one per file),
    /// found through an index of names built on the first call.
    pub(crate) fn tensors_named(&self, name: &str) -> impl Iterator<Item = TensorRef<'_>> {
        let names = self.names.get_or_init(|| self.name_index());
        names
            .get(name)
            .map_or(&[][..], Vec::as_slice)
            .iter()
            .filter_map(|p| self.tensor_at(*p))
    }

    fn name_index(&self) -> HashMap<String, Vec<Place>> {
        let mut names: HashMap<String, Vec<Place>> = HashMap::new();
        for (e, entry) in self.index.entries.iter().enumerate() {
            for s in 0..entry.segments.len() {
                for p in self.places(e, s) {
                    if let Some(t) = self.tensor_at(p) {
                        names.entry(t.info.name.clone()).or_default().push(p);
                    }
                }
            }
        }
        names
    }

    fn tensor_at(&self, p: Place) -> Option<TensorRef<'_>> {
        let entry = self.index.entries.get(p.entry)?;
        let segment = entry.segments.get(p.segment)?;
        if let Some(v) = p.view {
            return Some(TensorRef {
                entry,
                segment,
                info: self.views.get(p.entry)?.infos.get(v)?,
                offset: p.offset,
                len: p.len,
                view: Some(entry.views.get(v)?),
            });
        }
        let info = match &segment.kind {
            dmx_format::SegmentKind::Tensor(t) => t,
            dmx_format::SegmentKind::Packed(members) => &members.get(p.member)?.info,
            dmx_format::SegmentKind::Bytes => return None,
        };
        Some(TensorRef {
            entry,
            segment,
            info,
            offset: p.offset,
            len: p.len,
            view: None,
        })
    }

    /// Decodes one tensor's bytes, checking chunk checksums and the tensor's BLAKE3.
    pub fn read_tensor(&self, name: &str) -> Result<Vec<u8>> {
        let t = self.tensor(name).ok_or_else(|| Error::TensorNotFound {
            path: self.path.clone(),
            name: name.to_string(),
        })?;
        self.read_tensor_ref(t)
    }

    /// Decodes the bytes of tensor `t` of this archive, checking chunk checksums and the
    /// BLAKE3 of its segment (for a packed tensor, of the whole packed segment).
    pub fn read_tensor_ref(&self, t: TensorRef<'_>) -> Result<Vec<u8>> {
        let data = self.read_segment(t.entry, t.segment)?;
        if blake3::hash(&data).as_bytes() != &t.segment.blake3 {
            return Err(Error::Mismatch {
                path: self.path.clone(),
                detail: format!(
                    "tensor {:?}: BLAKE3 of decoded bytes does not match",
                    t.info.name
                ),
            });
        }
        if let Some(v) = t.view.filter(|_| !t.is_contiguous()) {
            let width = views::elem_bytes(&v.dtype).unwrap_or(1);
            return views::gather(&data, v, width)
                .ok_or_else(|| self.corrupt_entry(t.entry, "view outside its storage"));
        }
        if t.offset == 0 && t.len == t.segment.len {
            return Ok(data);
        }
        let range = usize::try_from(t.offset)
            .ok()
            .zip(usize::try_from(t.offset.saturating_add(t.len)).ok())
            .and_then(|(a, b)| data.get(a..b))
            .ok_or_else(|| self.corrupt_entry(t.entry, "tensor outside its segment"))?;
        Ok(range.to_vec())
    }

    /// Decodes a whole pack entry (format 1.2, at most [`dmx_format::MAX_PACK`] bytes),
    /// checking chunk checksums, every segment's BLAKE3 and the pack's SHA-256, which binds
    /// the size of every packed file after it.
    pub fn read_pack(&self, entry: &Entry) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(entry.size.min(dmx_format::MAX_PACK) as usize);
        for seg in &entry.segments {
            let data = self.read_segment(entry, seg)?;
            if blake3::hash(&data).as_bytes() != &seg.blake3 {
                return Err(self.corrupt(
                    entry,
                    seg,
                    None,
                    "BLAKE3 of decoded bytes does not match",
                ));
            }
            out.extend_from_slice(&data);
        }
        let members = self
            .index
            .entries
            .iter()
            .skip_while(|e| !std::ptr::eq(*e, entry))
            .skip(1)
            .take_while(|e| e.kind == dmx_format::EntryKind::Packed);
        if pack_digest(members.map(|e| e.size), &out) != entry.sha256 {
            return Err(self.corrupt_entry(
                entry,
                "SHA-256 of the pack and its file sizes does not match",
            ));
        }
        Ok(out)
    }

    /// Decodes a whole segment (chunks in parallel on the current rayon pool).
    pub fn read_segment(&self, entry: &Entry, segment: &Segment) -> Result<Vec<u8>> {
        let too_big = || {
            Error::Limit(format!(
                "{}: a segment of {} bytes does not fit in memory",
                self.path.display(),
                segment.len
            ))
        };
        let len = usize::try_from(segment.len).map_err(|_| too_big())?;
        // Damaged chunks are found before the (possibly large) output is allocated.
        for (i, c) in segment.chunks.iter().enumerate() {
            let start = c.offset as usize;
            let stored = &self.bytes[start..start + c.stored_len as usize];
            if dmx_format::xxh3_64(stored) != c.xxh3 {
                return Err(self.corrupt(entry, segment, Some(i), "checksum mismatch"));
            }
        }
        // A hostile index may declare any size: fail cleanly when it cannot be allocated
        // (zeroed pages are only touched as chunks decode into them).
        let mut probe: Vec<u8> = Vec::new();
        probe.try_reserve_exact(len).map_err(|_| too_big())?;
        drop(probe);
        let mut out = vec![0u8; len];
        self.decode_chunks(entry, segment, 0..segment.chunks.len(), &mut out)?;
        Ok(out)
    }

    /// Decodes the chunks `range` of `segment` in parallel into `out`, whose length is the
    /// sum of their raw lengths.
    pub(crate) fn decode_chunks(
        &self,
        entry: &Entry,
        segment: &Segment,
        range: Range<usize>,
        out: &mut [u8],
    ) -> Result<()> {
        let mut slices = Vec::with_capacity(range.len());
        let mut rest = out;
        for i in range {
            let (head, tail) = rest.split_at_mut(segment.chunks[i].raw_len as usize);
            slices.push((i, head));
            rest = tail;
        }
        slices
            .into_par_iter()
            .try_for_each(|(i, buf)| self.decode_chunk(entry, segment, i, buf, None))
    }

    /// Decodes chunk `index` of `segment` into `out` (its raw length), after checking its
    /// xxh3. `base` is the same range of the base tensor, for delta chunks.
    pub(crate) fn decode_chunk(
        &self,
        entry: &Entry,
        segment: &Segment,
        index: usize,
        out: &mut [u8],
        base: Option<&[u8]>,
    ) -> Result<()> {
        let chunk = &segment.chunks[index];
        let start = chunk.offset as usize;
        let stored = &self.bytes[start..start + chunk.stored_len as usize];
        if dmx_format::xxh3_64(stored) != chunk.xxh3 {
            return Err(self.corrupt(entry, segment, Some(index), "checksum mismatch"));
        }
        let codec = Codec::from_id(chunk.codec)
            .map_err(|e| self.corrupt(entry, segment, Some(index), e))?;
        if codec.needs_base() && base.is_none() {
            return Err(Error::Unsupported(format!(
                "{}: tensor data is stored as a delta; its base is needed to decode it",
                self.path.display()
            )));
        }
        dmx_codec::decode_with_base(codec, stored, base, out)
            .map_err(|e| self.corrupt(entry, segment, Some(index), e))
    }

    /// Lets the kernel drop mapped archive pages of `chunks`, already decoded.
    pub(crate) fn release(&self, chunks: &[Chunk]) {
        if let (Some(first), Some(last)) = (chunks.first(), chunks.last()) {
            let end = last.offset + u64::from(last.stored_len);
            self.bytes.release(first.offset as usize, end as usize);
        }
    }

    /// An unknown codec id: written by a newer dmx when the archive's minor version is above
    /// the highest this build knows (it then names the version and asks for an upgrade),
    /// else damage.
    fn unknown_codec(&self, entry: &Entry, segment: &Segment, e: CodecError) -> Error {
        let (major, minor) = self.version();
        if minor <= dmx_format::VERSION_MINOR {
            return self.corrupt(entry, segment, None, e);
        }
        Error::Corrupt {
            path: self.path.clone(),
            what: format!("{}: {}", entry.path, segment.kind.describe(segment.offset)),
            detail: format!(
                "{e}: the archive is format {major}.{minor}, newer than this dmx reads (up to \
                 {}.{}); upgrade dmx",
                dmx_format::VERSION_MAJOR,
                dmx_format::VERSION_MINOR
            ),
        }
    }

    fn corrupt_entry(&self, entry: &Entry, detail: &str) -> Error {
        Error::Corrupt {
            path: self.path.clone(),
            what: entry.path.clone(),
            detail: format!("{detail} (the archive is damaged; re-create or re-download it)"),
        }
    }

    fn corrupt(
        &self,
        entry: &Entry,
        segment: &Segment,
        chunk: Option<usize>,
        detail: impl ToString,
    ) -> Error {
        let what = format!("{}: {}", entry.path, segment.kind.describe(segment.offset));
        let what = match chunk {
            Some(i) => format!("{what}, chunk {i}"),
            None => what,
        };
        Error::Corrupt {
            path: self.path.clone(),
            what,
            detail: format!(
                "{} (the archive is damaged; re-create or re-download it)",
                detail.to_string()
            ),
        }
    }
}

/// Format 1.2 packs during a folder restore: decodes a pack entry into `pack`, or writes a
/// packed file (its range of `pack`) under `dir`, synced when `sync`. Returns `false` for
/// every other entry, which the caller restores itself.
pub(crate) fn restore_packed(
    archive: &Archive,
    entry: &Entry,
    pack: &mut Vec<u8>,
    dir: &Path,
    sync: bool,
    progress: Option<&dyn crate::Progress>,
) -> Result<bool> {
    if let (Some(p), dmx_format::EntryKind::Pack | dmx_format::EntryKind::Packed) =
        (progress, entry.kind)
    {
        p.advance(entry.size);
    }
    match (entry.kind, entry.packed) {
        (dmx_format::EntryKind::Pack, _) => {
            *pack = archive.read_pack(entry)?;
            Ok(true)
        }
        (dmx_format::EntryKind::Packed, Some(offset)) => {
            // The index check guarantees the range lies inside the pack.
            let data = pack
                .get(offset as usize..(offset + entry.size) as usize)
                .ok_or_else(|| archive.corrupt_entry(entry, "packed file outside its pack"))?;
            let path = dir.join(&entry.path);
            let mut f = crate::io::create_plain(&path)?;
            std::io::Write::write_all(&mut f, data).map_err(|e| Error::io(&path, e))?;
            if sync {
                f.sync_all().map_err(|e| Error::io(&path, e))?;
            }
            Ok(true)
        }
        _ => Ok(false),
    }
}

/// The SHA-256 recorded for a pack (format 1.2, docs/FORMAT.md §5.2): over each packed
/// file's size (`u64` little-endian) followed by its bytes, in order, so it binds the files'
/// boundaries as well as their contents. Sizes that do not fit `data` give a digest of what
/// fits (a mismatch).
pub(crate) fn pack_digest(sizes: impl Iterator<Item = u64>, data: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    let mut sha = sha2::Sha256::new();
    let mut at = 0usize;
    for size in sizes {
        sha.update(size.to_le_bytes());
        let end = at.saturating_add(size as usize).min(data.len());
        sha.update(&data[at..end]);
        at = end;
    }
    sha.finalize().into()
}

/// Bytes per element of a `torch.save` view's dtype (`None` for an unknown or sub-byte one).
pub(crate) fn view_width(view: &TorchView) -> Option<u64> {
    views::elem_bytes(&view.dtype)
}

/// The elements of `view` gathered contiguous from the bytes of its `storage` (`None` when
/// the view does not fit the storage or its dtype is unknown).
pub(crate) fn gather_view(storage: &[u8], view: &TorchView) -> Option<Vec<u8>> {
    views::gather(storage, view, view_width(view)?)
}
