//! The read cache of file segments fetched from the grid, keyed by (cap, segment index), in two
//! tiers: an LRU in memory and, below it, an LRU of files on local disk.
//!
//! - A segment enters the memory tier. When the memory tier is over its bound, its least
//!   recently used segments leave it. A segment that was used again while in memory (a second
//!   read, or the first read of a segment fetched by read-ahead and then read again), or that was
//!   fetched again after an earlier eviction, moves to the disk tier (written once: a segment
//!   already on disk is not written again). A segment used only once is dropped, and its key is
//!   remembered in a bounded "ghost" list: fetched again while remembered, it counts as reused
//!   (a 2Q-like policy). So a sequential read of a file larger than the memory tier does not
//!   write the whole file to local disk a second time, while a re-read working set still reaches
//!   the disk tier from its second pass on. When the disk tier is over its bound, its least
//!   recently used files are deleted.
//! - A hit in the disk tier reads the file and brings the segment back to the memory tier (the
//!   disk copy stays, so evicting it again costs nothing).
//! - Disk files live in `segs/` of the cache directory, named by a hash of the cap (caps are
//!   secrets and never appear in a file name) and the segment index. The directory is emptied
//!   when the cache is created: a new mount starts with an empty disk tier.
//!
//! Invariants: after every operation the memory tier holds at most `mem_limit` bytes and the
//! disk tier at most `disk_limit` bytes (a segment larger than a tier's bound is not kept in that
//! tier); the ghost list holds at most [`GHOSTS_MAX`] keys (as 64-bit hashes: a collision only
//! writes one segment to disk needlessly). A disk error never fails a read: the segment is simply
//! not cached on disk.

use crate::crypto::hash::tagged_hash;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::fs;
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::Arc;

type Key = (String, u64);

/// Keys of dropped segments remembered (8 bytes each, plus the set's overhead).
pub const GHOSTS_MAX: usize = 1 << 15;

/// A segment in the memory tier and how often it was used.
struct MemSeg {
    data: Arc<Vec<u8>>,
    /// Uses so far: 0 for a segment fetched ahead and not yet read, 1 after one read, 2 means
    /// it goes to disk when it leaves memory.
    uses: u8,
}

/// A bounded FIFO set of hashed keys of segments dropped after a single use.
#[derive(Default)]
struct Ghosts {
    set: HashSet<u64>,
    order: VecDeque<u64>,
}

impl Ghosts {
    fn id(key: &Key) -> u64 {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        key.hash(&mut h);
        h.finish()
    }

    fn remember(&mut self, key: &Key) {
        let id = Self::id(key);
        if self.set.insert(id) {
            self.order.push_back(id);
            while self.order.len() > GHOSTS_MAX {
                if let Some(old) = self.order.pop_front() {
                    self.set.remove(&old);
                }
            }
        }
    }

    /// Whether `key` was remembered (it is forgotten: the segment is back).
    fn take(&mut self, key: &Key) -> bool {
        // The FIFO keeps its stale copy of the id until it ages out: harmless, `set` decides.
        self.set.remove(&Self::id(key))
    }
}

/// One LRU tier's bookkeeping: key -> (bytes, tick) and tick -> key.
struct Lru<V> {
    used: usize,
    map: HashMap<Key, (V, usize, u64)>,
    order: BTreeMap<u64, Key>,
}

impl<V> Default for Lru<V> {
    fn default() -> Self {
        Lru {
            used: 0,
            map: HashMap::new(),
            order: BTreeMap::new(),
        }
    }
}

impl<V> Lru<V> {
    fn touch(&mut self, key: &Key, tick: u64) -> Option<&mut V> {
        let (v, _, t) = self.map.get_mut(key)?;
        self.order.remove(t);
        *t = tick;
        self.order.insert(tick, key.clone());
        Some(v)
    }

    fn remove(&mut self, key: &Key) -> Option<V> {
        let (v, len, t) = self.map.remove(key)?;
        self.order.remove(&t);
        self.used -= len;
        Some(v)
    }

    fn insert(&mut self, key: Key, v: V, len: usize, tick: u64) {
        self.remove(&key);
        self.used += len;
        self.order.insert(tick, key.clone());
        self.map.insert(key, (v, len, tick));
    }

    /// Removes and returns the least recently used entry.
    fn pop_oldest(&mut self) -> Option<(Key, V)> {
        let (_, k) = self.order.pop_first()?;
        let (v, len, _) = self.map.remove(&k)?;
        self.used -= len;
        Some((k, v))
    }
}

/// The disk tier: where its files are and the bound.
struct Disk {
    dir: PathBuf,
    limit: usize,
    lru: Lru<()>,
}

impl Disk {
    fn path(&self, key: &Key) -> PathBuf {
        let h = tagged_hash(b"lafs-segcache-v1", key.0.as_bytes());
        let mut name = String::with_capacity(48);
        for b in h.get(..16).unwrap_or(&h[..]) {
            name.push_str(&format!("{b:02x}"));
        }
        self.dir.join(format!("{name}-{}", key.1))
    }
}

pub struct SegCache {
    limit: usize,
    tick: u64,
    mem: Lru<MemSeg>,
    disk: Option<Disk>,
    ghosts: Ghosts,
}

impl SegCache {
    /// A memory-only cache of at most `limit` bytes.
    pub fn new(limit: usize) -> Self {
        SegCache {
            limit,
            tick: 0,
            mem: Lru::default(),
            disk: None,
            ghosts: Ghosts::default(),
        }
    }

    /// A cache of at most `mem_limit` bytes in memory and `disk_limit` bytes of files in
    /// `dir` (created, and emptied of an earlier mount's segments). Without a usable directory
    /// the cache is memory-only.
    pub fn with_disk(mem_limit: usize, dir: PathBuf, disk_limit: usize) -> Self {
        let mut c = SegCache::new(mem_limit);
        let _ = fs::remove_dir_all(&dir);
        if disk_limit > 0 && fs::create_dir_all(&dir).is_ok() {
            c.disk = Some(Disk {
                dir,
                limit: disk_limit,
                lru: Lru::default(),
            });
        }
        c
    }

    fn next_tick(&mut self) -> u64 {
        self.tick += 1;
        self.tick
    }

    pub fn get(&mut self, cap: &str, seg: u64) -> Option<Arc<Vec<u8>>> {
        let key = (cap.to_string(), seg);
        let tick = self.next_tick();
        if let Some(m) = self.mem.touch(&key, tick) {
            m.uses = m.uses.saturating_add(1);
            return Some(Arc::clone(&m.data));
        }
        let disk = self.disk.as_mut()?;
        disk.lru.touch(&key, tick)?;
        match fs::read(disk.path(&key)) {
            Ok(bytes) => {
                let data = Arc::new(bytes);
                // Already on disk: leaving memory again costs nothing.
                self.insert_mem(key, Arc::clone(&data), 2);
                Some(data)
            }
            Err(_) => {
                disk.lru.remove(&key);
                None
            }
        }
    }

    pub fn contains(&self, cap: &str, seg: u64) -> bool {
        let key = (cap.to_string(), seg);
        self.mem.map.contains_key(&key)
            || self
                .disk
                .as_ref()
                .is_some_and(|d| d.lru.map.contains_key(&key))
    }

    /// Caches bytes just read from the grid for a reader (replacing any older copy in either
    /// tier): this counts as one use.
    pub fn insert(&mut self, cap: &str, seg: u64, data: Arc<Vec<u8>>) {
        self.insert_used(cap, seg, data, 1);
    }

    /// Caches bytes fetched ahead of a reader (no use yet: its first read is not a reuse).
    pub fn insert_prefetched(&mut self, cap: &str, seg: u64, data: Arc<Vec<u8>>) {
        self.insert_used(cap, seg, data, 0);
    }

    fn insert_used(&mut self, cap: &str, seg: u64, data: Arc<Vec<u8>>, mut uses: u8) {
        let key = (cap.to_string(), seg);
        if let Some(disk) = self.disk.as_mut() {
            if disk.lru.remove(&key).is_some() {
                let _ = fs::remove_file(disk.path(&key));
                uses = 2;
            }
        }
        if self.ghosts.take(&key) {
            // Fetched again after it was dropped: a reused segment.
            uses = 2;
        }
        self.insert_mem(key, data, uses);
    }

    fn insert_mem(&mut self, key: Key, data: Arc<Vec<u8>>, uses: u8) {
        self.mem.remove(&key);
        if data.len() > self.limit {
            self.evict(key, &data, uses);
            return;
        }
        while self.mem.used + data.len() > self.limit {
            let Some((k, m)) = self.mem.pop_oldest() else {
                break;
            };
            self.evict(k, &m.data, m.uses);
        }
        let tick = self.next_tick();
        let len = data.len();
        self.mem.insert(key, MemSeg { data, uses }, len, tick);
    }

    /// A segment leaving memory: kept on disk (written unless already there) when it was
    /// reused, else dropped and remembered as a ghost.
    fn evict(&mut self, key: Key, data: &[u8], uses: u8) {
        let tick = self.next_tick();
        let Some(disk) = self.disk.as_mut() else {
            return;
        };
        if uses < 2 && !disk.lru.map.contains_key(&key) {
            self.ghosts.remember(&key);
            return;
        }
        if disk.lru.touch(&key, tick).is_some() || data.len() > disk.limit {
            return;
        }
        while disk.lru.used + data.len() > disk.limit {
            let Some((k, ())) = disk.lru.pop_oldest() else {
                break;
            };
            let _ = fs::remove_file(disk.path(&k));
        }
        if fs::write(disk.path(&key), data).is_ok() {
            disk.lru.insert(key, (), data.len(), tick);
        }
    }

    /// Bytes in memory.
    pub fn used(&self) -> usize {
        self.mem.used
    }

    /// Changes the disk tier's bound, deleting its least recently used files until it holds at
    /// most `limit` bytes. The mount gives the read cache what the write-back cache leaves of
    /// `cache-size`, so the bound moves as dirty files come and go.
    pub fn set_disk_limit(&mut self, limit: usize) {
        let Some(disk) = self.disk.as_mut() else {
            return;
        };
        disk.limit = limit;
        while disk.lru.used > disk.limit {
            let Some((k, ())) = disk.lru.pop_oldest() else {
                break;
            };
            let _ = fs::remove_file(disk.path(&k));
        }
    }

    /// Bytes on disk.
    pub fn disk_used(&self) -> usize {
        self.disk.as_ref().map_or(0, |d| d.lru.used)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn lru_bound_and_order() {
        let mut c = SegCache::new(10);
        c.insert("a", 0, Arc::new(vec![0; 4]));
        c.insert("a", 1, Arc::new(vec![0; 4]));
        assert!(c.get("a", 0).is_some()); // 0 is now most recent
        c.insert("a", 2, Arc::new(vec![0; 4])); // evicts 1
        assert!(c.contains("a", 0) && !c.contains("a", 1) && c.contains("a", 2));
        assert_eq!(c.used(), 8);
        c.insert("b", 0, Arc::new(vec![0; 11])); // larger than the bound: not cached
        assert!(!c.contains("b", 0));
    }

    #[test]
    fn lowering_the_disk_limit_deletes_the_oldest_files_and_raising_it_lets_them_in_again() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("segs");
        let mut c = SegCache::with_disk(4, dir.clone(), 12);
        for s in 0..4u8 {
            c.insert("cap", u64::from(s), Arc::new(vec![s; 4]));
            assert!(c.get("cap", u64::from(s)).is_some()); // reused: goes to disk on eviction
        }
        assert_eq!(c.disk_used(), 12); // 0, 1, 2 on disk, 3 in memory
        c.set_disk_limit(5);
        assert_eq!(c.disk_used(), 4);
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 1);
        assert!(!c.contains("cap", 0) && !c.contains("cap", 1) && c.contains("cap", 2));
        c.set_disk_limit(0);
        assert_eq!((c.disk_used(), fs::read_dir(&dir).unwrap().count()), (0, 0));
        // Nothing fits now: a reused segment leaving memory is not written.
        c.insert("cap", 9, Arc::new(vec![9; 4]));
        assert!(c.get("cap", 9).is_some());
        assert_eq!(c.disk_used(), 0);
        c.set_disk_limit(12);
        c.insert("cap", 10, Arc::new(vec![10; 4]));
        assert!(c.get("cap", 10).is_some());
        assert_eq!(c.disk_used(), 4); // 9 (reused) went to disk again
                                      // 3 left memory while the bound was 0: it was dropped, not written.
        assert!(c.get("cap", 3).is_none());
    }

    #[test]
    fn memory_evicts_to_disk_and_disk_evicts_oldest() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("segs");
        let mut c = SegCache::with_disk(8, dir.clone(), 12);
        for s in 0..3u8 {
            c.insert("cap", u64::from(s), Arc::new(vec![s; 4]));
            assert!(c.get("cap", u64::from(s)).is_some()); // a second use
        }
        // Memory holds 1 and 2; 0 (reused) went to disk.
        assert_eq!((c.used(), c.disk_used()), (8, 4));
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 1);
        // A disk hit comes back with its bytes (and pushes 1 to disk).
        assert_eq!(*c.get("cap", 0).unwrap(), vec![0u8; 4]);
        assert_eq!((c.used(), c.disk_used()), (8, 8));
        for s in 3..6u8 {
            c.insert("cap", u64::from(s), Arc::new(vec![s; 4]));
            assert!(c.get("cap", u64::from(s)).is_some());
        }
        // The disk bound holds: 3 files of 4 bytes at most, the oldest gone.
        assert!(c.disk_used() <= 12 && c.used() <= 8);
        assert_eq!(fs::read_dir(&dir).unwrap().count() * 4, c.disk_used());
        assert!(
            !c.contains("cap", 1),
            "1 was the least recently used on disk"
        );
        for s in [0u64, 2, 3, 4, 5] {
            assert!(c.contains("cap", s), "segment {s}");
        }
        // 5 from memory, 3 from disk.
        assert_eq!(*c.get("cap", 5).unwrap(), vec![5u8; 4]);
        assert_eq!(*c.get("cap", 3).unwrap(), vec![3u8; 4]);
        // No file name shows the cap.
        for e in fs::read_dir(&dir).unwrap() {
            assert!(!e.unwrap().file_name().to_string_lossy().contains("cap"));
        }
        // A new cache on the same directory starts empty.
        let c2 = SegCache::with_disk(8, dir.clone(), 12);
        assert_eq!(c2.disk_used(), 0);
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 0);
    }

    #[test]
    fn segments_used_once_are_not_written_to_disk_until_fetched_again() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("segs");
        let mut c = SegCache::with_disk(8, dir.clone(), 100);
        // A sequential pass: each segment read once (demand) or fetched ahead then read once.
        for s in 0..6u64 {
            if s % 2 == 0 {
                c.insert("cap", s, Arc::new(vec![s as u8; 4]));
            } else {
                c.insert_prefetched("cap", s, Arc::new(vec![s as u8; 4]));
                assert!(c.get("cap", s).is_some());
            }
        }
        assert_eq!((c.used(), c.disk_used()), (8, 0));
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 0);
        assert!(!c.contains("cap", 0));
        // A second pass: segments fetched again after being dropped are kept on disk when
        // they leave memory.
        for s in 0..6u64 {
            if c.get("cap", s).is_none() {
                c.insert("cap", s, Arc::new(vec![s as u8; 4]));
            }
        }
        assert_eq!(c.disk_used(), 16, "0..4 reached the disk tier");
        for s in 0..4u64 {
            assert_eq!(*c.get("cap", s).unwrap(), vec![s as u8; 4]);
        }
        assert_eq!(fs::read_dir(&dir).unwrap().count() * 4, c.disk_used());
    }

    #[test]
    fn ghost_list_is_bounded() {
        let mut g = Ghosts::default();
        for s in 0..(GHOSTS_MAX as u64 + 10) {
            g.remember(&("k".to_string(), s));
        }
        assert_eq!(g.set.len(), GHOSTS_MAX);
        assert!(!g.take(&("k".to_string(), 0)), "the oldest were forgotten");
        assert!(g.take(&("k".to_string(), GHOSTS_MAX as u64 + 9)));
        assert!(!g.take(&("k".to_string(), GHOSTS_MAX as u64 + 9)));
    }

    proptest! {
        /// Against a model: every segment still cached reads back its bytes, both tiers stay
        /// within their bounds, and the disk tier's bookkeeping matches the files on disk.
        #[test]
        fn two_tiers_match_model(ops in proptest::collection::vec((0u64..12, 1usize..9, any::<bool>()), 1..80)) {
            let tmp = tempfile::tempdir().unwrap();
            let dir = tmp.path().join("segs");
            let mut c = SegCache::with_disk(16, dir.clone(), 24);
            let mut model: HashMap<u64, Vec<u8>> = HashMap::new();
            for (i, (seg, len, read)) in ops.into_iter().enumerate() {
                if read {
                    if let Some(d) = c.get("k", seg) {
                        prop_assert_eq!(Some(&*d), model.get(&seg));
                    }
                } else {
                    let data = vec![i as u8; len];
                    model.insert(seg, data.clone());
                    c.insert("k", seg, Arc::new(data));
                }
                prop_assert!(c.used() <= 16 && c.disk_used() <= 24);
                let on_disk: usize = fs::read_dir(&dir)
                    .unwrap()
                    .map(|e| e.unwrap().metadata().unwrap().len() as usize)
                    .sum();
                prop_assert_eq!(on_disk, c.disk_used());
            }
        }
    }
}
