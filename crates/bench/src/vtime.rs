//! Virtual-time SMP model: projects the `script` workload to 4–64 CPUs on a
//! 2-core machine.
//!
//! Real threads cannot show what happens at 16 or 64 CPUs on two cores, so
//! this module replays the workload as a deterministic discrete-event
//! simulation. Each simulated CPU executes a *task model* — the sequence of
//! one script task's work, split into parallel work and critical sections on
//! the three global locks a task takes (`zone` in the page allocator,
//! `mmlist_lock`, `pgd_lock`) — and the graphics agent's `change_page_attr`
//! propagation takes `pgd_lock` (`slab-pgd-list`) or `mmlist_lock` (the
//! others) at the workload's rate for as long as walking the list takes.
//!
//! Every cost is calibrated on this machine from measured per-operation
//! times ([`calibrate`]): the single-threaded time of a task, lock
//! acquisitions per task and mean hold times (from the kernel's timed
//! locks), the zone lock's acquisitions (counted by the page allocator:
//! the refills and trims of the CPU's page list) and hold (a batch of page
//! alloc + free pairs minus the poisoning fill done outside the lock), the
//! cache-line transfer cost (an
//! atomic ping-pong between two threads), the parking mutex's wake-up
//! latency, and the per-pgd propagation cost. Contention is resolved in
//! virtual time: a lock is either free (taken at once), or the CPU queues;
//! at release the lock passes to the next waiter — in arrival order for the
//! ticket lock (FIFO), to a pseudo-randomly chosen waiter for the
//! test-and-set lock — after a cache-line transfer. The parking mutex does
//! not hand over: a waiter spins for a while and then parks; an unlock frees
//! the lock for the first waiter still spinning (or any newcomer) and wakes
//! one parked waiter, which tries again after the measured wake-up latency.
//!
//! What it leaves out, on purpose: memory-bandwidth and cache effects of
//! more CPUs on the parallel work, the flush IPI (rare in `script`), the
//! vmalloc agent (10 operations per 1000 tasks), and the host scheduler. The
//! model is validated against the real 1- and 2-thread runs
//! ([`crate::smp`]); the relative error is reported next to every
//! projection.

use crate::micro::{boot, median, MicroError};
use pgdcache::mm::TaskSize;
use pgdcache::{Kernel, KernelConfig, LockKind, Scheme};
use physmem::{Owner, SimMemory};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use x86paging::gen::Rng;
use x86paging::PagingMode;

/// The global locks of the model.
pub const LOCK_NAMES: [&str; 3] = ["zone", "mmlist_lock", "pgd_lock"];
const ZONE: usize = 0;
const MMLIST: usize = 1;
const PGD: usize = 2;

/// Measured costs of one configuration, in nanoseconds.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct Calibration {
    /// Mode.
    pub mode: Option<PagingMode>,
    /// Scheme.
    pub scheme: Option<Scheme>,
    /// Lock variant.
    pub lock: Option<LockKind>,
    /// One script task (fork + exec + exit + exit), single-threaded.
    pub task_ns: f64,
    /// Acquisitions per task of zone, mmlist_lock, pgd_lock.
    pub acq_per_task: [f64; 3],
    /// Mean hold time of zone, mmlist_lock, pgd_lock.
    pub hold_ns: [f64; 3],
    /// Cache-line transfer between two cores (half an atomic round trip).
    pub xfer_ns: f64,
    /// Wake-up latency of a parked mutex waiter.
    pub wake_ns: f64,
    /// Propagation of one conversion, per pgd.
    pub prop_per_pgd_ns: f64,
    /// Pgds a conversion walks with one CPU (pgd_list or mmlist length).
    pub walked_pgds_1cpu: f64,
    /// `pgd_alloc` + `pgd_free`, cache hit.
    pub alloc_hit_ns: f64,
    /// `pgd_alloc` that grows the cache (slab + ctor), per pgd.
    pub alloc_miss_ns: f64,
}

/// A segment of a task model.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Seg {
    /// Parallel work.
    Work(f64),
    /// A critical section on lock `lock` of `hold` ns.
    Lock {
        /// Which lock (index into [`LOCK_NAMES`]).
        lock: usize,
        /// Hold time.
        hold: f64,
    },
    /// A task ends here.
    TaskEnd,
}

/// How a lock hands over under contention.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub enum LockModel {
    /// Arrival order (ticket lock).
    Fifo,
    /// A pseudo-random waiter (test-and-set).
    Tas,
    /// `parking_lot::Mutex`: a waiter spins for `spin_ns`, then parks. An
    /// unlock releases the lock (no hand-off): a spinning waiter takes it at
    /// once, and one parked waiter, if any, is woken and retries `wake_ns`
    /// later, when it takes the lock if it is free and waits again if not.
    /// (parking_lot's periodic fair hand-off, every ~0.5 ms, is left out.)
    Mutex {
        /// Spin phase before parking.
        spin_ns: f64,
        /// Wake-up latency.
        wake_ns: f64,
    },
}

/// The periodic agent: one critical section every `every` tasks.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Agent {
    /// Tasks between two sections.
    pub every: u64,
    /// Lock.
    pub lock: usize,
    /// Hold time.
    pub hold: f64,
}

/// Per-lock results of a virtual-time run.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct VLockStats {
    /// Acquisitions.
    pub acquisitions: u64,
    /// Acquisitions that had to wait.
    pub contended: u64,
    /// Total wait, ns.
    pub wait_ns: f64,
    /// Total occupancy (cache-line transfer + hold), ns.
    pub hold_ns: f64,
}

/// Result of a virtual-time run.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct VResult {
    /// CPUs.
    pub cpus: usize,
    /// Tasks completed.
    pub tasks: u64,
    /// Virtual makespan, ns.
    pub makespan_ns: f64,
    /// Tasks per virtual second.
    pub tasks_per_s: f64,
    /// zone, mmlist_lock, pgd_lock.
    pub locks: [VLockStats; 3],
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Ev {
    /// CPU (or the agent, index `cpus`) runs its next segment.
    Next(usize),
    /// The holder of a lock releases it.
    Release(usize, usize),
    /// A parked mutex waiter, woken, tries the lock again.
    Retry(usize, usize),
}

#[derive(Clone, Copy)]
struct Waiter {
    cpu: usize,
    /// Start of the current spin phase (a woken waiter spins again).
    spin_from: f64,
    /// Start of the wait, for the statistics.
    since: f64,
    hold: f64,
}

struct LockState {
    owner: Option<usize>,
    last: Option<usize>,
    waiters: VecDeque<Waiter>,
}

/// Runs `segs` (one period, repeated) on `cpus` CPUs until `tasks` tasks
/// are done, with lock models `models` and cache-line transfer `xfer_ns`.
pub fn simulate(
    segs: &[Seg],
    models: [LockModel; 3],
    xfer_ns: f64,
    agent: Option<Agent>,
    cpus: usize,
    tasks: u64,
    seed: u64,
) -> VResult {
    let cpus = cpus.max(1);
    let agent_id = cpus;
    let ps = |ns: f64| (ns.max(0.0) * 1000.0).round() as u64;
    let mut heap: BinaryHeap<Reverse<(u64, u64, Ev)>> = BinaryHeap::new();
    let mut seq = 0u64;
    let mut push = |heap: &mut BinaryHeap<_>, t: f64, ev: Ev| {
        seq += 1;
        heap.push(Reverse((ps(t), seq, ev)));
    };
    let mut idx = vec![0usize; cpus];
    let mut locks: Vec<LockState> = (0..3)
        .map(|_| LockState {
            owner: None,
            last: None,
            waiters: VecDeque::new(),
        })
        .collect();
    let mut stats = [VLockStats::default(); 3];
    let mut rng = Rng::new(seed);
    let mut done = 0u64;
    let mut claimed = cpus as u64;
    let mut finish = 0.0f64;
    let mut next_agent = agent.map(|a| a.every.max(1));
    // A woken mutex waiter's (since, hold), by CPU (the agent last).
    let mut retry: Vec<Option<(f64, f64)>> = vec![None; cpus + 1];
    for c in 0..cpus {
        push(&mut heap, 0.0, Ev::Next(c));
    }
    if segs.iter().all(|s| !matches!(s, Seg::TaskEnd)) {
        return VResult {
            cpus,
            ..VResult::default()
        };
    }
    // Grants `lock` to `cpu` at `t` (after a transfer if another CPU held it).
    let grant = |heap: &mut BinaryHeap<_>,
                 push: &mut dyn FnMut(&mut BinaryHeap<_>, f64, Ev),
                 st: &mut LockState,
                 ls: &mut VLockStats,
                 lock: usize,
                 cpu: usize,
                 t: f64,
                 hold: f64| {
        let xfer = if st.last.is_some_and(|l| l != cpu) {
            xfer_ns
        } else {
            0.0
        };
        st.owner = Some(cpu);
        st.last = Some(cpu);
        ls.acquisitions += 1;
        ls.hold_ns += xfer + hold;
        push(heap, t + xfer + hold, Ev::Release(lock, cpu));
    };
    while let Some(Reverse((tps, _, ev))) = heap.pop() {
        let t = tps as f64 / 1000.0;
        match ev {
            Ev::Next(c) if c == agent_id => {
                if let Some(a) = agent {
                    let st = &mut locks[a.lock];
                    if st.owner.is_none() {
                        grant(
                            &mut heap,
                            &mut push,
                            st,
                            &mut stats[a.lock],
                            a.lock,
                            c,
                            t,
                            a.hold,
                        );
                    } else {
                        st.waiters.push_back(Waiter {
                            cpu: c,
                            spin_from: t,
                            since: t,
                            hold: a.hold,
                        });
                    }
                }
            }
            Ev::Next(c) => {
                let seg = segs[idx[c] % segs.len()];
                idx[c] += 1;
                match seg {
                    Seg::Work(w) => push(&mut heap, t + w, Ev::Next(c)),
                    Seg::TaskEnd => {
                        done += 1;
                        finish = finish.max(t);
                        if let (Some(a), Some(n)) = (agent, next_agent) {
                            if done >= n {
                                next_agent = Some(n + a.every.max(1));
                                push(&mut heap, t, Ev::Next(agent_id));
                            }
                        }
                        if claimed < tasks {
                            claimed += 1;
                            push(&mut heap, t, Ev::Next(c));
                        }
                    }
                    Seg::Lock { lock, hold } => {
                        let st = &mut locks[lock];
                        if st.owner.is_none() {
                            grant(&mut heap, &mut push, st, &mut stats[lock], lock, c, t, hold);
                        } else {
                            st.waiters.push_back(Waiter {
                                cpu: c,
                                spin_from: t,
                                since: t,
                                hold,
                            });
                        }
                    }
                }
            }
            Ev::Release(lock, c) => {
                let st = &mut locks[lock];
                st.owner = None;
                if c != agent_id {
                    push(&mut heap, t, Ev::Next(c));
                }
                if st.waiters.is_empty() {
                    continue;
                }
                let pick = match models[lock] {
                    LockModel::Mutex { spin_ns, wake_ns } => {
                        // Wake one parked waiter; it retries after the wake-up.
                        let parked = st.waiters.iter().position(|w| t - w.spin_from > spin_ns);
                        if let Some(w) = parked.and_then(|pos| st.waiters.remove(pos)) {
                            retry[w.cpu] = Some((w.since, w.hold));
                            push(&mut heap, t + wake_ns, Ev::Retry(lock, w.cpu));
                        }
                        // The lock is free: the first waiter still spinning takes it.
                        st.waiters.iter().position(|w| t - w.spin_from <= spin_ns)
                    }
                    LockModel::Tas => Some(rng.below(st.waiters.len() as u64) as usize),
                    LockModel::Fifo => Some(0),
                };
                if let Some(w) = pick.and_then(|pos| st.waiters.remove(pos)) {
                    stats[lock].contended += 1;
                    stats[lock].wait_ns += t - w.since;
                    grant(
                        &mut heap,
                        &mut push,
                        st,
                        &mut stats[lock],
                        lock,
                        w.cpu,
                        t,
                        w.hold,
                    );
                }
            }
            Ev::Retry(lock, c) => {
                let Some((since, hold)) = retry[c].take() else {
                    continue;
                };
                let st = &mut locks[lock];
                if st.owner.is_none() {
                    stats[lock].contended += 1;
                    stats[lock].wait_ns += t - since;
                    grant(&mut heap, &mut push, st, &mut stats[lock], lock, c, t, hold);
                } else {
                    st.waiters.push_back(Waiter {
                        cpu: c,
                        spin_from: t,
                        since,
                        hold,
                    });
                }
            }
        }
    }
    VResult {
        cpus,
        tasks: done,
        makespan_ns: finish,
        tasks_per_s: if finish > 0.0 {
            done as f64 * 1e9 / finish
        } else {
            0.0
        },
        locks: stats,
    }
}

/// The lock model of a lock variant.
pub fn lock_model(kind: LockKind, cal: &Calibration) -> LockModel {
    match kind {
        LockKind::Tas => LockModel::Tas,
        LockKind::Ticket => LockModel::Fifo,
        LockKind::Mutex => LockModel::Mutex {
            spin_ns: SPIN_NS,
            wake_ns: cal.wake_ns,
        },
    }
}

/// The spin phase of `parking_lot::Mutex` before it parks: a few rounds of
/// `spin_loop` then of `yield_now`; taken as 2 µs (an assumption, stated).
pub const SPIN_NS: f64 = 2_000.0;

/// One period of `period` tasks: lock sections spread evenly through each
/// task's parallel work (Bresenham over the fractional counts).
pub fn task_model(cal: &Calibration, period: usize) -> Vec<Seg> {
    let period = period.max(1);
    let holds: f64 = (0..3).map(|l| cal.acq_per_task[l] * cal.hold_ns[l]).sum();
    let work = (cal.task_ns - holds).max(0.0);
    let mut acc = [0.0f64; 3];
    let mut segs = Vec::new();
    for _ in 0..period {
        let mut sections = Vec::new();
        for (l, a) in acc.iter_mut().enumerate() {
            *a += cal.acq_per_task[l];
            while *a >= 1.0 {
                *a -= 1.0;
                sections.push(l);
            }
        }
        // Spread the rarer mmlist/pgd sections evenly among the zone ones.
        let mut order: Vec<usize> = sections.iter().copied().filter(|&l| l == ZONE).collect();
        let others: Vec<usize> = sections.iter().copied().filter(|&l| l != ZONE).collect();
        let zones = order.len();
        for (j, &o) in others.iter().enumerate().rev() {
            let at = (j + 1) * zones / (others.len() + 1);
            order.insert(at.min(order.len()), o);
        }
        let chunk = work / (order.len() + 1) as f64;
        segs.push(Seg::Work(chunk));
        for l in order {
            segs.push(Seg::Lock {
                lock: l,
                hold: cal.hold_ns[l],
            });
            segs.push(Seg::Work(chunk));
        }
        segs.push(Seg::TaskEnd);
    }
    segs
}

/// The graphics agent of `script` at `cpus` CPUs: 2 toggles per 1000
/// tasks, each converting two pages (one propagation each).
pub fn agent(cal: &Calibration, cpus: usize) -> Option<Agent> {
    let scheme = cal.scheme?;
    let mode = cal.mode?;
    if mode != PagingMode::TwoLevel {
        return None; // PAE: nothing propagated beyond swapper
    }
    let lock = if scheme == Scheme::SlabPgdList {
        PGD
    } else {
        MMLIST
    };
    Some(Agent {
        every: 250,
        lock,
        hold: cal.prop_per_pgd_ns * cal.walked_pgds_1cpu * cpus as f64,
    })
}

/// Projects `cal` to `cpus` CPUs, `tasks` tasks.
pub fn project(cal: &Calibration, kind: LockKind, cpus: usize, tasks: u64) -> VResult {
    let segs = task_model(cal, 20);
    let m = lock_model(kind, cal);
    // The zone lock is a spin::Mutex (test-and-set) whatever pgd_lock is.
    let models = [LockModel::Tas, m, m];
    simulate(&segs, models, cal.xfer_ns, agent(cal, cpus), cpus, tasks, 7)
}

mod calibrate;
pub use calibrate::{
    calibrate, host_speedup, measure_wake, measure_xfer, scheme_costs, SchemeCosts,
};

#[cfg(test)]
mod tests {
    use super::*;

    fn cal() -> Calibration {
        Calibration {
            mode: Some(PagingMode::TwoLevel),
            scheme: Some(Scheme::SlabPgdList),
            lock: Some(LockKind::Ticket),
            task_ns: 10_000.0,
            acq_per_task: [10.0, 4.0, 0.5],
            hold_ns: [100.0, 50.0, 200.0],
            xfer_ns: 50.0,
            wake_ns: 5_000.0,
            prop_per_pgd_ns: 5.0,
            walked_pgds_1cpu: 30.0,
            ..Calibration::default()
        }
    }

    #[test]
    fn one_cpu_is_the_task_time() {
        let r = project(&cal(), LockKind::Ticket, 1, 1000);
        assert_eq!(r.tasks, 1000);
        let per = r.makespan_ns / 1000.0;
        assert!((per - 10_000.0).abs() / 10_000.0 < 0.01, "{per}");
        assert_eq!(r.locks[ZONE].contended, 0);
    }

    #[test]
    fn serial_bottleneck_caps_throughput() {
        let mut c = cal();
        // 10 zone sections of 500 ns = half the task under one lock: at most 2x.
        c.hold_ns[ZONE] = 500.0;
        c.xfer_ns = 0.0;
        for kind in LockKind::ALL {
            let one = project(&c, kind, 1, 2000).tasks_per_s;
            let many = project(&c, kind, 16, 2000).tasks_per_s;
            assert!(many / one < 2.05, "{kind}: {}", many / one);
            assert!(many / one > 1.5, "{kind}: {}", many / one);
        }
        // Deterministic.
        assert_eq!(
            project(&c, LockKind::Tas, 8, 500),
            project(&c, LockKind::Tas, 8, 500)
        );
    }

    /// A parking mutex releases on unlock; a woken waiter competes again.
    /// Handing the lock to a parked waiter (the lock held idle through the
    /// wake-up) would collapse throughput to one hand-over per wake-up; the
    /// barging model keeps it at the lock's own ceiling.
    #[test]
    fn parked_mutex_waiters_do_not_convoy() {
        let mut c = cal();
        c.acq_per_task = [0.0, 40.0, 0.0];
        c.hold_ns = [0.0, 100.0, 0.0];
        c.wake_ns = 50_000.0;
        c.prop_per_pgd_ns = 0.0;
        let one = project(&c, LockKind::Mutex, 1, 2000).tasks_per_s;
        let many = project(&c, LockKind::Mutex, 16, 4000);
        // 40 x (100 + 50) ns of a 10 us task under one lock: at most ~1.67x.
        let ratio = many.tasks_per_s / one;
        assert!(ratio > 1.2 && ratio < 1.75, "{ratio}");
        assert!(many.locks[MMLIST].contended > 0);
        // The FIFO ticket lock reaches the same ceiling.
        let fifo = project(&c, LockKind::Ticket, 16, 4000).tasks_per_s / one;
        assert!((ratio - fifo).abs() < 0.25, "{ratio} vs {fifo}");
    }
}
