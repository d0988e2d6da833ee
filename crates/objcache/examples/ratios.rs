//! Prints the benchmark ratio table (all numbers measured in this one run).
//!
//! `cargo run -p objcache --release --example ratios`
//!
//! Each figure is the best (and, in parentheses, the median) of 9 interleaved
//! runs of `N` alloc+free pairs; "2 threads" runs the same loop on two
//! threads at once and reports wall time / total pairs (aggregate throughput).
//! The pgd rows report the best of 9.

use std::alloc::Layout;
use std::time::Instant;

#[path = "../benches/common.rs"]
mod common;
use common::*;

const RUNS: usize = 9;

/// One measurement: ns per pair on one thread.
fn once<A: Alloc>(a: &mut A, n: u64, batch: usize) -> f64 {
    let t = Instant::now();
    if batch == 1 {
        pairs(a, n)
    } else {
        batches(a, n, batch)
    }
    t.elapsed().as_nanos() as f64 / n as f64
}

/// One measurement: aggregate ns per pair (wall / total pairs), two threads.
fn twice<A: Alloc>(make: &(impl Fn(usize) -> A + Sync), n: u64, batch: usize) -> f64 {
    let d = two_threads(|t| {
        let mut a = make(t);
        if batch == 1 {
            pairs(&mut a, n)
        } else {
            batches(&mut a, n, batch)
        }
    });
    d.as_nanos() as f64 / (2 * n) as f64
}

/// Runs the measurements round-robin `RUNS` times (so background load hits
/// all contenders alike) after one warm-up round; returns the best (minimum)
/// and the median of each.
fn interleaved(mut ms: Vec<Box<dyn FnMut() -> f64 + '_>>) -> Vec<(f64, f64)> {
    for m in ms.iter_mut() {
        m();
    }
    let mut samples = vec![Vec::new(); ms.len()];
    for _ in 0..RUNS {
        for (m, s) in ms.iter_mut().zip(samples.iter_mut()) {
            s.push(m());
        }
    }
    samples
        .into_iter()
        .map(|mut v| {
            v.sort_by(|a, b| a.total_cmp(b));
            (v[0], v[v.len() / 2])
        })
        .collect()
}

fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(2_000_000);
    println!("objcache ratio table: best (median) of {RUNS} interleaved runs x {n} alloc+free pairs per thread");
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
    println!("| workload | objcache ns/pair | slabmalloc ns/pair | system ns/pair | vs slabmalloc | vs system | objcache pinned (`lock_cpu`) ns/pair | pinned vs slabmalloc | pinned vs system |");
    println!("|---|---|---|---|---|---|---|---|---|");
    let mut scaling = Vec::new();
    let mut churn = Vec::new();
    for size in [32usize, 4096] {
        // malloc's natural alignment (16): the fastest system-allocator path.
        let layout = Layout::from_size_align(size, 16).unwrap_or_else(|e| panic!("{e}"));
        for batch in [1usize, 32] {
            let cache = objcache(size, 2);
            let mut oc = ObjCache {
                cache: &cache,
                cpu: 0,
            };
            let mut sm = Slabmalloc::new(size);
            let mut sy = System(layout);
            let mk_oc = |t| ObjCache {
                cache: &cache,
                cpu: t,
            };
            let mk_sm = |_| Slabmalloc::new(size);
            let mk_sy = |_| System(layout);
            let pin_cache = objcache(size, 2);
            let mk_pin = |t| Pinned::new(&pin_cache, t);
            let r = interleaved(vec![
                Box::new(|| once(&mut oc, n, batch)),
                Box::new(|| once(&mut sm, n, batch)),
                Box::new(|| once(&mut sy, n, batch)),
                Box::new(|| twice(&mk_oc, n, batch)),
                Box::new(|| twice(&mk_sm, n, batch)),
                Box::new(|| twice(&mk_sy, n, batch)),
                Box::new(|| once(&mut Pinned::new(&pin_cache, 0), n, batch)),
                Box::new(|| twice(&mk_pin, n, batch)),
            ]);
            let [o, s, y, o2, s2, y2, p, p2] = [r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7]];
            println!(
                "| {size} B, 1 thread, batch {batch} | {:.1} ({:.1}) | {:.1} ({:.1}) | {:.1} ({:.1}) | {:.2}x ({:.2}x) | {:.2}x ({:.2}x) | {:.1} ({:.1}) | {:.2}x | {:.2}x |",
                o.0, o.1, s.0, s.1, y.0, y.1, s.0 / o.0, s.1 / o.1, y.0 / o.0, y.1 / o.1,
                p.0, p.1, s.0 / p.0, y.0 / p.0
            );
            println!(
                "| {size} B, 2 threads, batch {batch} | {:.1} ({:.1}) | {:.1} ({:.1}) | {:.1} ({:.1}) | {:.2}x ({:.2}x) | {:.2}x ({:.2}x) | {:.1} ({:.1}) | {:.2}x | {:.2}x |",
                o2.0, o2.1, s2.0, s2.1, y2.0, y2.1, s2.0 / o2.0, s2.1 / o2.1, y2.0 / o2.0, y2.1 / o2.1,
                p2.0, p2.1, s2.0 / p2.0, y2.0 / p2.0
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
            scaling.push((
                size,
                batch,
                (o.0 / o2.0, o.1 / o2.1),
                (s.0 / s2.0, s.1 / s2.1),
                (y.0 / y2.0, y.1 / y2.1),
                (p.0 / p2.0, p.1 / p2.1),
            ));
        }
    }
    println!();
    println!("| workload | objcache 2T/1T throughput | slabmalloc 2T/1T | system 2T/1T | objcache pinned 2T/1T |");
    println!("|---|---|---|---|---|");
    for (size, batch, o, s, y, p) in scaling {
        println!(
            "| {size} B, batch {batch} | {:.2}x ({:.2}x) | {:.2}x ({:.2}x) | {:.2}x ({:.2}x) | {:.2}x ({:.2}x) |",
            o.0, o.1, s.0, s.1, y.0, y.1, p.0, p.1
        );
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
    let mut pre_a = ObjCache {
        cache: &cache,
        cpu: 0,
    };
    let mut every_a = ConstructEveryTime { pattern };
    let r = interleaved(vec![
        Box::new(|| once(&mut pre_a, n, 1)),
        Box::new(|| once(&mut every_a, n, 1)),
        Box::new(|| once(&mut Pinned::new(&cache, 0), n, 1)),
    ]);
    let (pre, every, pinned) = (r[0].0, r[1].0, r[2].0);
    println!("| pgd (4 KiB: 3 KiB zero + 1 KiB copy) | ns/pair | ratio |");
    println!("|---|---|---|");
    println!(
        "| preconstructed (objcache, ctor once) | {pre:.1} | {:.2}x |",
        every / pre
    );
    println!(
        "| preconstructed, pinned CPU (`lock_cpu`) | {pinned:.1} | {:.2}x |",
        every / pinned
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
