//! Walker tests: SDM vectors built from raw bits, and property tests
//! against the generator's reference model.

use super::*;
use crate::cpu::Access;
use crate::gen::{generate, Expect, GenConfig};
use crate::map::{lookup, map};
use crate::table::write_entry;
use physmem::{Owner, SimMemory};
use proptest::prelude::*;

const P: u64 = _PAGE_PRESENT;
const RW: u64 = _PAGE_RW;
const US: u64 = _PAGE_USER;
const PS: u64 = _PAGE_PSE;

fn mem() -> SimMemory {
    SimMemory::new(64 << 20).unwrap()
}

fn table(pm: &SimMemory) -> PhysAddr {
    pm.alloc_zeroed_frame(Owner::KernelTable).unwrap().start()
}

fn put(pm: &SimMemory, mode: PagingMode, at: PhysAddr, raw: u64) {
    write_entry(pm, mode, at, Entry::from_raw(raw)).unwrap();
}

fn pf(code: PfErrorCode) -> impl Fn(Result<Translation, WalkFault>) -> bool {
    move |r| matches!(r, Err(WalkFault::PageFault { code: c, .. }) if c == code)
}

/// Builds a 4-level (or 5-level) chain for `va` down to `leaf_level` with
/// P|RW|US intermediates, and writes `leaf` there. Returns the cpu state.
fn chain(pm: &SimMemory, mode: PagingMode, va: u64, leaf_level: Level, leaf: u64) -> CpuState {
    let root = table(pm);
    let va = VirtAddr::new(va);
    let mut t = root;
    for &level in mode.levels() {
        let at = entry_pa(mode, t, level, va);
        if level == leaf_level {
            put(pm, mode, at, leaf);
            break;
        }
        let next = table(pm);
        let flags = if mode == PagingMode::Pae && level == Level::Pgd {
            P
        } else {
            P | RW | US
        };
        put(pm, mode, at, next.as_u64() | flags);
        t = next;
    }
    CpuState::new(mode, root)
}

#[test]
fn pae_pdpte_with_rw_is_reserved() {
    let pm = mem();
    let pdpt = table(&pm);
    let pmd = table(&pm);
    put(&pm, PagingMode::Pae, pdpt, pmd.as_u64() | P | RW);
    let cpu = CpuState::new(PagingMode::Pae, pdpt);
    assert!(matches!(
        load_pdptes(&pm, &cpu),
        Err(WalkFault::PdpteReserved { index: 0, .. })
    ));
    // Every access fails the same way, even to another PDPTE's range.
    let r = translate(&pm, &cpu, VirtAddr::new(0xc000_0000), Access::READ);
    assert!(matches!(r, Err(WalkFault::PdpteReserved { index: 0, .. })));
    assert_eq!(r.unwrap_err().vector(), Some(13));
    // P only: fine, and the rest of the walk happens.
    put(&pm, PagingMode::Pae, pdpt, pmd.as_u64() | P);
    assert!(load_pdptes(&pm, &cpu).is_ok());
    assert!(pf(PfErrorCode::empty())(translate(
        &pm,
        &cpu,
        VirtAddr::new(0x1000),
        Access::READ
    )));
    // Bit 63 and bits above MAXPHYADDR are reserved in a PDPTE, even with NXE.
    put(&pm, PagingMode::Pae, pdpt, pmd.as_u64() | P | 1 << 63);
    assert!(load_pdptes(&pm, &cpu).is_err());
    put(&pm, PagingMode::Pae, pdpt, pmd.as_u64() | P | 1 << 40);
    assert!(load_pdptes(&pm, &cpu).is_err());
    // A not-present PDPTE's other bits are not checked.
    put(&pm, PagingMode::Pae, pdpt, RW | US);
    assert!(load_pdptes(&pm, &cpu).is_ok());
}

#[test]
fn two_level_pse_maps_4m_and_without_pse_points_to_a_table() {
    let pm = mem();
    let pgd = table(&pm);
    let mode = PagingMode::TwoLevel;
    // pgd[1] = pt | PS | RW | P with pt 4 MiB aligned: a 4 MiB page at pt
    // with CR4.PSE, a pointer to the page table at pt without.
    let pt = pm.alloc_pages(10, Owner::KernelTable).unwrap().start();
    assert!(pt.is_aligned(4 << 20));
    put(
        &pm,
        mode,
        PhysAddr::new(pgd.as_u64() + 4),
        pt.as_u64() | PS | RW | P,
    );
    put(&pm, mode, PhysAddr::new(pt.as_u64() + 4), 0x00ab_c000 | P);
    let mut cpu = CpuState::new(mode, pgd);
    let va = VirtAddr::new(0x0040_1234);
    let t = translate(&pm, &cpu, va, Access::READ).unwrap();
    assert_eq!(t.size, PageSize::Size4M);
    assert_eq!(t.level, Level::Pgd);
    assert_eq!(t.pa.as_u64(), pt.as_u64() + 0x1234);
    cpu.pse = false;
    let t = translate(&pm, &cpu, va, Access::READ).unwrap();
    assert_eq!(t.size, PageSize::Size4K);
    assert_eq!(t.pa, PhysAddr::new(0x00ab_c234));
    assert_eq!(t.level, Level::Pte);
}

#[test]
fn pse36_high_address() {
    let pm = mem();
    let pgd = table(&pm);
    let mode = PagingMode::TwoLevel;
    // 4 MiB page at 0x12_0040_0000: bits 39:32 = 0x12 in entry bits 20:13.
    put(&pm, mode, pgd, 0x0040_0000 | (0x12 << 13) | PS | P);
    let mut cpu = CpuState::new(mode, pgd);
    cpu.maxphyaddr = 40;
    let t = translate(&pm, &cpu, VirtAddr::new(0x3_4567), Access::READ).unwrap();
    assert_eq!(t.pa, PhysAddr::new(0x12_0043_4567));
    // MAXPHYADDR 36: address bit 36 (entry bit 17) is reserved.
    cpu.maxphyaddr = 36;
    assert!(pf(PfErrorCode::P | PfErrorCode::RSVD)(translate(
        &pm,
        &cpu,
        VirtAddr::new(0x3_4567),
        Access::READ
    )));
    // Bit 21 is always reserved in a PSE PDE.
    cpu.maxphyaddr = 40;
    put(&pm, mode, pgd, 0x0040_0000 | (1 << 21) | PS | P);
    assert!(pf(PfErrorCode::P | PfErrorCode::RSVD | PfErrorCode::WRITE)(
        translate(&pm, &cpu, VirtAddr::new(0x3_4567), Access::WRITE)
    ));
}

#[test]
fn nx_without_nxe_is_reserved() {
    for mode in [
        PagingMode::Pae,
        PagingMode::FourLevel,
        PagingMode::FiveLevel,
    ] {
        let pm = mem();
        let mut cpu = chain(
            &pm,
            mode,
            0x40_0000,
            Level::Pte,
            0x5000 | P | RW | US | 1 << 63,
        );
        cpu.nxe = false;
        let va = VirtAddr::new(0x40_0010);
        assert!(pf(PfErrorCode::P | PfErrorCode::RSVD)(translate(
            &pm,
            &cpu,
            va,
            Access::READ
        )));
        // No I/D without NXE (and no SMEP).
        assert!(pf(PfErrorCode::P | PfErrorCode::RSVD | PfErrorCode::USER)(
            translate(&pm, &cpu, va, Access::USER_EXEC)
        ));
        cpu.nxe = true;
        assert!(translate(&pm, &cpu, va, Access::READ).is_ok());
        assert!(pf(PfErrorCode::P | PfErrorCode::FETCH)(translate(
            &pm,
            &cpu,
            va,
            Access::EXEC
        )));
    }
}

#[test]
fn user_access_to_supervisor_page() {
    for mode in PagingMode::ALL {
        let pm = mem();
        let cpu = chain(&pm, mode, 0x40_0000, Level::Pte, 0x5000 | P | RW);
        let va = VirtAddr::new(0x40_0000);
        assert!(pf(PfErrorCode::P | PfErrorCode::USER)(translate(
            &pm,
            &cpu,
            va,
            Access::USER_READ
        )));
        assert!(pf(PfErrorCode::P | PfErrorCode::USER | PfErrorCode::WRITE)(
            translate(&pm, &cpu, va, Access::USER_WRITE)
        ));
        assert!(translate(&pm, &cpu, va, Access::WRITE).is_ok());
    }
}

#[test]
fn supervisor_write_to_read_only_and_wp() {
    for mode in PagingMode::ALL {
        let pm = mem();
        let mut cpu = chain(&pm, mode, 0x40_0000, Level::Pte, 0x5000 | P);
        let va = VirtAddr::new(0x40_0000);
        cpu.wp = false;
        assert_eq!(
            translate(&pm, &cpu, va, Access::WRITE).unwrap().pa,
            PhysAddr::new(0x5000)
        );
        cpu.wp = true;
        assert!(pf(PfErrorCode::P | PfErrorCode::WRITE)(translate(
            &pm,
            &cpu,
            va,
            Access::WRITE
        )));
        // User writes fault regardless of WP (the chain has US only above).
        cpu.wp = false;
        assert!(pf(PfErrorCode::P | PfErrorCode::WRITE | PfErrorCode::USER)(
            translate(&pm, &cpu, va, Access::USER_WRITE)
        ));
    }
}

#[test]
fn rights_are_anded_across_levels() {
    let pm = mem();
    let mode = PagingMode::FourLevel;
    let cpu = chain(&pm, mode, 0x40_0000, Level::Pte, 0x5000 | P | RW | US);
    // Clear RW in the pud-level entry (the PDPTE pointing to the pmd).
    let (at, _, _) = {
        let root = cpu.cr3;
        let pgd_e = read_entry(
            &pm,
            mode,
            entry_pa(mode, root, Level::Pgd, VirtAddr::new(0x40_0000)),
        )
        .unwrap();
        let pud = pgd_e.table_addr(mode);
        let at = entry_pa(mode, pud, Level::Pud, VirtAddr::new(0x40_0000));
        (at, (), ())
    };
    let e = read_entry(&pm, mode, at).unwrap();
    put(&pm, mode, at, e.raw() & !RW);
    let va = VirtAddr::new(0x40_0000);
    assert!(pf(PfErrorCode::P | PfErrorCode::WRITE | PfErrorCode::USER)(
        translate(&pm, &cpu, va, Access::USER_WRITE)
    ));
    let t = translate(&pm, &cpu, va, Access::USER_READ).unwrap();
    assert!(!t.flags.contains(EntryFlags::RW));
    assert!(t.flags.contains(EntryFlags::USER));
}

#[test]
fn fetch_from_nx_page() {
    for mode in [
        PagingMode::Pae,
        PagingMode::FourLevel,
        PagingMode::FiveLevel,
    ] {
        let pm = mem();
        let cpu = chain(
            &pm,
            mode,
            0x40_0000,
            Level::Pmd,
            0x20_0000 | P | RW | US | PS | 1 << 63,
        );
        let va = VirtAddr::new(0x41_2345);
        assert!(pf(PfErrorCode::P | PfErrorCode::FETCH)(translate(
            &pm,
            &cpu,
            va,
            Access::EXEC
        )));
        assert!(pf(PfErrorCode::P | PfErrorCode::FETCH | PfErrorCode::USER)(
            translate(&pm, &cpu, va, Access::USER_EXEC)
        ));
        let t = translate(&pm, &cpu, va, Access::READ).unwrap();
        assert_eq!(t.pa, PhysAddr::new(0x21_2345));
        assert_eq!(t.size, PageSize::Size2M);
        assert!(t.flags.contains(EntryFlags::NX));
        // Not-present fetches carry I/D too when NXE is on.
        assert!(pf(PfErrorCode::FETCH)(translate(
            &pm,
            &cpu,
            VirtAddr::new(0x8000_0000),
            Access::EXEC
        )));
    }
}

#[test]
fn smep_and_smap() {
    let pm = mem();
    let mut cpu = chain(
        &pm,
        PagingMode::FourLevel,
        0x40_0000,
        Level::Pte,
        0x5000 | P | RW | US,
    );
    let va = VirtAddr::new(0x40_0000);
    cpu.smep = true;
    assert!(pf(PfErrorCode::P | PfErrorCode::FETCH)(translate(
        &pm,
        &cpu,
        va,
        Access::EXEC
    )));
    assert!(translate(&pm, &cpu, va, Access::READ).is_ok());
    cpu.smap = true;
    assert!(pf(PfErrorCode::P)(translate(&pm, &cpu, va, Access::READ)));
    assert!(translate(&pm, &cpu, va, Access::USER_WRITE).is_ok());
    // 2-level with SMEP: I/D is reported.
    let pm = mem();
    let mut cpu = chain(
        &pm,
        PagingMode::TwoLevel,
        0x40_0000,
        Level::Pte,
        0x5000 | P | US,
    );
    assert!(pf(PfErrorCode::empty())(translate(
        &pm,
        &cpu,
        VirtAddr::new(0x80_0000),
        Access::EXEC
    )));
    cpu.smep = true;
    assert!(pf(PfErrorCode::FETCH)(translate(
        &pm,
        &cpu,
        VirtAddr::new(0x80_0000),
        Access::EXEC
    )));
}

#[test]
fn one_gib_page() {
    for mode in [PagingMode::FourLevel, PagingMode::FiveLevel] {
        let pm = mem();
        let mut cpu = chain(
            &pm,
            mode,
            0x4000_0000,
            Level::Pud,
            0x1_c000_0000 | P | RW | PS,
        );
        let va = VirtAddr::new(0x4123_4567);
        let t = translate(&pm, &cpu, va, Access::WRITE).unwrap();
        assert_eq!(t.pa, PhysAddr::new(0x1_c123_4567));
        assert_eq!((t.size, t.level), (PageSize::Size1G, Level::Pud));
        cpu.gbpages = false;
        assert!(pf(PfErrorCode::P | PfErrorCode::RSVD)(translate(
            &pm,
            &cpu,
            va,
            Access::READ
        )));
        // Bits 29:13 of a 1 GiB entry are reserved.
        cpu.gbpages = true;
        let cpu2 = chain(
            &pm,
            mode,
            0x4000_0000,
            Level::Pud,
            0x1_c000_0000 | 1 << 13 | P | PS,
        );
        assert!(pf(PfErrorCode::P | PfErrorCode::RSVD)(translate(
            &pm,
            &cpu2,
            va,
            Access::READ
        )));
    }
}

#[test]
fn two_mib_reserved_bits() {
    let pm = mem();
    let cpu = chain(
        &pm,
        PagingMode::Pae,
        0x40_0000,
        Level::Pmd,
        0x20_0000 | 1 << 13 | P | PS,
    );
    assert!(pf(PfErrorCode::P | PfErrorCode::RSVD)(translate(
        &pm,
        &cpu,
        VirtAddr::new(0x40_0000),
        Access::READ
    )));
    // Bit 12 is PAT, not reserved.
    let cpu = chain(
        &pm,
        PagingMode::Pae,
        0x40_0000,
        Level::Pmd,
        0x20_0000 | 1 << 12 | P | PS,
    );
    let t = translate(&pm, &cpu, VirtAddr::new(0x40_0000), Access::READ).unwrap();
    assert!(t.flags.contains(EntryFlags::PAT));
    // Address bits above MAXPHYADDR in a pte.
    let mut cpu = chain(
        &pm,
        PagingMode::FourLevel,
        0x40_0000,
        Level::Pte,
        1 << 46 | P,
    );
    cpu.maxphyaddr = 46;
    assert!(pf(PfErrorCode::P | PfErrorCode::RSVD)(translate(
        &pm,
        &cpu,
        VirtAddr::new(0x40_0000),
        Access::READ
    )));
    cpu.maxphyaddr = 52;
    assert!(translate(&pm, &cpu, VirtAddr::new(0x40_0000), Access::READ).is_ok());
}

#[test]
fn ps_in_pml4e_and_pml5e_is_reserved() {
    for mode in [PagingMode::FourLevel, PagingMode::FiveLevel] {
        let pm = mem();
        let cpu = chain(&pm, mode, 0, Level::Pgd, P | RW | PS);
        assert!(pf(PfErrorCode::P | PfErrorCode::RSVD)(translate(
            &pm,
            &cpu,
            VirtAddr::new(0x1000),
            Access::READ
        )));
    }
    let pm = mem();
    let cpu = chain(&pm, PagingMode::FiveLevel, 0, Level::P4d, P | RW | PS);
    assert!(pf(PfErrorCode::P | PfErrorCode::RSVD)(translate(
        &pm,
        &cpu,
        VirtAddr::new(0x1000),
        Access::READ
    )));
}

#[test]
fn non_canonical_is_gp() {
    let pm = mem();
    let cpu = CpuState::new(PagingMode::FourLevel, table(&pm));
    let r = translate(
        &pm,
        &cpu,
        VirtAddr::new(0x0000_8000_0000_0000),
        Access::READ,
    );
    assert!(matches!(r, Err(WalkFault::NonCanonical { .. })));
    assert_eq!(r.unwrap_err().vector(), Some(13));
    let cpu = CpuState::new(PagingMode::FiveLevel, table(&pm));
    assert!(matches!(
        translate(
            &pm,
            &cpu,
            VirtAddr::new(0x0000_8000_0000_0000),
            Access::READ
        ),
        Err(WalkFault::PageFault { .. })
    ));
    assert!(matches!(
        translate(
            &pm,
            &cpu,
            VirtAddr::new(0x0100_0000_0000_0000),
            Access::READ
        ),
        Err(WalkFault::NonCanonical { .. })
    ));
}

#[test]
fn dangling_and_outside_ram() {
    for mode in PagingMode::ALL {
        let pm = mem();
        let root = table(&pm);
        let va = VirtAddr::new(0x40_0000);
        map(
            &pm,
            mode,
            root,
            va,
            PhysAddr::new(0x9000),
            PageSize::Size4K,
            EntryFlags::RW,
            Owner::UserTable,
        )
        .unwrap();
        let cpu = CpuState::new(mode, root);
        assert!(translate(&pm, &cpu, va, Access::READ).is_ok());
        let (pte_pa, level, _) = lookup(&pm, mode, root, va).unwrap();
        assert_eq!(level, Level::Pte);
        pm.free_frame(pte_pa.frame()).unwrap();
        match translate(&pm, &cpu, va, Access::READ) {
            Err(WalkFault::Dangling {
                level,
                table,
                entry_pa,
            }) => {
                assert_eq!(level, Level::Pte);
                assert_eq!(table, pte_pa.frame());
                assert_eq!(entry_pa, pte_pa);
            }
            r => panic!("{mode}: expected dangling, got {r:?}"),
        }
        // A freed pgd is dangling at the pgd level.
        let root2 = table(&pm);
        pm.free_frame(root2.frame()).unwrap();
        assert!(matches!(
            translate(&pm, &cpu.with_cr3(root2), va, Access::READ),
            Err(WalkFault::Dangling {
                level: Level::Pgd,
                ..
            })
        ));
    }
    // A table outside RAM is BadPhys; a leaf outside RAM is fine.
    let pm = mem();
    let mode = PagingMode::FourLevel;
    let cpu = chain(&pm, mode, 0x40_0000, Level::Pmd, 0x1_0000_0000 | P);
    assert!(matches!(
        translate(&pm, &cpu, VirtAddr::new(0x40_0000), Access::READ),
        Err(WalkFault::BadPhys {
            level: Level::Pte,
            ..
        })
    ));
    let cpu = chain(&pm, mode, 0x40_0000, Level::Pte, 0x1_0000_0000 | P);
    assert_eq!(
        translate(&pm, &cpu, VirtAddr::new(0x40_0000), Access::READ)
            .unwrap()
            .pa,
        PhysAddr::new(0x1_0000_0000)
    );
}

fn check_generated(mode: PagingMode, seed: u64, n: usize) -> Result<(), TestCaseError> {
    let pm = SimMemory::new(32 << 20).unwrap();
    let mut cfg = GenConfig::new(mode, seed);
    cfg.mappings = n;
    let g = generate(&pm, &cfg).unwrap();
    prop_assert!(!g.mappings.is_empty());
    for p in g.probes(seed ^ 0x55, 16) {
        let got = translate(&pm, &g.cpu, p.va, p.access);
        match (p.expect, got) {
            (Expect::Ok(pa), Ok(t)) => prop_assert_eq!(pa, t.pa, "{:?}", p),
            (Expect::Fault(code), Err(WalkFault::PageFault { code: c, .. })) => {
                prop_assert_eq!(code, c, "{:?}", p)
            }
            (e, g) => prop_assert!(false, "{:?}: expected {:?}, got {:?}", p, e, g),
        }
    }
    // Also with WP off and SMEP/SMAP on.
    let mut cpu = g.cpu;
    cpu.wp = false;
    cpu.smep = true;
    cpu.smap = true;
    for m in &g.mappings {
        for access in Access::ALL {
            let got = translate(&pm, &cpu, m.va, access);
            match (g.expect_with(&cpu, m.va, access), got) {
                (Expect::Ok(pa), Ok(t)) => {
                    prop_assert_eq!(pa, t.pa);
                    prop_assert_eq!(t.size, m.size);
                }
                (Expect::Fault(code), Err(WalkFault::PageFault { code: c, .. })) => {
                    prop_assert_eq!(code, c)
                }
                (e, g) => {
                    prop_assert!(false, "{:?} {:?}: expected {:?}, got {:?}", m, access, e, g)
                }
            }
        }
    }
    // Freeing any table reached by a mapping makes it dangling.
    if let Some(m) = g.mappings.iter().find(|m| m.size == PageSize::Size4K) {
        let (pte_pa, _, _) = lookup(&pm, mode, g.root, m.va).unwrap();
        pm.free_frame(pte_pa.frame()).unwrap();
        let r = translate(&pm, &g.cpu, m.va, Access::READ);
        prop_assert!(
            matches!(
                r,
                Err(WalkFault::Dangling {
                    level: Level::Pte,
                    ..
                })
            ),
            "{:?}",
            r
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn generated_tables_translate_as_mapped(mode_i in 0usize..4, seed in any::<u64>(), n in 1usize..48) {
        check_generated(PagingMode::ALL[mode_i], seed, n)?;
    }
}
