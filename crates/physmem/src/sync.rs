//! The page allocator's locks, from the workspace's shim (`pgdcache-sync`):
//! `zone->lock` (class [`ZONE`]) and the per-CPU page lists' locks (class
//! [`PCP`], which nests outside `zone`).
//!
//! They are `spin` locks, except under `--cfg loom_physmem` (with
//! `--cfg loom`), where they are loom's, so that the page allocator's own
//! model (`tests/loom_pcp.rs`) explores every order in which CPUs take them.
//! Plain `--cfg loom` keeps them as spin locks ([`unmodelled`]): the pgd
//! system's models study `pgd_lock`, the ticket and the converted entries,
//! and a scheduling point at every frame allocation would only multiply
//! their interleavings. With the shim's `lockdep` feature (physmem's tests
//! turn it on) every acquisition is checked against the workspace's lock
//! order.
//!
//! [`unmodelled`]: pgdcache_sync::unmodelled

pub(crate) use pgdcache_sync::classes::{PCP, ZONE};

#[cfg(not(loom_physmem))]
pub(crate) use pgdcache_sync::unmodelled::{SpinLock as Lock, SpinLockGuard as LockGuard};

#[cfg(loom_physmem)]
pub(crate) use pgdcache_sync::{SpinLock as Lock, SpinLockGuard as LockGuard};
