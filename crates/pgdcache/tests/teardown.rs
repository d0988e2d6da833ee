//! A kernel's teardown: a `Kernel` dropped in RAM it shares gives back
//! every frame it took — `swapper_pg_dir` and its tables (split pte pages
//! and vmalloc tables included), PAE's pmds, the fixmap page, the deferred
//! pte pages, the caches' slabs — and so does a `Kernel::new` that fails
//! half way. The bare-metal kernel boots pgd systems beside its own in the
//! same RAM for its benchmarks; its checker found their boot frames as
//! leaks before this.
#![cfg(not(loom))]

use pgdcache::mm::TaskSize;
use pgdcache::{Kernel, KernelConfig, Scheme};
use physmem::{FrameStats, SimMemory, VirtAddr};
use std::sync::Arc;
use x86paging::{EntryFlags, PagingMode};

fn used(pm: &SimMemory) -> FrameStats {
    pm.stats()
}

/// Work that leaves every kind of kernel-owned frame behind: cached pgds
/// (and PAE pmds), a split direct-map page left split, one reverted but
/// not yet flushed (on the deferred list), a live vmalloc area.
fn work(k: &Kernel) {
    let mms: Vec<_> = (0..4)
        .map(|_| k.exec_mm(0, TaskSize::SMALL).unwrap())
        .collect();
    let child = k.fork_mm(0, &mms[0]).unwrap();
    k.exit_mm(0, child).unwrap();
    for mm in mms {
        k.exit_mm(0, mm).unwrap();
    }
    let at = |mib: u64| VirtAddr::new(k.mode().page_offset() + (mib << 20));
    for (mib, revert) in [(16, false), (24, true)] {
        let def = k.page_kernel_at(at(mib)).unwrap();
        k.change_page_attr(at(mib), 1, def | EntryFlags::PCD | EntryFlags::PWT)
            .unwrap();
        k.global_flush_tlb();
        if revert {
            k.change_page_attr(at(mib), 1, def).unwrap();
        }
    }
    assert!(!k.split_frames().is_empty(), "a split is left in place");
    k.vmalloc(3).unwrap();
}

#[test]
fn a_dropped_kernel_gives_back_every_frame_it_took() {
    for mode in PagingMode::ALL {
        for scheme in Scheme::ALL {
            if scheme.supports(mode).is_err() {
                continue;
            }
            let pm = Arc::new(SimMemory::new(64 << 20).unwrap());
            let before = used(&pm);
            let k = Kernel::new(pm.clone(), &KernelConfig::new(mode, scheme)).unwrap();
            work(&k);
            // Something was taken: the comparison below is not vacuous.
            assert!(used(&pm).used() > before.used() + 4, "{mode} {scheme}");
            drop(k);
            assert_eq!(used(&pm), before, "{mode} {scheme}");
        }
    }
}

#[test]
fn a_kernel_whose_boot_fails_half_way_leaks_nothing() {
    for mode in PagingMode::ALL {
        let pm = Arc::new(SimMemory::new(64 << 20).unwrap());
        let before = used(&pm);
        for n in 1.. {
            pm.faults().fail_nth(n);
            let r = Kernel::new(pm.clone(), &KernelConfig::new(mode, Scheme::SlabPgdList));
            pm.faults().clear();
            let done = r.is_ok();
            drop(r);
            assert_eq!(used(&pm), before, "{mode}: boot failed at allocation #{n}");
            if done {
                break;
            }
            assert!(n < 10_000, "{mode}: never booted");
        }
    }
}
