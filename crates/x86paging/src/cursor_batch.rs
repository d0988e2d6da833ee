//! Runs of 4 KiB pages through one [`Cursor`]: `map_ptes` and
//! `clear_ptes`, fork's `copy_pte_range` and exit's `zap_pte_range`.
//!
//! A page in the same pte table as the previous one is reached through that
//! table without walking again from the pgd (`pte_offset` once per pmd, as
//! Linux does under the page-table lock); each page keeps `map`'s checks
//! and its all-or-nothing rule, and a run that stops says how far it got
//! ([`PartialMap`]).

use super::{Attached, Cursor};
use crate::entry::{Entry, EntryFlags};
use crate::flush::{Flush, FrameSource};
use crate::map::MapError;
use crate::mode::{Level, PageSize, PagingMode};
use crate::table::write_entry;
use physmem::{MemError, PhysAddr, PhysMem, VirtAddr};

impl<P: PhysMem + ?Sized> Cursor<'_, P> {
    /// Maps 4 KiB pages, as `copy_pte_range` fills a child's pte tables:
    /// each `(va, pa, flags)` is what [`Cursor::map`] with
    /// [`PageSize::Size4K`] would map, with the same checks, but a page in
    /// the same pte table as the previous one is written through that
    /// table without walking again from the pgd (`pte_offset` once per
    /// pmd, as Linux does under the page-table lock). Pages in address
    /// order make one walk per pte table; any order is correct.
    ///
    /// The caller keeps the tables under these addresses from being freed
    /// for the duration of the call (it owns the address space, as fork
    /// owns the child's): the pte table's frame is checked live once, when
    /// it is reached.
    ///
    /// Each page is all or nothing, as `map` is. On failure the pages
    /// before the failing one stay mapped ([`PartialMap::mapped`] says how
    /// many), the failing one attached nothing, and the rest were not
    /// looked at. The flush covers the lowest to the highest page mapped
    /// and carries the count; every target entry was empty, so
    /// [`Flush::ignore`] is correct as for `map`.
    pub fn map_ptes<F, I>(&self, pages: I, frames: &F) -> Result<Flush<usize>, PartialMap>
    where
        F: FrameSource + ?Sized,
        I: IntoIterator<Item = (VirtAddr, PhysAddr, EntryFlags)>,
    {
        match self.mode {
            PagingMode::TwoLevel => self.map_ptes_w::<W32, F, I>(pages, frames),
            _ => self.map_ptes_w::<W64, F, I>(pages, frames),
        }
    }

    /// [`Cursor::map_ptes`] with the entry width `W` of the mode fixed at
    /// compile time, so the per-page path has no width dispatch.
    #[inline]
    fn map_ptes_w<W: Width, F, I>(&self, pages: I, frames: &F) -> Result<Flush<usize>, PartialMap>
    where
        F: FrameSource + ?Sized,
        I: IntoIterator<Item = (VirtAddr, PhysAddr, EntryFlags)>,
    {
        debug_assert_eq!(self.mode.entry_bytes(), W::BYTES);
        debug_assert_eq!(self.mode.ptrs_per_pte() as u64, W::PTRS_PER_PTE);
        let mut run: Option<(u64, PhysAddr)> = None;
        let mut mapped = 0usize;
        let (mut lo, mut last) = (u64::MAX, 0u64);
        for (va, pa, flags) in pages {
            if let Err(error) = self.map_pte_w::<W, F>(&mut run, va, pa, flags, frames) {
                return Err(PartialMap { mapped, error });
            }
            mapped += 1;
            lo = lo.min(va.as_u64());
            last = last.max(va.as_u64());
        }
        let len = match mapped {
            0 => 0,
            _ => (last - lo).saturating_add(PageSize::Size4K.bytes()),
        };
        Ok(Flush::new(VirtAddr::new(lo.min(last)), len, mapped))
    }

    /// `zap_pte_range` for mapped 4 KiB pages: clears the pte of each
    /// `va`, a pte table at a time as [`Cursor::map_ptes`] fills them (same
    /// caller contract); the old entries are not read. Fails with
    /// [`MapError::NotMapped`] at the first address whose walk does not
    /// end in a pte table (the earlier ptes stay cleared, [`PartialMap`]).
    /// The flush covers the lowest to the highest page and carries the
    /// count: the caller owes it unless no TLB can hold the addresses.
    pub fn clear_ptes<I>(&self, vas: I) -> Result<Flush<usize>, PartialMap>
    where
        I: IntoIterator<Item = VirtAddr>,
    {
        self.zap_ptes(vas.into_iter().map(|va| (va, ())), |_| {}, |_| {})
    }

    /// [`Cursor::clear_ptes`] that also hands each page's `T` to
    /// `cleared` right after its pte is cleared (where `zap_pte_range`
    /// drops the page's reference), and tells `reached` the first address
    /// it clears in each pte table it walks to (once per switch of table:
    /// how the caller learns which upper entries hold the tables). The
    /// `T` of a page whose pte was not cleared is not handed over.
    pub fn zap_ptes<T, I, C, U>(
        &self,
        pages: I,
        cleared: C,
        reached: U,
    ) -> Result<Flush<usize>, PartialMap>
    where
        I: IntoIterator<Item = (VirtAddr, T)>,
        C: FnMut(T),
        U: FnMut(VirtAddr),
    {
        match self.mode {
            PagingMode::TwoLevel => self.zap_ptes_w::<W32, T, I, C, U>(pages, cleared, reached),
            _ => self.zap_ptes_w::<W64, T, I, C, U>(pages, cleared, reached),
        }
    }

    /// [`Cursor::zap_ptes`] with the entry width fixed at compile time.
    #[inline]
    fn zap_ptes_w<W: Width, T, I, C, U>(
        &self,
        pages: I,
        mut cleared: C,
        mut reached: U,
    ) -> Result<Flush<usize>, PartialMap>
    where
        I: IntoIterator<Item = (VirtAddr, T)>,
        C: FnMut(T),
        U: FnMut(VirtAddr),
    {
        debug_assert_eq!(self.mode.entry_bytes(), W::BYTES);
        debug_assert_eq!(self.mode.ptrs_per_pte() as u64, W::PTRS_PER_PTE);
        let mut table: Option<(u64, PhysAddr)> = None;
        let mut done = 0usize;
        let (mut lo, mut last) = (u64::MAX, 0u64);
        for (va, t) in pages {
            let base = va.as_u64() & !(W::SPAN - 1);
            let at = match table {
                Some((b, t)) if b == base => Ok(W::pte_pa(t, va)),
                _ => self.descend(va, Level::Pte).and_then(|slot| {
                    if slot.level != Level::Pte {
                        return Err(MapError::NotMapped(va));
                    }
                    table = Some((base, slot.pa.frame().start()));
                    reached(va);
                    Ok(slot.pa)
                }),
            };
            let r = at.and_then(|at| Ok(W::store(self.mem, at, 0)?));
            if let Err(error) = r {
                return Err(PartialMap {
                    mapped: done,
                    error,
                });
            }
            cleared(t);
            done += 1;
            lo = lo.min(va.as_u64());
            last = last.max(va.as_u64());
        }
        let len = match done {
            0 => 0,
            _ => (last - lo).saturating_add(PageSize::Size4K.bytes()),
        };
        Ok(Flush::new(VirtAddr::new(lo.min(last)), len, done))
    }

    /// One page of [`Cursor::map_ptes`]; `run` is the pte table the
    /// previous page went into (the first linear address it covers, and
    /// where it is).
    #[inline]
    fn map_pte_w<W: Width, F: FrameSource + ?Sized>(
        &self,
        run: &mut Option<(u64, PhysAddr)>,
        va: VirtAddr,
        pa: PhysAddr,
        flags: EntryFlags,
        frames: &F,
    ) -> Result<(), MapError> {
        let mode = W::mode(self.mode);
        let size = PageSize::Size4K;
        if !mode.is_canonical(va) {
            return Err(MapError::NonCanonical(va));
        }
        if !va.is_aligned(size.bytes()) {
            return Err(MapError::Misaligned { va, size });
        }
        let leaf = Entry::page(mode, size, pa, flags | EntryFlags::PRESENT)?;
        let base = va.as_u64() & !(W::SPAN - 1);
        if let Some((b, table)) = *run {
            if b == base {
                let at = W::pte_pa(table, va);
                if Entry::from_raw(W::load(self.mem, at)?).is_present() {
                    return Err(MapError::AlreadyMapped {
                        va,
                        level: Level::Pte,
                    });
                }
                return Ok(W::store(self.mem, at, leaf.raw())?);
            }
        }
        let mut attached = Attached::default();
        let r = self
            .alloc_path_in(va, Level::Pte, frames, &mut attached)
            .and_then(|slot| {
                if slot.is_present() {
                    return Err(MapError::AlreadyMapped {
                        va,
                        level: slot.level,
                    });
                }
                write_entry(self.mem, mode, slot.pa, leaf)?;
                // A pte table is one page-aligned frame.
                Ok(slot.pa.frame().start())
            });
        match r {
            Ok(table) => {
                *run = Some((base, table));
                Ok(())
            }
            Err(e) => {
                attached.undo(self, frames);
                Err(e)
            }
        }
    }
}

/// The width of a mode's entries, fixed at compile time for the page-run
/// loops: 4 bytes and 1024 ptes a table on 2-level, 8 bytes and 512 in
/// every other mode. Loads and stores are [`crate::table::read_entry`]'s and
/// [`write_entry`]'s single atomic accesses of that width.
trait Width {
    /// Bytes per entry.
    const BYTES: u64;
    /// Entries per pte table.
    const PTRS_PER_PTE: u64;
    /// Bytes of address space one pte table maps.
    const SPAN: u64 = Self::PTRS_PER_PTE * PAGE_4K;
    /// The mode, as far as the width tells it (2-level for 4 bytes).
    fn mode(mode: PagingMode) -> PagingMode;
    /// Reads the entry at `pa`.
    fn load<P: PhysMem + ?Sized>(mem: &P, pa: PhysAddr) -> Result<u64, MemError>;
    /// Writes `v` at `pa` (`set_pte_atomic`).
    fn store<P: PhysMem + ?Sized>(mem: &P, pa: PhysAddr, v: u64) -> Result<(), MemError>;
    /// `pte_offset`: the entry for `va` in the pte table at `table`.
    #[inline]
    fn pte_pa(table: PhysAddr, va: VirtAddr) -> PhysAddr {
        let index = (va.as_u64() >> PageSize::Size4K.shift()) & (Self::PTRS_PER_PTE - 1);
        PhysAddr::new(table.as_u64() + index * Self::BYTES)
    }
}

const PAGE_4K: u64 = 4096;

/// 2-level entries.
struct W32;
/// PAE and long-mode entries.
struct W64;

impl Width for W32 {
    const BYTES: u64 = 4;
    const PTRS_PER_PTE: u64 = 1024;
    #[inline]
    fn mode(_: PagingMode) -> PagingMode {
        PagingMode::TwoLevel
    }
    #[inline]
    fn load<P: PhysMem + ?Sized>(mem: &P, pa: PhysAddr) -> Result<u64, MemError> {
        mem.load_u32(pa).map(u64::from)
    }
    #[inline]
    fn store<P: PhysMem + ?Sized>(mem: &P, pa: PhysAddr, v: u64) -> Result<(), MemError> {
        // The encoders never set bits above 31 on 2-level (`write_entry`).
        mem.store_u32(pa, v as u32)
    }
}

impl Width for W64 {
    const BYTES: u64 = 8;
    const PTRS_PER_PTE: u64 = 512;
    #[inline]
    fn mode(mode: PagingMode) -> PagingMode {
        mode
    }
    #[inline]
    fn load<P: PhysMem + ?Sized>(mem: &P, pa: PhysAddr) -> Result<u64, MemError> {
        mem.load_u64(pa)
    }
    #[inline]
    fn store<P: PhysMem + ?Sized>(mem: &P, pa: PhysAddr, v: u64) -> Result<(), MemError> {
        mem.store_u64(pa, v)
    }
}

/// Why [`Cursor::map_ptes`] (or [`Cursor::clear_ptes`]) stopped, and how
/// far it got: the first `mapped` pages are done, the next one failed with
/// `error` (and, for `map_ptes`, attached nothing).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("mapping page {mapped} of a run failed")]
pub struct PartialMap {
    /// Pages mapped before the failure (they stay mapped).
    pub mapped: usize,
    /// Why the next page could not be mapped.
    #[source]
    pub error: MapError,
}
