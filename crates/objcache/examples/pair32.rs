//! The 32-byte pair targets of issue #17 in one run: objcache per call and
//! through a claimed CPU (`CpuToken`) against glibc malloc, paired by round.
//!
//! `cargo run -p objcache --release --example pair32 [rounds] [pairs]`
//! (default 11 rounds of 2e6 pairs).  Ratios are glibc ns / objcache ns:
//! the median of the per-round ratios and its inter-quartile range.

#[path = "../benches/common.rs"]
mod common;

fn main() {
    let mut args = std::env::args().skip(1);
    let rounds = args.next().and_then(|s| s.parse().ok()).unwrap_or(11);
    let pairs = args
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2_000_000);
    common::print_pair32(rounds, pairs);
}
