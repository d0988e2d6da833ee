//! # pgdcache-sync — the workspace's one lock shim and its lock-order checker
//!
//! Every lock of the pgd system's layers (`physmem`, `objcache`, `pgdcache`)
//! is built here, for two reasons.
//!
//! **One loom shim.** Under `--cfg loom` the locks and atomics become
//! `loom`'s, so that a model checker explores every interleaving of the
//! *real* code paths; otherwise they are `spin`'s (usable in a `no_std`
//! kernel) or, for [`Mutex`] and [`RwLock`] with the `std` feature,
//! `parking_lot`'s. Every lock has the same infallible `lock()` in every
//! configuration (a loom lock poisoned by a panicking model thread hands
//! its data on: the model is failing anyway). [`unmodelled::SpinLock`]
//! stays a spin lock even under loom, for locks a model must not turn into
//! scheduling points (the page allocator's, outside its own models).
//!
//! **A small lockdep.** Every lock belongs to a named [`LockClass`] (a
//! `static`, one per kind of lock: [`classes::ZONE`], [`classes::PGD_LOCK`],
//! …). With the `lockdep` feature, [`lockdep`] records per thread the stack
//! of held classes and, globally, every "A held while B taken" order, and
//! panics at the first acquisition that closes a cycle, naming both orders
//! and where each was first seen — a deadlock reported the first time the
//! two orders merely *occur*, on any threads, at any time. Locks built
//! elsewhere (pgdcache's `pgd_lock` variants) report through
//! [`lockdep::Held`]. Without the feature, in release builds (no debug
//! assertions), or under loom, every hook is an empty inline function.
//!
//! # The lock order of the pgd system
//!
//! Outermost first; an arrow is "may be held while taking":
//!
//! ```text
//! cpa_lock ──→ pgd_lock            set_pmd_pte rewrites every listed pgd (slab-pgd-list)
//! cpa_lock ──→ mmlist_lock         ... or every live pgd (slab-ticket, uncached)
//! cpa_lock ──→ pcp ──→ zone        change_page_attr allocates the pte pages of its
//!                                  splits with cpa_lock held (Linux 2.5.69 drops
//!                                  cpa_lock around alloc_pages; legal here as long as
//!                                  nothing takes cpa_lock under pcp or zone)
//! vmlist_lock ──→ pcp ──→ zone     vmalloc allocates its frames under vmlist_lock
//! array_cache ──→ list_lock        a per-CPU array refills from, or flushes to, the slabs
//! array_cache ──→ pgd_lock         a cache grows inside alloc with the CPU's array lock
//!                                  held (list_lock dropped): pgd_ctor links the new pgd
//!                                  into pgd_list; a flush runs pgd_dtor (unlink)
//! array_cache ──→ pcp ──→ zone     ... and gets or frees its slab pages (PageSource)
//! array_cache ──→ array_cache      PAE: pmd_cache's array while pgd_cache's is pinned
//!                                  (two locks of one class: allowed, see below)
//! pcp ──→ zone                     a per-CPU page list is refilled, trimmed or drained
//! ```
//!
//! `zone` is the innermost lock: nothing is taken under it. No path may
//! take `cpa_lock`, `vmlist_lock`, `array_cache` or `list_lock` under
//! `pgd_lock` or `mmlist_lock` (a constructor never converts a page, a
//! conversion never allocates from an object cache while it rewrites
//! pgds). The orders between `physmem`'s and `objcache`'s locks are checked
//! by their tests under lockdep; `pgdcache`'s own locks (`pgd_lock` in its
//! three variants, `mmlist_lock`, `cpa_lock`, `vmlist_lock`) join the check
//! once they are built by the shim or report through [`lockdep::Held`].
//!
//! Same-class nesting (two CPUs' `array_cache` locks, or pgd_cache's and
//! pmd_cache's, held at once) is allowed and adds no order; a lock taken
//! again by its holder is reported; [`SpinLock::lock_nested`] makes the
//! inner lock a subclass whose order is checked (see [`lockdep`]).
#![no_std]
#![warn(missing_docs)]

extern crate alloc;
#[cfg(any(test, feature = "std", loom))]
extern crate std;

pub mod atomic;
pub mod class;
pub mod classes;
mod lock;
pub mod lockdep;
mod rwlock;

pub use class::LockClass;
pub use lock::{unmodelled, Mutex, MutexGuard, SpinLock, SpinLockGuard};
pub use rwlock::{RwLock, RwLockReadGuard, RwLockWriteGuard};
