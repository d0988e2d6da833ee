//! A minimal client for the GDB remote serial protocol (RSP), as spoken by
//! QEMU's gdbstub.
//!
//! It models exactly what the oracle needs and nothing more: packet framing
//! with checksums and acks (switched off with `QStartNoAckMode` when the stub
//! agrees), binary-escape decoding for `qXfer` replies, `qRcmd` monitor
//! commands with their `O<hex>` console output, and stop replies after `c`.
//! Every read has a deadline, so a hung stub becomes [`OracleError::Timeout`]
//! rather than a hung caller. The socket uses `TCP_NODELAY`: with Nagle plus
//! delayed ACKs each round trip costs ~40 ms instead of ~0.1 ms.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::OracleError;

/// Largest payload (in bytes, before hex encoding) we put in one `M` packet.
/// QEMU advertises `PacketSize=1000` (hex, 4096 bytes) and silently drops
/// larger packets, so 1 KiB of data (2 KiB of hex) is safely below.
pub const MAX_MEM_CHUNK: usize = 1024;

/// A connected RSP session.
pub struct RspClient {
    stream: TcpStream,
    buf: Vec<u8>,
    no_ack: bool,
    /// In ack mode: packets received but not yet acknowledged (a pipelined
    /// batch acknowledges them all in one write at its end).
    acks_owed: usize,
    /// Defer acks into `acks_owed` instead of sending each at once.
    defer_acks: bool,
    timeout: Duration,
}

fn hex_encode(data: &[u8]) -> String {
    let mut s = String::with_capacity(data.len() * 2);
    for b in data {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Decode a hex string into bytes.
pub fn hex_decode(s: &[u8]) -> Result<Vec<u8>, OracleError> {
    if !s.len().is_multiple_of(2) {
        return Err(OracleError::Protocol(format!(
            "odd-length hex {:?}",
            String::from_utf8_lossy(s)
        )));
    }
    s.chunks(2)
        .map(|p| match (hex_val(p[0]), hex_val(p[1])) {
            (Some(h), Some(l)) => Ok(h << 4 | l),
            _ => Err(OracleError::Protocol(format!(
                "bad hex {:?}",
                String::from_utf8_lossy(s)
            ))),
        })
        .collect()
}

impl RspClient {
    /// Wrap a connected stream; `timeout` bounds every single exchange.
    pub fn new(stream: TcpStream, timeout: Duration) -> Result<Self, OracleError> {
        stream.set_nodelay(true).map_err(OracleError::Io)?;
        let mut c = RspClient {
            stream,
            buf: Vec::with_capacity(8192),
            no_ack: false,
            acks_owed: 0,
            defer_acks: false,
            timeout,
        };
        // Ask for no-ack mode: halves the number of tiny TCP segments.
        let r = c.command("QStartNoAckMode")?;
        if r == b"OK" {
            c.no_ack = true;
        }
        Ok(c)
    }

    /// The per-exchange timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Changes the per-exchange timeout (e.g. a short one for the
    /// handshake, a longer one for the session).
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    fn fill(&mut self, deadline: Instant) -> Result<(), OracleError> {
        let now = Instant::now();
        if now >= deadline {
            return Err(OracleError::Timeout("gdbstub reply".into()));
        }
        let remaining = deadline - now;
        self.stream
            .set_read_timeout(Some(remaining.max(Duration::from_millis(1))))
            .map_err(OracleError::Io)?;
        let mut tmp = [0u8; 8192];
        match self.stream.read(&mut tmp) {
            Ok(0) => Err(OracleError::Protocol(
                "gdbstub closed the connection (QEMU exited?)".into(),
            )),
            Ok(n) => {
                self.buf.extend_from_slice(&tmp[..n]);
                Ok(())
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                Err(OracleError::Timeout("gdbstub reply".into()))
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => Ok(()),
            Err(e) => Err(OracleError::Io(e)),
        }
    }

    fn send_raw(&mut self, data: &[u8]) -> Result<(), OracleError> {
        self.stream.write_all(data).map_err(OracleError::Io)
    }

    /// Send one packet (and wait for its `+` while in ack mode).
    pub fn send(&mut self, payload: &str) -> Result<(), OracleError> {
        let sum = payload.bytes().fold(0u8, |a, b| a.wrapping_add(b));
        let pkt = format!("${payload}#{sum:02x}");
        if pkt.len() > 4096 {
            return Err(OracleError::Protocol(format!(
                "packet of {} bytes exceeds the stub's 4096-byte limit",
                pkt.len()
            )));
        }
        let deadline = Instant::now() + self.timeout;
        for _attempt in 0..3 {
            self.send_raw(pkt.as_bytes())?;
            if self.no_ack {
                return Ok(());
            }
            loop {
                if let Some(pos) = self.buf.iter().position(|&c| c == b'+' || c == b'-') {
                    let c = self.buf[pos];
                    self.buf.drain(..=pos);
                    if c == b'+' {
                        return Ok(());
                    }
                    break; // '-': retransmit
                }
                self.fill(deadline)?;
            }
        }
        Err(OracleError::Protocol(
            "gdbstub keeps NAKing our packet".into(),
        ))
    }

    /// Receive one packet's payload (binary escapes and run-length encoding
    /// decoded) before `deadline`.
    pub fn recv_until(&mut self, deadline: Instant) -> Result<Vec<u8>, OracleError> {
        loop {
            // Drop anything before '$' (stray acks).
            if let Some(start) = self.buf.iter().position(|&c| c == b'$') {
                if let Some(hash) = self.buf[start..].iter().position(|&c| c == b'#') {
                    let hash = start + hash;
                    if self.buf.len() >= hash + 3 {
                        let body: Vec<u8> = self.buf[start + 1..hash].to_vec();
                        let want = hex_decode(&self.buf[hash + 1..hash + 3])?;
                        self.buf.drain(..hash + 3);
                        let sum = body.iter().fold(0u8, |a, b| a.wrapping_add(*b));
                        if want.first() != Some(&sum) {
                            if self.no_ack {
                                return Err(OracleError::Protocol("bad checksum".into()));
                            }
                            self.send_raw(b"-")?;
                            continue;
                        }
                        if !self.no_ack {
                            if self.defer_acks {
                                self.acks_owed += 1;
                            } else {
                                self.send_raw(b"+")?;
                            }
                        }
                        return Self::unescape(&body);
                    }
                }
            } else {
                self.buf.clear();
            }
            self.fill(deadline)?;
        }
    }

    fn unescape(body: &[u8]) -> Result<Vec<u8>, OracleError> {
        let mut out = Vec::with_capacity(body.len());
        let mut i = 0;
        while i < body.len() {
            match body[i] {
                b'}' => {
                    let c = *body
                        .get(i + 1)
                        .ok_or_else(|| OracleError::Protocol("dangling escape".into()))?;
                    out.push(c ^ 0x20);
                    i += 2;
                }
                b'*' => {
                    let last = *out
                        .last()
                        .ok_or_else(|| OracleError::Protocol("RLE without a byte".into()))?;
                    let n = *body
                        .get(i + 1)
                        .ok_or_else(|| OracleError::Protocol("RLE without count".into()))?;
                    let reps = usize::from(n.saturating_sub(29));
                    out.extend(std::iter::repeat_n(last, reps));
                    i += 2;
                }
                c => {
                    out.push(c);
                    i += 1;
                }
            }
        }
        Ok(out)
    }

    /// Send a packet and return the reply payload.
    pub fn command(&mut self, payload: &str) -> Result<Vec<u8>, OracleError> {
        self.send(payload)?;
        let deadline = Instant::now() + self.timeout;
        self.recv_until(deadline)
    }

    /// Send a packet that must be answered with `OK`.
    pub fn command_ok(&mut self, payload: &str) -> Result<(), OracleError> {
        let r = self.command(payload)?;
        if r == b"OK" {
            Ok(())
        } else {
            let head: String = payload.chars().take(40).collect();
            Err(OracleError::Protocol(format!(
                "{head}: stub replied {:?}",
                String::from_utf8_lossy(&r)
            )))
        }
    }

    /// Run a monitor command (`qRcmd`) and return its console output.
    pub fn monitor(&mut self, cmd: &str) -> Result<String, OracleError> {
        self.send(&format!("qRcmd,{}", hex_encode(cmd.as_bytes())))?;
        let deadline = Instant::now() + self.timeout;
        self.monitor_reply(cmd, deadline)
    }

    /// Sends `payloads` as packets in one write, without waiting for acks.
    /// In ack mode this relies on a system-mode QEMU stub, which acks each
    /// packet it receives and never waits for ours; the caller reads the
    /// replies with acks deferred ([`RspClient::finish_pipeline`]).
    fn send_pipelined(&mut self, payloads: &[String]) -> Result<(), OracleError> {
        let mut wire = Vec::new();
        for p in payloads {
            let sum = p.bytes().fold(0u8, |a, b| a.wrapping_add(b));
            wire.extend_from_slice(format!("${p}#{sum:02x}").as_bytes());
        }
        self.send_raw(&wire)?;
        self.defer_acks = true;
        Ok(())
    }

    /// Ends a pipelined exchange: our acks for every reply, in one write.
    fn finish_pipeline(&mut self) -> Result<(), OracleError> {
        self.defer_acks = false;
        let owed = std::mem::take(&mut self.acks_owed);
        if owed > 0 {
            self.send_raw(&vec![b'+'; owed])?;
        }
        Ok(())
    }

    /// Several commands with one reply packet each, pipelined: every
    /// request goes out before the first reply is read (the stub handles
    /// packets in order, so the replies come back in order). Keep batches
    /// small enough for the socket buffers (a few hundred short packets).
    pub fn command_many(&mut self, payloads: &[String]) -> Result<Vec<Vec<u8>>, OracleError> {
        self.send_pipelined(payloads)?;
        let deadline = Instant::now() + self.timeout;
        let r: Result<Vec<Vec<u8>>, OracleError> =
            payloads.iter().map(|_| self.recv_until(deadline)).collect();
        self.finish_pipeline()?;
        r
    }

    /// Several monitor commands, pipelined like [`RspClient::command_many`].
    pub fn monitor_many(&mut self, cmds: &[String]) -> Result<Vec<String>, OracleError> {
        let payloads: Vec<String> = cmds
            .iter()
            .map(|c| format!("qRcmd,{}", hex_encode(c.as_bytes())))
            .collect();
        self.send_pipelined(&payloads)?;
        let deadline = Instant::now() + self.timeout;
        let r: Result<Vec<String>, OracleError> = cmds
            .iter()
            .map(|c| self.monitor_reply(c, deadline))
            .collect();
        self.finish_pipeline()?;
        r
    }

    /// Collects one `qRcmd`'s console output (`O` packets) up to its `OK`.
    fn monitor_reply(&mut self, cmd: &str, deadline: Instant) -> Result<String, OracleError> {
        let mut out = Vec::new();
        loop {
            let r = self.recv_until(deadline)?;
            if r == b"OK" {
                break;
            }
            if let Some(hex) = r.strip_prefix(b"O") {
                if !hex.is_empty() {
                    out.extend(hex_decode(hex)?);
                    continue;
                }
            }
            if r.first() == Some(&b'E') || r.is_empty() {
                return Err(OracleError::Protocol(format!(
                    "monitor {cmd:?}: stub replied {:?}",
                    String::from_utf8_lossy(&r)
                )));
            }
            out.extend(hex_decode(&r)?);
            break;
        }
        String::from_utf8(out).map_err(|e| OracleError::Protocol(e.to_string()))
    }

    /// Read a `qXfer:<object>:read:<annex>` object completely.
    pub fn qxfer(&mut self, object: &str, annex: &str) -> Result<Vec<u8>, OracleError> {
        let mut out = Vec::new();
        loop {
            let r = self.command(&format!(
                "qXfer:{object}:read:{annex}:{:x},{:x}",
                out.len(),
                0xf00
            ))?;
            match r.split_first() {
                Some((b'l', rest)) => {
                    out.extend_from_slice(rest);
                    return Ok(out);
                }
                Some((b'm', rest)) => out.extend_from_slice(rest),
                _ => {
                    return Err(OracleError::Protocol(format!(
                        "qXfer {object} {annex}: {:?}",
                        String::from_utf8_lossy(&r)
                    )))
                }
            }
            if out.len() > 1 << 20 {
                return Err(OracleError::Protocol("qXfer object too large".into()));
            }
        }
    }

    /// Write guest memory (virtual addresses, as the stub sees them) in
    /// chunks of at most [`MAX_MEM_CHUNK`] bytes.
    pub fn write_mem(&mut self, addr: u64, data: &[u8]) -> Result<(), OracleError> {
        for (i, chunk) in data.chunks(MAX_MEM_CHUNK).enumerate() {
            let a = addr + (i * MAX_MEM_CHUNK) as u64;
            self.command_ok(&format!("M{a:x},{:x}:{}", chunk.len(), hex_encode(chunk)))?;
        }
        Ok(())
    }

    /// Read guest memory in chunks of at most [`MAX_MEM_CHUNK`] bytes.
    pub fn read_mem(&mut self, addr: u64, len: usize) -> Result<Vec<u8>, OracleError> {
        let mut out = Vec::with_capacity(len);
        while out.len() < len {
            let n = (len - out.len()).min(MAX_MEM_CHUNK);
            let a = addr + out.len() as u64;
            let r = self.command(&format!("m{a:x},{n:x}"))?;
            if r.first() == Some(&b'E') || r.len() != 2 * n {
                return Err(OracleError::Protocol(format!(
                    "read of {n} bytes at {a:#x}: {:?}",
                    String::from_utf8_lossy(&r)
                )));
            }
            out.extend(hex_decode(&r)?);
        }
        Ok(out)
    }

    /// Write register `num` with the little-endian bytes of `val` (`size`
    /// bytes wide).
    pub fn write_reg(&mut self, num: usize, size: usize, val: u64) -> Result<(), OracleError> {
        self.command_ok(&write_reg_packet(num, size, val))
    }

    /// Read register `num` (little-endian, at most 8 bytes used).
    pub fn read_reg(&mut self, num: usize) -> Result<u64, OracleError> {
        let r = self.command(&format!("p{num:x}"))?;
        parse_reg_reply(num, &r)
    }

    /// Resume (`c`) and wait up to `wait` for a stop reply. On timeout the
    /// target is interrupted (0x03) so it is stopped again before returning
    /// the error.
    pub fn cont(&mut self, wait: Duration) -> Result<Vec<u8>, OracleError> {
        self.send("c")?;
        let deadline = Instant::now() + wait;
        match self.recv_until(deadline) {
            Ok(r) => Ok(r),
            Err(OracleError::Timeout(_)) => {
                self.send_raw(&[0x03])?;
                let d2 = Instant::now() + self.timeout;
                let _ = self.recv_until(d2);
                Err(OracleError::Timeout(format!(
                    "guest did not reach its breakpoint within {wait:?}"
                )))
            }
            Err(e) => Err(e),
        }
    }
}

/// The `P` packet writing `val` to register `num` of `size` bytes.
pub fn write_reg_packet(num: usize, size: usize, val: u64) -> String {
    let bytes = val.to_le_bytes();
    let n = size.min(8);
    let mut hex = hex_encode(&bytes[..n]);
    for _ in n..size {
        hex.push_str("00");
    }
    format!("P{num:x}={hex}")
}

/// The value in a `p` packet's reply (little-endian hex, at most 8 bytes
/// used).
pub fn parse_reg_reply(num: usize, r: &[u8]) -> Result<u64, OracleError> {
    if r.first() == Some(&b'E') || r.is_empty() {
        return Err(OracleError::Protocol(format!(
            "read register {num}: {:?}",
            String::from_utf8_lossy(r)
        )));
    }
    let bytes = hex_decode(r)?;
    let mut v = [0u8; 8];
    let n = bytes.len().min(8);
    v[..n].copy_from_slice(&bytes[..n]);
    Ok(u64::from_le_bytes(v))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// A stub that answers every packet with `reply` (no-ack mode refused).
    fn fake_stub(reply: &'static str) -> (TcpStream, std::thread::JoinHandle<()>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let h = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut buf = [0u8; 4096];
            loop {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        if buf[..n].contains(&b'#') {
                            let sum = reply.bytes().fold(0u8, |a, b| a.wrapping_add(b));
                            let _ = s.write_all(format!("+${reply}#{sum:02x}").as_bytes());
                        }
                    }
                }
            }
        });
        (TcpStream::connect(addr).unwrap(), h)
    }

    #[test]
    fn silent_stub_times_out() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let h = std::thread::spawn(move || {
            let (s, _) = l.accept().unwrap();
            std::thread::sleep(Duration::from_millis(600));
            drop(s);
        });
        let t0 = Instant::now();
        let r = RspClient::new(
            TcpStream::connect(addr).unwrap(),
            Duration::from_millis(200),
        );
        assert!(matches!(r, Err(OracleError::Timeout(_))), "{:?}", r.err());
        assert!(t0.elapsed() < Duration::from_secs(2));
        h.join().unwrap();
    }

    #[test]
    fn framing_acks_and_escapes() {
        let (s, h) = fake_stub("OK");
        let mut c = RspClient::new(s, Duration::from_secs(2)).unwrap();
        assert!(c.no_ack);
        c.command_ok("Pc=00").unwrap();
        drop(c);
        h.join().unwrap();
        assert_eq!(RspClient::unescape(b"a}\x03b").unwrap(), b"a#b");
        assert_eq!(RspClient::unescape(b"0* ").unwrap(), b"0000");
        assert_eq!(hex_decode(b"0aFf").unwrap(), vec![0x0a, 0xff]);
        assert!(hex_decode(b"0g").is_err());
    }
}
