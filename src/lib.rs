//! lafs: a Rust implementation of the Tahoe-LAFS least-authority file store.
//!
//! The crate is layered; each layer knows only the ones below it:
//!
//! - formats, which do no I/O and work on bytes and traits: [`util`] (base32, netstrings),
//!   [`crypto`] (tagged SHA-256d hashes, AES-CTR, Merkle trees, multi-buffer hashing), [`codec`]
//!   (the zfec-identical erasure code), [`cap`] (capabilities), [`immutable`] (CHK files),
//!   [`mutable`] (SDMF and MDMF files) and [`dirnode`] (directories);
//! - the network, which owns every socket: [`protocol`] (Tahoe's HTTPS storage protocol, client
//!   and server), [`storage`] (the server's on-disk share store), [`grid`] and [`config`] (node
//!   directories, server lists, permutation, placement);
//! - operations: [`client`] (upload, download, mutable files, directories over a grid),
//!   [`server`] (the storage node runtime) and [`vfs`] (the filesystem layer of the mount);
//! - the command line lives in the binary (`src/main.rs`, `src/cli`), the only place that uses
//!   `anyhow`.
//!
//! Invariant across every layer: a capability is a secret, so it never reaches a log line or an
//! error message. Types that hold one implement `Debug` without printing the secret parts.

pub mod cap;
pub mod client;
pub mod codec;
pub mod config;
pub mod crypto;
pub mod dirnode;
pub mod fuse;
pub mod grid;
pub mod immutable;
pub mod mutable;
pub mod protocol;
pub mod server;
pub mod storage;
pub mod util;
pub mod vfs;
