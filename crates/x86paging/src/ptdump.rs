//! ptdump: a page table printed as merged ranges, like Linux's
//! `/sys/kernel/debug/page_tables/kernel`.
//!
//! [`dump`] walks every present leaf under a pgd in address order and merges
//! neighbours with the same level and effective attributes into
//! [`PtRange`]s, with section markers (`---[ User Space ]---`, …) from a
//! [`Layout`] in between. [`PtDump`] prints them in the kernel's format:
//!
//! ```text
//! 0xc0000000-0xc0400000           4M     RW     PSE     GLB x  pgd
//! ```
//!
//! (start-end, size, USR/RW/PWT/PCD/PSE/PAT/GLB/NX, level name.) The same
//! lines serialize to JSON with the `serde` feature. Attributes are
//! effective ones: U/S and R/W ANDed down the walk, NX ORed.
//!
//! A table whose frame has been freed is not read: it shows up as a
//! [`PtLine::Dangling`] line.

use crate::entry::{bits::*, EntryFlags};
use crate::layout::Layout;
use crate::mode::{Level, PageSize, PagingMode};
use crate::table::{entry_pa_at, read_entry};
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;
use physmem::{FrameState, PhysAddr, PhysMem};

/// A run of leaves with the same level and attributes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct PtRange {
    /// First linear address.
    pub start: u64,
    /// End (exclusive; 0 means the top of the address space).
    pub end: u64,
    /// Level of the leaves.
    pub level: Level,
    /// Page size of the leaves.
    pub page_size: PageSize,
    /// Physical address the first page maps.
    pub phys_start: u64,
    /// True if the physical pages are contiguous too.
    pub phys_contiguous: bool,
    /// Effective U/S.
    pub user: bool,
    /// Effective R/W.
    pub rw: bool,
    /// PWT.
    pub pwt: bool,
    /// PCD.
    pub pcd: bool,
    /// A large page (PS=1).
    pub pse: bool,
    /// PAT.
    pub pat: bool,
    /// Global.
    pub global: bool,
    /// Effective NX.
    pub nx: bool,
}

impl PtRange {
    /// Bytes covered.
    pub const fn bytes(&self) -> u64 {
        self.end.wrapping_sub(self.start)
    }
}

/// One line of a dump.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(tag = "kind", rename_all = "lowercase"))]
pub enum PtLine {
    /// A section marker (`---[ name ]---`).
    Marker {
        /// Address where the section starts.
        addr: u64,
        /// Its name.
        name: String,
    },
    /// A run of mapped pages.
    Range(PtRange),
    /// A table that has been freed, reached from an entry covering
    /// `start..start+span`.
    Dangling {
        /// First address the freeing entry covers.
        start: u64,
        /// Its span in bytes.
        span: u64,
        /// Level of the freed table.
        level: Level,
        /// Its physical address.
        table: u64,
    },
}

struct Leaf {
    va: u64,
    size: PageSize,
    level: Level,
    pa: u64,
    flags: EntryFlags,
}

enum Item {
    Leaf(Leaf),
    Dangling {
        start: u64,
        span: u64,
        level: Level,
        table: u64,
    },
}

#[allow(clippy::too_many_arguments)]
fn walk<P: PhysMem + ?Sized>(
    mem: &P,
    mode: PagingMode,
    table: PhysAddr,
    level: Level,
    base: u64,
    eff: (bool, bool, bool),
    first: usize,
    count: usize,
    out: &mut Vec<Item>,
) {
    let span = mode.span(level);
    for i in first..first + count {
        let va = mode
            .canonicalize(base.wrapping_add(i as u64 * span))
            .as_u64();
        let Ok(e) = read_entry(mem, mode, entry_pa_at(mode, table, i)) else {
            return;
        };
        if !e.is_present() {
            continue;
        }
        let pdpte = mode == PagingMode::Pae && level == Level::Pgd;
        let raw = e.raw();
        let (mut rw, mut us, mut nx) = eff;
        if !pdpte {
            rw &= raw & _PAGE_RW != 0;
            us &= raw & _PAGE_USER != 0;
            nx |= mode != PagingMode::TwoLevel && raw & _PAGE_NX != 0;
        }
        if e.is_leaf(mode, level, true) {
            let size = mode.page_size_at(level).unwrap_or(PageSize::Size4K);
            let mut flags = e.flags(Some(size));
            flags.set(EntryFlags::RW, rw);
            flags.set(EntryFlags::USER, us);
            flags.set(EntryFlags::NX, nx);
            out.push(Item::Leaf(Leaf {
                va,
                size,
                level,
                pa: e.page_addr(mode, size).as_u64(),
                flags,
            }));
            continue;
        }
        let Some(next) = mode.next_level(level) else {
            continue;
        };
        let child = e.table_addr(mode);
        match mem.frame_state(child.frame()) {
            FrameState::Live => walk(
                mem,
                mode,
                child,
                next,
                base.wrapping_add(i as u64 * span),
                (rw, us, nx),
                0,
                mode.entries(next),
                out,
            ),
            _ => out.push(Item::Dangling {
                start: va,
                span,
                level: next,
                table: child.as_u64(),
            }),
        }
    }
}

/// Dumps the page table rooted at `root` with section markers from
/// `layout` (pass `None` for no markers).
pub fn dump<P: PhysMem + ?Sized>(
    mem: &P,
    mode: PagingMode,
    root: PhysAddr,
    layout: Option<&Layout>,
) -> Vec<PtLine> {
    let mut items = Vec::new();
    if mem.frame_state(root.frame()) == FrameState::Live {
        walk(
            mem,
            mode,
            root,
            Level::Pgd,
            0,
            (true, true, false),
            0,
            mode.ptrs_per_pgd(),
            &mut items,
        );
    } else {
        items.push(Item::Dangling {
            start: 0,
            span: 0,
            level: Level::Pgd,
            table: root.as_u64(),
        });
    }
    let markers = layout.map(|l| l.markers()).unwrap_or_default();
    let mut next_marker = 0;
    let mut out = Vec::new();
    let mut cur: Option<PtRange> = None;
    let mut emit_markers = |upto: Option<u64>, out: &mut Vec<PtLine>, cur: &mut Option<PtRange>| {
        while let Some(&(addr, name)) = markers.get(next_marker) {
            if upto.is_some_and(|u| addr > u) {
                break;
            }
            if let Some(r) = cur.take() {
                out.push(PtLine::Range(r));
            }
            out.push(PtLine::Marker {
                addr,
                name: String::from(name),
            });
            next_marker += 1;
        }
    };
    for item in items {
        match item {
            Item::Leaf(l) => {
                emit_markers(Some(l.va), &mut out, &mut cur);
                let end = l.va.wrapping_add(l.size.bytes());
                let f = l.flags;
                let range = PtRange {
                    start: l.va,
                    end,
                    level: l.level,
                    page_size: l.size,
                    phys_start: l.pa,
                    phys_contiguous: true,
                    user: f.contains(EntryFlags::USER),
                    rw: f.contains(EntryFlags::RW),
                    pwt: f.contains(EntryFlags::PWT),
                    pcd: f.contains(EntryFlags::PCD),
                    pse: l.size != PageSize::Size4K,
                    pat: f.contains(EntryFlags::PAT),
                    global: f.contains(EntryFlags::GLOBAL),
                    nx: f.contains(EntryFlags::NX),
                };
                match cur.as_mut() {
                    Some(c)
                        if c.end == range.start
                            && c.level == range.level
                            && same_attrs(c, &range) =>
                    {
                        c.phys_contiguous &=
                            c.phys_start.wrapping_add(c.bytes()) == range.phys_start;
                        c.end = range.end;
                    }
                    _ => {
                        if let Some(r) = cur.replace(range) {
                            out.push(PtLine::Range(r));
                        }
                    }
                }
            }
            Item::Dangling {
                start,
                span,
                level,
                table,
            } => {
                emit_markers(Some(start), &mut out, &mut cur);
                if let Some(r) = cur.take() {
                    out.push(PtLine::Range(r));
                }
                out.push(PtLine::Dangling {
                    start,
                    span,
                    level,
                    table,
                });
            }
        }
    }
    if let Some(r) = cur.take() {
        out.push(PtLine::Range(r));
    }
    emit_markers(None, &mut out, &mut cur);
    out
}

fn same_attrs(a: &PtRange, b: &PtRange) -> bool {
    (a.user, a.rw, a.pwt, a.pcd, a.pse, a.pat, a.global, a.nx)
        == (b.user, b.rw, b.pwt, b.pcd, b.pse, b.pat, b.global, b.nx)
}

/// Prints dump lines in the kernel's format.
pub struct PtDump<'a> {
    /// The mode (decides the address width: 8 or 16 hex digits).
    pub mode: PagingMode,
    /// The lines.
    pub lines: &'a [PtLine],
}

fn size_str(mut delta: u64) -> (u64, char) {
    let units = ['B', 'K', 'M', 'G', 'T', 'P', 'E'];
    let mut u = 0;
    while delta != 0 && delta % 1024 == 0 && u + 1 < units.len() {
        delta /= 1024;
        u += 1;
    }
    (delta, units[u])
}

impl fmt::Display for PtDump<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let w = if self.mode.is_64bit() { 16 } else { 8 };
        for line in self.lines {
            match line {
                PtLine::Marker { name, .. } => writeln!(f, "---[ {name} ]---")?,
                PtLine::Range(r) => {
                    let (n, unit) = size_str(r.bytes());
                    write!(f, "0x{:0w$x}-0x{:0w$x}   {n:>9}{unit} ", r.start, r.end)?;
                    let col =
                        |on: bool, s: &'static str, off: &'static str| if on { s } else { off };
                    write!(
                        f,
                        "{}{}{}{}{}{}{}{}{}",
                        col(r.user, "USR ", "    "),
                        col(r.rw, "RW ", "ro "),
                        col(r.pwt, "PWT ", "    "),
                        col(r.pcd, "PCD ", "    "),
                        col(r.pse, "PSE ", "    "),
                        col(r.pat, "PAT ", "    "),
                        col(r.global, "GLB ", "    "),
                        col(r.nx, "NX ", "x  "),
                        r.level.name()
                    )?;
                    writeln!(f)?;
                }
                PtLine::Dangling {
                    start,
                    span,
                    level,
                    table,
                } => writeln!(
                    f,
                    "0x{:0w$x}-0x{:0w$x}   DANGLING {level} table at {table:#x} (freed)",
                    start,
                    start.wrapping_add(*span)
                )?,
            }
        }
        Ok(())
    }
}

/// Writes a dump of the page table at `root` into `w`.
pub fn write_dump<P: PhysMem + ?Sized, W: fmt::Write>(
    w: &mut W,
    mem: &P,
    mode: PagingMode,
    root: PhysAddr,
    layout: Option<&Layout>,
) -> fmt::Result {
    let lines = dump(mem, mode, root, layout);
    write!(
        w,
        "{}",
        PtDump {
            mode,
            lines: &lines
        }
    )
}
