//! Time: the TSC, calibrated against the PIT (channel 2, one-shot, the
//! speaker gate), as Linux's `pit_calibrate_tsc` does.

use crate::arch::{inb, outb, rdtsc};
use core::sync::atomic::{AtomicU64, Ordering};

const PIT_HZ: u64 = 1_193_182;
/// 10 ms of PIT ticks.
const TICKS: u64 = PIT_HZ / 100;

static TSC_HZ: AtomicU64 = AtomicU64::new(0);

/// Measures the TSC frequency over 10 ms of PIT time.
pub fn calibrate() -> u64 {
    // Gate channel 2 on, speaker off; mode 0 (one-shot), lobyte/hibyte.
    outb(0x61, (inb(0x61) & 0xfd) | 0x01);
    outb(0x43, 0xb0);
    outb(0x42, (TICKS & 0xff) as u8);
    outb(0x42, (TICKS >> 8) as u8);
    let t0 = rdtsc();
    let mut spins = 0u64;
    // OUT2 goes high when the count reaches 0.
    while inb(0x61) & 0x20 == 0 && spins < 100_000_000 {
        spins += 1;
    }
    let t1 = rdtsc();
    let hz = (t1.wrapping_sub(t0)).saturating_mul(100).max(1);
    TSC_HZ.store(hz, Ordering::Relaxed);
    hz
}

/// TSC ticks per second (after [`calibrate`]).
pub fn tsc_hz() -> u64 {
    TSC_HZ.load(Ordering::Relaxed).max(1)
}

/// TSC ticks to nanoseconds.
pub fn to_ns(ticks: u64) -> u64 {
    ((u128::from(ticks) * 1_000_000_000) / u128::from(tsc_hz())) as u64
}

/// What reading the TSC twice costs, in ticks: the median of 255 empty
/// brackets (`rdtsc` right after `rdtsc`). A measurement that must bracket
/// each operation alone (a cold pair, with a cache sweep between) pays it
/// once per operation and takes it off; one that can time a whole loop
/// pays it once. On hardware it is tens of cycles, as much as a cached
/// pair; where the hypervisor traps `rdtsc` it is a world switch.
pub fn tsc_overhead() -> u64 {
    let mut v = [0u64; 255];
    for x in v.iter_mut() {
        let t0 = rdtsc();
        *x = rdtsc().wrapping_sub(t0);
    }
    v.sort_unstable();
    v[v.len() / 2]
}

/// How fast this CPU runs the guest's own code: ns per step of a fixed
/// loop of dependent register arithmetic (xorshift, no memory, nothing
/// that traps), 100 000 steps. On hardware a step is a few cycles; under
/// TCG a few host cycles more; an accelerator that runs guest code far
/// slower than either shows here, so the bench's figures can be read as
/// that accelerator's rather than the machine's.
pub fn loop_ns() -> f64 {
    const STEPS: u64 = 100_000;
    let mut x = core::hint::black_box(0x9E37_79B9_7F4A_7C15u64);
    let t0 = rdtsc();
    for _ in 0..STEPS {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
    }
    let t1 = rdtsc();
    core::hint::black_box(x);
    to_ns(t1.wrapping_sub(t0)) as f64 / STEPS as f64
}

/// Busy-waits `us` microseconds.
pub fn delay_us(us: u64) {
    let end = rdtsc().wrapping_add(tsc_hz() / 1_000_000 * us);
    while rdtsc() < end {
        core::hint::spin_loop();
    }
}
