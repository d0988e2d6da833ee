//! The pgd system's lock classes, one `static` per kind of lock, shared by
//! every crate so that lockdep sees one graph across `physmem`, `objcache`
//! and `pgdcache` (the order between them is in the [crate docs](crate)).

use crate::LockClass;

/// `zone->lock`: the buddy allocator's free lists (physmem). Innermost.
pub static ZONE: LockClass = LockClass::new("zone");
/// A CPU's `per_cpu_pages` list (physmem); nests outside [`ZONE`].
pub static PCP: LockClass = LockClass::new("pcp");
/// A CPU's `array_cache` in a `kmem_cache` (objcache).
pub static ARRAY_CACHE: LockClass = LockClass::new("array_cache");
/// A `kmem_cache`'s `list_lock`: slab lists, shared array, page map (objcache).
pub static LIST_LOCK: LockClass = LockClass::new("list_lock");
/// `pgd_lock`: `pgd_list` and the copy-and-link of `pgd_ctor` (pgdcache).
pub static PGD_LOCK: LockClass = LockClass::new("pgd_lock");
/// `mmlist_lock`: the live address spaces (pgdcache).
pub static MMLIST_LOCK: LockClass = LockClass::new("mmlist_lock");
/// `cpa_lock`: `change_page_attr` and its deferred-free list (pgdcache).
pub static CPA_LOCK: LockClass = LockClass::new("cpa_lock");
/// `vmlist_lock`: the vmalloc area allocator (pgdcache).
pub static VMLIST_LOCK: LockClass = LockClass::new("vmlist_lock");
/// The installed `flush_kernel_map` hook of `global_flush_tlb` (pgdcache).
pub static FLUSH_HOOK: LockClass = LockClass::new("flush_hook");

/// Every class above, for reports and tests.
pub static ALL: [&LockClass; 9] = [
    &ZONE,
    &PCP,
    &ARRAY_CACHE,
    &LIST_LOCK,
    &PGD_LOCK,
    &MMLIST_LOCK,
    &CPA_LOCK,
    &VMLIST_LOCK,
    &FLUSH_HOOK,
];
