//! Per-frame metadata: the simulator's `struct page`.
//!
//! One [`Page`] per 4 KiB frame, in a table indexed by pfn (`mem_map`). It
//! carries what the seed patch and `change_page_attr` rely on: a reference
//! count (`page_count`, which cpa uses to count non-default ptes in a split
//! pte page), flags, an owner tag for frame accounting, and an `lru` list link
//! (`pgd_list` on 2-level threads every pgd's page through it; the buddy
//! allocator threads free blocks through it while the frame is free).
//!
//! Fields are atomics so the table can be shared; which lock makes a
//! read-modify-write sequence safe is documented at each user (the buddy's
//! zone lock for free lists, `pgd_lock` for `pgd_list`, and so on).

use crate::addr::Frame;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// "No frame" in list links.
pub const NIL: u64 = u64::MAX;

/// Page flag: the frame is free (in the buddy allocator). Any table entry
/// that leads here is dangling.
pub const PG_FREE: u32 = 1 << 0;
/// Page flag: head of a free buddy block; `private` holds the block's order.
pub const PG_BUDDY: u32 = 1 << 1;
/// Page flag: the frame is linked on some `FrameList` through `lru`.
pub const PG_LRU: u32 = 1 << 2;
/// Page flag: reserved at boot, never given to the allocator.
pub const PG_RESERVED: u32 = 1 << 3;
/// Page flag: head of an allocated block; `private` holds its order.
pub const PG_HEAD: u32 = 1 << 4;
/// Page flag: freed with poisoning on, so filled with `POISON_FREE`; the
/// poison is checked when the frame is allocated again (`crate::poison`).
pub const PG_POISON: u32 = 1 << 5;
/// Page flag: freed all zero (`free_zeroed_frame`, poisoning off), so
/// `alloc_zeroed_frame` need not clear it again; consumed by the next
/// allocation.
pub const PG_ZERO: u32 = 1 << 6;

/// Who owns a frame, for frame accounting and leak checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u32)]
pub enum Owner {
    /// In the buddy allocator.
    Free = 0,
    /// Reserved at boot (low memory, the kernel image).
    Reserved = 1,
    /// A page table owned by the kernel's reference tables (`swapper_pg_dir`,
    /// the shared kernel pmd, split pte pages, vmalloc tables).
    KernelTable = 2,
    /// A page table owned by one address space (user pmds and ptes).
    UserTable = 3,
    /// A slab page of an object cache (pgds, pmds and other objects).
    Slab = 4,
    /// Data of a user address space (anonymous or file pages).
    UserData = 5,
    /// Kernel data (vmalloc backing pages and the like).
    KernelData = 6,
    /// Slab-side: a page used by an unpatched ("uncached") pgd allocation.
    PgdPage = 7,
}

impl Owner {
    /// Number of owner kinds (size of per-owner counter arrays).
    pub const COUNT: usize = 8;
    /// All owners, in counter order.
    pub const ALL: [Owner; Owner::COUNT] = [
        Owner::Free,
        Owner::Reserved,
        Owner::KernelTable,
        Owner::UserTable,
        Owner::Slab,
        Owner::UserData,
        Owner::KernelData,
        Owner::PgdPage,
    ];
    /// Decodes a stored tag.
    pub fn from_u32(v: u32) -> Option<Owner> {
        Owner::ALL.get(v as usize).copied()
    }
    /// Short name for reports.
    pub fn name(self) -> &'static str {
        match self {
            Owner::Free => "free",
            Owner::Reserved => "reserved",
            Owner::KernelTable => "kernel-table",
            Owner::UserTable => "user-table",
            Owner::Slab => "slab",
            Owner::UserData => "user-data",
            Owner::KernelData => "kernel-data",
            Owner::PgdPage => "pgd-page",
        }
    }
}

/// Metadata of one frame (`struct page`).
#[derive(Debug)]
pub struct Page {
    /// `page_count`: references; 1 when allocated. `change_page_attr` uses
    /// the count of a split pte page to know when it can revert.
    pub count: AtomicU32,
    /// `PG_*` flags.
    pub flags: AtomicU32,
    /// [`Owner`] tag.
    pub owner: AtomicU32,
    /// `page->private`: the buddy allocator's word — the order of a free or
    /// allocated block head. Not for the owner's use.
    pub private: AtomicU64,
    /// `page->index`: the owner's word (a pgd's generation ticket, …).
    /// Zeroed when the frame is allocated.
    pub index: AtomicU64,
    /// `lru.next` as a pfn, or [`NIL`].
    pub lru_next: AtomicU64,
    /// `lru.prev` as a pfn, or [`NIL`].
    pub lru_prev: AtomicU64,
}

impl Page {
    pub(crate) fn new() -> Self {
        Page {
            count: AtomicU32::new(0),
            flags: AtomicU32::new(0),
            owner: AtomicU32::new(Owner::Free as u32),
            private: AtomicU64::new(0),
            index: AtomicU64::new(0),
            lru_next: AtomicU64::new(NIL),
            lru_prev: AtomicU64::new(NIL),
        }
    }

    /// Current owner tag.
    pub fn owner(&self) -> Owner {
        Owner::from_u32(self.owner.load(Ordering::Acquire)).unwrap_or(Owner::Reserved)
    }

    /// True if the frame is free.
    pub fn is_free(&self) -> bool {
        self.flags.load(Ordering::Acquire) & PG_FREE != 0
    }

    /// `page_count(page)`.
    pub fn page_count(&self) -> u32 {
        self.count.load(Ordering::Acquire)
    }

    /// `get_page(page)`: increments the count and returns the new value.
    pub fn get(&self) -> u32 {
        self.count.fetch_add(1, Ordering::AcqRel) + 1
    }

    /// `put_page`-like decrement without freeing; returns the new value.
    pub fn put(&self) -> u32 {
        self.count.fetch_sub(1, Ordering::AcqRel).wrapping_sub(1)
    }
}

/// `mem_map`: the metadata of every frame of RAM.
#[derive(Debug)]
pub struct PageTable {
    pages: alloc::vec::Vec<Page>,
}

impl PageTable {
    pub(crate) fn new(frames: u64) -> Self {
        // Never truncate: 2^32 frames (16 TiB) is beyond any 32-bit host's
        // `mem_map`, and a short one would silently drop the high frames.
        let frames = usize::try_from(frames).expect("mem_map: more frames than usize can count");
        let mut pages = alloc::vec::Vec::with_capacity(frames);
        pages.resize_with(frames, Page::new);
        PageTable { pages }
    }
    /// Number of frames described.
    pub fn len(&self) -> u64 {
        self.pages.len() as u64
    }
    /// True if no frames are described.
    pub fn is_empty(&self) -> bool {
        self.pages.is_empty()
    }
    /// `pfn_to_page`, or `None` outside RAM.
    pub fn get(&self, frame: Frame) -> Option<&Page> {
        self.pages.get(usize::try_from(frame.pfn()).ok()?)
    }
}
