//! The tables the command prints, drawn with comfy-table: aligned columns
//! on a terminal (numbers right-aligned, verdicts coloured where
//! [`crate::color`] allows), or Markdown (comfy-table's `ASCII_MARKDOWN`)
//! for what goes into docs/PERFORMANCE.md. Linux-defined formats (ptdump,
//! `/proc/slabinfo`) are never drawn here: they keep Linux's own layout.

use comfy_table::{Cell, CellAlignment, ContentArrangement, LineStyle, Table, TableStyle};

/// How a table is drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Form {
    /// Aligned columns under a rule, no borders.
    Terminal,
    /// A Markdown table.
    Markdown,
}

/// No borders; a rule under the header.
const TERMINAL: TableStyle =
    TableStyle::new().header_separator(LineStyle::none().fill('─').junction(' '));

/// A cell that reads as a number (`45249`, `1.23x`, `-`, `+12%`, `40ns`).
fn numeric(s: &str) -> bool {
    let s = s.trim();
    s == "-"
        || s.starts_with(|c: char| c.is_ascii_digit())
        || (s.starts_with(['+', '-']) && s[1..].starts_with(|c: char| c.is_ascii_digit()))
}

/// Draws `header` and `rows` in `form`; the cells of `verdict_column` are
/// coloured when `color` is on (terminal form only).
pub fn render(
    header: &[String],
    rows: &[Vec<String>],
    verdict_column: Option<usize>,
    form: Form,
    color: bool,
) -> String {
    let mut t = Table::new();
    t.set_content_arrangement(ContentArrangement::Disabled);
    let color = color && form == Form::Terminal;
    if color {
        t.enforce_styling();
    } else {
        t.force_no_tty();
    }
    match form {
        Form::Terminal => {
            t.load_style(TERMINAL);
        }
        Form::Markdown => {
            t.load_style(comfy_table::presets::ASCII_MARKDOWN);
        }
    }
    t.set_header(header.iter().map(Cell::new));
    for r in rows {
        t.add_row(r.iter().enumerate().map(|(i, c)| {
            let cell = Cell::new(c);
            match crate::color::verdict_color(c) {
                Some(col) if color && Some(i) == verdict_column => cell.fg(col),
                _ => cell,
            }
        }));
    }
    if form == Form::Terminal {
        for i in 0..header.len() {
            let all_numeric = rows.iter().filter_map(|r| r.get(i)).all(|c| numeric(c))
                && rows.iter().any(|r| r.get(i).is_some_and(|c| c != "-"));
            if let Some(col) = t.column_mut(i) {
                col.set_padding((0, 1));
                if all_numeric {
                    col.set_cell_alignment(CellAlignment::Right);
                }
            }
        }
    }
    let mut out = String::new();
    for l in t.lines() {
        out.push_str(l.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| (*x).to_string()).collect()
    }

    #[test]
    fn terminal_tables_align_and_markdown_is_markdown() {
        let h = s(&["scheme", "tasks/s", "verdict"]);
        let rows = vec![
            s(&["uncached", "45249", "correct"]),
            s(&["slab-unsynced", "9", "caught stale"]),
        ];
        let t = render(&h, &rows, Some(2), Form::Terminal, false);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 4, "{t}");
        assert!(lines[1].starts_with('─'));
        // Numbers right-aligned: the last digits line up.
        let end = |l: &str, n: &str| l.find(n).map(|i| i + n.len());
        assert_eq!(end(lines[2], "45249"), end(lines[3], "9"), "{t}");
        assert!(!t.contains('\x1b'), "no colour asked: no escapes");
        let c = render(&h, &rows, Some(2), Form::Terminal, true);
        assert!(c.contains('\x1b'), "colour asked: escapes");
        let m = render(&h, &rows, Some(2), Form::Markdown, true);
        assert!(m.starts_with("| scheme"), "{m}");
        assert!(m.lines().nth(1).is_some_and(|l| l.starts_with("|-")), "{m}");
        assert!(!m.contains('\x1b'), "Markdown is never coloured");
    }
}
