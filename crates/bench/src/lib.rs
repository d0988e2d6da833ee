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
//! * [`suite`] — all of it, the tables, and the seed's targets.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod micro;
pub mod smp;
pub mod suite;
pub mod vtime;

pub use suite::{markdown, run, BenchError, Report, Settings};
