//! loom models of the page allocator's per-CPU page lists (run by
//! `scripts/test.sh` with `--cfg loom --cfg loom_physmem`, which makes
//! `zone->lock` and the lists' locks loom mutexes).
//!
//! 1. Two CPUs allocate and free through their lists (refills and trims of
//!    two frames under `zone->lock`) while one of them drains every list:
//!    no frame is handed out twice, the accounting balances, and after a
//!    final drain every frame has merged back into the zone.
//! 2. A frame allocated on one CPU is freed on two at once: exactly one
//!    free wins, whichever paths they take.
#![cfg(all(loom, loom_physmem))]

use loom::sync::{Arc, Mutex};
use physmem::{Frame, FreeError, Owner, PcpConfig, SimMemory, MAX_ORDER};

fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut b = loom::model::Builder::new();
    b.preemption_bound = Some(3);
    b.check(f);
}

fn boot() -> Arc<SimMemory> {
    let pm = Arc::new(SimMemory::new(16 << 20).expect("RAM"));
    pm.set_pcp_config(PcpConfig { batch: 2, high: 3 })
        .expect("config");
    pm
}

/// Frames currently handed out, to catch one handed out twice.
type Held = Arc<Mutex<Vec<Frame>>>;

fn take(pm: &SimMemory, held: &Held) -> Frame {
    let f = pm.alloc_frame(Owner::UserData).expect("frame");
    let mut h = held.lock().expect("held");
    assert!(!h.contains(&f), "{f} handed out twice");
    h.push(f);
    f
}

fn give(pm: &SimMemory, held: &Held, f: Frame) {
    held.lock().expect("held").retain(|&g| g != f);
    pm.free_frame(f).expect("free");
}

#[test]
fn two_cpus_refill_trim_and_a_drain() {
    model(|| {
        let pm = boot();
        let free = pm.free_frames();
        let held: Held = Arc::new(Mutex::new(Vec::new()));
        let t = {
            let (pm, held) = (pm.clone(), held.clone());
            loom::thread::spawn(move || {
                let _cpu = physmem::enter_cpu(1);
                let a = take(&pm, &held);
                let b = take(&pm, &held);
                let c = take(&pm, &held);
                give(&pm, &held, a);
                give(&pm, &held, b);
                give(&pm, &held, c);
            })
        };
        let _cpu = physmem::enter_cpu(0);
        let x = take(&pm, &held);
        pm.drain_pcp();
        let y = take(&pm, &held);
        give(&pm, &held, x);
        give(&pm, &held, y);
        t.join().expect("cpu 1");
        assert_eq!(pm.free_frames(), free);
        assert_eq!(pm.stats().of(Owner::UserData), 0);
        pm.drain_pcp();
        assert_eq!(pm.pcp_stats().frames, 0);
        let big = pm
            .alloc_pages(MAX_ORDER, Owner::KernelData)
            .expect("everything merged back");
        pm.free_pages(big, MAX_ORDER).expect("free");
    });
}

#[test]
fn a_double_free_on_two_cpus_loses_once() {
    model(|| {
        let pm = boot();
        let free = pm.free_frames();
        let f = {
            let _cpu = physmem::enter_cpu(0);
            pm.alloc_frame(Owner::UserData).expect("frame")
        };
        let t = {
            let pm = pm.clone();
            loom::thread::spawn(move || {
                let _cpu = physmem::enter_cpu(1);
                pm.free_frame(f)
            })
        };
        // This thread is no CPU: its free goes to the zone directly.
        let here = pm.free_frame(f);
        let there = t.join().expect("cpu 1");
        let wins = [here, there].iter().filter(|r| r.is_ok()).count();
        assert_eq!(wins, 1, "{here:?} {there:?}");
        for r in [here, there] {
            if let Err(e) = r {
                assert_eq!(e, FreeError::DoubleFree(f));
            }
        }
        assert_eq!(pm.free_frames(), free);
    });
}
