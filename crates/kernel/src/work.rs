//! One CPU's share of the workload on the real MMU: tasks and probes.
//!
//! Tasks get their pgd from `pgd_alloc` (through `exec_mm`/`fork_mm`), and
//! the CPU loads it into CR3 — a real context switch — before it touches
//! the task's user pages (writes a token per page after exec, reads them
//! back later, and after fork checks that the child sees the parent's
//! tokens and may not write them: copy-on-write pages are read-only, and
//! CR0.WP makes the CPU refuse the kernel's store too). While a task's pgd
//! is loaded the CPU reads *canaries* through it: every page of the
//! aperture (reserved direct-map RAM) and every vmalloc page holds the
//! magic `PGDC` and its own page frame number, so a read through a wrong
//! translation is caught by value and a read through a missing one by a
//! #PF (the probes' exception-table fixup). With `force_walk` the CPU drops
//! the address's TLB entry first (`invlpg`) so the MMU walks this pgd's
//! tables; without it (the application processors of an SMP run) a stale
//! TLB entry left by a missed shootdown shows too.
//!
//! Page B of the aperture is what `change_page_attr` makes read-only: a
//! store to it must fault exactly while swapper maps it read-only. The
//! expected state comes from a sequence count the converting CPU makes odd
//! for the whole conversion, `global_flush_tlb` included; a probe that
//! overlaps a conversion is not judged.
//!
//! Every CPU runs its exec, fork and exit on its own token of the pgd
//! system ([`crate::pcpu`]: `Kernel::claim_cpu`, the kernel's per-CPU fast
//! path), never through the per-call `Kernel::exec_mm(cpu, ..)` forms; each
//! scheduling step starts at a quiescent point where the CPU serves remote
//! cache operations.

use crate::arch;
use crate::cmdline::Params;
use crate::mm::{APERTURE, APERTURE_BYTES};
use crate::report;
use crate::trap;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use pgdcache::mm::{Mm, TaskSize};
use pgdcache::{Kernel, Pgd};
use physmem::{Lowmem, PhysAddr, PhysMem, VirtAddr, PAGE_SIZE};

/// "PGDC": the first word of every canary page; the second is its pfn.
pub const MAGIC: u32 = 0x4344_4750;
/// The aperture page the agent makes uncached.
pub const PAGE_A: u64 = APERTURE + 5 * PAGE_SIZE;
/// The aperture page the agent makes read-only.
pub const PAGE_B: u64 = APERTURE + 9 * PAGE_SIZE;
/// How many details of violations each CPU reports.
const DETAILS: usize = 8;

/// splitmix64: the workload's choices, reproducible from the seed.
pub struct Rng(pub u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// A number in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// What the hardware saw on one CPU.
#[derive(Default, Clone)]
pub struct Hw {
    pub canary_reads: u64,
    pub user_checks: u64,
    pub cow_faults: u64,
    pub ro_faults: u64,
    /// Page-B probes not judged because a conversion overlapped them.
    pub raced: u64,
    /// A canary read returned another page's (or no) canary.
    pub wrong_canary: u64,
    /// A canary read faulted.
    pub missing: u64,
    /// A store to page B succeeded while swapper maps it read-only.
    pub ro_not_enforced: u64,
    /// A store to page B faulted while swapper maps it writable.
    pub rw_denied: u64,
    /// A user page read back something else than its token.
    pub user_mismatch: u64,
    /// A forked child could write its copy-on-write page.
    pub cow_not_enforced: u64,
    pub details: Vec<String>,
}

impl Hw {
    /// Violations seen.
    pub fn violations(&self) -> u64 {
        self.wrong_canary
            + self.missing
            + self.ro_not_enforced
            + self.rw_denied
            + self.user_mismatch
            + self.cow_not_enforced
    }
    /// Records a detail (the first few).
    pub fn note(&mut self, s: String) {
        if self.details.len() < DETAILS {
            crate::kprintln!("hw: {s}");
            self.details.push(s);
        }
    }
    /// Adds another CPU's counts.
    pub fn merge(&mut self, o: &Hw) {
        self.canary_reads += o.canary_reads;
        self.user_checks += o.user_checks;
        self.cow_faults += o.cow_faults;
        self.ro_faults += o.ro_faults;
        self.raced += o.raced;
        self.wrong_canary += o.wrong_canary;
        self.missing += o.missing;
        self.ro_not_enforced += o.ro_not_enforced;
        self.rw_denied += o.rw_denied;
        self.user_mismatch += o.user_mismatch;
        self.cow_not_enforced += o.cow_not_enforced;
        for d in &o.details {
            if self.details.len() < 2 * DETAILS {
                self.details.push(d.clone());
            }
        }
    }
}

/// What every CPU shares.
pub struct Shared {
    pub k: &'static Kernel<Lowmem>,
    pub p: Params,
    /// Pages A and B converted in swapper (the reference state).
    pub split: AtomicBool,
    /// Odd while a conversion (and its shootdown) is in flight.
    pub seq: AtomicU64,
    /// vmalloc areas with the physical page of each of their pages.
    pub areas: spin::RwLock<Vec<(VirtAddr, Vec<PhysAddr>)>>,
    /// Application processors that hold their pgd token (the start
    /// rendezvous: the BSP says `go` when all do).
    pub aps_claimed: AtomicUsize,
    /// The application processors may start their tasks.
    pub go: AtomicBool,
    /// Application processors done with their tasks.
    pub aps_done: AtomicUsize,
    /// Their totals.
    pub totals: spin::Mutex<Vec<Totals>>,
    /// Shootdown handshake, one mailbox per CPU (see `run::shootdown_check`).
    pub mail: [AtomicU64; crate::smp::MAX_CPUS],
    /// The application processors may park (halt until interrupted).
    pub park: AtomicBool,
    /// Application processors that gave their pgd token back for good (the
    /// end-of-run rendezvous).
    pub aps_released: AtomicUsize,
    /// Tasks each CPU has run so far (progress).
    pub ap_tasks: [AtomicU64; crate::smp::MAX_CPUS],
}

/// One CPU's counts at the end.
#[derive(Default, Clone)]
pub struct Totals {
    pub tasks: u64,
    pub forks: u64,
    pub switches: u64,
    pub hw: Hw,
}

struct Task {
    id: u64,
    /// The task whose exec wrote the tokens this address space shares.
    writer: u64,
    mm: Mm,
}

fn token(writer: u64, va: VirtAddr) -> u32 {
    (writer as u32).wrapping_mul(0x9e37_79b9) ^ (va.as_u64() as u32) ^ 0x5a5a_0000
}

/// One CPU running tasks.
pub struct Cpu {
    pub sh: &'static Shared,
    pub id: usize,
    pub rng: Rng,
    live: Vec<Task>,
    next_id: u64,
    pub t: Totals,
    /// `invlpg` before every probe (the MMU walks the current pgd).
    pub force_walk: bool,
    pub phase: &'static str,
}

impl Cpu {
    /// CPU `id`'s state.
    pub fn new(sh: &'static Shared, id: usize) -> Cpu {
        Cpu {
            sh,
            id,
            rng: Rng(sh.p.seed ^ ((id as u64) << 40)),
            live: Vec::new(),
            // Task ids are unique across CPUs.
            next_id: 1 + ((id as u64) << 32),
            t: Totals::default(),
            force_walk: true,
            phase: "live",
        }
    }

    /// Stops the kernel with an error report.
    pub fn fail(&self, what: &str, e: impl core::fmt::Display) -> ! {
        report::fail(self.phase, &format!("cpu {}: {what}: {e}", self.id))
    }

    /// The direct-map address of physical `pa`.
    pub fn va(&self, pa: u64) -> VirtAddr {
        VirtAddr::new(self.sh.k.mode().page_offset() + pa)
    }

    /// Tasks alive on this CPU.
    pub fn live(&self) -> usize {
        self.live.len()
    }

    // ---- context switches -------------------------------------------------

    fn switch_to(&mut self, pgd: Pgd) {
        // SAFETY: every pgd from pgd_alloc carries the kernel part (copied
        // from swapper or shared with it), which maps this code, its stack
        // and heap; that is what the probes verify.
        unsafe { arch::write_cr3(pgd.0.as_u64()) };
        self.t.switches += 1;
    }

    /// Back to init_mm's tables.
    pub fn switch_to_swapper(&mut self) {
        // SAFETY: swapper_pg_dir maps the whole kernel.
        unsafe { arch::write_cr3(self.sh.k.swapper().0.as_u64()) };
    }

    // ---- probes through the current pgd ------------------------------------

    fn check_canary(&mut self, va: VirtAddr, pa: PhysAddr) -> bool {
        if self.force_walk {
            arch::invlpg(va.as_u64());
        }
        self.t.hw.canary_reads += 1;
        let pfn = (pa.as_u64() >> 12) as u32;
        match (
            arch::probe_read(va.as_u64()),
            arch::probe_read(va.as_u64() + 4),
        ) {
            (Some(MAGIC), Some(f)) if f == pfn => true,
            (Some(m), Some(f)) => {
                self.t.hw.wrong_canary += 1;
                let s = format!(
                    "{} cpu {}: {va} read {m:#x}/{f:#x} through pgd {}, expected the canary of pfn {pfn:#x}",
                    self.phase,
                    self.id,
                    trap::current_pgd()
                );
                self.t.hw.note(s);
                false
            }
            _ => {
                self.t.hw.missing += 1;
                let s = format!(
                    "{} cpu {}: {va} faulted (error {:#x}) through pgd {}, expected the canary of pfn {pfn:#x}",
                    self.phase,
                    self.id,
                    trap::LAST_PROBE_ERR.load(Ordering::Relaxed),
                    trap::current_pgd()
                );
                self.t.hw.note(s);
                false
            }
        }
    }

    /// Reads kernel memory through the current pgd: the converted pages,
    /// a few other aperture pages, every vmalloc page; and tries a store to
    /// page B.
    pub fn check_kernel(&mut self) {
        self.check_canary(self.va(PAGE_A), PhysAddr::new(PAGE_A));
        let b_ok = self.check_canary(self.va(PAGE_B), PhysAddr::new(PAGE_B));
        for _ in 0..4 {
            let pa = APERTURE + self.rng.below(APERTURE_BYTES / PAGE_SIZE) * PAGE_SIZE;
            self.check_canary(self.va(pa), PhysAddr::new(pa));
        }
        {
            let areas = self.sh.areas.read();
            for (va, pas) in areas.iter() {
                for (i, &pa) in pas.iter().enumerate() {
                    self.check_canary(VirtAddr::new(va.as_u64() + i as u64 * PAGE_SIZE), pa);
                }
            }
        }
        if b_ok {
            self.check_store_b();
        }
    }

    /// A store to page B must fault exactly while swapper maps it
    /// read-only; returns whether it faulted, or `None` if a conversion
    /// overlapped the probe.
    pub fn check_store_b(&mut self) -> Option<bool> {
        let va = self.va(PAGE_B).as_u64() + 8;
        let s1 = self.sh.seq.load(Ordering::Acquire);
        if s1 & 1 == 1 {
            self.t.hw.raced += 1;
            return None;
        }
        let split = self.sh.split.load(Ordering::Acquire);
        if self.force_walk {
            arch::invlpg(va);
        }
        // SAFETY: page B is an aperture page (reserved RAM) the kernel owns;
        // its canary just read right, so this store lands in page B.
        let stored = unsafe { arch::probe_write(va, 0x0b0b_0b0b) };
        if self.sh.seq.load(Ordering::Acquire) != s1 {
            self.t.hw.raced += 1;
            return None;
        }
        match (split, stored) {
            (true, false) => self.t.hw.ro_faults += 1,
            (false, true) => {}
            (true, true) => {
                self.t.hw.ro_not_enforced += 1;
                let s = format!(
                    "{} cpu {}: store to read-only page B allowed through pgd {} (a stale large-page entry or TLB entry)",
                    self.phase,
                    self.id,
                    trap::current_pgd()
                );
                self.t.hw.note(s);
            }
            (false, false) => {
                self.t.hw.rw_denied += 1;
                let s = format!(
                    "{} cpu {}: store to writable page B faulted through pgd {}",
                    self.phase,
                    self.id,
                    trap::current_pgd()
                );
                self.t.hw.note(s);
            }
        }
        Some(!stored)
    }

    /// Data and stack pages (text pages come first and are read-only).
    fn data_pages(mm: &Mm) -> impl Iterator<Item = (VirtAddr, physmem::Frame)> + '_ {
        mm.pages().skip(TaskSize::SMALL.text as usize)
    }

    fn write_tokens(&mut self, t: &Task) {
        let mem = self.sh.k.pm().mem();
        for (va, f) in Self::data_pages(&t.mm) {
            let tok = token(t.writer, va);
            // SAFETY: `va` is one of this task's own writable user pages and
            // its pgd is loaded.
            let ok = unsafe { arch::probe_write(va.as_u64(), tok) };
            let back = mem.load_u32(f.start()).ok();
            self.t.hw.user_checks += 1;
            if !ok || back != Some(tok) {
                self.t.hw.user_mismatch += 1;
                let s = format!(
                    "{} cpu {}: task {} store {tok:#x} at {va}: ok {ok}, frame {f} holds {back:?}",
                    self.phase, self.id, t.id
                );
                self.t.hw.note(s);
            }
        }
    }

    fn read_tokens(&mut self, t: &Task, cow: bool) {
        for (va, f) in Self::data_pages(&t.mm) {
            let tok = token(t.writer, va);
            let got = arch::probe_read(va.as_u64());
            self.t.hw.user_checks += 1;
            if got != Some(tok) {
                self.t.hw.user_mismatch += 1;
                let s = format!(
                    "{} cpu {}: task {} read {got:?} at {va} (frame {f}), expected {tok:#x}",
                    self.phase, self.id, t.id
                );
                self.t.hw.note(s);
                continue;
            }
            if cow {
                // SAFETY: the same value goes back to the task's own page, so
                // even a store that wrongly succeeds changes nothing.
                if unsafe { arch::probe_write(va.as_u64(), tok) } {
                    self.t.hw.cow_not_enforced += 1;
                    let s = format!(
                        "{} cpu {}: forked task {} could write its copy-on-write page {va}",
                        self.phase, self.id, t.id
                    );
                    self.t.hw.note(s);
                } else {
                    self.t.hw.cow_faults += 1;
                }
            }
        }
    }

    // ---- tasks -------------------------------------------------------------

    /// Runs one pgd-system operation on this CPU's token (see
    /// [`crate::pcpu`]); stops the kernel if it fails.
    fn on_token<R, E: core::fmt::Display>(
        &self,
        what: &str,
        f: impl FnOnce(&mut crate::pcpu::Token) -> Result<R, E>,
    ) -> R {
        match crate::pcpu::with(f) {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => self.fail(what, e),
            Err(e) => self.fail(what, e),
        }
    }

    /// exec: a new task on a fresh pgd, probed through.
    pub fn exec(&mut self) {
        let mm = self.on_token("exec", |t| t.exec_mm(TaskSize::SMALL));
        let id = self.next_id;
        self.next_id += 1;
        self.t.tasks += 1;
        let t = Task { id, writer: id, mm };
        self.switch_to(t.mm.pgd());
        self.write_tokens(&t);
        self.check_kernel();
        self.live.push(t);
    }

    fn fork(&mut self, i: usize) {
        let parent = &self.live[i].mm;
        let child = self.on_token("fork", |t| t.fork_mm(parent));
        let t = Task {
            id: self.next_id,
            writer: self.live[i].writer,
            mm: child,
        };
        self.next_id += 1;
        self.t.tasks += 1;
        self.t.forks += 1;
        self.switch_to(t.mm.pgd());
        self.read_tokens(&t, true);
        self.check_kernel();
        self.live.push(t);
    }

    /// exit: the last task, or task `i`.
    pub fn exit(&mut self, i: usize) {
        let t = self.live.swap_remove(i);
        // Never free the pgd CR3 points at: switch to init_mm's first.
        self.switch_to_swapper();
        self.on_token("exit", |tok| tok.exit_mm(t.mm));
    }

    fn schedule(&mut self, i: usize) {
        let pgd = self.live[i].mm.pgd();
        self.switch_to(pgd);
        let t = self.live.swap_remove(i);
        self.read_tokens(&t, false);
        self.live.push(t);
        self.check_kernel();
    }

    /// One scheduling step: exec, fork, exit or run a task. Each step
    /// starts at a quiescent point (a remote cache operation waiting for
    /// this CPU's slots gets them here at the latest).
    pub fn step(&mut self) {
        crate::pcpu::serve();
        let r = self.rng.below(10);
        let n = self.live.len();
        let max = self.sh.p.max_live;
        if n == 0 || (r < 4 && n < max) {
            self.exec();
        } else if r < 6 && n < max {
            let i = self.rng.below(n as u64) as usize;
            self.fork(i);
        } else if r < 8 {
            let i = self.rng.below(n as u64) as usize;
            self.exit(i);
        } else {
            let i = self.rng.below(n as u64) as usize;
            self.schedule(i);
        }
    }

    /// Exits every task.
    pub fn drain(&mut self) {
        while !self.live.is_empty() {
            self.exit(self.live.len() - 1);
        }
    }
}
