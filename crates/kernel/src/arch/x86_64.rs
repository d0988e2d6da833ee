//! The 64-bit entry (PVH) and the x86_64 CPU primitives.
//!
//! QEMU's `-kernel` finds the `XEN_ELFNOTE_PHYS32_ENTRY` note and enters
//! `_start32` in 32-bit protected mode, paging off, `EBX` = the physical
//! address of the `hvm_start_info`. The stub looks for `5level` in the
//! command line (5-level paging must be chosen before long mode: CR4.LA57
//! cannot change while paging is on) and, if the CPU has LA57, builds a
//! PML5. Its boot tables map, with 2 MiB pages, the first 1 GiB one to one,
//! at the direct map (`PAGE_OFFSET` of the chosen mode) and at
//! `__START_KERNEL_map`; it enables PAE, long mode, NXE and paging and jumps
//! to the kernel's linked address at `__START_KERNEL_map` + its physical
//! address. `paging_init` then replaces these tables by `swapper_pg_dir`.

use core::arch::{asm, global_asm};

global_asm!(
    r#"
    .section .note.Xen, "a", @note
    .align 4
    .long 4
    .long 8
    .long 18
    .asciz "Xen"
    .quad _start32

    .section .boot.text, "ax"
    .code32
    .globl _start32
_start32:
    cli
    cld
    movl $boot_stack_top, %esp
    movl %ebx, %edi
    lgdt boot_gdt_desc
    /* "5lev" anywhere in the command line asks for 5-level paging:
       ebp = 0 (4-level), 1 (5-level), 2 (asked for, CPU has no LA57) */
    xorl %ebp, %ebp
    movl 24(%edi), %esi
    testl %esi, %esi
    jz 3f
1:  movb (%esi), %al
    testb %al, %al
    jz 3f
    cmpl $0x76656c35, (%esi)
    je 2f
    incl %esi
    jmp 1b
2:  movl $7, %eax
    xorl %ecx, %ecx
    cpuid
    movl $2, %ebp
    btl $16, %ecx
    jnc 3f
    movl $1, %ebp
3:  /* pd: 0..1 GiB in 2 MiB pages */
    movl $boot_pd, %ebx
    xorl %ecx, %ecx
4:  movl %ecx, %eax
    shll $21, %eax
    orl $0x83, %eax
    movl %eax, (%ebx,%ecx,8)
    movl $0, 4(%ebx,%ecx,8)
    incl %ecx
    cmpl $512, %ecx
    jb 4b
    movl $boot_pd, %eax
    orl $3, %eax
    movl %eax, boot_pdpt_low
    movl %eax, boot_pdpt_high + 510 * 8
    movl $boot_pdpt_low, %eax
    orl $3, %eax
    movl %eax, boot_pml4
    movl %eax, boot_pml4 + 273 * 8
    movl $boot_pdpt_high, %eax
    orl $3, %eax
    movl %eax, boot_pml4 + 511 * 8
    movl %cr4, %eax
    orl $0x20, %eax
    cmpl $1, %ebp
    jne 5f
    orl $0x1000, %eax
    movl %eax, %cr4
    movl $boot_pml4, %eax
    orl $3, %eax
    movl %eax, boot_pml5
    movl %eax, boot_pml5 + 273 * 8
    movl %eax, boot_pml5 + 511 * 8
    movl $boot_pml5, %eax
    jmp 6f
5:  movl %eax, %cr4
    movl $boot_pml4, %eax
6:  movl %eax, %cr3
    movl $0xC0000080, %ecx
    rdmsr
    orl $0x900, %eax
    wrmsr
    movl %cr0, %eax
    orl $0x80010000, %eax
    movl %eax, %cr0
    ljmp $0x08, $start64_low

    .code64
start64_low:
    movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    movw %ax, %fs
    movw %ax, %gs
    movabsq $start64_high, %rax
    jmpq *%rax

    .section .boot.data, "aw"
    .align 8
boot_gdt:
    .quad 0
    .quad 0x00af9a000000ffff
    .quad 0x00cf92000000ffff
boot_gdt_desc:
    .word 23
    .long boot_gdt

    .section .boot.bss, "aw", @nobits
    .align 4096
    .globl boot_pml5
boot_pml5:
    .skip 4096
    .globl boot_pml4
boot_pml4:
    .skip 4096
boot_pdpt_low:
    .skip 4096
boot_pdpt_high:
    .skip 4096
boot_pd:
    .skip 4096
    .skip 16384
boot_stack_top:

    .section .text.start64_high, "ax"
start64_high:
    movabsq $kernel_stack_top, %rsp
    movl %edi, %edi
    movl %ebp, %esi
    call kmain64
    ud2

    .section .bss.kernel_stack, "aw", @nobits
    .align 16
    .globl kernel_stack_bottom
kernel_stack_bottom:
    .skip 262144
    .globl kernel_stack_top
kernel_stack_top:

    .section .text.isr, "ax"
    .macro ISR_NOERR n
isr\n:
    pushq $0
    pushq $\n
    jmp isr_common
    .endm
    .macro ISR_ERR n
isr\n:
    pushq $\n
    jmp isr_common
    .endm
"#,
    crate::isr_stubs!(),
    r#"
isr_common:
    pushq %rax
    pushq %rcx
    pushq %rdx
    pushq %rsi
    pushq %rdi
    pushq %r8
    pushq %r9
    pushq %r10
    pushq %r11
    movq %rsp, %rdi
    call trap_entry
    popq %r11
    popq %r10
    popq %r9
    popq %r8
    popq %rdi
    popq %rsi
    popq %rdx
    popq %rcx
    popq %rax
    addq $16, %rsp
    iretq

    .section .rodata.isr_table, "a"
    .align 8
    .globl isr_table
isr_table:
    .irp n, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31,240,255
    .quad isr\n
    .endr

    .section .text.probe, "ax"
    .globl probe_read_u32
probe_read_u32:
    .globl probe_read_insn
probe_read_insn:
    movl (%rdi), %eax
    movl %eax, (%rsi)
    movl $1, %eax
    ret
    .globl probe_write_u32
probe_write_u32:
    .globl probe_write_insn
probe_write_insn:
    movl %esi, (%rdi)
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
    static isr_table: [u64; 34];
    fn probe_read_u32(addr: u64, out: *mut u32) -> u32;
    fn probe_write_u32(addr: u64, val: u32) -> u32;
    static probe_read_insn: u8;
    static probe_write_insn: u8;
    static probe_fixup: u8;
}

/// The registers an exception stub saved, the vector and error code, and
/// what the CPU pushed.
#[repr(C)]
#[derive(Debug)]
pub struct TrapFrame {
    r11: u64,
    r10: u64,
    r9: u64,
    r8: u64,
    rdi: u64,
    rsi: u64,
    rdx: u64,
    rcx: u64,
    rax: u64,
    vector: u64,
    error: u64,
    ip: u64,
    cs: u64,
    flags: u64,
    sp: u64,
    ss: u64,
}

impl TrapFrame {
    /// The exception vector.
    pub fn vector(&self) -> u64 {
        self.vector
    }
    /// The error code (0 where the vector has none).
    pub fn error(&self) -> u64 {
        self.error
    }
    /// The faulting instruction.
    pub fn ip(&self) -> u64 {
        self.ip
    }
    /// Resumes at `ip` on return.
    pub fn set_ip(&mut self, ip: u64) {
        self.ip = ip;
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
    Some(unsafe { (*core::ptr::addr_of!(isr_table))[i] })
}

/// Addresses of the two probe instructions and of the fixup.
pub fn probe_addresses() -> (u64, u64, u64) {
    (
        core::ptr::addr_of!(probe_read_insn) as u64,
        core::ptr::addr_of!(probe_write_insn) as u64,
        core::ptr::addr_of!(probe_fixup) as u64,
    )
}

/// Loads a u32 at `va`; `None` if it faulted.
pub fn probe_read(va: u64) -> Option<u32> {
    let mut v = 0u32;
    // SAFETY: the probe's only access that can fault is resumed at
    // `probe_fixup` by the #PF handler; `v` is a valid local.
    let ok = unsafe { probe_read_u32(va, &mut v) };
    (ok != 0).then_some(v)
}

/// Stores `val` at `va`; false if it faulted.
///
/// # Safety
/// A store that does not fault must not break any Rust invariant: `va` is
/// a page the caller owns (a canary page) or a user page.
pub unsafe fn probe_write(va: u64, val: u32) -> bool {
    // SAFETY: as `probe_read`; the caller vouches for the target.
    unsafe { probe_write_u32(va, val) != 0 }
}

/// Kernel code segment selector.
pub const KERNEL_CS: u16 = 0x08;

/// The kernel GDT: null, 64-bit code, data.
pub static GDT: [u64; 3] = [0, 0x00af_9a00_0000_ffff, 0x00cf_9200_0000_ffff];

#[repr(C, packed)]
struct DescPtr {
    limit: u16,
    base: u64,
}

/// Loads the kernel GDT (at its high address) and reloads every segment.
pub fn load_gdt() {
    let d = DescPtr {
        limit: (core::mem::size_of_val(&GDT) - 1) as u16,
        base: GDT.as_ptr() as u64,
    };
    // SAFETY: same selectors and meanings as the boot GDT.
    unsafe {
        asm!(
            "lgdt [{0}]",
            "push 0x08",
            "lea {1}, [rip + 2f]",
            "push {1}",
            "retfq",
            "2:",
            "mov ax, 0x10",
            "mov ds, ax",
            "mov es, ax",
            "mov ss, ax",
            "mov fs, ax",
            "mov gs, ax",
            in(reg) &d,
            out(reg) _,
            out("ax") _,
        );
    }
}

/// A 64-bit interrupt gate (16 bytes).
pub type IdtEntry = [u64; 2];

/// A not-present gate.
pub const ZERO_GATE: IdtEntry = [0, 0];

/// A present 64-bit interrupt gate to `handler` in the kernel code segment.
pub fn idt_gate(h: u64) -> IdtEntry {
    let lo =
        (h & 0xffff) | (u64::from(KERNEL_CS) << 16) | (0x8e << 40) | (((h >> 16) & 0xffff) << 48);
    [lo, h >> 32]
}

/// Loads the IDT.
///
/// # Safety
/// `idt` must stay valid (static) while interrupts can happen.
pub unsafe fn load_idt(idt: &'static [IdtEntry]) {
    let d = DescPtr {
        limit: (core::mem::size_of_val(idt) - 1) as u16,
        base: idt.as_ptr() as u64,
    };
    // SAFETY: the caller guarantees the table outlives its use.
    unsafe { asm!("lidt [{0}]", in(reg) &d, options(readonly, nostack)) };
}

/// CR2: the linear address of the last page fault.
pub fn read_cr2() -> u64 {
    let v: u64;
    // SAFETY: reading CR2 has no side effect.
    unsafe { asm!("mov {0}, cr2", out(reg) v, options(nomem, nostack)) };
    v
}

/// CR0.
pub fn read_cr0() -> u64 {
    let v: u64;
    // SAFETY: reading CR0 has no side effect.
    unsafe { asm!("mov {0}, cr0", out(reg) v, options(nomem, nostack)) };
    v
}

/// CR3.
pub fn read_cr3() -> u64 {
    let v: u64;
    // SAFETY: reading CR3 has no side effect.
    unsafe { asm!("mov {0}, cr3", out(reg) v, options(nomem, nostack)) };
    v
}

/// CR4.
pub fn read_cr4() -> u64 {
    let v: u64;
    // SAFETY: reading CR4 has no side effect.
    unsafe { asm!("mov {0}, cr4", out(reg) v, options(nomem, nostack)) };
    v
}

/// Loads CR3 (a context switch: flushes every non-global TLB entry).
///
/// # Safety
/// `pa` must be a top-level table that maps the running code, its stack
/// and everything the kernel touches next.
pub unsafe fn write_cr3(pa: u64) {
    // SAFETY: the caller guarantees the new tables map the kernel.
    unsafe { asm!("mov cr3, {0}", in(reg) pa, options(nostack)) };
}

/// Writes CR4.
///
/// # Safety
/// The new value must not change the paging mode (PAE, LA57).
pub unsafe fn write_cr4(v: u64) {
    // SAFETY: the caller keeps the paging mode.
    unsafe { asm!("mov cr4, {0}", in(reg) v, options(nostack)) };
}

/// No extra CR4 bits: `x86_64-unknown-none` is soft-float.
pub const CR4_KEEP: u64 = 0;

/// `invlpg`: drops the TLB entry of `va` (global or not).
pub fn invlpg(va: u64) {
    // SAFETY: invalidating a TLB entry never breaks memory safety.
    unsafe { asm!("invlpg [{0}]", in(reg) va, options(nostack)) };
}

// The application processors' start-up trampoline, copied to physical
// 0x8000: real mode → protected mode → long mode with the boot tables (which
// map this page one to one, the direct map and the kernel image; PML5 when
// the BSP runs 5-level paging) → the kernel's `ap_main`. The BSP fills the
// slots at 0x8f00 before each start-up IPI.
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
    movl 0x8f00, %eax
    movl %eax, %cr4
    movl 0x8f08, %eax
    movl %eax, %cr3
    movl $0xC0000080, %ecx
    rdmsr
    orl $0x900, %eax
    wrmsr
    movl %cr0, %eax
    orl $0x80010000, %eax
    movl %eax, %cr0
    ljmpl $0x18, $(0x8000 + (ap_lm - ap_tramp_start))
    .code64
ap_lm:
    movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    movq 0x8f10, %rsp
    movq 0x8f20, %rdi
    movq 0x8f18, %rax
    call *%rax
    ud2
    .align 8
ap_gdt:
    .quad 0
    .quad 0x00cf9a000000ffff
    .quad 0x00cf92000000ffff
    .quad 0x00af9a000000ffff
ap_gdt_desc:
    .word 31
    .long 0x8000 + (ap_gdt - ap_tramp_start)
ap_tramp_end:
"#,
    options(att_syntax)
);

extern "C" {
    static ap_tramp_start: u8;
    static ap_tramp_end: u8;
    static boot_pml4: u8;
    static boot_pml5: u8;
}

/// The AP trampoline's bytes.
pub fn ap_trampoline() -> &'static [u8] {
    let start = core::ptr::addr_of!(ap_tramp_start);
    let len = core::ptr::addr_of!(ap_tramp_end) as usize - start as usize;
    // SAFETY: both symbols delimit one read-only blob in .rodata.
    unsafe { core::slice::from_raw_parts(start, len) }
}

/// What the trampoline loads into CR3 and CR4 before paging: the boot
/// PML4 (or PML5 with CR4.LA57 when the BSP runs 5-level paging).
pub fn ap_boot_tables(five_level: bool) -> (u64, u64) {
    if five_level {
        (core::ptr::addr_of!(boot_pml5) as u64, 0x1020)
    } else {
        (core::ptr::addr_of!(boot_pml4) as u64, 0x20)
    }
}

/// The stack pointer.
pub fn read_sp() -> usize {
    let sp: usize;
    // SAFETY: reading RSP has no side effect.
    unsafe { asm!("mov {0}, rsp", out(reg) sp, options(nomem, nostack)) };
    sp
}
