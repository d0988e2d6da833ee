//! The report of `pgdcache boot`: one JSON object per run, or the table in
//! `compare`'s shape.

use std::io::Write;

use pgdcache::Scheme;
use serde_json::{json, Value};
use x86paging::PagingMode;

use crate::boot::{BootArgs, Outcome, Row};

pub(crate) fn row_json(r: &Row, a: &BootArgs) -> Value {
    let mut v = match &r.outcome {
        Ok(Outcome::Result(res)) => res.clone(),
        Ok(Outcome::KernelError { stage, message }) => json!({
            "mode": r.mode.name(), "scheme": r.scheme.name(), "cpus": a.cpus,
            "verdict": format!("kernel error in {stage}: {message}"),
            "violations": null, "leaked_frames": null, "tasks": null,
        }),
        Ok(Outcome::Crash { what, tail }) => json!({
            "mode": r.mode.name(), "scheme": r.scheme.name(), "cpus": a.cpus,
            "verdict": format!("crashed: {what}"), "last_lines": tail,
            "violations": null, "leaked_frames": null, "tasks": null,
        }),
        Err(e) => json!({
            "mode": r.mode.name(), "scheme": r.scheme.name(), "cpus": a.cpus,
            "verdict": format!("failed: {e}"),
            "violations": null, "leaked_frames": null, "tasks": null,
        }),
    };
    if let Some(o) = v.as_object_mut() {
        o.remove("event");
        o.insert("accel".into(), json!(r.accel));
        o.insert("expected".into(), json!(r.expected));
        o.insert("ok".into(), json!(r.ok()));
        o.insert("seed".into(), json!(a.seed));
        o.insert("seconds".into(), json!((r.secs * 100.0).round() / 100.0));
    }
    v
}

pub(crate) fn print_table(
    out: &mut impl Write,
    a: &BootArgs,
    pairs: &[(PagingMode, Scheme)],
    rows: &[Row],
) -> std::io::Result<()> {
    writeln!(
        out,
        "real MMU (QEMU {}) · {} CPU(s) · {} tasks per kernel · lock {} · seed {}",
        a.accel, a.cpus, a.tasks, a.lock, a.seed
    )?;
    writeln!(
        out,
        "{:<6} {:<17} {:<4} {:<30} {:>6} {:>5} {:>5} {:>7} {:>7} {:>6} {:>6}  expected",
        "mode",
        "scheme",
        "acc",
        "verdict",
        "tasks",
        "conv",
        "ipis",
        "hw-viol",
        "sw-viol",
        "leaked",
        "time"
    )?;
    for &(mode, scheme) in pairs {
        let (m, s) = (mode.name(), scheme.name());
        if let Err(why) = scheme.supports(mode) {
            writeln!(out, "{m:<6} {s:<17} {:<4} n/a  {why}", "")?;
            continue;
        }
        let Some(r) = rows.iter().find(|r| r.mode == mode && r.scheme == scheme) else {
            continue;
        };
        let mark = if r.ok() { "yes" } else { "NO" };
        let acc = r.accel;
        match &r.outcome {
            Ok(Outcome::Result(v)) => writeln!(
                out,
                "{m:<6} {s:<17} {acc:<4} {:<30} {:>6} {:>5} {:>5} {:>7} {:>7} {:>6} {:>5.1}s  {} ({mark})",
                v["verdict"].as_str().unwrap_or("?"),
                v["tasks"].as_u64().unwrap_or(0),
                v["conversions"].as_u64().unwrap_or(0),
                v["ipis"].as_u64().unwrap_or(0),
                v["hw_violations"].as_u64().unwrap_or(0),
                v["sw_violations"].as_u64().unwrap_or(0),
                v["leaked_frames"].as_u64().unwrap_or(0),
                r.secs,
                r.expected
            )?,
            Ok(Outcome::KernelError { stage, message }) => writeln!(
                out,
                "{m:<6} {s:<17} {acc:<4} kernel error in {stage}: {message} ({mark})"
            )?,
            Ok(Outcome::Crash { what, tail }) => {
                writeln!(
                    out,
                    "{m:<6} {s:<17} {acc:<4} CRASHED: {what} ({mark}); last serial lines:"
                )?;
                for l in tail.iter().rev().take(8).rev() {
                    writeln!(out, "    | {l}")?;
                }
            }
            Err(e) => writeln!(out, "{m:<6} {s:<17} {acc:<4} failed: {e} ({mark})")?,
        }
    }
    Ok(())
}
