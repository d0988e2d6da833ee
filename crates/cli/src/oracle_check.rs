//! `pgdcache oracle`: the differential check of our software MMU against a
//! hardware MMU (QEMU's TCG through its gdbstub, or KVM).
//!
//! Per paging mode: `--cases` random layouts from [`x86paging::gen`] plus
//! the pgd system's own tables (every [`pgdcache_scenarios::Scenario`] under every scheme that
//! can exist in the mode), each exported as an oracle image. Our walker runs
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

use std::time::Instant;

use clap::Args;
use oracle::kvm::KvmOracle;
use oracle::qemu::QemuOracle;
use oracle::{MmuOracle, OracleError, Support};
use pgdcache_scenarios::diff::{
    check_image, check_roots, compare_probes, DiffReport, Disagreement, GenCase, QEMU_MAXPHYADDR,
};
use pgdcache_scenarios::{cases, oracle_mode, ImageMem, ScenarioError, ScenarioState};
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
    /// The backend failed mid-check (exit 1, or 3 when it could not start).
    #[error("{case}: oracle failed: {err}")]
    Oracle {
        /// The case being checked.
        case: String,
        /// The error.
        err: OracleError,
    },
    /// A case could not be built (exit 1).
    #[error("{case}: {err}")]
    Build {
        /// The case.
        case: String,
        /// The error.
        err: ScenarioError,
    },
}

impl From<OracleCmdError> for CliError {
    fn from(e: OracleCmdError) -> Self {
        match &e {
            OracleCmdError::Unavailable(_) => CliError::Env(e.to_string()),
            OracleCmdError::Oracle {
                err:
                    OracleError::QemuNotFound(_) | OracleError::Spawn(_) | OracleError::Unresponsive(_),
                ..
            } => CliError::Env(format!("{e} ({INSTALL_QEMU})")),
            _ => CliError::Run(e.to_string()),
        }
    }
}

/// Results for one mode.
#[derive(Debug, Default)]
struct ModeResult {
    mode: Option<PagingMode>,
    skipped: Option<String>,
    cases: u64,
    /// Scenario root tables walked (every pgd of every scenario image).
    scenario_tables: u64,
    /// Where the oracle saw the seed's bug (as expected).
    bug_seen: Vec<String>,
    report: DiffReport,
    /// Layouts whose probes could not run, and why.
    probe_skips: Vec<String>,
    seconds: f64,
}

/// What the oracle's CPU has: the random layouts are generated for it and
/// our walker is configured like it (QEMU's TCG `-cpu max`: MAXPHYADDR 40
/// and 1 GiB pages; KVM: whatever the host CPU reports).
struct CpuLimits {
    maxphyaddr: u32,
    gbpages: bool,
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
    let (mut o, limits) = backend(&a.backend)?;
    let scen = |m| {
        if a.no_scenarios {
            0
        } else {
            cases(m).len() as u64
        }
    };
    let pb = crate::progress::bar(
        a.mode.0.iter().map(|&m| a.cases + scen(m)).sum(),
        "oracle",
        a.json,
    );
    let mut results = Vec::new();
    for &mode in &a.mode.0 {
        pb.set_message(mode.name());
        let r = check_mode(o.as_mut(), &limits, mode, a, &pb);
        let r = r?;
        if !a.json {
            pb.suspend(|| print_mode(&r))?;
        }
        results.push(r);
    }
    let checked: Vec<&ModeResult> = results.iter().filter(|r| r.skipped.is_none()).collect();
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
    pb.finish_and_clear();
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

fn print_mode(r: &ModeResult) -> Result<(), CliError> {
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

fn check_mode(
    o: &mut dyn MmuOracle,
    limits: &CpuLimits,
    mode: PagingMode,
    a: &OracleArgs,
    pb: &indicatif::ProgressBar,
) -> Result<ModeResult, OracleCmdError> {
    let t0 = Instant::now();
    let mut r = ModeResult {
        mode: Some(mode),
        ..ModeResult::default()
    };
    if let Support::No(why) = o.supports(oracle_mode(mode)) {
        r.skipped = Some(why);
        return Ok(r);
    }
    // `run` refused a seed + cases past u64::MAX, so nothing saturates.
    for seed in a.seed..a.seed.saturating_add(a.cases) {
        let case = format!("{mode} gen seed {seed}");
        let c =
            GenCase::new(mode, seed, limits.maxphyaddr).map_err(|err| OracleCmdError::Build {
                case: case.clone(),
                err,
            })?;
        let mut cpu = c.gen.cpu;
        cpu.gbpages = limits.gbpages;
        let mem = ImageMem::new(&c.img);
        let rep =
            check_image(o, &c.img, &mem, &cpu, &c.vas, &c.leaves(), &case).map_err(|err| {
                OracleCmdError::Oracle {
                    case: case.clone(),
                    err,
                }
            })?;
        r.report.merge(rep);
        if seed - a.seed < a.probe_cases {
            let (data, fetch) = c.safe_probes(seed);
            for set in [data, fetch] {
                match compare_probes(o, &mem, &cpu, &set, &case) {
                    Ok((rep, _)) => r.report.merge(rep),
                    // The layout leaves no room for the probe program (no
                    // unmapped slot below 4 GiB): a question this case
                    // cannot ask, not a disagreement.
                    Err(OracleError::Unsupported(why)) => {
                        r.probe_skips.push(format!("{case}: {why}"));
                        break;
                    }
                    Err(err) => {
                        return Err(OracleCmdError::Oracle {
                            case: case.clone(),
                            err,
                        })
                    }
                }
            }
        }
        r.cases += 1;
        pb.inc(1);
    }
    if !a.no_scenarios {
        for (sc, scheme) in cases(mode) {
            pb.inc(1);
            let case = format!("{mode} {sc} {scheme}");
            let build = |err| OracleCmdError::Build {
                case: case.clone(),
                err,
            };
            let st = ScenarioState::build(sc, mode, scheme).map_err(build)?;
            let img = st.image().map_err(build)?;
            let mem = ImageMem::new(&img);
            let vas = st.addresses(a.seed, 32);
            let roots = st.root_list();
            let rr = check_roots(
                o,
                &img,
                &mem,
                &st.cpu,
                &roots,
                &vas,
                st.kernel_start(),
                &case,
            )
            .map_err(|err| OracleCmdError::Oracle {
                case: case.clone(),
                err,
            })?;
            r.report.merge(rr.walker.clone());
            r.scenario_tables += rr.roots as u64;
            let differing = rr.roots_differing();
            if !st.shows_bug() {
                for (_, d) in rr.vs_reference {
                    r.report.disagreements.extend(d.disagreements);
                }
            } else if differing == 0 {
                r.report.disagreements.push(Disagreement {
                    case,
                    what: "the seed's bug should show here, but every pgd walks like \
                           swapper_pg_dir"
                        .into(),
                });
            } else {
                let example = rr
                    .vs_reference
                    .iter()
                    .find_map(|(_, d)| d.disagreements.first())
                    .map(|d| d.what.clone())
                    .unwrap_or_default();
                r.bug_seen.push(format!(
                    "{case}: {differing} of {} pgds walk differently from swapper_pg_dir, \
                     e.g. {example}",
                    roots.len() - 1
                ));
            }
        }
    }
    r.seconds = t0.elapsed().as_secs_f64();
    Ok(r)
}
