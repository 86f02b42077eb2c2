//! Reading tensors straight into caller memory, decoding only what is asked: whole tensors
//! chunk by chunk, rows along the first dimension, the safetensors metadata; and addressing
//! tensors within one safetensors file of a folder archive.

use std::collections::BTreeMap;
use std::ops::Range;

use dmx_format::EntryKind;
use rayon::prelude::*;

use super::{Archive, TensorRef};
use crate::error::{Error, Result};

impl Archive {
    /// The stored paths of the safetensors files of the archive, in archive order (one, the
    /// file's name, for an archive of a single `.safetensors` file).
    pub fn safetensors_entries(&self) -> Vec<&str> {
        self.index
            .entries
            .iter()
            .filter(|e| e.kind == EntryKind::Safetensors)
            .map(|e| e.path.as_str())
            .collect()
    }

    /// The tensors of the stored file `file` (every tensor of the archive when `None`), in
    /// archive order.
    pub fn tensors_in<'a>(&'a self, file: Option<&'a str>) -> impl Iterator<Item = TensorRef<'a>> {
        self.tensors()
            .filter(move |t| file.is_none_or(|f| t.entry.path == f))
    }

    /// Finds the tensor `name` in the stored file `file` (`None`: the first in archive
    /// order). Its [`TensorRef::info`] holds the dtype and shape, [`TensorRef::len`] the byte
    /// length [`Archive::read_tensor_into`] fills.
    pub fn tensor_in(&self, file: Option<&str>, name: &str) -> Option<TensorRef<'_>> {
        self.tensors_named(name)
            .find(|t| file.is_none_or(|f| t.entry.path == f))
    }

    /// [`Archive::tensor_in`] of any file: the dtype, shape and byte length of a tensor.
    pub fn tensor_info(&self, name: &str) -> Option<TensorRef<'_>> {
        self.tensor_in(None, name)
    }

    /// The tensor `name` of `file`, or an error naming what is missing.
    pub fn find_tensor(&self, file: Option<&str>, name: &str) -> Result<TensorRef<'_>> {
        if let Some(f) = file
            && !self.index.entries.iter().any(|e| e.path == f)
        {
            return Err(Error::InvalidArgument(format!(
                "{}: no file {f:?} in the archive",
                self.path.display()
            )));
        }
        self.tensor_in(file, name)
            .ok_or_else(|| Error::TensorNotFound {
                path: self.path.clone(),
                name: name.to_string(),
            })
    }

    /// The `__metadata__` of the archive's safetensors file (`None` when its header has
    /// none); an error when the archive holds no or several safetensors files (see
    /// [`Archive::safetensors_metadata_in`]).
    pub fn safetensors_metadata(&self) -> Result<Option<BTreeMap<String, String>>> {
        self.safetensors_metadata_in(None)
    }

    /// The `__metadata__` of the stored safetensors file `file` (`None`: the only one).
    /// Decodes and checks the file's header segment only.
    pub fn safetensors_metadata_in(
        &self,
        file: Option<&str>,
    ) -> Result<Option<BTreeMap<String, String>>> {
        let mut files = self
            .index
            .entries
            .iter()
            .filter(|e| e.kind == EntryKind::Safetensors && file.is_none_or(|f| e.path == f));
        let (Some(entry), None) = (files.next(), files.next()) else {
            let n = self.safetensors_entries().len();
            return Err(Error::InvalidArgument(match file {
                Some(f) => format!(
                    "{}: no safetensors file {f:?} in the archive",
                    self.path.display()
                ),
                None if n == 0 => format!(
                    "{}: the archive holds no safetensors file",
                    self.path.display()
                ),
                None => format!(
                    "{}: the archive holds {n} safetensors files; name one",
                    self.path.display()
                ),
            }));
        };
        let Some(seg) = entry.segments.first() else {
            return Err(self.corrupt_entry(entry, "safetensors file without a header"));
        };
        let header = self.read_segment(entry, seg)?;
        if blake3::hash(&header).as_bytes() != &seg.blake3 {
            return Err(self.corrupt(entry, seg, None, "BLAKE3 of decoded bytes does not match"));
        }
        let meta = header
            .get(8..)
            .and_then(|json| serde_json::from_slice::<safetensors::tensor::Metadata>(json).ok())
            .ok_or_else(|| self.corrupt_entry(entry, "the safetensors header does not parse"))?;
        Ok(meta
            .metadata()
            .as_ref()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()))
    }

    /// Decodes the tensor `name` (the first in archive order) into `out`, whose length must
    /// be its byte length; see [`Archive::read_ref_into`].
    pub fn read_tensor_into(&self, name: &str, out: &mut [u8]) -> Result<()> {
        self.read_ref_into(self.find_tensor(None, name)?, out)
    }

    /// Decodes tensor `t` into `out` (`t.len` bytes) chunk by chunk, without another copy of
    /// the tensor: chunks in parallel on the current rayon pool, each checked against its
    /// checksum, and the decoded tensor against its BLAKE3 (for a packed tensor, the packed
    /// segment of at most one chunk is decoded and checked whole). Lossy tensors give their
    /// decoded values, in their dtype.
    pub fn read_ref_into(&self, t: TensorRef<'_>, out: &mut [u8]) -> Result<()> {
        self.read_ref_into_with(t, out, &crate::Options::default())
    }

    /// [`Archive::read_ref_into`] that checks [`crate::Options::cancel`] between windows of
    /// chunks (a large tensor stops within a window's decoding, leaving `out` partly
    /// written) and reports the decoded bytes to [`crate::Options::progress`] as
    /// [`crate::Progress::advance`] (the caller starts and finishes the phase). The work
    /// runs on the current rayon pool: [`crate::Options::threads`] is not used.
    pub fn read_ref_into_with(
        &self,
        t: TensorRef<'_>,
        out: &mut [u8],
        opts: &crate::Options,
    ) -> Result<()> {
        check_len(self, &t, out.len() as u64)?;
        if t.offset != 0 || t.len != t.segment.len || !t.is_contiguous() {
            opts.check_cancel()?;
            let data = self.read_tensor_ref(t)?;
            out.copy_from_slice(&data);
            if let Some(p) = opts.progress.as_deref() {
                p.advance(t.len);
            }
            return Ok(());
        }
        let (entry, seg) = (t.entry, t.segment);
        let lens: Vec<u64> = seg.chunks.iter().map(|c| u64::from(c.raw_len)).collect();
        let mut hasher = blake3::Hasher::new();
        let mut rest = out;
        let mut done: &[u8] = &[];
        for w in crate::window::windows(&lens) {
            opts.check_cancel()?;
            let bytes: u64 = lens[w.clone()].iter().sum();
            let (head, tail) = std::mem::take(&mut rest)
                .split_at_mut_checked(bytes as usize)
                .ok_or_else(|| self.corrupt(entry, seg, None, "chunk sizes exceed the segment"))?;
            rest = tail;
            let (decoded, ()) = rayon::join(
                || self.decode_chunks(entry, seg, w.clone(), &mut *head),
                || {
                    hasher.update(done);
                },
            );
            decoded?;
            self.release(&seg.chunks[w]);
            if let Some(p) = opts.progress.as_deref() {
                p.advance(bytes);
            }
            done = head;
        }
        hasher.update(done);
        if !rest.is_empty() || hasher.finalize().as_bytes() != &seg.blake3 {
            return Err(Error::Mismatch {
                path: self.path.clone(),
                detail: format!(
                    "tensor {:?}: BLAKE3 of decoded bytes does not match",
                    t.info.name
                ),
            });
        }
        Ok(())
    }

    /// Decodes rows `rows` of the tensor `name` (the first in archive order) into `out`; see
    /// [`Archive::read_ref_rows_into`].
    pub fn read_rows_into(&self, name: &str, rows: Range<u64>, out: &mut [u8]) -> Result<()> {
        self.read_ref_rows_into(self.find_tensor(None, name)?, rows, out)
    }

    /// Decodes rows `rows` of tensor `t` into `out`: slices along the first dimension (the
    /// elements of a 1-D tensor; a scalar has one row). `out.len()` must be the rows' byte
    /// length. Only the chunks that hold those rows are decoded, each checked against its
    /// checksum (the tensor's BLAKE3 covers the whole tensor, so it is checked only when
    /// every row is read).
    pub fn read_ref_rows_into(
        &self,
        t: TensorRef<'_>,
        rows: Range<u64>,
        out: &mut [u8],
    ) -> Result<()> {
        let (n, row_bytes) = row_shape(self, &t)?;
        if rows.start > rows.end || rows.end > n {
            return Err(Error::InvalidArgument(format!(
                "{}: tensor {:?} has {n} rows; rows {}..{} are out of range",
                self.path.display(),
                t.info.name,
                rows.start,
                rows.end
            )));
        }
        let want = (rows.end - rows.start) * row_bytes;
        if want != out.len() as u64 {
            return Err(Error::InvalidArgument(format!(
                "{}: rows {}..{} of tensor {:?} are {want} bytes; the buffer holds {}",
                self.path.display(),
                rows.start,
                rows.end,
                t.info.name,
                out.len()
            )));
        }
        if rows.start == 0 && rows.end == n {
            return self.read_ref_into(t, out);
        }
        if !t.is_contiguous() {
            // A strided view: its rows are not one byte range of the storage.
            let whole = self.read_tensor_ref(t)?;
            let from = (rows.start * row_bytes) as usize;
            out.copy_from_slice(&whole[from..from + out.len()]);
            return Ok(());
        }
        let start = t.offset + rows.start * row_bytes;
        self.read_range_into(t, start..start + want, out)
    }

    /// Decodes bytes `range` of the segment of `t` into `out`: whole chunks straight into
    /// `out`, the chunks at either end into a buffer of their own, in parallel.
    fn read_range_into(&self, t: TensorRef<'_>, range: Range<u64>, out: &mut [u8]) -> Result<()> {
        let (entry, seg) = (t.entry, t.segment);
        // (chunk index, its start in the segment, the part of `out` it fills)
        let mut parts = Vec::new();
        let mut rest = out;
        let mut at = 0u64;
        for (i, c) in seg.chunks.iter().enumerate() {
            let end = at + u64::from(c.raw_len);
            if end > range.start && at < range.end {
                let n = (end.min(range.end) - at.max(range.start)) as usize;
                let (head, tail) = std::mem::take(&mut rest)
                    .split_at_mut_checked(n)
                    .ok_or_else(|| self.corrupt(entry, seg, Some(i), "chunk outside segment"))?;
                rest = tail;
                parts.push((i, at, head));
            }
            at = end;
        }
        if !rest.is_empty() {
            return Err(self.corrupt(entry, seg, None, "chunk sizes do not add up to the segment"));
        }
        parts.into_par_iter().try_for_each(|(i, at, buf)| {
            let raw = seg.chunks[i].raw_len as usize;
            if buf.len() == raw {
                return self.decode_chunk(entry, seg, i, buf, None);
            }
            let mut whole = vec![0u8; raw];
            self.decode_chunk(entry, seg, i, &mut whole, None)?;
            let from = range.start.saturating_sub(at) as usize;
            buf.copy_from_slice(&whole[from..from + buf.len()]);
            Ok(())
        })
    }
}

/// An error unless `len` is the byte length of tensor `t`.
fn check_len(a: &Archive, t: &TensorRef<'_>, len: u64) -> Result<()> {
    if len == t.len {
        return Ok(());
    }
    Err(Error::InvalidArgument(format!(
        "{}: tensor {:?} is {} bytes; the buffer holds {len}",
        a.path.display(),
        t.info.name,
        t.len
    )))
}

/// The number of rows of `t` (its first dimension; 1 for a scalar) and the bytes per row.
fn row_shape(a: &Archive, t: &TensorRef<'_>) -> Result<(u64, u64)> {
    let n = t.info.shape.first().copied().unwrap_or(1);
    if n == 0 {
        return Ok((0, 0));
    }
    if !t.len.is_multiple_of(n) {
        return Err(Error::Unsupported(format!(
            "{}: tensor {:?} ({}): its rows are not whole bytes; read it whole",
            a.path.display(),
            t.info.name,
            t.info.dtype
        )));
    }
    Ok((n, t.len / n))
}
