//! `flush_kernel_map` on every CPU: the TLB shootdown a kernel-mapping
//! change must finish before the tables it replaced are reused.
//!
//! The pgd system cannot flush a TLB itself: the simulator flushes its
//! software TLBs, a real kernel sends an IPI to every CPU and reloads CR3
//! (or toggles CR4.PGE). Whoever runs the system installs that as the hook;
//! `global_flush_tlb` (change_page_attr) and `vfree` call it.

use alloc::sync::Arc;

type FlushHook = Arc<dyn Fn() + Send + Sync>;

/// The installed TLB shootdown.
pub(crate) struct TlbFlush {
    /// Read on every flush, written once when the runner installs its
    /// shootdown; a reader-writer lock so flushes never serialise.
    hook: crate::sync::RwLock<Option<FlushHook>>,
}

impl TlbFlush {
    pub(crate) fn new() -> Self {
        TlbFlush {
            hook: crate::sync::RwLock::new(&crate::sync::classes::FLUSH_HOOK, None),
        }
    }

    /// Installs `f` as the flush of every CPU's TLB.
    pub(crate) fn set(&self, f: impl Fn() + Send + Sync + 'static) {
        *self.hook.write() = Some(Arc::new(f));
    }

    /// Flushes every CPU's TLB (nothing if no hook is installed).
    pub(crate) fn flush_all(&self) {
        let hook = self.hook.read().clone();
        if let Some(h) = hook {
            h();
        }
    }
}
