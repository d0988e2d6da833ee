//! `paging_init` and `pgtable_cache_init`: the project's crates become this
//! kernel's memory manager.
//!
//! RAM `[0, ram)` (from the boot memory map) is a [`Lowmem`] at the mode's
//! `PAGE_OFFSET`; `physmem::PhysMemory` takes everything above the kernel
//! image and the aperture (below) into its buddy allocator with per-CPU page
//! lists; `pgdcache::Kernel::new` builds `swapper_pg_dir` with `x86paging`
//! (PSE direct map on 2-level, 2 MiB pages on PAE and 4/5-level, the kernel
//! image at `__START_KERNEL_map` on x86_64), creates `pgd_cache`/`pmd_cache`
//! in `objcache` with the scheme's constructors, and this module loads
//! swapper into CR3 with the mode's control bits. `global_flush_tlb`'s
//! flush is the real one ([`arch::flush_tlb_all`]).

use crate::arch;
use alloc::sync::Arc;
use core::fmt;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use pgdcache::{Kernel, KernelConfig, KernelError, LockKind, Scheme};
use physmem::{Lowmem, PhysMemory};
use x86paging::PagingMode;

/// The "graphics aperture": 4 MiB of reserved RAM at physical 16 MiB (one
/// 4 MiB PSE page on 2-level, two 2 MiB pages elsewhere) whose pages hold
/// canaries. Its direct-map pages are what the conversion agent flips with
/// `change_page_attr`, as the AGP/X driver flipped its pages.
pub const APERTURE: u64 = 16 << 20;
/// Size of the aperture.
pub const APERTURE_BYTES: u64 = 4 << 20;
/// The most RAM the kernel uses (its heap holds `mem_map`).
pub const RAM_LIMIT: u64 = 256 << 20;
/// The least RAM it boots with.
pub const RAM_MIN: u64 = 48 << 20;

static KERNEL: spin::Once<Kernel<Lowmem>> = spin::Once::new();
static PAE: AtomicBool = AtomicBool::new(false);
/// Real TLB flushes done for `global_flush_tlb`.
pub static TLB_FLUSHES: AtomicU64 = AtomicU64::new(0);

extern "C" {
    static __kernel_end: u8;
}

/// The pgd system, once booted.
pub fn kernel() -> Option<&'static Kernel<Lowmem>> {
    KERNEL.get()
}

/// True when running PAE paging.
pub fn is_pae() -> bool {
    PAE.load(Ordering::Relaxed)
}

/// Why the memory manager could not start.
#[derive(Debug)]
pub enum BootFail {
    /// Less RAM than the kernel needs.
    RamTooSmall(u64),
    /// The kernel image reaches beyond what its mappings cover.
    ImageTooBig(u64),
    /// The CPU is not in the paging mode asked for (no LA57).
    ModeUnavailable(PagingMode),
    /// The pgd system refused to boot.
    Kernel(KernelError),
}

impl fmt::Display for BootFail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BootFail::RamTooSmall(r) => {
                write!(
                    f,
                    "{} MiB of RAM; at least {} MiB needed",
                    r >> 20,
                    RAM_MIN >> 20
                )
            }
            BootFail::ImageTooBig(e) => write!(f, "kernel image ends at {e:#x}, beyond 16 MiB"),
            BootFail::ModeUnavailable(m) => write!(f, "this CPU cannot run {m} paging"),
            BootFail::Kernel(e) => write!(f, "{e}"),
        }
    }
}

/// The kernel image's physical end.
fn kernel_end_phys() -> u64 {
    let end = core::ptr::addr_of!(__kernel_end) as u64;
    end.wrapping_sub(kernel_base())
}

/// Where the kernel is linked: `PAGE_OFFSET` (i386) or `__START_KERNEL_map`.
fn kernel_base() -> u64 {
    if cfg!(target_arch = "x86") {
        0xC000_0000
    } else {
        x86paging::layout::START_KERNEL_MAP
    }
}

/// What [`paging_init`] set up.
pub struct Booted {
    /// The pgd system.
    pub k: &'static Kernel<Lowmem>,
    /// RAM in use.
    pub ram: u64,
    /// Reserved prefix (BIOS area, kernel image, aperture).
    pub reserved: u64,
}

/// Boots the memory manager over `[0, ram_end)` and switches to
/// `swapper_pg_dir`.
pub fn paging_init(
    mode: PagingMode,
    scheme: Scheme,
    lock: LockKind,
    cpus: usize,
    ram_end: u64,
) -> Result<Booted, BootFail> {
    let ram = ram_end.min(RAM_LIMIT) & !0xfff;
    if ram < RAM_MIN {
        return Err(BootFail::RamTooSmall(ram));
    }
    let end = kernel_end_phys();
    if end > APERTURE {
        return Err(BootFail::ImageTooBig(end));
    }
    let reserved = APERTURE + APERTURE_BYTES;
    let base = NonNull::new(mode.page_offset() as usize as *mut u8)
        .ok_or(BootFail::ModeUnavailable(mode))?;
    // SAFETY: the boot tables map `[0, 1 GiB)` at `PAGE_OFFSET` and `ram` is
    // at most 256 MiB of RAM from the memory map; swapper_pg_dir maps the
    // same range at the same address before the boot tables go away.
    // Page-table frames are only touched through this `Lowmem` (atomics);
    // the kernel's own raw accesses go to reserved frames or to user pages
    // it owns while no other CPU runs.
    let mem = unsafe { Lowmem::new(base, ram) };
    physmem::pcp::set_cpu_id_fn(|| Some(crate::smp::this_cpu()));
    let pm = Arc::new(PhysMemory::with_memory(mem, reserved));
    let mut cfg = KernelConfig::new(mode, scheme);
    cfg.cpus = cpus;
    cfg.lock = lock;
    let k = Kernel::new(pm, &cfg).map_err(BootFail::Kernel)?;
    // global_flush_tlb: this CPU's TLB, then every other CPU's by IPI.
    k.set_flush_hook(|| {
        arch::flush_tlb_all();
        crate::smp::flush_tlb_others();
        TLB_FLUSHES.fetch_add(1, Ordering::Relaxed);
    });
    crate::apic::set_base(
        k.kernel_space()
            .layout
            .fix_to_virt(x86paging::layout::FIX_APIC_BASE),
    );
    let k = KERNEL.call_once(|| k);
    load_swapper(k)?;
    Ok(Booted { k, ram, reserved })
}

/// How an AP reaches the kernel before it can load swapper: the boot
/// tables (2-level, 4/5-level) or the PAE PDPT `load_swapper` used.
pub fn ap_boot(k: &Kernel<Lowmem>) -> crate::smp::ApBoot {
    let mode = k.mode();
    #[cfg(target_arch = "x86")]
    let (cr3, cr4) = arch::ap_boot_tables(
        (mode == PagingMode::Pae)
            .then(|| (core::ptr::addr_of!(BOOT_PDPT) as u64).wrapping_sub(kernel_base())),
    );
    #[cfg(target_arch = "x86_64")]
    let (cr3, cr4) = arch::ap_boot_tables(mode == PagingMode::FiveLevel);
    crate::smp::ApBoot {
        cr3,
        cr4,
        nx: mode == PagingMode::Pae,
    }
}

/// An AP leaves the boot tables for swapper_pg_dir with the mode's bits.
pub fn load_swapper_on_ap(k: &Kernel<Lowmem>) {
    let cr = k.kernel_space().cr_values();
    if cr.efer & arch::EFER_NXE != 0 {
        let efer = arch::rdmsr(arch::MSR_EFER);
        // SAFETY: NXE only gives the XD bit its meaning.
        unsafe { arch::wrmsr(arch::MSR_EFER, efer | arch::EFER_NXE) };
    }
    // SAFETY: the AP runs in the mode swapper was built for (the trampoline
    // chose PAE/LA57 like the BSP), and swapper maps the kernel where the
    // boot tables did.
    unsafe {
        arch::write_cr4(cr.cr4 | arch::CR4_KEEP);
        arch::write_cr3(cr.cr3);
    }
}

#[cfg(target_arch = "x86")]
#[repr(C, align(32))]
struct Pdpt([u64; 4]);

/// The PAE PDPT used for the moment paging is off (see `switch_to_pae`).
#[cfg(target_arch = "x86")]
static mut BOOT_PDPT: Pdpt = Pdpt([0; 4]);

/// Loads `swapper_pg_dir` with the mode's CR4/EFER bits.
fn load_swapper(k: &Kernel<Lowmem>) -> Result<(), BootFail> {
    let ks = k.kernel_space();
    let cr = ks.cr_values();
    if cr.efer & arch::EFER_NXE != 0 {
        let efer = arch::rdmsr(arch::MSR_EFER);
        // SAFETY: NXE only makes the XD bit meaningful; boot tables have none.
        unsafe { arch::wrmsr(arch::MSR_EFER, efer | arch::EFER_NXE) };
    }
    let cr4 = cr.cr4 | arch::CR4_KEEP;
    match ks.mode {
        PagingMode::TwoLevel => {
            // SAFETY: swapper maps the kernel (inside the direct map) exactly
            // where the boot tables did; same mode (PSE is already on).
            unsafe {
                arch::write_cr4(cr4);
                arch::write_cr3(cr.cr3);
            }
        }
        #[cfg(target_arch = "x86")]
        PagingMode::Pae => {
            PAE.store(true, Ordering::Relaxed);
            let kpmd = ks.kernel_pmd().ok_or(BootFail::ModeUnavailable(ks.mode))?;
            let e = kpmd.as_u64() | 1;
            let pdpt = core::ptr::addr_of_mut!(BOOT_PDPT);
            // SAFETY: single CPU, nothing else uses BOOT_PDPT.
            unsafe { (*pdpt).0 = [e, 0, 0, e] };
            let pdpt_pa = (pdpt as u64).wrapping_sub(kernel_base());
            // SAFETY: BOOT_PDPT maps linear 0..1 GiB and 3..4 GiB through the
            // kernel pmd (the direct map), so both the one-to-one trampoline
            // and the kernel at PAGE_OFFSET are mapped; it is 32-byte aligned
            // and below 4 GiB.
            unsafe {
                arch::switch_to_pae(pdpt_pa, cr4);
                arch::write_cr3(cr.cr3);
            }
        }
        #[cfg(not(target_arch = "x86"))]
        PagingMode::Pae => return Err(BootFail::ModeUnavailable(ks.mode)),
        PagingMode::FourLevel | PagingMode::FiveLevel => {
            let la57 = arch::read_cr4() & arch::CR4_LA57 != 0;
            if la57 != (ks.mode == PagingMode::FiveLevel) {
                return Err(BootFail::ModeUnavailable(ks.mode));
            }
            // SAFETY: swapper maps the kernel image at __START_KERNEL_map and
            // the direct map at PAGE_OFFSET, as the boot tables did; CR4 keeps
            // PAE and LA57.
            unsafe {
                arch::write_cr4(cr4);
                arch::write_cr3(cr.cr3);
            }
        }
    }
    Ok(())
}
