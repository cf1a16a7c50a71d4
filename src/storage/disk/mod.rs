//! The on-disk share store, in Tahoe 1.20's exact layout (digest §7):
//!
//! ```text
//! storage/shares/<si[:2]>/<si>/<shnum>            final shares, mutable and immutable
//! storage/shares/incoming/<si[:2]>/<si>/<shnum>   in-progress immutable uploads
//! storage/shares/incoming/lafs-mutable-tmp/…      lafs' temporary copies of mutable shares
//! storage/corruption-advisories/<utc-time>--<si>-<shnum>
//! ```
//! `incoming/` is wiped when the store opens (Tahoe does the same), so nothing there survives
//! a crash and nothing half-written is ever visible under `shares/<si[:2]>/`.
//!
//! Crash safety:
//! - An immutable share lives in `incoming/` until its last byte is written; it is then
//!   fsynced and renamed into place (atomic), and the bucket directory fsynced.
//! - A mutable test-and-write builds each new share version in a temporary copy under
//!   `incoming/` (same file system as `shares/`, which Tahoe's own upload rename already
//!   requires), applies the writes, truncation and lease there, fsyncs, and renames it over the
//!   old file. A crash leaves each share entirely old or entirely new. (A write touching several
//!   shares is atomic per share, not across shares; the mutable protocol tolerates that.)
//! - Lease updates outside a test-and-write are small in-place writes: the record is written
//!   before the count that makes it visible, so a torn update loses at most that lease.
//!
//! Concurrency: all operations take `&self`. Operations that change or inspect-then-change the
//! shares of one storage index hold that index's stripe lock; each upload has its own lock.
//! Lock order: upload → stripe → upload table.
//!
//! Limits against hostile clients: allocations are bounded by free space minus the reserve
//! minus outstanding allocations; upload writes are bounded by the allocated size; mutable
//! growth (including zero-filled holes) is bounded by free space; no buffer is sized by a
//! client-claimed length except the client's own data, already in memory.

mod fsutil;
mod gc;

#[cfg(test)]
mod tests;

pub use fsutil::{disk_stats, DiskStats};
pub use gc::{ExpirationMode, ExpirationPolicy, GcCursor, GcReport};

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::storage::container::immutable::{ImmutableShare, ImmutableVersion};
use crate::storage::container::lease::{expiration_field, LeaseRecord};
use crate::storage::container::mutable::{MutableShare, MutableVersion, FRESH_LEN};
use crate::storage::container::{detect_kind, ContainerError, ShareKind};
use crate::storage::{ct_eq, NodeId, ShareNum, StorageIndex, LEASE_DURATION_SECS};
use crate::util::base32;

/// Idle time after which an in-progress upload is aborted (Tahoe: 30 minutes).
pub const UPLOAD_TIMEOUT_SECS: u64 = 30 * 60;
const STRIPES: usize = 64;
const MUTABLE_TMP_DIR: &str = "lafs-mutable-tmp";

/// Errors of the share store. Each maps to one HTTP outcome (noted per variant).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No such share, bucket or in-progress upload (404).
    #[error("no such share or upload")]
    NotFound,
    /// A mutable share's write enabler differs from the presented one (401).
    #[error("bad write enabler")]
    BadWriteEnabler,
    /// The in-progress upload was allocated with a different upload secret (401).
    #[error("bad upload secret")]
    BadUploadSecret,
    /// An upload write differs from bytes already written there (409).
    #[error("conflicting write in {0:?}")]
    ConflictingWrite(Range<u64>),
    /// An upload write reaches past the allocated size.
    #[error("write of {len} bytes at {offset} exceeds the allocated size {allocated}")]
    OutOfBounds {
        offset: u64,
        len: u64,
        allocated: u64,
    },
    /// Abort of an upload that has already completed (405).
    #[error("share upload already complete")]
    AlreadyComplete,
    /// Not enough space outside the reserve.
    #[error("not enough space")]
    NoSpace,
    /// The share exists but is of the other kind (mutable vs immutable) or unrecognised.
    #[error("share {0} is not of the expected kind")]
    WrongShareType(ShareNum),
    #[error("share container: {0}")]
    Container(#[from] ContainerError),
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
}

/// Settings of a store.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// The node's `storage/` directory.
    pub storage_dir: PathBuf,
    /// This server's 20-byte node id (Foolscap TubID).
    pub nodeid: NodeId,
    /// Bytes to keep free (`[storage]reserved_space`).
    pub reserved_space: u64,
    /// `[storage]readonly`: available space is reported as 0, so nothing can be allocated.
    pub readonly: bool,
    /// `[storage]expire.*` settings.
    pub expiration: ExpirationPolicy,
}

impl StoreConfig {
    pub fn new(storage_dir: impl Into<PathBuf>, nodeid: NodeId) -> Self {
        StoreConfig {
            storage_dir: storage_dir.into(),
            nodeid,
            reserved_space: 0,
            readonly: false,
            expiration: ExpirationPolicy::default(),
        }
    }
}

/// Time source: the duration since the Unix epoch.
pub type Clock = Arc<dyn Fn() -> Duration + Send + Sync>;

/// Result of [`DiskStore::allocate_buckets`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Allocation {
    /// Every complete share the server holds for the index (not only the requested ones).
    pub already_have: BTreeSet<ShareNum>,
    /// Newly allocated uploads.
    pub allocated: BTreeSet<ShareNum>,
}

/// Result of an upload write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteOutcome {
    /// The write completed the share, which is now in place (HTTP 201).
    pub complete: bool,
    /// Ranges still to write, begin-inclusive, end-exclusive (empty when complete).
    pub required: Vec<Range<u64>>,
}

/// One equality test of a test-and-write: `data[offset..offset+size]` (truncated at the data
/// length; an absent share reads empty) must equal `specimen`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestVector {
    pub offset: u64,
    pub size: u64,
    pub specimen: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteVector {
    pub offset: u64,
    pub data: Vec<u8>,
}

/// Tests, writes and new length for one share.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TestWriteVectors {
    pub test: Vec<TestVector>,
    pub write: Vec<WriteVector>,
    /// `Some(0)` deletes the share; a smaller length truncates the data; `None` leaves it.
    pub new_length: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadVector {
    pub offset: u64,
    pub size: u64,
}

/// Result of [`DiskStore::read_test_write`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtwResult {
    pub success: bool,
    /// Pre-write data of every share that existed, per read vector entry.
    pub data: BTreeMap<ShareNum, Vec<Vec<u8>>>,
}

struct Upload {
    secret: Vec<u8>,
    max_size: u64,
    /// Written ranges, start → end, disjoint and non-adjacent.
    written: BTreeMap<u64, u64>,
    last_write: u64,
    share: ImmutableShare<File>,
    incoming: PathBuf,
    /// Set once completed or aborted; a writer holding a stale handle then sees `NotFound`.
    finished: bool,
}

type UploadKey = (StorageIndex, ShareNum);

/// The share store. See the module docs.
pub struct DiskStore {
    cfg: StoreConfig,
    shares_dir: PathBuf,
    incoming_dir: PathBuf,
    advisories_dir: PathBuf,
    uploads: Mutex<HashMap<UploadKey, Arc<Mutex<Upload>>>>,
    stripes: Vec<Mutex<()>>,
    clock: Clock,
    tmp_counter: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding a lock cannot leave our maps logically inconsistent (each update
    // is a single insert/remove), so a poisoned lock is still usable.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The storage index as Tahoe spells it in paths: 26 lowercase base32 characters.
pub fn si_b2a(si: &StorageIndex) -> String {
    base32::encode(si)
}

fn is_shnum_name(name: &str) -> Option<ShareNum> {
    // Tahoe's NUM_RE: ^[0-9]+$.
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    name.parse().ok()
}

impl DiskStore {
    /// Opens (creating directories as needed) a store using the system clock. Wipes
    /// `shares/incoming/`.
    pub fn open(cfg: StoreConfig) -> Result<Self, StoreError> {
        let clock: Clock = Arc::new(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
        });
        Self::open_with_clock(cfg, clock)
    }

    /// As [`DiskStore::open`] with an injected clock (tests).
    pub fn open_with_clock(cfg: StoreConfig, clock: Clock) -> Result<Self, StoreError> {
        let shares_dir = cfg.storage_dir.join("shares");
        let incoming_dir = shares_dir.join("incoming");
        let advisories_dir = cfg.storage_dir.join("corruption-advisories");
        fs::create_dir_all(&shares_dir)?;
        fs::create_dir_all(&advisories_dir)?;
        match fs::remove_dir_all(&incoming_dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
        fs::create_dir_all(incoming_dir.join(MUTABLE_TMP_DIR))?;
        Ok(DiskStore {
            cfg,
            shares_dir,
            incoming_dir,
            advisories_dir,
            uploads: Mutex::new(HashMap::new()),
            stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(),
            clock,
            tmp_counter: AtomicU64::new(0),
        })
    }

    pub fn config(&self) -> &StoreConfig {
        &self.cfg
    }

    pub fn nodeid(&self) -> &NodeId {
        &self.cfg.nodeid
    }

    fn now(&self) -> Duration {
        (self.clock)()
    }

    fn now_secs(&self) -> u64 {
        self.now().as_secs()
    }

    fn lease_expiration(&self) -> u32 {
        expiration_field(self.now_secs().saturating_add(LEASE_DURATION_SECS))
    }

    fn stripe(&self, si: &StorageIndex) -> MutexGuard<'_, ()> {
        lock(&self.stripes[usize::from(si[0]) % STRIPES])
    }

    fn bucket_dir(&self, si: &StorageIndex) -> PathBuf {
        let s = si_b2a(si);
        self.shares_dir.join(&s[..2]).join(&s)
    }

    fn incoming_path(&self, si: &StorageIndex, shnum: ShareNum) -> PathBuf {
        let s = si_b2a(si);
        self.incoming_dir
            .join(&s[..2])
            .join(&s)
            .join(shnum.to_string())
    }

    fn share_path(&self, si: &StorageIndex, shnum: ShareNum) -> PathBuf {
        self.bucket_dir(si).join(shnum.to_string())
    }

    /// Free space for shares: free-for-non-root minus the reserve (0 when read-only).
    pub fn available_space(&self) -> Result<u64, StoreError> {
        if self.cfg.readonly {
            return Ok(0);
        }
        Ok(disk_stats(&self.shares_dir, self.cfg.reserved_space)?.avail)
    }

    /// Full disk statistics of the share file system.
    pub fn disk_stats(&self) -> Result<DiskStats, StoreError> {
        Ok(disk_stats(&self.shares_dir, self.cfg.reserved_space)?)
    }

    /// Sum of the sizes of all in-progress allocations.
    ///
    /// Lock order in this store: an upload's own lock, then a stripe, then the `uploads` map
    /// (a completing write holds its upload and takes the stripe; a discard holds its upload and
    /// takes the map). So the map is never held while an upload is locked here: the handles are
    /// copied out first.
    pub fn allocated_size(&self) -> u64 {
        let handles: Vec<Arc<Mutex<Upload>>> = lock(&self.uploads).values().cloned().collect();
        handles
            .iter()
            .map(|u| lock(u).max_size)
            .fold(0u64, u64::saturating_add)
    }

    /// Share numbers present (numeric file names) in the bucket of `si`, mutable or immutable;
    /// empty for an unknown index. This is what both `…/shares` endpoints list.
    pub fn list_shares(&self, si: &StorageIndex) -> Result<BTreeSet<ShareNum>, StoreError> {
        let mut out = BTreeSet::new();
        let entries = match fs::read_dir(self.bucket_dir(si)) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(e.into()),
        };
        for entry in entries {
            if let Some(n) = entry?.file_name().to_str().and_then(is_shnum_name) {
                out.insert(n);
            }
        }
        Ok(out)
    }

    /// Allocates upload slots (Tahoe `allocate_buckets`, owner 0). Existing shares of `si` get
    /// their lease renewed (matching renew secret) or a new one added; new uploads get a lease
    /// at once. A share already complete, or being uploaded, is not allocated; nor is one for
    /// which the remaining space (free − reserve − outstanding allocations) is too small.
    pub fn allocate_buckets(
        &self,
        si: &StorageIndex,
        renew_secret: &[u8; 32],
        cancel_secret: &[u8; 32],
        sharenums: &BTreeSet<ShareNum>,
        allocated_size: u64,
        upload_secret: &[u8],
    ) -> Result<Allocation, StoreError> {
        self.expire_stale_uploads();
        let expiration = self.lease_expiration();
        // Before the stripe: `allocated_size` locks each upload, and a completing write holds
        // its upload while it takes the stripe (see the lock order at `allocated_size`).
        let mut remaining = self
            .available_space()?
            .saturating_sub(self.allocated_size());
        let _g = self.stripe(si);
        let already_have = self.list_shares(si)?;
        for &shnum in &already_have {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .open(self.share_path(si, shnum))?;
            let mut share = match ImmutableShare::open(file) {
                Err(ContainerError::UnknownImmutableVersion(_)) => {
                    return Err(StoreError::WrongShareType(shnum))
                }
                other => other?,
            };
            share.add_or_renew_lease(0, renew_secret, cancel_secret, expiration)?;
        }
        let mut allocated = BTreeSet::new();
        let mut uploads = lock(&self.uploads);
        for &shnum in sharenums {
            let incoming = self.incoming_path(si, shnum);
            if already_have.contains(&shnum)
                || uploads.contains_key(&(*si, shnum))
                || incoming.exists()
            {
                continue;
            }
            if remaining < allocated_size {
                continue;
            }
            if let Some(dir) = incoming.parent() {
                fs::create_dir_all(dir)?;
            }
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&incoming)?;
            let version = ImmutableVersion::V2;
            let lease = LeaseRecord::new(
                version.secret_storage(),
                0,
                renew_secret,
                cancel_secret,
                expiration,
                [0; 20],
            );
            let share = ImmutableShare::create(file, version, allocated_size, &lease)?;
            remaining -= allocated_size;
            uploads.insert(
                (*si, shnum),
                Arc::new(Mutex::new(Upload {
                    secret: upload_secret.to_vec(),
                    max_size: allocated_size,
                    written: BTreeMap::new(),
                    last_write: self.now_secs(),
                    share,
                    incoming,
                    finished: false,
                })),
            );
            allocated.insert(shnum);
        }
        Ok(Allocation {
            already_have,
            allocated,
        })
    }

    fn upload_handle(
        &self,
        si: &StorageIndex,
        shnum: ShareNum,
        secret: &[u8],
    ) -> Result<Arc<Mutex<Upload>>, StoreError> {
        let handle = lock(&self.uploads)
            .get(&(*si, shnum))
            .cloned()
            .ok_or(StoreError::NotFound)?;
        if !ct_eq(&lock(&handle).secret, secret) {
            return Err(StoreError::BadUploadSecret);
        }
        Ok(handle)
    }

    /// Writes bytes of an in-progress immutable share. Rewriting already-written bytes with
    /// the same data is allowed; different data is `ConflictingWrite`. When every byte of the
    /// allocation has been written, the share is moved into place atomically.
    pub fn write_immutable(
        &self,
        si: &StorageIndex,
        shnum: ShareNum,
        upload_secret: &[u8],
        offset: u64,
        data: &[u8],
    ) -> Result<WriteOutcome, StoreError> {
        let handle = self.upload_handle(si, shnum, upload_secret)?;
        let mut up = lock(&handle);
        if up.finished {
            return Err(StoreError::NotFound);
        }
        let len = data.len() as u64;
        let end = match offset.checked_add(len) {
            Some(e) if e <= up.max_size => e,
            _ => {
                return Err(StoreError::OutOfBounds {
                    offset,
                    len,
                    allocated: up.max_size,
                })
            }
        };
        // Compare against every already-written chunk overlapping [offset, end).
        for (s, e) in overlapping(&up.written, offset, end) {
            let existing = up.share.read(s, e - s)?;
            let start = (s - offset) as usize;
            let mine = data.get(start..start + existing.len());
            if mine != Some(existing.as_slice()) {
                return Err(StoreError::ConflictingWrite(s..e));
            }
        }
        up.share.write(offset, data)?;
        insert_range(&mut up.written, offset, end);
        up.last_write = self.now_secs();
        let written: u64 = up.written.iter().map(|(s, e)| e - s).sum();
        if written < up.max_size {
            return Ok(WriteOutcome {
                complete: false,
                required: required_ranges(&up.written, up.max_size),
            });
        }
        // Complete: make the bytes durable, then move into place atomically.
        up.share.store().sync_all()?;
        {
            let _g = self.stripe(si);
            let bucket = self.bucket_dir(si);
            fs::create_dir_all(&bucket)?;
            fs::rename(&up.incoming, self.share_path(si, shnum))?;
            fsutil::sync_dir(&bucket)?;
            if let Some(prefix) = bucket.parent() {
                fsutil::sync_dir(prefix)?;
            }
        }
        up.finished = true;
        let incoming = up.incoming.clone();
        drop(up);
        lock(&self.uploads).remove(&(*si, shnum));
        remove_incoming_parents(&incoming);
        Ok(WriteOutcome {
            complete: true,
            required: Vec::new(),
        })
    }

    /// Ranges of an in-progress upload still to be written.
    pub fn required_ranges(
        &self,
        si: &StorageIndex,
        shnum: ShareNum,
        upload_secret: &[u8],
    ) -> Result<Vec<Range<u64>>, StoreError> {
        let handle = self.upload_handle(si, shnum, upload_secret)?;
        let up = lock(&handle);
        Ok(required_ranges(&up.written, up.max_size))
    }

    /// Aborts an in-progress upload and deletes its partial share. `AlreadyComplete` if the
    /// share is complete, `NotFound` if it is unknown.
    pub fn abort_immutable(
        &self,
        si: &StorageIndex,
        shnum: ShareNum,
        upload_secret: &[u8],
    ) -> Result<(), StoreError> {
        let handle = match self.upload_handle(si, shnum, upload_secret) {
            Err(StoreError::NotFound) if self.share_path(si, shnum).exists() => {
                return Err(StoreError::AlreadyComplete)
            }
            other => other?,
        };
        let mut up = lock(&handle);
        if up.finished {
            return Err(StoreError::AlreadyComplete);
        }
        self.discard_upload(si, shnum, &mut up);
        Ok(())
    }

    fn discard_upload(&self, si: &StorageIndex, shnum: ShareNum, up: &mut Upload) {
        up.finished = true;
        let _ = fs::remove_file(&up.incoming);
        remove_incoming_parents(&up.incoming);
        lock(&self.uploads).remove(&(*si, shnum));
    }

    /// Aborts uploads without a write for [`UPLOAD_TIMEOUT_SECS`]. Called on every allocation;
    /// a server may also call it periodically.
    pub fn expire_stale_uploads(&self) {
        let now = self.now_secs();
        let all: Vec<(UploadKey, Arc<Mutex<Upload>>)> = lock(&self.uploads)
            .iter()
            .map(|(k, v)| (*k, v.clone()))
            .collect();
        for ((si, shnum), handle) in all {
            let mut up = lock(&handle);
            if !up.finished && now.saturating_sub(up.last_write) > UPLOAD_TIMEOUT_SECS {
                self.discard_upload(&si, shnum, &mut up);
            }
        }
    }

    fn open_immutable(
        &self,
        si: &StorageIndex,
        shnum: ShareNum,
    ) -> Result<ImmutableShare<File>, StoreError> {
        let file = open_existing(&self.share_path(si, shnum))?;
        match ImmutableShare::open(file) {
            Err(ContainerError::UnknownImmutableVersion(_)) => {
                Err(StoreError::WrongShareType(shnum))
            }
            other => Ok(other?),
        }
    }

    fn open_mutable(
        &self,
        path: &Path,
        shnum: ShareNum,
        write: bool,
    ) -> Result<MutableShare<File>, StoreError> {
        let file = if write {
            OpenOptions::new().read(true).write(true).open(path)
        } else {
            File::open(path)
        };
        let file = file.map_err(not_found)?;
        match MutableShare::open(file) {
            Err(ContainerError::UnknownMutableMagic) => Err(StoreError::WrongShareType(shnum)),
            other => Ok(other?),
        }
    }

    /// Length of a complete immutable share's data.
    pub fn immutable_share_len(
        &self,
        si: &StorageIndex,
        shnum: ShareNum,
    ) -> Result<u64, StoreError> {
        Ok(self.open_immutable(si, shnum)?.data_len())
    }

    /// Reads a complete immutable share, clamped to its length (empty past the end). The HTTP
    /// layer should bound `len` per response chunk.
    pub fn read_immutable(
        &self,
        si: &StorageIndex,
        shnum: ShareNum,
        offset: u64,
        len: u64,
    ) -> Result<Vec<u8>, StoreError> {
        Ok(self.open_immutable(si, shnum)?.read(offset, len)?)
    }

    /// [`Self::immutable_share_len`] and [`Self::read_immutable`] from one open of the share
    /// file (the length and the bytes come from the same file, even if it is replaced
    /// meanwhile).
    pub fn read_immutable_with_len(
        &self,
        si: &StorageIndex,
        shnum: ShareNum,
        offset: u64,
        len: u64,
    ) -> Result<(u64, Vec<u8>), StoreError> {
        let share = self.open_immutable(si, shnum)?;
        Ok((share.data_len(), share.read(offset, len)?))
    }

    /// Data length of a mutable share.
    pub fn mutable_share_len(&self, si: &StorageIndex, shnum: ShareNum) -> Result<u64, StoreError> {
        Ok(self
            .open_mutable(&self.share_path(si, shnum), shnum, false)?
            .data_len())
    }

    /// [`Self::mutable_share_len`] and [`Self::read_mutable`] from one open of the share file.
    pub fn read_mutable_with_len(
        &self,
        si: &StorageIndex,
        shnum: ShareNum,
        offset: u64,
        len: u64,
    ) -> Result<(u64, Vec<u8>), StoreError> {
        let share = self.open_mutable(&self.share_path(si, shnum), shnum, false)?;
        Ok((share.data_len(), share.read(offset, len)?))
    }

    /// Reads a mutable share, clamped to its data length.
    pub fn read_mutable(
        &self,
        si: &StorageIndex,
        shnum: ShareNum,
        offset: u64,
        len: u64,
    ) -> Result<Vec<u8>, StoreError> {
        Ok(self
            .open_mutable(&self.share_path(si, shnum), shnum, false)?
            .read(offset, len)?)
    }

    /// Tahoe's `slot_testv_and_readv_and_writev` (digest §4.5), with lease renewal.
    ///
    /// 1. Every existing share of `si` must have this write enabler (`BadWriteEnabler`).
    /// 2. All tests are evaluated (equality; an absent share reads as empty).
    /// 3. Read vectors are evaluated over all existing shares, before any write.
    /// 4. If every test passed: per share, `new_length == Some(0)` deletes it (and an empty
    ///    bucket dir); otherwise it is created if absent, the writes applied in order (growing,
    ///    zero-filling holes), a smaller `new_length` truncates the data, and a lease (owner 1)
    ///    added or renewed.
    pub fn read_test_write(
        &self,
        si: &StorageIndex,
        write_enabler: &[u8; 32],
        renew_secret: &[u8; 32],
        cancel_secret: &[u8; 32],
        tw_vectors: &BTreeMap<ShareNum, TestWriteVectors>,
        read_vector: &[ReadVector],
    ) -> Result<RtwResult, StoreError> {
        let _g = self.stripe(si);
        let bucket = self.bucket_dir(si);
        let mut shares = BTreeMap::new();
        for shnum in self.list_shares(si)? {
            let share = self.open_mutable(&self.share_path(si, shnum), shnum, false)?;
            if !share.write_enabler_matches(write_enabler) {
                return Err(StoreError::BadWriteEnabler);
            }
            shares.insert(shnum, share);
        }
        let mut success = true;
        'tests: for (shnum, tw) in tw_vectors {
            for t in &tw.test {
                let data = match shares.get(shnum) {
                    Some(share) => share.read(t.offset, t.size)?,
                    None => Vec::new(),
                };
                if data != t.specimen {
                    success = false;
                    break 'tests;
                }
            }
        }
        let mut data = BTreeMap::new();
        for (shnum, share) in &shares {
            let reads = read_vector
                .iter()
                .map(|r| share.read(r.offset, r.size))
                .collect::<Result<Vec<_>, _>>()?;
            data.insert(*shnum, reads);
        }
        if !success {
            return Ok(RtwResult { success, data });
        }
        // Refuse growth beyond the free space before changing anything.
        let mut growth = 0u64;
        for (shnum, tw) in tw_vectors {
            if tw.new_length == Some(0) {
                continue;
            }
            let ends = tw
                .write
                .iter()
                .map(|w| w.offset.saturating_add(w.data.len() as u64));
            let max_end = ends.max().unwrap_or(0);
            growth = growth.saturating_add(match shares.get(shnum) {
                Some(share) => share.growth_for_write(max_end, 0),
                None => FRESH_LEN.saturating_add(max_end),
            });
        }
        if growth > 0 && growth > self.available_space()? {
            return Err(StoreError::NoSpace);
        }
        let expiration = self.lease_expiration();
        for (shnum, tw) in tw_vectors {
            let path = self.share_path(si, *shnum);
            if tw.new_length == Some(0) {
                if shares.remove(shnum).is_some() {
                    fs::remove_file(&path)?;
                    fsutil::sync_dir(&bucket)?;
                }
                fsutil::rmdir_if_empty(&bucket);
                continue;
            }
            let tmp = self.mutable_tmp_path();
            let result = self.write_mutable_copy(
                &tmp,
                shares.contains_key(shnum).then_some(path.as_path()),
                write_enabler,
                tw,
                renew_secret,
                cancel_secret,
                expiration,
            );
            if let Err(e) = result {
                let _ = fs::remove_file(&tmp);
                return Err(e);
            }
            fs::create_dir_all(&bucket)?;
            fs::rename(&tmp, &path)?;
            fsutil::sync_dir(&bucket)?;
        }
        Ok(RtwResult { success, data })
    }

    fn mutable_tmp_path(&self) -> PathBuf {
        let n = self.tmp_counter.fetch_add(1, Ordering::Relaxed);
        self.incoming_dir
            .join(MUTABLE_TMP_DIR)
            .join(format!("{}-{n}", std::process::id()))
    }

    /// Builds the new version of one mutable share in `tmp` and fsyncs it.
    #[allow(clippy::too_many_arguments)]
    fn write_mutable_copy(
        &self,
        tmp: &Path,
        existing: Option<&Path>,
        write_enabler: &[u8; 32],
        tw: &TestWriteVectors,
        renew_secret: &[u8; 32],
        cancel_secret: &[u8; 32],
        expiration: u32,
    ) -> Result<(), StoreError> {
        let mut share = match existing {
            Some(path) => {
                fs::copy(path, tmp)?;
                let file = OpenOptions::new().read(true).write(true).open(tmp)?;
                MutableShare::open(file)?
            }
            None => {
                let file = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create_new(true)
                    .open(tmp)?;
                MutableShare::create(file, MutableVersion::V2, &self.cfg.nodeid, write_enabler)?
            }
        };
        for w in &tw.write {
            share.write(w.offset, &w.data)?;
        }
        if let Some(n) = tw.new_length {
            share.truncate_data(n)?;
        }
        share.add_or_renew_lease(1, renew_secret, cancel_secret, expiration, &self.cfg.nodeid)?;
        share.store().sync_all()?;
        Ok(())
    }

    /// Adds a lease (owner 1) to every share of `si`, or renews the one whose renew secret
    /// matches. `NotFound` if the server holds no share of `si`.
    pub fn add_lease(
        &self,
        si: &StorageIndex,
        renew_secret: &[u8; 32],
        cancel_secret: &[u8; 32],
    ) -> Result<(), StoreError> {
        let expiration = self.lease_expiration();
        let _g = self.stripe(si);
        let mut found = false;
        for shnum in self.list_shares(si)? {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .open(self.share_path(si, shnum))?;
            let mut prefix = [0u8; 32];
            let n = std::os::unix::fs::FileExt::read_at(&file, &mut prefix, 0)?;
            match detect_kind(prefix.get(..n).unwrap_or_default()) {
                Some(ShareKind::Mutable) => {
                    MutableShare::open(file)?.add_or_renew_lease(
                        1,
                        renew_secret,
                        cancel_secret,
                        expiration,
                        &self.cfg.nodeid,
                    )?;
                }
                Some(ShareKind::Immutable) => {
                    ImmutableShare::open(file)?.add_or_renew_lease(
                        1,
                        renew_secret,
                        cancel_secret,
                        expiration,
                    )?;
                }
                None => continue,
            }
            found = true;
        }
        if found {
            Ok(())
        } else {
            Err(StoreError::NotFound)
        }
    }

    /// Leases of one share (for inspection and tests).
    pub fn leases(
        &self,
        si: &StorageIndex,
        shnum: ShareNum,
    ) -> Result<Vec<LeaseRecord>, StoreError> {
        let file = open_existing(&self.share_path(si, shnum))?;
        let mut prefix = [0u8; 32];
        let n = std::os::unix::fs::FileExt::read_at(&file, &mut prefix, 0)?;
        match detect_kind(prefix.get(..n).unwrap_or_default()) {
            Some(ShareKind::Mutable) => Ok(MutableShare::open(file)?
                .leases()?
                .into_iter()
                .map(|(_, l)| l)
                .collect()),
            Some(ShareKind::Immutable) => Ok(ImmutableShare::open(file)?.leases()?),
            None => Err(StoreError::WrongShareType(shnum)),
        }
    }

    /// Records a client's corruption claim in `corruption-advisories/` (Tahoe's file name
    /// and text). `NotFound` if the share does not exist. Silently skipped when there is no
    /// space for the report, as Tahoe does.
    pub fn advise_corrupt(
        &self,
        kind: ShareKind,
        si: &StorageIndex,
        shnum: ShareNum,
        reason: &str,
    ) -> Result<(), StoreError> {
        if !self.list_shares(si)?.contains(&shnum) {
            return Err(StoreError::NotFound);
        }
        let si_s = si_b2a(si);
        let kind_s = match kind {
            ShareKind::Immutable => "immutable",
            ShareKind::Mutable => "mutable",
        };
        let report = format!(
            "report: Share Corruption\ntype: {kind_s}\nstorage_index: {si_s}\nshare_number: {shnum}\n\n{reason}\n\n"
        );
        if report.len() as u64 > self.available_space()? {
            return Ok(());
        }
        let name = format!("{}--{si_s}-{shnum}", iso_utc(self.now())).replace(':', "");
        fs::write(self.advisories_dir.join(name), report)?;
        Ok(())
    }

    /// The corruption-advisory directory.
    pub fn advisories_dir(&self) -> &Path {
        &self.advisories_dir
    }
}

fn open_existing(path: &Path) -> Result<File, StoreError> {
    File::open(path).map_err(not_found)
}

fn not_found(e: io::Error) -> StoreError {
    if e.kind() == io::ErrorKind::NotFound {
        StoreError::NotFound
    } else {
        StoreError::Io(e)
    }
}

/// Removes `incoming/<si[:2]>/<si>` and `incoming/<si[:2]>` if they became empty.
fn remove_incoming_parents(incoming: &Path) {
    if let Some(bucket) = incoming.parent() {
        fsutil::rmdir_if_empty(bucket);
        if let Some(prefix) = bucket.parent() {
            fsutil::rmdir_if_empty(prefix);
        }
    }
}

/// Written chunks overlapping `[start, end)`, clipped to it.
fn overlapping(written: &BTreeMap<u64, u64>, start: u64, end: u64) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    // The range beginning at or before `start` may overlap, as may all beginning before `end`.
    let first = written
        .range(..=start)
        .next_back()
        .map(|(s, _)| *s)
        .unwrap_or(start);
    for (&s, &e) in written.range(first..end) {
        let (a, b) = (s.max(start), e.min(end));
        if a < b {
            out.push((a, b));
        }
    }
    out
}

/// Adds `[start, end)` to a set of disjoint ranges, merging neighbours.
fn insert_range(written: &mut BTreeMap<u64, u64>, mut start: u64, mut end: u64) {
    if start >= end {
        return;
    }
    let touching: Vec<(u64, u64)> = {
        let first = written
            .range(..=start)
            .next_back()
            .map(|(s, _)| *s)
            .unwrap_or(start);
        written
            .range(first..=end)
            .filter(|(_, &e)| e >= start)
            .map(|(&s, &e)| (s, e))
            .collect()
    };
    for (s, e) in touching {
        written.remove(&s);
        start = start.min(s);
        end = end.max(e);
    }
    written.insert(start, end);
}

/// The complement of `written` in `[0, max)`.
fn required_ranges(written: &BTreeMap<u64, u64>, max: u64) -> Vec<Range<u64>> {
    let mut out = Vec::new();
    let mut pos = 0;
    for (&s, &e) in written {
        if s > pos {
            out.push(pos..s);
        }
        pos = pos.max(e);
    }
    if pos < max {
        out.push(pos..max);
    }
    out
}

/// Python's `datetime.utcfromtimestamp(t).isoformat("T")`: microseconds shown only when
/// non-zero.
fn iso_utc(t: Duration) -> String {
    let secs = t.as_secs();
    let micros = t.subsec_micros();
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    let base = format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    );
    if micros == 0 {
        base
    } else {
        format!("{base}.{micros:06}")
    }
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar
/// (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Deletes a share file (caller holds the stripe lock) and fsyncs its directory.
fn remove_share_file(path: &Path) -> Result<(), StoreError> {
    fs::remove_file(path)?;
    if let Some(dir) = path.parent() {
        fsutil::sync_dir(dir)?;
    }
    Ok(())
}
