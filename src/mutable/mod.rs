//! Mutable files (SDMF and MDMF), byte-compatible with Tahoe-LAFS 1.20 (digest §4).
//!
//! Layers, all free of I/O except through the [`storage::MutableServer`] trait:
//! - [`keys`]: RSA key pairs (exact PKCS#8 bytes), derived symmetric keys, a key pool;
//! - [`layout`]: SDMF/MDMF share serialization and parsing of untrusted share bytes;
//! - [`storage`]: the storage trait in the shape of Tahoe's `read-test-write` and mutable read
//!   endpoints, and an in-memory server implementing the server semantics of §4.5 exactly;
//! - [`encode`]: pure encryption/erasure-coding/hashing of contents into shares and back;
//! - [`retrieve`] / [`publish`]: drivers that find the newest recoverable version and write new
//!   versions with test-and-write semantics.

pub mod encode;
pub mod keys;
pub mod layout;
pub mod publish;
pub mod retrieve;
pub mod storage;

use thiserror::Error;

/// Why one share was rejected (the file may still be readable from the others).
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ShareError {
    #[error(transparent)]
    Layout(#[from] layout::LayoutError),
    #[error(transparent)]
    Storage(#[from] storage::StorageError),
    #[error("mutable share: share number is not below N")]
    ShareNumberOutOfRange,
    #[error("mutable share: verification key does not match the cap's fingerprint")]
    WrongFingerprint,
    #[error("mutable share: signature over the signed prefix does not verify")]
    BadSignature,
    #[error("mutable share: share hash chain does not lead to the signed root: {0}")]
    BadShareHashChain(crate::crypto::hashtree::HashTreeError),
    #[error("mutable share: block hash tree is inconsistent: {0}")]
    BadBlockHashTree(crate::crypto::hashtree::HashTreeError),
    #[error("mutable share: block of segment {segment} does not match its hash")]
    BadBlockHash { segment: u64 },
    #[error("mutable share: the encrypted private key does not match the writekey")]
    BadPrivateKey,
}

/// A rejected share: which server (index into the server list), which share, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShareProblem {
    pub server: usize,
    pub shnum: storage::ShareNum,
    pub error: ShareError,
}

/// Errors of mutable-file operations.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum MutableError {
    #[error(transparent)]
    Key(#[from] keys::KeyError),
    #[error(transparent)]
    Layout(#[from] layout::LayoutError),
    #[error(transparent)]
    Codec(#[from] crate::codec::CodecError),
    /// No share of a recoverable version was found. `problems` counts shares that were read
    /// and rejected (bad signature, bad hashes...); `unreachable` counts servers that failed to
    /// answer (refused connection, timeout, server error), so "every server is down" and "the
    /// file does not exist" (both 0) read differently.
    #[error(
        "mutable: no valid version found ({problems} shares rejected, {unreachable} servers did \
         not answer)"
    )]
    NoVersions { problems: usize, unreachable: usize },
    #[error("mutable: not enough good shares: need {needed}, have {found}")]
    NotEnoughShares { needed: usize, found: usize },
    #[error(
        "mutable: uncoordinated write: {} share writes were refused because another writer \
         changed them ({written} written)", refused.len()
    )]
    UncoordinatedWrite {
        /// `(server index, share number)` of every refused write.
        refused: Vec<(usize, storage::ShareNum)>,
        written: usize,
    },
    #[error("mutable: no share yielded the private key")]
    NoPrivateKey,
    #[error("mutable: invalid encoding parameters")]
    InvalidParameters,
    #[error("mutable: no servers")]
    NoServers,
    #[error("mutable: byte range is outside the file")]
    BadRange,
    #[error("mutable: internal inconsistency ({0})")]
    Internal(&'static str),
}

#[cfg(test)]
mod tests;
