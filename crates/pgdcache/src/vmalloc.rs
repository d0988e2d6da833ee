//! `vmalloc`/`vfree` and `vmalloc_fault`: the kernel mapping change that
//! *can* be synchronised lazily.
//!
//! `vmalloc` maps pages into `swapper_pg_dir` only. Another pgd picks a new
//! top-level entry up in `vmalloc_fault`, which copies a *not-present* entry
//! from swapper the first time a CPU running on that pgd touches the area.
//! That works because tables attached in the vmalloc area are never freed —
//! `vfree` clears ptes and leaves the tables — so a copied pointer can never
//! dangle. A large-page conversion replaces one *present* entry with another
//! and frees tables, which is why it needs `pgd_list` and this does not.

use crate::bug::id;
use crate::error::KernelError;
use crate::pgd::Pgd;
use crate::prelude::*;
use crate::swapper::{KernelMem, Swapper};
use crate::tlb::TlbFlush;
use alloc::collections::BTreeMap;
use alloc::sync::Arc;
use core::sync::atomic::Ordering;
use physmem::{Frame, Owner, PhysAddr, PhysMemory, VirtAddr, PAGE_SIZE};
use x86paging::boot::KernelSpace;
use x86paging::map::MapError;
use x86paging::{Cursor, Entry, EntryFlags, Flush, FrameSource, Level, PageSize, PagingMode, Slot};
use x86paging::{TableFrames, Tracked};

/// Why `vmalloc` or `vfree` refused (nothing was changed).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum VmError {
    /// Zero pages asked for.
    #[error("vmalloc of zero pages")]
    Empty,
    /// No hole of that size in the vmalloc area.
    #[error("no room for {0} pages in the vmalloc area")]
    NoSpace(u64),
    /// Out of frames (backing pages or page tables).
    #[error("out of memory in vmalloc")]
    OutOfMemory(#[source] physmem::AllocError),
    /// `vfree` of an address that is not the start of an area.
    #[error("vfree of {0}, which vmalloc did not return")]
    NotAnArea(VirtAddr),
    /// A leaf entry `vmalloc` was about to write is already present: some
    /// other mapping owns that address (a bug: the area allocator handed
    /// out a range still mapped). Nothing was overwritten.
    #[error("vmalloc: {0} is already mapped; refusing to overwrite its pte")]
    AlreadyMapped(VirtAddr),
    /// `vfree` found a pte of the area that does not map the area's own
    /// frame (a bug: under `vmlist_lock` nobody else maps the range). The
    /// pte was left alone.
    #[error("vfree: {va} should map {expected} but holds {found:?}")]
    NotOurs {
        /// The page.
        va: VirtAddr,
        /// The area's frame for it.
        expected: PhysAddr,
        /// What the pte holds (`None`: no 4 KiB pte there).
        found: Option<Entry>,
    },
    /// A page-table access failed (a bug).
    #[error(transparent)]
    Kernel(#[from] KernelError),
}

/// A page-table edit's error: out of frames, or a bug.
fn map_err(e: MapError) -> VmError {
    match e {
        MapError::OutOfMemory(e) => VmError::OutOfMemory(e),
        other => VmError::Kernel(KernelError::Map(other)),
    }
}

/// One vmalloc area.
#[derive(Clone, Debug)]
struct Area {
    frames: Vec<Frame>,
}

pub(crate) struct VmState {
    /// Areas by start address; each is followed by a guard page.
    areas: BTreeMap<u64, Area>,
}

/// The vmalloc area: `vmlist_lock`, its areas and its bounds.
pub(crate) struct Vmalloc<M: KernelMem> {
    sw: Arc<Swapper<M>>,
    tlb: Arc<TlbFlush>,
    /// `vmlist_lock`: protects the list of areas and serialises the
    /// population of swapper's vmalloc tables. Taken before the page
    /// allocator's locks; the TLB flush of `vfree` runs under it.
    state: crate::sync::Mutex<VmState>,
    start: u64,
    end: u64,
    page_kernel: EntryFlags,
}

/// `PAGE_KERNEL` for vmalloc and other kernel data pages in this address
/// space (global; NX where the CPU has it enabled).
pub(crate) fn page_kernel(ks: &KernelSpace) -> EntryFlags {
    let mut f = (EntryFlags::PAGE_KERNEL | EntryFlags::GLOBAL).for_mode(ks.mode);
    if !ks.cpu.nxe {
        f.remove(EntryFlags::NX);
    }
    f
}

impl<M: KernelMem> Vmalloc<M> {
    pub(crate) fn new(sw: &Arc<Swapper<M>>, ks: &KernelSpace, tlb: &Arc<TlbFlush>) -> Self {
        Vmalloc {
            sw: sw.clone(),
            tlb: tlb.clone(),
            state: crate::sync::Mutex::new(
                &crate::sync::classes::VMLIST_LOCK,
                VmState {
                    areas: BTreeMap::new(),
                },
            ),
            start: ks.layout.vmalloc_start,
            end: ks.layout.vmalloc_end,
            page_kernel: page_kernel(ks),
        }
    }

    /// The vmalloc area `[start, end)`.
    pub(crate) fn area(&self) -> (VirtAddr, VirtAddr) {
        (VirtAddr::new(self.start), VirtAddr::new(self.end))
    }

    /// True if `va` lies in the vmalloc area.
    pub(crate) fn contains(&self, va: VirtAddr) -> bool {
        (self.start..self.end).contains(&va.as_u64())
    }

    /// `vmalloc(npages * PAGE_SIZE)`: backing frames mapped into
    /// `swapper_pg_dir` only. All-or-nothing.
    pub(crate) fn alloc(&self, npages: u64) -> Result<VirtAddr, VmError> {
        if npages == 0 {
            return Err(VmError::Empty);
        }
        let mut st = self.state.lock();
        let start = self.find_hole(&st, npages)?;
        let mut frames = Vec::new();
        for _ in 0..npages {
            match self.sw.pm.alloc_frame(Owner::KernelData) {
                Ok(f) => frames.push(f),
                Err(e) => {
                    for f in frames {
                        let _ = self.sw.pm.free_frame(f);
                    }
                    return Err(VmError::OutOfMemory(e));
                }
            }
        }
        // Tables this call attaches are tracked, so a failure can take
        // them out again: they cover only addresses no live area uses, so
        // no pgd can have copied them yet.
        let tables = Tracked::new(TableFrames::new(&self.sw.pm, Owner::KernelTable));
        let cur = self.swapper();
        let mut mapped: Vec<Slot> = Vec::new();
        for (i, f) in frames.iter().enumerate() {
            let va = VirtAddr::new(start + i as u64 * PAGE_SIZE);
            match self.map_kernel_page(&cur, va, *f, &tables) {
                Ok(pte) => mapped.push(pte),
                Err(e) => {
                    for pte in mapped {
                        // Mapped a moment ago and never used: no TLB has it.
                        let _ = cur.write(&pte, Entry::EMPTY).map(Flush::ignore);
                    }
                    let end = VirtAddr::new(start + npages * PAGE_SIZE);
                    let _ = cur.unhook(VirtAddr::new(start)..end, &tables.tables(), &tables);
                    for f in frames {
                        let _ = self.sw.pm.free_frame(f);
                    }
                    return Err(e);
                }
            }
        }
        st.areas.insert(start, Area { frames });
        Ok(VirtAddr::new(start))
    }

    fn find_hole(&self, st: &VmState, npages: u64) -> Result<u64, VmError> {
        let need = npages
            .checked_add(1)
            .and_then(|n| n.checked_mul(PAGE_SIZE))
            .ok_or(VmError::NoSpace(npages))?;
        let mut cand = self.start;
        for (&s, a) in &st.areas {
            if cand + need <= s {
                break;
            }
            cand = s + (a.frames.len() as u64 + 1) * PAGE_SIZE;
        }
        if cand.checked_add(need).is_some_and(|e| e <= self.end) {
            Ok(cand)
        } else {
            Err(VmError::NoSpace(npages))
        }
    }

    /// A cursor on `swapper_pg_dir`.
    fn swapper(&self) -> Cursor<'_, PhysMemory<M>> {
        Cursor::new(&self.sw.pm, self.sw.mode, self.sw.pgd)
    }

    /// Maps one 4 KiB kernel page in swapper, attaching missing tables
    /// from `tables`. Returns the pte's slot.
    fn map_kernel_page<F: FrameSource>(
        &self,
        cur: &Cursor<'_, PhysMemory<M>>,
        va: VirtAddr,
        f: Frame,
        tables: &F,
    ) -> Result<Slot, VmError> {
        let pte = cur.alloc_path(va, Level::Pte, tables).map_err(map_err)?;
        // Never overwrite a live mapping: a present pte here means the
        // range is still someone's (the race an unmap outside
        // `vmlist_lock` would open). Refuse instead of clobbering.
        if pte.is_present() && !self.sw.bugs.is(id::VFREE_UNMAPS_AFTER_UNLOCK) {
            return Err(VmError::AlreadyMapped(va));
        }
        let leaf = Entry::page(self.sw.mode, PageSize::Size4K, f.start(), self.page_kernel)
            .map_err(KernelError::from)?;
        // Not present before (or, in the negative model, clobbered on
        // purpose): nothing to flush for a new kernel mapping.
        Ok(cur.write(&pte, leaf).map_err(map_err)?.ignore())
    }

    /// `vfree`: unmaps the area in swapper and flushes every TLB *under
    /// `vmlist_lock`*, and only then lets the range go (Linux's
    /// `remove_vm_area`: `unmap_vm_area` before the area leaves `vmlist`);
    /// the frames are freed after the lock is dropped. The page tables stay
    /// (that is what keeps lazy sync safe).
    ///
    /// Why under the lock: once the area is off the list, a concurrent
    /// `vmalloc` may be handed the same range and map fresh frames there;
    /// an unmap after the unlock would then clear *its* ptes (see
    /// docs/CORRECTNESS.md, "vmalloc areas").
    pub(crate) fn free(&self, va: VirtAddr) -> Result<(), VmError> {
        #[cfg(loom)]
        if self.sw.bugs.is(id::VFREE_UNMAPS_AFTER_UNLOCK)
            || self.sw.bugs.is(id::VFREE_UNMAPS_AFTER_UNLOCK_LEAF_CHECKED)
        {
            return self.vfree_unmap_after_unlock(va);
        }
        let mut st = self.state.lock();
        let area = st
            .areas
            .remove(&va.as_u64())
            .ok_or(VmError::NotAnArea(va))?;
        let (freeable, unmapped) = self.unmap_area(va, &area);
        self.tlb.flush_all();
        drop(st);
        for f in freeable {
            let _ = self.sw.pm.free_frame(f);
        }
        unmapped
    }

    /// The pre-fix order, kept reachable for the negative loom model only:
    /// the area leaves the list, the lock is dropped, and the unmap comes
    /// after, when another `vmalloc` may already own the range.
    #[cfg(loom)]
    fn vfree_unmap_after_unlock(&self, va: VirtAddr) -> Result<(), VmError> {
        let area = self
            .state
            .lock()
            .areas
            .remove(&va.as_u64())
            .ok_or(VmError::NotAnArea(va))?;
        let cur = self.swapper();
        for i in 0..area.frames.len() as u64 {
            let p = VirtAddr::new(va.as_u64() + i * PAGE_SIZE);
            // Flushed below, once for the area.
            let _ = cur.unmap(p).map(Flush::ignore);
        }
        self.tlb.flush_all();
        for f in area.frames {
            let _ = self.sw.pm.free_frame(f);
        }
        Ok(())
    }

    /// Clears the ptes of `area` (at `va`) in swapper, each only if it maps
    /// the area's own frame. Called with `vmlist_lock` held. Returns the
    /// frames that may be freed — every frame no pte of the area maps any
    /// more — and the first problem met: a frame whose pte could not be
    /// read or cleared stays allocated (a leak the checker reports) rather
    /// than be freed while mapped.
    fn unmap_area(&self, va: VirtAddr, area: &Area) -> (Vec<Frame>, Result<(), VmError>) {
        let cur = self.swapper();
        let mut result = Ok(());
        let mut freeable = Vec::with_capacity(area.frames.len());
        let mut fail = |e: VmError| {
            if result.is_ok() {
                result = Err(e);
            }
        };
        for (i, f) in area.frames.iter().enumerate() {
            let p = VirtAddr::new(va.as_u64() + i as u64 * PAGE_SIZE);
            match cur.lookup(p) {
                Ok(pte) if pte.level == Level::Pte && pte.page() == Some(f.start()) => {
                    // `vfree` flushes every TLB once for the area, before
                    // `vmlist_lock` is dropped.
                    match cur.write(&pte, Entry::EMPTY) {
                        Ok(flush) => {
                            flush.ignore();
                            freeable.push(*f);
                        }
                        Err(e) => fail(map_err(e)),
                    }
                }
                Ok(other) => {
                    // Under the lock nobody else maps this range, and
                    // `vmalloc` mapped every page: a pte that is missing or
                    // not ours is a bug. Leave it and say so; our frame is
                    // not mapped there, so it may go.
                    freeable.push(*f);
                    fail(VmError::NotOurs {
                        va: p,
                        expected: f.start(),
                        found: other.is_present().then_some(other.entry),
                    });
                }
                Err(e) => fail(map_err(e)),
            }
        }
        (freeable, result)
    }

    /// Every area as its start and its backing frames (for the checker).
    pub(crate) fn area_frames(&self) -> Vec<(VirtAddr, Vec<Frame>)> {
        self.state
            .lock()
            .areas
            .iter()
            .map(|(&s, a)| (VirtAddr::new(s), a.frames.clone()))
            .collect()
    }

    /// Backing frames of every vmalloc area (for frame accounting).
    pub(crate) fn frames(&self) -> Vec<Frame> {
        self.state
            .lock()
            .areas
            .values()
            .flat_map(|a| a.frames.iter().copied())
            .collect()
    }

    /// Start addresses and sizes (pages) of the vmalloc areas.
    pub(crate) fn areas(&self) -> Vec<(VirtAddr, u64)> {
        self.state
            .lock()
            .areas
            .iter()
            .map(|(&s, a)| (VirtAddr::new(s), a.frames.len() as u64))
            .collect()
    }

    /// `vmalloc_fault`: if `va` is in the vmalloc area and `pgd` lacks the
    /// top-level entry swapper has, copy it. Returns true if it did.
    pub(crate) fn fault(&self, pgd: Pgd, va: VirtAddr) -> Result<bool, KernelError> {
        let sw = &self.sw;
        if !self.contains(va) || sw.mode == PagingMode::Pae {
            return Ok(false);
        }
        let index = sw.mode.index(va, Level::Pgd);
        let swapper = self.swapper();
        let theirs = swapper.with_root(pgd.0);
        let s = swapper.pgd_slot(index)?;
        let p = theirs.pgd_slot(index)?;
        if s.is_present() && !p.is_present() {
            // Not present before: no TLB holds a translation through it.
            theirs.write(&p, s.entry)?.ignore();
            sw.counters.vmalloc_faults.fetch_add(1, Ordering::Relaxed);
            return Ok(true);
        }
        Ok(false)
    }
}

/// Areas still live when the kernel goes: their backing frames go back
/// with it (swapper's vmalloc tables go with swapper, see `Swapper`'s
/// teardown); nothing can map them any more.
impl<M: KernelMem> Drop for Vmalloc<M> {
    fn drop(&mut self) {
        let areas = core::mem::take(&mut self.state.lock().areas);
        for f in areas.into_values().flat_map(|a| a.frames) {
            let _ = self.sw.pm.free_frame(f);
        }
    }
}
