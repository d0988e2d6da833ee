//! End-to-end tests of the `pgdcache` binary.

use std::process::Command;

fn run(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_pgdcache"))
        .args(args)
        .output()
        .expect("run pgdcache")
}

#[test]
fn dump_every_mode() {
    for (mode, width) in [("2level", 8), ("pae", 8), ("4level", 16), ("5level", 16)] {
        let out = run(&["dump", "--mode", mode, "--ram", "64M"]);
        assert!(
            out.status.success(),
            "{mode}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(text.starts_with("---[ User Space ]---\n"), "{text}");
        for marker in ["vmalloc() area", "fixmap area"] {
            assert!(
                text.to_lowercase().contains(&format!("---[ {marker} ]---")),
                "{mode}: {text}"
            );
        }
        let ranges: Vec<&str> = text.lines().filter(|l| l.starts_with("0x")).collect();
        assert!(ranges.len() >= 3, "{mode}: {text}");
        for l in &ranges {
            let (a, rest) = l.split_once('-').unwrap();
            assert_eq!(a.len(), 2 + width, "{l}");
            assert_eq!(&rest[..2], "0x");
            assert!(
                l.ends_with("pte")
                    || l.ends_with("pmd")
                    || l.ends_with("pgd")
                    || l.ends_with("pud")
                    || l.ends_with("p4d"),
                "{l}"
            );
        }
        assert!(
            text.contains(" PSE "),
            "{mode}: direct map from large pages: {text}"
        );
    }
}

#[test]
fn json_parses() {
    for mode in ["2level", "pae", "4level", "5level"] {
        let out = run(&["dump", "--mode", mode, "--ram", "32M", "--json"]);
        assert!(out.status.success());
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["mode"], mode);
        assert_eq!(v["ram"], 32u64 << 20);
        let lines = v["lines"].as_array().unwrap();
        assert!(lines
            .iter()
            .any(|l| l["kind"] == "range" && l["pse"] == true));
        assert!(lines
            .iter()
            .any(|l| l["kind"] == "marker" && l["name"] == "User Space"));
        assert!(v["cr"]["cr3"].as_u64().unwrap() > 0);
    }
}

#[test]
fn no_arguments_runs_compare() {
    // `pgdcache` alone is `compare`; `dump` still gives the 2level dump.
    let out = run(&[]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("slab-pgd-list"), "{text}");
    assert!(text.contains("verdict"), "{text}");
    let out = run(&["dump"]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("0xc0000000-0xc4000000"), "{text}");
}

#[test]
fn bad_arguments_exit_2() {
    for (args, needle) in [
        (&["dump", "--mode", "3level"][..], "3level"),
        (&["dump", "--ram", "lots"][..], "lots"),
        (&["dump", "--ram", "8M"][..], "16M..4G"),
        (&["dump", "--ram", "8G"][..], "16M..4G"),
        (&["frobnicate"][..], "frobnicate"),
    ] {
        let out = run(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}
