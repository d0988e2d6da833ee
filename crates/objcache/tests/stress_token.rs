//! Stress test of the token path: each CPU is a thread holding its
//! `CpuToken` for the whole run (allocating and freeing with no lock), while
//! a remote thread keeps shrinking, reading statistics, walking the objects,
//! tuning and using the CPUs' slots per call — all by hand-off.  Every
//! object handed out is claimed in a shared atomic bitmap (a second owner
//! would find the bit set) and stamped with its owner's id; at the end the
//! cache's own walk must account for every object and the per-CPU counters
//! for every operation.
#![cfg(not(loom))]

use std::collections::HashMap;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

use objcache::{CacheBuilder, FaultyPageSource, KmemCache, SystemPageSource};
use x86paging::gen::Rng;

const OBJ: usize = 256;
const CPUS: usize = 2;
const REMOTE: u8 = 0xEE;

/// Object address -> bit in the ownership bitmap.
struct Owners {
    bits: Mutex<HashMap<usize, usize>>,
    map: Vec<AtomicU64>,
}

impl Owners {
    fn new() -> Self {
        Self {
            bits: Mutex::new(HashMap::new()),
            map: (0..1024).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// Claims `p` for `id` (it must be constructed and unowned).
    fn take(&self, p: NonNull<u8>, id: u8) -> usize {
        let bit = {
            let mut m = self.bits.lock().unwrap();
            let n = m.len();
            *m.entry(p.as_ptr() as usize).or_insert(n)
        };
        let prev = self.map[bit / 64].fetch_or(1 << (bit % 64), Ordering::AcqRel);
        assert_eq!(prev & (1 << (bit % 64)), 0, "object {p:?} handed out twice");
        // SAFETY: we own the object; its first byte is constructed 0.
        unsafe {
            assert_eq!(*p.as_ptr(), 0, "object not in constructed state");
            *p.as_ptr() = id;
            *p.as_ptr().add(OBJ - 1) = id;
        }
        bit
    }

    /// Gives `p` up (restoring constructed state) before it is freed.
    fn give(&self, p: NonNull<u8>, bit: usize, id: u8) {
        // SAFETY: we still own the object.
        unsafe {
            assert_eq!(*p.as_ptr(), id, "someone else wrote our object");
            assert_eq!(*p.as_ptr().add(OBJ - 1), id);
            *p.as_ptr() = 0;
            *p.as_ptr().add(OBJ - 1) = 0;
        }
        self.map[bit / 64].fetch_and(!(1 << (bit % 64)), Ordering::AcqRel);
    }
}

/// One CPU: random allocations and frees through its token, now and then
/// the token's own `stats`/`shrink`, a quiescent point at the end.
fn cpu(
    cache: &KmemCache<&FaultyPageSource<SystemPageSource>>,
    owners: &Owners,
    n: usize,
    ops: usize,
) -> usize {
    let id = n as u8 + 1;
    let mut token = cache.claim_cpu(n).unwrap();
    let mut rng = Rng::stream(0x9E37_79B9_7F4A_7C15, n as u64);
    let mut held: Vec<(NonNull<u8>, usize)> = Vec::new();
    let mut allocs = 0;
    for i in 0..ops {
        if held.is_empty() || (held.len() < 200 && rng.chance(1, 2)) {
            let p = token.alloc().unwrap();
            held.push((p, owners.take(p, id)));
            allocs += 1;
        } else {
            let (p, bit) = held.swap_remove(rng.below(held.len() as u64) as usize);
            owners.give(p, bit, id);
            token.free(p).unwrap();
        }
        if i % 4096 == 0 {
            let st = token.stats();
            assert!(st.live_objs <= CPUS * 200 + 1, "{st:?}");
        }
        if i % 20_000 == 0 {
            token.shrink();
        }
    }
    for (p, bit) in held {
        owners.give(p, bit, id);
        token.free(p).unwrap();
    }
    token.serve();
    allocs
}

#[test]
fn token_cpus_with_remote_shrink_stats_and_walk() {
    let ops: usize = if cfg!(debug_assertions) {
        60_000
    } else {
        600_000
    };
    let source = FaultyPageSource::new(SystemPageSource);
    let cache = CacheBuilder::new("stress-token", OBJ)
        .cpus(CPUS)
        .tunables(16, 8)
        .ctor(|p| {
            // SAFETY: the ctor owns OBJ bytes at `p`.
            unsafe { std::ptr::write_bytes(p.as_ptr(), 0, OBJ) }
        })
        .build(&source)
        .unwrap();
    let owners = Owners::new();
    let done = AtomicUsize::new(0);
    let remote_pairs = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let allocs: usize = std::thread::scope(|s| {
        let (cache, owners, done, remote_pairs, stop) =
            (&cache, &owners, &done, &remote_pairs, &stop);
        let cpus: Vec<_> = (0..CPUS)
            .map(|n| {
                s.spawn(move || {
                    let a = cpu(cache, owners, n, ops);
                    done.fetch_add(1, Ordering::Release);
                    // Keep serving until the remote side is finished: a
                    // token holder's quiescent loop.
                    let mut t = cache.claim_cpu(n).unwrap();
                    while !stop.load(Ordering::Acquire) {
                        t.serve();
                        std::hint::spin_loop();
                    }
                    a
                })
            })
            .collect();
        s.spawn(move || {
            let mut round = 0usize;
            while done.load(Ordering::Acquire) < CPUS {
                match round % 5 {
                    0 => {
                        cache.shrink();
                    }
                    1 => {
                        let st = cache.stats();
                        assert!(st.live_objs <= CPUS * 200 + 1, "{st:?}");
                        assert_eq!(st.errors, 0);
                    }
                    2 => {
                        let (mut total, mut allocated) = (0, 0);
                        cache.for_each_object(|_, a| {
                            total += 1;
                            allocated += usize::from(a);
                        });
                        assert!(allocated <= CPUS * 200 + 1, "{allocated} of {total}");
                    }
                    3 => {
                        // A per-call user of a claimed CPU's slot.
                        let n = (round / 5) % CPUS;
                        let p = cache.alloc_on(n).unwrap();
                        let bit = owners.take(p, REMOTE);
                        owners.give(p, bit, REMOTE);
                        cache.free_on(n, p).unwrap();
                        remote_pairs.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {
                        // Alternate the tunables (a /proc/slabinfo write).
                        let limit = if round % 10 == 4 { 8 } else { 16 };
                        cache.tune(limit, limit / 2).unwrap();
                    }
                }
                round += 1;
            }
            stop.store(true, Ordering::Release);
            println!("remote: {round} operations");
        });
        cpus.into_iter().map(|h| h.join().unwrap()).sum()
    });
    let pairs = allocs + remote_pairs.load(Ordering::Relaxed);
    let st = cache.stats();
    println!(
        "{pairs} pairs; {} refills, {} flushes, {} slabs grown, {} reaped",
        st.alloc_misses, st.free_misses, st.grown, st.reaped
    );
    assert_eq!(st.live_objs, 0, "{st:?}");
    assert_eq!(st.errors, 0, "{st:?}");
    assert_eq!(st.alloc_hits + st.alloc_misses, pairs, "{st:?}");
    assert_eq!(st.free_hits + st.free_misses, pairs, "{st:?}");
    // The cache's own walk: every object constructed, none allocated, and
    // each one either cached (per-CPU or shared array) or free on its slab.
    let (mut total, mut allocated) = (0, 0);
    cache.for_each_object(|p, a| {
        total += 1;
        allocated += usize::from(a);
        // SAFETY: a free object of the cache, constructed; nobody owns it.
        assert_eq!(unsafe { *p.as_ptr() }, 0, "free object not constructed");
    });
    assert_eq!((total, allocated), (st.num_objs, 0));
    assert_eq!(
        st.active_objs,
        st.cpu_cached + st.shared_avail,
        "cached objects double-counted or lost: {st:?}"
    );
    assert!(owners.map.iter().all(|w| w.load(Ordering::Relaxed) == 0));
    let st = cache.destroy().unwrap();
    assert_eq!(st.ctor_calls, st.dtor_calls);
    assert_eq!(source.outstanding_pages(), 0);
}
