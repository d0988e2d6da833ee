//! Profiling loop: alloc+free of one object, 2e7 times.
//! `pairloop [size] [p]` (`p` = pinned CPU via `lock_cpu`), e.g. under `perf record`.
#[path = "../benches/common.rs"]
mod common;
use common::*;
fn main() {
    let size: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(32);
    let pinned = std::env::args().nth(2).is_some();
    let cache = objcache(size, 2);
    let n = 20_000_000;
    let t = std::time::Instant::now();
    if pinned {
        pairs(&mut Pinned::new(&cache, 0), n);
    } else {
        pairs(
            &mut ObjCache {
                cache: &cache,
                cpu: 0,
            },
            n,
        );
    }
    println!("{:.1} ns/pair", t.elapsed().as_nanos() as f64 / n as f64);
}
