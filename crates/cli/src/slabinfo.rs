//! `pgdcache slabinfo`: boot a kernel, run a short workload on the
//! simulator, and print the pgd and pmd caches as `/proc/slabinfo`
//! version 2.1 (`objcache::slabinfo`), byte for byte Linux's format;
//! `--stats` adds Linux's `CONFIG_DEBUG_SLAB` columns, `--extra` our own
//! `ctorstat`/`resizestat` groups (not Linux's).

use crate::args::parse_mode;
use crate::error::CliError;
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
    /// Tasks to run first.
    #[arg(long, value_parser = parse_ops, default_value = "2000")]
    pub ops: u64,
    /// Also print the CONFIG_DEBUG_SLAB statistics columns (globalstat,
    /// cpustat), as Linux prints them.
    #[arg(long)]
    pub stats: bool,
    /// Also print pgdcache's own groups, which are not Linux's: ctorstat
    /// <ctors> <dtors> and resizestat <resized>.
    #[arg(long)]
    pub extra: bool,
}

/// Runs `slabinfo`.
pub fn run(a: &SlabinfoArgs) -> Result<(), Box<dyn std::error::Error>> {
    let mut c = SimConfig::for_workload(a.workload, a.mode, a.scheme);
    c.ops = a.ops;
    let r = sim::run(&c).map_err(CliError::from)?;
    if r.slab.is_empty() {
        eprintln!(
            "# scheme {} in {} keeps no pgd cache (pgds are pages)",
            a.scheme, a.mode
        );
    }
    let cols = objcache::SlabinfoColumns {
        stats: a.stats,
        extra: a.extra,
    };
    print!("{}", objcache::slabinfo_format(&r.slab, cols));
    Ok(())
}
