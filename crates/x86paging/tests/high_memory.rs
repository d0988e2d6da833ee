//! Physical addresses above 4 GiB, whatever the host's `usize`.
//!
//! A 32-bit PAE kernel runs these crates with a 32-bit `usize`, but its
//! physical addresses are 64-bit: page tables and pages may live above
//! 4 GiB (and 2-level PSE-36 maps 4 MiB pages up to 2^40). Here the
//! allocator manages 4 GiB + 16 MiB of sparse memory with everything below
//! 4 GiB reserved, so every frame it hands out, and every table `map`
//! builds, lies above 4 GiB; the walker must find them there. CI runs this
//! on `i686-unknown-linux-gnu` too (`scripts/test.sh`), where a truncating
//! `as usize` would fold them onto low memory.

use std::collections::BTreeMap;
use std::sync::Mutex;

use physmem::{Frame, MemError, Owner, PhysAddr, PhysMem, PhysMemory, VirtAddr};
use x86paging::map::{map, MapError};
use x86paging::{translate, Access, CpuState, EntryError, EntryFlags, PageSize, PagingMode};

const FOUR_GIB: u64 = 1 << 32;

/// Memory that exists only where it was written (zero elsewhere).
struct Sparse {
    size: u64,
    words: Mutex<BTreeMap<u64, u64>>,
}

impl Sparse {
    fn new(size: u64) -> Self {
        Sparse {
            size,
            words: Mutex::new(BTreeMap::new()),
        }
    }
    fn check(&self, pa: PhysAddr, width: u64) -> Result<u64, MemError> {
        let a = pa.as_u64();
        if !a.is_multiple_of(width) {
            return Err(MemError::Misaligned(pa));
        }
        match a.checked_add(width) {
            Some(end) if end <= self.size => Ok(a),
            _ => Err(MemError::OutOfRange(pa)),
        }
    }
}

impl PhysMem for Sparse {
    fn size(&self) -> u64 {
        self.size
    }
    fn load_u32(&self, pa: PhysAddr) -> Result<u32, MemError> {
        let a = self.check(pa, 4)?;
        let w = self.words.lock().unwrap().get(&(a & !7)).copied();
        Ok((w.unwrap_or(0) >> ((a & 4) * 8)) as u32)
    }
    fn load_u64(&self, pa: PhysAddr) -> Result<u64, MemError> {
        let a = self.check(pa, 8)?;
        Ok(self.words.lock().unwrap().get(&a).copied().unwrap_or(0))
    }
    fn store_u32(&self, pa: PhysAddr, v: u32) -> Result<(), MemError> {
        let a = self.check(pa, 4)?;
        let mut m = self.words.lock().unwrap();
        let w = m.entry(a & !7).or_insert(0);
        let shift = (a & 4) * 8;
        *w = (*w & !(0xffff_ffffu64 << shift)) | (u64::from(v) << shift);
        Ok(())
    }
    fn store_u64(&self, pa: PhysAddr, v: u64) -> Result<(), MemError> {
        let a = self.check(pa, 8)?;
        self.words.lock().unwrap().insert(a, v);
        Ok(())
    }
}

/// 16 MiB of allocatable memory, all of it above 4 GiB.
fn high_memory() -> PhysMemory<Sparse> {
    PhysMemory::with_memory(Sparse::new(FOUR_GIB + (16 << 20)), FOUR_GIB)
}

#[test]
fn frames_above_4gib_are_allocated_poisoned_and_freed() {
    let pm = high_memory();
    let f = pm.alloc_frame(Owner::UserData).unwrap();
    assert!(f.start().as_u64() >= FOUR_GIB, "{f}");
    assert_eq!(pm.page(f).map(|p| p.owner()), Some(Owner::UserData));
    pm.store_u64(f.start(), 0x1234_5678_9abc_def0).unwrap();
    assert_eq!(pm.load_u64(f.start()).unwrap(), 0x1234_5678_9abc_def0);
    // Nothing landed in low memory (where a truncated address would go).
    let low = PhysAddr::new(f.start().as_u64() - FOUR_GIB);
    assert_eq!(pm.load_u64(low).unwrap(), 0);
    pm.free_frame(f).unwrap();
    assert_eq!(
        pm.load_u64(f.start()).unwrap(),
        u64::from_ne_bytes([physmem::POISON_FREE; 8])
    );
    assert_eq!(pm.load_u64(low).unwrap(), 0);
    assert!(pm.free_frame(Frame::containing(low)).is_err());
}

#[test]
fn pae_tables_and_pages_above_4gib() {
    let pm = high_memory();
    // PAE's CR3 is 32 bits: the PDPT sits in low (reserved) memory; every
    // pmd and pte page `map` allocates comes from above 4 GiB.
    let pdpt = PhysAddr::new(0x1000);
    let data = pm.alloc_frame(Owner::UserData).unwrap().start();
    let mode = PagingMode::Pae;
    let rw = EntryFlags::PRESENT | EntryFlags::RW;
    let va = VirtAddr::new(0xc012_3000);
    map(
        &pm,
        mode,
        pdpt,
        va,
        data,
        PageSize::Size4K,
        rw,
        Owner::KernelTable,
    )
    .unwrap();
    // A 2 MiB page far above RAM (data pages need not exist).
    let big = PhysAddr::new(0xf_4000_0000);
    let va2 = VirtAddr::new(0xd000_0000);
    map(
        &pm,
        mode,
        pdpt,
        va2,
        big,
        PageSize::Size2M,
        rw,
        Owner::KernelTable,
    )
    .unwrap();
    let cpu = CpuState::new(mode, pdpt);
    let t = translate(&pm, &cpu, VirtAddr::new(va.as_u64() + 0x18), Access::READ).unwrap();
    assert_eq!(t.pa.as_u64(), data.as_u64() + 0x18);
    assert_eq!(t.size, PageSize::Size4K);
    let t = translate(
        &pm,
        &cpu,
        VirtAddr::new(va2.as_u64() + 0x12_3456),
        Access::READ,
    )
    .unwrap();
    assert_eq!(t.pa.as_u64(), big.as_u64() + 0x12_3456);
    assert_eq!(t.size, PageSize::Size2M);
    // The tables themselves are above 4 GiB.
    let pdpte =
        x86paging::table::read_entry(&pm, mode, x86paging::table::entry_pa_at(mode, pdpt, 3))
            .unwrap();
    assert!(pdpte.table_addr(mode).as_u64() >= FOUR_GIB, "{pdpte}");
}

#[test]
fn two_level_pse36_above_4gib() {
    let pm = high_memory();
    let pgd = PhysAddr::new(0x2000);
    let mode = PagingMode::TwoLevel;
    let rw = EntryFlags::PRESENT | EntryFlags::RW;
    let big = PhysAddr::new(0x2_0040_0000);
    let va = VirtAddr::new(0xc040_0000);
    map(
        &pm,
        mode,
        pgd,
        va,
        big,
        PageSize::Size4M,
        rw,
        Owner::KernelTable,
    )
    .unwrap();
    let cpu = CpuState::new(mode, pgd);
    let t = translate(
        &pm,
        &cpu,
        VirtAddr::new(va.as_u64() + 0x3_2100),
        Access::READ,
    )
    .unwrap();
    assert_eq!(t.pa.as_u64(), big.as_u64() + 0x3_2100);
    // A 2-level pde or pte holds a 32-bit address: a pte page from above
    // 4 GiB (all this allocator has) or a page above 4 GiB is refused, not
    // truncated, and the pte page goes back.
    let high = pm.alloc_frame(Owner::UserData).unwrap().start();
    let free = pm.free_frames();
    for pa in [PhysAddr::new(0x5000), high] {
        let r = map(
            &pm,
            mode,
            pgd,
            VirtAddr::new(0x40_0000),
            pa,
            PageSize::Size4K,
            rw,
            Owner::UserTable,
        );
        assert!(
            matches!(
                r,
                Err(MapError::Entry(EntryError::AddressTooWide {
                    max_bits: 32,
                    ..
                }))
            ),
            "{pa}: {r:?}"
        );
        assert_eq!(pm.free_frames(), free, "{pa}: a frame leaked");
    }
}
