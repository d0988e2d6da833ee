//! The object cache's floor under a pgd pair, measured beside it.
//!
//! The seed's `pgd_alloc` + `pgd_free` is object-cache work plus what a
//! kernel does around it: on 2-level one pair of `pgd_cache`; on PAE one
//! pair of `pgd_cache` and three of `pmd_cache`, with `__pa` and three
//! `set_pgd` stores. [`CacheFloor`] times the object-cache part alone —
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
//!
//! [`PairByHand`] is the 2-level pgd pair's limit: the floor's token pair
//! plus what the pgd layer cannot leave out — `__pa` of the object (the pgd
//! is a physical address: CR3 takes it) and the per-CPU `pgd_allocs` and
//! `pgd_frees` bumps (a plain load and store each) — written by hand in one
//! loop. The gap between it and the kernel's pair is the pgd layer's
//! structure (the shape dispatch, the handles' trip through `OwnedPgd`, the
//! token state the compiler keeps in memory); the gap between it and the
//! freelist is the least any pgd pair over this object cache costs.

use crate::micro::{kerr, MicroError, Subject};
use objcache::{CacheBuilder, KmemCache};
use pgdcache::pages::SimPages;
use physmem::{LinearMap, Ram, SimMemory, PAGE_SIZE};
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use x86paging::PagingMode;

type Cache = KmemCache<SimPages<Ram>>;

/// The object-cache pairs of one `pgd_alloc` + `pgd_free` in a mode, alone.
pub struct CacheFloor {
    pgd: Cache,
    /// PAE: `pmd_cache` (three pairs per pgd pair).
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

/// 64 MiB of simulated RAM with poisoning off, as the bench's kernels
/// have.
fn sim_ram() -> Result<Arc<SimMemory>, MicroError> {
    let ram = 64 << 20;
    let pm = SimMemory::new(ram).map_err(|e| MicroError::Ram(ram, e.to_string()))?;
    Ok(Arc::new(pm.with_poisoning(false)))
}

impl CacheFloor {
    /// The caches of `mode`'s pgd system (64 MiB of simulated RAM,
    /// poisoning off as in the bench's kernels).
    pub fn new(mode: PagingMode) -> Result<CacheFloor, MicroError> {
        let pm = sim_ram()?;
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

    /// Object-cache pairs per measured operation (1, or 4 on PAE).
    pub fn pairs(&self) -> usize {
        if self.pmd.is_some() {
            4
        } else {
            1
        }
    }
}

/// The 2-level pgd pair written by hand (see the module docs): the token
/// pop, `__pa`, a counter bump, the push, a counter bump.
pub struct PairByHand {
    pgd: Cache,
    /// The direct map's window, as the kernel's fast path keeps it.
    linear: LinearMap,
    /// This CPU's `pgd_allocs` and `pgd_frees` slots, each on its own
    /// cache line as a per-CPU counter is.
    allocs: Box<CounterSlot>,
    frees: Box<CounterSlot>,
}

#[repr(align(64))]
struct CounterSlot(AtomicU64);

/// A per-CPU counter's bump: a plain load and store (the kernel's `bump`).
#[inline(always)]
fn bump(slot: &CounterSlot) {
    let c = &slot.0;
    c.store(c.load(Ordering::Relaxed).wrapping_add(1), Ordering::Relaxed);
}

impl PairByHand {
    /// A 2-level `pgd_cache` (page-sized, page-aligned, one CPU, no
    /// statistics) on 64 MiB of simulated RAM with poisoning off.
    pub fn new() -> Result<PairByHand, MicroError> {
        let pm = sim_ram()?;
        let page = PAGE_SIZE as usize;
        Ok(PairByHand {
            pgd: cache("pgd", page, page, &pm)?,
            linear: pm.linear().ok_or_else(|| MicroError::Kernel {
                what: "__pa",
                why: "the simulated RAM is not one window".into(),
            })?,
            allocs: Box::new(CounterSlot(AtomicU64::new(0))),
            frees: Box::new(CounterSlot(AtomicU64::new(0))),
        })
    }

    /// `(pgd_allocs, pgd_frees)` so far.
    pub fn counts(&self) -> (u64, u64) {
        let get = |s: &CounterSlot| s.0.load(Ordering::Relaxed);
        (get(&self.allocs), get(&self.frees))
    }
}

impl Subject for PairByHand {
    /// `iters` pairs as the thread acting as CPU 0, the pgd's address
    /// escaping as the kernel pair's does.
    fn run(&mut self, iters: u64) -> Result<(), MicroError> {
        let mut cpu = self.pgd.claim_cpu(0).map_err(|e| kerr("claim_cpu")(&e))?;
        for _ in 0..iters {
            let obj = cpu.alloc_obj().map_err(|e| kerr("alloc_obj")(&e))?;
            let Some(pgd) = self.linear.pa_of(obj.as_ptr()) else {
                let _ = cpu.free_obj(obj);
                return Err(MicroError::Kernel {
                    what: "__pa",
                    why: "an object outside the direct map".into(),
                });
            };
            bump(&self.allocs);
            black_box(pgd);
            cpu.free_obj(obj).map_err(|e| kerr("free_obj")(&e))?;
            bump(&self.frees);
        }
        Ok(())
    }
}

impl Subject for CacheFloor {
    /// `iters` operations as the thread acting as CPU 0: the pgd object
    /// (and on PAE three pmd objects) taken, the pgd's address escaping as
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
        for _ in 0..iters {
            let p = pgds.alloc_obj().map_err(oom)?;
            let a = pmds.alloc_obj().map_err(oom)?;
            let b = pmds.alloc_obj().map_err(oom)?;
            let c = pmds.alloc_obj().map_err(oom)?;
            black_box(p.as_ptr());
            pgds.free_obj(p).map_err(bad)?;
            for m in [a, b, c] {
                pmds.free_obj(m).map_err(bad)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pair_by_hand_takes_gives_back_and_counts_every_pair() {
        let mut p = PairByHand::new().unwrap();
        p.run(100).unwrap();
        assert_eq!(p.counts(), (100, 100));
        let st = p.pgd.stats();
        assert!(st.grown >= 1 && st.cpu_cached >= 1, "{st:?}");
        assert_eq!(st.live_objs, 0, "{st:?}");
    }

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
