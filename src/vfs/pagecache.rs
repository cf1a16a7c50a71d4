//! Keeping large cache files, read or written once in order, out of the page cache.
//!
//! A large file written through the mount passes through its cache file exactly twice: the
//! content hash reads it back right behind the writer, and the upload reads it once more. Left
//! to the kernel, every byte would also stay in memory as a page of the cache file until memory
//! runs short, beside the writer's own copy: copying a 10 GiB file into the mount would push
//! 10 GiB of other data out of the page cache. Worse, on a virtual machine whose host reclaims
//! the guest's free pages (free page reporting, ballooning), every write into a new page is a
//! fault to the host: writing into pages that were freed a moment ago is several times faster
//! than writing into pages never used (measured here: 0.3–0.6 GB/s against 4 GB/s).
//!
//! So both passes work in windows of [`WINDOW`] bytes and hand the pages of what they consumed
//! back to the kernel, which gives them to the next writes at once:
//! - [`WriteBehind`] (the content hash, as it catches up with the writer): starts the
//!   write-back of each window it has hashed and, one window later, waits for that write-back
//!   and drops the window's pages. The data is on disk, where the upload finds it.
//! - [`ReadOnce`] (the upload's source): asks the kernel to read [`AHEAD`] bytes ahead of the
//!   reader, and drops the pages of what it has read.
//!
//! Files under [`MIN_BYTES`] are left alone: they are cheap to cache and likely read again soon.
//! Every call here is advice: an error is ignored (the data is in the file either way), and on
//! systems without the calls (macOS) they do nothing.

use std::fs::File;

/// The unit of write-back, drop and read-ahead.
pub const WINDOW: u64 = 4 << 20;
/// How far ahead of a [`ReadOnce`] reader the kernel is asked to read.
pub const AHEAD: u64 = 16 << 20;
/// Files (or the part written so far) smaller than this keep their pages.
pub const MIN_BYTES: u64 = 16 << 20;

#[cfg(target_os = "linux")]
mod sys {
    use std::fs::File;
    use std::os::fd::AsRawFd;

    fn range(off: u64, len: u64) -> Option<(i64, i64)> {
        Some((i64::try_from(off).ok()?, i64::try_from(len).ok()?))
    }

    pub fn start_writeback(f: &File, off: u64, len: u64) {
        if let Some((o, l)) = range(off, len) {
            // SAFETY: a plain syscall on a descriptor `f` owns; no memory is passed.
            let r =
                unsafe { libc::sync_file_range(f.as_raw_fd(), o, l, libc::SYNC_FILE_RANGE_WRITE) };
            if r != 0 {
                tracing::trace!("sync_file_range: {}", std::io::Error::last_os_error());
            }
        }
    }

    pub fn write_back_and_drop(f: &File, off: u64, len: u64) {
        if let Some((o, l)) = range(off, len) {
            let flags = libc::SYNC_FILE_RANGE_WAIT_BEFORE
                | libc::SYNC_FILE_RANGE_WRITE
                | libc::SYNC_FILE_RANGE_WAIT_AFTER;
            // SAFETY: as above.
            let r = unsafe { libc::sync_file_range(f.as_raw_fd(), o, l, flags) };
            if r != 0 {
                tracing::trace!("sync_file_range: {}", std::io::Error::last_os_error());
                return;
            }
            advise(f, off, len, libc::POSIX_FADV_DONTNEED);
        }
    }

    fn advise(f: &File, off: u64, len: u64, advice: libc::c_int) {
        if let Some((o, l)) = range(off, len) {
            // SAFETY: as above.
            let r = unsafe { libc::posix_fadvise(f.as_raw_fd(), o, l, advice) };
            if r != 0 {
                tracing::trace!("posix_fadvise: error {r}");
            }
        }
    }

    pub fn drop_clean(f: &File, off: u64, len: u64) {
        advise(f, off, len, libc::POSIX_FADV_DONTNEED);
    }

    pub fn will_need(f: &File, off: u64, len: u64) {
        advise(f, off, len, libc::POSIX_FADV_WILLNEED);
    }
}

#[cfg(not(target_os = "linux"))]
mod sys {
    use std::fs::File;
    pub fn start_writeback(_: &File, _: u64, _: u64) {}
    pub fn write_back_and_drop(_: &File, _: u64, _: u64) {}
    pub fn drop_clean(_: &File, _: u64, _: u64) {}
    pub fn will_need(_: &File, _: u64, _: u64) {}
}

/// Write-behind for a file written and consumed in order from its start.
///
/// Invariant: the write-back of `0 .. started` has been started, and the pages of
/// `0 .. started - WINDOW` (of `0` while `started < WINDOW`) were dropped once written back;
/// `started` is a multiple of [`WINDOW`].
#[derive(Debug, Default)]
pub struct WriteBehind {
    started: u64,
}

impl WriteBehind {
    /// The next call of [`WriteBehind::consumed`] with `upto` would do something.
    pub fn due(&self, upto: u64) -> bool {
        upto >= MIN_BYTES && upto / WINDOW * WINDOW > self.started
    }

    /// Bytes `0 .. upto` of `file` are written and consumed: starts the write-back of the
    /// whole windows among them, and waits for the write-back of those one window older and
    /// drops their pages. Waits for the disk: never on a thread that must not block.
    pub fn consumed(&mut self, file: &File, upto: u64) {
        if !self.due(upto) {
            return;
        }
        let end = upto / WINDOW * WINDOW;
        sys::start_writeback(file, self.started, end - self.started);
        let dropped = self.started.saturating_sub(WINDOW);
        let drop_to = end - WINDOW;
        if drop_to > dropped {
            sys::write_back_and_drop(file, dropped, drop_to - dropped);
        }
        self.started = end;
    }
}

/// Read-ahead and drop-behind for a file of `size` bytes read once, in order.
///
/// Invariant: the kernel was asked to read `0 .. asked` (asked for in steps of at least
/// [`WINDOW`], or up to `size`), and the pages of `0 .. dropped` were dropped (`dropped` is a
/// multiple of [`WINDOW`], or `size`).
#[derive(Debug)]
pub struct ReadOnce {
    size: u64,
    asked: u64,
    dropped: u64,
}

impl ReadOnce {
    /// `None` for a file small enough to leave alone.
    pub fn new(size: u64) -> Option<Self> {
        (size >= MIN_BYTES).then_some(ReadOnce {
            size,
            asked: 0,
            dropped: 0,
        })
    }

    /// Before a read of `off .. off + len`: keeps at least [`AHEAD`] bytes past it asked for.
    pub fn before(&mut self, file: &File, off: u64, len: u64) {
        let want = (off + len).saturating_add(AHEAD).min(self.size);
        if want > self.asked && want - self.asked >= WINDOW.min(self.size - self.asked) {
            let from = self.asked.max(off);
            sys::will_need(file, from, want - from);
            self.asked = want;
        }
    }

    /// After a read that ended at `end`: drops the whole windows before it.
    pub fn after(&mut self, file: &File, end: u64) {
        let to = if end >= self.size {
            self.size
        } else {
            end / WINDOW * WINDOW
        };
        if to > self.dropped {
            sys::drop_clean(file, self.dropped, to - self.dropped);
            self.dropped = to;
        }
    }
}

#[cfg(all(test, target_os = "linux"))]
pub(crate) mod tests {
    use super::*;
    use std::io::Write;
    use std::os::fd::AsRawFd;

    /// How many of the pages of `file`'s bytes `off .. off + len` are in the page cache.
    pub(crate) fn resident_pages(file: &File, off: u64, len: u64) -> usize {
        let page = 4096u64;
        let pages = len.div_ceil(page) as usize;
        // SAFETY: a read-only shared mapping of a range inside the file; only `mincore` looks
        // at it (no access to its bytes), and it is unmapped before returning.
        unsafe {
            let p = libc::mmap(
                std::ptr::null_mut(),
                len as usize,
                libc::PROT_READ,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                off as libc::off_t,
            );
            assert_ne!(
                p,
                libc::MAP_FAILED,
                "mmap: {}",
                std::io::Error::last_os_error()
            );
            let mut v = vec![0u8; pages];
            let r = libc::mincore(p, len as usize, v.as_mut_ptr());
            libc::munmap(p, len as usize);
            assert_eq!(r, 0, "mincore: {}", std::io::Error::last_os_error());
            v.iter().filter(|b| *b & 1 == 1).count()
        }
    }

    /// A file on a disk file system (where dropped pages really go; tmpfs keeps them), or
    /// `None` when no such directory is at hand.
    pub(crate) fn disk_temp_file() -> Option<tempfile::NamedTempFile> {
        let dir = std::env::var_os("CARGO_TARGET_TMPDIR")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(std::env::temp_dir);
        let f = tempfile::NamedTempFile::new_in(&dir).ok()?;
        // SAFETY: statfs fills the struct it is given; the path is a valid C string.
        let tmpfs = unsafe {
            let mut s: libc::statfs = std::mem::zeroed();
            let c = std::ffi::CString::new(f.path().as_os_str().as_encoded_bytes()).ok()?;
            libc::statfs(c.as_ptr(), &mut s) == 0 && s.f_type == libc::TMPFS_MAGIC
        };
        (!tmpfs).then_some(f)
    }

    #[test]
    fn write_behind_drops_what_was_consumed_one_window_late_and_keeps_small_files() {
        let Some(mut tmp) = disk_temp_file() else {
            eprintln!("SKIP: the temporary directory is on tmpfs, where pages cannot be dropped");
            return;
        };
        let chunk = vec![0x5au8; 1 << 20];
        let mut wb = WriteBehind::default();
        let total = 40u64 << 20;
        for i in 1..=(total >> 20) {
            tmp.write_all(&chunk).unwrap();
            let file = tmp.as_file();
            let upto = i << 20;
            if upto < MIN_BYTES {
                assert!(!wb.due(upto));
            }
            wb.consumed(file, upto);
        }
        let file = tmp.as_file();
        // The write-back of all 40 MiB was started; the pages below 36 MiB were dropped.
        assert_eq!(wb.started, 40 << 20);
        let dropped = resident_pages(file, 0, 36 << 20);
        let kept = resident_pages(file, 36 << 20, 4 << 20);
        assert!(
            dropped < 256,
            "{dropped} of 9216 pages still cached below the drop mark"
        );
        assert!(
            kept > 512,
            "only {kept} of 1024 pages cached in the last window"
        );
        // The data is all there.
        let mut back = vec![0u8; total as usize];
        std::os::unix::fs::FileExt::read_exact_at(file, &mut back, 0).unwrap();
        assert!(back.iter().all(|b| *b == 0x5a));

        // A small file: nothing is due, and its pages stay.
        let Some(mut small) = disk_temp_file() else {
            return;
        };
        small.write_all(&chunk[..(1 << 20)]).unwrap();
        let mut wb = WriteBehind::default();
        assert!(!wb.due(1 << 20));
        wb.consumed(small.as_file(), 1 << 20);
        assert_eq!(resident_pages(small.as_file(), 0, 1 << 20), 256);
    }

    #[test]
    fn read_once_drops_behind_the_reader_and_gives_the_bytes_unchanged() {
        let Some(mut tmp) = disk_temp_file() else {
            eprintln!("SKIP: the temporary directory is on tmpfs, where pages cannot be dropped");
            return;
        };
        let size = (24u64 << 20) + 12345;
        let data: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        tmp.write_all(&data).unwrap();
        tmp.as_file().sync_all().unwrap();
        assert!(ReadOnce::new(MIN_BYTES - 1).is_none());
        let mut ro = ReadOnce::new(size).unwrap();
        let file = tmp.as_file();
        let mut off = 0u64;
        let mut buf = vec![0u8; 128 << 10];
        while off < size {
            let len = (buf.len() as u64).min(size - off);
            ro.before(file, off, len);
            std::os::unix::fs::FileExt::read_exact_at(file, &mut buf[..len as usize], off).unwrap();
            assert_eq!(
                &buf[..len as usize],
                &data[off as usize..(off + len) as usize]
            );
            off += len;
            ro.after(file, off);
            if off == 20 << 20 {
                // Mid-way: what was read is gone, what is ahead was asked for.
                assert!(resident_pages(file, 0, 16 << 20) < 256);
                assert_eq!(ro.asked, size);
            }
        }
        assert_eq!(ro.dropped, size);
        assert!(resident_pages(file, 0, size) < 256);
    }
}
