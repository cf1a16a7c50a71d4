//! Lease records (`storage/lease.py`, `lease_schema.py`).
//!
//! Immutable record (72 bytes): `u32 owner ‖ 32B renew ‖ 32B cancel ‖ u32 expiration`.
//! Mutable record (92 bytes): `u32 owner ‖ u32 expiration ‖ 32B renew ‖ 32B cancel ‖ 20B nodeid`.
//! All integers big-endian. Owner 0 marks an empty mutable slot.
//!
//! Version 2 containers store `BLAKE2b-256(secret)` instead of the secret; a [`LeaseRecord`]
//! always holds the *stored* form, and matching hashes the candidate first
//! ([`SecretStorage::stored_form`]). Comparisons are constant-time.

use blake2::digest::consts::U32;
use blake2::{Blake2b, Digest};

use crate::storage::{ct_eq, NodeId};

/// Size of a lease record in an immutable container.
pub const IMMUTABLE_LEASE_LEN: usize = 72;
/// Size of a lease record in a mutable container.
pub const MUTABLE_LEASE_LEN: usize = 92;

/// How a container version stores lease secrets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretStorage {
    /// Version 1 containers: the secret itself.
    Cleartext,
    /// Version 2 containers: `blake2b(secret, digest_size=32)`, unkeyed.
    Blake2b,
}

impl SecretStorage {
    /// The bytes stored in a lease record for a client-presented secret.
    pub fn stored_form(self, secret: &[u8; 32]) -> [u8; 32] {
        match self {
            SecretStorage::Cleartext => *secret,
            SecretStorage::Blake2b => Blake2b::<U32>::digest(secret).into(),
        }
    }
}

/// One lease, with its secrets in stored form.
#[derive(Clone, PartialEq, Eq)]
pub struct LeaseRecord {
    /// 0 = empty slot (mutable); allocation leases are 0 for immutable shares.
    pub owner_num: u32,
    /// Unix seconds.
    pub expiration: u32,
    pub renew_stored: [u8; 32],
    pub cancel_stored: [u8; 32],
    /// The server that accepted the lease (mutable records only; zero for immutable).
    pub nodeid: NodeId,
}

impl std::fmt::Debug for LeaseRecord {
    // Secrets (even hashed ones) stay out of Debug output.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaseRecord")
            .field("owner_num", &self.owner_num)
            .field("expiration", &self.expiration)
            .finish_non_exhaustive()
    }
}

/// Clamps a unix time into the 32-bit expiration field (Tahoe packs `int(t)` as `>L`).
pub fn expiration_field(unix_secs: u64) -> u32 {
    u32::try_from(unix_secs).unwrap_or(u32::MAX)
}

impl LeaseRecord {
    /// A lease from client-presented secrets, hashed as `storage` requires.
    pub fn new(
        storage: SecretStorage,
        owner_num: u32,
        renew_secret: &[u8; 32],
        cancel_secret: &[u8; 32],
        expiration: u32,
        nodeid: NodeId,
    ) -> Self {
        LeaseRecord {
            owner_num,
            expiration,
            renew_stored: storage.stored_form(renew_secret),
            cancel_stored: storage.stored_form(cancel_secret),
            nodeid,
        }
    }

    /// The record Tahoe writes into a cancelled mutable slot: owner 0, zero secrets passed
    /// through the container's serializer (so v2 stores the BLAKE2b of 32 zero bytes).
    pub fn blank(storage: SecretStorage) -> Self {
        LeaseRecord::new(storage, 0, &[0; 32], &[0; 32], 0, [0; 20])
    }

    /// Whether `secret` (as presented by a client) is this lease's renew secret.
    pub fn renew_matches(&self, storage: SecretStorage, secret: &[u8; 32]) -> bool {
        ct_eq(&storage.stored_form(secret), &self.renew_stored)
    }

    /// Whether `secret` (as presented by a client) is this lease's cancel secret.
    pub fn cancel_matches(&self, storage: SecretStorage, secret: &[u8; 32]) -> bool {
        ct_eq(&storage.stored_form(secret), &self.cancel_stored)
    }

    pub fn to_immutable_bytes(&self) -> [u8; IMMUTABLE_LEASE_LEN] {
        let mut out = [0u8; IMMUTABLE_LEASE_LEN];
        out[0..4].copy_from_slice(&self.owner_num.to_be_bytes());
        out[4..36].copy_from_slice(&self.renew_stored);
        out[36..68].copy_from_slice(&self.cancel_stored);
        out[68..72].copy_from_slice(&self.expiration.to_be_bytes());
        out
    }

    pub fn from_immutable_bytes(b: &[u8; IMMUTABLE_LEASE_LEN]) -> Self {
        let (owner, rest) = b.split_at(4);
        let (renew, rest) = rest.split_at(32);
        let (cancel, exp) = rest.split_at(32);
        LeaseRecord {
            owner_num: be32(owner),
            expiration: be32(exp),
            renew_stored: arr32(renew),
            cancel_stored: arr32(cancel),
            nodeid: [0; 20],
        }
    }

    pub fn to_mutable_bytes(&self) -> [u8; MUTABLE_LEASE_LEN] {
        let mut out = [0u8; MUTABLE_LEASE_LEN];
        out[0..4].copy_from_slice(&self.owner_num.to_be_bytes());
        out[4..8].copy_from_slice(&self.expiration.to_be_bytes());
        out[8..40].copy_from_slice(&self.renew_stored);
        out[40..72].copy_from_slice(&self.cancel_stored);
        out[72..92].copy_from_slice(&self.nodeid);
        out
    }

    pub fn from_mutable_bytes(b: &[u8; MUTABLE_LEASE_LEN]) -> Self {
        let (owner, rest) = b.split_at(4);
        let (exp, rest) = rest.split_at(4);
        let (renew, rest) = rest.split_at(32);
        let (cancel, nodeid) = rest.split_at(32);
        let mut id = [0u8; 20];
        id.copy_from_slice(nodeid);
        LeaseRecord {
            owner_num: be32(owner),
            expiration: be32(exp),
            renew_stored: arr32(renew),
            cancel_stored: arr32(cancel),
            nodeid: id,
        }
    }
}

// Both helpers receive slices whose length is fixed by the split_at calls above.
fn be32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(b);
    u32::from_be_bytes(a)
}

fn arr32(b: &[u8]) -> [u8; 32] {
    let mut a = [0u8; 32];
    a.copy_from_slice(b);
    a
}
