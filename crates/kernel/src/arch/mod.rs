//! The CPU: entry stubs, control registers, exceptions and probes, one
//! file per architecture with the same interface.

#[cfg(target_arch = "x86")]
mod x86;
#[cfg(target_arch = "x86")]
pub use x86::*;

#[cfg(target_arch = "x86_64")]
mod x86_64;
#[cfg(target_arch = "x86_64")]
pub use self::x86_64::*;

use core::arch::asm;

/// Reads a model-specific register.
pub fn rdmsr(msr: u32) -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: the caller reads architectural MSRs (EFER).
    unsafe { asm!("rdmsr", in("ecx") msr, out("eax") lo, out("edx") hi, options(nomem, nostack)) };
    (u64::from(hi) << 32) | u64::from(lo)
}

/// Writes a model-specific register.
///
/// # Safety
/// The value must be valid for the MSR and keep the kernel running.
pub unsafe fn wrmsr(msr: u32, v: u64) {
    // SAFETY: the caller guarantees the value.
    unsafe {
        asm!("wrmsr", in("ecx") msr, in("eax") v as u32, in("edx") (v >> 32) as u32, options(nostack))
    };
}

/// Writes a byte to an I/O port.
pub fn outb(port: u16, v: u8) {
    // SAFETY: the kernel only uses COM1 and QEMU's debug-exit port.
    unsafe { asm!("out dx, al", in("dx") port, in("al") v, options(nomem, nostack)) };
}

/// Reads a byte from an I/O port.
pub fn inb(port: u16) -> u8 {
    let v: u8;
    // SAFETY: as `outb`.
    unsafe { asm!("in al, dx", in("dx") port, out("al") v, options(nomem, nostack)) };
    v
}

/// The time-stamp counter.
pub fn rdtsc() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: RDTSC has no side effect.
    unsafe { asm!("rdtsc", out("eax") lo, out("edx") hi, options(nomem, nostack)) };
    (u64::from(hi) << 32) | u64::from(lo)
}

/// Stops the CPU for good.
pub fn halt() -> ! {
    loop {
        // SAFETY: interrupts are off; hlt just parks the CPU.
        unsafe { asm!("cli; hlt", options(nomem, nostack)) };
    }
}

/// Enables interrupts.
pub fn sti() {
    // SAFETY: the IDT is loaded and every vector the kernel raises has a
    // handler.
    unsafe { asm!("sti", options(nomem, nostack)) };
}

/// Waits for an interrupt with interrupts enabled.
pub fn idle() {
    // SAFETY: as `sti`; hlt returns at the next interrupt.
    unsafe { asm!("sti; hlt", options(nomem, nostack)) };
}

/// The exception stubs both entry files emit, one line per vector: an
/// `ISR_ERR` vector has a CPU-pushed error code, an `ISR_NOERR` one gets a
/// 0 pushed in its place. Each file defines the two macros for its width.
#[macro_export]
macro_rules! isr_stubs {
    () => {
        concat!(
            "ISR_NOERR 0\n",
            "ISR_NOERR 1\n",
            "ISR_NOERR 2\n",
            "ISR_NOERR 3\n",
            "ISR_NOERR 4\n",
            "ISR_NOERR 5\n",
            "ISR_NOERR 6\n",
            "ISR_NOERR 7\n",
            "ISR_ERR 8\n",
            "ISR_NOERR 9\n",
            "ISR_ERR 10\n",
            "ISR_ERR 11\n",
            "ISR_ERR 12\n",
            "ISR_ERR 13\n",
            "ISR_ERR 14\n",
            "ISR_NOERR 15\n",
            "ISR_NOERR 16\n",
            "ISR_ERR 17\n",
            "ISR_NOERR 18\n",
            "ISR_NOERR 19\n",
            "ISR_NOERR 20\n",
            "ISR_ERR 21\n",
            "ISR_NOERR 22\n",
            "ISR_NOERR 23\n",
            "ISR_NOERR 24\n",
            "ISR_NOERR 25\n",
            "ISR_NOERR 26\n",
            "ISR_NOERR 27\n",
            "ISR_NOERR 28\n",
            "ISR_ERR 29\n",
            "ISR_ERR 30\n",
            "ISR_NOERR 31\n",
            "ISR_NOERR 240\n",
            "ISR_NOERR 255\n",
        )
    };
}

/// CR4.PGE.
pub const CR4_PGE: u64 = 1 << 7;
/// CR4.LA57.
pub const CR4_LA57: u64 = 1 << 12;
/// The IA32_EFER MSR.
pub const MSR_EFER: u32 = 0xC000_0080;
/// EFER.NXE.
pub const EFER_NXE: u64 = 1 << 11;

/// `__flush_tlb_all`: drops every TLB entry, global ones included, by
/// toggling CR4.PGE (what Linux does where it cannot use INVPCID).
pub fn flush_tlb_all() {
    let cr4 = read_cr4();
    if cr4 & CR4_PGE != 0 {
        // SAFETY: clearing and restoring PGE keeps the paging mode; the
        // current tables map the kernel whether or not entries are global.
        unsafe {
            write_cr4(cr4 & !CR4_PGE);
            write_cr4(cr4);
        }
    } else {
        // SAFETY: reloading the current CR3 keeps the same tables.
        unsafe { write_cr3(read_cr3()) };
    }
}

/// Stops QEMU through its `isa-debug-exit` device (port 0xf4): QEMU exits
/// with status `(code << 1) | 1`. The host never trusts that status alone:
/// the kernel's own last serial line says whether the run passed.
pub fn qemu_exit(code: u8) -> ! {
    outb(0xf4, code);
    halt()
}
