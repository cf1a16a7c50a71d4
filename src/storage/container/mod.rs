//! Tahoe 1.20 share container formats (`storage/immutable.py`, `storage/mutable.py`,
//! `storage/lease.py` and their `_schema` modules), digest §7.
//!
//! Design: a container is accessed through the [`ByteStore`] trait (positioned reads/writes on
//! a byte sequence). The container code decides *which* bytes to read and write; it owns no
//! file handle. `Vec<u8>` implements the trait here, so every rule is testable in memory; the
//! disk store implements it for `std::fs::File`.
//!
//! Invariants:
//! - Untrusted bytes never panic: every length/offset read from a container is checked against
//!   the store length with checked arithmetic, and failures are a typed [`ContainerError`].
//! - Allocation is bounded by the real store length or by the caller's own buffers, never by a
//!   length field read from a container or claimed by a client.

pub mod immutable;
pub mod lease;
pub mod mutable;

#[cfg(test)]
mod tests;

use std::io;

/// Errors from parsing or updating a container.
#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    #[error("unknown immutable container version {0}")]
    UnknownImmutableVersion(u32),
    #[error("not a mutable container (unknown magic)")]
    UnknownMutableMagic,
    #[error("container truncated: need {needed} bytes, have {have}")]
    Truncated { needed: u64, have: u64 },
    #[error("corrupt container: {0}")]
    Corrupt(&'static str),
    #[error("write of {len} bytes at {offset} exceeds the allocated size {max}")]
    OutOfBounds { offset: u64, len: u64, max: u64 },
    #[error("mutable container would exceed the maximum share size")]
    TooLarge,
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
}

/// Positioned access to the bytes of one container.
// `len` is fallible, so the `is_empty` convention does not apply.
#[allow(clippy::len_without_is_empty)]
pub trait ByteStore {
    /// Current length in bytes.
    fn len(&self) -> io::Result<u64>;
    /// Fills `buf` from `offset`; a read past the end is an `UnexpectedEof` error.
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()>;
    /// Writes `data` at `offset`, extending the store (with zeros, or a hole) if needed.
    fn write_all_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()>;
    /// Truncates or extends (with zeros) to exactly `len` bytes.
    fn set_len(&mut self, len: u64) -> io::Result<()>;
}

impl ByteStore for Vec<u8> {
    fn len(&self) -> io::Result<u64> {
        Ok(Vec::len(self) as u64)
    }

    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let start = usize::try_from(offset).map_err(|_| eof())?;
        let end = start.checked_add(buf.len()).ok_or_else(eof)?;
        let src = self.get(start..end).ok_or_else(eof)?;
        buf.copy_from_slice(src);
        Ok(())
    }

    fn write_all_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        let start = usize::try_from(offset).map_err(|_| too_big())?;
        let end = start.checked_add(data.len()).ok_or_else(too_big)?;
        if end > Vec::len(self) {
            self.resize(end, 0);
        }
        if let Some(dst) = self.get_mut(start..end) {
            dst.copy_from_slice(data);
        }
        Ok(())
    }

    fn set_len(&mut self, len: u64) -> io::Result<()> {
        let len = usize::try_from(len).map_err(|_| too_big())?;
        self.resize(len, 0);
        Ok(())
    }
}

fn eof() -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, "read past end of container")
}

fn too_big() -> io::Error {
    io::Error::new(io::ErrorKind::OutOfMemory, "in-memory container too large")
}

/// Reads exactly `len` bytes at `offset`, after checking that they exist (so the allocation is
/// bounded by the store's real length, not by a hostile length field).
pub(crate) fn read_checked<S: ByteStore + ?Sized>(
    store: &S,
    offset: u64,
    len: u64,
) -> Result<Vec<u8>, ContainerError> {
    let have = store.len()?;
    let needed = offset
        .checked_add(len)
        .ok_or(ContainerError::Corrupt("offset overflow"))?;
    if needed > have {
        return Err(ContainerError::Truncated { needed, have });
    }
    let len = usize::try_from(len).map_err(|_| ContainerError::Corrupt("length overflow"))?;
    let mut buf = vec![0u8; len];
    store.read_exact_at(offset, &mut buf)?;
    Ok(buf)
}

/// Reads a fixed-size array at `offset`.
pub(crate) fn read_array<const N: usize, S: ByteStore + ?Sized>(
    store: &S,
    offset: u64,
) -> Result<[u8; N], ContainerError> {
    let have = store.len()?;
    let needed = offset
        .checked_add(N as u64)
        .ok_or(ContainerError::Corrupt("offset overflow"))?;
    if needed > have {
        return Err(ContainerError::Truncated { needed, have });
    }
    let mut buf = [0u8; N];
    store.read_exact_at(offset, &mut buf)?;
    Ok(buf)
}

/// Which kind of container a share file holds, decided from its first bytes exactly as
/// Tahoe's `get_share_file` does: a known mutable magic means mutable, else a known immutable
/// version number means immutable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShareKind {
    Immutable,
    Mutable,
}

/// Classifies a container from its first (up to 32) bytes; `None` if it is neither kind.
pub fn detect_kind(prefix: &[u8]) -> Option<ShareKind> {
    if mutable::MutableVersion::from_magic(prefix).is_some() {
        return Some(ShareKind::Mutable);
    }
    let version = prefix.get(..4)?;
    let version = u32::from_be_bytes(version.try_into().ok()?);
    immutable::ImmutableVersion::from_u32(version).map(|_| ShareKind::Immutable)
}
