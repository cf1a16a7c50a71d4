//! File-system helpers: the [`ByteStore`] impl for files, fsync of directories, free space.

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::storage::container::ByteStore;

impl ByteStore for File {
    fn len(&self) -> io::Result<u64> {
        Ok(self.metadata()?.len())
    }

    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        FileExt::read_exact_at(self, buf, offset)
    }

    fn write_all_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        FileExt::write_all_at(self, data, offset)
    }

    fn set_len(&mut self, len: u64) -> io::Result<()> {
        File::set_len(self, len)
    }
}

/// fsyncs a directory so a rename or unlink inside it is durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Removes `dir` if it is empty; any error (not empty, gone) is ignored, as Tahoe does.
pub fn rmdir_if_empty(dir: &Path) {
    let _ = fs::remove_dir(dir);
}

/// Disk statistics for the file system holding `dir` (Tahoe's `get_disk_stats`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskStats {
    pub total: u64,
    pub free_for_root: u64,
    pub free_for_nonroot: u64,
    pub used: u64,
    /// `free_for_nonroot − reserved`, floored at 0.
    pub avail: u64,
}

/// statvfs(2) on `dir`.
pub fn disk_stats(dir: &Path, reserved: u64) -> io::Result<DiskStats> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))?;
    // SAFETY: `c` is a valid NUL-terminated path and `st` a properly sized out-parameter that
    // statvfs fully initialises when it returns 0.
    let st = unsafe {
        let mut st: libc::statvfs = std::mem::zeroed();
        if libc::statvfs(c.as_ptr(), &mut st) != 0 {
            return Err(io::Error::last_os_error());
        }
        st
    };
    #[allow(clippy::unnecessary_cast)] // the field types differ between platforms
    let (frsize, blocks, bfree, bavail) = (
        st.f_frsize as u64,
        st.f_blocks as u64,
        st.f_bfree as u64,
        st.f_bavail as u64,
    );
    let total = frsize.saturating_mul(blocks);
    let free_for_root = frsize.saturating_mul(bfree);
    let free_for_nonroot = frsize.saturating_mul(bavail);
    Ok(DiskStats {
        total,
        free_for_root,
        free_for_nonroot,
        used: total.saturating_sub(free_for_root),
        avail: free_for_nonroot.saturating_sub(reserved),
    })
}
