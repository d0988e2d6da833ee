//! The lock-order checker on the pgd system's real paths.
//!
//! Every test of this crate runs with `pgdcache-sync`'s `lockdep` feature
//! (a dev-dependency), so each lock the pgd system takes — `cpa_lock`,
//! `pgd_lock`, `mmlist_lock`, `vmlist_lock`, the object cache's
//! `array_cache` and `list_lock`, the page allocator's `pcp` and `zone` —
//! is recorded, and an acquisition that inverts an order seen before
//! panics. These tests show that the checker sees the orders
//! ARCHITECTURE.md documents, and that it catches an inversion.
//!
//! The checker runs in builds with debug assertions only (release tests
//! and benches pay nothing): `cargo test`, and CI's `test32` profile
//! (scripts/test.sh), which runs every test of this crate under it.
#![cfg(debug_assertions)]

use pgdcache::mm::TaskSize;
use pgdcache::{Kernel, KernelConfig, LockKind, Scheme, StatLock};
use pgdcache_sync::classes::{ARRAY_CACHE, CPA_LOCK, MMLIST_LOCK, PGD_LOCK};
use pgdcache_sync::lockdep::{self, order_seen};
use pgdcache_sync::Mutex;
use physmem::{SimMemory, VirtAddr};
use std::sync::Arc;
use x86paging::{EntryFlags, PagingMode};

/// Forks, exits (so a pgd sits cached) and converts a direct-map page
/// there and back.
fn exercise(scheme: Scheme) -> Kernel {
    let pm = Arc::new(SimMemory::new(64 << 20).unwrap());
    let k: Kernel = Kernel::new(pm, &KernelConfig::new(PagingMode::TwoLevel, scheme)).unwrap();
    let init = k.exec_mm(0, TaskSize::SMALL).unwrap();
    let child = k.fork_mm(1, &init).unwrap();
    k.exit_mm(1, child).unwrap();
    let va = VirtAddr::new(0xc000_0000 + (16 << 20));
    let def = k.page_kernel_at(va).unwrap();
    k.change_page_attr(va, 1, def | EntryFlags::PCD | EntryFlags::PWT)
        .unwrap();
    k.change_page_attr(va, 1, def).unwrap();
    k.global_flush_tlb();
    assert!(k.verify().unwrap().is_clean());
    k.exit_mm(0, init).unwrap();
    k
}

#[test]
fn the_checker_sees_the_documented_orders() {
    const { assert!(lockdep::ENABLED, "the tests must run with lockdep") };
    exercise(Scheme::SlabPgdList);
    // set_pmd_pte rewrites every listed pgd under cpa_lock.
    assert!(order_seen(&CPA_LOCK, &PGD_LOCK));
    // pgd_ctor links the new pgd with the CPU's array_cache lock held.
    assert!(order_seen(&ARRAY_CACHE, &PGD_LOCK));
    exercise(Scheme::SlabTicket);
    // slab-ticket: a conversion rewrites the live pgds under mmlist_lock.
    assert!(order_seen(&CPA_LOCK, &MMLIST_LOCK));
    // ...and nothing the other way round.
    assert!(!order_seen(&PGD_LOCK, &CPA_LOCK));
    assert!(!order_seen(&MMLIST_LOCK, &CPA_LOCK));
}

/// A deliberately inverted order: `pgd_lock` held while taking a lock of
/// `cpa_lock`'s class, after a conversion has taken them the right way
/// round. Two CPUs doing these would deadlock; the checker says so the
/// first time the orders merely occur.
#[test]
#[should_panic(expected = "lock order inversion between `pgd_lock` and `cpa_lock`")]
fn an_inverted_order_is_caught() {
    let _k = exercise(Scheme::SlabPgdList);
    assert!(order_seen(&CPA_LOCK, &PGD_LOCK));
    let pgd_lock = StatLock::new(&PGD_LOCK, LockKind::Tas, (), false);
    let cpa_lock = Mutex::new(&CPA_LOCK, ());
    let _pgd = pgd_lock.lock();
    let _cpa = cpa_lock.lock(); // panics here
}
