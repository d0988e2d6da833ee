//! Frame accounting: how many frames each [`Owner`] holds.
//!
//! Leak checks (every task exited, every pgd destroyed: are we back to the
//! boot figures?) need exact per-owner counts at any time. The zone keeps
//! its counts in atomics updated under `zone->lock`; each CPU's page list
//! keeps its own delta under its lock (as Linux keeps per-CPU
//! `page_state`), so the per-CPU hot path touches no shared line;
//! [`PhysMemory::stats`] sums them.

use crate::addr::Frame;
use crate::mem::PhysMem;
use crate::page::Owner;
use crate::page_alloc::PhysMemory;
use core::sync::atomic::Ordering;

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

impl<M: PhysMem> PhysMemory<M> {
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
}

#[cfg(all(test, feature = "std"))]
mod tests {
    use crate::page_alloc::tests::pm;
    use crate::{Owner, PAGE_SIZE};

    #[test]
    fn owners_add_up_and_follow_set_owner() {
        let pm = pm();
        let st = pm.stats();
        assert_eq!(st.total, st.by_owner.iter().sum::<u64>());
        assert_eq!(st.used(), st.of(Owner::Reserved));
        assert_eq!(st.of(Owner::Reserved), (1 << 20) / PAGE_SIZE);
        let f = pm.alloc_pages(1, Owner::Slab).unwrap();
        pm.set_owner(f, 1, Owner::PgdPage);
        let st = pm.stats();
        assert_eq!((st.of(Owner::Slab), st.of(Owner::PgdPage)), (0, 2));
        assert_eq!(st.total, st.by_owner.iter().sum::<u64>());
        pm.free_pages(f, 1).unwrap();
        // A free frame is not re-tagged.
        pm.set_owner(f, 1, Owner::UserData);
        assert_eq!(pm.stats().of(Owner::UserData), 0);
        assert_eq!(pm.stats().used(), (1 << 20) / PAGE_SIZE);
    }
}
