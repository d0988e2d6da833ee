//! Reading and writing entries in physical memory.
//!
//! Page tables live in physical frames and are touched only through
//! [`PhysMem`], one atomic access of the mode's entry width per entry: a
//! 2-level entry is one 32-bit access, a PAE or long-mode entry one 64-bit
//! access ([`write_entry`] is the kernel's `set_pte_atomic`: on PAE a plain
//! two-halves store could let a concurrent walker see a torn entry).
//! [`entry_pa`] is `pgd_offset`/`pmd_offset`/`pte_offset` on physical
//! addresses.

use crate::entry::Entry;
use crate::mode::{Level, PagingMode};
use physmem::{FrameState, MemError, PhysAddr, PhysMem, VirtAddr};

/// Reads the entry at `entry_pa` (zero-extended on 2-level).
pub fn read_entry<P: PhysMem + ?Sized>(
    mem: &P,
    mode: PagingMode,
    entry_pa: PhysAddr,
) -> Result<Entry, MemError> {
    match mode {
        PagingMode::TwoLevel => mem.load_u32(entry_pa).map(|v| Entry::from_raw(v as u64)),
        _ => mem.load_u64(entry_pa).map(Entry::from_raw),
    }
}

/// Writes `entry` at `entry_pa` in one atomic store (`set_pte_atomic`).
/// On 2-level only the low 32 bits are stored (the encoders in
/// [`crate::entry`] never produce more).
pub fn write_entry<P: PhysMem + ?Sized>(
    mem: &P,
    mode: PagingMode,
    entry_pa: PhysAddr,
    entry: Entry,
) -> Result<(), MemError> {
    match mode {
        PagingMode::TwoLevel => mem.store_u32(entry_pa, entry.raw() as u32),
        _ => mem.store_u64(entry_pa, entry.raw()),
    }
}

/// Physical address of the entry for `va` in the table at `table`, which is
/// a `level` table (`pgd_offset`, `pmd_offset`, `pte_offset_kernel`).
pub const fn entry_pa(mode: PagingMode, table: PhysAddr, level: Level, va: VirtAddr) -> PhysAddr {
    PhysAddr::new(table.as_u64() + (mode.index(va, level) as u64) * mode.entry_bytes())
}

/// Physical address of entry `index` of the table at `table`.
pub const fn entry_pa_at(mode: PagingMode, table: PhysAddr, index: usize) -> PhysAddr {
    PhysAddr::new(table.as_u64() + index as u64 * mode.entry_bytes())
}

/// The allocator's view of the frame holding a table at `table`.
pub fn table_state<P: PhysMem + ?Sized>(mem: &P, table: PhysAddr) -> FrameState {
    mem.frame_state(table.frame())
}

#[cfg(all(test, feature = "std"))]
mod tests {
    use super::*;
    use physmem::SimMemory;

    #[test]
    fn widths() {
        let pm = SimMemory::new(16 << 20).unwrap();
        let pa = PhysAddr::new(0x20_0000);
        write_entry(
            &pm,
            PagingMode::TwoLevel,
            pa,
            Entry::from_raw(0x1_2345_6789),
        )
        .unwrap();
        assert_eq!(pm.load_u64(pa).unwrap(), 0x2345_6789);
        assert_eq!(
            read_entry(&pm, PagingMode::TwoLevel, pa).unwrap().raw(),
            0x2345_6789
        );
        write_entry(&pm, PagingMode::Pae, pa, Entry::from_raw(1 << 63 | 0x1003)).unwrap();
        assert_eq!(
            read_entry(&pm, PagingMode::FourLevel, pa).unwrap().raw(),
            1 << 63 | 0x1003
        );
        assert_eq!(
            entry_pa(
                PagingMode::Pae,
                PhysAddr::new(0x1020),
                Level::Pgd,
                VirtAddr::new(0xc000_0000)
            ),
            PhysAddr::new(0x1038)
        );
    }
}
