//! The kernel command line: `key=value` words (`-append` under QEMU).
//!
//! `mode=2level|pae|4level|5level scheme=<scheme> tasks=N seed=N lock=tas|ticket|mutex
//! cpa_every=N max_live=N cpus=N noipi=0|1 bench=0|1 bench_budget_ms=N fault=pf|gp|ud`. Unknown keys and bad values are errors the
//! kernel reports before it touches memory.

use alloc::format;
use alloc::string::String;
use pgdcache::{LockKind, Scheme};
use x86paging::PagingMode;

/// What the command line asks for.
#[derive(Debug, Clone)]
pub struct Params {
    /// Paging mode.
    pub mode: PagingMode,
    /// pgd scheme.
    pub scheme: Scheme,
    /// `pgd_lock` implementation.
    pub lock: LockKind,
    /// Tasks to run (exec'd or forked).
    pub tasks: u64,
    /// Workload seed.
    pub seed: u64,
    /// A conversion every this many scheduling steps.
    pub cpa_every: u64,
    /// Most tasks alive at once (per CPU).
    pub max_live: usize,
    /// CPUs to run (the BSP and `cpus - 1` APs; QEMU's `-smp` must match).
    pub cpus: usize,
    /// Bug injection: TLB shootdowns without IPIs.
    pub no_ipi: bool,
    /// Run the in-kernel benchmarks first.
    pub bench: bool,
    /// The TSC time each benchmark series may take, ms (default 40 000:
    /// see `bench::SERIES_BUDGET_MS`).
    pub bench_budget_ms: u64,
    /// Test the exception path: raise this exception after paging is on
    /// (`pf`: a load from an unmapped address; `gp`: a non-canonical or
    /// bad-selector access; `ud`: an invalid opcode).
    pub fault: Option<Raise>,
}

/// An exception the kernel raises on purpose (`fault=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Raise {
    /// #PF.
    PageFault,
    /// #GP.
    GeneralProtection,
    /// #UD.
    InvalidOpcode,
}

fn number(key: &str, v: &str, lo: u64, hi: u64) -> Result<u64, String> {
    let n: u64 = v
        .parse()
        .map_err(|_| format!("{key}={v}: not a number ({lo}..={hi})"))?;
    if n < lo || n > hi {
        return Err(format!("{key}={v}: out of range {lo}..={hi}"));
    }
    Ok(n)
}

/// Parses the command line; `default_mode` is the build's first mode.
pub fn parse(line: &str, default_mode: PagingMode) -> Result<Params, String> {
    let mut p = Params {
        mode: default_mode,
        scheme: Scheme::SlabPgdList,
        lock: LockKind::Tas,
        tasks: 2000,
        seed: 1,
        cpa_every: 16,
        max_live: 6,
        cpus: 1,
        no_ipi: false,
        bench: false,
        bench_budget_ms: crate::bench::SERIES_BUDGET_MS,
        fault: None,
    };
    for word in line.split_whitespace() {
        let (k, v) = word
            .split_once('=')
            .ok_or_else(|| format!("'{word}': expected key=value"))?;
        match k {
            "mode" => p.mode = v.parse().map_err(|e| format!("mode={v}: {e}"))?,
            "scheme" => {
                p.scheme = v
                    .parse()
                    .map_err(|_| format!("scheme={v}: unknown scheme"))?
            }
            "lock" => p.lock = v.parse().map_err(|_| format!("lock={v}: unknown lock"))?,
            "tasks" => p.tasks = number(k, v, 1, 10_000_000)?,
            "seed" => p.seed = number(k, v, 0, u64::MAX)?,
            "cpa_every" => p.cpa_every = number(k, v, 1, 1_000_000)?,
            "max_live" => p.max_live = number(k, v, 1, 64)? as usize,
            "cpus" => p.cpus = number(k, v, 1, crate::smp::MAX_CPUS as u64)? as usize,
            "noipi" => p.no_ipi = number(k, v, 0, 1)? == 1,
            "bench" => p.bench = number(k, v, 0, 1)? == 1,
            "bench_budget_ms" => p.bench_budget_ms = number(k, v, 1, 3_600_000)?,
            "fault" => {
                p.fault = Some(match v {
                    "pf" => Raise::PageFault,
                    "gp" => Raise::GeneralProtection,
                    "ud" => Raise::InvalidOpcode,
                    _ => return Err(format!("fault={v}: expected pf, gp or ud")),
                })
            }
            _ => return Err(format!("unknown parameter '{k}'")),
        }
    }
    Ok(p)
}
