//! Where the bytes of a file being compressed come from: one buffer (a mapped or read
//! file), or pieces laid end to end in caller memory (a safetensors header and tensors).

use std::borrow::Cow;
use std::ops::Range;

use crate::error::{Error, Result};
use crate::io::Bytes;
use crate::plan::PlannedSegment;

/// The bytes of one planned file.
pub(crate) enum Source<'a> {
    /// A whole file in one buffer.
    Bytes(&'a Bytes),
    /// Consecutive pieces: piece `i` starts at file offset `starts[i]` (the first at 0, each
    /// where the one before ends).
    Pieces {
        /// File offset of each piece.
        starts: Vec<u64>,
        /// The pieces' bytes.
        data: Vec<&'a [u8]>,
    },
}

impl<'a> Source<'a> {
    /// Pieces laid end to end, in order.
    pub(crate) fn pieces(data: Vec<&'a [u8]>) -> Self {
        let mut at = 0u64;
        let starts = data
            .iter()
            .map(|d| {
                let s = at;
                at += d.len() as u64;
                s
            })
            .collect();
        Source::Pieces { starts, data }
    }

    /// The bytes of `range` where they lie in one buffer (always for [`Source::Bytes`]; for
    /// pieces, unless the range spans two of them).
    pub(crate) fn slice(&self, range: Range<u64>) -> Option<&'a [u8]> {
        let (start, end) = (
            usize::try_from(range.start).ok()?,
            usize::try_from(range.end).ok()?,
        );
        match self {
            Source::Bytes(b) => b.get(start..end),
            Source::Pieces { starts, data } => {
                let i = starts
                    .partition_point(|&s| s <= range.start)
                    .checked_sub(1)?;
                let off = (range.start - starts[i]) as usize;
                data[i].get(off..off + (end - start))
            }
        }
    }

    /// The bytes of `range`, copied together when they span pieces.
    pub(crate) fn read(&self, range: Range<u64>) -> Result<Cow<'a, [u8]>> {
        if let Some(s) = self.slice(range.clone()) {
            return Ok(Cow::Borrowed(s));
        }
        let Source::Pieces { starts, data } = self else {
            return Err(out_of_range(&range));
        };
        let mut out = Vec::with_capacity((range.end - range.start) as usize);
        let first = starts
            .partition_point(|&s| s <= range.start)
            .saturating_sub(1);
        for (s, d) in starts[first..].iter().zip(&data[first..]) {
            if *s >= range.end {
                break;
            }
            let from = range.start.saturating_sub(*s) as usize;
            let to = ((range.end - s) as usize).min(d.len());
            out.extend_from_slice(d.get(from..to).ok_or_else(|| out_of_range(&range))?);
        }
        if out.len() as u64 != range.end - range.start {
            return Err(out_of_range(&range));
        }
        Ok(Cow::Owned(out))
    }

    /// The error for a segment whose bytes are not in one buffer.
    pub(crate) fn missing(&self, seg: &PlannedSegment) -> Error {
        out_of_range(&(seg.offset..seg.offset + seg.len))
    }

    /// Lets the kernel drop mapped pages of `range`, already encoded.
    pub(crate) fn release(&self, range: Range<u64>) {
        if let Source::Bytes(b) = self {
            b.release(range.start as usize, range.end as usize);
        }
    }
}

/// Where lossy planning finds the bytes of a tensor segment of a planned file.
pub(crate) trait SegmentData {
    /// The bytes of `seg` (`None` when they are not in one buffer, which never happens for
    /// tensor segments).
    fn segment_data(&self, seg: &PlannedSegment) -> Option<&[u8]>;
}

impl SegmentData for [u8] {
    fn segment_data(&self, seg: &PlannedSegment) -> Option<&[u8]> {
        let start = usize::try_from(seg.offset).ok()?;
        self.get(start..start.checked_add(usize::try_from(seg.len).ok()?)?)
    }
}

impl SegmentData for Bytes {
    fn segment_data(&self, seg: &PlannedSegment) -> Option<&[u8]> {
        (**self).segment_data(seg)
    }
}

impl SegmentData for Source<'_> {
    fn segment_data(&self, seg: &PlannedSegment) -> Option<&[u8]> {
        self.slice(seg.offset..seg.offset + seg.len)
    }
}

fn out_of_range(r: &Range<u64>) -> Error {
    Error::Usage(format!(
        "internal error: bytes {}..{} are not in the input being compressed; please report this",
        r.start, r.end
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_slice_within_and_copy_across() {
        let (a, b, c) = (&b"abc"[..], &b""[..], &b"defg"[..]);
        let s = Source::pieces(vec![a, b, c]);
        assert_eq!(s.slice(0..3), Some(&b"abc"[..]));
        assert_eq!(s.slice(3..7), Some(&b"defg"[..]));
        assert_eq!(s.slice(3..3), Some(&b""[..]));
        assert_eq!(s.slice(2..4), None);
        assert_eq!(&*s.read(2..5).unwrap(), b"cde");
        assert_eq!(&*s.read(0..7).unwrap(), b"abcdefg");
        assert!(s.read(5..9).is_err());
    }
}
