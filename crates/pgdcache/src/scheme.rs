//! The six pgd allocation schemes compared on one harness.
//!
//! | scheme | pgd source | kernel part kept current by |
//! |---|---|---|
//! | `uncached` | 2.5.69 before the patch: a fresh page (2-level) or a ctor-less 32-byte object plus three fresh pmd pages (PAE), built on every `pgd_alloc` | conversions walk live address spaces (`mmlist`) |
//! | `slab-unsynced` | the first slabification: `pgd_cache`/`pmd_cache` with ctors | conversions walk live address spaces only — **cached pgds go stale (the bug)** |
//! | `slab-pgd-list` | the seed patch | conversions walk `pgd_list`: every pgd, live or cached, under `pgd_lock` |
//! | `slab-ticket` | the patch's proposed alternative | conversions bump a generation and walk live address spaces; a cached pgd with an old ticket is refreshed when its mm joins `mmlist` (fork, exec) |
//! | `slab-prepopulated` | PAE only: the seed's caches, but a cached pgd keeps its three user pmds (attached at the object's first `pgd_alloc`, given back by `pgd_dtor`), so a pgd and its pmds are one object-cache round trip; where Linux went later (pre-populated pmds) | nothing to propagate on PAE (the kernel pmd is shared) |
//! | `shared-kernel` | the modern design: no preconstruction; the kernel part points at lower-level tables preallocated at boot and shared by every pgd | nothing to propagate (impossible on 2-level, where large pages live in the pgd itself) |

use crate::prelude::*;
use core::fmt;
use core::str::FromStr;
use x86paging::PagingMode;

/// A pgd allocation scheme.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Scheme {
    /// 2.5.69 before the patch.
    #[serde(rename = "uncached")]
    Uncached,
    /// The original slabification, with the bug the seed fixes.
    #[serde(rename = "slab-unsynced")]
    SlabUnsynced,
    /// The seed patch: `pgd_list` under `pgd_lock`.
    #[serde(rename = "slab-pgd-list")]
    SlabPgdList,
    /// The ticket (generation) scheme the seed proposes.
    #[serde(rename = "slab-ticket")]
    SlabTicket,
    /// PAE pgds cached together with their user pmds.
    #[serde(rename = "slab-prepopulated")]
    SlabPrepopulated,
    /// Shared preallocated kernel tables (modern x86).
    #[serde(rename = "shared-kernel")]
    SharedKernel,
}

impl Scheme {
    /// All schemes, in report order.
    pub const ALL: [Scheme; 6] = [
        Scheme::Uncached,
        Scheme::SlabUnsynced,
        Scheme::SlabPgdList,
        Scheme::SlabTicket,
        Scheme::SlabPrepopulated,
        Scheme::SharedKernel,
    ];

    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Scheme::Uncached => "uncached",
            Scheme::SlabUnsynced => "slab-unsynced",
            Scheme::SlabPgdList => "slab-pgd-list",
            Scheme::SlabTicket => "slab-ticket",
            Scheme::SlabPrepopulated => "slab-prepopulated",
            Scheme::SharedKernel => "shared-kernel",
        }
    }

    /// True if pgds are preconstructed in an object cache with a ctor.
    pub fn preconstructed(self) -> bool {
        matches!(
            self,
            Scheme::SlabUnsynced
                | Scheme::SlabPgdList
                | Scheme::SlabTicket
                | Scheme::SlabPrepopulated
        )
    }

    /// True if a cached pgd keeps its user pmds (PAE `slab-prepopulated`).
    pub fn keeps_pmds(self) -> bool {
        self == Scheme::SlabPrepopulated
    }

    /// Whether the scheme exists in paging mode `mode`, and if not, why.
    pub fn supports(self, mode: PagingMode) -> Result<(), &'static str> {
        match (self, mode) {
            (Scheme::SharedKernel, PagingMode::TwoLevel) => Err(
                "2-level paging has no level below the pgd to share: the kernel's 4 MiB pages live in every pgd itself",
            ),
            (Scheme::SlabPrepopulated, m) if m != PagingMode::Pae => Err(
                "pre-populated pmds are a PAE design: 2-level has no pmd level, and 4/5-level allocate every user table on demand",
            ),
            _ => Ok(()),
        }
    }

    /// True if the scheme is meant to keep every pgd consistent. Only
    /// `slab-unsynced` is not: it is kept as the bug the checker must catch.
    pub fn intended_correct(self) -> bool {
        !matches!(self, Scheme::SlabUnsynced)
    }
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An unknown scheme name.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown scheme '{0}': expected one of uncached, slab-unsynced, slab-pgd-list, slab-ticket, slab-prepopulated, shared-kernel")]
pub struct BadScheme(pub String);

impl FromStr for Scheme {
    type Err = BadScheme;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Scheme::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| BadScheme(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for s in Scheme::ALL {
            assert_eq!(s.name().parse::<Scheme>(), Ok(s));
        }
        assert!("slab".parse::<Scheme>().is_err());
    }
}
