//! The sweep `pgdcache oracle` runs ([`sweep::check_mode`]), on QEMU, with
//! its negative controls: our walker with a planted wrong rule must be
//! caught by the same fast path (one QEMU for every layout, pipelined
//! queries, probes on the same session) that reports 0 disagreements for
//! the real walker.
//!
//! * `IgnorePse` (a 2-level PDE with PS set walked as a pointer) must show
//!   in the debug walk on the pgd system's own tables, whose kernel map uses
//!   4 MiB pages: our walk's mapping list differs from `info tlb`. (On the
//!   random layouts it does not: there the mapping list compared is the
//!   generator's, and a walk that leaves the image is not compared.)
//! * `IgnoreWp` (supervisor writes to read-only pages allowed) leaves every
//!   translation alike and must show in the real-execution probes only.
//!
//! Skipped (with `SKIP:`) when QEMU is missing, failed under `CI`.

use oracle::qemu::QemuOracle;
use pgdcache_scenarios::diff::QEMU_MAXPHYADDR;
use pgdcache_scenarios::sweep::{self, CpuLimits, ModeResult, PlantedBug, SweepConfig};
use x86paging::PagingMode;

const LIMITS: CpuLimits = CpuLimits {
    maxphyaddr: QEMU_MAXPHYADDR,
    gbpages: true,
};

fn qemu() -> Option<QemuOracle> {
    oracle::ci::qemu_or_skip()
}

fn run(
    q: &mut QemuOracle,
    mode: PagingMode,
    scenarios: bool,
    plant: Option<PlantedBug>,
) -> ModeResult {
    let cfg = SweepConfig {
        seed: 1,
        cases: 6,
        probe_cases: 3,
        scenarios,
        plant,
    };
    let r = sweep::check_mode(q, &LIMITS, mode, &cfg).unwrap();
    assert_eq!(r.cases, 6);
    assert!(r.report.addresses > 100 && r.report.mappings > 100, "{r:?}");
    r
}

#[test]
fn real_walker_agrees_on_one_session() {
    let Some(mut q) = qemu() else { return };
    for mode in [PagingMode::TwoLevel, PagingMode::FourLevel] {
        let r = run(&mut q, mode, false, None);
        let bad: Vec<String> = r
            .report
            .disagreements
            .iter()
            .map(|d| d.to_string())
            .collect();
        assert!(bad.is_empty(), "{mode}: {}", bad.join("\n"));
        assert!(r.report.probes > 20, "{mode}: {} probes", r.report.probes);
    }
    // Six layouts, six probe runs, two modes: one QEMU.
    assert_eq!(q.sessions_started(), 1);
}

#[test]
fn planted_pse_bug_is_caught_by_the_debug_walk() {
    let Some(mut q) = qemu() else { return };
    let r = run(
        &mut q,
        PagingMode::TwoLevel,
        true,
        Some(PlantedBug::IgnorePse),
    );
    let bad = &r.report.disagreements;
    assert!(
        bad.iter().any(|d| !d.case.contains(" gen seed ")),
        "a walker ignoring PSE went unnoticed on swapper_pg_dir's 4 MiB pages"
    );
    assert!(
        bad.iter().any(|d| d
            .what
            .starts_with("only in qemu-tcg's mapping list: 0xc0000000 ")),
        "{:?}",
        bad.first()
    );
}

#[test]
fn planted_wp_bug_is_caught_by_probes_only() {
    let Some(mut q) = qemu() else { return };
    let r = run(&mut q, PagingMode::Pae, false, Some(PlantedBug::IgnoreWp));
    assert!(
        !r.report.disagreements.is_empty(),
        "a walker ignoring CR0.WP went unnoticed"
    );
    for d in &r.report.disagreements {
        assert!(d.what.contains("kind: Write"), "not a store probe: {d}");
    }
}
