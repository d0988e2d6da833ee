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
use physmem::{MemError, PhysAddr, PhysMem, VirtAddr};

/// Reads the entry at `entry_pa` (zero-extended on 2-level).
#[inline]
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
#[inline]
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
#[inline]
pub const fn entry_pa(mode: PagingMode, table: PhysAddr, level: Level, va: VirtAddr) -> PhysAddr {
    PhysAddr::new(table.as_u64() + (mode.index(va, level) as u64) * mode.entry_bytes())
}

/// Physical address of entry `index` of the table at `table`.
#[inline]
pub const fn entry_pa_at(mode: PagingMode, table: PhysAddr, index: usize) -> PhysAddr {
    PhysAddr::new(table.as_u64() + index as u64 * mode.entry_bytes())
}

/// The first of the `count` entries from `idx` on that is not all zero
/// (`pgd_none` skipped in one scan), or `None`. Entries are 4 or 8 bytes;
/// the scan goes by 8-byte words, so it starts only at an 8-byte boundary
/// (an odd 2-level index answers itself), and a word may cover one entry
/// past the range, which is never reported.
pub fn next_used_entry<P: PhysMem + ?Sized>(
    pm: &P,
    mode: PagingMode,
    table: PhysAddr,
    idx: usize,
    count: usize,
) -> Result<Option<usize>, MemError> {
    let per_word = (8 / mode.entry_bytes()) as usize;
    if count == 0 {
        return Ok(None);
    }
    if !idx.is_multiple_of(per_word) {
        return Ok(Some(idx));
    }
    let words = count.div_ceil(per_word);
    let Some(w) = pm.first_nonzero_u64(entry_pa_at(mode, table, idx), words)? else {
        return Ok(None);
    };
    let mut i = idx + w * per_word;
    // A word of two 2-level entries: the used one may be the upper.
    if per_word == 2 && read_entry(pm, mode, entry_pa_at(mode, table, i))?.is_none() {
        i += 1;
    }
    Ok((i < idx + count).then_some(i))
}

#[cfg(all(test, feature = "std"))]
mod tests {
    use super::*;
    use physmem::SimMemory;

    /// The skip over empty entries agrees with reading every entry, for
    /// 4- and 8-byte entries, odd starts, and runs that end mid-word.
    #[test]
    fn next_used_entry_matches_a_plain_scan() {
        let pm = SimMemory::new(16 << 20).unwrap();
        let table = PhysAddr::new(0x30_0000);
        for mode in [PagingMode::TwoLevel, PagingMode::Pae, PagingMode::FourLevel] {
            let n = mode.entries(Level::Pte);
            pm.fill(table, 4096, 0).unwrap();
            for i in [0usize, 5, 6, 511, n - 1] {
                write_entry(
                    &pm,
                    mode,
                    entry_pa_at(mode, table, i),
                    Entry::from_raw(0x1000 | 1),
                )
                .unwrap();
            }
            for idx in 0..n {
                for count in [0usize, 1, 2, 3, 7, n - idx] {
                    let count = count.min(n - idx);
                    let plain = (idx..idx + count).find(|&i| {
                        !read_entry(&pm, mode, entry_pa_at(mode, table, i))
                            .unwrap()
                            .is_none()
                    });
                    let fast = next_used_entry(&pm, mode, table, idx, count).unwrap();
                    // An odd 2-level start answers itself; otherwise exact.
                    if fast == Some(idx) && plain != Some(idx) {
                        assert!(mode == PagingMode::TwoLevel && idx % 2 == 1);
                    } else {
                        assert_eq!(fast, plain, "{mode} idx {idx} count {count}");
                    }
                }
            }
        }
        // A run past the end of RAM is refused, not read.
        assert!(pm
            .first_nonzero_u64(PhysAddr::new((16 << 20) - 8), 2)
            .is_err());
        assert_eq!(
            pm.first_nonzero_u64(PhysAddr::new((16 << 20) - 8), 1)
                .unwrap(),
            None
        );
    }

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
