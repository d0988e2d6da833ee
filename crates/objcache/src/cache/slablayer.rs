//! The slab layer behind the per-CPU arrays, under `list_lock`:
//! `cache_alloc_refill` (array ← shared array or slabs, growing the cache),
//! `cache_flusharray`/`free_block` (array → shared array or slabs, reaping
//! empty slabs above `free_limit`), `cache_grow` and `slab_destroy` (the
//! only places constructors and destructors run), and Bonwick & Adams's
//! contention-driven resizing of the arrays, decided on these same trips to
//! `list_lock`.

use alloc::vec::Vec;
use core::ptr::NonNull;
use core::sync::atomic::Ordering;

use super::percpu::ArrayCache;
use super::{free_limit, KmemCache};
use crate::error::AllocError;
use crate::page::{PageSource, PAGE_SIZE};
use crate::slab::{DeadSlab, Entry, Lists, NewSlab};
use crate::sync::MutexGuard;

impl<P: PageSource> KmemCache<P> {
    /// `cache_alloc_refill`: moves up to `batchcount` objects from the slab
    /// lists into `ac`, growing the cache if needed, and returns one of them.
    #[cold]
    pub(crate) fn refill(&self, ac: &mut ArrayCache) -> Result<Entry, AllocError> {
        let want = ac.batchcount.max(1);
        loop {
            {
                let (mut lists, contended) = self.lock_lists();
                ac.note_trip(contended);
                let avail = lists.shared.len();
                if avail > 0 {
                    // Take the most recently shared (cache-warm) objects.
                    let k = want.min(avail);
                    ac.entries.extend(lists.shared.drain(avail - k..));
                    break;
                }
                if lists.take(want, &mut ac.entries, &self.geo) > 0 {
                    break;
                }
            }
            // No free object anywhere: grow without holding the list lock
            // (constructors may take their own locks, e.g. `pgd_lock`).
            let new = self.grow()?;
            let base = new.pages.as_ptr() as usize;
            let mut lists = self.lists.lock();
            let shared = lists.insert(new, &self.geo);
            // Publish the pages only once the descriptor is initialised.
            for i in 0..self.geo.pages() {
                self.map
                    .set(base + i * PAGE_SIZE, shared.as_ptr() as *mut ());
            }
            lists.take(want, &mut ac.entries, &self.geo);
            if !ac.entries.is_empty() {
                break;
            }
        }
        ac.entries.pop().ok_or(AllocError::OutOfMemory(
            crate::page::PageAllocError::OutOfMemory,
        ))
    }

    /// `cache_grow`: gets pages and constructs every object in them.
    pub(crate) fn grow(&self) -> Result<NewSlab, AllocError> {
        let order = self.geo.order;
        let pages = self
            .source
            .alloc_pages(order)
            .map_err(AllocError::OutOfMemory)?;
        if !(pages.as_ptr() as usize).is_multiple_of(self.geo.slab_bytes()) {
            // SAFETY: just obtained from `alloc_pages(order)`, not yet used.
            unsafe { self.source.free_pages(pages, order) };
            return Err(AllocError::MisalignedPages);
        }
        let colour = self.counters.colour_next.fetch_add(1, Ordering::Relaxed) % self.geo.colours;
        let first = pages.as_ptr() as usize + colour * self.geo.colour_step;
        if let Some(ctor) = &self.ctor {
            for i in 0..self.geo.num {
                // SAFETY: object `i` lies inside the freshly allocated slab,
                // whose base is non-null.
                ctor(unsafe { NonNull::new_unchecked((first + i * self.geo.stride) as *mut u8) });
            }
        }
        // Counted per object constructed, whether or not there is a ctor.
        self.counters
            .ctor_calls
            .fetch_add(self.geo.num, Ordering::Relaxed);
        self.counters.grown.fetch_add(1, Ordering::Relaxed);
        Ok(NewSlab { pages, first })
    }

    /// `slab_destroy`: destructs every object and gives the pages back.
    pub(crate) fn destroy_slab(&self, dead: DeadSlab) {
        if let Some(dtor) = &self.dtor {
            for i in 0..self.geo.num {
                // SAFETY: object `i` lies inside the slab being destroyed,
                // whose base is non-null.
                dtor(unsafe {
                    NonNull::new_unchecked((dead.first + i * self.geo.stride) as *mut u8)
                });
            }
        }
        // Counted per object destructed, whether or not there is a dtor.
        self.counters
            .dtor_calls
            .fetch_add(self.geo.num, Ordering::Relaxed);
        // SAFETY: `dead.pages` came from `alloc_pages(geo.order)` in `grow`,
        // the slab is off the lists and out of the page map, and no object
        // of it is allocated or cached, so nothing refers to the pages.
        unsafe { self.source.free_pages(dead.pages, self.geo.order) };
        self.counters.reaped.fetch_add(1, Ordering::Relaxed);
    }

    /// Unregisters and removes slab `id` from the lists (list lock held).
    pub(crate) fn unlink_slab(&self, lists: &mut Lists, id: u32) -> Option<DeadSlab> {
        let pages = lists.slabs.get(id as usize)?.pages?;
        let base = pages.as_ptr() as usize;
        for i in 0..self.geo.pages() {
            self.map.set(base + i * PAGE_SIZE, core::ptr::null_mut());
        }
        lists.remove(id, &self.geo)
    }

    /// `cache_flusharray`: moves the `n` oldest entries of a per-CPU array to
    /// the shared array while it has room, and the rest back to their slabs
    /// (`free_block`), destroying slabs that become empty beyond `free_limit`.
    ///
    /// Returns whether `list_lock` was contended (held by another CPU).
    pub(crate) fn flush(&self, entries: &mut Vec<Entry>, n: usize, via_shared: bool) -> bool {
        let n = n.min(entries.len());
        if n == 0 {
            return false;
        }
        let mut dead = Vec::new();
        let contended;
        {
            let (mut lists, c) = self.lock_lists();
            contended = c;
            let mut rest = n;
            if via_shared {
                let k = rest.min(lists.shared_limit.saturating_sub(lists.shared.len()));
                lists.shared.extend(entries.drain(..k));
                rest -= k;
            }
            for e in entries.drain(..rest) {
                self.free_block(&mut lists, e, &mut dead);
            }
        }
        for d in dead {
            self.destroy_slab(d);
        }
        contended
    }

    /// Takes `list_lock`, reporting whether another CPU held it.
    pub(crate) fn lock_lists(&self) -> (MutexGuard<'_, Lists>, bool) {
        match self.lists.try_lock() {
            Some(g) => (g, false),
            None => (self.lists.lock(), true),
        }
    }

    /// Dynamic magazine resizing (Bonwick & Adams 2001, §3.6), on the
    /// array-miss path (slot lock held).  When this CPU's trips to
    /// `list_lock` keep finding it held by another CPU, the arrays are too
    /// small for the load: double the cache-wide size, up to `resize_cap`.
    /// Every CPU adopts the cache-wide size at its next miss, so the CPUs
    /// that never saw contention stop overflowing as well.
    #[inline(always)]
    pub(crate) fn maybe_resize(&self, ac: &mut ArrayCache) {
        let mut target = self.resize_limit.load(Ordering::Relaxed);
        if ac.contended >= self.resize_contention {
            target = self.double_resize_limit(ac.limit.max(target));
        }
        if ac.trips >= self.resize_window || ac.contended >= self.resize_contention {
            ac.trips = 0;
            ac.contended = 0;
        }
        if target > ac.limit {
            self.grow_array(ac, target);
        }
    }

    /// Doubles the cache-wide array size from `from`; returns the new one.
    #[cold]
    pub(crate) fn double_resize_limit(&self, from: usize) -> usize {
        let cap = self.resize_cap.load(Ordering::Relaxed);
        let want = from.saturating_mul(2).min(cap);
        let before = self.resize_limit.fetch_max(want, Ordering::Relaxed);
        if want > before {
            self.counters.resized.fetch_add(1, Ordering::Relaxed);
        }
        before.max(want)
    }

    /// Grows this CPU's array to `limit` (slot lock held), unless `tune`
    /// has turned resizing off since the size was chosen.
    #[cold]
    pub(crate) fn grow_array(&self, ac: &mut ArrayCache, limit: usize) {
        // `tune` clears `resize_cap` before it takes the slot locks, so a
        // CPU that runs after `tune` has been through its slot sees 0 here.
        let cap = self.resize_cap.load(Ordering::Relaxed);
        let limit = limit.min(cap);
        if limit <= ac.limit {
            return;
        }
        ac.limit = limit;
        ac.batchcount = limit.div_ceil(2);
        ac.entries.reserve(limit.saturating_sub(ac.entries.len()));
        let mut lists = self.lists.lock();
        let free = free_limit(self.flags, self.cpus.len(), ac.batchcount, self.geo.num);
        lists.free_limit = lists.free_limit.max(free);
        let shared = self.shared_factor.saturating_mul(ac.batchcount);
        lists.shared_limit = lists.shared_limit.max(shared);
    }

    /// Returns one object to its slab (list lock held).
    pub(crate) fn free_block(&self, lists: &mut Lists, e: Entry, dead: &mut Vec<DeadSlab>) {
        // The entry's slab is still registered (it has an object out of its
        // free stack), so the page-map lookup cannot fail for a real entry.
        let Ok((slab, idx)) = self.locate(e.obj) else {
            self.count_error();
            return;
        };
        let id = slab.id;
        match lists.put(id, idx, &self.geo) {
            Ok(false) => {}
            Ok(true) => {
                if let Some(d) = self.unlink_slab(lists, id) {
                    dead.push(d);
                }
            }
            Err(()) => self.count_error(),
        }
    }
}

#[cfg(all(test, feature = "std", not(loom)))]
mod tests {
    use super::super::{CacheBuilder, KmemCache, RESIZE_CONTENTION, RESIZE_MAX_FACTOR};
    use crate::page::SystemPageSource;
    use core::ptr::NonNull;
    use std::vec::Vec;

    /// Makes this thread's next `alloc_on(0)` a refill that finds
    /// `list_lock` held by another thread: `n` times.  Returns the objects.
    fn contended_refills(cache: &KmemCache<SystemPageSource>, n: u32) -> Vec<NonNull<u8>> {
        use std::sync::mpsc::channel;
        let mut objs = Vec::new();
        for _ in 0..n {
            // Empty the array: every cached object is a hit, the next a miss.
            let cached = cache.stats().cpu_cached;
            for _ in 0..cached {
                objs.push(cache.alloc_on(0).expect("alloc"));
            }
            let (held_tx, held_rx) = channel();
            std::thread::scope(|s| {
                s.spawn(|| {
                    let lists = cache.lists.lock();
                    held_tx.send(()).expect("send");
                    // Hold it until CPU 0's refill is under way (it holds
                    // its slot), then a little longer: a loaded machine may
                    // not run the allocating thread for a while.
                    while !cache.cpus[0].is_locked() {
                        std::thread::yield_now();
                    }
                    std::thread::sleep(std::time::Duration::from_millis(5));
                    drop(lists);
                });
                held_rx.recv().expect("recv");
                objs.push(cache.alloc_on(0).expect("alloc"));
            });
        }
        objs
    }

    #[test]
    fn array_grows_when_list_lock_is_contended() {
        let cache = CacheBuilder::new("resize", 4096)
            .cpus(2)
            .build(SystemPageSource)
            .expect("build");
        let (limit, batch) = (cache.stats().limit, cache.stats().batchcount);
        assert_eq!((limit, batch), (24, 12), "Linux default for 4 KiB");
        // One short of the threshold: no change.
        let mut objs = contended_refills(&cache, RESIZE_CONTENTION - 1);
        assert_eq!(cache.stats().limit, 24);
        assert_eq!(cache.stats().resized, 0);
        objs.extend(contended_refills(&cache, 1));
        let st = cache.stats();
        assert_eq!((st.limit, st.batchcount, st.resized), (48, 24, 1));
        // The size is cache-wide: CPU 1 never saw contention and adopts it
        // at its first miss.
        assert_eq!(cache.cpus[1].acquire().with(|ac| ac.limit), 24);
        objs.push(cache.alloc_on(1).expect("alloc"));
        assert_eq!(cache.cpus[1].acquire().with(|ac| ac.limit), 48);
        assert_eq!(cache.cpus[1].acquire().with(|ac| ac.batchcount), 24);
        // Grows up to RESIZE_MAX_FACTOR x the default and stops there.
        for _ in 0..4 {
            objs.extend(contended_refills(&cache, RESIZE_CONTENTION));
        }
        let st = cache.stats();
        assert_eq!(st.limit, 24 * RESIZE_MAX_FACTOR);
        assert_eq!(st.resized, 2);
        assert!(st.batchcount == st.limit / 2);
        for o in objs {
            cache.free_on(0, o).expect("free");
        }
        let st = cache.destroy().expect("destroy");
        assert_eq!(st.ctor_calls, st.dtor_calls);
    }

    #[test]
    fn uncontended_churn_and_fixed_tunables_never_resize() {
        // One thread overflowing its array on every batch: misses, but the
        // list lock is never contended, so nothing grows.
        let cache = CacheBuilder::new("churn", 4096)
            .cpus(1)
            .build(SystemPageSource)
            .expect("build");
        let mut objs = Vec::new();
        for _ in 0..200 {
            for _ in 0..32 {
                objs.push(cache.alloc_on(0).expect("alloc"));
            }
            for o in objs.drain(..) {
                cache.free_on(0, o).expect("free");
            }
        }
        let st = cache.stats();
        assert!(st.alloc_misses >= 200 && st.free_misses >= 200, "{st:?}");
        assert_eq!((st.limit, st.resized), (24, 0));
        // Tunables set by `tune` (or the builder) are the administrator's:
        // contention does not change them.
        cache.tune(24, 12).expect("tune");
        let objs = contended_refills(&cache, 2 * RESIZE_CONTENTION);
        assert_eq!((cache.stats().limit, cache.stats().resized), (24, 0));
        for o in objs {
            cache.free_on(0, o).expect("free");
        }
        let fixed = CacheBuilder::new("fixed", 4096)
            .cpus(1)
            .tunables(24, 12)
            .build(SystemPageSource)
            .expect("build");
        let objs = contended_refills(&fixed, 2 * RESIZE_CONTENTION);
        assert_eq!((fixed.stats().limit, fixed.stats().resized), (24, 0));
        for o in objs {
            fixed.free_on(0, o).expect("free");
        }
    }
}
