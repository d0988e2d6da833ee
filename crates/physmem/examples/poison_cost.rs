//! What freed-frame poisoning costs the page allocator: alloc + free pairs
//! with poisoning on and off, measured in interleaved rounds in one run
//! (round by round ratios with their inter-quartile range).
//!
//! `cargo run --release -p physmem --example poison_cost`

use benchstats::{interleaved, Ratio, Summary};
use physmem::{enter_cpu, Owner, SimMemory};
use std::time::Instant;

const PAIRS: u32 = 20_000;
const ROUNDS: usize = 15;

/// ns per alloc + free pair of `2^order` frames (order 0 on a CPU: the
/// per-CPU list; order 2: the zone).
fn pairs(pm: &SimMemory, order: u32) -> Result<f64, Box<dyn std::error::Error>> {
    let t = Instant::now();
    for _ in 0..PAIRS {
        let f = pm.alloc_pages(order, Owner::Slab)?;
        pm.free_pages(f, order)?;
    }
    Ok(t.elapsed().as_nanos() as f64 / f64::from(PAIRS))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let on = SimMemory::new(64 << 20)?;
    let off = SimMemory::new(64 << 20)?.with_poisoning(false);
    let _cpu = enter_cpu(0);
    println!("alloc+free pair, {ROUNDS} interleaved rounds of {PAIRS} pairs (ns per pair, median [q1–q3])");
    for order in [0, 2] {
        let rounds = interleaved(
            ROUNDS,
            &mut [&mut || pairs(&on, order), &mut || pairs(&off, order)],
        )?;
        let (a, b) = (Summary::of(&rounds[0]), Summary::of(&rounds[1]));
        println!(
            "order {order}: poisoning on {:.0} [{:.0}–{:.0}], off {:.0} [{:.0}–{:.0}], on/off {}",
            a.median,
            a.q1,
            a.q3,
            b.median,
            b.q1,
            b.q3,
            Ratio::paired(&rounds[0], &rounds[1])
        );
    }
    let st = on.poison_stats();
    println!(
        "poisoning on: {} frames filled, {} checked, {} corrupted",
        st.filled, st.checked, st.corrupted
    );
    Ok(())
}
