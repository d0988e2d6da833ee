//! The object cache's floor under a pgd pair, measured beside it.
//!
//! The seed's `pgd_alloc` + `pgd_free` is object-cache work plus what a
//! kernel does around it: on 2-level one pair of `pgd_cache`; on PAE one
//! pair of `pgd_cache` and a batch of three of `pmd_cache` (`alloc_bulk`,
//! `free_bulk`: `kmem_cache_alloc_bulk`), with `__pa` and three `set_pgd`
//! stores. [`CacheFloor`] times the object-cache part alone —
//! the same pops and pushes on caches of the kernel's geometry (object
//! size, alignment, one CPU, no statistics) over the same kind of simulated
//! RAM, through a claimed CPU's token with `Obj` handles, as an `OwnedPgd`
//! holds them — and nothing else: no `__pa`, no `set_pgd`, no counters, no
//! scheme. `pgdcache bench` runs it in the same interleaved rounds as the
//! pgd pairs, `uncached` and the bare freelist, so its ratios are paired:
//! the gap between this row and a pgd pair is what the pgd layer adds; the
//! gap between this row and the freelist is the object cache's own
//! protocol (the pending-request check that stands in for Linux's drain
//! IPI, the owned flag a checked free reads, the handle's cache compare).

use crate::micro::{kerr, MicroError, Subject};
use objcache::{CacheBuilder, KmemCache};
use pgdcache::pages::SimPages;
use physmem::{Ram, SimMemory, PAGE_SIZE};
use std::hint::black_box;
use std::sync::Arc;
use x86paging::PagingMode;

type Cache = KmemCache<SimPages<Ram>>;

/// The object-cache pairs of one `pgd_alloc` + `pgd_free` in a mode, alone.
pub struct CacheFloor {
    pgd: Cache,
    /// PAE: `pmd_cache` (a batch of three per pgd pair).
    pmd: Option<Cache>,
}

/// A cache of `size`-byte objects aligned to `align`, one CPU, no
/// statistics (the bench's configuration of the kernel's caches).
fn cache(
    name: &'static str,
    size: usize,
    align: usize,
    pm: &Arc<SimMemory>,
) -> Result<Cache, MicroError> {
    CacheBuilder::new(name, size)
        .align(align)
        .cpus(1)
        .stats(false)
        .build(SimPages::new(pm.clone()))
        .map_err(|e| kerr("object cache")(&e))
}

impl CacheFloor {
    /// The caches of `mode`'s pgd system (64 MiB of simulated RAM,
    /// poisoning off as in the bench's kernels).
    pub fn new(mode: PagingMode) -> Result<CacheFloor, MicroError> {
        let ram = 64 << 20;
        let pm = Arc::new(
            SimMemory::new(ram)
                .map_err(|e| MicroError::Ram(ram, e.to_string()))?
                .with_poisoning(false),
        );
        let page = PAGE_SIZE as usize;
        let pae = mode == PagingMode::Pae;
        let align = if pae { 32 } else { page };
        Ok(CacheFloor {
            pgd: cache("pgd", mode.pgd_bytes() as usize, align, &pm)?,
            pmd: if pae {
                Some(cache("pmd", page, page, &pm)?)
            } else {
                None
            },
        })
    }

    /// Objects taken and given back per measured operation (1, or 4 on
    /// PAE: the pgd, and three pmds as one batch).
    pub fn pairs(&self) -> usize {
        if self.pmd.is_some() {
            4
        } else {
            1
        }
    }
}

impl Subject for CacheFloor {
    /// `iters` operations as the thread acting as CPU 0: the pgd object
    /// (and on PAE a batch of three pmd objects) taken, the pgd's address escaping as
    /// the pgd pair's does, then everything given back in `pgd_free`'s
    /// order.
    fn run(&mut self, iters: u64) -> Result<(), MicroError> {
        let mut pgds = self.pgd.claim_cpu(0).map_err(|e| kerr("claim_cpu")(&e))?;
        let oom = |e: objcache::AllocError| kerr("alloc_obj")(&e);
        let bad = |e: objcache::ObjFreeError| kerr("free_obj")(&e);
        let Some(pmd) = &self.pmd else {
            for _ in 0..iters {
                let p = pgds.alloc_obj().map_err(oom)?;
                black_box(p.as_ptr());
                pgds.free_obj(p).map_err(bad)?;
            }
            return Ok(());
        };
        let mut pmds = pmd.claim_cpu(0).map_err(|e| kerr("claim_cpu")(&e))?;
        let bad3 = |e: objcache::ObjsFreeError<3>| kerr("free_bulk")(&e);
        for _ in 0..iters {
            let p = pgds.alloc_obj().map_err(oom)?;
            let m = pmds.alloc_bulk::<3>().map_err(oom)?;
            black_box(p.as_ptr());
            pgds.free_obj(p).map_err(bad)?;
            pmds.free_bulk(m).map_err(bad3)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_floor_takes_and_gives_back_what_the_mode_does() {
        for (mode, pairs) in [(PagingMode::TwoLevel, 1), (PagingMode::Pae, 4)] {
            let mut f = CacheFloor::new(mode).unwrap();
            assert_eq!(f.pairs(), pairs);
            f.run(100).unwrap();
            // Objects were taken (the caches grew and keep them on the
            // CPU's array) and every one went back.
            let caches = std::iter::once(&f.pgd).chain(f.pmd.as_ref());
            let held: Vec<_> = caches.map(|c| c.stats()).collect();
            assert_eq!(held.len(), pairs.min(2), "{mode}");
            for st in held {
                assert!(st.grown >= 1 && st.cpu_cached >= 1, "{mode}: {st:?}");
                assert_eq!(st.live_objs, 0, "{mode}: {st:?}");
            }
        }
    }
}
