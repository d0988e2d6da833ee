//! Profiling loop: `pgd_alloc` + `pgd_free` on CPU 0, `n` times, for
//! `perf record` or `valgrind --tool=callgrind`.
//!
//! `cargo run --release -p pgdcache-bench --example pgdpair -- [mode] [scheme] [n]`
//! (defaults: `pae slab-pgd-list 2000000`).
use pgdbench::micro::AllocFree;

fn main() {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_else(|| "pae".into());
    let scheme = args.next().unwrap_or_else(|| "slab-pgd-list".into());
    let n: u64 = args
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2_000_000);
    let (Ok(mode), Ok(scheme)) = (mode.parse(), scheme.parse()) else {
        eprintln!("usage: pgdpair [2level|pae|4level|5level] [scheme] [n]");
        std::process::exit(2);
    };
    let af = match AllocFree::new(mode, scheme) {
        Ok(af) => af,
        Err(e) => {
            eprintln!("pgdpair: {e}");
            std::process::exit(1);
        }
    };
    let t = std::time::Instant::now();
    for _ in 0..n {
        if let Err(e) = af.pair() {
            eprintln!("pgdpair: {e}");
            std::process::exit(1);
        }
    }
    println!(
        "{mode} {scheme}: {:.1} ns/pair",
        t.elapsed().as_nanos() as f64 / n as f64
    );
}
