//! Damaged archives, per archive kind. Each kind is a [`Subject`] (`subjects.rs`): a small
//! archive, how to restore it, and what its undamaged copy restores and decodes to. A
//! [`Plan`] (`damage.rs`) says which damage to apply to it: every byte changed, single-bit
//! flips, every truncation, chunk payloads changed behind recomputed checksums, index bytes
//! changed behind a recomputed index checksum. For each damaged copy, `Archive::open`,
//! `verify`, `read_tensor`, `extract`, `Stats`, decoding every segment and restoring the
//! archive must either fail with an error or yield exactly what the undamaged archive yields:
//! never different data, never a panic, nothing left behind.
//!
//! Adding a kind is one function in `subjects.rs` and one `#[test]` line below. The
//! exhaustive plans are `#[ignore]`d: `cargo test -p dmx --test engine corruption -- --ignored`.

mod damage;
mod subjects;

use dmx_testkit::Restored;

use std::collections::BTreeSet;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use dmx::dmx_format;
use dmx::{Archive, Options};

use damage::{FULL, Plan, SAMPLED, matrix};

fn opts() -> Options {
    Options {
        threads: Some(1),
        no_sync: true,
        ..Options::default()
    }
}

/// Restores the archive at the first path to the second (a file or a folder). A closure, so a
/// kind can capture what else it needs (a delta's base file).
type Restore = Box<dyn Fn(&Path, &Path) -> dmx::Result<()>>;

/// One archive kind under test.
struct Subject {
    name: &'static str,
    /// Scratch folder: what the kind was made from, and the damaged copies and their outputs.
    dir: tempfile::TempDir,
    /// What `dir` held when the subject was made (the damaged copy aside, it must stay so).
    files: BTreeSet<String>,
    /// The undamaged archive.
    archive: Vec<u8>,
    restore: Restore,
    /// What `restore` yields from the undamaged archive (the original, for lossless kinds).
    expected: Restored,
    /// Whether the archive reads without another file: `verify`, `read_tensor`, `extract`
    /// and decoding apply (not to a delta, which decodes only with its base).
    standalone: bool,
    /// What every entry's segments decode to (concatenated), from the undamaged archive.
    decoded: Vec<(String, Vec<u8>)>,
    /// Every tensor's name and what `read_tensor` returns for it from the undamaged archive.
    tensors: Vec<(String, Vec<u8>)>,
}

/// How a copy was damaged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Damage {
    /// Bytes changed or cut, checksums left alone: every reader must reject any change of the
    /// data.
    Plain,
    /// A chunk payload changed behind recomputed chunk and index checksums: the chunk
    /// checksums pass, but restoring (BLAKE3 per segment before the rename), `verify`
    /// (BLAKE3, SHA-256) and `read_tensor` (BLAKE3) must not pass different data.
    Payload,
    /// The index changed behind a recomputed index checksum: as `Payload`, except that the
    /// names of tensors and the paths of restored folder files may differ (they are
    /// protected by the index checksum alone).
    Index,
}

/// How a damaged copy fared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Outcome {
    /// `Archive::open` failed.
    OpenFailed,
    /// Opened, but some reader reported the damage.
    Rejected,
    /// Nothing noticed, and everything yielded what the undamaged archive yields.
    Identical,
}

impl Subject {
    /// A subject from an undamaged archive file in `dir`: records what it restores to and
    /// what it decodes to, after checking that it verifies. Removes the archive file.
    fn new(name: &'static str, dir: tempfile::TempDir, archive: &Path, restore: Restore) -> Self {
        let bytes = std::fs::read(archive).expect("read archive");
        let a = Archive::open(archive).expect("open undamaged archive");
        let standalone = a.index().entries.iter().all(|e| e.base.is_none());
        let (decoded, tensors) = if standalone {
            let report = dmx::verify(&a, None, &opts()).expect("verify undamaged archive");
            assert!(report.ok, "{name}: undamaged archive fails verify");
            let tensors = a
                .tensors()
                .map(|t| {
                    let name = t.info.name.clone();
                    let data = a.read_tensor(&name).expect("read undamaged tensor");
                    (name, data)
                })
                .collect();
            (decode_all(&a).expect("decode undamaged archive"), tensors)
        } else {
            (Vec::new(), Vec::new())
        };
        drop(a);
        let out = dir.path().join("expected");
        restore(archive, &out).expect("restore undamaged archive");
        let expected = Restored::read(&out);
        remove(&out);
        std::fs::remove_file(archive).expect("remove archive");
        Self {
            name,
            files: names(dir.path()),
            dir,
            archive: bytes,
            restore,
            expected,
            standalone,
            decoded,
            tensors,
        }
    }

    fn damaged(&self) -> PathBuf {
        self.dir.path().join("damaged.dmx")
    }

    fn out(&self) -> PathBuf {
        self.dir.path().join("restored")
    }

    /// Writes `bytes` as an archive and checks it; see [`Damage`] for what each kind of
    /// damage must lead to. Panics, naming the subject and `what`, when a reader yields
    /// different data or panics itself.
    ///
    /// `full` runs every reader; otherwise `Archive::open` and restoring only, and every
    /// reader when those accept the copy (each engine call builds a thread pool, which
    /// dominates the run time of the long loops).
    fn check(&self, bytes: &[u8], what: &str, damage: Damage, full: bool) -> Outcome {
        let path = self.damaged();
        std::fs::write(&path, bytes).expect("write damaged copy");
        let result = catch_unwind(AssertUnwindSafe(|| self.check_file(&path, damage, full)));
        let out = self.out();
        if out.symlink_metadata().is_ok() {
            remove(&out);
        }
        match result {
            Ok(outcome) => outcome,
            Err(e) => {
                let msg = e
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                panic!("{}: {what}: {msg}", self.name)
            }
        }
    }

    fn check_file(&self, path: &Path, damage: Damage, full: bool) -> Outcome {
        let out = self.out();
        let Ok(archive) = Archive::open(path) else {
            assert!(
                (self.restore)(path, &out).is_err(),
                "open failed but restoring succeeded"
            );
            assert!(out.symlink_metadata().is_err(), "output left behind");
            return Outcome::OpenFailed;
        };
        let mut noticed = false;
        let mut verified = None;
        if full {
            verified = Some(self.other_readers(&archive, damage, &mut noticed));
        }
        drop(archive);
        let same = match (self.restore)(path, &out) {
            Ok(()) => {
                let restored = Restored::read(&out);
                remove(&out);
                self.same_data(restored, damage)
            }
            Err(_) => {
                assert!(
                    out.symlink_metadata().is_err(),
                    "a failed restore left its output behind"
                );
                noticed = true;
                true
            }
        };
        let verified = match verified {
            Some(v) => v,
            None if noticed => return Outcome::Rejected,
            None => {
                let archive = Archive::open(path).expect("opened before");
                self.other_readers(&archive, damage, &mut noticed)
            }
        };
        if !same {
            assert!(damage == Damage::Index, "restoring yielded different data");
            assert!(!verified, "verify passed but the data differs");
            noticed = true;
        }
        if verified {
            assert!(!noticed, "verify passed but another reader reported damage");
        }
        if noticed {
            Outcome::Rejected
        } else {
            Outcome::Identical
        }
    }

    /// Runs `verify`, `read_tensor`, `Stats`, `extract` and (when `verify` passed) decodes
    /// every segment; returns whether `verify` passed and sets `noticed` when any reader
    /// reported damage. A delta only gets `Stats`: nothing else reads it without its base.
    fn other_readers(&self, archive: &Archive, damage: Damage, noticed: &mut bool) -> bool {
        // Stats must not panic on whatever index passed validation.
        let _ = dmx::Stats::of_archive(archive);
        if !self.standalone {
            return false;
        }
        let verified = matches!(dmx::verify(archive, None, &opts()), Ok(r) if r.ok);
        *noticed |= !verified;
        if verified && damage != Damage::Index {
            assert!(
                decode_all(archive).as_ref() == Ok(&self.decoded),
                "verify passed but the archive decodes to different data"
            );
        }
        let tensors = &self.tensors;
        POOL.with(|pool| {
            pool.install(|| {
                for (name, data) in tensors {
                    match archive.read_tensor(name) {
                        Ok(d) => assert!(d == *data, "read_tensor({name:?}) returned other data"),
                        // After index damage the name itself may have changed.
                        Err(e) if damage == Damage::Index && e.is_refusal() => {}
                        Err(_) => *noticed = true,
                    }
                }
            })
        });
        if let Some((name, _)) = self.tensors.first() {
            let x = self.dir.path().join("x.safetensors");
            match dmx::extract(archive, std::slice::from_ref(name), &x, &opts()) {
                Ok(()) => std::fs::remove_file(&x).expect("remove extract"),
                Err(e) => {
                    assert!(!x.exists(), "extract output left behind");
                    if !(damage == Damage::Index && e.is_refusal()) {
                        *noticed = true;
                    }
                }
            }
        }
        verified
    }

    /// Whether `restored` holds the expected data. After index damage, restored folder
    /// paths (and even the file/folder root) may differ, as they are protected by the index
    /// checksum alone: only the file contents are compared.
    fn same_data(&self, restored: Restored, damage: Damage) -> bool {
        if damage != Damage::Index {
            return restored == self.expected;
        }
        let contents = |r: &Restored| {
            let mut c: Vec<Vec<u8>> = match r {
                Restored::File(d) => vec![d.clone()],
                Restored::Folder(v) => v.iter().map(|(_, d)| d.clone()).collect(),
            };
            c.sort();
            c
        };
        contents(&restored) == contents(&self.expected)
    }

    /// Nothing but the damaged copy was added to the scratch folder.
    fn assert_clean(&self) {
        let mut want = self.files.clone();
        want.insert("damaged.dmx".into());
        assert_eq!(
            names(self.dir.path()),
            want,
            "{}: unexpected files in the scratch folder",
            self.name
        );
    }
}

thread_local! {
    /// A one-thread pool for `read_tensor`, which otherwise wakes the global pool.
    static POOL: rayon::ThreadPool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .expect("thread pool");
}

/// Every entry's segments decoded (chunk checksums checked, no BLAKE3), concatenated.
fn decode_all(a: &Archive) -> Result<Vec<(String, Vec<u8>)>, String> {
    let mut out = Vec::new();
    for e in &a.index().entries {
        let mut bytes = Vec::new();
        for s in &e.segments {
            bytes.extend(a.read_segment(e, s).map_err(|e| e.to_string())?);
        }
        out.push((e.path.clone(), bytes));
    }
    Ok(out)
}

/// The names in a folder.
fn names(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .expect("read_dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect()
}

fn remove(path: &Path) {
    if path.is_dir() {
        std::fs::remove_dir_all(path).expect("remove folder");
    } else {
        std::fs::remove_file(path).expect("remove file");
    }
}

// ---------------------------------------------------------------------------------------------
// The tests: one subject and one plan each.

/// A 12 KB single-file archive that uses codecs 0-3: every byte changed, every bit of the
/// preamble, index and trailer flipped.
#[test]
fn file_flips() {
    let plan = Plan {
        bytes: &[0xff],
        full_every: 11,
        bits_framing: true,
        ..Plan::NONE
    };
    matrix(&subjects::small_file(), &plan);
}

#[test]
fn file_truncations() {
    matrix(
        &subjects::small_file(),
        &Plan {
            cuts: 1,
            ..Plan::NONE
        },
    );
}

#[test]
fn file_payloads_behind_valid_checksums() {
    let plan = Plan {
        payload: &[0xff, 0x01],
        payload_stride: 5,
        ..Plan::NONE
    };
    let tally = matrix(&subjects::small_file(), &plan);
    let (variants, codecs) = tally.payload;
    assert!(variants > 2000, "{variants} variants");
    // Raw, zstd, float-split and float-split-rows payloads were all damaged.
    assert_eq!(
        codecs,
        BTreeSet::from([0, 1, 10, 11]),
        "codecs in the fixture"
    );
}

#[test]
fn file_index_behind_a_valid_checksum() {
    let plan = Plan {
        index: &[0xff, 0x01],
        ..Plan::NONE
    };
    matrix(&subjects::small_file(), &plan);
}

/// A small folder archive: a sharded model, JSON files, a nested file.
#[test]
fn folder() {
    let plan = Plan {
        bytes: &[0xff],
        full_every: 11,
        cuts: 1,
        index: &[0xff],
        ..Plan::NONE
    };
    matrix(&subjects::small_folder(), &plan);
}

/// A format 1.2 folder archive (issue 11, finding 9): a compressed index, packed tensors
/// and a pack of small files, whose tensors and files share chunks.
#[test]
fn packed_folder() {
    let plan = Plan {
        bytes: &[0xff],
        full_every: 13,
        bit_stride: 7,
        cuts: 3,
        payload: &[0x01, 0xff],
        payload_stride: 6,
        index: &[0xff, 0x01],
        ..Plan::NONE
    };
    matrix(&subjects::packed_folder(), &plan);
}

/// A lossy archive (BFP and int16): what it restores to is the approximation recorded at
/// compression, and damage must never change it.
#[test]
fn lossy_file() {
    matrix(&subjects::lossy_file(), &SAMPLED);
}

/// A lossless delta against a base, restored with the base.
#[test]
fn delta_file() {
    matrix(&subjects::delta_file(), &SAMPLED);
}

/// A tensor of several chunks (over 1 MiB): chunk order, offsets and sizes across chunks.
#[test]
fn multi_chunk_file() {
    matrix(&subjects::multi_chunk(), &subjects::MULTI_CHUNK);
}

#[test]
fn wrong_version_and_flags_are_rejected_with_their_own_errors() {
    let s = subjects::small_file();
    let path = s.damaged();
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
        let mut bytes = s.archive.clone();
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

#[test]
#[ignore = "exhaustive; run with --ignored"]
fn lossless_file_full() {
    matrix(&subjects::lossless_file(), &FULL);
}

/// A larger folder archive (about 54 KB) with multi-chunk tensors: every byte under two
/// patterns, every truncation, every fourth payload byte behind valid checksums, every index
/// byte behind a valid index checksum. About 13 minutes in a debug build on 2 cores.
#[test]
#[ignore = "exhaustive; run with --ignored"]
fn larger_folder_exhaustive() {
    let plan = Plan {
        bytes: &[0xff, 0x01],
        full_every: 5,
        cuts: 1,
        payload: &[0xff, 0x01],
        payload_stride: 4,
        index: &[0xff, 0x01, 0x80],
        ..Plan::NONE
    };
    matrix(&subjects::larger_folder(), &plan);
}
