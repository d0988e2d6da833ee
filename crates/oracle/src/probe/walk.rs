//! The probe planner's view of an image: a host-side walk that ignores
//! permissions (only to keep the window away from probed targets), the set
//! of page-table frames, the search for an unmapped slot for the window, and
//! a frame allocator over free RAM.

use std::collections::HashSet;

use super::{NX, P, PS, RW, US};
use crate::image::{PagingImage, PagingMode, CR4_PSE};
use crate::OracleError;

/// Shape of one paging level: index shift and index width.
#[derive(Clone, Copy, Debug)]
pub(super) struct Level {
    pub(super) shift: u32,
    pub(super) bits: u32,
}

pub(super) fn levels(mode: PagingMode) -> Vec<Level> {
    let l = |shift, bits| Level { shift, bits };
    match mode {
        PagingMode::TwoLevel => vec![l(22, 10), l(12, 10)],
        PagingMode::Pae => vec![l(30, 2), l(21, 9), l(12, 9)],
        PagingMode::FourLevel => vec![l(39, 9), l(30, 9), l(21, 9), l(12, 9)],
        PagingMode::FiveLevel => vec![l(48, 9), l(39, 9), l(30, 9), l(21, 9), l(12, 9)],
    }
}

pub(super) fn top_table(img: &PagingImage) -> u64 {
    match img.desc.mode {
        PagingMode::TwoLevel => img.desc.cr3 & 0xffff_f000,
        PagingMode::Pae => img.desc.cr3 & 0xffff_ffe0,
        _ => img.desc.cr3 & 0x000f_ffff_ffff_f000,
    }
}

pub(super) fn next_table(mode: PagingMode, e: u64) -> u64 {
    match mode {
        PagingMode::TwoLevel => e & 0xffff_f000,
        _ => e & 0x000f_ffff_ffff_f000,
    }
}

/// Whether entry `e` at level `li` is a large-page leaf.
pub(super) fn is_leaf(img: &PagingImage, li: usize, nlev: usize, e: u64) -> bool {
    let mode = img.desc.mode;
    if li == nlev - 1 {
        return true;
    }
    match mode {
        PagingMode::TwoLevel => e & PS != 0 && img.desc.cr4 & CR4_PSE != 0,
        PagingMode::Pae => li == 1 && e & PS != 0,
        _ => li >= nlev - 3 && e & PS != 0,
    }
}

/// Host-side walk that ignores permissions and reserved bits (like QEMU's
/// debug walker); used only to keep the window's frames away from probed
/// targets.
pub(super) fn host_walk(img: &PagingImage, va: u64) -> Option<u64> {
    let mode = img.desc.mode;
    let lv = levels(mode);
    let esz = mode.entry_size();
    if mode.is_long() {
        let bits = if mode == PagingMode::FiveLevel {
            57
        } else {
            48
        };
        if crate::qemu::canonical(va, bits) != va {
            return None;
        }
    }
    let mut table = top_table(img);
    for (li, l) in lv.iter().enumerate() {
        let idx = (va >> l.shift) & ((1 << l.bits) - 1);
        let e = img.read_phys(table + idx * esz, esz as usize)?;
        if e & P == 0 {
            return None;
        }
        if is_leaf(img, li, lv.len(), e) {
            let size = 1u64 << l.shift;
            let base = if mode == PagingMode::TwoLevel && li == 0 {
                (e & 0xffc0_0000) | ((e >> 13) & 0xff) << 32
            } else {
                e & 0x000f_ffff_ffff_f000 & !(size - 1)
            };
            return Some(base | (va & (size - 1)));
        }
        table = next_table(mode, e);
    }
    None
}

/// Every page-table frame reachable from CR3 (as far as the image holds the
/// tables). Stores and fetches aimed at these frames are refused: they would
/// change the tables under test.
pub fn table_frames(img: &PagingImage) -> HashSet<u64> {
    let mode = img.desc.mode;
    let lv = levels(mode);
    let esz = mode.entry_size();
    let mut out = HashSet::new();
    let mut seen = HashSet::new();
    let mut stack = vec![(top_table(img), 0usize)];
    while let Some((table, li)) = stack.pop() {
        if !seen.insert((table, li)) {
            continue;
        }
        out.insert(table & !0xfff);
        if li + 1 == lv.len() {
            continue;
        }
        for i in 0..1u64 << lv[li].bits {
            let Some(e) = img.read_phys(table + i * esz, esz as usize) else {
                break;
            };
            if e & P != 0 && !is_leaf(img, li, lv.len(), e) {
                stack.push((next_table(mode, e), li + 1));
            }
        }
    }
    out
}

/// Where the window goes: the non-present entry to fill.
#[derive(Clone, Copy, Debug)]
pub(super) struct Slot {
    pub(super) table: u64,
    pub(super) index: u64,
    pub(super) level: usize,
    pub(super) va: u64,
}

pub(super) struct Finder<'a> {
    pub(super) img: &'a PagingImage,
    pub(super) lv: Vec<Level>,
    pub(super) avoid: &'a [u64],
    pub(super) need_user: bool,
}

impl Finder<'_> {
    fn region_free(&self, va: u64, size: u64) -> bool {
        !self
            .avoid
            .iter()
            .any(|&a| a.wrapping_sub(va) < size || a.wrapping_add(7).wrapping_sub(va) < size)
    }

    pub(super) fn search(&self, table: u64, li: usize, base: u64, user_ok: bool) -> Option<Slot> {
        let mode = self.img.desc.mode;
        let esz = mode.entry_size();
        let l = self.lv[li];
        let n = 1u64 << l.bits;
        let nlev = self.lv.len();
        let mut entries = Vec::with_capacity(n as usize);
        for i in 0..n {
            entries.push(self.img.read_phys(table + i * esz, esz as usize)?);
        }
        let size = 1u64 << l.shift;
        // Only windows below 4 GiB (the 32-bit boot code loads the GDTR).
        let va_of = |i: u64| base + i * size;
        if li < nlev - 1 && (user_ok || !self.need_user) {
            for i in 0..n {
                if entries[i as usize] & P == 0
                    && va_of(i) < 1 << 32
                    && self.region_free(va_of(i), size)
                {
                    return Some(Slot {
                        table,
                        index: i,
                        level: li,
                        va: va_of(i),
                    });
                }
            }
        }
        if li + 2 >= nlev {
            return None;
        }
        for i in 0..n {
            let e = entries[i as usize];
            if e & P == 0 || is_leaf(self.img, li, nlev, e) || va_of(i) >= 1 << 32 {
                continue;
            }
            let child_ok = user_ok
                && if mode == PagingMode::Pae && li == 0 {
                    true
                } else {
                    e & US != 0 && e & RW != 0 && e & NX == 0
                };
            if let Some(s) = self.search(next_table(mode, e), li + 1, va_of(i), child_ok) {
                return Some(s);
            }
        }
        None
    }
}

/// A physical frame allocator over free RAM.
pub(super) struct Frames<'a> {
    pub(super) img: &'a PagingImage,
    pub(super) excluded: HashSet<u64>,
    pub(super) usable: &'a dyn Fn(u64) -> bool,
    pub(super) next: u64,
}

impl Frames<'_> {
    fn free(&self, f: u64) -> bool {
        if self.excluded.contains(&f) || !(self.usable)(f) {
            return false;
        }
        !self
            .img
            .data
            .iter()
            .any(|(g, b)| f < g.saturating_add(b.len() as u64) && *g < f + 4096)
    }

    pub(super) fn alloc(&mut self, limit: u64) -> Result<u64, OracleError> {
        while self.next + 4096 <= limit {
            let f = self.next;
            self.next += 4096;
            if (0xa_0000..0x10_0000).contains(&f) {
                continue;
            }
            if self.free(f) {
                self.excluded.insert(f);
                return Ok(f);
            }
        }
        Err(OracleError::Unsupported(format!(
            "no free RAM frame below {limit:#x} for the probe program"
        )))
    }
}
