//! KVM backend checks. Every test prints `SKIP:` and returns when /dev/kvm
//! is missing or KVM cannot run the mode (PVM runs only long mode).

use std::time::Instant;

use oracle::kvm::KvmOracle;
use oracle::samples::sample;
use oracle::{pf, Access, MmuOracle, PagingMode, ProbeOutcome, Support};

fn kvm_for(mode: PagingMode) -> Option<KvmOracle> {
    let mut k = KvmOracle::new();
    match k.supports(mode) {
        Support::Yes => Some(k),
        Support::No(why) => {
            eprintln!("SKIP: KVM cannot check {mode} here: {why}");
            None
        }
    }
}

#[test]
fn support_is_detected_not_assumed() {
    let mut k = KvmOracle::new();
    for mode in PagingMode::ALL {
        eprintln!("kvm {mode}: {:?}", k.supports(mode));
    }
    eprintln!("kvm 1 GiB pages: {}", k.has_1g_pages());
}

fn translate_mode(mode: PagingMode) {
    let Some(mut k) = kvm_for(mode) else { return };
    let s = sample(mode);
    let t0 = Instant::now();
    k.load(&s.image).unwrap();
    let t_load = t0.elapsed();
    let one_g = k.has_1g_pages();
    let t1 = Instant::now();
    for &(va, want) in &s.expect {
        let in_1g = s
            .mappings
            .iter()
            .any(|&(mva, _, size)| size == 1 << 30 && va.wrapping_sub(mva) < size);
        let got = k.translate(va).unwrap();
        if in_1g && !one_g {
            assert_eq!(
                got, None,
                "{mode}: {va:#x} is in a 1 GiB page KVM cannot map"
            );
        } else {
            assert_eq!(got, want, "{mode}: KVM_TRANSLATE {va:#x}");
        }
    }
    eprintln!(
        "kvm {mode}: load {t_load:?}, {} translations {:?}",
        s.expect.len(),
        t1.elapsed()
    );
}

#[test]
fn kvm_translate_all_modes() {
    for mode in PagingMode::ALL {
        translate_mode(mode);
    }
}

#[test]
fn kvm_probes_long_mode() {
    for mode in [PagingMode::FourLevel, PagingMode::FiveLevel] {
        let Some(mut k) = kvm_for(mode) else { continue };
        let s = sample(mode);
        k.load(&s.image).unwrap();
        let pfa = |va: u64, e: u64| ProbeOutcome::PageFault {
            cr2: va,
            error_code: e,
        };
        let cases = [
            (Access::write(s.rw_page + 8, 0x55), ProbeOutcome::Ok(0)),
            (Access::read(s.rw_page + 8), ProbeOutcome::Ok(0x55)),
            (Access::write(s.ro_page, 1), pfa(s.ro_page, pf::P | pf::W)),
            (Access::read(0x5000), pfa(0x5000, 0)),
            (Access::read(s.nx_page.unwrap() + 0x40), ProbeOutcome::Ok(0)),
            (
                Access::exec(s.nx_page.unwrap()),
                pfa(s.nx_page.unwrap(), pf::P | pf::ID),
            ),
            (
                Access::read(s.rsvd_page),
                pfa(s.rsvd_page, pf::P | pf::RSVD),
            ),
            (
                Access::read(s.rw_page).as_user(),
                pfa(s.rw_page, pf::P | pf::U),
            ),
            (Access::read(s.user_page).as_user(), ProbeOutcome::Ok(0)),
            (Access::exec(s.rw_page + 0x100), ProbeOutcome::Ok(0)),
            (
                Access::exec(s.user_page + 0x100).as_user(),
                ProbeOutcome::Ok(0),
            ),
            (
                Access::exec(s.rw_page + 0x100).as_user(),
                pfa(s.rw_page + 0x100, pf::P | pf::U | pf::ID),
            ),
        ];
        let acc: Vec<Access> = cases.iter().map(|c| c.0).collect();
        let t0 = Instant::now();
        let got = k.probe(&acc).unwrap();
        eprintln!("kvm {mode}: {} probes in {:?}", acc.len(), t0.elapsed());
        for ((a, want), got) in cases.iter().zip(&got) {
            assert_eq!(want, got, "{mode}: {a:x?}");
        }
    }
}
