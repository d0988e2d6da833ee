//! Value parsers for command-line arguments. Each returns a message naming
//! the bad value and what is allowed; clap prints it and exits with 2.

use physmem::{MAX_RAM, MIN_RAM};
use x86paging::PagingMode;

/// Parses a paging mode: 2level, pae, 4level, 5level.
pub fn parse_mode(s: &str) -> Result<PagingMode, String> {
    s.parse::<PagingMode>().map_err(|e| e.to_string())
}

/// Parses a RAM size like `64M`, `1G`, `4096K` or a byte count, and checks
/// it is within 16 MiB..=4 GiB and a multiple of 4 MiB.
pub fn parse_ram(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (num, mult) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let m: u64 = match c.to_ascii_uppercase() {
                'K' => 1 << 10,
                'M' => 1 << 20,
                'G' => 1 << 30,
                _ => {
                    return Err(format!(
                    "invalid RAM size {s:?}: unknown unit {c:?} (use K, M or G, e.g. 64M or 1G)"
                ))
                }
            };
            (&t[..i], m)
        }
        _ => (t, 1),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("invalid RAM size {s:?}: expected a number with an optional K/M/G suffix, e.g. 64M or 1G"))?;
    let bytes = n
        .checked_mul(mult)
        .ok_or_else(|| format!("invalid RAM size {s:?}: too large (allowed 16M..4G)"))?;
    if !(MIN_RAM..=MAX_RAM).contains(&bytes) {
        return Err(format!(
            "RAM size {s:?} is out of range: allowed 16M..4G (16777216..4294967296 bytes)"
        ));
    }
    if bytes % (4 << 20) != 0 {
        return Err(format!("RAM size {s:?} must be a multiple of 4M"));
    }
    Ok(bytes)
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
        assert!(parse_ram("18M").unwrap_err().contains("multiple of 4M"));
        assert!(parse_ram("99999999999999G").is_err());
    }

    #[test]
    fn modes() {
        assert_eq!(parse_mode("pae"), Ok(PagingMode::Pae));
        assert!(parse_mode("3level")
            .unwrap_err()
            .contains("2level, pae, 4level, 5level"));
    }
}
