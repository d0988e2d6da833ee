//! `pgdcache run`: one configuration of the simulator, with every metric of
//! the run report (text or `--json`), and a progress bar on stderr for runs
//! that last more than a second when stderr is a terminal. `--plot FILE.svg`
//! samples the run every 2 ms and draws its timeline: conversions, live and
//! cached pgds, stale entries found.

use crate::error::CliError;
use crate::out::out;
use crate::settings::{RunFlags, SimFlags};
use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use sim::RunReport;
use std::sync::Mutex;
use std::time::Instant;

/// Arguments of `run`.
#[derive(Args, Debug, Default)]
pub struct RunArgs {
    #[command(flatten)]
    /// Shared settings.
    pub sim: SimFlags,
    #[command(flatten)]
    /// Run settings.
    pub run: RunFlags,
    /// Draw the run's timeline (conversions, live and cached pgds, stale
    /// entries found) as an SVG file.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<std::path::PathBuf>,
}

/// Runs `run`.
pub fn run(a: &RunArgs) -> Result<(), CliError> {
    let cfg = a.run.config(&a.sim)?;
    if let Some(p) = &a.plot {
        if p.extension().and_then(|e| e.to_str()) != Some("svg") {
            return Err(CliError::Usage(format!(
                "bad plot file '{}': expected a path ending in .svg",
                p.display()
            )));
        }
    }
    let tty = crate::progress::wanted(a.sim.json);
    let start = Instant::now();
    let bar: Mutex<Option<ProgressBar>> = Mutex::new(None);
    let progress = |done: u64, total: u64| {
        if !tty || start.elapsed().as_secs_f64() < 1.0 {
            return;
        }
        let Ok(mut slot) = bar.lock() else { return };
        let b = slot.get_or_insert_with(|| {
            let b = if total == u64::MAX {
                ProgressBar::new_spinner()
            } else {
                ProgressBar::new(total)
            };
            b.set_draw_target(ProgressDrawTarget::stderr());
            if let Ok(s) = ProgressStyle::with_template("{spinner} {bar:30} {pos}/{len} {msg}") {
                b.set_style(s);
            }
            b
        });
        let secs = start.elapsed().as_secs_f64();
        b.set_message(format!("tasks, {:.0}/s", done as f64 / secs.max(1e-9)));
        b.set_position(done);
    };
    let every = a.plot.as_ref().map(|_| std::time::Duration::from_millis(2));
    let r = sim::run_with_timeline(&cfg, Some(&progress), every).map_err(CliError::from);
    if let Ok(mut slot) = bar.lock() {
        if let Some(b) = slot.take() {
            b.finish_and_clear();
        }
    }
    let r = r?;
    if let Some(p) = &a.plot {
        plot(p, &r).map_err(|e| CliError::Run(format!("cannot write {}: {e}", p.display())))?;
    }
    if a.sim.json {
        crate::out::json(&r)?;
    } else {
        out!("{}", text(&r))?;
    }
    findings(&r)
}

/// The exit status a run report earns: a failed run, a run that completed
/// no task (nothing was checked), a violation or a leaked frame is exit 1.
pub fn findings(r: &RunReport) -> Result<(), CliError> {
    let f = &r.final_check;
    let leaked = f.leaked_frames;
    if let Some(fail) = &r.failure {
        return Err(CliError::Run(format!(
            "the run stopped early: {fail}; every task was unwound and the checker ran: \
             {} violations, {leaked} frames leaked",
            f.total()
        )));
    }
    if r.tasks == 0 {
        return Err(CliError::Finding(format!(
            "the run completed 0 tasks in {:.3}s: nothing was checked (give a longer --duration or --ops)",
            r.wall_s
        )));
    }
    let violations = r.live_violations.total() + f.total();
    if violations > 0 || leaked > 0 || !r.verdict.is_correct() {
        return Err(CliError::Finding(format!(
            "verdict {}: {violations} violations, {leaked} frames leaked",
            r.verdict.short()
        )));
    }
    Ok(())
}

fn us(ns: u64) -> String {
    format!("{:.2}µs", ns as f64 / 1000.0)
}

fn text(r: &RunReport) -> String {
    use std::fmt::Write;
    let c = &r.config;
    let mut o = String::new();
    let _ = writeln!(
        o,
        "{} {} lock {} · {} CPUs · workload {} · {} pages/task · cpa {} · {} MiB · seed {}",
        c.mode,
        c.scheme,
        c.lock,
        c.cpus,
        c.workload,
        c.task_size().pages(),
        c.cpa_rate,
        c.ram >> 20,
        c.seed
    );
    let _ = writeln!(o, "verdict          {}", r.verdict.short());
    if let Some(fail) = &r.failure {
        let _ = writeln!(
            o,
            "failed           {fail} (the run unwound; the checks below ran after it)"
        );
    }
    let _ = writeln!(
        o,
        "tasks            {} in {:.2}s = {:.0} tasks/s",
        r.tasks, r.wall_s, r.tasks_per_s
    );
    for (name, l) in [
        ("fork", &r.fork),
        ("exec", &r.exec),
        ("exit", &r.exit),
        ("pgd_alloc", &r.pgd_alloc),
        ("pgd_free", &r.pgd_free),
    ] {
        let _ = writeln!(
            o,
            "{name:<16} p50 {:>10} p99 {:>10} max {:>10} (n={})",
            us(l.p50_ns),
            us(l.p99_ns),
            us(l.max_ns),
            l.count
        );
    }
    let k = &r.kernel;
    let _ = writeln!(
        o,
        "pgd_alloc share  {:.1}% of fork (mean sampled pgd_alloc / mean fork)",
        r.pgd_alloc_share_of_fork * 100.0
    );
    let _ = writeln!(o, "bytes/alloc      {:.1}", r.bytes_per_alloc);
    let _ = writeln!(
        o,
        "ctor/dtor        pgd_ctor {} pgd_dtor {} pmd_ctor {} ticket refreshes {}",
        k.pgd_ctors, k.pgd_dtors, k.pmd_ctors, k.ticket_refreshes
    );
    for (name, l) in [("pgd_lock", &k.pgd_lock), ("mmlist_lock", &k.mmlist_lock)] {
        let _ = writeln!(
            o,
            "{name:<16} {} acquisitions, {} contended, held {} total, {} max",
            l.acquisitions,
            l.contended,
            us(l.hold_ns),
            us(l.max_hold_ns)
        );
    }
    let _ = writeln!(
        o,
        "conversions      {} (cpa toggles {}), {} entries propagated in {}",
        k.conversions,
        r.cpa_toggles,
        k.propagated_entries,
        us(k.propagation_ns)
    );
    let _ = writeln!(
        o,
        "vmalloc          {} agent ops, {} lazy faults; flush IPIs {}",
        r.vmalloc_ops, k.vmalloc_faults, r.flush_ipis
    );
    let _ = writeln!(
        o,
        "accesses         {} checked ({} TLB hits)",
        r.accesses, r.tlb_hits
    );
    let z = &r.zone;
    let _ = writeln!(
        o,
        "zone->lock       {} acquisitions ({:.1} per task); CPU page lists of {}..{} frames: {} refills, {} trims",
        z.zone_locks,
        z.zone_locks as f64 / r.tasks.max(1) as f64,
        z.pcp_batch,
        z.pcp_high,
        z.refills,
        z.trims
    );
    let v = &r.live_violations;
    let _ = writeln!(
        o,
        "live violations  stale {} dangling {} fault {}",
        v.stale, v.dangling, v.fault
    );
    let f = &r.final_check;
    let _ = writeln!(
        o,
        "final check      {} cached pgds, {} live; stale {} dangling {} not-constructed {} leak {} vmalloc-unmapped {} use-after-free {}",
        f.cached_pgds,
        f.live_pgds,
        f.violations.stale,
        f.violations.dangling,
        f.violations.not_constructed,
        f.violations.leak,
        f.violations.vmalloc_unmapped,
        f.violations.use_after_free
    );
    if let Some(c) = &f.closing_cpa {
        let v = &c.violations;
        let _ = writeln!(
            o,
            "closing cpa      {} cached pgds, split + merge; stale {} dangling {} not-constructed {} leak {}",
            c.cached_pgds, v.stale, v.dangling, v.not_constructed, v.leak
        );
    }
    let _ = writeln!(
        o,
        "frames           {} in use at the end, {} leaked",
        f.frames_used, f.leaked_frames
    );
    for s in &r.slab {
        let _ = writeln!(
            o,
            "slab {:<11} {} objs in {} slabs, {} active, {} cpu-cached",
            s.name, s.num_objs, s.num_slabs, s.active_objs, s.cpu_cached
        );
    }
    for l in r.first_live.iter().chain(f.first.iter()) {
        let _ = writeln!(o, "  {l}");
    }
    o
}

/// The run's timeline, two panels on one time axis. Top: pgds live and
/// cached, with every conversion (a large-page split or revert) as a
/// vertical line; where a line crosses cached pgds is the seed's window, in
/// which a scheme that does not fix cached pgds up leaves them stale.
/// Bottom: stale or dangling kernel entries the CPUs have found so far.
fn plot(path: &std::path::Path, r: &RunReport) -> Result<(), Box<dyn std::error::Error>> {
    use plotters::prelude::*;
    let tl = &r.timeline;
    let c = &r.config;
    let root = SVGBackend::new(path, (1000, 600)).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(
        &format!(
            "pgdcache run: {} {} · {} · {} CPUs · {} tasks · verdict: {}",
            c.mode,
            c.scheme,
            c.workload.name(),
            c.cpus,
            r.tasks,
            r.verdict.short()
        ),
        ("sans-serif", 18),
    )?;
    let (top, bottom) = root.split_vertically(380);
    let ms = |s: &sim::TimelineSample| s.t_s * 1e3;
    let t_max = tl.last().map_or(1.0, ms).max(1e-3);
    let pgds = tl
        .iter()
        .map(|s| s.pgds_live.max(s.pgds_cached))
        .max()
        .unwrap_or(1)
        .max(1) as f64
        * 1.2;
    let stale = tl.iter().map(|s| s.stale_found).max().unwrap_or(0).max(1) as f64 * 1.15;
    let conversions: Vec<f64> = tl
        .windows(2)
        .filter(|w| w[1].conversions > w[0].conversions)
        .map(|w| ms(&w[1]))
        .collect();
    let blue = RGBColor(40, 90, 200);
    let green = RGBColor(30, 150, 70);
    let orange = RGBColor(230, 140, 0);

    let mut up = ChartBuilder::on(&top)
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..t_max, 0f64..pgds)?;
    up.configure_mesh().y_desc("pgds").draw()?;
    up.draw_series(
        conversions
            .iter()
            .map(|&t| PathElement::new(vec![(t, 0.0), (t, pgds)], orange.mix(0.8))),
    )?
    .label(format!(
        "conversion (split or revert of a large page; {} in the run)",
        tl.last().map_or(0, |s| s.conversions)
    ))
    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], orange));
    let series = |f: fn(&sim::TimelineSample) -> f64| -> Vec<(f64, f64)> {
        tl.iter().map(|s| (ms(s), f(s))).collect()
    };
    up.draw_series(LineSeries::new(
        series(|s| s.pgds_live as f64),
        blue.stroke_width(2),
    ))?
    .label("pgds live")
    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], blue));
    up.draw_series(LineSeries::new(
        series(|s| s.pgds_cached as f64),
        green.stroke_width(2),
    ))?
    .label("pgds cached (constructed, unused)")
    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], green));
    up.configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.3))
        .draw()?;

    let mut down = ChartBuilder::on(&bottom)
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..t_max, 0f64..stale)?;
    down.configure_mesh()
        .x_desc("time since the CPUs started (ms)")
        .y_desc("entries")
        .draw()?;
    down.draw_series(LineSeries::new(
        series(|s| s.stale_found as f64),
        RED.stroke_width(2),
    ))?
    .label("stale or dangling kernel entries found by the CPUs so far")
    .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED));
    down.configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.3))
        .draw()?;
    root.present()?;
    Ok(())
}
