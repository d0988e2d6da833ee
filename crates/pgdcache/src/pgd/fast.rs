//! The per-CPU fast path of `pgd_alloc`/`pgd_free`: a thread acting as a
//! CPU (`PgdCpu`) goes straight to its tokens of `pgd_cache`/`pmd_cache`,
//! in one shape per kernel ([`Fast`]) decided when the caches are built.
//! A hit is the object cache's pops and pushes and what a kernel does
//! around them (`__pa`, PAE's three `set_pgd` stores, one counter bump);
//! everything else goes to the general path in `pgd.rs`.
//!
//! Each shape's hit is written once (`whole_*`, `pae_*`, on the tokens
//! themselves) and run two ways: by `PgdCpu`, which dispatches on the
//! shape per call, and by [`WholePgdCpu`] and [`PaePgdCpu`], which fix it
//! in their type and own only their tokens, so that nothing they run takes
//! a token's address and a run of hits keeps the token's words in
//! registers — a kernel built for one paging mode knows its shape.
//!
//! The pgd comes out as an [`OwnedPgd`] holding the object cache's `Obj`
//! handles, so `pgd_free` of it is the pushes alone, as Linux's
//! `kmem_cache_free` is outside `CONFIG_DEBUG_SLAB`. A raw [`Pgd`]'s free
//! (`free_cpu_raw`) is looked up and checked instead: `__va`, the cache's
//! page map, the owned flag; on PAE the three entry loads name the pmds.

use super::{
    pgd_free_err, pgd_oom, pmd_oom, CpuSlots, OwnedPgd, Pgd, PgdCaches, Token, Via, USER_PTRS_PAE,
};
use crate::error::KernelError;
use crate::stats::bump;
use crate::swapper::KernelMem;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicU64, Ordering};
use objcache::{Obj, ObjFreeError, Objs};
use physmem::{LinearMap, PhysAddr};
use x86paging::{Entry, PagingMode};

/// The shape of `pgd_alloc`/`pgd_free` on a CPU's token path, decided once
/// per kernel so that the hit path is straight-line code: the object
/// cache's pops and pushes and what a kernel does around them, nothing else.
///
/// A shape with a direct map's window exists only where memory is one
/// linear window, and then every object of `pgd_cache` and `pmd_cache` lies
/// in it: their slab pages come from `SimPages`, which hands out only pages
/// the direct map places (`ptr_of`, checked once per slab page). So the
/// hit's `__pa` is Linux's, a subtraction ([`LinearMap::pa_of_mapped`]),
/// not a bound check per object per pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Fast {
    /// A preconstructed page-sized pgd (2-level, 4/5-level): one pop, one
    /// push; `__pa`/`__va` around them, `__pa` through the direct map's
    /// window kept here (the shape exists only where memory is one).
    Whole(LinearMap),
    /// PAE with `pmd_cache` (`kept`: `slab-prepopulated`, whose cached pgd
    /// keeps its empty pmds; otherwise the seed's protocol: one pgd pop and
    /// three pmd pops, three `set_pgd` stores; at free four pushes, the
    /// `OwnedPgd` naming the pmds, a raw pgd's free loading them from its
    /// entries), `__pa` through the direct map's window kept here.
    Pae {
        /// The direct map's window.
        window: LinearMap,
        /// `slab-prepopulated`: one pop, one entry load to tell a fresh
        /// object (which gets its pmds) from a used one.
        kept: bool,
    },
    /// No object cache for pgds, or ctor-less PAE pgds (`uncached`,
    /// `shared-kernel`): the general path.
    General,
}

/// PAE's three `set_pgd(&pgd[i], e[i])` of a fresh pgd, as a kernel writes
/// them: through the pgd's direct-map address `at`, not by physical address
/// through the memory's checked accessors (what the general path, which
/// holds only a physical address, does). Nothing can fail: the object is
/// ours and in RAM.
#[inline(always)]
fn set_user_entries(at: NonNull<u8>, set: &[u64; USER_PTRS_PAE]) {
    let pgd = at.as_ptr().cast::<u64>();
    debug_assert_eq!(pgd as usize % 32, 0, "a PAE pgd is 32-byte aligned");
    for (i, &e) in set.iter().enumerate() {
        // SAFETY: `at` is an allocated object of `pgd_cache`, held by its
        // `Obj` (ours alone until it is installed), 32 bytes and 32-byte
        // aligned (PAE's geometry), inside the direct map's window (as
        // every object of the caches is: see `Fast`), whose pointers are
        // the memory itself, accessed only atomically (`DirectMap::linear`'s
        // contract); entry `i < 3` lies inside it, 8-byte aligned.
        unsafe { AtomicU64::from_ptr(pgd.add(i)) }.store(e, Ordering::Release);
    }
}

impl<M: KernelMem> PgdCaches<M> {
    /// `pgd_alloc` through the CPU's tokens: on a hit, the cache pops and
    /// (PAE) the `set_pgd` stores, one counter bump, nothing else.
    #[inline(always)]
    pub(super) fn alloc_cpu(&self, slots: &mut CpuSlots<'_, M>) -> Result<OwnedPgd, KernelError> {
        match (self.fast, slots.pgd.as_mut(), slots.pmd.as_mut()) {
            (Fast::Whole(window), Some(pgds), _) => Self::whole_alloc(window, pgds, slots.allocs),
            (Fast::Pae { window, kept }, Some(pgds), Some(pmds)) => {
                self.pae_alloc(window, kept, pgds, pmds, slots.allocs)
            }
            _ => self.alloc_general(&mut Via::Cpu(slots)).map(OwnedPgd::raw),
        }
    }

    /// The `Whole` shape's `pgd_alloc`: the pop, `__pa` through the direct
    /// map's window, the counter bump. Its one home: the runtime-shaped
    /// path ([`Self::alloc_cpu`]) and [`WholePgdCpu`] both run it.
    #[inline(always)]
    fn whole_alloc(
        window: LinearMap,
        pgds: &mut Token<'_, M>,
        allocs: &AtomicU64,
    ) -> Result<OwnedPgd, KernelError> {
        let obj = pgds.alloc_obj().map_err(pgd_oom)?;
        let pgd = window.pa_of_mapped(obj.as_ptr());
        bump(allocs, 1);
        Ok(OwnedPgd {
            pgd: Pgd(pgd),
            obj: Some(obj),
            pmds: None,
        })
    }

    /// The `Whole` shape's `pgd_free` of a handle: the push and the bump.
    /// A refused object (another kernel's, or a failed debug check) stays
    /// allocated.
    #[inline(always)]
    fn whole_free(pgds: &mut Token<'_, M>, frees: &AtomicU64, obj: Obj) -> Result<(), KernelError> {
        if let Err(ObjFreeError { obj, why }) = pgds.free_obj(obj) {
            let _ = obj.into_raw();
            return Err(pgd_free_err(why));
        }
        bump(frees, 1);
        Ok(())
    }

    /// `__va` of a raw pgd given to `pgd_free`: never `swapper_pg_dir`,
    /// always in RAM (whether it is one of the cache's allocated objects
    /// is the cache's checked free's to say).
    #[inline(always)]
    fn freeable(&self, pgd: Pgd) -> Result<NonNull<u8>, KernelError> {
        if pgd.0 == self.sw.pgd {
            return Err(KernelError::BadPgd(pgd.0, "swapper_pg_dir is never freed"));
        }
        self.ptr_of(pgd.0)
    }

    /// The `Whole` shape's `pgd_free(pgd_t *)` of a raw address: `__va`,
    /// then the cache's checked free (a foreign or double free refused).
    #[inline(always)]
    fn whole_free_raw(
        &self,
        pgds: &mut Token<'_, M>,
        frees: &AtomicU64,
        pgd: Pgd,
    ) -> Result<(), KernelError> {
        let obj = self.freeable(pgd)?;
        pgds.free(obj).map_err(pgd_free_err)?;
        bump(frees, 1);
        Ok(())
    }

    /// Claims CPU `cpu`'s slot of `pgd_cache` as a [`WholePgdCpu`]: only
    /// where the shape is `Whole`.
    pub(crate) fn claim_whole(&self, cpu: usize) -> Result<WholePgdCpu<'_, M>, KernelError> {
        let (Fast::Whole(window), Some(cache)) = (self.fast, self.pgd_cache.as_ref()) else {
            return Err(KernelError::WrongShape {
                scheme: self.scheme,
                mode: self.sw.mode,
                wanted: "page-sized pgd_cache",
            });
        };
        let pgds = cache
            .claim_cpu(cpu)
            .map_err(|source| KernelError::CpuClaim { cpu, source })?;
        let counters = &self.sw.counters;
        Ok(WholePgdCpu {
            caches: self,
            cpu,
            pgds,
            window,
            allocs: counters.pgd_allocs.slot(cpu),
            frees: counters.pgd_frees.slot(cpu),
        })
    }

    /// The PAE shapes' `pgd_alloc` on a CPU's two tokens: the pgd pop,
    /// `__pa`, its pmds (the seed's protocol: three new ones as handles;
    /// `kept`: only a fresh object gets any), the bump. Its one home: the
    /// runtime-shaped path ([`Self::alloc_cpu`]) and [`PaePgdCpu`] run it.
    /// On failure everything taken goes back as it came.
    #[inline(always)]
    fn pae_alloc(
        &self,
        window: LinearMap,
        kept: bool,
        pgds: &mut Token<'_, M>,
        pmds: &mut Token<'_, M>,
        allocs: &AtomicU64,
    ) -> Result<OwnedPgd, KernelError> {
        let obj = pgds.alloc_obj().map_err(pgd_oom)?;
        let at = obj.as_ptr();
        let pgd = window.pa_of_mapped(at);
        let r = if kept {
            self.pae_kept_pmds(window, pmds, pgd, at).map(|()| None)
        } else {
            self.pae_new_pmds(window, pmds, at).map(Some)
        };
        match r {
            Ok(got) => {
                bump(allocs, 1);
                Ok(OwnedPgd {
                    pgd: Pgd(pgd),
                    obj: Some(obj),
                    pmds: got,
                })
            }
            Err(e) => {
                // Nothing is lost: the object goes back as it came (an
                // undo, which this cache cannot refuse).
                let _ = pgds.free_obj(obj);
                Err(e)
            }
        }
    }

    /// The seed's PAE `pgd_alloc` on a token: three pmds from `pmd_cache`,
    /// installed with only the present bit (`set_pgd(&pgd[i], __pgd(1 +
    /// __pa(pmd)))`) in the pgd object at `at`; on failure nothing was
    /// taken (the batch is all or none: `out_oom`) and the entries are left
    /// as they were (the caller returns the pgd object).
    #[inline(always)]
    fn pae_new_pmds(
        &self,
        window: LinearMap,
        pmds: &mut Token<'_, M>,
        at: NonNull<u8>,
    ) -> Result<Objs<USER_PTRS_PAE>, KernelError> {
        // The three as one batch (`kmem_cache_alloc_bulk`): all or none.
        let got = pmds.alloc_bulk::<USER_PTRS_PAE>().map_err(pmd_oom)?;
        // `set_pgd(&pgd[i], __pgd(1 + __pa(pmd)))`: the present bit only.
        let set = got
            .as_ptrs()
            .map(|p| Entry::from_raw(window.pa_of_mapped(p).as_u64() | 1).raw());
        set_user_entries(at, &set);
        Ok(got)
    }

    /// `slab-prepopulated`: a used object still has its (empty) pmds; a
    /// fresh one gets three (`pgd_ctor` cannot fail, so cannot allocate
    /// them), which stay with the object (`pgd_dtor` gives them back).
    #[inline(always)]
    fn pae_kept_pmds(
        &self,
        window: LinearMap,
        pmds: &mut Token<'_, M>,
        pgd: PhysAddr,
        at: NonNull<u8>,
    ) -> Result<(), KernelError> {
        if self.sw.pae_entry(pgd, 0)?.is_present() {
            return Ok(());
        }
        let _ = self.pae_new_pmds(window, pmds, at)?.into_raw();
        Ok(())
    }

    /// The PAE shapes' `pgd_free` of handles: the pgd first (a refused one,
    /// another kernel's or a failed debug check, keeps its pmds, still
    /// allocated, with it), then its pmds, one bump. `kept` pgds carry no
    /// pmd handles: their pmds stay with the object.
    #[inline(always)]
    fn pae_free(
        pgds: &mut Token<'_, M>,
        pmds: &mut Token<'_, M>,
        frees: &AtomicU64,
        obj: Obj,
        pmd_objs: Option<Objs<USER_PTRS_PAE>>,
    ) -> Result<(), KernelError> {
        let Some(got) = pmd_objs else {
            return Self::whole_free(pgds, frees, obj);
        };
        if let Err(ObjFreeError { obj, why }) = pgds.free_obj(obj) {
            let _ = obj.into_raw();
            let _ = got.into_raw();
            return Err(pgd_free_err(why));
        }
        // One batch (`kmem_cache_free_bulk`). A refused pmd (a failed debug
        // check, which the cache counts and `verify` reports) stays
        // allocated; the others are freed.
        if let Err(e) = pmds.free_bulk(got) {
            for p in e.refused.into_iter().flatten() {
                let _ = p.into_raw();
            }
        }
        bump(frees, 1);
        Ok(())
    }

    /// The PAE shapes' `pgd_free(pgd_t *)` of a raw address: looked up and
    /// checked; on the seed's protocol the three entry loads name the pmds.
    #[inline(always)]
    fn pae_free_raw(
        &self,
        kept: bool,
        pgds: &mut Token<'_, M>,
        pmds: &mut Token<'_, M>,
        frees: &AtomicU64,
        pgd: Pgd,
    ) -> Result<(), KernelError> {
        let obj = self.freeable(pgd)?;
        // Read the three entries first. "In the PAE case user pgd entries
        // are overwritten before usage": the stale pointers stay in the
        // cached object.
        let mut e = [Entry::EMPTY; USER_PTRS_PAE];
        if !kept {
            for (i, e) in e.iter_mut().enumerate() {
                *e = self.sw.pae_entry(pgd.0, i)?;
            }
        }
        // The pgd goes back first: a pgd the cache refuses (a double free)
        // keeps its hands off the pmds its stale entries name, which may
        // belong to another pgd by now.
        pgds.free(obj).map_err(pgd_free_err)?;
        for e in e.into_iter().filter(|e| e.is_present()) {
            if let Ok(p) = self.ptr_of(e.table_addr(PagingMode::Pae)) {
                let _ = pmds.free(p);
            }
        }
        bump(frees, 1);
        Ok(())
    }

    /// Claims CPU `cpu`'s slots of `pgd_cache` and `pmd_cache` as a
    /// [`PaePgdCpu`]: only where the shape is `Pae`.
    pub(crate) fn claim_pae(&self, cpu: usize) -> Result<PaePgdCpu<'_, M>, KernelError> {
        let (Fast::Pae { window, kept }, Some(pgd_cache), Some(pmd_cache)) = (
            self.fast,
            self.pgd_cache.as_ref(),
            self.pmd_cache.as_deref(),
        ) else {
            return Err(KernelError::WrongShape {
                scheme: self.scheme,
                mode: self.sw.mode,
                wanted: "PAE pgd_cache and pmd_cache",
            });
        };
        let claim = |source| KernelError::CpuClaim { cpu, source };
        let pgds = pgd_cache.claim_cpu(cpu).map_err(claim)?;
        let pmds = pmd_cache.claim_cpu(cpu).map_err(claim)?;
        let counters = &self.sw.counters;
        Ok(PaePgdCpu {
            caches: self,
            cpu,
            pgds,
            pmds,
            window,
            kept,
            allocs: counters.pgd_allocs.slot(cpu),
            frees: counters.pgd_frees.slot(cpu),
        })
    }

    /// `pgd_free` of an [`OwnedPgd`] through the CPU's tokens: on a hit
    /// the pushes (PAE: the pgd, then its three pmds) and one counter bump.
    /// A pgd without handles takes the checked way ([`Self::free_cpu_raw`]).
    #[inline(always)]
    pub(super) fn free_cpu(
        &self,
        slots: &mut CpuSlots<'_, M>,
        pgd: OwnedPgd,
    ) -> Result<(), KernelError> {
        let OwnedPgd { pgd, obj, pmds } = pgd;
        match (obj, slots.pgd.as_mut(), slots.pmd.as_mut()) {
            (Some(obj), Some(pgds), Some(pmd_token)) => {
                Self::pae_free(pgds, pmd_token, slots.frees, obj, pmds)
            }
            (Some(obj), Some(pgds), None) if pmds.is_none() => {
                Self::whole_free(pgds, slots.frees, obj)
            }
            // Handles this kernel's shape cannot have made (PAE ones here,
            // any where pgds are pages): another kernel's pgd. Refused
            // before anything is touched (its address means nothing in this
            // kernel's RAM); it stays allocated in its own kernel.
            (Some(obj), _, _) => {
                let _ = obj.into_raw();
                if let Some(p) = pmds {
                    let _ = p.into_raw();
                }
                Err(pgd_free_err(objcache::FreeError::Foreign))
            }
            (None, _, _) => self.free_cpu_raw(slots, pgd),
        }
    }

    /// `pgd_free` of a raw [`Pgd`] through the CPU's tokens: looked up and
    /// checked (a foreign or double free is refused); on PAE three entry
    /// loads name the pmds.
    #[inline]
    pub(super) fn free_cpu_raw(
        &self,
        slots: &mut CpuSlots<'_, M>,
        pgd: Pgd,
    ) -> Result<(), KernelError> {
        match (self.fast, slots.pgd.as_mut(), slots.pmd.as_mut()) {
            (Fast::Whole(_), Some(pgds), _) => self.whole_free_raw(pgds, slots.frees, pgd),
            (Fast::Pae { kept, .. }, Some(pgds), Some(pmds)) => {
                self.pae_free_raw(kept, pgds, pmds, slots.frees, pgd)
            }
            _ => self.free_general(&mut Via::Cpu(slots), pgd),
        }
    }
}

/// One CPU of a pgd system whose pgds are whole pages of `pgd_cache` (the
/// `Whole` shape: 2-level, 4- and 5-level with a preconstructing scheme),
/// held by the thread acting as that CPU ([`Kernel::claim_whole_cpu`]).
///
/// A kernel is built for one paging mode, so its `pgd_alloc` is one shape
/// known when it is compiled: in Linux, `kmem_cache_alloc(pgd_cache)` and
/// nothing else. [`PgdCpu`] decides the shape per call, because this
/// library runs every mode in one binary; this handle is that shape fixed
/// in the type. It owns only its CPU's slot of `pgd_cache`, so no path it
/// runs hands its token to another function, and a hit is the pop, `__pa`
/// and the bump (a free: the push and the bump): the same code as
/// `PgdCpu`'s path for this shape, without the dispatch around it.
///
/// Remote operations on `pgd_cache` (`shrink`, `slab_stats`, the checker's
/// walk) are served at its next operation or at [`WholePgdCpu::serve`], as
/// for a `PgdCpu`.
///
/// [`Kernel::claim_whole_cpu`]: crate::Kernel::claim_whole_cpu
/// [`PgdCpu`]: crate::PgdCpu
pub struct WholePgdCpu<'k, M: KernelMem = crate::DefaultMem> {
    caches: &'k PgdCaches<M>,
    cpu: usize,
    pgds: Token<'k, M>,
    /// The direct map's window: `__pa` is a subtraction and a bound.
    window: LinearMap,
    /// This CPU's slots of `pgd_allocs`/`pgd_frees`.
    allocs: &'k AtomicU64,
    frees: &'k AtomicU64,
}

impl<M: KernelMem> WholePgdCpu<'_, M> {
    /// The CPU.
    pub fn cpu(&self) -> usize {
        self.cpu
    }

    /// `pgd_alloc` on this CPU: the pgd as its owner holds it, with the
    /// handle its `pgd_free` pushes back.
    #[inline(always)]
    pub fn pgd_alloc(&mut self) -> Result<OwnedPgd, KernelError> {
        PgdCaches::whole_alloc(self.window, &mut self.pgds, self.allocs)
    }

    /// `pgd_free` on this CPU (after `clear_page_tables`). A pgd of another
    /// kernel is refused before anything is touched, and stays allocated
    /// in its own kernel.
    #[inline(always)]
    pub fn pgd_free(&mut self, pgd: OwnedPgd) -> Result<(), KernelError> {
        match pgd {
            OwnedPgd {
                obj: Some(obj),
                pmds: None,
                ..
            } => PgdCaches::whole_free(&mut self.pgds, self.frees, obj),
            OwnedPgd { obj: None, pgd, .. } => {
                self.caches.whole_free_raw(&mut self.pgds, self.frees, pgd)
            }
            // PAE handles: another kernel's pgd (this one has no
            // `pmd_cache`). Left allocated where it belongs.
            OwnedPgd {
                obj: Some(obj),
                pmds: Some(pmds),
                ..
            } => {
                let _ = obj.into_raw();
                let _ = pmds.into_raw();
                Err(pgd_free_err(objcache::FreeError::Foreign))
            }
        }
    }

    /// `pgd_free(pgd_t *)` of a raw address on this CPU: looked up and
    /// checked, a foreign or double free refused with an error.
    #[inline]
    pub fn pgd_free_raw(&mut self, pgd: Pgd) -> Result<(), KernelError> {
        self.caches.whole_free_raw(&mut self.pgds, self.frees, pgd)
    }

    /// A quiescent point: serves any remote operation waiting for this CPU.
    pub fn serve(&mut self) {
        self.pgds.serve()
    }
}

impl<M: KernelMem> core::fmt::Debug for WholePgdCpu<'_, M> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("WholePgdCpu")
            .field("cpu", &self.cpu)
            .finish()
    }
}

/// One CPU of a PAE pgd system with `pmd_cache` (the seed's protocol, or
/// `slab-prepopulated`), held by the thread acting as that CPU
/// ([`Kernel::claim_pae_cpu`]): [`WholePgdCpu`]'s counterpart for PAE. It
/// owns its CPU's slots of `pgd_cache` and `pmd_cache` and nothing else,
/// and runs the same `pae_*` functions as `PgdCpu`'s path for this shape:
/// a seed's-protocol hit is the pgd pop, three pmd pops, `__pa` of each,
/// the three `set_pgd` stores in one checked run, and the bump.
///
/// [`Kernel::claim_pae_cpu`]: crate::Kernel::claim_pae_cpu
pub struct PaePgdCpu<'k, M: KernelMem = crate::DefaultMem> {
    caches: &'k PgdCaches<M>,
    cpu: usize,
    pgds: Token<'k, M>,
    pmds: Token<'k, M>,
    /// The direct map's window: `__pa` is a subtraction and a bound.
    window: LinearMap,
    /// `slab-prepopulated`: the pgd keeps its pmds.
    kept: bool,
    /// This CPU's slots of `pgd_allocs`/`pgd_frees`.
    allocs: &'k AtomicU64,
    frees: &'k AtomicU64,
}

impl<M: KernelMem> PaePgdCpu<'_, M> {
    /// The CPU.
    pub fn cpu(&self) -> usize {
        self.cpu
    }

    /// `pgd_alloc` on this CPU: the pgd as its owner holds it, with the
    /// handles (the seed's protocol: of its pmds too) its `pgd_free`
    /// pushes back.
    #[inline(always)]
    pub fn pgd_alloc(&mut self) -> Result<OwnedPgd, KernelError> {
        self.caches.pae_alloc(
            self.window,
            self.kept,
            &mut self.pgds,
            &mut self.pmds,
            self.allocs,
        )
    }

    /// `pgd_free` on this CPU (after `clear_page_tables`). A pgd of another
    /// kernel is refused before anything is touched, and stays allocated
    /// in its own kernel.
    #[inline(always)]
    pub fn pgd_free(&mut self, pgd: OwnedPgd) -> Result<(), KernelError> {
        let OwnedPgd { pgd, obj, pmds } = pgd;
        match obj {
            Some(obj) => PgdCaches::pae_free(&mut self.pgds, &mut self.pmds, self.frees, obj, pmds),
            None => self.pgd_free_raw(pgd),
        }
    }

    /// `pgd_free(pgd_t *)` of a raw address on this CPU: looked up and
    /// checked, a foreign or double free refused with an error.
    #[inline]
    pub fn pgd_free_raw(&mut self, pgd: Pgd) -> Result<(), KernelError> {
        self.caches
            .pae_free_raw(self.kept, &mut self.pgds, &mut self.pmds, self.frees, pgd)
    }

    /// A quiescent point: serves any remote operation waiting for this CPU.
    pub fn serve(&mut self) {
        self.pgds.serve();
        self.pmds.serve();
    }
}

impl<M: KernelMem> core::fmt::Debug for PaePgdCpu<'_, M> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("PaePgdCpu")
            .field("cpu", &self.cpu)
            .field("kept", &self.kept)
            .finish()
    }
}

/// A CPU of the pgd system, however it was claimed ([`PgdCpu`],
/// [`WholePgdCpu`], [`PaePgdCpu`]): its `pgd_alloc` and `pgd_free`, for
/// code written once for every shape (a benchmark loop, a test sweep). The
/// types' own methods are the same calls.
///
/// [`PgdCpu`]: crate::PgdCpu
pub trait CpuPgds {
    /// `pgd_alloc` on this CPU.
    fn pgd_alloc(&mut self) -> Result<OwnedPgd, KernelError>;
    /// `pgd_free` of an [`OwnedPgd`] on this CPU.
    fn pgd_free(&mut self, pgd: OwnedPgd) -> Result<(), KernelError>;
    /// `pgd_free(pgd_t *)` of a raw address on this CPU, checked.
    fn pgd_free_raw(&mut self, pgd: Pgd) -> Result<(), KernelError>;
}

macro_rules! cpu_pgds {
    ($($t:ident),*) => {$(
        impl<M: KernelMem> CpuPgds for $t<'_, M> {
            #[inline(always)]
            fn pgd_alloc(&mut self) -> Result<OwnedPgd, KernelError> {
                $t::pgd_alloc(self)
            }
            #[inline(always)]
            fn pgd_free(&mut self, pgd: OwnedPgd) -> Result<(), KernelError> {
                $t::pgd_free(self, pgd)
            }
            #[inline(always)]
            fn pgd_free_raw(&mut self, pgd: Pgd) -> Result<(), KernelError> {
                $t::pgd_free_raw(self, pgd)
            }
        }
    )*};
}
use crate::kernel::PgdCpu;
cpu_pgds!(PgdCpu, WholePgdCpu, PaePgdCpu);
