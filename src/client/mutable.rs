//! Mutable files (SDMF, MDMF) over the network.
//!
//! [`NetMutableServer`] implements the mutable layer's async storage trait
//! ([`MutableServer`]) over one [`ServerHandle`]'s HTTPS [`StorageClient`](crate::protocol::client::StorageClient):
//! list, ranged read and `read-test-write`, with the write enabler and lease secrets the mutable
//! layer derives per server (write enabler from the writekey and the server's TubID; lease
//! renew/cancel secrets `bucket_*(file_*(my_*(lease_secret), si), tubid)`, see
//! [`publish::write_secrets`]).
//!
//! [`MutableClient`] runs the mutable drivers over a [`ServerSet`]: every operation orders the
//! grid's servers with Tahoe's permutation for the file's storage index, so share `i` of a new
//! version goes to the `i`-th permuted server (one share per server while there are enough), and
//! existing shares are rewritten where they are. Reads map every server concurrently and decode
//! each segment from the first k shares that answer; a server that fails is skipped (and a share
//! it should have held is placed elsewhere on publish).
//!
//! Test-and-write: every write is tested against the checkstring seen when the file was mapped,
//! so a concurrent writer surfaces as [`MutableError::UncoordinatedWrite`], never as a lost
//! update. [`MutableClient::modify`] is read-modify-write against one map.
//!
//! Shares that fail verification (bad signature, hash chain, block hash...) are reported to
//! their server with a corruption advisory, best-effort, once per operation.

use super::{ServerHandle, ServerSet};
use crate::cap::{MutableFormat, MutableReadCap, MutableWriteCap};
use crate::mutable::keys::{KeyPool, ReaderKeys, WriterKeys};
use crate::mutable::publish::{self, PublishOutcome, PublishParams};
use crate::mutable::retrieve::{self, Retrieved};
use crate::mutable::storage::{
    BoxFut, MutableServer, ReadTestWriteResult, ReadVector, ShareNum, StorageError, StorageIndex,
    TestWriteVectors, WriteSecrets,
};
use crate::mutable::{MutableError, ShareError, ShareProblem};
use crate::protocol::client::ClientError;
use crate::protocol::messages as msg;
use crate::protocol::LeaseSecrets;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// The storage trait of the mutable layer over one network server.
#[derive(Clone, Debug)]
pub struct NetMutableServer {
    pub handle: Arc<ServerHandle>,
}

/// Maps a transport/protocol error to the mutable layer's storage error (no secret in it:
/// `ClientError` never carries one).
fn storage_error(e: ClientError) -> StorageError {
    match e {
        ClientError::NotFound { .. } => StorageError::NoSuchShare,
        ClientError::Status { status: 401, .. } => StorageError::BadWriteEnabler,
        other => StorageError::Unavailable(other.to_string()),
    }
}

impl MutableServer for NetMutableServer {
    fn node_id(&self) -> [u8; 20] {
        *self.handle.nodeid()
    }

    fn list_shares<'a>(
        &'a self,
        si: &'a StorageIndex,
    ) -> BoxFut<'a, Result<BTreeSet<ShareNum>, StorageError>> {
        Box::pin(async move {
            match self.handle.client.list_mutable_shares(si).await {
                Ok(s) => Ok(s.into_iter().map(ShareNum::from).collect()),
                // Some servers answer 404 for an unknown storage index.
                Err(ClientError::NotFound { .. }) => Ok(BTreeSet::new()),
                Err(e) => Err(storage_error(e)),
            }
        })
    }

    fn read<'a>(
        &'a self,
        si: &'a StorageIndex,
        shnum: ShareNum,
        offset: u64,
        len: u64,
    ) -> BoxFut<'a, Result<Vec<u8>, StorageError>> {
        Box::pin(async move {
            // The protocol numbers shares 0..=255 (N <= 256).
            let shnum = u8::try_from(shnum).map_err(|_| StorageError::NoSuchShare)?;
            self.handle
                .client
                .read_mutable_share(si, shnum, offset, len)
                .await
                .map(|b| b.to_vec())
                .map_err(storage_error)
        })
    }

    fn read_test_write<'a>(
        &'a self,
        si: &'a StorageIndex,
        secrets: &'a WriteSecrets,
        tw_vectors: &'a BTreeMap<ShareNum, TestWriteVectors>,
        read_vector: &'a [ReadVector],
    ) -> BoxFut<'a, Result<ReadTestWriteResult, StorageError>> {
        Box::pin(async move {
            let mut test_write_vectors = BTreeMap::new();
            for (&sh, v) in tw_vectors {
                let sh = u8::try_from(sh)
                    .map_err(|_| StorageError::BadRequest("share number above 255"))?;
                test_write_vectors.insert(sh, v);
            }
            let request = msg::ReadTestWriteRequest {
                test_write_vectors: test_write_vectors
                    .into_iter()
                    .map(|(sh, v)| {
                        let tv = msg::TestWriteVectors {
                            test: v
                                .test
                                .iter()
                                .map(|t| msg::TestVector {
                                    offset: t.offset,
                                    size: t.size,
                                    specimen: t.specimen.clone(),
                                })
                                .collect(),
                            write: v
                                .write
                                .iter()
                                .map(|(offset, data)| msg::WriteVector {
                                    offset: *offset,
                                    data: data.clone(),
                                })
                                .collect(),
                            new_length: v.new_length,
                        };
                        (sh, tv)
                    })
                    .collect(),
                read_vector: read_vector
                    .iter()
                    .map(|&(offset, size)| msg::ReadVector { offset, size })
                    .collect(),
            };
            let lease = LeaseSecrets {
                renew: secrets.renew_secret,
                cancel: secrets.cancel_secret,
            };
            let r = self
                .handle
                .client
                .read_test_write(si, &secrets.write_enabler, &lease, &request)
                .await
                .map_err(storage_error)?;
            Ok(ReadTestWriteResult {
                success: r.success,
                reads: r
                    .data
                    .into_iter()
                    .map(|(sh, d)| (ShareNum::from(sh), d))
                    .collect(),
            })
        })
    }
}

/// Encoding parameters of new mutable files.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MutableParams {
    pub k: u8,
    pub n: u8,
}

impl Default for MutableParams {
    /// Tahoe's defaults: 3-of-10.
    fn default() -> Self {
        MutableParams { k: 3, n: 10 }
    }
}

/// Mutable-file operations over a grid. Cheap to clone (the key pool is shared).
#[derive(Clone)]
pub struct MutableClient {
    servers: ServerSet,
    lease_secret: [u8; 32],
    params: MutableParams,
    keys: Arc<KeyPool>,
    preferred: Vec<String>,
}

impl std::fmt::Debug for MutableClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MutableClient")
            .field("servers", &self.servers.servers.len())
            .field("params", &self.params)
            .finish_non_exhaustive()
    }
}

/// The servers of one operation in permuted order, as the drivers see them.
struct Placement {
    servers: Vec<NetMutableServer>,
}

impl Placement {
    fn refs(&self) -> Vec<&dyn MutableServer> {
        self.servers
            .iter()
            .map(|s| s as &dyn MutableServer)
            .collect()
    }
}

/// Whether a rejected share is worth a corruption advisory (the share itself is bad, as opposed
/// to the server failing to answer).
pub(crate) fn is_corruption(p: &ShareProblem) -> bool {
    !matches!(p.error, ShareError::Storage(_)) && p.shnum != ShareNum::MAX
}

/// How many times a read is retried when the shares it mapped changed before their blocks were
/// fetched (another writer publishing at the same time).
const READ_RETRIES: u32 = 3;

/// Whether a read that found too few good blocks, or only rejected shares, should map again
/// (after a short pause): the shares may have been rewritten while they were read. Bad shares that stay bad fail again
/// and the error is returned after [`READ_RETRIES`].
async fn retry_read<T>(r: &Result<T, MutableError>, attempt: &mut u32) -> bool {
    let changing = matches!(
        r,
        Err(MutableError::NotEnoughShares { .. })
            | Err(MutableError::NoVersions { problems: 1.., .. })
    );
    if !changing || *attempt >= READ_RETRIES {
        return false;
    }
    *attempt += 1;
    tokio::time::sleep(std::time::Duration::from_millis(
        10 * u64::from(*attempt) + rand::random::<u64>() % 20,
    ))
    .await;
    true
}

impl MutableClient {
    /// A client over `servers`. `lease_secret` is the node's `private/secret` lease secret;
    /// `keys` pre-generates RSA keys for new files and directories.
    pub fn new(
        servers: ServerSet,
        lease_secret: [u8; 32],
        params: MutableParams,
        keys: Arc<KeyPool>,
    ) -> Self {
        MutableClient {
            servers,
            lease_secret,
            params,
            keys,
            preferred: Vec::new(),
        }
    }

    /// Server ids to put first in every permutation (Tahoe's `preferred-peers`).
    pub fn with_preferred(mut self, preferred: Vec<String>) -> Self {
        self.preferred = preferred;
        self
    }

    pub fn servers(&self) -> &ServerSet {
        &self.servers
    }

    /// The preferred server ids (`with_preferred`).
    pub fn preferred(&self) -> &[String] {
        &self.preferred
    }

    pub fn params(&self) -> MutableParams {
        self.params
    }

    pub fn key_pool(&self) -> &Arc<KeyPool> {
        &self.keys
    }

    fn publish_params(&self) -> PublishParams {
        PublishParams {
            k: self.params.k,
            n: self.params.n,
            lease_secret: self.lease_secret,
        }
    }

    fn placement(&self, si: &StorageIndex) -> Result<Placement, MutableError> {
        let servers: Vec<NetMutableServer> = self
            .servers
            .permuted(si, &self.preferred)
            .into_iter()
            .map(|handle| NetMutableServer { handle })
            .collect();
        if servers.is_empty() {
            return Err(MutableError::NoServers);
        }
        Ok(Placement { servers })
    }

    /// Sends a corruption advisory for every share rejected as bad (best-effort: a failing
    /// advisory changes nothing for the caller).
    async fn advise(&self, p: &Placement, si: &StorageIndex, problems: &[ShareProblem]) {
        let mut sent = BTreeSet::new();
        let advisories = problems
            .iter()
            .filter(|p| is_corruption(p))
            .filter(|q| sent.insert((q.server, q.shnum)))
            .filter_map(|q| {
                let server = p.servers.get(q.server)?;
                let shnum = u8::try_from(q.shnum).ok()?;
                let reason = format!("lafs: mutable share failed verification: {}", q.error);
                Some(async move {
                    if let Err(e) = server
                        .handle
                        .client
                        .advise_corrupt_mutable(si, shnum, &reason)
                        .await
                    {
                        tracing::debug!(error = %e, "corruption advisory not delivered");
                    }
                })
            });
        futures::future::join_all(advisories).await;
    }

    /// Creates a new mutable file holding `contents` with a key from the pool.
    pub async fn create(
        &self,
        format: MutableFormat,
        contents: &[u8],
    ) -> Result<(MutableWriteCap, PublishOutcome), MutableError> {
        let keys = Arc::clone(&self.keys);
        // `take` generates inline when the pool is empty: keep RSA off the async workers.
        let keypair = tokio::task::spawn_blocking(move || keys.take())
            .await
            .map_err(|_| MutableError::Internal("key generation task failed"))??;
        let si = keypair.file_keys().reader.storage_index;
        let p = self.placement(&si)?;
        publish::create(
            &p.refs(),
            &keypair,
            format,
            contents,
            &self.publish_params(),
        )
        .await
    }

    /// Reads the newest recoverable version (or `[offset, offset+len)` of it).
    pub async fn read(
        &self,
        cap: &MutableReadCap,
        range: Option<(u64, u64)>,
    ) -> Result<Retrieved, MutableError> {
        self.read_with(&ReaderKeys::from_cap(cap), range).await
    }

    /// [`MutableClient::read`] with a write cap.
    pub async fn read_writeable(
        &self,
        cap: &MutableWriteCap,
        range: Option<(u64, u64)>,
    ) -> Result<Retrieved, MutableError> {
        self.read_with(&WriterKeys::from_cap(cap).reader, range)
            .await
    }

    async fn read_with(
        &self,
        reader: &ReaderKeys,
        range: Option<(u64, u64)>,
    ) -> Result<Retrieved, MutableError> {
        let si = reader.storage_index;
        let p = self.placement(&si)?;
        let refs = p.refs();
        let mut attempt = 0;
        loop {
            let mut map = retrieve::map_update(&refs, reader).await;
            let r = retrieve::retrieve_with_map(&refs, reader, &mut map, range).await;
            if retry_read(&r, &mut attempt).await {
                continue;
            }
            self.advise(&p, &si, &map.problems).await;
            return r;
        }
    }

    /// Replaces the contents (a new version with seqnum = highest seen + 1).
    pub async fn overwrite(
        &self,
        cap: &MutableWriteCap,
        contents: &[u8],
    ) -> Result<PublishOutcome, MutableError> {
        let writer = WriterKeys::from_cap(cap);
        let si = writer.reader.storage_index;
        let p = self.placement(&si)?;
        let refs = p.refs();
        let mut map = retrieve::map_update_for_write(&refs, &writer).await;
        let r =
            publish::publish_with_map(&refs, cap, &mut map, contents, &self.publish_params()).await;
        self.advise(&p, &si, &map.problems).await;
        r
    }

    /// Writes `data` at `offset` (MDMF rewrites only the touched segments when it can).
    pub async fn update(
        &self,
        cap: &MutableWriteCap,
        offset: u64,
        data: &[u8],
    ) -> Result<PublishOutcome, MutableError> {
        let writer = WriterKeys::from_cap(cap);
        let si = writer.reader.storage_index;
        let p = self.placement(&si)?;
        let refs = p.refs();
        let mut map = retrieve::map_update_for_write(&refs, &writer).await;
        let r =
            publish::update_with_map(&refs, cap, &mut map, offset, data, &self.publish_params())
                .await;
        self.advise(&p, &si, &map.problems).await;
        r
    }

    /// Read-modify-write: reads the newest version, publishes `f(contents)` tested against
    /// exactly the shares read. Another writer in between gives
    /// [`MutableError::UncoordinatedWrite`]; `f` returning `None` publishes nothing.
    pub async fn modify<F>(
        &self,
        cap: &MutableWriteCap,
        f: F,
    ) -> Result<Option<PublishOutcome>, MutableError>
    where
        F: FnOnce(&[u8]) -> Option<Vec<u8>>,
    {
        let writer = WriterKeys::from_cap(cap);
        let si = writer.reader.storage_index;
        let p = self.placement(&si)?;
        let refs = p.refs();
        let mut map = retrieve::map_update_for_write(&refs, &writer).await;
        let r = async {
            let old = retrieve::retrieve_with_map(&refs, &writer.reader, &mut map, None).await?;
            match f(&old.data) {
                None => Ok(None),
                Some(new) => {
                    publish::publish_with_map(&refs, cap, &mut map, &new, &self.publish_params())
                        .await
                        .map(Some)
                }
            }
        }
        .await;
        self.advise(&p, &si, &map.problems).await;
        r
    }

    /// A map of the file for a later [`MutableClient::publish_against`]: the newest contents
    /// and the map they were read with.
    pub async fn read_for_write(
        &self,
        cap: &MutableWriteCap,
    ) -> Result<(Retrieved, retrieve::ServerMap), MutableError> {
        let writer = WriterKeys::from_cap(cap);
        let si = writer.reader.storage_index;
        let p = self.placement(&si)?;
        let refs = p.refs();
        let mut attempt = 0;
        loop {
            let mut map = retrieve::map_update_for_write(&refs, &writer).await;
            let r = retrieve::retrieve_with_map(&refs, &writer.reader, &mut map, None).await;
            if retry_read(&r, &mut attempt).await {
                continue;
            }
            self.advise(&p, &si, &map.problems).await;
            return Ok((r?, map));
        }
    }

    /// Publishes `contents` tested against a map from [`MutableClient::read_for_write`]. The
    /// server indexes of the map refer to the permuted order, which is stable for a fixed
    /// server set.
    pub async fn publish_against(
        &self,
        cap: &MutableWriteCap,
        map: &mut retrieve::ServerMap,
        contents: &[u8],
    ) -> Result<PublishOutcome, MutableError> {
        let si = WriterKeys::from_cap(cap).reader.storage_index;
        let p = self.placement(&si)?;
        publish::publish_with_map(&p.refs(), cap, map, contents, &self.publish_params()).await
    }
}
