//! User address spaces: exec, fork (`dup_mmap` + `copy_page_range`) and
//! exit (`exit_mmap` + `clear_page_tables` + `pgd_free`).
//!
//! These are the callers of `pgd_alloc`/`pgd_free` and the points where an
//! address space joins and leaves `mmlist` — where the ticket scheme checks
//! its generation. Fork copies the parent's ptes (the bottom-level copies
//! that dominate for large tasks) and shares data pages copy-on-write:
//! both map them read-only and the frame's `page_count` counts the sharers.

use crate::error::KernelError;
use crate::pgd::{OwnedPgd, Pgd, PgdCaches, Via};
use crate::prelude::*;
use crate::swapper::{KernelMem, Swapper};
use crate::tracker::Tracker;
use physmem::{Frame, Owner, PhysMemory, VirtAddr, PAGE_SIZE};
use x86paging::boot::KernelSpace;
use x86paging::map::MapError;
use x86paging::{free_user_pgd_entries, free_user_tables, Cursor, TableFrames};
use x86paging::{EntryFlags, Level, PageSize, PagingMode};

/// Why an address-space operation failed (everything it did was undone).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MmError {
    /// The pgd system failed (out of memory in `pgd_alloc`, …).
    #[error(transparent)]
    Kernel(#[from] KernelError),
    /// Out of frames for data pages or user page tables.
    #[error("out of memory for user pages")]
    OutOfMemory(#[source] physmem::AllocError),
    /// The requested user layout is not mappable.
    #[error("bad user mapping at {0}")]
    BadMapping(VirtAddr, #[source] x86paging::map::MapError),
}

/// One user address space (`struct mm_struct`, reduced to what matters
/// here): its pgd and its mapped pages.
#[derive(Debug)]
pub struct Mm {
    /// `mm->pgd`: the address space owns its pgd.
    pgd: OwnedPgd,
    /// The mapped user pages in address order: virtual page, data frame,
    /// and whether it is text (executable: what the VMA's `vm_flags` would
    /// say, so fork need not look it up in the page tables).
    pages: Vec<(u64, Frame, bool)>,
}

impl Mm {
    /// The address space's pgd (its CR3).
    pub fn pgd(&self) -> Pgd {
        self.pgd.pgd()
    }
    /// Number of mapped user pages.
    pub fn rss(&self) -> usize {
        self.pages.len()
    }
    /// The mapped user pages, in address order.
    pub fn pages(&self) -> impl Iterator<Item = (VirtAddr, Frame)> + '_ {
        self.pages.iter().map(|&(v, f, _)| (VirtAddr::new(v), f))
    }
}

/// A task image: text, data and stack sizes in pages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TaskSize {
    /// Text pages (read-only, executable).
    pub text: u64,
    /// Data pages (read-write).
    pub data: u64,
    /// Stack pages (read-write, at the top of user space).
    pub stack: u64,
}

impl TaskSize {
    /// A small script-like task: 16 + 8 + 4 pages.
    pub const SMALL: TaskSize = TaskSize {
        text: 16,
        data: 8,
        stack: 4,
    };
    /// Total pages.
    pub fn pages(&self) -> u64 {
        self.text + self.data + self.stack
    }
}

/// What exec, fork and exit work with: the pgd caches, the scheme's
/// tracker (`mmlist`, and the ticket refresh at join), and the memory.
pub(crate) struct AddressSpaces<'a, M: KernelMem> {
    pub(crate) sw: &'a Swapper<M>,
    pub(crate) ks: &'a KernelSpace,
    pub(crate) caches: &'a PgdCaches<M>,
    pub(crate) tracker: &'a dyn Tracker<M>,
}

impl<M: KernelMem> AddressSpaces<'_, M> {
    fn pm(&self) -> &PhysMemory<M> {
        &self.sw.pm
    }

    fn mode(&self) -> PagingMode {
        self.sw.mode
    }

    fn kernel_space(&self) -> &KernelSpace {
        self.ks
    }

    /// The address space of `pgd` joins `mmlist`: in `slab-ticket` this is
    /// where a pgd with an old ticket is refreshed (see `Tracker`).
    pub(crate) fn mm_join(&self, pgd: Pgd) -> Result<(), KernelError> {
        self.tracker.on_join(self.sw, pgd.0)
    }

    /// The address space of `pgd` leaves `mmlist` (exit, before `pgd_free`).
    pub(crate) fn mm_leave(&self, pgd: Pgd) {
        self.tracker.mmlist().leave(pgd.0)
    }

    fn user_flags(&self, writable: bool, exec: bool) -> EntryFlags {
        let mut f = EntryFlags::PRESENT | EntryFlags::USER;
        if writable {
            f |= EntryFlags::RW;
        }
        if !exec && self.mode() != PagingMode::TwoLevel && self.kernel_space().cpu.nxe {
            f |= EntryFlags::NX;
        }
        f
    }

    fn map_user(&self, mm: &Mm, va: u64, f: Frame, flags: EntryFlags) -> Result<(), MmError> {
        let va = VirtAddr::new(va);
        let frames = TableFrames::new(self.pm(), Owner::UserTable);
        Cursor::new(self.pm(), self.mode(), mm.pgd().0)
            .map(va, f.start(), PageSize::Size4K, flags, &frames)
            .map_err(|e| match e {
                MapError::OutOfMemory(e) => MmError::OutOfMemory(e),
                other => MmError::BadMapping(va, other),
            })?
            // A new mapping in an empty slot of a pgd no CPU has loaded
            // since: no TLB can hold the address.
            .ignore();
        Ok(())
    }

    /// `mm_init` + the join to `mmlist`: an empty address space with a
    /// fresh pgd, visible to conversions (and, in `slab-ticket`, refreshed).
    fn mm_init(&self, via: &mut Via<'_, '_, M>) -> Result<Mm, MmError> {
        let pgd = self.caches.alloc(via)?;
        let joined = self.mm_join(pgd.pgd());
        let mm = Mm {
            pgd,
            pages: Vec::new(),
        };
        if let Err(e) = joined {
            self.teardown(via, mm)?;
            return Err(e.into());
        }
        Ok(mm)
    }

    /// exec: a fresh address space with `size` pages mapped (text at 4 MiB,
    /// data after it, stack below the top of user space), joined to `mmlist`.
    pub(crate) fn exec_mm(&self, via: &mut Via<'_, '_, M>, size: TaskSize) -> Result<Mm, MmError> {
        let mut mm = self.mm_init(via)?;
        let text = 0x40_0000u64;
        let data = text + size.text * PAGE_SIZE;
        let stack_top = self.kernel_space().layout.user_end - 16 * PAGE_SIZE;
        let stack = stack_top - size.stack * PAGE_SIZE;
        let plan = [
            (text, size.text, false, true),
            (data, size.data, true, false),
            (stack, size.stack, true, false),
        ];
        mm.pages.reserve_exact(size.pages() as usize);
        // In address order (text, data, stack), so `pages` stays sorted.
        for (start, n, w, x) in plan {
            for i in 0..n {
                let va = start + i * PAGE_SIZE;
                let f = match self.pm().alloc_frame(Owner::UserData) {
                    Ok(f) => f,
                    Err(e) => {
                        self.exit_mm(via, mm)?;
                        return Err(MmError::OutOfMemory(e));
                    }
                };
                if let Err(e) = self.map_user(&mm, va, f, self.user_flags(w, x)) {
                    let _ = self.pm().free_frame(f);
                    self.exit_mm(via, mm)?;
                    return Err(e);
                }
                mm.pages.push((va, f, x));
            }
        }
        Ok(mm)
    }

    /// fork: `pgd_alloc`, join `mmlist` (`dup_mmap` does it first), then
    /// `copy_page_range` ([`AddressSpaces::copy_page_range`]).
    pub(crate) fn fork_mm(&self, via: &mut Via<'_, '_, M>, parent: &Mm) -> Result<Mm, MmError> {
        let mut mm = self.mm_init(via)?;
        if let Err(e) = self.copy_page_range(&mut mm, parent) {
            self.exit_mm(via, mm)?;
            return Err(e);
        }
        Ok(mm)
    }

    /// fork onto `pgd`, a constructed pgd the caller got from `pgd_alloc`
    /// and owns: fork without `pgd_alloc` (join `mmlist`, then
    /// `copy_page_range`), for measuring what fork costs when the pgd
    /// costs nothing. On failure everything is undone and `pgd` is back
    /// in constructed state, still the caller's.
    pub(crate) fn fork_mm_onto(&self, pgd: Pgd, parent: &Mm) -> Result<Mm, MmError> {
        self.mm_join(pgd)?;
        let mut mm = Mm {
            pgd: OwnedPgd::raw(pgd),
            pages: Vec::new(),
        };
        if let Err(e) = self.copy_page_range(&mut mm, parent) {
            self.exit_mm_keep_pgd(mm)?;
            return Err(e);
        }
        Ok(mm)
    }

    /// `copy_page_range` into the empty, joined `mm`: every parent pte is
    /// copied read-only and the data frame shared. The ptes go in one pass
    /// over the parent's pages in address order, a pte table at a time
    /// (`copy_pte_range`), with each frame's reference taken just before
    /// its pte is written. On failure `mm` holds the pages copied so far
    /// (the caller's exit undoes them) and the failing page's reference
    /// has been dropped again.
    fn copy_page_range(&self, mm: &mut Mm, parent: &Mm) -> Result<(), MmError> {
        let frames = TableFrames::new(self.pm(), Owner::UserTable);
        // Copy-on-write: the child maps every frame read-only.
        let (text, data) = (self.user_flags(false, true), self.user_flags(false, false));
        let pm = self.pm();
        let ptes = parent.pages.iter().map(|&(va, f, exec)| {
            if let Some(p) = pm.page(f) {
                p.get();
            }
            let flags = if exec { text } else { data };
            (VirtAddr::new(va), f.start(), flags)
        });
        let copied = Cursor::new(pm, self.mode(), mm.pgd().0).map_ptes(ptes, &frames);
        match copied {
            // New mappings in empty slots of a pgd no CPU has loaded since:
            // no TLB can hold the addresses.
            Ok(flush) => {
                flush.ignore();
                // One allocation of the exact size (as `dup_mmap` allocates
                // each copy once), not a grown empty `Vec`.
                mm.pages = parent.pages.clone();
                Ok(())
            }
            Err(e) => {
                // The failing page's reference was taken, its pte not written.
                let failed = parent.pages.get(e.mapped);
                if let Some(&(_, f, _)) = failed {
                    self.put_user_frame(f);
                }
                mm.pages
                    .extend_from_slice(&parent.pages[..e.mapped.min(parent.pages.len())]);
                let va = VirtAddr::new(failed.map_or(0, |&(va, _, _)| va));
                Err(match e.error {
                    MapError::OutOfMemory(e) => MmError::OutOfMemory(e),
                    other => MmError::BadMapping(va, other),
                })
            }
        }
    }

    #[inline]
    fn put_user_frame(&self, f: Frame) {
        if let Some(p) = self.pm().page(f) {
            if p.put() == 0 {
                let _ = self.pm().free_frame(f);
            }
        }
    }

    /// exit: leave `mmlist`, `clear_page_tables`, `pgd_free`.
    pub(crate) fn exit_mm(&self, via: &mut Via<'_, '_, M>, mm: Mm) -> Result<(), MmError> {
        self.mm_leave(mm.pgd());
        self.teardown(via, mm)
    }

    /// exit without `pgd_free` (the counterpart of
    /// [`AddressSpaces::fork_mm_onto`]): leave `mmlist`, unmap, free the
    /// page tables, and hand back the pgd in constructed state.
    pub(crate) fn exit_mm_keep_pgd(&self, mm: Mm) -> Result<Pgd, MmError> {
        self.mm_leave(mm.pgd());
        self.unmap_all(&mm)?;
        Ok(mm.pgd.into_raw())
    }

    fn teardown(&self, via: &mut Via<'_, '_, M>, mm: Mm) -> Result<(), MmError> {
        self.unmap_all(&mm)?;
        self.caches.free(via, mm.pgd)?;
        Ok(())
    }

    /// `exit_mmap` short of `pgd_free`: unmaps every page of `mm`, drops
    /// the frames' references and frees the user page tables, leaving the
    /// pgd in constructed state.
    fn unmap_all(&self, mm: &Mm) -> Result<(), MmError> {
        // `zap_pte_range`: clear each pte, then drop its frame's reference,
        // in one pass. The pte tables are then all zero and go back to the
        // allocator as such, so the next fork's pte tables need not be
        // cleared again. Exit owes no flush here: the caller has left this
        // pgd (exit reloads CR3), as for the tables freed below. The walk
        // reports each pte table it reaches, and so which pgd entries hold
        // user tables.
        let shift = self.mode().shift(Level::Pgd);
        let mut runs = PgdRuns::default();
        let pages = mm.pages.iter().map(|&(va, f, _)| (VirtAddr::new(va), f));
        let zapped = Cursor::new(self.pm(), self.mode(), mm.pgd().0).zap_ptes(
            pages,
            |f| self.put_user_frame(f),
            |va| runs.add(va.as_u64() >> shift),
        );
        match zapped {
            Ok(flush) => {
                flush.ignore();
                self.free_pgtables(mm, Some(&runs), true)?;
            }
            // Cannot happen (every page in `pages` is mapped): the pages
            // from the failing one on still drop their references, and the
            // tables are freed the ordinary way over every page's entry.
            Err(e) => {
                for &(_, f, _) in mm.pages.get(e.mapped..).unwrap_or(&[]) {
                    self.put_user_frame(f);
                }
                self.free_pgtables(mm, None, false)?;
            }
        }
        Ok(())
    }

    /// `clear_page_tables` over the part of the user address space the
    /// mapped pages lie in, as Linux's `free_pgtables` walks only the
    /// VMAs' ranges (2.6.12 on): the pgd entries that cover some page of
    /// `mm.pages`, a run of neighbours at a time. Exec and fork put user
    /// tables nowhere else (a failed map takes back the tables it
    /// attached), so this frees the same tables as scanning the whole user
    /// part — of which a small task uses 3 entries of 768 on 2-level —
    /// and leaves the pgd in the same constructed state. Each run of whole
    /// pgd entries goes to [`x86paging::free_user_pgd_entries`], which
    /// reads each entry once and frees its subtree (no range walk: there
    /// are no partial edges). Debug builds scan the whole user part
    /// afterwards and insist it was already clear.
    ///
    /// `runs`: the runs of pgd entries [`Cursor::zap_ptes`] reached, if
    /// it kept them all; otherwise they are found from `mm.pages`.
    /// `ptes_cleared`: every pte of `mm.pages` was cleared, so the pte
    /// tables are all zero and go back as such
    /// ([`physmem::PhysMemory::free_zeroed_frame`]).
    fn free_pgtables(
        &self,
        mm: &Mm,
        runs: Option<&PgdRuns>,
        ptes_cleared: bool,
    ) -> Result<(), KernelError> {
        let mode = self.mode();
        let shift = mode.shift(Level::Pgd);
        let user = mode.user_ptrs_per_pgd() as u64;
        let free = |(first, last): (u64, u64)| -> Result<(), KernelError> {
            let entries = first as usize..(last + 1).min(user) as usize;
            free_user_pgd_entries(self.pm(), mode, mm.pgd().0, entries, ptes_cleared)?;
            Ok(())
        };
        match runs.and_then(PgdRuns::runs) {
            Some(runs) => {
                for &run in runs {
                    free(run)?;
                }
            }
            None => {
                // Inclusive runs of pgd indexes; `pages` is in address order.
                let mut run: Option<(u64, u64)> = None;
                for &(va, _, _) in &mm.pages {
                    let i = va >> shift;
                    run = match run {
                        Some((first, last)) if i <= last.saturating_add(1) && i >= first => {
                            Some((first, last.max(i)))
                        }
                        Some(r) => {
                            free(r)?;
                            Some((i, i))
                        }
                        None => Some((i, i)),
                    };
                }
                if let Some(r) = run {
                    free(r)?;
                }
            }
        }
        #[cfg(debug_assertions)]
        {
            let end = VirtAddr::new(user << shift);
            let left = free_user_tables(self.pm(), mode, mm.pgd().0, VirtAddr::new(0)..end)?;
            debug_assert_eq!(left, 0, "user page tables outside the mapped pages");
        }
        Ok(())
    }

    /// `clear_page_tables`: frees every user page table and clears the user
    /// entries, so the pgd (and on PAE its pmds) is back in constructed
    /// state. Data pages are the caller's.
    pub(crate) fn clear_page_tables(&self, pgd: Pgd) -> Result<(), KernelError> {
        let mode = self.mode();
        // The whole user part of the pgd, not just TASK_SIZE: the last user
        // entry's tables go too. On PAE the three user pmds stay: they
        // belong to the pgd (pmd_cache), as in 2.5.
        let end = mode.user_ptrs_per_pgd() as u64 * mode.span(Level::Pgd);
        free_user_tables(self.pm(), mode, pgd.0, VirtAddr::new(0)..VirtAddr::new(end))?;
        Ok(())
    }
}

/// Inclusive runs of pgd indexes, as `free_pgtables` merges them (an
/// index inside or just past the last run extends it), for the first few
/// runs; a small task has two or three.
#[derive(Default)]
struct PgdRuns {
    runs: [(u64, u64); 8],
    n: usize,
    overflowed: bool,
}

impl PgdRuns {
    fn add(&mut self, i: u64) {
        if let Some(last) = self.n.checked_sub(1).and_then(|k| self.runs.get_mut(k)) {
            if i >= last.0 && i <= last.1.saturating_add(1) {
                last.1 = last.1.max(i);
                return;
            }
        }
        match self.runs.get_mut(self.n) {
            Some(r) => {
                *r = (i, i);
                self.n += 1;
            }
            None => self.overflowed = true,
        }
    }

    /// The runs, unless more came than fit.
    fn runs(&self) -> Option<&[(u64, u64)]> {
        match self.overflowed {
            true => None,
            false => self.runs.get(..self.n),
        }
    }
}
