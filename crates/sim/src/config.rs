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
    /// Fault injection: the Nth frame allocation after boot fails (once),
    /// so the run stops early and shows its unwinding and checks.
    #[serde(default)]
    pub fail_alloc: Option<u64>,
    /// Freed-frame poisoning (`physmem`'s debug configuration, on by
    /// default): freed frames are filled with a pattern and checked on
    /// reuse. Runs whose verdict counts keep it on; the default
    /// comparison's timing runs turn it off (the production
    /// configuration, `CONFIG_PAGE_POISONING=n`), as `pgdcache bench` does.
    #[serde(default = "poisoning_default")]
    pub poisoning: bool,
}

fn poisoning_default() -> bool {
    true
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
            fail_alloc: None,
            poisoning: true,
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

    /// Checks the values, naming the first bad one (by its `pgdcache`
    /// flag) and what is allowed.
    pub fn validate(&self) -> Result<(), SimError> {
        let bad = |what, value: String, allowed: &str| {
            Err(SimError::BadValue {
                what,
                value,
                allowed: allowed.into(),
            })
        };
        if !(1..=MAX_CPUS).contains(&self.cpus) {
            return bad("--cpus", self.cpus.to_string(), "1..=64");
        }
        if self.ops == 0 && self.duration.is_none() {
            return bad("--ops", "0".into(), "at least 1 (or give a --duration)");
        }
        if let Some(d) = self.duration {
            if d < MIN_DURATION || d > MAX_DURATION {
                return bad(
                    "--duration",
                    format!("{d:?}"),
                    "1ms..=24h (a shorter run completes no task)",
                );
            }
        }
        if let Some(n) = self.task_pages {
            if !(1..=MAX_TASK_PAGES).contains(&n) {
                return bad("--task-pages", n.to_string(), "1..=65536");
            }
        }
        if !(MIN_SIM_RAM..=MAX_SIM_RAM).contains(&self.ram) || !self.ram.is_multiple_of(RAM_STEP) {
            return bad(
                "--ram",
                self.ram.to_string(),
                "32M..4G in steps of 4M (the graphics agent's pages sit at 16 and 24 MiB)",
            );
        }
        // Rough need: every CPU holds a parent, a child and a new image,
        // in at most half of RAM.
        let need = self.ram_needed();
        if need > self.ram {
            return Err(SimError::NotEnoughRam {
                cpus: self.cpus,
                pages: self.task_size().pages(),
                ram: self.ram,
                need,
            });
        }
        Ok(())
    }

    /// The RAM a run of this many CPUs and this task size needs (rounded
    /// up to 4 MiB): each CPU holds a parent, a child and a new image, and
    /// they may fill at most half of RAM.
    pub fn ram_needed(&self) -> u64 {
        let per_cpu = (self.task_size().pages() * 3 + 64) * PAGE_SIZE;
        let need = per_cpu.saturating_mul(self.cpus as u64).saturating_mul(2);
        need.div_ceil(RAM_STEP).saturating_mul(RAM_STEP)
    }
}

/// Most simulated CPUs.
pub const MAX_CPUS: usize = 64;
/// Most pages per task image.
pub const MAX_TASK_PAGES: u64 = 65_536;
/// Smallest simulated RAM of a run (the graphics agent's pages sit at 16 and 24 MiB).
pub const MIN_SIM_RAM: u64 = 32 << 20;
/// Largest simulated RAM.
pub const MAX_SIM_RAM: u64 = 4 << 30;
/// RAM sizes are multiples of this (a 2-level large page).
pub const RAM_STEP: u64 = 4 << 20;
/// Shortest `--duration`: below it a run completes no task.
pub const MIN_DURATION: Duration = Duration::from_millis(1);
/// Longest `--duration`.
pub const MAX_DURATION: Duration = Duration::from_secs(86_400);

fn mib(bytes: u64) -> u64 {
    bytes >> 20
}

fn ram_advice(need: u64) -> String {
    if need <= MAX_SIM_RAM {
        format!(
            "raise --ram to at least {}M, or lower --cpus or --task-pages",
            mib(need)
        )
    } else {
        "more than the largest --ram (4G): lower --cpus or --task-pages".to_string()
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
    /// The CPUs and the task size do not fit in the simulated RAM.
    #[error("not enough simulated RAM: {cpus} CPUs running {pages}-page tasks need about {} MiB, --ram is {} MiB; {}", mib(*need), mib(*ram), ram_advice(*need))]
    NotEnoughRam {
        /// `--cpus`.
        cpus: usize,
        /// Pages per task.
        pages: u64,
        /// `--ram` in bytes.
        ram: u64,
        /// Bytes needed.
        need: u64,
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
        // Too many CPUs for the RAM blames the RAM, and says how much.
        c.task_pages = None;
        c.cpus = 64;
        let e = c.validate().unwrap_err().to_string();
        assert!(
            e.contains("--ram") && e.contains("76M") && e.contains("--cpus"),
            "{e}"
        );
        c.ram = 80 << 20;
        assert!(c.validate().is_ok());
        c.ram = 30 << 20;
        assert!(c.validate().unwrap_err().to_string().contains("32M..4G"));
        c.ram = 64 << 20;
        c.cpus = 2;
        c.duration = Some(Duration::from_micros(10));
        assert!(c.validate().unwrap_err().to_string().contains("--duration"));
    }
}
