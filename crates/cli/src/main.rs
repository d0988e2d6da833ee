//! `pgdcache`: the command-line front end of pgdcache.
//!
//! One module per subcommand; [`args`] holds the value parsers shared by
//! them. With no subcommand it runs `compare` (every scheme × {2level, pae}
//! on the X-restart workload).
// No unsafe code but the one `pre_exec` of `boot` (QEMU dies with pgdcache),
// allowed there alone.
#![deny(unsafe_code)]

mod args;
mod bench;
mod boot;
mod boot_bench;
mod check;
mod compare;
mod dump;
mod error;
mod export;
mod oracle_check;
mod run;
mod settings;
mod slabinfo;
mod translate;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// Reference implementation of the Linux 2.5.69 "reslabify pgds and pmds"
/// page-table allocation design.
#[derive(Parser, Debug)]
#[command(name = "pgdcache", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Boot a kernel address space (swapper_pg_dir) in simulated RAM and
    /// print its page tables like /sys/kernel/debug/page_tables/kernel.
    Dump(dump::DumpArgs),
    /// Export the page tables of a pgd-system scenario (swapper, fork,
    /// cpa-split) as a hardware-oracle image directory.
    Export(export::ExportArgs),
    /// Walk an oracle image with our software MMU and print each address's
    /// translation or fault (exit 2 on a bad address).
    Translate(translate::TranslateArgs),
    /// Differential check of our walker against QEMU/KVM on random layouts
    /// and the pgd-system scenario tables (exit 1 on disagreement, 3 when
    /// QEMU is not installed).
    Oracle(oracle_check::OracleArgs),
    /// Compare every scheme × {2level, pae} on one workload (the default).
    Compare(compare::CompareArgs),
    /// Run one configuration of the SMP simulator and print its metrics.
    Run(run::RunArgs),
    /// Run the correctness scenarios; exit 1 if a correct scheme fails or
    /// the unsynced slabification is not caught.
    Check(check::CheckArgs),
    /// Run a short workload and print /proc/slabinfo (version 2.1).
    Slabinfo(slabinfo::SlabinfoArgs),
    /// Boot the pgd system as the memory manager of a real x86 kernel under
    /// QEMU (every paging mode × scheme by default) and print the verdicts
    /// of the real MMU and the in-kernel checker (exit 1 on a finding, 3
    /// when QEMU or the bare-metal target is missing).
    Boot(boot::BootArgs),
    /// Measure the pgd system against its baselines (pgd_alloc/free, fork,
    /// change_page_attr, SMP, virtual-time projection) and print the ratios.
    Bench(bench::BenchArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let command = cli
        .command
        .unwrap_or_else(|| Command::Compare(compare::CompareArgs::default()));
    let result = match command {
        Command::Dump(a) => dump::run(&a),
        Command::Export(a) => return export::main(&a),
        Command::Translate(a) => return translate::main(&a),
        Command::Oracle(a) => return oracle_check::main(&a),
        Command::Compare(a) => compare::run(&a),
        Command::Run(a) => run::run(&a),
        Command::Check(a) => check::run(&a),
        Command::Slabinfo(a) => slabinfo::run(&a),
        Command::Bench(a) => bench::run(&a),
        Command::Boot(a) => return boot::main(&a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pgdcache: {e}");
            let code = e
                .downcast_ref::<error::CliError>()
                .map_or(1, error::CliError::code);
            ExitCode::from(code)
        }
    }
}
