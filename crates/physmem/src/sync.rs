//! The page allocator's locks: `zone->lock` and the per-CPU page lists'
//! locks.
//!
//! They are `spin` mutexes, except under `--cfg loom_physmem` (with
//! `--cfg loom`), where they are loom's, so that the page allocator's own
//! model (`tests/loom_pcp.rs`) explores every order in which CPUs take them.
//! Plain `--cfg loom` keeps them as spin locks: the pgd system's models
//! study `pgd_lock`, the ticket and the converted entries, and a scheduling
//! point at every frame allocation would only multiply their interleavings.

#[cfg(not(loom_physmem))]
pub(crate) use spin::{Mutex as Lock, MutexGuard as LockGuard};

#[cfg(loom_physmem)]
pub(crate) use self::model::{Lock, LockGuard};

#[cfg(loom_physmem)]
mod model {
    /// A loom mutex with the `spin` API (no poisoning to handle).
    #[derive(Debug, Default)]
    pub(crate) struct Lock<T>(loom::sync::Mutex<T>);

    /// Its guard.
    pub(crate) type LockGuard<'a, T> = loom::sync::MutexGuard<'a, T>;

    impl<T> Lock<T> {
        pub(crate) fn new(v: T) -> Self {
            Lock(loom::sync::Mutex::new(v))
        }

        pub(crate) fn lock(&self) -> LockGuard<'_, T> {
            self.0.lock().unwrap_or_else(|e| e.into_inner())
        }
    }
}
