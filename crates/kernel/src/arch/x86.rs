//! The 32-bit entry (Multiboot 1) and the i386 CPU primitives.
//!
//! `_start32` runs where QEMU's Multiboot loader leaves it: 32-bit protected
//! mode, paging off, `EAX` = the Multiboot magic, `EBX` = the physical
//! address of the information structure. It loads a flat GDT, turns on SSE
//! (the precompiled `core` for i686 uses it) and PSE, maps the first 16 MiB
//! one to one and `PAGE_OFFSET` (0xC0000000) onto the first 1 GiB with
//! 4 MiB pages — the job of `head.S`'s `pg0` — enables paging and jumps to
//! the kernel's linked (high) address. From then on the kernel runs inside
//! the direct map, as i386 Linux does; `paging_init` replaces these boot
//! tables by `swapper_pg_dir` built by `x86paging`.

use core::arch::{asm, global_asm};

/// `PAGE_OFFSET`: where the boot tables (and later `swapper_pg_dir`) map
/// physical address 0.
pub const BOOT_PAGE_OFFSET: u64 = 0xC000_0000;

global_asm!(
    r#"
    .section .multiboot, "a"
    .align 4
    .long 0x1BADB002
    .long 0x00000003
    .long -(0x1BADB002 + 0x00000003)

    .section .boot.text, "ax"
    .code32
    .globl _start32
_start32:
    cli
    cld
    movl $boot_stack_top, %esp
    movl %eax, %edi
    movl %ebx, %esi
    lgdt boot_gdt_desc
    ljmp $0x08, $1f
1:  movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    movw %ax, %fs
    movw %ax, %gs
    /* SSE: CR0.EM clear, CR0.MP set, CR4.OSFXSR|OSXMMEXCPT; and CR4.PSE */
    movl %cr0, %eax
    andl $0xfffffffb, %eax
    orl $0x2, %eax
    movl %eax, %cr0
    fninit
    movl %cr4, %eax
    orl $0x610, %eax
    movl %eax, %cr4
    /* boot page directory: 0..16 MiB one to one, 0xC0000000 -> 0..1 GiB */
    movl $boot_pgdir, %ebx
    xorl %ecx, %ecx
2:  movl %ecx, %eax
    shll $22, %eax
    orl $0x83, %eax
    movl %eax, 3072(%ebx,%ecx,4)
    cmpl $4, %ecx
    jae 3f
    movl %eax, (%ebx,%ecx,4)
3:  incl %ecx
    cmpl $256, %ecx
    jb 2b
    movl %ebx, %cr3
    movl %cr0, %eax
    orl $0x80010000, %eax
    movl %eax, %cr0
    movl $start32_high, %eax
    jmp *%eax

    /* pae_switch(cr3, cr4): 2-level -> PAE needs paging off for a moment.
       Called at its one-to-one address; touches no memory while paging is
       off. The new tables must map this code one to one and the stack. */
    .globl pae_switch
pae_switch:
    movl 4(%esp), %ecx
    movl 8(%esp), %edx
    movl %cr0, %eax
    andl $0x7fffffff, %eax
    movl %eax, %cr0
    jmp 4f
4:  movl %edx, %cr4
    movl %ecx, %cr3
    orl $0x80000000, %eax
    movl %eax, %cr0
    jmp 5f
5:  ret

    .section .boot.data, "aw"
    .align 8
boot_gdt:
    .quad 0
    .quad 0x00cf9a000000ffff
    .quad 0x00cf92000000ffff
boot_gdt_desc:
    .word 23
    .long boot_gdt

    .section .boot.bss, "aw", @nobits
    .align 4096
    .globl boot_pgdir
boot_pgdir:
    .skip 4096
    .skip 16384
boot_stack_top:

    .section .text.start32_high, "ax"
start32_high:
    movl $kernel_stack_top, %esp
    subl $8, %esp
    pushl %esi
    pushl %edi
    call kmain32
    ud2

    .section .bss.kernel_stack, "aw", @nobits
    .align 16
    .globl kernel_stack_bottom
kernel_stack_bottom:
    .skip 262144
    .globl kernel_stack_top
kernel_stack_top:

    /* Exception entry: one stub per vector pushes (error code, vector). */
    .section .text.isr, "ax"
    .macro ISR_NOERR n
isr\n:
    pushl $0
    pushl $\n
    jmp isr_common
    .endm
    .macro ISR_ERR n
isr\n:
    pushl $\n
    jmp isr_common
    .endm
"#,
    crate::isr_stubs!(),
    r#"
isr_common:
    pushal
    movl %esp, %ebp
    subl $528, %esp
    andl $0xfffffff0, %esp
    fxsave (%esp)
    subl $12, %esp
    pushl %ebp
    call trap_entry
    addl $16, %esp
    fxrstor (%esp)
    movl %ebp, %esp
    popal
    addl $8, %esp
    iretl

    .section .rodata.isr_table, "a"
    .align 4
    .globl isr_table
isr_table:
    .irp n, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31,240,255
    .long isr\n
    .endr

    /* Probes: a load or store that may fault. The #PF handler resumes a
       faulting probe at probe_fixup, which returns 0. */
    .section .text.probe, "ax"
    .globl probe_read_u32
probe_read_u32:
    movl 4(%esp), %ecx
    movl 8(%esp), %edx
    .globl probe_read_insn
probe_read_insn:
    movl (%ecx), %eax
    movl %eax, (%edx)
    movl $1, %eax
    ret
    .globl probe_write_u32
probe_write_u32:
    movl 4(%esp), %ecx
    movl 8(%esp), %edx
    .globl probe_write_insn
probe_write_insn:
    movl %edx, (%ecx)
    movl $1, %eax
    ret
    .globl probe_fixup
probe_fixup:
    xorl %eax, %eax
    ret
"#,
    options(att_syntax)
);

extern "C" {
    fn pae_switch(cr3: u32, cr4: u32);
    static isr_table: [u32; 34];
    fn probe_read_u32(addr: usize, out: *mut u32) -> u32;
    fn probe_write_u32(addr: usize, val: u32) -> u32;
    static probe_read_insn: u8;
    static probe_write_insn: u8;
    static probe_fixup: u8;
}

/// The registers an exception stub saved (`pushal`, vector, error code,
/// and what the CPU pushed).
#[repr(C)]
#[derive(Debug)]
pub struct TrapFrame {
    edi: u32,
    esi: u32,
    ebp: u32,
    esp: u32,
    ebx: u32,
    edx: u32,
    ecx: u32,
    eax: u32,
    vector: u32,
    error: u32,
    ip: u32,
    cs: u32,
    flags: u32,
}

impl TrapFrame {
    /// The exception vector.
    pub fn vector(&self) -> u64 {
        self.vector.into()
    }
    /// The error code (0 where the vector has none).
    pub fn error(&self) -> u64 {
        self.error.into()
    }
    /// The faulting instruction.
    pub fn ip(&self) -> u64 {
        self.ip.into()
    }
    /// Resumes at `ip` on return.
    pub fn set_ip(&mut self, ip: u64) {
        self.ip = ip as u32;
    }
}

/// The address of the entry stub of `vector`: the 32 exceptions, the
/// TLB-shootdown IPI (240) and the spurious vector (255).
pub fn isr_address(vector: usize) -> Option<u64> {
    let i = match vector {
        0..=31 => vector,
        240 => 32,
        255 => 33,
        _ => return None,
    };
    // SAFETY: `isr_table` is a 34-entry read-only table defined above.
    Some(unsafe { (*core::ptr::addr_of!(isr_table))[i] }.into())
}

/// Addresses of the two probe instructions and of the fixup.
pub fn probe_addresses() -> (u64, u64, u64) {
    (
        core::ptr::addr_of!(probe_read_insn) as u64,
        core::ptr::addr_of!(probe_write_insn) as u64,
        core::ptr::addr_of!(probe_fixup) as u64,
    )
}

/// Loads a 32-bit u32 at `va`; `None` if it faulted.
pub fn probe_read(va: u64) -> Option<u32> {
    let mut v = 0u32;
    // SAFETY: the probe's only memory access that can fault is resumed at
    // `probe_fixup` by the #PF handler; `v` is a valid local.
    let ok = unsafe { probe_read_u32(va as usize, &mut v) };
    (ok != 0).then_some(v)
}

/// Stores `val` at `va`; false if it faulted.
///
/// # Safety
/// A store that does not fault must not break any Rust invariant: `va` is
/// a page the caller owns (a canary page) or a user page.
pub unsafe fn probe_write(va: u64, val: u32) -> bool {
    // SAFETY: as `probe_read`; the caller vouches for the target.
    unsafe { probe_write_u32(va as usize, val) != 0 }
}

/// Segment selectors of the kernel GDT.
pub const KERNEL_CS: u16 = 0x08;

/// The kernel GDT: null, flat 32-bit code, flat data.
pub static GDT: [u64; 3] = [0, 0x00cf_9a00_0000_ffff, 0x00cf_9200_0000_ffff];

#[repr(C, packed)]
struct DescPtr {
    limit: u16,
    base: u32,
}

/// Loads the kernel GDT (at its high address) and reloads every segment.
pub fn load_gdt() {
    let d = DescPtr {
        limit: (core::mem::size_of_val(&GDT) - 1) as u16,
        base: GDT.as_ptr() as u32,
    };
    // SAFETY: the GDT is static and has flat code (0x08) and data (0x10)
    // segments, the same as the boot GDT, so nothing changes meaning.
    unsafe {
        asm!(
            "lgdt ({0})",
            "ljmp $0x08, $2f",
            "2:",
            "movw $0x10, %ax",
            "movw %ax, %ds",
            "movw %ax, %es",
            "movw %ax, %ss",
            "movw %ax, %fs",
            "movw %ax, %gs",
            in(reg) &d,
            out("eax") _,
            options(att_syntax)
        );
    }
}

/// An interrupt gate.
pub type IdtEntry = u64;

/// A not-present gate.
pub const ZERO_GATE: IdtEntry = 0;

/// A present 32-bit interrupt gate to `handler` in the kernel code segment.
pub fn idt_gate(handler: u64) -> IdtEntry {
    let h = handler & 0xffff_ffff;
    (h & 0xffff) | (u64::from(KERNEL_CS) << 16) | (0x8e << 40) | ((h >> 16) << 48)
}

/// Loads the IDT.
///
/// # Safety
/// `idt` must stay valid (static) while interrupts can happen.
pub unsafe fn load_idt(idt: &'static [IdtEntry]) {
    let d = DescPtr {
        limit: (core::mem::size_of_val(idt) - 1) as u16,
        base: idt.as_ptr() as u32,
    };
    // SAFETY: the caller guarantees the table outlives its use.
    unsafe { asm!("lidt ({0})", in(reg) &d, options(att_syntax, readonly, nostack)) };
}

/// CR2: the linear address of the last page fault.
pub fn read_cr2() -> u64 {
    let v: u32;
    // SAFETY: reading CR2 has no side effect.
    unsafe { asm!("mov {0}, cr2", out(reg) v, options(nomem, nostack)) };
    v.into()
}

/// CR0.
pub fn read_cr0() -> u64 {
    let v: u32;
    // SAFETY: reading CR0 has no side effect.
    unsafe { asm!("mov {0}, cr0", out(reg) v, options(nomem, nostack)) };
    v.into()
}

/// CR3.
pub fn read_cr3() -> u64 {
    let v: u32;
    // SAFETY: reading CR3 has no side effect.
    unsafe { asm!("mov {0}, cr3", out(reg) v, options(nomem, nostack)) };
    v.into()
}

/// CR4.
pub fn read_cr4() -> u64 {
    let v: u32;
    // SAFETY: reading CR4 has no side effect.
    unsafe { asm!("mov {0}, cr4", out(reg) v, options(nomem, nostack)) };
    v.into()
}

/// Loads CR3 (a context switch: flushes every non-global TLB entry).
///
/// # Safety
/// `pa` must be a page directory (or PAE PDPT) that maps the running code,
/// its stack and everything the kernel touches next.
pub unsafe fn write_cr3(pa: u64) {
    // SAFETY: the caller guarantees the new tables map the kernel.
    unsafe { asm!("mov cr3, {0}", in(reg) pa as u32, options(nostack)) };
}

/// Writes CR4.
///
/// # Safety
/// The new value must not change the paging mode (PAE) while paging is on.
pub unsafe fn write_cr4(v: u64) {
    // SAFETY: the caller keeps the paging mode.
    unsafe { asm!("mov cr4, {0}", in(reg) v as u32, options(nostack)) };
}

/// The extra CR4 bits this kernel always keeps: OSFXSR | OSXMMEXCPT (SSE,
/// which the precompiled i686 `core` uses).
pub const CR4_KEEP: u64 = 0x600;

/// Switches from the boot tables (2-level, PSE) to PAE paging with `cr3`.
/// Paging is off for a few instructions in `pae_switch`, which runs at its
/// one-to-one address.
///
/// # Safety
/// `cr3` must be a PAE PDPT (32-byte aligned, below 4 GiB) whose tables map
/// the boot stub one to one and the kernel at its linked address.
pub unsafe fn switch_to_pae(cr3: u64, cr4: u64) {
    // SAFETY: the caller guarantees the tables; `pae_switch` is mapped one to
    // one by the boot tables and touches no memory while paging is off.
    unsafe { pae_switch(cr3 as u32, (cr4 | CR4_KEEP) as u32) };
}

/// `invlpg`: drops the TLB entry of `va` (global or not).
pub fn invlpg(va: u64) {
    // SAFETY: invalidating a TLB entry never breaks memory safety.
    unsafe { asm!("invlpg [{0}]", in(reg) va as usize, options(nostack)) };
}

// The application processors' start-up trampoline, copied to physical
// 0x8000 (the page the start-up IPI names): real mode → protected mode →
// paging with the tables in the data slots (the boot tables, which map
// this page one to one and the kernel high) → the kernel's `ap_main`. The
// BSP fills the slots at 0x8f00 before each start-up IPI.
global_asm!(
    r#"
    .section .rodata.ap_tramp, "a"
    .globl ap_tramp_start
    .globl ap_tramp_end
    .code16
ap_tramp_start:
    cli
    cld
    xorw %ax, %ax
    movw %ax, %ds
    lgdtl 0x8000 + (ap_gdt_desc - ap_tramp_start)
    movl %cr0, %eax
    orl $1, %eax
    movl %eax, %cr0
    ljmpl $0x08, $(0x8000 + (ap_pm - ap_tramp_start))
    .code32
ap_pm:
    movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    movw %ax, %fs
    movw %ax, %gs
    movl %cr0, %eax
    andl $0xfffffffb, %eax
    orl $0x2, %eax
    movl %eax, %cr0
    fninit
    movl 0x8f00, %eax
    movl %eax, %cr4
    movl 0x8f28, %eax
    testl %eax, %eax
    jz 2f
    movl $0xC0000080, %ecx
    rdmsr
    orl $0x800, %eax
    wrmsr
2:  movl 0x8f08, %eax
    movl %eax, %cr3
    movl %cr0, %eax
    orl $0x80010000, %eax
    movl %eax, %cr0
    movl 0x8f10, %esp
    movl 0x8f20, %eax
    subl $12, %esp
    pushl %eax
    movl 0x8f18, %eax
    call *%eax
    ud2
    .align 8
ap_gdt:
    .quad 0
    .quad 0x00cf9a000000ffff
    .quad 0x00cf92000000ffff
ap_gdt_desc:
    .word 23
    .long 0x8000 + (ap_gdt - ap_tramp_start)
ap_tramp_end:
    .code32
"#,
    options(att_syntax)
);

extern "C" {
    static ap_tramp_start: u8;
    static ap_tramp_end: u8;
    static boot_pgdir: u8;
}

/// The AP trampoline's bytes.
pub fn ap_trampoline() -> &'static [u8] {
    let start = core::ptr::addr_of!(ap_tramp_start);
    let len = core::ptr::addr_of!(ap_tramp_end) as usize - start as usize;
    // SAFETY: both symbols delimit one read-only blob in .rodata.
    unsafe { core::slice::from_raw_parts(start, len) }
}

/// What the trampoline loads into CR3 and CR4 before paging: the boot page
/// directory (2-level) or the PAE PDPT that maps the trampoline one to one.
pub fn ap_boot_tables(pae_pdpt: Option<u64>) -> (u64, u64) {
    match pae_pdpt {
        Some(pdpt) => (pdpt, 0x620),
        None => (core::ptr::addr_of!(boot_pgdir) as u64, 0x610),
    }
}

/// The stack pointer.
pub fn read_sp() -> usize {
    let sp: usize;
    // SAFETY: reading ESP has no side effect.
    unsafe { asm!("mov {0}, esp", out(reg) sp, options(nomem, nostack)) };
    sp
}
