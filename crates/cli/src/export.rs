//! `pgdcache export`: drive the pgd system into one scenario (booted
//! swapper, forked child, cpa split, pgds cached across conversions) and
//! write the page tables a CPU would walk there as a hardware-oracle image
//! (`crates/oracle` format: image.json + mem-*.bin), so QEMU/KVM or
//! `pgdcache translate` can walk them. The image holds every root of the
//! state (`swapper_pg_dir` and each pgd, listed in image.json's `roots`);
//! its CR3 is the scenario's pgd.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use pgdcache::Scheme;
use pgdcache_scenarios::{Scenario, ScenarioError, ScenarioState};
use x86paging::PagingMode;

use crate::args::parse_mode;

/// Arguments of `export`.
#[derive(Args, Debug)]
pub struct ExportArgs {
    /// Which state to export: swapper, fork, cpa-split or cached-after-cpa.
    #[arg(long, value_parser = parse_scenario)]
    pub scenario: Scenario,
    /// Paging mode: 2level, pae, 4level or 5level.
    #[arg(long, value_parser = parse_mode)]
    pub mode: PagingMode,
    /// pgd allocation scheme.
    #[arg(long, value_parser = parse_scheme, default_value = "slab-pgd-list")]
    pub scheme: Scheme,
    /// Output directory (created if missing).
    #[arg(long)]
    pub out: PathBuf,
}

/// Parses a scenario name.
pub fn parse_scenario(s: &str) -> Result<Scenario, String> {
    s.parse::<Scenario>().map_err(|e| e.to_string())
}

/// Parses a scheme name.
pub fn parse_scheme(s: &str) -> Result<Scheme, String> {
    s.parse::<Scheme>().map_err(|e| e.to_string())
}

/// Runs `export`; prints errors itself. Exit 2 if the scheme cannot exist
/// in the mode, 1 on any other failure.
pub fn main(a: &ExportArgs) -> ExitCode {
    match run(a) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pgdcache export: {e}");
            let usage = matches!(
                e,
                ExportError::Scenario(ScenarioError::Kernel(
                    pgdcache::KernelError::SchemeUnsupported { .. }
                ))
            );
            ExitCode::from(if usage { 2 } else { 1 })
        }
    }
}

/// Failures of `export`.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// Building the scenario failed.
    #[error(transparent)]
    Scenario(#[from] ScenarioError),
    /// Writing the image failed.
    #[error("writing image: {0}")]
    Image(#[from] oracle::image::ImageError),
}

fn run(a: &ExportArgs) -> Result<(), ExportError> {
    let st = ScenarioState::build(a.scenario, a.mode, a.scheme)?;
    let img = st.image()?;
    img.save(&a.out)?;
    let bytes: usize = img.data.iter().map(|(_, b)| b.len()).sum();
    println!(
        "{} {} {}: cr3 {:#x}, {} table frames in {} ranges -> {}",
        a.scenario,
        a.mode,
        a.scheme,
        img.desc.cr3,
        bytes / 4096,
        img.data.len(),
        a.out.display()
    );
    for r in &img.desc.roots {
        let cr3 = if r.cr3 == img.desc.cr3 { " (cr3)" } else { "" };
        println!("  root {:#x} {}{cr3}", r.cr3, r.name);
    }
    Ok(())
}
