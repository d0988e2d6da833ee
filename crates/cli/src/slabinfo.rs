//! `pgdcache slabinfo`: boot a kernel, run a short workload on the
//! simulator, and print the pgd and pmd caches as `/proc/slabinfo`
//! version 2.1 (`objcache::slabinfo`), byte for byte Linux's format;
//! `--stats` adds Linux's `CONFIG_DEBUG_SLAB` columns, `--extra` our own
//! `ctorstat`/`resizestat` groups (not Linux's).

use crate::error::CliError;
use crate::out::{err, out};
use crate::settings::parse_ops;
use clap::Args;
use pgdcache::Scheme;
use sim::{SimConfig, Workload};
use x86paging::PagingMode;

/// Arguments of `slabinfo`.
#[derive(Args, Debug)]
pub struct SlabinfoArgs {
    /// Paging mode (pae shows both pgd and pmd caches).
    #[arg(long, value_parser = crate::args::mode_parser(), default_value = "pae")]
    pub mode: PagingMode,
    /// Scheme.
    #[arg(long, value_parser = crate::args::scheme_parser(), default_value = "slab-pgd-list")]
    pub scheme: Scheme,
    /// Workload to run first.
    #[arg(long, value_parser = crate::args::workload_parser(), default_value = "script")]
    pub workload: Workload,
    /// Tasks to run first, 1..=1000000000.
    #[arg(long, value_parser = parse_ops, default_value = "2000", allow_hyphen_values = true)]
    pub ops: u64,
    /// Also print the CONFIG_DEBUG_SLAB statistics columns (globalstat,
    /// cpustat), as Linux prints them.
    #[arg(long)]
    pub stats: bool,
    /// Also print pgdcache's own groups, which are not Linux's: ctorstat
    /// <ctors> <dtors> and resizestat <resized>.
    #[arg(long)]
    pub extra: bool,
    /// Print JSON (every cache's statistics, and the run's verdict) instead
    /// of /proc/slabinfo text.
    #[arg(long)]
    pub json: bool,
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
    if a.json {
        crate::out::json(&serde_json::json!({
            "mode": a.mode.name(),
            "scheme": a.scheme.name(),
            "workload": a.workload.name(),
            "tasks": r.tasks,
            "verdict": r.verdict,
            "caches": r.slab,
        }))?;
        return crate::run::findings(&r);
    }
    if r.slab.is_empty() {
        err!(
            "# scheme {} in {} keeps no pgd cache (pgds are pages)",
            a.scheme,
            a.mode
        );
    }
    let cols = objcache::SlabinfoColumns {
        stats: a.stats,
        extra: a.extra,
    };
    out!("{}", objcache::slabinfo_format(&r.slab, cols))?;
    crate::run::findings(&r)
}
