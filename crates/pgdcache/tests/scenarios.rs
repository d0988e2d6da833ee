//! Deterministic scenarios of the seed: cache pgds, convert a kernel large
//! page, reuse the cache, and check every pgd.

use pgdcache::mm::TaskSize;
use pgdcache::{Kernel, KernelConfig, Pgd, Scheme, ViolationKind};
use physmem::{SimMemory, VirtAddr, PAGE_SIZE};
use std::sync::Arc;
use x86paging::{EntryFlags, PagingMode};

fn kernel(mode: PagingMode, scheme: Scheme) -> Kernel {
    let pm = Arc::new(SimMemory::new(64 << 20).unwrap());
    let mut cfg = KernelConfig::new(mode, scheme);
    cfg.debug = true;
    Kernel::new(pm, &cfg).unwrap()
}

/// A direct-map page away from kernel text (16 MiB in).
fn target(k: &Kernel) -> VirtAddr {
    VirtAddr::new(k.mode().page_offset() + (16 << 20))
}

fn nocache(k: &Kernel) -> EntryFlags {
    let mut f = k.page_kernel_at(target(k)).unwrap();
    f |= EntryFlags::PCD | EntryFlags::PWT;
    f
}

/// Caches `n` pgds: allocate n address spaces and exit them.
fn fill_cache(k: &Kernel, n: usize) {
    let mms: Vec<_> = (0..n)
        .map(|_| k.exec_mm(0, TaskSize::SMALL).unwrap())
        .collect();
    for mm in mms {
        k.exit_mm(0, mm).unwrap();
    }
}

/// The seed's bug and its fix, on 2-level: split → stale; revert → dangling.
fn split_then_revert(scheme: Scheme) -> (usize, usize, usize, usize) {
    let k = kernel(PagingMode::TwoLevel, scheme);
    fill_cache(&k, 8);
    let t = target(&k);
    k.change_page_attr(t, 1, nocache(&k)).unwrap();
    k.global_flush_tlb();
    // Allocate again: reuses cached pgds (and, past the cache, constructs
    // new ones that copy the split entry).
    let mms: Vec<_> = (0..12)
        .map(|_| k.exec_mm(0, TaskSize::SMALL).unwrap())
        .collect();
    let after_split = k.verify().unwrap();
    for mm in mms {
        k.exit_mm(0, mm).unwrap();
    }
    // Revert: the pte page is freed after the flush.
    let def = k.page_kernel_at(t).unwrap();
    k.change_page_attr(t, 1, def).unwrap();
    assert_eq!(k.global_flush_tlb(), 1, "{scheme}: the pte page is freed");
    let after_revert = k.verify().unwrap();
    (
        after_split.count(ViolationKind::Stale),
        after_split.count(ViolationKind::Dangling),
        after_revert.count(ViolationKind::Stale),
        after_revert.count(ViolationKind::Dangling),
    )
}

#[test]
fn slab_unsynced_is_caught_stale_then_dangling() {
    let (s1, _d1, _s2, d2) = split_then_revert(Scheme::SlabUnsynced);
    assert!(s1 > 0, "stale pgds after the split must be reported");
    assert!(d2 > 0, "dangling pgds after the revert must be reported");
}

#[test]
fn correct_schemes_stay_clean_on_2level() {
    for scheme in [Scheme::Uncached, Scheme::SlabPgdList, Scheme::SlabTicket] {
        assert_eq!(split_then_revert(scheme), (0, 0, 0, 0), "{scheme}");
    }
}

#[test]
fn shared_kernel_is_refused_on_2level() {
    let pm = Arc::new(SimMemory::new(64 << 20).unwrap());
    let e = Kernel::new(
        pm,
        &KernelConfig::new(PagingMode::TwoLevel, Scheme::SharedKernel),
    );
    assert!(e.is_err());
}

#[test]
fn every_scheme_is_clean_on_pae_and_64bit() {
    for mode in [
        PagingMode::Pae,
        PagingMode::FourLevel,
        PagingMode::FiveLevel,
    ] {
        for scheme in Scheme::ALL {
            if scheme.supports(mode).is_err() {
                continue;
            }
            let k = kernel(mode, scheme);
            fill_cache(&k, 8);
            let t = target(&k);
            k.change_page_attr(t, 3, nocache(&k)).unwrap();
            k.global_flush_tlb();
            let mms: Vec<_> = (0..4)
                .map(|_| k.exec_mm(1, TaskSize::SMALL).unwrap())
                .collect();
            let r = k.verify().unwrap();
            assert!(r.is_clean(), "{mode} {scheme}: {:?}", r.violations);
            let def = k.page_kernel_at(t).unwrap();
            k.change_page_attr(t, 3, def).unwrap();
            assert_eq!(k.global_flush_tlb(), 1);
            for mm in mms {
                k.exit_mm(1, mm).unwrap();
            }
            let r = k.verify().unwrap();
            assert!(r.is_clean(), "{mode} {scheme}: {:?}", r.violations);
        }
    }
}

#[test]
fn fork_shares_pages_and_exit_frees_everything() {
    for mode in PagingMode::ALL {
        for scheme in Scheme::ALL {
            let pm = Arc::new(SimMemory::new(64 << 20).unwrap());
            let Ok(k) = Kernel::new(pm.clone(), &KernelConfig::new(mode, scheme)) else {
                continue;
            };
            let free0 = pm.free_frames();
            let parent = k.exec_mm(0, TaskSize::SMALL).unwrap();
            let child = k.fork_mm(1, &parent).unwrap();
            assert_eq!(child.rss(), parent.rss());
            let r = k.verify().unwrap();
            assert!(r.is_clean(), "{mode} {scheme}: {:?}", r.violations);
            k.exit_mm(0, parent).unwrap();
            k.exit_mm(1, child).unwrap();
            let r = k.verify().unwrap();
            assert!(r.is_clean(), "{mode} {scheme}: {:?}", r.violations);
            k.shrink();
            let slab = k.slab_frames();
            assert_eq!(
                pm.free_frames() + slab,
                free0 - extra_tables(&k),
                "{mode} {scheme}"
            );
        }
    }
}

/// Kernel tables attached after boot (none in these tests).
fn extra_tables(_k: &Kernel) -> u64 {
    0
}

#[test]
fn vmalloc_is_lazily_faulted_in() {
    for mode in [PagingMode::TwoLevel, PagingMode::FourLevel] {
        let k = kernel(mode, Scheme::SlabPgdList);
        let mm = k.exec_mm(0, TaskSize::SMALL).unwrap();
        let va = k.vmalloc(4).unwrap();
        let r = k.verify().unwrap();
        assert!(r.is_clean(), "{:?}", r.violations);
        assert!(
            r.lazy_missing > 0,
            "{mode}: a new vmalloc table is missing in the live pgd"
        );
        assert!(k.vmalloc_fault(mm.pgd(), va).unwrap());
        let r = k.verify().unwrap();
        assert_eq!(r.lazy_missing, 0);
        k.vfree(va).unwrap();
        assert!(k.vfree(va).is_err());
        k.exit_mm(0, mm).unwrap();
        assert!(k.verify().unwrap().is_clean());
        let _ = PAGE_SIZE;
    }
}

/// A conversion between `pgd_alloc` and the join to `mmlist`: the ticket
/// scheme refreshes at the join; the unpatched 2.5.69 code loses it (its
/// pgd_alloc copies swapper before dup_mmap links the mm).
#[test]
fn conversion_between_alloc_and_join() {
    let mut outcome = Vec::new();
    for scheme in [Scheme::Uncached, Scheme::SlabPgdList, Scheme::SlabTicket] {
        let k = kernel(PagingMode::TwoLevel, scheme);
        fill_cache(&k, 2);
        let pgd = k.pgd_alloc(0).unwrap();
        k.change_page_attr(target(&k), 1, nocache(&k)).unwrap();
        k.mm_join(pgd).unwrap();
        let r = k.verify().unwrap();
        outcome.push((scheme, r.count(ViolationKind::Stale)));
        k.mm_leave(pgd);
        k.clear_page_tables(pgd).unwrap();
        k.pgd_free(0, pgd).unwrap();
    }
    assert_eq!(
        outcome,
        [
            (Scheme::Uncached, 1),
            (Scheme::SlabPgdList, 0),
            (Scheme::SlabTicket, 0)
        ]
    );
}

/// The ticket scheme leaves cached pgds stale on purpose and refreshes
/// them at join: the checker counts them as known-stale, never as violations.
#[test]
fn ticket_scheme_refreshes_at_join() {
    let k = kernel(PagingMode::TwoLevel, Scheme::SlabTicket);
    fill_cache(&k, 4);
    k.change_page_attr(target(&k), 1, nocache(&k)).unwrap();
    let r = k.verify().unwrap();
    assert!(r.is_clean());
    assert!(
        r.known_stale >= 4,
        "cached pgds are known-stale: {}",
        r.known_stale
    );
    let mms: Vec<_> = (0..4)
        .map(|_| k.exec_mm(0, TaskSize::SMALL).unwrap())
        .collect();
    assert!(k.stats().ticket_refreshes >= 4);
    assert!(k.verify().unwrap().is_clean());
    for mm in mms {
        k.exit_mm(0, mm).unwrap();
    }
}

/// Accounting figures per scheme: bytes blitted per pgd_alloc.
#[test]
fn bytes_blitted_per_alloc() {
    let k = kernel(PagingMode::TwoLevel, Scheme::Uncached);
    fill_cache(&k, 10);
    assert_eq!(k.stats().bytes_per_alloc(), 4096.0);
    let k = kernel(PagingMode::TwoLevel, Scheme::SlabPgdList);
    fill_cache(&k, 1);
    for _ in 0..9 {
        fill_cache(&k, 1);
    }
    let s = k.stats();
    assert_eq!(s.pgd_allocs, 10);
    assert!(
        s.bytes_per_alloc() < 4096.0 / 2.0,
        "{}",
        s.bytes_per_alloc()
    );
    assert_eq!(s.pgd_list_len as u64, s.pgd_ctors - s.pgd_dtors);
    let k = kernel(PagingMode::Pae, Scheme::Uncached);
    fill_cache(&k, 4);
    assert_eq!(k.stats().bytes_per_alloc(), 8.0 + 3.0 * 4096.0);
}

/// Invalid `change_page_attr` requests return a typed error and change nothing.
#[test]
fn invalid_cpa_requests_change_nothing() {
    use pgdcache::CpaError;
    for mode in PagingMode::ALL {
        let k = kernel(mode, Scheme::SlabPgdList);
        let mm = k.exec_mm(0, TaskSize::SMALL).unwrap();
        let before = format!("{:?}", k.kernel_space().ptdump(&**k.pm(), k.swapper().0));
        let free = k.pm().free_frames();
        let t = target(&k);
        let prot = nocache(&k);
        let off = k.mode().page_offset();
        let (_, map_end) = (off, k.kernel_space().layout.direct_map_end);
        let cases: Vec<(VirtAddr, u64, EntryFlags)> = vec![
            (t, 0, prot),                                  // zero pages
            (VirtAddr::new(t.as_u64() + 8), 1, prot),      // misaligned
            (t, u64::MAX / 2, prot),                       // overflow
            (VirtAddr::new(map_end - PAGE_SIZE), 2, prot), // runs past the direct map
            (VirtAddr::new(0x40_0000), 1, prot),           // user address
            (t, 1, prot - EntryFlags::PRESENT),            // not present
            (t, 1, prot | EntryFlags::USER),               // user-accessible
            (t, 1, prot | EntryFlags::PAT),                // PAT index
        ];
        for (va, n, p) in cases {
            let e = k.change_page_attr(va, n, p).unwrap_err();
            assert!(
                matches!(
                    e,
                    CpaError::Empty
                        | CpaError::Misaligned(_)
                        | CpaError::Overflow { .. }
                        | CpaError::OutsideDirectMap { .. }
                        | CpaError::BadProt { .. }
                ),
                "{mode}: {e}"
            );
            assert!(!e.to_string().is_empty());
        }
        if mode == PagingMode::TwoLevel {
            let e = k.change_page_attr(t, 1, prot | EntryFlags::NX).unwrap_err();
            assert!(matches!(e, CpaError::BadProt { .. }), "{e}");
        }
        let after = format!("{:?}", k.kernel_space().ptdump(&**k.pm(), k.swapper().0));
        assert_eq!(before, after, "{mode}: the kernel page table changed");
        assert_eq!(free, k.pm().free_frames(), "{mode}: frames changed");
        assert_eq!(k.stats().conversions, 0);
        k.exit_mm(0, mm).unwrap();
        assert!(k.verify().unwrap().is_clean());
    }
}

/// `slab-prepopulated` (PAE): a pgd comes back from the cache with the
/// pmds it had, so a second pgd_alloc/pgd_free pair never touches
/// `pmd_cache`; shrinking gives the pmds back through `pgd_dtor`.
#[test]
fn prepopulated_pgds_keep_their_pmds_across_the_cache() {
    let k = kernel(PagingMode::Pae, Scheme::SlabPrepopulated);
    let pmds_of =
        |pgd: Pgd| -> Vec<u64> { (0..3).map(|i| k.pgd_entry(pgd, i).unwrap().raw()).collect() };
    let pmd_ops = |k: &Kernel| {
        let st = k.slab_stats();
        let pmd = st.iter().find(|s| s.name == "pmd").unwrap();
        pmd.alloc_hits + pmd.alloc_misses + pmd.free_hits + pmd.free_misses
    };
    let a = k.pgd_alloc(0).unwrap();
    let first = pmds_of(a);
    assert!(first.iter().all(|&e| e & 1 == 1), "three pmds attached");
    k.pgd_free(0, a).unwrap();
    let ops = pmd_ops(&k);
    let b = k.pgd_alloc(0).unwrap();
    assert_eq!(a, b, "LIFO per-CPU array");
    assert_eq!(pmds_of(b), first, "the same pmds come back with the pgd");
    k.pgd_free(0, b).unwrap();
    assert_eq!(pmd_ops(&k), ops, "no pmd_cache operation for a warm pair");
    // A whole task (exec, fork, exit) leaves every cached pgd with three
    // empty pmds, and verify accounts for each of them.
    let parent = k.exec_mm(0, TaskSize::SMALL).unwrap();
    let child = k.fork_mm(1, &parent).unwrap();
    k.exit_mm(1, child).unwrap();
    k.exit_mm(0, parent).unwrap();
    let r = k.verify().unwrap();
    assert!(r.is_clean(), "{:?}", r.violations);
    let held = k.cache_pmds().iter().filter(|(_, a)| *a).count();
    assert!(held >= 3, "cached pgds hold their pmds: {held}");
    // Shrinking destroys the empty pgd slab: pgd_dtor gives the pmds back.
    k.shrink();
    assert_eq!(k.cache_pmds().iter().filter(|(_, a)| *a).count(), 0);
    let r = k.verify().unwrap();
    assert!(r.is_clean() && r.leaked_frames == 0, "{:?}", r.violations);
}

/// The checker's pmd accounting catches what `slab-prepopulated` could get
/// wrong: a cached pgd's pmd that is not empty, and a pmd that was detached
/// from its pgd without going back to `pmd_cache`.
#[test]
fn checker_catches_dirty_and_orphaned_prepopulated_pmds() {
    use x86paging::table::{entry_pa_at, write_entry};
    use x86paging::Entry;
    let k = kernel(PagingMode::Pae, Scheme::SlabPrepopulated);
    let pgd = k.pgd_alloc(0).unwrap();
    k.pgd_free(0, pgd).unwrap();
    let mode = k.mode();
    let pmd0 = k.pgd_entry(pgd, 0).unwrap().table_addr(mode);
    // A stray pte-table pointer left in a cached pgd's pmd.
    let stray = entry_pa_at(mode, pmd0, 7);
    write_entry(&**k.pm(), mode, stray, Entry::from_raw(0x1234_5000 | 0x67)).unwrap();
    let r = k.verify().unwrap();
    assert!(
        r.count(ViolationKind::NotConstructed) > 0,
        "{:?}",
        r.violations
    );
    write_entry(&**k.pm(), mode, stray, Entry::EMPTY).unwrap();
    assert!(k.verify().unwrap().is_clean());
    // Detach pmd 1 behind the cache's back: an orphan, and a pgd with 2 of 3.
    let at = entry_pa_at(mode, pgd.0, 1);
    let saved = k.pgd_entry(pgd, 1).unwrap();
    write_entry(&**k.pm(), mode, at, Entry::EMPTY).unwrap();
    let r = k.verify().unwrap();
    assert!(r.count(ViolationKind::Leak) > 0, "{:?}", r.violations);
    assert!(r.leaked_frames >= 1);
    assert!(
        r.count(ViolationKind::NotConstructed) > 0,
        "{:?}",
        r.violations
    );
    write_entry(&**k.pm(), mode, at, saved).unwrap();
    assert!(k.verify().unwrap().is_clean());
}

/// Freed-frame poisoning's finding reaches the checker: a write into a
/// freed frame (a store through a stale reference) is caught by the page
/// allocator when the frame is allocated again, and `verify` reports it as
/// a use-after-free, with where. A kernel that writes no freed frame
/// reports none (every other scenario here).
#[test]
fn a_write_into_a_freed_frame_is_reported_as_use_after_free() {
    use physmem::{Owner, PhysMem};
    let k = kernel(PagingMode::TwoLevel, Scheme::SlabPgdList);
    fill_cache(&k, 4);
    assert_eq!(k.verify().unwrap().count(ViolationKind::UseAfterFree), 0);
    let pm = k.pm();
    let f = pm.alloc_frame(Owner::KernelData).unwrap();
    pm.free_frame(f).unwrap();
    pm.store_u64(f.start(), 0x1234).unwrap(); // the stale store
                                              // Whoever gets the frame next triggers the poison check.
    let mut held = Vec::new();
    while pm.poison_stats().checked == 0 || !held.contains(&f) {
        held.push(pm.alloc_frame(Owner::KernelData).unwrap());
        assert!(held.len() < 100_000, "the freed frame never came back");
    }
    let r = k.verify().unwrap();
    assert_eq!(
        r.count(ViolationKind::UseAfterFree),
        1,
        "{:?}",
        r.violations
    );
    let v = r
        .violations
        .iter()
        .find(|v| v.kind == ViolationKind::UseAfterFree)
        .unwrap();
    assert!(v.detail.contains(&format!("{}", f.start())), "{}", v.detail);
    for h in held {
        pm.free_frame(h).unwrap();
    }
}
