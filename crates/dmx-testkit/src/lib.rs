//! Fixtures shared by the dmx test suites (engine and CLI): a hand-written safetensors
//! encoder (so key order, header padding and `__metadata__` are under the test's control), a
//! small deterministic generator of tensor values, special float values included, and runners
//! for the `dmx` binary.

pub mod diff_pairs;

use std::path::Path;

use dmx_format::{Index, Limits, Trailer, preamble_flags};

/// Every safetensors dtype the tests exercise, with its element size in bytes.
pub const DTYPES: &[(&str, usize)] = &[
    ("BF16", 2),
    ("F16", 2),
    ("F32", 4),
    ("F64", 8),
    ("F8_E4M3", 1),
    ("F8_E5M2", 1),
    ("I8", 1),
    ("U8", 1),
    ("I16", 2),
    ("I32", 4),
    ("I64", 8),
    ("U64", 8),
    ("BOOL", 1),
];

/// Element size of `dtype` in bytes.
pub fn dtype_size(dtype: &str) -> usize {
    DTYPES
        .iter()
        .find(|(d, _)| *d == dtype)
        .map(|(_, s)| *s)
        .unwrap_or_else(|| panic!("unknown dtype {dtype}"))
}

/// One tensor to write.
#[derive(Debug, Clone)]
pub struct Tensor {
    /// Tensor name (the header key).
    pub name: String,
    /// safetensors dtype, e.g. `"BF16"`.
    pub dtype: String,
    /// Shape in elements.
    pub shape: Vec<usize>,
    /// Little-endian element bytes.
    pub data: Vec<u8>,
}

impl Tensor {
    /// A tensor; panics if `data` does not hold exactly `shape`'s elements of `dtype`.
    pub fn new(name: &str, dtype: &str, shape: &[usize], data: Vec<u8>) -> Self {
        let n: usize = shape.iter().product();
        assert_eq!(n * dtype_size(dtype), data.len(), "tensor {name}: size");
        Self {
            name: name.into(),
            dtype: dtype.into(),
            shape: shape.to_vec(),
            data,
        }
    }

    /// A tensor of `shape` filled by [`fill`] (by [`fill_rows`] for [`Mode::RowScaled`]).
    pub fn generated(name: &str, dtype: &str, shape: &[usize], mode: Mode, seed: u64) -> Self {
        let n: usize = shape.iter().product();
        let data = match (mode, float_layout(dtype)) {
            (Mode::RowScaled, Some(_)) if shape.len() >= 2 && n > 0 => {
                fill_rows(dtype, shape[0], n / shape[0], seed)
            }
            _ => fill(dtype, n, mode, seed),
        };
        Self::new(name, dtype, shape, data)
    }
}

/// How a safetensors file is laid out beyond its tensors.
#[derive(Debug, Clone, Default)]
pub struct Layout {
    /// `__metadata__` entries (string to string, as the format requires).
    pub metadata: Vec<(String, String)>,
    /// Where `__metadata__` goes among the header keys (clamped to the key count).
    pub metadata_pos: usize,
    /// Order of the tensors in the header, as indices into the tensor list (identity when
    /// empty).
    pub header_order: Vec<usize>,
    /// Order of the tensors' data in the file (identity when empty).
    pub data_order: Vec<usize>,
    /// Put `data_offsets` before `dtype` and `shape` in each tensor's object.
    pub offsets_first: bool,
    /// Spaces appended to the header JSON (after padding to a multiple of 8 when `align`).
    pub extra_spaces: usize,
    /// Pad the header with spaces to a multiple of 8 bytes, as the reference writer does.
    pub align: bool,
    /// Whitespace between JSON tokens.
    pub pretty: bool,
}

impl Layout {
    /// The layout PyTorch's `save_file` writes: aligned, `__metadata__ = {"format": "pt"}`.
    pub fn pt() -> Self {
        Layout {
            metadata: vec![("format".into(), "pt".into())],
            align: true,
            ..Layout::default()
        }
    }
}

fn json_str(s: &str) -> String {
    serde_json::to_string(s).expect("string encodes")
}

/// The bytes of a safetensors file holding `tensors` laid out by `layout`.
pub fn safetensors(tensors: &[Tensor], layout: &Layout) -> Vec<u8> {
    let ident: Vec<usize> = (0..tensors.len()).collect();
    let data_order = if layout.data_order.is_empty() {
        &ident
    } else {
        &layout.data_order
    };
    let header_order = if layout.header_order.is_empty() {
        &ident
    } else {
        &layout.header_order
    };
    let mut offsets = vec![(0usize, 0usize); tensors.len()];
    let mut data = Vec::new();
    for &i in data_order {
        offsets[i] = (data.len(), data.len() + tensors[i].data.len());
        data.extend_from_slice(&tensors[i].data);
    }
    let sp = if layout.pretty { " " } else { "" };
    let nl = if layout.pretty { "\n  " } else { "" };
    let mut items = Vec::new();
    for &i in header_order {
        let t = &tensors[i];
        let shape = t
            .shape
            .iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join(&format!(",{sp}"));
        let dtype = format!("\"dtype\":{sp}{}", json_str(&t.dtype));
        let shape = format!("\"shape\":{sp}[{shape}]");
        let offs = format!(
            "\"data_offsets\":{sp}[{},{sp}{}]",
            offsets[i].0, offsets[i].1
        );
        let fields = if layout.offsets_first {
            [offs, dtype, shape]
        } else {
            [dtype, shape, offs]
        };
        items.push(format!(
            "{}:{sp}{{{}}}",
            json_str(&t.name),
            fields.join(&format!(",{sp}"))
        ));
    }
    if !layout.metadata.is_empty() {
        let meta = layout
            .metadata
            .iter()
            .map(|(k, v)| format!("{}:{sp}{}", json_str(k), json_str(v)))
            .collect::<Vec<_>>()
            .join(&format!(",{sp}"));
        let pos = layout.metadata_pos.min(items.len());
        items.insert(pos, format!("\"__metadata__\":{sp}{{{meta}}}"));
    }
    let mut header = format!("{{{nl}{}}}", items.join(&format!(",{nl}"))).into_bytes();
    if layout.align {
        while header.len() % 8 != 0 {
            header.push(b' ');
        }
    }
    header.extend(std::iter::repeat_n(b' ', layout.extra_spaces));
    let mut file = (header.len() as u64).to_le_bytes().to_vec();
    file.extend_from_slice(&header);
    file.extend_from_slice(&data);
    file
}

/// The plain layout: header keys and data in tensor order, padded to 8 bytes.
pub fn plain(tensors: &[Tensor]) -> Vec<u8> {
    safetensors(
        tensors,
        &Layout {
            align: true,
            ..Layout::default()
        },
    )
}

/// splitmix64: a tiny deterministic generator.
#[derive(Debug, Clone)]
pub struct Rng(pub u64);

impl Rng {
    /// The next 64 random bits (splitmix64).
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// `n` random bytes.
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }
}

/// How tensor values are drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Uniformly random bits (incompressible).
    Random,
    /// Weight-like values: random sign and mantissa, exponents clustered just below 1.0 for
    /// floats; small magnitudes for integers.
    Weights,
    /// Weight-like values with about one special value (±0, NaNs with payloads, ±Inf,
    /// subnormals, max finite, integer extremes) in `rate` elements.
    Mixed {
        /// One special value in about this many elements.
        rate: u32,
    },
    /// Only special values.
    Special,
    /// One repeated value.
    Constant,
    /// Weight-like floats whose exponents cluster per row (one slice along the first
    /// dimension), around a level that differs from row to row, as in embeddings: what
    /// codec 3 (float-huff-rows) is for. Other dtypes and ranks below 2 get `Weights`.
    RowScaled,
}

/// (total bits, exponent bits) of a float dtype.
pub fn float_layout(dtype: &str) -> Option<(u32, u32)> {
    Some(match dtype {
        "BF16" => (16, 8),
        "F16" => (16, 5),
        "F32" => (32, 8),
        "F64" => (64, 11),
        "F8_E4M3" => (8, 4),
        "F8_E5M2" => (8, 5),
        _ => return None,
    })
}

/// Special bit patterns of `dtype`: signed zeros, NaNs with several payloads, infinities,
/// the smallest and largest subnormals, the largest finite values; extremes for integers.
pub fn specials(dtype: &str) -> Vec<u64> {
    match dtype {
        "BF16" => vec![
            0x0000, 0x8000, 0x7fc0, 0xffc0, 0x7f81, 0x7fff, 0xffa5, 0x7f80, 0xff80, 0x0001, 0x807f,
            0x007f, 0x7f7f, 0xff7f, 0x0080,
        ],
        "F16" => vec![
            0x0000, 0x8000, 0x7e00, 0xfe00, 0x7c01, 0x7fff, 0xfd55, 0x7c00, 0xfc00, 0x0001, 0x83ff,
            0x03ff, 0x7bff, 0xfbff, 0x0400,
        ],
        "F32" => [
            0.0f32.to_bits(),
            (-0.0f32).to_bits(),
            f32::NAN.to_bits(),
            0xffc0_0000,
            0x7f80_0001,
            0x7fff_ffff,
            0xff8a_bcde,
            f32::INFINITY.to_bits(),
            f32::NEG_INFINITY.to_bits(),
            0x0000_0001,
            0x807f_ffff,
            f32::MAX.to_bits(),
            f32::MIN.to_bits(),
            f32::MIN_POSITIVE.to_bits(),
            1.0f32.to_bits(),
        ]
        .iter()
        .map(|&b| u64::from(b))
        .collect(),
        "F64" => vec![
            0.0f64.to_bits(),
            (-0.0f64).to_bits(),
            f64::NAN.to_bits(),
            0xfff8_0000_0000_0000,
            0x7ff0_0000_0000_0001,
            0x7fff_ffff_ffff_ffff,
            0xfff1_2345_6789_abcd,
            f64::INFINITY.to_bits(),
            f64::NEG_INFINITY.to_bits(),
            1,
            0x800f_ffff_ffff_ffff,
            f64::MAX.to_bits(),
            f64::MIN.to_bits(),
            f64::MIN_POSITIVE.to_bits(),
            1.0f64.to_bits(),
        ],
        // E4M3 (fn): no infinities, NaN is S.1111.111; max finite 0x7e (448).
        "F8_E4M3" => vec![0x00, 0x80, 0x7f, 0xff, 0x01, 0x07, 0x87, 0x7e, 0xfe, 0x08],
        // E5M2: infinities 0x7c/0xfc, NaNs 0x7d..0x7f.
        "F8_E5M2" => vec![
            0x00, 0x80, 0x7c, 0xfc, 0x7d, 0x7e, 0x7f, 0xff, 0x01, 0x83, 0x7b, 0xfb, 0x04,
        ],
        "I8" | "U8" => vec![0, 1, 0x7f, 0x80, 0xff],
        "I16" => vec![0, 1, 0x7fff, 0x8000, 0xffff],
        "I32" => vec![0, 1, 0x7fff_ffff, 0x8000_0000, 0xffff_ffff],
        "I64" | "U64" => vec![0, 1, i64::MAX as u64, i64::MIN as u64, u64::MAX],
        "BOOL" => vec![0, 1],
        other => panic!("no specials for {other}"),
    }
}

fn weight_like(dtype: &str, rng: &mut Rng) -> u64 {
    if dtype == "BOOL" {
        return rng.below(2);
    }
    match float_layout(dtype) {
        Some((bits, exp_bits)) => {
            let mant_bits = bits - 1 - exp_bits;
            let bias = (1u64 << (exp_bits - 1)) - 1;
            // Exponent 1..=6 below the bias, mostly close to it.
            let drop = 1 + rng.below(3) + rng.below(4);
            let exp = bias.saturating_sub(drop).max(1);
            let mant = rng.next_u64() & ((1u64 << mant_bits) - 1);
            let sign = rng.below(2);
            (sign << (bits - 1)) | (exp << mant_bits) | mant
        }
        None => {
            // Small signed integers (two's complement, truncated to the element size).
            let v = rng.below(64) as i64 - 32;
            v as u64
        }
    }
}

/// `n` elements of `dtype`, little-endian.
pub fn fill(dtype: &str, n: usize, mode: Mode, seed: u64) -> Vec<u8> {
    let size = dtype_size(dtype);
    let mut rng = Rng(seed ^ 0x5EED_0000_0000_0000);
    let special = specials(dtype);
    let constant = weight_like(dtype, &mut rng);
    let mut out = Vec::with_capacity(n * size);
    for i in 0..n {
        let v = match mode {
            Mode::Random if dtype == "BOOL" => rng.below(2),
            Mode::Random => rng.next_u64(),
            Mode::Weights | Mode::RowScaled => weight_like(dtype, &mut rng),
            Mode::Mixed { rate } => {
                if rng.below(u64::from(rate.max(1))) == 0 {
                    special[rng.below(special.len() as u64) as usize]
                } else {
                    weight_like(dtype, &mut rng)
                }
            }
            Mode::Special => special[i % special.len()],
            Mode::Constant => constant,
        };
        out.extend_from_slice(&v.to_le_bytes()[..size]);
    }
    out
}

/// `rows` rows of `row_len` floats of `dtype` whose exponents sit within two of a per-row
/// level, the levels spread over ten binades.
pub fn fill_rows(dtype: &str, rows: usize, row_len: usize, seed: u64) -> Vec<u8> {
    let (bits, exp_bits) = float_layout(dtype).expect("a float dtype");
    let size = dtype_size(dtype);
    let mant_bits = bits - 1 - exp_bits;
    let bias = (1u64 << (exp_bits - 1)) - 1;
    let mut rng = Rng(seed ^ 0x0000_0000_0000_0707);
    let mut out = Vec::with_capacity(rows * row_len * size);
    for _ in 0..rows {
        let level = bias.saturating_sub(2 + rng.below(10)).max(3);
        for _ in 0..row_len {
            let exp = level - rng.below(3);
            let mant = rng.next_u64() & ((1u64 << mant_bits) - 1);
            let v = (rng.below(2) << (bits - 1)) | (exp << mant_bits) | mant;
            out.extend_from_slice(&v.to_le_bytes()[..size]);
        }
    }
    out
}

/// Writes `bytes` to `path`, creating parent folders.
pub fn write(path: &Path, bytes: &[u8]) {
    if let Some(p) = path.parent() {
        std::fs::create_dir_all(p).expect("create parent");
    }
    std::fs::write(path, bytes).expect("write file");
}

/// Every file under `dir` as (relative path with `/`, bytes), sorted.
pub fn tree(dir: &Path) -> Vec<(String, Vec<u8>)> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, Vec<u8>)>) {
        for item in std::fs::read_dir(dir).expect("read_dir") {
            let path = item.expect("dir entry").path();
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                let rel = path
                    .strip_prefix(root)
                    .expect("under root")
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
                    .join("/");
                out.push((rel, std::fs::read(&path).expect("read")));
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// Names of leftover temporary files (`.dmx-tmp-*`) directly in `dir`.
pub fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .expect("read_dir")
        .filter_map(|e| {
            let name = e.ok()?.file_name().to_string_lossy().into_owned();
            name.starts_with(".dmx-tmp-").then_some(name)
        })
        .collect()
}

/// A small model folder: two shards, an index, a config and a nested tokenizer file.
pub fn model_folder(dir: &Path, seed: u64) {
    let shard1 = vec![
        Tensor::generated("model.embed.weight", "BF16", &[64, 33], Mode::Weights, seed),
        Tensor::generated(
            "model.layers.0.norm",
            "F32",
            &[97],
            Mode::Mixed { rate: 9 },
            seed + 1,
        ),
    ];
    let shard2 = vec![
        Tensor::generated(
            "model.layers.0.mlp",
            "F16",
            &[31, 17],
            Mode::Weights,
            seed + 2,
        ),
        Tensor::generated(
            "model.layers.0.ids",
            "I64",
            &[5, 3],
            Mode::Weights,
            seed + 3,
        ),
        Tensor::generated("lm_head.weight", "BF16", &[], Mode::Weights, seed + 4),
    ];
    let layout = Layout {
        metadata: vec![("format".into(), "pt".into())],
        align: true,
        ..Layout::default()
    };
    write(
        &dir.join("model-00001-of-00002.safetensors"),
        &safetensors(&shard1, &layout),
    );
    write(
        &dir.join("model-00002-of-00002.safetensors"),
        &safetensors(&shard2, &layout),
    );
    let mut map = Vec::new();
    for t in &shard1 {
        map.push(format!(
            "    \"{}\": \"model-00001-of-00002.safetensors\"",
            t.name
        ));
    }
    for t in &shard2 {
        map.push(format!(
            "    \"{}\": \"model-00002-of-00002.safetensors\"",
            t.name
        ));
    }
    let index = format!(
        "{{\n  \"metadata\": {{\"total_size\": 12345}},\n  \"weight_map\": {{\n{}\n  }}\n}}\n",
        map.join(",\n")
    );
    write(&dir.join("model.safetensors.index.json"), index.as_bytes());
    write(
        &dir.join("config.json"),
        br#"{"architectures": ["TinyForCausalLM"], "hidden_size": 64, "torch_dtype": "bfloat16"}"#,
    );
    let vocab: String = (0..300)
        .map(|i| format!("\"tok{i}\": {i}"))
        .collect::<Vec<_>>()
        .join(", ");
    write(
        &dir.join("sub/tokenizer.json"),
        format!("{{\"model\": {{\"vocab\": {{{vocab}}}}}}}").as_bytes(),
    );
}

/// A temporary folder, in RAM (`/dev/shm`) where available: the tests that write thousands
/// of archives would otherwise spend their time in `fsync`.
pub fn scratch() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir()
        && let Ok(dir) = tempfile::Builder::new().prefix("dmx-test-").tempdir_in(shm)
    {
        return dir;
    }
    tempfile::tempdir().expect("tempdir")
}

/// A restored output, read back whole: a file's bytes or a folder's files.
#[derive(PartialEq, Eq, Debug)]
pub enum Restored {
    /// The bytes of a restored file.
    File(Vec<u8>),
    /// Every file of a restored folder, as [`tree`] lists them.
    Folder(Vec<(String, Vec<u8>)>),
}

impl Restored {
    /// Reads the file or folder at `path`.
    pub fn read(path: &Path) -> Self {
        if path.is_dir() {
            Restored::Folder(tree(path))
        } else {
            Restored::File(std::fs::read(path).expect("read restored output"))
        }
    }
}

/// Recomputes the trailer's index checksum of `archive` in place (after a test changed the
/// index on purpose, so the change reaches the parser).
pub fn fix_index_checksum(archive: &mut [u8]) {
    let n = archive.len();
    let t = Trailer::from_bytes(&archive[n - 32..]).expect("trailer");
    let (o, l) = (t.index_offset as usize, t.index_len as usize);
    let fixed = Trailer::for_index(t.index_offset, &archive[o..o + l]);
    archive[n - 32..].copy_from_slice(&fixed.to_bytes());
}

/// Writes to `out` the archive `archive` with its index rewritten by `edit` (same preamble
/// flags, so a compressed index stays compressed; trailer recomputed): crafted archives that
/// only a hostile or buggy writer would produce.
pub fn craft_index(archive: &Path, out: &Path, edit: impl FnOnce(&mut Index)) {
    let bytes = std::fs::read(archive).expect("read the archive");
    let n = bytes.len();
    let t = Trailer::from_bytes(&bytes[n - 32..]).expect("trailer");
    let flags = preamble_flags(&bytes);
    let (off, len) = (t.index_offset as usize, t.index_len as usize);
    let mut index = Index::from_stored(
        &bytes[off..off + len],
        flags,
        off as u64,
        &Limits::default(),
    )
    .expect("index");
    edit(&mut index);
    let raw = index.to_stored(flags);
    let mut out_bytes = bytes[..off].to_vec();
    out_bytes.extend_from_slice(&raw);
    out_bytes.extend_from_slice(&Trailer::for_index(off as u64, &raw).to_bytes());
    std::fs::write(out, out_bytes).expect("write the crafted archive");
}

/// Little-endian bytes of `v`.
pub fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// bfloat16 bytes of `v` (truncated).
pub fn bf16_bytes(v: &[f32]) -> Vec<u8> {
    v.iter()
        .flat_map(|x| ((x.to_bits() >> 16) as u16).to_le_bytes())
        .collect()
}
