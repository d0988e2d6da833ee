//! # pgdcache — the pgd caching system of "reslabify pgds and pmds"
//!
//! The seed patch (Linux 2.5.69) and the designs around it, on simulated
//! physical memory: [`Kernel`] boots `swapper_pg_dir`, hands out pgds
//! through one of six [`Scheme`]s, changes kernel mappings with
//! [`Kernel::change_page_attr`] and [`Kernel::vmalloc`], and
//! [`Kernel::verify`] checks every pgd — live and cached — against the
//! reference.
//!
//! The crate is `no_std` + `alloc` (it needs atomics and a global
//! allocator), so a Rust kernel can run it on its own direct map
//! ([`physmem::Lowmem`]); the default `std` feature adds the simulator's
//! RAM as the default memory, `parking_lot` for the parking `pgd_lock`
//! variant and `std::time::Instant` as the clock for lock hold times.
//! Without `std`, hold times need a clock from [`set_clock`], and
//! [`LockKind::Mutex`] spins (there is no scheduler to park on).
//!
//! # Quick start
//!
//! Boot a 2-level kernel with the seed's scheme, fork a task (its pgd comes
//! preconstructed from `pgd_cache`), split a direct-map large page with
//! `change_page_attr` while a pgd sits cached, and let the checker walk
//! every pgd, live and cached:
//!
//! ```
//! use pgdcache::mm::TaskSize;
//! use pgdcache::{Kernel, KernelConfig, Scheme};
//! use physmem::{SimMemory, VirtAddr};
//! use std::sync::Arc;
//! use x86paging::{EntryFlags, PagingMode};
//!
//! let pm = Arc::new(SimMemory::new(64 << 20)?);
//! let k: Kernel = Kernel::new(pm, &KernelConfig::new(PagingMode::TwoLevel, Scheme::SlabPgdList))?;
//! let init = k.exec_mm(0, TaskSize::SMALL)?;
//! let child = k.fork_mm(1, &init)?;
//! k.exit_mm(1, child)?; // its pgd goes back to the cache, still constructed
//!
//! // Map 4 KiB of the direct map uncached: the 4 MiB page is split, and the
//! // new pte table is installed in every pgd on pgd_list, cached ones too.
//! let va = VirtAddr::new(0xc000_0000 + (16 << 20));
//! let uncached = k.page_kernel_at(va).unwrap() | EntryFlags::PCD | EntryFlags::PWT;
//! k.change_page_attr(va, 1, uncached)?;
//! k.global_flush_tlb();
//! assert!(k.verify()?.is_clean());
//!
//! // Under the 2.5.60 slabification (Scheme::SlabUnsynced) the cached pgd
//! // would keep the stale 4 MiB entry, and verify() would say so.
//! k.exit_mm(0, init)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![no_std]
#![warn(missing_docs)]

extern crate alloc;
#[cfg(any(feature = "std", loom, test))]
extern crate std;

/// What `std`'s prelude would bring: the `alloc` types and macros.
mod prelude {
    pub(crate) use alloc::boxed::Box;
    pub(crate) use alloc::format;
    pub(crate) use alloc::string::{String, ToString};
    pub(crate) use alloc::vec::Vec;
}

mod bug;
pub mod check;
pub mod cpa;
pub mod error;
pub mod kernel;
pub mod lock;
pub mod mm;
pub mod pages;
pub mod pgd;
pub mod scheme;
pub mod stats;
pub mod swapper;
mod sync;
mod time;
mod tlb;
pub mod tracker;
pub mod vmalloc;

#[cfg(loom)]
pub use bug::Bug;
pub use check::{Report, Violation, ViolationKind};
pub use cpa::CpaError;
pub use error::KernelError;
pub use kernel::{DefaultMem, Kernel, KernelConfig, PgdCpu};
pub use lock::{LockKind, LockStats, StatLock};
pub use mm::{Mm, MmError};
pub use pgd::{CpuPgds, OwnedPgd, PaePgdCpu, Pgd, WholePgdCpu};
pub use scheme::Scheme;
pub use stats::KernelStats;
pub use swapper::KernelMem;
pub use time::set_clock;
pub use vmalloc::VmError;
