//! Small hand-built page-table images with known translations, one per mode.
//!
//! Each sample writes raw entry bits (no helper from any other crate), so the
//! expected answers are independent of pgdcache's own walker. They exercise
//! the interesting corners of each mode: PSE and PSE-36 in 2-level; a
//! non-page-aligned CR3, a page directory above 4 GiB and 2 MiB pages in PAE;
//! 2 MiB and 1 GiB pages, NX and the upper half in 4-level; LA57 with
//! bit-48+ addresses in 5-level. Tests and `pgdcache oracle` self-checks use
//! them.

use crate::image::{PagingImage, PagingMode, CR4_LA57, CR4_PAE, CR4_PSE};

/// Present.
pub const P: u64 = 1;
/// Writable.
pub const RW: u64 = 1 << 1;
/// User.
pub const US: u64 = 1 << 2;
/// Large page (PS).
pub const PS: u64 = 1 << 7;
/// Global.
pub const G: u64 = 1 << 8;
/// Execute-disable.
pub const NX: u64 = 1 << 63;

/// A sample image and the translations it must produce.
pub struct Sample {
    /// The image.
    pub image: PagingImage,
    /// `(va, expected gpa)`; `None` means unmapped.
    pub expect: Vec<(u64, Option<u64>)>,
    /// Expected `(va, pa, size)` of every mapping, in va order.
    pub mappings: Vec<(u64, u64, u64)>,
    /// A read-only supervisor page (for store probes), its gpa mapped in RAM.
    pub ro_page: u64,
    /// A writable supervisor page backed by RAM.
    pub rw_page: u64,
    /// A writable user page backed by RAM.
    pub user_page: u64,
    /// An address whose walk hits a reserved bit (in a non-leaf entry).
    pub rsvd_page: u64,
    /// A supervisor page with NX set (only in modes with NX).
    pub nx_page: Option<u64>,
}

/// The sample for `mode`.
pub fn sample(mode: PagingMode) -> Sample {
    match mode {
        PagingMode::TwoLevel => two_level(),
        PagingMode::Pae => pae(),
        PagingMode::FourLevel => four_level(),
        PagingMode::FiveLevel => five_level(),
    }
}

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

/// 2-level: PSE 4 MiB page, PSE-36 page at 4 GiB + 12 MiB, 4 KiB pages, a
/// kernel-half page table and a global PSE page.
pub fn two_level() -> Sample {
    let pd = 0x10000;
    let mut img = PagingImage::new(PagingMode::TwoLevel, pd);
    img.desc.cr4 = CR4_PSE;
    img.add_frame(pd);
    // VA 4 MiB -> PA 8 MiB, 4 MiB page.
    img.set_entry(pd, 1, 0x0080_0000 | PS | P | RW | US);
    // VA 8 MiB -> PA 0x1_00c0_0000 via PSE-36 (PA[35:32] in PDE bits 16:13).
    img.set_entry(pd, 2, 0x00c0_0000 | (1 << 13) | PS | P | RW);
    // VA 12 MiB: page table.
    let pt = 0x11000;
    img.set_entry(pd, 3, pt | P | RW | US);
    img.set_entry(pt, 0, 0x5000 | P | RW); // rw supervisor
    img.set_entry(pt, 1, 0x6000 | P); // read-only supervisor
    img.set_entry(pt, 2, 0x7000 | P | RW | US); // user rw
    img.set_entry(pt, 5, 0x2000_0000 | P | RW | US); // beyond RAM: fine
                                                     // VA 16 MiB: PDE with a reserved bit? 2-level PDEs pointing to tables
                                                     // have no reserved bits; a 4 MiB PDE has bit 21 reserved (with 36-bit
                                                     // PSE... MAXPHYADDR 40 leaves bits 21:21 reserved only if M < 40).
                                                     // So the "reserved" probe uses a PSE PDE with bit 21 set.
    img.set_entry(pd, 4, 0x0100_0000 | (1 << 21) | PS | P | RW);
    // Kernel half: VA 0xc0000000 -> PA 1 MiB (4 KiB), VA 0xc0400000 -> PA 4 MiB global PSE.
    let kpt = 0x12000;
    img.set_entry(pd, 0x300, kpt | P | RW);
    img.set_entry(kpt, 0, 0x10_0000 | P | RW | G);
    img.set_entry(pd, 0x301, 0x0040_0000 | PS | G | P | RW);
    let expect = vec![
        (0x0040_0000, Some(0x0080_0000)),
        (0x0040_1234, Some(0x0080_1234)),
        (0x007f_fffc, Some(0x00bf_fffc)),
        (0x0080_0004, Some(0x1_00c0_0004)),
        (0x00c0_0010, Some(0x5010)),
        (0x00c0_1ff8, Some(0x6ff8)),
        (0x00c0_3000, None),
        (0x00c0_5abc, Some(0x2000_0abc)),
        (0x0000_1000, None),
        (0xc000_0123, Some(0x10_0123)),
        (0xc000_1000, None),
        (0xc040_0000, Some(0x40_0000)),
        (0xc07f_ffff, Some(0x7f_ffff)),
        (0xffff_f000, None),
    ];
    let mappings = vec![
        (0x0040_0000, 0x0080_0000, 4 * MIB),
        (0x0080_0000, 0x1_00c0_0000, 4 * MIB),
        (0x00c0_0000, 0x5000, 4096),
        (0x00c0_1000, 0x6000, 4096),
        (0x00c0_2000, 0x7000, 4096),
        (0x00c0_5000, 0x2000_0000, 4096),
        (0x0100_0000, 0x0100_0000, 4 * MIB),
        (0xc000_0000, 0x10_0000, 4096),
        (0xc040_0000, 0x40_0000, 4 * MIB),
    ];
    Sample {
        image: img,
        expect,
        mappings,
        ro_page: 0x00c0_1000,
        rw_page: 0x00c0_0000,
        user_page: 0x00c0_2000,
        rsvd_page: 0x0100_0000,
        nx_page: None,
    }
}

/// PAE: CR3 32-byte aligned (not page aligned), PD above 4 GiB, 2 MiB pages,
/// NX, PA above 4 GiB.
pub fn pae() -> Sample {
    let pdpt = 0x10020;
    let mut img = PagingImage::new(PagingMode::Pae, pdpt);
    img.desc.cr4 = CR4_PAE | CR4_PSE;
    img.add_frame(0x10000);
    let pd0 = 0x11000;
    let pd3 = 0x1_0000_3000; // above 4 GiB
    img.set_entry(pdpt, 0, pd0 | P);
    img.set_entry(pdpt, 3, pd3 | P);
    // VA 2 MiB -> PA 8 GiB, 2 MiB page.
    img.set_entry(pd0, 1, 0x2_0000_0000 | PS | P | RW);
    // VA 4 MiB: page table.
    let pt = 0x12000;
    img.set_entry(pd0, 2, pt | P | RW | US);
    img.set_entry(pt, 0, 0x5000 | P | RW);
    img.set_entry(pt, 1, 0x6000 | P);
    img.set_entry(pt, 2, 0x7000 | P | RW | US);
    img.set_entry(pt, 3, 0x1_2345_6000 | P | RW | NX);
    img.set_entry(pt, 4, 0x8000 | P | RW | NX);
    // VA 6 MiB: PDE with reserved bit 62 (below NX, above MAXPHYADDR).
    img.set_entry(pd0, 3, 0x13000 | (1 << 62) | P | RW);
    img.set_entry(0x13000, 0, 0x9000 | P | RW);
    // Kernel: VA 3 GiB -> 16 MiB (2 MiB, global); last page -> 0x7000.
    img.set_entry(pd3, 0, 0x100_0000 | PS | G | P | RW);
    let kpt = 0x14000;
    img.set_entry(pd3, 511, kpt | P | RW);
    img.set_entry(kpt, 511, 0xa000 | P | RW);
    let expect = vec![
        (0x0020_0000, Some(0x2_0000_0000)),
        (0x003f_fff8, Some(0x2_001f_fff8)),
        (0x0040_0008, Some(0x5008)),
        (0x0040_3010, Some(0x1_2345_6010)),
        (0x0040_5000, None),
        (0x0000_0000, None),
        (0x4000_0000, None),
        (0xc000_0000, Some(0x100_0000)),
        (0xc01f_ffff, Some(0x11f_ffff)),
        (0xc020_0000, None),
        (0xffff_f004, Some(0xa004)),
    ];
    let mappings = vec![
        (0x0020_0000, 0x2_0000_0000, 2 * MIB),
        (0x0040_0000, 0x5000, 4096),
        (0x0040_1000, 0x6000, 4096),
        (0x0040_2000, 0x7000, 4096),
        (0x0040_3000, 0x1_2345_6000, 4096),
        (0x0040_4000, 0x8000, 4096),
        (0x0060_0000, 0x9000, 4096),
        (0xc000_0000, 0x100_0000, 2 * MIB),
        (0xffff_f000, 0xa000, 4096),
    ];
    Sample {
        image: img,
        expect,
        mappings,
        ro_page: 0x0040_1000,
        rw_page: 0x0040_0000,
        user_page: 0x0040_2000,
        rsvd_page: 0x0060_0000,
        nx_page: Some(0x0040_4000),
    }
}

/// 4-level: 4 KiB, 2 MiB and 1 GiB pages, NX, upper half.
pub fn four_level() -> Sample {
    let pml4 = 0x20000;
    let mut img = PagingImage::new(PagingMode::FourLevel, pml4);
    img.add_frame(pml4);
    let (pdpt, pd, pt) = (0x21000, 0x22000, 0x23000);
    img.set_entry(pml4, 0, pdpt | P | RW | US);
    img.set_entry(pdpt, 0, pd | P | RW | US);
    img.set_entry(pd, 0, pt | P | RW | US);
    img.set_entry(pt, 1, 0x5000 | P | RW);
    img.set_entry(pt, 2, 0x6000 | P);
    img.set_entry(pt, 3, 0x7000 | P | RW | US);
    img.set_entry(pt, 4, 0x8000 | P | RW | NX);
    // VA 2 MiB -> 6 MiB (2 MiB page).
    img.set_entry(pd, 1, 0x60_0000 | PS | P | RW);
    // VA 4 MiB: 2 MiB page with reserved bit 13 (bits 20:13 must be 0).
    img.set_entry(pd, 2, 0xa0_0000 | (1 << 13) | PS | P | RW);
    // VA 1 GiB -> 2 GiB (1 GiB page).
    img.set_entry(pdpt, 1, 0x8000_0000 | PS | P | RW);
    // Upper half: 0xffffffff80000000 -> 1 MiB (global).
    let (kpdpt, kpd, kpt) = (0x25000, 0x26000, 0x27000);
    img.set_entry(pml4, 511, kpdpt | P | RW);
    img.set_entry(kpdpt, 510, kpd | P | RW);
    img.set_entry(kpd, 0, kpt | P | RW);
    img.set_entry(kpt, 0, 0x10_0000 | G | P | RW);
    // 0xffff800000000000 -> 4 GiB, 1 GiB NX page.
    let dpdpt = 0x28000;
    img.set_entry(pml4, 256, dpdpt | P | RW);
    img.set_entry(dpdpt, 0, 0x1_0000_0000 | NX | PS | P | RW);
    let expect = vec![
        (0x1008, Some(0x5008)),
        (0x2ff8, Some(0x6ff8)),
        (0x0, None),
        (0x5000, None),
        (0x20_0000, Some(0x60_0000)),
        (0x3f_ffff, Some(0x7f_ffff)),
        (0x4000_0000, Some(0x8000_0000)),
        (0x7fff_fff0, Some(0xbfff_fff0)),
        (0x8000_0000, None),
        (0x0000_7fff_ffff_f000, None),
        (0x0000_8000_0000_0000, None), // non-canonical
        (0xffff_ffff_8000_0abc, Some(0x10_0abc)),
        (0xffff_ffff_8000_1000, None),
        (0xffff_8000_0000_0000, Some(0x1_0000_0000)),
        (0xffff_8000_3fff_ffff, Some(0x1_3fff_ffff)),
        (0xffff_8000_4000_0000, None),
    ];
    let mappings = vec![
        (0x1000, 0x5000, 4096),
        (0x2000, 0x6000, 4096),
        (0x3000, 0x7000, 4096),
        (0x4000, 0x8000, 4096),
        (0x20_0000, 0x60_0000, 2 * MIB),
        (0x40_0000, 0xa0_0000, 2 * MIB),
        (0x4000_0000, 0x8000_0000, GIB),
        (0xffff_8000_0000_0000, 0x1_0000_0000, GIB),
        (0xffff_ffff_8000_0000, 0x10_0000, 4096),
    ];
    Sample {
        image: img,
        expect,
        mappings,
        ro_page: 0x2000,
        rw_page: 0x1000,
        user_page: 0x3000,
        rsvd_page: 0x40_0000,
        nx_page: Some(0x4000),
    }
}

/// 5-level: CR4.LA57, an address with bit 48 set, the very last page.
pub fn five_level() -> Sample {
    let pml5 = 0x30000;
    let mut img = PagingImage::new(PagingMode::FiveLevel, pml5);
    img.desc.cr4 = CR4_PAE | CR4_PSE | CR4_LA57;
    img.add_frame(pml5);
    let (pml4, pdpt, pd, pt) = (0x31000, 0x32000, 0x33000, 0x34000);
    img.set_entry(pml5, 0, pml4 | P | RW | US);
    img.set_entry(pml5, 1, pml4 | P | RW | US); // alias at 1 << 48
    img.set_entry(pml4, 0, pdpt | P | RW | US);
    img.set_entry(pdpt, 0, pd | P | RW | US);
    img.set_entry(pd, 0, pt | P | RW | US);
    img.set_entry(pt, 1, 0x5000 | P | RW);
    img.set_entry(pt, 2, 0x6000 | P);
    img.set_entry(pt, 3, 0x7000 | P | RW | US);
    img.set_entry(pt, 4, 0x8000 | P | RW | NX);
    img.set_entry(pd, 1, 0x40_0000 | PS | P | RW);
    img.set_entry(pd, 2, 0xa0_0000 | (1 << 13) | PS | P | RW);
    let (kpml4, kpdpt, kpd, kpt) = (0x36000, 0x37000, 0x38000, 0x39000);
    img.set_entry(pml5, 511, kpml4 | P | RW);
    img.set_entry(kpml4, 511, kpdpt | P | RW);
    img.set_entry(kpdpt, 511, kpd | P | RW);
    img.set_entry(kpd, 511, kpt | P | RW);
    img.set_entry(kpt, 511, 0xa000 | P | RW);
    let expect = vec![
        (0x1010, Some(0x5010)),
        (0x20_0000, Some(0x40_0000)),
        (0x5000, None),
        (0x0001_0000_0000_1010, Some(0x5010)),
        (0x0001_0000_0020_0008, Some(0x40_0008)),
        (0x0002_0000_0000_0000, None),
        (0x0100_0000_0000_0000, None), // non-canonical for 57 bits
        (0xffff_ffff_ffff_f008, Some(0xa008)),
        (0xffff_ffff_ffff_e000, None),
    ];
    let mappings = vec![
        (0x1000, 0x5000, 4096),
        (0x2000, 0x6000, 4096),
        (0x3000, 0x7000, 4096),
        (0x4000, 0x8000, 4096),
        (0x20_0000, 0x40_0000, 2 * MIB),
        (0x40_0000, 0xa0_0000, 2 * MIB),
        (0x0001_0000_0000_1000, 0x5000, 4096),
        (0x0001_0000_0000_2000, 0x6000, 4096),
        (0x0001_0000_0000_3000, 0x7000, 4096),
        (0x0001_0000_0000_4000, 0x8000, 4096),
        (0x0001_0000_0020_0000, 0x40_0000, 2 * MIB),
        (0x0001_0000_0040_0000, 0xa0_0000, 2 * MIB),
        (0xffff_ffff_ffff_f000, 0xa000, 4096),
    ];
    Sample {
        image: img,
        expect,
        mappings,
        ro_page: 0x2000,
        rw_page: 0x1000,
        user_page: 0x3000,
        rsvd_page: 0x40_0000,
        nx_page: Some(0x4000),
    }
}
