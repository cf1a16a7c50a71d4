//! The write-back journal on local disk, with group commit.
//!
//! Layout of the cache directory (mode 0700: records hold caps, which are secrets):
//! - `journal/log`: an append-only log of frames. A frame is a 4-byte little-endian length, the
//!   first 8 bytes of `tagged_hash("lafs-journal-frame-v1", payload)`, then the payload: a record
//!   (JSON: one pending directory change `(dir, name) -> set(target, metadata) | remove`
//!   with its `seq`, the fingerprints of the grid entries it may replace, `accept`, and for a
//!   set naming a data file the file's previous version on the grid, `previous`), a
//!   retirement `{"retire": seq}`, a creation `{"created": id, "cap": cap}`, the boot the
//!   writer runs in `{"boot": id}` (first in every compacted log), a seal
//!   `{"sealed": fid, "len": L}` (data file `fid` is durable with `L` bytes), or its withdrawal
//!   `{"unsealed": fid}`, or the attributes of the mount root `{"root": metadata}` (the root has
//!   no entry in a parent directory to hold them; the last such frame wins).
//! - Directories made by `mkdir` are created on the grid later (write-back), so until then they
//!   have no cap: such a directory is named by a local id. Its entry in its parent is a record
//!   whose target is `{"newdir": id}` ([`Target::NewDir`]), and its own entries are records whose
//!   `dir` is [`pending_key`]`(id)`. Once the grid has it, ONE creation frame maps the id to its
//!   cap: replay rewrites every record naming the id (both kinds) to name the cap, so a crash
//!   sees the directory either wholly pending or wholly created, never half of each.
//! - `data/<fid>`: the whole content of a file not yet uploaded, named by a record's
//!   `{"file": fid}` target. A data file no record names is garbage and is removed on load.
//! - `journal/r-<seq>.json`: records of the older one-file-per-record layout; read on open,
//!   folded into the log, then removed.
//! - `recovered/<fid>-<name>`: data files the replay after a power cut did not publish (below);
//!   never read or removed by us.
//!
//! Replay (on open): frames are read in order up to the first incomplete or corrupt one (a torn
//! tail after a power cut); the live record of a `(dir, name)` is the one with the highest `seq`
//! (a later frame with the same `seq` is a rewrite of the same change, e.g. its local file
//! resolved to the uploaded cap, and wins); a retired `seq` is dead. The live records are then
//! compacted into a fresh log (tmp + fsync + rename + directory fsync), which also drops the
//! torn tail. The log is compacted again the same way when it grows past 4 times its live bytes.
//! A compaction writes the boot frame, one seal frame per sealed data file a live record names,
//! the root's attributes frame when there is one, then the live records.
//!
//! Power cuts: a record naming a data file is durable with the log, the file's content only once
//! it is sealed. When the last boot frame of the log differs from the running boot, the page
//! cache of the previous boot is gone, so every data file a live record names that is not
//! sealed at its present length is moved to `recovered/` and only its content is undone: a
//! record that names the file's previous version on the grid (`previous`: the file was changed
//! after it had one) is rewritten to set that version, at the record's name and with its
//! attributes; a record of a file that never had one is retired (the grid keeps its version of
//! the entry). Same boot (a daemon crash: the page cache survived), no boot
//! frame (a log older than boot frames) or an unknown running boot: the replay trusts every
//! data file, as a daemon crash allows.
//!
//! Durability (SEMANTICS.md, point 1): [`Journal::write`] returns once the frame is written to the
//! log with `write(2)`. From then on a crash of the daemon (kill -9) loses nothing: the bytes
//! are in the kernel's page cache of the log file and the next open replays them. Against a power
//! cut, a committer thread makes the log durable with `fdatasync`, one call for every change
//! written while the previous one ran (group commit): many rapid changes share one fsync and no
//! call waits for the disk; [`Journal::commit`] waits for it when a caller needs it.
//!
//! Invariants:
//! - A record is retired only after the change it holds is published (callers' duty), and a
//!   retirement follows its superseding record in the log, so any prefix of the log replays to a
//!   state at least as new as the grid's.
//! - A creation frame is written only after the directory is on the grid, and after it no record
//!   names the id (callers rename them in memory under the same lock; [`Journal::dir_created`]
//!   rewrites their live payloads, so a compaction writes them with the cap and needs no mapping).
//! - Ids of pending directories are never reused while a frame naming them may be in the log.
//! - A data fid is never reused while a file of that number exists: [`Journal::open`] starts
//!   past every numbered data file it finds, garbage included.
//! - A data file is unlinked only once every frame written before the unlink request is durable:
//!   a power cut never leaves a record naming a data file that is gone while the rewrite naming
//!   its uploaded cap is lost.
//! - The log holds no half frame that replay would accept (length + checksum on every frame).
//! - A seal frame is written only after its data file was fdatasync'd at that length and the
//!   data directory fsync'd, with no change of the file since (callers' duty: the sealer checks
//!   the file's generation). A sealed data file is changed only after its unseal frame is
//!   durable ([`Journal::unseal`] + [`CommitTicket::wait`], callers' duty). So after a power cut
//!   a seal in the durable log vouches for the file's present content.
//! - The files set aside after a power cut are moved, and the moves made durable, before the
//!   log that retires their records is written: no crash in between can leave them taken for
//!   garbage.
//! - Before a publish of ours, or the creation of a directory made by mkdir, can reach the grid,
//!   the fingerprint of each entry it writes is in the `accept` set of the live record of that
//!   name, durably (callers' duty: rewrite, then [`CommitTicket::wait`], then publish). So
//!   after a crash at any point, and in a running session, a pending change finds on the grid
//!   either an entry it accepts (the one it was based on, or one of our own writes) or another
//!   writer's change, never our own change mistaken for another's.

use super::attr;
use crate::crypto::hash::tagged_hash;
use crate::dirnode::{Child, Metadata};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

/// What a directory entry points to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// A cap on the grid (kept out of `Debug` by the callers: see [`Record`]'s `Debug`).
    Cap(String),
    /// A local cache file not yet uploaded.
    File(u64),
    /// A directory made locally and not yet created on the grid (its local id).
    NewDir(u64),
}

/// Prefix of the `dir` of records inside a directory not yet created on the grid: never a cap
/// (caps start with `URI:`), so the two kinds of names cannot collide.
const PENDING_PREFIX: &str = "lafs-new-dir:";

/// The data files the records name.
fn named_fids(recs: &[Record]) -> HashSet<u64> {
    recs.iter()
        .filter_map(|r| match &r.op {
            Op::Set {
                target: Target::File(f),
                ..
            } => Some(*f),
            _ => None,
        })
        .collect()
}

/// The name standing for the cap of the not-yet-created directory `id` (in records' `dir`).
pub fn pending_key(id: u64) -> String {
    format!("{PENDING_PREFIX}{id}")
}

/// The id of a not-yet-created directory named by `key`, when it is one.
pub fn pending_id(key: &str) -> Option<u64> {
    key.strip_prefix(PENDING_PREFIX)?.parse().ok()
}

/// A pending change of one directory entry.
#[derive(Clone, PartialEq)]
pub enum Op {
    Set { target: Target, metadata: Metadata },
    Remove,
}

/// One journal record.
#[derive(Clone)]
pub struct Record {
    pub seq: u64,
    pub dir: String,
    pub name: String,
    pub op: Op,
    /// The grid entries of `name` this change may be published over without overwriting
    /// another writer ([`child_fingerprint`]s; [`ABSENT`] for no entry): the entry the change
    /// was based on, and the entry of every publish of ours of this name that may have reached
    /// the grid while the change was pending. `None` when unknown (no listing was read, or a
    /// journal written before this field): the change is then checked only against a listing
    /// read in this session. Kept across restarts, so a change replayed after a crash is still
    /// checked against what it was based on.
    pub accept: Option<BTreeSet<String>>,
    /// For a set naming a data file: the newest whole version of the file's content that is
    /// on the grid ([`Previous`]); `None` for a file that never had one (a new file not yet
    /// uploaded), and for every other change.
    pub previous: Option<Previous>,
}

/// The newest whole version of a data file's content that is on the grid: the cap the file
/// was opened from, or the cap of a later upload of it (an `fsync` of the open file). What
/// the entry naming the file gets instead of the file when a power cut leaves the file
/// doubtful: the change of content is undone, the entry's name, place and other attributes
/// stay as journalled.
#[derive(Clone, PartialEq, Eq)]
pub struct Previous {
    /// An immutable file cap (a secret: never in `Debug` or messages).
    pub cap: String,
    /// The modification time of that version (nanoseconds since the epoch).
    pub mtime_ns: i64,
}

/// The fingerprint standing for "no entry of that name" in [`Record::accept`].
pub const ABSENT: &str = "";

/// A short fingerprint of a directory entry (both caps and the metadata, keys sorted, so the
/// same entry read twice, or written by us and read back, gives the same fingerprint).
pub fn child_fingerprint(child: Option<&Child>) -> String {
    fn object(m: &serde_json::Map<String, Value>, out: &mut String) {
        let mut keys: Vec<&String> = m.keys().collect();
        keys.sort();
        out.push('{');
        for k in keys {
            out.push_str(&Value::String(k.clone()).to_string());
            out.push(':');
            canonical(&m[k], out);
            out.push(',');
        }
        out.push('}');
    }
    fn canonical(v: &Value, out: &mut String) {
        match v {
            Value::Object(m) => object(m, out),
            Value::Array(a) => {
                out.push('[');
                for x in a {
                    canonical(x, out);
                    out.push(',');
                }
                out.push(']');
            }
            other => out.push_str(&other.to_string()),
        }
    }
    let Some(c) = child else {
        return ABSENT.to_string();
    };
    let mut buf = Vec::new();
    for cap in [c.rw_uri(), c.ro_uri()] {
        let cap = cap.unwrap_or_default();
        buf.extend_from_slice(&(cap.len() as u64).to_le_bytes());
        buf.extend_from_slice(cap);
    }
    let mut md = String::new();
    object(c.metadata.as_map(), &mut md);
    buf.extend_from_slice(md.as_bytes());
    let h = tagged_hash(b"lafs-journal-entry-fingerprint-v1", &buf);
    h[..16].iter().map(|b| format!("{b:02x}")).collect()
}

impl std::fmt::Debug for Record {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Caps are secrets: show only the name and the kind of change.
        let kind = match &self.op {
            Op::Set {
                target: Target::Cap(_),
                ..
            } => "set-cap",
            Op::Set {
                target: Target::File(_),
                ..
            } => "set-file",
            Op::Set {
                target: Target::NewDir(_),
                ..
            } => "set-newdir",
            Op::Remove => "remove",
        };
        write!(f, "Record({} {:?} {kind})", self.seq, self.name)
    }
}

/// Bytes of log past which the log is compacted (when also 4 times its live bytes).
const COMPACT_MIN: u64 = 4 << 20;
/// How long the committer gathers changes before an fdatasync (bounds the power-cut window
/// together with the fsync itself; a daemon crash loses nothing regardless).
const GATHER: Duration = Duration::from_millis(5);
const FRAME_TAG: &[u8] = b"lafs-journal-frame-v1";
const LOG: &str = "log";

/// The on-disk journal.
pub struct Journal {
    root: PathBuf,
    next_seq: u64,
    next_fid: u64,
    next_dir: u64,
    shared: Arc<Shared>,
    committer: Option<std::thread::JoinHandle<()>>,
    /// Files set aside by the replay after a power cut (taken by [`Journal::take_recovered`]).
    recovered: Vec<Recovered>,
    /// The mount root's attributes the replay found (taken by [`Journal::take_root`]).
    root_md: Option<Metadata>,
}

/// A data file the replay after a power cut did not publish: not sealed (or not at the sealed
/// length), so its content may be torn. Moved to `recovered/`; its record was retired.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recovered {
    /// The entry's name in its directory (never a cap).
    pub name: String,
    pub fid: u64,
    /// Where its bytes are now.
    pub path: PathBuf,
    /// Whether the entry now names the file's previous version on the grid ([`Previous`]);
    /// otherwise the entry's change was not applied (the grid keeps what the name had).
    pub kept_previous: bool,
}

/// The identity of the running boot of this machine, or `None` when it cannot be read (then
/// no power cut can be told from a daemon restart, and replay behaves as after a restart).
pub fn current_boot_id() -> Option<String> {
    #[cfg(target_os = "linux")]
    let id = fs::read_to_string("/proc/sys/kernel/random/boot_id").ok();
    #[cfg(target_os = "macos")]
    let id = std::process::Command::new("/usr/sbin/sysctl")
        .args(["-n", "kern.bootsessionuuid"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok());
    #[cfg(not(any(target_os = "linux", target_os = "macos")))]
    let id: Option<String> = None;
    id.map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
}

/// A file name for the recovered data of entry `name` (fid `fid`): the fid first (unique),
/// then the name with every byte that could be troublesome in a file name replaced by `_`,
/// cut to fit in 255 bytes.
fn recovered_name(fid: u64, name: &str) -> String {
    let mut out = format!("{fid}-");
    for ch in name.chars() {
        if out.len() + ch.len_utf8() > 240 {
            break;
        }
        out.push(if ch.is_control() || ch == '/' || ch == '\\' {
            '_'
        } else {
            ch
        });
    }
    out
}

/// State shared with the committer thread.
struct Shared {
    log: Mutex<LogState>,
    /// Signalled when frames are written (for the committer) and after each commit (for
    /// [`Journal::commit`]).
    cv: Condvar,
}

struct LogState {
    file: Arc<fs::File>,
    /// Bumped by each compaction (a commit of an older file counts for nothing newer).
    gen: u64,
    /// Frames written so far (a counter, not bytes: it survives compactions).
    written: u64,
    /// Frames known durable.
    synced: u64,
    /// Data files to unlink once `synced` reaches the mark.
    unlink_after: VecDeque<(u64, PathBuf)>,
    stop: bool,
    /// The last commit error (reported by the next `write`).
    error: Option<String>,
    /// Payloads of the live records by seq (what a compaction rewrites).
    live: BTreeMap<u64, Vec<u8>>,
    /// Bytes the live records take in a log (frames included).
    live_bytes: u64,
    /// Bytes in the log file.
    log_bytes: u64,
    /// Log size past which a mostly dead log is compacted.
    compact_min: u64,
    /// The boot this journal runs in (the boot frame a compaction writes first).
    boot: Option<String>,
    /// Sealed data files: fid -> the length that was fdatasync'd (what a compaction rewrites).
    sealed: BTreeMap<u64, u64>,
    /// The payload of the latest root attributes frame (what a compaction rewrites).
    root: Option<Vec<u8>>,
}

fn io(e: std::io::Error) -> String {
    e.to_string()
}

fn sync_dir(p: &Path) -> Result<(), String> {
    fs::File::open(p).and_then(|d| d.sync_all()).map_err(io)
}

fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 12);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&tagged_hash(FRAME_TAG, payload)[..8]);
    out.extend_from_slice(payload);
    out
}

/// The payloads of the whole frames at the start of `log`, up to the first torn or corrupt one.
fn frames(log: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut rest = log;
    while let (Some(len), Some(check)) = (rest.get(..4), rest.get(4..12)) {
        let len = u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize;
        let Some(payload) = rest.get(12..12 + len) else {
            break;
        };
        if tagged_hash(FRAME_TAG, payload).get(..8) != Some(check) {
            break;
        }
        out.push(payload);
        rest = rest.get(12 + len..).unwrap_or_default();
    }
    out
}

/// The committer: one fdatasync for all the frames written since the previous one.
fn committer(shared: Arc<Shared>) {
    fn lock(s: &Shared) -> MutexGuard<'_, LogState> {
        s.log.lock().unwrap_or_else(|e| e.into_inner())
    }
    loop {
        let mut st = lock(&shared);
        while st.written == st.synced && !st.stop {
            st = shared.cv.wait(st).unwrap_or_else(|e| e.into_inner());
        }
        if st.written == st.synced && st.stop {
            return;
        }
        let stopping = st.stop;
        drop(st);
        if !stopping {
            std::thread::sleep(GATHER);
        }
        let st = lock(&shared);
        let (file, gen, target) = (Arc::clone(&st.file), st.gen, st.written);
        drop(st);
        // The lock is not held across the fsync: writers keep appending meanwhile.
        let r = file.sync_data();
        let failed = r.is_err();
        let mut st = lock(&shared);
        match r {
            Ok(()) => {
                if st.gen == gen {
                    st.synced = st.synced.max(target);
                }
            }
            Err(e) => {
                st.error = Some(format!("journal fsync failed: {e}"));
                // Retried after a pause; a stopping journal gives up.
                if st.stop {
                    st.synced = st.written;
                }
            }
        }
        let synced = st.synced;
        let mut unlink = Vec::new();
        while st.unlink_after.front().is_some_and(|(m, _)| *m <= synced) {
            if let Some((_, p)) = st.unlink_after.pop_front() {
                unlink.push(p);
            }
        }
        drop(st);
        for p in unlink {
            let _ = fs::remove_file(p);
        }
        shared.cv.notify_all();
        if failed {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Record {
    fn to_json(&self) -> Value {
        let mut v = match &self.op {
            Op::Remove => {
                json!({"seq": self.seq, "dir": self.dir, "name": self.name, "op": "remove"})
            }
            Op::Set { target, metadata } => {
                let mut v = json!({"seq": self.seq, "dir": self.dir, "name": self.name, "op": "set",
                    "metadata": metadata.to_json()});
                match target {
                    Target::Cap(c) => v["cap"] = Value::from(c.as_str()),
                    Target::File(f) => v["file"] = Value::from(*f),
                    Target::NewDir(d) => v["newdir"] = Value::from(*d),
                }
                v
            }
        };
        if let Some(a) = &self.accept {
            v["accept"] = Value::from(a.iter().map(String::as_str).collect::<Vec<_>>());
        }
        if let (
            Op::Set {
                target: Target::File(_),
                ..
            },
            Some(p),
        ) = (&self.op, &self.previous)
        {
            v["previous"] = json!({"cap": p.cap, "mtime_ns": p.mtime_ns});
        }
        v
    }

    fn from_json(v: &Value) -> Option<Record> {
        let seq = v.get("seq")?.as_u64()?;
        let dir = v.get("dir")?.as_str()?.to_string();
        let name = v.get("name")?.as_str()?.to_string();
        let op = match v.get("op")?.as_str()? {
            "remove" => Op::Remove,
            "set" => {
                let metadata = Metadata::from_json(v.get("metadata")?.as_str()?.as_bytes()).ok()?;
                let target = match (v.get("cap"), v.get("file"), v.get("newdir")) {
                    (Some(c), _, _) => Target::Cap(c.as_str()?.to_string()),
                    (None, Some(f), _) => Target::File(f.as_u64()?),
                    (None, None, Some(d)) => Target::NewDir(d.as_u64()?),
                    _ => return None,
                };
                Op::Set { target, metadata }
            }
            _ => return None,
        };
        let accept = match v.get("accept") {
            None => None,
            Some(a) => Some(
                a.as_array()?
                    .iter()
                    .map(|x| x.as_str().map(str::to_string))
                    .collect::<Option<BTreeSet<String>>>()?,
            ),
        };
        let previous = match v.get("previous") {
            None => None,
            Some(p) => Some(Previous {
                cap: p.get("cap")?.as_str()?.to_string(),
                mtime_ns: p.get("mtime_ns")?.as_i64()?,
            }),
        };
        Some(Record {
            seq,
            dir,
            name,
            op,
            accept,
            previous,
        })
    }
}

impl Record {
    /// Rewrites the record for the creation of pending directory `id` as `cap`: a `dir` naming
    /// the id becomes the cap, and so does a target naming it. Returns whether anything changed.
    pub fn translate(&mut self, id: u64, cap: &str) -> bool {
        let mut changed = false;
        if pending_id(&self.dir) == Some(id) {
            self.dir = cap.to_string();
            changed = true;
        }
        if let Op::Set { target, .. } = &mut self.op {
            if *target == Target::NewDir(id) {
                *target = Target::Cap(cap.to_string());
                changed = true;
            }
        }
        changed
    }

    /// The ids of not-yet-created directories this record names.
    fn dir_ids(&self) -> impl Iterator<Item = u64> {
        let t = match &self.op {
            Op::Set {
                target: Target::NewDir(d),
                ..
            } => Some(*d),
            _ => None,
        };
        pending_id(&self.dir).into_iter().chain(t)
    }
}

impl Journal {
    /// Opens (creating) the journal in `cache_dir`; returns it with the live records (one per
    /// `(dir, name)`, in `seq` order). Data files no live record names are removed.
    ///
    /// `boot` is the running boot ([`current_boot_id`]; `None`: unknown). When the log says it
    /// was written in another boot, the machine went down with it (a power cut or a crash of
    /// the machine, not just of the daemon): the page cache is gone, so a data file that was not
    /// sealed may be torn. Its records are retired and the file moved to `recovered/`
    /// ([`Journal::take_recovered`]); the grid keeps its version of the entry.
    pub fn open(cache_dir: &Path, boot: Option<&str>) -> Result<(Journal, Vec<Record>), String> {
        let root = cache_dir.to_path_buf();
        for sub in ["journal", "data"] {
            fs::create_dir_all(root.join(sub)).map_err(io)?;
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = fs::set_permissions(&root, fs::Permissions::from_mode(0o700));
        }
        let jdir = root.join("journal");
        let mut live: HashMap<(String, String), Record> = HashMap::new();
        let mut retired: HashSet<u64> = HashSet::new();
        let mut max_seq = 0;
        let apply = |rec: Record, live: &mut HashMap<(String, String), Record>| {
            let key = (rec.dir.clone(), rec.name.clone());
            // Equal seq: a later rewrite of the same change.
            if live.get(&key).is_none_or(|old| old.seq <= rec.seq) {
                live.insert(key, rec);
            }
        };
        // The older layout first (its records predate any log of this cache).
        let mut obsolete = Vec::new();
        for e in fs::read_dir(&jdir).map_err(io)? {
            let p = e.map_err(io)?.path();
            let fname = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if fname == LOG {
                continue;
            }
            if fname.starts_with("r-") && fname.ends_with(".json") {
                let rec = fs::read(&p)
                    .ok()
                    .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
                    .and_then(|v| Record::from_json(&v));
                if let Some(rec) = rec {
                    max_seq = max_seq.max(rec.seq);
                    apply(rec, &mut live);
                }
            }
            // Anything else is a leftover temporary file of an interrupted write or compaction.
            obsolete.push(p);
        }
        let log = match fs::read(jdir.join(LOG)) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(io(e)),
        };
        let parsed: Vec<Value> = frames(&log)
            .into_iter()
            .filter_map(|p| serde_json::from_slice::<Value>(p).ok())
            .collect();
        drop(log);
        // Creations first: they rename records written before them (see the module doc).
        let mut created: HashMap<u64, String> = HashMap::new();
        let mut max_dir = 0;
        for v in &parsed {
            if let (Some(id), Some(cap)) = (
                v.get("created").and_then(Value::as_u64),
                v.get("cap").and_then(Value::as_str),
            ) {
                created.insert(id, cap.to_string());
                max_dir = max_dir.max(id);
            }
        }
        // The boot of the last session that wrote the log, and the sealed data files.
        let mut log_boot: Option<&str> = None;
        let mut sealed: BTreeMap<u64, u64> = BTreeMap::new();
        let mut root_md: Option<Metadata> = None;
        for v in &parsed {
            if let Some(seq) = v.get("retire").and_then(Value::as_u64) {
                retired.insert(seq);
                max_seq = max_seq.max(seq);
            } else if let Some(b) = v.get("boot").and_then(Value::as_str) {
                log_boot = Some(b);
            } else if let (Some(fid), Some(len)) = (
                v.get("sealed").and_then(Value::as_u64),
                v.get("len").and_then(Value::as_u64),
            ) {
                sealed.insert(fid, len);
            } else if let Some(fid) = v.get("unsealed").and_then(Value::as_u64) {
                sealed.remove(&fid);
            } else if let Some(md) = v.get("root").and_then(Value::as_str) {
                // A frame that does not parse (never written so) leaves the previous one.
                if let Ok(md) = Metadata::from_json(md.as_bytes()) {
                    root_md = Some(md);
                }
            } else if let Some(mut rec) = Record::from_json(v) {
                max_seq = max_seq.max(rec.seq);
                let ids: Vec<u64> = rec.dir_ids().collect();
                for id in ids {
                    max_dir = max_dir.max(id);
                    if let Some(cap) = created.get(&id) {
                        rec.translate(id, cap);
                    }
                }
                apply(rec, &mut live);
            }
        }
        let mut recs: Vec<Record> = live
            .into_values()
            .filter(|r| !retired.contains(&r.seq))
            .collect();
        recs.sort_by_key(|r| r.seq);
        let named = named_fids(&recs);
        let mut max_fid = 0;
        for e in fs::read_dir(root.join("data")).map_err(io)? {
            let p = e.map_err(io)?.path();
            let fid = p
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.parse::<u64>().ok());
            // Every numbered data file counts, garbage included: a fid is never handed out
            // again while a file of that number may still be unlinked by whoever queued it.
            if let Some(f) = fid {
                max_fid = max_fid.max(f);
            }
            match fid {
                Some(f) if named.contains(&f) => {}
                _ => {
                    let _ = fs::remove_file(p);
                }
            }
        }
        let data = root.join("data");
        // After a power cut: a data file not sealed at its present length may be torn (its
        // record can be durable while its content is not). Never publish it: set it aside and
        // undo the change of content only. A record that knows the file's previous version on
        // the grid ([`Previous`]) names that version instead, with its mtime: the entry's name,
        // place and other attributes replay as journalled, so a rename or move of a changed file
        // is applied with its old content, and the removal of its old name (another record)
        // never replays without it. A record of a file that never had a version on the grid is
        // retired: the name keeps what the grid has (a temporary file renamed over a target
        // leaves the target's version).
        let mut recovered = Vec::new();
        let power_cut = matches!((log_boot, boot), (Some(a), Some(b)) if a != b);
        if power_cut {
            let rdir = root.join("recovered");
            let mut doubtful: BTreeMap<u64, String> = BTreeMap::new();
            // Newest record first: its name is the entry the file was last linked as.
            for r in recs.iter().rev() {
                if let Op::Set {
                    target: Target::File(f),
                    ..
                } = &r.op
                {
                    let len = fs::metadata(data.join(f.to_string())).map(|m| m.len()).ok();
                    if len.is_none() || sealed.get(f).copied() != len {
                        doubtful.entry(*f).or_insert_with(|| r.name.clone());
                    }
                }
            }
            if !doubtful.is_empty() {
                fs::create_dir_all(&rdir).map_err(io)?;
            }
            for (fid, name) in doubtful {
                let mut kept_previous = false;
                recs.retain_mut(|r| {
                    let Op::Set {
                        target: Target::File(f),
                        metadata,
                    } = &r.op
                    else {
                        return true;
                    };
                    if *f != fid {
                        return true;
                    }
                    let Some(p) = r.previous.take() else {
                        return false;
                    };
                    let metadata = attr::with_mtime(metadata, p.mtime_ns);
                    r.op = Op::Set {
                        target: Target::Cap(p.cap),
                        metadata,
                    };
                    kept_previous = true;
                    true
                });
                let src = data.join(fid.to_string());
                if !src.exists() {
                    // Nothing to move (a replay that crashed before writing its log moved it).
                    continue;
                }
                let base = recovered_name(fid, &name);
                let mut dest = rdir.join(&base);
                let mut n = 1;
                while dest.exists() {
                    dest = rdir.join(format!("{base}~{n}"));
                    n += 1;
                }
                // Moved, not copied: the bytes stay for the user, nothing is deleted.
                fs::rename(&src, &dest).map_err(io)?;
                recovered.push(Recovered {
                    name,
                    fid,
                    path: dest,
                    kept_previous,
                });
            }
            if !recovered.is_empty() {
                // The moves are durable before the log that rewrites or retires their records:
                // a power cut in between replays the records again (the files they name are
                // then missing, handled above), never leaves a data file taken for garbage.
                sync_dir(&rdir)?;
                sync_dir(&data)?;
            }
        }
        // A record naming a data file that is gone cannot be published: drop it (outside the
        // replay after a power cut, it can only happen if the cache directory was damaged by
        // hand).
        recs.retain(|r| match &r.op {
            Op::Set {
                target: Target::File(f),
                ..
            } => data.join(f.to_string()).exists(),
            _ => true,
        });
        // Seal states of files no live record names are dead (their fid may be reused).
        let named = named_fids(&recs);
        sealed.retain(|f, _| named.contains(f));
        let boot = boot.map(str::to_string);
        let live: BTreeMap<u64, Vec<u8>> = recs
            .iter()
            .map(|r| Ok((r.seq, serde_json::to_vec(&r.to_json()).map_err(io_json)?)))
            .collect::<Result<_, String>>()?;
        let live_bytes = live.values().map(|p| p.len() as u64 + 12).sum();
        let root_frame = root_md.as_ref().map(root_payload);
        // Compact now: drops retired records, superseded versions and any torn tail, and
        // names the running boot.
        let (file, log_bytes) = write_log(
            &jdir,
            boot.as_deref(),
            &sealed,
            root_frame.as_deref(),
            &live,
        )?;
        for p in obsolete {
            let _ = fs::remove_file(p);
        }
        let shared = Arc::new(Shared {
            log: Mutex::new(LogState {
                file: Arc::new(file),
                gen: 0,
                written: 0,
                synced: 0,
                unlink_after: VecDeque::new(),
                stop: false,
                error: None,
                live,
                live_bytes,
                log_bytes,
                compact_min: COMPACT_MIN,
                boot,
                sealed,
                root: root_frame,
            }),
            cv: Condvar::new(),
        });
        let s2 = Arc::clone(&shared);
        let committer = std::thread::Builder::new()
            .name("lafs-journal".into())
            .spawn(move || committer(s2))
            .map_err(io)?;
        Ok((
            Journal {
                root,
                next_seq: max_seq + 1,
                next_fid: max_fid + 1,
                next_dir: max_dir + 1,
                shared,
                committer: Some(committer),
                recovered,
                root_md,
            },
            recs,
        ))
    }

    fn log_state(&self) -> MutexGuard<'_, LogState> {
        self.shared.log.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn next_seq(&mut self) -> u64 {
        let s = self.next_seq;
        self.next_seq += 1;
        s
    }

    /// The seq the next record will get (records below it exist or were retired).
    pub fn peek_seq(&self) -> u64 {
        self.next_seq
    }

    /// A fresh id for a directory not yet created on the grid.
    pub fn new_dir_id(&mut self) -> u64 {
        let d = self.next_dir;
        self.next_dir += 1;
        d
    }

    /// A new, empty data file; returns its id.
    pub fn new_file(&mut self) -> Result<u64, String> {
        let fid = self.next_fid;
        self.next_fid += 1;
        fs::File::create(self.data_path(fid)).map_err(io)?;
        Ok(fid)
    }

    /// The directory of the data files.
    pub fn data_dir(&self) -> PathBuf {
        self.root.join("data")
    }

    pub fn data_path(&self, fid: u64) -> PathBuf {
        self.data_dir().join(fid.to_string())
    }

    /// Removes a data file, once every frame written so far is durable.
    pub fn remove_file(&self, fid: u64) {
        let path = self.data_path(fid);
        let mut st = self.log_state();
        // No frame: replay drops the seal state of a fid no live record names.
        st.sealed.remove(&fid);
        if st.synced == st.written {
            drop(st);
            let _ = fs::remove_file(path);
        } else {
            let mark = st.written;
            st.unlink_after.push_back((mark, path));
        }
    }

    /// Appends one frame and updates the live set (`Some(payload)`: record `seq` is now
    /// `payload`; `None`: retired); compacts when the log is mostly dead. The committer makes the
    /// frame durable soon after.
    fn append(&self, frame_payload: &[u8], seq: u64, live: Option<Vec<u8>>) -> Result<(), String> {
        self.append_many(frame_payload, vec![(seq, live)])
    }

    /// [`Journal::append`] with several live-set updates for one frame.
    fn append_many(
        &self,
        frame_payload: &[u8],
        updates: Vec<(u64, Option<Vec<u8>>)>,
    ) -> Result<(), String> {
        self.append_with(&[frame_payload], updates, |_| {})
    }

    /// Appends frames (in one `write`), applies the live-set updates and `also` to the state
    /// under the same lock (so a compaction sees either none or all of them), and compacts when
    /// the log is mostly dead.
    fn append_with(
        &self,
        payloads: &[&[u8]],
        updates: Vec<(u64, Option<Vec<u8>>)>,
        also: impl FnOnce(&mut LogState),
    ) -> Result<(), String> {
        let mut bytes = Vec::new();
        for p in payloads {
            bytes.extend_from_slice(&frame(p));
        }
        let mut st = self.log_state();
        if let Some(e) = st.error.take() {
            // A failed fsync is logged once; the committer retries it.
            tracing::warn!("lafs journal: {e}");
        }
        (&*st.file).write_all(&bytes).map_err(io)?;
        st.written += payloads.len() as u64;
        st.log_bytes += bytes.len() as u64;
        also(&mut st);
        for (seq, live) in updates {
            if let Some(old) = st.live.remove(&seq) {
                st.live_bytes -= old.len() as u64 + 12;
            }
            if let Some(p) = live {
                st.live_bytes += p.len() as u64 + 12;
                st.live.insert(seq, p);
            }
        }
        if st.log_bytes > st.compact_min && st.log_bytes > 4 * st.live_bytes {
            // Rewrite the log with the live records only.
            let (file, log_bytes) = write_log(
                &self.root.join("journal"),
                st.boot.as_deref(),
                &st.sealed,
                st.root.as_deref(),
                &st.live,
            )?;
            st.file = Arc::new(file);
            st.gen += 1;
            // Everything written so far is in the new file, which is durable.
            st.synced = st.written;
            st.log_bytes = log_bytes;
        }
        drop(st);
        self.shared.cv.notify_all();
        Ok(())
    }

    /// Writes `rec` to the log. When it returns, a restart after a daemon crash sees the record;
    /// it is durable against a power cut once the committer's next fdatasync returns.
    pub fn write(&self, rec: &Record) -> Result<(), String> {
        let payload = serde_json::to_vec(&rec.to_json()).map_err(io_json)?;
        self.append(&payload, rec.seq, Some(payload.clone()))
    }

    /// Records that the pending directory `id` now exists on the grid as `cap`: one frame, after
    /// which replay reads every record naming the id as naming the cap. `renamed` are the live
    /// records naming the id, already rewritten by the caller ([`Record::translate`]); their
    /// live payloads are replaced, so a compaction writes them with the cap.
    pub fn dir_created(&self, id: u64, cap: &str, renamed: &[Record]) -> Result<(), String> {
        let payload = json!({ "created": id, "cap": cap })
            .to_string()
            .into_bytes();
        let mut updates = Vec::with_capacity(renamed.len());
        for r in renamed {
            updates.push((
                r.seq,
                Some(serde_json::to_vec(&r.to_json()).map_err(io_json)?),
            ));
        }
        self.append_many(&payload, updates)
    }

    /// Retires a record (after its change was published or superseded).
    pub fn delete(&self, seq: u64) {
        if !self.log_state().live.contains_key(&seq) {
            return;
        }
        let payload = json!({ "retire": seq }).to_string().into_bytes();
        if let Err(e) = self.append(&payload, seq, None) {
            // Harmless: the record replays after a restart and its change is applied again
            // (the grid already has it, so the publish changes nothing).
            tracing::warn!("lafs journal: retiring a record failed: {e}");
        }
    }

    /// Waits until every record written before the call is durable (fdatasync'd).
    pub fn commit(&self) -> Result<(), String> {
        self.ticket().wait()
    }

    /// Records that data files `(fid, len)` are sealed: their content, `len` bytes, is durable
    /// (callers' duty: fdatasync'd, and the data directory fsync'd, before this call; and no
    /// change of a file since its sync). One frame per file, written together.
    pub fn seal(&self, files: &[(u64, u64)]) -> Result<(), String> {
        if files.is_empty() {
            return Ok(());
        }
        let payloads: Vec<Vec<u8>> = files.iter().map(|(f, l)| seal_payload(*f, *l)).collect();
        let refs: Vec<&[u8]> = payloads.iter().map(Vec::as_slice).collect();
        self.append_with(&refs, Vec::new(), |st| {
            for (f, l) in files {
                st.sealed.insert(*f, *l);
            }
        })
    }

    /// Whether data file `fid` is sealed (a change of it must [`Journal::unseal`] it first).
    pub fn is_sealed(&self, fid: u64) -> bool {
        self.log_state().sealed.contains_key(&fid)
    }

    /// Before the first change of a sealed data file: writes the frame that withdraws the seal
    /// and returns the wait for it to be durable, which the caller must finish before changing
    /// the file. `None`: the file is not sealed.
    pub fn unseal(&self, fid: u64) -> Result<Option<CommitTicket>, String> {
        if !self.is_sealed(fid) {
            return Ok(None);
        }
        let payload = json!({ "unsealed": fid }).to_string().into_bytes();
        self.append_with(&[&payload], Vec::new(), |st| {
            st.sealed.remove(&fid);
        })?;
        Ok(Some(self.ticket()))
    }

    /// Whether every frame written so far is durable.
    #[cfg(test)]
    pub fn all_durable(&self) -> bool {
        let st = self.log_state();
        st.synced == st.written
    }

    /// Records the attributes of the mount root (entry metadata, as a parent's entry would hold
    /// them): one frame, replacing any earlier one. Durable as [`Journal::write`] is: seen by a
    /// restart after a daemon crash once this returns, against a power cut after the next
    /// commit.
    pub fn set_root(&self, md: &Metadata) -> Result<(), String> {
        let payload = root_payload(md);
        let kept = payload.clone();
        self.append_with(&[&payload], Vec::new(), |st| st.root = Some(kept))
    }

    /// The mount root's attributes the replay found (once): `None` when no frame recorded them.
    pub fn take_root(&mut self) -> Option<Metadata> {
        self.root_md.take()
    }

    /// The data files the replay set aside after a power cut (once).
    pub fn take_recovered(&mut self) -> Vec<Recovered> {
        std::mem::take(&mut self.recovered)
    }

    /// A wait for the frames written so far to become durable that does not borrow the journal
    /// (so a caller can wait without holding the lock the journal lives under).
    pub fn ticket(&self) -> CommitTicket {
        let st = self.log_state();
        CommitTicket {
            shared: Arc::clone(&self.shared),
            target: st.written,
            gen: st.gen,
        }
    }
}

/// See [`Journal::ticket`].
pub struct CommitTicket {
    shared: Arc<Shared>,
    target: u64,
    gen: u64,
}

impl CommitTicket {
    /// Blocks until the frames are durable (a compaction made them so too), or a commit failed.
    pub fn wait(self) -> Result<(), String> {
        let mut st = self.shared.log.lock().unwrap_or_else(|e| e.into_inner());
        while st.synced < self.target && st.gen == self.gen {
            if let Some(e) = st.error.take() {
                return Err(e);
            }
            st = self.shared.cv.wait(st).unwrap_or_else(|e| e.into_inner());
        }
        Ok(())
    }
}

fn io_json(e: serde_json::Error) -> String {
    e.to_string()
}

/// Writes a fresh log holding the boot frame, the seal frames of `sealed`, the root's
/// attributes frame `root` and the records `live` (tmp + fsync + rename + directory fsync);
/// returns it open for appending, and its size.
fn write_log(
    jdir: &Path,
    boot: Option<&str>,
    sealed: &BTreeMap<u64, u64>,
    root: Option<&[u8]>,
    live: &BTreeMap<u64, Vec<u8>>,
) -> Result<(fs::File, u64), String> {
    let tmp = jdir.join("log.tmp");
    let mut buf = Vec::new();
    if let Some(b) = boot {
        buf.extend_from_slice(&frame(json!({ "boot": b }).to_string().as_bytes()));
    }
    for (fid, len) in sealed {
        buf.extend_from_slice(&frame(seal_payload(*fid, *len).as_slice()));
    }
    if let Some(r) = root {
        buf.extend_from_slice(&frame(r));
    }
    for p in live.values() {
        buf.extend_from_slice(&frame(p));
    }
    let mut f = fs::File::create(&tmp).map_err(io)?;
    f.write_all(&buf).map_err(io)?;
    f.sync_all().map_err(io)?;
    drop(f);
    fs::rename(&tmp, jdir.join(LOG)).map_err(io)?;
    sync_dir(jdir)?;
    let f = fs::OpenOptions::new()
        .append(true)
        .open(jdir.join(LOG))
        .map_err(io)?;
    Ok((f, buf.len() as u64))
}

fn root_payload(md: &Metadata) -> Vec<u8> {
    json!({ "root": md.to_json() }).to_string().into_bytes()
}

fn seal_payload(fid: u64, len: u64) -> Vec<u8> {
    json!({ "sealed": fid, "len": len })
        .to_string()
        .into_bytes()
}

/// Tells whether a journal is gone: dropped, its committer thread exited, and so every unlink
/// it had queued done ([`Journal::stop_probe`]).
pub struct StopProbe(std::sync::Weak<Shared>);

impl StopProbe {
    pub fn stopped(&self) -> bool {
        // The committer holds its own reference to the shared state until it returns.
        self.0.strong_count() == 0
    }
}

impl Journal {
    pub fn stop_probe(&self) -> StopProbe {
        StopProbe(Arc::downgrade(&self.shared))
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        self.log_state().stop = true;
        self.shared.cv.notify_all();
        if let Some(h) = self.committer.take() {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOOT: Option<&str> = Some("boot-1");

    fn rec(seq: u64, name: &str, op: Op) -> Record {
        Record {
            seq,
            dir: "URI:DIR2:dir".into(),
            name: name.into(),
            op,
            accept: None,
            previous: None,
        }
    }

    fn set_cap(cap: &str) -> Op {
        Op::Set {
            target: Target::Cap(cap.into()),
            metadata: Metadata::new(),
        }
    }

    #[test]
    fn accept_sets_survive_rewrites_compaction_and_reopen() {
        let tmp = tempfile::tempdir().unwrap();
        let (mut j, _) = Journal::open(tmp.path(), BOOT).unwrap();
        let seq = j.next_seq();
        let mut r = rec(seq, "a", set_cap("URI:LIT:aa"));
        r.accept = Some(BTreeSet::from([ABSENT.to_string()]));
        j.write(&r).unwrap();
        // The rewrite before a publish (same seq) wins over the first frame.
        r.accept.as_mut().unwrap().insert("00ff".into());
        j.write(&r).unwrap();
        let s2 = j.next_seq();
        j.write(&rec(s2, "b", Op::Remove)).unwrap();
        j.commit().unwrap();
        drop(j);
        // The first reopen replays the log and compacts it; the second reads the compacted log.
        for _ in 0..2 {
            let (_, recs) = Journal::open(tmp.path(), BOOT).unwrap();
            let got: Vec<_> = recs.iter().map(|r| (r.seq, r.accept.clone())).collect();
            assert_eq!(
                got,
                vec![
                    (
                        seq,
                        Some(BTreeSet::from(["".to_string(), "00ff".to_string()]))
                    ),
                    (s2, None)
                ]
            );
        }
    }

    #[test]
    fn entry_fingerprint_survives_pack_and_unpack_and_sees_any_change() {
        use crate::dirnode::{DirKind, Directory};
        let kind = DirKind::Mutable {
            writekey: Some([7u8; 16]),
        };
        let md = |pairs: &[(&str, Value)]| {
            let mut m = Metadata::new();
            for (k, v) in pairs {
                m.insert(k, v.clone());
            }
            m
        };
        let child = |m: Metadata| Child::new(None, Some(b"URI:LIT:mfzgk".to_vec()), m);
        let a = child(md(&[("mtime", json!(1.5)), ("st_mode", json!(33188))]));
        let mut d = Directory::new(kind);
        d.insert("f", a.clone());
        let back = Directory::unpack(kind, &d.pack().unwrap()).unwrap();
        assert_eq!(
            child_fingerprint(back.get("f")),
            child_fingerprint(Some(&a))
        );
        // Key order does not matter; values and caps do.
        let reordered = child(md(&[("st_mode", json!(33188)), ("mtime", json!(1.5))]));
        assert_eq!(
            child_fingerprint(Some(&reordered)),
            child_fingerprint(Some(&a))
        );
        let other_md = child(md(&[("mtime", json!(2.5)), ("st_mode", json!(33188))]));
        assert_ne!(
            child_fingerprint(Some(&other_md)),
            child_fingerprint(Some(&a))
        );
        let other_cap = Child::new(None, Some(b"URI:LIT:nfzgk".to_vec()), a.metadata.clone());
        assert_ne!(
            child_fingerprint(Some(&other_cap)),
            child_fingerprint(Some(&a))
        );
        assert_eq!(child_fingerprint(None), ABSENT);
        assert_ne!(child_fingerprint(Some(&a)), ABSENT);
    }

    fn summary(recs: &[Record]) -> Vec<(u64, String, String)> {
        recs.iter()
            .map(|r| {
                let what = match &r.op {
                    Op::Remove => "remove".to_string(),
                    Op::Set {
                        target: Target::Cap(c),
                        ..
                    } => c.clone(),
                    Op::Set {
                        target: Target::File(f),
                        ..
                    } => format!("file {f}"),
                    Op::Set {
                        target: Target::NewDir(d),
                        ..
                    } => format!("newdir {d}"),
                };
                (r.seq, format!("{}/{}", r.dir, r.name), what)
            })
            .collect()
    }

    /// The model test found it: a journal dropped on another thread still unlinked a data file
    /// queued for unlinking after the next instance had opened the cache and reused its number
    /// for a fresh file, so a later truncate (or a whole file) vanished at the next replay.
    #[test]
    fn fid_of_an_unnamed_data_file_is_not_reused_after_reopen() {
        let tmp = tempfile::tempdir().unwrap();
        let old = {
            let (mut j, _) = Journal::open(tmp.path(), BOOT).unwrap();
            let a = j.new_file().unwrap();
            let b = j.new_file().unwrap();
            assert!(b > a);
            b
        };
        // The data file `old` is named by no record: garbage, removed by the next open, whose
        // fids must still start past it.
        assert!(tmp.path().join("data").join(old.to_string()).exists());
        let (mut j, recs) = Journal::open(tmp.path(), BOOT).unwrap();
        assert!(recs.is_empty());
        assert!(!tmp.path().join("data").join(old.to_string()).exists());
        assert!(j.new_file().unwrap() > old);
    }

    #[test]
    fn stop_probe_says_stopped_only_once_the_committer_has_exited() {
        let tmp = tempfile::tempdir().unwrap();
        let (j, _) = Journal::open(tmp.path(), BOOT).unwrap();
        j.write(&rec(1, "a", set_cap("URI:LIT:aa"))).unwrap();
        let probe = j.stop_probe();
        assert!(!probe.stopped());
        drop(j);
        assert!(probe.stopped());
    }

    #[test]
    fn replay_keeps_newest_per_name_and_drops_retired() {
        let tmp = tempfile::tempdir().unwrap();
        {
            let (mut j, recs) = Journal::open(tmp.path(), BOOT).unwrap();
            assert!(recs.is_empty());
            let fid = j.new_file().unwrap();
            for (name, op) in [
                ("a", set_cap("URI:LIT:aa")),
                ("b", Op::Remove),
                (
                    "c",
                    Op::Set {
                        target: Target::File(fid),
                        metadata: Metadata::new(),
                    },
                ),
            ] {
                let s = j.next_seq();
                j.write(&rec(s, name, op)).unwrap();
            }
            // "a" superseded (the older record retired after it), "b" published and retired,
            // "c" resolved to its cap under the same seq.
            let s = j.next_seq();
            j.write(&rec(s, "a", set_cap("URI:LIT:a2"))).unwrap();
            j.delete(1);
            j.delete(2);
            j.write(&rec(3, "c", set_cap("URI:LIT:cc"))).unwrap();
            // No drop, no commit: what a daemon crash leaves (the bytes are in the page cache).
            std::mem::forget(j);
        }
        let (mut j, recs) = Journal::open(tmp.path(), BOOT).unwrap();
        assert_eq!(
            summary(&recs),
            vec![
                (3, "URI:DIR2:dir/c".to_string(), "URI:LIT:cc".to_string()),
                (4, "URI:DIR2:dir/a".to_string(), "URI:LIT:a2".to_string()),
            ]
        );
        assert_eq!(j.next_seq(), 5, "seqs are never reused");
    }

    #[test]
    fn torn_tail_is_dropped_and_the_prefix_kept() {
        let tmp = tempfile::tempdir().unwrap();
        {
            let (mut j, _) = Journal::open(tmp.path(), BOOT).unwrap();
            for name in ["x", "y"] {
                let s = j.next_seq();
                j.write(&rec(s, name, Op::Remove)).unwrap();
            }
            j.commit().unwrap();
        }
        let log = tmp.path().join("journal").join(LOG);
        let len = fs::metadata(&log).unwrap().len();
        // Cut the second frame in half, then a corrupt frame after a whole one.
        let f = fs::OpenOptions::new().write(true).open(&log).unwrap();
        f.set_len(len - 5).unwrap();
        drop(f);
        let (_, recs) = Journal::open(tmp.path(), BOOT).unwrap();
        assert_eq!(
            summary(&recs),
            vec![(1, "URI:DIR2:dir/x".to_string(), "remove".to_string())]
        );
        // The reopen compacted the log: appending after it works and replays.
        {
            let (mut j, _) = Journal::open(tmp.path(), BOOT).unwrap();
            let s = j.next_seq();
            j.write(&rec(s, "z", Op::Remove)).unwrap();
        }
        let mut bytes = fs::read(&log).unwrap();
        let n = bytes.len();
        bytes[n - 1] ^= 1; // a flipped bit in the last frame's payload
        fs::write(&log, &bytes).unwrap();
        let (_, recs) = Journal::open(tmp.path(), BOOT).unwrap();
        assert_eq!(
            summary(&recs),
            vec![(1, "URI:DIR2:dir/x".to_string(), "remove".to_string())]
        );
    }

    #[test]
    fn records_of_the_older_layout_are_folded_in() {
        let tmp = tempfile::tempdir().unwrap();
        let jdir = tmp.path().join("journal");
        fs::create_dir_all(&jdir).unwrap();
        // The one-file-per-record layout, written by hand as the older code did.
        let old = rec(7, "legacy", set_cap("URI:LIT:ll"));
        fs::write(
            jdir.join("r-7.json"),
            serde_json::to_vec(&old.to_json()).unwrap(),
        )
        .unwrap();
        fs::write(jdir.join("tmp-8"), b"{half").unwrap();
        let (mut j, recs) = Journal::open(tmp.path(), BOOT).unwrap();
        assert_eq!(
            summary(&recs),
            vec![(
                7,
                "URI:DIR2:dir/legacy".to_string(),
                "URI:LIT:ll".to_string()
            )]
        );
        assert_eq!(j.next_seq(), 8);
        let names: Vec<String> = fs::read_dir(&jdir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec![LOG.to_string()]);
        drop(j);
        let (_, recs) = Journal::open(tmp.path(), BOOT).unwrap();
        assert_eq!(recs.len(), 1);
    }

    #[test]
    fn compaction_keeps_exactly_the_live_records() {
        let tmp = tempfile::tempdir().unwrap();
        let (mut j, _) = Journal::open(tmp.path(), BOOT).unwrap();
        j.log_state().compact_min = 2_000;
        let log = tmp.path().join("journal").join(LOG);
        let mut max_len = 0;
        for i in 0..300u64 {
            let s = j.next_seq();
            j.write(&rec(
                s,
                &format!("n{}", i % 7),
                set_cap(&format!("URI:LIT:{i}")),
            ))
            .unwrap();
            if s > 7 {
                j.delete(s - 7);
            }
            max_len = max_len.max(fs::metadata(&log).unwrap().len());
        }
        assert!(
            max_len < 8_000,
            "the log was compacted ({max_len} bytes at most)"
        );
        drop(j);
        let (_, recs) = Journal::open(tmp.path(), BOOT).unwrap();
        let got: Vec<u64> = recs.iter().map(|r| r.seq).collect();
        assert_eq!(got, (294..=300).collect::<Vec<_>>());
    }

    #[test]
    fn data_files_unlinked_once_durable_and_garbage_removed_on_open() {
        let tmp = tempfile::tempdir().unwrap();
        let (mut j, _) = Journal::open(tmp.path(), BOOT).unwrap();
        let f1 = j.new_file().unwrap();
        let f2 = j.new_file().unwrap();
        let s = j.next_seq();
        j.write(&rec(
            s,
            "f",
            Op::Set {
                target: Target::File(f2),
                metadata: Metadata::new(),
            },
        ))
        .unwrap();
        j.remove_file(f1);
        j.commit().unwrap();
        // The committer unlinks right after the fsync it waited for; give it a moment.
        for _ in 0..100 {
            if !j.data_path(f1).exists() {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(!j.data_path(f1).exists());
        let orphan = j.new_file().unwrap();
        drop(j);
        let (j, recs) = Journal::open(tmp.path(), BOOT).unwrap();
        assert_eq!(recs.len(), 1);
        assert!(j.data_path(f2).exists() && !j.data_path(orphan).exists());
    }

    #[test]
    fn creation_frame_renames_the_records_of_a_pending_dir_at_replay() {
        let tmp = tempfile::tempdir().unwrap();
        let (mut j, _) = Journal::open(tmp.path(), BOOT).unwrap();
        let id = j.new_dir_id();
        let key = pending_key(id);
        let mut mk = |dir: &str, name: &str, op: Op| {
            let seq = j.next_seq();
            Record {
                seq,
                dir: dir.into(),
                name: name.into(),
                op,
                accept: None,
                previous: None,
            }
        };
        let link = mk(
            "URI:DIR2:root",
            "d",
            Op::Set {
                target: Target::NewDir(id),
                metadata: Metadata::new(),
            },
        );
        let inner = mk(&key, "f", set_cap("URI:LIT:ff"));
        let removal = mk(&key, "g", Op::Remove);
        // Another pending directory, not created: stays under its key.
        let other = mk(&pending_key(id + 7), "h", set_cap("URI:LIT:hh"));
        for r in [&link, &inner, &removal, &other] {
            j.write(r).unwrap();
        }
        let mut renamed = vec![link.clone(), inner.clone(), removal.clone()];
        for r in &mut renamed {
            assert!(r.translate(id, "URI:DIR2:new"));
        }
        j.dir_created(id, "URI:DIR2:new", &renamed).unwrap();
        // The creation published `f`.
        j.delete(inner.seq);
        std::mem::forget(j);
        let want = vec![
            (1, "URI:DIR2:root/d".to_string(), "URI:DIR2:new".to_string()),
            (3, "URI:DIR2:new/g".to_string(), "remove".to_string()),
            (
                4,
                format!("{}/h", pending_key(id + 7)),
                "URI:LIT:hh".to_string(),
            ),
        ];
        let (mut j, recs) = Journal::open(tmp.path(), BOOT).unwrap();
        assert_eq!(summary(&recs), want);
        assert!(j.new_dir_id() > id + 7, "ids are not reused");
        drop(j);
        // The reopen compacted the log without the creation frame: still renamed.
        let (_, recs) = Journal::open(tmp.path(), BOOT).unwrap();
        assert_eq!(summary(&recs), want);
    }

    #[test]
    fn compaction_after_a_creation_keeps_the_renamed_records() {
        let tmp = tempfile::tempdir().unwrap();
        let (mut j, _) = Journal::open(tmp.path(), BOOT).unwrap();
        j.log_state().compact_min = 2_000;
        let id = j.new_dir_id();
        let seq = j.next_seq();
        let rec = Record {
            seq,
            dir: pending_key(id),
            name: "f".into(),
            op: set_cap("URI:LIT:ff"),
            accept: None,
            previous: None,
        };
        j.write(&rec).unwrap();
        let mut renamed = rec.clone();
        renamed.translate(id, "URI:DIR2:new");
        j.dir_created(id, "URI:DIR2:new", &[renamed]).unwrap();
        // Enough churn for several compactions, which drop the creation frame.
        for i in 0..200u64 {
            let s = j.next_seq();
            j.write(&rec_named(s, "URI:DIR2:x", &format!("n{i}")))
                .unwrap();
            j.delete(s);
        }
        std::mem::forget(j);
        let (_, recs) = Journal::open(tmp.path(), BOOT).unwrap();
        assert_eq!(
            summary(&recs),
            vec![(seq, "URI:DIR2:new/f".to_string(), "URI:LIT:ff".to_string())]
        );
    }

    fn rec_named(seq: u64, dir: &str, name: &str) -> Record {
        Record {
            seq,
            dir: dir.into(),
            name: name.into(),
            op: Op::Remove,
            accept: None,
            previous: None,
        }
    }

    fn set_file(fid: u64) -> Op {
        Op::Set {
            target: Target::File(fid),
            metadata: Metadata::new(),
        }
    }

    /// A journal with one record per name naming a fresh data file holding `content`.
    fn files(j: &mut Journal, names: &[&str], content: &[u8]) -> Vec<u64> {
        let mut fids = Vec::new();
        for name in names {
            let fid = j.new_file().unwrap();
            fs::write(j.data_path(fid), content).unwrap();
            let s = j.next_seq();
            j.write(&rec(s, name, set_file(fid))).unwrap();
            fids.push(fid);
        }
        fids
    }

    fn names(recs: &[Record]) -> Vec<String> {
        recs.iter().map(|r| r.name.clone()).collect()
    }

    #[test]
    fn seal_unseal_and_boot_frames_survive_compaction_and_reopen() {
        let tmp = tempfile::tempdir().unwrap();
        let (mut j, _) = Journal::open(tmp.path(), BOOT).unwrap();
        j.log_state().compact_min = 2_000;
        let f = files(
            &mut j,
            &["sealed", "unsealed", "resealed", "never"],
            b"12345",
        );
        j.seal(&[(f[0], 5), (f[1], 5), (f[2], 5)]).unwrap();
        assert!(j.unseal(f[1]).unwrap().is_some());
        assert!(j.unseal(f[2]).unwrap().is_some());
        assert!(
            j.unseal(f[3]).unwrap().is_none(),
            "not sealed: nothing to write"
        );
        j.seal(&[(f[2], 5)]).unwrap();
        // Churn enough for several compactions, which rewrite the log from the live state.
        let before = j.log_state().gen;
        for i in 0..200u64 {
            let s = j.next_seq();
            j.write(&rec(s, &format!("n{}", i % 3), set_cap("URI:LIT:xx")))
                .unwrap();
            j.delete(s);
        }
        assert!(j.log_state().gen > before, "compacted");
        let sealed = |j: &Journal| -> Vec<bool> { f.iter().map(|x| j.is_sealed(*x)).collect() };
        assert_eq!(sealed(&j), vec![true, false, true, false]);
        std::mem::forget(j);
        // Same boot (a daemon crash): everything replays, seal states included.
        let (j, recs) = Journal::open(tmp.path(), BOOT).unwrap();
        assert_eq!(
            names(&recs),
            vec!["sealed", "unsealed", "resealed", "never"]
        );
        assert_eq!(sealed(&j), vec![true, false, true, false]);
        drop(j);
        // The compacted log still names the boot: another boot sets the unsealed files aside.
        let (mut j, recs) = Journal::open(tmp.path(), Some("boot-2")).unwrap();
        assert_eq!(names(&recs), vec!["sealed", "resealed"]);
        assert_eq!(sealed(&j)[..3], [true, false, true]);
        let got: Vec<(String, u64)> = j
            .take_recovered()
            .into_iter()
            .map(|r| (r.name, r.fid))
            .collect();
        assert_eq!(
            got,
            vec![("unsealed".to_string(), f[1]), ("never".to_string(), f[3])]
        );
        assert!(j.take_recovered().is_empty());
        for (name, fid) in [("unsealed", f[1]), ("never", f[3])] {
            let p = tmp.path().join("recovered").join(format!("{fid}-{name}"));
            assert_eq!(fs::read(p).unwrap(), b"12345");
            assert!(!j.data_path(fid).exists());
        }
        drop(j);
        // The log now names boot-2: reopening in it is a restart.
        let (mut j, recs) = Journal::open(tmp.path(), Some("boot-2")).unwrap();
        assert_eq!(names(&recs), vec!["sealed", "resealed"]);
        assert!(j.take_recovered().is_empty());
    }

    /// The mount root's attributes have no record of their own (no directory holds the root):
    /// their frame must be kept by every compaction, the last one written winning, and must
    /// replay whatever the boot.
    #[test]
    fn compaction_keeps_the_root_attributes_frame() {
        let tmp = tempfile::tempdir().unwrap();
        let (mut j, _) = Journal::open(tmp.path(), BOOT).unwrap();
        assert!(j.take_root().is_none(), "a new cache has none");
        j.log_state().compact_min = 2_000;
        let md = |mode: u64| {
            let mut m = Metadata::new();
            m.set_int("st_mode", mode);
            m
        };
        j.set_root(&md(0o40700)).unwrap();
        j.set_root(&md(0o40750)).unwrap();
        let before = j.log_state().gen;
        for i in 0..200u64 {
            let s = j.next_seq();
            j.write(&rec(s, &format!("n{}", i % 3), set_cap("URI:LIT:xx")))
                .unwrap();
            j.delete(s);
        }
        assert!(j.log_state().gen > before, "compacted");
        std::mem::forget(j);
        // Replayed after a daemon crash (the first open compacts again), read back from the
        // compacted log, and after a power cut.
        for boot in [BOOT, BOOT, Some("boot-2")] {
            let (mut j, recs) = Journal::open(tmp.path(), boot).unwrap();
            assert!(recs.is_empty());
            assert_eq!(
                j.take_root().map(|m| m.to_json()),
                Some(md(0o40750).to_json()),
                "{boot:?}"
            );
            assert!(j.take_root().is_none(), "taken once");
        }
    }

    #[test]
    fn power_cut_sets_aside_a_sealed_file_whose_length_changed() {
        let tmp = tempfile::tempdir().unwrap();
        let (mut j, _) = Journal::open(tmp.path(), BOOT).unwrap();
        let f = files(&mut j, &["grew", "same"], b"12345");
        j.seal(&[(f[0], 5), (f[1], 5)]).unwrap();
        // Not what the layer does (it unseals first): a file whose length disagrees with its
        // seal is not what was synced.
        fs::write(j.data_path(f[0]), b"123456").unwrap();
        drop(j);
        let (mut j, recs) = Journal::open(tmp.path(), Some("boot-2")).unwrap();
        assert_eq!(names(&recs), vec!["same"]);
        let got: Vec<String> = j.take_recovered().into_iter().map(|r| r.name).collect();
        assert_eq!(got, vec!["grew"]);
    }

    /// A log written before boot frames existed, or in a boot that could not be read, tells
    /// nothing about a power cut: it replays as after a daemon restart.
    #[test]
    fn log_without_a_boot_frame_replays_as_after_a_restart() {
        let tmp = tempfile::tempdir().unwrap();
        let (mut j, _) = Journal::open(tmp.path(), None).unwrap();
        files(&mut j, &["x"], b"abc");
        drop(j);
        let (mut j, recs) = Journal::open(tmp.path(), Some("boot-2")).unwrap();
        assert_eq!(names(&recs), vec!["x"]);
        assert!(j.take_recovered().is_empty());
        // The same with a boot read now but not when the log was written: no boot is compared.
        drop(j);
        let (mut j, recs) = Journal::open(tmp.path(), None).unwrap();
        assert_eq!(names(&recs), vec!["x"]);
        assert!(j.take_recovered().is_empty());
    }

    /// Removing a data file (uploaded) drops its seal: a replay does not carry it to a later
    /// file of the same number.
    #[test]
    fn removing_a_data_file_drops_its_seal() {
        let tmp = tempfile::tempdir().unwrap();
        let (mut j, _) = Journal::open(tmp.path(), BOOT).unwrap();
        let f = files(&mut j, &["x"], b"abc");
        j.seal(&[(f[0], 3)]).unwrap();
        j.remove_file(f[0]);
        assert!(!j.is_sealed(f[0]));
    }

    /// A record naming a changed file carries the file's previous version on the grid through
    /// rewrites, compactions and reopens in the same boot; after a power cut that leaves the
    /// file unsealed, the record sets that version instead (same seq, name and attributes, the
    /// version's mtime), while a record of a file without one is retired as before. When the
    /// replay that moved the file aside crashed before writing its log, the next replay finds
    /// the file gone and still sets the previous version: the old name's removal, another
    /// record, never replays alone.
    #[test]
    fn power_cut_sets_the_previous_version_of_a_changed_file_at_its_records_name() {
        let tmp = tempfile::tempdir().unwrap();
        let (mut j, _) = Journal::open(tmp.path(), BOOT).unwrap();
        j.log_state().compact_min = 2_000;
        let f = files(&mut j, &["moved", "new"], b"torn?");
        let md = attr::to_metadata(
            &attr::Attr::new(attr::FileKind::File, 0o600, 7, 7, 5_000_000_000),
            &Metadata::new(),
        );
        let s = j.next_seq();
        let mut moved = rec(
            s,
            "moved",
            Op::Set {
                target: Target::File(f[0]),
                metadata: md.clone(),
            },
        );
        moved.previous = Some(Previous {
            cap: "URI:LIT:nbswy3dp".into(),
            mtime_ns: 1_000_000_123,
        });
        j.write(&moved).unwrap();
        let old = j.next_seq();
        j.write(&rec(old, "old name", Op::Remove)).unwrap();
        for i in 0..100u64 {
            let s = j.next_seq();
            j.write(&rec(s, &format!("n{}", i % 3), set_cap("URI:LIT:xx")))
                .unwrap();
            j.delete(s);
        }
        assert!(j.log_state().gen > 0, "compacted");
        drop(j);
        let (j, recs) = Journal::open(tmp.path(), BOOT).unwrap();
        let got = recs.iter().find(|r| r.name == "moved").unwrap();
        assert!(got.previous == moved.previous && got.op == moved.op);
        drop(j);
        // The log of boot-1 as a power cut leaves it, kept to replay twice.
        let log = fs::read(tmp.path().join("journal").join(LOG)).unwrap();
        let check = |recs: &[Record]| {
            assert_eq!(names(recs), vec!["moved", "old name"]);
            let r = &recs[0];
            assert_eq!(r.seq, s);
            let Op::Set {
                target: Target::Cap(c),
                metadata,
            } = &r.op
            else {
                panic!("not set to the previous version");
            };
            assert_eq!(c, "URI:LIT:nbswy3dp");
            let a = attr::from_metadata(metadata, false, (0, 0));
            assert_eq!((a.perm, a.uid, a.mtime_ns), (0o600, 7, 1_000_000_123));
            assert!(r.previous.is_none());
        };
        let (mut j, recs) = Journal::open(tmp.path(), Some("boot-2")).unwrap();
        check(&recs);
        let got: Vec<(String, u64, bool)> = j
            .take_recovered()
            .into_iter()
            .map(|r| (r.name, r.fid, r.kept_previous))
            .collect();
        assert_eq!(
            got,
            vec![
                ("moved".to_string(), f[0], true),
                ("new".to_string(), f[1], false)
            ]
        );
        drop(j);
        // Reopened in boot-2 the rewritten record replays as it is.
        let (_, recs) = Journal::open(tmp.path(), Some("boot-2")).unwrap();
        check(&recs);
        // The replay crashed after its moves, before its log: the files are gone from data/.
        fs::write(tmp.path().join("journal").join(LOG), &log).unwrap();
        let (mut j, recs) = Journal::open(tmp.path(), Some("boot-2")).unwrap();
        check(&recs);
        assert!(j.take_recovered().is_empty());
        assert_eq!(
            fs::read(tmp.path().join("recovered").join(format!("{}-moved", f[0]))).unwrap(),
            b"torn?"
        );
    }

    #[test]
    fn recovered_names_are_file_names() {
        assert_eq!(recovered_name(7, "a/b\\c\nd"), "7-a_b_c_d");
        let long = recovered_name(1, &"é".repeat(300));
        assert!(long.len() <= 240 && long.starts_with("1-é"));
    }
}
