//! `change_page_attr` and `global_flush_tlb`, as in 2.5/2.6 i386 `pageattr.c`.
//!
//! Changing the caching or protection of one 4 KiB page of the kernel's
//! direct map may need the large page that maps it split into a pte page
//! (`split_large_page`: the target pte gets the new protection, the other
//! ptes the large page's). The pte page's `page_count` counts its
//! non-default ptes on top of a base of one; when the last one returns to
//! `PAGE_KERNEL` the large page is restored (`revert_page`) and the pte page
//! is queued on the deferred list, to be freed by `global_flush_tlb` only
//! after every CPU has flushed its TLB.
//!
//! Both conversions go through `set_pmd_pte`, which writes `swapper_pg_dir`
//! and then, on 2-level, asks the scheme's `Tracker` to write every other
//! pgd that must see the change — the heart of the seed patch. This module
//! never knows which pgds those are. On PAE and 4/5-level the entry lives in
//! a shared kernel pmd and the function stops after swapper
//! (`if (PTRS_PER_PMD > 1) return;`).
//!
//! Unlike 2.6.0, a request is all-or-nothing: it is validated first, and the
//! pte pages every split will need are allocated before anything changes, so
//! an invalid request or an allocation failure leaves the tables untouched.

use crate::error::KernelError;
use crate::prelude::*;
use crate::swapper::{KernelMem, Swapper};
use crate::tlb::TlbFlush;
use crate::tracker::Tracker;
use alloc::collections::BTreeMap;
use alloc::sync::Arc;
use core::sync::atomic::Ordering;
use physmem::{Frame, Owner, PhysAddr, PhysMemory, VirtAddr, PAGE_SIZE};
use x86paging::boot::KernelSpace;
use x86paging::{Cursor, Entry, EntryFlags, Level, PageSize, PagingMode, Slot};

/// Why `change_page_attr` refused a request (nothing was changed).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CpaError {
    /// `numpages` was zero.
    #[error("change_page_attr of zero pages")]
    Empty,
    /// The start address is not page aligned.
    #[error("address {0} is not page aligned")]
    Misaligned(VirtAddr),
    /// The range wraps around the address space.
    #[error("range of {pages} pages at {start} overflows the address space")]
    Overflow {
        /// Start.
        start: VirtAddr,
        /// Pages.
        pages: u64,
    },
    /// Part of the range is outside the kernel's direct map.
    #[error("range {start}..{end} is outside the direct map {map_start}..{map_end}")]
    OutsideDirectMap {
        /// Start of the request.
        start: VirtAddr,
        /// End of the request.
        end: VirtAddr,
        /// Start of the direct map.
        map_start: VirtAddr,
        /// End of the direct map.
        map_end: VirtAddr,
    },
    /// The protection cannot be applied to kernel direct-map pages.
    #[error("protection {flags:?} is not supported: {why}")]
    BadProt {
        /// The flags asked for.
        flags: EntryFlags,
        /// Why not.
        why: &'static str,
    },
    /// A pte page for a split could not be allocated.
    #[error("out of memory for split_large_page")]
    OutOfMemory(#[source] physmem::AllocError),
    /// A split needed a pte page the plan did not allocate (a bug: the plan
    /// and the change run under the same `cpa_lock`).
    #[error("split of {0} was not planned")]
    Unplanned(VirtAddr),
    /// The direct map is not where it should be (a bug).
    #[error("direct-map address {0} is not mapped")]
    NotMapped(VirtAddr),
    /// A page-table access failed (a bug).
    #[error(transparent)]
    Kernel(#[from] KernelError),
}

/// A split pte page: where its large page was.
#[derive(Clone, Copy, Debug)]
struct Split {
    /// Virtual start of the large page.
    base: VirtAddr,
    /// The entry in swapper (pgd on 2-level, kernel pmd otherwise) that
    /// held the large page and now points at the pte page.
    parent: Slot,
}

pub(crate) struct CpaState {
    /// pte pages currently installed by splits, by frame.
    split: BTreeMap<Frame, Split>,
    /// `df_list`: pte pages replaced by `revert_page`, freed after the flush.
    deferred: Vec<Frame>,
}

/// `change_page_attr`'s state: `cpa_lock` and the direct map it works on.
pub(crate) struct Cpa<M: KernelMem> {
    sw: Arc<Swapper<M>>,
    ks: Arc<KernelSpace>,
    tracker: Arc<dyn Tracker<M>>,
    tlb: Arc<TlbFlush>,
    /// `cpa_lock`: serialises `change_page_attr` and protects the split
    /// set and the deferred list. Taken before `pgd_lock`/`mmlist_lock`
    /// (through the tracker) and before the page allocator's locks.
    state: crate::sync::Mutex<CpaState>,
    large: PageSize,
    map_start: VirtAddr,
    map_end: VirtAddr,
}

impl<M: KernelMem> Cpa<M> {
    pub(crate) fn new(
        sw: &Arc<Swapper<M>>,
        ks: &Arc<KernelSpace>,
        tracker: &Arc<dyn Tracker<M>>,
        tlb: &Arc<TlbFlush>,
    ) -> Self {
        let large = if sw.mode == PagingMode::TwoLevel {
            PageSize::Size4M
        } else {
            PageSize::Size2M
        };
        Cpa {
            sw: sw.clone(),
            ks: ks.clone(),
            tracker: tracker.clone(),
            tlb: tlb.clone(),
            state: crate::sync::Mutex::new(
                &crate::sync::classes::CPA_LOCK,
                CpaState {
                    split: BTreeMap::new(),
                    deferred: Vec::new(),
                },
            ),
            large,
            map_start: VirtAddr::new(sw.mode.page_offset()),
            map_end: VirtAddr::new(ks.layout.direct_map_end),
        }
    }

    fn mode(&self) -> PagingMode {
        self.sw.mode
    }

    /// The default protection of the direct-map page at `va`.
    fn page_kernel_at(&self, va: VirtAddr) -> Option<EntryFlags> {
        self.ks.reference(va).map(|(_, f)| f)
    }

    /// pte pages queued for freeing by `global_flush_tlb`.
    pub(crate) fn deferred_frames(&self) -> Vec<Frame> {
        self.state.lock().deferred.clone()
    }

    /// pte pages currently installed by splits.
    pub(crate) fn split_frames(&self) -> Vec<Frame> {
        self.state.lock().split.keys().copied().collect()
    }

    /// The direct-map address of physical address `pa` (`__va`), if mapped.
    pub(crate) fn direct_map_va(&self, pa: PhysAddr) -> Option<VirtAddr> {
        let va = self.map_start.checked_add(pa.as_u64())?;
        (va < self.map_end).then_some(va)
    }

    fn check_prot(&self, prot: EntryFlags) -> Result<(), CpaError> {
        let bad = |why| Err(CpaError::BadProt { flags: prot, why });
        if !prot.contains(EntryFlags::PRESENT) {
            return bad("kernel direct-map pages must stay present");
        }
        if prot.contains(EntryFlags::USER) {
            return bad("kernel direct-map pages cannot be user-accessible");
        }
        if prot.contains(EntryFlags::PAT) {
            return bad("PAT-indexed protections are not supported");
        }
        if self.mode() == PagingMode::TwoLevel && prot.contains(EntryFlags::NX) {
            return bad("2-level paging has no NX bit");
        }
        if prot.contains(EntryFlags::NX) && !self.ks.cpu.nxe {
            return bad("NX is not enabled (EFER.NXE clear)");
        }
        Ok(())
    }

    /// `change_page_attr(page, numpages, prot)` on the direct-map pages
    /// starting at `start`. All-or-nothing.
    pub(crate) fn change_page_attr(
        &self,
        start: VirtAddr,
        numpages: u64,
        prot: EntryFlags,
    ) -> Result<(), CpaError> {
        if numpages == 0 {
            return Err(CpaError::Empty);
        }
        if !start.is_aligned(PAGE_SIZE) {
            return Err(CpaError::Misaligned(start));
        }
        let end = numpages
            .checked_mul(PAGE_SIZE)
            .and_then(|len| start.checked_add(len))
            .ok_or(CpaError::Overflow {
                start,
                pages: numpages,
            })?;
        if start < self.map_start || end > self.map_end {
            return Err(CpaError::OutsideDirectMap {
                start,
                end,
                map_start: self.map_start,
                map_end: self.map_end,
            });
        }
        self.check_prot(prot)?;
        let prot = prot | EntryFlags::ACCESSED | EntryFlags::DIRTY;
        let mut st = self.state.lock();
        // Plan: which large pages must be split? Allocate their pte pages now.
        let mut pool = Vec::new();
        {
            let mut va = start;
            let mut last_large: Option<u64> = None;
            while va < end {
                let level = self.kernel_lookup(va)?.level;
                if level != Level::Pte && Some(prot) != self.page_kernel_at(va) {
                    let base = va.as_u64() & !self.large.mask();
                    if last_large != Some(base) {
                        last_large = Some(base);
                        match self.sw.pm.alloc_frame(Owner::KernelTable) {
                            Ok(f) => pool.push(f),
                            Err(e) => {
                                for f in pool {
                                    let _ = self.sw.pm.free_frame(f);
                                }
                                return Err(CpaError::OutOfMemory(e));
                            }
                        }
                    }
                }
                va = VirtAddr::new(va.as_u64() + PAGE_SIZE);
            }
        }
        let mut va = start;
        let mut result = Ok(());
        while va < end && result.is_ok() {
            result = self.change_one(&mut st, va, prot, &mut pool);
            va = VirtAddr::new(va.as_u64() + PAGE_SIZE);
        }
        // Nothing should be left, but never leak.
        for f in pool {
            let _ = self.sw.pm.free_frame(f);
        }
        result
    }

    /// A cursor on `swapper_pg_dir`.
    fn swapper(&self) -> Cursor<'_, PhysMemory<M>> {
        Cursor::new(&self.sw.pm, self.sw.mode, self.sw.pgd)
    }

    /// `lookup_address` in swapper: the present entry that maps `va`.
    fn kernel_lookup(&self, va: VirtAddr) -> Result<Slot, CpaError> {
        match self.swapper().lookup(va) {
            Ok(slot) if slot.is_present() => Ok(slot),
            _ => Err(CpaError::NotMapped(va)),
        }
    }

    /// Writes a kernel entry of swapper. The TLB flush is deferred to
    /// `global_flush_tlb`, the caller's obligation after `change_page_attr`
    /// (as in Linux), which flushes every CPU once for the whole request.
    fn write_deferred(&self, slot: &Slot, e: Entry) -> Result<(), CpaError> {
        self.swapper()
            .write(slot, e)
            .map_err(KernelError::from)?
            .ignore();
        Ok(())
    }

    /// `__change_page_attr` for one page.
    fn change_one(
        &self,
        st: &mut CpaState,
        va: VirtAddr,
        prot: EntryFlags,
        pool: &mut Vec<Frame>,
    ) -> Result<(), CpaError> {
        let mode = self.mode();
        let pm = &*self.sw.pm;
        let def = self.page_kernel_at(va).ok_or(CpaError::NotMapped(va))?;
        let pa = PhysAddr::new(va.as_u64() - self.map_start.as_u64());
        let slot = self.kernel_lookup(va)?;
        let standard =
            Entry::page(mode, PageSize::Size4K, pa, def).map_err(|_| CpaError::NotMapped(va))?;
        let wanted =
            Entry::page(mode, PageSize::Size4K, pa, prot).map_err(|_| CpaError::BadProt {
                flags: prot,
                why: "cannot be encoded",
            })?;
        let kpte_frame = slot.pa.frame();
        if prot != def {
            if slot.level == Level::Pte {
                self.write_deferred(&slot, wanted)?;
                if slot.entry == standard && st.split.contains_key(&kpte_frame) {
                    if let Some(p) = pm.page(kpte_frame) {
                        p.get();
                    }
                }
            } else {
                let split = pool.pop().ok_or(CpaError::Unplanned(va))?;
                let table = self.split_large_page(split, va, &slot, prot)?;
                st.split.insert(
                    split,
                    Split {
                        base: VirtAddr::new(va.as_u64() & !self.large.mask()),
                        parent: slot,
                    },
                );
                self.set_pmd_pte(&slot, table)?;
                return Ok(());
            }
        } else if slot.level == Level::Pte && slot.entry != standard {
            self.write_deferred(&slot, standard)?;
            if st.split.contains_key(&kpte_frame) {
                if let Some(p) = pm.page(kpte_frame) {
                    p.put();
                }
            }
        }
        // Back to all-default: restore the large page.
        if slot.level == Level::Pte {
            if let Some(s) = st.split.get(&kpte_frame).copied() {
                if pm.page(kpte_frame).map(|p| p.page_count()) == Some(1) {
                    self.revert_page(s)?;
                    st.split.remove(&kpte_frame);
                    st.deferred.push(kpte_frame);
                }
            }
        }
        Ok(())
    }

    /// `split_large_page`: fills the pte page `split` for the large page
    /// `large` holding `va`; the target pte gets `prot`, the rest the large
    /// page's attributes. `page_count` = 1 (base) + 1 (the non-default
    /// target). Returns the entry that points at the pte page.
    fn split_large_page(
        &self,
        split: Frame,
        va: VirtAddr,
        large: &Slot,
        prot: EntryFlags,
    ) -> Result<Entry, CpaError> {
        if large.leaf() != Some(self.large) {
            return Err(CpaError::BadProt {
                flags: prot,
                why: "splitting pages larger than the pmd level (1 GiB) is not supported",
            });
        }
        let target = PhysAddr::new(va.as_u64() - self.map_start.as_u64());
        let table = self
            .swapper()
            .fill_split(large, split, |_, pa, large_flags| {
                if pa == target {
                    prot
                } else {
                    large_flags.difference(EntryFlags::PAT)
                }
            })
            .map_err(|_| CpaError::BadProt {
                flags: prot,
                why: "cannot be encoded",
            })?;
        if let Some(p) = self.sw.pm.page(split) {
            p.get();
        }
        Ok(table)
    }

    /// `revert_page`: puts the large page back.
    fn revert_page(&self, s: Split) -> Result<(), CpaError> {
        let mode = self.mode();
        let pa = PhysAddr::new(s.base.as_u64() - self.map_start.as_u64());
        let flags = self
            .ks
            .mapping_of(s.base)
            .map(|m| m.flags)
            .ok_or(CpaError::NotMapped(s.base))?;
        let e =
            Entry::page(mode, self.large, pa, flags).map_err(|_| CpaError::NotMapped(s.base))?;
        self.set_pmd_pte(&s.parent, e)
    }

    /// `set_pmd_pte`: writes the kernel entry `slot` in `swapper_pg_dir`
    /// and, on 2-level, asks the tracker to write it in every other pgd
    /// that must see it.
    fn set_pmd_pte(&self, slot: &Slot, e: Entry) -> Result<(), CpaError> {
        let sw = &self.sw;
        self.write_deferred(slot, e)?;
        sw.counters.conversions.fetch_add(1, Ordering::Relaxed);
        if !sw.propagates() {
            return Ok(());
        }
        let t0 = crate::time::now_ns();
        let n = self
            .tracker
            .propagate(sw, sw.mode.index(slot.va, Level::Pgd), e)?;
        sw.counters
            .propagated_entries
            .fetch_add(n, Ordering::Relaxed);
        sw.counters
            .propagation_ns
            .fetch_add(crate::time::elapsed_ns(t0), Ordering::Relaxed);
        Ok(())
    }

    /// `global_flush_tlb`: flush every CPU's TLB, then free the pte pages
    /// that `revert_page` replaced. Returns how many were freed.
    pub(crate) fn global_flush_tlb(&self) -> usize {
        let deferred = core::mem::take(&mut self.state.lock().deferred);
        self.tlb.flush_all();
        for f in &deferred {
            let _ = self.sw.pm.free_frame(*f);
        }
        deferred.len()
    }
}

/// Pte pages `revert_page` queued for the next `global_flush_tlb` go back
/// with the kernel if that flush never came: nothing can walk them now.
impl<M: KernelMem> Drop for Cpa<M> {
    fn drop(&mut self) {
        for f in core::mem::take(&mut self.state.lock().deferred) {
            let _ = self.sw.pm.free_frame(f);
        }
    }
}
