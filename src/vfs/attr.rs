//! File attributes and how they live in directory-entry metadata.
//!
//! Keys written (SEMANTICS.md "Attributes"):
//! - `tahoe backup`'s keys, so Tahoe's tools and a tree stored by `tahoe backup` agree with us:
//!   `mtime`, `ctime` (float seconds), `st_mode` (type bits and permissions, as `os.stat` gives
//!   them), `st_uid`, `st_gid`;
//! - our own object `lafs`: `mtime_ns`, `ctime_ns`, `atime_ns` (exact integer nanoseconds),
//!   `rdev` (device number of a device node), `target` (symlink target as a string, or
//!   `target_b64` when it is not UTF-8), `xattrs` (name → base64 value).
//!
//! Reading: a `lafs.*_ns` time is used only when it agrees with the float key that another tool
//! might have changed (within 10 µs), so an edit by `tahoe` wins over our stale exact value.
//! Missing keys get defaults: mode 0644 for files, 0755 for directories, 0777 for symlinks,
//! owner = the mounting user, mtime = `tahoe.linkmotime`, ctime = `tahoe.linkmotime`,
//! atime = mtime. The file type comes from the cap (directory or not) and then from `st_mode`.
//! Unknown keys and Tahoe's `tahoe` object are kept untouched on rewrite.

use crate::dirnode::Metadata;
use base64::Engine;
use serde_json::{Map, Value};
use std::collections::BTreeMap;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// The type of a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FileKind {
    File,
    Dir,
    Symlink,
    Fifo,
    Socket,
    CharDevice,
    BlockDevice,
}

pub const S_IFMT: u32 = 0o170000;

impl FileKind {
    /// The `S_IF*` bits of this type.
    pub fn mode_bits(self) -> u32 {
        match self {
            FileKind::File => 0o100000,
            FileKind::Dir => 0o040000,
            FileKind::Symlink => 0o120000,
            FileKind::Fifo => 0o010000,
            FileKind::Socket => 0o140000,
            FileKind::CharDevice => 0o020000,
            FileKind::BlockDevice => 0o060000,
        }
    }

    /// The type named by the `S_IF*` bits of `mode`, if any.
    pub fn from_mode(mode: u32) -> Option<FileKind> {
        Some(match mode & S_IFMT {
            0o100000 => FileKind::File,
            0o040000 => FileKind::Dir,
            0o120000 => FileKind::Symlink,
            0o010000 => FileKind::Fifo,
            0o140000 => FileKind::Socket,
            0o020000 => FileKind::CharDevice,
            0o060000 => FileKind::BlockDevice,
            _ => return None,
        })
    }
}

/// The attributes of one node that live in its directory entry (size is not here: it comes from
/// the cap or the local cache file).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attr {
    pub kind: FileKind,
    /// Permission bits (07777).
    pub perm: u32,
    pub uid: u32,
    pub gid: u32,
    /// Nanoseconds since the epoch.
    pub atime_ns: i64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
    pub rdev: u64,
    /// Symlink target.
    pub target: Option<Vec<u8>>,
    /// Extended attributes (`user.*`).
    pub xattrs: BTreeMap<String, Vec<u8>>,
}

impl Attr {
    /// Fresh attributes of a new node.
    pub fn new(kind: FileKind, perm: u32, uid: u32, gid: u32, now_ns: i64) -> Attr {
        Attr {
            kind,
            perm: perm & 0o7777,
            uid,
            gid,
            atime_ns: now_ns,
            mtime_ns: now_ns,
            ctime_ns: now_ns,
            rdev: 0,
            target: None,
            xattrs: BTreeMap::new(),
        }
    }

    /// The full `st_mode`.
    pub fn mode(&self) -> u32 {
        self.kind.mode_bits() | (self.perm & 0o7777)
    }
}

fn ns_from_secs(t: f64) -> i64 {
    // Whole seconds and the fraction separately, summed as integers: `t * 1e9` loses up to
    // 256 ns at today's times (f64 has 53 bits), while the fraction of a float time is exact.
    if !t.is_finite() {
        return 0;
    }
    let whole = t.floor();
    let frac = ((t - whole) * 1e9).round() as i64;
    let whole = whole.clamp(-9.2e9, 9.2e9) as i64;
    whole.saturating_mul(1_000_000_000).saturating_add(frac)
}

fn secs_from_ns(ns: i64) -> f64 {
    ns as f64 / 1e9
}

/// An exact time: `lafs.<ns_key>` when consistent with the float `float`, else the float.
fn time(float: Option<f64>, exact: Option<i64>) -> Option<i64> {
    match (float, exact) {
        (Some(f), Some(ns)) if (secs_from_ns(ns) - f).abs() <= 1e-5 => Some(ns),
        (Some(f), _) => Some(ns_from_secs(f)),
        (None, Some(ns)) => Some(ns),
        (None, None) => None,
    }
}

/// Reads attributes from an entry's metadata. `is_dir` says whether the child's cap is a
/// directory; `owner` is the default (uid, gid).
pub fn from_metadata(md: &Metadata, is_dir: bool, owner: (u32, u32)) -> Attr {
    let lafs = md.get("lafs").and_then(Value::as_object);
    let lnum = |k: &str| lafs.and_then(|o| o.get(k)).and_then(Value::as_i64);
    let mode = md.st_mode().and_then(|m| u32::try_from(m).ok());
    let kind = if is_dir {
        FileKind::Dir
    } else {
        match mode.and_then(FileKind::from_mode) {
            Some(FileKind::Dir) | None => FileKind::File,
            Some(k) => k,
        }
    };
    let default_perm = match kind {
        FileKind::Dir => 0o755,
        FileKind::Symlink => 0o777,
        _ => 0o644,
    };
    let perm = mode.map_or(default_perm, |m| m & 0o7777);
    let link_m = md.linkmotime().map(ns_from_secs).unwrap_or(0);
    let mtime = time(md.mtime(), lnum("mtime_ns")).unwrap_or(link_m);
    let ctime = time(md.ctime(), lnum("ctime_ns")).unwrap_or(link_m);
    let atime = lnum("atime_ns").unwrap_or(mtime);
    let id = |v: Option<u64>, d: u32| v.and_then(|x| u32::try_from(x).ok()).unwrap_or(d);
    let target = lafs.and_then(|o| {
        o.get("target")
            .and_then(Value::as_str)
            .map(|s| s.as_bytes().to_vec())
            .or_else(|| {
                o.get("target_b64")
                    .and_then(Value::as_str)
                    .and_then(|s| B64.decode(s).ok())
            })
    });
    let mut xattrs = BTreeMap::new();
    if let Some(x) = lafs
        .and_then(|o| o.get("xattrs"))
        .and_then(Value::as_object)
    {
        for (k, v) in x {
            if let Some(b) = v.as_str().and_then(|s| B64.decode(s).ok()) {
                xattrs.insert(k.clone(), b);
            }
        }
    }
    Attr {
        kind,
        perm,
        uid: id(md.st_uid(), owner.0),
        gid: id(md.st_gid(), owner.1),
        atime_ns: atime,
        mtime_ns: mtime,
        ctime_ns: ctime,
        rdev: lafs
            .and_then(|o| o.get("rdev"))
            .and_then(Value::as_u64)
            .unwrap_or(0),
        target,
        xattrs,
    }
}

/// A copy of `md` whose modification time is `mtime_ns` (both keys that carry it; every other
/// key kept).
pub fn with_mtime(md: &Metadata, mtime_ns: i64) -> Metadata {
    let mut out = md.clone();
    out.set_mtime(secs_from_ns(mtime_ns));
    let mut l = out
        .get("lafs")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    l.insert("mtime_ns".into(), Value::from(mtime_ns));
    out.insert("lafs", Value::Object(l));
    out
}

/// Writes `attr` into a copy of `base` (keeping its other keys, `tahoe` included).
pub fn to_metadata(attr: &Attr, base: &Metadata) -> Metadata {
    let mut md = base.clone();
    md.set_mtime(secs_from_ns(attr.mtime_ns));
    md.set_ctime(secs_from_ns(attr.ctime_ns));
    md.set_int("st_mode", u64::from(attr.mode()));
    md.set_int("st_uid", u64::from(attr.uid));
    md.set_int("st_gid", u64::from(attr.gid));
    let mut l = Map::new();
    l.insert("mtime_ns".into(), Value::from(attr.mtime_ns));
    l.insert("ctime_ns".into(), Value::from(attr.ctime_ns));
    l.insert("atime_ns".into(), Value::from(attr.atime_ns));
    if attr.rdev != 0 {
        l.insert("rdev".into(), Value::from(attr.rdev));
    }
    if let Some(t) = &attr.target {
        match std::str::from_utf8(t) {
            Ok(s) => l.insert("target".into(), Value::from(s)),
            Err(_) => l.insert("target_b64".into(), Value::from(B64.encode(t))),
        };
    }
    if !attr.xattrs.is_empty() {
        let x: Map<String, Value> = attr
            .xattrs
            .iter()
            .map(|(k, v)| (k.clone(), Value::from(B64.encode(v))))
            .collect();
        l.insert("xattrs".into(), Value::Object(x));
    }
    md.insert("lafs", Value::Object(l));
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    fn md(s: &str) -> Metadata {
        Metadata::from_json(s.as_bytes()).unwrap()
    }

    #[test]
    fn tahoe_backup_entry() {
        // The shape `tahoe backup` writes (keys from allmydata/scripts/tahoe_backup.py: os.stat).
        let m = md(
            r#"{"ctime": 1700000001.5, "mtime": 1700000000.25, "st_mode": 33261, "st_uid": 1001, "st_gid": 100, "tahoe": {"linkcrtime": 1.0, "linkmotime": 2.0}}"#,
        );
        let a = from_metadata(&m, false, (5, 6));
        assert_eq!(a.kind, FileKind::File);
        assert_eq!(a.perm, 0o755);
        assert_eq!((a.uid, a.gid), (1001, 100));
        assert_eq!(a.mtime_ns, 1_700_000_000_250_000_000);
        assert_eq!(a.ctime_ns, 1_700_000_001_500_000_000);
        assert_eq!(a.atime_ns, a.mtime_ns);
    }

    #[test]
    fn defaults_for_tahoe_tool_entries() {
        let m = md(r#"{"tahoe": {"linkcrtime": 10.0, "linkmotime": 12.5}}"#);
        let f = from_metadata(&m, false, (1000, 1000));
        assert_eq!(
            (f.kind, f.perm, f.uid, f.gid),
            (FileKind::File, 0o644, 1000, 1000)
        );
        assert_eq!(f.mtime_ns, 12_500_000_000);
        let d = from_metadata(&m, true, (1000, 1000));
        assert_eq!((d.kind, d.perm), (FileKind::Dir, 0o755));
        // A directory cap wins over a st_mode that says file, and vice versa.
        let m = md(r#"{"st_mode": 16877}"#);
        assert_eq!(from_metadata(&m, false, (0, 0)).kind, FileKind::File);
    }

    #[test]
    fn exact_round_trip() {
        let mut a = Attr::new(FileKind::Symlink, 0o777, 7, 8, 1_234_567_890_123_456_789);
        a.atime_ns = -5;
        a.mtime_ns = 1_000_000_000_000_000_001;
        a.target = Some(b"\xff/x".to_vec());
        a.xattrs.insert("user.a".into(), vec![0, 1, 2]);
        let base = md(r#"{"keep": 1, "tahoe": {"linkmotime": 3.0}}"#);
        let m = to_metadata(&a, &base);
        assert_eq!(m.get("keep"), Some(&Value::from(1)));
        assert_eq!(m.st_mode(), Some(0o120777));
        assert_eq!(from_metadata(&m, false, (0, 0)), a);
        // The JSON text round-trips too (Python's float repr).
        let m2 = Metadata::from_json(m.to_json().as_bytes()).unwrap();
        assert_eq!(from_metadata(&m2, false, (0, 0)), a);
    }

    #[test]
    fn foreign_mtime_edit_wins() {
        let a = Attr::new(FileKind::File, 0o600, 1, 1, 1_500_000_000_123_456_789);
        let mut m = to_metadata(&a, &Metadata::new());
        m.set_mtime(42.0);
        assert_eq!(from_metadata(&m, false, (0, 0)).mtime_ns, 42_000_000_000);
    }
}
