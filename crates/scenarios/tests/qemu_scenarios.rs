//! The pgd system's own page tables against QEMU's MMU: every scenario
//! (swapper, fork, cpa-split) under every scheme that exists in each mode.
//!
//! Our walker reads the exported image's bytes; it must agree with the walk
//! over the simulator's RAM it was cut from (no QEMU needed) and with QEMU's
//! `gva2gpa` and `info tlb` (skipped with `SKIP:` when QEMU is missing; failed instead under `CI`).
//! A deliberately wrong leaf list (the cpa target's PCD dropped) must be
//! caught, so the comparison is known to have teeth.

use oracle::qemu::QemuOracle;
use pgdcache::{KernelError, Scheme};
use pgdcache_scenarios::diff::{check_image, compare_mappings};
use pgdcache_scenarios::scenario::leaves;
use pgdcache_scenarios::{cpu_from_image, ImageMem, Scenario, ScenarioError, ScenarioState};
use physmem::VirtAddr;
use x86paging::{Access, EntryFlags, PagingMode};

const MODES: [PagingMode; 4] = [
    PagingMode::TwoLevel,
    PagingMode::Pae,
    PagingMode::FourLevel,
    PagingMode::FiveLevel,
];

fn states(mode: PagingMode) -> Vec<ScenarioState> {
    let mut v = Vec::new();
    for scheme in Scheme::ALL {
        for sc in Scenario::ALL {
            match ScenarioState::build(sc, mode, scheme) {
                Ok(st) => v.push(st),
                Err(ScenarioError::Kernel(KernelError::SchemeUnsupported { .. })) => {}
                Err(e) => panic!("{mode} {sc} {scheme}: {e}"),
            }
        }
    }
    v
}

#[test]
fn image_walk_equals_ram_walk() {
    for mode in MODES {
        for st in states(mode) {
            let img = st.image().unwrap();
            let mem = ImageMem::new(&img);
            let cpu = cpu_from_image(&img.desc, Some(st.cpu.maxphyaddr));
            assert_eq!(cpu, st.cpu, "{st:?}: CPU state from the image");
            let vas = st.addresses(3, 64);
            assert!(vas.len() > 20, "{st:?}: {} addresses", vas.len());
            for va in vas {
                for access in Access::ALL {
                    let a =
                        x86paging::translate(&**st.kernel.pm(), &st.cpu, VirtAddr::new(va), access);
                    let b = x86paging::translate(&mem, &cpu, VirtAddr::new(va), access);
                    assert_eq!(a, b, "{st:?} {va:#x} {access:?}");
                }
            }
            assert_eq!(
                leaves(&**st.kernel.pm(), &st.cpu),
                leaves(&mem, &cpu),
                "{st:?}"
            );
        }
    }
}

#[test]
fn scenarios_against_qemu() {
    let mut q = QemuOracle::new();
    if !q.available() {
        oracle::ci::qemu_missing(format_args!(
            "{} not runnable; apt-get install -y --no-install-recommends qemu-system-x86",
            q.config().binary.display()
        ));
        return;
    }
    for mode in MODES {
        let t0 = std::time::Instant::now();
        let (mut n, mut addrs, mut maps) = (0, 0, 0);
        for st in states(mode) {
            let case = format!("{st:?}");
            let img = st.image().unwrap();
            let mem = ImageMem::new(&img);
            let ours = leaves(&mem, &st.cpu);
            let vas = st.addresses(1, 32);
            let r = check_image(&mut q, &img, &mem, &st.cpu, &vas, &ours, &case).unwrap();
            assert!(
                r.disagreements.is_empty(),
                "{}",
                r.disagreements
                    .iter()
                    .map(|d| d.to_string())
                    .collect::<Vec<_>>()
                    .join("\n")
            );
            assert!(r.addresses > 20 && r.mappings > 10, "{case}: {r:?}");
            if let Some(t) = st.cpa_target {
                // Teeth: our list with the cpa target's PCD dropped must differ.
                let mut wrong = ours.clone();
                let l = wrong
                    .iter_mut()
                    .find(|l| l.va == t.as_u64())
                    .expect("cpa target is a 4K leaf");
                assert!(l.flags.contains(EntryFlags::PCD), "{case}: target not PCD");
                l.flags.remove(EntryFlags::PCD);
                let r = compare_mappings(&mut q, &wrong, &case).unwrap();
                assert_eq!(r.disagreements.len(), 2, "{case}: {r:?}");
            }
            n += 1;
            addrs += r.addresses;
            maps += r.mappings;
        }
        eprintln!(
            "{mode}: {n} scenario tables, {addrs} addresses, {maps} mappings agree, {:?}",
            t0.elapsed()
        );
    }
}
