//! `kmem_cache`: the object cache proper.
//!
//! A [`KmemCache`] owns slabs of constructed objects (see [`crate::slab`]) and,
//! in front of them, one `array_cache` per CPU (Linux 2.5; Bonwick–Adams
//! magazines, with Linux 2.6's shared array as the depot): a LIFO stack of
//! free, constructed objects of at most `limit` entries, where `limit` grows
//! when CPUs contend on `list_lock` ([`ResizePolicy`]).  `alloc` pops from the local array; when it is
//! empty, `batchcount` objects are moved in from the slab lists (growing the
//! cache by one slab if they have none).  `free` pushes onto the local array;
//! when it is full, the `batchcount` oldest entries are flushed back to their
//! slabs first.  Objects never leave constructed state on either path.
//!
//! Lock order: per-CPU array lock, then `list_lock`.  Constructors run with
//! the array lock held but not the list lock; destructors run with neither
//! held, except when called from a per-CPU flush (array lock held).

use alloc::boxed::Box;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;
use core::ptr::NonNull;
use core::sync::atomic::Ordering;

use crate::error::{AllocError, CreateError, FreeError, TuneError};
use crate::page::{PageSource, PAGE_SIZE};
use crate::pagemap::PageMap;
use crate::slab::{
    pop_entry, push_entry, DeadSlab, Entry, Geometry, Lists, NewSlab, SlabShared, CACHE_LINE,
};
use crate::stats::CacheStats;
use crate::sync::{AtomicUsize, Mutex, MutexGuard};

/// Object constructor: brings the object at the given address (of
/// `object_size` bytes, exclusively the callee's for the call) to constructed
/// state.  Must not call into the same cache.
pub type Ctor = Box<dyn Fn(NonNull<u8>) + Send + Sync>;
/// Object destructor: undoes whatever the constructor set up outside the
/// object (e.g. `pgd_dtor` unlinks the page from `pgd_list`).
pub type Dtor = Box<dyn Fn(NonNull<u8>) + Send + Sync>;
/// Debug-mode check run on `free`: `Err(reason)` if the object is not in
/// constructed state (e.g. "user half of the pgd is not clear").
pub type Verify = Box<dyn Fn(NonNull<u8>) -> Result<(), String> + Send + Sync>;

/// Largest per-CPU array accepted by `tune`.
pub const MAX_LIMIT: usize = 4096;

/// [`ResizePolicy::contention`] of the default policy.
pub const RESIZE_CONTENTION: u32 = 8;
/// [`ResizePolicy::window`] of the default policy.
pub const RESIZE_WINDOW: u32 = 128;
/// [`ResizePolicy::max_factor`] of the default policy.
pub const RESIZE_MAX_FACTOR: usize = 4;

/// Dynamic resizing of the per-CPU arrays (Bonwick & Adams 2001, §3.6: a
/// magazine grows when the depot lock is contended).
///
/// Each CPU counts its trips to `list_lock` (refills and flushes) and how
/// many of them found the lock held by another CPU.  When `contention`
/// contended trips fall within one window of `window` trips, the cache-wide
/// array size doubles, up to `max_factor` times the initial `limit` and
/// never beyond [`MAX_LIMIT`]; every CPU adopts it at its next refill or
/// flush (`limit` and `batchcount = (limit + 1) / 2`).  Arrays never shrink
/// by themselves; `tune` sets fixed tunables and turns resizing off, like a
/// write to `/proc/slabinfo`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResizePolicy {
    /// Contended trips within one window that trigger a doubling (>= 1).
    pub contention: u32,
    /// Trips per window (>= `contention`).
    pub window: u32,
    /// Largest `limit` as a multiple of the initial one (1 = never grow).
    pub max_factor: usize,
}

impl Default for ResizePolicy {
    fn default() -> Self {
        Self {
            contention: RESIZE_CONTENTION,
            window: RESIZE_WINDOW,
            max_factor: RESIZE_MAX_FACTOR,
        }
    }
}

bitflags::bitflags! {
    /// `SLAB_*` cache-creation flags (values as in Linux 2.5 `<linux/slab.h>`).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct SlabFlags: u32 {
        /// Debug mode: run the verify callback on every free.  (Double-free
        /// and foreign-pointer checks are always on.)
        const DEBUG_FREE = 0x0000_0100;
        /// Never destroy empty slabs on the free path; only `shrink`/`destroy`
        /// give pages back.  Keeps constructed objects cached indefinitely.
        const NO_REAP = 0x0000_1000;
        /// Align objects on L1 cache lines (64 bytes; smaller objects are
        /// packed to the smallest power of two >= their size, as Linux does).
        const HWCACHE_ALIGN = 0x0000_2000;
        /// Accepted for source compatibility; alignment is never relaxed here.
        const MUST_HWCACHE_ALIGN = 0x0000_8000;
    }
}

impl SlabFlags {
    /// No flags (`SlabFlags::empty()`).
    pub const NONE: Self = Self::empty();
}

/// Linux 2.5 `enable_cpucache()` defaults: `(limit, batchcount)` by size.
fn default_tunables(stride: usize) -> (usize, usize) {
    let limit = if stride > 131_072 {
        1
    } else if stride > PAGE_SIZE {
        8
    } else if stride > 1024 {
        24
    } else if stride > 256 {
        54
    } else {
        120
    };
    (limit, limit.div_ceil(2))
}

/// One CPU's `array_cache`: free, constructed objects, most recent last.
struct ArrayCache {
    entries: Vec<Entry>,
    limit: usize,
    batchcount: usize,
    alloc_hits: usize,
    alloc_misses: usize,
    free_hits: usize,
    free_misses: usize,
    /// Trips to `list_lock` in the current resize window.
    trips: u32,
    /// How many of them found `list_lock` held by another CPU.
    contended: u32,
}

impl ArrayCache {
    fn new(limit: usize, batchcount: usize) -> Self {
        Self {
            entries: Vec::with_capacity(limit),
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
    fn note_trip(&mut self, contended: bool) {
        self.trips += 1;
        self.contended += u32::from(contended);
    }
}

/// A per-CPU slot, padded to its own cache lines so CPUs do not false-share.
#[repr(align(128))]
struct CpuSlot {
    /// Protects this CPU's array cache.  Only "its" CPU takes it on the fast
    /// path; `shrink`, `tune`, `stats` and `destroy` take it from elsewhere,
    /// which is why it is a lock at all (the kernel disables interrupts and
    /// uses IPIs instead).
    array: Mutex<ArrayCache>,
}

/// Cache-wide counters; updated on slow paths only.
#[derive(Default)]
struct Counters {
    ctor_calls: AtomicUsize,
    dtor_calls: AtomicUsize,
    grown: AtomicUsize,
    reaped: AtomicUsize,
    resized: AtomicUsize,
    errors: AtomicUsize,
    colour_next: AtomicUsize,
}

/// Builder for [`KmemCache`] (`kmem_cache_create` with named arguments).
pub struct CacheBuilder {
    name: String,
    size: usize,
    align: usize,
    flags: SlabFlags,
    ctor: Option<Ctor>,
    dtor: Option<Dtor>,
    verify: Option<Verify>,
    ncpus: usize,
    tunables: Option<(usize, usize)>,
    resize: Option<Option<ResizePolicy>>,
    shared_factor: Option<usize>,
    cpu_id: Option<fn() -> usize>,
}

impl fmt::Debug for CacheBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CacheBuilder")
            .field("name", &self.name)
            .field("size", &self.size)
            .field("align", &self.align)
            .field("flags", &self.flags)
            .field("ncpus", &self.ncpus)
            .finish_non_exhaustive()
    }
}

impl CacheBuilder {
    /// Starts building a cache of `size`-byte objects called `name`.
    pub fn new(name: impl Into<String>, size: usize) -> Self {
        CacheBuilder {
            name: name.into(),
            size,
            align: 0,
            flags: SlabFlags::NONE,
            ctor: None,
            dtor: None,
            verify: None,
            ncpus: 1,
            tunables: None,
            resize: None,
            shared_factor: None,
            cpu_id: None,
        }
    }

    /// Minimum alignment (power of two <= `PAGE_SIZE`; default: word size).
    pub fn align(mut self, align: usize) -> Self {
        self.align = align;
        self
    }
    /// `SLAB_*` flags.
    pub fn flags(mut self, flags: SlabFlags) -> Self {
        self.flags = flags;
        self
    }
    /// Object constructor, run once per object when its slab is created.
    pub fn ctor(mut self, f: impl Fn(NonNull<u8>) + Send + Sync + 'static) -> Self {
        self.ctor = Some(Box::new(f));
        self
    }
    /// Object destructor, run once per object when its slab is destroyed.
    pub fn dtor(mut self, f: impl Fn(NonNull<u8>) + Send + Sync + 'static) -> Self {
        self.dtor = Some(Box::new(f));
        self
    }
    /// Debug-mode verify-on-free callback (active with `SlabFlags::DEBUG_FREE`).
    pub fn verify(
        mut self,
        f: impl Fn(NonNull<u8>) -> Result<(), String> + Send + Sync + 'static,
    ) -> Self {
        self.verify = Some(Box::new(f));
        self
    }
    /// Number of CPU slots (per-CPU arrays); default 1.
    pub fn cpus(mut self, n: usize) -> Self {
        self.ncpus = n;
        self
    }
    /// Per-CPU array `limit` and `batchcount` (default: Linux 2.5's by size).
    pub fn tunables(mut self, limit: usize, batchcount: usize) -> Self {
        self.tunables = Some((limit, batchcount));
        self
    }

    /// Dynamic resizing of the per-CPU arrays.  Default: on, with
    /// [`ResizePolicy::default`], when the tunables are Linux's defaults; off
    /// when [`tunables`](Self::tunables) fixes them.  `Some(policy)` turns it
    /// on from whatever tunables the cache starts with; `None` turns it off.
    pub fn resize(mut self, policy: Option<ResizePolicy>) -> Self {
        self.resize = Some(policy);
        self
    }
    /// Shared array size in batches (`sharedfactor`; 0 disables the shared
    /// array).  Default: 8 when there is more than one CPU and objects are at
    /// most a page (Linux 2.6 `enable_cpucache`), else 0.
    pub fn shared_factor(mut self, factor: usize) -> Self {
        self.shared_factor = Some(factor);
        self
    }
    /// How `alloc()`/`free()` find the current CPU (default: [`crate::cpu::current`]).
    pub fn cpu_id(mut self, f: fn() -> usize) -> Self {
        self.cpu_id = Some(f);
        self
    }

    /// Creates the cache; it takes pages from `source`.
    pub fn build<P: PageSource>(self, source: P) -> Result<KmemCache<P>, CreateError> {
        if self.ncpus == 0 {
            return Err(CreateError::NoCpus);
        }
        let mut align = if self.align == 0 {
            core::mem::size_of::<usize>()
        } else {
            self.align
        };
        if !align.is_power_of_two() || align > PAGE_SIZE {
            return Err(CreateError::BadAlign(align));
        }
        if self.flags.contains(SlabFlags::HWCACHE_ALIGN) {
            let mut hw = CACHE_LINE;
            while self.size <= hw / 2 && hw > 1 {
                hw /= 2;
            }
            align = align.max(hw);
        }
        let geo = Geometry::new(self.size, align)?;
        let (limit, batchcount) = self.tunables.unwrap_or(default_tunables(geo.stride));
        if batchcount == 0 || batchcount > limit || limit > MAX_LIMIT {
            return Err(CreateError::BadTunables { limit, batchcount });
        }
        // Default tunables adapt to contention; explicit ones stay put
        // unless a policy is given as well.
        let policy = match self.resize {
            Some(p) => p,
            None if self.tunables.is_none() => Some(ResizePolicy::default()),
            None => None,
        };
        if let Some(p) = policy {
            if p.contention == 0 || p.window < p.contention || p.max_factor == 0 {
                return Err(CreateError::BadResizePolicy);
            }
        }
        let resize_cap = match policy {
            Some(p) => limit.saturating_mul(p.max_factor).min(MAX_LIMIT),
            None => 0,
        };
        let policy = policy.unwrap_or_default();
        let cpus = (0..self.ncpus)
            .map(|_| CpuSlot {
                array: Mutex::new(ArrayCache::new(limit, batchcount)),
            })
            .collect();
        let shared_factor =
            self.shared_factor
                .unwrap_or(if self.ncpus > 1 && geo.stride <= PAGE_SIZE {
                    8
                } else {
                    0
                });
        if shared_factor.saturating_mul(batchcount) > MAX_LIMIT * 8 {
            return Err(CreateError::BadTunables { limit, batchcount });
        }
        let verify = if self.flags.contains(SlabFlags::DEBUG_FREE) {
            self.verify
        } else {
            None
        };
        Ok(KmemCache {
            lists: Mutex::new(Lists::new(
                free_limit(self.flags, self.ncpus, batchcount, geo.num),
                shared_factor.saturating_mul(batchcount),
            )),
            shared_factor,
            name: self.name,
            geo,
            flags: self.flags,
            ctor: self.ctor,
            dtor: self.dtor,
            verify,
            cpu_id: self.cpu_id.unwrap_or(crate::cpu::current),
            resize_contention: policy.contention,
            resize_window: policy.window,
            resize_cap: AtomicUsize::new(resize_cap),
            resize_limit: AtomicUsize::new(limit),
            source,
            map: PageMap::new(),
            cpus,
            counters: Counters::default(),
        })
    }
}

fn free_limit(flags: SlabFlags, ncpus: usize, batchcount: usize, num: usize) -> usize {
    if flags.contains(SlabFlags::NO_REAP) {
        usize::MAX
    } else {
        (1 + ncpus) * batchcount + num
    }
}

/// An object cache (Linux `kmem_cache_t`) over page source `P`.
///
/// See the [crate docs](crate) for the object-state contract.
pub struct KmemCache<P: PageSource> {
    name: String,
    geo: Geometry,
    flags: SlabFlags,
    ctor: Option<Ctor>,
    dtor: Option<Dtor>,
    verify: Option<Verify>,
    cpu_id: fn() -> usize,
    source: P,
    /// Page frame → slab descriptor (`virt_to_page` + `GET_PAGE_SLAB`).
    map: PageMap,
    /// `list_lock`: protects the full/partial/free slab lists, every slab
    /// descriptor's free stack and counts, and page-map updates; taken on
    /// per-CPU refill/flush and on grow/shrink, never on the fast path.
    lists: Mutex<Lists>,
    cpus: Box<[CpuSlot]>,
    /// [`ResizePolicy::contention`].
    resize_contention: u32,
    /// [`ResizePolicy::window`].
    resize_window: u32,
    /// The largest `limit` dynamic resizing may set; 0 when resizing is off
    /// (tunables fixed by the builder or by `tune`: the administrator's
    /// choice).  Read on the array-miss path only.
    resize_cap: AtomicUsize,
    /// The cache-wide array size dynamic resizing has reached (Bonwick and
    /// Adams's per-cache magazine size): a CPU whose array is smaller adopts
    /// it at its next refill or flush.  Only ever grows.
    resize_limit: AtomicUsize,
    /// Shared array capacity in batches.
    shared_factor: usize,
    counters: Counters,
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

/// A pinned CPU slot (see [`KmemCache::lock_cpu`]): the kernel's
/// `get_cpu()` region, with the slot's array lock held throughout.
pub struct CpuCache<'a, P: PageSource> {
    cache: &'a KmemCache<P>,
    ac: MutexGuard<'a, ArrayCache>,
}

impl<P: PageSource> CpuCache<'_, P> {
    /// `alloc` on the pinned slot without taking its lock per call.
    #[inline(always)]
    pub fn alloc(&mut self) -> Result<NonNull<u8>, AllocError> {
        self.cache.alloc_from(&mut self.ac)
    }

    /// `free` on the pinned slot without taking its lock per call.
    #[inline(always)]
    pub fn free(&mut self, obj: NonNull<u8>) -> Result<(), FreeError> {
        let e = self.cache.take_back(obj)?;
        self.cache.free_into(&mut self.ac, e);
        Ok(())
    }
}

impl<P: PageSource> fmt::Debug for CpuCache<'_, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CpuCache")
            .field("cache", &self.cache.name)
            .field("avail", &self.ac.entries.len())
            .finish()
    }
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
    /// `kmem_cache_create(name, size, align, flags, ctor, dtor)` with one CPU
    /// slot per `ncpus`.
    #[allow(clippy::too_many_arguments)]
    pub fn create(
        name: impl Into<String>,
        size: usize,
        align: usize,
        flags: SlabFlags,
        ctor: Option<Ctor>,
        dtor: Option<Dtor>,
        ncpus: usize,
        source: P,
    ) -> Result<Self, CreateError> {
        let mut b = CacheBuilder::new(name, size)
            .align(align)
            .flags(flags)
            .cpus(ncpus);
        b.ctor = ctor;
        b.dtor = dtor;
        b.build(source)
    }

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
        let mut ac = slot.array.lock();
        self.alloc_from(&mut ac)
    }

    /// Pops an object from `ac` and marks it owned by the caller, refilling
    /// the array first if it is empty (array lock held).
    #[inline(always)]
    fn alloc_from(&self, ac: &mut ArrayCache) -> Result<NonNull<u8>, AllocError> {
        match pop_entry(&mut ac.entries) {
            Some(e) => {
                ac.alloc_hits += 1;
                Ok(self.hand_out(e))
            }
            None => self.alloc_miss(ac),
        }
    }

    /// `alloc_from` with an empty array: refill, then maybe resize.
    #[cold]
    #[inline(never)]
    fn alloc_miss(&self, ac: &mut ArrayCache) -> Result<NonNull<u8>, AllocError> {
        ac.alloc_misses += 1;
        let e = self.refill(ac);
        self.maybe_resize(ac);
        Ok(self.hand_out(e?))
    }

    /// Marks an object taken from an array as owned by the caller.
    #[inline(always)]
    fn hand_out(&self, e: Entry) -> NonNull<u8> {
        // SAFETY: `e.owned` points into the `owned` map of a slab descriptor,
        // which lives until the cache is dropped (`&self`).
        unsafe { e.owned.as_ref() }.store(1, Ordering::Relaxed);
        e.obj
    }

    /// Pins CPU slot `cpu` for a batch of operations, like the kernel's
    /// `get_cpu()` … `put_cpu()`: the slot's array lock is held until the
    /// returned [`CpuCache`] is dropped, so its `alloc`/`free` skip the
    /// per-call lock.  While it is held, any other use of slot `cpu`, and
    /// `shrink`, `tune`, `stats` and `destroy`, spin until it is dropped:
    /// keep it short-lived and never call them from the holding thread.
    pub fn lock_cpu(&self, cpu: usize) -> Result<CpuCache<'_, P>, AllocError> {
        let ncpus = self.cpus.len();
        let slot = self
            .cpus
            .get(cpu)
            .ok_or(AllocError::InvalidCpu { cpu, ncpus })?;
        Ok(CpuCache {
            cache: self,
            ac: slot.array.lock(),
        })
    }

    /// Finds the slab descriptor and index of `obj` without reading it.
    #[inline(always)]
    fn locate(&self, obj: NonNull<u8>) -> Result<(&SlabShared, usize), FreeError> {
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
    fn locate_slow(&self, addr: usize) -> Result<(&SlabShared, usize), FreeError> {
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
        let mut ac = slot.array.lock();
        self.free_into(&mut ac, e);
        Ok(())
    }

    /// Validates `obj` and takes it back from its owner (no array lock).
    #[inline(always)]
    fn take_back(&self, obj: NonNull<u8>) -> Result<Entry, FreeError> {
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
    fn take_back_debug(
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
    fn free_into(&self, ac: &mut ArrayCache, e: Entry) {
        if ac.entries.len() >= ac.limit {
            ac.free_misses += 1;
            let n = ac.batchcount;
            let contended = self.flush(&mut ac.entries, n, true);
            ac.note_trip(contended);
            self.maybe_resize(ac);
        } else {
            ac.free_hits += 1;
        }
        // SAFETY: `len < limit` now (a full array was just flushed by
        // `batchcount >= 1`), and the array's capacity is reserved up to
        // `limit` by `ArrayCache::new`, `grow_array` and `tune`.
        unsafe { push_entry(&mut ac.entries, e) };
    }

    fn count_error(&self) {
        self.counters.errors.fetch_add(1, Ordering::Relaxed);
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

    /// The base address of the slab (first page) holding `obj`, if `obj`
    /// points anywhere into a slab of this cache.
    pub fn slab_of(&self, obj: NonNull<u8>) -> Result<NonNull<u8>, FreeError> {
        if self.map.lookup(obj.as_ptr() as usize).is_null() {
            return Err(FreeError::Foreign);
        }
        let bytes = self.geo.slab_bytes();
        // Pages come naturally aligned from the page source (checked in grow).
        let base = (obj.as_ptr() as usize) & !(bytes - 1);
        // SAFETY: as in `page_of`, the slab base is a non-null page address.
        Ok(unsafe { NonNull::new_unchecked(base as *mut u8) })
    }

    /// Calls `f(obj, allocated)` for every object of every slab, allocated
    /// (held by a user) or free (in a slab or a per-CPU array — still in
    /// constructed state). This is how a checker enumerates *cached* objects
    /// without trusting any list the cache's user keeps. Holds the list
    /// lock, so `f` must not call back into this cache.
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

    /// `cache_alloc_refill`: moves up to `batchcount` objects from the slab
    /// lists into `ac`, growing the cache if needed, and returns one of them.
    #[cold]
    fn refill(&self, ac: &mut ArrayCache) -> Result<Entry, AllocError> {
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
    fn grow(&self) -> Result<NewSlab, AllocError> {
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
    fn destroy_slab(&self, dead: DeadSlab) {
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
    fn unlink_slab(&self, lists: &mut Lists, id: u32) -> Option<DeadSlab> {
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
    fn flush(&self, entries: &mut Vec<Entry>, n: usize, via_shared: bool) -> bool {
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
    fn lock_lists(&self) -> (MutexGuard<'_, Lists>, bool) {
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
    fn maybe_resize(&self, ac: &mut ArrayCache) {
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
    fn double_resize_limit(&self, from: usize) -> usize {
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
    fn grow_array(&self, ac: &mut ArrayCache, limit: usize) {
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
    fn free_block(&self, lists: &mut Lists, e: Entry, dead: &mut Vec<DeadSlab>) {
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

    /// Flushes every per-CPU array and the shared array completely
    /// (`drain_cpu_caches`), leaving every free object on its slab.
    fn drain_cpu_caches(&self) {
        for slot in self.cpus.iter() {
            let mut ac = slot.array.lock();
            let n = ac.entries.len();
            self.flush(&mut ac.entries, n, false);
        }
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
    /// the number of slabs given back.
    pub fn shrink(&self) -> usize {
        self.drain_cpu_caches();
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
    /// flushing arrays that hold more than the new limit.
    pub fn tune(&self, limit: usize, batchcount: usize) -> Result<(), TuneError> {
        if batchcount == 0 || batchcount > limit || limit > MAX_LIMIT {
            return Err(TuneError { limit, batchcount });
        }
        // Fixed tunables from now on: no CPU may adopt a resized limit.
        self.resize_cap.store(0, Ordering::Relaxed);
        for slot in self.cpus.iter() {
            let mut ac = slot.array.lock();
            ac.limit = limit;
            ac.batchcount = batchcount;
            let excess = ac.entries.len().saturating_sub(limit);
            self.flush(&mut ac.entries, excess, false);
            let room = limit - ac.entries.len();
            ac.entries.reserve(room);
        }
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

    /// A snapshot of the cache's figures and counters.
    pub fn stats(&self) -> CacheStats {
        let mut s = CacheStats {
            name: self.name.clone(),
            object_size: self.geo.size,
            buffer_size: self.geo.stride,
            align: self.geo.align,
            objs_per_slab: self.geo.num,
            pages_per_slab: self.geo.pages(),
            ncpus: self.cpus.len(),
            ..CacheStats::default()
        };
        for slot in self.cpus.iter() {
            let ac = slot.array.lock();
            s.limit = s.limit.max(ac.limit);
            s.batchcount = s.batchcount.max(ac.batchcount);
            s.cpu_cached += ac.entries.len();
            s.alloc_hits += ac.alloc_hits;
            s.alloc_misses += ac.alloc_misses;
            s.free_hits += ac.free_hits;
            s.free_misses += ac.free_misses;
        }
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
    pub fn destroy(self) -> Result<CacheStats, DestroyError<P>> {
        self.drain_cpu_caches();
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
    use super::*;
    use crate::page::{FaultyPageSource, SystemPageSource};
    use alloc::sync::Arc;
    use core::sync::atomic::AtomicUsize as StdAtomic;

    fn pattern_cache(
        size: usize,
        ctors: &Arc<StdAtomic>,
        dtors: &Arc<StdAtomic>,
    ) -> KmemCache<FaultyPageSource<SystemPageSource>> {
        let (c, d) = (ctors.clone(), dtors.clone());
        CacheBuilder::new("test", size)
            .flags(SlabFlags::HWCACHE_ALIGN)
            .ctor(move |p| {
                c.fetch_add(1, Ordering::Relaxed);
                // SAFETY: the ctor owns `size` bytes at `p` for the call.
                unsafe { core::ptr::write_bytes(p.as_ptr(), 0xA5, size) }
            })
            .dtor(move |_| {
                d.fetch_add(1, Ordering::Relaxed);
            })
            .cpus(2)
            .tunables(4, 2)
            .build(FaultyPageSource::new(SystemPageSource))
            .unwrap()
    }

    #[test]
    fn free_objects_keep_constructed_state() {
        let (c, d) = (Arc::new(StdAtomic::new(0)), Arc::new(StdAtomic::new(0)));
        let cache = pattern_cache(4096, &c, &d);
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
        let (c, d) = (Arc::new(StdAtomic::new(0)), Arc::new(StdAtomic::new(0)));
        let cache = pattern_cache(64, &c, &d);
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

    #[test]
    fn destroy_with_live_objects_is_refused() {
        let (c, d) = (Arc::new(StdAtomic::new(0)), Arc::new(StdAtomic::new(0)));
        let cache = pattern_cache(128, &c, &d);
        let a = cache.alloc().unwrap();
        let err = cache.destroy().unwrap_err();
        assert_eq!(err.live, 1);
        let cache = err.cache;
        cache.free(a).unwrap();
        let st = cache.destroy().unwrap();
        assert_eq!(st.ctor_calls, st.dtor_calls);
    }

    #[test]
    fn shrink_and_slabinfo() {
        let (c, d) = (Arc::new(StdAtomic::new(0)), Arc::new(StdAtomic::new(0)));
        let cache = pattern_cache(4096, &c, &d);
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
        let (c, d) = (Arc::new(StdAtomic::new(0)), Arc::new(StdAtomic::new(0)));
        let cache = pattern_cache(4096, &c, &d);
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
    fn pinned_cpu_handle() {
        let (c, d) = (Arc::new(StdAtomic::new(0)), Arc::new(StdAtomic::new(0)));
        let cache = pattern_cache(64, &c, &d);
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
        assert_eq!(cache.cpus[1].array.lock().limit, 24);
        objs.push(cache.alloc_on(1).expect("alloc"));
        assert_eq!(cache.cpus[1].array.lock().limit, 48);
        assert_eq!(cache.cpus[1].array.lock().batchcount, 24);
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

    #[test]
    fn tune_validates_and_flushes() {
        let (c, d) = (Arc::new(StdAtomic::new(0)), Arc::new(StdAtomic::new(0)));
        let cache = pattern_cache(32, &c, &d);
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
