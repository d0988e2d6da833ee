//! One QEMU process with a connected gdbstub: start-up (bounded, retried),
//! the register map read from the stub's target description, guest RAM
//! (shared with this process where the host allows, see [`super::ram`]),
//! turning paging on like an OS does, the monitor's `gva2gpa` (one at a time
//! or pipelined), and making sure the process dies with us.
//!
//! A session outlives one image: [`Session::reload`] wipes RAM and loads the
//! next image without restarting QEMU, which is what makes thousands of
//! layouts per minute possible.

use std::collections::HashMap;
use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[cfg(target_os = "linux")]
use super::ram::SharedRam;
use super::ram::{is_ram, MIB};
use super::{QemuConfig, QEMU_ENV};
use crate::image::{PagingImage, CR0_PG};
use crate::rsp::{parse_reg_reply, write_reg_packet, RspClient};
use crate::OracleError;

/// CR0 at reset (ET, NW, CD): paging and protection off.
const CR0_RESET: u64 = 0x6000_0010;

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

/// One running QEMU with a connected gdbstub.
pub struct Session {
    child: Child,
    /// The RSP connection.
    pub gdb: RspClient,
    /// Register numbers.
    pub regs: RegMap,
    /// Guest RAM size in bytes.
    pub ram: u64,
    /// Guest RAM as this process sees it (None: written through the
    /// gdbstub only, and the session cannot be reused).
    #[cfg(target_os = "linux")]
    shared: Option<SharedRam>,
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
        #[cfg(target_os = "linux")]
        let shared = SharedRam::new(mib * MIB).ok();
        #[cfg(target_os = "linux")]
        let backend = match &shared {
            Some(r) => {
                r.inherit(&mut cmd);
                format!(
                    "memory-backend-file,id=pgdram,size={mib}M,mem-path={},share=on,reserve=off",
                    r.qemu_path()
                )
            }
            None => format!("memory-backend-ram,id=pgdram,size={mib}M,reserve=off"),
        };
        #[cfg(not(target_os = "linux"))]
        let backend = format!("memory-backend-ram,id=pgdram,size={mib}M,reserve=off");
        cmd.args(["-machine", "pc,memory-backend=pgdram"])
            .arg("-object")
            .arg(backend)
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
            .arg(format!("tcp:127.0.0.1:{port},nodelay=on"))
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
            #[cfg(target_os = "linux")]
            shared,
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

    /// Write several registers in order, in one pipelined exchange.
    pub fn set_regs(&mut self, regs: &[(&str, u64)]) -> Result<(), OracleError> {
        let packets = regs
            .iter()
            .map(|&(name, val)| {
                let (num, size) = self.regs.get(name)?;
                Ok(write_reg_packet(num, size, val))
            })
            .collect::<Result<Vec<String>, OracleError>>()?;
        let replies = self.gdb.command_many(&packets)?;
        for (p, r) in packets.iter().zip(&replies) {
            expect_ok(p, r)?;
        }
        Ok(())
    }

    /// Read register `name`.
    pub fn get_reg(&mut self, name: &str) -> Result<u64, OracleError> {
        let (num, _) = self.regs.get(name)?;
        self.gdb.read_reg(num)
    }

    /// Write the image's ranges (call while paging is off): straight into
    /// shared RAM where there is one, else through the gdbstub.
    pub fn write_image(&mut self, img: &PagingImage) -> Result<(), OracleError> {
        for (gpa, bytes) in &img.data {
            if !is_ram(self.ram, *gpa, bytes.len() as u64) {
                return Err(OracleError::Unsupported(format!(
                    "range at {gpa:#x} is not RAM with -m {}M",
                    self.ram / MIB
                )));
            }
            #[cfg(target_os = "linux")]
            if let Some(r) = self.shared.as_mut() {
                // RAM is zero after start or reset: only non-zero pages
                // need writing (images are mostly empty table space).
                for (i, page) in bytes.chunks(4096).enumerate() {
                    if page.iter().any(|&b| b != 0) {
                        r.write(gpa + (i * 4096) as u64, page)?;
                    }
                }
                continue;
            }
            self.gdb.write_mem(*gpa, bytes)?;
        }
        Ok(())
    }

    /// Whether [`Session::reload`] can put an image needing `ram` bytes of
    /// RAM in this session: the same `-m` (so the same physical addresses
    /// are RAM as in a fresh QEMU) and RAM this process can wipe.
    pub fn reusable_for(&self, ram: u64) -> bool {
        #[cfg(target_os = "linux")]
        return self.ram == ram && self.shared.is_some();
        #[cfg(not(target_os = "linux"))]
        {
            let _ = ram;
            false
        }
    }

    /// Back to the state of a freshly started QEMU, without restarting it:
    /// every byte of RAM zero, paging and protection off (CR0, CR4, EFER,
    /// CR3 at their reset values; leaving long mode clears EFER.LMA).
    /// Fails with `Unsupported` when RAM is not shared with this process.
    pub fn reset(&mut self) -> Result<(), OracleError> {
        #[cfg(target_os = "linux")]
        if let Some(r) = self.shared.as_mut() {
            r.clear()?;
            // Paging off first (that leaves long mode), then the rest; in
            // real mode a segment write loads base = selector << 4.
            return self.set_regs(&[
                ("cr0", CR0_RESET),
                ("cr4", 0),
                ("efer", 0),
                ("cr3", 0),
                ("eflags", 2),
                ("ds", 0),
                ("es", 0),
                ("ss", 0),
            ]);
        }
        Err(OracleError::Unsupported(
            "guest RAM is not shared with this process".into(),
        ))
    }

    /// [`Session::reset`], then load `img` and turn paging on as it says.
    pub fn reload(&mut self, img: &PagingImage) -> Result<(), OracleError> {
        self.reset()?;
        self.write_image(img)?;
        self.enable_paging(img)
    }

    /// Turn paging on the way the image says: EFER, CR4, CR3, then CR0.
    pub fn enable_paging(&mut self, img: &PagingImage) -> Result<(), OracleError> {
        let d = &img.desc;
        // LMA is the CPU's to set (when CR0.PG turns on with EFER.LME).
        let mut packets = Vec::with_capacity(6);
        for (name, val) in [
            ("efer", d.efer & !crate::image::EFER_LMA),
            ("cr4", d.cr4),
            ("cr3", d.cr3),
            ("cr0", d.cr0),
        ] {
            let (num, size) = self.regs.get(name)?;
            packets.push(write_reg_packet(num, size, val));
        }
        let (cr0_num, _) = self.regs.get("cr0")?;
        let (cr4_num, _) = self.regs.get("cr4")?;
        packets.push(format!("p{cr0_num:x}"));
        packets.push(format!("p{cr4_num:x}"));
        // One pipelined exchange: the stub applies them in order.
        let replies = self.gdb.command_many(&packets)?;
        for (p, r) in packets.iter().zip(&replies).take(4) {
            expect_ok(p, r)?;
        }
        let reply = |i: usize| {
            replies
                .get(i)
                .ok_or_else(|| OracleError::Protocol("register replies missing".into()))
        };
        let cr0 = parse_reg_reply(cr0_num, reply(4)?)?;
        let cr4 = parse_reg_reply(cr4_num, reply(5)?)?;
        if cr0 & CR0_PG == 0 {
            return Err(OracleError::Unsupported(format!(
                "QEMU refused CR0={:#x} (reads back {cr0:#x})",
                d.cr0
            )));
        }
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
        parse_gva2gpa(&out)
    }

    /// `gva2gpa` for every address of `vas`, pipelined: the requests go out
    /// in windows of [`GVA2GPA_WINDOW`] packets before the first reply is
    /// read, so a batch costs QEMU's work, not one round trip per address.
    pub fn gva2gpa_many(&mut self, vas: &[u64]) -> Result<Vec<Option<u64>>, OracleError> {
        let mut out = Vec::with_capacity(vas.len());
        for w in vas.chunks(GVA2GPA_WINDOW) {
            let cmds: Vec<String> = w.iter().map(|va| format!("gva2gpa {va:#x}")).collect();
            for reply in self.gdb.monitor_many(&cmds)? {
                out.push(parse_gva2gpa(&reply)?);
            }
        }
        Ok(out)
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

/// `gva2gpa` requests in flight at once (about 40 bytes each way apiece,
/// far below the socket buffers).
pub const GVA2GPA_WINDOW: usize = 128;

/// A reply that must be `OK`.
fn expect_ok(packet: &str, reply: &[u8]) -> Result<(), OracleError> {
    if reply == b"OK" {
        return Ok(());
    }
    let head: String = packet.chars().take(40).collect();
    Err(OracleError::Protocol(format!(
        "{head}: stub replied {:?}",
        String::from_utf8_lossy(reply)
    )))
}

/// The monitor's answer to `gva2gpa`.
fn parse_gva2gpa(out: &str) -> Result<Option<u64>, OracleError> {
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
    fn gva2gpa_replies() {
        assert_eq!(parse_gva2gpa("gpa: 0x1000\r\n").unwrap(), Some(0x1000));
        assert_eq!(parse_gva2gpa("gpa: 0\r\n").unwrap(), Some(0));
        assert_eq!(parse_gva2gpa("Unmapped\r\n").unwrap(), None);
        assert!(parse_gva2gpa("what").is_err());
    }
}
