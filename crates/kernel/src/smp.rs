//! Application processors and the TLB shootdown.
//!
//! The BSP starts each AP the classic way (INIT, start-up IPI twice) into
//! the trampoline at physical 0x8000, which enters the AP's boot tables and
//! calls [`ap_main`] on the AP's own stack. The CPU number is the stack's:
//! the BSP runs on the boot stack, AP *n* on `AP_STACKS[n - 1]` (the i386
//! `current` trick), so `smp_processor_id` needs no per-CPU segment.
//!
//! `global_flush_tlb` (`flush_kernel_map` on every CPU) is the
//! `smp_call_function` pattern: flush locally, send [`TLB_VECTOR`] to every
//! other CPU, and wait until each has acknowledged. Every CPU runs with
//! interrupts enabled, also while it spins on a lock, so the wait cannot
//! deadlock; the IPI handler takes no lock and never touches the CPU's pgd
//! token (`crate::pcpu`), while the waiting CPU serves its token's requests.

use crate::{apic, arch, kprintln, time};
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

/// Most CPUs the kernel starts.
pub const MAX_CPUS: usize = 8;
/// The TLB-shootdown IPI vector.
pub const TLB_VECTOR: u64 = 240;
/// Where the trampoline runs (the start-up IPI's page 8).
const TRAMPOLINE: u64 = 0x8000;
/// The trampoline's data slots (CR4, CR3, stack, entry, CPU, NX).
const SLOTS: u64 = 0x8f00;
const AP_STACK: usize = 64 << 10;

#[repr(C, align(16))]
struct Stacks([[u8; AP_STACK]; MAX_CPUS - 1]);

static mut AP_STACKS: Stacks = Stacks([[0; AP_STACK]; MAX_CPUS - 1]);

/// CPUs online (the BSP counts from the start).
static ONLINE: AtomicUsize = AtomicUsize::new(1);
/// TLB-shootdown IPIs each CPU handled.
pub static TLB_ACKS: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
/// TLB-shootdown IPIs each CPU sent (one per other CPU per shootdown).
pub static IPIS_SENT: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
/// Bug injection (`noipi=1`): shootdowns flush only the local TLB, as a
/// kernel without `flush_kernel_map` IPIs would. The checks must see it.
pub static NO_IPI: AtomicBool = AtomicBool::new(false);

/// `smp_processor_id()`.
pub fn this_cpu() -> usize {
    let sp = arch::read_sp();
    let base = core::ptr::addr_of!(AP_STACKS) as usize;
    let end = base + (MAX_CPUS - 1) * AP_STACK;
    if (base..end).contains(&sp) {
        1 + (sp - base) / AP_STACK
    } else {
        0
    }
}

/// CPUs online.
pub fn online() -> usize {
    ONLINE.load(Ordering::Acquire)
}

/// The IPI handler: flush this CPU's TLB (global entries too), acknowledge.
pub fn tlb_ipi() {
    arch::flush_tlb_all();
    TLB_ACKS[this_cpu()].fetch_add(1, Ordering::Release);
    apic::eoi();
}

/// The remote half of `global_flush_tlb`: every other CPU flushes, and
/// this returns only when all have.
pub fn flush_tlb_others() {
    let n = online();
    if n <= 1 || NO_IPI.load(Ordering::Relaxed) {
        return;
    }
    let me = this_cpu();
    let mut before = [0u64; MAX_CPUS];
    for (c, b) in before.iter_mut().enumerate().take(n) {
        *b = TLB_ACKS[c].load(Ordering::Acquire);
    }
    apic::send_all_but_self(TLB_VECTOR as u8);
    IPIS_SENT[me].fetch_add(n as u64 - 1, Ordering::Relaxed);
    for (c, b) in before.iter().enumerate().take(n) {
        if c == me {
            continue;
        }
        // Serving while waiting, as a CPU in `smp_call_function` still
        // takes IPIs: a remote cache operation waiting for this CPU's pgd
        // token is not held up by the shootdown.
        while TLB_ACKS[c].load(Ordering::Acquire) == *b {
            crate::pcpu::relax();
        }
    }
}

/// Everything the trampoline needs, and where each AP goes.
pub struct ApBoot {
    /// The boot tables' CR3 (maps the trampoline one to one).
    pub cr3: u64,
    /// CR4 for the boot tables.
    pub cr4: u64,
    /// Set EFER.NXE in the trampoline (PAE with NX).
    pub nx: bool,
}

/// Starts CPUs 1..`cpus` and waits for each to come online.
pub fn start_aps(
    cpus: usize,
    boot: &ApBoot,
    mem: &dyn Fn(u64, &[u8]),
) -> Result<(), alloc::string::String> {
    apic::enable();
    mem(TRAMPOLINE, arch::ap_trampoline());
    for cpu in 1..cpus.min(MAX_CPUS) {
        let top = core::ptr::addr_of!(AP_STACKS) as u64 + (cpu * AP_STACK) as u64;
        let mut slots = [0u8; 48];
        slots[0..8].copy_from_slice(&boot.cr4.to_le_bytes());
        slots[8..16].copy_from_slice(&boot.cr3.to_le_bytes());
        slots[16..24].copy_from_slice(&top.to_le_bytes());
        slots[24..32].copy_from_slice(&(ap_main as *const () as usize as u64).to_le_bytes());
        slots[32..40].copy_from_slice(&(cpu as u64).to_le_bytes());
        slots[40..48].copy_from_slice(&u64::from(boot.nx).to_le_bytes());
        mem(SLOTS, &slots);
        let target = cpu as u32;
        apic::send_init(target);
        time::delay_us(10_000);
        apic::send_startup(target, (TRAMPOLINE >> 12) as u32);
        time::delay_us(200);
        apic::send_startup(target, (TRAMPOLINE >> 12) as u32);
        let deadline = arch::rdtsc().wrapping_add(time::tsc_hz().saturating_mul(5));
        while online() <= cpu {
            if arch::rdtsc() > deadline {
                return Err(alloc::format!("CPU {cpu} did not come online"));
            }
            core::hint::spin_loop();
        }
    }
    Ok(())
}

/// An AP's first Rust code, on its own stack, on the boot tables.
extern "C" fn ap_main(cpu: usize) -> ! {
    arch::load_gdt();
    crate::trap::load();
    let Some(k) = crate::mm::kernel() else {
        crate::report::fail("smp", "an AP started before the pgd system")
    };
    crate::mm::load_swapper_on_ap(k);
    apic::enable();
    arch::sti();
    kprintln!(
        "cpu {cpu}: online (APIC ID {}), on swapper_pg_dir",
        apic::id()
    );
    ONLINE.fetch_add(1, Ordering::AcqRel);
    crate::run::ap_run(cpu)
}
