//! Property tests: random sequences of pgd_alloc/free (exec, fork, exit),
//! cpa split/revert, vmalloc/vfree and shrink. Correct schemes never
//! violate; `slab-unsynced` is caught whenever a cached pgd is reused after
//! a conversion.

use pgdcache::mm::{Mm, TaskSize};
use pgdcache::{Kernel, KernelConfig, Scheme};
use physmem::{SimMemory, VirtAddr};
use proptest::prelude::*;
use std::sync::Arc;
use x86paging::{EntryFlags, PagingMode};

#[derive(Clone, Debug)]
enum Op {
    Exec,
    Fork(usize),
    Exit(usize),
    /// Toggle page `i` of the target large pages to uncached or back.
    Cpa(usize),
    Flush,
    Vmalloc(u64),
    Vfree(usize),
    Shrink,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => Just(Op::Exec),
        2 => any::<usize>().prop_map(Op::Fork),
        3 => any::<usize>().prop_map(Op::Exit),
        2 => (0usize..6).prop_map(Op::Cpa),
        1 => Just(Op::Flush),
        1 => (1u64..40).prop_map(Op::Vmalloc),
        1 => any::<usize>().prop_map(Op::Vfree),
        1 => Just(Op::Shrink),
    ]
}

struct World {
    k: Kernel,
    mms: Vec<Mm>,
    areas: Vec<VirtAddr>,
    uncached: [bool; 6],
}

impl World {
    fn new(mode: PagingMode, scheme: Scheme) -> Option<World> {
        let pm = Arc::new(SimMemory::new(32 << 20).ok()?);
        let mut cfg = KernelConfig::new(mode, scheme);
        cfg.debug = true;
        let k = Kernel::new(pm, &cfg).ok()?;
        Some(World {
            k,
            mms: Vec::new(),
            areas: Vec::new(),
            uncached: [false; 6],
        })
    }

    /// Six pages: three in one large page, three in the next.
    fn page(&self, i: usize) -> VirtAddr {
        let large = if self.k.mode() == PagingMode::TwoLevel {
            4 << 20
        } else {
            2 << 20
        };
        VirtAddr::new(
            self.k.mode().page_offset()
                + (16 << 20)
                + (i / 3) as u64 * large
                + (i % 3) as u64 * 4096,
        )
    }

    fn apply(&mut self, op: &Op) {
        let k = &self.k;
        match *op {
            Op::Exec if self.mms.len() < 24 => {
                self.mms.push(
                    k.exec_mm(
                        0,
                        TaskSize {
                            text: 2,
                            data: 2,
                            stack: 1,
                        },
                    )
                    .unwrap(),
                );
            }
            Op::Fork(i) if !self.mms.is_empty() && self.mms.len() < 24 => {
                let child = k.fork_mm(1, &self.mms[i % self.mms.len()]).unwrap();
                self.mms.push(child);
            }
            Op::Exit(i) if !self.mms.is_empty() => {
                let mm = self.mms.swap_remove(i % self.mms.len());
                k.exit_mm(i % 2, mm).unwrap();
            }
            Op::Cpa(i) => {
                let va = self.page(i);
                let def = k.page_kernel_at(va).unwrap();
                let prot = if self.uncached[i] {
                    def
                } else {
                    def | EntryFlags::PCD | EntryFlags::PWT
                };
                k.change_page_attr(va, 1, prot).unwrap();
                self.uncached[i] = !self.uncached[i];
            }
            Op::Flush => {
                k.global_flush_tlb();
            }
            Op::Vmalloc(n) if self.areas.len() < 8 => {
                self.areas.push(k.vmalloc(n).unwrap());
            }
            Op::Vfree(i) if !self.areas.is_empty() => {
                let va = self.areas.swap_remove(i % self.areas.len());
                k.vfree(va).unwrap();
            }
            Op::Shrink => {
                k.shrink();
            }
            _ => {}
        }
    }

    fn teardown(mut self) {
        for mm in self.mms.drain(..) {
            self.k.exit_mm(0, mm).unwrap();
        }
        for va in self.areas.drain(..) {
            self.k.vfree(va).unwrap();
        }
        self.k.global_flush_tlb();
        let r = self.k.verify().unwrap();
        assert!(r.is_clean(), "{:?}", r.violations);
    }
}

fn correct_schemes() -> Vec<(PagingMode, Scheme)> {
    let mut v = Vec::new();
    for mode in PagingMode::ALL {
        for scheme in Scheme::ALL {
            if scheme.intended_correct()
                && !(mode == PagingMode::TwoLevel && scheme == Scheme::SharedKernel)
            {
                v.push((mode, scheme));
            }
        }
    }
    v
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn correct_schemes_never_violate(which in 0usize..100, ops in proptest::collection::vec(op(), 1..60)) {
        let all = correct_schemes();
        let (mode, scheme) = all[which % all.len()];
        let mut w = World::new(mode, scheme).unwrap();
        for op in &ops {
            w.apply(op);
            let r = w.k.verify().unwrap();
            prop_assert!(r.is_clean(), "{mode} {scheme} after {op:?}: {:?}", r.violations);
        }
        w.teardown();
    }

    #[test]
    fn slab_unsynced_is_caught_when_a_cached_pgd_is_reused(
        prefix in proptest::collection::vec(op(), 0..30),
        cached in 1usize..6,
        page in 0usize..6,
    ) {
        let mut w = World::new(PagingMode::TwoLevel, Scheme::SlabUnsynced).unwrap();
        for op in &prefix {
            w.apply(op);
        }
        // Put every conversion back, then cache some pgds in the current state.
        for i in 0..6 {
            if w.uncached[i] {
                w.apply(&Op::Cpa(i));
            }
        }
        w.k.global_flush_tlb();
        let extra: Vec<Mm> = (0..cached).map(|_| w.k.exec_mm(0, TaskSize { text: 1, data: 1, stack: 1 }).unwrap()).collect();
        for mm in extra {
            w.k.exit_mm(0, mm).unwrap();
        }
        // A conversion, then reuse a cached pgd.
        w.apply(&Op::Cpa(page));
        let reused = w.k.exec_mm(0, TaskSize { text: 1, data: 1, stack: 1 }).unwrap();
        let r = w.k.verify().unwrap();
        prop_assert!(!r.is_clean(), "the stale cached pgd must be caught");
        w.mms.push(reused);
    }
}
