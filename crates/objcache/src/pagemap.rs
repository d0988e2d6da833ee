//! `virt_to_page` for slab pages: a lock-free radix map from page frame to slab.
//!
//! Linux finds the slab of an object with `virt_to_page(objp)` and the
//! `page->list` back-pointers that `cache_grow` set (`SET_PAGE_SLAB`): a lookup
//! that reads only the `mem_map`, never the object.  Page frames here come from
//! an arbitrary [`PageSource`](crate::PageSource), so there is no `mem_map`;
//! instead each cache keeps a small radix tree (shaped like an x86 page table:
//! 512-entry nodes, 9 bits of page-frame number per level) whose leaves point
//! at the slab descriptor owning that frame.
//!
//! Readers (`free` on any CPU) walk it without locks.  Writers (slab grow and
//! destroy) are serialised by the cache's `list_lock`; interior nodes are
//! created with a CAS and never freed before the map is dropped, and leaves
//! point at slab descriptors that, likewise, live until the cache is dropped,
//! so a racing reader can at worst see a stale (but valid) descriptor, which it
//! re-validates.  A pointer that is not in the map is simply "foreign": the map
//! never dereferences the address it is asked about.
//!
//! The map uses `core` atomics even under `cfg(loom)`: it is written only under
//! the list lock and is not what the loom models are about, and thousands of
//! loom atomics per execution would make the models slow.

use alloc::boxed::Box;
use core::ptr;
use core::sync::atomic::{AtomicPtr, Ordering};

use crate::page::PAGE_SHIFT;

const LEVEL_BITS: u32 = 9;
const FANOUT: usize = 1 << LEVEL_BITS;
/// Levels needed to cover every page-frame number of the host address space.
const LEVELS: u32 = (usize::BITS - PAGE_SHIFT).div_ceil(LEVEL_BITS);

struct Node {
    slots: [AtomicPtr<()>; FANOUT],
}

impl Node {
    fn new_boxed() -> Box<Node> {
        Box::new(Node {
            slots: [const { AtomicPtr::new(ptr::null_mut()) }; FANOUT],
        })
    }
}

/// Levels skipped by the `low` shortcut: page-frame numbers below
/// `2^(LEVEL_BITS * (LEVELS - SKIP))` (host addresses below 2^48 on 64-bit
/// hosts, i.e. all of user space) start the walk at level `SKIP`.
const SKIP: u32 = LEVELS.saturating_sub(4);

/// Entries in the direct-mapped hint table (8 KiB on 64-bit hosts).
const HINTS: usize = 1024;

/// Page-frame → slab-descriptor map (see the module docs).
pub(crate) struct PageMap {
    /// A direct-mapped table in front of the tree, indexed by
    /// `pfn % HINTS`: the value last `set` for some page with that index,
    /// or null.  It is only a *hint* — a colliding page may have
    /// overwritten it, and removal clears the slot whichever page it
    /// described — so callers must validate what [`PageMap::hint`] returns
    /// and fall back to [`PageMap::lookup`] (see `KmemCache::locate`).  It
    /// turns the usual free-path lookup from a six-load dependent chain
    /// into one load.
    hints: Box<[AtomicPtr<()>; HINTS]>,
    root: Box<Node>,
    /// The level-`SKIP` node under index 0 of every level above it, once it
    /// exists (a cached prefix of the walk; owned by the tree, not by this).
    low: AtomicPtr<()>,
}

#[inline]
fn index(pfn: usize, level: u32) -> usize {
    let shift = LEVEL_BITS * (LEVELS - 1 - level);
    // `shift` < usize::BITS because LEVELS * LEVEL_BITS < usize::BITS + LEVEL_BITS.
    (pfn >> shift) & (FANOUT - 1)
}

impl PageMap {
    pub(crate) fn new() -> Self {
        Self {
            hints: Box::new([const { AtomicPtr::new(ptr::null_mut()) }; HINTS]),
            root: Node::new_boxed(),
            low: AtomicPtr::new(ptr::null_mut()),
        }
    }

    /// The hint for the page containing `addr`: null, or a value that was
    /// `set` for *some* page whose frame number is congruent modulo
    /// `HINTS` (not necessarily this one; the caller must validate it).
    #[inline(always)]
    pub(crate) fn hint(&self, addr: usize) -> *mut () {
        let i = (addr >> PAGE_SHIFT) % HINTS;
        self.hints[i].load(Ordering::Acquire)
    }

    /// Returns the value stored for the page containing `addr`, or null.
    #[inline]
    pub(crate) fn lookup(&self, addr: usize) -> *mut () {
        let pfn = addr >> PAGE_SHIFT;
        let mut node: &Node = &self.root;
        let mut start = 0;
        if SKIP > 0 && pfn >> (LEVEL_BITS * (LEVELS - SKIP)) == 0 {
            let low = self.low.load(Ordering::Acquire);
            if low.is_null() {
                return ptr::null_mut();
            }
            // SAFETY: `low` holds a node pointer published by `set` (Release
            // store after the node was linked into the tree); nodes live
            // until `Drop`, which needs `&mut self`.
            node = unsafe { &*(low as *const Node) };
            start = SKIP;
        }
        for level in start..LEVELS - 1 {
            let next = node.slots[index(pfn, level)].load(Ordering::Acquire);
            if next.is_null() {
                return ptr::null_mut();
            }
            // SAFETY: non-null interior slots only ever hold pointers obtained
            // from `Box::into_raw(Node)` in `insert`; such nodes are freed only
            // in `Drop`, which needs `&mut self`, so the node outlives `&self`.
            // The Acquire load pairs with the Release CAS that published it.
            node = unsafe { &*(next as *const Node) };
        }
        node.slots[index(pfn, LEVELS - 1)].load(Ordering::Acquire)
    }

    /// Stores `value` for the page containing `addr` (null removes it).
    ///
    /// Callers serialise `set` calls (the cache's list lock); lookups may run
    /// concurrently.
    pub(crate) fn set(&self, addr: usize, value: *mut ()) {
        let pfn = addr >> PAGE_SHIFT;
        let mut node: &Node = &self.root;
        for level in 0..LEVELS - 1 {
            let slot = &node.slots[index(pfn, level)];
            let mut next = slot.load(Ordering::Acquire);
            if next.is_null() {
                if value.is_null() {
                    return; // nothing to remove
                }
                let fresh = Box::into_raw(Node::new_boxed()) as *mut ();
                match slot.compare_exchange(
                    ptr::null_mut(),
                    fresh,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                ) {
                    Ok(_) => next = fresh,
                    Err(current) => {
                        // SAFETY: `fresh` came from `Box::into_raw` just above
                        // and was never published.
                        drop(unsafe { Box::from_raw(fresh as *mut Node) });
                        next = current;
                    }
                }
            }
            // SAFETY: as in `lookup`: interior slots hold live boxed nodes.
            node = unsafe { &*(next as *const Node) };
            if SKIP > 0 && level + 1 == SKIP && pfn >> (LEVEL_BITS * (LEVELS - SKIP)) == 0 {
                self.low.store(next, Ordering::Release);
            }
        }
        node.slots[index(pfn, LEVELS - 1)].store(value, Ordering::Release);
        // After the tree, so a hint never names a value the tree lacks.
        // Removal clears the slot even if another page's value sits there:
        // that only costs the other page a tree walk.
        self.hints[pfn % HINTS].store(value, Ordering::Release);
    }
}

fn free_subtree(node: Box<Node>, level: u32) {
    if level < LEVELS - 1 {
        free_children(&node, level);
    }
}

fn free_children(node: &Node, level: u32) {
    for slot in node.slots.iter() {
        let child = slot.load(Ordering::Relaxed);
        if !child.is_null() {
            // SAFETY: interior slots hold pointers from `Box::into_raw`, each
            // owned by exactly one slot; we are in `Drop` (exclusive access).
            free_subtree(unsafe { Box::from_raw(child as *mut Node) }, level + 1);
        }
    }
}

impl Drop for PageMap {
    fn drop(&mut self) {
        if LEVELS > 1 {
            free_children(&self.root, 0);
        }
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    /// A high user-space page of the host (a typical mmap address).
    #[cfg(target_pointer_width = "64")]
    const HI: usize = 0x7f00_1234_5000;
    #[cfg(not(target_pointer_width = "64"))]
    const HI: usize = 0xb7f4_5000;

    #[test]
    fn set_lookup_remove() {
        let m = PageMap::new();
        let v = 0x1000usize as *mut ();
        assert!(m.lookup(HI).is_null());
        m.set(HI, v);
        assert_eq!(m.lookup(HI + 0xfff), v);
        assert!(m.lookup(HI + 0x1000).is_null());
        assert!(m.lookup(usize::MAX).is_null());
        m.set(usize::MAX, v);
        assert_eq!(m.lookup(usize::MAX - 5), v);
        m.set(HI, ptr::null_mut());
        assert!(m.lookup(HI).is_null());
        let m = PageMap::new();
        m.set(usize::MAX, v);
        assert!(m.lookup(0x1000).is_null()); // no low node yet
        m.set(0x1000, v);
        assert_eq!(m.lookup(0x1fff), v);
        assert!(m.lookup(0x2000).is_null());
        assert_eq!(m.lookup(usize::MAX), v);
        assert_eq!(m.hint(0x1fff), v);
        assert_eq!(m.hint(0x1000 + HINTS * 4096), v); // a colliding page: only a hint
        m.set(0x1000, ptr::null_mut());
        assert!(m.hint(0x1000).is_null());
        assert_eq!(m.lookup(usize::MAX), v);
    }
}
