//! The mount's two virtual files at its root: `.lafs-status` and `.lafs-control`.
//!
//! - `.lafs-status` (read-only, mode 0444) reads as one JSON object, [`StatusReport`]: who serves
//!   the mount (pid, whether that process exits at unmount), what it mounts (the source as the
//!   user named it, never a cap) and [`Vfs::status`]: uploads queued and in flight, bytes not yet
//!   on the grid, cache use and limit, directory changes not yet published, the last errors.
//!   Each open takes one snapshot, so reads at any offsets of one handle agree; the file is
//!   opened with direct I/O, so its size (that of a fresh snapshot) is only a hint.
//! - `.lafs-control` (write-only, mode 0200): writing the line `flush` returns once every
//!   pending upload and directory publish is on the grid ([`Vfs::flush_all`]); the write fails
//!   with EIO when one failed, and the failure is in the status's `last_errors` and
//!   `last_flush_error`. `lafs umount --flush` is this write followed by the unmount.
//!
//! Both are reachable by lookup in the root directory only and are left out of its listing; the
//! names are reserved there (a grid entry of the same name is shadowed). Their inode numbers
//! sit at the top of the range, which the filesystem layer, counting up from 1, never reaches.
//! Invariant: no cap appears in either file (the layer's errors name paths, not caps).

use super::LafsFs;
use crate::vfs::{Status, Vfs, ROOT_INO};
use fuser::{
    Errno, FileAttr, FileHandle, FileType, FopenFlags, Generation, INodeNo, ReplyAttr, ReplyData,
    ReplyEmpty, ReplyEntry, ReplyOpen, ReplyWrite, ReplyXattr,
};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::ffi::OsStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

/// The status file's name in the mount root.
pub const STATUS_NAME: &str = ".lafs-status";
/// The control file's name in the mount root.
pub const CONTROL_NAME: &str = ".lafs-control";
/// Their inode numbers (the layer allocates upwards from [`ROOT_INO`]).
pub const STATUS_INO: u64 = u64::MAX - 1;
pub const CONTROL_INO: u64 = u64::MAX - 2;
/// The control command that flushes everything.
pub const FLUSH_COMMAND: &str = "flush";

const TTL: Duration = Duration::from_secs(1);

/// Who serves the mount and what it mounts (fixed for the mount's life).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountInfo {
    /// The serving process.
    pub pid: u32,
    /// Whether that process exits once the mount is gone (`lafs mount`: yes; `lafs up` keeps
    /// its grid running).
    pub exits_on_unmount: bool,
    pub mountpoint: String,
    /// The source as given (`alias:path`), or `(a directory cap)`: never the cap itself.
    pub source: String,
    pub read_only: bool,
    pub cache_dir: String,
}

/// The content of `.lafs-status`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusReport {
    #[serde(flatten)]
    pub mount: MountInfo,
    /// Nothing is waiting to go to the grid (no queued or running upload, no dirty byte, no
    /// unpublished directory change).
    pub clean: bool,
    pub uploads_queued: usize,
    pub uploads_in_flight: usize,
    pub bytes_dirty: u64,
    pub cache_used: u64,
    /// Bytes of read-cache segment files; with `cache_used` at most `cache_limit`.
    #[serde(default)]
    pub read_cache: u64,
    pub cache_limit: u64,
    pub pending_dir_changes: usize,
    pub uploads_done: u64,
    pub publishes: u64,
    pub last_errors: Vec<String>,
    /// The error of the last `flush` command, if it failed.
    pub last_flush_error: Option<String>,
}

impl StatusReport {
    pub fn new(mount: MountInfo, s: Status, last_flush_error: Option<String>) -> Self {
        StatusReport {
            mount,
            clean: s.uploads_queued == 0
                && s.uploads_in_flight == 0
                && s.bytes_dirty == 0
                && s.pending_dir_changes == 0,
            uploads_queued: s.uploads_queued,
            uploads_in_flight: s.uploads_in_flight,
            bytes_dirty: s.bytes_dirty,
            cache_used: s.cache_used,
            read_cache: s.read_cache,
            cache_limit: s.cache_limit,
            pending_dir_changes: s.pending_dir_changes,
            uploads_done: s.uploads_done,
            publishes: s.publishes,
            last_errors: s.last_errors,
            last_flush_error,
        }
    }

    /// The human form `lafs status` prints.
    pub fn human(&self) -> String {
        let m = &self.mount;
        let mut out = format!(
            "{} on {} ({}, pid {})\n",
            m.source,
            m.mountpoint,
            if m.read_only {
                "read-only"
            } else {
                "read-write"
            },
            m.pid
        );
        out.push_str(if self.clean {
            "state: clean (everything written is on the grid)\n"
        } else {
            "state: pending (some writes are only in the local cache)\n"
        });
        out.push_str(&format!(
            "uploads: {} queued, {} in flight, {} not yet uploaded; {} done since mount\n",
            self.uploads_queued,
            self.uploads_in_flight,
            bytes(self.bytes_dirty),
            self.uploads_done
        ));
        out.push_str(&format!(
            "directory changes: {} pending; {} publishes since mount\n",
            self.pending_dir_changes, self.publishes
        ));
        out.push_str(&format!(
            "cache: {} written + {} read cache, of {} in {}\n",
            bytes(self.cache_used),
            bytes(self.read_cache),
            bytes(self.cache_limit),
            m.cache_dir
        ));
        if let Some(e) = &self.last_flush_error {
            out.push_str(&format!("last flush failed: {e}\n"));
        }
        if !self.last_errors.is_empty() {
            out.push_str("last errors:\n");
            for e in &self.last_errors {
                out.push_str(&format!("  {e}\n"));
            }
        }
        out
    }
}

/// `n` bytes with a binary unit.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// The state behind the two files.
pub struct Control {
    info: MountInfo,
    last_flush_error: Mutex<Option<String>>,
    /// Open status handles: their snapshots.
    snapshots: Mutex<HashMap<u64, Arc<Vec<u8>>>>,
    next_fh: AtomicU64,
    created: SystemTime,
    /// The owner the files show (the mount's).
    owner: (u32, u32),
}

impl Control {
    /// The files of a mount described by `info`, shown as owned by `uid`:`gid`.
    pub fn new(info: MountInfo, uid: u32, gid: u32) -> Self {
        Control {
            owner: (uid, gid),
            info,
            last_flush_error: Mutex::new(None),
            snapshots: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            created: SystemTime::now(),
        }
    }

    pub fn report(&self, vfs: &Vfs) -> StatusReport {
        let flush = self
            .last_flush_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        StatusReport::new(self.info.clone(), vfs.status(), flush)
    }

    /// The file's bytes now.
    pub fn render(&self, vfs: &Vfs) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(&self.report(vfs)).unwrap_or_default();
        v.push(b'\n');
        v
    }

    fn attr(&self, ino: u64, size: u64) -> FileAttr {
        let root = self.owner;
        FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: size.div_ceil(512),
            atime: self.created,
            mtime: SystemTime::now(),
            ctime: self.created,
            crtime: self.created,
            kind: FileType::RegularFile,
            perm: if ino == STATUS_INO { 0o444 } else { 0o200 },
            nlink: 1,
            uid: root.0,
            gid: root.1,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        }
    }

    fn set_flush_error(&self, e: Option<String>) {
        *self
            .last_flush_error
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = e;
    }
}

/// Whether `ino` is one of the virtual files.
pub fn is_virtual(ino: u64) -> bool {
    ino == STATUS_INO || ino == CONTROL_INO
}

/// The virtual file `name` names in directory `parent`, if any.
pub fn lookup_virtual(parent: u64, name: &OsStr) -> Option<u64> {
    if parent != ROOT_INO {
        return None;
    }
    if name == STATUS_NAME {
        Some(STATUS_INO)
    } else if name == CONTROL_NAME {
        Some(CONTROL_INO)
    } else {
        None
    }
}

/// The hooks: each answers the request when it concerns a virtual file and otherwise hands the
/// reply back for the normal path (`let Some(reply) = self.v_xxx(..., reply) else { return };`).
impl LafsFs {
    /// Serves the virtual files with `control` (without it, the root has none).
    pub fn with_control(mut self, control: Arc<Control>) -> Self {
        self.control = Some(control);
        self
    }

    fn ctl(&self) -> Option<&Arc<Control>> {
        self.control.as_ref()
    }

    pub(super) fn v_lookup(
        &self,
        parent: u64,
        name: &OsStr,
        reply: ReplyEntry,
    ) -> Option<ReplyEntry> {
        let Some(c) = self.ctl() else {
            return Some(reply);
        };
        let Some(ino) = lookup_virtual(parent, name) else {
            return Some(reply);
        };
        let size = if ino == STATUS_INO {
            c.render(&self.vfs).len() as u64
        } else {
            0
        };
        reply.entry(&TTL, &c.attr(ino, size), Generation(0));
        None
    }

    pub(super) fn v_getattr(&self, ino: u64, reply: ReplyAttr) -> Option<ReplyAttr> {
        let Some(c) = self.ctl().filter(|_| is_virtual(ino)) else {
            return Some(reply);
        };
        let size = if ino == STATUS_INO {
            c.render(&self.vfs).len() as u64
        } else {
            0
        };
        reply.attr(&TTL, &c.attr(ino, size));
        None
    }

    /// setattr: the control file accepts (and ignores) the truncation of `echo flush >`; the
    /// status file is read-only.
    pub(super) fn v_setattr(&self, ino: u64, reply: ReplyAttr) -> Option<ReplyAttr> {
        let Some(c) = self.ctl().filter(|_| is_virtual(ino)) else {
            return Some(reply);
        };
        if ino == STATUS_INO {
            reply.error(Errno::EACCES);
        } else {
            reply.attr(&TTL, &c.attr(ino, 0));
        }
        None
    }

    pub(super) fn v_open(&self, ino: u64, flags: i32, reply: ReplyOpen) -> Option<ReplyOpen> {
        let Some(c) = self.ctl().filter(|_| is_virtual(ino)) else {
            return Some(reply);
        };
        let acc = flags & libc::O_ACCMODE;
        if ino == STATUS_INO {
            if acc != libc::O_RDONLY {
                reply.error(Errno::EACCES);
                return None;
            }
            let fh = c.next_fh.fetch_add(1, Ordering::Relaxed);
            let snap = Arc::new(c.render(&self.vfs));
            c.snapshots
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(fh, snap);
            reply.opened(FileHandle(fh), FopenFlags::FOPEN_DIRECT_IO);
        } else {
            if acc == libc::O_RDONLY {
                reply.error(Errno::EACCES);
                return None;
            }
            reply.opened(FileHandle(0), FopenFlags::FOPEN_DIRECT_IO);
        }
        None
    }

    pub(super) fn v_read(
        &self,
        ino: u64,
        fh: u64,
        offset: u64,
        size: u32,
        reply: ReplyData,
    ) -> Option<ReplyData> {
        let Some(c) = self.ctl().filter(|_| is_virtual(ino)) else {
            return Some(reply);
        };
        if ino != STATUS_INO {
            reply.error(Errno::EBADF);
            return None;
        }
        let snap = c
            .snapshots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&fh)
            .cloned()
            .unwrap_or_else(|| Arc::new(c.render(&self.vfs)));
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(snap.len());
        let end = start.saturating_add(size as usize).min(snap.len());
        reply.data(snap.get(start..end).unwrap_or(&[]));
        None
    }

    /// write: the control commands. `flush` answers once [`Vfs::flush_all`] has finished.
    pub(super) fn v_write(&self, ino: u64, data: &[u8], reply: ReplyWrite) -> Option<ReplyWrite> {
        let Some(c) = self.ctl().filter(|_| is_virtual(ino)).cloned() else {
            return Some(reply);
        };
        if ino != CONTROL_INO {
            reply.error(Errno::EBADF);
            return None;
        }
        let n = data.len() as u32;
        let cmd = String::from_utf8_lossy(data).trim().to_string();
        if cmd != FLUSH_COMMAND {
            reply.error(Errno::EINVAL);
            return None;
        }
        // Not on a request slot: a long flush must not take one from the requests it waits for.
        let vfs = Arc::clone(&self.vfs);
        self.rt.spawn(async move {
            match vfs.flush_all().await {
                Ok(()) => {
                    c.set_flush_error(None);
                    reply.written(n);
                }
                Err(e) => {
                    tracing::warn!("flush requested through {CONTROL_NAME} failed: {e}");
                    c.set_flush_error(Some(e.to_string()));
                    reply.error(Errno::EIO);
                }
            }
        });
        None
    }

    /// flush/fsync on a virtual file: nothing to do.
    pub(super) fn v_empty(&self, ino: u64, reply: ReplyEmpty) -> Option<ReplyEmpty> {
        if self.ctl().is_none() || !is_virtual(ino) {
            return Some(reply);
        }
        reply.ok();
        None
    }

    pub(super) fn v_release(&self, ino: u64, fh: u64, reply: ReplyEmpty) -> Option<ReplyEmpty> {
        let Some(c) = self.ctl().filter(|_| is_virtual(ino)) else {
            return Some(reply);
        };
        c.snapshots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&fh);
        reply.ok();
        None
    }

    /// access: the virtual files' mode and owner decide (see [`super::ops::access_allowed`]).
    pub(super) fn v_access(
        &self,
        ino: u64,
        uid: u32,
        gid: u32,
        mask: i32,
        reply: ReplyEmpty,
    ) -> Option<ReplyEmpty> {
        let Some(c) = self.ctl().filter(|_| is_virtual(ino)) else {
            return Some(reply);
        };
        let a = c.attr(ino, 0);
        let attr = crate::vfs::FileAttr {
            ino,
            size: 0,
            kind: crate::vfs::FileKind::File,
            perm: u32::from(a.perm),
            nlink: 1,
            uid: a.uid,
            gid: a.gid,
            rdev: 0,
            atime_ns: 0,
            mtime_ns: 0,
            ctime_ns: 0,
        };
        if super::ops::access_allowed(mask, &attr, uid, gid, &[]) {
            reply.ok();
        } else {
            reply.error(Errno::EACCES);
        }
        None
    }

    /// getxattr/listxattr: the virtual files have no extended attributes.
    pub(super) fn v_xattr(&self, ino: u64, list: bool, reply: ReplyXattr) -> Option<ReplyXattr> {
        if self.ctl().is_none() || !is_virtual(ino) {
            return Some(reply);
        }
        if list {
            reply.size(0);
        } else {
            reply.error(Errno::NO_XATTR);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn virtual_names_are_found_in_the_root_only() {
        assert_eq!(
            lookup_virtual(ROOT_INO, OsStr::new(".lafs-status")),
            Some(STATUS_INO)
        );
        assert_eq!(
            lookup_virtual(ROOT_INO, OsStr::new(".lafs-control")),
            Some(CONTROL_INO)
        );
        assert_eq!(
            lookup_virtual(ROOT_INO + 1, OsStr::new(".lafs-status")),
            None
        );
        assert_eq!(lookup_virtual(ROOT_INO, OsStr::new("lafs-status")), None);
        assert!(is_virtual(STATUS_INO) && is_virtual(CONTROL_INO) && !is_virtual(ROOT_INO));
    }

    #[test]
    fn clean_means_nothing_pending_and_the_report_round_trips() {
        let mut s = Status {
            cache_used: 10,
            read_cache: 20,
            cache_limit: 100,
            ..Status::default()
        };
        let info = MountInfo {
            pid: 7,
            exits_on_unmount: true,
            mountpoint: "/m".into(),
            source: "tahoe:".into(),
            read_only: false,
            cache_dir: "/c".into(),
        };
        assert!(StatusReport::new(info.clone(), s.clone(), None).clean);
        for f in [
            |s: &mut Status| s.uploads_queued = 1,
            |s: &mut Status| s.uploads_in_flight = 1,
            |s: &mut Status| s.bytes_dirty = 1,
            |s: &mut Status| s.pending_dir_changes = 1,
        ] {
            let mut t = s.clone();
            f(&mut t);
            assert!(!StatusReport::new(info.clone(), t, None).clean);
        }
        s.last_errors = vec!["upload of a/b failed".into()];
        let r = StatusReport::new(info, s, Some("x".into()));
        let text = serde_json::to_string(&r).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["pid"], 7);
        assert_eq!(v["mountpoint"], "/m");
        assert_eq!(v["cache_limit"], 100);
        assert_eq!(v["read_cache"], 20);
        let back: StatusReport = serde_json::from_str(&text).unwrap();
        assert_eq!(back, r);
        let h = r.human();
        assert!(h.starts_with("tahoe: on /m (read-write, pid 7)\n"), "{h}");
        assert!(h.contains("  upload of a/b failed\n"), "{h}");
        assert!(h.contains("last flush failed: x\n"), "{h}");
        assert!(
            h.contains("cache: 10 B written + 20 B read cache, of 100 B in /c\n"),
            "{h}"
        );
    }

    #[test]
    fn byte_counts_use_binary_units() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(3 << 30), "3.0 GiB");
    }
}
