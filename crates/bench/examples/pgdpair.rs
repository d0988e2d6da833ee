//! Profiling loop: `pgd_alloc` + `pgd_free` on CPU 0, `n` times, for
//! `perf record` or `valgrind --tool=callgrind`.
//!
//! `cargo run --release -p pgdcache-bench --example pgdpair -- [mode] [scheme] [n] [per-call]`
//! (defaults: `pae slab-pgd-list 2000000`). The pairs run through CPU 0's
//! token, as `pgdcache bench` measures them; `per-call` uses
//! `Kernel::pgd_alloc(0)`/`pgd_free(0)` (the slot lock on every call).
//! The scheme `floor` runs the object cache's work of a pair alone
//! (`pgdbench::floor::CacheFloor`, the bench's floor row).
use pgdbench::floor::CacheFloor;
use pgdbench::micro::{AllocFree, Subject};

fn main() {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_else(|| "pae".into());
    let scheme = args.next().unwrap_or_else(|| "slab-pgd-list".into());
    let n: u64 = args
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2_000_000);
    let per_call = args.next().as_deref() == Some("per-call");
    if scheme == "floor" {
        return floor(&mode, n);
    }
    let (Ok(mode), Ok(scheme)) = (mode.parse(), scheme.parse()) else {
        eprintln!("usage: pgdpair [2level|pae|4level|5level] [scheme] [n] [per-call]");
        std::process::exit(2);
    };
    let mut af = match AllocFree::new(mode, scheme) {
        Ok(af) => af,
        Err(e) => {
            eprintln!("pgdpair: {e}");
            std::process::exit(1);
        }
    };
    let t = std::time::Instant::now();
    if per_call {
        for _ in 0..n {
            if let Err(e) = af.pair() {
                eprintln!("pgdpair: {e}");
                std::process::exit(1);
            }
        }
    } else if let Err(e) = af.run(n) {
        // The bench's path: CPU 0's token (`Kernel::claim_cpu`).
        eprintln!("pgdpair: {e}");
        std::process::exit(1);
    }
    println!(
        "{mode} {scheme}: {:.1} ns/pair",
        t.elapsed().as_nanos() as f64 / n as f64
    );
}

/// The floor row's loop alone.
fn floor(mode: &str, n: u64) {
    let t = std::time::Instant::now();
    let run = mode
        .parse()
        .map_err(|e| format!("{e}"))
        .and_then(|m| CacheFloor::new(m).map_err(|e| e.to_string()))
        .and_then(|mut f| f.run(n).map_err(|e| e.to_string()));
    if let Err(e) = run {
        eprintln!("pgdpair: {e}");
        std::process::exit(1);
    }
    println!(
        "{mode} floor: {:.1} ns/pair",
        t.elapsed().as_nanos() as f64 / n as f64
    );
}
