//! The tables of a [`Report`]: what `pgdcache bench` prints and
//! docs/PERFORMANCE.md pastes.
//!
//! The suite hands out its tables as data ([`Table`]: title, header, rows of
//! cells, which column holds verdicts), so a renderer chooses the form —
//! the `pgdcache` command draws aligned terminal tables or Markdown, with
//! coloured verdicts on a terminal — and [`markdown`] renders plain
//! Markdown for the examples and tests. Every paired ratio is printed with
//! its inter-quartile range (`13.2x [12.1–14.0]`), every timing with the
//! rounds it took (adaptive: see [`benchstats::adaptive`]).

use crate::suite::Report;
use crate::vtime;
use std::fmt::Write;

/// One table of the report.
#[derive(Clone, Debug, PartialEq)]
pub struct Table {
    /// Its heading.
    pub title: String,
    /// Column names.
    pub header: Vec<String>,
    /// Cells, row by row (as many as the header).
    pub rows: Vec<Vec<String>>,
    /// The column holding a verdict (`met`, `not met`, `noisy, not
    /// decided`, `correct`, …), if any.
    pub verdict_column: Option<usize>,
}

fn us(ns: f64) -> String {
    if ns >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.2} µs", ns / 1e3)
    } else {
        format!("{ns:.1} ns")
    }
}

fn pct(e: Option<f64>) -> String {
    e.map_or("-".into(), |e| format!("{:+.0}%", e * 100.0))
}

/// A paired ratio with its inter-quartile range: `13.2x [12.1–14.0]`.
fn ratio_cell(median: f64, (q1, q3): (f64, f64), p: usize, unit: &str) -> String {
    format!("{median:.p$}{unit} [{q1:.p$}–{q3:.p$}]")
}

fn strings<const N: usize>(v: [&str; N]) -> Vec<String> {
    v.iter().map(|s| (*s).to_string()).collect()
}

/// The rounds the micro-measurements took: `7` or `7–45`.
fn rounds_range(r: &Report) -> String {
    let all = r
        .alloc
        .iter()
        .map(|a| a.ns.rounds)
        .chain(r.fork.iter().flat_map(|f| [f.small.rounds, f.large.rounds]))
        .chain(r.cpa.iter().map(|c| c.pgd_list.rounds))
        .chain(r.alloc32.iter().map(|a| a.ns.rounds));
    let (lo, hi) = all.fold((usize::MAX, 0), |(lo, hi), n| (lo.min(n), hi.max(n)));
    match (lo, hi) {
        (usize::MAX, _) => "0".into(),
        (lo, hi) if lo == hi => lo.to_string(),
        (lo, hi) => format!("{lo}–{hi}"),
    }
}

/// The lines above the tables: the host before and after, the rounds, how
/// to read a ratio and a verdict.
pub fn preamble(r: &Report) -> Vec<String> {
    let h = &r.host;
    let mut v = vec![
        format!(
            "host: {} CPUs · suite wall time {:.1} s",
            h.before.cpus, r.wall_s
        ),
        format!("host before: {}", h.before.summary()),
        format!("host after:  {}", h.after.summary()),
    ];
    if h.busy {
        v.push(
            "BUSY HOST: another load took CPU time during this run; every ratio is paired per round, \
             and a target whose inter-quartile range straddles its goal says \"noisy, not decided\""
                .into(),
        );
    }
    v.push(format!(
        "Times: this thread's CPU time per operation (CLOCK_THREAD_CPUTIME_ID: time another task ran on \
         our CPU is not counted), median (fastest) of {} interleaved rounds (at least {}, more until each \
         paired ratio's inter-quartile range is within {:.0}% of its median, at most {}). Ratios: median \
         [inter-quartile range] of the per-round ratios (paired by round). A target is met or not met only \
         when its whole inter-quartile range says so.",
        rounds_range(r),
        r.settings.rounds,
        r.settings.narrow_iqr * 100.0,
        r.settings.max_rounds
    ));
    v.push(
        "Configuration: the kernel's production one: freed-frame poisoning off (CONFIG_PAGE_POISONING=n; \
         `pgdcache check`, the stress tests and the checker's runs keep it on), and pgd_alloc/pgd_free \
         as the thread acting as CPU 0, through its per-CPU slots (Kernel::claim_cpu; where the pgds' \
         shape has a type, Kernel::claim_whole_cpu or claim_pae_cpu, the shape fixed as a kernel built \
         for one paging mode has it), the pgd held as an OwnedPgd (mm->pgd: its free needs \
         no lookup)."
            .into(),
    );
    v
}

fn alloc_table(r: &Report) -> Table {
    let mut rows = Vec::new();
    for (m, t) in &r.freelist {
        rows.push(vec![
            m.name().to_string(),
            "bare freelist (Vec pop+push)".into(),
            format!("{:.1} ({:.1})", t.median_ns, t.min_ns),
            t.rounds.to_string(),
            "-".into(),
            "1.00".into(),
        ]);
    }
    for f in &r.alloc_floor {
        rows.push(vec![
            f.mode.name().to_string(),
            format!("floor: the object cache alone ({} object(s))", f.pairs),
            format!("{:.1} ({:.1})", f.ns.median_ns, f.ns.min_ns),
            f.ns.rounds.to_string(),
            ratio_cell(f.vs_uncached, f.vs_uncached_iqr, 1, "x"),
            ratio_cell(f.vs_freelist, f.vs_freelist_iqr, 1, ""),
        ]);
    }
    for a in &r.alloc {
        rows.push(vec![
            a.mode.name().to_string(),
            a.scheme.to_string(),
            format!("{:.1} ({:.1})", a.ns.median_ns, a.ns.min_ns),
            a.ns.rounds.to_string(),
            ratio_cell(a.vs_uncached, a.vs_uncached_iqr, 1, "x"),
            ratio_cell(a.vs_freelist, a.vs_freelist_iqr, 1, ""),
        ]);
    }
    Table {
        title: "pgd_alloc + pgd_free, warm cache, one CPU".into(),
        header: strings([
            "mode",
            "scheme",
            "ns/pair (median, min)",
            "rounds",
            "vs uncached",
            "× bare freelist",
        ]),
        rows,
        verdict_column: None,
    }
}

fn fork_table(r: &Report) -> Table {
    let mut rows: Vec<Vec<String>> = Vec::new();
    for (i, f) in r.fork.iter().enumerate() {
        rows.push(vec![
            f.mode.name().to_string(),
            f.scheme.to_string(),
            us(f.small.median_ns),
            ratio_cell(f.small_vs_uncached, f.small_vs_uncached_iqr, 2, "x"),
            us(f.large.median_ns),
            ratio_cell(f.large_vs_uncached, f.large_vs_uncached_iqr, 3, "x"),
            format!("{} / {}", f.small.rounds, f.large.rounds),
        ]);
        // After a mode's schemes, its limit: the same fork + exit with a
        // free pgd (small task only).
        let last_of_mode = r.fork.get(i + 1).is_none_or(|n| n.mode != f.mode);
        if let Some(l) = r
            .fork_limit
            .iter()
            .find(|l| l.mode == f.mode && last_of_mode)
        {
            rows.push(vec![
                l.mode.name().to_string(),
                "limit: free pgd".into(),
                us(l.small.median_ns),
                ratio_cell(l.small_vs_uncached, l.small_vs_uncached_iqr, 2, "x"),
                "-".into(),
                "-".into(),
                format!("{} / -", l.small.rounds),
            ]);
        }
    }
    Table {
        title: format!(
            "fork + exit (small: {} pages, large: {} pages = {} MiB), one CPU",
            r.settings.task_pages.0,
            r.settings.task_pages.1,
            r.settings.task_pages.1 * 4 / 1024
        ),
        header: strings([
            "mode",
            "scheme",
            "small",
            "vs uncached",
            "large",
            "vs uncached",
            "rounds",
        ]),
        rows,
        verdict_column: None,
    }
}

fn cpa_table(r: &Report) -> Table {
    let rows = r
        .cpa
        .iter()
        .map(|c| {
            vec![
                c.pgds.to_string(),
                c.live.to_string(),
                us(c.pgd_list.median_ns),
                us(c.ticket.median_ns),
                ratio_cell(c.ratio, c.ratio_iqr, 1, "x"),
                us(c.ticket_refresh_ns),
                c.pgd_list.rounds.to_string(),
            ]
        })
        .collect();
    Table {
        title: "change_page_attr split + flush + revert + flush, 2-level".into(),
        header: strings([
            "pgds",
            "live",
            "slab-pgd-list",
            "slab-ticket",
            "pgd-list / ticket",
            "ticket: later join of a stale pgd",
            "rounds",
        ]),
        rows,
        verdict_column: None,
    }
}

fn alloc32_table(r: &Report) -> Table {
    let rows = r
        .alloc32
        .iter()
        .map(|a| {
            vec![
                a.what.clone(),
                format!("{:.1} ({:.1})", a.ns.median_ns, a.ns.min_ns),
                format!("{:.1} ({:.1})", a.malloc_ns.median_ns, a.malloc_ns.min_ns),
                format!("{:.2}", a.vs_malloc),
                a.ns.rounds.to_string(),
            ]
        })
        .collect();
    Table {
        title: "objcache vs glibc malloc: 32-byte alloc + free pair, one CPU".into(),
        header: strings([
            "objcache entry point",
            "ns/pair (median, min)",
            "malloc ns/pair",
            "malloc / objcache",
            "rounds",
        ]),
        rows,
        verdict_column: None,
    }
}

fn smp_table(r: &Report) -> Table {
    let l = |x: &pgdcache::LockStats| {
        format!(
            "{} / {} / {}",
            x.acquisitions,
            x.contended,
            us(x.hold_ns as f64 / x.acquisitions.max(1) as f64)
        )
    };
    let rows = r
        .smp
        .iter()
        .map(|s| {
            vec![
                s.mode.name().to_string(),
                s.scheme.to_string(),
                s.lock.to_string(),
                s.cpus.to_string(),
                format!("{:.0}", s.tasks_per_s),
                s.scaling.map_or("-".into(), |x| format!("{x:.2}x")),
                l(&s.pgd_lock),
                l(&s.mmlist_lock),
                s.verdict.to_string(),
            ]
        })
        .collect();
    Table {
        title: "SMP: script workload, real threads (live checks off)".into(),
        header: strings([
            "mode",
            "scheme",
            "lock",
            "CPUs",
            "tasks/s",
            "2/1 CPU",
            "pgd_lock acq / contended / hold",
            "mmlist_lock acq / contended / hold",
            "verdict",
        ]),
        rows,
        verdict_column: Some(8),
    }
}

fn vtime_table(r: &Report) -> Table {
    let cpus = &r.settings.vtime_cpus;
    let mut header = strings([
        "mode",
        "scheme",
        "lock",
        "err 1 CPU",
        "err 2 CPUs",
        "host 2-thread speed-up",
        "err 2 CPUs, host-corrected",
    ]);
    header.extend(cpus.iter().map(|c| c.to_string()));
    header.push(format!(
        "busiest lock at {}",
        cpus.last().copied().unwrap_or(0)
    ));
    let rows = r
        .vtime
        .iter()
        .map(|v| {
            let c = &v.cal;
            let mut row = vec![
                c.mode.map_or("-", |m| m.name()).to_string(),
                c.scheme.map_or("-", |s| s.name()).to_string(),
                c.lock.map_or("-", |l| l.name()).to_string(),
                pct(v.err_1cpu),
                pct(v.err_2cpu),
                format!("{:.2}x", v.host_speedup_2),
                pct(v.err_2cpu_host),
            ];
            row.extend(v.projected.iter().map(|p| format!("{:.0}", p.tasks_per_s)));
            let busiest = v.projected.last().and_then(|p| {
                (0..3)
                    .max_by(|&a, &b| p.locks[a].hold_ns.total_cmp(&p.locks[b].hold_ns))
                    .map(|i| {
                        let l = p.locks[i];
                        format!(
                            "{} {:.0}% occupied, {:.0}% of acq. waited",
                            vtime::LOCK_NAMES[i],
                            100.0 * l.hold_ns / p.makespan_ns.max(1.0),
                            100.0 * l.contended as f64 / l.acquisitions.max(1) as f64
                        )
                    })
            });
            row.push(busiest.unwrap_or_default());
            row
        })
        .collect();
    Table {
        title: "Virtual-time projection (tasks/s), validated against the real runs".into(),
        header,
        rows,
        verdict_column: None,
    }
}

fn calibration_table(r: &Report) -> Table {
    let rows = r
        .vtime
        .iter()
        .map(|v| {
            let c = &v.cal;
            vec![
                c.mode.map_or("-", |m| m.name()).to_string(),
                c.scheme.map_or("-", |s| s.name()).to_string(),
                c.lock.map_or("-", |l| l.name()).to_string(),
                us(c.task_ns),
                format!("{:.1} × {}", c.acq_per_task[0], us(c.hold_ns[0])),
                format!("{:.2} × {}", c.acq_per_task[1], us(c.hold_ns[1])),
                format!("{:.3} × {}", c.acq_per_task[2], us(c.hold_ns[2])),
                us(c.alloc_hit_ns),
                us(c.alloc_miss_ns),
                us(c.prop_per_pgd_ns),
                us(c.xfer_ns),
                us(c.wake_ns),
            ]
        })
        .collect();
    Table {
        title: "Calibration (per-operation costs measured on this machine)".into(),
        header: strings([
            "mode",
            "scheme",
            "lock",
            "task",
            "zone acq/task × hold",
            "mmlist acq/task × hold",
            "pgd_lock acq/task × hold",
            "alloc hit",
            "alloc miss",
            "prop/pgd",
            "xfer",
            "mutex wake",
        ]),
        rows,
        verdict_column: None,
    }
}

/// The targets table: target, goal, measured (median \[IQR\] per subject),
/// verdict.
pub fn targets_table(r: &Report) -> Table {
    Table {
        title: "Targets".into(),
        header: strings(["target", "goal", "measured", "verdict"]),
        rows: r
            .targets
            .iter()
            .map(|t| {
                vec![
                    t.name.clone(),
                    t.goal.clone(),
                    t.measured.clone(),
                    t.verdict.to_string(),
                ]
            })
            .collect(),
        verdict_column: Some(3),
    }
}

/// Every table of the report, in print order (the targets last).
pub fn tables(r: &Report) -> Vec<Table> {
    vec![
        alloc_table(r),
        fork_table(r),
        cpa_table(r),
        alloc32_table(r),
        smp_table(r),
        vtime_table(r),
        calibration_table(r),
        targets_table(r),
    ]
}

/// The lines below the tables (the default run's wall time).
pub fn epilogue(r: &Report) -> Vec<String> {
    r.default_run_s
        .map(|s| format!("default `pgdcache` run (compare): {s:.1} s"))
        .into_iter()
        .collect()
}

fn md_row(o: &mut String, cells: &[String]) {
    let _ = writeln!(o, "| {} |", cells.join(" | "));
}

/// The report as plain Markdown (the examples; the `pgdcache` command
/// draws its own tables from [`tables`]).
pub fn markdown(r: &Report) -> String {
    let mut o = String::new();
    for l in preamble(r) {
        let _ = writeln!(o, "{l}\n");
    }
    for t in tables(r) {
        let _ = writeln!(o, "### {}\n", t.title);
        md_row(&mut o, &t.header);
        let _ = writeln!(o, "|{}", "---|".repeat(t.header.len()));
        for row in &t.rows {
            md_row(&mut o, row);
        }
        o.push('\n');
    }
    for l in epilogue(r) {
        let _ = writeln!(o, "{l}");
    }
    o
}
