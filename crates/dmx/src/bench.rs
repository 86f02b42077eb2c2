//! In-memory measurement of the codecs on real files (`dmx bench`): bits per weight per dtype
//! and per field, the order-0 entropy bound beside it, and encode/decode throughput without
//! file IO, so that numbers compare with in-memory peers.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use rayon::prelude::*;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::io::Bytes;
use crate::plan::{dtype_bits, plan_input};

/// Result of benchmarking one file at one thread count.
#[derive(Debug, Clone, Serialize)]
pub struct BenchResult {
    /// The file measured.
    pub file: String,
    /// Threads used.
    pub threads: usize,
    /// Original size in bytes.
    pub bytes: u64,
    /// Stored size of all chunks (container index not included).
    pub stored: u64,
    /// Tensor elements.
    pub params: u64,
    /// Per dtype: (params, stored bytes, entropy bound bits).
    pub dtypes: BTreeMap<String, BenchDtype>,
    /// Median encode throughput, MB/s of original bytes.
    pub compress_mb_s: f64,
    /// Median decode throughput, MB/s of original bytes.
    pub decompress_mb_s: f64,
    /// Every chunk decoded back to its original bytes.
    pub round_trip_ok: bool,
}

/// Per-dtype figures of a [`BenchResult`].
#[derive(Debug, Clone, Default, Serialize)]
pub struct BenchDtype {
    /// Elements.
    pub params: u64,
    /// Stored bytes.
    pub stored: u64,
    /// Stored bits per element.
    pub bits_per_weight: f64,
    /// Order-0 entropy bound, bits per element.
    pub entropy_bits_per_weight: f64,
    /// Chunks per codec name.
    pub codecs: BTreeMap<String, usize>,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// Encodes and decodes every chunk of the `.safetensors` file (or folder) at `path` in memory,
/// `reps` times with `threads` workers, and reports sizes and median throughput. The
/// threads are capped as for every command ([`crate::worker_threads`]: at most
/// [`crate::MAX_THREADS_PER_CORE`] per core and one per chunk); the result records how many
/// ran. `threads` = 0 is refused.
pub fn bench(path: &Path, threads: usize, reps: usize) -> Result<BenchResult> {
    let (_, files) = plan_input(path)?;
    let work: u64 = files.iter().map(|f| f.size).sum();
    let threads = crate::worker_threads(Some(threads), work)?;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .map_err(|e| Error::Resource(format!("cannot start {threads} worker threads: {e}")))?;
    let mut inputs = Vec::new();
    for f in &files {
        // Read fully so page faults do not count against the codec.
        let bytes = Bytes::open_stable(&f.path)?;
        inputs.push(bytes.to_vec());
    }
    let mut jobs = Vec::new();
    for (fi, f) in files.iter().enumerate() {
        for seg in &f.segments {
            let dtype = match &seg.kind {
                dmx_format::SegmentKind::Tensor(t) => Some(t.dtype.clone()),
                dmx_format::SegmentKind::Bytes | dmx_format::SegmentKind::Packed(_) => None,
            };
            let hints = f.hints(seg);
            for r in seg.chunks() {
                jobs.push((
                    fi,
                    r.start as usize..r.end as usize,
                    seg.value,
                    hints,
                    dtype.clone(),
                ));
            }
        }
    }
    let total: u64 = jobs.iter().map(|j| j.1.len() as u64).sum();
    let (mut ctimes, mut dtimes) = (Vec::new(), Vec::new());
    let mut encoded = Vec::new();
    let mut ok = true;
    // Output buffers are reused across repetitions, so the median measures decoding, not the
    // kernel's page faults on fresh memory.
    let mut out: Vec<Vec<u8>> = jobs.iter().map(|j| vec![0u8; j.1.len()]).collect();
    for _ in 0..reps.max(1) {
        // The previous repetition's payloads are freed before this one is timed, so their
        // memory serves its payloads, as a streaming writer's does: kept, they made every
        // repetition fault in fresh pages, and two threads faulting at once waited for each
        // other (WordLlama F16 compress at 2 threads 1.74× one thread's rate, 1.81× freed).
        drop(std::mem::take(&mut encoded));
        let t = Instant::now();
        encoded = pool.install(|| {
            jobs.par_iter()
                .map(|(fi, r, v, hints, _)| {
                    dmx_codec::encode_with(*v, &inputs[*fi][r.clone()], *hints)
                })
                .collect::<Vec<_>>()
        });
        ctimes.push(t.elapsed().as_secs_f64());
        for o in &mut out {
            o.fill(0);
        }
        let t = Instant::now();
        let decoded = pool.install(|| {
            out.par_iter_mut()
                .zip(&encoded)
                .map(|(o, e)| dmx_codec::decode(e.codec, &e.payload, o).is_ok())
                .all(|x| x)
        });
        dtimes.push(t.elapsed().as_secs_f64());
        ok &= decoded
            && jobs
                .iter()
                .zip(&out)
                .all(|((fi, r, _, _, _), o)| &inputs[*fi][r.clone()] == o.as_slice());
    }
    let mut dtypes: BTreeMap<String, BenchDtype> = BTreeMap::new();
    for ((_, r, _, _, dtype), e) in jobs.iter().zip(&encoded) {
        let Some(dtype) = dtype else { continue };
        let d = dtypes.entry(dtype.clone()).or_default();
        d.params += dtype_bits(dtype)
            .filter(|&b| b > 0)
            .map_or(0, |b| r.len() as u64 * 8 / b);
        d.stored += e.payload.len() as u64;
        d.entropy_bits_per_weight += e.entropy_bits;
        *d.codecs.entry(e.codec.name().to_string()).or_default() += 1;
    }
    for d in dtypes.values_mut() {
        let n = d.params.max(1) as f64;
        d.bits_per_weight = d.stored as f64 * 8.0 / n;
        d.entropy_bits_per_weight /= n;
    }
    Ok(BenchResult {
        file: path.display().to_string(),
        threads,
        bytes: total,
        stored: encoded.iter().map(|e| e.payload.len() as u64).sum(),
        params: dtypes.values().map(|d| d.params).sum(),
        dtypes,
        compress_mb_s: total as f64 / 1e6 / median(ctimes),
        decompress_mb_s: total as f64 / 1e6 / median(dtimes),
        round_trip_ok: ok,
    })
}
