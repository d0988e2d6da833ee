//! Simulation settings shared by `run` and `compare`: command-line flags,
//! an optional `--config FILE.toml`, and the workload's defaults, merged in
//! that order of precedence (a flag beats the file, the file beats the
//! default). Every value is checked here or by `SimConfig::validate`, and a
//! bad one is reported by name with what is allowed (exit 2).

use crate::args::{parse_mode, parse_ram};
use crate::error::CliError;
use clap::Args;
use pgdcache::{LockKind, Scheme};
use sim::{CpaRate, SimConfig, Workload};
use std::path::PathBuf;
use std::time::Duration;
use x86paging::PagingMode;

/// Parses a scheme name.
pub fn parse_scheme(s: &str) -> Result<Scheme, String> {
    s.parse::<Scheme>().map_err(|e| e.to_string())
}

/// Parses a lock kind.
pub fn parse_lock(s: &str) -> Result<LockKind, String> {
    s.parse::<LockKind>().map_err(|e| e.to_string())
}

/// Parses a workload.
pub fn parse_workload(s: &str) -> Result<Workload, String> {
    s.parse::<Workload>().map_err(|e| e.to_string())
}

/// Parses a cpa rate: off, max, or toggles per 1000 tasks.
pub fn parse_cpa_rate(s: &str) -> Result<CpaRate, String> {
    s.parse::<CpaRate>().map_err(|e| e.to_string())
}

/// Parses a CPU count (1..=64).
pub fn parse_cpus(s: &str) -> Result<usize, String> {
    s.parse::<usize>()
        .ok()
        .filter(|n| (1..=64).contains(n))
        .ok_or_else(|| format!("bad cpus '{s}': expected a number from 1 to 64"))
}

/// Parses a task count (≥ 1).
pub fn parse_ops(s: &str) -> Result<u64, String> {
    s.parse::<u64>()
        .ok()
        .filter(|&n| n >= 1)
        .ok_or_else(|| format!("bad ops '{s}': expected a number of tasks, at least 1"))
}

/// Parses pages per task (1..=65536).
pub fn parse_task_pages(s: &str) -> Result<u64, String> {
    s.parse::<u64>()
        .ok()
        .filter(|n| (1..=65_536).contains(n))
        .ok_or_else(|| format!("bad task pages '{s}': expected a number from 1 to 65536"))
}

/// Parses a duration: `2s`, `500ms`, `1m`, or seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let (num, scale) = if let Some(n) = t.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = t.strip_suffix('m') {
        (n, 60.0)
    } else {
        (t, 1.0)
    };
    num.trim()
        .parse::<f64>()
        .ok()
        .map(|v| v * scale)
        .filter(|v| v.is_finite() && *v > 0.0 && *v <= 86_400.0)
        .map(Duration::from_secs_f64)
        .ok_or_else(|| {
            format!(
                "bad duration '{s}': expected e.g. 2s, 500ms or 1m (more than 0, at most a day)"
            )
        })
}

/// A string or an integer in the config file.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(untagged)]
pub enum StrOrInt {
    /// An integer.
    Int(i64),
    /// A float (durations).
    Float(f64),
    /// A string.
    Str(String),
}

impl StrOrInt {
    fn text(&self) -> String {
        match self {
            StrOrInt::Int(n) => n.to_string(),
            StrOrInt::Float(f) => f.to_string(),
            StrOrInt::Str(s) => s.clone(),
        }
    }
}

/// The `--config FILE.toml` format (every key optional).
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Paging mode.
    pub mode: Option<String>,
    /// Paging modes (compare).
    pub modes: Option<Vec<String>>,
    /// Scheme.
    pub scheme: Option<String>,
    /// Schemes (compare).
    pub schemes: Option<Vec<String>>,
    /// Lock kind.
    pub lock: Option<String>,
    /// CPUs.
    pub cpus: Option<StrOrInt>,
    /// Workload.
    pub workload: Option<String>,
    /// Tasks.
    pub ops: Option<StrOrInt>,
    /// Duration (`"2s"` or seconds).
    pub duration: Option<StrOrInt>,
    /// Pages per task.
    pub task_pages: Option<StrOrInt>,
    /// cpa rate (`"off"`, `"max"` or per 1000 tasks).
    pub cpa_rate: Option<StrOrInt>,
    /// RAM (`"64M"` or bytes).
    pub ram: Option<StrOrInt>,
    /// Seed.
    pub seed: Option<StrOrInt>,
}

impl FileConfig {
    /// Reads and parses `path`.
    pub fn load(path: &PathBuf) -> Result<FileConfig, CliError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| CliError::Usage(format!("cannot read config {}: {e}", path.display())))?;
        toml::from_str(&text)
            .map_err(|e| CliError::Usage(format!("bad config {}: {e}", path.display())))
    }
}

fn file_val<T>(
    v: &Option<StrOrInt>,
    key: &str,
    parse: impl Fn(&str) -> Result<T, String>,
) -> Result<Option<T>, CliError> {
    v.as_ref()
        .map(|x| parse(&x.text()).map_err(|e| CliError::Usage(format!("config key '{key}': {e}"))))
        .transpose()
}

fn file_str<T>(
    v: &Option<String>,
    key: &str,
    parse: impl Fn(&str) -> Result<T, String>,
) -> Result<Option<T>, CliError> {
    v.as_deref()
        .map(|x| parse(x).map_err(|e| CliError::Usage(format!("config key '{key}': {e}"))))
        .transpose()
}

fn parse_seed(s: &str) -> Result<u64, String> {
    s.parse::<u64>()
        .map_err(|_| format!("bad seed '{s}': expected a non-negative integer"))
}

/// Flags shared by `run` and `compare`.
#[derive(Args, Debug, Default, Clone)]
pub struct SimFlags {
    /// Workload: script, kernbench, xrestart, mixed.
    #[arg(long, value_parser = parse_workload)]
    pub workload: Option<Workload>,
    /// Simulated CPUs (threads), 1..=64.
    #[arg(long, value_parser = parse_cpus)]
    pub cpus: Option<usize>,
    /// Tasks (fork + exec + exit) per run.
    #[arg(long, value_parser = parse_ops)]
    pub ops: Option<u64>,
    /// Pages per task image.
    #[arg(long, value_parser = parse_task_pages)]
    pub task_pages: Option<u64>,
    /// pgd_lock / mmlist_lock implementation: tas, ticket, mutex.
    #[arg(long, value_parser = parse_lock)]
    pub lock: Option<LockKind>,
    /// Seed of the per-CPU generators.
    #[arg(long, value_parser = parse_seed)]
    pub seed: Option<u64>,
    /// TOML file with any of these settings (flags take precedence).
    #[arg(long, value_name = "FILE.toml")]
    pub config: Option<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// The shared settings after merging flags, file and defaults.
#[derive(Debug, Clone)]
pub struct Merged {
    /// Workload.
    pub workload: Workload,
    /// CPUs.
    pub cpus: usize,
    /// Tasks, if given.
    pub ops: Option<u64>,
    /// Pages per task, if given.
    pub task_pages: Option<u64>,
    /// Lock.
    pub lock: LockKind,
    /// Seed.
    pub seed: u64,
}

impl SimFlags {
    /// Merges with the config file (if any) over `default_workload`.
    pub fn merge(&self, default_workload: Workload) -> Result<(Merged, FileConfig), CliError> {
        let file = match &self.config {
            Some(p) => FileConfig::load(p)?,
            None => FileConfig::default(),
        };
        let m = Merged {
            workload: self
                .workload
                .or(file_str(&file.workload, "workload", parse_workload)?)
                .unwrap_or(default_workload),
            cpus: self
                .cpus
                .or(file_val(&file.cpus, "cpus", parse_cpus)?)
                .unwrap_or(2),
            ops: self.ops.or(file_val(&file.ops, "ops", parse_ops)?),
            task_pages: self.task_pages.or(file_val(
                &file.task_pages,
                "task_pages",
                parse_task_pages,
            )?),
            lock: self
                .lock
                .or(file_str(&file.lock, "lock", parse_lock)?)
                .unwrap_or(LockKind::Tas),
            seed: self
                .seed
                .or(file_val(&file.seed, "seed", parse_seed)?)
                .unwrap_or(1),
        };
        Ok((m, file))
    }
}

/// Flags of `run` beyond the shared ones.
#[derive(Args, Debug, Default, Clone)]
pub struct RunFlags {
    /// Paging mode: 2level, pae, 4level, 5level.
    #[arg(long, value_parser = parse_mode)]
    pub mode: Option<PagingMode>,
    /// Scheme: uncached, slab-unsynced, slab-pgd-list, slab-ticket, slab-prepopulated (PAE), shared-kernel.
    #[arg(long, value_parser = parse_scheme)]
    pub scheme: Option<Scheme>,
    /// Stop after this long (e.g. 2s, 500ms); with --ops, whichever comes first.
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Graphics-agent rate: off, max, or toggles per 1000 tasks.
    #[arg(long, value_parser = parse_cpa_rate)]
    pub cpa_rate: Option<CpaRate>,
    /// Simulated RAM, 32M..4G (multiple of 4M).
    #[arg(long, value_parser = parse_ram)]
    pub ram: Option<u64>,
}

impl RunFlags {
    /// The run configuration.
    pub fn config(&self, shared: &SimFlags) -> Result<SimConfig, CliError> {
        let (m, file) = shared.merge(Workload::Script)?;
        let mode = self
            .mode
            .or(file_str(&file.mode, "mode", parse_mode)?)
            .unwrap_or(PagingMode::TwoLevel);
        let scheme = self
            .scheme
            .or(file_str(&file.scheme, "scheme", parse_scheme)?)
            .unwrap_or(Scheme::SlabPgdList);
        let mut c = SimConfig::for_workload(m.workload, mode, scheme);
        c.cpus = m.cpus;
        c.lock = m.lock;
        c.seed = m.seed;
        c.task_pages = m.task_pages;
        c.duration = self
            .duration
            .or(file_val(&file.duration, "duration", parse_duration)?);
        c.ops = match (m.ops, c.duration) {
            (Some(n), _) => n,
            (None, Some(_)) => 0,
            (None, None) => c.ops,
        };
        if let Some(r) = self
            .cpa_rate
            .or(file_val(&file.cpa_rate, "cpa_rate", parse_cpa_rate)?)
        {
            c.cpa_rate = r;
        }
        if let Some(r) = self.ram.or(file_val(&file.ram, "ram", parse_ram)?) {
            c.ram = r;
        }
        c.validate()?;
        Ok(c)
    }
}
