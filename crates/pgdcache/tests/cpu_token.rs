//! The pgd system on the per-CPU token path ([`Kernel::claim_cpu`]): CPUs
//! as threads, each holding its CPU's slots of `pgd_cache`/`pmd_cache`,
//! fork, exec and exit through them while another thread converts a
//! direct-map page and, as a remote user, reads statistics, shrinks the
//! caches and runs the checker — the operations each CPU must hand its
//! slot over for. At the end, with every CPU quiescent, every pgd is
//! checked, live and cached, and every frame accounted for.

use pgdcache::mm::TaskSize;
use pgdcache::{CpuPgds, Kernel, KernelConfig, KernelError, OwnedPgd, Scheme};
use physmem::{PhysAddr, PhysMem, SimMemory, VirtAddr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use x86paging::{EntryFlags, PagingMode};

const CPUS: usize = 2;

fn run(mode: PagingMode, scheme: Scheme, tasks: usize) {
    let pm = Arc::new(SimMemory::new(64 << 20).unwrap());
    let mut cfg = KernelConfig::new(mode, scheme);
    cfg.cpus = CPUS;
    cfg.debug = true;
    let k = Kernel::new(pm, &cfg).unwrap();
    // Pages-as-pgds schemes have no cache, so no per-CPU slot to own.
    let has_cache = !k.slab_stats().is_empty();
    let stop = AtomicBool::new(false);
    let running = AtomicUsize::new(CPUS);
    let size = TaskSize {
        text: 2,
        data: 1,
        stack: 1,
    };
    std::thread::scope(|s| {
        for cpu in 0..CPUS {
            let (k, running) = (&k, &running);
            s.spawn(move || {
                /// Counts this CPU out even if it panics.
                struct Out<'a>(&'a AtomicUsize, bool);
                impl Drop for Out<'_> {
                    fn drop(&mut self) {
                        if !self.1 {
                            self.0.fetch_sub(1, Ordering::AcqRel);
                        }
                    }
                }
                let mut out = Out(running, false);
                let _pcp = physmem::enter_cpu(cpu);
                let mut me = k.claim_cpu(cpu).unwrap();
                // A second claim of a held CPU is refused.
                if has_cache {
                    assert!(matches!(
                        k.claim_cpu(cpu),
                        Err(KernelError::CpuClaim { .. })
                    ));
                }
                let mut live = Vec::new();
                for i in 0..tasks {
                    let mm = if i % 3 == 0 || live.is_empty() {
                        me.exec_mm(size).unwrap()
                    } else {
                        me.fork_mm(&live[i % live.len()]).unwrap()
                    };
                    live.push(mm);
                    if live.len() > 6 {
                        me.exit_mm(live.remove(0)).unwrap();
                    }
                    // PAE prepopulated/ctor paths through the token, too.
                    let pgd = me.pgd_alloc().unwrap();
                    me.pgd_free(pgd).unwrap();
                }
                for mm in live {
                    me.exit_mm(mm).unwrap();
                }
                running.fetch_sub(1, Ordering::AcqRel);
                out.1 = true;
                // Quiescent until the remote user is done with us.
                while running.load(Ordering::Acquire) != usize::MAX {
                    me.serve();
                    std::thread::yield_now();
                }
            });
        }
        let (k, stop, running) = (&k, &stop, &running);
        s.spawn(move || {
            /// Releases the CPUs even if an assertion below fails.
            struct Done<'a>(&'a AtomicUsize);
            impl Drop for Done<'_> {
                fn drop(&mut self) {
                    self.0.store(usize::MAX, Ordering::Release);
                }
            }
            let _done = Done(running);
            let _pcp = physmem::enter_cpu(CPUS);
            let va = VirtAddr::new(k.mode().page_offset() + (16 << 20));
            let def = k.page_kernel_at(va).unwrap();
            let mut rounds = 0;
            while running.load(Ordering::Acquire) != 0 || rounds < 4 {
                k.change_page_attr(va, 1, def | EntryFlags::PCD).unwrap();
                k.global_flush_tlb();
                // Remote users of every CPU's slots.
                let stats = k.slab_stats();
                assert!(stats.iter().all(|c| c.live_objs <= c.num_objs));
                k.shrink();
                // The checker's walk of the cache (no hand-off needed: it
                // reads the slabs' owned flags). Frame accounting needs a
                // quiescent system, so the full check runs at the end.
                let walked = k.cache_pgds();
                assert!(walked.iter().all(|(p, _)| p.0.as_u64() % 32 == 0));
                k.change_page_attr(va, 1, def).unwrap();
                k.global_flush_tlb();
                rounds += 1;
            }
            stop.store(true, Ordering::Release);
        });
    });
    assert_eq!(k.live_pgds().len(), 0);
    let r = k.verify().unwrap();
    assert!(r.is_clean(), "{mode} {scheme}: {:?}", r.violations);
    assert_eq!(r.leaked_frames, 0);
    let st = k.stats();
    assert_eq!(st.pgd_allocs, st.pgd_frees);
}

#[test]
fn every_correct_scheme_on_the_token_path() {
    for mode in PagingMode::ALL {
        for scheme in Scheme::ALL {
            if scheme.supports(mode).is_err() || !scheme.intended_correct() {
                continue;
            }
            if scheme == Scheme::Uncached {
                continue; // its alloc-to-join window is real (stress.rs)
            }
            run(mode, scheme, 120);
        }
    }
}

/// Allocated objects of the pgd and pmd caches (the checker's walk: no
/// hand-off, so it runs while this thread holds a CPU).
fn allocated(k: &Kernel) -> (usize, usize) {
    let pgds = k.cache_pgds().iter().filter(|(_, a)| *a).count();
    let pmds = k.cache_pmds().iter().filter(|(_, a)| *a).count();
    (pgds, pmds)
}

/// `pmd_cache`'s allocation attempts so far (a failed one counts a miss).
fn pmd_attempts(k: &Kernel) -> usize {
    k.slab_stats()
        .iter()
        .filter(|c| c.name == "pmd")
        .map(|c| c.alloc_hits + c.alloc_misses)
        .sum()
}

/// A pgd freed twice through a CPU's token is refused with an error, and
/// nothing else changes: on PAE the second free does not touch the pmds
/// its stale entries name (the pgd goes back before its pmds).
#[test]
fn token_double_free_is_refused() {
    for mode in PagingMode::ALL {
        for scheme in Scheme::ALL {
            let pm = Arc::new(SimMemory::new(32 << 20).unwrap());
            let Ok(k) = Kernel::new(pm, &KernelConfig::new(mode, scheme)) else {
                continue;
            };
            let mut cpu = k.claim_cpu(0).unwrap();
            // An `OwnedPgd` cannot be freed twice; its raw address can.
            let a = cpu.pgd_alloc().unwrap().into_raw();
            let b = cpu.pgd_alloc().unwrap();
            cpu.pgd_free_raw(a).unwrap();
            let before = allocated(&k);
            assert!(cpu.pgd_free_raw(a).is_err(), "{mode} {scheme}");
            assert_eq!(allocated(&k), before, "{mode} {scheme}");
            cpu.pgd_free(b).unwrap();
            drop(cpu);
            assert_clean(&k, &format!("{mode} {scheme}"));
        }
    }
}

/// PAE: a pgd freed twice after its pmds went on to another, live pgd.
/// Pgds freed on CPU 1 stay in its array while their pmds (a smaller
/// array) flow back to the slabs and out again to pgds CPU 0 allocates; a
/// second free of such a pgd — through the token or per call — is refused
/// and must not free the pmds its stale entries still name.
#[test]
fn pae_double_free_leaves_reused_pmds_alone() {
    let mut victims = 0;
    for scheme in Scheme::ALL {
        let mut cfg = KernelConfig::new(PagingMode::Pae, scheme);
        cfg.cpus = 2;
        let pm = Arc::new(SimMemory::new(64 << 20).unwrap());
        let Ok(k) = Kernel::new(pm, &cfg) else {
            continue;
        };
        if !scheme.preconstructed() || scheme.keeps_pmds() {
            continue;
        }
        let mut cpu = k.claim_cpu(0).unwrap();
        let first: Vec<_> = (0..64)
            .map(|_| cpu.pgd_alloc().unwrap().into_raw())
            .collect();
        for &p in &first {
            k.pgd_free(1, p).unwrap();
        }
        let second: Vec<_> = (0..64).map(|_| cpu.pgd_alloc().unwrap()).collect();
        let pgds = k.cache_pgds();
        let pmds = k.cache_pmds();
        let is_free = |p| pgds.iter().any(|&(q, a)| q == p && !a);
        let held = |pa| pmds.iter().any(|&(q, a)| q == pa && a);
        let reused = |p| {
            (0..3).all(|i| {
                let e = k.pgd_entry(p, i).unwrap();
                e.is_present() && held(e.table_addr(PagingMode::Pae))
            })
        };
        for &victim in first.iter().filter(|&&p| is_free(p) && reused(p)).take(4) {
            victims += 1;
            let before = allocated(&k);
            assert!(cpu.pgd_free_raw(victim).is_err(), "{scheme}");
            assert_eq!(allocated(&k), before, "{scheme}: token path");
            assert!(k.pgd_free(1, victim).is_err(), "{scheme}");
            assert_eq!(allocated(&k), before, "{scheme}: per-call path");
        }
        for p in second {
            cpu.pgd_free(p).unwrap();
        }
        drop(cpu);
        assert_clean(&k, &format!("{scheme}"));
    }
    assert!(victims > 0, "no freed pgd had its pmds reused");
}

/// An `OwnedPgd` off a CPU's token carries the object cache's handles on
/// every preconstructed scheme (none on `uncached`/`shared-kernel`, whose
/// free is the checked one); either way it comes back whole, through the
/// token or, given up with `into_raw`, per call.
#[test]
fn owned_pgds_round_trip_on_every_path() {
    for mode in PagingMode::ALL {
        for scheme in Scheme::ALL {
            let pm = Arc::new(SimMemory::new(32 << 20).unwrap());
            let Ok(k) = Kernel::new(pm, &KernelConfig::new(mode, scheme)) else {
                continue;
            };
            let what = format!("{mode} {scheme}");
            let mut cpu = k.claim_cpu(0).unwrap();
            let held: Vec<_> = (0..40).map(|_| cpu.pgd_alloc().unwrap()).collect();
            for p in &held {
                assert_eq!(p.has_handles(), scheme.preconstructed(), "{what}");
            }
            let before = allocated(&k);
            let mut raw = Vec::new();
            for (i, p) in held.into_iter().enumerate() {
                match i % 2 {
                    0 => cpu.pgd_free(p).unwrap(),
                    _ => raw.push(p.into_raw()),
                }
            }
            if scheme.preconstructed() {
                assert_eq!(allocated(&k).0, before.0 - 20, "{what}");
            }
            drop(cpu);
            for p in raw {
                k.pgd_free(1 % k.cpus(), p).unwrap();
            }
            assert_clean(&k, &what);
            assert_eq!(allocated(&k).0, 0, "{what}");
        }
    }
}

/// An `OwnedPgd` of another kernel is refused before anything is touched:
/// the receiving kernel's caches and the pgd's own kernel are unchanged
/// (the refused pgd stays allocated in its kernel, as a leaked `Box`).
#[test]
fn an_owned_pgd_of_another_kernel_is_refused() {
    for mode in PagingMode::ALL {
        for scheme in Scheme::ALL.into_iter().filter(|s| s.preconstructed()) {
            let boot = || {
                let pm = Arc::new(SimMemory::new(32 << 20).unwrap());
                Kernel::new(pm, &KernelConfig::new(mode, scheme))
            };
            let (Ok(a), Ok(b)) = (boot(), boot()) else {
                continue;
            };
            let what = format!("{mode} {scheme}");
            let mut ca = a.claim_cpu(0).unwrap();
            let mut cb = b.claim_cpu(0).unwrap();
            let keep = cb.pgd_alloc().unwrap();
            let foreign = cb.pgd_alloc().unwrap();
            let pa = foreign.pgd();
            let (before_a, before_b) = (allocated(&a), allocated(&b));
            assert!(ca.pgd_free(foreign).is_err(), "{what}");
            assert_eq!(allocated(&a), before_a, "{what}");
            assert_eq!(allocated(&b), before_b, "{what}");
            // Its own kernel still takes it back by address.
            cb.pgd_free_raw(pa).unwrap();
            cb.pgd_free(keep).unwrap();
            drop((ca, cb));
            for k in [&a, &b] {
                assert_clean(k, &what);
            }
        }
    }
}

/// The checker finds `k` clean: no violation, no leaked frame.
fn assert_clean(k: &Kernel, what: &str) {
    let r = k.verify().unwrap();
    assert!(r.is_clean(), "{what}: {:?}", r.violations);
    assert_eq!(r.leaked_frames, 0, "{what}");
}

/// Whether `mode` and `scheme` make the `Whole` shape: pgds that are whole
/// page-sized objects of `pgd_cache`.
fn whole(mode: PagingMode, scheme: Scheme) -> bool {
    mode != PagingMode::Pae && scheme.preconstructed()
}

/// Whether `mode` and `scheme` make the `Pae` shape: PAE pgds with
/// `pmd_cache` (the seed's protocol, `slab-prepopulated`).
fn pae(mode: PagingMode, scheme: Scheme) -> bool {
    mode == PagingMode::Pae && scheme.preconstructed()
}

/// `claim_whole_cpu` exists exactly where pgds are whole pages of
/// `pgd_cache`, `claim_pae_cpu` exactly where they are PAE pgds with
/// `pmd_cache`; each refuses every other kernel with `WrongShape` and is
/// as exclusive as `claim_cpu` (they claim the same slots).
#[test]
fn typed_cpus_exist_exactly_for_their_shapes() {
    for mode in PagingMode::ALL {
        for scheme in Scheme::ALL {
            let Ok(k) = boot(mode, scheme) else {
                continue;
            };
            let what = format!("{mode} {scheme}");
            match k.claim_whole_cpu(0) {
                Ok(cpu) => {
                    assert!(whole(mode, scheme), "{what}");
                    assert_eq!(cpu.cpu(), 0);
                    assert!(
                        matches!(k.claim_cpu(0), Err(KernelError::CpuClaim { cpu: 0, .. })),
                        "{what}"
                    );
                    assert!(k.claim_whole_cpu(0).is_err(), "{what}");
                    let other = k.claim_whole_cpu(1).unwrap();
                    drop((cpu, other));
                    let _again = k.claim_cpu(0).unwrap();
                }
                Err(e) => {
                    assert!(!whole(mode, scheme), "{what}: {e}");
                    assert!(
                        matches!(e, KernelError::WrongShape { scheme: s, mode: m, .. } if s == scheme && m == mode),
                        "{what}: {e:?}"
                    );
                }
            };
            // The PAE handle, likewise, for PAE with `pmd_cache`.
            match k.claim_pae_cpu(0) {
                Ok(cpu) => {
                    assert!(pae(mode, scheme), "{what}");
                    assert!(
                        k.claim_cpu(0).is_err() && k.claim_pae_cpu(0).is_err(),
                        "{what}"
                    );
                    drop(cpu);
                    let _again = k.claim_cpu(0).unwrap();
                }
                Err(e) => {
                    assert!(!pae(mode, scheme), "{what}: {e}");
                    assert!(matches!(e, KernelError::WrongShape { .. }), "{what}: {e:?}");
                }
            };
        }
    }
}

/// Through the CPU `claim` gives, `k`'s pgds come back whole every way
/// they can be given: as an `OwnedPgd`, as a raw address through the same
/// CPU, per call after the claim is gone. What is not its own is refused
/// before anything is touched: a double free, `swapper_pg_dir`, the pgds
/// of each kernel in `foreign` (each checked clean afterwards). `held`
/// checks the 40 pgds while they are out. Counters, the checker and the
/// frame accounting agree at the end.
fn round_trips_and_refuses<C: CpuPgds>(
    k: &Kernel,
    claim: impl Fn() -> C,
    foreign: &[&Kernel],
    held_check: impl Fn(&[OwnedPgd]),
    what: &str,
) {
    let mut cpu = claim();
    let mut held: Vec<_> = (0..40).map(|_| cpu.pgd_alloc().unwrap()).collect();
    assert!(held.iter().all(|p| p.has_handles()), "{what}");
    held_check(&held);
    for p in held.drain(..20) {
        cpu.pgd_free(p).unwrap();
    }
    let raw: Vec<_> = held.drain(..10).map(|p| p.into_raw()).collect();
    for &p in &raw {
        cpu.pgd_free_raw(p).unwrap();
    }
    let before = allocated(k);
    assert!(cpu.pgd_free_raw(raw[0]).is_err(), "{what}: double free");
    assert!(cpu.pgd_free_raw(k.swapper()).is_err(), "{what}: swapper");
    for theirs in foreign {
        let mut their_cpu = theirs.claim_cpu(0).unwrap();
        let p = their_cpu.pgd_alloc().unwrap();
        let pa = p.pgd();
        let theirs_before = allocated(theirs);
        assert!(cpu.pgd_free(p).is_err(), "{what}: another kernel's pgd");
        assert_eq!(allocated(theirs), theirs_before, "{what}");
        their_cpu.pgd_free_raw(pa).unwrap();
        drop(their_cpu);
        assert_clean(theirs, what);
        assert_eq!(allocated(theirs).0, 0, "{what}");
    }
    assert_eq!(allocated(k), before, "{what}");
    // The rest per call, once the CPU is given up.
    drop(cpu);
    for p in held {
        k.pgd_free(0, p.into_raw()).unwrap();
    }
    let st = k.stats();
    assert_eq!((st.pgd_allocs, st.pgd_frees), (40, 40), "{what}");
    assert_clean(k, what);
    assert_eq!(allocated(k).0, 0, "{what}");
}

/// A kernel of `mode` and `scheme` on 32 MiB.
fn boot(mode: PagingMode, scheme: Scheme) -> Result<Kernel, KernelError> {
    let pm = Arc::new(SimMemory::new(32 << 20).unwrap());
    Kernel::new(pm, &KernelConfig::new(mode, scheme))
}

/// A `WholePgdCpu` round-trips its pgds and refuses another kernel's of
/// either shape ([`round_trips_and_refuses`]).
#[test]
fn a_whole_pgd_cpu_round_trips_and_refuses_what_is_not_its_own() {
    let pae = boot(PagingMode::Pae, Scheme::SlabPgdList).unwrap();
    for mode in PagingMode::ALL {
        for scheme in Scheme::ALL.into_iter().filter(|&s| whole(mode, s)) {
            let (Ok(k), Ok(other)) = (boot(mode, scheme), boot(mode, scheme)) else {
                continue;
            };
            let what = format!("{mode} {scheme}");
            let held = |_: &[OwnedPgd]| assert_eq!(allocated(&k).0, 40, "{what}");
            let claim = || k.claim_whole_cpu(0).unwrap();
            round_trips_and_refuses(&k, claim, &[&other, &pae], held, &what);
        }
    }
}

/// A `PaePgdCpu` (the seed's protocol and `slab-prepopulated`) round-trips
/// its pgds with their pmds and refuses another kernel's of either shape
/// ([`round_trips_and_refuses`]).
#[test]
fn a_pae_pgd_cpu_round_trips_and_refuses_what_is_not_its_own() {
    let two_level = boot(PagingMode::TwoLevel, Scheme::SlabPgdList).unwrap();
    let mode = PagingMode::Pae;
    for scheme in Scheme::ALL.into_iter().filter(|&s| pae(mode, s)) {
        let (Ok(k), Ok(other)) = (boot(mode, scheme), boot(mode, scheme)) else {
            continue;
        };
        let what = format!("{mode} {scheme}");
        // Every pgd has its three user pmds, present-only, in pmd_cache.
        let held = |held: &[OwnedPgd]| {
            for p in held {
                for i in 0..3 {
                    let at = PhysAddr::new(p.pgd().0.as_u64() + 8 * i);
                    let e = k.pm().load_u64(at).unwrap();
                    assert_eq!(e & 0xfff, 1, "{what}: pgd[{i}] = {e:#x}");
                }
            }
            assert_eq!(allocated(&k), (40, 120), "{what}");
        };
        let claim = || k.claim_pae_cpu(0).unwrap();
        round_trips_and_refuses(&k, claim, &[&other, &two_level], held, &what);
        // `slab-prepopulated` keeps the pmds with the cached pgds.
        let pmds = allocated(&k).1;
        assert_eq!(pmds == 0, !scheme.keeps_pmds(), "{what}: {pmds} pmds");
    }
}

/// `pgd_alloc` through the CPU `claim` gives when the page allocator fails
/// at the Nth allocation, from a spread of starting states (`held` pgds
/// out, so the pgd cache, or on PAE the pmd cache at its 1st, 2nd or 3rd
/// pmd, needs a new slab): an out-of-memory error, every object taken so
/// far given back, nothing leaked. Returns, for each failed allocation, how
/// many pmds it tried to take (`pmd_cache` allocation attempts).
fn sweep_out_of_memory<C: CpuPgds>(
    k: &Kernel,
    pm: &SimMemory,
    claim: impl Fn() -> C,
    what: &str,
) -> Vec<usize> {
    let mut pmds_tried = Vec::new();
    for held in 0..10 {
        for n in 1.. {
            let what = format!("{what} held {held} fail #{n}");
            let mut cpu = claim();
            let out: Vec<_> = (0..held).map(|_| cpu.pgd_alloc().unwrap()).collect();
            // `slab_stats` is served by the slots' owner: read it with the
            // CPU given back.
            drop(cpu);
            let attempts = pmd_attempts(k);
            let mut cpu = claim();
            let before = allocated(k);
            pm.faults().fail_nth(n);
            let r = cpu.pgd_alloc();
            pm.faults().clear();
            let done = match r {
                Ok(p) => {
                    cpu.pgd_free(p).unwrap();
                    true
                }
                Err(e) => {
                    assert!(e.is_out_of_memory(), "{what}: {e}");
                    assert_eq!(allocated(k), before, "{what}: {e}");
                    drop(cpu);
                    pmds_tried.push(pmd_attempts(k) - attempts);
                    cpu = claim();
                    false
                }
            };
            for p in out {
                cpu.pgd_free(p).unwrap();
            }
            drop(cpu);
            assert_clean(k, &what);
            if done {
                break;
            }
            assert!(n < 1000, "{what}: never succeeded");
        }
    }
    pmds_tried
}

/// `pgd_alloc` through a CPU's token (`PgdCpu`, and the typed CPU of the
/// kernel's shape) when the page allocator fails: from a
/// spread of starting states (`held` pgds out, so the caches need a new
/// slab at different points — on PAE at the 1st, 2nd or 3rd pmd), fail the
/// Nth page allocation. The call returns an error and gives back every
/// object it took (PAE: the pmds taken before the one that failed, and the
/// pgd); the checker finds nothing wrong and no frame leaked
/// ([`sweep_out_of_memory`]).
#[test]
fn every_cpu_fails_cleanly_out_of_memory() {
    let mut third_pmd_failed = 0;
    for mode in PagingMode::ALL {
        for scheme in Scheme::ALL {
            // Each sweep on a kernel of its own, whose caches start empty.
            let fresh = || {
                let pm = Arc::new(SimMemory::new(32 << 20).unwrap());
                Kernel::new(pm.clone(), &KernelConfig::new(mode, scheme)).map(|k| (pm, k))
            };
            let Ok((pm, k)) = fresh() else {
                continue;
            };
            let what = format!("{mode} {scheme}");
            let pmds_tried = sweep_out_of_memory(&k, &pm, || k.claim_cpu(0).unwrap(), &what);
            third_pmd_failed += pmds_tried.iter().filter(|&&n| n == 3).count();
            let (pm, k) = fresh().unwrap();
            let failed = if whole(mode, scheme) {
                sweep_out_of_memory(&k, &pm, || k.claim_whole_cpu(0).unwrap(), &what)
            } else if pae(mode, scheme) {
                let failed = sweep_out_of_memory(&k, &pm, || k.claim_pae_cpu(0).unwrap(), &what);
                // Failures at the 1st, 2nd and 3rd pmd were all undone.
                for n in 1..=3 {
                    assert!(
                        failed.contains(&n),
                        "{what}: no failure at pmd {n}: {failed:?}"
                    );
                }
                failed
            } else {
                continue;
            };
            assert!(!failed.is_empty(), "{what}: no allocation needed a page");
        }
    }
    assert!(
        third_pmd_failed > 0,
        "no PgdCpu sweep failed at the third pmd"
    );
}
