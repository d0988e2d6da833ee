//! The pgd system's errors: one enum, each variant typed, each keeping the
//! error it came from as its `source()`.
//!
//! A failure deep in the stack (the buddy allocator out of frames, the
//! object cache refusing a free, a page-table access outside RAM) reaches the
//! caller as itself, wrapped once with what the pgd system was doing.

use crate::scheme::Scheme;
use physmem::{ListError, MemError, PhysAddr};
use x86paging::boot::BootError;
use x86paging::map::MapError;
use x86paging::{EntryError, PagingMode};

/// Errors of the pgd system.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KernelError {
    /// The scheme cannot exist in this paging mode.
    #[error("scheme {scheme} is impossible in {mode} paging: {why}")]
    SchemeUnsupported {
        /// The scheme.
        scheme: Scheme,
        /// The mode.
        mode: PagingMode,
        /// Why.
        why: &'static str,
    },
    /// The page allocator had no frame for `what`.
    #[error("out of memory: no frame for {what}")]
    FrameAlloc {
        /// What the frame was for.
        what: &'static str,
        /// The allocator's refusal.
        #[source]
        source: physmem::AllocError,
    },
    /// An object cache had no object.
    #[error("out of memory in {cache}")]
    CacheAlloc {
        /// `pgd_cache` or `pmd_cache`.
        cache: &'static str,
        /// The cache's refusal.
        #[source]
        source: objcache::AllocError,
    },
    /// An object cache refused an object given back.
    #[error("{cache} refused a free")]
    CacheFree {
        /// `pgd_cache` or `pmd_cache`.
        cache: &'static str,
        /// The cache's refusal.
        #[source]
        source: objcache::FreeError,
    },
    /// A CPU's slot of an object cache could not be claimed (out of range,
    /// or another thread acts as that CPU).
    #[error("claiming cpu {cpu}")]
    CpuClaim {
        /// The CPU.
        cpu: usize,
        /// Why.
        #[source]
        source: objcache::ClaimError,
    },
    /// An object cache could not be created.
    #[error("creating {cache}")]
    CacheCreate {
        /// `pgd_cache` or `pmd_cache`.
        cache: &'static str,
        /// Why.
        #[source]
        source: objcache::CreateError,
    },
    /// A frame given back to the page allocator was refused.
    #[error("freeing a page-table frame")]
    FrameFree(#[source] physmem::FreeError),
    /// Booting the kernel page tables failed.
    #[error("booting swapper_pg_dir")]
    Boot(#[from] BootError),
    /// A page-table entry could not be encoded.
    #[error("encoding a page-table entry")]
    Entry(#[from] EntryError),
    /// A page-table edit failed.
    #[error("editing page tables")]
    Map(#[from] MapError),
    /// `pgd_list` refused a link or unlink (a pgd on two lists, or on none).
    #[error("pgd_list")]
    PgdList(#[from] ListError),
    /// A pgd handed to the kernel is not one it allocated, or is in the wrong state.
    #[error("bad pgd {0}: {1}")]
    BadPgd(PhysAddr, &'static str),
    /// A CPU claimed with a shape in its type
    /// ([`Kernel::claim_whole_cpu`](crate::Kernel::claim_whole_cpu),
    /// [`Kernel::claim_pae_cpu`](crate::Kernel::claim_pae_cpu)) on a kernel
    /// whose pgds have another shape.
    #[error("{scheme} in {mode} paging has no {wanted} path")]
    WrongShape {
        /// The scheme.
        scheme: Scheme,
        /// The mode.
        mode: PagingMode,
        /// The caches the claimed shape needs.
        wanted: &'static str,
    },
    /// Physical memory access failed (a bug: tables are always in RAM).
    #[error("physical memory access")]
    Mem(#[from] MemError),
}

impl KernelError {
    /// True when the error is an allocation failure (of a frame or an
    /// object), the one a caller may retry after freeing memory.
    pub fn is_out_of_memory(&self) -> bool {
        matches!(
            self,
            KernelError::FrameAlloc { .. } | KernelError::CacheAlloc { .. }
        )
    }
}
