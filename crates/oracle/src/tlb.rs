//! Whole-address-space mappings, as reported by QEMU's `info tlb`.
//!
//! `info tlb` dumps one line per present leaf entry:
//! `<va>: <pa> XGPDACTUW` (each flag letter or `-`). The letters are those of
//! the leaf entry only; the page size is not printed, so the backend infers
//! it from the mode and the `P` (PS) flag and disambiguates 2 MiB vs 1 GiB
//! with an extra `gva2gpa` query. This module holds the parsed
//! representation and the line parser.

use serde::{Deserialize, Serialize};

use crate::OracleError;

/// Leaf-entry flags shown by `info tlb`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MapFlags {
    /// `X`: execute-disable (NX) bit set in the leaf.
    pub nx: bool,
    /// `G`: global.
    pub global: bool,
    /// `P`: the leaf is a large page (PS bit).
    pub large: bool,
    /// `D`: dirty.
    pub dirty: bool,
    /// `A`: accessed.
    pub accessed: bool,
    /// `C`: cache disable (PCD).
    pub pcd: bool,
    /// `T`: write-through (PWT).
    pub pwt: bool,
    /// `U`: user.
    pub user: bool,
    /// `W`: writable.
    pub writable: bool,
}

impl MapFlags {
    /// Parse the 9-letter flag field `XGPDACTUW`.
    pub fn parse(s: &str) -> Result<Self, OracleError> {
        let b = s.as_bytes();
        if b.len() != 9 {
            return Err(OracleError::Protocol(format!("info tlb flags {s:?}")));
        }
        let on = |i: usize, c: u8| b[i] == c;
        Ok(MapFlags {
            nx: on(0, b'X'),
            global: on(1, b'G'),
            large: on(2, b'P'),
            dirty: on(3, b'D'),
            accessed: on(4, b'A'),
            pcd: on(5, b'C'),
            pwt: on(6, b'T'),
            user: on(7, b'U'),
            writable: on(8, b'W'),
        })
    }
}

/// One mapped page.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Mapping {
    /// Linear address of the page (canonical in long mode).
    pub va: u64,
    /// Physical address of the page.
    pub pa: u64,
    /// Page size in bytes (4 KiB, 2 MiB, 4 MiB or 1 GiB).
    pub size: u64,
    /// Leaf flags.
    pub flags: MapFlags,
}

/// One raw `info tlb` line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawTlbLine {
    /// Linear address printed.
    pub va: u64,
    /// Physical address printed (may lack PSE-36 bits in 2-level mode).
    pub pa: u64,
    /// Flags.
    pub flags: MapFlags,
}

/// Parse the full text of `info tlb`. Lines that are not mappings (e.g.
/// "PG disabled") yield an error only if nothing else parses.
pub fn parse_info_tlb(text: &str) -> Result<Vec<RawTlbLine>, OracleError> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let Some((va, rest)) = line.split_once(':') else {
            return Err(OracleError::Protocol(format!("info tlb line {line:?}")));
        };
        let mut it = rest.split_whitespace();
        let (Some(pa), Some(flags)) = (it.next(), it.next()) else {
            return Err(OracleError::Protocol(format!("info tlb line {line:?}")));
        };
        let va = u64::from_str_radix(va.trim(), 16)
            .map_err(|e| OracleError::Protocol(format!("info tlb va {va:?}: {e}")))?;
        let pa = u64::from_str_radix(pa, 16)
            .map_err(|e| OracleError::Protocol(format!("info tlb pa {pa:?}: {e}")))?;
        out.push(RawTlbLine {
            va,
            pa,
            flags: MapFlags::parse(flags)?,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lines() {
        let t = "0000000000400000: 0000000000800000 --P-A---W\r\n\
                 ffff800000001000: 0000000000123000 XG-D-C-UW\n";
        let v = parse_info_tlb(t).unwrap();
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].va, 0x400000);
        assert_eq!(v[0].pa, 0x800000);
        assert!(v[0].flags.large && v[0].flags.accessed && v[0].flags.writable);
        assert!(!v[0].flags.user);
        assert!(v[1].flags.nx && v[1].flags.global && v[1].flags.dirty);
        assert!(v[1].flags.pcd && v[1].flags.user && !v[1].flags.pwt);
        assert!(parse_info_tlb("PG disabled").is_err());
    }
}
