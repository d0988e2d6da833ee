//! QEMU debug-walk checks (`gva2gpa`, `info tlb`) on the hand-built samples,
//! one test per paging mode. Skipped (with a message) when QEMU is missing.

use std::time::Instant;

use oracle::qemu::QemuOracle;
use oracle::samples::sample;
use oracle::{MmuOracle, PagingImage, PagingMode};

fn qemu() -> Option<QemuOracle> {
    oracle::ci::qemu_or_skip()
}

fn check_mode(mode: PagingMode) {
    let Some(mut q) = qemu() else { return };
    let s = sample(mode);
    // Round-trip through the on-disk format on the way.
    let dir = std::env::temp_dir().join(format!("oracle-walk-{}-{}", mode, std::process::id()));
    s.image.save(&dir).unwrap();
    let img = PagingImage::load(&dir).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(img.desc, s.image.normalized_desc());
    assert!(
        img.data == s.image.data,
        "{mode}: image bytes differ after save/load"
    );

    let t0 = Instant::now();
    q.load(&img).unwrap();
    let t_load = t0.elapsed();
    let t1 = Instant::now();
    for &(va, want) in &s.expect {
        let got = q.translate(va).unwrap();
        assert_eq!(got, want, "{mode}: gva2gpa {va:#x}");
    }
    let t_tr = t1.elapsed();
    let t2 = Instant::now();
    let maps = q.mappings().unwrap();
    let t_map = t2.elapsed();
    let got: Vec<(u64, u64, u64)> = maps.iter().map(|m| (m.va, m.pa, m.size)).collect();
    assert_eq!(got, s.mappings, "{mode}: info tlb");
    eprintln!(
        "{mode}: load {t_load:?}, {} translations {t_tr:?}, info tlb {t_map:?}",
        s.expect.len()
    );
}

#[test]
fn two_level_walk() {
    check_mode(PagingMode::TwoLevel);
}

#[test]
fn pae_walk() {
    check_mode(PagingMode::Pae);
}

#[test]
fn four_level_walk() {
    check_mode(PagingMode::FourLevel);
}

#[test]
fn five_level_walk() {
    check_mode(PagingMode::FiveLevel);
}

#[test]
fn missing_qemu_is_reported_not_hung() {
    let cfg = oracle::qemu::QemuConfig {
        binary: "/nonexistent/qemu-system-x86_64".into(),
        ..Default::default()
    };
    let mut q = QemuOracle::with_config(cfg);
    assert!(!q.supports(PagingMode::FourLevel).is_yes());
    let s = sample(PagingMode::FourLevel);
    assert!(matches!(
        q.load(&s.image),
        Err(oracle::OracleError::QemuNotFound(_))
    ));
    assert!(matches!(
        q.translate(0),
        Err(oracle::OracleError::NotLoaded)
    ));

    // A "QEMU" that exits at once: a start-up error, not a hang.
    let cfg = oracle::qemu::QemuConfig {
        binary: "/bin/false".into(),
        timeout: std::time::Duration::from_secs(2),
        ..Default::default()
    };
    let t0 = Instant::now();
    let r = QemuOracle::with_config(cfg).load(&s.image);
    assert!(
        matches!(
            r,
            Err(oracle::OracleError::Spawn(_))
                | Err(oracle::OracleError::Timeout(_))
                | Err(oracle::OracleError::Unresponsive(_))
        ),
        "{r:?}"
    );
    assert!(t0.elapsed() < std::time::Duration::from_secs(10));
}

/// A second root in the same memory: loading the image again with only CR3
/// changed (which reuses the running QEMU) walks the other table, and
/// switching back walks the first one again. The second root is a copy of
/// the first with one top-level entry cleared.
#[test]
fn switching_roots_by_cr3() {
    let Some(mut q) = qemu() else { return };
    for mode in PagingMode::ALL {
        let s = sample(mode);
        let mut img = s.image.clone();
        let (top, bytes, shift, mask) = match mode {
            PagingMode::TwoLevel => (img.desc.cr3 & !0xfff, 4096, 22, 0x3ff),
            PagingMode::Pae => (img.desc.cr3 & !0x1f, 32, 30, 3),
            PagingMode::FourLevel => (img.desc.cr3 & !0xfff, 4096, 39, 0x1ff),
            PagingMode::FiveLevel => (img.desc.cr3 & !0xfff, 4096, 48, 0x1ff),
        };
        // A free frame below 4 GiB (PAE's CR3 is 32 bits).
        let other = (0x20u64..)
            .map(|pfn| pfn << 12)
            .find(|&f| {
                img.data
                    .iter()
                    .all(|(g, b)| f + 4096 <= *g || g + b.len() as u64 <= f)
            })
            .unwrap();
        let (va, _) = *s.expect.iter().find(|(_, pa)| pa.is_some()).unwrap();
        let cleared = (va >> shift) & mask;
        let mut copy = vec![0u8; 4096];
        for i in 0..bytes / 8 {
            let e = img.read_phys(top + i * 8, 8).unwrap();
            copy[i as usize * 8..][..8].copy_from_slice(&e.to_le_bytes());
        }
        let es = mode.entry_size();
        copy[(cleared * es) as usize..][..es as usize].fill(0);
        img.data.push((other, copy));
        let flags = img.desc.cr3 & 0x18;
        let want_b: Vec<(u64, Option<u64>)> = s
            .expect
            .iter()
            .map(|&(v, pa)| (v, pa.filter(|_| (v >> shift) & mask != cleared)))
            .collect();
        let t0 = Instant::now();
        for (cr3, want) in [
            (img.desc.cr3, &s.expect),
            (other | flags, &want_b),
            (img.desc.cr3, &s.expect),
        ] {
            q.load(&img.with_cr3(cr3)).unwrap();
            for &(v, pa) in want {
                assert_eq!(q.translate(v).unwrap(), pa, "{mode} cr3 {cr3:#x}: {v:#x}");
            }
        }
        eprintln!("{mode}: three roots walked in {:?}", t0.elapsed());
    }
}
