//! `pgdcache boot`: the pgd system on a real MMU.
//!
//! Builds the bare-metal kernel (`crates/kernel`: i686 Multiboot for
//! 2-level and PAE, x86_64 PVH for 4-level and 5-level) if needed, boots it
//! under QEMU once per mode × scheme with the scheme on the kernel command
//! line, streams its serial console (JSON events on `@@ ` lines, text for
//! people), and prints the same table shape as `compare`.
//!
//! A run passes only on the kernel's own word: its `result` and `done`
//! events. QEMU's exit status proves nothing (a triple fault exits 0), and
//! a panic, fatal exception, timeout or missing verdict is a finding with
//! the last serial lines. QEMU runs under a timeout, dies with `pgdcache`
//! (parent-death signal) and is killed on every exit path.
//!
//! Exit codes: 0 every verdict as expected (correct schemes clean, the
//! bug caught where it exists); 1 a finding; 2 bad input (an impossible
//! scheme/mode pair, bad numbers); 3 the environment lacks QEMU, the
//! bare-metal target or KVM, with the command that installs it.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use clap::Args;
use pgdcache::{LockKind, Scheme};
use serde_json::Value;
use x86paging::PagingMode;

/// Arguments of `boot`.
#[derive(Args, Debug)]
pub struct BootArgs {
    /// Paging mode: 2level, pae, 4level, 5level, or all.
    #[arg(long, default_value = "all", value_parser = crate::args::Named::new(&["2level", "pae", "4level", "5level", "all"], parse_modes))]
    pub mode: Modes,
    /// Scheme: uncached, slab-unsynced, slab-pgd-list, slab-ticket,
    /// slab-prepopulated, shared-kernel, or all (pairs that cannot exist
    /// are shown as n/a).
    #[arg(long, default_value = "all", value_parser = crate::args::Named::new(&["uncached", "slab-unsynced", "slab-pgd-list", "slab-ticket", "slab-prepopulated", "shared-kernel", "all"], parse_schemes))]
    pub scheme: Schemes,
    /// Tasks each kernel runs (exec'd or forked), 1..=1000000.
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub tasks: u64,
    /// Workload seed.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// CPUs per kernel, 1..=8: with more than one, the application
    /// processors run the tasks while CPU 0 converts (a `change_page_attr`
    /// storm with TLB-shootdown IPIs).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=8))]
    pub cpus: u64,
    /// `pgd_lock` implementation: tas, ticket or mutex.
    #[arg(long, default_value = "tas", value_parser = crate::args::lock_parser())]
    pub lock: LockKind,
    /// Accelerator: tcg, kvm, or auto (KVM where it runs the mode, found
    /// by trying; TCG otherwise).
    #[arg(long, default_value = "tcg", value_parser = ["tcg", "kvm", "auto"])]
    pub accel: String,
    /// Seconds each kernel may run before it is killed, 1..=3600.
    #[arg(long, default_value_t = 120, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub timeout: u64,
    /// Run the in-kernel benchmarks (TSC-timed, paired rounds against
    /// `uncached`) and the SMP throughput for 1, 2 and 4 CPUs instead of
    /// the verdict matrix.
    #[arg(long)]
    pub bench: bool,
    /// Print one JSON object per run instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Echo the kernels' serial consoles to stderr.
    #[arg(long)]
    pub verbose: bool,
    /// Extra kernel command-line words (`key=value`), e.g. `fault=pf` to
    /// test the exception path; with `--bench`, for the bench kernel, e.g.
    /// `bench_budget_ms=N` (the time each benchmark series may take).
    #[arg(long = "kernel-arg", value_name = "KEY=VALUE")]
    pub kernel_args: Vec<String>,
}

/// The paging modes a `boot` runs.
#[derive(Clone, Debug)]
pub struct Modes(pub Vec<PagingMode>);

/// The schemes a `boot` runs.
#[derive(Clone, Debug)]
pub struct Schemes(pub Vec<Scheme>);

fn parse_modes(s: &str) -> Result<Modes, String> {
    if s == "all" {
        return Ok(Modes(PagingMode::ALL.to_vec()));
    }
    s.parse::<PagingMode>()
        .map(|m| Modes(vec![m]))
        .map_err(|e| format!("{e} (or all)"))
}

fn parse_schemes(s: &str) -> Result<Schemes, String> {
    if s == "all" {
        return Ok(Schemes(Scheme::ALL.to_vec()));
    }
    s.parse::<Scheme>()
        .map(|m| Schemes(vec![m]))
        .map_err(|e| format!("{e} (or all)"))
}

/// Why a boot could not even start.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    /// Bad input (exit 2).
    #[error("{0}")]
    Usage(String),
    /// Something the environment lacks (exit 3).
    #[error("{what}; {fix}")]
    Missing {
        /// What is missing.
        what: String,
        /// The command that installs it.
        fix: String,
    },
    /// Building the kernel failed (exit 1).
    #[error("building the kernel for {target} failed:\n{log}")]
    Build {
        /// The target.
        target: &'static str,
        /// The tail of cargo's output.
        log: String,
    },
    /// Running QEMU failed (exit 1).
    #[error("{0}")]
    Io(String),
}

impl BootError {
    fn code(&self) -> u8 {
        match self {
            BootError::Usage(_) => 2,
            BootError::Missing { .. } => 3,
            BootError::Build { .. } | BootError::Io(_) => 1,
        }
    }
}

/// The Rust target of the kernel build that runs `mode`.
pub fn kernel_target(mode: PagingMode) -> &'static str {
    if mode.is_64bit() {
        "x86_64-unknown-none"
    } else {
        "i686-unknown-linux-gnu"
    }
}

fn kernel_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../kernel")
}

fn kernel_target_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/kernel")
}

fn qemu_binary() -> String {
    std::env::var("PGDCACHE_QEMU").unwrap_or_else(|_| "qemu-system-x86_64".to_string())
}

/// Is QEMU there?
fn check_qemu() -> Result<(), BootError> {
    match Command::new(qemu_binary())
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
    {
        Ok(s) if s.success() => Ok(()),
        _ => Err(BootError::Missing {
            what: format!("{} is not installed", qemu_binary()),
            fix: "install it with: apt-get install qemu-system-x86".to_string(),
        }),
    }
}

/// Builds the kernel for `target` (cargo is incremental: a built kernel
/// costs a fraction of a second) and returns the ELF's path.
pub fn build_kernel(target: &'static str) -> Result<PathBuf, BootError> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let out = Command::new(&cargo)
        .current_dir(kernel_dir())
        .env("CARGO_TARGET_DIR", kernel_target_dir())
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET")
        .args(["build", "--release", "--quiet", "--target", target])
        .output()
        .map_err(|e| BootError::Missing {
            what: format!("cargo could not run ({e})"),
            fix: "install Rust with rustup (https://rustup.rs)".to_string(),
        })?;
    if !out.status.success() {
        let log = String::from_utf8_lossy(&out.stderr).to_string();
        if log.contains("target may not be installed")
            || log.contains("can't find crate for `core`")
        {
            return Err(BootError::Missing {
                what: format!("the Rust target {target} is not installed"),
                fix: format!("install it with: rustup target add {target}"),
            });
        }
        let tail: Vec<&str> = log.lines().rev().take(40).collect();
        return Err(BootError::Build {
            target,
            log: tail.into_iter().rev().collect::<Vec<_>>().join("\n"),
        });
    }
    Ok(kernel_target_dir()
        .join(target)
        .join("release")
        .join("pgdcache-kernel"))
}

/// One kernel boot.
#[derive(Clone, Debug)]
pub struct Boot {
    /// Paging mode.
    pub mode: PagingMode,
    /// Scheme.
    pub scheme: Scheme,
    /// Tasks.
    pub tasks: u64,
    /// Seed.
    pub seed: u64,
    /// Lock.
    pub lock: LockKind,
    /// CPUs.
    pub cpus: u64,
    /// "tcg" or "kvm".
    pub accel: &'static str,
    /// Seconds before the kernel is killed.
    pub timeout: Duration,
    /// Extra command-line words.
    pub extra: Vec<String>,
    /// Guest RAM in MiB.
    pub ram_mib: u64,
}

/// How one boot ended.
#[derive(Debug)]
pub enum Outcome {
    /// The kernel reported its verdict (the `result` event).
    Result(Value),
    /// The kernel stopped on an error it reported (bad input, boot failure).
    KernelError {
        /// Stage.
        stage: String,
        /// Message.
        message: String,
    },
    /// Panic, fatal exception, triple fault, QEMU gone, timeout: no verdict.
    Crash {
        /// What happened.
        what: String,
        /// The last serial lines.
        tail: Vec<String>,
    },
}

/// QEMU, killed when dropped.
struct Qemu(Child);

impl Drop for Qemu {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_qemu(elf: &Path, b: &Boot) -> Result<Qemu, BootError> {
    let mut append = format!(
        "mode={} scheme={} tasks={} seed={} lock={} cpus={}",
        b.mode, b.scheme, b.tasks, b.seed, b.lock, b.cpus
    );
    for w in &b.extra {
        append.push(' ');
        append.push_str(w);
    }
    let mut cmd = Command::new(qemu_binary());
    cmd.arg("-kernel")
        .arg(elf)
        .args(["-append", &append])
        .args(["-serial", "stdio", "-display", "none", "-monitor", "none"])
        .args([
            "-no-reboot",
            "-m",
            &format!("{}M", b.ram_mib),
            "-smp",
            &b.cpus.to_string(),
        ])
        .args(["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"]);
    if b.accel == "kvm" {
        cmd.args(["-accel", "kvm", "-cpu", "host"]);
    } else {
        cmd.args(["-accel", "tcg", "-cpu", "max"]);
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // QEMU dies with pgdcache (PR_SET_PDEATHSIG), as the oracle's does.
    oracle::qemu::die_with_parent(&mut cmd);
    cmd.spawn()
        .map(Qemu)
        .map_err(|e| BootError::Io(format!("starting {}: {e}", qemu_binary())))
}

/// Boots one kernel and waits for its verdict. `on_line` sees every serial
/// line as it arrives.
pub fn run_boot(elf: &Path, b: &Boot, on_line: &mut dyn FnMut(&str)) -> Result<Outcome, BootError> {
    run_boot_until(elf, b, None, on_line)
}

/// [`run_boot`] that stops QEMU as soon as the kernel reports event
/// `until` (returned as the outcome's result).
pub fn run_boot_until(
    elf: &Path,
    b: &Boot,
    until: Option<&str>,
    on_line: &mut dyn FnMut(&str),
) -> Result<Outcome, BootError> {
    let mut q = spawn_qemu(elf, b)?;
    let stdout =
        q.0.stdout
            .take()
            .ok_or_else(|| BootError::Io("no QEMU stdout".into()))?;
    let mut stderr =
        q.0.stderr
            .take()
            .ok_or_else(|| BootError::Io("no QEMU stderr".into()))?;
    let (tx, rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line.trim_end_matches('\r').to_string()).is_err() {
                break;
            }
        }
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + b.timeout;
    let mut tail: Vec<String> = Vec::new();
    let mut result = None;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                on_line(&line);
                if let Some(ev) = line.strip_prefix("@@ ") {
                    let v: Value = match serde_json::from_str(ev) {
                        Ok(v) => v,
                        Err(e) => {
                            tail.push(line.clone());
                            return Ok(Outcome::Crash {
                                what: format!("unreadable kernel event ({e})"),
                                tail,
                            });
                        }
                    };
                    if until.is_some() && v["event"].as_str() == until {
                        return Ok(Outcome::Result(v));
                    }
                    match v["event"].as_str() {
                        Some("result") => result = Some(v),
                        Some("done") => {
                            return Ok(match result.take() {
                                Some(r) => Outcome::Result(r),
                                None => Outcome::Crash {
                                    what: "the kernel said done without a result".into(),
                                    tail,
                                },
                            });
                        }
                        Some("error") => {
                            return Ok(Outcome::KernelError {
                                stage: v["stage"].as_str().unwrap_or("?").to_string(),
                                message: v["message"].as_str().unwrap_or("?").to_string(),
                            });
                        }
                        Some("fatal") => {
                            tail.push(line.clone());
                            return Ok(Outcome::Crash {
                                what: format!(
                                    "kernel exception: {}",
                                    v["what"].as_str().unwrap_or("?")
                                ),
                                tail,
                            });
                        }
                        _ => {}
                    }
                }
                tail.push(line);
                if tail.len() > 20 {
                    tail.remove(0);
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                return Ok(Outcome::Crash {
                    what: format!("no verdict within {} s (killed)", b.timeout.as_secs()),
                    tail,
                });
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let status = q.0.wait().ok();
                let err = err_reader.join().unwrap_or_default();
                for l in err.lines().filter(|l| !l.trim().is_empty()).take(5) {
                    tail.push(format!("qemu: {l}"));
                }
                return Ok(Outcome::Crash {
                    what: format!(
                        "QEMU exited ({}) without the kernel's verdict (a triple fault or reset)",
                        status.map_or("?".to_string(), |s| s.to_string())
                    ),
                    tail,
                });
            }
        }
    }
}

/// What a run must show: correct schemes clean, the unsynced slabification
/// caught where the bug exists (2-level), by the hardware and the checker
/// alike.
pub fn expectation(mode: PagingMode, scheme: Scheme) -> &'static str {
    if !scheme.intended_correct() && mode == PagingMode::TwoLevel {
        "caught"
    } else {
        "correct"
    }
}

/// Whether a reported result meets the expectation.
pub fn meets(result: &Value, expected: &str) -> bool {
    let verdict = result["verdict"].as_str().unwrap_or("");
    let leaked = result["leaked_frames"].as_u64().unwrap_or(u64::MAX);
    let agree = result["agree"].as_bool().unwrap_or(false);
    let hw = result["hw_violations"].as_u64().unwrap_or(0);
    // Every global_flush_tlb reached every other CPU.
    let cpus = result["cpus"].as_u64().unwrap_or(1);
    let ipis_ok = result["ipis"].as_u64().unwrap_or(0)
        == result["tlb_flushes"].as_u64().unwrap_or(0) * cpus.saturating_sub(1);
    if !ipis_ok || !tokens_ok(result) {
        return false;
    }
    match expected {
        "correct" => verdict == "correct" && leaked == 0 && agree,
        _ => verdict.starts_with("caught") && hw > 0 && agree && leaked == 0,
    }
}

/// Whether every CPU ran on its own per-CPU token of the pgd system (the
/// kernel's `pgd_path` and `token` figures): each CPU claimed one, and at
/// the end of the run every AP had given its token back.
pub fn tokens_ok(result: &Value) -> bool {
    let cpus = result["cpus"].as_u64().unwrap_or(1);
    let t = &result["token"];
    result["pgd_path"] == "token"
        && t["cpus"].as_u64() == Some(cpus)
        && t["released"].as_u64() == Some(cpus.saturating_sub(1))
}

pub(crate) fn kvm_usable() -> bool {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok()
}

/// One kernel boot's row of the report.
pub(crate) struct Row {
    pub(crate) mode: PagingMode,
    pub(crate) scheme: Scheme,
    pub(crate) accel: &'static str,
    pub(crate) expected: &'static str,
    pub(crate) outcome: Result<Outcome, String>,
    pub(crate) secs: f64,
}

impl Row {
    pub(crate) fn ok(&self) -> bool {
        match &self.outcome {
            Ok(Outcome::Result(r)) => meets(r, self.expected),
            _ => false,
        }
    }
}

/// Runs `pgdcache boot` under the exit-code contract (`crate::error`).
pub fn main(a: &BootArgs) -> Result<(), crate::error::CliError> {
    use crate::error::CliError;
    match run(a) {
        Ok(0) => Ok(()),
        Ok(_) => Err(CliError::Finding(
            "boot: a verdict is not the expected one, or a target was not met (see the report)"
                .into(),
        )),
        Err(e) => Err(match e.code() {
            2 => CliError::Usage(format!("boot: {e}")),
            3 => CliError::Env(format!("boot: {e}")),
            _ => CliError::Run(format!("boot: {e}")),
        }),
    }
}

fn run(a: &BootArgs) -> Result<u8, BootError> {
    let (modes, schemes) = (&a.mode.0, &a.scheme.0);
    if let Some(bad) = a
        .kernel_args
        .iter()
        .find(|w| !w.contains('=') || w.contains(char::is_whitespace))
    {
        return Err(BootError::Usage(format!(
            "--kernel-arg {bad:?}: expected one KEY=VALUE word"
        )));
    }
    if let ([mode], [scheme]) = (modes.as_slice(), schemes.as_slice()) {
        if let Err(why) = scheme.supports(*mode) {
            return Err(BootError::Usage(format!(
                "scheme {scheme} is impossible in {mode} paging: {why}"
            )));
        }
    }
    check_qemu()?;
    if a.accel == "kvm" && !kvm_usable() {
        return Err(BootError::Missing {
            what: "/dev/kvm is missing or not accessible".into(),
            fix: "load kvm (modprobe kvm_intel or kvm_amd) and give this user access to /dev/kvm, or use --accel tcg".into(),
        });
    }
    if a.bench {
        return crate::boot_bench::run(a);
    }
    let pairs: Vec<(PagingMode, Scheme)> = modes
        .iter()
        .flat_map(|&m| schemes.iter().map(move |&s| (m, s)))
        .collect();
    let runnable = pairs.iter().filter(|(m, s)| s.supports(*m).is_ok()).count();
    let pb = crate::progress::bar(runnable as u64, "boot", a.json);
    let mut rows = Vec::new();
    let mut kvm_modes: Vec<(PagingMode, bool)> = Vec::new();
    for &(mode, scheme) in &pairs {
        if scheme.supports(mode).is_err() {
            continue;
        }
        let elf = build_kernel(kernel_target(mode))?;
        let accel = pick_accel(a, mode, &elf, &mut kvm_modes)?;
        let b = Boot {
            mode,
            scheme,
            tasks: a.tasks,
            seed: a.seed,
            lock: a.lock,
            cpus: a.cpus,
            accel,
            timeout: Duration::from_secs(a.timeout),
            extra: a.kernel_args.clone(),
            ram_mib: 128,
        };
        pb.set_message(format!("{mode} {scheme} ({accel})"));
        let t = Instant::now();
        let verbose = a.verbose;
        let pb2 = pb.clone();
        let outcome = run_boot(&elf, &b, &mut |line| {
            if verbose {
                pb2.suspend(|| crate::out::err!("[{mode} {scheme}] {line}"));
            }
        })
        .map_err(|e| e.to_string());
        if let Ok(Outcome::KernelError { stage, message }) = &outcome {
            if stage == "cmdline" {
                pb.finish_and_clear();
                return Err(BootError::Usage(format!(
                    "the kernel refused its command line: {message}"
                )));
            }
        }
        rows.push(Row {
            mode,
            scheme,
            accel,
            expected: expectation(mode, scheme),
            outcome,
            secs: t.elapsed().as_secs_f64(),
        });
        pb.inc(1);
    }
    pb.finish_and_clear();
    let code = if rows.iter().all(Row::ok) { 0 } else { 1 };
    let mut out = std::io::stdout().lock();
    let written = if a.json {
        rows.iter()
            .try_for_each(|r| writeln!(out, "{}", crate::boot_table::row_json(r, a)))
    } else {
        crate::boot_table::print_table(&mut out, a, &pairs, &rows)
    };
    match written.and_then(|()| out.flush()) {
        Ok(()) => Ok(code),
        // A closed stdout (`| head`) ends the output quietly.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(code),
        Err(e) => Err(BootError::Io(format!("writing the report: {e}"))),
    }
}

/// The accelerator for `mode`: TCG, KVM, or (auto) KVM if a probe boot of
/// this mode under KVM reaches paging, found by trying once per mode.
pub(crate) fn pick_accel(
    a: &BootArgs,
    mode: PagingMode,
    elf: &Path,
    cache: &mut Vec<(PagingMode, bool)>,
) -> Result<&'static str, BootError> {
    match a.accel.as_str() {
        "tcg" => Ok("tcg"),
        "kvm" => {
            if kvm_runs(mode, elf, cache)? {
                Ok("kvm")
            } else {
                Err(BootError::Missing {
                    what: format!("this host's KVM cannot run {mode} paging (a probe boot did not reach paging)"),
                    fix: "use --accel tcg, or --accel auto (KVM where it runs the mode)".into(),
                })
            }
        }
        _ => Ok(if kvm_usable() && kvm_runs(mode, elf, cache)? {
            "kvm"
        } else {
            "tcg"
        }),
    }
}

fn kvm_runs(
    mode: PagingMode,
    elf: &Path,
    cache: &mut Vec<(PagingMode, bool)>,
) -> Result<bool, BootError> {
    if let Some(&(_, ok)) = cache.iter().find(|(m, _)| *m == mode) {
        return Ok(ok);
    }
    let probe = Boot {
        mode,
        scheme: Scheme::Uncached,
        tasks: 1,
        seed: 1,
        lock: LockKind::Tas,
        cpus: 1,
        accel: "kvm",
        timeout: Duration::from_secs(90),
        extra: Vec::new(),
        ram_mib: 128,
    };
    // The probe ends at the kernel's `paging` event: swapper is loaded.
    let paging = matches!(
        run_boot_until(elf, &probe, Some("paging"), &mut |_| {})?,
        Outcome::Result(_)
    );
    cache.push((mode, paging));
    Ok(paging)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn expectations_follow_the_seed() {
        assert_eq!(
            expectation(PagingMode::TwoLevel, Scheme::SlabUnsynced),
            "caught"
        );
        for m in [
            PagingMode::Pae,
            PagingMode::FourLevel,
            PagingMode::FiveLevel,
        ] {
            assert_eq!(expectation(m, Scheme::SlabUnsynced), "correct");
        }
        for s in Scheme::ALL.into_iter().filter(|s| s.intended_correct()) {
            assert_eq!(expectation(PagingMode::TwoLevel, s), "correct");
        }
    }

    #[test]
    fn a_verdict_needs_the_kernel_and_the_checker_to_agree() {
        let tok = json!({"cpus": 1, "released": 0});
        let clean = json!({"verdict": "correct", "leaked_frames": 0, "agree": true, "hw_violations": 0,
            "pgd_path": "token", "token": tok});
        assert!(meets(&clean, "correct"));
        assert!(!meets(&clean, "caught"));
        let leak = json!({"verdict": "correct", "leaked_frames": 1, "agree": true, "hw_violations": 0,
            "pgd_path": "token", "token": tok});
        assert!(!meets(&leak, "correct"));
        let caught = json!({"verdict": "caught stale", "leaked_frames": 0, "agree": true, "hw_violations": 3,
            "pgd_path": "token", "token": tok});
        assert!(meets(&caught, "caught"));
        assert!(!meets(&caught, "correct"));
        // Caught by the checker only: the hardware must see it too.
        let sw_only = json!({"verdict": "caught stale", "leaked_frames": 0, "agree": false, "hw_violations": 0,
            "pgd_path": "token", "token": tok});
        assert!(!meets(&sw_only, "caught"));
        assert!(!meets(&json!({}), "correct"));
    }

    #[test]
    fn a_pass_needs_every_cpu_on_its_pgd_token() {
        let run = |path: &str, cpus: u64, claimed: u64, released: u64| {
            json!({"verdict": "correct", "leaked_frames": 0, "agree": true, "hw_violations": 0,
                "cpus": cpus, "ipis": 0, "tlb_flushes": 0, "pgd_path": path,
                "token": {"cpus": claimed, "released": released}})
        };
        assert!(meets(&run("token", 2, 2, 1), "correct"));
        // The per-call path, a CPU without a token, an AP that kept its
        // token: not a pass.
        assert!(!meets(&run("per-call", 2, 2, 1), "correct"));
        assert!(!meets(&run("token", 2, 1, 1), "correct"));
        assert!(!meets(&run("token", 2, 2, 0), "correct"));
        let mut old = run("token", 1, 1, 0);
        if let Some(o) = old.as_object_mut() {
            o.remove("token");
        }
        assert!(!meets(&old, "correct"));
    }
}
