//! Every scheme × {2-level, PAE} on one workload, side by side.
//!
//! Each row is one [`crate::run()`] with the same workload, CPUs, task count
//! and seed. The verdict is `correct` (no violation, live or final), `caught
//! <kind>` (the kind of the first violation), or `n/a` for a combination that
//! cannot exist — `shared-kernel` on 2-level, where the kernel's 4 MiB pages
//! live in the pgd itself and there is no lower level to share. Speed-up is
//! tasks/s over `uncached` in the same mode.
//!
//! Verdicts and timings come from runs in different configurations: the
//! verdict (and each row's `report`) from a run with freed-frame poisoning
//! on (the debug configuration every checked run uses), the timings
//! (tasks/s, bytes per alloc, speed-up, [`Timing`]) from a second run of the
//! same configuration with poisoning off (the production configuration, as
//! `pgdcache bench` times). Each row says which ([`CompareRow::poisoning`]).
//! With [`CompareSpec::timing_poisoning`] set, one run with poisoning on
//! gives both, as before.

use crate::config::{CpaRate, SimConfig, SimError, Workload};
use crate::report::{Latency, RunReport, Verdict};
use pgdcache::{KernelError, LockKind, Scheme};
use x86paging::PagingMode;

/// What to compare.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CompareSpec {
    /// Workload.
    pub workload: Workload,
    /// Paging modes (rows are grouped by mode).
    pub modes: Vec<PagingMode>,
    /// Schemes.
    pub schemes: Vec<Scheme>,
    /// Lock kind.
    pub lock: LockKind,
    /// CPUs.
    pub cpus: usize,
    /// Tasks per run (`None`: the workload's compare default).
    pub ops: Option<u64>,
    /// Pages per task (`None`: the workload's default).
    pub task_pages: Option<u64>,
    /// Seed.
    pub seed: u64,
    /// Simulated RAM per run (`None`: the workload's default).
    #[serde(default)]
    pub ram: Option<u64>,
    /// Graphics-agent rate (`None`: the workload's default).
    #[serde(default)]
    pub cpa_rate: Option<CpaRate>,
    /// Freed-frame poisoning of the timing runs (default off, the
    /// production configuration). The verdict runs always poison; with
    /// this on, each row's one run gives both its verdict and its timings.
    #[serde(default)]
    pub timing_poisoning: bool,
}

impl Default for CompareSpec {
    fn default() -> Self {
        CompareSpec {
            workload: Workload::Script,
            modes: vec![PagingMode::TwoLevel, PagingMode::Pae],
            schemes: Scheme::ALL.to_vec(),
            lock: LockKind::Tas,
            cpus: 2,
            ops: None,
            task_pages: None,
            seed: 1,
            ram: None,
            cpa_rate: None,
            timing_poisoning: false,
        }
    }
}

impl CompareSpec {
    /// Tasks per run when `ops` is not given: sized so the default compare
    /// (9 rows) finished in about 3–5 s on two cores in release when each
    /// row was one run; each row is now a verdict run and a timing run.
    pub fn default_ops(workload: Workload) -> u64 {
        match workload {
            Workload::Kernbench => 60,
            Workload::Mixed => 2_500,
            _ => 8_000,
        }
    }

    /// The configuration of one row's timing run: the verdict run's
    /// ([`CompareSpec::config`]) with `timing_poisoning`.
    pub fn timing_config(&self, mode: PagingMode, scheme: Scheme) -> SimConfig {
        SimConfig {
            poisoning: self.timing_poisoning,
            ..self.config(mode, scheme)
        }
    }

    /// Whether a row needs a second run for its timings.
    pub fn separate_timing(&self) -> bool {
        !self.timing_poisoning
    }

    /// The run configuration of one row (its verdict run: poisoning on).
    pub fn config(&self, mode: PagingMode, scheme: Scheme) -> SimConfig {
        let mut c = SimConfig::for_workload(self.workload, mode, scheme);
        c.lock = self.lock;
        c.cpus = self.cpus;
        c.ops = self.ops.unwrap_or_else(|| Self::default_ops(self.workload));
        c.task_pages = self.task_pages;
        c.seed = self.seed;
        c.poisoning = true;
        if let Some(r) = self.ram {
            c.ram = r;
        }
        if let Some(r) = self.cpa_rate {
            c.cpa_rate = r;
        }
        c
    }

    /// Refuses a comparison of nothing: an empty or repeated mode or
    /// scheme list, or a row configuration the simulator cannot run.
    pub fn validate(&self) -> Result<(), SimError> {
        let empty = |what: &'static str, allowed: &str| SimError::BadValue {
            what,
            value: "[]".into(),
            allowed: format!("at least one of {allowed}"),
        };
        if self.modes.is_empty() {
            return Err(empty("modes", "2level, pae, 4level, 5level"));
        }
        if self.schemes.is_empty() {
            return Err(empty(
                "schemes",
                "uncached, slab-unsynced, slab-pgd-list, slab-ticket, slab-prepopulated, shared-kernel",
            ));
        }
        for (i, m) in self.modes.iter().enumerate() {
            if self.modes[..i].contains(m) {
                return Err(SimError::BadValue {
                    what: "modes",
                    value: m.to_string(),
                    allowed: "each mode once".into(),
                });
            }
        }
        for (i, s) in self.schemes.iter().enumerate() {
            if self.schemes[..i].contains(s) {
                return Err(SimError::BadValue {
                    what: "schemes",
                    value: s.to_string(),
                    allowed: "each scheme once".into(),
                });
            }
        }
        for &mode in &self.modes {
            for &scheme in &self.schemes {
                self.config(mode, scheme).validate()?;
            }
        }
        Ok(())
    }
}

/// Freed-frame poisoning of a row's two runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Poisoning {
    /// Of the run the verdict and `report` come from (always on).
    pub verdict: bool,
    /// Of the run the timings come from.
    pub timing: bool,
}

/// The timings of a row, from its timing run.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Timing {
    /// Tasks completed.
    pub tasks: u64,
    /// Wall-clock seconds.
    pub wall_s: f64,
    /// Tasks per second.
    pub tasks_per_s: f64,
    /// Bytes blitted per `pgd_alloc`.
    pub bytes_per_alloc: f64,
    /// fork latency.
    pub fork: Latency,
    /// exec latency.
    pub exec: Latency,
    /// exit latency.
    pub exit: Latency,
    /// Sampled `pgd_alloc` latency.
    pub pgd_alloc: Latency,
    /// Sampled `pgd_free` latency.
    pub pgd_free: Latency,
}

impl Timing {
    fn of(r: &RunReport) -> Timing {
        Timing {
            tasks: r.tasks,
            wall_s: r.wall_s,
            tasks_per_s: r.tasks_per_s,
            bytes_per_alloc: r.bytes_per_alloc,
            fork: r.fork,
            exec: r.exec,
            exit: r.exit,
            pgd_alloc: r.pgd_alloc,
            pgd_free: r.pgd_free,
        }
    }
}

/// One row of the comparison.
#[derive(Clone, Debug, serde::Serialize)]
pub struct CompareRow {
    /// Mode.
    pub mode: PagingMode,
    /// Scheme.
    pub scheme: Scheme,
    /// Verdict.
    pub verdict: Verdict,
    /// Tasks per second (of the timing run).
    pub tasks_per_s: f64,
    /// Bytes blitted per `pgd_alloc` (of the timing run).
    pub bytes_per_alloc: f64,
    /// Tasks/s over `uncached` in the same mode (timing runs).
    pub speedup_vs_uncached: Option<f64>,
    /// Freed-frame poisoning of the verdict run and of the timing run.
    pub poisoning: Poisoning,
    /// The timing run's figures (absent for n/a and errors).
    pub timing: Option<Timing>,
    /// Live violations + final-check violations.
    pub violations: u64,
    /// Leaked frames at the end.
    pub leaked_frames: u64,
    /// The verdict run's full report (absent for n/a and errors).
    pub report: Option<RunReport>,
}

/// Runs the comparison; `each` is called after every row.
pub fn compare(
    spec: &CompareSpec,
    mut each: impl FnMut(&CompareRow),
) -> Result<Vec<CompareRow>, SimError> {
    spec.validate()?;
    let mut rows: Vec<CompareRow> = Vec::new();
    for &mode in &spec.modes {
        let first = rows.len();
        for &scheme in &spec.schemes {
            let cfg = spec.config(mode, scheme);
            cfg.validate()?;
            let poisoning = Poisoning {
                verdict: cfg.poisoning,
                timing: spec.timing_config(mode, scheme).poisoning,
            };
            // The verdict run, then (unless it is also the timing run) the
            // timing run of the same configuration without poisoning.
            let runs = crate::run(&cfg).and_then(|r| {
                let t = if spec.separate_timing() {
                    let tc = spec.timing_config(mode, scheme);
                    tc.validate()?;
                    Timing::of(&crate::run(&tc)?)
                } else {
                    Timing::of(&r)
                };
                Ok((r, t))
            });
            let row = match runs {
                Ok((r, t)) => CompareRow {
                    mode,
                    scheme,
                    verdict: r.verdict.clone(),
                    tasks_per_s: t.tasks_per_s,
                    bytes_per_alloc: t.bytes_per_alloc,
                    speedup_vs_uncached: None,
                    poisoning,
                    timing: Some(t),
                    violations: r.live_violations.total() + r.final_check.total(),
                    leaked_frames: r.final_check.leaked_frames,
                    report: Some(r),
                },
                Err(e) => {
                    let verdict = match &e {
                        SimError::Kernel(KernelError::SchemeUnsupported { why, .. }) => {
                            Verdict::NotApplicable((*why).to_string())
                        }
                        other => Verdict::Error(other.to_string()),
                    };
                    CompareRow {
                        mode,
                        scheme,
                        verdict,
                        tasks_per_s: 0.0,
                        bytes_per_alloc: 0.0,
                        speedup_vs_uncached: None,
                        poisoning,
                        timing: None,
                        violations: 0,
                        leaked_frames: 0,
                        report: None,
                    }
                }
            };
            each(&row);
            rows.push(row);
        }
        let base = rows[first..]
            .iter()
            .find(|r| r.scheme == Scheme::Uncached && r.report.is_some())
            .map(|r| r.tasks_per_s);
        if let Some(b) = base.filter(|&b| b > 0.0) {
            for r in &mut rows[first..] {
                if r.report.is_some() {
                    r.speedup_vs_uncached = Some(r.tasks_per_s / b);
                }
            }
        }
    }
    Ok(rows)
}

/// One line saying which configuration the verdicts and the timings of
/// `spec` come from.
pub fn configuration(spec: &CompareSpec) -> String {
    if spec.separate_timing() {
        "verdicts: runs with freed-frame poisoning on (debug); timings (tasks/s, B/alloc, speedup, alloc p50): separate runs with poisoning off (production)".to_string()
    } else {
        "verdicts and timings: the same runs, freed-frame poisoning on (debug)".to_string()
    }
}

/// A plain-text table of `rows`.
pub fn table(rows: &[CompareRow]) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<6} {:<17} {:<16} {:>10} {:>9} {:>8} {:>10} {:>10} {:>6}",
        "mode",
        "scheme",
        "verdict",
        "tasks/s",
        "B/alloc",
        "speedup",
        "alloc p50",
        "violations",
        "leaked"
    );
    for r in rows {
        let speed = r
            .speedup_vs_uncached
            .map(|s| format!("{s:.2}x"))
            .unwrap_or_else(|| "-".into());
        let p50 = r
            .timing
            .as_ref()
            .map(|x| format!("{}ns", x.pgd_alloc.p50_ns))
            .unwrap_or_else(|| "-".into());
        if r.report.is_none() {
            let why = match &r.verdict {
                Verdict::NotApplicable(w) | Verdict::Error(w) => w.as_str(),
                _ => "",
            };
            let _ = writeln!(
                out,
                "{:<6} {:<17} {:<16} {why}",
                r.mode.name(),
                r.scheme.name(),
                r.verdict.short()
            );
            continue;
        }
        let _ = writeln!(
            out,
            "{:<6} {:<17} {:<16} {:>10.0} {:>9.0} {:>8} {:>10} {:>10} {:>6}",
            r.mode.name(),
            r.scheme.name(),
            r.verdict.short(),
            r.tasks_per_s,
            r.bytes_per_alloc,
            speed,
            p50,
            r.violations,
            r.leaked_frames
        );
    }
    out
}
