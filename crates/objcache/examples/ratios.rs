//! Prints the benchmark ratio table (all numbers measured in this one run).
//!
//! `cargo run -p objcache --release --example ratios`
//!
//! Every workload runs `RUNS` (11) rounds, each round running every contender
//! once, back to back, `N` alloc+free pairs per thread; "2 threads" runs the
//! same loop on two threads at once and reports wall time / total pairs
//! (aggregate throughput).  Times are the best (and, in parentheses, the
//! median) of the rounds.  Ratios are *paired*: the ratio of two contenders
//! is computed per round and the median (and lower quartile) of those
//! per-round ratios is printed, so load that drifts over the run (this is a
//! shared 2-vCPU VM) hits both sides of each ratio alike.  One-thread figures
//! are measured on a freshly spawned thread exactly like the two-thread ones
//! (not on the main thread), so 2T/1T compares like with like.  The pgd rows
//! report the best of the rounds.

use std::alloc::Layout;

#[path = "../benches/common.rs"]
mod common;
use common::*;

const RUNS: usize = 11;

/// One measurement: aggregate ns per pair (wall / total pairs) of `k`
/// threads (k = 1 or 2), each running `n` pairs on its own allocator
/// handle `make(thread_index)`.
fn on<A: Alloc>(k: usize, make: &(impl Fn(usize) -> A + Sync), n: u64, batch: usize) -> f64 {
    let d = threads(k, |t| {
        let mut a = make(t);
        if batch == 1 {
            pairs(&mut a, n)
        } else {
            batches(&mut a, n, batch)
        }
    });
    d.as_nanos() as f64 / (k as u64 * n) as f64
}

/// Samples of one measurement, in round order (round `i` of every
/// measurement ran back to back, so pairing by round cancels slow drifts in
/// background load).
#[derive(Clone)]
struct Samples(Vec<f64>);

impl Samples {
    fn sorted(&self) -> Vec<f64> {
        let mut v = self.0.clone();
        v.sort_by(|a, b| a.total_cmp(b));
        v
    }
    /// Best (minimum) and median ns/pair.
    fn best_median(&self) -> (f64, f64) {
        let v = self.sorted();
        (v[0], v[v.len() / 2])
    }
    /// Paired ratios `self_i / other_i` per round: (median, lower quartile).
    fn ratio_to(&self, other: &Samples) -> (f64, f64) {
        let mut r: Vec<f64> = self.0.iter().zip(&other.0).map(|(a, b)| a / b).collect();
        r.sort_by(|a, b| a.total_cmp(b));
        (r[r.len() / 2], r[r.len() / 4])
    }
}

/// Runs the measurements round-robin `RUNS` times (so background load hits
/// all contenders alike) after one warm-up round; returns each one's samples.
fn interleaved(mut ms: Vec<Box<dyn FnMut() -> f64 + '_>>) -> Vec<Samples> {
    for m in ms.iter_mut() {
        m();
    }
    let mut samples = vec![Vec::new(); ms.len()];
    for _ in 0..RUNS {
        for (m, s) in ms.iter_mut().zip(samples.iter_mut()) {
            s.push(m());
        }
    }
    samples.into_iter().map(Samples).collect()
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
    let mut times = Vec::new();
    let mut churn = Vec::new();
    // The last row repeats 4 KiB batch 32 with the per-CPU arrays tuned
    // (`tune(64, 32)`, a /proc/slabinfo write) so that the 32-object working
    // set fits: with Linux's default limit of 24 it overflows every batch.
    for (size, batch, tuned) in [
        (32usize, 1usize, None),
        (32, 32, None),
        (4096, 1, None),
        (4096, 32, None),
        (4096, 32, Some((64, 32))),
    ] {
        // malloc's natural alignment (16): the fastest system-allocator path.
        let natural = Layout::from_size_align(size, 16).unwrap_or_else(|e| panic!("{e}"));
        {
            let cache = objcache(size, 2);
            let pin_cache = objcache(size, 2);
            if let Some((limit, bc)) = tuned {
                for c in [&cache, &pin_cache] {
                    c.tune(limit, bc).unwrap_or_else(|e| panic!("{e}"));
                }
            }
            let label = |threads: usize| {
                format!(
                    "{size} B, {threads} thread{}, batch {batch}{}",
                    if threads == 1 { "" } else { "s" },
                    match tuned {
                        Some((l, b)) => format!(", tune({l}, {b})"),
                        None => String::new(),
                    }
                )
            };
            // The alignment the object cache guarantees for these objects
            // (HWCACHE_ALIGN: 32 for 32 B, 64 for 4 KiB).
            let aligned =
                Layout::from_size_align(size, cache.align()).unwrap_or_else(|e| panic!("{e}"));
            let mk_oc = |t| ObjCache {
                cache: &cache,
                cpu: t,
            };
            let mk_pin = |t| Pinned::new(&pin_cache, t);
            let mk_sm = |_| Slabmalloc::new(size);
            let mk_sy = |_| System(natural);
            let mk_sya = |_| System(aligned);
            let r = interleaved(vec![
                Box::new(|| on(1, &mk_oc, n, batch)),
                Box::new(|| on(1, &mk_pin, n, batch)),
                Box::new(|| on(1, &mk_sm, n, batch)),
                Box::new(|| on(1, &mk_sy, n, batch)),
                Box::new(|| on(1, &mk_sya, n, batch)),
                Box::new(|| on(2, &mk_oc, n, batch)),
                Box::new(|| on(2, &mk_pin, n, batch)),
                Box::new(|| on(2, &mk_sm, n, batch)),
                Box::new(|| on(2, &mk_sy, n, batch)),
                Box::new(|| on(2, &mk_sya, n, batch)),
            ]);
            let st = cache.stats();
            churn.push((
                label(0).replace(", 0 threads", ""),
                st.grown,
                st.reaped,
                st.alloc_misses,
                st.free_misses,
                (st.limit, st.batchcount, st.resized),
            ));
            times.push((
                [label(1), label(2), label(0).replace(", 0 threads", "")],
                cache.align(),
                r,
            ));
        }
    }
    let f = |x: &Samples| {
        let (b, m) = x.best_median();
        format!("{b:.1} ({m:.1})")
    };
    // Paired per-round ratio a/b: median (lower quartile).
    let q = |a: &Samples, b: &Samples| {
        let (m, q1) = a.ratio_to(b);
        format!("{m:.2}x ({q1:.2}x)")
    };
    println!("ns per alloc+free pair, best (median); 2 threads: wall time / total pairs");
    println!();
    println!("| workload | objcache per-call (`alloc_on`/`free_on`) | objcache pinned (`lock_cpu`) | slabmalloc | system, natural 16 B align | system, cache's align |");
    println!("|---|---|---|---|---|---|");
    for (w, align, r) in &times {
        for (t, o) in [(0, 0), (1, 5)] {
            println!(
                "| {} | {} | {} | {} | {} | {} (align {align}) |",
                w[t],
                f(&r[o]),
                f(&r[o + 1]),
                f(&r[o + 2]),
                f(&r[o + 3]),
                f(&r[o + 4])
            );
        }
    }
    println!();
    println!("Speed-up of objcache over each baseline (baseline ns / objcache ns, paired by round): median (lower quartile) of the {RUNS} per-round ratios:");
    println!();
    println!("| workload | baseline | per-call objcache | pinned objcache |");
    println!("|---|---|---|---|");
    for (w, align, r) in &times {
        for (t, o) in [(0, 0), (1, 5)] {
            let w = &w[t];
            for (name, b) in [
                ("slabmalloc".to_string(), 2),
                ("system, natural 16 B align".to_string(), 3),
                (format!("system, cache's align ({align} B)"), 4),
            ] {
                println!(
                    "| {w} | {name} | {} | {} |",
                    q(&r[o + b], &r[o]),
                    q(&r[o + b], &r[o + 1])
                );
            }
        }
    }
    println!();
    println!("Two-thread scaling: aggregate throughput of 2 threads / 1 thread (1T ns / 2T ns, paired by round): median (lower quartile) of the {RUNS} per-round ratios:");
    println!();
    println!("| workload | objcache per-call | objcache pinned | slabmalloc | system, 16 B align | system, cache's align |");
    println!("|---|---|---|---|---|---|");
    for (w, _, r) in &times {
        println!(
            "| {} | {} | {} | {} | {} | {} |",
            w[2],
            q(&r[0], &r[5]),
            q(&r[1], &r[6]),
            q(&r[2], &r[7]),
            q(&r[3], &r[8]),
            q(&r[4], &r[9])
        );
    }
    println!();
    println!("| objcache cache after workload | slabs grown | slabs reaped | refills | flushes | limit / batchcount at the end (dynamic resizes) |");
    println!("|---|---|---|---|---|---|");
    for (w, g, r, m, f, (l, b, z)) in churn {
        println!("| {w} | {g} | {r} | {m} | {f} | {l} / {b} ({z}) |");
    }
    println!();
    let pattern: &'static [u8] = Box::leak(kernel_pattern().into_boxed_slice());
    let cache = pgd_cache(pattern);
    let mk_pre = |t| ObjCache {
        cache: &cache,
        cpu: t,
    };
    let mk_every = |_| ConstructEveryTime { pattern };
    let mk_pin = |t| Pinned::new(&cache, t);
    let r = interleaved(vec![
        Box::new(|| on(1, &mk_pre, n, 1)),
        Box::new(|| on(1, &mk_every, n, 1)),
        Box::new(|| on(1, &mk_pin, n, 1)),
    ]);
    let (pre, every, pinned) = (
        r[0].best_median().0,
        r[1].best_median().0,
        r[2].best_median().0,
    );
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
