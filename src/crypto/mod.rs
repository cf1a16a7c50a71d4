//! Cryptographic building blocks, exactly as Tahoe-LAFS 1.20 uses them.
//!
//! - [`hash`]: SHA-256d and every tagged hash Tahoe derives keys, indexes and integrity hashes
//!   with (one named function per use, so a tag string appears in one place only);
//! - [`aes`]: AES-128-CTR with Tahoe's all-zero initial counter block;
//! - [`hashtree`]: Tahoe's Merkle trees (padding leaves, flattened layout, hash chains).
//!
//! Nothing here does I/O.

pub mod aes;
pub mod hash;
pub mod hashtree;
pub mod multihash;
