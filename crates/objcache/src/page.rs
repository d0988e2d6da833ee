//! Page frames: the narrow interface between the slab layer and the page allocator.
//!
//! In Linux the slab allocator gets its memory from the buddy allocator with
//! `__get_free_pages(order)` / `free_pages(addr, order)`.  [`PageSource`] is
//! exactly that interface and nothing more, so a kernel (or the pgdcache
//! simulator, whose "physical RAM" is an mmap'd region) can plug in its own
//! frame allocator.  [`SystemPageSource`] backs it with the host allocator and
//! [`FaultyPageSource`] wraps any source for fault injection and leak checking.

use core::ptr::NonNull;
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// Size of one page frame (i386 / x86-64 base page).
pub const PAGE_SIZE: usize = 4096;
/// log2 of [`PAGE_SIZE`].
pub const PAGE_SHIFT: u32 = 12;

/// Why a page source could not provide pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PageAllocError {
    /// The source has no free frames of the requested order.
    #[error("out of page frames")]
    OutOfMemory,
    /// A fault was injected by [`FaultyPageSource`].
    #[error("page allocation failure injected")]
    Injected,
}

/// A provider of naturally aligned, physically contiguous page frames.
pub trait PageSource: Send + Sync {
    /// Allocate 2^order contiguous, naturally aligned pages. Returns the host address of the first byte.
    fn alloc_pages(&self, order: u32) -> Result<NonNull<u8>, PageAllocError>;
    /// Give back pages obtained from alloc_pages with the same order.
    ///
    /// # Safety
    ///
    /// `addr` must have been returned by `alloc_pages(order)` on this source,
    /// with the same `order`, and must not have been freed since.
    unsafe fn free_pages(&self, addr: NonNull<u8>, order: u32);
}

impl<P: PageSource + ?Sized> PageSource for &P {
    fn alloc_pages(&self, order: u32) -> Result<NonNull<u8>, PageAllocError> {
        (**self).alloc_pages(order)
    }
    unsafe fn free_pages(&self, addr: NonNull<u8>, order: u32) {
        // SAFETY: forwarded verbatim; the caller upholds the contract.
        unsafe { (**self).free_pages(addr, order) }
    }
}

impl<P: PageSource + ?Sized> PageSource for alloc::sync::Arc<P> {
    fn alloc_pages(&self, order: u32) -> Result<NonNull<u8>, PageAllocError> {
        (**self).alloc_pages(order)
    }
    unsafe fn free_pages(&self, addr: NonNull<u8>, order: u32) {
        // SAFETY: forwarded verbatim; the caller upholds the contract.
        unsafe { (**self).free_pages(addr, order) }
    }
}

/// Page frames from the host allocator (`std::alloc`), `PAGE_SIZE << order`
/// bytes aligned to their own size.
#[cfg(feature = "std")]
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemPageSource;

#[cfg(feature = "std")]
impl SystemPageSource {
    fn layout(order: u32) -> Option<std::alloc::Layout> {
        let size = PAGE_SIZE.checked_shl(order)?;
        std::alloc::Layout::from_size_align(size, size).ok()
    }
}

#[cfg(feature = "std")]
impl PageSource for SystemPageSource {
    fn alloc_pages(&self, order: u32) -> Result<NonNull<u8>, PageAllocError> {
        let layout = Self::layout(order).ok_or(PageAllocError::OutOfMemory)?;
        // SAFETY: the layout has non-zero size (at least PAGE_SIZE).
        let p = unsafe { std::alloc::alloc(layout) };
        NonNull::new(p).ok_or(PageAllocError::OutOfMemory)
    }

    unsafe fn free_pages(&self, addr: NonNull<u8>, order: u32) {
        if let Some(layout) = Self::layout(order) {
            // SAFETY: by the trait contract `addr` came from `alloc_pages(order)`,
            // i.e. from `std::alloc::alloc` with this very layout.
            unsafe { std::alloc::dealloc(addr.as_ptr(), layout) }
        }
    }
}

/// Fault-injecting, page-counting wrapper around another [`PageSource`].
///
/// * [`fail_nth`](Self::fail_nth): the N-th call to `alloc_pages` from now on
///   (1-based) fails with [`PageAllocError::Injected`].
/// * [`set_fail_all`](Self::set_fail_all): every allocation fails while set.
/// * [`outstanding_pages`](Self::outstanding_pages): pages handed out and not
///   yet returned — zero after a cache is destroyed means nothing leaked.
#[derive(Debug, Default)]
pub struct FaultyPageSource<P> {
    inner: P,
    /// Allocation calls seen so far.
    calls: AtomicUsize,
    /// Call number (1-based, compared with `calls`) that fails; 0 = none.
    fail_at: AtomicUsize,
    fail_all: AtomicBool,
    outstanding: AtomicUsize,
    injected: AtomicUsize,
}

impl<P: PageSource> FaultyPageSource<P> {
    /// Wraps `inner` with no faults armed.
    pub fn new(inner: P) -> Self {
        Self {
            inner,
            calls: AtomicUsize::new(0),
            fail_at: AtomicUsize::new(0),
            fail_all: AtomicBool::new(false),
            outstanding: AtomicUsize::new(0),
            injected: AtomicUsize::new(0),
        }
    }

    /// Makes the `n`-th allocation call from now on fail (`n >= 1`); `0` disarms.
    pub fn fail_nth(&self, n: usize) {
        if n == 0 {
            self.fail_at.store(0, Ordering::SeqCst);
        } else {
            let now = self.calls.load(Ordering::SeqCst);
            self.fail_at.store(now + n, Ordering::SeqCst);
        }
    }

    /// While `on`, every allocation fails.
    pub fn set_fail_all(&self, on: bool) {
        self.fail_all.store(on, Ordering::SeqCst);
    }

    /// Pages (4 KiB frames) currently handed out and not returned.
    pub fn outstanding_pages(&self) -> usize {
        self.outstanding.load(Ordering::SeqCst)
    }

    /// Number of allocation calls made so far.
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    /// Number of failures injected so far.
    pub fn injected(&self) -> usize {
        self.injected.load(Ordering::SeqCst)
    }

    /// The wrapped source.
    pub fn inner(&self) -> &P {
        &self.inner
    }
}

impl<P: PageSource> PageSource for FaultyPageSource<P> {
    fn alloc_pages(&self, order: u32) -> Result<NonNull<u8>, PageAllocError> {
        let call = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        if self.fail_all.load(Ordering::SeqCst) || self.fail_at.load(Ordering::SeqCst) == call {
            self.injected.fetch_add(1, Ordering::SeqCst);
            return Err(PageAllocError::Injected);
        }
        let p = self.inner.alloc_pages(order)?;
        self.outstanding.fetch_add(1 << order, Ordering::SeqCst);
        Ok(p)
    }

    unsafe fn free_pages(&self, addr: NonNull<u8>, order: u32) {
        self.outstanding.fetch_sub(1 << order, Ordering::SeqCst);
        // SAFETY: forwarded verbatim; the caller upholds the contract and the
        // pages came from `self.inner` via our `alloc_pages`.
        unsafe { self.inner.free_pages(addr, order) }
    }
}

#[cfg(all(test, feature = "std"))]
mod tests {
    use super::*;

    #[test]
    fn system_pages_are_naturally_aligned() {
        let src = SystemPageSource;
        for order in 0..4 {
            let p = src.alloc_pages(order).unwrap();
            assert_eq!(p.as_ptr() as usize % (PAGE_SIZE << order), 0);
            // SAFETY: just allocated with this order.
            unsafe { src.free_pages(p, order) };
        }
    }

    #[test]
    fn faulty_fails_nth_and_counts() {
        let src = FaultyPageSource::new(SystemPageSource);
        src.fail_nth(2);
        let a = src.alloc_pages(1).unwrap();
        assert_eq!(src.alloc_pages(0), Err(PageAllocError::Injected));
        let b = src.alloc_pages(0).unwrap();
        assert_eq!(src.outstanding_pages(), 3);
        src.set_fail_all(true);
        assert!(src.alloc_pages(0).is_err());
        src.set_fail_all(false);
        // SAFETY: both came from `alloc_pages` with these orders.
        unsafe {
            src.free_pages(a, 1);
            src.free_pages(b, 0);
        }
        assert_eq!(src.outstanding_pages(), 0);
        assert_eq!(src.injected(), 2);
    }
}
