//! The `.dmx` containers: v2 ("DMX1" | u32 version | u32 manifest length | manifest JSON |
//! chunks at absolute offsets) and v3 (the same behind a "DMX\0" provenance envelope).

use serde_json::Value;

use crate::entropy::{self, Coder};
use crate::error::{Error, Result, malformed};
use crate::json::{self, Obj};
use crate::{Limits, MAGIC_DMX1, MAGIC_ENVELOPE, Tensor, bfp, convert, torch_dtype};

/// A parsed `.dmx` file of the old tool; tensors are decoded on demand.
#[derive(Debug)]
pub struct Container<'a> {
    bytes: &'a [u8],
    /// Inner container version (2 for 0.4, 3 for 1.2+; the reader takes 0..=3).
    pub version: u32,
    /// The provenance envelope's JSON, for v3 files.
    pub provenance: Option<Obj>,
    /// The inner manifest's top-level fields other than `tensors`.
    pub manifest: Obj,
    /// The tensors, in the sorted-name order the old tool decodes and writes them.
    pub tensors: Vec<TensorMeta>,
    limits: Limits,
}

/// One tensor's manifest entry.
#[derive(Debug, Clone)]
pub struct TensorMeta {
    /// Its name.
    pub name: String,
    /// Encoding id (0-5 zstd family, 10-15 FLAC family, 16 transpose).
    pub encoding: u64,
    /// Its shape.
    pub shape: Vec<u64>,
    /// Chunk offset from the start of the file.
    pub offset: usize,
    /// Chunk length.
    pub size: usize,
    meta: Obj,
}

impl TensorMeta {
    /// Whether the old tool's encoding of this tensor changed its values.
    pub fn is_lossy(&self) -> bool {
        let original = self.meta.get("original_dtype").and_then(Value::as_str);
        match self.encoding % 10 {
            _ if self.encoding == 16 => false,
            1 | 4 | 5 => true,
            0 => original == Some("float32"),
            _ => false,
        }
    }
}

fn u32_at(bytes: &[u8], at: usize, what: &str) -> Result<u32> {
    let b = bytes
        .get(at..at.saturating_add(4))
        .ok_or_else(|| Error::Truncated(format!("{what} at byte {at}")))?;
    Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

fn slice<'b>(bytes: &'b [u8], at: usize, len: usize, what: &str) -> Result<&'b [u8]> {
    at.checked_add(len)
        .and_then(|end| bytes.get(at..end))
        .ok_or_else(|| {
            Error::Truncated(format!(
                "{what}: {len} bytes at {at}, file has {}",
                bytes.len()
            ))
        })
}

/// Reads the "DMX\0" envelope at the start of `bytes`: its JSON and the offset after it.
pub(crate) fn envelope(bytes: &[u8], limits: &Limits) -> Result<(Obj, usize)> {
    if bytes.get(..4) != Some(MAGIC_ENVELOPE) {
        return Err(Error::NotLegacy);
    }
    let len = u32_at(bytes, 4, "provenance length")? as usize;
    if len as u64 > limits.max_manifest_bytes {
        return Err(Error::Limit(format!("provenance of {len} bytes")));
    }
    let prov = json::parse_object(slice(bytes, 8, len, "provenance")?, "provenance", limits)?;
    Ok((prov, 8 + len))
}

impl<'a> Container<'a> {
    /// Parses the headers and manifest of a v2 or v3 `.dmx` file held in `bytes`.
    pub fn parse(bytes: &'a [u8], limits: &Limits) -> Result<Container<'a>> {
        let (provenance, start) = match bytes.get(..4) {
            Some(m) if m == MAGIC_ENVELOPE => {
                let (p, at) = envelope(bytes, limits)?;
                (Some(p), at)
            }
            _ => (None, 0),
        };
        if bytes.get(start..start.saturating_add(4)) != Some(MAGIC_DMX1) {
            return Err(if start == 0 {
                Error::NotLegacy
            } else {
                malformed("no DMX1 container after the provenance envelope")
            });
        }
        let version = u32_at(bytes, start + 4, "container version")?;
        if version > 3 {
            return Err(Error::Version {
                what: "container",
                version: version.into(),
            });
        }
        let mlen = u32_at(bytes, start + 8, "manifest length")? as usize;
        if mlen as u64 > limits.max_manifest_bytes {
            return Err(Error::Limit(format!("manifest of {mlen} bytes")));
        }
        let mut manifest = json::parse_object(
            slice(bytes, start + 12, mlen, "manifest")?,
            "manifest",
            limits,
        )?;
        let Some(Value::Object(entries)) = manifest.remove("tensors") else {
            return Err(malformed("manifest has no \"tensors\" object"));
        };
        if entries.len() as u64 > limits.max_tensors {
            return Err(Error::Limit(format!("{} tensors", entries.len())));
        }
        let mut tensors = Vec::with_capacity(entries.len());
        for (name, meta) in entries {
            let Value::Object(meta) = meta else {
                return Err(malformed(format!(
                    "tensor {name:?}: entry is not an object"
                )));
            };
            tensors.push(tensor_meta(bytes, name, meta, limits)?);
        }
        tensors.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Container {
            bytes,
            version,
            provenance,
            manifest,
            tensors,
            limits: *limits,
        })
    }

    /// The resolved mode recorded in the manifest (bfp, int16, int32, transpose, ...).
    pub fn mode(&self) -> Option<&str> {
        self.manifest.get("mode").and_then(Value::as_str)
    }

    /// Whether any tensor's values were changed by the old tool's encoding.
    pub fn is_lossy(&self) -> bool {
        self.tensors.iter().any(TensorMeta::is_lossy)
    }

    /// A one-line description: "written by dmx-compress, format v3, mode bfp — lossy".
    pub fn summary(&self) -> String {
        format!(
            "written by dmx-compress, format v{}, mode {} — {}",
            self.version,
            self.mode().unwrap_or("unknown"),
            if self.is_lossy() { "lossy" } else { "lossless" }
        )
    }

    /// Decodes every tensor, in sorted-name order.
    pub fn decode_all(&self) -> Result<Vec<Tensor>> {
        self.tensors.iter().map(|t| self.decode(t)).collect()
    }

    /// Decodes one tensor exactly as the old tool's `decompress` does.
    pub fn decode(&self, t: &TensorMeta) -> Result<Tensor> {
        let chunk = slice(self.bytes, t.offset, t.size, &t.name)?;
        crate::container::decode_chunk(t, chunk, self.version >= 3, &self.limits)
    }
}

fn tensor_meta(bytes: &[u8], name: String, meta: Obj, limits: &Limits) -> Result<TensorMeta> {
    let ctx = format!("tensor {name:?}");
    let encoding = json::u64_field(&meta, "encoding", &ctx)?;
    let shape = json::shape_field(&meta, &ctx, limits)?;
    let offset = usize::try_from(json::u64_field(&meta, "offset", &ctx)?)
        .map_err(|_| malformed(format!("{ctx}: offset")))?;
    let size = usize::try_from(json::u64_field(&meta, "compressed_size", &ctx)?)
        .map_err(|_| malformed(format!("{ctx}: size")))?;
    slice(bytes, offset, size, &ctx)?;
    Ok(TensorMeta {
        name,
        encoding,
        shape,
        offset,
        size,
        meta,
    })
}

/// Decodes one chunk; `v3` selects 1.2+ semantics (native BF16 BFP, per-tensor codec ids).
pub(crate) fn decode_chunk(
    t: &TensorMeta,
    chunk: &[u8],
    v3: bool,
    limits: &Limits,
) -> Result<Tensor> {
    let ctx = format!("tensor {:?}", t.name);
    let m = &t.meta;
    let dtype = json::str_field(m, "dtype", &ctx)?;
    let dtype_str = json::opt_str(m, "original_dtype", &ctx)?.unwrap_or(dtype);
    let (data, out_dtype) = match t.encoding {
        16 => transpose(t, chunk, m, &ctx, limits)?,
        4 | 14 => bfp_chunk(t, chunk, dtype_str, v3, limits)?,
        0..=5 | 10..=15 => {
            let raw = single_stream(t, chunk, v3, limits)?;
            crate::container::finish(t, &raw, dtype, dtype_str, &ctx, limits)?
        }
        e => return Err(Error::Unsupported(format!("{ctx}: encoding {e}"))),
    };
    Ok(Tensor {
        name: t.name.clone(),
        dtype: out_dtype,
        shape: t.shape.clone(),
        data,
    })
}

/// The decoded bytes of a single-stream chunk (FP16, INT16Q, INT32Q, DELTA, RAW).
fn single_stream(t: &TensorMeta, chunk: &[u8], v3: bool, limits: &Limits) -> Result<Vec<u8>> {
    let ctx = format!("tensor {:?}", t.name);
    let cap = limits.max_tensor_bytes;
    let codec = if v3 {
        json::opt_str(&t.meta, "entropy_codec", &ctx)?
    } else {
        None
    };
    let raw_size = json::opt_u64(&t.meta, "lpc_raw_orig_len", &ctx)?
        .map_or_else(|| json::u64_field(&t.meta, "raw_size", &ctx), Ok)?;
    let mut raw = match codec {
        Some(id) => entropy::decode(Coder::from_id(id)?, chunk, cap, &t.name)?,
        None if t.encoding >= 10 => entropy::decode(Coder::Flac, chunk, cap, &t.name)?,
        None => return entropy::decode(Coder::Zstd, chunk, cap, &t.name),
    };
    raw.truncate(usize::try_from(raw_size).unwrap_or(usize::MAX));
    Ok(raw)
}

fn item_count(raw: &[u8], item: usize, t: &TensorMeta, limits: &Limits) -> Result<usize> {
    let n = crate::checked_numel(&t.shape, item, limits)?;
    if raw.len() != n * item {
        return Err(malformed(format!(
            "tensor {:?}: {} decoded bytes for shape {:?} of {item}-byte elements",
            t.name,
            raw.len(),
            t.shape
        )));
    }
    Ok(n)
}

/// Turns the decoded stream of a single-stream encoding into the old tool's output tensor.
fn finish(
    t: &TensorMeta,
    raw: &[u8],
    dtype: &str,
    dtype_str: &str,
    ctx: &str,
    limits: &Limits,
) -> Result<(Vec<u8>, &'static str)> {
    match t.encoding % 10 {
        0 => {
            item_count(raw, 2, t, limits)?;
            if dtype_str == "float32" {
                let v: Vec<f32> = convert::u16s(raw).map(convert::f16_to_f32).collect();
                Ok((convert::f32s_to(&v, "F32"), "F32"))
            } else {
                Ok((raw.to_vec(), "F16"))
            }
        }
        1 | 5 => {
            let scale = json::opt_f64(&t.meta, "scale", ctx)?
                .ok_or_else(|| malformed(format!("{ctx}: missing field \"scale\"")))?;
            let out = if dtype_str == "float16" { "F16" } else { "F32" };
            let v: Vec<f32> = if t.encoding % 10 == 1 {
                item_count(raw, 2, t, limits)?;
                let step = (scale / 32767.0) as f32;
                raw.chunks_exact(2)
                    .map(|c| f32::from(i16::from_le_bytes([c[0], c[1]])) * step)
                    .collect()
            } else {
                item_count(raw, 4, t, limits)?;
                let step = scale / 2_147_483_647.0;
                raw.chunks_exact(4)
                    .map(|c| {
                        (f64::from(i32::from_le_bytes([c[0], c[1], c[2], c[3]])) * step) as f32
                    })
                    .collect()
            };
            Ok((convert::f32s_to(&v, out), out))
        }
        2 => {
            item_count(raw, 2, t, limits)?;
            let mut acc = 0u16;
            let data = convert::u16s(raw)
                .flat_map(|d| {
                    acc = acc.wrapping_add(d);
                    acc.to_le_bytes()
                })
                .collect();
            let out = match dtype {
                "float16" => "F16",
                "bfloat16" => "BF16",
                _ => "I16",
            };
            Ok((data, out))
        }
        3 => {
            let (out, item) = torch_dtype(dtype)
                .filter(|(d, _)| *d != "BF16")
                .ok_or_else(|| Error::Unsupported(format!("{ctx}: dtype {dtype:?} for RAW")))?;
            item_count(raw, item, t, limits)?;
            Ok((raw.to_vec(), out))
        }
        _ => Err(Error::Unsupported(format!(
            "{ctx}: encoding {}",
            t.encoding
        ))),
    }
}

/// BFP: u32 exponent-stream length | zstd exponent stream | sign+mantissa stream.
fn bfp_chunk(
    t: &TensorMeta,
    chunk: &[u8],
    dtype_str: &str,
    v3: bool,
    limits: &Limits,
) -> Result<(Vec<u8>, &'static str)> {
    let ctx = format!("tensor {:?}", t.name);
    let m = &t.meta;
    let cap = limits.max_tensor_bytes;
    let exp_len = u32_at(chunk, 0, &ctx)? as usize;
    let exp_z = chunk
        .get(4..4usize.saturating_add(exp_len).min(chunk.len()))
        .unwrap_or(&[]);
    let mant_z = chunk.get(4usize.saturating_add(exp_len)..).unwrap_or(&[]);
    let exp_cap = json::opt_u64(m, "bfp_exp_size", &ctx)?
        .unwrap_or(cap)
        .min(cap);
    let exp = entropy::decode(Coder::Zstd, exp_z, exp_cap, &t.name)?;
    let mant_codec = if v3 {
        json::opt_str(m, "bfp_mant_codec", &ctx)?
    } else {
        None
    };
    let mant_orig = json::opt_u64(m, "bfp_mant_orig_len", &ctx)?;
    let flac_len = || {
        mant_orig.ok_or_else(|| {
            malformed(format!(
                "{ctx}: FLAC mantissa stream without \"bfp_mant_orig_len\""
            ))
        })
    };
    let mant = match mant_codec.map(Coder::from_id).transpose()? {
        Some(Coder::Flac) => flac_bytes(mant_z, flac_len()?, cap, &t.name)?,
        Some(c) => entropy::decode(c, mant_z, cap, &t.name)?,
        None if t.encoding == 14 => flac_bytes(mant_z, flac_len()?, cap, &t.name)?,
        None => entropy::decode(Coder::Zstd, mant_z, cap, &t.name)?,
    };
    let group = json::opt_u64(m, "bfp_group_size", &ctx)?.unwrap_or(32);
    let bits = json::opt_u64(m, "bfp_mantissa_bits", &ctx)?.unwrap_or(6);
    if !(1..=7).contains(&bits) {
        return Err(Error::Unsupported(format!(
            "{ctx}: {bits} BFP mantissa bits"
        )));
    }
    let group = usize::try_from(group)
        .ok()
        .filter(|&g| g > 0 && exp.len().checked_mul(g) == Some(mant.len()));
    let Some(group) = group else {
        return Err(malformed(format!(
            "{ctx}: BFP streams of {} exponents and {} values do not match the group size",
            exp.len(),
            mant.len()
        )));
    };
    let orig = json::u64_field(m, "bfp_orig_len", &ctx)?;
    let n = crate::checked_numel(&t.shape, 2, limits)?;
    if (orig.min(mant.len() as u64)) != n as u64 {
        return Err(malformed(format!(
            "{ctx}: BFP holds {orig} values for shape {:?}",
            t.shape
        )));
    }
    let native_bf16 = v3 && dtype_str == "bfloat16";
    let mut bits16 = bfp::decode(&exp, &mant, group, bits as u32, native_bf16);
    bits16.truncate(n);
    if native_bf16 {
        return Ok((
            bits16.iter().flat_map(|b| b.to_le_bytes()).collect(),
            "BF16",
        ));
    }
    let out = match dtype_str {
        "float32" => "F32",
        "bfloat16" => "BF16",
        _ => {
            return Ok((bits16.iter().flat_map(|b| b.to_le_bytes()).collect(), "F16"));
        }
    };
    let v: Vec<f32> = bits16.into_iter().map(convert::f16_to_f32).collect();
    Ok((convert::f32s_to(&v, out), out))
}

/// A uint8 stream packed two bytes per int16 FLAC sample, cut to its original length.
fn flac_bytes(data: &[u8], orig: u64, cap: u64, name: &str) -> Result<Vec<u8>> {
    let mut raw = entropy::decode(Coder::Flac, data, cap, name)?;
    raw.truncate(usize::try_from(orig).unwrap_or(usize::MAX));
    Ok(raw)
}

/// TRANSPOSE: u8 planes | planes × u32 sizes | zstd frame per plane (least significant
/// byte first).
fn transpose(
    t: &TensorMeta,
    chunk: &[u8],
    m: &Obj,
    ctx: &str,
    limits: &Limits,
) -> Result<(Vec<u8>, &'static str)> {
    let dtype_of = |s: &str| match s {
        "float32" => Ok(("F32", 4)),
        "float16" => Ok(("F16", 2)),
        "bfloat16" => Ok(("BF16", 2)),
        other => Err(Error::Unsupported(format!(
            "{ctx}: dtype {other:?} for transpose"
        ))),
    };
    if t.size == 0 {
        let (d, item) = dtype_of(json::opt_str(m, "original_dtype", ctx)?.unwrap_or("float32"))?;
        if crate::checked_numel(&t.shape, item, limits)? != 0 {
            return Err(malformed(format!(
                "{ctx}: empty chunk for a non-empty tensor"
            )));
        }
        return Ok((Vec::new(), d));
    }
    let name = json::opt_str(m, "original_dtype", ctx)?
        .or(json::opt_str(m, "dtype", ctx)?)
        .unwrap_or("float32");
    let (d, item) = dtype_of(name)?;
    let n = crate::checked_numel(&t.shape, item, limits)?;
    let planes = usize::from(
        *chunk
            .first()
            .ok_or_else(|| Error::Truncated(ctx.to_string()))?,
    );
    if planes != item {
        return Err(malformed(format!(
            "{ctx}: {planes} byte planes for {item}-byte values"
        )));
    }
    let mut at = 1 + 4 * planes;
    let mut out = vec![0u8; n * item];
    for p in 0..planes {
        let size = u32_at(chunk, 1 + 4 * p, ctx)? as usize;
        let z = slice(chunk, at, size, ctx)?;
        at += size;
        let plane = entropy::decode(Coder::Zstd, z, n as u64, &t.name)?;
        if plane.len() != n {
            return Err(malformed(format!(
                "{ctx}: byte plane {p} holds {} of {n} values",
                plane.len()
            )));
        }
        for (i, b) in plane.into_iter().enumerate() {
            out[i * item + p] = b;
        }
    }
    Ok((out, d))
}
