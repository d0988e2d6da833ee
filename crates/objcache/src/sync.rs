//! objcache's locks and atomics, from the workspace's shim (`pgdcache-sync`).
//!
//! The kernel's slab allocator is built from two kinds of locks: the per-cache
//! `list_lock` (a spinlock protecting the full/partial/free slab lists) and the
//! per-CPU `array_cache`, which Linux protects by disabling interrupts on the
//! owning CPU.  A user-space model has no "owning CPU" that can be pinned, so
//! every per-CPU array gets its own (in practice uncontended) spinlock.
//!
//! Both are the shim's [`SpinLock`] (`spin`'s, loom's under `--cfg loom`, so
//! a model checker can permute the critical sections), and both report to the
//! shim's lockdep under their classes: a lock around an `ArrayCache` is of
//! class [`ARRAY_CACHE`], one around the slab `Lists` of class [`LIST_LOCK`]
//! (the class follows the protected type, so the allocator code builds locks
//! with a plain `Mutex::new(value)`; [`Mutex::with_class`] names one
//! explicitly). The order is `array_cache` → `list_lock` → the page source's
//! locks; a constructor runs with `array_cache` held (`pgd_ctor` takes
//! `pgd_lock` there).

pub(crate) use pgdcache_sync::atomic::{AtomicU8, AtomicUsize};
use pgdcache_sync::classes::{ARRAY_CACHE, LIST_LOCK};
use pgdcache_sync::{LockClass, SpinLock};

/// The class of any other lock objcache builds.
static OBJCACHE: LockClass = LockClass::new("objcache");

/// Guard returned by [`Mutex::lock`].
pub(crate) type MutexGuard<'a, T> = pgdcache_sync::SpinLockGuard<'a, T>;

/// A spinlock with an infallible `lock()`, of the class of what it protects.
pub(crate) struct Mutex<T>(SpinLock<T>);

/// The lock class of a lock around a `T`: `array_cache` for a per-CPU
/// `ArrayCache`, `list_lock` for a cache's slab `Lists`.
fn class_of<T>() -> &'static LockClass {
    let ty = core::any::type_name::<T>();
    if ty.ends_with("::ArrayCache") {
        &ARRAY_CACHE
    } else if ty.ends_with("::Lists") {
        &LIST_LOCK
    } else {
        &OBJCACHE
    }
}

impl<T> Mutex<T> {
    /// Creates an unlocked mutex holding `value`, of the class of `T`.
    pub(crate) fn new(value: T) -> Self {
        Self::with_class(class_of::<T>(), value)
    }

    /// Creates an unlocked mutex of class `class` holding `value`.
    pub(crate) fn with_class(class: &'static LockClass, value: T) -> Self {
        Mutex(SpinLock::new(class, value))
    }

    /// Acquires the lock, spinning until it is available.
    #[inline]
    #[track_caller]
    pub(crate) fn lock(&self) -> MutexGuard<'_, T> {
        self.0.lock()
    }

    /// Acquires the lock if it is free, without spinning.
    #[inline]
    #[track_caller]
    pub(crate) fn try_lock(&self) -> Option<MutexGuard<'_, T>> {
        self.0.try_lock()
    }

    /// The lock's class (read by this module's tests, which loom builds
    /// leave out).
    #[cfg_attr(any(not(test), loom), allow(dead_code))]
    pub(crate) fn class(&self) -> &'static LockClass {
        self.0.class()
    }
}

impl<T> core::fmt::Debug for Mutex<T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn the_class_follows_the_protected_type() {
        let lists = Mutex::new(crate::slab::Lists::new(1, 1));
        assert_eq!(lists.class().name(), "list_lock");
        assert_eq!(Mutex::new(0u8).class().name(), "objcache");
        assert_eq!(
            Mutex::with_class(&ARRAY_CACHE, ()).class().name(),
            "array_cache"
        );
    }

    /// With the checker on (objcache's tests turn it on), a pinned CPU
    /// slot holds `array_cache`, and a constructor runs under it.
    #[cfg(feature = "std")]
    #[test]
    fn array_locks_report_as_array_cache() {
        use pgdcache_sync::lockdep;
        static CTOR_SAW: std::sync::Mutex<std::vec::Vec<(&str, u8)>> =
            std::sync::Mutex::new(std::vec::Vec::new());
        let cache = crate::CacheBuilder::new("lockdep-test", 64)
            .ctor(|_| *CTOR_SAW.lock().unwrap() = lockdep::held())
            .build(crate::SystemPageSource)
            .unwrap();
        {
            let mut cpu = cache.lock_cpu(0).unwrap();
            if lockdep::ENABLED {
                assert_eq!(lockdep::held(), [("array_cache", 0)]);
            }
            let obj = cpu.alloc().unwrap();
            cpu.free(obj).unwrap();
        }
        assert!(lockdep::held().is_empty());
        if lockdep::ENABLED {
            assert_eq!(CTOR_SAW.lock().unwrap()[0], ("array_cache", 0));
            use pgdcache_sync::classes::{ARRAY_CACHE, LIST_LOCK};
            assert!(lockdep::order_seen(&ARRAY_CACHE, &LIST_LOCK));
        }
        cache.destroy().unwrap();
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
