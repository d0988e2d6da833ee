//! `pgd_alloc`/`pgd_free` and the caches behind them: `pgd_cache` with
//! `pgd_ctor`/`pgd_dtor`, and on PAE `pmd_cache` with `pmd_ctor` — the
//! object-cache half of the seed's `pgtable.c`.
//!
//! A preconstructed pgd comes out of `pgd_cache` with its kernel part
//! already copied from swapper and its user part zero; it goes back the
//! same way (`clear_page_tables` ran before `pgd_free`). What the
//! constructor does to keep the kernel part current afterwards — link the
//! pgd on `pgd_list`, stamp a ticket, nothing — is the scheme's
//! `Tracker`'s business: this module only calls it.
//!
//! Without preconstruction (`uncached`, `shared-kernel`) a 2-level or
//! 4/5-level pgd is a fresh page built on every `pgd_alloc`; a PAE pgd is
//! a 32-byte object from a ctor-less cache whose kernel part is copied and
//! whose three user pmds are attached on every `pgd_alloc`.

use crate::error::KernelError;
use crate::pages::SimPages;
use crate::prelude::*;
use crate::scheme::Scheme;
use crate::swapper::{KernelMem, Swapper};
use crate::tracker::Tracker;
use alloc::sync::Arc;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicU64, Ordering};
use objcache::{CacheBuilder, CacheStats, CpuToken, KmemCache, Obj, Objs, SlabFlags};
use physmem::{Owner, PhysAddr, PhysMem, PAGE_SIZE};
use x86paging::{Entry, PagingMode};

mod fast;
use fast::Fast;
pub use fast::{CpuPgds, PaePgdCpu, WholePgdCpu};

/// A page directory's physical address: what CR3 holds, what `pgd_list`
/// and the checkers name a pgd by. Anyone may copy one; owning the pgd is
/// [`OwnedPgd`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Pgd(pub PhysAddr);

/// A pgd as its owner holds it (`mm->pgd`): made only by
/// [`PgdCpu::pgd_alloc`](crate::PgdCpu::pgd_alloc), neither `Copy` nor
/// `Clone`, consumed by [`PgdCpu::pgd_free`](crate::PgdCpu::pgd_free).
///
/// Linux's `pgd_free(pgd_t *)` trusts its caller: `kmem_cache_free` pushes
/// the pointer on the CPU's array without looking at it (outside
/// `CONFIG_DEBUG_SLAB`). A raw [`Pgd`] cannot be trusted that way, so its
/// free looks the object up and refuses a foreign or double free
/// ([`PgdCpu::pgd_free_raw`](crate::PgdCpu::pgd_free_raw)). An `OwnedPgd`
/// is the caller's contract as a type: off a CPU's token it carries the
/// object cache's [`Obj`] handles of the pgd (and on PAE, the seed's
/// protocol, of its three pmds), so its free is the pushes alone.
#[must_use = "an OwnedPgd not given back with pgd_free stays allocated"]
pub struct OwnedPgd {
    pgd: Pgd,
    /// The pgd's object of `pgd_cache`, when it came off a CPU's token.
    obj: Option<Obj>,
    /// PAE, the seed's protocol: its user pmds of `pmd_cache`, when they
    /// came off the same token path (`set_pgd` named them in the pgd).
    pmds: Option<Objs<USER_PTRS_PAE>>,
}

impl OwnedPgd {
    /// A pgd from a path that makes no handles (per-call, page-sized,
    /// ctor-less): its free is the checked one.
    pub(crate) fn raw(pgd: Pgd) -> OwnedPgd {
        OwnedPgd {
            pgd,
            obj: None,
            pmds: None,
        }
    }

    /// The pgd's address (its CR3).
    #[inline(always)]
    pub fn pgd(&self) -> Pgd {
        self.pgd
    }

    /// Gives up ownership: the pgd stays allocated, and the checked
    /// `pgd_free` of a raw [`Pgd`] takes it back.
    pub fn into_raw(self) -> Pgd {
        self.pgd
    }

    /// Whether its free needs no lookup (it came off a CPU's token).
    pub fn has_handles(&self) -> bool {
        self.obj.is_some()
    }
}

impl core::fmt::Debug for OwnedPgd {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("OwnedPgd")
            .field("pgd", &self.pgd)
            .field("handles", &self.has_handles())
            .finish()
    }
}

type Cache<M> = KmemCache<SimPages<M>>;
type Token<'k, M> = CpuToken<'k, SimPages<M>>;

/// `USER_PTRS_PER_PGD` on PAE: the user pmds of a pgd.
const USER_PTRS_PAE: usize = 3;

fn pgd_oom(source: objcache::AllocError) -> KernelError {
    KernelError::CacheAlloc {
        cache: "pgd_cache",
        source,
    }
}

/// PAE's batch of pmds failed. Made out of line: built inline, the error's
/// byte-sized fields shared the `Result`'s slot with the batch's handle
/// words, and the compiler split those words into byte stores that a later
/// 8-byte load could not forward from (a stall on every pair). The 2-level
/// pair measured the other way (slower in paired runs with its error out
/// of line), so `pgd_oom` stays inline: judged by measurement, case by case.
#[cold]
#[inline(never)]
fn pmd_oom(source: objcache::AllocError) -> KernelError {
    KernelError::CacheAlloc {
        cache: "pmd_cache",
        source,
    }
}

fn pgd_free_err(source: objcache::FreeError) -> KernelError {
    KernelError::CacheFree {
        cache: "pgd_cache",
        source,
    }
}

/// The CPU slots of `pgd_cache` and `pmd_cache` owned by the thread acting
/// as one CPU (`get_cpu()` made static, see [`objcache::CpuToken`]): through
/// them a cache hit is a plain pop, a free a plain push.
pub(crate) struct CpuSlots<'k, M: KernelMem> {
    cpu: usize,
    pgd: Option<Token<'k, M>>,
    pmd: Option<Token<'k, M>>,
    /// This CPU's slots of the `pgd_allocs`/`pgd_frees` counters, looked
    /// up once: the fast paths bump them with a plain load and store.
    allocs: &'k AtomicU64,
    frees: &'k AtomicU64,
}

impl<M: KernelMem> CpuSlots<'_, M> {
    /// The CPU.
    pub(crate) fn cpu(&self) -> usize {
        self.cpu
    }

    /// A quiescent point: hands both slots to any remote operation waiting.
    pub(crate) fn serve(&mut self) {
        self.pgd
            .iter_mut()
            .chain(self.pmd.iter_mut())
            .for_each(|t| t.serve());
    }
}

/// How an allocation reaches the caches' per-CPU arrays.
pub(crate) enum Via<'t, 'k, M: KernelMem> {
    /// A caller that is not a CPU: each call takes CPU `cpu`'s slot lock
    /// (`alloc_on`/`free_on`).
    Call(usize),
    /// The thread acting as a CPU, through its tokens: no lock, no atomic
    /// read-modify-write on a hit.
    Cpu(&'t mut CpuSlots<'k, M>),
}

impl<M: KernelMem> Via<'_, '_, M> {
    pub(crate) fn cpu(&self) -> usize {
        match self {
            Via::Call(cpu) => *cpu,
            Via::Cpu(s) => s.cpu,
        }
    }

    fn alloc(&mut self, cache: &Cache<M>, pmd: bool) -> Result<NonNull<u8>, objcache::AllocError> {
        match self {
            Via::Call(cpu) => cache.alloc_on(*cpu),
            Via::Cpu(s) => match if pmd { &mut s.pmd } else { &mut s.pgd } {
                Some(t) => t.alloc(),
                None => cache.alloc_on(s.cpu),
            },
        }
    }

    fn free(
        &mut self,
        cache: &Cache<M>,
        obj: NonNull<u8>,
        pmd: bool,
    ) -> Result<(), objcache::FreeError> {
        match self {
            Via::Call(cpu) => cache.free_on(*cpu, obj),
            Via::Cpu(s) => match if pmd { &mut s.pmd } else { &mut s.pgd } {
                Some(t) => t.free(obj),
                None => cache.free_on(s.cpu, obj),
            },
        }
    }
}

/// What the caches' constructors and destructors share.
struct Ctors<M: KernelMem> {
    sw: Arc<Swapper<M>>,
    tracker: Arc<dyn Tracker<M>>,
}

impl<M: KernelMem> Ctors<M> {
    /// `pgd_ctor`: the kernel part (and its tracking) from the tracker,
    /// then the user part zeroed. A constructor cannot fail to the object
    /// cache; a failure is counted and `verify` reports it.
    fn pgd_ctor(&self, obj: NonNull<u8>) {
        let sw = &self.sw;
        let r = sw
            .pm
            .pa_of(obj)
            .ok_or(KernelError::BadPgd(PhysAddr::new(0), "outside RAM"));
        let r = r.and_then(|pgd| {
            sw.counters.pgd_ctors.fetch_add(1, Ordering::Relaxed);
            Ok(self.tracker.on_ctor(sw, pgd)? + sw.zero_user_part(pgd)?)
        });
        match r {
            Ok(bytes) => sw.counters.ctor_bytes.fetch_add(bytes, Ordering::Relaxed),
            Err(_) => sw.counters.ctor_failures.fetch_add(1, Ordering::Relaxed),
        };
    }

    /// `pgd_dtor`: the pgd leaves the cache; the tracker forgets it.
    fn pgd_dtor(&self, obj: NonNull<u8>) {
        let sw = &self.sw;
        sw.counters.pgd_dtors.fetch_add(1, Ordering::Relaxed);
        let ok = sw
            .pm
            .pa_of(obj)
            .is_some_and(|pgd| self.tracker.on_dtor(sw, pgd).is_ok());
        if !ok {
            sw.counters.ctor_failures.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// `pgd_dtor` of `slab-prepopulated`: the user pmds the cached pgd kept
    /// go back to `pmd_cache` (they are empty: every `pgd_free` ran
    /// `clear_page_tables` first).
    fn pgd_dtor_pmds(&self, obj: NonNull<u8>, pmds: &Cache<M>) {
        let sw = &self.sw;
        sw.counters.pgd_dtors.fetch_add(1, Ordering::Relaxed);
        let Some(pgd) = sw.pm.pa_of(obj) else {
            sw.counters.ctor_failures.fetch_add(1, Ordering::Relaxed);
            return;
        };
        for i in 0..sw.mode.user_ptrs_per_pgd() {
            let given_back = match sw.read(pgd, i) {
                Ok(e) if !e.is_present() => continue,
                Ok(e) => {
                    sw.pm
                        .ptr_of(e.table_addr(sw.mode))
                        .is_some_and(|p| pmds.free(p).is_ok())
                        && sw.write(pgd, i, Entry::EMPTY).is_ok()
                }
                Err(_) => false,
            };
            if !given_back {
                sw.counters.ctor_failures.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// `pmd_ctor`: a pmd is constructed when it is all zero.
    fn pmd_ctor(&self, obj: NonNull<u8>) {
        let sw = &self.sw;
        sw.counters.pmd_ctors.fetch_add(1, Ordering::Relaxed);
        match sw.pm.pa_of(obj).map(|pa| sw.pm.fill(pa, PAGE_SIZE, 0)) {
            Some(Ok(())) => sw
                .counters
                .ctor_bytes
                .fetch_add(PAGE_SIZE, Ordering::Relaxed),
            _ => sw.counters.ctor_failures.fetch_add(1, Ordering::Relaxed),
        };
    }

    /// Debug mode: a pgd goes back to the cache only in constructed state.
    fn verify_pgd_on_free(&self, obj: NonNull<u8>, keeps_pmds: bool) -> Result<(), &'static str> {
        let sw = &self.sw;
        let pgd = sw.pm.pa_of(obj).ok_or("pgd outside RAM")?;
        let user = 0..sw.mode.user_ptrs_per_pgd();
        if sw.mode == PagingMode::Pae && keeps_pmds {
            // The pgd goes back with its pmds: all three, all empty.
            for i in user {
                let e = sw.read(pgd, i).map_err(|_| "pgd unreadable")?;
                if !e.is_present() {
                    return Err("slab-prepopulated pgd freed without its pmds");
                }
                let pmd = sw
                    .pm
                    .ptr_of(e.table_addr(sw.mode))
                    .ok_or("pmd outside RAM")?;
                self.verify_pmd_on_free(pmd)?;
            }
            return Ok(());
        }
        if sw.mode == PagingMode::Pae {
            return Ok(()); // user entries are overwritten before use
        }
        for i in user {
            if !sw.read(pgd, i).map_err(|_| "pgd unreadable")?.is_none() {
                return Err("user part of the pgd is not clear (clear_page_tables not run)");
            }
        }
        Ok(())
    }

    /// Debug mode: a pmd goes back to `pmd_cache` only when all zero.
    fn verify_pmd_on_free(&self, obj: NonNull<u8>) -> Result<(), &'static str> {
        let pmd = self.sw.pm.pa_of(obj).ok_or("pmd outside RAM")?;
        for i in 0..512u64 {
            let at = PhysAddr::new(pmd.as_u64() + 8 * i);
            if self.sw.pm.load_u64(at).map_err(|_| "pmd unreadable")? != 0 {
                return Err("pmd is not clear");
            }
        }
        Ok(())
    }
}

/// `pgd_cache` and `pmd_cache`, and the allocation paths through them.
pub(crate) struct PgdCaches<M: KernelMem> {
    sw: Arc<Swapper<M>>,
    scheme: Scheme,
    /// `pgd_cache`: preconstructed pgds (slab schemes), or ctor-less 32-byte
    /// PAE pgds (`uncached`, `shared-kernel`). `None` when pgds are pages.
    pgd_cache: Option<Cache<M>>,
    /// `pmd_cache`: zeroed pmds for PAE slab schemes (shared with the
    /// `slab-prepopulated` `pgd_dtor`, which gives a cached pgd's pmds back).
    pmd_cache: Option<Arc<Cache<M>>>,
    /// What a CPU's token path does (decided once, at `pgtable_cache_init`).
    fast: Fast,
    /// The direct map as one window, when it is one: the fast paths' `__pa`
    /// is then a subtraction and a bound on a copy kept here.
    linear: Option<physmem::LinearMap>,
}

impl<M: KernelMem> PgdCaches<M> {
    /// `pgtable_cache_init`: creates the caches `scheme` needs in this mode.
    pub(crate) fn new(
        sw: &Arc<Swapper<M>>,
        tracker: &Arc<dyn Tracker<M>>,
        scheme: Scheme,
        cpus: usize,
        debug: bool,
        stats: bool,
    ) -> Result<Self, KernelError> {
        let ctors = Arc::new(Ctors {
            sw: sw.clone(),
            tracker: tracker.clone(),
        });
        let pmd_cache = Self::make_pmd_cache(&ctors, scheme, cpus, debug, stats)?.map(Arc::new);
        let pgd_cache =
            Self::make_pgd_cache(&ctors, scheme, cpus, debug, stats, pmd_cache.as_ref())?;
        let linear = sw.pm.linear();
        // `__pa` on the hot paths is the window's subtraction: memory that
        // is not one window takes the general path.
        let fast = match (&pgd_cache, &pmd_cache, sw.mode, linear) {
            _ if !scheme.preconstructed() => Fast::General,
            (None, ..) | (.., None) => Fast::General,
            (Some(_), Some(_), PagingMode::Pae, Some(window)) => Fast::Pae {
                window,
                kept: scheme.keeps_pmds(),
            },
            (Some(_), None, PagingMode::Pae, _) => Fast::General,
            (Some(_), _, _, Some(window)) => Fast::Whole(window),
        };
        Ok(PgdCaches {
            sw: sw.clone(),
            scheme,
            pgd_cache,
            pmd_cache,
            fast,
            linear,
        })
    }

    fn make_pgd_cache(
        ctors: &Arc<Ctors<M>>,
        scheme: Scheme,
        cpus: usize,
        debug: bool,
        stats: bool,
        pmd_cache: Option<&Arc<Cache<M>>>,
    ) -> Result<Option<Cache<M>>, KernelError> {
        let sw = &ctors.sw;
        let mode = sw.mode;
        let align = if mode == PagingMode::Pae {
            32
        } else {
            PAGE_SIZE as usize
        };
        let mut b = CacheBuilder::new("pgd", mode.pgd_bytes() as usize)
            .align(align)
            .cpus(cpus)
            .stats(stats);
        if scheme.preconstructed() {
            let c = ctors.clone();
            b = b.ctor(move |p| c.pgd_ctor(p));
            if ctors.tracker.has_dtor() {
                let c = ctors.clone();
                b = b.dtor(move |p| c.pgd_dtor(p));
            }
            if let (true, Some(pmds)) = (scheme.keeps_pmds(), pmd_cache) {
                let (c, pmds) = (ctors.clone(), pmds.clone());
                b = b.dtor(move |p| c.pgd_dtor_pmds(p, &pmds));
            }
            if debug {
                let (c, keeps) = (ctors.clone(), scheme.keeps_pmds());
                b = b
                    .flags(SlabFlags::DEBUG_FREE)
                    .verify(move |p| c.verify_pgd_on_free(p, keeps).map_err(str::to_string));
            }
        } else if mode != PagingMode::Pae {
            // uncached / shared-kernel on page-sized pgds: straight from
            // the page allocator, as 2.5.69 did.
            return Ok(None);
        }
        b.build(SimPages::new(sw.pm.clone()))
            .map(Some)
            .map_err(|source| KernelError::CacheCreate {
                cache: "pgd_cache",
                source,
            })
    }

    fn make_pmd_cache(
        ctors: &Arc<Ctors<M>>,
        scheme: Scheme,
        cpus: usize,
        debug: bool,
        stats: bool,
    ) -> Result<Option<Cache<M>>, KernelError> {
        if ctors.sw.mode != PagingMode::Pae || !scheme.preconstructed() {
            return Ok(None);
        }
        let c = ctors.clone();
        let mut b = CacheBuilder::new("pmd", PAGE_SIZE as usize)
            .align(PAGE_SIZE as usize)
            .cpus(cpus)
            .stats(stats)
            .ctor(move |p| c.pmd_ctor(p));
        if debug {
            let c = ctors.clone();
            b = b
                .flags(SlabFlags::DEBUG_FREE)
                .verify(move |p| c.verify_pmd_on_free(p).map_err(str::to_string));
        }
        b.build(SimPages::new(ctors.sw.pm.clone()))
            .map(Some)
            .map_err(|source| KernelError::CacheCreate {
                cache: "pmd_cache",
                source,
            })
    }

    /// Claims CPU `cpu`'s slots of both caches for the calling thread.
    pub(crate) fn claim_cpu(&self, cpu: usize) -> Result<CpuSlots<'_, M>, KernelError> {
        fn claim<P: objcache::PageSource>(
            c: &KmemCache<P>,
            cpu: usize,
        ) -> Result<CpuToken<'_, P>, KernelError> {
            c.claim_cpu(cpu)
                .map_err(|source| KernelError::CpuClaim { cpu, source })
        }
        let counters = &self.sw.counters;
        Ok(CpuSlots {
            cpu,
            pgd: self.pgd_cache.as_ref().map(|c| claim(c, cpu)).transpose()?,
            pmd: self
                .pmd_cache
                .as_deref()
                .map(|c| claim(c, cpu))
                .transpose()?,
            allocs: counters.pgd_allocs.slot(cpu),
            frees: counters.pgd_frees.slot(cpu),
        })
    }

    fn ptr_of(&self, pa: PhysAddr) -> Result<NonNull<u8>, KernelError> {
        self.sw
            .pm
            .ptr_of(pa)
            .ok_or(KernelError::BadPgd(pa, "outside RAM"))
    }

    #[inline(always)]
    fn pa_of(&self, obj: NonNull<u8>) -> Result<PhysAddr, KernelError> {
        match &self.linear {
            Some(lin) => lin.pa_of(obj),
            None => self.sw.pm.pa_of(obj),
        }
        .ok_or(KernelError::BadPgd(PhysAddr::new(0), "object outside RAM"))
    }

    /// `pgd_alloc` on CPU `cpu`: a pgd whose user part is empty and whose
    /// kernel part matches `swapper_pg_dir` (up to lazily faulted vmalloc
    /// entries, and, for the ticket scheme, up to a refresh at join).
    #[inline(always)]
    pub(crate) fn alloc(&self, via: &mut Via<'_, '_, M>) -> Result<OwnedPgd, KernelError> {
        match via {
            Via::Cpu(slots) => self.alloc_cpu(slots),
            Via::Call(_) => self.alloc_general(via).map(OwnedPgd::raw),
        }
    }

    /// `pgd_alloc` for every caller and scheme: per call through a CPU
    /// slot's lock, the page allocator, ctor-less PAE objects.
    #[inline(never)]
    fn alloc_general(&self, via: &mut Via<'_, '_, M>) -> Result<Pgd, KernelError> {
        let sw = &self.sw;
        let cpu = via.cpu();
        let oom = pgd_oom;
        let pgd = match (&self.pgd_cache, sw.mode) {
            (None, _) => self.alloc_page(cpu)?,
            (Some(cache), PagingMode::Pae) => {
                let obj = via.alloc(cache, false).map_err(oom)?;
                match self.pae_setup(via, obj) {
                    Ok(pgd) => pgd,
                    Err(e) => {
                        // Nothing is lost: the object goes back as it came.
                        let _ = via.free(cache, obj, false);
                        return Err(e);
                    }
                }
            }
            (Some(cache), _) => self.pa_of(via.alloc(cache, false).map_err(oom)?)?,
        };
        sw.counters.pgd_allocs.add(cpu, 1);
        Ok(Pgd(pgd))
    }

    /// PAE: completes a 32-byte pgd object from `pgd_cache` (copies the
    /// kernel part where the cache has no ctor, attaches the user pmds).
    fn pae_setup(
        &self,
        via: &mut Via<'_, '_, M>,
        obj: NonNull<u8>,
    ) -> Result<PhysAddr, KernelError> {
        let sw = &self.sw;
        let cpu = via.cpu();
        let pgd = self.pa_of(obj)?;
        if !self.scheme.preconstructed() {
            let n = sw.copy_kernel_part(pgd)?;
            sw.counters.alloc_bytes.add(cpu, n);
        }
        // `slab-prepopulated`: a pgd that was in use before still has its
        // (empty) pmds; only a fresh object needs them. `pgd_ctor` cannot
        // fail, so it cannot allocate them. All or none are attached.
        if !(self.scheme.keeps_pmds() && sw.read(pgd, 0)?.is_present()) {
            self.pae_attach_pmds(via, pgd)?;
        }
        Ok(pgd)
    }

    /// 2.5.69 before the patch (and modern x86): a fresh page, user part
    /// zeroed, kernel part copied.
    fn alloc_page(&self, cpu: usize) -> Result<PhysAddr, KernelError> {
        let sw = &self.sw;
        let f = sw
            .pm
            .alloc_frame(Owner::PgdPage)
            .map_err(|source| KernelError::FrameAlloc {
                what: "a pgd page",
                source,
            })?;
        let pgd = f.start();
        let built = sw
            .zero_user_part(pgd)
            .and_then(|z| Ok(z + sw.copy_kernel_part(pgd)?));
        match built {
            Ok(n) => {
                sw.counters.alloc_bytes.add(cpu, n);
                Ok(pgd)
            }
            Err(e) => {
                let _ = sw.pm.free_frame(f);
                Err(e)
            }
        }
    }

    /// PAE: three user pmds, installed with only the present bit
    /// (`set_pgd(&pgd[i], __pgd(1 + __pa(pmd)))`); on failure every pmd
    /// taken so far goes back (`out_oom`).
    fn pae_attach_pmds(&self, via: &mut Via<'_, '_, M>, pgd: PhysAddr) -> Result<(), KernelError> {
        let sw = &self.sw;
        // USER_PTRS_PER_PGD is 3 on PAE: no heap allocation on this path.
        let mut got = [PhysAddr::new(0); 4];
        let n = sw.mode.user_ptrs_per_pgd().min(got.len());
        self.pmds_get(via, &mut got[..n])?;
        for (i, &pmd) in got[..n].iter().enumerate() {
            if let Err(err) = sw.write(pgd, i, Entry::from_raw(pmd.as_u64() | 1)) {
                // All or none: undo the entries written and give every pmd back.
                for j in 0..i {
                    let _ = sw.write(pgd, j, Entry::EMPTY);
                }
                self.pmds_put(via, &got[..n]);
                return Err(err);
            }
        }
        Ok(())
    }

    /// Fills `out` with constructed (zeroed) pmds, all or none. From the
    /// pmd cache they come through the CPU's token, or, for a per-call
    /// caller, through one pinned CPU slot (`get_cpu()` once for the three,
    /// as the kernel's per-CPU array is used with interrupts off), not one
    /// slot-lock round trip each.
    fn pmds_get(&self, via: &mut Via<'_, '_, M>, out: &mut [PhysAddr]) -> Result<(), KernelError> {
        let sw = &self.sw;
        let cpu = via.cpu();
        let Some(c) = &self.pmd_cache else {
            for i in 0..out.len() {
                match sw.pm.alloc_zeroed_frame(Owner::UserTable) {
                    Ok(f) => {
                        sw.counters.alloc_bytes.add(cpu, PAGE_SIZE);
                        out[i] = f.start();
                    }
                    Err(source) => {
                        for &pmd in &out[..i] {
                            let _ = sw.pm.free_frame(pmd.frame());
                        }
                        return Err(KernelError::FrameAlloc {
                            what: "a pmd page",
                            source,
                        });
                    }
                }
            }
            return Ok(());
        };
        let oom = |source| KernelError::CacheAlloc {
            cache: "pmd_cache",
            source,
        };
        match via {
            Via::Cpu(slots) if slots.pmd.is_some() => {
                let one = core::cell::RefCell::new(Via::Cpu(slots));
                self.pmds_get_each(
                    || one.borrow_mut().alloc(c, true),
                    |p| one.borrow_mut().free(c, p, true),
                    out,
                    oom,
                )
            }
            _ => {
                let pinned = core::cell::RefCell::new(c.lock_cpu(cpu).map_err(oom)?);
                self.pmds_get_each(
                    || pinned.borrow_mut().alloc(),
                    |p| pinned.borrow_mut().free(p),
                    out,
                    oom,
                )
            }
        }
    }

    /// `out.len()` pmds from `alloc`, all or none (`free` gives back).
    fn pmds_get_each(
        &self,
        mut alloc: impl FnMut() -> Result<NonNull<u8>, objcache::AllocError>,
        mut free: impl FnMut(NonNull<u8>) -> Result<(), objcache::FreeError>,
        out: &mut [PhysAddr],
        oom: impl Fn(objcache::AllocError) -> KernelError,
    ) -> Result<(), KernelError> {
        for i in 0..out.len() {
            match alloc().map_err(&oom).and_then(|p| self.pa_of(p)) {
                Ok(pmd) => out[i] = pmd,
                Err(e) => {
                    for &pmd in &out[..i] {
                        if let Ok(p) = self.ptr_of(pmd) {
                            let _ = free(p);
                        }
                    }
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// Gives empty pmds back (through the token, or one pinned CPU slot).
    fn pmds_put(&self, via: &mut Via<'_, '_, M>, pmds: &[PhysAddr]) {
        let Some(c) = &self.pmd_cache else {
            for &pmd in pmds {
                let _ = self.sw.pm.free_frame(pmd.frame());
            }
            return;
        };
        let ptrs = pmds.iter().filter_map(|&pmd| self.ptr_of(pmd).ok());
        match via {
            Via::Cpu(slots) if slots.pmd.is_some() => {
                let mut one = Via::Cpu(slots);
                ptrs.for_each(|p| {
                    let _ = one.free(c, p, true);
                });
            }
            _ => {
                if let Ok(mut pinned) = c.lock_cpu(via.cpu()) {
                    ptrs.for_each(|p| {
                        let _ = pinned.free(p);
                    });
                }
            }
        }
    }

    /// `pgd_free` on CPU `cpu`. The caller has already run
    /// `clear_page_tables` (the user part is empty; on PAE the user pmds are
    /// empty), so a cached pgd goes back in constructed state.
    #[inline(always)]
    pub(crate) fn free(&self, via: &mut Via<'_, '_, M>, pgd: OwnedPgd) -> Result<(), KernelError> {
        match via {
            Via::Cpu(slots) => self.free_cpu(slots, pgd),
            Via::Call(_) => self.free_general(via, pgd.into_raw()),
        }
    }

    /// `pgd_free` of a raw address (Linux's `pgd_free(pgd_t *)`): looked up
    /// and checked, a foreign or double free refused.
    #[inline]
    pub(crate) fn free_raw(&self, via: &mut Via<'_, '_, M>, pgd: Pgd) -> Result<(), KernelError> {
        match via {
            Via::Cpu(slots) => self.free_cpu_raw(slots, pgd),
            Via::Call(_) => self.free_general(via, pgd),
        }
    }

    /// `pgd_free` for every caller and scheme (see [`Self::alloc_general`]).
    #[inline(never)]
    fn free_general(&self, via: &mut Via<'_, '_, M>, pgd: Pgd) -> Result<(), KernelError> {
        let sw = &self.sw;
        let cpu = via.cpu();
        if pgd.0 == sw.pgd {
            return Err(KernelError::BadPgd(pgd.0, "swapper_pg_dir is never freed"));
        }
        let mut pmds = [PhysAddr::new(0); 4];
        let mut n = 0;
        if sw.mode == PagingMode::Pae && !self.scheme.keeps_pmds() {
            for i in 0..sw.mode.user_ptrs_per_pgd().min(pmds.len()) {
                let e = sw.read(pgd.0, i)?;
                if e.is_present() {
                    pmds[n] = e.table_addr(sw.mode);
                    n += 1;
                }
                // "in the PAE case user pgd entries are overwritten before
                // usage": the stale pointer stays in the cached object.
            }
        }
        // The pgd first: one the cache refuses (a double free) leaves the
        // pmds its stale entries name alone (see `pae_free_raw`).
        match &self.pgd_cache {
            Some(c) => via.free(c, self.ptr_of(pgd.0)?, false).map_err(|source| {
                KernelError::CacheFree {
                    cache: "pgd_cache",
                    source,
                }
            })?,
            None => sw
                .pm
                .free_frame(pgd.0.frame())
                .map_err(KernelError::FrameFree)?,
        }
        self.pmds_put(via, &pmds[..n]);
        sw.counters.pgd_frees.add(cpu, 1);
        Ok(())
    }

    /// Every object of `cache`, with whether it is allocated. Taken from
    /// the cache itself, not from any list a scheme keeps.
    fn objects(&self, cache: Option<&Cache<M>>) -> Vec<(PhysAddr, bool)> {
        let mut out = Vec::new();
        if let Some(c) = cache {
            c.for_each_object(|p, allocated| {
                if let Some(pa) = self.sw.pm.pa_of(p) {
                    out.push((pa, allocated));
                }
            });
        }
        out
    }

    /// Every pgd object of `pgd_cache`, with whether it is allocated.
    pub(crate) fn pgd_objects(&self) -> Vec<(Pgd, bool)> {
        self.objects(self.pgd_cache.as_ref())
            .into_iter()
            .map(|(pa, a)| (Pgd(pa), a))
            .collect()
    }

    /// Every pmd object of `pmd_cache`, with whether it is allocated.
    pub(crate) fn pmd_objects(&self) -> Vec<(PhysAddr, bool)> {
        self.objects(self.pmd_cache.as_deref())
    }

    /// True when `pgd_cache` holds constructed pgds (free objects of a
    /// ctor-less cache are raw memory, not pgds).
    pub(crate) fn preconstructed(&self) -> bool {
        self.scheme.preconstructed()
    }

    /// True when a cached PAE pgd keeps its user pmds.
    pub(crate) fn keeps_pmds(&self) -> bool {
        self.scheme.keeps_pmds()
    }

    /// True when pgds are slab objects (a pgd's frame is a slab page).
    pub(crate) fn pgds_are_objects(&self) -> bool {
        self.pgd_cache.is_some()
    }

    /// True when PAE pmds come from `pmd_cache`.
    pub(crate) fn has_pmd_cache(&self) -> bool {
        self.pmd_cache.is_some()
    }

    fn caches(&self) -> impl Iterator<Item = &Cache<M>> {
        self.pgd_cache.iter().chain(self.pmd_cache.as_deref())
    }

    /// `kmem_cache_shrink` of both caches: empty slabs go back, dtors run.
    pub(crate) fn shrink(&self) -> usize {
        self.caches().map(|c| c.shrink()).sum()
    }

    /// Statistics of both caches, for `/proc/slabinfo`.
    pub(crate) fn stats(&self) -> Vec<CacheStats> {
        self.caches().map(|c| c.stats()).collect()
    }
}
