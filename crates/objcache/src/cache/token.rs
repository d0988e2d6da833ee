//! `CpuToken`: exclusive ownership of one CPU's array cache, as a type.
//!
//! In a kernel, `kmem_cache_alloc` runs with interrupts (or preemption) off,
//! so only the owning CPU can touch its `array_cache`, and a hit is a pop
//! from a plain array: no lock, no atomic instruction.  A [`CpuToken`] is
//! that `get_cpu()` made static: [`KmemCache::claim_cpu`] gives it to one
//! thread, which then acts as that CPU until it drops the token.  The token
//! holds the slot lock for its whole life, so its `alloc` and `free` are a
//! plain load of the slot's request word, the array pop or push, the
//! per-CPU statistics where they are on (a plain counter in the slot's
//! array) and the object's owned flag (a plain store): no lock and no
//! atomic read-modify-write.
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

use super::obj::{CacheId, Obj, ObjFreeError};
use super::percpu::{ArrayCache, CpuSlot};
use super::KmemCache;
use crate::error::{AllocError, ClaimError, FreeError, TuneError};
use crate::page::PageSource;
use crate::slab::{read_entry, write_entry, Entry};
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
    pub(super) cache: &'a KmemCache<P>,
    pub(super) slot: &'a CpuSlot,
    cpu: usize,
    /// The slot lock is lent to requesters (only inside the token's remote
    /// operations, which take it back before they return).
    lent: bool,
    /// The array's hot state while the token holds the slot (see [`Hot`]).
    pub(super) hot: Hot,
    /// The cache's id (`KmemCache::id`), which every handle this token
    /// makes carries and every handle it takes back is compared with: kept
    /// here, a load of the token, not of the cache through the token.
    pub(super) id: CacheId,
    /// Whether the cache has a `DEBUG_FREE` verify callback, which a
    /// handle's free must run (kept here for the same reason).
    pub(super) verifies: bool,
}

/// The hot part of the CPU's `array_cache`, kept in the token while it
/// holds the slot, as a CPU keeps `ac->avail` in a register across a run of
/// hits: the fast paths read and write these words instead of the
/// `ArrayCache` in the slot, so a compiler can keep them in registers
/// across an alloc/free loop (the array's length in memory would put two
/// store-to-load forwarding delays on every pair).  The slot's `ArrayCache`
/// is brought up to date ([`Hot::put`]) before anyone else may look at it
/// (a hand-off, a loan, the token's own slow paths and remote operations,
/// the drop) and the hot copy is re-read ([`Hot::get`]) after.
#[derive(Clone, Copy)]
pub(super) struct Hot {
    /// The array's first entry (its capacity is reserved up to `limit`).
    pub(super) base: *mut Entry,
    /// Entries in the array (`ac->avail`).
    pub(super) avail: usize,
    /// `ac->limit`.
    pub(super) limit: usize,
    /// `ArrayCache::count_hits`: a hit is counted in the slot's array
    /// itself (statistics are a debug option; without them a hit writes
    /// no counter at all, and no counter is carried from hit to hit).
    pub(super) count_hits: bool,
}

impl Hot {
    /// A hot copy of `ac` (no pending counts).
    #[inline(always)]
    fn get(ac: &mut ArrayCache) -> Hot {
        Hot {
            base: ac.entries.as_mut_ptr(),
            avail: ac.entries.len(),
            // `limit <= capacity` always (`ArrayCache::new`, `grow_array`
            // and `tune` reserve up to it); `min` keeps the fast path's
            // bound a bound on the allocation even if that ever broke.
            limit: ac.limit.min(ac.entries.capacity()),
            count_hits: ac.count_hits,
        }
    }

    /// Writes the hot copy back into `ac` (which it was taken from, with
    /// no change in between).
    #[inline(always)]
    fn put(&mut self, ac: &mut ArrayCache) {
        debug_assert_eq!(self.base, ac.entries.as_mut_ptr());
        debug_assert!(self.avail <= ac.entries.capacity());
        // SAFETY: entries `0..avail` are initialised: those below the
        // length `get` read were, and every slot from there to `avail` was
        // written by a fast-path push before `avail` grew past it.
        unsafe { ac.entries.set_len(self.avail) };
    }

    /// A hit of `alloc` on the token's parts (the batch's slow path pops
    /// one object at a time with it): the top entry popped and marked
    /// owned, unless the array is empty or a requester waits for the slot
    /// (then `None`, and nothing changed: the slow path's turn).  The token
    /// holding `slot` is the caller.  [`CpuToken::alloc`]'s own hit is the
    /// same code written inline in `alloc_entry`: through this `Option` the
    /// 2-level pgd pair measured 4–7 % slower (paired runs of otherwise
    /// identical code).
    #[inline(always)]
    pub(super) fn pop<P: PageSource>(
        &mut self,
        cache: &KmemCache<P>,
        slot: &CpuSlot,
    ) -> Option<Entry> {
        if self.avail != 0 && !slot.pending() {
            self.avail -= 1;
            if self.count_hits {
                // SAFETY: the token holding `slot` is the caller.
                unsafe { slot.with_array(|ac| ac.alloc_hits += 1) };
            }
            // SAFETY: `avail` entries from `base` are initialised (see
            // `put`) and the token holds the slot, so the array is ours;
            // `avail - 1 < avail`.
            let e = unsafe { read_entry(self.base.add(self.avail)) };
            cache.hand_out(e);
            return Some(e);
        }
        None
    }

    /// A hit of `free`: `e` (already taken back from its owner) pushed,
    /// unless the array is full or a requester waits (then `false`, and
    /// nothing changed).  The token holding `slot` is the caller.
    #[inline(always)]
    pub(super) fn push(&mut self, slot: &CpuSlot, e: Entry) -> bool {
        if self.avail < self.limit && !slot.pending() {
            // SAFETY: `avail < limit <= capacity`, so the slot is inside
            // the array's allocation, and the token holds the slot.
            unsafe { write_entry(self.base.add(self.avail), e) };
            self.avail += 1;
            if self.count_hits {
                // SAFETY: as in `pop`.
                unsafe { slot.with_array(|ac| ac.free_hits += 1) };
            }
            return true;
        }
        false
    }
}

// SAFETY: the token's only non-`Send` part is `Hot::base`, a pointer into
// its slot's array, which the token holds exclusively (the slot lock) for
// as long as the pointer is used; moving the token to another thread moves
// that right with it, as moving a `&mut` would.  Its other parts are shared
// references to the cache and its slot, which are `Sync` when `P` is.
unsafe impl<P: PageSource> Send for CpuToken<'_, P> where KmemCache<P>: Sync {}

impl<P: PageSource> KmemCache<P> {
    /// Claims CPU slot `cpu` for the calling thread until the returned token
    /// is dropped.  Fails if `cpu` is out of range or already claimed.  Waits
    /// for a per-call user or a remote operation that holds the slot.
    #[inline]
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
        // SAFETY: the lock was just taken for the token.
        let hot = unsafe { slot.with_array(Hot::get) };
        Ok(CpuToken {
            cache: self,
            slot,
            cpu,
            lent: false,
            hot,
            id: self.id,
            verifies: self.verify.is_some(),
        })
    }
}

/// Writes the token's hot copy back into its slot's `ArrayCache`, before
/// the slot may be looked at by anyone else (or by the ordinary paths).
/// The token holds the slot lock (it is neither lent nor inside a
/// hand-off).
#[inline(always)]
fn write_back<P: PageSource>(cache: &KmemCache<P>, slot: &CpuSlot, h: &mut Hot) {
    #[cfg(loom)]
    if cache.bug() == super::Bug::HandOffWithoutWriteBack && slot.pending() {
        return;
    }
    let _ = cache;
    // SAFETY: the token holds the slot lock (caller).
    unsafe { slot.with_array(|ac| h.put(ac)) };
}

/// The token's slow alloc path (empty array, or a requester waiting): the
/// slot's `ArrayCache` updated, any requester served, the ordinary
/// `alloc_from` (refill, resize), the hot copy re-read.  It takes the
/// token's parts, not the token, so the token never escapes the caller's
/// loop and its hot words can stay in registers there: the hot copy goes
/// in and comes back by value.
#[cold]
#[inline(never)]
pub(super) fn alloc_slow<P: PageSource>(
    cache: &KmemCache<P>,
    slot: &CpuSlot,
    mut h: Hot,
) -> (Hot, Result<Entry, AllocError>) {
    write_back(cache, slot, &mut h);
    if slot.pending() {
        slot.hand_off();
    }
    // SAFETY: as above (`hand_off` took the lock back).
    unsafe {
        slot.with_array(|ac| {
            let r = cache.alloc_entry_from(ac);
            (Hot::get(ac), r)
        })
    }
}

/// The token's slow free path (full array, or a requester waiting); see
/// [`alloc_slow`].
#[cold]
#[inline(never)]
pub(super) fn free_slow<P: PageSource>(
    cache: &KmemCache<P>,
    slot: &CpuSlot,
    mut h: Hot,
    e: Entry,
) -> Hot {
    write_back(cache, slot, &mut h);
    if slot.pending() {
        slot.hand_off();
    }
    // SAFETY: as above.
    unsafe {
        slot.with_array(|ac| {
            cache.free_into(ac, e);
            Hot::get(ac)
        })
    }
}

/// The token's drop: the slot taken back if lent (a token is never dropped
/// lent, remote operations reclaim, but the claim must go whatever state
/// the lock is in), the hot copy written back, the lock and the claim
/// released.
#[cold]
#[inline(never)]
fn release(slot: &CpuSlot, mut h: Hot, lent: bool) {
    if lent {
        slot.reclaim();
        // SAFETY: `reclaim` took the lock back; the requesters may have
        // changed the array, so the hot copy is stale: re-read it.
        h = unsafe { slot.with_array(Hot::get) };
    }
    // SAFETY: the token holds the slot lock.
    unsafe { slot.with_array(|ac| h.put(ac)) };
    slot.release_token();
}

/// A hand-off at a quiescent point: the array updated, the slot handed
/// over and taken back, the hot copy re-read.
#[cold]
#[inline(never)]
fn serve_slow<P: PageSource>(cache: &KmemCache<P>, slot: &CpuSlot, mut h: Hot) -> Hot {
    write_back(cache, slot, &mut h);
    slot.hand_off();
    // SAFETY: `hand_off` took the lock back.
    unsafe { slot.with_array(Hot::get) }
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
        self.alloc_entry().map(|e| e.obj)
    }

    /// `kmem_cache_free` on this CPU: a hit is a push onto the array.  The
    /// pointer is validated as by [`KmemCache::free_on`].
    #[inline(always)]
    pub fn free(&mut self, obj: NonNull<u8>) -> Result<(), FreeError> {
        let e = self.cache.take_back(obj)?;
        self.push(e);
        Ok(())
    }

    /// [`alloc`](Self::alloc), as an [`Obj`]: the object held as a value,
    /// which [`free_obj`](Self::free_obj) takes back without a lookup.
    #[inline(always)]
    pub fn alloc_obj(&mut self) -> Result<Obj, AllocError> {
        let e = self.alloc_entry()?;
        Ok(Obj {
            obj: e.obj,
            owned: e.owned,
            cache: self.id,
        })
    }

    /// `kmem_cache_free` of an [`Obj`]: no lookup and no double-free check,
    /// since the `Obj` proves both (see `obj.rs`); only that it belongs to
    /// this cache (one compare) and, in debug mode, the verify callback.
    /// A refused object comes back in the error, still allocated.
    #[inline(always)]
    pub fn free_obj(&mut self, obj: Obj) -> Result<(), ObjFreeError> {
        if obj.cache != self.id {
            return Err(ObjFreeError {
                obj,
                why: FreeError::Foreign,
            });
        }
        if let (true, Some(verify)) = (self.verifies, &self.cache.verify) {
            if let Err(why) = verify(obj.obj) {
                self.cache.count_error();
                return Err(ObjFreeError {
                    obj,
                    why: FreeError::Verify(why),
                });
            }
        }
        let e = obj.entry();
        // SAFETY: `e.owned` points into the `owned` map of a slab
        // descriptor of this cache (the `Obj` came from it), which lives
        // until the cache is dropped.
        unsafe { e.owned.as_ref() }.store(0, Ordering::Relaxed);
        self.push(e);
        Ok(())
    }

    /// The pop: an entry from the array, marked owned (the hit of
    /// [`Hot::pop`], written inline: see there).
    #[inline(always)]
    fn alloc_entry(&mut self) -> Result<Entry, AllocError> {
        let h = &mut self.hot;
        if h.avail != 0 && !self.slot.pending() {
            h.avail -= 1;
            if h.count_hits {
                // SAFETY: the token holds the slot (its lock).
                unsafe { self.slot.with_array(|ac| ac.alloc_hits += 1) };
            }
            // SAFETY: `avail` entries from `base` are initialised (see
            // `Hot::put`) and the token holds the slot, so the array is
            // ours; `avail - 1 < avail`.
            let e = unsafe { read_entry(h.base.add(h.avail)) };
            self.cache.hand_out(e);
            return Ok(e);
        }
        let (h, r) = alloc_slow(self.cache, self.slot, self.hot);
        self.hot = h;
        r
    }

    /// The push of an entry already taken back from its owner.
    #[inline(always)]
    fn push(&mut self, e: Entry) {
        if !self.hot.push(self.slot, e) {
            self.hot = free_slow(self.cache, self.slot, self.hot, e);
        }
    }

    /// A quiescent point: hands the slot over to any requester waiting for
    /// it (a remote `shrink`, `stats`, `tune`, or a per-call user of this
    /// slot), then takes it back.  `alloc` and `free` do this themselves; a
    /// thread that keeps its token but stops allocating calls it so that
    /// remote operations do not wait for it.
    #[inline(always)]
    pub fn serve(&mut self) {
        if self.slot.pending() {
            self.hot = serve_slow(self.cache, self.slot, self.hot);
        }
    }

    /// While the token waits for another slot in one of its remote
    /// operations: if anyone wants this slot, release it without waiting
    /// (a blocking hand-off here could wait on a requester that is itself
    /// waiting for this token's thread).
    pub(crate) fn lend(&mut self) {
        if !self.lent && self.slot.pending() {
            write_back(self.cache, self.slot, &mut self.hot);
            self.slot.lend();
            self.lent = true;
        }
    }

    /// Takes a lent slot back (waiting for its requesters to be done).
    pub(crate) fn reclaim(&mut self) {
        if self.lent {
            self.slot.reclaim();
            self.lent = false;
            // SAFETY: `reclaim` took the lock back; the requesters may have
            // changed the array.
            self.hot = unsafe { self.slot.with_array(Hot::get) };
        }
    }

    /// Runs `f` on this CPU's own array (the token's remote-operation forms).
    pub(crate) fn with_own_array<R>(&mut self, f: impl FnOnce(&mut ArrayCache) -> R) -> R {
        self.reclaim();
        let h = &mut self.hot;
        // SAFETY: a token holds its slot's lock for its whole life, except
        // inside `hand_off` and while lent inside the token's remote
        // operations, which take it back before they return; neither
        // touches the array without it.
        // (`reclaim` just took back a lent lock.)
        unsafe {
            self.slot.with_array(|ac| {
                h.put(ac);
                let r = f(ac);
                *h = Hot::get(ac);
                r
            })
        }
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
    /// Inlined, with the work out of line on the token's parts: a token
    /// whose address no call ever sees can live in registers (see `Hot`).
    #[inline(always)]
    fn drop(&mut self) {
        release(self.slot, self.hot, self.lent);
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
#[cfg(all(test, feature = "std", not(loom)))]
mod fast_path_tests {
    use super::super::testutil::{pattern_cache, verify_cache};
    use crate::cache::CacheBuilder;
    use crate::error::FreeError;
    use crate::page::SystemPageSource;

    #[test]
    fn hits_are_counted_in_the_slots_array() {
        let (cache, _, _) = pattern_cache(64);
        let mut t = cache.claim_cpu(0).unwrap();
        for _ in 0..100 {
            let p = t.alloc().unwrap();
            t.free(p).unwrap();
        }
        let st = t.stats();
        assert!(st.hit_stats);
        assert_eq!((st.alloc_hits, st.free_hits, st.live_objs), (99, 100, 0));
        assert_eq!((st.alloc_misses, st.cpu_cached), (1, 2));
        drop(t);
        // After the drop the slot's own figures are the same.
        let st = cache.stats();
        assert_eq!((st.alloc_hits, st.free_hits, st.cpu_cached), (99, 100, 2));
    }

    #[test]
    fn without_stats_hits_cost_no_counter_and_read_zero() {
        let cache = CacheBuilder::new("nostats", 32)
            .cpus(1)
            .tunables(4, 2)
            .stats(false)
            .build(SystemPageSource)
            .unwrap();
        let mut t = cache.claim_cpu(0).unwrap();
        for _ in 0..10 {
            let p = t.alloc().unwrap();
            t.free(p).unwrap();
        }
        let st = t.stats();
        assert!(!st.hit_stats);
        assert_eq!((st.alloc_hits, st.free_hits), (0, 0));
        assert_eq!((st.alloc_misses, st.live_objs), (1, 0));
        drop(t);
        let p = cache.alloc_on(0).unwrap();
        cache.free_on(0, p).unwrap();
        assert_eq!(cache.stats().alloc_hits, 0);
    }

    #[test]
    fn obj_handles_round_trip_and_stay_allocated_while_held() {
        let (cache, _, _) = pattern_cache(64);
        let mut t = cache.claim_cpu(1).unwrap();
        let objs: std::vec::Vec<_> = (0..10).map(|_| t.alloc_obj().unwrap()).collect();
        for o in &objs {
            assert!(cache.is_allocated(o.as_ptr()));
            // SAFETY: a live 64-byte object of the cache, constructed to 0xA5.
            assert_eq!(unsafe { o.as_ptr().as_ptr().read() }, 0xA5);
        }
        let ptrs: std::vec::Vec<_> = objs.iter().map(|o| o.as_ptr()).collect();
        for o in objs {
            t.free_obj(o).unwrap();
        }
        for p in ptrs {
            assert!(!cache.is_allocated(p));
            // The pointer API sees an Obj's free: a second free is refused.
            assert_eq!(t.free(p), Err(FreeError::DoubleFree));
        }
        // into_raw hands the object to the pointer API.
        let p = t.alloc_obj().unwrap().into_raw();
        assert!(cache.is_allocated(p));
        t.free(p).unwrap();
        let st = t.stats();
        assert_eq!((st.live_objs, st.alloc_hits + st.alloc_misses), (0, 11));
        drop(t);
        let st = cache.destroy().unwrap();
        assert_eq!(st.ctor_calls, st.dtor_calls);
    }

    #[test]
    fn an_obj_of_another_cache_comes_back_refused() {
        let (a, _, _) = pattern_cache(64);
        let (b, _, _) = pattern_cache(64);
        let mut ta = a.claim_cpu(0).unwrap();
        let mut tb = b.claim_cpu(0).unwrap();
        let o = tb.alloc_obj().unwrap();
        let err = ta.free_obj(o).unwrap_err();
        assert_eq!(err.why, FreeError::Foreign);
        assert!(b.is_allocated(err.obj.as_ptr()));
        tb.free_obj(err.obj).unwrap();
        assert_eq!(tb.stats().live_objs, 0);
        assert_eq!(ta.stats().live_objs, 0);
    }

    #[test]
    fn an_obj_outliving_its_cache_is_refused_by_a_later_cache() {
        // The handle borrows nothing: it may outlive its cache (its slab is
        // leaked, as the drop documents); a cache built later, even if it
        // sits where the first one did, has another id and refuses it
        // without following its pointers.
        let o = {
            let (a, _, _) = pattern_cache(64);
            let mut t = a.claim_cpu(0).unwrap();
            t.alloc_obj().unwrap()
        };
        let (b, _, _) = pattern_cache(64);
        let mut t = b.claim_cpu(0).unwrap();
        let err = t.free_obj(o).unwrap_err();
        assert_eq!(err.why, FreeError::Foreign);
        assert_eq!(t.stats().live_objs, 0);
    }

    #[test]
    fn debug_verify_runs_on_free_obj() {
        let cache = verify_cache();
        let mut t = cache.claim_cpu(0).unwrap();
        let o = t.alloc_obj().unwrap();
        // SAFETY: we own the object.
        unsafe { o.as_ptr().as_ptr().write(1) };
        let err = t.free_obj(o).unwrap_err();
        assert!(matches!(err.why, FreeError::Verify(_)));
        let o = err.obj;
        // SAFETY: still ours (the refused free handed it back).
        unsafe { o.as_ptr().as_ptr().write(0) };
        t.free_obj(o).unwrap();
        let st = t.stats();
        assert_eq!((st.live_objs, st.errors), (0, 1));
    }
}
