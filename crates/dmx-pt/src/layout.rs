//! Assembles a [`PtLayout`] from the zip records or the legacy stream, the pickle's
//! storages and the named tensor views.

use std::collections::HashMap;
use std::ops::Range;

use crate::globals::PidStorage;
use crate::names::tensor_paths;
use crate::pickle::Machine;
use crate::value::{Id, Tensor, Value};
use crate::zip::read_zip;
use crate::{
    Dtype, Format, Limits, PtError, PtLayout, Record, RecordKind, Storage, TensorView, Warnings,
};

/// The legacy format's magic number, 0x1950a86a20f9469cfc6c, as little-endian bytes.
const LEGACY_MAGIC: [u8; 10] = [0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19];
/// The legacy format's protocol version.
const LEGACY_PROTOCOL: i64 = 1001;

/// Scans a whole `torch.save` file under `limits`.
pub fn scan_with(file: &[u8], limits: &Limits) -> Result<PtLayout, PtError> {
    let mut warnings = Warnings::default();
    let layout = if file.starts_with(b"PK\x03\x04") {
        scan_zip(file, limits, &mut warnings)?
    } else if file.first() == Some(&0x80) {
        scan_legacy(file, limits, &mut warnings)?
    } else if file.get(257..262) == Some(b"ustar") {
        return Err(PtError::NotTorch(
            "the pre-1.0 tar format is not read".into(),
        ));
    } else {
        return Err(PtError::NotTorch(
            "neither a zip nor a pickle stream".into(),
        ));
    };
    Ok(PtLayout {
        warnings: warnings.into_vec(),
        ..layout
    })
}

fn record_kind(rest: &str) -> RecordKind {
    match rest {
        "data.pkl" => RecordKind::Pickle,
        ".format_version" => RecordKind::FormatVersion,
        ".storage_alignment" => RecordKind::StorageAlignment,
        "byteorder" => RecordKind::ByteOrder,
        "version" => RecordKind::Version,
        ".data/serialization_id" => RecordKind::SerializationId,
        r if r
            .strip_prefix("data/")
            .is_some_and(|k| !k.is_empty() && !k.contains('/')) =>
        {
            RecordKind::Storage
        }
        _ => RecordKind::Other,
    }
}

fn slice<'f>(file: &'f [u8], r: &Range<u64>) -> &'f [u8] {
    &file[r.start as usize..r.end as usize]
}

fn scan_zip(file: &[u8], limits: &Limits, warnings: &mut Warnings) -> Result<PtLayout, PtError> {
    let zip = read_zip(file, limits)?;
    let pkl = zip
        .entries
        .iter()
        .find(|e| e.name.ends_with("/data.pkl") && e.name.matches('/').count() == 1)
        .ok_or_else(|| PtError::NotTorch("zip without <archive>/data.pkl".into()))?;
    let archive = pkl.name[..pkl.name.len() - "/data.pkl".len()].to_owned();
    let prefix = format!("{archive}/");
    let mut records = Vec::with_capacity(zip.entries.len());
    let mut storage_records: HashMap<&str, usize> = HashMap::new();
    let mut big_endian = false;
    for (i, e) in zip.entries.iter().enumerate() {
        let kind = e
            .name
            .strip_prefix(&prefix)
            .map_or(RecordKind::Other, record_kind);
        match kind {
            RecordKind::Storage => {
                storage_records.insert(&e.name[prefix.len() + 5..], i);
            }
            RecordKind::ByteOrder if slice(file, &e.data) == b"big" => {
                big_endian = true;
                warnings.add("the file stores big-endian data");
            }
            RecordKind::Other => {
                warnings.add("zip records other than torch.save's own are kept verbatim")
            }
            _ => {}
        }
        records.push(Record {
            name: e.name.clone(),
            kind,
            header: e.header.clone(),
            data: e.data.clone(),
            descriptor: e.descriptor.clone(),
        });
    }
    if crate::zip::crc32(slice(file, &pkl.data)) != pkl.crc32 {
        return Err(PtError::Zip(format!(
            "{}: CRC-32 mismatch (the pickle is corrupt)",
            pkl.name
        )));
    }
    let mut m = Machine::new(limits, warnings);
    let run = m.run(slice(file, &pkl.data), pkl.data.start)?;
    if run.len as u64 != pkl.data.end - pkl.data.start {
        m.warnings.add("bytes after the pickle's STOP in data.pkl");
    }
    let paths = tensor_paths(&m.values, run.root, limits, m.warnings);
    let mut ranges = Vec::with_capacity(m.storages.list.len());
    for s in &m.storages.list {
        let &i = storage_records.get(s.key.as_str()).ok_or_else(|| {
            PtError::Layout(format!("storage {:?} has no data/{} record", s.key, s.key))
        })?;
        ranges.push(zip.entries[i].data.clone());
    }
    let mut pid = std::mem::take(&mut m.storages.list);
    let named: std::collections::HashSet<String> = pid.iter().map(|s| s.key.clone()).collect();
    let mut keys: Vec<&str> = storage_records.keys().copied().collect();
    keys.sort_unstable();
    for key in keys {
        if !named.contains(key) {
            m.warnings
                .add("a storage record no tensor refers to is kept as opaque bytes");
            let range = zip.entries[storage_records[key]].data.clone();
            pid.push(PidStorage {
                key: key.to_owned(),
                dtype: None,
                untyped: true,
                numel: range.end - range.start,
                location: String::new(),
            });
            ranges.push(range);
        }
    }
    let (storages, tensors) = finish(pid, ranges, paths, m.warnings);
    Ok(PtLayout {
        format: Format::Zip { archive },
        records,
        pickle: pkl.data.clone(),
        storages,
        tensors,
        big_endian,
        warnings: Vec::new(),
    })
}

/// Settles each storage's dtype and element count from its byte length and views, sorts
/// storages into file order and turns the named tensors into views.
fn finish(
    pid: Vec<PidStorage>,
    ranges: Vec<Range<u64>>,
    paths: Vec<(String, Tensor)>,
    warnings: &mut Warnings,
) -> (Vec<Storage>, Vec<TensorView>) {
    let mut view_dtypes: Vec<Option<Option<Dtype>>> = vec![None; pid.len()];
    for (_, t) in &paths {
        let slot = &mut view_dtypes[t.storage];
        match slot {
            None => *slot = Some(Some(t.dtype)),
            Some(Some(d)) if *d != t.dtype => *slot = Some(None),
            _ => {}
        }
    }
    let mut storages: Vec<(usize, Storage)> = Vec::with_capacity(pid.len());
    for (i, (s, range)) in pid.into_iter().zip(ranges).enumerate() {
        let bytes = range.end - range.start;
        let mut dtype = if s.untyped {
            view_dtypes[i].flatten().or(Some(Dtype::U8))
        } else {
            s.dtype
        };
        if let Some(d) = dtype {
            if bytes % d.size() != 0 {
                warnings.add("a storage's length is not a whole number of elements (kept opaque)");
                dtype = None;
            } else if !s.untyped && bytes / d.size() != s.numel {
                warnings.add("a storage's length differs from the element count its pickle gives");
            }
        }
        if s.untyped && matches!(view_dtypes[i], Some(None)) {
            warnings.add("views of one untyped storage disagree on the dtype (stored as U8)");
        }
        let numel = bytes / dtype.map_or(1, Dtype::size);
        storages.push((
            i,
            Storage {
                key: s.key,
                dtype,
                numel,
                range,
                location: s.location,
            },
        ));
    }
    storages.sort_by_key(|(_, s)| s.range.start);
    let mut new_index = vec![0; storages.len()];
    for (pos, (old, _)) in storages.iter().enumerate() {
        new_index[*old] = pos;
    }
    let storages: Vec<Storage> = storages.into_iter().map(|(_, s)| s).collect();
    let mut tensors = Vec::with_capacity(paths.len());
    for (name, t) in paths {
        let view = TensorView {
            name,
            storage: new_index[t.storage],
            dtype: t.dtype,
            offset: t.offset,
            shape: t.shape,
            stride: t.stride,
        };
        let s = &storages[view.storage];
        if crate::view_end(&view).is_none_or(|e| e > s.range.end - s.range.start) {
            warnings.add("a tensor reaching past its storage's bytes was left out");
            continue;
        }
        tensors.push(view);
    }
    (storages, tensors)
}

fn scan_legacy(file: &[u8], limits: &Limits, warnings: &mut Warnings) -> Result<PtLayout, PtError> {
    let mut m = Machine::new(limits, warnings);
    let mut at = 0usize;
    let mut next = |m: &mut Machine| -> Result<(Id, Range<u64>), PtError> {
        let start = at;
        let run = m.run(&file[at..], at as u64)?;
        at += run.len;
        Ok((run.root, start as u64..at as u64))
    };
    let not_torch = |what: &str| PtError::NotTorch(format!("legacy stream: {what}"));
    let (magic, _) = next(&mut m).map_err(|_| not_torch("no magic number pickle"))?;
    if !matches!(m.values.get(magic), Value::BigInt(b) if b[..] == LEGACY_MAGIC) {
        return Err(not_torch("wrong magic number"));
    }
    let (proto, _) = next(&mut m)?;
    if m.values.int(proto) != Some(LEGACY_PROTOCOL) {
        return Err(not_torch("unsupported protocol version"));
    }
    let (sys_info, _) = next(&mut m)?;
    let big_endian = little_endian(&m, sys_info) == Some(false);
    if big_endian {
        m.warnings.add("the file stores big-endian data");
    }
    let (root, pickle) = next(&mut m)?;
    let (keys_id, _) = next(&mut m)?;
    let keys: Vec<String> = m
        .values
        .seq(keys_id)
        .ok_or_else(|| PtError::Layout("legacy storage-key list is not a list".into()))?
        .iter()
        .map(|&k| m.values.text(k).map(str::to_owned))
        .collect::<Option<_>>()
        .ok_or_else(|| PtError::Layout("legacy storage key is not a string".into()))?;
    let paths = tensor_paths(&m.values, root, limits, m.warnings);
    let pid = std::mem::take(&mut m.storages.list);
    let mut ranges: Vec<Option<Range<u64>>> = vec![None; pid.len()];
    let mut pos = at as u64;
    let by_key: HashMap<&str, usize> = pid
        .iter()
        .enumerate()
        .map(|(i, s)| (s.key.as_str(), i))
        .collect();
    for key in &keys {
        let i = *by_key.get(key.as_str()).ok_or_else(|| {
            PtError::Layout(format!("legacy storage key {key:?} is not in the pickle"))
        })?;
        let size = pid[i]
            .dtype
            .ok_or_else(|| PtError::Layout(format!("storage {key:?} has an unmodelled type")))?
            .size();
        let count = file
            .get(pos as usize..pos as usize + 8)
            .map(|b| i64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
            .ok_or_else(|| {
                PtError::Layout(format!("legacy storage {key:?}: truncated element count"))
            })?;
        let start = pos + 8;
        let end = u64::try_from(count)
            .ok()
            .and_then(|c| c.checked_mul(size))
            .and_then(|b| b.checked_add(start))
            .filter(|&e| e <= file.len() as u64)
            .ok_or_else(|| {
                PtError::Layout(format!(
                    "legacy storage {key:?}: {count} elements run past the end"
                ))
            })?;
        if ranges[i].replace(start..end).is_some() {
            return Err(PtError::Layout(format!(
                "legacy storage key {key:?} listed twice"
            )));
        }
        pos = end;
    }
    if pos != file.len() as u64 {
        m.warnings.add("bytes after the last legacy storage");
    }
    let ranges: Vec<Range<u64>> = ranges.into_iter().collect::<Option<_>>().ok_or_else(|| {
        PtError::Layout("a storage in the pickle is missing from the key list".into())
    })?;
    let (storages, tensors) = finish(pid, ranges, paths, m.warnings);
    Ok(PtLayout {
        format: Format::Legacy,
        records: Vec::new(),
        pickle,
        storages,
        tensors,
        big_endian,
        warnings: Vec::new(),
    })
}

fn little_endian(m: &Machine, sys_info: Id) -> Option<bool> {
    let Value::Dict { items, .. } = m.values.get(sys_info) else {
        return None;
    };
    let &(_, v) = items
        .iter()
        .find(|&&(k, _)| m.values.text(k) == Some("little_endian"))?;
    match m.values.get(v) {
        Value::Bool(b) => Some(*b),
        _ => None,
    }
}
