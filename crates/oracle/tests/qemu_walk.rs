//! QEMU debug-walk checks (`gva2gpa`, `info tlb`) on the hand-built samples,
//! one test per paging mode. Skipped (with a message) when QEMU is missing.

use std::time::Instant;

use oracle::qemu::QemuOracle;
use oracle::samples::sample;
use oracle::{MmuOracle, PagingImage, PagingMode};

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
