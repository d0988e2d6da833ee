//! The exit-code contract of every subcommand, and the error type that
//! carries it to `main`:
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success, with the expected verdicts (also: stdout was closed early, e.g. by `head`) |
//! | 1 | a finding: a violation, a disagreement, a target not met, a leak, a run that failed (e.g. out of simulated memory), or a write error on stdout |
//! | 2 | bad input: a flag, a config file, an impossible combination, a bad image file |
//! | 3 | the environment lacks something (QEMU, KVM, a target), with the command that installs it |
//! | 130 | interrupted (SIGINT) |
//!
//! Nothing panics on user input: a panic (exit 101) is a bug.

use sim::SimError;

/// Exit code: success.
pub const EXIT_OK: u8 = 0;
/// Exit code: a finding or a failed run.
pub const EXIT_FINDING: u8 = 1;
/// Exit code: bad input.
pub const EXIT_USAGE: u8 = 2;
/// Exit code: the environment lacks something.
pub const EXIT_ENV: u8 = 3;
/// Exit code: interrupted by SIGINT (128 + 2).
pub const EXIT_INTERRUPTED: u8 = 130;

/// The contract as `--help` prints it.
pub const CONTRACT: &str = "\
Exit status (every subcommand):
  0    success, with the expected verdicts (also when stdout is closed early, e.g. by head)
  1    a finding: a violation, a disagreement, a target not met, a leak, a failed run,
       or an error writing the output
  2    bad input: a flag, a config file, an impossible combination, a bad file
  3    the environment lacks something (QEMU, KVM, a target); the message says how to install it
  130  interrupted (Ctrl-C)";

/// A subcommand failure.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// A bad argument, configuration value, combination or input file (exit 2).
    #[error("{0}")]
    Usage(String),
    /// The run or the check found something wrong (exit 1).
    #[error("{0}")]
    Finding(String),
    /// The work failed (exit 1).
    #[error("{0}")]
    Run(String),
    /// The environment lacks a tool or a device (exit 3).
    #[error("{0}")]
    Env(String),
    /// Writing the output failed (exit 1; a closed pipe exits 0 quietly).
    #[error("cannot write to stdout: {0}")]
    Output(#[from] std::io::Error),
}

impl CliError {
    /// The process exit code.
    pub fn code(&self) -> u8 {
        match self {
            CliError::Usage(_) => EXIT_USAGE,
            CliError::Finding(_) | CliError::Run(_) => EXIT_FINDING,
            CliError::Env(_) => EXIT_ENV,
            CliError::Output(e) if e.kind() == std::io::ErrorKind::BrokenPipe => EXIT_OK,
            CliError::Output(_) => EXIT_FINDING,
        }
    }

    /// True when nothing should be printed (stdout closed by the reader).
    pub fn is_quiet(&self) -> bool {
        matches!(self, CliError::Output(e) if e.kind() == std::io::ErrorKind::BrokenPipe)
    }
}

impl From<SimError> for CliError {
    fn from(e: SimError) -> Self {
        match e {
            SimError::BadValue { .. } | SimError::NotEnoughRam { .. } => {
                CliError::Usage(e.to_string())
            }
            SimError::Kernel(pgdcache::KernelError::SchemeUnsupported { .. }) => {
                CliError::Usage(format!("{e} (pick another --scheme or --mode)"))
            }
            other => CliError::Run(other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes() {
        assert_eq!(CliError::Usage("x".into()).code(), 2);
        assert_eq!(CliError::Finding("x".into()).code(), 1);
        assert_eq!(CliError::Env("x".into()).code(), 3);
        let pipe = CliError::Output(std::io::Error::from(std::io::ErrorKind::BrokenPipe));
        assert_eq!(pipe.code(), 0);
        assert!(pipe.is_quiet());
        let full = CliError::Output(std::io::Error::from_raw_os_error(28));
        assert_eq!(full.code(), 1);
        assert!(full.to_string().contains("No space left"), "{full}");
    }
}
