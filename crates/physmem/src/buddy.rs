//! The frame allocator: a binary buddy allocator over `mem_map`, with
//! accounting, poisoning of freed frames, and fault injection.
//!
//! [`PhysMemory`] is the simulated machine's RAM plus its page allocator —
//! `alloc_pages`/`__free_pages` of one zone, orders `0..=MAX_ORDER`. Free
//! blocks are threaded through `Page::lru` exactly like the kernel's
//! `free_area[order].free_list`, and a freed block is filled with
//! [`POISON_FREE`] and flagged [`PG_FREE`], so a page-table walk that reaches
//! it is reported as a dangling table rather than read as data.

use crate::addr::{Frame, PhysAddr, PAGE_SIZE};
use crate::fault::FaultInjector;
use crate::list::FrameList;
use crate::mem::{FrameState, MemError, PhysMem};
use crate::page::{Owner, Page, PageTable, PG_BUDDY, PG_FREE, PG_HEAD, PG_RESERVED};
use core::sync::atomic::{AtomicU64, Ordering};

/// Largest buddy order: blocks of `2^MAX_ORDER` frames (4 MiB).
pub const MAX_ORDER: u32 = 10;
/// Byte written over every freed frame (the slab's `POISON_FREE`).
pub const POISON_FREE: u8 = 0x6b;

/// Why a frame allocation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AllocError {
    /// No free block of this order or larger.
    OutOfMemory {
        /// The order asked for.
        order: u32,
    },
    /// The fault injector failed this allocation.
    Injected {
        /// The allocation's sequence number.
        seq: u64,
    },
    /// The order is above [`MAX_ORDER`].
    BadOrder(u32),
}

impl core::fmt::Display for AllocError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            AllocError::OutOfMemory { order } => write!(f, "out of memory (order {order})"),
            AllocError::Injected { seq } => write!(f, "injected allocation failure (#{seq})"),
            AllocError::BadOrder(o) => write!(f, "order {o} is above MAX_ORDER {MAX_ORDER}"),
        }
    }
}

/// Why a free was refused (the frames are left untouched).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FreeError {
    /// The frame is outside RAM.
    NoSuchFrame(Frame),
    /// The frame is already free.
    DoubleFree(Frame),
    /// The frame is not the head of an allocated block.
    NotHead(Frame),
    /// The block was allocated with another order.
    WrongOrder {
        /// The frame.
        frame: Frame,
        /// Its order at allocation.
        allocated: u32,
        /// The order given to free.
        freed: u32,
    },
    /// The frame is reserved and was never allocated.
    Reserved(Frame),
}

impl core::fmt::Display for FreeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            FreeError::NoSuchFrame(fr) => write!(f, "free of {fr}: outside RAM"),
            FreeError::DoubleFree(fr) => write!(f, "double free of {fr}"),
            FreeError::NotHead(fr) => write!(f, "free of {fr}: not the head of a block"),
            FreeError::WrongOrder {
                frame,
                allocated,
                freed,
            } => write!(
                f,
                "free of {frame} with order {freed}, allocated with order {allocated}"
            ),
            FreeError::Reserved(fr) => write!(f, "free of reserved {fr}"),
        }
    }
}

/// Frame accounting: how many frames each owner holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FrameStats {
    /// Frames of RAM.
    pub total: u64,
    /// Frames per [`Owner`], indexed by `Owner as usize`.
    pub by_owner: [u64; Owner::COUNT],
}

impl FrameStats {
    /// Frames held by `owner`.
    pub fn of(&self, owner: Owner) -> u64 {
        self.by_owner[owner as usize]
    }
    /// Frames in the buddy allocator.
    pub fn free(&self) -> u64 {
        self.of(Owner::Free)
    }
    /// Frames not free.
    pub fn used(&self) -> u64 {
        self.total - self.free()
    }
}

/// The zone's free lists (`struct free_area[]`).
struct FreeArea {
    lists: [FrameList; MAX_ORDER as usize + 1],
}

/// Simulated physical memory with its page allocator.
pub struct PhysMemory<M> {
    mem: M,
    pages: PageTable,
    /// `zone->lock`: protects the free lists and the `PG_BUDDY`/`private`
    /// state of free block heads. Held only inside alloc and free.
    zone: spin::Mutex<FreeArea>,
    /// Frames per owner (updated with the zone lock held, read without it).
    owners: [AtomicU64; Owner::COUNT],
    faults: FaultInjector,
}

#[cfg(feature = "std")]
impl PhysMemory<crate::ram::Ram> {
    /// Maps `size` bytes of RAM and gives everything above the first 1 MiB
    /// (the BIOS/real-mode area, reserved as on a PC) to the allocator.
    pub fn new(size: u64) -> Result<Self, crate::ram::RamError> {
        Ok(Self::with_memory(crate::ram::Ram::new(size)?, 1 << 20))
    }
}

impl<M: PhysMem + crate::mem::DirectMap> PhysMemory<M> {
    /// `__va` through the memory's direct map.
    pub fn ptr_of(&self, pa: PhysAddr) -> Option<core::ptr::NonNull<u8>> {
        self.mem.ptr_of(pa)
    }

    /// `__pa` through the memory's direct map.
    pub fn pa_of(&self, p: core::ptr::NonNull<u8>) -> Option<PhysAddr> {
        self.mem.pa_of(p)
    }
}

impl<M: PhysMem> PhysMemory<M> {
    /// Takes `mem`, reserves `[0, reserved)` and frees the rest into the
    /// allocator in the largest naturally aligned blocks.
    pub fn with_memory(mem: M, reserved: u64) -> Self {
        let frames = mem.size() / PAGE_SIZE;
        let pages = PageTable::new(frames);
        let reserved_frames = reserved.div_ceil(PAGE_SIZE).min(frames);
        let owners: [AtomicU64; Owner::COUNT] = Default::default();
        for pfn in 0..reserved_frames {
            if let Some(p) = pages.get(Frame::from_pfn(pfn)) {
                p.flags.store(PG_RESERVED, Ordering::Relaxed);
                p.owner.store(Owner::Reserved as u32, Ordering::Relaxed);
                p.count.store(1, Ordering::Relaxed);
            }
        }
        owners[Owner::Reserved as usize].store(reserved_frames, Ordering::Relaxed);
        let pm = PhysMemory {
            mem,
            pages,
            zone: spin::Mutex::new(FreeArea {
                lists: Default::default(),
            }),
            owners,
            faults: FaultInjector::new(),
        };
        {
            let mut area = pm.zone.lock();
            let mut pfn = reserved_frames;
            while pfn < frames {
                let mut order = MAX_ORDER;
                while order > 0 && (pfn % (1 << order) != 0 || pfn + (1 << order) > frames) {
                    order -= 1;
                }
                for i in 0..(1u64 << order) {
                    if let Some(p) = pm.pages.get(Frame::from_pfn(pfn + i)) {
                        p.flags.store(PG_FREE, Ordering::Relaxed);
                    }
                }
                pm.push_free(&mut area, Frame::from_pfn(pfn), order);
                pm.owners[Owner::Free as usize].fetch_add(1 << order, Ordering::Relaxed);
                pfn += 1 << order;
            }
        }
        pm
    }

    /// The underlying memory.
    pub fn mem(&self) -> &M {
        &self.mem
    }

    /// `mem_map`.
    pub fn pages(&self) -> &PageTable {
        &self.pages
    }

    /// `pfn_to_page`.
    pub fn page(&self, frame: Frame) -> Option<&Page> {
        self.pages.get(frame)
    }

    /// The fault injector consulted by every allocation.
    pub fn faults(&self) -> &FaultInjector {
        &self.faults
    }

    /// Current frame accounting.
    pub fn stats(&self) -> FrameStats {
        let mut by_owner = [0; Owner::COUNT];
        for (slot, c) in by_owner.iter_mut().zip(&self.owners) {
            *slot = c.load(Ordering::Acquire);
        }
        FrameStats {
            total: self.pages.len(),
            by_owner,
        }
    }

    /// Frames in the allocator.
    pub fn free_frames(&self) -> u64 {
        self.owners[Owner::Free as usize].load(Ordering::Acquire)
    }

    fn push_free(&self, area: &mut FreeArea, head: Frame, order: u32) {
        if let Some(p) = self.pages.get(head) {
            p.private.store(order as u64, Ordering::Relaxed);
            p.flags.fetch_or(PG_BUDDY, Ordering::Relaxed);
        }
        // The head is free and not linked anywhere else, so add cannot fail.
        let _ = area.lists[order as usize].add(&self.pages, head);
    }

    /// `alloc_pages(order)`: `2^order` contiguous frames owned by `owner`,
    /// with `page_count` 1 on the head. Contents are whatever was there
    /// (poison, for a frame that was freed).
    pub fn alloc_pages(&self, order: u32, owner: Owner) -> Result<Frame, AllocError> {
        if order > MAX_ORDER {
            return Err(AllocError::BadOrder(order));
        }
        if let Some(seq) = self.faults.should_fail(order, owner) {
            return Err(AllocError::Injected { seq });
        }
        let mut area = self.zone.lock();
        let mut o = order;
        while o <= MAX_ORDER && area.lists[o as usize].is_empty() {
            o += 1;
        }
        if o > MAX_ORDER {
            return Err(AllocError::OutOfMemory { order });
        }
        let head = area.lists[o as usize]
            .pop(&self.pages)
            .ok_or(AllocError::OutOfMemory { order })?;
        // Split: give back the upper half at each lower order (`expand`).
        while o > order {
            o -= 1;
            self.push_free(&mut area, head.add(1 << o), o);
        }
        for i in 0..(1u64 << order) {
            if let Some(p) = self.pages.get(head.add(i)) {
                p.flags.store(0, Ordering::Relaxed);
                p.owner.store(owner as u32, Ordering::Relaxed);
                p.count.store(0, Ordering::Relaxed);
                p.private.store(0, Ordering::Relaxed);
                p.index.store(0, Ordering::Relaxed);
            }
        }
        if let Some(p) = self.pages.get(head) {
            p.flags.store(PG_HEAD, Ordering::Relaxed);
            p.private.store(order as u64, Ordering::Relaxed);
            p.count.store(1, Ordering::Release);
        }
        self.owners[Owner::Free as usize].fetch_sub(1 << order, Ordering::AcqRel);
        self.owners[owner as usize].fetch_add(1 << order, Ordering::AcqRel);
        Ok(head)
    }

    /// One frame.
    pub fn alloc_frame(&self, owner: Owner) -> Result<Frame, AllocError> {
        self.alloc_pages(0, owner)
    }

    /// One zeroed frame (`get_zeroed_page`).
    pub fn alloc_zeroed_frame(&self, owner: Owner) -> Result<Frame, AllocError> {
        let f = self.alloc_pages(0, owner)?;
        // A freshly allocated frame is inside RAM, so zeroing cannot fail;
        // if it did, give the frame back and report out-of-memory.
        if self.mem.zero_frame(f).is_err() {
            let _ = self.free_pages(f, 0);
            return Err(AllocError::OutOfMemory { order: 0 });
        }
        Ok(f)
    }

    /// Re-tags an allocated block (e.g. a frame handed from one layer to another).
    pub fn set_owner(&self, head: Frame, order: u32, owner: Owner) {
        let _zone = self.zone.lock();
        for i in 0..(1u64 << order) {
            if let Some(p) = self.pages.get(head.add(i)) {
                let old = p.owner();
                if old == owner || p.is_free() {
                    continue;
                }
                p.owner.store(owner as u32, Ordering::Release);
                self.owners[old as usize].fetch_sub(1, Ordering::AcqRel);
                self.owners[owner as usize].fetch_add(1, Ordering::AcqRel);
            }
        }
    }

    /// `__free_pages(page, order)`: poisons the block, marks it free and
    /// merges it with free buddies. A bad free changes nothing.
    pub fn free_pages(&self, head: Frame, order: u32) -> Result<(), FreeError> {
        let p = self.pages.get(head).ok_or(FreeError::NoSuchFrame(head))?;
        let flags = p.flags.load(Ordering::Acquire);
        if flags & PG_FREE != 0 {
            return Err(FreeError::DoubleFree(head));
        }
        if flags & PG_RESERVED != 0 {
            return Err(FreeError::Reserved(head));
        }
        if flags & PG_HEAD == 0 {
            return Err(FreeError::NotHead(head));
        }
        let allocated = p.private.load(Ordering::Acquire) as u32;
        if allocated != order {
            return Err(FreeError::WrongOrder {
                frame: head,
                allocated,
                freed: order,
            });
        }
        // Poison while we still own the block: the poison is what a buggy
        // walker would read if it ignored the PG_FREE flag.
        let _ = self.mem.fill(head.start(), PAGE_SIZE << order, POISON_FREE);
        let mut area = self.zone.lock();
        // Re-check under the zone lock: a racing double free loses here.
        if p.flags.load(Ordering::Acquire) & PG_FREE != 0 {
            return Err(FreeError::DoubleFree(head));
        }
        let mut counts = [0u64; Owner::COUNT];
        for i in 0..(1u64 << order) {
            if let Some(q) = self.pages.get(head.add(i)) {
                counts[q.owner() as usize] += 1;
                q.flags.store(PG_FREE, Ordering::Release);
                q.owner.store(Owner::Free as u32, Ordering::Relaxed);
                q.count.store(0, Ordering::Relaxed);
            }
        }
        for (o, c) in counts.iter().enumerate() {
            self.owners[o].fetch_sub(*c, Ordering::AcqRel);
        }
        self.owners[Owner::Free as usize].fetch_add(1 << order, Ordering::AcqRel);
        // Merge with the buddy while it is a free head of the same order.
        let mut pfn = head.pfn();
        let mut o = order;
        while o < MAX_ORDER {
            let buddy = Frame::from_pfn(pfn ^ (1 << o));
            let Some(b) = self.pages.get(buddy) else {
                break;
            };
            let bf = b.flags.load(Ordering::Acquire);
            if bf & PG_BUDDY == 0 || b.private.load(Ordering::Acquire) != o as u64 {
                break;
            }
            if area.lists[o as usize].del(&self.pages, buddy).is_err() {
                break;
            }
            b.flags.fetch_and(!PG_BUDDY, Ordering::Relaxed);
            pfn &= !(1 << o);
            o += 1;
        }
        self.push_free(&mut area, Frame::from_pfn(pfn), o);
        Ok(())
    }

    /// Frees one frame.
    pub fn free_frame(&self, frame: Frame) -> Result<(), FreeError> {
        self.free_pages(frame, 0)
    }
}

impl<M: PhysMem> PhysMem for PhysMemory<M> {
    fn size(&self) -> u64 {
        self.mem.size()
    }
    fn load_u32(&self, pa: PhysAddr) -> Result<u32, MemError> {
        self.mem.load_u32(pa)
    }
    fn load_u64(&self, pa: PhysAddr) -> Result<u64, MemError> {
        self.mem.load_u64(pa)
    }
    fn store_u32(&self, pa: PhysAddr, v: u32) -> Result<(), MemError> {
        self.mem.store_u32(pa, v)
    }
    fn store_u64(&self, pa: PhysAddr, v: u64) -> Result<(), MemError> {
        self.mem.store_u64(pa, v)
    }
    fn frame_state(&self, frame: Frame) -> FrameState {
        match self.pages.get(frame) {
            None => FrameState::Unmanaged,
            Some(p) if p.is_free() => FrameState::Freed,
            Some(_) => FrameState::Live,
        }
    }
    fn fill(&self, pa: PhysAddr, len: u64, byte: u8) -> Result<(), MemError> {
        self.mem.fill(pa, len, byte)
    }
    fn copy(&self, dst: PhysAddr, src: PhysAddr, len: u64) -> Result<(), MemError> {
        self.mem.copy(dst, src, len)
    }
}

#[cfg(all(test, feature = "std"))]
mod tests {
    use super::*;
    use crate::ram::MIN_RAM;

    fn pm() -> PhysMemory<crate::ram::Ram> {
        PhysMemory::new(MIN_RAM).unwrap()
    }

    #[test]
    fn alloc_free_accounting_and_merge() {
        let pm = pm();
        let total_free = pm.free_frames();
        assert_eq!(pm.stats().of(Owner::Reserved), 256);
        assert_eq!(total_free + 256, MIN_RAM / PAGE_SIZE);
        let a = pm.alloc_frame(Owner::Slab).unwrap();
        let b = pm.alloc_pages(3, Owner::UserTable).unwrap();
        assert!(b.pfn() % 8 == 0);
        assert_eq!(pm.stats().of(Owner::Slab), 1);
        assert_eq!(pm.stats().of(Owner::UserTable), 8);
        assert_eq!(pm.frame_state(a), FrameState::Live);
        pm.free_frame(a).unwrap();
        assert_eq!(pm.frame_state(a), FrameState::Freed);
        assert_eq!(pm.load_u32(a.start()).unwrap(), 0x6b6b_6b6b);
        assert_eq!(pm.free_frame(a), Err(FreeError::DoubleFree(a)));
        assert_eq!(
            pm.free_pages(b, 2),
            Err(FreeError::WrongOrder {
                frame: b,
                allocated: 3,
                freed: 2
            })
        );
        pm.free_pages(b, 3).unwrap();
        assert_eq!(pm.free_frames(), total_free);
        // Everything merged back: a max-order block is available again.
        let big = pm.alloc_pages(MAX_ORDER, Owner::KernelData).unwrap();
        pm.free_pages(big, MAX_ORDER).unwrap();
        assert_eq!(
            pm.free_pages(Frame::from_pfn(0), 0),
            Err(FreeError::Reserved(Frame::from_pfn(0)))
        );
    }

    #[test]
    fn exhaustion_and_injection() {
        let pm = pm();
        let mut got = std::vec::Vec::new();
        loop {
            match pm.alloc_frame(Owner::UserData) {
                Ok(f) => got.push(f),
                Err(e) => {
                    assert_eq!(e, AllocError::OutOfMemory { order: 0 });
                    break;
                }
            }
        }
        assert_eq!(pm.free_frames(), 0);
        for f in got {
            pm.free_frame(f).unwrap();
        }
        pm.faults().fail_nth(2);
        assert!(pm.alloc_frame(Owner::Slab).is_ok());
        assert!(matches!(
            pm.alloc_frame(Owner::Slab),
            Err(AllocError::Injected { .. })
        ));
        pm.faults().fail_when(|r| r.owner == Owner::KernelTable);
        assert!(pm.alloc_frame(Owner::KernelTable).is_err());
        assert!(pm.alloc_frame(Owner::UserTable).is_ok());
    }

    #[test]
    fn threads_share_the_allocator() {
        let pm = std::sync::Arc::new(pm());
        let before = pm.free_frames();
        let hs: std::vec::Vec<_> = (0..2)
            .map(|_| {
                let pm = pm.clone();
                std::thread::spawn(move || {
                    for i in 0..2000u32 {
                        let f = pm.alloc_pages(i % 3, Owner::Slab).unwrap();
                        pm.store_u64(f.start(), 7).unwrap();
                        pm.free_pages(f, i % 3).unwrap();
                    }
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
        assert_eq!(pm.free_frames(), before);
    }
}
