//! Golden files: `/proc/slabinfo` of the pgd system's caches after a fixed,
//! single-threaded history of forks and exits (so every counter is
//! deterministic), in Linux's 2.1 format, with Linux's `CONFIG_DEBUG_SLAB`
//! statistics, and with our extra groups (`tests/snapshots/*.snap`).
#![cfg(not(loom))]

use pgdcache::mm::TaskSize;
use pgdcache::{Kernel, KernelConfig, Scheme};
use physmem::SimMemory;
use std::sync::Arc;
use x86paging::PagingMode;

fn caches(mode: PagingMode, scheme: Scheme) -> Vec<objcache::CacheStats> {
    let pm = Arc::new(SimMemory::new(64 << 20).unwrap());
    let mut cfg = KernelConfig::new(mode, scheme);
    cfg.cpus = 2;
    let k: Kernel = Kernel::new(pm, &cfg).unwrap();
    let init = k.exec_mm(0, TaskSize::SMALL).unwrap();
    // Ten children on two CPUs; six exit, four stay.
    let mut kids: Vec<_> = (0..10).map(|i| k.fork_mm(i % 2, &init).unwrap()).collect();
    for i in 0..6 {
        k.exit_mm(i % 2, kids.remove(0)).unwrap();
    }
    let stats = k.slab_stats();
    for (i, kid) in kids.into_iter().enumerate() {
        k.exit_mm(i % 2, kid).unwrap();
    }
    k.exit_mm(0, init).unwrap();
    stats
}

#[test]
fn slabinfo_2level_pgd_list() {
    let s = caches(PagingMode::TwoLevel, Scheme::SlabPgdList);
    insta::assert_snapshot!(objcache::slabinfo(&s));
}

#[test]
fn slabinfo_pae_pgd_list() {
    let s = caches(PagingMode::Pae, Scheme::SlabPgdList);
    insta::assert_snapshot!(objcache::slabinfo(&s));
}

#[test]
fn slabinfo_pae_prepopulated_with_stats() {
    let s = caches(PagingMode::Pae, Scheme::SlabPrepopulated);
    insta::assert_snapshot!(objcache::slabinfo_with_stats(&s));
}

#[test]
fn slabinfo_pae_pgd_list_with_extra_groups() {
    let s = caches(PagingMode::Pae, Scheme::SlabPgdList);
    insta::assert_snapshot!(objcache::slabinfo_format(
        &s,
        objcache::SlabinfoColumns {
            stats: true,
            extra: true
        }
    ));
}
