//! Lossy damage is reported loudly (issue 11, findings 8 and 14): overflowing casts, lossy
//! summaries with their worst error, `verify` of deltas, `--mantissa-bits` beyond a dtype,
//! lossy forms never larger than exact ones, flags that do nothing, deltas of files not named
//! `*.safetensors`.

use dmx_testkit as common;
use dmx_testkit::{bf16_bytes, f32_bytes};

use std::path::PathBuf;

use assert_cmd::Command;
use common::Tensor;
use serde_json::Value;

/// Normal-ish values (Box–Muller on a fixed LCG): what lossy modes are made for.
fn gauss(n: usize, seed: u64, sigma: f64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = || {
        s = s
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((s >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    };
    (0..n)
        .map(|_| {
            let (u, v) = (next(), next());
            ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos() * sigma) as f32
        })
        .collect()
}

struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn write(&self, rel: &str, tensors: &[Tensor]) {
        common::write(&self.path(rel), &common::plain(tensors));
    }

    fn size(&self, rel: &str) -> u64 {
        std::fs::metadata(self.path(rel)).expect(rel).len()
    }

    /// Runs `dmx ARGS` in the scratch folder, expects exit status `code`; returns
    /// (stdout, stderr).
    fn run(&self, args: &[&str], code: i32) -> (String, String) {
        let out = Command::cargo_bin("dmx")
            .expect("dmx binary")
            .current_dir(self.dir.path())
            .args(args)
            .output()
            .expect("run dmx");
        crate::support::check(args, &out, code)
    }

    fn json(&self, args: &[&str], code: i32) -> Value {
        let (out, _) = self.run(args, code);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("dmx {args:?}: {e}: {out}"))
    }
}

/// No `null` anywhere in a JSON value under keys that hold error figures (SNR included: an
/// infinite error gives an SNR of -inf, once written as `null`).
fn no_null_errors(v: &Value, at: &str) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                if (k.contains("rel_l2")
                    || k.contains("abs_error")
                    || k.contains("snr")
                    || k == "limit")
                    && x.is_null()
                {
                    panic!("{at}.{k} is null");
                }
                no_null_errors(x, &format!("{at}.{k}"));
            }
        }
        Value::Array(a) => a.iter().for_each(|x| no_null_errors(x, at)),
        _ => {}
    }
}

/// An F32 model with one tensor beyond half's range and one within it.
fn overflow_model(env: &Env) {
    let small = gauss(4096, 1, 0.02);
    let big: Vec<f32> = small.iter().map(|x| x * 1e7).collect();
    env.write(
        "m.safetensors",
        &[
            Tensor::new("w.big", "F32", &[64, 64], f32_bytes(&big)),
            Tensor::new("w.small", "F32", &[64, 64], f32_bytes(&small)),
        ],
    );
}

#[test]
fn cast_f16_overflow_is_kept_exact_with_a_warning() {
    let env = Env::new();
    overflow_model(&env);
    let (_, err) = env.run(&["compress", "m.safetensors", "c.dmx", "--cast", "f16"], 0);
    assert!(
        err.contains("\"w.big\"") && err.contains("beyond the range of f16"),
        "{err}"
    );
    let info = env.json(&["info", "c.dmx", "--json"], 0);
    let tensors = &info["files"][0]["tensors"];
    let by_name = |n: &str| {
        tensors
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == n)
            .cloned()
            .unwrap()
    };
    assert!(by_name("w.big")["lossy"].is_null(), "w.big stored exactly");
    assert!(by_name("w.small")["lossy"].is_object(), "w.small cast");
    // The restored file is within the recorded error: verify passes.
    env.run(&["verify", "m.safetensors", "c.dmx"], 0);
    let (_, err) = env.run(
        &[
            "compress",
            "m.safetensors",
            "c.dmx",
            "--cast",
            "f16",
            "--json",
            "-f",
        ],
        0,
    );
    assert!(err.contains("beyond the range"), "{err}");
}

#[test]
fn allowed_cast_overflow_never_verifies_and_writes_inf_not_null() {
    let env = Env::new();
    overflow_model(&env);
    let (_, err) = env.run(
        &[
            "compress",
            "m.safetensors",
            "o.dmx",
            "--cast",
            "f16",
            "--allow-cast-overflow",
        ],
        0,
    );
    assert!(err.contains("LOSSY") && err.contains("inf"), "{err}");
    // An infinite error never passes, even though the archive records it.
    let (out, _) = env.run(&["verify", "m.safetensors", "o.dmx"], 1);
    assert!(out.contains("FAIL") && out.contains("inf"), "{out}");
    let rep = env.json(&["verify", "m.safetensors", "o.dmx", "--json"], 1);
    no_null_errors(&rep, "verify");
    let errors = rep["files"][0]["tensor_errors"].as_array().unwrap();
    let big = errors.iter().find(|e| e["name"] == "w.big").unwrap();
    assert_eq!(big["rel_l2"], "inf");
    assert_eq!(big["ok"], false);
    let info = env.json(&["info", "o.dmx", "--json"], 0);
    no_null_errors(&info, "info");
    assert_eq!(info["max_rel_l2"], "inf");
    // Without the original, the recorded infinite error still fails (it once said "all
    // checks passed").
    let (out, _) = env.run(&["verify", "o.dmx"], 1);
    assert!(out.contains("FAIL") && out.contains("w.big"), "{out}");
    assert!(!out.contains("all checks passed"), "{out}");
    let rep = env.json(&["verify", "o.dmx", "--json"], 1);
    assert_eq!(rep["ok"], false);
    // The tensor that stayed in range checks against a limit from its recorded error alone.
    let (out, _) = env.run(
        &["verify", "o.dmx", "--max-rel-error", "1e-12", "--json"],
        1,
    );
    assert!(
        out.contains("w.small") && out.contains("above the limit"),
        "{out}"
    );
    // A limit that is not a finite number >= 0 is a usage error, as for compress (a NaN or
    // negative one failed every tensor, an infinite one passed any error).
    for bad in [
        "--max-rel-error=-1",
        "--max-rel-error=NaN",
        "--max-rel-error=inf",
    ] {
        let (_, err) = env.run(&["verify", "m.safetensors", "o.dmx", bad], 2);
        assert!(err.contains("must be a finite number >= 0"), "{err}");
    }
    // The flag alone is a usage error.
    env.run(
        &[
            "compress",
            "m.safetensors",
            "x.dmx",
            "--allow-cast-overflow",
        ],
        2,
    );
}

#[test]
fn lossy_summaries_name_the_worst_error() {
    let env = Env::new();
    let v = gauss(64 * 64, 3, 0.02);
    env.write(
        "m.safetensors",
        &[Tensor::new("layer.w", "BF16", &[64, 64], bf16_bytes(&v))],
    );
    for mode in ["bfp", "auto"] {
        let mut args = vec!["compress", "m.safetensors", "l.dmx", "-f", "--mode", mode];
        if mode == "auto" {
            args.extend(["--max-rel-error", "0.05"]);
        }
        let (_, err) = env.run(&args, 0);
        assert!(
            err.contains("LOSSY")
                && err.contains("worst relative L2 error")
                && err.contains("\"layer.w\""),
            "{mode}: {err}"
        );
        args.push("--json");
        let r = env.json(&args, 0);
        assert_eq!(r["lossy"], true, "{mode}");
        assert!(r["lossy_summary"]["worst_rel_l2"].as_f64().unwrap() > 0.0);
        assert!(r["lossy_summary"]["max_abs_error"].as_f64().unwrap() > 0.0);
        assert_eq!(r["lossy_summary"]["worst_tensor"], "layer.w");
    }
    let r = env.json(&["compress", "m.safetensors", "x.dmx", "--json"], 0);
    assert_eq!(r["lossy"], false);
    assert!(r.get("lossy_summary").is_none());
}

/// A base and a slightly moved target, F32.
fn delta_pair(env: &Env, base: &str, target: &str) {
    let a = gauss(128 * 128, 5, 0.02);
    let noise = gauss(128 * 128, 6, 1e-4);
    let b: Vec<f32> = a.iter().zip(&noise).map(|(x, n)| x + n).collect();
    env.write(
        base,
        &[Tensor::new("h.0.w", "F32", &[128, 128], f32_bytes(&a))],
    );
    env.write(
        target,
        &[Tensor::new("h.0.w", "F32", &[128, 128], f32_bytes(&b))],
    );
}

#[test]
fn quantized_deltas_report_their_error_and_verify_with_the_base() {
    let env = Env::new();
    delta_pair(&env, "base.safetensors", "target.safetensors");
    let (_, err) = env.run(
        &[
            "delta-compress",
            "base.safetensors",
            "target.safetensors",
            "d.dmxd",
            "--precision",
            "int16",
        ],
        0,
    );
    assert!(
        err.contains("LOSSY") && err.contains("worst relative L2 error"),
        "{err}"
    );
    let (out, _) = env.run(&["delta-info", "d.dmxd"], 0);
    assert!(out.contains("LOSSY") && out.contains("\"h.0.w\""), "{out}");
    assert_eq!(
        env.run(&["delta-info", "d.dmxd", "-q"], 0),
        (String::new(), String::new())
    );
    let info = env.json(&["delta-info", "d.dmxd", "--json"], 0);
    assert!(info["lossy_summary"]["worst_rel_l2"].as_f64().unwrap() > 0.0);
    // Without the base: a clear message (usage, exit 2).
    let (_, err) = env.run(&["verify", "target.safetensors", "d.dmxd"], 2);
    assert!(err.contains("--base"), "{err}");
    // With it: the recorded errors are checked against the target.
    let (out, _) = env.run(
        &[
            "verify",
            "target.safetensors",
            "d.dmxd",
            "--base",
            "base.safetensors",
        ],
        0,
    );
    assert!(out.contains("all checks passed"), "{out}");
    env.run(&["verify", "d.dmxd", "--base", "base.safetensors"], 0);
    let rep = env.json(
        &[
            "verify",
            "target.safetensors",
            "d.dmxd",
            "--base",
            "base.safetensors",
            "--json",
        ],
        0,
    );
    assert_eq!(rep["files"][0]["tensor_errors"][0]["name"], "h.0.w");
    // Compared with another file, the error is far above the record: exit 1.
    env.run(
        &[
            "verify",
            "base.safetensors",
            "d.dmxd",
            "--base",
            "base.safetensors",
        ],
        1,
    );
    // --base on an archive that is not a delta is a usage error.
    env.run(&["compress", "target.safetensors", "t.dmx", "-q"], 0);
    env.run(&["verify", "t.dmx", "--base", "base.safetensors"], 2);
}

#[test]
fn mantissa_bits_beyond_every_dtype_are_refused_and_partly_warned() {
    let env = Env::new();
    let v = gauss(32 * 32, 7, 0.02);
    env.write(
        "bf.safetensors",
        &[Tensor::new("w", "BF16", &[32, 32], bf16_bytes(&v))],
    );
    let (_, err) = env.run(
        &[
            "compress",
            "bf.safetensors",
            "x.dmx",
            "--mode",
            "bfp",
            "--mantissa-bits",
            "12",
        ],
        2,
    );
    assert!(
        err.contains("--mantissa-bits 12") && err.contains("BF16"),
        "{err}"
    );
    assert!(!env.path("x.dmx").exists());
    env.write(
        "mixed.safetensors",
        &[
            Tensor::new("w", "BF16", &[32, 32], bf16_bytes(&v)),
            Tensor::new("v", "F32", &[32, 32], f32_bytes(&v)),
        ],
    );
    let (_, err) = env.run(
        &[
            "compress",
            "mixed.safetensors",
            "x.dmx",
            "--mode",
            "bfp",
            "--mantissa-bits",
            "12",
        ],
        0,
    );
    assert!(
        err.contains("warning") && err.contains("BF16") && err.contains("at most 8"),
        "{err}"
    );
}

#[test]
fn lossy_forms_are_never_larger_than_exact_ones() {
    let env = Env::new();
    let v = gauss(256 * 256, 9, 0.02);
    env.write(
        "bf.safetensors",
        &[Tensor::new("w", "BF16", &[256, 256], bf16_bytes(&v))],
    );
    env.run(&["compress", "bf.safetensors", "l.dmx", "-q"], 0);
    let r = env.json(
        &[
            "compress",
            "bf.safetensors",
            "i.dmx",
            "--mode",
            "int16",
            "--json",
        ],
        0,
    );
    assert!(
        env.size("i.dmx") <= env.size("l.dmx") + 64,
        "int16 {} vs lossless {}",
        env.size("i.dmx"),
        env.size("l.dmx")
    );
    // Stored exactly, so reported exact.
    assert_eq!(r["lossy"], false, "{r}");
    delta_pair(&env, "a.safetensors", "b.safetensors");
    env.run(
        &[
            "delta-compress",
            "a.safetensors",
            "b.safetensors",
            "l.dmxd",
            "-q",
        ],
        0,
    );
    env.run(
        &[
            "delta-compress",
            "a.safetensors",
            "b.safetensors",
            "q.dmxd",
            "--precision",
            "int32",
            "-q",
        ],
        0,
    );
    assert!(
        env.size("q.dmxd") <= env.size("l.dmxd") + 64,
        "int32 delta {} vs lossless delta {}",
        env.size("q.dmxd"),
        env.size("l.dmxd")
    );
}

#[test]
fn flags_that_do_nothing_are_warned() {
    let env = Env::new();
    let v = gauss(16 * 16, 11, 0.02);
    env.write(
        "bf.safetensors",
        &[Tensor::new("w", "BF16", &[16, 16], bf16_bytes(&v))],
    );
    let (_, err) = env.run(
        &[
            "compress",
            "bf.safetensors",
            "x.dmx",
            "--cast",
            "bf16",
            "-q",
        ],
        0,
    );
    assert!(err.contains("no F32 tensor"), "{err}");
    let r = env.json(
        &[
            "compress",
            "bf.safetensors",
            "y.dmx",
            "--mode",
            "bfp",
            "--keep-lossless",
            "*norm*",
            "--json",
        ],
        0,
    );
    let w = r["warnings"].to_string();
    assert!(
        w.contains("*norm*") && w.contains("matches no tensor"),
        "{w}"
    );
    let (_, err) = env.run(
        &[
            "compress",
            "bf.safetensors",
            "z.dmx",
            "--keep-lossless",
            "w",
            "-q",
        ],
        0,
    );
    assert!(err.contains("no effect without a lossy"), "{err}");
}

#[test]
fn deltas_detect_safetensors_by_content_not_name() {
    let env = Env::new();
    delta_pair(&env, "base.bin", "step-100.ckpt");
    env.run(
        &[
            "delta-compress",
            "base.bin",
            "step-100.ckpt",
            "d.dmxd",
            "-q",
        ],
        0,
    );
    env.run(&["delta-reconstruct", "base.bin", "d.dmxd", "out", "-q"], 0);
    assert_eq!(
        std::fs::read(env.path("out")).unwrap(),
        std::fs::read(env.path("step-100.ckpt")).unwrap()
    );
    // Not safetensors at all: still refused, naming the file.
    std::fs::write(env.path("junk.bin"), b"not a model").unwrap();
    let (_, err) = env.run(&["delta-compress", "base.bin", "junk.bin", "e.dmxd"], 2);
    assert!(err.contains("junk.bin"), "{err}");
    // A broken `.safetensors` file: the reason, once, and not what `compress` would do with
    // it ("stored as opaque bytes", which a refused delta never is).
    let mut broken = std::fs::read(env.path("step-100.ckpt")).unwrap();
    broken.truncate(broken.len() - 1);
    std::fs::write(env.path("broken.safetensors"), broken).unwrap();
    let (_, err) = env.run(
        &["delta-compress", "base.bin", "broken.safetensors", "e.dmxd"],
        2,
    );
    assert_eq!(err.matches("broken.safetensors").count(), 1, "{err}");
    assert!(!err.contains("stored as"), "{err}");
    assert!(!env.path("e.dmxd").exists());
}

/// `info`, `verify` and `diff` report the per-value errors the norms hide: the largest
/// relative error over non-zero values and the share of non-zero values restored as 0, per
/// tensor and per component, with each tensor's guaranteed bound.
#[test]
fn per_value_errors_are_reported_by_info_verify_and_diff() {
    let env = Env::new();
    let n = 64 * 64;
    // Second moments spanning 20 binades: int16 puts them on the floating grid.
    let sq: Vec<f32> = (0..n)
        .map(|i| {
            (2f64.powf(-30.0 + 20.0 * i as f64 / n as f64) * (1.0 + (i % 7) as f64 / 9.0)) as f32
        })
        .collect();
    env.write(
        "m.safetensors",
        &[
            Tensor::new("layer.w", "F32", &[64, 64], f32_bytes(&gauss(n, 5, 0.02))),
            Tensor::new("layer.w.exp_avg_sq", "F32", &[64, 64], f32_bytes(&sq)),
        ],
    );
    env.run(
        &[
            "compress",
            "m.safetensors",
            "q.dmx",
            "-f",
            "--mode",
            "int16",
        ],
        0,
    );
    let info = env.json(&["info", "q.dmx", "--json"], 0);
    let tensors = info["files"][0]["tensors"].as_array().unwrap();
    let t = tensors
        .iter()
        .find(|t| t["name"] == "layer.w.exp_avg_sq")
        .unwrap();
    let l = &t["lossy"];
    assert_eq!(l["grid"], "float", "{l}");
    assert_eq!(l["zeroed"], 0, "{l}");
    assert_eq!(l["nonzero"], n as u64, "{l}");
    let max_rel = l["max_rel_error"].as_f64().unwrap();
    let bound = l["rel_bound"].as_f64().unwrap();
    let m = l["mantissa_bits"].as_u64().unwrap() as i32;
    assert_eq!(bound, 2f64.powi(-(m + 1)));
    assert!(max_rel > 0.0 && max_rel <= bound, "{l}");
    let comps = info["components"].as_array().unwrap();
    let sq_comp = comps
        .iter()
        .find(|c| c["component"] == "exp_avg_sq")
        .unwrap();
    assert_eq!(sq_comp["lossy"]["zeroed"], 0, "{sq_comp}");
    assert_eq!(sq_comp["lossy"]["max_rel_error"].as_f64().unwrap(), max_rel);
    let (out, _) = env.run(&["info", "q.dmx"], 0);
    assert!(
        out.contains("float m") && out.contains("max rel") && out.contains("→0 %"),
        "{out}"
    );

    let rep = env.json(&["verify", "m.safetensors", "q.dmx", "--json"], 0);
    let errors = rep["files"][0]["tensor_errors"].as_array().unwrap();
    let e = errors
        .iter()
        .find(|e| e["name"] == "layer.w.exp_avg_sq")
        .unwrap();
    assert_eq!(e["zeroed"], 0, "{e}");
    assert_eq!(e["nonzero"], n as u64, "{e}");
    assert_eq!(e["max_rel_error"].as_f64().unwrap(), max_rel, "{e}");
    let vc = rep["components"].as_array().unwrap();
    assert!(
        vc.iter()
            .any(|c| c["component"] == "exp_avg_sq" && c["zeroed"] == 0),
        "{rep}"
    );
    assert!(vc.iter().any(|c| c["component"] == "weights"), "{rep}");

    env.run(&["decompress", "q.dmx", "back.safetensors"], 0);
    let diff = env.json(&["diff", "m.safetensors", "back.safetensors", "--json"], 0);
    let d = diff["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "layer.w.exp_avg_sq")
        .unwrap();
    assert_eq!(d["zeroed"], 0, "{d}");
    assert_eq!(d["nonzero_a"], n as u64, "{d}");
    assert_eq!(d["max_rel_change"].as_f64().unwrap(), max_rel, "{d}");
    assert!(
        diff["totals"]["max_rel_change"].as_f64().is_some(),
        "{diff}"
    );
    let (out, _) = env.run(&["diff", "m.safetensors", "back.safetensors"], 0);
    assert!(out.contains("max rel") && out.contains("→0"), "{out}");

    // BFP: weights with a few values far below their group's largest: those become 0, within
    // the group bound. (A tensor whose typical value is that small would keep every exponent:
    // see the variance test in the engine's lossy tests.)
    let w = gauss(n, 9, 0.02);
    let mixed: Vec<f32> = (0..n)
        .map(|i| if i % 16 == 0 { 1e-6 } else { w[i] })
        .collect();
    env.write(
        "b.safetensors",
        &[Tensor::new("layer.b", "F32", &[64, 64], f32_bytes(&mixed))],
    );
    env.run(
        &["compress", "b.safetensors", "b.dmx", "-f", "--mode", "bfp"],
        0,
    );
    let info = env.json(&["info", "b.dmx", "--json"], 0);
    let l = &info["files"][0]["tensors"][0]["lossy"];
    assert!(l["zeroed"].as_u64().unwrap() > 0, "{l}");
    assert!(l["zeroed_pct"].as_f64().unwrap() > 0.0, "{l}");
    let m = l["mantissa_bits"].as_u64().unwrap() as i32;
    assert_eq!(l["group_rel_bound"].as_f64().unwrap(), 2f64.powi(1 - m));
    assert!(
        l["max_abs_error"].as_f64().unwrap() <= 2f64.powi(1 - m),
        "{l}"
    );
    let rep = env.json(&["verify", "b.safetensors", "b.dmx", "--json"], 0);
    let e = &rep["files"][0]["tensor_errors"][0];
    assert_eq!(e["zeroed"], l["zeroed"], "{e}");
}
