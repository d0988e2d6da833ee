//! Every scheme × {2-level, PAE} on one workload, side by side.
//!
//! Each row is one [`crate::run()`] with the same workload, CPUs, task count
//! and seed. The verdict is `correct` (no violation, live or final), `caught
//! <kind>` (the kind of the first violation), or `n/a` for a combination that
//! cannot exist — `shared-kernel` on 2-level, where the kernel's 4 MiB pages
//! live in the pgd itself and there is no lower level to share. Speed-up is
//! tasks/s over `uncached` in the same mode.

use crate::config::{CpaRate, SimConfig, SimError, Workload};
use crate::report::{RunReport, Verdict};
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
        }
    }
}

impl CompareSpec {
    /// Tasks per run when `ops` is not given: sized so the default compare
    /// (9 runs) finishes in about 3–5 s on two cores in release.
    pub fn default_ops(workload: Workload) -> u64 {
        match workload {
            Workload::Kernbench => 60,
            Workload::Mixed => 2_500,
            _ => 8_000,
        }
    }

    /// The run configuration of one row.
    pub fn config(&self, mode: PagingMode, scheme: Scheme) -> SimConfig {
        let mut c = SimConfig::for_workload(self.workload, mode, scheme);
        c.lock = self.lock;
        c.cpus = self.cpus;
        c.ops = self.ops.unwrap_or_else(|| Self::default_ops(self.workload));
        c.task_pages = self.task_pages;
        c.seed = self.seed;
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

/// One row of the comparison.
#[derive(Clone, Debug, serde::Serialize)]
pub struct CompareRow {
    /// Mode.
    pub mode: PagingMode,
    /// Scheme.
    pub scheme: Scheme,
    /// Verdict.
    pub verdict: Verdict,
    /// Tasks per second.
    pub tasks_per_s: f64,
    /// Bytes blitted per `pgd_alloc`.
    pub bytes_per_alloc: f64,
    /// Tasks/s over `uncached` in the same mode.
    pub speedup_vs_uncached: Option<f64>,
    /// Live violations + final-check violations.
    pub violations: u64,
    /// Leaked frames at the end.
    pub leaked_frames: u64,
    /// The full report (absent for n/a and errors).
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
            let row = match crate::run(&cfg) {
                Ok(r) => CompareRow {
                    mode,
                    scheme,
                    verdict: r.verdict.clone(),
                    tasks_per_s: r.tasks_per_s,
                    bytes_per_alloc: r.bytes_per_alloc,
                    speedup_vs_uncached: None,
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
            .report
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
