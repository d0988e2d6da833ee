//! The whole benchmark suite behind `pgdcache bench`: micro-measurements
//! with their same-run baselines, the real SMP sweep, the virtual-time
//! projection with its validation, and the seed's targets checked against
//! the measured ratios.

use crate::alloc32::{self, AllocatorRow};
use crate::floor::CacheFloor;
use crate::host::HostProbe;
use crate::micro::{
    self, AllocFree, CpaCycle, ForkExit, ForkExitFreePgd, Freelist, MicroError, Ratio, Subject,
    Timing,
};
use crate::smp::{self, SmpRow};
use crate::targets::{targets, Target};
use crate::vtime::{self, Calibration, VResult};
use benchstats::Rounds;
use pgdcache::{LockKind, Scheme};
use sim::SimError;
use std::time::{Duration, Instant};
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
    /// Interleaved rounds every micro-measurement runs at least. Every
    /// ratio is paired: the median over rounds of the two sides' per-round
    /// ratio, so load that comes and goes on a shared host hits both sides
    /// of a ratio alike.
    pub rounds: usize,
    /// The cap of adaptive rounds: more rounds are added (a quarter more
    /// at a time) while a measurement's paired ratios have an
    /// inter-quartile range wider than `narrow_iqr` of their median.
    pub max_rounds: usize,
    /// Relative inter-quartile range at which a paired ratio is narrow
    /// enough to stop adding rounds.
    pub narrow_iqr: f64,
    /// 32-byte alloc + free pairs per round (objcache vs `malloc`).
    pub alloc32_iters: u64,
    /// Wall time of each host probe's calibrated spin, ms.
    pub probe_ms: u64,
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
    /// The adaptive round counts of a micro-measurement.
    pub fn rounds(&self) -> Rounds {
        Rounds {
            min: self.rounds,
            max: self.max_rounds,
            narrow: self.narrow_iqr,
        }
    }

    /// The quick default (well under a minute on two cores).
    pub fn quick() -> Settings {
        Settings {
            rounds: 7,
            max_rounds: 45,
            narrow_iqr: 0.05,
            alloc32_iters: 100_000,
            probe_ms: 250,
            alloc_iters: 20_000,
            fork_small_iters: 2_000,
            fork_large_iters: 24,
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
            max_rounds: 101,
            alloc32_iters: 500_000,
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

/// The object-cache pairs of one mode's `pgd_alloc` + `pgd_free` alone
/// ([`crate::floor::CacheFloor`]), measured in the same rounds as the pgd
/// pairs: the floor under them.
#[derive(Clone, Debug, serde::Serialize)]
pub struct AllocFloorRow {
    /// Mode.
    pub mode: PagingMode,
    /// Objects taken and given back per operation (1; 4 on PAE: the pgd,
    /// and three pmds as one batch).
    pub pairs: usize,
    /// ns per operation.
    pub ns: Timing,
    /// `uncached` time / this time: the most any scheme with these cache
    /// operations could be.
    pub vs_uncached: f64,
    /// Inter-quartile range of the per-round `vs_uncached` ratios.
    pub vs_uncached_iqr: (f64, f64),
    /// This time / bare freelist time.
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

/// The limit of a mode's small-task fork + exit: the same fork + exit
/// with a pgd that costs nothing ([`ForkExitFreePgd`]: popped from and
/// pushed back to a bare `Vec` of preconstructed pgds), measured in the
/// same interleaved rounds as the schemes. No pgd scheme's fork + exit
/// can beat `uncached` by more than `small_vs_uncached`.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ForkLimitRow {
    /// Mode.
    pub mode: PagingMode,
    /// Small task, ns per fork + exit.
    pub small: Timing,
    /// `uncached` / this (small): the highest ratio any pgd scheme can reach.
    pub small_vs_uncached: f64,
    /// Inter-quartile range of the per-round ratios.
    pub small_vs_uncached_iqr: (f64, f64),
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

/// Everything the suite measured.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Report {
    /// Settings.
    pub settings: Settings,
    /// The host probed before and after the measurements.
    pub host: Host,
    /// Bare freelist pop + push, ns, per mode.
    pub freelist: Freelists,
    /// pgd_alloc + pgd_free.
    pub alloc: Vec<AllocRow>,
    /// The object-cache pairs of a pgd pair alone, per mode, paired with
    /// `alloc`'s rounds: the floor under the pgd pairs.
    pub alloc_floor: Vec<AllocFloorRow>,
    /// fork + exit.
    pub fork: Vec<ForkRow>,
    /// fork + exit of a small task with a free pgd, per mode: the limit of
    /// the small-task fork + exit targets.
    pub fork_limit: Vec<ForkLimitRow>,
    /// cpa propagation.
    pub cpa: Vec<CpaRow>,
    /// The object cache's 32-byte pair against `malloc`.
    pub alloc32: Vec<AllocatorRow>,
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

/// The host probe before and after the suite.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Host {
    /// Before the first measurement.
    pub before: HostProbe,
    /// After the last.
    pub after: HostProbe,
    /// Either probe found the host busy ([`HostProbe::busy`]).
    pub busy: bool,
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

/// The paired ratios a measurement of `schemes` (then, at `extra`, a
/// baseline such as the bare freelist) watches while adding rounds:
/// `uncached` against every other scheme, every scheme against `extra`.
fn baseline_pairs(schemes: &[Scheme], extra: Option<usize>) -> Vec<(usize, usize)> {
    let unc = schemes.iter().position(|&x| x == Scheme::Uncached);
    let mut v: Vec<(usize, usize)> = (0..schemes.len())
        .filter(|&i| Some(i) != unc)
        .filter_map(|i| unc.map(|u| (u, i)))
        .collect();
    if let Some(e) = extra {
        v.extend((0..schemes.len()).map(|i| (i, e)));
    }
    v
}

/// What [`alloc_rows`] measured.
pub struct AllocMeasured {
    /// The bare freelist per mode.
    pub freelist: Freelists,
    /// Every scheme's pair.
    pub rows: Vec<AllocRow>,
    /// The object-cache floor per mode.
    pub floor: Vec<AllocFloorRow>,
}

/// Measures `pgd_alloc` + `pgd_free` of every scheme, the bare freelist and
/// the object-cache floor ([`crate::floor`]), interleaved per mode.
pub fn alloc_rows(s: &Settings, tick: &mut dyn FnMut()) -> Result<AllocMeasured, MicroError> {
    let mut out = AllocMeasured {
        freelist: Vec::new(),
        rows: Vec::new(),
        floor: Vec::new(),
    };
    for mode in MODES {
        let schemes = schemes_of(mode);
        let mut subjects: Vec<AllocFree> = schemes
            .iter()
            .map(|&sc| AllocFree::new(mode, sc))
            .collect::<Result<_, _>>()?;
        let mut free = Freelist::new(mode)?;
        let mut floor = CacheFloor::new(mode)?;
        let pairs_per_op = floor.pairs();
        let mut refs: Vec<&mut dyn Subject> = Vec::new();
        for a in subjects.iter_mut() {
            refs.push(a);
        }
        let (fi, li) = (schemes.len(), schemes.len() + 1);
        refs.push(&mut free);
        refs.push(&mut floor);
        let unc = schemes.iter().position(|&x| x == Scheme::Uncached);
        let mut pairs = baseline_pairs(&schemes, Some(fi));
        pairs.push((li, fi));
        pairs.extend(unc.map(|u| (u, li)));
        let t = micro::adaptive_rounds(&mut refs, &s.rounds(), &pairs, s.alloc_iters)?;
        let (Some(ft), Some(lt)) = (t.get(fi), t.get(li)) else {
            return Err(MicroError::Kernel {
                what: "alloc",
                why: "no measurement".into(),
            });
        };
        for (i, &scheme) in schemes.iter().enumerate() {
            let vs_unc = unc.map(|u| Ratio::paired(&t[u], &t[i]));
            let vs_free = Ratio::paired(&t[i], ft);
            out.rows.push(AllocRow {
                mode,
                scheme,
                ns: Timing::of(t[i].clone()),
                vs_uncached: vs_unc.map_or(0.0, |r| r.median),
                vs_uncached_iqr: vs_unc.map_or((0.0, 0.0), |r| (r.q1, r.q3)),
                vs_freelist: vs_free.median,
                vs_freelist_iqr: (vs_free.q1, vs_free.q3),
            });
        }
        let vs_unc = unc.map(|u| Ratio::paired(&t[u], lt));
        let vs_free = Ratio::paired(lt, ft);
        out.floor.push(AllocFloorRow {
            mode,
            pairs: pairs_per_op,
            ns: Timing::of(lt.clone()),
            vs_uncached: vs_unc.map_or(0.0, |r| r.median),
            vs_uncached_iqr: vs_unc.map_or((0.0, 0.0), |r| (r.q1, r.q3)),
            vs_freelist: vs_free.median,
            vs_freelist_iqr: (vs_free.q1, vs_free.q3),
        });
        out.freelist.push((mode, Timing::of(ft.clone())));
        tick();
    }
    Ok(out)
}

/// fork + exit of a small and a large task, every scheme, interleaved;
/// the small task's rounds also time the same fork + exit with a free pgd
/// (the limit row, [`ForkLimitRow`]).
pub fn fork_rows(
    s: &Settings,
    tick: &mut dyn FnMut(),
) -> Result<(Vec<ForkRow>, Vec<ForkLimitRow>), MicroError> {
    let mut rows = Vec::new();
    let mut limits = Vec::new();
    for mode in MODES {
        let schemes = schemes_of(mode);
        let unc = schemes.iter().position(|&x| x == Scheme::Uncached);
        let mut res = Vec::new();
        for (pages, iters, ram, limit) in [
            (s.task_pages.0, s.fork_small_iters, 64u64 << 20, true),
            (s.task_pages.1, s.fork_large_iters, 256u64 << 20, false),
        ] {
            let mut subjects: Vec<ForkExit> = schemes
                .iter()
                .map(|&sc| ForkExit::new(mode, sc, pages, ram))
                .collect::<Result<_, _>>()?;
            let mut free = match limit {
                true => Some(ForkExitFreePgd::new(mode, pages, ram)?),
                false => None,
            };
            let mut refs: Vec<&mut dyn Subject> = Vec::new();
            for a in subjects.iter_mut() {
                refs.push(a);
            }
            let mut pairs = baseline_pairs(&schemes, None);
            if let Some(f) = free.as_mut() {
                // The limit is the last subject, paired with `uncached`.
                pairs.extend(unc.map(|u| (u, refs.len())));
                refs.push(f);
            }
            res.push(micro::adaptive_rounds(
                &mut refs,
                &s.rounds(),
                &pairs,
                iters,
            )?);
            tick();
        }
        let zero_nan = |x: f64| if x.is_nan() { 0.0 } else { x };
        let vs = |v: &[Vec<f64>], i: usize| {
            unc.map_or(Ratio::default(), |j| Ratio::paired(&v[j], &v[i]))
        };
        for (i, &scheme) in schemes.iter().enumerate() {
            let (small, large) = (vs(&res[0], i), vs(&res[1], i));
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
        if let Some(t) = res[0].get(schemes.len()) {
            let r = vs(&res[0], schemes.len());
            limits.push(ForkLimitRow {
                mode,
                small: Timing::of(t.clone()),
                small_vs_uncached: zero_nan(r.median),
                small_vs_uncached_iqr: (zero_nan(r.q1), zero_nan(r.q3)),
            });
        }
    }
    Ok((rows, limits))
}

/// cpa split + revert with `pgds` pgds, all cached and 10 % live.
pub fn cpa_rows(s: &Settings, tick: &mut dyn FnMut()) -> Result<Vec<CpaRow>, MicroError> {
    let mut rows = Vec::new();
    for &n in &s.cpa_pgds {
        for live in [0, n.div_ceil(10)] {
            let mut a = CpaCycle::new(PagingMode::TwoLevel, Scheme::SlabPgdList, n, live)?;
            let mut b = CpaCycle::new(PagingMode::TwoLevel, Scheme::SlabTicket, n, live)?;
            // About 2 ms of pgd-list work per round.
            let iters = (200_000 / n.max(1) as u64).clamp(4, 2_000);
            let t = micro::adaptive_rounds(&mut [&mut a, &mut b], &s.rounds(), &[(0, 1)], iters)?;
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
            tick();
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
pub fn smp_and_vtime(
    s: &Settings,
    tick: &mut dyn FnMut(),
) -> Result<(Vec<SmpRow>, Vec<VtimeRow>), BenchError> {
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
                tick();
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

/// Where the suite is: `done` of `total` steps, now in `phase`.
#[derive(Clone, Copy, Debug)]
pub struct Step {
    /// What is being measured.
    pub phase: &'static str,
    /// Steps done.
    pub done: usize,
    /// Steps in all.
    pub total: usize,
}

/// The steps of a run of `s`: the two host probes, each mode of the pgd
/// pair, each mode × task size of fork+exit, each cpa row, the allocator
/// pair, each SMP (mode, scheme, lock), the default run.
pub fn steps(s: &Settings) -> usize {
    let smp: usize = s
        .smp_modes
        .iter()
        .map(|&m| {
            smp_schemes()
                .iter()
                .filter(|sc| sc.supports(m).is_ok())
                .count()
                * LockKind::ALL.len()
        })
        .sum();
    2 + MODES.len()
        + 2 * MODES.len()
        + 2 * s.cpa_pgds.len()
        + 1
        + smp
        + usize::from(s.time_default_run)
}

/// Counts steps and tells `progress`.
struct Ticker<F> {
    progress: F,
    phase: &'static str,
    done: usize,
    total: usize,
}

impl<F: FnMut(Step)> Ticker<F> {
    fn phase(&mut self, phase: &'static str) {
        self.phase = phase;
        self.tell();
    }
    fn tick(&mut self) {
        self.done += 1;
        self.tell();
    }
    fn tell(&mut self) {
        (self.progress)(Step {
            phase: self.phase,
            done: self.done.min(self.total),
            total: self.total,
        });
    }
}

/// Runs the suite; `progress` hears of every step ([`steps`] in all).
pub fn run(s: &Settings, progress: impl FnMut(Step)) -> Result<Report, BenchError> {
    let t0 = Instant::now();
    let mut p = Ticker {
        progress,
        phase: "host probe",
        done: 0,
        total: steps(s),
    };
    p.tell();
    let probe = Duration::from_millis(s.probe_ms);
    let before = HostProbe::take(probe);
    p.tick();
    p.phase("pgd_alloc + pgd_free");
    let AllocMeasured {
        freelist,
        rows: alloc,
        floor: alloc_floor,
    } = alloc_rows(s, &mut || p.tick())?;
    p.phase("fork + exit");
    let (fork, fork_limit) = fork_rows(s, &mut || p.tick())?;
    p.phase("change_page_attr propagation");
    let cpa = cpa_rows(s, &mut || p.tick())?;
    p.phase("objcache vs malloc, 32-byte pair");
    let alloc32 = alloc32::rows(&s.rounds(), s.alloc32_iters)?;
    p.tick();
    p.phase("SMP script workload (real threads) and virtual-time model");
    let (smp, vtime) = smp_and_vtime(s, &mut || p.tick())?;
    let default_run_s = if s.time_default_run {
        p.phase("default pgdcache run (compare)");
        let t = Instant::now();
        sim::compare(&sim::CompareSpec::default(), |_| {})?;
        p.tick();
        Some(t.elapsed().as_secs_f64())
    } else {
        None
    };
    p.phase("host probe");
    let after = HostProbe::take(probe);
    p.tick();
    let busy = before.busy() || after.busy();
    let mut r = Report {
        settings: s.clone(),
        host: Host {
            before,
            after,
            busy,
        },
        freelist,
        alloc,
        alloc_floor,
        fork,
        fork_limit,
        cpa,
        alloc32,
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
