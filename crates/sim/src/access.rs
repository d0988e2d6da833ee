//! Kernel accesses through a CPU's current pgd, checked against the truth.
//!
//! After every fork and exec a CPU touches kernel addresses through *its
//! own* page directory with the software MMU (`KernelSpace::translate_in`),
//! through its TLB: the graphics agent's target pages, a neighbour of each
//! in the same large page, two random direct-map addresses, and a page of
//! each live vmalloc area. A translation must reach the right frame — the
//! direct map never moves, a vmalloc page is the frame the area got — and a
//! target page must have the cacheability the graphics agent last
//! committed, compared only when no `change_page_attr` was in flight during
//! the access (the agent's seqlock). A not-present vmalloc entry is the lazy
//! sync: `vmalloc_fault` and retry once. Anything else is a violation:
//! `dangling` when the walk reached a freed table, `stale` for a wrong
//! frame or stale attributes, `fault` for a fault on a kernel address.

use crate::report::ViolationCounts;
use crate::rng::Rng;
use crate::run::Gfx;
use crate::smp::{Smp, TlbEntry};
use parking_lot::{Mutex, RwLock};
use pgdcache::{Kernel, Pgd, ViolationKind};
use physmem::{VirtAddr, PAGE_SIZE};
use std::sync::atomic::{AtomicU64, Ordering};
use x86paging::walk::WalkFault;
use x86paging::{Access, EntryFlags};

/// How many violations are kept verbatim.
const KEEP: usize = 8;

/// Live vmalloc areas and the frames behind their pages. The vmalloc agent
/// removes an area here (write lock) before `vfree`, and CPUs hold the read
/// lock while they touch areas, so no CPU touches an area being freed.
#[derive(Debug, Default)]
pub struct VmAreas {
    areas: RwLock<Vec<(u64, Vec<u64>)>>,
}

impl VmAreas {
    /// Registers area `va` whose pages are backed by `pas`.
    pub fn add(&self, va: u64, pas: Vec<u64>) {
        self.areas.write().push((va, pas));
    }

    /// Unregisters a random area, returning its address.
    pub fn remove_random(&self, rng: &mut Rng) -> Option<u64> {
        let mut a = self.areas.write();
        if a.is_empty() {
            return None;
        }
        let i = rng.below(a.len() as u64) as usize;
        Some(a.swap_remove(i).0)
    }

    /// Number of areas.
    pub fn len(&self) -> usize {
        self.areas.read().len()
    }

    /// True if there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What a CPU's kernel access reads: the parts of the simulated machine
/// the live checker looks at, borrowed for one touch (the checker never
/// sees the `World` that owns it).
pub(crate) struct Machine<'a> {
    pub(crate) kernel: &'a Kernel,
    pub(crate) gfx: &'a Gfx,
    pub(crate) smp: &'a Smp,
    pub(crate) areas: &'a VmAreas,
}

/// The live checker: what to touch, and the violations seen.
#[derive(Debug)]
pub struct Checker {
    direct: (u64, u64),
    /// (target, neighbour in the same large page)
    targets: Vec<(u64, u64)>,
    stale: AtomicU64,
    dangling: AtomicU64,
    fault: AtomicU64,
    first: Mutex<(Option<ViolationKind>, Vec<String>)>,
}

impl Checker {
    /// A checker for `kernel` whose graphics agent toggles `targets`.
    pub fn new(kernel: &Kernel, targets: &[VirtAddr]) -> Checker {
        let l = &kernel.kernel_space().layout;
        let large = kernel.mode().span(x86paging::Level::Pmd);
        Checker {
            direct: (l.page_offset, l.direct_map_end),
            targets: targets
                .iter()
                .map(|t| {
                    let base = t.as_u64() & !(large - 1);
                    let mut nb = base + 7 * PAGE_SIZE;
                    if nb == t.as_u64() {
                        nb += PAGE_SIZE;
                    }
                    (t.as_u64(), nb)
                })
                .collect(),
            stale: AtomicU64::new(0),
            dangling: AtomicU64::new(0),
            fault: AtomicU64::new(0),
            first: Mutex::new((None, Vec::new())),
        }
    }

    /// Counts, the first few violations, and the kind of the very first.
    pub fn summary(&self) -> (ViolationCounts, Vec<String>, Option<ViolationKind>) {
        let f = self.first.lock();
        (
            ViolationCounts {
                stale: self.stale.load(Ordering::Relaxed),
                dangling: self.dangling.load(Ordering::Relaxed),
                fault: self.fault.load(Ordering::Relaxed),
                not_constructed: 0,
                leak: 0,
                vmalloc_unmapped: 0,
                use_after_free: 0,
            },
            f.1.clone(),
            f.0,
        )
    }

    fn record(&self, kind: ViolationKind, cpu: usize, pgd: Pgd, va: u64, detail: String) {
        let c = match kind {
            ViolationKind::Dangling => &self.dangling,
            ViolationKind::Fault => &self.fault,
            // A CPU sees a wrong translation: everything else is stale.
            _ => &self.stale,
        };
        c.fetch_add(1, Ordering::Relaxed);
        let mut f = self.first.lock();
        if f.0.is_none() {
            f.0 = Some(kind);
        }
        if f.1.len() < KEEP {
            f.1.push(format!(
                "{}: cpu {cpu} pgd {} va {va:#x}: {detail}",
                kind.name(),
                pgd.0
            ));
        }
    }

    /// Touches the kernel addresses through `pgd` on `cpu`. Returns
    /// (accesses, TLB hits).
    pub(crate) fn touch(&self, w: &Machine<'_>, cpu: usize, pgd: Pgd, rng: &mut Rng) -> (u64, u64) {
        let mut n = 0;
        let mut hits = 0;
        let ks = w.kernel.kernel_space();
        let mut one = |va: u64, expect: Option<u64>, target: bool, rng_hit: &mut u64| {
            let expect = expect.or_else(|| ks.reference(VirtAddr::new(va)).map(|r| r.0.as_u64()));
            if let Some(expect) = expect {
                n += 1;
                if self.access(w, cpu, pgd, va, expect, target) {
                    *rng_hit += 1;
                }
            }
        };
        for &(t, nb) in &self.targets {
            one(t, None, true, &mut hits);
            one(nb, None, false, &mut hits);
        }
        let (lo, hi) = self.direct;
        let pages = (hi - lo) / PAGE_SIZE;
        for _ in 0..2 {
            let va = lo + rng.below(pages) * PAGE_SIZE + rng.below(PAGE_SIZE / 8) * 8;
            one(va, None, false, &mut hits);
        }
        let areas = w.areas.areas.read();
        for (va, pas) in areas.iter() {
            let i = rng.below(pas.len() as u64);
            if let Some(&pa) = pas.get(i as usize) {
                one(va + i * PAGE_SIZE, Some(pa), false, &mut hits);
            }
        }
        (n, hits)
    }

    /// One supervisor read of `va` through `pgd`. Returns true on a TLB hit.
    fn access(
        &self,
        w: &Machine<'_>,
        cpu: usize,
        pgd: Pgd,
        va: u64,
        expect: u64,
        target: bool,
    ) -> bool {
        let g = &w.gfx;
        let seq1 = g.seq.load(Ordering::Acquire);
        let want_uncached = g.uncached.load(Ordering::Acquire);
        let vpn = va / PAGE_SIZE;
        let Some(slot) = w.smp.cpu(cpu) else {
            return false;
        };
        let cached = slot.tlb.lock().lookup(vpn);
        let hit = cached.is_some();
        let entry = match cached {
            Some(e) => e,
            None => {
                let k = w.kernel;
                let ks = k.kernel_space();
                let mut tries = 0;
                loop {
                    match ks.translate_in(&**k.pm(), pgd.0, VirtAddr::new(va), Access::READ) {
                        Ok(t) => {
                            let e = TlbEntry {
                                pa_page: t.pa.as_u64() & !(PAGE_SIZE - 1),
                                flags: t.flags.bits(),
                                global: t.flags.contains(EntryFlags::GLOBAL),
                            };
                            slot.tlb.lock().insert(vpn, e);
                            break e;
                        }
                        Err(WalkFault::PageFault { .. })
                            if tries == 0 && k.in_vmalloc_area(VirtAddr::new(va)) =>
                        {
                            tries += 1;
                            if let Err(e) = k.vmalloc_fault(pgd, VirtAddr::new(va)) {
                                self.record(
                                    ViolationKind::Fault,
                                    cpu,
                                    pgd,
                                    va,
                                    format!("vmalloc_fault: {e}"),
                                );
                                return false;
                            }
                        }
                        Err(f @ WalkFault::Dangling { .. }) => {
                            self.record(ViolationKind::Dangling, cpu, pgd, va, f.to_string());
                            return false;
                        }
                        Err(f) => {
                            self.record(ViolationKind::Fault, cpu, pgd, va, f.to_string());
                            return false;
                        }
                    }
                }
            }
        };
        let want_page = expect & !(PAGE_SIZE - 1);
        if entry.pa_page != want_page {
            self.record(
                ViolationKind::Stale,
                cpu,
                pgd,
                va,
                format!(
                    "translates to {:#x}, expected {want_page:#x}{}",
                    entry.pa_page,
                    if hit { " (TLB)" } else { "" }
                ),
            );
            return hit;
        }
        if target && seq1.is_multiple_of(2) && g.seq.load(Ordering::Acquire) == seq1 {
            let pcd = EntryFlags::from_bits_retain(entry.flags).contains(EntryFlags::PCD);
            if pcd != want_uncached {
                self.record(
                    ViolationKind::Stale,
                    cpu,
                    pgd,
                    va,
                    format!(
                        "{} but the graphics driver committed {}{}",
                        if pcd { "uncached" } else { "cached" },
                        if want_uncached { "uncached" } else { "cached" },
                        if hit { " (TLB)" } else { "" }
                    ),
                );
            }
        }
        hit
    }
}
