//! The simulator's random choices come from the workspace's one generator,
//! [`x86paging::gen::Rng`] (SplitMix64).
//!
//! Every thread of a run gets its own stream ([`Rng::stream`]) of the run's
//! seed and the thread's index, so the *choices* a thread makes (task
//! sizes, which addresses to touch, area sizes) are reproducible from the
//! seed; the interleaving of threads is not (it is the operating system's).

pub use x86paging::gen::Rng;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_spread() {
        let mut a = Rng::stream(7, 1);
        let mut b = Rng::stream(7, 1);
        let mut c = Rng::stream(7, 2);
        let xs: Vec<u64> = (0..8).map(|_| a.next_u64()).collect();
        let ys: Vec<u64> = (0..8).map(|_| b.next_u64()).collect();
        let zs: Vec<u64> = (0..8).map(|_| c.next_u64()).collect();
        assert_eq!(xs, ys);
        assert_ne!(xs, zs);
        let mut hist = [0u32; 4];
        for _ in 0..4000 {
            hist[a.below(4) as usize] += 1;
        }
        assert!(hist.iter().all(|&h| h > 800), "{hist:?}");
    }
}
