//! Golden vectors that pin the `.dmx` format (repository folder `tests/vectors/`):
//!
//! * `tiny.safetensors`, a tiny deterministic model made by [`tiny_model`], and `tiny.dmx`,
//!   its archive: the archive must decode to the input, and compressing the input must give
//!   the committed archive byte for byte, so any change of the format or of the encoders'
//!   output is noticed;
//! * `x-*.dmx`, damaged archives that must fail to open;
//! * `vectors.txt`, the BLAKE3 of every file above.
//!
//! After an intended format or encoder change, regenerate everything with
//! `DMX_BLESS=1 cargo test -p dmx --test vectors` and commit `tests/vectors/`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use dmx::dmx_format::{FormatError, Index, Limits, Trailer};
use dmx::{Archive, Options};

const BLESS_HINT: &str = "if the change is intended, regenerate the vectors with \
     `DMX_BLESS=1 cargo test -p dmx --test vectors`, commit tests/vectors/ and describe the \
     change in docs/FORMAT.md";

const INPUT: &str = "tiny.safetensors";
const ARCHIVE: &str = "tiny.dmx";
/// Format 1.2 vectors: many tiny tensors (packed segments, compressed index) and a folder of
/// small files (a pack).
const PACKED_INPUT: &str = "packed.safetensors";
const PACKED_ARCHIVE: &str = "packed.dmx";
const FOLDER_ARCHIVE: &str = "folder.dmx";
/// `packed.dmx` with the recorded length of its compressed index changed and the index
/// checksum fixed up: the index no longer decodes to its recorded length.
const BROKEN_PACKED: &str = "x-packed-index.dmx";

/// Archives that must not open, and the error each must give.
const BROKEN: &[(&str, &str)] = &[
    ("x-bad-magic.dmx", "bad magic"),
    ("x-version-2.dmx", "unsupported major version 2"),
    (
        "x-unknown-codec.dmx",
        "unknown codec id 9 (index checksum fixed up)",
    ),
    ("x-truncated.dmx", "truncated to half its length"),
    (
        "x-index-checksum.dmx",
        "index byte changed, checksum not fixed",
    ),
];

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/vectors")
}

fn opts() -> Options {
    Options {
        threads: Some(2),
        ..Options::default()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn blake3_hex(bytes: &[u8]) -> String {
    hex(blake3::hash(bytes).as_bytes())
}

/// A tiny deterministic safetensors file touching every codec (float-huff for the float
/// weights, float-huff-rows for a matrix whose rows differ in scale, zstd for integers and
/// the header, raw for noise), special float values, a
/// scalar, an empty tensor and `__metadata__`. Self-contained on purpose: the shared test
/// helpers may change without changing the vectors.
pub fn tiny_model() -> Vec<u8> {
    let mut state = 0x0123_4567_89ab_cdefu64;
    let mut next = move || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    // (name, dtype, shape, bytes)
    let mut tensors: Vec<(&str, &str, Vec<usize>, Vec<u8>)> = Vec::new();
    let mut bf16 = Vec::new();
    for _ in 0..32 * 24 {
        let r = next();
        // sign, exponent 120..=126, random mantissa
        let v = ((r & 1) << 15) | ((120 + (r >> 1) % 7) << 7) | ((r >> 8) & 0x7f);
        bf16.extend_from_slice(&(v as u16).to_le_bytes());
    }
    tensors.push(("model.embed.weight", "BF16", vec![32, 24], bf16));
    // Rows whose exponents cluster around a level of their own (codec 3, float-huff-rows).
    let mut rows = Vec::new();
    for _ in 0..16 {
        let level = 124 - next() % 10;
        for _ in 0..24 {
            let r = next();
            let v = ((r & 1) << 15) | ((level - (r >> 1) % 3) << 7) | ((r >> 8) & 0x7f);
            rows.extend_from_slice(&(v as u16).to_le_bytes());
        }
    }
    tensors.push(("model.rows.weight", "BF16", vec![16, 24], rows));
    let specials = [
        0.0f32,
        -0.0,
        f32::NAN,
        f32::from_bits(0x7f80_0001),
        f32::from_bits(0xffc1_2345),
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::from_bits(1),
        f32::from_bits(0x807f_ffff),
        f32::MAX,
        f32::MIN,
    ];
    let mut f32s = Vec::new();
    for i in 0..24 {
        let v = if i % 2 == 0 {
            specials[i / 2 % specials.len()]
        } else {
            1.0 + (next() % 1000) as f32 / 1000.0
        };
        f32s.extend_from_slice(&v.to_bits().to_le_bytes());
    }
    tensors.push(("model.norm.weight", "F32", vec![24], f32s));
    let f16: Vec<u8> = [0x3c00u16, 0x8000, 0x7e00, 0x7c00, 0xfc00, 0x0001, 0x7bff]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    tensors.push(("model.bias", "F16", vec![7], f16));
    let ids: Vec<u8> = (0..16i64)
        .flat_map(|i| (i * 3 - 20).to_le_bytes())
        .collect();
    tensors.push(("position_ids", "I64", vec![16], ids));
    let noise: Vec<u8> = (0..64).map(|_| next() as u8).collect();
    tensors.push(("noise", "U8", vec![8, 8], noise));
    tensors.push(("mask", "BOOL", vec![5], vec![1, 0, 0, 1, 1]));
    tensors.push((
        "scale",
        "F64",
        vec![],
        std::f64::consts::PI.to_le_bytes().to_vec(),
    ));
    tensors.push(("empty", "F8_E4M3", vec![0], vec![]));
    let fp8: Vec<u8> = (0..33)
        .map(|i| [0x38, 0x7c, 0x7f, 0x80, 0x01, 0x7b][i % 6] ^ (next() as u8 & 0x83))
        .collect();
    tensors.push(("fp8", "F8_E5M2", vec![3, 11], fp8));

    let mut header = String::from(r#"{"__metadata__":{"format":"pt","source":"dmx vectors"}"#);
    let mut data = Vec::new();
    for (name, dtype, shape, bytes) in &tensors {
        let shape: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
        header.push_str(&format!(
            r#","{name}":{{"dtype":"{dtype}","shape":[{}],"data_offsets":[{},{}]}}"#,
            shape.join(","),
            data.len(),
            data.len() + bytes.len()
        ));
        data.extend_from_slice(bytes);
    }
    header.push('}');
    while header.len() % 8 != 0 {
        header.push(' ');
    }
    let mut file = (header.len() as u64).to_le_bytes().to_vec();
    file.extend_from_slice(header.as_bytes());
    file.extend_from_slice(&data);
    file
}

/// A deterministic safetensors file of 96 tiny F32 and I32 tensors: small enough for the
/// writer to pack them (format 1.2).
pub fn packed_model() -> Vec<u8> {
    let mut header = String::from("{");
    let mut data: Vec<u8> = Vec::new();
    let mut push =
        |header: &mut String, name: String, dtype: &str, shape: &[usize], bytes: Vec<u8>| {
            let shape: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
            if header.len() > 1 {
                header.push(',');
            }
            header.push_str(&format!(
                r#""{name}":{{"dtype":"{dtype}","shape":[{}],"data_offsets":[{},{}]}}"#,
                shape.join(","),
                data.len(),
                data.len() + bytes.len()
            ));
            data.extend_from_slice(&bytes);
        };
    for i in 0..96u32 {
        let (dtype, bytes): (&str, Vec<u8>) = if i % 3 == 2 {
            (
                "I32",
                (0..4)
                    .flat_map(|k| (i as i32 * 7 - k).to_le_bytes())
                    .collect(),
            )
        } else {
            let v = (0..4).flat_map(|k| (0.5f32 + (i * 4 + k) as f32 / 64.0).to_le_bytes());
            ("F32", v.collect())
        };
        push(&mut header, format!("layers.{i}.scale"), dtype, &[4], bytes);
    }
    header.push('}');
    while header.len() % 8 != 0 {
        header.push(' ');
    }
    let mut file = (header.len() as u64).to_le_bytes().to_vec();
    file.extend_from_slice(header.as_bytes());
    file.extend_from_slice(&data);
    file
}

/// Writes a deterministic folder of 80 small files (and one file of 70 KB, not packed)
/// under `root` and returns its path.
pub fn small_folder(root: &Path) -> PathBuf {
    let dir = root.join("small");
    for i in 0..80 {
        let path = dir.join(format!("d{}/f{i:02}.txt", i % 4));
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(&path, format!("file {i}: {}\n", "x".repeat(i))).expect("write");
    }
    std::fs::write(dir.join("big.bin"), vec![7u8; 70_000]).expect("write");
    dir
}

/// `packed` with the recorded length of its compressed index changed and the index checksum
/// fixed up.
fn broken_packed(packed: &[u8]) -> Vec<u8> {
    let mut b = packed.to_vec();
    let n = b.len();
    let t = Trailer::from_bytes(&b[n - 32..]).expect("trailer");
    b[t.index_offset as usize] ^= 1;
    fix_index_checksum(&mut b);
    b
}

/// Recomputes the trailer's index checksum in place.
fn fix_index_checksum(archive: &mut [u8]) {
    let n = archive.len();
    let t = Trailer::from_bytes(&archive[n - 32..]).expect("trailer");
    let (o, l) = (t.index_offset as usize, t.index_len as usize);
    let fixed = Trailer::for_index(t.index_offset, &archive[o..o + l]);
    archive[n - 32..].copy_from_slice(&fixed.to_bytes());
}

/// The broken archives derived from a good one.
fn broken(good: &[u8]) -> Vec<(&'static str, Vec<u8>)> {
    let n = good.len();
    let t = Trailer::from_bytes(&good[n - 32..]).expect("trailer");
    let (o, l) = (t.index_offset as usize, t.index_len as usize);
    let mut out = Vec::new();
    for &(name, _) in BROKEN {
        let mut b = good.to_vec();
        match name {
            "x-bad-magic.dmx" => b[1] = b'X',
            "x-version-2.dmx" => b[8..10].copy_from_slice(&2u16.to_le_bytes()),
            "x-unknown-codec.dmx" => {
                let mut index = Index::from_bytes(&b[o..o + l], t.index_offset, &Limits::default())
                    .expect("index");
                let seg = index.entries[0]
                    .segments
                    .iter_mut()
                    .find(|s| !s.chunks.is_empty())
                    .expect("a chunk");
                seg.chunks[0].codec = 9;
                b[o..o + l].copy_from_slice(&index.to_bytes());
                fix_index_checksum(&mut b);
            }
            "x-truncated.dmx" => b.truncate(n / 2),
            "x-index-checksum.dmx" => b[o + l / 2] ^= 0x40,
            other => unreachable!("{other}"),
        }
        out.push((name, b));
    }
    out
}

/// With `DMX_BLESS=1`, rewrites every vector once, before any test reads them.
fn vectors() -> &'static Path {
    static BLESSED: OnceLock<()> = OnceLock::new();
    BLESSED.get_or_init(|| {
        if std::env::var_os("DMX_BLESS").is_none_or(|v| v.is_empty() || v == "0") {
            return;
        }
        let d = dir();
        std::fs::create_dir_all(&d).expect("create tests/vectors");
        let input = d.join(INPUT);
        std::fs::write(&input, tiny_model()).expect("write input");
        let archive = d.join(ARCHIVE);
        let o = Options {
            force: true,
            ..opts()
        };
        dmx::compress(&input, &archive, &o).expect("compress");
        let good = std::fs::read(&archive).expect("read archive");
        let mut list = String::from(
            "# dmx golden vectors: \"file: BLAKE3 (hex)\" of every file in this folder.\n\
             # tiny.dmx must decode to tiny.safetensors and be reproduced byte for byte by\n\
             # compressing it; x-*.dmx must fail to open. Regenerate (after an intended\n\
             # format change) with: DMX_BLESS=1 cargo test -p dmx --test vectors\n",
        );
        list.push_str(&format!("{INPUT}: {}\n", blake3_hex(&tiny_model())));
        list.push_str(&format!("{ARCHIVE}: {}\n", blake3_hex(&good)));
        for (name, bytes) in broken(&good) {
            std::fs::write(d.join(name), &bytes).expect("write broken vector");
            list.push_str(&format!("{name}: {}\n", blake3_hex(&bytes)));
        }
        let packed_input = d.join(PACKED_INPUT);
        std::fs::write(&packed_input, packed_model()).expect("write packed input");
        let packed = d.join(PACKED_ARCHIVE);
        dmx::compress(&packed_input, &packed, &o).expect("compress packed");
        let packed = std::fs::read(&packed).expect("read packed archive");
        let scratch = tempfile::tempdir().expect("tempdir");
        let folder = small_folder(scratch.path());
        dmx::compress(&folder, &d.join(FOLDER_ARCHIVE), &o).expect("compress folder");
        let folder = std::fs::read(d.join(FOLDER_ARCHIVE)).expect("read folder archive");
        let bad = broken_packed(&packed);
        std::fs::write(d.join(BROKEN_PACKED), &bad).expect("write broken packed");
        for (name, bytes) in [
            (PACKED_INPUT, packed_model()),
            (PACKED_ARCHIVE, packed),
            (FOLDER_ARCHIVE, folder),
            (BROKEN_PACKED, bad),
        ] {
            list.push_str(&format!("{name}: {}\n", blake3_hex(&bytes)));
        }
        std::fs::write(d.join("vectors.txt"), list).expect("write vectors.txt");
        eprintln!("dmx: blessed the vectors in {}", d.display());
    });
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(dir)
}

/// `vectors.txt` as file name to BLAKE3 hex.
fn listed() -> BTreeMap<String, String> {
    let path = vectors().join("vectors.txt");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}; {BLESS_HINT}", path.display()));
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (name, hash) = l.split_once(':').expect("\"file: hash\" line");
            (name.trim().to_string(), hash.trim().to_string())
        })
        .collect()
}

fn read_vector(name: &str) -> Vec<u8> {
    let path = vectors().join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}; {BLESS_HINT}", path.display()))
}

#[test]
fn listed_files_are_the_committed_ones() {
    let list = listed();
    let mut want: Vec<&str> = vec![
        INPUT,
        ARCHIVE,
        PACKED_INPUT,
        PACKED_ARCHIVE,
        FOLDER_ARCHIVE,
        BROKEN_PACKED,
    ];
    want.extend(BROKEN.iter().map(|(n, _)| *n));
    want.sort_unstable();
    assert_eq!(list.keys().map(String::as_str).collect::<Vec<_>>(), want);
    for (name, hash) in &list {
        assert_eq!(
            &blake3_hex(&read_vector(name)),
            hash,
            "tests/vectors/{name} does not match vectors.txt; {BLESS_HINT}"
        );
    }
    // The vector folder holds nothing unlisted.
    for e in std::fs::read_dir(vectors()).expect("read tests/vectors") {
        let name = e.expect("entry").file_name().to_string_lossy().into_owned();
        assert!(
            list.contains_key(&name) || name == "vectors.txt" || name == ".gitattributes",
            "tests/vectors/{name} is not listed in vectors.txt"
        );
    }
}

#[test]
fn the_input_is_what_the_helper_generates() {
    assert!(
        read_vector(INPUT) == tiny_model(),
        "tests/vectors/{INPUT} differs from tiny_model(); {BLESS_HINT}"
    );
    assert!(
        (1000..8192).contains(&read_vector(INPUT).len()),
        "keep the vectors a few KB"
    );
}

#[test]
fn committed_archive_decodes_to_the_committed_input() {
    let list = listed();
    let input = read_vector(INPUT);
    let scratch = tempfile::tempdir().expect("tempdir");
    let out = scratch.path().join("restored.safetensors");
    let archive_path = vectors().join(ARCHIVE);
    dmx::decompress(&archive_path, &out, &opts())
        .unwrap_or_else(|e| panic!("decompress {ARCHIVE}: {e}; {BLESS_HINT}"));
    let restored = std::fs::read(&out).expect("read restored");
    assert_eq!(blake3_hex(&restored), list[INPUT], "decoded bytes");
    assert!(restored == input, "{ARCHIVE} does not decode to {INPUT}");

    let archive = Archive::open(&archive_path).expect("open");
    let rep = dmx::verify(&archive, Some(&vectors().join(INPUT)), &opts()).expect("verify");
    assert!(rep.ok && rep.files[0].bit_exact == Some(true), "{rep:?}");
    let names: Vec<&str> = archive.tensors().map(|t| t.info.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "model.embed.weight",
            "model.rows.weight",
            "model.norm.weight",
            "model.bias",
            "position_ids",
            "noise",
            "mask",
            "scale",
            // Zero-length "empty" shares its offset with "fp8": ties sort by name.
            "empty",
            "fp8",
        ]
    );
    // Every codec is pinned by the vector.
    let mut codecs: Vec<u8> = archive
        .index()
        .entries
        .iter()
        .flat_map(|e| &e.segments)
        .flat_map(|s| &s.chunks)
        .map(|c| c.codec)
        .collect();
    codecs.sort_unstable();
    codecs.dedup();
    assert_eq!(
        codecs,
        [0, 1, 2, 3],
        "raw, zstd, float-huff and float-huff-rows chunks"
    );
    assert_eq!(archive.index().entries[0].path, INPUT);
    assert_eq!(
        hex(&archive.index().entries[0].sha256),
        {
            use sha2::Digest;
            hex(&sha2::Sha256::digest(&input))
        },
        "recorded SHA-256"
    );
}

#[test]
fn compressing_the_input_reproduces_the_committed_archive() {
    let committed = read_vector(ARCHIVE);
    let scratch = tempfile::tempdir().expect("tempdir");
    for threads in [1, 2] {
        let out = scratch.path().join(format!("t{threads}.dmx"));
        let o = Options {
            threads: Some(threads),
            ..Options::default()
        };
        dmx::compress(&vectors().join(INPUT), &out, &o).expect("compress");
        let fresh = std::fs::read(&out).expect("read archive");
        if fresh != committed {
            let at = fresh
                .iter()
                .zip(&committed)
                .position(|(a, b)| a != b)
                .unwrap_or(fresh.len().min(committed.len()));
            panic!(
                "compressing tests/vectors/{INPUT} no longer gives tests/vectors/{ARCHIVE}: \
                 {} bytes now, {} committed, first difference at byte {at} (blake3 {} vs \
                 {}). The archive format or an encoder's output changed; {BLESS_HINT}",
                fresh.len(),
                committed.len(),
                blake3_hex(&fresh),
                blake3_hex(&committed),
            );
        }
    }
}

#[test]
fn broken_vectors_fail_to_open() {
    let good = read_vector(ARCHIVE);
    let scratch = tempfile::tempdir().expect("tempdir");
    for ((name, why), (derived_name, derived)) in BROKEN.iter().zip(broken(&good)) {
        assert_eq!(*name, derived_name);
        let path = vectors().join(name);
        assert!(
            read_vector(name) == derived,
            "tests/vectors/{name} ({why}) is not derived from {ARCHIVE} as the test expects; \
             {BLESS_HINT}"
        );
        let err = match Archive::open(&path) {
            Ok(_) => panic!("{name} ({why}) opened"),
            Err(e) => e,
        };
        let msg = err.to_string();
        let expected = match (*name, &err) {
            ("x-bad-magic.dmx", dmx::Error::Format { source, .. }) => {
                *source == FormatError::NotAnArchive
            }
            ("x-version-2.dmx", dmx::Error::Format { source, .. }) => matches!(
                source,
                FormatError::UnsupportedVersion { major: 2, minor: 0 }
            ),
            ("x-unknown-codec.dmx", dmx::Error::Corrupt { .. }) => {
                msg.contains("unknown codec id 9")
            }
            ("x-truncated.dmx", dmx::Error::Format { source, .. }) => {
                *source == FormatError::NoTrailer
            }
            ("x-index-checksum.dmx", dmx::Error::Format { source, .. }) => {
                *source == FormatError::ChecksumMismatch("index")
            }
            _ => false,
        };
        assert!(expected, "{name} ({why}): unexpected error {err:?}");
        assert!(
            msg.contains(name),
            "{name}: the error names the file: {msg}"
        );
        // Unsupported versions and foreign files are usage errors (exit 2); damage is an
        // integrity failure (exit 1).
        let integrity = !matches!(*name, "x-bad-magic.dmx" | "x-version-2.dmx");
        assert_eq!(err.is_integrity_failure(), integrity, "{name}: {err}");
        let out = scratch.path().join(format!("{name}.out"));
        assert!(dmx::decompress(&path, &out, &opts()).is_err(), "{name}");
        assert!(!out.exists(), "{name}: output left behind");
    }
    assert!(
        std::fs::read_dir(scratch.path())
            .expect("read_dir")
            .next()
            .is_none(),
        "temporary files left behind"
    );
}

/// The worked example of docs/FORMAT.md §9, byte for byte where the document spells the
/// bytes out.
#[test]
fn format_md_example_is_reproduced() {
    let header = br#"{"w":{"dtype":"BF16","shape":[2,2],"data_offsets":[0,8]}}"#;
    let mut file = (header.len() as u64).to_le_bytes().to_vec();
    file.extend_from_slice(header);
    file.extend_from_slice(&[0x80, 0x3f, 0x00, 0x40, 0x40, 0x40, 0x80, 0xbf]);
    assert_eq!(file.len(), 73);
    let scratch = tempfile::tempdir().expect("tempdir");
    let input = scratch.path().join("tiny.safetensors");
    std::fs::write(&input, &file).expect("write");
    let packed = scratch.path().join("tiny.dmx");
    dmx::compress(&input, &packed, &opts()).expect("compress");
    let a = std::fs::read(&packed).expect("read");
    assert_eq!(a.len(), 414, "FORMAT.md §9: a 414-byte archive");
    let unhex = |s: &str| -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
            .collect()
    };
    let mut path = 16u32.to_le_bytes().to_vec();
    path.extend_from_slice(b"tiny.safetensors");
    let expect: Vec<(usize, Vec<u8>, &str)> = vec![
        (
            0x000,
            unhex("89 44 4d 58 0d 0a 1a 0a 01 00 00 00 00 00 00 00"),
            "preamble",
        ),
        (
            0x010,
            file.clone(),
            "data area: header chunk and tensor chunk, raw",
        ),
        (
            0x059,
            unhex("00 01 00 00 00 00 00 00 00"),
            "root kind, entry count",
        ),
        (0x062, path, "path"),
        (
            0x076,
            unhex("00 49 00 00 00 00 00 00 00 bf 48 ae c9"),
            "kind, size, SHA-256",
        ),
        (
            0x09f,
            unhex("02 00 00 00 00 00 00 00 00 00"),
            "segment count, bytes segment",
        ),
        (0x0b9, unhex("3f cf 3b e1"), "BLAKE3 of the header"),
        (
            0x0d9,
            unhex("fd 43 80 79 04 f9 71 40 01 00 00 00 00 00 00 00"),
            "entropy, chunks",
        ),
        (
            0x0e9,
            unhex("10 00 00 00 00 00 00 00 41 00 00 00 41 00 00 00 00 f8 f2 a5 19 70 f5 49 0e"),
            "header chunk",
        ),
        (
            0x102,
            unhex("01 01 00 00 00 77 04 00 00 00 42 46 31 36"),
            "tensor w BF16",
        ),
        (0x135, unhex("2a 32 d0 bd"), "BLAKE3 of the tensor"),
        (0x155, unhex("00 00 00 00 00 00 24 40"), "entropy bits 10.0"),
        (
            0x165,
            unhex("51 00 00 00 00 00 00 00 08 00 00 00 08 00 00 00 00 ed 93 1f b9 88 e0 26 c0"),
            "tensor chunk",
        ),
        (
            0x17e,
            unhex(
                "59 00 00 00 00 00 00 00 25 01 00 00 00 00 00 00 d5 a0 3f fe b3 96 cc 36 \
                 44 4d 58 49 4e 44 45 58",
            ),
            "trailer",
        ),
    ];
    for (at, bytes, what) in expect {
        assert_eq!(
            hex(&a[at..at + bytes.len()]),
            hex(&bytes),
            "FORMAT.md §9 at {at:#05x} ({what}); {BLESS_HINT} (and update the example)"
        );
    }
}

#[test]
fn packed_vectors_decode_and_are_reproduced() {
    use dmx::dmx_format::{EntryKind, SegmentKind};
    let scratch = tempfile::tempdir().expect("tempdir");
    assert!(
        read_vector(PACKED_INPUT) == packed_model(),
        "tests/vectors/{PACKED_INPUT} differs from packed_model(); {BLESS_HINT}"
    );
    // Many tiny tensors: format 1.2 with packed segments and a compressed index.
    let path = vectors().join(PACKED_ARCHIVE);
    let archive = Archive::open(&path).expect("open packed.dmx");
    assert_eq!(archive.version(), (1, 2));
    let committed = read_vector(PACKED_ARCHIVE);
    assert_eq!(dmx::dmx_format::preamble_flags(&committed), 1);
    let entry = &archive.index().entries[0];
    assert!(
        entry
            .segments
            .iter()
            .any(|s| matches!(s.kind, SegmentKind::Packed(_)))
    );
    assert_eq!(archive.tensors().count(), 96);
    let input = packed_model();
    let header_len = 8 + u64::from_le_bytes(input[..8].try_into().expect("8")) as usize;
    let t = archive.tensor("layers.5.scale").expect("packed tensor");
    assert_eq!(t.len, 16);
    let at = header_len + (t.segment.offset + t.offset) as usize - header_len;
    assert_eq!(
        archive.read_tensor("layers.5.scale").expect("read"),
        &input[at..at + 16]
    );
    let out = scratch.path().join("p.safetensors");
    dmx::decompress(&path, &out, &opts()).expect("decompress packed.dmx");
    assert!(
        std::fs::read(&out).expect("read") == input,
        "packed.dmx restores its input"
    );
    let fresh = scratch.path().join("p.dmx");
    dmx::compress(&vectors().join(PACKED_INPUT), &fresh, &opts()).expect("compress");
    assert!(
        std::fs::read(&fresh).expect("read") == committed,
        "compressing {PACKED_INPUT} no longer gives {PACKED_ARCHIVE}; {BLESS_HINT}"
    );
    // A folder of small files: one pack, then its files.
    let folder = small_folder(scratch.path());
    let fresh = scratch.path().join("f.dmx");
    dmx::compress(&folder, &fresh, &opts()).expect("compress folder");
    assert!(
        std::fs::read(&fresh).expect("read") == read_vector(FOLDER_ARCHIVE),
        "compressing small_folder() no longer gives {FOLDER_ARCHIVE}; {BLESS_HINT}"
    );
    let archive = Archive::open(&vectors().join(FOLDER_ARCHIVE)).expect("open folder.dmx");
    assert_eq!(archive.version(), (1, 2));
    let kinds: Vec<EntryKind> = archive.index().entries.iter().map(|e| e.kind).collect();
    assert_eq!(kinds.iter().filter(|k| **k == EntryKind::Pack).count(), 1);
    assert_eq!(
        kinds.iter().filter(|k| **k == EntryKind::Packed).count(),
        80
    );
    let restored = scratch.path().join("restored");
    dmx::decompress(&vectors().join(FOLDER_ARCHIVE), &restored, &opts()).expect("decompress");
    for i in 0..80 {
        let rel = format!("d{}/f{i:02}.txt", i % 4);
        assert_eq!(
            std::fs::read(restored.join(&rel)).expect("restored file"),
            std::fs::read(folder.join(&rel)).expect("original file"),
            "{rel}"
        );
    }
    assert_eq!(
        std::fs::read(restored.join("big.bin")).expect("big"),
        vec![7u8; 70_000]
    );
    let rep = dmx::verify(&archive, Some(&folder), &opts()).expect("verify");
    assert!(rep.ok, "{rep:?}");
    // The damaged compressed index is refused as corrupt, never misread.
    assert!(read_vector(BROKEN_PACKED) == broken_packed(&committed));
    let err = match Archive::open(&vectors().join(BROKEN_PACKED)) {
        Ok(_) => panic!("{BROKEN_PACKED} opened"),
        Err(e) => e,
    };
    assert!(err.is_integrity_failure(), "{err}");
    assert!(err.to_string().contains("recorded length"), "{err}");
}
