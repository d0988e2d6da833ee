//! Paging modes and their per-mode constants.
//!
//! Models the four x86 paging structures Linux has used, named the way the
//! kernel names their levels:
//!
//! | mode | levels (top → bottom) | entry | pgd | large pages |
//! |---|---|---|---|---|
//! | [`PagingMode::TwoLevel`] (i386, non-PAE) | pgd → pte (pmd folded) | 4 B | 1024 entries, one 4 KiB page | 4 MiB PSE at the pgd (needs CR4.PSE) |
//! | [`PagingMode::Pae`] (i386 PAE) | pgd (PDPT) → pmd → pte | 8 B | 4 entries, 32 B, 32-byte aligned | 2 MiB at the pmd |
//! | [`PagingMode::FourLevel`] (x86_64) | pgd → pud → pmd → pte | 8 B | 512 entries | 2 MiB at the pmd, 1 GiB at the pud |
//! | [`PagingMode::FiveLevel`] (x86_64 LA57) | pgd → p4d → pud → pmd → pte | 8 B | 512 entries | 2 MiB, 1 GiB |
//!
//! Everything here is a `const fn` so other crates can use it in constants.
//! The mode decides the *format*; what a CPU does with it (CR4.PSE,
//! EFER.NXE, MAXPHYADDR, …) is [`crate::CpuState`].

use core::fmt;
use core::str::FromStr;
use physmem::VirtAddr;

/// One of the four x86 paging modes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "lowercase"))]
pub enum PagingMode {
    /// 32-bit paging (i386 without PAE): 2 levels of 1024 × 4-byte entries.
    #[cfg_attr(feature = "serde", serde(rename = "2level"))]
    TwoLevel,
    /// PAE paging (i386 `CONFIG_X86_PAE`): 4-entry PDPT, then 512 × 8 B.
    #[cfg_attr(feature = "serde", serde(rename = "pae"))]
    Pae,
    /// 4-level paging (x86_64, 48-bit linear addresses).
    #[cfg_attr(feature = "serde", serde(rename = "4level"))]
    FourLevel,
    /// 5-level paging (x86_64 with CR4.LA57, 57-bit linear addresses).
    #[cfg_attr(feature = "serde", serde(rename = "5level"))]
    FiveLevel,
}

/// A page-table level, by its Linux name.
///
/// The hardware names differ per mode (see [`PagingMode::hw_name`]): the
/// pgd is the page directory on 2-level, the PDPT on PAE, the PML4 on
/// 4-level and the PML5 on 5-level.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "lowercase"))]
pub enum Level {
    /// The top level: what CR3 points at.
    Pgd,
    /// 5-level only: the PML4 under the PML5.
    P4d,
    /// 64-bit only: the page-directory-pointer table.
    Pud,
    /// The page directory (PAE and 64-bit; folded into the pgd on 2-level).
    Pmd,
    /// The page table: entries map 4 KiB pages.
    Pte,
}

impl Level {
    /// The Linux name (`"pgd"`, `"p4d"`, `"pud"`, `"pmd"`, `"pte"`).
    pub const fn name(self) -> &'static str {
        match self {
            Level::Pgd => "pgd",
            Level::P4d => "p4d",
            Level::Pud => "pud",
            Level::Pmd => "pmd",
            Level::Pte => "pte",
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The size of the page a leaf entry maps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum PageSize {
    /// A 4 KiB page (a pte).
    Size4K,
    /// A 2 MiB page (a PS=1 pmd on PAE and 64-bit).
    Size2M,
    /// A 4 MiB page (a PS=1 pgd entry on 2-level, needs CR4.PSE).
    Size4M,
    /// A 1 GiB page (a PS=1 pud on 64-bit, needs 1 GiB page support).
    Size1G,
}

impl PageSize {
    /// log2 of the size.
    pub const fn shift(self) -> u32 {
        match self {
            PageSize::Size4K => 12,
            PageSize::Size2M => 21,
            PageSize::Size4M => 22,
            PageSize::Size1G => 30,
        }
    }
    /// The size in bytes.
    pub const fn bytes(self) -> u64 {
        1 << self.shift()
    }
    /// Mask of the offset within the page.
    pub const fn mask(self) -> u64 {
        self.bytes() - 1
    }
    /// Short name as ptdump prints it (`"4K"`, `"2M"`, `"4M"`, `"1G"`).
    pub const fn name(self) -> &'static str {
        match self {
            PageSize::Size4K => "4K",
            PageSize::Size2M => "2M",
            PageSize::Size4M => "4M",
            PageSize::Size1G => "1G",
        }
    }
}

impl fmt::Display for PageSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Error from parsing a [`PagingMode`] name.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown paging mode {given:?}: expected one of 2level, pae, 4level, 5level")]
pub struct ParseModeError {
    /// What was given (truncated to 64 bytes).
    pub given: alloc::string::String,
}

const LEVELS_2: &[Level] = &[Level::Pgd, Level::Pte];
const LEVELS_PAE: &[Level] = &[Level::Pgd, Level::Pmd, Level::Pte];
const LEVELS_4: &[Level] = &[Level::Pgd, Level::Pud, Level::Pmd, Level::Pte];
const LEVELS_5: &[Level] = &[Level::Pgd, Level::P4d, Level::Pud, Level::Pmd, Level::Pte];

impl PagingMode {
    /// All modes, in the order 2level, pae, 4level, 5level.
    pub const ALL: [PagingMode; 4] = [
        PagingMode::TwoLevel,
        PagingMode::Pae,
        PagingMode::FourLevel,
        PagingMode::FiveLevel,
    ];

    /// The name used on the command line and in JSON.
    pub const fn name(self) -> &'static str {
        match self {
            PagingMode::TwoLevel => "2level",
            PagingMode::Pae => "pae",
            PagingMode::FourLevel => "4level",
            PagingMode::FiveLevel => "5level",
        }
    }

    /// The levels a walk visits, top (pgd) first, pte last.
    pub const fn levels(self) -> &'static [Level] {
        match self {
            PagingMode::TwoLevel => LEVELS_2,
            PagingMode::Pae => LEVELS_PAE,
            PagingMode::FourLevel => LEVELS_4,
            PagingMode::FiveLevel => LEVELS_5,
        }
    }

    /// Number of levels.
    pub const fn nr_levels(self) -> usize {
        self.levels().len()
    }

    /// True if `level` exists in this mode (e.g. `Pmd` does not on 2-level:
    /// it is folded into the pgd).
    pub const fn has_level(self, level: Level) -> bool {
        match (self, level) {
            (_, Level::Pgd) | (_, Level::Pte) => true,
            (PagingMode::TwoLevel, _) => false,
            (PagingMode::Pae, Level::Pmd) => true,
            (PagingMode::Pae, _) => false,
            (PagingMode::FourLevel, Level::P4d) => false,
            (PagingMode::FourLevel, _) => true,
            (PagingMode::FiveLevel, _) => true,
        }
    }

    /// The level below `level`, or `None` at the pte (or if `level` does not
    /// exist in this mode).
    pub const fn next_level(self, level: Level) -> Option<Level> {
        let levels = self.levels();
        let mut i = 0;
        while i + 1 < levels.len() {
            if levels[i] as u8 == level as u8 {
                return Some(levels[i + 1]);
            }
            i += 1;
        }
        None
    }

    /// The Intel SDM name of an entry at `level` (`"PDE"`, `"PDPTE"`, …).
    pub const fn hw_name(self, level: Level) -> &'static str {
        match (self, level) {
            (_, Level::Pte) => "PTE",
            (PagingMode::TwoLevel, _) => "PDE",
            (PagingMode::Pae, Level::Pgd) => "PDPTE",
            (_, Level::Pmd) => "PDE",
            (_, Level::Pud) => "PDPTE",
            (PagingMode::FiveLevel, Level::Pgd) => "PML5E",
            (_, _) => "PML4E",
        }
    }

    /// True for the two long-mode (x86_64) modes.
    pub const fn is_64bit(self) -> bool {
        matches!(self, PagingMode::FourLevel | PagingMode::FiveLevel)
    }

    /// Width of one entry in bytes: 4 on 2-level, 8 otherwise.
    pub const fn entry_bytes(self) -> u64 {
        match self {
            PagingMode::TwoLevel => 4,
            _ => 8,
        }
    }

    /// Number of linear-address bits (32, 48 or 57).
    pub const fn va_bits(self) -> u32 {
        match self {
            PagingMode::TwoLevel | PagingMode::Pae => 32,
            PagingMode::FourLevel => 48,
            PagingMode::FiveLevel => 57,
        }
    }

    /// The widest physical address the format can express: 40 bits on
    /// 2-level (PSE-36/PSE-40 4 MiB pages; 4 KiB pages and tables stay below
    /// 4 GiB), 52 otherwise. A CPU's MAXPHYADDR may be smaller.
    pub const fn max_phys_bits(self) -> u32 {
        match self {
            PagingMode::TwoLevel => 40,
            _ => 52,
        }
    }

    /// Shift of the address span one entry at `level` covers (22/12 on
    /// 2-level; 30/21/12 on PAE; 48/39/30/21/12 on 5-level).
    pub const fn shift(self, level: Level) -> u32 {
        match (self, level) {
            (_, Level::Pte) => 12,
            (PagingMode::TwoLevel, _) => 22,
            (_, Level::Pmd) => 21,
            (_, Level::Pud) => 30,
            (PagingMode::Pae, Level::Pgd) => 30,
            (_, Level::P4d) => 39,
            (PagingMode::FourLevel, Level::Pgd) => 39,
            (PagingMode::FiveLevel, Level::Pgd) => 48,
        }
    }

    /// Bytes of address space one entry at `level` covers.
    pub const fn span(self, level: Level) -> u64 {
        1 << self.shift(level)
    }

    /// Number of entries in a table at `level` (`PTRS_PER_PGD`,
    /// `PTRS_PER_PMD`, `PTRS_PER_PTE`, …). A level the mode folds has 1.
    pub const fn entries(self, level: Level) -> usize {
        if !self.has_level(level) {
            return 1;
        }
        match (self, level) {
            (PagingMode::TwoLevel, _) => 1024,
            (PagingMode::Pae, Level::Pgd) => 4,
            _ => 512,
        }
    }

    /// Size in bytes of a table at `level` (32 for the PAE pgd, else 4096).
    pub const fn table_bytes(self, level: Level) -> u64 {
        self.entries(level) as u64 * self.entry_bytes()
    }

    /// `PTRS_PER_PGD`: 1024, 4, 512, 512.
    pub const fn ptrs_per_pgd(self) -> usize {
        self.entries(Level::Pgd)
    }
    /// `PTRS_PER_PMD`: 1 on 2-level (folded), 512 otherwise.
    pub const fn ptrs_per_pmd(self) -> usize {
        self.entries(Level::Pmd)
    }
    /// `PTRS_PER_PTE`: 1024 on 2-level, 512 otherwise.
    pub const fn ptrs_per_pte(self) -> usize {
        self.entries(Level::Pte)
    }
    /// `USER_PTRS_PER_PGD`: pgd entries below `PAGE_OFFSET` / the kernel
    /// half — 768 (3 GiB / 4 MiB), 3 (3 GiB / 1 GiB), 256, 256.
    pub const fn user_ptrs_per_pgd(self) -> usize {
        match self {
            PagingMode::TwoLevel => 768,
            PagingMode::Pae => 3,
            _ => 256,
        }
    }
    /// Size and alignment of a pgd: 4096 except the 32-byte PAE PDPT.
    pub const fn pgd_bytes(self) -> u64 {
        self.table_bytes(Level::Pgd)
    }
    /// `PAGE_OFFSET`: the start of the lowmem direct map.
    pub const fn page_offset(self) -> u64 {
        match self {
            PagingMode::TwoLevel | PagingMode::Pae => 0xC000_0000,
            PagingMode::FourLevel => 0xffff_8880_0000_0000,
            PagingMode::FiveLevel => 0xff11_0000_0000_0000,
        }
    }
    /// `TASK_SIZE`: the end of the user address range.
    pub const fn task_size(self) -> u64 {
        match self {
            PagingMode::TwoLevel | PagingMode::Pae => 0xC000_0000,
            PagingMode::FourLevel => 0x0000_7fff_ffff_f000,
            PagingMode::FiveLevel => 0x00ff_ffff_ffff_f000,
        }
    }

    /// The size of a leaf at `level` if the format lets that level map a
    /// page: pte → 4K; 2-level pgd → 4M (with CR4.PSE); pmd → 2M; pud → 1G
    /// (with 1 GiB page support). `None` for levels that can only point to
    /// tables (PAE PDPTE, PML4E, PML5E).
    pub const fn page_size_at(self, level: Level) -> Option<PageSize> {
        match (self, level) {
            (_, Level::Pte) => Some(PageSize::Size4K),
            (PagingMode::TwoLevel, Level::Pgd) => Some(PageSize::Size4M),
            (PagingMode::TwoLevel, _) => None,
            (_, Level::Pmd) => Some(PageSize::Size2M),
            (PagingMode::FourLevel | PagingMode::FiveLevel, Level::Pud) => Some(PageSize::Size1G),
            _ => None,
        }
    }

    /// The level whose leaf maps `size`, if the mode supports that size.
    pub const fn level_for(self, size: PageSize) -> Option<Level> {
        match (self, size) {
            (_, PageSize::Size4K) => Some(Level::Pte),
            (PagingMode::TwoLevel, PageSize::Size4M) => Some(Level::Pgd),
            (PagingMode::Pae | PagingMode::FourLevel | PagingMode::FiveLevel, PageSize::Size2M) => {
                Some(Level::Pmd)
            }
            (PagingMode::FourLevel | PagingMode::FiveLevel, PageSize::Size1G) => Some(Level::Pud),
            _ => None,
        }
    }

    /// The page sizes this format can express, smallest first.
    pub const fn page_sizes(self) -> &'static [PageSize] {
        match self {
            PagingMode::TwoLevel => &[PageSize::Size4K, PageSize::Size4M],
            PagingMode::Pae => &[PageSize::Size4K, PageSize::Size2M],
            _ => &[PageSize::Size4K, PageSize::Size2M, PageSize::Size1G],
        }
    }

    /// The entry index `va` selects at `level` (`pgd_index`, `pmd_index`,
    /// `pte_index`, …).
    pub const fn index(self, va: VirtAddr, level: Level) -> usize {
        ((va.as_u64() >> self.shift(level)) & (self.entries(level) as u64 - 1)) as usize
    }

    /// True if `va` is a valid linear address for this mode: below 4 GiB
    /// for the 32-bit modes, canonical (bits 63..va_bits-1 all equal) for
    /// the 64-bit ones.
    pub const fn is_canonical(self, va: VirtAddr) -> bool {
        let v = va.as_u64();
        match self {
            PagingMode::TwoLevel | PagingMode::Pae => v >> 32 == 0,
            _ => {
                let bits = self.va_bits();
                let top = v >> (bits - 1);
                top == 0 || top == (u64::MAX >> (bits - 1))
            }
        }
    }

    /// Sign-extends a `va_bits`-wide address (identity on 32-bit modes).
    pub const fn canonicalize(self, va: u64) -> VirtAddr {
        match self {
            PagingMode::TwoLevel | PagingMode::Pae => VirtAddr::new(va & 0xffff_ffff),
            _ => {
                let s = 64 - self.va_bits();
                VirtAddr::new((((va << s) as i64) >> s) as u64)
            }
        }
    }

    /// The lowest address the pgd entry `index` covers (canonical).
    pub const fn pgd_entry_start(self, index: usize) -> VirtAddr {
        self.canonicalize((index as u64) << self.shift(Level::Pgd))
    }
}

impl fmt::Display for PagingMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for PagingMode {
    type Err = ParseModeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "2level" | "2-level" | "i386" => Ok(PagingMode::TwoLevel),
            "pae" => Ok(PagingMode::Pae),
            "4level" | "4-level" => Ok(PagingMode::FourLevel),
            "5level" | "5-level" => Ok(PagingMode::FiveLevel),
            _ => Err(ParseModeError {
                given: s.chars().take(64).collect(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constants_match_the_kernel() {
        use PagingMode::*;
        assert_eq!(TwoLevel.ptrs_per_pgd(), 1024);
        assert_eq!(TwoLevel.ptrs_per_pmd(), 1);
        assert_eq!(TwoLevel.user_ptrs_per_pgd(), 768);
        assert_eq!(TwoLevel.pgd_bytes(), 4096);
        assert_eq!(Pae.ptrs_per_pgd(), 4);
        assert_eq!(Pae.pgd_bytes(), 32);
        assert_eq!(Pae.ptrs_per_pmd(), 512);
        assert_eq!(Pae.user_ptrs_per_pgd(), 3);
        assert_eq!(FourLevel.user_ptrs_per_pgd(), 256);
        assert_eq!(FiveLevel.ptrs_per_pgd(), 512);
        // USER_PTRS_PER_PGD * span == TASK_SIZE on i386.
        for m in [TwoLevel, Pae] {
            assert_eq!(
                m.user_ptrs_per_pgd() as u64 * m.span(Level::Pgd),
                m.page_offset()
            );
        }
        assert_eq!(
            FourLevel.pgd_entry_start(256).as_u64(),
            0xffff_8000_0000_0000
        );
        assert_eq!(
            FiveLevel.pgd_entry_start(256).as_u64(),
            0xff00_0000_0000_0000
        );
        assert_eq!(
            FourLevel.index(VirtAddr::new(FourLevel.page_offset()), Level::Pgd),
            273
        );
        assert_eq!(TwoLevel.index(VirtAddr::new(0xc040_1000), Level::Pgd), 769);
        assert_eq!(TwoLevel.index(VirtAddr::new(0xc040_1000), Level::Pte), 1);
        assert_eq!(Pae.index(VirtAddr::new(0xc060_1000), Level::Pmd), 3);
    }

    #[test]
    fn levels_and_sizes() {
        for m in PagingMode::ALL {
            let levels = m.levels();
            assert_eq!(levels[0], Level::Pgd);
            assert_eq!(levels[levels.len() - 1], Level::Pte);
            let total: u32 = levels
                .iter()
                .map(|&l| (m.entries(l) as u64).trailing_zeros())
                .sum::<u32>()
                + 12;
            assert_eq!(total, m.va_bits());
            for &s in m.page_sizes() {
                let l = m.level_for(s).unwrap();
                assert_eq!(m.page_size_at(l), Some(s));
                assert_eq!(m.shift(l), s.shift());
            }
        }
        assert_eq!(
            PagingMode::TwoLevel.next_level(Level::Pgd),
            Some(Level::Pte)
        );
        assert_eq!(PagingMode::Pae.next_level(Level::Pte), None);
        assert_eq!(PagingMode::FiveLevel.hw_name(Level::P4d), "PML4E");
        assert_eq!(PagingMode::Pae.hw_name(Level::Pgd), "PDPTE");
    }

    #[test]
    fn parse_and_print() {
        for m in PagingMode::ALL {
            assert_eq!(m.name().parse::<PagingMode>(), Ok(m));
            assert_eq!(alloc::format!("{m}"), m.name());
        }
        let e = "3level".parse::<PagingMode>().unwrap_err();
        let msg = alloc::format!("{e}");
        assert!(msg.contains("3level") && msg.contains("2level, pae, 4level, 5level"));
    }

    #[test]
    fn canonical() {
        let m = PagingMode::FourLevel;
        assert!(m.is_canonical(VirtAddr::new(0x0000_7fff_ffff_ffff)));
        assert!(!m.is_canonical(VirtAddr::new(0x0000_8000_0000_0000)));
        assert!(m.is_canonical(VirtAddr::new(0xffff_8000_0000_0000)));
        let m = PagingMode::FiveLevel;
        assert!(m.is_canonical(VirtAddr::new(0x0000_8000_0000_0000)));
        assert!(!m.is_canonical(VirtAddr::new(0x0100_0000_0000_0000)));
        assert!(!PagingMode::Pae.is_canonical(VirtAddr::new(1 << 32)));
    }
}
