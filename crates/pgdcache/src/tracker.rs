//! Which pgds a kernel-mapping change must reach, per scheme: the only
//! place where scheme × paging-mode decisions live.
//!
//! Linux's `pgtable.c` owns `pgd_list`; `pageattr.c` only asks it to apply a
//! change to every pgd. Here a `Tracker` owns whatever a scheme keeps to
//! find its pgds — `pgd_list` under `pgd_lock`, the ticket generation, the
//! list of live address spaces (`mmlist`) — and every rule about it:
//!
//! | tracker | schemes, modes | at `pgd_ctor` | at `mm_join` | on a conversion |
//! |---|---|---|---|---|
//! | `PgdList` | `slab-pgd-list`, 2-level (the seed) | copy + `list_add` under `pgd_lock` | join | rewrite every pgd on `pgd_list`, live or cached |
//! | `Ticket` | `slab-ticket`, 2-level | read the generation, copy, stamp | refresh an old ticket, join (under `mmlist_lock`) | bump the generation, rewrite live pgds |
//! | `LiveOnly` | `uncached`, `slab-unsynced`, 2-level | copy | join | rewrite live pgds only (cached ones go stale: the bug) |
//! | `SharedTables` | every scheme on PAE and 4/5-level | copy | join | nothing: the kernel's large pages live in pmds every pgd shares |
//!
//! `shared-kernel` on 4/5-level also gives swapper a table under every
//! kernel pgd entry at boot (`Tracker::on_boot`), so no kernel top-level
//! entry ever changes afterwards.
//!
//! Every tracker keeps `MmList`, the live address spaces: the checker's
//! source of live pgds whatever the scheme.

use crate::error::KernelError;
use crate::lock::{LockKind, LockStats, StatLock};
use crate::prelude::*;
use crate::scheme::Scheme;
use crate::swapper::{KernelMem, Swapper};
use crate::sync::classes;
use alloc::collections::BTreeSet;
use core::sync::atomic::Ordering;
use physmem::{Frame, FrameList, Owner, PhysAddr};
use x86paging::{Entry, EntryFlags, Level, PagingMode};

/// What a scheme keeps to find the pgds a kernel-mapping change must reach.
pub(crate) trait Tracker<M: KernelMem>: Send + Sync {
    /// Boot: whatever swapper needs before the first pgd is built.
    fn on_boot(&self, _sw: &Swapper<M>) -> Result<(), KernelError> {
        Ok(())
    }

    /// `pgd_ctor`'s kernel half: copy swapper's kernel part into the fresh
    /// object `pgd` and start keeping it current. Returns the bytes copied.
    fn on_ctor(&self, sw: &Swapper<M>, pgd: PhysAddr) -> Result<u64, KernelError> {
        sw.copy_kernel_part(pgd)
    }

    /// True if the pgd cache needs a `pgd_dtor` ([`Tracker::on_dtor`]).
    fn has_dtor(&self) -> bool {
        false
    }

    /// `pgd_dtor`: the object leaves the cache; stop tracking it.
    fn on_dtor(&self, _sw: &Swapper<M>, _pgd: PhysAddr) -> Result<(), KernelError> {
        Ok(())
    }

    /// The address space of `pgd` joins `mmlist` (fork's `dup_mmap`, exec).
    fn on_join(&self, sw: &Swapper<M>, pgd: PhysAddr) -> Result<(), KernelError> {
        let _ = sw;
        self.mmlist().join(pgd);
        Ok(())
    }

    /// The second half of `set_pmd_pte`: write `e` as kernel entry `index`
    /// of every pgd other than swapper that must see it now. Returns how
    /// many pgds were written.
    fn propagate(&self, sw: &Swapper<M>, index: usize, e: Entry) -> Result<u64, KernelError>;

    /// The live address spaces.
    fn mmlist(&self) -> &MmList;

    /// A snapshot of `pgd_list` (empty where the scheme keeps none).
    fn pgd_list(&self, _sw: &Swapper<M>) -> Vec<PhysAddr> {
        Vec::new()
    }

    /// `pgd_lock`'s figures and `pgd_list`'s length.
    fn pgd_lock_stats(&self) -> (LockStats, usize) {
        (LockStats::default(), 0)
    }

    /// The ticket `pgd` carries, where the scheme stamps pgds.
    fn ticket_of(&self, _sw: &Swapper<M>, _pgd: PhysAddr) -> Option<u64> {
        None
    }

    /// The current generation, where the scheme keeps one.
    fn generation(&self) -> u64 {
        0
    }

    /// True if a *cached* `pgd` may lag swapper by design (an old ticket,
    /// refreshed at join): the checker counts it instead of reporting it.
    fn cached_may_lag(&self, sw: &Swapper<M>, pgd: PhysAddr) -> bool {
        self.ticket_of(sw, pgd)
            .is_some_and(|t| t != self.generation())
    }
}

/// The tracker for `scheme` in `mode` (the scheme is known to exist there).
pub(crate) fn for_config<M: KernelMem>(
    scheme: Scheme,
    mode: PagingMode,
    lock: LockKind,
    timed: bool,
) -> Box<dyn Tracker<M>> {
    let mmlist = MmList::new(lock, timed);
    if mode.ptrs_per_pmd() != 1 {
        return Box::new(SharedTables {
            mmlist,
            preallocate: scheme == Scheme::SharedKernel,
        });
    }
    match scheme {
        Scheme::SlabPgdList => Box::new(PgdList {
            pgd_lock: StatLock::new(&classes::PGD_LOCK, lock, FrameList::new(), timed),
            mmlist,
        }),
        Scheme::SlabTicket => Box::new(Ticket {
            generation: crate::sync::AtomicU64::new(0),
            mmlist,
        }),
        Scheme::Uncached | Scheme::SlabUnsynced => Box::new(LiveOnly { mmlist }),
        // Impossible on 2-level (`Scheme::supports` refuses them before a
        // tracker is built); were one built, tracking live pgds is safe.
        Scheme::SlabPrepopulated | Scheme::SharedKernel => Box::new(LiveOnly { mmlist }),
    }
}

/// `mmlist` under `mmlist_lock`: the live address spaces, by pgd.
pub(crate) struct MmList {
    /// `mmlist_lock`: protects the set of live address spaces, which the
    /// unpatched and ticket schemes walk on a conversion; in `slab-ticket`
    /// it also makes "check the ticket, refresh, join" atomic against
    /// "bump the generation, rewrite every live pgd".
    live: StatLock<BTreeSet<PhysAddr>>,
}

impl MmList {
    fn new(lock: LockKind, timed: bool) -> Self {
        MmList {
            live: StatLock::new(&classes::MMLIST_LOCK, lock, BTreeSet::new(), timed),
        }
    }

    fn join(&self, pgd: PhysAddr) {
        self.live.lock().insert(pgd);
    }

    /// The address space of `pgd` leaves `mmlist` (exit, before `pgd_free`).
    pub(crate) fn leave(&self, pgd: PhysAddr) {
        self.live.lock().remove(&pgd);
    }

    /// A snapshot of the live pgds.
    pub(crate) fn snapshot(&self) -> Vec<PhysAddr> {
        self.live.lock().iter().copied().collect()
    }

    /// `mmlist_lock`'s figures and the list's length.
    pub(crate) fn stats(&self) -> (LockStats, usize) {
        // Figures first: reading the length takes the lock.
        let s = self.live.stats();
        (s, self.live.lock().len())
    }

    /// Writes `e` as entry `index` of every live pgd, under `mmlist_lock`;
    /// `then` runs first inside the same critical section.
    fn rewrite_live<M: KernelMem>(
        &self,
        sw: &Swapper<M>,
        index: usize,
        e: Entry,
        then: impl FnOnce(),
    ) -> Result<u64, KernelError> {
        let live = self.live.lock();
        then();
        for &pgd in live.iter() {
            sw.write(pgd, index, e)?;
        }
        Ok(live.len() as u64)
    }
}

/// The seed: every pgd, live or cached, is on `pgd_list` from `pgd_ctor`
/// to `pgd_dtor`, and a conversion rewrites them all under `pgd_lock`.
pub(crate) struct PgdList {
    /// `pgd_lock`: protects `pgd_list` (the pgds' pages, linked through
    /// `page->lru`), and makes "copy the kernel part and link the pgd"
    /// (`pgd_ctor`) atomic against "rewrite the kernel entry in every
    /// listed pgd" (`set_pmd_pte`).
    pgd_lock: StatLock<FrameList>,
    mmlist: MmList,
}

impl<M: KernelMem> Tracker<M> for PgdList {
    fn on_ctor(&self, sw: &Swapper<M>, pgd: PhysAddr) -> Result<u64, KernelError> {
        use crate::bug::id;
        let pages = sw.pm.pages();
        if sw.bugs.is(id::CTOR_COPIES_OUTSIDE_LOCK) {
            // Negative model: the copy races with set_pmd_pte.
            let n = sw.copy_kernel_part(pgd)?;
            self.pgd_lock.lock().add(pages, pgd.frame())?;
            return Ok(n);
        }
        if sw.bugs.is(id::LIST_ADD_AFTER_UNLOCK) {
            // Negative model: a conversion can slip between the two.
            let n = {
                let _list = self.pgd_lock.lock();
                sw.copy_kernel_part(pgd)?
            };
            self.pgd_lock.lock().add(pages, pgd.frame())?;
            return Ok(n);
        }
        let mut list = self.pgd_lock.lock();
        let n = sw.copy_kernel_part(pgd)?;
        // The pgd's page is on no list yet (a fresh slab object).
        list.add(pages, pgd.frame())?;
        Ok(n)
    }

    fn has_dtor(&self) -> bool {
        true
    }

    fn on_dtor(&self, sw: &Swapper<M>, pgd: PhysAddr) -> Result<(), KernelError> {
        self.pgd_lock.lock().del(sw.pm.pages(), pgd.frame())?;
        Ok(())
    }

    fn propagate(&self, sw: &Swapper<M>, index: usize, e: Entry) -> Result<u64, KernelError> {
        let list = self.pgd_lock.lock();
        let mut n = 0;
        for f in list.iter(sw.pm.pages()) {
            sw.write(f.start(), index, e)?;
            n += 1;
        }
        Ok(n)
    }

    fn mmlist(&self) -> &MmList {
        &self.mmlist
    }

    fn pgd_list(&self, sw: &Swapper<M>) -> Vec<PhysAddr> {
        let list = self.pgd_lock.lock();
        list.iter(sw.pm.pages()).map(|f: Frame| f.start()).collect()
    }

    fn pgd_lock_stats(&self) -> (LockStats, usize) {
        let s = self.pgd_lock.stats();
        (s, self.pgd_lock.lock().len())
    }
}

/// The seed's proposed alternative: conversions bump a generation and
/// rewrite live pgds; a pgd carries the generation it was built at (its
/// page's `index`), and one with an old ticket is refreshed when its
/// address space joins `mmlist`.
pub(crate) struct Ticket {
    /// Generation of the kernel part; bumped under `mmlist_lock` by every
    /// conversion.
    generation: crate::sync::AtomicU64,
    mmlist: MmList,
}

impl Ticket {
    fn ticket<M: KernelMem>(sw: &Swapper<M>, pgd: PhysAddr) -> Option<u64> {
        sw.pm
            .page(pgd.frame())
            .map(|p| p.index.load(Ordering::Acquire))
    }

    fn stamp<M: KernelMem>(sw: &Swapper<M>, pgd: PhysAddr, t: u64) {
        if let Some(p) = sw.pm.page(pgd.frame()) {
            p.index.store(t, Ordering::Release);
        }
    }

    /// Copies swapper's kernel part again if `pgd`'s ticket is old.
    fn refresh<M: KernelMem>(&self, sw: &Swapper<M>, pgd: PhysAddr) -> Result<bool, KernelError> {
        let g = self.generation.load(Ordering::Acquire);
        if Self::ticket(sw, pgd) == Some(g) {
            return Ok(false);
        }
        sw.copy_kernel_part(pgd)?;
        Self::stamp(sw, pgd, g);
        Ok(true)
    }
}

impl<M: KernelMem> Tracker<M> for Ticket {
    fn on_ctor(&self, sw: &Swapper<M>, pgd: PhysAddr) -> Result<u64, KernelError> {
        // Read the generation *before* copying: a conversion that bumps it
        // after this load wrote swapper first, so either the copy saw its
        // entry or the ticket is old and the join will refresh.
        let t = self.generation.load(Ordering::Acquire);
        let n = sw.copy_kernel_part(pgd)?;
        Self::stamp(sw, pgd, t);
        Ok(n)
    }

    fn on_join(&self, sw: &Swapper<M>, pgd: PhysAddr) -> Result<(), KernelError> {
        if sw.bugs.is(crate::bug::id::TICKET_READ_BEFORE_JOIN) {
            // Negative model: check and refresh outside mmlist_lock.
            self.refresh(sw, pgd)?;
            self.mmlist.join(pgd);
            return Ok(());
        }
        let mut live = self.mmlist.live.lock();
        if self.refresh(sw, pgd)? {
            sw.counters.ticket_refreshes.fetch_add(1, Ordering::Relaxed);
        }
        live.insert(pgd);
        Ok(())
    }

    fn propagate(&self, sw: &Swapper<M>, index: usize, e: Entry) -> Result<u64, KernelError> {
        self.mmlist.rewrite_live(sw, index, e, || {
            self.generation.fetch_add(1, Ordering::AcqRel);
        })
    }

    fn mmlist(&self) -> &MmList {
        &self.mmlist
    }

    fn ticket_of(&self, sw: &Swapper<M>, pgd: PhysAddr) -> Option<u64> {
        Self::ticket(sw, pgd)
    }

    fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }
}

/// 2.5.69 before the patch and the first slabification: conversions reach
/// the live address spaces only. Right for `uncached` (every pgd is live);
/// for `slab-unsynced` the cached pgds are forgotten — the bug.
pub(crate) struct LiveOnly {
    mmlist: MmList,
}

impl<M: KernelMem> Tracker<M> for LiveOnly {
    fn propagate(&self, sw: &Swapper<M>, index: usize, e: Entry) -> Result<u64, KernelError> {
        self.mmlist.rewrite_live(sw, index, e, || {})
    }

    fn mmlist(&self) -> &MmList {
        &self.mmlist
    }
}

/// PAE and 4/5-level: the kernel part of every pgd points at lower-level
/// tables shared with swapper, so no conversion ever reaches a pgd.
pub(crate) struct SharedTables {
    mmlist: MmList,
    /// `shared-kernel`: preallocate a table under every kernel entry.
    preallocate: bool,
}

impl<M: KernelMem> Tracker<M> for SharedTables {
    fn on_boot(&self, sw: &Swapper<M>) -> Result<(), KernelError> {
        if self.preallocate {
            preallocate_kernel_tables(sw)?;
        }
        Ok(())
    }

    fn propagate(&self, _sw: &Swapper<M>, _index: usize, _e: Entry) -> Result<u64, KernelError> {
        Ok(0)
    }

    fn mmlist(&self) -> &MmList {
        &self.mmlist
    }
}

/// `shared-kernel`: give every kernel pgd entry of swapper a table now, so
/// no pgd ever needs a kernel entry propagated or faulted in later (what
/// x86_64 does with `preallocate_vmalloc_pages`). On PAE the kernel pmd is
/// already shared; 2-level has no level to share.
fn preallocate_kernel_tables<M: KernelMem>(sw: &Swapper<M>) -> Result<(), KernelError> {
    if matches!(sw.mode, PagingMode::Pae | PagingMode::TwoLevel) {
        return Ok(());
    }
    let (lo, hi) = sw.kernel_range();
    for i in lo..hi {
        if sw.read(sw.pgd, i)?.is_present() {
            continue;
        }
        let f = sw
            .pm
            .alloc_zeroed_frame(Owner::KernelTable)
            .map_err(|source| KernelError::FrameAlloc {
                what: "a preallocated kernel table",
                source,
            })?;
        let t = Entry::table(sw.mode, Level::Pgd, f.start(), EntryFlags::KERNPG_TABLE)?;
        sw.write(sw.pgd, i, t)?;
    }
    Ok(())
}
