//! Real-execution probes: a boot program, generated at run time with
//! `iced-x86`'s code assembler, that performs loads, stores and instruction
//! fetches through the page tables under test and reports what happened.
//!
//! Why: QEMU's debug walker (and KVM_TRANSLATE) ignore reserved bits and
//! permissions. Only a real access makes the MMU check U/S, R/W, NX, SMEP,
//! SMAP, WP and reserved bits and produce the architectural #PF error code.
//!
//! How it is wired, all inside the image's own tables:
//!
//! * **Window.** The program, its GDT/TSS/IDT, stack and result pages live in
//!   a *probe window*: [`WINDOW_PAGES`] 4 KiB pages at a linear address `W`
//!   below 4 GiB that the image leaves unmapped. The planner finds a
//!   non-present entry (top level first, down to the page directory) whose
//!   region contains no probed address, and splices fresh tables under it.
//!   Only non-present entries are written, so every existing translation is
//!   unchanged. Frames for the window come from RAM that the image does not
//!   occupy and that no probed address maps to. If no such slot exists the
//!   probe fails with [`OracleError::Unsupported`]: reserve an unmapped
//!   region (4 MiB / 2 MiB aligned, below 4 GiB) to make room.
//! * **Boot (QEMU).** The gdbstub cannot set GDTR/IDTR, so a 16-bit stub in a
//!   free page below 640 KiB (entered from reset by pointing CS:IP at it)
//!   loads a temporary GDT, enters 32-bit protected mode, loads flat data
//!   segments and the final GDTR (linear address inside the window) and stops
//!   at a breakpoint. The host then turns paging on with the image's EFER,
//!   CR4, CR3, CR0 (via `P` packets), writes CS = 64-bit selector in long
//!   mode (QEMU re-reads the descriptor through the new page tables), points
//!   RIP at the program and continues. Under KVM the registers are set
//!   directly and the stub is not needed.
//! * **Program.** A loop over an access table: for each access it records
//!   "started", performs it at CPL0 or (after `iret`) at CPL3, and records
//!   the value. Every exit path ends by jumping back to the loop with a fresh
//!   stack: the #PF handler records CR2 and the error code, other exception
//!   vectors record their number. User code and instruction-fetch targets
//!   report success by touching a never-mapped *magic* address in the window:
//!   the #PF handler recognizes its CR2 and records "ok" with the value in
//!   RAX (a DPL3 `int` gate would be simpler, but PVM raises #UD on it).
//!   After the last access the program reaches `hlt` (a breakpoint under
//!   QEMU, a `Hlt` exit under KVM); the host reads the results back.
//! * **Fetches.** For an [`AccessKind::Exec`] access the host writes a 7- or
//!   12-byte "touch the magic address" stub ([`Plan::exec_stub`]) at the
//!   target (through the page tables, ignoring permissions), then the program
//!   jumps there. This clobbers those bytes of the target page.
//!
//! Loads and stores are 4 bytes wide in 32-bit modes and 8 bytes in long mode.
//! Probing has side effects the debug walk does not: A/D bits get set in the
//! image's entries, and stores modify target memory.

use std::collections::HashSet;
use std::time::Duration;

use iced_x86::code_asm::*;
use iced_x86::BlockEncoderOptions;

use crate::image::{PagingImage, PagingMode, CR4_PSE};
use crate::qemu::{is_ram, ram_size_for, QemuConfig, Session};
use crate::{Access, AccessKind, OracleError, ProbeOutcome};

/// Pages in the probe window.
pub const WINDOW_PAGES: u64 = 10;
/// Most accesses performed by one run of the program.
pub const MAX_BATCH: usize = 256;

const PG_K: u64 = 0; // GDT, TSS, IDTR/GDTR images
const PG_IDT: u64 = 1;
const PG_KCODE: u64 = 2;
const PG_KSTACK: u64 = 3;
const PG_CTRL: u64 = 4;
const PG_DESC: u64 = 5; // 2 pages
const PG_RES: u64 = 7; // 2 pages
const PG_UCODE: u64 = 9;

const GDT_OFF: u64 = 0;
const TSS_OFF: u64 = 0x100;
const IDTR_OFF: u64 = 0x200;
const GDT_LIMIT: u16 = 0x4f;
const KSTACK_TOP: u64 = PG_KSTACK * 4096 + 4096 - 64;
const CTRL_N: u64 = PG_CTRL * 4096;
const CTRL_I: u64 = PG_CTRL * 4096 + 8;
const DESC_OFF: u64 = PG_DESC * 4096;
const RES_OFF: u64 = PG_RES * 4096;
/// Offset in the window of the "report success" address: inside the
/// window's page table but never mapped, so any access to it faults at any
/// CPL and the #PF handler recognizes CR2.
const MAGIC_OFF: u64 = 0x10_000;

const SEL_CODE32: u16 = 0x08;
const SEL_DATA: u16 = 0x10;
const SEL_CODE64: u16 = 0x18;
const SEL_UCODE32: u16 = 0x23;
const SEL_UDATA: u16 = 0x2b;
const SEL_UCODE64: u16 = 0x33;
const SEL_TSS: u16 = 0x38;

// Stub page layout (physical, below 640 KiB).
const STUB_GDTR_TMP: u64 = 0x40;
const STUB_GDTR_FINAL: u64 = 0x50;
const STUB_GDT: u64 = 0x80;
const STUB_CODE32: u64 = 0x200;

const P: u64 = 1;
const RW: u64 = 2;
const US: u64 = 4;
const PS: u64 = 0x80;
const NX: u64 = 1 << 63;

fn asm_err(e: iced_x86::IcedError) -> OracleError {
    OracleError::Protocol(format!("probe code assembly: {e}"))
}

/// Shape of one paging level: index shift and index width.
#[derive(Clone, Copy, Debug)]
struct Level {
    shift: u32,
    bits: u32,
}

fn levels(mode: PagingMode) -> Vec<Level> {
    let l = |shift, bits| Level { shift, bits };
    match mode {
        PagingMode::TwoLevel => vec![l(22, 10), l(12, 10)],
        PagingMode::Pae => vec![l(30, 2), l(21, 9), l(12, 9)],
        PagingMode::FourLevel => vec![l(39, 9), l(30, 9), l(21, 9), l(12, 9)],
        PagingMode::FiveLevel => vec![l(48, 9), l(39, 9), l(30, 9), l(21, 9), l(12, 9)],
    }
}

fn top_table(img: &PagingImage) -> u64 {
    match img.desc.mode {
        PagingMode::TwoLevel => img.desc.cr3 & 0xffff_f000,
        PagingMode::Pae => img.desc.cr3 & 0xffff_ffe0,
        _ => img.desc.cr3 & 0x000f_ffff_ffff_f000,
    }
}

fn next_table(mode: PagingMode, e: u64) -> u64 {
    match mode {
        PagingMode::TwoLevel => e & 0xffff_f000,
        _ => e & 0x000f_ffff_ffff_f000,
    }
}

/// Whether entry `e` at level `li` is a large-page leaf.
fn is_leaf(img: &PagingImage, li: usize, nlev: usize, e: u64) -> bool {
    let mode = img.desc.mode;
    if li == nlev - 1 {
        return true;
    }
    match mode {
        PagingMode::TwoLevel => e & PS != 0 && img.desc.cr4 & CR4_PSE != 0,
        PagingMode::Pae => li == 1 && e & PS != 0,
        _ => li >= nlev - 3 && e & PS != 0,
    }
}

/// Host-side walk that ignores permissions and reserved bits (like QEMU's
/// debug walker); used only to keep the window's frames away from probed
/// targets.
fn host_walk(img: &PagingImage, va: u64) -> Option<u64> {
    let mode = img.desc.mode;
    let lv = levels(mode);
    let esz = mode.entry_size();
    if mode.is_long() {
        let bits = if mode == PagingMode::FiveLevel {
            57
        } else {
            48
        };
        if crate::qemu::canonical(va, bits) != va {
            return None;
        }
    }
    let mut table = top_table(img);
    for (li, l) in lv.iter().enumerate() {
        let idx = (va >> l.shift) & ((1 << l.bits) - 1);
        let e = img.read_phys(table + idx * esz, esz as usize)?;
        if e & P == 0 {
            return None;
        }
        if is_leaf(img, li, lv.len(), e) {
            let size = 1u64 << l.shift;
            let base = if mode == PagingMode::TwoLevel && li == 0 {
                (e & 0xffc0_0000) | ((e >> 13) & 0xff) << 32
            } else {
                e & 0x000f_ffff_ffff_f000 & !(size - 1)
            };
            return Some(base | (va & (size - 1)));
        }
        table = next_table(mode, e);
    }
    None
}

/// Every page-table frame reachable from CR3 (as far as the image holds the
/// tables). Stores and fetches aimed at these frames are refused: they would
/// change the tables under test.
pub fn table_frames(img: &PagingImage) -> HashSet<u64> {
    let mode = img.desc.mode;
    let lv = levels(mode);
    let esz = mode.entry_size();
    let mut out = HashSet::new();
    let mut seen = HashSet::new();
    let mut stack = vec![(top_table(img), 0usize)];
    while let Some((table, li)) = stack.pop() {
        if !seen.insert((table, li)) {
            continue;
        }
        out.insert(table & !0xfff);
        if li + 1 == lv.len() {
            continue;
        }
        for i in 0..1u64 << lv[li].bits {
            let Some(e) = img.read_phys(table + i * esz, esz as usize) else {
                break;
            };
            if e & P != 0 && !is_leaf(img, li, lv.len(), e) {
                stack.push((next_table(mode, e), li + 1));
            }
        }
    }
    out
}

/// Where the window goes: the non-present entry to fill.
#[derive(Clone, Copy, Debug)]
struct Slot {
    table: u64,
    index: u64,
    level: usize,
    va: u64,
}

struct Finder<'a> {
    img: &'a PagingImage,
    lv: Vec<Level>,
    avoid: &'a [u64],
    need_user: bool,
}

impl Finder<'_> {
    fn region_free(&self, va: u64, size: u64) -> bool {
        !self
            .avoid
            .iter()
            .any(|&a| a.wrapping_sub(va) < size || a.wrapping_add(7).wrapping_sub(va) < size)
    }

    fn search(&self, table: u64, li: usize, base: u64, user_ok: bool) -> Option<Slot> {
        let mode = self.img.desc.mode;
        let esz = mode.entry_size();
        let l = self.lv[li];
        let n = 1u64 << l.bits;
        let nlev = self.lv.len();
        let mut entries = Vec::with_capacity(n as usize);
        for i in 0..n {
            entries.push(self.img.read_phys(table + i * esz, esz as usize)?);
        }
        let size = 1u64 << l.shift;
        // Only windows below 4 GiB (the 32-bit boot code loads the GDTR).
        let va_of = |i: u64| base + i * size;
        if li < nlev - 1 && (user_ok || !self.need_user) {
            for i in 0..n {
                if entries[i as usize] & P == 0
                    && va_of(i) < 1 << 32
                    && self.region_free(va_of(i), size)
                {
                    return Some(Slot {
                        table,
                        index: i,
                        level: li,
                        va: va_of(i),
                    });
                }
            }
        }
        if li + 2 >= nlev {
            return None;
        }
        for i in 0..n {
            let e = entries[i as usize];
            if e & P == 0 || is_leaf(self.img, li, nlev, e) || va_of(i) >= 1 << 32 {
                continue;
            }
            let child_ok = user_ok
                && if mode == PagingMode::Pae && li == 0 {
                    true
                } else {
                    e & US != 0 && e & RW != 0 && e & NX == 0
                };
            if let Some(s) = self.search(next_table(mode, e), li + 1, va_of(i), child_ok) {
                return Some(s);
            }
        }
        None
    }
}

/// A physical frame allocator over free RAM.
struct Frames<'a> {
    img: &'a PagingImage,
    excluded: HashSet<u64>,
    usable: &'a dyn Fn(u64) -> bool,
    next: u64,
}

impl Frames<'_> {
    fn free(&self, f: u64) -> bool {
        if self.excluded.contains(&f) || !(self.usable)(f) {
            return false;
        }
        !self
            .img
            .data
            .iter()
            .any(|(g, b)| f < g.saturating_add(b.len() as u64) && *g < f + 4096)
    }

    fn alloc(&mut self, limit: u64) -> Result<u64, OracleError> {
        while self.next + 4096 <= limit {
            let f = self.next;
            self.next += 4096;
            if (0xa_0000..0x10_0000).contains(&f) {
                continue;
            }
            if self.free(f) {
                self.excluded.insert(f);
                return Ok(f);
            }
        }
        Err(OracleError::Unsupported(format!(
            "no free RAM frame below {limit:#x} for the probe program"
        )))
    }
}

/// Everything needed to run probes on one image.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Paging mode.
    pub mode: PagingMode,
    /// Linear base of the probe window.
    pub window: u64,
    /// Physical frame of each window page.
    pub frames: Vec<u64>,
    /// Physical writes to apply on top of the image (patched table frames,
    /// new tables, window pages, boot stub).
    pub writes: Vec<(u64, Vec<u8>)>,
    /// Physical address of the 16-bit boot stub (QEMU only).
    pub stub: u64,
    /// Linear address of the stub's final breakpoint.
    pub stub_done: u64,
    /// Linear address of the program's entry.
    pub entry: u64,
    /// Linear address of the program's final `hlt`.
    pub done: u64,
}

impl Plan {
    /// Linear address of window page `page` + `off`.
    fn va(&self, off: u64) -> u64 {
        self.window + off
    }

    /// The "report success" stub written at fetch targets: load a byte from
    /// the window's never-mapped magic address (`mov rcx/ecx, imm; mov cl,
    /// [rcx/ecx]`), which faults with a CR2 the #PF handler recognizes.
    pub fn exec_stub(&self) -> Vec<u8> {
        let magic = self.window + MAGIC_OFF;
        let mut v = Vec::with_capacity(12);
        if self.mode.is_long() {
            v.extend_from_slice(&[0x48, 0xb9]);
            v.extend_from_slice(&magic.to_le_bytes());
        } else {
            v.push(0xb9);
            v.extend_from_slice(&(magic as u32).to_le_bytes());
        }
        v.extend_from_slice(&[0x8a, 0x09]);
        v
    }

    /// True if `va` falls in the window's page-table slot.
    pub fn in_window(&self, va: u64) -> bool {
        va >= self.window && va < self.window + WINDOW_PAGES * 4096
    }
}

/// Plan probes for `accesses` on `img`. `usable(frame)` says whether a 4 KiB
/// frame is RAM the backend can use.
pub fn plan(
    img: &PagingImage,
    accesses: &[Access],
    usable: &dyn Fn(u64) -> bool,
    need_stub: bool,
) -> Result<Plan, OracleError> {
    let mode = img.desc.mode;
    let long = mode.is_long();
    let lv = levels(mode);
    let nlev = lv.len();
    let esz = mode.entry_size();
    let avoid: Vec<u64> = accesses.iter().map(|a| a.va).collect();
    let need_user = accesses.iter().any(|a| a.user);
    let top = top_table(img);
    let mut finder = Finder {
        img,
        lv: lv.clone(),
        avoid: &avoid,
        need_user,
    };
    let slot = match finder.search(top, 0, 0, true) {
        Some(s) => s,
        None if need_user => {
            finder.need_user = false;
            finder.search(top, 0, 0, true).ok_or_else(|| {
                OracleError::Unsupported("no unmapped slot below 4 GiB for the probe window".into())
            })?;
            return Err(OracleError::Unsupported(
                "no unmapped slot below 4 GiB reachable through user-accessible entries; \
                 user-mode probes impossible"
                    .into(),
            ));
        }
        None => {
            return Err(OracleError::Unsupported(
                "no unmapped slot below 4 GiB for the probe window".into(),
            ))
        }
    };
    let w = slot.va;

    if !long {
        if let Some(a) = accesses.iter().find(|a| a.va > u64::from(u32::MAX)) {
            return Err(OracleError::Unsupported(format!(
                "{:#x} is not a 32-bit linear address",
                a.va
            )));
        }
    }
    let tables = table_frames(img);
    for a in accesses.iter().filter(|a| a.kind != AccessKind::Read) {
        for off in [0u64, 15] {
            if let Some(pa) = host_walk(img, a.va.wrapping_add(off)) {
                if tables.contains(&(pa & !0xfff)) {
                    return Err(OracleError::Unsupported(format!(
                        "{:?} at {:#x} targets page-table frame {:#x}: refusing to modify \
                         the tables under test",
                        a.kind,
                        a.va,
                        pa & !0xfff
                    )));
                }
            }
        }
    }
    let mut excluded = HashSet::new();
    for a in accesses {
        for off in [0u64, 15] {
            if let Some(pa) = host_walk(img, a.va.wrapping_add(off)) {
                excluded.insert(pa & !0xfff);
            }
        }
    }
    let mut frames_alloc = Frames {
        img,
        excluded,
        usable,
        next: 0x1000,
    };
    let limit = 0xc000_0000;
    let stub = if need_stub {
        frames_alloc.alloc(0xa_0000)?
    } else {
        0
    };
    frames_alloc.next = frames_alloc.next.max(0x10_0000);
    let mut frames = Vec::new();
    for _ in 0..WINDOW_PAGES {
        frames.push(frames_alloc.alloc(limit)?);
    }
    let new_tables: Vec<u64> = (slot.level + 1..nlev)
        .map(|_| frames_alloc.alloc(limit))
        .collect::<Result<_, _>>()?;

    let mut writes: Vec<(u64, Vec<u8>)> = Vec::new();
    let nonleaf = |li: usize| {
        if mode == PagingMode::Pae && li == 0 {
            P
        } else {
            P | RW | US
        }
    };
    let entry_bytes = |v: u64| v.to_le_bytes()[..esz as usize].to_vec();
    writes.push((
        slot.table + slot.index * esz,
        entry_bytes(new_tables[0] | nonleaf(slot.level)),
    ));
    for (k, &t) in new_tables.iter().enumerate() {
        let li = slot.level + 1 + k;
        let mut page = vec![0u8; 4096];
        if li < nlev - 1 {
            page[..esz as usize].copy_from_slice(&entry_bytes(new_tables[k + 1] | nonleaf(li)));
        } else {
            for (i, &f) in frames.iter().enumerate() {
                let user = i as u64 == PG_UCODE;
                let v = f | P | RW | if user { US } else { 0 };
                let o = i * esz as usize;
                page[o..o + esz as usize].copy_from_slice(&entry_bytes(v));
            }
        }
        writes.push((t, page));
    }

    // Program.
    let prog = if long { gen_main64(w)? } else { gen_main32(w)? };
    let mut kpage = vec![0u8; 4096];
    let gdt = gdt_bytes(w + TSS_OFF);
    kpage[GDT_OFF as usize..GDT_OFF as usize + gdt.len()].copy_from_slice(&gdt);
    // TSS: ESP0/RSP0 at +4, SS0 at +8 (32-bit), I/O map base beyond limit.
    let tss = TSS_OFF as usize;
    let top_of_stack = w + KSTACK_TOP;
    if long {
        kpage[tss + 4..tss + 12].copy_from_slice(&top_of_stack.to_le_bytes());
    } else {
        kpage[tss + 4..tss + 8].copy_from_slice(&(top_of_stack as u32).to_le_bytes());
        kpage[tss + 8..tss + 10].copy_from_slice(&SEL_DATA.to_le_bytes());
    }
    kpage[tss + 0x66..tss + 0x68].copy_from_slice(&0x68u16.to_le_bytes());
    let gate = if long { 16u64 } else { 8 };
    let idt_limit = (32 * gate - 1) as u16;
    let idtr = IDTR_OFF as usize;
    kpage[idtr..idtr + 2].copy_from_slice(&idt_limit.to_le_bytes());
    kpage[idtr + 2..idtr + 10].copy_from_slice(&(w + PG_IDT * 4096).to_le_bytes());
    // GDTR image with a 64-bit base, reloaded by the long-mode entry.
    kpage[idtr + 0x10..idtr + 0x12].copy_from_slice(&GDT_LIMIT.to_le_bytes());
    kpage[idtr + 0x12..idtr + 0x1a].copy_from_slice(&(w + GDT_OFF).to_le_bytes());

    let mut idt = vec![0u8; 4096];
    for (v, &h) in prog.handlers.iter().enumerate() {
        put_gate(&mut idt, v as u64, h, long, false);
    }

    let mut pages: Vec<Vec<u8>> = vec![vec![0u8; 4096]; WINDOW_PAGES as usize];
    pages[PG_K as usize] = kpage;
    pages[PG_IDT as usize] = idt;
    if prog.kcode.len() > 4096 || prog.ucode.len() > 4096 {
        return Err(OracleError::Protocol(
            "probe program larger than a page".into(),
        ));
    }
    pages[PG_KCODE as usize][..prog.kcode.len()].copy_from_slice(&prog.kcode);
    pages[PG_UCODE as usize][..prog.ucode.len()].copy_from_slice(&prog.ucode);
    for (f, p) in frames.iter().zip(pages) {
        writes.push((*f, p));
    }

    let mut stub_done = 0;
    if need_stub {
        let (page, done) = gen_stub(stub, w, &gdt)?;
        stub_done = done;
        writes.push((stub, page));
    }
    Ok(Plan {
        mode,
        window: w,
        frames,
        writes,
        stub,
        stub_done,
        entry: prog.entry,
        done: prog.done,
    })
}

fn seg_desc(base: u32, limit: u32, access: u8, flags: u8) -> u64 {
    let mut d = u64::from(limit & 0xffff);
    d |= u64::from(base & 0xff_ffff) << 16;
    d |= u64::from(access) << 40;
    d |= u64::from((limit >> 16) & 0xf) << 48;
    d |= u64::from(flags & 0xf) << 52;
    d |= u64::from(base >> 24) << 56;
    d
}

/// The GDT shared by all modes (see the `SEL_*` constants).
fn gdt_bytes(tss_base: u64) -> Vec<u8> {
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

fn put_gate(idt: &mut [u8], vector: u64, handler: u64, long: bool, _dpl3: bool) {
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

struct Program {
    kcode: Vec<u8>,
    ucode: Vec<u8>,
    entry: u64,
    done: u64,
    handlers: Vec<u64>,
}

/// 16-bit real-mode stub + 32-bit phase-1 code in one physical page.
fn gen_stub(stub: u64, w: u64, gdt: &[u8]) -> Result<(Vec<u8>, u64), OracleError> {
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
struct KernelCode {
    handlers: Vec<u64>,
    entry_ip: u64,
    done_ip: u64,
    kcode: Vec<u8>,
}

/// Assembles the kernel code of a probe program (32- or 64-bit: the caller
/// emitted it into `a`) at `w + PG_KCODE * 4096`.
fn assemble_kernel_code(
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

fn gen_main64(w: u64) -> Result<Program, OracleError> {
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

fn gen_main32(w: u64) -> Result<Program, OracleError> {
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

/// Bytes of one batch's access table (32 bytes per access).
pub fn encode_batch(batch: &[Access]) -> Vec<u8> {
    let mut out = Vec::with_capacity(batch.len() * 32);
    for a in batch {
        out.extend_from_slice(&a.va.to_le_bytes());
        let kind: u32 = match a.kind {
            AccessKind::Read => 0,
            AccessKind::Write => 1,
            AccessKind::Exec => 2,
        };
        out.extend_from_slice(&kind.to_le_bytes());
        out.extend_from_slice(&u32::from(a.user).to_le_bytes());
        out.extend_from_slice(&a.value.to_le_bytes());
        out.extend_from_slice(&[0u8; 8]);
    }
    out
}

/// Decode one batch's results.
pub fn decode_results(
    bytes: &[u8],
    batch: &[Access],
    long: bool,
) -> Result<Vec<ProbeOutcome>, OracleError> {
    let mask = if long { u64::MAX } else { u64::from(u32::MAX) };
    let mut out = Vec::with_capacity(batch.len());
    for (i, (rec, a)) in bytes.chunks_exact(32).zip(batch).enumerate() {
        let q = |k: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&rec[k * 8..k * 8 + 8]);
            u64::from_le_bytes(b) & mask
        };
        out.push(match q(0) {
            1 => ProbeOutcome::Ok(q(1)),
            2 => ProbeOutcome::PageFault {
                cr2: q(2),
                error_code: q(3),
            },
            3 => ProbeOutcome::Exception { vector: q(1) as u8 },
            s => {
                return Err(OracleError::Guest(format!(
                    "access {i} ({:?} {:#x}) has status {s:#x}: the program lost control",
                    a.kind, a.va
                )))
            }
        });
    }
    Ok(out)
}

/// Run `accesses` under a fresh QEMU.
pub fn run_qemu(
    cfg: &QemuConfig,
    img: &PagingImage,
    accesses: &[Access],
) -> Result<Vec<ProbeOutcome>, OracleError> {
    if accesses.is_empty() {
        return Ok(Vec::new());
    }
    let long = img.desc.mode.is_long();
    // Leave room above the image's low ranges for the window's frames (the
    // image may be a whole RAM dump).
    let low_end = img
        .data
        .iter()
        .map(|(g, b)| g + b.len() as u64)
        .filter(|&e| e <= 0xb000_0000)
        .max()
        .unwrap_or(0);
    let ram = ram_size_for(img, cfg.min_ram.max(low_end + (4 << 20)))?;
    let usable = move |f: u64| f < 0xc000_0000 && is_ram(ram, f, 4096);
    let plan = plan(img, accesses, &usable, true)?;
    let mut s = Session::start(cfg, ram)?;
    s.write_image(img)?;
    for (gpa, bytes) in &plan.writes {
        s.gdb.write_mem(*gpa, bytes)?;
    }
    // Real mode: CS base = selector << 4.
    s.set_reg("cs", plan.stub >> 4)?;
    s.set_reg("rip", 0)?;
    run_to(&mut s, plan.stub_done, cfg.run_timeout)?;
    s.enable_paging(img)?;
    if long {
        s.set_reg("cs", u64::from(SEL_CODE64))?;
    }
    s.gdb.command_ok(&format!("Z0,{:x},1", plan.done))?;
    let mut out = Vec::with_capacity(accesses.len());
    let stub = plan.exec_stub();
    for batch in accesses.chunks(MAX_BATCH) {
        for a in batch.iter().filter(|a| a.kind == AccessKind::Exec) {
            // Best effort: an unmapped target faults before reaching it.
            let _ = s.gdb.write_mem(a.va, &stub);
        }
        s.gdb.write_mem(plan.va(DESC_OFF), &encode_batch(batch))?;
        s.gdb
            .write_mem(plan.va(RES_OFF), &vec![0u8; batch.len() * 32])?;
        let mut ctrl = (batch.len() as u64).to_le_bytes().to_vec();
        ctrl.extend_from_slice(&[0u8; 8]);
        s.gdb.write_mem(plan.va(CTRL_N), &ctrl)?;
        s.set_reg("rip", plan.entry)?;
        let stop = s.gdb.cont(cfg.run_timeout)?;
        check_stop(&stop)?;
        let rip = s.get_reg("rip")?;
        if rip != plan.done {
            return Err(OracleError::Guest(format!(
                "probe program stopped at {rip:#x}, expected {:#x}",
                plan.done
            )));
        }
        let res = s.gdb.read_mem(plan.va(RES_OFF), batch.len() * 32)?;
        out.extend(decode_results(&res, batch, long)?);
    }
    Ok(out)
}

fn check_stop(stop: &[u8]) -> Result<(), OracleError> {
    match stop.first() {
        Some(b'T') | Some(b'S') => Ok(()),
        _ => Err(OracleError::Guest(format!(
            "guest stopped with {:?} (triple fault?)",
            String::from_utf8_lossy(stop)
        ))),
    }
}

fn run_to(s: &mut Session, addr: u64, wait: Duration) -> Result<(), OracleError> {
    s.gdb.command_ok(&format!("Z0,{addr:x},1"))?;
    let stop = s.gdb.cont(wait)?;
    check_stop(&stop)?;
    s.gdb.command_ok(&format!("z0,{addr:x},1"))?;
    let rip = s.get_reg("rip")?;
    let cs_sel = s.get_reg("cs")?;
    // In 32-bit protected mode with a flat CS, linear = EIP.
    if rip != addr {
        return Err(OracleError::Guest(format!(
            "boot stub stopped at cs={cs_sel:#x} rip={rip:#x}, expected {addr:#x}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::samples;

    #[test]
    fn programs_assemble() {
        for w in [0x4000_0000u64, 0x0080_0000] {
            let p = gen_main64(w).unwrap();
            assert!(p.kcode.len() < 4096 && p.handlers.len() == 32);
            let p = gen_main32(w).unwrap();
            assert!(p.kcode.len() < 4096);
        }
        let (page, done) = gen_stub(0x8000, 0x4000_0000, &gdt_bytes(0)).unwrap();
        assert_eq!(page.len(), 4096);
        assert!(done > 0x8200 && done < 0x8300);
    }

    #[test]
    fn window_avoids_mapped_slots() {
        for mode in PagingMode::ALL {
            let s = samples::sample(mode);
            let acc = [Access::read(s.rw_page).as_user()];
            let usable = |f: u64| f < 64 << 20;
            let p = plan(&s.image, &acc, &usable, true).unwrap();
            assert_eq!(host_walk(&s.image, p.window), None, "{mode}");
            assert!(p.window < 1 << 32);
            assert!(p.stub < 0xa_0000);
            for f in &p.frames {
                assert!(s.image.read_phys(*f, 1).is_none());
            }
        }
    }

    #[test]
    fn refuses_stores_into_tables() {
        let s = samples::sample(PagingMode::FourLevel);
        let mut img = s.image.clone();
        // Map VA 0x5000 onto the PML4 itself.
        img.set_entry(0x23000, 5, 0x20000 | P | RW);
        assert!(table_frames(&img).contains(&0x23000));
        let usable = |f: u64| f < 64 << 20;
        let acc = [Access::write(0x5000, 1)];
        assert!(matches!(
            plan(&img, &acc, &usable, true),
            Err(OracleError::Unsupported(_))
        ));
        assert!(plan(&img, &[Access::read(0x5000)], &usable, true).is_ok());
    }

    #[test]
    fn host_walk_matches_samples() {
        for mode in PagingMode::ALL {
            let s = samples::sample(mode);
            for &(va, want) in &s.expect {
                assert_eq!(host_walk(&s.image, va), want, "{mode} {va:#x}");
            }
        }
    }
}
