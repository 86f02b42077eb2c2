//! Typed access to the fields of the old tool's JSON manifests.

use serde_json::{Map, Value};

use crate::Limits;
use crate::error::{Error, Result, malformed};

/// A JSON object.
pub(crate) type Obj = Map<String, Value>;

/// Parses `bytes` as a JSON object, after checking its size against the limits.
pub(crate) fn parse_object(bytes: &[u8], what: &str, limits: &Limits) -> Result<Obj> {
    if bytes.len() as u64 > limits.max_manifest_bytes {
        return Err(Error::Limit(format!(
            "{what} of {} bytes (at most {})",
            bytes.len(),
            limits.max_manifest_bytes
        )));
    }
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(o)) => Ok(o),
        Ok(_) => Err(malformed(format!("{what} is not a JSON object"))),
        Err(e) => Err(malformed(format!("{what} is not valid JSON: {e}"))),
    }
}

/// A required non-negative integer field.
pub(crate) fn u64_field(o: &Obj, key: &str, ctx: &str) -> Result<u64> {
    opt_u64(o, key, ctx)?.ok_or_else(|| malformed(format!("{ctx}: missing field {key:?}")))
}

/// An optional non-negative integer field (a wrong type is an error).
pub(crate) fn opt_u64(o: &Obj, key: &str, ctx: &str) -> Result<Option<u64>> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v.as_u64().map(Some).ok_or_else(|| {
            malformed(format!(
                "{ctx}: field {key:?} is not a non-negative integer"
            ))
        }),
    }
}

/// An optional number field.
pub(crate) fn opt_f64(o: &Obj, key: &str, ctx: &str) -> Result<Option<f64>> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_f64()
            .map(Some)
            .ok_or_else(|| malformed(format!("{ctx}: field {key:?} is not a number"))),
    }
}

/// An optional string field.
pub(crate) fn opt_str<'a>(o: &'a Obj, key: &str, ctx: &str) -> Result<Option<&'a str>> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(malformed(format!("{ctx}: field {key:?} is not a string"))),
    }
}

/// A required string field.
pub(crate) fn str_field<'a>(o: &'a Obj, key: &str, ctx: &str) -> Result<&'a str> {
    opt_str(o, key, ctx)?.ok_or_else(|| malformed(format!("{ctx}: missing field {key:?}")))
}

/// A required shape: a list of non-negative integers, at most `limits.max_ndim` long.
pub(crate) fn shape_field(o: &Obj, ctx: &str, limits: &Limits) -> Result<Vec<u64>> {
    let Some(Value::Array(items)) = o.get("shape") else {
        return Err(malformed(format!("{ctx}: missing or invalid \"shape\"")));
    };
    if items.len() > limits.max_ndim {
        return Err(Error::Limit(format!("{ctx}: {} dimensions", items.len())));
    }
    items
        .iter()
        .map(|d| {
            d.as_u64()
                .ok_or_else(|| malformed(format!("{ctx}: shape holds {d}")))
        })
        .collect()
}
