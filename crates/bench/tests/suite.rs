//! The whole suite end to end with tiny settings: every table and every
//! target is produced, ratios are finite, and the model is deterministic.

use pgdbench::{markdown, run, Settings};
use x86paging::PagingMode;

#[test]
fn tiny_suite_produces_every_table_and_target() {
    let s = Settings {
        rounds: 1,
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
    let r = run(&s, |_| {}).unwrap();
    // 2-level: 4 schemes; PAE: all 6.
    assert_eq!(r.alloc.len(), 4 + 6);
    assert!(r
        .alloc
        .iter()
        .all(|a| a.vs_uncached.is_finite() && a.vs_uncached > 0.0));
    assert_eq!(r.cpa.len(), 2);
    assert_eq!(r.smp.len(), 4 * 3 * 2);
    assert_eq!(r.vtime.len(), 4 * 3);
    assert!(r.vtime.iter().all(|v| v.projected.len() == 3));
    assert!(r.targets.len() >= 7);
    let md = markdown(&r);
    for h in [
        "pgd_alloc + pgd_free",
        "fork + exit",
        "change_page_attr",
        "SMP",
        "Virtual-time",
        "Targets",
    ] {
        assert!(md.contains(h), "{h}");
    }
    let json = serde_json::to_value(&r).unwrap();
    assert!(json["targets"].is_array());
}
