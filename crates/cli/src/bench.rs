//! `pgdcache bench`: the performance report of docs/PERFORMANCE.md.
//!
//! Runs the `pgdbench` suite — `pgd_alloc` + `pgd_free` against `uncached`
//! and a bare freelist, fork + exit of a small and a large task,
//! `change_page_attr` propagation with 10 to 10 000 pgds, the `script`
//! workload on 1 and 2 real CPU threads per scheme × lock, and the
//! virtual-time projection to 64 CPUs validated against those runs — and
//! prints the tables with their ratios and the seed's targets. Quick by
//! default (under a minute on two cores); `--full` measures longer and adds
//! PAE to the SMP sweep. `--json` prints the whole report; `--plot FILE.svg`
//! draws the projected throughput against CPUs.

use crate::args::check_output_file;
use crate::error::CliError;
use crate::out::{err, out};
use clap::Args;
use pgdbench::{Report, Settings};
use std::path::{Path, PathBuf};

/// Arguments of `bench`.
#[derive(Args, Debug, Default)]
pub struct BenchArgs {
    /// Measure longer (more rounds, longer SMP runs, PAE in the SMP sweep).
    #[arg(long)]
    pub full: bool,
    /// Print the report as JSON instead of tables.
    #[arg(long)]
    pub json: bool,
    /// Write an SVG chart of projected tasks/s against CPUs to FILE.svg.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
    /// Skip timing the default `pgdcache` run (compare).
    #[arg(long)]
    pub no_default_run: bool,
}

/// Runs `bench`.
pub fn run(a: &BenchArgs) -> Result<(), CliError> {
    if let Some(p) = &a.plot {
        check_output_file(p, "--plot", "svg")?;
    }
    let mut s = if a.full {
        Settings::full()
    } else {
        Settings::quick()
    };
    s.time_default_run = !a.no_default_run;
    let quiet = a.json;
    let r = pgdbench::run(&s, |phase| {
        if !quiet {
            err!("pgdcache bench: {phase} …");
        }
    })
    .map_err(|e| CliError::Run(e.to_string()))?;
    if a.json {
        crate::out::json(&r)?;
    } else {
        out!("{}", pgdbench::markdown(&r))?;
    }
    if let Some(p) = &a.plot {
        plot(p, &r).map_err(|e| CliError::Run(format!("--plot {}: {e}", p.display())))?;
    }
    let missed: Vec<&str> = r
        .targets
        .iter()
        .filter(|t| !t.met)
        .map(|t| t.name.as_str())
        .collect();
    if missed.is_empty() {
        Ok(())
    } else {
        Err(CliError::Finding(format!(
            "{} of {} targets not met: {}",
            missed.len(),
            r.targets.len(),
            missed.join("; ")
        )))
    }
}

fn plot(path: &Path, r: &Report) -> Result<(), Box<dyn std::error::Error>> {
    use plotters::prelude::*;
    let root = SVGBackend::new(path, (960, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let max_cpus = r
        .settings
        .vtime_cpus
        .iter()
        .copied()
        .max()
        .unwrap_or(1)
        .max(2);
    let max_tps = r
        .vtime
        .iter()
        .flat_map(|v| v.projected.iter().map(|p| p.tasks_per_s))
        .chain(r.smp.iter().map(|s| s.tasks_per_s))
        .fold(1.0, f64::max)
        * 1.15;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "pgdcache bench: script workload, projected tasks/s (lines) and real runs (dots)",
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(80)
        .build_cartesian_2d((1f64..max_cpus as f64).log_scale(), 0f64..max_tps)?;
    chart
        .configure_mesh()
        .x_desc("simulated CPUs")
        .y_desc("tasks/s")
        .draw()?;
    for (i, v) in r.vtime.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let label = format!(
            "{} {} {}",
            v.cal.mode.map_or("-", |m| m.name()),
            v.cal.scheme.map_or("-", |s| s.name()),
            v.cal.lock.map_or("-", |l| l.name())
        );
        chart
            .draw_series(std::iter::once(PathElement::new(
                v.projected
                    .iter()
                    .map(|p| (p.cpus as f64, p.tasks_per_s))
                    .collect::<Vec<_>>(),
                color.stroke_width(2),
            )))?
            .label(label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color));
        let real = r.smp.iter().filter(|s| {
            Some(s.mode) == v.cal.mode
                && Some(s.scheme) == v.cal.scheme
                && Some(s.lock) == v.cal.lock
        });
        chart.draw_series(
            real.map(|s| Circle::new((s.cpus as f64, s.tasks_per_s), 4, color.filled())),
        )?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .label_font(("sans-serif", 11))
        .draw()?;
    root.present()?;
    Ok(())
}
