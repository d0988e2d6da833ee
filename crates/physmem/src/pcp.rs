//! Per-CPU page lists (`struct per_cpu_pages`, the "hot" list of Linux
//! 2.5.45 and later) and the notion of the executing CPU they need.
//!
//! Without them every order-0 allocation and free takes `zone->lock`; on
//! two CPUs running fork/exec/exit that lock and the free lists it guards
//! bounce between the caches and dominate the run. 2.5.69, the kernel of the
//! seed patch, already had them: each CPU keeps a short LIFO list of free
//! frames, refilled with `batch` frames under one `zone->lock` when it runs
//! empty and trimmed by `batch` frames when it reaches `high`. Frames on a
//! list stay *free* (`PG_FREE`, poisoned, owner [`Owner::Free`]) but are not
//! buddies: they do not merge until they go back to the zone.
//!
//! Which list to use is the executing CPU's ([`this_cpu`], the kernel's
//! `smp_processor_id()`). A thread that never called [`enter_cpu`] is not a
//! CPU and goes to the zone directly, so code that does not simulate CPUs
//! sees the plain buddy allocator. Without the `std` feature there are no
//! thread-locals: the embedding kernel installs its own CPU-number function
//! with [`set_cpu_id_fn`].
//!
//! Frame accounting stays exact: a CPU's frees and allocations are counted
//! in its own slot (as Linux keeps per-CPU `page_state`), so the hot path
//! touches no shared cache line; [`crate::PhysMemory::stats`] sums them.
//!
//! [`Owner::Free`]: crate::Owner::Free

use crate::addr::Frame;
use crate::list::FrameList;
use crate::mem::PhysMem;
use crate::page::{Owner, Page, PG_FREE, PG_POISON, PG_ZERO};
use crate::page_alloc::{FreeError, PhysMemory};
use core::sync::atomic::Ordering;

/// CPUs with a page list; a CPU number at or above it uses the zone.
pub const PCP_CPUS: usize = 64;

/// One CPU's page list and its share of the frame accounting.
#[derive(Debug, Default)]
pub(crate) struct Pcp {
    /// Free frames, hottest first.
    pub(crate) list: FrameList,
    /// This CPU's changes to the per-owner frame counts (frames it took
    /// from or gave to each owner, through its list).
    pub(crate) delta: [i64; Owner::COUNT],
}

/// A per-CPU list on its own cache line. The lock stands for the kernel's
/// `local_irq_save`: only its CPU takes it on the hot path; a drain or a
/// statistics read from another CPU takes it too.
#[repr(align(64))]
#[derive(Debug)]
pub(crate) struct PcpSlot(pub(crate) crate::sync::Lock<Pcp>);

impl Default for PcpSlot {
    fn default() -> Self {
        PcpSlot(crate::sync::Lock::new(&crate::sync::PCP, Pcp::default()))
    }
}

/// Sizes of the per-CPU lists (the kernel's `pcp->batch` and `pcp->high`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PcpConfig {
    /// Frames moved per trip to the zone.
    pub batch: u32,
    /// A list that reaches this many frames gives `batch` back.
    pub high: u32,
}

impl PcpConfig {
    /// The kernel's sizing: about a thousandth of the zone, at most 256 KiB,
    /// divided by four ("we effectively multiply by four below"); `high` is
    /// six batches.
    pub fn for_frames(frames: u64) -> Self {
        let batch = (frames / 1024).min(256 * 1024 / crate::PAGE_SIZE) / 4;
        let batch = batch.max(1) as u32;
        PcpConfig {
            batch,
            high: 6 * batch,
        }
    }
}

/// A list sizing that cannot work (`batch` must be ≥ 1 and `high` above it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "per-CPU page lists of batch {} and high {}: batch must be at least 1 and high above it",
    .0.batch,
    .0.high
)]
pub struct BadPcpConfig(pub PcpConfig);

/// Counters of the page lists.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PcpStats {
    /// Sizing.
    pub batch: u32,
    /// Sizing.
    pub high: u32,
    /// Frames on all lists now.
    pub frames: u64,
    /// Acquisitions of `zone->lock`, by anyone (allocations and frees that
    /// bypass the lists, refills, trims, drains).
    pub zone_locks: u64,
    /// Refills of a list from the zone.
    pub refills: u64,
    /// Trims of a list back to the zone.
    pub trims: u64,
}

#[cfg(all(feature = "std", not(loom_physmem)))]
std::thread_local! {
    static THIS_CPU: core::cell::Cell<usize> = const { core::cell::Cell::new(usize::MAX) };
}

// loom runs a model's threads on one OS thread: its own thread-locals.
#[cfg(loom_physmem)]
loom::thread_local! {
    static THIS_CPU: core::cell::Cell<usize> = core::cell::Cell::new(usize::MAX);
}

static CPU_ID_FN: spin::Once<fn() -> Option<usize>> = spin::Once::new();

/// Installs the kernel's CPU-number function (`smp_processor_id`) for
/// builds without `std`. The first call wins.
pub fn set_cpu_id_fn(f: fn() -> Option<usize>) {
    CPU_ID_FN.call_once(|| f);
}

/// The executing CPU, if this thread is one.
#[inline]
pub fn this_cpu() -> Option<usize> {
    #[cfg(feature = "std")]
    {
        let c = THIS_CPU.with(|c| c.get());
        if c != usize::MAX {
            return Some(c);
        }
    }
    CPU_ID_FN.get().and_then(|f| f())
}

/// Makes the calling thread CPU `cpu` until the guard is dropped (a
/// simulated CPU's thread calls it once at start).
#[cfg(feature = "std")]
pub fn enter_cpu(cpu: usize) -> CpuGuard {
    let prev = THIS_CPU.with(|c| c.replace(cpu));
    CpuGuard { prev }
}

/// Restores the thread's previous CPU number when dropped.
#[cfg(feature = "std")]
#[derive(Debug)]
#[must_use = "the thread stops being the CPU when the guard is dropped"]
pub struct CpuGuard {
    prev: usize,
}

#[cfg(feature = "std")]
impl Drop for CpuGuard {
    fn drop(&mut self) {
        THIS_CPU.with(|c| c.set(self.prev));
    }
}

impl<M: PhysMem> PhysMemory<M> {
    /// The per-CPU lists' sizing.
    pub fn pcp_config(&self) -> PcpConfig {
        PcpConfig {
            batch: self.pcp_batch.load(Ordering::Relaxed),
            high: self.pcp_high.load(Ordering::Relaxed),
        }
    }

    /// Resizes every per-CPU list: `batch` ≥ 1 and `high` > `batch`. A
    /// list longer than the new `high` is trimmed at its next free.
    pub fn set_pcp_config(&self, cfg: PcpConfig) -> Result<(), BadPcpConfig> {
        if cfg.batch == 0 || cfg.high <= cfg.batch {
            return Err(BadPcpConfig(cfg));
        }
        self.pcp_batch.store(cfg.batch, Ordering::Relaxed);
        self.pcp_high.store(cfg.high, Ordering::Relaxed);
        Ok(())
    }

    /// The per-CPU lists' sizing and counters.
    pub fn pcp_stats(&self) -> PcpStats {
        let frames = self.pcp.iter().map(|p| p.0.lock().list.len() as u64).sum();
        let cfg = self.pcp_config();
        let area = self.zone.lock();
        PcpStats {
            batch: cfg.batch,
            high: cfg.high,
            frames,
            zone_locks: area.locks,
            refills: area.refills,
            trims: area.trims,
        }
    }

    /// `drain_all_pages`: gives every per-CPU list back to the zone, where
    /// its frames merge again. Returns the frames moved.
    pub fn drain_pcp(&self) -> u64 {
        let mut moved = 0;
        for p in self.pcp.iter() {
            let mut pcp = p.0.lock();
            if pcp.list.is_empty() {
                continue;
            }
            let mut area = self.lock_zone();
            while let Some(f) = pcp.list.pop(&self.pages) {
                self.merge_free(&mut area, f, 0);
                moved += 1;
            }
        }
        moved
    }

    /// One frame from the CPU's list, refilled with `batch` frames from the
    /// zone if it is empty. `None` if the zone has none either.
    pub(crate) fn alloc_from_pcp(&self, slot: &PcpSlot, owner: Owner) -> Option<(Frame, bool)> {
        let mut pcp = slot.0.lock();
        if pcp.list.is_empty() {
            let mut area = self.lock_zone();
            area.refills += 1;
            for _ in 0..self.pcp_batch.load(Ordering::Relaxed) {
                let Some(f) = self.take_block(&mut area, 0) else {
                    break;
                };
                if let Some(p) = self.pages.get(f) {
                    // Free, not a buddy; the poison and zero marks stay.
                    p.flags.store(
                        PG_FREE | (p.flags.load(Ordering::Relaxed) & (PG_POISON | PG_ZERO)),
                        Ordering::Release,
                    );
                    p.private.store(0, Ordering::Relaxed);
                }
                // Just taken off the zone's list, so not linked: cannot fail.
                let _ = pcp.list.add(&self.pages, f);
            }
        }
        let f = pcp.list.pop(&self.pages)?;
        pcp.delta[Owner::Free as usize] -= 1;
        pcp.delta[owner as usize] += 1;
        drop(pcp);
        let zero = self.mark_allocated(f, 0, owner);
        Some((f, zero))
    }

    /// A single frame (already poisoned, `poison` its flags: `PG_POISON`
    /// or `PG_ZERO` or neither) onto the
    /// CPU's list; a list that reaches `high` gives `batch` frames back to
    /// the zone.
    pub(crate) fn free_to_pcp(
        &self,
        slot: &PcpSlot,
        frame: Frame,
        p: &Page,
        poison: u32,
    ) -> Result<(), FreeError> {
        if p.flags.fetch_or(PG_FREE, Ordering::AcqRel) & PG_FREE != 0 {
            return Err(FreeError::DoubleFree(frame));
        }
        let owner = p.owner();
        p.flags.store(PG_FREE | poison, Ordering::Release);
        p.owner.store(Owner::Free as u32, Ordering::Relaxed);
        p.count.store(0, Ordering::Relaxed);
        p.private.store(0, Ordering::Relaxed);
        let mut pcp = slot.0.lock();
        pcp.delta[owner as usize] -= 1;
        pcp.delta[Owner::Free as usize] += 1;
        // Just marked free by us, on no list: cannot fail.
        let _ = pcp.list.add(&self.pages, frame);
        if pcp.list.len() >= self.pcp_high.load(Ordering::Relaxed) as usize {
            let mut area = self.lock_zone();
            area.trims += 1;
            for _ in 0..self.pcp_batch.load(Ordering::Relaxed) {
                let Some(f) = pcp.list.pop(&self.pages) else {
                    break;
                };
                self.merge_free(&mut area, f, 0);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_sizing() {
        // 64 MiB: 16 384 frames / 1024 = 16, / 4 = 4.
        assert_eq!(
            PcpConfig::for_frames(16_384),
            PcpConfig { batch: 4, high: 24 }
        );
        // 1 GiB: capped at 256 KiB = 64 frames, / 4 = 16.
        assert_eq!(
            PcpConfig::for_frames(262_144),
            PcpConfig {
                batch: 16,
                high: 96
            }
        );
        assert_eq!(PcpConfig::for_frames(100).batch, 1);
    }

    #[cfg(feature = "std")]
    #[test]
    fn cpu_guard_nests_and_restores() {
        assert_eq!(this_cpu(), None);
        {
            let _a = enter_cpu(3);
            assert_eq!(this_cpu(), Some(3));
            {
                let _b = enter_cpu(5);
                assert_eq!(this_cpu(), Some(5));
            }
            assert_eq!(this_cpu(), Some(3));
            std::thread::spawn(|| assert_eq!(this_cpu(), None))
                .join()
                .unwrap();
        }
        assert_eq!(this_cpu(), None);
    }
}

#[cfg(all(test, feature = "std"))]
mod alloc_tests {
    use super::*;
    use crate::page_alloc::tests::{assert_all_back, pm, take_every_frame};
    use crate::{AllocError, FrameState, FreeError, PhysMem};

    #[test]
    fn cpu_page_lists_refill_trim_and_account() {
        let pm = pm();
        let free = pm.free_frames();
        let cfg = pm.pcp_stats();
        assert!(cfg.batch >= 1 && cfg.high == 6 * cfg.batch);
        let _cpu = crate::pcp::enter_cpu(0);
        let a = pm.alloc_frame(Owner::UserData).unwrap();
        let st = pm.pcp_stats();
        assert_eq!((st.refills, st.frames), (1, u64::from(cfg.batch) - 1));
        assert_eq!(pm.stats().of(Owner::UserData), 1);
        assert_eq!(pm.free_frames(), free - 1);
        // A frame on a list is free: poisoned, flagged, not a buddy.
        pm.free_frame(a).unwrap();
        assert_eq!(pm.frame_state(a), FrameState::Freed);
        assert_eq!(pm.load_u32(a.start()).unwrap(), 0x6b6b_6b6b);
        assert_eq!(pm.free_frame(a), Err(FreeError::DoubleFree(a)));
        assert_eq!(pm.stats().of(Owner::UserData), 0);
        // LIFO: the hottest frame comes back first, without the zone.
        let locks = pm.pcp_stats().zone_locks;
        let b = pm.alloc_frame(Owner::UserTable).unwrap();
        assert_eq!(b, a);
        assert_eq!(pm.pcp_stats().zone_locks, locks);
        pm.free_frame(b).unwrap();
        // Many frames: the list is refilled and trimmed by batches, and
        // never holds `high` frames after a free.
        let got: std::vec::Vec<_> = (0..200)
            .map(|_| pm.alloc_frame(Owner::Slab).unwrap())
            .collect();
        assert_eq!(pm.stats().of(Owner::Slab), 200);
        for f in got {
            pm.free_frame(f).unwrap();
            assert!(pm.pcp_stats().frames < u64::from(cfg.high));
        }
        let st = pm.pcp_stats();
        assert!(st.refills >= 200 / u64::from(cfg.batch), "{st:?}");
        assert!(st.trims >= 1, "{st:?}");
        // Higher orders never use the lists.
        let big = pm.alloc_pages(2, Owner::Slab).unwrap();
        pm.free_pages(big, 2).unwrap();
        assert_all_back(&pm, free);
    }

    #[test]
    fn page_lists_can_be_resized_and_refuse_nonsense() {
        let pm = pm();
        let free = pm.free_frames();
        for bad in [(0, 5), (4, 4), (4, 2)] {
            let cfg = PcpConfig {
                batch: bad.0,
                high: bad.1,
            };
            assert_eq!(pm.set_pcp_config(cfg), Err(BadPcpConfig(cfg)));
        }
        let cfg = PcpConfig { batch: 3, high: 5 };
        pm.set_pcp_config(cfg).unwrap();
        assert_eq!(pm.pcp_config(), cfg);
        let _cpu = crate::pcp::enter_cpu(0);
        let f = pm.alloc_frame(Owner::UserData).unwrap();
        assert_eq!(pm.pcp_stats().frames, 2);
        let more: std::vec::Vec<_> = (0..5)
            .map(|_| pm.alloc_frame(Owner::UserData).unwrap())
            .collect();
        pm.free_frame(f).unwrap();
        for g in more {
            pm.free_frame(g).unwrap();
            assert!(pm.pcp_stats().frames < 5);
        }
        assert_all_back(&pm, free);
    }

    #[test]
    fn frames_cross_cpus_and_exhaustion_drains_the_lists() {
        let pm = std::sync::Arc::new(pm());
        let free = pm.free_frames();
        // CPU 1 parks frames on its list.
        let parked = std::thread::scope(|s| {
            s.spawn(|| {
                let _cpu = crate::pcp::enter_cpu(1);
                let f = pm.alloc_frame(Owner::UserData).unwrap();
                pm.free_frame(f).unwrap();
                pm.pcp_stats().frames
            })
            .join()
            .unwrap()
        });
        assert!(parked > 0);
        // CPU 0 takes every free frame, CPU 1's included: no frame is lost
        // to a list, and the failure is a clean out-of-memory.
        let _cpu = crate::pcp::enter_cpu(0);
        let got = take_every_frame(&pm);
        assert_eq!(got.len() as u64, free);
        assert_eq!(pm.free_frames(), 0);
        // Freed on two CPUs (half each), with the accounting exact.
        let (mine, theirs) = got.split_at(got.len() / 2);
        std::thread::scope(|s| {
            s.spawn(|| {
                let _cpu = crate::pcp::enter_cpu(1);
                for &f in theirs {
                    pm.free_frame(f).unwrap();
                }
            });
            for &f in mine {
                pm.free_frame(f).unwrap();
            }
        });
        assert_eq!(pm.stats().of(Owner::UserData), 0);
        assert_all_back(&pm, free);
    }

    #[test]
    fn two_cpus_churn_and_injection_on_the_list_path() {
        let pm = std::sync::Arc::new(pm());
        let free = pm.free_frames();
        std::thread::scope(|s| {
            for cpu in 0..2 {
                let pm = &pm;
                s.spawn(move || {
                    let _cpu = crate::pcp::enter_cpu(cpu);
                    let mut held = std::vec::Vec::new();
                    for i in 0..20_000u32 {
                        let f = pm.alloc_pages(i % 7 / 6, Owner::Slab).unwrap();
                        pm.store_u64(f.start(), u64::from(i)).unwrap();
                        held.push((f, i % 7 / 6));
                        if held.len() > 40 || i % 3 == 0 {
                            let (f, o) = held.swap_remove(i as usize % held.len());
                            pm.free_pages(f, o).unwrap();
                        }
                    }
                    for (f, o) in held {
                        pm.free_pages(f, o).unwrap();
                    }
                });
            }
        });
        assert_eq!(pm.stats().of(Owner::Slab), 0);
        assert_all_back(&pm, free);
        // Injection is decided per request, before any list.
        let _cpu = crate::pcp::enter_cpu(0);
        pm.faults().fail_nth(2);
        let a = pm.alloc_frame(Owner::Slab).unwrap();
        assert!(matches!(
            pm.alloc_frame(Owner::Slab),
            Err(AllocError::Injected { .. })
        ));
        pm.free_frame(a).unwrap();
        assert_eq!(pm.free_frames(), free);
    }
}
