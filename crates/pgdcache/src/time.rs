//! The clock behind lock hold times and propagation timing.
//!
//! With `std`, a monotonic [`std::time::Instant`] (unless a clock was set).
//! Without it, a kernel supplies its own nanosecond clock with
//! [`set_clock`] (a TSC read scaled to ns, say); until it does, nothing is
//! timed and hold times read 0.

static CLOCK: spin::Once<fn() -> u64> = spin::Once::new();

/// Installs the monotonic nanosecond clock used for lock hold times and
/// `change_page_attr` propagation timing.  Only the first call has an
/// effect; returns whether this call installed `now_ns`.
pub fn set_clock(now_ns: fn() -> u64) -> bool {
    let mut installed = false;
    CLOCK.call_once(|| {
        installed = true;
        now_ns
    });
    installed
}

/// Nanoseconds on the installed clock, if there is one.
#[inline]
pub(crate) fn now_ns() -> Option<u64> {
    if let Some(f) = CLOCK.get() {
        return Some(f());
    }
    std_now_ns()
}

#[cfg(feature = "std")]
fn std_now_ns() -> Option<u64> {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    let start = START.get_or_init(std::time::Instant::now);
    Some(u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX))
}

#[cfg(not(feature = "std"))]
fn std_now_ns() -> Option<u64> {
    None
}

/// Nanoseconds since `since` (0 if there is no clock).
#[inline]
pub(crate) fn elapsed_ns(since: Option<u64>) -> u64 {
    match (since, now_ns()) {
        (Some(a), Some(b)) => b.saturating_sub(a),
        _ => 0,
    }
}
