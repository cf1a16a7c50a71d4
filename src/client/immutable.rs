//! CHK upload and download over the network (Tahoe's `immutable/upload.py` and
//! `immutable/downloader`), on top of the sans-I/O [`crate::immutable`] layer.
//!
//! ## Upload ([`upload`])
//! 1. Files of at most 55 bytes become LIT caps; no server is contacted.
//! 2. The key is chosen (a convergent key costs one pass over the plaintext, on a blocking
//!    thread); it gives the storage index, the geometry and the exact allocated share size
//!    (the UEB length is known in advance: only its hashes are unknown, and they have a fixed
//!    length — as Tahoe's `Encoder.get_uri_extension_size`).
//! 3. Server selection, as `Tahoe2ServerSelector`: the first `2N` permuted servers are asked for
//!    their version (free space) and their existing shares; then, until servers-of-happiness is
//!    met or nothing changes, `grid::share_placement` places the shares over the writable
//!    servers (counting existing shares and our allocations as held) and each server is asked
//!    to allocate the shares it was given and does not hold. A server that errors is dropped; one
//!    that refuses a share becomes read-only. Unhappy → [`UploadError::HappinessNotMet`].
//! 4. The encoder runs on a blocking thread (it uses rayon) and writes into a sink that cuts each
//!    share into PATCHes of at most `chunk_size` bytes and hands them over bounded channels to
//!    one writer task per (server, share), which sends them in order. Memory is bounded by about
//!    one block plus `queue_depth` chunks per written share (and the encoder's segment batches),
//!    whatever the file size. Existing shares are not written: a second upload of the same file
//!    writes nothing (it still encodes, into nothing, to compute the cap: a UEB fetched from a
//!    server could not be trusted).
//! 5. A server failing mid-upload is dropped with all its shares; its lost shares are placed
//!    again (step 3 over the surviving servers) and written by another encoding pass, which only
//!    forwards those shares (encoding is deterministic for a fixed key). This repeats while
//!    servers remain; the result is a success only if every share we kept was completed (HTTP
//!    201) and the happiness of the completed and pre-existing shares is at least `happy`.
//!
//! ## Download ([`download`], [`download_range`])
//! The permuted servers are asked for their shares in parallel; the answers are ranked by
//! arrival (fastest first) and the search stops once `k + margin` distinct shares are known (the
//! other queries stay pending and are consulted if shares run out). `k` shares are opened at
//! once, preferring distinct servers, then fast ones (servers that answered within a few
//! milliseconds of the first count as equally fast), then low share numbers (k primary shares
//! need no decoding): header, share hash chain and UEB in two reads, checked with
//! [`decode::check_ueb`] and [`decode::check_share_hashes`]. Segments are fetched in batches of
//! about [`DownloadOptions::batch_bytes`] of plaintext, `window` batches at a time: one block read
//! per share covers a whole batch (a share holds the blocks of consecutive segments back to back),
//! so the number of requests does not grow with the segment count. A batch is verified on a
//! blocking thread — all its block hashes, then all its crypttext segment hashes, each set computed
//! two messages at a time ([`multihash`]) and checked against the trees as [`decode::check_block`]
//! and [`decode::check_crypttext_segment`] do — decoded, decrypted and written in order. A share
//! whose read fails is dropped (and its server avoided); a share that fails a hash check is dropped
//! and its server gets a corruption advisory; the batch is then fetched again with a replacement
//! share. Hash tree nodes are fetched per share for a run of 64 segments at a time (one read per
//! tree level), so memory is bounded by the window whatever the file size, and a byte range fetches
//! only its segments.
//!
//! Invariants: no plaintext byte is written before its block hashes, the share's chain to the
//! UEB, the UEB hash in the cap and the crypttext segment hash have all been checked; the key
//! and caps never appear in errors or `Debug` output; every network wait is bounded by the
//! storage client's timeouts.

use super::secrets::ClientSecrets;
use super::{ServerHandle, ServerSet};
use crate::cap::{ChkCap, NodeCap};
use crate::codec::{Codec, Decoder};
use crate::crypto::aes::AesCtr;
use crate::crypto::hash::{self, tags, Hash};
use crate::crypto::{hashtree, multihash};
use crate::grid::happiness::{servers_of_happiness, share_placement};
use crate::immutable::decode::{self, ShareFault};
use crate::immutable::layout::{self, ShareLayout};
use crate::immutable::params::{Geometry, LIT_THRESHOLD};
use crate::immutable::ueb::{Ueb, MAX_UEB_SIZE};
use crate::immutable::{
    resolve_key, Encoder, EncodingParams, ImmutableError, KeySource, PlaintextSource, ShareSink,
};
use crate::protocol::client::{ClientError, StorageClient};
use crate::protocol::{LeaseSecrets, StorageIndex};
use bytes::Bytes;
use std::collections::{BTreeMap, BTreeSet, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use thiserror::Error;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

// ------------------------------------------------------------------------------------------
// Upload
// ------------------------------------------------------------------------------------------

/// How to upload.
#[derive(Clone, Debug)]
pub struct UploadOptions {
    pub params: EncodingParams,
    pub key: KeySource,
    /// `[client]peers.preferred` server ids (they come first in the permuted list).
    pub preferred: Vec<String>,
    /// Bytes per PATCH (Tahoe batches up to 1 MB).
    pub chunk_size: usize,
    /// Chunks queued per written share before the encoder waits.
    pub queue_depth: usize,
}

impl UploadOptions {
    /// Convergent encoding with `params` and the node's convergence secret (raw bytes).
    pub fn convergent(params: EncodingParams, convergence: &[u8]) -> Self {
        UploadOptions {
            params,
            key: KeySource::Convergent(convergence.to_vec()),
            preferred: Vec::new(),
            chunk_size: 1 << 20,
            queue_depth: 2,
        }
    }

    /// A random key with `params`.
    pub fn random(params: EncodingParams) -> Self {
        UploadOptions {
            key: KeySource::Random,
            ..Self::convergent(params, b"")
        }
    }
}

/// What an upload did.
#[derive(Clone)]
pub struct UploadResult {
    pub cap: NodeCap,
    /// `None` for LIT.
    pub storage_index: Option<StorageIndex>,
    /// Shares written by this upload.
    pub pushed_shares: usize,
    /// Shares found already on the servers (counted for happiness, not written).
    pub preexisting_shares: usize,
    /// Share number → server ids holding it at the end (written or pre-existing).
    pub sharemap: BTreeMap<u16, BTreeSet<String>>,
    /// The servers-of-happiness value reached (0 for LIT).
    pub happiness: usize,
}

impl std::fmt::Debug for UploadResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UploadResult")
            .field("pushed_shares", &self.pushed_shares)
            .field("preexisting_shares", &self.preexisting_shares)
            .field("sharemap", &self.sharemap)
            .field("happiness", &self.happiness)
            .finish_non_exhaustive()
    }
}

/// Why an upload failed. No variant carries key material.
#[derive(Debug, Error)]
pub enum UploadError {
    #[error(transparent)]
    Immutable(#[from] ImmutableError),
    #[error("no storage servers")]
    NoServers,
    #[error(
        "servers of happiness not met: shares could be placed on {achieved} server(s) such that \
         any {needed} of them have enough shares to recover the file, but {happy} were required \
         ({servers} server(s) answered){}",
        .last_error.as_ref().map(|e| format!("; last error: {e}")).unwrap_or_default()
    )]
    HappinessNotMet {
        happy: usize,
        achieved: usize,
        needed: usize,
        /// Servers that answered at all.
        servers: usize,
        last_error: Option<String>,
    },
    #[error("the encoder task failed: {0}")]
    Task(String),
}

/// One candidate server of an upload.
struct Tracker {
    handle: Arc<ServerHandle>,
    lease: LeaseSecrets,
    max_size: u64,
    writable: bool,
    alive: bool,
    /// Complete shares the server reported (before or during this upload).
    existing: BTreeSet<u16>,
    /// Buckets we allocated and have not completed.
    allocated: BTreeSet<u16>,
    /// Buckets we completed.
    done: BTreeSet<u16>,
}

impl Tracker {
    fn held(&self) -> BTreeSet<u16> {
        self.existing
            .iter()
            .chain(&self.allocated)
            .chain(&self.done)
            .copied()
            .collect()
    }
}

/// Per-upload constants shared by the tasks.
#[derive(Clone)]
struct Ctx {
    si: StorageIndex,
    upload_secret: Arc<[u8; 20]>,
    allocated_size: u64,
    total: u16,
    happy: usize,
    needed: usize,
}

struct Selector {
    ctx: Ctx,
    trackers: Vec<Tracker>,
    last_error: Option<String>,
}

impl Selector {
    /// Asks every candidate for its version and its existing shares, in parallel.
    async fn survey(&mut self) {
        let mut set = JoinSet::new();
        for (i, t) in self.trackers.iter().enumerate() {
            let client = t.handle.client.clone();
            let si = self.ctx.si;
            set.spawn(async move {
                let v = client.version().await;
                let l = match &v {
                    Ok(_) => client.list_immutable_shares(&si).await,
                    Err(_) => Ok(BTreeSet::new()),
                };
                (i, v, l)
            });
        }
        while let Some(r) = set.join_next().await {
            let Ok((i, v, l)) = r else { continue };
            let t = &mut self.trackers[i];
            match (v, l) {
                (Ok(v), Ok(l)) => {
                    t.max_size = v.maximum_immutable_share_size;
                    t.writable = t.max_size >= self.ctx.allocated_size;
                    t.existing = l.into_iter().map(u16::from).collect();
                }
                (Err(e), _) | (_, Err(e)) => {
                    t.alive = false;
                    self.last_error = Some(e.to_string());
                }
            }
        }
    }

    /// share → alive trackers holding it (existing, allocated or done).
    fn merged(&self, include_allocated: bool) -> BTreeMap<u16, BTreeSet<usize>> {
        let mut m: BTreeMap<u16, BTreeSet<usize>> = BTreeMap::new();
        for (i, t) in self.trackers.iter().enumerate().filter(|(_, t)| t.alive) {
            let held = if include_allocated {
                t.held()
            } else {
                t.existing.union(&t.done).copied().collect()
            };
            for s in held {
                m.entry(s).or_default().insert(i);
            }
        }
        m
    }

    fn happiness(&self, include_allocated: bool) -> usize {
        servers_of_happiness(&self.merged(include_allocated))
    }

    /// Places every share not held by a live server and asks servers to allocate, until
    /// happiness is met (counting allocations) or nothing changes. Returns the happiness.
    async fn place(&mut self) -> usize {
        let mut last = None;
        loop {
            let writable: Vec<usize> = (0..self.trackers.len())
                .filter(|&i| self.trackers[i].alive && self.trackers[i].writable)
                .collect();
            let readonly: Vec<usize> = (0..self.trackers.len())
                .filter(|&i| self.trackers[i].alive && !self.trackers[i].writable)
                .collect();
            let held: BTreeMap<usize, BTreeSet<u16>> = self
                .trackers
                .iter()
                .enumerate()
                .filter(|(_, t)| t.alive)
                .map(|(i, t)| (i, t.held()))
                .filter(|(_, h)| !h.is_empty())
                .collect();
            let placement = share_placement(&writable, &readonly, self.ctx.total, &held);
            let mut asks: BTreeMap<usize, BTreeSet<u16>> = BTreeMap::new();
            for (s, t) in placement {
                let writable = self.trackers.get(t).is_some_and(|tr| tr.writable);
                if writable && !held.get(&t).is_some_and(|h| h.contains(&s)) && s < self.ctx.total {
                    asks.entry(t).or_default().insert(s);
                }
            }
            let happiness = self.happiness(true);
            if asks.is_empty() || last == Some(happiness) && happiness >= self.ctx.happy {
                return happiness;
            }
            let mut set = JoinSet::new();
            for (t, shares) in asks {
                let tr = &self.trackers[t];
                let client = tr.handle.client.clone();
                let lease = tr.lease.clone();
                let ctx = self.ctx.clone();
                set.spawn(async move {
                    let nums: BTreeSet<u8> = shares
                        .iter()
                        .filter_map(|&s| u8::try_from(s).ok())
                        .collect();
                    let mut r = client
                        .allocate_buckets(
                            &ctx.si,
                            &lease,
                            &ctx.upload_secret[..],
                            &nums,
                            ctx.allocated_size,
                        )
                        .await;
                    // A share neither held nor granted is being written by another upload.
                    // When that upload is an earlier one of ours that died (same deterministic
                    // upload secret), aborting it frees the share. The abort fails instead when
                    // the dead upload's last write was still being made durable and has
                    // completed since: the share is then in place. Either way, ask once more
                    // for every such share: the answer is then "allocated" or "already have"
                    // unless someone else really is writing it.
                    if let Ok(resp) = &r {
                        let stuck: BTreeSet<u8> = nums
                            .iter()
                            .copied()
                            .filter(|s| {
                                !resp.already_have.contains(s) && !resp.allocated.contains(s)
                            })
                            .collect();
                        for &sh in &stuck {
                            let abort = client.abort_upload(&ctx.si, sh, &ctx.upload_secret[..]);
                            let _ = tokio::time::timeout(Duration::from_secs(5), abort).await;
                        }
                        if !stuck.is_empty() {
                            let again = client
                                .allocate_buckets(
                                    &ctx.si,
                                    &lease,
                                    &ctx.upload_secret[..],
                                    &stuck,
                                    ctx.allocated_size,
                                )
                                .await;
                            if let (Ok(first), Ok(again)) = (&mut r, again) {
                                first.already_have.extend(again.already_have);
                                first.allocated.extend(again.allocated);
                            }
                        }
                    }
                    (t, shares, r)
                });
            }
            let mut changed = false;
            while let Some(r) = set.join_next().await {
                let Ok((t, asked, r)) = r else { continue };
                let tr = &mut self.trackers[t];
                match r {
                    Ok(resp) => {
                        let have: BTreeSet<u16> =
                            resp.already_have.iter().map(|&s| u16::from(s)).collect();
                        let got: BTreeSet<u16> =
                            resp.allocated.iter().map(|&s| u16::from(s)).collect();
                        tr.existing
                            .extend(have.iter().copied().filter(|&s| s < self.ctx.total));
                        // Only shares we asked for can be ours to write.
                        let got: BTreeSet<u16> = got.intersection(&asked).copied().collect();
                        changed |= !got.is_empty();
                        tr.allocated.extend(got.iter().copied());
                        if asked.iter().any(|s| !got.contains(s) && !have.contains(s)) {
                            // Full, or the share is being uploaded by someone else.
                            tr.writable = false;
                            changed = true;
                        }
                    }
                    Err(e) => {
                        tr.alive = false;
                        tr.allocated.clear();
                        self.last_error = Some(e.to_string());
                        changed = true;
                    }
                }
            }
            let happiness = self.happiness(true);
            if !changed || last == Some(happiness) && happiness >= self.ctx.happy {
                return happiness;
            }
            last = Some(happiness);
        }
    }

    fn unhappy(&self, achieved: usize) -> UploadError {
        UploadError::HappinessNotMet {
            happy: self.ctx.happy,
            achieved,
            needed: self.ctx.needed,
            servers: self.trackers.iter().filter(|t| t.alive).count(),
            last_error: self.last_error.clone(),
        }
    }

    /// Aborts every allocated, unfinished bucket (best effort, bounded).
    async fn abort_all(&mut self) {
        let mut set = JoinSet::new();
        for t in &mut self.trackers {
            for s in std::mem::take(&mut t.allocated) {
                let client = t.handle.client.clone();
                let ctx = self.ctx.clone();
                set.spawn(async move {
                    if let Ok(sh) = u8::try_from(s) {
                        let abort = client.abort_upload(&ctx.si, sh, &ctx.upload_secret[..]);
                        let _ = tokio::time::timeout(Duration::from_secs(5), abort).await;
                    }
                });
            }
        }
        while set.join_next().await.is_some() {}
    }
}

/// One chunk of one share on its way to a server: contiguous bytes from `offset`, in parts
/// (blocks stay in the encoder's buffers; they are not copied into one).
#[derive(Clone)]
struct Chunk {
    offset: u64,
    parts: Vec<Bytes>,
}

/// The bytes of one share gathered for its next chunk.
#[derive(Clone, Default)]
struct Pending {
    start: u64,
    len: usize,
    parts: Vec<Bytes>,
}

/// The encoder's sink: cuts shares into chunks of `chunk_size` bytes (the last of a run may be
/// shorter) for the writer tasks. Shares without a live writer are discarded. Runs on the
/// encoder's (blocking or rayon) thread.
struct NetSink {
    senders: Vec<Vec<mpsc::Sender<Chunk>>>,
    bufs: Vec<Pending>,
    chunk_size: usize,
}

impl NetSink {
    fn flush(&mut self, shnum: usize) {
        let Some(p) = self.bufs.get_mut(shnum) else {
            return;
        };
        if p.len == 0 {
            return;
        }
        let chunk = Chunk {
            offset: p.start,
            parts: std::mem::take(&mut p.parts),
        };
        p.len = 0;
        if let Some(txs) = self.senders.get_mut(shnum) {
            // A closed channel means the writer failed: stop feeding it.
            txs.retain(|tx| tx.blocking_send(chunk.clone()).is_ok());
        }
    }
}

impl ShareSink for NetSink {
    fn write(
        &mut self,
        shnum: usize,
        offset: u64,
        data: &[u8],
    ) -> Result<(), crate::immutable::BoxError> {
        if self.senders.get(shnum).is_none_or(Vec::is_empty) {
            return Ok(());
        }
        self.write_shared(shnum, offset, Bytes::copy_from_slice(data))
    }

    fn write_shared(
        &mut self,
        shnum: usize,
        mut offset: u64,
        mut data: Bytes,
    ) -> Result<(), crate::immutable::BoxError> {
        if self.senders.get(shnum).is_none_or(Vec::is_empty) {
            return Ok(());
        }
        let step = self.chunk_size.max(1);
        while !data.is_empty() {
            let Some(p) = self.bufs.get_mut(shnum) else {
                return Ok(());
            };
            if p.len > 0 && p.start + p.len as u64 != offset {
                self.flush(shnum);
                continue;
            }
            if p.len == 0 {
                p.start = offset;
            }
            let take = (step - p.len).min(data.len());
            p.parts.push(data.split_to(take));
            p.len += take;
            offset += take as u64;
            if p.len >= step {
                self.flush(shnum);
            }
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<(), crate::immutable::BoxError> {
        for sh in 0..self.bufs.len() {
            self.flush(sh);
        }
        // Closing the channels tells the writers that their share is complete.
        self.senders.clear();
        Ok(())
    }
}

/// Writes one share to one server, chunk by chunk, in order. Ok when the server reported the
/// share complete (201).
async fn bucket_writer(
    client: StorageClient,
    ctx: Ctx,
    shnum: u8,
    mut rx: mpsc::Receiver<Chunk>,
    server_failed: Arc<std::sync::atomic::AtomicBool>,
) -> Result<(), String> {
    use std::sync::atomic::Ordering;
    let mut finished = false;
    while let Some(chunk) = rx.recv().await {
        if server_failed.load(Ordering::SeqCst) {
            return Err("another write to this server failed".into());
        }
        match client
            .write_share_parts(
                &ctx.si,
                shnum,
                &ctx.upload_secret[..],
                chunk.offset,
                chunk.parts,
            )
            .await
        {
            Ok(p) => finished = p.finished,
            Err(e) => {
                server_failed.store(true, Ordering::SeqCst);
                return Err(e.to_string());
            }
        }
    }
    if finished {
        Ok(())
    } else {
        Err("the server did not report the share complete after the last write".into())
    }
}

/// One encoding pass: writes the shares of `targets` ((tracker, share) pairs) and returns the
/// source (for another pass), the cap and each target's outcome.
#[allow(clippy::type_complexity)]
async fn write_pass<P: PlaintextSource + Send + 'static>(
    mut source: P,
    encoder: Encoder,
    ctx: &Ctx,
    targets: Vec<(usize, u16, StorageClient)>,
    opts: (usize, usize),
) -> Result<(P, NodeCap, Vec<(usize, u16, Result<(), String>)>), UploadError> {
    let (chunk_size, depth) = opts;
    let n = usize::from(ctx.total);
    let mut senders: Vec<Vec<mpsc::Sender<Chunk>>> = (0..n).map(|_| Vec::new()).collect();
    let mut writers = JoinSet::new();
    let mut failed_flags: BTreeMap<usize, Arc<std::sync::atomic::AtomicBool>> = BTreeMap::new();
    for (t, s, client) in targets {
        let (tx, rx) = mpsc::channel(depth.max(1));
        if let (Some(v), Ok(sh)) = (senders.get_mut(usize::from(s)), u8::try_from(s)) {
            v.push(tx);
            let flag = failed_flags.entry(t).or_default().clone();
            let ctx = ctx.clone();
            writers.spawn(async move { (t, s, bucket_writer(client, ctx, sh, rx, flag).await) });
        }
    }
    let mut sink = NetSink {
        senders,
        bufs: vec![Pending::default(); n],
        chunk_size: chunk_size.max(1),
    };
    let encoded = tokio::task::spawn_blocking(move || {
        let r = encoder.encode(&mut source, &mut sink);
        drop(sink);
        (source, r)
    })
    .await;
    let mut outcomes = Vec::new();
    while let Some(r) = writers.join_next().await {
        if let Ok(o) = r {
            outcomes.push(o);
        }
    }
    let (source, cap) = encoded.map_err(|e| UploadError::Task(e.to_string()))?;
    Ok((source, cap?, outcomes))
}

/// The exact share size Tahoe 1.20 allocates: the layout up to the UEB, its length field and a
/// UEB whose hashes are not known yet (they have a fixed length).
pub fn allocated_size(geom: &Geometry) -> u64 {
    let layout = ShareLayout::new(geom, false);
    let ueb = Ueb::for_file(geom, [0; 32], [0; 32], [0; 32]).to_bytes();
    layout.offsets.uri_extension + layout.ueb_length_size() + ueb.len() as u64
}

/// The uploads of this process in flight, by storage index: one async lock each.
///
/// Two uploads of the same content (same key, so same storage index) from one client use the
/// same deterministic upload secret ([`super::secrets::FileSecrets::upload_secret`]); run at
/// the same time, each would abort the other's unfinished buckets as if they were left by a
/// dead predecessor, and both could miss servers-of-happiness. So uploads of one storage
/// index take turns: the later one then finds the shares in place and writes nothing. Entries
/// live only while some upload holds or waits for them.
static IN_FLIGHT: std::sync::LazyLock<Mutex<BTreeMap<StorageIndex, Arc<tokio::sync::Mutex<()>>>>> =
    std::sync::LazyLock::new(|| Mutex::new(BTreeMap::new()));

/// One upload's turn on its storage index ([`IN_FLIGHT`]). Dropping it (also when the
/// upload's future is cancelled while waiting) releases the turn and removes the map entry
/// once no other upload holds or waits for it.
struct SiTurn {
    si: StorageIndex,
    lock: Arc<tokio::sync::Mutex<()>>,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl SiTurn {
    /// Waits until no other upload of this process is working on `si`.
    async fn take(si: StorageIndex) -> SiTurn {
        let lock = {
            let mut m = IN_FLIGHT.lock().unwrap_or_else(|e| e.into_inner());
            Arc::clone(m.entry(si).or_default())
        };
        let mut turn = SiTurn {
            si,
            lock,
            guard: None,
        };
        turn.guard = Some(Arc::clone(&turn.lock).lock_owned().await);
        turn
    }
}

impl Drop for SiTurn {
    fn drop(&mut self) {
        // The guard holds a reference to the lock too: release it first.
        self.guard = None;
        let mut m = IN_FLIGHT.lock().unwrap_or_else(|e| e.into_inner());
        // Only the map's reference and ours left: nobody else holds or waits for this index.
        if Arc::strong_count(&self.lock) == 2 {
            m.remove(&self.si);
        }
    }
}

/// Uploads the plaintext of `source` as a CHK file (or LIT) to `servers`.
///
/// Uploads of the same storage index within this process run one after the other (see
/// [`IN_FLIGHT`]); others run concurrently.
pub async fn upload<P: PlaintextSource + Send + 'static>(
    servers: &ServerSet,
    secrets: &ClientSecrets,
    source: P,
    opts: &UploadOptions,
) -> Result<UploadResult, UploadError> {
    opts.params.validate()?;
    let size = source.size();
    if size <= LIT_THRESHOLD {
        let encoder = Encoder::new(opts.params.clone(), KeySource::Random);
        let cap = tokio::task::spawn_blocking(move || {
            let mut source = source;
            encoder.encode(&mut source, &mut crate::immutable::MemoryShares::default())
        })
        .await
        .map_err(|e| UploadError::Task(e.to_string()))??;
        return Ok(UploadResult {
            cap,
            storage_index: None,
            pushed_shares: 0,
            preexisting_shares: 0,
            sharemap: BTreeMap::new(),
            happiness: 0,
        });
    }
    let geom = Geometry::new(size, &opts.params)?;
    let (source, key) = {
        let (g, k) = (geom.clone(), opts.key.clone());
        tokio::task::spawn_blocking(move || {
            let mut source = source;
            let key = resolve_key(&mut source, &g, &k);
            (source, key)
        })
        .await
        .map_err(|e| UploadError::Task(e.to_string()))?
    };
    let key = key?;
    let si = hash::storage_index_hash(&key);
    let _turn = SiTurn::take(si).await;
    let total =
        u16::try_from(geom.total).map_err(|_| ImmutableError::BadParameters("too many shares"))?;
    let file_secrets = secrets.for_file(&si);
    let ctx = Ctx {
        si,
        upload_secret: Arc::new(file_secrets.upload_secret()),
        allocated_size: allocated_size(&geom),
        total,
        happy: opts.params.happy,
        needed: opts.params.needed,
    };
    let permuted = servers.permuted(&si, &opts.preferred);
    if permuted.is_empty() {
        return Err(UploadError::NoServers);
    }
    let trackers = permuted
        .into_iter()
        .take(2 * geom.total)
        .map(|h| Tracker {
            lease: file_secrets.for_server(h.nodeid()),
            handle: h,
            max_size: 0,
            writable: false,
            alive: true,
            existing: BTreeSet::new(),
            allocated: BTreeSet::new(),
            done: BTreeSet::new(),
        })
        .collect();
    let mut sel = Selector {
        ctx: ctx.clone(),
        trackers,
        last_error: None,
    };
    sel.survey().await;
    let preexisting: BTreeSet<u16> = sel
        .trackers
        .iter()
        .filter(|t| t.alive)
        .flat_map(|t| t.existing.iter().copied())
        .collect();
    let planned = sel.place().await;
    if planned < ctx.happy {
        sel.abort_all().await;
        return Err(sel.unhappy(planned));
    }

    let encoder = Encoder::new(opts.params.clone(), KeySource::Fixed(key));
    let mut source = source;
    let mut cap = None;
    let mut pushed = 0usize;
    // Each pass completes its targets or kills at least one server, so this is bounded by the
    // number of candidates; the extra bound is a guard.
    for _round in 0..=sel.trackers.len() + 1 {
        let targets: Vec<(usize, u16, StorageClient)> = sel
            .trackers
            .iter()
            .enumerate()
            .filter(|(_, t)| t.alive)
            .flat_map(|(i, t)| {
                t.allocated
                    .iter()
                    .map(move |&s| (i, s, t.handle.client.clone()))
            })
            .collect();
        if targets.is_empty() && cap.is_some() {
            break;
        }
        let res = write_pass(
            source,
            encoder.clone(),
            &ctx,
            targets,
            (opts.chunk_size, opts.queue_depth),
        )
        .await;
        let (src, c, outcomes) = match res {
            Ok(r) => r,
            Err(e) => {
                sel.abort_all().await;
                return Err(e);
            }
        };
        source = src;
        cap = Some(c);
        let mut failed: BTreeSet<usize> = BTreeSet::new();
        for (t, s, r) in outcomes {
            let tr = &mut sel.trackers[t];
            match r {
                Ok(()) => {
                    tr.allocated.remove(&s);
                    tr.done.insert(s);
                    pushed += 1;
                }
                Err(e) => {
                    sel.last_error = Some(e);
                    failed.insert(t);
                }
            }
        }
        if failed.is_empty() {
            break;
        }
        // Drop the failed servers (their unfinished buckets are aborted, best effort), then
        // place their lost shares on the others.
        let mut set = JoinSet::new();
        for &t in &failed {
            let tr = &mut sel.trackers[t];
            tr.alive = false;
            for s in std::mem::take(&mut tr.allocated) {
                let (client, ctx) = (tr.handle.client.clone(), ctx.clone());
                set.spawn(async move {
                    if let Ok(sh) = u8::try_from(s) {
                        let abort = client.abort_upload(&ctx.si, sh, &ctx.upload_secret[..]);
                        let _ = tokio::time::timeout(Duration::from_secs(5), abort).await;
                    }
                });
            }
        }
        while set.join_next().await.is_some() {}
        sel.place().await;
    }
    let achieved = sel.happiness(false);
    let unfinished = sel
        .trackers
        .iter()
        .any(|t| t.alive && !t.allocated.is_empty());
    if achieved < ctx.happy || unfinished || cap.is_none() {
        sel.abort_all().await;
        return Err(sel.unhappy(achieved));
    }
    let mut sharemap: BTreeMap<u16, BTreeSet<String>> = BTreeMap::new();
    for (s, ts) in sel.merged(false) {
        for t in ts {
            sharemap
                .entry(s)
                .or_default()
                .insert(sel.trackers[t].handle.desc.server_id.clone());
        }
    }
    Ok(UploadResult {
        cap: cap.ok_or_else(|| UploadError::Task("no encoding pass ran".into()))?,
        storage_index: Some(si),
        pushed_shares: pushed,
        preexisting_shares: preexisting.len(),
        sharemap,
        happiness: achieved,
    })
}

/// Uploads bytes held in memory.
pub async fn upload_bytes(
    servers: &ServerSet,
    secrets: &ClientSecrets,
    data: Vec<u8>,
    opts: &UploadOptions,
) -> Result<UploadResult, UploadError> {
    upload(servers, secrets, VecSource(data), opts).await
}

/// An owned in-memory plaintext.
#[derive(Clone, Debug)]
pub struct VecSource(pub Vec<u8>);

impl PlaintextSource for VecSource {
    fn size(&self) -> u64 {
        self.0.len() as u64
    }

    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), crate::immutable::BoxError> {
        crate::immutable::SliceSource(&self.0).read_at(offset, buf)
    }
}

/// A plaintext read from a file with positioned reads (`read_at` never moves a cursor).
#[derive(Debug)]
pub struct FileSource {
    file: std::fs::File,
    size: u64,
}

impl FileSource {
    pub fn open(path: &std::path::Path) -> std::io::Result<Self> {
        let file = std::fs::File::open(path)?;
        let size = file.metadata()?.len();
        Ok(FileSource { file, size })
    }

    /// The open file (for page-cache advice by a caller that wraps this source).
    pub fn file(&self) -> &std::fs::File {
        &self.file
    }
}

impl PlaintextSource for FileSource {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), crate::immutable::BoxError> {
        use std::os::unix::fs::FileExt;
        self.file.read_exact_at(buf, offset)?;
        Ok(())
    }
}

// ------------------------------------------------------------------------------------------
// Download
// ------------------------------------------------------------------------------------------

/// How to download.
#[derive(Clone, Debug)]
pub struct DownloadOptions {
    pub preferred: Vec<String>,
    /// Batches of segments fetched ahead of the one being written (fewer, but at least two,
    /// when the hash engine's lanes make batches larger than `batch_bytes`).
    pub window: usize,
    /// Plaintext bytes per batch (at least one segment): a batch is fetched with one block
    /// read per share and verified in one go.
    pub batch_bytes: usize,
    /// Distinct shares to know of beyond k before the search stops waiting for servers.
    pub locate_margin: usize,
}

impl Default for DownloadOptions {
    fn default() -> Self {
        DownloadOptions {
            preferred: Vec::new(),
            window: 3,
            batch_bytes: 1 << 20,
            locate_margin: 2,
        }
    }
}

/// A share that could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShareIssue {
    pub server_id: String,
    pub shnum: u16,
    pub fault: ShareFault,
}

/// What a download met on the way.
#[derive(Debug, Clone, Default)]
pub struct DownloadReport {
    /// Shares skipped, and why.
    pub problems: Vec<ShareIssue>,
    /// Corruption advisories sent: (server id, share number).
    pub advisories: Vec<(String, u16)>,
    /// Servers that failed to answer.
    pub failed_servers: Vec<String>,
}

/// Why a download failed. No variant carries key material.
#[derive(Debug, Error)]
pub enum DownloadError {
    #[error("not a file cap this downloader reads (LIT or CHK read caps only)")]
    UnsupportedCap,
    #[error("byte range {offset}+{len} is outside the file of {size} bytes")]
    BadRange { offset: u64, len: u64, size: u64 },
    #[error("not enough good shares: {needed} needed, {found} share(s) found; problems: {}",
        fmt_issues(.problems))]
    NotEnoughShares {
        needed: usize,
        found: usize,
        problems: Vec<ShareIssue>,
    },
    #[error("writing the output failed")]
    Output(#[source] std::io::Error),
    #[error(transparent)]
    Immutable(#[from] ImmutableError),
    #[error("a download task failed: {0}")]
    Task(String),
}

fn fmt_issues(p: &[ShareIssue]) -> String {
    p.iter()
        .map(|p| format!("share {} on {}: {}", p.shnum, p.server_id, p.fault))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Plaintext bytes decrypted and written at a time: well within a core's L2 cache.
const WRITE_PIECE: usize = 512 << 10;

/// Segments whose hash tree nodes are fetched together.
const NODE_RUN: u64 = 64;

/// Hash tree nodes fetched from one share (untrusted until a check uses them).
#[derive(Default)]
struct NodeCache {
    /// The segments `[a, b]` the cache covers.
    covers: Option<(u64, u64)>,
    block: BTreeMap<usize, Hash>,
    crypttext: BTreeMap<usize, Hash>,
}

/// A share whose header, UEB and share hash chain have been verified.
pub(crate) struct ActiveShare {
    server: usize,
    client: StorageClient,
    shnum: u16,
    pub(crate) layout: ShareLayout,
    pub(crate) block_root: Hash,
    nodes: Mutex<NodeCache>,
}

/// The verified facts about the file.
pub(crate) struct FileInfo {
    pub(crate) geom: Geometry,
    crypttext_root: Hash,
}

/// A fetch failure blamed on one share.
struct Blame {
    /// Index into the segment's share list.
    pos: usize,
    fault: ShareFault,
}

/// Reads exactly `len` bytes (a shorter answer means the share is truncated).
pub(crate) async fn read_exact(
    client: &StorageClient,
    si: &StorageIndex,
    shnum: u16,
    offset: u64,
    len: u64,
) -> Result<Bytes, ShareFault> {
    let sh = u8::try_from(shnum).map_err(|_| ShareFault::Unavailable)?;
    let b = client
        .read_immutable_share(si, sh, offset, len)
        .await
        .map_err(|_| ShareFault::Unavailable)?;
    if b.len() as u64 != len {
        return Err(ShareFault::Unavailable);
    }
    Ok(b)
}

/// Opens share `shnum` on a server: header, then share hash chain + UEB in one read.
pub(crate) async fn open_share(
    client: StorageClient,
    si: StorageIndex,
    cap: ChkCap,
    server: usize,
    shnum: u16,
) -> Result<(ActiveShare, FileInfo), ShareFault> {
    let sh = u8::try_from(shnum).map_err(|_| ShareFault::Unavailable)?;
    let head = client
        .read_immutable_share(&si, sh, 0, layout::HEADER_V2_LEN)
        .await
        .map_err(|_| ShareFault::Unavailable)?;
    let hl = ShareLayout::header_len_from_version(&head)?;
    let layout = ShareLayout::parse(head.get(..hl as usize).ok_or(ShareFault::Unavailable)?)?;
    let o = layout.offsets.clone();
    let chain_len = o.uri_extension - o.share_hashes;
    if chain_len > 256 * layout::SHARE_HASH_ENTRY_LEN {
        return Err(ShareFault::RegionsTooSmall);
    }
    let lsize = layout.ueb_length_size();
    let tail = client
        .read_immutable_share(
            &si,
            sh,
            o.share_hashes,
            chain_len + lsize + MAX_UEB_SIZE as u64,
        )
        .await
        .map_err(|_| ShareFault::Unavailable)?;
    let chain_bytes = tail
        .get(..chain_len as usize)
        .ok_or(ShareFault::Unavailable)?;
    let len_field = tail
        .get(chain_len as usize..(chain_len + lsize) as usize)
        .ok_or(ShareFault::Unavailable)?;
    let ueb_len = layout::parse_ueb_length(&layout, len_field)?;
    let start = (chain_len + lsize) as usize;
    let ueb_bytes = tail
        .get(start..start + ueb_len as usize)
        .ok_or(ShareFault::Unavailable)?;
    let (ueb, geom) = decode::check_ueb(&cap, ueb_bytes)?;
    let chain = layout::parse_share_hashes(chain_bytes)?;
    let block_root =
        decode::check_share_hashes(&ueb.share_root_hash, geom.total, usize::from(shnum), &chain)?;
    Ok((
        ActiveShare {
            server,
            client,
            shnum,
            layout,
            block_root,
            nodes: Mutex::new(NodeCache::default()),
        },
        FileInfo {
            geom,
            crypttext_root: ueb.crypttext_root_hash,
        },
    ))
}

/// Reads the tree nodes `indices` stored at `base`, one read per run of close indices.
async fn read_nodes(
    share: &ActiveShare,
    si: &StorageIndex,
    base: u64,
    indices: &BTreeSet<usize>,
) -> Result<BTreeMap<usize, Hash>, ShareFault> {
    let mut runs: Vec<(usize, usize)> = Vec::new();
    for &i in indices {
        match runs.last_mut() {
            Some((_, end)) if i <= *end + 4 => *end = i,
            _ => runs.push((i, i)),
        }
    }
    let mut out = BTreeMap::new();
    for (a, b) in runs {
        let bytes = read_exact(
            &share.client,
            si,
            share.shnum,
            base + a as u64 * 32,
            (b - a + 1) as u64 * 32,
        )
        .await?;
        for i in indices.range(a..=b) {
            let at = (i - a) * 32;
            let mut h = [0u8; 32];
            h.copy_from_slice(bytes.get(at..at + 32).ok_or(ShareFault::Unavailable)?);
            out.insert(*i, h);
        }
    }
    Ok(out)
}

/// The (untrusted) block and crypttext tree chains of share `share` for segment `seg`, from
/// its cache or by fetching the nodes of the run of segments starting at `seg`. The chains are
/// copied out, so concurrent segments replacing the cache cannot take nodes from each other.
async fn segment_chains(
    share: &ActiveShare,
    si: &StorageIndex,
    nseg: u64,
    seg: u64,
    last: u64,
) -> Result<(BTreeMap<usize, Hash>, BTreeMap<usize, Hash>), ShareFault> {
    let needed = hashtree::needed_hashes(nseg as usize, seg as usize, false);
    if let Ok(c) = share.nodes.lock() {
        if c.covers.is_some_and(|(a, b)| a <= seg && seg <= b) {
            return Ok((chain_of(&c.block, &needed), chain_of(&c.crypttext, &needed)));
        }
    }
    let end = last.min(seg + NODE_RUN - 1);
    let mut run = BTreeSet::new();
    for s in seg..=end {
        run.extend(hashtree::needed_hashes(nseg as usize, s as usize, false));
    }
    let o = &share.layout.offsets;
    let block = read_nodes(share, si, o.block_hashes, &run).await?;
    let crypttext = read_nodes(share, si, o.crypttext_hash_tree, &run).await?;
    let chains = (chain_of(&block, &needed), chain_of(&crypttext, &needed));
    if let Ok(mut c) = share.nodes.lock() {
        *c = NodeCache {
            covers: Some((seg, end)),
            block,
            crypttext,
        };
    }
    Ok(chains)
}

fn chain_of(nodes: &BTreeMap<usize, Hash>, needed: &BTreeSet<usize>) -> BTreeMap<usize, Hash> {
    needed
        .iter()
        .filter_map(|i| nodes.get(i).map(|h| (*i, *h)))
        .collect()
}

/// The blocks of segments `first..first+count` of one share, read with one request (blocks of
/// consecutive segments are contiguous in a share), and the segments' untrusted tree chains.
type ShareBatch = (Bytes, Vec<(BTreeMap<usize, Hash>, BTreeMap<usize, Hash>)>);

/// Buffers for batches' crypttext, kept between batches.
type Spare = Arc<std::sync::Mutex<Vec<Vec<u8>>>>;

/// Fetches, verifies and decodes segments `first..first+count` with `shares`
/// (exactly k): one block read per share for the whole batch, then every block hash and every
/// crypttext segment hash of the batch computed together (one set of SHA-256 lanes), on a blocking
/// thread. Returns the batch's verified crypttext (the writer decrypts it piece by piece) in a
/// buffer taken from `spare` when one is there.
#[allow(clippy::too_many_arguments)]
async fn fetch_batch(
    first: u64,
    count: u64,
    last: u64,
    shares: Arc<Vec<Arc<ActiveShare>>>,
    decoder: Arc<Decoder>,
    file: Arc<FileInfo>,
    si: StorageIndex,
    spare: Spare,
) -> Result<Vec<u8>, Vec<Blame>> {
    let geom = &file.geom;
    let nseg = geom.num_segments;
    let end_seg = first + count - 1;
    // Blocks of consecutive segments are contiguous: block_offset(s) = s * block_size.
    let span = geom.block_offset(end_seg) + geom.block_len(end_seg) - geom.block_offset(first);
    let mut set = JoinSet::new();
    for (pos, sh) in shares.iter().enumerate() {
        let sh = sh.clone();
        let offset = sh.layout.offsets.data + geom.block_offset(first);
        set.spawn(async move {
            // The blocks and the tree nodes (usually cached) are fetched concurrently.
            let chains = async {
                let mut chains = Vec::with_capacity(count as usize);
                for seg in first..=end_seg {
                    chains.push(segment_chains(&sh, &si, nseg, seg, last).await?);
                }
                Ok::<_, ShareFault>(chains)
            };
            let blocks = read_exact(&sh.client, &si, sh.shnum, offset, span);
            let r: Result<ShareBatch, ShareFault> = match tokio::join!(blocks, chains) {
                (Ok(b), Ok(c)) => Ok((b, c)),
                (Err(f), _) | (_, Err(f)) => Err(f),
            };
            (pos, r)
        });
    }
    let mut fetched: Vec<Option<ShareBatch>> = vec![None; shares.len()];
    let mut blame = Vec::new();
    while let Some(r) = set.join_next().await {
        match r {
            Ok((pos, Ok(b))) => fetched[pos] = Some(b),
            Ok((pos, Err(fault))) => blame.push(Blame { pos, fault }),
            Err(_) => {}
        }
    }
    if !blame.is_empty() {
        return Err(blame);
    }
    let fetched: Vec<ShareBatch> = fetched.into_iter().flatten().collect();
    if fetched.len() != shares.len() {
        return Err(vec![Blame {
            pos: 0,
            fault: ShareFault::Unavailable,
        }]);
    }
    let verify = move || -> Result<Vec<u8>, Vec<Blame>> {
        let geom = &file.geom;
        let k = geom.needed;
        let base = geom.block_offset(first);
        // (segment, its block in every share), in segment order.
        fn block_of<'a>(geom: &Geometry, base: u64, batch: &'a [u8], seg: u64) -> &'a [u8] {
            let a = (geom.block_offset(seg) - base) as usize;
            let b = a + geom.block_len(seg) as usize;
            batch.get(a..b).unwrap_or_default()
        }
        let mut refs: Vec<&[u8]> = Vec::with_capacity(shares.len() * count as usize);
        for seg in first..=end_seg {
            for (batch, _) in &fetched {
                refs.push(block_of(geom, base, batch, seg));
            }
        }
        // Every segment but the tail decodes to exactly segment_size (a multiple of k) bytes;
        // the tail's padding is cut off at the end. Blocks are decoded before they are
        // verified so that their hashes and the crypttext segment hashes run in one set of
        // SHA-256 lanes; nothing decoded is used unless every block of the batch verifies.
        let decoded_len: u64 = (first..=end_seg)
            .map(|s| k as u64 * geom.block_len(s))
            .sum();
        let mut out = spare
            .lock()
            .ok()
            .and_then(|mut s| s.pop())
            .unwrap_or_default();
        out.clear();
        out.reserve(decoded_len as usize);
        let mut decoded = true;
        for i in 0..count as usize {
            let seg_refs = &refs[i * shares.len()..(i + 1) * shares.len()];
            if decoder.decode_append(seg_refs, &mut out).is_err() {
                decoded = false;
                break;
            }
        }
        let plain_len: u64 = (first..=end_seg).map(|s| geom.segment_len(s)).sum();
        out.truncate(plain_len as usize);
        // Segment s of the batch starts at (s - first) * segment_size; a geometry that would
        // put it past the decoded bytes is refused rather than indexed.
        let mut segs: Vec<&[u8]> = Vec::with_capacity(count as usize);
        if decoded {
            for s in first..=end_seg {
                let a = (geom.segment_offset(s) - geom.segment_offset(first)) as usize;
                match out.get(a..a + geom.segment_len(s) as usize) {
                    Some(seg) => segs.push(seg),
                    None => {
                        decoded = false;
                        segs.clear();
                        break;
                    }
                }
            }
        }
        let mut hashes = multihash::tagged_hash_groups(&[
            (tags::BLOCK, &refs),
            (tags::CRYPTTEXT_SEGMENT, &segs),
        ]);
        let leaves = hashes.pop().unwrap_or_default();
        let hashes = hashes.pop().unwrap_or_default();
        if hashes.len() != refs.len() {
            return Err(vec![Blame {
                pos: 0,
                fault: ShareFault::Unavailable,
            }]);
        }
        let mut blame = Vec::new();
        for (i, seg) in (first..=end_seg).enumerate() {
            for (pos, (sh, (_, chains))) in shares.iter().zip(&fetched).enumerate() {
                let h = &hashes[i * shares.len() + pos];
                if let Err(fault) = decode::check_block(&sh.block_root, nseg, seg, h, &chains[i].0)
                {
                    if !blame.iter().any(|b: &Blame| b.pos == pos) {
                        blame.push(Blame { pos, fault });
                    }
                }
            }
        }
        if !blame.is_empty() {
            return Err(blame);
        }
        if !decoded || leaves.len() != count as usize {
            return Err(vec![Blame {
                pos: 0,
                fault: ShareFault::Unavailable,
            }]);
        }
        // The crypttext nodes of any share will do; a share whose nodes fail is blamed, and
        // the batch fails only if no share's nodes verify a segment.
        for (i, seg) in (first..=end_seg).enumerate() {
            let mut blame = Vec::new();
            let ok =
                fetched.iter().enumerate().any(|(pos, (_, chains))| {
                    match hashtree::verify_leaf(
                        &file.crypttext_root,
                        nseg as usize,
                        seg as usize,
                        &leaves[i],
                        &chains[i].1,
                    ) {
                        Ok(()) => true,
                        Err(err) => {
                            blame.push(Blame {
                                pos,
                                fault: ShareFault::Crypttext { segment: seg, err },
                            });
                            false
                        }
                    }
                });
            if !ok {
                // Only reachable if every share's crypttext nodes are bad: blame the first.
                blame.truncate(1);
                return Err(blame);
            }
        }
        drop(segs);
        Ok(out)
    };
    tokio::task::spawn_blocking(verify)
        .await
        .unwrap_or_else(|_| {
            Err(vec![Blame {
                pos: 0,
                fault: ShareFault::Unavailable,
            }])
        })
}

/// The k shares one segment is fetched from.
type ShareSet = Arc<Vec<Arc<ActiveShare>>>;
/// A share set and its decoder.
type Snapshot = (ShareSet, Arc<Decoder>);
/// A segment fetch in flight.
type SegmentTask = tokio::task::JoinHandle<Result<Vec<u8>, Vec<Blame>>>;

type LocateResult = (usize, Result<BTreeSet<u8>, ClientError>);

/// Answers to the share search that arrive within this long of the first one (or within a
/// quarter of its time, whichever is longer) count as equally fast.
const SAME_SPEED: Duration = Duration::from_millis(10);

/// Whether a server that answered the share search after `took` is as fast as the first one,
/// which answered after `first`: among such servers the share choice goes by share number, so
/// primary shares (no decoding, which costs CPU) win over answer order (which within a few
/// milliseconds is noise).
fn same_speed(first: Duration, took: Duration) -> bool {
    took.saturating_sub(first) <= SAME_SPEED.max(first / 4)
}

/// The download driver of one file.
struct Fetcher {
    cap: ChkCap,
    si: StorageIndex,
    codec: Codec,
    servers: Vec<Arc<ServerHandle>>,
    locate: JoinSet<LocateResult>,
    /// Servers in answer order (fastest first), with the time since `started` at which each
    /// answer was taken up: on arrival during the search, later for an answer consulted only
    /// once shares ran short (such a server then counts as slower, never as faster).
    rank: Vec<(usize, Duration)>,
    /// When the share search started.
    started: Instant,
    /// (server, share) pairs known, not yet tried.
    known: Vec<(usize, u16)>,
    found: BTreeSet<u16>,
    bad_servers: HashSet<usize>,
    active: Vec<Arc<ActiveShare>>,
    snapshot: Option<Snapshot>,
    file: Option<Arc<FileInfo>>,
    report: DownloadReport,
    advisories: JoinSet<()>,
    /// Crypttext buffers of batches already written, reused by the next batches: a download
    /// allocates its few batch buffers once, not once per batch on whichever blocking thread
    /// decodes it, where each thread's allocator arena would keep freed batch buffers of its
    /// own and so raise peak RSS.
    spare: Spare,
}

impl Fetcher {
    fn new(
        servers: &ServerSet,
        cap: &ChkCap,
        opts: &DownloadOptions,
    ) -> Result<Self, DownloadError> {
        let si = hash::storage_index_hash(&cap.key);
        let codec =
            Codec::new(cap.needed as usize, cap.total as usize).map_err(ImmutableError::from)?;
        let servers = servers.permuted(&si, &opts.preferred);
        let mut locate = JoinSet::new();
        for (i, s) in servers.iter().enumerate() {
            let client = s.client.clone();
            locate.spawn(async move { (i, client.list_immutable_shares(&si).await) });
        }
        Ok(Fetcher {
            cap: cap.clone(),
            si,
            codec,
            servers,
            locate,
            rank: Vec::new(),
            started: Instant::now(),
            known: Vec::new(),
            found: BTreeSet::new(),
            bad_servers: HashSet::new(),
            active: Vec::new(),
            snapshot: None,
            file: None,
            report: DownloadReport::default(),
            advisories: JoinSet::new(),
            spare: Spare::default(),
        })
    }

    /// Waits for one more server's answer. False when every server has answered.
    async fn locate_one(&mut self) -> bool {
        let Some(r) = self.locate.join_next().await else {
            return false;
        };
        if let Ok((i, r)) = r {
            match r {
                Ok(shares) => {
                    self.rank.push((i, self.started.elapsed()));
                    for s in shares {
                        let s = u16::from(s);
                        if u32::from(s) < self.cap.total {
                            self.known.push((i, s));
                            self.found.insert(s);
                        }
                    }
                }
                Err(_) => {
                    self.bad_servers.insert(i);
                    self.report
                        .failed_servers
                        .push(self.servers[i].desc.server_id.clone());
                }
            }
        }
        true
    }

    async fn locate(&mut self, margin: usize) {
        let want = (self.cap.needed as usize + margin).min(self.cap.total as usize);
        while self.found.len() < want && self.locate_one().await {}
    }

    /// Where `server` stands among the servers that answered: 0 for every server as fast as
    /// the first one ([`same_speed`]), else its place in answer order; `usize::MAX` for a server
    /// that has not answered.
    fn speed_tier(&self, server: usize) -> usize {
        let Some(pos) = self.rank.iter().position(|&(s, _)| s == server) else {
            return usize::MAX;
        };
        let first = self.rank[0].1;
        if same_speed(first, self.rank[pos].1) {
            0
        } else {
            pos
        }
    }

    /// Picks up to `count` untried shares: share numbers not active, distinct servers first,
    /// then faster servers, then lower share numbers: the primary shares (numbers below k) come
    /// first, and a segment read from k primary shares needs no decoding.
    fn pick(&mut self, count: usize) -> Vec<(usize, u16)> {
        let mut picked: Vec<(usize, u16)> = Vec::new();
        for _ in 0..count {
            let busy: HashSet<usize> = self
                .active
                .iter()
                .map(|a| a.server)
                .chain(picked.iter().map(|p| p.0))
                .collect();
            let taken: HashSet<u16> = self
                .active
                .iter()
                .map(|a| a.shnum)
                .chain(picked.iter().map(|p| p.1))
                .collect();
            let best = self
                .known
                .iter()
                .enumerate()
                .filter(|(_, (srv, sh))| !self.bad_servers.contains(srv) && !taken.contains(sh))
                .min_by_key(|(_, (srv, sh))| (busy.contains(srv), self.speed_tier(*srv), *sh))
                .map(|(i, _)| i);
            match best {
                Some(i) => picked.push(self.known.remove(i)),
                None => break,
            }
        }
        picked
    }

    fn problem(&mut self, server: usize, shnum: u16, fault: ShareFault) {
        let server_id = self.servers[server].desc.server_id.clone();
        if fault == ShareFault::Unavailable {
            self.bad_servers.insert(server);
        } else {
            // A share that fails validation: tell its server (best effort, bounded).
            let client = self.servers[server].client.clone();
            let si = self.si;
            let reason = format!("lafs download: {fault}");
            if let Ok(sh) = u8::try_from(shnum) {
                self.advisories.spawn(async move {
                    let advise = client.advise_corrupt_immutable(&si, sh, &reason);
                    let _ = tokio::time::timeout(Duration::from_secs(10), advise).await;
                });
            }
            self.report.advisories.push((server_id.clone(), shnum));
        }
        self.report.problems.push(ShareIssue {
            server_id,
            shnum,
            fault,
        });
    }

    fn not_enough(&self) -> DownloadError {
        DownloadError::NotEnoughShares {
            needed: self.cap.needed as usize,
            found: self.found.len(),
            problems: self.report.problems.clone(),
        }
    }

    /// Opens shares until k are active.
    async fn fill(&mut self) -> Result<(), DownloadError> {
        let k = self.cap.needed as usize;
        while self.active.len() < k {
            let picks = self.pick(k - self.active.len());
            if picks.is_empty() {
                if self.locate_one().await {
                    continue;
                }
                return Err(self.not_enough());
            }
            let mut set = JoinSet::new();
            for (srv, sh) in picks {
                let (client, si, cap) =
                    (self.servers[srv].client.clone(), self.si, self.cap.clone());
                set.spawn(async move { (srv, sh, open_share(client, si, cap, srv, sh).await) });
            }
            while let Some(r) = set.join_next().await {
                let Ok((srv, sh, r)) = r else { continue };
                match r {
                    Ok((share, info)) => {
                        if self.file.is_none() {
                            self.file = Some(Arc::new(info));
                        }
                        self.active.push(Arc::new(share));
                        self.snapshot = None;
                    }
                    Err(fault) => self.problem(srv, sh, fault),
                }
            }
        }
        Ok(())
    }

    /// The current k shares and their decoder.
    fn current(&mut self) -> Result<Snapshot, DownloadError> {
        if let Some(s) = &self.snapshot {
            return Ok(s.clone());
        }
        let ids: Vec<usize> = self.active.iter().map(|a| usize::from(a.shnum)).collect();
        let decoder = self.codec.decoder(&ids).map_err(ImmutableError::from)?;
        let snap = (Arc::new(self.active.clone()), Arc::new(decoder));
        self.snapshot = Some(snap.clone());
        Ok(snap)
    }

    /// Drops the blamed shares of a failed segment fetch.
    fn drop_blamed(&mut self, shares: &[Arc<ActiveShare>], blame: Vec<Blame>) {
        for b in blame {
            let Some(sh) = shares.get(b.pos) else {
                continue;
            };
            let before = self.active.len();
            self.active.retain(|a| !Arc::ptr_eq(a, sh));
            if self.active.len() != before {
                self.snapshot = None;
                self.problem(sh.server, sh.shnum, b.fault);
            }
        }
    }

    async fn spawn_batch(
        &mut self,
        first: u64,
        count: u64,
        last: u64,
    ) -> Result<(ShareSet, SegmentTask), DownloadError> {
        self.fill().await?;
        let (shares, decoder) = self.current()?;
        let file = self.file.clone().ok_or_else(|| self.not_enough())?;
        let h = tokio::spawn(fetch_batch(
            first,
            count,
            last,
            shares.clone(),
            decoder,
            file,
            self.si,
            self.spare.clone(),
        ));
        Ok((shares, h))
    }

    async fn run<W: AsyncWrite + Unpin + ?Sized>(
        &mut self,
        offset: u64,
        len: u64,
        out: &mut W,
        opts: &DownloadOptions,
    ) -> Result<(), DownloadError> {
        self.locate(opts.locate_margin).await;
        self.fill().await?;
        let geom = self
            .file
            .as_ref()
            .ok_or_else(|| self.not_enough())?
            .geom
            .clone();
        let end = offset + len;
        let first = offset / geom.segment_size;
        let last = (end - 1) / geom.segment_size;
        // Segments per batch: about `batch_bytes` of plaintext, so one block read per share
        // stays within one server read call (the server answers up to 1 MiB in one piece).
        let per_batch = (opts.batch_bytes as u64 / geom.segment_size.max(1)).max(1);
        // An even count (rounded up: the block read per share stays far under 1 MiB) so that
        // the batch's crypttext segment hashes pair up in the two SHA-256 lanes: segment sizes
        // are multiples of k, so 1 MiB holds 7 segments of 128 KiB + 1 byte for k = 3, and the
        // seventh segment hash ran alone at half speed.
        let by_bytes = if per_batch > 1 {
            per_batch + per_batch % 2
        } else {
            per_batch
        };
        // Enough segments that their hashes start in every lane of the SHA-256 engine: a
        // segment brings k block hashes and one crypttext segment hash, so with W lanes,
        // ceil(W / (k + 1)) segments fill them (4 of Tahoe's 1 MiB segments for k = 3 and the
        // sixteen-lane engine). One segment alone left 12 of 16 lanes idle, so its hashes ran on
        // the two-lane engine at a third of the wide engine's speed. More segments would keep
        // the lanes full to the end of the batch, but each batch in flight holds its blocks and
        // its decoded crypttext at once, so memory grows with the batch: `lafs get` must stream
        // in well under 100 MiB.
        let fill = (multihash::lanes() as u64).div_ceil(geom.needed as u64 + 1);
        let per_batch = by_bytes.max(fill);
        // Batches made larger than `batch_bytes` by the lane count hold more bytes each: fewer
        // of them in flight keep about `window * batch_bytes` fetched ahead (and memory about
        // the same), but at least two, so one is fetched while the other is verified.
        let window = if per_batch > by_bytes {
            let batch_len = per_batch.saturating_mul(geom.segment_size).max(1);
            let ahead = (opts.window as u64).saturating_mul(opts.batch_bytes as u64);
            (ahead.div_ceil(batch_len) as usize).clamp(opts.window.min(2), opts.window.max(1))
        } else {
            opts.window.max(1)
        };
        let mut inflight: VecDeque<(u64, u64, ShareSet, SegmentTask)> = VecDeque::new();
        let mut next = first;
        loop {
            while inflight.len() < window && next <= last {
                let count = per_batch.min(last - next + 1);
                let (shares, h) = self.spawn_batch(next, count, last).await?;
                inflight.push_back((next, count, shares, h));
                next += count;
            }
            let Some((batch, count, shares, h)) = inflight.pop_front() else {
                break;
            };
            match h.await {
                Ok(Ok(mut crypttext)) => {
                    let start = geom.segment_offset(batch);
                    let a = (offset.max(start) - start) as usize;
                    let b = (end.min(start + crypttext.len() as u64) - start) as usize;
                    let part = crypttext.get_mut(a..b).ok_or_else(|| {
                        DownloadError::Task("segment shorter than expected".into())
                    })?;
                    // Decrypted a piece at a time just before the piece is written, so that
                    // the write copies bytes still in the CPU cache: a batch of several MiB
                    // decrypted in one go has left the cache by the time it is written.
                    let mut ctr = AesCtr::at(&self.cap.key, start + a as u64);
                    for piece in part.chunks_mut(WRITE_PIECE) {
                        ctr.apply(piece);
                        out.write_all(piece).await.map_err(DownloadError::Output)?;
                    }
                    // No more buffers are kept than batches can be in flight at once.
                    if let Ok(mut spare) = self.spare.lock() {
                        if spare.len() < window {
                            spare.push(crypttext);
                        }
                    }
                }
                Ok(Err(blame)) => {
                    self.drop_blamed(&shares, blame);
                    let (shares, h) = self.spawn_batch(batch, count, last).await?;
                    inflight.push_front((batch, count, shares, h));
                }
                Err(e) => return Err(DownloadError::Task(e.to_string())),
            }
        }
        out.flush().await.map_err(DownloadError::Output)?;
        Ok(())
    }
}

/// Writes bytes `offset .. offset+len` of the file of `cap` to `out`, fetching only the
/// segments that overlap the range.
pub async fn download_range<W: AsyncWrite + Unpin + ?Sized>(
    servers: &ServerSet,
    cap: &NodeCap,
    offset: u64,
    len: u64,
    out: &mut W,
    opts: &DownloadOptions,
) -> Result<DownloadReport, DownloadError> {
    let size = match cap {
        NodeCap::Lit(l) => l.data.len() as u64,
        NodeCap::Chk(c) => c.size,
        _ => return Err(DownloadError::UnsupportedCap),
    };
    if offset.checked_add(len).is_none_or(|e| e > size) {
        return Err(DownloadError::BadRange { offset, len, size });
    }
    let chk = match cap {
        NodeCap::Lit(l) => {
            let part = &l.data[offset as usize..(offset + len) as usize];
            out.write_all(part).await.map_err(DownloadError::Output)?;
            out.flush().await.map_err(DownloadError::Output)?;
            return Ok(DownloadReport::default());
        }
        NodeCap::Chk(c) => c,
        _ => return Err(DownloadError::UnsupportedCap),
    };
    if len == 0 {
        return Ok(DownloadReport::default());
    }
    let mut f = Fetcher::new(servers, chk, opts)?;
    let r = f.run(offset, len, out, opts).await;
    // Advisories are sent even when the download fails; each is bounded by its timeout.
    while f.advisories.join_next().await.is_some() {}
    f.locate.abort_all();
    r.map(|()| f.report)
}

/// Writes the whole file of `cap` to `out`.
pub async fn download<W: AsyncWrite + Unpin + ?Sized>(
    servers: &ServerSet,
    cap: &NodeCap,
    out: &mut W,
    opts: &DownloadOptions,
) -> Result<DownloadReport, DownloadError> {
    let size = match cap {
        NodeCap::Lit(l) => l.data.len() as u64,
        NodeCap::Chk(c) => c.size,
        _ => return Err(DownloadError::UnsupportedCap),
    };
    download_range(servers, cap, 0, size, out, opts).await
}

/// Downloads the whole file into memory.
pub async fn download_bytes(
    servers: &ServerSet,
    cap: &NodeCap,
    opts: &DownloadOptions,
) -> Result<(Vec<u8>, DownloadReport), DownloadError> {
    let mut out = Vec::new();
    let report = download(servers, cap, &mut out, opts).await?;
    Ok((out, report))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::immutable::encode_bytes;

    #[test]
    fn answers_a_few_milliseconds_or_a_quarter_apart_are_equally_fast() {
        let ms = Duration::from_millis;
        assert!(same_speed(ms(2), ms(2)));
        assert!(same_speed(ms(2), ms(12)));
        assert!(!same_speed(ms(2), ms(13)));
        assert!(same_speed(ms(200), ms(250)));
        assert!(!same_speed(ms(200), ms(251)));
    }

    fn in_flight(si: &StorageIndex) -> bool {
        IN_FLIGHT
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(si)
    }

    /// Turns on one storage index are exclusive and released in order; another index is not
    /// held up; the map entry goes once nobody holds or waits for it, also when a waiter is
    /// cancelled.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn si_turns_are_exclusive_and_cleaned_up() {
        let (si, other) = ([0xA5u8; 16], [0x5Au8; 16]);
        let first = SiTurn::take(si).await;
        assert!(in_flight(&si));
        // Another storage index goes ahead at once.
        let o = tokio::time::timeout(Duration::from_secs(5), SiTurn::take(other))
            .await
            .expect("another storage index is not held up");
        drop(o);
        assert!(!in_flight(&other));
        // The same one waits...
        let waiter = tokio::spawn(SiTurn::take(si));
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!waiter.is_finished());
        // ...a cancelled waiter does not remove the entry the holder and the waiter use...
        let cancelled = tokio::time::timeout(Duration::from_millis(50), SiTurn::take(si)).await;
        assert!(cancelled.is_err());
        assert!(in_flight(&si));
        // ...and the waiter gets its turn when the first is done.
        drop(first);
        let second = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("the waiter gets its turn")
            .unwrap();
        assert!(in_flight(&si));
        drop(second);
        assert!(!in_flight(&si));
    }

    /// The allocated size must equal the share the encoder writes (else a server never
    /// reports the share complete); the encoder's shares are byte-identical to Tahoe's.
    #[test]
    fn allocated_size_is_exact() {
        for (size, k, n, seg) in [
            (56u64, 3usize, 10usize, 1u64 << 20),
            (1000, 1, 1, 1 << 20),
            ((1 << 20) + 1, 3, 10, 1 << 20),
            (5 << 20, 3, 10, 1 << 20),
            (123_457, 7, 13, 4096),
            (10_000_000, 25, 100, 131_072),
        ] {
            let p = EncodingParams {
                needed: k,
                happy: k,
                total: n,
                max_segment_size: seg,
            };
            let plain = vec![7u8; size as usize];
            let f = encode_bytes(&plain, &p, &KeySource::Fixed([1; 16])).unwrap();
            let geom = Geometry::new(size, &p).unwrap();
            for sh in &f.shares {
                assert_eq!(sh.len() as u64, allocated_size(&geom), "{size} {k}/{n}");
            }
        }
    }

    /// The sink cuts shares into contiguous chunks of at most `chunk_size` and feeds only the
    /// shares that have writers.
    #[test]
    fn sink_chunks_in_order() {
        let (tx, mut rx) = mpsc::channel(1000);
        let mut sink = NetSink {
            senders: vec![Vec::new(), vec![tx]],
            bufs: vec![Pending::default(); 2],
            chunk_size: 10,
        };
        let mut expect = Vec::new();
        let mut off = 0u64;
        for len in [3usize, 4, 25, 1, 9, 0, 40] {
            let d: Vec<u8> = (0..len).map(|i| (off as usize + i) as u8).collect();
            sink.write(0, off, &d).unwrap();
            sink.write(1, off, &d).unwrap();
            expect.extend_from_slice(&d);
            off += len as u64;
        }
        sink.finish().unwrap();
        let mut got = Vec::new();
        let mut sizes = Vec::new();
        while let Ok(c) = rx.try_recv() {
            let data = c.parts.concat();
            assert!(data.len() <= 10 && !data.is_empty());
            assert_eq!(c.offset, got.len() as u64);
            sizes.push(data.len());
            got.extend_from_slice(&data);
        }
        assert_eq!(got, expect);
        // Full chunks but for the last: contiguous writes fill them across write boundaries.
        assert!(
            sizes[..sizes.len() - 1].iter().all(|&l| l == 10),
            "{sizes:?}"
        );
    }
}
