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
