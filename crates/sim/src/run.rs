//! One simulation run: boot a kernel, start the CPUs and the agents, run the
//! workload, stop everything, exit every task, and check.
//!
//! CPU threads run tasks; after each fork and exec they switch CR3 to the
//! new address space and touch kernel addresses through it with the
//! software MMU ([`crate::access`]). The graphics agent (`change_page_attr`
//! of two direct-map pages to uncached and back, `global_flush_tlb` after
//! each) and the vmalloc agent (`vmalloc`/`vfree`) are extra threads, paced
//! by completed tasks (or continuous), so their activity per task is
//! independent of machine speed.

use crate::access::{Checker, VmAreas};
use crate::config::{CpaRate, SimConfig, SimError, Workload};
use crate::report::{
    ClosingCheck, Failure, FinalCheck, LatencyRecorder, RunReport, TimelineSample, Verdict,
    ViolationCounts, ZoneReport,
};
use crate::rng::Rng;
use crate::smp::Smp;
use pgdcache::mm::{Mm, TaskSize};
use pgdcache::{Kernel, KernelConfig, PgdCpu};
use physmem::{SimMemory, VirtAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use x86paging::{Access, EntryFlags};

/// Progress callback: tasks done, tasks planned (`u64::MAX` when bounded by time).
pub type Progress<'a> = &'a (dyn Fn(u64, u64) + Sync);

/// TLB entries per CPU.
const TLB_ENTRIES: usize = 16;

/// The graphics agent's shared state: a seqlock over what it last committed.
#[derive(Debug)]
pub struct Gfx {
    /// Odd while a `change_page_attr` + flush is in flight.
    pub seq: AtomicU64,
    /// The committed state of the target pages.
    pub uncached: AtomicBool,
    /// The target pages (direct map, in two different large pages).
    pub targets: Vec<VirtAddr>,
    /// Completed toggles.
    pub toggles: AtomicU64,
}

/// State shared by every thread of a run.
pub(crate) struct World {
    pub(crate) kernel: Kernel,
    pub(crate) smp: Arc<Smp>,
    pub(crate) cfg: SimConfig,
    pub(crate) gfx: Gfx,
    pub(crate) areas: VmAreas,
    pub(crate) checker: Checker,
    stop_cpus: AtomicBool,
    stop_agents: AtomicBool,
    claimed: AtomicU64,
    done: AtomicU64,
    vm_ops: AtomicU64,
    error: parking_lot::Mutex<Option<SimError>>,
    deadline: Option<Instant>,
}

impl World {
    /// What the live checker reads.
    fn machine(&self) -> crate::access::Machine<'_> {
        crate::access::Machine {
            kernel: &self.kernel,
            gfx: &self.gfx,
            smp: &self.smp,
            areas: &self.areas,
        }
    }

    fn fail(&self, e: SimError) {
        let mut slot = self.error.lock();
        if slot.is_none() {
            *slot = Some(e);
        }
        self.stop_cpus.store(true, Ordering::Release);
    }

    fn cpus_should_stop(&self) -> bool {
        self.stop_cpus.load(Ordering::Acquire) || self.deadline.is_some_and(|d| Instant::now() >= d)
    }
}

#[derive(Default)]
struct CpuResult {
    fork: LatencyRecorder,
    exec: LatencyRecorder,
    exit: LatencyRecorder,
    pgd_alloc: LatencyRecorder,
    pgd_free: LatencyRecorder,
    tlb_hits: u64,
    accesses: u64,
}

/// Runs `cfg`.
pub fn run(cfg: &SimConfig) -> Result<RunReport, SimError> {
    run_with_progress(cfg, None)
}

/// Runs `cfg`, calling `progress` about ten times a second from the
/// calling thread.
pub fn run_with_progress(
    cfg: &SimConfig,
    progress: Option<Progress<'_>>,
) -> Result<RunReport, SimError> {
    run_with_timeline(cfg, progress, None)
}

/// Runs `cfg` like [`run_with_progress`], and with `every` set samples a
/// [`TimelineSample`] that often (conversions so far, live and cached pgds,
/// stale entries found so far) into [`RunReport::timeline`]: how the pgds
/// cached at each conversion meet the conversions, i.e. the seed's window.
/// Sampling reads the kernel's counters and the caches' statistics, which
/// takes their locks briefly.
pub fn run_with_timeline(
    cfg: &SimConfig,
    progress: Option<Progress<'_>>,
    every: Option<Duration>,
) -> Result<RunReport, SimError> {
    cfg.validate()?;
    let pm = Arc::new(
        SimMemory::new(cfg.ram)
            .map_err(|e| SimError::Ram {
                ram: cfg.ram,
                why: e.to_string(),
            })?
            .with_poisoning(cfg.poisoning),
    );
    let kcfg = KernelConfig {
        mode: cfg.mode,
        scheme: cfg.scheme,
        lock: cfg.lock,
        cpus: cfg.cpus,
        timed_locks: true,
        debug: false,
        slab_stats: true,
    };
    let kernel = Kernel::new(pm, &kcfg)?;
    let smp = Smp::new(cfg.cpus, TLB_ENTRIES, kernel.swapper().0.as_u64());
    smp.install(&kernel);
    let po = kernel.mode().page_offset();
    let targets = vec![
        VirtAddr::new(po + (16 << 20) + 0x5000),
        VirtAddr::new(po + (24 << 20) + 0x3000),
    ];
    let checker = Checker::new(&kernel, &targets);
    let world = World {
        gfx: Gfx {
            seq: AtomicU64::new(0),
            uncached: AtomicBool::new(false),
            targets,
            toggles: AtomicU64::new(0),
        },
        areas: VmAreas::default(),
        checker,
        kernel,
        smp,
        cfg: cfg.clone(),
        stop_cpus: AtomicBool::new(false),
        stop_agents: AtomicBool::new(false),
        claimed: AtomicU64::new(0),
        done: AtomicU64::new(0),
        vm_ops: AtomicU64::new(0),
        error: parking_lot::Mutex::new(None),
        deadline: cfg.duration.map(|d| Instant::now() + d),
    };
    if let Some(n) = cfg.fail_alloc {
        world.kernel.pm().faults().fail_nth(n);
    }
    let planned = if cfg.ops == 0 { u64::MAX } else { cfg.ops };
    let zone0 = world.kernel.pm().pcp_stats();
    let start = Instant::now();
    let mut results: Vec<CpuResult> = Vec::new();
    let mut timeline: Vec<TimelineSample> = Vec::new();
    let mut wall = Duration::ZERO;
    std::thread::scope(|s| {
        let w = &world;
        let cpus: Vec<_> = (0..cfg.cpus)
            .map(|cpu| s.spawn(move || cpu_main(w, cpu)))
            .collect();
        let gfx = (cfg.cpa_rate != CpaRate::Off).then(|| s.spawn(move || gfx_agent(w)));
        let vm = s.spawn(move || vmalloc_agent(w));
        let mut last_progress: Option<Instant> = None;
        let mut last_sample: Option<Instant> = None;
        while !cpus.iter().all(|h| h.is_finished()) {
            if let Some(p) = progress {
                if last_progress.is_none_or(|t| t.elapsed() >= Duration::from_millis(100)) {
                    p(w.done.load(Ordering::Relaxed), planned);
                    last_progress = Some(Instant::now());
                }
            }
            if let Some(every) = every {
                if last_sample.is_none_or(|t| t.elapsed() >= every) {
                    timeline.push(sample(w, start));
                    last_sample = Some(Instant::now());
                }
            }
            let tick = match (progress, every) {
                (_, Some(e)) => e.min(Duration::from_millis(2)),
                (Some(_), None) => Duration::from_millis(100),
                (None, None) => Duration::from_millis(2),
            };
            std::thread::sleep(tick);
        }
        if every.is_some() {
            timeline.push(sample(w, start));
        }
        wall = start.elapsed();
        w.stop_agents.store(true, Ordering::Release);
        for h in cpus {
            match h.join() {
                Ok(r) => results.push(r),
                Err(_) => w.fail(SimError::Panic("cpu thread".into())),
            }
        }
        if let Some(h) = gfx {
            if h.join().is_err() {
                w.fail(SimError::Panic("graphics agent".into()));
            }
        }
        if vm.join().is_err() {
            w.fail(SimError::Panic("vmalloc agent".into()));
        }
    });
    if let Some(p) = progress {
        p(world.done.load(Ordering::Relaxed), planned);
    }
    // A task or an agent that failed (out of simulated memory, most often)
    // stopped the CPUs; each exited its tasks on the way out. The checker
    // and the frame accounting still run, and the report says what failed
    // and where. Only a panicked thread (a bug) leaves no state to check.
    let failure = match world.error.lock().take() {
        None => None,
        Some(e @ SimError::Panic(_)) => return Err(e),
        Some(SimError::Task { cpu, what, why }) => Some(Failure {
            at: format!("cpu {cpu} {what}"),
            why,
        }),
        Some(SimError::Agent { agent, why }) => Some(Failure {
            at: format!("{agent} agent"),
            why,
        }),
        Some(other) => Some(Failure {
            at: "run".into(),
            why: other.to_string(),
        }),
    };
    let k = &world.kernel;
    let mut total = CpuResult::default();
    for r in &results {
        total.fork.merge(&r.fork);
        total.exec.merge(&r.exec);
        total.exit.merge(&r.exit);
        total.pgd_alloc.merge(&r.pgd_alloc);
        total.pgd_free.merge(&r.pgd_free);
        total.tlb_hits += r.tlb_hits;
        total.accesses += r.accesses;
    }
    let zone1 = k.pm().pcp_stats();
    let zone = ZoneReport {
        pcp_batch: zone1.batch,
        pcp_high: zone1.high,
        zone_locks: zone1.zone_locks - zone0.zone_locks,
        refills: zone1.refills - zone0.refills,
        trims: zone1.trims - zone0.trims,
    };
    let mut final_check = final_check(k)?;
    // The run's toggles; the closing conversion is reported on its own.
    let cpa_toggles = world.gfx.toggles.load(Ordering::Relaxed);
    if cfg.cpa_rate != CpaRate::Off && failure.is_none() {
        closing_cpa(&world, &mut final_check)?;
    }
    let (live_violations, first_live, first_kind) = world.checker.summary();
    let closing_kind = final_check
        .closing_cpa
        .as_ref()
        .and_then(|c| c.violations.first_kind());
    let verdict = if let Some(f) = &failure {
        Verdict::Error(f.to_string())
    } else if let Some(kind) = first_kind {
        Verdict::Caught(kind)
    } else if let Some(kind) = final_check.violations.first_kind().or(closing_kind) {
        Verdict::Caught(kind)
    } else {
        Verdict::Correct
    };
    let tasks = world.done.load(Ordering::Relaxed);
    let wall_s = wall.as_secs_f64();
    let stats = k.stats();
    let fork = total.fork.summary();
    let pgd_alloc = total.pgd_alloc.summary();
    Ok(RunReport {
        config: cfg.clone(),
        tasks,
        wall_s,
        tasks_per_s: if wall_s > 0.0 {
            tasks as f64 / wall_s
        } else {
            0.0
        },
        exec: total.exec.summary(),
        exit: total.exit.summary(),
        pgd_free: total.pgd_free.summary(),
        pgd_alloc_share_of_fork: if fork.mean_ns > 0.0 {
            (pgd_alloc.mean_ns / fork.mean_ns).min(1.0)
        } else {
            0.0
        },
        fork,
        pgd_alloc,
        bytes_per_alloc: stats.bytes_per_alloc(),
        kernel: stats,
        slab: k.slab_stats(),
        zone,
        cpa_toggles,
        vmalloc_ops: world.vm_ops.load(Ordering::Relaxed),
        flush_ipis: world.smp.requests.load(Ordering::Relaxed),
        accesses: total.accesses,
        tlb_hits: total.tlb_hits,
        live_violations,
        first_live,
        final_check,
        verdict,
        timeline,
        failure,
    })
}

/// One timeline point, read while the CPUs run.
fn sample(w: &World, start: Instant) -> TimelineSample {
    let ks = w.kernel.stats();
    let cached = w
        .kernel
        .slab_stats()
        .iter()
        .find(|c| c.name == "pgd")
        .map_or(0, |c| c.num_objs.saturating_sub(c.live_objs));
    let (live, _, _) = w.checker.summary();
    TimelineSample {
        t_s: start.elapsed().as_secs_f64(),
        tasks: w.done.load(Ordering::Relaxed),
        conversions: ks.conversions,
        pgds_live: ks.mmlist_len,
        pgds_cached: cached,
        stale_found: live.stale + live.dangling,
    }
}

fn first_violations(r: &pgdcache::check::Report, prefix: &str) -> Vec<String> {
    r.violations
        .iter()
        .take(5)
        .map(|v| format!("{prefix}{}: {}", v.kind.name(), v.detail))
        .collect()
}

/// The closing conversions (see [`ClosingCheck`]): with every pgd in the
/// cache, the graphics agent's targets are split to uncached and the
/// checker runs, then merged back and the checker runs again.
fn closing_cpa(w: &World, f: &mut FinalCheck) -> Result<(), SimError> {
    let mut c = ClosingCheck::default();
    for (uncached, name) in [(true, "split"), (false, "merge")] {
        set_targets(w, uncached)?;
        let r = w.kernel.verify()?;
        f.first
            .extend(first_violations(&r, &format!("after the closing {name}: ")));
        let v = ViolationCounts::from_report(&r);
        c.cached_pgds = c.cached_pgds.max(r.cached);
        c.known_stale = c.known_stale.max(r.known_stale);
        c.leaked_frames = c.leaked_frames.max(r.leaked_frames);
        let s = &mut c.violations;
        s.stale += v.stale;
        s.dangling += v.dangling;
        s.not_constructed += v.not_constructed;
        s.leak = s.leak.max(v.leak);
        s.vmalloc_unmapped += v.vmalloc_unmapped;
        // Cumulative in the page allocator: the larger, not the sum.
        s.use_after_free = s.use_after_free.max(v.use_after_free);
    }
    f.leaked_frames = f.leaked_frames.max(c.leaked_frames);
    f.closing_cpa = Some(c);
    Ok(())
}

fn final_check(k: &Kernel) -> Result<FinalCheck, SimError> {
    let r = k.verify()?;
    let violations = ViolationCounts::from_report(&r);
    Ok(FinalCheck {
        live_pgds: r.live,
        cached_pgds: r.cached,
        lazy_missing: r.lazy_missing,
        known_stale: r.known_stale,
        violations,
        frames_used: r.frames_used,
        leaked_frames: r.leaked_frames,
        first: first_violations(&r, ""),
        closing_cpa: None,
    })
}

/// The per-CPU view a task runs with.
struct Cpu<'w> {
    w: &'w World,
    id: usize,
    /// This thread is CPU `id` of the pgd system: `pgd_alloc`/`pgd_free`
    /// run on its own slots of the object caches (no lock, no atomic on a
    /// hit), as a kernel's would with preemption off. Everything this
    /// thread allocates goes through it: a per-call `pgd_alloc(id)` from
    /// here would wait for this very token.
    pgd: PgdCpu<'w>,
    rng: Rng,
    res: CpuResult,
}

impl Cpu<'_> {
    fn task_err(&self, what: &'static str, e: impl std::fmt::Display) -> SimError {
        SimError::Task {
            cpu: self.id,
            what,
            why: e.to_string(),
        }
    }

    /// `switch_mm`: load CR3, drop non-global TLB entries.
    fn switch_to(&self, pgd: u64) {
        if let Some(slot) = self.w.smp.cpu(self.id) {
            slot.cr3.store(pgd, Ordering::Release);
            slot.tlb.lock().switch_cr3();
        }
    }

    fn touch(&mut self, mm: &Mm) {
        if !self.w.cfg.live_checks {
            return;
        }
        let (n, hits) = self
            .w
            .checker
            .touch(&self.w.machine(), self.id, mm.pgd(), &mut self.rng);
        self.res.accesses += n;
        self.res.tlb_hits += hits;
    }

    fn exec(&mut self, size: TaskSize) -> Result<Mm, SimError> {
        let t = Instant::now();
        let mm = self.pgd.exec_mm(size);
        let mm = mm.map_err(|e| self.task_err("exec", e))?;
        self.res.exec.record(t.elapsed());
        Ok(mm)
    }

    fn fork(&mut self, parent: &Mm) -> Result<Mm, SimError> {
        let t = Instant::now();
        let mm = self.pgd.fork_mm(parent);
        let mm = mm.map_err(|e| self.task_err("fork", e))?;
        self.res.fork.record(t.elapsed());
        Ok(mm)
    }

    fn exit(&mut self, mm: Mm) -> Result<(), SimError> {
        let t = Instant::now();
        let r = self.pgd.exit_mm(mm);
        r.map_err(|e| self.task_err("exit", e))?;
        self.res.exit.record(t.elapsed());
        Ok(())
    }

    /// One task: the shell forks; the child execs the image and exits.
    fn task(&mut self, shell: &Mm, size: TaskSize) -> Result<(), SimError> {
        let child = self.fork(shell)?;
        self.switch_to(child.pgd().0.as_u64());
        self.touch(&child);
        self.w.smp.boundary(self.id);
        let image = match self.exec(size) {
            Ok(m) => m,
            Err(e) => {
                self.switch_to(shell.pgd().0.as_u64());
                let _ = self.exit(child);
                return Err(e);
            }
        };
        self.switch_to(image.pgd().0.as_u64());
        let old = self.exit(child);
        self.touch(&image);
        self.w.smp.boundary(self.id);
        self.switch_to(shell.pgd().0.as_u64());
        let new = self.exit(image);
        old.and(new)
    }

    /// Times a direct `pgd_alloc` + `pgd_free` pair.
    fn sample_pgd(&mut self) -> Result<(), SimError> {
        let t = Instant::now();
        let pgd = self.pgd.pgd_alloc();
        let pgd = pgd.map_err(|e| self.task_err("pgd_alloc", e))?;
        self.res.pgd_alloc.record(t.elapsed());
        let t = Instant::now();
        let r = self.pgd.pgd_free(pgd);
        r.map_err(|e| self.task_err("pgd_free", e))?;
        self.res.pgd_free.record(t.elapsed());
        Ok(())
    }

    fn image_for_task(&mut self) -> TaskSize {
        let base = self.w.cfg.task_size();
        if self.w.cfg.workload == Workload::Mixed
            && self.w.cfg.task_pages.is_none()
            && self.rng.chance(1, 10)
        {
            TaskSize {
                text: 256,
                data: 640,
                stack: 128,
            }
        } else {
            base
        }
    }
}

fn cpu_main(w: &World, id: usize) -> CpuResult {
    let _guard = w.smp.enter(id);
    // This thread is CPU `id`: its single-frame allocations and frees go
    // through CPU `id`'s page list, as `smp_processor_id()` would pick.
    let _this_cpu = physmem::enter_cpu(id);
    let pgd = match w.kernel.claim_cpu(id) {
        Ok(p) => p,
        Err(e) => {
            w.fail(SimError::Task {
                cpu: id,
                what: "claim_cpu",
                why: e.to_string(),
            });
            return CpuResult::default();
        }
    };
    let mut cpu = Cpu {
        w,
        id,
        pgd,
        rng: Rng::stream(w.cfg.seed, id as u64 + 1),
        res: CpuResult::default(),
    };
    let shell_size = w.cfg.task_size();
    let shell = match cpu.exec(shell_size) {
        Ok(m) => m,
        Err(e) => {
            w.fail(e);
            return cpu.res;
        }
    };
    cpu.switch_to(shell.pgd().0.as_u64());
    cpu.touch(&shell);
    let limit = if w.cfg.ops == 0 { u64::MAX } else { w.cfg.ops };
    let mut mine = 0u64;
    loop {
        w.smp.boundary(id);
        // A quiescent point: a remote shrink or statistics read waiting
        // for this CPU's cache slots gets them here at the latest.
        cpu.pgd.serve();
        if w.cpus_should_stop() {
            break;
        }
        if w.claimed.fetch_add(1, Ordering::Relaxed) >= limit {
            break;
        }
        let size = cpu.image_for_task();
        if let Err(e) = cpu.task(&shell, size) {
            w.fail(e);
            break;
        }
        w.done.fetch_add(1, Ordering::Relaxed);
        mine += 1;
        if w.cfg.sample_every > 0 && mine.is_multiple_of(w.cfg.sample_every) {
            if let Err(e) = cpu.sample_pgd() {
                w.fail(e);
                break;
            }
        }
    }
    cpu.switch_to(w.kernel.swapper().0.as_u64());
    if let Err(e) = cpu.exit(shell) {
        w.fail(e);
    }
    cpu.res
}

/// Waits until `done >= threshold` or the agents must stop. False to stop.
fn pace(w: &World, threshold: u64) -> bool {
    loop {
        if w.stop_agents.load(Ordering::Acquire) {
            return false;
        }
        if w.done.load(Ordering::Relaxed) >= threshold {
            return true;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// One step of the pacing: tasks between two actions at `per_kilo` per 1000 tasks.
fn step(per_kilo: u32) -> u64 {
    (1000 / u64::from(per_kilo.max(1))).max(1)
}

fn set_targets(w: &World, uncached: bool) -> Result<(), SimError> {
    let k = &w.kernel;
    let g = &w.gfx;
    g.seq.fetch_add(1, Ordering::AcqRel);
    g.uncached.store(uncached, Ordering::Release);
    let mut result = Ok(());
    for &t in &g.targets {
        let Some(mut prot) = k.page_kernel_at(t) else {
            result = Err(SimError::Agent {
                agent: "graphics",
                why: format!("{t} is not in the direct map"),
            });
            break;
        };
        if uncached {
            prot |= EntryFlags::PCD | EntryFlags::PWT;
        }
        if let Err(e) = k.change_page_attr(t, 1, prot) {
            result = Err(SimError::Agent {
                agent: "graphics",
                why: e.to_string(),
            });
            break;
        }
    }
    k.global_flush_tlb();
    g.seq.fetch_add(1, Ordering::AcqRel);
    g.toggles.fetch_add(1, Ordering::Relaxed);
    result
}

/// The graphics driver (AGP, X restarting): pages uncached, flush, and back.
fn gfx_agent(w: &World) {
    let mut next = 0u64;
    let mut uncached = false;
    loop {
        match w.cfg.cpa_rate {
            CpaRate::Off => break,
            CpaRate::Continuous => {
                if w.stop_agents.load(Ordering::Acquire) {
                    break;
                }
                // X restarting in a loop, not a busy CPU: leave the cores to
                // the simulated CPUs between toggles.
                std::thread::sleep(Duration::from_micros(50));
            }
            CpaRate::PerKiloTask(n) => {
                next += step(n);
                if !pace(w, next) {
                    break;
                }
            }
        }
        uncached = !uncached;
        if let Err(e) = set_targets(w, uncached) {
            w.fail(e);
            break;
        }
    }
    if uncached {
        if let Err(e) = set_targets(w, false) {
            w.fail(e);
        }
    }
}

/// vmalloc/vfree: keeps up to four areas, allocating or freeing one at a time.
fn vmalloc_agent(w: &World) {
    let per_kilo = w.cfg.workload.vmalloc_per_kilo_task();
    let mut rng = Rng::stream(w.cfg.seed, 0x7f00);
    let mut next = 0u64;
    let k = &w.kernel;
    loop {
        next += step(per_kilo);
        if !pace(w, next) {
            break;
        }
        let n = w.areas.len();
        if n < 4 && (n == 0 || rng.chance(1, 2)) {
            let pages = 1 + rng.below(8);
            match k.vmalloc(pages) {
                Ok(va) => {
                    let ks = k.kernel_space();
                    let pas: Vec<u64> = (0..pages)
                        .filter_map(|i| {
                            let v = VirtAddr::new(va.as_u64() + i * physmem::PAGE_SIZE);
                            ks.translate_in(&**k.pm(), k.swapper().0, v, Access::READ)
                                .ok()
                                .map(|t| t.pa.as_u64())
                        })
                        .collect();
                    if pas.len() as u64 == pages {
                        w.areas.add(va.as_u64(), pas);
                    } else {
                        let _ = k.vfree(va);
                        w.fail(SimError::Agent {
                            agent: "vmalloc",
                            why: format!("fresh area {va} does not translate in swapper_pg_dir"),
                        });
                        break;
                    }
                }
                // Out of simulated memory or of vmalloc space: try later.
                Err(pgdcache::VmError::OutOfMemory(_) | pgdcache::VmError::NoSpace(_)) => continue,
                // Anything else (a pte already mapped, a table access that
                // failed) is a bug, never skipped.
                Err(e) => {
                    w.fail(SimError::Agent {
                        agent: "vmalloc",
                        why: e.to_string(),
                    });
                    break;
                }
            }
        } else if let Some(va) = w.areas.remove_random(&mut rng) {
            if let Err(e) = k.vfree(VirtAddr::new(va)) {
                w.fail(SimError::Agent {
                    agent: "vmalloc",
                    why: e.to_string(),
                });
                break;
            }
        }
        w.vm_ops.fetch_add(1, Ordering::Relaxed);
    }
    while let Some(va) = w.areas.remove_random(&mut rng) {
        let _ = k.vfree(VirtAddr::new(va));
    }
}
