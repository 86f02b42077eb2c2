//! The properties checked by the fuzz targets, one public function per target. Each takes the
//! fuzzer's bytes and panics when its property is broken; an `Err` from dmx is never a
//! failure, only a panic, an abort, a wrong result or an unbounded allocation is.
//!
//! This file is also compiled into the regression test `crates/dmx/tests/engine/fuzz_regressions.rs`
//! (as a module, through `#[path]`), which replays every committed case of
//! `tests/fuzz-regressions/<target>/` through the same function. It therefore names crates
//! only through `dmx` (`dmx::dmx_format`, `dmx::dmx_codec`) or ones `dmx` itself depends on
//! (`tempfile`, `blake3`).
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use dmx::dmx_codec::{self, Codec, FloatLayout, Hints, ValueKind};
use dmx::dmx_format::{self, Entry, Index, Limits, Trailer};

/// Largest output buffer a decoder target hands a decoder (the chunk limit is 64 MiB; a
/// smaller bound keeps executions fast without changing what a decoder may do).
const MAX_OUT: usize = 1 << 20;

/// The fuzz target `archive` reads segments whole (`read_segment`, `read_tensor`, `extract`)
/// only up to this declared size: they allocate a segment's declared length, which a tiny
/// archive can legitimately make huge (a zstd frame of a run of zeros, reused by every
/// chunk), and libFuzzer reports any allocation above its memory limit as a crash. `verify`
/// and `decompress` stream in bounded windows and always run.
pub const FUZZ_MAX_READ: u64 = 64 << 20;

/// A scratch folder in RAM (`/dev/shm`) where available.
fn scratch() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir()
        && let Ok(dir) = tempfile::Builder::new().prefix("dmx-fuzz-").tempdir_in(shm)
    {
        return dir;
    }
    tempfile::tempdir().expect("create a scratch folder")
}

/// One worker thread and no fsync: the properties do not depend on either.
fn opts() -> dmx::Options {
    dmx::Options {
        threads: Some(1),
        no_sync: true,
        ..dmx::Options::default()
    }
}

/// Reads the fuzzer's bytes front to back; past the end it yields zeros.
struct Bytes<'a>(&'a [u8]);

impl<'a> Bytes<'a> {
    fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }

    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    fn u64(&mut self) -> u64 {
        u64::from_le_bytes(std::array::from_fn(|_| self.u8()))
    }

    /// Up to `n` bytes (fewer when the input ends).
    fn take(&mut self, n: usize) -> &'a [u8] {
        let (head, tail) = self.0.split_at(n.min(self.0.len()));
        self.0 = tail;
        head
    }

    fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.0)
    }
}

// ---------------------------------------------------------------------------------------------
// index

/// **index** — `dmx_format`'s preamble, trailer and index parsers on arbitrary bytes never
/// panic and allocate only in proportion to their input (run with `-rss_limit_mb=512`). An
/// index they accept satisfies every rule of docs/FORMAT.md §5.5 and the limits it was parsed
/// with, and serializes back to exactly the bytes it was parsed from (the encoding is
/// canonical).
///
/// The bytes are tried as a whole archive (preamble, trailer, the index between) and as a bare
/// index with several data-area ends, under the default limits and under tiny ones.
pub fn index(data: &[u8]) {
    let default = Limits::default();
    let tiny = Limits {
        max_index_len: 1 << 12,
        max_chunk_raw: 1 << 10,
        max_entries: 3,
        max_segments: 3,
        max_chunks: 3,
        max_string: 12,
        max_rank: 3,
        max_index_expansion: 4,
    };
    let _ = dmx_format::check_preamble(data);
    let _ = Trailer::from_bytes(data);
    if let Some(tail) = data.len().checked_sub(32).and_then(|s| data.get(s..))
        && let Ok(t) = Trailer::from_bytes(tail)
    {
        assert_eq!(
            Trailer::from_bytes(&t.to_bytes()),
            Ok(t),
            "trailer round trip"
        );
        if t.check(data.len() as u64, &default).is_ok() {
            let start = usize::try_from(t.index_offset).expect("checked offset");
            let len = usize::try_from(t.index_len).expect("checked length");
            let bytes = &data[start..start + len];
            let _ = t.check_index(bytes);
            parse_index(bytes, t.index_offset, &default);
        }
    }
    for data_end in [0, data.len() as u64, 1 << 20, u64::MAX] {
        for limits in [&default, &tiny] {
            parse_index(data, data_end, limits);
        }
    }
    // Format 1.2: the same bytes as a compressed index (length, zstd frame).
    for limits in [&default, &tiny] {
        let flags = dmx_format::FLAG_COMPRESSED_INDEX;
        if let Ok(index) = Index::from_stored(data, flags, 1 << 20, limits) {
            let raw = index.to_bytes();
            assert!(raw.len() as u64 <= limits.max_index_len);
            check_index(&index, &raw, 1 << 20, limits);
        }
    }
}

fn parse_index(bytes: &[u8], data_end: u64, limits: &Limits) {
    if let Ok(index) = Index::from_bytes(bytes, data_end, limits) {
        check_index(&index, bytes, data_end, limits);
    }
}

/// What an accepted index must satisfy (docs/FORMAT.md §5.5, §6).
fn check_index(index: &Index, bytes: &[u8], data_end: u64, limits: &Limits) {
    assert!(
        index.to_bytes() == bytes,
        "an accepted index must serialize back to the same bytes"
    );
    assert!(index.entries.len() as u64 <= limits.max_entries);
    let mut pack: Option<(u64, u64)> = None;
    for e in &index.entries {
        assert!(e.path.len() as u64 <= u64::from(limits.max_string));
        // Packed files (1.2) tile the pack before them, in order.
        match e.kind {
            dmx_format::EntryKind::Packed => {
                let (size, at) = pack.expect("a packed file follows a pack");
                assert_eq!(e.packed, Some(at), "packed files tile their pack");
                assert!(at + e.size <= size);
                pack = Some((size, at + e.size));
                assert!(e.segments.is_empty());
                continue;
            }
            dmx_format::EntryKind::Pack => {
                if let Some((size, at)) = pack {
                    assert_eq!(size, at, "the previous pack is tiled");
                }
                assert!(e.path.is_empty() && e.size <= dmx_format::MAX_PACK);
                assert_eq!(index.root, dmx_format::Root::Directory);
                pack = Some((e.size, 0));
            }
            _ => {
                if let Some((size, at)) = pack.take() {
                    assert_eq!(size, at, "the previous pack is tiled");
                }
            }
        }
        let safe = e.kind == dmx_format::EntryKind::Pack
            || (!e.path.is_empty()
                && !e.path.contains('\0')
                && e.path
                    .split('/')
                    .all(|c| !c.is_empty() && c != "." && c != ".."));
        assert!(safe, "unsafe path accepted: {:?}", e.path);
        assert!(e.segments.len() as u64 <= limits.max_segments);
        let mut cursor = 0u64;
        for s in &e.segments {
            assert_eq!(s.offset, cursor, "segments must tile the file");
            cursor = cursor.checked_add(s.len).expect("segment ends overflow");
            let tensors = s.kind.tensors(s.len);
            for (t, _, _) in &tensors {
                assert!(t.shape.len() as u64 <= u64::from(limits.max_rank));
                assert!(t.name.len() as u64 <= u64::from(limits.max_string));
                assert!(t.dtype.len() as u64 <= u64::from(limits.max_string));
            }
            if let dmx_format::SegmentKind::Packed(m) = &s.kind {
                assert!(!m.is_empty() && m.len() as u64 <= limits.max_segments);
                assert_eq!(m.iter().map(|t| t.len).sum::<u64>(), s.len);
            }
            assert!(s.chunks.len() as u64 <= limits.max_chunks);
            let mut raw = 0u64;
            for c in &s.chunks {
                assert!(c.raw_len > 0 && c.raw_len <= limits.max_chunk_raw);
                assert!(c.stored_len <= c.raw_len);
                assert!(c.offset >= dmx_format::PREAMBLE_LEN);
                assert!(c.offset + u64::from(c.stored_len) <= data_end);
                raw += u64::from(c.raw_len);
            }
            assert_eq!(raw, s.len, "chunk sizes must add up to the segment");
        }
        assert_eq!(cursor, e.size, "segments must cover the file");
    }
    if let Some((size, at)) = pack {
        assert_eq!(size, at, "the last pack is tiled");
    }
    let mut paths: Vec<&str> = index
        .entries
        .iter()
        .filter(|e| e.kind != dmx_format::EntryKind::Pack)
        .map(|e| e.path.as_str())
        .collect();
    paths.sort_unstable();
    assert!(paths.windows(2).all(|w| w[0] != w[1]), "duplicate paths");
    if index.root == dmx_format::Root::File {
        assert_eq!(index.entries.len(), 1);
    }
}

// ---------------------------------------------------------------------------------------------
// decode

/// The value kinds the codec targets pick from.
const KINDS: [ValueKind; 7] = [
    ValueKind::Float(FloatLayout::BF16),
    ValueKind::Float(FloatLayout::F16),
    ValueKind::Float(FloatLayout::F32),
    ValueKind::Float(FloatLayout::F64),
    ValueKind::Float(FloatLayout::F8_E4M3),
    ValueKind::Float(FloatLayout::F8_E5M2),
    ValueKind::Bytes,
];

fn kind_width(kind: ValueKind) -> usize {
    match kind {
        ValueKind::Float(l) => l.bytes(),
        ValueKind::Bytes => 1,
    }
}

/// Reads a value kind, a row length and a zstd level, and cuts `data` to whole rows when the
/// row length is meant to be valid (so the row codecs can apply, and the column transform
/// with kernels of a quarter row).
fn encode_params<'a>(b: &mut Bytes<'a>) -> (ValueKind, Hints, &'a [u8]) {
    let kind = KINDS[usize::from(b.u8()) % KINDS.len()];
    let row = b.u8();
    let zstd_level = 1 + i32::from(b.u8() % 3);
    let mut data = b.rest();
    let row_len = usize::from(row & 0x7f);
    if row & 0x80 == 0 && row_len > 0 {
        // A valid row length: whole rows of whole values.
        let row_bytes = row_len * kind_width(kind);
        data = &data[..data.len() / row_bytes * row_bytes];
    }
    (
        kind,
        Hints {
            zstd_level,
            row_len,
            // Kernels of a quarter row where rows are valid (the column transform, codec 16).
            period: if row & 0x80 == 0 && row_len.is_multiple_of(4) {
                row_len / 4
            } else {
                0
            },
        },
        data,
    )
}

/// **decode** — `dmx_codec::decode` never panics, whatever the codec id, payload and output
/// length, and never writes outside its output buffer (it gets a slice, so Rust enforces
/// that); an unknown codec id is an error.
///
/// Input: a mode byte. Mode bit 7 clear: bits 0..4 are a codec id (unknown ids included; id 8
/// also goes to `dmx_codec::cast::decode`), then a 3-byte output length (at most 1 MiB) and
/// the payload. Mode bit 7 set: the rest is encoded with `encode_with` (value kind, row length
/// and level chosen by the next bytes, as in `roundtrip`), then up to 15 byte edits (2-byte
/// position, xor value) damage the payload and the output length is nudged by a signed byte,
/// so the decoders see valid-looking payloads with small defects.
pub fn decode(data: &[u8]) {
    let mut b = Bytes(data);
    let mode = b.u8();
    if mode & 0x80 == 0 {
        let id = mode & 0x1f;
        let len = usize::from(b.u8()) | usize::from(b.u8()) << 8 | usize::from(b.u8()) << 16;
        let mut out = vec![0u8; len.min(MAX_OUT)];
        let payload = b.rest();
        match Codec::from_id(id) {
            Ok(codec) => {
                if dmx_codec::decode(codec, payload, &mut out).is_ok() && codec == Codec::Raw {
                    assert_eq!(out, payload);
                }
            }
            Err(_) => assert!(id > 3, "codec id {id} should be known"),
        }
        // The cast codec (format 1.1, id 8) is decoded directly until the id is dispatched.
        if id == 8 {
            let _ = dmx_codec::cast::decode(payload, &mut out);
        }
        return;
    }
    let edits = usize::from(mode & 0x0f);
    let nudge = b.u8() as i8;
    let edits: Vec<(u16, u8)> = (0..edits).map(|_| (b.u16(), b.u8())).collect();
    let (kind, hints, values) = encode_params(&mut b);
    let mut enc = dmx_codec::encode_with(kind, values, hints);
    if !enc.payload.is_empty() {
        let n = enc.payload.len();
        for &(pos, x) in &edits {
            enc.payload[usize::from(pos) % n] ^= x;
        }
    }
    let len = values.len().saturating_add_signed(isize::from(nudge));
    let mut out = vec![0u8; len.min(MAX_OUT)];
    let ok = dmx_codec::decode(enc.codec, &enc.payload, &mut out).is_ok();
    if edits.is_empty() && nudge == 0 {
        assert!(ok, "an undamaged payload must decode");
        assert!(
            out == values,
            "an undamaged payload must decode to its input"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// roundtrip

/// **roundtrip** — any bytes, read as values of any float layout (or as plain bytes), with any
/// row-length hint and zstd level: `encode_with` never panics, never grows the data, and
/// `decode` restores exactly the input; `encode_within` at a limit at, around and far below
/// the payload's size gives that payload exactly when it fits and nothing otherwise (this
/// reaches the lower bound a lossy writer uses to skip planning, on chunks of any size);
/// decoding into a buffer one byte longer or shorter fails (a decoder never returns a
/// wrong-length result).
///
/// Input: value kind, row-length byte (bit 7 set: used as given, possibly not dividing the
/// data; clear: the data is cut to whole rows), zstd level, then the data.
pub fn roundtrip(data: &[u8]) {
    let mut b = Bytes(data);
    let (kind, hints, values) = encode_params(&mut b);
    let enc = dmx_codec::encode_with(kind, values, hints);
    assert!(
        enc.payload.len() <= values.len(),
        "{:?} grew {} bytes to {}",
        enc.codec,
        values.len(),
        enc.payload.len()
    );
    assert!(!enc.entropy_bits.is_nan(), "entropy bound is NaN");
    let mut out = vec![0u8; values.len()];
    if let Err(e) = dmx_codec::decode(enc.codec, &enc.payload, &mut out) {
        panic!("{:?} payload does not decode: {e}", enc.codec);
    }
    assert!(out == values, "{:?} round trip differs", enc.codec);
    // A size limit changes nothing but whether the result is kept: at and around the
    // payload's size, and at a quarter of it (where a lossy writer's bound may rule the
    // chunk out without planning it).
    let n = enc.payload.len();
    for limit in [n, n.saturating_sub(1), n + 1, n / 4] {
        let within = dmx_codec::encode_within(kind, values, hints, limit);
        match within {
            Some(w) => assert!(
                n <= limit && w.codec == enc.codec && w.payload == enc.payload,
                "encode_within({limit}) gave {:?} of {} bytes, encode_with {:?} of {n}",
                w.codec,
                w.payload.len(),
                enc.codec
            ),
            None => assert!(
                n > limit,
                "encode_within({limit}) refused a {n}-byte payload"
            ),
        }
    }
    let mut longer = vec![0u8; values.len() + 1];
    assert!(
        dmx_codec::decode(enc.codec, &enc.payload, &mut longer).is_err(),
        "{:?} decoded into a buffer one byte too long",
        enc.codec
    );
    if let Some(short) = values.len().checked_sub(1) {
        let mut shorter = vec![0u8; short];
        assert!(
            dmx_codec::decode(enc.codec, &enc.payload, &mut shorter).is_err(),
            "{:?} decoded into a buffer one byte too short",
            enc.codec
        );
    }
}

// ---------------------------------------------------------------------------------------------
// archive

/// **archive** — arbitrary bytes written to a file: `dmx::Archive::open` never panics; on an
/// archive it accepts, reading every segment and tensor, the `dmx info` statistics, `verify`,
/// `decompress` and `extract` never panic (errors are fine), and a `decompress` that
/// succeeds restores files of the recorded sizes whose segments have the recorded BLAKE3.
///
/// Because random changes rarely keep the index checksum valid, an input whose index parses
/// is also tried a second time with its index and chunk checksums recomputed, so damaged
/// indexes and payloads reach the engine and the decoders.
///
/// This version reads every segment whole, whatever its declared size (the regression test
/// uses it); the fuzz target uses [`archive_bounded`] with [`FUZZ_MAX_READ`].
pub fn archive(data: &[u8]) {
    archive_bounded(data, u64::MAX);
}

/// [`archive`], reading whole only the segments of at most `max_read` declared bytes.
pub fn archive_bounded(data: &[u8], max_read: u64) {
    let dir = scratch();
    check_archive(dir.path(), data, max_read);
    if let Some(fixed) = fix_checksums(data)
        && fixed != data
    {
        check_archive(dir.path(), &fixed, max_read);
    }
}

/// `data` with every chunk checksum and the index checksum recomputed, when its trailer and
/// index parse.
pub fn fix_checksums(data: &[u8]) -> Option<Vec<u8>> {
    let limits = Limits::default();
    let t = Trailer::from_bytes(data.get(data.len().checked_sub(32)?..)?).ok()?;
    t.check(data.len() as u64, &limits).ok()?;
    let start = usize::try_from(t.index_offset).ok()?;
    let end = start + usize::try_from(t.index_len).ok()?;
    let flags = dmx_format::preamble_flags(data);
    let mut index = Index::from_stored(&data[start..end], flags, t.index_offset, &limits).ok()?;
    for e in &mut index.entries {
        for s in &mut e.segments {
            for c in &mut s.chunks {
                let at = usize::try_from(c.offset).ok()?;
                let stored = data.get(at..at + c.stored_len as usize)?;
                c.xxh3 = dmx_format::xxh3_64(stored);
            }
        }
    }
    let bytes = index.to_stored(flags);
    let mut out = data[..start].to_vec();
    out.extend_from_slice(&bytes);
    out.extend_from_slice(&Trailer::for_index(t.index_offset, &bytes).to_bytes());
    Some(out)
}

fn check_archive(dir: &Path, data: &[u8], max_read: u64) {
    let path = dir.join("fuzz.dmx");
    std::fs::write(&path, data).expect("write the archive");
    let archive = match dmx::Archive::open(&path) {
        Ok(a) => a,
        Err(_) => return,
    };
    let opts = opts();
    let _ = dmx::Stats::of_archive(&archive);
    for entry in &archive.index().entries {
        for seg in &entry.segments {
            if seg.len <= max_read {
                let _ = archive.read_segment(entry, seg);
            }
        }
    }
    let names: Vec<String> = archive
        .tensors()
        .filter(|t| t.segment.len <= max_read)
        .map(|t| t.info.name.clone())
        .collect();
    for name in &names {
        let _ = archive.read_tensor(name);
    }
    let _ = dmx::verify(&archive, None, &opts);
    let out = dir.join("restored");
    if dmx::decompress(&path, &out, &opts).is_ok() {
        check_restored(&archive, &out);
    }
    remove(&out);
    if let Some(first) = names.first() {
        let extracted = dir.join("extracted.safetensors");
        let _ = dmx::extract(&archive, std::slice::from_ref(first), &extracted, &opts);
        remove(&extracted);
    }
}

/// A successful `decompress` restored every entry with its recorded size and segment hashes.
fn check_restored(archive: &dmx::Archive, out: &Path) {
    let entries = &archive.index().entries;
    let file_of = |e: &Entry| -> PathBuf {
        match archive.index().root {
            dmx_format::Root::File => out.to_path_buf(),
            dmx_format::Root::Directory => out.join(&e.path),
        }
    };
    for e in entries {
        if e.kind == dmx_format::EntryKind::Pack {
            // Not a file: its bytes are the packed files after it (format 1.2).
            continue;
        }
        let bytes = std::fs::read(file_of(e)).expect("a restored file is readable");
        assert_eq!(bytes.len() as u64, e.size, "{}: restored size", e.path);
        for s in &e.segments {
            let range = s.offset as usize..(s.offset + s.len) as usize;
            assert!(
                blake3::hash(&bytes[range]).as_bytes() == &s.blake3,
                "{}: restored segment at {} does not match its BLAKE3",
                e.path,
                s.offset
            );
        }
    }
}

fn remove(path: &Path) {
    if path.is_dir() {
        let _ = std::fs::remove_dir_all(path);
    } else {
        let _ = std::fs::remove_file(path);
    }
}

// ---------------------------------------------------------------------------------------------
// safetensors

/// Dtypes the structured safetensors builder picks from, with their size in bits.
const DTYPES: [(&str, u64); 12] = [
    ("BF16", 16),
    ("F16", 16),
    ("F32", 32),
    ("F64", 64),
    ("F8_E4M3", 8),
    ("F8_E5M2", 8),
    ("I64", 64),
    ("I32", 32),
    ("U8", 8),
    ("BOOL", 8),
    ("F4", 4),
    ("U16", 16),
];

/// **safetensors** — any bytes stored as a `.safetensors` input: `dmx::compress` succeeds
/// (input that is not valid safetensors is stored as opaque bytes), `verify` against the input
/// passes, and `decompress` restores a file byte-identical to the input; every tensor read
/// back with `read_tensor` equals its bytes in the input.
///
/// Input: a mode byte. Even: the whole input (mode byte included) is the file. Odd: the rest
/// describes a safetensors file that the builder writes with a valid-looking header (up to
/// four tensors of assorted dtypes and small shapes, sometimes a zero dimension beside huge
/// ones, `__metadata__`, padding, data offsets sometimes off by one).
pub fn safetensors(data: &[u8]) {
    let file = match data.split_first() {
        Some((&mode, rest)) if mode & 1 == 1 => build_safetensors(rest),
        _ => data.to_vec(),
    };
    compress_verify_restore(&file, "model.safetensors", |archive| {
        for t in archive.tensors() {
            // A packed tensor is a part of its segment (format 1.2).
            let start = (t.segment.offset + t.offset) as usize;
            let want = &file[start..start + t.len as usize];
            match archive.read_tensor(&t.info.name) {
                Ok(got) => assert!(got == want, "tensor {:?} differs", t.info.name),
                Err(e) => panic!("tensor {:?} does not read back: {e}", t.info.name),
            }
        }
    });
}

/// The shared part of the `safetensors` and `pt_compress` properties: `file`, stored under
/// `name`, compresses without error, `verify` against it passes, `check` accepts the archive,
/// and `decompress` restores it byte for byte.
fn compress_verify_restore(file: &[u8], name: &str, check: impl FnOnce(&dmx::Archive)) {
    let dir = scratch();
    let input = dir.path().join(name);
    std::fs::write(&input, file).expect("write the input");
    let packed = dir.path().join("model.dmx");
    let opts = opts();
    if let Err(e) = dmx::compress(&input, &packed, &opts) {
        panic!("compress failed: {e}");
    }
    let archive = match dmx::Archive::open(&packed) {
        Ok(a) => a,
        Err(e) => panic!("the archive compress wrote does not open: {e}"),
    };
    match dmx::verify(&archive, Some(&input), &opts) {
        Ok(r) => assert!(r.ok, "verify against the input failed: {:?}", r.files),
        Err(e) => panic!("verify failed: {e}"),
    }
    check(&archive);
    let restored = dir.path().join(format!("restored-{name}"));
    if let Err(e) = dmx::decompress(&packed, &restored, &opts) {
        panic!("decompress failed: {e}");
    }
    let back = std::fs::read(&restored).expect("read the restored file");
    assert!(back == file, "the restored file differs from the input");
}

/// Fuzz target `pt_compress` (issue 14). Property: any bytes stored as a file named
/// `model.pt` — mutated `torch.save` files reach the `torch.save` planner (format 1.3 torch
/// entries), anything else becomes a blob — compress without error, `verify` against the input
/// passes, and `decompress` restores a byte-identical file.
pub fn pt_compress(data: &[u8]) {
    compress_verify_restore(data, "model.pt", |_| {});
}

/// A safetensors file described by `data` (see [`safetensors`]).
pub fn build_safetensors(data: &[u8]) -> Vec<u8> {
    let mut b = Bytes(data);
    let flags = b.u8();
    let count = usize::from(b.u8() % 5);
    let mut items = Vec::new();
    let mut body = Vec::new();
    for i in 0..count {
        let (dtype, bits) = DTYPES[usize::from(b.u8()) % DTYPES.len()];
        let rank = usize::from(b.u8() % 4);
        let shape_byte = b.u8();
        let mut shape: Vec<u64> = (0..rank).map(|_| u64::from(b.u8() % 9)).collect();
        if shape_byte & 0x80 != 0 && rank >= 2 {
            // A zero dimension makes the tensor empty whatever the others are.
            shape[0] = 0;
            for d in &mut shape[1..] {
                *d = b.u64() >> (shape_byte & 0x3f);
            }
        }
        let elems = shape.iter().try_fold(1u64, |a, &d| a.checked_mul(d));
        let len = elems
            .and_then(|n| n.checked_mul(bits))
            .map_or(0, |n| n.div_ceil(8)) as usize;
        let start = body.len();
        let mut bytes = b.take(len).to_vec();
        bytes.resize(len, 0);
        body.extend_from_slice(&bytes);
        let mut end = body.len();
        if flags & 0x40 != 0 && i == 0 {
            // An off-by-one data offset: not valid safetensors, stored as opaque bytes.
            end += 1;
        }
        let name = if flags & 0x20 != 0 {
            format!("t{i}.\u{e9}\\\"\u{1F600}")
        } else {
            format!("t{i}")
        };
        let dims: Vec<String> = shape.iter().map(u64::to_string).collect();
        items.push(format!(
            "{}:{{\"dtype\":\"{dtype}\",\"shape\":[{}],\"data_offsets\":[{start},{end}]}}",
            json_string(&name),
            dims.join(",")
        ));
    }
    if flags & 0x01 != 0 {
        items.insert(
            usize::from(flags >> 1) % (items.len() + 1),
            "\"__metadata__\":{\"format\":\"pt\"}".to_string(),
        );
    }
    let sep = if flags & 0x02 != 0 { ", " } else { "," };
    let mut header = format!("{{{}}}", items.join(sep)).into_bytes();
    if flags & 0x04 != 0 {
        while header.len() % 8 != 0 {
            header.push(b' ');
        }
    }
    let mut file = (header.len() as u64).to_le_bytes().to_vec();
    file.extend_from_slice(&header);
    file.extend_from_slice(&body);
    if flags & 0x08 != 0 {
        // Trailing bytes after the tensor data: not valid safetensors.
        file.push(0);
    }
    file
}

fn json_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

// ---------------------------------------------------------------------------------------------
// Lossy and delta decoders (bfp, quant, ints, delta)

/// The float layouts of the lossy targets.
const FLOATS: [FloatLayout; 4] = [
    FloatLayout::BF16,
    FloatLayout::F16,
    FloatLayout::F32,
    FloatLayout::F64,
];

/// Reads up to 15 byte edits (2-byte position, xor value); their count is `mode & 0x0f`.
fn read_edits(b: &mut Bytes<'_>, mode: u8) -> Vec<(u16, u8)> {
    (0..mode & 0x0f).map(|_| (b.u16(), b.u8())).collect()
}

fn apply_edits(payload: &mut [u8], edits: &[(u16, u8)]) {
    if payload.is_empty() {
        return;
    }
    let n = payload.len();
    for &(pos, x) in edits {
        payload[usize::from(pos) % n] ^= x;
    }
}

/// The raw little-endian bits of value `i` of `data` in `layout`.
fn value_bits(layout: FloatLayout, data: &[u8], i: usize) -> u64 {
    let w = layout.bytes();
    let mut v = [0u8; 8];
    v[..w].copy_from_slice(&data[i * w..(i + 1) * w]);
    u64::from_le_bytes(v)
}

/// Cuts `data` to whole values of `layout`.
fn whole(layout: FloatLayout, data: &[u8]) -> &[u8] {
    &data[..data.len() / layout.bytes() * layout.bytes()]
}

/// An output length: the payload's own length nudged by a signed byte.
fn nudged(len: usize, nudge: i8) -> usize {
    len.saturating_add_signed(isize::from(nudge)).min(MAX_OUT)
}

/// **bfp** — `dmx_codec::bfp::decode` never panics on any payload and output length. Mode bit
/// 7 clear: the rest is the payload, decoded into a buffer of a length read from the input.
/// Set: values of BF16/F16/F32 are encoded with parameters and a row length read from the
/// input (skipped when `bfp::check` rejects them); the undamaged payload decodes into the
/// right length and not into one byte more; `bfp::own_restored` gives exactly what BFP in
/// groups of one at the `M` it chose restores; then up to 15 byte edits and a length nudge
/// damage the payload, and decoding must not panic.
pub fn bfp(data: &[u8]) {
    use dmx_codec::bfp;
    let mut b = Bytes(data);
    let mode = b.u8();
    if mode & 0x80 == 0 {
        let len = usize::from(b.u16()) * usize::from(1 + (mode & 7));
        let mut out = vec![0u8; len.min(MAX_OUT)];
        let _ = bfp::decode(b.rest(), &mut out);
        return;
    }
    let edits = read_edits(&mut b, mode);
    let nudge = b.u8() as i8;
    let layout = FLOATS[usize::from(b.u8()) % 3];
    let p = bfp::Params {
        mantissa_bits: u32::from(b.u8() % 26),
        group_size: u32::from(b.u16()) % (bfp::MAX_GROUP + 2),
    };
    let row_len = usize::from(b.u8());
    if bfp::check(layout, p).is_err() {
        return;
    }
    let values = whole(layout, b.rest());
    let (mut payload, bits) = bfp::encode(layout, values, row_len, p);
    assert!(!bits.is_nan(), "BFP entropy bound is NaN");
    let mut out = vec![0u8; values.len()];
    if let Err(e) = bfp::decode(&payload, &mut out) {
        panic!("an undamaged BFP payload does not decode: {e}");
    }
    check_non_finite_exact(layout, values, &out, "BFP");
    // Own exponents: the rounded floats the engine stores for moments are what the BFP
    // payload of groups of one at the chosen M restores.
    let (rounded, m) = bfp::own_restored(layout, values, row_len, p);
    let own = bfp::Params {
        mantissa_bits: m,
        group_size: 1,
    };
    let (_, _, want) = bfp::encode_restored(layout, values, row_len, own);
    assert!(
        rounded == want,
        "own_restored differs from BFP at M={m}, G=1"
    );
    let mut longer = vec![0u8; values.len() + 1];
    assert!(
        bfp::decode(&payload, &mut longer).is_err(),
        "BFP decoded into a buffer one byte too long"
    );
    apply_edits(&mut payload, &edits);
    let mut out = vec![0u8; nudged(values.len(), nudge)];
    let _ = bfp::decode(&payload, &mut out);
}

/// NaN and ±Inf values of the original come back with exactly their bits (lossy codecs store
/// them as escapes).
fn check_non_finite_exact(layout: FloatLayout, original: &[u8], decoded: &[u8], what: &str) {
    for i in 0..original.len() / layout.bytes() {
        let raw = value_bits(layout, original, i);
        if !dmx_codec::grid::to_f64(layout, raw).is_finite() {
            assert_eq!(
                value_bits(layout, decoded, i),
                raw,
                "{what}: non-finite value {i} not restored exactly"
            );
        }
    }
}

/// **quant** — `dmx_codec::quant::decode` never panics on any payload and output length.
/// Mode bit 7 clear: the rest is the payload. Set: values of BF16/F16/F32/F64 are quantized
/// with a step (any `f64`, NaN and zero included), a grid width (2..=32) and a row length
/// (1..=256, for codec 15) read from the input; the undamaged payload decodes, restores every NaN and ±Inf exactly and refuses a
/// buffer one byte too long; the damaged payload (edits, length nudge) must not panic. The
/// same values also go through the floating grid (`fquant`, codec 9, BF16/F16/F32 with
/// `m = bits mod (F + 1)`): it decodes, keeps NaN and ±Inf exact and restores no non-zero
/// value as 0, and [`dmx_codec::fquant::restore`] gives exactly what it decodes.
pub fn quant(data: &[u8]) {
    use dmx_codec::quant;
    let mut b = Bytes(data);
    let mode = b.u8();
    if mode & 0x80 == 0 {
        let len = usize::from(b.u16()) * usize::from(1 + (mode & 7));
        let mut out = vec![0u8; len.min(MAX_OUT)];
        let _ = quant::decode(b.rest(), &mut out);
        return;
    }
    let edits = read_edits(&mut b, mode);
    let nudge = b.u8() as i8;
    let layout = FLOATS[usize::from(b.u8()) % FLOATS.len()];
    let bits = 2 + u32::from(b.u8()) % 31;
    let step = f64::from_bits(b.u64());
    // Rows of 1 to 256 values (codec 15's classes where they divide the chunk and pay).
    let row_len = 1 + usize::from(b.u8());
    let values = whole(layout, b.rest());
    let (mut payload, entropy) = quant::encode_rows(layout, values, step, bits, row_len);
    assert!(!entropy.is_nan(), "quant entropy bound is NaN");
    let mut out = vec![0u8; values.len()];
    if let Err(e) = quant::decode(&payload, &mut out) {
        panic!("an undamaged quant payload does not decode: {e}");
    }
    check_non_finite_exact(layout, values, &out, "quant");
    // The writer's one-pass form (blocks of eight, the integers read from their rounding's
    // bits): the same payload, and the bytes the decoder restores.
    let (same, _, restored) = quant::encode_restored(layout, values, step, bits, row_len);
    assert!(
        same == payload,
        "quant::encode_restored wrote another payload"
    );
    assert!(
        restored == out,
        "quant::encode_restored restores other bytes than decode"
    );
    let mut longer = vec![0u8; values.len() + 1];
    assert!(
        quant::decode(&payload, &mut longer).is_err(),
        "quant decoded into a buffer one byte too long"
    );
    apply_edits(&mut payload, &edits);
    let mut out = vec![0u8; nudged(values.len(), nudge)];
    let _ = quant::decode(&payload, &mut out);
    // The floating grid (codec 9, format 1.4) on the same values: decodes, keeps NaN and ±Inf
    // exact, restores no non-zero value as 0; a damaged copy must not panic.
    use dmx_codec::{fgrid, fquant};
    if fgrid::supports(layout) {
        let m = bits % (fgrid::max_fraction_bits(layout) + 1);
        let (mut payload, entropy) = fquant::encode(layout, values, m);
        assert!(!entropy.is_nan(), "fquant entropy bound is NaN");
        let mut out = vec![0u8; values.len()];
        if let Err(e) = fquant::decode(&payload, &mut out) {
            panic!("an undamaged fquant payload does not decode: {e}");
        }
        check_non_finite_exact(layout, values, &out, "fquant");
        assert!(
            fquant::restore(layout, values, m) == out,
            "fquant::restore differs from the decoder"
        );
        let w = layout.bytes();
        let mag = |c: &[u8]| {
            let mut v = [0u8; 8];
            v[..w].copy_from_slice(c);
            u64::from_le_bytes(v) & ((1u64 << (8 * w - 1)) - 1)
        };
        for (x, y) in values.chunks_exact(w).zip(out.chunks_exact(w)) {
            assert!(
                mag(x) == 0 || mag(y) != 0,
                "fquant restored a non-zero value as 0"
            );
        }
        apply_edits(&mut payload, &edits);
        let mut out = vec![0u8; nudged(values.len(), nudge)];
        let _ = fquant::decode(&payload, &mut out);
    }
}

/// **ints** — `dmx_codec::ints::decode_signed` / `decode_unsigned` never panic, and report
/// consuming no more bytes than they were given. Mode bit 7 clear: the rest is a block,
/// decoded into a count read from the input. Set: the rest, read as integers of mixed widths
/// (the mode's low bits pick the width pattern), round-trips exactly through
/// `encode_signed`/`decode_signed` and `encode_unsigned`/`decode_unsigned`, consuming the whole
/// block, and a damaged copy (edits) and a wrong count must not panic.
pub fn ints(data: &[u8]) {
    use dmx_codec::ints;
    let mut b = Bytes(data);
    let mode = b.u8();
    if mode & 0x80 == 0 {
        let n = usize::from(b.u16()).min(MAX_OUT / 8);
        let block = b.rest();
        let mut out = vec![0i64; n];
        if let Ok(used) = ints::decode_signed(block, &mut out) {
            assert!(used <= block.len(), "consumed more bytes than given");
        }
        let mut out = vec![0u64; n];
        if let Ok(used) = ints::decode_unsigned(block, &mut out) {
            assert!(used <= block.len(), "consumed more bytes than given");
        }
        return;
    }
    let edits = read_edits(&mut b, mode);
    let extra = b.u8();
    let width = [1usize, 2, 4, 8][usize::from(mode >> 4) & 3];
    let rest = b.rest();
    let values: Vec<i64> = rest
        .chunks(width)
        .map(|c| {
            let mut v = [0u8; 8];
            v[..c.len()].copy_from_slice(c);
            // Sign-extend from the chunk's width.
            let shift = 64 - 8 * c.len() as u32;
            (i64::from_le_bytes(v) << shift) >> shift
        })
        .collect();
    let mut block = ints::encode_signed(&values);
    let mut out = vec![0i64; values.len()];
    match ints::decode_signed(&block, &mut out) {
        Ok(used) => assert_eq!(used, block.len(), "signed block not consumed exactly"),
        Err(e) => panic!("an undamaged signed block does not decode: {e}"),
    }
    assert!(out == values, "signed integers round trip differs");
    let unsigned: Vec<u64> = values.iter().map(|&v| v as u64).collect();
    let ublock = ints::encode_unsigned(&unsigned);
    let mut uout = vec![0u64; unsigned.len()];
    match ints::decode_unsigned(&ublock, &mut uout) {
        Ok(used) => assert_eq!(used, ublock.len(), "unsigned block not consumed exactly"),
        Err(e) => panic!("an undamaged unsigned block does not decode: {e}"),
    }
    assert!(uout == unsigned, "unsigned integers round trip differs");
    apply_edits(&mut block, &edits);
    let mut out = vec![0i64; values.len() + usize::from(extra & 3)];
    let _ = ints::decode_signed(&block, &mut out);
}

/// **delta** — `dmx_codec::delta::decode` / `decode_quantized` never panic, whatever the
/// payload, base and output length. Mode bit 7 clear: a 2-byte base length, the base, then the
/// payload; decoded into a buffer of the base's length (or a nudged one). Set: a value kind,
/// then a base and a target built from the input (the target is the base with some values
/// changed, or an unrelated copy): `delta::encode` then `delta::decode` restores the target
/// exactly; `encode_quantized` (float layouts, any step, grid width 2..=32) decodes, restoring
/// NaN and ±Inf target values exactly; damaged payloads (edits) must not panic.
pub fn delta(data: &[u8]) {
    use dmx_codec::delta;
    let mut b = Bytes(data);
    let mode = b.u8();
    if mode & 0x80 == 0 {
        let nudge = if mode & 0x40 != 0 { b.u8() as i8 } else { 0 };
        let base_len = usize::from(b.u16());
        let base = b.take(base_len);
        let payload = b.rest();
        let mut out = vec![0u8; nudged(base.len(), nudge)];
        let _ = delta::decode(payload, base, &mut out);
        let _ = delta::decode_quantized(payload, base, &mut out);
        return;
    }
    let edits = read_edits(&mut b, mode);
    let kind = KINDS[usize::from(b.u8()) % KINDS.len()];
    let how = b.u8();
    let bits = 2 + u32::from(b.u8()) % 31;
    let step = f64::from_bits(b.u64());
    let rest = b.rest();
    // The base is the first half; the target is the base changed by the second half: XORed
    // into every `stride`-th byte (sparse, small changes), or the second half itself.
    let half = rest.len() / 2;
    let base = &rest[..half];
    let target: Vec<u8> = if how & 0x80 != 0 {
        rest[half..half * 2].to_vec()
    } else {
        let stride = usize::from(how).max(1);
        let mut t = base.to_vec();
        for (i, &x) in rest[half..half * 2].iter().enumerate().step_by(stride) {
            t[i] ^= x & 0x0f;
        }
        t
    };
    let (mut payload, entropy) = delta::encode(kind, base, &target);
    assert!(!entropy.is_nan(), "delta entropy bound is NaN");
    let mut out = vec![0u8; target.len()];
    if let Err(e) = delta::decode(&payload, base, &mut out) {
        panic!("an undamaged delta payload does not decode: {e}");
    }
    assert!(out == target, "delta round trip differs");
    if let ValueKind::Float(layout) = kind
        && FLOATS.contains(&layout)
    {
        let (base, target) = (whole(layout, base), whole(layout, &target));
        let (mut q, entropy) = delta::encode_quantized(layout, base, target, step, bits);
        assert!(!entropy.is_nan(), "quantized delta entropy bound is NaN");
        let mut out = vec![0u8; target.len()];
        if let Err(e) = delta::decode_quantized(&q, base, &mut out) {
            panic!("an undamaged quantized delta does not decode: {e}");
        }
        check_non_finite_exact(layout, target, &out, "quantized delta");
        apply_edits(&mut q, &edits);
        let _ = delta::decode_quantized(&q, base, &mut out);
    }
    apply_edits(&mut payload, &edits);
    let _ = delta::decode(&payload, base, &mut out);
}

/// Fuzz target `legacy`. Property: arbitrary bytes as a file of dmx-compress (the first byte
/// picks the magic prepended: none, "DMX1" v2, "DMX\0" envelope, "DMXD"): `detect`, parsing as
/// container, delta and chain manifest, decoding every tensor and reconstructing a delta
/// against a small base never panic and never decode a tensor beyond the limits given.
pub fn legacy(data: &[u8]) {
    use dmx::legacy::reader::{BaseTensor, ChainManifest, Container, DeltaFile, Limits, detect};
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let mut bytes = match pick % 4 {
        0 => Vec::new(),
        1 => b"DMX1\x02\0\0\0".to_vec(),
        2 => b"DMX\0".to_vec(),
        _ => b"DMXD\x01\0\0\0".to_vec(),
    };
    bytes.extend_from_slice(rest);
    let limits = Limits {
        max_manifest_bytes: 1 << 20,
        max_tensors: 1 << 12,
        max_tensor_bytes: 1 << 22,
        max_ndim: 16,
    };
    let _ = detect(&bytes);
    if let Ok(c) = Container::parse(&bytes, &limits) {
        let _ = c.summary();
        for t in &c.tensors {
            if let Ok(d) = c.decode(t) {
                assert!(
                    d.data.len() as u64 <= limits.max_tensor_bytes,
                    "tensor beyond the limit"
                );
            }
        }
    }
    let base = [0u8; 64];
    let shape = [16u64];
    if let Ok(d) = DeltaFile::parse(&bytes, &limits) {
        let _ = d.summary();
        let _ = d.reconstruct(|_| {
            Some(BaseTensor {
                dtype: "F32",
                shape: &shape,
                data: &base,
            })
        });
    }
    let _ = ChainManifest::parse(&bytes, &limits);
}
