//! What a page-table edit owes the TLB, and where its tables come from.
//!
//! Changing a present entry leaves the old translation in every TLB that
//! cached it until someone runs `invlpg` (or reloads CR3): the kernel's
//! `flush_tlb_kernel_range`/`__flush_tlb_one` after `set_pte`. Forgetting
//! that flush is the classic page-table bug, so every [`Cursor`](crate::Cursor)
//! edit returns a [`Flush`] token marked `#[must_use]`, as the `x86_64`
//! crate's `MapperFlush` is: dropping it is a compiler warning, and the
//! caller must say which it means, [`Flush::flush`] through its own
//! [`TlbFlush`] (the simulator's software TLB, a kernel's `invlpg`) or
//! [`Flush::ignore`] (paging not live yet, or a mapping into an empty slot,
//! which x86 never caches).
//!
//! A token may carry a payload that must not be used before the flush: a
//! merge hands back the replaced pte page only through
//! [`Flush::flush`]/[`Flush::ignore`], the `global_flush_tlb` rule that a
//! page table is freed only after every TLB has dropped it.
//!
//! [`FrameSource`] is the narrow allocator interface a cursor needs for
//! missing intermediate tables (`pmd_alloc`, `pte_alloc_kernel`);
//! [`TableFrames`] is it over [`PhysMemory`] with an [`Owner`] tag, and
//! [`Tracked`] remembers what it handed out, so an edit of many pages
//! (`vmalloc`) can be undone as a whole with
//! [`Cursor::unhook`](crate::Cursor::unhook).

use alloc::vec::Vec;
use core::cell::RefCell;
use physmem::{AllocError, Frame, FreeError, Owner, PhysMem, PhysMemory, VirtAddr, PAGE_SIZE};

/// Above this many pages [`TlbFlush::flush_range`] flushes everything
/// (Linux's `tlb_single_page_flush_ceiling`, 33).
pub const FLUSH_CEILING_PAGES: u64 = 33;

/// A TLB (or all of them) that can drop translations.
pub trait TlbFlush {
    /// `invlpg`: drops every TLB entry for the page holding `va`, whatever
    /// its size.
    fn flush_page(&self, va: VirtAddr);
    /// `flush_tlb_all`: drops every non-global and global entry.
    fn flush_all(&self);
    /// `flush_tlb_kernel_range(start, start + len)`: one `invlpg` per 4 KiB
    /// page up to [`FLUSH_CEILING_PAGES`], everything beyond.
    fn flush_range(&self, start: VirtAddr, len: u64) {
        let pages = len.div_ceil(PAGE_SIZE);
        if pages > FLUSH_CEILING_PAGES {
            self.flush_all();
            return;
        }
        for i in 0..pages {
            self.flush_page(VirtAddr::new(start.as_u64().wrapping_add(i * PAGE_SIZE)));
        }
    }
}

impl<T: TlbFlush + ?Sized> TlbFlush for &T {
    fn flush_page(&self, va: VirtAddr) {
        (**self).flush_page(va)
    }
    fn flush_all(&self) {
        (**self).flush_all()
    }
    fn flush_range(&self, start: VirtAddr, len: u64) {
        (**self).flush_range(start, len)
    }
}

/// The TLB flush an edit owes, with an optional payload released by it.
///
/// Obtained from [`Cursor`](crate::Cursor)'s `map`, `unmap`, `protect`,
/// `write`, `split` and `merge`; consumed by [`Flush::flush`] or
/// [`Flush::ignore`].
#[must_use = "the TLB may still hold the old translation: call .flush(&tlb) or .ignore()"]
#[derive(Debug, PartialEq, Eq)]
pub struct Flush<T = ()> {
    start: VirtAddr,
    len: u64,
    payload: T,
}

impl<T> Flush<T> {
    pub(crate) const fn new(start: VirtAddr, len: u64, payload: T) -> Self {
        Flush {
            start,
            len,
            payload,
        }
    }
    /// First address whose translation changed.
    pub const fn start(&self) -> VirtAddr {
        self.start
    }
    /// Bytes of address space whose translation changed (the span of the
    /// entry written: 4 KiB for a pte, 2/4 MiB or 1 GiB for a large page or
    /// a table pointer).
    pub const fn len(&self) -> u64 {
        self.len
    }
    /// True if no translation changed (a zero-length range).
    pub const fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// The payload, to look at before the flush (e.g. the entry a split
    /// wrote, for `set_pmd_pte` to copy into other pgds first).
    pub const fn payload(&self) -> &T {
        &self.payload
    }
    /// Flushes the range from `tlb` and returns the payload.
    pub fn flush<F: TlbFlush + ?Sized>(self, tlb: &F) -> T {
        if self.len == PAGE_SIZE {
            tlb.flush_page(self.start);
        } else if self.len != 0 {
            tlb.flush_range(self.start, self.len);
        }
        self.payload
    }
    /// Skips the flush on purpose and returns the payload: no TLB can hold
    /// the old translation (paging is not on yet, the entry was not
    /// present, or the caller flushes everything itself later, as
    /// `global_flush_tlb` does for a whole `change_page_attr`).
    pub fn ignore(self) -> T {
        self.payload
    }
}

/// Where a cursor gets zeroed frames for missing intermediate tables, and
/// gives them back when an edit is rolled back.
pub trait FrameSource {
    /// One zeroed 4 KiB frame for a page table.
    fn alloc_table(&self) -> Result<Frame, AllocError>;
    /// Gives back a table frame `alloc_table` returned (rollback only: no
    /// entry points at it any more).
    fn free_table(&self, frame: Frame) -> Result<(), FreeError>;
}

impl<S: FrameSource + ?Sized> FrameSource for &S {
    fn alloc_table(&self) -> Result<Frame, AllocError> {
        (**self).alloc_table()
    }
    fn free_table(&self, frame: Frame) -> Result<(), FreeError> {
        (**self).free_table(frame)
    }
}

/// [`FrameSource`] over the buddy allocator, tagging each table frame with
/// an [`Owner`] (`UserTable` for a task's tables, `KernelTable` for
/// swapper's).
pub struct TableFrames<'m, M> {
    pm: &'m PhysMemory<M>,
    owner: Owner,
}

impl<M> Clone for TableFrames<'_, M> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<M> Copy for TableFrames<'_, M> {}

impl<M> core::fmt::Debug for TableFrames<'_, M> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("TableFrames")
            .field("owner", &self.owner)
            .finish_non_exhaustive()
    }
}

impl<'m, M: PhysMem> TableFrames<'m, M> {
    /// Tables from `pm`, tagged `owner`.
    pub const fn new(pm: &'m PhysMemory<M>, owner: Owner) -> Self {
        TableFrames { pm, owner }
    }
}

impl<M: PhysMem> FrameSource for TableFrames<'_, M> {
    fn alloc_table(&self) -> Result<Frame, AllocError> {
        self.pm.alloc_zeroed_frame(self.owner)
    }
    fn free_table(&self, frame: Frame) -> Result<(), FreeError> {
        self.pm.free_frame(frame)
    }
}

/// A [`FrameSource`] that records the tables it hands out (and forgets
/// those given back), for an all-or-nothing edit spanning several calls:
/// on failure, [`Cursor::unhook`](crate::Cursor::unhook) with
/// [`Tracked::tables`] takes them all out again.
#[derive(Debug)]
pub struct Tracked<F> {
    inner: F,
    tables: RefCell<Vec<Frame>>,
}

impl<F: FrameSource> Tracked<F> {
    /// Records what `inner` hands out from now on.
    pub const fn new(inner: F) -> Self {
        Tracked {
            inner,
            tables: RefCell::new(Vec::new()),
        }
    }
    /// The tables handed out and not given back, oldest first.
    pub fn tables(&self) -> Vec<Frame> {
        self.tables.borrow().clone()
    }
}

impl<F: FrameSource> FrameSource for Tracked<F> {
    fn alloc_table(&self) -> Result<Frame, AllocError> {
        let f = self.inner.alloc_table()?;
        self.tables.borrow_mut().push(f);
        Ok(f)
    }
    fn free_table(&self, frame: Frame) -> Result<(), FreeError> {
        self.inner.free_table(frame)?;
        self.tables.borrow_mut().retain(|&t| t != frame);
        Ok(())
    }
}
