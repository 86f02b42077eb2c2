//! Large zero-filled work buffers, backed by transparent huge pages where the kernel offers
//! them (Linux with THP set to `always` or `madvise`). A decode window is written once by the
//! decoders; faulting two such buffers in 4 KiB pages was 2,500 of the 3,077 page faults of
//! decompressing a 45 MB file, and about 8 % of its CPU time (BENCHMARKS.md §39).

use std::ops::{Deref, DerefMut};

/// Buffers below this stay on the heap.
const MIN_MAPPED: usize = 1 << 20;
/// The huge page size the mapping is rounded to (x86-64 and aarch64 with 4 KiB pages), so the
/// kernel places it on a huge-page boundary.
const HUGE: usize = 2 << 20;

/// A zero-filled byte buffer of a fixed length.
pub(crate) enum Scratch {
    /// Small buffers.
    Heap(Vec<u8>),
    /// An anonymous mapping advised to use huge pages, and its length in use.
    Mapped(memmap2::MmapMut, usize),
}

impl Scratch {
    /// `len` zero bytes; a mapping that cannot be made falls back to the heap.
    pub(crate) fn zeroed(len: usize) -> Self {
        if len >= MIN_MAPPED
            && let Some(size) = len.checked_next_multiple_of(HUGE)
            && let Ok(map) = memmap2::MmapOptions::new().len(size).map_anon()
        {
            #[cfg(target_os = "linux")]
            let _ = map.advise(memmap2::Advice::HugePage);
            return Scratch::Mapped(map, len);
        }
        Scratch::Heap(vec![0; len])
    }
}

impl Deref for Scratch {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Scratch::Heap(v) => v,
            Scratch::Mapped(m, len) => &m[..*len],
        }
    }
}

impl DerefMut for Scratch {
    fn deref_mut(&mut self) -> &mut [u8] {
        match self {
            Scratch::Heap(v) => v,
            Scratch::Mapped(m, len) => &mut m[..*len],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_zeroed_and_hold_their_length() {
        for len in [0, 1, 4095, MIN_MAPPED - 1, MIN_MAPPED, HUGE + 3, 3 * HUGE] {
            let mut s = Scratch::zeroed(len);
            assert_eq!(s.len(), len);
            assert!(s.iter().all(|&b| b == 0));
            for (i, b) in s.iter_mut().enumerate() {
                *b = i as u8;
            }
            assert!(s.iter().enumerate().all(|(i, &b)| b == i as u8));
            assert!(s.len() < MIN_MAPPED || matches!(s, Scratch::Mapped(..)));
        }
    }
}
