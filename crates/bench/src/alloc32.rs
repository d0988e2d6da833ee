//! The object cache under the pgds against the C library's allocator: a
//! 32-byte `kmem_cache_alloc` + `kmem_cache_free` pair on one CPU against
//! `malloc` + `free` of 32 bytes, measured in the same interleaved rounds.
//!
//! 32 bytes is the PAE pgd (four 8-byte entries), the object the seed puts
//! in its own `pgd_cache` on PAE. The baseline is `std::alloc::System`
//! (glibc's `malloc` on Linux, whose thread cache makes a hot 32-byte pair
//! about as cheap as an allocator can be without per-CPU state). Each
//! contender is a [`Subject`]; the objcache entry points measured are
//! [`ObjcachePerCall`] (`alloc_on`/`free_on`: each call takes its CPU slot's
//! lock, the API any thread may call), [`ObjcacheToken`] (the zero-atomic
//! per-CPU token path, raw pointers: `free` looks the pointer up and
//! checks it) and [`ObjcacheTokenObj`] (the token path with `Obj` handles,
//! which prove what `free` would check, as `kmem_cache_free`'s contract
//! does in a kernel). The caches run in the production configuration: no
//! per-CPU hit counters (`CacheBuilder::stats(false)`, Linux without
//! `STATS`).
//!
//! [`PerCallFloor`] is no allocator: two uncontended `lock cmpxchg` +
//! release-store pairs around a `Vec` pop and push, the least any per-call
//! path must do (a caller that is not its CPU's owner takes a lock on
//! alloc and on free). It is the per-call target's limit, measured in the
//! same rounds.
//!
//! Every object is touched once (one byte written) so that neither side
//! returns memory it never reaches.
#![allow(unsafe_code)]

use crate::micro::{adaptive_rounds, kerr, MicroError, Ratio, Subject, Timing};
use benchstats::Rounds;
use objcache::pairbench::AtomicFloor;
use objcache::{CacheBuilder, KmemCache, SystemPageSource};
use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::ptr::NonNull;

/// Object size of the measurement (a PAE pgd).
pub const OBJ: usize = 32;

/// `malloc` + `free` of [`OBJ`] bytes through `std::alloc::System`, at
/// the natural alignment of a `usize` (glibc's plain `malloc` path).
pub struct SystemMalloc {
    layout: Layout,
}

impl SystemMalloc {
    /// The 32-byte layout.
    pub fn new() -> Result<SystemMalloc, MicroError> {
        let layout = Layout::from_size_align(OBJ, std::mem::align_of::<usize>()).map_err(|e| {
            MicroError::Kernel {
                what: "malloc layout",
                why: e.to_string(),
            }
        })?;
        Ok(SystemMalloc { layout })
    }
}

impl Subject for SystemMalloc {
    fn run(&mut self, iters: u64) -> Result<(), MicroError> {
        for _ in 0..iters {
            // SAFETY: `layout` has a non-zero size (OBJ = 32).
            let p = unsafe { System.alloc(self.layout) };
            let Some(p) = NonNull::new(p) else {
                return Err(MicroError::Kernel {
                    what: "malloc",
                    why: format!("out of memory for {OBJ} bytes"),
                });
            };
            // SAFETY: `p` is a live allocation of OBJ > 0 bytes that we own.
            unsafe { p.as_ptr().write_volatile(1) };
            // SAFETY: `p` came from `System.alloc` with this same layout and
            // is freed exactly once.
            unsafe { System.dealloc(black_box(p).as_ptr(), self.layout) };
        }
        Ok(())
    }
}

/// A 32-byte object cache with one CPU slot, on the host's pages.
pub fn cache() -> Result<KmemCache<SystemPageSource>, MicroError> {
    CacheBuilder::new("bench-32", OBJ)
        .cpus(1)
        .stats(false)
        .build(SystemPageSource)
        .map_err(|e| MicroError::Kernel {
            what: "kmem_cache_create",
            why: e.to_string(),
        })
}

/// objcache's per-call API: `alloc_on(0)` + `free_on(0)` (each takes CPU
/// 0's slot lock).
pub struct ObjcachePerCall {
    cache: KmemCache<SystemPageSource>,
}

impl ObjcachePerCall {
    /// A fresh cache.
    pub fn new() -> Result<ObjcachePerCall, MicroError> {
        Ok(ObjcachePerCall { cache: cache()? })
    }
}

impl Subject for ObjcachePerCall {
    fn run(&mut self, iters: u64) -> Result<(), MicroError> {
        for _ in 0..iters {
            let p = self
                .cache
                .alloc_on(0)
                .map_err(|e| kerr("kmem_cache_alloc")(&e))?;
            // SAFETY: `p` is a live OBJ-byte object the cache handed us.
            unsafe { p.as_ptr().write_volatile(1) };
            self.cache
                .free_on(0, black_box(p))
                .map_err(|e| kerr("kmem_cache_free")(&e))?;
        }
        Ok(())
    }
}

/// objcache's token path: the thread claims CPU 0's slot
/// (`KmemCache::claim_cpu`, the kernel's `get_cpu()` made static), so a hit
/// is a pop from a plain array and a free a push.
pub struct ObjcacheToken {
    cache: KmemCache<SystemPageSource>,
}

impl ObjcacheToken {
    /// A fresh cache.
    pub fn new() -> Result<ObjcacheToken, MicroError> {
        Ok(ObjcacheToken { cache: cache()? })
    }
}

impl Subject for ObjcacheToken {
    fn run(&mut self, iters: u64) -> Result<(), MicroError> {
        let mut cpu = self.cache.claim_cpu(0).map_err(|e| kerr("claim_cpu")(&e))?;
        for _ in 0..iters {
            let p = cpu.alloc().map_err(|e| kerr("kmem_cache_alloc")(&e))?;
            // SAFETY: `p` is a live OBJ-byte object the cache handed us.
            unsafe { p.as_ptr().write_volatile(1) };
            cpu.free(black_box(p))
                .map_err(|e| kerr("kmem_cache_free")(&e))?;
        }
        Ok(())
    }
}

/// objcache's token path with `Obj` handles (`alloc_obj`/`free_obj`: the
/// handle proves the object is this cache's and allocated, so the free
/// pushes it without a lookup).
pub struct ObjcacheTokenObj {
    cache: KmemCache<SystemPageSource>,
}

impl ObjcacheTokenObj {
    /// A fresh cache.
    pub fn new() -> Result<ObjcacheTokenObj, MicroError> {
        Ok(ObjcacheTokenObj { cache: cache()? })
    }
}

impl Subject for ObjcacheTokenObj {
    fn run(&mut self, iters: u64) -> Result<(), MicroError> {
        let mut cpu = self.cache.claim_cpu(0).map_err(|e| kerr("claim_cpu")(&e))?;
        for _ in 0..iters {
            let o = cpu.alloc_obj().map_err(|e| kerr("kmem_cache_alloc")(&e))?;
            // The object's address escapes to the optimiser once, as
            // malloc's does (`black_box(p)` before its `free`); the handle
            // goes back as a caller holds it.
            let p = black_box(o.as_ptr());
            // SAFETY: `p` is a live OBJ-byte object the cache handed us.
            unsafe { p.as_ptr().write_volatile(1) };
            cpu.free_obj(o)
                .map_err(|e| kerr("kmem_cache_free")(&e.why))?;
        }
        Ok(())
    }
}

/// The per-call limit (module docs): objcache's own
/// [`AtomicFloor`] (a test-and-set lock
/// taken and released around a `Vec` pop, and again around the push) over
/// one object it owns.
pub struct PerCallFloor {
    floor: AtomicFloor,
    _obj: Box<[u8; OBJ]>,
}

impl PerCallFloor {
    /// One object on the list.
    pub fn new() -> PerCallFloor {
        let mut obj = Box::new([0u8; OBJ]);
        let floor = AtomicFloor::new(NonNull::from(&mut obj[0]));
        PerCallFloor { floor, _obj: obj }
    }
}

impl Default for PerCallFloor {
    fn default() -> Self {
        Self::new()
    }
}

impl Subject for PerCallFloor {
    fn run(&mut self, iters: u64) -> Result<(), MicroError> {
        for _ in 0..iters {
            let Some(p) = self.floor.pop() else {
                return Err(MicroError::Kernel {
                    what: "per-call floor",
                    why: "its list is empty".into(),
                });
            };
            // SAFETY: `p` points into `_obj`, which we own.
            unsafe { p.as_ptr().write_volatile(1) };
            let p = black_box(p);
            self.floor.push(p);
        }
        Ok(())
    }
}

/// One objcache entry point against `malloc`.
#[derive(Clone, Debug, serde::Serialize)]
pub struct AllocatorRow {
    /// The entry point (`per-call alloc_on/free_on`).
    pub what: String,
    /// ns per objcache pair.
    pub ns: Timing,
    /// ns per `malloc` + `free` pair (the same rounds).
    pub malloc_ns: Timing,
    /// `malloc` time / objcache time, paired by round.
    pub vs_malloc: Ratio,
}

/// [`ObjcachePerCall`]'s row.
pub const PER_CALL: &str = "per-call alloc_on/free_on";
/// [`ObjcacheToken`]'s row.
pub const TOKEN_RAW: &str = "token (claim_cpu), raw pointers";
/// [`ObjcacheTokenObj`]'s row.
pub const TOKEN_OBJ: &str = "token (claim_cpu), Obj handles";
/// [`PerCallFloor`]'s row.
pub const PER_CALL_FLOOR: &str = "limit: 2 x (lock cmpxchg + store), no allocator";

/// An objcache entry point by name, ready to be timed.
pub type Contender = (&'static str, Box<dyn Subject>);

/// The objcache entry points measured, by name (the token path joins this
/// list as one more `Subject`).
pub fn contenders() -> Result<Vec<Contender>, MicroError> {
    Ok(vec![
        (
            PER_CALL,
            Box::new(ObjcachePerCall::new()?) as Box<dyn Subject>,
        ),
        (
            TOKEN_RAW,
            Box::new(ObjcacheToken::new()?) as Box<dyn Subject>,
        ),
        (
            TOKEN_OBJ,
            Box::new(ObjcacheTokenObj::new()?) as Box<dyn Subject>,
        ),
        (
            PER_CALL_FLOOR,
            Box::new(PerCallFloor::new()) as Box<dyn Subject>,
        ),
    ])
}

/// Measures every objcache entry point of [`contenders`] and `malloc` in
/// the same interleaved rounds, `iters` pairs per round.
pub fn rows(rounds: &Rounds, iters: u64) -> Result<Vec<AllocatorRow>, MicroError> {
    let mut malloc = SystemMalloc::new()?;
    let mut named = contenders()?;
    let n = named.len();
    let mut refs: Vec<&mut dyn Subject> = vec![&mut malloc];
    for (_, s) in named.iter_mut() {
        refs.push(s.as_mut());
    }
    let pairs: Vec<(usize, usize)> = (1..=n).map(|i| (0, i)).collect();
    let t = adaptive_rounds(&mut refs, rounds, &pairs, iters)?;
    Ok(named
        .iter()
        .enumerate()
        .map(|(i, (what, _))| AllocatorRow {
            what: (*what).to_string(),
            ns: Timing::of(t[i + 1].clone()),
            malloc_ns: Timing::of(t[0].clone()),
            vs_malloc: Ratio::paired(&t[0], &t[i + 1]),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_sides_run_and_give_a_finite_ratio() {
        let r = rows(&Rounds::fixed(3), 2_000).unwrap();
        assert_eq!(r.len(), 4);
        assert_eq!(r[0].ns.rounds, 3);
        assert!(r[0].vs_malloc.median.is_finite() && r[0].vs_malloc.median > 0.0);
    }
}
