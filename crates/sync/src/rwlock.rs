//! The shim's reader-writer lock: `parking_lot`'s with `std`, `spin`'s
//! without, loom's under `--cfg loom`, with infallible `read()`/`write()`.
//!
//! Lockdep treats a read acquisition like a write one (it is checked and
//! ordered the same way). That is stricter than Linux's recursive-read
//! rules, and right for the locks here: a writer-preferring `RwLock` can
//! deadlock on a read-read cycle with a waiting writer.

use crate::lockdep::Held;
use crate::LockClass;
use core::fmt;
use core::ops::{Deref, DerefMut};

#[cfg(loom)]
use loom::sync as imp;
#[cfg(all(not(loom), feature = "std"))]
use parking_lot as imp;
#[cfg(all(not(loom), not(feature = "std")))]
use spin as imp;

/// A reader-writer lock of a [`LockClass`].
pub struct RwLock<T> {
    inner: imp::RwLock<T>,
    class: &'static LockClass,
}

/// Shared access through a [`RwLock`].
#[must_use = "the lock is released when the guard is dropped"]
pub struct RwLockReadGuard<'a, T> {
    inner: imp::RwLockReadGuard<'a, T>,
    _held: Held,
}

/// Exclusive access through a [`RwLock`].
#[must_use = "the lock is released when the guard is dropped"]
pub struct RwLockWriteGuard<'a, T> {
    inner: imp::RwLockWriteGuard<'a, T>,
    _held: Held,
}

impl<T> RwLock<T> {
    /// An unlocked lock of class `class` around `value`.
    pub fn new(class: &'static LockClass, value: T) -> Self {
        RwLock {
            inner: imp::RwLock::new(value),
            class,
        }
    }

    /// The lock's class.
    pub fn class(&self) -> &'static LockClass {
        self.class
    }

    /// Shared access.
    #[cfg_attr(all(feature = "lockdep", debug_assertions, not(loom)), track_caller)]
    #[inline]
    pub fn read(&self) -> RwLockReadGuard<'_, T> {
        let held = Held::acquire_instance(self.class, 0, core::ptr::from_ref(self) as usize);
        #[cfg(loom)]
        let inner = self.inner.read().unwrap_or_else(|e| e.into_inner());
        #[cfg(not(loom))]
        let inner = self.inner.read();
        RwLockReadGuard { inner, _held: held }
    }

    /// Exclusive access.
    #[cfg_attr(all(feature = "lockdep", debug_assertions, not(loom)), track_caller)]
    #[inline]
    pub fn write(&self) -> RwLockWriteGuard<'_, T> {
        let held = Held::acquire_instance(self.class, 0, core::ptr::from_ref(self) as usize);
        #[cfg(loom)]
        let inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        #[cfg(not(loom))]
        let inner = self.inner.write();
        RwLockWriteGuard { inner, _held: held }
    }
}

impl<T> fmt::Debug for RwLock<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RwLock")
            .field("class", &self.class.name())
            .finish_non_exhaustive()
    }
}

impl<T> Deref for RwLockReadGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.inner
    }
}

impl<T> Deref for RwLockWriteGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.inner
    }
}

impl<T> DerefMut for RwLockWriteGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.inner
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    static R: LockClass = LockClass::new("test_rwlock");

    #[test]
    fn readers_share_and_writers_exclude() {
        let l = RwLock::new(&R, 5);
        *l.write() += 1;
        assert_eq!(*l.read(), 6);
        assert_eq!(l.class().name(), "test_rwlock");
        assert_eq!(
            alloc::format!("{l:?}"),
            "RwLock { class: \"test_rwlock\", .. }"
        );
    }
}
