//! The SMP machine: CPUs, their TLBs, and the `flush_kernel_map` IPI.
//!
//! Each simulated CPU is a thread. It has a current address space (its CR3)
//! and a small TLB of kernel translations taken from software-MMU walks.
//! Switching CR3 drops the non-global entries, as `MOV CR3` does; global
//! entries (the kernel's direct map has `_PAGE_GLOBAL`) survive — which is
//! exactly why a stale cached pgd could go unnoticed on real hardware.
//!
//! `global_flush_tlb` (and `vfree`) call the kernel's flush hook; the hook
//! installed by [`Smp::install`] models the IPI: it bumps a request
//! generation and waits until every *running* CPU has acknowledged it. CPUs
//! acknowledge (flush their whole TLB) at their next operation boundary. A
//! CPU that itself requests a flush acknowledges its own request while it
//! waits, and keeps acknowledging newer ones, so two CPUs flushing at once
//! cannot wait for each other; a CPU that has left its loop is marked not
//! running (by a drop guard, so even a panicking thread) and is not waited for.

use parking_lot::Mutex;
use pgdcache::Kernel;
use std::cell::Cell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

thread_local! {
    /// The simulated CPU this thread is, if it is one.
    static THIS_CPU: Cell<Option<usize>> = const { Cell::new(None) };
}

/// One cached translation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TlbEntry {
    /// Physical address of the 4 KiB page.
    pub pa_page: u64,
    /// The effective flags (`EntryFlags` bits).
    pub flags: u64,
    /// Survives CR3 switches.
    pub global: bool,
}

/// A per-CPU TLB: virtual page → translation, FIFO-evicted.
#[derive(Debug, Default)]
pub struct Tlb {
    map: HashMap<u64, TlbEntry>,
    order: std::collections::VecDeque<u64>,
    capacity: usize,
    /// Lookups that hit.
    pub hits: u64,
    /// Lookups that missed.
    pub misses: u64,
    /// Full flushes.
    pub flushes: u64,
}

impl Tlb {
    /// An empty TLB of `capacity` entries.
    pub fn new(capacity: usize) -> Tlb {
        Tlb {
            capacity: capacity.max(1),
            ..Tlb::default()
        }
    }

    /// Looks `vpn` up.
    pub fn lookup(&mut self, vpn: u64) -> Option<TlbEntry> {
        let e = self.map.get(&vpn).copied();
        if e.is_some() {
            self.hits += 1;
        } else {
            self.misses += 1;
        }
        e
    }

    /// Caches a translation.
    pub fn insert(&mut self, vpn: u64, e: TlbEntry) {
        if self.map.insert(vpn, e).is_none() {
            self.order.push_back(vpn);
            while self.map.len() > self.capacity {
                match self.order.pop_front() {
                    Some(old) => {
                        self.map.remove(&old);
                    }
                    None => break,
                }
            }
        }
    }

    /// `MOV CR3`: drops non-global entries.
    pub fn switch_cr3(&mut self) {
        self.map.retain(|_, e| e.global);
        let map = &self.map;
        self.order.retain(|v| map.contains_key(v));
    }

    /// Full flush (`__flush_tlb_all`).
    pub fn flush_all(&mut self) {
        self.map.clear();
        self.order.clear();
        self.flushes += 1;
    }

    /// Number of cached entries.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True if empty.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// Per-CPU state shared with other threads.
#[derive(Debug)]
pub struct CpuSlot {
    /// Last flush request generation this CPU acknowledged.
    acked: AtomicU64,
    /// False once the CPU has left its loop.
    running: AtomicBool,
    /// The TLB (touched by this CPU's own thread only; a mutex for `Sync`).
    pub tlb: Mutex<Tlb>,
    /// Current CR3 (physical address of the pgd).
    pub cr3: AtomicU64,
}

/// The machine's CPUs and the flush IPI.
#[derive(Debug)]
pub struct Smp {
    request: AtomicU64,
    cpus: Vec<CpuSlot>,
    /// Flush requests made (`global_flush_tlb` + `vfree`).
    pub requests: AtomicU64,
}

impl Smp {
    /// `n` CPUs, all running, with `tlb_entries`-entry TLBs, CR3 = `cr3`.
    pub fn new(n: usize, tlb_entries: usize, cr3: u64) -> Arc<Smp> {
        Arc::new(Smp {
            request: AtomicU64::new(0),
            cpus: (0..n)
                .map(|_| CpuSlot {
                    acked: AtomicU64::new(0),
                    running: AtomicBool::new(true),
                    tlb: Mutex::new(Tlb::new(tlb_entries)),
                    cr3: AtomicU64::new(cr3),
                })
                .collect(),
            requests: AtomicU64::new(0),
        })
    }

    /// Installs the flush hook in `kernel`.
    pub fn install(self: &Arc<Self>, kernel: &Kernel) {
        let smp = Arc::clone(self);
        kernel.set_flush_hook(move || smp.flush_ipi());
    }

    /// CPU `cpu`'s slot.
    pub fn cpu(&self, cpu: usize) -> Option<&CpuSlot> {
        self.cpus.get(cpu)
    }

    /// Number of CPUs.
    pub fn len(&self) -> usize {
        self.cpus.len()
    }

    /// True if there are no CPUs.
    pub fn is_empty(&self) -> bool {
        self.cpus.is_empty()
    }

    /// Marks the calling thread as CPU `cpu` until the guard drops; the
    /// guard marks the CPU not running when it drops.
    pub fn enter(self: &Arc<Self>, cpu: usize) -> CpuGuard {
        THIS_CPU.with(|c| c.set(Some(cpu)));
        CpuGuard {
            smp: Arc::clone(self),
            cpu,
        }
    }

    /// The operation boundary of CPU `cpu`: acknowledges any pending flush.
    pub fn boundary(&self, cpu: usize) {
        let Some(slot) = self.cpus.get(cpu) else {
            return;
        };
        let want = self.request.load(Ordering::Acquire);
        if slot.acked.load(Ordering::Acquire) < want {
            slot.tlb.lock().flush_all();
            slot.acked.store(want, Ordering::Release);
        }
    }

    /// The `flush_kernel_map` IPI: request a flush from every CPU and wait
    /// for every running CPU to acknowledge.
    pub fn flush_ipi(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let g = self.request.fetch_add(1, Ordering::AcqRel) + 1;
        let me = THIS_CPU.with(Cell::get);
        let mut spins = 0u32;
        loop {
            if let Some(me) = me {
                // Acknowledge our own (and any concurrent) request.
                self.boundary(me);
            }
            let done = self.cpus.iter().all(|s| {
                !s.running.load(Ordering::Acquire) || s.acked.load(Ordering::Acquire) >= g
            });
            if done {
                return;
            }
            spins += 1;
            if spins < 64 {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
    }
}

/// Marks a thread as a running CPU; on drop, marks it stopped.
#[derive(Debug)]
pub struct CpuGuard {
    smp: Arc<Smp>,
    cpu: usize,
}

impl Drop for CpuGuard {
    fn drop(&mut self) {
        if let Some(s) = self.smp.cpus.get(self.cpu) {
            s.running.store(false, Ordering::Release);
        }
        THIS_CPU.with(|c| c.set(None));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tlb_global_survives_cr3_switch() {
        let mut t = Tlb::new(2);
        let g = TlbEntry {
            pa_page: 1,
            flags: 0,
            global: true,
        };
        t.insert(1, g);
        t.insert(2, TlbEntry { global: false, ..g });
        t.switch_cr3();
        assert_eq!(t.lookup(1), Some(g));
        assert_eq!(t.lookup(2), None);
        t.insert(3, g);
        t.insert(4, g);
        assert_eq!(t.len(), 2);
        t.flush_all();
        assert!(t.is_empty());
    }

    #[test]
    fn concurrent_flushes_do_not_deadlock() {
        let smp = Smp::new(2, 8, 0);
        let hs: Vec<_> = (0..2)
            .map(|cpu| {
                let smp = Arc::clone(&smp);
                std::thread::spawn(move || {
                    let _g = smp.enter(cpu);
                    for i in 0..2000 {
                        smp.boundary(cpu);
                        if i % 3 == cpu {
                            smp.flush_ipi();
                        }
                    }
                })
            })
            .collect();
        // A non-CPU requester too, and one after the CPUs have exited.
        for _ in 0..100 {
            smp.flush_ipi();
        }
        for h in hs {
            h.join().unwrap();
        }
        smp.flush_ipi();
    }
}
