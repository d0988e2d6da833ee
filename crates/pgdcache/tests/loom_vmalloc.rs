//! `loom` model of `vfree` against `vmalloc` (`--cfg loom`; run with
//! `RUSTFLAGS="--cfg loom" cargo test -p pgdcache --release --test loom_vmalloc`).
//!
//! One thread frees an area while another allocates one of the same size,
//! so the allocator may hand the freed range straight back. The invariant
//! (docs/CORRECTNESS.md, "vmalloc areas"): once both return, every page of
//! every area on `vmlist` maps that area's own frame in `swapper_pg_dir`
//! — the checker's `VmallocUnmapped` — and the allocation succeeded.
//!
//! The fixed `vfree` unmaps under `vmlist_lock` before the range can be
//! reused (Linux's `remove_vm_area`). The negative model runs the old order
//! (`Bug::VfreeUnmapsAfterUnlock`: off the list, unlock, then unmap) and
//! asserts that loom finds the interleaving where the late unmap clears the
//! new area's pte.
#![cfg(loom)]

use loom::thread;
use pgdcache::{Bug, Kernel, KernelConfig, Scheme};
use physmem::SimMemory;
use std::sync::Arc;
use x86paging::{Level, PagingMode};

fn boot(bug: Bug) -> Arc<Kernel> {
    let pm = Arc::new(SimMemory::new(32 << 20).expect("RAM"));
    let k = Kernel::new(
        pm.clone(),
        &KernelConfig::new(PagingMode::TwoLevel, Scheme::SlabPgdList),
    )
    .expect("boot");
    k.inject_bug(bug);
    // The pte of the first vmalloc page is the word the two threads race
    // on: make it a loom scheduling point (besides vmlist_lock itself).
    let (start, _) = k.vmalloc_area();
    let index = PagingMode::TwoLevel.index(start, Level::Pte);
    pm.mem().watch(index as u64 * 4);
    Arc::new(k)
}

fn builder() -> loom::model::Builder {
    let mut b = loom::model::Builder::new();
    b.preemption_bound = Some(3);
    b
}

fn vfree_vs_vmalloc(bug: Bug) {
    builder().check(move || {
        let k = boot(bug);
        let old = k.vmalloc(1).expect("vmalloc");
        let k2 = k.clone();
        let t = thread::spawn(move || {
            k2.vfree(old).expect("vfree");
        });
        let new = k.vmalloc(1);
        t.join().expect("join");
        let r = k.verify().expect("verify");
        assert!(r.is_clean(), "{:?}", r.violations);
        // With the fix the allocation never meets a pte still present.
        let new = new.expect("vmalloc after a concurrent vfree");
        k.vfree(new).expect("vfree");
        let r = k.verify().expect("verify");
        assert!(r.is_clean(), "{:?}", r.violations);
        assert_eq!(r.leaked_frames, 0);
    });
}

#[test]
fn vfree_unmaps_under_vmlist_lock() {
    vfree_vs_vmalloc(Bug::None);
}

fn failure_message(model: impl FnOnce() + std::panic::UnwindSafe) -> String {
    let err = std::panic::catch_unwind(model).expect_err("loom must find the race");
    err.downcast_ref::<String>()
        .cloned()
        .or_else(|| err.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

/// The code before the fix: loom finds the interleaving where the late
/// unmap clears the pte of the area the concurrent `vmalloc` was just
/// handed, which the checker reports as `VmallocUnmapped`.
#[test]
fn negative_vfree_unmapping_after_unlock_is_found() {
    let msg = failure_message(|| vfree_vs_vmalloc(Bug::VfreeUnmapsAfterUnlock));
    assert!(
        msg.contains("VmallocUnmapped"),
        "the model failed, but not on a cleared vmalloc pte: {msg}"
    );
}

/// The old order with only the leaf check added: the same interleaving now
/// meets the freed area's pte still present, and `vmalloc` refuses instead
/// of overwriting it — loud, not silent, but still a failed allocation.
#[test]
fn negative_leaf_check_alone_turns_the_race_into_a_refusal() {
    let msg = failure_message(|| vfree_vs_vmalloc(Bug::VfreeUnmapsAfterUnlockLeafChecked));
    assert!(
        msg.contains("AlreadyMapped"),
        "the model failed, but not on the refused vmalloc: {msg}"
    );
}
