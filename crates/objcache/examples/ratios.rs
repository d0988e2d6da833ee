//! Prints the benchmark ratio table (all numbers measured in this one run).
//!
//! `cargo run -p objcache --release --example ratios`
//!
//! Each figure is the median of 7 runs of `N` alloc+free pairs; "2T" runs the
//! same loop on two threads at once and reports aggregate throughput.

use std::alloc::Layout;
use std::time::Instant;

#[path = "../benches/common.rs"]
mod common;
use common::*;

const RUNS: usize = 7;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// ns per pair on one thread.
fn one<A: Alloc>(mut a: A, n: u64, batch: usize) -> f64 {
    let run = |a: &mut A| {
        let t = Instant::now();
        if batch == 1 {
            pairs(a, n)
        } else {
            batches(a, n, batch)
        }
        t.elapsed().as_nanos() as f64 / n as f64
    };
    run(&mut a); // warm up (grow slabs, fault pages in)
    median((0..RUNS).map(|_| run(&mut a)).collect())
}

/// Aggregate ns per pair (wall / total pairs) on two threads.
fn two<A: Alloc>(make: impl Fn(usize) -> A + Sync, n: u64, batch: usize) -> f64 {
    let run = || {
        let d = two_threads(|t| {
            let mut a = make(t);
            if batch == 1 {
                pairs(&mut a, n)
            } else {
                batches(&mut a, n, batch)
            }
        });
        d.as_nanos() as f64 / (2 * n) as f64
    };
    run();
    median((0..RUNS).map(|_| run()).collect())
}

fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(2_000_000);
    println!("objcache ratio table: median of {RUNS} runs x {n} alloc+free pairs per thread");
    let load = |when: &str| {
        if let Ok(l) = std::fs::read_to_string("/proc/loadavg") {
            println!("load average {when}: {}", l.trim());
        }
    };
    load("before");
    println!(
        "cpus: {:?}",
        std::thread::available_parallelism().map(|n| n.get())
    );
    println!();
    println!("| workload | objcache ns/pair | slabmalloc ns/pair | system ns/pair | vs slabmalloc | vs system |");
    println!("|---|---|---|---|---|---|");
    let mut scaling = Vec::new();
    let mut churn = Vec::new();
    for size in [32usize, 4096] {
        // malloc's natural alignment (16): the fastest system-allocator path.
        let layout = Layout::from_size_align(size, 16).unwrap_or_else(|e| panic!("{e}"));
        for batch in [1usize, 32] {
            let cache = objcache(size, 2);
            let o = one(
                ObjCache {
                    cache: &cache,
                    cpu: 0,
                },
                n,
                batch,
            );
            let s = one(Slabmalloc::new(size), n, batch);
            let y = one(System(layout), n, batch);
            println!(
                "| {size} B, 1 thread, batch {batch} | {o:.1} | {s:.1} | {y:.1} | {:.2}x | {:.2}x |",
                s / o,
                y / o
            );
            let o2 = two(
                |t| ObjCache {
                    cache: &cache,
                    cpu: t,
                },
                n,
                batch,
            );
            let s2 = two(|_| Slabmalloc::new(size), n, batch);
            let y2 = two(|_| System(layout), n, batch);
            println!(
                "| {size} B, 2 threads, batch {batch} | {o2:.1} | {s2:.1} | {y2:.1} | {:.2}x | {:.2}x |",
                s2 / o2,
                y2 / o2
            );
            let st = cache.stats();
            churn.push((
                size,
                batch,
                st.grown,
                st.reaped,
                st.alloc_misses,
                st.free_misses,
            ));
            scaling.push((size, batch, o / o2, s / s2, y / y2));
        }
    }
    println!();
    println!("| workload | objcache 2T/1T throughput | slabmalloc 2T/1T | system 2T/1T |");
    println!("|---|---|---|---|");
    for (size, batch, o, s, y) in scaling {
        println!("| {size} B, batch {batch} | {o:.2}x | {s:.2}x | {y:.2}x |");
    }
    println!();
    println!("| objcache cache after workload | slabs grown | slabs reaped | refills | flushes |");
    println!("|---|---|---|---|---|");
    for (size, batch, g, r, m, f) in churn {
        println!("| {size} B, batch {batch} | {g} | {r} | {m} | {f} |");
    }
    println!();
    let pattern: &'static [u8] = Box::leak(kernel_pattern().into_boxed_slice());
    let cache = pgd_cache(pattern);
    let pre = one(
        ObjCache {
            cache: &cache,
            cpu: 0,
        },
        n,
        1,
    );
    let every = one(ConstructEveryTime { pattern }, n, 1);
    println!("| pgd (4 KiB: 3 KiB zero + 1 KiB copy) | ns/pair | ratio |");
    println!("|---|---|---|");
    println!(
        "| preconstructed (objcache, ctor once) | {pre:.1} | {:.2}x |",
        every / pre
    );
    println!("| construct on every alloc (system + memset + memcpy) | {every:.1} | 1.00x |");
    load("after");
    let st = cache.stats();
    println!();
    println!(
        "pgd cache: ctor_calls={} alloc_hits={} alloc_misses={}",
        st.ctor_calls, st.alloc_hits, st.alloc_misses
    );
}
