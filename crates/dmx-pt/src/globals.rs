//! The allow-list of globals (equivalent to `torch.load(weights_only=True)`), what calling
//! each of them means for the inert value tree, and persistent ids (storages).

use std::collections::HashMap;

use crate::dtype::Dtype;
use crate::pickle::Machine;
use crate::value::{Global, Id, Tensor, Value};
use crate::{PtError, Warnings};

/// A storage named by a persistent id `('storage', type, key, location, numel)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PidStorage {
    /// The record key (`data/<key>` in a zip, `str(id)` in the legacy format).
    pub key: String,
    /// Element type of the storage class; `U8` for `UntypedStorage`, `None` when the class
    /// is not modelled.
    pub dtype: Option<Dtype>,
    /// Whether the class was `UntypedStorage` (numel counts bytes; views give the dtype).
    pub untyped: bool,
    /// Element count the pickle claims.
    pub numel: u64,
    /// Device tag (`cpu`, `cuda:0`, ...).
    pub location: String,
}

/// The storages the persistent ids named, by first appearance.
#[derive(Debug, Default)]
pub struct Storages {
    /// In order of first appearance.
    pub list: Vec<PidStorage>,
    by_key: HashMap<String, usize>,
}

/// Maps Python 2 names as torch's `_weights_only_unpickler` does.
fn python3_name(module: &str, name: &str) -> (String, String) {
    match (module, name) {
        ("__builtin__", "unicode" | "basestring") => ("builtins".into(), "str".into()),
        ("__builtin__", "long") => ("builtins".into(), "int".into()),
        ("__builtin__", "xrange") => ("builtins".into(), "range".into()),
        ("__builtin__", "reduce") => ("functools".into(), "reduce".into()),
        ("__builtin__", "intern") => ("sys".into(), "intern".into()),
        ("__builtin__", _) => ("builtins".into(), name.into()),
        ("copy_reg", _) => ("copyreg".into(), name.into()),
        ("UserDict" | "UserList" | "UserString", _) => ("collections".into(), name.into()),
        _ => (module.into(), name.into()),
    }
}

const REBUILD_INERT: &[&str] = &[
    "_rebuild_sparse_tensor",
    "_rebuild_meta_tensor_no_storage",
    "_rebuild_wrapper_subclass",
    "_rebuild_device_tensor_from_numpy",
    "_rebuild_nested_tensor",
];

/// Resolves a GLOBAL against the allow-list. Nothing is imported or looked up beyond this
/// table; a name outside it becomes [`Global::Unknown`] with a warning.
pub fn resolve(module: &[u8], name: &[u8], warnings: &mut Warnings) -> Global {
    let (m, n) = (
        String::from_utf8_lossy(module),
        String::from_utf8_lossy(name),
    );
    let (m, n) = python3_name(&m, &n);
    let g = match (m.as_str(), n.as_str()) {
        ("collections", "OrderedDict" | "Counter") => Global::OrderedDict,
        ("builtins", "set" | "frozenset") => Global::Set,
        ("builtins", "bytearray") => Global::ByteArray,
        ("_codecs", "encode") => Global::Encode,
        ("torch", "Size") => Global::Size,
        ("torch._utils", "_rebuild_tensor" | "_rebuild_tensor_v2" | "_rebuild_qtensor") => {
            Global::RebuildTensor
        }
        ("torch._utils", "_rebuild_tensor_v3") => Global::RebuildTensorV3,
        ("torch._utils", "_rebuild_parameter" | "_rebuild_parameter_with_state")
        | ("torch._utils", "_rebuild_device_tensor_from_cpu_tensor")
        | ("torch.nn.parameter", "Parameter") => Global::Passthrough,
        ("torch._tensor", "_rebuild_from_type_v2") => Global::FromType,
        ("torch._utils", f) if REBUILD_INERT.contains(&f) => Global::Allowed(format!("{m}.{n}")),
        ("torch" | "torch.cuda" | "torch.storage", s) if s.ends_with("Storage") => {
            let untyped = s == "UntypedStorage";
            match Dtype::from_storage_name(s) {
                Some(d) => Global::StorageType {
                    dtype: Some(d),
                    untyped,
                },
                None if s == "TypedStorage" => Global::StorageType {
                    dtype: None,
                    untyped,
                },
                None => return unknown(&format!("{m}.{n}"), warnings),
            }
        }
        ("torch", d) if Dtype::from_torch_name(d).is_some() => {
            Global::Dtype(Dtype::from_torch_name(d))
        }
        ("torch", d) if is_other_torch_dtype(d) => Global::Dtype(None),
        ("torch", "device" | "Tensor")
        | ("torch.serialization", "_get_layout")
        | ("builtins", "complex")
        | (
            "torch",
            "per_tensor_affine"
            | "per_tensor_symmetric"
            | "per_channel_affine"
            | "per_channel_symmetric"
            | "per_channel_affine_float_qparams",
        ) => Global::Allowed(format!("{m}.{n}")),
        ("torch" | "torch.cuda" | "torch.sparse" | "torch.cuda.sparse", t)
            if t.ends_with("Tensor") =>
        {
            Global::Allowed(format!("{m}.{n}"))
        }
        _ => return unknown(&format!("{m}.{n}"), warnings),
    };
    if matches!(g, Global::Dtype(None)) {
        warnings.add(&format!(
            "dtype {m}.{n} is not modelled (its tensors stay opaque)"
        ));
    }
    g
}

fn is_other_torch_dtype(d: &str) -> bool {
    d.starts_with("bits")
        || d.starts_with("float8_")
        || d.starts_with("float4_")
        || d == "bcomplex32"
        || ((d.starts_with("uint") || d.starts_with("int"))
            && d.len() == d.trim_end_matches(char::is_numeric).len() + 1)
}

/// An unknown global: recorded by name, never resolved; one warning per name.
pub fn unknown(full: &str, warnings: &mut Warnings) -> Global {
    warnings.add(&format!(
        "global {full} is not allow-listed (kept inert, never executed)"
    ));
    Global::Unknown(full.to_owned())
}

/// Calls `func(*args)` inertly: allow-listed constructors give plain values, tensor rebuild
/// functions give tensors, anything else an inert [`Value::Object`]. `depth` bounds
/// `_rebuild_from_type_v2` recursion.
pub fn call(m: &mut Machine, func: Id, args: Id, depth: u32) -> Result<Id, PtError> {
    let global = match m.values.get(func) {
        Value::Global(g) => Some(g.clone()),
        _ => None,
    };
    let argv: Vec<Id> = m.values.seq(args).map(<[Id]>::to_vec).unwrap_or_default();
    let value = match global {
        Some(Global::OrderedDict) => Some(dict_from(m, argv.first().copied())?),
        Some(Global::Set) => {
            let items = argv
                .first()
                .and_then(|&a| set_items(m, a))
                .unwrap_or_default();
            m.charge(items.len() as u64 * 4)?;
            Some(Value::Set(items))
        }
        Some(Global::ByteArray) => match argv.first().map(|&a| m.values.get(a)) {
            None => Some(Value::Bytes(Vec::new())),
            Some(Value::Bytes(b)) => {
                let b = b.clone();
                m.charge(b.len() as u64)?;
                Some(Value::Bytes(b))
            }
            _ => None,
        },
        Some(Global::Encode) => encode(m, &argv)?,
        Some(Global::Size) => argv
            .first()
            .and_then(|&a| m.values.seq(a))
            .map(|s| Value::Tuple(s.to_vec())),
        Some(Global::RebuildTensor) => tensor(m, &argv, None),
        Some(Global::RebuildTensorV3) => {
            let dtype = argv.get(6).and_then(|&d| match m.values.get(d) {
                Value::Global(Global::Dtype(d)) => *d,
                _ => None,
            });
            dtype.and_then(|d| tensor(m, &argv, Some(d)))
        }
        Some(Global::Passthrough) => {
            if let Some(&first) = argv.first() {
                return Ok(first);
            }
            None
        }
        Some(Global::FromType) if depth < 4 && argv.len() >= 3 => {
            return call(m, argv[0], argv[2], depth + 1);
        }
        Some(Global::Unknown(name)) => {
            m.warnings
                .add(&format!("call of {name} kept inert (never executed)"));
            None
        }
        Some(_) => None,
        None => {
            m.warnings
                .add("call of something that is not a global kept inert");
            None
        }
    };
    let value = value.unwrap_or(Value::Object {
        class: func,
        args,
        state: None,
        items: Vec::new(),
        pairs: Vec::new(),
    });
    m.charge(argv.len() as u64 * 4)?;
    m.push_value(value)
}

fn dict_from(m: &mut Machine, arg: Option<Id>) -> Result<Value, PtError> {
    let mut items = Vec::new();
    if let Some(a) = arg {
        match m.values.get(a) {
            Value::Dict { items: v, .. } => items.clone_from(v),
            Value::List(v) | Value::Tuple(v) => {
                for &p in v {
                    if let Some(&[k, val]) = m.values.seq(p) {
                        items.push((k, val));
                    }
                }
            }
            _ => {}
        }
    }
    m.charge(items.len() as u64 * 8)?;
    Ok(Value::Dict { items, attrs: None })
}

fn set_items(m: &Machine, a: Id) -> Option<Vec<Id>> {
    match m.values.get(a) {
        Value::List(v) | Value::Tuple(v) | Value::Set(v) => Some(v.clone()),
        _ => None,
    }
}

/// `_codecs.encode(text, 'latin1' | 'utf-8')` → bytes.
fn encode(m: &mut Machine, argv: &[Id]) -> Result<Option<Value>, PtError> {
    let (Some(&s), Some(&e)) = (argv.first(), argv.get(1)) else {
        return Ok(None);
    };
    let (Some(text), Some(enc)) = (m.values.text(s), m.values.text(e)) else {
        return Ok(None);
    };
    let bytes = match enc {
        "latin1" | "latin-1" | "iso-8859-1" => {
            let b: Option<Vec<u8>> = text
                .chars()
                .map(|c| u8::try_from(u32::from(c)).ok())
                .collect();
            b
        }
        "utf-8" | "utf8" => Some(text.as_bytes().to_vec()),
        _ => None,
    };
    if let Some(b) = &bytes {
        m.charge(b.len() as u64)?;
    }
    Ok(bytes.map(Value::Bytes))
}

fn dims(m: &Machine, id: Id) -> Option<Vec<u64>> {
    let s = m.values.seq(id)?;
    if s.len() > 64 {
        return None;
    }
    s.iter()
        .map(|&d| m.values.int(d).and_then(|v| u64::try_from(v).ok()))
        .collect()
}

/// `(storage, offset, size, stride, ...)` → a tensor view, or `None` (inert, with a warning)
/// when the arguments do not describe a view inside its storage.
fn tensor(m: &mut Machine, argv: &[Id], dtype: Option<Dtype>) -> Option<Value> {
    let t = (|| {
        let (storage, base) = match m.values.get(*argv.first()?) {
            Value::Storage(s, b) => (*s, *b),
            _ => return None,
        };
        let offset = u64::try_from(m.values.int(*argv.get(1)?)?).ok()?;
        let shape = dims(m, *argv.get(2)?)?;
        let stride = dims(m, *argv.get(3)?)?;
        let st = &m.storages.list[storage];
        let dtype = dtype.or(st.dtype)?;
        if shape.len() != stride.len() {
            return None;
        }
        let st_bytes = st.numel.checked_mul(st.dtype?.size())?;
        let base_bytes = base.checked_mul(st.dtype?.size())?;
        let offset_bytes = offset.checked_mul(dtype.size())?.checked_add(base_bytes)?;
        if base_bytes % dtype.size() != 0 {
            return None;
        }
        if !shape.contains(&0) {
            let mut last = 0u64;
            for (&n, &s) in shape.iter().zip(&stride) {
                last = last.checked_add((n - 1).checked_mul(s)?)?;
            }
            let end = offset_bytes.checked_add(last.checked_add(1)?.checked_mul(dtype.size())?)?;
            if end > st_bytes {
                return None;
            }
        }
        Some(Tensor {
            storage,
            dtype,
            offset: offset_bytes / dtype.size(),
            shape,
            stride,
        })
    })();
    if t.is_none() {
        m.warnings
            .add("a tensor whose arguments do not fit its storage was kept inert");
    }
    t.map(Value::Tensor)
}

/// BINPERSID: `('storage', type, key, location, numel[, view])` names a storage; any other
/// persistent id becomes opaque, with a warning.
pub fn persistent(m: &mut Machine, pid: Id) -> Result<Id, PtError> {
    let v = match storage_ref(m, pid) {
        Some((idx, base)) => Value::Storage(idx, base),
        None => {
            m.warnings
                .add("a persistent id that is not a storage was kept opaque");
            Value::Opaque("persistent id")
        }
    };
    m.push_value(v)
}

fn storage_ref(m: &mut Machine, pid: Id) -> Option<(usize, u64)> {
    let t = m.values.seq(pid)?.to_vec();
    if t.len() < 5 || m.values.text(t[0])? != "storage" {
        return None;
    }
    let (dtype, untyped) = match m.values.get(t[1]) {
        Value::Global(Global::StorageType { dtype, untyped }) => (*dtype, *untyped),
        _ => return None,
    };
    let key = match m.values.get(t[2]) {
        Value::Int(i) => i.to_string(),
        _ => m.values.text(t[2])?.to_owned(),
    };
    let location = m.values.text(t[3]).unwrap_or("").to_owned();
    let numel = u64::try_from(m.values.int(t[4])?).ok()?;
    let mut base = 0;
    if let Some(&view) = t.get(5)
        && let Some(v) = m.values.seq(view)
    {
        base = u64::try_from(m.values.int(*v.get(1)?)?).ok()?;
    }
    if let Some(&idx) = m.storages.by_key.get(&key) {
        return Some((idx, base));
    }
    if m.storages.list.len() >= m.limits().max_storages {
        return None;
    }
    m.storages.by_key.insert(key.clone(), m.storages.list.len());
    m.storages.list.push(PidStorage {
        key,
        dtype,
        untyped,
        numel,
        location,
    });
    Some((m.storages.list.len() - 1, base))
}
