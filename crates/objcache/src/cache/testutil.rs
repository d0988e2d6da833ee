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
