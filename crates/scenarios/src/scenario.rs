//! The pgd system's page tables in the states worth refereeing, exported as
//! oracle images.
//!
//! The seed patch is about *which* pgds carry the right kernel part after a
//! fork or a `change_page_attr`; the hardware oracle can only judge one CR3
//! at a time. So each [`Scenario`] boots a [`Kernel`], drives it into one
//! state, and picks the CR3 a CPU would run with there:
//!
//! * [`Scenario::Swapper`] — `swapper_pg_dir` right after boot;
//! * [`Scenario::Fork`] — exec a small task, fork it, the child's pgd (a
//!   preconstructed pgd from the cache plus copied user tables);
//! * [`Scenario::CpaSplit`] — exec a task, then `change_page_attr` one
//!   direct-map page to PCD|PWT (splitting its large page and propagating
//!   the new table), the task's pgd;
//! * [`Scenario::CachedAfterCpa`] — the seed's bug itself: pgds sit in the
//!   object cache while conversions happen (a split that is reverted, the
//!   freed pte page reused; then another split left in place), and the
//!   image holds every pgd the object cache held, as the next `pgd_alloc`
//!   hands it out ([`CachedAfterCpa`]).
//!
//! Every state names its *roots* ([`Root`]): `swapper_pg_dir` and each pgd a
//! CPU may run with there. [`export_image_roots`] cuts out every page-table
//! frame reachable from any root (walking the tables with the mode's rules)
//! into a [`PagingImage`] whose CR3 is the scenario's pgd and whose
//! [`oracle::ImageDesc::roots`] list the others; data pages are left out, as
//! the image format allows. [`crate::diff::check_roots`] then asks the
//! oracle, root by root, whether each pgd's kernel half is swapper's.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use oracle::{ImageDesc, ImageRoot, PagingImage};
use pgdcache::mm::TaskSize;
use pgdcache::{Kernel, KernelConfig, KernelError, Mm, Pgd, Scheme};
use physmem::{Frame, Owner, PhysAddr, PhysMem, SimMemory, VirtAddr, PAGE_SIZE};
use x86paging::{CpuState, EntryFlags, Level, PageSize, PagingMode};

/// Simulated RAM for scenario kernels.
pub const SCENARIO_RAM: u64 = 64 << 20;

/// Errors building or exporting a scenario.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// Simulated RAM could not be created.
    #[error("simulated RAM: {0}")]
    Ram(String),
    /// The kernel could not be booted (e.g. the scheme is impossible in this mode).
    #[error(transparent)]
    Kernel(#[from] KernelError),
    /// exec/fork failed.
    #[error("mm: {0}")]
    Mm(#[from] pgdcache::MmError),
    /// change_page_attr failed.
    #[error("change_page_attr: {0}")]
    Cpa(#[from] pgdcache::CpaError),
    /// The cpa target page is not in the direct map.
    #[error("direct-map page {0} has no boot mapping")]
    NoTarget(VirtAddr),
    /// Reading a table frame failed.
    #[error("reading table frame {0}: {1}")]
    Mem(PhysAddr, physmem::MemError),
    /// The object cache handed out something the scenario cannot explain
    /// (a bug in the scenario or the cache).
    #[error("{0}")]
    Cache(String),
}

/// Which pgd-system state to export.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scenario {
    /// Booted `swapper_pg_dir`.
    Swapper,
    /// The pgd of a freshly forked child.
    Fork,
    /// A live task's pgd after `change_page_attr` split a direct-map page.
    CpaSplit,
    /// Every pgd the object cache held across conversions (see
    /// [`CachedAfterCpa`]): where `slab-unsynced` goes wrong on 2-level.
    CachedAfterCpa,
}

impl Scenario {
    /// All scenarios.
    pub const ALL: [Scenario; 4] = [
        Scenario::Swapper,
        Scenario::Fork,
        Scenario::CpaSplit,
        Scenario::CachedAfterCpa,
    ];

    /// Command-line name.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Swapper => "swapper",
            Scenario::Fork => "fork",
            Scenario::CpaSplit => "cpa-split",
            Scenario::CachedAfterCpa => "cached-after-cpa",
        }
    }

    /// Whether the seed's bug shows in this scenario under `scheme` in
    /// `mode`: some root's kernel half then differs from `swapper_pg_dir`'s.
    /// Only cached pgds miss conversions, only `slab-unsynced` forgets them,
    /// and only 2-level keeps the kernel's large pages in every pgd (PAE and
    /// 4/5-level convert in a kernel pmd all pgds share).
    pub fn shows_bug(self, mode: PagingMode, scheme: Scheme) -> bool {
        self == Scenario::CachedAfterCpa
            && mode == PagingMode::TwoLevel
            && !scheme.intended_correct()
    }
}

/// Every (scenario, scheme) pair that exists in `mode`, scenario-major in
/// [`Scenario::ALL`] × [`Scheme::ALL`] order: the one list the oracle test,
/// `pgdcache oracle` and the CLI tests walk.
pub fn cases(mode: PagingMode) -> Vec<(Scenario, Scheme)> {
    Scenario::ALL
        .into_iter()
        .flat_map(|sc| Scheme::ALL.into_iter().map(move |s| (sc, s)))
        .filter(|&(_, s)| s.supports(mode).is_ok())
        .collect()
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An unknown scenario name.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown scenario '{0}': expected one of swapper, fork, cpa-split, cached-after-cpa")]
pub struct BadScenario(pub String);

impl FromStr for Scenario {
    type Err = BadScenario;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Scenario::ALL
            .into_iter()
            .find(|x| x.name() == s)
            .ok_or_else(|| BadScenario(s.to_string()))
    }
}

/// What a root of a scenario is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RootKind {
    /// `swapper_pg_dir`, the reference every other root is compared with.
    Swapper,
    /// The pgd of a live address space.
    Live,
    /// A pgd the object cache held whose first task ran before the first
    /// conversion.
    CachedBefore,
    /// A pgd the object cache held whose first task ran while the first
    /// conversion's large page was split (on 2-level, where each pgd is a
    /// slab of its own, it was constructed then).
    CachedWhileSplit,
    /// A pgd built after every conversion (a scheme without a pgd cache).
    Fresh,
}

impl RootKind {
    fn label(self) -> &'static str {
        match self {
            RootKind::Swapper => "swapper_pg_dir",
            RootKind::Live => "live pgd",
            RootKind::CachedBefore => "cached pgd (used before the split)",
            RootKind::CachedWhileSplit => "cached pgd (first used while split)",
            RootKind::Fresh => "fresh pgd",
        }
    }
}

/// One top-level table of a scenario: a CR3 a CPU may run with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Root {
    /// What it is.
    pub kind: RootKind,
    /// The pgd.
    pub pgd: PhysAddr,
}

impl Root {
    /// "cached pgd (first used while split) 0x3a3000".
    pub fn name(&self) -> String {
        match self.kind {
            RootKind::Swapper => self.kind.label().to_string(),
            _ => format!("{} {:#x}", self.kind.label(), self.pgd.as_u64()),
        }
    }
}

/// What [`Scenario::CachedAfterCpa`] did, for the tests and the docs.
///
/// 2.5.60's slabified pgds went wrong exactly here: a pgd waiting in the
/// object cache is in no address space, so a conversion that only walks
/// live address spaces misses it. The scenario (all on CPU 0):
///
/// 1. `exec` then `exit` [`CachedAfterCpa::BEFORE`] tasks: their pgds are
///    cached, constructed with the direct map in large pages;
/// 2. `change_page_attr` the page 16 MiB into the direct map
///    ([`Self::reverted`]) to PCD|PWT and `global_flush_tlb`: its large page
///    is split;
/// 3. `exec` `BEFORE` + [`CachedAfterCpa::WHILE_SPLIT`] tasks (reusing the
///    cached pgds and taking new ones while split; on 2-level, where each
///    pgd is a slab of its own, the new ones are constructed now), then
///    `exit` them;
/// 4. revert the page to `PAGE_KERNEL` and `global_flush_tlb`: the large
///    page is restored and the pte page ([`Self::freed_pte_page`]) freed
///    (and poisoned, `0x6b`);
/// 5. `exec` one task, kept live: it takes a pgd from the cache, and its
///    allocations reuse the freed frame ([`Self::freed_pte_page_owner`]);
/// 6. `change_page_attr` the page 24 MiB in ([`ScenarioState::cpa_target`])
///    to PCD|PWT, left split;
/// 7. the pgds those tasks used that the object cache still holds (asked
///    of the cache itself with [`Kernel::cache_pgds`], not of any list a
///    scheme keeps) are handed out again by `pgd_alloc` and joined to
///    `mmlist` (fork's `dup_mmap`): the moment a CPU loads one into CR3.
///    Only `slab-ticket`'s join changes a byte (it refreshes an old ticket:
///    [`Self::ticket_refreshes`]); schemes without preconstructed pgds get
///    `BEFORE` fresh pgds instead.
///
/// The roots are `swapper_pg_dir`, the live task's pgd and those pgds.
/// Under `slab-unsynced` on 2-level, a pgd constructed while split still
/// points at the freed pte page for the reverted page's 4 MiB (a
/// *dangling* entry: the translation goes wherever the reused frame says —
/// here every pte reads `0x6b6b6b6b`), and every cached pgd still has the
/// old large page where swapper now has the split (a *stale* entry: one
/// 4 MiB page without PCD instead of 4 KiB pages, one of them uncached).
/// The live task's pgd came from the cache too, so it dangles as well.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CachedAfterCpa {
    /// The direct-map page split in step 2 and reverted in step 4.
    pub reverted: Option<VirtAddr>,
    /// The pte page that split installed, freed by step 4's flush.
    pub freed_pte_page: Option<Frame>,
    /// Who holds that frame at the end (after step 5's reuse).
    pub freed_pte_page_owner: Option<Owner>,
    /// Pgds `slab-ticket` refreshed at join in step 7.
    pub ticket_refreshes: u64,
}

impl CachedAfterCpa {
    /// Tasks whose pgds are cached before the first conversion.
    pub const BEFORE: usize = 2;
    /// Extra tasks run while the first conversion's page is split.
    pub const WHILE_SPLIT: usize = 2;
}

/// A kernel driven into a scenario's state, with the CR3 to export.
pub struct ScenarioState {
    /// The scenario.
    pub scenario: Scenario,
    /// The kernel (owns the simulated RAM).
    pub kernel: Kernel,
    /// Address spaces kept alive so their tables stay in place.
    pub mms: Vec<Mm>,
    /// Walker state with CR3 = the exported pgd.
    pub cpu: CpuState,
    /// For `cpa-split` and `cached-after-cpa`: the direct-map page converted
    /// to PCD|PWT (and still so in `swapper_pg_dir`).
    pub cpa_target: Option<VirtAddr>,
    /// Every top-level table of the state: `swapper_pg_dir` first, then the
    /// pgds a CPU may run with (the exported CR3 among them).
    pub roots: Vec<Root>,
    /// For `cached-after-cpa`: what happened.
    pub cached: CachedAfterCpa,
}

impl fmt::Debug for ScenarioState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScenarioState")
            .field("scenario", &self.scenario)
            .field("mode", &self.kernel.mode())
            .field("scheme", &self.kernel.scheme())
            .field("cr3", &self.cpu.cr3)
            .finish()
    }
}

impl ScenarioState {
    /// Boots a kernel in `mode` with `scheme` and builds `scenario`.
    pub fn build(
        scenario: Scenario,
        mode: PagingMode,
        scheme: Scheme,
    ) -> Result<Self, ScenarioError> {
        let pm =
            Arc::new(SimMemory::new(SCENARIO_RAM).map_err(|e| ScenarioError::Ram(e.to_string()))?);
        let kernel = Kernel::new(pm, &KernelConfig::new(mode, scheme))?;
        let mut mms = Vec::new();
        let mut cpa_target = None;
        let swapper = Root {
            kind: RootKind::Swapper,
            pgd: kernel.swapper().0,
        };
        let mut roots = vec![swapper];
        let mut cached = CachedAfterCpa::default();
        let pgd = match scenario {
            Scenario::Swapper => kernel.swapper().0,
            Scenario::Fork => {
                let parent = kernel.exec_mm(0, TaskSize::SMALL)?;
                let child = kernel.fork_mm(1 % kernel.cpus(), &parent)?;
                let pgd = child.pgd().0;
                mms.push(parent);
                mms.push(child);
                pgd
            }
            Scenario::CpaSplit => {
                let task = kernel.exec_mm(0, TaskSize::SMALL)?;
                let pgd = task.pgd().0;
                mms.push(task);
                // A direct-map page away from kernel text (16 MiB in).
                let va = VirtAddr::new(mode.page_offset() + (16 << 20));
                let prot = kernel
                    .page_kernel_at(va)
                    .ok_or(ScenarioError::NoTarget(va))?
                    | EntryFlags::PCD
                    | EntryFlags::PWT;
                kernel.change_page_attr(va, 1, prot)?;
                kernel.global_flush_tlb();
                cpa_target = Some(va);
                pgd
            }
            Scenario::CachedAfterCpa => {
                let (pgds, c) = cached_after_cpa(&kernel, &mut mms)?;
                cpa_target = Some(direct_map_page(mode, 24));
                cached = c;
                roots.extend(pgds);
                // The exported CR3: a pgd built while split if the cache
                // had one (the dangling one under slab-unsynced), else the
                // first.
                let rank = |k: RootKind| match k {
                    RootKind::CachedWhileSplit => 0,
                    RootKind::CachedBefore | RootKind::Fresh => 1,
                    RootKind::Live => 2,
                    RootKind::Swapper => 3,
                };
                let main = roots
                    .iter()
                    .min_by_key(|r| rank(r.kind))
                    .ok_or_else(|| ScenarioError::Cache("no pgd to export".into()))?;
                main.pgd
            }
        };
        if pgd != kernel.swapper().0 && !roots.iter().any(|r| r.pgd == pgd) {
            roots.push(Root {
                kind: RootKind::Live,
                pgd,
            });
        }
        let cpu = kernel.kernel_space().cpu.with_cr3(pgd);
        Ok(ScenarioState {
            scenario,
            kernel,
            mms,
            cpu,
            cpa_target,
            roots,
            cached,
        })
    }

    /// The image of this state: every table reachable from any root,
    /// control registers from `kernel_space().cr_values()` with CR3 = the
    /// scenario's pgd, and the other roots in [`ImageDesc::roots`].
    pub fn image(&self) -> Result<PagingImage, ScenarioError> {
        export_image_roots(&**self.kernel.pm(), &self.cpu, &self.roots)
    }

    /// `(name, pgd)` of every root, `swapper_pg_dir` first (the reference
    /// [`crate::diff::check_roots`] compares the others with).
    pub fn root_list(&self) -> Vec<(String, PhysAddr)> {
        self.roots.iter().map(|r| (r.name(), r.pgd)).collect()
    }

    /// The walker's CPU state on `root`.
    pub fn cpu_on(&self, root: &Root) -> CpuState {
        self.cpu.with_cr3(root.pgd)
    }

    /// First linear address of the kernel half (the pgd entries every pgd
    /// shares with `swapper_pg_dir`).
    pub fn kernel_start(&self) -> u64 {
        let mode = self.kernel.mode();
        mode.pgd_entry_start(mode.user_ptrs_per_pgd()).as_u64()
    }

    /// Whether the seed's bug shows here ([`Scenario::shows_bug`]).
    pub fn shows_bug(&self) -> bool {
        self.scenario
            .shows_bug(self.kernel.mode(), self.kernel.scheme())
    }

    /// The direct-map large pages a conversion touched: `(start, size)`.
    pub fn converted_large_pages(&self) -> Vec<(u64, u64)> {
        let large = match self.kernel.mode() {
            PagingMode::TwoLevel => PageSize::Size4M,
            _ => PageSize::Size2M,
        }
        .bytes();
        [self.cpa_target, self.cached.reverted]
            .into_iter()
            .flatten()
            .map(|va| (va.as_u64() & !(large - 1), large))
            .collect()
    }

    /// Addresses worth asking about: first, last and one-past-last byte of
    /// every boot mapping, every user page of the kept address spaces, the
    /// cpa target and its neighbours, and `random` random canonical
    /// addresses (seeded by `seed`).
    pub fn addresses(&self, seed: u64, random: usize) -> Vec<u64> {
        let mode = self.kernel.mode();
        let mut vas = Vec::new();
        for m in &self.kernel.kernel_space().mappings {
            let (va, size) = (m.va.as_u64(), m.size.bytes());
            vas.push(va);
            vas.push(va + size - 1);
            vas.push(va.wrapping_add(size));
        }
        for mm in &self.mms {
            for (va, _) in mm.pages() {
                vas.push(va.as_u64());
                vas.push(va.as_u64() + PAGE_SIZE - 1);
            }
        }
        for t in [self.cpa_target, self.cached.reverted]
            .into_iter()
            .flatten()
        {
            let t = t.as_u64();
            vas.extend([t - PAGE_SIZE, t, t + 0x123, t + PAGE_SIZE]);
        }
        for (start, size) in self.converted_large_pages() {
            vas.extend([start, start + size / 2 + 0x10, start + size - 1]);
        }
        let mut rng = x86paging::gen::Rng::new(seed ^ 0x5ce7_a210);
        for _ in 0..random {
            vas.push(x86paging::gen::random_va(&mut rng, mode, 8).as_u64());
        }
        let vas: Vec<u64> = vas
            .into_iter()
            .map(|v| mode.canonicalize(v).as_u64())
            .filter(|&v| mode.is_64bit() || v < 1 << 32)
            .collect::<BTreeSet<u64>>()
            .into_iter()
            .collect();
        vas
    }
}

/// The direct-map page `mib` MiB into RAM (away from kernel text).
fn direct_map_page(mode: PagingMode, mib: u64) -> VirtAddr {
    VirtAddr::new(mode.page_offset() + (mib << 20))
}

/// `change_page_attr(va, 1, PAGE_KERNEL|PCD|PWT)` or back to `PAGE_KERNEL`,
/// then `global_flush_tlb`.
fn convert(kernel: &Kernel, va: VirtAddr, uncached: bool) -> Result<(), ScenarioError> {
    let mut prot = kernel
        .page_kernel_at(va)
        .ok_or(ScenarioError::NoTarget(va))?;
    if uncached {
        prot |= EntryFlags::PCD | EntryFlags::PWT;
    }
    kernel.change_page_attr(va, 1, prot)?;
    kernel.global_flush_tlb();
    Ok(())
}

/// The pgds the object cache holds, free and constructed (none for a
/// scheme whose cache has no constructor: its free objects are raw memory).
fn cached_pgds(kernel: &Kernel) -> BTreeSet<PhysAddr> {
    if !kernel.scheme().preconstructed() {
        return BTreeSet::new();
    }
    kernel
        .cache_pgds()
        .into_iter()
        .filter(|&(_, allocated)| !allocated)
        .map(|(p, _)| p.0)
        .collect()
}

/// Builds [`Scenario::CachedAfterCpa`] (steps in [`CachedAfterCpa`]); returns
/// the roots other than swapper (the live task's, then the cached pgds as
/// handed out again).
fn cached_after_cpa(
    kernel: &Kernel,
    mms: &mut Vec<Mm>,
) -> Result<(Vec<Root>, CachedAfterCpa), ScenarioError> {
    let mode = kernel.mode();
    let mut out = CachedAfterCpa::default();
    // Runs `n` tasks and exits them; returns the pgds they had.
    let run_and_exit = |n: usize| -> Result<Vec<PhysAddr>, ScenarioError> {
        let mms = (0..n)
            .map(|_| kernel.exec_mm(0, TaskSize::SMALL))
            .collect::<Result<Vec<Mm>, _>>()?;
        let pgds = mms.iter().map(|mm| mm.pgd().0).collect();
        for mm in mms {
            kernel.exit_mm(0, mm)?;
        }
        Ok(pgds)
    };
    // 1. Pgds cached while the direct map is in large pages.
    let before: BTreeSet<PhysAddr> = run_and_exit(CachedAfterCpa::BEFORE)?.into_iter().collect();
    // 2. Split a large page.
    let first = direct_map_page(mode, 16);
    convert(kernel, first, true)?;
    out.reverted = Some(first);
    let split: BTreeSet<Frame> = kernel.split_frames().into_iter().collect();
    // 3. Reuse the cache and take more pgds while split.
    let mut used = before.clone();
    used.extend(run_and_exit(
        CachedAfterCpa::BEFORE + CachedAfterCpa::WHILE_SPLIT,
    )?);
    // 4. Revert: the pte page goes back to the allocator after the flush.
    convert(kernel, first, false)?;
    let still: BTreeSet<Frame> = kernel.split_frames().into_iter().collect();
    out.freed_pte_page = split.difference(&still).next().copied();
    // 5. A task runs: its allocations reuse the freed frame.
    mms.push(kernel.exec_mm(0, TaskSize::SMALL)?);
    out.freed_pte_page_owner = out
        .freed_pte_page
        .and_then(|f| kernel.pm().page(f))
        .map(|p| p.owner());
    // 6. Another conversion, left in place.
    convert(kernel, direct_map_page(mode, 24), true)?;
    // 7. The pgds the tasks used that the object cache holds now (asked of
    //    the cache itself), handed out again on the CPU whose arrays hold
    //    them. Constructed objects no task used (PAE packs 128 pgds in a
    //    slab) are handed out on the way and go back afterwards.
    let wanted: BTreeSet<PhysAddr> = cached_pgds(kernel).intersection(&used).copied().collect();
    let refreshes0 = kernel.stats().ticket_refreshes;
    let mut roots = vec![Root {
        kind: RootKind::Live,
        pgd: mms[mms.len() - 1].pgd().0,
    }];
    let mut found = 0;
    let mut extra = Vec::new();
    let reachable = kernel.cache_pgds().len() + 1;
    for cpu in 0..kernel.cpus() {
        for _ in 0..reachable {
            if found == wanted.len() {
                break;
            }
            let pgd = kernel.pgd_alloc(cpu)?;
            if !wanted.contains(&pgd.0) {
                extra.push((cpu, pgd));
                continue;
            }
            kernel.mm_join(pgd)?;
            found += 1;
            let kind = if before.contains(&pgd.0) {
                RootKind::CachedBefore
            } else {
                RootKind::CachedWhileSplit
            };
            roots.push(Root { kind, pgd: pgd.0 });
        }
    }
    for (cpu, pgd) in extra {
        kernel.pgd_free(cpu, pgd)?;
    }
    if found < wanted.len() {
        return Err(ScenarioError::Cache(format!(
            "{} of {} cached pgds could not be allocated again",
            wanted.len() - found,
            wanted.len()
        )));
    }
    if wanted.is_empty() {
        // No pgd cache (or one without a constructor): what the next tasks get.
        for _ in 0..CachedAfterCpa::BEFORE {
            let pgd: Pgd = kernel.pgd_alloc(0)?;
            kernel.mm_join(pgd)?;
            roots.push(Root {
                kind: RootKind::Fresh,
                pgd: pgd.0,
            });
        }
    }
    out.ticket_refreshes = kernel.stats().ticket_refreshes - refreshes0;
    Ok((roots, out))
}

/// One leaf of a page table: what maps where.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Leaf {
    /// Linear address (canonical).
    pub va: u64,
    /// Physical address.
    pub pa: u64,
    /// Page size.
    pub size: PageSize,
    /// Leaf entry flags (not combined with upper levels).
    pub flags: EntryFlags,
}

/// The top table's address for `cpu` (CR3 without flag bits).
fn root(cpu: &CpuState) -> u64 {
    cpu.cr3.as_u64()
}

/// Walks the tables under `cpu.cr3` the way the MMU would (PS only where the
/// mode allows a leaf, CR4.PSE on 2-level), calling `table` for every table
/// reached (with its level) and collecting leaves. Tables that cannot be
/// read are reported to `table` but not descended into.
pub fn walk_tables<P: PhysMem + ?Sized>(
    pm: &P,
    cpu: &CpuState,
    mut table: impl FnMut(PhysAddr, Level),
) -> Vec<Leaf> {
    let mode = cpu.mode;
    let levels = mode.levels();
    let mut leaves = Vec::new();
    let mut seen = BTreeSet::new();
    let mut stack = vec![(PhysAddr::new(root(cpu)), 0usize, 0u64)];
    while let Some((t, li, base)) = stack.pop() {
        let Some(&level) = levels.get(li) else {
            continue;
        };
        table(t, level);
        if !seen.insert((t.as_u64(), li)) {
            continue;
        }
        for i in 0..mode.entries(level) {
            let epa = x86paging::table::entry_pa_at(mode, t, i);
            let Ok(e) = x86paging::read_entry(pm, mode, epa) else {
                break;
            };
            if !e.is_present() {
                continue;
            }
            let va = base.wrapping_add(i as u64 * mode.span(level));
            if e.is_leaf(mode, level, cpu.pse) {
                let Some(size) = mode.page_size_at(level) else {
                    continue;
                };
                leaves.push(Leaf {
                    va: mode.canonicalize(va).as_u64(),
                    pa: e.page_addr(mode, size).as_u64(),
                    size,
                    flags: e.flags(Some(size)),
                });
            } else {
                stack.push((e.table_addr(mode), li + 1, va));
            }
        }
    }
    leaves.sort_by_key(|l| l.va);
    leaves
}

/// Every leaf reachable from `cpu.cr3`, by linear address.
pub fn leaves<P: PhysMem + ?Sized>(pm: &P, cpu: &CpuState) -> Vec<Leaf> {
    walk_tables(pm, cpu, |_, _| {})
}

/// The image of the tables under `cpu.cr3`: every reachable table frame
/// that lies in `pm` (whole 4 KiB frames, the pgd's included), merged into
/// contiguous ranges, with CR0/CR3/CR4/EFER from `cpu`.
pub fn export_image<P: PhysMem + ?Sized>(
    pm: &P,
    cpu: &CpuState,
) -> Result<PagingImage, ScenarioError> {
    export_image_roots(pm, cpu, &[])
}

/// [`export_image`] for several top-level tables in the same memory: the
/// frames reachable from `cpu.cr3` or from any of `roots`, with CR3 =
/// `cpu.cr3` and every root (that one included) named in
/// [`ImageDesc::roots`], with the CR3 value `cpu` would load for it.
pub fn export_image_roots<P: PhysMem + ?Sized>(
    pm: &P,
    cpu: &CpuState,
    roots: &[Root],
) -> Result<PagingImage, ScenarioError> {
    let mut frames = BTreeSet::new();
    let mut cpus = vec![*cpu];
    cpus.extend(
        roots
            .iter()
            .filter(|r| r.pgd != cpu.cr3)
            .map(|r| cpu.with_cr3(r.pgd)),
    );
    for c in &cpus {
        walk_tables(pm, c, |t, _| {
            let f = t.as_u64() & !(PAGE_SIZE - 1);
            if f.saturating_add(PAGE_SIZE) <= pm.size() {
                frames.insert(f);
            }
        });
    }
    let image_roots = roots
        .iter()
        .map(|r| ImageRoot {
            name: r.name(),
            cr3: cpu.with_cr3(r.pgd).cr_values().cr3,
        })
        .collect();
    let mut data: Vec<(u64, Vec<u8>)> = Vec::new();
    let mut buf = vec![0u8; PAGE_SIZE as usize];
    for f in frames {
        pm.read_into(PhysAddr::new(f), &mut buf)
            .map_err(|e| ScenarioError::Mem(PhysAddr::new(f), e))?;
        match data.last_mut() {
            Some((g, bytes)) if *g + bytes.len() as u64 == f => bytes.extend_from_slice(&buf),
            _ => data.push((f, buf.clone())),
        }
    }
    let cr = cpu.cr_values();
    let img = PagingImage {
        desc: ImageDesc {
            mode: crate::oracle_mode(cpu.mode),
            cr0: cr.cr0,
            cr3: cr.cr3,
            cr4: cr.cr4,
            efer: cr.efer,
            ranges: Vec::new(),
            roots: image_roots,
        },
        data,
    };
    Ok(PagingImage {
        desc: img.normalized_desc(),
        ..img
    })
}
