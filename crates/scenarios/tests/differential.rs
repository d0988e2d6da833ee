//! Differential tests: pgdcache's software walker (`x86paging::translate`)
//! against QEMU's MMU, on random page tables from `x86paging::gen`
//! ([`GenCase`]).
//!
//! For each mode and seed: generate tables in simulated RAM, export them as
//! a `PagingImage`, then compare
//!
//! 1. every address of interest (start, a random inside address and the last
//!    byte of each mapping, the byte after it, random unmapped addresses):
//!    our walker's supervisor-read translation vs QEMU's `gva2gpa`;
//! 2. the whole mapping list (va, pa, size, leaf flags) vs `info tlb`;
//! 3. the generator's six accesses per mapping (supervisor/user ×
//!    read/write/fetch) by real execution vs our walker's verdict, #PF error
//!    code included;
//!
//! and finally show the comparison has teeth: a walker with one rule wrong
//! (CR0.WP ignored: supervisor writes to read-only pages allowed) is caught.
//! Skipped (with a message) when QEMU is missing. The same checks (minus
//! `info tlb`, which KVM lacks) run against KVM where it supports the mode.
//! `pgdcache oracle` runs the same comparisons on many more seeds.

use oracle::kvm::KvmOracle;
use oracle::qemu::QemuOracle;
use oracle::MmuOracle;
use pgdcache_scenarios::diff::{
    check_image, compare_probes, walker_probe, DiffReport, GenCase, QEMU_MAXPHYADDR,
};
use pgdcache_scenarios::oracle_mode;
use x86paging::{CpuState, PagingMode};

fn qemu() -> Option<QemuOracle> {
    oracle::ci::qemu_or_skip()
}

/// One generated case against `o`: translations and mappings, then the
/// real-execution probes. Returns the report and how many probe outcomes
/// the deliberately wrong walker (CR0.WP ignored) got wrong.
fn run_case(o: &mut dyn MmuOracle, c: &GenCase, seed: u64) -> (DiffReport, usize) {
    let case = format!("{} seed {seed}", c.gen.cpu.mode);
    let mut r = check_image(o, &c.img, &c.pm, &c.gen.cpu, &c.vas, &c.leaves(), &case).unwrap();
    assert!(
        r.addresses > 40,
        "{case}: only {} addresses compared",
        r.addresses
    );
    let wrong = CpuState {
        wp: false,
        ..c.gen.cpu
    };
    let mut caught = 0;
    let (data, fetch) = c.safe_probes(seed);
    for set in [data, fetch] {
        let (p, outcomes) = compare_probes(o, &c.pm, &c.gen.cpu, &set, &case).unwrap();
        r.merge(p);
        caught += outcomes
            .iter()
            .filter(|(a, g)| walker_probe(&c.pm, &wrong, a).is_some_and(|w| !w.matches(a.va, g)))
            .count();
    }
    (r, caught)
}

fn assert_agree(what: &str, r: &DiffReport, caught: usize) {
    let bad: Vec<String> = r.disagreements.iter().map(|d| d.to_string()).collect();
    assert!(
        bad.is_empty(),
        "{what}: {} mismatches:\n{}",
        bad.len(),
        bad.join("\n")
    );
    assert!(r.probes > 0, "{what}: no probe compared");
    assert!(
        caught > 0,
        "{what}: a walker ignoring CR0.WP went unnoticed"
    );
}

fn differential(mode: PagingMode) {
    let Some(mut q) = qemu() else { return };
    let mut total = DiffReport::default();
    let mut caught = 0;
    for seed in [1u64, 2] {
        let t0 = std::time::Instant::now();
        let mut c = GenCase::new(mode, seed, QEMU_MAXPHYADDR).unwrap();
        c.gen.cpu.gbpages = true; // QEMU's -cpu max has PDPE1GB
        let (r, n) = run_case(&mut q, &c, seed);
        eprintln!(
            "{mode} seed {seed}: {} mappings, {} addresses, {} probes compared, wrong-WP walker \
             caught {n} times, {:?}",
            c.gen.mappings.len(),
            r.addresses,
            r.probes,
            t0.elapsed()
        );
        assert!(
            r.mappings > 0,
            "{mode} seed {seed}: info tlb compared nothing"
        );
        total.merge(r);
        caught += n;
    }
    assert_agree(&mode.to_string(), &total, caught);
}

#[test]
fn differential_two_level() {
    differential(PagingMode::TwoLevel);
}

#[test]
fn differential_pae() {
    differential(PagingMode::Pae);
}

#[test]
fn differential_four_level() {
    differential(PagingMode::FourLevel);
}

#[test]
fn differential_five_level() {
    differential(PagingMode::FiveLevel);
}

#[test]
fn differential_kvm() {
    let mut k = KvmOracle::new();
    for mode in [PagingMode::FourLevel, PagingMode::FiveLevel] {
        if let oracle::Support::No(why) = k.supports(oracle_mode(mode)) {
            eprintln!("SKIP: KVM cannot check {mode} here: {why}");
            continue;
        }
        let maxphy = k.maxphyaddr().unwrap_or(QEMU_MAXPHYADDR);
        let gb = k.has_1g_pages();
        let mut total = DiffReport::default();
        let mut caught = 0;
        for seed in [1u64, 2] {
            let t0 = std::time::Instant::now();
            let mut c = GenCase::new(mode, seed, maxphy).unwrap();
            c.gen.cpu.gbpages = gb;
            let (r, n) = run_case(&mut k, &c, seed);
            eprintln!(
                "kvm {mode} seed {seed} (MAXPHYADDR {maxphy}, 1G pages {gb}): {} probes \
                 compared, wrong-WP walker caught {n} times, {:?}",
                r.probes,
                t0.elapsed()
            );
            total.merge(r);
            caught += n;
        }
        assert_agree(&format!("kvm {mode}"), &total, caught);
    }
}
