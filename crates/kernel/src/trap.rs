//! Exceptions: the IDT, the #PF handler (`do_page_fault`: `vmalloc_fault`
//! and the probes' exception-table fixup) and the fatal path for the rest.
//!
//! A page fault in the vmalloc area from kernel mode with a not-present
//! top-level entry is the lazy synchronisation of the seed's comment:
//! `vmalloc_fault` copies swapper's entry into the current pgd and the
//! access is retried. A fault on one of the probe instructions (the
//! checker's loads and stores through a task's pgd) resumes at the probe's
//! fixup, like a `__get_user` exception-table entry, and is recorded.
//! Every other exception stops the kernel with a report: vector, error
//! code, instruction, CR2 and CR3.

use crate::arch::{self, IdtEntry, TrapFrame};
use core::sync::atomic::{AtomicU64, Ordering};
use physmem::{PhysAddr, VirtAddr};

const NAMES: [&str; 32] = [
    "#DE divide error",
    "#DB debug",
    "NMI",
    "#BP breakpoint",
    "#OF overflow",
    "#BR bound range",
    "#UD invalid opcode",
    "#NM device not available",
    "#DF double fault",
    "coprocessor segment overrun",
    "#TS invalid TSS",
    "#NP segment not present",
    "#SS stack fault",
    "#GP general protection",
    "#PF page fault",
    "reserved",
    "#MF x87 error",
    "#AC alignment check",
    "#MC machine check",
    "#XM SIMD error",
    "#VE virtualization",
    "#CP control protection",
    "reserved",
    "reserved",
    "reserved",
    "reserved",
    "reserved",
    "reserved",
    "reserved",
    "reserved",
    "#SX security",
    "reserved",
];

/// The IDT. Written once by [`init`] before interrupts can happen, then
/// only read by the CPU.
static mut IDT: [IdtEntry; 256] = [arch::ZERO_GATE; 256];

/// Page faults the probes took (resumed at their fixup).
pub static PROBE_FAULTS: AtomicU64 = AtomicU64::new(0);
/// CR2 and error code of the last probe fault.
pub static LAST_PROBE_CR2: AtomicU64 = AtomicU64::new(0);
/// Error code of the last probe fault.
pub static LAST_PROBE_ERR: AtomicU64 = AtomicU64::new(0);
/// vmalloc faults fixed by copying swapper's entry.
pub static VMALLOC_FAULTS: AtomicU64 = AtomicU64::new(0);

/// Loads the (already filled) IDT on this CPU: application processors.
pub fn load() {
    // SAFETY: the IDT is static and was filled by `init` before any AP ran.
    unsafe { arch::load_idt(&*core::ptr::addr_of!(IDT)) };
}

/// Fills and loads the IDT.
pub fn init() {
    let idt = core::ptr::addr_of_mut!(IDT);
    for v in 0..256 {
        if let Some(h) = arch::isr_address(v) {
            // SAFETY: single-threaded boot; nothing reads the IDT before lidt.
            unsafe { (*idt)[v] = arch::idt_gate(h) };
        }
    }
    // SAFETY: the IDT is static and complete; from now on it is read-only.
    unsafe { arch::load_idt(&*idt) };
}

/// The pgd CR3 points at (CR3 without its flag bits: PAE PDPTs are 32-byte
/// aligned, other tables 4 KiB).
pub fn current_pgd() -> PhysAddr {
    let cr3 = arch::read_cr3();
    let mask = if crate::mm::is_pae() { !0x1f } else { !0xfff };
    PhysAddr::new(cr3 & mask)
}

#[no_mangle]
extern "C" fn trap_entry(frame: &mut TrapFrame) {
    // Handler context: the pgd token is off limits (see `crate::pcpu`).
    let _irq = crate::pcpu::IrqGuard::enter();
    match frame.vector() {
        14 if do_page_fault(frame) => return,
        crate::smp::TLB_VECTOR => return crate::smp::tlb_ipi(),
        255 => return, // spurious: no EOI
        _ => {}
    }
    fatal(frame);
}

/// Handles a page fault it knows; false for one that is a kernel bug.
fn do_page_fault(frame: &mut TrapFrame) -> bool {
    let cr2 = arch::read_cr2();
    let err = frame.error();
    // Kernel-mode access to a not-present page in the vmalloc area.
    if err & 0b101 == 0 {
        if let Some(k) = crate::mm::kernel() {
            let va = VirtAddr::new(cr2);
            if k.in_vmalloc_area(va) {
                if let Ok(true) = k.vmalloc_fault(pgdcache::Pgd(current_pgd()), va) {
                    VMALLOC_FAULTS.fetch_add(1, Ordering::Relaxed);
                    return true;
                }
            }
        }
    }
    let (read, write, fixup) = arch::probe_addresses();
    if frame.ip() == read || frame.ip() == write {
        PROBE_FAULTS.fetch_add(1, Ordering::Relaxed);
        LAST_PROBE_CR2.store(cr2, Ordering::Relaxed);
        LAST_PROBE_ERR.store(err, Ordering::Relaxed);
        frame.set_ip(fixup);
        return true;
    }
    false
}

fn fatal(frame: &TrapFrame) -> ! {
    let v = frame.vector() as usize;
    let name = NAMES.get(v).copied().unwrap_or("?");
    let cr2 = arch::read_cr2();
    let cr3 = arch::read_cr3();
    crate::serial::print_unlocked(format_args!(
        "\nFATAL: {name} (vector {v}) error {:#x} at ip {:#x}, cr2 {cr2:#x}, cr3 {cr3:#x}\n{frame:x?}\n",
        frame.error(),
        frame.ip()
    ));
    crate::serial::print_unlocked(format_args!(
        "@@ {{\"event\":\"fatal\",\"what\":\"{name}\",\"vector\":{v},\"error\":{},\"ip\":{},\"cr2\":{cr2},\"cr3\":{cr3}}}\n",
        frame.error(),
        frame.ip()
    ));
    arch::qemu_exit(2)
}
