//! `kmem_cache`: the object cache proper, and its per-call paths.
//!
//! A [`KmemCache`] owns slabs of constructed objects (see [`crate::slab`]) and,
//! in front of them, one `array_cache` per CPU (Linux 2.5; Bonwick–Adams
//! magazines, with Linux 2.6's shared array as the depot): a LIFO stack of
//! free, constructed objects of at most `limit` entries, where `limit` grows
//! when CPUs contend on `list_lock` ([`ResizePolicy`]).  `alloc` pops from the
//! local array; when it is empty, `batchcount` objects are moved in from the
//! slab lists (growing the cache by one slab if they have none).  `free`
//! pushes onto the local array; when it is full, the `batchcount` oldest
//! entries are flushed back to their slabs first.  Objects never leave
//! constructed state on either path.
//!
//! The parts, one concept each: `builder` (creating a cache), `percpu` (the
//! per-CPU arrays, the slot lock and the hand-off protocol, `lock_cpu`),
//! `token` (a claimed CPU: the zero-atomic path), `slablayer` (refill,
//! flush, grow, reap and resizing under `list_lock`), `remote` (drain,
//! shrink, tune, stats, destroy, the checker's walk).  This file holds the
//! cache itself and the per-call `alloc_on`/`free_on` paths they share.
//!
//! Lock order: per-CPU slot lock, then `list_lock`.  Constructors run with
//! the slot lock held but not the list lock; destructors run with neither
//! held, except when called from a per-CPU flush (slot lock held).

mod builder;
mod bulk;
mod obj;
mod percpu;
mod remote;
mod slablayer;
#[cfg(all(test, feature = "std", not(loom)))]
mod testutil;
mod token;

use alloc::boxed::Box;
use alloc::string::String;
use core::fmt;
use core::ptr::NonNull;
use core::sync::atomic::Ordering;

pub(crate) use builder::free_limit;
pub use builder::{
    CacheBuilder, Ctor, Dtor, ResizePolicy, SlabFlags, Verify, MAX_LIMIT, RESIZE_CONTENTION,
    RESIZE_MAX_FACTOR, RESIZE_WINDOW,
};
pub use bulk::{Objs, ObjsFreeError};
pub use obj::{Obj, ObjFreeError};
pub use percpu::CpuCache;
#[cfg(loom)]
pub use remote::Bug;
pub use token::CpuToken;

use crate::error::{AllocError, FreeError};
use crate::page::{PageSource, PAGE_SIZE};
use crate::pagemap::PageMap;
use crate::slab::{pop_entry, push_entry, Entry, Geometry, Lists, SlabShared};
use crate::sync::{AtomicUsize, Mutex};
use percpu::{ArrayCache, CpuSlot};

/// Cache-wide counters; updated on slow paths only.
#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) ctor_calls: AtomicUsize,
    pub(crate) dtor_calls: AtomicUsize,
    pub(crate) grown: AtomicUsize,
    pub(crate) reaped: AtomicUsize,
    pub(crate) resized: AtomicUsize,
    pub(crate) errors: AtomicUsize,
    pub(crate) colour_next: AtomicUsize,
}

/// An object cache (Linux `kmem_cache_t`) over page source `P`.
///
/// See the [crate docs](crate) for the object-state contract.
pub struct KmemCache<P: PageSource> {
    /// Its identity for [`Obj`] handles (never reused).
    pub(crate) id: obj::CacheId,
    pub(crate) name: String,
    pub(crate) geo: Geometry,
    pub(crate) flags: SlabFlags,
    pub(crate) ctor: Option<Ctor>,
    pub(crate) dtor: Option<Dtor>,
    pub(crate) verify: Option<Verify>,
    pub(crate) cpu_id: fn() -> usize,
    pub(crate) source: P,
    /// Page frame → slab descriptor (`virt_to_page` + `GET_PAGE_SLAB`).
    pub(crate) map: PageMap,
    /// `list_lock`: protects the full/partial/free slab lists, every slab
    /// descriptor's free stack and counts, and page-map updates; taken on
    /// per-CPU refill/flush and on grow/shrink, never on the fast path.
    pub(crate) lists: Mutex<Lists>,
    pub(crate) cpus: Box<[CpuSlot]>,
    /// [`ResizePolicy::contention`].
    pub(crate) resize_contention: u32,
    /// [`ResizePolicy::window`].
    pub(crate) resize_window: u32,
    /// The largest `limit` dynamic resizing may set; 0 when resizing is off
    /// (tunables fixed by the builder or by `tune`: the administrator's
    /// choice).  Read on the array-miss path only.
    pub(crate) resize_cap: AtomicUsize,
    /// The cache-wide array size dynamic resizing has reached (Bonwick and
    /// Adams's per-cache magazine size): a CPU whose array is smaller adopts
    /// it at its next refill or flush.  Only ever grows.
    pub(crate) resize_limit: AtomicUsize,
    /// Shared array capacity in batches.
    pub(crate) shared_factor: usize,
    pub(crate) counters: Counters,
    /// [`CacheBuilder::stats`]: the per-CPU hit counters are kept.
    pub(crate) count_hits: bool,
    /// `--cfg loom` only: the negative models' broken protocol variant.
    #[cfg(loom)]
    pub(crate) bug: core::sync::atomic::AtomicU8,
}

impl<P: PageSource> fmt::Debug for KmemCache<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KmemCache")
            .field("name", &self.name)
            .field("object_size", &self.geo.size)
            .field("align", &self.geo.align)
            .field("ncpus", &self.cpus.len())
            .finish_non_exhaustive()
    }
}

/// `destroy` refused: objects are still allocated.  The cache is handed back
/// unchanged (dropping it leaks the slabs that hold live objects).
#[derive(thiserror::Error)]
#[error("cache {} still has {live} live objects", .cache.name)]
pub struct DestroyError<P: PageSource> {
    /// Objects still held by users.
    pub live: usize,
    /// The cache, still usable.
    pub cache: Box<KmemCache<P>>,
}

impl<P: PageSource> fmt::Debug for DestroyError<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DestroyError")
            .field("live", &self.live)
            .field("cache", &self.cache.name)
            .finish()
    }
}

impl<P: PageSource> KmemCache<P> {
    /// Cache name.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// Requested object size.
    pub fn object_size(&self) -> usize {
        self.geo.size
    }
    /// Effective object alignment.
    pub fn align(&self) -> usize {
        self.geo.align
    }
    /// Objects per slab.
    pub fn objs_per_slab(&self) -> usize {
        self.geo.num
    }
    /// Pages per slab.
    pub fn pages_per_slab(&self) -> usize {
        self.geo.pages()
    }
    /// Number of CPU slots.
    pub fn ncpus(&self) -> usize {
        self.cpus.len()
    }
    /// The page source.
    pub fn page_source(&self) -> &P {
        &self.source
    }
    /// The slot that `alloc()`/`free()` use for the calling thread.
    pub fn this_cpu(&self) -> usize {
        (self.cpu_id)() % self.cpus.len()
    }

    /// `kmem_cache_alloc` on the calling thread's CPU slot.
    #[inline]
    pub fn alloc(&self) -> Result<NonNull<u8>, AllocError> {
        self.alloc_on(self.this_cpu())
    }

    /// `kmem_cache_free` on the calling thread's CPU slot.
    #[inline]
    pub fn free(&self, obj: NonNull<u8>) -> Result<(), FreeError> {
        self.free_on(self.this_cpu(), obj)
    }

    /// Allocates a constructed object through CPU slot `cpu`.
    #[inline]
    pub fn alloc_on(&self, cpu: usize) -> Result<NonNull<u8>, AllocError> {
        let ncpus = self.cpus.len();
        let slot = self
            .cpus
            .get(cpu)
            .ok_or(AllocError::InvalidCpu { cpu, ncpus })?;
        slot.acquire().with(|ac| self.alloc_from(ac))
    }

    /// Pops an object from `ac` and marks it owned by the caller, refilling
    /// the array first if it is empty (array lock held).
    #[inline(always)]
    pub(crate) fn alloc_from(&self, ac: &mut ArrayCache) -> Result<NonNull<u8>, AllocError> {
        self.alloc_entry_from(ac).map(|e| e.obj)
    }

    /// [`alloc_from`](Self::alloc_from), returning the whole entry (the
    /// token's `alloc_obj` keeps it in the `Obj`).
    #[inline(always)]
    pub(crate) fn alloc_entry_from(&self, ac: &mut ArrayCache) -> Result<Entry, AllocError> {
        match pop_entry(&mut ac.entries) {
            Some(e) => {
                if ac.count_hits {
                    ac.alloc_hits += 1;
                }
                self.hand_out(e);
                Ok(e)
            }
            None => self.alloc_miss(ac),
        }
    }

    /// `alloc_from` with an empty array: refill, then maybe resize.
    #[cold]
    #[inline(never)]
    pub(crate) fn alloc_miss(&self, ac: &mut ArrayCache) -> Result<Entry, AllocError> {
        ac.alloc_misses += 1;
        let e = self.refill(ac);
        self.maybe_resize(ac);
        let e = e?;
        self.hand_out(e);
        Ok(e)
    }

    /// Marks an object taken from an array as owned by the caller.
    #[inline(always)]
    pub(crate) fn hand_out(&self, e: Entry) -> NonNull<u8> {
        // SAFETY: `e.owned` points into the `owned` map of a slab descriptor,
        // which lives until the cache is dropped (`&self`).
        unsafe { e.owned.as_ref() }.store(1, Ordering::Relaxed);
        e.obj
    }

    /// Finds the slab descriptor and index of `obj` without reading it.
    #[inline(always)]
    pub(crate) fn locate(&self, obj: NonNull<u8>) -> Result<(&SlabShared, usize), FreeError> {
        let addr = obj.as_ptr() as usize;
        // Fast path: the page map's direct-mapped hint, accepted only if the
        // descriptor it names is in use for the slab that contains `addr`
        // (slabs are naturally aligned to `slab_bytes`, so the slab of an
        // address is its address rounded down).  That is exactly what the
        // tree walk below would return, read at the same kind of instant.
        let hint = self.map.hint(addr) as *const SlabShared;
        if !hint.is_null() {
            // SAFETY: as below: hints, like map leaves, only ever hold
            // pointers to this cache's slab descriptors, which live until
            // `Drop` (needs `&mut self`).
            let slab = unsafe { &*hint };
            let first = slab.first.load(Ordering::Acquire);
            if first != 0 && (first ^ addr) >> self.geo.slab_shift == 0 {
                let off = addr.checked_sub(first).ok_or(FreeError::NotObjectStart)?;
                let idx = self.geo.index_of(off).ok_or(FreeError::NotObjectStart)?;
                return Ok((slab, idx));
            }
        }
        self.locate_slow(addr)
    }

    /// `locate` through the page-map tree (the hint missed).
    #[inline(never)]
    pub(crate) fn locate_slow(&self, addr: usize) -> Result<(&SlabShared, usize), FreeError> {
        let p = self.map.lookup(addr) as *const SlabShared;
        if p.is_null() {
            return Err(FreeError::Foreign);
        }
        // SAFETY: the page map only holds pointers to slab descriptors of
        // this cache, which are freed only in `Drop` (needs `&mut self`).
        let slab = unsafe { &*p };
        let first = slab.first.load(Ordering::Acquire);
        if first == 0 {
            return Err(FreeError::Foreign); // raced with a slab being reaped
        }
        let off = addr.checked_sub(first).ok_or(FreeError::NotObjectStart)?;
        let idx = self.geo.index_of(off).ok_or(FreeError::NotObjectStart)?;
        Ok((slab, idx))
    }

    /// Returns a constructed object through CPU slot `cpu`.
    ///
    /// The pointer is validated against this cache's slabs without being
    /// dereferenced; foreign pointers, interior pointers and double frees are
    /// rejected and leave the cache unchanged.  In debug mode the verify
    /// callback runs first and a failure leaves the object with the caller.
    #[inline]
    pub fn free_on(&self, cpu: usize, obj: NonNull<u8>) -> Result<(), FreeError> {
        let ncpus = self.cpus.len();
        let Some(slot) = self.cpus.get(cpu) else {
            return Err(FreeError::InvalidCpu { cpu, ncpus });
        };
        let e = self.take_back(obj)?;
        slot.acquire().with(|ac| self.free_into(ac, e));
        Ok(())
    }

    /// Validates `obj` and takes it back from its owner (no array lock).
    #[inline(always)]
    pub(crate) fn take_back(&self, obj: NonNull<u8>) -> Result<Entry, FreeError> {
        let (slab, idx) = self.locate(obj).inspect_err(|_| self.count_error())?;
        // SAFETY: `locate` returns `idx < geo.num` (`Geometry::index_of`).
        let owned = unsafe { slab.owned.get_unchecked(idx) };
        // Double-free detection. In debug mode an atomic exchange, so even
        // two CPUs freeing the same object at the same instant are caught;
        // otherwise a plain load and store (no locked instruction on the
        // fast path), which catches every double free that is not itself a
        // simultaneous race between two CPUs.
        let was_owned = match &self.verify {
            Some(verify) => self.take_back_debug(verify, obj, owned)?,
            None => {
                let v = owned.load(Ordering::Relaxed);
                owned.store(0, Ordering::Relaxed);
                v
            }
        };
        if was_owned == 0 {
            self.count_error();
            return Err(FreeError::DoubleFree);
        }
        Ok(Entry {
            obj,
            owned: NonNull::from(owned),
        })
    }

    /// Debug mode's part of `take_back`: refuses an object that is not
    /// allocated or fails `verify`, then clears its owned flag with an
    /// atomic exchange and returns the old value.
    #[inline(never)]
    pub(crate) fn take_back_debug(
        &self,
        verify: &Verify,
        obj: NonNull<u8>,
        owned: &crate::sync::AtomicU8,
    ) -> Result<u8, FreeError> {
        if owned.load(Ordering::Relaxed) == 0 {
            self.count_error();
            return Err(FreeError::DoubleFree);
        }
        if let Err(why) = verify(obj) {
            self.count_error();
            return Err(FreeError::Verify(why));
        }
        Ok(owned.swap(0, Ordering::Relaxed))
    }

    /// Pushes a taken-back object onto `ac`, flushing first if it is full
    /// (array lock held).
    #[inline(always)]
    pub(crate) fn free_into(&self, ac: &mut ArrayCache, e: Entry) {
        if ac.entries.len() >= ac.limit {
            ac.free_misses += 1;
            let n = ac.batchcount;
            let contended = self.flush(&mut ac.entries, n, true);
            ac.note_trip(contended);
            self.maybe_resize(ac);
        } else if ac.count_hits {
            ac.free_hits += 1;
        }
        // SAFETY: `len < limit` now (a full array was just flushed by
        // `batchcount >= 1`), and the array's capacity is reserved up to
        // `limit` by `ArrayCache::new`, `grow_array` and `tune`.
        unsafe { push_entry(&mut ac.entries, e) };
    }

    pub(crate) fn count_error(&self) {
        self.counters.errors.fetch_add(1, Ordering::Relaxed);
    }

    /// Debug mode's check of an object held as a handle on its way back
    /// (`free_bulk`): the verify callback, a failure counted. Nothing to do
    /// outside debug mode. `CpuToken::free_obj` writes the same check
    /// inline: through this `Result` the PAE pair measured 2–5 % slower in
    /// paired runs.
    #[inline(always)]
    pub(crate) fn verify_obj(&self, obj: NonNull<u8>) -> Result<(), FreeError> {
        if let Some(verify) = &self.verify {
            if let Err(why) = verify(obj) {
                self.count_error();
                return Err(FreeError::Verify(why));
            }
        }
        Ok(())
    }

    /// `virt_to_page`: the page-aligned address of the 4 KiB page holding
    /// `obj`, if `obj` points anywhere into a slab of this cache.
    pub fn page_of(&self, obj: NonNull<u8>) -> Result<NonNull<u8>, FreeError> {
        if self.map.lookup(obj.as_ptr() as usize).is_null() {
            return Err(FreeError::Foreign);
        }
        let page = (obj.as_ptr() as usize) & !(PAGE_SIZE - 1);
        // SAFETY: `obj` lies in a slab page; that page's address is >= the
        // slab's (non-null) base address, hence non-null.
        Ok(unsafe { NonNull::new_unchecked(page as *mut u8) })
    }
}

impl<P: PageSource> Drop for KmemCache<P> {
    /// Gives back every slab that holds no allocated object (running the
    /// destructors); slabs with objects still allocated are leaked rather
    /// than freed under their users.
    fn drop(&mut self) {
        self.shrink();
        self.lists.lock().free_descriptors();
    }
}

#[cfg(all(test, feature = "std", not(loom)))]
mod tests {
    use super::testutil::pattern_cache;
    use super::*;
    use crate::page::SystemPageSource;
    use core::sync::atomic::AtomicUsize as StdAtomic;
    use std::vec::Vec;

    #[test]
    fn free_objects_keep_constructed_state() {
        let (cache, c, d) = pattern_cache(4096);
        let objs: Vec<_> = (0..20).map(|_| cache.alloc_on(0).unwrap()).collect();
        for o in &objs {
            cache.free_on(1, *o).unwrap();
        }
        // Flushed through arrays and lists many times; never re-constructed,
        // never overwritten by the allocator.
        for _ in 0..5 {
            let objs: Vec<_> = (0..20).map(|_| cache.alloc_on(1).unwrap()).collect();
            for o in &objs {
                // SAFETY: allocated object of 4096 bytes.
                let bytes = unsafe { core::slice::from_raw_parts(o.as_ptr(), 4096) };
                assert!(bytes.iter().all(|&b| b == 0xA5));
                cache.free_on(0, *o).unwrap();
            }
        }
        let st = cache.stats();
        assert_eq!(st.ctor_calls, st.grown * st.objs_per_slab);
        let st = cache.destroy().unwrap();
        assert_eq!(st.ctor_calls, st.dtor_calls);
        assert_eq!(c.load(Ordering::Relaxed), d.load(Ordering::Relaxed));
    }

    #[test]
    fn typed_free_errors() {
        let (cache, _, _) = pattern_cache(64);
        let a = cache.alloc().unwrap();
        assert_eq!(a.as_ptr() as usize % 64, 0);
        let mut local = 0u64;
        assert_eq!(
            cache.free(NonNull::from(&mut local).cast()),
            Err(FreeError::Foreign)
        );
        // SAFETY: pointer arithmetic within the slab, never dereferenced.
        let inner = unsafe { NonNull::new_unchecked(a.as_ptr().add(8)) };
        assert_eq!(cache.free(inner), Err(FreeError::NotObjectStart));
        assert_eq!(
            cache.page_of(inner).unwrap().as_ptr() as usize,
            a.as_ptr() as usize & !4095
        );
        assert!(cache.is_allocated(a));
        cache.free(a).unwrap();
        assert!(!cache.is_allocated(a));
        assert_eq!(cache.free(a), Err(FreeError::DoubleFree));
        assert!(matches!(
            cache.alloc_on(7),
            Err(AllocError::InvalidCpu { cpu: 7, ncpus: 2 })
        ));
        assert_eq!(cache.stats().errors, 3);
    }

    /// Hands out single pages exactly `HINT_STRIDE` pages apart, so that
    /// every slab collides in the page map's direct-mapped hint table.
    struct CollidingPages {
        base: usize,
        next: StdAtomic,
    }

    const HINT_STRIDE: usize = 1024;
    const REGION_PAGES: usize = 3 * HINT_STRIDE + 1;

    impl CollidingPages {
        fn new() -> Self {
            let layout =
                std::alloc::Layout::from_size_align(REGION_PAGES * PAGE_SIZE, PAGE_SIZE).unwrap();
            // SAFETY: non-zero size; freed in `Drop` with the same layout.
            let base = unsafe { std::alloc::alloc(layout) } as usize;
            assert_ne!(base, 0);
            Self {
                base,
                next: StdAtomic::new(0),
            }
        }
        fn page(&self, i: usize) -> NonNull<u8> {
            NonNull::new((self.base + i * HINT_STRIDE * PAGE_SIZE) as *mut u8).unwrap()
        }
    }

    impl Drop for CollidingPages {
        fn drop(&mut self) {
            let layout =
                std::alloc::Layout::from_size_align(REGION_PAGES * PAGE_SIZE, PAGE_SIZE).unwrap();
            // SAFETY: allocated in `new` with this layout.
            unsafe { std::alloc::dealloc(self.base as *mut u8, layout) }
        }
    }

    impl PageSource for CollidingPages {
        fn alloc_pages(&self, order: u32) -> Result<NonNull<u8>, crate::PageAllocError> {
            assert_eq!(order, 0);
            let i = self.next.fetch_add(1, Ordering::Relaxed);
            if i >= 3 {
                return Err(crate::PageAllocError::OutOfMemory);
            }
            Ok(self.page(i))
        }
        unsafe fn free_pages(&self, _addr: NonNull<u8>, _order: u32) {}
    }

    #[test]
    fn colliding_page_map_hints_fall_back_to_the_tree() {
        let cache = CacheBuilder::new("collide", 4096)
            .tunables(1, 1)
            .build(CollidingPages::new())
            .unwrap();
        let a = cache.alloc().unwrap();
        let b = cache.alloc().unwrap();
        let src = cache.page_source();
        assert_eq!((a, b), (src.page(0), src.page(1)));
        // The hint slot of page 0 now names b's slab: a is found by the walk.
        assert!(cache.is_allocated(a) && cache.is_allocated(b));
        // SAFETY: pointer arithmetic only; never dereferenced.
        let inner = unsafe { NonNull::new_unchecked(a.as_ptr().add(64)) };
        assert_eq!(cache.free(inner), Err(FreeError::NotObjectStart));
        assert_eq!(cache.free(src.page(2)), Err(FreeError::Foreign));
        cache.free(a).unwrap();
        assert_eq!(cache.free(a), Err(FreeError::DoubleFree));
        // SAFETY: as above.
        let inner = unsafe { NonNull::new_unchecked(b.as_ptr().add(64)) };
        assert_eq!(cache.free(inner), Err(FreeError::NotObjectStart));
        cache.free(b).unwrap();
        assert_eq!(cache.free(b), Err(FreeError::DoubleFree));
        assert_eq!(cache.shrink(), 2);
        // Destroyed slabs are gone from the tree and the hints alike.
        assert_eq!(cache.free(a), Err(FreeError::Foreign));
        assert_eq!(cache.free(b), Err(FreeError::Foreign));
        // A new slab on a colliding page reuses a spare descriptor.
        let c = cache.alloc().unwrap();
        assert_eq!(c, src.page(2));
        assert_eq!(cache.free(a), Err(FreeError::Foreign));
        cache.free(c).unwrap();
        let st = cache.destroy().unwrap();
        assert_eq!(st.ctor_calls, st.dtor_calls);
        assert_eq!(st.errors, 8);
    }

    #[test]
    fn verify_on_free_in_debug_mode() {
        let cache = CacheBuilder::new("pgd", 4096)
            .flags(SlabFlags::DEBUG_FREE | SlabFlags::HWCACHE_ALIGN)
            .ctor(|p| {
                // SAFETY: the ctor owns the 4096-byte object for the call.
                unsafe { core::ptr::write_bytes(p.as_ptr(), 0, 4096) }
            })
            .verify(|p| {
                // SAFETY: called on an allocated 4096-byte object.
                let b = unsafe { core::slice::from_raw_parts(p.as_ptr(), 3072) };
                match b.iter().position(|&x| x != 0) {
                    None => Ok(()),
                    Some(i) => Err(alloc::format!("user byte {i} not zero")),
                }
            })
            .build(SystemPageSource)
            .unwrap();
        let a = cache.alloc().unwrap();
        // SAFETY: `a` is an allocated 4096-byte object we own.
        unsafe { a.as_ptr().add(5).write(1) };
        assert_eq!(
            cache.free(a),
            Err(FreeError::Verify("user byte 5 not zero".into()))
        );
        // SAFETY: as above.
        unsafe { a.as_ptr().add(5).write(0) };
        cache.free(a).unwrap();
        assert_eq!(cache.free(a), Err(FreeError::DoubleFree));
    }
}
