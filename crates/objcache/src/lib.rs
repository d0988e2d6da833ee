//! `objcache`: an object-caching slab allocator with constructors and
//! destructors, after Bonwick (1994), Bonwick & Adams (2001) and the Linux 2.5
//! `kmem_cache` — the allocator that the "reslabify pgds and pmds" patch puts
//! preconstructed i386 page directories in.
//!
//! # Model
//!
//! * A [`KmemCache`] hands out objects of one size and alignment, carved from
//!   slabs of `2^order` page frames obtained from a [`PageSource`].
//! * Every object of a slab is **constructed** (the cache's `ctor` runs on it)
//!   when the slab is created, and **destructed** (`dtor`) when the slab is
//!   destroyed — by [`KmemCache::shrink`], [`KmemCache::destroy`], dropping
//!   the cache, or automatic reaping of surplus empty slabs (Linux's
//!   `free_limit`; disable it with [`SlabFlags::NO_REAP`]).
//! * In front of the slabs sits one `array_cache` per CPU slot, with tunable
//!   `limit` and `batchcount` ([`KmemCache::tune`]).  With default tunables
//!   the arrays grow when CPUs contend on the slab lists' lock (Bonwick &
//!   Adams's dynamic magazine resizing, [`ResizePolicy`]).
//!
//! # Object-state contract
//!
//! 1. The constructor runs exactly once per object per slab lifetime, never
//!    on `alloc`.
//! 2. Every object returned by `alloc` is in constructed state.
//! 3. The caller returns objects with `free` in constructed state (a pgd with
//!    its user half cleared again).  In debug mode ([`SlabFlags::DEBUG_FREE`])
//!    a user `verify` callback checks this on every free and the free is
//!    refused with [`FreeError::Verify`] if it does not hold.
//! 4. The destructor runs exactly once for each object a slab ever
//!    constructed; after [`KmemCache::destroy`] the constructor and destructor
//!    call counts are equal.
//! 5. **The allocator never writes object memory** except through the
//!    constructor and destructor: the free list is kept off-object (an index
//!    stack in a separately allocated slab descriptor, like Linux 2.5's
//!    `kmem_bufctl_t`), so a free object keeps its constructed contents.
//!
//! # Safety of `free`
//!
//! `free` never dereferences the pointer it is given: the slab is found
//! through a per-cache page map (`virt_to_page`), and a per-object "owned"
//! byte in the off-slab descriptor catches double frees cheaply, so foreign
//! pointers, interior pointers and double frees are always reported as a
//! typed [`FreeError`] and leave the cache unchanged.
//!
//! # CPU identity
//!
//! See [`cpu`]: `alloc_on(cpu)` / `free_on(cpu, obj)` take it explicitly;
//! `alloc()` / `free()` use a per-thread slot assigned round-robin;
//! [`KmemCache::lock_cpu`] pins a slot for a batch of operations (the
//! kernel's `get_cpu()` … `put_cpu()`), skipping the per-call lock.  The
//! pinned [`CpuCache`] is the kernel API: its `alloc`/`free` run no atomic
//! read-modify-write instruction, as `kmem_cache_alloc` with interrupts off
//! does not; the per-call forms pay one `lock cmpxchg` each.
//! [`KmemCache::claim_cpu`] makes that static: the returned [`CpuToken`]
//! lets one thread act as a CPU for as long as it likes, with no lock and no
//! atomic read-modify-write on its hits and frees; remote operations
//! (`shrink`, `tune`, `stats`) reach its array by a hand-off the owner
//! serves at its next operation or [`CpuToken::serve`], as Linux drains
//! per-CPU arrays by IPI.
//!
//! # Locks
//!
//! Each per-CPU array has its own slot lock, a test-and-set byte
//! (uncontended unless two threads share a slot or a drain runs; a token
//! holds it for its whole life), and the slab lists have one `list_lock`.
//! Lock order is array → list.  Under `--cfg loom` the locks and the modelled
//! atomics come from `loom` (see the `sync` module).
//!
//! # Quick start
//!
//! A cache of page directories whose constructor copies the kernel part
//! once per object, not once per allocation (the seed's `pgd_ctor`):
//!
//! ```
//! use objcache::{CacheBuilder, SystemPageSource};
//! use std::sync::atomic::{AtomicUsize, Ordering};
//! use std::sync::Arc;
//!
//! let ctors = Arc::new(AtomicUsize::new(0));
//! let counted = ctors.clone();
//! let cache = CacheBuilder::new("pgd", 4096)
//!     .ctor(move |obj| {
//!         // SAFETY: the cache hands the constructor a whole 4096-byte
//!         // object it owns; writing its upper quarter is in bounds.
//!         unsafe { obj.as_ptr().add(3072).write_bytes(0xc0, 1024) };
//!         counted.fetch_add(1, Ordering::Relaxed);
//!     })
//!     .build(SystemPageSource)?;
//!
//! let pgd = cache.alloc()?;
//! // SAFETY: `pgd` is a live 4096-byte object.
//! assert_eq!(unsafe { *pgd.as_ptr().add(3072) }, 0xc0); // constructed
//! cache.free(pgd)?; // back in the per-CPU array, still constructed
//! let again = cache.alloc()?; // the same object: no constructor call
//! assert_eq!(again, pgd);
//! assert_eq!(ctors.load(Ordering::Relaxed), cache.stats().num_objs);
//! cache.free(again)?;
//! print!("{}", objcache::slabinfo(&[cache.stats()])); // /proc/slabinfo 2.1
//! cache.destroy()?; // every constructed object destructed, slabs freed
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![no_std]
#![warn(missing_docs)]

extern crate alloc;
#[cfg(any(feature = "std", loom))]
extern crate std;

mod cache;
pub mod cpu;
mod error;
mod page;
mod pagemap;
#[cfg(all(feature = "std", not(loom)))]
pub mod pairbench;
mod slab;
mod stats;
mod sync;

#[cfg(loom)]
pub use cache::Bug;
pub use cache::{
    CacheBuilder, CpuCache, CpuToken, Ctor, DestroyError, Dtor, KmemCache, Obj, ObjFreeError, Objs,
    ObjsFreeError, ResizePolicy, SlabFlags, Verify, MAX_LIMIT, RESIZE_CONTENTION,
    RESIZE_MAX_FACTOR, RESIZE_WINDOW,
};
pub use error::{AllocError, ClaimError, CreateError, FreeError, TuneError};
#[cfg(feature = "std")]
pub use page::SystemPageSource;
pub use page::{FaultyPageSource, PageAllocError, PageSource, PAGE_SHIFT, PAGE_SIZE};
pub use slab::{CACHE_LINE, MAX_ORDER};
pub use stats::{slabinfo, slabinfo_format, slabinfo_with_stats, CacheStats, SlabinfoColumns};

#[cfg(test)]
mod error_traits {
    fn is_error<E: core::error::Error + 'static>() {}

    #[test]
    fn every_error_type_is_a_core_error() {
        is_error::<crate::CreateError>();
        is_error::<crate::AllocError>();
        is_error::<crate::FreeError>();
        is_error::<crate::TuneError>();
        is_error::<crate::ClaimError>();
        is_error::<crate::PageAllocError>();
        is_error::<crate::DestroyError<crate::FaultyPageSource<crate::SystemPageSource>>>();
    }
}
