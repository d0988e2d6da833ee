//! `pgdcache bench`: the performance report of docs/PERFORMANCE.md.
//!
//! Runs the `pgdbench` suite — `pgd_alloc` + `pgd_free` against `uncached`
//! and a bare freelist, fork + exit of a small and a large task,
//! `change_page_attr` propagation with 10 to 10 000 pgds, the `script`
//! workload on 1 and 2 real CPU threads per scheme × lock, and the
//! virtual-time projection to 64 CPUs validated against those runs — and
//! prints the tables with their ratios and the seed's targets. Quick by
//! default (under a minute on two cores); `--full` measures longer and adds
//! PAE to the SMP sweep. `--json` prints the whole report, `--markdown` the
//! tables as Markdown for docs/PERFORMANCE.md; `--plot FILE.svg` draws the
//! projected throughput against CPUs.
//!
//! The host is probed before and after (load, the CPU share a spinning
//! thread gets), micro-measurements add rounds until their paired ratios'
//! inter-quartile ranges are narrow, and each target is met, not met, or
//! noisy, not decided (its inter-quartile range straddles the goal), or out
//! of reach (not met, and its physical limit, measured side by side, misses
//! the goal too). Exit 1 when a target is not met; noisy and out-of-reach
//! targets are named on stderr.

use crate::args::check_output_file;
use crate::error::CliError;
use crate::out::{err, out};
use crate::table::Form;
use benchstats::Decision;
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
    #[arg(long, conflicts_with = "markdown")]
    pub json: bool,
    /// Print the tables as Markdown (for docs/PERFORMANCE.md).
    #[arg(long)]
    pub markdown: bool,
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
    let pb = crate::progress::bar(pgdbench::steps(&s) as u64, "bench", a.json);
    let lines = !a.json && pb.is_hidden();
    let mut last = "";
    let r = pgdbench::run(&s, |st| {
        pb.set_position(st.done as u64);
        if st.phase != last {
            last = st.phase;
            pb.set_message(st.phase);
            if lines {
                err!("pgdcache bench: {} …", st.phase);
            }
        }
    });
    pb.finish_and_clear();
    let r = r.map_err(|e| CliError::Run(e.to_string()))?;
    if a.json {
        crate::out::json(&r)?;
    } else {
        let form = if a.markdown {
            Form::Markdown
        } else {
            Form::Terminal
        };
        out!("{}", report(&r, form, crate::color::stdout()))?;
    }
    if let Some(p) = &a.plot {
        plot(p, &r).map_err(|e| CliError::Run(format!("--plot {}: {e}", p.display())))?;
    }
    let named = |d: Decision| -> Vec<&str> {
        r.targets
            .iter()
            .filter(|t| t.verdict == d)
            .map(|t| t.name.as_str())
            .collect()
    };
    let (missed, noisy) = (named(Decision::NotMet), named(Decision::Noisy));
    let out_of_reach = named(Decision::OutOfReach);
    if !out_of_reach.is_empty() {
        err!(
            "pgdcache bench: {} of {} targets out of reach (not met, and the limit measured beside them misses the goal too): {}",
            out_of_reach.len(),
            r.targets.len(),
            out_of_reach.join("; ")
        );
    }
    if !noisy.is_empty() {
        err!(
            "pgdcache bench: {} of {} targets noisy, not decided (their inter-quartile range straddles the goal{}): {}",
            noisy.len(),
            r.targets.len(),
            if r.host.busy { "; the host was busy" } else { "" },
            noisy.join("; ")
        );
    }
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

/// The report in `form`: the host and rounds lines, every table, the
/// default run's time; verdicts coloured if `color`.
pub fn report(r: &Report, form: Form, color: bool) -> String {
    let mut o = String::new();
    for l in pgdbench::preamble(r) {
        o.push_str(&l);
        o.push_str("\n\n");
    }
    for t in pgdbench::tables(r) {
        match form {
            Form::Markdown => o.push_str(&format!("#### {}\n\n", t.title)),
            Form::Terminal => o.push_str(&format!("{}\n\n", t.title)),
        }
        o.push_str(&crate::table::render(
            &t.header,
            &t.rows,
            t.verdict_column,
            form,
            color,
        ));
        o.push('\n');
    }
    for l in pgdbench::report::epilogue(r) {
        o.push_str(&l);
        o.push('\n');
    }
    o
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
