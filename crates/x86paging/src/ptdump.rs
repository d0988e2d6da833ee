//! ptdump: a page table printed exactly as Linux's
//! `/sys/kernel/debug/page_tables/kernel` prints it.
//!
//! [`dump`] walks a page table the way Linux's generic page-table dumper
//! (`mm/ptdump.c` over `walk_page_range_novma`, with the x86 `note_page` of
//! `arch/x86/mm/dump_pagetables.c`, Linux 5.8 and later) does, and
//! [`PtDump`] prints the result in its format. For the same tables and the
//! same section markers the text is byte for byte Linux's:
//!
//! * **Every address is accounted for**, mapped or not. A not-present run
//!   prints with blank attributes and the level where the walk found the
//!   hole: an empty pgd entry is a `pgd` hole, an empty pmd a `pmd` hole,
//!   an empty pte a `pte` hole. On x86_64 the walk covers the user half and
//!   the kernel half from the end of the hypervisor guard hole
//!   (`GUARD_HOLE_END_ADDR`, pgd slot 272) on, so the line that starts the
//!   user half ends there.
//! * **Runs break** where the entry's flags change (`pte_flags`: every bit
//!   outside the physical address, so accessed/dirty and the software bits
//!   too), where the effective U/S, R/W and NX change (U/S and R/W ANDed
//!   down the walk, NX ORed, a PAE PDPTE included), where the level
//!   changes, and at a section marker. Physical contiguity does not break
//!   a run.
//! * **Attributes** are the leaf entry's own bits (not the effective
//!   ones): `USR`, `RW`/`ro`, `PWT`, `PCD`, `PSE` (any level above the
//!   pte), `PAT` (bit 7 of a pte; Linux also tests bit 12 of a large page
//!   but has already masked it out with the address, so a large page never
//!   shows `PAT`), `GLB`, `NX`/`x`.
//! * **Levels** are Linux's: folded levels report where Linux's walker does,
//!   so a 2-level 4 MiB page is a `pmd` (the pmd folded into the pgd) and a
//!   hole in a 2-level pgd a `pgd`.
//! * **Markers** (`---[ User Space ]---`, …, see [`Layout::markers`]) are
//!   printed when the walk first reaches an address at or past them, one
//!   marker per step, as Linux does; a marker past the last step is not
//!   printed.
//! * The last line ends at `0x00000000` (`0x0000000000000000` on x86_64):
//!   Linux flushes the last run at address 0.
//!
//! This walk is Linux's dumper, not the kernel-side [`Cursor`](crate::Cursor):
//! it must visit every entry including the empty ones (a hole is a line),
//! and it reads entries with `mm/ptdump.c`'s own predicates, which differ
//! from `lookup_address`'s on purpose — `pmd_present` counts PROTNONE
//! (the global bit), a PAE PDPTE with bit 7 is a `pud_leaf`, `*_none`
//! ignores the accessed and dirty bits — so it keeps its own loop over
//! [`read_entry`] rather than the cursor's present-entry iterator.
//!
//! A 2-level PSE page, and the booted fixmap's first pte:
//!
//! ```
//! use physmem::SimMemory;
//! use x86paging::{boot, BootConfig, PagingMode, PtDump};
//!
//! let pm = SimMemory::new(64 << 20).unwrap();
//! let ks = boot(&pm, BootConfig::new(PagingMode::TwoLevel)).unwrap();
//! let lines = ks.ptdump(&pm, ks.pgd);
//! let text = PtDump { mode: ks.mode, lines: &lines }.to_string();
//! assert!(text.starts_with(
//!     "---[ User Space ]---\n\
//!      0x00000000-0xc0000000           3G                               pgd\n\
//!      ---[ Kernel Mapping ]---\n\
//!      0xc0000000-0xc4000000          64M     RW         PSE     GLB x  pmd\n"
//! ));
//! assert!(text.ends_with("0xfffff000-0x00000000           4K                               pte\n"));
//! ```
//!
//! (start-end, size, then `USR`/`RW`/`PWT`/`PCD`/`PSE`/`PAT`/`GLB`/`NX`
//! columns, 30 blanks when not present, and the level.) The same lines
//! serialize to JSON with the `serde` feature, with the raw flags, the page
//! size and the physical start as well.
//!
//! One line is ours, not Linux's: a table whose frame has been freed is not
//! read (Linux would read whatever the page now holds); it shows up as a
//! [`PtLine::Dangling`] line. A healthy kernel never has one.

use crate::entry::bits::*;
use crate::layout::Layout;
use crate::mode::{Level, PageSize, PagingMode};
use crate::table::{entry_pa_at, read_entry};
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;
use physmem::{FrameState, PhysAddr, PhysMem};

/// A run of entries with the same level, flags and effective protection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct PtRange {
    /// First linear address.
    pub start: u64,
    /// End (exclusive; 0 means the top of the address space).
    pub end: u64,
    /// Bytes covered.
    pub size: u64,
    /// The level Linux reports for the run (see the module docs).
    pub level: Level,
    /// True if the entries are present.
    pub present: bool,
    /// The first entry's flags as Linux compares them (`pte_flags`: every
    /// bit outside the physical-address field); 0 for a hole.
    pub prot: u64,
    /// Page size of the leaves (`None` when not present).
    pub page_size: Option<PageSize>,
    /// Physical address the first page maps (`None` when not present).
    pub phys_start: Option<u64>,
    /// True if the physical pages are contiguous too.
    pub phys_contiguous: bool,
    /// `USR`: the U/S bit of the leaf.
    pub user: bool,
    /// `RW`: the R/W bit of the leaf.
    pub rw: bool,
    /// `PWT`.
    pub pwt: bool,
    /// `PCD`.
    pub pcd: bool,
    /// `PSE`: a large page (bit 7 above the pte level).
    pub pse: bool,
    /// `PAT` as Linux prints it (bit 7 of a pte only).
    pub pat: bool,
    /// `GLB`.
    pub global: bool,
    /// `NX`: the NX bit of the leaf.
    pub nx: bool,
}

impl PtRange {
    /// Bytes covered.
    pub const fn bytes(&self) -> u64 {
        self.size
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
    /// A run of entries, present or not.
    Range(PtRange),
    /// Ours, not Linux's: a table that has been freed, reached from an
    /// entry covering `start..start+span`.
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

/// `pte_flags`: the bits outside the physical-address field
/// (`PTE_FLAGS_MASK`; the 32-bit entries of 2-level have only 12).
const fn flags_mask(mode: PagingMode) -> u64 {
    match mode {
        PagingMode::TwoLevel => 0xfff,
        _ => !ADDR_MASK_64,
    }
}

/// Linux's `effective_prot`: U/S and R/W ANDed down the walk, NX ORed.
const fn combine(higher: u64, prot: u64) -> u64 {
    (higher & prot & (_PAGE_USER | _PAGE_RW)) | ((higher | prot) & _PAGE_NX)
}

/// What the walk reports at one address: Linux's `note_page` arguments
/// (or our dangling table).
enum Note {
    Entry {
        level: Level,
        /// `pte_flags` of the entry (0 for a hole).
        prot: u64,
        /// Effective protection (0 for a hole).
        eff: u64,
        /// Size and physical address of a present leaf.
        leaf: Option<(PageSize, u64)>,
    },
    Dangling {
        level: Level,
        table: u64,
    },
}

/// Linux's `struct pg_state`: the run being collected and the marker state.
struct State<'m> {
    mode: PagingMode,
    markers: &'m [(u64, &'static str)],
    /// Index of the current marker (Linux's `st->marker`).
    marker: usize,
    started: bool,
    start: u64,
    cur: Option<Note>,
    phys_next: Option<u64>,
    phys_contiguous: bool,
    out: Vec<PtLine>,
}

impl State<'_> {
    fn next_marker(&self) -> Option<(u64, &'static str)> {
        self.markers.get(self.marker + 1).copied()
    }

    fn push_marker(&mut self, i: usize) {
        if let Some(&(addr, name)) = self.markers.get(i) {
            self.out.push(PtLine::Marker {
                addr,
                name: String::from(name),
            });
        }
    }

    /// Linux's `note_page(addr, level, val)`.
    fn note(&mut self, addr: u64, new: Option<Note>) {
        if !self.started {
            self.started = true;
            self.marker = 0;
            self.push_marker(0);
            self.start = 0;
            self.begin(addr, new);
            return;
        }
        let at_marker = self.next_marker().is_some_and(|(m, _)| addr >= m);
        let same = matches!(
            (&self.cur, &new),
            (
                Some(Note::Entry { level: l1, prot: p1, eff: e1, .. }),
                Some(Note::Entry { level: l2, prot: p2, eff: e2, .. }),
            ) if l1 == l2 && p1 == p2 && e1 == e2
        );
        if same && !at_marker {
            if let Some(Note::Entry {
                leaf: Some((size, pa)),
                ..
            }) = new
            {
                if let Some(next) = self.phys_next {
                    self.phys_contiguous &= next == pa;
                }
                self.phys_next = Some(pa.wrapping_add(size.bytes()));
            }
            return;
        }
        self.flush(addr);
        if at_marker {
            self.marker += 1;
            self.push_marker(self.marker);
        }
        self.begin(addr, new);
    }

    fn begin(&mut self, addr: u64, new: Option<Note>) {
        self.start = addr;
        self.phys_contiguous = true;
        self.phys_next = match &new {
            Some(Note::Entry {
                leaf: Some((size, pa)),
                ..
            }) => Some(pa.wrapping_add(size.bytes())),
            _ => None,
        };
        self.cur = new;
    }

    /// Prints the collected run as ending at `end`.
    fn flush(&mut self, end: u64) {
        let top = if self.mode.is_64bit() {
            u64::MAX
        } else {
            0xffff_ffff
        };
        let size = end.wrapping_sub(self.start) & top;
        match self.cur.take() {
            None => {}
            Some(Note::Dangling { level, table }) => self.out.push(PtLine::Dangling {
                start: self.start,
                span: size,
                level,
                table,
            }),
            Some(Note::Entry {
                level, prot, leaf, ..
            }) => {
                let present = prot & _PAGE_PRESENT != 0;
                let on = |bit: u64| present && prot & bit != 0;
                let phys_start = leaf.map(|(_, pa)| pa);
                self.out.push(PtLine::Range(PtRange {
                    start: self.start,
                    end,
                    size,
                    level,
                    present,
                    prot,
                    page_size: leaf.map(|(s, _)| s),
                    phys_start,
                    phys_contiguous: phys_start.is_some() && self.phys_contiguous,
                    user: on(_PAGE_USER),
                    rw: on(_PAGE_RW),
                    pwt: on(_PAGE_PWT),
                    pcd: on(_PAGE_PCD),
                    pse: level != Level::Pte && on(_PAGE_PSE),
                    pat: match level {
                        Level::Pte => on(_PAGE_PAT),
                        Level::Pmd | Level::Pud => on(_PAGE_PAT_LARGE),
                        _ => false,
                    },
                    global: on(_PAGE_GLOBAL),
                    nx: on(_PAGE_NX),
                }))
            }
        }
    }
}

/// The level Linux's walker reports a leaf at, for an entry of our `level`:
/// the pmd folded into a 2-level pgd, the pud folded into a PAE pgd.
const fn leaf_level(mode: PagingMode, level: Level) -> Level {
    match (mode, level) {
        (PagingMode::TwoLevel, Level::Pgd) => Level::Pmd,
        (PagingMode::Pae, Level::Pgd) => Level::Pud,
        _ => level,
    }
}

/// Linux's `*_leaf()` for a non-pte entry of our `level`: bit 7 where the
/// level can hold a large page (`pmd_leaf`, `pud_leaf`; a PAE PDPTE is
/// read as a pud), never at a 64-bit pgd or p4d.
fn is_leaf(mode: PagingMode, level: Level, raw: u64) -> bool {
    let can = match (mode, level) {
        (PagingMode::TwoLevel | PagingMode::Pae, _) => true,
        (_, Level::Pgd | Level::P4d) => false,
        _ => true,
    };
    can && raw & _PAGE_PSE != 0
}

/// Linux's `*_present()` for a non-leaf table entry: a pmd is present
/// with P or PROTNONE (the global bit), the other levels with P.
fn is_present_table(mode: PagingMode, level: Level, raw: u64) -> bool {
    let pmd = level == Level::Pmd || (mode == PagingMode::TwoLevel && level == Level::Pgd);
    let mask = if pmd {
        _PAGE_PRESENT | _PAGE_GLOBAL
    } else {
        _PAGE_PRESENT
    };
    raw & mask != 0
}

struct Walk<'a, P: ?Sized> {
    mem: &'a P,
    mode: PagingMode,
    mask: u64,
}

impl<P: PhysMem + ?Sized> Walk<'_, P> {
    /// Walks entries `range` of `table` at `level`, whose first entry
    /// covers `base`; `higher` is the effective protection above (`None`
    /// at the pgd).
    fn table(
        &self,
        st: &mut State<'_>,
        table: PhysAddr,
        level: Level,
        base: u64,
        higher: Option<u64>,
        range: core::ops::Range<usize>,
    ) {
        let mode = self.mode;
        let span = mode.span(level);
        for i in range {
            let unsigned = base.wrapping_add(i as u64 * span);
            let va = mode.canonicalize(unsigned).as_u64();
            let Ok(e) = read_entry(self.mem, mode, entry_pa_at(mode, table, i)) else {
                return;
            };
            let raw = e.raw();
            let prot = raw & self.mask;
            if level == Level::Pte {
                // pte_entry: every pte is noted, empty or not.
                let eff = match (raw, higher) {
                    (0, _) => 0,
                    (_, Some(h)) => combine(h, prot),
                    (_, None) => prot,
                };
                let leaf = e.is_present().then(|| {
                    (
                        PageSize::Size4K,
                        e.page_addr(mode, PageSize::Size4K).as_u64(),
                    )
                });
                st.note(
                    va,
                    Some(Note::Entry {
                        level,
                        prot,
                        eff,
                        leaf,
                    }),
                );
                continue;
            }
            // pgd/p4d/pud/pmd_none: the accessed and dirty bits alone do
            // not make an entry (the KNL erratum mask).
            if raw & !(_PAGE_ACCESSED | _PAGE_DIRTY) == 0 {
                st.note(
                    va,
                    Some(Note::Entry {
                        level,
                        prot: 0,
                        eff: 0,
                        leaf: None,
                    }),
                );
                continue;
            }
            // Folded levels combine the same value again, which is
            // idempotent after the first combination.
            let eff = match higher {
                Some(h) => combine(h, prot),
                None => combine(prot, prot),
            };
            if is_leaf(mode, level, raw) {
                let size = mode.page_size_at(level).unwrap_or(PageSize::Size4K);
                let leaf = e
                    .is_present()
                    .then(|| (size, e.page_addr(mode, size).as_u64()));
                st.note(
                    va,
                    Some(Note::Entry {
                        level: leaf_level(mode, level),
                        prot,
                        eff,
                        leaf,
                    }),
                );
                continue;
            }
            if !is_present_table(mode, level, raw) {
                // Linux neither notes nor descends: the run goes on.
                continue;
            }
            let Some(next) = mode.next_level(level) else {
                continue;
            };
            let child = e.table_addr(mode);
            if self.mem.frame_state(child.frame()) == FrameState::Live {
                self.table(st, child, next, unsigned, Some(eff), 0..mode.entries(next));
            } else {
                st.note(
                    va,
                    Some(Note::Dangling {
                        level: next,
                        table: child.as_u64(),
                    }),
                );
            }
        }
    }
}

/// Dumps the page table rooted at `root` with section markers from
/// `layout` (pass `None` for no markers), as Linux's ptdump walks it.
pub fn dump<P: PhysMem + ?Sized>(
    mem: &P,
    mode: PagingMode,
    root: PhysAddr,
    layout: Option<&Layout>,
) -> Vec<PtLine> {
    let markers = layout.map(|l| l.markers()).unwrap_or_default();
    let mut st = State {
        mode,
        markers: &markers,
        marker: 0,
        started: false,
        start: 0,
        cur: None,
        phys_next: None,
        phys_contiguous: true,
        out: Vec::new(),
    };
    let walk = Walk {
        mem,
        mode,
        mask: flags_mask(mode),
    };
    let n = mode.ptrs_per_pgd();
    if mem.frame_state(root.frame()) == FrameState::Live {
        if mode.is_64bit() {
            // ptdump_ranges: the user half, then the kernel half from
            // GUARD_HOLE_END_ADDR (pgd slot -240) on.
            walk.table(&mut st, root, Level::Pgd, 0, None, 0..n / 2);
            walk.table(&mut st, root, Level::Pgd, 0, None, n / 2 + 16..n);
        } else {
            walk.table(&mut st, root, Level::Pgd, 0, None, 0..n);
        }
    } else {
        st.note(
            0,
            Some(Note::Dangling {
                level: Level::Pgd,
                table: root.as_u64(),
            }),
        );
    }
    // Flush out the last run: Linux's note_page(st, 0, -1, 0).
    if st.started {
        st.flush(0);
    }
    st.out
}

/// Prints dump lines in the kernel's format.
pub struct PtDump<'a> {
    /// The mode (decides the address width: 8 or 16 hex digits).
    pub mode: PagingMode,
    /// The lines.
    pub lines: &'a [PtLine],
}

/// The size as Linux prints it: divided by 1024 while it divides, with the
/// unit letter (`"BKMGTPE"`); a size of 0 (the whole 64-bit space) is `0E`.
fn size_str(mut delta: u64) -> (u64, char) {
    let units = ['B', 'K', 'M', 'G', 'T', 'P', 'E'];
    let mut u = 0;
    while delta & 1023 == 0 && u + 1 < units.len() {
        delta >>= 10;
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
                    let (n, unit) = size_str(r.size);
                    write!(f, "0x{:0w$x}-0x{:0w$x}   {n:>9}{unit} ", r.start, r.end)?;
                    if r.present {
                        let col =
                            |on: bool, s: &'static str, off: &'static str| if on { s } else { off };
                        write!(
                            f,
                            "{}{}{}{}{}{}{}{}",
                            col(r.user, "USR ", "    "),
                            col(r.rw, "RW ", "ro "),
                            col(r.pwt, "PWT ", "    "),
                            col(r.pcd, "PCD ", "    "),
                            col(r.pse, "PSE ", "    "),
                            col(r.pat, "PAT ", "    "),
                            col(r.global, "GLB ", "    "),
                            col(r.nx, "NX ", "x  "),
                        )?;
                    } else {
                        f.write_str("                              ")?;
                    }
                    writeln!(f, "{}", r.level.name())?;
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
                    self.mode.canonicalize(start.wrapping_add(*span)).as_u64()
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
