//! The local APIC (xAPIC, memory-mapped at 0xFEE00000 through the fixmap
//! slot `FIX_APIC_BASE` that `x86paging` maps uncached in swapper — and so,
//! through the kernel part, in every pgd).

use core::ptr::{read_volatile, write_volatile};
use core::sync::atomic::{AtomicU64, Ordering};

const ID: u64 = 0x20;
const EOI: u64 = 0xb0;
const SVR: u64 = 0xf0;
const ICR_LOW: u64 = 0x300;
const ICR_HIGH: u64 = 0x310;

static BASE: AtomicU64 = AtomicU64::new(0);

/// Sets where the APIC's registers are mapped (the fixmap slot's address).
pub fn set_base(va: u64) {
    BASE.store(va, Ordering::Relaxed);
}

fn reg(off: u64) -> *mut u32 {
    (BASE.load(Ordering::Relaxed) + off) as usize as *mut u32
}

fn read(off: u64) -> u32 {
    // SAFETY: the fixmap maps the APIC page uncached in every pgd; its
    // registers are 32-bit and 16-byte aligned.
    unsafe { read_volatile(reg(off)) }
}

fn write(off: u64, v: u32) {
    // SAFETY: as `read`.
    unsafe { write_volatile(reg(off), v) }
}

/// Software-enables this CPU's APIC with spurious vector 0xff.
pub fn enable() {
    write(SVR, read(SVR) | 0x1ff);
}

/// This CPU's APIC ID.
pub fn id() -> u32 {
    read(ID) >> 24
}

/// End of interrupt.
pub fn eoi() {
    write(EOI, 0);
}

fn wait_idle() {
    while read(ICR_LOW) & (1 << 12) != 0 {
        core::hint::spin_loop();
    }
}

fn send(dest: u32, low: u32) {
    wait_idle();
    write(ICR_HIGH, dest << 24);
    write(ICR_LOW, low);
    wait_idle();
}

/// INIT to the CPU with APIC ID `dest`.
pub fn send_init(dest: u32) {
    send(dest, 0x0000_4500);
}

/// A start-up IPI: the CPU starts in real mode at `page << 12`.
pub fn send_startup(dest: u32, page: u32) {
    send(dest, 0x0000_4600 | (page & 0xff));
}

/// A fixed interrupt `vector` to every CPU but this one.
pub fn send_all_but_self(vector: u8) {
    send(0, 0x000c_4000 | u32::from(vector));
}
