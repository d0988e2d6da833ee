//! Golden files: the booted `swapper_pg_dir` of every paging mode, printed
//! as Linux's `/sys/kernel/debug/page_tables/kernel` prints it
//! (`tests/snapshots/*.snap`; review a change with `cargo insta review`
//! or rerun with `INSTA_UPDATE=always` and read the diff).
//!
//! `pgdcache dump --mode MODE --ram 64M` prints exactly these texts
//! (`crates/cli/tests/formats.rs` checks that).

use physmem::{Owner, PhysAddr, SimMemory, VirtAddr};
use x86paging::{boot, map, BootConfig, EntryFlags, PageSize, PagingMode, PtDump};

fn dump(mode: PagingMode, ram: u64, cfg: impl FnOnce(&mut BootConfig)) -> String {
    let pm = SimMemory::new(ram).unwrap();
    let mut c = BootConfig::new(mode);
    cfg(&mut c);
    let ks = boot(&pm, c).unwrap();
    let lines = ks.ptdump(&pm, ks.pgd);
    PtDump {
        mode,
        lines: &lines,
    }
    .to_string()
}

#[test]
fn swapper_2level() {
    insta::assert_snapshot!(dump(PagingMode::TwoLevel, 64 << 20, |_| {}));
}

#[test]
fn swapper_pae() {
    insta::assert_snapshot!(dump(PagingMode::Pae, 64 << 20, |_| {}));
}

#[test]
fn swapper_4level() {
    insta::assert_snapshot!(dump(PagingMode::FourLevel, 64 << 20, |_| {}));
}

#[test]
fn swapper_5level() {
    insta::assert_snapshot!(dump(PagingMode::FiveLevel, 64 << 20, |_| {}));
}

/// 2-level without CR4.PSE: the direct map is 4 KiB ptes, one run per
/// attribute change, and holes at the pte level inside the last pte table.
#[test]
fn swapper_2level_without_pse() {
    insta::assert_snapshot!(dump(PagingMode::TwoLevel, 16 << 20, |c| c.pse = false));
}

/// 4-level with 1 GiB pages: the direct map's first GiB is a `pud` leaf.
/// (2 GiB of simulated RAM: more than a 32-bit host can mmap in one piece,
/// so not on i686.)
#[test]
#[cfg(target_pointer_width = "64")]
fn swapper_4level_gbpages() {
    insta::assert_snapshot!(dump(PagingMode::FourLevel, 2 << 30, |c| c.gbpages = true));
}

/// User pages in every mode: `USR`, read-only and NX runs below the kernel
/// mapping, physically discontiguous pages merged into one run, a run
/// broken by the accessed bit, which Linux compares too.
#[test]
fn user_pages_every_mode() {
    let mut all = String::new();
    for mode in PagingMode::ALL {
        let pm = SimMemory::new(32 << 20).unwrap();
        let ks = boot(&pm, BootConfig::new(mode)).unwrap();
        let user = EntryFlags::PRESENT | EntryFlags::USER;
        let nx = if mode == PagingMode::TwoLevel {
            EntryFlags::empty()
        } else {
            EntryFlags::NX
        };
        let pages = [
            // Text: read-only, executable, physically scattered.
            (0x0804_8000, 0x0100_0000, user),
            (0x0804_9000, 0x0120_0000, user),
            (0x0804_a000, 0x0110_0000, user),
            // Data: writable, NX.
            (0x0804_b000, 0x0130_0000, user | EntryFlags::RW | nx),
            (0x0804_c000, 0x0130_1000, user | EntryFlags::RW | nx),
            // The same, accessed.
            (
                0x0804_d000,
                0x0130_2000,
                user | EntryFlags::RW | nx | EntryFlags::ACCESSED,
            ),
        ];
        for (va, pa, flags) in pages {
            map(
                &pm,
                mode,
                ks.pgd,
                VirtAddr::new(va),
                PhysAddr::new(pa),
                PageSize::Size4K,
                flags,
                Owner::UserTable,
            )
            .unwrap();
        }
        let lines = ks.ptdump(&pm, ks.pgd);
        let text = PtDump {
            mode,
            lines: &lines,
        }
        .to_string();
        let user_part: String = text
            .lines()
            .take_while(|l| !l.starts_with("---[ Kernel"))
            .map(|l| format!("{l}\n"))
            .collect();
        all.push_str(&format!("== {mode}\n{user_part}"));
    }
    insta::assert_snapshot!(all);
}
