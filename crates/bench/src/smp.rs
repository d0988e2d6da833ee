//! Real SMP throughput: the simulator's `script` workload (a shell forking
//! small tasks that exec and exit, with the graphics and vmalloc agents at
//! the workload's rates) on 1 and 2 CPU threads, per scheme × lock variant,
//! with the contention figures of `pgd_lock` and `mmlist_lock`.
//!
//! The live kernel-access checks are off: they are the simulator's
//! correctness instrument, not part of the kernel's work, and would dominate
//! the per-task time. Everything else is the simulator as `pgdcache run`
//! runs it. These are the figures the virtual-time model ([`crate::vtime`])
//! is validated against.

use pgdcache::{LockKind, LockStats, Scheme};
use sim::{CpaRate, SimConfig, SimError, Workload};
use x86paging::PagingMode;

/// One real run.
#[derive(Clone, Debug, serde::Serialize)]
pub struct SmpRow {
    /// Mode.
    pub mode: PagingMode,
    /// Scheme.
    pub scheme: Scheme,
    /// Lock variant of `pgd_lock` and `mmlist_lock`.
    pub lock: LockKind,
    /// CPU threads.
    pub cpus: usize,
    /// Tasks completed.
    pub tasks: u64,
    /// Tasks per second (best of the repetitions).
    pub tasks_per_s: f64,
    /// Throughput over the same scheme and lock at 1 CPU.
    pub scaling: Option<f64>,
    /// Verdict of the run's final check.
    pub verdict: String,
    /// `pgd_lock` counters (of the best run).
    pub pgd_lock: LockStats,
    /// `mmlist_lock` counters (of the best run).
    pub mmlist_lock: LockStats,
    /// `change_page_attr` toggles of the graphics agent.
    pub cpa_toggles: u64,
}

/// The simulator configuration of one SMP row.
pub fn config(
    mode: PagingMode,
    scheme: Scheme,
    lock: LockKind,
    cpus: usize,
    ops: u64,
) -> SimConfig {
    let mut c = SimConfig::for_workload(Workload::Script, mode, scheme);
    c.lock = lock;
    c.cpus = cpus;
    c.ops = ops;
    c.live_checks = false;
    // The kernel's production configuration, as the micro-benchmarks:
    // freed-frame poisoning off (the checker's runs keep it on).
    c.poisoning = false;
    c.sample_every = 0;
    c.cpa_rate = Workload::Script.default_cpa_rate();
    if c.cpa_rate == CpaRate::Off {
        c.cpa_rate = CpaRate::PerKiloTask(2);
    }
    c
}

/// Runs one row `reps` times and keeps the best throughput (on a shared
/// host the fastest run is the least disturbed one).
pub fn run_row(
    mode: PagingMode,
    scheme: Scheme,
    lock: LockKind,
    cpus: usize,
    ops: u64,
    reps: usize,
) -> Result<SmpRow, SimError> {
    let cfg = config(mode, scheme, lock, cpus, ops);
    let mut runs = Vec::new();
    for _ in 0..reps.max(1) {
        let r = sim::run(&cfg)?;
        // A run that stopped early (out of simulated memory) measured
        // nothing worth a figure.
        if let Some(f) = &r.failure {
            return Err(SimError::Agent {
                agent: "bench",
                why: format!("{mode} {scheme} {lock} on {cpus} CPUs stopped early: {f}"),
            });
        }
        runs.push(r);
    }
    runs.sort_by(|a, b| a.tasks_per_s.total_cmp(&b.tasks_per_s));
    let Some(r) = runs.last() else {
        return Err(SimError::Panic("no run".into()));
    };
    Ok(SmpRow {
        mode,
        scheme,
        lock,
        cpus,
        tasks: r.tasks,
        tasks_per_s: r.tasks_per_s,
        scaling: None,
        verdict: r.verdict.short(),
        pgd_lock: r.kernel.pgd_lock,
        mmlist_lock: r.kernel.mmlist_lock,
        cpa_toggles: r.cpa_toggles,
    })
}

/// Every scheme × lock at 1 and 2 CPUs; `scaling` filled from the 1-CPU row.
pub fn sweep(
    modes: &[PagingMode],
    schemes: &[Scheme],
    locks: &[LockKind],
    ops: u64,
    reps: usize,
    mut each: impl FnMut(&SmpRow),
) -> Result<Vec<SmpRow>, SimError> {
    let mut rows = Vec::new();
    for &mode in modes {
        for &scheme in schemes {
            if scheme.supports(mode).is_err() {
                continue;
            }
            for &lock in locks {
                let one = run_row(mode, scheme, lock, 1, ops, reps)?;
                let mut two = run_row(mode, scheme, lock, 2, ops, reps)?;
                if one.tasks_per_s > 0.0 {
                    two.scaling = Some(two.tasks_per_s / one.tasks_per_s);
                }
                each(&one);
                each(&two);
                rows.push(one);
                rows.push(two);
            }
        }
    }
    Ok(rows)
}
