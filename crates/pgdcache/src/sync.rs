//! Synchronisation primitives, swappable for `loom`'s.
//!
//! The lock protocols of the pgd system are model-checked with `loom`
//! (`--cfg loom`, see `tests/loom.rs`): the *real* code paths run, with
//! every lock and the ticket generation replaced by loom's instrumented
//! versions so that loom can explore every interleaving. Outside loom these
//! are `parking_lot`'s locks (`spin`'s without `std`) and `core`'s atomics.

#[cfg(not(loom))]
pub(crate) use core::sync::atomic::AtomicU64;

#[cfg(all(not(loom), feature = "std"))]
use parking_lot as locks;
#[cfg(all(not(loom), not(feature = "std")))]
use spin as locks;

#[cfg(loom)]
pub(crate) use loom::sync::atomic::AtomicU64;

/// A mutex with an infallible `lock()`.
pub(crate) struct Mutex<T> {
    #[cfg(not(loom))]
    inner: locks::Mutex<T>,
    #[cfg(loom)]
    inner: loom::sync::Mutex<T>,
}

#[cfg(not(loom))]
pub(crate) type MutexGuard<'a, T> = locks::MutexGuard<'a, T>;
#[cfg(loom)]
pub(crate) type MutexGuard<'a, T> = loom::sync::MutexGuard<'a, T>;

impl<T> Mutex<T> {
    pub(crate) fn new(v: T) -> Self {
        Mutex {
            #[cfg(not(loom))]
            inner: locks::Mutex::new(v),
            #[cfg(loom)]
            inner: loom::sync::Mutex::new(v),
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, T> {
        #[cfg(not(loom))]
        return self.inner.lock();
        #[cfg(loom)]
        return self.inner.lock().unwrap_or_else(|e| e.into_inner());
    }
}

/// A reader-writer lock with infallible `read()`/`write()`.
pub(crate) struct RwLock<T> {
    #[cfg(not(loom))]
    inner: locks::RwLock<T>,
    #[cfg(loom)]
    inner: loom::sync::RwLock<T>,
}

impl<T> RwLock<T> {
    pub(crate) fn new(v: T) -> Self {
        RwLock {
            #[cfg(not(loom))]
            inner: locks::RwLock::new(v),
            #[cfg(loom)]
            inner: loom::sync::RwLock::new(v),
        }
    }

    pub(crate) fn read(&self) -> impl core::ops::Deref<Target = T> + '_ {
        #[cfg(not(loom))]
        return self.inner.read();
        #[cfg(loom)]
        return self.inner.read().unwrap_or_else(|e| e.into_inner());
    }

    pub(crate) fn write(&self) -> impl core::ops::DerefMut<Target = T> + '_ {
        #[cfg(not(loom))]
        return self.inner.write();
        #[cfg(loom)]
        return self.inner.write().unwrap_or_else(|e| e.into_inner());
    }
}
