//! `pgdcache compare` (also what `pgdcache` with no arguments runs): every
//! scheme × {2level, pae} on one workload, side by side, with the verdict of
//! the live and final checks, bytes blitted per `pgd_alloc`, and the
//! speed-up over `uncached` in the same mode. Verdicts come from runs with
//! freed-frame poisoning on, timings from separate runs with it off (see
//! `sim::compare`); the output says so (a line of the table, and each JSON
//! row's `poisoning` and `timing`). `--plot` draws tasks/s per
//! row as an SVG bar chart (green: correct, red: caught, grey: n/a).

use crate::args::check_output_file;
use crate::check::{expect, Expect};
use crate::error::CliError;
use crate::out::{out, outln};
use crate::settings::{compare_lists, FileConfig, SimFlags, Sub};
use crate::table::{render, Form};
use clap::Args;
use sim::compare::CompareRow;
use sim::{CompareSpec, Verdict, Workload};
use std::path::PathBuf;

/// Arguments of `compare`.
#[derive(Args, Debug, Default)]
pub struct CompareArgs {
    #[command(flatten)]
    /// Shared settings.
    pub sim: SimFlags,
    /// Write an SVG bar chart of tasks/s to FILE.svg (checked before the runs start).
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
}

/// The spec `compare` runs, from flags, file and defaults.
pub fn spec(a: &CompareArgs) -> Result<CompareSpec, CliError> {
    let (_, file) = a.sim.merge(Sub::Compare, Workload::Script)?;
    spec_with(a, &file)
}

/// The spec from flags and a parsed config file.
pub fn spec_with(a: &CompareArgs, file: &FileConfig) -> Result<CompareSpec, CliError> {
    let m = a.sim.merge_file(file, Workload::Script)?;
    let mut spec = CompareSpec {
        workload: m.workload,
        lock: m.lock,
        cpus: m.cpus,
        ops: m.ops,
        task_pages: m.task_pages,
        seed: m.seed,
        ram: m.ram,
        cpa_rate: m.cpa_rate,
        ..CompareSpec::default()
    };
    let (modes, schemes) = compare_lists(file)?;
    if let Some(ms) = modes {
        spec.modes = ms;
    }
    if let Some(ss) = schemes {
        spec.schemes = ss;
    }
    spec.validate().map_err(|e| match e {
        sim::SimError::BadValue {
            what: what @ ("modes" | "schemes"),
            value,
            allowed,
        } => CliError::Usage(format!(
            "config key '{what}': bad value {value}: expected {allowed}"
        )),
        other => CliError::from(other),
    })?;
    Ok(spec)
}

/// Why a row's verdict is not the one its scheme and mode must give, if so.
fn unexpected(r: &CompareRow) -> Option<String> {
    let what = format!("{} {}", r.mode.name(), r.scheme.name());
    if let Verdict::Error(why) = &r.verdict {
        return Some(format!("{what}: the run failed: {why}"));
    }
    if r.leaked_frames > 0 {
        return Some(format!("{what}: {} frames leaked", r.leaked_frames));
    }
    if r.report.as_ref().is_some_and(|x| x.tasks == 0) {
        return Some(format!("{what}: 0 tasks completed, nothing checked"));
    }
    let ok = match expect(r.mode, r.scheme) {
        Expect::Clean => r.verdict.is_correct(),
        // The closing conversions catch the unsynced slabification in every
        // run with a graphics agent; with --cpa-rate off nothing converts.
        Expect::Caught => r.verdict.is_caught() || r.verdict.is_correct(),
        Expect::Either => r.verdict.is_correct() || r.verdict.is_caught(),
        Expect::Impossible => matches!(r.verdict, Verdict::NotApplicable(_)),
    };
    (!ok).then(|| {
        format!(
            "{what}: expected {:?}, got {}",
            expect(r.mode, r.scheme),
            r.verdict.short()
        )
    })
}

/// Runs `compare`.
pub fn run(a: &CompareArgs) -> Result<(), CliError> {
    let spec = spec(a)?;
    if let Some(p) = &a.plot {
        check_output_file(p, "--plot", "svg")?;
    }
    let t = std::time::Instant::now();
    let pb = crate::progress::bar(
        (spec.modes.len() * spec.schemes.len()) as u64,
        "compare",
        a.sim.json,
    );
    let rows = sim::compare(&spec, |r| {
        pb.set_message(format!("{} {} done", r.mode.name(), r.scheme.name()));
        pb.inc(1);
    });
    pb.finish_and_clear();
    let rows = rows.map_err(CliError::from)?;
    if a.sim.json {
        crate::out::json(&rows)?;
    } else {
        outln!(
            "workload {} · {} CPUs · {} tasks per run · lock {} · seed {}",
            spec.workload,
            spec.cpus,
            spec.ops
                .unwrap_or_else(|| CompareSpec::default_ops(spec.workload)),
            spec.lock,
            spec.seed
        )?;
        outln!("{}", sim::compare::configuration(&spec))?;
        out!("{}", table(&rows, crate::color::stdout()))?;
        outln!("({:.1}s)", t.elapsed().as_secs_f64())?;
    }
    if let Some(p) = &a.plot {
        plot(p, &rows).map_err(|e| CliError::Run(format!("--plot {}: {e}", p.display())))?;
    }
    let bad: Vec<String> = rows.iter().filter_map(unexpected).collect();
    if bad.is_empty() {
        Ok(())
    } else {
        Err(CliError::Finding(format!(
            "{} unexpected verdicts: {}",
            bad.len(),
            bad.join("; ")
        )))
    }
}

/// The comparison as an aligned table (verdicts coloured if `color`);
/// rows without a run (n/a, errors) say why below it.
pub fn table(rows: &[CompareRow], color: bool) -> String {
    let header: Vec<String> = [
        "mode",
        "scheme",
        "verdict",
        "tasks/s",
        "B/alloc",
        "speedup",
        "alloc p50",
        "violations",
        "leaked",
    ]
    .map(String::from)
    .to_vec();
    let mut notes = Vec::new();
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let (m, s, v) = (
                r.mode.name().to_string(),
                r.scheme.name().to_string(),
                r.verdict.short(),
            );
            let (Some(_), Some(t)) = (&r.report, &r.timing) else {
                if let Verdict::NotApplicable(why) | Verdict::Error(why) = &r.verdict {
                    notes.push(format!("{m} {s}: {v}: {why}"));
                }
                let mut row = vec![m, s, v];
                row.extend(std::iter::repeat_n("-".to_string(), 6));
                return row;
            };
            vec![
                m,
                s,
                v,
                format!("{:.0}", r.tasks_per_s),
                format!("{:.0}", r.bytes_per_alloc),
                r.speedup_vs_uncached
                    .map_or("-".into(), |x| format!("{x:.2}x")),
                format!("{}ns", t.pgd_alloc.p50_ns),
                r.violations.to_string(),
                r.leaked_frames.to_string(),
            ]
        })
        .collect();
    let mut out = render(&header, &cells, Some(2), Form::Terminal, color);
    for n in notes {
        out.push_str(&n);
        out.push('\n');
    }
    out
}

fn plot(path: &PathBuf, rows: &[CompareRow]) -> Result<(), Box<dyn std::error::Error>> {
    use plotters::prelude::*;
    let root = SVGBackend::new(path, (960, 480)).into_drawing_area();
    root.fill(&WHITE)?;
    let max = rows.iter().map(|r| r.tasks_per_s).fold(1.0, f64::max) * 1.25;
    let n = rows.len().max(1);
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "pgdcache compare: tasks/s by mode and scheme",
            ("sans-serif", 20),
        )
        .margin(10)
        .x_label_area_size(10)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..n as f64, 0f64..max)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(0)
        .y_desc("tasks/s")
        .draw()?;
    chart.draw_series(rows.iter().enumerate().map(|(i, r)| {
        let color = match r.verdict {
            Verdict::Correct => GREEN.mix(0.7),
            Verdict::Caught(_) => RED.mix(0.7),
            _ => BLACK.mix(0.2),
        };
        Rectangle::new(
            [(i as f64 + 0.15, 0.0), (i as f64 + 0.85, r.tasks_per_s)],
            color.filled(),
        )
    }))?;
    // Three lines over each bar: scheme, mode, verdict.
    for (line, dy) in [(0usize, 0.10), (1, 0.065), (2, 0.03)] {
        chart.draw_series(rows.iter().enumerate().map(|(i, r)| {
            let text = match line {
                0 => r.scheme.name().to_string(),
                1 => r.mode.name().to_string(),
                _ => r.verdict.short(),
            };
            Text::new(
                text,
                (i as f64 + 0.1, r.tasks_per_s + max * dy),
                ("sans-serif", 11),
            )
        }))?;
    }
    root.present()?;
    Ok(())
}
