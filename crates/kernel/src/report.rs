//! What the kernel tells the host: JSON events on lines that start with
//! `@@ ` (the rest of the serial output is text for people), and the exit.
//!
//! `pgdcache boot` trusts a run only when it read the `result` event and
//! the final `done` event; QEMU's exit status alone proves nothing.

use crate::arch;
use alloc::string::String;
use core::fmt::Write;

/// `s` as a JSON string literal.
pub fn json_str(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 2);
    o.push('"');
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            '\n' => o.push_str("\\n"),
            c if (c as u32) < 0x20 => {
                let _ = write!(o, "\\u{:04x}", c as u32);
            }
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

/// Prints one event line.
pub fn event(json: &str) {
    crate::kprintln!("@@ {json}");
}

/// Exit status the kernel asks QEMU for when it reached its verdict.
pub const EXIT_DONE: u8 = 0;
/// … when it stopped on an error before a verdict.
pub const EXIT_ERROR: u8 = 1;

/// Reports an error that stops the kernel before a verdict.
pub fn fail(stage: &str, msg: &str) -> ! {
    crate::kprintln!("ERROR ({stage}): {msg}");
    event(&alloc::format!(
        "{{\"event\":\"error\",\"stage\":{},\"message\":{}}}",
        json_str(stage),
        json_str(msg)
    ));
    arch::qemu_exit(EXIT_ERROR)
}

/// [`fail`] for the panic path (the console lock may be held).
pub fn fail_unlocked(stage: &str, msg: &str) -> ! {
    crate::serial::print_unlocked(format_args!(
        "@@ {{\"event\":\"error\",\"stage\":{},\"message\":{}}}\n",
        json_str(stage),
        json_str(msg)
    ));
    arch::qemu_exit(EXIT_ERROR)
}
