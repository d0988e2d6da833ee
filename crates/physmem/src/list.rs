//! An intrusive doubly-linked list of frames through `Page::lru`
//! (`struct list_head` on `page->lru`).
//!
//! The seed's `pgd_list` is exactly this: every pgd's page linked through its
//! `lru` field, so the list costs no allocation and a pgd can be unlinked in
//! O(1) by its destructor. The list itself holds no lock: its owner keeps the
//! `FrameList` inside the lock that protects it (for `pgd_list`, `pgd_lock`),
//! so `&mut FrameList` is proof that the lock is held.

use crate::addr::Frame;
use crate::page::{PageTable, NIL, PG_LRU};
use core::sync::atomic::Ordering::{Acquire, Relaxed, Release};

/// Why a list operation was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ListError {
    /// The frame is outside RAM.
    #[error("{0} is outside RAM")]
    NoSuchFrame(Frame),
    /// `list_add` of a frame already on a list.
    #[error("{0} is already on a list")]
    AlreadyLinked(Frame),
    /// `list_del` of a frame that is not on a list.
    #[error("{0} is not on a list")]
    NotLinked(Frame),
}

/// The head of an intrusive frame list.
#[derive(Debug)]
pub struct FrameList {
    head: u64,
    len: usize,
}

impl Default for FrameList {
    fn default() -> Self {
        Self::new()
    }
}

impl FrameList {
    /// `LIST_HEAD(name)`.
    pub const fn new() -> Self {
        FrameList { head: NIL, len: 0 }
    }

    /// Number of frames on the list.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True if the list is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// `list_add`: links `frame` at the head.
    pub fn add(&mut self, pages: &PageTable, frame: Frame) -> Result<(), ListError> {
        let p = pages.get(frame).ok_or(ListError::NoSuchFrame(frame))?;
        if p.flags.fetch_or(PG_LRU, Acquire) & PG_LRU != 0 {
            return Err(ListError::AlreadyLinked(frame));
        }
        p.lru_prev.store(NIL, Relaxed);
        p.lru_next.store(self.head, Relaxed);
        if let Some(h) = pages.get(Frame::from_pfn(self.head)) {
            h.lru_prev.store(frame.pfn(), Relaxed);
        }
        self.head = frame.pfn();
        self.len += 1;
        Ok(())
    }

    /// `list_del`: unlinks `frame`.
    pub fn del(&mut self, pages: &PageTable, frame: Frame) -> Result<(), ListError> {
        let p = pages.get(frame).ok_or(ListError::NoSuchFrame(frame))?;
        if p.flags.load(Acquire) & PG_LRU == 0 {
            return Err(ListError::NotLinked(frame));
        }
        let next = p.lru_next.load(Relaxed);
        let prev = p.lru_prev.load(Relaxed);
        match pages.get(Frame::from_pfn(prev)) {
            Some(pp) => pp.lru_next.store(next, Relaxed),
            None => self.head = next,
        }
        if let Some(np) = pages.get(Frame::from_pfn(next)) {
            np.lru_prev.store(prev, Relaxed);
        }
        p.lru_next.store(NIL, Relaxed);
        p.lru_prev.store(NIL, Relaxed);
        p.flags.fetch_and(!PG_LRU, Release);
        self.len -= 1;
        Ok(())
    }

    /// Removes and returns the head, if any.
    pub fn pop(&mut self, pages: &PageTable) -> Option<Frame> {
        let f = Frame::from_pfn(self.head);
        pages.get(f)?;
        self.del(pages, f).ok()?;
        Some(f)
    }

    /// `list_for_each_entry`: the frames from head to tail.
    pub fn iter<'a>(&self, pages: &'a PageTable) -> FrameListIter<'a> {
        FrameListIter {
            pages,
            next: self.head,
        }
    }
}

/// Iterator over a [`FrameList`].
pub struct FrameListIter<'a> {
    pages: &'a PageTable,
    next: u64,
}

impl Iterator for FrameListIter<'_> {
    type Item = Frame;
    fn next(&mut self) -> Option<Frame> {
        let f = Frame::from_pfn(self.next);
        let p = self.pages.get(f)?;
        self.next = p.lru_next.load(Relaxed);
        Some(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    #[test]
    fn add_del_iter() {
        let pages = PageTable::new(16);
        let mut l = FrameList::new();
        for i in [3, 5, 7] {
            l.add(&pages, Frame::from_pfn(i)).unwrap();
        }
        assert_eq!(
            l.add(&pages, Frame::from_pfn(5)),
            Err(ListError::AlreadyLinked(Frame::from_pfn(5)))
        );
        let v: Vec<u64> = l.iter(&pages).map(|f| f.pfn()).collect();
        assert_eq!(v, [7, 5, 3]);
        l.del(&pages, Frame::from_pfn(5)).unwrap();
        l.del(&pages, Frame::from_pfn(7)).unwrap();
        assert_eq!(
            l.del(&pages, Frame::from_pfn(7)),
            Err(ListError::NotLinked(Frame::from_pfn(7)))
        );
        let v: Vec<u64> = l.iter(&pages).map(|f| f.pfn()).collect();
        assert_eq!(v, [3]);
        assert_eq!(l.pop(&pages), Some(Frame::from_pfn(3)));
        assert!(l.is_empty());
        assert_eq!(l.pop(&pages), None);
    }
}
