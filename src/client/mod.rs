//! High-level operations over a grid: upload, download, publish, retrieve, check, repair.
//!
//! This layer composes the formats (`immutable`, `mutable`, `dirnode`) with the network
//! (`protocol::client::StorageClient`) and placement (`grid`). A [`ServerHandle`] is one
//! connected storage server; operations take the grid's servers as a [`ServerSet`] and order them
//! per storage index with Tahoe's permutation.
//!
//! Invariants: no share byte is used before its hash chain to the cap (or signature) is verified,
//! and a write operation returns success only once happiness is met.

pub mod check;
pub mod directory;
pub mod immutable;
pub mod mutable;
pub mod secrets;
pub mod testgrid;

use crate::grid::server::{permuted_servers, StorageServerDesc};
use crate::protocol::client::StorageClient;
use std::collections::HashMap;
use std::sync::Arc;

/// One storage server: what the grid knows of it and a connection pool to it.
#[derive(Clone, Debug)]
pub struct ServerHandle {
    pub desc: StorageServerDesc,
    pub client: StorageClient,
}

impl ServerHandle {
    /// The 20-byte TubID: lease seed and write-enabler node id.
    pub fn nodeid(&self) -> &[u8; 20] {
        &self.desc.lease_seed
    }
}

/// The servers of a grid, shared by every operation.
#[derive(Clone, Debug, Default)]
pub struct ServerSet {
    pub servers: Vec<Arc<ServerHandle>>,
}

impl ServerSet {
    /// The servers in Tahoe's permuted order for `storage_index` (preferred servers first).
    pub fn permuted(
        &self,
        storage_index: &[u8; 16],
        preferred: &[String],
    ) -> Vec<Arc<ServerHandle>> {
        let descs: Vec<StorageServerDesc> = self.servers.iter().map(|s| s.desc.clone()).collect();
        let by_id: HashMap<&str, &Arc<ServerHandle>> = self
            .servers
            .iter()
            .map(|s| (s.desc.server_id.as_str(), s))
            .collect();
        permuted_servers(&descs, storage_index, preferred)
            .into_iter()
            .filter_map(|d| by_id.get(d.server_id.as_str()).map(|s| Arc::clone(s)))
            .collect()
    }
}
