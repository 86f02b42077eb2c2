//! Human output of the delta commands.

use std::path::Path;

use dmx::{DeltaInfo, DeltaReport};

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "-".to_string(), |x| format!("{x:.digits$}"))
}

/// Summary of `delta-compress`.
pub fn compress_summary(target: &Path, output: &Path, r: &DeltaReport) {
    eprintln!(
        "{} -> {}: {:.2} MB -> {:.2} MB ({:.2}% of the target, {} bits/param, {:?}) in {:.2} s",
        target.display(),
        output.display(),
        r.target_bytes as f64 / 1e6,
        r.output_bytes as f64 / 1e6,
        100.0 * r.output_bytes as f64 / r.target_bytes.max(1) as f64,
        opt(r.bits_per_param, 3),
        r.precision,
        r.seconds
    );
    eprintln!(
        "  {} tensors coded against the base; {} added, {} reshaped or retyped (stored whole), \
         {} removed (recorded)",
        r.delta_tensors,
        r.added.len(),
        r.reshaped.len(),
        r.removed.len()
    );
    if !r.files.is_empty() {
        let deltas = r
            .files
            .iter()
            .filter(|f| f.kind.ends_with("-delta"))
            .count();
        eprintln!(
            "  {} files: {deltas} stored as deltas from the base folder's, {} whole; {} files \
             of the base folder not in the target",
            r.files.len(),
            r.files.len() - deltas,
            r.removed_files.len()
        );
    }
    if let Some(l) = &r.lossy_summary {
        eprintln!("  {}", l.line());
    }
}

/// `delta-info` in human form.
pub fn info(i: &DeltaInfo) {
    println!("delta:     {}", i.delta);
    let sha = |s: &str| match s {
        "" => String::new(),
        s => format!(", sha256 {s}"),
    };
    println!(
        "target:    {} ({} bytes{})",
        i.target,
        i.target_bytes,
        sha(&i.target_sha256)
    );
    println!("base:      {} bytes{}", i.base_bytes, sha(&i.base_sha256));
    println!(
        "lossless:  {}",
        if i.lossless {
            "yes (reconstructs the target byte for byte)"
        } else {
            "NO: quantized delta; the target restores on its grid"
        }
    );
    if let Some(l) = &i.lossy_summary {
        println!("           {}", l.line());
    }
    println!(
        "size:      {} bytes ({:.2}% of the target, ratio {})",
        i.delta_bytes,
        100.0 * i.delta_bytes as f64 / i.target_bytes.max(1) as f64,
        opt(i.ratio, 3)
    );
    if !i.removed.is_empty() {
        println!("removed:   {}", i.removed.join(", "));
    }
    for f in &i.files {
        println!(
            "file:      {} ({}, {} bytes{})",
            f.path,
            f.kind,
            f.size,
            f.base_sha256
                .as_ref()
                .map_or(String::new(), |b| format!(", base sha256 {b}"))
        );
    }
    let header = |title: &str| {
        println!();
        println!(
            "{title:<14} {:>8} {:>12} {:>14} {:>9} {:>11}",
            "tensors", "params", "stored bytes", "bits/p", "unchanged"
        );
    };
    let row = |name: &str, g: &dmx::delta::DeltaGroup| {
        println!(
            "{name:<14} {:>8} {:>12} {:>14} {:>9} {:>11}",
            g.tensors,
            g.params,
            g.stored_bytes,
            opt(g.bits_per_param, 3),
            g.unchanged_fraction
                .map_or("-".to_string(), |f| format!("{:.2}%", 100.0 * f))
        );
    };
    header("component");
    for (k, g) in &i.components {
        row(k, g);
    }
    header("role");
    for (k, g) in &i.roles {
        row(k, g);
    }
    header("storage");
    for (k, g) in &i.storage {
        row(k, g);
    }
    row("total", &i.total);
    if !i.lossless {
        println!();
        crate::report::lossy_components(
            i.components
                .iter()
                .filter_map(|(k, g)| Some((k.as_str(), g.lossy.as_ref()?))),
        );
        if !i.lossy_tensors.is_empty() {
            println!();
            println!(
                "{:<48} {:<18} {:>9} {:>10} {:>10} {:>7}",
                "lossy tensor", "mode", "rel L2", "max abs", "max rel", "→0 %"
            );
            for t in &i.lossy_tensors {
                let l = &t.lossy;
                let mode = match (l.mantissa_bits, l.grid) {
                    (Some(m), Some("float")) => format!("{} float m{m}", l.mode),
                    _ => l.mode.to_string(),
                };
                println!(
                    "{:<48} {mode:<18} {:>9.2e} {:>10.3e} {:>10} {:>7}",
                    t.name,
                    l.rel_l2,
                    l.max_abs_error,
                    l.max_rel_error
                        .map_or("-".to_string(), |x| format!("{x:.2e}")),
                    l.zeroed_pct.map_or("-".to_string(), |x| format!("{x:.2}")),
                );
            }
        }
    }
}
