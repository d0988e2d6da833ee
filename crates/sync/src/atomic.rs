//! Atomics a model checker should see: `core`'s, or `loom`'s under
//! `--cfg loom` (where every access is a scheduling point).
//!
//! Use them for state whose interleavings matter (a ticket generation, a
//! counter read to take a decision); keep `core::sync::atomic` for
//! statistics and metadata a model would only multiply.

pub use core::sync::atomic::Ordering;
#[cfg(not(loom))]
pub use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, AtomicUsize};
#[cfg(loom)]
pub use loom::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, AtomicUsize};
