//! What a simulation run is: the kernel configuration (mode, scheme, lock,
//! CPUs), the workload, its size and the rates of the agents.
//!
//! A run is described by [`SimConfig`]; [`SimConfig::for_workload`] fills the
//! defaults a workload implies, and [`SimConfig::validate`] refuses values the
//! simulator cannot honour, naming the value and what is allowed.

use core::fmt;
use core::str::FromStr;
use pgdcache::mm::TaskSize;
use pgdcache::{LockKind, Scheme};
use physmem::PAGE_SIZE;
use std::time::Duration;
use x86paging::PagingMode;

/// A workload: what the CPUs run and what the agents do meanwhile.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Workload {
    /// Many small short-lived tasks (a shell script): fork + exec + exit of
    /// small images; occasional `change_page_attr` and vmalloc.
    #[serde(rename = "script")]
    Script,
    /// Fewer, larger tasks (a compile): ≥ 4096-page images, where the
    /// bottom-level copies dominate fork.
    #[serde(rename = "kernbench")]
    Kernbench,
    /// Restarting X on AGP hardware: the graphics agent toggles direct-map
    /// pages uncached and back continuously while small tasks spawn.
    #[serde(rename = "xrestart")]
    XRestart,
    /// Small and large tasks mixed, with cpa and vmalloc activity.
    #[serde(rename = "mixed")]
    Mixed,
}

impl Workload {
    /// All workloads.
    pub const ALL: [Workload; 4] = [
        Workload::Script,
        Workload::Kernbench,
        Workload::XRestart,
        Workload::Mixed,
    ];

    /// Name on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Workload::Script => "script",
            Workload::Kernbench => "kernbench",
            Workload::XRestart => "xrestart",
            Workload::Mixed => "mixed",
        }
    }

    /// The default image of a task.
    pub fn default_task(self) -> TaskSize {
        match self {
            Workload::Script | Workload::XRestart | Workload::Mixed => TaskSize::SMALL,
            Workload::Kernbench => TaskSize {
                text: 1024,
                data: 2560,
                stack: 512,
            },
        }
    }

    /// The default rate of the graphics agent.
    pub fn default_cpa_rate(self) -> CpaRate {
        match self {
            Workload::Script => CpaRate::PerKiloTask(2),
            Workload::Kernbench => CpaRate::PerKiloTask(20),
            Workload::XRestart => CpaRate::Continuous,
            Workload::Mixed => CpaRate::PerKiloTask(50),
        }
    }

    /// vmalloc/vfree operations per 1000 tasks.
    pub fn vmalloc_per_kilo_task(self) -> u32 {
        match self {
            Workload::Script => 10,
            Workload::Kernbench => 50,
            Workload::XRestart => 20,
            Workload::Mixed => 100,
        }
    }

    /// Default number of tasks for a run.
    pub fn default_ops(self) -> u64 {
        match self {
            Workload::Kernbench => 200,
            _ => 20_000,
        }
    }

    /// Default RAM.
    pub fn default_ram(self) -> u64 {
        match self {
            Workload::Kernbench | Workload::Mixed => 256 << 20,
            _ => 64 << 20,
        }
    }
}

impl fmt::Display for Workload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Workload {
    type Err = SimError;
    fn from_str(s: &str) -> Result<Self, SimError> {
        Workload::ALL
            .into_iter()
            .find(|w| w.name() == s)
            .ok_or_else(|| SimError::BadValue {
                what: "workload",
                value: s.chars().take(64).collect(),
                allowed: "script, kernbench, xrestart, mixed".into(),
            })
    }
}

/// How often the graphics agent toggles its pages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CpaRate {
    /// Never.
    Off,
    /// Toggles (uncached, then back) per 1000 tasks completed.
    PerKiloTask(u32),
    /// As fast as it can (X restarting in a loop).
    Continuous,
}

impl fmt::Display for CpaRate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CpaRate::Off => f.write_str("off"),
            CpaRate::PerKiloTask(n) => write!(f, "{n}"),
            CpaRate::Continuous => f.write_str("max"),
        }
    }
}

impl FromStr for CpaRate {
    type Err = SimError;
    fn from_str(s: &str) -> Result<Self, SimError> {
        match s {
            "off" | "0" => Ok(CpaRate::Off),
            "max" | "continuous" => Ok(CpaRate::Continuous),
            n => n
                .parse::<u32>()
                .ok()
                .filter(|&n| n <= 1_000_000)
                .map(CpaRate::PerKiloTask)
                .ok_or_else(|| SimError::BadValue {
                    what: "cpa rate",
                    value: s.chars().take(64).collect(),
                    allowed: "off, max, or toggles per 1000 tasks (0..=1000000)".into(),
                }),
        }
    }
}

/// Everything that defines a run.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SimConfig {
    /// Paging mode.
    pub mode: PagingMode,
    /// pgd allocation scheme.
    pub scheme: Scheme,
    /// `pgd_lock`/`mmlist_lock` implementation.
    pub lock: LockKind,
    /// Simulated CPUs (worker threads).
    pub cpus: usize,
    /// Workload.
    pub workload: Workload,
    /// Tasks to run in total (across CPUs).
    pub ops: u64,
    /// Stop after this long even if `ops` are not done.
    pub duration: Option<Duration>,
    /// Pages per task image (`None`: the workload's default).
    pub task_pages: Option<u64>,
    /// Graphics-agent rate.
    pub cpa_rate: CpaRate,
    /// Simulated RAM in bytes.
    pub ram: u64,
    /// Seed of the per-thread generators.
    pub seed: u64,
    /// Time a direct `pgd_alloc` + `pgd_free` pair every this many tasks
    /// per CPU (0: never).
    pub sample_every: u64,
    /// Run the live kernel-access checks after every fork/exec.
    pub live_checks: bool,
}

impl SimConfig {
    /// The defaults of `workload` in `mode` with `scheme`.
    pub fn for_workload(workload: Workload, mode: PagingMode, scheme: Scheme) -> SimConfig {
        SimConfig {
            mode,
            scheme,
            lock: LockKind::Tas,
            cpus: 2,
            workload,
            ops: workload.default_ops(),
            duration: None,
            task_pages: None,
            cpa_rate: workload.default_cpa_rate(),
            ram: workload.default_ram(),
            seed: 1,
            sample_every: 16,
            live_checks: true,
        }
    }

    /// The task image: the workload's, or `task_pages` split like it
    /// (text 1/4, data 5/8, stack the rest, at least one page each where
    /// possible).
    pub fn task_size(&self) -> TaskSize {
        match self.task_pages {
            None => self.workload.default_task(),
            Some(n) => {
                let text = (n / 4).max(1).min(n);
                let data = (n * 5 / 8).min(n - text);
                TaskSize {
                    text,
                    data,
                    stack: n - text - data,
                }
            }
        }
    }

    /// Checks the values, naming the first bad one.
    pub fn validate(&self) -> Result<(), SimError> {
        let bad = |what, value: String, allowed: &str| {
            Err(SimError::BadValue {
                what,
                value,
                allowed: allowed.into(),
            })
        };
        if !(1..=64).contains(&self.cpus) {
            return bad("cpus", self.cpus.to_string(), "1..=64");
        }
        if self.ops == 0 && self.duration.is_none() {
            return bad("ops", "0".into(), "at least 1 (or give a duration)");
        }
        if let Some(n) = self.task_pages {
            if !(1..=65_536).contains(&n) {
                return bad("task pages", n.to_string(), "1..=65536");
            }
        }
        let min_ram = 32u64 << 20;
        if self.ram < min_ram || self.ram > (4u64 << 30) || !self.ram.is_multiple_of(PAGE_SIZE) {
            return bad(
                "ram",
                self.ram.to_string(),
                "a multiple of 4 KiB from 32 MiB to 4 GiB (the graphics agent's pages sit at 16 and 24 MiB)",
            );
        }
        // Rough need: every CPU holds a parent, a child and a new image.
        let need = (self.task_size().pages() * 3 + 64) * self.cpus as u64 * PAGE_SIZE;
        if need > self.ram / 2 {
            return bad(
                "task pages",
                self.task_size().pages().to_string(),
                &format!(
                    "at most about {} pages with {} CPUs and {} MiB of RAM (raise --ram)",
                    (self.ram / 2 / PAGE_SIZE / self.cpus as u64).saturating_sub(64) / 3,
                    self.cpus,
                    self.ram >> 20
                ),
            );
        }
        Ok(())
    }
}

/// Errors of the simulator.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// A configuration value is out of range.
    #[error("bad {what} '{value}': expected {allowed}")]
    BadValue {
        /// Which setting.
        what: &'static str,
        /// The value given.
        value: String,
        /// What is allowed.
        allowed: String,
    },
    /// The kernel refused the configuration (e.g. shared-kernel on 2-level).
    #[error(transparent)]
    Kernel(#[from] pgdcache::KernelError),
    /// Simulated RAM could not be created.
    #[error("cannot create {ram} bytes of simulated RAM: {why}")]
    Ram {
        /// Bytes asked for.
        ram: u64,
        /// Why.
        why: String,
    },
    /// A task operation failed (e.g. out of simulated memory).
    #[error("cpu {cpu}: {what}: {why}")]
    Task {
        /// The CPU.
        cpu: usize,
        /// What it was doing.
        what: &'static str,
        /// The error.
        why: String,
    },
    /// An agent failed.
    #[error("{agent} agent: {why}")]
    Agent {
        /// Which agent.
        agent: &'static str,
        /// The error.
        why: String,
    },
    /// A simulator thread panicked (a bug).
    #[error("a simulator thread panicked: {0}")]
    Panic(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_validate() {
        assert_eq!(
            "xrestart".parse::<Workload>().ok(),
            Some(Workload::XRestart)
        );
        assert!("bogus".parse::<Workload>().is_err());
        assert_eq!("max".parse::<CpaRate>().ok(), Some(CpaRate::Continuous));
        assert_eq!("5".parse::<CpaRate>().ok(), Some(CpaRate::PerKiloTask(5)));
        assert!("-1".parse::<CpaRate>().is_err());
        let mut c =
            SimConfig::for_workload(Workload::Script, PagingMode::TwoLevel, Scheme::SlabPgdList);
        assert!(c.validate().is_ok());
        c.cpus = 0;
        assert!(c.validate().is_err());
        c.cpus = 2;
        c.task_pages = Some(100_000);
        assert!(c.validate().is_err());
        c.task_pages = Some(5);
        assert_eq!(c.task_size().pages(), 5);
        c.task_pages = Some(1);
        assert_eq!(c.task_size().pages(), 1);
        assert!(
            SimConfig::for_workload(Workload::Kernbench, PagingMode::Pae, Scheme::Uncached)
                .validate()
                .is_ok()
        );
    }
}
