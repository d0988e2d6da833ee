//! Slab pages from simulated RAM: the [`PageSource`] the pgd and pmd caches
//! grow from.
//!
//! The object caches hand out host pointers; a pgd, though, must be a
//! physical address that CR3 and page-table entries can hold. Because the
//! simulated RAM is one contiguous mapping, a host pointer into it *is* a
//! direct-map address: `pa_of` is the simulator's `__pa` and `ptr_of` its
//! `__va`, exactly the kernel's arrangement for lowmem.

use crate::swapper::KernelMem;
use alloc::sync::Arc;
use core::ptr::NonNull;
use objcache::{PageAllocError, PageSource};
use physmem::{Frame, Owner, PhysMemory};

/// Allocates slab pages as [`Owner::Slab`] frames of the simulated machine.
pub struct SimPages<M: KernelMem> {
    pm: Arc<PhysMemory<M>>,
}

impl<M: KernelMem> Clone for SimPages<M> {
    fn clone(&self) -> Self {
        SimPages {
            pm: self.pm.clone(),
        }
    }
}

impl<M: KernelMem> SimPages<M> {
    /// A page source over `pm`.
    pub fn new(pm: Arc<PhysMemory<M>>) -> Self {
        SimPages { pm }
    }
}

impl<M: KernelMem> PageSource for SimPages<M> {
    fn alloc_pages(&self, order: u32) -> Result<NonNull<u8>, PageAllocError> {
        let f = self
            .pm
            .alloc_pages(order, Owner::Slab)
            .map_err(|_| PageAllocError::OutOfMemory)?;
        match self.pm.ptr_of(f.start()) {
            Some(p) => Ok(p),
            None => {
                let _ = self.pm.free_pages(f, order);
                Err(PageAllocError::OutOfMemory)
            }
        }
    }

    unsafe fn free_pages(&self, addr: NonNull<u8>, order: u32) {
        if let Some(pa) = self.pm.pa_of(addr) {
            // A bad free is refused by the buddy allocator and changes
            // nothing; the frame accounting check then reports the leak.
            let _ = self.pm.free_pages(Frame::containing(pa), order);
        }
    }
}
