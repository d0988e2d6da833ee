//! Simulated RAM for `loom` models (`--cfg loom`).
//!
//! Same API as the mmap-backed [`Ram`], built for exhaustive interleaving
//! search instead of speed: frames are allocated lazily (a model boots a
//! whole kernel on every iteration), and only the words a model *watches*
//! — the page offsets of the entries whose races it studies, such as the
//! pgd entry of the large page `change_page_attr` converts — are `loom`
//! atomics, i.e. scheduling points where loom may switch threads. Every
//! other word is a plain atomic that executes without a switch. A model
//! thus explores every interleaving of the accesses that matter (and of the
//! locks) without drowning in the 256-entry copies around them.
//!
//! Host pointers are fake (never dereferenced): `ptr_of` maps a physical
//! address into a fixed, page-aligned window so that object caches can key
//! their page maps by it, as they do in the kernel.

use crate::addr::PhysAddr;
use crate::mem::{MemError, PhysMem};
use core::ptr::NonNull;
use std::boxed::Box;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Smallest RAM the simulator accepts (16 MiB).
pub const MIN_RAM: u64 = 16 << 20;
/// Largest RAM the simulator accepts (4 GiB).
pub const MAX_RAM: u64 = 4 << 30;
/// Where the fake host mapping of RAM starts.
const FAKE_BASE: usize = 0x1000_0000_0000;

/// Why RAM could not be created.
#[derive(Debug, thiserror::Error)]
pub enum RamError {
    /// The size is outside `MIN_RAM..=MAX_RAM` or not a multiple of 4 MiB.
    #[error("RAM size {0} bytes is not allowed")]
    BadSize(u64),
}

type Frame = Box<[AtomicU64; 512]>;

/// Lazily allocated simulated RAM with loom-watched words.
pub struct Ram {
    len: u64,
    /// Plain words, by pfn. Boxes are never removed before `Ram` drops, so
    /// references into them stay valid while `&self` lives.
    frames: Mutex<BTreeMap<u64, Frame>>,
    /// Byte offsets within a page (multiples of 8) that are watched.
    watched: Mutex<BTreeSet<u64>>,
    /// loom atomics for watched words, by word address. A loom mutex, so
    /// that an atomic created lazily by one model thread happens-before
    /// another thread's first access to it.
    loom_words: loom::sync::Mutex<BTreeMap<u64, std::sync::Arc<loom::sync::atomic::AtomicU64>>>,
}

impl Ram {
    /// `size` bytes of zeroed RAM.
    pub fn new(size: u64) -> Result<Self, RamError> {
        if !(MIN_RAM..=MAX_RAM).contains(&size) || !size.is_multiple_of(4 << 20) {
            return Err(RamError::BadSize(size));
        }
        Ok(Ram {
            len: size,
            frames: Mutex::new(BTreeMap::new()),
            watched: Mutex::new(BTreeSet::new()),
            loom_words: loom::sync::Mutex::new(BTreeMap::new()),
        })
    }

    /// Makes the word at `page_offset` of every page a loom scheduling point.
    pub fn watch(&self, page_offset: u64) {
        if let Ok(mut w) = self.watched.lock() {
            w.insert(page_offset & 0xff8);
        }
    }

    /// Fake host address of the first byte of RAM.
    pub fn host_base(&self) -> NonNull<u8> {
        NonNull::new(core::ptr::without_provenance_mut(FAKE_BASE)).unwrap_or(NonNull::dangling())
    }

    /// `__va` into the fake window.
    pub fn ptr_of(&self, pa: PhysAddr) -> Option<NonNull<u8>> {
        if pa.as_u64() >= self.len {
            return None;
        }
        NonNull::new(core::ptr::without_provenance_mut(
            FAKE_BASE + pa.as_u64() as usize,
        ))
    }

    /// `__pa` from the fake window.
    pub fn pa_of(&self, p: NonNull<u8>) -> Option<PhysAddr> {
        let off = (p.as_ptr() as usize).checked_sub(FAKE_BASE)? as u64;
        (off < self.len).then_some(PhysAddr::new(off))
    }

    fn plain(&self, word: u64) -> Result<&AtomicU64, MemError> {
        let pfn = word >> 12;
        let mut frames = self
            .frames
            .lock()
            .map_err(|_| MemError::OutOfRange(PhysAddr::new(word)))?;
        let f = frames
            .entry(pfn)
            .or_insert_with(|| Box::new(core::array::from_fn(|_| AtomicU64::new(0))));
        let p: *const AtomicU64 = &f[((word & 0xfff) / 8) as usize];
        // SAFETY: frames are boxed and never removed while `self` lives,
        // so the element outlives the lock guard and is valid for `&self`.
        Ok(unsafe { &*p })
    }

    fn watched_word(&self, word: u64) -> Option<std::sync::Arc<loom::sync::atomic::AtomicU64>> {
        let watched = self.watched.lock().ok()?.contains(&(word & 0xfff));
        if !watched {
            return None;
        }
        let mut m = self.loom_words.lock().ok()?;
        if let Some(a) = m.get(&word) {
            return Some(a.clone());
        }
        let init = self.plain(word).ok()?.load(Ordering::SeqCst);
        let a = std::sync::Arc::new(loom::sync::atomic::AtomicU64::new(init));
        m.insert(word, a.clone());
        Some(a)
    }

    fn check(&self, pa: PhysAddr, width: u64) -> Result<u64, MemError> {
        if !pa.is_aligned(width) {
            return Err(MemError::Misaligned(pa));
        }
        match pa.as_u64().checked_add(width) {
            Some(end) if end <= self.len => Ok(pa.as_u64() & !7),
            _ => Err(MemError::OutOfRange(pa)),
        }
    }

    fn load_word(&self, word: u64) -> Result<u64, MemError> {
        match self.watched_word(word) {
            Some(a) => Ok(a.load(Ordering::Acquire)),
            None => Ok(self.plain(word)?.load(Ordering::Acquire)),
        }
    }

    fn update_word(&self, word: u64, f: impl Fn(u64) -> u64) -> Result<(), MemError> {
        match self.watched_word(word) {
            Some(a) => {
                let mut cur = a.load(Ordering::Relaxed);
                while let Err(v) =
                    a.compare_exchange(cur, f(cur), Ordering::AcqRel, Ordering::Relaxed)
                {
                    cur = v;
                }
            }
            None => {
                let p = self.plain(word)?;
                let _ = p.fetch_update(Ordering::AcqRel, Ordering::Relaxed, |v| Some(f(v)));
            }
        }
        Ok(())
    }
}

impl PhysMem for Ram {
    fn size(&self) -> u64 {
        self.len
    }
    fn load_u32(&self, pa: PhysAddr) -> Result<u32, MemError> {
        let w = self.check(pa, 4)?;
        Ok((self.load_word(w)? >> ((pa.as_u64() & 4) * 8)) as u32)
    }
    fn load_u64(&self, pa: PhysAddr) -> Result<u64, MemError> {
        let w = self.check(pa, 8)?;
        self.load_word(w)
    }
    fn store_u32(&self, pa: PhysAddr, v: u32) -> Result<(), MemError> {
        let w = self.check(pa, 4)?;
        let shift = (pa.as_u64() & 4) * 8;
        let mask = 0xffff_ffffu64 << shift;
        self.update_word(w, |old| (old & !mask) | ((v as u64) << shift))
    }
    fn store_u64(&self, pa: PhysAddr, v: u64) -> Result<(), MemError> {
        let w = self.check(pa, 8)?;
        self.update_word(w, |_| v)
    }
}

impl crate::mem::DirectMap for Ram {
    fn ptr_of(&self, pa: PhysAddr) -> Option<NonNull<u8>> {
        Ram::ptr_of(self, pa)
    }
    fn pa_of(&self, p: NonNull<u8>) -> Option<PhysAddr> {
        Ram::pa_of(self, p)
    }
}
