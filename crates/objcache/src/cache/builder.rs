//! Creating a cache: `kmem_cache_create`'s parameters (`SLAB_*` flags,
//! constructor, destructor, debug verify), Linux 2.5's default per-CPU
//! tunables, the dynamic-resizing policy, and [`CacheBuilder`], which checks
//! them and lays the cache out.

use alloc::boxed::Box;
use alloc::string::String;
use core::fmt;
use core::ptr::NonNull;

use super::percpu::CpuSlot;
use super::{Counters, KmemCache};
use crate::error::CreateError;
use crate::page::{PageSource, PAGE_SIZE};
use crate::pagemap::PageMap;
use crate::slab::{Geometry, Lists, CACHE_LINE};
use crate::sync::{AtomicUsize, Mutex};

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
    stats: bool,
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
            stats: true,
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

    /// Per-CPU hit counters (`alloc_hits`, `free_hits`; the `cpustat`
    /// columns of [`slabinfo_with_stats`](crate::slabinfo_with_stats)):
    /// Linux's `STATS`, compiled in only with `CONFIG_DEBUG_SLAB`.  On by
    /// default, for the experiments, tests and checks that read them.  Off
    /// is the production kernel's configuration: a hit then writes no
    /// counter at all (two memory increments per pair are a third of a
    /// token-path pair's time), and both hit counters read 0.  Misses,
    /// grows, reaps and errors are counted either way (slow paths).
    pub fn stats(mut self, on: bool) -> Self {
        self.stats = on;
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
            .map(|_| CpuSlot::new(limit, batchcount, self.stats))
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
            id: super::obj::CacheId::next(),
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
            count_hits: self.stats,
            #[cfg(loom)]
            bug: core::sync::atomic::AtomicU8::new(0),
        })
    }
}

pub(crate) fn free_limit(flags: SlabFlags, ncpus: usize, batchcount: usize, num: usize) -> usize {
    if flags.contains(SlabFlags::NO_REAP) {
        usize::MAX
    } else {
        (1 + ncpus) * batchcount + num
    }
}
