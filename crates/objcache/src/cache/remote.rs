//! Remote operations: the ones that need every CPU's array, not just the
//! caller's (`drain_cpu_caches`, `kmem_cache_shrink`, the `/proc/slabinfo`
//! write `tune`, statistics, `kmem_cache_destroy`), and the checker's walk.
//!
//! Linux runs the per-CPU part of these on each CPU by IPI
//! (`smp_call_function_all_cpus`).  Here each slot is visited in turn: a
//! slot nobody has claimed is taken directly (its lock), a claimed one is
//! handed over by its token holder at its next operation or quiescent point
//! (the protocol in `percpu.rs`).  Called from a token's thread (the
//! `CpuToken` forms), the token's own array is used in place and its
//! requests are served while the walk waits for the other CPUs.
//!
//! `for_each_object` and `is_allocated` need no hand-off: they read the
//! slab descriptors' owned flags (atomic), and an object sitting in a
//! per-CPU array is a free object of its slab like any other.

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::ptr::NonNull;
use core::sync::atomic::Ordering;

use super::percpu::ArrayCache;
use super::token::CpuToken;
use super::{free_limit, DestroyError, KmemCache, MAX_LIMIT};
use crate::error::TuneError;
use crate::page::PageSource;
use crate::slab::DeadSlab;
use crate::stats::CacheStats;

/// Deliberately broken protocol variants for the negative `loom` models
/// (`--cfg loom` only).
#[cfg(loom)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Bug {
    /// The protocol as written.
    None = 0,
    /// `stats` reads a claimed CPU's counters in place, without waiting for
    /// the token holder's hand-off ("reading is harmless").
    ReadWithoutHandOff = 1,
    /// A token holder waiting for another CPU's slot serves its own with
    /// the blocking hand-off instead of lending it.
    BlockingServeWhileWaiting = 2,
    /// A token hands its slot over without first writing its hot copy of
    /// the array (length, counters) back into the slot ("the requester
    /// only needs the objects").
    HandOffWithoutWriteBack = 3,
}

impl<P: PageSource> KmemCache<P> {
    /// `--cfg loom` only: switch to a deliberately broken protocol variant.
    #[cfg(loom)]
    pub fn inject_bug(&self, bug: Bug) {
        self.bug.store(bug as u8, Ordering::Relaxed);
    }

    #[cfg(loom)]
    pub(crate) fn bug(&self) -> Bug {
        match self.bug.load(Ordering::Relaxed) {
            1 => Bug::ReadWithoutHandOff,
            2 => Bug::BlockingServeWhileWaiting,
            3 => Bug::HandOffWithoutWriteBack,
            _ => Bug::None,
        }
    }

    /// Runs `f` on every CPU's array in turn, each under the hand-off
    /// protocol; `me` is the caller's own token, if it holds one.
    pub(crate) fn each_array(
        &self,
        mut me: Option<&mut CpuToken<'_, P>>,
        mut f: impl FnMut(&mut ArrayCache),
    ) {
        for (cpu, slot) in self.cpus.iter().enumerate() {
            match me.as_deref_mut() {
                Some(t) if t.cpu() == cpu => t.with_own_array(&mut f),
                #[cfg(loom)]
                Some(t) if self.bug() == Bug::BlockingServeWhileWaiting => {
                    slot.acquire_while_serving(|| t.serve()).with(&mut f)
                }
                Some(t) => slot.acquire_while_serving(|| t.lend()).with(&mut f),
                None => slot.acquire().with(&mut f),
            }
        }
        if let Some(t) = me {
            t.reclaim();
        }
    }

    /// Flushes every per-CPU array and the shared array completely
    /// (`drain_cpu_caches`), leaving every free object on its slab.
    fn drain_cpu_caches(&self, me: Option<&mut CpuToken<'_, P>>) {
        self.each_array(me, |ac| {
            let n = ac.entries.len();
            self.flush(&mut ac.entries, n, false);
        });
        let mut dead = Vec::new();
        {
            let mut lists = self.lists.lock();
            while let Some(e) = lists.shared.pop() {
                self.free_block(&mut lists, e, &mut dead);
            }
        }
        for d in dead {
            self.destroy_slab(d);
        }
    }

    /// `kmem_cache_shrink`: drains the per-CPU arrays and destroys every
    /// empty slab (running the destructor on each of its objects).  Returns
    /// the number of slabs given back.  A claimed CPU's array is drained by
    /// hand-off: this waits for its token holder's next operation or
    /// [`CpuToken::serve`].
    pub fn shrink(&self) -> usize {
        self.shrink_with(None)
    }

    pub(crate) fn shrink_with(&self, me: Option<&mut CpuToken<'_, P>>) -> usize {
        self.drain_cpu_caches(me);
        let dead: Vec<DeadSlab> = {
            let mut lists = self.lists.lock();
            let ids: Vec<u32> = lists.free.clone();
            ids.into_iter()
                .filter_map(|id| self.unlink_slab(&mut lists, id))
                .collect()
        };
        let n = dead.len();
        for d in dead {
            self.destroy_slab(d);
        }
        n
    }

    /// Changes the per-CPU `limit` and `batchcount` (`/proc/slabinfo` write),
    /// flushing arrays that hold more than the new limit (claimed CPUs by
    /// hand-off, as in [`shrink`](Self::shrink)).
    pub fn tune(&self, limit: usize, batchcount: usize) -> Result<(), TuneError> {
        self.tune_with(None, limit, batchcount)
    }

    pub(crate) fn tune_with(
        &self,
        me: Option<&mut CpuToken<'_, P>>,
        limit: usize,
        batchcount: usize,
    ) -> Result<(), TuneError> {
        if batchcount == 0 || batchcount > limit || limit > MAX_LIMIT {
            return Err(TuneError { limit, batchcount });
        }
        // Fixed tunables from now on: no CPU may adopt a resized limit.
        self.resize_cap.store(0, Ordering::Relaxed);
        self.each_array(me, |ac| {
            ac.limit = limit;
            ac.batchcount = batchcount;
            let excess = ac.entries.len().saturating_sub(limit);
            self.flush(&mut ac.entries, excess, false);
            let room = limit - ac.entries.len();
            ac.entries.reserve(room);
        });
        let mut dead = Vec::new();
        {
            let mut lists = self.lists.lock();
            lists.free_limit = free_limit(self.flags, self.cpus.len(), batchcount, self.geo.num);
            lists.shared_limit = self.shared_factor.saturating_mul(batchcount);
            while lists.shared.len() > lists.shared_limit {
                if let Some(e) = lists.shared.pop() {
                    self.free_block(&mut lists, e, &mut dead);
                }
            }
        }
        for d in dead {
            self.destroy_slab(d);
        }
        Ok(())
    }

    /// A snapshot of the cache's figures and counters.  Each CPU's figures
    /// are read by hand-off when the CPU is claimed (as in
    /// [`shrink`](Self::shrink)), so they are exact for that CPU.
    pub fn stats(&self) -> CacheStats {
        self.stats_with(None)
    }

    pub(crate) fn stats_with(&self, me: Option<&mut CpuToken<'_, P>>) -> CacheStats {
        let mut s = CacheStats {
            name: self.name.clone(),
            object_size: self.geo.size,
            buffer_size: self.geo.stride,
            align: self.geo.align,
            objs_per_slab: self.geo.num,
            pages_per_slab: self.geo.pages(),
            ncpus: self.cpus.len(),
            hit_stats: self.count_hits,
            ..CacheStats::default()
        };
        let mut add = |ac: &ArrayCache| {
            s.limit = s.limit.max(ac.limit);
            s.batchcount = s.batchcount.max(ac.batchcount);
            s.cpu_cached += ac.entries.len();
            s.alloc_hits += ac.alloc_hits;
            s.alloc_misses += ac.alloc_misses;
            s.free_hits += ac.free_hits;
            s.free_misses += ac.free_misses;
        };
        #[cfg(loom)]
        if self.bug() == Bug::ReadWithoutHandOff && me.is_none() {
            for slot in self.cpus.iter() {
                if slot.claimed.load(Ordering::Relaxed) != 0 {
                    // SAFETY: none: this is the broken step the negative
                    // model must catch (see `CpuSlot::peek_unlocked`).
                    unsafe { slot.peek_unlocked(&mut add) };
                } else {
                    slot.acquire().with(|ac| add(ac));
                }
            }
            return self.finish_stats(s);
        }
        self.each_array(me, |ac| add(ac));
        self.finish_stats(s)
    }

    /// The cache-wide part of `stats` (list lock, counters).
    fn finish_stats(&self, mut s: CacheStats) -> CacheStats {
        {
            let lists = self.lists.lock();
            s.full_slabs = lists.full.len();
            s.partial_slabs = lists.partial.len();
            s.free_slabs = lists.free.len();
            s.num_slabs = s.full_slabs + s.partial_slabs + s.free_slabs;
            s.active_slabs = s.full_slabs + s.partial_slabs;
            s.num_objs = s.num_slabs * self.geo.num;
            s.active_objs = s.num_objs - lists.free_objects;
            s.shared_avail = lists.shared.len();
        }
        s.shared_factor = self.shared_factor;
        s.live_objs = s.active_objs.saturating_sub(s.cpu_cached + s.shared_avail);
        s.ctor_calls = self.counters.ctor_calls.load(Ordering::Relaxed);
        s.dtor_calls = self.counters.dtor_calls.load(Ordering::Relaxed);
        s.grown = self.counters.grown.load(Ordering::Relaxed);
        s.reaped = self.counters.reaped.load(Ordering::Relaxed);
        s.resized = self.counters.resized.load(Ordering::Relaxed);
        s.errors = self.counters.errors.load(Ordering::Relaxed);
        s
    }

    /// `kmem_cache_destroy`: requires that no object is allocated.  Drains the
    /// per-CPU arrays, destructs every object and returns every page; the
    /// final statistics are returned.  With live objects the cache is handed
    /// back in the error, unchanged except that its per-CPU arrays are drained.
    /// (No token can exist: tokens borrow the cache.)
    pub fn destroy(self) -> Result<CacheStats, DestroyError<P>> {
        self.drain_cpu_caches(None);
        let live = {
            let lists = self.lists.lock();
            lists.slabs.iter().map(|s| s.inuse).sum::<usize>()
        };
        if live > 0 {
            return Err(DestroyError {
                live,
                cache: Box::new(self),
            });
        }
        self.shrink();
        Ok(self.stats())
    }

    /// Calls `f(obj, allocated)` for every object of every slab, allocated
    /// (held by a user) or free (in a slab, the shared array or a per-CPU
    /// array — still in constructed state). This is how a checker enumerates
    /// *cached* objects without trusting any list the cache's user keeps.
    /// Holds the list lock, so `f` must not call back into this cache.
    pub fn for_each_object(&self, mut f: impl FnMut(NonNull<u8>, bool)) {
        let lists = self.lists.lock();
        for slab in lists.slabs.iter() {
            if slab.pages.is_none() {
                continue;
            }
            // SAFETY: descriptors live until the cache is dropped (`&self`).
            let shared = unsafe { slab.shared.as_ref() };
            let first = shared.first.load(Ordering::Acquire);
            if first == 0 {
                continue;
            }
            for i in 0..self.geo.num {
                let addr = first + i * self.geo.stride;
                if let Some(obj) = NonNull::new(addr as *mut u8) {
                    f(obj, shared.owned.get(i).load(Ordering::Relaxed) != 0);
                }
            }
        }
    }

    /// Whether `obj` is currently allocated from this cache (held by a user).
    pub fn is_allocated(&self, obj: NonNull<u8>) -> bool {
        self.locate(obj)
            .map(|(s, i)| s.owned.get(i).load(Ordering::Relaxed) != 0)
            .unwrap_or(false)
    }
}

#[cfg(all(test, feature = "std", not(loom)))]
mod tests {
    use super::super::testutil::pattern_cache;
    use std::vec::Vec;

    #[test]
    fn shrink_and_slabinfo() {
        let (cache, _, _) = pattern_cache(4096);
        let objs: Vec<_> = (0..10).map(|_| cache.alloc().unwrap()).collect();
        let st = cache.stats();
        assert_eq!((st.num_slabs, st.live_objs), (10, 10));
        for o in objs {
            cache.free(o).unwrap();
        }
        assert!(cache.shrink() > 0);
        let st = cache.stats();
        assert_eq!((st.num_slabs, st.active_objs), (0, 0));
        assert_eq!(st.ctor_calls, st.dtor_calls);
        assert_eq!(cache.page_source().outstanding_pages(), 0);
        assert!(crate::slabinfo(&[st]).contains("test "));
    }

    #[test]
    fn for_each_object_sees_cached_and_live_objects() {
        let (cache, _, _) = pattern_cache(4096);
        let objs: Vec<_> = (0..5).map(|_| cache.alloc().unwrap()).collect();
        cache.free(objs[0]).unwrap();
        let (mut live, mut cached) = (0, 0);
        cache.for_each_object(|p, allocated| {
            assert_eq!(allocated, cache.is_allocated(p));
            if allocated {
                live += 1;
            } else {
                cached += 1;
            }
        });
        assert_eq!(live, 4);
        assert_eq!(live + cached, cache.stats().num_objs);
    }

    #[test]
    fn tune_validates_and_flushes() {
        let (cache, _, _) = pattern_cache(32);
        assert_eq!(cache.align(), 32);
        assert!(cache.tune(4, 5).is_err());
        assert!(cache.tune(0, 0).is_err());
        cache.tune(64, 32).unwrap();
        let objs: Vec<_> = (0..64).map(|_| cache.alloc().unwrap()).collect();
        for o in objs {
            cache.free(o).unwrap();
        }
        assert_eq!(cache.stats().cpu_cached, 64);
        cache.tune(8, 4).unwrap();
        assert_eq!(cache.stats().cpu_cached, 8);
    }

    #[test]
    fn destroy_with_live_objects_is_refused() {
        let (cache, _, _) = pattern_cache(128);
        let a = cache.alloc().unwrap();
        let err = cache.destroy().unwrap_err();
        assert_eq!(err.live, 1);
        let cache = err.cache;
        cache.free(a).unwrap();
        let st = cache.destroy().unwrap();
        assert_eq!(st.ctor_calls, st.dtor_calls);
    }
}
