//! A memory-bounded LRU of file segments read from the grid, keyed by (cap, segment index).
//! Invariant: the sum of cached segment lengths never exceeds the bound after an insert.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

type Key = (String, u64);

pub struct SegCache {
    limit: usize,
    used: usize,
    tick: u64,
    map: HashMap<Key, (Arc<Vec<u8>>, u64)>,
    order: BTreeMap<u64, Key>,
}

impl SegCache {
    pub fn new(limit: usize) -> Self {
        SegCache {
            limit,
            used: 0,
            tick: 0,
            map: HashMap::new(),
            order: BTreeMap::new(),
        }
    }

    pub fn get(&mut self, cap: &str, seg: u64) -> Option<Arc<Vec<u8>>> {
        let key = (cap.to_string(), seg);
        let (data, t) = self.map.get_mut(&key)?;
        self.order.remove(t);
        self.tick += 1;
        *t = self.tick;
        self.order.insert(self.tick, key);
        Some(Arc::clone(data))
    }

    pub fn contains(&self, cap: &str, seg: u64) -> bool {
        self.map.contains_key(&(cap.to_string(), seg))
    }

    pub fn insert(&mut self, cap: &str, seg: u64, data: Arc<Vec<u8>>) {
        let key = (cap.to_string(), seg);
        if let Some((old, t)) = self.map.remove(&key) {
            self.order.remove(&t);
            self.used -= old.len();
        }
        if data.len() > self.limit {
            return;
        }
        while self.used + data.len() > self.limit {
            let Some((_, k)) = self.order.pop_first() else {
                break;
            };
            if let Some((d, _)) = self.map.remove(&k) {
                self.used -= d.len();
            }
        }
        self.tick += 1;
        self.used += data.len();
        self.order.insert(self.tick, key.clone());
        self.map.insert(key, (data, self.tick));
    }

    pub fn used(&self) -> usize {
        self.used
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
