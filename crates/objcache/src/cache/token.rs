//! `CpuToken`: exclusive ownership of one CPU's array cache, as a type.
//!
//! In a kernel, `kmem_cache_alloc` runs with interrupts (or preemption) off,
//! so only the owning CPU can touch its `array_cache`, and a hit is a pop
//! from a plain array: no lock, no atomic instruction.  A [`CpuToken`] is
//! that `get_cpu()` made static: [`KmemCache::claim_cpu`] gives it to one
//! thread, which then acts as that CPU until it drops the token.  The token
//! holds the slot lock for its whole life, so its `alloc` and `free` are a
//! plain load of the slot's request word, the array pop or push, the
//! per-CPU statistics (plain counters) and the object's owned flag (a plain
//! store): no lock and no atomic read-modify-write.
//!
//! Everyone else who needs the slot (`alloc_on`/`free_on`/`lock_cpu` on it,
//! `shrink`, `tune`, `stats`, `destroy`) asks the token holder, who hands the
//! slot over at its next operation or at a quiescent point ([`serve`]); see
//! the hand-off protocol in `percpu.rs`.  A token holder that wants a remote
//! operation itself uses the token's forms ([`CpuToken::shrink`],
//! [`CpuToken::stats`], [`CpuToken::tune`]): they use its own array directly
//! and serve its requests while waiting for other CPUs.  Calling the cache's
//! own `shrink`/`stats`/`tune`/`alloc_on(own cpu)` from the thread that holds
//! the token would wait for itself forever, and so can per-call use
//! (`alloc_on`/`free_on`/`lock_cpu`) of *another* claimed CPU from a token
//! holder: the per-call forms cannot serve the caller's own slot while they
//! wait, so two token holders doing that to each other deadlock.  A thread
//! that is a CPU allocates through its own token only.
//!
//! [`serve`]: CpuToken::serve

use core::fmt;
use core::ptr::NonNull;
use core::sync::atomic::Ordering;

use super::percpu::{ArrayCache, CpuSlot};
use super::KmemCache;
use crate::error::{AllocError, ClaimError, FreeError, TuneError};
use crate::page::PageSource;
use crate::stats::CacheStats;

/// The right to act as one CPU of one cache (see the module docs): its
/// `alloc`/`free` run no lock and no atomic read-modify-write.  Borrowed
/// from the cache, so it cannot outlive it or be used on another cache.
///
/// ```
/// use objcache::{CacheBuilder, SystemPageSource};
///
/// let cache = CacheBuilder::new("pgd", 32).cpus(2).build(SystemPageSource)?;
/// let mut cpu0 = cache.claim_cpu(0)?; // this thread is CPU 0 now
/// assert!(cache.claim_cpu(0).is_err()); // and nobody else is
/// let pgd = cpu0.alloc()?; // a pop from CPU 0's array
/// cpu0.free(pgd)?; // a push back
/// let st = cpu0.stats(); // the owner's own form: no hand-off to wait for
/// assert_eq!((st.alloc_hits + st.alloc_misses, st.live_objs), (1, 0));
/// drop(cpu0); // put_cpu(): the array stays, now reachable per call
/// cache.destroy()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct CpuToken<'a, P: PageSource> {
    cache: &'a KmemCache<P>,
    slot: &'a CpuSlot,
    cpu: usize,
    /// The slot lock is lent to requesters (only inside the token's remote
    /// operations, which take it back before they return).
    lent: bool,
}

impl<P: PageSource> KmemCache<P> {
    /// Claims CPU slot `cpu` for the calling thread until the returned token
    /// is dropped.  Fails if `cpu` is out of range or already claimed.  Waits
    /// for a per-call user or a remote operation that holds the slot.
    pub fn claim_cpu(&self, cpu: usize) -> Result<CpuToken<'_, P>, ClaimError> {
        let ncpus = self.cpus.len();
        let slot = self
            .cpus
            .get(cpu)
            .ok_or(ClaimError::InvalidCpu { cpu, ncpus })?;
        if slot
            .claimed
            .compare_exchange(0, 1, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            return Err(ClaimError::Claimed { cpu });
        }
        slot.lock_for_token();
        Ok(CpuToken {
            cache: self,
            slot,
            cpu,
            lent: false,
        })
    }
}

impl<'a, P: PageSource> CpuToken<'a, P> {
    /// The CPU slot this token owns.
    pub fn cpu(&self) -> usize {
        self.cpu
    }

    /// The cache this token belongs to.
    pub fn cache(&self) -> &'a KmemCache<P> {
        self.cache
    }

    /// `kmem_cache_alloc` on this CPU: a hit is a pop from the array.
    #[inline(always)]
    pub fn alloc(&mut self) -> Result<NonNull<u8>, AllocError> {
        self.serve();
        let (cache, slot) = (self.cache, self.slot);
        // SAFETY: a token holds its slot's lock for its whole life, except
        // inside `hand_off` and while lent inside the token's remote
        // operations, which take it back before they return; neither
        // touches the array without it.
        unsafe { slot.with_array(|ac| cache.alloc_from(ac)) }
    }

    /// `kmem_cache_free` on this CPU: a hit is a push onto the array.  The
    /// pointer is validated as by [`KmemCache::free_on`].
    #[inline(always)]
    pub fn free(&mut self, obj: NonNull<u8>) -> Result<(), FreeError> {
        let cache = self.cache;
        let e = cache.take_back(obj)?;
        self.serve();
        // SAFETY: a token holds its slot's lock for its whole life, except
        // inside `hand_off` and while lent inside the token's remote
        // operations, which take it back before they return; neither
        // touches the array without it.
        unsafe { self.slot.with_array(|ac| cache.free_into(ac, e)) };
        Ok(())
    }

    /// A quiescent point: hands the slot over to any requester waiting for
    /// it (a remote `shrink`, `stats`, `tune`, or a per-call user of this
    /// slot), then takes it back.  `alloc` and `free` do this themselves; a
    /// thread that keeps its token but stops allocating calls it so that
    /// remote operations do not wait for it.
    #[inline(always)]
    pub fn serve(&mut self) {
        // `hand_off` (cold, out of line) takes the slot, not the token, so
        // the fast paths keep the token's fields in registers.
        let slot = self.slot;
        if slot.pending() {
            slot.hand_off();
        }
    }

    /// While the token waits for another slot in one of its remote
    /// operations: if anyone wants this slot, release it without waiting
    /// (a blocking hand-off here could wait on a requester that is itself
    /// waiting for this token's thread).
    pub(crate) fn lend(&mut self) {
        if !self.lent && self.slot.pending() {
            self.slot.lend();
            self.lent = true;
        }
    }

    /// Takes a lent slot back (waiting for its requesters to be done).
    pub(crate) fn reclaim(&mut self) {
        if self.lent {
            self.slot.reclaim();
            self.lent = false;
        }
    }

    /// Runs `f` on this CPU's own array (the token's remote-operation forms).
    pub(crate) fn with_own_array<R>(&mut self, f: impl FnOnce(&mut ArrayCache) -> R) -> R {
        self.reclaim();
        // SAFETY: a token holds its slot's lock for its whole life, except
        // inside `hand_off` and while lent inside the token's remote
        // operations, which take it back before they return; neither
        // touches the array without it.
        // (`reclaim` just took back a lent lock.)
        unsafe { self.slot.with_array(f) }
    }

    /// [`KmemCache::shrink`] from the token's thread.
    pub fn shrink(&mut self) -> usize {
        let cache = self.cache;
        cache.shrink_with(Some(self))
    }

    /// [`KmemCache::stats`] from the token's thread.
    pub fn stats(&mut self) -> CacheStats {
        let cache = self.cache;
        cache.stats_with(Some(self))
    }

    /// [`KmemCache::tune`] from the token's thread.
    pub fn tune(&mut self, limit: usize, batchcount: usize) -> Result<(), TuneError> {
        let cache = self.cache;
        cache.tune_with(Some(self), limit, batchcount)
    }
}

impl<P: PageSource> Drop for CpuToken<'_, P> {
    /// `put_cpu()` for good: the array (with its objects and counters) stays
    /// in the slot, which per-call users and remote operations now take
    /// directly.
    fn drop(&mut self) {
        // A token is never dropped lent (remote operations reclaim), but
        // the claim must go whatever state the lock is in.
        self.reclaim();
        self.slot.release_token();
    }
}

impl<P: PageSource> fmt::Debug for CpuToken<'_, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CpuToken")
            .field("cache", &self.cache.name)
            .field("cpu", &self.cpu)
            .finish()
    }
}

#[cfg(all(test, feature = "std", not(loom)))]
mod tests {
    use super::super::testutil::pattern_cache;
    use crate::error::{ClaimError, FreeError};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::vec::Vec;

    #[test]
    fn claim_is_exclusive_and_released_on_drop() {
        let (cache, _, _) = pattern_cache(64);
        let t = cache.claim_cpu(0).unwrap();
        assert_eq!(t.cpu(), 0);
        assert!(matches!(
            cache.claim_cpu(0),
            Err(ClaimError::Claimed { cpu: 0 })
        ));
        assert!(matches!(
            cache.claim_cpu(2),
            Err(ClaimError::InvalidCpu { cpu: 2, ncpus: 2 })
        ));
        let t1 = cache.claim_cpu(1).unwrap();
        drop(t);
        drop(t1);
        let t = cache.claim_cpu(0).unwrap();
        drop(t);
    }

    #[test]
    fn token_path_hits_misses_and_counts() {
        let (cache, ctors, _) = pattern_cache(64);
        let mut t = cache.claim_cpu(1).unwrap();
        // tunables(4, 2): 10 allocs = misses and hits, 10 frees overflow.
        let objs: Vec<_> = (0..10).map(|_| t.alloc().unwrap()).collect();
        for o in &objs {
            assert!(cache.is_allocated(*o));
            t.free(*o).unwrap();
        }
        assert_eq!(t.free(objs[0]), Err(FreeError::DoubleFree));
        let st = t.stats();
        assert_eq!(st.live_objs, 0);
        assert_eq!(st.alloc_hits + st.alloc_misses, 10);
        assert_eq!(st.free_hits + st.free_misses, 10);
        assert!(st.alloc_misses > 0 && st.free_misses > 0);
        assert_eq!(st.cpu_cached, 4);
        assert_eq!(st.errors, 1);
        assert_eq!(ctors.load(Ordering::Relaxed), st.num_objs);
        // The token's own shrink drains its own array too.
        assert!(t.shrink() > 0);
        assert_eq!(t.stats().cpu_cached, 0);
        drop(t);
        let st = cache.destroy().unwrap();
        assert_eq!(st.ctor_calls, st.dtor_calls);
    }

    #[test]
    fn remote_operations_are_served_by_the_owner() {
        let (cache, _, _) = pattern_cache(64);
        let stop = AtomicBool::new(false);
        let mut t = cache.claim_cpu(0).unwrap();
        let held: Vec<_> = (0..3).map(|_| t.alloc().unwrap()).collect();
        for o in &held[1..] {
            t.free(*o).unwrap();
        }
        let cached = t.stats().cpu_cached;
        std::thread::scope(|s| {
            let remote = s.spawn(|| {
                // Each of these needs slot 0, which the token holds.
                let st = cache.stats();
                let p = cache.alloc_on(0).unwrap();
                cache.free_on(0, p).unwrap();
                cache.tune(8, 4).unwrap();
                let n = cache.shrink();
                stop.store(true, Ordering::Release);
                (st, n)
            });
            while !stop.load(Ordering::Acquire) {
                t.serve();
                std::hint::spin_loop();
            }
            let (st, _) = remote.join().unwrap();
            assert_eq!(st.live_objs, 1);
            assert_eq!(st.cpu_cached, cached);
        });
        // The token still works and its array was drained by the shrink.
        assert_eq!(t.stats().cpu_cached, 0);
        assert_eq!(t.stats().limit, 8);
        t.free(held[0]).unwrap();
        drop(t);
        let st = cache.destroy().unwrap();
        assert_eq!(st.ctor_calls, st.dtor_calls);
    }

    #[test]
    fn two_token_holders_draining_each_other_do_not_deadlock() {
        let (cache, _, _) = pattern_cache(64);
        std::thread::scope(|s| {
            for cpu in 0..2 {
                let cache = &cache;
                s.spawn(move || {
                    let mut t = cache.claim_cpu(cpu).unwrap();
                    for _ in 0..200 {
                        let p = t.alloc().unwrap();
                        t.free(p).unwrap();
                        t.shrink();
                        // Reading the other CPU's slot is part of the
                        // point (it must not deadlock); the figures are
                        // exact per slot, not one atomic snapshot of the
                        // cache (the other CPU may flush between the slab
                        // lists and its array being read), so the exact
                        // accounting is checked at the end.
                        let st = t.stats();
                        assert!(st.live_objs <= st.num_objs);
                    }
                });
            }
        });
        let st = cache.destroy().unwrap();
        assert_eq!(st.ctor_calls, st.dtor_calls);
        assert_eq!(st.alloc_hits + st.alloc_misses, 400);
    }
}
