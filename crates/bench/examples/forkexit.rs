//! Profiling loop: fork + exit of a small task (28 pages) on CPU 0, `n`
//! times, for `perf record` or `valgrind --tool=callgrind`.
//!
//! `cargo run --release -p pgdcache-bench --example forkexit -- [mode] [scheme] [n] [pages]`
//! (defaults: `2level slab-pgd-list 200000 28`).
use pgdbench::micro::ForkExit;

fn main() {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_else(|| "2level".into());
    let scheme = args.next().unwrap_or_else(|| "slab-pgd-list".into());
    let n: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(200_000);
    let pages: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(28);
    let (Ok(mode), Ok(scheme)) = (mode.parse(), scheme.parse()) else {
        eprintln!("usage: forkexit [2level|pae|4level|5level] [scheme] [n] [pages]");
        std::process::exit(2);
    };
    let _cpu = physmem::enter_cpu(0);
    let fe = match ForkExit::new(mode, scheme, pages, 64 << 20) {
        Ok(fe) => fe,
        Err(e) => {
            eprintln!("forkexit: {e}");
            std::process::exit(1);
        }
    };
    let t = std::time::Instant::now();
    for _ in 0..n {
        if let Err(e) = fe.pair() {
            eprintln!("forkexit: {e}");
            std::process::exit(1);
        }
    }
    println!(
        "{mode} {scheme} {pages} pages: {:.1} ns per fork + exit",
        t.elapsed().as_nanos() as f64 / n as f64
    );
}
