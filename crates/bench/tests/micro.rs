//! The micro-measurement subjects run and give positive timings.

use pgdbench::micro::*;
use pgdcache::Scheme;
use x86paging::PagingMode;

#[test]
fn subjects_run() {
    let mut a = AllocFree::new(PagingMode::TwoLevel, Scheme::SlabPgdList).unwrap();
    let mut f = Freelist::new(PagingMode::TwoLevel).unwrap();
    let t = interleaved(&mut [&mut a, &mut f], 2, 100).unwrap();
    assert!(t
        .iter()
        .all(|t| t.median_ns > 0.0 && t.min_ns <= t.median_ns));
    let mut fe = ForkExit::new(PagingMode::Pae, Scheme::Uncached, 28, 64 << 20).unwrap();
    fe.run(3).unwrap();
    let mut c = CpaCycle::new(PagingMode::TwoLevel, Scheme::SlabTicket, 20, 2).unwrap();
    c.run(2).unwrap();
    assert!(c.join_cost(5).unwrap() > 0.0);
    assert_eq!(c.kernel.stats().pgd_allocs, 20);
    assert_eq!(task_of(4096).pages(), 4096);
    assert_eq!(task_of(28), pgdcache::mm::TaskSize::SMALL);
}

/// A paired ratio is decided by the typical round, not by one lucky round
/// of one side (which is what a ratio of two minima would report).
#[test]
fn paired_ratio_ignores_one_lucky_round() {
    let slow = [10.0, 10.0, 10.0, 10.0, 10.0];
    let fast = [5.0, 5.0, 1.0, 5.0, 5.0]; // round 2: the other side was disturbed
    assert_eq!(paired_ratio(&slow, &fast), 2.0);
    let mins = 10.0 / 1.0;
    assert!(paired_ratio(&slow, &fast) < mins);
    assert!(paired_ratio(&[], &[]).is_nan());
    let mut a = AllocFree::new(PagingMode::TwoLevel, Scheme::Uncached).unwrap();
    let mut b = AllocFree::new(PagingMode::TwoLevel, Scheme::SlabPgdList).unwrap();
    let r = interleaved_rounds(&mut [&mut a, &mut b], 3, 200).unwrap();
    assert_eq!((r.len(), r[0].len()), (2, 3));
    assert!(
        paired_ratio(&r[0], &r[1]) > 1.0,
        "a cached pgd is cheaper: {r:?}"
    );
}
