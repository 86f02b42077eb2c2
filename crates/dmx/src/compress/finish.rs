//! The end of an archive: the index, checked against the reader's limits, and the trailer.

use std::path::Path;

use dmx_format::Index;

use crate::error::{Error, Result};
use crate::io::AtomicFile;

/// Why the writer refuses an index that a reader would reject: the reader's error, without
/// the "archive corrupt" wording meant for damaged archives.
fn writer_reason(e: &dmx_format::FormatError) -> String {
    match e {
        dmx_format::FormatError::Invalid(why) => (*why).to_string(),
        dmx_format::FormatError::OutOfRange(what) => format!("{what} out of range"),
        other => other.to_string(),
    }
}

/// Checks `index` against the reader's limits, then appends it and the trailer to `out`, for
/// a preamble with `flags`: with [`dmx_format::FLAG_COMPRESSED_INDEX`] the index is stored
/// compressed (format 1.2). `input` names the input in errors.
pub(crate) fn finish_archive(
    index: &Index,
    out: &mut AtomicFile,
    input: &Path,
    flags: u32,
) -> Result<()> {
    let index_bytes = index.to_bytes();
    // What readers would reject must not be written: check the index against their limits.
    let index_offset = out.position();
    let limits = dmx_format::Limits::default();
    if index_bytes.len() as u64 > limits.max_index_len {
        return Err(Error::Limit(format!(
            "{}: cannot be stored: the index would be {} bytes, above the reader limit of {} \
             (docs/FORMAT.md §6)",
            input.display(),
            index_bytes.len(),
            limits.max_index_len
        )));
    }
    let index_bytes = if flags & dmx_format::FLAG_COMPRESSED_INDEX != 0 {
        index.to_stored(flags)
    } else {
        index_bytes
    };
    // Parsed back exactly as a reader will (decompressed first when compressed).
    Index::from_stored(&index_bytes, flags, index_offset, &limits).map_err(|e| {
        Error::Limit(format!(
            "{}: cannot be stored: {} (reader limits and rules are documented in \
             docs/FORMAT.md §5.5 and §6)",
            input.display(),
            writer_reason(&e)
        ))
    })?;
    out.write_all(&index_bytes)?;
    out.write_all(&dmx_format::Trailer::for_index(index_offset, &index_bytes).to_bytes())?;
    // The preamble was written before the chunks were coded, with the minor version of the
    // archive's planned features; a chunk of codec 10 or 11 (format 1.5), 12 (1.6), 13 or
    // 14 (1.7), 15 (1.8), 16 (1.9) or 17 (1.10) raises it (deltas and chains included: they
    // finish here too).
    let minor = index.min_minor();
    if minor >= 5 {
        out.rewrite_at(10, &minor.to_le_bytes())?;
    }
    Ok(())
}

#[cfg(test)]
mod writer_tests {
    use super::writer_reason;
    use dmx_format::FormatError;

    /// Issue 11, finding 6: the writer's self-check of the index reports its refusals as its
    /// own, never with the "archive corrupt" wording meant for damaged archives.
    #[test]
    fn writer_refusals_never_say_corrupt() {
        for e in [
            FormatError::Invalid("entry path is not a safe relative path"),
            FormatError::OutOfRange("chunk offset"),
            FormatError::LimitExceeded {
                what: "entry count",
                value: 2,
                limit: 1,
            },
        ] {
            let why = writer_reason(&e);
            assert!(!why.contains("corrupt"), "{why}");
            assert!(!why.is_empty());
        }
    }
}
