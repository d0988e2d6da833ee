//! The per-CPU layer: one `array_cache` per CPU slot, and who may touch it.
//!
//! A slot's array is per-CPU memory: the fast paths read and write it with
//! plain loads and stores.  Exactly one party has it at any instant, the
//! holder of the slot lock (`CpuSlot::lock`):
//!
//! * a caller that is not a CPU takes the lock for one call (`alloc_on`,
//!   `free_on`), or for a region ([`KmemCache::lock_cpu`], the kernel's
//!   `get_cpu()` … `put_cpu()`), and so do remote operations (`shrink`,
//!   `tune`, `stats`, `destroy`) on a slot nobody has claimed;
//! * a [`CpuToken`](super::CpuToken) takes it once, when the CPU is claimed,
//!   and keeps it until it is dropped, so its hits and frees run no lock and
//!   no atomic read-modify-write at all (see `token.rs`).
//!
//! **Hand-off** (the user-space stand-in for Linux's IPI to each CPU in
//! `drain_cpu_caches`/`do_tune_cpucache`): a party that finds the lock held
//! while the slot is claimed posts a request (`requests += 1`) and keeps
//! trying the lock.  The token looks at `requests` (a plain load) at the
//! start of its next operation, or at a quiescent point
//! ([`CpuToken::serve`](super::CpuToken::serve)); when it is non-zero the
//! token releases the lock (a release store: everything the owner wrote to
//! the array happens-before the requester's lock), waits until every posted
//! requester has taken it (`requests` back to 0: each requester withdraws
//! its request right after acquiring), then takes the lock again, ordered
//! after the requesters' writes by the same lock.  Objects never change
//! hands except under the lock, so none is lost or handed out twice; the
//! loom models in `tests/loom_token.rs` check that, and that a requester that
//! skips the hand-off is caught.
//!
//! A requester that itself holds a token on another slot serves its own
//! requests while it waits (as a CPU spinning in `smp_call_function` still
//! takes IPIs), but without blocking: it only *lends* its slot (releases
//! the lock) and takes it back once its walk is over (`reclaim`).  The only
//! blocking waits (`reclaim`, the first lock of a token) wait for
//! requesters, and requesters never block while they wait, so two token
//! holders draining each other cannot deadlock.

use alloc::vec::Vec;
use core::fmt;
use core::ptr::NonNull;
use core::sync::atomic::Ordering;
use pgdcache_sync::classes::ARRAY_CACHE;
use pgdcache_sync::lockdep::Held;

use super::KmemCache;
use crate::error::{AllocError, FreeError};
use crate::page::PageSource;
use crate::slab::Entry;
use crate::sync::{spin_wait, AtomicU8, AtomicUsize, UnsafeCell};

/// One CPU's `array_cache`: free, constructed objects, most recent last, and
/// the CPU's own statistics (plain counters: only the slot's holder writes
/// them).
pub(crate) struct ArrayCache {
    pub(crate) entries: Vec<Entry>,
    /// Count hits (`alloc_hits`, `free_hits`): Linux's `STATS`
    /// (`CONFIG_DEBUG_SLAB`), see [`CacheBuilder::stats`](crate::CacheBuilder::stats).
    pub(crate) count_hits: bool,
    pub(crate) limit: usize,
    pub(crate) batchcount: usize,
    pub(crate) alloc_hits: usize,
    pub(crate) alloc_misses: usize,
    pub(crate) free_hits: usize,
    pub(crate) free_misses: usize,
    /// Trips to `list_lock` in the current resize window.
    pub(crate) trips: u32,
    /// How many of them found `list_lock` held by another CPU.
    pub(crate) contended: u32,
}

impl ArrayCache {
    fn new(limit: usize, batchcount: usize, count_hits: bool) -> Self {
        Self {
            entries: Vec::with_capacity(limit),
            count_hits,
            limit,
            batchcount,
            alloc_hits: 0,
            alloc_misses: 0,
            free_hits: 0,
            free_misses: 0,
            trips: 0,
            contended: 0,
        }
    }

    /// Counts one trip to `list_lock` for dynamic resizing.
    #[inline(always)]
    pub(crate) fn note_trip(&mut self, contended: bool) {
        self.trips += 1;
        self.contended += u32::from(contended);
    }
}

/// A per-CPU slot, padded to its own cache lines so CPUs do not false-share.
#[repr(align(128))]
pub(crate) struct CpuSlot {
    /// The slot lock: 1 while someone has the right to `array` (see the
    /// module docs).  A bare test-and-set word rather than a `Mutex`, so
    /// that a held slot is one pointer and a token needs no guard object;
    /// under loom it is a modelled atomic like any other.
    lock: AtomicU8,
    /// The CPU's array cache; accessed only by the holder of `lock`.
    array: UnsafeCell<ArrayCache>,
    /// 1 while a `CpuToken` for this slot exists.
    pub(crate) claimed: AtomicU8,
    /// Requesters waiting for the token holder to hand the slot over.
    requests: AtomicUsize,
}

// SAFETY: `array` is only accessed by the holder of `lock` (a `SlotGuard`
// or a `CpuToken`, which take it with an acquire and give it up with a
// release), so the cell is never accessed from two threads at once, and
// `ArrayCache` itself is `Send`.
unsafe impl Sync for CpuSlot {}

impl CpuSlot {
    pub(crate) fn new(limit: usize, batchcount: usize, count_hits: bool) -> Self {
        Self {
            lock: AtomicU8::new(0),
            array: UnsafeCell::new(ArrayCache::new(limit, batchcount, count_hits)),
            claimed: AtomicU8::new(0),
            requests: AtomicUsize::new(0),
        }
    }

    /// One attempt at the slot lock (`lock cmpxchg`).
    #[inline(always)]
    fn try_lock(&self) -> bool {
        self.lock
            .compare_exchange(0, 1, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
    }

    /// Whether someone holds the slot lock (the slab layer's tests only,
    /// which loom builds leave out).
    #[cfg(all(test, feature = "std", not(loom)))]
    pub(crate) fn is_locked(&self) -> bool {
        self.lock.load(Ordering::Relaxed) != 0
    }

    /// Releases the slot lock (a plain release store).
    #[inline(always)]
    fn unlock(&self) {
        self.lock.store(0, Ordering::Release);
    }

    /// Takes the slot for one call or region (a caller that is not its
    /// token holder): one `lock cmpxchg` when the slot is free.
    #[inline(always)]
    #[cfg_attr(feature = "std", track_caller)]
    pub(crate) fn acquire(&self) -> SlotGuard<'_> {
        let held = self.held();
        if !self.try_lock() {
            self.acquire_serving(|| {});
        }
        SlotGuard {
            slot: self,
            _held: held,
        }
    }

    /// Tells the lock-order checker this thread takes the slot lock.
    #[inline(always)]
    #[cfg_attr(feature = "std", track_caller)]
    fn held(&self) -> Held {
        Held::acquire_instance(&ARRAY_CACHE, 0, self as *const Self as usize)
    }

    /// Takes the slot lock, posting a hand-off request while a token holds
    /// it; `serve` runs on every spin (a waiting token holder serves its
    /// own slot's requests there).  The caller owns the lock afterwards.
    #[cold]
    #[inline(never)]
    fn acquire_serving(&self, mut serve: impl FnMut()) {
        let mut posted = false;
        loop {
            if self.try_lock() {
                if posted {
                    // Withdraw the request: the owner may take the lock back
                    // once every requester has had it.
                    self.requests.fetch_sub(1, Ordering::Release);
                }
                return;
            }
            if !posted && self.claimed.load(Ordering::Acquire) != 0 {
                self.requests.fetch_add(1, Ordering::AcqRel);
                posted = true;
            }
            serve();
            spin_wait();
        }
    }

    /// [`acquire`](Self::acquire) for a caller that holds a token on
    /// another slot and serves it (`serve`, which must not block: it lends
    /// the token's slot, see `CpuToken::lend`) while it waits.
    #[cfg_attr(feature = "std", track_caller)]
    pub(crate) fn acquire_while_serving(&self, serve: impl FnMut()) -> SlotGuard<'_> {
        let held = self.held();
        if !self.try_lock() {
            self.acquire_serving(serve);
        }
        SlotGuard {
            slot: self,
            _held: held,
        }
    }

    /// Whether a requester is waiting for this slot's token holder (a plain
    /// load on x86: the only shared word the token's fast path reads).
    #[inline(always)]
    pub(crate) fn pending(&self) -> bool {
        self.requests.load(Ordering::Relaxed) != 0
    }

    /// Takes the lock for a new token (`claimed` already set by the caller)
    /// and keeps it: the token now holds the slot until `release_token`.
    pub(crate) fn lock_for_token(&self) {
        while !self.try_lock() {
            spin_wait();
        }
    }

    /// The token's half of the hand-off: give the lock up (everything the
    /// owner wrote happens-before the requester's acquire), let every
    /// posted requester through, take it back.
    #[cold]
    #[inline(never)]
    pub(crate) fn hand_off(&self) {
        self.lend();
        self.reclaim();
    }

    /// The first half of `hand_off`: the token gives its lock up.  A token
    /// holder that is itself waiting for another slot does only this while
    /// it waits (it must not block there: see `reclaim`).
    pub(crate) fn lend(&self) {
        self.unlock();
    }

    /// The second half of `hand_off`: wait until every posted requester has
    /// had the slot, then take the lock back for the token.  Blocks only on
    /// requesters, which are in `acquire_serving` loops that never block,
    /// so waits cannot form a cycle.
    pub(crate) fn reclaim(&self) {
        while self.requests.load(Ordering::Acquire) != 0 {
            spin_wait();
        }
        self.lock_for_token();
    }

    /// A token is dropped: release the lock, then the claim.
    pub(crate) fn release_token(&self) {
        self.unlock();
        self.claimed.store(0, Ordering::Release);
    }

    /// Runs `f` on the array.
    ///
    /// # Safety
    ///
    /// The caller holds `lock` (a `SlotGuard`, or it is the slot's token
    /// holder) for the whole call, and does not re-enter the array from `f`.
    #[inline(always)]
    pub(crate) unsafe fn with_array<R>(&self, f: impl FnOnce(&mut ArrayCache) -> R) -> R {
        // SAFETY: the caller holds `lock`, the one right to the array (see
        // the `Sync` impl), so this is the only access in progress.
        self.array.with_mut(|p| f(unsafe { &mut *p }))
    }

    /// Reads the array without the hand-off: the deliberately broken step of
    /// the negative loom model (`Bug::ReadWithoutHandOff`), never called
    /// otherwise.
    ///
    /// # Safety
    ///
    /// None: this is a data race whenever a token holds the slot; loom
    /// reports it as a causality violation.
    #[cfg(loom)]
    pub(crate) unsafe fn peek_unlocked<R>(&self, f: impl FnOnce(&ArrayCache) -> R) -> R {
        // SAFETY: none (see above); loom's cell checks the access instead.
        self.array.with(|p| f(unsafe { &*p }))
    }
}

/// The slot lock, held by a caller that is not the slot's token holder;
/// released on drop.
pub(crate) struct SlotGuard<'a> {
    slot: &'a CpuSlot,
    /// The lock-order checker's record of the `array_cache` class (empty
    /// without the `lockdep` feature); dropped after the guard's own
    /// `Drop` released the slot.
    _held: Held,
}

impl SlotGuard<'_> {
    /// Runs `f` on the guarded array.
    #[inline(always)]
    pub(crate) fn with<R>(&mut self, f: impl FnOnce(&mut ArrayCache) -> R) -> R {
        // SAFETY: the guard holds the slot lock; `&mut self` keeps `f` the
        // only access through it.
        unsafe { self.slot.with_array(f) }
    }
}

impl Drop for SlotGuard<'_> {
    #[inline(always)]
    fn drop(&mut self) {
        self.slot.unlock();
    }
}

/// A pinned CPU slot (see [`KmemCache::lock_cpu`]): the kernel's
/// `get_cpu()` region, with the slot's lock held throughout.
pub struct CpuCache<'a, P: PageSource> {
    cache: &'a KmemCache<P>,
    guard: SlotGuard<'a>,
}

impl<P: PageSource> CpuCache<'_, P> {
    /// `alloc` on the pinned slot without taking its lock per call.
    #[inline(always)]
    pub fn alloc(&mut self) -> Result<NonNull<u8>, AllocError> {
        let cache = self.cache;
        self.guard.with(|ac| cache.alloc_from(ac))
    }

    /// `free` on the pinned slot without taking its lock per call.
    #[inline(always)]
    pub fn free(&mut self, obj: NonNull<u8>) -> Result<(), FreeError> {
        let cache = self.cache;
        let e = cache.take_back(obj)?;
        self.guard.with(|ac| cache.free_into(ac, e));
        Ok(())
    }
}

impl<P: PageSource> fmt::Debug for CpuCache<'_, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CpuCache")
            .field("cache", &self.cache.name)
            .finish_non_exhaustive()
    }
}

impl<P: PageSource> KmemCache<P> {
    /// Pins CPU slot `cpu` for a batch of operations, like the kernel's
    /// `get_cpu()` … `put_cpu()`: the slot's lock is held until the
    /// returned [`CpuCache`] is dropped, so its `alloc`/`free` skip the
    /// per-call lock.  While it is held, any other use of slot `cpu`, and
    /// `shrink`, `tune`, `stats` and `destroy`, spin until it is dropped:
    /// keep it short-lived and never call them from the holding thread.  On
    /// a claimed slot it waits for the token holder's hand-off.
    pub fn lock_cpu(&self, cpu: usize) -> Result<CpuCache<'_, P>, AllocError> {
        let ncpus = self.cpus.len();
        let slot = self
            .cpus
            .get(cpu)
            .ok_or(AllocError::InvalidCpu { cpu, ncpus })?;
        Ok(CpuCache {
            cache: self,
            guard: slot.acquire(),
        })
    }
}

#[cfg(all(test, feature = "std", not(loom)))]
mod tests {
    use super::super::testutil::pattern_cache;
    use crate::error::FreeError;
    use std::vec::Vec;

    #[test]
    fn pinned_cpu_handle() {
        let (cache, _, _) = pattern_cache(64);
        {
            let mut h = cache.lock_cpu(1).unwrap();
            let objs: Vec<_> = (0..50).map(|_| h.alloc().unwrap()).collect();
            for o in &objs {
                h.free(*o).unwrap();
            }
            assert_eq!(h.free(objs[0]), Err(FreeError::DoubleFree));
            // The other slot is still usable meanwhile.
            let p = cache.alloc_on(0).unwrap();
            cache.free_on(0, p).unwrap();
        }
        assert!(cache.lock_cpu(2).is_err());
        assert_eq!(cache.stats().live_objs, 0);
        assert_eq!(cache.destroy().unwrap().errors, 1);
    }
}
