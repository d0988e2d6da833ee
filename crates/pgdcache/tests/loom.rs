//! `loom` models of the pgd system's lock protocols, on the real code paths
//! (`--cfg loom`: locks, the ticket generation and the watched page-table
//! entries become loom's instrumented types; see `src/sync.rs` and
//! `physmem`'s loom RAM). Run with
//! `RUSTFLAGS="--cfg loom" cargo test -p pgdcache --release --test loom`.
//!
//! Each model boots a 2-level kernel, races two threads through real
//! `pgd_alloc`/`pgd_ctor`, `kmem_cache_shrink`/`pgd_dtor`, `mm_join` and
//! `change_page_attr`/`set_pmd_pte`, and then asserts the invariant with the
//! real checker: every pgd's kernel entry equals swapper's once both sides
//! finish. The negative models run deliberately broken variants and assert
//! that loom finds an interleaving that breaks the invariant.
#![cfg(loom)]

use loom::thread;
use pgdcache::{Bug, Kernel, KernelConfig, Scheme};
use physmem::{SimMemory, VirtAddr, POISON_FREE};
use std::sync::Arc;
use x86paging::{EntryFlags, PagingMode};

/// The direct-map page the models convert (16 MiB into lowmem).
const TARGET_OFF: u64 = 16 << 20;

fn boot(scheme: Scheme, bug: Bug) -> Arc<Kernel> {
    let pm = Arc::new(SimMemory::new(32 << 20).expect("RAM"));
    let k =
        Kernel::new(pm.clone(), &KernelConfig::new(PagingMode::TwoLevel, scheme)).expect("boot");
    k.inject_bug(bug);
    // The pgd entries of the two large pages the models convert are the
    // loom scheduling points (plus every lock).
    for off in [TARGET_OFF, TARGET_OFF - (4 << 20)] {
        let index =
            PagingMode::TwoLevel.index(VirtAddr::new(0xc000_0000 + off), x86paging::Level::Pgd);
        pm.mem().watch(index as u64 * 4);
    }
    Arc::new(k)
}

fn target(k: &Kernel, off: u64) -> (VirtAddr, EntryFlags) {
    let va = VirtAddr::new(k.mode().page_offset() + off);
    let prot = k.page_kernel_at(va).expect("direct map") | EntryFlags::PCD | EntryFlags::PWT;
    (va, prot)
}

fn assert_consistent(k: &Kernel) {
    let r = k.verify().expect("verify");
    assert!(r.is_clean(), "{:?}", r.violations);
}

fn builder() -> loom::model::Builder {
    let mut b = loom::model::Builder::new();
    b.preemption_bound = Some(3);
    b
}

/// `pgd_ctor` (via `pgd_alloc` growing the cache) against a split.
fn ctor_vs_conversion(bug: Bug) {
    builder().check(move || {
        let k = boot(Scheme::SlabPgdList, bug);
        let k2 = k.clone();
        let t = thread::spawn(move || {
            let (va, prot) = target(&k2, TARGET_OFF);
            k2.change_page_attr(va, 1, prot).expect("cpa");
        });
        let pgd = k.pgd_alloc(0).expect("pgd_alloc");
        t.join().expect("join");
        assert_consistent(&k);
        k.pgd_free(0, pgd).expect("free");
    });
}

#[test]
fn ctor_vs_conversion_holds() {
    ctor_vs_conversion(Bug::None);
}

/// Runs a model that must fail, and checks it failed on the invariant (a
/// stale pgd), not on anything else.
fn must_find_stale(model: impl FnOnce() + std::panic::UnwindSafe) {
    let err = std::panic::catch_unwind(model).expect_err("loom must find the race");
    let msg = err
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| err.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default();
    assert!(
        msg.contains("Stale"),
        "the model failed, but not on a stale pgd: {msg}"
    );
}

#[test]
fn negative_ctor_copies_outside_the_lock_is_found() {
    must_find_stale(|| ctor_vs_conversion(Bug::CtorCopiesOutsideLock));
}

#[test]
fn negative_list_add_after_unlock_is_found() {
    must_find_stale(|| ctor_vs_conversion(Bug::ListAddAfterUnlock));
}

/// `pgd_dtor` (cache shrink frees a cached pgd) against the conversion walk.
#[test]
fn dtor_vs_conversion_walk() {
    builder().check(|| {
        let k = boot(Scheme::SlabPgdList, Bug::None);
        let pgd = k.pgd_alloc(0).expect("pgd_alloc");
        k.pgd_free(0, pgd).expect("free");
        let k2 = k.clone();
        let t = thread::spawn(move || {
            let (va, prot) = target(&k2, TARGET_OFF);
            k2.change_page_attr(va, 1, prot).expect("cpa");
        });
        k.shrink();
        t.join().expect("join");
        assert_consistent(&k);
        // The shrink ran the dtor and gave the pgd's page back (the split
        // may have been handed the same frame since). If it is still free,
        // the walk never wrote into it after the dtor: the poison is intact.
        assert_eq!(k.stats().pgd_dtors, 1);
        assert_eq!(k.slab_frames(), 0);
        let pm = k.pm();
        if pm.page(pgd.0.frame()).is_some_and(|p| p.is_free()) {
            let (va, _) = target(&k, TARGET_OFF);
            let index = k.mode().index(va, x86paging::Level::Pgd);
            let v = physmem::PhysMem::load_u32(
                &**pm,
                physmem::PhysAddr::new(pgd.0.as_u64() + 4 * index as u64),
            )
            .expect("load");
            assert_eq!(
                v,
                u32::from_ne_bytes([POISON_FREE; 4]),
                "set_pmd_pte wrote a freed pgd"
            );
        }
    });
}

/// Two conversions at once (different large pages), with a cached pgd.
#[test]
fn two_conversions_at_once() {
    builder().check(|| {
        let k = boot(Scheme::SlabPgdList, Bug::None);
        let pgd = k.pgd_alloc(0).expect("pgd_alloc");
        k.pgd_free(0, pgd).expect("free");
        let k2 = k.clone();
        let t = thread::spawn(move || {
            let (va, prot) = target(&k2, TARGET_OFF);
            k2.change_page_attr(va, 1, prot).expect("cpa");
        });
        let (va, prot) = target(&k, TARGET_OFF - (4 << 20));
        k.change_page_attr(va, 1, prot).expect("cpa");
        t.join().expect("join");
        assert_consistent(&k);
    });
}

/// The ticket scheme: a cached pgd joins `mmlist` (fork/exec) while a
/// conversion runs; the join's refresh and the conversion's walk must not
/// both miss it.
fn ticket_join_vs_conversion(bug: Bug) {
    builder().check(move || {
        let k = boot(Scheme::SlabTicket, bug);
        let pgd = k.pgd_alloc(0).expect("pgd_alloc");
        k.pgd_free(0, pgd).expect("free");
        let k2 = k.clone();
        let t = thread::spawn(move || {
            let (va, prot) = target(&k2, TARGET_OFF);
            k2.change_page_attr(va, 1, prot).expect("cpa");
        });
        let pgd = k.pgd_alloc(0).expect("pgd_alloc");
        k.mm_join(pgd).expect("join");
        t.join().expect("join");
        assert_consistent(&k);
        k.mm_leave(pgd);
        k.pgd_free(0, pgd).expect("free");
    });
}

#[test]
fn ticket_refresh_at_join_vs_conversion() {
    ticket_join_vs_conversion(Bug::None);
}

#[test]
fn negative_ticket_read_before_joining_is_found() {
    must_find_stale(|| ticket_join_vs_conversion(Bug::TicketReadBeforeJoin));
}

/// The unpatched 2.5.69 code (`uncached`): `pgd_alloc` copies swapper
/// before `dup_mmap` joins the mm to `mmlist`. loom finds the conversion
/// that falls in between and is lost — a race the ticket scheme's check at
/// join closes.
#[test]
fn uncached_alloc_then_join_race_is_found() {
    must_find_stale(|| {
        builder().check(|| {
            let k = boot(Scheme::Uncached, Bug::None);
            let k2 = k.clone();
            let t = thread::spawn(move || {
                let (va, prot) = target(&k2, TARGET_OFF);
                k2.change_page_attr(va, 1, prot).expect("cpa");
            });
            let pgd = k.pgd_alloc(0).expect("pgd_alloc");
            k.mm_join(pgd).expect("join");
            t.join().expect("join");
            assert_consistent(&k);
            k.mm_leave(pgd);
            k.pgd_free(0, pgd).expect("free");
        })
    });
}
