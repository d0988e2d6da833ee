//! How much of the machine a benchmark actually got: the host probe taken
//! before and after `pgdcache bench`.
//!
//! A ratio measured on a shared host is only as good as the CPU time both
//! sides got. Issue #17 saw a 16 MiB fork+exit reported at 3.74× `uncached`
//! (truly ≈ 1.0×) while a build ran on the other core, and the report did
//! not say the host was busy. The probe says so, in the report's header and
//! in `--json`:
//!
//! * the load average and the runnable/total task counts of
//!   `/proc/loadavg` (Linux; absent elsewhere);
//! * a **calibrated spin**: fixed chunks of arithmetic for a fixed wall
//!   time; the fastest chunk is the speed of an undisturbed CPU, so
//!   `chunks × fastest / wall` is the share of one CPU this thread got
//!   (1.0 on an idle core; 0.5 when another task shares it half the time);
//! * where Linux's schedstats exist (`/proc/thread-self/schedstat`), the
//!   share of the spin the thread spent runnable but waiting on a run
//!   queue — the same loss, seen by the scheduler;
//! * the speed-up two share-nothing spinning threads get over one
//!   ([`crate::vtime::host_speedup`]: 2.0 on an idle 2-core machine).

use std::time::{Duration, Instant};

/// One probe of the host.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct HostProbe {
    /// CPUs this process may run on.
    pub cpus: usize,
    /// 1-, 5- and 15-minute load averages (`None` without `/proc/loadavg`).
    pub loadavg: Option<[f64; 3]>,
    /// Runnable tasks and all tasks, from `/proc/loadavg`.
    pub runnable: Option<(u64, u64)>,
    /// Wall time of the calibrated spin, ms.
    pub spin_ms: f64,
    /// Share of one CPU the spinning thread got (0..=1).
    pub cpu_share: f64,
    /// Share of the spin spent waiting on a run queue (schedstats; `None`
    /// where the kernel does not keep them).
    pub runqueue_wait: Option<f64>,
    /// Two spinning threads' speed-up over one.
    pub two_thread_speedup: f64,
}

/// Below this CPU share, or with more runnable tasks than CPUs in the
/// 1-minute load average, the report calls the host busy.
pub const BUSY_SHARE: f64 = 0.9;

impl HostProbe {
    /// Probes the host: `/proc/loadavg`, then a calibrated spin of `spin`
    /// wall time, then the two-thread speed-up.
    pub fn take(spin: Duration) -> HostProbe {
        let (loadavg, runnable) = std::fs::read_to_string("/proc/loadavg")
            .ok()
            .map_or((None, None), |s| parse_loadavg(&s));
        let before = schedstat();
        let (cpu_share, spin_ms) = calibrated_spin(spin);
        let runqueue_wait = match (before, schedstat()) {
            (Some((_, w0)), Some((_, w1))) if spin_ms > 0.0 => {
                Some((w1.saturating_sub(w0) as f64 / 1e6 / spin_ms).clamp(0.0, 1.0))
            }
            _ => None,
        };
        HostProbe {
            cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
            loadavg,
            runnable,
            spin_ms,
            cpu_share,
            runqueue_wait,
            two_thread_speedup: crate::vtime::host_speedup(),
        }
    }

    /// Did the probe find the host busy: a thread got less than
    /// [`BUSY_SHARE`] of a CPU, or the 1-minute load exceeds the CPUs?
    pub fn busy(&self) -> bool {
        self.cpu_share < BUSY_SHARE || self.loadavg.is_some_and(|l| l[0] > self.cpus as f64)
    }

    /// `load 2.41 1.98 1.50, 5/812 runnable; one thread got 0.62 of a CPU
    /// (38 % on a run queue), two threads 1.21x one`.
    pub fn summary(&self) -> String {
        let load = self.loadavg.map_or("load ?".into(), |l| {
            format!("load {:.2} {:.2} {:.2}", l[0], l[1], l[2])
        });
        let run = self
            .runnable
            .map_or(String::new(), |(r, t)| format!(", {r}/{t} runnable"));
        let wait = self.runqueue_wait.map_or(String::new(), |w| {
            format!(" ({:.0} % on a run queue)", w * 100.0)
        });
        format!(
            "{load}{run}; one thread got {:.2} of a CPU{wait}, two threads {:.2}x one",
            self.cpu_share, self.two_thread_speedup
        )
    }
}

/// The load averages and `runnable/total` of a `/proc/loadavg` line.
pub fn parse_loadavg(s: &str) -> (Option<[f64; 3]>, Option<(u64, u64)>) {
    let f: Vec<&str> = s.split_whitespace().collect();
    let num = |i: usize| f.get(i).and_then(|x| x.parse::<f64>().ok());
    let load = match (num(0), num(1), num(2)) {
        (Some(a), Some(b), Some(c)) => Some([a, b, c]),
        _ => None,
    };
    let run = f.get(3).and_then(|x| {
        let (r, t) = x.split_once('/')?;
        Some((r.parse().ok()?, t.parse().ok()?))
    });
    (load, run)
}

/// (ns on a CPU, ns waiting on a run queue) of this thread, from
/// `/proc/thread-self/schedstat`.
fn schedstat() -> Option<(u64, u64)> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let mut f = s.split_whitespace().map(|x| x.parse::<u64>().ok());
    Some((f.next()??, f.next()??))
}

/// One chunk of the spin: a fixed amount of dependent arithmetic.
fn chunk(seed: u64) -> u64 {
    let mut x = seed | 1;
    for _ in 0..4096 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
    }
    x
}

/// Spins in chunks for `wall`; returns (share of a CPU, ms spun): the
/// number of chunks times the fastest chunk, over the wall time.
pub fn calibrated_spin(wall: Duration) -> (f64, f64) {
    let t0 = Instant::now();
    let mut fastest = f64::INFINITY;
    let mut chunks = 0u64;
    let mut acc = 0u64;
    while t0.elapsed() < wall || chunks < 16 {
        let t = Instant::now();
        acc = acc.wrapping_add(chunk(chunks ^ acc));
        fastest = fastest.min(t.elapsed().as_secs_f64());
        chunks += 1;
    }
    std::hint::black_box(acc);
    let spun = t0.elapsed().as_secs_f64();
    let share = if spun > 0.0 {
        (chunks as f64 * fastest / spun).clamp(0.0, 1.0)
    } else {
        1.0
    };
    (share, spun * 1e3)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loadavg_lines_parse() {
        let (l, r) = parse_loadavg("2.41 1.98 1.50 5/812 12345\n");
        assert_eq!(l, Some([2.41, 1.98, 1.50]));
        assert_eq!(r, Some((5, 812)));
        assert_eq!(parse_loadavg("garbage"), (None, None));
    }

    #[test]
    fn the_probe_is_in_range_and_busy_means_busy() {
        let p = HostProbe::take(Duration::from_millis(30));
        assert!(p.cpu_share > 0.0 && p.cpu_share <= 1.0, "{p:?}");
        assert!(p.spin_ms >= 30.0);
        assert!(p.summary().contains("of a CPU"));
        let idle = HostProbe {
            cpus: 2,
            loadavg: Some([0.1, 0.1, 0.1]),
            runnable: Some((1, 100)),
            spin_ms: 100.0,
            cpu_share: 0.99,
            runqueue_wait: Some(0.0),
            two_thread_speedup: 1.98,
        };
        assert!(!idle.busy());
        assert!(HostProbe {
            cpu_share: 0.6,
            ..idle.clone()
        }
        .busy());
        assert!(HostProbe {
            loadavg: Some([3.5, 2.0, 1.0]),
            ..idle
        }
        .busy());
    }
}
