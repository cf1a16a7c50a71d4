//! Lease secrets of a client node (digest §2.3, Tahoe's `client.SecretHolder` and the
//! `*_secret_hash` chain of `upload.py`).
//!
//! The chain, from the node's 32-byte lease secret (`private/secret`):
//! client renewal/cancel secret → per-file secret (with the storage index) → per-bucket secret
//! (with the server's 20-byte TubID, its "lease seed"). The per-bucket pair is what a server
//! stores in its lease records, so a different server (TubID) gets different secrets and the
//! same node always derives the same ones (it can renew its own leases later).
//!
//! Invariant: none of these values is ever printed; `Debug` is redacted.

use crate::crypto::hash::{self, Hash};
use crate::protocol::{LeaseSecrets, StorageIndex};

/// The client-wide renewal and cancel secrets derived from the node's lease secret.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientSecrets {
    renewal: Hash,
    cancel: Hash,
}

impl std::fmt::Debug for ClientSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientSecrets(..)")
    }
}

impl ClientSecrets {
    /// From the raw lease secret (base32-decoded `private/secret`, normally 32 bytes).
    pub fn from_lease_secret(lease_secret: &[u8]) -> Self {
        ClientSecrets {
            renewal: hash::my_renewal_secret_hash(lease_secret),
            cancel: hash::my_cancel_secret_hash(lease_secret),
        }
    }

    /// A random lease secret: leases this client creates cannot be renewed by a later process.
    /// For tests and throwaway clients.
    pub fn random() -> Self {
        Self::from_lease_secret(&rand::random::<[u8; 32]>())
    }

    /// The per-file secrets for `storage_index`.
    pub fn for_file(&self, storage_index: &StorageIndex) -> FileSecrets {
        FileSecrets {
            renewal: hash::file_renewal_secret_hash(&self.renewal, storage_index),
            cancel: hash::file_cancel_secret_hash(&self.cancel, storage_index),
        }
    }

    /// The lease secrets of `storage_index` on the server whose TubID is `lease_seed`.
    pub fn lease(&self, storage_index: &StorageIndex, lease_seed: &[u8; 20]) -> LeaseSecrets {
        self.for_file(storage_index).for_server(lease_seed)
    }
}

/// The per-file renewal and cancel secrets.
#[derive(Clone, PartialEq, Eq)]
pub struct FileSecrets {
    renewal: Hash,
    cancel: Hash,
}

impl std::fmt::Debug for FileSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FileSecrets(..)")
    }
}

impl FileSecrets {
    /// The upload secret this client uses for every upload of this file. Deterministic (a hash
    /// of the per-file renewal secret, which only this client can derive), so that a later
    /// process can abort the unfinished buckets of an upload that died with its process (kill -9,
    /// power cut): servers refuse to allocate a share another upload is still writing, and only
    /// its upload secret can abort that upload.
    pub fn upload_secret(&self) -> [u8; 20] {
        let h = hash::tagged_hash(b"lafs_upload_secret_v1", &self.renewal);
        let mut out = [0u8; 20];
        out.copy_from_slice(&h[..20]);
        out
    }

    /// The per-bucket secrets for the server whose 20-byte TubID is `lease_seed`.
    pub fn for_server(&self, lease_seed: &[u8; 20]) -> LeaseSecrets {
        LeaseSecrets {
            renew: hash::bucket_renewal_secret_hash(&self.renewal, lease_seed),
            cancel: hash::bucket_cancel_secret_hash(&self.cancel, lease_seed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::base32;

    /// Digest §2.3: the client secrets of an empty lease secret (Tahoe's test_hashutil), and
    /// the full chain of `derive_renewal_secret.py` (lease secret, SI, TubID → bucket renewal).
    #[test]
    fn chain_matches_tahoe_vectors() {
        let c = ClientSecrets::from_lease_secret(b"");
        assert_eq!(
            base32::encode(&c.renewal),
            "ujhr5k5f7ypkp67jkpx6jl4p47pyta7hu5m527cpcgvkafsefm6q"
        );
        assert_eq!(
            base32::encode(&c.cancel),
            "rjwzmafe2duixvqy6h47f5wfrokdziry6zhx4smew4cj6iocsfaa"
        );
        let secret =
            base32::decode("boity2cdh7jvl3ltaeebuiobbspjmbuopnwbde2yeh4k6x7jioga").unwrap();
        let si: [u8; 16] = base32::decode("vrttmwlicrzbt7gh5qsooogr7u")
            .unwrap()
            .try_into()
            .unwrap();
        let tubid: [u8; 20] = base32::decode("v67jiisoty6ooyxlql5fuucitqiok2ic")
            .unwrap()
            .try_into()
            .unwrap();
        let l = ClientSecrets::from_lease_secret(&secret).lease(&si, &tubid);
        assert_eq!(
            base32::encode(&l.renew),
            "osd6wmc5vz4g3ukg64sitmzlfiaaordutrez7oxdp5kkze7zp5zq"
        );
    }

    /// Differs per server and per file, deterministic per node.
    #[test]
    fn per_server_and_file() {
        let c = ClientSecrets::from_lease_secret(&[7; 32]);
        let si = [1u8; 16];
        assert_eq!(c.lease(&si, &[1; 20]), c.lease(&si, &[1; 20]));
        assert_ne!(c.lease(&si, &[1; 20]), c.lease(&si, &[2; 20]));
        assert_ne!(c.lease(&si, &[1; 20]), c.lease(&[2; 16], &[1; 20]));
        assert_eq!(format!("{c:?}"), "ClientSecrets(..)");
    }
}
