//! Archives written straight from tensors in memory: the bytes a safetensors file of the
//! tensors would hold, laid out as the `safetensors` serializer lays them, encoded in place
//! (no temporary file, no copy of the tensors).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use dmx_format::{Index, Root};

use super::source::Source;
use super::{CompressReport, encode_planned, end_archive, plan_warnings, start_archive};
use crate::Options;
use crate::error::{Error, Result};
use crate::lossy::LossyOptions;

/// A tensor in caller memory: what one entry of a safetensors file holds.
#[derive(Debug, Clone, Copy)]
pub struct TensorData<'a> {
    /// Its name.
    pub name: &'a str,
    /// Its safetensors dtype (`"BF16"`, `"F32"`, `"I64"`, `"BOOL"`, ...).
    pub dtype: &'a str,
    /// Its shape (empty for a scalar).
    pub shape: &'a [u64],
    /// Its bytes: little-endian elements in C order.
    pub data: &'a [u8],
}

/// The safetensors dtypes in the order of the `safetensors` crate's `Dtype` (0.8), by which
/// its serializer sorts tensors (descending, then by name).
const DTYPES: [&str; 22] = [
    "BOOL",
    "F4",
    "F6_E2M3",
    "F6_E3M2",
    "U8",
    "I8",
    "F8_E5M2",
    "F8_E4M3",
    "F8_E8M0",
    "F8_E4M3FNUZ",
    "F8_E5M2FNUZ",
    "I16",
    "U16",
    "F16",
    "BF16",
    "I32",
    "U32",
    "F32",
    "C64",
    "F64",
    "I64",
    "U64",
];

/// Largest JSON header the `safetensors` crate writes or reads.
const MAX_HEADER: usize = 100_000_000;

/// The bytes a safetensors file of `tensors` starts with (the 8-byte little-endian header
/// length, the JSON header, padded with spaces to a multiple of 8 bytes), and the order in
/// which the tensors' data follow it (indices into `tensors`).
///
/// This is what the `safetensors` serializer (crate 0.8, Python package 0.8) writes: tensors
/// sorted by dtype (its alignment order, largest first), then by name; `__metadata__` first
/// when given. Its metadata is a hash map, so with several metadata keys its key order is
/// arbitrary; here the keys are sorted.
///
/// Refuses unknown dtypes, data whose length disagrees with the dtype and shape, repeated
/// names, the name `__metadata__`, and headers over 100 MB.
pub fn safetensors_layout(
    tensors: &[TensorData<'_>],
    metadata: Option<&BTreeMap<String, String>>,
) -> Result<(Vec<u8>, Vec<usize>)> {
    let mut ranks = Vec::with_capacity(tensors.len());
    for t in tensors {
        ranks.push(check_tensor(t)?);
    }
    let mut order: Vec<usize> = (0..tensors.len()).collect();
    order.sort_by(|&a, &b| {
        ranks[b]
            .cmp(&ranks[a])
            .then(tensors[a].name.cmp(tensors[b].name))
    });
    let mut names: Vec<&str> = tensors.iter().map(|t| t.name).collect();
    names.sort_unstable();
    if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
        return Err(duplicate(w[0]));
    }
    let json = |s: &str| serde_json::to_string(s).unwrap_or_default();
    let mut header = String::from("{");
    if let Some(meta) = metadata {
        header.push_str("\"__metadata__\":{");
        let pairs: Vec<String> = meta
            .iter()
            .map(|(k, v)| format!("{}:{}", json(k), json(v)))
            .collect();
        header.push_str(&pairs.join(","));
        header.push('}');
        if !order.is_empty() {
            header.push(',');
        }
    }
    let mut offset = 0usize;
    let entries: Vec<String> = order
        .iter()
        .map(|&i| {
            let t = &tensors[i];
            let shape: Vec<String> = t.shape.iter().map(u64::to_string).collect();
            let end = offset + t.data.len();
            let e = format!(
                "{}:{{\"dtype\":\"{}\",\"shape\":[{}],\"data_offsets\":[{offset},{end}]}}",
                json(t.name),
                t.dtype,
                shape.join(",")
            );
            offset = end;
            e
        })
        .collect();
    header.push_str(&entries.join(","));
    header.push('}');
    let mut header = header.into_bytes();
    header.resize(header.len().next_multiple_of(8), b' ');
    if header.len() > MAX_HEADER {
        return Err(Error::Limit(format!(
            "the safetensors header of these tensors would be {} bytes, above the limit of \
             {MAX_HEADER}",
            header.len()
        )));
    }
    let mut out = Vec::with_capacity(8 + header.len());
    out.extend_from_slice(&(header.len() as u64).to_le_bytes());
    out.extend_from_slice(&header);
    Ok((out, order))
}

/// Checks one tensor; returns the rank of its dtype in [`DTYPES`].
fn check_tensor(t: &TensorData<'_>) -> Result<usize> {
    let bad = |why: String| {
        Err(Error::InvalidArgument(format!(
            "tensor {:?}: {why}",
            t.name
        )))
    };
    if t.name == "__metadata__" {
        return bad("the name __metadata__ is reserved for the safetensors metadata".into());
    }
    let Some(rank) = DTYPES.iter().position(|d| *d == t.dtype) else {
        return bad(format!(
            "unknown dtype {:?} (known: {})",
            t.dtype,
            DTYPES.join(", ")
        ));
    };
    let bits = crate::plan::dtype_bits(t.dtype).unwrap_or(8);
    let total_bits = t
        .shape
        .iter()
        .try_fold(1u64, |a, &d| a.checked_mul(d))
        .and_then(|n| n.checked_mul(bits));
    match total_bits {
        Some(b) if b % 8 != 0 => bad(format!(
            "shape {:?} of {} holds a fraction of a byte",
            t.shape, t.dtype
        )),
        Some(b) if b / 8 == t.data.len() as u64 => Ok(rank),
        Some(b) => bad(format!(
            "shape {:?} of {} needs {} bytes, but {} were given",
            t.shape,
            t.dtype,
            b / 8,
            t.data.len()
        )),
        None => bad(format!("shape {:?} is too large", t.shape)),
    }
}

fn duplicate(name: &str) -> Error {
    Error::InvalidArgument(format!(
        "tensor {name:?} is given twice; names must be unique"
    ))
}

/// The name under which [`compress_tensors`] stores the tensors written to `output`: the
/// output's file name without its extension, with `.safetensors` appended (`model.dmx`
/// stores `model.safetensors`, as `dmx compress model.safetensors model.dmx` would), or
/// `model.safetensors` when the output's name gives nothing usable.
pub fn tensors_entry_name(output: &Path) -> String {
    let stem = output
        .file_stem()
        .and_then(|s| s.to_str())
        .filter(|s| !s.is_empty() && !s.starts_with('.'))
        .unwrap_or("model");
    if stem.ends_with(".safetensors") {
        stem.to_string()
    } else {
        format!("{stem}.safetensors")
    }
}

/// Writes the archive `output` of `tensors` (and the safetensors `metadata`) straight from
/// memory: the archive [`crate::compress_with`] writes for the safetensors file of these
/// tensors that [`safetensors_layout`] describes, stored under [`tensors_entry_name`], with
/// no temporary file and no copy of the tensors. Chunks are encoded on the pool of
/// [`Options::threads`]; [`Options::cancel`] is checked between windows of chunks.
pub fn compress_tensors(
    tensors: &[TensorData<'_>],
    metadata: Option<&BTreeMap<String, String>>,
    output: &Path,
    lossy: &LossyOptions,
    opts: &Options,
) -> Result<CompressReport> {
    let start = Instant::now();
    lossy.check()?;
    let (header, order) = safetensors_layout(tensors, metadata)?;
    let rel = tensors_entry_name(output);
    crate::plan::check_name(&rel, output)?;
    let mut pieces = Vec::with_capacity(order.len() + 1);
    pieces.push(header.as_slice());
    pieces.extend(order.iter().map(|&i| tensors[i].data));
    let total: u64 = pieces.iter().map(|p| p.len() as u64).sum();
    let parsed = crate::plan::header_segments(&header[8..], total);
    let file = crate::plan::planned(rel, output.to_path_buf(), total, Some(parsed));
    let mut files = vec![file];
    let mut warnings = plan_warnings(&files, lossy)?;
    let (_, flags, mut out) = start_archive(&mut files, total, lossy, output, opts)?;
    warnings.extend(files[0].warning.clone());
    let src = Source::pieces(pieces);
    let pool = opts.pool_for(total)?;
    let entry =
        pool.install(|| encode_planned(&files[0], &src, lossy, &mut out, opts, &mut warnings))?;
    let index = Index {
        root: Root::File,
        entries: vec![entry],
    };
    super::finish_archive(&index, &mut out, output, flags)?;
    end_archive(index, out, 1, total, start, warnings, opts)
}
