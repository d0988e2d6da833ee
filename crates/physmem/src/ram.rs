//! Simulated RAM: one contiguous anonymous mapping.
//!
//! Guest-physical address `pa` lives at host address `base + pa`, which is
//! the simulator's `__va`; [`Ram::pa_of`] is its `__pa`. The mapping is an
//! anonymous `mmap`, so untouched RAM costs nothing, and the same region can
//! be handed to KVM as guest memory or written out as an image for QEMU.
//!
//! Every access goes through atomics. The kernel may `memcpy` a frame it owns
//! exclusively, but in this simulator a *buggy* scheme can leave another CPU
//! walking a table frame that was freed and reused: that is the very bug the
//! checker reports, and it must not also be undefined behaviour in Rust. So
//! the "exclusive ownership" argument that would justify plain `memcpy` is
//! exactly the one we cannot make, and we do not.

use crate::addr::PhysAddr;
use crate::mem::{MemError, PhysMem};
use core::ptr::NonNull;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use memmap2::MmapMut;

/// Smallest RAM the simulator accepts (16 MiB).
pub const MIN_RAM: u64 = 16 << 20;
/// Largest RAM the simulator accepts (4 GiB).
pub const MAX_RAM: u64 = 4 << 30;

/// Why RAM could not be created.
#[derive(Debug)]
pub enum RamError {
    /// The size is outside `MIN_RAM..=MAX_RAM` or not a multiple of 4 MiB.
    BadSize(u64),
    /// The host refused the mapping.
    Map(std::io::Error),
}

impl core::fmt::Display for RamError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            RamError::BadSize(s) => write!(
                f,
                "RAM size {s} bytes is not allowed: it must be between 16 MiB and 4 GiB and a multiple of 4 MiB"
            ),
            RamError::Map(e) => write!(f, "cannot map simulated RAM: {e}"),
        }
    }
}

impl std::error::Error for RamError {}

/// Contiguous simulated physical memory starting at physical address 0.
pub struct Ram {
    map: MmapMut,
    base: NonNull<u8>,
    len: u64,
}

// SAFETY: `Ram` owns its mapping; every access to the mapped bytes goes
// through atomic operations (see the module docs), so sharing `&Ram` across
// threads cannot create a data race.
unsafe impl Send for Ram {}
// SAFETY: as above; no `&mut` to the bytes is ever handed out.
unsafe impl Sync for Ram {}

impl Ram {
    /// Maps `size` bytes of zeroed RAM.
    pub fn new(size: u64) -> Result<Self, RamError> {
        if !(MIN_RAM..=MAX_RAM).contains(&size) || size % (4 << 20) != 0 {
            return Err(RamError::BadSize(size));
        }
        let len = usize::try_from(size).map_err(|_| RamError::BadSize(size))?;
        let mut map = MmapMut::map_anon(len).map_err(RamError::Map)?;
        let base = NonNull::new(map.as_mut_ptr())
            .ok_or_else(|| RamError::Map(std::io::Error::other("mmap returned a null pointer")))?;
        Ok(Ram {
            map,
            base,
            len: size,
        })
    }

    /// Host address of the first byte of RAM (to register with KVM).
    pub fn host_base(&self) -> NonNull<u8> {
        self.base
    }

    /// The simulator's `__va`: host address of physical address `pa`.
    pub fn ptr_of(&self, pa: PhysAddr) -> Option<NonNull<u8>> {
        if pa.as_u64() >= self.len {
            return None;
        }
        // SAFETY: `pa < len`, so the offset stays inside the mapping.
        Some(unsafe { self.base.add(pa.as_u64() as usize) })
    }

    /// The simulator's `__pa`: physical address of host pointer `p`, if it
    /// points into RAM.
    pub fn pa_of(&self, p: NonNull<u8>) -> Option<PhysAddr> {
        let off = (p.as_ptr() as usize).checked_sub(self.base.as_ptr() as usize)?;
        if (off as u64) < self.len {
            Some(PhysAddr::new(off as u64))
        } else {
            None
        }
    }

    fn checked<T>(&self, pa: PhysAddr) -> Result<*mut T, MemError> {
        let width = core::mem::size_of::<T>() as u64;
        if !pa.is_aligned(width) {
            return Err(MemError::Misaligned(pa));
        }
        match pa.as_u64().checked_add(width) {
            Some(end) if end <= self.len => {}
            _ => return Err(MemError::OutOfRange(pa)),
        }
        let _ = &self.map;
        // SAFETY: bounds checked just above.
        Ok(unsafe { self.base.as_ptr().add(pa.as_u64() as usize) }.cast::<T>())
    }
}

impl PhysMem for Ram {
    fn size(&self) -> u64 {
        self.len
    }

    fn load_u32(&self, pa: PhysAddr) -> Result<u32, MemError> {
        let p = self.checked::<u32>(pa)?;
        // SAFETY: `p` is in bounds, 4-byte aligned, valid for the life of
        // `self`, and only ever accessed atomically (module invariant).
        Ok(unsafe { AtomicU32::from_ptr(p) }.load(Ordering::Acquire))
    }

    fn load_u64(&self, pa: PhysAddr) -> Result<u64, MemError> {
        let p = self.checked::<u64>(pa)?;
        // SAFETY: in bounds, 8-byte aligned, only accessed atomically.
        Ok(unsafe { AtomicU64::from_ptr(p) }.load(Ordering::Acquire))
    }

    fn store_u32(&self, pa: PhysAddr, v: u32) -> Result<(), MemError> {
        let p = self.checked::<u32>(pa)?;
        // SAFETY: in bounds, 4-byte aligned, only accessed atomically.
        unsafe { AtomicU32::from_ptr(p) }.store(v, Ordering::Release);
        Ok(())
    }

    fn store_u64(&self, pa: PhysAddr, v: u64) -> Result<(), MemError> {
        let p = self.checked::<u64>(pa)?;
        // SAFETY: in bounds, 8-byte aligned, only accessed atomically.
        unsafe { AtomicU64::from_ptr(p) }.store(v, Ordering::Release);
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
            // all accesses are atomic (module invariant).
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
            // every access is atomic (module invariant).
            let w = unsafe { AtomicU64::from_ptr(s.add(i)) }.load(Ordering::Relaxed);
            // SAFETY: as above.
            unsafe { AtomicU64::from_ptr(d.add(i)) }.store(w, Ordering::Relaxed);
        }
        core::sync::atomic::fence(Ordering::Release);
        Ok(())
    }
}

impl crate::mem::DirectMap for Ram {
    fn ptr_of(&self, pa: PhysAddr) -> Option<NonNull<u8>> {
        Ram::ptr_of(self, pa)
    }
    fn pa_of(&self, p: NonNull<u8>) -> Option<PhysAddr> {
        Ram::pa_of(self, p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_checked() {
        assert!(matches!(Ram::new(1 << 20), Err(RamError::BadSize(_))));
        assert!(matches!(Ram::new(8 << 30), Err(RamError::BadSize(_))));
        assert!(matches!(
            Ram::new((16 << 20) + 4096),
            Err(RamError::BadSize(_))
        ));
        assert!(Ram::new(16 << 20).is_ok());
    }

    #[test]
    fn load_store_and_bounds() {
        let ram = Ram::new(MIN_RAM).unwrap();
        let pa = PhysAddr::new(0x1000);
        ram.store_u64(pa, 0xdead_beef_0000_0001).unwrap();
        assert_eq!(ram.load_u64(pa).unwrap(), 0xdead_beef_0000_0001);
        assert_eq!(ram.load_u32(pa).unwrap(), 1);
        assert_eq!(
            ram.load_u64(PhysAddr::new(0x1004)),
            Err(MemError::Misaligned(PhysAddr::new(0x1004)))
        );
        assert!(matches!(
            ram.load_u64(PhysAddr::new(MIN_RAM)),
            Err(MemError::OutOfRange(_))
        ));
        ram.fill(PhysAddr::new(0x2000), 4096, 0x6b).unwrap();
        ram.copy(PhysAddr::new(0x3000), PhysAddr::new(0x2000), 4096)
            .unwrap();
        assert_eq!(ram.load_u32(PhysAddr::new(0x3ffc)).unwrap(), 0x6b6b_6b6b);
        let p = ram.ptr_of(pa).unwrap();
        assert_eq!(ram.pa_of(p), Some(pa));
    }
}
