//! Criterion benchmarks: objcache vs slabmalloc vs the system allocator, one
//! and two threads (objcache per call, pinned with `lock_cpu`, and through a
//! claimed CPU's `CpuToken`), and preconstructed pgds vs
//! construct-on-every-alloc.
//! After criterion's own report it prints the same-run ratio tables of
//! `examples/ratios.rs` (fewer, shorter rounds); run the example for the
//! figures in the README.

use std::alloc::Layout;
use std::time::Duration;

use criterion::{criterion_group, BenchmarkId, Criterion, Throughput};

mod common;
use common::*;

fn config() -> Criterion {
    Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2))
}

fn alloc_free(c: &mut Criterion) {
    for size in [32usize, 4096] {
        let mut g = c.benchmark_group(format!("alloc_free_{size}B"));
        g.throughput(Throughput::Elements(1));
        let cache = objcache(size, 2);
        g.bench_function(BenchmarkId::new("objcache", "1T"), |b| {
            let mut a = ObjCache {
                cache: &cache,
                cpu: 0,
            };
            b.iter_custom(|n| {
                let t = std::time::Instant::now();
                pairs(&mut a, n);
                t.elapsed()
            })
        });
        let pin_cache = objcache(size, 2);
        g.bench_function(BenchmarkId::new("objcache_pinned", "1T"), |b| {
            let mut a = Pinned::new(&pin_cache, 0);
            b.iter_custom(|n| {
                let t = std::time::Instant::now();
                pairs(&mut a, n);
                t.elapsed()
            })
        });
        let token_cache = objcache(size, 2);
        g.bench_function(BenchmarkId::new("objcache_token", "1T"), |b| {
            let mut a = Token::new(&token_cache, 0);
            b.iter_custom(|n| {
                let t = std::time::Instant::now();
                pairs(&mut a, n);
                t.elapsed()
            })
        });
        g.bench_function(BenchmarkId::new("slabmalloc", "1T"), |b| {
            let mut a = Slabmalloc::new(size);
            b.iter_custom(|n| {
                let t = std::time::Instant::now();
                pairs(&mut a, n);
                t.elapsed()
            })
        });
        g.bench_function(BenchmarkId::new("system_align16", "1T"), |b| {
            let mut a = System(Layout::from_size_align(size, 16).unwrap());
            b.iter_custom(|n| {
                let t = std::time::Instant::now();
                pairs(&mut a, n);
                t.elapsed()
            })
        });
        // The system allocator at the alignment the object cache gives.
        let aligned = Layout::from_size_align(size, cache.align()).unwrap();
        g.bench_function(BenchmarkId::new("system_cache_align", "1T"), |b| {
            let mut a = System(aligned);
            b.iter_custom(|n| {
                let t = std::time::Instant::now();
                pairs(&mut a, n);
                t.elapsed()
            })
        });
        // Two threads: one iteration = one pair on each thread.
        g.throughput(Throughput::Elements(2));
        g.bench_function(BenchmarkId::new("objcache", "2T"), |b| {
            b.iter_custom(|n| {
                two_threads(|t| {
                    pairs(
                        &mut ObjCache {
                            cache: &cache,
                            cpu: t,
                        },
                        n,
                    )
                })
            })
        });
        g.bench_function(BenchmarkId::new("objcache_pinned", "2T"), |b| {
            b.iter_custom(|n| two_threads(|t| pairs(&mut Pinned::new(&pin_cache, t), n)))
        });
        g.bench_function(BenchmarkId::new("objcache_token", "2T"), |b| {
            b.iter_custom(|n| two_threads(|t| pairs(&mut Token::new(&token_cache, t), n)))
        });
        g.bench_function(BenchmarkId::new("slabmalloc", "2T"), |b| {
            b.iter_custom(|n| two_threads(|_| pairs(&mut Slabmalloc::new(size), n)))
        });
        g.bench_function(BenchmarkId::new("system_align16", "2T"), |b| {
            b.iter_custom(|n| {
                two_threads(|_| pairs(&mut System(Layout::from_size_align(size, 16).unwrap()), n))
            })
        });
        g.bench_function(BenchmarkId::new("system_cache_align", "2T"), |b| {
            b.iter_custom(|n| two_threads(|_| pairs(&mut System(aligned), n)))
        });
        g.finish();
    }
}

fn preconstructed(c: &mut Criterion) {
    let pattern: &'static [u8] = Box::leak(kernel_pattern().into_boxed_slice());
    let mut g = c.benchmark_group("pgd_4KiB");
    g.throughput(Throughput::Elements(1));
    let cache = pgd_cache(pattern);
    g.bench_function("preconstructed_objcache", |b| {
        let mut a = ObjCache {
            cache: &cache,
            cpu: 0,
        };
        b.iter_custom(|n| {
            let t = std::time::Instant::now();
            pairs(&mut a, n);
            t.elapsed()
        })
    });
    g.bench_function("construct_every_alloc_system", |b| {
        let mut a = ConstructEveryTime { pattern };
        b.iter_custom(|n| {
            let t = std::time::Instant::now();
            pairs(&mut a, n);
            t.elapsed()
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = config();
    targets = alloc_free, preconstructed
}

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    // Criterion reports times; the targets are ratios, so measure the same
    // workloads once more in interleaved rounds and print them.
    println!("\n== same-run ratio tables (examples/ratios.rs: 7 rounds x 5e5 pairs) ==\n");
    print_ratio_tables(500_000, 7);
    println!("\n== issue #17 targets, 32 B pair (examples/pair32.rs: 11 rounds x 1e6 pairs) ==\n");
    print_pair32(11, 1_000_000);
}
