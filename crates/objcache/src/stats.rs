//! Statistics and `/proc/slabinfo` (version 2.1) formatting.
//!
//! [`CacheStats`] is a snapshot of one cache: the slab-level figures that
//! `/proc/slabinfo` prints, plus the counters the pgdcache experiments need
//! (constructor/destructor calls, per-CPU hits and misses, grow/reap counts).
//! [`slabinfo`] renders a slice of snapshots exactly as Linux's
//! `/proc/slabinfo` version 2.1, [`slabinfo_with_stats`] exactly as a
//! `CONFIG_DEBUG_SLAB` kernel prints it (`globalstat`/`cpustat` columns),
//! and [`slabinfo_format`] can add our own `ctorstat`/`resizestat` groups,
//! which are not Linux's.

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
    /// Whether the per-CPU hit counters are kept ([`CacheBuilder::stats`],
    /// Linux's `STATS`); when not, `alloc_hits` and `free_hits` read 0.
    ///
    /// [`CacheBuilder::stats`]: crate::CacheBuilder::stats
    pub hit_stats: bool,
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

const HEADER: &str = "# name            <active_objs> <num_objs> <objsize> <objperslab> <pagesperslab> : tunables <limit> <batchcount> <sharedfactor> : slabdata <active_slabs> <num_slabs> <sharedavail>";
const STATS_HEADER: &str = " : globalstat <listallocs> <maxobjs> <grown> <reaped> <error> <maxfreeable> <nodeallocs> <remotefrees> <alienoverflow> : cpustat <allochit> <allocmiss> <freehit> <freemiss>";
const EXTRA_HEADER: &str = " : ctorstat <ctors> <dtors> : resizestat <resized>";

/// Which columns [`slabinfo_format`] prints.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SlabinfoColumns {
    /// Linux's `CONFIG_DEBUG_SLAB` statistics: the first line says
    /// `slabinfo - version: 2.1 (statistics)` and every cache gets the
    /// `globalstat` and `cpustat` groups, in Linux's widths.
    pub stats: bool,
    /// Ours, not Linux's: `: ctorstat <ctors> <dtors>` (constructor and
    /// destructor calls) and `: resizestat <resized>` (per-CPU arrays grown
    /// by dynamic resizing) after everything else. No tool that parses
    /// `/proc/slabinfo` knows these groups.
    pub extra: bool,
}

fn line(out: &mut String, s: &CacheStats) {
    // mm/slab_common.c cache_show().
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

/// Formats `caches` as `/proc/slabinfo` version 2.1, byte for byte what
/// Linux's SLAB allocator prints (`print_slabinfo_header` and
/// `cache_show` in `mm/slab_common.c`): the version line, the `# name`
/// column header, one line per cache.
pub fn slabinfo(caches: &[CacheStats]) -> String {
    slabinfo_format(caches, SlabinfoColumns::default())
}

/// Like [`slabinfo`], as a kernel built with `CONFIG_DEBUG_SLAB` prints it
/// (`slabinfo_show_stats` in `mm/slab.c`): `(statistics)` on the version
/// line, then `globalstat` and `cpustat` groups. The columns are filled
/// from our counters: `listallocs` = allocations that refilled a per-CPU
/// array (`alloc_misses`), `maxobjs` = `num_objs` now (we keep no
/// high-water mark), `grown`, `reaped`, `error`; `maxfreeable`,
/// `nodeallocs`, `remotefrees` and `alienoverflow` are 0 (no NUMA);
/// `cpustat` = per-CPU array hits and misses.
pub fn slabinfo_with_stats(caches: &[CacheStats]) -> String {
    slabinfo_format(
        caches,
        SlabinfoColumns {
            stats: true,
            extra: false,
        },
    )
}

/// `/proc/slabinfo` 2.1 with the chosen column groups (see
/// [`SlabinfoColumns`]; only `extra` adds columns that are not Linux's).
pub fn slabinfo_format(caches: &[CacheStats], cols: SlabinfoColumns) -> String {
    let mut out = String::from(if cols.stats {
        "slabinfo - version: 2.1 (statistics)\n"
    } else {
        "slabinfo - version: 2.1\n"
    });
    out.push_str(HEADER);
    if cols.stats {
        out.push_str(STATS_HEADER);
    }
    if cols.extra {
        out.push_str(EXTRA_HEADER);
    }
    out.push('\n');
    for s in caches {
        line(&mut out, s);
        if cols.stats {
            let _ = write!(
                out,
                " : globalstat {:>7} {:>6} {:>5} {:>4} {:>4} {:>4} {:>4} {:>4} {:>4} : cpustat {:>6} {:>6} {:>6} {:>6}",
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
            );
        }
        if cols.extra {
            let _ = write!(
                out,
                " : ctorstat {:>6} {:>6} : resizestat {:>4}",
                s.ctor_calls, s.dtor_calls, s.resized
            );
        }
        out.push('\n');
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
        let stats = slabinfo_with_stats(core::slice::from_ref(&s));
        assert!(stats.starts_with("slabinfo - version: 2.1 (statistics)\n"));
        assert!(stats.contains(": cpustat"));
        assert!(!stats.contains("ctorstat"));
        let extra = slabinfo_format(
            &[s],
            SlabinfoColumns {
                stats: true,
                extra: true,
            },
        );
        assert!(extra.contains(" : ctorstat      0      0 : resizestat    0\n"));
    }
}
