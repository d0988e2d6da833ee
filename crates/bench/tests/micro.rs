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
