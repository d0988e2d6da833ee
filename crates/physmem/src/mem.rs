//! The physical-memory seam: how page-table code reads and writes RAM.
//!
//! Everything above this crate (the walker, the pgd caches, the checker)
//! touches physical memory only through [`PhysMem`]. A Rust kernel plugs in
//! its own direct map; pgdcache plugs in simulated RAM ([`crate::PhysMemory`]).
//!
//! Entries are read and written with single atomic accesses of their natural
//! width, like the kernel's `set_pte_atomic` and the CPU's own page walk: a
//! walker on one CPU may read an entry while another CPU rewrites it, and must
//! see either the old or the new value, never a torn one.

use crate::addr::{Frame, PhysAddr, PAGE_SIZE};

/// Why a physical access failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MemError {
    /// The address is beyond the end of RAM.
    #[error("physical address {0} is outside RAM")]
    OutOfRange(PhysAddr),
    /// The address is not aligned to the access width.
    #[error("physical address {0} is misaligned")]
    Misaligned(PhysAddr),
}

/// What the frame allocator knows about a frame, as far as a table walk cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameState {
    /// Allocated (or reserved): its contents are meaningful.
    Live,
    /// Given back to the allocator: its contents are poison, and a table
    /// entry that leads here is a use-after-free (a *dangling* table).
    Freed,
    /// Outside managed RAM (e.g. a PSE-36 address above the end of RAM).
    Unmanaged,
}

/// The [`PhysMem`] methods of a type that keeps its RAM in a field,
/// forwarded to that field: written once here, so a method added to the
/// trait is forwarded by every wrapper (`Ram` over its `Lowmem`,
/// `PhysMemory` over its RAM). `frame_state` and `zero_frame` are not
/// forwarded: a wrapper that manages frames answers `frame_state` itself,
/// and `zero_frame`'s default is a forwarded `fill`.
macro_rules! forward_phys_mem {
    ($field:ident) => {
        #[inline]
        fn size(&self) -> u64 {
            self.$field.size()
        }
        #[inline]
        fn load_u32(&self, pa: PhysAddr) -> Result<u32, MemError> {
            self.$field.load_u32(pa)
        }
        #[inline]
        fn load_u64(&self, pa: PhysAddr) -> Result<u64, MemError> {
            self.$field.load_u64(pa)
        }
        #[inline]
        fn store_u32(&self, pa: PhysAddr, v: u32) -> Result<(), MemError> {
            self.$field.store_u32(pa, v)
        }
        #[inline]
        fn store_u64(&self, pa: PhysAddr, v: u64) -> Result<(), MemError> {
            self.$field.store_u64(pa, v)
        }
        #[inline]
        fn store_u64s(&self, pa: PhysAddr, words: &[u64]) -> Result<(), MemError> {
            self.$field.store_u64s(pa, words)
        }
        #[inline]
        fn fill(&self, pa: PhysAddr, len: u64, byte: u8) -> Result<(), MemError> {
            self.$field.fill(pa, len, byte)
        }
        #[inline]
        fn copy(&self, dst: PhysAddr, src: PhysAddr, len: u64) -> Result<(), MemError> {
            self.$field.copy(dst, src, len)
        }
        #[inline]
        fn first_nonzero_u64(&self, pa: PhysAddr, words: usize) -> Result<Option<usize>, MemError> {
            self.$field.first_nonzero_u64(pa, words)
        }
        #[inline]
        fn first_other_u64(
            &self,
            pa: PhysAddr,
            words: usize,
            value: u64,
        ) -> Result<Option<usize>, MemError> {
            self.$field.first_other_u64(pa, words, value)
        }
    };
}

/// Atomic access to physical memory.
///
/// All accesses are at naturally aligned addresses; implementations return
/// [`MemError::Misaligned`] otherwise. Ordering: loads are `Acquire`, stores
/// are `Release`, which is what x86 gives every plain `mov` anyway.
pub trait PhysMem: Sync {
    /// Size of RAM in bytes; valid addresses are `0..size()`.
    fn size(&self) -> u64;
    /// Atomically reads a 32-bit value (a 2-level entry).
    fn load_u32(&self, pa: PhysAddr) -> Result<u32, MemError>;
    /// Atomically reads a 64-bit value (a PAE / long-mode entry).
    fn load_u64(&self, pa: PhysAddr) -> Result<u64, MemError>;
    /// Atomically writes a 32-bit value.
    fn store_u32(&self, pa: PhysAddr, v: u32) -> Result<(), MemError>;
    /// Atomically writes a 64-bit value (`set_pte_atomic`).
    fn store_u64(&self, pa: PhysAddr, v: u64) -> Result<(), MemError>;

    /// Writes `words` to consecutive 64-bit words from `pa`, each one
    /// atomically (PAE's three `set_pgd`s of a new pgd): all or none, the
    /// whole range checked before the first store.
    fn store_u64s(&self, pa: PhysAddr, words: &[u64]) -> Result<(), MemError> {
        let n = words.len() as u64;
        let end = n
            .checked_mul(8)
            .and_then(|len| pa.as_u64().checked_add(len))
            .ok_or(MemError::OutOfRange(pa))?;
        if !pa.is_aligned(8) {
            return Err(MemError::Misaligned(pa));
        }
        if end > self.size() {
            return Err(MemError::OutOfRange(pa));
        }
        for (i, &w) in words.iter().enumerate() {
            self.store_u64(PhysAddr::new(pa.as_u64() + i as u64 * 8), w)?;
        }
        Ok(())
    }

    /// The allocator's view of `frame`. Memory without an allocator says `Live`.
    fn frame_state(&self, frame: Frame) -> FrameState {
        if frame.start().as_u64() < self.size() {
            FrameState::Live
        } else {
            FrameState::Unmanaged
        }
    }

    /// Fills `len` bytes at `pa` (8-byte aligned, multiple of 8) with `byte`.
    fn fill(&self, pa: PhysAddr, len: u64, byte: u8) -> Result<(), MemError> {
        let word = u64::from_ne_bytes([byte; 8]);
        let mut off = 0;
        while off < len {
            let at = pa.checked_add(off).ok_or(MemError::OutOfRange(pa))?;
            self.store_u64(at, word)?;
            off += 8;
        }
        Ok(())
    }

    /// Zeroes one 4 KiB frame (`clear_page`).
    fn zero_frame(&self, frame: Frame) -> Result<(), MemError> {
        self.fill(frame.start(), PAGE_SIZE, 0)
    }

    /// Copies `len` bytes (8-byte aligned, multiple of 8) from `src` to `dst`,
    /// one atomic 64-bit word at a time (`memcpy` of entries that other CPUs
    /// may be rewriting concurrently, as `pgd_ctor` copies `swapper_pg_dir`).
    fn copy(&self, dst: PhysAddr, src: PhysAddr, len: u64) -> Result<(), MemError> {
        let mut off = 0;
        while off < len {
            let s = src.checked_add(off).ok_or(MemError::OutOfRange(src))?;
            let d = dst.checked_add(off).ok_or(MemError::OutOfRange(dst))?;
            self.store_u64(d, self.load_u64(s)?)?;
            off += 8;
        }
        Ok(())
    }

    /// The index of the first nonzero 64-bit word among `words` words at
    /// `pa` (8-byte aligned), or `None` if all are zero. Page-table code
    /// uses it to skip runs of empty entries (`pgd_none`) in one pass:
    /// exit looks at all 768 user entries of a 2-level pgd, of which a
    /// small task uses three. Each word is read atomically; the scan as a
    /// whole is not a snapshot.
    fn first_nonzero_u64(&self, pa: PhysAddr, words: usize) -> Result<Option<usize>, MemError> {
        for i in 0..words {
            let at = pa
                .checked_add(i as u64 * 8)
                .ok_or(MemError::OutOfRange(pa))?;
            if self.load_u64(at)? != 0 {
                return Ok(Some(i));
            }
        }
        Ok(None)
    }

    /// The index of the first 64-bit word among `words` words at `pa`
    /// (8-byte aligned) that is not `value`, or `None` if all are: the
    /// page allocator's poison check. Each word is read atomically.
    fn first_other_u64(
        &self,
        pa: PhysAddr,
        words: usize,
        value: u64,
    ) -> Result<Option<usize>, MemError> {
        for i in 0..words {
            let at = pa
                .checked_add(i as u64 * 8)
                .ok_or(MemError::OutOfRange(pa))?;
            if self.load_u64(at)? != value {
                return Ok(Some(i));
            }
        }
        Ok(None)
    }

    /// Reads `buf.len()` bytes (8-byte aligned, multiple of 8) starting at `pa`.
    fn read_into(&self, pa: PhysAddr, buf: &mut [u8]) -> Result<(), MemError> {
        for (i, chunk) in buf.chunks_exact_mut(8).enumerate() {
            let at = pa
                .checked_add(i as u64 * 8)
                .ok_or(MemError::OutOfRange(pa))?;
            chunk.copy_from_slice(&self.load_u64(at)?.to_le_bytes());
        }
        Ok(())
    }

    /// Writes `buf` (8-byte aligned, multiple of 8) starting at `pa`.
    fn write_from(&self, pa: PhysAddr, buf: &[u8]) -> Result<(), MemError> {
        for (i, chunk) in buf.chunks_exact(8).enumerate() {
            let at = pa
                .checked_add(i as u64 * 8)
                .ok_or(MemError::OutOfRange(pa))?;
            let mut w = [0u8; 8];
            w.copy_from_slice(chunk);
            self.store_u64(at, u64::from_le_bytes(w))?;
        }
        Ok(())
    }
}

/// The direct map: how the kernel turns a physical address into a pointer
/// it can hand to an object cache and back (`__va` / `__pa`).
///
/// Object caches deal in pointers; page tables in physical addresses. Any
/// memory that can be direct-mapped implements this, so the pgd caches can
/// live in it: the simulator's RAM (one contiguous mapping), or a Rust
/// kernel's own lowmem mapping.
pub trait DirectMap {
    /// `__va`: the pointer at which physical address `pa` is mapped.
    fn ptr_of(&self, pa: PhysAddr) -> Option<core::ptr::NonNull<u8>>;
    /// `__pa`: the physical address a direct-map pointer refers to.
    fn pa_of(&self, p: core::ptr::NonNull<u8>) -> Option<PhysAddr>;
    /// The direct map as one linear window, where the memory is mapped that
    /// way (see [`LinearMap`]); `None` by default.
    ///
    /// An implementation returns `Some` only where the window's pointers
    /// *are* the memory, as a kernel's lowmem mapping is: a 64-bit atomic
    /// store through the pointer of physical address `pa` is the store
    /// `store_u64(pa, ..)` makes (no write tracking, translation or
    /// checking in between). The pgd fast path relies on it to `set_pgd`
    /// through a pgd's own address, as a kernel does.
    fn linear(&self) -> Option<LinearMap> {
        None
    }
}

/// A direct map that is one linear window, as a kernel's lowmem mapping
/// is (`__pa(x)` is `x - PAGE_OFFSET`): a copy a hot path keeps, so `__pa`
/// is one subtraction and one bound, not calls through the memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinearMap {
    base: usize,
    len: u64,
}

impl LinearMap {
    /// The window of `len` bytes mapped from physical address 0 at `base`
    /// (clipped at the end of the address space: a window lies inside it).
    pub fn new(base: core::ptr::NonNull<u8>, len: u64) -> LinearMap {
        let base = base.as_ptr() as usize;
        // `base >= 1`, so the room left is at most `usize::MAX`.
        let room = (usize::MAX - base) as u64 + 1;
        LinearMap {
            base,
            len: len.min(room),
        }
    }

    /// `__pa`: the physical address of `p`, if it points into the window.
    ///
    /// One subtraction and one bound: below the window the subtraction
    /// wraps to at least `usize::MAX + 1 - base`, which is at least `len`
    /// because the window lies inside the address space (`base + len` does
    /// not pass its end), so the bound refuses it too.
    #[inline(always)]
    pub fn pa_of(&self, p: core::ptr::NonNull<u8>) -> Option<PhysAddr> {
        let off = (p.as_ptr() as usize).wrapping_sub(self.base) as u64;
        (off < self.len).then_some(PhysAddr::new(off))
    }

    /// `__pa` of a pointer its caller knows to lie in the window, as
    /// Linux's `__pa(x)` is `x - PAGE_OFFSET` with no check (outside
    /// `CONFIG_DEBUG_VIRTUAL`, which a debug build's assertion stands for
    /// here): one subtraction. For pointers placed in the window by
    /// construction, such as the objects of a cache whose every page came
    /// from this direct map; anything else takes [`pa_of`](Self::pa_of).
    /// A pointer outside the window gives a wrong address, never undefined
    /// behaviour.
    #[inline(always)]
    pub fn pa_of_mapped(&self, p: core::ptr::NonNull<u8>) -> PhysAddr {
        debug_assert!(self.pa_of(p).is_some(), "{p:p} is outside the direct map");
        PhysAddr::new((p.as_ptr() as usize).wrapping_sub(self.base) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::sync::atomic::{AtomicU64, Ordering};

    #[test]
    fn a_linear_map_refuses_what_lies_outside_its_window() {
        let mut ram = [0u8; 64];
        let p0 = ram.as_mut_ptr();
        let at = |i: usize| core::ptr::NonNull::new(p0.wrapping_add(i)).unwrap();
        let lin = LinearMap::new(at(16), 32);
        assert_eq!(lin.pa_of(at(16)), Some(PhysAddr::new(0)));
        assert_eq!(lin.pa_of(at(47)), Some(PhysAddr::new(31)));
        // Below the window (the subtraction wraps) and past its end.
        assert_eq!(lin.pa_of(at(15)), None);
        assert_eq!(lin.pa_of(at(0)), None);
        assert_eq!(lin.pa_of(at(48)), None);
        // A window cannot pass the end of the address space, so a pointer
        // below one that claims to is still refused.
        let top = core::ptr::NonNull::new(usize::MAX as *mut u8).unwrap();
        let huge = LinearMap::new(top, u64::MAX);
        assert_eq!(huge.pa_of(top), Some(PhysAddr::new(0)));
        assert_eq!(huge.pa_of(at(0)), None);
        // Inside the window the unchecked `__pa` agrees with the checked one.
        for i in 16..48 {
            assert_eq!(lin.pa_of(at(i)), Some(lin.pa_of_mapped(at(i))));
        }
    }

    /// 64 bytes of memory that uses every default method of [`PhysMem`].
    struct Words([AtomicU64; 8]);

    impl PhysMem for Words {
        fn size(&self) -> u64 {
            64
        }
        fn load_u32(&self, pa: PhysAddr) -> Result<u32, MemError> {
            Ok(self.load_u64(PhysAddr::new(pa.as_u64() & !7))? as u32)
        }
        fn load_u64(&self, pa: PhysAddr) -> Result<u64, MemError> {
            let w = self.0.get(pa.as_u64() as usize / 8);
            w.map(|w| w.load(Ordering::Acquire))
                .ok_or(MemError::OutOfRange(pa))
        }
        fn store_u32(&self, pa: PhysAddr, v: u32) -> Result<(), MemError> {
            self.store_u64(PhysAddr::new(pa.as_u64() & !7), u64::from(v))
        }
        fn store_u64(&self, pa: PhysAddr, v: u64) -> Result<(), MemError> {
            let w = self.0.get(pa.as_u64() as usize / 8);
            w.map(|w| w.store(v, Ordering::Release))
                .ok_or(MemError::OutOfRange(pa))
        }
    }

    #[test]
    fn the_default_store_u64s_is_all_or_none() {
        let m = Words(Default::default());
        m.store_u64s(PhysAddr::new(8), &[1, 2, 3]).unwrap();
        assert_eq!(m.load_u64(PhysAddr::new(24)).unwrap(), 3);
        // The last word would fall outside: refused before the first store.
        assert_eq!(
            m.store_u64s(PhysAddr::new(48), &[9, 9, 9]),
            Err(MemError::OutOfRange(PhysAddr::new(48)))
        );
        assert_eq!(m.load_u64(PhysAddr::new(48)).unwrap(), 0);
        assert_eq!(
            m.store_u64s(PhysAddr::new(4), &[9]),
            Err(MemError::Misaligned(PhysAddr::new(4)))
        );
        assert_eq!(
            m.store_u64s(PhysAddr::new(u64::MAX - 7), &[9, 9]),
            Err(MemError::OutOfRange(PhysAddr::new(u64::MAX - 7)))
        );
        m.store_u64s(PhysAddr::new(64), &[]).unwrap();
    }
}
