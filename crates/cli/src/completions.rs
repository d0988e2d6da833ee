//! `pgdcache completions <shell>` and `pgdcache man [subcommand]`: the
//! shell completion script (clap_complete; the enum flags complete to
//! their possible values) and the man page in roff (clap_mangen), both
//! generated from the same command definition as `--help`.

use crate::error::CliError;
use crate::out::out;
use clap::Args;

/// Arguments of `completions`.
#[derive(Args, Debug)]
pub struct CompletionsArgs {
    /// The shell, e.g. `pgdcache completions bash > /etc/bash_completion.d/pgdcache`.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// Arguments of `man`.
#[derive(Args, Debug)]
pub struct ManArgs {
    /// A subcommand's page (`pgdcache-run(1)`) instead of the main one.
    pub subcommand: Option<String>,
}

/// Prints the completion script of `cmd` for the shell.
pub fn completions(a: &CompletionsArgs, mut cmd: clap::Command) -> Result<(), CliError> {
    let mut buf = Vec::new();
    clap_complete::generate(a.shell, &mut cmd, "pgdcache", &mut buf);
    out!("{}", String::from_utf8_lossy(&buf))?;
    Ok(())
}

/// Prints the man page of `cmd` (or of one of its subcommands).
pub fn man(a: &ManArgs, cmd: clap::Command) -> Result<(), CliError> {
    let cmd = match &a.subcommand {
        None => cmd,
        Some(name) => {
            let names: Vec<String> = cmd
                .get_subcommands()
                .map(|s| s.get_name().to_string())
                .collect();
            let sub = cmd
                .get_subcommands()
                .find(|s| s.get_name() == name)
                .cloned()
                .ok_or_else(|| {
                    CliError::Usage(format!(
                        "man {}: no such subcommand (one of: {})",
                        crate::settings::clip(name),
                        names.join(", ")
                    ))
                })?;
            let full = format!("pgdcache-{}", sub.get_name());
            sub.name(full)
        }
    };
    let mut buf = Vec::new();
    clap_mangen::Man::new(cmd)
        .render(&mut buf)
        .map_err(|e| CliError::Run(format!("rendering the man page: {e}")))?;
    out!("{}", String::from_utf8_lossy(&buf))?;
    Ok(())
}
