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

mod batch;
mod program;
mod walk;

use std::collections::HashSet;

use crate::image::{PagingImage, PagingMode};
use crate::{Access, AccessKind, OracleError};

pub use batch::{decode_results, encode_batch};
use program::{gdt_bytes, gen_main32, gen_main64, gen_stub, put_gate};
pub use walk::table_frames;
use walk::{host_walk, levels, top_table, Finder, Frames};

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
/// The 64-bit kernel code selector of the probe GDT (a driver loads CS
/// with it once long mode is on).
pub const SEL_CODE64: u16 = 0x18;
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

    /// Linear address of the access table the program reads.
    pub fn table_va(&self) -> u64 {
        self.va(DESC_OFF)
    }

    /// Linear address of the result records the program writes.
    pub fn results_va(&self) -> u64 {
        self.va(RES_OFF)
    }

    /// Linear address of the control words (access count, next index).
    pub fn ctrl_va(&self) -> u64 {
        self.va(CTRL_N)
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
