//! The lafs storage node: a Tahoe-compatible node directory served over Tahoe 1.20's HTTPS
//! storage protocol.
//!
//! - [`backend`]: the on-disk share store ([`crate::storage::disk::DiskStore`]) behind the
//!   protocol server's `StorageBackend` trait (error mapping, read bounds, secret shapes);
//! - [`nodedir`]: the node directory in Tahoe's layout (`tahoe.cfg`, `private/node.pem`,
//!   `private/storage.furl`, `private/node.privkey`, `my_nodeid`, `permutation-seed`), the
//!   fURL/NURLs and the `servers.yaml` announcement;
//! - `onion` (cargo feature `tor`): the node's onion service, hosted in-process by arti
//!   (`[tor] onion = true`), with Tahoe's key file;
//! - [`service`]: `lafs run`, the long-running node (listeners, periodic upload expiry and
//!   lease garbage collection, clean shutdown on SIGINT/SIGTERM); [`service::start`] runs the
//!   same node inside a caller's runtime (the embedded grid of `lafs up`).
//!
//! Invariant: a node directory is interchangeable with Tahoe's: lafs reuses Tahoe's identity
//! files (write enablers and lease secrets are bound to the TubID, clients to the swissnum and
//! SPKI pin) and writes the share tree exactly as Tahoe does.

pub mod backend;
pub mod nodedir;
#[cfg(feature = "tor")]
pub mod onion;
pub mod service;

#[cfg(test)]
mod tests;
