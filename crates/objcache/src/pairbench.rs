//! The 32-byte alloc+free pair of issue #17, measured for a report:
//! objcache per call (`alloc_on`/`free_on`), objcache through a claimed
//! CPU ([`CpuToken`](crate::CpuToken)) with raw pointers and with [`Obj`]
//! handles, and the system allocator (`std::alloc`, glibc malloc on Linux,
//! at its natural 16-byte alignment), in interleaved rounds on the calling
//! thread.  The caches run in the production configuration: no hit
//! counters ([`CacheBuilder::stats`]`(false)`, Linux without `STATS`).
//!
//! One more contender is no allocator at all: the *floor* of any per-call
//! path, two uncontended `lock cmpxchg` + release-store pairs (a lock taken
//! and released on alloc and on free) around a `Vec` pop and push.  A
//! caller that is not its CPU's owner must take some such lock per call,
//! so `alloc_on`/`free_on` can be no faster than this on the same machine.
//!
//! It returns the rounds, not ratios: the caller pairs them by round with
//! the workspace's statistics (`pgdcache-benchstats`'s `Ratio::paired`), as
//! `benches/objcache.rs` and `examples/pair32.rs` do, and as `pgdcache
//! bench` can.  The targets: per call ≥ 2× glibc, token ≥ 3× glibc (ratio
//! = glibc ns / objcache ns).
//!
//! Each pair allocates one object, lets its address escape (`black_box`),
//! reads its first byte (a touch) and frees it; every contender's loop is
//! the same generic function, so they differ only in the allocator call.

use core::hint::black_box;
use core::ptr::NonNull;
use std::alloc::Layout;
use std::time::Instant;
use std::vec::Vec;

use crate::cache::{CacheBuilder, KmemCache, Obj, SlabFlags};
use crate::error::{AllocError, ClaimError, CreateError, FreeError};
use crate::page::SystemPageSource;

/// Object size of the measured pair (a PAE pgd).
pub const PAIR_OBJECT: usize = 32;

/// Nanoseconds per pair, one entry per round, the three contenders measured
/// in the same rounds (round `r` of each ran back to back).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PairRounds {
    /// `std::alloc::alloc`/`dealloc` of 32 bytes at 16-byte alignment.
    pub system: Vec<f64>,
    /// `KmemCache::alloc_on`/`free_on` (the slot lock per call).
    pub per_call: Vec<f64>,
    /// `CpuToken::alloc`/`free` (no lock, no atomic read-modify-write).
    pub token: Vec<f64>,
    /// `CpuToken::alloc_obj`/`free_obj` (and no pointer lookup on free).
    pub token_obj: Vec<f64>,
    /// The per-call floor: two `lock cmpxchg` + release-store pairs around
    /// a `Vec` pop and push (see the module docs).
    pub atomic_floor: Vec<f64>,
    /// Pairs per contender per round.
    pub pairs: u64,
}

/// Why the measurement could not run.
#[derive(Debug, thiserror::Error)]
pub enum PairBenchError {
    /// The cache could not be created.
    #[error("creating the cache: {0}")]
    Create(#[source] CreateError),
    /// Claiming the token's CPU failed.
    #[error("claiming a CPU: {0}")]
    Claim(#[source] ClaimError),
    /// An objcache allocation failed.
    #[error("objcache alloc: {0}")]
    Alloc(#[source] AllocError),
    /// An objcache free was refused.
    #[error("objcache free: {0}")]
    Free(#[source] FreeError),
    /// The system allocator's layout was refused.
    #[error("layout: {0}")]
    Layout(#[source] std::alloc::LayoutError),
    /// The system allocator returned null.
    #[error("system allocator out of memory")]
    SystemOutOfMemory,
}

/// One contender: alloc and free one object.
trait Pair {
    /// What an allocation hands out.
    type Obj;
    fn alloc(&mut self) -> Result<Self::Obj, PairBenchError>;
    fn ptr(o: &Self::Obj) -> NonNull<u8>;
    fn free(&mut self, o: Self::Obj) -> Result<(), PairBenchError>;
}

struct PerCall<'a>(&'a KmemCache<SystemPageSource>);

impl Pair for PerCall<'_> {
    type Obj = NonNull<u8>;
    #[inline(always)]
    fn ptr(o: &NonNull<u8>) -> NonNull<u8> {
        *o
    }
    #[inline(always)]
    fn alloc(&mut self) -> Result<NonNull<u8>, PairBenchError> {
        self.0.alloc_on(0).map_err(PairBenchError::Alloc)
    }
    #[inline(always)]
    fn free(&mut self, p: NonNull<u8>) -> Result<(), PairBenchError> {
        self.0.free_on(0, p).map_err(PairBenchError::Free)
    }
}

struct Token<'a>(crate::CpuToken<'a, SystemPageSource>);

impl Pair for Token<'_> {
    type Obj = NonNull<u8>;
    #[inline(always)]
    fn ptr(o: &NonNull<u8>) -> NonNull<u8> {
        *o
    }
    #[inline(always)]
    fn alloc(&mut self) -> Result<NonNull<u8>, PairBenchError> {
        self.0.alloc().map_err(PairBenchError::Alloc)
    }
    #[inline(always)]
    fn free(&mut self, p: NonNull<u8>) -> Result<(), PairBenchError> {
        self.0.free(p).map_err(PairBenchError::Free)
    }
}

struct TokenObj<'a>(crate::CpuToken<'a, SystemPageSource>);

impl Pair for TokenObj<'_> {
    type Obj = Obj;
    #[inline(always)]
    fn alloc(&mut self) -> Result<Obj, PairBenchError> {
        self.0.alloc_obj().map_err(PairBenchError::Alloc)
    }
    #[inline(always)]
    fn ptr(o: &Obj) -> NonNull<u8> {
        o.as_ptr()
    }
    #[inline(always)]
    fn free(&mut self, o: Obj) -> Result<(), PairBenchError> {
        self.0.free_obj(o).map_err(|e| PairBenchError::Free(e.why))
    }
}

/// The per-call floor (module docs): a test-and-set lock taken and
/// released around a `Vec` pop, and again around the push.  `pgdcache
/// bench` measures the same type (`alloc32`'s limit row).
#[derive(Debug)]
pub struct AtomicFloor {
    lock: core::sync::atomic::AtomicU8,
    list: Vec<NonNull<u8>>,
}

impl AtomicFloor {
    /// A floor whose list holds `obj`, the one object passed back and
    /// forth (it is never dereferenced here).
    pub fn new(obj: NonNull<u8>) -> Self {
        AtomicFloor {
            lock: core::sync::atomic::AtomicU8::new(0),
            list: std::vec![obj],
        }
    }

    /// The "alloc": the lock, a pop, the unlock.
    #[inline(always)]
    pub fn pop(&mut self) -> Option<NonNull<u8>> {
        self.locked(|l| l.pop())
    }

    /// The "free": the lock, a push, the unlock.
    #[inline(always)]
    pub fn push(&mut self, p: NonNull<u8>) {
        self.locked(|l| l.push(p));
    }

    #[inline(always)]
    fn locked<R>(&mut self, f: impl FnOnce(&mut Vec<NonNull<u8>>) -> R) -> R {
        use core::sync::atomic::Ordering;
        while self
            .lock
            .compare_exchange(0, 1, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            core::hint::spin_loop();
        }
        let r = f(&mut self.list);
        self.lock.store(0, Ordering::Release);
        r
    }
}

impl Pair for AtomicFloor {
    type Obj = NonNull<u8>;
    #[inline(always)]
    fn alloc(&mut self) -> Result<NonNull<u8>, PairBenchError> {
        self.pop().ok_or(PairBenchError::SystemOutOfMemory)
    }
    #[inline(always)]
    fn ptr(o: &NonNull<u8>) -> NonNull<u8> {
        *o
    }
    #[inline(always)]
    fn free(&mut self, p: NonNull<u8>) -> Result<(), PairBenchError> {
        self.push(p);
        Ok(())
    }
}

struct System(Layout);

impl Pair for System {
    type Obj = NonNull<u8>;
    #[inline(always)]
    fn ptr(o: &NonNull<u8>) -> NonNull<u8> {
        *o
    }
    #[inline(always)]
    fn alloc(&mut self) -> Result<NonNull<u8>, PairBenchError> {
        // SAFETY: the layout has a non-zero size.
        NonNull::new(unsafe { std::alloc::alloc(self.0) }).ok_or(PairBenchError::SystemOutOfMemory)
    }
    #[inline(always)]
    fn free(&mut self, p: NonNull<u8>) -> Result<(), PairBenchError> {
        // SAFETY: `p` came from `alloc` with the same layout.
        unsafe { std::alloc::dealloc(p.as_ptr(), self.0) };
        Ok(())
    }
}

/// `n` pairs; returns ns per pair.
#[inline(never)]
fn run<A: Pair>(a: &mut A, n: u64) -> Result<f64, PairBenchError> {
    let start = Instant::now();
    for _ in 0..n {
        let o = a.alloc()?;
        // The object's address escapes to the optimiser once (so no
        // allocator call can be elided); the handle goes back as a caller
        // holds it.
        let p = black_box(A::ptr(&o));
        // SAFETY: we own the object; reading its first byte is a touch.
        black_box(unsafe { p.as_ptr().read_volatile() });
        a.free(o)?;
    }
    Ok(start.elapsed().as_nanos() as f64 / n.max(1) as f64)
}

/// Measures the contenders in `rounds` interleaved rounds of `pairs` pairs
/// each, after one warm-up round, on the calling thread.
pub fn pair_rounds_32b(rounds: usize, pairs: u64) -> Result<PairRounds, PairBenchError> {
    let cache = CacheBuilder::new("pair32", PAIR_OBJECT)
        .flags(SlabFlags::HWCACHE_ALIGN)
        .cpus(2)
        .stats(false)
        .build(SystemPageSource)
        .map_err(PairBenchError::Create)?;
    let obj_cache = CacheBuilder::new("pair32-obj", PAIR_OBJECT)
        .flags(SlabFlags::HWCACHE_ALIGN)
        .cpus(1)
        .stats(false)
        .build(SystemPageSource)
        .map_err(PairBenchError::Create)?;
    let mut per_call = PerCall(&cache);
    let mut token = Token(cache.claim_cpu(1).map_err(PairBenchError::Claim)?);
    let mut token_obj = TokenObj(obj_cache.claim_cpu(0).map_err(PairBenchError::Claim)?);
    // The floor's one "object": any readable byte will do.
    let mut floor = AtomicFloor::new(NonNull::from(&PAIR_OBJECT).cast::<u8>());
    let layout = Layout::from_size_align(PAIR_OBJECT, 16).map_err(PairBenchError::Layout)?;
    let mut system = System(layout);
    let mut out = PairRounds {
        pairs,
        ..PairRounds::default()
    };
    for round in 0..=rounds {
        let s = run(&mut system, pairs)?;
        let p = run(&mut per_call, pairs)?;
        let t = run(&mut token, pairs)?;
        let o = run(&mut token_obj, pairs)?;
        let f = run(&mut floor, pairs)?;
        if round > 0 {
            out.system.push(s);
            out.per_call.push(p);
            out.token.push(t);
            out.token_obj.push(o);
            out.atomic_floor.push(f);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn rounds_are_measured_and_positive() {
        let r = super::pair_rounds_32b(3, 1000).unwrap();
        assert_eq!((r.system.len(), r.per_call.len(), r.token.len()), (3, 3, 3));
        assert_eq!((r.token_obj.len(), r.atomic_floor.len()), (3, 3));
        assert!(r
            .system
            .iter()
            .chain(&r.per_call)
            .chain(&r.token)
            .chain(&r.token_obj)
            .chain(&r.atomic_floor)
            .all(|&x| x > 0.0));
    }
}
