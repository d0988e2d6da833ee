//! [`Kernel`]: the pgd system as one object, a facade over the parts that
//! do the work.
//!
//! | part | module | owns |
//! |---|---|---|
//! | `swapper_pg_dir`, memory, counters | `crate::swapper` | nothing locked |
//! | `pgd_cache`/`pmd_cache`, `pgd_alloc`/`pgd_free`, ctors | `crate::pgd` | the object caches (their own locks) |
//! | which pgds a change reaches | `crate::tracker` | `pgd_list`/`pgd_lock`, `mmlist`/`mmlist_lock`, the ticket generation |
//! | exec, fork, exit | `crate::mm` | nothing (calls the three above) |
//! | `change_page_attr`, `global_flush_tlb` | `crate::cpa` | `cpa_lock`, the split set, the deferred list |
//! | `vmalloc`, `vfree`, `vmalloc_fault` | `crate::vmalloc` | `vmlist_lock`, the areas |
//! | the TLB shootdown hook | `crate::tlb` | the hook |
//! | the checker | `crate::check` | nothing (borrows the rest) |
//!
//! Every method here is a one-line delegation; the facade itself decides
//! nothing.

use crate::check::{Checker, Report};
use crate::cpa::{Cpa, CpaError};
use crate::error::KernelError;
use crate::lock::LockKind;
use crate::mm::{AddressSpaces, Mm, MmError, TaskSize};
use crate::pgd::{CpuSlots, OwnedPgd, PaePgdCpu, Pgd, PgdCaches, Via, WholePgdCpu};
use crate::prelude::*;
use crate::scheme::Scheme;
use crate::stats::KernelStats;
use crate::swapper::{KernelMem, Swapper};
use crate::tlb::TlbFlush;
use crate::tracker::Tracker;
use crate::vmalloc::{VmError, Vmalloc};
use alloc::sync::Arc;
use core::sync::atomic::{AtomicU64, Ordering};
use objcache::CacheStats;
use physmem::{Frame, PhysAddr, PhysMemory, VirtAddr};
use x86paging::boot::{BootConfig, KernelSpace};
use x86paging::{Entry, EntryFlags, PagingMode};

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
    /// The object caches' per-CPU hit counters (Linux's `STATS`,
    /// `CONFIG_DEBUG_SLAB`; `objcache::CacheBuilder::stats`).  On by
    /// default; off is the production kernel, whose hits write no counter.
    pub slab_stats: bool,
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
            slab_stats: true,
        }
    }
}

/// The default memory of a [`Kernel`]: the simulator's `Ram` with `std`,
/// a kernel's direct map ([`physmem::Lowmem`]) without.
#[cfg(feature = "std")]
pub type DefaultMem = physmem::Ram;
/// The default memory of a [`Kernel`]: the simulator's `Ram` with `std`,
/// a kernel's direct map ([`physmem::Lowmem`]) without.
#[cfg(not(feature = "std"))]
pub type DefaultMem = physmem::Lowmem;

/// The page-directory allocation system of a kernel, over memory `M`
/// (by default the simulator's RAM; see [`DefaultMem`]).
pub struct Kernel<M: KernelMem = DefaultMem> {
    sw: Arc<Swapper<M>>,
    ks: Arc<KernelSpace>,
    scheme: Scheme,
    tracker: Arc<dyn Tracker<M>>,
    caches: PgdCaches<M>,
    cpa: Cpa<M>,
    vm: Vmalloc<M>,
    tlb: Arc<TlbFlush>,
    cpus: usize,
}

impl<M: KernelMem> Kernel<M> {
    /// Boots a kernel in `pm`: builds `swapper_pg_dir`, the scheme's
    /// tracker and the pgd caches.
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
        let ks = Arc::new(x86paging::boot::boot(&pm, BootConfig::new(mode))?);
        let sw = Arc::new(Swapper::new(pm, &ks, cpus));
        let tracker: Arc<dyn Tracker<M>> = Arc::from(crate::tracker::for_config(
            cfg.scheme,
            mode,
            cfg.lock,
            cfg.timed_locks,
        ));
        tracker.on_boot(&sw)?;
        let caches = PgdCaches::new(&sw, &tracker, cfg.scheme, cpus, cfg.debug, cfg.slab_stats)?;
        let tlb = Arc::new(TlbFlush::new());
        Ok(Kernel {
            cpa: Cpa::new(&sw, &ks, &tracker, &tlb),
            vm: Vmalloc::new(&sw, &ks, &tlb),
            scheme: cfg.scheme,
            sw,
            ks,
            tracker,
            caches,
            tlb,
            cpus,
        })
    }

    fn address_spaces(&self) -> AddressSpaces<'_, M> {
        AddressSpaces {
            sw: &self.sw,
            ks: &self.ks,
            caches: &self.caches,
            tracker: &*self.tracker,
        }
    }

    // --- What the kernel is -------------------------------------------

    /// The paging mode.
    pub fn mode(&self) -> PagingMode {
        self.sw.mode
    }

    /// The scheme.
    pub fn scheme(&self) -> Scheme {
        self.scheme
    }

    /// Number of CPUs.
    pub fn cpus(&self) -> usize {
        self.cpus
    }

    /// The physical memory.
    pub fn pm(&self) -> &Arc<PhysMemory<M>> {
        &self.sw.pm
    }

    /// The booted kernel address space (layout, CPU state).
    pub fn kernel_space(&self) -> &KernelSpace {
        &self.ks
    }

    /// `swapper_pg_dir`.
    pub fn swapper(&self) -> Pgd {
        Pgd(self.sw.pgd)
    }

    /// `--cfg loom` only: switch to a deliberately broken protocol variant.
    #[cfg(loom)]
    pub fn inject_bug(&self, bug: crate::bug::Bug) {
        self.sw.bugs.set(bug);
    }

    // --- Address spaces (mm.rs) and pgds (pgd.rs) -----------------------

    /// exec: a fresh address space with `size` pages mapped, joined to `mmlist`.
    pub fn exec_mm(&self, cpu: usize, size: TaskSize) -> Result<Mm, MmError> {
        self.address_spaces().exec_mm(&mut Via::Call(cpu), size)
    }

    /// fork: a new address space sharing `parent`'s pages copy-on-write.
    pub fn fork_mm(&self, cpu: usize, parent: &Mm) -> Result<Mm, MmError> {
        self.address_spaces().fork_mm(&mut Via::Call(cpu), parent)
    }

    /// exit: leave `mmlist`, `clear_page_tables`, `pgd_free`.
    pub fn exit_mm(&self, cpu: usize, mm: Mm) -> Result<(), MmError> {
        self.address_spaces().exit_mm(&mut Via::Call(cpu), mm)
    }

    /// fork onto `pgd` instead of a fresh `pgd_alloc`: join `mmlist` and
    /// copy `parent`'s ptes, as [`Kernel::fork_mm`] does after its
    /// `pgd_alloc`. `pgd` must be a constructed pgd of this kernel that the
    /// caller got from [`Kernel::pgd_alloc`] and no address space uses.
    /// With [`Kernel::exit_mm_keep_pgd`] it measures fork + exit with a pgd
    /// that costs nothing (the benchmark's limit row). On failure all is
    /// undone and `pgd` is still the caller's.
    pub fn fork_mm_onto(&self, pgd: Pgd, parent: &Mm) -> Result<Mm, MmError> {
        self.address_spaces().fork_mm_onto(pgd, parent)
    }

    /// exit without `pgd_free`: leave `mmlist`, unmap, free the page
    /// tables; the pgd comes back in constructed state, the caller's to
    /// reuse or `pgd_free`.
    pub fn exit_mm_keep_pgd(&self, mm: Mm) -> Result<Pgd, MmError> {
        self.address_spaces().exit_mm_keep_pgd(mm)
    }

    /// `clear_page_tables`: the pgd back in constructed state.
    pub fn clear_page_tables(&self, pgd: Pgd) -> Result<(), KernelError> {
        self.address_spaces().clear_page_tables(pgd)
    }

    /// `pgd_alloc` on CPU `cpu`.
    pub fn pgd_alloc(&self, cpu: usize) -> Result<Pgd, KernelError> {
        self.caches
            .alloc(&mut Via::Call(cpu))
            .map(OwnedPgd::into_raw)
    }

    /// `pgd_free` on CPU `cpu` (after `clear_page_tables`).
    pub fn pgd_free(&self, cpu: usize, pgd: Pgd) -> Result<(), KernelError> {
        self.caches.free_raw(&mut Via::Call(cpu), pgd)
    }

    /// Claims CPU `cpu` for the calling thread: through the returned
    /// [`PgdCpu`], `pgd_alloc`/`pgd_free` (and PAE's pmds) use the CPU's
    /// own slots of the object caches with no lock and no atomic
    /// read-modify-write on a hit — the kernel's per-CPU fast path. Fails
    /// if another thread acts as that CPU. Where pgds are pages (no object
    /// cache) there is no per-CPU state to own and the claim always
    /// succeeds. The per-call methods above stay for callers that are not
    /// a CPU.
    pub fn claim_cpu(&self, cpu: usize) -> Result<PgdCpu<'_, M>, KernelError> {
        Ok(PgdCpu {
            k: self,
            slots: self.caches.claim_cpu(cpu)?,
        })
    }

    /// Claims CPU `cpu` as a [`WholePgdCpu`]: the same per-CPU fast path as
    /// [`Self::claim_cpu`], its shape fixed in the type, for kernels whose
    /// pgds are whole page-sized objects of `pgd_cache` (2-level, 4- and
    /// 5-level with a preconstructing scheme). Fails with
    /// [`KernelError::WrongShape`] elsewhere, and as `claim_cpu` does if
    /// another thread acts as that CPU.
    pub fn claim_whole_cpu(&self, cpu: usize) -> Result<WholePgdCpu<'_, M>, KernelError> {
        self.caches.claim_whole(cpu)
    }

    /// Claims CPU `cpu` as a [`PaePgdCpu`]: the per-CPU fast path of a PAE
    /// kernel with `pmd_cache` (the seed's protocol, `slab-prepopulated`),
    /// its shape fixed in the type. Fails with [`KernelError::WrongShape`]
    /// elsewhere, and as `claim_cpu` does if another thread acts as that
    /// CPU.
    pub fn claim_pae_cpu(&self, cpu: usize) -> Result<PaePgdCpu<'_, M>, KernelError> {
        self.caches.claim_pae(cpu)
    }

    /// The address space of `pgd` joins `mmlist` (fork's `dup_mmap`, exec).
    pub fn mm_join(&self, pgd: Pgd) -> Result<(), KernelError> {
        self.address_spaces().mm_join(pgd)
    }

    /// The address space of `pgd` leaves `mmlist` (exit, before `pgd_free`).
    pub fn mm_leave(&self, pgd: Pgd) {
        self.address_spaces().mm_leave(pgd)
    }

    // --- What the tracker and the caches hold ----------------------------

    /// Live address spaces (a snapshot of `mmlist`).
    pub fn live_pgds(&self) -> Vec<Pgd> {
        self.tracker
            .mmlist()
            .snapshot()
            .into_iter()
            .map(Pgd)
            .collect()
    }

    /// A snapshot of `pgd_list` (2-level `slab-pgd-list`; empty otherwise).
    pub fn pgd_list(&self) -> Vec<Pgd> {
        self.tracker
            .pgd_list(&self.sw)
            .into_iter()
            .map(Pgd)
            .collect()
    }

    /// The pgd's ticket (2-level `slab-ticket`).
    pub fn ticket_of(&self, pgd: Pgd) -> Option<u64> {
        self.tracker.ticket_of(&self.sw, pgd.0)
    }

    /// Current generation of the ticket scheme (0 for the others).
    pub fn generation(&self) -> u64 {
        self.tracker.generation()
    }

    /// Every pgd object of `pgd_cache`, allocated (`true`) or cached.
    /// Taken from the cache itself, not from any list a scheme keeps.
    pub fn cache_pgds(&self) -> Vec<(Pgd, bool)> {
        self.caches.pgd_objects()
    }

    /// Every pmd object of `pmd_cache`, with its allocation state.
    pub fn cache_pmds(&self) -> Vec<(PhysAddr, bool)> {
        self.caches.pmd_objects()
    }

    /// Gives empty slabs back (`kmem_cache_shrink`), running dtors.
    pub fn shrink(&self) -> usize {
        self.caches.shrink()
    }

    /// Cache statistics for `/proc/slabinfo`.
    pub fn slab_stats(&self) -> Vec<CacheStats> {
        self.caches.stats()
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
        let (pgd_lock, pgd_list_len) = self.tracker.pgd_lock_stats();
        let (mmlist_lock, mmlist_len) = self.tracker.mmlist().stats();
        let c = &self.sw.counters;
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
            pgd_list_len,
            mmlist_len,
            pgd_lock,
            mmlist_lock,
        }
    }

    /// Entry `index` of `pgd`.
    pub fn pgd_entry(&self, pgd: Pgd, index: usize) -> Result<Entry, KernelError> {
        self.sw.read(pgd.0, index)
    }

    /// Virtual address of the start of pgd entry `index`.
    pub fn pgd_index_va(&self, index: usize) -> VirtAddr {
        self.sw.mode.pgd_entry_start(index)
    }

    // --- Kernel mappings: change_page_attr (cpa.rs) ----------------------

    /// `PAGE_KERNEL` for vmalloc and other kernel data pages in this mode.
    pub fn page_kernel(&self) -> EntryFlags {
        crate::vmalloc::page_kernel(&self.ks)
    }

    /// The default protection of the direct-map page at `va`: what boot
    /// mapped it with (on i386 the pages over kernel text lack NX).
    pub fn page_kernel_at(&self, va: VirtAddr) -> Option<EntryFlags> {
        self.ks.reference(va).map(|(_, f)| f)
    }

    /// `change_page_attr(page, numpages, prot)` on the direct-map pages
    /// starting at `start`. All-or-nothing.
    pub fn change_page_attr(
        &self,
        start: VirtAddr,
        numpages: u64,
        prot: EntryFlags,
    ) -> Result<(), CpaError> {
        self.cpa.change_page_attr(start, numpages, prot)
    }

    /// `global_flush_tlb`: flush every CPU's TLB, then free the pte pages
    /// that `revert_page` replaced. Returns how many were freed.
    pub fn global_flush_tlb(&self) -> usize {
        self.cpa.global_flush_tlb()
    }

    /// Installs `flush_kernel_map` for every CPU: called by
    /// `global_flush_tlb` (and `vfree`) before freed tables are reused.
    pub fn set_flush_hook(&self, f: impl Fn() + Send + Sync + 'static) {
        self.tlb.set(f)
    }

    /// pte pages queued for freeing by `global_flush_tlb`.
    pub fn deferred_frames(&self) -> Vec<Frame> {
        self.cpa.deferred_frames()
    }

    /// pte pages currently installed by splits.
    pub fn split_frames(&self) -> Vec<Frame> {
        self.cpa.split_frames()
    }

    /// The direct-map address of physical address `pa` (`__va`), if mapped.
    pub fn direct_map_va(&self, pa: PhysAddr) -> Option<VirtAddr> {
        self.cpa.direct_map_va(pa)
    }

    // --- Kernel mappings: vmalloc (vmalloc.rs) ---------------------------

    /// The vmalloc area `[start, end)`.
    pub fn vmalloc_area(&self) -> (VirtAddr, VirtAddr) {
        self.vm.area()
    }

    /// True if `va` lies in the vmalloc area.
    pub fn in_vmalloc_area(&self, va: VirtAddr) -> bool {
        self.vm.contains(va)
    }

    /// `vmalloc(npages * PAGE_SIZE)`: mapped into `swapper_pg_dir` only.
    pub fn vmalloc(&self, npages: u64) -> Result<VirtAddr, VmError> {
        self.vm.alloc(npages)
    }

    /// `vfree`: unmap and flush under `vmlist_lock`, then free the frames.
    pub fn vfree(&self, va: VirtAddr) -> Result<(), VmError> {
        self.vm.free(va)
    }

    /// `vmalloc_fault`: copies swapper's top-level entry for `va` into
    /// `pgd` if it lacks it. Returns true if it did.
    pub fn vmalloc_fault(&self, pgd: Pgd, va: VirtAddr) -> Result<bool, KernelError> {
        self.vm.fault(pgd, va)
    }

    /// Backing frames of every vmalloc area.
    pub fn vmalloc_frames(&self) -> Vec<Frame> {
        self.vm.frames()
    }

    /// Start addresses and sizes (pages) of the vmalloc areas.
    pub fn vmalloc_areas(&self) -> Vec<(VirtAddr, u64)> {
        self.vm.areas()
    }

    // --- The checker (check.rs) ------------------------------------------

    /// Checks every pgd, live and cached, against `swapper_pg_dir`, and
    /// every frame's owner.
    pub fn verify(&self) -> Result<Report, KernelError> {
        Checker {
            sw: &self.sw,
            ks: &self.ks,
            caches: &self.caches,
            tracker: &*self.tracker,
            cpa: &self.cpa,
            vm: &self.vm,
        }
        .run()
    }
}

/// One CPU of the pgd system, held by the thread acting as that CPU (see
/// [`Kernel::claim_cpu`]): its slots of `pgd_cache` and `pmd_cache`, so a
/// cache hit is a plain pop and a free a plain push. Remote operations
/// (`shrink`, `slab_stats`, `verify`'s walk of the caches) are served by
/// this CPU at its next operation or at [`PgdCpu::serve`]: a thread that
/// holds a `PgdCpu` and stops allocating must call `serve`, or drop it.
pub struct PgdCpu<'k, M: KernelMem = DefaultMem> {
    k: &'k Kernel<M>,
    slots: CpuSlots<'k, M>,
}

impl<M: KernelMem> PgdCpu<'_, M> {
    /// The CPU.
    pub fn cpu(&self) -> usize {
        self.slots.cpu()
    }

    /// `pgd_alloc` on this CPU: the pgd as its owner holds it. Off the
    /// token it carries the object cache's handles, so its `pgd_free` is
    /// the pushes alone (see [`OwnedPgd`]).
    #[inline]
    pub fn pgd_alloc(&mut self) -> Result<OwnedPgd, KernelError> {
        self.k.caches.alloc(&mut Via::Cpu(&mut self.slots))
    }

    /// `pgd_free` on this CPU (after `clear_page_tables`).
    #[inline]
    pub fn pgd_free(&mut self, pgd: OwnedPgd) -> Result<(), KernelError> {
        self.k.caches.free(&mut Via::Cpu(&mut self.slots), pgd)
    }

    /// `pgd_free(pgd_t *)` of a raw address on this CPU: looked up and
    /// checked, a foreign or double free refused with an error.
    #[inline]
    pub fn pgd_free_raw(&mut self, pgd: Pgd) -> Result<(), KernelError> {
        self.k.caches.free_raw(&mut Via::Cpu(&mut self.slots), pgd)
    }

    /// exec on this CPU.
    pub fn exec_mm(&mut self, size: TaskSize) -> Result<Mm, MmError> {
        self.k
            .address_spaces()
            .exec_mm(&mut Via::Cpu(&mut self.slots), size)
    }

    /// fork on this CPU.
    pub fn fork_mm(&mut self, parent: &Mm) -> Result<Mm, MmError> {
        self.k
            .address_spaces()
            .fork_mm(&mut Via::Cpu(&mut self.slots), parent)
    }

    /// exit on this CPU.
    pub fn exit_mm(&mut self, mm: Mm) -> Result<(), MmError> {
        self.k
            .address_spaces()
            .exit_mm(&mut Via::Cpu(&mut self.slots), mm)
    }

    /// A quiescent point: serves any remote operation waiting for this CPU.
    pub fn serve(&mut self) {
        self.slots.serve()
    }
}
