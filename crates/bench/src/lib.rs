//! # pgdbench — how fast is the seed's pgd cache, and where does it stop helping?
//!
//! The measurements behind `pgdcache bench`, `docs/PERFORMANCE.md` and the
//! criterion benches of `crates/pgdcache`:
//!
//! * [`micro`] — single-threaded hot paths (`pgd_alloc` + `pgd_free`,
//!   fork + exit, `change_page_attr` propagation), each with its baseline
//!   measured in the same run and interleaved with it, so every figure is a
//!   ratio the machine's load cannot skew much;
//! * [`smp`] — the simulator's `script` workload on 1 and 2 real CPU
//!   threads per scheme × lock variant, with lock contention figures;
//! * [`vtime`] — a deterministic discrete-event model of N CPUs, calibrated
//!   from measured per-operation costs and validated against [`smp`], that
//!   projects the workload to 4–64 CPUs;
//! * [`alloc32`] — the object cache's 32-byte pair against `malloc`;
//! * [`floor`] — the object-cache pairs of a pgd pair alone, measured beside
//!   it (what the pgd layer adds, what the cache's protocol costs);
//! * [`host`] — the host probe (load, the CPU share a spinning thread gets)
//!   taken before and after, so a busy host shows in the report;
//! * [`targets`] — the seed's targets, judged on each ratio's
//!   inter-quartile range (met, not met, or noisy, not decided);
//! * [`suite`] — all of it; [`report`] — its tables.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod alloc32;
pub mod floor;
pub mod host;
pub mod micro;
pub mod report;
pub mod smp;
pub mod suite;
pub mod targets;
pub mod vtime;

pub use report::{markdown, preamble, tables, Table};
pub use suite::{run, steps, BenchError, Report, Settings, Step};
pub use targets::Target;
