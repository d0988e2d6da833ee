//! Slabs: geometry, descriptors and the full/partial/free lists.
//!
//! A slab is `2^order` page frames cut into `num` equally sized buffers, at a
//! per-slab colour offset (Bonwick's slab colouring, so that objects of
//! successive slabs start on different cache lines).  All `num` objects are
//! constructed when the slab is created (`cache_grow` → `cache_init_objs`) and
//! destructed when it is destroyed (`slab_destroy`); in between they stay in
//! constructed state whether allocated or free.
//!
//! The descriptor is always *off-slab*: the free-object stack (Linux 2.5's
//! `kmem_bufctl_t` array) and a free bitmap live in separately allocated
//! memory, so the allocator never writes a free object — a free pgd keeps its
//! kernel half.  Each descriptor has two parts:
//!
//! * [`SlabShared`] — what `free` on any CPU reads without the list lock: the
//!   address of the first object and one "owned by a user" byte per object
//!   (the cheap, always-on double-free check).
//! * [`Slab`] — the list-lock-protected bookkeeping (`inuse`, free stack,
//!   which list the slab is on).

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::ptr::NonNull;

use crate::error::CreateError;
use crate::page::PAGE_SIZE;
use crate::sync::{AtomicU8, AtomicUsize};

/// Largest slab order (`PAGE_SIZE << MAX_ORDER` = 128 KiB slabs), as Linux 2.5.
pub const MAX_ORDER: u32 = 5;
/// L1 cache line size used by `SLAB_HWCACHE_ALIGN` and for colouring.
pub const CACHE_LINE: usize = 64;

/// Fixed-point shift of [`Geometry::recip`].
const RECIP_SHIFT: u32 = 40;
/// [`Geometry::stride_shift`] of a stride that is not a power of two.
pub(crate) const NOT_POW2: u32 = u32::MAX;

/// Shape of every slab of one cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Geometry {
    /// Requested object size.
    pub size: usize,
    /// Effective alignment (power of two <= PAGE_SIZE).
    pub align: usize,
    /// Distance between objects: `size` rounded up to `align`.
    pub stride: usize,
    /// `ceil(2^RECIP_SHIFT / stride)`: `off / stride` is
    /// `(off * recip) >> RECIP_SHIFT` for every `off` inside a slab (Linux's
    /// `reciprocal_divide`, used by `obj_to_index`).
    pub recip: u64,
    /// `log2(stride)` when `stride` is a power of two (then `off / stride` is
    /// a shift), else [`NOT_POW2`].
    pub stride_shift: u32,
    /// `log2(PAGE_SIZE << order)`: slabs are naturally aligned to their size.
    pub slab_shift: u32,
    /// Slab size is `PAGE_SIZE << order`.
    pub order: u32,
    /// Objects per slab.
    pub num: usize,
    /// `num * stride`: offsets below this can be object starts.
    pub span: usize,
    /// Number of distinct colour offsets (>= 1).
    pub colours: usize,
    /// Distance between successive colour offsets.
    pub colour_step: usize,
}

impl Geometry {
    /// Lays out a cache of `size`-byte objects aligned to `align`.
    pub(crate) fn new(size: usize, align: usize) -> Result<Self, CreateError> {
        if size == 0 {
            return Err(CreateError::ZeroSize);
        }
        if !align.is_power_of_two() || align > PAGE_SIZE {
            return Err(CreateError::BadAlign(align));
        }
        let too_large = CreateError::TooLarge(size);
        let stride = size
            .checked_next_multiple_of(align)
            .ok_or(too_large.clone())?;
        if stride > PAGE_SIZE << MAX_ORDER {
            return Err(too_large);
        }
        // calculate_slab_order(): the smallest order that wastes at most 1/8.
        let mut order = 0;
        loop {
            let bytes = PAGE_SIZE << order;
            let num = bytes / stride;
            let waste = bytes - num * stride;
            if (num > 0 && waste * 8 <= bytes) || order == MAX_ORDER {
                break;
            }
            order += 1;
        }
        let bytes = PAGE_SIZE << order;
        let num = bytes / stride;
        if num == 0 || num > u32::MAX as usize {
            return Err(too_large);
        }
        let left_over = bytes - num * stride;
        let colour_step = align.max(CACHE_LINE);
        Ok(Self {
            size,
            align,
            stride,
            recip: (1u64 << RECIP_SHIFT).div_ceil(stride as u64),
            stride_shift: if stride.is_power_of_two() {
                stride.trailing_zeros()
            } else {
                NOT_POW2
            },
            slab_shift: PAGE_SIZE.trailing_zeros() + order,
            order,
            num,
            span: num * stride,
            colours: left_over / colour_step + 1,
            colour_step,
        })
    }

    /// Bytes per slab.
    pub(crate) fn slab_bytes(&self) -> usize {
        PAGE_SIZE << self.order
    }

    /// Pages per slab.
    pub(crate) fn pages(&self) -> usize {
        1 << self.order
    }

    /// Object index of byte offset `off` from the first object, if `off` is
    /// an object boundary inside the slab.
    #[inline(always)]
    pub(crate) fn index_of(&self, off: usize) -> Option<usize> {
        if off >= self.span {
            return None;
        }
        if self.stride_shift != NOT_POW2 {
            // Power-of-two strides (32 B PAE pgds, 4 KiB pgds and pmds).
            return (off & (self.stride - 1) == 0).then_some(off >> self.stride_shift);
        }
        // Exact for off < 2^17 (the largest slab) and stride <= 2^17: with
        // recip = (2^40 + e) / stride, e < stride, the error term
        // off * e / 2^40 < 1/stride never carries into the next integer.
        let idx = ((off as u64 * self.recip) >> RECIP_SHIFT) as usize;
        (idx * self.stride == off).then_some(idx)
    }
}

/// Owned bytes per cache line: the "owned" flags of different slabs never
/// share a line, so CPUs working on different slabs do not false-share.
#[cfg(not(loom))]
const OWNED_PER_LINE: usize = CACHE_LINE;
/// Under loom, keep the number of modelled atomics small.
#[cfg(loom)]
const OWNED_PER_LINE: usize = 2;

#[repr(align(64))]
struct OwnedLine([AtomicU8; OWNED_PER_LINE]);

/// One "owned by a user" flag per object, in cache-line-aligned chunks.
pub(crate) struct OwnedMap(Box<[OwnedLine]>);

impl OwnedMap {
    fn new(num: usize) -> Self {
        Self(
            (0..num.div_ceil(OWNED_PER_LINE))
                .map(|_| OwnedLine(core::array::from_fn(|_| AtomicU8::new(0))))
                .collect(),
        )
    }

    /// The flag of object `i` (`i < num`, checked by the caller; panics
    /// otherwise, which `Geometry::index_of` rules out).
    #[inline]
    pub(crate) fn get(&self, i: usize) -> &AtomicU8 {
        &self.0[i / OWNED_PER_LINE].0[i % OWNED_PER_LINE]
    }

    /// [`OwnedMap::get`] without the bounds check, for the free fast path.
    ///
    /// # Safety
    /// `i` must be less than the `num` the map was created with (as
    /// `Geometry::index_of` guarantees).
    #[inline(always)]
    pub(crate) unsafe fn get_unchecked(&self, i: usize) -> &AtomicU8 {
        debug_assert!(i / OWNED_PER_LINE < self.0.len());
        // SAFETY: the map has `num.div_ceil(OWNED_PER_LINE)` lines and
        // `i < num` (caller's contract).
        unsafe { &self.0.get_unchecked(i / OWNED_PER_LINE).0[i % OWNED_PER_LINE] }
    }
}

/// The lock-free-readable half of a slab descriptor (see module docs).
///
/// Lives in its own `Box` from creation until the cache is dropped, so the
/// page map and per-CPU array entries may point at it.
#[repr(align(64))]
pub(crate) struct SlabShared {
    /// Address of object 0, or 0 while the descriptor is not in use.
    pub first: AtomicUsize,
    /// Index of the [`Slab`] in `Lists::slabs` (constant).
    pub id: u32,
    /// One byte per object: 1 = handed out to a user, 0 = free (in the slab
    /// or in a per-CPU array).  Written with atomics from any CPU.
    pub owned: OwnedMap,
}

/// The list-lock-protected half of a slab descriptor.
pub(crate) struct Slab {
    /// Owned pointer (`Box::into_raw`) to the shared half; freed by
    /// `Lists::free_descriptors` when the cache is dropped.
    pub shared: NonNull<SlabShared>,
    /// Base of the slab's pages, or `None` while the descriptor is spare.
    pub pages: Option<NonNull<u8>>,
    /// `kmem_bufctl_t`: stack of free object indices.
    pub free: Vec<u32>,
    /// Bit `i` set ⇔ index `i` is on `free` (catches a double return).
    pub free_map: Vec<u64>,
    /// Objects not on `free` (allocated or in a per-CPU array).
    pub inuse: usize,
    /// Which list the slab is on, and its position there.
    pub list: ListKind,
    pub pos: usize,
}

// SAFETY: `shared` is an owning pointer to a `SlabShared` (all of whose fields
// are `Send + Sync`) and `pages` names memory owned by the slab; neither is
// tied to a thread.  The `Slab` itself is only touched under the list lock.
unsafe impl Send for Slab {}

/// Which slab list a slab is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ListKind {
    Full,
    Partial,
    Free,
    /// Descriptor not in use (on the spare list).
    Spare,
}

/// An object handed from the slab layer to a per-CPU array (and back).
///
/// 16 bytes, 16-aligned, so that a push and the next pop of the same slot
/// are single, same-sized accesses (store-to-load forwarding on the
/// alloc/free ping-pong path).  The slab and index are recomputed through
/// the page map when the entry goes back to its slab.
#[derive(Clone, Copy)]
#[repr(C, align(16))]
pub(crate) struct Entry {
    pub obj: NonNull<u8>,
    /// `&SlabShared::owned[idx]`, so `alloc` can mark ownership without a lookup.
    pub owned: NonNull<AtomicU8>,
}

/// `Vec::pop` for per-CPU arrays, reading the two fields with separate
/// 8-byte loads.  A whole-struct pop compiles to one 16-byte load, which
/// cannot be store-forwarded from the two 8-byte stores of the `push` just
/// before it (the alloc/free ping-pong), and stalls until the stores retire.
#[inline(always)]
pub(crate) fn pop_entry(v: &mut Vec<Entry>) -> Option<Entry> {
    let n = v.len().checked_sub(1)?;
    // SAFETY: `n < len`, so the element is initialised; `Entry` is `Copy`, so
    // reading it out and shrinking the length by one is exactly `pop`.
    unsafe {
        let e = read_entry(v.as_ptr().add(n));
        v.set_len(n);
        Some(e)
    }
}

/// Reads an entry with two 8-byte loads (see [`pop_entry`]); the volatile
/// reads only pin the access width.
///
/// # Safety
///
/// `p` points to an initialised `Entry`.
#[inline(always)]
pub(crate) unsafe fn read_entry(p: *const Entry) -> Entry {
    // SAFETY: `p` is valid for reads of an initialised `Entry` (caller).
    unsafe {
        let obj = core::ptr::read_volatile(core::ptr::addr_of!((*p).obj));
        let owned = core::ptr::read_volatile(core::ptr::addr_of!((*p).owned));
        Entry { obj, owned }
    }
}

/// Writes an entry with two 8-byte stores: a whole-struct write may be
/// compiled to a 16-byte load of the entry's two 8-byte halves just
/// stored to the stack, which cannot be store-forwarded either.
///
/// # Safety
///
/// `p` is valid for writes of an `Entry`.
#[inline(always)]
pub(crate) unsafe fn write_entry(p: *mut Entry, e: Entry) {
    // SAFETY: `p` is valid for writes (caller); the volatile writes only
    // pin the access width.
    unsafe {
        core::ptr::write_volatile(core::ptr::addr_of_mut!((*p).obj), e.obj);
        core::ptr::write_volatile(core::ptr::addr_of_mut!((*p).owned), e.owned);
    }
}

/// `Vec::push` for per-CPU arrays, whose capacity is reserved up to `limit`
/// when the array is created or resized: no capacity check on the fast path.
///
/// # Safety
/// `v.len() < v.capacity()`.
#[inline(always)]
pub(crate) unsafe fn push_entry(v: &mut Vec<Entry>, e: Entry) {
    debug_assert!(v.len() < v.capacity());
    let n = v.len();
    // SAFETY: `n < capacity` (caller), so slot `n` is allocated and unused;
    // writing it and growing the length by one is exactly `push`.
    unsafe {
        v.as_mut_ptr().add(n).write(e);
        v.set_len(n + 1);
    }
}

// SAFETY: an `Entry` is a token for an object of a slab owned by the cache;
// the pointers stay valid until the cache is dropped and the entry is only
// used by whoever holds the per-CPU array lock it sits in.
unsafe impl Send for Entry {}

/// A freshly grown slab, constructed but not yet on the lists.
pub(crate) struct NewSlab {
    pub pages: NonNull<u8>,
    pub first: usize,
}

/// A slab taken off the lists, to be destructed and freed outside the lock.
pub(crate) struct DeadSlab {
    pub pages: NonNull<u8>,
    pub first: usize,
}

/// The slab lists of one cache: everything `list_lock` protects.
pub(crate) struct Lists {
    pub slabs: Vec<Slab>,
    pub full: Vec<u32>,
    pub partial: Vec<u32>,
    pub free: Vec<u32>,
    pub spare: Vec<u32>,
    /// Linux 2.6's shared `array_cache`: free, constructed objects passed
    /// between CPUs in batches without touching the slabs.
    pub shared: Vec<Entry>,
    /// Capacity of `shared` (`sharedfactor * batchcount`; 0 disables it).
    pub shared_limit: usize,
    /// Free objects on all slabs of the lists (not counting the arrays).
    pub free_objects: usize,
    /// Above this many free objects, a slab that becomes empty is destroyed
    /// (Linux 2.5 `free_limit`); `usize::MAX` with `SLAB_NO_REAP`.
    pub free_limit: usize,
}

impl Lists {
    pub(crate) fn new(free_limit: usize, shared_limit: usize) -> Self {
        Self {
            shared: Vec::with_capacity(shared_limit),
            shared_limit,
            slabs: Vec::new(),
            full: Vec::new(),
            partial: Vec::new(),
            free: Vec::new(),
            spare: Vec::new(),
            free_objects: 0,
            free_limit,
        }
    }

    fn list_mut(&mut self, kind: ListKind) -> &mut Vec<u32> {
        match kind {
            ListKind::Full => &mut self.full,
            ListKind::Partial => &mut self.partial,
            ListKind::Free => &mut self.free,
            ListKind::Spare => &mut self.spare,
        }
    }

    fn unlink(&mut self, id: u32) {
        let (kind, pos) = {
            let s = &self.slabs[id as usize];
            (s.list, s.pos)
        };
        let list = self.list_mut(kind);
        list.swap_remove(pos);
        if let Some(&moved) = list.get(pos) {
            self.slabs[moved as usize].pos = pos;
        }
    }

    fn link(&mut self, id: u32, kind: ListKind) {
        let list = self.list_mut(kind);
        let pos = list.len();
        list.push(id);
        let s = &mut self.slabs[id as usize];
        s.list = kind;
        s.pos = pos;
    }

    fn relist(&mut self, id: u32, num: usize) {
        let s = &self.slabs[id as usize];
        let want = if s.inuse == 0 {
            ListKind::Free
        } else if s.inuse == num {
            ListKind::Full
        } else {
            ListKind::Partial
        };
        if s.list != want {
            self.unlink(id);
            self.link(id, want);
        }
    }

    /// Puts a freshly constructed slab on the free list and returns its
    /// descriptor (for page-map registration).
    pub(crate) fn insert(&mut self, new: NewSlab, geo: &Geometry) -> NonNull<SlabShared> {
        let num = geo.num;
        let id = match self.spare.last().copied() {
            Some(id) => {
                self.unlink(id);
                id
            }
            None => {
                let id = self.slabs.len() as u32;
                let shared = Box::new(SlabShared {
                    first: AtomicUsize::new(0),
                    id,
                    owned: OwnedMap::new(num),
                });
                self.slabs.push(Slab {
                    shared: NonNull::from(Box::leak(shared)),
                    pages: None,
                    free: Vec::with_capacity(num),
                    free_map: Vec::with_capacity(num.div_ceil(64)),
                    inuse: 0,
                    list: ListKind::Spare,
                    pos: 0,
                });
                id
            }
        };
        let s = &mut self.slabs[id as usize];
        s.pages = Some(new.pages);
        s.inuse = 0;
        s.free.clear();
        // Hand out low indices first (pop from the end).
        s.free.extend((0..num as u32).rev());
        s.free_map.clear();
        s.free_map.resize(num.div_ceil(64), 0);
        for i in 0..num {
            s.free_map[i / 64] |= 1 << (i % 64);
        }
        let shared = s.shared;
        // SAFETY: `shared` is a live owning pointer (see `Slab::shared`).
        unsafe { shared.as_ref() }
            .first
            .store(new.first, core::sync::atomic::Ordering::Release);
        self.link(id, ListKind::Free);
        self.free_objects += num;
        shared
    }

    /// Moves up to `want` objects from partial, then free, slabs into `out`.
    pub(crate) fn take(&mut self, want: usize, out: &mut Vec<Entry>, geo: &Geometry) -> usize {
        let mut got = 0;
        while got < want {
            let Some(&id) = self.partial.last().or(self.free.last()) else {
                break;
            };
            let s = &mut self.slabs[id as usize];
            while got < want {
                let Some(idx) = s.free.pop() else { break };
                let i = idx as usize;
                s.free_map[i / 64] &= !(1 << (i % 64));
                s.inuse += 1;
                // SAFETY: `shared` is a live owning pointer (see `Slab::shared`).
                let shared = unsafe { s.shared.as_ref() };
                let first = shared.first.load(core::sync::atomic::Ordering::Relaxed);
                let obj = first + i * geo.stride;
                out.push(Entry {
                    // SAFETY: `first` is the non-null address of object 0 of a
                    // live slab, and `obj` lies inside that slab.
                    obj: unsafe { NonNull::new_unchecked(obj as *mut u8) },
                    owned: NonNull::from(shared.owned.get(i)),
                });
                got += 1;
            }
            self.relist(id, geo.num);
        }
        self.free_objects -= got;
        got
    }

    /// Returns one object to its slab.  Returns `Err(())` if the object was
    /// already free in the slab (an undetected racing double free upstream);
    /// returns `Ok(true)` if the slab became empty and should be reaped.
    pub(crate) fn put(&mut self, id: u32, idx: usize, geo: &Geometry) -> Result<bool, ()> {
        let Some(s) = self.slabs.get_mut(id as usize) else {
            return Err(());
        };
        let i = idx;
        if s.pages.is_none() || i >= geo.num || s.free_map[i / 64] & (1 << (i % 64)) != 0 {
            return Err(());
        }
        s.free_map[i / 64] |= 1 << (i % 64);
        s.free.push(i as u32);
        s.inuse -= 1;
        let empty = s.inuse == 0;
        self.relist(id, geo.num);
        self.free_objects += 1;
        Ok(empty && self.free_objects > self.free_limit)
    }

    /// Takes the (empty) slab `id` off the lists, recycling its descriptor.
    /// The caller unregisters its pages from the page map first.
    pub(crate) fn remove(&mut self, id: u32, geo: &Geometry) -> Option<DeadSlab> {
        let s = &mut self.slabs[id as usize];
        if s.inuse != 0 {
            return None;
        }
        let pages = s.pages.take()?;
        // SAFETY: `shared` is a live owning pointer (see `Slab::shared`).
        let shared = unsafe { s.shared.as_ref() };
        let first = shared.first.swap(0, core::sync::atomic::Ordering::AcqRel);
        self.unlink(id);
        self.link(id, ListKind::Spare);
        self.free_objects -= geo.num;
        Some(DeadSlab { pages, first })
    }

    /// Frees every descriptor's shared half.  Called once, from the cache's
    /// `Drop`, when no reader can exist any more.
    pub(crate) fn free_descriptors(&mut self) {
        for s in self.slabs.drain(..) {
            // SAFETY: `shared` came from `Box::leak` in `insert` and is freed
            // only here; `&mut self` in the cache's `Drop` proves no page-map
            // reader or per-CPU entry can still use it.
            drop(unsafe { Box::from_raw(s.shared.as_ptr()) });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn geometry_matches_linux_choices() {
        let g = Geometry::new(4096, 64).unwrap();
        assert_eq!((g.order, g.num, g.colours), (0, 1, 1));
        let g = Geometry::new(32, 32).unwrap();
        assert_eq!((g.order, g.num), (0, 128));
        let g = Geometry::new(3000, 8).unwrap();
        assert_eq!((g.order, g.num), (2, 5));
        let g = Geometry::new(100, 64).unwrap();
        assert_eq!((g.stride, g.num), (128, 32));
        let g = Geometry::new(1000, 8).unwrap();
        assert_eq!(g.num, 4);
        assert_eq!(g.colours, (4096 - 4000) / 64 + 1);
        assert_eq!(Geometry::new(0, 8), Err(CreateError::ZeroSize));
        assert_eq!(Geometry::new(8, 3), Err(CreateError::BadAlign(3)));
        assert_eq!(Geometry::new(8, 8192), Err(CreateError::BadAlign(8192)));
        assert!(Geometry::new(PAGE_SIZE << MAX_ORDER, 8).is_ok());
        assert!(Geometry::new((PAGE_SIZE << MAX_ORDER) + 1, 8).is_err());
    }

    #[test]
    fn index_of_checks_boundaries() {
        let g = Geometry::new(96, 32).unwrap();
        assert_eq!(g.index_of(0), Some(0));
        assert_eq!(g.index_of(96), Some(1));
        assert_eq!(g.index_of(95), None);
        assert_eq!(g.index_of(96 * g.num), None);
        assert_eq!(g.index_of(usize::MAX), None);
    }

    #[test]
    fn reciprocal_index_is_exact() {
        // Every offset of every slab, for a spread of strides and orders
        // (against plain division).
        for size in (1..=PAGE_SIZE << MAX_ORDER).step_by(997).chain([
            8,
            24,
            32,
            64,
            3000,
            4096,
            4097,
            (PAGE_SIZE << MAX_ORDER) / 3,
            PAGE_SIZE << MAX_ORDER,
        ]) {
            let g = Geometry::new(size, 8).unwrap();
            assert_eq!(g.slab_bytes(), 1 << g.slab_shift);
            for off in (0..g.slab_bytes()).step_by(if size < 5000 { 1 } else { 7 }) {
                let want = (off % g.stride == 0 && off / g.stride < g.num).then(|| off / g.stride);
                assert_eq!(g.index_of(off), want, "size {size} off {off}");
            }
            for i in 0..g.num {
                assert_eq!(g.index_of(i * g.stride), Some(i));
            }
        }
    }
}
