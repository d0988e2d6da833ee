//! loom models of the `CpuToken` hand-off: a thread acting as CPU 0 through
//! its token (no lock, no atomic read-modify-write on its hits) while a
//! remote thread shrinks, reads statistics, walks the objects, tunes and
//! uses CPU 0's slot per call — every one of which needs CPU 0's array and
//! gets it only by hand-off.
//!
//! Run with `RUSTFLAGS="--cfg loom" cargo test -p objcache --release --test loom_token`.
//! The per-CPU array lives in a loom `UnsafeCell`, so loom checks that
//! every access to it happens-after the previous one: the owner's plain
//! loads and stores and the requester's are ordered by the hand-off, or the
//! model fails.  Invariants: no object is handed to two owners at once or
//! lost (owner stamps, and at the end every object is on a slab and the
//! counts balance), the per-CPU statistics count every operation exactly,
//! two token holders reading each other's slots finish — with the token
//! holder taking its objects one at a time or as a batch (`alloc_bulk`,
//! `free_bulk`) — and the negative models are caught: a requester that reads without the hand-off
//! (a race on the array), a token that hands its slot over without writing
//! back the hot copy of its array it keeps (a broken invariant), and a
//! waiting token holder that serves its own slot with the blocking hand-off
//! instead of lending it (a deadlock).
#![cfg(loom)]

use std::ptr::NonNull;

use loom::sync::Arc;
use objcache::{Bug, CacheBuilder, FaultyPageSource, KmemCache, SystemPageSource};

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

fn cache(source: &Source) -> KmemCache<Source> {
    CacheBuilder::new("loom-token", OBJ)
        .cpus(2)
        .tunables(2, 1)
        .shared_factor(0)
        .ctor(|p| {
            // SAFETY: the ctor owns OBJ bytes at `p`.
            unsafe { std::ptr::write_bytes(p.as_ptr(), 0, OBJ) }
        })
        .build(source.clone())
        .expect("create")
}

/// The text of a caught panic (a negative model's failure).
fn panic_message(err: &(dyn std::any::Any + Send)) -> String {
    err.downcast_ref::<String>()
        .cloned()
        .or_else(|| err.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

/// Stamps an object the caller now owns; it must be constructed (0).
fn take(p: NonNull<u8>, id: u8) {
    // SAFETY: the caller owns the object; byte 0 is constructed as 0.
    unsafe {
        assert_eq!(*p.as_ptr(), 0, "not constructed / handed out twice");
        *p.as_ptr() = id;
    }
}

/// Restores constructed state before a free; the stamp must be intact.
fn give(p: NonNull<u8>, id: u8) {
    // SAFETY: the caller owns the object.
    unsafe {
        assert_eq!(*p.as_ptr(), id, "object shared with another owner");
        *p.as_ptr() = 0;
    }
}

/// CPU 0 through its token: two allocations (a refill, then a hit) and two
/// frees (a hit, then a flush with `limit` 2), then drops the token.
fn owner(cache: &KmemCache<Source>) -> usize {
    let mut t = cache.claim_cpu(0).expect("claim");
    let a = t.alloc().expect("alloc");
    take(a, 1);
    let b = t.alloc().expect("alloc");
    take(b, 1);
    give(a, 1);
    t.free(a).expect("free");
    give(b, 1);
    t.free(b).expect("free");
    2
}

/// CPU 0 through its token, in batches (`alloc_bulk`/`free_bulk` of two),
/// twice: the first batch takes the batch's slow path (a refill per object
/// with `batchcount` 1) and its push fills the array (`limit` 2), a hit
/// that leaves the token's hot copy ahead of the slot's array; the second
/// batch pops them both back, a hit too. A requester waiting at either
/// batch sends it one object at a time through the hand-off.
fn owner_bulk(cache: &KmemCache<Source>) -> usize {
    let mut t = cache.claim_cpu(0).expect("claim");
    for _ in 0..2 {
        let objs = t.alloc_bulk::<2>().expect("alloc_bulk");
        let ptrs = objs.as_ptrs();
        for p in ptrs {
            take(p, 1);
        }
        for p in ptrs {
            give(p, 1);
        }
        t.free_bulk(objs).expect("free_bulk");
    }
    4
}

/// The remote side of every model: `op` on the cache while CPU 0's token
/// holder works; then the final accounting, exact.
fn token_vs_remote(bug: Bug, remote: fn(&KmemCache<Source>) -> usize) {
    token_as_vs_remote(owner, bug, remote)
}

/// [`token_vs_remote`] with the token holder's work given (objects taken
/// and given back one at a time or in batches; it returns how many).
fn token_as_vs_remote(
    owner: fn(&KmemCache<Source>) -> usize,
    bug: Bug,
    remote: fn(&KmemCache<Source>) -> usize,
) {
    model(move || {
        let source: Source = std::sync::Arc::new(FaultyPageSource::new(SystemPageSource));
        let cache = Arc::new(cache(&source));
        cache.inject_bug(bug);
        let c2 = cache.clone();
        let t = loom::thread::spawn(move || remote(&c2));
        let own_pairs = owner(&cache);
        let remote_pairs = t.join().expect("join");
        let cache = Arc::try_unwrap(cache).expect("sole owner");
        let st = cache.stats();
        assert_eq!(st.live_objs, 0, "{st:?}");
        assert_eq!(st.errors, 0, "{st:?}");
        let pairs = own_pairs + remote_pairs;
        assert_eq!(st.alloc_hits + st.alloc_misses, pairs, "{st:?}");
        assert_eq!(st.free_hits + st.free_misses, pairs, "{st:?}");
        let (mut total, mut allocated) = (0, 0);
        cache.for_each_object(|_, a| {
            total += 1;
            allocated += usize::from(a);
        });
        assert_eq!((total, allocated), (st.num_objs, 0), "{st:?}");
        assert_eq!(
            st.num_objs,
            st.cpu_cached + st.shared_avail + (st.num_objs - st.active_objs),
            "an object is neither allocated nor cached nor on a slab: {st:?}"
        );
        let st = cache.destroy().expect("no live objects");
        assert_eq!(st.ctor_calls, st.dtor_calls);
        assert_eq!(source.outstanding_pages(), 0);
    });
}

/// `shrink` drains CPU 0's array by hand-off while the owner allocates and
/// frees: objects are moved only under the slot lock, so none is lost or
/// given to two owners.
#[test]
fn token_vs_remote_shrink() {
    token_vs_remote(Bug::None, |c| {
        c.shrink();
        0
    });
}

/// `shrink` against a token holder working in batches: a batch checks the
/// request word once before it touches the array, as a single pop does.
#[test]
fn token_batch_vs_remote_shrink() {
    token_as_vs_remote(owner_bulk, Bug::None, |c| {
        c.shrink();
        0
    });
}

/// A per-call user of CPU 0's slot against a token holder working in
/// batches: the per-call pair is served by hand-off between or inside the
/// batches.
#[test]
fn token_batch_vs_per_call_user() {
    token_as_vs_remote(owner_bulk, Bug::None, |c| {
        let p = c.alloc_on(0).expect("alloc_on");
        take(p, 2);
        give(p, 2);
        c.free_on(0, p).expect("free_on");
        1
    });
}

/// `stats` reads CPU 0's counters by hand-off; the walk reads the owned
/// flags and must never count more objects allocated than the owner holds.
#[test]
fn token_vs_remote_stats_and_walk() {
    token_vs_remote(Bug::None, |c| {
        let st = c.stats();
        assert!(st.live_objs <= 2, "{st:?}");
        assert!(st.alloc_hits + st.alloc_misses <= 2, "{st:?}");
        let mut allocated = 0;
        c.for_each_object(|_, a| allocated += usize::from(a));
        assert!(
            allocated <= 2,
            "{allocated} allocated, the owner holds 2 at most"
        );
        0
    });
}

/// A per-call user of CPU 0's slot (`alloc_on(0)`/`free_on(0)`) and `tune`
/// get the slot by hand-off too.
#[test]
fn token_vs_per_call_user_and_tune() {
    token_vs_remote(Bug::None, |c| {
        let p = c.alloc_on(0).expect("alloc");
        take(p, 2);
        give(p, 2);
        c.free_on(0, p).expect("free");
        c.tune(3, 1).expect("tune");
        1
    });
}

/// The negative model: `stats` reads a claimed CPU's array in place instead
/// of waiting for the hand-off.  loom must report the race on the array.
#[test]
fn negative_read_without_hand_off_is_found() {
    let err = std::panic::catch_unwind(|| {
        token_vs_remote(Bug::ReadWithoutHandOff, |c| {
            c.stats();
            0
        })
    })
    .expect_err("loom must find the unsynchronised read");
    let msg = panic_message(&*err);
    assert!(
        msg.contains("Causality violation"),
        "the model failed, but not on the race: {msg}"
    );
}

/// The negative model of the token's hot copy: a token that hands its slot
/// over without writing back the array length and counters it keeps while
/// it holds the slot.  The hand-off itself is synchronised (no race for
/// loom to report), but the requester drains a stale array and the token
/// takes back one: objects are lost or handed out twice, or the counts do
/// not balance, and the model's invariants must say so.
#[test]
fn negative_hand_off_without_write_back_is_found() {
    lost_write_back_is_found::<2>(owner);
}

/// The same negative model with the token holder working in batches: the
/// batch paths write back through the same hand-off, so the lost
/// write-back must break an invariant there too.
#[test]
fn negative_batch_hand_off_without_write_back_is_found() {
    lost_write_back_is_found::<4>(owner_bulk);
}

/// The write-back negative model for a token holder doing `owner`'s work,
/// which takes `ALLOCS` objects: the remote side reads statistics (never
/// more than `ALLOCS` allocations) and shrinks; an invariant must break.
fn lost_write_back_is_found<const ALLOCS: usize>(owner: fn(&KmemCache<Source>) -> usize) {
    let err = std::panic::catch_unwind(|| {
        token_as_vs_remote(owner, Bug::HandOffWithoutWriteBack, |c| {
            let st = c.stats();
            assert!(st.alloc_hits + st.alloc_misses <= ALLOCS, "{st:?}");
            c.shrink();
            0
        })
    })
    .expect_err("the lost write-back must break an invariant");
    let msg = panic_message(&*err);
    assert!(
        !msg.contains("Causality violation") && !msg.contains("maximum number of branches"),
        "the model failed, but not on an invariant: {msg}"
    );
}

/// Two token holders read statistics through their tokens at once: each
/// waits for the other's slot while the other waits for its own.  Each lends
/// its slot while it waits, so both walks finish.
fn two_token_holders(bug: Bug) {
    model(move || {
        let source: Source = std::sync::Arc::new(FaultyPageSource::new(SystemPageSource));
        let cache = Arc::new(cache(&source));
        cache.inject_bug(bug);
        let cpu = |cache: &KmemCache<Source>, n: usize| {
            let mut t = cache.claim_cpu(n).expect("claim");
            let p = t.alloc().expect("alloc");
            take(p, n as u8 + 1);
            let st = t.stats();
            assert!((1..=2).contains(&st.live_objs), "{st:?}");
            give(p, n as u8 + 1);
            t.free(p).expect("free");
        };
        let c2 = cache.clone();
        let th = loom::thread::spawn(move || cpu(&c2, 1));
        cpu(&cache, 0);
        th.join().expect("join");
        let cache = Arc::try_unwrap(cache).expect("sole owner");
        let st = cache.stats();
        assert_eq!((st.live_objs, st.alloc_hits + st.alloc_misses), (0, 2));
        let st = cache.destroy().expect("no live objects");
        assert_eq!(st.ctor_calls, st.dtor_calls);
    });
}

#[test]
fn two_token_holders_read_each_other() {
    two_token_holders(Bug::None);
}

/// The negative model of the deadlock: serving with the blocking hand-off
/// while waiting for the other token holder, both wait for each other.
#[test]
fn negative_blocking_serve_while_waiting_deadlocks() {
    let err = std::panic::catch_unwind(|| two_token_holders(Bug::BlockingServeWhileWaiting))
        .expect_err("loom must find the deadlock");
    let msg = panic_message(&*err);
    // Both threads spin in `reclaim`, each waiting for the other to take
    // its slot: loom reports the livelock as an unbounded spin.
    assert!(
        msg.contains("maximum number of branches"),
        "the model failed, but not on the deadlock: {msg}"
    );
}
