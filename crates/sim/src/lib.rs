//! # sim — an SMP simulator for pgdcache
//!
//! The tester the seed's author asked for ("those with the proper graphics
//! hardware to prod the affected codepaths … SMP i386 targets"): simulated
//! CPUs as threads, each running tasks (fork, exec, exit) in its own address
//! space with a TLB and a software MMU, while a graphics-driver agent changes
//! the caching of direct-map pages (`change_page_attr` + `global_flush_tlb`,
//! what restarting X on AGP does) and a vmalloc agent maps and unmaps kernel
//! areas. Every kernel access a CPU makes through its pgd is checked, and at
//! the end every pgd — live and cached — and every frame is checked by
//! `Kernel::verify`.
//!
//! * [`config`] — workloads and run parameters;
//! * [`smp`] — CPUs, TLBs and the flush IPI;
//! * [`access`] — the live access checks;
//! * [`run`](mod@run) — one run ([`run::run`]) → [`report::RunReport`];
//! * [`compare`](mod@compare) — every scheme × {2-level, PAE} side by side.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod access;
pub mod compare;
pub mod config;
pub mod report;
pub mod rng;
pub mod run;
pub mod smp;

pub use compare::{compare, CompareRow, CompareSpec};
pub use config::{CpaRate, SimConfig, SimError, Workload};
pub use report::{
    ClosingCheck, FinalCheck, Latency, RunReport, TimelineSample, Verdict, ViolationCounts,
    ZoneReport,
};
pub use run::{run, run_with_progress, run_with_timeline};
