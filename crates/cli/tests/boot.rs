//! `pgdcache boot`: the pgd system as the memory manager of a real kernel
//! under QEMU (TCG), in all four paging modes.
//!
//! Needs `qemu-system-x86_64` and the targets `i686-unknown-linux-gnu` and
//! `x86_64-unknown-none` (`.ci/run` installs all three). Where they are
//! missing the tests print `SKIP:`; under `CI` they fail instead.

use std::process::{Command, Output};

use serde_json::Value;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_pgdcache"))
}

/// QEMU present, or SKIP (a failure under CI).
fn qemu_or_skip(test: &str) -> bool {
    let ok = Command::new("qemu-system-x86_64")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "{test}: qemu-system-x86_64 is missing under CI (.ci/run installs it)"
        );
        eprintln!(
            "SKIP: {test}: qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)"
        );
    }
    ok
}

fn boot(args: &[&str]) -> Output {
    bin().arg("boot").args(args).output().expect("run pgdcache")
}

/// True (after a `SKIP:` line) when `boot` exited 3, its environment
/// missing (QEMU, a bare-metal target); a failure under CI.
fn environment_missing(test: &str, out: &Output) -> bool {
    if out.status.code() != Some(3) {
        return false;
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        std::env::var_os("CI").is_none(),
        "{test}: environment missing under CI: {stderr}"
    );
    eprintln!("SKIP: {test}: {stderr}");
    true
}

/// One row per paging mode, in order.
fn assert_every_mode(rows: &[Value]) {
    let modes: Vec<&str> = rows
        .iter()
        .map(|r| r["mode"].as_str().unwrap_or("?"))
        .collect();
    assert_eq!(modes, ["2level", "pae", "4level", "5level"]);
}

/// Runs `boot --json` and returns one object per run; a missing target is
/// a SKIP outside CI.
fn boot_json(test: &str, args: &[&str]) -> Option<Vec<Value>> {
    let out = boot(&[args, &["--json"]].concat());
    if environment_missing(test, &out) {
        return None;
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{test}: {stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let rows: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{test}: bad JSON {l}: {e}")))
        .collect();
    let all_ok = rows.iter().all(|r| r["ok"] == Value::Bool(true));
    assert_eq!(
        out.status.code(),
        Some(if all_ok { 0 } else { 1 }),
        "{test}: exit code vs rows\n{stdout}\n{stderr}"
    );
    Some(rows)
}

#[test]
fn every_mode_boots_and_the_seed_scheme_is_correct_on_the_real_mmu() {
    let test = "every_mode_boots";
    if !qemu_or_skip(test) {
        return;
    }
    let Some(rows) = boot_json(
        test,
        &[
            "--mode",
            "all",
            "--scheme",
            "slab-pgd-list",
            "--tasks",
            "1000",
        ],
    ) else {
        return;
    };
    assert_every_mode(&rows);
    for r in &rows {
        assert_eq!(r["verdict"], "correct", "{r}");
        assert_eq!(r["violations"], 0, "{r}");
        assert_eq!(r["leaked_frames"], 0, "{r}");
        assert_eq!(r["accel"], "tcg", "{r}");
        assert_eq!(r["cpus"], 1, "{r}");
        assert_eq!(r["ok"], true, "{r}");
        assert!(r["tasks"].as_u64().unwrap_or(0) >= 1000, "{r}");
        // The run really exercised the real MMU: context switches, faults
        // the probes expected (copy-on-write, read-only page B), conversions
        // with real TLB flushes, canaries read.
        for k in [
            "context_switches",
            "cow_faults",
            "ro_faults",
            "conversions",
            "tlb_flushes",
            "canary_reads",
        ] {
            assert!(r[k].as_u64().unwrap_or(0) > 0, "{k} is 0: {r}");
        }
        assert_eq!(r["agree"], true, "{r}");
        // The one CPU ran every exec, fork and exit on its pgd token.
        assert_eq!(r["pgd_path"], "token", "{r}");
        assert_eq!(r["token"]["cpus"], 1, "{r}");
        assert_eq!(
            r["token"]["ops"].as_u64(),
            r["tasks"].as_u64().map(|t| 2 * t),
            "{r}"
        );
    }
    // On 2-level, vmalloc tables attached after a pgd was built reach it
    // through the real #PF handler's vmalloc_fault.
    assert!(
        rows[0]["vmalloc_faults"].as_u64().unwrap_or(0) > 0,
        "{}",
        rows[0]
    );
}

#[test]
fn the_real_mmu_catches_the_unsynced_slabification_on_2level_only() {
    let test = "unsynced";
    if !qemu_or_skip(test) {
        return;
    }
    let Some(rows) = boot_json(
        test,
        &[
            "--mode",
            "2level",
            "--scheme",
            "slab-unsynced",
            "--tasks",
            "600",
        ],
    ) else {
        return;
    };
    let r = &rows[0];
    assert!(
        r["verdict"].as_str().unwrap_or("").starts_with("caught"),
        "{r}"
    );
    assert!(r["hw_violations"].as_u64().unwrap_or(0) > 0, "{r}");
    assert!(r["sw_violations"].as_u64().unwrap_or(0) > 0, "{r}");
    // The hardware saw both faces of the bug: a store allowed through a
    // stale large-page entry, and canaries read through a dangling pte page.
    assert!(r["hw"]["ro_not_enforced"].as_u64().unwrap_or(0) > 0, "{r}");
    assert!(
        r["hw"]["wrong_canary"].as_u64().unwrap_or(0) + r["hw"]["missing"].as_u64().unwrap_or(0)
            > 0,
        "{r}"
    );
    assert_eq!(r["agree"], true, "{r}");
    assert_eq!(r["leaked_frames"], 0, "{r}");
    assert_eq!(r["ok"], true, "{r}");
    // PAE shares the kernel pmd: immune.
    let Some(rows) = boot_json(
        test,
        &[
            "--mode",
            "pae",
            "--scheme",
            "slab-unsynced",
            "--tasks",
            "300",
        ],
    ) else {
        return;
    };
    assert_eq!(rows[0]["verdict"], "correct", "{}", rows[0]);
}

#[test]
fn impossible_pairs_and_bad_numbers_are_bad_input() {
    for args in [
        &["--mode", "2level", "--scheme", "shared-kernel"][..],
        &["--mode", "4level", "--scheme", "slab-prepopulated"],
        &["--mode", "3level"],
        &["--scheme", "slab"],
        &["--tasks", "0"],
        &["--timeout", "0"],
        &["--accel", "hvf"],
    ] {
        let out = boot(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}

#[test]
fn missing_qemu_is_an_environment_error_with_the_fix() {
    let out = bin()
        .args(["boot", "--mode", "2level", "--scheme", "uncached"])
        .env("PGDCACHE_QEMU", "/nonexistent/qemu-system-x86_64")
        .output()
        .expect("run pgdcache");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("apt-get install qemu-system-x86"), "{err}");
}

/// A stand-in "QEMU" that behaves as a broken emulator would: the verdict
/// must come from the kernel, never from the emulator's exit status.
fn fake_qemu(name: &str, script: &str) -> std::path::PathBuf {
    let dir =
        std::env::temp_dir().join(format!("pgdcache-fake-qemu-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("qemu");
    std::fs::write(
        &path,
        format!("#!/bin/sh\nif [ \"$1\" = --version ]; then exit 0; fi\n{script}\n"),
    )
    .expect("write fake qemu");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path
}

#[test]
fn an_emulator_exit_status_is_never_a_pass() {
    if !qemu_or_skip("exit_status") {
        return; // the kernel build is what needs the targets; keep the same gate
    }
    let cases = [
        ("silent", "exit 0", "without the kernel's verdict"),
        (
            "forged",
            "echo '@@ {\"event\":\"result\",\"verdict\":\"correct\"}'; exit 0",
            "without the kernel's verdict",
        ),
        (
            "panic",
            "echo '@@ {\"event\":\"fatal\",\"what\":\"#GP general protection\"}'; exit 0",
            "#GP",
        ),
    ];
    for (name, script, needle) in cases {
        let q = fake_qemu(name, script);
        let out = bin()
            .args([
                "boot",
                "--mode",
                "2level",
                "--scheme",
                "uncached",
                "--timeout",
                "20",
            ])
            .env("PGDCACHE_QEMU", &q)
            .output()
            .expect("run pgdcache");
        if environment_missing("exit_status", &out) {
            return;
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{name}: {text}{err}");
        assert!(text.contains(needle), "{name}: {text}");
    }
}

#[test]
fn a_hung_emulator_is_killed_at_the_timeout() {
    if !qemu_or_skip("timeout") {
        return;
    }
    let marker = format!("sleep 300.{}", std::process::id());
    let q = fake_qemu("hang", &format!("exec {marker}"));
    let t = std::time::Instant::now();
    let out = bin()
        .args([
            "boot",
            "--mode",
            "2level",
            "--scheme",
            "uncached",
            "--timeout",
            "2",
        ])
        .env("PGDCACHE_QEMU", &q)
        .output()
        .expect("run pgdcache");
    if environment_missing("timeout", &out) {
        return;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("no verdict within 2 s"), "{text}");
    // The budget covers a cold kernel build on a loaded CI machine.
    assert!(t.elapsed().as_secs() < 600, "took {:?}", t.elapsed());
    // Nothing it started outlives it.
    let ps = Command::new("pgrep").args(["-f", &marker]).output();
    if let Ok(ps) = ps {
        assert!(
            ps.stdout.is_empty(),
            "left behind: {}",
            String::from_utf8_lossy(&ps.stdout)
        );
    }
}

#[test]
fn a_killed_pgdcache_takes_its_emulator_with_it() {
    if !qemu_or_skip("killed") {
        return;
    }
    let marker = format!("sleep 301.{}", std::process::id());
    let q = fake_qemu("killed", &format!("exec {marker}"));
    let mut child = bin()
        .args([
            "boot",
            "--mode",
            "2level",
            "--scheme",
            "uncached",
            "--timeout",
            "100",
        ])
        .env("PGDCACHE_QEMU", &q)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("run pgdcache");
    // Wait until the stand-in emulator runs (the kernel build comes first).
    let running = || {
        Command::new("pgrep")
            .args(["-f", &marker])
            .output()
            .is_ok_and(|o| !o.stdout.is_empty())
    };
    let t = std::time::Instant::now();
    while !running() && t.elapsed().as_secs() < 600 {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(running(), "the stand-in emulator never started");
    child.kill().expect("kill pgdcache");
    let _ = child.wait();
    let t = std::time::Instant::now();
    while running() && t.elapsed().as_secs() < 10 {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(!running(), "the emulator outlived a killed pgdcache");
}

#[test]
fn a_real_kernel_exception_is_reported_as_a_crash_never_a_pass() {
    if !qemu_or_skip("exception") {
        return;
    }
    for (fault, mode, needle) in [
        ("pf", "2level", "#PF page fault"),
        ("gp", "pae", "#GP general protection"),
        ("ud", "4level", "#UD invalid opcode"),
    ] {
        let out = boot(&[
            "--mode",
            mode,
            "--scheme",
            "slab-pgd-list",
            "--kernel-arg",
            &format!("fault={fault}"),
        ]);
        if environment_missing("exception", &out) {
            return;
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{fault}: {text}{err}");
        assert!(
            text.contains("CRASHED") && text.contains(needle),
            "{fault}: {text}"
        );
    }
    // A word the kernel does not know is bad input, reported by the kernel.
    let out = boot(&[
        "--mode",
        "2level",
        "--scheme",
        "uncached",
        "--kernel-arg",
        "colour=blue",
    ]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn two_cpus_shoot_down_tlbs_with_real_ipis() {
    let test = "smp";
    if !qemu_or_skip(test) {
        return;
    }
    let Some(rows) = boot_json(
        test,
        &[
            "--cpus",
            "2",
            "--mode",
            "2level",
            "--scheme",
            "slab-pgd-list",
            "--tasks",
            "800",
        ],
    ) else {
        return;
    };
    let Some(more) = boot_json(
        test,
        &[
            "--cpus",
            "2",
            "--mode",
            "4level",
            "--scheme",
            "slab-ticket",
            "--tasks",
            "800",
        ],
    ) else {
        return;
    };
    for r in rows.iter().chain(&more) {
        assert_eq!(r["cpus"], 2, "{r}");
        assert_eq!(r["verdict"], "correct", "{r}");
        assert_eq!(r["ok"], true, "{r}");
        let flushes = r["tlb_flushes"].as_u64().unwrap_or(0);
        assert!(flushes > 0, "{r}");
        // Every global_flush_tlb sent one IPI to the other CPU, which
        // acknowledged it.
        assert_eq!(r["ipis"].as_u64(), Some(flushes), "{r}");
        assert_eq!(r["ipi_acks"].as_u64(), Some(flushes), "{r}");
        assert_eq!(r["shootdown_checks"], 1, "{r}");
        assert_eq!(r["token"]["cpus"], 2, "{r}");
        assert_eq!(r["token"]["released"], 1, "{r}");
    }
    // The unsynced slabification is caught with tasks on the other CPU too.
    let Some(bug) = boot_json(
        test,
        &[
            "--cpus",
            "2",
            "--mode",
            "2level",
            "--scheme",
            "slab-unsynced",
            "--tasks",
            "600",
        ],
    ) else {
        return;
    };
    assert!(
        bug[0]["verdict"]
            .as_str()
            .unwrap_or("")
            .starts_with("caught"),
        "{}",
        bug[0]
    );
    assert_eq!(bug[0]["ok"], true, "{}", bug[0]);
}

#[test]
fn a_shootdown_without_ipis_is_caught_by_the_hardware() {
    let test = "noipi";
    if !qemu_or_skip(test) {
        return;
    }
    let Some(rows) = boot_json(
        test,
        &[
            "--cpus",
            "2",
            "--mode",
            "pae",
            "--scheme",
            "slab-pgd-list",
            "--tasks",
            "300",
            "--kernel-arg",
            "noipi=1",
        ],
    ) else {
        return;
    };
    let r = &rows[0];
    assert_eq!(r["ipis"], 0, "{r}");
    assert_eq!(
        r["hw"]["stale_tlb"], 1,
        "the deterministic shootdown check must see it: {r}"
    );
    assert!(
        r["verdict"].as_str().unwrap_or("").contains("stale-tlb"),
        "{r}"
    );
    assert_eq!(r["ok"], false, "{r}");
}

/// Every CPU of the booted kernel (the BSP and the AP) claims its own
/// per-CPU token of the pgd system (`Kernel::claim_cpu`) and runs every
/// exec, fork and exit through it; remote cache operations (the checker's
/// walk, `slab_stats`) are served by the token holders in their wait loops,
/// and the AP gives its token back before it halts. The kernel proves it:
/// while the AP runs, the BSP's claim of the AP's slot is refused (the AP
/// holds it); after the end-of-run rendezvous the claim succeeds. A kernel
/// whose CPUs use the per-call path fails here (ops, held), and one whose
/// wait loops do not serve never reaches a verdict (the checker runs while
/// the AP holds its token).
#[test]
fn every_cpu_runs_on_its_own_pgd_token_in_every_mode() {
    let test = "token";
    if !qemu_or_skip(test) {
        return;
    }
    let Some(rows) = boot_json(
        test,
        &[
            "--cpus",
            "2",
            "--mode",
            "all",
            "--scheme",
            "slab-pgd-list",
            "--tasks",
            "300",
            "--timeout",
            "300",
        ],
    ) else {
        return;
    };
    assert_every_mode(&rows);
    for r in &rows {
        // The kernel's own verdict, never QEMU's exit status.
        assert_eq!(r["verdict"], "correct", "{r}");
        assert_eq!(r["ok"], true, "{r}");
        assert_eq!(r["cpus"], 2, "{r}");
        assert_eq!(r["leaked_frames"], 0, "{r}");
        assert_eq!(r["pgd_path"], "token", "{r}");
        let t = &r["token"];
        let n = |k: &str| t[k].as_u64().unwrap_or(0);
        assert_eq!(n("cpus"), 2, "both CPUs claimed their token: {r}");
        assert_eq!(
            Some(n("ops")),
            r["tasks"].as_u64().map(|t| 2 * t),
            "every exec/fork and every exit ran on a token: {r}"
        );
        assert!(n("held_probes") > 0, "{r}");
        assert_eq!(n("held"), n("held_probes"), "the AP held its slot: {r}");
        assert_eq!(n("released"), 1, "the AP gave its token back: {r}");
        // slab_stats during the storm and the checker after it, served by
        // the AP while it held its token.
        assert!(n("remote_ops") >= 2, "{r}");
        assert!(n("serves") > 0, "{r}");
        assert!(r["sw"]["checks"].as_u64().unwrap_or(0) >= 4, "{r}");
    }
}

/// KVM where the machine offers it: the CPU walks the page tables in
/// hardware. Where `/dev/kvm` is missing this skips with a message (also
/// under CI); where it exists, a KVM that cannot even run long mode is
/// broken, and under CI that fails. (This host's restricted KVM runs only
/// long mode, and slowly: a few tasks.)
#[test]
fn kvm_boots_where_the_host_offers_it() {
    let test = "kvm";
    if !qemu_or_skip(test) {
        return;
    }
    let usable = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok();
    if !usable {
        eprintln!("SKIP: {test}: /dev/kvm is missing or not accessible");
        return;
    }
    let Some(rows) = boot_json(
        test,
        &[
            "--accel",
            "auto",
            "--mode",
            "4level",
            "--scheme",
            "slab-pgd-list",
            "--tasks",
            "3",
            "--timeout",
            "600",
        ],
    ) else {
        return;
    };
    let r = &rows[0];
    if r["accel"] != "kvm" {
        assert!(
            std::env::var_os("CI").is_none(),
            "/dev/kvm is present but KVM could not run 4-level paging: {r}"
        );
        eprintln!("SKIP: {test}: this host's KVM cannot run 4-level paging");
        return;
    }
    assert_eq!(r["verdict"], "correct", "{r}");
    assert_eq!(r["ok"], true, "{r}");
}

/// `boot --bench` on 2-level: every series of the in-kernel benchmark
/// comes back from the booted kernel, on the token path with poisoning off
/// (and back on for the kernel's checked run after it, which is correct),
/// with its cached pgd pair faster than `uncached` — the run a kernel developer reads
/// numbers from must not die on the kernel's own heap (10 000 held pgds).
#[test]
fn the_in_kernel_bench_runs_every_series_on_2level() {
    let test = "bench";
    if !qemu_or_skip(test) {
        return;
    }
    let out = boot(&["--bench", "--mode", "2level", "--accel", "tcg", "--json"]);
    if environment_missing(test, &out) {
        return;
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("no bench event"), "{test}: {stderr}");
    let v: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{test}: bad JSON: {e}\n{stderr}"));
    let bench = &v["runs"][0]["bench"];
    assert_eq!(bench["mode"], "2level", "{test}: {v}");
    assert_eq!(bench["pgd_path"], "token", "{test}");
    // Measured in the production configuration, poisoning off; the same
    // kernel's checked run afterwards has it back on, and is correct.
    assert_eq!(bench["poisoning"], false, "{test}: {v}");
    let checked = &v["runs"][0]["checked_run"];
    assert_eq!(checked["verdict"], "correct", "{test}: {v}");
    assert_eq!(checked["poisoning"], true, "{test}: {v}");
    // The TSC's own cost is measured and reported (the cold pairs are
    // timed one by one less it), and every series says how many operations
    // a round ran: under TCG every series fits its budget at full count.
    assert!(bench["tsc_overhead_ns"].is_u64(), "{test}: {v}");
    // And how fast the guest's own code ran (a register loop's step).
    let step = bench["loop_ns"].as_f64();
    assert!(step.is_some_and(|ns| ns > 0.0), "{test}: {v}");
    for (series, nominal) in [
        ("pair_warm", 256),
        ("pair_cold", 16),
        ("fork_small", 32),
        ("fork_large", 2),
    ] {
        let n = bench["series"][series]["ops_per_round"].as_u64();
        assert_eq!(n, Some(nominal), "{test}: {series}: {v}");
    }
    for series in ["pair_warm", "pair_cold", "fork_small", "fork_large"] {
        for scheme in ["uncached", "slab-pgd-list", "slab-ticket"] {
            let ns = bench["series"][series][scheme]["ns"].as_f64();
            assert!(ns.is_some_and(|ns| ns > 0.0), "{test}: {series} {scheme}");
        }
    }
    for scheme in ["slab-pgd-list", "slab-ticket"] {
        let cpa = bench["cpa_10k"][scheme]["ns"].as_f64();
        assert!(cpa.is_some_and(|ns| ns > 0.0), "{test}: cpa_10k {scheme}");
        let warm = bench["series"]["pair_warm"][scheme]["vs_uncached"]["median"].as_f64();
        assert!(warm.is_some_and(|r| r > 1.0), "{test}: {scheme} {warm:?}");
    }
    assert_eq!(out.status.code(), Some(0), "{test}: {stderr}");
}

/// `boot --bench` sizes each series to its time budget: with a tiny one
/// (`--kernel-arg bench_budget_ms=50`) the cold pairs and the 16 MiB forks
/// run fewer operations per round than nominal (16 and 2) — each round
/// still measures every scheme — and the bench completes, where a slow
/// accelerator used to be killed in its second series. A budget the kernel
/// cannot take is bad input (exit 2), refused by the kernel itself.
#[test]
fn the_in_kernel_bench_fits_its_series_to_their_budget() {
    let test = "bench budget";
    if !qemu_or_skip(test) {
        return;
    }
    let args = ["--bench", "--mode", "2level", "--accel", "tcg", "--json"];
    let out = boot(&[&args[..], &["--kernel-arg", "bench_budget_ms=50"]].concat());
    if environment_missing(test, &out) {
        return;
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let v: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{test}: bad JSON: {e}\n{stderr}"));
    let bench = &v["runs"][0]["bench"];
    assert_eq!(bench["event"], "bench", "{test}: {v}");
    assert_eq!(bench["series_budget_ms"], 50, "{test}: {v}");
    assert!(bench["incomplete"].is_null(), "{test}: {v}");
    let n = |s: &str| bench["series"][s]["ops_per_round"].as_u64();
    assert!(
        n("pair_cold").is_some_and(|n| (1..16).contains(&n)),
        "{test}: {v}"
    );
    assert_eq!(n("fork_large"), Some(1), "{test}: {v}");
    for series in ["pair_warm", "pair_cold", "fork_small", "fork_large"] {
        let ns = bench["series"][series]["slab-pgd-list"]["ns"].as_f64();
        assert!(ns.is_some_and(|ns| ns > 0.0), "{test}: {series}: {v}");
    }
    assert_eq!(
        v["runs"][0]["checked_run"]["verdict"], "correct",
        "{test}: {v}"
    );
    assert_eq!(out.status.code(), Some(0), "{test}: {stderr}");

    let out = boot(&[&args[..], &["--kernel-arg", "bench_budget_ms=0"]].concat());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{test}: {stderr}");
    assert!(
        stderr.contains("refused its command line") && stderr.contains("bench_budget_ms=0"),
        "{test}: {stderr}"
    );
}
