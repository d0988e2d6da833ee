//! Fallible output. `println!` panics when stdout is a closed pipe or a full
//! disk; every line the subcommands print goes through [`out!`] instead,
//! which returns the write error, and `main` turns it into the exit-code
//! contract: a closed pipe (`EPIPE`) ends the command quietly with 0, any
//! other write error is a message and exit 1. Diagnostics go through
//! [`err!`], which never panics (if stderr itself fails there is nobody left
//! to tell).

use std::io::{self, Write};

/// Writes formatted text to stdout (no newline added), returning the
/// [`io::Result`] instead of panicking.
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::out::write_stdout(format_args!($($arg)*))
    };
}

/// Writes a formatted line to stdout, returning the [`io::Result`].
macro_rules! outln {
    () => {
        $crate::out::write_stdout(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::out::write_stdout(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// Writes a formatted line to stderr, ignoring failures.
macro_rules! err {
    ($($arg:tt)*) => {
        $crate::out::write_stderr(format_args!("{}\n", format_args!($($arg)*)))
    };
}

pub(crate) use {err, out, outln};

/// Writes `args` to stdout and flushes, so that a closed pipe or a full
/// disk is seen at the line that hit it.
pub fn write_stdout(args: std::fmt::Arguments<'_>) -> io::Result<()> {
    let mut o = io::stdout().lock();
    o.write_fmt(args)?;
    o.flush()
}

/// Writes `args` to stderr; errors are dropped.
pub fn write_stderr(args: std::fmt::Arguments<'_>) {
    let mut e = io::stderr().lock();
    let _ = e.write_fmt(args);
    let _ = e.flush();
}

/// Prints `v` as pretty JSON and a newline.
pub fn json<T: serde::Serialize + ?Sized>(v: &T) -> Result<(), crate::error::CliError> {
    let text = serde_json::to_string_pretty(v)
        .map_err(|e| crate::error::CliError::Run(format!("JSON output: {e}")))?;
    outln!("{text}")?;
    Ok(())
}
