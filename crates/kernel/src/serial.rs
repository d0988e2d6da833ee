//! The console: the 16550 UART at COM1 (port 0x3f8), 115200 8N1, polled.
//!
//! Everything the kernel says goes here. Lines that start with `@@ ` are
//! JSON events for `pgdcache boot`; the rest is text for people.

use crate::arch::{inb, outb};
use core::fmt::{self, Write};

const COM1: u16 = 0x3f8;

/// Serialises writers (an exception handler may print while the kernel
/// holds no lock: the handler is only reached from code that does not
/// print, so this never deadlocks).
static LOCK: spin::Mutex<()> = spin::Mutex::new(());

/// Programs the UART.
pub fn init() {
    outb(COM1 + 1, 0x00); // no interrupts
    outb(COM1 + 3, 0x80); // DLAB
    outb(COM1, 0x01); // divisor 1: 115200 baud
    outb(COM1 + 1, 0x00);
    outb(COM1 + 3, 0x03); // 8N1
    outb(COM1 + 2, 0xc7); // FIFO on, cleared
    outb(COM1 + 4, 0x03); // DTR, RTS
}

fn put(b: u8) {
    let mut spins = 0u32;
    while inb(COM1 + 5) & 0x20 == 0 && spins < 100_000 {
        spins += 1;
    }
    outb(COM1, b);
}

struct Port;

impl Write for Port {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for b in s.bytes() {
            if b == b'\n' {
                put(b'\r');
            }
            put(b);
        }
        Ok(())
    }
}

/// Prints formatted text (use [`kprint!`]/[`kprintln!`]).
pub fn print(args: fmt::Arguments<'_>) {
    let _g = LOCK.lock();
    let _ = Port.write_fmt(args);
}

/// Prints, as the panic path must: without waiting for the lock (the
/// panicking code may hold it).
pub fn print_unlocked(args: fmt::Arguments<'_>) {
    let _ = Port.write_fmt(args);
}

/// `print!` to the serial console.
#[macro_export]
macro_rules! kprint {
    ($($t:tt)*) => { $crate::serial::print(format_args!($($t)*)) };
}

/// `println!` to the serial console.
#[macro_export]
macro_rules! kprintln {
    () => { $crate::serial::print(format_args!("\n")) };
    ($($t:tt)*) => { $crate::serial::print(format_args!("{}\n", format_args!($($t)*))) };
}
