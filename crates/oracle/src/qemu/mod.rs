//! QEMU (TCG) backend: the x86 MMU of `qemu-system-x86_64`, driven through
//! its gdbstub.
//!
//! A [`session::Session`] is one QEMU process started with `-S` (CPU stopped
//! at reset) and `-gdb tcp:127.0.0.1:PORT`. The image's memory is written
//! while paging is off (straight into guest RAM shared with this process,
//! see [`ram`]), then EFER, CR4, CR3 and CR0 are written with `P` packets, in
//! that order, exactly like an OS turning paging on (QEMU sets EFER.LMA
//! itself). From then on:
//!
//! * `translate` asks the monitor's `gva2gpa` (QEMU's *debug* walker);
//!   `translate_many` pipelines those requests;
//! * `mappings` parses `info tlb`;
//! * `probe` runs a generated boot program ([`crate::probe`], driven by
//!   [`probe_run`]) that performs the accesses for real.
//!
//! One QEMU serves many images: loading the next image wipes guest RAM to
//! zero and resets the control registers ([`session::Session::reload`]),
//! which leaves the guest as a freshly started QEMU would be, with the same
//! `-m` (an image needing another RAM size gets a new process). A probe
//! run dirties RAM (window, A/D bits, stores), so the image is reloaded
//! before the next debug-walk question.
//!
//! Measured caveats of QEMU 7.2's debug walker: it ignores reserved bits, U/S,
//! R/W and NX (it answers "what maps where", not "is this valid"), and
//! `info tlb` in 2-level mode drops PSE-36 high address bits, so this backend
//! re-asks `gva2gpa` for every 2-level large page.

pub mod probe_run;
pub mod ram;
pub mod session;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::image::{PagingImage, PagingMode};
use crate::tlb::{parse_info_tlb, Mapping};
use crate::{Access, MmuOracle, OracleError, ProbeOutcome, Support};
use ram::{is_ram, ram_size_for, GIB, MIB};
use session::Session;

pub use session::die_with_parent;

/// Environment variable naming the QEMU binary (default:
/// `qemu-system-x86_64` from `PATH`).
pub const QEMU_ENV: &str = "PGDCACHE_QEMU";

/// How to run QEMU.
#[derive(Clone, Debug)]
pub struct QemuConfig {
    /// Binary to run.
    pub binary: PathBuf,
    /// Bound on every gdbstub exchange once the session is up.
    pub timeout: Duration,
    /// Bound on QEMU's start-up: until its gdbstub accepts a connection,
    /// and again until it has answered the first exchanges (an unresponsive
    /// stub fails within this, not after many `timeout`s).
    pub start_timeout: Duration,
    /// Bound on one probe batch running in the guest.
    pub run_timeout: Duration,
    /// Minimum guest RAM in bytes.
    pub min_ram: u64,
}

impl Default for QemuConfig {
    fn default() -> Self {
        let binary = std::env::var_os(QEMU_ENV)
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("qemu-system-x86_64"));
        QemuConfig {
            binary,
            timeout: Duration::from_secs(10),
            start_timeout: Duration::from_secs(5),
            run_timeout: Duration::from_secs(10),
            min_ram: 64 * MIB,
        }
    }
}

impl QemuConfig {
    /// Whether the configured binary can be executed (`--version` succeeds).
    pub fn available(&self) -> bool {
        Command::new(&self.binary)
            .arg("--version")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }
}

/// The QEMU-TCG oracle.
pub struct QemuOracle {
    cfg: QemuConfig,
    session: Option<Session>,
    image: Option<PagingImage>,
    /// The session's RAM holds more than `image` (a probe ran there).
    dirty: bool,
    /// QEMU processes started so far.
    starts: u64,
}

impl QemuOracle {
    /// An oracle with the default configuration (binary from `PGDCACHE_QEMU`
    /// or `PATH`).
    pub fn new() -> Self {
        Self::with_config(QemuConfig::default())
    }

    /// An oracle with an explicit configuration.
    pub fn with_config(cfg: QemuConfig) -> Self {
        QemuOracle {
            cfg,
            session: None,
            image: None,
            dirty: false,
            starts: 0,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &QemuConfig {
        &self.cfg
    }

    /// Whether the QEMU binary can be run at all.
    pub fn available(&self) -> bool {
        self.cfg.available()
    }

    /// QEMU processes this oracle has started (one serves many images).
    pub fn sessions_started(&self) -> u64 {
        self.starts
    }

    /// The session, holding exactly the loaded image (reloaded if a probe
    /// dirtied it).
    fn session(&mut self) -> Result<&mut Session, OracleError> {
        if self.dirty {
            let img = self.image.take().ok_or(OracleError::NotLoaded)?;
            self.dirty = false;
            self.load(&img)?;
        }
        self.session.as_mut().ok_or(OracleError::NotLoaded)
    }

    /// A session with `ram` bytes of RAM holding `img` and nothing else,
    /// paging off: the current one wiped if it can be, else a new QEMU.
    fn clean_session(&mut self, img: &PagingImage, ram: u64) -> Result<&mut Session, OracleError> {
        self.image = None;
        self.dirty = false;
        let reused = match self.session.as_mut() {
            Some(s) if s.reusable_for(ram) => s.reset().and_then(|()| s.write_image(img)).is_ok(),
            _ => false,
        };
        if !reused {
            self.session = None;
            let mut s = Session::start(&self.cfg, ram)?;
            self.starts += 1;
            s.write_image(img)?;
            self.session = Some(s);
        }
        self.session.as_mut().ok_or(OracleError::NotLoaded)
    }

    fn mode(&self) -> Result<PagingMode, OracleError> {
        self.image
            .as_ref()
            .map(|i| i.desc.mode)
            .ok_or(OracleError::NotLoaded)
    }

    /// The same memory and registers as the loaded image but another CR3
    /// (another root of a multi-root image): write CR3 in the running guest
    /// instead of starting a new QEMU. The debug walk reads every table,
    /// PAE's PDPTEs included, from guest memory at each request, and CR3's
    /// write flushes QEMU's TLB. False (nothing done, or the session
    /// dropped) if the fast path does not apply or fails.
    fn switch_cr3(&mut self, img: &PagingImage) -> bool {
        if self.dirty {
            return false;
        }
        let (Some(s), Some(cur)) = (self.session.as_mut(), self.image.as_ref()) else {
            return false;
        };
        let (a, b) = (&cur.desc, &img.desc);
        if (a.mode, a.cr0, a.cr4, a.efer) != (b.mode, b.cr0, b.cr4, b.efer) || cur.data != img.data
        {
            return false;
        }
        let ok = s.set_reg("cr3", b.cr3).is_ok() && s.get_reg("cr3").ok() == Some(b.cr3);
        if ok {
            self.image = Some(img.clone());
        } else {
            self.session = None;
            self.image = None;
        }
        ok
    }
}

impl Default for QemuOracle {
    fn default() -> Self {
        Self::new()
    }
}

/// Canonical form of a long-mode address for a `bits`-bit linear space.
pub fn canonical(va: u64, bits: u32) -> u64 {
    let shift = 64 - bits;
    (((va << shift) as i64) >> shift) as u64
}

fn va_bits(mode: PagingMode) -> u32 {
    match mode {
        PagingMode::TwoLevel | PagingMode::Pae => 32,
        PagingMode::FourLevel => 48,
        PagingMode::FiveLevel => 57,
    }
}

impl MmuOracle for QemuOracle {
    fn name(&self) -> &str {
        "qemu-tcg"
    }

    fn supports(&mut self, _mode: PagingMode) -> Support {
        if self.cfg.available() {
            Support::Yes
        } else {
            Support::No(format!(
                "{} not runnable (apt-get install qemu-system-x86, or set {QEMU_ENV})",
                self.cfg.binary.display()
            ))
        }
    }

    fn load(&mut self, img: &PagingImage) -> Result<(), OracleError> {
        img.validate()?;
        if self.switch_cr3(img) {
            return Ok(());
        }
        let ram = ram_size_for(img, self.cfg.min_ram)?;
        let r = self
            .clean_session(img, ram)
            .and_then(|s| s.enable_paging(img));
        if let Err(e) = r {
            self.session = None;
            return Err(e);
        }
        self.image = Some(img.clone());
        Ok(())
    }

    fn translate(&mut self, va: u64) -> Result<Option<u64>, OracleError> {
        let mode = self.mode()?;
        let bits = va_bits(mode);
        if bits == 32 && va > u64::from(u32::MAX) {
            return Err(OracleError::Unsupported(format!(
                "{va:#x} is not a 32-bit linear address"
            )));
        }
        if bits > 32 && canonical(va, bits) != va {
            // Non-canonical: no translation exists (a real access raises #GP).
            return Ok(None);
        }
        self.session()?.gva2gpa(va)
    }

    fn translate_many(&mut self, vas: &[u64]) -> Result<Vec<Option<u64>>, OracleError> {
        let mode = self.mode()?;
        let bits = va_bits(mode);
        if let Some(va) = vas
            .iter()
            .find(|&&va| bits == 32 && va > u64::from(u32::MAX))
        {
            return Err(OracleError::Unsupported(format!(
                "{va:#x} is not a 32-bit linear address"
            )));
        }
        // Non-canonical addresses have no translation (a real access raises
        // #GP); only the others are asked.
        let asked: Vec<u64> = vas
            .iter()
            .copied()
            .filter(|&va| bits == 32 || canonical(va, bits) == va)
            .collect();
        let mut answers = self.session()?.gva2gpa_many(&asked)?.into_iter();
        vas.iter()
            .map(|&va| {
                if bits == 32 || canonical(va, bits) == va {
                    answers
                        .next()
                        .ok_or_else(|| OracleError::Protocol("gva2gpa answers missing".into()))
                } else {
                    Ok(None)
                }
            })
            .collect()
    }

    fn mappings(&mut self) -> Result<Vec<Mapping>, OracleError> {
        let mode = self.mode()?;
        let s = self.session()?;
        let text = s.gdb.monitor("info tlb")?;
        let raw = parse_info_tlb(&text)?;
        // QEMU's PAE dump leaves the NX bit in the address: keep bits 51:12.
        let pa_of = |i: usize| raw[i].pa & 0x000f_ffff_ffff_f000;
        // Large pages `info tlb` cannot settle alone, each with the address
        // to ask `gva2gpa` (all asked in one pipelined batch): 2-level drops
        // PSE-36 bits (ask the exact walker); long mode does not print 2 MiB
        // vs 1 GiB (a 1 GiB page also maps its second 2 MiB).
        let mut ask: Vec<(usize, u64)> = Vec::new();
        for (i, l) in raw.iter().enumerate().filter(|(_, l)| l.flags.large) {
            match mode {
                PagingMode::TwoLevel => ask.push((i, l.va)),
                PagingMode::Pae => {}
                PagingMode::FourLevel | PagingMode::FiveLevel => {
                    let next = raw.get(i + 1).map(|n| n.va);
                    let gap = next.map(|n| n.wrapping_sub(l.va));
                    if l.va % GIB == 0 && gap.is_none_or(|g| g >= GIB) {
                        ask.push((i, l.va + 2 * MIB));
                    }
                }
            }
        }
        let vas: Vec<u64> = ask.iter().map(|&(_, va)| va).collect();
        let answers: std::collections::HashMap<usize, Option<u64>> = ask
            .iter()
            .map(|&(i, _)| i)
            .zip(s.gva2gpa_many(&vas)?)
            .collect();
        let mut out = Vec::with_capacity(raw.len());
        for (i, l) in raw.iter().enumerate() {
            let (size, pa) = if !l.flags.large {
                (4096, pa_of(i))
            } else {
                match mode {
                    PagingMode::TwoLevel => {
                        let pa = answers.get(&i).copied().flatten().ok_or_else(|| {
                            OracleError::Protocol(format!(
                                "info tlb lists {:#x} but gva2gpa says unmapped",
                                l.va
                            ))
                        })?;
                        (4 * MIB, pa)
                    }
                    PagingMode::Pae => (2 * MIB, pa_of(i)),
                    PagingMode::FourLevel | PagingMode::FiveLevel => {
                        if answers.get(&i) == Some(&Some(pa_of(i) + 2 * MIB)) {
                            (GIB, pa_of(i))
                        } else {
                            (2 * MIB, pa_of(i))
                        }
                    }
                }
            };
            out.push(Mapping {
                va: l.va,
                pa,
                size,
                flags: l.flags,
            });
        }
        Ok(out)
    }

    /// Runs on this oracle's session (wiped and reloaded with the image
    /// first), which afterwards counts as dirty: the next debug-walk
    /// question reloads the image, so it never sees the probe's side effects.
    fn probe(&mut self, accesses: &[Access]) -> Result<Vec<ProbeOutcome>, OracleError> {
        let img = self.image.clone().ok_or(OracleError::NotLoaded)?;
        if accesses.is_empty() {
            return Ok(Vec::new());
        }
        // Leave room above the image's low ranges for the window's frames
        // (the image may be a whole RAM dump).
        let low_end = img
            .data
            .iter()
            .map(|(g, b)| g + b.len() as u64)
            .filter(|&e| e <= 0xb000_0000)
            .max()
            .unwrap_or(0);
        let ram = ram_size_for(&img, self.cfg.min_ram.max(low_end + 4 * MIB))?;
        let usable = move |f: u64| f < 0xc000_0000 && is_ram(ram, f, 4096);
        let plan = crate::probe::plan(&img, accesses, &usable, true)?;
        let run_timeout = self.cfg.run_timeout;
        let r = self
            .clean_session(&img, ram)
            .and_then(|s| probe_run::run(s, &img, &plan, accesses, run_timeout));
        self.image = Some(img);
        self.dirty = true;
        if r.is_err() {
            // Lost control of the guest: never reuse this process.
            self.session = None;
        }
        r
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_forms() {
        assert_eq!(canonical(0x0000_8000_0000_0000, 48), 0xffff_8000_0000_0000);
        assert_eq!(canonical(0x7fff_ffff_ffff, 48), 0x7fff_ffff_ffff);
    }
}
