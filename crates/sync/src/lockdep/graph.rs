//! The checker proper: per-thread held stacks, the global order graph, and
//! the violations it reports (only with the `lockdep` feature, not loom).
//!
//! The graph is a set of bit masks (`after[a]` has bit `b` if `b` was taken
//! while `a` was held) over at most [`MAX_NODES`] class/subclass nodes,
//! behind one `std` mutex that only the first sighting of an order takes;
//! it stays acyclic, because an edge `a → b` is added only after checking
//! that `b` does not reach `a`.

use crate::LockClass;
use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::cell::RefCell;
use core::fmt::Write;
use core::panic::Location;

/// Class/subclass pairs the checker can tell apart.
pub const MAX_NODES: usize = 128;

type Site = &'static Location<'static>;

/// What lockdep found wrong (the panic message of the checker).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Violation {
    /// Taking `taking` while holding `holding` closes a cycle: the opposite
    /// order was seen before.
    #[error(
        "lockdep: lock order inversion between `{holding}` and `{taking}`: this thread \
         ({thread}) takes `{taking}` at {taking_at} while holding `{holding}` (taken at \
         {holding_at}), order {holding} → {taking}; but the opposite order {opposite} was \
         seen first: {first_seen}"
    )]
    Inversion {
        /// The class already held.
        holding: String,
        /// Where it was taken.
        holding_at: String,
        /// The class being taken.
        taking: String,
        /// Where.
        taking_at: String,
        /// This thread.
        thread: String,
        /// The opposite order as a chain of classes.
        opposite: String,
        /// Each edge of the opposite order with where it was first seen.
        first_seen: String,
    },
    /// A lock taken again by the thread that holds it.
    #[error(
        "lockdep: recursive locking of `{class}`: the lock is taken at {at} by the thread \
         that already holds it (taken at {held_at}): a certain deadlock"
    )]
    Recursive {
        /// The class (and subclass).
        class: String,
        /// The second acquisition.
        at: String,
        /// The first.
        held_at: String,
    },
    /// A release of a class the thread does not hold.
    #[error(
        "lockdep: bad unlock balance: releasing `{class}` at {at}, which this thread does not hold"
    )]
    BadUnlock {
        /// The class.
        class: String,
        /// Where.
        at: String,
    },
    /// A subclass out of range.
    #[error("lockdep: subclass {subclass} of `{class}` is above the maximum {max}")]
    BadSubclass {
        /// The class.
        class: &'static str,
        /// The subclass asked for.
        subclass: u8,
        /// `MAX_SUBCLASSES - 1`.
        max: u8,
    },
    /// More class/subclass pairs than [`MAX_NODES`].
    #[error("lockdep: more than {MAX_NODES} lock classes and subclasses (at `{class}`)")]
    TooManyClasses {
        /// The class that did not fit.
        class: &'static str,
    },
}

struct HeldLock {
    node: u8,
    /// The lock's address (0: unknown).
    instance: usize,
    at: Site,
}

struct ThreadState {
    held: Vec<HeldLock>,
    /// `known[a]` bit `b`: the edge `a → b` is in the graph (a cache).
    known: [u128; MAX_NODES],
}

std::thread_local! {
    static STATE: RefCell<ThreadState> = const {
        RefCell::new(ThreadState { held: Vec::new(), known: [0; MAX_NODES] })
    };
}

struct Node {
    class: &'static LockClass,
    subclass: u8,
}

/// Where an edge was first seen.
struct Seen {
    held_at: Site,
    taken_at: Site,
    thread: String,
}

struct Graph {
    nodes: Vec<Node>,
    after: [u128; MAX_NODES],
    seen: BTreeMap<(u8, u8), Seen>,
}

static GRAPH: std::sync::Mutex<Graph> = std::sync::Mutex::new(Graph {
    nodes: Vec::new(),
    after: [0; MAX_NODES],
    seen: BTreeMap::new(),
});

fn graph() -> std::sync::MutexGuard<'static, Graph> {
    // The graph is never left half-updated (the checker panics only after
    // dropping the guard), so a poisoned lock's data is sound.
    GRAPH.lock().unwrap_or_else(|e| e.into_inner())
}

fn bit(node: u8) -> u128 {
    1u128 << node
}

fn thread_name() -> String {
    let t = std::thread::current();
    match t.name() {
        Some(n) => alloc::format!("thread '{n}'"),
        None => alloc::format!("thread {:?}", t.id()),
    }
}

impl Graph {
    fn name(&self, node: u8) -> String {
        match self.nodes.get(usize::from(node)) {
            Some(Node { class, subclass: 0 }) => class.name().to_string(),
            Some(Node { class, subclass }) => alloc::format!("{}/{subclass}", class.name()),
            None => alloc::format!("#{node}"),
        }
    }

    /// A path `from → … → to`, if any (breadth first: the shortest).
    fn path(&self, from: u8, to: u8) -> Option<Vec<u8>> {
        let mut parent = [u8::MAX; MAX_NODES];
        let mut seen = bit(from);
        let mut queue = alloc::collections::VecDeque::from([from]);
        while let Some(n) = queue.pop_front() {
            if n == to {
                let mut path = alloc::vec![to];
                let mut at = to;
                while at != from {
                    at = parent[usize::from(at)];
                    path.push(at);
                }
                path.reverse();
                return Some(path);
            }
            let mut next = self.after[usize::from(n)] & !seen;
            seen |= next;
            while next != 0 {
                let m = next.trailing_zeros() as u8;
                next &= next - 1;
                parent[usize::from(m)] = n;
                queue.push_back(m);
            }
        }
        None
    }

    /// Adds `prev → node` unless it closes a cycle.
    fn add_edge(&mut self, prev: &HeldLock, node: u8, at: Site) -> Result<(), Box<Violation>> {
        if self.after[usize::from(prev.node)] & bit(node) != 0 {
            return Ok(());
        }
        if let Some(path) = self.path(node, prev.node) {
            let opposite: Vec<String> = path.iter().map(|&n| self.name(n)).collect();
            let mut first_seen = String::new();
            for pair in path.windows(2) {
                if let Some(s) = self.seen.get(&(pair[0], pair[1])) {
                    let sep = if first_seen.is_empty() { "" } else { "; then " };
                    let _ = write!(
                        first_seen,
                        "{sep}`{}` taken at {} while holding `{}` (taken at {}) on {}",
                        self.name(pair[1]),
                        s.taken_at,
                        self.name(pair[0]),
                        s.held_at,
                        s.thread
                    );
                }
            }
            return Err(Box::new(Violation::Inversion {
                holding: self.name(prev.node),
                holding_at: prev.at.to_string(),
                taking: self.name(node),
                taking_at: at.to_string(),
                thread: thread_name(),
                opposite: opposite.join(" → "),
                first_seen,
            }));
        }
        self.after[usize::from(prev.node)] |= bit(node);
        self.seen.insert(
            (prev.node, node),
            Seen {
                held_at: prev.at,
                taken_at: at,
                thread: thread_name(),
            },
        );
        Ok(())
    }
}

/// The graph node of `class`/`subclass`, numbered on first sight.
fn node_of(class: &'static LockClass, subclass: u8) -> Result<u8, Box<Violation>> {
    if subclass >= crate::class::MAX_SUBCLASSES {
        return Err(Box::new(Violation::BadSubclass {
            class: class.name(),
            subclass,
            max: crate::class::MAX_SUBCLASSES - 1,
        }));
    }
    let n = class.node(subclass);
    if n != 0 {
        return Ok(n - 1);
    }
    let mut g = graph();
    let n = class.node(subclass);
    if n != 0 {
        return Ok(n - 1);
    }
    let node = g.nodes.len();
    if node >= MAX_NODES {
        return Err(Box::new(Violation::TooManyClasses {
            class: class.name(),
        }));
    }
    g.nodes.push(Node { class, subclass });
    // node < MAX_NODES = 128, so node + 1 fits a u8.
    class.set_node(subclass, node as u8 + 1);
    Ok(node as u8)
}

fn fail(v: Box<Violation>) {
    if !std::thread::panicking() {
        panic!("{v}");
    }
}

pub(super) fn acquire(
    class: &'static LockClass,
    subclass: u8,
    instance: usize,
    at: Site,
    trylock: bool,
) {
    let node = match node_of(class, subclass) {
        Ok(n) => n,
        Err(v) => return fail(v),
    };
    // A thread being torn down (thread-locals gone) is not checked.
    let r = STATE.try_with(|st| {
        let mut st = st.borrow_mut();
        let ThreadState { held, known } = &mut *st;
        if !trylock {
            if let Some(h) = held
                .iter()
                .find(|h| h.node == node && instance != 0 && h.instance == instance)
            {
                let g = graph();
                return Err(Box::new(Violation::Recursive {
                    class: g.name(node),
                    at: at.to_string(),
                    held_at: h.at.to_string(),
                }));
            }
            // Another lock of this very class and subclass adds no order.
            let unknown = |h: &HeldLock, known: &[u128; MAX_NODES]| {
                h.node != node && known[usize::from(h.node)] & bit(node) == 0
            };
            if held.iter().any(|h| unknown(h, known)) {
                let mut g = graph();
                for h in held.iter() {
                    if unknown(h, known) {
                        g.add_edge(h, node, at)?;
                        known[usize::from(h.node)] |= bit(node);
                    }
                }
            }
        }
        held.push(HeldLock { node, instance, at });
        Ok(())
    });
    if let Ok(Err(v)) = r {
        fail(v);
    }
}

pub(super) fn release(class: &'static LockClass, subclass: u8, instance: usize, at: Site) {
    let node = class.node(subclass).checked_sub(1);
    let r = STATE.try_with(|st| {
        let mut st = st.borrow_mut();
        let held = &st.held;
        // This very lock if known, else the innermost of its class.
        let pos = node.and_then(|n| {
            held.iter()
                .rposition(|h| h.node == n && h.instance == instance)
                .or_else(|| held.iter().rposition(|h| h.node == n))
        });
        match pos {
            Some(i) => {
                st.held.remove(i);
                Ok(())
            }
            None => Err(Box::new(Violation::BadUnlock {
                class: match subclass {
                    0 => class.name().to_string(),
                    s => alloc::format!("{}/{s}", class.name()),
                },
                at: at.to_string(),
            })),
        }
    });
    if let Ok(Err(v)) = r {
        fail(v);
    }
}

pub(super) fn held() -> Vec<(&'static str, u8)> {
    let nodes: Vec<u8> = STATE
        .try_with(|st| st.borrow().held.iter().map(|h| h.node).collect())
        .unwrap_or_default();
    let g = graph();
    nodes
        .into_iter()
        .filter_map(|n| g.nodes.get(usize::from(n)))
        .map(|n| (n.class.name(), n.subclass))
        .collect()
}

pub(super) fn order_seen(before: &'static LockClass, after: &'static LockClass) -> bool {
    let g = graph();
    let subs = 0..crate::class::MAX_SUBCLASSES;
    subs.clone()
        .filter_map(|s| before.node(s).checked_sub(1))
        .any(|b| {
            subs.clone()
                .filter_map(|s| after.node(s).checked_sub(1))
                .any(|a| b != a && g.path(b, a).is_some())
        })
}

pub(super) fn orders() -> Vec<(String, String, String)> {
    let g = graph();
    g.seen
        .iter()
        .map(|(&(a, b), s)| (g.name(a), g.name(b), s.taken_at.to_string()))
        .collect()
}
