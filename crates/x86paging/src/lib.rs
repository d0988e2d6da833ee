//! # x86paging — x86 page-table formats, a software MMU and a kernel layout
//!
//! The page-table layer of pgdcache, the reference implementation of the
//! Linux 2.5.69 "reslabify pgds and pmds" design:
//!
//! * [`mode`] — the four paging modes (2-level, PAE, 4-level, 5-level) and
//!   their constants (`PTRS_PER_PGD`, `USER_PTRS_PER_PGD`, `PAGE_OFFSET`…);
//! * [`entry`] — typed entries with the real bits (PSE, PSE-36, PAT, NX);
//!
//! The core is `no_std` + `alloc`; the default `std` feature adds
//! `std::error::Error` impls and simulated RAM through `physmem/std`.
#![no_std]
#![warn(missing_docs)]

extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

pub mod entry;
pub mod mode;

pub use entry::{Decoded, Entry, EntryError, EntryFlags, EntryKind};
pub use mode::{Level, PageSize, PagingMode, ParseModeError};
