//! Profiling loop: alloc+free of one object, `n` (default 2e7) times.
//! `pairloop [size] [mode] [n]`, mode `c` = per-call `alloc_on`/`free_on`
//! (default), `p` = pinned CPU via `lock_cpu`, `t` = a claimed CPU's
//! `CpuToken`, `s` = system allocator at
//! 16-byte alignment, `S` = system allocator at the cache's alignment;
//! e.g. under `perf record` or `valgrind --tool=callgrind`.
use std::alloc::Layout;

#[path = "../benches/common.rs"]
mod common;
use common::*;
fn main() {
    let mut args = std::env::args().skip(1);
    let size: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(32);
    let mode = args.next().unwrap_or_else(|| "c".into());
    let n: u64 = args
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_000_000);
    let cache = objcache(size, 2);
    let t = std::time::Instant::now();
    match mode.as_str() {
        "p" => pairs(&mut Pinned::new(&cache, 0), n),
        "t" => pairs(&mut Token::new(&cache, 0), n),
        "s" | "S" => {
            let align = if mode == "s" { 16 } else { cache.align() };
            let layout = Layout::from_size_align(size, align).unwrap_or_else(|e| panic!("{e}"));
            pairs(&mut System(layout), n)
        }
        _ => pairs(
            &mut ObjCache {
                cache: &cache,
                cpu: 0,
            },
            n,
        ),
    }
    println!(
        "{mode}: {:.1} ns/pair",
        t.elapsed().as_nanos() as f64 / n as f64
    );
}
