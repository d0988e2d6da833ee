//! Single-threaded micro-measurements of the pgd system's hot paths.
//!
//! What each measurement models, and why it is the figure the seed's claims
//! are about:
//!
//! * [`AllocFree`] — a `pgd_alloc` + `pgd_free` pair on one CPU with a warm
//!   cache: the "bitblitting overhead" the patch removes. Baselines in the
//!   same run: `uncached` (2.5.69 before the patch: page allocation + 3 KiB
//!   zero + 1 KiB copy, or on PAE a 32-byte object + three zeroed pmd pages)
//!   and a bare freelist (`Vec<PhysAddr>` pop + push of preconstructed pgds:
//!   the physical limit of any cached allocation).
//! * [`ForkExit`] — `fork_mm` + `exit_mm` of a child of a task with `pages`
//!   mapped pages: for small tasks the pgd work is a visible share, for large
//!   ones "bottom-level pagetable copies dominate".
//! * [`CpaCycle`] — `change_page_attr` of one direct-map page to uncached (a
//!   4 MiB PSE split), `global_flush_tlb`, back (revert), `global_flush_tlb`,
//!   with `total` constructed pgds of which `live` belong to an address space
//!   (on `mmlist`). The others stand for cached pgds: constructed, on
//!   `pgd_list`, owned by no mm. (They are held allocated but unjoined rather
//!   than freed, because the object cache gives slabs beyond its `free_limit`
//!   back to the page allocator — running `pgd_dtor` — so 10 000 *freed*
//!   pgds cannot stay cached; for propagation the two states are identical:
//!   `slab-pgd-list` walks `pgd_list`, `slab-ticket` walks `mmlist`.)
//!
//! Every measurement runs `rounds` rounds of `iters` operations and keeps the
//! median round; configurations compared by a ratio are measured in
//! interleaved rounds, so machine noise hits both sides alike.
//!
//! This file only uses `pgdcache`, `physmem`, `x86paging` and `thiserror`, so
//! the criterion benches of `crates/pgdcache` include it by path.

use pgdcache::mm::{Mm, TaskSize};
use pgdcache::{CpuPgds, Kernel, KernelConfig, KernelError, Pgd, Scheme};
use physmem::{PhysAddr, SimMemory, VirtAddr};
use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;
use x86paging::{EntryFlags, PagingMode};

/// Why a micro-measurement could not run.
#[derive(Debug, thiserror::Error)]
pub enum MicroError {
    /// Simulated RAM could not be created.
    #[error("cannot create {0} bytes of simulated RAM: {1}")]
    Ram(u64, String),
    /// The kernel refused the configuration or failed an operation.
    #[error("{what}: {why}")]
    Kernel {
        /// What was being done.
        what: &'static str,
        /// The error.
        why: String,
    },
}

/// A kernel (or allocator) call's error as a `MicroError`, named `what`.
pub(crate) fn kerr(what: &'static str) -> impl Fn(&dyn std::fmt::Display) -> MicroError {
    move |e| MicroError::Kernel {
        what,
        why: e.to_string(),
    }
}

/// Boots a kernel with `ram` bytes, one CPU, in the kernel's production
/// configuration: freed-frame poisoning off (`CONFIG_PAGE_POISONING=n`;
/// the checker's runs and the stress tests keep it on) and no per-CPU hit
/// counters in the object caches (no `STATS`: `CONFIG_DEBUG_SLAB=n`).
pub fn boot(mode: PagingMode, scheme: Scheme, ram: u64, cpus: usize) -> Result<Kernel, MicroError> {
    let pm = SimMemory::new(ram)
        .map_err(|e| MicroError::Ram(ram, e.to_string()))?
        .with_poisoning(false);
    let mut cfg = KernelConfig::new(mode, scheme);
    cfg.cpus = cpus;
    cfg.slab_stats = false;
    Kernel::new(Arc::new(pm), &cfg).map_err(|e| kerr("boot")(&e))
}

// (The criterion benches include this file and use only part of it.)
#[allow(unused_imports)]
pub use benchstats::{median, Ratio};

/// A summary of interleaved rounds: nanoseconds per operation.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct Timing {
    /// Median round.
    pub median_ns: f64,
    /// Fastest round.
    pub min_ns: f64,
    /// Lower and upper quartile of the rounds.
    pub iqr_ns: (f64, f64),
    /// Rounds measured (adaptive: see [`adaptive_rounds`]).
    pub rounds: usize,
}

impl Timing {
    /// Median, minimum and quartiles of the rounds `v`
    /// ([`benchstats::Summary`]).
    pub fn of(v: Vec<f64>) -> Timing {
        let s = benchstats::Summary::of(&v);
        Timing {
            median_ns: s.median,
            min_ns: s.min,
            iqr_ns: (s.q1, s.q3),
            rounds: s.rounds,
        }
    }
}

/// Something timed in interleaved rounds: one call runs `iters` operations.
pub trait Subject {
    /// Runs `iters` operations.
    fn run(&mut self, iters: u64) -> Result<(), MicroError>;
}

/// Runs every subject `rounds` times, interleaved, and returns ns/op each.
///
/// Rounds are timed by this thread's CPU time
/// ([`benchstats::time_on_cpu`]; wall time where that clock is missing), so
/// a round in which another task ran on our CPU is not charged for it.
pub fn interleaved(
    subjects: &mut [&mut dyn Subject],
    rounds: usize,
    iters: u64,
) -> Result<Vec<Timing>, MicroError> {
    Ok(interleaved_rounds(subjects, rounds, iters)?
        .into_iter()
        .map(Timing::of)
        .collect())
}

/// [`interleaved`], keeping every round: `result[subject][round]` in ns/op.
/// Round `r` of every subject ran back to back, so per-round ratios
/// ([`paired_ratio`]) cancel load that drifts over the run.
pub fn interleaved_rounds(
    subjects: &mut [&mut dyn Subject],
    rounds: usize,
    iters: u64,
) -> Result<Vec<Vec<f64>>, MicroError> {
    adaptive_rounds(subjects, &benchstats::Rounds::fixed(rounds), &[], iters)
}

/// [`interleaved_rounds`] with an adaptive round count
/// ([`benchstats::adaptive`]): at least `rounds.min` rounds, then more until
/// every paired ratio `subject[num] / subject[den]` of `pairs` has a narrow
/// inter-quartile range, or `rounds.max` rounds ran.
pub fn adaptive_rounds(
    subjects: &mut [&mut dyn Subject],
    rounds: &benchstats::Rounds,
    pairs: &[(usize, usize)],
    iters: u64,
) -> Result<Vec<Vec<f64>>, MicroError> {
    let iters = iters.max(1);
    for s in subjects.iter_mut() {
        s.run((iters / 8).max(1))?; // warm-up
    }
    let mut timed: Vec<_> = subjects
        .iter_mut()
        .map(|s| {
            move || -> Result<f64, MicroError> {
                let (r, cpu_ns, _) = benchstats::time_on_cpu(|| s.run(iters));
                r?;
                Ok(cpu_ns as f64 / iters as f64)
            }
        })
        .collect();
    let mut refs: Vec<&mut dyn FnMut() -> Result<f64, MicroError>> = timed
        .iter_mut()
        .map(|f| f as &mut dyn FnMut() -> Result<f64, MicroError>)
        .collect();
    benchstats::adaptive(rounds, pairs, &mut refs)
}

/// The median over rounds of `num[r] / den[r]`: a ratio of two subjects
/// measured in the same rounds. One lucky (or unlucky) round of either side
/// cannot decide it, as it can a ratio of two minima. NaN without rounds.
/// [`Ratio::paired`] gives its inter-quartile range too.
pub fn paired_ratio(num: &[f64], den: &[f64]) -> f64 {
    Ratio::paired(num, den).median
}

/// `pgd_alloc` + `pgd_free` on CPU 0 of one kernel.
pub struct AllocFree {
    /// The kernel.
    pub kernel: Kernel,
}

impl AllocFree {
    /// A kernel in `mode` with `scheme` (64 MiB, one CPU).
    pub fn new(mode: PagingMode, scheme: Scheme) -> Result<AllocFree, MicroError> {
        Ok(AllocFree {
            kernel: boot(mode, scheme, 64 << 20, 1)?,
        })
    }

    /// One pair.
    #[inline]
    pub fn pair(&self) -> Result<(), MicroError> {
        let pgd = self
            .kernel
            .pgd_alloc(0)
            .map_err(|e| kerr("pgd_alloc")(&e))?;
        black_box(pgd);
        self.kernel
            .pgd_free(0, pgd)
            .map_err(|e| kerr("pgd_free")(&e))
    }
}

impl Subject for AllocFree {
    /// `iters` pairs as the thread acting as CPU 0: its pgd token (the
    /// kernel's per-CPU fast path, no lock and no atomic on a hit) and its
    /// per-CPU page lists (`physmem::enter_cpu`: `uncached`'s page comes
    /// from them, as 2.5.69's `__get_free_page` takes an order-0 page from
    /// its CPU's hot list, not from the zone). Where the kernel's pgds have
    /// a typed shape the CPU is claimed with it (`Kernel::claim_whole_cpu`
    /// for whole pages of `pgd_cache`, `claim_pae_cpu` for PAE with
    /// `pmd_cache`), as a kernel built for one paging mode has its shape;
    /// elsewhere (`uncached`, `shared-kernel`) through `PgdCpu`.
    fn run(&mut self, iters: u64) -> Result<(), MicroError> {
        let _page_lists = physmem::enter_cpu(0);
        let k = &self.kernel;
        if pairs_on(|| k.claim_whole_cpu(0), iters)? || pairs_on(|| k.claim_pae_cpu(0), iters)? {
            return Ok(());
        }
        pairs_on(|| k.claim_cpu(0), iters).map(|_| ())
    }
}

/// `iters` pairs on the CPU `claim` gives, in a function of their own (so
/// that one loop's registers are not another's). `Ok(false)`: the kernel's
/// pgds have another shape.
#[inline(never)]
fn pairs_on<C: CpuPgds>(
    claim: impl FnOnce() -> Result<C, KernelError>,
    iters: u64,
) -> Result<bool, MicroError> {
    let mut cpu = match claim() {
        Ok(cpu) => cpu,
        Err(KernelError::WrongShape { .. }) => return Ok(false),
        Err(e) => return Err(kerr("claim a cpu")(&e)),
    };
    for _ in 0..iters {
        let pgd = cpu.pgd_alloc().map_err(|e| kerr("pgd_alloc")(&e))?;
        // The address escapes, as `mm->pgd` and CR3 take it.
        black_box(pgd.pgd());
        cpu.pgd_free(pgd).map_err(|e| kerr("pgd_free")(&e))?;
    }
    Ok(true)
}

/// The physical limit of a cached allocation: pop a preconstructed pgd
/// from a `Vec` and push it back.
pub struct Freelist {
    /// Preconstructed pgds (real ones, from a slab kernel).
    pub list: Vec<PhysAddr>,
    kernel: Kernel,
    held: Vec<Pgd>,
}

impl Freelist {
    /// 16 preconstructed pgds of a `slab-pgd-list` kernel in `mode`.
    pub fn new(mode: PagingMode) -> Result<Freelist, MicroError> {
        let kernel = boot(mode, Scheme::SlabPgdList, 64 << 20, 1)?;
        let held = (0..16)
            .map(|_| kernel.pgd_alloc(0).map_err(|e| kerr("pgd_alloc")(&e)))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Freelist {
            list: held.iter().map(|p| p.0).collect(),
            kernel,
            held,
        })
    }

    /// One pop + push.
    #[inline]
    pub fn pair(&mut self) -> Option<()> {
        let p = self.list.pop()?;
        self.list.push(black_box(p));
        Some(())
    }
}

impl Drop for Freelist {
    fn drop(&mut self) {
        for p in self.held.drain(..) {
            let _ = self.kernel.pgd_free(0, p);
        }
    }
}

impl Subject for Freelist {
    fn run(&mut self, iters: u64) -> Result<(), MicroError> {
        for _ in 0..iters {
            black_box(self.pair());
        }
        Ok(())
    }
}

/// The image of a task with `pages` pages: text 1/4, data 5/8, stack the rest.
pub fn task_of(pages: u64) -> TaskSize {
    if pages == TaskSize::SMALL.pages() {
        return TaskSize::SMALL;
    }
    let text = (pages / 4).max(1).min(pages);
    let data = (pages * 5 / 8).min(pages - text);
    TaskSize {
        text,
        data,
        stack: pages - text - data,
    }
}

/// `fork_mm` + `exit_mm` of a child of a parent with `pages` mapped pages.
pub struct ForkExit {
    /// The kernel.
    pub kernel: Kernel,
    parent: Option<Mm>,
}

impl ForkExit {
    /// A parent of `pages` pages in a kernel with `ram` bytes.
    pub fn new(
        mode: PagingMode,
        scheme: Scheme,
        pages: u64,
        ram: u64,
    ) -> Result<ForkExit, MicroError> {
        let kernel = boot(mode, scheme, ram, 1)?;
        let parent = kernel
            .exec_mm(0, task_of(pages))
            .map_err(|e| kerr("exec")(&e))?;
        Ok(ForkExit {
            kernel,
            parent: Some(parent),
        })
    }

    /// One fork + exit.
    pub fn pair(&self) -> Result<(), MicroError> {
        let Some(parent) = &self.parent else {
            return Ok(());
        };
        let child = self
            .kernel
            .fork_mm(0, parent)
            .map_err(|e| kerr("fork")(&e))?;
        self.kernel.exit_mm(0, child).map_err(|e| kerr("exit")(&e))
    }
}

impl Drop for ForkExit {
    fn drop(&mut self) {
        if let Some(p) = self.parent.take() {
            let _ = self.kernel.exit_mm(0, p);
        }
    }
}

impl Subject for ForkExit {
    /// `iters` fork + exit pairs as the thread acting as CPU 0: its pgd
    /// token (`Kernel::claim_cpu`) and its per-CPU page lists
    /// (`physmem::enter_cpu`), as a kernel's fork runs on its CPU.
    fn run(&mut self, iters: u64) -> Result<(), MicroError> {
        let _page_lists = physmem::enter_cpu(0);
        let Some(parent) = &self.parent else {
            return Ok(());
        };
        let mut cpu = self
            .kernel
            .claim_cpu(0)
            .map_err(|e| kerr("claim_cpu")(&e))?;
        for _ in 0..iters {
            let child = cpu.fork_mm(parent).map_err(|e| kerr("fork")(&e))?;
            cpu.exit_mm(child).map_err(|e| kerr("exit")(&e))?;
        }
        Ok(())
    }
}

/// The limit of [`ForkExit`] for any pgd scheme: the same fork + exit
/// with a pgd that costs nothing. The child's pgd is popped from a bare
/// `Vec` of preconstructed pgds (real ones, as [`Freelist`]'s, from a
/// `slab-pgd-list` kernel) and pushed back after exit
/// ([`Kernel::fork_mm_onto`], [`Kernel::exit_mm_keep_pgd`]); everything
/// else — the `mmlist` join and leave, `copy_page_range`, `zap_pte_range`,
/// the pte tables — is fork + exit as every scheme does it.
pub struct ForkExitFreePgd {
    /// The kernel.
    pub kernel: Kernel,
    parent: Option<Mm>,
    list: Vec<Pgd>,
}

impl ForkExitFreePgd {
    /// A parent of `pages` pages in a `slab-pgd-list` kernel in `mode`
    /// with `ram` bytes, and 16 preconstructed pgds.
    pub fn new(mode: PagingMode, pages: u64, ram: u64) -> Result<ForkExitFreePgd, MicroError> {
        let kernel = boot(mode, Scheme::SlabPgdList, ram, 1)?;
        let parent = kernel
            .exec_mm(0, task_of(pages))
            .map_err(|e| kerr("exec")(&e))?;
        let mut fe = ForkExitFreePgd {
            kernel,
            parent: Some(parent),
            list: Vec::with_capacity(16),
        };
        for _ in 0..16 {
            let p = fe.kernel.pgd_alloc(0).map_err(|e| kerr("pgd_alloc")(&e))?;
            fe.list.push(p);
        }
        Ok(fe)
    }

    /// One fork + exit.
    pub fn pair(&mut self) -> Result<(), MicroError> {
        let (Some(parent), Some(pgd)) = (&self.parent, self.list.pop()) else {
            return Ok(());
        };
        let child = match self.kernel.fork_mm_onto(pgd, parent) {
            Ok(c) => c,
            Err(e) => {
                self.list.push(pgd);
                return Err(kerr("fork")(&e));
            }
        };
        let pgd = self
            .kernel
            .exit_mm_keep_pgd(child)
            .map_err(|e| kerr("exit")(&e))?;
        self.list.push(black_box(pgd));
        Ok(())
    }
}

impl Drop for ForkExitFreePgd {
    fn drop(&mut self) {
        if let Some(p) = self.parent.take() {
            let _ = self.kernel.exit_mm(0, p);
        }
        for p in self.list.drain(..) {
            let _ = self.kernel.pgd_free(0, p);
        }
    }
}

impl Subject for ForkExitFreePgd {
    /// `iters` fork + exit pairs as the thread acting as CPU 0 for its
    /// per-CPU page lists, as [`ForkExit`] runs them.
    fn run(&mut self, iters: u64) -> Result<(), MicroError> {
        let _page_lists = physmem::enter_cpu(0);
        for _ in 0..iters {
            self.pair()?;
        }
        Ok(())
    }
}

/// `change_page_attr` split + flush + revert + flush with `total` pgds of
/// which `live` are on `mmlist` (2-level).
pub struct CpaCycle {
    /// The kernel.
    pub kernel: Kernel,
    pgds: Vec<Pgd>,
    live: usize,
    target: VirtAddr,
    base: EntryFlags,
}

impl CpaCycle {
    /// RAM for `total` pgds: 64 MiB plus 8 KiB per pgd, rounded to 4 MiB.
    pub fn ram_for(total: usize) -> u64 {
        let need = (64u64 << 20) + total as u64 * 8192;
        need.div_ceil(4 << 20) * (4 << 20)
    }

    /// A kernel with `total` constructed pgds, `live` of them joined.
    pub fn new(
        mode: PagingMode,
        scheme: Scheme,
        total: usize,
        live: usize,
    ) -> Result<CpaCycle, MicroError> {
        let kernel = boot(mode, scheme, Self::ram_for(total).max(256 << 20), 1)?;
        let mut pgds = Vec::with_capacity(total);
        for i in 0..total {
            let p = kernel.pgd_alloc(0).map_err(|e| kerr("pgd_alloc")(&e))?;
            if i < live {
                kernel.mm_join(p).map_err(|e| kerr("mm_join")(&e))?;
            }
            pgds.push(p);
        }
        let target = VirtAddr::new(mode.page_offset() + (16 << 20) + 0x5000);
        let base = kernel.page_kernel_at(target).ok_or(MicroError::Kernel {
            what: "cpa target",
            why: format!("{target} is not in the direct map"),
        })?;
        Ok(CpaCycle {
            kernel,
            pgds,
            live: live.min(total),
            target,
            base,
        })
    }

    /// One split + flush + revert + flush.
    pub fn cycle(&self) -> Result<(), MicroError> {
        let k = &self.kernel;
        k.change_page_attr(
            self.target,
            1,
            self.base | EntryFlags::PCD | EntryFlags::PWT,
        )
        .map_err(|e| kerr("change_page_attr")(&e))?;
        k.global_flush_tlb();
        k.change_page_attr(self.target, 1, self.base)
            .map_err(|e| kerr("change_page_attr")(&e))?;
        k.global_flush_tlb();
        Ok(())
    }

    /// Time of joining (and leaving) `n` unjoined pgds after a conversion:
    /// in `slab-ticket` each join refreshes a stale kernel part, the cost
    /// the ticket scheme defers from `change_page_attr`. ns per join.
    pub fn join_cost(&self, n: usize) -> Result<f64, MicroError> {
        let k = &self.kernel;
        self.cycle()?;
        let cached = &self.pgds[self.live..];
        let n = n.min(cached.len());
        if n == 0 {
            return Ok(0.0);
        }
        let t = Instant::now();
        for &p in &cached[..n] {
            k.mm_join(p).map_err(|e| kerr("mm_join")(&e))?;
            k.mm_leave(p);
        }
        Ok(t.elapsed().as_nanos() as f64 / n as f64)
    }
}

impl Drop for CpaCycle {
    fn drop(&mut self) {
        for (i, p) in self.pgds.drain(..).enumerate() {
            if i < self.live {
                self.kernel.mm_leave(p);
            }
            let _ = self.kernel.pgd_free(0, p);
        }
    }
}

impl Subject for CpaCycle {
    /// `iters` cycles as the thread acting as CPU 0 (its per-CPU page
    /// lists serve the split's pte page).
    fn run(&mut self, iters: u64) -> Result<(), MicroError> {
        let _page_lists = physmem::enter_cpu(0);
        for _ in 0..iters {
            self.cycle()?;
        }
        Ok(())
    }
}
