//! The pgd system on memory a kernel supplies: a `physmem::Lowmem` over a
//! plain 8-byte aligned buffer (standing in for a Rust kernel's direct map
//! at `PAGE_OFFSET`), not the simulator's `Ram`. This is the path a kernel
//! that embeds pgdcache takes; the crate also builds without `std`
//! (`cargo build -p pgdcache --no-default-features --target x86_64-unknown-none`).
#![cfg(not(loom))]

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::ptr::NonNull;
use std::sync::Arc;

use pgdcache::mm::TaskSize;
use pgdcache::{Kernel, KernelConfig, Scheme};
use physmem::{Lowmem, PhysMemory, VirtAddr};
use x86paging::{EntryFlags, PagingMode};

const SIZE: usize = 64 << 20;

/// A zeroed, 4 MiB-aligned region that outlives every `Lowmem` made from it.
struct Region {
    base: NonNull<u8>,
    layout: Layout,
}

impl Region {
    fn new() -> Region {
        let layout = Layout::from_size_align(SIZE, 4 << 20).unwrap();
        // SAFETY: the layout has a non-zero size.
        let base = NonNull::new(unsafe { alloc_zeroed(layout) }).expect("64 MiB for the test");
        Region { base, layout }
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout, freed once.
        unsafe { dealloc(self.base.as_ptr(), self.layout) }
    }
}

#[test]
fn the_pgd_system_runs_on_a_kernel_supplied_direct_map() {
    for mode in PagingMode::ALL {
        let region = Region::new();
        {
            // SAFETY: the region is valid, aligned and zeroed, outlives this
            // block (the kernel is dropped first), and is only accessed
            // through the `Lowmem`.
            let mem = unsafe { Lowmem::new(region.base, SIZE as u64) };
            let pm = Arc::new(PhysMemory::with_memory(mem, 1 << 20));
            let cfg = KernelConfig::new(mode, Scheme::SlabPgdList);
            let k: Kernel<Lowmem> = Kernel::new(pm.clone(), &cfg).unwrap();
            // fork and exec from a parent, then convert a direct-map page.
            let parent = k.exec_mm(0, TaskSize::SMALL).unwrap();
            let child = k.fork_mm(1, &parent).unwrap();
            let va = VirtAddr::new(mode.page_offset() + (16 << 20));
            let mut nocache = k.page_kernel_at(va).unwrap();
            nocache |= EntryFlags::PCD | EntryFlags::PWT;
            k.change_page_attr(va, 1, nocache).unwrap();
            k.global_flush_tlb();
            let r = k.verify().unwrap();
            assert!(r.is_clean(), "{mode}: {:?}", r.violations);
            k.exit_mm(1, child).unwrap();
            k.exit_mm(0, parent).unwrap();
            k.change_page_attr(va, 1, k.page_kernel_at(va).unwrap())
                .unwrap();
            k.global_flush_tlb();
            let r = k.verify().unwrap();
            assert!(r.is_clean(), "{mode}: {:?}", r.violations);
            assert_eq!(r.leaked_frames, 0, "{mode}");
            // The pgds really live in the supplied region.
            let pgd = k.swapper().0.as_u64() as usize;
            assert!(pgd < SIZE, "{mode}: swapper_pg_dir at {pgd:#x}");
            drop(k);
        }
    }
}
