//! Statistics and `/proc/slabinfo` (version 2.1) formatting.
//!
//! [`CacheStats`] is a snapshot of one cache: the slab-level figures that
//! `/proc/slabinfo` prints, plus the counters the pgdcache experiments need
//! (constructor/destructor calls, per-CPU hits and misses, grow/reap counts).
//! [`slabinfo`] renders a slice of snapshots exactly in the 2.1 layout, and
//! [`slabinfo_with_stats`] appends Linux's `CONFIG_DEBUG_SLAB`-style
//! `globalstat`/`cpustat` columns.

use alloc::string::String;
use core::fmt::Write;

/// A snapshot of one cache's state and counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct CacheStats {
    /// Cache name.
    pub name: String,
    /// Requested object size.
    pub object_size: usize,
    /// Object stride in the slab (`objsize` column: size rounded to `align`).
    pub buffer_size: usize,
    /// Effective alignment.
    pub align: usize,
    /// Objects per slab.
    pub objs_per_slab: usize,
    /// Pages per slab.
    pub pages_per_slab: usize,
    /// Per-CPU array capacity (the largest over the CPUs: dynamic resizing
    /// grows each CPU's array on its own).
    pub limit: usize,
    /// Objects moved per refill / flush (the largest over the CPUs).
    pub batchcount: usize,
    /// Shared array size in batches (`sharedfactor`).
    pub shared_factor: usize,
    /// Objects in the shared array (`sharedavail`; free, constructed).
    pub shared_avail: usize,
    /// Number of CPU slots.
    pub ncpus: usize,
    /// Objects not free in their slab (allocated or in a per-CPU array).
    pub active_objs: usize,
    /// Objects in all slabs.
    pub num_objs: usize,
    /// Slabs with at least one active object.
    pub active_slabs: usize,
    /// All slabs.
    pub num_slabs: usize,
    /// Slabs on the full list.
    pub full_slabs: usize,
    /// Slabs on the partial list.
    pub partial_slabs: usize,
    /// Slabs on the free list (all objects free, still constructed).
    pub free_slabs: usize,
    /// Objects sitting in per-CPU arrays (free, constructed).
    pub cpu_cached: usize,
    /// Objects currently held by users (`active_objs - cpu_cached - shared_avail`).
    pub live_objs: usize,
    /// Objects constructed so far (constructor calls, counted even when the
    /// cache has no constructor).
    pub ctor_calls: usize,
    /// Objects destructed so far (destructor calls, counted even when the
    /// cache has no destructor).
    pub dtor_calls: usize,
    /// Allocations served from a per-CPU array.
    pub alloc_hits: usize,
    /// Allocations that had to refill the per-CPU array from the slab lists.
    pub alloc_misses: usize,
    /// Frees that went into a per-CPU array without a flush.
    pub free_hits: usize,
    /// Frees that first had to flush a batch back to the slab lists.
    pub free_misses: usize,
    /// Slabs created (`cache_grow`).
    pub grown: usize,
    /// Slabs destroyed (by reaping, `shrink` or `destroy`).
    pub reaped: usize,
    /// Per-CPU arrays doubled by dynamic resizing (`list_lock` contention).
    pub resized: usize,
    /// Frees rejected with an error.
    pub errors: usize,
}

const HEADER: &str = "slabinfo - version: 2.1\n# name            <active_objs> <num_objs> <objsize> <objperslab> <pagesperslab> : tunables <limit> <batchcount> <sharedfactor> : slabdata <active_slabs> <num_slabs> <sharedavail>";

fn line(out: &mut String, s: &CacheStats) {
    let _ = write!(
        out,
        "{:<17} {:>6} {:>6} {:>6} {:>4} {:>4} : tunables {:>4} {:>4} {:>4} : slabdata {:>6} {:>6} {:>6}",
        s.name,
        s.active_objs,
        s.num_objs,
        s.buffer_size,
        s.objs_per_slab,
        s.pages_per_slab,
        s.limit,
        s.batchcount,
        s.shared_factor,
        s.active_slabs,
        s.num_slabs,
        s.shared_avail
    );
}

/// Formats `caches` as `/proc/slabinfo` version 2.1.
pub fn slabinfo(caches: &[CacheStats]) -> String {
    let mut out = String::from(HEADER);
    out.push('\n');
    for s in caches {
        line(&mut out, s);
        out.push('\n');
    }
    out
}

/// Like [`slabinfo`], with the statistics columns Linux prints under
/// `CONFIG_DEBUG_SLAB` (`globalstat` and `cpustat`), filled from our counters
/// (`listallocs` = misses, `maxobjs` = num_objs now, `maxfreeable`,
/// `nodeallocs`, `remotefrees`, `alienoverflow` = 0), plus a trailing
/// `: ctorstat <ctor_calls> <dtor_calls>` group and a `: resizestat <resized>`
/// group (per-CPU arrays grown by dynamic resizing).
pub fn slabinfo_with_stats(caches: &[CacheStats]) -> String {
    let mut out = String::from(HEADER);
    out.push_str(" : globalstat <listallocs> <maxobjs> <grown> <reaped> <error> <maxfreeable> <nodeallocs> <remotefrees> <alienoverflow> : cpustat <allochit> <allocmiss> <freehit> <freemiss> : ctorstat <ctors> <dtors> : resizestat <resized>\n");
    for s in caches {
        line(&mut out, s);
        let _ = writeln!(
            out,
            " : globalstat {:>7} {:>6} {:>5} {:>5} {:>5} {:>5} {:>5} {:>5} {:>4} : cpustat {:>6} {:>6} {:>6} {:>6} : ctorstat {:>6} {:>6} : resizestat {:>4}",
            s.alloc_misses,
            s.num_objs,
            s.grown,
            s.reaped,
            s.errors,
            0,
            0,
            0,
            0,
            s.alloc_hits,
            s.alloc_misses,
            s.free_hits,
            s.free_misses,
            s.ctor_calls,
            s.dtor_calls,
            s.resized
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slabinfo_layout() {
        let s = CacheStats {
            name: "pgd".into(),
            active_objs: 3,
            num_objs: 4,
            buffer_size: 4096,
            objs_per_slab: 1,
            pages_per_slab: 1,
            limit: 24,
            batchcount: 12,
            active_slabs: 3,
            num_slabs: 4,
            ..Default::default()
        };
        let text = slabinfo(core::slice::from_ref(&s));
        let mut lines = text.lines();
        assert_eq!(lines.next(), Some("slabinfo - version: 2.1"));
        assert!(lines
            .next()
            .unwrap_or("")
            .starts_with("# name            <active_objs>"));
        assert_eq!(
            lines.next(),
            Some("pgd                    3      4   4096    1    1 : tunables   24   12    0 : slabdata      3      4      0")
        );
        assert!(slabinfo_with_stats(&[s]).contains(": cpustat"));
    }
}
