//! Tests of the cursor, per paging mode, and against the software MMU.

use super::*;
use crate::cpu::{Access, CpuState};
use crate::flush::{TableFrames, TlbFlush, Tracked};
use crate::gen::{generate, random_va, GenConfig, Rng};
use crate::walk::{translate, WalkFault};
use alloc::vec::Vec;
use core::cell::RefCell;
use physmem::{Owner, SimMemory};
use proptest::prelude::*;

/// A TLB that records what it was told to drop.
#[derive(Default)]
struct Recorder {
    pages: RefCell<Vec<u64>>,
    alls: RefCell<u32>,
}

impl TlbFlush for Recorder {
    fn flush_page(&self, va: VirtAddr) {
        self.pages.borrow_mut().push(va.as_u64());
    }
    fn flush_all(&self) {
        *self.alls.borrow_mut() += 1;
    }
}

fn setup() -> (SimMemory, PhysAddr) {
    let pm = SimMemory::new(16 << 20).unwrap();
    let root = pm.alloc_zeroed_frame(Owner::UserTable).unwrap().start();
    (pm, root)
}

fn large(mode: PagingMode) -> PageSize {
    mode.page_sizes()[1]
}

/// A kernel address in the large-page-aligned kernel half.
fn kva(mode: PagingMode) -> VirtAddr {
    VirtAddr::new(mode.page_offset() + (8 << 20))
}

#[test]
fn map_lookup_unmap_with_flush_tokens() {
    for mode in PagingMode::ALL {
        let (pm, root) = setup();
        let frames = TableFrames::new(&pm, Owner::UserTable);
        let cur = Cursor::new(&pm, mode, root);
        let cpu = CpuState::new(mode, root);
        let tlb = Recorder::default();
        let va = VirtAddr::new(0x40_3000);
        let flags = EntryFlags::RW | EntryFlags::USER;
        let f = cur
            .map(va, PhysAddr::new(0x7000), PageSize::Size4K, flags, &frames)
            .unwrap();
        assert_eq!((f.start(), f.len()), (va, 4096));
        f.flush(&tlb);
        assert_eq!(*tlb.pages.borrow(), [va.as_u64()]);
        let slot = cur.lookup(va).unwrap();
        assert_eq!(slot.level, Level::Pte);
        assert_eq!(slot.leaf(), Some(PageSize::Size4K));
        assert_eq!(slot.page(), Some(PhysAddr::new(0x7000)));
        assert_eq!(slot.va, va);
        assert!(!slot.is_large());
        let t = translate(&pm, &cpu, va, Access::USER_WRITE).unwrap();
        assert_eq!((t.entry_pa, t.pa), (slot.pa, PhysAddr::new(0x7000)));
        // The neighbour's pte slot exists but is empty; another pgd entry
        // ends the walk at the top.
        let next = cur.lookup(VirtAddr::new(0x40_4000)).unwrap();
        assert_eq!((next.level, next.leaf()), (Level::Pte, None));
        let far = VirtAddr::new(0x8000_0000);
        let top = cur.lookup(far).unwrap();
        assert!(top.level != Level::Pte && !top.is_present(), "{mode}");
        assert_eq!(cur.unmap(far), Err(MapError::NotMapped(far)));
        // Mapping over it again is refused and leaks nothing.
        let before = pm.stats().of(Owner::UserTable);
        let r = cur.map(va, PhysAddr::new(0), PageSize::Size4K, flags, &frames);
        assert!(matches!(
            r,
            Err(MapError::AlreadyMapped {
                level: Level::Pte,
                ..
            })
        ));
        assert_eq!(pm.stats().of(Owner::UserTable), before);
        let old = cur.unmap(va).unwrap().flush(&tlb);
        assert_eq!(old.entry, slot.entry);
        assert_eq!(tlb.pages.borrow().len(), 2);
        assert!(translate(&pm, &cpu, va, Access::READ).is_err());
        assert!(!cur.lookup(va).unwrap().is_present());
    }
}

#[test]
fn protect_rewrites_flags_and_keeps_the_page() {
    for mode in PagingMode::ALL {
        let (pm, root) = setup();
        let frames = TableFrames::new(&pm, Owner::KernelTable);
        let cur = Cursor::new(&pm, mode, root);
        let cpu = CpuState::new(mode, root);
        let tlb = Recorder::default();
        for size in mode.page_sizes().iter().take(2).copied() {
            let va = VirtAddr::new(kva(mode).as_u64() + 4 * size.bytes());
            let pa = PhysAddr::new(size.bytes());
            cur.map(va, pa, size, EntryFlags::RW, &frames)
                .unwrap()
                .ignore();
            let inside = VirtAddr::new(va.as_u64() + (0x1000 & size.mask()));
            let t = translate(&pm, &cpu, inside, Access::WRITE);
            assert!(t.is_ok(), "{mode} {size} {inside}: {t:?}");
            let old = cur
                .protect(inside, EntryFlags::PCD | EntryFlags::PWT)
                .unwrap()
                .flush(&tlb);
            assert_eq!(old.leaf(), Some(size));
            let t = translate(&pm, &cpu, inside, Access::READ).unwrap();
            assert_eq!(t.pa.as_u64(), pa.as_u64() + (0x1000 & size.mask()));
            assert_eq!(t.size, size);
            assert!(t.flags.contains(EntryFlags::PCD | EntryFlags::PWT));
            assert!(translate(&pm, &cpu, inside, Access::WRITE).is_err());
        }
        // A 4 KiB flush is one invlpg; a large one a range (all, here).
        assert_eq!(tlb.pages.borrow()[0], kva(mode).as_u64() + 4 * 4096);
        assert_eq!(*tlb.alls.borrow(), 1);
        let nx = cur.protect(VirtAddr::new(kva(mode).as_u64() + 4 * 4096), EntryFlags::NX);
        if mode == PagingMode::TwoLevel {
            assert_eq!(nx, Err(MapError::Entry(EntryError::NxUnsupported)));
        }
        let nowhere = VirtAddr::new(0x1000);
        assert_eq!(
            cur.protect(nowhere, EntryFlags::RW),
            Err(MapError::NotMapped(nowhere))
        );
    }
}

#[test]
fn alloc_path_rolls_back_on_out_of_memory() {
    for mode in PagingMode::ALL {
        for nth in 1..mode.nr_levels() as u64 {
            let (pm, root) = setup();
            let frames = TableFrames::new(&pm, Owner::UserTable);
            let cur = Cursor::new(&pm, mode, root);
            let before = pm.stats().of(Owner::UserTable);
            pm.faults().fail_nth(nth);
            let va = VirtAddr::new(0x40_0000);
            let r = cur.alloc_path(va, Level::Pte, &frames);
            assert!(matches!(r, Err(MapError::OutOfMemory(_))), "{mode} {nth}");
            let e = r.unwrap_err();
            assert!(core::error::Error::source(&e).is_some());
            pm.faults().clear();
            assert_eq!(pm.stats().of(Owner::UserTable), before, "{mode}");
            assert!(!cur
                .pgd_slot(mode.index(va, Level::Pgd))
                .unwrap()
                .is_present());
            // Without a fault it builds the path and stops at the pte.
            let slot = cur.alloc_path(va, Level::Pte, &frames).unwrap();
            assert_eq!((slot.level, slot.is_present()), (Level::Pte, false));
            assert_eq!(
                pm.stats().of(Owner::UserTable),
                before + mode.nr_levels() as u64 - 1
            );
        }
    }
}

#[test]
fn descend_stops_at_large_leaves_and_refuses_bad_input() {
    for mode in PagingMode::ALL {
        let (pm, root) = setup();
        let frames = TableFrames::new(&pm, Owner::KernelTable);
        let cur = Cursor::new(&pm, mode, root);
        let size = large(mode);
        let va = kva(mode);
        cur.map(va, PhysAddr::new(0), size, EntryFlags::RW, &frames)
            .unwrap()
            .ignore();
        let slot = cur.lookup(VirtAddr::new(va.as_u64() + 0x5000)).unwrap();
        assert!(slot.is_large(), "{mode}");
        assert_eq!(slot.va, va);
        assert_eq!(Some(slot.level), mode.level_for(size));
        let r = cur.alloc_path(va, Level::Pte, &frames);
        assert!(matches!(r, Err(MapError::AlreadyMapped { .. })), "{mode}");
        if mode != PagingMode::TwoLevel {
            assert_eq!(cur.descend(va, Level::Pmd).unwrap(), slot);
        } else {
            assert!(matches!(
                cur.descend(va, Level::Pmd),
                Err(MapError::Entry(EntryError::BadLevel { .. }))
            ));
        }
        if mode.is_64bit() {
            let bad = VirtAddr::new(1 << 62);
            assert_eq!(cur.lookup(bad), Err(MapError::NonCanonical(bad)));
        }
        // A freed table on the path is reported, not read.
        let user = VirtAddr::new(0x40_0000);
        cur.map(
            user,
            PhysAddr::new(0),
            PageSize::Size4K,
            EntryFlags::RW,
            &frames,
        )
        .unwrap()
        .ignore();
        let pte_table = cur.lookup(user).unwrap().pa.frame();
        pm.free_frame(pte_table).unwrap();
        assert!(matches!(
            cur.lookup(user),
            Err(MapError::Dangling {
                level: Level::Pte,
                ..
            })
        ));
    }
}

#[test]
fn split_then_merge_round_trips_through_the_mmu() {
    for mode in PagingMode::ALL {
        for size in mode.page_sizes()[1..].iter().copied() {
            let (pm, root) = setup();
            let frames = TableFrames::new(&pm, Owner::KernelTable);
            let cur = Cursor::new(&pm, mode, root);
            let cpu = CpuState::new(mode, root);
            let tlb = Recorder::default();
            let va = VirtAddr::new(mode.page_offset() + 4 * size.bytes());
            let pa = PhysAddr::new(size.bytes() * 3);
            let flags = EntryFlags::RW | EntryFlags::GLOBAL;
            cur.map(va, pa, size, flags, &frames).unwrap().ignore();
            let small = mode.page_size_at(mode.next_level(mode.level_for(size).unwrap()).unwrap());
            let small = small.unwrap();
            let target = VirtAddr::new(va.as_u64() + 5 * small.bytes());
            let before = pm.stats().of(Owner::KernelTable);
            let split = cur
                .split(target, &frames, |v, _, f| {
                    if v == target {
                        f | EntryFlags::PCD
                    } else {
                        f
                    }
                })
                .unwrap();
            assert_eq!((split.start(), split.len()), (va, size.bytes()));
            let slot = split.flush(&tlb);
            assert!(slot.table().is_some());
            assert_eq!(pm.stats().of(Owner::KernelTable), before + 1);
            // Same translation everywhere, smaller pages, one of them uncached.
            for i in [0u64, 1, 5, 511] {
                let v = VirtAddr::new(va.as_u64() + i * small.bytes() + 0x123);
                let t = translate(&pm, &cpu, v, Access::WRITE).unwrap();
                assert_eq!(t.pa.as_u64(), pa.as_u64() + i * small.bytes() + 0x123);
                assert_eq!(t.size, small, "{mode} {size}");
                assert_eq!(t.flags.contains(EntryFlags::PCD), i == 5);
                assert!(t.flags.contains(EntryFlags::GLOBAL));
            }
            // Not uniform yet: no merge.
            assert_eq!(cur.merge(va, size).unwrap(), None);
            // A 4 KiB pte cannot be split; a 2 MiB piece of a 1 GiB page can.
            if small == PageSize::Size4K {
                assert!(cur.split(target, &frames, |_, _, f| f).is_err());
            }
            // Back to the large page's flags: merge gives the table back
            // only through the flush.
            cur.protect(target, flags).unwrap().ignore();
            let merged = cur.merge(va, size).unwrap().unwrap();
            assert_eq!(merged.payload().slot.leaf(), Some(size));
            let m = merged.flush(&tlb);
            assert_eq!(m.table, slot.table().unwrap().frame());
            pm.free_frame(m.table).unwrap();
            assert_eq!(pm.stats().of(Owner::KernelTable), before);
            let t = translate(&pm, &cpu, target, Access::WRITE).unwrap();
            assert_eq!(
                (t.size, t.pa.as_u64()),
                (size, pa.as_u64() + 5 * small.bytes())
            );
            assert!(!t.flags.contains(EntryFlags::PCD));
            assert_eq!(cur.merge(va, size).unwrap(), None, "already large");
            assert!(*tlb.alls.borrow() >= 2);
        }
    }
}

#[test]
fn split_failure_changes_nothing() {
    for mode in PagingMode::ALL {
        let (pm, root) = setup();
        let frames = TableFrames::new(&pm, Owner::KernelTable);
        let cur = Cursor::new(&pm, mode, root);
        let va = kva(mode);
        cur.map(va, PhysAddr::new(0), large(mode), EntryFlags::RW, &frames)
            .unwrap()
            .ignore();
        let before = cur.lookup(va).unwrap();
        let used = pm.stats().of(Owner::KernelTable);
        pm.faults().fail_nth(1);
        let r = cur.split(va, &frames, |_, _, f| f);
        pm.faults().clear();
        assert!(matches!(r, Err(MapError::OutOfMemory(_))));
        // An encoding failure after the allocation gives the frame back.
        let r = cur.split(va, &frames, |_, _, f| f | EntryFlags::USER | EntryFlags::NX);
        if mode == PagingMode::TwoLevel {
            assert_eq!(r, Err(MapError::Entry(EntryError::NxUnsupported)));
        } else {
            r.unwrap().ignore();
            continue;
        }
        assert_eq!(cur.lookup(va).unwrap(), before);
        assert_eq!(pm.stats().of(Owner::KernelTable), used);
        let user = VirtAddr::new(0x40_0000);
        cur.map(
            user,
            PhysAddr::new(0),
            PageSize::Size4K,
            EntryFlags::RW,
            &frames,
        )
        .unwrap()
        .ignore();
        assert!(matches!(
            cur.split(user, &frames, |_, _, f| f),
            Err(MapError::NotLarge {
                level: Level::Pte,
                ..
            })
        ));
    }
}

#[test]
fn entries_visit_exactly_the_range() {
    for mode in PagingMode::ALL {
        let (pm, root) = setup();
        let frames = TableFrames::new(&pm, Owner::UserTable);
        let cur = Cursor::new(&pm, mode, root);
        let mut rng = Rng::new(mode as u64 + 11);
        let mut mapped = Vec::new();
        while mapped.len() < 40 {
            let va = random_va(&mut rng, mode, 4096);
            if cur
                .map(
                    va,
                    PhysAddr::new(0x1000),
                    PageSize::Size4K,
                    EntryFlags::RW,
                    &frames,
                )
                .map(|f| f.ignore())
                .is_ok()
            {
                mapped.push(va.as_u64());
            }
        }
        mapped.sort_unstable();
        let all = |it: Entries<'_, SimMemory>| -> Vec<Slot> { it.map(|s| s.unwrap()).collect() };
        let mask = (1u128 << mode.va_bits()) - 1;
        let top = VirtAddr::new((mask as u64).wrapping_add(1));
        let leaves: Vec<u64> = all(cur.entries(VirtAddr::new(0)..top))
            .iter()
            .filter(|s| s.leaf().is_some())
            .map(|s| s.va.as_u64())
            .collect();
        // Address order is unsigned order within the mode's width.
        let mut want = mapped.clone();
        want.sort_unstable_by_key(|&v| v as u128 & mask);
        assert_eq!(leaves, want, "{mode}");
        // A sub-range: exactly the leaves inside it, parents first.
        let (lo, hi) = (mapped[5], mapped[20]);
        let got = all(cur.entries(VirtAddr::new(lo)..VirtAddr::new(hi)));
        let in_range: Vec<u64> = got
            .iter()
            .filter(|s| s.leaf().is_some())
            .map(|s| s.va.as_u64())
            .collect();
        let expect: Vec<u64> = mapped
            .iter()
            .copied()
            .filter(|&v| v >= lo && v < hi)
            .collect();
        assert_eq!(in_range, expect, "{mode}");
        assert_eq!(got[0].level, Level::Pgd);
        for s in &got {
            assert!(s.is_present());
            assert!(s.va.as_u64() < hi && s.va.as_u64().wrapping_add(s.span()) > lo);
        }
        // skip_children: only pgd entries.
        let mut it = cur.entries(VirtAddr::new(0)..top);
        let mut n = 0;
        while let Some(s) = it.next() {
            assert_eq!(s.unwrap().level, Level::Pgd);
            it.skip_children();
            n += 1;
        }
        assert!(n > 0 && n <= mode.ptrs_per_pgd());
        // A freed table is reported once and the walk goes on.
        let victim = cur.lookup(VirtAddr::new(mapped[0])).unwrap().pa.frame();
        pm.free_frame(victim).unwrap();
        let items: Vec<_> = cur.entries(VirtAddr::new(0)..top).collect();
        let errs = items.iter().filter(|r| r.is_err()).count();
        assert_eq!(errs, 1, "{mode}");
        assert!(items
            .iter()
            .filter_map(|r| r.as_ref().ok())
            .any(|s| s.leaf().is_some()));
        assert_eq!(cur.entries(VirtAddr::new(hi)..VirtAddr::new(lo)).count(), 0);
    }
}

/// `set_pmd_pte` on 2-level: a split in swapper, then the same pgd entry
/// written into another pgd through `with_root` + `pgd_slot`.
#[test]
fn split_entry_propagates_to_another_pgd() {
    let mode = PagingMode::TwoLevel;
    let (pm, swapper) = setup();
    let other = pm.alloc_zeroed_frame(Owner::UserTable).unwrap().start();
    let frames = TableFrames::new(&pm, Owner::KernelTable);
    let cur = Cursor::new(&pm, mode, swapper);
    let va = kva(mode);
    cur.map(
        va,
        PhysAddr::new(0),
        PageSize::Size4M,
        EntryFlags::RW,
        &frames,
    )
    .unwrap()
    .ignore();
    let index = mode.index(va, Level::Pgd);
    let theirs = cur.with_root(other);
    let old = cur.pgd_slot(index).unwrap().entry;
    theirs
        .write(&theirs.pgd_slot(index).unwrap(), old)
        .unwrap()
        .ignore();
    let split = cur
        .split(va, &frames, |_, _, f| f | EntryFlags::PCD)
        .unwrap();
    let new = split.payload().entry;
    let slot = theirs.pgd_slot(index).unwrap();
    assert_eq!((slot.index(), slot.va, slot.entry), (index, va, old));
    theirs.write(&slot, new).unwrap().ignore();
    split.ignore();
    for root in [swapper, other] {
        let t = translate(&pm, &CpuState::new(mode, root), va, Access::READ).unwrap();
        assert_eq!(t.size, PageSize::Size4K);
        assert!(t.flags.contains(EntryFlags::PCD));
    }
    assert!(cur.pgd_slot(mode.ptrs_per_pgd()).is_err());
}

/// vmalloc's pattern: many pages, one failure, everything undone.
#[test]
fn tracked_edits_unhook_as_a_whole() {
    for mode in PagingMode::ALL {
        let (pm, root) = setup();
        let cur = Cursor::new(&pm, mode, root);
        let base = TableFrames::new(&pm, Owner::KernelTable);
        // A table that was there before stays.
        let start = kva(mode).as_u64();
        cur.map(
            VirtAddr::new(start),
            PhysAddr::new(0),
            PageSize::Size4K,
            EntryFlags::RW,
            &base,
        )
        .unwrap()
        .ignore();
        let before = pm.stats().of(Owner::KernelTable);
        let frames = Tracked::new(base);
        // 3 pages in the old pte table, then across into new tables.
        let span = mode.span(mode.levels()[mode.nr_levels() - 2]);
        let pages: Vec<u64> = (1..4)
            .map(|i| start + i * 4096)
            .chain((0..3).map(|i| start + 3 * span + i * 4096))
            .collect();
        for &p in &pages {
            cur.map(
                VirtAddr::new(p),
                PhysAddr::new(0x9000),
                PageSize::Size4K,
                EntryFlags::RW,
                &frames,
            )
            .unwrap()
            .ignore();
        }
        assert!(!frames.tables().is_empty(), "{mode}");
        assert_eq!(
            pm.stats().of(Owner::KernelTable),
            before + frames.tables().len() as u64
        );
        for &p in &pages {
            cur.unmap(VirtAddr::new(p)).unwrap().ignore();
        }
        let end = VirtAddr::new(start + 4 * span);
        let n = cur
            .unhook(VirtAddr::new(start)..end, &frames.tables(), &frames)
            .unwrap();
        assert!(n > 0);
        assert!(frames.tables().is_empty());
        assert_eq!(pm.stats().of(Owner::KernelTable), before, "{mode}");
        assert!(cur.lookup(VirtAddr::new(start)).unwrap().leaf().is_some());
        let gone = cur.lookup(VirtAddr::new(pages[5])).unwrap();
        assert!(
            gone.level != Level::Pte && !gone.is_present(),
            "{mode}: {gone:?}"
        );
    }
}

/// The flush token: a range past the ceiling flushes everything, an
/// ignored one nothing.
#[test]
fn flush_token_routes_to_the_tlb() {
    let tlb = Recorder::default();
    Flush::new(VirtAddr::new(0x1000), 4096, ()).flush(&tlb);
    Flush::new(VirtAddr::new(0x2000), 3 * 4096, ()).flush(&tlb);
    assert_eq!(*tlb.pages.borrow(), [0x1000, 0x2000, 0x3000, 0x4000]);
    Flush::new(VirtAddr::new(0), 2 << 20, ()).flush(&tlb);
    assert_eq!(*tlb.alls.borrow(), 1);
    let f = Flush::new(VirtAddr::new(0), 0, 7u8);
    assert!(f.is_empty());
    assert_eq!(f.flush(&tlb), 7);
    assert_eq!(Flush::new(VirtAddr::new(0x5000), 4096, 9u8).ignore(), 9);
    assert_eq!(tlb.pages.borrow().len(), 4);
}

/// The cursor ends its walk at the entry the MMU ends at, for every
/// address: a leaf where the MMU translates (same page and size), the
/// not-present entry where it faults.
fn agrees_with_the_mmu(mode: PagingMode, seed: u64, n: usize) -> Result<(), TestCaseError> {
    let pm = SimMemory::new(32 << 20).unwrap();
    let mut cfg = GenConfig::new(mode, seed);
    cfg.mappings = n;
    let g = generate(&pm, &cfg).unwrap();
    let cur = Cursor::new(&pm, mode, g.root);
    let mut rng = Rng::new(seed ^ 0xc0);
    let mut vas: Vec<VirtAddr> = g.mappings.iter().map(|m| m.va).collect();
    vas.extend((0..64).map(|_| random_va(&mut rng, mode, 8)));
    for va in vas {
        let slot = cur.lookup(va).unwrap();
        match translate(&pm, &g.cpu, va, Access::READ) {
            Ok(t) => {
                prop_assert_eq!(slot.pa, t.entry_pa, "{} {}", mode, va);
                prop_assert_eq!(slot.leaf(), Some(t.size));
                let off = va.as_u64() & t.size.mask();
                prop_assert_eq!(slot.page().map(|p| p.as_u64() + off), Some(t.pa.as_u64()));
            }
            Err(WalkFault::PageFault { entry_pa, .. }) => {
                prop_assert_eq!(slot.pa, entry_pa, "{} {}", mode, va);
            }
            Err(e) => prop_assert!(false, "{} {}: {:?}", mode, va, e),
        }
    }
    // The leaves the range iterator finds are the generator's mappings.
    let mask = (1u128 << mode.va_bits()) - 1;
    let top = VirtAddr::new((mask as u64).wrapping_add(1));
    let mut leaves: Vec<(u64, u64, PageSize)> = Vec::new();
    for s in cur.entries(VirtAddr::new(0)..top) {
        let s = s.unwrap();
        if let (Some(size), Some(pa)) = (s.leaf(), s.page()) {
            leaves.push((s.va.as_u64(), pa.as_u64(), size));
        }
    }
    let mut want: Vec<(u64, u64, PageSize)> = g
        .mappings
        .iter()
        .map(|m| (m.va.as_u64(), m.pa.as_u64(), m.size))
        .collect();
    leaves.sort_unstable();
    want.sort_unstable();
    prop_assert_eq!(leaves, want);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    #[test]
    fn cursor_lookups_agree_with_the_mmu(mode_i in 0usize..4, seed in any::<u64>(), n in 1usize..40) {
        agrees_with_the_mmu(PagingMode::ALL[mode_i], seed, n)?;
    }
}

/// `map_ptes` writes exactly what `map` page by page writes (same entries,
/// same tables), and stops at the first page `map` would refuse, with the
/// pages before it mapped and nothing attached for it.
#[test]
fn map_ptes_matches_map_and_stops_cleanly() {
    for mode in PagingMode::ALL {
        let user = EntryFlags::USER;
        // Two runs in two pte tables, one page alone in a third, out of
        // order at the end.
        let mut pages: Vec<(VirtAddr, PhysAddr, EntryFlags)> = (0..20u64)
            .map(|i| (0x40_0000 + i * 4096, 0x10_0000 + i * 4096))
            .chain((0..6u64).map(|i| (0x80_0000 - 3 * 4096 + i * 4096, 0x20_0000 + i * 4096)))
            .chain([
                (0x4000_0000u64, 0x30_0000u64),
                (0x40_3000 + 19 * 4096, 0x31_0000),
            ])
            .map(|(va, pa)| (VirtAddr::new(va), PhysAddr::new(pa), user | EntryFlags::RW))
            .collect();
        pages.swap(0, 1);
        let (pm, root) = setup();
        let (pm2, root2) = setup();
        let frames = TableFrames::new(&pm, Owner::UserTable);
        let frames2 = TableFrames::new(&pm2, Owner::UserTable);
        let cur = Cursor::new(&pm, mode, root);
        let one = Cursor::new(&pm2, mode, root2);
        let f = cur.map_ptes(pages.iter().copied(), &frames).unwrap();
        assert_eq!(*f.payload(), pages.len(), "{mode}");
        assert_eq!(f.start(), VirtAddr::new(0x40_0000));
        assert_eq!(f.len(), 0x4000_1000 - 0x40_0000);
        f.ignore();
        for &(va, pa, flags) in &pages {
            one.map(va, pa, PageSize::Size4K, flags, &frames2)
                .unwrap()
                .ignore();
        }
        assert_eq!(
            pm.stats().of(Owner::UserTable),
            pm2.stats().of(Owner::UserTable),
            "{mode}"
        );
        for &(va, pa, _) in &pages {
            let (a, b) = (cur.lookup(va).unwrap(), one.lookup(va).unwrap());
            assert_eq!((a.level, a.entry, a.page()), (b.level, b.entry, b.page()));
            assert_eq!(a.page(), Some(pa), "{mode} {va}");
        }
        // A run that meets a mapped page stops there; a misaligned page
        // stops it before anything is allocated for it.
        let tables = pm.stats().of(Owner::UserTable);
        let again = [
            (VirtAddr::new(0x1000_0000), PhysAddr::new(0x5000), user),
            (VirtAddr::new(0x1000_1000), PhysAddr::new(0x6000), user),
            pages[5],
            (VirtAddr::new(0x2000_0000), PhysAddr::new(0x7000), user),
        ];
        let e = cur.map_ptes(again, &frames).unwrap_err();
        assert_eq!(e.mapped, 2, "{mode}");
        assert!(matches!(e.error, MapError::AlreadyMapped { .. }), "{mode}");
        assert!(cur.leaf_of(VirtAddr::new(0x1000_1000)).is_ok());
        assert!(cur.leaf_of(VirtAddr::new(0x2000_0000)).is_err());
        let grew = pm.stats().of(Owner::UserTable) - tables;
        let bad = [(VirtAddr::new(0x3000_0800), PhysAddr::new(0x5000), user)];
        let e = cur.map_ptes(bad, &frames).unwrap_err();
        assert_eq!(e.mapped, 0);
        assert!(matches!(e.error, MapError::Misaligned { .. }));
        assert_eq!(pm.stats().of(Owner::UserTable) - tables, grew, "{mode}");
        // Out of frames for a new pte table: that page attached nothing.
        pm.faults().fail_when(|_| true);
        let far = [(VirtAddr::new(0x3000_0000), PhysAddr::new(0x5000), user)];
        let e = cur.map_ptes(far, &frames).unwrap_err();
        assert!(matches!(e.error, MapError::OutOfMemory(_)));
        pm.faults().clear();
        assert_eq!(pm.stats().of(Owner::UserTable) - tables, grew, "{mode}");
        assert!(!cur.lookup(VirtAddr::new(0x3000_0000)).unwrap().is_present());
        // Nothing at all: an empty flush.
        let f = cur.map_ptes(core::iter::empty(), &frames).unwrap();
        assert_eq!((*f.payload(), f.len()), (0, 0));
        f.ignore();
    }
}

/// `zap_ptes` clears each pte, hands over each cleared page's payload in
/// order, reports each switch of pte table once, and stops at the first
/// address with no pte table, handing over nothing for it.
#[test]
fn zap_ptes_clears_hands_over_and_reports_tables() {
    for mode in PagingMode::ALL {
        let flags = EntryFlags::USER | EntryFlags::RW;
        let span = mode.entries(Level::Pte) as u64 * 4096;
        // Three pages in one pte table, two in the next, one far away.
        let vas: Vec<u64> = [0u64, 1, 2]
            .iter()
            .map(|i| 0x40_0000 + i * 4096)
            .chain([0x40_0000 + span, 0x40_1000 + span, 0x4000_0000])
            .collect();
        let (pm, root) = setup();
        let frames = TableFrames::new(&pm, Owner::UserTable);
        let cur = Cursor::new(&pm, mode, root);
        let pages = vas.iter().map(|&va| {
            (
                VirtAddr::new(va),
                PhysAddr::new(0x10_0000 + va % 0x10_0000),
                flags,
            )
        });
        cur.map_ptes(pages, &frames).unwrap().ignore();
        let (mut got, mut tables) = (Vec::new(), Vec::new());
        let f = cur
            .zap_ptes(
                vas.iter()
                    .enumerate()
                    .map(|(i, &va)| (VirtAddr::new(va), i)),
                |i| got.push(i),
                |va| tables.push(va.as_u64()),
            )
            .unwrap();
        assert_eq!(*f.payload(), vas.len(), "{mode}");
        f.ignore();
        assert_eq!(got, (0..vas.len()).collect::<Vec<_>>(), "{mode}");
        assert_eq!(tables, [vas[0], vas[3], vas[5]], "{mode}");
        for &va in &vas {
            let slot = cur.lookup(VirtAddr::new(va)).unwrap();
            assert_eq!(
                (slot.level, slot.entry),
                (Level::Pte, Entry::EMPTY),
                "{mode}"
            );
        }
        // An address with no pte table under it stops the run there.
        let (mut got, mut tables) = (Vec::new(), Vec::new());
        let e = cur
            .zap_ptes(
                [(VirtAddr::new(vas[0]), 0), (VirtAddr::new(0x2000_0000), 1)],
                |i| got.push(i),
                |va| tables.push(va.as_u64()),
            )
            .unwrap_err();
        assert_eq!(e.mapped, 1, "{mode}");
        assert!(matches!(e.error, MapError::NotMapped(_)), "{mode}");
        assert_eq!(
            (got.as_slice(), tables.as_slice()),
            (&[0][..], &[vas[0]][..]),
            "{mode}"
        );
    }
}

/// In a pte table `map_ptes` attached itself, pages out of order are
/// mapped and the same page twice is refused where the second try is,
/// with the pages before it mapped.
#[test]
fn map_ptes_refuses_a_page_twice_in_a_fresh_table() {
    for mode in PagingMode::ALL {
        let flags = EntryFlags::USER | EntryFlags::RW;
        let page = |va: u64| {
            (
                VirtAddr::new(va),
                PhysAddr::new(0x10_0000 + va % 0x10_0000),
                flags,
            )
        };
        let runs: [(&[u64], usize); 4] = [
            (&[0x40_0000, 0x40_2000, 0x40_1000, 0x40_3000], 4),
            (&[0x40_0000, 0x40_1000, 0x40_1000], 2),
            (&[0x40_0000, 0x40_2000, 0x40_0000], 2),
            (&[0x40_1000, 0x40_1000], 1),
        ];
        for (run, ok) in runs {
            let (pm, root) = setup();
            let frames = TableFrames::new(&pm, Owner::UserTable);
            let cur = Cursor::new(&pm, mode, root);
            let r = cur.map_ptes(run.iter().map(|&va| page(va)), &frames);
            match r {
                Ok(f) => {
                    assert_eq!(
                        (*f.payload(), ok),
                        (run.len(), run.len()),
                        "{mode} {run:x?}"
                    );
                    f.ignore();
                }
                Err(e) => {
                    assert_eq!(e.mapped, ok, "{mode} {run:x?}");
                    assert!(
                        matches!(e.error, MapError::AlreadyMapped { .. }),
                        "{mode} {run:x?}"
                    );
                }
            }
            for &va in &run[..ok] {
                assert_eq!(
                    cur.leaf_of(VirtAddr::new(va)).unwrap().page(),
                    Some(page(va).1)
                );
            }
        }
    }
}
