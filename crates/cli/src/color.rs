//! Coloured verdicts (`met` / `not met` / `noisy`, `correct` / `caught`,
//! `ok` / `FAIL`) on stdout, when and only when they can be seen.
//!
//! `--color auto|always|never` (a global flag, `auto` by default) decides
//! first; under `auto` the conventions of <https://no-color.org> and
//! <https://bixense.com/clicolors/> apply, read with `anstyle-query` as
//! clap's own colouring reads them: `NO_COLOR` (non-empty) turns colour
//! off, then `CLICOLOR_FORCE` (non-`0`) turns it on, then `CLICOLOR=0`
//! turns it off; otherwise colour is on when stdout is a terminal whose
//! `TERM` supports it. Pipes, files and tests get no escape codes.

use comfy_table::Color;
use std::io::IsTerminal;
use std::sync::OnceLock;

/// `--color`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ColorWhen {
    /// Colour when stdout is a terminal (and the environment allows).
    #[default]
    Auto,
    /// Always colour.
    Always,
    /// Never colour.
    Never,
}

/// What the environment says about colour.
#[derive(Clone, Copy, Debug, Default)]
struct Env {
    no_color: bool,
    clicolor_force: bool,
    clicolor: Option<bool>,
    term_supports_color: bool,
}

impl Env {
    fn read() -> Env {
        Env {
            no_color: anstyle_query::no_color(),
            clicolor_force: anstyle_query::clicolor_force(),
            clicolor: anstyle_query::clicolor(),
            term_supports_color: anstyle_query::term_supports_color(),
        }
    }
}

/// The rule: the flag, then `NO_COLOR`, `CLICOLOR_FORCE`, `CLICOLOR`, then
/// a colour-capable terminal.
fn decide(when: ColorWhen, env: Env, stdout_tty: bool) -> bool {
    match when {
        ColorWhen::Always => true,
        ColorWhen::Never => false,
        ColorWhen::Auto => {
            if env.no_color {
                false
            } else if env.clicolor_force {
                true
            } else if env.clicolor == Some(false) {
                false
            } else {
                stdout_tty && (env.term_supports_color || env.clicolor == Some(true))
            }
        }
    }
}

static STDOUT_COLOR: OnceLock<bool> = OnceLock::new();

/// Sets the choice from `--color` (once, in `main`).
pub fn init(when: ColorWhen) {
    let _ = STDOUT_COLOR.set(decide(when, Env::read(), std::io::stdout().is_terminal()));
}

/// Whether stdout gets colour (`auto` if [`init`] never ran).
pub fn stdout() -> bool {
    *STDOUT_COLOR.get_or_init(|| {
        decide(
            ColorWhen::Auto,
            Env::read(),
            std::io::stdout().is_terminal(),
        )
    })
}

/// The colour of a verdict, by its words: good (met, correct, ok, agree,
/// yes) green; bad (not met, caught, FAIL, no, violation) red; undecided
/// (noisy, n/a, skipped, out of reach: a proven limit, not a finding)
/// yellow. `None` for anything else.
pub fn verdict_color(v: &str) -> Option<Color> {
    let l = v.trim().trim_matches('*').to_ascii_lowercase();
    if l.starts_with("noisy")
        || l.starts_with("n/a")
        || l.starts_with("skip")
        || l.starts_with("out of reach")
    {
        Some(Color::Yellow)
    } else if l.starts_with("not met")
        || l.starts_with("caught")
        || l.starts_with("fail")
        || l.starts_with("error")
        || l == "no"
        || l.contains("violation")
    {
        Some(Color::Red)
    } else if l == "met" || l == "correct" || l == "ok" || l == "yes" || l.starts_with("agree") {
        Some(Color::Green)
    } else {
        None
    }
}

/// `text` in its verdict colour (ANSI), if `on` and it has one.
pub fn paint(text: &str, on: bool) -> String {
    let style = match verdict_color(text) {
        Some(c) if on => anstyle::Style::new().fg_color(Some(anstyle::Color::Ansi(match c {
            Color::Green => anstyle::AnsiColor::Green,
            Color::Red => anstyle::AnsiColor::Red,
            _ => anstyle::AnsiColor::Yellow,
        }))),
        _ => return text.to_string(),
    };
    format!("{style}{text}{style:#}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> Env {
        Env {
            term_supports_color: true,
            ..Env::default()
        }
    }

    #[test]
    fn colour_only_on_a_terminal_unless_forced() {
        assert!(decide(ColorWhen::Auto, env(), true));
        assert!(!decide(ColorWhen::Auto, env(), false), "a pipe");
        assert!(decide(ColorWhen::Always, env(), false));
        assert!(!decide(ColorWhen::Never, env(), true));
        let dumb = Env {
            term_supports_color: false,
            ..env()
        };
        assert!(!decide(ColorWhen::Auto, dumb, true), "TERM=dumb");
    }

    #[test]
    fn no_color_and_clicolor_are_honoured() {
        let no = Env {
            no_color: true,
            ..env()
        };
        assert!(!decide(ColorWhen::Auto, no, true), "NO_COLOR");
        let forced = Env {
            clicolor_force: true,
            ..env()
        };
        assert!(decide(ColorWhen::Auto, forced, false), "CLICOLOR_FORCE");
        // NO_COLOR wins over CLICOLOR_FORCE, the flag over both.
        let both = Env {
            no_color: true,
            clicolor_force: true,
            ..env()
        };
        assert!(!decide(ColorWhen::Auto, both, true));
        assert!(decide(ColorWhen::Always, both, false));
        let off = Env {
            clicolor: Some(false),
            ..env()
        };
        assert!(!decide(ColorWhen::Auto, off, true), "CLICOLOR=0");
    }

    #[test]
    fn verdicts_have_colours_and_paint_only_when_on() {
        assert_eq!(verdict_color("met"), Some(Color::Green));
        assert_eq!(verdict_color("not met"), Some(Color::Red));
        assert_eq!(verdict_color("noisy, not decided"), Some(Color::Yellow));
        assert_eq!(verdict_color("caught stale"), Some(Color::Red));
        assert_eq!(verdict_color("correct"), Some(Color::Green));
        assert_eq!(verdict_color("1.23x"), None);
        assert_eq!(paint("met", false), "met");
        let on = paint("met", true);
        assert!(on.starts_with("\x1b[") && on.contains("met"), "{on:?}");
        assert_eq!(paint("1.23x", true), "1.23x");
    }
}
