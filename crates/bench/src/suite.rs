//! The whole benchmark suite behind `pgdcache bench`: micro-measurements
//! with their same-run baselines, the real SMP sweep, the virtual-time
//! projection with its validation, and the seed's targets checked against
//! the measured ratios.

use crate::micro::{
    self, AllocFree, CpaCycle, ForkExit, Freelist, MicroError, Ratio, Subject, Timing,
};
use crate::smp::{self, SmpRow};
use crate::vtime::{self, Calibration, VResult};
use pgdcache::{LockKind, Scheme};
use sim::SimError;
use std::fmt::Write;
use std::time::Instant;
use x86paging::PagingMode;

/// Errors of the suite.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// A micro-measurement failed.
    #[error(transparent)]
    Micro(#[from] MicroError),
    /// A simulator run failed.
    #[error(transparent)]
    Sim(#[from] SimError),
}

/// How long to measure.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Settings {
    /// Interleaved rounds per micro-measurement. Every ratio is paired: the
    /// median over rounds of the two sides' per-round ratio, so load that
    /// comes and goes on a shared host hits both sides of a ratio alike.
    pub rounds: usize,
    /// `pgd_alloc` + `pgd_free` pairs per round.
    pub alloc_iters: u64,
    /// Small fork + exit pairs per round.
    pub fork_small_iters: u64,
    /// Large fork + exit pairs per round.
    pub fork_large_iters: u64,
    /// Pages of the small and the large task.
    pub task_pages: (u64, u64),
    /// Total pgds of the cpa rows.
    pub cpa_pgds: Vec<usize>,
    /// Tasks per real SMP run.
    pub smp_ops: u64,
    /// Interleaved repetitions of calibration and real runs (best kept).
    pub smp_reps: usize,
    /// Modes of the SMP sweep and the projection.
    pub smp_modes: Vec<PagingMode>,
    /// Tasks per calibration.
    pub calib_tasks: u64,
    /// Projected CPU counts.
    pub vtime_cpus: Vec<usize>,
    /// Also time the default `pgdcache` run (compare).
    pub time_default_run: bool,
}

impl Settings {
    /// The quick default (well under a minute on two cores).
    pub fn quick() -> Settings {
        Settings {
            rounds: 7,
            alloc_iters: 20_000,
            fork_small_iters: 1_000,
            fork_large_iters: 8,
            task_pages: (28, 4096),
            cpa_pgds: vec![10, 1_000, 10_000],
            smp_ops: 2_000,
            smp_reps: 3,
            smp_modes: vec![PagingMode::TwoLevel],
            calib_tasks: 1_500,
            vtime_cpus: vec![1, 2, 4, 8, 16, 32, 64],
            time_default_run: true,
        }
    }

    /// The long version.
    pub fn full() -> Settings {
        Settings {
            rounds: 11,
            alloc_iters: 100_000,
            fork_small_iters: 5_000,
            fork_large_iters: 30,
            smp_ops: 10_000,
            smp_reps: 7,
            smp_modes: vec![PagingMode::TwoLevel, PagingMode::Pae],
            calib_tasks: 10_000,
            ..Settings::quick()
        }
    }
}

/// `pgd_alloc` + `pgd_free` of one scheme.
#[derive(Clone, Debug, serde::Serialize)]
pub struct AllocRow {
    /// Mode.
    pub mode: PagingMode,
    /// Scheme.
    pub scheme: Scheme,
    /// ns per pair.
    pub ns: Timing,
    /// `uncached` time / this time (speed-up).
    pub vs_uncached: f64,
    /// Inter-quartile range of the per-round `vs_uncached` ratios.
    pub vs_uncached_iqr: (f64, f64),
    /// This time / bare freelist time (1.0 = the physical limit).
    pub vs_freelist: f64,
    /// Inter-quartile range of the per-round `vs_freelist` ratios.
    pub vs_freelist_iqr: (f64, f64),
}

/// fork + exit of one scheme.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ForkRow {
    /// Mode.
    pub mode: PagingMode,
    /// Scheme.
    pub scheme: Scheme,
    /// Small task, ns per fork + exit.
    pub small: Timing,
    /// `uncached` / this (small).
    pub small_vs_uncached: f64,
    /// Inter-quartile range of the per-round small ratios.
    pub small_vs_uncached_iqr: (f64, f64),
    /// Large task, ns per fork + exit.
    pub large: Timing,
    /// `uncached` / this (large).
    pub large_vs_uncached: f64,
    /// Inter-quartile range of the per-round large ratios.
    pub large_vs_uncached_iqr: (f64, f64),
}

/// cpa split + revert with a pgd population.
#[derive(Clone, Debug, serde::Serialize)]
pub struct CpaRow {
    /// Constructed pgds in total.
    pub pgds: usize,
    /// Of which live (on `mmlist`).
    pub live: usize,
    /// `slab-pgd-list`, ns per cycle.
    pub pgd_list: Timing,
    /// `slab-ticket`, ns per cycle.
    pub ticket: Timing,
    /// pgd-list / ticket.
    pub ratio: f64,
    /// Inter-quartile range of the per-round ratios.
    pub ratio_iqr: (f64, f64),
    /// `slab-ticket`: ns per later join of a stale cached pgd (the refresh
    /// the scheme defers to `mm_join`).
    pub ticket_refresh_ns: f64,
}

/// Calibration, projection and validation of one configuration.
#[derive(Clone, Debug, serde::Serialize)]
pub struct VtimeRow {
    /// The calibration.
    pub cal: Calibration,
    /// Projections, one per CPU count.
    pub projected: Vec<VResult>,
    /// (model − real) / real at 1 CPU.
    pub err_1cpu: Option<f64>,
    /// (model − real) / real at 2 CPUs.
    pub err_2cpu: Option<f64>,
    /// Parallel speed-up the host gave two share-nothing spinning threads
    /// during this row's runs (2.0 on an idle 2-core machine).
    pub host_speedup_2: f64,
    /// The 2-CPU error after scaling the model by `host_speedup_2 / 2`:
    /// what is left once the host's missing capacity is accounted for.
    pub err_2cpu_host: Option<f64>,
}

/// One target of the performance issue.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Target {
    /// What.
    pub name: String,
    /// The goal.
    pub goal: String,
    /// The measured figure.
    pub measured: String,
    /// Met?
    pub met: bool,
}

/// Everything the suite measured.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Report {
    /// Settings.
    pub settings: Settings,
    /// Host CPUs and load average at the start.
    pub host: String,
    /// Bare freelist pop + push, ns, per mode.
    pub freelist: Freelists,
    /// pgd_alloc + pgd_free.
    pub alloc: Vec<AllocRow>,
    /// fork + exit.
    pub fork: Vec<ForkRow>,
    /// cpa propagation.
    pub cpa: Vec<CpaRow>,
    /// Real SMP runs.
    pub smp: Vec<SmpRow>,
    /// Virtual-time projections.
    pub vtime: Vec<VtimeRow>,
    /// Wall time of the default `pgdcache` run (compare), seconds.
    pub default_run_s: Option<f64>,
    /// Targets.
    pub targets: Vec<Target>,
    /// Wall time of the suite, seconds.
    pub wall_s: f64,
}

/// Bare-freelist timings per mode.
pub type Freelists = Vec<(PagingMode, Timing)>;

const MODES: [PagingMode; 2] = [PagingMode::TwoLevel, PagingMode::Pae];

fn schemes_of(mode: PagingMode) -> Vec<Scheme> {
    Scheme::ALL
        .into_iter()
        .filter(|&s| s.supports(mode).is_ok())
        .collect()
}

fn host() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let load = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into());
    format!("{cpus} CPUs, load average {load}")
}

/// Measures `pgd_alloc` + `pgd_free` of every scheme and the bare freelist,
/// interleaved per mode.
pub fn alloc_rows(s: &Settings) -> Result<(Freelists, Vec<AllocRow>), MicroError> {
    let mut fl = Vec::new();
    let mut rows = Vec::new();
    for mode in MODES {
        let schemes = schemes_of(mode);
        let mut subjects: Vec<AllocFree> = schemes
            .iter()
            .map(|&sc| AllocFree::new(mode, sc))
            .collect::<Result<_, _>>()?;
        let mut free = Freelist::new(mode)?;
        let mut refs: Vec<&mut dyn Subject> = Vec::new();
        for a in subjects.iter_mut() {
            refs.push(a);
        }
        refs.push(&mut free);
        let t = micro::interleaved_rounds(&mut refs, s.rounds, s.alloc_iters)?;
        let (ft, st) = t.split_last().ok_or(MicroError::Kernel {
            what: "alloc",
            why: "no measurement".into(),
        })?;
        let unc = schemes.iter().position(|&x| x == Scheme::Uncached);
        for (i, &scheme) in schemes.iter().enumerate() {
            let vs_unc = unc.map(|u| Ratio::paired(&st[u], &st[i]));
            let vs_free = Ratio::paired(&st[i], ft);
            rows.push(AllocRow {
                mode,
                scheme,
                ns: Timing::of(st[i].clone()),
                vs_uncached: vs_unc.map_or(0.0, |r| r.median),
                vs_uncached_iqr: vs_unc.map_or((0.0, 0.0), |r| (r.q1, r.q3)),
                vs_freelist: vs_free.median,
                vs_freelist_iqr: (vs_free.q1, vs_free.q3),
            });
        }
        fl.push((mode, Timing::of(ft.clone())));
    }
    Ok((fl, rows))
}

/// fork + exit of a small and a large task, every scheme, interleaved.
pub fn fork_rows(s: &Settings) -> Result<Vec<ForkRow>, MicroError> {
    let mut rows = Vec::new();
    for mode in MODES {
        let schemes = schemes_of(mode);
        let mut res = Vec::new();
        for (pages, iters, ram) in [
            (s.task_pages.0, s.fork_small_iters, 64u64 << 20),
            (s.task_pages.1, s.fork_large_iters, 256u64 << 20),
        ] {
            let mut subjects: Vec<ForkExit> = schemes
                .iter()
                .map(|&sc| ForkExit::new(mode, sc, pages, ram))
                .collect::<Result<_, _>>()?;
            let mut refs: Vec<&mut dyn Subject> = Vec::new();
            for a in subjects.iter_mut() {
                refs.push(a);
            }
            res.push(micro::interleaved_rounds(&mut refs, s.rounds, iters)?);
        }
        let unc = schemes.iter().position(|&x| x == Scheme::Uncached);
        for (i, &scheme) in schemes.iter().enumerate() {
            let vs = |v: &[Vec<f64>]| unc.map_or(Ratio::default(), |j| Ratio::paired(&v[j], &v[i]));
            let (small, large) = (vs(&res[0]), vs(&res[1]));
            let zero_nan = |x: f64| if x.is_nan() { 0.0 } else { x };
            rows.push(ForkRow {
                mode,
                scheme,
                small: Timing::of(res[0][i].clone()),
                small_vs_uncached: zero_nan(small.median),
                small_vs_uncached_iqr: (zero_nan(small.q1), zero_nan(small.q3)),
                large: Timing::of(res[1][i].clone()),
                large_vs_uncached: zero_nan(large.median),
                large_vs_uncached_iqr: (zero_nan(large.q1), zero_nan(large.q3)),
            });
        }
    }
    Ok(rows)
}

/// cpa split + revert with `pgds` pgds, all cached and 10 % live.
pub fn cpa_rows(s: &Settings) -> Result<Vec<CpaRow>, MicroError> {
    let mut rows = Vec::new();
    for &n in &s.cpa_pgds {
        for live in [0, n.div_ceil(10)] {
            let mut a = CpaCycle::new(PagingMode::TwoLevel, Scheme::SlabPgdList, n, live)?;
            let mut b = CpaCycle::new(PagingMode::TwoLevel, Scheme::SlabTicket, n, live)?;
            // About 2 ms of pgd-list work per round.
            let iters = (200_000 / n.max(1) as u64).clamp(4, 2_000);
            let t = micro::interleaved_rounds(&mut [&mut a, &mut b], s.rounds, iters)?;
            let refresh = b.join_cost(1000)?;
            let ratio = Ratio::paired(&t[0], &t[1]);
            rows.push(CpaRow {
                pgds: n,
                live,
                pgd_list: Timing::of(t[0].clone()),
                ticket: Timing::of(t[1].clone()),
                ratio: ratio.median,
                ratio_iqr: (ratio.q1, ratio.q3),
                ticket_refresh_ns: refresh,
            });
        }
    }
    Ok(rows)
}

/// The SMP schemes of the sweep (each run only in the modes it supports).
pub fn smp_schemes() -> Vec<Scheme> {
    Scheme::ALL.to_vec()
}

/// The real SMP runs and the virtual-time model of every (mode, scheme,
/// lock), measured in interleaved repetitions — calibrate, run on 1 CPU,
/// run on 2 CPUs — keeping the best of each, so that the model and the
/// runs it is validated against see the same host conditions.
pub fn smp_and_vtime(s: &Settings) -> Result<(Vec<SmpRow>, Vec<VtimeRow>), BenchError> {
    let xw = (vtime::measure_xfer(), vtime::measure_wake());
    let mut smp_rows = Vec::new();
    let mut rows = Vec::new();
    let best = |a: Option<SmpRow>, b: SmpRow| match a {
        Some(a) if a.tasks_per_s >= b.tasks_per_s => a,
        _ => b,
    };
    for &mode in &s.smp_modes {
        for scheme in smp_schemes() {
            if scheme.supports(mode).is_err() {
                continue;
            }
            let costs = vtime::scheme_costs(mode, scheme)?;
            for lock in LockKind::ALL {
                let mut cal: Option<Calibration> = None;
                let (mut one, mut two) = (None, None);
                let mut host = Vec::new();
                for _ in 0..s.smp_reps.max(1) {
                    host.push(vtime::host_speedup());
                    let c = vtime::calibrate(mode, scheme, lock, s.calib_tasks, xw, costs)?;
                    if cal.as_ref().is_none_or(|b| c.task_ns < b.task_ns) {
                        cal = Some(c);
                    }
                    one = Some(best(
                        one,
                        smp::run_row(mode, scheme, lock, 1, s.smp_ops, 1)?,
                    ));
                    two = Some(best(
                        two,
                        smp::run_row(mode, scheme, lock, 2, s.smp_ops, 1)?,
                    ));
                }
                let (Some(cal), Some(one), Some(mut two)) = (cal, one, two) else {
                    continue;
                };
                if one.tasks_per_s > 0.0 {
                    two.scaling = Some(two.tasks_per_s / one.tasks_per_s);
                }
                let projected: Vec<VResult> = s
                    .vtime_cpus
                    .iter()
                    .map(|&c| vtime::project(&cal, lock, c, (c as u64 * 150).max(3_000)))
                    .collect();
                let err = |real: &SmpRow| {
                    let model = projected
                        .iter()
                        .find(|p| p.cpus == real.cpus)
                        .map(|p| p.tasks_per_s)
                        .unwrap_or_else(|| {
                            vtime::project(&cal, lock, real.cpus, 3_000).tasks_per_s
                        });
                    (real.tasks_per_s > 0.0).then(|| (model - real.tasks_per_s) / real.tasks_per_s)
                };
                let host_speedup_2 = micro::median(&mut host);
                let err_2cpu_host = projected
                    .iter()
                    .find(|p| p.cpus == 2)
                    .filter(|_| two.tasks_per_s > 0.0)
                    .map(|p| {
                        (p.tasks_per_s * host_speedup_2 / 2.0 - two.tasks_per_s) / two.tasks_per_s
                    });
                rows.push(VtimeRow {
                    err_1cpu: err(&one),
                    err_2cpu: err(&two),
                    host_speedup_2,
                    err_2cpu_host,
                    cal,
                    projected,
                });
                smp_rows.push(one);
                smp_rows.push(two);
            }
        }
    }
    Ok((smp_rows, rows))
}

fn find_alloc(r: &[AllocRow], mode: PagingMode, s: Scheme) -> Option<&AllocRow> {
    r.iter().find(|x| x.mode == mode && x.scheme == s)
}

fn find_fork(r: &[ForkRow], mode: PagingMode, s: Scheme) -> Option<&ForkRow> {
    r.iter().find(|x| x.mode == mode && x.scheme == s)
}

/// The targets of the performance issue, checked against `r`.
pub fn targets(r: &Report) -> Vec<Target> {
    let mut t = Vec::new();
    let mut add = |name: &str, goal: &str, measured: String, met: bool| {
        t.push(Target {
            name: name.into(),
            goal: goal.into(),
            measured,
            met,
        })
    };
    let l2 = PagingMode::TwoLevel;
    let pae = PagingMode::Pae;
    let slab = [Scheme::SlabPgdList, Scheme::SlabTicket];
    let fmt_all = |f: &dyn Fn(Scheme) -> Option<f64>| {
        slab.iter()
            .map(|&s| format!("{s} {}", f(s).map_or("-".into(), |v| format!("{v:.2}x"))))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let a2 = |s| find_alloc(&r.alloc, l2, s).map(|x| x.vs_uncached);
    add(
        "2-level pgd_alloc+free vs uncached",
        ">= 30x",
        fmt_all(&a2),
        slab.iter().all(|&s| a2(s).is_some_and(|v| v >= 30.0)),
    );
    let f2 = |s| find_alloc(&r.alloc, l2, s).map(|x| x.vs_freelist);
    add(
        "2-level pgd_alloc+free vs bare freelist",
        "<= 2x the freelist's time",
        fmt_all(&f2),
        slab.iter().all(|&s| f2(s).is_some_and(|v| v <= 2.0)),
    );
    let ap = |s| find_alloc(&r.alloc, pae, s).map(|x| x.vs_uncached);
    // The seed's protocol decides the verdict; `slab-prepopulated` (the
    // pgd keeps its pmds: not the seed's protocol) is reported beside it.
    let pre = ap(Scheme::SlabPrepopulated).map_or("-".into(), |v| format!("{v:.2}x"));
    add(
        "PAE pgd_alloc+free vs uncached",
        ">= 50x",
        format!("{}; slab-prepopulated {pre}", fmt_all(&ap)),
        slab.iter().all(|&s| ap(s).is_some_and(|v| v >= 50.0)),
    );
    for mode in [l2, pae] {
        let fs = |s| find_fork(&r.fork, mode, s).map(|x| x.small_vs_uncached);
        add(
            &format!("{} small-task fork+exit vs uncached", mode.name()),
            ">= 1.3x",
            fmt_all(&fs),
            slab.iter().all(|&s| fs(s).is_some_and(|v| v >= 1.3)),
        );
        let fl = |s| find_fork(&r.fork, mode, s).map(|x| x.large_vs_uncached);
        add(
            &format!("{} large-task fork+exit vs uncached", mode.name()),
            "within 5% (0.95x..1.05x)",
            fmt_all(&fl),
            slab.iter()
                .all(|&s| fl(s).is_some_and(|v| (0.95..=1.05).contains(&v))),
        );
    }
    let big: Vec<&CpaRow> = r.cpa.iter().filter(|c| c.pgds >= 10_000).collect();
    if !big.is_empty() {
        add(
            "cpa, 10 000 mostly-cached pgds: slab-ticket vs slab-pgd-list",
            ">= 5x cheaper",
            big.iter()
                .map(|c| format!("{} live: {:.1}x", c.live, c.ratio))
                .collect::<Vec<_>>()
                .join(", "),
            big.iter().all(|c| c.ratio >= 5.0),
        );
    }
    if let Some(s) = r.default_run_s {
        add(
            "default `pgdcache` run (compare)",
            "<= 10 s on 2 cores",
            format!("{s:.1} s"),
            s <= 10.0,
        );
    }
    t
}

/// Runs the suite; `progress` gets a line per phase.
pub fn run(s: &Settings, mut progress: impl FnMut(&str)) -> Result<Report, BenchError> {
    let t0 = Instant::now();
    let host = host();
    progress("pgd_alloc + pgd_free");
    let (freelist, alloc) = alloc_rows(s)?;
    progress("fork + exit");
    let fork = fork_rows(s)?;
    progress("change_page_attr propagation");
    let cpa = cpa_rows(s)?;
    progress("SMP script workload (real threads) and virtual-time model");
    let (smp, vtime) = smp_and_vtime(s)?;
    let default_run_s = if s.time_default_run {
        progress("default pgdcache run (compare)");
        let t = Instant::now();
        sim::compare(&sim::CompareSpec::default(), |_| {})?;
        Some(t.elapsed().as_secs_f64())
    } else {
        None
    };
    let mut r = Report {
        settings: s.clone(),
        host,
        freelist,
        alloc,
        fork,
        cpa,
        smp,
        vtime,
        default_run_s,
        targets: Vec::new(),
        wall_s: 0.0,
    };
    r.targets = targets(&r);
    r.wall_s = t0.elapsed().as_secs_f64();
    Ok(r)
}

fn us(ns: f64) -> String {
    if ns >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.2} µs", ns / 1e3)
    } else {
        format!("{ns:.1} ns")
    }
}

fn pct(e: Option<f64>) -> String {
    e.map_or("-".into(), |e| format!("{:+.0}%", e * 100.0))
}

/// A paired ratio with its inter-quartile range: `13.2x [12.1–14.0]`.
fn ratio_cell(median: f64, (q1, q3): (f64, f64), p: usize, unit: &str) -> String {
    format!("{median:.p$}{unit} [{q1:.p$}–{q3:.p$}]")
}

/// The report as Markdown tables (what `pgdcache bench` prints).
pub fn markdown(r: &Report) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "host: {} · suite wall time {:.1} s\n", r.host, r.wall_s);
    let _ = writeln!(
        o,
        "Times: median (fastest) of {} interleaved rounds. Ratios: median [inter-quartile range] of the per-round ratios (paired by round).\n",
        r.settings.rounds
    );
    let _ = writeln!(o, "### pgd_alloc + pgd_free, warm cache, one CPU\n");
    let _ = writeln!(
        o,
        "| mode | scheme | ns/pair (median, min) | vs uncached | × bare freelist |"
    );
    let _ = writeln!(o, "|---|---|---|---|---|");
    for (m, t) in &r.freelist {
        let _ = writeln!(
            o,
            "| {} | bare freelist (Vec pop+push) | {:.1} ({:.1}) | - | 1.00 |",
            m.name(),
            t.median_ns,
            t.min_ns
        );
    }
    for a in &r.alloc {
        let _ = writeln!(
            o,
            "| {} | {} | {:.1} ({:.1}) | {} | {} |",
            a.mode.name(),
            a.scheme,
            a.ns.median_ns,
            a.ns.min_ns,
            ratio_cell(a.vs_uncached, a.vs_uncached_iqr, 1, "x"),
            ratio_cell(a.vs_freelist, a.vs_freelist_iqr, 1, "")
        );
    }
    let _ = writeln!(
        o,
        "\n### fork + exit (small: {} pages, large: {} pages = {} MiB), one CPU\n",
        r.settings.task_pages.0,
        r.settings.task_pages.1,
        r.settings.task_pages.1 * 4 / 1024
    );
    let _ = writeln!(
        o,
        "| mode | scheme | small | vs uncached | large | vs uncached |"
    );
    let _ = writeln!(o, "|---|---|---|---|---|---|");
    for f in &r.fork {
        let _ = writeln!(
            o,
            "| {} | {} | {} | {} | {} | {} |",
            f.mode.name(),
            f.scheme,
            us(f.small.median_ns),
            ratio_cell(f.small_vs_uncached, f.small_vs_uncached_iqr, 2, "x"),
            us(f.large.median_ns),
            ratio_cell(f.large_vs_uncached, f.large_vs_uncached_iqr, 3, "x")
        );
    }
    let _ = writeln!(
        o,
        "\n### change_page_attr split + flush + revert + flush, 2-level\n"
    );
    let _ = writeln!(
        o,
        "| pgds | live | slab-pgd-list | slab-ticket | pgd-list / ticket | ticket: later join of a stale pgd |"
    );
    let _ = writeln!(o, "|---|---|---|---|---|---|");
    for c in &r.cpa {
        let _ = writeln!(
            o,
            "| {} | {} | {} | {} | {} | {} |",
            c.pgds,
            c.live,
            us(c.pgd_list.median_ns),
            us(c.ticket.median_ns),
            ratio_cell(c.ratio, c.ratio_iqr, 1, "x"),
            us(c.ticket_refresh_ns)
        );
    }
    let _ = writeln!(
        o,
        "\n### SMP: script workload, real threads (live checks off)\n"
    );
    let _ = writeln!(
        o,
        "| mode | scheme | lock | CPUs | tasks/s | 2/1 CPU | pgd_lock acq / contended / hold | mmlist_lock acq / contended / hold | verdict |"
    );
    let _ = writeln!(o, "|---|---|---|---|---|---|---|---|---|");
    for s in &r.smp {
        let l = |x: &pgdcache::LockStats| {
            format!(
                "{} / {} / {}",
                x.acquisitions,
                x.contended,
                us(x.hold_ns as f64 / x.acquisitions.max(1) as f64)
            )
        };
        let _ = writeln!(
            o,
            "| {} | {} | {} | {} | {:.0} | {} | {} | {} | {} |",
            s.mode.name(),
            s.scheme,
            s.lock,
            s.cpus,
            s.tasks_per_s,
            s.scaling.map_or("-".into(), |x| format!("{x:.2}x")),
            l(&s.pgd_lock),
            l(&s.mmlist_lock),
            s.verdict
        );
    }
    let _ = writeln!(
        o,
        "\n### Virtual-time projection (tasks/s), validated against the real runs\n"
    );
    let cpus = &r.settings.vtime_cpus;
    let _ = write!(
        o,
        "| mode | scheme | lock | err 1 CPU | err 2 CPUs | host 2-thread speed-up | err 2 CPUs, host-corrected |"
    );
    for c in cpus {
        let _ = write!(o, " {c} |");
    }
    let _ = writeln!(
        o,
        " busiest lock at {} |",
        cpus.last().copied().unwrap_or(0)
    );
    let _ = writeln!(
        o,
        "|---|---|---|---|---|---|---|{}---|",
        "---|".repeat(cpus.len())
    );
    for v in &r.vtime {
        let c = &v.cal;
        let _ = write!(
            o,
            "| {} | {} | {} | {} | {} | {:.2}x | {} |",
            c.mode.map_or("-", |m| m.name()),
            c.scheme.map_or("-", |s| s.name()),
            c.lock.map_or("-", |l| l.name()),
            pct(v.err_1cpu),
            pct(v.err_2cpu),
            v.host_speedup_2,
            pct(v.err_2cpu_host)
        );
        for p in &v.projected {
            let _ = write!(o, " {:.0} |", p.tasks_per_s);
        }
        let busiest = v.projected.last().and_then(|p| {
            (0..3)
                .max_by(|&a, &b| p.locks[a].hold_ns.total_cmp(&p.locks[b].hold_ns))
                .map(|i| {
                    let l = p.locks[i];
                    format!(
                        "{} {:.0}% occupied, {:.0}% of acq. waited",
                        vtime::LOCK_NAMES[i],
                        100.0 * l.hold_ns / p.makespan_ns.max(1.0),
                        100.0 * l.contended as f64 / l.acquisitions.max(1) as f64
                    )
                })
        });
        let _ = writeln!(o, " {} |", busiest.unwrap_or_default());
    }
    let _ = writeln!(
        o,
        "\n### Calibration (per-operation costs measured on this machine)\n"
    );
    let _ = writeln!(
        o,
        "| mode | scheme | lock | task | zone acq/task × hold | mmlist acq/task × hold | pgd_lock acq/task × hold | alloc hit | alloc miss | prop/pgd | xfer | mutex wake |"
    );
    let _ = writeln!(o, "|---|---|---|---|---|---|---|---|---|---|---|---|");
    for v in &r.vtime {
        let c = &v.cal;
        let _ = writeln!(
            o,
            "| {} | {} | {} | {} | {:.1} × {} | {:.2} × {} | {:.3} × {} | {} | {} | {} | {} | {} |",
            c.mode.map_or("-", |m| m.name()),
            c.scheme.map_or("-", |s| s.name()),
            c.lock.map_or("-", |l| l.name()),
            us(c.task_ns),
            c.acq_per_task[0],
            us(c.hold_ns[0]),
            c.acq_per_task[1],
            us(c.hold_ns[1]),
            c.acq_per_task[2],
            us(c.hold_ns[2]),
            us(c.alloc_hit_ns),
            us(c.alloc_miss_ns),
            us(c.prop_per_pgd_ns),
            us(c.xfer_ns),
            us(c.wake_ns)
        );
    }
    if let Some(s) = r.default_run_s {
        let _ = writeln!(o, "\ndefault `pgdcache` run (compare): {s:.1} s");
    }
    let _ = writeln!(o, "\n### Targets\n");
    let _ = writeln!(o, "| target | goal | measured | met |");
    let _ = writeln!(o, "|---|---|---|---|");
    for t in &r.targets {
        let _ = writeln!(
            o,
            "| {} | {} | {} | {} |",
            t.name,
            t.goal,
            t.measured,
            if t.met { "yes" } else { "**no**" }
        );
    }
    o
}
