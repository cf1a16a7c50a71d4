//! The grid as the filesystem layer sees it: five async operations on caps, behind the
//! [`Backend`] trait, and [`MemBackend`], an in-memory grid with fault injection for tests.
//!
//! New directories are made in two steps so that a directory can be created already holding its
//! entries (one publish instead of empty-then-filled): [`Backend::reserve_dir`] gives the write
//! cap of a fresh key (the caller needs its writekey to pack the body), then
//! [`Backend::create_dir`] puts the first version on the grid.
//!
//! A backend may also offer a [`ContentHasher`]: the layer feeds it a new file's bytes while
//! the file is written sequentially from offset 0, and hands the resulting [`ContentKey`] to
//! [`Backend::upload_file_keyed`], so the upload need not read the whole file once more to
//! compute its convergent key.
//!
//! Invariants: a backend never puts a cap in an error message; `publish_dir` is a test-and-write
//! (it fails with [`BackendError::Conflict`] when the directory is no longer at `expected`), so
//! another writer's change is never overwritten blindly.

use crate::cap::{Cap, ChkCap, LitCap, MutableFormat, MutableWriteCap, NodeCap};
use crate::mutable::keys::SigningKeyPair;
use std::collections::HashMap;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use thiserror::Error;

/// A boxed, sendable future: the trait stays object-safe without `async-trait`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, BackendError>> + Send + 'a>>;

/// Identifies one version of a directory's backing mutable file (sequence number and root hash
/// for a real grid; a counter in memory).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirVersion(pub Vec<u8>);

/// What the grid reports. Messages never contain caps.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum BackendError {
    /// The directory is no longer at the expected version (another writer).
    #[error("the directory changed since it was read")]
    Conflict,
    /// No such file or directory on the grid.
    #[error("not found on the grid")]
    NotFound,
    /// Anything else (servers unreachable, happiness not met, corrupt shares...).
    #[error("{0}")]
    Other(String),
}

/// A directory about to be created: its write cap and what the backend needs to create it (for
/// a real grid, the RSA key the cap derives from). `Debug` shows neither: both are secrets.
pub struct NewDirKey {
    pub cap: String,
    pub key: Option<Arc<SigningKeyPair>>,
}

impl std::fmt::Debug for NewDirKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NewDirKey(..)")
    }
}

/// The key of a file's content, computed while it was written ([`ContentHasher`]). A secret:
/// its `Debug` shows nothing of it.
#[derive(Clone, PartialEq, Eq)]
pub struct ContentKey(pub [u8; 16]);

impl std::fmt::Debug for ContentKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ContentKey(..)")
    }
}

/// An incremental hash of a file's content, fed with its bytes in order from offset 0.
pub trait ContentHasher: Send {
    /// Feeds the next bytes of the file.
    fn update(&mut self, data: &[u8]);
    /// The key of a file of exactly `size` bytes (all of them fed), or `None` when this hash
    /// does not apply to a file of that size (the upload then computes the key itself).
    fn finish(self: Box<Self>, size: u64) -> Option<ContentKey>;
}

/// The grid operations the filesystem layer needs.
pub trait Backend: Send + Sync + 'static {
    /// A hasher for [`Backend::upload_file_keyed`], when the backend uses content keys.
    fn content_hasher(&self) -> Option<Box<dyn ContentHasher>> {
        None
    }
    /// As [`Backend::upload_file`], with the key of the file's content when the caller computed
    /// it (with [`Backend::content_hasher`], over exactly the bytes now in the file).
    fn upload_file_keyed<'a>(
        &'a self,
        path: &'a Path,
        key: Option<ContentKey>,
    ) -> BoxFuture<'a, String> {
        let _ = key;
        self.upload_file(path)
    }
    /// Uploads the bytes of the local file at `path` as an immutable file; returns its cap.
    fn upload_file<'a>(&'a self, path: &'a Path) -> BoxFuture<'a, String>;
    /// Reads `len` bytes at `offset` of the file `cap` (fewer at the end of the file).
    fn read_file<'a>(&'a self, cap: &'a str, offset: u64, len: u64) -> BoxFuture<'a, Vec<u8>>;
    /// [`Backend::read_file`] as shared bytes: a backend that already holds the range as one
    /// buffer hands it out without copying it (the layer's segment cache keeps such buffers).
    fn read_file_shared<'a>(
        &'a self,
        cap: &'a str,
        offset: u64,
        len: u64,
    ) -> BoxFuture<'a, Arc<Vec<u8>>> {
        Box::pin(async move { self.read_file(cap, offset, len).await.map(Arc::new) })
    }
    /// The bytes [`Backend::read_file_shared`] would return, when the backend already holds
    /// them (a download under way has received them): no wait, no I/O. `None`: not held now.
    fn read_ready(&self, _cap: &str, _offset: u64, _len: u64) -> Option<Arc<Vec<u8>>> {
        None
    }
    /// Whether a download under way covers `offset .. offset + len` of `cap` (the bytes will
    /// come without being asked for): the layer's read-ahead does not fetch such a range again.
    fn read_pending(&self, _cap: &str, _offset: u64, _len: u64) -> bool {
        false
    }
    /// Reads a directory: its plaintext body and version.
    fn read_dir<'a>(&'a self, cap: &'a str) -> BoxFuture<'a, (Vec<u8>, DirVersion)>;
    /// Replaces a directory's body if it is still at `expected`; returns the new version.
    fn publish_dir<'a>(
        &'a self,
        cap: &'a str,
        expected: &'a DirVersion,
        body: Vec<u8>,
    ) -> BoxFuture<'a, DirVersion>;
    /// A fresh directory write cap, not yet on the grid (no grid I/O; the key may take a while
    /// to generate). Each reservation is used for at most one [`Backend::create_dir`].
    fn reserve_dir(&self) -> BoxFuture<'_, NewDirKey>;
    /// Creates the reserved directory on the grid holding `body` (packed under its writekey).
    fn create_dir<'a>(&'a self, key: &'a NewDirKey, body: Vec<u8>) -> BoxFuture<'a, DirVersion>;
    /// A hint: `n` more directories will be created soon (a backend may prepare their keys in
    /// the background). Cheap; never blocks.
    fn prepare_dirs(&self, _n: usize) {}
    /// Size of the file `cap`, when the cap tells it (CHK and LIT caps do).
    fn file_size(&self, cap: &str) -> Option<u64> {
        match Cap::parse(cap) {
            Cap::File(NodeCap::Chk(c)) => Some(c.size),
            Cap::File(NodeCap::Lit(l)) => Some(l.data.len() as u64),
            _ => None,
        }
    }
}

#[derive(Default)]
struct MemState {
    files: HashMap<String, Arc<Vec<u8>>>,
    dirs: HashMap<String, (Vec<u8>, u64)>,
}

/// Fault injection knobs of [`MemBackend`].
#[derive(Default)]
struct Faults {
    fail_uploads: AtomicUsize,
    fail_all_uploads: std::sync::atomic::AtomicBool,
    upload_delay_ms: AtomicU64,
    fail_all_creates: std::sync::atomic::AtomicBool,
    fail_all_publishes: std::sync::atomic::AtomicBool,
    /// The next this-many directory reads take their body at the call and return it only after
    /// `stall_reads_ms`: a slow reply that another client's write overtakes.
    stall_reads: AtomicUsize,
    stall_reads_ms: AtomicU64,
    /// The next this-many directory publishes are applied, then fail: a reply lost after the
    /// grid took the write.
    lose_publish_replies: AtomicUsize,
    /// Holds the reply of the next directory creation ([`MemBackend::hold_next_create`]).
    create_gate: Mutex<Option<Arc<CreateGate>>>,
    /// File reads are "held" ([`MemBackend::hold_reads`]): as by a download under way.
    holds_reads: std::sync::atomic::AtomicBool,
}

/// Where a test holds a directory creation of [`MemBackend`]: the directory is on the grid, its
/// reply not yet given. Both are one-permit signals ([`tokio::sync::Notify::notify_one`]), so
/// neither side can miss the other's.
#[derive(Default)]
pub struct CreateGate {
    /// Signalled once the held creation is on the grid.
    pub landed: tokio::sync::Notify,
    /// The held creation replies once this is signalled.
    pub release: tokio::sync::Notify,
}

/// An in-memory grid. Clones share the same grid. Caps are real Tahoe cap strings (LIT for files of
/// 55 bytes or less, CHK otherwise, SDMF directories) with random keys.
#[derive(Clone, Default)]
pub struct MemBackend {
    state: Arc<Mutex<MemState>>,
    faults: Arc<Faults>,
    publishes: Arc<AtomicUsize>,
    uploads: Arc<AtomicUsize>,
    /// Every call of any operation (a test asserts that some operation makes none).
    calls: Arc<AtomicUsize>,
    creates: Arc<AtomicUsize>,
    /// Uploads that came with a [`ContentKey`] (each checked against the file's content).
    keyed_uploads: Arc<AtomicUsize>,
    /// Uploads that failed by an injected fault.
    failed_uploads: Arc<AtomicUsize>,
    /// Ranges handed out by `read_ready`.
    ready: Arc<AtomicUsize>,
}

/// [`MemBackend`]'s content hash: SHA-256 of the bytes (the key is its first 16 bytes).
struct MemHasher(sha2::Sha256);

impl ContentHasher for MemHasher {
    fn update(&mut self, data: &[u8]) {
        sha2::Digest::update(&mut self.0, data);
    }

    fn finish(self: Box<Self>, _size: u64) -> Option<ContentKey> {
        Some(mem_key(sha2::Digest::finalize(self.0).as_slice()))
    }
}

/// Takes one from a fault countdown: true while it was above zero.
fn take_one(n: &AtomicUsize) -> bool {
    n.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
}

fn mem_key(digest: &[u8]) -> ContentKey {
    let mut k = [0u8; 16];
    k.copy_from_slice(digest.get(..16).unwrap_or(&[0; 16]));
    ContentKey(k)
}

fn random<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    rand::Rng::fill(&mut rand::thread_rng(), &mut b[..]);
    b
}

impl MemBackend {
    pub fn new() -> Self {
        Self::default()
    }

    /// The next `n` uploads fail.
    pub fn fail_next_uploads(&self, n: usize) {
        self.faults.fail_uploads.store(n, Ordering::SeqCst);
    }

    /// Every upload fails while `on`.
    pub fn fail_all_uploads(&self, on: bool) {
        self.faults.fail_all_uploads.store(on, Ordering::SeqCst);
    }

    /// Each upload takes `d` (a slow grid).
    pub fn set_upload_delay(&self, d: Duration) {
        self.faults
            .upload_delay_ms
            .store(d.as_millis() as u64, Ordering::SeqCst);
    }

    /// The next `n` directory reads return what the grid held at their call only after `d`.
    pub fn stall_next_dir_reads(&self, n: usize, d: Duration) {
        self.faults
            .stall_reads_ms
            .store(d.as_millis() as u64, Ordering::SeqCst);
        self.faults.stall_reads.store(n, Ordering::SeqCst);
    }

    /// Every directory creation fails while `on`.
    pub fn fail_all_creates(&self, on: bool) {
        self.faults.fail_all_creates.store(on, Ordering::SeqCst);
    }

    /// The next `n` directory publishes are applied but report a failure (the reply is lost).
    pub fn lose_next_publish_replies(&self, n: usize) {
        self.faults.lose_publish_replies.store(n, Ordering::SeqCst);
    }

    /// The next directory creation puts the directory on the grid, then waits for the returned
    /// gate's `release` before it replies (a slow reply, during which the test acts).
    pub fn hold_next_create(&self) -> Arc<CreateGate> {
        let gate = Arc::new(CreateGate::default());
        if let Ok(mut g) = self.faults.create_gate.lock() {
            *g = Some(Arc::clone(&gate));
        }
        gate
    }

    /// Every directory publish fails while `on`.
    pub fn fail_all_publishes(&self, on: bool) {
        self.faults.fail_all_publishes.store(on, Ordering::SeqCst);
    }

    /// While `on`, every file range is held as if a download under way had received it:
    /// [`Backend::read_ready`] hands it out (counted by [`MemBackend::ready_count`], not as a
    /// call) and [`Backend::read_pending`] says so.
    pub fn hold_reads(&self, on: bool) {
        self.faults.holds_reads.store(on, Ordering::SeqCst);
    }

    /// Ranges handed out by [`Backend::read_ready`] so far.
    pub fn ready_count(&self) -> usize {
        self.ready.load(Ordering::SeqCst)
    }

    /// Calls of any backend operation so far (successful or not).
    pub fn call_count(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    /// Successful directory creations so far.
    pub fn create_count(&self) -> usize {
        self.creates.load(Ordering::SeqCst)
    }

    /// Successful directory publishes so far.
    pub fn publish_count(&self) -> usize {
        self.publishes.load(Ordering::SeqCst)
    }

    /// Successful file uploads so far.
    pub fn upload_count(&self) -> usize {
        self.uploads.load(Ordering::SeqCst)
    }

    /// Uploads failed so far by [`Self::fail_all_uploads`] or [`Self::fail_next_uploads`].
    pub fn failed_upload_count(&self) -> usize {
        self.failed_uploads.load(Ordering::SeqCst)
    }

    /// Successful uploads so far that came with a (correct) content key.
    pub fn keyed_upload_count(&self) -> usize {
        self.keyed_uploads.load(Ordering::SeqCst)
    }

    fn random_dir_cap() -> String {
        Cap::Dir(NodeCap::MutableWrite(MutableWriteCap {
            format: MutableFormat::Sdmf,
            writekey: random(),
            fingerprint: random(),
        }))
        .to_string()
    }

    /// Creates a directory synchronously (for test set-up).
    pub fn new_dir(&self) -> String {
        let cap = Self::random_dir_cap();
        if let Ok(mut st) = self.state.lock() {
            st.dirs.insert(read_key(&cap), (Vec::new(), 0));
        }
        cap
    }

    /// Stores `data` as a file synchronously; returns its cap.
    pub fn put_bytes(&self, data: &[u8]) -> String {
        let cap = if data.len() <= 55 {
            Cap::File(NodeCap::Lit(LitCap {
                data: data.to_vec(),
            }))
        } else {
            Cap::File(NodeCap::Chk(ChkCap {
                key: random(),
                ueb_hash: random(),
                needed: 3,
                total: 10,
                size: data.len() as u64,
            }))
        }
        .to_string();
        if let Ok(mut st) = self.state.lock() {
            st.files.insert(cap.clone(), Arc::new(data.to_vec()));
        }
        cap
    }

    /// The whole content of a file (test helper).
    pub fn get_bytes(&self, cap: &str) -> Option<Vec<u8>> {
        if let Cap::File(NodeCap::Lit(l)) = Cap::parse(cap) {
            return Some(l.data);
        }
        let st = self.state.lock().ok()?;
        st.files.get(cap).map(|d| d.to_vec())
    }

    /// The current body of a directory (test helper), as another client would read it.
    pub fn dir_body(&self, cap: &str) -> Option<(Vec<u8>, u64)> {
        let st = self.state.lock().ok()?;
        st.dirs.get(&read_key(cap)).cloned()
    }

    /// Another writer replaces a directory's body (test helper): bumps the version.
    pub fn set_dir_body(&self, cap: &str, body: Vec<u8>) {
        if let Ok(mut st) = self.state.lock() {
            if let Some(e) = st.dirs.get_mut(&read_key(cap)) {
                e.0 = body;
                e.1 += 1;
            }
        }
    }
}

/// Bytes `offset .. offset + len` of `data`, fewer at its end (a file read's range).
fn range_of(data: &[u8], offset: u64, len: u64) -> &[u8] {
    let start = usize::try_from(offset)
        .unwrap_or(usize::MAX)
        .min(data.len());
    let end = start
        .saturating_add(usize::try_from(len).unwrap_or(usize::MAX))
        .min(data.len());
    data.get(start..end).unwrap_or_default()
}

/// Directories are stored under their write cap; a read cap finds the same entry through the
/// write cap that `readonly()` maps to it, so the store keys by the read-only form.
fn read_key(cap: &str) -> String {
    let c = Cap::parse(cap);
    c.readonly()
        .map(|r| r.to_string())
        .unwrap_or_else(|| cap.to_string())
}

impl Backend for MemBackend {
    fn content_hasher(&self) -> Option<Box<dyn ContentHasher>> {
        Some(Box::new(MemHasher(sha2::Digest::new())))
    }

    fn upload_file_keyed<'a>(
        &'a self,
        path: &'a Path,
        key: Option<ContentKey>,
    ) -> BoxFuture<'a, String> {
        Box::pin(async move {
            let Some(key) = key else {
                return self.upload_file(path).await;
            };
            // A key that is not the hash of the bytes uploaded would make a wrong convergent
            // cap on a real grid: fail loudly.
            let data = std::fs::read(path).map_err(|e| BackendError::Other(e.to_string()))?;
            let want = mem_key(
                sha2::Digest::finalize(<sha2::Sha256 as sha2::Digest>::new_with_prefix(&data))
                    .as_slice(),
            );
            if key != want {
                return Err(BackendError::Other(
                    "content key does not match the file".into(),
                ));
            }
            let cap = self.upload_file(path).await?;
            self.keyed_uploads.fetch_add(1, Ordering::SeqCst);
            Ok(cap)
        })
    }

    fn upload_file<'a>(&'a self, path: &'a Path) -> BoxFuture<'a, String> {
        Box::pin(async move {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let delay = self.faults.upload_delay_ms.load(Ordering::SeqCst);
            if delay > 0 {
                tokio::time::sleep(Duration::from_millis(delay)).await;
            }
            if self.faults.fail_all_uploads.load(Ordering::SeqCst)
                || take_one(&self.faults.fail_uploads)
            {
                self.failed_uploads.fetch_add(1, Ordering::SeqCst);
                return Err(BackendError::Other("injected upload failure".into()));
            }
            let data = std::fs::read(path).map_err(|e| BackendError::Other(e.to_string()))?;
            self.uploads.fetch_add(1, Ordering::SeqCst);
            Ok(self.put_bytes(&data))
        })
    }

    fn read_file<'a>(&'a self, cap: &'a str, offset: u64, len: u64) -> BoxFuture<'a, Vec<u8>> {
        Box::pin(async move {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let data = self.get_bytes(cap).ok_or(BackendError::NotFound)?;
            Ok(range_of(&data, offset, len).to_vec())
        })
    }

    fn read_ready(&self, cap: &str, offset: u64, len: u64) -> Option<Arc<Vec<u8>>> {
        if !self.faults.holds_reads.load(Ordering::SeqCst) {
            return None;
        }
        let data = self.get_bytes(cap)?;
        self.ready.fetch_add(1, Ordering::SeqCst);
        Some(Arc::new(range_of(&data, offset, len).to_vec()))
    }

    fn read_pending(&self, _cap: &str, _offset: u64, _len: u64) -> bool {
        self.faults.holds_reads.load(Ordering::SeqCst)
    }

    fn read_dir<'a>(&'a self, cap: &'a str) -> BoxFuture<'a, (Vec<u8>, DirVersion)> {
        Box::pin(async move {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let (body, v) = self.dir_body(cap).ok_or(BackendError::NotFound)?;
            if take_one(&self.faults.stall_reads) {
                let ms = self.faults.stall_reads_ms.load(Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
            Ok((body, DirVersion(v.to_be_bytes().to_vec())))
        })
    }

    fn publish_dir<'a>(
        &'a self,
        cap: &'a str,
        expected: &'a DirVersion,
        body: Vec<u8>,
    ) -> BoxFuture<'a, DirVersion> {
        Box::pin(async move {
            self.calls.fetch_add(1, Ordering::SeqCst);
            if !matches!(Cap::parse(cap), Cap::Dir(NodeCap::MutableWrite(_))) {
                return Err(BackendError::Other("not a directory write cap".into()));
            }
            if self.faults.fail_all_publishes.load(Ordering::SeqCst) {
                return Err(BackendError::Other("injected publish failure".into()));
            }
            let mut st = self
                .state
                .lock()
                .map_err(|_| BackendError::Other("poisoned".into()))?;
            let e = st
                .dirs
                .get_mut(&read_key(cap))
                .ok_or(BackendError::NotFound)?;
            if e.1.to_be_bytes().as_slice() != expected.0.as_slice() {
                return Err(BackendError::Conflict);
            }
            e.0 = body;
            e.1 += 1;
            self.publishes.fetch_add(1, Ordering::SeqCst);
            if take_one(&self.faults.lose_publish_replies) {
                return Err(BackendError::Other("injected lost publish reply".into()));
            }
            Ok(DirVersion(e.1.to_be_bytes().to_vec()))
        })
    }

    fn reserve_dir(&self) -> BoxFuture<'_, NewDirKey> {
        Box::pin(async move {
            self.calls.fetch_add(1, Ordering::SeqCst);
            Ok(NewDirKey {
                cap: Self::random_dir_cap(),
                key: None,
            })
        })
    }

    fn create_dir<'a>(&'a self, key: &'a NewDirKey, body: Vec<u8>) -> BoxFuture<'a, DirVersion> {
        Box::pin(async move {
            self.calls.fetch_add(1, Ordering::SeqCst);
            if self.faults.fail_all_creates.load(Ordering::SeqCst) {
                return Err(BackendError::Other("injected create failure".into()));
            }
            {
                let mut st = self
                    .state
                    .lock()
                    .map_err(|_| BackendError::Other("poisoned".into()))?;
                let k = read_key(&key.cap);
                if st.dirs.contains_key(&k) {
                    return Err(BackendError::Other("directory exists already".into()));
                }
                st.dirs.insert(k, (body, 0));
                self.creates.fetch_add(1, Ordering::SeqCst);
            }
            let gate = self
                .faults
                .create_gate
                .lock()
                .ok()
                .and_then(|mut g| g.take());
            if let Some(gate) = gate {
                gate.landed.notify_one();
                gate.release.notified().await;
            }
            Ok(DirVersion(0u64.to_be_bytes().to_vec()))
        })
    }
}
