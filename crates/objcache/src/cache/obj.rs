//! `Obj`: an allocated object held as a value, so that giving it back
//! needs no lookup.
//!
//! [`CpuToken::free`](super::CpuToken::free) takes a raw pointer, so it must
//! prove the pointer is an allocated object of this cache before it pushes
//! it: the page map's hint, the slab's first object and geometry, and the
//! object's owned flag — three dependent loads and a dozen instructions, as
//! much again as the pop and push themselves.  Linux's `kmem_cache_free`
//! checks nothing (outside `CONFIG_DEBUG_SLAB`): not freeing a foreign,
//! interior or already freed pointer is its caller's contract.  An [`Obj`]
//! is that contract as a type.  Only [`CpuToken::alloc_obj`] makes one, it
//! is neither `Copy` nor `Clone`, and [`CpuToken::free_obj`] consumes it, so
//! a foreign, interior or double free cannot be written; `free_obj` checks
//! only that it comes back to the cache that made it (one compare) and, in
//! debug mode (`SlabFlags::DEBUG_FREE`), the verify callback.
//!
//! The object's owned flag is kept all the same (one store at each end), so
//! `is_allocated`, `for_each_object` and the checkers that walk a cache see
//! an object held as an `Obj` as allocated, like any other.
//!
//! An `Obj` names its cache by the cache's id, a number no other cache of
//! the process ever gets, not by a borrow: so it can live in structures
//! that outlive any borrow of the cache (an `mm`'s pgd), and an `Obj`
//! whose cache is gone can never match a live cache, so its pointers are
//! never followed.
//!
//! [`CpuToken::alloc_obj`]: super::CpuToken::alloc_obj
//! [`CpuToken::free_obj`]: super::CpuToken::free_obj

use core::fmt;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicU64, Ordering as IdOrdering};

use crate::slab::Entry;
use crate::sync::AtomicU8;

/// An allocated object of one cache, owned as a value (see the module
/// docs).  Dropping it without [`free_obj`](super::CpuToken::free_obj)
/// leaks the object (it stays allocated), as `Box::leak` does; use
/// [`into_raw`](Self::into_raw) to hand it to the pointer API instead.
#[must_use = "an Obj not given back with free_obj stays allocated"]
pub struct Obj {
    /// The object (`Entry::obj`).
    pub(crate) obj: NonNull<u8>,
    /// Its owned flag (`Entry::owned`).  The entry's two words are kept
    /// apart rather than as an `Entry`, whose 16-byte alignment would make
    /// a copy of an `Obj` a 16-byte load of two 8-byte stores (no
    /// store-to-load forwarding).
    pub(crate) owned: NonNull<AtomicU8>,
    /// The id of the cache that made it ([`CacheId`]: only compared).
    pub(crate) cache: CacheId,
}

/// A cache's identity for [`Obj`]: unique among every cache the process
/// ever builds (a 64-bit counter, never reused), so a handle of a dropped
/// cache can never be taken for one of a live cache that now sits at the
/// same address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct CacheId(u64);

impl CacheId {
    /// The next id. The counter is a plain (not loom) atomic: it is not part
    /// of any protocol the models check.
    pub(crate) fn next() -> CacheId {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        CacheId(NEXT.fetch_add(1, IdOrdering::Relaxed))
    }
}

// SAFETY: an `Obj` is the exclusive right to one object of a cache that is
// `Sync`; moving it to another thread moves that right (the object may be
// freed on any CPU, as with the pointer API).  Its `owned` pointer is only
// written by the thread that holds the `Obj`, and the cache's owned flags
// are atomics.
unsafe impl Send for Obj {}

impl Obj {
    /// The entry the array holds for it.
    #[inline(always)]
    pub(crate) fn entry(&self) -> Entry {
        Entry {
            obj: self.obj,
            owned: self.owned,
        }
    }

    /// The object's address.
    #[inline(always)]
    pub fn as_ptr(&self) -> NonNull<u8> {
        self.obj
    }

    /// Gives up the handle: the object stays allocated, and the pointer API
    /// ([`CpuToken::free`](super::CpuToken::free),
    /// [`KmemCache::free_on`](super::KmemCache::free_on)) takes it back.
    #[inline(always)]
    pub fn into_raw(self) -> NonNull<u8> {
        self.obj
    }
}

impl fmt::Debug for Obj {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Obj").field(&self.obj).finish()
    }
}

/// [`CpuToken::free_obj`](super::CpuToken::free_obj) refused: the object
/// comes back to its holder with the reason.
#[derive(Debug, thiserror::Error)]
#[error("{why}")]
pub struct ObjFreeError {
    /// The object, still allocated and still the caller's.
    pub obj: Obj,
    /// Why: [`FreeError::Foreign`](crate::FreeError::Foreign) for an object
    /// of another cache, [`FreeError::Verify`](crate::FreeError::Verify)
    /// when the debug-mode check failed.
    #[source]
    pub why: crate::FreeError,
}
