//! [`DiskBackend`]: the on-disk [`DiskStore`] behind the HTTPS storage protocol's
//! [`StorageBackend`] trait.
//!
//! Responsibilities of this adapter (the store leaves them to the HTTP layer):
//! - error mapping: every [`StoreError`] becomes the status Tahoe answers with (see
//!   [`map_store_error`]); I/O and container errors become 500 with a fixed text, so neither
//!   paths nor secrets reach a client;
//! - read bounds: one backend read returns at most [`MAX_READ_CHUNK`] bytes (the server streams
//!   larger ranges chunk by chunk), and a read-test-write's pre-write reads may total at most
//!   [`MAX_RTW_READ_BYTES`] (the request schema already caps the number of read vectors);
//! - secret shapes: the write enabler must be 32 bytes (Tahoe's containers hold exactly 32);
//!   lease secrets are checked to be 32 bytes by the server before they get here;
//! - the upload secret: the protocol server binds each in-progress upload to its upload secret
//!   (`StorageServer`'s upload table) before calling `write`/`abort`, and the trait does not
//!   carry the secret, so the store's own binding is given one fixed internal value.
//!
//! Corruption advisories are written to `storage/corruption-advisories/` by the store and
//! logged at `warn` with the storage index and share number (not secrets), never the reason
//! text (client-controlled).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::protocol::messages::{
    AllocateResponse, ReadTestWriteRequest, ReadTestWriteResponse, RequiredRange, ShareNum,
    VersionInfo,
};
use crate::protocol::server::{BackendError, ShareKind, ShareRead, StorageBackend, WriteOutcome};
use crate::protocol::{LeaseSecrets, StorageIndex};
use crate::storage::container::ShareKind as ContainerKind;
use crate::storage::disk::{
    si_b2a, DiskStore, ReadVector, StoreError, TestVector, TestWriteVectors, WriteVector,
};
use crate::storage::{ShareNum as StoreShareNum, MAX_MUTABLE_SHARE_SIZE};

/// Largest slice returned by one share read (the HTTP server asks for at most this much at a
/// time, in one call per request for any range up to it).
pub const MAX_READ_CHUNK: u64 = 1024 * 1024;

/// Largest total of the pre-write reads of one read-test-write (the response is built in
/// memory; Tahoe clients read a few hundred bytes per share).
pub const MAX_RTW_READ_BYTES: u64 = 16 * 1024 * 1024;

/// The store's upload secret: the protocol server has already matched the client's secret.
const INTERNAL_UPLOAD_SECRET: &[u8] = b"lafs-server-bound-upload";

/// The version string announced in `GET /version`.
pub const APPLICATION_VERSION: &str = concat!("lafs/", env!("CARGO_PKG_VERSION"));

/// Maps a store error to the backend error (and so the HTTP status) Tahoe would answer with.
pub fn map_store_error(e: StoreError) -> BackendError {
    match e {
        StoreError::NotFound => BackendError::NotFound,
        StoreError::BadWriteEnabler | StoreError::BadUploadSecret => BackendError::BadWriteEnabler,
        StoreError::ConflictingWrite(_) => BackendError::Conflict,
        StoreError::OutOfBounds { .. } => BackendError::OutOfBounds,
        StoreError::AlreadyComplete => BackendError::NotAllowed,
        StoreError::NoSpace => BackendError::Internal("not enough space".into()),
        StoreError::WrongShareType(_) => BackendError::Internal("share of the other kind".into()),
        StoreError::Container(_) => BackendError::Internal("unreadable share container".into()),
        StoreError::Io(_) => BackendError::Internal("I/O error".into()),
    }
}

fn log_internal(op: &'static str, e: &StoreError) {
    // Store errors carry no secrets (see `StoreError`), only offsets, share numbers and OS
    // error texts; they are logged here and replaced by a fixed text for the client.
    match e {
        StoreError::Container(_) | StoreError::Io(_) | StoreError::WrongShareType(_) => {
            tracing::error!(op, error = %e, "storage operation failed");
        }
        _ => {}
    }
}

fn mapped(op: &'static str) -> impl Fn(StoreError) -> BackendError {
    move |e| {
        log_internal(op, &e);
        map_store_error(e)
    }
}

/// The adapter. Cheap to share: the store does its own locking.
#[derive(Clone)]
pub struct DiskBackend {
    store: Arc<DiskStore>,
}

impl std::fmt::Debug for DiskBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiskBackend")
            .field("storage_dir", &self.store.config().storage_dir)
            .finish()
    }
}

impl DiskBackend {
    pub fn new(store: Arc<DiskStore>) -> Self {
        DiskBackend { store }
    }

    /// The store (for the periodic upload expiry and garbage collection).
    pub fn store(&self) -> &Arc<DiskStore> {
        &self.store
    }
}

/// Share numbers the protocol can name (0..=255); a larger numeric file name in a bucket is
/// not a Tahoe share and is left out.
fn protocol_set(set: BTreeSet<StoreShareNum>) -> BTreeSet<ShareNum> {
    set.into_iter()
        .filter_map(|n| ShareNum::try_from(n).ok())
        .collect()
}

fn store_set(set: &BTreeSet<ShareNum>) -> BTreeSet<StoreShareNum> {
    set.iter().map(|&n| StoreShareNum::from(n)).collect()
}

fn write_enabler(we: &[u8]) -> Result<[u8; 32], BackendError> {
    we.try_into().map_err(|_| BackendError::BadWriteEnabler)
}

fn container_kind(kind: ShareKind) -> ContainerKind {
    match kind {
        ShareKind::Immutable => ContainerKind::Immutable,
        ShareKind::Mutable => ContainerKind::Mutable,
    }
}

impl StorageBackend for DiskBackend {
    fn version(&self) -> Result<VersionInfo, BackendError> {
        let avail = self.store.available_space().map_err(mapped("version"))?;
        Ok(VersionInfo {
            // Tahoe announces its remaining space as the largest immutable share.
            maximum_immutable_share_size: avail,
            maximum_mutable_share_size: MAX_MUTABLE_SHARE_SIZE,
            available_space: avail,
            application_version: APPLICATION_VERSION.as_bytes().to_vec(),
        })
    }

    fn allocate_buckets(
        &self,
        si: &StorageIndex,
        lease: &LeaseSecrets,
        share_numbers: &BTreeSet<ShareNum>,
        allocated_size: u64,
    ) -> Result<AllocateResponse, BackendError> {
        let a = self
            .store
            .allocate_buckets(
                si,
                &lease.renew,
                &lease.cancel,
                &store_set(share_numbers),
                allocated_size,
                INTERNAL_UPLOAD_SECRET,
            )
            .map_err(mapped("allocate"))?;
        Ok(AllocateResponse {
            already_have: protocol_set(a.already_have),
            allocated: protocol_set(a.allocated),
        })
    }

    fn write(
        &self,
        si: &StorageIndex,
        shnum: ShareNum,
        offset: u64,
        data: &[u8],
    ) -> Result<WriteOutcome, BackendError> {
        let out = self
            .store
            .write_immutable(si, shnum.into(), INTERNAL_UPLOAD_SECRET, offset, data)
            .map_err(mapped("write"))?;
        if out.complete {
            tracing::debug!(si = %si_b2a(si), shnum, "immutable share complete");
        }
        Ok(WriteOutcome {
            required: out
                .required
                .into_iter()
                .map(|r| RequiredRange {
                    begin: r.start,
                    end: r.end,
                })
                .collect(),
            complete: out.complete,
        })
    }

    fn abort(&self, si: &StorageIndex, shnum: ShareNum) -> Result<(), BackendError> {
        match self
            .store
            .abort_immutable(si, shnum.into(), INTERNAL_UPLOAD_SECRET)
        {
            Ok(()) => Ok(()),
            // The server turns NotFound into 405 itself when the share is complete.
            Err(StoreError::AlreadyComplete) => Err(BackendError::NotFound),
            Err(e) => Err(mapped("abort")(e)),
        }
    }

    fn list_immutable(&self, si: &StorageIndex) -> Result<BTreeSet<ShareNum>, BackendError> {
        // Tahoe lists every numeric file of the bucket for both kinds.
        self.store
            .list_shares(si)
            .map(protocol_set)
            .map_err(mapped("list"))
    }

    fn read_immutable(
        &self,
        si: &StorageIndex,
        shnum: ShareNum,
        offset: u64,
        length: u64,
    ) -> Result<ShareRead, BackendError> {
        let (share_length, data) = self
            .store
            .read_immutable_with_len(si, shnum.into(), offset, length.min(MAX_READ_CHUNK))
            .map_err(mapped("read immutable"))?;
        Ok(ShareRead { share_length, data })
    }

    fn advise_corrupt(
        &self,
        kind: ShareKind,
        si: &StorageIndex,
        shnum: ShareNum,
        reason: &str,
    ) -> Result<(), BackendError> {
        self.store
            .advise_corrupt(container_kind(kind), si, shnum.into(), reason)
            .map_err(mapped("advise corrupt"))?;
        tracing::warn!(
            kind = ?kind,
            si = %si_b2a(si),
            shnum,
            "corruption advisory received (recorded in corruption-advisories/)"
        );
        Ok(())
    }

    fn read_test_write(
        &self,
        si: &StorageIndex,
        write_enabler_bytes: &[u8],
        lease: &LeaseSecrets,
        request: &ReadTestWriteRequest,
    ) -> Result<ReadTestWriteResponse, BackendError> {
        let we = write_enabler(write_enabler_bytes)?;
        let m = mapped("read-test-write");
        // Bound the pre-write reads by what the shares actually hold.
        let mut read_total: u64 = 0;
        if !request.read_vector.is_empty() {
            for shnum in self.store.list_shares(si).map_err(&m)? {
                let len = match self.store.mutable_share_len(si, shnum) {
                    Ok(l) => l,
                    // The store itself reports the wrong kind / a vanished share below.
                    Err(_) => continue,
                };
                for r in &request.read_vector {
                    read_total =
                        read_total.saturating_add(r.size.min(len.saturating_sub(r.offset)));
                }
            }
        }
        if read_total > MAX_RTW_READ_BYTES {
            return Err(BackendError::OutOfBounds);
        }
        let tw: BTreeMap<StoreShareNum, TestWriteVectors> = request
            .test_write_vectors
            .iter()
            .map(|(n, v)| {
                let vectors = TestWriteVectors {
                    test: v
                        .test
                        .iter()
                        .map(|t| TestVector {
                            offset: t.offset,
                            size: t.size,
                            specimen: t.specimen.clone(),
                        })
                        .collect(),
                    write: v
                        .write
                        .iter()
                        .map(|w| WriteVector {
                            offset: w.offset,
                            data: w.data.clone(),
                        })
                        .collect(),
                    new_length: v.new_length,
                };
                (StoreShareNum::from(*n), vectors)
            })
            .collect();
        let reads: Vec<ReadVector> = request
            .read_vector
            .iter()
            .map(|r| ReadVector {
                offset: r.offset,
                size: r.size,
            })
            .collect();
        let res = self
            .store
            .read_test_write(si, &we, &lease.renew, &lease.cancel, &tw, &reads)
            .map_err(&m)?;
        Ok(ReadTestWriteResponse {
            success: res.success,
            data: res
                .data
                .into_iter()
                .filter_map(|(n, d)| ShareNum::try_from(n).ok().map(|n| (n, d)))
                .collect(),
        })
    }

    fn read_mutable(
        &self,
        si: &StorageIndex,
        shnum: ShareNum,
        offset: u64,
        length: u64,
    ) -> Result<ShareRead, BackendError> {
        let (share_length, data) = self
            .store
            .read_mutable_with_len(si, shnum.into(), offset, length.min(MAX_READ_CHUNK))
            .map_err(mapped("read mutable"))?;
        Ok(ShareRead { share_length, data })
    }

    fn list_mutable(&self, si: &StorageIndex) -> Result<BTreeSet<ShareNum>, BackendError> {
        self.store
            .list_shares(si)
            .map(protocol_set)
            .map_err(mapped("list"))
    }

    fn add_lease(&self, si: &StorageIndex, lease: &LeaseSecrets) -> Result<(), BackendError> {
        self.store
            .add_lease(si, &lease.renew, &lease.cancel)
            .map_err(mapped("add lease"))
    }
}
