//! Golden tests (insta snapshots in `tests/snapshots/`): `compare`'s table
//! (colour only when asked for: `--color`, `CLICOLOR_FORCE`, never with
//! `NO_COLOR` or in a pipe) and the schema of every `--json` output — each key path with the JSON
//! types seen there — so a renamed, dropped or retyped field shows up as a
//! diff. Values that vary from run to run (timings, addresses) are not
//! pinned; the structure is. `bench --json` is pinned by its own crate's
//! tests (a run takes most of a minute); `oracle --json` where QEMU runs.
//!
//! To accept a deliberate change: `INSTA_UPDATE=always cargo test -p
//! pgdcache-cli --test golden` and review the diff of the `.snap` files.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Command;

fn pgdcache(args: &[&str]) -> String {
    pgdcache_env(args, &[])
}

/// Runs `pgdcache args` with `env` set and the colour variables of the
/// caller's environment removed; returns stdout.
fn pgdcache_env(args: &[&str], env: &[(&str, &str)]) -> String {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pgdcache"));
    for v in ["NO_COLOR", "CLICOLOR", "CLICOLOR_FORCE"] {
        cmd.env_remove(v);
    }
    let out = cmd
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("run pgdcache");
    assert!(
        out.status.success(),
        "{args:?}: exit {:?}\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8")
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("pgdcache-golden-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "bool",
        serde_json::Value::Number(_) => "number",
        serde_json::Value::String(_) => "string",
        serde_json::Value::Array(_) => "array",
        serde_json::Value::Object(_) => "object",
    }
}

fn walk(v: &serde_json::Value, path: String, out: &mut BTreeMap<String, BTreeSet<&'static str>>) {
    out.entry(path.clone()).or_default().insert(kind(v));
    match v {
        serde_json::Value::Array(items) => {
            for item in items {
                walk(item, format!("{path}[]"), out);
            }
        }
        serde_json::Value::Object(map) => {
            for (k, item) in map {
                walk(item, format!("{path}.{k}"), out);
            }
        }
        _ => {}
    }
}

/// Every key path of `json` with the types seen there, one per line.
fn schema(json: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(json).expect("valid JSON");
    let mut paths = BTreeMap::new();
    walk(&v, String::new(), &mut paths);
    paths
        .into_iter()
        .map(|(p, kinds)| {
            let p = if p.is_empty() { ".".to_string() } else { p };
            format!("{p}: {}", kinds.into_iter().collect::<Vec<_>>().join("|"))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// A table with every number (`45249`, `1.23x`, `40ns`, `(1.6s)`)
/// replaced by `#`, the alignment collapsed and each column's rule (whose
/// width follows the numbers) shortened to one `─`: the columns, the rows,
/// the modes and the verdicts stay.
fn shape(table: &str) -> String {
    let number = |t: &str| {
        let core = t.trim_matches(|c| c == '(' || c == ')');
        core.starts_with(|c: char| c.is_ascii_digit())
            && !["2level", "4level", "5level"].contains(&core)
    };
    table
        .lines()
        .map(|l| {
            l.split_whitespace()
                .map(|t| {
                    if number(t) {
                        "#"
                    } else if t.chars().all(|c| c == '─') {
                        "─"
                    } else {
                        t
                    }
                })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

const COMPARE: &str = "modes = [\"2level\", \"pae\"]\nschemes = [\"uncached\", \"slab-pgd-list\", \"slab-prepopulated\", \"shared-kernel\"]\nops = 150\n";

fn compare_config() -> PathBuf {
    let d = tmp("compare");
    std::fs::create_dir_all(&d).expect("dir");
    let p = d.join("c.toml");
    std::fs::write(&p, COMPARE).expect("config");
    p
}

#[test]
fn compare_table() {
    let cfg = compare_config();
    let text = pgdcache(&["compare", "--config", cfg.to_str().expect("path")]);
    insta::assert_snapshot!("compare_table", shape(&text));
}

/// Verdicts are coloured only when colour is asked for: stdout here is a
/// pipe, so `auto` gives none; `--color always` and `CLICOLOR_FORCE=1` do;
/// `NO_COLOR` beats `CLICOLOR_FORCE`, and `--color never` beats both.
#[test]
fn compare_colours_only_when_asked() {
    let cfg = compare_config();
    let c = cfg.to_str().expect("path");
    let esc = |t: &str| t.contains('\x1b');
    assert!(
        !esc(&pgdcache_env(&["compare", "--config", c], &[])),
        "a pipe"
    );
    assert!(esc(&pgdcache_env(
        &["compare", "--config", c, "--color", "always"],
        &[]
    )));
    assert!(esc(&pgdcache_env(
        &["compare", "--config", c],
        &[("CLICOLOR_FORCE", "1")]
    )));
    assert!(!esc(&pgdcache_env(
        &["compare", "--config", c],
        &[("CLICOLOR_FORCE", "1"), ("NO_COLOR", "1")]
    )));
    assert!(!esc(&pgdcache_env(
        &["compare", "--config", c, "--color", "never"],
        &[("CLICOLOR_FORCE", "1")]
    )));
    // The JSON is never coloured, and no progress bar reaches a pipe.
    let json = pgdcache_env(
        &["compare", "--config", c, "--json", "--color", "always"],
        &[],
    );
    assert!(!esc(&json));
    serde_json::from_str::<serde_json::Value>(&json).expect("valid JSON");
}

#[test]
fn compare_json_schema() {
    let cfg = compare_config();
    let json = pgdcache(&["compare", "--config", cfg.to_str().expect("path"), "--json"]);
    insta::assert_snapshot!("compare_json", schema(&json));
}

#[test]
fn run_json_schema() {
    let json = pgdcache(&["run", "--ops", "200", "--json"]);
    insta::assert_snapshot!("run_json", schema(&json));
}

#[test]
fn check_json_schema() {
    let json = pgdcache(&["check", "--ops", "150", "--json"]);
    insta::assert_snapshot!("check_json", schema(&json));
}

#[test]
fn slabinfo_json_schema() {
    let json = pgdcache(&["slabinfo", "--ops", "100", "--json"]);
    insta::assert_snapshot!("slabinfo_json", schema(&json));
}

#[test]
fn dump_json_schema() {
    for mode in ["2level", "pae", "4level", "5level"] {
        let json = pgdcache(&["dump", "--mode", mode, "--json"]);
        insta::assert_snapshot!(format!("dump_json_{mode}"), schema(&json));
    }
}

#[test]
fn export_and_translate_json_schema() {
    let d = tmp("export");
    let json = pgdcache(&[
        "export",
        "--scenario",
        "fork",
        "--mode",
        "pae",
        "--json",
        "--out",
        d.to_str().expect("path"),
    ]);
    insta::assert_snapshot!("export_json", schema(&json));
    // A kernel address that maps and a user address that faults.
    let json = pgdcache(&[
        "translate",
        "--json",
        "--image",
        d.to_str().expect("path"),
        "0xc0000000",
        "0x1000",
    ]);
    insta::assert_snapshot!("translate_json", schema(&json));
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn oracle_json_schema() {
    if !oracle::qemu::QemuOracle::new().available() {
        eprintln!("SKIP: QEMU not installed; the oracle's JSON is pinned where it runs");
        return;
    }
    let json = pgdcache(&[
        "oracle",
        "--mode",
        "pae",
        "--cases",
        "1",
        "--probe-cases",
        "0",
        "--no-scenarios",
        "--json",
    ]);
    insta::assert_snapshot!("oracle_json", schema(&json));
}
