//! Test helpers shared by the cache's modules.

use alloc::sync::Arc;
use core::sync::atomic::{AtomicUsize, Ordering};

use super::{CacheBuilder, KmemCache, SlabFlags};
use crate::page::{FaultyPageSource, SystemPageSource};

/// A 2-CPU cache (tunables 4/2) of `size`-byte objects whose ctor fills
/// them with 0xA5; returns the cache and its ctor and dtor call counters.
pub(crate) fn pattern_cache(
    size: usize,
) -> (
    KmemCache<FaultyPageSource<SystemPageSource>>,
    Arc<AtomicUsize>,
    Arc<AtomicUsize>,
) {
    let (ctors, dtors) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (c, d) = (ctors.clone(), dtors.clone());
    let cache = CacheBuilder::new("test", size)
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
        .unwrap();
    (cache, ctors, dtors)
}

/// A 1-CPU `DEBUG_FREE` cache of 32-byte objects constructed to zero, whose
/// verify callback refuses an object whose first byte is not clear.
pub(crate) fn verify_cache() -> KmemCache<SystemPageSource> {
    CacheBuilder::new("verify", 32)
        .flags(SlabFlags::DEBUG_FREE)
        .ctor(|p| {
            // SAFETY: the ctor owns 32 bytes at `p` for the call.
            unsafe { core::ptr::write_bytes(p.as_ptr(), 0, 32) }
        })
        .verify(|p| {
            // SAFETY: the cache calls verify on one of its objects.
            match unsafe { p.as_ptr().read() } {
                0 => Ok(()),
                _ => Err("first byte not clear".into()),
            }
        })
        .cpus(1)
        .build(SystemPageSource)
        .unwrap()
}
