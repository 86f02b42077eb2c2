//! zstd compression with one reusable context per thread for the levels up to 9: the probes
//! and candidates that run once per chunk (levels 1 and 3) and the non-tensor bytes of tensor
//! files (level 9: a `torch.save` zip has a small local header before every storage) no
//! longer create, size and free a compression context every time. The frames are the same
//! as from a fresh context.

use std::cell::RefCell;

/// Levels up to this one reuse the thread's context (it keeps the workspace of the largest
/// input it coded: a few MB at level 9 for a 1 MiB chunk); higher levels (level 19 for
/// whole non-tensor files, with larger workspaces that should not outlive their call) get a
/// fresh one.
const REUSE_MAX_LEVEL: i32 = 9;

thread_local! {
    static FAST: RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> =
        const { RefCell::new(None) };
}

/// One zstd frame of `data` at `level`, or `None` if zstd refuses (it does not for valid
/// levels and in-memory buffers).
pub(crate) fn compress(data: &[u8], level: i32) -> Option<Vec<u8>> {
    if level > REUSE_MAX_LEVEL {
        return zstd::bulk::compress(data, level).ok();
    }
    with_compressor(level, |c| c.compress(data).ok())
        .unwrap_or_else(|| zstd::bulk::compress(data, level).ok())
}

/// Bytes beyond a limit that [`longer_than`] lets zstd write. zstd gives up on a full buffer
/// only where what it is about to write, plus a few bytes of working room, passes the end:
/// an 18-byte frame header slot, 8 bytes at the end of every bit stream, a 17-byte minimum
/// for Huffman-coded literals, 6 bytes before each block. So where a frame fits in the
/// buffer with this much to spare, zstd writes it exactly as into a buffer of any size, and
/// where it gives up, the whole frame is longer than the buffer less this room.
const HEADROOM: usize = 1024;

/// Whether [`compress`]'s frame of `data` at `level` is longer than `limit` bytes, without
/// compressing past that length where it is: zstd writes into a buffer of `limit +`
/// [`HEADROOM`] bytes and gives up once the frame cannot fit (so a frame twice the limit
/// costs about half its compression). A frame that does fit is made again in full to
/// compare it (zstd may have written it differently near the end of a tight buffer); so is
/// every frame at a level above [`REUSE_MAX_LEVEL`].
pub(crate) fn longer_than(data: &[u8], level: i32, limit: usize) -> bool {
    let whole = || compress(data, level).map_or(data.len(), |f| f.len()) > limit;
    let cap = limit.saturating_add(HEADROOM);
    if level > REUSE_MAX_LEVEL || cap >= zstd::zstd_safe::compress_bound(data.len()) {
        return whole();
    }
    let mut buf = Vec::with_capacity(cap);
    match with_compressor(level, |c| c.compress_to_buffer(data, &mut buf).is_ok()) {
        // Out of room (the only error zstd gives on valid levels and in-memory buffers;
        // `compress`'s callers store a chunk zstd refuses raw, and `data` is longer than
        // `limit` here): the frame is longer than `cap - HEADROOM = limit`.
        Some(false) => true,
        _ => whole(),
    }
}

/// Runs `f` with the thread's compression context set to `level` (`level` ≤
/// [`REUSE_MAX_LEVEL`]); `None` where that context is in use or cannot be set up.
fn with_compressor<T>(
    level: i32,
    f: impl FnOnce(&mut zstd::bulk::Compressor<'static>) -> T,
) -> Option<T> {
    FAST.with(|cell| {
        let mut slot = cell.try_borrow_mut().ok()?;
        match slot.as_mut() {
            Some((l, c)) if *l != level => {
                c.set_compression_level(level).ok()?;
                *l = level;
            }
            Some(_) => {}
            None => *slot = Some((level, zstd::bulk::Compressor::new(level).ok()?)),
        }
        slot.as_mut().map(|(_, c)| f(c))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reused context gives the frames of a fresh one, whatever the order of levels.
    #[test]
    fn frames_equal_a_fresh_context() {
        let data: Vec<u8> = crate::pseudo_bytes(200_000, 3)
            .iter()
            .enumerate()
            .map(|(i, b)| if i % 3 == 0 { *b } else { (i / 7) as u8 })
            .collect();
        for level in [1, 3, 1, 1, 3, 9, 3, 19, 1] {
            for part in [&data[..], &data[..1000], &data[..0]] {
                let want = zstd::bulk::compress(part, level).unwrap();
                assert_eq!(compress(part, level).unwrap(), want, "level {level}");
            }
        }
    }

    /// `longer_than` answers as the whole frame's length does, for limits on both sides of
    /// it and near it, on chunks that compress well, a little, and not at all, at levels
    /// that reuse the context and one that does not.
    #[test]
    fn longer_than_agrees_with_the_whole_frame() {
        let noise = crate::pseudo_bytes(300_000, 11);
        let text: Vec<u8> = (0..300_000u32).map(|i| (i % 251 / 7) as u8).collect();
        // Weight-like: random low bytes, repetitive high bytes.
        let mixed: Vec<u8> = noise
            .iter()
            .enumerate()
            .map(|(i, &b)| {
                if i % 4 >= 2 {
                    (i / 4 % 3) as u8 + 0x3c
                } else {
                    b
                }
            })
            .collect();
        for data in [
            &noise[..],
            &text[..],
            &mixed[..],
            &mixed[..5000],
            &text[..300],
        ] {
            for level in [1, 3, 19] {
                let z = compress(data, level).unwrap().len();
                let mut limits = vec![0, 1, z / 2, z.saturating_sub(HEADROOM + 1), z - 1, z];
                limits.extend([z + 1, z + 17, z + HEADROOM, z + 2 * HEADROOM, data.len()]);
                for limit in limits {
                    assert_eq!(
                        longer_than(data, level, limit),
                        z > limit,
                        "level {level}, {} bytes, frame {z}, limit {limit}",
                        data.len()
                    );
                    // The context stays usable after a frame that did not fit.
                    assert_eq!(compress(data, level).unwrap().len(), z);
                }
            }
        }
    }
}
