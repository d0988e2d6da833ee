//! Synchronisation primitives, swappable for `loom`'s.
//!
//! The kernel's slab allocator is built from two kinds of locks: the per-cache
//! `list_lock` (a spinlock protecting the full/partial/free slab lists) and the
//! per-CPU `array_cache`, which Linux protects by disabling interrupts on the
//! owning CPU.  A user-space model has no "owning CPU" that can be pinned, so
//! every per-CPU array gets its own (in practice uncontended) spinlock.
//!
//! Everything that a concurrency model should explore goes through this module:
//! under `--cfg loom` it re-exports `loom`'s `Mutex` and atomics, otherwise
//! `spin::Mutex` and `core::sync::atomic`.  The [`Mutex`] wrapper gives both the
//! same infallible `lock()` signature so the allocator code is identical.

#[cfg(not(loom))]
pub(crate) use core::sync::atomic::{AtomicU8, AtomicUsize};
#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicU8, AtomicUsize};

/// A mutual-exclusion lock with an infallible `lock()`.
///
/// Backed by `spin::Mutex` (usable in `no_std`, never sleeps) or, under
/// `cfg(loom)`, by `loom::sync::Mutex` so that a model checker can permute the
/// critical sections.
#[derive(Debug)]
pub(crate) struct Mutex<T> {
    #[cfg(not(loom))]
    inner: spin::Mutex<T>,
    #[cfg(loom)]
    inner: loom::sync::Mutex<T>,
}

/// Guard returned by [`Mutex::lock`].
#[cfg(not(loom))]
pub(crate) type MutexGuard<'a, T> = spin::MutexGuard<'a, T>;
/// Guard returned by [`Mutex::lock`].
#[cfg(loom)]
pub(crate) type MutexGuard<'a, T> = loom::sync::MutexGuard<'a, T>;

impl<T> Mutex<T> {
    /// Creates an unlocked mutex holding `value`.
    pub(crate) fn new(value: T) -> Self {
        Self {
            #[cfg(not(loom))]
            inner: spin::Mutex::new(value),
            #[cfg(loom)]
            inner: loom::sync::Mutex::new(value),
        }
    }

    /// Acquires the lock, spinning until it is available.
    #[inline]
    pub(crate) fn lock(&self) -> MutexGuard<'_, T> {
        #[cfg(not(loom))]
        {
            self.inner.lock()
        }
        #[cfg(loom)]
        {
            // A poisoned lock only means another model thread panicked; the
            // model is failing anyway, so keep going with the data.
            self.inner.lock().unwrap_or_else(|e| e.into_inner())
        }
    }

    /// Acquires the lock if it is free, without spinning.
    #[inline]
    pub(crate) fn try_lock(&self) -> Option<MutexGuard<'_, T>> {
        #[cfg(not(loom))]
        {
            self.inner.try_lock()
        }
        #[cfg(loom)]
        {
            match self.inner.try_lock() {
                Ok(g) => Some(g),
                Err(std::sync::TryLockError::Poisoned(e)) => Some(e.into_inner()),
                Err(std::sync::TryLockError::WouldBlock) => None,
            }
        }
    }
}

/// A cell for per-CPU memory: plain loads and stores, exclusive by protocol
/// rather than by a lock word inside it.
///
/// `core::cell::UnsafeCell` normally; under `cfg(loom)` loom's, which checks
/// that every access happens-after the previous conflicting one, so a
/// hand-off that does not order the owner's accesses before the
/// requester's is reported as a causality violation.  The API is loom's
/// (`with`/`with_mut` with a raw pointer).
#[derive(Debug)]
pub(crate) struct UnsafeCell<T> {
    #[cfg(not(loom))]
    inner: core::cell::UnsafeCell<T>,
    #[cfg(loom)]
    inner: loom::cell::UnsafeCell<T>,
}

impl<T> UnsafeCell<T> {
    /// Wraps `value`.
    pub(crate) fn new(value: T) -> Self {
        Self {
            #[cfg(not(loom))]
            inner: core::cell::UnsafeCell::new(value),
            #[cfg(loom)]
            inner: loom::cell::UnsafeCell::new(value),
        }
    }

    /// Calls `f` with a shared pointer to the value.  The caller must have
    /// the right to read it (no concurrent writer).
    #[cfg_attr(not(loom), allow(dead_code))] // only the negative loom model reads unlocked
    #[inline(always)]
    pub(crate) fn with<R>(&self, f: impl FnOnce(*const T) -> R) -> R {
        #[cfg(not(loom))]
        {
            f(self.inner.get())
        }
        #[cfg(loom)]
        {
            self.inner.with(f)
        }
    }

    /// Calls `f` with an exclusive pointer to the value.  The caller must
    /// have the exclusive right to it (no concurrent reader or writer).
    #[inline(always)]
    pub(crate) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
        #[cfg(not(loom))]
        {
            f(self.inner.get())
        }
        #[cfg(loom)]
        {
            self.inner.with_mut(f)
        }
    }
}

/// One iteration of a busy-wait: a `pause` normally, a yield to the model
/// checker under loom (which otherwise explores the spin forever).
#[inline(always)]
pub(crate) fn spin_wait() {
    #[cfg(not(loom))]
    core::hint::spin_loop();
    #[cfg(loom)]
    loom::thread::yield_now();
}
