//! `swapper_pg_dir` and the memory it lives in: the reference every pgd's
//! kernel part is copied from, and the few operations on a pgd that copy it
//! (`pgd_ctor`'s `memcpy`/`memset`).
//!
//! Every part of the pgd system holds one `Swapper` (through an `Arc`,
//! since the object caches' constructors need it too): the physical memory,
//! the paging mode, the address of `swapper_pg_dir`, the shared counters and
//! the negative-model switch. It owns no lock and makes no scheme decision.

use crate::bug::Bugs;
use crate::error::KernelError;
use crate::stats::Counters;
use alloc::sync::Arc;
use physmem::{DirectMap, MemError, PhysAddr, PhysMem, PhysMemory};
use x86paging::boot::KernelSpace;
use x86paging::table::{entry_pa_at, read_entry, write_entry};
use x86paging::{Entry, PagingMode};

/// Memory the pgd system can run on: physical memory with a direct map
/// (the simulator's `Ram`, or a kernel's own lowmem, [`physmem::Lowmem`]).
pub trait KernelMem: PhysMem + DirectMap + Send + Sync + 'static {}

impl<T: PhysMem + DirectMap + Send + Sync + 'static> KernelMem for T {}

/// `swapper_pg_dir` in its memory, with what every pgd operation shares.
pub(crate) struct Swapper<M: KernelMem> {
    pub(crate) pm: Arc<PhysMemory<M>>,
    pub(crate) mode: PagingMode,
    /// `swapper_pg_dir`.
    pub(crate) pgd: PhysAddr,
    pub(crate) counters: Counters,
    pub(crate) bugs: Bugs,
    /// The address space boot built, given back when the last user of
    /// swapper is gone (see `Drop`).
    boot: Arc<KernelSpace>,
}

impl<M: KernelMem> Swapper<M> {
    pub(crate) fn new(pm: Arc<PhysMemory<M>>, ks: &Arc<KernelSpace>, cpus: usize) -> Self {
        Swapper {
            pm,
            mode: ks.mode,
            pgd: ks.pgd,
            counters: Counters::new(cpus),
            bugs: Bugs::default(),
            boot: ks.clone(),
        }
    }

    /// The kernel part of a pgd: entries `lo..hi`.
    pub(crate) fn kernel_range(&self) -> (usize, usize) {
        (self.mode.user_ptrs_per_pgd(), self.mode.ptrs_per_pgd())
    }

    /// True when a kernel entry change must be written into other pgds:
    /// 2-level, where the pmd is folded into the pgd (`PTRS_PER_PMD == 1`).
    /// Elsewhere the kernel's large pages live in pmds every pgd shares.
    pub(crate) fn propagates(&self) -> bool {
        self.mode.ptrs_per_pmd() == 1
    }

    /// Physical address of entry `index` of `pgd`.
    pub(crate) fn entry_at(&self, pgd: PhysAddr, index: usize) -> PhysAddr {
        entry_pa_at(self.mode, pgd, index)
    }

    /// Entry `index` of `pgd`.
    pub(crate) fn read(&self, pgd: PhysAddr, index: usize) -> Result<Entry, KernelError> {
        Ok(read_entry(&*self.pm, self.mode, self.entry_at(pgd, index))?)
    }

    /// Writes entry `index` of `pgd` (one atomic store).
    pub(crate) fn write(&self, pgd: PhysAddr, index: usize, e: Entry) -> Result<(), KernelError> {
        Ok(write_entry(
            &*self.pm,
            self.mode,
            self.entry_at(pgd, index),
            e,
        )?)
    }

    /// User entry `index` of PAE pgd `pgd` (`pgd_val(pgd[index])`), inlined
    /// for the `pgd_alloc`/`pgd_free` hit path: one checked 64-bit load. The
    /// error is the memory's; the caller converts it off the hit path.
    #[inline(always)]
    pub(crate) fn pae_entry(&self, pgd: PhysAddr, index: usize) -> Result<Entry, MemError> {
        let at = entry_pa_at(PagingMode::Pae, pgd, index);
        self.pm.load_u64(at).map(Entry::from_raw)
    }

    /// Copies the kernel part of `swapper_pg_dir` into `pgd` (the `memcpy`
    /// of `pgd_ctor`), one atomic 64-bit word at a time: on 2-level a word
    /// holds two entries, and each is read whole, never torn. Nobody else
    /// writes `pgd` meanwhile (it is not yet on a list a conversion walks,
    /// or the walker's lock is held), so the paired stores lose nothing.
    pub(crate) fn copy_kernel_part(&self, pgd: PhysAddr) -> Result<u64, KernelError> {
        let (lo, hi) = self.kernel_range();
        let len = (hi - lo) as u64 * self.mode.entry_bytes();
        self.pm
            .copy(self.entry_at(pgd, lo), self.entry_at(self.pgd, lo), len)?;
        Ok(len)
    }

    /// Zeroes the user part of `pgd` (the `memset` of `pgd_ctor`).
    pub(crate) fn zero_user_part(&self, pgd: PhysAddr) -> Result<u64, KernelError> {
        let n = self.mode.user_ptrs_per_pgd() as u64 * self.mode.entry_bytes();
        if n.is_multiple_of(8) {
            self.pm.fill(pgd, n, 0)?;
        } else {
            for i in 0..self.mode.user_ptrs_per_pgd() {
                self.write(pgd, i, Entry::EMPTY)?;
            }
        }
        Ok(n)
    }
}

/// A kernel's teardown: when the last part of the pgd system that holds
/// swapper (the caches, the tracker, cpa, vmalloc) is gone, the frames boot
/// took go back to the page allocator (`x86paging::boot::unboot`), so a
/// kernel dropped in shared RAM — a pgd system booted beside another, as
/// the bare-metal kernel's benchmarks do, or one whose boot failed half way
/// — leaks nothing. Objects still allocated from its caches (a pgd an `Mm`
/// still holds) are not its to free and stay allocated.
impl<M: KernelMem> Drop for Swapper<M> {
    fn drop(&mut self) {
        let _ = x86paging::boot::unboot(&self.pm, &self.boot);
    }
}
