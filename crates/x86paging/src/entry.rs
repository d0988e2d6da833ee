//! Page-table entries: the real bits, typed.
//!
//! One [`Entry`] type holds the raw value of an entry of any mode (a 2-level
//! entry uses only the low 32 bits). What the bits *mean* depends on the mode,
//! the level and, on 2-level, CR4.PSE:
//!
//! * bit 7 is `PS` (`_PAGE_PSE`) in a directory entry and `PAT` in a pte;
//!   a large-page entry keeps its PAT bit at bit 12 (`_PAGE_PAT_LARGE`);
//! * the address field is bits 31:12 on 2-level and bits 51:12 otherwise;
//!   a 2-level 4 MiB (PSE) entry holds address bits 31:22 in place and
//!   address bits 39:32 in entry bits 20:13 (PSE-36 / PSE-40), bit 21 is
//!   reserved;
//! * NX (`_PAGE_NX`) is bit 63 and exists only in 8-byte entries.
//!
//! [`EntryFlags`] are the *logical* attribute bits with the positions they
//! have in a pte (so [`EntryFlags::PAT`] is bit 7); [`Entry::page`] moves PAT
//! to bit 12 and sets PS when it encodes a large page, and
//! [`Entry::flags`] moves it back. Encoding then decoding gives back the same
//! address, size and flags ([`Entry::decode`]).
//!
//! The encoders refuse what the format cannot hold (misaligned addresses,
//! addresses wider than the format, NX on 2-level, RW/US on a PAE PDPTE).
//! Raw bits, including reserved ones, can still be built with
//! [`Entry::from_raw`] — the walker's tests do exactly that.

use crate::mode::{Level, PageSize, PagingMode};
use core::fmt;
use physmem::PhysAddr;

/// Raw bit positions, with the kernel's names.
pub mod bits {
    /// `_PAGE_PRESENT`, bit 0.
    pub const _PAGE_PRESENT: u64 = 1 << 0;
    /// `_PAGE_RW`, bit 1: writable.
    pub const _PAGE_RW: u64 = 1 << 1;
    /// `_PAGE_USER`, bit 2: user-accessible (U/S).
    pub const _PAGE_USER: u64 = 1 << 2;
    /// `_PAGE_PWT`, bit 3: write-through.
    pub const _PAGE_PWT: u64 = 1 << 3;
    /// `_PAGE_PCD`, bit 4: cache disable.
    pub const _PAGE_PCD: u64 = 1 << 4;
    /// `_PAGE_ACCESSED`, bit 5.
    pub const _PAGE_ACCESSED: u64 = 1 << 5;
    /// `_PAGE_DIRTY`, bit 6 (leaf entries only).
    pub const _PAGE_DIRTY: u64 = 1 << 6;
    /// `_PAGE_PSE`, bit 7 in a directory entry: the entry maps a large page.
    pub const _PAGE_PSE: u64 = 1 << 7;
    /// `_PAGE_PAT`, bit 7 in a pte.
    pub const _PAGE_PAT: u64 = 1 << 7;
    /// `_PAGE_GLOBAL`, bit 8 (leaf entries only; needs CR4.PGE).
    pub const _PAGE_GLOBAL: u64 = 1 << 8;
    /// `_PAGE_PAT_LARGE`, bit 12 in a large-page entry.
    pub const _PAGE_PAT_LARGE: u64 = 1 << 12;
    /// `_PAGE_NX`, bit 63 (8-byte entries only; needs EFER.NXE).
    pub const _PAGE_NX: u64 = 1 << 63;
    /// Address field of an 8-byte entry (bits 51:12).
    pub const ADDR_MASK_64: u64 = 0x000f_ffff_ffff_f000;
    /// Address field of a 4-byte entry (bits 31:12).
    pub const ADDR_MASK_32: u64 = 0xffff_f000;
    /// The PSE-36 high-address field of a 2-level 4 MiB entry (bits 20:13,
    /// holding physical address bits 39:32).
    pub const PSE36_HIGH_MASK: u64 = 0xff << 13;
    /// The only bits a PAE PDPTE may have besides the address: P, PWT, PCD
    /// (and the ignored bits 9..11).
    pub const PDPTE_ALLOWED: u64 = _PAGE_PRESENT | _PAGE_PWT | _PAGE_PCD | (0b111 << 9);
}

use bits::*;

bitflags::bitflags! {
    /// Logical attribute bits of an entry, at their pte positions.
    ///
    /// `PAT` is bit 7 here whatever the page size; `PS` is not a flag (it is
    /// implied by the [`PageSize`] an entry maps).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
    pub struct EntryFlags: u64 {
        /// P: present.
        const PRESENT = _PAGE_PRESENT;
        /// R/W: writable.
        const RW = _PAGE_RW;
        /// U/S: user-accessible.
        const USER = _PAGE_USER;
        /// PWT: page write-through.
        const PWT = _PAGE_PWT;
        /// PCD: page cache disable.
        const PCD = _PAGE_PCD;
        /// A: accessed.
        const ACCESSED = _PAGE_ACCESSED;
        /// D: dirty.
        const DIRTY = _PAGE_DIRTY;
        /// PAT: page attribute table index bit.
        const PAT = _PAGE_PAT;
        /// G: global.
        const GLOBAL = _PAGE_GLOBAL;
        /// XD/NX: no execute.
        const NX = _PAGE_NX;
    }
}

impl EntryFlags {
    /// `_PAGE_TABLE`: what the kernel puts in an entry pointing at a user
    /// page table (P|RW|US|A|D).
    pub const PAGE_TABLE: EntryFlags = EntryFlags::PRESENT
        .union(EntryFlags::RW)
        .union(EntryFlags::USER)
        .union(EntryFlags::ACCESSED)
        .union(EntryFlags::DIRTY);
    /// `_KERNPG_TABLE`: an entry pointing at a kernel page table (P|RW|A|D).
    pub const KERNPG_TABLE: EntryFlags = EntryFlags::PRESENT
        .union(EntryFlags::RW)
        .union(EntryFlags::ACCESSED)
        .union(EntryFlags::DIRTY);
    /// `__PAGE_KERNEL` without NX: P|RW|A|D.
    pub const PAGE_KERNEL_EXEC: EntryFlags = EntryFlags::KERNPG_TABLE;
    /// `__PAGE_KERNEL`: P|RW|A|D|NX (drop NX where the mode has none).
    pub const PAGE_KERNEL: EntryFlags = EntryFlags::KERNPG_TABLE.union(EntryFlags::NX);
    /// `__PAGE_KERNEL_RO`: P|A|D|NX.
    pub const PAGE_KERNEL_RO: EntryFlags = EntryFlags::PRESENT
        .union(EntryFlags::ACCESSED)
        .union(EntryFlags::DIRTY)
        .union(EntryFlags::NX);
    /// `__PAGE_KERNEL_RX`: P|A|D (text).
    pub const PAGE_KERNEL_RX: EntryFlags = EntryFlags::PRESENT
        .union(EntryFlags::ACCESSED)
        .union(EntryFlags::DIRTY);
    /// `__PAGE_KERNEL_NOCACHE`: `PAGE_KERNEL` | PCD | PWT (MMIO).
    pub const PAGE_KERNEL_NOCACHE: EntryFlags = EntryFlags::PAGE_KERNEL
        .union(EntryFlags::PCD)
        .union(EntryFlags::PWT);

    /// The flags with NX removed if `mode` has no NX bit (2-level).
    pub const fn for_mode(self, mode: PagingMode) -> EntryFlags {
        if matches!(mode, PagingMode::TwoLevel) {
            self.difference(EntryFlags::NX)
        } else {
            self
        }
    }
}

/// Why an entry could not be encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EntryError {
    /// The address is not aligned to the page (or table) size.
    #[error("physical address {pa} is not aligned to {align:#x}")]
    Misaligned {
        /// The address.
        pa: PhysAddr,
        /// The required alignment.
        align: u64,
    },
    /// The address does not fit the entry format.
    #[error("physical address {pa} does not fit in {max_bits} bits")]
    AddressTooWide {
        /// The address.
        pa: PhysAddr,
        /// How many physical-address bits the format holds here.
        max_bits: u32,
    },
    /// The mode has no pages of this size.
    #[error("{mode} paging has no {size} pages")]
    UnsupportedSize {
        /// The mode.
        mode: PagingMode,
        /// The size asked for.
        size: PageSize,
    },
    /// NX asked for in a 4-byte (2-level) entry, which has no bit 63.
    #[error("2-level entries have no NX bit")]
    NxUnsupported,
    /// The level does not exist in this mode or cannot hold this kind of entry.
    #[error("{mode} paging has no such entry at level {level}")]
    BadLevel {
        /// The mode.
        mode: PagingMode,
        /// The level.
        level: Level,
    },
    /// A PAE PDPTE may carry only P, PWT and PCD.
    #[error("a PAE PDPTE may hold only P, PWT and PCD, not {0:?}")]
    PdpteFlags(EntryFlags),
    /// `PAT` asked for in a table pointer, where bit 7 would mean PS.
    #[error("PAT is meaningless in a table pointer")]
    PatInTable,
}

/// What an entry points at, decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryKind {
    /// Points at the next-level table.
    Table(PhysAddr),
    /// Maps a page of this size at this physical address (a leaf).
    Page(PhysAddr, PageSize),
}

/// A decoded entry: what it points at and its logical flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decoded {
    /// Table pointer or page.
    pub kind: EntryKind,
    /// Logical flags (including `PRESENT` if set).
    pub flags: EntryFlags,
}

/// A page-table entry of any mode (`pte_t`, `pmd_t`, `pgd_t`, …).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
#[repr(transparent)]
pub struct Entry(u64);

impl fmt::Debug for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Entry({:#x})", self.0)
    }
}

impl fmt::Display for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

const fn addr_mask(mode: PagingMode) -> u64 {
    match mode {
        PagingMode::TwoLevel => ADDR_MASK_32,
        _ => ADDR_MASK_64,
    }
}

const fn check_pa(pa: PhysAddr, align: u64, max_bits: u32) -> Result<(), EntryError> {
    if !pa.is_aligned(align) {
        return Err(EntryError::Misaligned { pa, align });
    }
    if pa.as_u64() >> max_bits != 0 {
        return Err(EntryError::AddressTooWide { pa, max_bits });
    }
    Ok(())
}

impl Entry {
    /// The empty (not present) entry (`pte_none`).
    pub const EMPTY: Entry = Entry(0);

    /// An entry with exactly these raw bits.
    pub const fn from_raw(raw: u64) -> Entry {
        Entry(raw)
    }
    /// The raw bits.
    pub const fn raw(self) -> u64 {
        self.0
    }
    /// True if no bit is set (`pte_none`).
    pub const fn is_none(self) -> bool {
        self.0 == 0
    }
    /// P bit (`pte_present`).
    pub const fn is_present(self) -> bool {
        self.0 & _PAGE_PRESENT != 0
    }
    /// Raw bit 7 (PS in a directory entry; PAT in a pte).
    pub const fn ps_bit(self) -> bool {
        self.0 & _PAGE_PSE != 0
    }

    /// True if this entry, at `level` of `mode`, maps a page rather than
    /// pointing at a table: always at the pte; where PS=1 at a level the
    /// format allows large pages (on 2-level only when `pse` — CR4.PSE — is
    /// set; with PSE clear a 2-level PDE with bit 7 set still points at a page
    /// table). PS at a PAE PDPTE, PML4E or PML5E is reserved, not a leaf.
    pub const fn is_leaf(self, mode: PagingMode, level: Level, pse: bool) -> bool {
        match level {
            Level::Pte => true,
            Level::Pgd if matches!(mode, PagingMode::TwoLevel) => pse && self.ps_bit(),
            _ => mode.page_size_at(level).is_some() && self.ps_bit(),
        }
    }

    /// The next-level table this entry points at (`pmd_page`, `pgd_page`…):
    /// bits 31:12 (2-level) or 51:12.
    pub const fn table_addr(self, mode: PagingMode) -> PhysAddr {
        PhysAddr::new(self.0 & addr_mask(mode))
    }

    /// The physical address of the page this leaf maps, for a leaf of `size`.
    pub const fn page_addr(self, mode: PagingMode, size: PageSize) -> PhysAddr {
        let raw = self.0;
        match size {
            PageSize::Size4K => PhysAddr::new(raw & addr_mask(mode)),
            PageSize::Size4M => {
                PhysAddr::new((raw & 0xffc0_0000) | (((raw & PSE36_HIGH_MASK) >> 13) << 32))
            }
            PageSize::Size2M => PhysAddr::new(raw & ADDR_MASK_64 & !PageSize::Size2M.mask()),
            PageSize::Size1G => PhysAddr::new(raw & ADDR_MASK_64 & !PageSize::Size1G.mask()),
        }
    }

    /// Logical flags of this entry. `leaf` is the size of page it maps, or
    /// `None` for a table pointer (bit 7 is then PS=0, not PAT).
    pub const fn flags(self, leaf: Option<PageSize>) -> EntryFlags {
        let common = self.0
            & (_PAGE_PRESENT
                | _PAGE_RW
                | _PAGE_USER
                | _PAGE_PWT
                | _PAGE_PCD
                | _PAGE_ACCESSED
                | _PAGE_DIRTY
                | _PAGE_GLOBAL
                | _PAGE_NX);
        let pat = match leaf {
            None => 0,
            Some(PageSize::Size4K) => self.0 & _PAGE_PAT,
            Some(_) if self.0 & _PAGE_PAT_LARGE != 0 => _PAGE_PAT,
            Some(_) => 0,
        };
        EntryFlags::from_bits_retain(common | pat)
    }

    /// Decodes this entry as found at `level` of `mode` (`pse` = CR4.PSE,
    /// relevant on 2-level only).
    pub const fn decode(self, mode: PagingMode, level: Level, pse: bool) -> Decoded {
        if self.is_leaf(mode, level, pse) {
            let size = match mode.page_size_at(level) {
                Some(s) => s,
                None => PageSize::Size4K,
            };
            Decoded {
                kind: EntryKind::Page(self.page_addr(mode, size), size),
                flags: self.flags(Some(size)),
            }
        } else {
            Decoded {
                kind: EntryKind::Table(self.table_addr(mode)),
                flags: self.flags(None),
            }
        }
    }

    /// Encodes a pointer to a next-level table at `pa` (`pgd_populate`,
    /// `pmd_populate_kernel`, …) for an entry at `level`.
    ///
    /// On PAE the pgd level is a PDPTE, which may carry only P|PWT|PCD (the
    /// kernel writes `1 + __pa(pmd)`). Table addresses must be 4 KiB aligned
    /// and below 4 GiB on 2-level.
    pub fn table(
        mode: PagingMode,
        level: Level,
        pa: PhysAddr,
        flags: EntryFlags,
    ) -> Result<Entry, EntryError> {
        if level == Level::Pte || !mode.has_level(level) {
            return Err(EntryError::BadLevel { mode, level });
        }
        if flags.contains(EntryFlags::PAT) {
            return Err(EntryError::PatInTable);
        }
        if mode == PagingMode::Pae && level == Level::Pgd {
            let bad = flags.difference(EntryFlags::PRESENT | EntryFlags::PWT | EntryFlags::PCD);
            if !bad.is_empty() {
                return Err(EntryError::PdpteFlags(bad));
            }
        }
        if mode == PagingMode::TwoLevel && flags.contains(EntryFlags::NX) {
            return Err(EntryError::NxUnsupported);
        }
        let max_bits = if mode == PagingMode::TwoLevel { 32 } else { 52 };
        check_pa(pa, physmem::PAGE_SIZE, max_bits)?;
        Ok(Entry(pa.as_u64() | flags.bits()))
    }

    /// Encodes a leaf mapping a `size` page at `pa` (`pfn_pte`, `pfn_pmd`
    /// with `_PAGE_PSE`, …). Sets PS for large pages and moves PAT to bit 12.
    /// 2-level 4 MiB pages may lie anywhere below 2^40 (PSE-36 encoding);
    /// 2-level 4 KiB pages below 4 GiB; others below 2^52.
    pub fn page(
        mode: PagingMode,
        size: PageSize,
        pa: PhysAddr,
        flags: EntryFlags,
    ) -> Result<Entry, EntryError> {
        if mode.level_for(size).is_none() {
            return Err(EntryError::UnsupportedSize { mode, size });
        }
        if mode == PagingMode::TwoLevel && flags.contains(EntryFlags::NX) {
            return Err(EntryError::NxUnsupported);
        }
        let max_bits = match (mode, size) {
            (PagingMode::TwoLevel, PageSize::Size4K) => 32,
            (PagingMode::TwoLevel, _) => 40,
            _ => 52,
        };
        check_pa(pa, size.bytes(), max_bits)?;
        let raw_pa = pa.as_u64();
        let mut raw = flags.bits();
        if size != PageSize::Size4K {
            raw = (raw & !_PAGE_PAT) | _PAGE_PSE;
            if flags.contains(EntryFlags::PAT) {
                raw |= _PAGE_PAT_LARGE;
            }
        }
        let addr_bits = if size == PageSize::Size4M {
            (raw_pa & 0xffc0_0000) | ((raw_pa >> 32) << 13)
        } else {
            raw_pa
        };
        Ok(Entry(raw | addr_bits))
    }

    /// The same entry with its logical flags replaced (`pte_modify`), for a
    /// leaf of `size` or a table pointer (`None`). Address and PS are kept.
    pub const fn with_flags(self, leaf: Option<PageSize>, flags: EntryFlags) -> Entry {
        let old = self.flags(leaf).bits();
        let old_raw = match leaf {
            Some(PageSize::Size4K) | None => old,
            Some(_) => {
                (old & !_PAGE_PAT)
                    | if old & _PAGE_PAT != 0 {
                        _PAGE_PAT_LARGE
                    } else {
                        0
                    }
            }
        };
        let new_raw = match leaf {
            Some(PageSize::Size4K) | None => flags.bits(),
            Some(_) => {
                (flags.bits() & !_PAGE_PAT)
                    | if flags.bits() & _PAGE_PAT != 0 {
                        _PAGE_PAT_LARGE
                    } else {
                        0
                    }
            }
        };
        Entry((self.0 & !old_raw) | new_raw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn pse36_encoding() {
        // 4 MiB page at physical 0x12_3440_0000 (above 4 GiB): bits 39:32 = 0x12.
        let pa = PhysAddr::new(0x12_3440_0000 & !0x3f_ffff);
        let e = Entry::page(
            PagingMode::TwoLevel,
            PageSize::Size4M,
            pa,
            EntryFlags::PRESENT,
        )
        .unwrap();
        assert_eq!(e.raw(), (pa.as_u64() & 0xffc0_0000) | (0x12 << 13) | 0x81);
        assert_eq!(e.page_addr(PagingMode::TwoLevel, PageSize::Size4M), pa);
        assert!(e.raw() >> 32 == 0);
        assert_eq!(
            Entry::page(
                PagingMode::TwoLevel,
                PageSize::Size4K,
                PhysAddr::new(1 << 32),
                EntryFlags::PRESENT
            ),
            Err(EntryError::AddressTooWide {
                pa: PhysAddr::new(1 << 32),
                max_bits: 32
            })
        );
    }

    #[test]
    fn pat_moves_to_bit_12_in_large_pages() {
        let f = EntryFlags::PRESENT | EntryFlags::PAT;
        let e = Entry::page(
            PagingMode::Pae,
            PageSize::Size2M,
            PhysAddr::new(0x20_0000),
            f,
        )
        .unwrap();
        assert_eq!(e.raw(), 0x20_0000 | _PAGE_PAT_LARGE | _PAGE_PSE | 1);
        let e = Entry::page(PagingMode::Pae, PageSize::Size4K, PhysAddr::new(0x1000), f).unwrap();
        assert_eq!(e.raw(), 0x1000 | _PAGE_PAT | 1);
    }

    #[test]
    fn encoder_refusals() {
        assert_eq!(
            Entry::table(
                PagingMode::Pae,
                Level::Pgd,
                PhysAddr::new(0x1000),
                EntryFlags::PRESENT | EntryFlags::RW
            ),
            Err(EntryError::PdpteFlags(EntryFlags::RW))
        );
        assert_eq!(
            Entry::table(
                PagingMode::Pae,
                Level::Pgd,
                PhysAddr::new(0x1000),
                EntryFlags::PRESENT
            )
            .unwrap()
            .raw(),
            0x1001
        );
        assert_eq!(
            Entry::page(
                PagingMode::TwoLevel,
                PageSize::Size4K,
                PhysAddr::new(0),
                EntryFlags::NX
            ),
            Err(EntryError::NxUnsupported)
        );
        assert!(matches!(
            Entry::page(
                PagingMode::Pae,
                PageSize::Size1G,
                PhysAddr::new(0),
                EntryFlags::PRESENT
            ),
            Err(EntryError::UnsupportedSize { .. })
        ));
        assert!(matches!(
            Entry::page(
                PagingMode::FourLevel,
                PageSize::Size2M,
                PhysAddr::new(0x1000),
                EntryFlags::PRESENT
            ),
            Err(EntryError::Misaligned { .. })
        ));
    }

    fn arb_flags(mode: PagingMode) -> impl Strategy<Value = EntryFlags> {
        any::<u64>().prop_map(move |b| EntryFlags::from_bits_truncate(b).for_mode(mode))
    }

    proptest! {
        #[test]
        fn page_round_trip(mode_i in 0usize..4, size_i in 0usize..3, pfn in any::<u64>(), fl in any::<u64>()) {
            let mode = PagingMode::ALL[mode_i];
            let sizes = mode.page_sizes();
            let size = sizes[size_i % sizes.len()];
            let max_bits = match (mode, size) {
                (PagingMode::TwoLevel, PageSize::Size4K) => 32,
                (PagingMode::TwoLevel, _) => 40,
                _ => 52,
            };
            let pa = PhysAddr::new((pfn << size.shift()) & ((1u64 << max_bits) - 1));
            let flags = EntryFlags::from_bits_truncate(fl).for_mode(mode);
            let e = Entry::page(mode, size, pa, flags).unwrap();
            let level = mode.level_for(size).unwrap();
            let d = e.decode(mode, level, true);
            prop_assert_eq!(d.kind, EntryKind::Page(pa, size));
            prop_assert_eq!(d.flags, flags);
            if mode == PagingMode::TwoLevel { prop_assert_eq!(e.raw() >> 32, 0); }
            // with_flags round-trips too.
            let f2 = EntryFlags::from_bits_truncate(fl.rotate_left(17)).for_mode(mode);
            let e2 = e.with_flags(Some(size), f2);
            prop_assert_eq!(e2.decode(mode, level, true), Decoded { kind: EntryKind::Page(pa, size), flags: f2 });
        }

        #[test]
        fn table_round_trip(mode_i in 0usize..4, lvl in 0usize..4, pfn in 0u64..(1 << 20), f in arb_flags(PagingMode::FourLevel)) {
            let mode = PagingMode::ALL[mode_i];
            let levels = mode.levels();
            let level = levels[lvl % (levels.len() - 1)];
            let mut flags = f.for_mode(mode).difference(EntryFlags::PAT);
            if mode == PagingMode::Pae && level == Level::Pgd {
                flags &= EntryFlags::PRESENT | EntryFlags::PWT | EntryFlags::PCD;
            }
            let pa = PhysAddr::new(pfn << 12);
            let e = Entry::table(mode, level, pa, flags).unwrap();
            let d = e.decode(mode, level, true);
            prop_assert_eq!(d.kind, EntryKind::Table(pa));
            prop_assert_eq!(d.flags, flags);
        }
    }
}
