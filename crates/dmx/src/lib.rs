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
mod io;
pub mod legacy;
pub mod lossy;
pub mod names;

mod plan;

pub mod tensors;
mod torch;
mod torch_crc;
mod verify;
mod verify_path;
mod window;

use std::sync::Arc;

pub use archive::{Archive, TensorRef};
pub use bench::{BenchDtype, BenchResult, bench};
pub use chain::{
    ChainInfo, ChainOptions, ChainReport, ChainVerifyReport, ReconstructReport, chain_append,
    chain_compress, chain_info, chain_prune, chain_reconstruct, chain_verify,
};
pub use compress::{
    CompressReport, TensorData, compress, compress_tensors, compress_with, safetensors_layout,
    tensors_entry_name,
};
pub use decompress::{decompress, decompress_to};
pub use delta::{
    DeltaInfo, DeltaOptions, DeltaReport, Precision, delta_compress, delta_info, delta_reconstruct,
};
pub use error::{Error, Result};
pub use extract::{extract, extract_from};
pub use info::{
    ComponentStats, DtypeStats, FileStats, LossyRollup, LossyStats, Stats, TensorStats,
};
pub use io::{
    TEMP_PREFIX, check_destination, check_distinct, check_outside, check_writable,
    check_writable_dir, is_dash, is_temp_name, remove_temps, sweep_stale, write_file,
};
pub use io::{check_input, is_archive_file};
pub use plan::CHUNK_SIZE;
pub use verify::{
    ComponentErrors, FileReport, TensorError, VerifyReport, verify, verify_delta, verify_with,
};
pub use verify_path::{PathReport, VerifyRequest, verify_path};

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
    /// Worker threads; `None` uses every core. Capped by [`worker_threads`] (twice the cores,
    /// and one per chunk where the work is known); 0 is refused.
    pub threads: Option<usize>,
    /// Overwrite existing outputs.
    pub force: bool,
    /// Skip the fsync of outputs before they are renamed into place: faster, and a crash
    /// still never leaves a partial file at the destination, but a power failure may lose
    /// an output that was just written.
    pub no_sync: bool,
    /// Progress receiver.
    pub progress: Option<Arc<dyn Progress>>,
    /// Set to `true` (by another thread) to stop the operation: it returns
    /// [`Error::Cancelled`] soon after, leaving no partial output.
    pub cancel: Option<Arc<std::sync::atomic::AtomicBool>>,
}

/// Most worker threads per core: the work is CPU-bound, so more threads than cores only cost
/// memory (each worker keeps chunks in flight) and start-up time.
pub const MAX_THREADS_PER_CORE: usize = 2;

/// The number of worker threads to start for `work_bytes` bytes of input: `requested`
/// (every core when `None`), capped at [`MAX_THREADS_PER_CORE`] times the cores and at the
/// number of [`CHUNK_SIZE`] chunks in the work (at least one). `Some(0)` is refused.
pub fn worker_threads(requested: Option<usize>, work_bytes: u64) -> Result<usize> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let wanted = match requested {
        Some(0) => {
            return Err(Error::InvalidArgument(
                "the number of worker threads must be at least 1".into(),
            ));
        }
        Some(n) => n.min(cores.saturating_mul(MAX_THREADS_PER_CORE)),
        None => cores,
    };
    let chunks = usize::try_from(work_bytes.div_ceil(CHUNK_SIZE)).unwrap_or(usize::MAX);
    Ok(wanted.min(chunks).max(1))
}

impl Options {
    /// [`Error::Cancelled`] once [`Options::cancel`] is set; long loops call this between
    /// chunks.
    pub fn check_cancel(&self) -> Result<()> {
        match &self.cancel {
            Some(flag) if flag.load(std::sync::atomic::Ordering::Relaxed) => Err(Error::Cancelled),
            _ => Ok(()),
        }
    }

    /// A pool for work of unknown size: [`worker_threads`] without the work cap.
    pub(crate) fn pool(&self) -> Result<rayon::ThreadPool> {
        self.pool_for(u64::MAX)
    }

    /// A pool of [`worker_threads`] for `work_bytes` bytes of input.
    pub(crate) fn pool_for(&self, work_bytes: u64) -> Result<rayon::ThreadPool> {
        let n = worker_threads(self.threads, work_bytes)?;
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build()
            .map_err(|e| Error::Resource(format!("cannot start {n} worker threads: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_threads_are_capped_by_cores_and_work() {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let max = cores * MAX_THREADS_PER_CORE;
        assert!(worker_threads(Some(0), 1 << 30).is_err());
        assert_eq!(worker_threads(Some(1), u64::MAX).unwrap(), 1);
        assert_eq!(worker_threads(Some(100_000), u64::MAX).unwrap(), max);
        assert_eq!(worker_threads(Some(usize::MAX), u64::MAX).unwrap(), max);
        assert_eq!(worker_threads(None, u64::MAX).unwrap(), cores);
        // 1.5 MB is two chunks; empty work still gets one thread.
        assert_eq!(
            worker_threads(Some(100_000), 1_500_000).unwrap(),
            2.min(max)
        );
        assert_eq!(worker_threads(Some(100_000), 0).unwrap(), 1);
        assert_eq!(worker_threads(None, CHUNK_SIZE).unwrap(), 1);
        // The pool really has that many threads.
        let opts = Options {
            threads: Some(100_000),
            ..Options::default()
        };
        assert_eq!(opts.pool().unwrap().current_num_threads(), max);
        assert_eq!(opts.pool_for(1).unwrap().current_num_threads(), 1);
    }

    /// Library messages name no CLI flag: the CLI adds `--force` and `--threads` itself.
    #[test]
    fn library_messages_name_no_cli_flags() {
        let dir = tempfile::tempdir().unwrap();
        let taken = dir.path().join("taken");
        std::fs::write(&taken, b"x").unwrap();
        let e = io::check_writable(&taken, false).unwrap_err();
        assert!(matches!(&e, Error::Exists(p) if *p == taken), "{e:?}");
        assert!(!e.is_integrity_failure());
        let e = worker_threads(Some(0), 1).unwrap_err();
        for e in [e, Error::Exists(taken)] {
            assert!(!e.to_string().contains("--"), "{e}");
        }
    }
}
