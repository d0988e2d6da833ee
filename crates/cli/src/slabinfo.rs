//! `pgdcache slabinfo`: boot a kernel, run a short workload on the
//! simulator, and print the pgd and pmd caches as `/proc/slabinfo`
//! version 2.1 (`objcache::slabinfo`), optionally with the debug statistics.

use crate::args::parse_mode;
use crate::error::CliError;
use crate::out::{out, outln};
use crate::settings::{parse_ops, parse_scheme, parse_workload};
use clap::Args;
use pgdcache::Scheme;
use sim::{SimConfig, Workload};
use x86paging::PagingMode;

/// Arguments of `slabinfo`.
#[derive(Args, Debug)]
pub struct SlabinfoArgs {
    /// Paging mode (pae shows both pgd and pmd caches).
    #[arg(long, value_parser = parse_mode, default_value = "pae")]
    pub mode: PagingMode,
    /// Scheme.
    #[arg(long, value_parser = parse_scheme, default_value = "slab-pgd-list")]
    pub scheme: Scheme,
    /// Workload to run first.
    #[arg(long, value_parser = parse_workload, default_value = "script")]
    pub workload: Workload,
    /// Tasks to run first, 1..=1000000000.
    #[arg(long, value_parser = parse_ops, default_value = "2000", allow_hyphen_values = true)]
    pub ops: u64,
    /// Also print the CONFIG_DEBUG_SLAB statistics columns.
    #[arg(long)]
    pub stats: bool,
}

/// Runs `slabinfo`.
pub fn run(a: &SlabinfoArgs) -> Result<(), CliError> {
    if let Err(why) = a.scheme.supports(a.mode) {
        return Err(CliError::Usage(format!(
            "--scheme {} is impossible with --mode {}: {why}",
            a.scheme, a.mode
        )));
    }
    let mut c = SimConfig::for_workload(a.workload, a.mode, a.scheme);
    c.ops = a.ops;
    let r = sim::run(&c).map_err(CliError::from)?;
    if r.slab.is_empty() {
        outln!(
            "# scheme {} in {} keeps no pgd cache (pgds are pages)",
            a.scheme,
            a.mode
        )?;
    }
    if a.stats {
        out!("{}", objcache::slabinfo_with_stats(&r.slab))?;
    } else {
        out!("{}", objcache::slabinfo(&r.slab))?;
    }
    crate::run::findings(&r)
}
