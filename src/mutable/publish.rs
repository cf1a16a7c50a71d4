//! Publishing mutable files: create, overwrite, and MDMF in-place byte-range updates, all with
//! Tahoe's test-and-write semantics (digest §4.5).
//!
//! Every share write is one `read-test-write` carrying a test vector: `(0, 1, b"")` for a share
//! that must not exist yet, or `(0, len, checkstring)` with the checkstring (57 bytes SDMF, 41
//! MDMF) of the share as this writer last saw it. If another writer replaced the share in
//! between, the server refuses the write and the publish fails with
//! [`MutableError::UncoordinatedWrite`]: a concurrent update is reported, never silently lost.
//!
//! Placement: a share number is written wherever it already exists (every copy), otherwise on
//! server `shnum % servers.len()`. New versions get `seqnum = max(seqnum seen) + 1`; an existing
//! file keeps its k and N.
//!
//! An MDMF update rewrites only the segments it touches: each share receives the new header,
//! metadata (encrypted key, hash chain, signature, verification key), the touched salt‖block
//! pairs and the new block hash tree; every other segment's bytes stay as they were.

use super::encode::{block_leaf, encode_segment, encode_version, fresh_salt, SignedVersion};
use super::keys::{SigningKeyPair, WriterKeys};
use super::layout::{self, Geometry, Share, SignedPrefix};
use super::retrieve::{map_update_for_write, read_version, recover_private_key, ServerMap};
use super::storage::{MutableServer, ShareNum, TestVector, TestWriteVectors, WriteSecrets};
use super::{MutableError, ShareError, ShareProblem};
use crate::cap::{MutableFormat, MutableWriteCap};
use crate::codec::Codec;
use crate::crypto::hash;
use std::collections::{BTreeMap, BTreeSet};

/// Encoding parameters for new files and the client's lease secret.
#[derive(Clone)]
pub struct PublishParams {
    pub k: u8,
    pub n: u8,
    /// The client's 32-byte lease secret (`private/secret`), from which per-server lease
    /// secrets are derived.
    pub lease_secret: [u8; 32],
}

impl Default for PublishParams {
    fn default() -> Self {
        PublishParams {
            k: 3,
            n: 10,
            lease_secret: [0; 32],
        }
    }
}

impl std::fmt::Debug for PublishParams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PublishParams(k={}, n={})", self.k, self.n)
    }
}

/// What a successful publish did.
#[derive(Clone, Debug)]
pub struct PublishOutcome {
    pub seqnum: u64,
    /// `(server index, share number)` of every share written.
    pub written: Vec<(usize, ShareNum)>,
    /// Shares that could not be written (server errors), and shares rejected while mapping.
    pub problems: Vec<ShareProblem>,
}

/// The secrets for one server: its write enabler and lease secrets.
pub fn write_secrets(
    writer: &WriterKeys,
    server: &dyn MutableServer,
    lease_secret: &[u8; 32],
) -> WriteSecrets {
    let node = server.node_id();
    let si = &writer.reader.storage_index;
    let frs = hash::file_renewal_secret_hash(&hash::my_renewal_secret_hash(lease_secret), si);
    let fcs = hash::file_cancel_secret_hash(&hash::my_cancel_secret_hash(lease_secret), si);
    WriteSecrets {
        write_enabler: writer.write_enabler(&node),
        renew_secret: hash::bucket_renewal_secret_hash(&frs, &node),
        cancel_secret: hash::bucket_cancel_secret_hash(&fcs, &node),
    }
}

struct WriteOp {
    server: usize,
    shnum: ShareNum,
    test: TestVector,
    write: Vec<(u64, Vec<u8>)>,
}

fn create_test() -> TestVector {
    TestVector {
        offset: 0,
        size: 1,
        specimen: Vec::new(),
    }
}

fn checkstring_test(cs: Vec<u8>) -> TestVector {
    TestVector {
        offset: 0,
        size: cs.len() as u64,
        specimen: cs,
    }
}

/// Sends one `read-test-write` per share write, all concurrently (writes to one server are
/// independent requests: each carries its own test vector).
///
/// A write that fails with a server error (not a refused test) and carries a whole share is
/// placed again on another server that has not failed, as a new share (create test), preferring
/// the least loaded server, until every share is placed or no server is left. Partial writes
/// (in-place MDMF updates) are not relocated: a partial share elsewhere would be garbage.
#[allow(clippy::too_many_arguments)]
async fn send_writes(
    servers: &[&dyn MutableServer],
    writer: &WriterKeys,
    params: &PublishParams,
    format: MutableFormat,
    k: usize,
    seqnum: u64,
    ops: Vec<WriteOp>,
    mut problems: Vec<ShareProblem>,
) -> Result<PublishOutcome, MutableError> {
    let si = writer.reader.storage_index;
    let read_vector = [(0u64, layout::checkstring_len(format) as u64)];
    let mut written = Vec::new();
    let mut refused = Vec::new();
    let mut dead: BTreeSet<usize> = BTreeSet::new();
    let mut load: BTreeMap<usize, usize> = BTreeMap::new();
    for op in &ops {
        *load.entry(op.server).or_default() += 1;
    }
    let mut pending = ops;
    while !pending.is_empty() {
        let sends = pending.into_iter().filter_map(|op| {
            let server = *servers.get(op.server)?;
            let secrets = write_secrets(writer, server, &params.lease_secret);
            let mut tw = BTreeMap::new();
            tw.insert(
                op.shnum,
                TestWriteVectors {
                    test: vec![op.test],
                    write: op.write,
                    new_length: None,
                },
            );
            let (idx, shnum) = (op.server, op.shnum);
            let si = &si;
            let read_vector = &read_vector;
            Some(async move {
                let r = server.read_test_write(si, &secrets, &tw, read_vector).await;
                let write = tw.remove(&shnum).map(|v| v.write).unwrap_or_default();
                (idx, shnum, write, r)
            })
        });
        let mut retry = Vec::new();
        for (server, shnum, write, r) in futures::future::join_all(sends).await {
            match r {
                Ok(r) if r.success => written.push((server, shnum)),
                Ok(_) => refused.push((server, shnum)),
                Err(e) => {
                    dead.insert(server);
                    problems.push(ShareProblem {
                        server,
                        shnum,
                        error: ShareError::Storage(e),
                    });
                    if write.len() == 1 && write.first().is_some_and(|w| w.0 == 0) {
                        retry.push((shnum, write));
                    }
                }
            }
        }
        pending = Vec::new();
        for (shnum, write) in retry {
            let target = (0..servers.len())
                .filter(|i| !dead.contains(i))
                .min_by_key(|i| (load.get(i).copied().unwrap_or(0), *i));
            let Some(target) = target else {
                break;
            };
            *load.entry(target).or_default() += 1;
            pending.push(WriteOp {
                server: target,
                shnum,
                test: create_test(),
                write,
            });
        }
    }
    if !refused.is_empty() {
        return Err(MutableError::UncoordinatedWrite {
            refused,
            written: written.len(),
        });
    }
    let distinct: BTreeSet<ShareNum> = written.iter().map(|w| w.1).collect();
    if distinct.len() < k {
        return Err(MutableError::NotEnoughShares {
            needed: k,
            found: distinct.len(),
        });
    }
    Ok(PublishOutcome {
        seqnum,
        written,
        problems,
    })
}

fn check_params(params: &PublishParams) -> Result<(), MutableError> {
    if params.k == 0 || params.k > params.n {
        return Err(MutableError::InvalidParameters);
    }
    Ok(())
}

/// Creates a new mutable file with `contents` under a fresh key pair (take it from a
/// [`super::keys::KeyPool`]); returns its write cap.
pub async fn create(
    servers: &[&dyn MutableServer],
    keypair: &SigningKeyPair,
    format: MutableFormat,
    contents: &[u8],
    params: &PublishParams,
) -> Result<(MutableWriteCap, PublishOutcome), MutableError> {
    check_params(params)?;
    if servers.is_empty() {
        return Err(MutableError::NoServers);
    }
    let writer = keypair.file_keys();
    let shares = encode_version(format, params.k, params.n, 1, contents, keypair)?;
    let mut ops = Vec::with_capacity(shares.len());
    for (sh, share) in shares.iter().enumerate() {
        ops.push(WriteOp {
            server: sh % servers.len(),
            shnum: sh as ShareNum,
            test: create_test(),
            write: vec![(0, share.to_bytes()?)],
        });
    }
    let out = send_writes(
        servers,
        &writer,
        params,
        format,
        params.k as usize,
        1,
        ops,
        Vec::new(),
    )
    .await?;
    Ok((writer.write_cap(format), out))
}

/// Replaces the contents of the file with `contents` (a new version, seqnum = highest + 1).
pub async fn overwrite(
    servers: &[&dyn MutableServer],
    cap: &MutableWriteCap,
    contents: &[u8],
    params: &PublishParams,
) -> Result<PublishOutcome, MutableError> {
    let writer = WriterKeys::from_cap(cap);
    let mut map = map_update_for_write(servers, &writer).await;
    publish_with_map(servers, cap, &mut map, contents, params).await
}

/// Publishes `contents` as a new version against a map made earlier: every share the map saw is
/// tested against the checkstring it had then.
pub async fn publish_with_map(
    servers: &[&dyn MutableServer],
    cap: &MutableWriteCap,
    map: &mut ServerMap,
    contents: &[u8],
    params: &PublishParams,
) -> Result<PublishOutcome, MutableError> {
    check_params(params)?;
    if servers.is_empty() {
        return Err(MutableError::NoServers);
    }
    let writer = WriterKeys::from_cap(cap);
    let keypair = recover_private_key(servers, &writer, map).await?;
    let (k, n) = match map.versions().first() {
        Some(v) => (v.k, v.n),
        None => (params.k, params.n),
    };
    let seqnum = map
        .highest_seqnum()
        .unwrap_or(0)
        .checked_add(1)
        .ok_or(MutableError::InvalidParameters)?;
    let shares = encode_version(cap.format, k, n, seqnum, contents, &keypair)?;
    let mut ops = Vec::new();
    for (sh, share) in shares.iter().enumerate() {
        let bytes = share.to_bytes()?;
        let seen: Vec<_> = map.seen.iter().filter(|s| s.shnum as usize == sh).collect();
        if seen.is_empty() {
            ops.push(WriteOp {
                server: sh % servers.len(),
                shnum: sh as ShareNum,
                test: create_test(),
                write: vec![(0, bytes)],
            });
        } else {
            for s in seen {
                ops.push(WriteOp {
                    server: s.server,
                    shnum: s.shnum,
                    test: checkstring_test(s.checkstring()),
                    write: vec![(0, bytes.clone())],
                });
            }
        }
    }
    send_writes(
        servers,
        &writer,
        params,
        cap.format,
        k as usize,
        seqnum,
        ops,
        map.problems.clone(),
    )
    .await
}

/// Writes `data` at `offset` (at most the current size; the file grows if the write runs past
/// its end). MDMF files whose every share is healthy are updated in place, rewriting only the
/// touched segments; otherwise (SDMF, or missing/damaged shares) the whole file is re-published.
pub async fn update(
    servers: &[&dyn MutableServer],
    cap: &MutableWriteCap,
    offset: u64,
    data: &[u8],
    params: &PublishParams,
) -> Result<PublishOutcome, MutableError> {
    let writer = WriterKeys::from_cap(cap);
    let mut map = map_update_for_write(servers, &writer).await;
    update_with_map(servers, cap, &mut map, offset, data, params).await
}

/// [`update`] against a map made earlier.
pub async fn update_with_map(
    servers: &[&dyn MutableServer],
    cap: &MutableWriteCap,
    map: &mut ServerMap,
    offset: u64,
    data: &[u8],
    params: &PublishParams,
) -> Result<PublishOutcome, MutableError> {
    let writer = WriterKeys::from_cap(cap);
    let newest = map
        .versions()
        .into_iter()
        .next()
        .ok_or_else(|| map.no_versions())?;
    if offset > newest.datalen {
        return Err(MutableError::BadRange);
    }
    let end = offset
        .checked_add(data.len() as u64)
        .ok_or(MutableError::BadRange)?;
    if let Some(plan) = in_place_plan(map, &newest, cap.format) {
        if !data.is_empty() {
            let r =
                update_in_place(servers, &writer, map, &newest, plan, offset, data, params).await;
            return match r {
                Ok(o) => Ok(o),
                Err(e) => Err(explain_failure(servers, &writer, map, e).await),
            };
        }
    }
    // Full re-publish: read everything, splice, write a whole new version.
    let mut contents = match read_version(servers, &writer.reader, map, &newest, 0, u64::MAX).await
    {
        Ok(c) => c,
        Err(e) => return Err(explain_failure(servers, &writer, map, e).await),
    };
    if contents.len() < end as usize {
        contents.resize(end as usize, 0);
    }
    contents[offset as usize..end as usize].copy_from_slice(data);
    publish_with_map(servers, cap, map, &contents, params).await
}

/// A read during an update failed: if shares changed since the map was made, another writer got
/// there first, and that is the error to report.
async fn explain_failure(
    servers: &[&dyn MutableServer],
    writer: &WriterKeys,
    map: &ServerMap,
    err: MutableError,
) -> MutableError {
    if matches!(err, MutableError::UncoordinatedWrite { .. }) {
        return err;
    }
    let si = writer.reader.storage_index;
    let checks = map.seen.iter().map(|s| async move {
        let cs = s.checkstring();
        let now = match servers.get(s.server) {
            Some(srv) => srv.read(&si, s.shnum, 0, cs.len() as u64).await.ok(),
            None => None,
        };
        now.is_some_and(|now| now != cs)
            .then_some((s.server, s.shnum))
    });
    let changed: Vec<(usize, ShareNum)> = futures::future::join_all(checks)
        .await
        .into_iter()
        .flatten()
        .collect();
    if changed.is_empty() {
        err
    } else {
        MutableError::UncoordinatedWrite {
            refused: changed,
            written: 0,
        }
    }
}

/// The verified block-hash leaves of each share number, if the newest version is MDMF and every
/// share 0..N is present and verified with data at the standard offset.
fn in_place_plan(
    map: &ServerMap,
    newest: &SignedPrefix,
    format: MutableFormat,
) -> Option<Vec<Vec<hash::Hash>>> {
    if format != MutableFormat::Mdmf || newest.format != MutableFormat::Mdmf {
        return None;
    }
    let shares = map.shares_of(newest);
    let mut leaves = Vec::with_capacity(newest.n as usize);
    for sh in 0..newest.n as ShareNum {
        let s = shares.iter().find(|s| s.shnum == sh)?;
        if s.header.share_data.start != layout::MDMF_DATA_OFFSET {
            return None;
        }
        leaves.push(s.block_leaves.clone());
    }
    Some(leaves)
}

#[allow(clippy::too_many_arguments)]
async fn update_in_place(
    servers: &[&dyn MutableServer],
    writer: &WriterKeys,
    map: &mut ServerMap,
    newest: &SignedPrefix,
    old_leaves: Vec<Vec<hash::Hash>>,
    offset: u64,
    data: &[u8],
    params: &PublishParams,
) -> Result<PublishOutcome, MutableError> {
    let keypair = recover_private_key(servers, writer, map).await?;
    let og = newest.geometry()?;
    let end = offset + data.len() as u64;
    let ng = Geometry::new(
        MutableFormat::Mdmf,
        u64::from(newest.k),
        u64::from(newest.n),
        og.segsize,
        og.datalen.max(end),
    )?;
    let first = offset / ng.segsize;
    // When the file grows, `end` is the new length, so this is also the new last segment and the
    // old tail segment (whose length changes) is always among the touched ones.
    let last = (end - 1) / ng.segsize;
    let span_start = first * ng.segsize;
    let span_end = ((last + 1) * ng.segsize).min(ng.datalen);
    let mut buf = read_version(
        servers,
        &writer.reader,
        map,
        newest,
        span_start,
        span_end - span_start,
    )
    .await?;
    buf.resize((span_end - span_start) as usize, 0);
    let at = (offset - span_start) as usize;
    buf[at..at + data.len()].copy_from_slice(data);

    let codec = Codec::new(ng.k, ng.n)?;
    let mut touched = Vec::new();
    for seg in first..=last {
        let s = ((seg - first) * ng.segsize) as usize;
        let e = s + ng.segment_len(seg) as usize;
        let plain = buf.get(s..e).ok_or(MutableError::Internal("update span"))?;
        touched.push((
            seg,
            encode_segment(&ng, &codec, &writer.reader, seg, plain, fresh_salt())?,
        ));
    }
    let mut leaves = Vec::with_capacity(ng.n);
    for (sh, old) in old_leaves.iter().enumerate() {
        let mut l = Vec::with_capacity(ng.num_segments as usize);
        for seg in 0..ng.num_segments {
            if seg >= first && seg <= last {
                let es = &touched[(seg - first) as usize].1;
                l.push(block_leaf(MutableFormat::Mdmf, &es.salt, &es.blocks[sh]));
            } else {
                l.push(
                    *old.get(seg as usize)
                        .ok_or(MutableError::Internal("old leaves"))?,
                );
            }
        }
        leaves.push(l);
    }
    let seqnum = map
        .highest_seqnum()
        .unwrap_or(0)
        .checked_add(1)
        .ok_or(MutableError::InvalidParameters)?;
    let sv = SignedVersion::sign(&ng, seqnum, [0; 16], &leaves, &keypair)?;
    let enc_privkey = writer.encrypt_private_key(keypair.pkcs8_der());
    let bht_offset = layout::MDMF_DATA_OFFSET + ng.share_data_len();
    let mut ops = Vec::new();
    for s in map.shares_of(newest) {
        let sh = s.shnum as usize;
        let share = Share {
            prefix: sv.prefix.clone(),
            verification_key: keypair.spki_der().to_vec(),
            signature: sv.signature.clone(),
            share_hash_chain: sv.chain(sh),
            block_hash_tree: sv.block_trees[sh].clone(),
            blocks: Vec::new(),
            enc_privkey: enc_privkey.clone(),
        };
        let (header, meta) = share.mdmf_header_and_metadata(ng.share_data_len())?;
        let mut write = vec![(0, header), (layout::MDMF_HEADER_LEN as u64, meta)];
        for (seg, es) in &touched {
            let mut b = es.salt.to_vec();
            b.extend_from_slice(&es.blocks[sh]);
            write.push((
                layout::MDMF_DATA_OFFSET + seg * (ng.block_size + layout::SALT_LEN as u64),
                b,
            ));
        }
        write.push((bht_offset, share.block_hash_tree_bytes()));
        let cs = map
            .seen
            .iter()
            .find(|x| x.server == s.server && x.shnum == s.shnum)
            .map(|x| x.checkstring())
            .unwrap_or_else(|| s.header.prefix.checkstring());
        ops.push(WriteOp {
            server: s.server,
            shnum: s.shnum,
            test: checkstring_test(cs),
            write,
        });
    }
    send_writes(
        servers,
        writer,
        params,
        MutableFormat::Mdmf,
        ng.k,
        seqnum,
        ops,
        map.problems.clone(),
    )
    .await
}
