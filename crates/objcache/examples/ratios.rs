//! Prints the benchmark ratio table (all numbers measured in this one run).
//!
//! `cargo run -p objcache --release --example ratios`
//!
//! Every workload runs 11 rounds, each round running every contender
//! once, back to back, `N` alloc+free pairs per thread; "2 threads" runs the
//! same loop on two threads at once and reports wall time / total pairs
//! (aggregate throughput).  Times are the best (and, in parentheses, the
//! median) of the rounds.  Ratios are *paired*: the ratio of two contenders
//! is computed per round and the median (and lower quartile) of those
//! per-round ratios is printed, so load that drifts over the run (this is a
//! shared 2-vCPU VM) hits both sides of each ratio alike.  One-thread figures
//! are measured on a freshly spawned thread exactly like the two-thread ones
//! (not on the main thread), so 2T/1T compares like with like.  The pgd rows
//! report the best of the rounds.

#[path = "../benches/common.rs"]
mod common;
use common::*;

fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(2_000_000);
    print_ratio_tables(n, 11);
}
