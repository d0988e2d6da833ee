//! Two threads against each other on the vmalloc area, in every mode and
//! every scheme: each keeps a few areas of its own, allocating and freeing
//! them at random, so the area allocator hands each thread ranges the other
//! just freed. After every `vmalloc` a thread touches its area through its
//! own pgd (taking `vmalloc_fault` where the top-level entry is missing)
//! and through `swapper_pg_dir`, and before every `vfree` it checks that
//! every area it still holds maps the same frames as when it got it: a
//! `vfree` that unmapped after dropping `vmlist_lock` would clear the other
//! thread's fresh ptes (docs/CORRECTNESS.md, "vmalloc areas"). At the end
//! the checker (`Kernel::verify`) must be clean, with no frame leaked.

use pgdcache::{Kernel, KernelConfig, Pgd, Scheme, VmError};
use physmem::{SimMemory, VirtAddr, PAGE_SIZE};
use std::sync::Arc;
use x86paging::{Access, PagingMode};

/// A small xorshift generator (no dependency, deterministic per thread).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// The physical address `va` maps to through `pgd`, faulting the vmalloc
/// entry in first if the pgd lacks it (what the page-fault handler does).
fn touch(k: &Kernel, pgd: Pgd, va: VirtAddr) -> Result<u64, String> {
    let ks = k.kernel_space();
    let pm = &**k.pm();
    match ks.translate_in(pm, pgd.0, va, Access::WRITE) {
        Ok(t) => Ok(t.pa.as_u64()),
        Err(first) => {
            let faulted = k.vmalloc_fault(pgd, va).map_err(|e| e.to_string())?;
            ks.translate_in(pm, pgd.0, va, Access::WRITE)
                .map(|t| t.pa.as_u64())
                .map_err(|e| format!("{va}: {first}, then after vmalloc_fault ({faulted}): {e}"))
        }
    }
}

/// One thread's loop: `rounds` vmalloc/vfree operations on CPU `cpu`.
fn worker(k: &Kernel, cpu: usize, rounds: u64) -> Result<u64, String> {
    let _this_cpu = physmem::enter_cpu(cpu);
    let pgd = k.pgd_alloc(cpu).map_err(|e| e.to_string())?;
    k.mm_join(pgd).map_err(|e| e.to_string())?;
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (cpu as u64 + 1));
    let mut mine: Vec<(VirtAddr, Vec<u64>)> = Vec::new();
    let mut ops = 0u64;
    let swapper = k.swapper();
    for _ in 0..rounds {
        if mine.len() < 4 && (mine.is_empty() || rng.below(2) == 0) {
            let pages = 1 + rng.below(3);
            let va = match k.vmalloc(pages) {
                Ok(va) => va,
                Err(VmError::NoSpace(_) | VmError::OutOfMemory(_)) => continue,
                Err(e) => return Err(format!("cpu {cpu}: vmalloc({pages}): {e}")),
            };
            let mut pas = Vec::new();
            for i in 0..pages {
                let p = VirtAddr::new(va.as_u64() + i * PAGE_SIZE);
                let via_swapper = touch(k, swapper, p)?;
                let via_pgd = touch(k, pgd, p)?;
                if via_swapper != via_pgd {
                    return Err(format!(
                        "cpu {cpu}: {p} maps {via_swapper:#x} in swapper but {via_pgd:#x} in the task's pgd"
                    ));
                }
                pas.push(via_swapper);
            }
            mine.push((va, pas));
        } else {
            // Everything this thread holds must still map what it mapped.
            for (va, pas) in &mine {
                for (i, &pa) in pas.iter().enumerate() {
                    let p = VirtAddr::new(va.as_u64() + i as u64 * PAGE_SIZE);
                    let now = touch(k, pgd, p)?;
                    if now != pa {
                        return Err(format!(
                            "cpu {cpu}: area {va} page {i} mapped {pa:#x}, now {now:#x}"
                        ));
                    }
                }
            }
            let (va, _) = mine.swap_remove(rng.below(mine.len() as u64) as usize);
            k.vfree(va)
                .map_err(|e| format!("cpu {cpu}: vfree({va}): {e}"))?;
        }
        ops += 1;
    }
    for (va, _) in mine {
        k.vfree(va).map_err(|e| e.to_string())?;
    }
    k.mm_leave(pgd);
    k.pgd_free(cpu, pgd).map_err(|e| e.to_string())?;
    Ok(ops)
}

#[test]
fn two_threads_vmalloc_vfree_and_vmalloc_fault() {
    let rounds = if cfg!(debug_assertions) { 300 } else { 10_000 };
    for mode in PagingMode::ALL {
        for scheme in Scheme::ALL {
            let pm = Arc::new(SimMemory::new(32 << 20).expect("RAM"));
            let Ok(k) = Kernel::new(pm, &KernelConfig::new(mode, scheme)) else {
                continue; // the scheme does not exist in this mode
            };
            let k = Arc::new(k);
            let handles: Vec<_> = (0..2)
                .map(|cpu| {
                    let k = k.clone();
                    std::thread::spawn(move || worker(&k, cpu, rounds))
                })
                .collect();
            for h in handles {
                let ops = h
                    .join()
                    .expect("worker thread")
                    .unwrap_or_else(|e| panic!("{mode} {scheme}: {e}"));
                assert!(ops > rounds / 2, "{mode} {scheme}: only {ops} operations");
            }
            let r = k.verify().expect("verify");
            assert!(r.is_clean(), "{mode} {scheme}: {:?}", r.violations);
            assert_eq!(r.leaked_frames, 0, "{mode} {scheme}");
            assert!(k.vmalloc_areas().is_empty());
        }
    }
}
