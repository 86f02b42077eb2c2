//! Checkpoint pairs for `dmx diff`: the engine tests check the report of each field by
//! field, the CLI tests its text. Each function returns the tensors of A and of B; [`write()`]
//! stores a pair as `a.safetensors` and `b.safetensors`.

use std::path::{Path, PathBuf};

use crate::{Layout, Mode, Tensor, f32_bytes, plain, safetensors};

/// An F32 tensor of `values`.
pub fn f32_tensor(name: &str, shape: &[usize], values: &[f32]) -> Tensor {
    Tensor::new(name, "F32", shape, f32_bytes(values))
}

/// Every element of an F32 or BF16 tensor times two (exact in every binary float format; a
/// BF16 value is the top half of an F32).
pub fn doubled(t: &Tensor) -> Tensor {
    let data = match t.dtype.as_str() {
        "F32" => t
            .data
            .chunks_exact(4)
            .flat_map(|c| (2.0 * f32::from_le_bytes([c[0], c[1], c[2], c[3]])).to_le_bytes())
            .collect(),
        "BF16" => t
            .data
            .chunks_exact(2)
            .flat_map(|c| {
                let v = f32::from_bits(u32::from(u16::from_le_bytes([c[0], c[1]])) << 16);
                (((2.0 * v).to_bits() >> 16) as u16).to_le_bytes()
            })
            .collect(),
        other => panic!("doubled: {other}"),
    };
    Tensor::new(&t.name, &t.dtype, &t.shape, data)
}

/// Writes `tensors` to `dir/name.safetensors` (no metadata); returns its path.
pub fn write_one(dir: &Path, name: &str, tensors: &[Tensor]) -> PathBuf {
    let p = dir.join(format!("{name}.safetensors"));
    crate::write(&p, &plain(tensors));
    p
}

/// Writes a pair as `dir/a.safetensors` and `dir/b.safetensors`; returns both paths.
pub fn write(dir: &Path, (a, b): &(Vec<Tensor>, Vec<Tensor>)) -> (PathBuf, PathBuf) {
    (write_one(dir, "a", a), write_one(dir, "b", b))
}

/// Five tensors of assorted dtypes, an empty one and a scalar among them.
pub fn sample() -> Vec<Tensor> {
    vec![
        Tensor::generated("model.embed.weight", "BF16", &[16, 8], Mode::Weights, 1),
        Tensor::generated(
            "model.layers.0.mlp.weight",
            "F32",
            &[8, 8],
            Mode::Weights,
            2,
        ),
        Tensor::generated("model.layers.0.ids", "I64", &[3], Mode::Weights, 3),
        Tensor::generated("empty", "F16", &[0, 4], Mode::Weights, 4),
        Tensor::generated("scalar", "F64", &[], Mode::Weights, 5),
    ]
}

/// Two layers' tensors doubled (an F32 and a BF16), the output head unchanged.
pub fn scaled() -> (Vec<Tensor>, Vec<Tensor>) {
    let base = vec![
        Tensor::generated(
            "model.layers.0.attn.q_proj.weight",
            "F32",
            &[8, 8],
            Mode::Weights,
            1,
        ),
        Tensor::generated(
            "model.layers.1.mlp.up_proj.weight",
            "BF16",
            &[4, 16],
            Mode::Weights,
            2,
        ),
        Tensor::generated("lm_head.weight", "F32", &[16, 4], Mode::Weights, 3),
    ];
    let mut tuned = base.clone();
    tuned[0] = doubled(&base[0]);
    tuned[1] = doubled(&base[1]);
    (base, tuned)
}

/// One tensor kept, one removed, one added, one reshaped and one retyped (B in another order).
pub fn added_removed_reshaped() -> (Vec<Tensor>, Vec<Tensor>) {
    let a = vec![
        f32_tensor("kept", &[2], &[1.0, 2.0]),
        f32_tensor("gone", &[1], &[1.0]),
        f32_tensor("reshaped", &[2, 2], &[1.0; 4]),
        f32_tensor("retyped", &[2], &[1.0; 2]),
    ];
    let b = vec![
        f32_tensor("new", &[1], &[3.0]),
        f32_tensor("reshaped", &[4], &[1.0; 4]),
        Tensor::new("retyped", "F64", &[2], vec![0; 16]),
        f32_tensor("kept", &[2], &[1.0, 2.0]),
    ];
    (a, b)
}

/// Integer and bool tensors: two of ten I64 values changed, two of four mask values, the U8
/// codes unchanged.
pub fn integer_and_bool() -> (Vec<Tensor>, Vec<Tensor>) {
    let ids: Vec<u8> = (0..10i64).flat_map(|v| v.to_le_bytes()).collect();
    let mut ids2 = ids.clone();
    ids2[3 * 8] = 99;
    ids2[7 * 8 + 7] = 0x80;
    let a = vec![
        Tensor::new("ids", "I64", &[10], ids),
        Tensor::new("mask", "BOOL", &[4], vec![0, 1, 1, 0]),
        Tensor::new("codes", "U8", &[2, 2], vec![1, 2, 3, 4]),
    ];
    let b = vec![
        Tensor::new("ids", "I64", &[10], ids2),
        Tensor::new("mask", "BOOL", &[4], vec![1, 1, 1, 1]),
        Tensor::new("codes", "U8", &[2, 2], vec![1, 2, 3, 4]),
    ];
    (a, b)
}

/// Zeros on either side, a sign of zero, NaN and infinities, an empty tensor, a sign flip.
pub fn zero_and_special() -> (Vec<Tensor>, Vec<Tensor>) {
    let a = vec![
        f32_tensor("zero_zero", &[3], &[0.0; 3]),
        f32_tensor("zero_some", &[3], &[0.0; 3]),
        f32_tensor("some_zero", &[3], &[1.0, -2.0, 2.0]),
        f32_tensor("signs", &[2], &[0.0, 1.0]),
        f32_tensor("nan", &[3], &[f32::NAN, 1.0, f32::INFINITY]),
        f32_tensor("empty", &[0], &[]),
        f32_tensor("opposite", &[2], &[1.0, -1.0]),
    ];
    let b = vec![
        f32_tensor("zero_zero", &[3], &[0.0; 3]),
        f32_tensor("zero_some", &[3], &[0.0, 0.5, 0.0]),
        f32_tensor("some_zero", &[3], &[0.0; 3]),
        f32_tensor("signs", &[2], &[-0.0, 1.0]),
        f32_tensor("nan", &[3], &[f32::NAN, 2.0, 1.0]),
        f32_tensor("empty", &[0], &[]),
        f32_tensor("opposite", &[2], &[-1.0, 1.0]),
    ];
    (a, b)
}

/// Weights and two optimizer moments of a two-block model; only `exp_avg_sq` moved (doubled).
pub fn optimizer_state() -> (Vec<Tensor>, Vec<Tensor>) {
    let mut base = Vec::new();
    for prefix in ["model.", "optim.exp_avg.", "optim.exp_avg_sq."] {
        for l in 0..2 {
            base.push(Tensor::generated(
                &format!("{prefix}blocks.{l}.attn_qkv.weight"),
                "F32",
                &[4, 4],
                Mode::Weights,
                l,
            ));
            base.push(Tensor::generated(
                &format!("{prefix}blocks.{l}.ln1.weight"),
                "F32",
                &[4],
                Mode::Weights,
                10 + l,
            ));
        }
        base.push(Tensor::generated(
            &format!("{prefix}wte.weight"),
            "F32",
            &[8, 4],
            Mode::Weights,
            20,
        ));
    }
    let tuned = base
        .iter()
        .map(|t| {
            if t.name.starts_with("optim.exp_avg_sq.") {
                doubled(t)
            } else {
                t.clone()
            }
        })
        .collect();
    (base, tuned)
}

/// One tensor, the same in both, under metadata whose `step` changed and `lr` was added;
/// written as `dir/a.safetensors` and `dir/b.safetensors`.
pub fn write_metadata_pair(dir: &Path) -> (PathBuf, PathBuf) {
    let t = vec![f32_tensor("w", &[1], &[1.0])];
    let a = dir.join("a.safetensors");
    let b = dir.join("b.safetensors");
    let meta = |pairs: &[(&str, &str)]| Layout {
        metadata: pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..Layout::default()
    };
    let step = |s: &str, more: &[(&'static str, &'static str)]| {
        let mut pairs = vec![("step", s), ("same", "x")];
        pairs.extend_from_slice(more);
        safetensors(&t, &meta(&pairs))
    };
    crate::write(&a, &step("600", &[]));
    crate::write(&b, &step("750", &[("lr", "3e-05")]));
    (a, b)
}
