//! In-kernel benchmarks (`bench=1`): the seed's costs timed with the TSC
//! on the machine's own CPU, MMU and caches.
//!
//! One pgd system per scheme of the mode is booted side by side in the
//! same RAM (each with its own `swapper_pg_dir` and caches), so every
//! comparison is paired: each round measures every scheme in turn, and a
//! ratio is taken per round against `uncached` (2.5.69's fresh page), then
//! summarised as median and inter-quartile range, as `pgdcache bench` does.
//!
//! Every pgd-system operation runs as CPU 0 through its token
//! (`Kernel::claim_cpu(0)`: the per-CPU fast path, no lock and no atomic
//! read-modify-write on a cache hit), as the kernel's CPUs run their tasks
//! and as the host's `pgdcache bench` times its pair; the pairs of a
//! system whose pgds have a typed shape through the CPU claimed with it
//! (`Kernel::claim_whole_cpu(0)` for whole pages of `pgd_cache`,
//! `claim_pae_cpu(0)` for PAE with `pmd_cache`), the same path with its
//! shape in the type, as `pgdcache bench` times them too. The claim is taken outside
//! the timed region. The `bench` event says so (`pgd_path`).
//!
//! Freed-frame poisoning is off while the benchmarks run (the kernel's
//! production configuration, `CONFIG_PAGE_POISONING=n`, as `pgdcache bench`
//! times it) and back to what it was afterwards, for the checked run that
//! follows in the same RAM: frames freed meanwhile are simply not checked
//! (`PhysMemory::set_poisoning`). The events say so (`poisoning`). The
//! benchmarked pgd systems are built as `pgdcache bench` builds its own
//! ([`production`]): no object-cache hit counters (`STATS`) and no
//! `pgd_allocs`/`pgd_frees` counters.
//!
//! * `pair_warm`: `pgd_alloc` + `pgd_free` in a hot loop (PAE: with the
//!   three pmds), the loop timed as a whole.
//! * `pair_cold`: the same pair after touching 16 MiB, so the pgd, its
//!   `struct page` and the caches' metadata come from memory; each pair
//!   timed alone, the cost of reading the TSC twice taken off (the event's
//!   `tsc_overhead_ns`).
//! * `fork_small` / `fork_large`: `fork_mm` + `exit_mm` of a 28-page and a
//!   16 MiB parent.
//! * `cpa_10k`: a split + revert cycle of one direct-map page with 10 000
//!   pgds in the cache (2-level: `pgd_list` rewrites them all; the ticket
//!   scheme bumps a generation and rewrites the 10 % that are live),
//!   including both `global_flush_tlb`s.

use crate::arch::rdtsc;
use crate::report;
use crate::time::{loop_ns, to_ns, tsc_overhead};
use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use pgdcache::mm::TaskSize;
use pgdcache::{CpuPgds, Kernel, KernelConfig, KernelError, Pgd, PgdCpu, Scheme};
use physmem::{Lowmem, PhysAddr, PhysMem, PhysMemory, VirtAddr};
use x86paging::{EntryFlags, PagingMode};

/// Rounds per measurement (each round measures every scheme once).
const ROUNDS: usize = 15;

/// The TSC time one series may take by default, setup included (the cold
/// series' sweeps), ms: 40 s (`bench_budget_ms=` on the command line sets
/// another). Where an accelerator makes an operation thousands of times
/// dearer than hardware does (this project's CI host: a KVM that traps
/// `rdtsc`, every page-table write and much of a 16 MiB sweep), a series
/// runs fewer operations per round — never fewer rounds — so that every
/// series is measured inside the host's timeout; the event says how many
/// each ran (`ops_per_round`). On hardware and under TCG every series fits
/// with its full count.
pub const SERIES_BUDGET_MS: u64 = 40_000;

/// Operations per round that fit `budget_ns`, given what one round of one
/// operation per scheme took (`probe_ns`): the warm-up round and
/// [`ROUNDS`] rounds of `n` each, at most `nominal`, at least 1.
fn ops_per_round(nominal: u32, probe_ns: u64, budget_ns: u64) -> u32 {
    let rounds = ROUNDS as u64 + 1;
    let fit = budget_ns / rounds.saturating_mul(probe_ns.max(1));
    fit.clamp(1, u64::from(nominal.max(1))) as u32
}

/// Median and inter-quartile range of a sample.
fn stats(mut v: Vec<f64>) -> (f64, f64, f64) {
    if v.is_empty() {
        return (0.0, 0.0, 0.0);
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(core::cmp::Ordering::Equal));
    let q = |f: f64| v[((v.len() - 1) as f64 * f) as usize];
    (q(0.5), q(0.25), q(0.75))
}

struct Series {
    name: &'static str,
    /// Operations each scheme ran per round ([`ops_per_round`]).
    n: u32,
    /// ns per operation, per round, per scheme (same order as `schemes`).
    ns: Vec<Vec<f64>>,
}

fn fail(what: &str, e: impl core::fmt::Display) -> ! {
    report::fail("bench", &format!("{what}: {e}"))
}

/// CPU 0's token on `k` (the BSP is CPU 0 of every benchmarked system).
fn cpu0(k: &Kernel<Lowmem>) -> PgdCpu<'_, Lowmem> {
    k.claim_cpu(0).unwrap_or_else(|e| fail("claim_cpu(0)", e))
}

/// The production configuration of a benchmarked pgd system, as
/// `pgdcache bench` boots its kernels: no object-cache hit counters
/// (`STATS`, `CONFIG_DEBUG_SLAB=n`).
fn production(mode: PagingMode, scheme: Scheme, cpus: usize) -> KernelConfig {
    let mut cfg = KernelConfig::new(mode, scheme);
    cfg.cpus = cpus;
    cfg.slab_stats = false;
    cfg
}

/// Runs the benchmarks for `mode` in `pm`, each series within `budget_ms`
/// of TSC time, and prints one `bench` event.
pub fn run(pm: &Arc<PhysMemory<Lowmem>>, mode: PagingMode, cpus: usize, budget_ms: u64) {
    let poisoning = pm.poisoning();
    pm.set_poisoning(false);
    measure_all(pm, mode, cpus, budget_ms.saturating_mul(1_000_000));
    pm.set_poisoning(poisoning);
}

/// [`run`]'s measurements, with poisoning off, each series within
/// `budget_ns`.
fn measure_all(pm: &Arc<PhysMemory<Lowmem>>, mode: PagingMode, cpus: usize, budget_ns: u64) {
    let schemes: Vec<Scheme> = Scheme::ALL
        .into_iter()
        .filter(|s| s.supports(mode).is_ok() && *s != Scheme::SlabUnsynced)
        .collect();
    let kernels: Vec<Kernel<Lowmem>> = schemes
        .iter()
        .map(|&s| {
            Kernel::new(pm.clone(), &production(mode, s, cpus))
                .unwrap_or_else(|e| fail("boot a pgd system", e))
        })
        .collect();
    crate::kprintln!(
        "bench: {} pgd systems side by side: {schemes:?}",
        kernels.len()
    );
    let mut series = Vec::new();
    series.push(measure("pair_warm", &kernels, (256, budget_ns), |k, n| {
        pair(k, n, None)
    }));
    // The first series is also reported as soon as it is measured, in the
    // `bench` event's shape, so a slow accelerator (a host whose KVM traps
    // every page-table write) still yields the warm pair's figures.
    report::event(&format!(
        "{}{}}}}}",
        bench_header("bench_series", pm, mode, &schemes, budget_ns),
        series_json(&series[0], &schemes)
    ));
    let cold = ColdBuffer::new(pm);
    series.push(measure("pair_cold", &kernels, (16, budget_ns), |k, n| {
        pair(k, n, Some(&cold))
    }));
    drop(cold);
    series.push(measure("fork_small", &kernels, (32, budget_ns), |k, n| {
        fork(k, TaskSize::SMALL, n)
    }));
    let large = TaskSize {
        text: 256,
        data: 3584,
        stack: 256,
    };
    series.push(measure("fork_large", &kernels, (2, budget_ns), |k, n| {
        fork(k, large, n)
    }));
    let mut json = bench_header("bench", pm, mode, &schemes, budget_ns);
    for (i, s) in series.iter().enumerate() {
        if i > 0 {
            json.push(',');
        }
        json.push_str(&series_json(s, &schemes));
    }
    json.push('}');
    drop(kernels);
    // Only 2-level propagates conversions to every pgd; elsewhere the
    // kernel pmd is shared and 10 000 PAE pgds would hold 120 MiB of pmds.
    let cpa = if mode == PagingMode::TwoLevel {
        cpa_10k(pm, mode, cpus)
    } else {
        String::from("null")
    };
    json.push_str(&format!(",\"cpa_10k\":{cpa}"));
    json.push('}');
    report::event(&json);
}

/// The start of a `bench` (or `bench_series`) event, up to the opening of
/// its `series` object: what was measured, how (`pgd_path`, poisoning).
fn bench_header(
    event: &str,
    pm: &PhysMemory<Lowmem>,
    mode: PagingMode,
    schemes: &[Scheme],
    budget_ns: u64,
) -> String {
    format!(
        "{{\"event\":\"{event}\",\"mode\":\"{mode}\",\"rounds\":{ROUNDS},\"pgd_path\":\"token\",\"poisoning\":{},\"tsc_overhead_ns\":{},\"loop_ns\":{:.2},\"series_budget_ms\":{},\"schemes\":[{}],\"series\":{{",
        pm.poisoning(),
        to_ns(tsc_overhead()),
        loop_ns(),
        budget_ns / 1_000_000,
        schemes
            .iter()
            .map(|s| format!("\"{s}\""))
            .collect::<Vec<_>>()
            .join(",")
    )
}

fn series_json(s: &Series, schemes: &[Scheme]) -> String {
    let base = schemes.iter().position(|&x| x == Scheme::Uncached);
    let mut parts = Vec::new();
    for (j, scheme) in schemes.iter().enumerate() {
        let per_round: Vec<f64> = s.ns.iter().map(|r| r[j]).collect();
        let (med, q1, q3) = stats(per_round);
        let ratio = base.map(|b| {
            stats(
                s.ns.iter()
                    .map(|r| if r[j] > 0.0 { r[b] / r[j] } else { 0.0 })
                    .collect(),
            )
        });
        let ratio = ratio.map_or(String::from("null"), |(m, a, b)| {
            format!("{{\"median\":{m:.2},\"q1\":{a:.2},\"q3\":{b:.2}}}")
        });
        parts.push(format!(
            "\"{scheme}\":{{\"ns\":{med:.1},\"q1\":{q1:.1},\"q3\":{q3:.1},\"vs_uncached\":{ratio}}}"
        ));
    }
    format!(
        "\"{}\":{{\"ops_per_round\":{},{}}}",
        s.name,
        s.n,
        parts.join(",")
    )
}

/// `ROUNDS` rounds; each times `f(kernel, n)` on every kernel in turn (ns
/// per op), with `n` the `nominal` count or fewer, as fits the series'
/// `budget_ns` ([`ops_per_round`]): a probe round of one operation per
/// kernel (setup included) tells what a round costs.
fn measure(
    name: &'static str,
    kernels: &[Kernel<Lowmem>],
    (nominal, budget_ns): (u32, u64),
    mut f: impl FnMut(&Kernel<Lowmem>, u32) -> f64,
) -> Series {
    let t0 = rdtsc();
    for k in kernels {
        f(k, 1);
    }
    let n = ops_per_round(nominal, to_ns(rdtsc().wrapping_sub(t0)), budget_ns);
    // One warm-up round, not recorded.
    for k in kernels {
        f(k, n);
    }
    let ns = (0..ROUNDS)
        .map(|_| kernels.iter().map(|k| f(k, n)).collect())
        .collect();
    crate::kprintln!("bench: {name} done ({n} per round)");
    Series { name, n, ns }
}

/// ns per `pgd_alloc` + `pgd_free` on CPU 0's token, `n` pairs,
/// optionally cache-cold.
fn pair(k: &Kernel<Lowmem>, n: u32, cold: Option<&ColdBuffer>) -> f64 {
    let shaped = |e: &KernelError| matches!(e, KernelError::WrongShape { .. });
    match k.claim_whole_cpu(0) {
        Ok(cpu) => return timed_pairs(cpu, n, cold),
        Err(e) if !shaped(&e) => fail("claim_whole_cpu(0)", e),
        Err(_) => {}
    }
    match k.claim_pae_cpu(0) {
        Ok(cpu) => timed_pairs(cpu, n, cold),
        Err(e) if !shaped(&e) => fail("claim_pae_cpu(0)", e),
        Err(_) => timed_pairs(cpu0(k), n, cold),
    }
}

/// ns per `pgd_alloc` + `pgd_free` on `cpu`: [`warm_pairs`], or with
/// `cold` [`cold_pairs`].
fn timed_pairs(cpu: impl CpuPgds, n: u32, cold: Option<&ColdBuffer>) -> f64 {
    match cold {
        None => warm_pairs(cpu, n),
        Some(cold) => cold_pairs(cpu, n, cold),
    }
}

/// ns per pair of `n` pairs in a hot loop, the loop timed as a whole, as
/// the fork series are: the TSC is read twice in all, not twice per pair (a
/// bracket per pair adds the TSC's own cost to each: on hardware as much
/// as a cached pair, where the hypervisor traps `rdtsc` a world switch).
fn warm_pairs(mut cpu: impl CpuPgds, n: u32) -> f64 {
    let t0 = rdtsc();
    for _ in 0..n {
        let p = cpu.pgd_alloc().unwrap_or_else(|e| fail("pgd_alloc", e));
        // The address escapes, as `mm->pgd` and CR3 take it (as in
        // `pgdcache bench`'s loop).
        core::hint::black_box(p.pgd());
        cpu.pgd_free(p).unwrap_or_else(|e| fail("pgd_free", e));
    }
    to_ns(rdtsc().wrapping_sub(t0)) as f64 / f64::from(n)
}

/// ns per pair of `n` pairs, each timed alone after touching `cold`'s
/// 16 MiB, the cost of the bracket itself ([`tsc_overhead`]) taken off.
fn cold_pairs(mut cpu: impl CpuPgds, n: u32, cold: &ColdBuffer) -> f64 {
    let bracket = tsc_overhead();
    let mut ticks = 0u64;
    for _ in 0..n {
        cold.touch();
        let t0 = rdtsc();
        let p = cpu.pgd_alloc().unwrap_or_else(|e| fail("pgd_alloc", e));
        core::hint::black_box(p.pgd());
        cpu.pgd_free(p).unwrap_or_else(|e| fail("pgd_free", e));
        ticks += rdtsc().wrapping_sub(t0).saturating_sub(bracket);
    }
    to_ns(ticks) as f64 / f64::from(n)
}

/// ns per `fork_mm` + `exit_mm` (on CPU 0's token) of a child of a
/// `size` parent.
fn fork(k: &Kernel<Lowmem>, size: TaskSize, n: u32) -> f64 {
    let mut cpu = cpu0(k);
    let parent = cpu.exec_mm(size).unwrap_or_else(|e| fail("exec", e));
    let t0 = rdtsc();
    for _ in 0..n {
        let child = cpu.fork_mm(&parent).unwrap_or_else(|e| fail("fork", e));
        cpu.exit_mm(child).unwrap_or_else(|e| fail("exit", e));
    }
    let ticks = rdtsc().wrapping_sub(t0);
    cpu.exit_mm(parent).unwrap_or_else(|e| fail("exit", e));
    to_ns(ticks) as f64 / f64::from(n)
}

/// 16 MiB of frames to sweep through the caches.
struct ColdBuffer<'a> {
    pm: &'a PhysMemory<Lowmem>,
    frames: Vec<physmem::Frame>,
}

impl<'a> ColdBuffer<'a> {
    fn new(pm: &'a PhysMemory<Lowmem>) -> Self {
        let frames = (0..4)
            .map(|_| {
                pm.alloc_pages(10, physmem::Owner::KernelData)
                    .unwrap_or_else(|e| fail("cold buffer", e))
            })
            .collect();
        ColdBuffer { pm, frames }
    }
    fn touch(&self) {
        let mem = self.pm.mem();
        for f in &self.frames {
            let base = f.start().as_u64();
            let mut off = 0;
            while off < (4 << 20) {
                let _ = mem.load_u64(PhysAddr::new(base + off));
                off += 64;
            }
        }
    }
}

impl Drop for ColdBuffer<'_> {
    fn drop(&mut self) {
        for f in &self.frames {
            let _ = self.pm.free_pages(*f, 10);
        }
    }
}

/// A split + revert of one direct-map page with 10 000 pgds cached, for
/// the seed's list and the ticket scheme (where the mode has them).
fn cpa_10k(pm: &Arc<PhysMemory<Lowmem>>, mode: PagingMode, cpus: usize) -> String {
    let mut parts = Vec::new();
    for scheme in [Scheme::SlabPgdList, Scheme::SlabTicket] {
        let k = Kernel::new(pm.clone(), &production(mode, scheme, cpus))
            .unwrap_or_else(|e| fail("boot a pgd system", e));
        // 10 000 constructed pgds, 10 % of them joined to an address space
        // (on mmlist). The rest stand for cached pgds: constructed, on
        // pgd_list, owned by no mm. They are held allocated rather than
        // freed because the object cache gives slabs beyond its free_limit
        // back (running pgd_dtor), as `pgdcache bench` explains; for
        // propagation the two states are the same.
        let mut cpu = cpu0(&k);
        // Held as raw addresses (8 bytes each, not an `OwnedPgd`'s
        // handles): 10 000 of them must fit the kernel's heap.
        let pgds: Vec<Pgd> = (0..10_000)
            .map(|_| {
                cpu.pgd_alloc()
                    .unwrap_or_else(|e| fail("pgd_alloc", e))
                    .into_raw()
            })
            .collect();
        for p in pgds.iter().step_by(10) {
            k.mm_join(*p).unwrap_or_else(|e| fail("mm_join", e));
        }
        // A page of the direct map above the reserved area.
        let va = VirtAddr::new(mode.page_offset() + (24 << 20));
        let pk = k
            .page_kernel_at(va)
            .unwrap_or_else(|| fail("page_kernel_at", "outside the direct map"));
        let mut ns = Vec::new();
        for _ in 0..ROUNDS {
            let t0 = rdtsc();
            k.change_page_attr(va, 1, pk | EntryFlags::PCD | EntryFlags::PWT)
                .unwrap_or_else(|e| fail("change_page_attr", e));
            k.global_flush_tlb();
            k.change_page_attr(va, 1, pk)
                .unwrap_or_else(|e| fail("change_page_attr", e));
            k.global_flush_tlb();
            ns.push(to_ns(rdtsc().wrapping_sub(t0)) as f64);
        }
        let (m, a, b) = stats(ns);
        parts.push(format!(
            "\"{scheme}\":{{\"ns\":{m:.0},\"q1\":{a:.0},\"q3\":{b:.0}}}"
        ));
        for p in pgds.iter().step_by(10) {
            k.mm_leave(*p);
        }
        for p in pgds {
            cpu.pgd_free_raw(p).unwrap_or_else(|e| fail("pgd_free", e));
        }
        // put_cpu() before the remote shrink, which would otherwise wait
        // for this very token.
        drop(cpu);
        k.shrink();
    }
    format!("{{{}}}", parts.join(","))
}
