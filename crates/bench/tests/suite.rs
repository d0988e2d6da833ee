//! The whole suite end to end with tiny settings: every table and every
//! target is produced, ratios are finite, and the model is deterministic;
//! the schema of the JSON report is pinned (insta snapshot in
//! `tests/snapshots/`; accept a deliberate change with `INSTA_UPDATE=always
//! cargo test -p pgdcache-bench --test suite` and review the diff).

use pgdbench::{markdown, run, steps, Settings};
use std::collections::{BTreeMap, BTreeSet};
use x86paging::PagingMode;

#[test]
fn tiny_suite_produces_every_table_and_target() {
    let s = Settings {
        rounds: 1,
        max_rounds: 3,
        narrow_iqr: 0.05,
        alloc32_iters: 200,
        probe_ms: 20,
        alloc_iters: 50,
        fork_small_iters: 5,
        fork_large_iters: 1,
        task_pages: (28, 512),
        cpa_pgds: vec![10],
        smp_ops: 40,
        smp_reps: 1,
        smp_modes: vec![PagingMode::TwoLevel],
        calib_tasks: 20,
        vtime_cpus: vec![1, 2, 4],
        time_default_run: false,
    };
    let mut seen = Vec::new();
    let r = run(&s, |st| seen.push((st.done, st.total))).unwrap();
    // Progress counts every step once, in order, and ends at the total.
    assert!(seen.windows(2).all(|w| w[0].0 <= w[1].0));
    assert_eq!(seen.last().copied(), Some((steps(&s), steps(&s))));
    // 2-level: 4 schemes; PAE: all 6.
    assert_eq!(r.alloc.len(), 4 + 6);
    assert!(r
        .alloc
        .iter()
        .all(|a| a.vs_uncached.is_finite() && a.vs_uncached > 0.0));
    // The small fork + exit's limit (a free pgd), one per mode.
    assert_eq!(r.fork_limit.len(), 2);
    assert!(r
        .fork_limit
        .iter()
        .all(|l| l.small_vs_uncached.is_finite() && l.small_vs_uncached > 0.0));
    assert!(r
        .targets
        .iter()
        .filter(|t| t.name.contains("small-task fork+exit"))
        .all(|t| t.measured.contains("limit: a free pgd")));
    // The object-cache floor under the pgd pairs, paired with them: one
    // pair on 2-level, the seed's four on PAE, each cheaper than `uncached`
    // and dearer than nothing; the two pgd-pair targets print it.
    let floors: Vec<_> = r.alloc_floor.iter().map(|f| (f.mode, f.pairs)).collect();
    assert_eq!(
        floors,
        [(PagingMode::TwoLevel, 1), (PagingMode::Pae, 4)],
        "{:?}",
        r.alloc_floor
    );
    assert!(r
        .alloc_floor
        .iter()
        .all(|f| f.vs_uncached > 1.0 && f.vs_freelist > 0.0 && f.ns.median_ns > 0.0));
    for name in ["× the bare freelist", "PAE pgd_alloc+free vs uncached"] {
        let t = r.targets.iter().find(|t| t.name.contains(name));
        assert!(
            t.is_some_and(|t| t.measured.contains("floor:")),
            "{name}: {t:?}"
        );
    }
    assert_eq!(r.cpa.len(), 2);
    assert_eq!(r.smp.len(), 4 * 3 * 2);
    assert_eq!(r.vtime.len(), 4 * 3);
    assert!(r.vtime.iter().all(|v| v.projected.len() == 3));
    assert!(r.targets.len() >= 8);
    // Rounds are adaptive between the minimum and the cap.
    assert!(r.alloc.iter().all(|a| (1..=3).contains(&a.ns.rounds)));
    // per call, token (raw pointers, Obj handles), the per-call limit.
    assert_eq!(r.alloc32.len(), 4);
    assert!(r
        .targets
        .iter()
        .any(|t| t.name.contains("objcache per-call 32-byte")));
    assert!(r
        .targets
        .iter()
        .any(|t| t.name.contains("objcache token-path 32-byte")));
    let md = markdown(&r);
    for h in [
        "pgd_alloc + pgd_free",
        "fork + exit",
        "change_page_attr",
        "SMP",
        "Virtual-time",
        "Targets",
        "objcache vs glibc malloc",
        "host before:",
        "host after:",
    ] {
        assert!(md.contains(h), "{h}");
    }
    let json = serde_json::to_value(&r).unwrap();
    assert!(json["targets"].is_array());
    // The fields issue #17 added, with their JSON types.
    for t in json["targets"].as_array().unwrap() {
        let v = t["verdict"].as_str().unwrap();
        assert!(
            ["met", "not_met", "noisy", "out_of_reach"].contains(&v),
            "{v}"
        );
        assert_eq!(t["met"].as_bool(), Some(v == "met"));
    }
    for side in ["before", "after"] {
        let h = &json["host"][side];
        assert!(h["cpu_share"].is_f64(), "{h}");
        assert!(h["two_thread_speedup"].is_f64());
        assert!(h["cpus"].is_u64());
        assert!(h["spin_ms"].is_f64());
        assert!(h["loadavg"].is_array() || h["loadavg"].is_null());
        assert!(h["runqueue_wait"].is_f64() || h["runqueue_wait"].is_null());
    }
    assert!(json["host"]["busy"].is_boolean());
    assert!(json["alloc32"][0]["vs_malloc"]["q1"].is_f64());
    assert!(json["alloc"][0]["ns"]["rounds"].is_u64());
    assert!(json["settings"]["max_rounds"].is_u64());
    assert!(json["settings"]["narrow_iqr"].is_f64());
    // The whole schema of `pgdcache bench --json` (the CLI prints this
    // report with serde_json), pinned like the CLI's golden JSON schemas.
    insta::assert_snapshot!("bench_json", schema(&json));
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

/// Every key path with the JSON types seen there, one per line (as the
/// CLI's golden tests). The host probe's optional fields (no
/// `/proc/loadavg` or schedstats on some hosts) and ratios that may be NaN
/// (serialised as null) are listed with both types, whatever this host gave.
fn schema(v: &serde_json::Value) -> String {
    let mut paths = BTreeMap::new();
    walk(v, String::new(), &mut paths);
    for (p, kinds) in paths.iter_mut() {
        let optional = p.ends_with(".loadavg")
            || p.ends_with(".runnable")
            || p.ends_with(".runqueue_wait")
            || p.ends_with(".err_1cpu")
            || p.ends_with(".err_2cpu")
            || p.ends_with(".err_2cpu_host")
            || p.ends_with(".scaling")
            || p.ends_with(".default_run_s");
        if optional {
            kinds.insert("null");
        }
    }
    paths
        .into_iter()
        .filter(|(p, _)| !p.contains(".loadavg[]") && !p.contains(".runnable[]"))
        .map(|(p, kinds)| {
            let p = if p.is_empty() { ".".to_string() } else { p };
            format!("{p}: {}", kinds.into_iter().collect::<Vec<_>>().join("|"))
        })
        .collect::<Vec<_>>()
        .join("\n")
}
