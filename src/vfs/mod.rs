//! The filesystem layer of `mount.lafs`: POSIX semantics over Tahoe directories, with a crash-safe
//! write-back cache. A fuser adapter calls [`Vfs`] 1:1 (inode numbers, lookup counts, file
//! handles); nothing here knows FUSE, and the grid is reached only through [`Backend`].
//! SEMANTICS.md at the repository root states what each operation guarantees.
//!
//! Design:
//! - The namespace is a tree of `Node`s (one parent each: no hard links). A directory's view is
//!   its grid listing (cached, refreshed after `dir_refresh`) overlaid with the pending changes of
//!   the journal; every attribute lives in the directory entry's metadata ([`attr`]), except
//!   the mount root's, which has no entry: they live in the journal ([`Journal::set_root`]).
//! - Every namespace or attribute change becomes a journal record `(dir cap, name) -> set | remove`
//!   ([`journal`]), written durably before the call returns; file data goes to a per-file cache
//!   file. One background task (the flusher) uploads closed files after `write_back_delay`, then
//!   publishes each directory's pending records in ONE test-and-write (coalescing), and only then
//!   retires the records.
//! - `mkdir` is write-back too: the new directory is a local node with no cap yet (a
//!   [`Target::NewDir`] id; its own records are kept under [`journal::pending_key`]). The flusher
//!   creates it on the grid when its entry in the parent is due (deepest first, each already
//!   holding its resolved entries: one publish, not empty-then-filled), renames every record
//!   naming the id to name the new cap (one journal frame), and only then can the parent's
//!   entry be published. A directory removed before it was created costs no grid work.
//! - A background sealer fdatasyncs each closed cache file and journals its seal; the first change
//!   of a sealed file waits for a durable unseal frame. After a power cut (another boot) the
//!   journal sets aside the unsealed files instead of publishing them, and their entries get the
//!   files' previous versions on the grid, which every record naming a cache file carries
//!   ([`journal::Previous`]; SEMANTICS.md point 1). The sealer runs on a blocking thread, never
//!   under the state lock.
//! - `fsync` marks the file and its path urgent and waits until every record on the path from the
//!   file to the root that existed at the call is published, or an error arrives (a directory
//!   on the path that is not yet created is created first: its entry cannot be published before).
//!
//! Invariants:
//! - A journal record is deleted only after the directory that holds its change is published.
//! - A record whose target is a not-yet-created directory is never published; a directory is
//!   created before any record naming it can be, and no record names a pending directory's id
//!   once it is created.
//! - The state lock (`Inner::st`) is never held across an `.await`.
//! - A cache file's content changes only under the state lock and with its `gen` bumped, and
//!   never while the journal holds it sealed.
//! - Caps never reach error messages or `Debug` output.
//! - Every queue and cache is bounded: writers wait when the cache is over `cache_size` and some
//!   other file's bytes can still be freed by an upload.

pub mod attr;
pub mod backend;
pub mod error;
pub mod hashing;
pub mod journal;
pub mod pagecache;
pub mod segcache;

#[cfg(test)]
mod tests;

pub use attr::{Attr, FileKind};
pub use backend::{
    Backend, BackendError, BoxFuture, ContentHasher, ContentKey, DirVersion, MemBackend, NewDirKey,
};
pub use error::VfsError;

use crate::cap::{Cap, LitCap, NodeCap};
use crate::dirnode::{normalize, update_metadata, Child, DirKind, Directory, Metadata};
use hashing::HashJob;
use journal::{child_fingerprint, pending_id, pending_key, Journal, Op, Previous, Record, Target};
use segcache::SegCache;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

pub type Ino = u64;
pub const ROOT_INO: Ino = 1;
pub const NAME_MAX: usize = 255;
/// `rename` flags (Linux values).
pub const RENAME_NOREPLACE: u32 = 1;
pub const RENAME_EXCHANGE: u32 = 2;
/// `setxattr` flags.
pub const XATTR_CREATE: i32 = 1;
pub const XATTR_REPLACE: i32 = 2;

type Result<T> = std::result::Result<T, VfsError>;

/// Mount options the layer uses.
#[derive(Clone, Debug)]
pub struct Config {
    pub cache_dir: PathBuf,
    /// Bytes of dirty data the cache may hold before writers wait; the read cache's segment
    /// files get what the dirty data leaves of it (one bound for the cache directory).
    pub cache_size: u64,
    pub write_back_delay: Duration,
    pub dir_refresh: Duration,
    /// Owner given to entries without `st_uid`/`st_gid`.
    pub uid: u32,
    pub gid: u32,
    pub segment_size: u64,
    /// Bytes of grid segments kept in memory.
    pub segment_cache: usize,
    /// Segments fetched ahead of a sequential reader.
    pub read_ahead: u64,
    pub max_uploads: usize,
    pub retry_delay: Duration,
    /// The running boot of the machine ([`journal::current_boot_id`]; `None`: unknown). A cache
    /// last written in another boot is replayed under the power-cut rules ([`Journal::open`]).
    pub boot_id: Option<String>,
    /// How long the sealer gathers closed files before a pass (one directory fsync for all).
    pub seal_delay: Duration,
}

impl Config {
    pub fn new(cache_dir: PathBuf) -> Self {
        Config {
            cache_dir,
            cache_size: 1 << 30,
            write_back_delay: Duration::from_secs(5),
            dir_refresh: Duration::from_secs(30),
            uid: 0,
            gid: 0,
            segment_size: 128 * 1024,
            segment_cache: 32 << 20,
            read_ahead: 4,
            max_uploads: 4,
            retry_delay: Duration::from_secs(5),
            boot_id: journal::current_boot_id(),
            seal_delay: Duration::from_millis(5),
        }
    }
}

/// How a read goes on after its start ([`Inner::read_start`]).
enum ReadStart {
    /// Served already: from the write-back cache, or empty (at or past the end of the file).
    Done(ReadData),
    /// From the grid, through the segment cache.
    Grid(GridRead),
}

/// A read of bytes `offset .. end` (not empty) of the grid file `cap` of `fsize` bytes;
/// `sequential` when it continues the handle's last read.
struct GridRead {
    cap: String,
    fsize: u64,
    offset: u64,
    end: u64,
    sequential: bool,
}

impl GridRead {
    /// The segments (of `seg` bytes) the range touches.
    fn segments(&self, seg: u64) -> std::ops::RangeInclusive<u64> {
        self.offset / seg..=(self.end - 1) / seg
    }
}

/// Bytes a read returns: its own buffer, or the part of a cached segment it lies in (shared
/// with the segment cache, not copied).
#[derive(Clone, Debug)]
pub enum ReadData {
    Owned(Vec<u8>),
    /// The segment's bytes and the range read (inside them).
    Shared(Arc<Vec<u8>>, std::ops::Range<usize>),
}

impl ReadData {
    pub fn as_slice(&self) -> &[u8] {
        match self {
            ReadData::Owned(v) => v,
            ReadData::Shared(d, r) => d.get(r.clone()).unwrap_or_default(),
        }
    }

    pub fn into_vec(self) -> Vec<u8> {
        match self {
            ReadData::Owned(v) => v,
            ReadData::Shared(d, r) => d.get(r).unwrap_or_default().to_vec(),
        }
    }
}

/// What `getattr` returns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileAttr {
    pub ino: Ino,
    pub size: u64,
    pub kind: FileKind,
    pub perm: u32,
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
    pub rdev: u64,
    pub atime_ns: i64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
}

/// A time to set: `None` in [`SetAttr`] is `UTIME_OMIT`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeSet {
    Now,
    At(i64),
}

/// What `setattr` changes; `None` leaves a field alone.
#[derive(Clone, Debug, Default)]
pub struct SetAttr {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub atime: Option<TimeSet>,
    pub mtime: Option<TimeSet>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirEntry {
    pub ino: Ino,
    pub name: String,
    pub kind: FileKind,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatFs {
    pub blocks: u64,
    pub bfree: u64,
    pub bavail: u64,
    pub files: u64,
    pub ffree: u64,
    pub bsize: u32,
    pub namelen: u32,
}

/// For `lafs status`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Status {
    pub uploads_queued: usize,
    pub uploads_in_flight: usize,
    pub bytes_dirty: u64,
    /// Bytes of cache files (written data waiting for, or kept after, its upload).
    pub cache_used: u64,
    /// Bytes of the read cache's segment files on disk (they get what `cache_used` leaves of
    /// `cache_limit`).
    pub read_cache: u64,
    pub cache_limit: u64,
    pub pending_dir_changes: usize,
    pub publishes: u64,
    pub uploads_done: u64,
    pub last_errors: Vec<String>,
}

struct DirState {
    writable: bool,
    children: BTreeMap<String, Ino>,
    loaded_at: Option<Instant>,
    /// The grid listing our pending changes are based on (for conflict detection).
    base: Option<Directory>,
    /// Bumped by each publish, so a refresh read before it is not merged after it.
    epoch: u64,
}

struct Node {
    parent: Option<Ino>,
    name: String,
    attr: Attr,
    /// The entry's raw metadata (unknown keys and `tahoe` kept on rewrite).
    md: Metadata,
    target: Target,
    size: u64,
    lookups: u64,
    open: u32,
    /// Attributes changed by writes and not yet recorded (recorded at flush/release/fsync).
    dirty_md: bool,
    dir: Option<DirState>,
}

struct CacheFile {
    file: Arc<fs::File>,
    size: u64,
    writers: u32,
    gen: u64,
    in_flight: bool,
    ready_at: Instant,
    retry_at: Option<Instant>,
    urgent: bool,
    errors: u64,
    last_error: Option<String>,
    ino: Option<Ino>,
    /// The cap of this content when it was uploaded while still open (fsync of an open file):
    /// the cache file stays for the writer and is dropped for this cap once closed and unchanged.
    clean_cap: Option<String>,
    /// The backend's content hash while the file was only ever written at its end since it was
    /// empty: then it is fed exactly bytes `0 .. size` of the current content (in the
    /// background: [`hashing`]). Any other write or truncate drops it (the upload then computes
    /// the key itself).
    hash: Option<HashJob>,
    /// The key `hash` gave for the content of generation `.0` (kept for a retried upload).
    key: Option<(u64, ContentKey)>,
    /// The newest whole version of this content on the grid (the cap the file was opened from,
    /// or of its upload while open), carried by every record naming the file: what its entry
    /// gets instead after a power cut that leaves the file unsealed. `None`: a new file.
    previous: Option<Previous>,
}

/// Where an upload gets its content key.
enum KeyFrom {
    /// From the hash fed by the writes, once it has hashed this many bytes.
    Hash(HashJob, u64),
    /// Known (or none: the upload computes it).
    Known(Option<ContentKey>),
}

struct Handle {
    ino: Ino,
    write: bool,
    last_end: u64,
}

struct State {
    journal: Journal,
    nodes: HashMap<Ino, Node>,
    next_ino: Ino,
    /// dir cap -> name -> (record, first pending time).
    pending: HashMap<String, BTreeMap<String, (Record, Instant)>>,
    caches: HashMap<u64, CacheFile>,
    handles: HashMap<u64, Handle>,
    next_fh: u64,
    dir_errors: HashMap<String, u64>,
    urgent_dirs: HashSet<String>,
    errors: VecDeque<String>,
    publishes: u64,
    uploads_done: u64,
    segs: SegCache,
    /// Dir cap -> inode, for the loaded directories.
    dir_ino: HashMap<String, Ino>,
    /// Writers waiting for cache space (the flusher then uploads without waiting for the delay).
    space_waiters: usize,
    /// Segments being fetched by read-ahead (bounded by `read_ahead` per sequential reader).
    prefetching: HashSet<(String, u64)>,
    /// Directories with a publish in flight: a name removed meanwhile may be about to appear on
    /// the grid, so its removal must be recorded even when the base listing lacks it.
    publishing: HashSet<String>,
    /// Directories whose expired listing is being re-read in the background (for lookups).
    refreshing: HashSet<Ino>,
    /// Pending directories (by id) whose creation failed: not retried before the instant.
    create_retry: HashMap<u64, Instant>,
}

struct Inner {
    backend: Arc<dyn Backend>,
    cfg: Config,
    st: Mutex<State>,
    /// Signalled after every flusher step (waiters re-check their condition).
    progress: Notify,
    /// Wakes the flusher.
    wake: Notify,
    /// The runtime the layer was created in (content hashing runs on its blocking threads).
    rt: tokio::runtime::Handle,
    /// Wakes the sealer.
    seal_wake: Notify,
    /// One seal pass at a time (the sealer's, or [`Vfs::seal_all`]'s).
    seal_pass: tokio::sync::Mutex<()>,
    /// Test hook: when set, each seal pass stops between its syncs and its seal frames.
    #[cfg(test)]
    seal_gate: Mutex<Option<Arc<SealGate>>>,
}

/// Where a test holds a seal pass ([`Inner::seal_files`]): after its syncs returned, before it
/// checks the files' generations and writes its seal frames.
#[cfg(test)]
#[derive(Default)]
struct SealGate {
    /// Notified when a pass reaches the gate.
    synced: Notify,
    /// The pass waits for this.
    resume: Notify,
    /// The sync calls the passes made, in order: `Some(fid)` for the fdatasync of data file
    /// `fid`, `None` for the fsync of the data directory.
    syncs: Mutex<Vec<Option<u64>>>,
}

/// The filesystem. Dropping it stops the background flusher at once (like a crash: the journal
/// keeps whatever was pending); call [`Vfs::flush_all`] first for a clean shutdown.
pub struct Vfs {
    inner: Arc<Inner>,
    flusher: tokio::task::JoinHandle<()>,
    sealer: tokio::task::JoinHandle<()>,
}

impl Drop for Vfs {
    fn drop(&mut self) {
        self.flusher.abort();
        self.sealer.abort();
    }
}

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

fn grid(e: BackendError) -> VfsError {
    VfsError::Grid(e.to_string())
}

fn cache_err(e: impl std::fmt::Display) -> VfsError {
    VfsError::Cache(e.to_string())
}

/// Validates a name from the kernel: UTF-8 (else EILSEQ), at most NAME_MAX bytes, not `.`/`..`,
/// no `/` or NUL; returns its NFC form.
pub fn check_name(name: &OsStr) -> Result<String> {
    let b = name.as_bytes();
    let s = std::str::from_utf8(b).map_err(|_| VfsError::NotUtf8)?;
    if b.is_empty() || s == "." || s == ".." || s.contains('/') || s.contains('\0') {
        return Err(VfsError::Invalid("bad file name"));
    }
    let n = normalize(s);
    if b.len() > NAME_MAX || n.len() > NAME_MAX {
        return Err(VfsError::NameTooLong);
    }
    Ok(n)
}

fn lit_cap(data: &[u8]) -> String {
    Cap::File(NodeCap::Lit(LitCap {
        data: data.to_vec(),
    }))
    .to_string()
}

/// The name under which our side of a conflict on `name` is kept: `NAME.conflict`, else
/// `NAME.conflict-2`, `-3`... (the first one free in `dir`), shortened to fit NAME_MAX; `None`
/// when an entry of that family already holds `cap` (the copy was made by an earlier attempt,
/// or before a crash).
fn conflict_copy_name(dir: &Directory, name: &str, cap: &str) -> Option<String> {
    for n in 1u32.. {
        let suffix = if n == 1 {
            ".conflict".to_string()
        } else {
            format!(".conflict-{n}")
        };
        let mut cut = name.len().min(NAME_MAX - suffix.len());
        while !name.is_char_boundary(cut) {
            cut -= 1;
        }
        let candidate = format!("{}{suffix}", &name[..cut]);
        match dir.get(&candidate) {
            None => return Some(candidate),
            Some(c) if child_cap(c).as_deref() == Some(cap) => return None,
            Some(_) => {}
        }
    }
    None
}

/// The child link for `cap`: directories keep their write cap (and read cap), files their read cap.
fn child_for(cap: &str, md: Metadata) -> Child {
    let c = Cap::parse(cap);
    match &c {
        Cap::Dir(NodeCap::MutableWrite(_)) => Child::new(
            Some(cap.as_bytes().to_vec()),
            c.readonly().map(|r| r.to_string().into_bytes()),
            md,
        ),
        _ => Child::new(None, Some(cap.as_bytes().to_vec()), md),
    }
}

/// Whether a change cannot be published yet: its file is not uploaded, or its directory not
/// created on the grid.
fn unresolved(op: &Op) -> bool {
    matches!(
        op,
        Op::Set {
            target: Target::File(_) | Target::NewDir(_),
            ..
        }
    )
}

/// The name a directory node's records use: its cap, or the key of a not-yet-created directory.
fn dir_key(target: &Target) -> Option<String> {
    match target {
        Target::Cap(c) => Some(c.clone()),
        Target::NewDir(id) => Some(pending_key(*id)),
        Target::File(_) => None,
    }
}

/// An empty listing (the base of a directory not yet on the grid: no name is there).
fn empty_listing() -> Directory {
    Directory::new(DirKind::Mutable { writekey: None })
}

fn dir_writekey(cap: &str) -> Option<[u8; 16]> {
    match Cap::parse(cap) {
        Cap::Dir(NodeCap::MutableWrite(w)) => Some(w.writekey),
        _ => None,
    }
}

fn dir_kind(cap: &str) -> DirKind {
    DirKind::Mutable {
        writekey: dir_writekey(cap),
    }
}

impl State {
    /// The pending records of directory `key` that can be published now (their targets resolved
    /// to caps: no file still uploading, no directory still to be created).
    fn resolved_records(&self, key: &str) -> Vec<Record> {
        self.pending
            .get(key)
            .map(|m| {
                m.values()
                    .map(|(r, _)| r.clone())
                    .filter(|r| !unresolved(&r.op))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn node(&self, ino: Ino) -> Result<&Node> {
        self.nodes.get(&ino).ok_or(VfsError::NotFound)
    }

    fn node_mut(&mut self, ino: Ino) -> Result<&mut Node> {
        self.nodes.get_mut(&ino).ok_or(VfsError::NotFound)
    }

    /// The name of directory `ino` in records: its cap, or for a directory not yet created on
    /// the grid its [`pending_key`].
    fn dir_cap(&self, ino: Ino) -> Result<String> {
        let n = self.node(ino)?;
        match &n.dir {
            Some(_) => dir_key(&n.target).ok_or(VfsError::NotDir),
            None => Err(VfsError::NotDir),
        }
    }

    fn writable_dir(&self, ino: Ino) -> Result<String> {
        let n = self.node(ino)?;
        match &n.dir {
            Some(d) if d.writable => self.dir_cap(ino),
            Some(_) => Err(VfsError::ReadOnly),
            None => Err(VfsError::NotDir),
        }
    }

    fn child(&self, parent: Ino, name: &str) -> Result<Option<Ino>> {
        let d = self.node(parent)?.dir.as_ref().ok_or(VfsError::NotDir)?;
        Ok(d.children.get(name).copied())
    }

    fn size_of(&self, n: &Node) -> u64 {
        match &n.target {
            Target::File(f) => self.caches.get(f).map_or(0, |c| c.size),
            Target::Cap(_) | Target::NewDir(_) => n.size,
        }
    }

    fn file_attr(&self, ino: Ino) -> Result<FileAttr> {
        let n = self.node(ino)?;
        let a = &n.attr;
        // An unlinked node (still open or looked up) has no name left: link count 0, as
        // fstat(2) of a removed file shows it.
        let unlinked = n.parent.is_none() && ino != ROOT_INO;
        let nlink = match &n.dir {
            _ if unlinked => 0,
            Some(d) => {
                2 + d
                    .children
                    .values()
                    .filter(|c| self.nodes.get(c).is_some_and(|n| n.dir.is_some()))
                    .count() as u32
            }
            None => 1,
        };
        Ok(FileAttr {
            ino,
            size: if n.dir.is_some() { 0 } else { self.size_of(n) },
            kind: a.kind,
            perm: a.perm,
            nlink,
            uid: a.uid,
            gid: a.gid,
            rdev: a.rdev,
            atime_ns: a.atime_ns,
            mtime_ns: a.mtime_ns,
            ctime_ns: a.ctime_ns,
        })
    }

    fn new_node(&mut self, node: Node) -> Ino {
        let ino = self.next_ino;
        self.next_ino += 1;
        if let (Some(_), Some(k)) = (&node.dir, dir_key(&node.target)) {
            self.dir_ino.insert(k, ino);
        }
        self.nodes.insert(ino, node);
        ino
    }

    /// Writes a record durably and makes it the pending change for `(dir, name)`.
    fn put_record(&mut self, dir: &str, name: &str, op: Op) -> Result<()> {
        let seq = self.journal.next_seq();
        // What the change may replace on the grid: a pending change of the name already knows
        // (its base, and our publishes of it that may have landed); otherwise the entry of the
        // listing read, when one was.
        let inherited = self
            .pending
            .get(dir)
            .and_then(|m| m.get(name))
            .and_then(|(r, _)| r.accept.clone());
        let accept = inherited.or_else(|| {
            let base = self
                .dir_ino
                .get(dir)
                .and_then(|i| self.nodes.get(i))
                .and_then(|n| n.dir.as_ref())
                .and_then(|d| d.base.as_ref())?;
            Some(BTreeSet::from([child_fingerprint(base.get(name))]))
        });
        let previous = match &op {
            Op::Set {
                target: Target::File(f),
                ..
            } => self.caches.get(f).and_then(|c| c.previous.clone()),
            _ => None,
        };
        let rec = Record {
            seq,
            dir: dir.to_string(),
            name: name.to_string(),
            op,
            accept,
            previous,
        };
        self.journal.write(&rec).map_err(VfsError::Cache)?;
        let slot = self.pending.entry(dir.to_string()).or_default();
        let since = slot.get(name).map_or_else(Instant::now, |(_, t)| *t);
        if let Some((old, _)) = slot.insert(name.to_string(), (rec, since)) {
            self.journal.delete(old.seq);
        }
        Ok(())
    }

    /// Writes a new version of a pending record (same seq) and makes it the live one in memory.
    fn rewrite_record(&mut self, r: Record) -> std::result::Result<(), String> {
        self.journal.write(&r)?;
        if let Some(slot) = self
            .pending
            .get_mut(&r.dir)
            .and_then(|m| m.get_mut(&r.name))
        {
            slot.0 = r;
        }
        Ok(())
    }

    /// Records the current entry of `ino` in its parent; for the mount root, which has no
    /// entry, its attributes in the journal's root frame ([`Journal::set_root`]). An unlinked
    /// node has nowhere to record them: nothing is written.
    fn record_node(&mut self, ino: Ino) -> Result<()> {
        let n = self.node(ino)?;
        let Some(parent) = n.parent else {
            if ino == ROOT_INO {
                let md = attr::to_metadata(&n.attr, &n.md);
                self.journal.set_root(&md).map_err(VfsError::Cache)?;
            }
            return Ok(());
        };
        let op = Op::Set {
            target: n.target.clone(),
            metadata: attr::to_metadata(&n.attr, &n.md),
        };
        let name = n.name.clone();
        let dir = self.dir_cap(parent)?;
        self.put_record(&dir, &name, op)?;
        if let Ok(n) = self.node_mut(ino) {
            n.dirty_md = false;
        }
        Ok(())
    }

    /// Records the removal of `name` from `parent` when the grid may have the name; only when
    /// it cannot is the pending record simply dropped (nothing to publish). The grid may have
    /// it when the listing the changes are based on has it (or none was read), when a publish
    /// of the directory is in flight, or when an earlier publish of ours of the name may have
    /// landed: the pending record's `accept` set then names an entry, or is unknown. A publish
    /// whose reply was lost leaves the base listing without the name but its entry in that set
    /// ([`Inner::note_intent`]), and the grid may well have the entry.
    fn record_remove(&mut self, parent: Ino, name: &str) -> Result<()> {
        let dir = self.dir_cap(parent)?;
        let ours_may_be_there = self
            .pending
            .get(&dir)
            .and_then(|m| m.get(name))
            .is_some_and(|(r, _)| {
                r.accept
                    .as_ref()
                    .is_none_or(|a| a.iter().any(|f| f != journal::ABSENT))
            });
        let on_grid = self
            .node(parent)?
            .dir
            .as_ref()
            .and_then(|d| d.base.as_ref())
            .is_none_or(|b| b.contains(name))
            || self.publishing.contains(&dir)
            || ours_may_be_there;
        if on_grid {
            self.put_record(&dir, name, Op::Remove)
        } else {
            if let Some(slot) = self.pending.get_mut(&dir) {
                if let Some((old, _)) = slot.remove(name) {
                    self.journal.delete(old.seq);
                }
            }
            Ok(())
        }
    }

    /// Detaches `ino` from its parent's children (the caller records the removal).
    fn unlink_node(&mut self, ino: Ino) {
        let (parent, name) = match self.nodes.get(&ino) {
            Some(n) => (n.parent, n.name.clone()),
            None => return,
        };
        if let Some(p) = parent.and_then(|p| self.nodes.get_mut(&p)) {
            if let Some(d) = &mut p.dir {
                if d.children.get(&name) == Some(&ino) {
                    d.children.remove(&name);
                }
            }
        }
        if let Some(n) = self.nodes.get_mut(&ino) {
            n.parent = None;
        }
        self.maybe_free(ino);
    }

    /// Frees an unlinked node's cache file and the node itself once nothing refers to it.
    fn maybe_free(&mut self, ino: Ino) {
        let Some(n) = self.nodes.get(&ino) else {
            return;
        };
        if n.parent.is_some() || n.open > 0 || ino == ROOT_INO {
            return;
        }
        if let (Some(_), Target::NewDir(id)) = (&n.dir, &n.target) {
            // A directory never created on the grid left the tree (it was empty: rmdir or
            // replaced by a rename): nothing of it will ever be published.
            let key = pending_key(*id);
            if let Some(m) = self.pending.remove(&key) {
                for (r, _) in m.values() {
                    self.journal.delete(r.seq);
                }
            }
        }
        let Some(n) = self.nodes.get(&ino) else {
            return;
        };
        if let Target::File(f) = n.target {
            if self.caches.remove(&f).is_some() {
                self.journal.remove_file(f);
            }
        }
        if n.lookups == 0 {
            if let Some(n) = self.nodes.remove(&ino) {
                if let (Some(_), Some(k)) = (&n.dir, dir_key(&n.target)) {
                    if self.dir_ino.get(&k) == Some(&ino) {
                        self.dir_ino.remove(&k);
                    }
                }
            }
        }
    }

    fn fids_referenced(&self) -> HashSet<u64> {
        self.pending
            .values()
            .flat_map(|m| m.values())
            .filter_map(|(r, _)| match &r.op {
                Op::Set {
                    target: Target::File(f),
                    ..
                } => Some(*f),
                _ => None,
            })
            .collect()
    }

    fn cache_used(&self) -> u64 {
        self.caches.values().map(|c| c.size).sum()
    }

    /// One budget for the cache directory: the read cache's disk tier gets what the write-back
    /// files leave of `cache_size`. Called wherever those files grow or go.
    fn fit_read_cache(&mut self, cache_size: u64) {
        let room = cache_size.saturating_sub(self.cache_used());
        self.segs
            .set_disk_limit(usize::try_from(room).unwrap_or(usize::MAX));
    }

    fn push_error(&mut self, e: String) {
        tracing::warn!("lafs vfs: {e}");
        self.errors.push_back(e);
        while self.errors.len() > 16 {
            self.errors.pop_front();
        }
    }

    fn add_cache(&mut self, fid: u64, size: u64, ino: Option<Ino>) -> Result<()> {
        let file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(self.journal.data_path(fid))
            .map_err(cache_err)?;
        self.caches.insert(
            fid,
            CacheFile {
                file: Arc::new(file),
                size,
                writers: 0,
                gen: 0,
                in_flight: false,
                ready_at: Instant::now(),
                retry_at: None,
                urgent: false,
                errors: 0,
                last_error: None,
                ino,
                clean_cap: None,
                hash: None,
                key: None,
                previous: None,
            },
        );
        Ok(())
    }

    /// A node for an entry (from the grid or from a journal record).
    fn node_from_entry(
        &mut self,
        parent: Ino,
        name: &str,
        target: Target,
        md: Metadata,
        owner: (u32, u32),
    ) -> Node {
        let parent_writable = self
            .nodes
            .get(&parent)
            .and_then(|p| p.dir.as_ref())
            .is_some_and(|d| d.writable);
        let (is_dir, writable, size) = match &target {
            Target::Cap(c) => {
                let parsed = Cap::parse(c);
                let w = matches!(parsed, Cap::Dir(NodeCap::MutableWrite(_))) && parent_writable;
                let size = match &parsed {
                    Cap::File(NodeCap::Chk(k)) => k.size,
                    Cap::File(NodeCap::Lit(l)) => l.data.len() as u64,
                    _ => 0,
                };
                (parsed.is_directory(), w, size)
            }
            Target::File(f) => (false, false, self.caches.get(f).map_or(0, |c| c.size)),
            Target::NewDir(_) => (true, parent_writable, 0),
        };
        // Nothing of a directory not yet created is on the grid.
        let base = matches!(target, Target::NewDir(_)).then(empty_listing);
        let attr = attr::from_metadata(&md, is_dir, owner);
        Node {
            parent: Some(parent),
            name: name.to_string(),
            attr,
            md,
            target,
            size,
            lookups: 0,
            open: 0,
            dirty_md: false,
            dir: is_dir.then(|| DirState {
                writable,
                children: BTreeMap::new(),
                loaded_at: None,
                base,
                epoch: 0,
            }),
        }
    }
}

/// The cap a child link names (write cap when present).
fn child_cap(c: &Child) -> Option<String> {
    c.rw_uri()
        .or(c.ro_uri())
        .and_then(|b| std::str::from_utf8(b).ok())
        .map(str::to_string)
}

impl Vfs {
    /// Mounts `root_cap` (a directory write cap, or a read cap for a read-only view), resuming
    /// whatever the journal in `cfg.cache_dir` holds. Must run inside a tokio runtime.
    pub async fn new(backend: Arc<dyn Backend>, root_cap: &str, cfg: Config) -> Result<Vfs> {
        let parsed = Cap::parse(root_cap);
        if !parsed.is_directory() {
            return Err(VfsError::NotDir);
        }
        let (mut journal, recs) =
            Journal::open(&cfg.cache_dir, cfg.boot_id.as_deref()).map_err(VfsError::Cache)?;
        let recovered = journal.take_recovered();
        let writable = matches!(parsed, Cap::Dir(NodeCap::MutableWrite(_)));
        // The root's attributes as last recorded in this cache, else the defaults (0755, the
        // mounting user, the time of the mount).
        let (root_attr, root_md) = match journal.take_root() {
            Some(md) => (attr::from_metadata(&md, true, (cfg.uid, cfg.gid)), md),
            None => (
                Attr::new(FileKind::Dir, 0o755, cfg.uid, cfg.gid, now_ns()),
                Metadata::new(),
            ),
        };
        let root = Node {
            parent: None,
            name: String::new(),
            attr: root_attr,
            md: root_md,
            target: Target::Cap(root_cap.to_string()),
            size: 0,
            lookups: 1,
            open: 0,
            dirty_md: false,
            dir: Some(DirState {
                writable,
                children: BTreeMap::new(),
                loaded_at: None,
                base: None,
                epoch: 0,
            }),
        };
        let mut st = State {
            journal,
            nodes: HashMap::new(),
            next_ino: ROOT_INO + 1,
            pending: HashMap::new(),
            caches: HashMap::new(),
            handles: HashMap::new(),
            next_fh: 1,
            dir_errors: HashMap::new(),
            urgent_dirs: HashSet::new(),
            errors: VecDeque::new(),
            publishes: 0,
            uploads_done: 0,
            // Read cache: `segment_cache` bytes in memory, up to `cache_size` more on disk.
            segs: SegCache::with_disk(
                cfg.segment_cache,
                cfg.cache_dir.join("segs"),
                usize::try_from(cfg.cache_size).unwrap_or(usize::MAX),
            ),
            dir_ino: HashMap::new(),
            space_waiters: 0,
            prefetching: HashSet::new(),
            publishing: HashSet::new(),
            refreshing: HashSet::new(),
            create_retry: HashMap::new(),
        };
        st.nodes.insert(ROOT_INO, root);
        st.dir_ino.insert(root_cap.to_string(), ROOT_INO);
        for r in recovered {
            // The name only: the directory is named by a cap.
            let kept = if r.kept_previous {
                "its entry keeps the version it had on the grid before the change"
            } else {
                "the grid keeps its previous version"
            };
            st.push_error(format!(
                "power cut: {:?} was not synced to the cache disk before the machine went down, \
                 so it was not published ({kept}); the cache's bytes of it are in {}",
                r.name,
                r.path.display()
            ));
        }
        // Resume: pending records become the overlay; their data files the upload queue.
        for rec in recs {
            if let Op::Set {
                target: Target::File(f),
                ..
            } = &rec.op
            {
                if !st.caches.contains_key(f) {
                    let size = fs::metadata(st.journal.data_path(*f))
                        .map(|m| m.len())
                        .unwrap_or(0);
                    st.add_cache(*f, size, None)?;
                }
                if let Some(c) = st.caches.get_mut(f) {
                    c.previous = c.previous.take().or_else(|| rec.previous.clone());
                }
            }
            st.pending
                .entry(rec.dir.clone())
                .or_default()
                .insert(rec.name.clone(), (rec, Instant::now()));
        }
        let inner = Arc::new(Inner {
            backend,
            cfg,
            st: Mutex::new(st),
            progress: Notify::new(),
            wake: Notify::new(),
            rt: tokio::runtime::Handle::current(),
            seal_wake: Notify::new(),
            seal_pass: tokio::sync::Mutex::new(()),
            #[cfg(test)]
            seal_gate: Mutex::new(None),
        });
        let flusher = tokio::spawn(Inner::flusher(Arc::clone(&inner)));
        // Its first pass seals the files the journal replayed (same boot: their content is
        // whole, the page cache survived the daemon).
        let sealer = tokio::spawn(Inner::sealer(Arc::clone(&inner)));
        Ok(Vfs {
            inner,
            flusher,
            sealer,
        })
    }

    /// Stops the flusher and waits until it has stopped (a simulated crash for tests).
    ///
    /// Returns only once the journal's committer thread has exited too: the last reference to
    /// the state is dropped on whichever thread held it, and until that drop has joined the
    /// committer, the old journal may still fsync and unlink data files of the instance that
    /// the test opens next on the same cache directory.
    pub async fn crash(self) {
        self.flusher.abort();
        self.sealer.abort();
        let weak = Arc::downgrade(&self.inner);
        let journal = self.lock().journal.stop_probe();
        drop(self);
        // The flusher holds a strong reference until it has stopped.
        while weak.strong_count() > 0 || !journal.stopped() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.inner.lock()
    }

    pub async fn lookup(&self, parent: Ino, name: &OsStr) -> Result<FileAttr> {
        let name = check_name(name)?;
        Inner::load_dir_for_lookup(&self.inner, parent, &name).await?;
        let mut st = self.lock();
        let ino = st.child(parent, &name)?.ok_or(VfsError::NotFound)?;
        st.node_mut(ino)?.lookups += 1;
        st.file_attr(ino)
    }

    pub fn forget(&self, ino: Ino, nlookup: u64) {
        let mut st = self.lock();
        if let Some(n) = st.nodes.get_mut(&ino) {
            n.lookups = n.lookups.saturating_sub(nlookup);
        }
        st.maybe_free(ino);
    }

    /// Whether changes to `ino` can be made at all: a directory by its own cap, anything else by
    /// its parent's (an entry is changed by rewriting the directory holding it). A read cap,
    /// mounted or met inside a writable tree, makes it false. An open file already unlinked has
    /// no parent and is not writable through a path either.
    pub fn writable(&self, ino: Ino) -> Result<bool> {
        let st = self.lock();
        let n = st.node(ino)?;
        if let Some(d) = &n.dir {
            return Ok(d.writable);
        }
        Ok(match n.parent {
            Some(p) => st.node(p)?.dir.as_ref().is_some_and(|d| d.writable),
            None => false,
        })
    }

    pub async fn getattr(&self, ino: Ino) -> Result<FileAttr> {
        self.lock().file_attr(ino)
    }

    pub async fn setattr(&self, ino: Ino, set: SetAttr) -> Result<FileAttr> {
        // The flusher may upload and drop a fresh cache file before we lock: materialize again.
        let mut st = loop {
            if let Some(size) = set.size {
                self.inner.materialize(ino, Some(size)).await?;
            }
            // Guard scoped to the block: not held across the wait.
            let ticket = {
                let st = self.lock();
                let f = match st.node(ino)?.target {
                    _ if set.size.is_none() => break st,
                    Target::File(f) => f,
                    _ => continue,
                };
                match st.journal.unseal(f).map_err(VfsError::Cache)? {
                    Some(t) => t,
                    None => break st,
                }
            };
            // Durably unsealed before the size changes; then look again.
            wait_durable(ticket).await?;
        };
        let parent = st.node(ino)?.parent;
        if let Some(p) = parent {
            st.writable_dir(p)?;
        } else if ino == ROOT_INO && !st.node(ino)?.dir.as_ref().is_some_and(|d| d.writable) {
            return Err(VfsError::ReadOnly);
        }
        let now = now_ns();
        if let Some(size) = set.size {
            let n = st.node(ino)?;
            if n.dir.is_some() {
                return Err(VfsError::IsDir);
            }
            if n.attr.kind != FileKind::File {
                return Err(VfsError::Invalid("truncate of a special file"));
            }
            let Target::File(f) = n.target else {
                return Err(VfsError::Cache("file not materialized".into()));
            };
            let c = st.caches.get_mut(&f).ok_or(VfsError::NotFound)?;
            c.file.set_len(size).map_err(cache_err)?;
            if size != c.size {
                c.hash = None;
            }
            c.size = size;
            c.gen += 1;
            c.clean_cap = None;
            st.fit_read_cache(self.inner.cfg.cache_size);
            let n = st.node_mut(ino)?;
            n.attr.mtime_ns = now;
        }
        let n = st.node_mut(ino)?;
        if let Some(m) = set.mode {
            n.attr.perm = m & 0o7777;
        }
        if let Some(u) = set.uid {
            n.attr.uid = u;
        }
        if let Some(g) = set.gid {
            n.attr.gid = g;
        }
        let t = |ts: TimeSet| match ts {
            TimeSet::Now => now,
            TimeSet::At(x) => x,
        };
        if let Some(a) = set.atime {
            n.attr.atime_ns = t(a);
        }
        if let Some(m) = set.mtime {
            n.attr.mtime_ns = t(m);
        }
        n.attr.ctime_ns = now;
        st.record_node(ino)?;
        drop(st);
        self.inner.wake.notify_one();
        // A truncate without an open handle has no release to seal it after.
        self.inner.seal_wake.notify_one();
        self.lock().file_attr(ino)
    }

    /// The entries of a directory, `.` and `..` first.
    pub async fn readdir(&self, ino: Ino) -> Result<Vec<DirEntry>> {
        self.inner.load_dir(ino).await?;
        let st = self.lock();
        let n = st.node(ino)?;
        let d = n.dir.as_ref().ok_or(VfsError::NotDir)?;
        let mut out = vec![
            DirEntry {
                ino,
                name: ".".into(),
                kind: FileKind::Dir,
            },
            DirEntry {
                ino: n.parent.unwrap_or(ino),
                name: "..".into(),
                kind: FileKind::Dir,
            },
        ];
        for (name, c) in &d.children {
            if let Some(cn) = st.nodes.get(c) {
                out.push(DirEntry {
                    ino: *c,
                    name: name.clone(),
                    kind: cn.attr.kind,
                });
            }
        }
        Ok(out)
    }

    /// Opens a file; `flags` are open(2) flags (`O_ACCMODE`, `O_TRUNC`). Returns a handle.
    pub async fn open(&self, ino: Ino, flags: i32) -> Result<u64> {
        let write = flags & libc::O_ACCMODE != libc::O_RDONLY;
        {
            let st = self.lock();
            let n = st.node(ino)?;
            if n.dir.is_some() && write {
                return Err(VfsError::IsDir);
            }
            if write {
                match n.parent {
                    Some(p) => {
                        st.writable_dir(p)?;
                    }
                    None => return Err(VfsError::NotFound),
                }
            }
        }
        let mut st = loop {
            if write {
                let trunc = (flags & libc::O_TRUNC != 0).then_some(0);
                self.inner.materialize(ino, trunc).await?;
            }
            let ticket = {
                let st = self.lock();
                if !write || flags & libc::O_TRUNC == 0 {
                    break st;
                }
                // A truncation of a sealed file unseals it durably first.
                let f = match st.node(ino)?.target {
                    Target::File(f) if st.caches.get(&f).is_some_and(|c| c.size != 0) => f,
                    _ => break st,
                };
                match st.journal.unseal(f).map_err(VfsError::Cache)? {
                    Some(t) => t,
                    None => break st,
                }
            };
            wait_durable(ticket).await?;
        };
        if write && flags & libc::O_TRUNC != 0 {
            let n = st.node(ino)?;
            if let Target::File(f) = n.target {
                let c = st.caches.get_mut(&f).ok_or(VfsError::NotFound)?;
                if c.size != 0 {
                    c.file.set_len(0).map_err(cache_err)?;
                    c.size = 0;
                    c.hash = None;
                    c.gen += 1;
                    c.clean_cap = None;
                }
                let now = now_ns();
                let n = st.node_mut(ino)?;
                n.attr.mtime_ns = now;
                n.attr.ctime_ns = now;
                n.dirty_md = true;
            }
        }
        Ok(st.open_handle(ino, write))
    }

    pub async fn read(&self, ino: Ino, fh: u64, offset: u64, size: u32) -> Result<Vec<u8>> {
        Ok(self.inner.read(ino, fh, offset, size).await?.into_vec())
    }

    /// [`Vfs::read`] without a copy when the range lies in one cached segment.
    pub async fn read_data(&self, ino: Ino, fh: u64, offset: u64, size: u32) -> Result<ReadData> {
        self.inner.read(ino, fh, offset, size).await
    }

    /// [`Vfs::read_data`] done at once when it needs no wait (the file is in the write-back
    /// cache, or the range's segments are in the segment cache): only local work. `None`: call
    /// [`Vfs::read_data`].
    pub fn read_now(&self, ino: Ino, fh: u64, offset: u64, size: u32) -> Option<Result<ReadData>> {
        self.inner.read_now(ino, fh, offset, size)
    }

    pub async fn write(&self, ino: Ino, fh: u64, offset: u64, data: &[u8]) -> Result<u32> {
        self.inner.write(ino, fh, offset, data).await
    }

    /// [`Vfs::write`] done at once when it needs no wait (no download of the file's content,
    /// no wait for cache space): then only local work, a `pwrite` into the cache file. `None`:
    /// call [`Vfs::write`].
    pub fn write_now(&self, ino: Ino, fh: u64, offset: u64, data: &[u8]) -> Option<Result<u32>> {
        self.inner.write_now(ino, fh, offset, data)
    }

    /// `close` of one descriptor: records pending attributes; a descriptor open for writing
    /// reports a pending upload error (once). A read-only descriptor does not: its reads were
    /// served (from the cache), and an error at its close would fail readers such as `cmp` or
    /// `cp` out of the mount while taking the report away from the next writer.
    pub async fn flush(&self, ino: Ino, fh: u64) -> Result<()> {
        let mut st = self.lock();
        let write = st.handles.get(&fh).ok_or(VfsError::BadHandle)?.write;
        if st.node(ino)?.dirty_md {
            st.record_node(ino)?;
        }
        if write {
            take_error(&mut st, ino)
        } else {
            Ok(())
        }
    }

    pub async fn release(&self, ino: Ino, fh: u64) -> Result<()> {
        let mut st = self.lock();
        let h = st.handles.remove(&fh).ok_or(VfsError::BadHandle)?;
        let res = if st.node(ino)?.dirty_md {
            st.record_node(ino)
        } else {
            Ok(())
        };
        let delay = self.inner.cfg.write_back_delay;
        let n = st.node_mut(h.ino)?;
        n.open = n.open.saturating_sub(1);
        if let Target::File(f) = n.target {
            if let Some(c) = st.caches.get_mut(&f) {
                if h.write {
                    c.writers = c.writers.saturating_sub(1);
                }
                c.ready_at = Instant::now() + delay;
            }
        }
        st.maybe_free(h.ino);
        drop(st);
        self.inner.wake.notify_one();
        self.inner.seal_wake.notify_one();
        res
    }

    /// Returns when the file's data and its entry (and the entries on its path up to the root)
    /// are published, or with the error that prevented it.
    pub async fn fsync(&self, ino: Ino, _fh: u64) -> Result<()> {
        let root = self.root_ticket(ino);
        self.inner.wait_synced(ino, false).await?;
        Self::wait_root(root).await
    }

    /// Returns when every change of the directory made before the call is published (for the
    /// mount root, also when its attributes are durable in the journal).
    pub async fn fsyncdir(&self, ino: Ino) -> Result<()> {
        let root = self.root_ticket(ino);
        self.inner.wait_synced(ino, true).await?;
        Self::wait_root(root).await
    }

    /// For an fsync of the mount root: the wait for every journal frame written before the
    /// call, its attributes frame included (they are on no grid entry, so the journal on the
    /// local disk is where they are durable).
    fn root_ticket(&self, ino: Ino) -> Option<journal::CommitTicket> {
        (ino == ROOT_INO).then(|| self.lock().journal.ticket())
    }

    async fn wait_root(ticket: Option<journal::CommitTicket>) -> Result<()> {
        match ticket {
            Some(t) => wait_durable(t).await,
            None => Ok(()),
        }
    }

    pub async fn create(
        &self,
        parent: Ino,
        name: &OsStr,
        mode: u32,
        flags: i32,
        uid: u32,
        gid: u32,
    ) -> Result<(FileAttr, u64)> {
        let name = check_name(name)?;
        self.inner.load_dir(parent).await?;
        let existing = {
            let st = self.lock();
            st.writable_dir(parent)?;
            st.child(parent, &name)?
        };
        if let Some(ino) = existing {
            if flags & libc::O_EXCL != 0 {
                return Err(VfsError::Exists);
            }
            let fh = self.open(ino, flags).await?;
            let mut st = self.lock();
            st.node_mut(ino)?.lookups += 1;
            return Ok((st.file_attr(ino)?, fh));
        }
        let mut st = self.lock();
        if st.child(parent, &name)?.is_some() {
            return Err(VfsError::Exists);
        }
        let fid = st.journal.new_file().map_err(VfsError::Cache)?;
        let ino = st.insert_new(
            parent,
            &name,
            Target::File(fid),
            FileKind::File,
            mode,
            uid,
            gid,
            now_ns(),
        );
        st.add_cache(fid, 0, Some(ino))?;
        st.record_node(ino)?;
        st.node_mut(ino)?.lookups += 1;
        let write = flags & libc::O_ACCMODE != libc::O_RDONLY;
        let fh = st.open_handle(ino, write);
        let attr = st.file_attr(ino)?;
        drop(st);
        self.inner.wake.notify_one();
        Ok((attr, fh))
    }

    pub async fn mkdir(
        &self,
        parent: Ino,
        name: &OsStr,
        mode: u32,
        uid: u32,
        gid: u32,
    ) -> Result<FileAttr> {
        let name = check_name(name)?;
        self.inner.load_dir(parent).await?;
        {
            let st = self.lock();
            st.writable_dir(parent)?;
            if st.child(parent, &name)?.is_some() {
                return Err(VfsError::Exists);
            }
        }
        // Write-back: the directory is created on the grid by the flusher (see the module doc);
        // until then it is a local node named by an id, linked by a pending record.
        let mut st = self.lock();
        if st.child(parent, &name)?.is_some() {
            return Err(VfsError::Exists);
        }
        let id = st.journal.new_dir_id();
        let ino = st.insert_new(
            parent,
            &name,
            Target::NewDir(id),
            FileKind::Dir,
            mode,
            uid,
            gid,
            now_ns(),
        );
        if let Some(d) = &mut st.node_mut(ino)?.dir {
            d.writable = true;
            d.loaded_at = Some(Instant::now());
            d.base = Some(empty_listing());
        }
        st.record_node(ino)?;
        st.node_mut(ino)?.lookups += 1;
        let a = st.file_attr(ino)?;
        drop(st);
        self.inner.backend.prepare_dirs(1);
        self.inner.wake.notify_one();
        Ok(a)
    }

    /// mknod: regular files, fifos, sockets and device nodes (stored as entries naming an empty
    /// LIT file, with the type in `st_mode` and the device number in `lafs.rdev`).
    pub async fn mknod(
        &self,
        parent: Ino,
        name: &OsStr,
        mode: u32,
        rdev: u64,
        uid: u32,
        gid: u32,
    ) -> Result<FileAttr> {
        let kind = FileKind::from_mode(mode).unwrap_or(FileKind::File);
        if kind == FileKind::File {
            let (a, fh) = self
                .create(parent, name, mode, libc::O_EXCL | libc::O_WRONLY, uid, gid)
                .await?;
            self.release(a.ino, fh).await?;
            return Ok(a);
        }
        if kind == FileKind::Dir || kind == FileKind::Symlink {
            return Err(VfsError::Invalid("mknod of a directory or symlink"));
        }
        self.new_special(parent, name, kind, mode, uid, gid, |a| a.rdev = rdev, &[])
            .await
    }

    /// symlink: the target is the content of a small file (LIT when ≤ 55 bytes) and also in
    /// `lafs.target`, with `st_mode` saying symlink.
    pub async fn symlink(
        &self,
        parent: Ino,
        name: &OsStr,
        target: &OsStr,
        uid: u32,
        gid: u32,
    ) -> Result<FileAttr> {
        let t = target.as_bytes().to_vec();
        if t.is_empty() {
            return Err(VfsError::NotFound);
        }
        if t.len() > 4095 {
            return Err(VfsError::NameTooLong);
        }
        let tt = t.clone();
        self.new_special(
            parent,
            name,
            FileKind::Symlink,
            0o777,
            uid,
            gid,
            move |a| a.target = Some(tt),
            &t,
        )
        .await
    }

    #[allow(clippy::too_many_arguments)]
    async fn new_special(
        &self,
        parent: Ino,
        name: &OsStr,
        kind: FileKind,
        mode: u32,
        uid: u32,
        gid: u32,
        f: impl FnOnce(&mut Attr),
        content: &[u8],
    ) -> Result<FileAttr> {
        let name = check_name(name)?;
        self.inner.load_dir(parent).await?;
        let mut st = self.lock();
        st.writable_dir(parent)?;
        if st.child(parent, &name)?.is_some() {
            return Err(VfsError::Exists);
        }
        let target = if content.len() <= 55 {
            Target::Cap(lit_cap(content))
        } else {
            let fid = st.journal.new_file().map_err(VfsError::Cache)?;
            fs::write(st.journal.data_path(fid), content).map_err(cache_err)?;
            st.add_cache(fid, content.len() as u64, None)?;
            Target::File(fid)
        };
        let ino = st.insert_new(
            parent,
            &name,
            target.clone(),
            kind,
            mode,
            uid,
            gid,
            now_ns(),
        );
        if let Target::File(fid) = target {
            if let Some(c) = st.caches.get_mut(&fid) {
                c.ino = Some(ino);
            }
        }
        let n = st.node_mut(ino)?;
        n.size = content.len() as u64;
        f(&mut n.attr);
        n.lookups += 1;
        st.record_node(ino)?;
        let a = st.file_attr(ino)?;
        drop(st);
        self.inner.wake.notify_one();
        self.inner.seal_wake.notify_one();
        Ok(a)
    }

    pub async fn readlink(&self, ino: Ino) -> Result<Vec<u8>> {
        let st = self.lock();
        let n = st.node(ino)?;
        if n.attr.kind != FileKind::Symlink {
            return Err(VfsError::Invalid("not a symlink"));
        }
        n.attr
            .target
            .clone()
            .ok_or(VfsError::Invalid("symlink without target"))
    }

    /// Hard links do not exist here (an entry holds a cap, not an inode).
    pub async fn link(&self, _ino: Ino, _newparent: Ino, _newname: &OsStr) -> Result<FileAttr> {
        Err(VfsError::NotPermitted("hard links are not supported"))
    }

    pub async fn unlink(&self, parent: Ino, name: &OsStr) -> Result<()> {
        self.remove(parent, name, false).await
    }

    pub async fn rmdir(&self, parent: Ino, name: &OsStr) -> Result<()> {
        self.remove(parent, name, true).await
    }

    async fn remove(&self, parent: Ino, name: &OsStr, dir: bool) -> Result<()> {
        let name = check_name(name)?;
        self.inner.load_dir(parent).await?;
        let ino = {
            let st = self.lock();
            st.writable_dir(parent)?;
            st.child(parent, &name)?.ok_or(VfsError::NotFound)?
        };
        if dir {
            self.inner.load_dir(ino).await?;
        }
        let mut st = self.lock();
        if st.child(parent, &name)? != Some(ino) {
            return Err(VfsError::NotFound);
        }
        let n = st.node(ino)?;
        match (&n.dir, dir) {
            (Some(_), false) => return Err(VfsError::IsDir),
            (None, true) => return Err(VfsError::NotDir),
            (Some(d), true) if !d.children.is_empty() => return Err(VfsError::NotEmpty),
            _ => {}
        }
        st.record_remove(parent, &name)?;
        st.unlink_node(ino);
        touch_dir(&mut st, parent);
        drop(st);
        self.inner.wake.notify_one();
        Ok(())
    }

    pub async fn rename(
        &self,
        parent: Ino,
        name: &OsStr,
        newparent: Ino,
        newname: &OsStr,
        flags: u32,
    ) -> Result<()> {
        let name = check_name(name)?;
        let newname = check_name(newname)?;
        if flags & !(RENAME_NOREPLACE | RENAME_EXCHANGE) != 0
            || flags == RENAME_NOREPLACE | RENAME_EXCHANGE
        {
            return Err(VfsError::Invalid("rename flags"));
        }
        self.inner.load_dir(parent).await?;
        self.inner.load_dir(newparent).await?;
        let dst = self.lock().child(newparent, &newname)?;
        if let Some(d) = dst {
            if self.lock().node(d)?.dir.is_some() {
                self.inner.load_dir(d).await?;
            }
        }
        let mut st = self.lock();
        st.writable_dir(parent)?;
        st.writable_dir(newparent)?;
        let src = st.child(parent, &name)?.ok_or(VfsError::NotFound)?;
        let dst = st.child(newparent, &newname)?;
        if dst == Some(src) {
            return Ok(());
        }
        // A directory cannot move below itself.
        let mut a = Some(newparent);
        while let Some(x) = a {
            if x == src || dst == Some(x) {
                return Err(VfsError::Invalid("rename into own subtree"));
            }
            a = st.node(x)?.parent;
        }
        let now = now_ns();
        if flags & RENAME_EXCHANGE != 0 {
            let dst = dst.ok_or(VfsError::NotFound)?;
            for (ino, p, nm) in [(src, newparent, &newname), (dst, parent, &name)] {
                let n = st.node_mut(ino)?;
                n.parent = Some(p);
                n.name = nm.clone();
                n.attr.ctime_ns = now;
                if let Some(d) = &mut st.node_mut(p)?.dir {
                    d.children.insert(nm.clone(), ino);
                }
            }
            st.record_node(src)?;
            st.record_node(dst)?;
        } else {
            if let Some(d) = dst {
                if flags & RENAME_NOREPLACE != 0 {
                    return Err(VfsError::Exists);
                }
                let s_dir = st.node(src)?.dir.is_some();
                let dn = st.node(d)?;
                match (&dn.dir, s_dir) {
                    (Some(_), false) => return Err(VfsError::IsDir),
                    (None, true) => return Err(VfsError::NotDir),
                    (Some(dd), true) if !dd.children.is_empty() => return Err(VfsError::NotEmpty),
                    _ => {}
                }
                // The replaced node goes; its record is superseded by the moved entry below.
                if let Some(p) = &mut st.node_mut(newparent)?.dir {
                    p.children.remove(&newname);
                }
                st.node_mut(d)?.parent = None;
                st.maybe_free(d);
            }
            // Destination first, then source: a crash between the two publishes can show the
            // entry twice, never lose it.
            if let Some(p) = &mut st.node_mut(parent)?.dir {
                p.children.remove(&name);
            }
            let n = st.node_mut(src)?;
            n.parent = Some(newparent);
            n.name = newname.clone();
            n.attr.ctime_ns = now;
            if let Some(p) = &mut st.node_mut(newparent)?.dir {
                p.children.insert(newname.clone(), src);
            }
            st.record_node(src)?;
            st.record_remove(parent, &name)?;
        }
        touch_dir(&mut st, parent);
        touch_dir(&mut st, newparent);
        drop(st);
        self.inner.wake.notify_one();
        Ok(())
    }

    pub fn statfs(&self) -> StatFs {
        let st = self.lock();
        let bsize = 4096u64;
        let total = self.inner.cfg.cache_size.max(1 << 40) / bsize;
        let used = st.cache_used() / bsize;
        StatFs {
            blocks: total,
            bfree: total - used.min(total),
            bavail: total - used.min(total),
            files: 1 << 32,
            ffree: (1 << 32) - st.nodes.len() as u64,
            bsize: bsize as u32,
            namelen: NAME_MAX as u32,
        }
    }

    fn xattr_name(name: &OsStr) -> Result<String> {
        let s = std::str::from_utf8(name.as_bytes()).map_err(|_| VfsError::NotUtf8)?;
        if !s.starts_with("user.") || s.len() <= 5 {
            return Err(VfsError::NotSupported("only user.* extended attributes"));
        }
        if s.len() > 255 {
            return Err(VfsError::NameTooLong);
        }
        Ok(s.to_string())
    }

    pub async fn getxattr(&self, ino: Ino, name: &OsStr) -> Result<Vec<u8>> {
        let name = Self::xattr_name(name)?;
        let st = self.lock();
        st.node(ino)?
            .attr
            .xattrs
            .get(&name)
            .cloned()
            .ok_or(VfsError::NoAttr)
    }

    pub async fn listxattr(&self, ino: Ino) -> Result<Vec<String>> {
        Ok(self.lock().node(ino)?.attr.xattrs.keys().cloned().collect())
    }

    pub async fn setxattr(&self, ino: Ino, name: &OsStr, value: &[u8], flags: i32) -> Result<()> {
        let name = Self::xattr_name(name)?;
        if value.len() > 64 * 1024 {
            return Err(VfsError::Invalid("xattr value too large"));
        }
        self.change_xattr(ino, |x| {
            let exists = x.contains_key(&name);
            if flags & XATTR_CREATE != 0 && exists {
                return Err(VfsError::Exists);
            }
            if flags & XATTR_REPLACE != 0 && !exists {
                return Err(VfsError::NoAttr);
            }
            x.insert(name, value.to_vec());
            Ok(())
        })
    }

    pub async fn removexattr(&self, ino: Ino, name: &OsStr) -> Result<()> {
        let name = Self::xattr_name(name)?;
        self.change_xattr(ino, |x| x.remove(&name).map(|_| ()).ok_or(VfsError::NoAttr))
    }

    fn change_xattr(
        &self,
        ino: Ino,
        f: impl FnOnce(&mut BTreeMap<String, Vec<u8>>) -> Result<()>,
    ) -> Result<()> {
        let mut st = self.lock();
        match st.node(ino)?.parent {
            Some(p) => {
                st.writable_dir(p)?;
            }
            // The mount root's attributes live in the journal ([`State::record_node`]).
            None if ino == ROOT_INO => {
                st.writable_dir(ino)?;
            }
            None => {
                return Err(VfsError::NotSupported(
                    "extended attributes of an unlinked file are not stored",
                ))
            }
        }
        let n = st.node_mut(ino)?;
        f(&mut n.attr.xattrs)?;
        n.attr.ctime_ns = now_ns();
        st.record_node(ino)?;
        drop(st);
        self.inner.wake.notify_one();
        Ok(())
    }

    /// Seals every data file of the cache now, open or not (a clean shutdown: what the grid
    /// does not get before the exit then survives a power cut too).
    pub async fn seal_all(&self) -> Result<()> {
        self.inner.seal_files(true).await
    }

    /// Waits until nothing is pending (for `umount --flush`); fails when an upload or publish
    /// failed meanwhile.
    pub async fn flush_all(&self) -> Result<()> {
        self.inner.flush_all().await
    }

    pub fn status(&self) -> Status {
        let st = self.lock();
        let refd = st.fids_referenced();
        let queued = st
            .caches
            .iter()
            .filter(|(f, c)| refd.contains(f) && !c.in_flight)
            .count();
        Status {
            uploads_queued: queued,
            uploads_in_flight: st.caches.values().filter(|c| c.in_flight).count(),
            bytes_dirty: st
                .caches
                .iter()
                .filter(|(f, _)| refd.contains(f))
                .map(|(_, c)| c.size)
                .sum(),
            cache_used: st.cache_used(),
            read_cache: st.segs.disk_used() as u64,
            cache_limit: self.inner.cfg.cache_size,
            pending_dir_changes: st.pending.values().map(BTreeMap::len).sum(),
            publishes: st.publishes,
            uploads_done: st.uploads_done,
            last_errors: st.errors.iter().cloned().collect(),
        }
    }
}

fn touch_dir(st: &mut State, ino: Ino) {
    if let Some(n) = st.nodes.get_mut(&ino) {
        let now = now_ns();
        n.attr.mtime_ns = now;
        n.attr.ctime_ns = now;
    }
}

/// Waits (on a blocking thread) until the journal frames a ticket covers are durable.
async fn wait_durable(t: journal::CommitTicket) -> Result<()> {
    tokio::task::spawn_blocking(move || t.wait())
        .await
        .map_err(|e| VfsError::Cache(e.to_string()))?
        .map_err(VfsError::Cache)
}

/// Reports (once) the pending upload error of `ino`'s data.
fn take_error(st: &mut State, ino: Ino) -> Result<()> {
    if let Target::File(f) = st.node(ino)?.target {
        if let Some(e) = st.caches.get_mut(&f).and_then(|c| c.last_error.take()) {
            return Err(VfsError::Upload(e));
        }
    }
    Ok(())
}

impl State {
    #[allow(clippy::too_many_arguments)]
    fn insert_new(
        &mut self,
        parent: Ino,
        name: &str,
        target: Target,
        kind: FileKind,
        mode: u32,
        uid: u32,
        gid: u32,
        now: i64,
    ) -> Ino {
        // A set-group-ID directory passes its group on to new entries, and its S_ISGID to new
        // subdirectories (Linux and BSD semantics; the kernel leaves this to the filesystem).
        let (mut mode, mut gid) = (mode, gid);
        if let Some(p) = self
            .nodes
            .get(&parent)
            .filter(|p| p.attr.perm & 0o2000 != 0)
        {
            gid = p.attr.gid;
            if kind == FileKind::Dir {
                mode |= 0o2000;
            }
        }
        let mut node = self.node_from_entry(parent, name, target, Metadata::new(), (uid, gid));
        node.attr = Attr::new(kind, mode, uid, gid, now);
        let ino = self.new_node(node);
        if let Some(d) = self.nodes.get_mut(&parent).and_then(|p| p.dir.as_mut()) {
            d.children.insert(name.to_string(), ino);
        }
        touch_dir(self, parent);
        ino
    }

    fn open_handle(&mut self, ino: Ino, write: bool) -> u64 {
        let fh = self.next_fh;
        self.next_fh += 1;
        self.handles.insert(
            fh,
            Handle {
                ino,
                write,
                last_end: 0,
            },
        );
        if let Some(n) = self.nodes.get_mut(&ino) {
            n.open += 1;
            if write {
                if let Target::File(f) = n.target {
                    if let Some(c) = self.caches.get_mut(&f) {
                        c.writers += 1;
                        c.ino = Some(ino);
                    }
                }
            }
        }
        fh
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A poisoned lock means a panic elsewhere; the state is still the best we have.
        self.st.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// [`Inner::load_dir`] for a lookup of `name`: when the listing is loaded and has the name,
    /// the lookup is answered from it without waiting on the grid, and an expired listing is
    /// re-read in the background; a name the listing lacks waits for the re-read (another
    /// writer may have made it).
    async fn load_dir_for_lookup(me: &Arc<Self>, ino: Ino, name: &str) -> Result<()> {
        // Some(true): wait for the listing; Some(false): answer now; None: answer now and
        // refresh in the background.
        let wait = {
            let mut st = me.lock();
            let d = st.node(ino)?.dir.as_ref().ok_or(VfsError::NotDir)?;
            match d.loaded_at {
                Some(at) if d.children.contains_key(name) => {
                    if at.elapsed() < me.cfg.dir_refresh || !st.refreshing.insert(ino) {
                        Some(false)
                    } else {
                        None
                    }
                }
                _ => Some(true),
            }
        };
        match wait {
            Some(true) => return me.load_dir(ino).await,
            Some(false) => return Ok(()),
            None => {}
        }
        let me2 = Arc::clone(me);
        tokio::spawn(async move {
            if let Err(e) = me2.load_dir(ino).await {
                tracing::debug!("lafs vfs: background refresh of a listing failed: {e}");
            }
            me2.lock().refreshing.remove(&ino);
        });
        Ok(())
    }

    /// Loads (or refreshes after `dir_refresh`) the listing of directory `ino`.
    async fn load_dir(&self, ino: Ino) -> Result<()> {
        let (cap, mut epoch) = {
            let st = self.lock();
            let n = st.node(ino)?;
            let d = n.dir.as_ref().ok_or(VfsError::NotDir)?;
            // A directory not yet on the grid has nothing to re-read.
            let local = matches!(n.target, Target::NewDir(_));
            if d.loaded_at
                .is_some_and(|t| local || t.elapsed() < self.cfg.dir_refresh)
            {
                return Ok(());
            }
            (st.dir_cap(ino)?, d.epoch)
        };
        let mut tries = 0;
        let (listing, mut st) = loop {
            let listing = if pending_id(&cap).is_some() {
                // Loaded from the journal after a restart: its listing is its pending records.
                empty_listing()
            } else {
                let (body, _v) = self.backend.read_dir(&cap).await.map_err(grid)?;
                Directory::unpack(dir_kind(&cap), &body)
                    .map_err(|e| VfsError::Grid(e.to_string()))?
            };
            let st = self.lock();
            let Some(d) = st.nodes.get(&ino).and_then(|n| n.dir.as_ref()) else {
                return Err(VfsError::NotFound);
            };
            if d.epoch == epoch {
                break (listing, st);
            }
            // A publish landed while the listing was read, so the listing may predate it and
            // its pending records are retired now: read again. Installing nothing instead
            // would leave a directory never loaded (after a restart) without the entries the
            // publish just wrote.
            tries += 1;
            if tries >= 16 {
                return Err(VfsError::Grid(
                    "directory kept changing while it was read".into(),
                ));
            }
            epoch = d.epoch;
        };
        let owner = (self.cfg.uid, self.cfg.gid);
        let Some(d) = st.nodes.get(&ino).and_then(|n| n.dir.as_ref()) else {
            return Err(VfsError::NotFound);
        };
        let old_base = d.base.clone();
        let children = d.children.clone();
        let first = d.loaded_at.is_none() && old_base.is_none();
        let pend: BTreeMap<String, Record> = st
            .pending
            .get(&cap)
            .map(|m| m.iter().map(|(k, (r, _))| (k.clone(), r.clone())).collect())
            .unwrap_or_default();
        let mut new_base = listing.clone();
        let mut new_children = BTreeMap::new();
        // Grid entries without pending changes: adopt the grid.
        for (name, child) in listing.iter() {
            if pend.contains_key(name) {
                continue;
            }
            let Some(cap) = child_cap(child) else {
                continue;
            };
            let existing = children.get(name).copied();
            let same = old_base.as_ref().and_then(|b| b.get(name)) == Some(child);
            match existing {
                Some(c)
                    if same
                        || st.nodes.get(&c).is_some_and(|n| {
                            n.target == Target::Cap(cap.clone()) && n.md == child.metadata
                        }) =>
                {
                    new_children.insert(name.to_string(), c);
                }
                Some(c)
                    if st.nodes.get(&c).is_some_and(|n| {
                        n.dir.is_some() == Cap::parse(&cap).is_directory() && n.dir.is_none()
                    }) =>
                {
                    let fresh = st.node_from_entry(
                        ino,
                        name,
                        Target::Cap(cap),
                        child.metadata.clone(),
                        owner,
                    );
                    if let Some(n) = st.nodes.get_mut(&c) {
                        n.attr = fresh.attr;
                        n.md = fresh.md;
                        n.target = fresh.target;
                        n.size = fresh.size;
                    }
                    new_children.insert(name.to_string(), c);
                }
                _ => {
                    let node = st.node_from_entry(
                        ino,
                        name,
                        Target::Cap(cap),
                        child.metadata.clone(),
                        owner,
                    );
                    let c = st.new_node(node);
                    new_children.insert(name.to_string(), c);
                }
            }
        }
        // Names with pending changes: the local state wins.
        for (name, rec) in &pend {
            if let Some(c) = children.get(name) {
                new_children.insert(name.clone(), *c);
            } else if let Op::Set { target, metadata } = &rec.op {
                let mut node =
                    st.node_from_entry(ino, name, target.clone(), metadata.clone(), owner);
                if let Target::File(f) = target {
                    node.size = st.caches.get(f).map_or(0, |c| c.size);
                }
                let c = st.new_node(node);
                if let Target::File(f) = target {
                    if let Some(cf) = st.caches.get_mut(f) {
                        cf.ino = Some(c);
                    }
                }
                new_children.insert(name.clone(), c);
            }
            if !first {
                match old_base.as_ref().and_then(|b| b.get(name)) {
                    Some(ch) => {
                        new_base.insert(name, ch.clone());
                    }
                    None => {
                        new_base.remove(name);
                    }
                }
            }
        }
        // Children that disappeared from the grid (and have no pending change) are unlinked.
        let gone: Vec<Ino> = children
            .iter()
            .filter(|(k, v)| new_children.get(*k) != Some(v))
            .map(|(_, v)| *v)
            .collect();
        if let Some(d) = st.nodes.get_mut(&ino).and_then(|n| n.dir.as_mut()) {
            d.children = new_children;
            d.base = Some(new_base);
            d.loaded_at = Some(Instant::now());
        }
        for g in gone {
            if let Some(n) = st.nodes.get_mut(&g) {
                n.parent = None;
            }
            st.maybe_free(g);
        }
        Ok(())
    }

    /// Makes sure `ino`'s content is in a local cache file (downloading it if needed);
    /// `truncate` to a size avoids downloading bytes past it.
    async fn materialize(&self, ino: Ino, truncate: Option<u64>) -> Result<()> {
        let (cap, size) = {
            let st = self.lock();
            let n = st.node(ino)?;
            if n.dir.is_some() {
                return Err(VfsError::IsDir);
            }
            match &n.target {
                Target::File(_) => return Ok(()),
                Target::Cap(c) => (c.clone(), n.size),
                Target::NewDir(_) => return Err(VfsError::IsDir),
            }
        };
        let want = truncate.map_or(size, |t| t.min(size));
        let mut data = Vec::with_capacity(want as usize);
        while (data.len() as u64) < want {
            let chunk = self
                .backend
                .read_file(
                    &cap,
                    data.len() as u64,
                    (want - data.len() as u64).min(8 << 20),
                )
                .await
                .map_err(grid)?;
            if chunk.is_empty() {
                return Err(VfsError::Grid("file shorter than its cap says".into()));
            }
            data.extend_from_slice(&chunk);
        }
        let mut st = self.lock();
        if st.node(ino)?.target != Target::Cap(cap.clone()) {
            return Ok(()); // someone else materialized it meanwhile
        }
        let fid = st.journal.new_file().map_err(VfsError::Cache)?;
        fs::write(st.journal.data_path(fid), &data).map_err(cache_err)?;
        st.add_cache(fid, data.len() as u64, Some(ino))?;
        let mtime_ns = st.node(ino)?.attr.mtime_ns;
        if let Some(c) = st.caches.get_mut(&fid) {
            c.ready_at = Instant::now() + self.cfg.write_back_delay;
            c.previous = Some(Previous { cap, mtime_ns });
        }
        let n = st.node_mut(ino)?;
        n.target = Target::File(fid);
        let open_writers = st
            .handles
            .values()
            .filter(|h| h.ino == ino && h.write)
            .count() as u32;
        if let Some(c) = st.caches.get_mut(&fid) {
            c.writers = open_writers;
        }
        st.record_node(ino)
    }

    async fn read(self: &Arc<Self>, ino: Ino, fh: u64, offset: u64, size: u32) -> Result<ReadData> {
        let r = match self.read_start(ino, fh, offset, size)? {
            ReadStart::Done(d) => return Ok(d),
            ReadStart::Grid(r) => r,
        };
        let mut datas = Vec::new();
        for s in r.segments(self.cfg.segment_size) {
            datas.push(self.segment(&r.cap, s, r.fsize).await?);
        }
        Ok(self.read_finish(fh, &r, datas))
    }

    /// [`Inner::read`] done at once when it needs no wait: the file is in the write-back cache,
    /// or every segment the range needs is in the segment cache or held by a download under
    /// way (a read stream: [`Backend::read_ready`]). `None`: call [`Inner::read`]. Only local
    /// work: a hit in the on-disk segment cache reads a local file.
    fn read_now(
        self: &Arc<Self>,
        ino: Ino,
        fh: u64,
        offset: u64,
        size: u32,
    ) -> Option<Result<ReadData>> {
        let r = match self.read_start(ino, fh, offset, size) {
            Err(e) => return Some(Err(e)),
            Ok(ReadStart::Done(d)) => return Some(Ok(d)),
            Ok(ReadStart::Grid(r)) => r,
        };
        let seg = self.cfg.segment_size;
        let datas = {
            let mut st = self.lock();
            let mut v = Vec::new();
            for s in r.segments(seg) {
                let d = match st.segs.get(&r.cap, s) {
                    Some(d) => d,
                    None => {
                        let d =
                            self.backend
                                .read_ready(&r.cap, s * seg, self.seg_len(s, r.fsize))?;
                        st.segs.insert(&r.cap, s, Arc::clone(&d));
                        d
                    }
                };
                v.push(d);
            }
            v
        };
        Some(Ok(self.read_finish(fh, &r, datas)))
    }

    /// The start of a read of `ino` through handle `fh`: served at once from the write-back
    /// cache (or empty, at or past the end), else the part of the grid file to read.
    fn read_start(&self, ino: Ino, fh: u64, offset: u64, size: u32) -> Result<ReadStart> {
        let mut st = self.lock();
        let n = st.node(ino)?;
        if n.dir.is_some() {
            return Err(VfsError::IsDir);
        }
        let h = st.handles.get(&fh).ok_or(VfsError::BadHandle)?;
        let sequential = h.last_end == offset && offset > 0;
        match n.target.clone() {
            Target::File(f) => {
                let c = st.caches.get(&f).ok_or(VfsError::NotFound)?;
                let len = (size as u64).min(c.size.saturating_sub(offset)) as usize;
                let mut buf = vec![0u8; len];
                c.file.read_exact_at(&mut buf, offset).map_err(cache_err)?;
                if let Some(h) = st.handles.get_mut(&fh) {
                    h.last_end = offset + len as u64;
                }
                Ok(ReadStart::Done(ReadData::Owned(buf)))
            }
            Target::Cap(cap) => {
                let end = (offset + size as u64).min(n.size);
                if offset >= end {
                    return Ok(ReadStart::Done(ReadData::Owned(Vec::new())));
                }
                Ok(ReadStart::Grid(GridRead {
                    cap,
                    fsize: n.size,
                    offset,
                    end,
                    sequential,
                }))
            }
            Target::NewDir(_) => Err(VfsError::IsDir),
        }
    }

    /// Bytes of segment `s` of a grid file of `fsize` bytes.
    fn seg_len(&self, s: u64, fsize: u64) -> u64 {
        let seg = self.cfg.segment_size;
        seg.min(fsize.saturating_sub(s * seg))
    }

    /// The end of the grid read `r` once it has its segments `datas` (in order, from the one
    /// holding `r.offset`): the reply's bytes (the segment itself, shared, when the range lies
    /// in one), the read-ahead of a sequential reader, and the handle's last end.
    fn read_finish(self: &Arc<Self>, fh: u64, r: &GridRead, datas: Vec<Arc<Vec<u8>>>) -> ReadData {
        let seg = self.cfg.segment_size;
        let (offset, end, cap, fsize) = (r.offset, r.end, r.cap.as_str(), r.fsize);
        let (first, last) = r.segments(seg).into_inner();
        // The part of segment `s` (its bytes `data`) inside the range.
        let part = |s: u64, data: &Arc<Vec<u8>>| {
            let seg_start = s * seg;
            let from = (offset.max(seg_start) - seg_start) as usize;
            let to = (end.min(seg_start + data.len() as u64) - seg_start) as usize;
            from.min(to)..to
        };
        let out = if datas.len() == 1 {
            let data = datas.into_iter().next().unwrap_or_default();
            let r = part(first, &data);
            ReadData::Shared(data, r)
        } else {
            let mut out = Vec::with_capacity((end - offset) as usize);
            for (s, data) in (first..).zip(&datas) {
                out.extend_from_slice(data.get(part(s, data)).unwrap_or_default());
            }
            ReadData::Owned(out)
        };
        if r.sequential {
            // Read-ahead: fetch the next segments in the background.
            let nsegs = fsize.div_ceil(seg);
            let ahead: Vec<u64> = {
                let mut st = self.lock();
                let mut v = Vec::new();
                for s in last + 1..(last + 1 + self.cfg.read_ahead).min(nsegs) {
                    // A segment a download under way brings (a read stream to the end of the
                    // file) needs no task of its own: the next read takes it from there.
                    if !st.segs.contains(cap, s)
                        && !self
                            .backend
                            .read_pending(cap, s * seg, self.seg_len(s, fsize))
                        && st.prefetching.insert((cap.to_string(), s))
                    {
                        v.push(s);
                    }
                }
                v
            };
            for s in ahead {
                let me = Arc::clone(self);
                let cap2 = cap.to_string();
                let len = self.seg_len(s, fsize);
                // On the runtime's handle: the FUSE thread (`read_now`) is outside it.
                self.rt.spawn(async move {
                    let r = me.backend.read_file_shared(&cap2, s * seg, len).await;
                    let mut st = me.lock();
                    st.prefetching.remove(&(cap2.clone(), s));
                    if let Ok(d) = r {
                        st.segs.insert_prefetched(&cap2, s, d);
                    }
                });
            }
        }
        if let Some(h) = self.lock().handles.get_mut(&fh) {
            h.last_end = end;
        }
        out
    }

    async fn segment(&self, cap: &str, s: u64, fsize: u64) -> Result<Arc<Vec<u8>>> {
        if let Some(d) = self.lock().segs.get(cap, s) {
            return Ok(d);
        }
        let seg = self.cfg.segment_size;
        let d = self
            .backend
            .read_file_shared(cap, s * seg, self.seg_len(s, fsize))
            .await
            .map_err(grid)?;
        self.lock().segs.insert(cap, s, Arc::clone(&d));
        Ok(d)
    }

    async fn write(&self, ino: Ino, fh: u64, offset: u64, data: &[u8]) -> Result<u32> {
        {
            let st = self.lock();
            let h = st.handles.get(&fh).ok_or(VfsError::BadHandle)?;
            if !h.write {
                return Err(VfsError::BadHandle);
            }
        }
        'again: loop {
            self.materialize(ino, None).await?;
            // Backpressure: wait while the cache is over its bound and another file's bytes can be
            // freed by an upload.
            loop {
                let notified = self.progress.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                {
                    let st = self.lock();
                    let Target::File(f) = st.node(ino)?.target else {
                        break;
                    };
                    let c = st.caches.get(&f).ok_or(VfsError::NotFound)?;
                    let growth = (offset + data.len() as u64).saturating_sub(c.size);
                    if growth == 0 || st.cache_used() + growth <= self.cfg.cache_size {
                        break;
                    }
                    let refd = st.fids_referenced();
                    let freeable = st
                        .caches
                        .iter()
                        .any(|(g, c)| *g != f && c.writers == 0 && refd.contains(g));
                    if !freeable {
                        break;
                    }
                }
                self.lock().space_waiters += 1;
                self.wake.notify_one();
                notified.await;
                let mut st = self.lock();
                st.space_waiters = st.space_waiters.saturating_sub(1);
            }
            let ticket = {
                let mut st = self.lock();
                let Target::File(f) = st.node(ino)?.target else {
                    // Uploaded and dropped meanwhile: materialize again.
                    continue 'again;
                };
                match st.journal.unseal(f).map_err(VfsError::Cache)? {
                    Some(t) => t,
                    None => return self.apply_write(&mut st, ino, f, offset, data),
                }
            };
            // The unseal is durable before the data changes; then look again.
            wait_durable(ticket).await?;
        }
    }

    /// The write when it needs no wait: the file has its cache file and the cache has room for
    /// what the write adds. `None`: [`Inner::write`] must do it (it may have to wait).
    fn write_now(&self, ino: Ino, fh: u64, offset: u64, data: &[u8]) -> Option<Result<u32>> {
        let mut st = self.lock();
        match st.handles.get(&fh) {
            Some(h) if h.write => {}
            _ => return Some(Err(VfsError::BadHandle)),
        }
        let Target::File(f) = st.nodes.get(&ino)?.target else {
            return None;
        };
        // A sealed file is unsealed durably before it changes: that waits for the disk.
        if st.journal.is_sealed(f) {
            return None;
        }
        let c = st.caches.get(&f)?;
        let growth = (offset + data.len() as u64).saturating_sub(c.size);
        if growth != 0 && st.cache_used() + growth > self.cfg.cache_size {
            return None;
        }
        Some(self.apply_write(&mut st, ino, f, offset, data))
    }

    /// Writes `data` at `offset` into cache file `f` of `ino`, under the state lock.
    fn apply_write(
        &self,
        st: &mut State,
        ino: Ino,
        f: u64,
        offset: u64,
        data: &[u8],
    ) -> Result<u32> {
        {
            let c = st.caches.get_mut(&f).ok_or(VfsError::NotFound)?;
            c.file.write_all_at(data, offset).map_err(cache_err)?;
            // The content hash follows a file written at its end from empty (a sequential
            // writer), beside the writes: the upload then starts encoding at once.
            if offset != c.size {
                c.hash = None;
            } else {
                if c.size == 0 {
                    c.hash = self
                        .backend
                        .content_hasher()
                        .map(|h| HashJob::new(h, Arc::clone(&c.file), Some(self.rt.clone())));
                }
                if let Some(j) = c.hash.as_ref() {
                    j.extend(offset + data.len() as u64, data);
                }
            }
            // An empty write writes nothing, past the end or not: the size stays.
            let grew = !data.is_empty() && offset + data.len() as u64 > c.size;
            if grew {
                c.size = offset + data.len() as u64;
            }
            c.gen += 1;
            c.clean_cap = None;
            if grew {
                st.fit_read_cache(self.cfg.cache_size);
            }
        }
        let now = now_ns();
        let n = st.node_mut(ino)?;
        n.attr.mtime_ns = now;
        n.attr.ctime_ns = now;
        n.dirty_md = true;
        Ok(data.len() as u32)
    }

    /// The keys `(dir cap, name)` from `ino` up to the root.
    fn path_keys(st: &State, ino: Ino) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut cur = ino;
        while let Some(n) = st.nodes.get(&cur) {
            let Some(p) = n.parent else { break };
            if let Ok(c) = st.dir_cap(p) {
                out.push((c, n.name.clone()));
            }
            cur = p;
        }
        out
    }

    /// The directories on the path of `ino` up to the root (and `ino` itself when `whole_dir`).
    fn path_dirs(st: &State, ino: Ino, whole_dir: bool) -> Vec<Ino> {
        let mut out = Vec::new();
        if whole_dir {
            out.push(ino);
        }
        let mut cur = ino;
        while let Some(p) = st.nodes.get(&cur).and_then(|n| n.parent) {
            out.push(p);
            cur = p;
        }
        out
    }

    async fn wait_synced(&self, ino: Ino, whole_dir: bool) -> Result<()> {
        // Directories are tracked by inode, not by name: a directory created on the grid
        // meanwhile changes its name in records (id -> cap), and a rename moves entries.
        let (seq_limit, fid, err0, dir_err0) = {
            let mut st = self.lock();
            if st.node(ino)?.dirty_md {
                st.record_node(ino)?;
            }
            take_error(&mut st, ino)?;
            let fid = match st.node(ino)?.target {
                Target::File(f) => Some(f),
                _ => None,
            };
            let err0 = fid.and_then(|f| st.caches.get(&f)).map_or(0, |c| c.errors);
            let dir_err0: HashMap<Ino, u64> = Self::path_dirs(&st, ino, whole_dir)
                .into_iter()
                .map(|i| {
                    let e = st
                        .dir_cap(i)
                        .ok()
                        .and_then(|d| st.dir_errors.get(&d).copied());
                    (i, e.unwrap_or(0))
                })
                .collect();
            (st.journal.peek_seq(), fid, err0, dir_err0)
        };
        loop {
            let notified = self.progress.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut st = self.lock();
                let keys = Self::path_keys(&st, ino);
                let dircap = if whole_dir {
                    st.dir_cap(ino).ok()
                } else {
                    None
                };
                if let Some(c) = fid.and_then(|f| st.caches.get_mut(&f)) {
                    if c.errors > err0 {
                        let e = c
                            .last_error
                            .take()
                            .unwrap_or_else(|| "upload failed".into());
                        return Err(VfsError::Upload(e));
                    }
                }
                for (i, e0) in &dir_err0 {
                    let Ok(d) = st.dir_cap(*i) else { continue };
                    if st.dir_errors.get(&d).copied().unwrap_or(0) > *e0 {
                        let e = st.errors.back().cloned().unwrap_or_default();
                        return Err(VfsError::Conflict(e));
                    }
                }
                let old = |d: &str, name: Option<&str>| {
                    st.pending.get(d).is_some_and(|m| {
                        m.iter()
                            .any(|(k, (r, _))| r.seq < seq_limit && name.is_none_or(|n| n == k))
                    })
                };
                let mut busy: Vec<String> = keys
                    .iter()
                    .filter(|(d, n)| old(d, Some(n)))
                    .map(|k| k.0.clone())
                    .collect();
                if let Some(d) = &dircap {
                    if old(d, None) {
                        busy.push(d.clone());
                    }
                }
                if busy.is_empty() {
                    return Ok(());
                }
                for d in busy {
                    st.urgent_dirs.insert(d);
                }
                if let Some(c) = fid.and_then(|f| st.caches.get_mut(&f)) {
                    c.urgent = true;
                }
                // Files whose records are on the path are urgent too.
                let fids: Vec<u64> = st
                    .pending
                    .values()
                    .flat_map(|m| m.values())
                    .filter(|(r, _)| r.seq < seq_limit)
                    .filter_map(|(r, _)| match &r.op {
                        Op::Set {
                            target: Target::File(f),
                            ..
                        } => Some(*f),
                        _ => None,
                    })
                    .collect();
                for f in fids {
                    if let Some(c) = st.caches.get_mut(&f) {
                        if whole_dir || Some(f) == fid {
                            c.urgent = true;
                        }
                    }
                }
            }
            self.wake.notify_one();
            notified.await;
        }
    }

    async fn flush_all(&self) -> Result<()> {
        let (errs0, dir0) = {
            let st = self.lock();
            (
                st.caches.values().map(|c| c.errors).sum::<u64>(),
                st.dir_errors.values().sum::<u64>(),
            )
        };
        loop {
            let notified = self.progress.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut st = self.lock();
                // Errors first: a conflict may have dropped the last pending change.
                let errs = st.caches.values().map(|c| c.errors).sum::<u64>();
                let dirs = st.dir_errors.values().sum::<u64>();
                if errs > errs0 || dirs > dir0 {
                    return Err(VfsError::Upload(
                        st.errors.back().cloned().unwrap_or_default(),
                    ));
                }
                if st.pending.values().all(BTreeMap::is_empty) {
                    return Ok(());
                }
                let ds: Vec<String> = st.pending.keys().cloned().collect();
                st.urgent_dirs.extend(ds);
                for c in st.caches.values_mut() {
                    c.urgent = true;
                }
            }
            self.wake.notify_one();
            notified.await;
        }
    }

    /// Seals data files in the background: woken by every release (and truncate, symlink
    /// creation, and at start), it seals each closed data file a journal record names.
    async fn sealer(self: Arc<Self>) {
        loop {
            let notified = self.seal_wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            tokio::time::sleep(self.cfg.seal_delay).await;
            if let Err(e) = self.seal_files(false).await {
                self.lock()
                    .push_error(format!("sealing cache files failed: {e}"));
                tokio::time::sleep(self.cfg.retry_delay).await;
                continue;
            }
            notified.await;
        }
    }

    /// One seal pass over the data files named by journal records that are not sealed and have
    /// no writer (`all`: writers too): fdatasync each, fsync the data directory (a new file's
    /// name must survive too), then, under the state lock, one seal frame per file whose
    /// generation did not change since it was read, with the length it has at that generation.
    /// A write that raced the sync changes the generation, so a seal never vouches for content
    /// that was not synced. The sync runs on a blocking thread without the state lock.
    async fn seal_files(&self, all: bool) -> Result<()> {
        let _one = self.seal_pass.lock().await;
        let (batch, data_dir) = {
            let st = self.lock();
            let refd = st.fids_referenced();
            let batch: Vec<(u64, u64, Arc<fs::File>)> = st
                .caches
                .iter()
                .filter(|(f, c)| {
                    refd.contains(f) && (all || c.writers == 0) && !st.journal.is_sealed(**f)
                })
                .map(|(f, c)| (*f, c.gen, Arc::clone(&c.file)))
                .collect();
            (batch, st.journal.data_dir())
        };
        if batch.is_empty() {
            return Ok(());
        }
        let files: Vec<(u64, Arc<fs::File>)> =
            batch.iter().map(|(f, _, c)| (*f, Arc::clone(c))).collect();
        #[cfg(test)]
        let gate = self
            .seal_gate
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        #[cfg(test)]
        let g2 = gate.clone();
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            #[cfg(test)]
            let note = |s: Option<u64>| {
                if let Some(g) = &g2 {
                    g.syncs.lock().unwrap_or_else(|e| e.into_inner()).push(s);
                }
            };
            for (_fid, f) in files {
                f.sync_data()?;
                #[cfg(test)]
                note(Some(_fid));
            }
            fs::File::open(&data_dir)?.sync_all()?;
            #[cfg(test)]
            note(None);
            Ok(())
        })
        .await
        .map_err(cache_err)?
        .map_err(cache_err)?;
        #[cfg(test)]
        if let Some(g) = gate {
            g.synced.notify_one();
            g.resume.notified().await;
        }
        let st = self.lock();
        let sealed: Vec<(u64, u64)> = batch
            .iter()
            .filter_map(|(f, gen, _)| {
                let c = st.caches.get(f)?;
                (c.gen == *gen).then_some((*f, c.size))
            })
            .collect();
        st.journal.seal(&sealed).map_err(VfsError::Cache)
    }

    async fn flusher(self: Arc<Self>) {
        loop {
            let notified = self.wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let next = self.step().await;
            self.progress.notify_waiters();
            tokio::select! {
                _ = &mut notified => {}
                _ = tokio::time::sleep(next) => {}
            }
        }
    }

    /// One round: upload due files, then publish due directories. Returns how long to sleep.
    async fn step(&self) -> Duration {
        let now = Instant::now();
        let delay = self.cfg.write_back_delay;
        let mut next = Duration::from_millis(500);
        let due: Vec<(u64, u64, PathBuf, KeyFrom)> = {
            let mut st = self.lock();
            let refd = st.fids_referenced();
            let pressure = st.cache_used() > self.cfg.cache_size || st.space_waiters > 0;
            // Closed cache files whose content was uploaded while open give way to their cap.
            let clean: Vec<(u64, String)> = st
                .caches
                .iter()
                .filter(|(f, c)| !refd.contains(f) && c.writers == 0 && !c.in_flight)
                .filter_map(|(f, c)| c.clean_cap.clone().map(|k| (*f, k)))
                .collect();
            for (f, cap) in clean {
                let ino = st
                    .nodes
                    .iter()
                    .find(|(_, n)| n.target == Target::File(f))
                    .map(|(i, _)| *i);
                let size = st.caches.get(&f).map_or(0, |c| c.size);
                if let Some(n) = ino.and_then(|i| st.nodes.get_mut(&i)) {
                    n.target = Target::Cap(cap);
                    n.size = size;
                }
            }
            // Unreferenced, unowned cache files are garbage (e.g. after a restart).
            let garbage: Vec<u64> = st
                .caches
                .iter()
                .filter(|(f, c)| {
                    !refd.contains(f)
                        && c.writers == 0
                        && !c.in_flight
                        && !st.nodes.values().any(|n| n.target == Target::File(**f))
                })
                .map(|(f, _)| *f)
                .collect();
            for g in garbage {
                st.caches.remove(&g);
                st.journal.remove_file(g);
            }
            st.fit_read_cache(self.cfg.cache_size);
            let mut due = Vec::new();
            let paths: Vec<(u64, PathBuf)> = st
                .caches
                .keys()
                .map(|f| (*f, st.journal.data_path(*f)))
                .collect();
            for (f, p) in paths {
                let Some(c) = st.caches.get_mut(&f) else {
                    continue;
                };
                if !refd.contains(&f) || (c.writers > 0 && !c.urgent) || c.in_flight {
                    continue;
                }
                if let Some(r) = c.retry_at {
                    if r > now {
                        next = next.min(r - now);
                        continue;
                    }
                }
                if c.urgent || pressure || c.ready_at <= now {
                    c.in_flight = true;
                    c.urgent = false;
                    // The key of this generation: from the hash fed by the writes (it covers
                    // exactly `0 .. size`; the upload waits for its last bytes), or kept from
                    // an earlier try of this generation.
                    let key = match c.hash.take() {
                        Some(j) => KeyFrom::Hash(j, c.size),
                        None => KeyFrom::Known(
                            c.key
                                .as_ref()
                                .filter(|(g, _)| *g == c.gen)
                                .map(|(_, k)| k.clone()),
                        ),
                    };
                    due.push((f, c.gen, p, key));
                } else {
                    next = next.min(c.ready_at - now);
                }
            }
            due
        };
        // Upload, at most `max_uploads` at once.
        let mut due = due.into_iter().peekable();
        while due.peek().is_some() {
            let mut set = tokio::task::JoinSet::new();
            for (f, gen, p, key) in due.by_ref().take(self.cfg.max_uploads.max(1)) {
                let b = Arc::clone(&self.backend);
                set.spawn(async move {
                    let key = match key {
                        KeyFrom::Hash(j, size) => j.finish(size).await,
                        KeyFrom::Known(k) => k,
                    };
                    let res = b.upload_file_keyed(&p, key.clone()).await;
                    (f, gen, key, res)
                });
            }
            while let Some(r) = set.join_next().await {
                let Ok((f, gen, key, res)) = r else { continue };
                let mut st = self.lock();
                // Kept for a retry of this generation.
                if let (Some(k), Some(c)) = (key, st.caches.get_mut(&f)) {
                    if c.gen == gen {
                        c.key = Some((gen, k));
                    }
                }
                match res {
                    Ok(cap) => {
                        st.uploads_done += 1;
                        self.resolve(&mut st, f, gen, cap);
                    }
                    Err(e) => {
                        let msg = format!("upload of a file failed: {e}");
                        // The file changed while this upload read it (a write or a shrinking
                        // truncate: the read can even hit the new EOF). The failure concerns
                        // content that no longer exists; the current content is uploaded on
                        // its own schedule and reports its own errors.
                        if st.caches.get(&f).is_some_and(|c| c.gen != gen) {
                            if let Some(c) = st.caches.get_mut(&f) {
                                c.in_flight = false;
                            }
                            drop(st);
                            self.progress.notify_waiters();
                            self.wake.notify_one();
                            continue;
                        }
                        st.push_error(msg.clone());
                        if let Some(c) = st.caches.get_mut(&f) {
                            c.in_flight = false;
                            c.errors += 1;
                            c.last_error = Some(msg);
                            c.retry_at = Some(Instant::now() + self.cfg.retry_delay);
                        }
                    }
                }
                drop(st);
                self.progress.notify_waiters();
            }
        }
        next = next.min(self.create_dirs(now).await);
        // Publish directories whose resolved changes are due.
        let dirs: Vec<String> = {
            let mut st = self.lock();
            let pressure = st.cache_used() > self.cfg.cache_size || st.space_waiters > 0;
            let mut out = Vec::new();
            for (d, m) in &st.pending {
                if pending_id(d).is_some() {
                    // Not on the grid yet: created (with these changes) by `create_dirs`.
                    continue;
                }
                let resolved: Vec<&Instant> = m
                    .values()
                    .filter(|(r, _)| !unresolved(&r.op))
                    .map(|(_, t)| t)
                    .collect();
                let Some(oldest) = resolved.iter().min() else {
                    continue;
                };
                if st.urgent_dirs.contains(d) || pressure || **oldest + delay <= now {
                    out.push(d.clone());
                } else {
                    next = next.min(**oldest + delay - now);
                }
            }
            for d in &out {
                st.urgent_dirs.remove(d);
            }
            out
        };
        for d in dirs {
            if let Err(e) = self.publish(&d).await {
                let mut st = self.lock();
                st.push_error(format!("directory publish failed: {e}"));
                *st.dir_errors.entry(d.clone()).or_default() += 1;
                next = next.min(self.cfg.retry_delay);
            }
        }
        next.max(Duration::from_millis(1))
    }

    /// Creates on the grid the directories made by `mkdir` whose entry in their parent is due
    /// (by age, urgency of the directory or its parent, or cache pressure), deepest first, so a
    /// parent is created already holding its new subdirectories. Returns how long until the
    /// next one is due.
    async fn create_dirs(&self, now: Instant) -> Duration {
        let delay = self.cfg.write_back_delay;
        let mut next = Duration::from_secs(3600);
        let levels: Vec<Vec<u64>> = {
            let mut st = self.lock();
            // id -> (the directory holding its entry, when that entry became pending).
            let mut links: HashMap<u64, (String, Instant)> = HashMap::new();
            for (d, m) in &st.pending {
                for (r, t) in m.values() {
                    if let Op::Set {
                        target: Target::NewDir(id),
                        ..
                    } = &r.op
                    {
                        links.insert(*id, (d.clone(), *t));
                    }
                }
            }
            // Changes inside a pending directory that nothing links any more can never be
            // published (it left the tree; normally `maybe_free` already dropped them).
            let orphans: Vec<String> = st
                .pending
                .keys()
                .filter(|k| pending_id(k).is_some_and(|id| !links.contains_key(&id)))
                .filter(|k| !st.publishing.contains(*k))
                .cloned()
                .collect();
            for k in orphans {
                if let Some(m) = st.pending.remove(&k) {
                    for (r, _) in m.values() {
                        st.journal.delete(r.seq);
                    }
                }
            }
            let pressure = st.cache_used() > self.cfg.cache_size || st.space_waiters > 0;
            let mut due: Vec<(usize, u64)> = Vec::new();
            for (id, (parent, since)) in &links {
                let key = pending_key(*id);
                if st.publishing.contains(&key) {
                    continue; // being created
                }
                if let Some(r) = st.create_retry.get(id) {
                    if *r > now {
                        next = next.min(*r - now);
                        continue;
                    }
                }
                let urgent = st.urgent_dirs.contains(&key) || st.urgent_dirs.contains(parent);
                if urgent || pressure || *since + delay <= now {
                    // Depth: the number of pending directories above it.
                    let mut depth = 0;
                    let mut p = parent;
                    while let Some(pid) = pending_id(p) {
                        depth += 1;
                        match links.get(&pid) {
                            Some((pp, _)) if depth <= links.len() => p = pp,
                            _ => break,
                        }
                    }
                    due.push((depth, *id));
                } else {
                    next = next.min(*since + delay - now);
                }
            }
            due.sort_by_key(|d| std::cmp::Reverse(d.0));
            let mut levels: Vec<Vec<u64>> = Vec::new();
            let mut last = None;
            for (depth, id) in due {
                st.publishing.insert(pending_key(id));
                if last != Some(depth) {
                    levels.push(Vec::new());
                    last = Some(depth);
                }
                if let Some(l) = levels.last_mut() {
                    l.push(id);
                }
            }
            levels
        };
        for level in levels {
            for chunk in level.chunks(self.cfg.max_uploads.max(1)) {
                let results =
                    futures::future::join_all(chunk.iter().map(|id| self.create_dir(*id))).await;
                for (id, r) in chunk.iter().zip(results) {
                    let key = pending_key(*id);
                    let mut st = self.lock();
                    st.publishing.remove(&key);
                    if let Err(e) = r {
                        st.push_error(format!("directory creation failed: {e}"));
                        *st.dir_errors.entry(key).or_default() += 1;
                        st.create_retry
                            .insert(*id, Instant::now() + self.cfg.retry_delay);
                        next = next.min(self.cfg.retry_delay);
                    }
                }
                self.progress.notify_waiters();
            }
        }
        next
    }

    /// Creates the pending directory `id` on the grid holding its resolved entries, then
    /// renames every record naming it to name its cap (one journal frame) and retires the
    /// records the creation published. The caller holds `id`'s key in `publishing`, so a name
    /// removed meanwhile is recorded as a removal.
    async fn create_dir(&self, id: u64) -> Result<()> {
        let key = pending_key(id);
        let reserved = self.backend.reserve_dir().await.map_err(grid)?;
        let writekey = dir_writekey(&reserved.cap)
            .ok_or(VfsError::Grid("a new directory without a write cap".into()))?;
        let kind = DirKind::Mutable {
            writekey: Some(writekey),
        };
        let (listing, included) = {
            let st = self.lock();
            let recs = st.resolved_records(&key);
            let secs = now_ns() as f64 / 1e9;
            let mut dir = Directory::new(kind);
            for r in &recs {
                if let Op::Set {
                    target: Target::Cap(c),
                    metadata,
                } = &r.op
                {
                    dir.insert(
                        &r.name,
                        child_for(c, update_metadata(None, Some(metadata), secs)),
                    );
                }
            }
            (dir, recs)
        };
        // As for a publish: an entry changed while the creation is under way keeps a record
        // that will be published over the created entry, and a crash can leave the records
        // the creation published live (the creation frame is written, their retirements are
        // not); their `accept` sets must name the created entries, or they would be taken for
        // another writer's.
        self.note_intent(&key, &included, &listing).await?;
        let body = listing.pack().map_err(|e| VfsError::Grid(e.to_string()))?;
        self.backend
            .create_dir(&reserved, body)
            .await
            .map_err(grid)?;
        let cap = reserved.cap.clone();
        let mut st = self.lock();
        let linked = st.pending.values().any(|m| {
            m.values().any(
                |(r, _)| matches!(&r.op, Op::Set { target: Target::NewDir(d), .. } if *d == id),
            )
        });
        if !linked {
            // Removed while it was being created: what the grid got is unreferenced garbage.
            if let Some(m) = st.pending.remove(&key) {
                for (r, _) in m.values() {
                    st.journal.delete(r.seq);
                }
            }
            return Ok(());
        }
        // The records naming the id, renamed (journal first: on failure nothing changes).
        let mut renamed: Vec<Record> = Vec::new();
        for m in st.pending.values() {
            for (r, _) in m.values() {
                let mut r2 = r.clone();
                if r2.translate(id, &cap) {
                    renamed.push(r2);
                }
            }
        }
        st.journal
            .dir_created(id, &cap, &renamed)
            .map_err(VfsError::Cache)?;
        let moved = st.pending.remove(&key);
        for m in st.pending.values_mut() {
            for (r, _) in m.values_mut() {
                r.translate(id, &cap);
            }
        }
        if let Some(mut m) = moved {
            for (r, _) in m.values_mut() {
                r.translate(id, &cap);
            }
            // Retire what the creation published (unless changed meanwhile).
            for r in &included {
                if m.get(&r.name).is_some_and(|(x, _)| x.seq == r.seq) {
                    m.remove(&r.name);
                    st.journal.delete(r.seq);
                }
            }
            if !m.is_empty() {
                st.pending.insert(cap.clone(), m);
            }
        }
        st.create_retry.remove(&id);
        if st.urgent_dirs.remove(&key) {
            st.urgent_dirs.insert(cap.clone());
        }
        if let Some(e) = st.dir_errors.remove(&key) {
            st.dir_errors.insert(cap.clone(), e);
        }
        if let Some(ino) = st.dir_ino.remove(&key) {
            st.dir_ino.insert(cap.clone(), ino);
            if let Some(n) = st.nodes.get_mut(&ino) {
                n.target = Target::Cap(cap.clone());
                if let Some(d) = n.dir.as_mut() {
                    d.base = Some(listing);
                    d.epoch += 1;
                }
            }
        }
        st.publishes += 1;
        Ok(())
    }

    /// An upload of `fid` at generation `gen` finished with `cap`: records naming the file now
    /// name the cap (same seq), and the cache file is freed — unless the file changed meanwhile.
    fn resolve(&self, st: &mut State, fid: u64, gen: u64, cap: String) {
        let Some(c) = st.caches.get_mut(&fid) else {
            return;
        };
        c.in_flight = false;
        if c.gen != gen {
            return;
        }
        c.retry_at = None;
        let still_open = c.writers > 0;
        let cache_ino = c.ino;
        let ino = cache_ino
            .filter(|i| {
                st.nodes
                    .get(i)
                    .is_some_and(|n| n.target == Target::File(fid))
            })
            .or_else(|| {
                st.nodes
                    .iter()
                    .find(|(_, n)| n.target == Target::File(fid))
                    .map(|(i, _)| *i)
            });
        if still_open {
            // The file stays in the cache for its writer; this upload is now the version its
            // entry falls back to after a power cut (fsync acknowledged it: never undone).
            let mtime_ns = ino.and_then(|i| st.nodes.get(&i)).map(|n| n.attr.mtime_ns);
            if let Some(c) = st.caches.get_mut(&fid) {
                c.clean_cap = Some(cap.clone());
                if let Some(mtime_ns) = mtime_ns {
                    c.previous = Some(Previous {
                        cap: cap.clone(),
                        mtime_ns,
                    });
                }
            }
        }
        let mut rewrites = Vec::new();
        for m in st.pending.values() {
            for (r, _) in m.values() {
                if let Op::Set {
                    target: Target::File(f),
                    metadata,
                } = &r.op
                {
                    if *f == fid {
                        let mut r2 = r.clone();
                        r2.op = Op::Set {
                            target: Target::Cap(cap.clone()),
                            metadata: metadata.clone(),
                        };
                        r2.previous = None;
                        rewrites.push(r2);
                    }
                }
            }
        }
        for r in rewrites {
            if let Err(e) = st.rewrite_record(r) {
                st.push_error(format!("journal write failed: {e}"));
                return;
            }
        }
        if still_open {
            return;
        }
        let size = st.caches.get(&fid).map_or(0, |c| c.size);
        if let Some(n) = ino.and_then(|i| st.nodes.get_mut(&i)) {
            n.target = Target::Cap(cap);
            n.size = size;
        }
        st.caches.remove(&fid);
        st.journal.remove_file(fid);
        st.fit_read_cache(self.cfg.cache_size);
    }

    /// Publishes the resolved pending changes of one directory in one test-and-write, merging
    /// with another writer's non-overlapping changes and dropping (and reporting) overlapping ones.
    async fn publish(&self, dircap: &str) -> Result<()> {
        self.lock().publishing.insert(dircap.to_string());
        let r = self.publish_inner(dircap).await;
        self.lock().publishing.remove(dircap);
        r
    }

    /// Before a publish (or the creation) of `applied` (entries as in `dir`) can reach the grid:
    /// adds the entry each writes to the `accept` set of the name's live record (the write may
    /// land and a crash, a lost reply or a change made meanwhile keep the record pending), and
    /// waits until that is durable.
    async fn note_intent(&self, dircap: &str, applied: &[Record], dir: &Directory) -> Result<()> {
        let ticket = {
            let mut st = self.lock();
            let mut rewrites = Vec::new();
            for r in applied {
                let fp = child_fingerprint(dir.get(&r.name));
                let Some((live, _)) = st.pending.get(dircap).and_then(|m| m.get(&r.name)) else {
                    continue;
                };
                // A record without a set is checked against listings only: nothing to add.
                if live.accept.as_ref().is_some_and(|a| !a.contains(&fp)) {
                    let mut live = live.clone();
                    live.accept.get_or_insert_with(BTreeSet::new).insert(fp);
                    rewrites.push(live);
                }
            }
            if rewrites.is_empty() {
                return Ok(());
            }
            for r in rewrites {
                st.rewrite_record(r).map_err(VfsError::Cache)?;
            }
            st.journal.ticket()
        };
        wait_durable(ticket).await
    }

    async fn publish_inner(&self, dircap: &str) -> Result<()> {
        let writekey = dir_writekey(dircap).ok_or(VfsError::ReadOnly)?;
        let kind = DirKind::Mutable {
            writekey: Some(writekey),
        };
        // What each change is checked against: its record's `accept` set when it has one
        // (kept across restarts: the entry it was based on and our own publishes of the name),
        // else the listing it was based on; after a lost test-and-write race, the version read
        // before it (already checked).
        let mut reference: Option<Directory> = None;
        let mut retried = false;
        let mut dropped: HashSet<u64> = HashSet::new();
        let mut conflicts: Vec<String> = Vec::new();
        // Conflicting name -> the name our version is kept under (in the last attempt's body).
        let mut copies: BTreeMap<String, String> = BTreeMap::new();
        for _ in 0..10 {
            let (body, ver) = self.backend.read_dir(dircap).await.map_err(grid)?;
            let cur = Directory::unpack(kind, &body).map_err(|e| VfsError::Grid(e.to_string()))?;
            let (recs, epoch) = {
                let st = self.lock();
                let recs = st.resolved_records(dircap);
                let dino = st.dir_ino.get(dircap).copied();
                let dstate = dino
                    .and_then(|i| st.nodes.get(&i))
                    .and_then(|n| n.dir.as_ref());
                if reference.is_none() {
                    reference = dstate.and_then(|d| d.base.clone());
                }
                (recs, dstate.map(|d| d.epoch))
            };
            let _ = epoch;
            if recs.is_empty() {
                return Ok(());
            }
            let mut dir = cur.clone();
            let secs = now_ns() as f64 / 1e9;
            let mut applied = Vec::new();
            for r in &recs {
                let theirs = !dropped.contains(&r.seq)
                    && match (&r.accept, &reference) {
                        (Some(a), _) if !retried => {
                            !a.contains(&child_fingerprint(cur.get(&r.name)))
                        }
                        (_, Some(b)) => b.get(&r.name) != cur.get(&r.name),
                        (_, None) => false,
                    };
                if theirs {
                    dropped.insert(r.seq);
                    conflicts.push(r.name.clone());
                }
                if dropped.contains(&r.seq) {
                    // Their version keeps the name; ours is kept beside it, in the same publish,
                    // so the losing side loses nothing (a removal has nothing to keep).
                    if let Op::Set {
                        target: Target::Cap(c),
                        metadata,
                    } = &r.op
                    {
                        if let Some(copy) = conflict_copy_name(&dir, &r.name, c) {
                            let md = update_metadata(None, Some(metadata), secs);
                            dir.insert(&copy, child_for(c, md));
                            copies.insert(r.name.clone(), copy);
                        }
                    }
                    continue;
                }
                match &r.op {
                    Op::Remove => {
                        dir.remove(&r.name);
                    }
                    Op::Set {
                        target: Target::Cap(c),
                        metadata,
                    } => {
                        let md = update_metadata(
                            cur.get(&r.name).map(|c| &c.metadata),
                            Some(metadata),
                            secs,
                        );
                        dir.insert(&r.name, child_for(c, md));
                    }
                    Op::Set {
                        target: Target::File(_) | Target::NewDir(_),
                        ..
                    } => continue,
                }
                applied.push(r.clone());
            }
            let new_body = dir.pack().map_err(|e| VfsError::Grid(e.to_string()))?;
            let published = if new_body == body {
                true
            } else {
                self.note_intent(dircap, &applied, &dir).await?;
                match self.backend.publish_dir(dircap, &ver, new_body).await {
                    Ok(_) => true,
                    Err(BackendError::Conflict) => false,
                    Err(e) => return Err(grid(e)),
                }
            };
            if !published {
                reference = Some(cur);
                retried = true;
                continue;
            }
            let mut st = self.lock();
            st.publishes += 1;
            for r in recs
                .iter()
                .filter(|r| dropped.contains(&r.seq))
                .chain(applied.iter())
            {
                let slot = st.pending.get_mut(dircap);
                if let Some(m) = slot {
                    if m.get(&r.name).is_some_and(|(x, _)| x.seq == r.seq) {
                        m.remove(&r.name);
                        st.journal.delete(r.seq);
                    }
                }
            }
            if st.pending.get(dircap).is_some_and(BTreeMap::is_empty) {
                st.pending.remove(dircap);
            }
            let dino = st.dir_ino.get(dircap).copied();
            if let Some(d) = dino
                .and_then(|i| st.nodes.get_mut(&i))
                .and_then(|n| n.dir.as_mut())
            {
                d.epoch += 1;
                let base = d.base.get_or_insert_with(|| Directory::new(kind));
                for r in recs.iter() {
                    match dir.get(&r.name) {
                        Some(c) => {
                            base.insert(&r.name, c.clone());
                        }
                        None => {
                            base.remove(&r.name);
                        }
                    }
                }
                if !conflicts.is_empty() {
                    // Show the other writer's version at the next access: the node of a
                    // conflicting name still holds our dropped version, so the listing it is
                    // based on must not claim the winner's entry (the refresh adopts an entry
                    // only where the grid differs from the base).
                    for name in &conflicts {
                        base.remove(name);
                    }
                    d.loaded_at = None;
                }
            }
            if !conflicts.is_empty() {
                let msg = if copies.is_empty() {
                    format!("another writer changed {conflicts:?}; their version was kept")
                } else {
                    format!(
                        "another writer changed {conflicts:?}; their version was kept, ours \
                         is beside it as {:?}",
                        copies.values().collect::<Vec<_>>()
                    )
                };
                st.push_error(msg.clone());
                *st.dir_errors.entry(dircap.to_string()).or_default() += 1;
                return Err(VfsError::Conflict(msg));
            }
            return Ok(());
        }
        Err(VfsError::Grid("directory kept changing".into()))
    }
}
