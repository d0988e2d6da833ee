//! Booting a kernel address space: `swapper_pg_dir` for each mode.
//!
//! [`boot`] plays `paging_init`/`pagetable_init` (i386) and
//! `init_mem_mapping` (x86_64): it allocates `swapper_pg_dir` (init_mm's
//! pgd) and builds in it, with [`Owner::KernelTable`] frames:
//!
//! * the lowmem direct map at `PAGE_OFFSET`, from large pages where aligned
//!   (4 MiB PSE on 2-level when [`BootConfig::pse`], 2 MiB on PAE and
//!   64-bit, optionally 1 GiB on 64-bit) and 4 KiB ptes for the rest,
//!   `GLOBAL`, and `NX` where the mode has it (except, on i386, the pages
//!   covering kernel text);
//! * on x86_64, the kernel image at `__START_KERNEL_map` (first 8 MiB text
//!   RX, the rest RW NX, 2 MiB pages);
//! * on i386 the pkmap pte table (empty) and, in every mode, the fixmap pte
//!   table with a few slots populated ([`crate::layout::FIX_KDATA`],
//!   `FIX_APIC_BASE`, `FIX_IO_APIC_BASE_0`);
//! * on PAE, four pmds: entries 0..2 (user, empty) and entry 3, the kernel
//!   pmd that every pgd shares.
//!
//! vmalloc is left empty: its tables are attached on demand and copied into
//! other pgds by `vmalloc_fault`.
//!
//! The result, [`KernelSpace`], also keeps the list of mappings it made, as
//! the checker's reference for what kernel addresses should translate to.

use crate::cpu::{Access, CpuState, CrValues};
use crate::cursor::Cursor;
use crate::entry::{Entry, EntryFlags};
use crate::flush::TableFrames;
use crate::layout::{
    Layout, FIX_APIC_BASE, FIX_IO_APIC_BASE_0, FIX_KDATA, KERNEL_TEXT_PHYS, START_KERNEL_MAP,
};
use crate::map::MapError;
use crate::mode::{Level, PageSize, PagingMode};
use crate::walk::{translate, Translation, WalkFault};
use alloc::vec::Vec;
use physmem::{Frame, Owner, PhysAddr, PhysMem, PhysMemory, VirtAddr};

/// How to boot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BootConfig {
    /// The paging mode.
    pub mode: PagingMode,
    /// Use NX on data mappings (ignored on 2-level, which has no NX bit).
    pub nx: bool,
    /// CR4.PSE on 2-level: build the direct map from 4 MiB pages. Without it
    /// the direct map is all 4 KiB ptes.
    pub pse: bool,
    /// 64-bit: use 1 GiB pages in the direct map where aligned.
    pub gbpages: bool,
}

impl BootConfig {
    /// Defaults: NX on, PSE on, 1 GiB pages off.
    pub const fn new(mode: PagingMode) -> Self {
        BootConfig {
            mode,
            nx: true,
            pse: true,
            gbpages: false,
        }
    }
}

/// Why boot failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BootError {
    /// Building a mapping failed (out of memory, mostly).
    #[error("building the kernel page tables: {0}")]
    Map(#[from] MapError),
    /// Allocating `swapper_pg_dir`, a PAE pmd or the fixmap data page failed.
    #[error("out of memory allocating swapper_pg_dir")]
    OutOfMemory(#[source] physmem::AllocError),
}

/// One mapping boot made (a leaf in `swapper_pg_dir`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BootMapping {
    /// First linear address.
    pub va: VirtAddr,
    /// Physical address.
    pub pa: PhysAddr,
    /// Page size.
    pub size: PageSize,
    /// Leaf flags (logical).
    pub flags: EntryFlags,
    /// What it is: `"direct"`, `"kernel"`, `"fixmap"`.
    pub what: &'static str,
}

/// A booted kernel address space.
#[derive(Clone, Debug)]
pub struct KernelSpace {
    /// The mode.
    pub mode: PagingMode,
    /// `swapper_pg_dir`'s physical address (a whole frame in every mode; on
    /// PAE only its first 32 bytes are the PDPT).
    pub pgd: PhysAddr,
    /// The layout.
    pub layout: Layout,
    /// The CPU state to walk with (CR3 = `swapper_pg_dir`).
    pub cpu: CpuState,
    /// PAE: the four pmds swapper's PDPTEs point at (3 user, the kernel pmd).
    pub pae_pmds: Option<[PhysAddr; 4]>,
    /// Every leaf boot mapped, sorted by address.
    pub mappings: Vec<BootMapping>,
    /// The kernel data page the fixmap maps (`FIX_KDATA`): the one data
    /// frame boot allocates (the direct map maps RAM it does not own).
    pub kdata: Frame,
}

impl KernelSpace {
    /// `swapper_pg_dir`'s frame.
    pub const fn pgd_frame(&self) -> Frame {
        self.pgd.frame()
    }
    /// PAE: the shared kernel pmd (what PDPTE 3 points at).
    pub fn kernel_pmd(&self) -> Option<PhysAddr> {
        self.pae_pmds.map(|p| p[3])
    }
    /// CR0, CR3, CR4 and EFER for this address space.
    pub const fn cr_values(&self) -> CrValues {
        self.cpu.cr_values()
    }
    /// The boot mapping covering `va`, if any.
    pub fn mapping_of(&self, va: VirtAddr) -> Option<&BootMapping> {
        let i = self.mappings.partition_point(|m| m.va <= va);
        let m = self.mappings.get(i.checked_sub(1)?)?;
        (va.as_u64() - m.va.as_u64() < m.size.bytes()).then_some(m)
    }
    /// The reference translation of a kernel address: where boot mapped it
    /// and with which leaf flags. `change_page_attr` may later change the
    /// flags and page size, never the physical address.
    pub fn reference(&self, va: VirtAddr) -> Option<(PhysAddr, EntryFlags)> {
        let m = self.mapping_of(va)?;
        Some((
            PhysAddr::new(m.pa.as_u64() + (va.as_u64() - m.va.as_u64())),
            m.flags,
        ))
    }
    /// ptdump of the page table at `pgd` (swapper's or any other pgd) with
    /// this layout's section markers.
    pub fn ptdump<P: PhysMem + ?Sized>(
        &self,
        mem: &P,
        pgd: PhysAddr,
    ) -> Vec<crate::ptdump::PtLine> {
        crate::ptdump::dump(mem, self.mode, pgd, Some(&self.layout))
    }
    /// Walks the page table at `pgd` (any pgd, e.g. one from `pgd_alloc`)
    /// with this space's CPU state.
    pub fn translate_in<P: PhysMem + ?Sized>(
        &self,
        mem: &P,
        pgd: PhysAddr,
        va: VirtAddr,
        access: Access,
    ) -> Result<Translation, WalkFault> {
        translate(mem, &self.cpu.with_cr3(pgd), va, access)
    }
}

fn direct_flags(cfg: &BootConfig, pa: u64, size: PageSize) -> EntryFlags {
    let mut f = EntryFlags::PAGE_KERNEL | EntryFlags::GLOBAL;
    let overlaps_text = pa < KERNEL_TEXT_PHYS.end && pa + size.bytes() > KERNEL_TEXT_PHYS.start;
    if !cfg.nx || (!cfg.mode.is_64bit() && overlaps_text) {
        f.remove(EntryFlags::NX);
    }
    f.for_mode(cfg.mode)
}

/// Builds `swapper_pg_dir` in `pm` (see the module docs).
///
/// All or nothing: a boot that fails (out of frames) gives back every frame
/// it took before it returns the error.
pub fn boot<M: PhysMem>(pm: &PhysMemory<M>, cfg: BootConfig) -> Result<KernelSpace, BootError> {
    let pgd = pm
        .alloc_zeroed_frame(Owner::KernelTable)
        .map_err(BootError::OutOfMemory)?
        .start();
    let mut kdata = None;
    let r = build(pm, cfg, pgd, &mut kdata);
    if r.is_err() {
        let _ = unbuild(pm, cfg.mode, pgd, kdata);
    }
    r
}

/// [`boot`] after `swapper_pg_dir`'s frame: the tables and mappings, the
/// fixmap's data page (into `kdata` as soon as it is allocated).
fn build<M: PhysMem>(
    pm: &PhysMemory<M>,
    cfg: BootConfig,
    pgd: PhysAddr,
    kdata_out: &mut Option<Frame>,
) -> Result<KernelSpace, BootError> {
    let mode = cfg.mode;
    let layout = Layout::new(mode, pm.size());
    let pt = Cursor::new(pm, mode, pgd);
    let frames = TableFrames::new(pm, Owner::KernelTable);
    let mut pae_pmds = None;
    if mode == PagingMode::Pae {
        let mut pmds = [PhysAddr::new(0); 4];
        for (i, slot) in pmds.iter_mut().enumerate() {
            let f = pm
                .alloc_zeroed_frame(Owner::KernelTable)
                .map_err(BootError::OutOfMemory)?;
            *slot = f.start();
            let e = Entry::table(mode, Level::Pgd, f.start(), EntryFlags::PRESENT)
                .map_err(MapError::Entry)?;
            // Paging is not on yet: no TLB holds swapper's entries, here
            // and for every edit below.
            pt.write(&pt.pgd_slot(i)?, e)?.ignore();
        }
        pae_pmds = Some(pmds);
    }
    let mut mappings = Vec::new();
    let mut add =
        |va: u64, pa: u64, size: PageSize, flags: EntryFlags, what| -> Result<(), BootError> {
            let va = VirtAddr::new(va);
            let pa = PhysAddr::new(pa);
            pt.map(va, pa, size, flags, &frames)?.ignore();
            mappings.push(BootMapping {
                va,
                pa,
                size,
                flags: flags | EntryFlags::PRESENT,
                what,
            });
            Ok(())
        };

    // The direct map.
    let large: &[PageSize] = match mode {
        PagingMode::TwoLevel if cfg.pse => &[PageSize::Size4M],
        PagingMode::TwoLevel => &[],
        PagingMode::Pae => &[PageSize::Size2M],
        _ if cfg.gbpages => &[PageSize::Size1G, PageSize::Size2M],
        _ => &[PageSize::Size2M],
    };
    let mut pa = 0u64;
    while pa < layout.lowmem {
        let size = large
            .iter()
            .copied()
            .find(|s| pa & s.mask() == 0 && pa + s.bytes() <= layout.lowmem)
            .unwrap_or(PageSize::Size4K);
        add(
            layout.page_offset + pa,
            pa,
            size,
            direct_flags(&cfg, pa, size),
            "direct",
        )?;
        pa += size.bytes();
    }

    // x86_64: the kernel image at __START_KERNEL_map.
    if let Some(img) = layout.kernel_image.clone() {
        let mut va = img.start;
        while va < img.end {
            let off = va - START_KERNEL_MAP;
            let size = if img.end - va >= (2 << 20) {
                PageSize::Size2M
            } else {
                PageSize::Size4K
            };
            let mut f = if off < (8 << 20) {
                EntryFlags::PAGE_KERNEL_RX
            } else {
                EntryFlags::PAGE_KERNEL
            } | EntryFlags::GLOBAL;
            if !cfg.nx {
                f.remove(EntryFlags::NX);
            }
            add(va, off, size, f, "kernel")?;
            va += size.bytes();
        }
    }

    // i386: the pkmap pte table, attached empty.
    if let Some(pkmap) = layout.pkmap_base {
        let va = VirtAddr::new(pkmap);
        pt.alloc_path(va, Level::Pte, &frames)?;
    }

    // The fixmap.
    let kdata = pm
        .alloc_zeroed_frame(Owner::KernelData)
        .map_err(BootError::OutOfMemory)?;
    *kdata_out = Some(kdata);
    let nocache = (EntryFlags::PAGE_KERNEL_NOCACHE | EntryFlags::GLOBAL).for_mode(mode);
    let mut fix = [
        (
            FIX_KDATA,
            kdata.start().as_u64(),
            (EntryFlags::PAGE_KERNEL | EntryFlags::GLOBAL).for_mode(mode),
        ),
        (FIX_APIC_BASE, 0xfee0_0000, nocache),
        (FIX_IO_APIC_BASE_0, 0xfec0_0000, nocache),
    ];
    if !cfg.nx {
        for f in fix.iter_mut() {
            f.2.remove(EntryFlags::NX);
        }
    }
    for (slot, pa, flags) in fix {
        add(
            layout.fix_to_virt(slot),
            pa,
            PageSize::Size4K,
            flags,
            "fixmap",
        )?;
    }

    mappings.sort_by_key(|m| m.va);
    let mut cpu = CpuState::new(mode, pgd);
    cpu.pse = mode != PagingMode::TwoLevel || cfg.pse;
    cpu.nxe = cfg.nx && mode != PagingMode::TwoLevel;
    Ok(KernelSpace {
        mode,
        pgd,
        layout,
        cpu,
        pae_pmds,
        mappings,
        kdata,
    })
}

/// Gives back every frame [`boot`] allocated for `ks` — `swapper_pg_dir`,
/// its page tables (with those a kernel added below it since: split pte
/// pages, vmalloc tables), on PAE its four pmds, the fixmap's data page —
/// once nothing uses the address space any more (the kernel that owned it
/// is gone). Leaves are cleared, never freed: the direct map maps RAM it
/// does not own. Returns the number of frames freed.
pub fn unboot<M: PhysMem>(pm: &PhysMemory<M>, ks: &KernelSpace) -> Result<u64, MapError> {
    unbuild(pm, ks.mode, ks.pgd, Some(ks.kdata))
}

/// Frees the tables below `pgd` (leaves cleared, not freed), on PAE the
/// pmds its PDPTEs name, `kdata`, and `pgd` itself.
///
/// A walk that fails (an entry naming a table outside RAM: the tables were
/// corrupted) stops freeing that subtree only: the PAE pmds, `kdata` and
/// `pgd` still go back, and the walk's error is returned after them, so a
/// torn table costs the frames below it, never the ones the walk did not
/// need.
fn unbuild<M: PhysMem>(
    pm: &PhysMemory<M>,
    mode: PagingMode,
    pgd: PhysAddr,
    kdata: Option<Frame>,
) -> Result<u64, MapError> {
    let top = VirtAddr::new(1u64 << mode.va_bits());
    let walked = crate::map::free_user_tables(pm, mode, pgd, VirtAddr::new(0)..top);
    let mut first_err = walked.as_ref().err().copied();
    let mut freed = walked.unwrap_or(0);
    let mut doomed = Vec::with_capacity(6);
    if mode == PagingMode::Pae {
        for i in 0..mode.ptrs_per_pgd() {
            match crate::table::read_entry(pm, mode, crate::table::entry_pa_at(mode, pgd, i)) {
                Ok(e) if e.is_present() => doomed.push(e.table_addr(mode).frame()),
                Ok(_) => {}
                Err(e) => {
                    first_err.get_or_insert(e.into());
                }
            }
        }
    }
    doomed.extend(kdata);
    doomed.push(pgd.frame());
    for f in doomed {
        if pm.free_frame(f).is_ok() {
            freed += 1;
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(freed),
    }
}

#[cfg(all(test, feature = "std"))]
mod tests {
    use super::*;
    use crate::gen::Rng;
    use crate::ptdump::{PtDump, PtLine};
    use crate::table::{entry_pa_at, read_entry};
    use physmem::SimMemory;

    fn boot_mode(mode: PagingMode, ram: u64) -> (SimMemory, KernelSpace) {
        let pm = SimMemory::new(ram).unwrap();
        let ks = boot(&pm, BootConfig::new(mode)).unwrap();
        (pm, ks)
    }

    #[test]
    fn direct_map_translates_everywhere() {
        for mode in PagingMode::ALL {
            let (pm, ks) = boot_mode(mode, 64 << 20);
            let l = &ks.layout;
            assert_eq!(l.direct_map_end - l.page_offset, 64 << 20);
            let mut pa = 0;
            while pa < l.lowmem {
                let va = VirtAddr::new(l.page_offset + pa + 0x123);
                let t = translate(&pm, &ks.cpu, va, Access::WRITE).unwrap();
                assert_eq!(t.pa.as_u64(), pa + 0x123, "{mode}");
                assert!(t.flags.contains(EntryFlags::GLOBAL));
                assert!(!t.flags.contains(EntryFlags::USER));
                assert_eq!(ks.reference(va).unwrap().0, t.pa);
                pa += 4096;
            }
            // Large pages where the mode has them.
            let t = translate(
                &pm,
                &ks.cpu,
                VirtAddr::new(l.page_offset + (8 << 20)),
                Access::READ,
            )
            .unwrap();
            let want = match mode {
                PagingMode::TwoLevel => PageSize::Size4M,
                _ => PageSize::Size2M,
            };
            assert_eq!(t.size, want);
            if mode != PagingMode::TwoLevel {
                assert!(t.flags.contains(EntryFlags::NX));
            }
            // The end of the direct map is not mapped.
            assert!(
                translate(&pm, &ks.cpu, VirtAddr::new(l.direct_map_end), Access::READ).is_err()
            );
        }
    }

    #[test]
    fn kernel_text_fixmap_and_empty_user_range() {
        for mode in PagingMode::ALL {
            let (pm, ks) = boot_mode(mode, 32 << 20);
            let l = &ks.layout;
            // Kernel text is executable.
            let text = match &l.kernel_image {
                Some(img) => img.start + 0x1000,
                None => l.page_offset + KERNEL_TEXT_PHYS.start,
            };
            let t = translate(&pm, &ks.cpu, VirtAddr::new(text), Access::EXEC).unwrap();
            assert_eq!(
                t.pa.as_u64(),
                text - l.kernel_image.as_ref().map_or(l.page_offset, |i| i.start)
            );
            // Fixmap slots.
            let apic = VirtAddr::new(l.fix_to_virt(FIX_APIC_BASE));
            let t = translate(&pm, &ks.cpu, apic, Access::WRITE).unwrap();
            assert_eq!(t.pa, PhysAddr::new(0xfee0_0000));
            assert!(t.flags.contains(EntryFlags::PCD | EntryFlags::PWT));
            assert!(translate(
                &pm,
                &ks.cpu,
                VirtAddr::new(l.fix_to_virt(FIX_KDATA)),
                Access::READ
            )
            .is_ok());
            assert!(
                translate(&pm, &ks.cpu, VirtAddr::new(l.fix_to_virt(0)), Access::READ).is_err()
            );
            // vmalloc is empty.
            assert!(translate(&pm, &ks.cpu, VirtAddr::new(l.vmalloc_start), Access::READ).is_err());
            // The user range is empty.
            for i in 0..mode.user_ptrs_per_pgd() {
                let e = read_entry(&pm, mode, entry_pa_at(mode, ks.pgd, i)).unwrap();
                if mode == PagingMode::Pae {
                    assert!(e.is_present());
                    assert_eq!(e.raw() & 0xfff, 1, "PDPTE = 1 + __pa(pmd)");
                } else {
                    assert!(e.is_none());
                }
            }
            let mut rng = Rng::new(7);
            for _ in 0..200 {
                let va = VirtAddr::new(rng.below(l.user_end) & !7);
                let r = translate(&pm, &ks.cpu, va, Access::USER_READ);
                assert!(
                    matches!(r, Err(WalkFault::PageFault { code, .. }) if code == crate::walk::PfErrorCode::USER),
                    "{mode} {va}: {r:?}"
                );
            }
            let cr = ks.cr_values();
            assert_eq!(cr.cr3, ks.pgd.as_u64());
            assert_eq!(
                cr.cr4 & crate::cpu::CR4_PAE != 0,
                mode != PagingMode::TwoLevel
            );
        }
    }

    #[test]
    fn pae_kernel_pmd_is_pdpte_3() {
        let (pm, ks) = boot_mode(PagingMode::Pae, 64 << 20);
        let e = read_entry(
            &pm,
            PagingMode::Pae,
            entry_pa_at(PagingMode::Pae, ks.pgd, 3),
        )
        .unwrap();
        assert_eq!(Some(e.table_addr(PagingMode::Pae)), ks.kernel_pmd());
    }

    #[test]
    fn lowmem_is_capped_on_i386_and_4k_without_pse() {
        let pm = SimMemory::new(1 << 30).unwrap();
        let ks = boot(&pm, BootConfig::new(PagingMode::TwoLevel)).unwrap();
        assert_eq!(ks.layout.lowmem, 896 << 20);
        assert!(ks.layout.vmalloc_start >= ks.layout.direct_map_end + (8 << 20));
        let pm = SimMemory::new(16 << 20).unwrap();
        let mut cfg = BootConfig::new(PagingMode::TwoLevel);
        cfg.pse = false;
        let ks = boot(&pm, cfg).unwrap();
        let t = translate(&pm, &ks.cpu, VirtAddr::new(0xc080_0000), Access::READ).unwrap();
        assert_eq!(t.size, PageSize::Size4K);
    }

    /// 1 GiB pages need 2 GiB of simulated RAM: more than a 32-bit host can
    /// map in one piece (an mmap length must fit `isize`).
    #[test]
    #[cfg(target_pointer_width = "64")]
    fn gbpages_map_the_direct_map_in_1g_pages() {
        let pm = SimMemory::new(2 << 30).unwrap();
        let mut cfg = BootConfig::new(PagingMode::FourLevel);
        cfg.gbpages = true;
        let ks = boot(&pm, cfg).unwrap();
        let t = translate(
            &pm,
            &ks.cpu,
            VirtAddr::new(ks.layout.page_offset + (1 << 30)),
            Access::READ,
        )
        .unwrap();
        assert_eq!(t.size, PageSize::Size1G);
    }

    #[test]
    fn ptdump_shape() {
        for mode in PagingMode::ALL {
            let (pm, ks) = boot_mode(mode, 64 << 20);
            let lines = ks.ptdump(&pm, ks.pgd);
            let text = std::format!(
                "{}",
                PtDump {
                    mode,
                    lines: &lines
                }
            );
            assert!(text.starts_with("---[ User Space ]---\n0x0000"), "{text}");
            assert!(text.contains("---[ vmalloc() Area ]---"));
            assert!(
                text.contains("---[ Fixmap area ]---") || text.contains("---[ Fixmap Area ]---")
            );
            assert!(!text.contains("Low Kernel Mapping End"));
            let ranges: Vec<_> = lines
                .iter()
                .filter_map(|l| match l {
                    PtLine::Range(r) => Some(r),
                    _ => None,
                })
                .collect();
            // Every address is accounted for: the runs tile the whole
            // space (on x86_64 the guard hole is not walked: the first run
            // stretches to its end).
            for w in ranges.windows(2) {
                assert_eq!(w[0].end, w[1].start, "{mode}\n{text}");
            }
            assert_eq!(ranges[0].start, 0);
            assert_eq!(ranges.last().unwrap().end, 0);
            let total: u128 = ranges.iter().map(|r| r.bytes() as u128).sum();
            let space: u128 = if mode.is_64bit() { 1 << 64 } else { 1 << 32 };
            assert_eq!(total, space, "{mode}");
            // The direct map is covered by present large pages (i386 PAE:
            // split at kernel text for NX).
            let direct: u64 = ranges
                .iter()
                .filter(|r| {
                    r.present
                        && r.start >= ks.layout.page_offset
                        && r.end <= ks.layout.direct_map_end
                })
                .map(|r| r.bytes())
                .sum();
            assert_eq!(direct, 64 << 20, "{mode}\n{text}");
            assert!(text.contains(" GLB "));
            let first = ranges.iter().find(|r| r.present).unwrap();
            assert_eq!(first.start, ks.layout.page_offset);
            assert!(first.pse);
            assert!(first.phys_contiguous);
            assert_eq!(first.phys_start, Some(0));
        }
    }

    #[test]
    fn unboot_of_torn_tables_still_gives_back_what_it_can_reach() {
        // A kernel-part entry of swapper torn to name a table beyond RAM
        // (PAE: PDPTE 3, the kernel pmd): the walk fails when it enters it,
        // but swapper, the fixmap page and PAE's other pmds still go back,
        // and the error says why the rest could not. (2-level has no table
        // the walk enters: a pte table goes back without being read.)
        for mode in [
            PagingMode::Pae,
            PagingMode::FourLevel,
            PagingMode::FiveLevel,
        ] {
            let pm = SimMemory::new(16 << 20).unwrap();
            let ks = boot(&pm, BootConfig::new(mode)).unwrap();
            let slot = match mode {
                PagingMode::Pae => 3,
                _ => mode.user_ptrs_per_pgd(),
            };
            let beyond = Entry::from_raw((1 << 30) | 1);
            crate::table::write_entry(&pm, mode, entry_pa_at(mode, ks.pgd, slot), beyond).unwrap();
            assert!(
                unboot(&pm, &ks).is_err(),
                "{mode}: the torn walk is reported"
            );
            let mut given_back = std::vec![ks.pgd.frame(), ks.kdata];
            if let Some(pmds) = ks.pae_pmds {
                given_back.extend(pmds[..3].iter().map(|p| p.frame()));
            }
            for f in given_back {
                // Already free: a second free is refused.
                assert!(
                    pm.free_frame(f).is_err(),
                    "{mode}: {f:?} was not given back"
                );
            }
        }
    }

    #[test]
    fn boot_out_of_memory_is_an_error() {
        let pm = SimMemory::new(16 << 20).unwrap();
        pm.faults().fail_nth(3);
        let e = boot(&pm, BootConfig::new(PagingMode::Pae)).unwrap_err();
        // The allocator's own error is kept as the source.
        assert!(matches!(e, BootError::OutOfMemory(_)), "{e:?}");
        assert!(core::error::Error::source(&e).is_some());
        pm.faults().clear();
        let pm = SimMemory::new(16 << 20).unwrap();
        pm.faults().fail_nth(2);
        let e = boot(&pm, BootConfig::new(PagingMode::FourLevel)).unwrap_err();
        assert!(
            matches!(e, BootError::Map(MapError::OutOfMemory(_))),
            "{e:?}"
        );
    }
}
