//! One page-table cursor for every kernel-side walk.
//!
//! A [`Cursor`] is a page table in physical memory as the kernel edits it:
//! the memory ([`PhysMem`]), the paging mode and the root (a pgd, given as
//! a [`PhysAddr`] because a PAE pgd is a 32-byte object). Every kernel-side
//! walk goes through it, as `pgd_offset`/`pmd_offset`/`pte_offset_kernel`
//! chains and `lookup_address` do in Linux, instead of each caller writing
//! its own loop over [`PagingMode::levels`]:
//!
//! * [`Cursor::descend`] walks towards one level for a linear address and
//!   stops at the first entry that is not a present table pointer, handing
//!   back the entry's [`Slot`]: where it is, its level, its value, the
//!   address span it covers, and whether it is a (large/PSE) leaf.
//!   [`Cursor::lookup`] is `lookup_address` (down to the pte);
//! * [`Cursor::alloc_path`] allocates missing intermediate tables from a
//!   [`FrameSource`] (`pmd_alloc`, `pte_alloc_kernel`) and undoes its own
//!   allocations if it fails;
//! * [`Cursor::map`], [`Cursor::unmap`], [`Cursor::protect`] and
//!   [`Cursor::write`] (`set_pte_atomic` on a slot) return a `#[must_use]`
//!   [`Flush`] token;
//! * [`Cursor::split`] / [`Cursor::fill_split`] and [`Cursor::merge`] /
//!   [`Cursor::mergeable`] are `change_page_attr`'s `split_large_page` and
//!   `revert_page`;
//! * [`Cursor::entries`] iterates the present entries over a range of
//!   linear addresses ([`crate::range`]).
//!
//! Kernel-side rules, not the MMU's: a PS entry is a leaf wherever the
//! format allows one (the kernel's `pmd_large` does not look at CR4.PSE),
//! and a table whose frame is freed or outside RAM is an error
//! ([`MapError::Dangling`], [`MapError::BadPhys`]) rather than read. The
//! software MMU ([`crate::walk`]) stays a separate walker on purpose: it
//! models the hardware (CR4/EFER bits, reserved bits, rights combined over
//! levels), and the tests check the cursor against it, which would prove
//! nothing if both shared one walk.

use crate::entry::{Entry, EntryError, EntryFlags};
use crate::flush::{Flush, FrameSource};
use crate::map::{table_flags, MapError};
use crate::mode::{Level, PageSize, PagingMode};
use crate::range::Entries;
use crate::table::{entry_pa, entry_pa_at, read_entry, write_entry};
use core::ops::Range;
use physmem::{Frame, FrameState, PhysAddr, PhysMem, VirtAddr};

/// One entry of a page table, as a walk found it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slot {
    /// The paging mode of the table.
    pub mode: PagingMode,
    /// Physical address of the entry (what `set_pte_atomic` writes).
    pub pa: PhysAddr,
    /// The level of the table holding it.
    pub level: Level,
    /// Its value when read.
    pub entry: Entry,
    /// The first linear address the entry covers (canonical).
    pub va: VirtAddr,
}

impl Slot {
    /// Its index in its table (`pgd_index`, `pmd_index`, …).
    pub const fn index(&self) -> usize {
        self.mode.index(self.va, self.level)
    }
    /// True if the entry is present.
    pub const fn is_present(&self) -> bool {
        self.entry.is_present()
    }
    /// The size of the page this entry maps if it is a present leaf (a pte,
    /// or a PS entry where the format has large pages); `None` for a table
    /// pointer or a non-present entry.
    pub const fn leaf(&self) -> Option<PageSize> {
        if self.entry.is_present() && self.entry.is_leaf(self.mode, self.level, true) {
            self.mode.page_size_at(self.level)
        } else {
            None
        }
    }
    /// True if the entry is a present large-page (PSE) leaf.
    pub const fn is_large(&self) -> bool {
        matches!(
            self.level,
            Level::Pgd | Level::P4d | Level::Pud | Level::Pmd
        ) && self.leaf().is_some()
    }
    /// The next-level table this entry points at, if it is a present
    /// table pointer.
    pub const fn table(&self) -> Option<PhysAddr> {
        if self.entry.is_present() && self.leaf().is_none() && !matches!(self.level, Level::Pte) {
            Some(self.entry.table_addr(self.mode))
        } else {
            None
        }
    }
    /// The physical address of the page a present leaf maps.
    pub const fn page(&self) -> Option<PhysAddr> {
        match self.leaf() {
            Some(size) => Some(self.entry.page_addr(self.mode, size)),
            None => None,
        }
    }
    /// Bytes of address space the entry covers.
    pub const fn span(&self) -> u64 {
        self.mode.span(self.level)
    }
    /// The same slot holding `entry`.
    pub const fn with_entry(self, entry: Entry) -> Slot {
        Slot { entry, ..self }
    }
}

/// Up to four tables one `alloc_path` attached, to unhook on failure.
#[derive(Default)]
struct Attached {
    frames: [Option<Frame>; 4],
    n: usize,
    /// The first entry written (the rest hang below it).
    hook: Option<PhysAddr>,
}

impl Attached {
    fn undo<P: PhysMem + ?Sized, F: FrameSource + ?Sized>(&self, cur: &Cursor<'_, P>, frames: &F) {
        if let Some(at) = self.hook {
            // Best effort: the entry was written a moment ago, so this
            // store succeeded once already.
            let _ = write_entry(cur.mem, cur.mode, at, Entry::EMPTY);
        }
        for f in self.frames[..self.n].iter().rev().flatten() {
            let _ = frames.free_table(*f);
        }
    }
}

/// A page table in physical memory, for walking and editing (see the
/// module docs). Cheap to copy: a reference, the mode and the root.
#[derive(Debug)]
pub struct Cursor<'m, P: ?Sized> {
    pub(crate) mem: &'m P,
    pub(crate) mode: PagingMode,
    pub(crate) root: PhysAddr,
}

impl<P: ?Sized> Clone for Cursor<'_, P> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<P: ?Sized> Copy for Cursor<'_, P> {}

impl<'m, P: PhysMem + ?Sized> Cursor<'m, P> {
    /// The page table rooted at `root` (a pgd) in `mem`.
    pub const fn new(mem: &'m P, mode: PagingMode, root: PhysAddr) -> Self {
        Cursor { mem, mode, root }
    }
    /// The paging mode.
    pub const fn mode(&self) -> PagingMode {
        self.mode
    }
    /// The root (pgd) address.
    pub const fn root(&self) -> PhysAddr {
        self.root
    }
    /// The memory the tables live in.
    pub const fn mem(&self) -> &'m P {
        self.mem
    }
    /// The same memory and mode, another pgd (e.g. each pgd on `pgd_list`).
    pub const fn with_root(&self, root: PhysAddr) -> Self {
        Cursor {
            mem: self.mem,
            mode: self.mode,
            root,
        }
    }

    /// Refuses a table whose frame is freed or outside RAM.
    #[inline]
    pub(crate) fn check_table(&self, level: Level, table: PhysAddr) -> Result<(), MapError> {
        match self.mem.frame_state(table.frame()) {
            FrameState::Live => Ok(()),
            FrameState::Freed => Err(MapError::Dangling {
                level,
                table: table.frame(),
            }),
            FrameState::Unmanaged => Err(MapError::BadPhys { level, table }),
        }
    }

    /// Reads entry `index` of the `level` table at `table`, whose first
    /// entry covers the unsigned linear address `base`.
    pub(crate) fn slot_in(
        &self,
        table: PhysAddr,
        level: Level,
        index: usize,
        base: u64,
    ) -> Result<Slot, MapError> {
        let mode = self.mode;
        let pa = entry_pa_at(mode, table, index);
        let entry = read_entry(self.mem, mode, pa)?;
        let va = mode.canonicalize(base.wrapping_add((index as u64) << mode.shift(level)));
        Ok(Slot {
            mode,
            pa,
            level,
            entry,
            va,
        })
    }

    /// One step of a walk: the entry for `va` in the `level` table at
    /// `table`, and where it is.
    #[inline]
    fn step(
        &self,
        table: PhysAddr,
        level: Level,
        va: VirtAddr,
    ) -> Result<(PhysAddr, Entry), MapError> {
        self.check_table(level, table)?;
        let at = entry_pa(self.mode, table, level, va);
        Ok((at, read_entry(self.mem, self.mode, at)?))
    }

    /// The slot of an entry a walk for `va` read at `level`. Clearing bits
    /// below the level's span keeps a canonical address canonical.
    #[inline]
    fn found(&self, level: Level, va: VirtAddr, pa: PhysAddr, entry: Entry) -> Slot {
        let mode = self.mode;
        Slot {
            mode,
            pa,
            level,
            entry,
            va: VirtAddr::new(va.as_u64() & !(mode.span(level) - 1)),
        }
    }

    #[inline]
    fn check_va(&self, va: VirtAddr, target: Level) -> Result<(), MapError> {
        if !self.mode.has_level(target) {
            return Err(MapError::Entry(EntryError::BadLevel {
                mode: self.mode,
                level: target,
            }));
        }
        if !self.mode.is_canonical(va) {
            return Err(MapError::NonCanonical(va));
        }
        Ok(())
    }

    /// The pgd entry `index` (`pgd_offset` by index).
    pub fn pgd_slot(&self, index: usize) -> Result<Slot, MapError> {
        self.check_table(Level::Pgd, self.root)?;
        if index >= self.mode.ptrs_per_pgd() {
            return Err(MapError::NonCanonical(self.mode.pgd_entry_start(index)));
        }
        self.slot_in(self.root, Level::Pgd, index, 0)
    }

    /// Walks from the pgd towards `target` for `va` and returns the entry
    /// it stopped at: the `target` entry, or an entry above it that is not
    /// present or is a large leaf. Nothing is allocated.
    #[inline]
    pub fn descend(&self, va: VirtAddr, target: Level) -> Result<Slot, MapError> {
        self.check_va(va, target)?;
        let mode = self.mode;
        let mut table = self.root;
        for &level in mode.levels() {
            let (at, e) = self.step(table, level, va)?;
            if level == target || !e.is_present() || e.is_leaf(mode, level, true) {
                return Ok(self.found(level, va, at, e));
            }
            table = e.table_addr(mode);
        }
        Err(MapError::Entry(EntryError::BadLevel {
            mode,
            level: target,
        }))
    }

    /// `lookup_address`: the entry that maps `va` — a large leaf, or the
    /// pte slot (present or not) — or the not-present entry above it that
    /// ends the walk (check [`Slot::level`] and [`Slot::leaf`]).
    #[inline]
    pub fn lookup(&self, va: VirtAddr) -> Result<Slot, MapError> {
        self.descend(va, Level::Pte)
    }

    #[inline]
    fn alloc_path_in<F: FrameSource + ?Sized>(
        &self,
        va: VirtAddr,
        target: Level,
        frames: &F,
        attached: &mut Attached,
    ) -> Result<Slot, MapError> {
        let mode = self.mode;
        let mut table = self.root;
        for &level in mode.levels() {
            let (at, e) = self.step(table, level, va)?;
            if level == target {
                return Ok(self.found(level, va, at, e));
            }
            if e.is_present() {
                if e.is_leaf(mode, level, true) {
                    return Err(MapError::AlreadyMapped { va, level });
                }
                table = e.table_addr(mode);
                continue;
            }
            let f = frames.alloc_table().map_err(MapError::OutOfMemory)?;
            // At most four intermediate tables (5-level), so always recorded.
            let recorded = match attached.frames.get_mut(attached.n) {
                Some(s) => {
                    *s = Some(f);
                    attached.n += 1;
                    true
                }
                None => false,
            };
            let e = Entry::table(mode, level, f.start(), table_flags(mode, level, va));
            let written = e
                .map_err(MapError::from)
                .and_then(|e| Ok(write_entry(self.mem, mode, at, e)?));
            if let Err(e) = written {
                // Not hooked: give it back here unless the undo will.
                if attached.hook.is_none() || !recorded {
                    let _ = frames.free_table(f);
                    if recorded {
                        attached.n -= 1;
                    }
                }
                return Err(e);
            }
            if !recorded {
                // Unreachable with the four modes; never leave a table the
                // undo would not know of.
                let _ = write_entry(self.mem, mode, at, Entry::EMPTY);
                let _ = frames.free_table(f);
                return Err(MapError::Entry(EntryError::BadLevel { mode, level }));
            }
            attached.hook.get_or_insert(at);
            table = f.start();
        }
        Err(MapError::Entry(EntryError::BadLevel {
            mode,
            level: target,
        }))
    }

    /// Walks to the `target` entry for `va`, allocating every missing
    /// intermediate table from `frames` (`pud_alloc`, `pmd_alloc`,
    /// `pte_alloc_kernel`), and returns that entry, present or not. Fails
    /// with [`MapError::AlreadyMapped`] if a large leaf is on the path; on
    /// any failure the tables this call attached are unhooked and given
    /// back. On success they stay, even if the caller then writes nothing.
    pub fn alloc_path<F: FrameSource + ?Sized>(
        &self,
        va: VirtAddr,
        target: Level,
        frames: &F,
    ) -> Result<Slot, MapError> {
        self.check_va(va, target)?;
        let mut attached = Attached::default();
        let r = self.alloc_path_in(va, target, frames, &mut attached);
        if r.is_err() {
            attached.undo(self, frames);
        }
        r
    }

    /// Re-reads a slot (the entry may have changed since the walk).
    pub fn read(&self, slot: &Slot) -> Result<Slot, MapError> {
        Ok(slot.with_entry(read_entry(self.mem, self.mode, slot.pa)?))
    }

    /// `set_pte_atomic`: writes `entry` into `slot` in one atomic store and
    /// returns the flush of the span the entry covers, carrying the slot
    /// with its new value.
    pub fn write(&self, slot: &Slot, entry: Entry) -> Result<Flush<Slot>, MapError> {
        write_entry(self.mem, self.mode, slot.pa, entry)?;
        Ok(Flush::new(slot.va, slot.span(), slot.with_entry(entry)))
    }

    /// Maps the `size` page at `pa` at `va` with leaf flags `flags |
    /// PRESENT` (logical flags: [`EntryFlags::PAT`] at its pte position
    /// whatever the size). Missing tables come from `frames`. All or
    /// nothing: fails with [`MapError::AlreadyMapped`] if a leaf is on the
    /// path or the target entry is present, and then, as on any failure,
    /// the tables this call attached are unhooked and given back.
    ///
    /// The target entry was not present, and x86 caches no not-present
    /// entry, so [`Flush::ignore`] is correct here unless the caller's TLB
    /// model caches negative entries.
    #[inline]
    pub fn map<F: FrameSource + ?Sized>(
        &self,
        va: VirtAddr,
        pa: PhysAddr,
        size: PageSize,
        flags: EntryFlags,
        frames: &F,
    ) -> Result<Flush, MapError> {
        let mode = self.mode;
        let target = mode
            .level_for(size)
            .ok_or(MapError::UnsupportedSize { mode, size })?;
        if !mode.is_canonical(va) {
            return Err(MapError::NonCanonical(va));
        }
        if !va.is_aligned(size.bytes()) {
            return Err(MapError::Misaligned { va, size });
        }
        let leaf = Entry::page(mode, size, pa, flags | EntryFlags::PRESENT)?;
        let mut attached = Attached::default();
        let r = self
            .alloc_path_in(va, target, frames, &mut attached)
            .and_then(|slot| {
                if slot.is_present() {
                    return Err(MapError::AlreadyMapped {
                        va,
                        level: slot.level,
                    });
                }
                Ok(write_entry(self.mem, mode, slot.pa, leaf)?)
            });
        match r {
            Ok(()) => Ok(Flush::new(va, size.bytes(), ())),
            Err(e) => {
                attached.undo(self, frames);
                Err(e)
            }
        }
    }

    /// The present leaf mapping `va`, or [`MapError::NotMapped`].
    pub fn leaf_of(&self, va: VirtAddr) -> Result<Slot, MapError> {
        let slot = self.lookup(va)?;
        if slot.leaf().is_none() {
            return Err(MapError::NotMapped(va));
        }
        Ok(slot)
    }

    /// Clears the leaf (pte or large page) mapping `va`; the flush carries
    /// the slot with its old value. Tables are not freed.
    pub fn unmap(&self, va: VirtAddr) -> Result<Flush<Slot>, MapError> {
        let slot = self.leaf_of(va)?;
        write_entry(self.mem, self.mode, slot.pa, Entry::EMPTY)?;
        Ok(Flush::new(slot.va, slot.span(), slot))
    }

    /// `pte_modify` in place: gives the leaf mapping `va` the logical flags
    /// `flags | PRESENT`, keeping its address and size; the flush carries
    /// the slot with its old value.
    pub fn protect(&self, va: VirtAddr, flags: EntryFlags) -> Result<Flush<Slot>, MapError> {
        let slot = self.leaf_of(va)?;
        let size = slot.leaf().ok_or(MapError::NotMapped(va))?;
        let pa = slot.entry.page_addr(self.mode, size);
        let e = Entry::page(self.mode, size, pa, flags | EntryFlags::PRESENT)?;
        write_entry(self.mem, self.mode, slot.pa, e)?;
        Ok(Flush::new(slot.va, slot.span(), slot))
    }

    /// `split_large_page`'s fill: writes into `table` (a frame for the
    /// level below `large`) the entries that map exactly what the large
    /// leaf `large` maps, one page of the next size each, with the flags
    /// `prot(va, pa, large_flags)` gives; returns the table pointer to
    /// install in `large`'s slot (not installed: on 2-level the caller's
    /// `set_pmd_pte` installs it in every pgd).
    pub fn fill_split(
        &self,
        large: &Slot,
        table: Frame,
        mut prot: impl FnMut(VirtAddr, PhysAddr, EntryFlags) -> EntryFlags,
    ) -> Result<Entry, MapError> {
        let mode = self.mode;
        let (Some(size), Some(next)) = (large.leaf(), mode.next_level(large.level)) else {
            return Err(MapError::NotLarge {
                va: large.va,
                level: large.level,
            });
        };
        let small = mode.page_size_at(next).ok_or(MapError::NotLarge {
            va: large.va,
            level: large.level,
        })?;
        let flags = large.entry.flags(Some(size));
        let base = large.entry.page_addr(mode, size).as_u64();
        for i in 0..mode.entries(next) {
            let off = i as u64 * small.bytes();
            let va = VirtAddr::new(large.va.as_u64().wrapping_add(off));
            let pa = PhysAddr::new(base + off);
            let e = Entry::page(mode, small, pa, prot(va, pa, flags))?;
            write_entry(self.mem, mode, entry_pa_at(mode, table.start(), i), e)?;
        }
        Ok(Entry::table(
            mode,
            large.level,
            table.start(),
            table_flags(mode, large.level, large.va),
        )?)
    }

    /// Splits the large page mapping `va` into a table of the next size
    /// (a 2/4 MiB page into ptes, a 1 GiB page into 2 MiB pmds) allocated
    /// from `frames`, whose entries get `prot(va, pa, large_flags)`, and
    /// installs it in place of the leaf. The flush carries the slot with
    /// the new table pointer. Fails with [`MapError::NotLarge`] if `va` is
    /// not mapped by a large page; on failure nothing changed.
    pub fn split<F: FrameSource + ?Sized>(
        &self,
        va: VirtAddr,
        frames: &F,
        prot: impl FnMut(VirtAddr, PhysAddr, EntryFlags) -> EntryFlags,
    ) -> Result<Flush<Slot>, MapError> {
        let slot = self.lookup(va)?;
        if !slot.is_large() {
            return Err(MapError::NotLarge {
                va,
                level: slot.level,
            });
        }
        let table = frames.alloc_table().map_err(MapError::OutOfMemory)?;
        let r = self
            .fill_split(&slot, table, prot)
            .and_then(|e| self.write(&slot, e));
        if r.is_err() {
            let _ = frames.free_table(table);
        }
        r
    }

    /// `revert_page`'s test: if `slot` points at a table whose entries all
    /// map, with the same flags (accessed and dirty aside), one physically
    /// contiguous page of the slot's large size, the large leaf that maps
    /// the same; `None` if not (or if the slot's level has no large pages).
    pub fn mergeable(&self, slot: &Slot) -> Result<Option<Entry>, MapError> {
        let mode = self.mode;
        let (Some(table), Some(size), Some(next)) = (
            slot.table(),
            mode.page_size_at(slot.level),
            mode.next_level(slot.level),
        ) else {
            return Ok(None);
        };
        let Some(small) = mode.page_size_at(next) else {
            return Ok(None);
        };
        self.check_table(next, table)?;
        let ad = EntryFlags::ACCESSED | EntryFlags::DIRTY;
        let mut first: Option<(u64, EntryFlags)> = None;
        let mut seen_ad = EntryFlags::empty();
        for i in 0..mode.entries(next) {
            let e = read_entry(self.mem, mode, entry_pa_at(mode, table, i))?;
            if !e.is_present() || !e.is_leaf(mode, next, true) {
                return Ok(None);
            }
            let pa = e.page_addr(mode, small).as_u64();
            let flags = e.flags(Some(small));
            seen_ad |= flags & ad;
            match first {
                None if pa & size.mask() == 0 => first = Some((pa, flags.difference(ad))),
                None => return Ok(None),
                Some((base, f)) => {
                    if pa != base + i as u64 * small.bytes() || flags.difference(ad) != f {
                        return Ok(None);
                    }
                }
            }
        }
        let Some((base, flags)) = first else {
            return Ok(None);
        };
        Ok(Some(Entry::page(
            mode,
            size,
            PhysAddr::new(base),
            flags | seen_ad,
        )?))
    }

    /// Merges the table under the `size` entry for `va` back into one large
    /// leaf if [`Cursor::mergeable`] says it can be. The replaced table is
    /// handed back only by the flush ([`Merged`]): it may be freed only
    /// once no TLB can walk it (`global_flush_tlb`'s deferred list).
    /// `Ok(None)` if the table is not uniform or `va` is already mapped by
    /// a `size` leaf; [`MapError::NotMapped`] if nothing is there.
    pub fn merge(&self, va: VirtAddr, size: PageSize) -> Result<Option<Flush<Merged>>, MapError> {
        let mode = self.mode;
        let level = mode
            .level_for(size)
            .ok_or(MapError::UnsupportedSize { mode, size })?;
        let slot = self.descend(va, level)?;
        if !slot.is_present() {
            return Err(MapError::NotMapped(va));
        }
        let Some(table) = slot.table().filter(|_| slot.level == level) else {
            return Ok(None);
        };
        let Some(large) = self.mergeable(&slot)? else {
            return Ok(None);
        };
        write_entry(self.mem, mode, slot.pa, large)?;
        Ok(Some(Flush::new(
            slot.va,
            slot.span(),
            Merged {
                slot: slot.with_entry(large),
                table: table.frame(),
            },
        )))
    }

    /// Undoes the tables an edit attached: every entry in `range` that
    /// points at one of `tables` is cleared and its table given back to
    /// `frames`, deepest first. For an all-or-nothing edit of many pages
    /// with a [`Tracked`](crate::Tracked) source (vmalloc: the tables
    /// cover only addresses no one else uses yet, so no other pgd can have
    /// copied a pointer to them). Returns how many tables were freed.
    pub fn unhook<F: FrameSource + ?Sized>(
        &self,
        range: Range<VirtAddr>,
        tables: &[Frame],
        frames: &F,
    ) -> Result<u64, MapError> {
        let mut ours = alloc::vec::Vec::new();
        for slot in self.entries(range) {
            let slot = slot?;
            if slot.table().is_some_and(|t| tables.contains(&t.frame())) {
                ours.push(slot);
            }
        }
        let mut freed = 0;
        for slot in ours.iter().rev() {
            let Some(table) = slot.table() else { continue };
            // No TLB caches a table only this edit could reach.
            self.write(slot, Entry::EMPTY)?.ignore();
            if frames.free_table(table.frame()).is_ok() {
                freed += 1;
            }
        }
        Ok(freed)
    }

    /// The present entries whose span meets `range`, table pointers before
    /// what they point at (see [`Entries`]). An end that truncates to 0 in
    /// the mode's linear-address width is the top of the address space
    /// (`0x1_0000_0000` on 32-bit, `1 << 48` on 4-level).
    pub fn entries(&self, range: Range<VirtAddr>) -> Entries<'m, P> {
        Entries::new(*self, range)
    }
}

/// What [`Cursor::merge`] did: the slot now holding the large leaf and the
/// table it replaced, to free after the flush.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Merged {
    /// The slot with its new (large leaf) value.
    pub slot: Slot,
    /// The replaced table, no longer reachable from this pgd.
    pub table: Frame,
}

#[path = "cursor_batch.rs"]
mod batch;
pub use batch::PartialMap;

#[cfg(all(test, feature = "std"))]
#[path = "cursor_tests.rs"]
mod tests;
