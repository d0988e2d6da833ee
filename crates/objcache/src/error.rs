//! Error types: small enums, one per operation, `Display` written by hand so
//! they work in `no_std`.

use alloc::string::String;
use core::fmt;

use crate::page::PageAllocError;

/// `kmem_cache_create` failures: the parameters do not describe a cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CreateError {
    /// Object size 0.
    ZeroSize,
    /// Alignment not a power of two or larger than `PAGE_SIZE`.
    BadAlign(usize),
    /// Object larger than the largest slab (`PAGE_SIZE << MAX_ORDER`).
    TooLarge(usize),
    /// A cache needs at least one CPU slot.
    NoCpus,
    /// `batchcount` must be in `1..=limit` and `limit` at most `MAX_LIMIT`.
    BadTunables {
        /// Requested per-CPU array size.
        limit: usize,
        /// Requested transfer batch.
        batchcount: usize,
    },
    /// A [`ResizePolicy`](crate::ResizePolicy) needs `contention >= 1`,
    /// `window >= contention` and `max_factor >= 1`.
    BadResizePolicy,
}

impl fmt::Display for CreateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ZeroSize => f.write_str("object size is zero"),
            Self::BadAlign(a) => write!(f, "alignment {a} is not a power of two <= PAGE_SIZE"),
            Self::TooLarge(s) => write!(f, "object size {s} exceeds the largest slab"),
            Self::NoCpus => f.write_str("number of CPUs is zero"),
            Self::BadTunables { limit, batchcount } => {
                write!(f, "invalid tunables limit={limit} batchcount={batchcount}")
            }
            Self::BadResizePolicy => f.write_str(
                "invalid resize policy: need contention >= 1, window >= contention, max_factor >= 1",
            ),
        }
    }
}

/// `kmem_cache_alloc` failures.  The cache stays usable after any of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllocError {
    /// The cache had no free object and the page source refused to grow it.
    OutOfMemory(PageAllocError),
    /// The page source returned a frame that is not naturally aligned; it was
    /// given back.
    MisalignedPages,
    /// `alloc_on(cpu)` with `cpu >= ncpus`.
    InvalidCpu {
        /// The CPU asked for.
        cpu: usize,
        /// The cache's number of CPU slots.
        ncpus: usize,
    },
}

impl fmt::Display for AllocError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::OutOfMemory(e) => write!(f, "cannot grow cache: {e}"),
            Self::MisalignedPages => f.write_str("page source returned misaligned pages"),
            Self::InvalidCpu { cpu, ncpus } => write!(f, "cpu {cpu} out of range (ncpus {ncpus})"),
        }
    }
}

/// `kmem_cache_free` failures.  The object (if it was one) is unchanged and
/// the cache's state is unchanged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FreeError {
    /// The pointer is not inside any slab of this cache.
    Foreign,
    /// The pointer is inside a slab of this cache but not at the start of an
    /// object (colour area, tail, or the middle of an object).
    NotObjectStart,
    /// The object is not currently allocated (double free).
    DoubleFree,
    /// Debug mode: the user's verify callback says the object is not in
    /// constructed state.  The caller still owns it.
    Verify(String),
    /// `free_on(cpu, ..)` with `cpu >= ncpus`.
    InvalidCpu {
        /// The CPU asked for.
        cpu: usize,
        /// The cache's number of CPU slots.
        ncpus: usize,
    },
}

impl fmt::Display for FreeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Foreign => f.write_str("pointer does not belong to this cache"),
            Self::NotObjectStart => f.write_str("pointer is not at an object boundary"),
            Self::DoubleFree => f.write_str("object freed twice (not allocated)"),
            Self::Verify(why) => write!(f, "object not in constructed state: {why}"),
            Self::InvalidCpu { cpu, ncpus } => write!(f, "cpu {cpu} out of range (ncpus {ncpus})"),
        }
    }
}

/// `tune` failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TuneError {
    /// Requested per-CPU array size.
    pub limit: usize,
    /// Requested transfer batch.
    pub batchcount: usize,
}

impl fmt::Display for TuneError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid tunables limit={} batchcount={}",
            self.limit, self.batchcount
        )
    }
}

#[cfg(feature = "std")]
impl std::error::Error for CreateError {}
#[cfg(feature = "std")]
impl std::error::Error for AllocError {}
#[cfg(feature = "std")]
impl std::error::Error for FreeError {}
#[cfg(feature = "std")]
impl std::error::Error for TuneError {}
