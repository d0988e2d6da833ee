//! The software MMU: a page walk following the Intel SDM, vol. 3A, ch. 4.
//!
//! [`translate`] does what the CPU's page walker does for one access, and
//! reports either the translation or the fault the CPU would raise, with the
//! page-fault error code it would push:
//!
//! * **P** (bit 0) — the fault was a protection violation on a present page
//!   or a reserved-bit violation (clear for a not-present entry);
//! * **W/R** (bit 1) — the access was a write;
//! * **U/S** (bit 2) — the access came from user mode;
//! * **RSVD** (bit 3) — a reserved bit was set in a present entry;
//! * **I/D** (bit 4) — the access was an instruction fetch and either
//!   CR4.SMEP = 1 or (CR4.PAE = 1 and EFER.NXE = 1) (SDM 4.7).
//!
//! Rights combine across levels: the effective R/W and U/S are the AND of
//! every level's bit, NX is the OR (only when EFER.NXE; without it bit 63 is
//! reserved). A reserved-bit fault ends the walk at the entry that has it, so
//! it wins over permission faults, which are checked at the leaf.
//!
//! Choices this model makes:
//!
//! * **PAE PDPTEs** are loaded by the CPU at `MOV CR3`, and a reserved bit in
//!   any of the four raises #GP there, not #PF at the access. [`load_pdptes`]
//!   models the load and returns [`WalkFault::PdpteReserved`]; [`translate`]
//!   calls it first, so with a bad PDPT every access fails that way.
//! * **Dangling tables**: before reading an entry the walker asks
//!   [`PhysMem::frame_state`] about the table's frame; a freed frame gives
//!   [`WalkFault::Dangling`] (a real CPU would read the poison — that is the
//!   use-after-free the seed patch fixes). A table outside RAM gives
//!   [`WalkFault::BadPhys`]; a *leaf* may map any physical address.
//! * **Non-canonical** addresses (64-bit) and addresses above 4 GiB (32-bit)
//!   give [`WalkFault::NonCanonical`], a #GP rather than a #PF.
//! * The walker is **read-only**: it does not set A or D bits. It has no TLB,
//!   so `G` is only reported.

use crate::cpu::{Access, AccessKind, CpuState};
use crate::entry::{bits::*, Entry, EntryFlags};
use crate::mode::{Level, PageSize, PagingMode};
use crate::table::{entry_pa, read_entry};
use physmem::{Frame, FrameState, PhysAddr, PhysMem, VirtAddr};

bitflags::bitflags! {
    /// The page-fault error code the CPU pushes for #PF.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
    pub struct PfErrorCode: u32 {
        /// P: protection or reserved-bit violation (clear: not present).
        const P = 1 << 0;
        /// W/R: the access was a write.
        const WRITE = 1 << 1;
        /// U/S: the access was from user mode.
        const USER = 1 << 2;
        /// RSVD: a reserved bit was set in a paging-structure entry.
        const RSVD = 1 << 3;
        /// I/D: the access was an instruction fetch.
        const FETCH = 1 << 4;
    }
}

/// Why a translation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WalkFault {
    /// The address is not canonical (64-bit) or above 4 GiB (32-bit): #GP.
    #[error("#GP: non-canonical address {va}")]
    NonCanonical {
        /// The address.
        va: VirtAddr,
    },
    /// A page fault (#PF, vector 14).
    #[error("#PF error code {:#x} ({code:?}) at {level} entry {entry_pa}", .code.bits())]
    PageFault {
        /// The error code the CPU would push.
        code: PfErrorCode,
        /// The level of the entry that caused it (the not-present entry, the
        /// entry with reserved bits, or the leaf for a permission fault).
        level: Level,
        /// Physical address of that entry.
        entry_pa: PhysAddr,
    },
    /// PAE: a present PDPTE has reserved bits set. The CPU raises #GP at
    /// `MOV CR3` (the PDPTE load), before any access.
    #[error("#GP at MOV CR3: PDPTE {index} = {entry} has reserved bits")]
    PdpteReserved {
        /// Which of the four PDPTEs.
        index: usize,
        /// Its value.
        entry: Entry,
    },
    /// The walk reached a table whose frame has been freed (use-after-free).
    #[error("dangling {level} table: {table} is freed (entry {entry_pa})")]
    Dangling {
        /// The level of the freed table.
        level: Level,
        /// Its frame.
        table: Frame,
        /// The entry the walk was about to read in it.
        entry_pa: PhysAddr,
    },
    /// The walk reached a table outside RAM.
    #[error("{level} table at {table} is outside RAM")]
    BadPhys {
        /// The level of the table.
        level: Level,
        /// Its physical address.
        table: PhysAddr,
    },
}

impl WalkFault {
    /// The page-fault error code, for a #PF.
    pub const fn error_code(&self) -> Option<PfErrorCode> {
        match self {
            WalkFault::PageFault { code, .. } => Some(*code),
            _ => None,
        }
    }
    /// The exception vector a CPU would raise: 14 (#PF) or 13 (#GP); `None`
    /// for the simulator-only faults (dangling, outside RAM).
    pub const fn vector(&self) -> Option<u8> {
        match self {
            WalkFault::PageFault { .. } => Some(14),
            WalkFault::NonCanonical { .. } | WalkFault::PdpteReserved { .. } => Some(13),
            _ => None,
        }
    }
}

/// A successful translation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Translation {
    /// The physical address `va` translates to.
    pub pa: PhysAddr,
    /// The size of the page.
    pub size: PageSize,
    /// The level of the leaf entry.
    pub level: Level,
    /// Effective flags: PRESENT; RW and USER ANDed over all levels; NX ORed
    /// over all levels (only with EFER.NXE); GLOBAL, PWT, PCD, PAT, ACCESSED
    /// and DIRTY from the leaf.
    pub flags: EntryFlags,
    /// Physical address of the leaf entry.
    pub entry_pa: PhysAddr,
    /// The leaf entry.
    pub entry: Entry,
}

impl Translation {
    /// Physical address of the start of the page.
    pub const fn page_base(&self) -> PhysAddr {
        PhysAddr::new(self.pa.as_u64() & !self.size.mask())
    }
}

/// The reserved bits set in `e`, a present entry at `level`, for `cpu`
/// (SDM tables 4-4 to 4-20). Zero if none. PAE PDPTEs are checked by
/// [`pdpte_reserved_bits`] instead.
pub const fn reserved_bits(cpu: &CpuState, level: Level, e: Entry) -> u64 {
    let raw = e.raw();
    let mode = cpu.mode;
    if let PagingMode::TwoLevel = mode {
        if let Level::Pgd = level {
            if cpu.pse && e.ps_bit() {
                // Bits 20:13 hold address bits 39:32, of which those at or
                // above MAXPHYADDR are reserved; bit 21 is always reserved.
                let m = clamp(cpu.maxphyaddr, 32, 40);
                let lo = 13 + (m - 32);
                let addr_hi = ((1u64 << 21) - 1) & !((1u64 << lo) - 1);
                return raw & ((1 << 21) | addr_hi);
            }
        }
        return 0;
    }
    let m = clamp(cpu.maxphyaddr, 32, 52);
    let top = if let PagingMode::Pae = mode { 63 } else { 52 };
    let mut rsvd = ((1u64 << top) - 1) & !((1u64 << m) - 1);
    if !cpu.nxe {
        rsvd |= _PAGE_NX;
    }
    match level {
        Level::Pgd | Level::P4d => {
            // PML5E / PML4E: PS is reserved.
            rsvd |= _PAGE_PSE;
        }
        Level::Pud => {
            if e.ps_bit() {
                if cpu.gbpages {
                    rsvd |= ((1u64 << 30) - 1) & !((1u64 << 13) - 1);
                } else {
                    rsvd |= _PAGE_PSE;
                }
            }
        }
        Level::Pmd => {
            if e.ps_bit() {
                rsvd |= ((1u64 << 21) - 1) & !((1u64 << 13) - 1);
            }
        }
        Level::Pte => {}
    }
    raw & rsvd
}

/// The reserved bits set in a present PAE PDPTE: bits 2:1, 8:5, and 63:M.
pub const fn pdpte_reserved_bits(cpu: &CpuState, e: Entry) -> u64 {
    let m = clamp(cpu.maxphyaddr, 32, 52);
    let rsvd = 0b110 | 0b1_1110_0000 | !((1u64 << m) - 1);
    e.raw() & rsvd
}

const fn clamp(v: u32, lo: u32, hi: u32) -> u32 {
    if v < lo {
        lo
    } else if v > hi {
        hi
    } else {
        v
    }
}

/// Where the pgd is, from CR3: bits 31:5 on PAE, else 4 KiB aligned.
pub const fn cr3_table(cpu: &CpuState) -> PhysAddr {
    match cpu.mode {
        PagingMode::Pae => PhysAddr::new(cpu.cr3.as_u64() & 0xffff_ffe0),
        PagingMode::TwoLevel => PhysAddr::new(cpu.cr3.as_u64() & 0xffff_f000),
        _ => PhysAddr::new(cpu.cr3.as_u64() & ADDR_MASK_64),
    }
}

fn check_table<P: PhysMem + ?Sized>(
    mem: &P,
    level: Level,
    table: PhysAddr,
    entry_pa: PhysAddr,
) -> Result<(), WalkFault> {
    match mem.frame_state(table.frame()) {
        FrameState::Live => Ok(()),
        FrameState::Freed => Err(WalkFault::Dangling {
            level,
            table: table.frame(),
            entry_pa,
        }),
        FrameState::Unmanaged => Err(WalkFault::BadPhys { level, table }),
    }
}

fn load<P: PhysMem + ?Sized>(
    mem: &P,
    mode: PagingMode,
    level: Level,
    table: PhysAddr,
    at: PhysAddr,
) -> Result<Entry, WalkFault> {
    check_table(mem, level, table, at)?;
    read_entry(mem, mode, at).map_err(|_| WalkFault::BadPhys { level, table })
}

/// PAE: what `MOV CR3` does — loads the four PDPTEs from the 32-byte PDPT
/// at CR3 and checks their reserved bits. A present PDPTE with a reserved
/// bit set is [`WalkFault::PdpteReserved`] (a #GP on real hardware).
/// On other modes returns four empty entries.
pub fn load_pdptes<P: PhysMem + ?Sized>(mem: &P, cpu: &CpuState) -> Result<[Entry; 4], WalkFault> {
    let mut out = [Entry::EMPTY; 4];
    if cpu.mode != PagingMode::Pae {
        return Ok(out);
    }
    let pdpt = cr3_table(cpu);
    for (i, slot) in out.iter_mut().enumerate() {
        let at = PhysAddr::new(pdpt.as_u64() + 8 * i as u64);
        let e = load(mem, cpu.mode, Level::Pgd, pdpt, at)?;
        if e.is_present() && pdpte_reserved_bits(cpu, e) != 0 {
            return Err(WalkFault::PdpteReserved { index: i, entry: e });
        }
        *slot = e;
    }
    Ok(out)
}

/// Translates `va` for `access` as the CPU described by `cpu` would, reading
/// the page tables from `mem`. See the module docs for the fault model.
pub fn translate<P: PhysMem + ?Sized>(
    mem: &P,
    cpu: &CpuState,
    va: VirtAddr,
    access: Access,
) -> Result<Translation, WalkFault> {
    let mode = cpu.mode;
    if !mode.is_canonical(va) {
        return Err(WalkFault::NonCanonical { va });
    }
    let fetch = access.kind == AccessKind::Execute;
    let mut code = PfErrorCode::empty();
    if access.kind == AccessKind::Write {
        code |= PfErrorCode::WRITE;
    }
    if access.user {
        code |= PfErrorCode::USER;
    }
    if fetch && (cpu.smep || cpu.nx_active()) {
        code |= PfErrorCode::FETCH;
    }
    let levels = mode.levels();
    let mut table = cr3_table(cpu);
    let mut first = 0;
    if mode == PagingMode::Pae {
        let pdptes = load_pdptes(mem, cpu)?;
        let i = mode.index(va, Level::Pgd);
        let e = pdptes[i];
        if !e.is_present() {
            return Err(WalkFault::PageFault {
                code,
                level: Level::Pgd,
                entry_pa: entry_pa(mode, table, Level::Pgd, va),
            });
        }
        table = e.table_addr(mode);
        first = 1;
    }
    let mut rw = true;
    let mut us = true;
    let mut nx = false;
    for &level in &levels[first..] {
        let at = entry_pa(mode, table, level, va);
        let e = load(mem, mode, level, table, at)?;
        if !e.is_present() {
            return Err(WalkFault::PageFault {
                code,
                level,
                entry_pa: at,
            });
        }
        if reserved_bits(cpu, level, e) != 0 {
            return Err(WalkFault::PageFault {
                code: code | PfErrorCode::P | PfErrorCode::RSVD,
                level,
                entry_pa: at,
            });
        }
        rw &= e.raw() & _PAGE_RW != 0;
        us &= e.raw() & _PAGE_USER != 0;
        if cpu.nx_active() {
            nx |= e.raw() & _PAGE_NX != 0;
        }
        if !e.is_leaf(mode, level, cpu.pse) {
            table = e.table_addr(mode);
            continue;
        }
        let size = match mode.page_size_at(level) {
            Some(s) => s,
            None => PageSize::Size4K,
        };
        let allowed = match (access.kind, access.user) {
            (AccessKind::Read, true) => us,
            (AccessKind::Write, true) => us && rw,
            (AccessKind::Execute, true) => us && !nx,
            (AccessKind::Read, false) => !(cpu.smap && us),
            (AccessKind::Write, false) => (rw || !cpu.wp) && !(cpu.smap && us),
            (AccessKind::Execute, false) => !(nx || (cpu.smep && us)),
        };
        if !allowed {
            return Err(WalkFault::PageFault {
                code: code | PfErrorCode::P,
                level,
                entry_pa: at,
            });
        }
        let leaf = e.flags(Some(size));
        let mut flags = leaf
            & (EntryFlags::PRESENT
                | EntryFlags::PWT
                | EntryFlags::PCD
                | EntryFlags::PAT
                | EntryFlags::GLOBAL
                | EntryFlags::ACCESSED
                | EntryFlags::DIRTY);
        flags.set(EntryFlags::RW, rw);
        flags.set(EntryFlags::USER, us);
        flags.set(EntryFlags::NX, nx);
        let base = e.page_addr(mode, size).as_u64();
        return Ok(Translation {
            pa: PhysAddr::new(base | (va.as_u64() & size.mask())),
            size,
            level,
            flags,
            entry_pa: at,
            entry: e,
        });
    }
    // Unreachable: the pte level is always a leaf. Report it as a walk that
    // ran off the bottom rather than panicking.
    Err(WalkFault::BadPhys {
        level: Level::Pte,
        table,
    })
}

#[cfg(all(test, feature = "std"))]
#[path = "walk_tests.rs"]
mod tests;
