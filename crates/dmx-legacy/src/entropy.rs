//! The old tool's entropy layers: zstd, brotli and FLAC (16-bit PCM), each decoded with a
//! cap on the output size.

use std::io::Read;

use crate::error::{Error, Result};

/// Which coder a stream was written with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Coder {
    /// A zstd frame.
    Zstd,
    /// A brotli stream.
    Brotli,
    /// A FLAC file of 16-bit samples.
    Flac,
}

impl Coder {
    /// The coder of a per-tensor codec id (`entropy_codec`, `bfp_mant_codec`, delta
    /// `entropy`), with the aliases the old decoder accepts.
    pub(crate) fn from_id(id: &str) -> Result<Coder> {
        match id {
            "zstd-19" | "zstd" => Ok(Coder::Zstd),
            "flac" | "lpc" => Ok(Coder::Flac),
            "brotli-11" | "brotli" => Ok(Coder::Brotli),
            other => Err(Error::Unsupported(format!("entropy codec id {other:?}"))),
        }
    }
}

/// Decodes `data` with `coder`, failing when the output would exceed `cap` bytes.
pub(crate) fn decode(coder: Coder, data: &[u8], cap: u64, tensor: &str) -> Result<Vec<u8>> {
    match coder {
        Coder::Zstd => {
            let dec = zstd::stream::read::Decoder::with_buffer(data)
                .map_err(|e| codec_err("zstd", tensor, e.to_string()))?;
            read_capped(dec.single_frame(), cap, "zstd", tensor)
        }
        Coder::Brotli => {
            let dec = brotli_decompressor::Decompressor::new(data, 4096);
            read_capped(dec, cap, "brotli", tensor)
        }
        Coder::Flac => flac(data, cap, tensor),
    }
}

fn codec_err(codec: &'static str, tensor: &str, detail: String) -> Error {
    Error::Codec {
        codec,
        tensor: tensor.to_string(),
        detail,
    }
}

fn read_capped(r: impl Read, cap: u64, codec: &'static str, tensor: &str) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    r.take(cap.saturating_add(1))
        .read_to_end(&mut out)
        .map_err(|e| codec_err(codec, tensor, e.to_string()))?;
    if out.len() as u64 > cap {
        return Err(Error::Limit(format!(
            "{codec} stream of tensor {tensor:?} decodes to more than {cap} bytes"
        )));
    }
    Ok(out)
}

/// A FLAC file to its samples as little-endian int16 bytes (channels interleaved), as
/// soundfile's `read(dtype='int16')` gives them for the 16-bit files the old tool writes.
fn flac(data: &[u8], cap: u64, tensor: &str) -> Result<Vec<u8>> {
    let err = |e: claxon::Error| codec_err("flac", tensor, e.to_string());
    let mut reader = claxon::FlacReader::new(std::io::Cursor::new(data)).map_err(err)?;
    let info = reader.streaminfo();
    if info.bits_per_sample != 16 {
        return Err(Error::Unsupported(format!(
            "FLAC stream of tensor {tensor:?} has {} bits per sample (the old tool writes 16)",
            info.bits_per_sample
        )));
    }
    if let Some(n) = info.samples {
        let bytes = n.saturating_mul(u64::from(info.channels)).saturating_mul(2);
        if bytes > cap {
            return Err(Error::Limit(format!(
                "FLAC stream of tensor {tensor:?} announces {bytes} bytes (at most {cap})"
            )));
        }
    }
    let mut out = Vec::new();
    for s in reader.samples() {
        let s = s.map_err(err)?;
        if out.len() as u64 + 2 > cap {
            return Err(Error::Limit(format!(
                "FLAC stream of tensor {tensor:?} decodes to more than {cap} bytes"
            )));
        }
        let v = i16::try_from(s)
            .map_err(|_| codec_err("flac", tensor, "sample out of range".into()))?;
        out.extend_from_slice(&v.to_le_bytes());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zstd_is_capped() {
        let z = zstd::bulk::compress(&[7u8; 1000], 3).unwrap();
        assert_eq!(decode(Coder::Zstd, &z, 1000, "t").unwrap(), vec![7u8; 1000]);
        assert!(matches!(
            decode(Coder::Zstd, &z, 999, "t"),
            Err(Error::Limit(_))
        ));
        assert!(decode(Coder::Zstd, &z[..z.len() - 3], 1000, "t").is_err());
    }

    #[test]
    fn garbage_is_an_error() {
        for c in [Coder::Zstd, Coder::Brotli, Coder::Flac] {
            assert!(decode(c, b"\xff\xfe garbage", 100, "t").is_err());
        }
        assert!(Coder::from_id("rans").is_err());
    }
}
