//! Criterion benchmarks of the pgd system against its same-run baselines:
//!
//! * `alloc_free/<mode>/<scheme>` — `pgd_alloc` + `pgd_free`, warm cache,
//!   and `alloc_free/<mode>/freelist`, a bare `Vec<PhysAddr>` pop + push of
//!   preconstructed pgds (the physical limit of a cached allocation);
//! * `fork_exit/<mode>/<small|large>/<scheme>` — fork + exit of a child of a
//!   28-page and a 4096-page (16 MiB) task;
//! * `cpa/<pgds>pgds_<live>live/<scheme>` — `change_page_attr` split +
//!   `global_flush_tlb` + revert + `global_flush_tlb` on 2-level with 10,
//!   1 000 and 10 000 constructed pgds, all cached or 10 % live.
//!
//! Criterion prints times; after it, a summary measures the same subjects
//! in interleaved rounds with `Instant` and prints the ratios (vs
//! `uncached`, vs the freelist, pgd-list vs ticket) — the figures of
//! docs/PERFORMANCE.md. The measurement code is `crates/bench/src/micro.rs`,
//! shared with `pgdcache bench` (included by path: it needs only this
//! crate's own dependencies).

use criterion::{BenchmarkId, Criterion};
use pgdcache::Scheme;
use std::time::Duration;
use x86paging::PagingMode;

#[allow(dead_code)]
#[path = "../../bench/src/micro.rs"]
mod micro;
use micro::{interleaved_rounds, AllocFree, CpaCycle, ForkExit, Freelist, Ratio, Subject, Timing};

const MODES: [PagingMode; 2] = [PagingMode::TwoLevel, PagingMode::Pae];
const SMALL: u64 = 28;
const LARGE: u64 = 4096;
const CPA_PGDS: [usize; 3] = [10, 1_000, 10_000];

fn schemes(mode: PagingMode) -> Vec<Scheme> {
    Scheme::ALL
        .into_iter()
        .filter(|&s| s.supports(mode).is_ok())
        .collect()
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .configure_from_args()
}

fn time<S: Subject>(s: &mut S, n: u64) -> Duration {
    let t = std::time::Instant::now();
    s.run(n).expect("bench subject");
    t.elapsed()
}

fn alloc_free(c: &mut Criterion) {
    for mode in MODES {
        let mut g = c.benchmark_group(format!("alloc_free/{}", mode.name()));
        for scheme in schemes(mode) {
            let mut a = AllocFree::new(mode, scheme).expect("boot");
            g.bench_function(BenchmarkId::from_parameter(scheme.name()), |b| {
                b.iter_custom(|n| time(&mut a, n))
            });
        }
        let mut f = Freelist::new(mode).expect("boot");
        g.bench_function(BenchmarkId::from_parameter("freelist"), |b| {
            b.iter_custom(|n| time(&mut f, n))
        });
        g.finish();
    }
}

fn fork_exit(c: &mut Criterion) {
    for mode in MODES {
        for (name, pages, ram) in [("small", SMALL, 64u64 << 20), ("large", LARGE, 256 << 20)] {
            let mut g = c.benchmark_group(format!("fork_exit/{}/{name}", mode.name()));
            for scheme in schemes(mode) {
                let mut f = ForkExit::new(mode, scheme, pages, ram).expect("boot");
                g.bench_function(BenchmarkId::from_parameter(scheme.name()), |b| {
                    b.iter_custom(|n| time(&mut f, n))
                });
            }
            g.finish();
        }
    }
}

fn cpa(c: &mut Criterion) {
    for n in CPA_PGDS {
        for live in [0, n.div_ceil(10)] {
            let mut g = c.benchmark_group(format!("cpa/{n}pgds_{live}live"));
            for scheme in [Scheme::SlabPgdList, Scheme::SlabTicket] {
                let mut k = CpaCycle::new(PagingMode::TwoLevel, scheme, n, live).expect("boot");
                g.bench_function(BenchmarkId::from_parameter(scheme.name()), |b| {
                    b.iter_custom(|n| time(&mut k, n))
                });
            }
            g.finish();
        }
    }
}

/// Ratios, measured in interleaved rounds in this same run: the median of
/// the per-round ratios with their inter-quartile range, `13.2x [12.1–14.0]`
/// (times: the median round).
fn summary() {
    println!("\n== ratios (7 interleaved rounds, paired by round, same run) ==");
    let med = |v: &[f64]| Timing::of(v.to_vec()).median_ns;
    for mode in MODES {
        let sc = schemes(mode);
        let mut subjects: Vec<AllocFree> = sc
            .iter()
            .map(|&s| AllocFree::new(mode, s).expect("boot"))
            .collect();
        let mut fl = Freelist::new(mode).expect("boot");
        let mut refs: Vec<&mut dyn Subject> =
            subjects.iter_mut().map(|a| a as &mut dyn Subject).collect();
        refs.push(&mut fl);
        let t = interleaved_rounds(&mut refs, 7, 20_000).expect("measure");
        let free = &t[t.len() - 1];
        for (i, s) in sc.iter().enumerate() {
            println!(
                "alloc_free {:<6} {:<17} {:>8.1} ns  {:.1} vs uncached  {:.1} the freelist ({:.1} ns)",
                mode.name(),
                s.name(),
                med(&t[i]),
                Ratio::paired(&t[0], &t[i]),
                Ratio::paired(&t[i], free),
                med(free)
            );
        }
        for (name, pages, ram, iters) in [
            ("small", SMALL, 64u64 << 20, 1_000),
            ("large", LARGE, 256 << 20, 8),
        ] {
            let mut subjects: Vec<ForkExit> = sc
                .iter()
                .map(|&s| ForkExit::new(mode, s, pages, ram).expect("boot"))
                .collect();
            let mut refs: Vec<&mut dyn Subject> =
                subjects.iter_mut().map(|a| a as &mut dyn Subject).collect();
            let t = interleaved_rounds(&mut refs, 7, iters).expect("measure");
            for (i, s) in sc.iter().enumerate() {
                println!(
                    "fork_exit  {:<6} {name} {:<17} {:>10.2} µs  {:.3} vs uncached",
                    mode.name(),
                    s.name(),
                    med(&t[i]) / 1e3,
                    Ratio::paired(&t[0], &t[i])
                );
            }
        }
    }
    for n in CPA_PGDS {
        for live in [0, n.div_ceil(10)] {
            let mut a =
                CpaCycle::new(PagingMode::TwoLevel, Scheme::SlabPgdList, n, live).expect("boot");
            let mut b =
                CpaCycle::new(PagingMode::TwoLevel, Scheme::SlabTicket, n, live).expect("boot");
            let iters = (200_000 / n as u64).clamp(4, 2_000);
            let t = interleaved_rounds(&mut [&mut a, &mut b], 7, iters).expect("measure");
            println!(
                "cpa {n:>6} pgds {live:>5} live: slab-pgd-list {:>9.2} µs  slab-ticket {:>9.2} µs  ticket {:.1} cheaper",
                med(&t[0]) / 1e3,
                med(&t[1]) / 1e3,
                Ratio::paired(&t[0], &t[1])
            );
        }
    }
}

fn main() {
    let mut c = config();
    alloc_free(&mut c);
    fork_exit(&mut c);
    cpa(&mut c);
    c.final_summary();
    summary();
}
