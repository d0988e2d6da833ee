//! # pgdcache-kernel — the pgd system on a real MMU
//!
//! A small x86 kernel whose memory manager is the project's own crates,
//! used as libraries: `physmem` (RAM, `struct page`, the buddy allocator
//! with per-CPU page lists), `x86paging` (`swapper_pg_dir`, entry formats),
//! `objcache` (the slab allocator with constructors) and `pgdcache` (the
//! seed: `pgd_alloc`/`pgd_free`, `pgd_ctor`/`pgd_dtor`, `pgd_list`,
//! `change_page_attr`, `vmalloc`, the schemes and the checker).
//!
//! One source tree, two builds: 32-bit (Multiboot 1) for 2-level paging
//! with PSE and PAE, 64-bit (PVH) for 4-level and 5-level. The boot path:
//! entry stub → serial console, GDT, IDT → memory map → `paging_init`
//! (physmem over real RAM, swapper built by x86paging, CR3 loaded with the
//! mode's control bits) → the pgd system with the scheme from the command
//! line → [`work`]: tasks on their own pgds with real context switches, a
//! `change_page_attr` agent with real TLB flushes, vmalloc with real lazy
//! faults, canaries read through every pgd, the closing conversions, and
//! the verdicts of the hardware and of the in-kernel checker.
#![no_std]
#![no_main]

extern crate alloc;

mod apic;
mod arch;
mod bench;
mod bootinfo;
mod cmdline;
mod heap;
#[cfg(target_arch = "x86")]
mod mem;
mod mm;
mod pcpu;
mod report;
mod run;
mod serial;
mod smp;
mod time;
mod trap;
mod work;

use bootinfo::BootInfo;
use core::panic::PanicInfo;
use x86paging::PagingMode;

/// 32-bit entry from the stub: EAX and EBX as Multiboot left them.
#[cfg(target_arch = "x86")]
#[no_mangle]
extern "C" fn kmain32(magic: u32, info: u32) -> ! {
    early_init();
    let boot = bootinfo::multiboot(magic, info.into(), arch::BOOT_PAGE_OFFSET);
    kernel_main(boot, None, &[PagingMode::TwoLevel, PagingMode::Pae])
}

/// 64-bit entry from the stub: the `hvm_start_info` address and whether
/// the stub turned on 5-level paging (0 no, 1 yes, 2 asked but no LA57).
#[cfg(target_arch = "x86_64")]
#[no_mangle]
extern "C" fn kmain64(start_info: u64, la57: u32) -> ! {
    early_init();
    let mode = if la57 == 1 {
        PagingMode::FiveLevel
    } else {
        PagingMode::FourLevel
    };
    if la57 == 2 {
        kprintln!("note: 5-level paging asked for, but this CPU has no LA57");
    }
    let boot = bootinfo::pvh(start_info, mode.page_offset());
    kernel_main(
        boot,
        Some(mode),
        &[PagingMode::FourLevel, PagingMode::FiveLevel],
    )
}

fn early_init() {
    serial::init();
    heap::init();
    arch::load_gdt();
    trap::init();
}

fn kernel_main(
    boot: Result<BootInfo, bootinfo::BootInfoError>,
    booted_mode: Option<PagingMode>,
    build_modes: &[PagingMode],
) -> ! {
    kprintln!(
        "pgdcache-kernel {} ({})",
        env!("CARGO_PKG_VERSION"),
        arch_name()
    );
    let boot = match boot {
        Ok(b) => b,
        Err(e) => report::fail("boot", &alloc::format!("{e}")),
    };
    kprintln!(
        "boot: {} loader, RAM up to {:#x} ({} usable regions), cmdline '{}'",
        boot.loader,
        boot.ram_end,
        boot.regions,
        boot.cmdline
    );
    let params = match cmdline::parse(&boot.cmdline, booted_mode.unwrap_or(build_modes[0])) {
        Ok(p) => p,
        Err(e) => report::fail("cmdline", &e),
    };
    if !build_modes.contains(&params.mode) {
        report::fail(
            "cmdline",
            &alloc::format!(
                "mode {} needs the other kernel build ({})",
                params.mode,
                arch_name()
            ),
        );
    }
    if let Some(booted) = booted_mode.filter(|&m| m != params.mode) {
        // 64-bit: the stub chose 4- or 5-level before long mode.
        report::fail(
            "mode",
            &alloc::format!("{} paging asked for, the CPU runs {booted}", params.mode),
        );
    }
    let tsc = time::calibrate();
    pgdcache::set_clock(|| time::to_ns(arch::rdtsc()));
    kprintln!("tsc: {} MHz (PIT-calibrated)", tsc / 1_000_000);
    smp::NO_IPI.store(params.no_ipi, core::sync::atomic::Ordering::Relaxed);
    let booted = match mm::paging_init(
        params.mode,
        params.scheme,
        params.lock,
        params.cpus,
        boot.ram_end,
    ) {
        Ok(b) => b,
        Err(e) => report::fail("paging_init", &alloc::format!("{e}")),
    };
    kprintln!(
        "paging: {} on, cr0 {:#x} cr3 {:#x} cr4 {:#x} efer {:#x}; {} MiB RAM, {} MiB reserved, heap {} KiB used",
        params.mode,
        arch::read_cr0(),
        arch::read_cr3(),
        arch::read_cr4(),
        arch::rdmsr(arch::MSR_EFER),
        booted.ram >> 20,
        booted.reserved >> 20,
        heap::used() >> 10
    );
    report::event(&alloc::format!(
        "{{\"event\":\"paging\",\"mode\":\"{}\",\"cr3\":{},\"cr4\":{}}}",
        params.mode,
        arch::read_cr3(),
        arch::read_cr4()
    ));
    if let Some(f) = params.fault {
        raise(f);
    }
    if params.bench {
        bench::run(
            booted.k.pm(),
            params.mode,
            params.cpus,
            params.bench_budget_ms,
        );
    }
    if params.cpus > 1 {
        let pm = booted.k.pm();
        let write = |pa: u64, bytes: &[u8]| {
            if let Some(p) = pm.ptr_of(physmem::PhysAddr::new(pa)) {
                // SAFETY: [0x8000, 0x9000) is reserved low memory nothing else
                // uses, mapped by the direct map; `bytes` fits in the page.
                unsafe { core::ptr::copy_nonoverlapping(bytes.as_ptr(), p.as_ptr(), bytes.len()) };
            }
        };
        if let Err(e) = smp::start_aps(params.cpus, &mm::ap_boot(booted.k), &write) {
            report::fail("smp", &e);
        }
        kprintln!("smp: {} CPUs online", smp::online());
    }
    run::run(&booted, &params)
}

/// Raises `f` on purpose: the exception path must report and stop, and
/// the host must call it a crash.
fn raise(f: cmdline::Raise) {
    kprintln!("raising {f:?} on purpose (fault=)");
    match f {
        cmdline::Raise::PageFault => {
            // The first page is never mapped (user part of swapper: empty).
            // SAFETY: this read is meant to fault; the #PF handler stops the
            // kernel, so it never returns a value.
            let v = unsafe { core::ptr::read_volatile(0x10usize as *const u32) };
            kprintln!("read {v:#x} from an unmapped page?");
        }
        // SAFETY: loading selector 0x18 (past the GDT's limit) into DS raises
        // #GP, which stops the kernel.
        cmdline::Raise::GeneralProtection => unsafe {
            core::arch::asm!("mov ds, {0:x}", in(reg) 0x18u32, options(nostack))
        },
        // SAFETY: ud2 raises #UD, which stops the kernel.
        cmdline::Raise::InvalidOpcode => unsafe { core::arch::asm!("ud2", options(nostack)) },
    }
}

fn arch_name() -> &'static str {
    if cfg!(target_arch = "x86") {
        "i386, Multiboot"
    } else {
        "x86_64, PVH"
    }
}

#[panic_handler]
fn panic(info: &PanicInfo<'_>) -> ! {
    serial::print_unlocked(format_args!("\nPANIC: {info}\n"));
    let msg = alloc::format!("{}", info.message());
    report::fail_unlocked("panic", &msg)
}

/// The precompiled i686 `alloc` refers to the unwinder's personality
/// routine; with `panic = "abort"` it is never called.
#[cfg(target_arch = "x86")]
#[no_mangle]
extern "C" fn rust_eh_personality() {}

/// Referenced by the precompiled i686 `alloc`'s landing pads, which
/// `panic = "abort"` never reaches.
#[cfg(target_arch = "x86")]
#[no_mangle]
extern "C" fn _Unwind_Resume() -> ! {
    report::fail_unlocked("unwind", "_Unwind_Resume reached with panic=abort")
}
