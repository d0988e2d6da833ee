//! Deliberately broken protocol variants, for the negative `loom` models.
//!
//! A proof has teeth only if it fails on a broken protocol. Under
//! `--cfg loom` a test can switch the pgd system to one of these variants
//! (`crate::Kernel::inject_bug`) and check that loom finds the race; in
//! every other build `Bugs::is` is a constant `false` the compiler removes.

/// Deliberately broken protocol variants for the negative `loom` models.
#[cfg(loom)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Bug {
    /// The protocol as written.
    None = 0,
    /// `pgd_ctor` copies the kernel part before taking `pgd_lock`.
    CtorCopiesOutsideLock = 1,
    /// `pgd_ctor` links the pgd in a second critical section, after the copy's.
    ListAddAfterUnlock = 2,
    /// `mm_join` checks the ticket and refreshes before taking `mmlist_lock`.
    TicketReadBeforeJoin = 3,
    /// The vmalloc code before the fix: `vfree` takes the area off
    /// `vmlist` and unmaps it after dropping `vmlist_lock` (Linux's
    /// `remove_vm_area` unmaps under the lock), and `vmalloc` writes its
    /// leaf entries without looking at them.
    VfreeUnmapsAfterUnlock = 4,
    /// The old `vfree` order, but with the leaf check of the fix: the race
    /// turns from a silently cleared pte into a refused `vmalloc`.
    VfreeUnmapsAfterUnlockLeafChecked = 5,
}

/// The variant in force (always `Bug::None` outside loom).
#[derive(Debug, Default)]
pub(crate) struct Bugs {
    #[cfg(loom)]
    on: core::sync::atomic::AtomicU8,
}

/// Names of the variants, usable in every build (the code paths test them).
pub(crate) mod id {
    pub(crate) const CTOR_COPIES_OUTSIDE_LOCK: u8 = 1;
    pub(crate) const LIST_ADD_AFTER_UNLOCK: u8 = 2;
    pub(crate) const TICKET_READ_BEFORE_JOIN: u8 = 3;
    pub(crate) const VFREE_UNMAPS_AFTER_UNLOCK: u8 = 4;
    #[cfg_attr(not(loom), allow(dead_code))]
    pub(crate) const VFREE_UNMAPS_AFTER_UNLOCK_LEAF_CHECKED: u8 = 5;
}

impl Bugs {
    /// Switches to `bug`.
    #[cfg(loom)]
    pub(crate) fn set(&self, bug: Bug) {
        self.on
            .store(bug as u8, core::sync::atomic::Ordering::Relaxed);
    }

    /// True when variant `b` (one of `id`) is in force.
    #[cfg(loom)]
    pub(crate) fn is(&self, b: u8) -> bool {
        self.on.load(core::sync::atomic::Ordering::Relaxed) == b
    }

    /// True when variant `b` is in force: never, outside loom.
    #[cfg(not(loom))]
    #[inline(always)]
    pub(crate) fn is(&self, _b: u8) -> bool {
        false
    }
}
