//! # pgdcache — the pgd caching system of "reslabify pgds and pmds"
//!
//! The seed patch (Linux 2.5.69) and the designs around it, on simulated
//! physical memory: [`Kernel`] boots `swapper_pg_dir`, hands out pgds
//! through one of five [`Scheme`]s, changes kernel mappings with
//! [`Kernel::change_page_attr`] and [`Kernel::vmalloc`], and
//! [`Kernel::verify`] checks every pgd — live and cached — against the
//! reference.
#![warn(missing_docs)]

pub mod check;
pub mod cpa;
pub mod kernel;
pub mod lock;
pub mod mm;
pub mod pages;
pub mod scheme;
mod sync;
pub mod vmalloc;

pub use check::{Report, Violation, ViolationKind};
pub use cpa::CpaError;
#[cfg(loom)]
pub use kernel::Bug;
pub use kernel::{Kernel, KernelConfig, KernelError, KernelMem, KernelStats, Pgd};
pub use lock::{LockKind, LockStats, StatLock};
pub use mm::{Mm, MmError};
pub use scheme::Scheme;
pub use vmalloc::VmError;
