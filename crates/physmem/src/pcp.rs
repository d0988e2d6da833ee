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

use crate::list::FrameList;
use crate::page::Owner;

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
#[derive(Debug, Default)]
pub(crate) struct PcpSlot(pub(crate) crate::sync::Lock<Pcp>);

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
