//! The run: the conversion and vmalloc agents, the phases, the closing
//! conversions, the shootdown check and the verdicts.
//!
//! With one CPU, the BSP interleaves tasks ([`crate::work::Cpu`]) with the
//! agents. With several, the application processors run the tasks and the
//! BSP is the graphics driver of the seed's race: a `change_page_attr`
//! storm on pages A (uncached) and B (read-only) of the aperture, each
//! followed by `global_flush_tlb` — a real TLB flush here and an IPI to
//! every other CPU — while the other CPUs fork, exit and probe.
//!
//! The closing conversions make the seed's bug deterministic, as in the
//! simulator: with every pgd cached, split (then hand every cached pgd and
//! two new ones, constructed while split, to tasks that probe through
//! them), revert (then hand every cached pgd out again: under
//! `slab-unsynced` the ones constructed while split point at the freed,
//! poisoned pte page). Cached pgds are handed out through `pgd_alloc` +
//! `mm_join` rather than loaded raw, since the ticket scheme legitimately
//! keeps cached pgds stale until join. The in-kernel checker
//! (`Kernel::verify`, which reads the object cache itself) runs at the same
//! points; its verdict and the hardware's must agree.
//!
//! With several CPUs a deterministic shootdown check follows: each AP
//! touches page B (its TLB now holds a writable entry), the BSP makes B
//! read-only and flushes, and the AP stores to B again without any flush
//! of its own: the store must fault. Without the IPI (`noipi=1`) it does
//! not.
//!
//! Every CPU, the BSP included, holds its own token of the pgd system
//! ([`crate::pcpu`]) and runs its tasks through it. Remote cache
//! operations (the checker's walk, `slab_stats`) are requests the token
//! holders serve, so every wait loop here serves, and the BSP gives its own
//! token back around the checker (a request for its own slot would wait
//! for itself). With several CPUs the BSP proves the APs really hold their
//! tokens: during the storm it asks each AP's slot for a claim (it must be
//! refused: the AP holds it) and reads `slab_stats` (served by the APs
//! between tasks); when the APs are done it runs the checker while they
//! still hold their tokens (served in the shootdown handshake's wait); at
//! the end-of-run rendezvous each AP gives its token back before it
//! halts, and the BSP's claim of each AP's slot must then succeed.

use crate::arch;
use crate::cmdline::Params;
use crate::mm::{Booted, APERTURE, APERTURE_BYTES};
use crate::pcpu;
use crate::report::{self, json_str};
use crate::smp;
use crate::trap;
use crate::work::{Cpu, Hw, Shared, Totals, PAGE_A, PAGE_B};
use alloc::collections::BTreeSet;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use pgdcache::{Kernel, KernelError, ViolationKind};
use physmem::{Lowmem, PhysAddr, PhysMem, PAGE_SIZE};
use x86paging::EntryFlags;

/// Most vmalloc areas alive at once.
const VM_AREAS: usize = 4;
/// How many checker details to report.
const DETAILS: usize = 8;

static SHARED: spin::Once<Shared> = spin::Once::new();

/// What the in-kernel checker saw.
#[derive(Default)]
struct Sw {
    checks: u64,
    stale: u64,
    dangling: u64,
    not_constructed: u64,
    leak: u64,
    /// Reports of freed frames written before reuse (poisoning's finding).
    use_after_free: u64,
    leaked_frames: u64,
    details: Vec<String>,
}

impl Sw {
    fn violations(&self) -> u64 {
        self.stale + self.dangling + self.not_constructed + self.leak + self.use_after_free
    }
}

/// What the BSP saw of the other CPUs' tokens.
#[derive(Default)]
struct TokenChecks {
    /// Remote cache operations (checker walks, `slab_stats`) issued while
    /// the APs held their tokens.
    remote_ops: u64,
    /// Claims of an AP's slot tried while the AP should hold it...
    held_probes: u64,
    /// ... and refused because it did.
    held: u64,
    /// Claims of an AP's slot that succeeded after it gave its token back.
    released: u64,
}

/// The BSP's state: its own CPU, the agents' counts and the checker's.
struct Bsp {
    cpu: Cpu,
    conversions: u64,
    sw: Sw,
    shootdown_checks: u64,
    stale_tlb: u64,
    tokens: TokenChecks,
}

/// Runs the workload and the closing conversions, reports, and stops.
pub fn run(b: &Booted, p: &Params) -> ! {
    let sh = SHARED.call_once(|| Shared {
        k: b.k,
        p: p.clone(),
        split: AtomicBool::new(false),
        seq: AtomicU64::new(0),
        areas: spin::RwLock::new(Vec::new()),
        aps_claimed: AtomicUsize::new(0),
        go: AtomicBool::new(false),
        aps_done: AtomicUsize::new(0),
        totals: spin::Mutex::new(Vec::new()),
        mail: [const { AtomicU64::new(0) }; smp::MAX_CPUS],
        park: AtomicBool::new(false),
        aps_released: AtomicUsize::new(0),
        ap_tasks: [const { AtomicU64::new(0) }; smp::MAX_CPUS],
    });
    let mut bsp = Bsp {
        cpu: Cpu::new(sh, 0),
        conversions: 0,
        sw: Sw::default(),
        shootdown_checks: 0,
        stale_tlb: 0,
        tokens: TokenChecks::default(),
    };
    // The BSP is CPU 0 of the pgd system.
    if let Err(e) = pcpu::get_cpu(sh.k) {
        bsp.cpu.fail("get_cpu", e);
    }
    let t0 = arch::rdtsc();
    bsp.write_aperture_canaries();
    if smp::online() > 1 {
        bsp.smp_phase();
    } else {
        bsp.up_phase();
    }
    bsp.cpu.drain();
    if bsp.sh().split.load(Ordering::Relaxed) {
        bsp.convert();
    }
    bsp.closing();
    bsp.sw_check("final");
    let cycles = arch::rdtsc().wrapping_sub(t0);
    bsp.result(cycles)
}

/// An application processor's work: claim its pgd token, its share of the
/// tasks, then the shootdown handshake, then give the token back and halt
/// (still answering IPIs).
pub fn ap_run(id: usize) -> ! {
    // The BSP builds the shared state after its APs are online.
    let sh = SHARED.wait();
    let mut c = Cpu::new(sh, id);
    if let Err(e) = pcpu::get_cpu(sh.k) {
        c.fail("get_cpu", e);
    }
    sh.aps_claimed.fetch_add(1, Ordering::AcqRel);
    while !sh.go.load(Ordering::Acquire) {
        pcpu::relax();
    }
    // A missed shootdown must show: no invlpg before the probes.
    c.force_walk = false;
    let aps = (sh.p.cpus - 1).max(1) as u64;
    let share = sh.p.tasks.div_ceil(aps);
    while c.t.tasks < share {
        c.step();
        sh.ap_tasks[id].store(c.t.tasks, Ordering::Relaxed);
    }
    c.drain();
    c.switch_to_swapper();
    sh.totals.lock().push(c.t.clone());
    sh.aps_done.fetch_add(1, Ordering::AcqRel);
    // The shootdown handshake (see `Bsp::shootdown_check`).
    loop {
        match sh.mail[id].load(Ordering::Acquire) {
            1 => {
                // Fill this CPU's TLB with page B's (writable) entry.
                let ok = c.check_store_b();
                sh.mail[id].store(if ok == Some(false) { 2 } else { 9 }, Ordering::Release);
            }
            3 => {
                let before = c.t.hw.ro_not_enforced;
                let r = c.check_store_b();
                let v = match r {
                    Some(true) => 4,
                    _ if c.t.hw.ro_not_enforced > before => 5,
                    _ => 9,
                };
                sh.mail[id].store(v, Ordering::Release);
            }
            _ if sh.park.load(Ordering::Acquire) => break,
            // Holding the token: serve the BSP's checker and stats.
            _ => pcpu::relax(),
        }
    }
    // The last quiescent point, then put_cpu() for good: the BSP's closing
    // checks take this CPU's slots directly from now on.
    pcpu::serve();
    if let Err(e) = pcpu::put_cpu() {
        c.fail("put_cpu", e);
    }
    sh.aps_released.fetch_add(1, Ordering::AcqRel);
    loop {
        arch::idle();
    }
}

impl Bsp {
    fn sh(&self) -> &'static Shared {
        self.cpu.sh
    }

    /// Runs a remote cache operation (the checker, `cache_pgds`,
    /// `slab_stats`) with this CPU's token given back for the time being: a
    /// request for its own slot would wait for itself.
    fn unclaimed<R>(&mut self, f: impl FnOnce(&'static Kernel<Lowmem>) -> R) -> R {
        let k = self.sh().k;
        let held = pcpu::held();
        if held {
            if let Err(e) = pcpu::put_cpu() {
                self.cpu.fail("put_cpu", e);
            }
        }
        let r = f(k);
        if held {
            if let Err(e) = pcpu::get_cpu(k) {
                self.cpu.fail("get_cpu", e);
            }
        }
        r
    }

    /// Tries to claim AP `ap`'s slots: `Ok(true)` if the claim succeeded
    /// (and was dropped at once), `Ok(false)` if it was refused because the
    /// AP holds them.
    fn try_claim(&self, ap: usize) -> Result<bool, KernelError> {
        match self.sh().k.claim_cpu(ap) {
            Ok(t) => {
                drop(t);
                Ok(true)
            }
            Err(KernelError::CpuClaim {
                source: objcache::ClaimError::Claimed { .. },
                ..
            }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// While the APs run: each AP's slots must be claimed (by the AP), and
    /// a remote `slab_stats` is served by the APs between their tasks.
    fn token_check(&mut self) {
        let aps = smp::online() - 1;
        for ap in 1..=aps {
            self.tokens.held_probes += 1;
            match self.try_claim(ap) {
                Ok(false) => self.tokens.held += 1,
                Ok(true) => {}
                Err(e) => self.cpu.fail("claim probe", e),
            }
        }
        self.unclaimed(|k| k.slab_stats());
        self.tokens.remote_ops += 1;
    }

    fn write_aperture_canaries(&self) {
        let mem = self.sh().k.pm().mem();
        let mut pa = APERTURE;
        while pa < APERTURE + APERTURE_BYTES {
            let r = mem
                .store_u32(PhysAddr::new(pa), crate::work::MAGIC)
                .and_then(|()| mem.store_u32(PhysAddr::new(pa + 4), (pa >> 12) as u32));
            if let Err(e) = r {
                self.cpu.fail("aperture canary", e);
            }
            pa += PAGE_SIZE;
        }
    }

    // ---- agents ------------------------------------------------------------

    /// The graphics driver: pages A and B to uncached / read-only, or back,
    /// then `global_flush_tlb`. The sequence count is odd throughout.
    fn convert(&mut self) {
        let sh = self.sh();
        let (va_a, va_b) = (self.cpu.va(PAGE_A), self.cpu.va(PAGE_B));
        let Some(pk) = sh.k.page_kernel_at(va_a) else {
            self.cpu
                .fail("page_kernel_at", "aperture outside the direct map")
        };
        let split = sh.split.load(Ordering::Relaxed);
        let (fa, fb) = if split {
            (pk, pk)
        } else {
            (pk | EntryFlags::PCD | EntryFlags::PWT, pk - EntryFlags::RW)
        };
        sh.seq.fetch_add(1, Ordering::AcqRel);
        if let Err(e) =
            sh.k.change_page_attr(va_a, 1, fa)
                .and_then(|()| sh.k.change_page_attr(va_b, 1, fb))
        {
            self.cpu.fail("change_page_attr", e);
        }
        sh.k.global_flush_tlb();
        sh.split.store(!split, Ordering::Release);
        sh.seq.fetch_add(1, Ordering::AcqRel);
        self.conversions += 1;
    }

    /// vmalloc and vfree small areas. The new area's frames (the ones
    /// `vmalloc_frames` did not list before) get canaries through the direct
    /// map; then the MMU itself says which frame each page of the area maps
    /// to: the BSP reads every page through swapper. No software walker is
    /// involved in what the probes later compare against.
    fn vmalloc_agent(&mut self) {
        let sh = self.sh();
        if sh.areas.read().len() >= VM_AREAS {
            let (va, _) = sh.areas.write().remove(0);
            if let Err(e) = sh.k.vfree(va) {
                self.cpu.fail("vfree", e);
            }
            return;
        }
        let n = 1 + self.cpu.rng.below(4);
        let before: BTreeSet<physmem::Frame> = sh.k.vmalloc_frames().into_iter().collect();
        let va = match sh.k.vmalloc(n) {
            Ok(va) => va,
            Err(e) => self.cpu.fail("vmalloc", e),
        };
        let fresh: BTreeSet<u32> =
            sh.k.vmalloc_frames()
                .into_iter()
                .filter(|f| !before.contains(f))
                .map(|f| f.pfn() as u32)
                .collect();
        let mem = sh.k.pm().mem();
        for &pfn in &fresh {
            let pa = u64::from(pfn) << 12;
            let r = mem
                .store_u32(PhysAddr::new(pa), crate::work::MAGIC)
                .and_then(|()| mem.store_u32(PhysAddr::new(pa + 4), pfn));
            if let Err(e) = r {
                self.cpu.fail("vmalloc canary", e);
            }
        }
        self.cpu.switch_to_swapper();
        let mut pas = Vec::new();
        for i in 0..n {
            let v = va.as_u64() + i * PAGE_SIZE;
            arch::invlpg(v);
            match (arch::probe_read(v), arch::probe_read(v + 4)) {
                (Some(crate::work::MAGIC), Some(pfn)) if fresh.contains(&pfn) => {
                    pas.push(PhysAddr::new(u64::from(pfn) << 12));
                }
                got => {
                    self.cpu.t.hw.wrong_canary += 1;
                    let s = format!(
                        "vmalloc page {v:#x} reads {got:?} through swapper: none of its area's frames"
                    );
                    self.cpu.t.hw.note(s);
                    pas.push(PhysAddr::new(0));
                }
            }
        }
        sh.areas.write().push((va, pas));
    }

    // ---- the in-kernel checker ----------------------------------------------

    fn sw_check(&mut self, label: &str) {
        let r = match self.unclaimed(|k| k.verify()) {
            Ok(r) => r,
            Err(e) => self.cpu.fail("verify", e),
        };
        let sw = &mut self.sw;
        sw.checks += 1;
        sw.stale += r.count(ViolationKind::Stale) as u64;
        sw.dangling += r.count(ViolationKind::Dangling) as u64;
        sw.not_constructed += r.count(ViolationKind::NotConstructed) as u64;
        sw.leak += r.count(ViolationKind::Leak) as u64;
        sw.use_after_free += r.count(ViolationKind::UseAfterFree) as u64;
        sw.leaked_frames = r.leaked_frames;
        for v in r.violations.iter().take(2) {
            if sw.details.len() < DETAILS {
                let s = format!("{label}: {} {}", v.kind.name(), v.detail);
                crate::kprintln!("sw: {s}");
                sw.details.push(s);
            }
        }
    }

    // ---- phases --------------------------------------------------------------

    /// One CPU: tasks interleaved with the agents; the checker four times.
    fn up_phase(&mut self) {
        let p = &self.sh().p;
        let quarter = (p.tasks / 4).max(1);
        let mut next_check = quarter;
        let mut step = 0u64;
        while self.cpu.t.tasks < p.tasks {
            step += 1;
            if step.is_multiple_of(p.cpa_every) {
                self.convert();
            }
            if step.is_multiple_of(2 * p.cpa_every + 3) {
                self.vmalloc_agent();
            }
            self.cpu.step();
            if self.cpu.t.tasks >= next_check {
                next_check += quarter;
                self.cpu.switch_to_swapper();
                self.sw_check("live");
                self.progress(self.cpu.t.tasks);
            }
        }
    }

    /// Several CPUs: the APs run the tasks, the BSP converts.
    fn smp_phase(&mut self) {
        let sh = self.sh();
        let aps = smp::online() - 1;
        // The start rendezvous: every AP holds its token.
        while sh.aps_claimed.load(Ordering::Acquire) < aps {
            pcpu::relax();
        }
        sh.go.store(true, Ordering::Release);
        let mut step = 0u64;
        while sh.aps_done.load(Ordering::Acquire) < aps {
            step += 1;
            self.convert();
            if step.is_multiple_of(3) {
                self.vmalloc_agent();
            }
            // Let the APs run some tasks between conversions.
            pcpu::delay_us(20 * sh.p.cpa_every);
            if step.is_multiple_of(16) {
                self.token_check();
            }
            if step.is_multiple_of(64) {
                let done: u64 = sh.ap_tasks.iter().map(|t| t.load(Ordering::Relaxed)).sum();
                self.progress(done);
            }
        }
        if sh.split.load(Ordering::Relaxed) {
            self.convert();
        }
        // The APs are done with their tasks and still hold their tokens:
        // the checker's walk of the caches is served in their handshake
        // loop.
        self.token_check();
        self.sw_check("smp, every AP holding its token");
        self.tokens.remote_ops += 1;
        for ap in 1..=aps {
            self.shootdown_check(ap);
        }
        sh.park.store(true, Ordering::Release);
        // The end-of-run rendezvous: every AP gives its token back before
        // it halts; then its slots are free to claim.
        let deadline = arch::rdtsc().wrapping_add(crate::time::tsc_hz().saturating_mul(10));
        while sh.aps_released.load(Ordering::Acquire) < aps {
            if arch::rdtsc() > deadline {
                self.cpu
                    .fail("end of run", "an AP did not give its pgd token back");
            }
            pcpu::relax();
        }
        for ap in 1..=aps {
            match self.try_claim(ap) {
                Ok(true) => self.tokens.released += 1,
                Ok(false) => self.cpu.fail(
                    "end of run",
                    format!("cpu {ap} still holds its pgd token after it parked"),
                ),
                Err(e) => self.cpu.fail("claim probe", e),
            }
        }
    }

    /// The deterministic TLB-shootdown check with AP `ap` (see the module
    /// docs). Both CPUs sit on swapper_pg_dir, which is always right: only
    /// the AP's TLB can be wrong.
    fn shootdown_check(&mut self, ap: usize) {
        let sh = self.sh();
        let wait = |want: &[u64]| -> u64 {
            let deadline = arch::rdtsc().wrapping_add(crate::time::tsc_hz().saturating_mul(10));
            loop {
                let v = sh.mail[ap].load(Ordering::Acquire);
                if want.contains(&v) || v == 9 || arch::rdtsc() > deadline {
                    return v;
                }
                pcpu::relax();
            }
        };
        sh.mail[ap].store(1, Ordering::Release);
        if wait(&[2]) != 2 {
            self.cpu.fail(
                "shootdown check",
                format!("cpu {ap} could not store to writable page B"),
            );
        }
        self.convert();
        sh.mail[ap].store(3, Ordering::Release);
        let v = wait(&[4, 5]);
        self.convert();
        self.shootdown_checks += 1;
        match v {
            4 => {}
            5 => {
                self.stale_tlb += 1;
                let s = format!(
                    "shootdown: cpu {ap} stored to page B after it was made read-only and global_flush_tlb returned (a stale TLB entry)"
                );
                self.cpu.t.hw.note(s);
            }
            _ => self
                .cpu
                .fail("shootdown check", format!("cpu {ap} did not answer")),
        }
        sh.mail[ap].store(0, Ordering::Release);
    }

    fn progress(&self, tasks: u64) {
        report::event(&format!(
            "{{\"event\":\"progress\",\"tasks\":{tasks},\"of\":{},\"hw_violations\":{},\"sw_violations\":{}}}",
            self.sh().p.tasks,
            self.cpu.t.hw.violations(),
            self.sw.violations()
        ));
    }

    fn cached_pgds(&mut self) -> usize {
        self.unclaimed(|k| k.cache_pgds())
            .iter()
            .filter(|(_, allocated)| !allocated)
            .count()
    }

    /// Hands `n` pgds to new tasks at once (the cached ones first), probing
    /// through each, then exits them all.
    fn hand_out(&mut self, n: usize) {
        let first = self.cpu.live();
        for _ in 0..n {
            self.cpu.exec();
        }
        while self.cpu.live() > first {
            self.cpu.exit(self.cpu.live() - 1);
        }
    }

    fn closing(&mut self) {
        self.cpu.force_walk = true;
        self.cpu.phase = "closing split";
        let cached = self.cached_pgds();
        self.convert();
        self.sw_check("closing split, every pgd cached");
        self.hand_out(cached + 2);
        self.cpu.phase = "closing revert";
        self.convert();
        let cached = self.cached_pgds();
        self.sw_check("closing revert, every pgd cached");
        self.hand_out(cached.max(1));
        self.cpu.phase = "final";
    }

    fn result(&mut self, cycles: u64) -> ! {
        self.cpu.switch_to_swapper();
        let sh = self.sh();
        let k = sh.k;
        let mut all = Totals::default();
        let mut hw = Hw::default();
        hw.merge(&self.cpu.t.hw);
        all.tasks = self.cpu.t.tasks;
        all.forks = self.cpu.t.forks;
        all.switches = self.cpu.t.switches;
        for t in sh.totals.lock().iter() {
            hw.merge(&t.hw);
            all.tasks += t.tasks;
            all.forks += t.forks;
            all.switches += t.switches;
        }
        let hw_v = hw.violations() + self.stale_tlb;
        let sw = &self.sw;
        let sw_v = sw.violations();
        let mut kinds: Vec<&str> = Vec::new();
        if hw.ro_not_enforced > 0 || sw.stale > 0 {
            kinds.push("stale");
        }
        if hw.wrong_canary + hw.missing > 0 || sw.dangling > 0 {
            kinds.push("dangling");
        }
        if self.stale_tlb > 0 {
            kinds.push("stale-tlb");
        }
        if hw.user_mismatch + hw.cow_not_enforced + hw.rw_denied > 0 {
            kinds.push("user");
        }
        if sw.not_constructed > 0 {
            kinds.push("not-constructed");
        }
        if sw.leak > 0 || sw.leaked_frames > 0 {
            kinds.push("leak");
        }
        if sw.use_after_free > 0 {
            kinds.push("use-after-free");
        }
        let verdict = if kinds.is_empty() {
            String::from("correct")
        } else {
            format!("caught {}", kinds.join("+"))
        };
        // The checker reads page tables, not TLBs: a stale TLB is the
        // hardware's alone to see.
        let agree = (hw_v - self.stale_tlb > 0) == (sw.stale + sw.dangling > 0);
        let details: Vec<String> = hw
            .details
            .iter()
            .map(|s| json_str(&format!("hw {s}")))
            .chain(sw.details.iter().map(|s| json_str(&format!("sw {s}"))))
            .collect();
        let cpus = smp::online();
        let ipis: u64 = smp::IPIS_SENT
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum();
        let acks: u64 = smp::TLB_ACKS
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum();
        let flushes = crate::mm::TLB_FLUSHES.load(Ordering::Relaxed);
        let st = k.stats();
        let p = &sh.p;
        let tok = pcpu::totals(cpus);
        let tc = &self.tokens;
        // What the counters say, not what this code intends.
        let path = match (tok.cpus == cpus, tok.ops > 0) {
            (true, true) => "token",
            (_, false) => "per-call",
            (false, true) => "mixed",
        };
        crate::kprintln!(
            "{} {} on {cpus} CPU(s): {} tasks ({} forks), {} context switches, {} conversions, {flushes} TLB flushes, {ipis} IPIs, {} vmalloc faults, {} canary reads: hardware {hw_v} violations, checker {sw_v}; {} frames leaked -> {verdict}",
            p.mode, p.scheme, all.tasks, all.forks, all.switches, self.conversions,
            trap::VMALLOC_FAULTS.load(Ordering::Relaxed), hw.canary_reads, sw.leaked_frames
        );
        crate::kprintln!(
            "pgd tokens: {} of {cpus} CPU(s) ran {} exec/fork/exit on their own per-CPU token ({} quiescent points); {} remote cache operations served; AP slots held {}/{} when probed, given back {}",
            tok.cpus, tok.ops, tok.serves, tc.remote_ops, tc.held, tc.held_probes, tc.released
        );
        report::event(&format!(
            concat!(
                "{{\"event\":\"result\",\"mode\":\"{}\",\"scheme\":\"{}\",\"lock\":\"{}\",\"cpus\":{},",
                "\"tasks\":{},\"forks\":{},\"context_switches\":{},\"conversions\":{},\"tlb_flushes\":{},",
                "\"ipis\":{},\"ipi_acks\":{},\"shootdown_checks\":{},",
                "\"vmalloc_faults\":{},\"probe_faults\":{},\"canary_reads\":{},\"user_checks\":{},",
                "\"cow_faults\":{},\"ro_faults\":{},\"raced_probes\":{},",
                "\"hw\":{{\"wrong_canary\":{},\"missing\":{},\"ro_not_enforced\":{},\"rw_denied\":{},\"user_mismatch\":{},\"cow_not_enforced\":{},\"stale_tlb\":{}}},",
                "\"hw_violations\":{},",
                "\"sw\":{{\"checks\":{},\"stale\":{},\"dangling\":{},\"not_constructed\":{},\"leak\":{},\"use_after_free\":{}}},",
                "\"sw_violations\":{},\"violations\":{},\"leaked_frames\":{},\"pgd_allocs\":{},\"free_frames\":{},\"poisoning\":{},",
                "\"pgd_lock\":{{\"acquisitions\":{},\"contended\":{}}},\"tsc_hz\":{},",
                "\"pgd_path\":\"{}\",\"token\":{{\"cpus\":{},\"ops\":{},\"serves\":{},\"remote_ops\":{},\"held_probes\":{},\"held\":{},\"released\":{}}},",
                "\"cycles\":{},\"ns\":{},\"verdict\":{},\"agree\":{},\"details\":[{}]}}"
            ),
            p.mode, p.scheme, p.lock, cpus,
            all.tasks, all.forks, all.switches, self.conversions, flushes,
            ipis, acks, self.shootdown_checks,
            trap::VMALLOC_FAULTS.load(Ordering::Relaxed),
            trap::PROBE_FAULTS.load(Ordering::Relaxed),
            hw.canary_reads, hw.user_checks, hw.cow_faults, hw.ro_faults, hw.raced,
            hw.wrong_canary, hw.missing, hw.ro_not_enforced, hw.rw_denied, hw.user_mismatch, hw.cow_not_enforced, self.stale_tlb,
            hw_v,
            sw.checks, sw.stale, sw.dangling, sw.not_constructed, sw.leak, sw.use_after_free,
            sw_v, hw_v + sw_v, sw.leaked_frames, st.pgd_allocs, k.pm().free_frames(), k.pm().poisoning(),
            st.pgd_lock.acquisitions, st.pgd_lock.contended, crate::time::tsc_hz(),
            path, tok.cpus, tok.ops, tok.serves, tc.remote_ops, tc.held_probes, tc.held, tc.released,
            cycles, crate::time::to_ns(cycles), json_str(&verdict), agree, details.join(",")
        ));
        report::event(&format!(
            "{{\"event\":\"done\",\"verdict\":{}}}",
            json_str(&verdict)
        ));
        arch::qemu_exit(report::EXIT_DONE)
    }
}
