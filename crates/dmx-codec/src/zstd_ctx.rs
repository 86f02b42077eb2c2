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
    FAST.with(|cell| {
        let Ok(mut slot) = cell.try_borrow_mut() else {
            return zstd::bulk::compress(data, level).ok();
        };
        match slot.as_mut() {
            Some((l, c)) if *l != level => {
                c.set_compression_level(level).ok()?;
                *l = level;
            }
            Some(_) => {}
            None => *slot = Some((level, zstd::bulk::Compressor::new(level).ok()?)),
        }
        slot.as_mut()?.1.compress(data).ok()
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
}
