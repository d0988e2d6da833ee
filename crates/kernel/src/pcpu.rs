//! Each CPU's claim on the pgd system: its [`PgdCpu`] token, kept in a
//! per-CPU slot as a kernel keeps its per-CPU arrays.
//!
//! A CPU claims its token once (`get_cpu`, [`Kernel::claim_cpu`]) and does
//! every exec, fork, exit and `pgd_alloc`/`pgd_free` through it ([`with`]):
//! a cache hit is a pop from the CPU's own array, with no lock and no
//! atomic read-modify-write. Remote operations on the caches — the
//! checker's walk (`Kernel::verify`, `cache_pgds`), `slab_stats`, `shrink`
//! — are *requests* the owner serves at its next operation or at a
//! quiescent point ([`serve`]). So:
//!
//! * every wait loop of a CPU that holds its token calls [`relax`] (or
//!   [`delay_us`]), which serves: the rendezvous before the APs start, the
//!   BSP's storm loop, the shootdown handshake on both sides, the wait for
//!   IPI acknowledgements in `flush_tlb_others`, the end-of-run rendezvous;
//! * a CPU that wants a remote operation itself first gives its token back
//!   ([`put_cpu`]): a request for its own slot would wait for itself (the
//!   BSP does that around the checker, see `run.rs`);
//! * an AP drops its token after its last serve, before it halts for good,
//!   so the BSP's closing checks and leak check take the slot directly.
//!
//! Interrupt and exception handlers (the TLB-shootdown IPI, the #PF
//! handler's `vmalloc_fault`) never touch the token: `trap_entry` marks the
//! CPU as in a handler ([`IrqGuard`]) and [`with`]/[`serve`] refuse there.
//!
//! Kernel spin locks (console, heap, totals, vmalloc areas) spin without
//! serving; that cannot deadlock because no CPU issues a remote cache
//! operation while it holds one of them.

use crate::smp::{this_cpu, MAX_CPUS};
use core::cell::RefCell;
use core::fmt;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use pgdcache::{Kernel, KernelError, PgdCpu};
use physmem::Lowmem;

/// A CPU's token on the booted pgd system.
pub type Token = PgdCpu<'static, Lowmem>;

/// One CPU's token, touched only by that CPU, outside interrupt context.
struct Slot(RefCell<Option<Token>>);

// SAFETY: slot `i` of `SLOTS` is only ever accessed by CPU `i` (every
// access indexes with `this_cpu()`, which is the running stack's CPU, and
// each CPU runs on its own stack), and never from an interrupt or
// exception handler (`IN_IRQ` makes `with`/`serve` refuse there; `get_cpu`
// and `put_cpu` are called only from the CPUs' main flow). So the
// `RefCell` is never reached from two contexts at once, and the token it
// holds never moves between CPUs.
unsafe impl Sync for Slot {}

static SLOTS: [Slot; MAX_CPUS] = [const { Slot(RefCell::new(None)) }; MAX_CPUS];

/// Interrupt/exception nesting depth of each CPU (see [`IrqGuard`]).
static IN_IRQ: [AtomicUsize; MAX_CPUS] = [const { AtomicUsize::new(0) }; MAX_CPUS];
/// Whether each CPU ever claimed its token.
static CLAIMED: [AtomicBool; MAX_CPUS] = [const { AtomicBool::new(false) }; MAX_CPUS];
/// pgd-system operations (exec, fork, exit, pgd pairs) each CPU ran
/// through its token.
static TOKEN_OPS: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
/// Quiescent points (serves while holding the token) of each CPU.
static SERVES: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];

/// Why the token could not be used.
#[derive(Debug)]
pub enum TokenError {
    /// `Kernel::claim_cpu` refused (another holder, or a bad CPU number).
    Claim(KernelError),
    /// This CPU holds no token (never claimed, or already put).
    NotHeld,
    /// This CPU already holds its token.
    AlreadyHeld,
    /// The token is in use further up this CPU's stack.
    Busy,
    /// Called from an interrupt or exception handler.
    InIrq,
}

impl fmt::Display for TokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenError::Claim(e) => write!(f, "claim_cpu: {e}"),
            TokenError::NotHeld => f.write_str("this CPU holds no pgd token"),
            TokenError::AlreadyHeld => f.write_str("this CPU already holds its pgd token"),
            TokenError::Busy => f.write_str("the pgd token is in use (re-entered)"),
            TokenError::InIrq => f.write_str("the pgd token used from an interrupt handler"),
        }
    }
}

/// Marks the running CPU as inside an interrupt or exception handler for
/// its life (`trap_entry` holds one).
pub struct IrqGuard(usize);

impl IrqGuard {
    /// Enters handler context on this CPU.
    pub fn enter() -> IrqGuard {
        let me = this_cpu();
        IN_IRQ[me].fetch_add(1, Ordering::Relaxed);
        IrqGuard(me)
    }
}

impl Drop for IrqGuard {
    fn drop(&mut self) {
        IN_IRQ[self.0].fetch_sub(1, Ordering::Relaxed);
    }
}

fn in_irq(me: usize) -> bool {
    IN_IRQ[me].load(Ordering::Relaxed) > 0
}

/// `get_cpu()` for good: this CPU claims its slots of `k`'s caches.
pub fn get_cpu(k: &'static Kernel<Lowmem>) -> Result<(), TokenError> {
    let me = this_cpu();
    if in_irq(me) {
        return Err(TokenError::InIrq);
    }
    let mut slot = SLOTS[me].0.try_borrow_mut().map_err(|_| TokenError::Busy)?;
    if slot.is_some() {
        return Err(TokenError::AlreadyHeld);
    }
    *slot = Some(k.claim_cpu(me).map_err(TokenError::Claim)?);
    CLAIMED[me].store(true, Ordering::Relaxed);
    Ok(())
}

/// `put_cpu()`: this CPU gives its token back (after its last serve); its
/// slots stay in the caches, reachable directly by remote operations.
pub fn put_cpu() -> Result<(), TokenError> {
    let me = this_cpu();
    if in_irq(me) {
        return Err(TokenError::InIrq);
    }
    let mut slot = SLOTS[me].0.try_borrow_mut().map_err(|_| TokenError::Busy)?;
    let token = slot.take().ok_or(TokenError::NotHeld)?;
    drop(slot);
    drop(token);
    Ok(())
}

/// Whether this CPU holds its token.
pub fn held() -> bool {
    SLOTS[this_cpu()]
        .0
        .try_borrow()
        .map(|s| s.is_some())
        .unwrap_or(true)
}

/// Runs one pgd-system operation through this CPU's token.
pub fn with<R>(f: impl FnOnce(&mut Token) -> R) -> Result<R, TokenError> {
    let me = this_cpu();
    if in_irq(me) {
        return Err(TokenError::InIrq);
    }
    let mut slot = SLOTS[me].0.try_borrow_mut().map_err(|_| TokenError::Busy)?;
    let token = slot.as_mut().ok_or(TokenError::NotHeld)?;
    TOKEN_OPS[me].fetch_add(1, Ordering::Relaxed);
    Ok(f(token))
}

/// A quiescent point: hands this CPU's slots to any remote operation
/// waiting for them. A no-op without a token, inside an operation on the
/// token, or in an interrupt handler.
pub fn serve() {
    let me = this_cpu();
    if in_irq(me) {
        return;
    }
    if let Ok(mut slot) = SLOTS[me].0.try_borrow_mut() {
        if let Some(t) = slot.as_mut() {
            t.serve();
            SERVES[me].fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// One turn of a wait loop: serve, then `pause`.
pub fn relax() {
    serve();
    core::hint::spin_loop();
}

/// Busy-waits `us` microseconds, serving all along.
pub fn delay_us(us: u64) {
    let end = crate::arch::rdtsc().wrapping_add(crate::time::tsc_hz() / 1_000_000 * us);
    while crate::arch::rdtsc() < end {
        relax();
    }
}

/// What the CPUs did with their tokens (the `result` event's `token`).
pub struct Totals {
    /// CPUs that claimed their token.
    pub cpus: usize,
    /// Operations through tokens, all CPUs.
    pub ops: u64,
    /// Quiescent points, all CPUs.
    pub serves: u64,
}

/// Sums the counters of the first `n` CPUs.
pub fn totals(n: usize) -> Totals {
    let n = n.min(MAX_CPUS);
    Totals {
        cpus: CLAIMED[..n]
            .iter()
            .filter(|c| c.load(Ordering::Relaxed))
            .count(),
        ops: TOKEN_OPS[..n]
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum(),
        serves: SERVES[..n].iter().map(|c| c.load(Ordering::Relaxed)).sum(),
    }
}
