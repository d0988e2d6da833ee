//! The kernel's virtual memory layout per mode.
//!
//! Where the direct map, vmalloc, the persistent-kmap window, the fixmap and
//! the kernel image live, as i386 (2.5/2.6) and x86_64 (4- and 5-level)
//! lay them out:
//!
//! * **i386** (2-level and PAE): `PAGE_OFFSET` = 0xC0000000; lowmem (at most
//!   896 MiB, `MAXMEM`) is direct-mapped there up to `high_memory`;
//!   `VMALLOC_START` = `high_memory` + an 8 MiB gap (`VMALLOC_OFFSET`),
//!   rounded to 8 MiB; `VMALLOC_END` = `PKMAP_BASE` − 2 pages; the pkmap
//!   window (one pte table: 1024 or 512 slots) sits below the fixmap,
//!   which ends at `FIXADDR_TOP` = 0xfffff000. The kernel image is inside
//!   the direct map (text at physical 1 MiB).
//! * **x86_64**: direct map at 0xffff888000000000 (5-level
//!   0xff11000000000000) covering all RAM; vmalloc at 0xffffc90000000000
//!   (5-level 0xffa0000000000000); vmemmap; the kernel image at
//!   `__START_KERNEL_map` = 0xffffffff80000000; modules above it; the fixmap
//!   just below `FIXADDR_TOP` = 0xffffffffff7ff000.

use crate::mode::PagingMode;
use alloc::vec::Vec;
use core::ops::Range;

/// `VMALLOC_OFFSET`: the gap between `high_memory` and `VMALLOC_START` on i386.
pub const VMALLOC_OFFSET: u64 = 8 << 20;
/// `MAXMEM` on i386: the most lowmem that can be direct-mapped (896 MiB).
pub const I386_MAXMEM: u64 = 896 << 20;
/// Number of fixmap slots (`__end_of_fixed_addresses`).
pub const FIX_SLOTS: u64 = 16;
/// Fixmap slot of a kernel data page mapped at boot.
pub const FIX_KDATA: u64 = 1;
/// Fixmap slot of the local APIC (physical 0xfee00000, uncached).
pub const FIX_APIC_BASE: u64 = 2;
/// Fixmap slot of the first I/O APIC (physical 0xfec00000, uncached).
pub const FIX_IO_APIC_BASE_0: u64 = 3;
/// `__START_KERNEL_map` on x86_64.
pub const START_KERNEL_MAP: u64 = 0xffff_ffff_8000_0000;
/// `CPU_ENTRY_AREA_BASE` on x86_64 (4- and 5-level): pgd slot −4 at the
/// p4d shift. Only a ptdump marker here: nothing is mapped there.
pub const CPU_ENTRY_AREA_BASE: u64 = 0xffff_fe00_0000_0000;
/// Bytes of the kernel image mapped at `__START_KERNEL_map` (at most RAM).
pub const KERNEL_IMAGE_MAP: u64 = 16 << 20;
/// Physical start and length of kernel text (`_text`.. `_etext`): the
/// direct-map pages covering it stay executable on i386.
pub const KERNEL_TEXT_PHYS: Range<u64> = 0x10_0000..0x40_0000;

/// One mode's kernel layout (all addresses are linear, canonical).
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Layout {
    /// The mode.
    pub mode: PagingMode,
    /// End of the user range (`TASK_SIZE`); the user range is `0..user_end`.
    pub user_end: u64,
    /// `PAGE_OFFSET`.
    pub page_offset: u64,
    /// Bytes of RAM direct-mapped (`min(RAM, MAXMEM)` on i386).
    pub lowmem: u64,
    /// `high_memory`: end of the direct map.
    pub direct_map_end: u64,
    /// `VMALLOC_START`.
    pub vmalloc_start: u64,
    /// `VMALLOC_END` (exclusive).
    pub vmalloc_end: u64,
    /// `PKMAP_BASE` (i386 only).
    pub pkmap_base: Option<u64>,
    /// `VMEMMAP_START` (x86_64 only).
    pub vmemmap_start: Option<u64>,
    /// Kernel image mapping at `__START_KERNEL_map` (x86_64 only).
    pub kernel_image: Option<Range<u64>>,
    /// `MODULES_VADDR..MODULES_END` (x86_64 only).
    pub modules: Option<Range<u64>>,
    /// `FIXADDR_START`.
    pub fixaddr_start: u64,
    /// `FIXADDR_TOP`: slot 0's address; the area ends one page above it.
    pub fixaddr_top: u64,
}

impl Layout {
    /// The layout of `mode` with `ram` bytes of physical memory.
    pub fn new(mode: PagingMode, ram: u64) -> Self {
        let page_offset = mode.page_offset();
        match mode {
            PagingMode::TwoLevel | PagingMode::Pae => {
                let lowmem = ram.min(I386_MAXMEM);
                let high = page_offset + lowmem;
                let fixaddr_top = 0xffff_f000u64;
                let fixaddr_start = fixaddr_top - (FIX_SLOTS << 12);
                // PMD_MASK: 4 MiB on 2-level (pmd folded into the pgd), 2 MiB on PAE.
                let pmd_span = mode.span(crate::Level::Pmd);
                let last_pkmap = (mode.ptrs_per_pte() as u64) << 12;
                let pkmap_base = (fixaddr_start - last_pkmap) & !(pmd_span - 1);
                Layout {
                    mode,
                    user_end: mode.task_size(),
                    page_offset,
                    lowmem,
                    direct_map_end: high,
                    vmalloc_start: (high + 2 * VMALLOC_OFFSET - 1) & !(VMALLOC_OFFSET - 1),
                    vmalloc_end: pkmap_base - 2 * 4096,
                    pkmap_base: Some(pkmap_base),
                    vmemmap_start: None,
                    kernel_image: None,
                    modules: None,
                    fixaddr_start,
                    fixaddr_top,
                }
            }
            PagingMode::FourLevel | PagingMode::FiveLevel => {
                let five = mode == PagingMode::FiveLevel;
                let fixaddr_top = 0xffff_ffff_ff7f_f000u64;
                Layout {
                    mode,
                    user_end: mode.task_size(),
                    page_offset,
                    lowmem: ram,
                    direct_map_end: page_offset + ram,
                    vmalloc_start: if five {
                        0xffa0_0000_0000_0000
                    } else {
                        0xffff_c900_0000_0000
                    },
                    vmalloc_end: if five {
                        0xffd2_0000_0000_0000
                    } else {
                        0xffff_e900_0000_0000
                    },
                    pkmap_base: None,
                    vmemmap_start: Some(if five {
                        0xffd4_0000_0000_0000
                    } else {
                        0xffff_ea00_0000_0000
                    }),
                    kernel_image: Some(
                        START_KERNEL_MAP..START_KERNEL_MAP + ram.min(KERNEL_IMAGE_MAP),
                    ),
                    modules: Some(0xffff_ffff_a000_0000..0xffff_ffff_ff00_0000),
                    fixaddr_start: fixaddr_top - (FIX_SLOTS << 12),
                    fixaddr_top,
                }
            }
        }
    }

    /// `fix_to_virt(slot)`.
    pub const fn fix_to_virt(&self, slot: u64) -> u64 {
        self.fixaddr_top - (slot << 12)
    }

    /// The user range `[0, TASK_SIZE)`.
    pub const fn user_range(&self) -> Range<u64> {
        0..self.user_end
    }

    /// Section markers for ptdump, in address order, as Linux's
    /// `arch/x86/mm/dump_pagetables.c` names and places them
    /// (`address_markers[]`, Linux 5.8 and later).
    ///
    /// * x86_64: `User Space`, `Kernel Space` (at bit 63, as Linux puts
    ///   it), `Low Kernel Mapping`, `vmalloc() Area`, `Vmemmap`,
    ///   `CPU entry Area` ([`CPU_ENTRY_AREA_BASE`]: nothing is mapped there
    ///   here, Linux prints the marker in every configuration), `High Kernel
    ///   Mapping`, `Modules`, `End Modules`, `Fixmap Area`.
    /// * i386: `User Space`, `Kernel Mapping`, `vmalloc() Area`,
    ///   `vmalloc() End`, `Persistent kmap() Area`, `Fixmap area` (lower
    ///   case on i386, as in Linux). Linux since 4.15 also has `CPU entry
    ///   area` between the pkmap window and the fixmap; the 2.5.69 layout
    ///   modelled here has no such area, so that marker is left out.
    ///
    /// Markers Linux prints only with options this layout does not model
    /// (`LDT remap`, `KASAN shadow`, `ESPfix Area`, `EFI Runtime Services`)
    /// are not produced: the dump is that of a kernel built without
    /// `CONFIG_MODIFY_LDT_SYSCALL`, `CONFIG_KASAN`, `CONFIG_X86_ESPFIX64`
    /// and `CONFIG_EFI`.
    pub fn markers(&self) -> Vec<(u64, &'static str)> {
        let mut v = Vec::new();
        v.push((0, "User Space"));
        if self.mode.is_64bit() {
            v.push((1 << 63, "Kernel Space"));
            v.push((self.page_offset, "Low Kernel Mapping"));
            v.push((self.vmalloc_start, "vmalloc() Area"));
            if let Some(p) = self.vmemmap_start {
                v.push((p, "Vmemmap"));
            }
            v.push((CPU_ENTRY_AREA_BASE, "CPU entry Area"));
            if let Some(k) = &self.kernel_image {
                v.push((k.start, "High Kernel Mapping"));
            }
            if let Some(m) = &self.modules {
                v.push((m.start, "Modules"));
                v.push((m.end, "End Modules"));
            }
            v.push((self.fixaddr_start, "Fixmap Area"));
        } else {
            v.push((self.page_offset, "Kernel Mapping"));
            v.push((self.vmalloc_start, "vmalloc() Area"));
            v.push((self.vmalloc_end, "vmalloc() End"));
            if let Some(p) = self.pkmap_base {
                v.push((p, "Persistent kmap() Area"));
            }
            v.push((self.fixaddr_start, "Fixmap area"));
        }
        v.sort_by_key(|&(a, _)| a);
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn i386_layout() {
        let l = Layout::new(PagingMode::TwoLevel, 64 << 20);
        assert_eq!(l.direct_map_end, 0xc400_0000);
        assert_eq!(l.vmalloc_start, 0xc480_0000);
        assert_eq!(l.pkmap_base, Some(0xff80_0000));
        assert_eq!(l.vmalloc_end, 0xff7f_e000);
        let l = Layout::new(PagingMode::Pae, 4 << 30);
        assert_eq!(l.direct_map_end, 0xf800_0000);
        assert_eq!(l.pkmap_base, Some(0xffc0_0000));
        assert!(l.vmalloc_start < l.vmalloc_end);
        let l = Layout::new(PagingMode::FourLevel, 64 << 20);
        let m = l.markers();
        assert!(m.windows(2).all(|w| w[0].0 <= w[1].0));
        assert_eq!(m[1], (0x8000_0000_0000_0000, "Kernel Space"));
        assert!(!m
            .iter()
            .any(|&(_, n)| n.ends_with("End") && n != "vmalloc() End"));
    }
}
