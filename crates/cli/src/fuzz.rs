//! Fuzz targets for everything hostile input reaches: the oracle image
//! reader (`translate --image`), the TOML config (`--config`), the address,
//! size, duration and count parsers, and the software walker on arbitrary
//! table bytes.
//!
//! They are [bolero] targets run as ordinary tests (`cargo test`): bolero's
//! random engine draws an [`Input`] per execution, which either mutates one
//! of the seed files kept in the repo (`crates/cli/fuzz/corpus/<target>/`:
//! byte flips, insertions, deletions, splices, and dictionary tokens such
//! as keys, units and boundary numbers) or is raw random bytes. A panic is
//! a crash: bolero shrinks the input and fails the test. Each target also
//! checks properties of what it accepted (an accepted RAM size is in range
//! and aligned, an accepted config validates, a translation stays inside
//! MAXPHYADDR and keeps the page offset, ...).
//!
//! `cargo test` runs 20 000 executions per target (2 000 in debug builds);
//! `BOLERO_RANDOM_ITERATIONS=1000000 cargo test --release -p pgdcache-cli
//! fuzz_` runs a million each (README, "Fuzzing"). Each target prints its
//! execution count.

use crate::args::{parse_ram, parse_ram_sim, parse_size};
use crate::compare::{spec_with, CompareArgs};
use crate::settings::{self, FileConfig, RunFlags, SimFlags, Sub};
use bolero::TypeGenerator;
use oracle::image::{ImageDesc, MemRange};
use oracle::PagingImage;
use pgdcache_scenarios::{cpu_from_image, ImageMem};
use physmem::VirtAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use x86paging::{Access, AccessKind, PagingMode};

/// Executions per target in a plain `cargo test`.
fn iterations() -> usize {
    if cfg!(debug_assertions) {
        2_000
    } else {
        20_000
    }
}

/// One mutation of a seed.
#[derive(Clone, Debug, TypeGenerator)]
enum Edit {
    /// Overwrite the byte at `at % len`.
    Set(u16, u8),
    /// Insert a byte.
    Insert(u16, u8),
    /// Delete a run of bytes.
    Delete(u16, u8),
    /// Insert dictionary token `tok % tokens` at `at % len`.
    Token(u16, u8),
    /// Insert bytes of seed `other` at `at`.
    Splice(u16, u8, u16, u8),
    /// Truncate.
    Truncate(u16),
}

/// What one execution feeds a target.
#[derive(Clone, Debug, TypeGenerator)]
struct Input {
    /// Which seed (`% seeds`), or raw bytes when `raw` is set.
    seed: u16,
    raw: bool,
    edits: Vec<Edit>,
    bytes: Vec<u8>,
}

impl Input {
    /// The bytes this input stands for: a mutated seed, or raw bytes.
    fn build(&self, seeds: &[Vec<u8>], tokens: &[&str]) -> Vec<u8> {
        if self.raw || seeds.is_empty() {
            return self.bytes.clone();
        }
        let mut b = seeds[self.seed as usize % seeds.len()].clone();
        for e in self.edits.iter().take(16) {
            let at = |i: u16, len: usize| if len == 0 { 0 } else { i as usize % (len + 1) };
            match *e {
                Edit::Set(i, v) => {
                    if !b.is_empty() {
                        let n = b.len();
                        b[i as usize % n] = v;
                    }
                }
                Edit::Insert(i, v) => {
                    let p = at(i, b.len());
                    b.insert(p, v);
                }
                Edit::Delete(i, n) => {
                    let p = at(i, b.len());
                    let end = (p + n as usize % 16 + 1).min(b.len());
                    b.drain(p..end);
                }
                Edit::Token(i, t) => {
                    if !tokens.is_empty() {
                        let p = at(i, b.len());
                        let tok = tokens[t as usize % tokens.len()].as_bytes();
                        b.splice(p..p, tok.iter().copied());
                    }
                }
                Edit::Splice(i, other, from, n) => {
                    let o = &seeds[other as usize % seeds.len()];
                    if !o.is_empty() {
                        let s = from as usize % o.len();
                        let e = (s + n as usize).min(o.len());
                        let p = at(i, b.len());
                        b.splice(p..p, o[s..e].iter().copied());
                    }
                }
                Edit::Truncate(i) => {
                    let p = at(i, b.len());
                    b.truncate(p);
                }
            }
        }
        b.extend_from_slice(&self.bytes[..self.bytes.len().min(64)]);
        b
    }
}

/// The seed files of `target`.
fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus {}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    let seeds: Vec<Vec<u8>> = files.iter().filter_map(|p| std::fs::read(p).ok()).collect();
    assert!(!seeds.is_empty(), "corpus {} is empty", dir.display());
    seeds
}

/// Runs `target` over mutated seeds of `name` and reports the count.
fn fuzz(name: &str, tokens: &[&str], target: impl Fn(&[u8]) + std::panic::RefUnwindSafe) {
    let seeds = corpus(name);
    let runs = AtomicU64::new(0);
    // Every seed as it is first.
    for s in &seeds {
        target(s);
        runs.fetch_add(1, Ordering::Relaxed);
    }
    bolero::check!()
        .with_iterations(iterations())
        .with_type::<Input>()
        .for_each(|inp| {
            target(&inp.build(&seeds, tokens));
            runs.fetch_add(1, Ordering::Relaxed);
        });
    eprintln!(
        "fuzz {name}: {} executions, 0 crashes",
        runs.load(Ordering::Relaxed)
    );
}

const NUMBER_TOKENS: &[&str] = &[
    "0",
    "1",
    "-1",
    "64",
    "65",
    "4096",
    "65536",
    "4294967296",
    "18446744073709551615",
    "18446744073709551616",
    "9223372036854775807",
    "1e308",
    "nan",
    "inf",
    "0x",
    "0X",
    "_",
    ".",
    "K",
    "M",
    "G",
    "k",
    "T",
    "ms",
    "s",
    "m",
    " ",
    "\u{0}",
    "é",
];

#[test]
fn fuzz_parsers() {
    fuzz("parsers", NUMBER_TOKENS, |b| {
        let s = String::from_utf8_lossy(b);
        for line in s.lines().chain(std::iter::once(s.as_ref())) {
            if let Ok(n) = parse_ram(line) {
                assert!(
                    (16 << 20..=4 << 30).contains(&n) && n % (4 << 20) == 0,
                    "{line:?}"
                );
            }
            if let Ok(n) = parse_ram_sim(line) {
                assert!(
                    (32 << 20..=4 << 30).contains(&n) && n % (4 << 20) == 0,
                    "{line:?}"
                );
                // The run's validation accepts every size the flag accepts.
                let mut c = sim::SimConfig::for_workload(
                    sim::Workload::Script,
                    PagingMode::TwoLevel,
                    pgdcache::Scheme::SlabPgdList,
                );
                c.ram = n;
                assert!(c.validate().is_ok(), "{line:?}");
            }
            if let Ok(n) = parse_size(line) {
                assert_eq!(parse_size(&n.to_string()), Ok(n));
            }
            if let Ok(va) = crate::translate::parse_addr(line) {
                assert_eq!(crate::translate::parse_addr(&format!("{va:#x}")), Ok(va));
                assert_eq!(crate::translate::parse_addr(&va.to_string()), Ok(va));
            }
            if let Ok(d) = settings::parse_duration(line) {
                assert!(d >= sim::config::MIN_DURATION && d <= sim::config::MAX_DURATION);
            }
            if let Ok(n) = settings::parse_cpus(line) {
                assert!((1..=64).contains(&n));
            }
            if let Ok(n) = settings::parse_ops(line) {
                assert!((1..=settings::MAX_OPS).contains(&n));
            }
            if let Ok(n) = settings::parse_task_pages(line) {
                assert!((1..=65_536).contains(&n));
            }
            let _ = settings::parse_seed(line);
            let _ = settings::parse_cpa_rate(line);
            let _ = settings::parse_lock(line);
            let _ = settings::parse_workload(line);
            let _ = settings::parse_scheme(line);
            let _ = crate::args::parse_mode(line);
            let _ = crate::export::parse_scenario(line);
            let _ = crate::oracle_check::parse_modes(line);
            if let Ok(n) = crate::oracle_check::parse_cases(line) {
                assert!(n >= 1);
            }
            let _ = crate::oracle_check::parse_probe_cases(line);
        }
    });
}

const TOML_TOKENS: &[&str] = &[
    "mode",
    "modes",
    "scheme",
    "schemes",
    "lock",
    "cpus",
    "workload",
    "ops",
    "duration",
    "task_pages",
    "cpa_rate",
    "ram",
    "seed",
    " = ",
    "\"",
    "[",
    "]",
    "[]",
    ",",
    "\n",
    "{",
    "}",
    "true",
    "false",
    "1979-05-27",
    "2level",
    "pae",
    "4level",
    "5level",
    "slab-pgd-list",
    "slab-ticket",
    "shared-kernel",
    "slab-prepopulated",
    "uncached",
    "slab-unsynced",
    "tas",
    "ticket",
    "mutex",
    "script",
    "kernbench",
    "xrestart",
    "mixed",
    "off",
    "max",
    "64M",
    "4G",
    "16M",
    "2s",
    "1ms",
    "0.0000001",
    "#",
    "'",
    "\"\"\"",
    "[table]",
    "a.b",
];

#[test]
fn fuzz_toml_config() {
    let mut tokens: Vec<&str> = TOML_TOKENS.to_vec();
    tokens.extend_from_slice(NUMBER_TOKENS);
    fuzz("toml_config", &tokens, |b| {
        let Ok(text) = std::str::from_utf8(b) else {
            return;
        };
        if let Ok(file) = FileConfig::parse(text, Sub::Run) {
            if let Ok(c) = RunFlags::default().config_with(&SimFlags::default(), &file) {
                assert!(c.validate().is_ok(), "{text:?}");
                assert!(c.scheme.supports(c.mode).is_ok(), "{text:?}");
            }
        }
        if let Ok(file) = FileConfig::parse(text, Sub::Compare) {
            if let Ok(spec) = spec_with(&CompareArgs::default(), &file) {
                assert!(
                    !spec.modes.is_empty() && !spec.schemes.is_empty(),
                    "{text:?}"
                );
                assert!(spec.validate().is_ok(), "{text:?}");
            }
        }
    });
}

const JSON_TOKENS: &[&str] = &[
    "\"mode\"",
    "\"ranges\"",
    "\"gpa\"",
    "\"len\"",
    "\"file\"",
    "\"cr3\"",
    "\"cr0\"",
    "\"cr4\"",
    "\"efer\"",
    "\"2level\"",
    "\"pae\"",
    "\"4level\"",
    "\"5level\"",
    "\"mem-0.bin\"",
    "\"mem-1000.bin\"",
    "\"../x\"",
    "\"/etc/passwd\"",
    "\".\"",
    "\"\"",
    "\"a/b\"",
    "4096",
    "0",
    "-1",
    "18446744073709551615",
    "18446744073709551616",
    "1e400",
    "null",
    "[",
    "]",
    "{",
    "}",
    ",",
    ":",
    "{\"gpa\":0,\"len\":4096,\"file\":\"mem-0.bin\"}",
    "{\"gpa\":4096,\"len\":8,\"file\":\"mem-1000.bin\"}",
];

/// A per-thread scratch directory for image files.
fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "pgdcache-fuzz-{name}-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    let _ = std::fs::create_dir_all(&d);
    d
}

/// Reads the image the bytes describe (image.json plus range files whose
/// contents and lengths come from the bytes too) with the real reader, and
/// walks a few addresses of what it accepts.
#[test]
fn fuzz_image_reader() {
    let dir = scratch("image");
    fuzz("image_json", JSON_TOKENS, |b| {
        // The first byte decides the range files' contents: each declared
        // range gets a file of its declared length (if small), or one byte
        // short, or none, or a directory in its place.
        let (how, json) = b.split_first().map_or((0, b), |(h, j)| (*h, j));
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for e in entries.flatten() {
                let p = e.path();
                if p.is_dir() {
                    let _ = std::fs::remove_dir_all(&p);
                } else {
                    let _ = std::fs::remove_file(&p);
                }
            }
        }
        if std::fs::write(dir.join("image.json"), json).is_err() {
            return;
        }
        let parsed = std::str::from_utf8(json)
            .ok()
            .and_then(|t| PagingImage::parse_desc(t).ok());
        if let Some(desc) = &parsed {
            for (i, r) in desc.ranges.iter().enumerate().take(8) {
                let p = dir.join(&r.file);
                match (how >> (i % 4)) & 3 {
                    0 | 1 if r.len <= 64 << 10 => {
                        let fill = how.wrapping_add(i as u8);
                        let _ = std::fs::write(&p, vec![fill; r.len as usize]);
                    }
                    2 if r.len > 0 && r.len <= 64 << 10 => {
                        let _ = std::fs::write(&p, vec![0u8; r.len as usize - 1]);
                    }
                    3 => {
                        let _ = std::fs::create_dir(&p);
                    }
                    _ => {}
                }
            }
        }
        let Ok(img) = PagingImage::load(&dir) else {
            return;
        };
        // What the reader accepts matches what image.json declared.
        let desc = parsed.expect("an image that loads has a valid image.json");
        assert_eq!(img.data.len(), desc.ranges.len());
        for ((gpa, bytes), r) in img.data.iter().zip(&desc.ranges) {
            assert_eq!((*gpa, bytes.len() as u64), (r.gpa, r.len));
        }
        walk_some(&img, how);
    });
    let _ = std::fs::remove_dir_all(&dir);
}

/// Walks 16 addresses of `img` with every access kind, checking what a
/// translation must satisfy.
fn walk_some(img: &PagingImage, salt: u8) {
    let cpu = cpu_from_image(&img.desc, None);
    let mem = ImageMem::new(img);
    let mode = cpu.mode;
    for i in 0..16u64 {
        let raw = i
            .wrapping_mul(0x9e37_79b9_7f4a_7c15)
            .rotate_left(u32::from(salt))
            ^ u64::from(salt) << 12;
        let va = if mode.is_64bit() {
            // Canonical: sign-extend from the mode's width.
            let bits = mode.va_bits();
            let shift = 64 - bits;
            (((raw << shift) as i64) >> shift) as u64
        } else {
            raw & 0xffff_ffff
        };
        for (kind, user) in [
            (AccessKind::Read, false),
            (AccessKind::Write, true),
            (AccessKind::Execute, (i & 1) == 1),
        ] {
            let r = x86paging::translate(&mem, &cpu, VirtAddr::new(va), Access { kind, user });
            if let Ok(t) = r {
                let pa = t.pa.as_u64();
                assert!(pa < 1u64 << cpu.maxphyaddr, "{va:#x} -> {pa:#x}");
                let mask = t.size.bytes() - 1;
                assert_eq!(pa & mask, va & mask, "{va:#x} -> {pa:#x}: page offset");
            }
        }
    }
}

#[derive(Clone, Debug, TypeGenerator)]
struct WalkInput {
    mode: u8,
    regs: u8,
    cr3_slot: u8,
    fix_pointers: bool,
    salt: u8,
    tables: Input,
}

/// The walker on arbitrary table bytes: up to 8 frames at physical
/// addresses 0, 4096, ... filled from the input (optionally with every
/// present entry's address pointed back into those frames, so that walks
/// go deep and loop), any mode and control-register combination.
#[test]
fn fuzz_walker() {
    let seeds = corpus("walker");
    let runs = AtomicU64::new(0);
    bolero::check!()
        .with_iterations(iterations())
        .with_type::<WalkInput>()
        .for_each(|w| {
            let mut bytes = w.tables.build(&seeds, &[]);
            bytes.truncate(8 * 4096);
            let frames = bytes.len().div_ceil(4096).max(1);
            bytes.resize(frames * 4096, 0);
            let mode = oracle::PagingMode::ALL[w.mode as usize % 4];
            let esize = mode.entry_size() as usize;
            if w.fix_pointers {
                for e in bytes.chunks_mut(esize) {
                    let mut v = [0u8; 8];
                    v[..esize].copy_from_slice(e);
                    let raw = u64::from_le_bytes(v);
                    if raw & 1 == 1 {
                        let frame = ((raw >> 12) % frames as u64) << 12;
                        let addr_mask = if esize == 4 {
                            0xffff_f000
                        } else {
                            0x000f_ffff_ffff_f000
                        };
                        let fixed = (raw & !addr_mask) | frame;
                        e.copy_from_slice(&fixed.to_le_bytes()[..esize]);
                    }
                }
            }
            let (cr0, cr4, efer) = mode.default_regs();
            use oracle::image::{CR0_WP, CR4_PSE, CR4_SMAP, CR4_SMEP, EFER_NXE};
            let flip = |bit: u8, v: u64, f: u64| if w.regs & (1 << bit) != 0 { v ^ f } else { v };
            let cr0 = flip(0, cr0, CR0_WP);
            let cr4 = flip(1, flip(2, flip(3, cr4, CR4_PSE), CR4_SMEP), CR4_SMAP);
            let efer = flip(4, efer, EFER_NXE);
            let cr3 = if mode == oracle::PagingMode::Pae {
                (w.cr3_slot as u64 % (frames as u64 * 128)) * 32
            } else {
                (w.cr3_slot as u64 % frames as u64) * 4096
            };
            let img = PagingImage {
                desc: ImageDesc {
                    mode,
                    cr0,
                    cr3,
                    cr4,
                    efer,
                    ranges: vec![MemRange {
                        gpa: 0,
                        len: bytes.len() as u64,
                        file: "mem-0.bin".into(),
                    }],
                    roots: Vec::new(),
                },
                data: vec![(0, bytes)],
            };
            walk_some(&img, w.salt);
            runs.fetch_add(1, Ordering::Relaxed);
        });
    eprintln!(
        "fuzz walker: {} executions, 0 crashes",
        runs.load(Ordering::Relaxed)
    );
}
