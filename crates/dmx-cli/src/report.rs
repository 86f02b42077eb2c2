//! Human and JSON output of the commands.

use std::path::Path;

use dmx::{BenchResult, CompressReport, Stats, VerifyReport};

fn mb(bytes: u64) -> String {
    format!("{:.2} MB", bytes as f64 / 1e6)
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "-".to_string(), |x| format!("{x:.digits$}"))
}

/// A relative error or bound in short scientific form (`-` when unknown).
fn sci(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_string(), |x| format!("{x:.2e}"))
}

/// A percentage of zeroed values (`-` when unknown).
fn pct(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_string(), |x| format!("{x:.2}"))
}

/// The per-component block of lossy errors: worst relative L2, max abs, max relative
/// error and the share of non-zero values restored as 0.
pub fn lossy_components<'a>(rows: impl IntoIterator<Item = (&'a str, &'a dmx::LossyRollup)>) {
    println!(
        "{:<12} {:>7} {:>10} {:>10} {:>10} {:>8}",
        "component", "lossy", "rel L2", "max abs", "max rel", "→0 %"
    );
    for (name, l) in rows {
        println!(
            "{:<12} {:>7} {:>10} {:>10} {:>10} {:>8}",
            name,
            l.tensors,
            sci(Some(l.max_rel_l2)),
            sci(Some(l.max_abs_error)),
            sci(l.max_rel_error),
            pct(l.zeroed_pct)
        );
    }
}

/// Prints any serializable value as pretty JSON on stdout, exactly (not escaped: serde's
/// escapes keep it safe and exact).
pub fn print_json<T: serde::Serialize>(value: &T) {
    crate::out::json(value);
}

/// Writes a JSON report file atomically (temporary file renamed into place).
pub fn write_json<T: serde::Serialize>(
    path: &Path,
    value: &T,
    force: bool,
    sync: bool,
) -> Result<(), dmx::Error> {
    let text = serde_json::to_vec_pretty(value)
        .map_err(|e| dmx::Error::Internal(format!("cannot encode JSON: {e}")))?;
    dmx::write_file(path, &text, force, sync)
}

/// One-paragraph summary of a compression.
pub fn compress_summary(input: &Path, output: &Path, r: &CompressReport) {
    let ratio = r.input_bytes as f64 / r.output_bytes.max(1) as f64;
    eprintln!(
        "{} -> {}: {} -> {} ({ratio:.3}x) in {:.2} s ({:.0} MB/s)",
        input.display(),
        output.display(),
        mb(r.input_bytes),
        mb(r.output_bytes),
        r.seconds,
        r.input_bytes as f64 / 1e6 / r.seconds.max(1e-9),
    );
    for (dtype, d) in &r.stats.dtypes {
        eprintln!(
            "  {dtype:>8}: {:>6} tensors, {:>12} params, {} bits/weight (entropy bound {}), {}x",
            d.tensors,
            d.params,
            opt(d.bits_per_weight, 3),
            opt(d.entropy_bits_per_weight, 3),
            opt(d.ratio, 3),
        );
    }
    if let Some(l) = &r.lossy_summary {
        eprintln!("  {}", l.line());
        eprintln!(
            "  (`dmx info` lists the error of every tensor; `dmx verify ORIGINAL ARCHIVE` re-measures it)"
        );
    }
}

/// `dmx info` in human form.
pub fn info(path: &Path, s: &Stats, all_tensors: bool) {
    println!("archive:   {}", path.display());
    println!("format:    dmx {} ({})", s.format_version, s.root);
    println!(
        "lossless:  {}",
        if s.lossless {
            "yes (restores every file byte for byte)".to_string()
        } else {
            format!(
                "NO: this archive is LOSSY; {} tensor(s) restore as approximations (largest \
                 relative L2 error {})",
                s.lossy_tensors,
                opt(s.max_rel_l2, 6)
            )
        }
    );
    println!(
        "size:      {} -> {} ({}x)",
        mb(s.original_bytes),
        s.archive_bytes.map_or("-".into(), mb),
        opt(s.ratio, 3)
    );
    if let Some(index) = s.index_bytes {
        println!("index:     {index} bytes (included in the size above)");
    }
    println!("files:     {}", s.files.len());
    println!("tensors:   {} ({} params)", s.tensors, s.params);
    println!();
    println!(
        "{:<10} {:>8} {:>14} {:>12} {:>12} {:>9} {:>9} {:>7}",
        "dtype", "tensors", "params", "original", "stored", "bits/w", "entropy", "ratio"
    );
    for (dtype, d) in &s.dtypes {
        println!(
            "{:<10} {:>8} {:>14} {:>12} {:>12} {:>9} {:>9} {:>7}",
            dtype,
            d.tensors,
            d.params,
            mb(d.original_bytes),
            mb(d.stored_bytes),
            opt(d.bits_per_weight, 3),
            opt(d.entropy_bits_per_weight, 3),
            opt(d.ratio, 3)
        );
    }
    let checkpoint = s
        .components
        .iter()
        .any(|c| c.component.as_str() != "weights")
        || s.files.iter().any(|f| f.kind.starts_with("torch"));
    if checkpoint {
        println!();
        println!(
            "{:<12} {:>8} {:>14} {:>12} {:>12} {:>9}",
            "component", "tensors", "params", "original", "stored", "bits/p"
        );
        for c in &s.components {
            println!(
                "{:<12} {:>8} {:>14} {:>12} {:>12} {:>9}",
                c.component.as_str(),
                c.tensors,
                c.params,
                mb(c.original_bytes),
                mb(c.stored_bytes),
                opt(c.bits_per_param, 3)
            );
        }
    }
    if !s.lossless {
        println!();
        lossy_components(
            s.components
                .iter()
                .filter_map(|c| Some((c.component.as_str(), c.lossy.as_ref()?))),
        );
    }
    for f in &s.files {
        println!();
        println!(
            "{} ({}, {} -> {}, sha256 {})",
            f.path,
            f.kind,
            mb(f.original_bytes),
            mb(f.stored_bytes),
            if f.sha256.is_empty() {
                "in a pack"
            } else {
                &f.sha256
            }
        );
        if f.tensors.is_empty() {
            continue;
        }
        if !all_tensors && s.tensors > 64 {
            println!("  {} tensors (use --tensors to list them)", f.tensors.len());
            continue;
        }
        println!(
            "  {:<48} {:>6} {:>18} {:>21} {:>8} {:>8}{}",
            "tensor",
            "dtype",
            "shape",
            "codec",
            "bits/w",
            "entropy",
            if s.lossless {
                String::new()
            } else {
                format!(
                    "  {:<18} {:>9} {:>10} {:>8} {:>10} {:>7} {:>12}",
                    "lossy mode", "rel L2", "max abs", "SNR dB", "max rel", "→0 %", "bound"
                )
            }
        );
        for t in &f.tensors {
            let shape = format!("{:?}", t.shape);
            let lossy = match (&t.lossy, s.lossless) {
                (_, true) => String::new(),
                (None, false) => format!("  {:<18}", "lossless"),
                (Some(l), false) => {
                    let mode = match (l.mantissa_bits, l.group_size, l.grid) {
                        (Some(m), Some(g), _) => format!("bfp M{m} G{g}"),
                        (Some(m), None, Some("float")) => format!("{} float m{m}", l.mode),
                        _ => l.mode.to_string(),
                    };
                    let bound = match (l.abs_bound, l.rel_bound, l.group_rel_bound) {
                        (Some(a), _, _) => format!("abs {a:.2e}"),
                        (_, Some(r), _) => format!("rel {r:.2e}"),
                        (_, _, Some(g)) => format!("grp {g:.2e}"),
                        _ => "-".to_string(),
                    };
                    format!(
                        "  {mode:<18} {:>9.2e} {:>10.3e} {:>8} {:>10} {:>7} {bound:>12}",
                        l.rel_l2,
                        l.max_abs_error,
                        opt(Some(l.snr_db), 1),
                        sci(l.max_rel_error),
                        pct(l.zeroed_pct)
                    )
                }
            };
            let name = match &t.view_of {
                Some(storage) if *storage != t.name => format!("{} (view of {storage})", t.name),
                _ => t.name.clone(),
            };
            println!(
                "  {:<48} {:>6} {:>18} {:>21} {:>8} {:>8}{lossy}",
                name,
                t.dtype,
                shape,
                t.codec,
                opt(t.bits_per_weight, 3),
                opt(t.entropy_bits_per_weight, 3)
            );
        }
    }
}

/// `dmx verify` in human form.
pub fn verify(r: &VerifyReport) {
    for f in &r.files {
        let status = if f.ok { "OK  " } else { "FAIL" };
        let exact = match f.bit_exact {
            Some(true) => ", bit-exact with the original",
            Some(false) => ", differs from the original",
            None => "",
        };
        println!("{status} {} ({} tensors{exact})", f.path, f.tensors);
        for p in &f.problems {
            println!("     {p}");
        }
    }
    if !r.components.is_empty() {
        lossy_components(
            r.components
                .iter()
                .map(|c| (c.component.as_str(), &c.errors)),
        );
    }
    println!(
        "{}",
        if r.ok {
            "verify: all checks passed"
        } else {
            "verify: FAILED"
        }
    );
}

/// One `dmx bench` result: a line per dtype.
pub fn bench_row(r: &BenchResult, header: bool) {
    if header {
        println!(
            "{:<44} {:>7} {:>6} {:>11} {:>8} {:>8} {:>10} {:>10} {:>5}",
            "file",
            "threads",
            "dtype",
            "params",
            "bits/w",
            "entropy",
            "comp MB/s",
            "dec MB/s",
            "ok"
        );
    }
    let name = Path::new(&r.file)
        .file_name()
        .map_or(r.file.clone(), |n| n.to_string_lossy().into_owned());
    for (dtype, d) in &r.dtypes {
        println!(
            "{:<44} {:>7} {:>6} {:>11} {:>8.3} {:>8.3} {:>10.0} {:>10.0} {:>5}",
            name,
            r.threads,
            dtype,
            d.params,
            d.bits_per_weight,
            d.entropy_bits_per_weight,
            r.compress_mb_s,
            r.decompress_mb_s,
            if r.round_trip_ok { "yes" } else { "NO" }
        );
    }
}
