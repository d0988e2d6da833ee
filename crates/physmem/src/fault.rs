//! Fault injection for the frame allocator.
//!
//! "Allocation failure at any point" has to be testable, so every frame
//! allocation asks the injector first. Two ways to make it fail: the Nth
//! allocation from now (one shot — for sweeping N over every allocation point
//! of an operation), or every allocation matching a predicate on the request
//! (its order and owner — e.g. "every page-table frame").

use crate::page::Owner;
use alloc::boxed::Box;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// What is being allocated, as the injector sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AllocRequest {
    /// Sequence number of this allocation (1 for the first ever).
    pub seq: u64,
    /// Buddy order (0 = one frame).
    pub order: u32,
    /// Who will own the frames.
    pub owner: Owner,
}

type Predicate = Box<dyn Fn(&AllocRequest) -> bool + Send + Sync>;

/// Decides which allocations fail.
pub struct FaultInjector {
    /// Allocations seen so far.
    seq: AtomicU64,
    /// Absolute sequence number that fails once; 0 = none armed.
    nth: AtomicU64,
    /// Fast-path flag: a predicate is installed.
    has_pred: AtomicBool,
    /// The predicate; its lock only serialises install/remove against use.
    pred: spin::Mutex<Option<Predicate>>,
    /// Failures injected so far.
    injected: AtomicU64,
}

impl Default for FaultInjector {
    fn default() -> Self {
        Self::new()
    }
}

impl core::fmt::Debug for FaultInjector {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("FaultInjector")
            .field("seq", &self.seq)
            .field("nth", &self.nth)
            .field("injected", &self.injected)
            .finish()
    }
}

impl FaultInjector {
    /// An injector that never fails anything.
    pub const fn new() -> Self {
        FaultInjector {
            seq: AtomicU64::new(0),
            nth: AtomicU64::new(0),
            has_pred: AtomicBool::new(false),
            pred: spin::Mutex::new(None),
            injected: AtomicU64::new(0),
        }
    }

    /// Makes the `n`th allocation from now fail (`n >= 1`), once.
    pub fn fail_nth(&self, n: u64) {
        let now = self.seq.load(Ordering::Acquire);
        self.nth.store(now + n.max(1), Ordering::Release);
    }

    /// Makes every allocation for which `pred` is true fail, until [`clear`](Self::clear).
    pub fn fail_when(&self, pred: impl Fn(&AllocRequest) -> bool + Send + Sync + 'static) {
        *self.pred.lock() = Some(Box::new(pred));
        self.has_pred.store(true, Ordering::Release);
    }

    /// Disarms everything.
    pub fn clear(&self) {
        self.nth.store(0, Ordering::Release);
        self.has_pred.store(false, Ordering::Release);
        *self.pred.lock() = None;
    }

    /// Number of allocations seen so far.
    pub fn allocations(&self) -> u64 {
        self.seq.load(Ordering::Acquire)
    }

    /// Number of failures injected so far.
    pub fn injected(&self) -> u64 {
        self.injected.load(Ordering::Acquire)
    }

    /// Called once per allocation: `Some(seq)` if it must fail.
    pub fn should_fail(&self, order: u32, owner: Owner) -> Option<u64> {
        let seq = self.seq.fetch_add(1, Ordering::AcqRel) + 1;
        let nth = self.nth.load(Ordering::Acquire);
        let mut fail = nth != 0
            && nth == seq
            && self
                .nth
                .compare_exchange(nth, 0, Ordering::AcqRel, Ordering::Acquire)
                .is_ok();
        if !fail && self.has_pred.load(Ordering::Acquire) {
            let req = AllocRequest { seq, order, owner };
            fail = self.pred.lock().as_ref().is_some_and(|p| p(&req));
        }
        if fail {
            self.injected.fetch_add(1, Ordering::AcqRel);
            Some(seq)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nth_fires_once() {
        let f = FaultInjector::new();
        f.fail_nth(3);
        let r: alloc::vec::Vec<bool> = (0..6)
            .map(|_| f.should_fail(0, Owner::Slab).is_some())
            .collect();
        assert_eq!(r, [false, false, true, false, false, false]);
        assert_eq!(f.injected(), 1);
    }

    #[test]
    fn predicate_until_cleared() {
        let f = FaultInjector::new();
        f.fail_when(|r| r.owner == Owner::KernelTable);
        assert!(f.should_fail(0, Owner::KernelTable).is_some());
        assert!(f.should_fail(0, Owner::Slab).is_none());
        f.clear();
        assert!(f.should_fail(0, Owner::KernelTable).is_none());
    }
}
