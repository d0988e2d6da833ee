//! The fork + exit rows of the suite alone (quick settings): every
//! scheme's small and large fork + exit against `uncached`, and each
//! mode's limit row (the same small fork + exit with a free pgd).
//!
//! `cargo run --release -p pgdcache-bench --example forkrows`
fn main() -> Result<(), pgdbench::micro::MicroError> {
    let s = pgdbench::Settings::quick();
    let (rows, limits) = pgdbench::suite::fork_rows(&s, &mut || {})?;
    for r in rows {
        println!(
            "{:>6} {:<18} small {:7.1} ns {:.3}x [{:.3}-{:.3}] rounds {:>2}  large {:9.1} ns {:.3}x",
            r.mode.name(),
            r.scheme.name(),
            r.small.median_ns,
            r.small_vs_uncached,
            r.small_vs_uncached_iqr.0,
            r.small_vs_uncached_iqr.1,
            r.small.rounds,
            r.large.median_ns,
            r.large_vs_uncached
        );
    }
    for l in limits {
        println!(
            "{:>6} {:<18} small {:7.1} ns {:.3}x [{:.3}-{:.3}]",
            l.mode.name(),
            "limit: free pgd",
            l.small.median_ns,
            l.small_vs_uncached,
            l.small_vs_uncached_iqr.0,
            l.small_vs_uncached_iqr.1
        );
    }
    Ok(())
}
