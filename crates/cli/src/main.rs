//! `pgdcache`: the command-line front end of pgdcache.
//!
//! One module per subcommand; [`args`] holds the value parsers shared by
//! them, [`out`] the fallible output every subcommand prints through, and
//! [`error`] the exit-code contract. With no subcommand it runs `compare`
//! (every scheme × {2level, pae} on the script workload).
#![forbid(unsafe_code)]

mod args;
mod bench;
mod boot;
mod boot_bench;
mod boot_table;
mod check;
mod color;
mod compare;
mod completions;
mod dump;
mod error;
mod export;
#[cfg(test)]
mod fuzz;
mod oracle_check;
mod out;
mod progress;
mod run;
mod settings;
mod slabinfo;
mod table;
mod translate;

use clap::{CommandFactory, Parser, Subcommand};
use error::CliError;
use out::err;
use std::process::ExitCode;

/// Reference implementation of the Linux 2.5.69 "reslabify pgds and pmds"
/// page-table allocation design.
#[derive(Parser, Debug)]
#[command(name = "pgdcache", version, about, after_help = error::CONTRACT)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Colour verdicts on stdout: auto (a terminal, unless NO_COLOR is set
    /// or CLICOLOR=0; CLICOLOR_FORCE=1 forces it), always, never.
    #[arg(long, global = true, value_enum, default_value_t = color::ColorWhen::Auto)]
    color: color::ColorWhen,
}

#[derive(Subcommand, Debug)]
#[command(after_help = error::CONTRACT)]
enum Command {
    /// Boot a kernel address space (swapper_pg_dir) in simulated RAM and
    /// print its page tables like /sys/kernel/debug/page_tables/kernel.
    #[command(after_help = error::CONTRACT)]
    Dump(dump::DumpArgs),
    /// Export the page tables of a pgd-system scenario (swapper, fork,
    /// cpa-split) as a hardware-oracle image directory.
    #[command(after_help = error::CONTRACT)]
    Export(export::ExportArgs),
    /// Walk an oracle image with our software MMU and print each address's
    /// translation or fault (a fault is a result: exit 0).
    #[command(after_help = error::CONTRACT)]
    Translate(translate::TranslateArgs),
    /// Differential check of our walker against QEMU/KVM on random layouts
    /// and the pgd-system scenario tables (exit 1 on disagreement, 3 when
    /// the backend cannot run here).
    #[command(after_help = error::CONTRACT)]
    Oracle(oracle_check::OracleArgs),
    /// Compare every scheme × {2level, pae} on one workload (the default);
    /// exit 1 if a verdict is not the expected one.
    #[command(after_help = error::CONTRACT)]
    Compare(compare::CompareArgs),
    /// Run one configuration of the SMP simulator and print its metrics
    /// (exit 1 on a violation, a leak, or a failed run).
    #[command(after_help = error::CONTRACT)]
    Run(run::RunArgs),
    /// Run the correctness scenarios; exit 1 if a correct scheme fails or
    /// the unsynced slabification is not caught.
    #[command(after_help = error::CONTRACT)]
    Check(check::CheckArgs),
    /// Run a short workload and print /proc/slabinfo (version 2.1).
    #[command(after_help = error::CONTRACT)]
    Slabinfo(slabinfo::SlabinfoArgs),
    /// Boot the pgd system as the memory manager of a real x86 kernel under
    /// QEMU (every paging mode × scheme by default) and print the verdicts
    /// of the real MMU and the in-kernel checker (exit 1 on a finding, 3
    /// when QEMU or the bare-metal target is missing).
    #[command(after_help = error::CONTRACT)]
    Boot(boot::BootArgs),
    /// Measure the pgd system against its baselines (pgd_alloc/free, fork,
    /// change_page_attr, SMP, virtual-time projection) and print the ratios.
    #[command(after_help = error::CONTRACT)]
    Bench(bench::BenchArgs),
    /// Print the shell completion script (bash, zsh, fish, elvish, powershell).
    #[command(after_help = error::CONTRACT)]
    Completions(completions::CompletionsArgs),
    /// Print the man page (roff), or a subcommand's: `pgdcache man run | man -l -`.
    #[command(after_help = error::CONTRACT)]
    Man(completions::ManArgs),
}

fn dispatch(command: Command) -> Result<(), CliError> {
    match command {
        Command::Dump(a) => dump::run(&a),
        Command::Export(a) => export::run(&a),
        Command::Translate(a) => translate::run(&a),
        Command::Oracle(a) => oracle_check::run(&a),
        Command::Compare(a) => compare::run(&a),
        Command::Run(a) => run::run(&a),
        Command::Check(a) => check::run(&a),
        Command::Slabinfo(a) => slabinfo::run(&a),
        Command::Bench(a) => bench::run(&a),
        Command::Boot(a) => boot::main(&a),
        Command::Completions(a) => completions::completions(&a, Cli::command()),
        Command::Man(a) => completions::man(&a, Cli::command()),
    }
}

fn main() -> ExitCode {
    // Ctrl-C: say so and exit 130. A QEMU this process started dies with
    // it (its parent-death signal, see oracle::qemu).
    let _ = ctrlc::set_handler(|| {
        err!("pgdcache: interrupted");
        std::process::exit(i32::from(error::EXIT_INTERRUPTED));
    });
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            // --help and --version print to stdout and exit 0; usage errors
            // print to stderr and exit 2. A closed stdout is not a panic.
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() {
                error::EXIT_USAGE
            } else {
                error::EXIT_OK
            });
        }
    };
    color::init(cli.color);
    let command = cli
        .command
        .unwrap_or_else(|| Command::Compare(compare::CompareArgs::default()));
    match dispatch(command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if !e.is_quiet() {
                err!("pgdcache: {e}");
            }
            ExitCode::from(e.code())
        }
    }
}
