//! `pgdcache`: the command-line front end of pgdcache.
//!
//! One module per subcommand; [`args`] holds the value parsers shared by
//! them. With no subcommand it runs `dump --mode 2level`.

mod args;
mod dump;

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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let command = cli
        .command
        .unwrap_or_else(|| Command::Dump(dump::DumpArgs::default()));
    let result = match command {
        Command::Dump(a) => dump::run(&a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pgdcache: {e}");
            ExitCode::from(1)
        }
    }
}
