//! The table's key index: open addressing with linear probing over
//! 16-byte slots, at most 7/8 full. A slot holds an integer key itself (a
//! string key's 64-bit hash, checked against the string on a match) and
//! the range of the table's rows that are that key's versions.
//!
//! Lookups for a batch run in two passes: every key's home slot is
//! computed and prefetched ahead of the probes, so the cache misses of a
//! table much larger than the caches overlap instead of queueing.

use std::hash::{BuildHasher, Hasher};

use crate::operators::features::hash::FastHash;

/// One slot; `len == 0` is empty.
#[derive(Clone, Copy, Default)]
#[repr(C)]
pub(super) struct Slot {
    /// The integer key, or the string key's hash.
    pub tag: u64,
    /// The key's first row.
    pub start: u32,
    /// Its rows (versions).
    pub len: u32,
}

/// Whether tags are integer keys (hashed to find their home) or hashes
/// already.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Tags {
    Int,
    Hash,
}

pub(super) struct Index {
    slots: Vec<Slot>,
    mask: usize,
    used: usize,
    tags: Tags,
    hasher: FastHash,
}

/// How far ahead of its probe a row's slot is prefetched.
pub(super) const PREFETCH_AHEAD: usize = 16;

impl Index {
    pub fn new(tags: Tags, keys: usize) -> Self {
        let capacity = (keys.max(4) * 8 / 7 + 1).next_power_of_two();
        Self {
            slots: vec![Slot::default(); capacity],
            mask: capacity - 1,
            used: 0,
            tags,
            hasher: FastHash::default(),
        }
    }

    /// The tag of an integer key.
    #[inline]
    pub fn int_tag(key: i64) -> u64 {
        key as u64
    }

    /// The tag of a string key: its hash.
    #[inline]
    pub fn text_tag(&self, key: &[u8]) -> u64 {
        let mut h = self.hasher.build_hasher();
        h.write(key);
        h.finish()
    }

    /// Where a tag's probe starts.
    #[inline]
    pub fn home(&self, tag: u64) -> usize {
        let h = match self.tags {
            Tags::Int => self.hasher.hash_one(tag),
            Tags::Hash => tag,
        };
        h as usize & self.mask
    }

    /// Hints the CPU to load `home`'s slot.
    #[inline]
    pub fn prefetch(&self, home: usize) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `home` is masked into the slots; a prefetch never faults.
        unsafe {
            use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
            _mm_prefetch(
                self.slots.as_ptr().add(home & self.mask) as *const i8,
                _MM_HINT_T0,
            );
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = home;
    }

    /// The slot holding `tag` (for which `same(slot)` holds), probing from
    /// `home`.
    #[inline]
    pub fn find(&self, tag: u64, home: usize, same: impl Fn(&Slot) -> bool) -> Option<&Slot> {
        let mut i = home;
        loop {
            let s = &self.slots[i];
            if s.len == 0 {
                return None;
            }
            if s.tag == tag && same(s) {
                return Some(s);
            }
            i = (i + 1) & self.mask;
        }
    }

    /// The slot of `tag`, inserting an empty one (`len` 0 until set) when
    /// absent; returns its position and whether it is new.
    pub fn entry(&mut self, tag: u64, same: impl Fn(&Slot) -> bool) -> (usize, bool) {
        if (self.used + 1) * 8 > self.slots.len() * 7 {
            self.grow();
        }
        let mut i = self.home(tag);
        loop {
            let s = &self.slots[i];
            if s.len == 0 {
                self.slots[i] = Slot {
                    tag,
                    start: 0,
                    len: u32::MAX,
                };
                self.used += 1;
                return (i, true);
            }
            if s.tag == tag && same(s) {
                return (i, false);
            }
            i = (i + 1) & self.mask;
        }
    }

    pub fn slot_mut(&mut self, at: usize) -> &mut Slot {
        &mut self.slots[at]
    }

    fn grow(&mut self) {
        let old = std::mem::take(&mut self.slots);
        self.slots = vec![Slot::default(); old.len() * 2];
        self.mask = self.slots.len() - 1;
        for s in old.into_iter().filter(|s| s.len != 0) {
            let mut i = self.home(s.tag);
            while self.slots[i].len != 0 {
                i = (i + 1) & self.mask;
            }
            self.slots[i] = s;
        }
    }

    /// Every used slot, mutably (to renumber rows after a build).
    pub fn used_slots_mut(&mut self) -> impl Iterator<Item = &mut Slot> {
        self.slots.iter_mut().filter(|s| s.len != 0)
    }

    pub fn keys(&self) -> usize {
        self.used
    }

    pub fn bytes(&self) -> usize {
        self.slots.len() * std::mem::size_of::<Slot>()
    }
}

const _: () = assert!(std::mem::size_of::<Slot>() == 16);
