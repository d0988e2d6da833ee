//! Errors of the simulator subcommands and the exit codes they map to:
//! 2 for a bad argument or configuration value (like clap's own usage
//! errors), 1 for a failed run or a failed check.

use sim::SimError;

/// A subcommand failure.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// A bad argument or configuration value (exit 2).
    #[error("{0}")]
    Usage(String),
    /// The simulation failed (exit 1).
    #[error("{0}")]
    Run(String),
    /// `check` found a correct scheme failing or the bug not caught (exit 1).
    #[error("check failed: {0}")]
    CheckFailed(String),
}

impl CliError {
    /// The process exit code.
    pub fn code(&self) -> u8 {
        match self {
            CliError::Usage(_) => 2,
            CliError::Run(_) | CliError::CheckFailed(_) => 1,
        }
    }
}

impl From<SimError> for CliError {
    fn from(e: SimError) -> Self {
        match e {
            SimError::BadValue { .. } => CliError::Usage(e.to_string()),
            other => CliError::Run(other.to_string()),
        }
    }
}
