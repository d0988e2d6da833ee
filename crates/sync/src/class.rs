//! Lock classes: what lockdep reasons about instead of lock instances.
//!
//! Linux's lockdep keys every lock by a `struct lock_class_key`, one per
//! kind of lock (every `zone->lock` of every zone is one class), because
//! lock *orders* are a property of the code, not of one lock. Here a class
//! is a `static LockClass` with a name; each lock built by the shim takes
//! one. A class carries up to [`MAX_SUBCLASSES`] subclasses for annotated
//! same-class nesting (`spin_lock_nested`), each its own node in the order
//! graph, numbered lazily the first time lockdep sees it.

use core::fmt;
use core::sync::atomic::{AtomicU8, Ordering};

/// Subclasses per class (Linux's `MAX_LOCKDEP_SUBCLASSES`).
pub const MAX_SUBCLASSES: u8 = 8;

/// A named kind of lock. Create them as `static`s:
///
/// ```
/// use pgdcache_sync::{LockClass, SpinLock};
/// static MY_LOCK: LockClass = LockClass::new("my_lock");
/// let l = SpinLock::new(&MY_LOCK, 0u32);
/// *l.lock() += 1;
/// assert_eq!(l.class().name(), "my_lock");
/// ```
pub struct LockClass {
    name: &'static str,
    /// Node numbers in lockdep's graph, plus one (0: not yet numbered),
    /// per subclass. Only written under lockdep's graph lock.
    nodes: [AtomicU8; MAX_SUBCLASSES as usize],
}

impl LockClass {
    /// A class named `name` (the name every lockdep report uses).
    pub const fn new(name: &'static str) -> Self {
        LockClass {
            name,
            nodes: [const { AtomicU8::new(0) }; MAX_SUBCLASSES as usize],
        }
    }

    /// The class's name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The graph node of `subclass` plus one, 0 if not numbered yet.
    #[cfg_attr(
        not(all(feature = "lockdep", debug_assertions, not(loom))),
        allow(dead_code)
    )]
    pub(crate) fn node(&self, subclass: u8) -> u8 {
        self.nodes
            .get(usize::from(subclass))
            .map_or(0, |n| n.load(Ordering::Acquire))
    }

    /// Numbers `subclass` (lockdep's graph lock held).
    #[cfg_attr(
        not(all(feature = "lockdep", debug_assertions, not(loom))),
        allow(dead_code)
    )]
    pub(crate) fn set_node(&self, subclass: u8, node_plus_one: u8) {
        if let Some(n) = self.nodes.get(usize::from(subclass)) {
            n.store(node_plus_one, Ordering::Release);
        }
    }
}

impl fmt::Debug for LockClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("LockClass").field(&self.name).finish()
    }
}

impl fmt::Display for LockClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    static C: LockClass = LockClass::new("c");

    #[test]
    fn name_and_unnumbered_nodes() {
        assert_eq!(C.name(), "c");
        assert_eq!(alloc::format!("{C} {C:?}"), "c LockClass(\"c\")");
        assert_eq!(C.node(MAX_SUBCLASSES), 0);
    }
}
