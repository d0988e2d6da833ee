//! The 32-byte pair targets of issue #17 in one run: objcache per call and
//! through a claimed CPU (`CpuToken`) against glibc malloc, paired by round.
//!
//! `cargo run -p objcache --release --example pair32 [rounds] [pairs]`
//! (default 11 rounds of 2e6 pairs).  Ratios are glibc ns / objcache ns,
//! the median of the per-round ratios and its inter-quartile range.

fn main() -> Result<(), objcache::pairbench::PairBenchError> {
    let mut args = std::env::args().skip(1);
    let rounds = args.next().and_then(|s| s.parse().ok()).unwrap_or(11);
    let pairs = args
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2_000_000);
    let r = objcache::pairbench::pair_rounds_32b(rounds, pairs)?;
    let s = |v: &[f64]| benchstats::Summary::of(v);
    println!("32 B alloc+free pair, {rounds} rounds x {pairs} pairs, one thread");
    println!("| contender | ns/pair min | median | vs glibc (median [IQR]) | target |");
    println!("|---|---|---|---|---|");
    let g = s(&r.system);
    println!(
        "| glibc malloc (16 B align) | {:.1} | {:.1} | 1.00x | |",
        g.min, g.median
    );
    for (name, v, target) in [
        ("objcache per call (`alloc_on`/`free_on`)", &r.per_call, 2.0),
        ("objcache token (`claim_cpu`)", &r.token, 3.0),
    ] {
        let x = s(v);
        let ratio = benchstats::Ratio::paired(&r.system, v);
        let met = if ratio.median >= target {
            "met"
        } else {
            "not met"
        };
        println!(
            "| {name} | {:.1} | {:.1} | {ratio} | >= {target:.0}x: {met} |",
            x.min, x.median
        );
    }
    Ok(())
}
