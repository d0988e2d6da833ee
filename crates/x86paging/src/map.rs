//! Kernel-side page-table editing: map, unmap, `lookup_address`,
//! `clear_page_tables`, as functions of a root.
//!
//! These are the entry points the pgd system, `change_page_attr` and the
//! tests have always called; each is now a thin wrapper over the
//! [`Cursor`], which does the walking (new code should use the cursor: it
//! returns the TLB flush an edit owes). They follow the kernel's
//! conventions for what goes into intermediate entries:
//!
//! * a PAE PDPTE holds only the present bit and the pmd's address (the
//!   kernel writes `1 + __pa(pmd)`: RW/US are reserved there);
//! * everywhere else a pointer to a table covering user addresses gets
//!   `_PAGE_TABLE` (P|RW|US|A|D) and one covering kernel addresses
//!   `_KERNPG_TABLE` (P|RW|A|D), so the leaf alone decides the rights;
//! * on 2-level a 4 MiB (PSE) leaf is the pgd entry itself (the pmd is
//!   folded).
//!
//! Roots are given as a [`PhysAddr`], not a frame: a PAE pgd is a 32-byte
//! object that need not start a frame.
//!
//! [`map`] allocates missing intermediate tables zeroed from the
//! [`PhysMemory`] with the given [`Owner`] tag; if anything fails (out of
//! memory, a conflicting mapping, a dangling table) it unhooks and frees
//! every table it allocated, so a failed call leaves the tables as they were.

use crate::cursor::Cursor;
use crate::entry::{Entry, EntryError, EntryFlags};
use crate::flush::TableFrames;
use crate::mode::{Level, PageSize, PagingMode};
use crate::table::{entry_pa_at, next_used_entry, read_entry, write_entry};
use alloc::vec::Vec;
use core::ops::Range;
use physmem::{AllocError, Frame, MemError, Owner, PhysAddr, PhysMem, PhysMemory, VirtAddr};

/// Why a page-table walk or edit failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MapError {
    /// The entry could not be encoded (misaligned or too-wide address, NX on
    /// 2-level, …).
    #[error("cannot encode the entry")]
    Entry(#[from] EntryError),
    /// The mode has no pages of this size.
    #[error("{mode} paging has no {size} pages")]
    UnsupportedSize {
        /// The mode.
        mode: PagingMode,
        /// The size.
        size: PageSize,
    },
    /// The virtual address is not aligned to the page size.
    #[error("{va} is not {size}-aligned")]
    Misaligned {
        /// The address.
        va: VirtAddr,
        /// The page size.
        size: PageSize,
    },
    /// The virtual address is not canonical (or above 4 GiB on 32-bit).
    #[error("{0} is not a valid linear address")]
    NonCanonical(VirtAddr),
    /// Something is already mapped there: a present leaf at `level` (or, at
    /// the target level, a present table or page).
    #[error("{va} is already mapped (present {level} entry)")]
    AlreadyMapped {
        /// The address.
        va: VirtAddr,
        /// The level of the conflicting entry.
        level: Level,
    },
    /// Nothing present maps the address (unmap, protect, merge).
    #[error("{0} is not mapped")]
    NotMapped(VirtAddr),
    /// A split of an address no large page maps.
    #[error("{va} is not mapped by a large page (the walk ended at a {level} entry)")]
    NotLarge {
        /// The address.
        va: VirtAddr,
        /// The level the walk ended at.
        level: Level,
    },
    /// Allocating a page table failed.
    #[error("out of memory allocating a page table")]
    OutOfMemory(#[source] AllocError),
    /// A table on the path has been freed.
    #[error("{level} table {table} is freed")]
    Dangling {
        /// Its level.
        level: Level,
        /// Its frame.
        table: Frame,
    },
    /// A table on the path is outside RAM.
    #[error("{level} table at {table} is outside RAM")]
    BadPhys {
        /// Its level.
        level: Level,
        /// Its address.
        table: PhysAddr,
    },
    /// A physical access failed.
    #[error("page-table memory access failed")]
    Mem(#[from] MemError),
}

/// True if `va` is in the user half: below `TASK_SIZE`'s pgd boundary on
/// 32-bit (`0xC0000000`), the lower canonical half on 64-bit.
pub const fn is_user_va(mode: PagingMode, va: VirtAddr) -> bool {
    match mode {
        PagingMode::TwoLevel | PagingMode::Pae => va.as_u64() < mode.page_offset(),
        _ => va.as_u64() >> 63 == 0,
    }
}

/// The flags [`map`] puts in a pointer to a new `level`-table-child for `va`.
pub const fn table_flags(mode: PagingMode, level: Level, va: VirtAddr) -> EntryFlags {
    if matches!(mode, PagingMode::Pae) && matches!(level, Level::Pgd) {
        EntryFlags::PRESENT
    } else if is_user_va(mode, va) {
        EntryFlags::PAGE_TABLE
    } else {
        EntryFlags::KERNPG_TABLE
    }
}

/// Maps the `size` page at `pa` at `va` in the page table rooted at `root`,
/// with leaf flags `flags | PRESENT` (`flags` are logical: give
/// [`EntryFlags::PAT`] at its pte position whatever the size).
///
/// Missing intermediate tables are allocated zeroed from `pm` tagged
/// `table_owner`. Fails with [`MapError::AlreadyMapped`] if a present leaf
/// is on the path or the target entry is present. On any error the tables
/// this call allocated are unhooked and freed. [`Cursor::map`] without the
/// flush token: the slot was not present, which no x86 TLB caches.
#[allow(clippy::too_many_arguments)]
pub fn map<M: PhysMem>(
    pm: &PhysMemory<M>,
    mode: PagingMode,
    root: PhysAddr,
    va: VirtAddr,
    pa: PhysAddr,
    size: PageSize,
    flags: EntryFlags,
    table_owner: Owner,
) -> Result<(), MapError> {
    let frames = TableFrames::new(pm, table_owner);
    Cursor::new(pm, mode, root)
        .map(va, pa, size, flags, &frames)
        .map(|flush| flush.ignore())
}

/// The kernel's `lookup_address`: walks from `root` to the entry that maps
/// `va` and returns `(entry_pa, level, entry)` — the large-page leaf (a PS
/// pmd/pud, or a PSE pgd entry on 2-level) or the pte slot (returned even if
/// the pte is not present, as the kernel does). `None` if an upper-level
/// entry is not present or a table on the path is freed or outside RAM
/// ([`lookup_checked`] tells which). [`Cursor::lookup`] as a tuple.
pub fn lookup<P: PhysMem + ?Sized>(
    mem: &P,
    mode: PagingMode,
    root: PhysAddr,
    va: VirtAddr,
) -> Option<(PhysAddr, Level, Entry)> {
    lookup_checked(mem, mode, root, va).ok().flatten()
}

/// [`lookup`], reporting a freed or out-of-RAM table as an error.
pub fn lookup_checked<P: PhysMem + ?Sized>(
    mem: &P,
    mode: PagingMode,
    root: PhysAddr,
    va: VirtAddr,
) -> Result<Option<(PhysAddr, Level, Entry)>, MapError> {
    let slot = Cursor::new(mem, mode, root).lookup(va)?;
    let found = slot.level == Level::Pte || slot.leaf().is_some();
    Ok(found.then_some((slot.pa, slot.level, slot.entry)))
}

/// Clears the leaf mapping `va` (a pte or a large-page entry) and returns
/// its level and old value; `None` if nothing present maps `va`. Tables are
/// not freed (the kernel frees them only in [`free_user_tables`]). The TLB
/// flush is the caller's: [`Cursor::unmap`] returns it as a token.
pub fn unmap<P: PhysMem + ?Sized>(
    mem: &P,
    mode: PagingMode,
    root: PhysAddr,
    va: VirtAddr,
) -> Result<Option<(Level, Entry)>, MapError> {
    match Cursor::new(mem, mode, root).unmap(va) {
        // The caller flushes (documented above): this is the old API.
        Ok(flush) => {
            let old = flush.ignore();
            Ok(Some((old.level, old.entry)))
        }
        Err(MapError::NotMapped(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// An entry to clear and the table it points at, to free.
type Doom = (PhysAddr, Frame);

/// Entries to clear and tables to free, in walk order: the first few in
/// place, the rest on the heap.
#[derive(Default)]
struct Doomed {
    head: [Doom; 8],
    n: usize,
    spill: Vec<Doom>,
}

impl Doomed {
    fn push(&mut self, t: Doom) {
        match self.head.get_mut(self.n) {
            Some(slot) => {
                *slot = t;
                self.n += 1;
            }
            None => self.spill.push(t),
        }
    }
    fn parts(&self) -> (&[Doom], &[Doom]) {
        (&self.head[..self.n], &self.spill)
    }
}

/// `clear_page_tables`: frees the page tables below `root` that lie
/// entirely inside `range` and clears the entries that pointed at them;
/// leaves (large or 4 KiB) inside the range are cleared, data pages are not
/// freed. Returns the number of table frames freed.
///
/// On PAE the pgd's PDPTEs and the pmds they point at are *not* freed or
/// cleared: those pmds belong to the pgd (`pgd_alloc` installs them,
/// `pgd_free` gives them back), exactly as in 2.5, where `pgd_clear` and
/// `pmd_free` are no-ops on PAE. Everywhere else the emptied upper-level
/// entries are cleared and their tables freed, so a 2-level pgd comes back
/// with its user part clear, as `pgd_free` expects.
///
/// `range` is `[start, end)` in linear addresses and must not wrap (an end
/// that truncates to 0 is the top, see [`Cursor::entries`]); partial large
/// pages at its edges are left alone. The TLB flush is the caller's (exit
/// reloads CR3).
pub fn free_user_tables<M: PhysMem>(
    pm: &PhysMemory<M>,
    mode: PagingMode,
    root: PhysAddr,
    range: Range<VirtAddr>,
) -> Result<u64, MapError> {
    free_tables(pm, mode, root, range, false)
}

/// [`free_user_tables`] after the caller cleared every pte in `range`
/// ([`Cursor::clear_ptes`], `zap_pte_range`): the pte tables are all zero,
/// so they go back with [`PhysMemory::free_zeroed_frame`] and the next
/// page-table allocation need not clear them again (with poisoning off).
/// Debug builds check each one is zero.
pub fn free_cleared_user_tables<M: PhysMem>(
    pm: &PhysMemory<M>,
    mode: PagingMode,
    root: PhysAddr,
    range: Range<VirtAddr>,
) -> Result<u64, MapError> {
    free_tables(pm, mode, root, range, true)
}

/// [`free_cleared_user_tables`] (or, with `ptes_cleared` false,
/// [`free_user_tables`]) over whole pgd entries: the range covered by
/// entries `indexes` of the pgd at `root`, which must be user entries.
/// Frees the same tables and clears the same entries as those functions
/// over that range, as `clear_page_tables` does for a run of pgd entries:
/// each entry is read once and its subtree freed depth first, without the
/// range walk ([`Cursor::entries`]) a range with partial edges needs.
/// Returns the number of table frames freed.
pub fn free_user_pgd_entries<M: PhysMem>(
    pm: &PhysMemory<M>,
    mode: PagingMode,
    root: PhysAddr,
    indexes: Range<usize>,
    ptes_cleared: bool,
) -> Result<u64, MapError> {
    let cur = Cursor::new(pm, mode, root);
    let mut freed = 0;
    let end = indexes.end.min(mode.entries(Level::Pgd));
    for i in indexes.start..end {
        let at = entry_pa_at(mode, root, i);
        let e = read_entry(pm, mode, at)?;
        if !e.is_present() {
            continue;
        }
        if e.is_leaf(mode, Level::Pgd, true) {
            write_entry(pm, mode, at, Entry::EMPTY)?;
            continue;
        }
        let Some(next) = mode.next_level(Level::Pgd) else {
            continue;
        };
        let child = e.table_addr(mode);
        if mode == PagingMode::Pae {
            // The pgd's own pmd: emptied, kept (see `free_user_tables`).
            cur.check_table(next, child)?;
            freed += free_below(&cur, pm, child, next, ptes_cleared)?;
            continue;
        }
        freed += free_subtree(&cur, pm, at, child, next, ptes_cleared)?;
    }
    Ok(freed)
}

/// Unhooks the `level` table `table` from the entry at `at` and frees it
/// with everything below it. Returns the table frames freed.
fn free_subtree<M: PhysMem>(
    cur: &Cursor<'_, PhysMemory<M>>,
    pm: &PhysMemory<M>,
    at: PhysAddr,
    table: PhysAddr,
    level: Level,
    ptes_cleared: bool,
) -> Result<u64, MapError> {
    let mode = cur.mode;
    let mut freed = 0;
    if level == Level::Pte {
        // A whole pte table: not entered (its entries are not cleared one
        // by one), freed at once, as `free_tables` does.
        write_entry(pm, mode, at, Entry::EMPTY)?;
        let r = if ptes_cleared {
            pm.free_zeroed_frame(table.frame())
        } else {
            pm.free_frame(table.frame())
        };
        return Ok(u64::from(r.is_ok()));
    }
    cur.check_table(level, table)?;
    freed += free_below(cur, pm, table, level, ptes_cleared)?;
    write_entry(pm, mode, at, Entry::EMPTY)?;
    if pm.free_frame(table.frame()).is_ok() {
        freed += 1;
    }
    Ok(freed)
}

/// Clears every entry of the `level` table `table` (already checked
/// live), freeing the tables they point at. Returns the frames freed.
fn free_below<M: PhysMem>(
    cur: &Cursor<'_, PhysMemory<M>>,
    pm: &PhysMemory<M>,
    table: PhysAddr,
    level: Level,
    ptes_cleared: bool,
) -> Result<u64, MapError> {
    let mode = cur.mode;
    let n = mode.entries(level);
    let mut freed = 0;
    let mut i = 0;
    while let Some(j) = next_used_entry(pm, mode, table, i, n - i)? {
        i = j + 1;
        let at = entry_pa_at(mode, table, j);
        let e = read_entry(pm, mode, at)?;
        if !e.is_present() {
            continue;
        }
        if e.is_leaf(mode, level, true) {
            write_entry(pm, mode, at, Entry::EMPTY)?;
            continue;
        }
        let Some(next) = mode.next_level(level) else {
            continue;
        };
        freed += free_subtree(cur, pm, at, e.table_addr(mode), next, ptes_cleared)?;
    }
    Ok(freed)
}

fn free_tables<M: PhysMem>(
    pm: &PhysMemory<M>,
    mode: PagingMode,
    root: PhysAddr,
    range: Range<VirtAddr>,
    ptes_cleared: bool,
) -> Result<u64, MapError> {
    let cur = Cursor::new(pm, mode, root);
    let (start, end) = (range.start.as_u64() as u128, range.end.as_u64() as u128);
    let top = 1u128 << mode.va_bits();
    let mask = top - 1;
    let (start, end) = (
        start & mask,
        if end & mask == 0 && end != 0 {
            top
        } else {
            end & mask
        },
    );
    let whole = |slot: &crate::cursor::Slot| {
        let s = slot.va.as_u64() as u128 & mask;
        s >= start && s + slot.span() as u128 <= end
    };
    // Tables to free after the walk (entry, table), parents before
    // children: freed in reverse, so a table goes only once nothing below it
    // is left. A small task has a handful; more spill to the heap.
    let mut doomed = Doomed::default();
    let mut freed = 0;
    let mut it = cur.entries(range);
    while let Some(slot) = it.next() {
        let slot = slot?;
        if !whole(&slot) {
            continue;
        }
        if slot.leaf().is_some() {
            cur.write(&slot, Entry::EMPTY)?.ignore();
            continue;
        }
        let Some(child) = slot.table() else { continue };
        if mode == PagingMode::Pae && slot.level == Level::Pgd {
            continue; // the pgd's own pmd: emptied, kept
        }
        // A whole pte table about to be freed (and poisoned) need not have
        // its entries cleared one by one first, and, not entered, it can
        // go at once.
        if mode.next_level(slot.level) == Some(Level::Pte) {
            it.skip_children();
            write_entry(pm, mode, slot.pa, Entry::EMPTY)?;
            let r = if ptes_cleared {
                pm.free_zeroed_frame(child.frame())
            } else {
                pm.free_frame(child.frame())
            };
            if r.is_ok() {
                freed += 1;
            }
            continue;
        }
        doomed.push((slot.pa, child.frame()));
    }
    let (head, spill) = doomed.parts();
    for &(at, child) in spill.iter().rev().chain(head.iter().rev()) {
        write_entry(pm, mode, at, Entry::EMPTY)?;
        if pm.free_frame(child).is_ok() {
            freed += 1;
        }
    }
    Ok(freed)
}

#[cfg(all(test, feature = "std"))]
mod tests {
    use super::*;
    use crate::cpu::{Access, CpuState};
    use crate::table::{entry_pa_at, read_entry};
    use crate::walk::translate;
    use physmem::SimMemory;

    fn setup(_mode: PagingMode) -> (SimMemory, PhysAddr) {
        let pm = SimMemory::new(16 << 20).unwrap();
        let root = pm.alloc_zeroed_frame(Owner::UserTable).unwrap().start();
        (pm, root)
    }

    #[test]
    fn oom_rolls_back_every_table() {
        for mode in PagingMode::ALL {
            for nth in 1..mode.nr_levels() as u64 {
                let (pm, root) = setup(mode);
                let before = pm.stats();
                pm.faults().fail_nth(nth);
                let va = VirtAddr::new(0x40_0000);
                let r = map(
                    &pm,
                    mode,
                    root,
                    va,
                    PhysAddr::new(0x5000),
                    PageSize::Size4K,
                    EntryFlags::RW,
                    Owner::UserTable,
                );
                assert!(
                    matches!(r, Err(MapError::OutOfMemory(_))),
                    "{mode} nth {nth}: {r:?}"
                );
                pm.faults().clear();
                assert_eq!(
                    pm.stats().of(Owner::UserTable),
                    before.of(Owner::UserTable),
                    "{mode}: leaked"
                );
                // Nothing half-built: the pgd entry is clear again.
                assert!(lookup(&pm, mode, root, va).is_none(), "{mode}");
                for i in 0..mode.ptrs_per_pgd() {
                    assert!(read_entry(&pm, mode, entry_pa_at(mode, root, i))
                        .unwrap()
                        .is_none());
                }
            }
        }
    }

    #[test]
    fn conflicts_and_unmap() {
        for mode in PagingMode::ALL {
            let (pm, root) = setup(mode);
            let large = mode.page_sizes()[1];
            let va = VirtAddr::new(0x4000_0000);
            map(
                &pm,
                mode,
                root,
                va,
                PhysAddr::new(0),
                large,
                EntryFlags::RW,
                Owner::UserTable,
            )
            .unwrap();
            let inside = VirtAddr::new(0x4000_1000);
            assert!(matches!(
                map(
                    &pm,
                    mode,
                    root,
                    inside,
                    PhysAddr::new(0),
                    PageSize::Size4K,
                    EntryFlags::RW,
                    Owner::UserTable
                ),
                Err(MapError::AlreadyMapped { .. })
            ));
            let (_, level, e) = lookup(&pm, mode, root, inside).unwrap();
            assert_eq!(Some(level), mode.level_for(large));
            assert!(e.is_leaf(mode, level, true));
            assert_eq!(
                unmap(&pm, mode, root, inside).unwrap().map(|x| x.0),
                Some(level)
            );
            assert_eq!(unmap(&pm, mode, root, inside).unwrap(), None);
            // Now a 4K page fits, and a large page there conflicts with its table.
            map(
                &pm,
                mode,
                root,
                inside,
                PhysAddr::new(0x7000),
                PageSize::Size4K,
                EntryFlags::RW,
                Owner::UserTable,
            )
            .unwrap();
            assert!(matches!(
                map(
                    &pm,
                    mode,
                    root,
                    va,
                    PhysAddr::new(0),
                    large,
                    EntryFlags::RW,
                    Owner::UserTable
                ),
                Err(MapError::AlreadyMapped { .. })
            ));
            assert!(matches!(
                map(
                    &pm,
                    mode,
                    root,
                    VirtAddr::new(0x1234),
                    PhysAddr::new(0),
                    PageSize::Size4K,
                    EntryFlags::RW,
                    Owner::UserTable
                ),
                Err(MapError::Misaligned { .. })
            ));
        }
    }

    /// Freeing whole pgd entries one subtree at a time leaves the same
    /// tables, entries and frame counts as the range walk over the same
    /// entries, in every mode, with 4 KiB pages and (where the pgd or pmd
    /// holds them) large leaves, and only the entries asked for.
    #[test]
    fn free_user_pgd_entries_matches_the_range_walk() {
        for mode in PagingMode::ALL {
            let build = || {
                let (pm, root) = setup(mode);
                for i in 0..20u64 {
                    let va = VirtAddr::new(0x40_0000 + i * 0x40_1000);
                    map(
                        &pm,
                        mode,
                        root,
                        va,
                        PhysAddr::new(0x5000),
                        PageSize::Size4K,
                        EntryFlags::RW | EntryFlags::USER,
                        Owner::UserTable,
                    )
                    .unwrap();
                }
                let large = mode
                    .page_size_at(Level::Pmd)
                    .or(mode.page_size_at(Level::Pgd));
                if let Some(size) = large {
                    let va = VirtAddr::new(0x4000_0000);
                    map(
                        &pm,
                        mode,
                        root,
                        va,
                        PhysAddr::new(0),
                        size,
                        EntryFlags::RW | EntryFlags::USER,
                        Owner::UserTable,
                    )
                    .unwrap();
                }
                (pm, root)
            };
            let shift = mode.shift(Level::Pgd);
            let user = mode.user_ptrs_per_pgd();
            // All user entries, and the first entries only (the rest stay).
            for entries in [0..user, 0..(0x4000_0000u64 >> shift) as usize] {
                let (a, ra) = build();
                let (b, rb) = build();
                let range = VirtAddr::new(0)..VirtAddr::new((entries.end as u64) << shift);
                let walked = free_tables(&a, mode, ra, range, false).unwrap();
                let direct = free_user_pgd_entries(&b, mode, rb, entries.clone(), false).unwrap();
                assert_eq!(walked, direct, "{mode} {entries:?}");
                assert_eq!(a.stats(), b.stats(), "{mode} {entries:?}");
                let n = mode.entries(Level::Pgd);
                for i in 0..n {
                    let ea = read_entry(&a, mode, entry_pa_at(mode, ra, i)).unwrap();
                    let eb = read_entry(&b, mode, entry_pa_at(mode, rb, i)).unwrap();
                    assert_eq!(ea, eb, "{mode} {entries:?} pgd entry {i}");
                }
                let cpu = (CpuState::new(mode, ra), CpuState::new(mode, rb));
                for va in [0x40_0000u64, 0x40_0000 + 19 * 0x40_1000, 0x4000_0000] {
                    let va = VirtAddr::new(va);
                    assert_eq!(
                        translate(&a, &cpu.0, va, Access::READ).is_ok(),
                        translate(&b, &cpu.1, va, Access::READ).is_ok(),
                        "{mode} {entries:?} {va}"
                    );
                }
            }
        }
    }

    #[test]
    fn free_user_tables_clears_the_user_part() {
        for mode in PagingMode::ALL {
            let (pm, root) = setup(mode);
            let before = pm.stats().of(Owner::UserTable);
            let kva = VirtAddr::new(mode.page_offset());
            map(
                &pm,
                mode,
                root,
                kva,
                PhysAddr::new(0),
                PageSize::Size4K,
                EntryFlags::RW,
                Owner::KernelTable,
            )
            .unwrap();
            for i in 0..20u64 {
                let va = VirtAddr::new(0x40_0000 + i * 0x40_1000);
                map(
                    &pm,
                    mode,
                    root,
                    va,
                    PhysAddr::new(0x5000),
                    PageSize::Size4K,
                    EntryFlags::RW | EntryFlags::USER,
                    Owner::UserTable,
                )
                .unwrap();
            }
            assert!(pm.stats().of(Owner::UserTable) > before);
            let user = VirtAddr::new(0)..VirtAddr::new(mode.task_size());
            let freed = free_user_tables(&pm, mode, root, user).unwrap();
            // PAE: the pmd under PDPTE 0 belongs to the pgd and stays.
            let kept = u64::from(mode == PagingMode::Pae);
            assert_eq!(
                pm.stats().of(Owner::UserTable),
                before + kept,
                "{mode}: freed {freed}"
            );
            let cpu = CpuState::new(mode, root);
            assert!(translate(&pm, &cpu, VirtAddr::new(0x40_0000), Access::READ).is_err());
            assert!(
                translate(&pm, &cpu, kva, Access::READ).is_ok(),
                "{mode}: kernel part kept"
            );
        }
        // PAE keeps its PDPTEs and the pmds they point at.
        let mode = PagingMode::Pae;
        let (pm, root) = setup(mode);
        map(
            &pm,
            mode,
            root,
            VirtAddr::new(0x1000),
            PhysAddr::new(0),
            PageSize::Size4K,
            EntryFlags::RW,
            Owner::UserTable,
        )
        .unwrap();
        free_user_tables(
            &pm,
            mode,
            root,
            VirtAddr::new(0)..VirtAddr::new(0xc000_0000),
        )
        .unwrap();
        assert!(read_entry(&pm, mode, root).unwrap().is_present());
    }
}
