//! The hand-written walks the cursor replaced, kept verbatim (from
//! `src/map.rs` before issue #15) as the benchmark's baseline only: the
//! ten-parameter `map_inner`, `lookup_checked`'s own loop and the
//! recursive `clear_level`. Not used by any code path.

#![allow(clippy::too_many_arguments, dead_code)]

use core::ops::Range;
use physmem::{Frame, FrameState, Owner, PhysAddr, PhysMem, PhysMemory, VirtAddr};
use x86paging::map::{table_flags, MapError};
use x86paging::table::{entry_pa, entry_pa_at, read_entry, write_entry};
use x86paging::{Entry, EntryFlags, Level, PageSize, PagingMode};

fn check_table<P: PhysMem + ?Sized>(
    mem: &P,
    level: Level,
    table: PhysAddr,
) -> Result<(), MapError> {
    match mem.frame_state(table.frame()) {
        FrameState::Live => Ok(()),
        FrameState::Freed => Err(MapError::Dangling {
            level,
            table: table.frame(),
        }),
        FrameState::Unmanaged => Err(MapError::BadPhys { level, table }),
    }
}

#[allow(clippy::too_many_arguments)]
pub fn map<M: PhysMem>(
    pm: &PhysMemory<M>,
    mode: PagingMode,
    root: PhysAddr,
    va: VirtAddr,
    pa: PhysAddr,
    size: PageSize,
    flags: EntryFlags,
    table_owner: Owner,
) -> Result<(), MapError> {
    let target = mode
        .level_for(size)
        .ok_or(MapError::UnsupportedSize { mode, size })?;
    if !mode.is_canonical(va) {
        return Err(MapError::NonCanonical(va));
    }
    if !va.is_aligned(size.bytes()) {
        return Err(MapError::Misaligned { va, size });
    }
    let leaf = Entry::page(mode, size, pa, flags | EntryFlags::PRESENT)?;
    let mut allocated: [Option<Frame>; 5] = [None; 5];
    let mut nr_alloc = 0;
    let mut hook: Option<PhysAddr> = None;
    let result = map_inner(
        pm,
        mode,
        root,
        va,
        target,
        leaf,
        table_owner,
        &mut allocated,
        &mut nr_alloc,
        &mut hook,
    );
    if result.is_err() {
        if let Some(at) = hook {
            let _ = write_entry(pm, mode, at, Entry::EMPTY);
        }
        for f in allocated[..nr_alloc].iter().rev().flatten() {
            let _ = pm.free_frame(*f);
        }
    }
    result
}

#[allow(clippy::too_many_arguments)]
fn map_inner<M: PhysMem>(
    pm: &PhysMemory<M>,
    mode: PagingMode,
    root: PhysAddr,
    va: VirtAddr,
    target: Level,
    leaf: Entry,
    table_owner: Owner,
    allocated: &mut [Option<Frame>; 5],
    nr_alloc: &mut usize,
    hook: &mut Option<PhysAddr>,
) -> Result<(), MapError> {
    let mut table = root;
    for &level in mode.levels() {
        check_table(pm, level, table)?;
        let at = entry_pa(mode, table, level, va);
        let cur = read_entry(pm, mode, at)?;
        if level == target {
            if cur.is_present() {
                return Err(MapError::AlreadyMapped { va, level });
            }
            write_entry(pm, mode, at, leaf)?;
            return Ok(());
        }
        if cur.is_present() {
            if cur.is_leaf(mode, level, true) {
                return Err(MapError::AlreadyMapped { va, level });
            }
            table = cur.table_addr(mode);
            continue;
        }
        let f = pm
            .alloc_zeroed_frame(table_owner)
            .map_err(MapError::OutOfMemory)?;
        if let Some(slot) = allocated.get_mut(*nr_alloc) {
            *slot = Some(f);
            *nr_alloc += 1;
        }
        let e = Entry::table(mode, level, f.start(), table_flags(mode, level, va))?;
        write_entry(pm, mode, at, e)?;
        if hook.is_none() {
            *hook = Some(at);
        }
        table = f.start();
    }
    Ok(())
}

pub fn lookup_checked<P: PhysMem + ?Sized>(
    mem: &P,
    mode: PagingMode,
    root: PhysAddr,
    va: VirtAddr,
) -> Result<Option<(PhysAddr, Level, Entry)>, MapError> {
    if !mode.is_canonical(va) {
        return Err(MapError::NonCanonical(va));
    }
    let mut table = root;
    for &level in mode.levels() {
        check_table(mem, level, table)?;
        let at = entry_pa(mode, table, level, va);
        let e = read_entry(mem, mode, at)?;
        if level == Level::Pte {
            return Ok(Some((at, level, e)));
        }
        if !e.is_present() {
            return Ok(None);
        }
        if e.is_leaf(mode, level, true) {
            return Ok(Some((at, level, e)));
        }
        table = e.table_addr(mode);
    }
    Ok(None)
}

pub fn free_user_tables<M: PhysMem>(
    pm: &PhysMemory<M>,
    mode: PagingMode,
    root: PhysAddr,
    range: Range<VirtAddr>,
) -> Result<u64, MapError> {
    let mask = (1u64 << mode.va_bits()) - 1;
    let start = range.start.as_u64() & mask;
    let end_raw = range.end.as_u64() & mask;
    // An end that truncates to 0 is the top of the address space.
    let end = if end_raw == 0 && range.end.as_u64() != 0 {
        mask as u128 + 1
    } else {
        end_raw as u128
    };
    let mut freed = 0;
    clear_level(pm, mode, root, Level::Pgd, start as u128, end, &mut freed)?;
    Ok(freed)
}

fn clear_level<M: PhysMem>(
    pm: &PhysMemory<M>,
    mode: PagingMode,
    table: PhysAddr,
    level: Level,
    start: u128,
    end: u128,
    freed: &mut u64,
) -> Result<(), MapError> {
    check_table(pm, level, table)?;
    // Spans and table sizes are powers of two: shift and mask, no division
    // (this runs on every exit).
    let shift = mode.shift(level);
    let span = 1u128 << shift;
    let n_mask = mode.entries(level) as u128 - 1;
    let mut a = start;
    while a < end {
        let idx = ((a >> shift) & n_mask) as usize;
        let entry_start = a & !(span - 1);
        // Entries of this table the range still covers, from `idx` on.
        let left = (end - entry_start)
            .div_ceil(span)
            .min(n_mask + 1 - idx as u128);
        match x86paging::table::next_used_entry(pm, mode, table, idx, left as usize)
            .map_err(MapError::Mem)?
        {
            None => break,
            Some(i) if i > idx => {
                a = entry_start + ((i - idx) as u128) * span;
                continue;
            }
            Some(_) => {}
        }
        let entry_end = entry_start + span;
        let at = entry_pa_at(mode, table, idx);
        let e = read_entry(pm, mode, at)?;
        let whole = a == entry_start && end >= entry_end;
        if e.is_present() {
            if e.is_leaf(mode, level, true) {
                if whole {
                    write_entry(pm, mode, at, Entry::EMPTY)?;
                }
            } else if let Some(next) = mode.next_level(level) {
                let child = e.table_addr(mode);
                let owned_by_pgd = mode == PagingMode::Pae && level == Level::Pgd;
                // A whole pte table that is about to be freed (and poisoned)
                // need not have its entries cleared one by one first.
                if !(whole && !owned_by_pgd && next == Level::Pte) {
                    clear_level(pm, mode, child, next, a, end.min(entry_end), freed)?;
                }
                if whole && !owned_by_pgd {
                    write_entry(pm, mode, at, Entry::EMPTY)?;
                    if pm.free_frame(child.frame()).is_ok() {
                        *freed += 1;
                    }
                }
            }
        }
        a = entry_end;
    }
    Ok(())
}
