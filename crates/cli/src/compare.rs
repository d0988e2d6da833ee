//! `pgdcache compare` (also what `pgdcache` with no arguments runs): every
//! scheme × {2level, pae} on one workload, side by side, with the verdict of
//! the live and final checks, bytes blitted per `pgd_alloc`, and the
//! speed-up over `uncached` in the same mode. `--plot` draws tasks/s per
//! row as an SVG bar chart (green: correct, red: caught, grey: n/a).

use crate::args::parse_mode;
use crate::error::CliError;
use crate::settings::{parse_scheme, SimFlags};
use clap::Args;
use pgdcache::Scheme;
use sim::compare::{table, CompareRow};
use sim::{CompareSpec, Verdict, Workload};
use std::path::PathBuf;
use x86paging::PagingMode;

/// Arguments of `compare`.
#[derive(Args, Debug, Default)]
pub struct CompareArgs {
    #[command(flatten)]
    /// Shared settings.
    pub sim: SimFlags,
    /// Write an SVG bar chart of tasks/s to FILE.svg.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
}

/// Runs `compare`.
pub fn run(a: &CompareArgs) -> Result<(), Box<dyn std::error::Error>> {
    let (m, file) = a.sim.merge(Workload::Script)?;
    let mut spec = CompareSpec {
        workload: m.workload,
        lock: m.lock,
        cpus: m.cpus,
        ops: m.ops,
        task_pages: m.task_pages,
        seed: m.seed,
        ..CompareSpec::default()
    };
    if let Some(ms) = &file.modes {
        spec.modes = ms
            .iter()
            .map(|s| parse_mode(s).map_err(|e| CliError::Usage(format!("config key 'modes': {e}"))))
            .collect::<Result<Vec<PagingMode>, _>>()?;
    }
    if let Some(ss) = &file.schemes {
        spec.schemes = ss
            .iter()
            .map(|s| {
                parse_scheme(s).map_err(|e| CliError::Usage(format!("config key 'schemes': {e}")))
            })
            .collect::<Result<Vec<Scheme>, _>>()?;
    }
    if let Some(p) = &a.plot {
        if p.extension().and_then(|e| e.to_str()) != Some("svg") {
            return Err(CliError::Usage(format!(
                "bad plot file '{}': expected a path ending in .svg",
                p.display()
            ))
            .into());
        }
    }
    let t = std::time::Instant::now();
    let rows = sim::compare(&spec, |_| {}).map_err(CliError::from)?;
    if a.sim.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        println!(
            "workload {} · {} CPUs · {} tasks per run · lock {} · seed {}",
            spec.workload,
            spec.cpus,
            spec.ops
                .unwrap_or_else(|| CompareSpec::default_ops(spec.workload)),
            spec.lock,
            spec.seed
        );
        print!("{}", table(&rows));
        println!("({:.1}s)", t.elapsed().as_secs_f64());
    }
    if let Some(p) = &a.plot {
        plot(p, &rows).map_err(|e| CliError::Run(format!("cannot write {}: {e}", p.display())))?;
    }
    Ok(())
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
