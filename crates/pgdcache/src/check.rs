//! The checker: every pgd, live and cached, against `swapper_pg_dir`, and
//! every frame accounted for.
//!
//! Live pgds come from the address-space list (`mmlist`); cached ones come
//! from the object cache itself — never from the list a scheme keeps, so a
//! scheme that forgets a pgd (the bug the seed fixes) is caught. For each
//! kernel entry of each pgd:
//!
//! * equal to swapper's: fine;
//! * not present where swapper's is present, in the vmalloc area: counted
//!   as lazily missing, allowed (`vmalloc_fault` will copy it);
//! * a cached pgd the scheme lets lag by design (`slab-ticket`: an old
//!   ticket, refreshed at join): counted as known stale, allowed;
//! * a pointer to a table that is not one of swapper's live kernel tables —
//!   freed, or freed and reused: [`ViolationKind::Dangling`];
//! * anything else: [`ViolationKind::Stale`].
//!
//! Cached pgds must also be in constructed state (user part clear; PAE
//! pmds in `pmd_cache` all zero). Frame accounting: every frame that is
//! not free must be reachable — a kernel table of swapper or on the deferred
//! list, a slab page, a pgd page, a user table or data page of a live
//! address space, or a vmalloc page — else it is a leak. And every page of
//! every live vmalloc area maps that area's own frame in swapper
//! ([`ViolationKind::VmallocUnmapped`] otherwise).

use crate::cpa::Cpa;
use crate::error::KernelError;
use crate::pgd::{Pgd, PgdCaches};
use crate::prelude::*;
use crate::swapper::{KernelMem, Swapper};
use crate::tracker::Tracker;
use crate::vmalloc::Vmalloc;
use alloc::collections::BTreeSet;
use core::sync::atomic::Ordering;
use physmem::{Frame, FrameState, Owner, PhysAddr, PhysMem};
use x86paging::boot::KernelSpace;
use x86paging::table::{entry_pa_at, read_entry};
use x86paging::{Cursor, Entry, Level, PagingMode};

/// What is wrong: the one violation type of the workspace, shared by this
/// checker, the simulator's live checks, the kernel's verdicts and the CLI.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum ViolationKind {
    /// A kernel entry differs from swapper's and points at live memory.
    Stale,
    /// A kernel entry points at a freed (or freed and reused) table.
    Dangling,
    /// A frame freed with poisoning on was written before it was allocated
    /// again (its `POISON_FREE` fill changed): a write through a stale
    /// reference. The page allocator sees it at the allocation
    /// (`PhysMemory::poison_stats`, Linux's "pagealloc: memory corruption");
    /// this checker reports it.
    UseAfterFree,
    /// A cached pgd or pmd is not in constructed state.
    NotConstructed,
    /// A frame is in use but nothing owns it.
    Leak,
    /// A page of a live vmalloc area does not map the area's own frame in
    /// `swapper_pg_dir` (unmapped, or mapping another frame).
    VmallocUnmapped,
    /// A kernel access through a pgd faulted where swapper maps the page
    /// (not a lazy vmalloc fault): seen by a CPU, never by this checker.
    Fault,
}

impl ViolationKind {
    /// Every kind, in the order a verdict names the first one present:
    /// the worst (a walk into freed memory) first.
    pub const ALL: [ViolationKind; 7] = [
        ViolationKind::Dangling,
        ViolationKind::UseAfterFree,
        ViolationKind::Stale,
        ViolationKind::Fault,
        ViolationKind::NotConstructed,
        ViolationKind::Leak,
        ViolationKind::VmallocUnmapped,
    ];

    /// Lower-case name for reports.
    pub fn name(self) -> &'static str {
        match self {
            ViolationKind::Stale => "stale",
            ViolationKind::Dangling => "dangling",
            ViolationKind::UseAfterFree => "use-after-free",
            ViolationKind::NotConstructed => "not-constructed",
            ViolationKind::Leak => "leak",
            ViolationKind::VmallocUnmapped => "vmalloc-unmapped",
            ViolationKind::Fault => "fault",
        }
    }
}

impl core::fmt::Display for ViolationKind {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

/// One violation.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Violation {
    /// What.
    pub kind: ViolationKind,
    /// The pgd, if the violation is in one.
    pub pgd: Option<u64>,
    /// Whether that pgd is cached (not in use).
    pub cached: bool,
    /// The pgd entry index.
    pub index: Option<usize>,
    /// Details.
    pub detail: String,
}

/// The checker's result.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Report {
    /// Live pgds checked.
    pub live: usize,
    /// Cached pgds checked.
    pub cached: usize,
    /// Entries allowed to lag (vmalloc, not yet faulted).
    pub lazy_missing: usize,
    /// Cached ticket-scheme pgds known to be stale.
    pub known_stale: usize,
    /// Frames in use.
    pub frames_used: u64,
    /// Frames in use that nothing owns.
    pub leaked_frames: u64,
    /// Violations.
    pub violations: Vec<Violation>,
}

impl Report {
    /// True if nothing is wrong.
    pub fn is_clean(&self) -> bool {
        self.violations.is_empty()
    }
    /// Number of violations of `kind`.
    pub fn count(&self, kind: ViolationKind) -> usize {
        self.violations.iter().filter(|v| v.kind == kind).count()
    }
}

/// The checker: borrows every part of the pgd system it reads, and reads
/// each from its owner (cached pgds from the object cache itself).
pub(crate) struct Checker<'a, M: KernelMem> {
    pub(crate) sw: &'a Swapper<M>,
    pub(crate) ks: &'a KernelSpace,
    pub(crate) caches: &'a PgdCaches<M>,
    pub(crate) tracker: &'a dyn Tracker<M>,
    pub(crate) cpa: &'a Cpa<M>,
    pub(crate) vm: &'a Vmalloc<M>,
}

impl<M: KernelMem> Checker<'_, M> {
    fn mode(&self) -> PagingMode {
        self.sw.mode
    }

    fn pm(&self) -> &physmem::PhysMemory<M> {
        &self.sw.pm
    }

    fn swapper(&self) -> Pgd {
        Pgd(self.sw.pgd)
    }

    fn pgd_entry(&self, pgd: Pgd, index: usize) -> Result<Entry, KernelError> {
        self.sw.read(pgd.0, index)
    }

    /// Swapper's kernel page tables (the live ones a kernel entry may point at).
    fn swapper_tables(&self) -> Result<BTreeSet<Frame>, KernelError> {
        let mut out = BTreeSet::new();
        out.insert(self.swapper().0.frame());
        let all = 0..self.mode().ptrs_per_pgd();
        self.collect_tables(self.swapper(), all, &mut out, &mut Vec::new());
        Ok(out)
    }

    /// Collects the table frames below entries `pgd_entries` of `pgd`, and
    /// (into `data`) the 4 KiB leaf frames. A table already collected
    /// (the PAE kernel pmd every pgd shares) is not entered twice; a freed
    /// table is not entered at all (the entry checks report it).
    fn collect_tables(
        &self,
        pgd: Pgd,
        pgd_entries: core::ops::Range<usize>,
        tables: &mut BTreeSet<Frame>,
        data: &mut Vec<Frame>,
    ) {
        let mode = self.mode();
        // Unsigned linear addresses: the end of the last entry is the top
        // of the address space, which the cursor reads modulo its width.
        let at = |i: usize| physmem::VirtAddr::new(i as u64 * mode.span(Level::Pgd));
        let (start, end) = (at(pgd_entries.start), at(pgd_entries.end));
        let cur = Cursor::new(self.pm(), mode, pgd.0);
        let mut it = cur.entries(start..end);
        while let Some(slot) = it.next() {
            let Ok(slot) = slot else {
                continue; // a freed or foreign table: not entered
            };
            if slot.level == Level::Pte {
                data.extend(slot.page().map(|pa| pa.frame()));
            } else if let Some(t) = slot.table() {
                let live = self.pm().frame_state(t.frame()) == FrameState::Live;
                if !live || !tables.insert(t.frame()) {
                    it.skip_children();
                }
            }
        }
    }

    /// Checks every pgd and the frame accounting.
    pub(crate) fn run(&self) -> Result<Report, KernelError> {
        let mode = self.mode();
        let pm = self.pm();
        let mut rep = Report::default();
        let kernel_tables = self.swapper_tables()?;
        let live: BTreeSet<Pgd> = self
            .tracker
            .mmlist()
            .snapshot()
            .into_iter()
            .map(Pgd)
            .collect();
        let mut all: Vec<(Pgd, bool)> = live.iter().map(|&p| (p, false)).collect();
        let preconstructed = self.caches.preconstructed();
        for (p, allocated) in self.caches.pgd_objects() {
            if !allocated {
                // Free objects of a ctor-less cache are raw memory, not pgds.
                if preconstructed {
                    all.push((p, true));
                }
            } else if !live.contains(&p) {
                all.push((p, false)); // allocated, not yet joined
            }
        }
        let (lo, hi) = (mode.user_ptrs_per_pgd(), mode.ptrs_per_pgd());
        for &(pgd, cached) in &all {
            if cached {
                rep.cached += 1;
            } else {
                rep.live += 1;
            }
            let known_stale = cached && self.tracker.cached_may_lag(self.sw, pgd.0);
            for i in lo..hi {
                let s = self.pgd_entry(self.swapper(), i)?;
                let p = self.pgd_entry(pgd, i)?;
                if p == s {
                    continue;
                }
                let va = mode.pgd_entry_start(i);
                if !p.is_present() && s.is_present() && self.vm.contains(va) {
                    rep.lazy_missing += 1;
                    continue;
                }
                if known_stale {
                    rep.known_stale += 1;
                    continue;
                }
                let kind = if p.is_present()
                    && !p.is_leaf(mode, Level::Pgd, true)
                    && !kernel_tables.contains(&p.table_addr(mode).frame())
                {
                    ViolationKind::Dangling
                } else {
                    ViolationKind::Stale
                };
                rep.violations.push(Violation {
                    kind,
                    pgd: Some(pgd.0.as_u64()),
                    cached,
                    index: Some(i),
                    detail: format!(
                        "{} entry {i} ({va}) is {p}, swapper has {s}",
                        if cached { "cached pgd" } else { "live pgd" }
                    ),
                });
            }
            if cached && mode != PagingMode::Pae {
                for i in 0..lo {
                    let p = self.pgd_entry(pgd, i)?;
                    if !p.is_none() {
                        rep.violations.push(Violation {
                            kind: ViolationKind::NotConstructed,
                            pgd: Some(pgd.0.as_u64()),
                            cached,
                            index: Some(i),
                            detail: format!("cached pgd has user entry {i} = {p}"),
                        });
                        break;
                    }
                }
            }
        }
        if mode == PagingMode::Pae && self.caches.has_pmd_cache() {
            self.check_pae_pmds(&all, &mut rep)?;
        }
        for (pmd, allocated) in self.caches.pmd_objects() {
            if allocated {
                continue;
            }
            for j in 0..mode.entries(Level::Pmd) {
                let e =
                    read_entry(pm, mode, entry_pa_at(mode, pmd, j)).map_err(KernelError::from)?;
                if e != Entry::EMPTY {
                    rep.violations.push(Violation {
                        kind: ViolationKind::NotConstructed,
                        pgd: None,
                        cached: true,
                        index: Some(j),
                        detail: format!("cached pmd {pmd} has entry {j} = {e}"),
                    });
                    break;
                }
            }
        }
        self.check_ctors(&mut rep);
        self.check_poison(&mut rep);
        self.check_vmalloc_areas(&mut rep);
        self.account_frames(&all, &kernel_tables, &mut rep)?;
        Ok(rep)
    }

    /// A constructor or destructor that failed left an object the cache
    /// believes constructed (it cannot return an error to the cache).
    fn check_ctors(&self, rep: &mut Report) {
        let n = self.sw.counters.ctor_failures.load(Ordering::Relaxed);
        if n != 0 {
            rep.violations.push(Violation {
                kind: ViolationKind::NotConstructed,
                pgd: None,
                cached: true,
                index: None,
                detail: format!("{n} pgd_ctor/pgd_dtor/pmd_ctor call(s) failed"),
            });
        }
    }

    /// Freed-frame poisoning's findings (docs/CORRECTNESS.md 7c): a frame
    /// freed poisoned whose poison had changed by its next allocation was
    /// written through a stale reference. The counts are the page
    /// allocator's, cumulative since boot, so a corruption stays reported.
    fn check_poison(&self, rep: &mut Report) {
        let st = self.pm().poison_stats();
        if st.corrupted != 0 {
            rep.violations.push(Violation {
                kind: ViolationKind::UseAfterFree,
                pgd: None,
                cached: false,
                index: None,
                detail: format!(
                    "{} freed frame(s) written before their next allocation (poison changed; first at {})",
                    st.corrupted,
                    st.first_corrupted
                        .map_or_else(|| "?".to_string(), |pa| format!("{pa}"))
                ),
            });
        }
    }

    /// The vmalloc invariant: page `i` of every area on `vmlist` maps the
    /// area's frame `i` in `swapper_pg_dir` (docs/CORRECTNESS.md).
    fn check_vmalloc_areas(&self, rep: &mut Report) {
        let pm = self.pm();
        let ks = self.ks;
        for (start, frames) in self.vm.area_frames() {
            for (i, f) in frames.iter().enumerate() {
                let va = physmem::VirtAddr::new(start.as_u64() + i as u64 * physmem::PAGE_SIZE);
                let got = ks.translate_in(pm, self.swapper().0, va, x86paging::Access::READ);
                let ok = matches!(&got, Ok(t) if t.pa.frame() == *f);
                if !ok {
                    rep.violations.push(Violation {
                        kind: ViolationKind::VmallocUnmapped,
                        pgd: Some(self.swapper().0.as_u64()),
                        cached: false,
                        index: None,
                        detail: format!(
                            "vmalloc area {start} page {i} ({va}) should map {} in swapper, got {}",
                            f.start(),
                            match got {
                                Ok(t) => format!("{}", t.pa),
                                Err(e) => format!("{e}"),
                            }
                        ),
                    });
                }
            }
        }
    }

    fn account_frames(
        &self,
        all: &[(Pgd, bool)],
        kernel_tables: &BTreeSet<Frame>,
        rep: &mut Report,
    ) -> Result<(), KernelError> {
        let mode = self.mode();
        let pm = self.pm();
        let mut owned: BTreeSet<Frame> = kernel_tables.clone();
        owned.extend(self.cpa.deferred_frames());
        owned.extend(self.vm.frames());
        // Pages boot mapped outside the direct map (fixmap data, kernel image).
        for m in self.ks.mappings.iter().filter(|m| m.what != "direct") {
            let first = m.pa.frame().pfn();
            let n = m.size.bytes() / physmem::PAGE_SIZE;
            owned.extend((first..first + n).map(Frame::from_pfn));
        }
        let mut user_tables = BTreeSet::new();
        let mut data = Vec::new();
        for &(pgd, cached) in all {
            if cached {
                continue;
            }
            if !self.caches.pgds_are_objects() {
                owned.insert(pgd.0.frame());
            }
            let user = 0..mode.user_ptrs_per_pgd();
            self.collect_tables(pgd, user, &mut user_tables, &mut data);
        }
        owned.extend(user_tables);
        owned.extend(data);
        let stats = pm.stats();
        rep.frames_used = stats.used() - stats.of(Owner::Reserved);
        let mut leaked = 0u64;
        let slab_expected: u64 = self
            .caches
            .stats()
            .iter()
            .map(|s| (s.num_slabs * s.pages_per_slab) as u64)
            .sum();
        let mut slab_seen = 0u64;
        for pfn in 0..pm.pages().len() {
            let f = Frame::from_pfn(pfn);
            let Some(p) = pm.page(f) else { continue };
            match p.owner() {
                Owner::Free | Owner::Reserved => {}
                Owner::Slab => slab_seen += 1,
                owner => {
                    if !owned.contains(&f) {
                        leaked += 1;
                        if leaked <= 8 {
                            rep.violations.push(Violation {
                                kind: ViolationKind::Leak,
                                pgd: None,
                                cached: false,
                                index: None,
                                detail: format!("{f} ({}) is in use but unreachable", owner.name()),
                            });
                        }
                    }
                }
            }
        }
        if slab_seen != slab_expected {
            let diff = slab_seen.abs_diff(slab_expected);
            leaked += diff;
            rep.violations.push(Violation {
                kind: ViolationKind::Leak,
                pgd: None,
                cached: false,
                index: None,
                detail: format!(
                    "{slab_seen} slab frames in use, the caches account for {slab_expected}"
                ),
            });
        }
        rep.leaked_frames += leaked;
        Ok(())
    }

    /// PAE with `pmd_cache`: every allocated pmd belongs to exactly one pgd
    /// that holds it (a live or just-allocated pgd; in `slab-prepopulated`
    /// also a cached one), and every pmd a pgd holds is allocated. A cached
    /// `slab-prepopulated` pgd holds all three pmds or none, and they are
    /// empty (constructed).
    fn check_pae_pmds(&self, all: &[(Pgd, bool)], rep: &mut Report) -> Result<(), KernelError> {
        let mode = self.mode();
        let pm = self.pm();
        let keeps = self.caches.keeps_pmds();
        let allocated: BTreeSet<PhysAddr> = self
            .caches
            .pmd_objects()
            .into_iter()
            .filter_map(|(pa, a)| a.then_some(pa))
            .collect();
        let mut held = BTreeSet::new();
        let push = |rep: &mut Report, kind, pgd: Option<Pgd>, cached, index, detail| {
            rep.violations.push(Violation {
                kind,
                pgd: pgd.map(|p: Pgd| p.0.as_u64()),
                cached,
                index,
                detail,
            });
        };
        for &(pgd, cached) in all {
            if cached && !keeps {
                continue; // stale pointers to freed pmds, overwritten before use
            }
            let mut present = 0;
            for i in 0..mode.user_ptrs_per_pgd() {
                let e = self.pgd_entry(pgd, i)?;
                if !e.is_present() {
                    continue;
                }
                present += 1;
                let pmd = e.table_addr(mode);
                let dangling = if !allocated.contains(&pmd) {
                    Some(format!(
                        "user entry {i} points at {pmd}, not an allocated pmd"
                    ))
                } else if !held.insert(pmd) {
                    Some(format!("pmd {pmd} (user entry {i}) is held by two pgds"))
                } else {
                    None
                };
                if let Some(detail) = dangling {
                    let kind = ViolationKind::Dangling;
                    push(rep, kind, Some(pgd), cached, Some(i), detail);
                }
                if cached {
                    for j in 0..mode.entries(Level::Pmd) {
                        let pe = read_entry(pm, mode, entry_pa_at(mode, pmd, j))
                            .map_err(KernelError::from)?;
                        if pe != Entry::EMPTY {
                            let detail = format!("cached pgd's pmd {pmd} has entry {j} = {pe}");
                            push(
                                rep,
                                ViolationKind::NotConstructed,
                                Some(pgd),
                                true,
                                Some(i),
                                detail,
                            );
                            break;
                        }
                    }
                }
            }
            let full = mode.user_ptrs_per_pgd();
            if present != 0 && present != full {
                let detail = format!("{present} of {full} user pmds attached");
                push(
                    rep,
                    ViolationKind::NotConstructed,
                    Some(pgd),
                    cached,
                    None,
                    detail,
                );
            }
        }
        let orphans: Vec<PhysAddr> = allocated.difference(&held).copied().collect();
        if !orphans.is_empty() {
            rep.leaked_frames += orphans.len() as u64;
            let detail = format!(
                "{} pmd(s) allocated from pmd_cache but held by no pgd, e.g. {}",
                orphans.len(),
                orphans[0]
            );
            push(rep, ViolationKind::Leak, None, false, None, detail);
        }
        Ok(())
    }
}
