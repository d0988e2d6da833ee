//! What the boot loader tells the kernel: the command line and the memory
//! map, from a Multiboot 1 information structure (32-bit) or a PVH
//! `hvm_start_info` (64-bit).
//!
//! Both are read through the boot tables' direct map (`PAGE_OFFSET` + the
//! physical address), before `swapper_pg_dir` exists.

use alloc::string::String;

/// The first 1 MiB (real-mode area, BIOS) is never RAM the kernel gives out.
pub const LOW_MEMORY: u64 = 1 << 20;

/// Multiboot 1's magic in EAX.
#[cfg(target_arch = "x86")]
pub const MULTIBOOT_MAGIC: u32 = 0x2BAD_B002;
/// `hvm_start_info.magic`.
#[cfg(target_arch = "x86_64")]
pub const PVH_MAGIC: u32 = 0x336e_c578;

/// The kernel's view of the boot information.
#[derive(Debug)]
pub struct BootInfo {
    /// Which protocol booted us.
    pub loader: &'static str,
    /// The kernel command line (`-append`).
    pub cmdline: String,
    /// End of the usable RAM region that contains physical 1 MiB: the
    /// kernel's RAM is `[0, ram_end)` with the first 1 MiB reserved.
    pub ram_end: u64,
    /// Usable regions seen (for the log).
    pub regions: usize,
}

/// Why the boot information is unusable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootInfoError {
    /// EAX / `magic` was not what the protocol promises.
    BadMagic(u32),
    /// No memory map was passed.
    NoMemoryMap,
    /// No usable region contains physical 1 MiB.
    NoRam,
}

impl core::fmt::Display for BootInfoError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            BootInfoError::BadMagic(m) => write!(f, "bad boot magic {m:#x}"),
            BootInfoError::NoMemoryMap => f.write_str("the boot loader passed no memory map"),
            BootInfoError::NoRam => f.write_str("no usable RAM region contains physical 1 MiB"),
        }
    }
}

/// Physical memory as the boot tables map it.
struct BootPhys {
    offset: u64,
}

impl BootPhys {
    fn u32(&self, pa: u64) -> u32 {
        // SAFETY: the boot tables map the first 1 GiB at `offset`; the boot
        // loader's structures live in low memory; unaligned reads are fine.
        unsafe { core::ptr::read_unaligned((self.offset + pa) as usize as *const u32) }
    }
    fn u64(&self, pa: u64) -> u64 {
        // SAFETY: as `u32`.
        unsafe { core::ptr::read_unaligned((self.offset + pa) as usize as *const u64) }
    }
    fn cstr(&self, pa: u64) -> String {
        let mut s = String::new();
        if pa == 0 {
            return s;
        }
        for i in 0..4096 {
            // SAFETY: as `u32`; the string ends at its NUL (capped at 4 KiB).
            let b = unsafe { core::ptr::read((self.offset + pa + i) as usize as *const u8) };
            if b == 0 {
                break;
            }
            s.push(char::from(b));
        }
        s
    }
}

struct RamScan {
    ram_end: Option<u64>,
    regions: usize,
}

impl RamScan {
    fn add(&mut self, base: u64, len: u64, kind: u32) {
        if kind != 1 {
            return;
        }
        self.regions += 1;
        let end = base.saturating_add(len);
        if base <= LOW_MEMORY && end > LOW_MEMORY {
            self.ram_end = Some(end);
        }
    }
}

/// Multiboot 1: `info` is the physical address from EBX.
#[cfg(target_arch = "x86")]
pub fn multiboot(magic: u32, info: u64, offset: u64) -> Result<BootInfo, BootInfoError> {
    if magic != MULTIBOOT_MAGIC {
        return Err(BootInfoError::BadMagic(magic));
    }
    let m = BootPhys { offset };
    let flags = m.u32(info);
    let cmdline = if flags & (1 << 2) != 0 {
        // QEMU's Multiboot loader puts the image path first, as GRUB does.
        let all = m.cstr(m.u32(info + 16).into());
        let rest = all.trim_start().split_once(' ').map_or("", |(_, r)| r);
        String::from(rest.trim())
    } else {
        String::new()
    };
    if flags & (1 << 6) == 0 {
        return Err(BootInfoError::NoMemoryMap);
    }
    let len = u64::from(m.u32(info + 44));
    let addr = u64::from(m.u32(info + 48));
    let mut scan = RamScan {
        ram_end: None,
        regions: 0,
    };
    let mut p = addr;
    while p + 24 <= addr + len {
        let size = u64::from(m.u32(p));
        scan.add(m.u64(p + 4), m.u64(p + 12), m.u32(p + 20));
        p += size + 4;
    }
    Ok(BootInfo {
        loader: "multiboot",
        cmdline,
        ram_end: scan.ram_end.ok_or(BootInfoError::NoRam)?,
        regions: scan.regions,
    })
}

/// PVH: `start` is the physical address of `hvm_start_info` from EBX.
#[cfg(target_arch = "x86_64")]
pub fn pvh(start: u64, offset: u64) -> Result<BootInfo, BootInfoError> {
    let m = BootPhys { offset };
    let magic = m.u32(start);
    if magic != PVH_MAGIC {
        return Err(BootInfoError::BadMagic(magic));
    }
    let version = m.u32(start + 4);
    let cmdline = m.cstr(m.u64(start + 24));
    let (map, entries) = (m.u64(start + 40), m.u32(start + 48));
    if version < 1 || map == 0 || entries == 0 {
        return Err(BootInfoError::NoMemoryMap);
    }
    let mut scan = RamScan {
        ram_end: None,
        regions: 0,
    };
    for i in 0..u64::from(entries) {
        let e = map + i * 24;
        scan.add(m.u64(e), m.u64(e + 8), m.u32(e + 16));
    }
    Ok(BootInfo {
        loader: "pvh",
        cmdline,
        ram_end: scan.ram_end.ok_or(BootInfoError::NoRam)?,
        regions: scan.regions,
    })
}
