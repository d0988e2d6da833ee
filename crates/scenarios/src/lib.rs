//! pgd-system page tables as hardware-oracle input, and the differential
//! check of our software MMU against that oracle.
//!
//! `crates/oracle` must stay independent of the code it referees, so the glue
//! between the pgd system (`crates/pgdcache`), our walker
//! (`crates/x86paging`) and the oracle's image format lives here:
//!
//! * [`scenario`] — the four pgd-system states worth checking on real
//!   hardware (a booted `swapper_pg_dir`, a forked task's pgd, a live pgd
//!   after `change_page_attr` split a large page, and every pgd the object
//!   cache held across conversions — where `slab-unsynced` goes wrong) and
//!   their export as a [`oracle::PagingImage`] holding exactly the table
//!   frames reachable from any of the state's roots;
//! * [`image_mem`] — an image as [`physmem::PhysMem`], so our walker can run
//!   on exactly the bytes the oracle was given;
//! * [`diff`] — our walker vs an oracle on one image: addresses of interest
//!   (`gva2gpa`) and the whole mapping list (`info tlb`); and, root by root,
//!   the oracle's walk of each pgd vs its walk of `swapper_pg_dir`;
//! * [`sweep`] — the whole check of one paging mode (random layouts, then
//!   every scenario × scheme, judged), the one loop `pgdcache oracle` and the
//!   tests share, with a planted walker bug as its negative control.
#![forbid(unsafe_code)]

pub mod diff;
pub mod image_mem;
pub mod scenario;
pub mod sweep;

pub use diff::{DiffReport, Disagreement, KernelView, RootsReport};
pub use image_mem::{cpu_from_image, ImageMem};
pub use scenario::{
    cases, export_image, export_image_roots, CachedAfterCpa, Root, RootKind, Scenario,
    ScenarioError, ScenarioState,
};

/// The oracle's name for one of our paging modes.
pub fn oracle_mode(m: x86paging::PagingMode) -> oracle::PagingMode {
    use x86paging::PagingMode as P;
    match m {
        P::TwoLevel => oracle::PagingMode::TwoLevel,
        P::Pae => oracle::PagingMode::Pae,
        P::FourLevel => oracle::PagingMode::FourLevel,
        P::FiveLevel => oracle::PagingMode::FiveLevel,
    }
}

/// Our name for one of the oracle's paging modes.
pub fn walker_mode(m: oracle::PagingMode) -> x86paging::PagingMode {
    use x86paging::PagingMode as P;
    match m {
        oracle::PagingMode::TwoLevel => P::TwoLevel,
        oracle::PagingMode::Pae => P::Pae,
        oracle::PagingMode::FourLevel => P::FourLevel,
        oracle::PagingMode::FiveLevel => P::FiveLevel,
    }
}
