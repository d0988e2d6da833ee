//! What a run measured: throughput, latencies, the pgd system's counters,
//! and every violation the live checks and the final checker found.
//!
//! Latencies are hdrhistogram summaries in nanoseconds. fork/exec/exit are
//! timed around `Kernel::fork_mm`/`exec_mm`/`exit_mm`. `pgd_alloc` and
//! `pgd_free` run *inside* those, so they are sampled separately: every
//! `sample_every` tasks a CPU times a direct `pgd_alloc` + `pgd_free` pair
//! (same cache, same CPU, same contention). The share of fork spent in
//! `pgd_alloc` is then estimated as mean `pgd_alloc` / mean fork.

use hdrhistogram::Histogram;
use objcache::CacheStats;
use pgdcache::KernelStats;
use pgdcache::ViolationKind;

/// A latency summary in nanoseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Latency {
    /// Samples.
    pub count: u64,
    /// Mean.
    pub mean_ns: f64,
    /// Median.
    pub p50_ns: u64,
    /// 99th percentile.
    pub p99_ns: u64,
    /// Maximum.
    pub max_ns: u64,
}

/// A latency recorder (a histogram from 1 ns to an hour, 2 significant digits).
#[derive(Debug)]
pub struct LatencyRecorder {
    h: Option<Histogram<u64>>,
}

impl Default for LatencyRecorder {
    fn default() -> Self {
        LatencyRecorder {
            // 1 ns .. 1 hour, 2 significant digits.
            h: Histogram::new_with_bounds(1, 3_600_000_000_000, 2).ok(),
        }
    }
}

impl LatencyRecorder {
    /// Records one duration.
    pub fn record(&mut self, d: std::time::Duration) {
        if let Some(h) = &mut self.h {
            let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX).max(1);
            h.saturating_record(ns);
        }
    }

    /// Adds another recorder's samples.
    pub fn merge(&mut self, other: &LatencyRecorder) {
        if let (Some(a), Some(b)) = (&mut self.h, &other.h) {
            let _ = a.add(b);
        }
    }

    /// The summary.
    pub fn summary(&self) -> Latency {
        match &self.h {
            Some(h) if !h.is_empty() => Latency {
                count: h.len(),
                mean_ns: h.mean(),
                p50_ns: h.value_at_quantile(0.5),
                p99_ns: h.value_at_quantile(0.99),
                max_ns: h.max(),
            },
            _ => Latency::default(),
        }
    }
}

/// Violations by kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ViolationCounts {
    /// A kernel access translated to the wrong physical address or with
    /// stale attributes (cacheability), or a pgd entry differs from swapper's.
    pub stale: u64,
    /// A walk reached a freed table, or an entry points at one.
    pub dangling: u64,
    /// A kernel access faulted where it must not (not a lazy vmalloc fault).
    pub fault: u64,
    /// A cached pgd/pmd not in constructed state (final check).
    pub not_constructed: u64,
    /// Frames leaked (final check).
    pub leak: u64,
    /// vmalloc pages that do not map their area's frame in swapper (final check).
    #[serde(default)]
    pub vmalloc_unmapped: u64,
    /// Freed frames written before their next allocation, seen by
    /// freed-frame poisoning (final check; reported once however many).
    #[serde(default)]
    pub use_after_free: u64,
}

impl ViolationCounts {
    /// The counts of a checker's report (leak: the larger of the frames
    /// leaked and the leak violations).
    pub fn from_report(r: &pgdcache::Report) -> ViolationCounts {
        let c = |k| r.count(k) as u64;
        ViolationCounts {
            stale: c(ViolationKind::Stale),
            dangling: c(ViolationKind::Dangling),
            fault: c(ViolationKind::Fault),
            not_constructed: c(ViolationKind::NotConstructed),
            leak: r.leaked_frames.max(c(ViolationKind::Leak)),
            vmalloc_unmapped: c(ViolationKind::VmallocUnmapped),
            use_after_free: c(ViolationKind::UseAfterFree),
        }
    }

    /// The count of `kind`.
    pub fn get(&self, kind: ViolationKind) -> u64 {
        match kind {
            ViolationKind::Stale => self.stale,
            ViolationKind::Dangling => self.dangling,
            ViolationKind::Fault => self.fault,
            ViolationKind::NotConstructed => self.not_constructed,
            ViolationKind::Leak => self.leak,
            ViolationKind::VmallocUnmapped => self.vmalloc_unmapped,
            ViolationKind::UseAfterFree => self.use_after_free,
        }
    }

    /// Adds `n` to the count of `kind`.
    pub fn add(&mut self, kind: ViolationKind, n: u64) {
        let c = match kind {
            ViolationKind::Stale => &mut self.stale,
            ViolationKind::Dangling => &mut self.dangling,
            ViolationKind::Fault => &mut self.fault,
            ViolationKind::NotConstructed => &mut self.not_constructed,
            ViolationKind::Leak => &mut self.leak,
            ViolationKind::VmallocUnmapped => &mut self.vmalloc_unmapped,
            ViolationKind::UseAfterFree => &mut self.use_after_free,
        };
        *c += n;
    }

    /// The worst kind present ([`ViolationKind::ALL`]'s order), if any.
    pub fn first_kind(&self) -> Option<ViolationKind> {
        ViolationKind::ALL.into_iter().find(|&k| self.get(k) > 0)
    }

    /// Total.
    pub fn total(&self) -> u64 {
        self.stale
            + self.dangling
            + self.fault
            + self.not_constructed
            + self.leak
            + self.vmalloc_unmapped
    }
}

/// The result of `Kernel::verify` after every thread stopped and every
/// task exited, and again after the closing conversion.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FinalCheck {
    /// Live pgds checked (should be 0: every task exited).
    pub live_pgds: usize,
    /// Cached pgds checked.
    pub cached_pgds: usize,
    /// vmalloc entries not faulted in yet (allowed).
    pub lazy_missing: usize,
    /// Cached slab-ticket pgds with an old ticket (allowed).
    pub known_stale: usize,
    /// Violations by kind.
    pub violations: ViolationCounts,
    /// Frames in use at the end (excluding reserved).
    pub frames_used: u64,
    /// Frames in use that nothing owns.
    pub leaked_frames: u64,
    /// The first few violations (of both checks).
    pub first: Vec<String>,
    /// The checker after the closing conversion, if the run had a
    /// graphics agent.
    pub closing_cpa: Option<ClosingCheck>,
}

impl FinalCheck {
    /// Violations of both checks.
    pub fn total(&self) -> u64 {
        self.violations.total()
            + self
                .closing_cpa
                .as_ref()
                .map_or(0, |c| c.violations.total())
    }
}

/// The closing conversions: once every task has exited, every pgd the
/// kernel owns sits in the cache. The graphics agent's targets are then
/// split to uncached 4 KiB pages and the checker walks every pgd; then they
/// are merged back into large pages and it walks them again.
///
/// Under live load the seed's bug shows only when a conversion lands in the
/// short window a pgd spends in the cache (a freed pgd is usually the next
/// one allocated on its CPU); here every pgd is in that window, so a scheme
/// that forgets cached pgds is caught in every run, whatever the host's
/// timing. For the correct schemes it checks that both directions of a
/// conversion reach a cache full of pgds.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ClosingCheck {
    /// Cached pgds checked.
    pub cached_pgds: usize,
    /// Cached slab-ticket pgds with an old ticket (allowed), at most.
    pub known_stale: usize,
    /// Violations found after the split plus after the merge (leak: the
    /// larger of the two).
    pub violations: ViolationCounts,
    /// Frames in use that nothing owns, at most.
    pub leaked_frames: u64,
}

/// The page allocator's lock over a run: how often `zone->lock` was taken
/// and how the CPUs' page lists ([`physmem::pcp`]) spared it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ZoneReport {
    /// Frames a list moves per trip to the zone.
    pub pcp_batch: u32,
    /// A list that reaches this many frames gives a batch back.
    pub pcp_high: u32,
    /// Acquisitions of `zone->lock` during the run (boot excluded).
    pub zone_locks: u64,
    /// Of which refills of a CPU's list.
    pub refills: u64,
    /// Of which trims of a CPU's list.
    pub trims: u64,
}

/// The verdict of a run.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// No violation of any kind.
    Correct,
    /// Violations; the kind of the first one.
    Caught(ViolationKind),
    /// The combination cannot exist.
    NotApplicable(String),
    /// The run failed.
    Error(String),
}

impl Verdict {
    /// Short text for tables: `correct`, `caught stale`, `n/a`, `error`.
    pub fn short(&self) -> String {
        match self {
            Verdict::Correct => "correct".into(),
            Verdict::Caught(k) => format!("caught {k}"),
            Verdict::NotApplicable(_) => "n/a".into(),
            Verdict::Error(_) => "error".into(),
        }
    }

    /// True for `correct`.
    pub fn is_correct(&self) -> bool {
        matches!(self, Verdict::Correct)
    }

    /// True for `caught …`.
    pub fn is_caught(&self) -> bool {
        matches!(self, Verdict::Caught(_))
    }
}

/// One point of a run's timeline ([`crate::run::run_with_timeline`]),
/// sampled by the thread that watches the CPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TimelineSample {
    /// Seconds since the CPUs started.
    pub t_s: f64,
    /// Tasks completed so far.
    pub tasks: u64,
    /// Large-page conversions so far (`set_pmd_pte` calls: every split and
    /// every revert of a direct-map large page).
    pub conversions: u64,
    /// Live pgds (address spaces on `mmlist`).
    pub pgds_live: usize,
    /// Constructed pgds sitting in the pgd cache, not in use (0 where pgds
    /// are pages).
    pub pgds_cached: usize,
    /// Stale or dangling kernel entries the CPUs' live checks found so far.
    pub stale_found: u64,
}

/// What stopped a run early (out of simulated memory, an agent's error):
/// the run unwound — every task exited — and the checker and the frame
/// accounting still ran, so the report says what failed, where, and what
/// was left behind.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Failure {
    /// Where: `cpu 1 fork`, `graphics agent`, ...
    pub at: String,
    /// The error.
    pub why: String,
}

impl core::fmt::Display for Failure {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{}: {}", self.at, self.why)
    }
}

/// Everything one run measured.
#[derive(Clone, Debug, serde::Serialize)]
pub struct RunReport {
    /// The configuration.
    pub config: crate::SimConfig,
    /// Tasks completed.
    pub tasks: u64,
    /// Wall time of the task phase, seconds.
    pub wall_s: f64,
    /// Tasks per second.
    pub tasks_per_s: f64,
    /// fork (`fork_mm`) latency.
    pub fork: Latency,
    /// exec (`exec_mm`) latency.
    pub exec: Latency,
    /// exit (`exit_mm`) latency.
    pub exit: Latency,
    /// Sampled direct `pgd_alloc` latency.
    pub pgd_alloc: Latency,
    /// Sampled direct `pgd_free` latency.
    pub pgd_free: Latency,
    /// Estimated share of fork time spent in `pgd_alloc`.
    pub pgd_alloc_share_of_fork: f64,
    /// Bytes zeroed or copied per `pgd_alloc` (alloc path plus ctors).
    pub bytes_per_alloc: f64,
    /// The pgd system's counters (ctor/dtor calls, lock figures, conversions).
    pub kernel: KernelStats,
    /// Slab caches at the end.
    pub slab: Vec<CacheStats>,
    /// The page allocator's lock.
    pub zone: ZoneReport,
    /// Graphics-agent toggles (each: every target page uncached or back, then a flush).
    pub cpa_toggles: u64,
    /// vmalloc + vfree calls by the vmalloc agent.
    pub vmalloc_ops: u64,
    /// Flush IPIs (`global_flush_tlb` and `vfree`).
    pub flush_ipis: u64,
    /// Kernel accesses checked through the CPUs' pgds.
    pub accesses: u64,
    /// Of which served by a TLB.
    pub tlb_hits: u64,
    /// Violations the live CPU accesses saw.
    pub live_violations: ViolationCounts,
    /// The first few live violations.
    pub first_live: Vec<String>,
    /// The final checker.
    pub final_check: FinalCheck,
    /// The verdict.
    pub verdict: Verdict,
    /// The timeline, when asked for ([`crate::run::run_with_timeline`];
    /// left out of the JSON when empty).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub timeline: Vec<TimelineSample>,
    /// What stopped the run early, if anything (the verdict is then
    /// `error`, and `final_check` is what the checker found afterwards).
    pub failure: Option<Failure>,
}
