//! `pgdcache bench`: argument handling (the suite itself is tested in
//! `crates/bench`; a full run takes most of a minute).

use std::process::Command;

#[test]
fn bench_rejects_a_plot_file_that_is_not_svg() {
    let out = Command::new(env!("CARGO_BIN_EXE_pgdcache"))
        .args(["bench", "--plot", "chart.png"])
        .output()
        .expect("run pgdcache");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("chart.png") && err.contains(".svg"), "{err}");
}

#[test]
fn bench_help_lists_its_flags() {
    let out = Command::new(env!("CARGO_BIN_EXE_pgdcache"))
        .args(["bench", "--help"])
        .output()
        .expect("run pgdcache");
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--full",
        "--json",
        "--markdown",
        "--plot",
        "--no-default-run",
        "--color",
    ] {
        assert!(help.contains(flag), "{flag} missing from:\n{help}");
    }
}

#[test]
fn bench_json_and_markdown_exclude_each_other() {
    let out = Command::new(env!("CARGO_BIN_EXE_pgdcache"))
        .args(["bench", "--json", "--markdown"])
        .output()
        .expect("run pgdcache");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--markdown"), "{err}");
}
