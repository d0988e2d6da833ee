//! A seeded random page-table generator, with the translations it expects.
//!
//! For differential testing of MMU models: [`generate`] builds a fresh page
//! table in a [`PhysMemory`] with random mappings of random sizes and
//! attributes, and returns a [`Generated`] that knows, for every linear
//! address and access, what a correct MMU must do — translate to a given
//! physical address, or raise #PF with a given error code. The software
//! walker ([`crate::translate`]) is checked against it by this crate's
//! property tests; the oracle crate checks QEMU and KVM against it by
//! loading the same RAM image with [`Generated::cpu`]'s register values.
//!
//! What it generates, per mode:
//!
//! * page sizes: every size the format has (4K; 4M PSE on 2-level; 2M on
//!   PAE; 2M and 1G on 64-bit) when [`GenConfig::large_pages`] is set;
//! * leaf flags: random RW, USER, PWT, PCD, PAT, GLOBAL, ACCESSED, DIRTY and
//!   (8-byte entries) NX;
//! * virtual addresses: uniformly random, size-aligned and canonical, over
//!   the whole address space (user and kernel halves); overlapping picks are
//!   redrawn;
//! * physical addresses: size-aligned, below RAM's end, or with
//!   [`GenConfig::high_phys`] anywhere below 2^MAXPHYADDR (on 2-level 4 KiB
//!   pages stay below 4 GiB, 4 MiB pages use the PSE-36 encoding up to
//!   2^min(MAXPHYADDR, 40)). A leaf may map memory that does not exist; only
//!   tables must be in RAM, and they always are.
//!
//! Intermediate entries are written as [`crate::map()`] writes them: user
//! half `_PAGE_TABLE` (P|RW|US|A|D), kernel half `_KERNPG_TABLE` (P|RW|A|D),
//! PAE PDPTEs P only. So the effective U/S of a mapping is its own USER bit
//! AND "is in the user half" (except a 2-level 4 MiB or PAE 2 MiB page,
//! which have no intermediate entry with a U/S bit); R/W and NX are the
//! leaf's.
//!
//! The same seed and config give the same tables (frame numbers too, if
//! the allocator starts in the same state).

use crate::cpu::{Access, AccessKind, CpuState};
use crate::entry::EntryFlags;
use crate::map::{is_user_va, map, MapError};
use crate::mode::{PageSize, PagingMode};
use crate::walk::PfErrorCode;
use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use physmem::{Owner, PhysAddr, PhysMem, PhysMemory, VirtAddr};

/// The workspace's one pseudo-random generator: SplitMix64 (Steele, Lea &
/// Flood 2014), small, fast, seedable, `no_std`. The generator of random
/// page tables here, of the simulator's choices (`sim`), of the
/// virtual-time model's lock arbitration (`pgdcache-bench`) and of the
/// stress tests: the same seed gives the same sequence everywhere.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator seeded with `seed`.
    pub const fn new(seed: u64) -> Self {
        Rng(seed)
    }
    /// Stream `stream` of seed `seed`: independent-looking generators for,
    /// e.g., each thread of a run (the pair is hashed into the start state).
    pub const fn stream(seed: u64, stream: u64) -> Self {
        Rng(mix(seed ^ mix(stream.wrapping_add(0xd134_2543_de82_ef95))))
    }
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix(self.0)
    }
    /// A value in `0..n` (`n > 0`; returns 0 for `n == 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next_u64() % n
        }
    }
    /// True with probability `num/den`.
    pub fn chance(&mut self, num: u64, den: u64) -> bool {
        self.below(den) < num
    }
}

/// SplitMix64's output function (a bijective 64-bit mixer).
const fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// What to generate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GenConfig {
    /// The paging mode.
    pub mode: PagingMode,
    /// The seed.
    pub seed: u64,
    /// How many mappings to make.
    pub mappings: usize,
    /// Use large pages (4M / 2M / 1G) as well as 4K.
    pub large_pages: bool,
    /// Physical addresses anywhere below 2^MAXPHYADDR, not just in RAM.
    pub high_phys: bool,
    /// MAXPHYADDR of the CPU that will walk the tables.
    pub maxphyaddr: u32,
}

impl GenConfig {
    /// Defaults for `mode`: 64 mappings, large pages on, high physical
    /// addresses on, MAXPHYADDR as [`CpuState::new`] picks.
    pub const fn new(mode: PagingMode, seed: u64) -> Self {
        GenConfig {
            mode,
            seed,
            mappings: 64,
            large_pages: true,
            high_phys: true,
            maxphyaddr: CpuState::new(mode, PhysAddr::new(0)).maxphyaddr,
        }
    }
}

/// One mapping the generator made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GenMapping {
    /// First linear address.
    pub va: VirtAddr,
    /// Physical address it maps to.
    pub pa: PhysAddr,
    /// Page size.
    pub size: PageSize,
    /// Leaf flags (logical; PRESENT included).
    pub flags: EntryFlags,
}

/// What a correct MMU does with one access.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    /// It translates to this physical address.
    Ok(PhysAddr),
    /// It raises #PF with this error code.
    Fault(PfErrorCode),
}

/// One access and its expected outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Probe {
    /// The linear address.
    pub va: VirtAddr,
    /// The access.
    pub access: Access,
    /// The outcome.
    pub expect: Expect,
}

/// A generated page table and its expected behaviour.
#[derive(Clone, Debug)]
pub struct Generated {
    /// The CPU state to walk it with (CR3 = the new pgd; WP, NXE as
    /// [`CpuState::new`], `maxphyaddr` from the config).
    pub cpu: CpuState,
    /// The pgd's physical address.
    pub root: PhysAddr,
    /// The mappings, by first address.
    pub mappings: Vec<GenMapping>,
    index: BTreeMap<u64, usize>,
}

impl Generated {
    /// The mapping covering `va`, if any.
    pub fn mapping_of(&self, va: VirtAddr) -> Option<&GenMapping> {
        let (_, &i) = self.index.range(..=va.as_u64()).next_back()?;
        let m = self.mappings.get(i)?;
        (va.as_u64() - m.va.as_u64() < m.size.bytes()).then_some(m)
    }

    /// What a correct MMU does for `access` at `va` (a canonical address),
    /// with CPU state `cpu` (normally [`Generated::cpu`], perhaps with WP,
    /// SMEP or SMAP changed).
    pub fn expect_with(&self, cpu: &CpuState, va: VirtAddr, access: Access) -> Expect {
        expect_access(cpu, self.mapping_of(va), va, access)
    }

    /// [`Generated::expect_with`] for [`Generated::cpu`].
    pub fn expect(&self, va: VirtAddr, access: Access) -> Expect {
        self.expect_with(&self.cpu, va, access)
    }

    /// Probes: for every mapping, one random address inside it with each of
    /// the six accesses; then `unmapped` random canonical addresses that no
    /// mapping covers, each with each access.
    pub fn probes(&self, seed: u64, unmapped: usize) -> Vec<Probe> {
        let mut rng = Rng::new(seed);
        let mut out = Vec::new();
        for m in &self.mappings {
            let va = VirtAddr::new(m.va.as_u64() + (rng.below(m.size.bytes()) & !7));
            for access in Access::ALL {
                out.push(Probe {
                    va,
                    access,
                    expect: self.expect(va, access),
                });
            }
        }
        let mut found = 0;
        let mut tries = 0;
        while found < unmapped && tries < unmapped * 100 {
            tries += 1;
            let va = random_va(&mut rng, self.cpu.mode, 8);
            if self.mapping_of(va).is_some() {
                continue;
            }
            found += 1;
            for access in Access::ALL {
                out.push(Probe {
                    va,
                    access,
                    expect: self.expect(va, access),
                });
            }
        }
        out
    }
}

/// The reference permission model for a mapping built by [`crate::map()`]
/// (see the module docs), or a not-present fault if `m` is `None`.
pub fn expect_access(
    cpu: &CpuState,
    m: Option<&GenMapping>,
    va: VirtAddr,
    access: Access,
) -> Expect {
    let mut code = PfErrorCode::empty();
    if access.kind == AccessKind::Write {
        code |= PfErrorCode::WRITE;
    }
    if access.user {
        code |= PfErrorCode::USER;
    }
    if access.kind == AccessKind::Execute && (cpu.smep || cpu.nx_active()) {
        code |= PfErrorCode::FETCH;
    }
    let Some(m) = m else {
        return Expect::Fault(code);
    };
    // The leaf's U/S is ANDed with the intermediates' (set only in the user
    // half), except where no intermediate carries U/S: a 2-level PSE page
    // (the leaf is the pgd entry) and a PAE 2 MiB page (a PDPTE has no U/S).
    let top_leaf = matches!(
        (cpu.mode, m.size),
        (PagingMode::TwoLevel, PageSize::Size4M) | (PagingMode::Pae, PageSize::Size2M)
    );
    let us = m.flags.contains(EntryFlags::USER) && (top_leaf || is_user_va(cpu.mode, va));
    let rw = m.flags.contains(EntryFlags::RW);
    let nx = cpu.nx_active() && m.flags.contains(EntryFlags::NX);
    let ok = match (access.kind, access.user) {
        (AccessKind::Read, true) => us,
        (AccessKind::Write, true) => us && rw,
        (AccessKind::Execute, true) => us && !nx,
        (AccessKind::Read, false) => !(cpu.smap && us),
        (AccessKind::Write, false) => (rw || !cpu.wp) && !(cpu.smap && us),
        (AccessKind::Execute, false) => !(nx || (cpu.smep && us)),
    };
    if ok {
        Expect::Ok(PhysAddr::new(m.pa.as_u64() + (va.as_u64() - m.va.as_u64())))
    } else {
        Expect::Fault(code | PfErrorCode::P)
    }
}

/// A random canonical linear address aligned to `align`.
pub fn random_va(rng: &mut Rng, mode: PagingMode, align: u64) -> VirtAddr {
    let bits = mode.va_bits();
    let raw = rng.next_u64() & ((1u64 << bits) - 1) & !(align - 1);
    mode.canonicalize(raw)
}

fn random_flags(rng: &mut Rng, mode: PagingMode) -> EntryFlags {
    let mut f = EntryFlags::PRESENT;
    for (flag, num) in [
        (EntryFlags::RW, 2),
        (EntryFlags::USER, 2),
        (EntryFlags::PWT, 1),
        (EntryFlags::PCD, 1),
        (EntryFlags::PAT, 1),
        (EntryFlags::GLOBAL, 1),
        (EntryFlags::ACCESSED, 2),
        (EntryFlags::DIRTY, 2),
        (EntryFlags::NX, 2),
    ] {
        if rng.chance(num, 4) {
            f |= flag;
        }
    }
    f.for_mode(mode)
}

/// Builds a random page table in `pm` (tables tagged [`Owner::UserTable`])
/// and returns it with its expected behaviour. Fails only if `pm` runs out
/// of frames ([`MapError::OutOfMemory`]); what was built so far stays.
pub fn generate<M: PhysMem>(pm: &PhysMemory<M>, cfg: &GenConfig) -> Result<Generated, MapError> {
    let mode = cfg.mode;
    let mut rng = Rng::new(cfg.seed);
    let root = pm
        .alloc_zeroed_frame(Owner::UserTable)
        .map_err(MapError::OutOfMemory)?
        .start();
    let mut cpu = CpuState::new(mode, root);
    cpu.maxphyaddr = cfg.maxphyaddr;
    let sizes: &[PageSize] = if cfg.large_pages {
        mode.page_sizes()
    } else {
        &[PageSize::Size4K]
    };
    let ram = pm.size();
    let mut out = Generated {
        cpu,
        root,
        mappings: Vec::new(),
        index: BTreeMap::new(),
    };
    let mut tries = 0;
    while out.mappings.len() < cfg.mappings && tries < cfg.mappings * 50 + 100 {
        tries += 1;
        // Favour 4K so page tables get several entries.
        let size = if rng.chance(1, 2) {
            PageSize::Size4K
        } else {
            sizes[rng.below(sizes.len() as u64) as usize]
        };
        let va = random_va(&mut rng, mode, size.bytes());
        let end = va.as_u64().wrapping_add(size.bytes() - 1);
        let overlaps = out.mapping_of(va).is_some()
            || out.mapping_of(VirtAddr::new(end)).is_some()
            || out.index.range(va.as_u64()..=end).next().is_some();
        if overlaps {
            continue;
        }
        let phys_bits = match (mode, size) {
            (PagingMode::TwoLevel, PageSize::Size4K) => cfg.maxphyaddr.min(32),
            (PagingMode::TwoLevel, _) => cfg.maxphyaddr.min(40),
            _ => cfg.maxphyaddr.min(52),
        };
        let limit = if cfg.high_phys && rng.chance(1, 2) {
            1u64 << phys_bits
        } else {
            ram
        };
        let pa = PhysAddr::new(rng.below(limit) & !size.mask());
        let flags = random_flags(&mut rng, mode);
        match map(pm, mode, root, va, pa, size, flags, Owner::UserTable) {
            Ok(()) => {
                out.index.insert(va.as_u64(), out.mappings.len());
                out.mappings.push(GenMapping {
                    va,
                    pa,
                    size,
                    flags,
                });
            }
            // A large page where a table already is, or the reverse: redraw.
            Err(MapError::AlreadyMapped { .. }) => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}
