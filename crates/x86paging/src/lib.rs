//! # x86paging — x86 page-table formats, a software MMU and a kernel layout
//!
//! The page-table layer of pgdcache, the reference implementation of the
//! Linux 2.5.69 "reslabify pgds and pmds" design:
//!
//! * [`mode`] — the four paging modes (2-level, PAE, 4-level, 5-level) and
//!   their constants (`PTRS_PER_PGD`, `USER_PTRS_PER_PGD`, `PAGE_OFFSET`…);
//! * [`entry`] — typed entries with the real bits (PSE, PSE-36, PAT, NX);
//! * [`table`] — atomic entry access in physical memory (`set_pte_atomic`);
//! * [`cpu`] — the control-register state a walk depends on;
//! * [`walk`] — the software MMU ([`translate`]) with SDM fault semantics;
//! * [`map`](mod@map) — kernel-side editing: [`map()`], [`unmap`], [`lookup`]
//!   (`lookup_address`), [`free_user_tables`] (`clear_page_tables`);
//! * [`layout`] and [`boot`](mod@boot) — the kernel layout per mode and
//!   `swapper_pg_dir` built over it;
//! * [`ptdump`] — page tables printed as Linux's debugfs `page_tables` does;
//! * [`gen`] — a seeded random page-table generator with expected
//!   translations, for differential testing.
//!
//! The core is `no_std` + `alloc`; the default `std` feature adds
//! simulated RAM through `physmem/std`.
//!
//! # Quick start
//!
//! Boot `swapper_pg_dir`, map a page into it, and walk it as the MMU would:
//!
//! ```
//! use physmem::{Owner, PhysAddr, SimMemory, VirtAddr};
//! use x86paging::{boot, map, translate, Access, BootConfig, EntryFlags, PageSize, PagingMode};
//!
//! let pm = SimMemory::new(64 << 20)?;
//! let ks = boot(&pm, BootConfig::new(PagingMode::Pae))?; // swapper_pg_dir
//!
//! // The direct map is there: PAGE_OFFSET + 8 MiB is physical 8 MiB.
//! let t = translate(&pm, &ks.cpu, VirtAddr::new(0xc080_0000), Access::READ)?;
//! assert_eq!((t.pa, t.size), (PhysAddr::new(8 << 20), PageSize::Size2M));
//!
//! // Map a user page (the tables it needs come from the frame allocator).
//! let va = VirtAddr::new(0x0804_8000);
//! let flags = EntryFlags::PRESENT | EntryFlags::USER;
//! map(&pm, ks.mode, ks.pgd, va, PhysAddr::new(0x30_0000), PageSize::Size4K, flags, Owner::UserTable)?;
//! let t = translate(&pm, &ks.cpu, va, Access::USER_READ)?;
//! assert_eq!(t.pa, PhysAddr::new(0x30_0000));
//! // Read-only: a user write faults with #PF.
//! assert!(translate(&pm, &ks.cpu, va, Access::USER_WRITE).is_err());
//!
//! // And as Linux's /sys/kernel/debug/page_tables/kernel would print it:
//! let dump = x86paging::PtDump { mode: ks.mode, lines: &ks.ptdump(&pm, ks.pgd) }.to_string();
//! assert!(dump.contains("0x08048000-0x08049000           4K USR ro                     x  pte"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

pub mod boot;
pub mod cpu;
pub mod cursor;
pub mod entry;
pub mod flush;
pub mod gen;
pub mod layout;
pub mod map;
pub mod mode;
pub mod ptdump;
pub mod range;
pub mod table;
pub mod walk;

pub use boot::{boot, BootConfig, BootError, BootMapping, KernelSpace};
pub use cpu::{Access, AccessKind, CpuState, CrValues};
pub use cursor::{Cursor, Merged, Slot};
pub use entry::{Decoded, Entry, EntryError, EntryFlags, EntryKind};
pub use flush::{Flush, FrameSource, TableFrames, TlbFlush};
pub use layout::Layout;
pub use map::{free_user_tables, lookup, lookup_checked, map, unmap, MapError};
pub use mode::{Level, PageSize, PagingMode, ParseModeError};
pub use ptdump::{PtDump, PtLine, PtRange};
pub use range::Entries;
pub use table::{entry_pa, read_entry, write_entry};
pub use walk::{load_pdptes, translate, PfErrorCode, Translation, WalkFault};

#[cfg(test)]
mod error_traits {
    fn is_error<E: core::error::Error + Send + Sync + 'static>() {}

    #[test]
    fn every_error_type_is_a_core_error() {
        is_error::<crate::EntryError>();
        is_error::<crate::ParseModeError>();
        is_error::<crate::BootError>();
        is_error::<crate::MapError>();
        is_error::<crate::WalkFault>();
        let e = crate::BootError::from(crate::MapError::OutOfMemory(
            physmem::AllocError::OutOfMemory { order: 0 },
        ));
        assert!(core::error::Error::source(&e).is_some());
    }
}
