//! The buddy allocator proper: the zone's free lists (`free_area[]`) under
//! `zone->lock`, splitting a larger block on allocation (`__rmqueue` +
//! `expand`) and merging a freed block with its free buddy (`__free_pages_bulk`).
//!
//! Free blocks are threaded through `Page::lru` exactly like the kernel's
//! `free_area[order].free_list`; the head of a free block carries
//! `PG_BUDDY` and its order in `private`, which is how a freed block finds
//! a free buddy of the same order to merge with. The entry points that
//! hand blocks to callers (checks, accounting, poisoning, the per-CPU
//! lists) are in [`crate::page_alloc`].

use crate::addr::Frame;
use crate::list::FrameList;
use crate::mem::PhysMem;
use crate::page::{Owner, PG_BUDDY, PG_FREE};
use crate::page_alloc::{AllocError, PhysMemory};
use crate::sync::LockGuard;
use core::sync::atomic::Ordering;

/// Largest buddy order: blocks of `2^MAX_ORDER` frames (4 MiB).
pub const MAX_ORDER: u32 = 10;

/// The zone's free lists (`struct free_area[]`), behind `zone->lock`.
#[derive(Debug, Default)]
pub(crate) struct FreeArea {
    lists: [FrameList; MAX_ORDER as usize + 1],
    /// Acquisitions of the lock (statistics).
    pub(crate) locks: u64,
    /// Per-CPU list refills and trims (statistics).
    pub(crate) refills: u64,
    pub(crate) trims: u64,
}

impl<M: PhysMem> PhysMemory<M> {
    /// `spin_lock(&zone->lock)`, counted.
    pub(crate) fn lock_zone(&self) -> LockGuard<'_, FreeArea> {
        let mut area = self.zone.lock();
        area.locks += 1;
        area
    }

    /// Links a free block of `order` at `head` (flags already `PG_FREE`).
    pub(crate) fn push_free(&self, area: &mut FreeArea, head: Frame, order: u32) {
        if let Some(p) = self.pages.get(head) {
            p.private.store(order as u64, Ordering::Relaxed);
            p.flags.fetch_or(PG_BUDDY, Ordering::Relaxed);
        }
        // The head is free and not linked anywhere else, so add cannot fail.
        let _ = area.lists[order as usize].add(&self.pages, head);
    }

    /// A block of `order` from the zone, marked allocated to `owner`, and
    /// whether its head was freed all zero (`PG_ZERO`).
    pub(crate) fn alloc_from_zone(
        &self,
        order: u32,
        owner: Owner,
    ) -> Result<(Frame, bool), AllocError> {
        let mut area = self.lock_zone();
        let head = self
            .take_block(&mut area, order)
            .ok_or(AllocError::OutOfMemory { order })?;
        let zero = self.mark_allocated(head, order, owner);
        self.owners[Owner::Free as usize].fetch_sub(1 << order, Ordering::AcqRel);
        self.owners[owner as usize].fetch_add(1 << order, Ordering::AcqRel);
        Ok((head, zero))
    }

    /// Takes a free block of `order` off the zone's lists, splitting a
    /// larger one if needed (`__rmqueue` + `expand`).
    pub(crate) fn take_block(&self, area: &mut FreeArea, order: u32) -> Option<Frame> {
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

    /// Gives a claimed block (its head already flagged `PG_FREE` by this
    /// caller) back to the zone: every frame becomes free (with
    /// `extra_flags`, e.g. `PG_POISON`), the accounting moves to
    /// [`Owner::Free`], and the block merges with its buddies.
    pub(crate) fn free_to_zone(&self, head: Frame, order: u32, extra_flags: u32) {
        let mut area = self.lock_zone();
        let mut counts = [0u64; Owner::COUNT];
        for i in 0..(1u64 << order) {
            if let Some(q) = self.pages.get(head.add(i)) {
                counts[q.owner() as usize] += 1;
                q.flags.store(PG_FREE | extra_flags, Ordering::Release);
                q.owner.store(Owner::Free as u32, Ordering::Relaxed);
                q.count.store(0, Ordering::Relaxed);
            }
        }
        for (o, c) in counts.iter().enumerate() {
            self.owners[o].fetch_sub(*c, Ordering::AcqRel);
        }
        self.owners[Owner::Free as usize].fetch_add(1 << order, Ordering::AcqRel);
        self.merge_free(&mut area, head, order);
    }

    /// Puts a free block (flags already `PG_FREE`) on the zone's lists,
    /// merged with its buddy while that is a free head of the same order.
    pub(crate) fn merge_free(&self, area: &mut FreeArea, head: Frame, order: u32) {
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
}

#[cfg(all(test, feature = "std"))]
mod tests {
    use crate::page_alloc::tests::pm;
    use crate::{Owner, MAX_ORDER};

    #[test]
    fn splits_and_merges_back_to_max_order() {
        let pm = pm();
        let free = pm.free_frames();
        // Every order from a fresh zone: each allocation splits a larger
        // block, naturally aligned.
        let blocks: std::vec::Vec<_> = (0..=MAX_ORDER)
            .map(|o| (pm.alloc_pages(o, Owner::Slab).unwrap(), o))
            .collect();
        for &(f, o) in &blocks {
            assert!(f.pfn().is_multiple_of(1 << o), "{f} order {o}");
        }
        for (f, o) in blocks.into_iter().rev() {
            pm.free_pages(f, o).unwrap();
        }
        assert_eq!(pm.free_frames(), free);
        // Merged again: as many max-order blocks as before.
        let mut big = std::vec::Vec::new();
        while let Ok(f) = pm.alloc_pages(MAX_ORDER, Owner::KernelData) {
            big.push(f);
        }
        assert_eq!(big.len() as u64, free >> MAX_ORDER);
        for f in big {
            pm.free_pages(f, MAX_ORDER).unwrap();
        }
    }
}
