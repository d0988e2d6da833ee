//! Two-thread stress test with per-object ownership checks: every object
//! handed out is claimed in a shared atomic bitmap (a second owner would find
//! the bit set) and stamped with its owner's id, checked again on free.
#![cfg(not(loom))]

use std::collections::HashMap;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use objcache::{CacheBuilder, FaultyPageSource, ResizePolicy, SystemPageSource};
use x86paging::gen::Rng;

const OBJ: usize = 256;

/// How a stress thread reaches its CPU slot.
#[derive(Clone, Copy)]
enum Path {
    /// `alloc`/`free` (this thread's slot, its lock per call).
    PerCall,
    /// `lock_cpu(t)` held for bursts of `BURST` operations.
    Pinned,
}

const BURST: usize = 16;

#[test]
fn two_threads_never_share_an_object() {
    stress(Path::PerCall, None);
}

/// Dynamic resizing on every contended `list_lock` trip, from tiny arrays:
/// the arrays grow while both threads refill and flush.
#[test]
fn two_threads_with_dynamic_resizing() {
    stress(
        Path::PerCall,
        Some(ResizePolicy {
            contention: 1,
            window: 4,
            max_factor: 8,
        }),
    );
}

/// The kernel-style path: each thread pins its slot for bursts.
#[test]
fn two_threads_pinned_slots_with_dynamic_resizing() {
    stress(
        Path::Pinned,
        Some(ResizePolicy {
            contention: 2,
            window: 16,
            max_factor: 8,
        }),
    );
}

fn stress(path: Path, policy: Option<ResizePolicy>) {
    let total_ops: usize = if cfg!(debug_assertions) {
        100_000
    } else {
        1_200_000
    };
    let source = FaultyPageSource::new(SystemPageSource);
    let cache = CacheBuilder::new("stress", OBJ)
        .cpus(2)
        .tunables(16, 8)
        .resize(policy)
        .ctor(|p| {
            // SAFETY: the ctor owns OBJ bytes at `p`.
            unsafe { std::ptr::write_bytes(p.as_ptr(), 0, OBJ) }
        })
        .build(&source)
        .unwrap();
    // Object address -> bit number, assigned on first sight.
    let slots: Mutex<HashMap<usize, usize>> = Mutex::new(HashMap::new());
    let bitmap: Vec<AtomicU64> = (0..1024).map(|_| AtomicU64::new(0)).collect();
    let bit_of = |a: usize| {
        let mut m = slots.lock().unwrap();
        let n = m.len();
        *m.entry(a).or_insert(n)
    };
    std::thread::scope(|s| {
        for t in 0..2u8 {
            let (cache, bitmap, bit_of) = (&cache, &bitmap, &bit_of);
            s.spawn(move || {
                let mut held: Vec<(NonNull<u8>, usize)> = Vec::new();
                let mut rng = Rng::stream(0x9E37_79B9_7F4A_7C15, u64::from(t));
                let mut ops = 0;
                let mut pinned = None;
                while ops < total_ops / 2 {
                    if let Path::Pinned = path {
                        if ops % BURST == 0 {
                            drop(pinned.take()); // put_cpu(), then get_cpu() again
                            pinned = Some(cache.lock_cpu(usize::from(t)).unwrap());
                        }
                    }
                    let alloc = held.is_empty() || (held.len() < 200 && rng.chance(1, 2));
                    if alloc {
                        let p = match pinned.as_mut() {
                            Some(c) => c.alloc().unwrap(),
                            None => cache.alloc().unwrap(),
                        };
                        let a = p.as_ptr() as usize;
                        // The cache of bit numbers is only consulted when a
                        // new slab appears; use a per-thread memo for speed.
                        let bit = bit_of(a);
                        let prev = bitmap[bit / 64].fetch_or(1 << (bit % 64), Ordering::AcqRel);
                        assert_eq!(
                            prev & (1 << (bit % 64)),
                            0,
                            "object {a:#x} handed out twice"
                        );
                        // SAFETY: we own the object; its first byte is constructed 0.
                        unsafe {
                            assert_eq!(*p.as_ptr(), 0, "object not in constructed state");
                            *p.as_ptr() = t + 1;
                            *p.as_ptr().add(OBJ - 1) = t + 1;
                        }
                        held.push((p, bit));
                    } else {
                        let i = rng.below(held.len() as u64) as usize;
                        let (p, bit) = held.swap_remove(i);
                        // SAFETY: we still own the object.
                        unsafe {
                            assert_eq!(*p.as_ptr(), t + 1, "someone else wrote our object");
                            assert_eq!(*p.as_ptr().add(OBJ - 1), t + 1);
                            *p.as_ptr() = 0;
                            *p.as_ptr().add(OBJ - 1) = 0;
                        }
                        bitmap[bit / 64].fetch_and(!(1 << (bit % 64)), Ordering::AcqRel);
                        match pinned.as_mut() {
                            Some(c) => c.free(p).unwrap(),
                            None => cache.free(p).unwrap(),
                        }
                    }
                    ops += 1;
                }
                drop(pinned);
                for (p, bit) in held {
                    // SAFETY: we own the object.
                    unsafe {
                        *p.as_ptr() = 0;
                        *p.as_ptr().add(OBJ - 1) = 0;
                    }
                    bitmap[bit / 64].fetch_and(!(1 << (bit % 64)), Ordering::AcqRel);
                    cache.free(p).unwrap();
                }
            });
        }
    });
    let st = cache.stats();
    println!(
        "limit {} batchcount {} after {} resizes; {} refills, {} flushes",
        st.limit, st.batchcount, st.resized, st.alloc_misses, st.free_misses
    );
    if policy.is_none() {
        assert_eq!((st.limit, st.resized), (16, 0));
    }
    assert_eq!(st.live_objs, 0);
    assert_eq!(st.errors, 0);
    assert!(st.alloc_hits > st.alloc_misses);
    let st = cache.destroy().unwrap();
    assert_eq!(st.ctor_calls, st.dtor_calls);
    assert_eq!(source.outstanding_pages(), 0);
}
