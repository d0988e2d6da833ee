//! # benchstats — the one place pgdcache's measurements are summarised
//!
//! Every benchmark in the workspace (`pgdcache bench` through
//! `pgdcache-bench`, the criterion benches of `pgdcache`, the objcache
//! ratio tables) measures its contenders in **interleaved rounds**: round
//! `r` of every contender runs back to back, so load that drifts over a run
//! hits them alike. This crate holds what is done with the rounds:
//!
//! * [`interleaved`] runs the rounds;
//! * [`Summary`] is one contender's rounds: minimum, quartiles, median;
//! * [`Ratio`] is two contenders compared **round by round**: the median of
//!   the per-round ratios and their inter-quartile range, printed together
//!   (`13.2x [12.1–14.0]`) so no ratio is reported without its spread.
//!
//! ```
//! use benchstats::{Ratio, Summary};
//! let slow = [10.0, 11.0, 30.0, 10.5, 10.2];
//! let fast = [1.0, 1.1, 2.9, 1.0, 1.0];
//! let r = Ratio::paired(&slow, &fast);
//! assert_eq!(r.to_string(), "10.20x [10.00–10.34]");
//! assert_eq!(Summary::of(&fast).median, 1.0);
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::fmt;

/// The median of `v`, sorting it (the upper median for an even length; 0
/// for an empty slice).
pub fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// The `q` quantile (0..=1) of sorted data, linearly interpolated between
/// the closest ranks; NaN for no data.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    match sorted.len() {
        0 => f64::NAN,
        1 => sorted[0],
        n => {
            let pos = q.clamp(0.0, 1.0) * (n - 1) as f64;
            let lo = pos.floor() as usize;
            let hi = pos.ceil() as usize;
            sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
        }
    }
}

fn sorted(v: &[f64]) -> Vec<f64> {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    s
}

/// One contender's rounds.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct Summary {
    /// Fastest round.
    pub min: f64,
    /// Lower quartile.
    pub q1: f64,
    /// Median round (the upper median for an even count, as [`median`]).
    pub median: f64,
    /// Upper quartile.
    pub q3: f64,
    /// Rounds.
    pub rounds: usize,
}

impl Summary {
    /// Summarises `rounds` (all zero when empty).
    pub fn of(rounds: &[f64]) -> Summary {
        if rounds.is_empty() {
            return Summary::default();
        }
        let s = sorted(rounds);
        Summary {
            min: s[0],
            q1: quantile(&s, 0.25),
            median: s[s.len() / 2],
            q3: quantile(&s, 0.75),
            rounds: s.len(),
        }
    }
    /// The inter-quartile range `q3 - q1`.
    pub fn iqr(&self) -> f64 {
        self.q3 - self.q1
    }
}

/// Two contenders compared round by round: `num[r] / den[r]` for every
/// round `r`, summarised by its median and inter-quartile range. One lucky
/// (or unlucky) round of either side cannot decide it, as it can a ratio
/// of two minima.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct Ratio {
    /// Median of the per-round ratios (NaN without rounds).
    pub median: f64,
    /// Their lower quartile.
    pub q1: f64,
    /// Their upper quartile.
    pub q3: f64,
}

impl Default for Ratio {
    fn default() -> Self {
        Ratio {
            median: f64::NAN,
            q1: f64::NAN,
            q3: f64::NAN,
        }
    }
}

impl Ratio {
    /// The per-round ratios `num[r] / den[r]` of two contenders measured in
    /// the same rounds, summarised.
    pub fn paired(num: &[f64], den: &[f64]) -> Ratio {
        let r: Vec<f64> = num.iter().zip(den).map(|(a, b)| a / b).collect();
        if r.is_empty() {
            return Ratio::default();
        }
        let s = sorted(&r);
        Ratio {
            median: s[s.len() / 2],
            q1: quantile(&s, 0.25),
            q3: quantile(&s, 0.75),
        }
    }
    /// The inter-quartile range `q3 - q1`.
    pub fn iqr(&self) -> f64 {
        self.q3 - self.q1
    }
}

/// `1.23x [1.10–1.40]`: the median ratio, then its inter-quartile range.
/// The precision (default 2) applies to all three.
impl fmt::Display for Ratio {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = f.precision().unwrap_or(2);
        write!(f, "{:.p$}x [{:.p$}–{:.p$}]", self.median, self.q1, self.q3)
    }
}

/// Runs every contender `rounds` times, interleaved (round `r` of each runs
/// back to back; warming up is the caller's); returns
/// `result[contender][round]`, whatever unit a call returns (ns per
/// operation, mostly).
pub fn interleaved<E>(
    rounds: usize,
    contenders: &mut [&mut dyn FnMut() -> Result<f64, E>],
) -> Result<Vec<Vec<f64>>, E> {
    let mut samples = vec![Vec::with_capacity(rounds); contenders.len()];
    for _ in 0..rounds.max(1) {
        for (c, s) in contenders.iter_mut().zip(samples.iter_mut()) {
            s.push(c()?);
        }
    }
    Ok(samples)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quartiles_and_ratio() {
        let s = Summary::of(&[5.0, 1.0, 3.0, 2.0, 4.0]);
        assert_eq!((s.min, s.q1, s.median, s.q3), (1.0, 2.0, 3.0, 4.0));
        assert_eq!(s.iqr(), 2.0);
        let r = Ratio::paired(&[2.0, 4.0, 6.0, 8.0], &[1.0, 1.0, 1.0, 1.0]);
        assert_eq!(r.median, 6.0);
        assert_eq!((r.q1, r.q3), (3.5, 6.5));
        assert_eq!(format!("{r:.1}"), "6.0x [3.5–6.5]");
        assert!(Ratio::paired(&[], &[]).median.is_nan());
        let mut n = 0.0;
        let mut a = || -> Result<f64, ()> {
            n += 1.0;
            Ok(n)
        };
        let mut b = || -> Result<f64, ()> { Ok(7.0) };
        let v = interleaved(3, &mut [&mut a, &mut b]).unwrap();
        assert_eq!(v, vec![vec![1.0, 2.0, 3.0], vec![7.0; 3]]);
    }
}
