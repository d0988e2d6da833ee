//! Hardware MMU oracle for x86 page tables.
//!
//! pgdcache builds real x86 page-table entries in simulated physical memory
//! and walks them with its own software MMU. This crate checks those tables
//! against MMU implementations that nobody on the project wrote:
//!
//! * [`qemu::QemuOracle`]: QEMU's TCG x86 MMU, driven through its gdbstub.
//!   Its *debug walk* (`gva2gpa`, `info tlb`) answers "what maps where" in all
//!   four paging modes; *probes* run a generated boot program that really
//!   performs loads, stores and fetches, which is the only way to see what the
//!   debug walk skips (reserved bits, U/S, R/W, NX, #PF error codes).
//! * [`kvm::KvmOracle`]: the host CPU (or KVM's shadow MMU) via
//!   `KVM_TRANSLATE` and real execution, where KVM can run the mode at all.
//!
//! Both sit behind the [`MmuOracle`] trait; the input is a
//! [`image::PagingImage`].

pub mod ci;
pub mod image;
pub mod kvm;
pub mod probe;
pub mod qemu;
pub mod rsp;
pub mod samples;
pub mod tlb;

use std::fmt;

pub use image::{ImageDesc, ImageRoot, MemRange, PagingImage, PagingMode};
pub use tlb::{MapFlags, Mapping};

/// Everything that can go wrong while asking an oracle.
#[derive(Debug, thiserror::Error)]
pub enum OracleError {
    /// The QEMU binary is not installed (or `PGDCACHE_QEMU` points nowhere).
    #[error("QEMU not found: {0}")]
    QemuNotFound(String),
    /// The backend process/VM could not be created.
    #[error("cannot start backend: {0}")]
    Spawn(String),
    /// A bounded wait expired.
    #[error("timeout: {0}")]
    Timeout(String),
    /// The backend started but never answered (a QEMU whose gdbstub does
    /// not accept or does not reply within the start-up bound).
    #[error("backend unresponsive: {0}")]
    Unresponsive(String),
    /// The backend answered something we did not expect.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The backend cannot do this (mode, page size, address...).
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// `translate`/`mappings`/`probe` called before `load`.
    #[error("no image loaded")]
    NotLoaded,
    /// The image itself is unusable.
    #[error(transparent)]
    Image(#[from] image::ImageError),
    /// The guest did something the probe program cannot report (triple
    /// fault, lost control...).
    #[error("guest failure: {0}")]
    Guest(String),
    /// Plain I/O error (sockets, pipes).
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    /// A KVM ioctl failed.
    #[error("KVM: {0}")]
    Kvm(String),
}

/// Whether a backend can check a paging mode on this machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Support {
    /// Yes.
    Yes,
    /// No, with the reason (e.g. "PVM drops CR0.PG outside long mode").
    No(String),
}

impl Support {
    /// True for [`Support::Yes`].
    pub fn is_yes(&self) -> bool {
        matches!(self, Support::Yes)
    }
}

/// Kind of a probe access.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AccessKind {
    /// Load (4 bytes in 32-bit modes, 8 bytes in long mode).
    Read,
    /// Store of [`Access::value`] (same width as a load).
    Write,
    /// Instruction fetch: the probe writes a tiny "jump back" stub at the
    /// target's physical address and jumps to it.
    Exec,
}

/// One memory access performed by real execution.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Access {
    /// Linear address.
    pub va: u64,
    /// Load, store or fetch.
    pub kind: AccessKind,
    /// Performed at CPL3 (true) or CPL0 (false).
    pub user: bool,
    /// Value stored by [`AccessKind::Write`].
    pub value: u64,
}

impl Access {
    /// Supervisor load.
    pub fn read(va: u64) -> Self {
        Access {
            va,
            kind: AccessKind::Read,
            user: false,
            value: 0,
        }
    }
    /// Supervisor store of `value`.
    pub fn write(va: u64, value: u64) -> Self {
        Access {
            va,
            kind: AccessKind::Write,
            user: false,
            value,
        }
    }
    /// Supervisor instruction fetch.
    pub fn exec(va: u64) -> Self {
        Access {
            va,
            kind: AccessKind::Exec,
            user: false,
            value: 0,
        }
    }
    /// The same access at CPL3.
    pub fn as_user(mut self) -> Self {
        self.user = true;
        self
    }
}

/// Page-fault error code bits.
pub mod pf {
    /// P: the fault was a protection violation (the page was present).
    pub const P: u64 = 1 << 0;
    /// W/R: the access was a write.
    pub const W: u64 = 1 << 1;
    /// U/S: the access was made at CPL3.
    pub const U: u64 = 1 << 2;
    /// RSVD: a reserved bit was set in some paging-structure entry.
    pub const RSVD: u64 = 1 << 3;
    /// I/D: the access was an instruction fetch.
    pub const ID: u64 = 1 << 4;
}

/// What happened when the guest performed one [`Access`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProbeOutcome {
    /// The access completed; for a load, the value read (data pages absent
    /// from the image read as whatever the backend has there).
    Ok(u64),
    /// #PF with CR2 and the error code (see [`pf`]).
    PageFault {
        /// Faulting linear address.
        cr2: u64,
        /// Error code pushed by the CPU.
        error_code: u64,
    },
    /// Another exception (e.g. #GP for a non-canonical address).
    Exception {
        /// Vector number.
        vector: u8,
    },
}

/// An MMU implementation that can check a page-table image.
pub trait MmuOracle {
    /// Human-readable backend name ("qemu-tcg", "kvm").
    fn name(&self) -> &str;
    /// Whether this backend can check `mode` here.
    fn supports(&mut self, mode: PagingMode) -> Support;
    /// Load an image; replaces any previous one.
    fn load(&mut self, img: &PagingImage) -> Result<(), OracleError>;
    /// Translate a linear address with the backend's walker (no permission
    /// checks); `None` if unmapped.
    fn translate(&mut self, va: u64) -> Result<Option<u64>, OracleError>;
    /// [`MmuOracle::translate`] for every address of `vas`, in order; a
    /// backend may batch the questions (QEMU pipelines its `gva2gpa`s).
    fn translate_many(&mut self, vas: &[u64]) -> Result<Vec<Option<u64>>, OracleError> {
        vas.iter().map(|&va| self.translate(va)).collect()
    }
    /// Every mapping of the loaded image, in linear-address order.
    fn mappings(&mut self) -> Result<Vec<Mapping>, OracleError>;
    /// Perform `accesses` by real execution, in order.
    fn probe(&mut self, accesses: &[Access]) -> Result<Vec<ProbeOutcome>, OracleError>;
}

impl fmt::Display for ProbeOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProbeOutcome::Ok(v) => write!(f, "ok({v:#x})"),
            ProbeOutcome::PageFault { cr2, error_code } => {
                write!(f, "#PF(cr2={cr2:#x}, err={error_code:#x})")
            }
            ProbeOutcome::Exception { vector } => write!(f, "exception {vector}"),
        }
    }
}
