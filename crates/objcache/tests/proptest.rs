//! Property tests: random alloc/free/shrink/tune sequences on random
//! geometries keep live objects disjoint and aligned, hand out only
//! constructed objects, and balance ctor/dtor counts.
#![cfg(not(loom))]

use std::collections::BTreeMap;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use objcache::{CacheBuilder, FaultyPageSource, SlabFlags, SystemPageSource};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Alloc(usize),
    Free(usize, usize),
    Shrink,
    Tune(usize, usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0usize..3).prop_map(Op::Alloc),
        5 => (any::<usize>(), 0usize..3).prop_map(|(i, c)| Op::Free(i, c)),
        1 => Just(Op::Shrink),
        1 => (1usize..40, 1usize..40).prop_map(|(l, b)| Op::Tune(l.max(b), b.min(l))),
    ]
}

fn pattern(i: usize) -> u8 {
    (i as u8).wrapping_mul(31) ^ 0x5A
}

fn check_constructed(p: NonNull<u8>, size: usize) -> bool {
    // SAFETY: `p` is an allocated object of `size` bytes owned by the test.
    let b = unsafe { std::slice::from_raw_parts(p.as_ptr(), size) };
    b.iter().enumerate().all(|(i, &x)| x == pattern(i))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: if cfg!(debug_assertions) { 48 } else { 256 }, ..ProptestConfig::default() })]

    #[test]
    fn random_sequences(
        size in prop_oneof![1usize..300, 300usize..5000, Just(4096usize), Just(32usize)],
        align_log in 0u32..=12,
        hw in any::<bool>(),
        no_reap in any::<bool>(),
        ops in proptest::collection::vec(op(), 1..400),
    ) {
        let align = 1usize << align_log;
        let ctors = Arc::new(AtomicUsize::new(0));
        let dtors = Arc::new(AtomicUsize::new(0));
        let (c, d) = (ctors.clone(), dtors.clone());
        let mut flags = if hw { SlabFlags::HWCACHE_ALIGN } else { SlabFlags::NONE };
        if no_reap {
            flags |= SlabFlags::NO_REAP;
        }
        let cache = CacheBuilder::new("prop", size)
            .align(align)
            .flags(flags)
            .cpus(3)
            .tunables(8, 3)
            .ctor(move |p| {
                c.fetch_add(1, Ordering::Relaxed);
                for i in 0..size {
                    // SAFETY: the ctor owns `size` bytes at `p`.
                    unsafe { p.as_ptr().add(i).write(pattern(i)) };
                }
            })
            .dtor(move |p| {
                d.fetch_add(1, Ordering::Relaxed);
                assert!(check_constructed(p, size), "dtor saw unconstructed object");
            })
            .build(FaultyPageSource::new(SystemPageSource))
            .unwrap();
        let eff_align = cache.align();
        prop_assert!(eff_align >= align);
        let mut live: BTreeMap<usize, usize> = BTreeMap::new();
        let mut order: Vec<usize> = Vec::new();
        for op in ops {
            match op {
                Op::Alloc(cpu) => {
                    let p = cache.alloc_on(cpu).unwrap();
                    let a = p.as_ptr() as usize;
                    prop_assert_eq!(a % eff_align, 0);
                    prop_assert!(check_constructed(p, size), "not constructed on alloc");
                    // No overlap with the neighbours.
                    if let Some((&s, &e)) = live.range(..=a).next_back() {
                        prop_assert!(e <= a, "overlaps {s:#x}..{e:#x}");
                    }
                    if let Some((&s, _)) = live.range(a..).next() {
                        prop_assert!(a + size <= s);
                    }
                    prop_assert_eq!(cache.page_of(p).unwrap().as_ptr() as usize, a & !4095);
                    // Dirty it as a user would...
                    // SAFETY: we own the object.
                    unsafe { std::ptr::write_bytes(p.as_ptr(), 0xEE, size) };
                    live.insert(a, a + size);
                    order.push(a);
                }
                Op::Free(i, cpu) => {
                    if order.is_empty() {
                        continue;
                    }
                    let a = order.swap_remove(i % order.len());
                    live.remove(&a);
                    let p = NonNull::new(a as *mut u8).unwrap();
                    // ...and restore constructed state before freeing.
                    for k in 0..size {
                        // SAFETY: we own the object.
                        unsafe { p.as_ptr().add(k).write(pattern(k)) };
                    }
                    prop_assert!(cache.free_on(cpu, p).is_ok());
                    prop_assert!(cache.free_on(cpu, p).is_err());
                }
                Op::Shrink => {
                    cache.shrink();
                }
                Op::Tune(l, b) => {
                    cache.tune(l, b).unwrap();
                }
            }
            let st = cache.stats();
            prop_assert_eq!(st.live_objs, live.len());
            prop_assert_eq!(st.ctor_calls, ctors.load(Ordering::Relaxed));
            prop_assert_eq!(st.ctor_calls - st.dtor_calls, st.num_objs);
            prop_assert_eq!(
                cache.page_source().outstanding_pages(),
                st.num_slabs * st.pages_per_slab
            );
        }
        for a in order {
            let p = NonNull::new(a as *mut u8).unwrap();
            for k in 0..size {
                // SAFETY: we own the object.
                unsafe { p.as_ptr().add(k).write(pattern(k)) };
            }
            cache.free(p).unwrap();
        }
        let st = cache.destroy().unwrap();
        prop_assert_eq!(st.ctor_calls, st.dtor_calls);
        prop_assert_eq!(ctors.load(Ordering::Relaxed), dtors.load(Ordering::Relaxed));
        prop_assert_eq!(st.num_slabs, 0);
    }
}
