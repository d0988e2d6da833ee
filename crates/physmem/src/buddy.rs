//! The frame allocator: a binary buddy allocator over `mem_map`, with
//! accounting, poisoning of freed frames, and fault injection.
//!
//! [`PhysMemory`] is the simulated machine's RAM plus its page allocator —
//! `alloc_pages`/`__free_pages` of one zone, orders `0..=MAX_ORDER`. Free
//! blocks are threaded through `Page::lru` exactly like the kernel's
//! `free_area[order].free_list`, and a freed block is filled with
//! [`POISON_FREE`] and flagged [`PG_FREE`], so a page-table walk that reaches
//! it is reported as a dangling table rather than read as data.
//!
//! Single frames allocated or freed on a CPU go through that CPU's page
//! list first ([`crate::pcp`]), as in the kernel of the seed patch.

use crate::addr::{Frame, PhysAddr, PAGE_SIZE};
use crate::fault::FaultInjector;
use crate::list::FrameList;
use crate::mem::{FrameState, MemError, PhysMem};
use crate::page::{Owner, Page, PageTable, PG_BUDDY, PG_FREE, PG_HEAD, PG_RESERVED};
use crate::pcp::{this_cpu, BadPcpConfig, PcpConfig, PcpSlot, PcpStats, PCP_CPUS};
use crate::sync::{Lock, LockGuard};
use alloc::boxed::Box;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// Largest buddy order: blocks of `2^MAX_ORDER` frames (4 MiB).
pub const MAX_ORDER: u32 = 10;
/// Byte written over every freed frame (the slab's `POISON_FREE`).
pub const POISON_FREE: u8 = 0x6b;

/// Why a frame allocation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AllocError {
    /// No free block of this order or larger.
    #[error("out of memory (order {order})")]
    OutOfMemory {
        /// The order asked for.
        order: u32,
    },
    /// The fault injector failed this allocation.
    #[error("injected allocation failure (#{seq})")]
    Injected {
        /// The allocation's sequence number.
        seq: u64,
    },
    /// The order is above [`MAX_ORDER`].
    #[error("order {0} is above MAX_ORDER {MAX_ORDER}")]
    BadOrder(u32),
}

/// Why a free was refused (the frames are left untouched).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FreeError {
    /// The frame is outside RAM.
    #[error("free of {0}: outside RAM")]
    NoSuchFrame(Frame),
    /// The frame is already free.
    #[error("double free of {0}")]
    DoubleFree(Frame),
    /// The frame is not the head of an allocated block.
    #[error("free of {0}: not the head of a block")]
    NotHead(Frame),
    /// The block was allocated with another order.
    #[error("free of {frame} with order {freed}, allocated with order {allocated}")]
    WrongOrder {
        /// The frame.
        frame: Frame,
        /// Its order at allocation.
        allocated: u32,
        /// The order given to free.
        freed: u32,
    },
    /// The frame is reserved and was never allocated.
    #[error("free of reserved {0}")]
    Reserved(Frame),
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
    /// Acquisitions of the lock (statistics).
    locks: u64,
    /// Per-CPU list refills and trims (statistics).
    refills: u64,
    trims: u64,
}

/// Simulated physical memory with its page allocator.
pub struct PhysMemory<M> {
    mem: M,
    pages: PageTable,
    /// `zone->lock`: protects the free lists and the `PG_BUDDY`/`private`
    /// state of free block heads. Held only inside alloc and free.
    zone: Lock<FreeArea>,
    /// Frames per owner (updated with the zone lock held, read without it),
    /// not counting the per-CPU lists' own changes (in each [`Pcp`]).
    owners: [AtomicU64; Owner::COUNT],
    faults: FaultInjector,
    /// The per-CPU page lists (see [`crate::pcp`]); each slot's lock
    /// protects its list and its accounting delta.
    pcp: Box<[PcpSlot]>,
    /// `pcp->batch` and `pcp->high` of every list (tunable at run time, as
    /// `percpu_pagelist_fraction` made them later).
    pcp_batch: AtomicU32,
    pcp_high: AtomicU32,
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
        let pcp = PcpConfig::for_frames(frames);
        let pm = PhysMemory {
            mem,
            pages,
            zone: Lock::new(FreeArea {
                lists: Default::default(),
                locks: 0,
                refills: 0,
                trims: 0,
            }),
            owners,
            faults: FaultInjector::new(),
            pcp: (0..PCP_CPUS).map(|_| PcpSlot::default()).collect(),
            pcp_batch: AtomicU32::new(pcp.batch),
            pcp_high: AtomicU32::new(pcp.high),
        };
        {
            let mut area = pm.zone.lock();
            let mut pfn = reserved_frames;
            while pfn < frames {
                let mut order = MAX_ORDER;
                while order > 0 && (!pfn.is_multiple_of(1 << order) || pfn + (1 << order) > frames)
                {
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

    /// Current frame accounting (the zone's counts plus every CPU's delta).
    pub fn stats(&self) -> FrameStats {
        let mut by_owner = [0i64; Owner::COUNT];
        for (slot, c) in by_owner.iter_mut().zip(&self.owners) {
            *slot = c.load(Ordering::Acquire) as i64;
        }
        for p in self.pcp.iter() {
            let pcp = p.0.lock();
            for (slot, d) in by_owner.iter_mut().zip(&pcp.delta) {
                *slot += d;
            }
        }
        FrameStats {
            total: self.pages.len(),
            by_owner: by_owner.map(|v| v.max(0) as u64),
        }
    }

    /// Frames free (in the zone or on a per-CPU list).
    pub fn free_frames(&self) -> u64 {
        self.stats().free()
    }

    /// The per-CPU lists' sizing.
    pub fn pcp_config(&self) -> PcpConfig {
        PcpConfig {
            batch: self.pcp_batch.load(Ordering::Relaxed),
            high: self.pcp_high.load(Ordering::Relaxed),
        }
    }

    /// Resizes every per-CPU list: `batch` ≥ 1 and `high` > `batch`. A
    /// list longer than the new `high` is trimmed at its next free.
    pub fn set_pcp_config(&self, cfg: PcpConfig) -> Result<(), BadPcpConfig> {
        if cfg.batch == 0 || cfg.high <= cfg.batch {
            return Err(BadPcpConfig(cfg));
        }
        self.pcp_batch.store(cfg.batch, Ordering::Relaxed);
        self.pcp_high.store(cfg.high, Ordering::Relaxed);
        Ok(())
    }

    /// The per-CPU lists' sizing and counters.
    pub fn pcp_stats(&self) -> PcpStats {
        let frames = self.pcp.iter().map(|p| p.0.lock().list.len() as u64).sum();
        let cfg = self.pcp_config();
        let area = self.zone.lock();
        PcpStats {
            batch: cfg.batch,
            high: cfg.high,
            frames,
            zone_locks: area.locks,
            refills: area.refills,
            trims: area.trims,
        }
    }

    /// `drain_all_pages`: gives every per-CPU list back to the zone, where
    /// its frames merge again. Returns the frames moved.
    pub fn drain_pcp(&self) -> u64 {
        let mut moved = 0;
        for p in self.pcp.iter() {
            let mut pcp = p.0.lock();
            if pcp.list.is_empty() {
                continue;
            }
            let mut area = self.lock_zone();
            while let Some(f) = pcp.list.pop(&self.pages) {
                self.merge_free(&mut area, f, 0);
                moved += 1;
            }
        }
        moved
    }

    fn lock_zone(&self) -> LockGuard<'_, FreeArea> {
        let mut area = self.zone.lock();
        area.locks += 1;
        area
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
    /// (poison, for a frame that was freed). A single frame on a CPU comes
    /// from that CPU's list (`buffered_rmqueue`).
    pub fn alloc_pages(&self, order: u32, owner: Owner) -> Result<Frame, AllocError> {
        if order > MAX_ORDER {
            return Err(AllocError::BadOrder(order));
        }
        if let Some(seq) = self.faults.should_fail(order, owner) {
            return Err(AllocError::Injected { seq });
        }
        if order == 0 {
            if let Some(slot) = this_cpu().and_then(|c| self.pcp.get(c)) {
                if let Some(f) = self.alloc_from_pcp(slot, owner) {
                    return Ok(f);
                }
            }
        }
        match self.alloc_from_zone(order, owner) {
            // Frames parked on the CPUs' lists are free: take them back
            // (and let them merge) before failing.
            Err(AllocError::OutOfMemory { .. }) if self.drain_pcp() > 0 => {
                self.alloc_from_zone(order, owner)
            }
            r => r,
        }
    }

    fn alloc_from_zone(&self, order: u32, owner: Owner) -> Result<Frame, AllocError> {
        let mut area = self.lock_zone();
        let head = self
            .take_block(&mut area, order)
            .ok_or(AllocError::OutOfMemory { order })?;
        self.mark_allocated(head, order, owner);
        self.owners[Owner::Free as usize].fetch_sub(1 << order, Ordering::AcqRel);
        self.owners[owner as usize].fetch_add(1 << order, Ordering::AcqRel);
        Ok(head)
    }

    /// One frame from the CPU's list, refilled with `batch` frames from the
    /// zone if it is empty. `None` if the zone has none either.
    fn alloc_from_pcp(&self, slot: &PcpSlot, owner: Owner) -> Option<Frame> {
        let mut pcp = slot.0.lock();
        if pcp.list.is_empty() {
            let mut area = self.lock_zone();
            area.refills += 1;
            for _ in 0..self.pcp_batch.load(Ordering::Relaxed) {
                let Some(f) = self.take_block(&mut area, 0) else {
                    break;
                };
                if let Some(p) = self.pages.get(f) {
                    p.flags.store(PG_FREE, Ordering::Release);
                    p.private.store(0, Ordering::Relaxed);
                }
                // Just taken off the zone's list, so not linked: cannot fail.
                let _ = pcp.list.add(&self.pages, f);
            }
        }
        let f = pcp.list.pop(&self.pages)?;
        pcp.delta[Owner::Free as usize] -= 1;
        pcp.delta[owner as usize] += 1;
        drop(pcp);
        self.mark_allocated(f, 0, owner);
        Some(f)
    }

    /// Takes a free block of `order` off the zone's lists, splitting a
    /// larger one if needed (`__rmqueue` + `expand`).
    fn take_block(&self, area: &mut FreeArea, order: u32) -> Option<Frame> {
        let mut o = order;
        while o <= MAX_ORDER && area.lists[o as usize].is_empty() {
            o += 1;
        }
        if o > MAX_ORDER {
            return None;
        }
        let head = area.lists[o as usize].pop(&self.pages)?;
        if let Some(p) = self.pages.get(head) {
            p.flags.fetch_and(!PG_BUDDY, Ordering::Relaxed);
        }
        // Split: give back the upper half at each lower order (`expand`).
        while o > order {
            o -= 1;
            self.push_free(area, head.add(1 << o), o);
        }
        Some(head)
    }

    /// The metadata of a block just handed out.
    fn mark_allocated(&self, head: Frame, order: u32, owner: Owner) {
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
    /// merges it with free buddies, or, for a single frame on a CPU, puts
    /// it on that CPU's list (`free_hot_cold_page`). A bad free changes
    /// nothing.
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
        if order == 0 {
            if let Some(slot) = this_cpu().and_then(|c| self.pcp.get(c)) {
                return self.free_to_pcp(slot, head, p);
            }
        }
        let mut area = self.lock_zone();
        // Claim the block atomically: of two racing frees of it, whichever
        // path each takes, exactly one sees it not yet free.
        if p.flags.fetch_or(PG_FREE, Ordering::AcqRel) & PG_FREE != 0 {
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
        self.merge_free(&mut area, head, order);
        Ok(())
    }

    /// A single frame onto the CPU's list; a list that reaches `high`
    /// gives `batch` frames back to the zone.
    fn free_to_pcp(&self, slot: &PcpSlot, frame: Frame, p: &Page) -> Result<(), FreeError> {
        if p.flags.fetch_or(PG_FREE, Ordering::AcqRel) & PG_FREE != 0 {
            return Err(FreeError::DoubleFree(frame));
        }
        let owner = p.owner();
        p.flags.store(PG_FREE, Ordering::Release);
        p.owner.store(Owner::Free as u32, Ordering::Relaxed);
        p.count.store(0, Ordering::Relaxed);
        p.private.store(0, Ordering::Relaxed);
        let mut pcp = slot.0.lock();
        pcp.delta[owner as usize] -= 1;
        pcp.delta[Owner::Free as usize] += 1;
        // Just marked free by us, on no list: cannot fail.
        let _ = pcp.list.add(&self.pages, frame);
        if pcp.list.len() >= self.pcp_high.load(Ordering::Relaxed) as usize {
            let mut area = self.lock_zone();
            area.trims += 1;
            for _ in 0..self.pcp_batch.load(Ordering::Relaxed) {
                let Some(f) = pcp.list.pop(&self.pages) else {
                    break;
                };
                self.merge_free(&mut area, f, 0);
            }
        }
        Ok(())
    }

    /// Puts a free block (flags already `PG_FREE`) on the zone's lists,
    /// merged with its buddy while that is a free head of the same order.
    fn merge_free(&self, area: &mut FreeArea, head: Frame, order: u32) {
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
        self.push_free(area, Frame::from_pfn(pfn), o);
    }

    /// Frees one frame.
    pub fn free_frame(&self, frame: Frame) -> Result<(), FreeError> {
        self.free_pages(frame, 0)
    }
}

impl<M: PhysMem> PhysMem for PhysMemory<M> {
    #[inline]
    fn size(&self) -> u64 {
        self.mem.size()
    }
    #[inline]
    fn load_u32(&self, pa: PhysAddr) -> Result<u32, MemError> {
        self.mem.load_u32(pa)
    }
    #[inline]
    fn load_u64(&self, pa: PhysAddr) -> Result<u64, MemError> {
        self.mem.load_u64(pa)
    }
    #[inline]
    fn store_u32(&self, pa: PhysAddr, v: u32) -> Result<(), MemError> {
        self.mem.store_u32(pa, v)
    }
    #[inline]
    fn store_u64(&self, pa: PhysAddr, v: u64) -> Result<(), MemError> {
        self.mem.store_u64(pa, v)
    }
    #[inline]
    fn frame_state(&self, frame: Frame) -> FrameState {
        match self.pages.get(frame) {
            None => FrameState::Unmanaged,
            Some(p) if p.is_free() => FrameState::Freed,
            Some(_) => FrameState::Live,
        }
    }
    #[inline]
    fn fill(&self, pa: PhysAddr, len: u64, byte: u8) -> Result<(), MemError> {
        self.mem.fill(pa, len, byte)
    }
    #[inline]
    fn copy(&self, dst: PhysAddr, src: PhysAddr, len: u64) -> Result<(), MemError> {
        self.mem.copy(dst, src, len)
    }
    #[inline]
    fn first_nonzero_u64(&self, pa: PhysAddr, words: usize) -> Result<Option<usize>, MemError> {
        self.mem.first_nonzero_u64(pa, words)
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
        assert!(b.pfn().is_multiple_of(8));
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

    /// Allocates single frames until a clean out-of-memory.
    fn take_every_frame(pm: &PhysMemory<crate::ram::Ram>) -> std::vec::Vec<Frame> {
        let mut got = std::vec::Vec::new();
        loop {
            match pm.alloc_frame(Owner::UserData) {
                Ok(f) => got.push(f),
                Err(e) => {
                    assert_eq!(e, AllocError::OutOfMemory { order: 0 });
                    return got;
                }
            }
        }
    }

    #[test]
    fn exhaustion_and_injection() {
        let pm = pm();
        let got = take_every_frame(&pm);
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

    /// Everything allocated and then freed: the zone holds a max-order
    /// block again once the per-CPU lists are drained.
    fn assert_all_back(pm: &PhysMemory<crate::ram::Ram>, free: u64) {
        assert_eq!(pm.free_frames(), free);
        pm.drain_pcp();
        assert_eq!(pm.pcp_stats().frames, 0);
        let big = pm.alloc_pages(MAX_ORDER, Owner::KernelData).unwrap();
        pm.free_pages(big, MAX_ORDER).unwrap();
    }

    #[test]
    fn cpu_page_lists_refill_trim_and_account() {
        let pm = pm();
        let free = pm.free_frames();
        let cfg = pm.pcp_stats();
        assert!(cfg.batch >= 1 && cfg.high == 6 * cfg.batch);
        let _cpu = crate::pcp::enter_cpu(0);
        let a = pm.alloc_frame(Owner::UserData).unwrap();
        let st = pm.pcp_stats();
        assert_eq!((st.refills, st.frames), (1, u64::from(cfg.batch) - 1));
        assert_eq!(pm.stats().of(Owner::UserData), 1);
        assert_eq!(pm.free_frames(), free - 1);
        // A frame on a list is free: poisoned, flagged, not a buddy.
        pm.free_frame(a).unwrap();
        assert_eq!(pm.frame_state(a), FrameState::Freed);
        assert_eq!(pm.load_u32(a.start()).unwrap(), 0x6b6b_6b6b);
        assert_eq!(pm.free_frame(a), Err(FreeError::DoubleFree(a)));
        assert_eq!(pm.stats().of(Owner::UserData), 0);
        // LIFO: the hottest frame comes back first, without the zone.
        let locks = pm.pcp_stats().zone_locks;
        let b = pm.alloc_frame(Owner::UserTable).unwrap();
        assert_eq!(b, a);
        assert_eq!(pm.pcp_stats().zone_locks, locks);
        pm.free_frame(b).unwrap();
        // Many frames: the list is refilled and trimmed by batches, and
        // never holds `high` frames after a free.
        let got: std::vec::Vec<_> = (0..200)
            .map(|_| pm.alloc_frame(Owner::Slab).unwrap())
            .collect();
        assert_eq!(pm.stats().of(Owner::Slab), 200);
        for f in got {
            pm.free_frame(f).unwrap();
            assert!(pm.pcp_stats().frames < u64::from(cfg.high));
        }
        let st = pm.pcp_stats();
        assert!(st.refills >= 200 / u64::from(cfg.batch), "{st:?}");
        assert!(st.trims >= 1, "{st:?}");
        // Higher orders never use the lists.
        let big = pm.alloc_pages(2, Owner::Slab).unwrap();
        pm.free_pages(big, 2).unwrap();
        assert_all_back(&pm, free);
    }

    #[test]
    fn page_lists_can_be_resized_and_refuse_nonsense() {
        let pm = pm();
        let free = pm.free_frames();
        for bad in [(0, 5), (4, 4), (4, 2)] {
            let cfg = PcpConfig {
                batch: bad.0,
                high: bad.1,
            };
            assert_eq!(pm.set_pcp_config(cfg), Err(BadPcpConfig(cfg)));
        }
        let cfg = PcpConfig { batch: 3, high: 5 };
        pm.set_pcp_config(cfg).unwrap();
        assert_eq!(pm.pcp_config(), cfg);
        let _cpu = crate::pcp::enter_cpu(0);
        let f = pm.alloc_frame(Owner::UserData).unwrap();
        assert_eq!(pm.pcp_stats().frames, 2);
        let more: std::vec::Vec<_> = (0..5)
            .map(|_| pm.alloc_frame(Owner::UserData).unwrap())
            .collect();
        pm.free_frame(f).unwrap();
        for g in more {
            pm.free_frame(g).unwrap();
            assert!(pm.pcp_stats().frames < 5);
        }
        assert_all_back(&pm, free);
    }

    #[test]
    fn frames_cross_cpus_and_exhaustion_drains_the_lists() {
        let pm = std::sync::Arc::new(pm());
        let free = pm.free_frames();
        // CPU 1 parks frames on its list.
        let parked = std::thread::scope(|s| {
            s.spawn(|| {
                let _cpu = crate::pcp::enter_cpu(1);
                let f = pm.alloc_frame(Owner::UserData).unwrap();
                pm.free_frame(f).unwrap();
                pm.pcp_stats().frames
            })
            .join()
            .unwrap()
        });
        assert!(parked > 0);
        // CPU 0 takes every free frame, CPU 1's included: no frame is lost
        // to a list, and the failure is a clean out-of-memory.
        let _cpu = crate::pcp::enter_cpu(0);
        let got = take_every_frame(&pm);
        assert_eq!(got.len() as u64, free);
        assert_eq!(pm.free_frames(), 0);
        // Freed on two CPUs (half each), with the accounting exact.
        let (mine, theirs) = got.split_at(got.len() / 2);
        std::thread::scope(|s| {
            s.spawn(|| {
                let _cpu = crate::pcp::enter_cpu(1);
                for &f in theirs {
                    pm.free_frame(f).unwrap();
                }
            });
            for &f in mine {
                pm.free_frame(f).unwrap();
            }
        });
        assert_eq!(pm.stats().of(Owner::UserData), 0);
        assert_all_back(&pm, free);
    }

    #[test]
    fn two_cpus_churn_and_injection_on_the_list_path() {
        let pm = std::sync::Arc::new(pm());
        let free = pm.free_frames();
        std::thread::scope(|s| {
            for cpu in 0..2 {
                let pm = &pm;
                s.spawn(move || {
                    let _cpu = crate::pcp::enter_cpu(cpu);
                    let mut held = std::vec::Vec::new();
                    for i in 0..20_000u32 {
                        let f = pm.alloc_pages(i % 7 / 6, Owner::Slab).unwrap();
                        pm.store_u64(f.start(), u64::from(i)).unwrap();
                        held.push((f, i % 7 / 6));
                        if held.len() > 40 || i % 3 == 0 {
                            let (f, o) = held.swap_remove(i as usize % held.len());
                            pm.free_pages(f, o).unwrap();
                        }
                    }
                    for (f, o) in held {
                        pm.free_pages(f, o).unwrap();
                    }
                });
            }
        });
        assert_eq!(pm.stats().of(Owner::Slab), 0);
        assert_all_back(&pm, free);
        // Injection is decided per request, before any list.
        let _cpu = crate::pcp::enter_cpu(0);
        pm.faults().fail_nth(2);
        let a = pm.alloc_frame(Owner::Slab).unwrap();
        assert!(matches!(
            pm.alloc_frame(Owner::Slab),
            Err(AllocError::Injected { .. })
        ));
        pm.free_frame(a).unwrap();
        assert_eq!(pm.free_frames(), free);
    }
}
