//! Damaged archives: every single-byte change and every truncation of a small archive must be
//! rejected (by `Archive::open`, `decompress`, `verify` or `read_tensor`) or, where the byte
//! is unused, restore exactly the original bytes. Never different data, never a panic.
//!
//! A second family recomputes the checksums after damaging a chunk payload or the index, so
//! the damage reaches the codecs and the index parser: no panic, `verify` and `read_tensor`
//! still catch every change of the decoded data, and nothing is written outside the output.
//!
//! The exhaustive matrix over a larger archive is `#[ignore]`d:
//! `cargo test -p dmx --test engine corruption -- --ignored`.

use dmx_testkit as common;
use dmx_testkit::{Restored, fix_index_checksum};

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use common::{Layout, Mode, Tensor};
use dmx::dmx_format::{self, Index, Limits, Trailer};
use dmx::{Archive, Options};

fn opts() -> Options {
    Options {
        threads: Some(1),
        ..Options::default()
    }
}

/// An original (file or folder), its archive, and its tensors.
struct Fixture {
    dir: tempfile::TempDir,
    original: PathBuf,
    archive: Vec<u8>,
    tensors: Vec<(String, Vec<u8>)>,
    restored: Restored,
}

/// A single safetensors file whose archive is about 12 KB and uses every codec.
fn small_file() -> Fixture {
    let tensors = vec![
        Tensor::generated("w.bf16", "BF16", &[48, 80], Mode::Weights, 1),
        Tensor::generated("w.f32", "F32", &[301], Mode::Mixed { rate: 7 }, 2),
        Tensor::generated("w.f16", "F16", &[17, 19], Mode::Weights, 3),
        Tensor::generated("noise", "U8", &[2048], Mode::Random, 4),
        Tensor::generated("ids", "I64", &[64], Mode::Weights, 5),
        Tensor::generated("mask", "BOOL", &[33], Mode::Random, 6),
        Tensor::new("empty", "F32", &[0], vec![]),
        Tensor::generated("e4m3", "F8_E4M3", &[129], Mode::Mixed { rate: 3 }, 7),
        Tensor::generated("emb.rows", "BF16", &[16, 40], Mode::RowScaled, 8),
    ];
    let file = common::safetensors(&tensors, &Layout::pt());
    fixture_from_file(&file, &tensors)
}

fn fixture_from_file(file: &[u8], tensors: &[Tensor]) -> Fixture {
    let dir = common::scratch();
    let original = dir.path().join("model.safetensors");
    common::write(&original, file);
    finish(dir, original, tensors)
}

/// A small folder: a sharded model, JSON files, a nested file.
fn small_folder() -> Fixture {
    let dir = common::scratch();
    let original = dir.path().join("model");
    common::model_folder(&original, 3);
    let tensors = tensors_of(&original);
    finish(dir, original, &tensors)
}

fn tensors_of(folder: &Path) -> Vec<Tensor> {
    // Read the tensors back from a throwaway archive of the folder.
    let tmp = common::scratch();
    let packed = tmp.path().join("a.dmx");
    dmx::compress(folder, &packed, &opts()).expect("compress");
    let archive = Archive::open(&packed).expect("open");
    archive
        .tensors()
        .map(|t| Tensor {
            name: t.info.name.clone(),
            dtype: t.info.dtype.clone(),
            shape: t.info.shape.iter().map(|&d| d as usize).collect(),
            data: archive.read_tensor(&t.info.name).expect("read"),
        })
        .collect()
}

fn finish(dir: tempfile::TempDir, original: PathBuf, tensors: &[Tensor]) -> Fixture {
    let packed = dir.path().join("good.dmx");
    dmx::compress(&original, &packed, &opts()).expect("compress");
    let archive = std::fs::read(&packed).expect("read archive");
    std::fs::remove_file(&packed).expect("remove");
    Fixture {
        restored: Restored::read(&original),
        dir,
        original,
        archive,
        tensors: tensors
            .iter()
            .map(|t| (t.name.clone(), t.data.clone()))
            .collect(),
    }
}

/// How an archive copy was damaged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Damage {
    /// Bytes changed or cut, checksums left alone: every reader, `decompress` included, must
    /// reject any change of the data.
    Plain,
    /// A chunk payload changed behind a recomputed chunk and index checksum: the chunk
    /// checksum passes, but `decompress` (BLAKE3 per segment before the rename), `verify`
    /// (BLAKE3, SHA-256) and `read_tensor` (BLAKE3) must not pass different data.
    Payload,
    /// The index changed behind a recomputed index checksum: as `Payload`, and the paths of
    /// restored folder files may differ (they are protected by the index checksum alone).
    Index,
}

/// What happened to one damaged copy.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// Some operation reported the damage.
    Rejected,
    /// Nothing noticed, and everything decoded to the original bytes.
    Intact,
}

impl Fixture {
    fn damaged(&self) -> PathBuf {
        self.dir.path().join("damaged.dmx")
    }

    fn out(&self) -> PathBuf {
        self.dir.path().join("out")
    }

    /// Writes `bytes` as an archive and runs readers over it; see [`Damage`] for what each
    /// kind of damage must lead to.
    ///
    /// `full` runs every reader (`verify`, `read_tensor` of every tensor, `extract`, `Stats`,
    /// `decompress`); otherwise `Archive::open` and `decompress` only, and every reader when
    /// those accept the copy. Each engine call builds a thread pool, which dominates the run
    /// time of the exhaustive loops.
    fn check(&self, bytes: &[u8], what: &str, damage: Damage, full: bool) -> Outcome {
        let path = self.damaged();
        std::fs::write(&path, bytes).expect("write damaged copy");
        let out = self.out();
        let archive = match Archive::open(&path) {
            Ok(a) => a,
            Err(_) => {
                assert!(
                    dmx::decompress(&path, &out, &opts()).is_err(),
                    "{what}: open failed but decompress succeeded"
                );
                assert!(!out.exists(), "{what}: output left behind");
                return Outcome::Rejected;
            }
        };
        let mut noticed = false;
        let mut verified = None;
        if full {
            verified = Some(self.other_readers(&archive, what, damage, &mut noticed));
        }
        drop(archive);
        let restored_ok = match dmx::decompress(&path, &out, &opts()) {
            Ok(()) => {
                let restored = Restored::read(&out);
                remove(&out);
                self.same_data(restored, damage)
            }
            Err(_) => {
                assert!(!out.exists(), "{what}: output left behind");
                noticed = true;
                true
            }
        };
        let verified = match verified {
            Some(v) => v,
            None if noticed => return Outcome::Rejected,
            None => {
                let archive = Archive::open(&path).expect("opened before");
                self.other_readers(&archive, what, damage, &mut noticed)
            }
        };
        if !restored_ok {
            assert!(
                damage == Damage::Index,
                "{what}: decompress restored different data"
            );
            assert!(!verified, "{what}: verify passed but the data differs");
            noticed = true;
        }
        if verified {
            assert!(
                !noticed,
                "{what}: verify passed but another reader reported damage"
            );
            Outcome::Intact
        } else {
            Outcome::Rejected
        }
    }

    /// Runs `verify`, `read_tensor`, `Stats` and `extract`; returns whether `verify` passed
    /// and sets `noticed` when any reader reported damage.
    fn other_readers(
        &self,
        archive: &Archive,
        what: &str,
        damage: Damage,
        noticed: &mut bool,
    ) -> bool {
        let verified = match dmx::verify(archive, None, &opts()) {
            Ok(r) => r.ok,
            Err(_) => false,
        };
        *noticed |= !verified;
        POOL.with(|pool| {
            pool.install(|| {
                for (name, data) in &self.tensors {
                    match archive.read_tensor(name) {
                        Ok(d) => assert!(
                            d == *data,
                            "{what}: read_tensor({name:?}) returned other data"
                        ),
                        // After index damage the name itself may have changed.
                        Err(e) if damage == Damage::Index && e.is_refusal() => {}
                        Err(_) => *noticed = true,
                    }
                }
            })
        });
        // Stats and extraction must not panic on whatever index passed validation.
        let _ = dmx::Stats::of_archive(archive);
        if let Some((name, _)) = self.tensors.first() {
            let x = self.dir.path().join("x.safetensors");
            match dmx::extract(archive, std::slice::from_ref(name), &x, &opts()) {
                Ok(()) => std::fs::remove_file(&x).expect("remove extract"),
                Err(e) => {
                    assert!(!x.exists(), "{what}: extract output left behind");
                    if !(damage == Damage::Index && e.is_refusal()) {
                        *noticed = true;
                    }
                }
            }
        }
        verified
    }

    /// Whether `restored` holds the original data. After index damage, restored folder
    /// paths (and even the file/folder root) may differ, as they are protected by the index
    /// checksum alone: only the file contents are compared.
    fn same_data(&self, restored: Restored, damage: Damage) -> bool {
        if damage != Damage::Index {
            return restored == self.restored;
        }
        let contents = |r: &Restored| {
            let mut c: Vec<Vec<u8>> = match r {
                Restored::File(d) => vec![d.clone()],
                Restored::Folder(v) => v.iter().map(|(_, d)| d.clone()).collect(),
            };
            c.sort();
            c
        };
        contents(&restored) == contents(&self.restored)
    }

    /// Checks that the fixture's folder holds only what the test put there.
    fn assert_clean(&self) {
        let mut names: Vec<String> = std::fs::read_dir(self.dir.path())
            .expect("read_dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        let original = self
            .original
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        let mut want = vec!["damaged.dmx".to_string(), original];
        want.sort();
        assert_eq!(names, want, "unexpected files beside the archive");
    }
}

thread_local! {
    /// A one-thread pool for `read_tensor`, which otherwise wakes the global pool.
    static POOL: rayon::ThreadPool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .expect("thread pool");
}

fn remove(path: &Path) {
    if path.is_dir() {
        std::fs::remove_dir_all(path).expect("remove dir");
    } else {
        std::fs::remove_file(path).expect("remove file");
    }
}

/// Bytes 10..12 hold the minor version, which readers of the same major accept.
const UNUSED: [usize; 2] = [10, 11];

/// Changes every byte of the archive (XOR `patterns`) and checks each copy, with every
/// reader on every `full_every`th byte; returns the positions whose change went unnoticed.
fn flip_every_byte(f: &Fixture, patterns: &[u8], full_every: usize) -> BTreeSet<usize> {
    // The untouched archive restores the original.
    assert_eq!(
        f.check(&f.archive, "intact archive", Damage::Plain, true),
        Outcome::Intact
    );
    let mut unnoticed = BTreeSet::new();
    let mut bytes = f.archive.clone();
    for i in 0..bytes.len() {
        for &p in patterns {
            bytes[i] ^= p;
            let what = format!("byte {i} of {} ^ {p:#04x}", bytes.len());
            if f.check(&bytes, &what, Damage::Plain, i % full_every == 0) == Outcome::Intact {
                unnoticed.insert(i);
            }
            bytes[i] ^= p;
        }
    }
    f.assert_clean();
    unnoticed
}

fn truncate_everywhere(f: &Fixture, stride: usize) {
    let out = f.out();
    let mut lens: Vec<usize> = (0..f.archive.len()).step_by(stride).collect();
    // Always include the cuts next to the trailer and the preamble.
    let n = f.archive.len();
    lens.extend((n.saturating_sub(40)..n).chain(0..20));
    for len in lens {
        let path = f.damaged();
        std::fs::write(&path, &f.archive[..len]).expect("write");
        let e = Archive::open(&path).err();
        assert!(e.is_some(), "truncated to {len} bytes: opened");
        assert!(
            dmx::decompress(&path, &out, &opts()).is_err(),
            "truncated to {len} bytes: decompressed"
        );
        assert!(!out.exists());
    }
    // Extra bytes after the trailer are rejected too.
    let mut longer = f.archive.clone();
    longer.extend_from_slice(b"\0");
    std::fs::write(f.damaged(), &longer).expect("write");
    assert!(
        Archive::open(&f.damaged()).is_err(),
        "appended byte accepted"
    );
    f.assert_clean();
}

/// The index, its offset, and the archive rebuilt around a changed index.
struct Parts {
    index_offset: usize,
    index_len: usize,
}

fn parts(archive: &[u8]) -> Parts {
    let n = archive.len();
    let trailer = Trailer::from_bytes(&archive[n - 32..]).expect("trailer");
    Parts {
        index_offset: trailer.index_offset as usize,
        index_len: trailer.index_len as usize,
    }
}

/// Damages every byte of every chunk payload (stride `stride`), recomputing the chunk's
/// checksum in the index and the index checksum, so the bytes reach the decoder.
fn damage_payloads_behind_checksums(f: &Fixture, patterns: &[u8], stride: usize) -> usize {
    let p = parts(&f.archive);
    let index = Index::from_bytes(
        &f.archive[p.index_offset..p.index_offset + p.index_len],
        p.index_offset as u64,
        &Limits::default(),
    )
    .expect("index");
    let mut chunks = Vec::new();
    for (e, entry) in index.entries.iter().enumerate() {
        for (s, seg) in entry.segments.iter().enumerate() {
            for c in 0..seg.chunks.len() {
                chunks.push((e, s, c));
            }
        }
    }
    let mut checked = 0;
    let mut codecs = BTreeSet::new();
    for &(e, s, c) in &chunks {
        let chunk = index.entries[e].segments[s].chunks[c];
        codecs.insert(chunk.codec);
        let start = chunk.offset as usize;
        for at in (start..start + chunk.stored_len as usize).step_by(stride) {
            for &pat in patterns {
                let mut bytes = f.archive.clone();
                bytes[at] ^= pat;
                let mut idx = index.clone();
                idx.entries[e].segments[s].chunks[c].xxh3 =
                    xxhash_rust::xxh3::xxh3_64(&bytes[start..start + chunk.stored_len as usize]);
                let new_index = idx.to_bytes();
                assert_eq!(new_index.len(), p.index_len);
                bytes[p.index_offset..p.index_offset + p.index_len].copy_from_slice(&new_index);
                fix_index_checksum(&mut bytes);
                let what = format!(
                    "payload byte {at} (entry {e}, segment {s}, chunk {c}, codec {}) ^ {pat:#04x} \
                     behind a valid checksum",
                    chunk.codec
                );
                f.check(&bytes, &what, Damage::Payload, true);
                checked += 1;
            }
        }
    }
    // Raw, zstd, float-huff and float-huff-rows payloads were all damaged.
    assert_eq!(
        codecs,
        BTreeSet::from([0, 1, 2, 3]),
        "codecs in the fixture"
    );
    f.assert_clean();
    checked
}

/// Changes every index byte and recomputes the index checksum: the parser and the engine
/// must reject or survive every variant without panicking or writing outside the output.
fn damage_index_behind_checksum(f: &Fixture, patterns: &[u8]) {
    let p = parts(&f.archive);
    for at in p.index_offset..p.index_offset + p.index_len {
        for &pat in patterns {
            let mut bytes = f.archive.clone();
            bytes[at] ^= pat;
            fix_index_checksum(&mut bytes);
            let what = format!("index byte {} ^ {pat:#04x}", at - p.index_offset);
            f.check(&bytes, &what, Damage::Index, true);
        }
    }
    f.assert_clean();
}

/// A format 1.2 folder archive (compressed index): a model of 80 tiny tensors (packed
/// segments) and 60 tiny text files (a pack).
fn packed_folder() -> Fixture {
    let dir = common::scratch();
    let original = dir.path().join("packed");
    let tensors: Vec<Tensor> = (0..80u64)
        .map(|i| {
            let dtype = if i % 2 == 0 { "F32" } else { "BF16" };
            // Any two names differ in two bytes: a one-byte change of the index cannot
            // turn one tensor's name into another's (names are protected by the index
            // checksum alone).
            Tensor::generated(&format!("l.{i:02}.{i:02}.w"), dtype, &[4], Mode::Weights, i)
        })
        .collect();
    common::write(
        &original.join("model.safetensors"),
        &common::safetensors(&tensors, &Layout::default()),
    );
    for i in 0..60 {
        common::write(
            &original.join(format!("t/{i}.txt")),
            format!("text {i}\n").as_bytes(),
        );
    }
    finish(dir, original, &tensors)
}

/// Issue 11, finding 9: the corruption checks also cover a format 1.2 archive, whose index
/// is compressed and whose tensors and files share chunks.
#[test]
fn damage_to_a_format_1_2_archive_is_caught() {
    let f = packed_folder();
    assert_eq!(
        &f.archive[8..16],
        &[1, 0, 2, 0, 1, 0, 0, 0],
        "1.2, compressed index"
    );
    let unnoticed = flip_every_byte(&f, &[0xff], 13);
    assert_eq!(unnoticed, BTreeSet::from(UNUSED));
    truncate_everywhere(&f, 7);
    damage_index_behind_checksum(&f, &[0xff, 0x01]);
}

#[test]
fn fixture_sizes() {
    let f = small_file();
    assert!(
        (8_000..60_000).contains(&f.archive.len()),
        "archive is {} bytes",
        f.archive.len()
    );
    let g = small_folder();
    assert!(
        g.archive.len() < 20_000,
        "archive is {} bytes",
        g.archive.len()
    );
}

#[test]
fn every_byte_flip_of_a_file_archive_is_caught() {
    let f = small_file();
    let unnoticed = flip_every_byte(&f, &[0xff], 11);
    assert_eq!(unnoticed, BTreeSet::from(UNUSED));
}

#[test]
fn single_bit_flips_in_the_preamble_index_and_trailer_are_caught() {
    let f = small_file();
    let p = parts(&f.archive);
    let mut bytes = f.archive.clone();
    let positions = (0..16).chain(p.index_offset..f.archive.len());
    for i in positions {
        for bit in 0..8 {
            bytes[i] ^= 1 << bit;
            let outcome = f.check(
                &bytes,
                &format!("byte {i} bit {bit}"),
                Damage::Plain,
                bit == 0,
            );
            assert!(
                outcome == Outcome::Rejected || UNUSED.contains(&i),
                "byte {i} bit {bit} went unnoticed"
            );
            bytes[i] ^= 1 << bit;
        }
    }
    f.assert_clean();
}

#[test]
fn every_byte_flip_of_a_folder_archive_is_caught() {
    let f = small_folder();
    let unnoticed = flip_every_byte(&f, &[0xff], 11);
    assert_eq!(unnoticed, BTreeSet::from(UNUSED));
}

#[test]
fn every_truncation_is_an_error() {
    truncate_everywhere(&small_file(), 1);
    truncate_everywhere(&small_folder(), 1);
}

#[test]
fn damaged_payloads_behind_valid_checksums_never_pass_verification() {
    let f = small_file();
    let n = damage_payloads_behind_checksums(&f, &[0xff, 0x01], 5);
    assert!(n > 2000, "{n} variants");
}

#[test]
fn damaged_index_behind_a_valid_checksum_is_survived() {
    damage_index_behind_checksum(&small_file(), &[0xff, 0x01]);
    damage_index_behind_checksum(&small_folder(), &[0xff]);
}

#[test]
fn wrong_version_and_flags_are_rejected_with_their_own_errors() {
    let f = small_file();
    let path = f.damaged();
    type Want = fn(&dmx_format::FormatError) -> bool;
    let cases: [(usize, u8, Want); 3] = [
        (0, 0x89 ^ b'P', |e| {
            matches!(e, dmx_format::FormatError::NotAnArchive)
        }),
        (8, 1 ^ 2, |e| {
            matches!(
                e,
                dmx_format::FormatError::UnsupportedVersion { major: 2, .. }
            )
        }),
        (13, 4, |e| {
            matches!(e, dmx_format::FormatError::UnknownFlags(0x400))
        }),
    ];
    for (at, pat, want) in cases {
        let mut bytes = f.archive.clone();
        bytes[at] ^= pat;
        std::fs::write(&path, &bytes).unwrap();
        match Archive::open(&path) {
            Err(dmx::Error::Format { source, .. }) => {
                assert!(want(&source), "byte {at}: {source:?}");
            }
            Err(e) => panic!("byte {at}: unexpected error {e:?}"),
            Ok(_) => panic!("byte {at}: opened"),
        }
    }
}

/// A larger folder archive (about 54 KB) with multi-chunk tensors: every byte under two
/// patterns, every truncation, every fourth payload byte behind valid checksums, every index
/// byte behind a valid index checksum. About 13 minutes in a debug build on 2 cores.
#[test]
#[ignore = "exhaustive; run with --ignored"]
fn exhaustive_matrix_on_a_larger_archive() {
    let dir = common::scratch();
    let original = dir.path().join("model");
    common::model_folder(&original, 99);
    let chunk = dmx::CHUNK_SIZE as usize;
    // Two tensors of two chunks each, kept small: every decompress decodes all of them.
    let big = vec![
        Tensor::generated("constant", "F32", &[chunk / 4 + 9], Mode::Constant, 1),
        Tensor::generated("w", "BF16", &[96, 321], Mode::Mixed { rate: 100 }, 2),
        Tensor::generated("r", "U8", &[5000], Mode::Random, 3),
        Tensor::generated("emb", "F16", &[24, 80], Mode::RowScaled, 5),
        Tensor::generated("ids", "U8", &[chunk + 3], Mode::Constant, 4),
    ];
    common::write(&original.join("big.safetensors"), &common::plain(&big));
    let tensors = tensors_of(&original);
    let f = finish(dir, original, &tensors);
    eprintln!("archive: {} bytes", f.archive.len());
    let t = std::time::Instant::now();
    let unnoticed = flip_every_byte(&f, &[0xff, 0x01], 5);
    assert_eq!(unnoticed, BTreeSet::from(UNUSED));
    eprintln!("byte flips: {:.0?}", t.elapsed());
    truncate_everywhere(&f, 1);
    eprintln!("truncations: {:.0?}", t.elapsed());
    damage_payloads_behind_checksums(&f, &[0xff, 0x01], 4);
    eprintln!("payloads behind checksums: {:.0?}", t.elapsed());
    damage_index_behind_checksum(&f, &[0xff, 0x01, 0x80]);
    eprintln!("index behind its checksum: {:.0?}", t.elapsed());
}
