//! Skipping an oracle test where the oracle cannot run, except under CI.
//!
//! The README claims that a real MMU referees the software walker. On a
//! developer's machine without QEMU the oracle tests print `SKIP:` and
//! pass; under CI (the `CI` environment variable set, as every CI service
//! and `.ci/run`'s caller set it) a missing QEMU fails the test instead, so
//! a green run always means the oracle ran. KVM is different: `/dev/kvm`
//! may legitimately be absent or restricted on a CI host, so KVM tests may
//! still skip there ([`skip`]).

/// True when running under CI: `CI` is set to anything but `""`, `0` or
/// `false`.
pub fn in_ci() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "0" && v != "false")
}

/// QEMU is not runnable: prints `SKIP: {why}` and returns, or, under CI,
/// panics (the test fails).
pub fn qemu_missing(why: impl std::fmt::Display) {
    if in_ci() {
        panic!("QEMU is required under CI (CI is set): {why}");
    }
    eprintln!("SKIP: {why}");
}

/// The QEMU oracle if QEMU runs here; otherwise [`qemu_missing`] (a
/// `SKIP:` line with the package to install, or a failed test under CI)
/// and `None`.
pub fn qemu_or_skip() -> Option<crate::qemu::QemuOracle> {
    let q = crate::qemu::QemuOracle::new();
    if q.available() {
        return Some(q);
    }
    qemu_missing(format_args!(
        "{} not runnable; apt-get install -y --no-install-recommends qemu-system-x86",
        q.config().binary.display()
    ));
    None
}

/// A test that may skip anywhere, CI included (KVM unavailable): prints
/// `SKIP: {why}`.
pub fn skip(why: impl std::fmt::Display) {
    eprintln!("SKIP: {why}");
}
