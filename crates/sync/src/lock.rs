//! The mutual-exclusion locks of the shim: one API, three backends.
//!
//! * [`SpinLock`] — the kernel's `spinlock_t`: `spin`'s test-and-set lock
//!   (never sleeps, works in `no_std`), loom's mutex under `--cfg loom`.
//! * [`Mutex`] — a lock that may sleep: `parking_lot`'s with the `std`
//!   feature, `spin`'s without (a bare-metal kernel has nothing to sleep
//!   on), loom's under `--cfg loom`.
//! * [`unmodelled::SpinLock`] — `spin`'s even under loom, for locks a model
//!   must not see (each acquisition would be a scheduling point that only
//!   multiplies the interleavings of what the model studies).
//!
//! Each lock belongs to a [`LockClass`] and reports every acquisition to
//! [`lockdep`](crate::lockdep) (nothing when it is off): the check happens
//! *before* blocking, so an inversion is reported instead of deadlocking.

use crate::lockdep::Held;
use crate::LockClass;
use core::fmt;
use core::ops::{Deref, DerefMut};

/// loom's mutex with an infallible `lock()` (a model thread that panicked
/// poisons it; the model is failing anyway, so the data is handed on).
#[cfg(loom)]
mod loom_be {
    pub(super) type Inner<T> = loom::sync::Mutex<T>;
    pub(super) type Guard<'a, T> = loom::sync::MutexGuard<'a, T>;
    pub(super) fn new<T>(v: T) -> Inner<T> {
        loom::sync::Mutex::new(v)
    }
    pub(super) fn lock<T>(l: &Inner<T>) -> Guard<'_, T> {
        l.lock().unwrap_or_else(|e| e.into_inner())
    }
    pub(super) fn try_lock<T>(l: &Inner<T>) -> Option<Guard<'_, T>> {
        match l.try_lock() {
            Ok(g) => Some(g),
            Err(std::sync::TryLockError::Poisoned(e)) => Some(e.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => None,
        }
    }
}

/// `spin`'s test-and-set mutex, whatever the configuration.
mod raw_be {
    pub(super) type Inner<T> = spin::Mutex<T>;
    pub(super) type Guard<'a, T> = spin::MutexGuard<'a, T>;
    pub(super) fn new<T>(v: T) -> Inner<T> {
        spin::Mutex::new(v)
    }
    pub(super) fn lock<T>(l: &Inner<T>) -> Guard<'_, T> {
        l.lock()
    }
    pub(super) fn try_lock<T>(l: &Inner<T>) -> Option<Guard<'_, T>> {
        l.try_lock()
    }
}

/// [`SpinLock`]'s backend.
mod spin_be {
    #[cfg(loom)]
    pub(super) use super::loom_be::*;
    #[cfg(not(loom))]
    pub(super) use super::raw_be::*;
}

/// [`Mutex`]'s backend.
mod sleep_be {
    #[cfg(loom)]
    pub(super) use super::loom_be::*;
    #[cfg(all(not(loom), not(feature = "std")))]
    pub(super) use super::raw_be::*;
    #[cfg(all(not(loom), feature = "std"))]
    pub(super) use parking::*;

    #[cfg(all(not(loom), feature = "std"))]
    mod parking {
        pub(crate) type Inner<T> = parking_lot::Mutex<T>;
        pub(crate) type Guard<'a, T> = parking_lot::MutexGuard<'a, T>;
        pub(crate) fn new<T>(v: T) -> Inner<T> {
            parking_lot::Mutex::new(v)
        }
        pub(crate) fn lock<T>(l: &Inner<T>) -> Guard<'_, T> {
            l.lock()
        }
        pub(crate) fn try_lock<T>(l: &Inner<T>) -> Option<Guard<'_, T>> {
            l.try_lock()
        }
    }
}

macro_rules! shim_lock {
    ($(#[$doc:meta])* $Lock:ident, $(#[$gdoc:meta])* $Guard:ident, $be:ident) => {
        $(#[$doc])*
        pub struct $Lock<T> {
            inner: $be::Inner<T>,
            class: &'static LockClass,
        }

        $(#[$gdoc])*
        #[must_use = "the lock is released when the guard is dropped"]
        pub struct $Guard<'a, T> {
            // Dropped first: the lock is released, then lockdep's record.
            inner: $be::Guard<'a, T>,
            _held: Held,
        }

        impl<T> $Lock<T> {
            /// An unlocked lock of class `class` around `value`.
            pub fn new(class: &'static LockClass, value: T) -> Self {
                $Lock {
                    inner: $be::new(value),
                    class,
                }
            }

            /// The lock's class.
            pub fn class(&self) -> &'static LockClass {
                self.class
            }

            /// The lock's identity for lockdep: its address.
            #[inline]
            fn instance(&self) -> usize {
                core::ptr::from_ref(self) as usize
            }

            /// Takes the lock, spinning (or sleeping) until it is free.
            #[cfg_attr(all(feature = "lockdep", debug_assertions, not(loom)), track_caller)]
            #[inline]
            pub fn lock(&self) -> $Guard<'_, T> {
                self.lock_nested(0)
            }

            /// Takes the lock as subclass `subclass` of its class (Linux's
            /// `spin_lock_nested`): for a second lock of one class held at
            /// once, in a fixed order (e.g. two CPUs' lists, lower CPU first).
            #[cfg_attr(all(feature = "lockdep", debug_assertions, not(loom)), track_caller)]
            #[inline]
            pub fn lock_nested(&self, subclass: u8) -> $Guard<'_, T> {
                let held = Held::acquire_instance(self.class, subclass, self.instance());
                $Guard {
                    inner: $be::lock(&self.inner),
                    _held: held,
                }
            }

            /// Takes the lock if it is free, without waiting.
            #[cfg_attr(all(feature = "lockdep", debug_assertions, not(loom)), track_caller)]
            #[inline]
            pub fn try_lock(&self) -> Option<$Guard<'_, T>> {
                let inner = $be::try_lock(&self.inner)?;
                Some($Guard {
                    inner,
                    _held: Held::try_acquired(self.class, self.instance()),
                })
            }
        }

        impl<T> fmt::Debug for $Lock<T> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($Lock))
                    .field("class", &self.class.name())
                    .finish_non_exhaustive()
            }
        }

        impl<T> Deref for $Guard<'_, T> {
            type Target = T;
            #[inline]
            fn deref(&self) -> &T {
                &self.inner
            }
        }

        impl<T> DerefMut for $Guard<'_, T> {
            #[inline]
            fn deref_mut(&mut self) -> &mut T {
                &mut self.inner
            }
        }
    };
}

shim_lock!(
    /// The kernel's `spinlock_t`: `spin`'s lock, loom's under `--cfg loom`.
    SpinLock,
    /// The guard of a [`SpinLock`].
    SpinLockGuard,
    spin_be
);

shim_lock!(
    /// A lock that may sleep: `parking_lot`'s with `std`, `spin`'s without,
    /// loom's under `--cfg loom`.
    Mutex,
    /// The guard of a [`Mutex`].
    MutexGuard,
    sleep_be
);

/// Locks that stay `spin`'s under loom.
pub mod unmodelled {
    use super::*;

    shim_lock!(
        /// `spin`'s lock in every configuration, loom included: for the
        /// locks of a layer a model does not study.
        SpinLock,
        /// The guard of an [`unmodelled::SpinLock`](SpinLock).
        SpinLockGuard,
        raw_be
    );
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    static T: LockClass = LockClass::new("test_lock");

    #[test]
    fn every_flavour_locks_excludes_and_tries() {
        let s = SpinLock::new(&T, 1);
        let m = Mutex::new(&T, 2);
        let u = unmodelled::SpinLock::new(&T, 3);
        {
            let mut g = s.lock();
            *g += 10;
            assert!(s.try_lock().is_none());
        }
        assert_eq!(*s.try_lock().expect("free"), 11);
        {
            let _g = m.lock();
            assert!(m.try_lock().is_none());
        }
        *m.lock() += 1;
        assert_eq!(*m.lock(), 3);
        *u.lock_nested(0) += 1;
        assert_eq!(*u.lock(), 4);
        assert_eq!(s.class().name(), "test_lock");
        assert_eq!(
            alloc::format!("{s:?} {u:?}"),
            "SpinLock { class: \"test_lock\", .. } SpinLock { class: \"test_lock\", .. }"
        );
    }

    #[test]
    fn two_threads_count_under_the_lock() {
        let s = SpinLock::new(&T, 0u64);
        std::thread::scope(|sc| {
            for _ in 0..2 {
                sc.spawn(|| {
                    for _ in 0..10_000 {
                        *s.lock() += 1;
                    }
                });
            }
        });
        assert_eq!(*s.lock(), 20_000);
    }
}
