//! The write-back journal on local disk.
//!
//! Layout of the cache directory (mode 0700: records hold caps, which are secrets):
//! - `journal/r-<seq>.json`: one pending directory change `(dir cap, name) -> set(target,
//!   metadata) | remove`. At most one live record per `(dir, name)`: a newer record supersedes an
//!   older one, which is deleted only after the newer one is durable (on load, the higher `seq`
//!   wins). Resolving a record's local file target to its uploaded cap rewrites it under the same
//!   `seq`, so waiters keyed on `seq` see it as the same change.
//! - `data/<fid>`: the whole content of a file not yet uploaded, named by a record's
//!   `{"file": fid}` target. A data file no record names is garbage and is removed on load.
//!
//! Every record is written as `tmp` + fsync + rename + fsync of the directory, so after a crash a
//! record is either whole or absent (never half-written), and a record whose write returned is
//! durable. Invariant: a record is deleted only after the change it holds is published.

use crate::dirnode::Metadata;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

/// What a directory entry points to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// A cap on the grid (kept out of `Debug` by the callers: see [`Record`]'s `Debug`).
    Cap(String),
    /// A local cache file not yet uploaded.
    File(u64),
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
            Op::Remove => "remove",
        };
        write!(f, "Record({} {:?} {kind})", self.seq, self.name)
    }
}

/// The on-disk journal.
pub struct Journal {
    root: PathBuf,
    next_seq: u64,
    next_fid: u64,
}

fn io(e: std::io::Error) -> String {
    e.to_string()
}

fn sync_dir(p: &Path) -> Result<(), String> {
    fs::File::open(p).and_then(|d| d.sync_all()).map_err(io)
}

impl Record {
    fn to_json(&self) -> Value {
        match &self.op {
            Op::Remove => {
                json!({"seq": self.seq, "dir": self.dir, "name": self.name, "op": "remove"})
            }
            Op::Set { target, metadata } => {
                let mut v = json!({"seq": self.seq, "dir": self.dir, "name": self.name, "op": "set",
                    "metadata": metadata.to_json()});
                match target {
                    Target::Cap(c) => v["cap"] = Value::from(c.as_str()),
                    Target::File(f) => v["file"] = Value::from(*f),
                }
                v
            }
        }
    }

    fn from_json(v: &Value) -> Option<Record> {
        let seq = v.get("seq")?.as_u64()?;
        let dir = v.get("dir")?.as_str()?.to_string();
        let name = v.get("name")?.as_str()?.to_string();
        let op = match v.get("op")?.as_str()? {
            "remove" => Op::Remove,
            "set" => {
                let metadata = Metadata::from_json(v.get("metadata")?.as_str()?.as_bytes()).ok()?;
                let target = match (v.get("cap"), v.get("file")) {
                    (Some(c), _) => Target::Cap(c.as_str()?.to_string()),
                    (None, Some(f)) => Target::File(f.as_u64()?),
                    _ => return None,
                };
                Op::Set { target, metadata }
            }
            _ => return None,
        };
        Some(Record { seq, dir, name, op })
    }
}

impl Journal {
    /// Opens (creating) the journal in `cache_dir`; returns it with the live records (one per
    /// `(dir, name)`, in `seq` order) and the data files that records name, with their sizes.
    pub fn open(cache_dir: &Path) -> Result<(Journal, Vec<Record>), String> {
        let root = cache_dir.to_path_buf();
        for sub in ["journal", "data"] {
            fs::create_dir_all(root.join(sub)).map_err(io)?;
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = fs::set_permissions(&root, fs::Permissions::from_mode(0o700));
        }
        let mut live: HashMap<(String, String), Record> = HashMap::new();
        let mut stale = Vec::new();
        let mut max_seq = 0;
        for e in fs::read_dir(root.join("journal")).map_err(io)? {
            let p = e.map_err(io)?.path();
            let fname = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if !fname.starts_with("r-") || !fname.ends_with(".json") {
                // Leftover temporary files of an interrupted write: never renamed, so not live.
                stale.push(p);
                continue;
            }
            let rec = fs::read(&p)
                .ok()
                .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
                .and_then(|v| Record::from_json(&v));
            let Some(rec) = rec else {
                stale.push(p);
                continue;
            };
            max_seq = max_seq.max(rec.seq);
            let key = (rec.dir.clone(), rec.name.clone());
            match live.get(&key) {
                Some(old) if old.seq > rec.seq => stale.push(p),
                Some(old) => {
                    stale.push(root.join("journal").join(format!("r-{}.json", old.seq)));
                    live.insert(key, rec);
                }
                None => {
                    live.insert(key, rec);
                }
            }
        }
        for p in stale {
            let _ = fs::remove_file(p);
        }
        let mut recs: Vec<Record> = live.into_values().collect();
        recs.sort_by_key(|r| r.seq);
        let named: BTreeMap<u64, ()> = recs
            .iter()
            .filter_map(|r| match &r.op {
                Op::Set {
                    target: Target::File(f),
                    ..
                } => Some((*f, ())),
                _ => None,
            })
            .collect();
        let mut max_fid = 0;
        for e in fs::read_dir(root.join("data")).map_err(io)? {
            let p = e.map_err(io)?.path();
            let fid = p
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.parse::<u64>().ok());
            match fid {
                Some(f) if named.contains_key(&f) => max_fid = max_fid.max(f),
                _ => {
                    let _ = fs::remove_file(p);
                }
            }
        }
        // A record naming a data file that is gone cannot be published: drop it (it can only
        // happen if the cache directory was damaged by hand).
        let data = root.join("data");
        recs.retain(|r| match &r.op {
            Op::Set {
                target: Target::File(f),
                ..
            } => data.join(f.to_string()).exists(),
            _ => true,
        });
        Ok((
            Journal {
                root,
                next_seq: max_seq + 1,
                next_fid: max_fid + 1,
            },
            recs,
        ))
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

    /// A new, empty data file; returns its id.
    pub fn new_file(&mut self) -> Result<u64, String> {
        let fid = self.next_fid;
        self.next_fid += 1;
        fs::File::create(self.data_path(fid)).map_err(io)?;
        Ok(fid)
    }

    pub fn data_path(&self, fid: u64) -> PathBuf {
        self.root.join("data").join(fid.to_string())
    }

    pub fn remove_file(&self, fid: u64) {
        let _ = fs::remove_file(self.data_path(fid));
    }

    fn record_path(&self, seq: u64) -> PathBuf {
        self.root.join("journal").join(format!("r-{seq}.json"))
    }

    /// Writes `rec` durably (tmp + fsync + rename + directory fsync).
    pub fn write(&self, rec: &Record) -> Result<(), String> {
        let dir = self.root.join("journal");
        let tmp = dir.join(format!("tmp-{}", rec.seq));
        let mut f = fs::File::create(&tmp).map_err(io)?;
        let bytes = serde_json::to_vec(&rec.to_json()).map_err(|e| e.to_string())?;
        f.write_all(&bytes).map_err(io)?;
        f.sync_all().map_err(io)?;
        fs::rename(&tmp, self.record_path(rec.seq)).map_err(io)?;
        sync_dir(&dir)
    }

    /// Deletes a record (after its change was published or superseded).
    pub fn delete(&self, seq: u64) {
        let _ = fs::remove_file(self.record_path(seq));
    }
}
