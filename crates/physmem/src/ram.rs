//! Simulated RAM: one contiguous anonymous mapping.
//!
//! Guest-physical address `pa` lives at host address `base + pa`, which is
//! the simulator's `__va`; [`Ram::pa_of`] is its `__pa`. The mapping is an
//! anonymous `mmap`, so untouched RAM costs nothing, and the same region can
//! be handed to KVM as guest memory or written out as an image for QEMU.
//!
//! The accesses themselves are [`Lowmem`]'s (atomic, see there): `Ram` only
//! owns the mapping. Every access goes through atomics. The kernel may
//! `memcpy` a frame it owns exclusively, but in this simulator a *buggy*
//! scheme can leave another CPU walking a table frame that was freed and
//! reused: that is the very bug the checker reports, and it must not also be
//! undefined behaviour in Rust.

use crate::addr::PhysAddr;
use crate::lowmem::Lowmem;
use crate::mem::{MemError, PhysMem};
use core::ptr::NonNull;
use memmap2::MmapMut;

/// Smallest RAM the simulator accepts (16 MiB).
pub const MIN_RAM: u64 = 16 << 20;
/// Largest RAM the simulator accepts (4 GiB).
pub const MAX_RAM: u64 = 4 << 30;

/// Why RAM could not be created.
#[derive(Debug, thiserror::Error)]
pub enum RamError {
    /// The size is outside `MIN_RAM..=MAX_RAM` or not a multiple of 4 MiB.
    #[error("RAM size {0} bytes is not allowed: it must be between 16 MiB and 4 GiB and a multiple of 4 MiB")]
    BadSize(u64),
    /// The host refused the mapping.
    #[error("cannot map simulated RAM: {0}")]
    Map(#[source] std::io::Error),
}

/// Contiguous simulated physical memory starting at physical address 0: a
/// [`Lowmem`] over an anonymous host mapping that it owns.
pub struct Ram {
    /// Keeps the mapping alive (and unmaps it on drop).
    _map: MmapMut,
    mem: Lowmem,
}

impl Ram {
    /// Maps `size` bytes of zeroed RAM.
    pub fn new(size: u64) -> Result<Self, RamError> {
        if !(MIN_RAM..=MAX_RAM).contains(&size) || !size.is_multiple_of(4 << 20) {
            return Err(RamError::BadSize(size));
        }
        let len = usize::try_from(size).map_err(|_| RamError::BadSize(size))?;
        let mut map = MmapMut::map_anon(len).map_err(RamError::Map)?;
        let base = NonNull::new(map.as_mut_ptr())
            .ok_or_else(|| RamError::Map(std::io::Error::other("mmap returned a null pointer")))?;
        // SAFETY: the mapping is `len` bytes, page-aligned, lives as long as
        // `Ram` (it is stored beside the view and dropped with it), and is
        // only ever accessed through the view, atomically.
        let mem = unsafe { Lowmem::new(base, size) };
        Ok(Ram { _map: map, mem })
    }

    /// Host address of the first byte of RAM (to register with KVM).
    pub fn host_base(&self) -> NonNull<u8> {
        self.mem.base()
    }

    /// The simulator's `__va`: host address of physical address `pa`.
    #[inline]
    pub fn ptr_of(&self, pa: PhysAddr) -> Option<NonNull<u8>> {
        self.mem.ptr_of(pa)
    }

    /// The simulator's `__pa`: physical address of host pointer `p`, if it
    /// points into RAM.
    #[inline]
    pub fn pa_of(&self, p: NonNull<u8>) -> Option<PhysAddr> {
        self.mem.pa_of(p)
    }
}

impl PhysMem for Ram {
    forward_phys_mem!(mem);
}

impl crate::mem::DirectMap for Ram {
    #[inline]
    fn ptr_of(&self, pa: PhysAddr) -> Option<NonNull<u8>> {
        self.mem.ptr_of(pa)
    }
    #[inline]
    fn pa_of(&self, p: NonNull<u8>) -> Option<PhysAddr> {
        self.mem.pa_of(p)
    }
    fn linear(&self) -> Option<crate::mem::LinearMap> {
        crate::mem::DirectMap::linear(&self.mem)
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
