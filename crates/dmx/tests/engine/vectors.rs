//! Golden vectors that pin the `.dmx` format (repository folder `tests/vectors/`):
//!
//! * `tiny.safetensors`, a tiny deterministic model made by [`tiny_model`], and `tiny.dmx`,
//!   its archive: the archive must decode to the input, and compressing the input must give
//!   the committed archive byte for byte, so any change of the format or of the encoders'
//!   output is noticed;
//! * `x-*.dmx`, damaged archives that must fail to open;
//! * `packed.*`, `folder.dmx`, `x-packed-index.dmx`: format 1.2 (packed tensors and files);
//! * `chunk-<codec>-*.bin`, one chunk payload of each lossy or delta codec (ids 4–8) in each
//!   of its forms, encoded from inputs that [`chunk_cases`] generates;
//! * `lossy.safetensors` and `lossy-target.safetensors` ([`lossy_model`]), and their archives
//!   of every kind ([`ARCHIVE_KINDS`]: lossy BFP, int16 and cast archives, lossless and int16
//!   `.dmxd` deltas) and the chain folder `chain/`;
//! * `torch-*.pt` and `torch-*.dmx`: `torch.save` files and their archives (format 1.3;
//!   made and checked in `torch.rs`);
//! * `expected.txt`, what each chunk and lossy or delta archive must decode to (BLAKE3);
//! * `vectors.txt`, the BLAKE3 of every file above; `README.md` describes the folder.
//!
//! Every vector must decode to its recorded output and be reproduced byte for byte by
//! encoding its input again. After an intended format or encoder change, regenerate
//! everything with `DMX_BLESS=1 cargo test -p dmx --test engine vectors::` and commit
//! `tests/vectors/`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use dmx_testkit::{bf16_bytes, f32_bytes, fix_index_checksum};

use dmx::dmx_format::{FormatError, Index, Limits, Trailer};
use dmx::{Archive, Options};

const BLESS_HINT: &str = "if the change is intended, regenerate the vectors with \
     `DMX_BLESS=1 cargo test -p dmx --test engine vectors::`, commit tests/vectors/ and describe the \
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
        "unknown codec id 250 (index checksum fixed up)",
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

/// A tiny deterministic safetensors file touching every codec (float-split for the float
/// weights, float-split-rows for a matrix whose rows differ in scale, zstd for integers and
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
    // Rows whose exponents cluster around a level of their own (codec 11, float-split-rows; codec 3 in v1.4/tiny.dmx).
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
                seg.chunks[0].codec = 250;
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
pub(crate) fn vectors() -> &'static Path {
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
             # compressing it; x-*.dmx must fail to open; chunk and lossy vectors must\n\
             # decode as expected.txt says and be reproduced by encoding their inputs (see\n\
             # README.md). Regenerate (after an intended format or encoder change) with:\n\
             # DMX_BLESS=1 cargo test -p dmx --test engine vectors::\n",
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
        let (expected, mut files) = bless_more(&d);
        files.extend(crate::torch::bless_vectors(&d));
        for name in files {
            let bytes = std::fs::read(d.join(&name)).expect("read vector");
            list.push_str(&format!("{name}: {}\n", blake3_hex(&bytes)));
        }
        std::fs::write(d.join("expected.txt"), expected).expect("write expected.txt");
        std::fs::write(d.join("vectors.txt"), list).expect("write vectors.txt");
        eprintln!("dmx: blessed the vectors in {}", d.display());
    });
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(dir)
}

/// `vectors.txt` as file name to BLAKE3 hex.
/// The distinct codec ids of an archive's chunks, in increasing order.
fn codecs_of(archive: &Archive) -> Vec<u8> {
    let ids: std::collections::BTreeSet<u8> = archive
        .index()
        .entries
        .iter()
        .flat_map(|e| &e.segments)
        .flat_map(|s| &s.chunks)
        .map(|c| c.codec)
        .collect();
    ids.into_iter().collect()
}

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
    let chunks: Vec<String> = chunk_cases().into_iter().map(|c| c.file).collect();
    want.extend(chunks.iter().map(String::as_str));
    want.extend([LOSSY_INPUT, LOSSY_TARGET]);
    want.extend(ARCHIVE_KINDS.iter().map(|(n, _)| *n));
    want.extend(
        crate::torch::VECTORS
            .iter()
            .flat_map(|(pt, dmx)| [*pt, *dmx]),
    );
    let chain = chain_files(&vectors().join(CHAIN_DIR));
    assert!(
        chain.len() >= 3,
        "chain/: a manifest and two entries: {chain:?}"
    );
    want.extend(chain.iter().map(String::as_str));
    want.sort_unstable();
    assert_eq!(list.keys().map(String::as_str).collect::<Vec<_>>(), want);
    let expected = expected();
    for name in chunks
        .iter()
        .map(String::as_str)
        .chain(ARCHIVE_KINDS.iter().map(|(n, _)| *n))
    {
        assert!(
            expected.contains_key(name),
            "{name} is not in expected.txt; {BLESS_HINT}"
        );
    }
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
            list.contains_key(&name)
                || matches!(
                    name.as_str(),
                    "vectors.txt" | "expected.txt" | "README.md" | ".gitattributes"
                )
                || name == CHAIN_DIR
                || name == V1_3
                || name == V1_4,
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
    // The lossless codecs are pinned by this vector; codecs 4–8 by the chunk and archive
    // vectors below (`chunk-*.bin`, `lossy-*.dmx`, `delta*.dmxd`, `chain/`).
    let codecs = codecs_of(&archive);
    assert_eq!(
        codecs,
        [0, 1, 10, 11],
        "raw, zstd, float-split and float-split-rows chunks"
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

/// An unknown codec id in an archive of a later minor version than this build writes is
/// reported as needing a newer dmx, naming both versions; in an archive of a known minor it
/// is damage.
#[test]
fn an_unknown_codec_of_a_newer_minor_asks_for_an_upgrade() {
    let good = std::fs::read(vectors().join("tiny.dmx")).unwrap();
    let n = good.len();
    let t = Trailer::from_bytes(&good[n - 32..]).expect("trailer");
    let (o, l) = (t.index_offset as usize, t.index_len as usize);
    let mut index =
        Index::from_bytes(&good[o..o + l], t.index_offset, &Limits::default()).expect("index");
    let seg = index.entries[0]
        .segments
        .iter_mut()
        .find(|s| !s.chunks.is_empty())
        .expect("a chunk");
    seg.chunks[0].codec = 200;
    let dir = tempfile::tempdir().unwrap();
    for (minor, newer) in [(dmx::dmx_format::VERSION_MINOR + 1, true), (0, false)] {
        let mut b = good.clone();
        b[o..o + l].copy_from_slice(&index.to_bytes());
        b[10..12].copy_from_slice(&minor.to_le_bytes());
        fix_index_checksum(&mut b);
        let path = dir.path().join(format!("minor-{minor}.dmx"));
        std::fs::write(&path, &b).unwrap();
        let err = match Archive::open(&path) {
            Ok(_) => panic!("minor {minor}: an unknown codec opened"),
            Err(e) => e,
        };
        let msg = err.to_string();
        assert!(matches!(err, dmx::Error::Corrupt { .. }), "{msg}");
        assert!(msg.contains("unknown codec id 200"), "{msg}");
        let upgrade = format!(
            "the archive is format 1.{minor}, newer than this dmx reads (up to 1.{}); upgrade dmx",
            dmx::dmx_format::VERSION_MINOR
        );
        assert_eq!(msg.contains(&upgrade), newer, "{msg}");
        assert_eq!(msg.contains("the archive is damaged"), !newer, "{msg}");
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
                FormatError::UnsupportedVersion { major: 2, minor: 5 }
            ),
            ("x-unknown-codec.dmx", dmx::Error::Corrupt { .. }) => {
                msg.contains("unknown codec id 250")
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

// ---------------------------------------------------------------------------------------
// Lossy codecs, deltas and every archive kind.
//
// `chunk-*.bin` are single chunk payloads of codecs 4–8, encoded from inputs that
// [`chunk_cases`] generates; `lossy*.safetensors` are a small model and a fine-tuned copy of
// it ([`lossy_model`]), `lossy-*.dmx` / `delta*.dmxd` / `chain/` their archives of every kind.
// `expected.txt` records, per vector, the BLAKE3 of what it must decode to (and for chunks
// the codec id and the BLAKE3 of the encoder's input and base). Each vector must (1) decode
// to the recorded bytes and (2) be reproduced byte for byte by encoding the same input.
// ---------------------------------------------------------------------------------------

use dmx::dmx_codec::{self as codec, Codec, FloatLayout, Hints, ValueKind};

/// Small model of the archive vectors, and its fine-tuned copy (the delta target).
const LOSSY_INPUT: &str = "lossy.safetensors";
const LOSSY_TARGET: &str = "lossy-target.safetensors";
/// Archive vectors of `lossy.safetensors` (and of its target for deltas), with how they are
/// made.
const ARCHIVE_KINDS: &[(&str, &str)] = &[
    ("lossy-bfp.dmx", "compress --mode bfp (default M and G)"),
    (
        "lossy-bfp-m3-g8.dmx",
        "compress --mode bfp --mantissa-bits 3 --group-size 8",
    ),
    ("lossy-int16.dmx", "compress --mode int16"),
    ("lossy-cast-bf16.dmx", "compress --cast bf16"),
    ("lossy-cast-f16.dmx", "compress --cast f16"),
    (
        "delta.dmxd",
        "delta-compress lossy.safetensors lossy-target.safetensors",
    ),
    ("delta-int16.dmxd", "delta-compress --precision int16"),
];
/// The chain vector: `chain-compress lossy.safetensors lossy-target.safetensors`.
const CHAIN_DIR: &str = "chain";

/// A deterministic stream of 64-bit values (splitmix64).
fn rng(seed: u64) -> impl FnMut() -> u64 {
    let mut state = seed;
    move || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// `n` weight-like `f32` values: uniform in ±scale, the scale varying every 32 values.
fn weights(seed: u64, n: usize) -> Vec<f32> {
    let mut next = rng(seed);
    let mut scale = 0.05f32;
    (0..n)
        .map(|i| {
            if i % 32 == 0 {
                scale = 0.01 + (next() % 100) as f32 / 1000.0;
            }
            ((next() >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 2.0 * scale
        })
        .collect()
}

/// IEEE half bytes of `v` (truncated; normal range only, smaller magnitudes flush to zero).
fn f16_bytes(v: &[f32]) -> Vec<u8> {
    v.iter()
        .flat_map(|x| {
            let b = x.to_bits();
            let sign = ((b >> 16) & 0x8000) as u16;
            let e = ((b >> 23) & 0xff) as i32 - 127 + 15;
            let h = if x.is_nan() {
                0x7e00
            } else if e >= 31 {
                sign | 0x7c00
            } else if e <= 0 {
                sign
            } else {
                sign | ((e as u16) << 10) | ((b >> 13) & 0x3ff) as u16
            };
            h.to_le_bytes()
        })
        .collect()
}

/// Overwrites values `at` of width `w` with `specials` (bytes of one value each, cycled).
fn put_specials(bytes: &mut [u8], w: usize, at: &[usize], specials: &[&[u8]]) {
    for (k, &i) in at.iter().enumerate() {
        bytes[i * w..(i + 1) * w].copy_from_slice(specials[k % specials.len()]);
    }
}

const F32_SPECIALS: &[&[u8]] = &[
    &[0x00, 0x00, 0xc0, 0x7f], // NaN
    &[0x00, 0x00, 0x80, 0x7f], // +Inf
    &[0x00, 0x00, 0x80, 0xff], // -Inf
    &[0x45, 0x23, 0xc1, 0xff], // NaN with payload
];
const BF16_SPECIALS: &[&[u8]] = &[&[0xc0, 0x7f], &[0x80, 0x7f], &[0x80, 0xff], &[0xc1, 0xff]];
const F16_SPECIALS: &[&[u8]] = &[&[0x00, 0x7e], &[0x00, 0x7c], &[0x00, 0xfc], &[0x01, 0x7e]];

/// One chunk vector: the codec's input (and base), and what encoding it gives now.
struct ChunkCase {
    file: String,
    codec: Codec,
    base: Option<Vec<u8>>,
    input: Vec<u8>,
    /// The payload the current encoder produces.
    payload: Vec<u8>,
    /// Value width and the indices of values that must decode bit for bit (escapes).
    exact: (usize, Vec<usize>),
    /// For deltas: the first payload bytes, which name the variant the encoder must have
    /// chosen.
    variant: &'static [u8],
}

/// Every chunk vector, encoded by the current code.
fn chunk_cases() -> Vec<ChunkCase> {
    use codec::{bfp, cast, delta, grid, quant};
    let mut cases = Vec::new();
    let mut add = |name: &str,
                   codec: Codec,
                   base: Option<Vec<u8>>,
                   input: Vec<u8>,
                   payload: Vec<u8>,
                   exact: (usize, Vec<usize>),
                   variant: &'static [u8]| {
        cases.push(ChunkCase {
            file: format!("chunk-{}-{name}.bin", codec as u8),
            codec,
            base,
            input,
            payload,
            exact,
            variant,
        })
    };
    // Codec 4, BFP: three dtypes, two settings, one group of NaN/Inf (escaped, raw).
    let esc = vec![70usize, 71, 77, 200];
    let bfp_cases: [(&str, FloatLayout, u32, u32, usize); 4] = [
        ("bfp-bf16-m4-g32", FloatLayout::BF16, 4, 32, 0),
        ("bfp-bf16-m8-g16-rows", FloatLayout::BF16, 8, 16, 64),
        ("bfp-f16-m5-g64", FloatLayout::F16, 5, 64, 0),
        ("bfp-f32-m12-g32", FloatLayout::F32, 12, 32, 32),
    ];
    for (i, (name, layout, m, g, row_len)) in bfp_cases.into_iter().enumerate() {
        let v = weights(40 + i as u64, 512);
        let (mut data, specials) = match layout.bytes() {
            4 => (f32_bytes(&v), F32_SPECIALS),
            _ if layout == FloatLayout::F16 => (f16_bytes(&v), F16_SPECIALS),
            _ => (bf16_bytes(&v), BF16_SPECIALS),
        };
        let w = layout.bytes();
        put_specials(&mut data, w, &esc, specials);
        let p = bfp::Params {
            mantissa_bits: m,
            group_size: g,
        };
        bfp::check(layout, p).expect("valid BFP parameters");
        let (payload, _) = bfp::encode(layout, &data, row_len, p);
        add(name, Codec::Bfp, None, data, payload, (w, esc.clone()), &[]);
    }
    // Codec 5, quant: int16 and int32 grids, with escapes (NaN, ±Inf, off the grid).
    for (i, (name, layout, bits)) in [
        ("quant-bf16-int16", FloatLayout::BF16, 16),
        ("quant-f32-int16", FloatLayout::F32, 16),
        ("quant-f32-int32", FloatLayout::F32, 32),
    ]
    .into_iter()
    .enumerate()
    {
        let v = weights(50 + i as u64, 512);
        let step = grid::step_for(0.05, bits);
        let (mut data, specials) = if layout.bytes() == 4 {
            (f32_bytes(&v), F32_SPECIALS)
        } else {
            (bf16_bytes(&v), BF16_SPECIALS)
        };
        let w = layout.bytes();
        put_specials(&mut data, w, &esc, specials);
        let mut exact = esc.clone();
        // Far beyond the grid's range: escaped too.
        let big: &[&[u8]] = if w == 4 {
            &[&[0x00, 0x24, 0x74, 0x49]] // 1e6
        } else {
            &[&[0x74, 0x49]]
        };
        put_specials(&mut data, w, &[300], big);
        exact.push(300);
        let (payload, _) = quant::encode(layout, &data, step, bits);
        add(name, Codec::Quant, None, data, payload, (w, exact), &[]);
    }
    // Codec 6, lossless delta: each variant the encoder picks.
    let base = weights(60, 512);
    let base_f32 = f32_bytes(&base);
    let base_bf16 = bf16_bytes(&base);
    {
        add(
            "delta-same",
            Codec::Delta,
            Some(base_bf16.clone()),
            base_bf16.clone(),
            delta::encode(ValueKind::Float(FloatLayout::BF16), &base_bf16, &base_bf16).0,
            (2, vec![]),
            &[0],
        );
        // A fine-tuning step: every value moves by a few ulps.
        let mut next = rng(61);
        let target: Vec<u8> = base_f32
            .chunks_exact(4)
            .flat_map(|c| {
                let b = u32::from_le_bytes(c.try_into().expect("4"));
                let d = (next() % 64) as u32;
                b.wrapping_add(d).wrapping_sub(32).to_le_bytes()
            })
            .collect();
        let (payload, _) = delta::encode(ValueKind::Float(FloatLayout::F32), &base_f32, &target);
        add(
            "delta-order",
            Codec::Delta,
            Some(base_f32.clone()),
            target,
            payload,
            (4, vec![]),
            &[1],
        );
        // Unrelated values: the XOR of the bits keeps the float field structure best.
        let other = bf16_bytes(&weights(62, 512));
        let (payload, _) = delta::encode(ValueKind::Float(FloatLayout::BF16), &base_bf16, &other);
        add(
            "delta-xor-float",
            Codec::Delta,
            Some(base_bf16.clone()),
            other,
            payload,
            (2, vec![]),
            &[2],
        );
        // Integers with a few bits flipped: zstd of the XOR.
        let ints: Vec<u8> = (0..256i32).flat_map(|i| (i * 3).to_le_bytes()).collect();
        let mut changed = ints.clone();
        for i in [5usize, 100, 101, 200] {
            changed[i * 4] ^= 0x10;
        }
        let (payload, _) = delta::encode(ValueKind::Bytes, &ints, &changed);
        add(
            "delta-zstd-xor",
            Codec::Delta,
            Some(ints),
            changed,
            payload,
            (4, vec![]),
            &[3, 0],
        );
        // Every integer shifted by the same amount: zstd of the wrapping difference.
        let ints: Vec<u8> = (0..256i32).flat_map(|i| (i * 3).to_le_bytes()).collect();
        let shifted: Vec<u8> = (0..256i32)
            .flat_map(|i| (i * 3 + 7).to_le_bytes())
            .collect();
        let (payload, _) = delta::encode(ValueKind::Bytes, &ints, &shifted);
        add(
            "delta-zstd-sub",
            Codec::Delta,
            Some(ints),
            shifted,
            payload,
            (4, vec![]),
            &[3, 1],
        );
    }
    // Codec 7, quantized delta on int16 and int32 grids, with escapes.
    for (i, (name, bits)) in [("quant-delta-f32-int16", 16), ("quant-delta-f32-int32", 32)]
        .into_iter()
        .enumerate()
    {
        let step = grid::step_for(0.12, bits);
        let mut target = f32_bytes(
            &base
                .iter()
                .zip(weights(70 + i as u64, 512))
                .map(|(b, d)| b + d / 64.0)
                .collect::<Vec<_>>(),
        );
        put_specials(&mut target, 4, &esc, F32_SPECIALS);
        let (payload, _) =
            delta::encode_quantized(FloatLayout::F32, &base_f32, &target, step, bits);
        add(
            name,
            Codec::QuantDelta,
            Some(base_f32.clone()),
            target,
            payload,
            (4, esc.clone()),
            &[8],
        );
    }
    // Codec 7 variant 9: a quantized delta on the floating grid (Adam-like second moments:
    // values over 24 binades, each moved a little), with escapes.
    let moments = |seed: u64| -> Vec<f32> {
        let mut next = rng(seed);
        (0..512)
            .map(|_| {
                let u = (next() % 1_000_000) as f32 / 1_000_000.0;
                let w = (next() % 1000 + 1) as f32 / 1000.0;
                w * w * 10f32.powf(-u * 24.0)
            })
            .collect()
    };
    let v_base = f32_bytes(&moments(90));
    let v_target = f32_bytes(
        &moments(90)
            .iter()
            .zip(moments(91))
            .map(|(b, g)| 0.999 * b + 0.001 * g)
            .collect::<Vec<_>>(),
    );
    let mut v_target_esc = v_target.clone();
    put_specials(&mut v_target_esc, 4, &esc, F32_SPECIALS);
    let (payload, _) = delta::encode_float_quantized(FloatLayout::F32, &v_base, &v_target_esc, 10);
    add(
        "quant-delta-f32-float10",
        Codec::QuantDelta,
        Some(v_base.clone()),
        v_target_esc,
        payload,
        (4, esc.clone()),
        &[9],
    );
    // Codec 8, cast to bfloat16 and to half.
    for (i, (name, to)) in [
        ("cast-bf16", FloatLayout::BF16),
        ("cast-f16", FloatLayout::F16),
    ]
    .into_iter()
    .enumerate()
    {
        let mut data = f32_bytes(&weights(80 + i as u64, 512));
        // Infinities survive the cast exactly.
        put_specials(&mut data, 4, &[70, 71], &F32_SPECIALS[1..3]);
        let (payload, _) = cast::encode(
            to,
            &data,
            Hints {
                zstd_level: 3,
                row_len: 32,
                period: 0,
            },
        );
        add(
            name,
            Codec::Cast,
            None,
            data,
            payload,
            (4, vec![70, 71]),
            &[],
        );
    }
    // Codec 9, the floating grid alone: F32 second moments at 10 fraction bits, BF16 at 4,
    // with escapes (NaN, ±Inf, a subnormal).
    let mut data = v_target.clone();
    put_specials(&mut data, 4, &esc, F32_SPECIALS);
    add(
        "fquant-f32-m10",
        Codec::FloatQuant,
        None,
        data.clone(),
        codec::fquant::encode(FloatLayout::F32, &data, 10).0,
        (4, esc.clone()),
        &[],
    );
    let mut data = bf16_bytes(&moments(92));
    put_specials(&mut data, 2, &esc, BF16_SPECIALS);
    add(
        "fquant-bf16-m4",
        Codec::FloatQuant,
        None,
        data.clone(),
        codec::fquant::encode(FloatLayout::BF16, &data, 4).0,
        (2, esc.clone()),
        &[],
    );
    // Codecs 10 and 11, the split-stream float codec, as the lossless encoder picks them:
    // BF16, F16 and F32 weights with ±0, NaN payloads, ±Inf and subnormals; F32 holding
    // BF16 values (trailing zero bits dropped); FP8; a constant chunk (zero code bits);
    // row-scaled F16 rows (the row transform, codec 11).
    let lossless = |layout: FloatLayout, data: &[u8], row_len: usize| {
        let hints = Hints {
            zstd_level: 3,
            row_len,
            period: 0,
        };
        codec::encode_with(codec::ValueKind::Float(layout), data, hints)
    };
    let specials_of = |layout: FloatLayout| match layout.bytes() {
        4 => F32_SPECIALS,
        _ if layout == FloatLayout::F16 => F16_SPECIALS,
        _ => BF16_SPECIALS,
    };
    let mut split_cases: Vec<(&str, FloatLayout, Vec<u8>, usize)> = Vec::new();
    for (i, (name, layout)) in [
        ("split-bf16", FloatLayout::BF16),
        ("split-f16", FloatLayout::F16),
        ("split-f32", FloatLayout::F32),
    ]
    .into_iter()
    .enumerate()
    {
        let v = weights(100 + i as u64, 1003);
        let mut data = match layout.bytes() {
            4 => f32_bytes(&v),
            _ if layout == FloatLayout::F16 => f16_bytes(&v),
            _ => bf16_bytes(&v),
        };
        put_specials(&mut data, layout.bytes(), &esc, specials_of(layout));
        split_cases.push((name, layout, data, 0));
    }
    let bf16_in_f32: Vec<u8> = bf16_bytes(&weights(110, 777))
        .chunks_exact(2)
        .flat_map(|b| (u32::from(u16::from_le_bytes([b[0], b[1]])) << 16).to_le_bytes())
        .collect();
    split_cases.push(("split-f32-tz16", FloatLayout::F32, bf16_in_f32, 0));
    let fp8: Vec<u8> = bf16_bytes(&weights(111, 999))
        .chunks_exact(2)
        .map(|b| b[1] & 0x87 | 0x30)
        .collect();
    split_cases.push(("split-f8e4m3", FloatLayout::F8_E4M3, fp8, 0));
    // F32 weights whose low two bytes take a few patterns: codes of their own (`c = 2`).
    let lowbytes: Vec<u8> = f32_bytes(&weights(113, 6000))
        .chunks_exact(4)
        .enumerate()
        .flat_map(|(i, b)| [(i % 5) as u8 * 3, (i % 3) as u8, b[2], b[3]])
        .collect();
    split_cases.push(("split-f32-lowbytes", FloatLayout::F32, lowbytes, 0));
    split_cases.push((
        "split-bf16-constant",
        FloatLayout::BF16,
        [0x80, 0x3f].repeat(40_000),
        0,
    ));
    let rows: Vec<f32> = weights(112, 64 * 48)
        .iter()
        .enumerate()
        .map(|(i, x)| x * 2f32.powi((i / 64) as i32 % 9 - 4))
        .collect();
    split_cases.push(("split-rows-f16", FloatLayout::F16, f16_bytes(&rows), 64));
    // Codec 12 (rANS-coded symbols), as the lossless encoder picks it: positive values with
    // one dominant binade (85 %, three others 5 % each) and noise in the low 4 mantissa bits
    // only, whose symbol distribution Huffman's whole-bit codes fit badly, in BF16, F16 and
    // F32 holding BF16 values, with specials.
    let skewed = |seed: u64, n: usize, top: u64, mant: u32| -> Vec<u64> {
        let mut next = rng(seed);
        (0..n)
            .map(|_| {
                let r = next();
                let k = match r % 100 {
                    0..85 => 0,
                    85..90 => 1,
                    90..95 => 2,
                    _ => 3,
                };
                (top - k) << mant | (r >> 8) & 0xF
            })
            .collect()
    };
    let esc12 = vec![5usize, 600, 1801, 4095];
    for (name, layout, seed, top, mant, specials) in [
        ("rans-bf16", FloatLayout::BF16, 120, 125, 7, BF16_SPECIALS),
        ("rans-f16", FloatLayout::F16, 121, 14, 10, F16_SPECIALS),
    ] {
        let mut data: Vec<u8> = skewed(seed, 6000, top, mant)
            .iter()
            .flat_map(|&v| (v as u16).to_le_bytes())
            .collect();
        put_specials(&mut data, 2, &esc12, specials);
        split_cases.push((name, layout, data, 0));
    }
    let rans_f32: Vec<u8> = skewed(122, 5001, 125, 7)
        .iter()
        .flat_map(|&v| ((v as u32) << 16).to_le_bytes())
        .collect();
    split_cases.push(("rans-f32-tz16", FloatLayout::F32, rans_f32, 0));
    // Codec 17 (the row transform over codec 12), as the lossless encoder picks it: F16 rows
    // of 64 values, each skewed as above around a level of its own (9 levels), with specials.
    let mut rans_rows: Vec<u8> = Vec::new();
    for row in 0..48u64 {
        let top = 10 + (row * 7) % 9;
        rans_rows.extend(
            skewed(130 + row, 64, top, 10)
                .iter()
                .flat_map(|&v| (v as u16).to_le_bytes()),
        );
    }
    put_specials(&mut rans_rows, 2, &[3, 700, 1500, 3071], F16_SPECIALS);
    split_cases.push(("rans-rows-f16", FloatLayout::F16, rans_rows, 64));
    for (name, layout, data, row_len) in split_cases {
        let enc = lossless(layout, &data, row_len);
        let want = if row_len > 0 && name.starts_with("rans") {
            Codec::FloatSplitRansRows
        } else if row_len > 0 {
            Codec::FloatSplitRows
        } else if name.starts_with("rans") {
            Codec::FloatSplitRans
        } else {
            Codec::FloatSplit
        };
        assert_eq!(
            enc.codec, want,
            "{name}: the encoder picks codec {}",
            want as u8
        );
        if name.ends_with("lowbytes") {
            assert_eq!(enc.payload[3], 2, "{name}: both low bytes get codes");
        }
        let name = name.replacen("split-rows", "rows", 1);
        let exact = (layout.bytes(), (0..data.len() / layout.bytes()).collect());
        add(&name, enc.codec, None, data, enc.payload, exact, &[]);
    }
    // Codec 13, BFP with previous-value tables: kernels of 32 taps that fall off by a binade
    // every 3 taps (BF16) or every tap (F32; the writer picks codec 13 there), a group of NaN/Inf;
    // F32 with a raw low magnitude bit.
    for (i, (name, layout, m, n)) in [
        ("bfp-ctx-bf16-m6", FloatLayout::BF16, 6, 4096),
        ("bfp-ctx-f32-m9", FloatLayout::F32, 9, 4096),
    ]
    .into_iter()
    .enumerate()
    {
        let v: Vec<f32> = weights(50 + i as u64, n)
            .iter()
            .enumerate()
            .map(|(j, &x)| x * (-((j % 32) as f32 / (3 - 2 * i) as f32).floor()).exp2())
            .collect();
        let (mut data, specials) = match layout.bytes() {
            4 => (f32_bytes(&v), F32_SPECIALS),
            _ => (bf16_bytes(&v), BF16_SPECIALS),
        };
        let w = layout.bytes();
        put_specials(&mut data, w, &esc, specials);
        let p = bfp::Params {
            mantissa_bits: m,
            group_size: 32,
        };
        let (payload, _) = bfp::encode(layout, &data, 0, p);
        assert_eq!(
            bfp::codec(&payload),
            Codec::BfpContext,
            "{name}: the encoder picks codec 13"
        );
        add(
            name,
            Codec::BfpContext,
            None,
            data,
            payload,
            (w, esc.clone()),
            &[],
        );
    }
    // Codec 14, the integer grid with previous-value contexts: int16 on F32 kernels of 32 taps
    // whose magnitudes halve every 2 taps (the writer picks codec 14 there), with escapes
    // (NaN, ±Inf, far beyond the grid).
    {
        let v: Vec<f32> = weights(70, 8192)
            .iter()
            .enumerate()
            .map(|(j, &x)| x * (-((j % 32) as f32 / 2.0).floor()).exp2())
            .collect();
        let mut data = f32_bytes(&v);
        put_specials(&mut data, 4, &esc, F32_SPECIALS);
        let mut exact = esc.clone();
        put_specials(&mut data, 4, &[3000], &[&[0x00, 0x24, 0x74, 0x49]]);
        exact.push(3000);
        let (payload, _) = quant::encode(FloatLayout::F32, &data, grid::step_for(0.05, 16), 16);
        assert_eq!(
            quant::codec(&payload),
            Codec::QuantContext,
            "quant-ctx-f32-int16: the encoder picks codec 14"
        );
        add(
            "quant-ctx-f32-int16",
            Codec::QuantContext,
            None,
            data,
            payload,
            (4, exact),
            &[],
        );
    }
    // Codec 15, the integer grid with row or column classes: int16 on a matrix of 128 rows of
    // 64 values whose scale quarters from one row (F32, with escapes) or one column (BF16) to
    // the next, over 6 octaves (the writer picks classes per row, then per column).
    for (name, layout, seed) in [
        ("quant-rows-f32-int16", FloatLayout::F32, 71),
        ("quant-cols-bf16-int16", FloatLayout::BF16, 72),
    ] {
        let by_row = layout.bytes() == 4;
        let v: Vec<f32> = weights(seed, 8192)
            .iter()
            .enumerate()
            .map(|(j, &x)| {
                let unit = if by_row { j / 64 } else { j % 64 };
                // Uniform-like within a row or column: its scale is its size.
                (x * 1000.0).fract() * 0.05 * (-2.0 * (unit % 4) as f32).exp2()
            })
            .collect();
        let (data, exact) = if by_row {
            let mut data = f32_bytes(&v);
            put_specials(&mut data, 4, &esc, F32_SPECIALS);
            put_specials(&mut data, 4, &[3000], &[&[0x00, 0x24, 0x74, 0x49]]);
            let mut exact = esc.clone();
            exact.push(3000);
            (data, exact)
        } else {
            (bf16_bytes(&v), Vec::new())
        };
        let (payload, _) = quant::encode_rows(layout, &data, grid::step_for(0.05, 16), 16, 64);
        assert_eq!(
            quant::codec(&payload),
            Codec::QuantRows,
            "{name}: the encoder picks codec 15"
        );
        add(
            name,
            Codec::QuantRows,
            None,
            data,
            payload,
            (layout.bytes(), exact),
            &[],
        );
    }
    // Codec 16, codec 12 over the column-relative exponent transform, as the lossless encoder
    // picks it: BF16 kernels of 64 taps whose scale halves every 8 taps, 4096 values, with
    // ±0, NaN payloads, ±Inf and subnormals.
    {
        let v: Vec<f32> = weights(73, 4096)
            .iter()
            .enumerate()
            .map(|(j, &x)| x * (-(((j % 64) / 8) as f32)).exp2())
            .collect();
        let mut data = bf16_bytes(&v);
        put_specials(&mut data, 2, &esc, BF16_SPECIALS);
        let hints = Hints {
            zstd_level: 3,
            row_len: 256,
            period: 64,
        };
        let enc = codec::encode_with(codec::ValueKind::Float(FloatLayout::BF16), &data, hints);
        assert_eq!(
            enc.codec,
            Codec::FloatSplitRansCols,
            "rans-cols-bf16: the encoder picks codec 16"
        );
        let exact = (2, (0..data.len() / 2).collect());
        add(
            "rans-cols-bf16",
            enc.codec,
            None,
            data,
            enc.payload,
            exact,
            &[],
        );
    }
    cases
}

/// A small safetensors model with F32, BF16 and F16 matrices (weight-like values, a few
/// NaN/±Inf) and an I32 tensor; `target` is a fine-tuned copy (every float moved a little,
/// the F16 tensor unchanged, two integers changed).
pub fn lossy_model(target: bool) -> Vec<u8> {
    let fine = |v: Vec<f32>, seed: u64| -> Vec<f32> {
        if !target {
            return v;
        }
        let d = weights(seed, v.len());
        v.iter().zip(d).map(|(x, d)| x + d / 128.0).collect()
    };
    let mut f32s = f32_bytes(&fine(weights(1, 16 * 32), 11));
    put_specials(&mut f32s, 4, &[40, 41, 42], F32_SPECIALS);
    let mut bf16 = bf16_bytes(&fine(weights(2, 16 * 32), 12));
    put_specials(&mut bf16, 2, &[300], BF16_SPECIALS);
    let f16 = f16_bytes(&weights(3, 8 * 32));
    let ids: Vec<u8> = (0..16i32)
        .flat_map(|i| (i * 5 + i32::from(target && i % 7 == 3)).to_le_bytes())
        .collect();
    let tensors: [(&str, &str, &[usize], Vec<u8>); 4] = [
        ("layer.attn.weight", "F32", &[16, 32], f32s),
        ("layer.mlp.weight", "BF16", &[16, 32], bf16),
        ("layer.out.weight", "F16", &[8, 32], f16),
        ("layer.ids", "I32", &[16], ids),
    ];
    let mut header = String::from(r#"{"__metadata__":{"format":"pt"}"#);
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

/// Builds the archive vector `name` of [`ARCHIVE_KINDS`] from the inputs in `d` into `out`
/// with `threads` worker threads.
fn make_archive(name: &str, d: &Path, out: &Path, threads: usize) {
    use dmx::lossy::{CastTo, LossyOptions, Mode};
    let o = Options {
        force: true,
        threads: Some(threads),
        ..Options::default()
    };
    let (base, target) = (d.join(LOSSY_INPUT), d.join(LOSSY_TARGET));
    let lossy = |mode, m: Option<u32>, g: Option<u32>, cast| LossyOptions {
        mode,
        mantissa_bits: m,
        group_size: g,
        cast,
        ..LossyOptions::default()
    };
    let l = match name {
        "lossy-bfp.dmx" => lossy(Mode::Bfp, None, None, None),
        "lossy-bfp-m3-g8.dmx" => lossy(Mode::Bfp, Some(3), Some(8), None),
        "lossy-int16.dmx" => lossy(Mode::Int16, None, None, None),
        "lossy-cast-bf16.dmx" => lossy(Mode::Lossless, None, None, Some(CastTo::Bf16)),
        "lossy-cast-f16.dmx" => lossy(Mode::Lossless, None, None, Some(CastTo::F16)),
        "delta.dmxd" | "delta-int16.dmxd" => {
            let precision = if name == "delta.dmxd" {
                dmx::Precision::Lossless
            } else {
                dmx::Precision::Int16
            };
            let dopts = dmx::DeltaOptions {
                precision,
                steps: None,
            };
            dmx::delta_compress(&base, &target, out, &dopts, &o).expect("delta-compress");
            return;
        }
        other => unreachable!("{other}"),
    };
    dmx::compress_with(&base, out, &l, &o).expect("compress");
}

/// Restores the archive vector `name` (from `d`) into `out`; returns the restored bytes.
fn restore_archive(name: &str, d: &Path, out: &Path) -> Vec<u8> {
    if name.ends_with(".dmxd") {
        dmx::delta_reconstruct(&d.join(LOSSY_INPUT), &d.join(name), out, &opts())
            .unwrap_or_else(|e| panic!("delta-reconstruct {name}: {e}; {BLESS_HINT}"));
    } else {
        dmx::decompress(&d.join(name), out, &opts())
            .unwrap_or_else(|e| panic!("decompress {name}: {e}; {BLESS_HINT}"));
    }
    std::fs::read(out).expect("read restored")
}

/// The files of the chain vector, relative to `tests/vectors/`.
fn chain_files(dir: &Path) -> Vec<String> {
    let mut files: Vec<String> = std::fs::read_dir(dir)
        .expect("read chain folder")
        .map(|e| {
            let name = e.expect("entry").file_name().to_string_lossy().into_owned();
            format!("{CHAIN_DIR}/{name}")
        })
        .collect();
    files.sort_unstable();
    files
}

/// Writes the chain vector from the inputs in `d` into `out` (a new folder).
fn make_chain(d: &Path, out: &Path) {
    let o = Options {
        force: true,
        ..opts()
    };
    dmx::chain_compress(
        &[d.join(LOSSY_INPUT), d.join(LOSSY_TARGET)],
        out,
        &dmx::ChainOptions::default(),
        &o,
    )
    .expect("chain-compress");
}

/// Writes every lossy, delta and chain vector into `d` and returns the lines of
/// `expected.txt` and the files written (for `vectors.txt`).
fn bless_more(d: &Path) -> (String, Vec<String>) {
    let mut expected = String::from(
        "# What each vector must decode to: BLAKE3 (hex) of the decoded bytes; for chunk\n\
         # vectors also the codec id and the BLAKE3 of the encoder's input (and base).\n",
    );
    let mut files = Vec::new();
    for case in chunk_cases() {
        std::fs::write(d.join(&case.file), &case.payload).expect("write chunk vector");
        let mut out = vec![0u8; case.input.len()];
        codec::decode_with_base(case.codec, &case.payload, case.base.as_deref(), &mut out)
            .expect("decode fresh chunk");
        let base = case.base.as_deref().map_or("-".to_string(), blake3_hex);
        expected.push_str(&format!(
            "{}: codec={} input={} base={base} decoded={}\n",
            case.file,
            case.codec as u8,
            blake3_hex(&case.input),
            blake3_hex(&out)
        ));
        files.push(case.file);
    }
    std::fs::write(d.join(LOSSY_INPUT), lossy_model(false)).expect("write lossy input");
    std::fs::write(d.join(LOSSY_TARGET), lossy_model(true)).expect("write lossy target");
    files.push(LOSSY_INPUT.into());
    files.push(LOSSY_TARGET.into());
    let scratch = tempfile::tempdir().expect("tempdir");
    for (name, _) in ARCHIVE_KINDS {
        make_archive(name, d, &d.join(name), 2);
        let restored = restore_archive(name, d, &scratch.path().join(name));
        expected.push_str(&format!("{name}: decoded={}\n", blake3_hex(&restored)));
        files.push((*name).into());
    }
    let chain = d.join(CHAIN_DIR);
    if chain.exists() {
        std::fs::remove_dir_all(&chain).expect("remove old chain vector");
    }
    make_chain(d, &chain);
    files.extend(chain_files(&chain));
    (expected, files)
}

/// `expected.txt` as file name to its `key=value` fields.
fn expected() -> BTreeMap<String, BTreeMap<String, String>> {
    let path = vectors().join("expected.txt");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}; {BLESS_HINT}", path.display()));
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (name, fields) = l.split_once(':').expect("\"file: key=value ...\" line");
            let fields = fields
                .split_whitespace()
                .map(|f| {
                    let (k, v) = f.split_once('=').expect("key=value");
                    (k.to_string(), v.to_string())
                })
                .collect();
            (name.trim().to_string(), fields)
        })
        .collect()
}

/// Panics with the first difference of a re-encoded vector.
fn require_same(what: &str, fresh: &[u8], committed: &[u8]) {
    if fresh != committed {
        let at = fresh
            .iter()
            .zip(committed)
            .position(|(a, b)| a != b)
            .unwrap_or(fresh.len().min(committed.len()));
        panic!(
            "{what}: the encoder's output changed: {} bytes now, {} committed, first \
             difference at byte {at}; {BLESS_HINT}",
            fresh.len(),
            committed.len(),
        );
    }
}

/// Lossy vectors written by format 1.3 writers (before the BFP encoder's saturation, the
/// per-tensor integer steps and the extended lossy records of 1.4), kept as they were: they
/// are never blessed again.
const V1_3: &str = "v1.3";
/// Vectors written by format 1.4 writers (lossless chunks of codecs 2 and 3, before the
/// split-stream codecs 10 and 11 of 1.5), kept as they were.
const V1_4: &str = "v1.4";

/// Decodes every vector listed in `old/expected.txt` and checks it against its `decoded=`
/// BLAKE3 or its `same=` file; returns how many were checked.
fn old_vectors_decode(old: &str) -> usize {
    let dir = vectors().join(old);
    let text = std::fs::read_to_string(dir.join("expected.txt"))
        .unwrap_or_else(|e| panic!("{old}/expected.txt: {e}"));
    let cases = chunk_cases();
    let scratch = tempfile::tempdir().expect("tempdir");
    let mut seen = 0;
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (name, fields) = line.split_once(": ").expect("name: fields");
        let committed = std::fs::read(dir.join(name)).expect("old vector");
        let decoded = if name.starts_with("chunk-") {
            let case = cases
                .iter()
                .find(|c| c.file == name)
                .unwrap_or_else(|| panic!("{name}: no chunk case of that name"));
            let mut out = vec![0u8; case.input.len()];
            codec::decode_with_base(case.codec, &committed, case.base.as_deref(), &mut out)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            out
        } else {
            let out = scratch.path().join(name);
            if name.ends_with(".dmxd") {
                dmx::delta_reconstruct(
                    &vectors().join(LOSSY_INPUT),
                    &dir.join(name),
                    &out,
                    &opts(),
                )
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            } else {
                dmx::decompress(&dir.join(name), &out, &opts())
                    .unwrap_or_else(|e| panic!("{name}: {e}"));
            }
            std::fs::read(&out).expect("restored")
        };
        if let Some(same) = fields.strip_prefix("same=") {
            let want = std::fs::read(vectors().join(same)).expect("original");
            assert!(decoded == want, "{old}/{name} decodes to {same}");
        } else {
            let want = fields
                .split(' ')
                .find_map(|f| f.strip_prefix("decoded="))
                .expect("decoded=");
            assert_eq!(blake3_hex(&decoded), want, "{old}/{name}");
        }
        seen += 1;
    }
    seen
}

/// Archives and chunks written by earlier versions still decode to what they decoded to then.
#[test]
fn lossy_vectors_of_format_1_3_still_decode() {
    assert_eq!(old_vectors_decode(V1_3), 10, "every old vector was checked");
}

/// The lossless archives of format 1.4 (codecs 2 and 3), its torch archives, the cast
/// chunks that nest codec 2 and a BFP archive of plain groups (before rate–distortion
/// grouping) still decode.
#[test]
fn vectors_of_format_1_4_still_decode() {
    assert_eq!(old_vectors_decode(V1_4), 9, "every old vector was checked");
    let archive = dmx::Archive::open(&vectors().join(V1_4).join("tiny.dmx")).expect("open");
    let codecs = codecs_of(&archive);
    assert_eq!(
        codecs,
        [0, 1, 2, 3],
        "the old tiny archive covers codecs 2 and 3"
    );
}

#[test]
fn chunk_vectors_of_codecs_4_to_17_decode_and_are_reproduced() {
    let exp = expected();
    let cases = chunk_cases();
    let mut codecs: Vec<u8> = cases.iter().map(|c| c.codec as u8).collect();
    codecs.sort_unstable();
    codecs.dedup();
    assert_eq!(
        codecs,
        [4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17],
        "every lossy and delta codec and the split-stream and rANS codecs have chunk vectors"
    );
    for case in &cases {
        let f = &case.file;
        let e = exp
            .get(f)
            .unwrap_or_else(|| panic!("{f} is not in expected.txt; {BLESS_HINT}"));
        assert_eq!(e["codec"], (case.codec as u8).to_string(), "{f}: codec");
        assert_eq!(
            e["input"],
            blake3_hex(&case.input),
            "{f}: generated input changed"
        );
        let base = case.base.as_deref().map_or("-".to_string(), blake3_hex);
        assert_eq!(e["base"], base, "{f}: generated base changed");
        // (1) The committed bytes decode to the recorded output.
        let committed = read_vector(f);
        let mut out = vec![0u8; case.input.len()];
        codec::decode_with_base(case.codec, &committed, case.base.as_deref(), &mut out)
            .unwrap_or_else(|err| panic!("{f}: {err}; {BLESS_HINT}"));
        assert_eq!(
            blake3_hex(&out),
            e["decoded"],
            "{f}: decoded bytes; {BLESS_HINT}"
        );
        if case.codec.is_lossless() {
            assert!(
                out == case.input,
                "{f}: a lossless codec restores its input"
            );
        }
        let (w, exact) = &case.exact;
        for &i in exact {
            assert_eq!(
                out[i * w..(i + 1) * w],
                case.input[i * w..(i + 1) * w],
                "{f}: escaped value {i} is restored bit for bit"
            );
        }
        assert!(
            committed.starts_with(case.variant),
            "{f}: delta variant {:?}, not {:?}",
            &committed[..committed.len().min(case.variant.len())],
            case.variant
        );
        // (2) Encoding the same input again gives the committed bytes.
        require_same(f, &case.payload, &committed);
    }
}

#[test]
fn archive_vectors_of_every_kind_decode_and_are_reproduced() {
    let exp = expected();
    let d = vectors();
    for (file, make) in [(LOSSY_INPUT, false), (LOSSY_TARGET, true)] {
        assert!(
            read_vector(file) == lossy_model(make),
            "tests/vectors/{file} differs from lossy_model({make}); {BLESS_HINT}"
        );
    }
    let scratch = tempfile::tempdir().expect("tempdir");
    for (name, how) in ARCHIVE_KINDS {
        let committed = read_vector(name);
        // (1) The committed archive restores the recorded bytes.
        let restored = restore_archive(name, d, &scratch.path().join(format!("{name}.out")));
        let e = exp
            .get(*name)
            .unwrap_or_else(|| panic!("{name} is not in expected.txt; {BLESS_HINT}"));
        assert_eq!(
            blake3_hex(&restored),
            e["decoded"],
            "{name} ({how}): restored bytes"
        );
        // The lossless delta restores its target; the lossy kinds change some value.
        let original = lossy_model(name.ends_with(".dmxd"));
        match *name {
            "delta.dmxd" => assert!(restored == original, "{name} ({how}): lossless"),
            _ => assert!(restored != original, "{name} ({how}): lossy"),
        }
        // The archive holds the codec of its kind.
        let archive = Archive::open(&d.join(name)).expect("open");
        let codecs = codecs_of(&archive);
        let want = match *name {
            n if n.starts_with("lossy-bfp") => 4,
            n if n.starts_with("lossy-int") => 5,
            n if n.starts_with("lossy-cast") => 8,
            "delta.dmxd" => 6,
            _ => 7,
        };
        assert!(codecs.contains(&want), "{name}: codec {want} in {codecs:?}");
        // (2) Making it again gives the committed bytes, whatever the thread count.
        for threads in [1, 2] {
            let fresh = scratch.path().join(format!("t{threads}-{name}"));
            make_archive(name, d, &fresh, threads);
            let what = format!("{name} ({how}, {threads} threads)");
            require_same(&what, &std::fs::read(&fresh).expect("read"), &committed);
        }
    }
}

#[test]
fn chain_vector_restores_and_is_reproduced() {
    let d = vectors();
    let scratch = tempfile::tempdir().expect("tempdir");
    let restored = scratch.path().join("restored");
    let rep = dmx::chain_reconstruct(&d.join(CHAIN_DIR), &restored, None, &opts())
        .unwrap_or_else(|e| panic!("chain-reconstruct: {e}; {BLESS_HINT}"));
    assert_eq!(rep.entries.len(), 2, "{rep:?}");
    for (file, target) in [(LOSSY_INPUT, false), (LOSSY_TARGET, true)] {
        assert!(
            std::fs::read(restored.join(file)).expect("restored entry") == lossy_model(target),
            "chain entry {file} restores its checkpoint"
        );
    }
    let fresh = scratch.path().join("chain");
    make_chain(d, &fresh);
    let committed = chain_files(&d.join(CHAIN_DIR));
    let mut made = chain_files(&fresh);
    made.retain(|f| !f.ends_with(".lock"));
    assert_eq!(made, committed, "chain files; {BLESS_HINT}");
    for f in &committed {
        let name = f.trim_start_matches("chain/");
        require_same(
            f,
            &std::fs::read(fresh.join(name)).expect("read"),
            &read_vector(f),
        );
    }
}
