//! The cursor against the hand-written walks it replaced (`baseline.rs`,
//! the pre-issue-#15 code kept verbatim), in the same run: interleaved
//! rounds, per-round ratios (`benchstats`). Three operations, per mode:
//!
//! * `map`: mapping a small task's 28 pages (text at 4 MiB, data, stack
//!   below the top of user space), tables included — `copy_page_range`'s
//!   walk on every fork;
//! * `lookup`: `lookup_address` of each of those pages;
//! * `exit`: `free_user_tables` over the user part of the pgd, as
//!   `clear_page_tables` does on every exit.
//!
//! `cargo bench -p x86paging --bench cursor [-- ROUNDS]` (default 15).
//! A ratio is cursor time / baseline time: below 1.00x the cursor is faster.

#[path = "baseline.rs"]
mod baseline;

use benchstats::{interleaved, Ratio, Summary};
use physmem::{Owner, PhysAddr, SimMemory, VirtAddr, PAGE_SIZE};
use std::hint::black_box;
use std::time::Instant;
use x86paging::{Cursor, EntryFlags, Level, PageSize, PagingMode, TableFrames};

const ITERS: u32 = 400;

/// The 28 pages of a small task (pgdcache's `TaskSize::SMALL` layout).
fn task_pages(mode: PagingMode) -> Vec<VirtAddr> {
    let text = 0x40_0000u64;
    let data = text + 16 * PAGE_SIZE;
    let top = if mode.is_64bit() {
        0x7fff_ffff_f000
    } else {
        0xc000_0000
    };
    let stack = top - 16 * PAGE_SIZE - 4 * PAGE_SIZE;
    (0..16)
        .map(|i| text + i * PAGE_SIZE)
        .chain((0..8).map(|i| data + i * PAGE_SIZE))
        .chain((0..4).map(|i| stack + i * PAGE_SIZE))
        .map(VirtAddr::new)
        .collect()
}

fn user_end(mode: PagingMode) -> VirtAddr {
    VirtAddr::new(mode.user_ptrs_per_pgd() as u64 * mode.span(Level::Pgd))
}

type R = Result<f64, Box<dyn std::error::Error>>;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let rounds: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(15);
    println!("cursor vs the hand-written walks it replaced: median ns per task [ratio cursor/baseline, IQR], {rounds} rounds x {ITERS}");
    for mode in PagingMode::ALL {
        let pm = SimMemory::new(64 << 20)?;
        let root = pm.alloc_zeroed_frame(Owner::UserTable)?.start();
        let pages = task_pages(mode);
        let flags = EntryFlags::PRESENT | EntryFlags::USER;
        let frames = TableFrames::new(&pm, Owner::UserTable);
        let cur = Cursor::new(&pm, mode, root);
        let end = user_end(mode);
        let data = PhysAddr::new(0x80_0000);

        let map_new = |pm: &SimMemory| -> Result<(), Box<dyn std::error::Error>> {
            for &va in &pages {
                cur.map(va, data, PageSize::Size4K, flags, &frames)?
                    .ignore();
            }
            black_box(pm);
            Ok(())
        };
        let map_old = |pm: &SimMemory| -> Result<(), Box<dyn std::error::Error>> {
            for &va in &pages {
                baseline::map(
                    pm,
                    mode,
                    root,
                    va,
                    data,
                    PageSize::Size4K,
                    flags,
                    Owner::UserTable,
                )?;
            }
            Ok(())
        };
        // Each contender: ITERS times map + lookup + exit, timing each part.
        let run = |new: bool, part: usize| -> R {
            let mut ns = 0u128;
            for _ in 0..ITERS {
                let t = Instant::now();
                if new {
                    map_new(&pm)?
                } else {
                    map_old(&pm)?
                }
                let t_map = t.elapsed();
                let t = Instant::now();
                for &va in &pages {
                    if new {
                        black_box(cur.lookup(va)?);
                    } else {
                        black_box(baseline::lookup_checked(&pm, mode, root, va)?);
                    }
                }
                let t_lookup = t.elapsed();
                let t = Instant::now();
                let freed = if new {
                    x86paging::free_user_tables(&pm, mode, root, VirtAddr::new(0)..end)?
                } else {
                    baseline::free_user_tables(&pm, mode, root, VirtAddr::new(0)..end)?
                };
                let t_exit = t.elapsed();
                black_box(freed);
                ns += [t_map, t_lookup, t_exit][part].as_nanos();
            }
            Ok(ns as f64 / ITERS as f64)
        };
        for (part, name) in ["map", "lookup", "exit"].into_iter().enumerate() {
            // Warm up both.
            run(true, part)?;
            run(false, part)?;
            let mut a = || run(true, part);
            let mut b = || run(false, part);
            let s = interleaved(rounds, &mut [&mut a, &mut b])?;
            let (new, old) = (Summary::of(&s[0]), Summary::of(&s[1]));
            println!(
                "{mode:6} {name:6} cursor {:8.0} ns  baseline {:8.0} ns  {}",
                new.median,
                old.median,
                Ratio::paired(&s[0], &s[1])
            );
        }
    }
    Ok(())
}
