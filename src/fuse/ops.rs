//! The decisions behind the adapter's less common requests, kept apart from fuser's reply types
//! so that they are unit-tested without a kernel: readdirplus batches, fallocate, access and the
//! macOS extended-attribute translation.
//!
//! Invariants:
//! - readdirplus counts a lookup for exactly the entries the kernel receives (every name but
//!   `.` and `..`, which the kernel never links), as [`Vfs::lookup`] does, so the kernel's
//!   `forget` balances it; an entry that did not fit in the reply buffer is un-counted at once.
//! - fallocate never shrinks a file and never writes data: the only change it makes is a size
//!   increase, the same as a truncate up (the new bytes read as zeros).
//! - access answers like the kernel's `generic_permission` would on the stored mode and owner.
//! - The macOS xattr names map one-to-one onto the layer's `user.` namespace (`NAME` on macOS is
//!   `user.NAME` in the entry's metadata and on Linux), so one stored attribute has one name on
//!   each system.

use crate::vfs::{FileAttr, FileKind, Ino, Vfs, VfsError};
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};

/// Fills one readdirplus reply of directory `ino` from listing position `offset`.
///
/// `add(name, offset, attr)` adds an entry to the reply and returns `true` when the buffer is
/// full (that entry was NOT added). Entries named by `hidden` are left out. Offsets are the
/// ones `readdir` uses (position + 1), so the kernel may mix both calls on one handle (it does
/// with `READDIRPLUS_AUTO`). An entry removed since the listing was read is skipped; another
/// error ends the batch (and is returned when nothing was added, so the caller replies it).
pub async fn readdirplus_batch(
    vfs: &Vfs,
    ino: Ino,
    offset: u64,
    hidden: impl Fn(&str) -> bool,
    mut add: impl FnMut(&str, u64, &FileAttr) -> bool,
) -> Result<(), VfsError> {
    let entries = vfs.readdir(ino).await?;
    let mut added = 0usize;
    let skip = usize::try_from(offset).unwrap_or(usize::MAX);
    for (i, e) in entries.iter().enumerate().skip(skip) {
        let off = i as u64 + 1;
        if e.name == "." || e.name == ".." {
            // Not linked by the kernel, so not counted: its attributes only fill the record.
            let a = match vfs.getattr(e.ino).await {
                Ok(a) => a,
                Err(_) => vfs.getattr(ino).await?,
            };
            if add(&e.name, off, &a) {
                break;
            }
            added += 1;
            continue;
        }
        if hidden(&e.name) {
            continue;
        }
        match vfs.lookup(ino, OsStr::new(&e.name)).await {
            Ok(a) => {
                if add(&e.name, off, &a) {
                    // Not sent: take back the lookup the kernel will never forget.
                    vfs.forget(a.ino, 1);
                    break;
                }
                added += 1;
            }
            Err(VfsError::NotFound) => continue,
            Err(err) if added == 0 => return Err(err),
            Err(_) => break,
        }
    }
    Ok(())
}

/// `FALLOC_FL_KEEP_SIZE` (the same value on every Linux architecture, linux/falloc.h).
pub const FALLOC_FL_KEEP_SIZE: i32 = 0x01;

/// What fallocate(ino, `mode`, `offset`, `len`) does to a file of `size` bytes: `Ok(Some(n))`
/// sets the size to `n` (only ever larger), `Ok(None)` changes nothing, `Err(errno)` fails.
///
/// Mode 0 reserves space, which a grid file does not need: it only extends the size when
/// `offset + len` passes the end (fallocate(2): "the file size will be changed if offset+len is
/// greater than the file size"). `FALLOC_FL_KEEP_SIZE` alone therefore does nothing. Every other
/// mode (punch hole, zero range, collapse, insert, unshare) is `EOPNOTSUPP`.
pub fn fallocate_size(mode: i32, offset: u64, len: u64, size: u64) -> Result<Option<u64>, i32> {
    if mode & !FALLOC_FL_KEEP_SIZE != 0 {
        return Err(libc::EOPNOTSUPP);
    }
    if len == 0 {
        return Err(libc::EINVAL);
    }
    let end = match offset.checked_add(len) {
        Some(e) if e <= i64::MAX as u64 => e,
        _ => return Err(libc::EFBIG),
    };
    if mode & FALLOC_FL_KEEP_SIZE != 0 || end <= size {
        Ok(None)
    } else {
        Ok(Some(end))
    }
}

/// `lseek(offset, whence)` for `SEEK_DATA`/`SEEK_HOLE` in a file of `size` bytes without holes:
/// data starts at `offset` and the only hole is at the end; at or past the end both are `ENXIO`
/// (lseek(2)). Other whences never reach a filesystem (`EINVAL`).
pub fn seek_data_hole(whence: i32, offset: i64, size: u64) -> Result<i64, i32> {
    let size = i64::try_from(size).unwrap_or(i64::MAX);
    if whence != libc::SEEK_DATA && whence != libc::SEEK_HOLE {
        return Err(libc::EINVAL);
    }
    if offset < 0 || offset >= size {
        return Err(libc::ENXIO);
    }
    Ok(if whence == libc::SEEK_DATA {
        offset
    } else {
        size
    })
}

/// Whether a caller `uid`/`gid` (in supplementary `groups`) may access a file with attributes
/// `a` for `mask` (`R_OK`/`W_OK`/`X_OK` bits, 0 for existence), as the kernel's
/// `generic_permission` decides: the owner's bits for the owner, else the group's bits for a
/// member, else the others' bits; root may read and write anything and search any directory,
/// but execute a file only when some execute bit is set.
pub fn access_allowed(mask: i32, a: &FileAttr, uid: u32, gid: u32, groups: &[u32]) -> bool {
    let want = (mask & (libc::R_OK | libc::W_OK | libc::X_OK)) as u32;
    if uid == 0 {
        return want & libc::X_OK as u32 == 0 || a.kind == FileKind::Dir || a.perm & 0o111 != 0;
    }
    let bits = if uid == a.uid {
        (a.perm >> 6) & 7
    } else if gid == a.gid || groups.contains(&a.gid) {
        (a.perm >> 3) & 7
    } else {
        a.perm & 7
    };
    bits & want == want
}

/// The supplementary groups of process `pid` (the `Groups:` line of /proc/PID/status), or none
/// when they cannot be read (another pid namespace, no /proc: then only the primary group of
/// the request counts).
pub fn supplementary_groups(pid: u32) -> Vec<u32> {
    if pid == 0 {
        return Vec::new();
    }
    let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return Vec::new();
    };
    text.lines()
        .find_map(|l| l.strip_prefix("Groups:"))
        .map(|g| {
            g.split_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// macOS `setxattr(2)` option bits (<sys/xattr.h>); Linux's `XATTR_CREATE` is 1 and
/// `XATTR_REPLACE` 2 ([`crate::vfs::XATTR_CREATE`], [`crate::vfs::XATTR_REPLACE`]).
pub const MAC_XATTR_CREATE: i32 = 0x0002;
pub const MAC_XATTR_REPLACE: i32 = 0x0004;
/// The resource fork's attribute name on macOS.
pub const MAC_RESOURCE_FORK: &str = "com.apple.ResourceFork";
/// The namespace macOS names live in (see the module doc).
const USER_PREFIX: &[u8] = b"user.";

/// macOS setxattr options as the layer's (Linux) flags: `XATTR_CREATE`/`XATTR_REPLACE`
/// translated, everything else (`XATTR_NOFOLLOW`: the kernel has resolved the path already;
/// `XATTR_NOSECURITY`, `XATTR_NODEFAULT`, `XATTR_SHOWCOMPRESSION`) dropped.
pub fn mac_xattr_flags(options: i32) -> i32 {
    let mut f = 0;
    if options & MAC_XATTR_CREATE != 0 {
        f |= crate::vfs::XATTR_CREATE;
    }
    if options & MAC_XATTR_REPLACE != 0 {
        f |= crate::vfs::XATTR_REPLACE;
    }
    f
}

/// The stored name of macOS attribute `name`: `user.NAME`. The resource fork is refused with
/// `ENOTSUP` (macOS then keeps it in an AppleDouble `._NAME` file): fuser does not pass
/// getxattr's `position`, so a fork larger than one read could not be read back.
pub fn mac_xattr_name(name: &OsStr) -> Result<OsString, i32> {
    if name.as_bytes() == MAC_RESOURCE_FORK.as_bytes() {
        return Err(libc::ENOTSUP);
    }
    let mut v = USER_PREFIX.to_vec();
    v.extend_from_slice(name.as_bytes());
    Ok(OsString::from_vec(v))
}

/// The macOS name of stored attribute `stored` (`user.NAME` → `NAME`); others are not shown.
pub fn mac_listed_name(stored: &str) -> Option<&str> {
    stored
        .strip_prefix("user.")
        .filter(|n| !n.is_empty() && *n != MAC_RESOURCE_FORK)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vfs::{Config, MemBackend, ROOT_INO};
    use std::sync::Arc;
    use std::time::Duration;

    fn attr(kind: FileKind, perm: u32, uid: u32, gid: u32) -> FileAttr {
        FileAttr {
            ino: 2,
            size: 0,
            kind,
            perm,
            nlink: 1,
            uid,
            gid,
            rdev: 0,
            atime_ns: 0,
            mtime_ns: 0,
            ctime_ns: 0,
        }
    }

    // Expected values from fallocate(2): mode 0 extends to offset+len only past EOF,
    // KEEP_SIZE never changes the size, the other modes are not supported here.
    #[test]
    fn fallocate_extends_only_past_the_end_and_refuses_other_modes() {
        assert_eq!(fallocate_size(0, 0, 4096, 100), Ok(Some(4096)));
        assert_eq!(fallocate_size(0, 100, 1, 100), Ok(Some(101)));
        assert_eq!(fallocate_size(0, 0, 100, 100), Ok(None));
        assert_eq!(fallocate_size(0, 10, 20, 100), Ok(None));
        assert_eq!(
            fallocate_size(FALLOC_FL_KEEP_SIZE, 0, 1 << 20, 100),
            Ok(None)
        );
        // linux/falloc.h: PUNCH_HOLE 0x02, COLLAPSE_RANGE 0x08, ZERO_RANGE 0x10,
        // INSERT_RANGE 0x20, UNSHARE_RANGE 0x40.
        for m in [0x02 | 0x01, 0x08, 0x10, 0x10 | 0x01, 0x20, 0x40] {
            assert_eq!(
                fallocate_size(m, 0, 1, 100),
                Err(libc::EOPNOTSUPP),
                "mode {m:#x}"
            );
        }
        assert_eq!(fallocate_size(0, u64::MAX, 2, 0), Err(libc::EFBIG));
        assert_eq!(fallocate_size(0, i64::MAX as u64, 1, 0), Err(libc::EFBIG));
        assert_eq!(fallocate_size(0, 0, 0, 0), Err(libc::EINVAL));
    }

    #[test]
    fn a_file_is_all_data_with_its_hole_at_the_end() {
        use libc::{SEEK_DATA, SEEK_HOLE};
        assert_eq!(seek_data_hole(SEEK_DATA, 0, 10), Ok(0));
        assert_eq!(seek_data_hole(SEEK_DATA, 9, 10), Ok(9));
        assert_eq!(seek_data_hole(SEEK_HOLE, 3, 10), Ok(10));
        assert_eq!(seek_data_hole(SEEK_DATA, 10, 10), Err(libc::ENXIO));
        assert_eq!(seek_data_hole(SEEK_HOLE, 10, 10), Err(libc::ENXIO));
        assert_eq!(seek_data_hole(SEEK_HOLE, 0, 0), Err(libc::ENXIO));
        assert_eq!(seek_data_hole(SEEK_DATA, -1, 10), Err(libc::ENXIO));
        assert_eq!(seek_data_hole(libc::SEEK_END, 0, 10), Err(libc::EINVAL));
    }

    // The cases of generic_permission (fs/namei.c): owner, group (primary or supplementary),
    // others, and root's bypass, which for execute needs a directory or some x bit.
    #[test]
    fn access_follows_owner_group_other_bits_and_roots_bypass() {
        let (r, w, x) = (libc::R_OK, libc::W_OK, libc::X_OK);
        let f = attr(FileKind::File, 0o640, 1000, 100);
        assert!(access_allowed(r | w, &f, 1000, 1000, &[]));
        assert!(!access_allowed(x, &f, 1000, 1000, &[]));
        assert!(access_allowed(r, &f, 2000, 100, &[]));
        assert!(!access_allowed(w, &f, 2000, 100, &[]));
        assert!(access_allowed(r, &f, 2000, 7, &[5, 100]));
        assert!(!access_allowed(r, &f, 2000, 7, &[5]));
        assert!(access_allowed(0, &f, 2000, 7, &[]));
        // The owner's bits apply to the owner even when the group's would allow more.
        let g = attr(FileKind::File, 0o070, 1000, 100);
        assert!(!access_allowed(r, &g, 1000, 100, &[]));
        assert!(access_allowed(
            r,
            &attr(FileKind::File, 0o004, 1, 1),
            2,
            2,
            &[]
        ));
        // Root.
        assert!(access_allowed(
            r | w,
            &attr(FileKind::File, 0o000, 1, 1),
            0,
            0,
            &[]
        ));
        assert!(!access_allowed(
            x,
            &attr(FileKind::File, 0o600, 1, 1),
            0,
            0,
            &[]
        ));
        assert!(access_allowed(
            x,
            &attr(FileKind::File, 0o001, 1, 1),
            0,
            0,
            &[]
        ));
        assert!(access_allowed(
            x,
            &attr(FileKind::Dir, 0o000, 1, 1),
            0,
            0,
            &[]
        ));
    }

    #[test]
    fn groups_come_from_proc_status() {
        // Our own process: the same list getgroups(2) gives.
        let n = unsafe { libc::getgroups(0, std::ptr::null_mut()) };
        let mut want = vec![0 as libc::gid_t; n.max(0) as usize];
        let n = unsafe { libc::getgroups(n, want.as_mut_ptr()) };
        want.truncate(n.max(0) as usize);
        let mut got = supplementary_groups(std::process::id());
        got.sort_unstable();
        want.sort_unstable();
        want.dedup();
        assert_eq!(got, want);
        assert!(supplementary_groups(0).is_empty());
    }

    // Values from macOS <sys/xattr.h>: XATTR_NOFOLLOW 1, XATTR_CREATE 2, XATTR_REPLACE 4.
    #[test]
    fn macos_xattr_flags_and_names_translate() {
        assert_eq!(mac_xattr_flags(0), 0);
        assert_eq!(mac_xattr_flags(0x0001), 0);
        assert_eq!(mac_xattr_flags(0x0002 | 0x0001), crate::vfs::XATTR_CREATE);
        assert_eq!(mac_xattr_flags(0x0004), crate::vfs::XATTR_REPLACE);
        assert_eq!(
            mac_xattr_name(OsStr::new("com.apple.FinderInfo")).unwrap(),
            OsString::from("user.com.apple.FinderInfo")
        );
        assert_eq!(
            mac_xattr_name(OsStr::new("user.x")).unwrap(),
            OsString::from("user.user.x")
        );
        assert_eq!(
            mac_xattr_name(OsStr::new("com.apple.ResourceFork")),
            Err(libc::ENOTSUP)
        );
        assert_eq!(
            mac_listed_name("user.com.apple.quarantine"),
            Some("com.apple.quarantine")
        );
        assert_eq!(mac_listed_name("user.user.x"), Some("user.x"));
        assert_eq!(mac_listed_name("user."), None);
        assert_eq!(mac_listed_name("trusted.x"), None);
    }

    /// A kernel's reply buffer that takes `room` entries, then reports full.
    struct Buffer {
        room: usize,
        got: Vec<(String, u64, Ino)>,
    }

    impl Buffer {
        fn add(&mut self, name: &str, off: u64, a: &FileAttr) -> bool {
            if self.got.len() == self.room {
                return true;
            }
            self.got.push((name.to_string(), off, a.ino));
            false
        }
    }

    // The lookup count is observable: an unlinked node stays (getattr answers, nlink 0) while
    // the kernel holds a lookup on it and is freed once the last one is forgotten.
    #[tokio::test]
    async fn readdirplus_counts_exactly_the_entries_sent() {
        let b = MemBackend::new();
        let root = b.new_dir();
        let tmp = tempfile::tempdir().unwrap();
        let mut c = Config::new(tmp.path().to_path_buf());
        c.write_back_delay = Duration::from_secs(3600);
        c.dir_refresh = Duration::from_secs(3600);
        let v = Vfs::new(Arc::new(b), &root, c).await.unwrap();
        let mut inos = Vec::new();
        for n in ["a", "b", "c", "d"] {
            let (a, fh) = v
                .create(ROOT_INO, OsStr::new(n), 0o644, libc::O_WRONLY, 1, 1)
                .await
                .unwrap();
            v.release(a.ino, fh).await.unwrap();
            // create counted one lookup: the kernel forgets it.
            v.forget(a.ino, 1);
            inos.push(a.ino);
        }
        // Three records fit: `.`, `..`, `a`; `b` was looked up but did not fit.
        let mut buf = Buffer {
            room: 3,
            got: vec![],
        };
        readdirplus_batch(&v, ROOT_INO, 0, |_| false, |n, o, a| buf.add(n, o, a))
            .await
            .unwrap();
        let names: Vec<_> = buf.got.iter().map(|(n, o, _)| (n.as_str(), *o)).collect();
        assert_eq!(names, [(".", 1), ("..", 2), ("a", 3)]);
        // The next call continues at `b`; `c` is hidden; everything else fits.
        let mut rest = Buffer {
            room: 10,
            got: vec![],
        };
        readdirplus_batch(&v, ROOT_INO, 3, |n| n == "c", |n, o, a| rest.add(n, o, a))
            .await
            .unwrap();
        let names: Vec<_> = rest.got.iter().map(|(n, o, _)| (n.as_str(), *o)).collect();
        assert_eq!(names, [("b", 4), ("d", 6)]);
        for n in ["a", "b", "c", "d"] {
            v.unlink(ROOT_INO, OsStr::new(n)).await.unwrap();
        }
        // Sent entries (a, b, d) are held by the kernel; c was never counted, and b's first,
        // unsent lookup was taken back.
        assert!(v.getattr(inos[2]).await.is_err(), "c was counted");
        for i in [0, 1, 3] {
            assert_eq!(v.getattr(inos[i]).await.unwrap().nlink, 0);
            v.forget(inos[i], 1);
            assert!(
                v.getattr(inos[i]).await.is_err(),
                "entry {i}: more lookups counted than sent"
            );
        }
    }
}
