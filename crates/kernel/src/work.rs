//! The workload on the real MMU, and the verdicts.
//!
//! Tasks get their pgd from `pgd_alloc` (through `exec_mm`/`fork_mm`), and
//! the kernel loads it into CR3 — a real context switch — before it touches
//! the task's user pages (writes a token per page after exec, reads them
//! back later, and after fork checks that the child sees the parent's
//! tokens and may not write them: copy-on-write pages are read-only, and
//! CR0.WP makes the CPU refuse the kernel's store too). While a task's pgd
//! is loaded the kernel reads *canaries* through it: every page of the
//! aperture (reserved direct-map RAM) and every vmalloc page holds the
//! magic `PGDC` and its own page frame number, so a read through a wrong
//! translation is caught by value and a read through a missing one by a
//! #PF (the probes' exception-table fixup). Before each probe the kernel
//! drops the address's TLB entry (`invlpg`), so the MMU walks this pgd's
//! tables: direct-map entries are global and would otherwise come from the
//! TLB filled under another CR3.
//!
//! A conversion agent flips two aperture pages with `change_page_attr`, as
//! the AGP/X driver did: page A to uncached, page B to read-only (so that
//! the hardware can see a stale large-page entry: a store through it is
//! allowed where swapper forbids it), and back; `global_flush_tlb` does the
//! real flush. A vmalloc agent allocates and frees small areas whose tables
//! other pgds pick up through the real `vmalloc_fault`.
//!
//! The closing conversions make the seed's bug deterministic, as in the
//! simulator: with every pgd cached, split (then hand every cached pgd and
//! two new ones, constructed while split, to tasks that probe through
//! them), revert (then hand every cached pgd out again: under
//! `slab-unsynced` the ones constructed while split point at the freed,
//! poisoned pte page). The in-kernel checker (`Kernel::verify`, which reads
//! the object cache itself) runs at the same points; the two verdicts must
//! agree.

use crate::arch;
use crate::cmdline::Params;
use crate::mm::{Booted, APERTURE, APERTURE_BYTES};
use crate::report::{self, json_str};
use crate::trap;
use alloc::collections::BTreeSet;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::sync::atomic::Ordering;
use pgdcache::mm::{Mm, TaskSize};
use pgdcache::{Kernel, Pgd, ViolationKind};
use physmem::{Lowmem, PhysAddr, PhysMem, VirtAddr, PAGE_SIZE};
use x86paging::EntryFlags;

/// "PGDC": the first word of every canary page; the second is its pfn.
pub const MAGIC: u32 = 0x4344_4750;
/// The aperture page the agent makes uncached.
const PAGE_A: u64 = APERTURE + 5 * PAGE_SIZE;
/// The aperture page the agent makes read-only.
const PAGE_B: u64 = APERTURE + 9 * PAGE_SIZE;
/// Most vmalloc areas alive at once.
const VM_AREAS: usize = 4;
/// How many details of violations to report.
const DETAILS: usize = 8;

/// splitmix64: the workload's choices, reproducible from the seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// What the hardware saw.
#[derive(Default)]
struct Hw {
    canary_reads: u64,
    user_checks: u64,
    cow_faults: u64,
    ro_faults: u64,
    /// A canary read returned another page's (or no) canary.
    wrong_canary: u64,
    /// A canary read faulted.
    missing: u64,
    /// A store to page B succeeded while swapper maps it read-only.
    ro_not_enforced: u64,
    /// A store to page B faulted while swapper maps it writable.
    rw_denied: u64,
    /// A user page read back something else than its token.
    user_mismatch: u64,
    /// A forked child could write its copy-on-write page.
    cow_not_enforced: u64,
    details: Vec<String>,
}

impl Hw {
    fn violations(&self) -> u64 {
        self.wrong_canary
            + self.missing
            + self.ro_not_enforced
            + self.rw_denied
            + self.user_mismatch
            + self.cow_not_enforced
    }
    fn note(&mut self, s: String) {
        if self.details.len() < DETAILS {
            crate::kprintln!("hw: {s}");
            self.details.push(s);
        }
    }
}

/// What the in-kernel checker saw.
#[derive(Default)]
struct Sw {
    checks: u64,
    stale: u64,
    dangling: u64,
    not_constructed: u64,
    leak: u64,
    leaked_frames: u64,
    details: Vec<String>,
}

impl Sw {
    fn violations(&self) -> u64 {
        self.stale + self.dangling + self.not_constructed + self.leak
    }
}

struct Task {
    id: u64,
    /// The task whose exec wrote the tokens this address space shares.
    writer: u64,
    mm: Mm,
}

struct World<'a> {
    k: &'static Kernel<Lowmem>,
    p: &'a Params,
    rng: Rng,
    live: Vec<Task>,
    next_id: u64,
    tasks: u64,
    forks: u64,
    switches: u64,
    conversions: u64,
    /// Pages A and B converted in swapper (the reference state).
    split: bool,
    areas: Vec<(VirtAddr, Vec<PhysAddr>)>,
    hw: Hw,
    sw: Sw,
    phase: &'static str,
}

fn token(writer: u64, va: VirtAddr) -> u32 {
    (writer as u32).wrapping_mul(0x9e37_79b9) ^ (va.as_u64() as u32) ^ 0x5a5a_0000
}

/// Runs the workload and the closing conversions, reports, and stops.
pub fn run(b: &Booted, p: &Params) -> ! {
    let k = b.k;
    let mut w = World {
        k,
        p,
        rng: Rng(p.seed),
        live: Vec::new(),
        next_id: 1,
        tasks: 0,
        forks: 0,
        switches: 0,
        conversions: 0,
        split: false,
        areas: Vec::new(),
        hw: Hw::default(),
        sw: Sw::default(),
        phase: "live",
    };
    let t0 = arch::rdtsc();
    w.write_aperture_canaries();
    w.live_phase();
    w.drain();
    w.closing();
    w.sw_check("final");
    w.result(arch::rdtsc().wrapping_sub(t0))
}

impl World<'_> {
    fn fail(&self, what: &str, e: impl core::fmt::Display) -> ! {
        report::fail(self.phase, &format!("{what}: {e}"))
    }

    fn va(&self, pa: u64) -> VirtAddr {
        VirtAddr::new(self.k.mode().page_offset() + pa)
    }

    fn write_aperture_canaries(&self) {
        let mem = self.k.pm().mem();
        let mut pa = APERTURE;
        while pa < APERTURE + APERTURE_BYTES {
            let r = mem
                .store_u32(PhysAddr::new(pa), MAGIC)
                .and_then(|()| mem.store_u32(PhysAddr::new(pa + 4), (pa >> 12) as u32));
            if let Err(e) = r {
                self.fail("aperture canary", e);
            }
            pa += PAGE_SIZE;
        }
    }

    // ---- context switches -------------------------------------------------

    fn switch_to(&mut self, pgd: Pgd) {
        // SAFETY: every pgd from pgd_alloc carries the kernel part (copied
        // from swapper or shared with it), which maps this code, its stack
        // and heap; that is what the checks below verify.
        unsafe { arch::write_cr3(pgd.0.as_u64()) };
        self.switches += 1;
    }

    fn switch_to_swapper(&mut self) {
        // SAFETY: swapper_pg_dir maps the whole kernel.
        unsafe { arch::write_cr3(self.k.swapper().0.as_u64()) };
    }

    // ---- probes through the current pgd ------------------------------------

    fn check_canary(&mut self, va: VirtAddr, pa: PhysAddr) -> bool {
        arch::invlpg(va.as_u64());
        self.hw.canary_reads += 1;
        let pfn = (pa.as_u64() >> 12) as u32;
        match (
            arch::probe_read(va.as_u64()),
            arch::probe_read(va.as_u64() + 4),
        ) {
            (Some(MAGIC), Some(f)) if f == pfn => true,
            (Some(m), Some(f)) => {
                self.hw.wrong_canary += 1;
                let s = format!(
                    "{}: {va} read {m:#x}/{f:#x} through pgd {}, expected the canary of pfn {pfn:#x}",
                    self.phase,
                    trap::current_pgd()
                );
                self.hw.note(s);
                false
            }
            _ => {
                self.hw.missing += 1;
                let s = format!(
                    "{}: {va} faulted (error {:#x}) through pgd {}, expected the canary of pfn {pfn:#x}",
                    self.phase,
                    trap::LAST_PROBE_ERR.load(Ordering::Relaxed),
                    trap::current_pgd()
                );
                self.hw.note(s);
                false
            }
        }
    }

    /// Reads kernel memory through the current pgd: the converted pages,
    /// a few other aperture pages, every vmalloc page; and tries a store to
    /// page B, which must fault exactly while swapper maps it read-only.
    fn check_kernel(&mut self) {
        self.check_canary(self.va(PAGE_A), PhysAddr::new(PAGE_A));
        let b_ok = self.check_canary(self.va(PAGE_B), PhysAddr::new(PAGE_B));
        for _ in 0..4 {
            let pa = APERTURE + self.rng.below(APERTURE_BYTES / PAGE_SIZE) * PAGE_SIZE;
            self.check_canary(self.va(pa), PhysAddr::new(pa));
        }
        let areas = core::mem::take(&mut self.areas);
        for (va, pas) in &areas {
            for (i, &pa) in pas.iter().enumerate() {
                self.check_canary(VirtAddr::new(va.as_u64() + i as u64 * PAGE_SIZE), pa);
            }
        }
        self.areas = areas;
        if b_ok {
            self.check_store_b();
        }
    }

    fn check_store_b(&mut self) {
        let va = self.va(PAGE_B).as_u64() + 8;
        arch::invlpg(va);
        // SAFETY: page B is an aperture page (reserved RAM) the kernel owns;
        // its canary just read right, so this store lands in page B.
        let stored = unsafe { arch::probe_write(va, 0x0b0b_0b0b) };
        match (self.split, stored) {
            (true, false) => self.hw.ro_faults += 1,
            (false, true) => {}
            (true, true) => {
                self.hw.ro_not_enforced += 1;
                let s = format!(
                    "{}: store to read-only page B allowed through pgd {} (a stale large-page entry)",
                    self.phase,
                    trap::current_pgd()
                );
                self.hw.note(s);
            }
            (false, false) => {
                self.hw.rw_denied += 1;
                let s = format!(
                    "{}: store to writable page B faulted through pgd {}",
                    self.phase,
                    trap::current_pgd()
                );
                self.hw.note(s);
            }
        }
    }

    /// Data and stack pages (text pages come first and are read-only).
    fn data_pages(mm: &Mm) -> impl Iterator<Item = (VirtAddr, physmem::Frame)> + '_ {
        mm.pages().skip(TaskSize::SMALL.text as usize)
    }

    fn write_tokens(&mut self, t: &Task) {
        let mem = self.k.pm().mem();
        for (va, f) in Self::data_pages(&t.mm) {
            let tok = token(t.writer, va);
            // SAFETY: `va` is one of this task's own writable user pages and
            // its pgd is loaded.
            let ok = unsafe { arch::probe_write(va.as_u64(), tok) };
            let back = mem.load_u32(f.start()).ok();
            self.hw.user_checks += 1;
            if !ok || back != Some(tok) {
                self.hw.user_mismatch += 1;
                let s = format!(
                    "{}: task {} store {tok:#x} at {va}: ok {ok}, frame {f} holds {back:?}",
                    self.phase, t.id
                );
                self.hw.note(s);
            }
        }
    }

    fn read_tokens(&mut self, t: &Task, cow: bool) {
        for (va, f) in Self::data_pages(&t.mm) {
            let tok = token(t.writer, va);
            let got = arch::probe_read(va.as_u64());
            self.hw.user_checks += 1;
            if got != Some(tok) {
                self.hw.user_mismatch += 1;
                let s = format!(
                    "{}: task {} read {got:?} at {va} (frame {f}), expected {tok:#x}",
                    self.phase, t.id
                );
                self.hw.note(s);
                continue;
            }
            if cow {
                // SAFETY: the same value goes back to the task's own page, so
                // even a store that wrongly succeeds changes nothing.
                if unsafe { arch::probe_write(va.as_u64(), tok) } {
                    self.hw.cow_not_enforced += 1;
                    let s = format!(
                        "{}: forked task {} could write its copy-on-write page {va}",
                        self.phase, t.id
                    );
                    self.hw.note(s);
                } else {
                    self.hw.cow_faults += 1;
                }
            }
        }
    }

    // ---- tasks -------------------------------------------------------------

    fn exec(&mut self) -> usize {
        let mm = match self.k.exec_mm(0, TaskSize::SMALL) {
            Ok(mm) => mm,
            Err(e) => self.fail("exec", e),
        };
        let id = self.next_id;
        self.next_id += 1;
        self.tasks += 1;
        let t = Task { id, writer: id, mm };
        self.switch_to(t.mm.pgd());
        self.write_tokens(&t);
        self.check_kernel();
        self.live.push(t);
        self.live.len() - 1
    }

    fn fork(&mut self, i: usize) {
        let child = match self.k.fork_mm(0, &self.live[i].mm) {
            Ok(mm) => mm,
            Err(e) => self.fail("fork", e),
        };
        let t = Task {
            id: self.next_id,
            writer: self.live[i].writer,
            mm: child,
        };
        self.next_id += 1;
        self.tasks += 1;
        self.forks += 1;
        self.switch_to(t.mm.pgd());
        self.read_tokens(&t, true);
        self.check_kernel();
        self.live.push(t);
    }

    fn exit(&mut self, i: usize) {
        let t = self.live.swap_remove(i);
        // Never free the pgd CR3 points at: switch to init_mm's first.
        self.switch_to_swapper();
        if let Err(e) = self.k.exit_mm(0, t.mm) {
            self.fail("exit", e);
        }
    }

    fn schedule(&mut self, i: usize) {
        let pgd = self.live[i].mm.pgd();
        self.switch_to(pgd);
        let t = self.live.swap_remove(i);
        self.read_tokens(&t, false);
        self.live.push(t);
        self.check_kernel();
    }

    // ---- agents ------------------------------------------------------------

    /// The graphics driver: pages A and B to uncached / read-only, or back.
    fn convert(&mut self) {
        let (va_a, va_b) = (self.va(PAGE_A), self.va(PAGE_B));
        let pk = match self.k.page_kernel_at(va_a) {
            Some(f) => f,
            None => self.fail("page_kernel_at", "aperture outside the direct map"),
        };
        let (fa, fb) = if self.split {
            (pk, pk)
        } else {
            (pk | EntryFlags::PCD | EntryFlags::PWT, pk - EntryFlags::RW)
        };
        if let Err(e) = self
            .k
            .change_page_attr(va_a, 1, fa)
            .and_then(|()| self.k.change_page_attr(va_b, 1, fb))
        {
            self.fail("change_page_attr", e);
        }
        self.k.global_flush_tlb();
        self.split = !self.split;
        self.conversions += 1;
    }

    /// vmalloc and vfree small areas. The new area's frames (the ones
    /// `vmalloc_frames` did not list before) get canaries through the direct
    /// map; then the MMU itself says which frame each page of the area maps
    /// to: the kernel reads every page through swapper. No software walker
    /// is involved in what the probes later compare against.
    fn vmalloc_agent(&mut self) {
        if self.areas.len() >= VM_AREAS {
            let (va, _) = self.areas.remove(0);
            if let Err(e) = self.k.vfree(va) {
                self.fail("vfree", e);
            }
            return;
        }
        let n = 1 + self.rng.below(4);
        let before: BTreeSet<physmem::Frame> = self.k.vmalloc_frames().into_iter().collect();
        let va = match self.k.vmalloc(n) {
            Ok(va) => va,
            Err(e) => self.fail("vmalloc", e),
        };
        let fresh: BTreeSet<u32> = self
            .k
            .vmalloc_frames()
            .into_iter()
            .filter(|f| !before.contains(f))
            .map(|f| f.pfn() as u32)
            .collect();
        let mem = self.k.pm().mem();
        for &pfn in &fresh {
            let pa = u64::from(pfn) << 12;
            let r = mem
                .store_u32(PhysAddr::new(pa), MAGIC)
                .and_then(|()| mem.store_u32(PhysAddr::new(pa + 4), pfn));
            if let Err(e) = r {
                self.fail("vmalloc canary", e);
            }
        }
        self.switch_to_swapper();
        let mut pas = Vec::new();
        for i in 0..n {
            let v = va.as_u64() + i * PAGE_SIZE;
            arch::invlpg(v);
            match (arch::probe_read(v), arch::probe_read(v + 4)) {
                (Some(MAGIC), Some(pfn)) if fresh.contains(&pfn) => {
                    pas.push(PhysAddr::new(u64::from(pfn) << 12));
                }
                got => {
                    self.hw.wrong_canary += 1;
                    let s = format!(
                        "vmalloc page {v:#x} reads {got:?} through swapper: none of its area's frames"
                    );
                    self.hw.note(s);
                    pas.push(PhysAddr::new(0));
                }
            }
        }
        self.areas.push((va, pas));
    }

    // ---- the in-kernel checker ----------------------------------------------

    fn sw_check(&mut self, label: &str) {
        let r = match self.k.verify() {
            Ok(r) => r,
            Err(e) => self.fail("verify", e),
        };
        self.sw.checks += 1;
        self.sw.stale += r.count(ViolationKind::Stale) as u64;
        self.sw.dangling += r.count(ViolationKind::Dangling) as u64;
        self.sw.not_constructed += r.count(ViolationKind::NotConstructed) as u64;
        self.sw.leak += r.count(ViolationKind::Leak) as u64;
        self.sw.leaked_frames = r.leaked_frames;
        for v in r.violations.iter().take(2) {
            if self.sw.details.len() < DETAILS {
                let s = format!("{label}: {} {}", v.kind.name(), v.detail);
                crate::kprintln!("sw: {s}");
                self.sw.details.push(s);
            }
        }
    }

    // ---- phases --------------------------------------------------------------

    fn live_phase(&mut self) {
        let p = self.p;
        let quarter = (p.tasks / 4).max(1);
        let mut next_check = quarter;
        let mut step = 0u64;
        while self.tasks < p.tasks {
            step += 1;
            if step.is_multiple_of(p.cpa_every) {
                self.convert();
            }
            if step.is_multiple_of(2 * p.cpa_every + 3) {
                self.vmalloc_agent();
            }
            let r = self.rng.below(10);
            let n = self.live.len();
            if n == 0 || (r < 4 && n < p.max_live) {
                self.exec();
            } else if r < 6 && n < p.max_live {
                let i = self.rng.below(n as u64) as usize;
                self.fork(i);
            } else if r < 8 {
                let i = self.rng.below(n as u64) as usize;
                self.exit(i);
            } else {
                let i = self.rng.below(n as u64) as usize;
                self.schedule(i);
            }
            if self.tasks >= next_check {
                next_check += quarter;
                self.switch_to_swapper();
                self.sw_check("live");
                report::event(&format!(
                    "{{\"event\":\"progress\",\"tasks\":{},\"of\":{},\"hw_violations\":{},\"sw_violations\":{}}}",
                    self.tasks,
                    p.tasks,
                    self.hw.violations(),
                    self.sw.violations()
                ));
            }
        }
    }

    fn drain(&mut self) {
        while !self.live.is_empty() {
            self.exit(self.live.len() - 1);
        }
        if self.split {
            self.convert();
        }
    }

    fn cached_pgds(&self) -> usize {
        self.k
            .cache_pgds()
            .iter()
            .filter(|(_, allocated)| !allocated)
            .count()
    }

    /// Hands `n` pgds to new tasks at once (the cached ones first), probing
    /// through each, then exits them all.
    fn hand_out(&mut self, n: usize) {
        let first = self.live.len();
        for _ in 0..n {
            self.exec();
        }
        while self.live.len() > first {
            self.exit(self.live.len() - 1);
        }
    }

    fn closing(&mut self) {
        self.phase = "closing split";
        let cached = self.cached_pgds();
        self.convert();
        self.sw_check("closing split, every pgd cached");
        self.hand_out(cached + 2);
        self.phase = "closing revert";
        self.convert();
        let cached = self.cached_pgds();
        self.sw_check("closing revert, every pgd cached");
        self.hand_out(cached.max(1));
        self.phase = "final";
    }

    fn result(&mut self, cycles: u64) -> ! {
        self.switch_to_swapper();
        let k = self.k;
        let hw_v = self.hw.violations();
        let sw_v = self.sw.violations();
        let mut kinds: Vec<&str> = Vec::new();
        if self.hw.ro_not_enforced > 0 || self.sw.stale > 0 {
            kinds.push("stale");
        }
        if self.hw.wrong_canary + self.hw.missing > 0 || self.sw.dangling > 0 {
            kinds.push("dangling");
        }
        if self.hw.user_mismatch + self.hw.cow_not_enforced + self.hw.rw_denied > 0 {
            kinds.push("user");
        }
        if self.sw.not_constructed > 0 {
            kinds.push("not-constructed");
        }
        if self.sw.leak > 0 || self.sw.leaked_frames > 0 {
            kinds.push("leak");
        }
        let verdict = if kinds.is_empty() {
            String::from("correct")
        } else {
            format!("caught {}", kinds.join("+"))
        };
        let hw_seen = hw_v > 0;
        let sw_seen = self.sw.stale + self.sw.dangling > 0;
        let agree = hw_seen == sw_seen;
        let details: Vec<String> = self
            .hw
            .details
            .iter()
            .map(|s| json_str(&format!("hw {s}")))
            .chain(self.sw.details.iter().map(|s| json_str(&format!("sw {s}"))))
            .collect();
        let st = k.stats();
        let h = &self.hw;
        crate::kprintln!(
            "{} {}: {} tasks ({} forks), {} context switches, {} conversions, {} TLB flushes, {} vmalloc faults, {} canary reads: hardware {} violations, checker {}; {} frames leaked -> {verdict}",
            self.p.mode, self.p.scheme, self.tasks, self.forks, self.switches, self.conversions,
            crate::mm::TLB_FLUSHES.load(Ordering::Relaxed),
            trap::VMALLOC_FAULTS.load(Ordering::Relaxed), h.canary_reads, hw_v, sw_v, self.sw.leaked_frames
        );
        report::event(&format!(
            concat!(
                "{{\"event\":\"result\",\"mode\":\"{}\",\"scheme\":\"{}\",\"lock\":\"{}\",\"cpus\":1,",
                "\"tasks\":{},\"forks\":{},\"context_switches\":{},\"conversions\":{},\"tlb_flushes\":{},",
                "\"vmalloc_faults\":{},\"probe_faults\":{},\"canary_reads\":{},\"user_checks\":{},",
                "\"cow_faults\":{},\"ro_faults\":{},",
                "\"hw\":{{\"wrong_canary\":{},\"missing\":{},\"ro_not_enforced\":{},\"rw_denied\":{},\"user_mismatch\":{},\"cow_not_enforced\":{}}},",
                "\"hw_violations\":{},",
                "\"sw\":{{\"checks\":{},\"stale\":{},\"dangling\":{},\"not_constructed\":{},\"leak\":{}}},",
                "\"sw_violations\":{},\"violations\":{},\"leaked_frames\":{},\"pgd_allocs\":{},\"free_frames\":{},",
                "\"cycles\":{},\"verdict\":{},\"agree\":{},\"details\":[{}]}}"
            ),
            self.p.mode, self.p.scheme, self.p.lock,
            self.tasks, self.forks, self.switches, self.conversions,
            crate::mm::TLB_FLUSHES.load(Ordering::Relaxed),
            trap::VMALLOC_FAULTS.load(Ordering::Relaxed),
            trap::PROBE_FAULTS.load(Ordering::Relaxed),
            h.canary_reads, h.user_checks, h.cow_faults, h.ro_faults,
            h.wrong_canary, h.missing, h.ro_not_enforced, h.rw_denied, h.user_mismatch, h.cow_not_enforced,
            hw_v,
            self.sw.checks, self.sw.stale, self.sw.dangling, self.sw.not_constructed, self.sw.leak,
            sw_v, hw_v + sw_v, self.sw.leaked_frames, st.pgd_allocs, k.pm().free_frames(),
            cycles, json_str(&verdict), agree, details.join(",")
        ));
        report::event(&format!(
            "{{\"event\":\"done\",\"verdict\":{}}}",
            json_str(&verdict)
        ));
        arch::qemu_exit(report::EXIT_DONE)
    }
}
