//! Shared workloads for the criterion bench and `examples/ratios.rs`: the
//! same code is measured by both.
#![allow(dead_code)]

use std::alloc::Layout;
use std::hint::black_box;
use std::ptr::NonNull;
use std::time::{Duration, Instant};

use objcache::{CacheBuilder, KmemCache, SlabFlags, SystemPageSource};
use slabmalloc::{Allocator, LargeObjectPage, ObjectPage, ZoneAllocator};

/// One thread's view of an allocator under test.
///
/// Every implementation's `alloc`/`free` is `#[inline(always)]`, so that
/// whether an adapter (with its panic-on-error path) gets inlined into the
/// measured loop is not left to the inliner's mood: it once differed between
/// the `pairloop` and `ratios` binaries for the same adapter.
pub trait Alloc {
    fn alloc(&mut self) -> NonNull<u8>;
    fn free(&mut self, p: NonNull<u8>);
}

/// objcache, through an explicit CPU slot.
pub struct ObjCache<'a> {
    pub cache: &'a KmemCache<SystemPageSource>,
    pub cpu: usize,
}

impl Alloc for ObjCache<'_> {
    #[inline(always)]
    fn alloc(&mut self) -> NonNull<u8> {
        match self.cache.alloc_on(self.cpu) {
            Ok(p) => p,
            Err(e) => panic!("objcache alloc: {e}"),
        }
    }
    #[inline(always)]
    fn free(&mut self, p: NonNull<u8>) {
        if let Err(e) = self.cache.free_on(self.cpu, p) {
            panic!("objcache free: {e}");
        }
    }
}

/// objcache through a pinned CPU slot (`lock_cpu`: no per-call lock).
pub struct Pinned<'a>(pub objcache::CpuCache<'a, SystemPageSource>);

impl<'a> Pinned<'a> {
    pub fn new(cache: &'a KmemCache<SystemPageSource>, cpu: usize) -> Self {
        match cache.lock_cpu(cpu) {
            Ok(h) => Self(h),
            Err(e) => panic!("lock_cpu: {e}"),
        }
    }
}

impl Alloc for Pinned<'_> {
    #[inline(always)]
    fn alloc(&mut self) -> NonNull<u8> {
        match self.0.alloc() {
            Ok(p) => p,
            Err(e) => panic!("objcache alloc: {e}"),
        }
    }
    #[inline(always)]
    fn free(&mut self, p: NonNull<u8>) {
        if let Err(e) = self.0.free(p) {
            panic!("objcache free: {e}");
        }
    }
}

/// objcache through a claimed CPU (`claim_cpu`: no lock, no atomic
/// read-modify-write per call).
pub struct Token<'a>(pub objcache::CpuToken<'a, SystemPageSource>);

impl<'a> Token<'a> {
    pub fn new(cache: &'a KmemCache<SystemPageSource>, cpu: usize) -> Self {
        match cache.claim_cpu(cpu) {
            Ok(t) => Self(t),
            Err(e) => panic!("claim_cpu: {e}"),
        }
    }
}

impl Alloc for Token<'_> {
    #[inline(always)]
    fn alloc(&mut self) -> NonNull<u8> {
        match self.0.alloc() {
            Ok(p) => p,
            Err(e) => panic!("objcache alloc: {e}"),
        }
    }
    #[inline(always)]
    fn free(&mut self, p: NonNull<u8>) {
        if let Err(e) = self.0.free(p) {
            panic!("objcache free: {e}");
        }
    }
}

/// A plain objcache for `size`-byte objects (no ctor), `ncpus` slots.
pub fn objcache(size: usize, ncpus: usize) -> KmemCache<SystemPageSource> {
    match CacheBuilder::new("bench", size)
        .flags(SlabFlags::HWCACHE_ALIGN)
        .cpus(ncpus)
        .build(SystemPageSource)
    {
        Ok(c) => c,
        Err(e) => panic!("create: {e}"),
    }
}

/// The system allocator (`std::alloc`, glibc malloc here).
pub struct System(pub Layout);

impl Alloc for System {
    #[inline(always)]
    fn alloc(&mut self) -> NonNull<u8> {
        // SAFETY: non-zero-sized layout.
        match NonNull::new(unsafe { std::alloc::alloc(self.0) }) {
            Some(p) => p,
            None => std::alloc::handle_alloc_error(self.0),
        }
    }
    #[inline(always)]
    fn free(&mut self, p: NonNull<u8>) {
        // SAFETY: `p` came from `alloc` with the same layout.
        unsafe { std::alloc::dealloc(p.as_ptr(), self.0) }
    }
}

/// slabmalloc's `ZoneAllocator`, one per thread (it is not thread-safe),
/// refilled from `std::alloc` pages (4 KiB `ObjectPage`s up to 256 bytes,
/// 2 MiB `LargeObjectPage`s above).
pub struct Slabmalloc {
    zone: ZoneAllocator<'static>,
    layout: Layout,
}

impl Slabmalloc {
    pub fn new(size: usize) -> Self {
        let align = if size >= 64 {
            64
        } else {
            size.next_power_of_two()
        };
        Self {
            zone: ZoneAllocator::new(),
            layout: Layout::from_size_align(size, align).unwrap_or_else(|e| panic!("{e}")),
        }
    }

    fn page(size: usize) -> *mut u8 {
        let l = Layout::from_size_align(size, size).unwrap_or_else(|e| panic!("{e}"));
        // SAFETY: non-zero-sized layout; zeroed as slabmalloc page metadata expects.
        let p = unsafe { std::alloc::alloc_zeroed(l) };
        assert!(!p.is_null());
        p
    }
}

impl Alloc for Slabmalloc {
    #[inline(always)]
    fn alloc(&mut self) -> NonNull<u8> {
        if let Ok(p) = self.zone.allocate(self.layout) {
            return p;
        }
        if self.layout.size() <= ZoneAllocator::MAX_BASE_ALLOC_SIZE {
            // SAFETY: a fresh zeroed, 4 KiB-aligned 4 KiB page, leaked ('static).
            let page: &'static mut ObjectPage<'static> =
                unsafe { &mut *(Self::page(4096) as *mut ObjectPage<'static>) };
            // SAFETY: the page is unused and lives forever.
            unsafe { self.zone.refill(self.layout, page) }.unwrap_or_else(|e| panic!("{e:?}"));
        } else {
            // SAFETY: as above with a 2 MiB page.
            let page: &'static mut LargeObjectPage<'static> =
                unsafe { &mut *(Self::page(2 << 20) as *mut LargeObjectPage<'static>) };
            // SAFETY: the page is unused and lives forever.
            unsafe { self.zone.refill_large(self.layout, page) }
                .unwrap_or_else(|e| panic!("{e:?}"));
        }
        self.zone
            .allocate(self.layout)
            .unwrap_or_else(|e| panic!("{e:?}"))
    }
    #[inline(always)]
    fn free(&mut self, p: NonNull<u8>) {
        self.zone
            .deallocate(p, self.layout)
            .unwrap_or_else(|e| panic!("{e:?}"));
    }
}

/// `n` alloc+free pairs, each object touched once.
#[inline(never)]
pub fn pairs<A: Alloc>(a: &mut A, n: u64) {
    for _ in 0..n {
        let p = a.alloc();
        // SAFETY: we own the object; reading its first byte is a touch.
        black_box(unsafe { p.as_ptr().read_volatile() });
        a.free(black_box(p));
    }
}

/// Alloc `batch` objects then free them, `n / batch` times (n pairs).
#[inline(never)]
pub fn batches<A: Alloc>(a: &mut A, n: u64, batch: usize) {
    let mut held = Vec::with_capacity(batch);
    for _ in 0..(n / batch as u64).max(1) {
        for _ in 0..batch {
            held.push(a.alloc());
        }
        for p in held.drain(..).rev() {
            a.free(p);
        }
    }
}

/// Runs `f(thread_index)` on two threads at once; returns the wall time.
pub fn two_threads(f: impl Fn(usize) + Sync) -> Duration {
    threads(2, f)
}

/// Runs `f(thread_index)` on `k` freshly spawned threads at once (started
/// together behind a barrier); returns the wall time.  One-thread
/// measurements use this too (`k = 1`), so that 1T and 2T figures come
/// from identically set-up threads rather than main thread vs spawned ones.
pub fn threads(k: usize, f: impl Fn(usize) + Sync) -> Duration {
    let barrier = std::sync::Barrier::new(k + 1);
    std::thread::scope(|s| {
        for t in 0..k {
            let (f, barrier) = (&f, &barrier);
            s.spawn(move || {
                barrier.wait();
                f(t);
                barrier.wait();
            });
        }
        barrier.wait();
        let start = Instant::now();
        barrier.wait();
        start.elapsed()
    })
}

pub const PGD: usize = 4096;
pub const KERNEL_OFF: usize = 3072;

/// "swapper_pg_dir": the kernel half that every pgd copies.
pub fn kernel_pattern() -> Vec<u8> {
    (0..PGD - KERNEL_OFF).map(|i| (i * 7 + 1) as u8).collect()
}

/// pgd cache whose ctor zeroes the user 3 KiB and copies the kernel 1 KiB.
pub fn pgd_cache(pattern: &'static [u8]) -> KmemCache<SystemPageSource> {
    match CacheBuilder::new("pgd", PGD)
        .flags(SlabFlags::HWCACHE_ALIGN)
        .ctor(move |p| {
            // SAFETY: the ctor owns the 4 KiB object at `p`.
            unsafe {
                std::ptr::write_bytes(p.as_ptr(), 0, KERNEL_OFF);
                std::ptr::copy_nonoverlapping(
                    pattern.as_ptr(),
                    p.as_ptr().add(KERNEL_OFF),
                    PGD - KERNEL_OFF,
                );
            }
        })
        .build(SystemPageSource)
    {
        Ok(c) => c,
        Err(e) => panic!("create: {e}"),
    }
}

/// "construct on every alloc": page-aligned system alloc + memset + memcpy.
pub struct ConstructEveryTime {
    pub pattern: &'static [u8],
}

impl Alloc for ConstructEveryTime {
    #[inline(always)]
    fn alloc(&mut self) -> NonNull<u8> {
        let p = System(Layout::from_size_align(PGD, PGD).unwrap_or_else(|e| panic!("{e}"))).alloc();
        // SAFETY: fresh 4 KiB allocation.
        unsafe {
            std::ptr::write_bytes(p.as_ptr(), 0, KERNEL_OFF);
            std::ptr::copy_nonoverlapping(
                self.pattern.as_ptr(),
                p.as_ptr().add(KERNEL_OFF),
                PGD - KERNEL_OFF,
            );
        }
        p
    }
    #[inline(always)]
    fn free(&mut self, p: NonNull<u8>) {
        System(Layout::from_size_align(PGD, PGD).unwrap_or_else(|e| panic!("{e}"))).free(p)
    }
}

// ---- The same-run ratio tables (examples/ratios.rs, and after the criterion run) ----

/// One measurement: aggregate ns per pair (wall / total pairs) of `k`
/// threads (k = 1 or 2), each running `n` pairs on its own allocator
/// handle `make(thread_index)`.
fn on<A: Alloc>(k: usize, make: &(impl Fn(usize) -> A + Sync), n: u64, batch: usize) -> f64 {
    let d = threads(k, |t| {
        let mut a = make(t);
        if batch == 1 {
            pairs(&mut a, n)
        } else {
            batches(&mut a, n, batch)
        }
    });
    d.as_nanos() as f64 / (k as u64 * n) as f64
}

/// Samples of one measurement, in round order (round `i` of every
/// measurement ran back to back, so pairing by round cancels slow drifts in
/// background load). The statistics are the workspace's one module,
/// `benchstats`.
#[derive(Clone)]
struct Samples(Vec<f64>);

impl Samples {
    /// Best (minimum) and median ns/pair.
    fn best_median(&self) -> (f64, f64) {
        let s = benchstats::Summary::of(&self.0);
        (s.min, s.median)
    }
    /// Paired ratios `self_i / other_i` per round, with their quartiles.
    fn ratio_to(&self, other: &Samples) -> benchstats::Ratio {
        benchstats::Ratio::paired(&self.0, &other.0)
    }
}

/// Runs the measurements round-robin `runs` times (so background load hits
/// all contenders alike) after one warm-up round; returns each one's samples.
fn interleaved(runs: usize, mut ms: Vec<Box<dyn FnMut() -> f64 + '_>>) -> Vec<Samples> {
    for m in ms.iter_mut() {
        m();
    }
    let mut ok: Vec<_> = ms
        .iter_mut()
        .map(|m| move || -> Result<f64, std::convert::Infallible> { Ok(m()) })
        .collect();
    let mut refs: Vec<&mut dyn FnMut() -> Result<f64, std::convert::Infallible>> = ok
        .iter_mut()
        .map(|f| f as &mut dyn FnMut() -> Result<f64, std::convert::Infallible>)
        .collect();
    let Ok(samples) = benchstats::interleaved(runs, &mut refs);
    samples.into_iter().map(Samples).collect()
}

/// Measures every workload in `runs` interleaved rounds of `n` pairs per
/// thread and prints the time, speed-up, scaling, churn and pgd tables
/// (`examples/ratios.rs`; the criterion bench prints them after its own run).
pub fn print_ratio_tables(n: u64, runs: usize) {
    let runs = runs.max(1);
    println!("objcache ratio table: best (median) of {runs} interleaved runs x {n} alloc+free pairs per thread");
    let load = |when: &str| {
        if let Ok(l) = std::fs::read_to_string("/proc/loadavg") {
            println!("load average {when}: {}", l.trim());
        }
    };
    load("before");
    println!(
        "cpus: {:?}",
        std::thread::available_parallelism().map(|n| n.get())
    );
    println!();
    let mut times = Vec::new();
    let mut churn = Vec::new();
    // The last row repeats 4 KiB batch 32 with the per-CPU arrays tuned
    // (`tune(64, 32)`, a /proc/slabinfo write) so that the 32-object working
    // set fits: with Linux's default limit of 24 it overflows every batch.
    for (size, batch, tuned) in [
        (32usize, 1usize, None),
        (32, 32, None),
        (4096, 1, None),
        (4096, 32, None),
        (4096, 32, Some((64, 32))),
    ] {
        // malloc's natural alignment (16): the fastest system-allocator path.
        let natural = Layout::from_size_align(size, 16).unwrap_or_else(|e| panic!("{e}"));
        {
            let cache = objcache(size, 2);
            let pin_cache = objcache(size, 2);
            if let Some((limit, bc)) = tuned {
                for c in [&cache, &pin_cache] {
                    c.tune(limit, bc).unwrap_or_else(|e| panic!("{e}"));
                }
            }
            let label = |threads: usize| {
                format!(
                    "{size} B, {threads} thread{}, batch {batch}{}",
                    if threads == 1 { "" } else { "s" },
                    match tuned {
                        Some((l, b)) => format!(", tune({l}, {b})"),
                        None => String::new(),
                    }
                )
            };
            // The alignment the object cache guarantees for these objects
            // (HWCACHE_ALIGN: 32 for 32 B, 64 for 4 KiB).
            let aligned =
                Layout::from_size_align(size, cache.align()).unwrap_or_else(|e| panic!("{e}"));
            let mk_oc = |t| ObjCache {
                cache: &cache,
                cpu: t,
            };
            let mk_pin = |t| Pinned::new(&pin_cache, t);
            let mk_sm = |_| Slabmalloc::new(size);
            let mk_sy = |_| System(natural);
            let mk_sya = |_| System(aligned);
            let r = interleaved(
                runs,
                vec![
                    Box::new(|| on(1, &mk_oc, n, batch)),
                    Box::new(|| on(1, &mk_pin, n, batch)),
                    Box::new(|| on(1, &mk_sm, n, batch)),
                    Box::new(|| on(1, &mk_sy, n, batch)),
                    Box::new(|| on(1, &mk_sya, n, batch)),
                    Box::new(|| on(2, &mk_oc, n, batch)),
                    Box::new(|| on(2, &mk_pin, n, batch)),
                    Box::new(|| on(2, &mk_sm, n, batch)),
                    Box::new(|| on(2, &mk_sy, n, batch)),
                    Box::new(|| on(2, &mk_sya, n, batch)),
                ],
            );
            let st = cache.stats();
            churn.push((
                label(0).replace(", 0 threads", ""),
                st.grown,
                st.reaped,
                st.alloc_misses,
                st.free_misses,
                (st.limit, st.batchcount, st.resized),
            ));
            times.push((
                [label(1), label(2), label(0).replace(", 0 threads", "")],
                cache.align(),
                r,
            ));
        }
    }
    let f = |x: &Samples| {
        let (b, m) = x.best_median();
        format!("{b:.1} ({m:.1})")
    };
    // Paired per-round ratio a/b: median [inter-quartile range].
    let q = |a: &Samples, b: &Samples| format!("{:.2}", a.ratio_to(b));
    println!("ns per alloc+free pair, best (median); 2 threads: wall time / total pairs");
    println!();
    println!("| workload | objcache per-call (`alloc_on`/`free_on`) | objcache pinned (`lock_cpu`) | slabmalloc | system, natural 16 B align | system, cache's align |");
    println!("|---|---|---|---|---|---|");
    for (w, align, r) in &times {
        for (t, o) in [(0, 0), (1, 5)] {
            println!(
                "| {} | {} | {} | {} | {} | {} (align {align}) |",
                w[t],
                f(&r[o]),
                f(&r[o + 1]),
                f(&r[o + 2]),
                f(&r[o + 3]),
                f(&r[o + 4])
            );
        }
    }
    println!();
    println!("Speed-up of objcache over each baseline (baseline ns / objcache ns, paired by round): median [inter-quartile range] of the {runs} per-round ratios:");
    println!();
    println!("| workload | baseline | per-call objcache | pinned objcache |");
    println!("|---|---|---|---|");
    for (w, align, r) in &times {
        for (t, o) in [(0, 0), (1, 5)] {
            let w = &w[t];
            for (name, b) in [
                ("slabmalloc".to_string(), 2),
                ("system, natural 16 B align".to_string(), 3),
                (format!("system, cache's align ({align} B)"), 4),
            ] {
                println!(
                    "| {w} | {name} | {} | {} |",
                    q(&r[o + b], &r[o]),
                    q(&r[o + b], &r[o + 1])
                );
            }
        }
    }
    println!();
    println!("Two-thread scaling: aggregate throughput of 2 threads / 1 thread (1T ns / 2T ns, paired by round): median [inter-quartile range] of the {runs} per-round ratios:");
    println!();
    println!("| workload | objcache per-call | objcache pinned | slabmalloc | system, 16 B align | system, cache's align |");
    println!("|---|---|---|---|---|---|");
    for (w, _, r) in &times {
        println!(
            "| {} | {} | {} | {} | {} | {} |",
            w[2],
            q(&r[0], &r[5]),
            q(&r[1], &r[6]),
            q(&r[2], &r[7]),
            q(&r[3], &r[8]),
            q(&r[4], &r[9])
        );
    }
    println!();
    println!("| objcache cache after workload | slabs grown | slabs reaped | refills | flushes | limit / batchcount at the end (dynamic resizes) |");
    println!("|---|---|---|---|---|---|");
    for (w, g, r, m, f, (l, b, z)) in churn {
        println!("| {w} | {g} | {r} | {m} | {f} | {l} / {b} ({z}) |");
    }
    println!();
    let pattern: &'static [u8] = Box::leak(kernel_pattern().into_boxed_slice());
    let cache = pgd_cache(pattern);
    let mk_pre = |t| ObjCache {
        cache: &cache,
        cpu: t,
    };
    let mk_every = |_| ConstructEveryTime { pattern };
    let mk_pin = |t| Pinned::new(&cache, t);
    let r = interleaved(
        runs,
        vec![
            Box::new(|| on(1, &mk_pre, n, 1)),
            Box::new(|| on(1, &mk_every, n, 1)),
            Box::new(|| on(1, &mk_pin, n, 1)),
        ],
    );
    let (pre, every, pinned) = (
        r[0].best_median().0,
        r[1].best_median().0,
        r[2].best_median().0,
    );
    println!("| pgd (4 KiB: 3 KiB zero + 1 KiB copy) | ns/pair (best) | ratio, paired by round: median [IQR] |");
    println!("|---|---|---|");
    println!(
        "| preconstructed (objcache, ctor once) | {pre:.1} | {:.2} |",
        r[1].ratio_to(&r[0])
    );
    println!(
        "| preconstructed, pinned CPU (`lock_cpu`) | {pinned:.1} | {:.2} |",
        r[1].ratio_to(&r[2])
    );
    println!("| construct on every alloc (system + memset + memcpy) | {every:.1} | 1.00x |");
    load("after");
    let st = cache.stats();
    println!();
    println!(
        "pgd cache: ctor_calls={} alloc_hits={} alloc_misses={}",
        st.ctor_calls, st.alloc_hits, st.alloc_misses
    );
}

/// The issue #17 targets: the 32-byte pair per call and through a token
/// against glibc malloc, measured by `objcache::pairbench` in interleaved
/// rounds and paired by round (`benchstats::Ratio::paired`).
pub fn print_pair32(rounds: usize, pairs: u64) {
    let r = match objcache::pairbench::pair_rounds_32b(rounds, pairs) {
        Ok(r) => r,
        Err(e) => panic!("pair32: {e}"),
    };
    println!("32 B alloc+free pair, {rounds} rounds x {pairs} pairs, one thread");
    println!("| contender | ns/pair min | median | speed-up vs glibc: median [IQR] | target |");
    println!("|---|---|---|---|---|");
    let g = benchstats::Summary::of(&r.system);
    println!(
        "| glibc malloc (16 B align) | {:.1} | {:.1} | 1.00x | |",
        g.min, g.median
    );
    for (name, v, target) in [
        ("objcache per call (`alloc_on`/`free_on`)", &r.per_call, 2.0),
        ("objcache token (`claim_cpu`)", &r.token, 3.0),
        ("objcache token, `Obj` handles", &r.token_obj, 3.0),
        (
            "per-call floor: 2 x (`lock cmpxchg` + store)",
            &r.atomic_floor,
            2.0,
        ),
    ] {
        let x = benchstats::Summary::of(v);
        let ratio = benchstats::Ratio::paired(&r.system, v);
        let met = if ratio.median >= target {
            "met"
        } else {
            "not met"
        };
        println!(
            "| {name} | {:.1} | {:.1} | {ratio} | >= {target:.0}x: {met} |",
            x.min, x.median
        );
    }
}
