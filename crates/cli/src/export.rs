//! `pgdcache export`: drive the pgd system into one scenario (booted
//! swapper, forked child, cpa split, pgds cached across conversions) and
//! write the page tables a CPU would walk there as a hardware-oracle image
//! (`crates/oracle` format: image.json + mem-*.bin), so QEMU/KVM or
//! `pgdcache translate` can walk them. The image holds every root of the
//! state (`swapper_pg_dir` and each pgd, listed in image.json's `roots`);
//! its CR3 is the scenario's pgd.

use std::path::{Path, PathBuf};

use clap::Args;
use pgdcache::Scheme;
use pgdcache_scenarios::{Scenario, ScenarioError, ScenarioState};
use x86paging::PagingMode;

use crate::error::CliError;
use crate::out::outln;

/// Arguments of `export`.
#[derive(Args, Debug)]
pub struct ExportArgs {
    /// Which state to export: the booted swapper, a forked child, after a cpa
    /// split, or pgds cached across a split and a revert (cached-after-cpa).
    #[arg(long, value_parser = crate::args::scenario_parser())]
    pub scenario: Scenario,
    /// Paging mode.
    #[arg(long, value_parser = crate::args::mode_parser())]
    pub mode: PagingMode,
    /// pgd allocation scheme.
    #[arg(long, value_parser = crate::args::scheme_parser(), default_value = "slab-pgd-list")]
    pub scheme: Scheme,
    /// Output directory (created if missing). The image replaces any
    /// image already there: stale mem-*.bin files are removed.
    #[arg(long)]
    pub out: PathBuf,
    /// Print JSON (the image description and where it went) instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Parses a scenario name.
pub fn parse_scenario(s: &str) -> Result<Scenario, String> {
    s.parse::<Scenario>().map_err(|e| e.to_string())
}

/// Checks `--out` before any work: a directory, or a path where one can be
/// created.
fn check_out_dir(out: &Path) -> Result<(), CliError> {
    let usage = |why: String| CliError::Usage(format!("--out {}: {why}", out.display()));
    match std::fs::metadata(out) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(usage(
                "exists and is not a directory (export writes a directory: image.json + mem-*.bin)"
                    .into(),
            ))
        }
        Err(_) => {
            std::fs::create_dir_all(out)
                .map_err(|e| usage(format!("cannot create the directory: {e}")))?;
        }
    }
    // Writable? Create and remove a probe file.
    let probe = out.join(".pgdcache-export-probe");
    std::fs::write(&probe, b"")
        .map_err(|e| usage(format!("cannot write into the directory: {e}")))?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

/// Runs `export`.
pub fn run(a: &ExportArgs) -> Result<(), CliError> {
    if let Err(why) = a.scheme.supports(a.mode) {
        return Err(CliError::Usage(format!(
            "--scheme {} is impossible with --mode {}: {why}",
            a.scheme, a.mode
        )));
    }
    check_out_dir(&a.out)?;
    let st = ScenarioState::build(a.scenario, a.mode, a.scheme).map_err(scenario_err)?;
    let img = st.image().map_err(scenario_err)?;
    img.save(&a.out)
        .map_err(|e| CliError::Run(format!("--out {}: writing the image: {e}", a.out.display())))?;
    let bytes: usize = img.data.iter().map(|(_, b)| b.len()).sum();
    if a.json {
        crate::out::json(&serde_json::json!({
            "scenario": a.scenario.name(),
            "mode": a.mode.name(),
            "scheme": a.scheme.name(),
            "out": a.out.display().to_string(),
            "cr3": format!("{:#x}", img.desc.cr3),
            "table_frames": bytes / 4096,
            "image": img.normalized_desc(),
        }))?;
    } else {
        outln!(
            "{} {} {}: cr3 {:#x}, {} table frames in {} ranges -> {}",
            a.scenario,
            a.mode,
            a.scheme,
            img.desc.cr3,
            bytes / 4096,
            img.data.len(),
            a.out.display()
        )?;
        for r in &img.desc.roots {
            let cr3 = if r.cr3 == img.desc.cr3 { " (cr3)" } else { "" };
            outln!("  root {:#x} {}{cr3}", r.cr3, r.name)?;
        }
    }
    Ok(())
}

fn scenario_err(e: ScenarioError) -> CliError {
    match e {
        ScenarioError::Kernel(pgdcache::KernelError::SchemeUnsupported { .. }) => {
            CliError::Usage(e.to_string())
        }
        other => CliError::Run(other.to_string()),
    }
}
