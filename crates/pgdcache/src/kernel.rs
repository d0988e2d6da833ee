//! The simulated kernel's pgd allocation system: the seed patch itself.
//!
//! [`Kernel`] owns `swapper_pg_dir` (booted by `x86paging`), the object
//! caches `pgd_cache` and `pmd_cache`, `pgd_list` under `pgd_lock`, the list
//! of live address spaces (`mmlist`), the generation of the ticket scheme,
//! and the state of `change_page_attr` and `vmalloc` (in their own modules).
//!
//! Which of these a pgd uses depends on the [`Scheme`] and the paging mode,
//! exactly as the seed's `PTRS_PER_PMD == 1` tests decide it: on 2-level the
//! kernel's large pages live in every pgd and conversions must be propagated;
//! on PAE and 4/5-level the kernel part of a pgd points at lower-level tables
//! shared with `swapper_pg_dir`, so nothing below the top level is ever
//! propagated.

use crate::lock::{LockKind, LockStats, StatLock};
use crate::pages::SimPages;
use crate::prelude::*;
use crate::scheme::Scheme;
use alloc::collections::BTreeSet;
use alloc::sync::Arc;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicU64, Ordering};
use objcache::{CacheStats, KmemCache, SlabFlags};
use physmem::{
    DirectMap, Frame, FrameList, Owner, PhysAddr, PhysMem, PhysMemory, VirtAddr, PAGE_SIZE,
};
use x86paging::boot::{BootConfig, KernelSpace};
use x86paging::{Entry, PagingMode};

/// How to build a [`Kernel`].
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KernelConfig {
    /// Paging mode.
    pub mode: PagingMode,
    /// pgd allocation scheme.
    pub scheme: Scheme,
    /// Implementation of `pgd_lock` (and `mmlist_lock`).
    pub lock: LockKind,
    /// Number of CPUs (per-CPU array caches).
    pub cpus: usize,
    /// Measure lock hold times.
    pub timed_locks: bool,
    /// Object-cache debug mode: verify constructed state on every free.
    pub debug: bool,
}

impl KernelConfig {
    /// Defaults for `mode` and `scheme`: ticket-free TAS lock, 2 CPUs.
    pub fn new(mode: PagingMode, scheme: Scheme) -> Self {
        KernelConfig {
            mode,
            scheme,
            lock: LockKind::Tas,
            cpus: 2,
            timed_locks: false,
            debug: false,
        }
    }
}

/// Errors of the pgd system.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KernelError {
    /// The scheme cannot exist in this paging mode.
    #[error("scheme {scheme} is impossible in {mode} paging: {why}")]
    SchemeUnsupported {
        /// The scheme.
        scheme: Scheme,
        /// The mode.
        mode: PagingMode,
        /// Why.
        why: &'static str,
    },
    /// A frame or object allocation failed.
    #[error("out of memory in {0}")]
    OutOfMemory(&'static str),
    /// Booting the kernel page tables failed.
    #[error("boot failed: {0}")]
    Boot(String),
    /// The cache layer refused an operation.
    #[error("object cache: {0}")]
    Cache(String),
    /// A pgd handed to the kernel is not one it allocated, or is in the wrong state.
    #[error("bad pgd {0}: {1}")]
    BadPgd(PhysAddr, &'static str),
    /// Physical memory access failed (a bug: tables are always in RAM).
    #[error("physical memory: {0}")]
    Mem(String),
}

/// A page directory handed out by [`Kernel::pgd_alloc`]: its physical
/// address, what CR3 holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Pgd(pub PhysAddr);

/// A per-CPU statistic, like the kernel's per-CPU counters: each CPU bumps
/// its own cache line with a plain load and store (no locked instruction on
/// the `pgd_alloc` fast path); readers sum the slots. Exact as long as each
/// CPU index is used by one thread at a time, as it is in a kernel.
#[derive(Debug)]
pub struct PerCpuStat {
    slots: Box<[PaddedU64]>,
}

#[derive(Debug, Default)]
#[repr(align(64))]
struct PaddedU64(AtomicU64);

impl PerCpuStat {
    fn new(cpus: usize) -> Self {
        PerCpuStat {
            slots: (0..cpus.max(1)).map(|_| PaddedU64::default()).collect(),
        }
    }

    /// Adds `n` on CPU `cpu`.
    #[inline]
    pub fn add(&self, cpu: usize, n: u64) {
        let n_slots = self.slots.len();
        // The caller's CPU is almost always in range: skip the division.
        let i = if cpu < n_slots { cpu } else { cpu % n_slots };
        let slot = &self.slots[i].0;
        slot.store(
            slot.load(Ordering::Relaxed).wrapping_add(n),
            Ordering::Relaxed,
        );
    }

    /// The sum over all CPUs.
    pub fn sum(&self) -> u64 {
        self.slots
            .iter()
            .map(|s| s.0.load(Ordering::Relaxed))
            .fold(0, u64::wrapping_add)
    }
}

/// Counters of the pgd system (cumulative).
#[derive(Debug)]
pub struct Counters {
    /// `pgd_alloc` calls that succeeded (per CPU).
    pub pgd_allocs: PerCpuStat,
    /// `pgd_free` calls (per CPU).
    pub pgd_frees: PerCpuStat,
    /// Bytes zeroed or copied inside `pgd_alloc` itself, not in ctors (per CPU).
    pub alloc_bytes: PerCpuStat,
    /// `pgd_ctor` calls.
    pub pgd_ctors: AtomicU64,
    /// `pgd_dtor` calls.
    pub pgd_dtors: AtomicU64,
    /// `pmd_ctor` calls.
    pub pmd_ctors: AtomicU64,
    /// Bytes zeroed or copied by ctors.
    pub ctor_bytes: AtomicU64,
    /// Ticket refreshes at mm join (slab-ticket).
    pub ticket_refreshes: AtomicU64,
    /// Kernel-part entries written by `set_pmd_pte` in pgds other than swapper.
    pub propagated_entries: AtomicU64,
    /// `set_pmd_pte` calls.
    pub conversions: AtomicU64,
    /// Nanoseconds spent propagating conversions (pgds other than swapper).
    pub propagation_ns: AtomicU64,
    /// Entries copied by `vmalloc_fault`.
    pub vmalloc_faults: AtomicU64,
}

impl Counters {
    fn new(cpus: usize) -> Self {
        Counters {
            pgd_allocs: PerCpuStat::new(cpus),
            pgd_frees: PerCpuStat::new(cpus),
            alloc_bytes: PerCpuStat::new(cpus),
            pgd_ctors: AtomicU64::new(0),
            pgd_dtors: AtomicU64::new(0),
            pmd_ctors: AtomicU64::new(0),
            ctor_bytes: AtomicU64::new(0),
            ticket_refreshes: AtomicU64::new(0),
            propagated_entries: AtomicU64::new(0),
            conversions: AtomicU64::new(0),
            propagation_ns: AtomicU64::new(0),
            vmalloc_faults: AtomicU64::new(0),
        }
    }
}

/// A snapshot of [`Counters`] plus lock and cache figures.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct KernelStats {
    /// `pgd_alloc` calls that succeeded.
    pub pgd_allocs: u64,
    /// `pgd_free` calls.
    pub pgd_frees: u64,
    /// Bytes zeroed or copied inside `pgd_alloc`.
    pub alloc_bytes: u64,
    /// `pgd_ctor` calls.
    pub pgd_ctors: u64,
    /// `pgd_dtor` calls.
    pub pgd_dtors: u64,
    /// `pmd_ctor` calls.
    pub pmd_ctors: u64,
    /// Bytes zeroed or copied by ctors.
    pub ctor_bytes: u64,
    /// Ticket refreshes.
    pub ticket_refreshes: u64,
    /// Entries propagated to pgds other than swapper.
    pub propagated_entries: u64,
    /// `set_pmd_pte` calls.
    pub conversions: u64,
    /// Nanoseconds spent propagating.
    pub propagation_ns: u64,
    /// Entries copied by `vmalloc_fault`.
    pub vmalloc_faults: u64,
    /// Length of `pgd_list`.
    pub pgd_list_len: usize,
    /// Live address spaces on `mmlist`.
    pub mmlist_len: usize,
    /// `pgd_lock` counters.
    pub pgd_lock: LockStats,
    /// `mmlist_lock` counters.
    pub mmlist_lock: LockStats,
}

impl KernelStats {
    /// Average bytes blitted per `pgd_alloc` (alloc path plus ctors).
    pub fn bytes_per_alloc(&self) -> f64 {
        if self.pgd_allocs == 0 {
            return 0.0;
        }
        (self.alloc_bytes + self.ctor_bytes) as f64 / self.pgd_allocs as f64
    }
}

/// State shared with the cache constructors.
pub(crate) struct Shared<M: KernelMem> {
    pub(crate) pm: Arc<PhysMemory<M>>,
    pub(crate) mode: PagingMode,
    pub(crate) scheme: Scheme,
    /// `swapper_pg_dir`.
    pub(crate) swapper: PhysAddr,
    /// `pgd_lock`: protects `pgd_list` and makes "copy the kernel part and
    /// link the pgd" (`pgd_ctor`) atomic against "rewrite the kernel entry in
    /// every listed pgd" (`set_pmd_pte`). Used on 2-level `slab-pgd-list` only.
    pub(crate) pgd_lock: StatLock<FrameList>,
    /// `mmlist_lock`: protects the set of live address spaces, which the
    /// unpatched and ticket schemes walk on a conversion; in `slab-ticket` it
    /// also makes "check the ticket, refresh, join" atomic against
    /// "bump the generation, rewrite every live pgd".
    pub(crate) mmlist: StatLock<BTreeSet<PhysAddr>>,
    /// `slab-ticket`: generation of the kernel part; bumped under
    /// `mmlist_lock` by every conversion.
    pub(crate) generation: crate::sync::AtomicU64,
    pub(crate) counters: Counters,
    /// `--cfg loom` only: a deliberately broken protocol variant, so the
    /// negative models can show that loom finds the race.
    #[cfg(loom)]
    pub(crate) bug: core::sync::atomic::AtomicU8,
}

/// Deliberately broken protocol variants for the negative `loom` models.
#[cfg(loom)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Bug {
    /// The protocol as written.
    None = 0,
    /// `pgd_ctor` copies the kernel part before taking `pgd_lock`.
    CtorCopiesOutsideLock = 1,
    /// `pgd_ctor` links the pgd in a second critical section, after the copy's.
    ListAddAfterUnlock = 2,
    /// `mm_join` checks the ticket and refreshes before taking `mmlist_lock`.
    TicketReadBeforeJoin = 3,
}

impl<M: KernelMem> Shared<M> {
    #[cfg(loom)]
    fn bug(&self) -> Bug {
        match self.bug.load(core::sync::atomic::Ordering::Relaxed) {
            1 => Bug::CtorCopiesOutsideLock,
            2 => Bug::ListAddAfterUnlock,
            3 => Bug::TicketReadBeforeJoin,
            _ => Bug::None,
        }
    }
    #[cfg(not(loom))]
    #[inline(always)]
    fn bug_is(&self, _b: u8) -> bool {
        false
    }
    #[cfg(loom)]
    fn bug_is(&self, b: u8) -> bool {
        self.bug() as u8 == b
    }

    /// Number of entries in the kernel part of a pgd and the first one.
    pub(crate) fn kernel_range(&self) -> (usize, usize) {
        let m = self.mode;
        (m.user_ptrs_per_pgd(), m.ptrs_per_pgd())
    }

    pub(crate) fn entry_at(&self, pgd: PhysAddr, index: usize) -> PhysAddr {
        x86paging::table::entry_pa_at(self.mode, pgd, index)
    }

    /// Copies the kernel part of `swapper_pg_dir` into `pgd` (the `memcpy`
    /// of `pgd_ctor`), one atomic 64-bit word at a time: on 2-level a word
    /// holds two entries, and each is read whole, never torn. Nobody else
    /// writes `pgd` meanwhile (it is not yet on a list a conversion walks,
    /// or the walker's lock is held), so the paired stores lose nothing.
    pub(crate) fn copy_kernel_part(&self, pgd: PhysAddr) -> Result<u64, KernelError> {
        let (lo, hi) = self.kernel_range();
        let len = (hi - lo) as u64 * self.mode.entry_bytes();
        self.pm
            .copy(self.entry_at(pgd, lo), self.entry_at(self.swapper, lo), len)
            .map_err(mem_err)?;
        Ok(len)
    }

    /// Zeroes the user part of `pgd` (the `memset` of `pgd_ctor`).
    pub(crate) fn zero_user_part(&self, pgd: PhysAddr) -> Result<u64, KernelError> {
        let n = self.mode.user_ptrs_per_pgd() as u64 * self.mode.entry_bytes();
        if n.is_multiple_of(8) {
            self.pm.fill(pgd, n, 0).map_err(mem_err)?;
        } else {
            for i in 0..self.mode.user_ptrs_per_pgd() {
                x86paging::table::write_entry(
                    &*self.pm,
                    self.mode,
                    self.entry_at(pgd, i),
                    Entry::EMPTY,
                )
                .map_err(mem_err)?;
            }
        }
        Ok(n)
    }

    /// The ticket a 2-level pgd carries (`page->index` of its page).
    pub(crate) fn ticket(&self, pgd: PhysAddr) -> Option<u64> {
        self.pm
            .page(pgd.frame())
            .map(|p| p.index.load(Ordering::Acquire))
    }

    pub(crate) fn set_ticket(&self, pgd: PhysAddr, t: u64) {
        if let Some(p) = self.pm.page(pgd.frame()) {
            p.index.store(t, Ordering::Release);
        }
    }

    /// True when conversions must be propagated to other pgds: 2-level,
    /// where the pmd is folded into the pgd (`PTRS_PER_PMD == 1`).
    pub(crate) fn propagates(&self) -> bool {
        self.mode.ptrs_per_pmd() == 1
    }

    /// `pgd_ctor`.
    fn pgd_ctor(&self, obj: NonNull<u8>) {
        let Some(pgd) = self.pm.pa_of(obj) else {
            return;
        };
        self.counters.pgd_ctors.fetch_add(1, Ordering::Relaxed);
        let mut bytes = 0;
        if self.propagates() && self.scheme == Scheme::SlabPgdList {
            if self.bug_is(1) {
                // Negative model: the copy races with set_pmd_pte.
                bytes += self.copy_kernel_part(pgd).unwrap_or(0);
                let mut list = self.pgd_lock.lock();
                let _ = list.add(self.pm.pages(), pgd.frame());
            } else if self.bug_is(2) {
                // Negative model: a conversion can slip between the two.
                {
                    let _list = self.pgd_lock.lock();
                    bytes += self.copy_kernel_part(pgd).unwrap_or(0);
                }
                let mut list = self.pgd_lock.lock();
                let _ = list.add(self.pm.pages(), pgd.frame());
            } else {
                let mut list = self.pgd_lock.lock();
                bytes += self.copy_kernel_part(pgd).unwrap_or(0);
                // The pgd's page is not on any list yet (fresh slab object).
                let _ = list.add(self.pm.pages(), pgd.frame());
            }
        } else if self.propagates() && self.scheme == Scheme::SlabTicket {
            // Read the generation *before* copying: a conversion that bumps
            // it after this load wrote swapper first, so either the copy saw
            // its entry or the ticket is old and the join will refresh.
            let t = self.generation.load(Ordering::Acquire);
            bytes += self.copy_kernel_part(pgd).unwrap_or(0);
            self.set_ticket(pgd, t);
        } else {
            bytes += self.copy_kernel_part(pgd).unwrap_or(0);
        }
        bytes += self.zero_user_part(pgd).unwrap_or(0);
        self.counters.ctor_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// `pgd_dtor`: never called unless the pgd is on `pgd_list`.
    fn pgd_dtor(&self, obj: NonNull<u8>) {
        let Some(pgd) = self.pm.pa_of(obj) else {
            return;
        };
        self.counters.pgd_dtors.fetch_add(1, Ordering::Relaxed);
        let mut list = self.pgd_lock.lock();
        let _ = list.del(self.pm.pages(), pgd.frame());
    }

    /// `pgd_dtor` of `slab-prepopulated`: the pgd leaves the cache, and the
    /// user pmds it kept go back to `pmd_cache` (they are empty: every
    /// `pgd_free` ran `clear_page_tables` first).
    fn pgd_dtor_pmds(&self, obj: NonNull<u8>, pmds: &KmemCache<SimPages<M>>) {
        let Some(pgd) = self.pm.pa_of(obj) else {
            return;
        };
        self.counters.pgd_dtors.fetch_add(1, Ordering::Relaxed);
        for i in 0..self.mode.user_ptrs_per_pgd() {
            let at = self.entry_at(pgd, i);
            let Ok(e) = x86paging::table::read_entry(&*self.pm, self.mode, at) else {
                continue;
            };
            if !e.is_present() {
                continue;
            }
            if let Some(p) = self.pm.ptr_of(e.table_addr(self.mode)) {
                let _ = pmds.free(p);
            }
            let _ = x86paging::table::write_entry(&*self.pm, self.mode, at, Entry::EMPTY);
        }
    }

    /// True if every user entry of PAE pgd `pgd` holds a pmd (all or none
    /// are attached).
    pub(crate) fn pmds_attached(&self, pgd: PhysAddr) -> Result<bool, KernelError> {
        let e = x86paging::table::read_entry(&*self.pm, self.mode, self.entry_at(pgd, 0))
            .map_err(mem_err)?;
        Ok(e.is_present())
    }

    /// `pmd_ctor`: a pmd is constructed when it is all zero.
    fn pmd_ctor(&self, obj: NonNull<u8>) {
        if let Some(pa) = self.pm.pa_of(obj) {
            self.counters.pmd_ctors.fetch_add(1, Ordering::Relaxed);
            let _ = self.pm.fill(pa, PAGE_SIZE, 0);
            self.counters
                .ctor_bytes
                .fetch_add(PAGE_SIZE, Ordering::Relaxed);
        }
    }
}

pub(crate) fn mem_err(e: physmem::MemError) -> KernelError {
    KernelError::Mem(e.to_string())
}

/// Memory the pgd system can run on: physical memory with a direct map
/// (the simulator's `Ram`, or a kernel's own lowmem, [`physmem::Lowmem`]).
pub trait KernelMem: PhysMem + DirectMap + Send + Sync + 'static {}

impl<T: PhysMem + DirectMap + Send + Sync + 'static> KernelMem for T {}

/// The default memory of a [`Kernel`]: the simulator's `Ram` with `std`,
/// a kernel's direct map ([`physmem::Lowmem`]) without.
#[cfg(feature = "std")]
pub type DefaultMem = physmem::Ram;
/// The default memory of a [`Kernel`]: the simulator's `Ram` with `std`,
/// a kernel's direct map ([`physmem::Lowmem`]) without.
#[cfg(not(feature = "std"))]
pub type DefaultMem = physmem::Lowmem;

/// The simulated kernel's page-directory allocator, over memory `M`
/// (by default the simulator's RAM; see [`DefaultMem`]).
pub struct Kernel<M: KernelMem = DefaultMem> {
    pub(crate) sh: Arc<Shared<M>>,
    pub(crate) ks: KernelSpace,
    /// `pgd_cache`: preconstructed pgds (slab schemes), or ctor-less 32-byte
    /// PAE pgds (`uncached`, `shared-kernel`). `None` when pgds are pages.
    pub(crate) pgd_cache: Option<KmemCache<SimPages<M>>>,
    /// `pmd_cache`: zeroed pmds for PAE slab schemes (shared with the
    /// `slab-prepopulated` `pgd_dtor`, which gives a cached pgd's pmds back).
    pub(crate) pmd_cache: Option<Arc<KmemCache<SimPages<M>>>>,
    pub(crate) cpa: crate::cpa::CpaLock,
    pub(crate) vm: crate::vmalloc::VmLock,
    cpus: usize,
}

impl<M: KernelMem> Kernel<M> {
    /// Boots a kernel in `pm` with the given configuration.
    pub fn new(pm: Arc<PhysMemory<M>>, cfg: &KernelConfig) -> Result<Kernel<M>, KernelError> {
        let mode = cfg.mode;
        if let Err(why) = cfg.scheme.supports(mode) {
            return Err(KernelError::SchemeUnsupported {
                scheme: cfg.scheme,
                mode,
                why,
            });
        }
        let cpus = cfg.cpus.max(1);
        let ks = x86paging::boot::boot(&pm, BootConfig::new(mode))
            .map_err(|e| KernelError::Boot(e.to_string()))?;
        let sh = Arc::new(Shared {
            pm: pm.clone(),
            mode,
            scheme: cfg.scheme,
            swapper: ks.pgd,
            pgd_lock: StatLock::new(cfg.lock, FrameList::new(), cfg.timed_locks),
            mmlist: StatLock::new(cfg.lock, BTreeSet::new(), cfg.timed_locks),
            generation: crate::sync::AtomicU64::new(0),
            counters: Counters::new(cpus),
            #[cfg(loom)]
            bug: core::sync::atomic::AtomicU8::new(0),
        });
        if cfg.scheme == Scheme::SharedKernel {
            crate::vmalloc::preallocate_kernel_tables(&sh, &ks)?;
        }
        let pmd_cache = Self::make_pmd_cache(&sh, cfg, cpus)?.map(Arc::new);
        let pgd_cache = Self::make_pgd_cache(&sh, cfg, cpus, pmd_cache.as_ref())?;
        Ok(Kernel {
            cpa: crate::cpa::CpaLock::new(&sh, &ks),
            vm: crate::vmalloc::VmLock::new(&ks),
            sh,
            ks,
            pgd_cache,
            pmd_cache,
            cpus,
        })
    }

    fn make_pgd_cache(
        sh: &Arc<Shared<M>>,
        cfg: &KernelConfig,
        cpus: usize,
        pmd_cache: Option<&Arc<KmemCache<SimPages<M>>>>,
    ) -> Result<Option<KmemCache<SimPages<M>>>, KernelError> {
        let mode = cfg.mode;
        let size = mode.pgd_bytes() as usize;
        let src = SimPages::new(sh.pm.clone());
        let align = if mode == PagingMode::Pae {
            32
        } else {
            PAGE_SIZE as usize
        };
        let mut b = objcache::CacheBuilder::new("pgd", size)
            .align(align)
            .cpus(cpus);
        if cfg.scheme.preconstructed() {
            let s = sh.clone();
            b = b.ctor(move |p| s.pgd_ctor(p));
            if sh.propagates() && cfg.scheme == Scheme::SlabPgdList {
                let s = sh.clone();
                b = b.dtor(move |p| s.pgd_dtor(p));
            }
            if let (true, Some(pmds)) = (cfg.scheme.keeps_pmds(), pmd_cache) {
                let (s, pmds) = (sh.clone(), pmds.clone());
                b = b.dtor(move |p| s.pgd_dtor_pmds(p, &pmds));
            }
            if cfg.debug {
                let s = sh.clone();
                b = b
                    .flags(SlabFlags::DEBUG_FREE)
                    .verify(move |p| s.verify_pgd_on_free(p).map_err(str::to_string));
            }
        } else if mode != PagingMode::Pae {
            // uncached / shared-kernel on page-sized pgds: straight from
            // the page allocator, as 2.5.69 did.
            return Ok(None);
        }
        b.build(src)
            .map(Some)
            .map_err(|e| KernelError::Cache(e.to_string()))
    }

    fn make_pmd_cache(
        sh: &Arc<Shared<M>>,
        cfg: &KernelConfig,
        cpus: usize,
    ) -> Result<Option<KmemCache<SimPages<M>>>, KernelError> {
        if cfg.mode != PagingMode::Pae || !cfg.scheme.preconstructed() {
            return Ok(None);
        }
        let s = sh.clone();
        let mut b = objcache::CacheBuilder::new("pmd", PAGE_SIZE as usize)
            .align(PAGE_SIZE as usize)
            .cpus(cpus)
            .ctor(move |p| s.pmd_ctor(p));
        if cfg.debug {
            let s = sh.clone();
            b = b
                .flags(SlabFlags::DEBUG_FREE)
                .verify(move |p| s.verify_pmd_on_free(p).map_err(str::to_string));
        }
        b.build(SimPages::new(sh.pm.clone()))
            .map(Some)
            .map_err(|e| KernelError::Cache(e.to_string()))
    }

    /// The paging mode.
    pub fn mode(&self) -> PagingMode {
        self.sh.mode
    }

    /// The scheme.
    pub fn scheme(&self) -> Scheme {
        self.sh.scheme
    }

    /// Number of CPUs.
    pub fn cpus(&self) -> usize {
        self.cpus
    }

    /// The simulated physical memory.
    pub fn pm(&self) -> &Arc<PhysMemory<M>> {
        &self.sh.pm
    }

    /// The booted kernel address space (layout, CPU state).
    pub fn kernel_space(&self) -> &KernelSpace {
        &self.ks
    }

    /// `swapper_pg_dir`.
    pub fn swapper(&self) -> Pgd {
        Pgd(self.sh.swapper)
    }

    /// `--cfg loom` only: switch to a deliberately broken protocol variant.
    #[cfg(loom)]
    pub fn inject_bug(&self, bug: Bug) {
        self.sh
            .bug
            .store(bug as u8, core::sync::atomic::Ordering::Relaxed);
    }

    /// Current generation of the ticket scheme.
    pub fn generation(&self) -> u64 {
        self.sh.generation.load(Ordering::Acquire)
    }

    fn ptr_of(&self, pa: PhysAddr) -> Result<NonNull<u8>, KernelError> {
        self.sh
            .pm
            .ptr_of(pa)
            .ok_or(KernelError::BadPgd(pa, "outside RAM"))
    }

    /// `pgd_alloc` on CPU `cpu`: a pgd whose user part is empty and whose
    /// kernel part matches `swapper_pg_dir` (up to lazily faulted vmalloc
    /// entries, and, in `slab-ticket`, up to a refresh at join).
    pub fn pgd_alloc(&self, cpu: usize) -> Result<Pgd, KernelError> {
        let sh = &self.sh;
        let pgd = match (&self.pgd_cache, sh.mode) {
            (None, _) => self.pgd_alloc_page(cpu)?,
            (Some(cache), PagingMode::Pae) => {
                let obj = cache
                    .alloc_on(cpu)
                    .map_err(|_| KernelError::OutOfMemory("pgd_alloc: pgd_cache"))?;
                match self.pae_pgd_setup(cpu, obj) {
                    Ok(pgd) => Pgd(pgd),
                    Err(e) => {
                        // Nothing is lost: the object goes back as it came.
                        let _ = cache.free_on(cpu, obj);
                        return Err(e);
                    }
                }
            }
            (Some(cache), _) => {
                let obj = cache
                    .alloc_on(cpu)
                    .map_err(|_| KernelError::OutOfMemory("pgd_alloc: pgd_cache"))?;
                Pgd(sh
                    .pm
                    .pa_of(obj)
                    .ok_or(KernelError::OutOfMemory("pgd_alloc"))?)
            }
        };
        sh.counters.pgd_allocs.add(cpu, 1);
        Ok(pgd)
    }

    /// PAE: completes a 32-byte pgd object from `pgd_cache` (copies the
    /// kernel part where the cache has no ctor, attaches the user pmds).
    fn pae_pgd_setup(&self, cpu: usize, obj: NonNull<u8>) -> Result<PhysAddr, KernelError> {
        let sh = &self.sh;
        let pgd = sh
            .pm
            .pa_of(obj)
            .ok_or(KernelError::OutOfMemory("pgd_alloc"))?;
        if !sh.scheme.preconstructed() {
            let n = sh.copy_kernel_part(pgd)?;
            sh.counters.alloc_bytes.add(cpu, n);
        }
        // `slab-prepopulated`: a pgd that was in use before still has its
        // (empty) pmds; only a fresh object needs them. `pgd_ctor` cannot
        // fail, so it cannot allocate them.
        if !(sh.scheme.keeps_pmds() && sh.pmds_attached(pgd)?) {
            self.pae_attach_pmds(cpu, pgd)?;
        }
        Ok(pgd)
    }

    /// 2.5.69 before the patch (and modern x86): a fresh page, user part
    /// zeroed, kernel part copied.
    fn pgd_alloc_page(&self, cpu: usize) -> Result<Pgd, KernelError> {
        let sh = &self.sh;
        let f = sh
            .pm
            .alloc_frame(Owner::PgdPage)
            .map_err(|_| KernelError::OutOfMemory("pgd_alloc: page"))?;
        let pgd = f.start();
        let zeroed = sh.zero_user_part(pgd)?;
        let copied = sh.copy_kernel_part(pgd)?;
        sh.counters.alloc_bytes.add(cpu, zeroed + copied);
        Ok(Pgd(pgd))
    }

    /// PAE: three user pmds, installed with only the present bit
    /// (`set_pgd(&pgd[i], __pgd(1 + __pa(pmd)))`); on failure every pmd
    /// taken so far goes back (`out_oom`).
    fn pae_attach_pmds(&self, cpu: usize, pgd: PhysAddr) -> Result<(), KernelError> {
        let sh = &self.sh;
        // USER_PTRS_PER_PGD is 3 on PAE: no heap allocation on this path.
        let mut got = [PhysAddr::new(0); 4];
        let n = sh.mode.user_ptrs_per_pgd().min(got.len());
        self.pmds_get(cpu, &mut got[..n])?;
        for (i, &pmd) in got[..n].iter().enumerate() {
            let e = Entry::from_raw(pmd.as_u64() | 1);
            let at = sh.entry_at(pgd, i);
            if let Err(err) = x86paging::table::write_entry(&*sh.pm, sh.mode, at, e) {
                // All or none: undo the entries written and give every pmd back.
                for j in 0..i {
                    let at = sh.entry_at(pgd, j);
                    let _ = x86paging::table::write_entry(&*sh.pm, sh.mode, at, Entry::EMPTY);
                }
                self.pmds_put(cpu, &got[..n]);
                return Err(mem_err(err));
            }
        }
        Ok(())
    }

    /// Fills `out` with constructed (zeroed) pmds, all or none.  From the
    /// pmd cache they come through one pinned CPU slot (`get_cpu()` once
    /// for the three, as the kernel's per-CPU array is used with interrupts
    /// off), not one slot-lock round trip each.
    fn pmds_get(&self, cpu: usize, out: &mut [PhysAddr]) -> Result<(), KernelError> {
        let sh = &self.sh;
        let oom = KernelError::OutOfMemory("pgd_alloc: pmd_cache");
        match &self.pmd_cache {
            Some(c) => {
                let mut pinned = c.lock_cpu(cpu).map_err(|_| oom.clone())?;
                for i in 0..out.len() {
                    let got = pinned
                        .alloc()
                        .map_err(|_| oom.clone())
                        .and_then(|p| sh.pm.pa_of(p).ok_or(KernelError::OutOfMemory("pmd")));
                    match got {
                        Ok(pmd) => out[i] = pmd,
                        Err(e) => {
                            for &pmd in &out[..i] {
                                if let Ok(p) = self.ptr_of(pmd) {
                                    let _ = pinned.free(p);
                                }
                            }
                            return Err(e);
                        }
                    }
                }
                Ok(())
            }
            None => {
                for i in 0..out.len() {
                    match sh.pm.alloc_zeroed_frame(Owner::UserTable) {
                        Ok(f) => {
                            sh.counters.alloc_bytes.add(cpu, PAGE_SIZE);
                            out[i] = f.start();
                        }
                        Err(_) => {
                            for &pmd in &out[..i] {
                                let _ = sh.pm.free_frame(pmd.frame());
                            }
                            return Err(KernelError::OutOfMemory("pgd_alloc: pmd page"));
                        }
                    }
                }
                Ok(())
            }
        }
    }

    /// Gives empty pmds back (through one pinned CPU slot for the cache).
    fn pmds_put(&self, cpu: usize, pmds: &[PhysAddr]) {
        match &self.pmd_cache {
            Some(c) => {
                let Ok(mut pinned) = c.lock_cpu(cpu) else {
                    return;
                };
                for &pmd in pmds {
                    if let Ok(p) = self.ptr_of(pmd) {
                        let _ = pinned.free(p);
                    }
                }
            }
            None => {
                for &pmd in pmds {
                    let _ = self.sh.pm.free_frame(pmd.frame());
                }
            }
        }
    }

    /// `pgd_free` on CPU `cpu`. The caller has already run
    /// `clear_page_tables` (the user part is empty; on PAE the user pmds are
    /// empty), so a cached pgd goes back in constructed state.
    pub fn pgd_free(&self, cpu: usize, pgd: Pgd) -> Result<(), KernelError> {
        let sh = &self.sh;
        if pgd.0 == sh.swapper {
            return Err(KernelError::BadPgd(pgd.0, "swapper_pg_dir is never freed"));
        }
        if sh.mode == PagingMode::Pae && !sh.scheme.keeps_pmds() {
            let mut pmds = [PhysAddr::new(0); 4];
            let mut n = 0;
            for i in 0..sh.mode.user_ptrs_per_pgd().min(pmds.len()) {
                let at = sh.entry_at(pgd.0, i);
                let e = x86paging::table::read_entry(&*sh.pm, sh.mode, at).map_err(mem_err)?;
                if e.is_present() {
                    pmds[n] = e.table_addr(sh.mode);
                    n += 1;
                }
                // "in the PAE case user pgd entries are overwritten before
                // usage": the stale pointer stays in the cached object.
            }
            self.pmds_put(cpu, &pmds[..n]);
        }
        match &self.pgd_cache {
            Some(c) => {
                let p = self.ptr_of(pgd.0)?;
                c.free_on(cpu, p)
                    .map_err(|e| KernelError::Cache(e.to_string()))?;
            }
            None => {
                sh.pm
                    .free_frame(pgd.0.frame())
                    .map_err(|_| KernelError::BadPgd(pgd.0, "not an allocated pgd page"))?;
            }
        }
        sh.counters.pgd_frees.add(cpu, 1);
        Ok(())
    }

    /// The address space of `pgd` joins `mmlist` (fork's `dup_mmap`, exec).
    /// In `slab-ticket` this is where a pgd with an old ticket is refreshed,
    /// under `mmlist_lock` so that no conversion can slip between the
    /// refresh and the join.
    pub fn mm_join(&self, pgd: Pgd) -> Result<(), KernelError> {
        let sh = &self.sh;
        if sh.bug_is(3) && sh.scheme == Scheme::SlabTicket && sh.propagates() {
            // Negative model: check and refresh outside mmlist_lock.
            let g = sh.generation.load(Ordering::Acquire);
            if sh.ticket(pgd.0) != Some(g) {
                sh.copy_kernel_part(pgd.0)?;
                sh.set_ticket(pgd.0, g);
            }
            sh.mmlist.lock().insert(pgd.0);
            return Ok(());
        }
        let mut live = sh.mmlist.lock();
        if sh.scheme == Scheme::SlabTicket && sh.propagates() {
            let g = sh.generation.load(Ordering::Acquire);
            if sh.ticket(pgd.0) != Some(g) {
                sh.copy_kernel_part(pgd.0)?;
                sh.set_ticket(pgd.0, g);
                sh.counters.ticket_refreshes.fetch_add(1, Ordering::Relaxed);
            }
        }
        live.insert(pgd.0);
        Ok(())
    }

    /// The address space of `pgd` leaves `mmlist` (exit, before `pgd_free`).
    pub fn mm_leave(&self, pgd: Pgd) {
        self.sh.mmlist.lock().remove(&pgd.0);
    }

    /// Live address spaces (a snapshot of `mmlist`).
    pub fn live_pgds(&self) -> Vec<Pgd> {
        self.sh.mmlist.lock().iter().map(|&p| Pgd(p)).collect()
    }

    /// A snapshot of `pgd_list` (2-level `slab-pgd-list`).
    pub fn pgd_list(&self) -> Vec<Pgd> {
        let list = self.sh.pgd_lock.lock();
        list.iter(self.sh.pm.pages())
            .map(|f: Frame| Pgd(f.start()))
            .collect()
    }

    /// Every pgd object the object cache holds, with whether it is
    /// allocated (`true`) or cached (`false`). Taken from the cache itself,
    /// not from any list a scheme keeps.
    pub fn cache_pgds(&self) -> Vec<(Pgd, bool)> {
        let mut out = Vec::new();
        if let Some(c) = &self.pgd_cache {
            c.for_each_object(|p, allocated| {
                if let Some(pa) = self.sh.pm.pa_of(p) {
                    out.push((Pgd(pa), allocated));
                }
            });
        }
        out
    }

    /// Every pmd object of `pmd_cache`, with its allocation state.
    pub fn cache_pmds(&self) -> Vec<(PhysAddr, bool)> {
        let mut out = Vec::new();
        if let Some(c) = &self.pmd_cache {
            c.for_each_object(|p, allocated| {
                if let Some(pa) = self.sh.pm.pa_of(p) {
                    out.push((pa, allocated));
                }
            });
        }
        out
    }

    /// The pgd's ticket (2-level `slab-ticket`).
    pub fn ticket_of(&self, pgd: Pgd) -> Option<u64> {
        (self.sh.scheme == Scheme::SlabTicket && self.sh.propagates())
            .then(|| self.sh.ticket(pgd.0))
            .flatten()
    }

    /// Gives empty slabs back (`kmem_cache_shrink`), running dtors.
    pub fn shrink(&self) -> usize {
        let mut n = 0;
        if let Some(c) = &self.pgd_cache {
            n += c.shrink();
        }
        if let Some(c) = &self.pmd_cache {
            n += c.shrink();
        }
        n
    }

    /// Cache statistics for `/proc/slabinfo`.
    pub fn slab_stats(&self) -> Vec<CacheStats> {
        let mut v = Vec::new();
        if let Some(c) = &self.pgd_cache {
            v.push(c.stats());
        }
        if let Some(c) = &self.pmd_cache {
            v.push(c.stats());
        }
        v
    }

    /// Frames held by the caches' slabs.
    pub fn slab_frames(&self) -> u64 {
        self.slab_stats()
            .iter()
            .map(|s| (s.num_slabs * s.pages_per_slab) as u64)
            .sum()
    }

    /// Counters and lock figures.
    pub fn stats(&self) -> KernelStats {
        // Lock figures first: reading the list lengths takes the locks.
        let pgd_lock = self.sh.pgd_lock.stats();
        let mmlist_lock = self.sh.mmlist.stats();
        let c = &self.sh.counters;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        KernelStats {
            pgd_allocs: c.pgd_allocs.sum(),
            pgd_frees: c.pgd_frees.sum(),
            alloc_bytes: c.alloc_bytes.sum(),
            pgd_ctors: l(&c.pgd_ctors),
            pgd_dtors: l(&c.pgd_dtors),
            pmd_ctors: l(&c.pmd_ctors),
            ctor_bytes: l(&c.ctor_bytes),
            ticket_refreshes: l(&c.ticket_refreshes),
            propagated_entries: l(&c.propagated_entries),
            conversions: l(&c.conversions),
            propagation_ns: l(&c.propagation_ns),
            vmalloc_faults: l(&c.vmalloc_faults),
            pgd_list_len: self.sh.pgd_lock.lock().len(),
            mmlist_len: self.sh.mmlist.lock().len(),
            pgd_lock,
            mmlist_lock,
        }
    }

    /// Entry `index` of `pgd`.
    pub fn pgd_entry(&self, pgd: Pgd, index: usize) -> Result<Entry, KernelError> {
        x86paging::table::read_entry(&*self.sh.pm, self.sh.mode, self.sh.entry_at(pgd.0, index))
            .map_err(mem_err)
    }

    /// Virtual address of the start of pgd entry `index`.
    pub fn pgd_index_va(&self, index: usize) -> VirtAddr {
        self.sh.mode.pgd_entry_start(index)
    }
}

impl<M: KernelMem> Shared<M> {
    /// Debug mode: a pgd goes back to the cache only in constructed state.
    fn verify_pgd_on_free(&self, obj: NonNull<u8>) -> Result<(), &'static str> {
        let pgd = self.pm.pa_of(obj).ok_or("pgd outside RAM")?;
        if self.mode == PagingMode::Pae && self.scheme.keeps_pmds() {
            // The pgd goes back with its pmds: all three, all empty.
            for i in 0..self.mode.user_ptrs_per_pgd() {
                let e = x86paging::table::read_entry(&*self.pm, self.mode, self.entry_at(pgd, i))
                    .map_err(|_| "pgd unreadable")?;
                if !e.is_present() {
                    return Err("slab-prepopulated pgd freed without its pmds");
                }
                let pmd = self
                    .pm
                    .ptr_of(e.table_addr(self.mode))
                    .ok_or("pmd outside RAM")?;
                self.verify_pmd_on_free(pmd)?;
            }
            return Ok(());
        }
        if self.mode == PagingMode::Pae {
            return Ok(()); // user entries are overwritten before use
        }
        for i in 0..self.mode.user_ptrs_per_pgd() {
            let e = x86paging::table::read_entry(&*self.pm, self.mode, self.entry_at(pgd, i))
                .map_err(|_| "pgd unreadable")?;
            if !e.is_none() {
                return Err("user part of the pgd is not clear (clear_page_tables not run)");
            }
        }
        Ok(())
    }

    /// Debug mode: a pmd goes back to `pmd_cache` only when all zero.
    fn verify_pmd_on_free(&self, obj: NonNull<u8>) -> Result<(), &'static str> {
        let pmd = self.pm.pa_of(obj).ok_or("pmd outside RAM")?;
        for i in 0..512u64 {
            let v = self
                .pm
                .load_u64(PhysAddr::new(pmd.as_u64() + 8 * i))
                .map_err(|_| "pmd unreadable")?;
            if v != 0 {
                return Err("pmd is not clear");
            }
        }
        Ok(())
    }
}
