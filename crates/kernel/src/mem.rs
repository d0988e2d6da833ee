//! `memcpy`, `memmove`, `memset`, `memcmp`, `bcmp` for the i686 build: the
//! precompiled `core` for `i686-unknown-linux-gnu` expects libc to provide
//! them (on `x86_64-unknown-none`, `compiler_builtins` does).
//!
//! Written in assembly (cdecl) so the compiler cannot turn them back into
//! calls to themselves.

core::arch::global_asm!(
    r#"
    .section .text.mem, "ax"
    .globl memcpy
memcpy:
    pushl %edi
    pushl %esi
    movl 12(%esp), %edi
    movl 16(%esp), %esi
    movl 20(%esp), %ecx
    movl %edi, %eax
    rep movsb
    popl %esi
    popl %edi
    ret

    .globl memmove
memmove:
    pushl %edi
    pushl %esi
    movl 12(%esp), %edi
    movl 16(%esp), %esi
    movl 20(%esp), %ecx
    movl %edi, %eax
    cmpl %esi, %edi
    jbe 1f
    leal -1(%esi,%ecx), %esi
    leal -1(%edi,%ecx), %edi
    std
    rep movsb
    cld
    jmp 2f
1:  rep movsb
2:  popl %esi
    popl %edi
    ret

    .globl memset
memset:
    pushl %edi
    movl 8(%esp), %edi
    movl 12(%esp), %eax
    movl 16(%esp), %ecx
    movl %edi, %edx
    rep stosb
    movl %edx, %eax
    popl %edi
    ret

    .globl memcmp
    .globl bcmp
memcmp:
bcmp:
    pushl %edi
    pushl %esi
    movl 12(%esp), %esi
    movl 16(%esp), %edi
    movl 20(%esp), %ecx
    xorl %eax, %eax
    testl %ecx, %ecx
    jz 4f
3:  movzbl (%esi), %eax
    movzbl (%edi), %edx
    subl %edx, %eax
    jnz 4f
    incl %esi
    incl %edi
    decl %ecx
    jnz 3b
4:  popl %esi
    popl %edi
    ret
"#,
    options(att_syntax)
);
