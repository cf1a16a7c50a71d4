//! The mount: [`GridBackend`] (the filesystem layer's grid) and [`LafsFs`], a thin fuser adapter.
//!
//! Design: every fuser callback copies its arguments, spawns one tokio task that calls the
//! matching [`Vfs`] method and replies from that task, so the FUSE thread never waits on the
//! network. Two exceptions, both only local work: a write that needs no wait ([`Vfs::write_now`]:
//! its file is in the cache and the cache has room) is done on the FUSE thread, a `pwrite` into
//! the cache file (into the page cache) straight from fuser's buffer; and a read whose bytes
//! are local ([`Vfs::read_now`]: the write-back cache, the segment cache, or a read stream that
//! received them) is answered there, which halves the context switches of a sequential read.
//! Errors become errnos in ONE place, [`errno`], through [`VfsError::to_errno`] (plus the two
//! macOS xattr spellings, `xattr_errno`). The few decisions the adapter makes itself
//! (readdirplus batches and their lookup counts, fallocate, access, the macOS xattr names) live
//! in [`ops`], unit-tested there. Requests fuser would log
//! as "[Not Implemented]" are answered quietly (ioctl `ENOTTY`; copy_file_range and poll
//! `ENOSYS`, which the kernel remembers); getlk/setlk and bmap are never sent (no POSIX-lock
//! capability is negotiated, the kernel keeps locks locally; not a block-device mount). A
//! semaphore bounds the requests in flight (the FUSE thread blocks on
//! it only when that many requests are already running, which is the back-pressure we want).
//!
//! Invariants: every request is answered exactly once (the reply object moves into its task, which
//! replies with the result or the errno; a reply dropped unsent answers EIO); caps never reach a
//! log line. Requests that change an inode (write, setattr, fallocate, open, flush,
//! fsync, release, setxattr, removexattr) run in the order received per inode ([`order`]): each
//! takes its turn on the FUSE thread and its task waits for the earlier turns; the FUSE-thread
//! write is done only when no turn of its inode is outstanding. Namespace changes are serialised
//! per directory by the kernel (it holds the directory's lock for them); the layer below takes
//! its own locks.

pub mod backend;
pub mod ops;
pub mod order;
pub mod readbehind;
pub mod status;

pub use backend::{GridBackend, ReadCounters};

use crate::vfs::{FileAttr, FileKind, SetAttr, TimeSet, Vfs, VfsError};
use fuser::{
    AccessFlags, CopyFileRangeFlags, Errno, FileHandle, FileType, Filesystem, FopenFlags,
    Generation, INodeNo, InitFlags, IoctlFlags, KernelConfig, LockOwner, OpenFlags, PollEvents,
    PollFlags, PollNotifier, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory,
    ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyIoctl, ReplyLseek, ReplyOpen, ReplyPoll,
    ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};
use std::ffi::{OsStr, OsString};
use std::future::Future;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::runtime::Handle;
use tokio::sync::Semaphore;

/// How long the kernel may cache attributes and entries. Short: other writers change the grid.
const TTL: Duration = Duration::from_secs(1);
/// How long an unmount waits for pending uploads without progress ([`FlushProgress`]): a flush
/// that keeps completing uploads goes on, however large the backlog.
pub const FLUSH_AT_UNMOUNT: Duration = Duration::from_secs(120);
/// How many failed flush rounds in a row end the flush at unmount early (the grid is
/// unreachable); with the flusher's retry delay between rounds this is about 15 seconds (measured by
/// `mount-tests/mounting.test.sh`).
pub const UNMOUNT_FLUSH_ATTEMPTS: u32 = 3;
/// Requests running at once.
pub const MAX_IN_FLIGHT: usize = 256;

/// Tells whether a flush makes progress: an upload or a directory publish completed, or fewer
/// bytes wait for the grid, since the last time it did.
pub struct FlushProgress {
    /// Uploads and publishes completed, as last seen.
    done: (u64, u64),
    /// Bytes waiting for the grid, as last seen.
    dirty: u64,
    since: std::time::Instant,
}

impl FlushProgress {
    pub fn new(s: &crate::vfs::Status) -> FlushProgress {
        FlushProgress {
            done: (s.uploads_done, s.publishes),
            dirty: s.bytes_dirty,
            since: std::time::Instant::now(),
        }
    }

    /// Takes the current status; returns how long it has been since the last progress.
    pub fn idle(&mut self, s: &crate::vfs::Status) -> Duration {
        let done = (s.uploads_done, s.publishes);
        if done.0 > self.done.0 || done.1 > self.done.1 || s.bytes_dirty < self.dirty {
            self.since = std::time::Instant::now();
        }
        (self.done, self.dirty) = (done, s.bytes_dirty);
        self.since.elapsed()
    }
}

/// The one place where a layer error becomes an errno.
///
/// On macOS a missing attribute is `ENOATTR` (Linux: `ENODATA`, which macOS has only as a
/// STREAMS error).
fn errno(e: &VfsError) -> Errno {
    #[cfg(target_os = "macos")]
    if matches!(e, VfsError::NoAttr) {
        return Errno::NO_XATTR;
    }
    Errno::from_i32(e.to_errno())
}

/// An xattr request's errno. On macOS an unsupported attribute is `ENOTSUP` (45, not
/// `EOPNOTSUPP`, 102, there): the errno for which the macOS kernel falls back to AppleDouble
/// `._NAME` files.
fn xattr_errno(e: &VfsError) -> Errno {
    #[cfg(target_os = "macos")]
    if matches!(e, VfsError::NotSupported(_)) {
        return Errno::from_i32(libc::ENOTSUP);
    }
    errno(e)
}

fn file_type(k: FileKind) -> FileType {
    match k {
        FileKind::File => FileType::RegularFile,
        FileKind::Dir => FileType::Directory,
        FileKind::Symlink => FileType::Symlink,
        FileKind::Fifo => FileType::NamedPipe,
        FileKind::Socket => FileType::Socket,
        FileKind::CharDevice => FileType::CharDevice,
        FileKind::BlockDevice => FileType::BlockDevice,
    }
}

fn system_time(ns: i64) -> SystemTime {
    if ns >= 0 {
        UNIX_EPOCH + Duration::from_nanos(ns as u64)
    } else {
        UNIX_EPOCH
            .checked_sub(Duration::from_nanos(ns.unsigned_abs()))
            .unwrap_or(UNIX_EPOCH)
    }
}

fn time_set(t: TimeOrNow) -> TimeSet {
    match t {
        TimeOrNow::Now => TimeSet::Now,
        TimeOrNow::SpecificTime(t) => TimeSet::At(match t.duration_since(UNIX_EPOCH) {
            Ok(d) => i64::try_from(d.as_nanos()).unwrap_or(i64::MAX),
            Err(e) => -i64::try_from(e.duration().as_nanos()).unwrap_or(i64::MAX),
        }),
    }
}

/// The kernel's view of a [`FileAttr`].
pub fn fuse_attr(a: &FileAttr) -> fuser::FileAttr {
    fuser::FileAttr {
        ino: INodeNo(a.ino),
        size: a.size,
        blocks: a.size.div_ceil(512),
        atime: system_time(a.atime_ns),
        mtime: system_time(a.mtime_ns),
        ctime: system_time(a.ctime_ns),
        crtime: system_time(a.ctime_ns),
        kind: file_type(a.kind),
        perm: (a.perm & 0o7777) as u16,
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        rdev: a.rdev as u32,
        blksize: 128 * 1024,
        flags: 0,
    }
}

/// The fuser filesystem over a [`Vfs`].
pub struct LafsFs {
    vfs: Arc<Vfs>,
    rt: Handle,
    slots: Arc<Semaphore>,
    /// Per-inode order of the requests that change an inode ([`order`]).
    order: Arc<order::InodeOrder>,
    /// The virtual `.lafs-status` / `.lafs-control` files ([`status`]), when served.
    control: Option<Arc<status::Control>>,
    /// Drop-behind of the kernel's pages of files read in order ([`readbehind`]).
    behind: Arc<readbehind::ReadBehind>,
    /// The session's notifier, set once the session runs ([`LafsFs::notifier_slot`]).
    notifier: Arc<OnceLock<fuser::Notifier>>,
}

impl LafsFs {
    /// An adapter that runs its requests on `rt`.
    pub fn new(vfs: Arc<Vfs>, rt: Handle) -> Self {
        LafsFs {
            vfs,
            rt,
            slots: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
            order: Arc::new(order::InodeOrder::default()),
            control: None,
            behind: Arc::default(),
            notifier: Arc::default(),
        }
    }

    /// Where the mount puts the session's notifier once the session is spawned (the
    /// filesystem moves into the session before the notifier exists). Until then, and
    /// without it, the kernel's pages are left alone.
    pub fn notifier_slot(&self) -> Arc<OnceLock<fuser::Notifier>> {
        Arc::clone(&self.notifier)
    }

    /// Invalidates the kernel's pages of `ino` in `off .. off + len`, from a blocking task.
    fn invalidate_pages(&self, ino: u64, off: u64, len: u64) {
        let Some(n) = self.notifier.get().cloned() else {
            return;
        };
        let (Ok(off), Ok(len)) = (i64::try_from(off), i64::try_from(len)) else {
            return;
        };
        self.rt.spawn_blocking(move || {
            if let Err(e) = n.inval_inode(INodeNo(ino), off, len) {
                tracing::trace!("invalidating pages of inode {ino}: {e}");
            }
        });
    }

    /// Whether `n` in `parent` names one of the virtual files ([`status`]). The names are
    /// reserved in the root: a change naming them answers EPERM, where it would otherwise
    /// reach a grid entry of that name, which the mount hides behind the virtual file.
    fn reserved(&self, parent: INodeNo, n: &OsStr) -> bool {
        self.control.is_some() && status::lookup_virtual(parent.0, n).is_some()
    }

    /// Runs `f(vfs)` on a tokio task holding one in-flight slot.
    fn spawn<F, Fut>(&self, f: F)
    where
        F: FnOnce(Arc<Vfs>) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.spawn_turn(None, f)
    }

    /// [`LafsFs::spawn`] for a request that changes inode `ino`: it runs after every such request
    /// received before it on that inode ([`order`]).
    fn spawn_ordered<F, Fut>(&self, ino: u64, f: F)
    where
        F: FnOnce(Arc<Vfs>) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let turn = self.order.enter(ino);
        self.spawn_turn(Some(turn), f)
    }

    fn spawn_turn<F, Fut>(&self, mut turn: Option<order::Turn>, f: F)
    where
        F: FnOnce(Arc<Vfs>) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        // Back-pressure: the FUSE thread waits here only when MAX_IN_FLIGHT requests run.
        let permit = match Arc::clone(&self.slots).try_acquire_owned() {
            Ok(p) => p,
            Err(_) => match self.rt.block_on(Arc::clone(&self.slots).acquire_owned()) {
                Ok(p) => p,
                // The semaphore is never closed. Were it closed, the reply dropped with `f`
                // answers EIO (fuser replies EIO for a reply never sent).
                Err(_) => return,
            },
        };
        let vfs = Arc::clone(&self.vfs);
        self.rt.spawn(async move {
            if let Some(t) = turn.as_mut() {
                t.wait().await;
            }
            f(vfs).await;
            drop(turn);
            drop(permit);
        });
    }
}

fn reply_entry(r: Result<FileAttr, VfsError>, reply: ReplyEntry) {
    match r {
        Ok(a) => reply.entry(&TTL, &fuse_attr(&a), Generation(0)),
        Err(e) => reply.error(errno(&e)),
    }
}

fn reply_empty(r: Result<(), VfsError>, reply: ReplyEmpty) {
    match r {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(errno(&e)),
    }
}

fn reply_attr(r: Result<FileAttr, VfsError>, reply: ReplyAttr) {
    match r {
        Ok(a) => reply.attr(&TTL, &fuse_attr(&a)),
        Err(e) => reply.error(errno(&e)),
    }
}

/// getxattr/listxattr: `size` 0 asks for the length; a buffer too small is ERANGE.
fn reply_xattr(r: Result<Vec<u8>, VfsError>, size: u32, reply: ReplyXattr) {
    match r {
        Ok(v) if size == 0 => reply.size(v.len() as u32),
        Ok(v) if v.len() <= size as usize => reply.data(&v),
        Ok(_) => reply.error(Errno::ERANGE),
        Err(e) => reply.error(xattr_errno(&e)),
    }
}

fn name(n: &OsStr) -> OsString {
    n.to_os_string()
}

/// The layer's (Linux) name and flags of an xattr request; `position` is always 0 on Linux.
#[cfg(not(target_os = "macos"))]
fn xattr_in(n: &OsStr, flags: i32, _position: u32) -> Result<(OsString, i32), Errno> {
    Ok((name(n), flags))
}

/// macOS: `NAME` is stored as `user.NAME`, the flag values are translated, and a `position`
/// (resource forks only, which are refused) is `EINVAL` ([`ops::mac_xattr_name`]).
#[cfg(target_os = "macos")]
fn xattr_in(n: &OsStr, flags: i32, position: u32) -> Result<(OsString, i32), Errno> {
    let stored = ops::mac_xattr_name(n).map_err(Errno::from_i32)?;
    if position != 0 {
        return Err(Errno::EINVAL);
    }
    Ok((stored, ops::mac_xattr_flags(flags)))
}

/// The name listxattr shows for stored name `n` (Linux: itself).
#[cfg(not(target_os = "macos"))]
fn xattr_listed(n: &str) -> Option<&str> {
    Some(n)
}

#[cfg(target_os = "macos")]
fn xattr_listed(n: &str) -> Option<&str> {
    ops::mac_listed_name(n)
}

impl Filesystem for LafsFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // readdirplus: a listing carries every entry's attributes, so `ls -l` and rsync need
        // no lookup per name. AUTO lets the kernel fall back to plain readdir for a listing
        // whose entries nobody stats (`ls` without -l after the first batch). A kernel without
        // them gets readdir + lookup, as before.
        // Linux only: macFUSE's kernel protocol is its own (bits it offers may mean other
        // things), and it is not tested there.
        let plus = InitFlags::FUSE_DO_READDIRPLUS | InitFlags::FUSE_READDIRPLUS_AUTO;
        if cfg!(target_os = "linux") {
            // Only what the kernel offers: this cannot fail.
            let _ = config.add_capabilities(plus & config.capabilities());
        }
        // Requests as large as the kernel allows: writes of up to 1 MiB (the kernel caps
        // `max_write` at its `max_pages` limit, 256 pages by default), and the kernel's own
        // read-ahead maximum (it only lets us lower it).
        let _ = config.set_max_write(1 << 20);
        // More read-ahead requests in flight before the kernel considers the mount congested:
        // each one waits on the grid (a segment fetch), not on a local disk.
        let _ = config.set_max_background(64);
        let _ = config.set_congestion_threshold(48);
        Ok(())
    }

    fn destroy(&mut self) {
        // Unmount: give pending uploads their chance (what cannot be uploaded stays journaled
        // and goes up at the next mount). Bounded twice: by progress, so a grid that stopped
        // answering cannot hang the unmount while a large backlog that keeps going up is
        // finished, and by failures: the flusher retries a failed upload or publish after
        // its retry delay, so one error (a transient one) does not end the flush, but
        // UNMOUNT_FLUSH_ATTEMPTS failed rounds in a row mean the grid is not there (offline):
        // waiting out the whole bound would gain nothing.
        let vfs = Arc::clone(&self.vfs);
        let rt = self.rt.clone();
        let _ = std::thread::spawn(move || {
            rt.block_on(async {
                // First make what is still only in the cache survive a power cut too.
                if let Err(e) = vfs.seal_all().await {
                    tracing::warn!("unmount: sealing the cache failed: {e}");
                }
                let mut progress = FlushProgress::new(&vfs.status());
                let stalled = async {
                    loop {
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        if progress.idle(&vfs.status()) >= FLUSH_AT_UNMOUNT {
                            return;
                        }
                    }
                };
                tokio::pin!(stalled);
                let mut failures = 0;
                loop {
                    let flush = tokio::select! {
                        r = vfs.flush_all() => Ok(r),
                        () = &mut stalled => Err(()),
                    };
                    match flush {
                        Ok(Ok(())) => return,
                        Ok(Err(e)) => {
                            failures += 1;
                            if failures >= UNMOUNT_FLUSH_ATTEMPTS {
                                tracing::warn!(
                                    "unmount: {e}; {failures} attempts failed: pending uploads \
                                     left in the cache for the next mount"
                                );
                                return;
                            }
                            tracing::warn!("unmount: {e}; flushing on");
                        }
                        Err(()) => {
                            tracing::warn!(
                                "unmount: no upload completed for {} s: pending uploads left in \
                                 the cache for the next mount",
                                FLUSH_AT_UNMOUNT.as_secs()
                            );
                            return;
                        }
                    }
                }
            })
        })
        .join();
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, n: &OsStr, reply: ReplyEntry) {
        let Some(reply) = self.v_lookup(parent.0, n, reply) else {
            return;
        };
        let n = name(n);
        self.spawn(move |v| async move { reply_entry(v.lookup(parent.0, &n).await, reply) });
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        // Local bookkeeping only: no network, no reply.
        self.vfs.forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let Some(reply) = self.v_getattr(ino.0, reply) else {
            return;
        };
        self.spawn(move |v| async move { reply_attr(v.getattr(ino.0).await, reply) });
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let Some(reply) = self.v_setattr(ino.0, reply) else {
            return;
        };
        let set = SetAttr {
            mode,
            uid,
            gid,
            size,
            atime: atime.map(time_set),
            mtime: mtime.map(time_set),
        };
        self.spawn_ordered(ino.0, move |v| async move {
            reply_attr(v.setattr(ino.0, set).await, reply)
        });
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        self.spawn(move |v| async move {
            match v.readlink(ino.0).await {
                Ok(t) => reply.data(&t),
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        n: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        if self.reserved(parent, n) {
            return reply.error(Errno::EPERM);
        }
        let (n, uid, gid) = (name(n), req.uid(), req.gid());
        let mode = mode & !(umask & 0o777);
        self.spawn(move |v| async move {
            reply_entry(
                v.mknod(parent.0, &n, mode, u64::from(rdev), uid, gid).await,
                reply,
            )
        });
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        n: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        if self.reserved(parent, n) {
            return reply.error(Errno::EPERM);
        }
        let (n, uid, gid) = (name(n), req.uid(), req.gid());
        let mode = mode & !umask;
        self.spawn(move |v| async move {
            reply_entry(v.mkdir(parent.0, &n, mode, uid, gid).await, reply)
        });
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, n: &OsStr, reply: ReplyEmpty) {
        if self.reserved(parent, n) {
            return reply.error(Errno::EPERM);
        }
        let n = name(n);
        self.spawn(move |v| async move { reply_empty(v.unlink(parent.0, &n).await, reply) });
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, n: &OsStr, reply: ReplyEmpty) {
        if self.reserved(parent, n) {
            return reply.error(Errno::EPERM);
        }
        let n = name(n);
        self.spawn(move |v| async move { reply_empty(v.rmdir(parent.0, &n).await, reply) });
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        if self.reserved(parent, link_name) {
            return reply.error(Errno::EPERM);
        }
        let (n, t, uid, gid) = (
            name(link_name),
            target.as_os_str().to_os_string(),
            req.uid(),
            req.gid(),
        );
        self.spawn(move |v| async move {
            reply_entry(v.symlink(parent.0, &n, &t, uid, gid).await, reply)
        });
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        n: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        if self.reserved(parent, n) || self.reserved(newparent, newname) {
            return reply.error(Errno::EPERM);
        }
        let (n, nn) = (name(n), name(newname));
        let flags = flags.bits();
        self.spawn(move |v| async move {
            reply_empty(v.rename(parent.0, &n, newparent.0, &nn, flags).await, reply)
        });
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        if self.reserved(newparent, newname) {
            return reply.error(Errno::EPERM);
        }
        let nn = name(newname);
        self.spawn(
            move |v| async move { reply_entry(v.link(ino.0, newparent.0, &nn).await, reply) },
        );
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let Some(reply) = self.v_open(ino.0, flags.0, reply) else {
            return;
        };
        let behind = Arc::clone(&self.behind);
        self.spawn_ordered(ino.0, move |v| async move {
            match v.open(ino.0, flags.0).await {
                Ok(fh) => {
                    behind.opened(ino.0);
                    reply.opened(FileHandle(fh), FopenFlags::empty())
                }
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let Some(reply) = self.v_read(ino.0, fh.0, offset, size, reply) else {
            return;
        };
        // Linux only: macFUSE's page cache and notifications are not tested.
        if cfg!(target_os = "linux") {
            if let Some((off, len)) = self.behind.read(ino.0, offset, u64::from(size)) {
                self.invalidate_pages(ino.0, off, len);
            }
        }
        // A read whose bytes are local (the write-back cache, or segments the read-ahead already
        // fetched: most reads of a sequential reader) is answered here, without the hand-off to
        // a task and back: for 128 KiB reads that hand-off cost more CPU than the reply.
        // Not while a change of the inode is still queued or running: the read comes after it.
        if !self.order.busy(ino.0) {
            if let Some(r) = self.vfs.read_now(ino.0, fh.0, offset, size) {
                return match r {
                    Ok(d) => reply.data(d.as_slice()),
                    Err(e) => reply.error(errno(&e)),
                };
            }
        }
        self.spawn(move |v| async move {
            match v.read_data(ino.0, fh.0, offset, size).await {
                Ok(d) => reply.data(d.as_slice()),
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let Some(reply) = self.v_write(ino.0, data, reply) else {
            return;
        };
        // Most writes need no wait: done here, straight from fuser's buffer (a `pwrite` into
        // the cache file; no copy of the data, no task hand-off: a sequential writer's round
        // trip is the kernel's, the pwrite and the reply).
        // Not while an earlier change of the inode is still queued or running: it goes first.
        if !self.order.busy(ino.0) {
            if let Some(r) = self.vfs.write_now(ino.0, fh.0, offset, data) {
                return match r {
                    Ok(n) => reply.written(n),
                    Err(e) => reply.error(errno(&e)),
                };
            }
        }
        let data = data.to_vec();
        self.spawn_ordered(ino.0, move |v| async move {
            match v.write(ino.0, fh.0, offset, &data).await {
                Ok(n) => reply.written(n),
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    fn flush(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        let Some(reply) = self.v_empty(ino.0, reply) else {
            return;
        };
        self.spawn_ordered(ino.0, move |v| async move {
            reply_empty(v.flush(ino.0, fh.0).await, reply)
        });
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let Some(reply) = self.v_release(ino.0, fh.0, reply) else {
            return;
        };
        self.behind.released(ino.0);
        self.spawn_ordered(ino.0, move |v| async move {
            reply_empty(v.release(ino.0, fh.0).await, reply)
        });
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let Some(reply) = self.v_empty(ino.0, reply) else {
            return;
        };
        self.spawn_ordered(ino.0, move |v| async move {
            reply_empty(v.fsync(ino.0, fh.0).await, reply)
        });
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        self.spawn(move |v| async move {
            match v.readdir(ino.0).await {
                Ok(entries) => {
                    // Offsets are positions in the listing, stable for one open directory
                    // handle as long as the listing does not change under it.
                    for (i, e) in entries.iter().enumerate().skip(offset as usize) {
                        if reply.add(INodeNo(e.ino), i as u64 + 1, file_type(e.kind), &e.name) {
                            break;
                        }
                    }
                    reply.ok();
                }
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let virtual_names = self.control.is_some() && ino.0 == crate::vfs::ROOT_INO;
        self.spawn(move |v| async move {
            // Each entry but `.`/`..` is a lookup the kernel will forget (see [`ops`]).
            let r = ops::readdirplus_batch(
                &v,
                ino.0,
                offset,
                // A grid entry named like a virtual file is shadowed by it: lookup answers
                // the virtual file, so the listing must not link the grid entry's inode.
                |n| virtual_names && status::lookup_virtual(ino.0, OsStr::new(n)).is_some(),
                |n, off, a| reply.add(INodeNo(a.ino), off, n, &TTL, &fuse_attr(a), Generation(0)),
            )
            .await;
            match r {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.spawn(move |v| async move { reply_empty(v.fsyncdir(ino.0).await, reply) });
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let s = self.vfs.statfs();
        reply.statfs(
            s.blocks, s.bfree, s.bavail, s.files, s.ffree, s.bsize, s.namelen, s.bsize,
        );
    }

    fn setxattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        n: &OsStr,
        value: &[u8],
        flags: i32,
        position: u32,
        reply: ReplyEmpty,
    ) {
        let (n, flags) = match xattr_in(n, flags, position) {
            Ok(x) => x,
            Err(e) => return reply.error(e),
        };
        let value = value.to_vec();
        self.spawn_ordered(ino.0, move |v| async move {
            match v.setxattr(ino.0, &n, &value, flags).await {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(xattr_errno(&e)),
            }
        });
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, n: &OsStr, size: u32, reply: ReplyXattr) {
        let Some(reply) = self.v_xattr(ino.0, false, reply) else {
            return;
        };
        let n = match xattr_in(n, 0, 0) {
            Ok((n, _)) => n,
            Err(e) => return reply.error(e),
        };
        self.spawn(move |v| async move { reply_xattr(v.getxattr(ino.0, &n).await, size, reply) });
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let Some(reply) = self.v_xattr(ino.0, true, reply) else {
            return;
        };
        self.spawn(move |v| async move {
            let r = v.listxattr(ino.0).await.map(|names| {
                let mut out = Vec::new();
                for n in names.iter().filter_map(|n| xattr_listed(n)) {
                    out.extend_from_slice(n.as_bytes());
                    out.push(0);
                }
                out
            });
            reply_xattr(r, size, reply)
        });
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, n: &OsStr, reply: ReplyEmpty) {
        let n = match xattr_in(n, 0, 0) {
            Ok((n, _)) => n,
            Err(e) => return reply.error(e),
        };
        self.spawn_ordered(ino.0, move |v| async move {
            match v.removexattr(ino.0, &n).await {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(xattr_errno(&e)),
            }
        });
    }

    /// Only asked without `default_permissions` (with it the kernel checks itself), by
    /// access(2) and chdir: the stored mode and owner decide, as the kernel would.
    fn access(&self, req: &Request, ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        let (uid, gid, pid, mask) = (req.uid(), req.gid(), req.pid(), mask.bits());
        let Some(reply) = self.v_access(ino.0, uid, gid, mask, reply) else {
            return;
        };
        self.spawn(move |v| async move {
            // As the kernel does on a read-only filesystem: EROFS before any permission check.
            if mask & libc::W_OK != 0 {
                match v.writable(ino.0) {
                    Ok(true) => {}
                    Ok(false) => return reply.error(Errno::EROFS),
                    Err(e) => return reply.error(errno(&e)),
                }
            }
            match v.getattr(ino.0).await {
                Ok(a) => {
                    // /proc is read only when the group decides.
                    let groups = if uid != 0 && uid != a.uid && gid != a.gid {
                        ops::supplementary_groups(pid)
                    } else {
                        Vec::new()
                    };
                    if ops::access_allowed(mask, &a, uid, gid, &groups) {
                        reply.ok()
                    } else {
                        reply.error(Errno::EACCES)
                    }
                }
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    /// Mode 0 extends the size past EOF (zeros, like a truncate up); `FALLOC_FL_KEEP_SIZE`
    /// succeeds without change; other modes `EOPNOTSUPP` ([`ops::fallocate_size`]). The kernel
    /// holds the inode lock, so no write changes the size between the getattr and the setattr.
    fn fallocate(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        if self.control.is_some() && status::is_virtual(ino.0) {
            return reply.error(Errno::EOPNOTSUPP);
        }
        self.spawn_ordered(ino.0, move |v| async move {
            let size = match v.getattr(ino.0).await {
                Ok(a) => a.size,
                Err(e) => return reply.error(errno(&e)),
            };
            match ops::fallocate_size(mode, offset, length, size) {
                Ok(None) => reply.ok(),
                Ok(Some(size)) => {
                    let set = SetAttr {
                        size: Some(size),
                        ..SetAttr::default()
                    };
                    reply_empty(v.setattr(ino.0, set).await.map(|_| ()), reply)
                }
                Err(e) => reply.error(Errno::from_i32(e)),
            }
        });
    }

    /// SEEK_DATA/SEEK_HOLE (the kernel does the other whences itself): a file is all data,
    /// its only hole the one at its end.
    fn lseek(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: i64,
        whence: i32,
        reply: ReplyLseek,
    ) {
        if self.control.is_some() && status::is_virtual(ino.0) {
            return reply.error(Errno::from_i32(libc::ENXIO));
        }
        self.spawn(move |v| async move {
            match v.getattr(ino.0).await {
                Ok(a) => match ops::seek_data_hole(whence, offset, a.size) {
                    Ok(o) => reply.offset(o),
                    Err(e) => reply.error(Errno::from_i32(e)),
                },
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    /// No ioctl is supported: `ENOTTY`, the answer of a file without ioctls (fuser's default
    /// logs a warning for every call, e.g. each `FS_IOC_GETFLAGS` of `lsattr` or `cp`).
    #[allow(clippy::too_many_arguments)]
    fn ioctl(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: IoctlFlags,
        _cmd: u32,
        _in_data: &[u8],
        _out_size: u32,
        reply: ReplyIoctl,
    ) {
        reply.error(Errno::ENOTTY);
    }

    /// Not supported: `ENOSYS` tells the kernel once per mount to copy through read and write
    /// (fuser's default would log a warning).
    #[allow(clippy::too_many_arguments)]
    fn copy_file_range(
        &self,
        _req: &Request,
        _ino_in: INodeNo,
        _fh_in: FileHandle,
        _offset_in: u64,
        _ino_out: INodeNo,
        _fh_out: FileHandle,
        _offset_out: u64,
        _len: u64,
        _flags: CopyFileRangeFlags,
        reply: ReplyWrite,
    ) {
        reply.error(Errno::ENOSYS);
    }

    /// Not supported: `ENOSYS` tells the kernel once per mount that files are always ready
    /// (fuser's default would log a warning).
    fn poll(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _ph: PollNotifier,
        _events: PollEvents,
        _flags: PollFlags,
        reply: ReplyPoll,
    ) {
        reply.error(Errno::ENOSYS);
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        n: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        if self.reserved(parent, n) {
            return reply.error(Errno::EPERM);
        }
        let (n, uid, gid) = (name(n), req.uid(), req.gid());
        let mode = mode & !(umask & 0o777);
        let behind = Arc::clone(&self.behind);
        self.spawn(move |v| async move {
            match v.create(parent.0, &n, mode, flags, uid, gid).await {
                Ok((a, fh)) => {
                    behind.opened(a.ino);
                    reply.created(
                        &TTL,
                        &fuse_attr(&a),
                        Generation(0),
                        FileHandle(fh),
                        FopenFlags::empty(),
                    )
                }
                Err(e) => reply.error(errno(&e)),
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flush_progress_is_a_completed_upload_or_publish_or_fewer_dirty_bytes() {
        let pause = Duration::from_millis(30);
        let mut s = crate::vfs::Status {
            bytes_dirty: 100,
            ..Default::default()
        };
        let mut p = FlushProgress::new(&s);
        std::thread::sleep(pause);
        assert!(p.idle(&s) >= pause, "nothing changed");
        s.bytes_dirty = 50;
        assert!(p.idle(&s) < pause, "fewer dirty bytes");
        std::thread::sleep(pause);
        s.bytes_dirty = 80;
        assert!(
            p.idle(&s) >= pause,
            "more dirty bytes (a writer) is not progress"
        );
        s.uploads_done = 1;
        assert!(p.idle(&s) < pause, "an upload completed");
        std::thread::sleep(pause);
        s.publishes = 1;
        assert!(p.idle(&s) < pause, "a publish completed");
    }

    /// The FUSE thread hands requests to tasks without waiting while fewer than MAX_IN_FLIGHT
    /// run (so a request stuck on the network holds up no other), and waits for a slot, instead
    /// of queueing without bound, once MAX_IN_FLIGHT run.
    #[test]
    fn the_fuse_thread_waits_only_once_max_in_flight_requests_run() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::mpsc;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let b = crate::vfs::MemBackend::new();
        let root = b.new_dir();
        let tmp = tempfile::tempdir().unwrap();
        let cfg = crate::vfs::Config::new(tmp.path().to_path_buf());
        let v = rt.block_on(Vfs::new(Arc::new(b), &root, cfg)).unwrap();
        let fs = LafsFs::new(Arc::new(v), rt.handle().clone());
        // Requests that run until the test lets them end (one permit each).
        let release = Arc::new(Semaphore::new(0));
        let started = Arc::new(AtomicUsize::new(0));
        let stuck = |fs: &LafsFs| {
            let (r, s) = (Arc::clone(&release), Arc::clone(&started));
            fs.spawn(move |_| async move {
                s.fetch_add(1, Ordering::SeqCst);
                r.acquire().await.unwrap().forget();
            });
        };
        let (tx, rx) = mpsc::channel();
        std::thread::scope(|sc| {
            sc.spawn(|| {
                for _ in 0..MAX_IN_FLIGHT {
                    stuck(&fs);
                }
                tx.send("below the bound").unwrap();
                stuck(&fs);
                tx.send("one over the bound").unwrap();
            });
            assert_eq!(
                rx.recv_timeout(Duration::from_secs(20)),
                Ok("below the bound"),
                "the FUSE thread waited with fewer than MAX_IN_FLIGHT requests running"
            );
            assert!(
                rx.recv_timeout(Duration::from_millis(300)).is_err(),
                "a request over the bound was queued without waiting for a slot"
            );
            release.add_permits(1);
            assert_eq!(
                rx.recv_timeout(Duration::from_secs(20)),
                Ok("one over the bound"),
                "the ended request's slot was not handed on"
            );
        });
        release.add_permits(MAX_IN_FLIGHT);
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while started.load(Ordering::SeqCst) < MAX_IN_FLIGHT + 1 {
            assert!(
                std::time::Instant::now() < deadline,
                "not every request ran"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn times_round_trip_through_system_time() {
        for ns in [0i64, 1, 1_700_000_000_123_456_789, -1_500_000_000] {
            let TimeSet::At(back) = time_set(TimeOrNow::SpecificTime(system_time(ns))) else {
                panic!("not a time");
            };
            assert_eq!(back, ns);
        }
    }

    #[test]
    fn every_kind_maps_to_its_fuse_type() {
        assert_eq!(file_type(FileKind::Fifo), FileType::NamedPipe);
        assert_eq!(file_type(FileKind::Dir), FileType::Directory);
        assert_eq!(file_type(FileKind::CharDevice), FileType::CharDevice);
        assert_eq!(errno(&VfsError::NotFound), Errno::from_i32(libc::ENOENT));
    }
}
