//! The per-CPU fast path of `pgd_alloc`/`pgd_free`: a thread acting as a
//! CPU (`PgdCpu`) goes straight to its tokens of `pgd_cache`/`pmd_cache`,
//! in one shape per kernel ([`Fast`]) decided when the caches are built.
//! A hit is the object cache's pops and pushes and what a kernel does
//! around them (`__pa`/`__va`, PAE's three `set_pgd` stores or loads, one
//! counter bump); everything else goes to the general path in `pgd.rs`.

use super::{pgd_free_err, pgd_oom, CpuSlots, Pgd, PgdCaches, Token, Via, USER_PTRS_PAE};
use crate::error::KernelError;
use crate::stats::bump;
use crate::swapper::KernelMem;
use core::ptr::NonNull;
use physmem::PhysAddr;
use x86paging::{Entry, PagingMode};

/// The shape of `pgd_alloc`/`pgd_free` on a CPU's token path, decided once
/// per kernel so that the hit path is straight-line code: the object
/// cache's pops and pushes and what a kernel does around them, nothing else.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Fast {
    /// A preconstructed page-sized pgd (2-level, 4/5-level): one pop, one
    /// push; `__pa`/`__va` around them.
    Whole,
    /// PAE with `pmd_cache`, the seed's protocol: one pgd pop and three pmd
    /// pops, three `set_pgd` stores; at free three entry loads, four pushes.
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
    #[inline]
    pub(super) fn alloc_cpu(&self, slots: &mut CpuSlots<'_, M>) -> Result<Pgd, KernelError> {
        if let (Fast::Whole, Some(pgds)) = (self.fast, slots.pgd.as_mut()) {
            let pgd = self.pa_of(pgds.alloc().map_err(pgd_oom)?)?;
            bump(slots.allocs, 1);
            return Ok(Pgd(pgd));
        }
        self.alloc_cpu_pae(slots)
    }

    /// [`Self::alloc_cpu`] for PAE pgds (and, for any other shape, the
    /// way to the general path).
    #[inline]
    fn alloc_cpu_pae(&self, slots: &mut CpuSlots<'_, M>) -> Result<Pgd, KernelError> {
        let (Some(pgds), fast) = (slots.pgd.as_mut(), self.fast) else {
            return self.alloc_general(&mut Via::Cpu(slots));
        };
        let pgd = match fast {
            Fast::General | Fast::Whole => return self.alloc_general(&mut Via::Cpu(slots)),
            Fast::PaeKept => {
                let obj = pgds.alloc().map_err(pgd_oom)?;
                let pgd = self.pa_of(obj)?;
                // A used object still has its (empty) pmds; only a fresh
                // one needs them (`pgd_ctor` cannot fail, so cannot
                // allocate them).
                if !self.sw.pae_entry(pgd, 0)?.is_present() {
                    if let Err(e) = self.pae_attach_pmds(&mut Via::Cpu(slots), pgd) {
                        Self::give_back(slots.pgd.as_mut(), obj);
                        return Err(e);
                    }
                }
                pgd
            }
            Fast::PaePmds => {
                let obj = pgds.alloc().map_err(pgd_oom)?;
                match self.pae_pmds_cpu(slots, obj) {
                    Ok(pgd) => pgd,
                    Err(e) => {
                        // Nothing is lost: the object goes back as it came.
                        Self::give_back(slots.pgd.as_mut(), obj);
                        return Err(e);
                    }
                }
            }
        };
        bump(slots.allocs, 1);
        Ok(Pgd(pgd))
    }

    /// Returns an object taken a moment ago through `token` (an undo: it
    /// cannot be refused, it was just handed out).
    #[cold]
    fn give_back(token: Option<&mut Token<'_, M>>, obj: NonNull<u8>) {
        if let Some(t) = token {
            let _ = t.free(obj);
        }
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
        obj: NonNull<u8>,
    ) -> Result<PhysAddr, KernelError> {
        let pgd = self.pa_of(obj)?;
        let Some(pmds) = slots.pmd.as_mut() else {
            return self.pae_setup(&mut Via::Cpu(slots), obj);
        };
        let mut got = [NonNull::dangling(); USER_PTRS_PAE];
        for i in 0..USER_PTRS_PAE {
            match pmds.alloc() {
                Ok(p) => got[i] = p,
                Err(source) => {
                    Self::pmds_undo(pmds, &got[..i]);
                    return Err(KernelError::CacheAlloc {
                        cache: "pmd_cache",
                        source,
                    });
                }
            }
        }
        let mut pas = [PhysAddr::new(0); USER_PTRS_PAE];
        for (pa, &p) in pas.iter_mut().zip(&got) {
            match self.pa_of(p) {
                Ok(x) => *pa = x,
                Err(e) => {
                    Self::pmds_undo(pmds, &got);
                    return Err(e);
                }
            }
        }
        for (i, pa) in pas.iter().enumerate() {
            let set = Entry::from_raw(pa.as_u64() | 1);
            if let Err(e) = self.sw.set_pae_entry(pgd, i, set) {
                // All or none: undo the entries written, give every pmd back.
                for j in 0..i {
                    let _ = self.sw.set_pae_entry(pgd, j, Entry::EMPTY);
                }
                Self::pmds_undo(pmds, &got);
                return Err(e.into());
            }
        }
        Ok(pgd)
    }

    /// Gives back pmds taken a moment ago (they are still zero).
    #[cold]
    fn pmds_undo(pmds: &mut Token<'_, M>, got: &[NonNull<u8>]) {
        for &p in got {
            let _ = pmds.free(p);
        }
    }

    /// `pgd_free` through the CPU's tokens: on a hit, (PAE) three entry
    /// loads and three pmd pushes, the pgd push, one counter bump.
    #[inline]
    pub(super) fn free_cpu(
        &self,
        slots: &mut CpuSlots<'_, M>,
        pgd: Pgd,
    ) -> Result<(), KernelError> {
        if let (Fast::Whole, Some(pgds)) = (self.fast, slots.pgd.as_mut()) {
            if pgd.0 != self.sw.pgd {
                let obj = self.ptr_of(pgd.0)?;
                pgds.free(obj).map_err(pgd_free_err)?;
                bump(slots.frees, 1);
                return Ok(());
            }
        }
        self.free_cpu_pae(slots, pgd)
    }

    /// [`Self::free_cpu`] for PAE pgds (and the way to the general path).
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
