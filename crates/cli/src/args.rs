//! Value parsers for command-line arguments, and the checks of output
//! paths. Each parser returns a message naming the bad value and what is
//! allowed; clap prints it after the flag's name and exits with 2.

use crate::error::CliError;
use physmem::{MAX_RAM, MIN_RAM};
use std::path::Path;
use x86paging::PagingMode;

/// Parses a paging mode: 2level, pae, 4level, 5level.
pub fn parse_mode(s: &str) -> Result<PagingMode, String> {
    s.parse::<PagingMode>().map_err(|e| e.to_string())
}

/// A value parser for a closed set of names: `parse` decides (with its
/// own message, naming what is allowed), and the names are clap's
/// possible values, so `--help` lists them and shell completion offers
/// them. (The types live in `no_std` crates that do not depend on clap, so
/// they cannot derive `ValueEnum`.)
#[derive(Clone)]
pub struct Named<T> {
    names: &'static [&'static str],
    parse: fn(&str) -> Result<T, String>,
}

impl<T> Named<T> {
    /// A parser of `names` by `parse`.
    pub const fn new(names: &'static [&'static str], parse: fn(&str) -> Result<T, String>) -> Self {
        Named { names, parse }
    }
}

impl<T: Clone + Send + Sync + 'static> clap::builder::TypedValueParser for Named<T> {
    type Value = T;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<T, clap::Error> {
        self.parse.parse_ref(cmd, arg, value)
    }

    fn possible_values(
        &self,
    ) -> Option<Box<dyn Iterator<Item = clap::builder::PossibleValue> + '_>> {
        Some(Box::new(
            self.names
                .iter()
                .map(|n| clap::builder::PossibleValue::new(*n)),
        ))
    }
}

/// Paging modes by name.
pub const MODE_NAMES: &[&str] = &["2level", "pae", "4level", "5level"];
/// Schemes by name.
pub const SCHEME_NAMES: &[&str] = &[
    "uncached",
    "slab-unsynced",
    "slab-pgd-list",
    "slab-ticket",
    "slab-prepopulated",
    "shared-kernel",
];
/// Lock kinds by name.
pub const LOCK_NAMES: &[&str] = &["tas", "ticket", "mutex"];
/// Workloads by name.
pub const WORKLOAD_NAMES: &[&str] = &["script", "kernbench", "xrestart", "mixed"];
/// Scenarios by name.
pub const SCENARIO_NAMES: &[&str] = &["swapper", "fork", "cpa-split", "cached-after-cpa"];

/// `--mode`.
pub fn mode_parser() -> Named<PagingMode> {
    Named {
        names: MODE_NAMES,
        parse: parse_mode,
    }
}

/// `--scheme`.
pub fn scheme_parser() -> Named<pgdcache::Scheme> {
    Named {
        names: SCHEME_NAMES,
        parse: crate::settings::parse_scheme,
    }
}

/// `--lock`.
pub fn lock_parser() -> Named<pgdcache::LockKind> {
    Named {
        names: LOCK_NAMES,
        parse: crate::settings::parse_lock,
    }
}

/// `--workload`.
pub fn workload_parser() -> Named<sim::Workload> {
    Named {
        names: WORKLOAD_NAMES,
        parse: crate::settings::parse_workload,
    }
}

/// `--scenario`.
pub fn scenario_parser() -> Named<pgdcache_scenarios::Scenario> {
    Named {
        names: SCENARIO_NAMES,
        parse: crate::export::parse_scenario,
    }
}

/// Parses a size like `64M`, `1G`, `4096K` or a byte count into bytes
/// (no range check).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (num, mult) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let m: u64 = match c.to_ascii_uppercase() {
                'K' => 1 << 10,
                'M' => 1 << 20,
                'G' => 1 << 30,
                _ => {
                    return Err(format!(
                        "invalid size {:?}: unknown unit {c:?} (use K, M or G, e.g. 64M or 1G)",
                        crate::settings::clip(s)
                    ))
                }
            };
            (&t[..i], m)
        }
        _ => (t, 1),
    };
    let n: u64 = num.parse().map_err(|_| {
        format!(
            "invalid size {:?}: expected a number with an optional K/M/G suffix, e.g. 64M or 1G",
            crate::settings::clip(s)
        )
    })?;
    n.checked_mul(mult)
        .ok_or_else(|| format!("invalid size {:?}: too large", crate::settings::clip(s)))
}

fn parse_ram_in(s: &str, min: u64, max: u64, range: &str) -> Result<u64, String> {
    let bytes = parse_size(s).map_err(|e| format!("{e} (allowed {range})"))?;
    if !(min..=max).contains(&bytes) || bytes % (4 << 20) != 0 {
        return Err(format!(
            "RAM size {:?} is not allowed: {range} in steps of 4M ({min}..{max} bytes)",
            crate::settings::clip(s)
        ));
    }
    Ok(bytes)
}

/// Parses the RAM of `dump`: 16M..4G, a multiple of 4M.
pub fn parse_ram(s: &str) -> Result<u64, String> {
    parse_ram_in(s, MIN_RAM, MAX_RAM, "16M..4G")
}

/// Parses the RAM of a simulator run (`run`, `compare`): 32M..4G, a
/// multiple of 4M, the same range `SimConfig::validate` allows.
pub fn parse_ram_sim(s: &str) -> Result<u64, String> {
    parse_ram_in(
        s,
        sim::config::MIN_SIM_RAM,
        sim::config::MAX_SIM_RAM,
        "32M..4G",
    )
}

/// Checks, before any work starts, that `path` can be written as the
/// output file of `flag` with extension `ext`: the extension, the parent
/// directory, and that the file can be created (an existing file is
/// replaced; a directory is refused). Leaves no file behind.
pub fn check_output_file(path: &Path, flag: &str, ext: &str) -> Result<(), CliError> {
    let usage = |why: String| CliError::Usage(format!("{flag} {}: {why}", path.display()));
    if path.extension().and_then(|e| e.to_str()) != Some(ext) {
        return Err(usage(format!("expected a path ending in .{ext}")));
    }
    if path.is_dir() {
        return Err(usage("is a directory".into()));
    }
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if !parent.is_dir() {
        return Err(usage(format!(
            "its directory {} does not exist",
            parent.display()
        )));
    }
    let existed = path.exists();
    let opened = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path);
    match opened {
        Ok(_) => {
            if !existed {
                let _ = std::fs::remove_file(path);
            }
            Ok(())
        }
        Err(e) => Err(usage(format!("cannot be written: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ram_sizes() {
        assert_eq!(parse_ram("64M"), Ok(64 << 20));
        assert_eq!(parse_ram("1g"), Ok(1 << 30));
        assert_eq!(parse_ram("4G"), Ok(4 << 30));
        assert_eq!(parse_ram("16777216"), Ok(16 << 20));
        assert!(parse_ram("8M").unwrap_err().contains("16M..4G"));
        assert!(parse_ram("5G").is_err());
        assert!(parse_ram("lots").unwrap_err().contains("lots"));
        assert!(parse_ram("18M").unwrap_err().contains("steps of 4M"));
        assert!(parse_ram("99999999999999G").is_err());
        // The simulator's range is the one its validation uses.
        assert!(parse_ram_sim("16M").unwrap_err().contains("32M..4G"));
        assert_eq!(parse_ram_sim("32M"), Ok(32 << 20));
    }

    #[test]
    fn possible_values_are_the_types_names() {
        for m in PagingMode::ALL {
            assert!(MODE_NAMES.contains(&m.name()), "{m}");
        }
        assert_eq!(MODE_NAMES.len(), PagingMode::ALL.len());
        assert_eq!(
            SCHEME_NAMES.to_vec(),
            pgdcache::Scheme::ALL.map(|s| s.name()).to_vec()
        );
        assert_eq!(
            LOCK_NAMES.to_vec(),
            pgdcache::LockKind::ALL.map(|s| s.name()).to_vec()
        );
        assert_eq!(
            WORKLOAD_NAMES.to_vec(),
            sim::Workload::ALL.map(|s| s.name()).to_vec()
        );
        assert_eq!(
            SCENARIO_NAMES.to_vec(),
            pgdcache_scenarios::Scenario::ALL.map(|s| s.name()).to_vec()
        );
    }

    #[test]
    fn modes() {
        assert_eq!(parse_mode("pae"), Ok(PagingMode::Pae));
        assert!(parse_mode("3level")
            .unwrap_err()
            .contains("2level, pae, 4level, 5level"));
    }

    #[test]
    fn output_files_are_checked_and_left_alone() {
        let dir = std::env::temp_dir().join(format!("pgdcache-args-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("x.svg");
        assert!(check_output_file(&f, "--plot", "svg").is_ok());
        assert!(!f.exists(), "no file left behind");
        assert!(check_output_file(&dir.join("x.png"), "--plot", "svg").is_err());
        assert!(check_output_file(&dir.join("no/x.svg"), "--plot", "svg")
            .unwrap_err()
            .to_string()
            .contains("does not exist"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
