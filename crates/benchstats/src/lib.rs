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
//!   (`13.2x [12.1–14.0]`) so no ratio is reported without its spread;
//! * [`adaptive`] keeps adding interleaved rounds until every paired ratio's
//!   inter-quartile range is narrow (or a cap is reached): on a busy host a
//!   burst of load that hits a few rounds falls outside the quartiles once
//!   there are enough rounds;
//! * [`Goal`] judges a ratio by its whole inter-quartile range, not its
//!   median alone: [`Decision::Met`] or [`Decision::NotMet`] only when the
//!   range lies on one side of the goal, [`Decision::Noisy`] ("noisy, not
//!   decided") when it straddles it.
//!
//! ```
//! use benchstats::{Ratio, Summary};
//! let slow = [10.0, 11.0, 30.0, 10.5, 10.2];
//! let fast = [1.0, 1.1, 2.9, 1.0, 1.0];
//! let r = Ratio::paired(&slow, &fast);
//! assert_eq!(r.to_string(), "10.20x [10.00–10.34]");
//! assert_eq!(Summary::of(&fast).median, 1.0);
//! ```
#![deny(unsafe_code)]
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

/// This thread's CPU time in ns (`CLOCK_THREAD_CPUTIME_ID`): the time it
/// actually ran, which a preemption by another task does not advance.
/// `None` where the clock does not exist.
///
/// Rounds timed by it are immune to the commonest disturbance of a busy
/// host — another task running on our CPU for part of a round — which wall
/// time charges to whichever side of a ratio it hit, and charges more to
/// the side whose rounds are longer (issue #17).
#[allow(unsafe_code)]
pub fn thread_cpu_ns() -> Option<u64> {
    #[cfg(unix)]
    {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a valid, writable `timespec` that outlives the
        // call, and CLOCK_THREAD_CPUTIME_ID is a clock id every POSIX
        // system defines; on failure the call only returns -1.
        let r = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
        (r == 0).then(|| (ts.tv_sec as u64).wrapping_mul(1_000_000_000) + ts.tv_nsec as u64)
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// Times `f` by this thread's CPU time ([`thread_cpu_ns`]), or by wall
/// time where that clock is missing; returns (ns, wall ns).
pub fn time_on_cpu<T>(f: impl FnOnce() -> T) -> (T, u64, u64) {
    let c0 = thread_cpu_ns();
    let w0 = std::time::Instant::now();
    let v = f();
    let wall = w0.elapsed().as_nanos() as u64;
    let cpu = match (c0, thread_cpu_ns()) {
        (Some(a), Some(b)) => b.saturating_sub(a),
        _ => wall,
    };
    (v, cpu, wall)
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

/// How many interleaved rounds [`adaptive`] runs: at least `min`, at most
/// `max`, stopping as soon as every watched ratio's inter-quartile range is
/// at most `narrow` times its median.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct Rounds {
    /// Rounds always run.
    pub min: usize,
    /// The cap.
    pub max: usize,
    /// A ratio is narrow when `iqr / median <= narrow` (0.05: the middle
    /// half of the per-round ratios lies within 5 % of the median's size).
    pub narrow: f64,
}

impl Rounds {
    /// Exactly `n` rounds (nothing adaptive).
    pub fn fixed(n: usize) -> Rounds {
        Rounds {
            min: n,
            max: n,
            narrow: f64::INFINITY,
        }
    }
}

/// `iqr / |median|` of a ratio: infinite without rounds or for a zero
/// median.
pub fn relative_iqr(r: &Ratio) -> f64 {
    let rel = r.iqr() / r.median.abs();
    if rel.is_nan() {
        f64::INFINITY
    } else {
        rel
    }
}

/// [`interleaved`] with an adaptive round count: runs `rounds.min` rounds,
/// then more, a batch at a time (a quarter of those run so far, at least
/// two), while any ratio `samples[num] / samples[den]` of `pairs` has a
/// [`relative_iqr`] above `rounds.narrow` and fewer than `rounds.max`
/// rounds ran. With no pairs it runs `rounds.min` rounds.
pub fn adaptive<E>(
    rounds: &Rounds,
    pairs: &[(usize, usize)],
    contenders: &mut [&mut dyn FnMut() -> Result<f64, E>],
) -> Result<Vec<Vec<f64>>, E> {
    let max = rounds.max.max(rounds.min).max(1);
    let mut samples = vec![Vec::with_capacity(max); contenders.len()];
    let mut ran = 0;
    let mut batch = rounds.min.max(1);
    loop {
        for _ in 0..batch.min(max - ran) {
            for (c, s) in contenders.iter_mut().zip(samples.iter_mut()) {
                s.push(c()?);
            }
            ran += 1;
        }
        let wide = pairs
            .iter()
            .any(|&(n, d)| match (samples.get(n), samples.get(d)) {
                (Some(a), Some(b)) => relative_iqr(&Ratio::paired(a, b)) > rounds.narrow,
                _ => false,
            });
        if !wide || ran >= max {
            return Ok(samples);
        }
        batch = (ran / 4).max(2);
    }
}

/// What a target asks of a ratio.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Goal {
    /// At least this much.
    AtLeast(f64),
    /// At most this much.
    AtMost(f64),
    /// Between the two, inclusive.
    Within(f64, f64),
}

impl Goal {
    /// Does the single value `x` satisfy the goal?
    pub fn holds(&self, x: f64) -> bool {
        match *self {
            Goal::AtLeast(g) => x >= g,
            Goal::AtMost(g) => x <= g,
            Goal::Within(lo, hi) => (lo..=hi).contains(&x),
        }
    }

    /// The verdict on `r`, from its whole inter-quartile range: met when
    /// `q1`, the median and `q3` all satisfy the goal, not met when none of
    /// `[q1, q3]` does, noisy otherwise (the range straddles a bound). A
    /// ratio without rounds (NaN) is not met.
    pub fn decide(&self, r: &Ratio) -> Decision {
        let (q1, m, q3) = (r.q1.min(r.q3), r.median, r.q3.max(r.q1));
        if m.is_nan() || q1.is_nan() || q3.is_nan() {
            return Decision::NotMet;
        }
        if self.holds(q1) && self.holds(m) && self.holds(q3) {
            return Decision::Met;
        }
        let disjoint = match *self {
            Goal::AtLeast(g) => q3 < g,
            Goal::AtMost(g) => q1 > g,
            Goal::Within(lo, hi) => q3 < lo || q1 > hi,
        };
        if disjoint {
            Decision::NotMet
        } else {
            Decision::Noisy
        }
    }
}

/// `>= 30x`, `<= 2x`, `0.95x..1.05x`.
impl fmt::Display for Goal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Goal::AtLeast(g) => write!(f, ">= {g}x"),
            Goal::AtMost(g) => write!(f, "<= {g}x"),
            Goal::Within(lo, hi) => write!(f, "{lo}x..{hi}x"),
        }
    }
}

/// A target's verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// The whole inter-quartile range satisfies the goal.
    Met,
    /// None of it does.
    NotMet,
    /// It straddles the goal: the measurement cannot decide.
    Noisy,
    /// Not met, and cannot be: the target's physical limit, measured side
    /// by side in the same rounds, does not meet the goal either (e.g. a
    /// per-call path against the cost of the one lock any per-call path
    /// must take).
    OutOfReach,
}

impl Decision {
    /// Combines the verdicts of subjects that must all meet a goal: not
    /// met if any is not met, else out of reach if any is, else noisy if
    /// any is noisy, else met (and met for none).
    pub fn all(ds: impl IntoIterator<Item = Decision>) -> Decision {
        ds.into_iter().fold(Decision::Met, |acc, d| match (acc, d) {
            (Decision::NotMet, _) | (_, Decision::NotMet) => Decision::NotMet,
            (Decision::OutOfReach, _) | (_, Decision::OutOfReach) => Decision::OutOfReach,
            (Decision::Noisy, _) | (_, Decision::Noisy) => Decision::Noisy,
            _ => Decision::Met,
        })
    }
}

/// `met`, `not met`, `noisy, not decided`.
impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Decision::Met => "met",
            Decision::NotMet => "not met",
            Decision::Noisy => "noisy, not decided",
            Decision::OutOfReach => "out of reach (its limit misses the goal too)",
        })
    }
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

    fn ratio(num: &[f64]) -> Ratio {
        Ratio::paired(num, &vec![1.0; num.len()])
    }

    #[test]
    fn the_cpu_clock_runs_only_while_we_run() {
        let (_, cpu, wall) =
            time_on_cpu(|| std::thread::sleep(std::time::Duration::from_millis(30)));
        assert!(wall >= 30_000_000);
        if thread_cpu_ns().is_some() {
            assert!(cpu < 15_000_000, "asleep is not on a CPU: {cpu} ns");
        }
        let (_, cpu, wall) = time_on_cpu(|| {
            let t = std::time::Instant::now();
            while t.elapsed().as_millis() < 5 {
                std::hint::black_box(0u64);
            }
        });
        assert!(cpu > 0 && cpu <= wall + 1_000_000, "{cpu} {wall}");
    }

    #[test]
    fn a_ratio_straddling_its_goal_is_noisy() {
        // Per-round ratios 0.9..1.6: the median (1.3) sits on the goal, the
        // quartiles on either side of it.
        let straddling = ratio(&[0.9, 1.0, 1.2, 1.3, 1.4, 1.5, 1.6]);
        assert!(straddling.q1 < 1.3 && straddling.q3 > 1.3);
        assert_eq!(Goal::AtLeast(1.3).decide(&straddling), Decision::Noisy);
        assert_eq!(Goal::AtMost(1.3).decide(&straddling), Decision::Noisy);
        // The same spread wholly above or below the goal decides it.
        assert_eq!(Goal::AtLeast(0.5).decide(&straddling), Decision::Met);
        assert_eq!(Goal::AtLeast(3.0).decide(&straddling), Decision::NotMet);
        assert_eq!(Goal::AtMost(3.0).decide(&straddling), Decision::Met);
        assert_eq!(Goal::AtMost(0.5).decide(&straddling), Decision::NotMet);
        // A median beyond the goal with a lower quartile short of it is
        // noisy, not met: the issue's 16 MiB fork+exit on a busy host.
        let busy = ratio(&[1.0, 1.0, 1.01, 1.02, 3.5, 3.74, 3.8, 3.9]);
        assert_eq!(Goal::Within(0.95, 1.05).decide(&busy), Decision::Noisy);
        let quiet = ratio(&[0.99, 1.0, 1.0, 1.01, 1.01, 1.02, 0.98]);
        assert_eq!(Goal::Within(0.95, 1.05).decide(&quiet), Decision::Met);
        let off = ratio(&[1.2, 1.25, 1.3, 1.3, 1.35]);
        assert_eq!(Goal::Within(0.95, 1.05).decide(&off), Decision::NotMet);
        assert_eq!(
            Goal::AtLeast(1.0).decide(&Ratio::default()),
            Decision::NotMet
        );
    }

    #[test]
    fn decisions_combine_and_print() {
        use Decision::*;
        assert_eq!(Decision::all([Met, Met]), Met);
        assert_eq!(Decision::all([Met, Noisy]), Noisy);
        assert_eq!(Decision::all([Noisy, NotMet]), NotMet);
        assert_eq!(Decision::all([]), Met);
        assert_eq!(Decision::all([Met, OutOfReach, Noisy]), OutOfReach);
        assert_eq!(Decision::all([OutOfReach, NotMet]), NotMet);
        assert_eq!(Noisy.to_string(), "noisy, not decided");
        assert_eq!(Goal::AtLeast(30.0).to_string(), ">= 30x");
        assert_eq!(Goal::Within(0.95, 1.05).to_string(), "0.95x..1.05x");
    }

    #[test]
    fn adaptive_rounds_stop_when_narrow_and_at_the_cap() {
        // A steady pair: the minimum is enough.
        let rounds = Rounds {
            min: 5,
            max: 40,
            narrow: 0.05,
        };
        let mut a = || -> Result<f64, ()> { Ok(10.0) };
        let mut b = || -> Result<f64, ()> { Ok(1.0) };
        let v = adaptive(&rounds, &[(0, 1)], &mut [&mut a, &mut b]).unwrap();
        assert_eq!(v[0].len(), 5);
        // A burst of load over the first three rounds: the early quartiles
        // straddle it, more rounds push it outside them.
        let mut i = 0u32;
        let mut noisy = || -> Result<f64, ()> {
            i += 1;
            Ok(if i <= 3 { 40.0 } else { 10.0 })
        };
        let mut b = || -> Result<f64, ()> { Ok(1.0) };
        let v = adaptive(&rounds, &[(0, 1)], &mut [&mut noisy, &mut b]).unwrap();
        let n = v[0].len();
        assert_eq!(
            n, 13,
            "5, then batches of 2 until the burst is outside the quartiles"
        );
        assert!(relative_iqr(&Ratio::paired(&v[0], &v[1])) <= 0.05);
        // Always wide: stops at the cap.
        let mut j = 0u32;
        let mut wild = || -> Result<f64, ()> {
            j += 1;
            Ok(f64::from(j % 7 + 1))
        };
        let mut b = || -> Result<f64, ()> { Ok(1.0) };
        let v = adaptive(&rounds, &[(0, 1)], &mut [&mut wild, &mut b]).unwrap();
        assert_eq!(v[0].len(), 40);
        assert_eq!(v[1].len(), 40);
        // Fixed: exactly n.
        let mut c = || -> Result<f64, ()> { Ok(1.0) };
        let v = adaptive(&Rounds::fixed(3), &[(0, 0)], &mut [&mut c]).unwrap();
        assert_eq!(v[0].len(), 3);
    }
}
