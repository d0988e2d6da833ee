//! Allocation failure at every allocation point of `pgd_alloc`,
//! `change_page_attr` (split_large_page) and `vmalloc`, for every scheme
//! and mode: the operation returns an error, nothing changes, and the
//! checker finds no violation and no leak. Each sweep runs twice: from a
//! thread that is no CPU (frames from the zone) and as CPU 0 (single frames
//! through CPU 0's page list).

use pgdcache::mm::TaskSize;
use pgdcache::{Kernel, KernelConfig, Scheme};
use physmem::{FrameStats, Owner, SimMemory, VirtAddr};
use std::sync::Arc;
use x86paging::{EntryFlags, PagingMode};

/// Every mode × scheme, twice: `false` runs its sweep from a thread that
/// is no CPU, `true` as CPU 0.
fn kernels() -> Vec<(Arc<SimMemory>, Kernel, bool)> {
    let mut v = Vec::new();
    for on_cpu in [false, true] {
        for mode in PagingMode::ALL {
            for scheme in Scheme::ALL {
                let pm = Arc::new(SimMemory::new(32 << 20).unwrap());
                if let Ok(k) = Kernel::new(pm.clone(), &KernelConfig::new(mode, scheme)) {
                    v.push((pm, k, on_cpu));
                }
            }
        }
    }
    v
}

/// What must not change: frame accounting (after shrinking the caches),
/// the kernel page table, and the live address spaces.
///
/// `slab-prepopulated` is the one exception, and a deliberate one: a pgd
/// that a failed fork or exec had already allocated goes back to the cache
/// *with* the pmds it attached (that is the scheme's constructed state), and
/// `shrink` gives them back only with an empty slab. Those frames move
/// between free and slab, so the two counts are folded together there, and
/// `verify` (run after every failure) accounts for each pmd: held by exactly
/// one pgd, none orphaned.
fn snapshot(pm: &SimMemory, k: &Kernel) -> (FrameStats, String, usize) {
    k.shrink();
    let dump = format!("{:?}", k.kernel_space().ptdump(&**k.pm(), k.swapper().0));
    let mut stats = pm.stats();
    if k.scheme().keeps_pmds() {
        stats.by_owner[Owner::Free as usize] += stats.by_owner[Owner::Slab as usize];
        stats.by_owner[Owner::Slab as usize] = 0;
    }
    (stats, dump, k.live_pgds().len())
}

fn assert_clean(k: &Kernel, what: &str) {
    let r = k.verify().unwrap();
    assert!(r.is_clean(), "{what}: {:?}", r.violations);
    assert_eq!(r.leaked_frames, 0, "{what}");
}

/// Sweeps "fail the Nth allocation" over every N until `op` succeeds.
fn sweep<T>(
    pm: &SimMemory,
    k: &Kernel,
    what: &str,
    mut op: impl FnMut() -> Result<T, String>,
    undo: impl Fn(T),
) {
    for n in 1.. {
        let before = snapshot(pm, k);
        pm.faults().fail_nth(n);
        let r = op();
        pm.faults().clear();
        match r {
            Err(e) => {
                let after = snapshot(pm, k);
                assert_eq!(
                    before, after,
                    "{what}: state changed after failure #{n}: {e}"
                );
                assert_clean(k, what);
            }
            Ok(t) => {
                undo(t);
                assert_clean(k, what);
                return;
            }
        }
        assert!(n < 10_000, "{what}: never succeeded");
    }
}

#[test]
fn pgd_alloc_fails_cleanly_at_every_point() {
    for (pm, k, on_cpu) in kernels() {
        let _cpu = on_cpu.then(|| physmem::enter_cpu(0));
        let what = format!("pgd_alloc {} {} cpu {on_cpu}", k.mode(), k.scheme());
        sweep(
            &pm,
            &k,
            &what,
            || k.pgd_alloc(0).map_err(|e| e.to_string()),
            |pgd| k.pgd_free(0, pgd).unwrap(),
        );
        let what = format!("exec {} {}", k.mode(), k.scheme());
        sweep(
            &pm,
            &k,
            &what,
            || k.exec_mm(0, TaskSize::SMALL).map_err(|e| e.to_string()),
            |mm| k.exit_mm(0, mm).unwrap(),
        );
        let parent = k.exec_mm(0, TaskSize::SMALL).unwrap();
        let what = format!("fork {} {}", k.mode(), k.scheme());
        sweep(
            &pm,
            &k,
            &what,
            || k.fork_mm(1, &parent).map_err(|e| e.to_string()),
            |mm| k.exit_mm(1, mm).unwrap(),
        );
        // fork onto a pgd the caller holds (the benchmark's free-pgd
        // limit): a failure leaves that pgd constructed and the caller's.
        // Only where a held pgd outside `mmlist` is a cached one: the
        // checker counts an unjoined pgd page of `uncached` as a leak.
        if k.scheme().preconstructed() {
            fork_onto_held_pgd(&pm, &k, &parent);
        }
        k.exit_mm(0, parent).unwrap();
        assert_eq!(
            pm.pcp_stats().refills > 0,
            on_cpu,
            "{what}: list path taken"
        );
    }
}

/// [`Kernel::fork_mm_onto`] fails cleanly at every point, and
/// [`Kernel::exit_mm_keep_pgd`] hands the held pgd back.
fn fork_onto_held_pgd(pm: &SimMemory, k: &Kernel, parent: &pgdcache::mm::Mm) {
    let held = k.pgd_alloc(0).unwrap();
    let what = format!("fork onto a held pgd {} {}", k.mode(), k.scheme());
    sweep(
        pm,
        k,
        &what,
        || k.fork_mm_onto(held, parent).map_err(|e| e.to_string()),
        |mm| assert_eq!(k.exit_mm_keep_pgd(mm).unwrap(), held),
    );
    k.pgd_free(0, held).unwrap();
}

#[test]
fn change_page_attr_fails_cleanly_at_every_point() {
    for (pm, k, on_cpu) in kernels() {
        let _cpu = on_cpu.then(|| physmem::enter_cpu(0));
        let what = format!("cpa {} {} cpu {on_cpu}", k.mode(), k.scheme());
        let mm = k.exec_mm(0, TaskSize::SMALL).unwrap();
        // Three pages in two different large pages: two splits.
        let large = if k.mode() == PagingMode::TwoLevel {
            4 << 20
        } else {
            2 << 20
        };
        let t = VirtAddr::new(k.mode().page_offset() + (16 << 20) + large - 4096);
        let prot = k.page_kernel_at(t).unwrap() | EntryFlags::PCD;
        sweep(
            &pm,
            &k,
            &what,
            || k.change_page_attr(t, 3, prot).map_err(|e| e.to_string()),
            |()| {
                let def = k.page_kernel_at(t).unwrap();
                k.change_page_attr(t, 3, def).unwrap();
                assert_eq!(k.global_flush_tlb(), 2);
            },
        );
        k.exit_mm(0, mm).unwrap();
    }
}

#[test]
fn vmalloc_fails_cleanly_at_every_point() {
    for (pm, k, on_cpu) in kernels() {
        let _cpu = on_cpu.then(|| physmem::enter_cpu(0));
        let what = format!("vmalloc {} {} cpu {on_cpu}", k.mode(), k.scheme());
        // The first area fills most of a pte table; the swept one crosses
        // into the next, so its allocation points include a new table.
        let filler = k.vmalloc(1020).unwrap();
        sweep(
            &pm,
            &k,
            &what,
            || k.vmalloc(8).map_err(|e| e.to_string()),
            |va| k.vfree(va).unwrap(),
        );
        k.vfree(filler).unwrap();
    }
}

/// With poisoning off (the bench's setting), exit gives its pte tables back
/// cleared (`free_zeroed_frame`) and fork takes them again without clearing
/// them: forks still fail cleanly at every point, every child maps exactly
/// its parent's pages, and the checker finds nothing.
#[test]
fn fork_without_poisoning_reuses_cleared_tables() {
    for on_cpu in [false, true] {
        let _cpu = on_cpu.then(|| physmem::enter_cpu(0));
        for mode in PagingMode::ALL {
            for scheme in Scheme::ALL {
                let pm = Arc::new(SimMemory::new(32 << 20).unwrap().with_poisoning(false));
                let Ok(k) = Kernel::new(pm.clone(), &KernelConfig::new(mode, scheme)) else {
                    continue;
                };
                let parent = k.exec_mm(0, TaskSize::SMALL).unwrap();
                let what = format!("fork (no poison) {mode} {scheme} cpu {on_cpu}");
                for _ in 0..3 {
                    let child = k.fork_mm(0, &parent).unwrap();
                    for (va, f) in parent.pages() {
                        let slot = x86paging::Cursor::new(&*pm, mode, child.pgd().0)
                            .leaf_of(va)
                            .unwrap();
                        assert_eq!(slot.page(), Some(f.start()), "{what}");
                        assert!(!slot.entry.flags(slot.leaf()).contains(EntryFlags::RW));
                    }
                    k.exit_mm(0, child).unwrap();
                }
                sweep(
                    &pm,
                    &k,
                    &what,
                    || k.fork_mm(0, &parent).map_err(|e| e.to_string()),
                    |mm| k.exit_mm(0, mm).unwrap(),
                );
                k.exit_mm(0, parent).unwrap();
                assert_clean(&k, &what);
            }
        }
    }
}
