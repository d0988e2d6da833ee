//! The probe program's code and descriptor tables, generated with
//! `iced-x86`'s code assembler: the GDT and IDT gates, the 16-bit boot stub
//! (QEMU), and the 32- and 64-bit access loops with their exception handlers.

use iced_x86::code_asm::*;
use iced_x86::BlockEncoderOptions;

use super::*;
use crate::OracleError;

pub(crate) fn asm_err(e: iced_x86::IcedError) -> OracleError {
    OracleError::Protocol(format!("probe code assembly: {e}"))
}

pub(super) fn seg_desc(base: u32, limit: u32, access: u8, flags: u8) -> u64 {
    let mut d = u64::from(limit & 0xffff);
    d |= u64::from(base & 0xff_ffff) << 16;
    d |= u64::from(access) << 40;
    d |= u64::from((limit >> 16) & 0xf) << 48;
    d |= u64::from(flags & 0xf) << 52;
    d |= u64::from(base >> 24) << 56;
    d
}

/// The GDT shared by all modes (see the `SEL_*` constants).
pub(super) fn gdt_bytes(tss_base: u64) -> Vec<u8> {
    let descs = [
        0,
        seg_desc(0, 0xfffff, 0x9a, 0xc),          // 0x08 code32 DPL0
        seg_desc(0, 0xfffff, 0x92, 0xc),          // 0x10 data DPL0
        seg_desc(0, 0xfffff, 0x9a, 0xa),          // 0x18 code64 DPL0
        seg_desc(0, 0xfffff, 0xfa, 0xc),          // 0x20 code32 DPL3
        seg_desc(0, 0xfffff, 0xf2, 0xc),          // 0x28 data DPL3
        seg_desc(0, 0xfffff, 0xfa, 0xa),          // 0x30 code64 DPL3
        seg_desc(tss_base as u32, 0x67, 0x89, 0), // 0x38 TSS (available)
        tss_base >> 32,                           // upper half of the 64-bit TSS descriptor
        0,
    ];
    descs.iter().flat_map(|d| d.to_le_bytes()).collect()
}

pub(super) fn put_gate(idt: &mut [u8], vector: u64, handler: u64, long: bool, _dpl3: bool) {
    let ty: u8 = 0x8e;
    if long {
        let o = (vector * 16) as usize;
        idt[o..o + 2].copy_from_slice(&(handler as u16).to_le_bytes());
        idt[o + 2..o + 4].copy_from_slice(&SEL_CODE64.to_le_bytes());
        idt[o + 4] = 0;
        idt[o + 5] = ty;
        idt[o + 6..o + 8].copy_from_slice(&((handler >> 16) as u16).to_le_bytes());
        idt[o + 8..o + 12].copy_from_slice(&((handler >> 32) as u32).to_le_bytes());
    } else {
        let o = (vector * 8) as usize;
        idt[o..o + 2].copy_from_slice(&(handler as u16).to_le_bytes());
        idt[o + 2..o + 4].copy_from_slice(&SEL_CODE32.to_le_bytes());
        idt[o + 4] = 0;
        idt[o + 5] = ty;
        idt[o + 6..o + 8].copy_from_slice(&((handler >> 16) as u16).to_le_bytes());
    }
}

pub(super) struct Program {
    pub(super) kcode: Vec<u8>,
    pub(super) ucode: Vec<u8>,
    pub(super) entry: u64,
    pub(super) done: u64,
    pub(super) handlers: Vec<u64>,
}

/// 16-bit real-mode stub + 32-bit phase-1 code in one physical page.
pub(super) fn gen_stub(stub: u64, w: u64, gdt: &[u8]) -> Result<(Vec<u8>, u64), OracleError> {
    let mut page = vec![0u8; 4096];
    let target = (stub + STUB_CODE32) as u32;
    let mut code16 = vec![
        0xfa, // cli
        0x2e, 0x66, 0x0f, 0x01, 0x16, // lgdt cs:[disp16] (32-bit base)
    ];
    code16.extend_from_slice(&(STUB_GDTR_TMP as u16).to_le_bytes());
    code16.extend_from_slice(&[0x0f, 0x20, 0xc0]); // mov eax, cr0
    code16.extend_from_slice(&[0x66, 0x83, 0xc8, 0x01]); // or eax, 1
    code16.extend_from_slice(&[0x0f, 0x22, 0xc0]); // mov cr0, eax
    code16.extend_from_slice(&[0x66, 0xea]); // jmp far ptr16:32
    code16.extend_from_slice(&target.to_le_bytes());
    code16.extend_from_slice(&SEL_CODE32.to_le_bytes());
    page[..code16.len()].copy_from_slice(&code16);
    // Temporary GDTR -> copy of the GDT in this page (physical address).
    let t = STUB_GDTR_TMP as usize;
    page[t..t + 2].copy_from_slice(&GDT_LIMIT.to_le_bytes());
    page[t + 2..t + 6].copy_from_slice(&((stub + STUB_GDT) as u32).to_le_bytes());
    let f = STUB_GDTR_FINAL as usize;
    page[f..f + 2].copy_from_slice(&GDT_LIMIT.to_le_bytes());
    page[f + 2..f + 6].copy_from_slice(&((w + GDT_OFF) as u32).to_le_bytes());
    let g = STUB_GDT as usize;
    page[g..g + gdt.len()].copy_from_slice(gdt);

    let mut a = CodeAssembler::new(32).map_err(asm_err)?;
    let mut done = a.create_label();
    (|| -> Result<(), iced_x86::IcedError> {
        a.mov(ax, i32::from(SEL_DATA))?;
        a.mov(ds, ax)?;
        a.mov(es, ax)?;
        a.mov(ss, ax)?;
        a.mov(fs, ax)?;
        a.mov(gs, ax)?;
        a.lgdt(ptr(stub + STUB_GDTR_FINAL))?;
        a.set_label(&mut done)?;
        a.hlt()?;
        a.jmp(done)?;
        Ok(())
    })()
    .map_err(asm_err)?;
    let r = a
        .assemble_options(
            stub + STUB_CODE32,
            BlockEncoderOptions::RETURN_NEW_INSTRUCTION_OFFSETS,
        )
        .map_err(asm_err)?;
    let done_ip = r.label_ip(&done).map_err(asm_err)?;
    let code = &r.inner.code_buffer;
    let c = STUB_CODE32 as usize;
    page[c..c + code.len()].copy_from_slice(code);
    Ok((page, done_ip))
}

/// The kernel half of a probe program once assembled at its page in the
/// probe window: the IDT handler addresses (vector 14 goes to the #PF
/// handler, every other vector to its stub), the entry and done addresses,
/// and the code bytes.
pub(super) struct KernelCode {
    pub(super) handlers: Vec<u64>,
    pub(super) entry_ip: u64,
    pub(super) done_ip: u64,
    pub(super) kcode: Vec<u8>,
}

/// Assembles the kernel code of a probe program (32- or 64-bit: the caller
/// emitted it into `a`) at `w + PG_KCODE * 4096`.
pub(super) fn assemble_kernel_code(
    a: &mut CodeAssembler,
    w: u64,
    stubs: &[CodeLabel],
    pf: &CodeLabel,
    entry: &CodeLabel,
    done: &CodeLabel,
) -> Result<KernelCode, OracleError> {
    let r = a
        .assemble_options(
            w + PG_KCODE * 4096,
            BlockEncoderOptions::RETURN_NEW_INSTRUCTION_OFFSETS,
        )
        .map_err(asm_err)?;
    let mut handlers = Vec::with_capacity(stubs.len());
    for (v, l) in stubs.iter().enumerate() {
        let label = if v == 14 { pf } else { l };
        handlers.push(r.label_ip(label).map_err(asm_err)?);
    }
    Ok(KernelCode {
        handlers,
        entry_ip: r.label_ip(entry).map_err(asm_err)?,
        done_ip: r.label_ip(done).map_err(asm_err)?,
        kcode: r.inner.code_buffer,
    })
}

pub(super) fn gen_main64(w: u64) -> Result<Program, OracleError> {
    let mut a = CodeAssembler::new(64).map_err(asm_err)?;
    let mut entry = a.create_label();
    let mut next = a.create_label();
    let mut done = a.create_label();
    let mut user = a.create_label();
    let mut kwrite = a.create_label();
    let mut kexec = a.create_label();
    let mut kok = a.create_label();
    let mut pf = a.create_label();
    let mut realpf = a.create_label();
    let mut exc = a.create_label();
    let mut stubs: Vec<CodeLabel> = (0..32).map(|_| a.create_label()).collect();
    let ucode_va = w + PG_UCODE * 4096;
    let res_ptr = |a: &mut CodeAssembler| -> Result<(), iced_x86::IcedError> {
        a.mov(r15, w)?;
        a.mov(rdi, qword_ptr(r15 + CTRL_I as i32))?;
        a.dec(rdi)?;
        a.shl(rdi, 5)?;
        a.lea(rdi, qword_ptr(r15 + rdi + RES_OFF as i32))?;
        Ok(())
    };
    (|| -> Result<(), iced_x86::IcedError> {
        a.set_label(&mut entry)?;
        a.mov(r15, w)?;
        a.lgdt(ptr(r15 + IDTR_OFF as i32 + 0x10))?;
        a.lidt(ptr(r15 + IDTR_OFF as i32))?;
        a.mov(ax, i32::from(SEL_TSS))?;
        a.ltr(ax)?;
        a.set_label(&mut next)?;
        a.mov(r15, w)?;
        a.mov(rsp, r15)?;
        a.add(rsp, KSTACK_TOP as i32)?;
        a.mov(rax, qword_ptr(r15 + CTRL_I as i32))?;
        a.cmp(rax, qword_ptr(r15 + CTRL_N as i32))?;
        a.jae(done)?;
        a.lea(rcx, qword_ptr(rax + 1))?;
        a.mov(qword_ptr(r15 + CTRL_I as i32), rcx)?;
        a.shl(rax, 5)?;
        a.lea(rbx, qword_ptr(r15 + rax + DESC_OFF as i32))?;
        a.lea(rdi, qword_ptr(r15 + rax + RES_OFF as i32))?;
        a.mov(qword_ptr(rdi), 0xff)?;
        a.mov(rsi, qword_ptr(rbx))?;
        a.mov(rdx, qword_ptr(rbx + 16))?;
        a.mov(ecx, dword_ptr(rbx + 8))?;
        a.xor(eax, eax)?;
        a.cmp(dword_ptr(rbx + 12), 0)?;
        a.jne(user)?;
        a.cmp(ecx, 1)?;
        a.je(kwrite)?;
        a.cmp(ecx, 2)?;
        a.je(kexec)?;
        a.mov(rax, qword_ptr(rsi))?;
        a.jmp(kok)?;
        a.set_label(&mut kwrite)?;
        a.mov(qword_ptr(rsi), rdx)?;
        a.jmp(kok)?;
        a.set_label(&mut kexec)?;
        a.jmp(rsi)?;
        a.set_label(&mut kok)?;
        a.mov(qword_ptr(rdi + 8), rax)?;
        a.mov(qword_ptr(rdi), 1)?;
        a.jmp(next)?;
        a.set_label(&mut user)?;
        a.push(i32::from(SEL_UDATA))?;
        a.push(0)?;
        a.push(2)?;
        a.push(i32::from(SEL_UCODE64))?;
        a.mov(rax, ucode_va)?;
        a.push(rax)?;
        a.xor(eax, eax)?;
        a.iretq()?;
        a.set_label(&mut done)?;
        a.hlt()?;
        a.jmp(done)?;
        a.set_label(&mut pf)?;
        res_ptr(&mut a)?;
        a.mov(rcx, cr2)?;
        a.mov(rdx, w + MAGIC_OFF)?;
        a.cmp(rcx, rdx)?;
        a.jne(realpf)?;
        a.mov(qword_ptr(rdi + 8), rax)?;
        a.mov(qword_ptr(rdi), 1)?;
        a.jmp(next)?;
        a.set_label(&mut realpf)?;
        a.pop(rcx)?;
        a.mov(qword_ptr(rdi + 24), rcx)?;
        a.mov(rcx, cr2)?;
        a.mov(qword_ptr(rdi + 16), rcx)?;
        a.mov(qword_ptr(rdi), 2)?;
        a.jmp(next)?;
        a.set_label(&mut exc)?;
        res_ptr(&mut a)?;
        a.pop(rcx)?;
        a.mov(qword_ptr(rdi + 8), rcx)?;
        a.mov(qword_ptr(rdi), 3)?;
        a.jmp(next)?;
        for (v, l) in stubs.iter_mut().enumerate() {
            a.set_label(l)?;
            a.push(v as i32)?;
            a.jmp(exc)?;
        }
        Ok(())
    })()
    .map_err(asm_err)?;
    let KernelCode {
        handlers,
        entry_ip,
        done_ip,
        kcode,
    } = assemble_kernel_code(&mut a, w, &stubs, &pf, &entry, &done)?;

    let mut u = CodeAssembler::new(64).map_err(asm_err)?;
    (|| -> Result<(), iced_x86::IcedError> {
        let mut uw = u.create_label();
        let mut ux = u.create_label();
        u.cmp(ecx, 1)?;
        u.je(uw)?;
        u.cmp(ecx, 2)?;
        u.je(ux)?;
        u.mov(rax, qword_ptr(rsi))?;
        u.mov(rcx, w + MAGIC_OFF)?;
        u.mov(cl, byte_ptr(rcx))?;
        u.set_label(&mut uw)?;
        u.mov(qword_ptr(rsi), rdx)?;
        u.mov(rcx, w + MAGIC_OFF)?;
        u.mov(cl, byte_ptr(rcx))?;
        u.set_label(&mut ux)?;
        u.jmp(rsi)?;
        Ok(())
    })()
    .map_err(asm_err)?;
    let ucode = u.assemble(ucode_va).map_err(asm_err)?;
    Ok(Program {
        kcode,
        ucode,
        entry: entry_ip,
        done: done_ip,
        handlers,
    })
}

pub(super) fn gen_main32(w: u64) -> Result<Program, OracleError> {
    let w32 = w as u32;
    let mut a = CodeAssembler::new(32).map_err(asm_err)?;
    let mut entry = a.create_label();
    let mut next = a.create_label();
    let mut done = a.create_label();
    let mut user = a.create_label();
    let mut kwrite = a.create_label();
    let mut kexec = a.create_label();
    let mut kok = a.create_label();
    let mut pf = a.create_label();
    let mut realpf = a.create_label();
    let mut exc = a.create_label();
    let mut stubs: Vec<CodeLabel> = (0..32).map(|_| a.create_label()).collect();
    let ucode_va = (w + PG_UCODE * 4096) as u32;
    let res_ptr = |a: &mut CodeAssembler| -> Result<(), iced_x86::IcedError> {
        a.mov(ebp, w32)?;
        a.mov(edi, dword_ptr(ebp + CTRL_I as i32))?;
        a.dec(edi)?;
        a.shl(edi, 5)?;
        a.lea(edi, dword_ptr(ebp + edi + RES_OFF as i32))?;
        Ok(())
    };
    (|| -> Result<(), iced_x86::IcedError> {
        a.set_label(&mut entry)?;
        a.mov(ax, i32::from(SEL_UDATA))?;
        a.mov(ds, ax)?;
        a.mov(es, ax)?;
        a.mov(ebp, w32)?;
        a.lidt(ptr(ebp + IDTR_OFF as i32))?;
        a.mov(ax, i32::from(SEL_TSS))?;
        a.ltr(ax)?;
        a.set_label(&mut next)?;
        a.mov(ebp, w32)?;
        a.mov(esp, ebp)?;
        a.add(esp, KSTACK_TOP as i32)?;
        a.mov(eax, dword_ptr(ebp + CTRL_I as i32))?;
        a.cmp(eax, dword_ptr(ebp + CTRL_N as i32))?;
        a.jae(done)?;
        a.lea(ecx, dword_ptr(eax + 1))?;
        a.mov(dword_ptr(ebp + CTRL_I as i32), ecx)?;
        a.shl(eax, 5)?;
        a.lea(ebx, dword_ptr(ebp + eax + DESC_OFF as i32))?;
        a.lea(edi, dword_ptr(ebp + eax + RES_OFF as i32))?;
        a.mov(dword_ptr(edi), 0xff)?;
        a.mov(esi, dword_ptr(ebx))?;
        a.mov(edx, dword_ptr(ebx + 16))?;
        a.mov(ecx, dword_ptr(ebx + 8))?;
        a.xor(eax, eax)?;
        a.cmp(dword_ptr(ebx + 12), 0)?;
        a.jne(user)?;
        a.cmp(ecx, 1)?;
        a.je(kwrite)?;
        a.cmp(ecx, 2)?;
        a.je(kexec)?;
        a.mov(eax, dword_ptr(esi))?;
        a.jmp(kok)?;
        a.set_label(&mut kwrite)?;
        a.mov(dword_ptr(esi), edx)?;
        a.jmp(kok)?;
        a.set_label(&mut kexec)?;
        a.jmp(esi)?;
        a.set_label(&mut kok)?;
        a.mov(dword_ptr(edi + 8), eax)?;
        a.mov(dword_ptr(edi), 1)?;
        a.jmp(next)?;
        a.set_label(&mut user)?;
        a.push(i32::from(SEL_UDATA))?;
        a.push(0)?;
        a.push(2)?;
        a.push(i32::from(SEL_UCODE32))?;
        a.push(ucode_va)?;
        a.xor(eax, eax)?;
        a.iretd()?;
        a.set_label(&mut done)?;
        a.hlt()?;
        a.jmp(done)?;
        a.set_label(&mut pf)?;
        res_ptr(&mut a)?;
        a.mov(ecx, cr2)?;
        a.cmp(ecx, (w + MAGIC_OFF) as u32)?;
        a.jne(realpf)?;
        a.mov(dword_ptr(edi + 8), eax)?;
        a.mov(dword_ptr(edi), 1)?;
        a.jmp(next)?;
        a.set_label(&mut realpf)?;
        a.pop(ecx)?;
        a.mov(dword_ptr(edi + 24), ecx)?;
        a.mov(ecx, cr2)?;
        a.mov(dword_ptr(edi + 16), ecx)?;
        a.mov(dword_ptr(edi), 2)?;
        a.jmp(next)?;
        a.set_label(&mut exc)?;
        res_ptr(&mut a)?;
        a.pop(ecx)?;
        a.mov(dword_ptr(edi + 8), ecx)?;
        a.mov(dword_ptr(edi), 3)?;
        a.jmp(next)?;
        for (v, l) in stubs.iter_mut().enumerate() {
            a.set_label(l)?;
            a.push(v as i32)?;
            a.jmp(exc)?;
        }
        Ok(())
    })()
    .map_err(asm_err)?;
    let KernelCode {
        handlers,
        entry_ip,
        done_ip,
        kcode,
    } = assemble_kernel_code(&mut a, w, &stubs, &pf, &entry, &done)?;

    let mut u = CodeAssembler::new(32).map_err(asm_err)?;
    (|| -> Result<(), iced_x86::IcedError> {
        let mut uw = u.create_label();
        let mut ux = u.create_label();
        u.cmp(ecx, 1)?;
        u.je(uw)?;
        u.cmp(ecx, 2)?;
        u.je(ux)?;
        u.mov(eax, dword_ptr(esi))?;
        u.mov(ecx, (w + MAGIC_OFF) as u32)?;
        u.mov(cl, byte_ptr(ecx))?;
        u.set_label(&mut uw)?;
        u.mov(dword_ptr(esi), edx)?;
        u.mov(ecx, (w + MAGIC_OFF) as u32)?;
        u.mov(cl, byte_ptr(ecx))?;
        u.set_label(&mut ux)?;
        u.jmp(esi)?;
        Ok(())
    })()
    .map_err(asm_err)?;
    let ucode = u.assemble(u64::from(ucode_va)).map_err(asm_err)?;
    Ok(Program {
        kcode,
        ucode,
        entry: entry_ip,
        done: done_ip,
        handlers,
    })
}
