//! The crate's locks and atomics: the workspace's one shim
//! ([`pgdcache_sync`]), which swaps them for `loom`'s under `--cfg loom`
//! and puts every lock in a named class for the lock-order checker.
//!
//! `pgd_lock` and `mmlist_lock` are [`crate::lock::StatLock`]s (a lock of
//! selectable kind with contention counters); they report to the same
//! checker through [`pgdcache_sync::lockdep::Held`].

pub(crate) use pgdcache_sync::atomic::AtomicU64;
pub(crate) use pgdcache_sync::classes;
pub(crate) use pgdcache_sync::{Mutex, RwLock};
