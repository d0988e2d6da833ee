//! Guest RAM of a QEMU session: how big it must be for an image, which
//! physical addresses are RAM on the `pc` machine, and the RAM itself as a
//! memory file this process shares with QEMU.
//!
//! Sizing: `-m` is chosen to cover every image range. The `pc` machine puts
//! RAM below 4 GiB up to 3.5 GiB, or, when RAM is 3.5 GiB or more, 3 GiB
//! below 4 GiB and the rest from 4 GiB up; ranges in the 3–4 GiB PCI hole
//! are then rejected as [`OracleError::Unsupported`].
//!
//! Sharing: QEMU's RAM backend is a `memfd` created here (`memory-backend-file`
//! on `/proc/self/fd/N`, `share=on`, `reserve=off`), mapped into this process
//! too. Loading an image is then a `memcpy` into the mapping, and wiping the
//! previous one a single `fallocate(PUNCH_HOLE)` over the whole file — no
//! gdbstub packets, and RAM reads as zero again exactly as in a fresh QEMU.
//! The file is sparse, so a 60 GiB guest for a PAE table at 59 GiB costs
//! only the pages touched. Only *data* goes this way: code the guest will
//! execute is written through the gdbstub, whose writes invalidate QEMU's
//! translated blocks (a write behind TCG's back would not).

use crate::image::PagingImage;
use crate::OracleError;

pub(crate) const GIB: u64 = 1 << 30;
pub(crate) const MIB: u64 = 1 << 20;
/// RAM at or above this size makes the `pc` machine split at 3 GiB.
const PC_SPLIT_THRESHOLD: u64 = 0xe000_0000;
/// Below-4G RAM when the split happens.
const PC_LOWMEM_SPLIT: u64 = 0xc000_0000;

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
/// RAM below 4 GiB for a `pc` machine with `ram` bytes (the rest is at
/// 4 GiB and up).
fn below_4g(ram: u64) -> u64 {
    if ram >= PC_SPLIT_THRESHOLD {
        PC_LOWMEM_SPLIT
    } else {
        ram
    }
}

/// Offset in the RAM backend of guest-physical `gpa`, if `gpa..gpa+len` is
/// RAM.
pub fn ram_offset(ram: u64, gpa: u64, len: u64) -> Option<u64> {
    if !is_ram(ram, gpa, len) {
        return None;
    }
    Some(if gpa >= 4 * GIB {
        below_4g(ram) + (gpa - 4 * GIB)
    } else {
        gpa
    })
}

/// Guest RAM shared with QEMU: a `memfd` mapped here and given to QEMU as
/// its RAM backend.
#[cfg(target_os = "linux")]
pub struct SharedRam {
    fd: std::os::fd::OwnedFd,
    base: std::ptr::NonNull<u8>,
    len: usize,
    ram: u64,
}

#[cfg(target_os = "linux")]
impl SharedRam {
    /// A zero-filled sparse file of `ram` bytes, mapped shared.
    pub fn new(ram: u64) -> Result<Self, OracleError> {
        use std::os::fd::{FromRawFd, OwnedFd};
        let len = usize::try_from(ram)
            .map_err(|_| OracleError::Unsupported(format!("{ram:#x} bytes of RAM")))?;
        // SAFETY: the name is a NUL-terminated static string; memfd_create
        // reads nothing else and returns a new descriptor or -1.
        let raw = unsafe { libc::memfd_create(c"pgdcache-guest-ram".as_ptr(), libc::MFD_CLOEXEC) };
        if raw < 0 {
            return Err(OracleError::Spawn(format!(
                "memfd_create: {}",
                std::io::Error::last_os_error()
            )));
        }
        // SAFETY: `raw` is a fresh descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let size = libc::off_t::try_from(ram)
            .map_err(|_| OracleError::Unsupported(format!("{ram:#x} bytes of RAM")))?;
        // SAFETY: ftruncate on a descriptor we own; no memory is touched.
        if unsafe { libc::ftruncate(raw, size) } != 0 {
            return Err(OracleError::Io(std::io::Error::last_os_error()));
        }
        // SAFETY: a new shared mapping of the whole file at an address the
        // kernel picks; it aliases no Rust object, and MAP_NORESERVE keeps
        // a large sparse guest cheap.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_NORESERVE,
                raw,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(OracleError::Io(std::io::Error::last_os_error()));
        }
        let base = std::ptr::NonNull::new(p.cast::<u8>())
            .ok_or_else(|| OracleError::Spawn("mmap returned NULL".into()))?;
        Ok(SharedRam { fd, base, len, ram })
    }

    /// The path QEMU opens to reach this file (valid in a child that
    /// inherits the descriptor: see [`SharedRam::inherit`]).
    pub fn qemu_path(&self) -> String {
        use std::os::fd::AsRawFd;
        format!("/proc/self/fd/{}", self.fd.as_raw_fd())
    }

    /// Lets a child spawned by `cmd` inherit the descriptor (it is
    /// close-on-exec here, so no other child gets it).
    pub fn inherit(&self, cmd: &mut std::process::Command) {
        use std::os::fd::AsRawFd;
        use std::os::unix::process::CommandExt;
        let raw = self.fd.as_raw_fd();
        let in_child = move || {
            // SAFETY: fcntl(F_SETFD) on an inherited descriptor is
            // async-signal-safe and touches no memory of ours.
            if unsafe { libc::fcntl(raw, libc::F_SETFD, 0) } != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        };
        // SAFETY: the closure runs between fork and exec and calls only
        // fcntl, which is async-signal-safe; it allocates nothing.
        unsafe {
            cmd.pre_exec(in_child);
        }
    }

    /// Every byte back to zero (the pages are freed: `PUNCH_HOLE`).
    pub fn clear(&mut self) -> Result<(), OracleError> {
        use std::os::fd::AsRawFd;
        let size = libc::off_t::try_from(self.len)
            .map_err(|_| OracleError::Unsupported("RAM size".into()))?;
        // SAFETY: fallocate on a descriptor we own; QEMU's and our mappings
        // stay valid and read zero-filled pages afterwards.
        let r = unsafe {
            libc::fallocate(
                self.fd.as_raw_fd(),
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                0,
                size,
            )
        };
        if r != 0 {
            return Err(OracleError::Io(std::io::Error::last_os_error()));
        }
        Ok(())
    }

    /// Writes `bytes` at guest-physical `gpa` (which must be RAM).
    pub fn write(&mut self, gpa: u64, bytes: &[u8]) -> Result<(), OracleError> {
        let off = ram_offset(self.ram, gpa, bytes.len() as u64)
            .and_then(|o| usize::try_from(o).ok())
            .filter(|o| o.saturating_add(bytes.len()) <= self.len)
            .ok_or_else(|| {
                OracleError::Unsupported(format!(
                    "range at {gpa:#x} is not RAM with -m {}M",
                    self.ram / MIB
                ))
            })?;
        // SAFETY: off..off+len lies inside the mapping (checked above); the
        // mapping is shared with QEMU, which may read it concurrently, but
        // its vCPU is stopped while the host loads an image.
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.base.as_ptr().add(off), bytes.len());
        }
        Ok(())
    }
}

#[cfg(target_os = "linux")]
impl Drop for SharedRam {
    fn drop(&mut self) {
        // SAFETY: base/len are exactly the mapping made in `new`, unmapped
        // once; nothing borrows it past this point.
        unsafe {
            libc::munmap(self.base.as_ptr().cast(), self.len);
        }
    }
}

// SAFETY: the mapping is owned by this value alone (no aliasing Rust
// references are handed out), so moving it to another thread is sound.
#[cfg(target_os = "linux")]
unsafe impl Send for SharedRam {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ram_sizes() {
        let mut img = PagingImage::new(crate::PagingMode::Pae, 0x1000);
        img.add_frame(0x1000);
        assert_eq!(ram_size_for(&img, 64 * MIB).unwrap(), 64 * MIB);
        img.add_frame(0x1_2345_6000);
        let ram = ram_size_for(&img, 64 * MIB).unwrap();
        assert!(is_ram(ram, 0x1_2345_6000, 4096));
        assert!(is_ram(ram, 0x1000, 4096));
        assert!(!is_ram(ram, 0xd000_0000, 4096));
        assert_eq!(ram_offset(ram, 0x1_0000_0000, 8), Some(0xc000_0000));
        assert_eq!(ram_offset(ram, 0xd000_0000, 8), None);
        img.add_frame(0xd000_0000);
        assert!(ram_size_for(&img, 64 * MIB).is_err());
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn shared_ram_clears_to_zero() {
        let mut r = SharedRam::new(8 * MIB).unwrap();
        r.write(0x1000, &[0xab; 16]).unwrap();
        let at = |r: &SharedRam, o: usize| {
            assert!(o < r.len);
            // SAFETY: o is inside the mapping (asserted).
            unsafe { *r.base.as_ptr().add(o) }
        };
        assert_eq!(at(&r, 0x1008), 0xab);
        assert!(r.write(8 * MIB - 8, &[1; 16]).is_err());
        r.clear().unwrap();
        assert_eq!(at(&r, 0x1008), 0);
    }
}
