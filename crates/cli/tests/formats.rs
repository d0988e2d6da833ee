//! The CLI prints the Linux formats the libraries pin with golden files:
//! `dump` is `x86paging::PtDump` of the booted swapper (golden files in
//! `crates/x86paging/tests/snapshots`), `slabinfo` is `objcache`'s
//! `/proc/slabinfo` 2.1 (golden files in `crates/pgdcache/tests/snapshots`).

use physmem::SimMemory;
use std::process::Command;
use x86paging::{boot, BootConfig, PagingMode, PtDump};

fn run(args: &[&str]) -> (String, String) {
    run_code(args, 0)
}

/// Runs pgdcache and checks its exit code (1: a finding, such as the bug
/// `slab-unsynced` exists to show).
fn run_code(args: &[&str], code: i32) -> (String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_pgdcache"))
        .args(args)
        .output()
        .expect("run pgdcache");
    assert_eq!(
        out.status.code(),
        Some(code),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn dump_is_the_library_ptdump() {
    for mode in PagingMode::ALL {
        let (text, _) = run(&["dump", "--mode", mode.name(), "--ram", "64M"]);
        let pm = SimMemory::new(64 << 20).unwrap();
        let ks = boot(&pm, BootConfig::new(mode)).unwrap();
        let lines = ks.ptdump(&pm, ks.pgd);
        let want = PtDump {
            mode,
            lines: &lines,
        }
        .to_string();
        assert_eq!(text, want, "{mode}");
    }
}

const HEADER: &str = "# name            <active_objs> <num_objs> <objsize> <objperslab> <pagesperslab> : tunables <limit> <batchcount> <sharedfactor> : slabdata <active_slabs> <num_slabs> <sharedavail>";

#[test]
fn slabinfo_is_linux_2_1_and_extras_need_a_flag() {
    let (plain, _) = run(&["slabinfo", "--ops", "200"]);
    let mut lines = plain.lines();
    assert_eq!(lines.next(), Some("slabinfo - version: 2.1"));
    assert_eq!(lines.next(), Some(HEADER));
    for l in lines {
        // name, 6 numbers, `: tunables` 3, `: slabdata` 3: nothing else.
        let f: Vec<&str> = l.split_whitespace().collect();
        assert_eq!(f.len(), 16, "{l}");
        assert_eq!(
            (f[6], f[7], f[11], f[12]),
            (":", "tunables", ":", "slabdata")
        );
    }
    let (stats, _) = run(&["slabinfo", "--ops", "200", "--stats"]);
    assert!(stats.starts_with("slabinfo - version: 2.1 (statistics)\n"));
    assert!(stats.contains(" : globalstat ") && stats.contains(" : cpustat "));
    assert!(!stats.contains("ctorstat") && !stats.contains("resizestat"));
    let (extra, _) = run(&["slabinfo", "--ops", "200", "--stats", "--extra"]);
    assert!(extra.contains(" : ctorstat ") && extra.contains(" : resizestat "));
    // A scheme without a pgd cache says so on stderr; stdout stays a
    // valid (empty) slabinfo.
    let (none, err) = run(&[
        "slabinfo", "--ops", "50", "--scheme", "uncached", "--mode", "2level",
    ]);
    assert!(err.contains("keeps no pgd cache"), "{err}");
    assert!(none.starts_with("slabinfo - version: 2.1\n"), "{none}");
}

#[test]
fn run_plot_draws_the_timeline() {
    let dir = std::env::temp_dir().join(format!("pgdcache-plot-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let svg = dir.join("run.svg");
    // slab-unsynced is caught: a finding, exit 1 (the exit-code contract).
    let (text, _) = run_code(
        &[
            "run",
            "--mode",
            "2level",
            "--scheme",
            "slab-unsynced",
            "--workload",
            "xrestart",
            "--ops",
            "3000",
            "--plot",
            svg.to_str().unwrap(),
        ],
        1,
    );
    assert!(text.contains("verdict"), "{text}");
    let s = std::fs::read_to_string(&svg).unwrap();
    assert!(s.starts_with("<svg"), "{}", &s[..s.len().min(200)]);
    for label in [
        "pgds live",
        "pgds cached",
        "conversion",
        "stale or dangling",
    ] {
        assert!(s.contains(label), "{label}");
    }
    // Without --plot nothing is sampled and --json has no timeline.
    let (json, _) = run(&["run", "--ops", "200", "--json"]);
    assert!(!json.contains("\"timeline\""));
    let out = Command::new(env!("CARGO_BIN_EXE_pgdcache"))
        .args(["run", "--ops", "10", "--plot", "x.png"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let _ = std::fs::remove_dir_all(&dir);
}
