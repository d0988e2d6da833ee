//! A kernel's direct-mapped physical memory (`lowmem`), `no_std`.
//!
//! A kernel maps the bottom of physical memory linearly: physical address
//! `pa` lives at virtual address `PAGE_OFFSET + pa`, which is what `__va`
//! computes and `__pa` undoes. [`Lowmem`] is that mapping as a [`PhysMem`]
//! and a [`DirectMap`]: a Rust kernel that wants to run the pgd system on
//! its own memory constructs one over its direct map; the simulator's
//! [`Ram`](crate::Ram) is a `Lowmem` over an anonymous host mapping.
//!
//! Every access goes through atomics. A page-table page may be read by one
//! CPU's walker while another CPU rewrites an entry (that is what
//! `pgd_list` propagation does), and under a buggy scheme a freed table
//! frame can still be walked: neither may be undefined behaviour in Rust, so
//! no access relies on exclusive ownership of a frame.

use crate::addr::PhysAddr;
use crate::mem::{DirectMap, MemError, PhysMem};
use core::ptr::NonNull;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// Directly mapped physical memory `0..len` at `base` (`__va(0)`).
#[derive(Debug)]
pub struct Lowmem {
    base: NonNull<u8>,
    len: u64,
}

// SAFETY: `Lowmem` is a view of memory that `new`'s caller guarantees stays
// valid and is only accessed atomically; sharing `&Lowmem` across threads
// cannot create a data race.
unsafe impl Send for Lowmem {}
// SAFETY: as above; no `&mut` to the bytes is ever handed out.
unsafe impl Sync for Lowmem {}

impl Lowmem {
    /// Physical memory `0..len` mapped at `base`.
    ///
    /// # Safety
    /// `base..base + len` must be valid for reads and writes, 8-byte
    /// aligned, for as long as the `Lowmem` (and anything built on it) is
    /// used, and must only be accessed atomically by anyone else meanwhile
    /// (a kernel's direct map that only page-table code touches qualifies).
    pub unsafe fn new(base: NonNull<u8>, len: u64) -> Self {
        Lowmem { base, len }
    }

    /// Address of the first byte (`__va(0)`).
    pub fn base(&self) -> NonNull<u8> {
        self.base
    }

    /// `__va`: the mapped address of physical address `pa`.
    pub fn ptr_of(&self, pa: PhysAddr) -> Option<NonNull<u8>> {
        if pa.as_u64() >= self.len {
            return None;
        }
        // A region inside the address space has `len <= usize::MAX`, so this
        // never fails for `pa < len`; checked anyway rather than truncated
        // (a 32-bit PAE kernel's physical addresses are wider than `usize`).
        let off = usize::try_from(pa.as_u64()).ok()?;
        // SAFETY: `pa < len`, so the offset stays inside the region.
        Some(unsafe { self.base.add(off) })
    }

    /// `__pa`: the physical address of mapped pointer `p`, if it points
    /// into the region.
    pub fn pa_of(&self, p: NonNull<u8>) -> Option<PhysAddr> {
        let off = (p.as_ptr() as usize).checked_sub(self.base.as_ptr() as usize)?;
        if (off as u64) < self.len {
            Some(PhysAddr::new(off as u64))
        } else {
            None
        }
    }

    #[inline]
    fn checked<T>(&self, pa: PhysAddr) -> Result<*mut T, MemError> {
        let width = core::mem::size_of::<T>() as u64;
        if !pa.is_aligned(width) {
            return Err(MemError::Misaligned(pa));
        }
        let off = match pa.as_u64().checked_add(width) {
            Some(end) if end <= self.len => usize::try_from(pa.as_u64()),
            _ => return Err(MemError::OutOfRange(pa)),
        }
        .map_err(|_| MemError::OutOfRange(pa))?;
        // SAFETY: bounds checked just above (`pa + width <= len`).
        Ok(unsafe { self.base.as_ptr().add(off) }.cast::<T>())
    }
}

impl PhysMem for Lowmem {
    fn size(&self) -> u64 {
        self.len
    }

    #[inline]
    fn load_u32(&self, pa: PhysAddr) -> Result<u32, MemError> {
        let p = self.checked::<u32>(pa)?;
        // SAFETY: `p` is in bounds, 4-byte aligned, valid for the life of
        // `self`, and only ever accessed atomically (`new`'s contract).
        Ok(unsafe { AtomicU32::from_ptr(p) }.load(Ordering::Acquire))
    }

    fn first_nonzero_u64(&self, pa: PhysAddr, words: usize) -> Result<Option<usize>, MemError> {
        self.first_other_u64(pa, words, 0)
    }

    fn first_other_u64(
        &self,
        pa: PhysAddr,
        words: usize,
        value: u64,
    ) -> Result<Option<usize>, MemError> {
        if words == 0 {
            return Ok(None);
        }
        // Bounds of the whole run checked once: the first and the last word.
        let first = self.checked::<u64>(pa)?;
        let last = (words as u64 - 1)
            .checked_mul(8)
            .and_then(|off| pa.checked_add(off))
            .ok_or(MemError::OutOfRange(pa))?;
        self.checked::<u64>(last)?;
        let load = |i: usize| {
            // SAFETY: every caller below passes `i < words`, so
            // `first.add(i)` is in `first..=last`, which is in bounds and
            // 8-byte aligned (checked above), and only ever accessed
            // atomically (`new`'s contract).
            unsafe { AtomicU64::from_ptr(first.add(i)) }.load(Ordering::Relaxed)
        };
        // Eight words per branch: an empty run (most of a pgd's user part)
        // costs loads and ORs, not a compare and a jump per word. Each word
        // is read once, so the answer is a word that differed when read.
        const BLOCK: usize = 8;
        let mut at = 0;
        while at + BLOCK <= words {
            let block: [u64; BLOCK] = core::array::from_fn(|k| load(at + k));
            if block.iter().fold(0, |acc, &w| acc | (w ^ value)) != 0 {
                return Ok(block.iter().position(|&w| w != value).map(|k| at + k));
            }
            at += BLOCK;
        }
        Ok((at..words).find(|&i| load(i) != value))
    }

    #[inline]
    fn load_u64(&self, pa: PhysAddr) -> Result<u64, MemError> {
        let p = self.checked::<u64>(pa)?;
        // SAFETY: in bounds, 8-byte aligned, only accessed atomically.
        Ok(unsafe { AtomicU64::from_ptr(p) }.load(Ordering::Acquire))
    }

    #[inline]
    fn store_u32(&self, pa: PhysAddr, v: u32) -> Result<(), MemError> {
        let p = self.checked::<u32>(pa)?;
        // SAFETY: in bounds, 4-byte aligned, only accessed atomically.
        unsafe { AtomicU32::from_ptr(p) }.store(v, Ordering::Release);
        Ok(())
    }

    #[inline]
    fn store_u64(&self, pa: PhysAddr, v: u64) -> Result<(), MemError> {
        let p = self.checked::<u64>(pa)?;
        // SAFETY: in bounds, 8-byte aligned, only accessed atomically.
        unsafe { AtomicU64::from_ptr(p) }.store(v, Ordering::Release);
        Ok(())
    }

    #[inline]
    fn store_u64s(&self, pa: PhysAddr, words: &[u64]) -> Result<(), MemError> {
        let Some(last) = words.len().checked_sub(1) else {
            return Ok(());
        };
        let first = self.checked::<u64>(pa)?;
        let end = pa
            .checked_add(last as u64 * 8)
            .ok_or(MemError::OutOfRange(pa))?;
        self.checked::<u64>(end)?;
        for (i, &w) in words.iter().enumerate() {
            // SAFETY: the first and last words were bounds- and
            // alignment-checked above, so every word between is in range;
            // all accesses are atomic (`new`'s contract).
            unsafe { AtomicU64::from_ptr(first.add(i)) }.store(w, Ordering::Release);
        }
        Ok(())
    }

    fn fill(&self, pa: PhysAddr, len: u64, byte: u8) -> Result<(), MemError> {
        if len == 0 {
            return Ok(());
        }
        let first = self.checked::<u64>(pa)?;
        let last = pa.checked_add(len - 8).ok_or(MemError::OutOfRange(pa))?;
        self.checked::<u64>(last)?;
        let word = u64::from_ne_bytes([byte; 8]);
        for i in 0..(len / 8) as usize {
            // SAFETY: first..=last were bounds- and alignment-checked above;
            // all accesses are atomic (`new`'s contract).
            unsafe { AtomicU64::from_ptr(first.add(i)) }.store(word, Ordering::Relaxed);
        }
        core::sync::atomic::fence(Ordering::Release);
        Ok(())
    }

    fn copy(&self, dst: PhysAddr, src: PhysAddr, len: u64) -> Result<(), MemError> {
        if len == 0 {
            return Ok(());
        }
        let s = self.checked::<u64>(src)?;
        let d = self.checked::<u64>(dst)?;
        self.checked::<u64>(src.checked_add(len - 8).ok_or(MemError::OutOfRange(src))?)?;
        self.checked::<u64>(dst.checked_add(len - 8).ok_or(MemError::OutOfRange(dst))?)?;
        core::sync::atomic::fence(Ordering::Acquire);
        for i in 0..(len / 8) as usize {
            // SAFETY: both ranges were bounds- and alignment-checked above;
            // every access is atomic (`new`'s contract).
            let w = unsafe { AtomicU64::from_ptr(s.add(i)) }.load(Ordering::Relaxed);
            // SAFETY: as above.
            unsafe { AtomicU64::from_ptr(d.add(i)) }.store(w, Ordering::Relaxed);
        }
        core::sync::atomic::fence(Ordering::Release);
        Ok(())
    }
}

impl DirectMap for Lowmem {
    fn ptr_of(&self, pa: PhysAddr) -> Option<NonNull<u8>> {
        Lowmem::ptr_of(self, pa)
    }
    fn pa_of(&self, p: NonNull<u8>) -> Option<PhysAddr> {
        Lowmem::pa_of(self, p)
    }
    fn linear(&self) -> Option<crate::mem::LinearMap> {
        Some(crate::mem::LinearMap::new(self.base, self.len))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    #[test]
    fn a_kernel_region_as_physical_memory() {
        // A "direct map" of 64 KiB: any 8-byte aligned buffer will do.
        let mut buf = vec![0u64; 8192];
        let base = NonNull::new(buf.as_mut_ptr().cast::<u8>()).unwrap();
        // SAFETY: `buf` outlives `mem` and is only used through `mem`.
        let mem = unsafe { Lowmem::new(base, 65536) };
        assert_eq!(mem.size(), 65536);
        mem.store_u64(PhysAddr::new(0x1000), 0x1234_0000_0000_0063)
            .unwrap();
        assert_eq!(mem.load_u32(PhysAddr::new(0x1000)).unwrap(), 0x63);
        assert_eq!(
            mem.load_u64(PhysAddr::new(0x1002)),
            Err(MemError::Misaligned(PhysAddr::new(0x1002)))
        );
        assert!(matches!(
            mem.store_u32(PhysAddr::new(65536), 0),
            Err(MemError::OutOfRange(_))
        ));
        mem.fill(PhysAddr::new(0x2000), 4096, 0x6b).unwrap();
        mem.copy(PhysAddr::new(0x3000), PhysAddr::new(0x2000), 4096)
            .unwrap();
        assert_eq!(
            mem.load_u64(PhysAddr::new(0x3ff8)).unwrap(),
            0x6b6b_6b6b_6b6b_6b6b
        );
        let p = mem.ptr_of(PhysAddr::new(0x1000)).unwrap();
        assert_eq!(mem.pa_of(p), Some(PhysAddr::new(0x1000)));
        assert_eq!(mem.ptr_of(PhysAddr::new(65536)), None);
        // The linear window agrees with `pa_of` inside and at both edges.
        let lin = DirectMap::linear(&mem).unwrap();
        for pa in [0u64, 0x1000, 65535] {
            let p = mem.ptr_of(PhysAddr::new(pa)).unwrap();
            assert_eq!(lin.pa_of(p), Some(PhysAddr::new(pa)));
        }
        let past = NonNull::new(base.as_ptr().wrapping_add(65536)).unwrap();
        let before = NonNull::new(base.as_ptr().wrapping_sub(1)).unwrap();
        assert_eq!((lin.pa_of(past), mem.pa_of(past)), (None, None));
        assert_eq!((lin.pa_of(before), mem.pa_of(before)), (None, None));
        // store_u64s: all or none, the whole range checked first.
        mem.store_u64s(PhysAddr::new(0x4000), &[1, 2, 3]).unwrap();
        assert_eq!(mem.load_u64(PhysAddr::new(0x4010)).unwrap(), 3);
        let near_end = PhysAddr::new(65536 - 16);
        assert_eq!(
            mem.store_u64s(near_end, &[7, 7, 7]),
            Err(MemError::OutOfRange(PhysAddr::new(65536)))
        );
        assert_eq!(mem.load_u64(near_end).unwrap(), 0, "nothing written");
        assert_eq!(
            mem.store_u64s(PhysAddr::new(0x4004), &[1]),
            Err(MemError::Misaligned(PhysAddr::new(0x4004)))
        );
        mem.store_u64s(near_end, &[]).unwrap();
        let _ = mem;
        assert_eq!(buf[0x1000 / 8], 0x1234_0000_0000_0063);
    }
}
