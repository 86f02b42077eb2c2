//! The old tool's deltas: lossy quantized "DMXD" files and lossless "DMXL"-record files.

use serde_json::Value;

use crate::container::envelope;
use crate::entropy::{self, Coder};
use crate::error::{Error, Result, malformed};
use crate::json::{self, Obj};
use crate::{Limits, MAGIC_DMXD, MAGIC_DMXL, MAGIC_ENVELOPE, Tensor, convert};

/// Which delta format a [`DeltaFile`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeltaKind {
    /// "DMXD": quantized deltas (int16 or int32 steps), lossy.
    Lossy,
    /// "DMXL" records behind a provenance envelope: wrapping bit-pattern deltas, lossless.
    Lossless,
}

/// A base tensor handed to [`DeltaFile::reconstruct`]: what `safetensors.load_file` of the
/// base gives the old tool.
#[derive(Debug, Clone, Copy)]
pub struct BaseTensor<'b> {
    /// Its safetensors dtype ("F32", "BF16", ...).
    pub dtype: &'b str,
    /// Its shape.
    pub shape: &'b [u64],
    /// Its little-endian bytes.
    pub data: &'b [u8],
}

/// One tensor's delta record.
#[derive(Debug, Clone)]
struct Record<'a> {
    name: String,
    shape: Vec<u64>,
    /// DMXD: the base dtype name from the manifest; DMXL: "float16", "bfloat16" or "float32".
    dtype: String,
    precision32: bool,
    scale: f64,
    coder: Coder,
    /// DMXD: the coded delta; DMXL: the coded byte planes.
    planes: Vec<&'a [u8]>,
}

/// A parsed old-tool delta.
#[derive(Debug)]
pub struct DeltaFile<'a> {
    /// Lossy or lossless.
    pub kind: DeltaKind,
    /// DMXD: the manifest (without `tensors`); DMXL: the provenance envelope.
    pub manifest: Obj,
    records: Vec<Record<'a>>,
    limits: Limits,
}

fn u32_at(b: &[u8], at: usize, what: &str) -> Result<u32> {
    let s = b
        .get(at..at.saturating_add(4))
        .ok_or_else(|| Error::Truncated(what.to_string()))?;
    Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

fn take<'b>(b: &'b [u8], at: &mut usize, len: usize, what: &str) -> Result<&'b [u8]> {
    let s = at
        .checked_add(len)
        .and_then(|end| b.get(*at..end))
        .ok_or_else(|| Error::Truncated(format!("{what}: {len} bytes at {at}")))?;
    *at += len;
    Ok(s)
}

impl<'a> DeltaFile<'a> {
    /// Parses a "DMXD" or lossless ("DMX\0" + "DMXL" records) delta held in `bytes`.
    pub fn parse(bytes: &'a [u8], limits: &Limits) -> Result<DeltaFile<'a>> {
        match bytes.get(..4) {
            Some(m) if m == MAGIC_DMXD => parse_dmxd(bytes, limits),
            Some(m) if m == MAGIC_ENVELOPE => parse_dmxl(bytes, limits),
            _ => Err(Error::NotLegacy),
        }
    }

    /// Names of the tensors the delta restores, in the order the old tool writes them.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.records.iter().map(|r| r.name.as_str())
    }

    /// The precision of a lossy delta ("int16" or "int32").
    pub fn precision(&self) -> Option<&str> {
        self.manifest.get("precision").and_then(Value::as_str)
    }

    /// A one-line description: "written by dmx-compress, lossy delta int16 — lossy".
    pub fn summary(&self) -> String {
        match self.kind {
            DeltaKind::Lossy => format!(
                "written by dmx-compress, lossy .dmxd delta (DMXD), precision {} — lossy",
                self.precision().unwrap_or("int16")
            ),
            DeltaKind::Lossless => {
                "written by dmx-compress, lossless .dmxd delta (DMXL) — lossless".into()
            }
        }
    }

    /// Applies the delta to `base` (looked up by name) exactly as the old tool's
    /// `delta-reconstruct` does; tensors the base lacks are an error for DMXD (as in the old
    /// tool) and skipped for DMXL (the old tool warns and skips).
    pub fn reconstruct<'b>(
        &self,
        base: impl Fn(&str) -> Option<BaseTensor<'b>>,
    ) -> Result<Vec<Tensor>> {
        let mut out = Vec::with_capacity(self.records.len());
        for r in &self.records {
            let Some(b) = base(&r.name) else {
                if self.kind == DeltaKind::Lossless {
                    continue;
                }
                return Err(Error::Base(format!("the base has no tensor {:?}", r.name)));
            };
            out.push(match self.kind {
                DeltaKind::Lossy => lossy_tensor(r, b, &self.limits)?,
                DeltaKind::Lossless => lossless_tensor(r, b, &self.limits)?,
            });
        }
        Ok(out)
    }
}

fn parse_dmxd<'a>(bytes: &'a [u8], limits: &Limits) -> Result<DeltaFile<'a>> {
    let version = u32_at(bytes, 4, "delta version")?;
    if version > 1 {
        return Err(Error::Version {
            what: "DMXD delta",
            version: version.into(),
        });
    }
    let mlen = u32_at(bytes, 8, "delta manifest length")? as usize;
    if mlen as u64 > limits.max_manifest_bytes {
        return Err(Error::Limit(format!("delta manifest of {mlen} bytes")));
    }
    let mut at = 12;
    let mut manifest = json::parse_object(
        take(bytes, &mut at, mlen, "delta manifest")?,
        "delta manifest",
        limits,
    )?;
    let data = &bytes[at..];
    let precision = json::opt_str(&manifest, "precision", "delta manifest")?
        .unwrap_or("int16")
        .to_string();
    let Some(Value::Object(entries)) = manifest.remove("tensors") else {
        return Err(malformed("delta manifest has no \"tensors\" object"));
    };
    if entries.len() as u64 > limits.max_tensors {
        return Err(Error::Limit(format!("{} tensors", entries.len())));
    }
    let mut records = Vec::with_capacity(entries.len());
    for (name, meta) in &entries {
        let ctx = format!("tensor {name:?}");
        let Value::Object(meta) = meta else {
            return Err(malformed(format!("{ctx}: entry is not an object")));
        };
        let p = json::opt_str(meta, "precision", &ctx)?.unwrap_or(&precision);
        let precision32 = p == "int32";
        let off = json::u64_field(meta, "offset", &ctx)?
            .checked_sub(at as u64)
            .ok_or_else(|| malformed(format!("{ctx}: offset inside the header")))?;
        let size = json::u64_field(meta, "compressed_size", &ctx)?;
        let mut pos = usize::try_from(off).map_err(|_| malformed(format!("{ctx}: offset")))?;
        let chunk = take(
            data,
            &mut pos,
            usize::try_from(size).unwrap_or(usize::MAX),
            &ctx,
        )?;
        let coder = if precision32 {
            Coder::Zstd
        } else {
            Coder::from_id(json::opt_str(meta, "entropy", &ctx)?.unwrap_or("zstd-19"))?
        };
        records.push(Record {
            name: name.clone(),
            shape: json::shape_field(meta, &ctx, limits)?,
            dtype: json::str_field(meta, "dtype", &ctx)?.to_string(),
            precision32,
            scale: json::opt_f64(meta, "scale", &ctx)?.unwrap_or(0.0),
            coder,
            planes: vec![chunk],
        });
    }
    records.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(DeltaFile {
        kind: DeltaKind::Lossy,
        manifest,
        records,
        limits: *limits,
    })
}

fn parse_dmxl<'a>(bytes: &'a [u8], limits: &Limits) -> Result<DeltaFile<'a>> {
    let (manifest, mut at) = envelope(bytes, limits)?;
    let n = u32_at(bytes, at, "tensor count")?;
    at += 4;
    if u64::from(n) > limits.max_tensors {
        return Err(Error::Limit(format!("{n} tensors")));
    }
    let mut records = Vec::new();
    for _ in 0..n {
        let klen = u32_at(bytes, at, "name length")? as usize;
        at += 4;
        let name = std::str::from_utf8(take(bytes, &mut at, klen, "tensor name")?)
            .map_err(|_| malformed("tensor name is not UTF-8"))?
            .to_string();
        let rlen = u32_at(bytes, at, "record length")? as usize;
        at += 4;
        let rec = take(bytes, &mut at, rlen, &name)?;
        records.push(dmxl_record(name, rec, limits)?);
    }
    Ok(DeltaFile {
        kind: DeltaKind::Lossless,
        manifest,
        records,
        limits: *limits,
    })
}

/// "DMXL" | u8 version 1 | u8 dtype | u16 ndim | ndim × u32 | u8 planes | planes × (u32 | zstd).
fn dmxl_record<'a>(name: String, rec: &'a [u8], limits: &Limits) -> Result<Record<'a>> {
    let ctx = format!("tensor {name:?}");
    let mut at = 0;
    if take(rec, &mut at, 4, &ctx)? != MAGIC_DMXL {
        return Err(malformed(format!("{ctx}: record without DMXL magic")));
    }
    let head = take(rec, &mut at, 4, &ctx)?;
    if head[0] != 1 {
        return Err(Error::Version {
            what: "DMXL record",
            version: head[0].into(),
        });
    }
    let dtype = match head[1] {
        0 => "float16",
        1 => "bfloat16",
        2 => "float32",
        d => return Err(Error::Unsupported(format!("{ctx}: DMXL dtype code {d}"))),
    };
    let ndim = usize::from(u16::from_le_bytes([head[2], head[3]]));
    if ndim > limits.max_ndim {
        return Err(Error::Limit(format!("{ctx}: {ndim} dimensions")));
    }
    let mut shape = Vec::with_capacity(ndim);
    for _ in 0..ndim {
        shape.push(u64::from(u32_at(rec, at, &ctx)?));
        at += 4;
    }
    let planes = usize::from(take(rec, &mut at, 1, &ctx)?[0]);
    let mut coded = Vec::with_capacity(planes);
    for _ in 0..planes {
        let len = u32_at(rec, at, &ctx)? as usize;
        at += 4;
        coded.push(take(rec, &mut at, len, &ctx)?);
    }
    Ok(Record {
        name,
        shape,
        dtype: dtype.into(),
        precision32: false,
        scale: 0.0,
        coder: Coder::Zstd,
        planes: coded,
    })
}

/// Base values as float32 (torch `.float()`), and as float64 (`.double()`).
fn base_values(b: BaseTensor<'_>, name: &str) -> Result<Vec<f64>> {
    let d = b.data;
    let v: Vec<f64> = match b.dtype {
        "F32" => d
            .chunks_exact(4)
            .map(|c| f64::from(f32::from_le_bytes([c[0], c[1], c[2], c[3]])))
            .collect(),
        "F16" => convert::u16s(d)
            .map(|x| f64::from(convert::f16_to_f32(x)))
            .collect(),
        "BF16" => convert::u16s(d)
            .map(|x| f64::from(convert::bf16_to_f32(x)))
            .collect(),
        "F64" => d
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
            .collect(),
        other => {
            return Err(Error::Base(format!(
                "tensor {name:?} of the base has dtype {other}, which the old tool's delta does not take"
            )));
        }
    };
    Ok(v)
}

fn out_dtype(dtype: &str) -> &'static str {
    match dtype {
        "float16" => "F16",
        "bfloat16" => "BF16",
        _ => "F32",
    }
}

fn lossy_tensor(r: &Record<'_>, b: BaseTensor<'_>, limits: &Limits) -> Result<Tensor> {
    let item = if r.precision32 { 4 } else { 2 };
    let n = crate::checked_numel(&r.shape, item, limits)?;
    let raw = entropy::decode(r.coder, r.planes[0], limits.max_tensor_bytes, &r.name)?;
    if raw.len() != n * item {
        return Err(malformed(format!(
            "tensor {:?}: {} delta bytes for {n} values",
            r.name,
            raw.len()
        )));
    }
    let base = base_values(b, &r.name)?;
    if base.len() != n {
        return Err(Error::Base(format!(
            "tensor {:?} has {} values in the base, {n} in the delta",
            r.name,
            base.len()
        )));
    }
    let out = out_dtype(&r.dtype);
    let data = if !r.precision32 {
        let step = r.scale as f32;
        let v: Vec<f32> = raw
            .chunks_exact(2)
            .zip(&base)
            .map(|(c, &x)| {
                let q = ((x as f32) / step)
                    .round_ties_even()
                    .clamp(-32767.0, 32767.0) as i16;
                f32::from(q.wrapping_add(i16::from_le_bytes([c[0], c[1]]))) * step
            })
            .collect();
        convert::f32s_to(&v, out)
    } else if r.scale == 0.0 {
        if b.dtype != "F32" || r.dtype != "float32" {
            return Err(Error::Unsupported(format!(
                "tensor {:?}: legacy XOR delta of a {} base",
                r.name, b.dtype
            )));
        }
        raw.iter().zip(b.data).map(|(d, x)| d ^ x).collect()
    } else {
        let s = r.scale;
        let v: Vec<f32> = raw
            .chunks_exact(4)
            .zip(&base)
            .map(|(c, &x)| {
                let q = (x / s)
                    .round_ties_even()
                    .clamp(-2_147_483_647.0, 2_147_483_647.0) as i64;
                let d = i64::from(i32::from_le_bytes([c[0], c[1], c[2], c[3]]));
                ((q + d) as f64 * s) as f32
            })
            .collect();
        convert::f32s_to(&v, out)
    };
    let out = if r.precision32 && r.scale == 0.0 {
        "F32"
    } else {
        out
    };
    Ok(Tensor {
        name: r.name.clone(),
        dtype: out,
        shape: r.shape.clone(),
        data,
    })
}

fn lossless_tensor(r: &Record<'_>, b: BaseTensor<'_>, limits: &Limits) -> Result<Tensor> {
    let (out, item) = match r.dtype.as_str() {
        "float16" => ("F16", 2),
        "bfloat16" => ("BF16", 2),
        _ => ("F32", 4),
    };
    let n = crate::checked_numel(&r.shape, item, limits)?;
    if b.dtype != out || b.shape != r.shape.as_slice() || b.data.len() != n * item {
        return Err(Error::Base(format!(
            "tensor {:?}: the base is {} {:?}, the delta {out} {:?}",
            r.name, b.dtype, b.shape, r.shape
        )));
    }
    if r.planes.len() != item {
        return Err(malformed(format!(
            "tensor {:?}: {} byte planes for {item}-byte values",
            r.name,
            r.planes.len()
        )));
    }
    let mut delta = vec![0u8; n * item];
    for (p, z) in r.planes.iter().enumerate() {
        let plane = entropy::decode(Coder::Zstd, z, n as u64, &r.name)?;
        if plane.len() != n {
            return Err(malformed(format!(
                "tensor {:?}: byte plane {p} holds {} of {n} values",
                r.name,
                plane.len()
            )));
        }
        for (i, v) in plane.into_iter().enumerate() {
            delta[i * item + p] = v;
        }
    }
    let data = if item == 2 {
        convert::u16s(&delta)
            .zip(convert::u16s(b.data))
            .flat_map(|(d, x)| x.wrapping_add(d).to_le_bytes())
            .collect()
    } else {
        delta
            .chunks_exact(4)
            .zip(b.data.chunks_exact(4))
            .flat_map(|(d, x)| {
                let d = u32::from_le_bytes([d[0], d[1], d[2], d[3]]);
                let x = u32::from_le_bytes([x[0], x[1], x[2], x[3]]);
                x.wrapping_add(d).to_le_bytes()
            })
            .collect()
    };
    Ok(Tensor {
        name: r.name.clone(),
        dtype: out,
        shape: r.shape.clone(),
        data,
    })
}
