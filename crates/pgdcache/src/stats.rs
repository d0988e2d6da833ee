//! The pgd system's statistics: per-CPU counters for the `pgd_alloc` fast
//! path (plain per-CPU memory, no locked instruction), shared counters for
//! the slow paths (constructors, conversions, faults), and the snapshot
//! [`KernelStats`] the reports print.

use crate::lock::LockStats;
use crate::prelude::*;
use core::sync::atomic::{AtomicU64, Ordering};

/// A per-CPU statistic, like the kernel's per-CPU counters: each CPU bumps
/// its own cache line with a plain load and store (no locked instruction on
/// the `pgd_alloc` fast path); readers sum the slots. Exact as long as each
/// CPU index is used by one thread at a time, as it is in a kernel.
#[derive(Debug)]
pub struct PerCpuStat {
    slots: Box<[PaddedU64]>,
}

#[derive(Debug, Default)]
#[repr(align(64))]
struct PaddedU64(AtomicU64);

impl PerCpuStat {
    pub(crate) fn new(cpus: usize) -> Self {
        PerCpuStat {
            slots: (0..cpus.max(1)).map(|_| PaddedU64::default()).collect(),
        }
    }

    /// Adds `n` on CPU `cpu`.
    #[inline]
    pub fn add(&self, cpu: usize, n: u64) {
        bump(self.slot(cpu), n);
    }

    /// CPU `cpu`'s own slot (CPUs beyond the slots share them modulo). A
    /// thread acting as the CPU looks it up once ([`crate::Kernel::claim_cpu`])
    /// and then bumps it with [`bump`]: no index arithmetic, no bounds check.
    #[inline]
    pub(crate) fn slot(&self, cpu: usize) -> &AtomicU64 {
        let n_slots = self.slots.len();
        // The caller's CPU is almost always in range: skip the division.
        let i = if cpu < n_slots { cpu } else { cpu % n_slots };
        &self.slots[i].0
    }

    /// The sum over all CPUs.
    pub fn sum(&self) -> u64 {
        self.slots
            .iter()
            .map(|s| s.0.load(Ordering::Relaxed))
            .fold(0, u64::wrapping_add)
    }
}

/// Adds `n` to one CPU's slot of a [`PerCpuStat`]: a plain load and store
/// (the slot's CPU is the only writer), never a locked instruction.
#[inline(always)]
pub(crate) fn bump(slot: &AtomicU64, n: u64) {
    slot.store(
        slot.load(Ordering::Relaxed).wrapping_add(n),
        Ordering::Relaxed,
    );
}

/// Counters of the pgd system (cumulative).
#[derive(Debug)]
pub struct Counters {
    /// `pgd_alloc` calls that succeeded (per CPU).
    pub pgd_allocs: PerCpuStat,
    /// `pgd_free` calls (per CPU).
    pub pgd_frees: PerCpuStat,
    /// Bytes zeroed or copied inside `pgd_alloc` itself, not in ctors (per CPU).
    pub alloc_bytes: PerCpuStat,
    /// `pgd_ctor` calls.
    pub pgd_ctors: AtomicU64,
    /// `pgd_dtor` calls.
    pub pgd_dtors: AtomicU64,
    /// `pmd_ctor` calls.
    pub pmd_ctors: AtomicU64,
    /// Bytes zeroed or copied by ctors.
    pub ctor_bytes: AtomicU64,
    /// Ticket refreshes at mm join (slab-ticket).
    pub ticket_refreshes: AtomicU64,
    /// Kernel-part entries written by `set_pmd_pte` in pgds other than swapper.
    pub propagated_entries: AtomicU64,
    /// `set_pmd_pte` calls.
    pub conversions: AtomicU64,
    /// Nanoseconds spent propagating conversions (pgds other than swapper).
    pub propagation_ns: AtomicU64,
    /// Entries copied by `vmalloc_fault`.
    pub vmalloc_faults: AtomicU64,
    /// `pgd_ctor`/`pgd_dtor` calls that failed (a ctor cannot return an
    /// error to the object cache; [`crate::Kernel::verify`] reports them).
    pub ctor_failures: AtomicU64,
}

impl Counters {
    pub(crate) fn new(cpus: usize) -> Self {
        Counters {
            pgd_allocs: PerCpuStat::new(cpus),
            pgd_frees: PerCpuStat::new(cpus),
            alloc_bytes: PerCpuStat::new(cpus),
            pgd_ctors: AtomicU64::new(0),
            pgd_dtors: AtomicU64::new(0),
            pmd_ctors: AtomicU64::new(0),
            ctor_bytes: AtomicU64::new(0),
            ticket_refreshes: AtomicU64::new(0),
            propagated_entries: AtomicU64::new(0),
            conversions: AtomicU64::new(0),
            propagation_ns: AtomicU64::new(0),
            vmalloc_faults: AtomicU64::new(0),
            ctor_failures: AtomicU64::new(0),
        }
    }
}

/// A snapshot of [`Counters`] plus lock and cache figures.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct KernelStats {
    /// `pgd_alloc` calls that succeeded.
    pub pgd_allocs: u64,
    /// `pgd_free` calls.
    pub pgd_frees: u64,
    /// Bytes zeroed or copied inside `pgd_alloc`.
    pub alloc_bytes: u64,
    /// `pgd_ctor` calls.
    pub pgd_ctors: u64,
    /// `pgd_dtor` calls.
    pub pgd_dtors: u64,
    /// `pmd_ctor` calls.
    pub pmd_ctors: u64,
    /// Bytes zeroed or copied by ctors.
    pub ctor_bytes: u64,
    /// Ticket refreshes.
    pub ticket_refreshes: u64,
    /// Entries propagated to pgds other than swapper.
    pub propagated_entries: u64,
    /// `set_pmd_pte` calls.
    pub conversions: u64,
    /// Nanoseconds spent propagating.
    pub propagation_ns: u64,
    /// Entries copied by `vmalloc_fault`.
    pub vmalloc_faults: u64,
    /// Length of `pgd_list`.
    pub pgd_list_len: usize,
    /// Live address spaces on `mmlist`.
    pub mmlist_len: usize,
    /// `pgd_lock` counters.
    pub pgd_lock: LockStats,
    /// `mmlist_lock` counters.
    pub mmlist_lock: LockStats,
}

impl KernelStats {
    /// Average bytes blitted per `pgd_alloc` (alloc path plus ctors).
    pub fn bytes_per_alloc(&self) -> f64 {
        if self.pgd_allocs == 0 {
            return 0.0;
        }
        (self.alloc_bytes + self.ctor_bytes) as f64 / self.pgd_allocs as f64
    }
}
