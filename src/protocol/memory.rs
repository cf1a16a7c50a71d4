//! An in-memory [`StorageBackend`] with Tahoe 1.20's semantics, for tests and as a reference
//! model for the on-disk store.
//!
//! Semantics mirrored from `storage/server.py`, `immutable.py` and `mutable.py`:
//! - immutable uploads are bounded by their allocated size; rewriting bytes with different
//!   values is a conflict; a share completes when `[0, size)` is fully written;
//! - `already_have` lists every complete share of the SI; shares in progress are in neither set;
//!   allocation is refused (share omitted) when free space is below `allocated_size`;
//! - read-test-write checks the write enabler against any existing share, evaluates equality
//!   tests (a missing share reads as empty), reads pre-write data of all shares, then applies
//!   writes; `new_length = 0` deletes a share, a smaller length truncates, a larger one is
//!   ignored; a share listed in the vectors is created even without writes;
//! - leases are only counted (`lease_count`), enough to observe `add_lease`.
//!
//! Invariant: the data lock is never held across anything but memory operations.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;

use super::messages::{
    AllocateResponse, ReadTestWriteRequest, ReadTestWriteResponse, RequiredRange, ShareNum,
    VersionInfo,
};
use super::server::{BackendError, ShareKind, ShareRead, StorageBackend, WriteOutcome};
use super::{LeaseSecrets, StorageIndex};

#[derive(Default)]
struct Upload {
    size: u64,
    data: Vec<u8>,
    /// Written half-open ranges, disjoint and sorted by start.
    written: BTreeMap<u64, u64>,
}

impl Upload {
    fn required(&self) -> Vec<RequiredRange> {
        let mut out = Vec::new();
        let mut pos = 0;
        for (&a, &b) in &self.written {
            if a > pos {
                out.push(RequiredRange { begin: pos, end: a });
            }
            pos = pos.max(b);
        }
        if pos < self.size {
            out.push(RequiredRange {
                begin: pos,
                end: self.size,
            });
        }
        out
    }

    fn mark(&mut self, a: u64, b: u64) {
        let (mut lo, mut hi) = (a, b);
        let overlapping: Vec<(u64, u64)> = self
            .written
            .range(..=b)
            .filter(|(_, &e)| e >= a)
            .map(|(&s, &e)| (s, e))
            .collect();
        for (s, e) in overlapping {
            self.written.remove(&s);
            lo = lo.min(s);
            hi = hi.max(e);
        }
        self.written.insert(lo, hi);
    }

    fn is_written(&self, pos: u64) -> bool {
        self.written
            .range(..=pos)
            .next_back()
            .is_some_and(|(_, &e)| pos < e)
    }
}

/// A mutable slot: the write enabler and the shares.
type Slot = (Vec<u8>, BTreeMap<ShareNum, Vec<u8>>);

#[derive(Default)]
struct State {
    immutable: HashMap<StorageIndex, BTreeMap<ShareNum, Vec<u8>>>,
    uploads: HashMap<(StorageIndex, ShareNum), Upload>,
    mutable: HashMap<StorageIndex, Slot>,
    leases: HashMap<StorageIndex, usize>,
    corruption: Vec<(ShareKind, StorageIndex, ShareNum, String)>,
    used: u64,
}

/// The in-memory backend.
pub struct MemoryBackend {
    capacity: u64,
    state: Mutex<State>,
}

impl std::fmt::Debug for MemoryBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryBackend")
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

fn poisoned<T>(_: T) -> BackendError {
    BackendError::Internal("state lock poisoned".into())
}

fn slice(data: &[u8], offset: u64, length: u64) -> Vec<u8> {
    let len = data.len() as u64;
    let a = offset.min(len) as usize;
    let b = offset.saturating_add(length).min(len) as usize;
    data.get(a..b).map(<[u8]>::to_vec).unwrap_or_default()
}

impl MemoryBackend {
    /// A backend with `capacity` bytes of space.
    pub fn new(capacity: u64) -> Self {
        MemoryBackend {
            capacity,
            state: Mutex::new(State::default()),
        }
    }

    /// Leases added or renewed on `si` so far (allocation, writes and `add_lease`).
    pub fn lease_count(&self, si: &StorageIndex) -> usize {
        self.state
            .lock()
            .map(|s| s.leases.get(si).copied().unwrap_or(0))
            .unwrap_or(0)
    }

    /// Corruption advisories received: (kind, si, shnum, reason).
    pub fn advisories(&self) -> Vec<(ShareKind, StorageIndex, ShareNum, String)> {
        self.state
            .lock()
            .map(|s| s.corruption.clone())
            .unwrap_or_default()
    }
}

impl StorageBackend for MemoryBackend {
    fn version(&self) -> Result<VersionInfo, BackendError> {
        let s = self.state.lock().map_err(poisoned)?;
        let free = self.capacity.saturating_sub(s.used);
        Ok(VersionInfo {
            maximum_immutable_share_size: free,
            maximum_mutable_share_size: 69_105 * 1_000_000_000_000,
            available_space: free,
            application_version: b"lafs/0.1.0".to_vec(),
        })
    }

    fn allocate_buckets(
        &self,
        si: &StorageIndex,
        _lease: &LeaseSecrets,
        share_numbers: &BTreeSet<ShareNum>,
        allocated_size: u64,
    ) -> Result<AllocateResponse, BackendError> {
        let mut s = self.state.lock().map_err(poisoned)?;
        let already_have: BTreeSet<ShareNum> = s
            .immutable
            .get(si)
            .map(|m| m.keys().copied().collect())
            .unwrap_or_default();
        let mut allocated = BTreeSet::new();
        for &n in share_numbers {
            if already_have.contains(&n) || s.uploads.contains_key(&(*si, n)) {
                continue;
            }
            if self.capacity.saturating_sub(s.used) < allocated_size {
                continue;
            }
            s.used += allocated_size;
            s.uploads.insert(
                (*si, n),
                Upload {
                    size: allocated_size,
                    ..Upload::default()
                },
            );
            allocated.insert(n);
        }
        if !already_have.is_empty() || !allocated.is_empty() {
            *s.leases.entry(*si).or_default() += 1;
        }
        Ok(AllocateResponse {
            already_have,
            allocated,
        })
    }

    fn write(
        &self,
        si: &StorageIndex,
        shnum: ShareNum,
        offset: u64,
        data: &[u8],
    ) -> Result<WriteOutcome, BackendError> {
        let mut s = self.state.lock().map_err(poisoned)?;
        let up = s
            .uploads
            .get_mut(&(*si, shnum))
            .ok_or(BackendError::NotFound)?;
        let end = offset
            .checked_add(data.len() as u64)
            .ok_or(BackendError::OutOfBounds)?;
        if end > up.size {
            return Err(BackendError::OutOfBounds);
        }
        // Conflict check before any byte changes, so a refused write has no effect.
        for (i, &b) in data.iter().enumerate() {
            let pos = offset + i as u64;
            if up.is_written(pos) && up.data.get(pos as usize) != Some(&b) {
                return Err(BackendError::Conflict);
            }
        }
        if up.data.len() < end as usize {
            up.data.resize(end as usize, 0);
        }
        if let Some(dst) = up.data.get_mut(offset as usize..end as usize) {
            dst.copy_from_slice(data);
        }
        if end > offset {
            up.mark(offset, end);
        }
        let required = up.required();
        let complete = required.is_empty();
        if complete {
            if let Some(mut up) = s.uploads.remove(&(*si, shnum)) {
                up.data.resize(up.size as usize, 0);
                s.immutable.entry(*si).or_default().insert(shnum, up.data);
            }
        }
        Ok(WriteOutcome { required, complete })
    }

    fn abort(&self, si: &StorageIndex, shnum: ShareNum) -> Result<(), BackendError> {
        let mut s = self.state.lock().map_err(poisoned)?;
        let up = s
            .uploads
            .remove(&(*si, shnum))
            .ok_or(BackendError::NotFound)?;
        s.used = s.used.saturating_sub(up.size);
        Ok(())
    }

    fn list_immutable(&self, si: &StorageIndex) -> Result<BTreeSet<ShareNum>, BackendError> {
        let s = self.state.lock().map_err(poisoned)?;
        Ok(s.immutable
            .get(si)
            .map(|m| m.keys().copied().collect())
            .unwrap_or_default())
    }

    fn read_immutable(
        &self,
        si: &StorageIndex,
        shnum: ShareNum,
        offset: u64,
        length: u64,
    ) -> Result<ShareRead, BackendError> {
        let s = self.state.lock().map_err(poisoned)?;
        let data = s
            .immutable
            .get(si)
            .and_then(|m| m.get(&shnum))
            .ok_or(BackendError::NotFound)?;
        Ok(ShareRead {
            share_length: data.len() as u64,
            data: slice(data, offset, length),
        })
    }

    fn advise_corrupt(
        &self,
        kind: ShareKind,
        si: &StorageIndex,
        shnum: ShareNum,
        reason: &str,
    ) -> Result<(), BackendError> {
        let mut s = self.state.lock().map_err(poisoned)?;
        s.corruption.push((kind, *si, shnum, reason.to_string()));
        Ok(())
    }

    fn read_test_write(
        &self,
        si: &StorageIndex,
        write_enabler: &[u8],
        _lease: &LeaseSecrets,
        request: &ReadTestWriteRequest,
    ) -> Result<ReadTestWriteResponse, BackendError> {
        let mut s = self.state.lock().map_err(poisoned)?;
        let empty = BTreeMap::new();
        let (stored_we, shares) = match s.mutable.get(si) {
            Some((we, shares)) => (Some(we.as_slice()), shares),
            None => (None, &empty),
        };
        if let Some(we) = stored_we {
            if !shares.is_empty() && we != write_enabler {
                return Err(BackendError::BadWriteEnabler);
            }
        }
        let success = request.test_write_vectors.iter().all(|(n, twv)| {
            let data = shares.get(n).map(Vec::as_slice).unwrap_or_default();
            twv.test
                .iter()
                .all(|t| slice(data, t.offset, t.size) == t.specimen)
        });
        let data = shares
            .iter()
            .map(|(n, d)| {
                let reads = request
                    .read_vector
                    .iter()
                    .map(|r| slice(d, r.offset, r.size))
                    .collect();
                (*n, reads)
            })
            .collect();
        if success && !request.test_write_vectors.is_empty() {
            let entry = s
                .mutable
                .entry(*si)
                .or_insert_with(|| (write_enabler.to_vec(), BTreeMap::new()));
            if entry.1.is_empty() {
                entry.0 = write_enabler.to_vec();
            }
            for (n, twv) in &request.test_write_vectors {
                if twv.new_length == Some(0) {
                    entry.1.remove(n);
                    continue;
                }
                let share = entry.1.entry(*n).or_default();
                for w in &twv.write {
                    let end = w
                        .offset
                        .checked_add(w.data.len() as u64)
                        .filter(|e| *e <= 1 << 40)
                        .ok_or(BackendError::OutOfBounds)?;
                    if share.len() < end as usize {
                        share.resize(end as usize, 0);
                    }
                    if let Some(dst) = share.get_mut(w.offset as usize..end as usize) {
                        dst.copy_from_slice(&w.data);
                    }
                }
                if let Some(l) = twv.new_length {
                    if l < share.len() as u64 {
                        share.truncate(l as usize);
                    }
                }
            }
            *s.leases.entry(*si).or_default() += 1;
        }
        Ok(ReadTestWriteResponse { success, data })
    }

    fn read_mutable(
        &self,
        si: &StorageIndex,
        shnum: ShareNum,
        offset: u64,
        length: u64,
    ) -> Result<ShareRead, BackendError> {
        let s = self.state.lock().map_err(poisoned)?;
        let data = s
            .mutable
            .get(si)
            .and_then(|(_, m)| m.get(&shnum))
            .ok_or(BackendError::NotFound)?;
        Ok(ShareRead {
            share_length: data.len() as u64,
            data: slice(data, offset, length),
        })
    }

    fn list_mutable(&self, si: &StorageIndex) -> Result<BTreeSet<ShareNum>, BackendError> {
        let s = self.state.lock().map_err(poisoned)?;
        Ok(s.mutable
            .get(si)
            .map(|(_, m)| m.keys().copied().collect())
            .unwrap_or_default())
    }

    fn add_lease(&self, si: &StorageIndex, _lease: &LeaseSecrets) -> Result<(), BackendError> {
        let mut s = self.state.lock().map_err(poisoned)?;
        let has_imm = s.immutable.get(si).is_some_and(|m| !m.is_empty());
        let has_mut = s.mutable.get(si).is_some_and(|(_, m)| !m.is_empty());
        if !has_imm && !has_mut {
            return Err(BackendError::NotFound);
        }
        *s.leases.entry(*si).or_default() += 1;
        Ok(())
    }
}
