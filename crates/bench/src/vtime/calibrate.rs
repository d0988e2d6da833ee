//! Calibration of the virtual-time model: every cost it replays, measured
//! on this machine (cache-line transfer, wake-up latency, the two-thread
//! speed-up, per-scheme `pgd_alloc` and propagation costs, and a real
//! run's lock acquisitions and hold times).

use super::*;

/// Half the round trip of an atomic ping-pong between two threads: the
/// cost of moving a lock's cache line to the other core. Median of rounds.
pub fn measure_xfer() -> f64 {
    let flag = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let (f2, s2) = (flag.clone(), stop.clone());
    let peer = std::thread::spawn(move || {
        let mut want = 1;
        while !s2.load(Ordering::Relaxed) {
            if f2.load(Ordering::Acquire) == want {
                f2.store(want + 1, Ordering::Release);
                want += 2;
            } else {
                std::hint::spin_loop();
            }
        }
    });
    // A round during which the peer was descheduled (a shared host) is
    // dropped; the peer always answers eventually, so the protocol stays
    // in step. The whole measurement gives up after two seconds.
    let hard = Instant::now() + Duration::from_secs(2);
    let mut rounds = Vec::new();
    let mut v = 0u64;
    'outer: for _ in 0..40 {
        let t = Instant::now();
        let soft = t + Duration::from_millis(5);
        let mut ok = true;
        for _ in 0..200 {
            v += 1;
            flag.store(v, Ordering::Release);
            v += 1;
            while flag.load(Ordering::Acquire) != v {
                let now = Instant::now();
                if now > hard {
                    break 'outer;
                }
                if now > soft {
                    ok = false;
                }
                std::hint::spin_loop();
            }
        }
        if ok {
            rounds.push(t.elapsed().as_nanos() as f64 / 400.0);
        }
    }
    stop.store(true, Ordering::Relaxed);
    let _ = peer.join();
    if rounds.is_empty() {
        100.0
    } else {
        median(&mut rounds)
    }
}

/// How much faster two share-nothing threads finish a fixed amount of
/// spinning than one thread does the same work twice: the parallel
/// capacity the host actually offers a 2-thread run right now.
pub fn host_speedup() -> f64 {
    fn spin(n: u64) -> u64 {
        let mut rng = Rng::new(0x9e37_79b9_7f4a_7c15);
        let mut x = 0;
        for _ in 0..n {
            x ^= rng.next_u64();
        }
        x
    }
    let n = 3_000_000;
    let t = Instant::now();
    std::hint::black_box(spin(2 * n));
    let one = t.elapsed().as_secs_f64();
    let t = Instant::now();
    std::thread::scope(|s| {
        let a = s.spawn(|| std::hint::black_box(spin(n)));
        std::hint::black_box(spin(n));
        let _ = a.join();
    });
    let two = t.elapsed().as_secs_f64();
    if two > 0.0 {
        (one / two).clamp(0.1, 2.0)
    } else {
        1.0
    }
}

/// Wake-up latency of a parked `parking_lot::Mutex` waiter: unlock to the
/// waiter running. Median of rounds.
pub fn measure_wake() -> f64 {
    let m = Arc::new(parking_lot::Mutex::new(None::<Instant>));
    let mut v = Vec::new();
    for _ in 0..15 {
        let mut g = m.lock();
        let m2 = m.clone();
        let h = std::thread::spawn(move || {
            let g = m2.lock();
            g.map(|t| t.elapsed().as_nanos() as f64)
        });
        std::thread::sleep(Duration::from_micros(300));
        *g = Some(Instant::now());
        drop(g);
        if let Ok(Some(ns)) = h.join() {
            v.push(ns);
        }
        *m.lock() = None;
    }
    median(&mut v)
}

/// Per-scheme costs that do not depend on the lock variant.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct SchemeCosts {
    /// `pgd_alloc` + `pgd_free`, warm cache.
    pub alloc_hit_ns: f64,
    /// `pgd_alloc` growing the cache, per pgd.
    pub alloc_miss_ns: f64,
    /// Propagation per pgd.
    pub prop_per_pgd_ns: f64,
}

/// Measures [`SchemeCosts`] of `mode` × `scheme`.
pub fn scheme_costs(mode: PagingMode, scheme: Scheme) -> Result<SchemeCosts, MicroError> {
    let (hit, miss) = alloc_costs(mode, scheme)?;
    Ok(SchemeCosts {
        alloc_hit_ns: hit,
        alloc_miss_ns: miss,
        prop_per_pgd_ns: prop_per_pgd(mode, scheme)?,
    })
}

/// Calibrates `mode` × `scheme` × `lock` with `tasks` single-threaded
/// script tasks; `xfer_ns`, `wake_ns` and `costs` are measured once by the
/// caller.
pub fn calibrate(
    mode: PagingMode,
    scheme: Scheme,
    lock: LockKind,
    tasks: u64,
    (xfer_ns, wake_ns): (f64, f64),
    costs: SchemeCosts,
) -> Result<Calibration, MicroError> {
    let err = |what: &'static str| {
        move |e: &dyn std::fmt::Display| MicroError::Kernel {
            what,
            why: e.to_string(),
        }
    };
    let ram = 64u64 << 20;
    let pm = Arc::new(SimMemory::new(ram).map_err(|e| MicroError::Ram(ram, e.to_string()))?);
    let mut cfg = KernelConfig::new(mode, scheme);
    cfg.lock = lock;
    cfg.cpus = 1;
    cfg.timed_locks = true;
    let k = Kernel::new(pm.clone(), &cfg).map_err(|e| err("boot")(&e))?;
    let size = TaskSize::SMALL;
    // The tasks run as CPU 0, as the simulator's CPUs do: single frames go
    // through the CPU's page list, and `zone->lock` is taken only for its
    // refills and trims.
    let cpu0 = physmem::enter_cpu(0);
    let shell = k.exec_mm(0, size).map_err(|e| err("exec")(&e))?;
    let task = |k: &Kernel| -> Result<(), MicroError> {
        let child = k.fork_mm(0, &shell).map_err(|e| err("fork")(&e))?;
        let image = k.exec_mm(0, size).map_err(|e| err("exec")(&e))?;
        k.exit_mm(0, child).map_err(|e| err("exit")(&e))?;
        k.exit_mm(0, image).map_err(|e| err("exit")(&e))?;
        Ok(())
    };
    for _ in 0..50 {
        task(&k)?;
    }
    let s0 = k.stats();
    let z0 = pm.pcp_stats();
    // Fastest of five chunks: the undisturbed speed on a shared host.
    let chunk = tasks.div_ceil(5).max(1);
    let mut task_ns = f64::INFINITY;
    for _ in 0..5 {
        let t = Instant::now();
        for _ in 0..chunk {
            task(&k)?;
        }
        task_ns = task_ns.min(t.elapsed().as_nanos() as f64 / chunk as f64);
    }
    let tasks = chunk * 5;
    let s1 = k.stats();
    let z1 = pm.pcp_stats();
    let n = tasks.max(1) as f64;
    // stats() takes each lock once.
    let d = |a: u64, b: u64| b.saturating_sub(a).saturating_sub(1) as f64;
    let per = |a: &pgdcache::LockStats, b: &pgdcache::LockStats| {
        let acq = d(a.acquisitions, b.acquisitions);
        let hold = b.hold_ns.saturating_sub(a.hold_ns) as f64;
        (acq / n, if acq > 0.0 { hold / acq } else { 0.0 })
    };
    let (am, hm) = per(&s0.mmlist_lock, &s1.mmlist_lock);
    let (ap, hp) = per(&s0.pgd_lock, &s1.pgd_lock);
    let walked = if mode == PagingMode::TwoLevel && scheme == Scheme::SlabPgdList {
        s1.pgd_list_len as f64
    } else {
        s1.mmlist_len as f64 + 2.0 // shell + child + image at the conversion
    };
    let _ = k.exit_mm(0, shell);
    drop(cpu0);
    // Zone lock: acquisitions per task as counted, each moving a batch of
    // frames (a refill or a trim of the CPU's list); the hold per frame is
    // a zone alloc + free pair (this thread is no CPU now, so it goes to
    // the zone) minus the poisoning fill done outside the lock.
    let zone_acq = (z1.zone_locks - z0.zone_locks) as f64 / n;
    // Paired per round (pairs, then fills, nine rounds; the median of the
    // per-round differences): two separately taken medians of numbers this
    // close can differ by more than the lock's own work on a shared host.
    let zone_net = {
        use physmem::PhysMem;
        let scratch = pm
            .alloc_frame(Owner::UserData)
            .map_err(|e| err("alloc_frame")(&e))?;
        let mut v = Vec::new();
        for _ in 0..9 {
            let t = Instant::now();
            for _ in 0..1000 {
                let f = pm
                    .alloc_frame(Owner::UserData)
                    .map_err(|e| err("alloc_frame")(&e))?;
                pm.free_frame(f).map_err(|e| err("free_frame")(&e))?;
            }
            let pair = t.elapsed().as_nanos() as f64 / 1000.0;
            let t = Instant::now();
            for _ in 0..1000 {
                pm.fill(scratch.start(), physmem::PAGE_SIZE, 0x6b)
                    .map_err(|e| err("fill")(&e))?;
            }
            let fill = t.elapsed().as_nanos() as f64 / 1000.0;
            v.push(pair - fill);
        }
        pm.free_frame(scratch).map_err(|e| err("free_frame")(&e))?;
        median(&mut v)
    };
    let hz = (zone_net / 2.0).max(5.0) * f64::from(z1.batch.max(1));
    Ok(Calibration {
        mode: Some(mode),
        scheme: Some(scheme),
        lock: Some(lock),
        task_ns,
        acq_per_task: [zone_acq, am, ap],
        hold_ns: [hz, hm, hp],
        xfer_ns,
        wake_ns,
        prop_per_pgd_ns: costs.prop_per_pgd_ns,
        walked_pgds_1cpu: walked,
        alloc_hit_ns: costs.alloc_hit_ns,
        alloc_miss_ns: costs.alloc_miss_ns,
    })
}

/// `pgd_alloc` + `pgd_free` with a warm cache, and `pgd_alloc` that must
/// grow the cache (per pgd).
fn alloc_costs(mode: PagingMode, scheme: Scheme) -> Result<(f64, f64), MicroError> {
    let err = |e: pgdcache::KernelError| MicroError::Kernel {
        what: "pgd_alloc",
        why: e.to_string(),
    };
    let k = boot(mode, scheme, 64 << 20, 1)?;
    for _ in 0..100 {
        let p = k.pgd_alloc(0).map_err(err)?;
        k.pgd_free(0, p).map_err(err)?;
    }
    let t = Instant::now();
    for _ in 0..20_000 {
        let p = k.pgd_alloc(0).map_err(err)?;
        k.pgd_free(0, p).map_err(err)?;
    }
    let hit = t.elapsed().as_nanos() as f64 / 20_000.0;
    let k = boot(mode, scheme, 64 << 20, 1)?;
    let t = Instant::now();
    let held = (0..512)
        .map(|_| k.pgd_alloc(0).map_err(err))
        .collect::<Result<Vec<_>, _>>()?;
    let miss = t.elapsed().as_nanos() as f64 / 512.0;
    for p in held {
        k.pgd_free(0, p).map_err(err)?;
    }
    Ok((hit, miss))
}

/// Propagation cost per pgd (2-level, 1000 pgds joined): the kernel's own
/// `propagation_ns / propagated_entries`.
fn prop_per_pgd(mode: PagingMode, scheme: Scheme) -> Result<f64, MicroError> {
    if mode != PagingMode::TwoLevel || scheme == Scheme::SharedKernel {
        return Ok(0.0);
    }
    let c = crate::micro::CpaCycle::new(mode, scheme, 1000, 1000)?;
    for _ in 0..10 {
        c.cycle()?;
    }
    let s = c.kernel.stats();
    Ok(if s.propagated_entries > 0 {
        s.propagation_ns as f64 / s.propagated_entries as f64
    } else {
        0.0
    })
}
