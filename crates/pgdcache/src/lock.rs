//! `pgd_lock` and its variants.
//!
//! The seed protects `pgd_list` with one spinlock, taken with interrupts
//! off (`spin_lock_irqsave`), by three paths: `pgd_ctor` (copy the kernel
//! part and link the pgd), `pgd_dtor` (unlink it) and `set_pmd_pte` (rewrite
//! the kernel entry of every listed pgd). Which lock implementation serves
//! those paths best under contention is one of the questions the seed's
//! author asked, so the lock is selectable:
//!
//! * [`LockKind::Tas`] — a test-and-set spinlock (`spin::mutex::SpinMutex`),
//!   what an i386 `spinlock_t` was in 2003;
//! * [`LockKind::Ticket`] — a FIFO ticket spinlock (`spin::mutex::TicketMutex`),
//!   what Linux adopted in 2.6.25;
//! * [`LockKind::Mutex`] — a parking mutex (`parking_lot::Mutex`): spins
//!   briefly, then sleeps; the stand-in for queued locks.  Without `std`
//!   there is nothing to sleep on, and it is a plain spinning mutex.
//!
//! Every variant counts acquisitions, contended acquisitions (the first
//! `try_lock` failed) and hold time, which the simulator reports.

use crate::prelude::*;
use core::fmt;
use core::str::FromStr;
use core::sync::atomic::{AtomicU64, Ordering};
use pgdcache_sync::lockdep::Held;
use pgdcache_sync::LockClass;

/// Which lock implementation guards `pgd_list` (and the other global lists).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum LockKind {
    /// Test-and-set spinlock.
    #[serde(rename = "tas")]
    Tas,
    /// Ticket (FIFO) spinlock.
    #[serde(rename = "ticket")]
    Ticket,
    /// Parking mutex (spin, then sleep).
    #[serde(rename = "mutex")]
    Mutex,
}

impl LockKind {
    /// All variants, for sweeps.
    pub const ALL: [LockKind; 3] = [LockKind::Tas, LockKind::Ticket, LockKind::Mutex];
    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            LockKind::Tas => "tas",
            LockKind::Ticket => "ticket",
            LockKind::Mutex => "mutex",
        }
    }
}

impl fmt::Display for LockKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An unknown lock name.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown lock '{0}': expected one of tas, ticket, mutex")]
pub struct BadLockKind(pub String);

impl FromStr for LockKind {
    type Err = BadLockKind;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        LockKind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| BadLockKind(s.to_string()))
    }
}

/// Lock statistics (a snapshot).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct LockStats {
    /// Times the lock was taken.
    pub acquisitions: u64,
    /// Times the first attempt found it held.
    pub contended: u64,
    /// Total nanoseconds the lock was held.
    pub hold_ns: u64,
    /// Longest single hold, in nanoseconds.
    pub max_hold_ns: u64,
}

#[derive(Default)]
struct Counters {
    acquisitions: AtomicU64,
    contended: AtomicU64,
    hold_ns: AtomicU64,
    max_hold_ns: AtomicU64,
}

#[cfg_attr(loom, allow(dead_code))]
enum Inner<T> {
    /// Under `--cfg loom` every kind is loom's mutex (loom cannot see
    /// inside a spinlock's busy-wait).
    #[cfg(loom)]
    Loom(loom::sync::Mutex<T>, LockKind),
    Tas(spin::mutex::SpinMutex<T>),
    Ticket(spin::mutex::TicketMutex<T>),
    Mutex(ParkingMutex<T>),
}

#[cfg(feature = "std")]
type ParkingMutex<T> = parking_lot::Mutex<T>;
#[cfg(feature = "std")]
type ParkingGuard<'a, T> = parking_lot::MutexGuard<'a, T>;
#[cfg(not(feature = "std"))]
type ParkingMutex<T> = spin::Mutex<T>;
#[cfg(not(feature = "std"))]
type ParkingGuard<'a, T> = spin::MutexGuard<'a, T>;

/// A lock of a selectable kind with contention counters, in a lock class
/// the lock-order checker knows.
pub struct StatLock<T> {
    inner: Inner<T>,
    class: &'static LockClass,
    counters: Counters,
    timed: bool,
}

/// Guard of a [`StatLock`]; records the hold time when dropped.
pub struct StatGuard<'a, T> {
    guard: GuardInner<'a, T>,
    counters: &'a Counters,
    /// Acquisition time on the crate's clock (`None`: not timed).
    since: Option<u64>,
    /// The lock-order checker's record; dropped after `guard` (fields
    /// drop in order), i.e. after the lock is released.
    _held: Held,
}

#[cfg_attr(loom, allow(dead_code))]
enum GuardInner<'a, T> {
    #[cfg(loom)]
    Loom(loom::sync::MutexGuard<'a, T>),
    Tas(spin::mutex::SpinMutexGuard<'a, T>),
    Ticket(spin::mutex::TicketMutexGuard<'a, T>),
    Mutex(ParkingGuard<'a, T>),
}

impl<T> StatLock<T> {
    /// A lock of kind `kind` and class `class` around `value`. With
    /// `timed`, hold times are measured (two clock reads per acquisition).
    pub fn new(class: &'static LockClass, kind: LockKind, value: T, timed: bool) -> Self {
        #[cfg(loom)]
        let inner = Inner::Loom(loom::sync::Mutex::new(value), kind);
        #[cfg(not(loom))]
        let inner = match kind {
            LockKind::Tas => Inner::Tas(spin::mutex::SpinMutex::new(value)),
            LockKind::Ticket => Inner::Ticket(spin::mutex::TicketMutex::new(value)),
            LockKind::Mutex => Inner::Mutex(ParkingMutex::new(value)),
        };
        StatLock {
            inner,
            class,
            counters: Counters::default(),
            timed,
        }
    }

    /// The lock's kind.
    pub fn kind(&self) -> LockKind {
        match self.inner {
            #[cfg(loom)]
            Inner::Loom(_, k) => k,
            Inner::Tas(_) => LockKind::Tas,
            Inner::Ticket(_) => LockKind::Ticket,
            Inner::Mutex(_) => LockKind::Mutex,
        }
    }

    /// Takes the lock (`spin_lock_irqsave`).
    #[cfg_attr(feature = "std", track_caller)]
    pub fn lock(&self) -> StatGuard<'_, T> {
        let held = Held::acquire_instance(self.class, 0, self as *const Self as usize);
        let (guard, contended) = match &self.inner {
            #[cfg(loom)]
            Inner::Loom(l, _) => match l.try_lock() {
                Ok(g) => (GuardInner::Loom(g), false),
                Err(_) => (
                    GuardInner::Loom(l.lock().unwrap_or_else(|e| e.into_inner())),
                    true,
                ),
            },
            Inner::Tas(l) => match l.try_lock() {
                Some(g) => (GuardInner::Tas(g), false),
                None => (GuardInner::Tas(l.lock()), true),
            },
            Inner::Ticket(l) => match l.try_lock() {
                Some(g) => (GuardInner::Ticket(g), false),
                None => (GuardInner::Ticket(l.lock()), true),
            },
            Inner::Mutex(l) => match l.try_lock() {
                Some(g) => (GuardInner::Mutex(g), false),
                None => (GuardInner::Mutex(l.lock()), true),
            },
        };
        self.counters.acquisitions.fetch_add(1, Ordering::Relaxed);
        if contended {
            self.counters.contended.fetch_add(1, Ordering::Relaxed);
        }
        StatGuard {
            guard,
            counters: &self.counters,
            since: if self.timed {
                crate::time::now_ns()
            } else {
                None
            },
            _held: held,
        }
    }

    /// The lock's class.
    pub fn class(&self) -> &'static LockClass {
        self.class
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> LockStats {
        LockStats {
            acquisitions: self.counters.acquisitions.load(Ordering::Relaxed),
            contended: self.counters.contended.load(Ordering::Relaxed),
            hold_ns: self.counters.hold_ns.load(Ordering::Relaxed),
            max_hold_ns: self.counters.max_hold_ns.load(Ordering::Relaxed),
        }
    }
}

impl<T> core::ops::Deref for StatGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        match &self.guard {
            #[cfg(loom)]
            GuardInner::Loom(g) => g,
            GuardInner::Tas(g) => g,
            GuardInner::Ticket(g) => g,
            GuardInner::Mutex(g) => g,
        }
    }
}

impl<T> core::ops::DerefMut for StatGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        match &mut self.guard {
            #[cfg(loom)]
            GuardInner::Loom(g) => &mut *g,
            GuardInner::Tas(g) => &mut *g,
            GuardInner::Ticket(g) => &mut *g,
            GuardInner::Mutex(g) => &mut *g,
        }
    }
}

impl<T> Drop for StatGuard<'_, T> {
    fn drop(&mut self) {
        if self.since.is_some() {
            let ns = crate::time::elapsed_ns(self.since);
            self.counters.hold_ns.fetch_add(ns, Ordering::Relaxed);
            self.counters.max_hold_ns.fetch_max(ns, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_excludes_and_counts() {
        for kind in LockKind::ALL {
            let l = std::sync::Arc::new(StatLock::new(
                &pgdcache_sync::classes::PGD_LOCK,
                kind,
                0u64,
                true,
            ));
            let hs: Vec<_> = (0..2)
                .map(|_| {
                    let l = l.clone();
                    std::thread::spawn(move || {
                        for _ in 0..10_000 {
                            *l.lock() += 1;
                        }
                    })
                })
                .collect();
            for h in hs {
                h.join().unwrap();
            }
            assert_eq!(*l.lock(), 20_000, "{kind}");
            assert_eq!(l.stats().acquisitions, 20_001, "{kind}");
            assert_eq!(l.kind(), kind);
        }
        assert_eq!("ticket".parse::<LockKind>(), Ok(LockKind::Ticket));
        assert!("mcs".parse::<LockKind>().is_err());
    }
}
