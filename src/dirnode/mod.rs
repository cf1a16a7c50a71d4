//! Tahoe-LAFS 1.20 directories (digest §5): the body format, entry metadata, and directory
//! operations over a backing mutable file.
//!
//! - [`pyjson`]: JSON text byte-identical to Python's `json.dumps` (metadata is stored that way);
//! - [`metadata`]: the insertion-ordered metadata map, typed accessors, Tahoe's `update_metadata`;
//! - [`pack`]: packing/unpacking the child list, write-cap encryption, NFC names;
//! - [`ops`]: list/lookup/set/remove/rename and batches over a [`ops::DirectoryStore`]
//!   (test-and-write), merging non-overlapping concurrent changes and reporting overlapping ones;
//! - [`memstore`]: an in-memory [`ops::DirectoryStore`].
//!
//! Invariants: no I/O (the store trait is the only way out); hostile bodies give a typed error,
//! never a panic; child caps are opaque bytes, never printed (`Debug` shows only presence), and a
//! read-only view never holds a child's write cap.

pub mod memstore;
pub mod metadata;
pub mod ops;
pub mod pack;
pub mod pyjson;

#[cfg(test)]
mod tests;

pub use memstore::MemoryStore;
pub use metadata::{update_metadata, Metadata};
pub use ops::{BatchReport, Change, ChangeConflict, DirectoryStore, Dirnode, StoreError};
pub use pack::{normalize, pack_children, Child, DirKind, Directory};

use crate::util::netstring::NetstringError;
use thiserror::Error;

/// Errors of the directory layer. Names appear in messages; caps never do.
#[derive(Debug, Error, PartialEq)]
pub enum DirnodeError {
    #[error("directory body: bad netstring framing: {0}")]
    Framing(NetstringError),
    #[error("directory body: a child name is not UTF-8")]
    NameNotUtf8,
    #[error("directory body: child metadata is not JSON")]
    MetadataNotJson,
    #[error("directory body: child metadata is not a JSON object")]
    MetadataNotObject,
    #[error("the rwcapdata field of an entry in an immutable directory is not empty")]
    RwcapInImmutable,
    #[error("child {0:?} has a write cap, which an immutable directory cannot hold")]
    MustBeDeepImmutable(String),
    #[error("the directory is read-only")]
    NotWriteable,
    #[error("no child named {0:?}")]
    NoSuchChild(String),
    #[error("a child named {0:?} already exists")]
    ExistingChild(String),
    #[error("another writer changed the same children: {0:?}")]
    Conflict(Vec<String>),
    #[error("the directory kept changing; gave up after {0} attempts")]
    TooManyRetries(usize),
    #[error("backing file: {0}")]
    Store(String),
}
