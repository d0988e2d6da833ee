//! `pgdcache boot --bench`: the seed's costs measured inside the booted
//! kernel (TSC-timed, calibrated against the PIT), and SMP throughput.
//!
//! Per mode, one kernel boots with `bench=1`: it runs one pgd system per
//! scheme side by side and times `pgd_alloc`+`pgd_free` warm and cold,
//! small and large fork+exit, and a `change_page_attr` cycle with 10 000
//! cached pgds (list vs ticket), in interleaved rounds with per-round
//! ratios against `uncached` (median and inter-quartile range). Then the
//! task workload runs on 1, 2 and 4 CPUs for throughput and `pgd_lock`
//! contention. Every figure carries its accelerator: TCG figures are
//! emulated and decide no target. The pairs and forks run as CPU 0 through
//! its per-CPU token (`Kernel::claim_cpu(0)`, or `claim_whole_cpu(0)` /
//! `claim_pae_cpu(0)` where the pgds' shape has a type, as `pgdcache
//! bench` does);
//! the report says so, with the kernel's freed-frame poisoning setting.

use std::io::Write;
use std::time::Duration;

use pgdcache::Scheme;
use serde_json::{json, Value};
use x86paging::PagingMode;

use crate::boot::{
    build_kernel, kernel_target, pick_accel, run_boot, Boot, BootArgs, BootError, Outcome,
};

/// The target the issue names: a cached pair ≥ 30× cheaper than the
/// uncached fresh page, KVM, 4-level, warm (Lameter's 26.7× is the anchor).
const TARGET_RATIO: f64 = 30.0;

/// Boots `b` and keeps the last event of each name in `want`.
fn boot_events<const N: usize>(
    b: &Boot,
    want: [&str; N],
) -> Result<([Option<Value>; N], Outcome), BootError> {
    let elf = build_kernel(kernel_target(b.mode))?;
    let mut found: [Option<Value>; N] = std::array::from_fn(|_| None);
    let outcome = run_boot(&elf, b, &mut |line| {
        if let Some(ev) = line.strip_prefix("@@ ") {
            if let Ok(v) = serde_json::from_str::<Value>(ev) {
                if let Some(i) = want.iter().position(|w| v["event"] == *w) {
                    found[i] = Some(v);
                }
            }
        }
    })?;
    Ok((found, outcome))
}

/// What a bench kernel reported: its `bench` event, or, when it was
/// stopped before the end (a slow accelerator, the timeout), the first
/// series it reported as soon as it had it (`bench_series`, the same
/// shape), marked `incomplete` with why; `None` when it reported nothing.
fn bench_report(
    bench: Option<Value>,
    first: Option<Value>,
    outcome: &Outcome,
) -> Option<(Value, bool)> {
    if let Some(b) = bench {
        return Some((b, true));
    }
    let mut b = first?;
    b["incomplete"] = json!(format!("stopped after its first series: {}", why(outcome)));
    Some((b, false))
}

/// Why a bench kernel ended, in one line (a crash's serial tail is left
/// to `--verbose`).
fn why(o: &Outcome) -> String {
    match o {
        Outcome::Crash { what, .. } => what.clone(),
        Outcome::KernelError { stage, message } => format!("{stage}: {message}"),
        Outcome::Result(_) => "it ended without a bench event".into(),
    }
}

/// How the kernel timed its series: what reading the TSC costs there, and
/// how many operations each series ran per round (fewer than nominal where
/// the kernel's time budget per series made it: a slow accelerator).
fn timing_note(b: &Value) -> String {
    let counts: Vec<String> = ["pair_warm", "pair_cold", "fork_small", "fork_large"]
        .iter()
        .filter_map(|s| {
            let n = b["series"][s]["ops_per_round"].as_u64()?;
            Some(format!("{s} {n}"))
        })
        .collect();
    let counts = match counts.is_empty() {
        true => "not reported by this kernel".into(),
        false => counts.join(", "),
    };
    let tsc = b["tsc_overhead_ns"]
        .as_u64()
        .map_or("not reported".into(), |ns| format!("{ns} ns"));
    let speed = b["loop_ns"].as_f64().map_or(String::new(), |ns| {
        format!("; guest code: {ns:.2} ns a step of a register loop")
    });
    let budget = b["series_budget_ms"].as_u64().map_or(String::new(), |ms| {
        format!(" (budget {} s a series)", ms as f64 / 1e3)
    });
    format!(
        "timing: warm pairs and forks as timed loops, cold pairs one by one less the TSC's own \
         cost ({tsc} a reading pair); operations per round{budget}: {counts}{speed}"
    )
}

/// Runs the benchmarks for every requested mode.
pub fn run(a: &BootArgs) -> Result<u8, BootError> {
    let mut reports = Vec::new();
    let mut kvm_cache = Vec::new();
    let mut ok = true;
    for &mode in &a.mode.0 {
        let elf = build_kernel(kernel_target(mode))?;
        let accel = pick_accel(a, mode, &elf, &mut kvm_cache)?;
        crate::out::err!("boot --bench: {mode} ({accel}) ...");
        let b = Boot {
            mode,
            scheme: Scheme::SlabPgdList,
            tasks: 50,
            seed: a.seed,
            lock: a.lock,
            cpus: 1,
            accel,
            timeout: Duration::from_secs(a.timeout.max(600)),
            // `--kernel-arg` words go to the bench kernel (e.g.
            // `bench_budget_ms=N`, each series' time budget).
            extra: std::iter::once("bench=1".to_string())
                .chain(a.kernel_args.iter().cloned())
                .collect(),
            ram_mib: 256,
        };
        let ([bench, first, checked], outcome) =
            boot_events(&b, ["bench", "bench_series", "result"])?;
        // A `--kernel-arg` the kernel refuses is bad input, as in `boot`.
        if let Outcome::KernelError { stage, message } = &outcome {
            if stage == "cmdline" {
                return Err(BootError::Usage(format!(
                    "the kernel refused its command line: {message}"
                )));
            }
        }
        let Some((bench, complete)) = bench_report(bench, first, &outcome) else {
            ok = false;
            crate::out::err!("boot --bench: {mode}: no bench event: {outcome:?}");
            continue;
        };
        if !complete {
            // The kernel's own figures for what it did measure are
            // reported; the run is still a failure, and the SMP runs
            // (slower still on such an accelerator) are not attempted.
            ok = false;
            crate::out::err!(
                "boot --bench: {mode}: the kernel was stopped after its first series ({}); \
                 reporting what it measured",
                why(&outcome)
            );
            reports.push(
                json!({"mode": mode.name(), "accel": accel, "emulated": accel == "tcg",
                                "bench": bench, "smp": []}),
            );
            continue;
        }
        // The bench kernel goes on to its own checked run (poisoning back
        // on): its verdict counts like any other.
        let checked = checked.map_or(
            json!({"verdict": null, "poisoning": null}),
            |r| json!({"tasks": r["tasks"], "verdict": r["verdict"], "poisoning": r["poisoning"]}),
        );
        if checked["verdict"] != "correct" {
            ok = false;
            crate::out::err!(
                "boot --bench: {mode}: the checked run after the bench: {} ({})",
                checked["verdict"],
                why(&outcome)
            );
        }
        let mut smp = Vec::new();
        for cpus in [1u64, 2, 4] {
            let b = Boot {
                cpus,
                extra: Vec::new(),
                ram_mib: 128,
                tasks: a.tasks,
                ..b.clone()
            };
            match boot_events(&b, ["result"])? {
                ([Some(r)], _) => {
                    let ns = r["ns"].as_f64().unwrap_or(0.0).max(1.0);
                    let tasks = r["tasks"].as_f64().unwrap_or(0.0);
                    smp.push(json!({
                        "cpus": cpus,
                        "tasks": r["tasks"],
                        "tasks_per_s": (tasks / (ns / 1e9)).round(),
                        "verdict": r["verdict"],
                        "ipis": r["ipis"],
                        "tlb_flushes": r["tlb_flushes"],
                        "pgd_lock": r["pgd_lock"],
                        "wrong_canary": r["hw"]["wrong_canary"],
                    }));
                }
                ([None], o) => {
                    ok = false;
                    crate::out::err!("boot --bench: {mode} on {cpus} CPUs: no result: {o:?}");
                }
            }
        }
        reports.push(
            json!({"mode": mode.name(), "accel": accel, "emulated": accel == "tcg",
                            "bench": bench, "checked_run": checked, "smp": smp}),
        );
    }
    let targets = targets(&reports);
    let mut out = std::io::stdout().lock();
    let written = if a.json {
        writeln!(out, "{}", json!({"runs": reports, "targets": targets}))
    } else {
        print(&mut out, &reports, &targets)
    };
    match written.and_then(|()| out.flush()) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        Err(e) => return Err(BootError::Io(format!("writing the report: {e}"))),
    }
    let missed = targets.iter().any(|t| t["met"] == false);
    Ok(if ok && !missed { 0 } else { 1 })
}

fn ratio(bench: &Value, series: &str, scheme: &str) -> Option<f64> {
    bench["series"][series][scheme]["vs_uncached"]["median"].as_f64()
}

fn targets(reports: &[Value]) -> Vec<Value> {
    let mut t = Vec::new();
    for r in reports {
        let mode = r["mode"].as_str().unwrap_or("?");
        let kvm = r["accel"] == "kvm";
        if mode == PagingMode::FourLevel.name() {
            let measured = ratio(&r["bench"], "pair_warm", "slab-pgd-list");
            t.push(json!({
                "name": format!("{mode} warm pgd_alloc+pgd_free, slab-pgd-list vs uncached ({})", r["accel"].as_str().unwrap_or("?")),
                "goal": format!(">= {TARGET_RATIO}x on KVM"),
                "measured": measured,
                "met": if kvm { json!(measured.is_some_and(|m| m >= TARGET_RATIO)) } else { json!("n/a: emulated (TCG)") },
            }));
        }
        for s in r["smp"].as_array().into_iter().flatten() {
            let cpus = s["cpus"].as_u64().unwrap_or(1);
            let flushes = s["tlb_flushes"].as_u64().unwrap_or(0);
            let good = s["wrong_canary"] == 0
                && s["ipis"].as_u64() == Some(flushes * cpus.saturating_sub(1))
                && s["verdict"] == "correct";
            t.push(json!({
                "name": format!("{mode} TLB shootdown on {cpus} CPUs: no wrong canary, IPIs = flushes x (CPUs-1)"),
                "goal": "0 wrong canaries; exact IPI count",
                "measured": format!("{} wrong, {} IPIs for {flushes} flushes", s["wrong_canary"], s["ipis"]),
                "met": good,
            }));
        }
    }
    t
}

/// A kernel event's freed-frame poisoning setting, as the report says it.
fn poisoning(event: &Value) -> &'static str {
    match event["poisoning"].as_bool() {
        Some(true) => "on",
        Some(false) => "off",
        None => "not reported",
    }
}

fn print(out: &mut impl Write, reports: &[Value], targets: &[Value]) -> std::io::Result<()> {
    for r in reports {
        let b = &r["bench"];
        let accel = r["accel"].as_str().unwrap_or("?");
        let label = if accel == "tcg" {
            "tcg, emulated"
        } else {
            accel
        };
        writeln!(
            out,
            "{} ({label}): ns per operation, median [IQR]; ratio vs uncached per round",
            r["mode"].as_str().unwrap_or("?")
        )?;
        let path = match b["pgd_path"].as_str() {
            Some("token") => {
                "as CPU 0 on its per-CPU token (Kernel::claim_cpu(0), or claim_whole_cpu(0)/claim_pae_cpu(0) where the pgds' shape has a type: no lock, no atomic on a hit)"
            }
            Some(_) => "per call (Kernel::pgd_alloc(cpu))",
            None => "path not reported by this kernel",
        };
        let poison = poisoning(b);
        writeln!(
            out,
            "configuration: pgd_alloc/pgd_free and fork/exit {path}; freed-frame poisoning {poison}"
        )?;
        if let Some(why) = b["incomplete"].as_str() {
            writeln!(out, "incomplete: the kernel {why}")?;
        }
        writeln!(out, "{}", timing_note(b))?;
        writeln!(
            out,
            "{:<11} {:<17} {:>14} {:>22}",
            "series", "scheme", "ns", "vs uncached"
        )?;
        let schemes: Vec<&str> = b["schemes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        for series in ["pair_warm", "pair_cold", "fork_small", "fork_large"] {
            if b["series"][series].is_null() {
                writeln!(out, "{series:<11} (not measured)")?;
                continue;
            }
            for s in &schemes {
                let v = &b["series"][series][s];
                let rv = &v["vs_uncached"];
                writeln!(
                    out,
                    "{series:<11} {s:<17} {:>14.0} {:>8.2}x [{:.2}-{:.2}]",
                    v["ns"].as_f64().unwrap_or(0.0),
                    rv["median"].as_f64().unwrap_or(0.0),
                    rv["q1"].as_f64().unwrap_or(0.0),
                    rv["q3"].as_f64().unwrap_or(0.0)
                )?;
            }
        }
        for s in ["slab-pgd-list", "slab-ticket"] {
            match b["cpa_10k"][s]["ns"].as_f64() {
                Some(ns) => writeln!(
                    out,
                    "{:<11} {s:<17} {ns:>14.0}   (split + revert + flush, 10 000 cached pgds)",
                    "cpa_10k"
                )?,
                // Only 2-level propagates a conversion to every pgd; the
                // kernel (not measuring it elsewhere) reports null.
                None if b.get("cpa_10k").is_some() && r["mode"] != "2level" => writeln!(
                    out,
                    "{:<11} {s:<17} {:>14}   (n/a: the kernel pmd is shared, nothing to propagate)",
                    "cpa_10k", "-"
                )?,
                None => writeln!(
                    out,
                    "{:<11} {s:<17} {:>14}   (not measured)",
                    "cpa_10k", "-"
                )?,
            }
        }
        let c = &r["checked_run"];
        if !c.is_null() {
            let poison = poisoning(c);
            writeln!(
                out,
                "checked     the bench kernel's own run after it ({} tasks): {}, freed-frame poisoning {poison}",
                c["tasks"], c["verdict"]
            )?;
        }
        for s in r["smp"].as_array().into_iter().flatten() {
            writeln!(
                out,
                "smp         {} CPU(s): {:>8} tasks/s, pgd_lock {} acquisitions, {} contended, {} IPIs, {}",
                s["cpus"], s["tasks_per_s"], s["pgd_lock"]["acquisitions"], s["pgd_lock"]["contended"], s["ipis"], s["verdict"]
            )?;
        }
        writeln!(out)?;
    }
    writeln!(out, "targets:")?;
    for t in targets {
        writeln!(
            out,
            "  {} — goal {}, measured {}, met {}",
            t["name"].as_str().unwrap_or("?"),
            t["goal"].as_str().unwrap_or("?"),
            t["measured"],
            t["met"]
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(ratio: f64) -> Value {
        json!({"pair_warm": {
            "uncached": {"ns": 1000.0, "vs_uncached": {"median": 1.0, "q1": 1.0, "q3": 1.0}},
            "slab-pgd-list": {"ns": 1000.0 / ratio, "vs_uncached": {"median": ratio, "q1": ratio, "q3": ratio}}
        }})
    }

    fn event(name: &str, ratio: f64) -> Value {
        json!({"event": name, "mode": "4level", "pgd_path": "token", "poisoning": true,
               "schemes": ["uncached", "slab-pgd-list"], "series": series(ratio)})
    }

    fn killed() -> Outcome {
        Outcome::Crash {
            what: "no verdict within 600 s (killed)".into(),
            tail: vec!["a long serial tail".into()],
        }
    }

    #[test]
    fn the_report_says_how_the_kernel_timed_its_series() {
        let mut b = event("bench_series", 45.0);
        // An older kernel reported neither figure.
        let old = timing_note(&b);
        assert!(
            old.contains("not reported by this kernel") && old.contains("not reported a"),
            "{old}"
        );
        b["tsc_overhead_ns"] = json!(2157);
        b["series_budget_ms"] = json!(40_000);
        b["loop_ns"] = json!(1170.5);
        b["series"]["pair_warm"]["ops_per_round"] = json!(256);
        b["series"]["pair_cold"] = json!({"ops_per_round": 1});
        let note = timing_note(&b);
        for want in [
            "2157 ns a reading pair",
            "(budget 40 s a series): pair_warm 256, pair_cold 1",
            "guest code: 1170.50 ns a step",
        ] {
            assert!(note.contains(want), "{want:?} in {note}");
        }
        assert!(!note.contains("fork_small"), "{note}");
    }

    #[test]
    fn a_kernel_stopped_after_its_first_series_is_reported_incomplete() {
        // The whole bench wins over the early series.
        let (b, complete) = bench_report(
            Some(event("bench", 45.0)),
            Some(event("bench_series", 1.0)),
            &killed(),
        )
        .unwrap();
        assert!(complete && b["incomplete"].is_null() && b["event"] == "bench");
        // Killed after the first series: its figures, marked, without the tail.
        let (b, complete) =
            bench_report(None, Some(event("bench_series", 45.0)), &killed()).unwrap();
        assert!(!complete);
        let why = b["incomplete"].as_str().unwrap();
        assert!(
            why.contains("killed") && !why.contains("serial tail"),
            "{why}"
        );
        // Nothing reported: nothing to show.
        assert!(bench_report(None, None, &killed()).is_none());

        // The target is judged on the kernel's own warm pair; the table
        // says the run is incomplete and which series were not measured.
        let report =
            json!({"mode": "4level", "accel": "kvm", "emulated": false, "bench": b, "smp": []});
        let t = targets(std::slice::from_ref(&report));
        assert_eq!(t.len(), 1);
        assert_eq!(t[0]["met"], true, "{t:?}");
        let mut out = Vec::new();
        print(&mut out, &[report], &t).unwrap();
        let text = String::from_utf8(out).unwrap();
        for want in [
            "incomplete: the kernel stopped after its first series",
            "pair_cold   (not measured)",
            "-   (not measured)",
        ] {
            assert!(text.contains(want), "{want:?} in\n{text}");
        }
    }

    #[test]
    fn cpa_is_not_applicable_where_the_kernel_pmd_is_shared() {
        let mut b = event("bench", 50.0);
        b["cpa_10k"] = Value::Null;
        let report =
            json!({"mode": "pae", "accel": "tcg", "emulated": true, "bench": b, "smp": []});
        let mut out = Vec::new();
        print(&mut out, &[report], &[]).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("n/a: the kernel pmd is shared"), "{text}");
        assert!(
            !text.contains("cpa_10k     slab-pgd-list                 0"),
            "{text}"
        );
    }
}
