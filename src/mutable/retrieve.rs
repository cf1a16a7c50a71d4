//! Finding and reading versions of a mutable file (digest §4.5 version selection, §4.6
//! validation).
//!
//! [`map_update`] reads each share's header through the storage trait and fully validates its
//! metadata: the verification key must hash to the cap's fingerprint, the PSS signature must
//! cover the signed prefix, the share hash chain must lead from the share's block-tree root to
//! the signed root hash `R`, and the stored block hash tree must be internally consistent. A
//! share failing any check is reported as a [`ShareProblem`] with a typed [`ShareError`] and
//! otherwise ignored, so a forged share (for example a higher seqnum without a valid signature)
//! can neither hide the real newest version nor be read.
//!
//! [`retrieve`] picks the newest recoverable version — the highest `(seqnum, root_hash)` for
//! which k distinct shares yield valid blocks — and fetches and decodes only the segments that
//! cover the requested byte range. Every block is checked against its share's block tree before
//! it is decoded.

use super::encode::{block_leaf, decode_segment};
use super::keys::{verify_signature, ReaderKeys, SigningKeyPair, WriterKeys};
use super::layout::{self, ShareHeader, SignedPrefix, MAX_HEADER_LEN};
use super::storage::{MutableServer, ShareNum};
use super::{MutableError, ShareError, ShareProblem};
use crate::codec::Codec;
use crate::crypto::hash::{ssk_pubkey_fingerprint_hash, Hash};
use crate::crypto::hashtree;
use futures::stream::{FuturesUnordered, StreamExt};
use std::collections::BTreeSet;
use std::ops::Range;

/// A share whose first bytes were read: what a writer tests against.
#[derive(Clone, Debug)]
pub struct SeenShare {
    pub server: usize,
    pub shnum: ShareNum,
    /// Up to the first 123 bytes of the share, as read.
    pub raw_header: Vec<u8>,
}

impl SeenShare {
    /// The checkstring of the version this share holds (57 bytes SDMF, 41 MDMF; for bytes
    /// that are neither, what was read up to 57 bytes), for an equality test vector.
    pub fn checkstring(&self) -> Vec<u8> {
        let n = match self.raw_header.first() {
            Some(&layout::MDMF_VERSION) => layout::MDMF_CHECKSTRING_LEN,
            _ => layout::SDMF_CHECKSTRING_LEN,
        };
        self.raw_header[..n.min(self.raw_header.len())].to_vec()
    }
}

/// A share whose metadata passed every check.
#[derive(Clone, Debug)]
pub struct VerifiedShare {
    pub server: usize,
    pub shnum: ShareNum,
    pub header: ShareHeader,
    /// The verified leaf row of the share's block hash tree (one hash per segment).
    pub block_leaves: Vec<Hash>,
}

/// What a map update found on the servers.
#[derive(Clone, Debug, Default)]
pub struct ServerMap {
    pub seen: Vec<SeenShare>,
    pub verified: Vec<VerifiedShare>,
    pub problems: Vec<ShareProblem>,
    /// The signing key, once a writer recovered it from a share (see [`map_update_for_write`]).
    pub signing_key: Option<SigningKeyPair>,
}

impl ServerMap {
    /// The error for a map that holds no recoverable version: rejected shares and servers that
    /// did not answer are counted apart.
    pub fn no_versions(&self) -> MutableError {
        let mut unreachable = BTreeSet::new();
        let mut problems = 0;
        for p in &self.problems {
            match p.error {
                ShareError::Storage(_) => {
                    unreachable.insert(p.server);
                }
                _ => problems += 1,
            }
        }
        MutableError::NoVersions {
            problems,
            unreachable: unreachable.len(),
        }
    }

    /// The distinct verified versions, newest first: highest seqnum, ties broken by root hash
    /// (then by the rest of the signed prefix, so the order is total).
    pub fn versions(&self) -> Vec<SignedPrefix> {
        let set: BTreeSet<SignedPrefix> = self
            .verified
            .iter()
            .map(|v| v.header.prefix.clone())
            .collect();
        let mut v: Vec<SignedPrefix> = set.into_iter().collect();
        v.sort_by(|a, b| {
            (b.seqnum, b.root_hash, b.to_bytes()).cmp(&(a.seqnum, a.root_hash, a.to_bytes()))
        });
        v
    }

    /// The verified shares of one version.
    pub fn shares_of(&self, version: &SignedPrefix) -> Vec<&VerifiedShare> {
        self.verified
            .iter()
            .filter(|v| &v.header.prefix == version)
            .collect()
    }

    /// The highest seqnum among validly signed shares.
    pub fn highest_seqnum(&self) -> Option<u64> {
        self.verified.iter().map(|v| v.header.prefix.seqnum).max()
    }

    fn problem(&mut self, server: usize, shnum: ShareNum, error: ShareError) {
        self.problems.push(ShareProblem {
            server,
            shnum,
            error,
        });
    }
}

async fn read_range(
    server: &dyn MutableServer,
    si: &[u8; 16],
    shnum: ShareNum,
    r: &Range<u64>,
) -> Result<Vec<u8>, ShareError> {
    let len = r.end - r.start;
    let b = server.read(si, shnum, r.start, len).await?;
    if b.len() as u64 != len {
        return Err(ShareError::Layout(layout::LayoutError::Truncated {
            need: r.end,
            have: r.start + b.len() as u64,
        }));
    }
    Ok(b)
}

/// Validates one share's metadata (fingerprint, signature, share hash chain, block hash tree).
async fn verify_metadata(
    server: &dyn MutableServer,
    si: &[u8; 16],
    shnum: ShareNum,
    raw_header: &[u8],
    fingerprint: &Hash,
) -> Result<(ShareHeader, Vec<Hash>), ShareError> {
    let header = ShareHeader::parse(raw_header)?;
    if shnum as usize >= header.geometry.n {
        return Err(ShareError::ShareNumberOutOfRange);
    }
    let vk = read_range(server, si, shnum, &header.verification_key).await?;
    if &ssk_pubkey_fingerprint_hash(&vk) != fingerprint {
        return Err(ShareError::WrongFingerprint);
    }
    let sig = read_range(server, si, shnum, &header.signature).await?;
    verify_signature(&vk, &header.prefix_bytes, &sig).map_err(|_| ShareError::BadSignature)?;
    let chain =
        layout::parse_hash_chain(&read_range(server, si, shnum, &header.share_hash_chain).await?)?;
    let bht = layout::parse_hashes(&read_range(server, si, shnum, &header.block_hash_tree).await?)?;
    let block_root = *bht.first().ok_or(ShareError::Layout(
        layout::LayoutError::BadBlockHashTreeLength {
            got: 0,
            expected: 32,
        },
    ))?;
    hashtree::verify_leaf(
        &header.prefix.root_hash,
        header.geometry.n,
        shnum as usize,
        &block_root,
        &chain,
    )
    .map_err(ShareError::BadShareHashChain)?;
    let leaves =
        hashtree::verify_full_tree(&block_root, header.geometry.num_segments as usize, &bht)
            .map_err(ShareError::BadBlockHashTree)?;
    Ok((header, leaves))
}

/// What one share's mapping produced.
enum ShareOutcome {
    Verified(SeenShare, Box<ShareHeader>, Vec<Hash>),
    Rejected(Option<SeenShare>, ShareProblem),
}

/// Maps one server: lists its shares, then reads and validates each (shares concurrently).
async fn map_server(
    idx: usize,
    server: &dyn MutableServer,
    si: &[u8; 16],
    fingerprint: &Hash,
) -> Vec<ShareOutcome> {
    let shnums = match server.list_shares(si).await {
        Ok(s) => s,
        Err(e) => {
            // No share number to blame: report against u32::MAX ("the server").
            return vec![ShareOutcome::Rejected(
                None,
                ShareProblem {
                    server: idx,
                    shnum: ShareNum::MAX,
                    error: ShareError::Storage(e),
                },
            )];
        }
    };
    let per_share = shnums.into_iter().map(|shnum| async move {
        let raw = match server.read(si, shnum, 0, MAX_HEADER_LEN as u64).await {
            Ok(r) => r,
            Err(e) => {
                return ShareOutcome::Rejected(
                    None,
                    ShareProblem {
                        server: idx,
                        shnum,
                        error: ShareError::Storage(e),
                    },
                )
            }
        };
        let seen = SeenShare {
            server: idx,
            shnum,
            raw_header: raw,
        };
        match verify_metadata(server, si, shnum, &seen.raw_header, fingerprint).await {
            Ok((header, leaves)) => ShareOutcome::Verified(seen, Box::new(header), leaves),
            Err(error) => ShareOutcome::Rejected(
                Some(seen),
                ShareProblem {
                    server: idx,
                    shnum,
                    error,
                },
            ),
        }
    });
    futures::future::join_all(per_share).await
}

/// Reads and validates the header and metadata of every share of the file on every server. All
/// servers are queried concurrently; the map lists results in server order (then share order),
/// so it does not depend on which server answered first.
pub async fn map_update(servers: &[&dyn MutableServer], reader: &ReaderKeys) -> ServerMap {
    let si = &reader.storage_index;
    let fingerprint = &reader.fingerprint;
    let all = futures::future::join_all(
        servers
            .iter()
            .enumerate()
            .map(|(idx, server)| map_server(idx, *server, si, fingerprint)),
    )
    .await;
    let mut map = ServerMap::default();
    for outcome in all.into_iter().flatten() {
        match outcome {
            ShareOutcome::Verified(seen, header, block_leaves) => {
                map.verified.push(VerifiedShare {
                    server: seen.server,
                    shnum: seen.shnum,
                    header: *header,
                    block_leaves,
                });
                map.seen.push(seen);
            }
            ShareOutcome::Rejected(seen, problem) => {
                if let Some(seen) = seen {
                    map.seen.push(seen);
                }
                map.problems.push(problem);
            }
        }
    }
    map
}

/// Fetches and checks segment `seg` of a verified share: returns (salt, block). Public for the
/// checker, which reads every block of every share.
pub async fn fetch_block(
    server: &dyn MutableServer,
    si: &[u8; 16],
    share: &VerifiedShare,
    seg: u64,
) -> Result<([u8; 16], Vec<u8>), ShareError> {
    let h = &share.header;
    let r = h
        .segment_range(seg)
        .ok_or(ShareError::Layout(layout::LayoutError::BadOffsets(
            "segment",
        )))?;
    let raw = read_range(server, si, share.shnum, &r).await?;
    let sb = layout::split_block(h.prefix.format, &raw)?;
    let salt = sb.salt.unwrap_or(h.prefix.iv);
    let leaf = share
        .block_leaves
        .get(seg as usize)
        .ok_or(ShareError::BadBlockHash { segment: seg })?;
    if &block_leaf(h.prefix.format, &salt, &sb.data) != leaf {
        return Err(ShareError::BadBlockHash { segment: seg });
    }
    Ok((salt, sb.data))
}

/// The result of a read.
#[derive(Clone, Debug)]
pub struct Retrieved {
    pub data: Vec<u8>,
    /// The version read.
    pub version: SignedPrefix,
    /// Every share rejected along the way, with why.
    pub problems: Vec<ShareProblem>,
}

/// Reads `[offset, offset+len)` (clamped to the file) of one version from its verified shares.
/// Shares that serve a bad block are reported in `map.problems` and not used again.
pub async fn read_version(
    servers: &[&dyn MutableServer],
    reader: &ReaderKeys,
    map: &mut ServerMap,
    version: &SignedPrefix,
    offset: u64,
    len: u64,
) -> Result<Vec<u8>, MutableError> {
    let g = version.geometry()?;
    let start = offset.min(g.datalen);
    let end = offset.saturating_add(len).min(g.datalen);
    if start >= end {
        return Ok(Vec::new());
    }
    let codec = Codec::new(g.k, g.n)?;
    let first = start / g.segsize;
    let last = (end - 1) / g.segsize;
    // One candidate per share number (copies of a share are interchangeable).
    let mut candidates: Vec<VerifiedShare> = Vec::new();
    for s in map.shares_of(version) {
        if !candidates.iter().any(|c| c.shnum == s.shnum) {
            candidates.push(s.clone());
        }
    }
    let mut bad: BTreeSet<usize> = BTreeSet::new();
    let mut out = Vec::with_capacity((end - start) as usize);
    for seg in first..=last {
        // k fetches in flight; each failure is replaced by the next untried candidate, so the
        // segment is decoded from the first k shares that answer with a valid block.
        let mut got: Vec<(usize, Vec<u8>)> = Vec::with_capacity(g.k);
        let mut salt = version.iv;
        let mut next = 0usize;
        let mut in_flight = FuturesUnordered::new();
        loop {
            while in_flight.len() + got.len() < g.k && next < candidates.len() {
                let ci = next;
                next += 1;
                if bad.contains(&ci) {
                    continue;
                }
                let c = &candidates[ci];
                let si = &reader.storage_index;
                match servers.get(c.server) {
                    Some(server) => {
                        in_flight.push(async move { (ci, fetch_block(*server, si, c, seg).await) })
                    }
                    None => {
                        bad.insert(ci);
                    }
                }
            }
            let Some((ci, r)) = in_flight.next().await else {
                break;
            };
            let c = &candidates[ci];
            match r {
                Ok((s, b)) => {
                    salt = s;
                    got.push((c.shnum as usize, b));
                }
                Err(e) => {
                    bad.insert(ci);
                    map.problem(c.server, c.shnum, e);
                }
            }
        }
        drop(in_flight);
        if got.len() < g.k {
            return Err(MutableError::NotEnoughShares {
                needed: g.k,
                found: got.len(),
            });
        }
        let blocks: Vec<(usize, &[u8])> = got.iter().map(|(i, b)| (*i, b.as_slice())).collect();
        let plain = decode_segment(&g, &codec, reader, seg, &salt, &blocks)?;
        let seg_start = seg * g.segsize;
        let lo = (start.max(seg_start) - seg_start) as usize;
        let hi = (end.min(seg_start + plain.len() as u64) - seg_start) as usize;
        out.extend_from_slice(
            plain
                .get(lo..hi)
                .ok_or(MutableError::Internal("segment slice"))?,
        );
    }
    Ok(out)
}

/// Reads the newest recoverable version from an existing map.
pub async fn retrieve_with_map(
    servers: &[&dyn MutableServer],
    reader: &ReaderKeys,
    map: &mut ServerMap,
    range: Option<(u64, u64)>,
) -> Result<Retrieved, MutableError> {
    let versions = map.versions();
    if versions.is_empty() {
        return Err(map.no_versions());
    }
    let (offset, len) = range.unwrap_or((0, u64::MAX));
    let mut last_err = None;
    for v in versions {
        match read_version(servers, reader, map, &v, offset, len).await {
            Ok(data) => {
                return Ok(Retrieved {
                    data,
                    version: v,
                    problems: map.problems.clone(),
                })
            }
            Err(e) => last_err = Some(e),
        }
    }
    Err(last_err.unwrap_or_else(|| map.no_versions()))
}

/// Reads the newest recoverable version of the file (or a byte range of it).
pub async fn retrieve(
    servers: &[&dyn MutableServer],
    reader: &ReaderKeys,
    range: Option<(u64, u64)>,
) -> Result<Retrieved, MutableError> {
    let mut map = map_update(servers, reader).await;
    retrieve_with_map(servers, reader, &mut map, range).await
}

/// A map update for a writer: also recovers the signing key from the shares (as Tahoe's
/// MODE_WRITE map update fetches the encrypted private key), so a later publish against this map
/// does not depend on the shares staying unchanged.
pub async fn map_update_for_write(
    servers: &[&dyn MutableServer],
    writer: &WriterKeys,
) -> ServerMap {
    let mut map = map_update(servers, &writer.reader).await;
    if let Ok(k) = recover_private_key(servers, writer, &mut map).await {
        map.signing_key = Some(k);
    }
    map
}

/// Recovers the signing key from the newest verified shares: decrypts the encrypted private key
/// with the writekey and checks it hashes back to the writekey (the exact bytes are kept).
pub async fn recover_private_key(
    servers: &[&dyn MutableServer],
    writer: &WriterKeys,
    map: &mut ServerMap,
) -> Result<SigningKeyPair, MutableError> {
    if let Some(k) = &map.signing_key {
        return Ok(k.clone());
    }
    let si = writer.reader.storage_index;
    for v in map.versions() {
        let shares: Vec<VerifiedShare> = map.shares_of(&v).into_iter().cloned().collect();
        for s in shares {
            let Some(server) = servers.get(s.server) else {
                continue;
            };
            let r = read_range(*server, &si, s.shnum, &s.header.enc_privkey)
                .await
                .and_then(|enc| {
                    writer
                        .decrypt_private_key(&enc)
                        .map_err(|_| ShareError::BadPrivateKey)
                });
            match r {
                Ok(k) => {
                    map.signing_key = Some(k.clone());
                    return Ok(k);
                }
                Err(e) => map.problem(s.server, s.shnum, e),
            }
        }
    }
    Err(MutableError::NoPrivateKey)
}
