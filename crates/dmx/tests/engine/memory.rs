//! Archives written from tensors in memory and read back into caller memory: the layout is
//! the `safetensors` serializer's, the archive is that of the serialized file, reads decode
//! only what is asked.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use dmx::lossy::{LossyOptions, Mode};
use dmx::{Archive, Error, Options, TensorData};
use dmx_testkit::{Mode as Fill, Rng, fill, scratch};

/// Every safetensors dtype with its size in bits.
const DTYPES: [(&str, u64); 22] = [
    ("BOOL", 8),
    ("F4", 4),
    ("F6_E2M3", 6),
    ("F6_E3M2", 6),
    ("U8", 8),
    ("I8", 8),
    ("F8_E5M2", 8),
    ("F8_E4M3", 8),
    ("F8_E8M0", 8),
    ("F8_E4M3FNUZ", 8),
    ("F8_E5M2FNUZ", 8),
    ("I16", 16),
    ("U16", 16),
    ("F16", 16),
    ("BF16", 16),
    ("I32", 32),
    ("U32", 32),
    ("F32", 32),
    ("C64", 64),
    ("F64", 64),
    ("I64", 64),
    ("U64", 64),
];

/// An owned tensor for the tests.
struct Owned {
    name: String,
    dtype: &'static str,
    shape: Vec<u64>,
    data: Vec<u8>,
}

impl Owned {
    fn new(name: &str, dtype: &'static str, shape: &[u64], rng: &mut Rng) -> Self {
        let bits = DTYPES.iter().find(|d| d.0 == dtype).expect("dtype").1;
        let n: u64 = shape.iter().product();
        let data = match dtype {
            "BF16" | "F16" | "F32" | "F64" => fill(dtype, n as usize, Fill::Weights, rng.0),
            _ => rng.bytes((n * bits / 8) as usize),
        };
        rng.next_u64();
        Self {
            name: name.into(),
            dtype,
            shape: shape.to_vec(),
            data,
        }
    }

    fn view(&self) -> TensorData<'_> {
        TensorData {
            name: &self.name,
            dtype: self.dtype,
            shape: &self.shape,
            data: &self.data,
        }
    }
}

fn views(ts: &[Owned]) -> Vec<TensorData<'_>> {
    ts.iter().map(Owned::view).collect()
}

/// What the `safetensors` crate serializes for `ts` and `meta`.
fn serialized(ts: &[Owned], meta: Option<&BTreeMap<String, String>>) -> Vec<u8> {
    let tensors: Vec<(String, safetensors::tensor::TensorView<'_>)> = ts
        .iter()
        .map(|t| {
            let dtype = serde_json::from_str(&format!("{:?}", t.dtype)).expect("dtype");
            let shape = t.shape.iter().map(|&d| d as usize).collect();
            let view = safetensors::tensor::TensorView::new(dtype, shape, &t.data).expect("view");
            (t.name.clone(), view)
        })
        .collect();
    let meta: Option<HashMap<String, String>> = meta.map(|m| m.clone().into_iter().collect());
    safetensors::tensor::serialize(tensors.iter().map(|(n, v)| (n.as_str(), v)), meta)
        .expect("serialize")
}

/// Tensors of every dtype and awkward shapes: scalars, empty tensors (several sharing an
/// offset), odd sizes, a row-chunked matrix over one chunk.
fn zoo(seed: u64) -> Vec<Owned> {
    let mut rng = Rng(seed);
    let mut out = Vec::new();
    for (i, (dtype, bits)) in DTYPES.iter().enumerate() {
        let even = |n: u64| if *bits < 8 { n * 4 } else { n };
        out.push(Owned::new(
            &format!("t{i}.a"),
            dtype,
            &[even(3), 5],
            &mut rng,
        ));
        out.push(Owned::new(&format!("z{i}"), dtype, &[0, 7], &mut rng));
        if *bits >= 8 {
            out.push(Owned::new(&format!("s{i}"), dtype, &[], &mut rng));
            out.push(Owned::new(&format!("o{i}"), dtype, &[1, 3, 1, 7], &mut rng));
        }
    }
    out.push(Owned::new("big", "BF16", &[700, 1024], &mut rng));
    out.push(Owned::new("wide", "F32", &[3, 100_000], &mut rng));
    // Shuffle: the layout must not depend on the order given.
    for i in (1..out.len()).rev() {
        out.swap(i, rng.below(i as u64 + 1) as usize);
    }
    out
}

fn meta(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The file [`dmx::safetensors_layout`] describes.
fn laid_out(ts: &[Owned], meta: Option<&BTreeMap<String, String>>) -> Vec<u8> {
    let (mut file, order) = dmx::safetensors_layout(&views(ts), meta).expect("layout");
    for i in order {
        file.extend_from_slice(&ts[i].data);
    }
    file
}

#[test]
fn layout_is_the_serializers() {
    let ts = zoo(1);
    let odd = meta(&[("format", "pt\"\\ \u{e9}\n")]);
    for m in [
        None,
        Some(meta(&[])),
        Some(meta(&[("format", "pt")])),
        Some(odd),
    ] {
        assert_eq!(
            laid_out(&ts, m.as_ref()),
            serialized(&ts, m.as_ref()),
            "{m:?}"
        );
    }
    assert_eq!(laid_out(&[], None), serialized(&[], None));
    let one = [Owned::new("x", "I8", &[1], &mut Rng(2))];
    assert_eq!(laid_out(&one, None), serialized(&one, None));
}

/// Compresses `ts` from memory into `dir/model.dmx` and the serialized file into
/// `dir/file.dmx`; both archives must be identical.
fn same_archive(dir: &Path, ts: &[Owned], m: Option<&BTreeMap<String, String>>, l: &LossyOptions) {
    let opts = Options {
        threads: Some(2),
        force: true,
        no_sync: true,
        ..Options::default()
    };
    let st = dir.join("model.safetensors");
    std::fs::write(&st, serialized(ts, m)).unwrap();
    let (a, b) = (dir.join("file.dmx"), dir.join("model.dmx"));
    let from_file = dmx::compress_with(&st, &a, l, &opts).unwrap();
    let from_memory = dmx::compress_tensors(&views(ts), m, &b, l, &opts).unwrap();
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    assert_eq!(from_file.output_bytes, from_memory.output_bytes);
    assert_eq!(from_file.input_bytes, from_memory.input_bytes);
    assert_eq!(from_file.warnings, from_memory.warnings);
}

#[test]
fn archives_are_those_of_the_serialized_file() {
    let dir = scratch();
    let ts = zoo(3);
    let m = meta(&[("format", "pt")]);
    same_archive(dir.path(), &ts, Some(&m), &LossyOptions::default());
    same_archive(dir.path(), &ts, None, &LossyOptions::default());
    let bfp = LossyOptions {
        mode: Mode::Bfp,
        keep_lossless: vec!["wide".into()],
        ..LossyOptions::default()
    };
    same_archive(dir.path(), &ts, Some(&m), &bfp);
    let auto = LossyOptions {
        mode: Mode::Auto,
        max_rel_error: Some(0.01),
        ..LossyOptions::default()
    };
    same_archive(dir.path(), &ts, None, &auto);
    // Many small tensors: format 1.2 packs them, chunks spanning several tensors.
    let mut rng = Rng(4);
    let small: Vec<Owned> = (0..300)
        .map(|i| Owned::new(&format!("n.{i}.w"), "F32", &[1 + i % 17], &mut rng))
        .collect();
    same_archive(dir.path(), &small, Some(&m), &LossyOptions::default());
    let a = Archive::open(&dir.path().join("model.dmx")).unwrap();
    // Format 1.2 features (packs), and codec 10 (1.5).
    assert_eq!(a.version(), (1, 5));
    // Packed tensors read whole and by rows.
    for t in small.iter().step_by(7) {
        let r = a.tensor(&t.name).unwrap();
        assert!(matches!(
            r.segment.kind,
            dmx::dmx_format::SegmentKind::Packed(_)
        ));
        let mut buf = vec![0u8; t.data.len()];
        a.read_tensor_into(&t.name, &mut buf).unwrap();
        assert!(buf == t.data);
        let n = t.shape[0];
        let mut part = vec![0u8; 4 * (n as usize - n as usize / 2)];
        a.read_rows_into(&t.name, n / 2..n, &mut part).unwrap();
        assert!(part == t.data[4 * (n as usize / 2)..]);
    }
    same_archive(dir.path(), &[], None, &LossyOptions::default());
}

#[test]
fn reads_into_memory_round_trip() {
    let dir = scratch();
    let ts = zoo(5);
    let m = meta(&[("format", "pt"), ("step", "7")]);
    let out = dir.path().join("m.dmx");
    dmx::compress_tensors(
        &views(&ts),
        Some(&m),
        &out,
        &LossyOptions::default(),
        &Options::default(),
    )
    .unwrap();
    let a = Archive::open(&out).unwrap();
    assert_eq!(a.safetensors_entries(), ["m.safetensors"]);
    assert_eq!(a.safetensors_metadata().unwrap(), Some(m));
    let mut rng = Rng(6);
    for t in &ts {
        let info = a.tensor_info(&t.name).unwrap();
        assert_eq!(
            (info.info.dtype.as_str(), &info.info.shape),
            (t.dtype, &t.shape)
        );
        assert_eq!(info.len, t.data.len() as u64);
        let mut buf = vec![0u8; t.data.len()];
        a.read_tensor_into(&t.name, &mut buf).unwrap();
        assert!(buf == t.data, "{}", t.name);
        let n = t.shape.first().copied().unwrap_or(1);
        if n == 0 || !(t.data.len() as u64).is_multiple_of(n) {
            continue;
        }
        let row = t.data.len() as u64 / n;
        for _ in 0..4 {
            let s = rng.below(n + 1);
            let e = s + rng.below(n - s + 1);
            let mut part = vec![0u8; ((e - s) * row) as usize];
            a.read_rows_into(&t.name, s..e, &mut part).unwrap();
            assert!(
                part == t.data[(s * row) as usize..(e * row) as usize],
                "{} {s}..{e}",
                t.name
            );
        }
    }
    // Wrong sizes and ranges are refused.
    let mut small = vec![0u8; 3];
    assert!(matches!(
        a.read_tensor_into("big", &mut small),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        a.read_rows_into("big", 5..701, &mut small),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        a.read_rows_into("big", 0..1, &mut small),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        a.read_tensor_into("nope", &mut small),
        Err(Error::TensorNotFound { .. })
    ));
}

#[test]
fn lossy_tensors_read_as_their_decoded_values() {
    let dir = scratch();
    let ts = zoo(7);
    let out = dir.path().join("m.dmx");
    let bfp = LossyOptions {
        mode: Mode::Bfp,
        mantissa_bits: Some(3),
        ..LossyOptions::default()
    };
    dmx::compress_tensors(&views(&ts), None, &out, &bfp, &Options::default()).unwrap();
    let a = Archive::open(&out).unwrap();
    assert_eq!(a.safetensors_metadata().unwrap(), None);
    let decoded = a.read_tensor("big").unwrap();
    assert!(decoded != ts.iter().find(|t| t.name == "big").unwrap().data);
    let mut buf = vec![0u8; decoded.len()];
    a.read_tensor_into("big", &mut buf).unwrap();
    assert_eq!(buf, decoded);
    let mut rows = vec![0u8; 2048 * 10];
    a.read_rows_into("big", 600..610, &mut rows).unwrap();
    assert_eq!(rows, decoded[600 * 2048..610 * 2048]);
}

/// Row reads decode only the chunks holding the rows: a damaged chunk elsewhere goes
/// unnoticed, one inside is reported.
#[test]
fn row_reads_decode_only_their_chunks() {
    let dir = scratch();
    let ts = [Owned::new("w", "F32", &[1000, 1024], &mut Rng(8))];
    let out = dir.path().join("m.dmx");
    dmx::compress_tensors(
        &views(&ts),
        None,
        &out,
        &LossyOptions::default(),
        &Options::default(),
    )
    .unwrap();
    let chunks = Archive::open(&out)
        .unwrap()
        .tensor("w")
        .unwrap()
        .segment
        .chunks
        .clone();
    assert!(chunks.len() >= 3, "{}", chunks.len());
    let rows_per_chunk = u64::from(chunks[0].raw_len) / 4096;
    // Damage the last chunk's payload.
    let mut bytes = std::fs::read(&out).unwrap();
    let last = chunks.last().unwrap();
    bytes[(last.offset + u64::from(last.stored_len) / 2) as usize] ^= 0x55;
    std::fs::write(&out, &bytes).unwrap();
    let a = Archive::open(&out).unwrap();
    let data = &ts[0].data;
    let mut buf = vec![0u8; (2 * rows_per_chunk * 4096) as usize];
    a.read_rows_into("w", 0..2 * rows_per_chunk, &mut buf)
        .unwrap();
    assert!(buf == data[..buf.len()]);
    let mut one = vec![0u8; 4096];
    a.read_rows_into("w", rows_per_chunk + 3..rows_per_chunk + 4, &mut one)
        .unwrap();
    assert!(one == data[((rows_per_chunk + 3) * 4096) as usize..][..4096]);
    let e = a.read_rows_into("w", 999..1000, &mut one).unwrap_err();
    assert!(matches!(e, Error::Corrupt { .. }), "{e}");
    let mut all = vec![0u8; data.len()];
    assert!(
        a.read_tensor_into("w", &mut all)
            .unwrap_err()
            .is_integrity_failure()
    );
}

#[test]
fn folder_archives_address_tensors_per_file() {
    let dir = scratch();
    let (a_ts, b_ts) = (zoo(9), zoo(10));
    let m = meta(&[("format", "np")]);
    let folder = dir.path().join("model");
    std::fs::create_dir(&folder).unwrap();
    std::fs::write(folder.join("a.safetensors"), serialized(&a_ts, Some(&m))).unwrap();
    std::fs::write(folder.join("b.safetensors"), serialized(&b_ts, None)).unwrap();
    std::fs::write(folder.join("config.json"), b"{}").unwrap();
    let out = dir.path().join("model.dmx");
    dmx::compress(&folder, &out, &Options::default()).unwrap();
    let a = Archive::open(&out).unwrap();
    assert_eq!(a.safetensors_entries(), ["a.safetensors", "b.safetensors"]);
    assert!(matches!(
        a.safetensors_metadata(),
        Err(Error::InvalidArgument(_))
    ));
    assert_eq!(
        a.safetensors_metadata_in(Some("a.safetensors")).unwrap(),
        Some(m)
    );
    assert_eq!(
        a.safetensors_metadata_in(Some("b.safetensors")).unwrap(),
        None
    );
    assert!(a.safetensors_metadata_in(Some("config.json")).is_err());
    assert_eq!(a.tensors_in(Some("b.safetensors")).count(), b_ts.len());
    let t = a.find_tensor(Some("b.safetensors"), "big").unwrap();
    let mut buf = vec![0u8; t.len as usize];
    a.read_ref_into(t, &mut buf).unwrap();
    assert!(buf == b_ts.iter().find(|t| t.name == "big").unwrap().data);
    assert!(a.find_tensor(Some("c.safetensors"), "big").is_err());
}

#[test]
fn bad_tensors_are_refused() {
    let dir = scratch();
    let out = dir.path().join("m.dmx");
    let good = [0u8; 8];
    fn t<'a>(name: &'a str, dtype: &'a str, shape: &'a [u64], data: &'a [u8]) -> TensorData<'a> {
        TensorData {
            name,
            dtype,
            shape,
            data,
        }
    }
    let cases = [
        vec![t("a", "F33", &[2], &good)],
        vec![t("a", "F32", &[3], &good)],
        vec![t("a", "F4", &[3], &good[..2])],
        vec![t("a", "F32", &[2], &good), t("a", "I8", &[8], &good)],
        vec![t("__metadata__", "F32", &[2], &good)],
        vec![t("a", "F32", &[u64::MAX, 2], &good)],
    ];
    for c in cases {
        let e = dmx::compress_tensors(
            &c,
            None,
            &out,
            &LossyOptions::default(),
            &Options::default(),
        )
        .unwrap_err();
        assert!(matches!(e, Error::InvalidArgument(_)), "{e}");
        assert!(!out.exists());
    }
}

#[test]
fn cancel_leaves_no_output() {
    let dir = scratch();
    let ts = zoo(11);
    let out = dir.path().join("m.dmx");
    let opts = Options {
        cancel: Some(Arc::new(AtomicBool::new(true))),
        ..Options::default()
    };
    let e = dmx::compress_tensors(&views(&ts), None, &out, &LossyOptions::default(), &opts)
        .unwrap_err();
    assert!(matches!(e, Error::Cancelled), "{e}");
    assert!(dmx_testkit::leftovers(dir.path()).is_empty());
    assert!(!out.exists());
}

/// Counts the bytes reported.
#[derive(Default)]
struct Count(std::sync::atomic::AtomicU64);

impl dmx::Progress for Count {
    fn start(&self, _: &str, _: u64) {}
    fn advance(&self, bytes: u64) {
        self.0
            .fetch_add(bytes, std::sync::atomic::Ordering::Relaxed);
    }
    fn finish(&self) {}
}

#[test]
fn reads_report_progress_and_stop_when_cancelled() {
    let dir = scratch();
    let ts = zoo(12);
    let out = dir.path().join("m.dmx");
    let count = Arc::new(Count::default());
    let opts = Options {
        progress: Some(count.clone()),
        ..Options::default()
    };
    dmx::compress_tensors(&views(&ts), None, &out, &LossyOptions::default(), &opts).unwrap();
    let total: u64 = ts.iter().map(|t| t.data.len() as u64).sum();
    assert!(count.0.load(std::sync::atomic::Ordering::Relaxed) > total);
    count.0.store(0, std::sync::atomic::Ordering::Relaxed);
    let a = Archive::open(&out).unwrap();
    for t in a.tensors() {
        let mut buf = vec![0u8; t.len as usize];
        a.read_ref_into_with(t, &mut buf, &opts).unwrap();
    }
    assert_eq!(count.0.load(std::sync::atomic::Ordering::Relaxed), total);
    let cancelled = Options {
        cancel: Some(Arc::new(AtomicBool::new(true))),
        ..Options::default()
    };
    let t = a.tensor("big").unwrap();
    let mut buf = vec![0u8; t.len as usize];
    let e = a.read_ref_into_with(t, &mut buf, &cancelled).unwrap_err();
    assert!(matches!(e, Error::Cancelled), "{e}");
}

/// Bindings share an open archive between threads.
#[test]
fn archives_are_send_and_sync() {
    fn shared<T: Send + Sync>() {}
    shared::<Archive>();
    shared::<TensorData<'static>>();
}
