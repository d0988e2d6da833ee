//! # physmem — simulated physical memory for pgdcache
//!
//! The bottom layer: typed addresses ([`PhysAddr`], [`VirtAddr`], [`Frame`]),
//! the [`PhysMem`] seam through which all page-table code touches RAM,
//! per-frame metadata ([`Page`], the simulator's `struct page`), intrusive
//! frame lists ([`FrameList`], the `pgd_list` of the seed patch), and a buddy
//! frame allocator ([`PhysMemory`]) with per-CPU page lists, accounting,
//! freed-frame poisoning (an option, on by default) and fault injection.
//!
//! The core is `no_std` + `alloc`, including [`Lowmem`], a kernel's own
//! direct-mapped memory as a [`PhysMem`]; the `std` feature adds [`Ram`], a
//! `Lowmem` over one contiguous anonymous mapping that can be handed to KVM
//! as guest memory or exported as an image for QEMU.
//!
//! # Quick start
//!
//! A kernel hands its own direct map to the allocator as a [`Lowmem`] (here
//! a plain buffer stands in for the memory at `PAGE_OFFSET`), reserves the
//! first megabyte, and allocates, uses and frees frames:
//!
//! ```
//! use physmem::{Lowmem, Owner, PhysMem, PhysMemory};
//! use std::alloc::{alloc_zeroed, dealloc, Layout};
//! use std::ptr::NonNull;
//!
//! let layout = Layout::from_size_align(16 << 20, 4096).unwrap();
//! // SAFETY: a non-zero size.
//! let base = NonNull::new(unsafe { alloc_zeroed(layout) }).unwrap();
//! // SAFETY: 16 MiB, page-aligned, zeroed, reached only through `mem`,
//! // freed below after `pm` is gone.
//! let mem = unsafe { Lowmem::new(base, 16 << 20) };
//! let pm = PhysMemory::with_memory(mem, 1 << 20);
//!
//! let frame = pm.alloc_pages(0, Owner::KernelTable)?; // one 4 KiB frame
//! pm.store_u64(frame.start(), 0xdead_beef)?;
//! assert_eq!(pm.load_u64(frame.start())?, 0xdead_beef);
//! pm.free_pages(frame, 0)?;
//! assert!(pm.free_pages(frame, 0).is_err()); // a double free is refused
//!
//! drop(pm);
//! // SAFETY: allocated above with this layout; nothing refers to it now.
//! unsafe { dealloc(base.as_ptr(), layout) };
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![no_std]
#![warn(missing_docs)]

extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

pub mod accounting;
pub mod addr;
pub mod buddy;
pub mod fault;
pub mod list;
pub mod lowmem;
#[macro_use]
pub mod mem;
pub mod page;
pub mod page_alloc;
pub mod pcp;
pub mod poison;
#[cfg(all(feature = "std", not(loom)))]
pub mod ram;
#[cfg(all(feature = "std", loom))]
#[path = "ram_loom.rs"]
pub mod ram;
mod sync;

pub use accounting::FrameStats;
pub use addr::{Frame, PhysAddr, VirtAddr, PAGE_MASK, PAGE_SHIFT, PAGE_SIZE};
pub use buddy::MAX_ORDER;
pub use fault::{AllocRequest, FaultInjector};
pub use list::{FrameList, ListError};
pub use lowmem::Lowmem;
pub use mem::{DirectMap, FrameState, LinearMap, MemError, PhysMem};
pub use page::{Owner, Page, PageTable};
pub use page_alloc::{AllocError, FreeError, PhysMemory};
#[cfg(feature = "std")]
pub use pcp::{enter_cpu, CpuGuard};
pub use pcp::{this_cpu, BadPcpConfig, PcpConfig, PcpStats};
pub use poison::{PoisonStats, POISON_FREE};
#[cfg(feature = "std")]
pub use ram::{Ram, RamError, MAX_RAM, MIN_RAM};

/// The simulator's physical memory: [`PhysMemory`] over [`Ram`].
#[cfg(feature = "std")]
pub type SimMemory = PhysMemory<Ram>;

#[cfg(test)]
mod error_traits {
    fn is_error<E: core::error::Error + Send + Sync + 'static>() {}

    #[test]
    fn every_error_type_is_a_core_error() {
        is_error::<crate::AllocError>();
        is_error::<crate::FreeError>();
        is_error::<crate::ListError>();
        is_error::<crate::MemError>();
        is_error::<crate::BadPcpConfig>();
        #[cfg(feature = "std")]
        is_error::<crate::RamError>();
    }
}
