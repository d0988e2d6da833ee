//! loom models of the per-CPU layer: "array flush vs refill".
//!
//! Run with `RUSTFLAGS="--cfg loom" cargo test -p objcache --release --test loom`.
//! Two threads allocate and free through their own CPU slots with tiny
//! arrays (`limit` 2, `batchcount` 1), so every few operations one of them
//! refills from the slab lists while the other flushes into them.  The
//! invariants: no object is handed to two owners at once, every object handed
//! out is constructed, and after `destroy` the counts balance and no page is
//! left outstanding.
#![cfg(loom)]

use std::ptr::NonNull;

use loom::sync::Arc;
use objcache::{CacheBuilder, FaultyPageSource, ResizePolicy, SlabFlags, SystemPageSource};

/// The page source is not part of the model: plain `std` Arc.
type Source = std::sync::Arc<FaultyPageSource<SystemPageSource>>;

const OBJ: usize = 2048; // two objects per one-page slab

fn model(f: impl Fn() + Sync + Send + 'static) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let runs = std::sync::Arc::new(AtomicUsize::new(0));
    let r = runs.clone();
    let mut b = loom::model::Builder::new();
    if b.preemption_bound.is_none() {
        b.preemption_bound = Some(4);
    }
    b.check(move || {
        r.fetch_add(1, Ordering::Relaxed);
        f()
    });
    let n = runs.load(Ordering::Relaxed);
    println!("explored {n} executions");
    assert!(n > 1, "the model explored a single interleaving");
}

fn worker(cache: &objcache::KmemCache<Source>, cpu: usize) {
    let id = cpu as u8 + 1;
    let mut held: Vec<NonNull<u8>> = Vec::new();
    for _ in 0..3 {
        let p = cache.alloc_on(cpu).expect("alloc");
        // SAFETY: we own the object; byte 0 is constructed as 0.
        unsafe {
            assert_eq!(*p.as_ptr(), 0, "not constructed / handed out twice");
            *p.as_ptr() = id;
        }
        held.push(p);
    }
    for p in held {
        // SAFETY: we own the object; restore constructed state.
        unsafe {
            assert_eq!(*p.as_ptr(), id, "object shared with another owner");
            *p.as_ptr() = 0;
        }
        cache.free_on(cpu, p).expect("free");
    }
}

/// Two CPUs allocate and free through their own slots of one cache built by
/// `configure` (on top of tiny arrays and a zeroing ctor); `check` sees the
/// final stats of every explored execution before `destroy`.
fn flush_vs_refill(
    configure: impl Fn(CacheBuilder) -> CacheBuilder + Send + Sync + 'static,
    check: impl Fn(&objcache::CacheStats) + Send + Sync + 'static,
) {
    model(move || {
        let source: Source = std::sync::Arc::new(FaultyPageSource::new(SystemPageSource));
        let builder = CacheBuilder::new("loom", OBJ)
            .cpus(2)
            .tunables(2, 1)
            .ctor(|p| {
                // SAFETY: the ctor owns OBJ bytes at `p`.
                unsafe { std::ptr::write_bytes(p.as_ptr(), 0, OBJ) }
            });
        let cache = Arc::new(configure(builder).build(source.clone()).expect("create"));
        let c2 = cache.clone();
        let t = loom::thread::spawn(move || worker(&c2, 1));
        worker(&cache, 0);
        t.join().expect("join");
        let cache = Arc::try_unwrap(cache).expect("sole owner");
        let st = cache.stats();
        assert_eq!(st.live_objs, 0);
        assert_eq!(st.errors, 0);
        check(&st);
        let st = cache.destroy().expect("no live objects");
        assert_eq!(st.ctor_calls, st.dtor_calls);
        assert_eq!(source.outstanding_pages(), 0);
    });
}

/// Per-CPU arrays flush straight into the slab lists and refill from them.
#[test]
fn flush_vs_refill_two_cpus() {
    flush_vs_refill(|b| b.shared_factor(0), |_| {});
}

/// Flushes and refills go through a one-object shared array first.
#[test]
fn flush_vs_refill_through_shared_array() {
    flush_vs_refill(|b| b.shared_factor(1), |_| {});
}

/// Dynamic resizing on every contended trip: a CPU that finds `list_lock`
/// held doubles the arrays (limit 2 -> 4) while the other CPU flushes and
/// refills; the same invariants must hold whether or not it happens.
#[test]
fn flush_vs_refill_with_dynamic_resizing() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static RESIZED: AtomicUsize = AtomicUsize::new(0);
    let policy = ResizePolicy {
        contention: 1,
        window: 1,
        max_factor: 2,
    };
    flush_vs_refill(
        move |b| b.shared_factor(0).resize(Some(policy)),
        |st| {
            assert!(st.limit == 2 + 2 * st.resized.min(1), "{st:?}");
            if st.resized > 0 {
                RESIZED.fetch_add(1, Ordering::Relaxed);
            }
        },
    );
    let n = RESIZED.load(Ordering::Relaxed);
    println!("{n} executions resized an array");
    assert!(n > 0, "no explored execution contended list_lock");
}

/// `tune` racing dynamic resizing: whatever the interleaving, `tune`'s
/// tunables win. It turns resizing off before it takes the slot locks, so a
/// CPU either grows its array before `tune` reaches its slot (and `tune`
/// then overwrites it) or sees resizing off afterwards. (Contention that
/// `tune` itself causes cannot resize: it comes after resizing is off.)
#[test]
fn tune_wins_over_dynamic_resizing() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static RESIZED: AtomicUsize = AtomicUsize::new(0);
    model(|| {
        let source: Source = std::sync::Arc::new(FaultyPageSource::new(SystemPageSource));
        let cache = Arc::new(
            CacheBuilder::new("loom-tune", OBJ)
                .cpus(2)
                .tunables(2, 1)
                .shared_factor(0)
                .resize(Some(ResizePolicy {
                    contention: 1,
                    window: 1,
                    max_factor: 4,
                }))
                .ctor(|p| {
                    // SAFETY: the ctor owns OBJ bytes at `p`.
                    unsafe { std::ptr::write_bytes(p.as_ptr(), 0, OBJ) }
                })
                .build(source.clone())
                .expect("create"),
        );
        let c2 = cache.clone();
        let t = loom::thread::spawn(move || worker(&c2, 1));
        // CPU 0's refills and flushes contend with CPU 1's (resizing), then
        // tune races with whatever CPU 1 is still doing.
        worker(&cache, 0);
        cache.tune(3, 2).expect("tune");
        t.join().expect("join");
        let cache = Arc::try_unwrap(cache).expect("sole owner");
        let st = cache.stats();
        assert_eq!((st.limit, st.batchcount), (3, 2), "{st:?}");
        RESIZED.fetch_add(st.resized, Ordering::Relaxed);
        let st = cache.destroy().expect("no live objects");
        assert_eq!(st.ctor_calls, st.dtor_calls);
        assert_eq!(source.outstanding_pages(), 0);
    });
    let n = RESIZED.load(Ordering::Relaxed);
    println!("{n} resizes across the explored executions");
    assert!(n > 0, "no explored execution resized before tune");
}

#[test]
fn shrink_races_with_alloc_free() {
    model(|| {
        let source: Source = std::sync::Arc::new(FaultyPageSource::new(SystemPageSource));
        let cache = Arc::new(
            CacheBuilder::new("loom-shrink", OBJ)
                .cpus(2)
                .tunables(2, 1)
                .flags(SlabFlags::NO_REAP)
                .build(source.clone())
                .expect("create"),
        );
        let c2 = cache.clone();
        let t = loom::thread::spawn(move || {
            c2.shrink();
        });
        let p = cache.alloc_on(0).expect("alloc");
        cache.free_on(0, p).expect("free");
        assert!(cache.free_on(1, p).is_err());
        t.join().expect("join");
        let cache = Arc::try_unwrap(cache).expect("sole owner");
        let st = cache.destroy().expect("no live objects");
        assert_eq!(st.ctor_calls, st.dtor_calls, "{st:?}");
        assert_eq!(source.outstanding_pages(), 0);
    });
}
