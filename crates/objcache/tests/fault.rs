//! Fault injection: fail the N-th page allocation for every N in a range
//! during a workload; the failing `alloc` gets a typed error, the cache stays
//! usable, and no page is leaked.
#![cfg(not(loom))]

use std::ptr::NonNull;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use objcache::{AllocError, CacheBuilder, FaultyPageSource, PageAllocError, SystemPageSource};

fn workload(size: usize, n: usize) {
    let source = FaultyPageSource::new(SystemPageSource);
    let ctors = Arc::new(AtomicUsize::new(0));
    let dtors = Arc::new(AtomicUsize::new(0));
    let (c, d) = (ctors.clone(), dtors.clone());
    let cache = CacheBuilder::new("fault", size)
        .cpus(2)
        .tunables(6, 3)
        .ctor(move |_| {
            c.fetch_add(1, Ordering::Relaxed);
        })
        .dtor(move |_| {
            d.fetch_add(1, Ordering::Relaxed);
        })
        .build(&source)
        .unwrap();
    source.fail_nth(n);
    let mut held: Vec<NonNull<u8>> = Vec::new();
    let mut failures = 0;
    for round in 0..60 {
        match cache.alloc_on(round % 2) {
            Ok(p) => held.push(p),
            Err(e) => {
                assert_eq!(e, AllocError::OutOfMemory(PageAllocError::Injected));
                failures += 1;
            }
        }
        if round % 7 == 6 {
            for p in held.drain(..held.len() / 2) {
                cache.free_on(round % 2, p).unwrap();
            }
        }
        if round == 40 {
            cache.shrink();
        }
    }
    assert!(
        failures <= 1,
        "one injected fault must fail at most one alloc"
    );
    if source.injected() == 1 {
        assert_eq!(failures, 1);
    }
    // Still usable.
    let p = cache.alloc().unwrap();
    cache.free(p).unwrap();
    let st = cache.stats();
    assert_eq!(source.outstanding_pages(), st.num_slabs * st.pages_per_slab);
    for p in held {
        cache.free(p).unwrap();
    }
    let st = cache.destroy().unwrap();
    assert_eq!(st.ctor_calls, st.dtor_calls);
    assert_eq!(ctors.load(Ordering::Relaxed), dtors.load(Ordering::Relaxed));
    assert_eq!(source.outstanding_pages(), 0, "pages leaked");
}

#[test]
fn fail_nth_page_alloc_small_objects() {
    for n in 1..=12 {
        workload(64, n);
    }
}

#[test]
fn fail_nth_page_alloc_page_sized_objects() {
    for n in 1..=40 {
        workload(4096, n);
    }
}

#[test]
fn fail_nth_page_alloc_multi_page_slabs() {
    for n in 1..=20 {
        workload(3000, n);
    }
}

#[test]
fn fail_all_then_recover() {
    let source = FaultyPageSource::new(SystemPageSource);
    let cache = CacheBuilder::new("oom", 4096).build(&source).unwrap();
    source.set_fail_all(true);
    for _ in 0..5 {
        assert!(matches!(cache.alloc(), Err(AllocError::OutOfMemory(_))));
    }
    source.set_fail_all(false);
    let p = cache.alloc().unwrap();
    cache.free(p).unwrap();
    drop(cache);
    assert_eq!(source.outstanding_pages(), 0);
}
