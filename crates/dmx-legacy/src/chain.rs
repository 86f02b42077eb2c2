//! Chain manifests (`chain_manifest.json`, version 2) written by the old `chain-compress`.

use serde_json::Value;

use crate::Limits;
use crate::error::{Error, Result, malformed};
use crate::json::{self, Obj};

/// One checkpoint of a chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainEntry {
    /// Its index in the chain.
    pub index: u64,
    /// True for a delta (decoded against its anchor), false for an anchor.
    pub is_delta: bool,
    /// The source file's name (the restored file is its stem + ".safetensors").
    pub source: String,
    /// The compressed file, relative to the manifest's folder (checked to stay inside it).
    pub path: String,
    /// The anchor a delta is decoded against.
    pub anchor: u64,
}

/// A parsed chain manifest.
#[derive(Debug, Clone)]
pub struct ChainManifest {
    /// The precision of its deltas.
    pub precision: String,
    /// Its checkpoints, in index order.
    pub entries: Vec<ChainEntry>,
    /// The whole manifest.
    pub raw: Obj,
}

/// Whether `p` is a plain relative path that stays inside its folder.
fn inside(p: &str) -> bool {
    let path = std::path::Path::new(p);
    !p.is_empty()
        && !p.contains('\0')
        && path
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)))
}

impl ChainManifest {
    /// Parses a chain manifest; every entry's file must be a relative path inside the
    /// manifest's folder, and every delta's anchor an anchor entry.
    pub fn parse(bytes: &[u8], limits: &Limits) -> Result<ChainManifest> {
        let raw = json::parse_object(bytes, "chain manifest", limits)?;
        if json::opt_str(&raw, "format", "chain manifest")? != Some("dmx_chain_manifest") {
            return Err(Error::NotLegacy);
        }
        let version = json::opt_u64(&raw, "version", "chain manifest")?.unwrap_or(0);
        if version > 2 {
            return Err(Error::Version {
                what: "chain manifest",
                version,
            });
        }
        let precision = json::opt_str(&raw, "precision", "chain manifest")?
            .unwrap_or("int16")
            .to_string();
        let Some(Value::Array(items)) = raw.get("entries") else {
            return Err(malformed("chain manifest has no \"entries\" list"));
        };
        if items.len() as u64 > limits.max_tensors {
            return Err(Error::Limit(format!("{} chain entries", items.len())));
        }
        let mut entries = Vec::with_capacity(items.len());
        for (i, e) in items.iter().enumerate() {
            let ctx = format!("chain entry {i}");
            let Value::Object(e) = e else {
                return Err(malformed(format!("{ctx} is not an object")));
            };
            let is_delta = match json::str_field(e, "type", &ctx)? {
                "anchor" => false,
                "delta" => true,
                t => return Err(malformed(format!("{ctx}: unknown type {t:?}"))),
            };
            let path = json::str_field(e, "compressed_path", &ctx)?.to_string();
            if !inside(&path) {
                return Err(malformed(format!(
                    "{ctx}: path {path:?} leaves the chain folder"
                )));
            }
            let index = json::u64_field(e, "index", &ctx)?;
            let anchor = if is_delta {
                json::u64_field(e, "anchor_index", &ctx)?
            } else {
                index
            };
            let source = json::str_field(e, "source", &ctx)?.to_string();
            entries.push(ChainEntry {
                index,
                is_delta,
                source,
                path,
                anchor,
            });
        }
        entries.sort_by_key(|e| e.index);
        if entries.windows(2).any(|w| w[0].index == w[1].index) {
            return Err(malformed("chain manifest lists an index twice"));
        }
        for e in entries.iter().filter(|e| e.is_delta) {
            let ok = entries.iter().any(|a| a.index == e.anchor && !a.is_delta);
            if !ok {
                return Err(malformed(format!(
                    "chain entry {}: anchor {} is not an anchor",
                    e.index, e.anchor
                )));
            }
        }
        Ok(ChainManifest {
            precision,
            entries,
            raw,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_escaping_paths() {
        let l = Limits::default();
        let m = |p: &str| {
            format!(
                r#"{{"format":"dmx_chain_manifest","version":2,"entries":[{{"index":0,"type":"anchor","source":"a.safetensors","compressed_path":"{p}"}}]}}"#
            )
        };
        assert!(ChainManifest::parse(m("a.dmx").as_bytes(), &l).is_ok());
        for bad in ["../a.dmx", "/etc/passwd", "", "x/../../a"] {
            assert!(
                ChainManifest::parse(m(bad).as_bytes(), &l).is_err(),
                "{bad}"
            );
        }
    }
}
