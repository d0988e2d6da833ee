//! `pgdcache translate`: walk an oracle image with *our* software MMU.
//!
//! The image (from `pgdcache export` or any other producer of the
//! `crates/oracle` format) is read back into memory and served to
//! [`x86paging::translate`] through [`pgdcache_scenarios::ImageMem`], with
//! the CPU state rebuilt from its CR0/CR3/CR4/EFER. So this answers, from
//! the same bytes QEMU would be given, what our walker says each address
//! does: physical address, page size, leaf level and effective flags, or
//! the fault with its #PF error code.

use std::path::PathBuf;

use clap::Args;
use oracle::PagingImage;
use pgdcache_scenarios::{cpu_from_image, ImageMem};
use physmem::VirtAddr;
use x86paging::{Access, AccessKind, PfErrorCode, WalkFault};

use crate::error::CliError;
use crate::out::outln;

/// Arguments of `translate`.
#[derive(Args, Debug)]
pub struct TranslateArgs {
    /// Image directory (image.json + mem-*.bin).
    #[arg(long)]
    pub image: PathBuf,
    /// Linear addresses: hex (0x...) or decimal; `_` separators allowed.
    #[arg(required = true, value_name = "ADDR")]
    pub addrs: Vec<String>,
    /// Access to check: read, write or exec.
    #[arg(long, default_value = "read", value_parser = ["read", "write", "exec"])]
    pub access: String,
    /// Access from user mode (CPL3) instead of supervisor.
    #[arg(long)]
    pub user: bool,
    /// MAXPHYADDR of the walking CPU (the image does not record it).
    /// Default: 40 on 2level/pae, 46 on 4level/5level.
    #[arg(long, value_parser = clap::value_parser!(u32).range(32..=52), allow_hyphen_values = true)]
    pub maxphyaddr: Option<u32>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

fn bad_address(arg: &str, why: impl std::fmt::Display) -> CliError {
    CliError::Usage(format!(
        "bad address {:?}: {why}",
        crate::settings::clip(arg)
    ))
}

/// Parses `0x...` hex or decimal, with optional `_` separators.
pub fn parse_addr(s: &str) -> Result<u64, String> {
    let t: String = s.trim().chars().filter(|&c| c != '_').collect();
    let r = match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        Some(h) => u64::from_str_radix(h, 16),
        None => t.parse::<u64>(),
    };
    r.map_err(|_| {
        "expected a hex (0x...) or decimal number from 0 to 0xffff_ffff_ffff_ffff".to_string()
    })
}

fn flag_names(f: x86paging::EntryFlags) -> Vec<&'static str> {
    f.iter_names().map(|(n, _)| n).collect()
}

fn code_names(c: PfErrorCode) -> Vec<&'static str> {
    c.iter_names().map(|(n, _)| n).collect()
}

/// Runs `translate`: exit 2 for a bad address or a bad image; faults are
/// results, not errors (exit 0).
pub fn run(a: &TranslateArgs) -> Result<(), CliError> {
    let img = PagingImage::load(&a.image)
        .map_err(|e| CliError::Usage(format!("--image {}: {e}", a.image.display())))?;
    let cpu = cpu_from_image(&img.desc, a.maxphyaddr);
    let mode = cpu.mode;
    let mut vas = Vec::with_capacity(a.addrs.len());
    for s in &a.addrs {
        let bad = |why: String| bad_address(s, why);
        let va = parse_addr(s).map_err(bad)?;
        if !mode.is_64bit() && va > u64::from(u32::MAX) {
            return Err(bad(format!("{mode} linear addresses are 32-bit")));
        }
        if !mode.is_canonical(VirtAddr::new(va)) {
            return Err(bad(format!(
                "not canonical for {mode} ({}-bit linear addresses)",
                mode.va_bits()
            )));
        }
        vas.push(va);
    }
    let kind = match a.access.as_str() {
        "write" => AccessKind::Write,
        "exec" => AccessKind::Execute,
        _ => AccessKind::Read,
    };
    let access = Access { kind, user: a.user };
    let mem = ImageMem::new(&img);
    let mut out = Vec::new();
    for va in vas {
        let r = x86paging::translate(&mem, &cpu, VirtAddr::new(va), access);
        if a.json {
            out.push(match r {
                Ok(t) => serde_json::json!({
                    "va": format!("{va:#x}"),
                    "pa": format!("{:#x}", t.pa.as_u64()),
                    "page_size": t.size.name(),
                    "level": t.level.name(),
                    "flags": flag_names(t.flags),
                    "entry_pa": format!("{:#x}", t.entry_pa.as_u64()),
                }),
                Err(f) => fault_json(va, &f),
            });
        } else {
            match r {
                Ok(t) => outln!(
                    "{va:#x} -> {:#x}  {} page, {} leaf at {:#x}, flags {}",
                    t.pa.as_u64(),
                    t.size.name(),
                    t.level.name(),
                    t.entry_pa.as_u64(),
                    flag_names(t.flags).join("|")
                )?,
                Err(f) => outln!("{va:#x}: {}", fault_text(&f))?,
            }
        }
    }
    if a.json {
        let v = serde_json::json!({
            "mode": mode.to_string(),
            "cr3": format!("{:#x}", img.desc.cr3),
            "access": a.access,
            "user": a.user,
            "results": out,
        });
        crate::out::json(&v)?;
    }
    Ok(())
}

fn fault_text(f: &WalkFault) -> String {
    match f {
        WalkFault::PageFault { code, .. } => {
            let names = code_names(*code);
            format!(
                "{f} [{}]",
                if names.is_empty() {
                    "not-present read supervisor".to_string()
                } else {
                    names.join("|")
                }
            )
        }
        other => other.to_string(),
    }
}

fn fault_json(va: u64, f: &WalkFault) -> serde_json::Value {
    match f {
        WalkFault::PageFault {
            code,
            level,
            entry_pa,
        } => serde_json::json!({
            "va": format!("{va:#x}"),
            "fault": "page_fault",
            "vector": 14,
            "error_code": code.bits(),
            "error_bits": code_names(*code),
            "level": level.name(),
            "entry_pa": format!("{:#x}", entry_pa.as_u64()),
        }),
        other => serde_json::json!({
            "va": format!("{va:#x}"),
            "fault": match other {
                WalkFault::NonCanonical { .. } => "non_canonical",
                WalkFault::PdpteReserved { .. } => "pdpte_reserved",
                WalkFault::Dangling { .. } => "dangling",
                _ => "outside_image",
            },
            "vector": other.vector(),
            "message": other.to_string(),
        }),
    }
}
