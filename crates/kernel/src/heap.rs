//! The kernel heap (`alloc`'s global allocator): a linked-list allocator
//! over a region of `.bss`.
//!
//! It exists before the page allocator does: `physmem`'s `mem_map`
//! (`struct page` array) and the pgd system's own structures are heap
//! objects, and the buddy allocator manages only what lies above the
//! kernel image. Frames for page tables and pgds come from the buddy
//! allocator, never from here.

use linked_list_allocator::LockedHeap;

/// Bytes of heap: `mem_map` for 1 GiB of RAM is 12 MiB, so the kernel
/// accepts at most 256 MiB (3 MiB of `mem_map`) and keeps the rest for the
/// pgd system's bookkeeping.
pub const HEAP_BYTES: usize = 6 << 20;

#[repr(C, align(4096))]
struct Arena([u8; HEAP_BYTES]);

static mut ARENA: Arena = Arena([0; HEAP_BYTES]);

#[global_allocator]
static ALLOC: LockedHeap = LockedHeap::empty();

/// Hands the arena to the allocator. Called once, first thing.
pub fn init() {
    let base = core::ptr::addr_of_mut!(ARENA).cast::<u8>();
    // SAFETY: the arena is a static region nothing else references, and
    // `init` runs once before any allocation.
    unsafe { ALLOC.lock().init(base, HEAP_BYTES) };
}

/// Heap bytes in use.
pub fn used() -> usize {
    ALLOC.lock().used()
}
