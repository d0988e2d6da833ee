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
