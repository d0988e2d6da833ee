//! CPU identity for the per-CPU layer.
//!
//! The kernel indexes per-CPU data with `smp_processor_id()` while preemption
//! is off.  A library cannot pin threads, so the identity is explicit:
//! `alloc_on(cpu)` / `free_on(cpu, obj)` take it from the caller (a kernel or
//! simulator passes its own CPU number), and the convenience `alloc()` /
//! `free()` ask [`current`], which with `std` gives every thread a slot number
//! assigned round-robin on first use (reduced modulo the cache's number of
//! CPUs).  Two threads may share a slot; that is correct, only slower, because
//! each per-CPU array has its own lock.  Without `std` (or under loom) there is
//! no thread identity and [`current`] returns 0 unless the cache was built
//! with its own `cpu_id` function.

#[cfg(all(feature = "std", not(loom)))]
mod imp {
    use core::cell::Cell;
    use core::sync::atomic::{AtomicUsize, Ordering};

    /// Next slot number to hand to a thread.
    static NEXT: AtomicUsize = AtomicUsize::new(0);

    std::thread_local! {
        static SLOT: Cell<usize> = const { Cell::new(usize::MAX) };
    }

    #[inline]
    pub(crate) fn current() -> usize {
        SLOT.try_with(|s| {
            let v = s.get();
            if v != usize::MAX {
                return v;
            }
            let v = NEXT.fetch_add(1, Ordering::Relaxed) & (usize::MAX >> 1);
            s.set(v);
            v
        })
        .unwrap_or(0)
    }
}

#[cfg(not(all(feature = "std", not(loom))))]
mod imp {
    #[inline]
    pub(crate) fn current() -> usize {
        0
    }
}

/// The calling thread's CPU slot number (not yet reduced modulo `ncpus`).
pub fn current() -> usize {
    imp::current()
}

#[cfg(all(test, feature = "std", not(loom)))]
mod tests {
    #[test]
    fn stable_per_thread_distinct_across_threads() {
        let a = super::current();
        assert_eq!(a, super::current());
        let b = std::thread::spawn(super::current).join().unwrap();
        assert_ne!(a, b);
    }
}
