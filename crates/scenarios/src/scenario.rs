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
//!   the new table), the task's pgd.
//!
//! [`export_image`] cuts out every page-table frame reachable from a CR3
//! (walking the tables with the mode's rules) into a [`PagingImage`]; data
//! pages are left out, as the image format allows.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use oracle::{ImageDesc, PagingImage};
use pgdcache::mm::TaskSize;
use pgdcache::{Kernel, KernelConfig, KernelError, Mm, Scheme};
use physmem::{PhysAddr, PhysMem, SimMemory, VirtAddr, PAGE_SIZE};
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
}

impl Scenario {
    /// All scenarios.
    pub const ALL: [Scenario; 3] = [Scenario::Swapper, Scenario::Fork, Scenario::CpaSplit];

    /// Command-line name.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Swapper => "swapper",
            Scenario::Fork => "fork",
            Scenario::CpaSplit => "cpa-split",
        }
    }
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An unknown scenario name.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown scenario '{0}': expected one of swapper, fork, cpa-split")]
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
    /// For `cpa-split`: the converted direct-map page.
    pub cpa_target: Option<VirtAddr>,
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
        };
        let cpu = kernel.kernel_space().cpu.with_cr3(pgd);
        Ok(ScenarioState {
            scenario,
            kernel,
            mms,
            cpu,
            cpa_target,
        })
    }

    /// The image of this state: reachable tables, control registers from
    /// `kernel_space().cr_values()` with CR3 = the scenario's pgd.
    pub fn image(&self) -> Result<PagingImage, ScenarioError> {
        export_image(&**self.kernel.pm(), &self.cpu)
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
        if let Some(t) = self.cpa_target {
            let t = t.as_u64();
            vas.extend([t - PAGE_SIZE, t, t + 0x123, t + PAGE_SIZE]);
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
    let mut frames = BTreeSet::new();
    walk_tables(pm, cpu, |t, _| {
        let f = t.as_u64() & !(PAGE_SIZE - 1);
        if f.saturating_add(PAGE_SIZE) <= pm.size() {
            frames.insert(f);
        }
    });
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
        },
        data,
    };
    Ok(PagingImage {
        desc: img.normalized_desc(),
        ..img
    })
}
