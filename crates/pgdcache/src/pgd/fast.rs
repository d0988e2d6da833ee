//! The per-CPU fast path of `pgd_alloc`/`pgd_free`: a thread acting as a
//! CPU (`PgdCpu`) goes straight to its tokens of `pgd_cache`/`pmd_cache`,
//! in one shape per kernel ([`Fast`]) decided when the caches are built.
//! A hit is the object cache's pops and pushes and what a kernel does
//! around them (`__pa`, PAE's three `set_pgd` stores, one counter bump);
//! everything else goes to the general path in `pgd.rs`.
//!
//! The pgd comes out as an [`OwnedPgd`] holding the object cache's `Obj`
//! handles, so `pgd_free` of it is the pushes alone, as Linux's
//! `kmem_cache_free` is outside `CONFIG_DEBUG_SLAB`. A raw [`Pgd`]'s free
//! (`free_cpu_raw`) is looked up and checked instead: `__va`, the cache's
//! page map, the owned flag; on PAE the three entry loads name the pmds.

use super::{pgd_free_err, pgd_oom, CpuSlots, OwnedPgd, Pgd, PgdCaches, Token, Via, USER_PTRS_PAE};
use crate::error::KernelError;
use crate::stats::bump;
use crate::swapper::KernelMem;
use objcache::{AllocError, Obj, ObjFreeError};
use physmem::{LinearMap, PhysAddr};
use x86paging::{Entry, PagingMode};

/// The shape of `pgd_alloc`/`pgd_free` on a CPU's token path, decided once
/// per kernel so that the hit path is straight-line code: the object
/// cache's pops and pushes and what a kernel does around them, nothing else.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Fast {
    /// A preconstructed page-sized pgd (2-level, 4/5-level): one pop, one
    /// push; `__pa`/`__va` around them, `__pa` through the direct map's
    /// window kept here (the shape exists only where memory is one).
    Whole(LinearMap),
    /// PAE with `pmd_cache`, the seed's protocol: one pgd pop and three pmd
    /// pops, three `set_pgd` stores; at free four pushes (the `OwnedPgd`
    /// names the pmds; a raw pgd's free loads them from its entries).
    PaePmds,
    /// PAE `slab-prepopulated`: one pop (a cached pgd keeps its empty
    /// pmds), one entry load to tell a fresh object from a used one.
    PaeKept,
    /// No object cache for pgds, or ctor-less PAE pgds (`uncached`,
    /// `shared-kernel`): the general path.
    General,
}

impl<M: KernelMem> PgdCaches<M> {
    /// `pgd_alloc` through the CPU's tokens: on a hit, the cache pops and
    /// (PAE) the `set_pgd` stores, one counter bump, nothing else.
    #[inline(always)]
    pub(super) fn alloc_cpu(&self, slots: &mut CpuSlots<'_, M>) -> Result<OwnedPgd, KernelError> {
        if let (Fast::Whole(window), Some(pgds)) = (self.fast, slots.pgd.as_mut()) {
            let obj = pgds.alloc_obj().map_err(pgd_oom)?;
            let Some(pgd) = window.pa_of(obj.as_ptr()) else {
                Self::give_back(slots.pgd.as_mut(), obj);
                return Err(KernelError::BadPgd(PhysAddr::new(0), "object outside RAM"));
            };
            bump(slots.allocs, 1);
            return Ok(OwnedPgd {
                pgd: Pgd(pgd),
                obj: Some(obj),
                pmds: None,
            });
        }
        self.alloc_cpu_pae(slots)
    }

    /// [`Self::alloc_cpu`] for PAE pgds (and, for any other shape, the
    /// way to the general path).
    #[inline]
    fn alloc_cpu_pae(&self, slots: &mut CpuSlots<'_, M>) -> Result<OwnedPgd, KernelError> {
        let (Some(pgds), fast) = (slots.pgd.as_mut(), self.fast) else {
            return self.alloc_general(&mut Via::Cpu(slots)).map(OwnedPgd::raw);
        };
        // The seed's protocol first: the hot shape gets the straight line.
        let (pgd, obj, pmds) = if fast == Fast::PaePmds {
            let obj = pgds.alloc_obj().map_err(pgd_oom)?;
            match self.pae_pmds_cpu(slots, &obj) {
                Ok((pgd, pmds)) => (pgd, obj, Some(pmds)),
                Err(e) => {
                    // Nothing is lost: the object goes back as it came.
                    Self::give_back(slots.pgd.as_mut(), obj);
                    return Err(e);
                }
            }
        } else if fast == Fast::PaeKept {
            let obj = pgds.alloc_obj().map_err(pgd_oom)?;
            match self.pae_kept_cpu(slots, &obj) {
                Ok(pgd) => (pgd, obj, None),
                Err(e) => {
                    Self::give_back(slots.pgd.as_mut(), obj);
                    return Err(e);
                }
            }
        } else {
            // `General` (and `Whole`, which `alloc_cpu` took already).
            return self.alloc_general(&mut Via::Cpu(slots)).map(OwnedPgd::raw);
        };
        bump(slots.allocs, 1);
        Ok(OwnedPgd {
            pgd: Pgd(pgd),
            obj: Some(obj),
            pmds,
        })
    }

    /// Returns an object taken a moment ago through `token` (an undo: it
    /// cannot be refused, it was just handed out by this cache).
    #[cold]
    fn give_back(token: Option<&mut Token<'_, M>>, obj: Obj) {
        match token {
            Some(t) => {
                let _ = t.free_obj(obj);
            }
            None => {
                let _ = obj.into_raw();
            }
        }
    }

    /// `slab-prepopulated` on a token: a used object still has its (empty)
    /// pmds; only a fresh one needs them (`pgd_ctor` cannot fail, so cannot
    /// allocate them).
    #[inline]
    fn pae_kept_cpu(
        &self,
        slots: &mut CpuSlots<'_, M>,
        obj: &Obj,
    ) -> Result<PhysAddr, KernelError> {
        let pgd = self.pa_of(obj.as_ptr())?;
        if !self.sw.pae_entry(pgd, 0)?.is_present() {
            self.pae_attach_pmds(&mut Via::Cpu(slots), pgd)?;
        }
        Ok(pgd)
    }

    /// The seed's PAE `pgd_alloc` on a token: three pmds from `pmd_cache`,
    /// installed with only the present bit (`set_pgd(&pgd[i], __pgd(1 +
    /// __pa(pmd)))`); on failure every pmd taken so far goes back
    /// (`out_oom`) and the entries are left as they were (the caller
    /// returns the pgd object).
    #[inline]
    fn pae_pmds_cpu(
        &self,
        slots: &mut CpuSlots<'_, M>,
        obj: &Obj,
    ) -> Result<(PhysAddr, [Obj; USER_PTRS_PAE]), KernelError> {
        let pgd = self.pa_of(obj.as_ptr())?;
        let Some(pmds) = slots.pmd.as_mut() else {
            return Err(KernelError::BadPgd(pgd, "PAE fast path without pmd_cache"));
        };
        let got = Self::pmd_objs(pmds).map_err(|source| KernelError::CacheAlloc {
            cache: "pmd_cache",
            source,
        })?;
        // `set_pgd(&pgd[i], __pgd(1 + __pa(pmd)))`: the present bit only.
        let mut set = [0u64; USER_PTRS_PAE];
        for (e, p) in set.iter_mut().zip(&got) {
            match self.pa_of(p.as_ptr()) {
                Ok(pa) => *e = Entry::from_raw(pa.as_u64() | 1).raw(),
                Err(e) => {
                    Self::objs_undo(pmds, got);
                    return Err(e);
                }
            }
        }
        // All or none: a refused run wrote nothing.
        if let Err(e) = self.sw.set_pae_entries(pgd, &set) {
            Self::objs_undo(pmds, got);
            return Err(e.into());
        }
        Ok((pgd, got))
    }

    /// Three pmds off the token, all or none.
    #[inline(always)]
    fn pmd_objs(pmds: &mut Token<'_, M>) -> Result<[Obj; USER_PTRS_PAE], AllocError> {
        let a = pmds.alloc_obj()?;
        let b = match pmds.alloc_obj() {
            Ok(b) => b,
            Err(e) => {
                Self::objs_undo(pmds, [a]);
                return Err(e);
            }
        };
        match pmds.alloc_obj() {
            Ok(c) => Ok([a, b, c]),
            Err(e) => {
                Self::objs_undo(pmds, [a, b]);
                Err(e)
            }
        }
    }

    /// Gives back pmds taken a moment ago (they are still zero).
    #[cold]
    fn objs_undo<const N: usize>(pmds: &mut Token<'_, M>, got: [Obj; N]) {
        for p in got {
            let _ = pmds.free_obj(p);
        }
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
        let (Some(obj), Some(pgds)) = (obj, slots.pgd.as_mut()) else {
            return self.free_cpu_raw(slots, pgd);
        };
        // The pgd goes back first: a refused one (another kernel's, or a
        // failed debug check) keeps its pmds, still allocated, with it.
        if let Err(ObjFreeError { obj, why }) = pgds.free_obj(obj) {
            let _ = obj.into_raw();
            if let Some(pmds) = pmds {
                for p in pmds {
                    let _ = p.into_raw();
                }
            }
            return Err(pgd_free_err(why));
        }
        if let Some(pmds) = pmds {
            self.pmds_free_objs(slots, pmds);
        }
        bump(slots.frees, 1);
        Ok(())
    }

    /// The pmds of a freed PAE `OwnedPgd` back to `pmd_cache` (the pgd is
    /// already back). A refused pmd (a failed debug check, which the cache
    /// counts and `verify` reports) stays allocated.
    #[inline(always)]
    fn pmds_free_objs(&self, slots: &mut CpuSlots<'_, M>, pmds: [Obj; USER_PTRS_PAE]) {
        if let Some(t) = slots.pmd.as_mut() {
            for p in pmds {
                if let Err(ObjFreeError { obj, .. }) = t.free_obj(p) {
                    let _ = obj.into_raw();
                }
            }
            return;
        }
        // Not reached (the handles came off this CPU's pmd token), but
        // nothing is lost if it were: the pointer path takes them back.
        let (mut pas, mut n) = ([PhysAddr::new(0); USER_PTRS_PAE], 0);
        for p in pmds {
            if let Ok(pa) = self.pa_of(p.into_raw()) {
                pas[n] = pa;
                n += 1;
            }
        }
        self.pmds_put(&mut Via::Cpu(slots), &pas[..n]);
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
        if let (Fast::Whole(_), Some(pgds)) = (self.fast, slots.pgd.as_mut()) {
            if pgd.0 != self.sw.pgd {
                let obj = self.ptr_of(pgd.0)?;
                pgds.free(obj).map_err(pgd_free_err)?;
                bump(slots.frees, 1);
                return Ok(());
            }
        }
        self.free_cpu_pae(slots, pgd)
    }

    /// [`Self::free_cpu_raw`] for PAE pgds (and the way to the general path).
    #[inline]
    fn free_cpu_pae(&self, slots: &mut CpuSlots<'_, M>, pgd: Pgd) -> Result<(), KernelError> {
        let fast = self.fast;
        if fast == Fast::General || slots.pgd.is_none() || pgd.0 == self.sw.pgd {
            return self.free_general(&mut Via::Cpu(slots), pgd);
        }
        let obj = self.ptr_of(pgd.0)?;
        if fast == Fast::PaePmds && slots.pmd.is_none() {
            return self.free_general(&mut Via::Cpu(slots), pgd);
        }
        // Read the three entries first. "In the PAE case user pgd entries
        // are overwritten before usage": the stale pointers stay in the
        // cached object.
        let mut e = [Entry::EMPTY; USER_PTRS_PAE];
        if fast == Fast::PaePmds {
            for (i, e) in e.iter_mut().enumerate() {
                *e = self.sw.pae_entry(pgd.0, i)?;
            }
        }
        // The pgd goes back first: a pgd the cache refuses (a double free)
        // keeps its hands off the pmds its stale entries name, which may
        // belong to another pgd by now.
        if let Some(t) = slots.pgd.as_mut() {
            t.free(obj).map_err(pgd_free_err)?;
        }
        if let Some(pmds) = slots.pmd.as_mut().filter(|_| fast == Fast::PaePmds) {
            for e in e {
                if e.is_present() {
                    if let Ok(p) = self.ptr_of(e.table_addr(PagingMode::Pae)) {
                        let _ = pmds.free(p);
                    }
                }
            }
        }
        bump(slots.frees, 1);
        Ok(())
    }
}
