//! Error types: small enums, one per operation, deriving
//! `core::error::Error` through `thiserror` (which works in `no_std`).

use alloc::string::String;

use crate::page::PageAllocError;

/// `kmem_cache_create` failures: the parameters do not describe a cache.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CreateError {
    /// Object size 0.
    #[error("object size is zero")]
    ZeroSize,
    /// Alignment not a power of two or larger than `PAGE_SIZE`.
    #[error("alignment {0} is not a power of two <= PAGE_SIZE")]
    BadAlign(usize),
    /// Object larger than the largest slab (`PAGE_SIZE << MAX_ORDER`).
    #[error("object size {0} exceeds the largest slab")]
    TooLarge(usize),
    /// A cache needs at least one CPU slot.
    #[error("number of CPUs is zero")]
    NoCpus,
    /// `batchcount` must be in `1..=limit` and `limit` at most `MAX_LIMIT`.
    #[error("invalid tunables limit={limit} batchcount={batchcount}")]
    BadTunables {
        /// Requested per-CPU array size.
        limit: usize,
        /// Requested transfer batch.
        batchcount: usize,
    },
    /// A [`ResizePolicy`](crate::ResizePolicy) needs `contention >= 1`,
    /// `window >= contention` and `max_factor >= 1`.
    #[error("invalid resize policy: need contention >= 1, window >= contention, max_factor >= 1")]
    BadResizePolicy,
}

/// `kmem_cache_alloc` failures.  The cache stays usable after any of them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllocError {
    /// The cache had no free object and the page source refused to grow it.
    #[error("cannot grow cache: {0}")]
    OutOfMemory(#[source] PageAllocError),
    /// The page source returned a frame that is not naturally aligned; it was
    /// given back.
    #[error("page source returned misaligned pages")]
    MisalignedPages,
    /// `alloc_on(cpu)` with `cpu >= ncpus`.
    #[error("cpu {cpu} out of range (ncpus {ncpus})")]
    InvalidCpu {
        /// The CPU asked for.
        cpu: usize,
        /// The cache's number of CPU slots.
        ncpus: usize,
    },
}

/// `kmem_cache_free` failures.  The object (if it was one) is unchanged and
/// the cache's state is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FreeError {
    /// The pointer is not inside any slab of this cache.
    #[error("pointer does not belong to this cache")]
    Foreign,
    /// The pointer is inside a slab of this cache but not at the start of an
    /// object (colour area, tail, or the middle of an object).
    #[error("pointer is not at an object boundary")]
    NotObjectStart,
    /// The object is not currently allocated (double free).
    #[error("object freed twice (not allocated)")]
    DoubleFree,
    /// Debug mode: the user's verify callback says the object is not in
    /// constructed state.  The caller still owns it.
    #[error("object not in constructed state: {0}")]
    Verify(String),
    /// `free_on(cpu, ..)` with `cpu >= ncpus`.
    #[error("cpu {cpu} out of range (ncpus {ncpus})")]
    InvalidCpu {
        /// The CPU asked for.
        cpu: usize,
        /// The cache's number of CPU slots.
        ncpus: usize,
    },
}

/// `tune` failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("invalid tunables limit={limit} batchcount={batchcount}")]
pub struct TuneError {
    /// Requested per-CPU array size.
    pub limit: usize,
    /// Requested transfer batch.
    pub batchcount: usize,
}

/// `claim_cpu` failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ClaimError {
    /// `claim_cpu(cpu)` with `cpu >= ncpus`.
    #[error("cpu {cpu} out of range (ncpus {ncpus})")]
    InvalidCpu {
        /// The CPU asked for.
        cpu: usize,
        /// The cache's number of CPU slots.
        ncpus: usize,
    },
    /// Another [`CpuToken`](crate::CpuToken) for this CPU exists.
    #[error("cpu {cpu} is already claimed")]
    Claimed {
        /// The CPU asked for.
        cpu: usize,
    },
}
