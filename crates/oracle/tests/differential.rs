//! Differential tests: pgdcache's software walker (`x86paging::translate`)
//! against QEMU's MMU, on random page tables from `x86paging::gen`.
//!
//! For each mode and seed: generate tables in simulated RAM, export the RAM
//! as a [`PagingImage`], then compare
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

use std::collections::HashSet;

use oracle::kvm::KvmOracle;
use oracle::qemu::QemuOracle;
use oracle::{Access, AccessKind, ImageDesc, MmuOracle, PagingImage, ProbeOutcome};
use physmem::{PhysAddr, PhysMem, PhysMemory, VirtAddr};
use x86paging::gen::{generate, GenConfig, Generated};
use x86paging::{CpuState, PagingMode, WalkFault};

/// MAXPHYADDR of QEMU's TCG `-cpu max` (phys-bits defaults to 40).
const QEMU_MAXPHYADDR: u32 = 40;
const RAM: u64 = 16 << 20;
/// The exec stub is at most 12 bytes; keep fetch targets 16 bytes apart.
const STUB_SPAN: u64 = 16;

fn qemu() -> Option<QemuOracle> {
    let q = QemuOracle::new();
    if q.available() {
        Some(q)
    } else {
        eprintln!(
            "SKIP: {} not runnable; apt-get install -y --no-install-recommends qemu-system-x86",
            q.config().binary.display()
        );
        None
    }
}

fn oracle_mode(m: PagingMode) -> oracle::PagingMode {
    match m {
        PagingMode::TwoLevel => oracle::PagingMode::TwoLevel,
        PagingMode::Pae => oracle::PagingMode::Pae,
        PagingMode::FourLevel => oracle::PagingMode::FourLevel,
        PagingMode::FiveLevel => oracle::PagingMode::FiveLevel,
    }
}

/// Export the non-zero pages of simulated RAM (the page tables) as an image.
fn export<M: PhysMem>(pm: &PhysMemory<M>, cpu: &CpuState) -> PagingImage {
    let mut data: Vec<(u64, Vec<u8>)> = Vec::new();
    let mut buf = vec![0u8; 4096];
    for f in (0..pm.size()).step_by(4096) {
        pm.read_into(PhysAddr::new(f), &mut buf).unwrap();
        if buf.iter().all(|&b| b == 0) {
            continue;
        }
        match data.last_mut() {
            Some((g, bytes)) if *g + bytes.len() as u64 == f => bytes.extend_from_slice(&buf),
            _ => data.push((f, buf.clone())),
        }
    }
    let cr = cpu.cr_values();
    let img = PagingImage {
        desc: ImageDesc {
            mode: oracle_mode(cpu.mode),
            cr0: cr.cr0,
            cr3: cr.cr3,
            cr4: cr.cr4,
            efer: cr.efer,
            ranges: Vec::new(),
        },
        data,
    };
    PagingImage {
        desc: img.normalized_desc(),
        ..img
    }
}

fn to_walker_access(a: &Access) -> x86paging::Access {
    let kind = match a.kind {
        AccessKind::Read => x86paging::AccessKind::Read,
        AccessKind::Write => x86paging::AccessKind::Write,
        AccessKind::Exec => x86paging::AccessKind::Execute,
    };
    x86paging::Access { kind, user: a.user }
}

fn to_probe_access(va: u64, a: x86paging::Access) -> Access {
    let kind = match a.kind {
        x86paging::AccessKind::Read => AccessKind::Read,
        x86paging::AccessKind::Write => AccessKind::Write,
        x86paging::AccessKind::Execute => AccessKind::Exec,
    };
    Access {
        va,
        kind,
        user: a.user,
        value: 0x5a5a_5a5a,
    }
}

/// What the walker says a real access does: `None` if it raises #GP or the
/// walker refuses (not comparable with a probe).
fn walker_outcome<M: PhysMem>(pm: &PhysMemory<M>, cpu: &CpuState, a: &Access) -> Option<Walk> {
    match x86paging::translate(pm, cpu, VirtAddr::new(a.va), to_walker_access(a)) {
        Ok(_) => Some(Walk::Ok),
        Err(WalkFault::PageFault { code, .. }) => Some(Walk::Fault(u64::from(code.bits()))),
        Err(_) => None,
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Walk {
    Ok,
    Fault(u64),
}

fn matches(w: Walk, va: u64, got: &ProbeOutcome) -> bool {
    match (w, got) {
        (Walk::Ok, ProbeOutcome::Ok(_)) => true,
        (Walk::Fault(code), ProbeOutcome::PageFault { cr2, error_code }) => {
            *cr2 == va && *error_code == code
        }
        _ => false,
    }
}

struct Case {
    pm: PhysMemory<physmem::Ram>,
    gen: Generated,
    img: PagingImage,
}

fn build(mode: PagingMode, seed: u64) -> Case {
    build_for(mode, seed, QEMU_MAXPHYADDR, true)
}

fn build_for(mode: PagingMode, seed: u64, maxphyaddr: u32, gbpages: bool) -> Case {
    let pm = PhysMemory::new(RAM).unwrap();
    let cfg = GenConfig {
        mappings: 40,
        maxphyaddr,
        ..GenConfig::new(mode, seed)
    };
    let mut gen = generate(&pm, &cfg).unwrap();
    gen.cpu.gbpages = gbpages;
    let img = export(&pm, &gen.cpu);
    Case { pm, gen, img }
}

/// Addresses of interest for translation.
fn interesting(gen: &Generated, seed: u64) -> Vec<u64> {
    let mut vas = Vec::new();
    let mut rng = x86paging::gen::Rng::new(seed ^ 0x5eed);
    for m in &gen.mappings {
        let (va, size) = (m.va.as_u64(), m.size.bytes());
        vas.push(va);
        vas.push(va + (rng.below(size) & !7));
        vas.push(va + size - 1);
        vas.push(va.wrapping_add(size));
    }
    for p in gen.probes(seed, 16) {
        vas.push(p.va.as_u64());
    }
    vas.sort_unstable();
    vas.dedup();
    vas
}

fn check_translations(q: &mut dyn MmuOracle, c: &Case, seed: u64) -> Vec<String> {
    let mode = c.gen.cpu.mode;
    let mut bad = Vec::new();
    let mut n = 0;
    for va in interesting(&c.gen, seed) {
        let ours = match x86paging::translate(
            &c.pm,
            &c.gen.cpu,
            VirtAddr::new(va),
            x86paging::Access::READ,
        ) {
            Ok(t) => Some(t.pa.as_u64()),
            Err(WalkFault::PageFault { code, .. }) if code.bits() & 1 == 0 => None,
            // A reserved-bit fault (e.g. a 1 GiB page without PDPE1GB): KVM's
            // walker reports no translation; QEMU's debug walk ignores it.
            Err(WalkFault::PageFault { .. }) if q.name() == "kvm" => None,
            Err(_) => continue, // non-canonical, reserved: not a debug-walk question
        };
        n += 1;
        let theirs = q.translate(va).unwrap();
        if ours != theirs {
            bad.push(format!(
                "{mode} seed {seed}: {va:#x}: walker {ours:x?}, {} {theirs:x?}",
                q.name()
            ));
        }
    }
    assert!(n > 40, "{mode}: only {n} addresses compared");
    bad
}

fn check_mappings(q: &mut QemuOracle, c: &Case, seed: u64) -> Vec<String> {
    use x86paging::EntryFlags as F;
    let mode = c.gen.cpu.mode;
    let mut ours: Vec<String> = c
        .gen
        .mappings
        .iter()
        .map(|m| {
            let f = m.flags;
            format!(
                "{:#x} -> {:#x} size {:#x} W{} U{} X{} G{} A{} D{} C{} T{}",
                m.va.as_u64(),
                m.pa.as_u64(),
                m.size.bytes(),
                u8::from(f.contains(F::RW)),
                u8::from(f.contains(F::USER)),
                u8::from(f.contains(F::NX)),
                u8::from(f.contains(F::GLOBAL)),
                u8::from(f.contains(F::ACCESSED)),
                u8::from(f.contains(F::DIRTY)),
                u8::from(f.contains(F::PCD)),
                u8::from(f.contains(F::PWT)),
            )
        })
        .collect();
    let mut theirs: Vec<String> = q
        .mappings()
        .unwrap()
        .iter()
        .map(|m| {
            let f = m.flags;
            format!(
                "{:#x} -> {:#x} size {:#x} W{} U{} X{} G{} A{} D{} C{} T{}",
                m.va,
                m.pa,
                m.size,
                u8::from(f.writable),
                u8::from(f.user),
                u8::from(f.nx),
                u8::from(f.global),
                u8::from(f.accessed),
                u8::from(f.dirty),
                u8::from(f.pcd),
                u8::from(f.pwt),
            )
        })
        .collect();
    ours.sort();
    theirs.sort();
    let a: HashSet<&String> = ours.iter().collect();
    let b: HashSet<&String> = theirs.iter().collect();
    let mut bad = Vec::new();
    for x in a.difference(&b) {
        bad.push(format!("{mode} seed {seed}: only in generator: {x}"));
    }
    for x in b.difference(&a) {
        bad.push(format!("{mode} seed {seed}: only in info tlb: {x}"));
    }
    bad
}

/// The generator's accesses that are safe to perform for real: no store or
/// fetch into a page-table frame or device memory, fetch targets in RAM and
/// not overlapping each other.
fn safe_accesses(c: &Case, seed: u64) -> (Vec<Access>, Vec<Access>) {
    let tables = oracle::probe::table_frames(&c.img);
    let mut data = Vec::new();
    let mut fetch = Vec::new();
    let mut stubs: Vec<u64> = Vec::new();
    for p in c.gen.probes(seed, 8) {
        let a = to_probe_access(p.va.as_u64(), p.access);
        let target = c
            .gen
            .mapping_of(p.va)
            .map(|m| m.pa.as_u64() + (p.va.as_u64() - m.va.as_u64()));
        match (a.kind, target) {
            (AccessKind::Read, _) | (_, None) => {}
            (_, Some(pa)) => {
                let frames = [pa & !0xfff, (pa + STUB_SPAN - 1) & !0xfff];
                if frames.iter().any(|f| tables.contains(f)) || (0xfec0_0000..1 << 32).contains(&pa)
                {
                    continue;
                }
                if a.kind == AccessKind::Exec {
                    // The stub must land in RAM outside the BIOS/VGA hole.
                    if pa + STUB_SPAN > RAM || (0xa_0000..0x10_0000).contains(&pa) {
                        continue;
                    }
                    if stubs
                        .iter()
                        .any(|&s| s != pa && s < pa + STUB_SPAN && pa < s + STUB_SPAN)
                    {
                        continue;
                    }
                    stubs.push(pa);
                }
            }
        }
        if a.kind == AccessKind::Exec {
            fetch.push(a);
        } else {
            data.push(a);
        }
    }
    (data, fetch)
}

fn check_probes(
    q: &mut dyn MmuOracle,
    c: &Case,
    seed: u64,
    wrong_cpu: &CpuState,
) -> (Vec<String>, usize, usize) {
    let mode = c.gen.cpu.mode;
    let (data, fetch) = safe_accesses(c, seed);
    let mut bad = Vec::new();
    let mut compared = 0;
    let mut mutant_caught = 0;
    for set in [data, fetch] {
        let got = q.probe(&set).unwrap();
        for (a, g) in set.iter().zip(&got) {
            let Some(w) = walker_outcome(&c.pm, &c.gen.cpu, a) else {
                continue;
            };
            compared += 1;
            if !matches(w, a.va, g) {
                bad.push(format!(
                    "{mode} seed {seed}: {a:x?}: walker {w:x?}, QEMU {g}"
                ));
            }
            if let Some(wm) = walker_outcome(&c.pm, wrong_cpu, a) {
                if !matches(wm, a.va, g) {
                    mutant_caught += 1;
                }
            }
        }
    }
    (bad, compared, mutant_caught)
}

fn differential(mode: PagingMode) {
    let Some(mut q) = qemu() else { return };
    let mut bad = Vec::new();
    let mut mutant_caught = 0;
    for seed in [1u64, 2] {
        let t0 = std::time::Instant::now();
        let c = build(mode, seed);
        q.load(&c.img).unwrap();
        bad.extend(check_translations(&mut q, &c, seed));
        bad.extend(check_mappings(&mut q, &c, seed));
        // The deliberately wrong walker: CR0.WP ignored.
        let wrong = CpuState {
            wp: false,
            ..c.gen.cpu
        };
        let (b, compared, caught) = check_probes(&mut q, &c, seed, &wrong);
        bad.extend(b);
        mutant_caught += caught;
        eprintln!(
            "{mode} seed {seed}: {} mappings, {compared} probes compared, wrong-WP walker \
             caught {caught} times, {:?}",
            c.gen.mappings.len(),
            t0.elapsed()
        );
    }
    assert!(
        bad.is_empty(),
        "{} mismatches:\n{}",
        bad.len(),
        bad.join("\n")
    );
    assert!(
        mutant_caught > 0,
        "{mode}: a walker ignoring CR0.WP went unnoticed"
    );
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
        let mut bad = Vec::new();
        let mut caught = 0;
        for seed in [1u64, 2] {
            let t0 = std::time::Instant::now();
            let c = build_for(mode, seed, maxphy, gb);
            k.load(&c.img).unwrap();
            bad.extend(check_translations(&mut k, &c, seed));
            let wrong = CpuState {
                wp: false,
                ..c.gen.cpu
            };
            let (b, compared, n) = check_probes(&mut k, &c, seed, &wrong);
            bad.extend(b);
            caught += n;
            eprintln!(
                "kvm {mode} seed {seed} (MAXPHYADDR {maxphy}, 1G pages {gb}): {compared} probes \
                 compared, wrong-WP walker caught {n} times, {:?}",
                t0.elapsed()
            );
        }
        assert!(
            bad.is_empty(),
            "{} mismatches:\n{}",
            bad.len(),
            bad.join("\n")
        );
        assert!(
            caught > 0,
            "kvm {mode}: a walker ignoring CR0.WP went unnoticed"
        );
    }
}
