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

pub mod keys;
pub mod layout;
pub mod storage;
