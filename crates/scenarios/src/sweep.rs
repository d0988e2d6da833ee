//! The oracle check of one paging mode, in one place: `--cases` random
//! layouts ([`GenCase`]: translations, the mapping list, and real-execution
//! probes for the first `probe_cases`), then every pgd-system scenario under
//! every scheme that exists in the mode ([`crate::cases`]), each judged on
//! every root and against `swapper_pg_dir`. `pgdcache oracle` and the tests
//! both run it; the tests add their own assertions through the visitor of
//! [`check_scenarios`].
//!
//! One oracle serves the whole sweep: with QEMU that is one process for all
//! the layouts of a mode (see `oracle::qemu`), which is what makes 10^4
//! layouts per mode affordable.
//!
//! [`PlantedBug`] is the sweep's negative control: our walker with one rule
//! deliberately wrong, which the oracle must catch (tests/sweep.rs).

use oracle::{MmuOracle, OracleError, PagingImage, Support};
use pgdcache::Scheme;
use x86paging::{CpuState, PagingMode};

use crate::diff::{check_image, check_roots, compare_probes, DiffReport, Disagreement, GenCase};
use crate::{cases, oracle_mode, ImageMem, RootsReport, Scenario, ScenarioError, ScenarioState};

/// What the oracle's CPU has: the random layouts are generated for it and
/// our walker is configured like it (QEMU's TCG `-cpu max`: MAXPHYADDR 40
/// and 1 GiB pages; KVM: whatever the host CPU reports).
#[derive(Clone, Copy, Debug)]
pub struct CpuLimits {
    /// Physical-address width.
    pub maxphyaddr: u32,
    /// 1 GiB pages (PDPE1GB).
    pub gbpages: bool,
}

/// A wrong rule planted in our walker (never in the oracle), to show the
/// sweep catches a walker bug.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlantedBug {
    /// CR4.PSE ignored: a 2-level PDE with PS set is walked as a pointer to
    /// a page table (caught by the debug walk: translations).
    IgnorePse,
    /// CR0.WP ignored: supervisor writes to read-only pages allowed (caught
    /// by real-execution probes only).
    IgnoreWp,
}

impl PlantedBug {
    /// The CPU state our walker uses with this bug.
    pub fn apply(self, cpu: CpuState) -> CpuState {
        match self {
            PlantedBug::IgnorePse => CpuState { pse: false, ..cpu },
            PlantedBug::IgnoreWp => CpuState { wp: false, ..cpu },
        }
    }
}

/// What to check in one mode.
#[derive(Clone, Copy, Debug)]
pub struct SweepConfig {
    /// First random seed (layouts `seed..seed + cases`; also seeds the
    /// scenarios' random addresses).
    pub seed: u64,
    /// Random layouts.
    pub cases: u64,
    /// Of those, how many (the first ones) also get real-execution probes.
    pub probe_cases: u64,
    /// Check the pgd-system scenarios too.
    pub scenarios: bool,
    /// Negative control: our walker with one rule wrong (None: the real
    /// walker).
    pub plant: Option<PlantedBug>,
}

/// The results of one mode.
#[derive(Debug, Default)]
pub struct ModeResult {
    /// The mode.
    pub mode: Option<PagingMode>,
    /// Why the backend could not check it (nothing else is set then).
    pub skipped: Option<String>,
    /// Random layouts checked.
    pub cases: u64,
    /// Scenario root tables walked (every pgd of every scenario image).
    pub scenario_tables: u64,
    /// Where the oracle saw the seed's bug (as expected).
    pub bug_seen: Vec<String>,
    /// Comparisons and disagreements.
    pub report: DiffReport,
    /// Layouts whose probes could not run, and why.
    pub probe_skips: Vec<String>,
}

/// A failure other than a disagreement, with the case it happened in.
#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    /// The backend failed.
    #[error("{case}: oracle failed: {err}")]
    Oracle {
        /// The case being checked.
        case: String,
        /// The error.
        #[source]
        err: OracleError,
    },
    /// A case could not be built.
    #[error("{case}: {err}")]
    Build {
        /// The case.
        case: String,
        /// The error.
        #[source]
        err: ScenarioError,
    },
}

/// Checks `mode` on `o` as `cfg` says: the random layouts, then (if asked)
/// the scenarios, judged by [`judge_scenario`].
pub fn check_mode(
    o: &mut dyn MmuOracle,
    limits: &CpuLimits,
    mode: PagingMode,
    cfg: &SweepConfig,
) -> Result<ModeResult, SweepError> {
    let mut r = ModeResult {
        mode: Some(mode),
        ..ModeResult::default()
    };
    if let Support::No(why) = o.supports(oracle_mode(mode)) {
        r.skipped = Some(why);
        return Ok(r);
    }
    for seed in cfg.seed..cfg.seed.saturating_add(cfg.cases) {
        check_gen_case(
            o,
            limits,
            mode,
            seed,
            seed - cfg.seed < cfg.probe_cases,
            cfg,
            &mut r,
        )?;
        r.cases += 1;
    }
    if cfg.scenarios {
        check_scenarios(o, mode, cfg, |_, st, _img, rr| {
            r.scenario_tables += rr.roots as u64;
            r.report.merge(rr.walker.clone());
            let (disagreements, seen) = judge_scenario(st, rr);
            r.report.disagreements.extend(disagreements);
            r.bug_seen.extend(seen);
            Ok(())
        })?;
    }
    Ok(r)
}

/// One random layout: translations and the mapping list, then (with
/// `probes`) the generator's accesses by real execution.
fn check_gen_case(
    o: &mut dyn MmuOracle,
    limits: &CpuLimits,
    mode: PagingMode,
    seed: u64,
    probes: bool,
    cfg: &SweepConfig,
    r: &mut ModeResult,
) -> Result<(), SweepError> {
    let case = format!("{mode} gen seed {seed}");
    let c = GenCase::new(mode, seed, limits.maxphyaddr).map_err(|err| SweepError::Build {
        case: case.clone(),
        err,
    })?;
    let mut cpu = c.gen.cpu;
    cpu.gbpages = limits.gbpages;
    if let Some(bug) = cfg.plant {
        cpu = bug.apply(cpu);
    }
    let oracle_err = |err| SweepError::Oracle {
        case: case.clone(),
        err,
    };
    let mem = ImageMem::new(&c.img);
    let rep = check_image(o, &c.img, &mem, &cpu, &c.vas, &c.leaves(), &case).map_err(oracle_err)?;
    r.report.merge(rep);
    if !probes {
        return Ok(());
    }
    let (data, fetch) = c.safe_probes(seed);
    for set in [data, fetch] {
        match compare_probes(o, &mem, &cpu, &set, &case) {
            Ok((rep, _)) => r.report.merge(rep),
            // The layout leaves no room for the probe program (no unmapped
            // slot below 4 GiB): a question this case cannot ask, not a
            // disagreement.
            Err(OracleError::Unsupported(why)) => {
                r.probe_skips.push(format!("{case}: {why}"));
                break;
            }
            Err(err) => return Err(oracle_err(err)),
        }
    }
    Ok(())
}

/// Every scenario × scheme of `mode`, built one at a time (each owns its
/// simulated RAM), exported and checked on every root with
/// [`check_roots`] (our walker configured by `cfg.plant`); `visit` gets the
/// oracle (the state's last root still loaded), the state, its image and
/// the report.
pub fn check_scenarios(
    o: &mut dyn MmuOracle,
    mode: PagingMode,
    cfg: &SweepConfig,
    mut visit: impl FnMut(
        &mut dyn MmuOracle,
        &ScenarioState,
        &PagingImage,
        &RootsReport,
    ) -> Result<(), SweepError>,
) -> Result<(), SweepError> {
    for (sc, scheme) in cases(mode) {
        let case = scenario_case(mode, sc, scheme);
        let build = |err| SweepError::Build {
            case: case.clone(),
            err,
        };
        let st = ScenarioState::build(sc, mode, scheme).map_err(build)?;
        let img = st.image().map_err(build)?;
        let mem = ImageMem::new(&img);
        let vas = st.addresses(cfg.seed, 32);
        let cpu = cfg.plant.map_or(st.cpu, |b| b.apply(st.cpu));
        let rr = check_roots(
            o,
            &img,
            &mem,
            &cpu,
            &st.root_list(),
            &vas,
            st.kernel_start(),
            &case,
        )
        .map_err(|err| SweepError::Oracle {
            case: case.clone(),
            err,
        })?;
        visit(o, &st, &img, &rr)?;
    }
    Ok(())
}

/// The name of a scenario case in reports ("2level fork slab-pgd-list").
pub fn scenario_case(mode: PagingMode, sc: Scenario, scheme: Scheme) -> String {
    format!("{mode} {sc} {scheme}")
}

/// The oracle's walk of every pgd vs its walk of `swapper_pg_dir`, judged:
/// the seed's bug must show where [`ScenarioState::shows_bug`] says (then
/// it is reported as seen, the second value) and nowhere else (every
/// difference is a disagreement, the first value).
pub fn judge_scenario(st: &ScenarioState, rr: &RootsReport) -> (Vec<Disagreement>, Vec<String>) {
    let case = scenario_case(st.kernel.mode(), st.scenario, st.kernel.scheme());
    if !st.shows_bug() {
        let d = rr
            .vs_reference
            .iter()
            .flat_map(|(_, d)| d.disagreements.iter().cloned())
            .collect();
        return (d, Vec::new());
    }
    let differing = rr.roots_differing();
    if differing == 0 {
        let d = Disagreement {
            case,
            what: "the seed's bug should show here, but every pgd walks like swapper_pg_dir".into(),
        };
        return (vec![d], Vec::new());
    }
    let example = rr
        .vs_reference
        .iter()
        .find_map(|(_, d)| d.disagreements.first())
        .map(|d| d.what.clone())
        .unwrap_or_default();
    let seen = format!(
        "{case}: {differing} of {} pgds walk differently from swapper_pg_dir, e.g. {example}",
        rr.roots.saturating_sub(1)
    );
    (Vec::new(), vec![seen])
}
