//! The one error type of the filesystem layer, with its single errno mapping.

use thiserror::Error;

/// Errors of the filesystem layer. Messages never contain caps.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum VfsError {
    #[error("no such file or directory")]
    NotFound,
    #[error("file exists")]
    Exists,
    #[error("not a directory")]
    NotDir,
    #[error("is a directory")]
    IsDir,
    #[error("directory not empty")]
    NotEmpty,
    #[error("read-only file system")]
    ReadOnly,
    #[error("file name too long")]
    NameTooLong,
    #[error("file name is not UTF-8")]
    NotUtf8,
    #[error("invalid argument: {0}")]
    Invalid(&'static str),
    #[error("operation not permitted: {0}")]
    NotPermitted(&'static str),
    #[error("operation not supported: {0}")]
    NotSupported(&'static str),
    #[error("no such attribute")]
    NoAttr,
    #[error("bad file handle")]
    BadHandle,
    #[error("upload failed: {0}")]
    Upload(String),
    #[error("another writer changed the same entry: {0}")]
    Conflict(String),
    #[error("grid: {0}")]
    Grid(String),
    #[error("local cache: {0}")]
    Cache(String),
}

impl VfsError {
    /// The errno a FUSE reply carries for this error: the ONE mapping.
    pub fn to_errno(&self) -> i32 {
        match self {
            VfsError::NotFound => libc::ENOENT,
            VfsError::Exists => libc::EEXIST,
            VfsError::NotDir => libc::ENOTDIR,
            VfsError::IsDir => libc::EISDIR,
            VfsError::NotEmpty => libc::ENOTEMPTY,
            VfsError::ReadOnly => libc::EROFS,
            VfsError::NameTooLong => libc::ENAMETOOLONG,
            VfsError::NotUtf8 => libc::EILSEQ,
            VfsError::Invalid(_) => libc::EINVAL,
            VfsError::NotPermitted(_) => libc::EPERM,
            VfsError::NotSupported(_) => libc::EOPNOTSUPP,
            VfsError::NoAttr => libc::ENODATA,
            VfsError::BadHandle => libc::EBADF,
            VfsError::Upload(_) | VfsError::Conflict(_) | VfsError::Grid(_) => libc::EIO,
            VfsError::Cache(_) => libc::EIO,
        }
    }
}
