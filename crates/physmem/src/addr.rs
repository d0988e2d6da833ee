//! Typed addresses and page frames.
//!
//! A physical address, a virtual address and a page frame number are three
//! different things in the kernel (`__pa`, `__va`, `page_to_pfn`), and mixing
//! them up is the classic page-table bug. Here each is its own type, so the
//! compiler refuses `PhysAddr + VirtAddr`; conversions are explicit and named.

use core::fmt;

/// log2 of the base page size.
pub const PAGE_SHIFT: u32 = 12;
/// The base page size, 4 KiB on every x86 paging mode.
pub const PAGE_SIZE: u64 = 1 << PAGE_SHIFT;
/// Mask selecting the offset within a base page.
pub const PAGE_MASK: u64 = PAGE_SIZE - 1;

/// A guest-physical address (what CR3 and page-table entries hold).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct PhysAddr(u64);

/// A linear (virtual) address as the CPU presents it to the MMU.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct VirtAddr(u64);

/// A 4 KiB page frame, named by its page frame number (pfn).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Frame(u64);

impl PhysAddr {
    /// Wraps a raw physical address.
    pub const fn new(addr: u64) -> Self {
        PhysAddr(addr)
    }
    /// The raw value.
    pub const fn as_u64(self) -> u64 {
        self.0
    }
    /// The frame containing this address.
    pub const fn frame(self) -> Frame {
        Frame(self.0 >> PAGE_SHIFT)
    }
    /// Offset within the 4 KiB page.
    pub const fn page_offset(self) -> u64 {
        self.0 & PAGE_MASK
    }
    /// `self + off`, or `None` on overflow.
    pub const fn checked_add(self, off: u64) -> Option<Self> {
        match self.0.checked_add(off) {
            Some(v) => Some(PhysAddr(v)),
            None => None,
        }
    }
    /// True if aligned to `align` (a power of two).
    pub const fn is_aligned(self, align: u64) -> bool {
        self.0 & (align - 1) == 0
    }
}

impl VirtAddr {
    /// Wraps a raw linear address.
    pub const fn new(addr: u64) -> Self {
        VirtAddr(addr)
    }
    /// The raw value.
    pub const fn as_u64(self) -> u64 {
        self.0
    }
    /// `self + off`, or `None` on overflow.
    pub const fn checked_add(self, off: u64) -> Option<Self> {
        match self.0.checked_add(off) {
            Some(v) => Some(VirtAddr(v)),
            None => None,
        }
    }
    /// True if aligned to `align` (a power of two).
    pub const fn is_aligned(self, align: u64) -> bool {
        self.0 & (align - 1) == 0
    }
}

impl Frame {
    /// The frame with page frame number `pfn`.
    pub const fn from_pfn(pfn: u64) -> Self {
        Frame(pfn)
    }
    /// The frame containing `pa`.
    pub const fn containing(pa: PhysAddr) -> Self {
        pa.frame()
    }
    /// The page frame number.
    pub const fn pfn(self) -> u64 {
        self.0
    }
    /// The physical address of the first byte of the frame.
    pub const fn start(self) -> PhysAddr {
        PhysAddr(self.0 << PAGE_SHIFT)
    }
    /// The frame `n` frames further on.
    pub const fn add(self, n: u64) -> Self {
        Frame(self.0 + n)
    }
}

impl fmt::Debug for PhysAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PhysAddr({:#x})", self.0)
    }
}
impl fmt::Display for PhysAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}
impl fmt::Debug for VirtAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VirtAddr({:#x})", self.0)
    }
}
impl fmt::Display for VirtAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}
impl fmt::Debug for Frame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Frame(pfn {:#x})", self.0)
    }
}
impl fmt::Display for Frame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pfn {:#x}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_round_trip() {
        let pa = PhysAddr::new(0x1234_5678);
        assert_eq!(pa.frame().pfn(), 0x12345);
        assert_eq!(pa.frame().start(), PhysAddr::new(0x1234_5000));
        assert_eq!(pa.page_offset(), 0x678);
        assert!(PhysAddr::new(0x2000).is_aligned(PAGE_SIZE));
        assert!(!PhysAddr::new(0x2010).is_aligned(32));
        assert_eq!(PhysAddr::new(u64::MAX).checked_add(1), None);
    }
}
