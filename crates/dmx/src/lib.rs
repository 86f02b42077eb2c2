//! The dmx engine: compress safetensors models (files or Hugging Face folders) into `.dmx`
//! archives and back, byte for byte; inspect, verify and extract tensors.
//!
//! The engine does the IO, planning and parallelism; the container lives in [`dmx_format`]
//! and the codecs in [`dmx_codec`]. Work runs on a rayon pool sized by [`Options::threads`];
//! memory stays bounded by processing inputs in windows of 16 MiB.
//!
//! ```
//! use dmx::{Archive, Options};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! // A tiny safetensors file: one BF16 tensor of 4 values.
//! let header = br#"{"w":{"dtype":"BF16","shape":[2,2],"data_offsets":[0,8]}}"#;
//! let mut file = (header.len() as u64).to_le_bytes().to_vec();
//! file.extend_from_slice(header);
//! file.extend_from_slice(&[0x80, 0x3f, 0x00, 0x40, 0x40, 0x40, 0x80, 0xbf]);
//! let model = dir.path().join("model.safetensors");
//! std::fs::write(&model, &file)?;
//!
//! let opts = Options::default();
//! let packed = dir.path().join("model.dmx");
//! dmx::compress(&model, &packed, &opts)?;
//!
//! let archive = Archive::open(&packed)?;
//! let names: Vec<&str> = archive.tensors().map(|t| t.info.name.as_str()).collect();
//! assert_eq!(names, ["w"]);
//! assert_eq!(archive.read_tensor("w")?, &file[file.len() - 8..]);
//! assert!(dmx::verify(&archive, Some(&model), &opts)?.ok);
//!
//! let restored = dir.path().join("restored.safetensors");
//! dmx::decompress(&packed, &restored, &opts)?;
//! assert_eq!(std::fs::read(&restored)?, file);
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]

mod archive;
mod bench;
pub mod chain;
mod compress;
mod decompress;
pub mod delta;
pub mod diff;
mod error;
mod extract;
mod info;
pub mod lossy;
pub mod names;
mod output;
mod plan;
mod source;
pub mod tensors;
mod verify;
mod window;

use std::sync::Arc;

pub use archive::{Archive, TensorRef};
pub use bench::{BenchDtype, BenchResult, bench};
pub use chain::{
    ChainInfo, ChainOptions, ChainReport, ChainVerifyReport, ReconstructReport, chain_append,
    chain_compress, chain_info, chain_reconstruct, chain_verify,
};
pub use compress::{CompressReport, compress, compress_with};
pub use decompress::decompress;
pub use delta::{
    DeltaInfo, DeltaOptions, DeltaReport, Precision, delta_compress, delta_info, delta_reconstruct,
};
pub use error::{Error, Result};
pub use extract::extract;
pub use info::{DtypeStats, FileStats, LossyStats, Stats, TensorStats};
pub use output::{check_distinct, write_file};
pub use plan::CHUNK_SIZE;
pub use verify::{FileReport, TensorError, VerifyReport, verify, verify_delta, verify_with};

pub use dmx_codec;
pub use dmx_format;

/// Receives progress of long operations (the CLI draws a bar; libraries stay silent).
pub trait Progress: Send + Sync {
    /// A phase starts with `total` bytes of work.
    fn start(&self, what: &str, total: u64);
    /// `bytes` more bytes are done.
    fn advance(&self, bytes: u64);
    /// The phase is over.
    fn finish(&self);
}

/// Settings shared by all operations.
#[derive(Clone, Default)]
pub struct Options {
    /// Worker threads; `None` uses every core.
    pub threads: Option<usize>,
    /// Overwrite existing outputs.
    pub force: bool,
    /// Skip the fsync of outputs before they are renamed into place: faster, and a crash
    /// still never leaves a partial file at the destination, but a power failure may lose
    /// an output that was just written.
    pub no_sync: bool,
    /// Progress receiver.
    pub progress: Option<Arc<dyn Progress>>,
}

impl Options {
    pub(crate) fn pool(&self) -> Result<rayon::ThreadPool> {
        let mut b = rayon::ThreadPoolBuilder::new();
        if let Some(n) = self.threads {
            if n == 0 {
                return Err(Error::Usage("--threads must be at least 1".into()));
            }
            b = b.num_threads(n);
        }
        b.build()
            .map_err(|e| Error::Usage(format!("cannot start worker threads: {e}")))
    }
}
