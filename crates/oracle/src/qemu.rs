//! QEMU (TCG) backend: the x86 MMU of `qemu-system-x86_64`, driven through
//! its gdbstub.
//!
//! A session is one QEMU process started with `-S` (CPU stopped at reset) and
//! `-gdb tcp:127.0.0.1:PORT`. The image's memory is written with `M` packets
//! while paging is still off (so virtual = physical), then EFER, CR4, CR3 and
//! CR0 are written with `P` packets, in that order, exactly like an OS turning
//! paging on (QEMU sets EFER.LMA itself). From then on:
//!
//! * `translate` asks the monitor's `gva2gpa` (QEMU's *debug* walker);
//! * `mappings` parses `info tlb`;
//! * `probe` starts a second, throw-away QEMU and runs a generated boot
//!   program ([`crate::probe`]) that performs the accesses for real.
//!
//! Measured caveats of QEMU 7.2's debug walker: it ignores reserved bits, U/S,
//! R/W and NX (it answers "what maps where", not "is this valid"), and
//! `info tlb` in 2-level mode drops PSE-36 high address bits, so this backend
//! re-asks `gva2gpa` for every 2-level large page.
//!
//! Memory sizing: `-m` is chosen to cover every image range. The `pc`
//! machine puts RAM below 4 GiB up to 3.5 GiB, or, when RAM is 3.5 GiB or
//! more, 3 GiB below 4 GiB and the rest from 4 GiB up; ranges in the
//! 3–4 GiB PCI hole are then rejected as [`OracleError::Unsupported`]. The RAM
//! backend is created with `reserve=off`, so a 60 GiB guest for a PAE table at
//! 59 GiB costs nothing but the pages touched.

use std::collections::HashMap;
use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::image::{PagingImage, PagingMode, CR0_PG};
use crate::rsp::RspClient;
use crate::tlb::{parse_info_tlb, Mapping};
use crate::{Access, MmuOracle, OracleError, ProbeOutcome, Support};

/// Environment variable naming the QEMU binary (default:
/// `qemu-system-x86_64` from `PATH`).
pub const QEMU_ENV: &str = "PGDCACHE_QEMU";

const GIB: u64 = 1 << 30;
const MIB: u64 = 1 << 20;
/// RAM at or above this size makes the `pc` machine split at 3 GiB.
const PC_SPLIT_THRESHOLD: u64 = 0xe000_0000;
/// Below-4G RAM when the split happens.
const PC_LOWMEM_SPLIT: u64 = 0xc000_0000;

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

/// Register numbers and sizes, from the stub's target description.
#[derive(Clone, Debug, Default)]
pub struct RegMap {
    regs: HashMap<String, (usize, usize)>,
}

impl RegMap {
    /// `(number, size in bytes)` of register `name`.
    pub fn get(&self, name: &str) -> Result<(usize, usize), OracleError> {
        self.regs.get(name).copied().ok_or_else(|| {
            OracleError::Protocol(format!("target description has no register {name}"))
        })
    }
}

fn strip_xml_comments(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(start) = rest.find("<!--") {
        out.push_str(&rest[..start]);
        match rest[start..].find("-->") {
            Some(end) => rest = &rest[start + end + 3..],
            None => {
                rest = "";
                break;
            }
        }
    }
    out.push_str(rest);
    out
}

fn xml_attr<'a>(tag: &'a str, name: &str) -> Option<&'a str> {
    let pat = format!("{name}=\"");
    let mut from = 0;
    while let Some(i) = tag[from..].find(&pat) {
        let at = from + i;
        let ok_boundary = at == 0 || tag.as_bytes()[at - 1].is_ascii_whitespace();
        let start = at + pat.len();
        if ok_boundary {
            let end = tag[start..].find('"')?;
            return Some(&tag[start..start + end]);
        }
        from = start;
    }
    None
}

/// Collect `<reg>` tags (and `xi:include`s, fetched through `fetch`) in
/// document order, numbering them like GDB does.
fn parse_target_xml(
    xml: &str,
    fetch: &mut dyn FnMut(&str) -> Result<String, OracleError>,
    map: &mut RegMap,
    next: &mut usize,
    depth: usize,
) -> Result<(), OracleError> {
    if depth > 4 {
        return Err(OracleError::Protocol(
            "target.xml includes nest too deep".into(),
        ));
    }
    let xml = strip_xml_comments(xml);
    let mut rest = xml.as_str();
    while let Some(lt) = rest.find('<') {
        let after = &rest[lt + 1..];
        let gt = after
            .find('>')
            .ok_or_else(|| OracleError::Protocol("unterminated XML tag".into()))?;
        let tag = &after[..gt];
        rest = &after[gt + 1..];
        if let Some(body) = tag.strip_prefix("reg") {
            if !body.starts_with(char::is_whitespace) {
                continue;
            }
            let name = xml_attr(tag, "name")
                .ok_or_else(|| OracleError::Protocol(format!("reg without name: {tag}")))?;
            let bits: usize = xml_attr(tag, "bitsize")
                .and_then(|b| b.parse().ok())
                .ok_or_else(|| OracleError::Protocol(format!("reg without bitsize: {tag}")))?;
            if let Some(n) = xml_attr(tag, "regnum").and_then(|n| n.parse().ok()) {
                *next = n;
            }
            map.regs.insert(name.to_string(), (*next, bits.div_ceil(8)));
            *next += 1;
        } else if tag.starts_with("xi:include") {
            if let Some(href) = xml_attr(tag, "href") {
                let sub = fetch(href)?;
                parse_target_xml(&sub, fetch, map, next, depth + 1)?;
            }
        }
    }
    Ok(())
}

/// Where guest RAM must reach to hold `img` (plus `extra_low` bytes of free
/// RAM below 3 GiB for the probe program): returns the `-m` size in bytes.
pub fn ram_size_for(img: &PagingImage, min_ram: u64) -> Result<u64, OracleError> {
    let mut low_end = 0u64;
    let mut high_end = 0u64;
    for (gpa, bytes) in &img.data {
        let end = gpa.saturating_add(bytes.len() as u64);
        if end <= 4 * GIB {
            low_end = low_end.max(end);
        } else if *gpa >= 4 * GIB {
            high_end = high_end.max(end);
        } else {
            return Err(OracleError::Unsupported(format!(
                "range at {gpa:#x} straddles 4 GiB"
            )));
        }
    }
    let round = |v: u64| v.div_ceil(2 * MIB) * 2 * MIB;
    if high_end > 0 {
        if low_end > PC_LOWMEM_SPLIT {
            return Err(OracleError::Unsupported(format!(
                "range ending at {low_end:#x} is in the pc machine's 3-4 GiB PCI hole"
            )));
        }
        Ok(round(high_end - 4 * GIB + PC_LOWMEM_SPLIT).max(PC_SPLIT_THRESHOLD))
    } else {
        let ram = round(low_end.max(min_ram));
        if ram >= PC_SPLIT_THRESHOLD {
            if low_end > PC_LOWMEM_SPLIT {
                return Err(OracleError::Unsupported(format!(
                    "range ending at {low_end:#x} is in the pc machine's 3-4 GiB PCI hole"
                )));
            }
            return Ok(round(min_ram.max(low_end)).min(PC_LOWMEM_SPLIT));
        }
        Ok(ram)
    }
}

/// Whether `gpa..gpa+len` is guest RAM for a `pc` machine with `ram` bytes.
pub fn is_ram(ram: u64, gpa: u64, len: u64) -> bool {
    let end = gpa.saturating_add(len);
    let (low, high) = if ram >= PC_SPLIT_THRESHOLD {
        (PC_LOWMEM_SPLIT, ram - PC_LOWMEM_SPLIT)
    } else {
        (ram, 0)
    };
    end <= low || (gpa >= 4 * GIB && end <= 4 * GIB + high)
}

/// One running QEMU with a connected gdbstub.
pub struct Session {
    child: Child,
    /// The RSP connection.
    pub gdb: RspClient,
    /// Register numbers.
    pub regs: RegMap,
    /// Guest RAM size in bytes.
    pub ram: u64,
}

impl Session {
    /// Start QEMU stopped at reset with `ram` bytes of RAM and connect.
    pub fn start(cfg: &QemuConfig, ram: u64) -> Result<Self, OracleError> {
        let mut last_err = None;
        for _ in 0..3 {
            match Self::try_start(cfg, ram) {
                Ok(s) => return Ok(s),
                // Not found, or started but unresponsive: retrying would
                // only multiply the wait.
                Err(e @ (OracleError::QemuNotFound(_) | OracleError::Unresponsive(_))) => {
                    return Err(e)
                }
                Err(e) => last_err = Some(e),
            }
        }
        Err(last_err.unwrap_or_else(|| OracleError::Spawn("unknown".into())))
    }

    fn try_start(cfg: &QemuConfig, ram: u64) -> Result<Self, OracleError> {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| OracleError::Spawn(format!("no free port: {e}")))?
            .port();
        let mib = ram.div_ceil(MIB);
        let mut cmd = Command::new(&cfg.binary);
        cmd.args(["-machine", "pc,memory-backend=pgdram"])
            .arg("-object")
            .arg(format!(
                "memory-backend-ram,id=pgdram,size={mib}M,reserve=off"
            ))
            .args(["-accel", "tcg", "-nodefaults", "-cpu", "max"])
            .arg("-m")
            .arg(format!("{mib}M"))
            .args([
                "-display",
                "none",
                "-monitor",
                "none",
                "-serial",
                "none",
                "-S",
                "-no-reboot",
            ])
            .arg("-gdb")
            .arg(format!("tcp:127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        die_with_parent(&mut cmd);
        let mut child = cmd.spawn().map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                OracleError::QemuNotFound(format!(
                    "{} ({e}); install qemu-system-x86 or set {QEMU_ENV}",
                    cfg.binary.display()
                ))
            } else {
                OracleError::Spawn(format!("{}: {e}", cfg.binary.display()))
            }
        })?;
        let deadline = Instant::now() + cfg.start_timeout;
        let stream = loop {
            if let Ok(Some(status)) = child.try_wait() {
                let mut msg = String::new();
                if let Some(mut e) = child.stderr.take() {
                    let _ = e.read_to_string(&mut msg);
                }
                return Err(OracleError::Spawn(format!(
                    "QEMU exited early ({status}): {}",
                    msg.trim()
                )));
            }
            match TcpStream::connect(("127.0.0.1", port)) {
                Ok(s) => break s,
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(OracleError::Unresponsive(format!(
                        "{} started, but its gdbstub on 127.0.0.1:{port} did not accept a \
                         connection within {:?} ({e}); is it a working qemu-system-x86_64?",
                        cfg.binary.display(),
                        cfg.start_timeout
                    )));
                }
            }
        };
        let unresponsive = |e: OracleError| match e {
            OracleError::Timeout(_) => OracleError::Unresponsive(format!(
                "{}'s gdbstub on 127.0.0.1:{port} accepted but did not answer within {:?}; \
                 is it a working qemu-system-x86_64?",
                cfg.binary.display(),
                cfg.start_timeout
            )),
            other => other,
        };
        let gdb = match RspClient::new(stream, cfg.start_timeout) {
            Ok(g) => g,
            Err(e) => {
                let _ = child.kill_and_wait();
                return Err(unresponsive(e));
            }
        };
        // From here on the child is killed by Session's Drop on any error.
        let mut s = Session {
            child,
            gdb,
            regs: RegMap::default(),
            ram,
        };
        s.regs = s.read_target_regs().map_err(unresponsive)?;
        s.gdb.set_timeout(cfg.timeout);
        Ok(s)
    }

    fn read_target_regs(&mut self) -> Result<RegMap, OracleError> {
        let top = self.gdb.qxfer("features", "target.xml")?;
        let top = String::from_utf8_lossy(&top).into_owned();
        let mut map = RegMap::default();
        let mut next = 0usize;
        let gdb = &mut self.gdb;
        let mut fetch = |href: &str| -> Result<String, OracleError> {
            let b = gdb.qxfer("features", href)?;
            Ok(String::from_utf8_lossy(&b).into_owned())
        };
        parse_target_xml(&top, &mut fetch, &mut map, &mut next, 0)?;
        for r in ["rip", "eflags", "cs", "cr0", "cr3", "cr4", "efer"] {
            map.get(r)?;
        }
        Ok(map)
    }

    /// Write register `name`.
    pub fn set_reg(&mut self, name: &str, val: u64) -> Result<(), OracleError> {
        let (num, size) = self.regs.get(name)?;
        self.gdb.write_reg(num, size, val)
    }

    /// Read register `name`.
    pub fn get_reg(&mut self, name: &str) -> Result<u64, OracleError> {
        let (num, _) = self.regs.get(name)?;
        self.gdb.read_reg(num)
    }

    /// Write the image's ranges (call while paging is off).
    pub fn write_image(&mut self, img: &PagingImage) -> Result<(), OracleError> {
        for (gpa, bytes) in &img.data {
            if !is_ram(self.ram, *gpa, bytes.len() as u64) {
                return Err(OracleError::Unsupported(format!(
                    "range at {gpa:#x} is not RAM with -m {}M",
                    self.ram / MIB
                )));
            }
            self.gdb.write_mem(*gpa, bytes)?;
        }
        Ok(())
    }

    /// Turn paging on the way the image says: EFER, CR4, CR3, then CR0.
    pub fn enable_paging(&mut self, img: &PagingImage) -> Result<(), OracleError> {
        let d = &img.desc;
        // LMA is the CPU's to set (when CR0.PG turns on with EFER.LME).
        self.set_reg("efer", d.efer & !crate::image::EFER_LMA)?;
        self.set_reg("cr4", d.cr4)?;
        self.set_reg("cr3", d.cr3)?;
        self.set_reg("cr0", d.cr0)?;
        let cr0 = self.get_reg("cr0")?;
        if cr0 & CR0_PG == 0 {
            return Err(OracleError::Unsupported(format!(
                "QEMU refused CR0={:#x} (reads back {cr0:#x})",
                d.cr0
            )));
        }
        let cr4 = self.get_reg("cr4")?;
        if cr4 != d.cr4 {
            return Err(OracleError::Unsupported(format!(
                "QEMU refused CR4={:#x} (reads back {cr4:#x}); does -cpu max lack a feature?",
                d.cr4
            )));
        }
        Ok(())
    }

    /// `gva2gpa` through the monitor.
    pub fn gva2gpa(&mut self, va: u64) -> Result<Option<u64>, OracleError> {
        let out = self.gdb.monitor(&format!("gva2gpa {va:#x}"))?;
        let t = out.trim();
        // QEMU prints "%#" PRIx64, which gives "0" (no 0x) for zero.
        if let Some(v) = t.strip_prefix("gpa: ") {
            let hex = v.trim();
            let hex = hex.strip_prefix("0x").unwrap_or(hex);
            u64::from_str_radix(hex, 16)
                .map(Some)
                .map_err(|e| OracleError::Protocol(format!("gva2gpa reply {t:?}: {e}")))
        } else if t.starts_with("Unmapped") {
            Ok(None)
        } else {
            Err(OracleError::Protocol(format!("gva2gpa reply {t:?}")))
        }
    }

    /// Kill QEMU now.
    pub fn kill(&mut self) {
        let _ = self.child.kill_and_wait();
    }
}

/// Makes the child die with this process: a QEMU left running after
/// `pgdcache` is killed (re-parented to init) would hold its RAM and port
/// forever. On Linux the child asks for SIGKILL when its parent dies
/// (`PR_SET_PDEATHSIG`), and kills itself at once if the parent is already
/// gone; the sessions' `Drop` kills it on every ordinary exit path.
pub fn die_with_parent(cmd: &mut Command) {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::process::CommandExt;
        // SAFETY: getpid has no preconditions.
        let parent = unsafe { libc::getpid() };
        let in_child = move || {
            // SAFETY: prctl(PR_SET_PDEATHSIG) takes a signal number and
            // touches no memory of ours.
            if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) } != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent may have died before prctl: then no signal would
            // ever come.
            // SAFETY: getppid has no preconditions.
            if unsafe { libc::getppid() } != parent {
                // SAFETY: raise has no preconditions.
                unsafe { libc::raise(libc::SIGKILL) };
            }
            Ok(())
        };
        // SAFETY: the closure runs in the child between fork and exec and
        // calls only async-signal-safe functions (prctl, getppid, raise),
        // allocating nothing and taking no lock.
        unsafe {
            cmd.pre_exec(in_child);
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = cmd;
}

trait KillChild {
    fn kill_and_wait(&mut self) -> std::io::Result<()>;
}

impl KillChild for Child {
    fn kill_and_wait(&mut self) -> std::io::Result<()> {
        if let Ok(Some(_)) = self.try_wait() {
            return Ok(());
        }
        self.kill()?;
        self.wait().map(|_| ())
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The QEMU-TCG oracle.
pub struct QemuOracle {
    cfg: QemuConfig,
    session: Option<Session>,
    image: Option<PagingImage>,
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

    fn session(&mut self) -> Result<&mut Session, OracleError> {
        self.session.as_mut().ok_or(OracleError::NotLoaded)
    }

    fn mode(&self) -> Result<PagingMode, OracleError> {
        self.image
            .as_ref()
            .map(|i| i.desc.mode)
            .ok_or(OracleError::NotLoaded)
    }

    /// Translate many addresses (one `gva2gpa` each, ~0.1 ms apiece).
    pub fn translate_all(&mut self, vas: &[u64]) -> Result<Vec<Option<u64>>, OracleError> {
        vas.iter().map(|&va| self.translate(va)).collect()
    }

    /// The same memory and registers as the loaded image but another CR3
    /// (another root of a multi-root image): write CR3 in the running guest
    /// instead of starting a new QEMU. The debug walk reads every table,
    /// PAE's PDPTEs included, from guest memory at each request, and CR3's
    /// write flushes QEMU's TLB. False (nothing done, or the session
    /// dropped) if the fast path does not apply or fails.
    fn switch_cr3(&mut self, img: &PagingImage) -> bool {
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

    /// Raw `info tlb` text (for debugging).
    pub fn info_tlb_raw(&mut self) -> Result<String, OracleError> {
        self.session()?.gdb.monitor("info tlb")
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
        self.session = None;
        self.image = None;
        let ram = ram_size_for(img, self.cfg.min_ram)?;
        let mut s = Session::start(&self.cfg, ram)?;
        s.write_image(img)?;
        s.enable_paging(img)?;
        self.session = Some(s);
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

    fn mappings(&mut self) -> Result<Vec<Mapping>, OracleError> {
        let mode = self.mode()?;
        let s = self.session()?;
        let text = s.gdb.monitor("info tlb")?;
        let raw = parse_info_tlb(&text)?;
        let mut out = Vec::with_capacity(raw.len());
        for (i, l) in raw.iter().enumerate() {
            // QEMU's PAE dump leaves the NX bit in the address: keep bits 51:12.
            let l_pa = l.pa & 0x000f_ffff_ffff_f000;
            let (size, pa) = if !l.flags.large {
                (4096, l_pa)
            } else {
                match mode {
                    PagingMode::TwoLevel => {
                        // info tlb drops PSE-36 bits: ask the exact walker.
                        let pa = s.gva2gpa(l.va)?.ok_or_else(|| {
                            OracleError::Protocol(format!(
                                "info tlb lists {:#x} but gva2gpa says unmapped",
                                l.va
                            ))
                        })?;
                        (4 * MIB, pa)
                    }
                    PagingMode::Pae => (2 * MIB, l_pa),
                    PagingMode::FourLevel | PagingMode::FiveLevel => {
                        let next = raw.get(i + 1).map(|n| n.va);
                        let gap = next.map(|n| n.wrapping_sub(l.va));
                        let may_be_1g = l.va % GIB == 0 && gap.is_none_or(|g| g >= GIB);
                        if may_be_1g && s.gva2gpa(l.va + 2 * MIB)? == Some(l_pa + 2 * MIB) {
                            (GIB, l_pa)
                        } else {
                            (2 * MIB, l_pa)
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

    fn probe(&mut self, accesses: &[Access]) -> Result<Vec<ProbeOutcome>, OracleError> {
        let img = self.image.as_ref().ok_or(OracleError::NotLoaded)?;
        crate::probe::run_qemu(&self.cfg, img, accesses)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xml_numbering_skips_comments() {
        let top = r#"<target><xi:include href="a.xml"/></target>"#;
        let a = r#"<feature><reg name="rax" bitsize="64"/><!-- <reg name="x" bitsize="32"/> -->
                   <reg name="rbx" bitsize="64"/><reg name="cr0" bitsize="64" regnum="27"/>
                   <reg name="cr2" bitsize="64"/></feature>"#;
        let mut map = RegMap::default();
        let mut n = 0;
        let mut fetch = |h: &str| {
            assert_eq!(h, "a.xml");
            Ok(a.to_string())
        };
        parse_target_xml(top, &mut fetch, &mut map, &mut n, 0).unwrap();
        assert_eq!(map.get("rax").unwrap(), (0, 8));
        assert_eq!(map.get("rbx").unwrap(), (1, 8));
        assert_eq!(map.get("cr2").unwrap(), (28, 8));
        assert!(map.get("x").is_err());
    }

    #[test]
    fn ram_sizes() {
        let mut img = PagingImage::new(PagingMode::Pae, 0x1000);
        img.add_frame(0x1000);
        assert_eq!(ram_size_for(&img, 64 * MIB).unwrap(), 64 * MIB);
        img.add_frame(0x1_2345_6000);
        let ram = ram_size_for(&img, 64 * MIB).unwrap();
        assert!(is_ram(ram, 0x1_2345_6000, 4096));
        assert!(is_ram(ram, 0x1000, 4096));
        assert!(!is_ram(ram, 0xd000_0000, 4096));
        img.add_frame(0xd000_0000);
        assert!(ram_size_for(&img, 64 * MIB).is_err());
    }

    #[test]
    fn canonical_forms() {
        assert_eq!(canonical(0x0000_8000_0000_0000, 48), 0xffff_8000_0000_0000);
        assert_eq!(canonical(0x7fff_ffff_ffff, 48), 0x7fff_ffff_ffff);
    }
}
