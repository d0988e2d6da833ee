//! Bulk allocation on a CPU's token: `kmem_cache_alloc_bulk` and
//! `kmem_cache_free_bulk` for a count fixed at compile time.
//!
//! PAE's `pgd_alloc` takes three pmds from `pmd_cache` and its `pgd_free`
//! gives them back. One at a time, each of the three pays its own checks
//! around a two-word copy: the array's bound, the slot's request word (the
//! drain IPI's stand-in), the statistics switch, and at free the cache
//! compare and the debug switch. Linux grew `kmem_cache_alloc_bulk` (4.3)
//! for callers that take several objects of one cache at once; here a
//! batch of `N` is one bound check, one request-word load and one switch,
//! then `N` pops and `N` owned flags; at free one cache compare for the
//! batch. The protocol is the single pop's and push's (a batch checks the
//! request word before it touches the array, as each of them does), so the
//! hand-off of `percpu.rs` and its loom models cover it unchanged; the
//! token models run a batch as well.
//!
//! A batch is all or nothing, as Linux's (which frees what it got and
//! returns 0): [`CpuToken::alloc_bulk`] either hands out `N` objects or
//! none, whatever point of a refill failed. Its handle, [`Objs`], is
//! [`Obj`]'s contract for `N` objects of one cache with the cache named
//! once; [`Objs::into_objs`] splits it into single handles.

use core::fmt;
use core::ptr::NonNull;
use core::sync::atomic::Ordering;

use super::obj::{CacheId, Obj};
use super::percpu::CpuSlot;
use super::token::{alloc_slow, free_slow, CpuToken, Hot};
use super::KmemCache;
use crate::error::{AllocError, FreeError};
use crate::page::PageSource;
use crate::slab::{read_entry, write_entry, Entry};
use crate::sync::AtomicU8;

/// `N` allocated objects of one cache, owned as one value: [`Obj`] for a
/// batch (see the module docs). Made by [`CpuToken::alloc_bulk`], consumed
/// by [`CpuToken::free_bulk`]; dropping it leaks the objects.
#[must_use = "Objs not given back with free_bulk stay allocated"]
pub struct Objs<const N: usize> {
    /// The objects, in the order `alloc_bulk` popped them.
    obj: [NonNull<u8>; N],
    /// Their owned flags (kept apart from `obj`, as in [`Obj`]).
    owned: [NonNull<AtomicU8>; N],
    /// The cache that made them.
    cache: CacheId,
}

// SAFETY: as for `Obj`: the exclusive right to `N` objects of a `Sync`
// cache, whose owned flags only the holder writes.
unsafe impl<const N: usize> Send for Objs<N> {}

impl<const N: usize> Objs<N> {
    /// The objects' addresses, in the order they were allocated.
    #[inline(always)]
    pub fn as_ptrs(&self) -> [NonNull<u8>; N] {
        self.obj
    }

    /// Gives up the handle: the objects stay allocated, and the pointer API
    /// takes them back one by one.
    #[inline(always)]
    pub fn into_raw(self) -> [NonNull<u8>; N] {
        self.obj
    }

    /// One [`Obj`] per object, to give back one at a time.
    pub fn into_objs(self) -> [Obj; N] {
        let cache = self.cache;
        core::array::from_fn(|i| Obj {
            obj: self.obj[i],
            owned: self.owned[i],
            cache,
        })
    }

    /// The `i`th object's entry.
    #[inline(always)]
    fn entry(&self, i: usize) -> Entry {
        Entry {
            obj: self.obj[i],
            owned: self.owned[i],
        }
    }
}

impl<const N: usize> fmt::Debug for Objs<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Objs").field(&self.obj).finish()
    }
}

/// [`CpuToken::free_bulk`] refused some of a batch: those come back, one
/// handle each, still allocated; the rest were freed.
#[derive(Debug, thiserror::Error)]
#[error("{why}")]
pub struct ObjsFreeError<const N: usize> {
    /// `Some` for each object refused (all of them for another cache's
    /// batch, the ones whose debug check failed otherwise), `None` for
    /// each one freed.
    pub refused: [Option<Obj>; N],
    /// Why: [`FreeError::Foreign`] or [`FreeError::Verify`] (the first
    /// object's to fail).
    #[source]
    pub why: FreeError,
}

impl<P: PageSource> CpuToken<'_, P> {
    /// `kmem_cache_alloc_bulk` of `N` objects on this CPU: a hit is one
    /// check and `N` pops. All or nothing: on failure every object taken
    /// so far has gone back.
    #[inline(always)]
    pub fn alloc_bulk<const N: usize>(&mut self) -> Result<Objs<N>, AllocError> {
        if let Some(objs) = self.hot.pop_n(self.cache, self.slot, self.id) {
            return Ok(objs);
        }
        let (h, r) = alloc_bulk_slow(self.cache, self.slot, self.hot);
        self.hot = h;
        r
    }

    /// `kmem_cache_free_bulk` of a batch on this CPU: one cache compare and
    /// `N` pushes, in reverse, so that the next batch pops the same objects
    /// in the same order. In debug mode each object's verify callback runs
    /// first; the ones it refuses come back in the error, the others are
    /// freed. Nothing here takes the token's address (the paths off the
    /// hit get its parts), so a run of hits keeps its words in registers.
    #[inline(always)]
    pub fn free_bulk<const N: usize>(&mut self, objs: Objs<N>) -> Result<(), ObjsFreeError<N>> {
        if objs.cache != self.id {
            return Err(ObjsFreeError {
                refused: objs.into_objs().map(Some),
                why: FreeError::Foreign,
            });
        }
        if self.verifies {
            return self.free_bulk_verified(objs);
        }
        for owned in &objs.owned {
            // SAFETY: `owned` points into the `owned` map of a slab
            // descriptor of this cache (the batch came from it), which
            // lives until the cache is dropped.
            unsafe { owned.as_ref() }.store(0, Ordering::Relaxed);
        }
        if !self.hot.push_n(self.slot, &objs) {
            // One at a time, each entry passed in registers: the batch
            // handed to an out-of-line call would have to live in memory
            // on the hit path too.
            for i in (0..N).rev() {
                self.hot = push_or_slow(self.cache, self.slot, self.hot, objs.entry(i));
            }
        }
        Ok(())
    }

    /// `free_bulk` in debug mode: each object verified as `free_obj` does,
    /// those that pass freed, those that fail handed back. Inline, one
    /// out-of-line call per object on the token's parts: the batch handed
    /// to a call would have to live in memory on the hit path as well.
    #[inline(always)]
    fn free_bulk_verified<const N: usize>(
        &mut self,
        objs: Objs<N>,
    ) -> Result<(), ObjsFreeError<N>> {
        let (mut why, mut refused) = (None, [const { None }; N]);
        for (o, slot) in objs.into_objs().into_iter().zip(&mut refused) {
            let r;
            (self.hot, r) = free_verified(self.cache, self.slot, self.hot, o.entry());
            if let Err(w) = r {
                why.get_or_insert(w);
                *slot = Some(o);
            }
        }
        match why {
            None => Ok(()),
            Some(why) => Err(ObjsFreeError { refused, why }),
        }
    }
}

/// One object of a batch in debug mode: verified (a failure counted and
/// returned, the object untouched), then given back as `free_obj` does.
#[cold]
#[inline(never)]
fn free_verified<P: PageSource>(
    cache: &KmemCache<P>,
    slot: &CpuSlot,
    h: Hot,
    e: Entry,
) -> (Hot, Result<(), FreeError>) {
    if let Err(why) = cache.verify_obj(e.obj) {
        return (h, Err(why));
    }
    // SAFETY: `e.owned` points into the `owned` map of a slab descriptor
    // of this cache (the batch came from it), which lives until the cache
    // is dropped.
    unsafe { e.owned.as_ref() }.store(0, Ordering::Relaxed);
    (push_or_slow(cache, slot, h, e), Ok(()))
}

impl Hot {
    /// A batch hit of `alloc_bulk`: the top `N` entries, the topmost first,
    /// each marked owned, unless fewer than `N` are there or a requester
    /// waits (then `None`, and nothing changed). The token holding `slot`
    /// is the caller. The handle is filled in place, word by word: arrays
    /// built apart and moved in would be copied with 16-byte loads of
    /// 8-byte stores (no store-to-load forwarding), as `Obj`'s docs tell.
    #[inline(always)]
    fn pop_n<P: PageSource, const N: usize>(
        &mut self,
        cache: &KmemCache<P>,
        slot: &CpuSlot,
        id: CacheId,
    ) -> Option<Objs<N>> {
        if self.avail < N || slot.pending() {
            return None;
        }
        self.avail -= N;
        if self.count_hits {
            // SAFETY: the token holding `slot` is the caller.
            unsafe { slot.with_array(|ac| ac.alloc_hits += N) };
        }
        let mut objs = Objs {
            obj: [NonNull::dangling(); N],
            owned: [NonNull::dangling(); N],
            cache: id,
        };
        // All `N` read before any is marked: a flag's store could alias
        // the array words as far as the compiler knows, and would make it
        // load them again.
        let top = self.avail + N - 1;
        for i in 0..N {
            // SAFETY: entries `0..avail + N` are initialised (see
            // `Hot::put`) and the token holds the slot; `top - i` is one of
            // the `N` just taken off.
            let e = unsafe { read_entry(self.base.add(top - i)) };
            objs.obj[i] = e.obj;
            objs.owned[i] = e.owned;
        }
        for i in 0..N {
            cache.hand_out(objs.entry(i));
        }
        Some(objs)
    }

    /// A batch hit of `free_bulk`: the batch pushed in reverse (its first
    /// object on top), unless fewer than `N` slots are free or a requester
    /// waits (then `false`, and nothing changed).
    #[inline(always)]
    fn push_n<const N: usize>(&mut self, slot: &CpuSlot, objs: &Objs<N>) -> bool {
        if self.avail + N > self.limit || slot.pending() {
            return false;
        }
        for i in 0..N {
            // SAFETY: `avail + i < avail + N <= limit <= capacity`, so the
            // slot is inside the array's allocation, and the token holds
            // the slot.
            unsafe { write_entry(self.base.add(self.avail + i), objs.entry(N - 1 - i)) };
        }
        self.avail += N;
        if self.count_hits {
            // SAFETY: as in `pop_n`.
            unsafe { slot.with_array(|ac| ac.free_hits += N) };
        }
        true
    }
}

/// `alloc_bulk` past a batch hit: one object at a time, each a hit or the
/// token's slow path (refill, hand-off); a failure gives back what this
/// batch took, so the batch is all or nothing. Takes and returns the hot
/// copy by value, as [`alloc_slow`] does.
#[cold]
#[inline(never)]
fn alloc_bulk_slow<P: PageSource, const N: usize>(
    cache: &KmemCache<P>,
    slot: &CpuSlot,
    mut h: Hot,
) -> (Hot, Result<Objs<N>, AllocError>) {
    let mut objs = Objs {
        obj: [NonNull::dangling(); N],
        owned: [NonNull::dangling(); N],
        cache: cache.id,
    };
    for i in 0..N {
        let r = match h.pop(cache, slot) {
            Some(e) => Ok(e),
            None => {
                let r;
                (h, r) = alloc_slow(cache, slot, h);
                r
            }
        };
        match r {
            Ok(e) => {
                objs.obj[i] = e.obj;
                objs.owned[i] = e.owned;
            }
            Err(err) => {
                for j in (0..i).rev() {
                    let e = objs.entry(j);
                    // SAFETY: the entry was handed out a moment ago by this
                    // cache and nobody else saw it.
                    unsafe { e.owned.as_ref() }.store(0, Ordering::Relaxed);
                    h = push_or_slow(cache, slot, h, e);
                }
                return (h, Err(err));
            }
        }
    }
    (h, Ok(objs))
}

/// One push of an entry already taken back: a hit or [`free_slow`].
#[inline(always)]
fn push_or_slow<P: PageSource>(cache: &KmemCache<P>, slot: &CpuSlot, mut h: Hot, e: Entry) -> Hot {
    if h.push(slot, e) {
        h
    } else {
        free_slow(cache, slot, h, e)
    }
}

#[cfg(all(test, feature = "std", not(loom)))]
mod tests {
    use super::super::testutil::{pattern_cache, verify_cache};
    use super::super::CacheBuilder;
    use crate::error::FreeError;
    use crate::page::{FaultyPageSource, SystemPageSource};
    use std::collections::HashSet;
    use std::vec::Vec;

    #[test]
    fn a_batch_is_n_distinct_live_objects_and_comes_back_in_order() {
        let (cache, _, _) = pattern_cache(64);
        let mut t = cache.claim_cpu(0).unwrap();
        // Misses first (an empty array), then hits: tunables(4, 2).
        for round in 0..6 {
            let objs = t.alloc_bulk::<3>().unwrap();
            let ptrs = objs.as_ptrs();
            let distinct: HashSet<_> = ptrs.iter().collect();
            assert_eq!(distinct.len(), 3, "round {round}");
            for p in ptrs {
                assert!(cache.is_allocated(p));
                // SAFETY: a live 64-byte object, constructed to 0xA5.
                assert_eq!(unsafe { p.as_ptr().read() }, 0xA5);
            }
            t.free_bulk(objs).unwrap();
            for p in ptrs {
                assert!(!cache.is_allocated(p));
            }
            // Pushed in reverse: the next batch pops the same objects in
            // the same order (the array has room for 3 from round 1 on).
            if round > 0 {
                let again = t.alloc_bulk::<3>().unwrap();
                assert_eq!(again.as_ptrs(), ptrs, "round {round}");
                t.free_bulk(again).unwrap();
            }
        }
        let st = t.stats();
        assert_eq!(st.live_objs, 0);
        assert_eq!(st.alloc_hits + st.alloc_misses, 3 * 11);
        assert_eq!(st.free_hits + st.free_misses, 3 * 11);
        assert!(st.alloc_hits > 0 && st.free_hits > 0);
        drop(t);
        let st = cache.destroy().unwrap();
        assert_eq!(st.ctor_calls, st.dtor_calls);
    }

    #[test]
    fn a_batch_splits_into_single_handles_and_raw_pointers() {
        let (cache, _, _) = pattern_cache(64);
        let mut t = cache.claim_cpu(1).unwrap();
        let [a, b, c] = t.alloc_bulk::<3>().unwrap().into_objs();
        t.free_obj(b).unwrap();
        t.free_obj(a).unwrap();
        let p = c.into_raw();
        assert!(cache.is_allocated(p));
        t.free(p).unwrap();
        for p in t.alloc_bulk::<2>().unwrap().into_raw() {
            t.free(p).unwrap();
        }
        assert_eq!(t.stats().live_objs, 0);
    }

    #[test]
    fn a_failed_batch_takes_nothing_at_any_point() {
        // Page-sized objects, one per slab: a batch of 3 on an empty array
        // needs two or three new slabs, so each page allocation can fail.
        for k in 1..=4 {
            let cache = CacheBuilder::new("pmd", 4096)
                .align(4096)
                .cpus(1)
                .tunables(4, 2)
                .build(FaultyPageSource::new(SystemPageSource))
                .unwrap();
            let mut t = cache.claim_cpu(0).unwrap();
            cache.page_source().fail_nth(k);
            match t.alloc_bulk::<3>() {
                Ok(objs) => {
                    assert!(k > 3, "the {k}th page allocation failed unnoticed");
                    t.free_bulk(objs).unwrap();
                }
                Err(_) => assert_eq!(cache.page_source().injected(), 1),
            }
            assert_eq!(t.stats().live_objs, 0, "fail at page {k}");
            // What the failed batch gave back is there to allocate.
            cache.page_source().fail_nth(0);
            let objs = t.alloc_bulk::<3>().unwrap();
            t.free_bulk(objs).unwrap();
            // Every page comes back: no slab is stranded by the failure.
            t.shrink();
            assert_eq!(
                cache.page_source().outstanding_pages(),
                0,
                "fail at page {k}"
            );
            drop(t);
            let st = cache.destroy().unwrap();
            assert_eq!(st.ctor_calls, st.dtor_calls);
        }
    }

    #[test]
    fn another_caches_batch_is_refused_whole() {
        let (a, _, _) = pattern_cache(64);
        let (b, _, _) = pattern_cache(64);
        let mut ta = a.claim_cpu(0).unwrap();
        let mut tb = b.claim_cpu(0).unwrap();
        let objs = ta.alloc_bulk::<3>().unwrap();
        let ptrs = objs.as_ptrs();
        let err = tb.free_bulk(objs).unwrap_err();
        assert_eq!(err.why, FreeError::Foreign);
        let back: Vec<_> = err.refused.into_iter().flatten().collect();
        assert_eq!(back.iter().map(|o| o.as_ptr()).collect::<Vec<_>>(), ptrs);
        assert_eq!(tb.stats().live_objs, 0);
        for o in back {
            assert!(a.is_allocated(o.as_ptr()));
            ta.free_obj(o).unwrap();
        }
        assert_eq!(ta.stats().live_objs, 0);
    }

    #[test]
    fn debug_verify_refuses_only_the_bad_objects_of_a_batch() {
        let cache = verify_cache();
        let mut t = cache.claim_cpu(0).unwrap();
        let objs = t.alloc_bulk::<3>().unwrap();
        let [a, b, c] = objs.as_ptrs();
        // SAFETY: we own the object.
        unsafe { b.as_ptr().write(1) };
        let err = t.free_bulk(objs).unwrap_err();
        assert!(matches!(err.why, FreeError::Verify(_)));
        assert!(!cache.is_allocated(a) && !cache.is_allocated(c));
        let [None, Some(bad), None] = err.refused else {
            panic!("only the middle object refused: {:?}", err.refused);
        };
        assert_eq!(bad.as_ptr(), b);
        // SAFETY: still ours (the refused free handed it back).
        unsafe { b.as_ptr().write(0) };
        t.free_obj(bad).unwrap();
        let st = t.stats();
        assert_eq!((st.live_objs, st.errors), (0, 1));
    }
}
