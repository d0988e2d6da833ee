//! The page allocator's entry points: [`PhysMemory`], the simulated
//! machine's RAM plus `alloc_pages`/`__free_pages` of one zone, orders
//! `0..=MAX_ORDER`.
//!
//! An allocation asks the fault injector ([`crate::fault`]) first, then
//! takes a single frame on a CPU from that CPU's page list ([`crate::pcp`])
//! and anything else from the zone's buddy lists ([`crate::buddy`]), and
//! checks the poison of frames freed poisoned ([`crate::poison`]). A free
//! validates the request (a bad free changes nothing), poisons the block,
//! claims it atomically (`PG_FREE`, so a racing double free loses), and
//! gives it to the CPU's list or back to the zone, where it merges. Frame
//! accounting is in [`crate::accounting`].

use crate::addr::{Frame, PhysAddr, PAGE_SIZE};
use crate::buddy::{FreeArea, MAX_ORDER};
use crate::fault::FaultInjector;
use crate::mem::{FrameState, MemError, PhysMem};
use crate::page::{Owner, Page, PageTable, PG_FREE, PG_HEAD, PG_POISON, PG_RESERVED, PG_ZERO};
use crate::pcp::{this_cpu, PcpConfig, PcpSlot, PCP_CPUS};
use crate::poison::Poison;
use crate::sync::{Lock, ZONE};
use alloc::boxed::Box;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

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

/// Simulated physical memory with its page allocator.
pub struct PhysMemory<M> {
    pub(crate) mem: M,
    pub(crate) pages: PageTable,
    /// `zone->lock`: protects the free lists and the `PG_BUDDY`/`private`
    /// state of free block heads. Held only inside alloc and free.
    pub(crate) zone: Lock<FreeArea>,
    /// Frames per owner (updated with the zone lock held, read without it),
    /// not counting the per-CPU lists' own changes (each list keeps its own).
    pub(crate) owners: [AtomicU64; Owner::COUNT],
    pub(crate) faults: FaultInjector,
    /// Freed-frame poisoning (see [`crate::poison`]).
    pub(crate) poison: Poison,
    /// The per-CPU page lists (see [`crate::pcp`]); each slot's lock
    /// protects its list and its accounting delta.
    pub(crate) pcp: Box<[PcpSlot]>,
    /// `pcp->batch` and `pcp->high` of every list (tunable at run time, as
    /// `percpu_pagelist_fraction` made them later).
    pub(crate) pcp_batch: AtomicU32,
    pub(crate) pcp_high: AtomicU32,
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

    /// The memory's direct map as one linear window, if it is one.
    pub fn linear(&self) -> Option<crate::mem::LinearMap> {
        self.mem.linear()
    }
}

impl<M: PhysMem> PhysMemory<M> {
    /// Takes `mem`, reserves `[0, reserved)` and frees the rest into the
    /// allocator in the largest naturally aligned blocks. Freed-frame
    /// poisoning is on ([`with_poisoning`](Self::with_poisoning) turns it off).
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
            zone: Lock::new(&ZONE, FreeArea::default()),
            owners,
            faults: FaultInjector::new(),
            poison: Poison::new(true),
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
}

impl<M: PhysMem> PhysMemory<M> {
    /// `alloc_pages(order)`: `2^order` contiguous frames owned by `owner`,
    /// with `page_count` 1 on the head. Contents are whatever was there
    /// (poison, for a frame freed with poisoning on: checked here). A
    /// single frame on a CPU comes from that CPU's list (`buffered_rmqueue`).
    pub fn alloc_pages(&self, order: u32, owner: Owner) -> Result<Frame, AllocError> {
        self.alloc_block(order, owner).map(|(f, _)| f)
    }

    /// `alloc_pages`, and whether the head was freed all zero
    /// ([`PhysMemory::free_zeroed_frame`]) and not written since.
    fn alloc_block(&self, order: u32, owner: Owner) -> Result<(Frame, bool), AllocError> {
        if order > MAX_ORDER {
            return Err(AllocError::BadOrder(order));
        }
        if let Some(seq) = self.faults.should_fail(order, owner) {
            return Err(AllocError::Injected { seq });
        }
        let head = 'got: {
            if order == 0 {
                if let Some(slot) = this_cpu().and_then(|c| self.pcp.get(c)) {
                    if let Some(f) = self.alloc_from_pcp(slot, owner) {
                        break 'got f;
                    }
                }
            }
            match self.alloc_from_zone(order, owner) {
                // Frames parked on the CPUs' lists are free: take them back
                // (and let them merge) before failing.
                Err(AllocError::OutOfMemory { .. }) if self.drain_pcp() > 0 => {
                    self.alloc_from_zone(order, owner)?
                }
                r => r?,
            }
        };
        self.check_poison(head.0, order);
        Ok(head)
    }

    /// The metadata of a block just handed out; true if its head was freed
    /// all zero (its `PG_ZERO`, cleared here).
    pub(crate) fn mark_allocated(&self, head: Frame, order: u32, owner: Owner) -> bool {
        let mut zero = false;
        for i in 0..(1u64 << order) {
            if let Some(p) = self.pages.get(head.add(i)) {
                // Everything but the poison mark, which `check_poison`
                // consumes outside the lock.
                let old = p.flags.fetch_and(PG_POISON, Ordering::Relaxed);
                if i == 0 {
                    zero = old & PG_ZERO != 0;
                }
                p.owner.store(owner as u32, Ordering::Relaxed);
                p.count.store(0, Ordering::Relaxed);
                p.private.store(0, Ordering::Relaxed);
                p.index.store(0, Ordering::Relaxed);
            }
        }
        if let Some(p) = self.pages.get(head) {
            p.flags.fetch_or(PG_HEAD, Ordering::Relaxed);
            p.private.store(order as u64, Ordering::Relaxed);
            p.count.store(1, Ordering::Release);
        }
        zero
    }

    /// One frame.
    pub fn alloc_frame(&self, owner: Owner) -> Result<Frame, AllocError> {
        self.alloc_pages(0, owner)
    }

    /// One zeroed frame (`get_zeroed_page`).
    /// A frame freed with [`free_zeroed_frame`](Self::free_zeroed_frame)
    /// (poisoning off) is all zero already and is not written again, as a
    /// page-table page that `zap_pte_range` emptied comes back from a
    /// quicklist; debug builds check it is still zero and clear it if not.
    pub fn alloc_zeroed_frame(&self, owner: Owner) -> Result<Frame, AllocError> {
        let (f, zero) = self.alloc_block(0, owner)?;
        let words = (PAGE_SIZE / 8) as usize;
        if zero
            && (!cfg!(debug_assertions) || self.mem.first_nonzero_u64(f.start(), words) == Ok(None))
        {
            return Ok(f);
        }
        // A freshly allocated frame is inside RAM, so zeroing cannot fail;
        // if it did, give the frame back and report out-of-memory.
        if self.mem.zero_frame(f).is_err() {
            let _ = self.free_pages(f, 0);
            return Err(AllocError::OutOfMemory { order: 0 });
        }
        Ok(f)
    }

    /// `__free_pages(page, order)`: poisons the block (if poisoning is
    /// on), marks it free and merges it with free buddies, or, for a single
    /// frame on a CPU, puts it on that CPU's list (`free_hot_cold_page`). A
    /// bad free changes nothing.
    pub fn free_pages(&self, head: Frame, order: u32) -> Result<(), FreeError> {
        self.free_block(head, order, false)
    }

    /// Frees one frame whose contents are all zero (a page table whose
    /// entries were all cleared), so that, with poisoning off, the next
    /// [`alloc_zeroed_frame`](Self::alloc_zeroed_frame) of it need not
    /// clear it. With poisoning on it is poisoned like any other. Debug
    /// builds check the promise and refuse the free if it is not kept.
    pub fn free_zeroed_frame(&self, frame: Frame) -> Result<(), FreeError> {
        let words = (PAGE_SIZE / 8) as usize;
        let zero =
            !cfg!(debug_assertions) || self.mem.first_nonzero_u64(frame.start(), words) == Ok(None);
        debug_assert!(zero, "free_zeroed_frame of {frame}, which is not zero");
        self.free_block(frame, 0, zero)
    }

    fn free_block(&self, head: Frame, order: u32, zero: bool) -> Result<(), FreeError> {
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
        let poison = match self.poison_block(head, order) {
            0 if zero => PG_ZERO,
            poison => poison,
        };
        if order == 0 {
            if let Some(slot) = this_cpu().and_then(|c| self.pcp.get(c)) {
                return self.free_to_pcp(slot, head, p, poison);
            }
        }
        // Claim the block atomically: of two racing frees of it, whichever
        // path each takes, exactly one sees it not yet free.
        if p.flags.fetch_or(PG_FREE, Ordering::AcqRel) & PG_FREE != 0 {
            return Err(FreeError::DoubleFree(head));
        }
        self.free_to_zone(head, order, poison);
        Ok(())
    }

    /// Frees one frame.
    pub fn free_frame(&self, frame: Frame) -> Result<(), FreeError> {
        self.free_pages(frame, 0)
    }
}

impl<M: PhysMem> PhysMem for PhysMemory<M> {
    forward_phys_mem!(mem);
    #[inline]
    fn frame_state(&self, frame: Frame) -> FrameState {
        match self.pages.get(frame) {
            None => FrameState::Unmanaged,
            Some(p) if p.is_free() => FrameState::Freed,
            Some(_) => FrameState::Live,
        }
    }
}

#[cfg(all(test, feature = "std"))]
pub(crate) mod tests {
    use super::*;
    use crate::buddy::MAX_ORDER;
    use crate::ram::MIN_RAM;

    pub(crate) fn pm() -> PhysMemory<crate::ram::Ram> {
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

    /// A frame freed zeroed comes back from `alloc_zeroed_frame` without
    /// being written (poisoning off) and is zero; one that was written
    /// while free (a stale walker) is cleared in debug builds; any other
    /// allocation consumes the mark; with poisoning on it is poisoned.
    #[test]
    fn zeroed_frames_skip_the_clear_only_while_untouched() {
        for cpu in [None, Some(0)] {
            let _cpu = cpu.map(crate::pcp::enter_cpu);
            let pm = pm().with_poisoning(false);
            let f = pm.alloc_zeroed_frame(Owner::UserTable).unwrap();
            pm.free_zeroed_frame(f).unwrap();
            assert_eq!(pm.free_zeroed_frame(f), Err(FreeError::DoubleFree(f)));
            let g = pm.alloc_zeroed_frame(Owner::UserTable).unwrap();
            assert_eq!(g, f, "the hottest frame comes back");
            assert_eq!(pm.first_nonzero_u64(g.start(), 512).unwrap(), None);
            // Written while free: debug builds notice and clear it.
            pm.free_zeroed_frame(g).unwrap();
            pm.store_u64(PhysAddr::new(g.start().as_u64() + 64), 0x63)
                .unwrap();
            let h = pm.alloc_zeroed_frame(Owner::UserTable).unwrap();
            if cfg!(debug_assertions) {
                assert_eq!(pm.first_nonzero_u64(h.start(), 512).unwrap(), None);
            }
            pm.store_u64(h.start(), 0x63).unwrap();
            pm.free_frame(h).unwrap();
            // A plain free leaves no mark: the contents are cleared.
            let k = pm.alloc_zeroed_frame(Owner::UserTable).unwrap();
            assert_eq!(pm.first_nonzero_u64(k.start(), 512).unwrap(), None);
            // A plain allocation takes the mark with it.
            pm.free_zeroed_frame(k).unwrap();
            let d = pm.alloc_frame(Owner::UserData).unwrap();
            pm.store_u64(d.start(), 0x63).unwrap();
            pm.free_frame(d).unwrap();
            let z = pm.alloc_zeroed_frame(Owner::UserTable).unwrap();
            assert_eq!(pm.first_nonzero_u64(z.start(), 512).unwrap(), None);
            pm.free_zeroed_frame(z).unwrap();
            // Poisoning on: a zeroed free is poisoned like any other.
            let pm = pm.with_poisoning(true);
            let f = pm.alloc_zeroed_frame(Owner::UserTable).unwrap();
            pm.free_zeroed_frame(f).unwrap();
            assert_eq!(pm.load_u32(f.start()).unwrap(), 0x6b6b_6b6b);
            let g = pm.alloc_zeroed_frame(Owner::UserTable).unwrap();
            assert_eq!(pm.first_nonzero_u64(g.start(), 512).unwrap(), None);
            pm.free_frame(g).unwrap();
            assert_eq!(pm.stats().of(Owner::UserTable), 0);
        }
    }

    /// Allocates single frames until a clean out-of-memory.
    pub(crate) fn take_every_frame(pm: &PhysMemory<crate::ram::Ram>) -> std::vec::Vec<Frame> {
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
    pub(crate) fn assert_all_back(pm: &PhysMemory<crate::ram::Ram>, free: u64) {
        assert_eq!(pm.free_frames(), free);
        pm.drain_pcp();
        assert_eq!(pm.pcp_stats().frames, 0);
        let big = pm.alloc_pages(MAX_ORDER, Owner::KernelData).unwrap();
        pm.free_pages(big, MAX_ORDER).unwrap();
    }

    #[test]
    #[cfg_attr(not(debug_assertions), ignore = "lockdep checks debug builds only")]
    fn lockdep_sees_pcp_outside_zone() {
        let pm = pm();
        let _cpu = crate::pcp::enter_cpu(0);
        let f = pm.alloc_frame(Owner::Slab).unwrap();
        pm.free_frame(f).unwrap();
        pm.drain_pcp();
        // physmem's tests run under the checker (its dev-dependency, in
        // debug builds): it saw the order, and only this one.
        use pgdcache_sync::classes::{PCP, ZONE};
        assert!(pgdcache_sync::lockdep::order_seen(&PCP, &ZONE));
        assert!(!pgdcache_sync::lockdep::order_seen(&ZONE, &PCP));
        assert!(pgdcache_sync::lockdep::held().is_empty());
    }
}
