//! A lockdep: the lock-order checker of Linux (`CONFIG_PROVE_LOCKING`),
//! small.
//!
//! A deadlock between two locks needs two threads taking them in opposite
//! orders *at the same moment*; a stress test rarely hits that window.
//! Lockdep instead remembers every order that ever occurred — "`B` was
//! taken while `A` was held" is an edge `A → B` of one global graph over
//! [lock classes](crate::LockClass) — and fails at the first acquisition
//! that would close a cycle, even if the two orders happened minutes apart
//! on different threads. Per thread it keeps the stack of held classes
//! (with where each was taken); an acquisition of `B` checks, for each held
//! `A`, that the edge `A → B` is known or that `B` does not already reach
//! `A`. Known edges are cached per thread, so the common acquisition costs
//! a thread-local read and a bit test per held lock.
//!
//! Failures panic with a `Violation` message: a lock order inversion
//! (naming both orders and where the first one was seen), recursive
//! locking (a lock taken again by the thread that holds it), or a release
//! of a class this thread does not hold.
//!
//! **Same-class nesting.** Two *different* locks of one class held at once
//! (CPU 1's `array_cache` pinned while CPU 0's is used; pgd_cache's and
//! pmd_cache's arrays on PAE) are allowed and add no order: lockdep cannot
//! tell which of two instances is "first", so an ABBA between two
//! instances of one class goes unseen — unless the inner one is taken with
//! [`SpinLock::lock_nested`](crate::SpinLock::lock_nested), whose subclass
//! is a node of its own, ordered and checked like a class (Linux's
//! `spin_lock_nested`). Linux reports unannotated same-class nesting as
//! "possible recursive locking"; here it is a documented allowance, because
//! objcache nests per-CPU arrays of one class by design.
//!
//! The checker is active with the `lockdep` feature in builds with debug
//! assertions (a debug option, as `CONFIG_PROVE_LOCKING` is: `cargo test`
//! and the `test32` profile check lock order; `--release` builds, benches
//! and examples measured in release do not pay for it even when a
//! dev-dependency turns the feature on), and not under `--cfg loom` (loom
//! runs its threads on one OS thread, whose single thread-local stack would
//! mix them). Otherwise [`Held`] is a zero-sized type and every hook an
//! empty inline function.
//!
//! Locks built outside the shim report through the same hooks:
//!
//! ```
//! use pgdcache_sync::{classes, lockdep};
//! let _held = lockdep::Held::acquire(&classes::PGD_LOCK); // before taking it
//! // ... take the custom lock, work, release it ...
//! drop(_held); // after releasing it
//! ```

use crate::LockClass;

/// Whether the checker is compiled in (the `lockdep` feature, debug
/// assertions, not loom).
pub const ENABLED: bool = cfg!(all(feature = "lockdep", debug_assertions, not(loom)));

#[cfg(all(feature = "lockdep", debug_assertions, not(loom)))]
mod graph;
#[cfg(all(feature = "lockdep", debug_assertions, not(loom)))]
pub use graph::{Violation, MAX_NODES};

/// One acquisition of a class, recorded for as long as it lives: create it
/// just before taking a lock, drop it just after releasing it.
#[must_use = "the class counts as released when this is dropped"]
#[derive(Debug)]
pub struct Held {
    #[cfg(all(feature = "lockdep", debug_assertions, not(loom)))]
    class: &'static LockClass,
    #[cfg(all(feature = "lockdep", debug_assertions, not(loom)))]
    subclass: u8,
    #[cfg(all(feature = "lockdep", debug_assertions, not(loom)))]
    instance: usize,
}

impl Held {
    /// Records that this thread is about to take a lock of `class`;
    /// panics if that inverts an order seen before.
    #[cfg_attr(all(feature = "lockdep", debug_assertions, not(loom)), track_caller)]
    #[inline]
    pub fn acquire(class: &'static LockClass) -> Held {
        Self::acquire_nested(class, 0)
    }

    /// [`acquire`](Self::acquire) of subclass `subclass` (Linux's
    /// `spin_lock_nested`): a subclass is its own node of the graph, so the
    /// order between two locks of one class is checked.
    #[cfg_attr(all(feature = "lockdep", debug_assertions, not(loom)), track_caller)]
    #[inline]
    pub fn acquire_nested(class: &'static LockClass, subclass: u8) -> Held {
        Self::acquire_instance(class, subclass, 0)
    }

    /// [`acquire_nested`](Self::acquire_nested) of the lock at address
    /// `instance` (0: unknown), which lets lockdep tell a lock taken twice
    /// (a certain self-deadlock, reported) from two locks of one class
    /// (allowed, see the [module docs](self)).
    #[cfg_attr(all(feature = "lockdep", debug_assertions, not(loom)), track_caller)]
    #[inline]
    pub fn acquire_instance(class: &'static LockClass, subclass: u8, instance: usize) -> Held {
        #[cfg(all(feature = "lockdep", debug_assertions, not(loom)))]
        {
            let at = core::panic::Location::caller();
            graph::acquire(class, subclass, instance, at, false);
            Held {
                class,
                subclass,
                instance,
            }
        }
        #[cfg(not(all(feature = "lockdep", debug_assertions, not(loom))))]
        {
            let _ = (class, subclass, instance);
            Held {}
        }
    }

    /// Records a lock of `class` (at address `instance`, 0: unknown)
    /// taken by a successful `try_lock`: it
    /// cannot deadlock, so no order is checked or added for it, but it is
    /// held (locks taken under it are ordered after it).
    #[cfg_attr(all(feature = "lockdep", debug_assertions, not(loom)), track_caller)]
    #[inline]
    pub fn try_acquired(class: &'static LockClass, instance: usize) -> Held {
        #[cfg(all(feature = "lockdep", debug_assertions, not(loom)))]
        {
            graph::acquire(class, 0, instance, core::panic::Location::caller(), true);
            Held {
                class,
                subclass: 0,
                instance,
            }
        }
        #[cfg(not(all(feature = "lockdep", debug_assertions, not(loom))))]
        {
            let _ = (class, instance);
            Held {}
        }
    }

    /// Forgets the record without releasing it, for [`release`]-style
    /// manual hooks.
    #[inline]
    // `Held` has a `Drop` only when the checker is compiled in.
    #[allow(clippy::forget_non_drop)]
    pub fn leak(self) {
        core::mem::forget(self);
    }
}

#[cfg(all(feature = "lockdep", debug_assertions, not(loom)))]
impl Drop for Held {
    #[track_caller]
    fn drop(&mut self) {
        let at = core::panic::Location::caller();
        graph::release(self.class, self.subclass, self.instance, at);
    }
}

/// Manual hook: this thread takes a lock of `class` (pair with [`release`]).
#[cfg_attr(all(feature = "lockdep", debug_assertions, not(loom)), track_caller)]
#[inline]
pub fn acquire(class: &'static LockClass) {
    Held::acquire(class).leak();
}

/// Manual hook: this thread released a lock of `class`.
#[cfg_attr(all(feature = "lockdep", debug_assertions, not(loom)), track_caller)]
#[inline]
pub fn release(class: &'static LockClass) {
    release_nested(class, 0);
}

/// Manual hook: this thread released subclass `subclass` of `class`.
#[cfg_attr(all(feature = "lockdep", debug_assertions, not(loom)), track_caller)]
#[inline]
pub fn release_nested(class: &'static LockClass, subclass: u8) {
    #[cfg(all(feature = "lockdep", debug_assertions, not(loom)))]
    graph::release(class, subclass, 0, core::panic::Location::caller());
    #[cfg(not(all(feature = "lockdep", debug_assertions, not(loom))))]
    let _ = (class, subclass);
}

/// The classes this thread holds, outermost first, with their subclasses
/// (always empty when the checker is off).
pub fn held() -> alloc::vec::Vec<(&'static str, u8)> {
    #[cfg(all(feature = "lockdep", debug_assertions, not(loom)))]
    return graph::held();
    #[cfg(not(all(feature = "lockdep", debug_assertions, not(loom))))]
    alloc::vec::Vec::new()
}

/// Every order seen so far, as `(held, taken, where taken)` with class
/// names (`name/subclass` for a subclass), for reports (always empty when
/// the checker is off).
pub fn orders() -> alloc::vec::Vec<(
    alloc::string::String,
    alloc::string::String,
    alloc::string::String,
)> {
    #[cfg(all(feature = "lockdep", debug_assertions, not(loom)))]
    return graph::orders();
    #[cfg(not(all(feature = "lockdep", debug_assertions, not(loom))))]
    alloc::vec::Vec::new()
}

/// Whether the order `before → … → after` (any subclasses) has been seen
/// (always false when the checker is off).
pub fn order_seen(before: &'static LockClass, after: &'static LockClass) -> bool {
    #[cfg(all(feature = "lockdep", debug_assertions, not(loom)))]
    return graph::order_seen(before, after);
    #[cfg(not(all(feature = "lockdep", debug_assertions, not(loom))))]
    {
        let _ = (before, after);
        false
    }
}

#[cfg(all(test, feature = "lockdep", debug_assertions, not(loom)))]
mod tests {
    use super::*;
    use crate::SpinLock;

    #[test]
    fn one_order_on_two_threads_passes_and_is_recorded() {
        static A: LockClass = LockClass::new("ok_a");
        static B: LockClass = LockClass::new("ok_b");
        let a = SpinLock::new(&A, 0);
        let b = SpinLock::new(&B, 0);
        std::thread::scope(|s| {
            for _ in 0..2 {
                s.spawn(|| {
                    for _ in 0..100 {
                        let _ga = a.lock();
                        let _gb = b.lock();
                        assert_eq!(held(), [("ok_a", 0), ("ok_b", 0)]);
                    }
                    assert!(held().is_empty());
                });
            }
        });
        assert!(order_seen(&A, &B));
        assert!(!order_seen(&B, &A));
        // Taking them one at a time, in any order, is no order at all.
        drop(b.lock());
        drop(a.lock());
    }

    #[test]
    #[should_panic(expected = "lock order inversion between `inv_b` and `inv_a`")]
    fn opposite_orders_on_two_threads_panic() {
        static A: LockClass = LockClass::new("inv_a");
        static B: LockClass = LockClass::new("inv_b");
        let a = SpinLock::new(&A, ());
        let b = SpinLock::new(&B, ());
        // The first thread takes a then b and is done long before the
        // second one runs: no deadlock can happen here, lockdep still sees
        // the one that could.
        std::thread::scope(|s| {
            s.spawn(|| {
                let _ga = a.lock();
                let _gb = b.lock();
            });
        });
        let _gb = b.lock();
        let _ga = a.lock();
    }

    #[test]
    fn the_inversion_message_names_both_orders_and_where() {
        static A: LockClass = LockClass::new("msg_a");
        static B: LockClass = LockClass::new("msg_b");
        let (a, b) = (SpinLock::new(&A, ()), SpinLock::new(&B, ()));
        {
            let _ga = a.lock();
            let _gb = b.lock();
        }
        let err = std::panic::catch_unwind(core::panic::AssertUnwindSafe(|| {
            let _gb = b.lock();
            let _ga = a.lock();
        }))
        .expect_err("the inversion must panic");
        let msg = err.downcast_ref::<std::string::String>().expect("message");
        assert!(msg.contains("takes `msg_a`"), "{msg}");
        assert!(msg.contains("while holding `msg_b`"), "{msg}");
        assert!(msg.contains("order msg_b → msg_a"), "{msg}");
        assert!(
            msg.contains("opposite order msg_a → msg_b was seen first"),
            "{msg}"
        );
        assert!(msg.contains("src/lockdep.rs"), "{msg}");
        // The thread's stack unwound cleanly: b was released, a never taken.
        assert!(held().is_empty());
    }

    #[test]
    #[should_panic(expected = "lock order inversion between `cyc_c` and `cyc_a`")]
    fn a_cycle_through_three_classes_panics() {
        static A: LockClass = LockClass::new("cyc_a");
        static B: LockClass = LockClass::new("cyc_b");
        static C: LockClass = LockClass::new("cyc_c");
        let (a, b, c) = (
            SpinLock::new(&A, ()),
            SpinLock::new(&B, ()),
            SpinLock::new(&C, ()),
        );
        {
            let _ga = a.lock();
            let _gb = b.lock();
        }
        {
            let _gb = b.lock();
            let _gc = c.lock();
        }
        assert!(order_seen(&A, &C));
        let _gc = c.lock();
        let _ga = a.lock();
    }

    #[test]
    #[should_panic(expected = "recursive locking of `rec`")]
    fn one_lock_taken_twice_panics_instead_of_hanging() {
        static R: LockClass = LockClass::new("rec");
        let x = SpinLock::new(&R, ());
        let _g1 = x.lock();
        let _g2 = x.lock();
    }

    #[test]
    fn two_locks_of_one_class_nest_without_an_order() {
        static S: LockClass = LockClass::new("same");
        static O: LockClass = LockClass::new("same_other");
        let (x, y) = (SpinLock::new(&S, ()), SpinLock::new(&S, ()));
        let o = SpinLock::new(&O, ());
        {
            let _gx = x.lock();
            let _gy = y.lock();
            let _go = o.lock();
            assert_eq!(held(), [("same", 0), ("same", 0), ("same_other", 0)]);
        }
        {
            let _gy = y.lock();
            let _gx = x.lock();
        }
        assert!(order_seen(&S, &O));
        assert!(!order_seen(&S, &S));
    }

    #[test]
    fn annotated_nesting_is_a_subclass() {
        static N: LockClass = LockClass::new("nest");
        let (x, y) = (SpinLock::new(&N, ()), SpinLock::new(&N, ()));
        let _gx = x.lock();
        let _gy = y.lock_nested(1);
        assert_eq!(held(), [("nest", 0), ("nest", 1)]);
    }

    #[test]
    #[should_panic(expected = "lock order inversion between `nest_inv/1` and `nest_inv`")]
    fn nesting_subclasses_in_the_opposite_order_panics() {
        static N: LockClass = LockClass::new("nest_inv");
        let (x, y) = (SpinLock::new(&N, ()), SpinLock::new(&N, ()));
        {
            let _gx = x.lock();
            let _gy = y.lock_nested(1);
        }
        let _gy = y.lock_nested(1);
        let _gx = x.lock();
    }

    #[test]
    fn a_trylock_adds_no_order_but_orders_what_follows() {
        static T: LockClass = LockClass::new("try_t");
        static U: LockClass = LockClass::new("try_u");
        let (t, u) = (SpinLock::new(&T, ()), SpinLock::new(&U, ()));
        {
            let _gu = u.lock();
            let _gt = t.try_lock().expect("free");
        }
        assert!(!order_seen(&U, &T));
        {
            let _gt = t.try_lock().expect("free");
            let _gu = u.lock();
        }
        assert!(order_seen(&T, &U));
    }

    #[test]
    fn manual_hooks_report_like_shim_locks() {
        static M: LockClass = LockClass::new("manual_m");
        static S: LockClass = LockClass::new("manual_s");
        let s = SpinLock::new(&S, ());
        acquire(&M);
        drop(s.lock());
        assert_eq!(held(), [("manual_m", 0)]);
        release(&M);
        assert!(held().is_empty());
        assert!(order_seen(&M, &S));
        assert!(orders()
            .iter()
            .any(|(a, b, at)| a == "manual_m" && b == "manual_s" && at.contains("lockdep.rs")));
    }

    #[test]
    #[should_panic(expected = "bad unlock balance: releasing `unheld`")]
    fn releasing_an_unheld_class_panics() {
        static U: LockClass = LockClass::new("unheld");
        release(&U);
    }

    #[test]
    fn releases_out_of_order_are_fine() {
        static A: LockClass = LockClass::new("ooo_a");
        static B: LockClass = LockClass::new("ooo_b");
        let (a, b) = (SpinLock::new(&A, ()), SpinLock::new(&B, ()));
        let ga = a.lock();
        let gb = b.lock();
        drop(ga);
        assert_eq!(held(), [("ooo_b", 0)]);
        drop(gb);
        assert!(held().is_empty());
    }
}
