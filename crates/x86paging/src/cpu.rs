//! The CPU state a page walk depends on, and the kind of access.
//!
//! [`CpuState`] is the subset of control-register state that changes what
//! the MMU does with a page table: the mode (CR0.PG, CR4.PAE, EFER.LME,
//! CR4.LA57), CR3, CR0.WP, CR4.PSE, CR4.PGE, EFER.NXE, CR4.SMEP/SMAP,
//! MAXPHYADDR and 1 GiB page support. [`CpuState::cr_values`] gives the
//! architectural register values so a hardware oracle can load them.

use crate::mode::PagingMode;
use physmem::PhysAddr;

/// CR0.PE: protected mode.
pub const CR0_PE: u64 = 1 << 0;
/// CR0.WP: supervisor writes honour R/W.
pub const CR0_WP: u64 = 1 << 16;
/// CR0.PG: paging on.
pub const CR0_PG: u64 = 1 << 31;
/// CR4.PSE: 4 MiB pages in 2-level paging.
pub const CR4_PSE: u64 = 1 << 4;
/// CR4.PAE: PAE (and long-mode) paging.
pub const CR4_PAE: u64 = 1 << 5;
/// CR4.PGE: global pages.
pub const CR4_PGE: u64 = 1 << 7;
/// CR4.LA57: 5-level paging.
pub const CR4_LA57: u64 = 1 << 12;
/// CR4.SMEP.
pub const CR4_SMEP: u64 = 1 << 20;
/// CR4.SMAP.
pub const CR4_SMAP: u64 = 1 << 21;
/// EFER.LME: long mode enable.
pub const EFER_LME: u64 = 1 << 8;
/// EFER.LMA: long mode active.
pub const EFER_LMA: u64 = 1 << 10;
/// EFER.NXE: the XD bit is honoured (and not reserved).
pub const EFER_NXE: u64 = 1 << 11;

/// What the MMU needs to know about the CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuState {
    /// The paging mode.
    pub mode: PagingMode,
    /// Physical address of the pgd (CR3 without flags). On PAE it must be
    /// 32-byte aligned; elsewhere 4 KiB aligned.
    pub cr3: PhysAddr,
    /// CR0.WP: supervisor writes to read-only pages fault.
    pub wp: bool,
    /// CR4.PSE: on 2-level, a PDE with PS=1 maps a 4 MiB page. (PAE and
    /// long mode ignore it: large pages are always available there.)
    pub pse: bool,
    /// CR4.PGE: global pages (only reported, the walker has no TLB).
    pub pge: bool,
    /// EFER.NXE: bit 63 is XD. Without it bit 63 is reserved (PAE/64-bit).
    pub nxe: bool,
    /// CR4.SMEP: supervisor fetches from user pages fault.
    pub smep: bool,
    /// CR4.SMAP: supervisor data accesses to user pages fault (EFLAGS.AC is
    /// taken as clear).
    pub smap: bool,
    /// MAXPHYADDR: physical-address width. Entry address bits at or above it
    /// are reserved.
    pub maxphyaddr: u32,
    /// CPUID.80000001H:EDX.Page1GB: a PS=1 pud maps 1 GiB (else reserved).
    pub gbpages: bool,
}

/// CR0, CR3, CR4 and EFER as the CPU would hold them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct CrValues {
    /// CR0 (PE, PG, WP).
    pub cr0: u64,
    /// CR3 (the pgd's physical address; no PCID, PWT/PCD clear).
    pub cr3: u64,
    /// CR4 (PSE, PAE, PGE, LA57, SMEP, SMAP).
    pub cr4: u64,
    /// IA32_EFER (LME, LMA, NXE).
    pub efer: u64,
}

impl CpuState {
    /// Defaults for `mode` with the pgd at `cr3`: WP, PSE, PGE on; NXE on
    /// except on 2-level (which has no NX bit); SMEP/SMAP off; 1 GiB pages
    /// supported; MAXPHYADDR 40 on the 32-bit modes (what PSE-36/PSE-40 and
    /// QEMU's TCG CPUs give) and 46 on the 64-bit ones. A hardware oracle
    /// should set `maxphyaddr` to what its CPU reports.
    pub const fn new(mode: PagingMode, cr3: PhysAddr) -> Self {
        CpuState {
            mode,
            cr3,
            wp: true,
            pse: true,
            pge: true,
            nxe: !matches!(mode, PagingMode::TwoLevel),
            smep: false,
            smap: false,
            maxphyaddr: if mode.is_64bit() { 46 } else { 40 },
            gbpages: true,
        }
    }

    /// The same state with another pgd loaded (a context switch).
    pub const fn with_cr3(self, cr3: PhysAddr) -> Self {
        CpuState { cr3, ..self }
    }

    /// CR0.
    pub const fn cr0(&self) -> u64 {
        CR0_PE | CR0_PG | if self.wp { CR0_WP } else { 0 }
    }
    /// CR3.
    pub const fn cr3(&self) -> u64 {
        self.cr3.as_u64()
    }
    /// CR4.
    pub const fn cr4(&self) -> u64 {
        let mut v = 0;
        if self.pse {
            v |= CR4_PSE;
        }
        if self.pge {
            v |= CR4_PGE;
        }
        if !matches!(self.mode, PagingMode::TwoLevel) {
            v |= CR4_PAE;
        }
        if matches!(self.mode, PagingMode::FiveLevel) {
            v |= CR4_LA57;
        }
        if self.smep {
            v |= CR4_SMEP;
        }
        if self.smap {
            v |= CR4_SMAP;
        }
        v
    }
    /// IA32_EFER.
    pub const fn efer(&self) -> u64 {
        let mut v = 0;
        if self.mode.is_64bit() {
            v |= EFER_LME | EFER_LMA;
        }
        if self.nxe {
            v |= EFER_NXE;
        }
        v
    }
    /// All four registers.
    pub const fn cr_values(&self) -> CrValues {
        CrValues {
            cr0: self.cr0(),
            cr3: self.cr3(),
            cr4: self.cr4(),
            efer: self.efer(),
        }
    }

    /// True if the XD bit is honoured (EFER.NXE in a mode with 8-byte entries).
    pub const fn nx_active(&self) -> bool {
        self.nxe && !matches!(self.mode, PagingMode::TwoLevel)
    }
}

/// Read, write or instruction fetch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum AccessKind {
    /// A data read.
    Read,
    /// A data write.
    Write,
    /// An instruction fetch.
    Execute,
}

/// One memory access: what kind, and from which privilege level.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Access {
    /// Read, write or fetch.
    pub kind: AccessKind,
    /// CPL 3 (user) rather than supervisor.
    pub user: bool,
}

impl Access {
    /// A supervisor read.
    pub const READ: Access = Access {
        kind: AccessKind::Read,
        user: false,
    };
    /// A supervisor write.
    pub const WRITE: Access = Access {
        kind: AccessKind::Write,
        user: false,
    };
    /// A supervisor instruction fetch.
    pub const EXEC: Access = Access {
        kind: AccessKind::Execute,
        user: false,
    };
    /// A user read.
    pub const USER_READ: Access = Access {
        kind: AccessKind::Read,
        user: true,
    };
    /// A user write.
    pub const USER_WRITE: Access = Access {
        kind: AccessKind::Write,
        user: true,
    };
    /// A user instruction fetch.
    pub const USER_EXEC: Access = Access {
        kind: AccessKind::Execute,
        user: true,
    };
    /// All six combinations.
    pub const ALL: [Access; 6] = [
        Access::READ,
        Access::WRITE,
        Access::EXEC,
        Access::USER_READ,
        Access::USER_WRITE,
        Access::USER_EXEC,
    ];
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn register_values() {
        let c = CpuState::new(PagingMode::TwoLevel, PhysAddr::new(0x1000));
        assert_eq!(c.cr0(), 0x8001_0001);
        assert_eq!(c.cr4(), CR4_PSE | CR4_PGE);
        assert_eq!(c.efer(), 0);
        let c = CpuState::new(PagingMode::Pae, PhysAddr::new(0x1020));
        assert_eq!(c.cr4() & CR4_PAE, CR4_PAE);
        assert_eq!(c.efer(), EFER_NXE);
        let c = CpuState::new(PagingMode::FiveLevel, PhysAddr::new(0x2000));
        assert_eq!(c.cr4() & (CR4_PAE | CR4_LA57), CR4_PAE | CR4_LA57);
        assert_eq!(c.efer(), EFER_LME | EFER_LMA | EFER_NXE);
        assert_eq!(c.cr_values().cr3, 0x2000);
    }
}
