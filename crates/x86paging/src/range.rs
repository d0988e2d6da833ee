//! Iterating a page table over a range of linear addresses.
//!
//! [`Entries`] visits, in address order and depth first, every *present*
//! entry whose span meets the range: a table pointer is yielded before the
//! entries of the table it points at (so a caller can decline to go down
//! with [`Entries::skip_children`], e.g. a table it has seen through
//! another pgd, or a pte table it is about to free whole), a leaf is
//! yielded and not descended. Runs of empty entries are skipped a word at
//! a time ([`crate::table::next_used_entry`]: a small task uses 3 of a
//! 2-level pgd's 768 user entries). Not-present entries are not yielded.
//!
//! This is the loop `clear_page_tables`, the checker's table census and
//! `vfree`'s pte sweep each wrote by hand. A table whose frame is freed or
//! outside RAM is reported once as an `Err` item ([`MapError::Dangling`],
//! [`MapError::BadPhys`]) and not entered; the walk then goes on.

use crate::cursor::{Cursor, Slot};
use crate::map::MapError;
use crate::mode::Level;
use crate::table::next_used_entry;
use core::ops::Range;
use physmem::{PhysAddr, PhysMem, VirtAddr};

/// One table being iterated.
#[derive(Clone, Copy, Debug)]
struct Open {
    table: PhysAddr,
    level: Level,
    /// Unsigned linear address its entry 0 covers.
    base: u128,
    /// The next index to look at.
    next: usize,
    /// One past the last index the range covers.
    end: usize,
}

const CLOSED: Open = Open {
    table: PhysAddr::new(0),
    level: Level::Pgd,
    base: 0,
    next: 0,
    end: 0,
};

/// The iterator [`Cursor::entries`] returns (see the module docs).
#[derive(Debug)]
pub struct Entries<'m, P: ?Sized> {
    cur: Cursor<'m, P>,
    start: u128,
    end: u128,
    stack: [Open; 5],
    depth: usize,
    /// The table the last yielded entry points at: entered on the next
    /// call unless skipped.
    pending: Option<(PhysAddr, Level, u128)>,
}

impl<'m, P: PhysMem + ?Sized> Entries<'m, P> {
    pub(crate) fn new(cur: Cursor<'m, P>, range: Range<VirtAddr>) -> Self {
        let bits = cur.mode.va_bits();
        let mask = (1u128 << bits) - 1;
        let start = range.start.as_u64() as u128 & mask;
        let end_raw = range.end.as_u64() as u128 & mask;
        let end = if end_raw == 0 && range.end.as_u64() != 0 {
            mask + 1
        } else {
            end_raw
        };
        Entries {
            cur,
            start,
            end,
            stack: [CLOSED; 5],
            depth: 0,
            pending: (start < end).then_some((cur.root, Level::Pgd, 0)),
        }
    }

    /// Does not enter the table the entry just yielded points at.
    pub fn skip_children(&mut self) {
        self.pending = None;
    }

    /// Opens `table` (a `level` table covering from `base`) for the part
    /// of the range it covers.
    #[inline]
    fn open(&mut self, table: PhysAddr, level: Level, base: u128) -> Result<(), MapError> {
        self.cur.check_table(level, table)?;
        let mode = self.cur.mode;
        let shift = mode.shift(level);
        let n = mode.entries(level);
        let top = base + ((n as u128) << shift);
        let lo = self.start.max(base);
        let hi = self.end.min(top);
        if lo >= hi || self.depth >= self.stack.len() {
            return Ok(());
        }
        let first = ((lo - base) >> shift) as usize;
        let last = ((hi - base - 1) >> shift) as usize;
        self.stack[self.depth] = Open {
            table,
            level,
            base,
            next: first,
            end: last + 1,
        };
        self.depth += 1;
        Ok(())
    }

    #[inline]
    fn step(&mut self) -> Option<Result<Slot, MapError>> {
        let mode = self.cur.mode;
        loop {
            if let Some((table, level, base)) = self.pending.take() {
                if let Err(e) = self.open(table, level, base) {
                    return Some(Err(e));
                }
            }
            let top = self.depth.checked_sub(1)?;
            let open = self.stack[top];
            if open.next >= open.end {
                self.depth = top;
                continue;
            }
            let used = next_used_entry(
                self.cur.mem,
                mode,
                open.table,
                open.next,
                open.end - open.next,
            );
            let i = match used {
                Ok(Some(i)) => i,
                Ok(None) => {
                    self.depth = top;
                    continue;
                }
                Err(e) => {
                    self.depth = top;
                    return Some(Err(e.into()));
                }
            };
            self.stack[top].next = i + 1;
            // The unsigned base fits u64 except past the top of a 64-bit
            // space, which no open table reaches.
            let slot = match self
                .cur
                .slot_in(open.table, open.level, i, open.base as u64)
            {
                Ok(s) => s,
                Err(e) => return Some(Err(e)),
            };
            if !slot.is_present() {
                continue;
            }
            if let (Some(child), Some(next)) = (slot.table(), mode.next_level(open.level)) {
                let child_base = open.base + ((i as u128) << mode.shift(open.level));
                self.pending = Some((child, next, child_base));
            }
            return Some(Ok(slot));
        }
    }
}

impl<P: PhysMem + ?Sized> Iterator for Entries<'_, P> {
    type Item = Result<Slot, MapError>;
    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        self.step()
    }
}
