//! Simulation settings shared by `run` and `compare`: command-line flags,
//! an optional `--config FILE.toml`, and the workload's defaults, merged in
//! that order of precedence (a flag beats the file, the file beats the
//! default). Every value is checked here or by `SimConfig::validate`, and a
//! bad one is reported by the flag or key the user can change, with what is
//! allowed (exit 2). A config key the subcommand does not use is an error,
//! never silently ignored.

use crate::args::{parse_mode, parse_ram_sim};
use crate::error::CliError;
use clap::Args;
use pgdcache::{LockKind, Scheme};
use sim::{CpaRate, SimConfig, Workload};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;
use x86paging::PagingMode;

/// Largest `--ops`.
pub const MAX_OPS: u64 = 1_000_000_000;
/// Largest config file read.
const MAX_CONFIG_BYTES: u64 = 1 << 20;

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
    s.trim()
        .parse::<usize>()
        .ok()
        .filter(|n| (1..=sim::config::MAX_CPUS).contains(n))
        .ok_or_else(|| format!("bad cpus '{}': expected a number from 1 to 64", clip(s)))
}

/// Parses a task count (1..=10⁹).
pub fn parse_ops(s: &str) -> Result<u64, String> {
    s.trim()
        .parse::<u64>()
        .ok()
        .filter(|n| (1..=MAX_OPS).contains(n))
        .ok_or_else(|| {
            format!(
                "bad ops '{}': expected a number of tasks from 1 to 1000000000",
                clip(s)
            )
        })
}

/// Parses pages per task (1..=65536).
pub fn parse_task_pages(s: &str) -> Result<u64, String> {
    s.trim()
        .parse::<u64>()
        .ok()
        .filter(|n| (1..=sim::config::MAX_TASK_PAGES).contains(n))
        .ok_or_else(|| {
            format!(
                "bad task pages '{}': expected a number from 1 to 65536",
                clip(s)
            )
        })
}

/// Parses a seed (any 64-bit unsigned integer).
pub fn parse_seed(s: &str) -> Result<u64, String> {
    s.trim().parse::<u64>().map_err(|_| {
        format!(
            "bad seed '{}': expected an integer from 0 to 18446744073709551615",
            clip(s)
        )
    })
}

/// Parses a duration: `2s`, `500ms`, `1m`, or seconds; 1ms..=24h.
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
        .and_then(|v| Duration::try_from_secs_f64(v).ok())
        .filter(|d| *d >= sim::config::MIN_DURATION)
        .ok_or_else(|| {
            format!(
                "bad duration '{}': expected e.g. 2s, 500ms or 1m, from 1ms to 24h",
                clip(s)
            )
        })
}

/// At most 64 characters of a user's value, for messages.
pub fn clip(s: &str) -> String {
    let mut t: String = s.chars().take(64).collect();
    if t.len() < s.len() {
        t.push('…');
    }
    t
}

/// The keys of the config file and the subcommands that take them.
const RUN_KEYS: &[&str] = &[
    "mode",
    "scheme",
    "lock",
    "cpus",
    "workload",
    "ops",
    "duration",
    "task_pages",
    "cpa_rate",
    "ram",
    "seed",
];
const COMPARE_KEYS: &[&str] = &[
    "modes",
    "schemes",
    "lock",
    "cpus",
    "workload",
    "ops",
    "task_pages",
    "cpa_rate",
    "ram",
    "seed",
];

/// Which subcommand reads the config file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sub {
    /// `run`.
    Run,
    /// `compare`.
    Compare,
}

impl Sub {
    fn name(self) -> &'static str {
        match self {
            Sub::Run => "run",
            Sub::Compare => "compare",
        }
    }
    fn keys(self) -> &'static [&'static str] {
        match self {
            Sub::Run => RUN_KEYS,
            Sub::Compare => COMPARE_KEYS,
        }
    }
    /// Why `key` is not taken here, and what to use instead.
    fn hint(self, key: &str) -> &'static str {
        match (self, key) {
            (Sub::Run, "modes") => "; `run` takes one `mode`",
            (Sub::Run, "schemes") => "; `run` takes one `scheme`",
            (Sub::Compare, "mode") => "; `compare` takes a list: modes = [\"2level\", \"pae\"]",
            (Sub::Compare, "scheme") => {
                "; `compare` takes a list: schemes = [\"slab-pgd-list\", \"slab-ticket\"]"
            }
            (Sub::Compare, "duration") => {
                "; `compare` runs `ops` tasks per row (duration is a `run` setting)"
            }
            _ => "",
        }
    }
}

/// A parsed `--config FILE.toml`: every key checked against what the
/// subcommand takes.
#[derive(Debug, Default)]
pub struct FileConfig {
    values: BTreeMap<String, toml::Value>,
}

impl FileConfig {
    /// Reads and parses `path` for subcommand `sub`.
    pub fn load(path: &Path, sub: Sub) -> Result<FileConfig, CliError> {
        let usage = |why: String| CliError::Usage(format!("--config {}: {why}", path.display()));
        let meta = std::fs::metadata(path).map_err(|e| usage(format!("cannot read it: {e}")))?;
        if !meta.is_file() {
            return Err(usage("not a regular file".into()));
        }
        if meta.len() > MAX_CONFIG_BYTES {
            return Err(usage(format!(
                "{} bytes; a config file has at most {MAX_CONFIG_BYTES}",
                meta.len()
            )));
        }
        let mut text = String::new();
        {
            use std::io::Read;
            let f = std::fs::File::open(path).map_err(|e| usage(format!("cannot read it: {e}")))?;
            f.take(MAX_CONFIG_BYTES + 1)
                .read_to_string(&mut text)
                .map_err(|e| usage(format!("cannot read it: {e}")))?;
        }
        Self::parse(&text, sub).map_err(|e| match e {
            CliError::Usage(m) => usage(m),
            other => other,
        })
    }

    /// Parses config text for subcommand `sub` (no file name in messages).
    pub fn parse(text: &str, sub: Sub) -> Result<FileConfig, CliError> {
        let table: toml::Table = toml::from_str(text)
            .map_err(|e| CliError::Usage(format!("bad TOML: {}", e.message().trim())))?;
        for key in table.keys() {
            if !sub.keys().contains(&key.as_str()) {
                return Err(CliError::Usage(format!(
                    "unknown key '{}' for `{}`{} (keys: {})",
                    clip(key),
                    sub.name(),
                    sub.hint(key),
                    sub.keys().join(", ")
                )));
            }
        }
        Ok(FileConfig {
            values: table.into_iter().collect(),
        })
    }

    fn bad(key: &str, e: impl std::fmt::Display) -> CliError {
        CliError::Usage(format!("config key '{key}': {e}"))
    }

    /// A string value.
    fn string<T>(
        &self,
        key: &str,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Result<Option<T>, CliError> {
        match self.values.get(key) {
            None => Ok(None),
            Some(toml::Value::String(s)) => parse(s).map(Some).map_err(|e| Self::bad(key, e)),
            Some(v) => Err(Self::bad(
                key,
                format!("expected a string, found {}", kind(v)),
            )),
        }
    }

    /// A number, or a string (`"64M"`, `"2s"`, `"max"`).
    fn number<T>(
        &self,
        key: &str,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Result<Option<T>, CliError> {
        let text = match self.values.get(key) {
            None => return Ok(None),
            Some(toml::Value::Integer(n)) => n.to_string(),
            Some(toml::Value::Float(f)) => f.to_string(),
            Some(toml::Value::String(s)) => s.clone(),
            Some(v) => {
                return Err(Self::bad(
                    key,
                    format!("expected a number or a string, found {}", kind(v)),
                ))
            }
        };
        parse(&text).map(Some).map_err(|e| Self::bad(key, e))
    }

    /// A list of strings.
    fn list<T>(
        &self,
        key: &str,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Result<Option<Vec<T>>, CliError> {
        match self.values.get(key) {
            None => Ok(None),
            Some(toml::Value::Array(items)) => {
                let mut out = Vec::with_capacity(items.len());
                for v in items {
                    match v {
                        toml::Value::String(s) => {
                            out.push(parse(s).map_err(|e| Self::bad(key, e))?)
                        }
                        other => {
                            return Err(Self::bad(
                                key,
                                format!("expected a list of strings, found {} in it", kind(other)),
                            ))
                        }
                    }
                }
                Ok(Some(out))
            }
            Some(v) => Err(Self::bad(
                key,
                format!("expected a list of strings, found {}", kind(v)),
            )),
        }
    }
}

/// How a TOML value's type reads in a message.
fn kind(v: &toml::Value) -> &'static str {
    match v {
        toml::Value::String(_) => "a string",
        toml::Value::Integer(_) => "an integer",
        toml::Value::Float(_) => "a float",
        toml::Value::Boolean(_) => "a boolean",
        toml::Value::Datetime(_) => "a date",
        toml::Value::Array(_) => "a list",
        toml::Value::Table(_) => "a table",
    }
}

/// Flags shared by `run` and `compare`.
#[derive(Args, Debug, Default, Clone)]
pub struct SimFlags {
    /// Workload: what the CPUs run and how often the agents act.
    #[arg(long, value_parser = crate::args::workload_parser())]
    pub workload: Option<Workload>,
    /// Simulated CPUs (threads), 1..=64.
    #[arg(long, value_parser = parse_cpus, allow_hyphen_values = true)]
    pub cpus: Option<usize>,
    /// Tasks (fork + exec + exit) per run, 1..=1000000000.
    #[arg(long, value_parser = parse_ops, allow_hyphen_values = true)]
    pub ops: Option<u64>,
    /// Pages per task image, 1..=65536.
    #[arg(long, value_parser = parse_task_pages, allow_hyphen_values = true)]
    pub task_pages: Option<u64>,
    /// pgd_lock / mmlist_lock implementation.
    #[arg(long, value_parser = crate::args::lock_parser())]
    pub lock: Option<LockKind>,
    /// Graphics-agent rate: off, max, or toggles per 1000 tasks (0..=1000000).
    #[arg(long, value_parser = parse_cpa_rate, allow_hyphen_values = true)]
    pub cpa_rate: Option<CpaRate>,
    /// Simulated RAM, 32M..4G in steps of 4M (default: 64M; 256M for kernbench and mixed).
    #[arg(long, value_parser = parse_ram_sim, allow_hyphen_values = true)]
    pub ram: Option<u64>,
    /// Seed of the per-CPU generators (0..=18446744073709551615).
    #[arg(long, value_parser = parse_seed, allow_hyphen_values = true)]
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
    /// cpa rate, if given.
    pub cpa_rate: Option<CpaRate>,
    /// RAM, if given.
    pub ram: Option<u64>,
    /// Seed.
    pub seed: u64,
}

impl SimFlags {
    /// Merges with the config file (if any, read for `sub`) over
    /// `default_workload`.
    pub fn merge(
        &self,
        sub: Sub,
        default_workload: Workload,
    ) -> Result<(Merged, FileConfig), CliError> {
        let file = match &self.config {
            Some(p) => FileConfig::load(p, sub)?,
            None => FileConfig::default(),
        };
        let m = self.merge_file(&file, default_workload)?;
        Ok((m, file))
    }

    /// Merges with an already parsed config file.
    pub fn merge_file(
        &self,
        file: &FileConfig,
        default_workload: Workload,
    ) -> Result<Merged, CliError> {
        Ok(Merged {
            workload: self
                .workload
                .or(file.string("workload", parse_workload)?)
                .unwrap_or(default_workload),
            cpus: self.cpus.or(file.number("cpus", parse_cpus)?).unwrap_or(2),
            ops: self.ops.or(file.number("ops", parse_ops)?),
            task_pages: self
                .task_pages
                .or(file.number("task_pages", parse_task_pages)?),
            lock: self
                .lock
                .or(file.string("lock", parse_lock)?)
                .unwrap_or(LockKind::Tas),
            cpa_rate: self.cpa_rate.or(file.number("cpa_rate", parse_cpa_rate)?),
            ram: self.ram.or(file.number("ram", parse_ram_sim)?),
            seed: self.seed.or(file.number("seed", parse_seed)?).unwrap_or(1),
        })
    }
}

/// Flags of `run` beyond the shared ones.
#[derive(Args, Debug, Default, Clone)]
pub struct RunFlags {
    /// Paging mode.
    #[arg(long, value_parser = crate::args::mode_parser())]
    pub mode: Option<PagingMode>,
    /// pgd allocation scheme (slab-prepopulated: PAE only; shared-kernel: not 2level).
    #[arg(long, value_parser = crate::args::scheme_parser())]
    pub scheme: Option<Scheme>,
    /// Stop after this long, 1ms..24h (e.g. 2s, 500ms); with --ops, whichever comes first.
    #[arg(long, value_parser = parse_duration, allow_hyphen_values = true)]
    pub duration: Option<Duration>,
    /// Fault injection: make the Nth frame allocation after boot fail
    /// (1..=1000000000), to watch the run stop, unwind every task, and
    /// still run the checker and the frame accounting.
    #[arg(long, value_name = "N", value_parser = parse_fail_alloc, allow_hyphen_values = true)]
    pub fail_alloc: Option<u64>,
}

fn parse_fail_alloc(s: &str) -> Result<u64, String> {
    parse_ops(s).map_err(|_| {
        format!(
            "bad allocation number '{}': expected a number from 1 to 1000000000",
            clip(s)
        )
    })
}

impl RunFlags {
    /// The run configuration.
    pub fn config(&self, shared: &SimFlags) -> Result<SimConfig, CliError> {
        let file = match &shared.config {
            Some(p) => FileConfig::load(p, Sub::Run)?,
            None => FileConfig::default(),
        };
        self.config_with(shared, &file)
    }

    /// The run configuration from flags and a parsed config file.
    pub fn config_with(&self, shared: &SimFlags, file: &FileConfig) -> Result<SimConfig, CliError> {
        let m = shared.merge_file(file, Workload::Script)?;
        let mode = self
            .mode
            .or(file.string("mode", parse_mode)?)
            .unwrap_or(PagingMode::TwoLevel);
        let scheme = self
            .scheme
            .or(file.string("scheme", parse_scheme)?)
            .unwrap_or(Scheme::SlabPgdList);
        let mut c = SimConfig::for_workload(m.workload, mode, scheme);
        c.cpus = m.cpus;
        c.lock = m.lock;
        c.seed = m.seed;
        c.task_pages = m.task_pages;
        c.duration = self.duration.or(file.number("duration", parse_duration)?);
        c.ops = match (m.ops, c.duration) {
            (Some(n), _) => n,
            (None, Some(_)) => 0,
            (None, None) => c.ops,
        };
        if let Some(r) = m.cpa_rate {
            c.cpa_rate = r;
        }
        if let Some(r) = m.ram {
            c.ram = r;
        }
        c.fail_alloc = self.fail_alloc;
        if let Err(why) = scheme.supports(mode) {
            return Err(CliError::Usage(format!(
                "--scheme {scheme} is impossible with --mode {mode}: {why}"
            )));
        }
        c.validate()?;
        Ok(c)
    }
}

/// The `modes` and `schemes` lists of a config file, if given.
pub type CompareLists = (Option<Vec<PagingMode>>, Option<Vec<Scheme>>);

/// Settings of `compare` from flags and file.
pub fn compare_lists(file: &FileConfig) -> Result<CompareLists, CliError> {
    Ok((
        file.list("modes", parse_mode)?,
        file.list("schemes", parse_scheme)?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str, sub: Sub) -> String {
        FileConfig::parse(text, sub).unwrap_err().to_string()
    }

    #[test]
    fn config_keys_are_checked_per_subcommand() {
        assert!(err("modes = [\"pae\"]", Sub::Run).contains("`run` takes one `mode`"));
        assert!(err("mode = \"pae\"", Sub::Compare).contains("modes = ["));
        assert!(err("duration = \"2s\"", Sub::Compare).contains("duration"));
        assert!(err("frob = 1", Sub::Run).contains("frob"));
        assert!(err("ops = [", Sub::Run).contains("bad TOML"));
        let f = FileConfig::parse("cpus = true", Sub::Run).unwrap();
        let e = f.number("cpus", parse_cpus).unwrap_err().to_string();
        assert!(
            e.contains("found a boolean") && !e.contains("StrOrInt"),
            "{e}"
        );
        let f = FileConfig::parse("modes = [\"pae\", 3]", Sub::Compare).unwrap();
        assert!(compare_lists(&f)
            .unwrap_err()
            .to_string()
            .contains("an integer"));
        let f = FileConfig::parse("ram = \"64M\"\nseed = 7\nduration = 0.5", Sub::Run).unwrap();
        assert_eq!(f.number("ram", parse_ram_sim).unwrap(), Some(64 << 20));
        assert_eq!(f.number("seed", parse_seed).unwrap(), Some(7));
        assert_eq!(
            f.number("duration", parse_duration).unwrap(),
            Some(Duration::from_millis(500))
        );
    }

    #[test]
    fn numbers_name_their_range() {
        assert!(parse_ops("0").unwrap_err().contains("1 to 1000000000"));
        assert!(parse_seed("-1")
            .unwrap_err()
            .contains("18446744073709551615"));
        assert!(parse_duration("0.0000001s").unwrap_err().contains("1ms"));
        assert!(parse_duration("2s").is_ok());
        assert!(parse_cpus("65").unwrap_err().contains("1 to 64"));
        assert_eq!(clip(&"x".repeat(100)).chars().count(), 65);
    }
}
