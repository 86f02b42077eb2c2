//! Prints what `dmx_pt::scan` finds in `.pt` files: format, storages by dtype, tensors by
//! component, warnings and the scan time. Usage: `cargo run -p dmx-pt --example pt_scan -- FILE...`
use std::collections::BTreeMap;
use std::time::Instant;

fn main() {
    let mut failed = false;
    for path in std::env::args().skip(1) {
        let file = match std::fs::read(&path) {
            Ok(f) => f,
            Err(e) => {
                eprintln!("{path}: {e}");
                failed = true;
                continue;
            }
        };
        let start = Instant::now();
        match dmx_pt::scan(&file) {
            Ok(layout) => {
                let took = start.elapsed();
                let mut by_dtype: BTreeMap<&str, (usize, u64)> = BTreeMap::new();
                for s in &layout.storages {
                    let e = by_dtype
                        .entry(s.dtype.map_or("opaque", |d| d.name()))
                        .or_default();
                    e.0 += 1;
                    e.1 += s.range.end - s.range.start;
                }
                let mut by_component: BTreeMap<String, usize> = BTreeMap::new();
                for t in &layout.tensors {
                    *by_component
                        .entry(format!("{:?}", dmx_pt::component(&t.name)))
                        .or_default() += 1;
                }
                println!(
                    "{path}: {:?}, {} storages {by_dtype:?}, {} tensors {by_component:?}, scanned in {:.1} ms",
                    layout.format,
                    layout.storages.len(),
                    layout.tensors.len(),
                    took.as_secs_f64() * 1e3
                );
                for t in layout.tensors.iter().take(3) {
                    println!("  {} {} {:?}", t.name, t.dtype, t.shape);
                }
                for w in &layout.warnings {
                    println!("  warning: {w}");
                }
            }
            Err(e) => {
                println!("{path}: {e}");
                failed = true;
            }
        }
    }
    std::process::exit(if failed { 1 } else { 0 });
}
