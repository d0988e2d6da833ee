//! `pgdcache oracle`: the differential check of our software MMU against a
//! hardware MMU (QEMU's TCG through its gdbstub, or KVM).
//!
//! Per paging mode: `--cases` random layouts from [`x86paging::gen`] plus
//! the pgd system's own tables (every [`pgdcache_scenarios::Scenario`] under every scheme that
//! can exist in the mode), each exported as an oracle image. The loop
//! itself is [`pgdcache_scenarios::sweep::check_mode`] (shared with the
//! tests); this module parses arguments, picks the backend and reports.
//! With several modes and several cores, modes are checked at once, each
//! worker on its own backend (QEMU process or KVM VM); the report is printed
//! in mode order. Our walker runs
//! on the image's bytes ([`pgdcache_scenarios::ImageMem`]); the oracle is
//! asked `gva2gpa` for every address of interest and (QEMU) `info tlb` for
//! the whole mapping list, on every root of a scenario's image. See
//! [`pgdcache_scenarios::diff`]. The oracle's walk of each pgd is also
//! compared with its walk of `swapper_pg_dir`: the seed's bug must show
//! where [`pgdcache_scenarios::Scenario::shows_bug`] says (2-level `cached-after-cpa` under
//! `slab-unsynced`, reported as "seed's bug seen") and nowhere else (a
//! disagreement).
//!
//! Exit codes: 0 all agree (and something was compared); 1 a disagreement,
//! nothing compared, or the backend failed mid-check; 2 bad arguments; 3 the
//! backend is not available here (QEMU not installed or not starting,
//! `/dev/kvm` missing for `--backend kvm`, or the backend cannot run the
//! chosen `--mode` on this host).

use std::sync::atomic::Ordering;
use std::time::Instant;

use clap::Args;
use oracle::kvm::KvmOracle;
use oracle::qemu::QemuOracle;
use oracle::{MmuOracle, OracleError};
use pgdcache_scenarios::diff::QEMU_MAXPHYADDR;
use pgdcache_scenarios::sweep::{self, CpuLimits, ModeResult, SweepConfig, SweepError};
use x86paging::PagingMode;

use crate::error::CliError;
use crate::out::{err, outln};

/// How to install QEMU, for messages.
const INSTALL_QEMU: &str =
    "install it with `apt-get install -y --no-install-recommends qemu-system-x86`, or set PGDCACHE_QEMU";
/// Most random layouts per mode.
const MAX_CASES: u64 = 1_000_000;

/// Arguments of `oracle`.
#[derive(Args, Debug)]
pub struct OracleArgs {
    /// Paging mode to check, or `all`.
    #[arg(long, default_value = "all", value_parser = crate::args::Named::new(&["2level", "pae", "4level", "5level", "all"], parse_modes))]
    pub mode: ModeSel,
    /// Random layouts per mode, 1..=1000000.
    #[arg(long, default_value = "10", value_parser = parse_cases, allow_hyphen_values = true)]
    pub cases: u64,
    /// First random seed; seeds seed..seed+cases are used, so seed + cases
    /// must not pass 18446744073709551615.
    #[arg(long, default_value = "1", value_parser = crate::settings::parse_seed, allow_hyphen_values = true)]
    pub seed: u64,
    /// Backend: qemu, kvm, or auto (QEMU if installed, else KVM).
    #[arg(long, default_value = "qemu", value_parser = ["qemu", "kvm", "auto"])]
    pub backend: String,
    /// Skip the pgd-system scenario tables (random layouts only).
    #[arg(long)]
    pub no_scenarios: bool,
    /// Of the random layouts, how many (the first ones) also get
    /// real-execution probes: every proposed access (supervisor/user ×
    /// read/write/fetch) runs on the oracle's CPU and its outcome, #PF error
    /// code included, must be the walker's. 0 turns probes off; at most
    /// 1000000.
    #[arg(long, default_value = "3", value_parser = parse_probe_cases, allow_hyphen_values = true)]
    pub probe_cases: u64,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `--mode`: one mode or all four.
#[derive(Clone, Debug)]
pub struct ModeSel(pub Vec<PagingMode>);

fn parse_count(s: &str, min: u64, what: &str) -> Result<u64, String> {
    s.trim()
        .parse::<u64>()
        .ok()
        .filter(|n| (min..=MAX_CASES).contains(n))
        .ok_or_else(|| {
            format!(
                "bad {what} '{}': expected a number from {min} to {MAX_CASES}",
                crate::settings::clip(s)
            )
        })
}

pub(crate) fn parse_cases(s: &str) -> Result<u64, String> {
    parse_count(s, 1, "number of cases")
        .map_err(|e| format!("{e} (0 would compare no random layout)"))
}

pub(crate) fn parse_probe_cases(s: &str) -> Result<u64, String> {
    parse_count(s, 0, "number of probe cases")
}

pub(crate) fn parse_modes(s: &str) -> Result<ModeSel, String> {
    if s == "all" {
        return Ok(ModeSel(vec![
            PagingMode::TwoLevel,
            PagingMode::Pae,
            PagingMode::FourLevel,
            PagingMode::FiveLevel,
        ]));
    }
    crate::args::parse_mode(s)
        .map(|m| ModeSel(vec![m]))
        .map_err(|e| format!("{e} (or all)"))
}

/// Failures of `oracle` other than disagreements.
#[derive(Debug, thiserror::Error)]
pub enum OracleCmdError {
    /// The backend cannot run here (exit 3).
    #[error("{0}")]
    Unavailable(String),
    /// The check failed mid-way: the backend (exit 1, or 3 when it could
    /// not start) or a case that could not be built (exit 1).
    #[error(transparent)]
    Sweep(#[from] SweepError),
}

impl From<OracleCmdError> for CliError {
    fn from(e: OracleCmdError) -> Self {
        match &e {
            OracleCmdError::Unavailable(_) => CliError::Env(e.to_string()),
            OracleCmdError::Sweep(SweepError::Oracle {
                err:
                    OracleError::QemuNotFound(_) | OracleError::Spawn(_) | OracleError::Unresponsive(_),
                ..
            }) => CliError::Env(format!("{e} ({INSTALL_QEMU})")),
            _ => CliError::Run(e.to_string()),
        }
    }
}

/// Results for one mode, timed.
struct Timed {
    r: ModeResult,
    seconds: f64,
}

impl std::ops::Deref for Timed {
    type Target = ModeResult;
    fn deref(&self) -> &ModeResult {
        &self.r
    }
}

fn kvm_backend() -> (Box<dyn MmuOracle>, CpuLimits) {
    let k = KvmOracle::new();
    let limits = CpuLimits {
        maxphyaddr: k.maxphyaddr().unwrap_or(QEMU_MAXPHYADDR),
        gbpages: k.has_1g_pages(),
    };
    (Box::new(k), limits)
}

fn qemu_backend(q: QemuOracle) -> (Box<dyn MmuOracle>, CpuLimits) {
    let limits = CpuLimits {
        maxphyaddr: QEMU_MAXPHYADDR,
        gbpages: true,
    };
    (Box::new(q), limits)
}

fn backend(name: &str) -> Result<(Box<dyn MmuOracle>, CpuLimits), OracleCmdError> {
    let q = QemuOracle::new();
    let qemu_ok = q.available();
    let qemu_missing = format!(
        "QEMU not available: {} cannot be run ({INSTALL_QEMU})",
        q.config().binary.display()
    );
    let kvm_ok = std::path::Path::new("/dev/kvm").exists();
    match name {
        "qemu" if qemu_ok => Ok(qemu_backend(q)),
        "qemu" => Err(OracleCmdError::Unavailable(qemu_missing)),
        "kvm" if kvm_ok => Ok(kvm_backend()),
        "kvm" => Err(OracleCmdError::Unavailable(
            "KVM not available: no /dev/kvm (load the kvm module on a host with \
             virtualisation, or use --backend qemu)"
                .into(),
        )),
        _ if qemu_ok => Ok(qemu_backend(q)),
        _ if kvm_ok => Ok(kvm_backend()),
        _ => Err(OracleCmdError::Unavailable(format!(
            "{qemu_missing}; and no /dev/kvm"
        ))),
    }
}

/// Runs `oracle` (see the module docs for the exit codes).
pub fn run(a: &OracleArgs) -> Result<(), CliError> {
    if a.seed.checked_add(a.cases).is_none() {
        return Err(CliError::Usage(format!(
            "--seed {} with --cases {} runs past the largest seed: give a --seed of at most {}",
            a.seed,
            a.cases,
            u64::MAX - a.cases
        )));
    }
    let (o, limits) = backend(&a.backend)?;
    let cfg = SweepConfig {
        seed: a.seed,
        cases: a.cases,
        probe_cases: a.probe_cases,
        scenarios: !a.no_scenarios,
        plant: None,
    };
    let results = check_modes(a, o.as_ref(), &limits, &cfg)?;
    let checked: Vec<&Timed> = results.iter().filter(|r| r.skipped.is_none()).collect();
    if checked.is_empty() {
        let why: Vec<String> = results
            .iter()
            .filter_map(|r| {
                Some(format!(
                    "{}: {}",
                    r.mode.map(|m| m.name()).unwrap_or("?"),
                    r.skipped.as_deref()?
                ))
            })
            .collect();
        return Err(CliError::Env(format!(
            "the {} backend cannot run {} here ({}); try another --backend (QEMU runs every mode: {INSTALL_QEMU})",
            o.name(),
            if a.mode.0.len() == 1 { "this --mode" } else { "any --mode" },
            why.join("; ")
        )));
    }
    let total: usize = results.iter().map(|r| r.report.disagreements.len()).sum();
    let compared: u64 = results
        .iter()
        .map(|r| (r.report.addresses + r.report.mappings + r.report.probes) as u64)
        .sum();
    for r in &results {
        for d in r.report.disagreements.iter().take(20) {
            err!("DISAGREE {d}");
        }
    }
    let skipped: Vec<String> = results
        .iter()
        .filter(|r| r.skipped.is_some())
        .filter_map(|r| r.mode.map(|m| m.name().to_string()))
        .collect();
    if a.json {
        let modes: Vec<_> = results
            .iter()
            .map(|r| {
                serde_json::json!({
                    "mode": r.mode.map(|m| m.to_string()),
                    "skipped": r.skipped,
                    "cases": r.cases,
                    "scenario_tables": r.scenario_tables,
                    "bug_seen": r.bug_seen,
                    "addresses": r.report.addresses,
                    "mappings": r.report.mappings,
                    "probes": r.report.probes,
                    "probe_cases_skipped": r.probe_skips,
                    "disagreements": r.report.disagreements.len(),
                    "details": r.report.disagreements.iter().map(|d| d.to_string()).collect::<Vec<_>>(),
                    "seconds": r.seconds,
                })
            })
            .collect();
        let v = serde_json::json!({
            "backend": o.name(),
            "agree": total == 0 && compared > 0,
            "compared": compared,
            "modes_skipped": skipped,
            "modes": modes,
        });
        crate::out::json(&v)?;
    } else {
        outln!(
            "backend {}: {}{}",
            o.name(),
            if total > 0 {
                format!("{total} disagreements")
            } else if compared == 0 {
                "nothing compared".to_string()
            } else {
                format!("all agree ({compared} comparisons)")
            },
            if skipped.is_empty() {
                String::new()
            } else {
                format!("; not checked: {}", skipped.join(", "))
            }
        )?;
    }
    if total > 0 {
        return Err(CliError::Finding(format!(
            "{total} disagreements between our walker and {}",
            o.name()
        )));
    }
    if compared == 0 {
        return Err(CliError::Finding(
            "0 translations, mappings or probes were compared: nothing was checked".into(),
        ));
    }
    Ok(())
}

/// Checks every mode of `--mode`, several at once where the host has the
/// cores: each worker thread runs its own backend (a QEMU process, or a KVM
/// VM) through [`sweep::check_mode`]. Results are printed (unless `--json`)
/// in mode order as soon as each and all before it are done.
fn check_modes(
    a: &OracleArgs,
    o: &dyn MmuOracle,
    limits: &CpuLimits,
    cfg: &SweepConfig,
) -> Result<Vec<Timed>, CliError> {
    let modes = &a.mode.0;
    // The backend `--backend auto` resolved to, for the workers.
    let name = if o.name() == "kvm" { "kvm" } else { "qemu" };
    let jobs = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, modes.len().max(1));
    let next = std::sync::atomic::AtomicUsize::new(0);
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (tx, rx) = std::sync::mpsc::channel::<(usize, Result<Timed, OracleCmdError>)>();
    std::thread::scope(|sc| {
        for _ in 0..jobs {
            let tx = tx.clone();
            let (next, stop) = (&next, &stop);
            sc.spawn(move || {
                let (mut o, _) = match backend(name) {
                    Ok(b) => b,
                    Err(e) => {
                        let _ = tx.send((next.fetch_add(1, Ordering::SeqCst), Err(e)));
                        return;
                    }
                };
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= modes.len() || stop.load(Ordering::SeqCst) {
                        return;
                    }
                    let t0 = Instant::now();
                    let r = sweep::check_mode(o.as_mut(), limits, modes[i], cfg)
                        .map(|r| Timed {
                            r,
                            seconds: t0.elapsed().as_secs_f64(),
                        })
                        .map_err(OracleCmdError::from);
                    if tx.send((i, r)).is_err() {
                        return;
                    }
                }
            });
        }
        drop(tx);
        // Modes run in parallel: the bar counts finished modes.
        let pb = crate::progress::bar(modes.len() as u64, "oracle modes", a.json);
        let mut done: Vec<Option<Timed>> = (0..modes.len()).map(|_| None).collect();
        let mut printed = 0;
        let mut first_err: Option<CliError> = None;
        for (i, r) in rx {
            pb.inc(1);
            match r {
                Ok(t) if i < done.len() => done[i] = Some(t),
                Ok(_) => {}
                Err(e) => {
                    stop.store(true, Ordering::SeqCst);
                    first_err.get_or_insert(e.into());
                }
            }
            while first_err.is_none() && printed < done.len() {
                let Some(t) = &done[printed] else { break };
                if !a.json {
                    if let Err(e) = pb.suspend(|| print_mode(t)) {
                        stop.store(true, Ordering::SeqCst);
                        first_err = Some(e);
                        break;
                    }
                }
                printed += 1;
            }
        }
        pb.finish_and_clear();
        match first_err {
            Some(e) => Err(e),
            None => Ok(done.into_iter().flatten().collect()),
        }
    })
}

fn print_mode(r: &Timed) -> Result<(), CliError> {
    let mode = r.mode.map(|m| m.to_string()).unwrap_or_default();
    if let Some(why) = &r.skipped {
        outln!("{mode:7} skipped: {why}")?;
        return Ok(());
    }
    outln!(
        "{mode:7} cases {:5}  scenario tables {:3}  addresses {:7}  mappings {:7}  probes {:5}  disagreements {:3}  {:.1}s",
        r.cases,
        r.scenario_tables,
        r.report.addresses,
        r.report.mappings,
        r.report.probes,
        r.report.disagreements.len(),
        r.seconds
    )?;
    for why in &r.probe_skips {
        outln!("        probes skipped: {why}")?;
    }
    for what in &r.bug_seen {
        outln!("        seed's bug seen: {what}")?;
    }
    Ok(())
}
