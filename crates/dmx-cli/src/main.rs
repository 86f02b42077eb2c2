//! `dmx`: compress neural-network weights (safetensors files and model folders) losslessly.
//! The whole tool is [`dmx_cli::main_with_args`].

use std::process::ExitCode;

fn main() -> ExitCode {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    malloc::tune();
    let status = dmx_cli::main_with_args(std::env::args_os());
    ExitCode::from(u8::try_from(status).unwrap_or(2))
}

/// glibc's allocator, tuned for how dmx uses memory: every worker thread allocates and frees
/// buffers of about a chunk (1 MiB) for every chunk it codes, in its own arena. By default
/// glibc gives each freed buffer back to the kernel (`munmap`, or `madvise` when it trims an
/// arena) and faults fresh zeroed pages in for the next one, with a TLB shootdown across the
/// cores each time. Serving these buffers from the heaps and keeping freed memory for reuse
/// halved the page faults of `compress` (7,300 to 3,700 on a 45 MB file) and removed half of
/// its `madvise` and `munmap` calls (docs: BENCHMARKS.md §17.4). Memory stays bounded by the
/// windows (a few chunks per thread); allocations of 32 MiB or more are still mapped apart.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
mod malloc {
    /// Free memory a heap keeps at its top before it is given back to the kernel.
    const TRIM_THRESHOLD: libc::c_int = 512 << 20;
    /// Allocations below this come from the heaps instead of a mapping each (glibc's maximum
    /// on 64-bit targets).
    const MMAP_THRESHOLD: libc::c_int = 32 << 20;

    /// Applies both settings; returns whether glibc accepted them (it keeps its defaults for
    /// any it refuses, which is harmless).
    pub(crate) fn tune() -> bool {
        // SAFETY: `mallopt` only sets allocator parameters. It is called at the start of
        // `main`, before this program starts any thread, with parameters glibc documents and
        // values within its limits (M_MMAP_THRESHOLD at most 32 MiB on 64-bit targets).
        unsafe {
            libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
                && libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
        }
    }

    #[cfg(test)]
    mod tests {
        /// glibc accepts both settings, and allocating and freeing chunk-sized buffers
        /// afterwards works as before.
        #[test]
        fn settings_are_accepted() {
            assert!(super::tune());
            for n in [1usize << 20, 3 << 20, 40 << 20] {
                let v = vec![7u8; n];
                assert_eq!(v.iter().map(|&b| u64::from(b)).sum::<u64>(), 7 * n as u64);
            }
        }
    }
}
