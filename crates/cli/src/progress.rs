//! Progress bars on stderr, for every command that can take over a second
//! (`bench`, `compare`, `oracle`, `boot`, `run`).
//!
//! A bar is drawn only where somebody watches: stderr is a terminal, `TERM`
//! is not `dumb`, the command does not print `--json`, and it is not running
//! under CI (`CI` set to anything but `""`, `0` or `false`, as
//! [`oracle::ci::in_ci`] reads it). Everywhere else — pipes, redirected
//! files, the tests, CI logs — the bar is hidden and costs nothing, so
//! nothing a bar draws can ever end up in captured output.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;

/// Whether progress may be drawn: `quiet` (e.g. `--json`) off, stderr a
/// terminal, `TERM` not `dumb`, not under CI.
pub fn wanted(quiet: bool) -> bool {
    !quiet
        && decide(
            std::io::stderr().is_terminal(),
            term_dumb(),
            oracle::ci::in_ci(),
        )
}

fn term_dumb() -> bool {
    std::env::var_os("TERM").is_some_and(|t| t == "dumb")
}

/// The rule of [`wanted`] without its environment.
fn decide(stderr_tty: bool, dumb: bool, ci: bool) -> bool {
    stderr_tty && !dumb && !ci
}

/// A bar of `len` steps labelled `what` on stderr, or a hidden one when
/// progress is not [`wanted`] (`quiet` for `--json`). Its message shows the
/// current step.
pub fn bar(len: u64, what: &str, quiet: bool) -> ProgressBar {
    if !wanted(quiet) {
        return ProgressBar::hidden();
    }
    let b = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    let template = format!("{{spinner}} {what} [{{bar:30}}] {{pos}}/{{len}} {{elapsed}} {{msg}}");
    b.set_style(
        ProgressStyle::with_template(&template)
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    b.enable_steady_tick(std::time::Duration::from_millis(200));
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_only_for_a_watching_terminal() {
        assert!(decide(true, false, false));
        assert!(!decide(false, false, false), "a pipe");
        assert!(!decide(true, true, false), "TERM=dumb");
        assert!(!decide(true, false, true), "CI");
        // The test harness captures stderr or runs in CI: no bar here, and
        // never one for --json.
        assert!(!wanted(true));
        assert!(bar(10, "x", true).is_hidden());
    }
}
