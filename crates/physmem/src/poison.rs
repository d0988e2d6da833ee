//! Freed-frame poisoning (Linux's `CONFIG_PAGE_POISONING`), an option of
//! the page allocator.
//!
//! With it on (the default), a freed block is filled with [`POISON_FREE`]
//! and each of its frames flagged `PG_POISON`; when a flagged frame is
//! allocated again, the allocator checks the poison is intact. A byte that
//! changed in between is a write through a dangling reference (a stale
//! pgd entry into a freed pte page, say) and is counted in
//! [`PoisonStats`], with the first corrupted address — as Linux's
//! `check_poison_mem` reports "pagealloc: memory corruption". The poison
//! is also what a page-table walk that ignores `PG_FREE` would read
//! (`0x6b6b6000` as an address).
//!
//! With it off (the production configuration, for timing), free and
//! allocation neither fill nor check: a freed frame keeps its contents.
//! [`PhysMemory::set_poisoning`] switches it at any time; frames freed
//! while it was on are checked only if it is still on when they are
//! allocated.
//!
//! Under `--cfg loom` the poison is filled but not checked: the check
//! would read words that the pgd system's models watch, adding
//! scheduling points that only multiply their interleavings.

use crate::addr::{Frame, PhysAddr, PAGE_SIZE};
use crate::mem::PhysMem;
use crate::page::PG_POISON;
use crate::page_alloc::PhysMemory;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Byte written over every freed frame (the slab's `POISON_FREE`).
pub const POISON_FREE: u8 = 0x6b;

/// The poison as a 64-bit word.
const POISON_WORD: u64 = u64::from_ne_bytes([POISON_FREE; 8]);

/// What the poison checks found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoisonStats {
    /// Whether poisoning is on now.
    pub enabled: bool,
    /// Frames filled with poison at free.
    pub filled: u64,
    /// Frames checked at allocation.
    pub checked: u64,
    /// Frames whose poison had changed: use-after-free writes.
    pub corrupted: u64,
    /// The first changed 64-bit word seen, if any.
    pub first_corrupted: Option<PhysAddr>,
}

/// The option and its counters.
#[derive(Debug)]
pub(crate) struct Poison {
    enabled: AtomicBool,
    filled: AtomicU64,
    checked: AtomicU64,
    corrupted: AtomicU64,
    /// Address of the first changed word plus one; 0: none.
    first: AtomicU64,
}

impl Poison {
    pub(crate) fn new(enabled: bool) -> Self {
        Poison {
            enabled: AtomicBool::new(enabled),
            filled: AtomicU64::new(0),
            checked: AtomicU64::new(0),
            corrupted: AtomicU64::new(0),
            first: AtomicU64::new(0),
        }
    }
}

impl<M: PhysMem> PhysMemory<M> {
    /// Turns freed-frame poisoning on or off (on by default).
    pub fn set_poisoning(&self, on: bool) {
        self.poison.enabled.store(on, Ordering::Relaxed);
    }

    /// `self` with poisoning on or off, for building.
    pub fn with_poisoning(self, on: bool) -> Self {
        self.set_poisoning(on);
        self
    }

    /// Whether freed frames are poisoned.
    pub fn poisoning(&self) -> bool {
        self.poison.enabled.load(Ordering::Relaxed)
    }

    /// The poison checks' counters.
    pub fn poison_stats(&self) -> PoisonStats {
        let first = self.poison.first.load(Ordering::Acquire);
        PoisonStats {
            enabled: self.poisoning(),
            filled: self.poison.filled.load(Ordering::Relaxed),
            checked: self.poison.checked.load(Ordering::Relaxed),
            corrupted: self.poison.corrupted.load(Ordering::Relaxed),
            first_corrupted: first.checked_sub(1).map(PhysAddr::new),
        }
    }

    /// On free, while the caller still owns the block: fills it with
    /// poison if poisoning is on, and returns the flag its frames get
    /// (`PG_POISON`, or 0).
    pub(crate) fn poison_block(&self, head: Frame, order: u32) -> u32 {
        if !self.poisoning() {
            return 0;
        }
        if self
            .mem
            .fill(head.start(), PAGE_SIZE << order, POISON_FREE)
            .is_err()
        {
            return 0;
        }
        self.poison.filled.fetch_add(1 << order, Ordering::Relaxed);
        PG_POISON
    }

    /// On allocation, outside every lock: checks the poison of each frame
    /// of the block that was freed poisoned, and clears its flag.
    pub(crate) fn check_poison(&self, head: Frame, order: u32) {
        if !self.poisoning() {
            return;
        }
        for i in 0..(1u64 << order) {
            let frame = head.add(i);
            let Some(p) = self.pages.get(frame) else {
                continue;
            };
            if p.flags.fetch_and(!PG_POISON, Ordering::AcqRel) & PG_POISON == 0 {
                continue;
            }
            if cfg!(loom) {
                continue;
            }
            self.poison.checked.fetch_add(1, Ordering::Relaxed);
            let words = (PAGE_SIZE / 8) as usize;
            if let Ok(Some(w)) = self.mem.first_other_u64(frame.start(), words, POISON_WORD) {
                self.poison.corrupted.fetch_add(1, Ordering::Relaxed);
                let at = frame.start().as_u64() + 8 * w as u64;
                let _ = self.poison.first.compare_exchange(
                    0,
                    at + 1,
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                );
            }
        }
    }
}

#[cfg(all(test, feature = "std"))]
mod tests {
    use crate::page_alloc::tests::pm;
    use crate::{enter_cpu, Owner, PhysMem, PoisonStats, PAGE_SIZE};

    #[test]
    fn on_a_use_after_free_write_is_caught_at_the_next_allocation() {
        let pm = pm();
        assert!(pm.poisoning());
        // On a CPU, the frame just freed is the next one handed out (LIFO).
        let _cpu = enter_cpu(0);
        let f = pm.alloc_frame(Owner::UserTable).unwrap();
        pm.free_frame(f).unwrap();
        assert_eq!(pm.load_u64(f.start()).unwrap(), 0x6b6b_6b6b_6b6b_6b6b);
        // Intact poison: checked, clean.
        assert_eq!(pm.alloc_frame(Owner::UserTable).unwrap(), f);
        assert_eq!(pm.poison_stats().corrupted, 0);
        assert_eq!(pm.poison_stats().checked, 1);
        pm.free_frame(f).unwrap();
        // A write through a dangling reference after the free.
        let at = crate::PhysAddr::new(f.start().as_u64() + 0x88);
        pm.store_u32(at, 0xdead).unwrap();
        assert_eq!(pm.alloc_frame(Owner::UserTable).unwrap(), f);
        let st = pm.poison_stats();
        assert_eq!((st.corrupted, st.first_corrupted), (1, Some(at)));
        assert_eq!((st.filled, st.checked), (2, 2));
        pm.free_frame(f).unwrap();
        // A whole block on the zone path: the corrupted frame inside it.
        let b = pm.alloc_pages(2, Owner::Slab).unwrap();
        pm.free_pages(b, 2).unwrap();
        pm.store_u64(b.add(3).start(), 0).unwrap();
        let again = pm.alloc_pages(2, Owner::Slab).unwrap();
        assert_eq!(again, b);
        assert_eq!(pm.poison_stats().corrupted, 2);
    }

    #[test]
    fn off_nothing_is_filled_or_checked() {
        let pm = pm().with_poisoning(false);
        assert!(!pm.poisoning());
        let _cpu = enter_cpu(0);
        let f = pm.alloc_frame(Owner::UserData).unwrap();
        pm.store_u64(f.start(), 0x1234).unwrap();
        pm.free_frame(f).unwrap();
        // Freed (the flag says so) but not filled.
        assert_eq!(pm.frame_state(f), crate::FrameState::Freed);
        assert_eq!(pm.load_u64(f.start()).unwrap(), 0x1234);
        assert_eq!(
            pm.load_u64(crate::PhysAddr::new(f.start().as_u64() + PAGE_SIZE - 8))
                .unwrap(),
            0
        );
        pm.store_u64(f.start(), 0x5678).unwrap();
        assert_eq!(pm.alloc_frame(Owner::UserData).unwrap(), f);
        assert_eq!(
            pm.poison_stats(),
            PoisonStats {
                enabled: false,
                ..PoisonStats::default()
            }
        );
    }

    #[test]
    fn frames_freed_while_on_are_not_checked_once_it_is_off() {
        let pm = pm();
        let _cpu = enter_cpu(0);
        let f = pm.alloc_frame(Owner::UserData).unwrap();
        pm.free_frame(f).unwrap();
        pm.store_u64(f.start(), 1).unwrap();
        pm.set_poisoning(false);
        assert_eq!(pm.alloc_frame(Owner::UserData).unwrap(), f);
        pm.set_poisoning(true);
        // Its flag was not consumed by a check, but the frame is
        // allocated: a later free refills and re-flags it.
        pm.free_frame(f).unwrap();
        assert_eq!(pm.alloc_frame(Owner::UserData).unwrap(), f);
        let st = pm.poison_stats();
        assert_eq!((st.checked, st.corrupted), (1, 0));
    }

    #[test]
    fn a_frame_freed_while_off_is_not_checked_once_it_is_on_again() {
        // Freed poisoned, allocated and written while off, freed while
        // off, allocated once poisoning is back on: it holds no poison,
        // and no check may call its contents a corruption.
        let pm = pm();
        let _cpu = enter_cpu(0);
        let f = pm.alloc_frame(Owner::UserData).unwrap();
        pm.free_frame(f).unwrap();
        pm.set_poisoning(false);
        assert_eq!(pm.alloc_frame(Owner::UserData).unwrap(), f);
        pm.store_u64(f.start(), 1).unwrap();
        pm.free_frame(f).unwrap();
        pm.set_poisoning(true);
        assert_eq!(pm.alloc_frame(Owner::UserData).unwrap(), f);
        let st = pm.poison_stats();
        assert_eq!(st.corrupted, 0, "{st:?}");
    }
}
