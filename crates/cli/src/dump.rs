//! `pgdcache dump`: boot `swapper_pg_dir` in a fresh simulated RAM and print
//! its page tables (text like Linux's debugfs `page_tables`, or `--json`).

use crate::args::parse_ram;
use crate::error::CliError;
use crate::out::out;
use clap::Args;
use physmem::SimMemory;
use x86paging::{boot, BootConfig, PagingMode, PtDump};

/// Arguments of `dump`.
#[derive(Args, Debug)]
pub struct DumpArgs {
    /// Paging mode.
    #[arg(long, value_parser = crate::args::mode_parser(), default_value = "2level")]
    pub mode: PagingMode,
    /// Simulated RAM, 16M..4G (multiple of 4M), e.g. 64M or 1G.
    #[arg(long, value_parser = parse_ram, default_value = "64M", allow_hyphen_values = true)]
    pub ram: u64,
    /// Print JSON (mode, layout, control registers, ranges) instead of text.
    #[arg(long)]
    pub json: bool,
}

impl Default for DumpArgs {
    fn default() -> Self {
        DumpArgs {
            mode: PagingMode::TwoLevel,
            ram: 64 << 20,
            json: false,
        }
    }
}

/// Runs `dump`.
pub fn run(a: &DumpArgs) -> Result<(), CliError> {
    let pm = SimMemory::new(a.ram).map_err(|e| CliError::Usage(format!("--ram {}: {e}", a.ram)))?;
    let ks = boot(&pm, BootConfig::new(a.mode))
        .map_err(|e| CliError::Run(format!("boot failed: {e}")))?;
    let lines = ks.ptdump(&pm, ks.pgd);
    if a.json {
        let v = serde_json::json!({
            "mode": ks.mode,
            "ram": a.ram,
            "swapper_pg_dir": ks.pgd.as_u64(),
            "cr": ks.cr_values(),
            "layout": ks.layout,
            "lines": lines,
        });
        crate::out::json(&v)?;
    } else {
        out!(
            "{}",
            PtDump {
                mode: ks.mode,
                lines: &lines
            }
        )?;
    }
    Ok(())
}
