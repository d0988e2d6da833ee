//! A page-table image as physical memory for our walker.
//!
//! The oracle is handed an [`oracle::PagingImage`]: a few ranges of guest
//! physical memory plus control registers. To compare like with like, our
//! walker must read the *same bytes*, not the simulator's RAM they were cut
//! from. [`ImageMem`] serves the image's ranges through [`PhysMem`]; reads
//! outside every range fail with [`MemError::OutOfRange`] (the walker turns
//! that into a "table outside RAM" fault), and stores are refused (an image
//! is read-only; the walker never stores). [`cpu_from_image`] rebuilds the
//! walker's [`CpuState`] from the image's CR0/CR3/CR4/EFER.

use oracle::image::{ImageDesc, CR0_WP, CR4_PGE, CR4_PSE, CR4_SMAP, CR4_SMEP, EFER_NXE};
use oracle::PagingImage;
use physmem::{MemError, PhysAddr, PhysMem};
use x86paging::{CpuState, PagingMode};

/// The ranges of a [`PagingImage`], readable as physical memory.
#[derive(Clone, Debug)]
pub struct ImageMem {
    /// `(gpa, bytes)`, sorted by `gpa`, non-overlapping.
    ranges: Vec<(u64, Vec<u8>)>,
    size: u64,
}

impl ImageMem {
    /// Copies the ranges of `img`.
    pub fn new(img: &PagingImage) -> Self {
        let mut ranges = img.data.clone();
        ranges.sort_by_key(|r| r.0);
        let size = ranges
            .iter()
            .map(|(g, b)| g.saturating_add(b.len() as u64))
            .max()
            .unwrap_or(0);
        ImageMem { ranges, size }
    }

    fn bytes<const N: usize>(&self, pa: PhysAddr) -> Result<[u8; N], MemError> {
        let a = pa.as_u64();
        if !a.is_multiple_of(N as u64) {
            return Err(MemError::Misaligned(pa));
        }
        let i = self.ranges.partition_point(|r| r.0 <= a);
        let (gpa, data) = i
            .checked_sub(1)
            .and_then(|i| self.ranges.get(i))
            .ok_or(MemError::OutOfRange(pa))?;
        let off = usize::try_from(a - gpa).map_err(|_| MemError::OutOfRange(pa))?;
        data.get(off..off + N)
            .and_then(|s| s.try_into().ok())
            .ok_or(MemError::OutOfRange(pa))
    }
}

impl PhysMem for ImageMem {
    fn size(&self) -> u64 {
        self.size
    }
    fn load_u32(&self, pa: PhysAddr) -> Result<u32, MemError> {
        self.bytes::<4>(pa).map(u32::from_le_bytes)
    }
    fn load_u64(&self, pa: PhysAddr) -> Result<u64, MemError> {
        self.bytes::<8>(pa).map(u64::from_le_bytes)
    }
    fn store_u32(&self, pa: PhysAddr, _v: u32) -> Result<(), MemError> {
        Err(MemError::OutOfRange(pa))
    }
    fn store_u64(&self, pa: PhysAddr, _v: u64) -> Result<(), MemError> {
        Err(MemError::OutOfRange(pa))
    }
}

/// The walker's CPU state for an image: mode and CR3 from the image, WP from
/// CR0, PSE/PGE/SMEP/SMAP from CR4, NXE from EFER. The image does not record
/// MAXPHYADDR: `maxphyaddr` overrides [`CpuState::new`]'s default (40 on
/// the 32-bit modes, 46 on the 64-bit ones). 1 GiB pages are supported.
pub fn cpu_from_image(desc: &ImageDesc, maxphyaddr: Option<u32>) -> CpuState {
    let mode = crate::walker_mode(desc.mode);
    let cr3 = match mode {
        PagingMode::TwoLevel => desc.cr3 & 0xffff_f000,
        PagingMode::Pae => desc.cr3 & 0xffff_ffe0,
        _ => desc.cr3 & 0x000f_ffff_ffff_f000,
    };
    let base = CpuState::new(mode, PhysAddr::new(cr3));
    CpuState {
        wp: desc.cr0 & CR0_WP != 0,
        pse: desc.cr4 & CR4_PSE != 0,
        pge: desc.cr4 & CR4_PGE != 0,
        nxe: desc.efer & EFER_NXE != 0,
        smep: desc.cr4 & CR4_SMEP != 0,
        smap: desc.cr4 & CR4_SMAP != 0,
        maxphyaddr: maxphyaddr.unwrap_or(base.maxphyaddr),
        ..base
    }
}
