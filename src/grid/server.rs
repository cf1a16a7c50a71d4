//! Storage server identity and the permuted server list (digest §8; Tahoe's
//! `storage_client._parse_announcement` and `StorageFarmBroker.get_servers_for_psi`).
//!
//! - The lease seed (and write-enabler node id) is the 20-byte TubID of `anonymous-storage-FURL`,
//!   read with Tahoe's `^pb://(\w+)@` rule; the FURL is required even for HTTP-only servers.
//! - The permutation seed is `permutation-seed-base32` if announced, else the base32 of a
//!   `v0-` + 52-character server id, else `SHA256(server_id)`. A seed that is present but not
//!   canonical base32 makes Tahoe drop the server; here it is a [`ServerError`].
//! - The permuted list orders servers by `(not preferred, SHA1(storage_index ‖ seed))` with a
//!   stable sort, so equal keys keep the input order, as Python's `sorted` does. "Preferred" means
//!   the server id is listed in `[client]peers.preferred`.

use super::furl::{tubid_from_furl, Furl, Nurl};
use crate::config::Announcement;
use crate::crypto::hash::permute_server_hash;
use sha2::{Digest, Sha256};

/// Why an announcement does not describe a usable server.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServerError {
    #[error("the announcement has no anonymous-storage-FURL")]
    NoFurl,
    #[error("the anonymous-storage-FURL has no parseable TubID")]
    BadTubId,
    #[error("permutation-seed-base32 is not canonical base32")]
    BadSeed,
    #[error("the v0- server id is not canonical base32")]
    BadServerId,
    #[error("an anonymous-storage-NURL does not parse: {0}")]
    BadNurl(#[from] super::furl::UrlError),
}

/// Everything lafs needs to know about one storage server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageServerDesc {
    /// The server id (normally `v0-` + base32 of the Ed25519 node key).
    pub server_id: String,
    pub nickname: String,
    /// The full fURL, if it parses as one (Tahoe itself only needs its TubID).
    pub furl: Option<Furl>,
    /// GBS NURLs; non-empty means the server speaks HTTPS.
    pub nurls: Vec<Nurl>,
    pub permutation_seed: Vec<u8>,
    /// The 20-byte TubID: lease seed and write-enabler node id.
    pub lease_seed: [u8; 20],
}

/// The permutation seed rule of §8.
pub fn permutation_seed(server_id: &str, announced: Option<&str>) -> Result<Vec<u8>, ServerError> {
    if let Some(seed) = announced {
        return crate::util::base32::decode(seed).ok_or(ServerError::BadSeed);
    }
    if let Some(key) = server_id.strip_prefix("v0-") {
        // re.search('^v0-[0-9a-zA-Z]{52}$'): `$` also matches before one final newline, but then
        // a2b fails on the newline, so that case is an error too.
        let body = key.strip_suffix('\n').unwrap_or(key);
        if body.len() == 52 && body.bytes().all(|b| b.is_ascii_alphanumeric()) {
            if body.len() != key.len() {
                return Err(ServerError::BadServerId);
            }
            return crate::util::base32::decode(key).ok_or(ServerError::BadServerId);
        }
    }
    Ok(Sha256::digest(server_id.as_bytes()).to_vec())
}

impl StorageServerDesc {
    /// Builds a description from a server id and its announcement (servers.yaml or introducer).
    pub fn from_announcement(server_id: &str, ann: &Announcement) -> Result<Self, ServerError> {
        let furl_text = ann
            .anonymous_storage_furl
            .as_deref()
            .ok_or(ServerError::NoFurl)?;
        let lease_seed = tubid_from_furl(furl_text).ok_or(ServerError::BadTubId)?;
        let permutation_seed = permutation_seed(server_id, ann.permutation_seed_base32.as_deref())?;
        let nurls = ann
            .anonymous_storage_nurls
            .iter()
            .flatten()
            .map(|n| Nurl::parse(n))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(StorageServerDesc {
            server_id: server_id.to_string(),
            nickname: ann.nickname.clone().unwrap_or_default(),
            furl: Furl::parse(furl_text).ok(),
            nurls,
            permutation_seed,
            lease_seed,
        })
    }

    /// Whether the client talks HTTPS to this server (`_should_we_use_http`).
    pub fn uses_http(&self, force_foolscap: bool) -> bool {
        !force_foolscap && !self.nurls.is_empty()
    }
}

/// Every usable server of a servers.yaml, sorted by id, with the entries Tahoe would skip.
pub fn servers_from_yaml(
    yaml: &crate::config::ServersYaml,
) -> (Vec<StorageServerDesc>, Vec<(String, ServerError)>) {
    let mut ok = Vec::new();
    let mut bad = Vec::new();
    for (id, entry) in &yaml.storage {
        match StorageServerDesc::from_announcement(id, &entry.ann) {
            Ok(d) => ok.push(d),
            Err(e) => bad.push((id.clone(), e)),
        }
    }
    (ok, bad)
}

/// `get_servers_for_psi`: the servers in upload/download order for `storage_index`.
pub fn permuted_servers<'a>(
    servers: &'a [StorageServerDesc],
    storage_index: &[u8],
    preferred: &[String],
) -> Vec<&'a StorageServerDesc> {
    let mut keyed: Vec<(bool, [u8; 20], &StorageServerDesc)> = servers
        .iter()
        .map(|s| {
            let unpreferred = !preferred.contains(&s.server_id);
            (
                unpreferred,
                permute_server_hash(storage_index, &s.permutation_seed),
                s,
            )
        })
        .collect();
    keyed.sort_by_key(|k| (k.0, k.1));
    keyed.into_iter().map(|(_, _, s)| s).collect()
}
