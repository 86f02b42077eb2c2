//! What compression, decompression and verification share when they stream a file: cutting
//! its chunks into parallel windows, and hashing its segments as their bytes go past in order.

use std::ops::Range;

/// Raw bytes per window (at least two chunks per worker): bounds memory whatever the model
/// size, and is small enough that hashing and writing one window overlap decoding the next
/// (16 MiB windows left most of a 20 MB file to a serial tail).
pub(crate) const WINDOW: u64 = 4 << 20;

/// Consecutive ranges of `lens` (chunk sizes in file order), each holding at least one chunk
/// and about one window of bytes for the current rayon pool.
pub(crate) fn windows(lens: &[u64]) -> Vec<Range<usize>> {
    let limit = WINDOW.max(rayon::current_num_threads() as u64 * 2 * crate::CHUNK_SIZE);
    let mut out = Vec::new();
    let mut start = 0;
    while start < lens.len() {
        let mut end = start;
        let mut raw = 0u64;
        while end < lens.len() && (raw < limit || end == start) {
            raw += lens[end];
            end += 1;
        }
        out.push(start..end);
        start = end;
    }
    out
}

/// BLAKE3 of each segment of a file whose bytes arrive in file order, segment by segment.
#[derive(Default)]
pub(crate) struct SegmentHasher {
    current: Option<(usize, blake3::Hasher)>,
}

impl SegmentHasher {
    /// Feeds bytes of `segment`; returns the hash of the previous segment when it is complete.
    pub(crate) fn update(&mut self, segment: usize, data: &[u8]) -> Option<(usize, blake3::Hash)> {
        if let Some((s, h)) = &mut self.current
            && *s == segment
        {
            h.update(data);
            return None;
        }
        let done = self.finish();
        let mut h = blake3::Hasher::new();
        h.update(data);
        self.current = Some((segment, h));
        done
    }

    /// The hash of the last segment fed, if any. Segments that received no bytes never
    /// appear: their hash is that of the empty input.
    pub(crate) fn finish(&mut self) -> Option<(usize, blake3::Hash)> {
        self.current.take().map(|(s, h)| (s, h.finalize()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_cover_every_chunk_once() {
        let lens = vec![crate::CHUNK_SIZE; 100];
        let w = windows(&lens);
        assert_eq!(w.first().map(|r| r.start), Some(0));
        assert_eq!(w.last().map(|r| r.end), Some(100));
        assert!(w.windows(2).all(|p| p[0].end == p[1].start));
        assert!(windows(&[]).is_empty());
    }

    #[test]
    fn segment_hashes_match_whole_hashes() {
        let mut h = SegmentHasher::default();
        let mut got = Vec::new();
        got.extend(h.update(0, b"ab"));
        got.extend(h.update(0, b"c"));
        got.extend(h.update(2, b"xyz"));
        got.extend(h.finish());
        assert_eq!(
            got,
            vec![(0, blake3::hash(b"abc")), (2, blake3::hash(b"xyz"))]
        );
    }
}
