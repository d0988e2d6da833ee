//! Page-table images: the oracle's only input.
//!
//! An image is a snapshot of (part of) guest physical memory plus the four
//! control registers that decide how the MMU interprets it (`CR0`, `CR3`,
//! `CR4`, `EFER`). Only the frames that a translation *reads* need to be
//! present: the page-table frames. Data pages may be absent, which is what lets
//! an image describe tables that map physical addresses far above any RAM.
//!
//! On disk an image is a directory holding `image.json` (an [`ImageDesc`]) and
//! one raw little-endian byte file per [`MemRange`], conventionally named
//! `mem-<gpa in hex>.bin`. The format is documented in the crate README.

use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

/// Largest `image.json` [`PagingImage::load`] reads.
pub const MAX_DESC_BYTES: u64 = 16 << 20;
/// Largest total of range bytes [`PagingImage::load`] accepts (an image
/// holds page-table frames, not RAM).
pub const MAX_IMAGE_BYTES: u64 = 1 << 30;
/// Most ranges in one image.
pub const MAX_RANGES: usize = 1 << 16;

use serde::{Deserialize, Serialize};

/// CR0.PE: protected mode.
pub const CR0_PE: u64 = 1 << 0;
/// CR0.ET: always 1 on anything newer than a 386.
pub const CR0_ET: u64 = 1 << 4;
/// CR0.WP: supervisor writes honour R/W.
pub const CR0_WP: u64 = 1 << 16;
/// CR0.PG: paging.
pub const CR0_PG: u64 = 1 << 31;
/// CR4.PSE: 4 MiB pages in 2-level paging.
pub const CR4_PSE: u64 = 1 << 4;
/// CR4.PAE: 64-bit entries (PAE, 4-level, 5-level).
pub const CR4_PAE: u64 = 1 << 5;
/// CR4.PGE: global pages.
pub const CR4_PGE: u64 = 1 << 7;
/// CR4.LA57: 5-level paging.
pub const CR4_LA57: u64 = 1 << 12;
/// CR4.SMEP.
pub const CR4_SMEP: u64 = 1 << 20;
/// CR4.SMAP.
pub const CR4_SMAP: u64 = 1 << 21;
/// EFER.LME: long mode enable.
pub const EFER_LME: u64 = 1 << 8;
/// EFER.LMA: long mode active (set by the CPU).
pub const EFER_LMA: u64 = 1 << 10;
/// EFER.NXE: execute-disable bit is honoured.
pub const EFER_NXE: u64 = 1 << 11;

/// Which x86 paging structure the image's `CR3` points at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PagingMode {
    /// 32-bit paging: 1024 x 4-byte entries, optional 4 MiB PSE / PSE-36 pages.
    #[serde(rename = "2level")]
    TwoLevel,
    /// PAE: 4-entry PDPT, then 512 x 8-byte PD and PT.
    #[serde(rename = "pae")]
    Pae,
    /// IA-32e 4-level paging (PML4).
    #[serde(rename = "4level")]
    FourLevel,
    /// IA-32e 5-level paging (PML5, CR4.LA57).
    #[serde(rename = "5level")]
    FiveLevel,
}

impl PagingMode {
    /// All four modes, in increasing order of depth.
    pub const ALL: [PagingMode; 4] = [
        PagingMode::TwoLevel,
        PagingMode::Pae,
        PagingMode::FourLevel,
        PagingMode::FiveLevel,
    ];

    /// Whether the CPU runs 64-bit code in this mode (IA-32e).
    pub fn is_long(self) -> bool {
        matches!(self, PagingMode::FourLevel | PagingMode::FiveLevel)
    }

    /// Size in bytes of one paging-structure entry.
    pub fn entry_size(self) -> u64 {
        match self {
            PagingMode::TwoLevel => 4,
            _ => 8,
        }
    }

    /// Canonical serde name ("2level", "pae", "4level", "5level").
    pub fn as_str(self) -> &'static str {
        match self {
            PagingMode::TwoLevel => "2level",
            PagingMode::Pae => "pae",
            PagingMode::FourLevel => "4level",
            PagingMode::FiveLevel => "5level",
        }
    }

    /// Typical control registers for this mode: `(cr0, cr4, efer)` with
    /// PE|PG|WP, PSE for 2-level, PAE (+LA57), and LME|NXE for long mode.
    pub fn default_regs(self) -> (u64, u64, u64) {
        let cr0 = CR0_PE | CR0_ET | CR0_WP | CR0_PG;
        match self {
            PagingMode::TwoLevel => (cr0, CR4_PSE, 0),
            PagingMode::Pae => (cr0, CR4_PAE | CR4_PSE, EFER_NXE),
            PagingMode::FourLevel => (cr0, CR4_PAE | CR4_PSE, EFER_LME | EFER_NXE),
            PagingMode::FiveLevel => (cr0, CR4_PAE | CR4_PSE | CR4_LA57, EFER_LME | EFER_NXE),
        }
    }
}

impl std::fmt::Display for PagingMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One contiguous range of guest-physical memory stored in a raw file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemRange {
    /// Guest-physical start address.
    pub gpa: u64,
    /// Length in bytes (must equal the file's size).
    pub len: u64,
    /// File name, relative to the image directory.
    pub file: String,
}

/// The JSON half of an image (`image.json`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageDesc {
    /// Paging structure that `cr3` points at.
    pub mode: PagingMode,
    /// CR0 (must have PE and PG).
    pub cr0: u64,
    /// CR3 (physical address of the top-level table, plus PCD/PWT bits).
    pub cr3: u64,
    /// CR4 (PSE, PAE, LA57, PGE, SMEP, SMAP... as the image wants).
    pub cr4: u64,
    /// EFER (LME for long mode, NXE for execute-disable).
    pub efer: u64,
    /// Memory ranges, each stored in its own file.
    pub ranges: Vec<MemRange>,
    /// The top-level tables the image holds, each a CR3 a CPU may run with
    /// in the same memory (e.g. every pgd of a kernel, cached ones
    /// included; `cr3` is normally one of them). [`PagingImage::with_cr3`]
    /// gives the image as a CPU running on another root sees it. Optional
    /// in `image.json` (absent: only `cr3`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roots: Vec<ImageRoot>,
}

/// A named top-level table of an image (see [`ImageDesc::roots`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRoot {
    /// What this table is ("swapper_pg_dir", "cached pgd 0x3a3000", ...).
    pub name: String,
    /// The CR3 value that selects it (same flag bits as [`ImageDesc::cr3`]).
    pub cr3: u64,
}

/// Errors from loading or saving an image.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// Filesystem error on `path`.
    #[error("image I/O on {path}: {source}")]
    Io {
        /// File involved.
        path: PathBuf,
        /// Underlying error.
        source: io::Error,
    },
    /// `image.json` is not a valid [`ImageDesc`].
    #[error("image.json: {0}")]
    Json(#[from] serde_json::Error),
    /// Structural problem (length mismatch, overlap, bad file name...).
    #[error("invalid image: {0}")]
    Invalid(String),
}

/// A page-table image in memory: the descriptor plus the bytes of each range.
#[derive(Clone, PartialEq, Eq)]
pub struct PagingImage {
    /// Mode and control registers (the `ranges` field is rewritten by
    /// [`PagingImage::save`] to match `data`).
    pub desc: ImageDesc,
    /// `(gpa, bytes)` for each range.
    pub data: Vec<(u64, Vec<u8>)>,
}

impl std::fmt::Debug for PagingImage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Summarize the bytes: images hold whole frames of mostly zeros.
        let ranges: Vec<String> = self
            .data
            .iter()
            .map(|(g, b)| format!("{g:#x}+{:#x}", b.len()))
            .collect();
        f.debug_struct("PagingImage")
            .field("mode", &self.desc.mode)
            .field("cr0", &format_args!("{:#x}", self.desc.cr0))
            .field("cr3", &format_args!("{:#x}", self.desc.cr3))
            .field("cr4", &format_args!("{:#x}", self.desc.cr4))
            .field("efer", &format_args!("{:#x}", self.desc.efer))
            .field("ranges", &ranges)
            .finish()
    }
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> ImageError + '_ {
    move |source| ImageError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Reads `path`, which must be a regular file of exactly `len` bytes (if
/// given) and at most `max` bytes: the metadata is checked before the
/// first byte is read, and the read stops at the limit, so a FIFO never
/// blocks and `/dev/zero` is never read.
fn read_regular(path: &Path, len: Option<u64>, max: u64) -> Result<Vec<u8>, ImageError> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // `symlink_metadata` would refuse links; a link to a regular file is
    // fine, and `metadata` follows it to what would be read.
    let meta = fs::metadata(path).map_err(io_err(path))?;
    if !meta.is_file() {
        return Err(ImageError::Invalid(format!("{name} is not a regular file")));
    }
    let size = meta.len();
    if let Some(want) = len {
        if size != want {
            return Err(ImageError::Invalid(format!(
                "{name}: {size} bytes, image.json says {want}"
            )));
        }
    }
    if size > max {
        return Err(ImageError::Invalid(format!(
            "{name}: {size} bytes; at most {max}"
        )));
    }
    // Open without blocking: a regular file never blocks, and if the path
    // was swapped for a FIFO since the check, O_NONBLOCK keeps the open
    // from waiting for a writer.
    let f = open_nonblocking(path).map_err(io_err(path))?;
    let meta = f.metadata().map_err(io_err(path))?;
    if !meta.is_file() || meta.len() != size {
        return Err(ImageError::Invalid(format!(
            "{name} changed while it was being read"
        )));
    }
    let cap = usize::try_from(size).unwrap_or(usize::MAX);
    let mut bytes = Vec::new();
    bytes
        .try_reserve_exact(cap)
        .map_err(|_| ImageError::Invalid(format!("{name}: {size} bytes do not fit in memory")))?;
    f.take(size.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(io_err(path))?;
    if bytes.len() as u64 != size {
        return Err(ImageError::Invalid(format!(
            "{name}: read {} bytes, expected {size} (file changed while read)",
            bytes.len()
        )));
    }
    Ok(bytes)
}

#[cfg(unix)]
fn open_nonblocking(path: &Path) -> io::Result<fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    // O_NONBLOCK only matters for a FIFO swapped in after the check.
    fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
}

#[cfg(not(unix))]
fn open_nonblocking(path: &Path) -> io::Result<fs::File> {
    fs::File::open(path)
}

impl PagingImage {
    /// An image with `mode`'s default control registers and the given `cr3`,
    /// and no memory yet.
    pub fn new(mode: PagingMode, cr3: u64) -> Self {
        let (cr0, cr4, efer) = mode.default_regs();
        PagingImage {
            desc: ImageDesc {
                mode,
                cr0,
                cr3,
                cr4,
                efer,
                ranges: Vec::new(),
                roots: Vec::new(),
            },
            data: Vec::new(),
        }
    }

    /// The same memory and control registers with `cr3` loaded instead: the
    /// image as a CPU running on another of its [`ImageDesc::roots`] sees it.
    pub fn with_cr3(&self, cr3: u64) -> Self {
        let mut img = self.clone();
        img.desc.cr3 = cr3;
        img
    }

    /// Descriptor whose `ranges` match `data` (file names `mem-<gpa>.bin`).
    pub fn normalized_desc(&self) -> ImageDesc {
        let mut desc = self.desc.clone();
        desc.ranges = self
            .data
            .iter()
            .map(|(gpa, bytes)| MemRange {
                gpa: *gpa,
                len: bytes.len() as u64,
                file: format!("mem-{gpa:x}.bin"),
            })
            .collect();
        desc
    }

    /// Check that ranges don't overlap or wrap.
    pub fn validate(&self) -> Result<(), ImageError> {
        let mut spans: Vec<(u64, u64)> = Vec::with_capacity(self.data.len());
        for (gpa, bytes) in &self.data {
            let end = gpa
                .checked_add(bytes.len() as u64)
                .ok_or_else(|| ImageError::Invalid(format!("range at {gpa:#x} wraps")))?;
            spans.push((*gpa, end));
        }
        spans.sort_unstable();
        for w in spans.windows(2) {
            if w[1].0 < w[0].1 {
                return Err(ImageError::Invalid(format!(
                    "ranges at {:#x} and {:#x} overlap",
                    w[0].0, w[1].0
                )));
            }
        }
        Ok(())
    }

    /// Write `image.json` and one `mem-<gpa>.bin` per range into `dir`
    /// (created if missing). The new image replaces any image already in
    /// `dir`: `mem-*.bin` files it does not list are removed, so the
    /// directory never holds stale ranges `image.json` does not describe.
    pub fn save(&self, dir: &Path) -> Result<(), ImageError> {
        self.validate()?;
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let desc = self.normalized_desc();
        for (range, (_, bytes)) in desc.ranges.iter().zip(&self.data) {
            let path = dir.join(&range.file);
            fs::write(&path, bytes).map_err(io_err(&path))?;
        }
        let json = serde_json::to_string_pretty(&desc)?;
        let path = dir.join("image.json");
        fs::write(&path, json).map_err(io_err(&path))?;
        let keep: std::collections::BTreeSet<&str> =
            desc.ranges.iter().map(|r| r.file.as_str()).collect();
        for entry in fs::read_dir(dir).map_err(io_err(dir))? {
            let entry = entry.map_err(io_err(dir))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let is_range = name.starts_with("mem-") && name.ends_with(".bin");
            if is_range && !keep.contains(name) && entry.path().is_file() {
                let p = entry.path();
                fs::remove_file(&p).map_err(io_err(&p))?;
            }
        }
        Ok(())
    }

    /// Parses and checks an `image.json` text: the descriptor, its range
    /// names (plain relative file names), count, lengths (no wrap, no
    /// overlap, at most [`MAX_IMAGE_BYTES`] in total). Reads no file.
    pub fn parse_desc(json: &str) -> Result<ImageDesc, ImageError> {
        let desc: ImageDesc = serde_json::from_str(json)?;
        if desc.ranges.len() > MAX_RANGES {
            return Err(ImageError::Invalid(format!(
                "{} ranges; at most {MAX_RANGES}",
                desc.ranges.len()
            )));
        }
        let mut total = 0u64;
        let mut spans = Vec::with_capacity(desc.ranges.len());
        for r in &desc.ranges {
            let rel = Path::new(&r.file);
            if r.file.is_empty()
                || rel.is_absolute()
                || rel.components().count() != 1
                || rel
                    .components()
                    .any(|c| !matches!(c, std::path::Component::Normal(_)))
            {
                return Err(ImageError::Invalid(format!(
                    "range file {:?} must be a plain file name in the image directory",
                    r.file.chars().take(80).collect::<String>()
                )));
            }
            total = total.saturating_add(r.len);
            if total > MAX_IMAGE_BYTES {
                return Err(ImageError::Invalid(format!(
                    "the ranges hold more than {MAX_IMAGE_BYTES} bytes; an image holds page-table frames"
                )));
            }
            let end = r
                .gpa
                .checked_add(r.len)
                .ok_or_else(|| ImageError::Invalid(format!("range at {:#x} wraps", r.gpa)))?;
            spans.push((r.gpa, end));
        }
        spans.sort_unstable();
        for w in spans.windows(2) {
            if w[1].0 < w[0].1 {
                return Err(ImageError::Invalid(format!(
                    "ranges at {:#x} and {:#x} overlap",
                    w[0].0, w[1].0
                )));
            }
        }
        Ok(desc)
    }

    /// Read an image saved by [`PagingImage::save`] (or written by hand).
    ///
    /// Hostile input is refused before it is read: `image.json` and every
    /// range file must be regular files (not a FIFO, a device or a
    /// directory), `image.json` at most [`MAX_DESC_BYTES`], each range file
    /// exactly the declared length (checked on its metadata first, then the
    /// read is bounded to that length), and the ranges at most
    /// [`MAX_IMAGE_BYTES`] in total.
    pub fn load(dir: &Path) -> Result<Self, ImageError> {
        let path = dir.join("image.json");
        let json = read_regular(&path, None, MAX_DESC_BYTES)?;
        let json = String::from_utf8(json)
            .map_err(|_| ImageError::Invalid("image.json is not UTF-8 text".into()))?;
        let desc = Self::parse_desc(&json)?;
        let mut data = Vec::with_capacity(desc.ranges.len());
        for r in &desc.ranges {
            let fpath = dir.join(&r.file);
            let bytes = read_regular(&fpath, Some(r.len), MAX_IMAGE_BYTES)?;
            data.push((r.gpa, bytes));
        }
        let img = PagingImage { desc, data };
        img.validate()?;
        Ok(img)
    }

    /// Read `len` (≤ 8) little-endian bytes at `gpa`, if an image range holds
    /// all of them.
    pub fn read_phys(&self, gpa: u64, len: usize) -> Option<u64> {
        for (base, bytes) in &self.data {
            if gpa >= *base {
                let off = usize::try_from(gpa - base).ok()?;
                if let Some(s) = bytes.get(off..off.checked_add(len)?) {
                    let mut v = [0u8; 8];
                    v[..len].copy_from_slice(s);
                    return Some(u64::from_le_bytes(v));
                }
            }
        }
        None
    }

    /// Write `len` (≤ 8) little-endian bytes of `val` at `gpa`; false if no
    /// range holds them.
    pub fn write_phys(&mut self, gpa: u64, len: usize, val: u64) -> bool {
        for (base, bytes) in &mut self.data {
            if gpa >= *base {
                let Ok(off) = usize::try_from(gpa - *base) else {
                    continue;
                };
                let Some(end) = off.checked_add(len) else {
                    continue;
                };
                if let Some(s) = bytes.get_mut(off..end) {
                    s.copy_from_slice(&val.to_le_bytes()[..len]);
                    return true;
                }
            }
        }
        false
    }

    /// Convenience for hand-built images: make sure a zeroed 4 KiB frame exists
    /// at `gpa` (page aligned), adding a range if needed.
    pub fn add_frame(&mut self, gpa: u64) {
        if self.read_phys(gpa, 1).is_none() {
            self.data.push((gpa & !0xfff, vec![0; 4096]));
        }
    }

    /// Convenience for hand-built images: write one paging-structure entry of
    /// the mode's size (`index` within the table at `table`), creating the
    /// table's frame if needed.
    pub fn set_entry(&mut self, table: u64, index: u64, val: u64) {
        let es = self.desc.mode.entry_size();
        self.add_frame(table & !0xfff);
        let ok = self.write_phys(table + index * es, es as usize, val);
        debug_assert!(ok);
    }

    /// Lowest and one-past-highest guest-physical address held by the image.
    pub fn span(&self) -> Option<(u64, u64)> {
        let lo = self.data.iter().map(|(g, _)| *g).min()?;
        let hi = self
            .data
            .iter()
            .map(|(g, b)| g.saturating_add(b.len() as u64))
            .max()?;
        Some((lo, hi))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_names_and_round_trip() {
        for (m, name) in [
            (PagingMode::TwoLevel, "\"2level\""),
            (PagingMode::Pae, "\"pae\""),
            (PagingMode::FourLevel, "\"4level\""),
            (PagingMode::FiveLevel, "\"5level\""),
        ] {
            assert_eq!(serde_json::to_string(&m).unwrap(), name);
            assert_eq!(serde_json::from_str::<PagingMode>(name).unwrap(), m);
        }
        let mut img = PagingImage::new(PagingMode::Pae, 0x1020);
        img.set_entry(0x1020, 3, 0x1_0000_2001);
        img.data.push((0x1_0000_2000, vec![7; 16]));
        let dir = std::env::temp_dir().join(format!("oracle-image-{}", std::process::id()));
        img.save(&dir).unwrap();
        // No roots: the field is left out of image.json (older readers).
        let json = fs::read_to_string(dir.join("image.json")).unwrap();
        assert!(!json.contains("roots"), "{json}");
        img.desc.roots.push(ImageRoot {
            name: "other".into(),
            cr3: 0x1040,
        });
        img.save(&dir).unwrap();
        let back = PagingImage::load(&dir).unwrap();
        assert_eq!(back.desc.roots, img.desc.roots);
        assert_eq!(back.with_cr3(0x1040).desc.cr3, 0x1040);
        assert_eq!(back.data, img.data);
        assert_eq!(back.read_phys(0x1038, 8), Some(0x1_0000_2001));
        assert_eq!(back.desc.ranges[1].file, "mem-100002000.bin");
        // Hostile file names and length mismatches are rejected.
        let mut desc = back.desc.clone();
        desc.ranges[0].file = "../x".into();
        fs::write(
            dir.join("image.json"),
            serde_json::to_string(&desc).unwrap(),
        )
        .unwrap();
        assert!(matches!(
            PagingImage::load(&dir),
            Err(ImageError::Invalid(_))
        ));
        desc.ranges[0].file = "mem-1000.bin".into();
        desc.ranges[0].len = 5;
        fs::write(
            dir.join("image.json"),
            serde_json::to_string(&desc).unwrap(),
        )
        .unwrap();
        assert!(matches!(
            PagingImage::load(&dir),
            Err(ImageError::Invalid(_))
        ));
        let _ = fs::remove_dir_all(&dir);
        // Overlapping ranges are invalid.
        img.data.push((0x1800, vec![0; 8]));
        assert!(img.validate().is_err());
    }
}
