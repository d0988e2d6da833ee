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
//! * [`cursor`] — [`Cursor`], the one kernel-side page-table walker and
//!   editor (see [below](#how-to-walk-page-tables)), with [`range`]'s
//!   iterator and [`flush`]'s `#[must_use]` TLB-flush token and frame source;
//! * [`map`](mod@map) — the same as functions of a root: [`map()`],
//!   [`unmap`], [`lookup`] (`lookup_address`), [`free_user_tables`]
//!   (`clear_page_tables`);
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
//!
//! # How to walk page tables
//!
//! Every kernel-side walk goes through a [`Cursor`]: memory, mode and root
//! (a pgd). It never walks for the hardware: [`translate`] is the MMU, kept
//! separate so the two can check each other.
//!
//! ```
//! use physmem::{Owner, PhysAddr, SimMemory, VirtAddr};
//! use x86paging::{Cursor, EntryFlags, Level, PageSize, PagingMode, TableFrames, TlbFlush};
//!
//! /// Whatever drops translations: the simulator's software TLB, a
//! /// kernel's `invlpg`. Here it only counts.
//! #[derive(Default)]
//! struct Tlb(std::cell::Cell<u32>);
//! impl TlbFlush for Tlb {
//!     fn flush_page(&self, _va: VirtAddr) { self.0.set(self.0.get() + 1) }
//!     fn flush_all(&self) { self.0.set(self.0.get() + 100) }
//! }
//!
//! let pm = SimMemory::new(16 << 20)?;
//! let mode = PagingMode::Pae;
//! let pgd = pm.alloc_zeroed_frame(Owner::KernelTable)?.start();
//! let cur = Cursor::new(&pm, mode, pgd);
//! // Missing tables come from a FrameSource: the buddy allocator, tagged.
//! let frames = TableFrames::new(&pm, Owner::KernelTable);
//! let tlb = Tlb::default();
//!
//! // map/unmap/protect/write/split/merge return a #[must_use] Flush token.
//! let va = VirtAddr::new(0xc040_0000);
//! cur.map(va, PhysAddr::new(0x40_0000), PageSize::Size2M, EntryFlags::PAGE_KERNEL, &frames)?
//!     .ignore(); // the slot was empty: no TLB holds it
//!
//! // lookup_address: the entry that maps va, with its level and size.
//! let slot = cur.lookup(VirtAddr::new(0xc041_2000))?;
//! assert_eq!((slot.level, slot.leaf(), slot.is_large()), (Level::Pmd, Some(PageSize::Size2M), true));
//!
//! // change_page_attr: split the 2 MiB page, one pte uncached...
//! let target = VirtAddr::new(0xc041_2000);
//! let split = cur.split(target, &frames, |v, _pa, f| if v == target { f | EntryFlags::PCD } else { f })?;
//! let _pointer = split.payload().entry; // set_pmd_pte copies this into other pgds first
//! split.flush(&tlb);
//! // ...and back: once the ptes are uniform again, merge hands back the pte
//! // page only through the flush (global_flush_tlb's rule).
//! cur.protect(target, EntryFlags::PAGE_KERNEL)?.flush(&tlb);
//! let merged = cur.merge(va, PageSize::Size2M)?.expect("uniform again");
//! let pte_page = merged.flush(&tlb).table;
//! pm.free_frame(pte_page)?;
//!
//! // Iterate the present entries over a range: tables before their entries.
//! let mut it = cur.entries(VirtAddr::new(0xc000_0000)..VirtAddr::new(0xc080_0000));
//! let mut seen = Vec::new();
//! while let Some(slot) = it.next() {
//!     let slot = slot?;
//!     seen.push((slot.level, slot.leaf()));
//!     // it.skip_children() here would not enter the table `slot` points at
//! }
//! assert_eq!(seen, [(Level::Pgd, None), (Level::Pmd, Some(PageSize::Size2M))]);
//! assert_eq!(tlb.0.get(), 201); // two 2 MiB ranges flushed whole, one pte
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Forgetting the flush is a compiler warning (an error under
//! `deny(unused_must_use)`, as here):
//!
//! ```compile_fail
//! # #![deny(unused_must_use)]
//! # use physmem::{Owner, PhysAddr, SimMemory, VirtAddr};
//! # use x86paging::{Cursor, EntryFlags, PagingMode};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let pm = SimMemory::new(16 << 20)?;
//! # let pgd = pm.alloc_zeroed_frame(Owner::KernelTable)?.start();
//! let cur = Cursor::new(&pm, PagingMode::FourLevel, pgd);
//! cur.protect(VirtAddr::new(0x1000), EntryFlags::RW)?; // error: unused `Flush`
//! # Ok(())
//! # }
//! ```
//!
//! What each hand-written walk becomes:
//!
//! | walk | with the cursor |
//! |---|---|
//! | `lookup_address` | [`Cursor::lookup`] / [`Cursor::leaf_of`] → [`Slot`] |
//! | `pmd_alloc`/`pte_alloc_kernel` + `set_pte` (vmalloc) | [`Cursor::alloc_path`] then [`Cursor::write`], or [`Cursor::map`]; all-or-nothing over many pages with a [`Tracked`] frame source and [`Cursor::unhook`] |
//! | `split_large_page` + `set_pmd_pte` | [`Cursor::fill_split`] (fills a pre-allocated pte page) + [`Cursor::write`], then the same entry into each pgd on `pgd_list` via [`Cursor::with_root`] + [`Cursor::pgd_slot`]; or [`Cursor::split`] in one pgd |
//! | `revert_page` | [`Cursor::mergeable`] / [`Cursor::merge`] |
//! | `vmalloc_fault` | [`Cursor::pgd_slot`] on swapper and on the pgd, [`Cursor::write`] |
//! | table census, `vfree`'s pte sweep, `clear_page_tables` | [`Cursor::entries`] (with [`Entries::skip_children`]) or [`free_user_tables`] |
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
pub use cursor::{Cursor, Merged, PartialMap, Slot};
pub use entry::{Decoded, Entry, EntryError, EntryFlags, EntryKind};
pub use flush::{Flush, FrameSource, TableFrames, TlbFlush, Tracked};
pub use layout::Layout;
pub use map::{
    free_cleared_user_tables, free_user_pgd_entries, free_user_tables, lookup, lookup_checked, map,
    unmap, MapError,
};
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
