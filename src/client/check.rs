//! Check, verify and repair of files and directories, after Tahoe's `immutable/checker.py`,
//! `immutable/repairer.py`, `mutable/checker.py` and `mutable/repairer.py`, and deep-check over
//! a directory tree.
//!
//! Immutable (CHK) files:
//!
//! * **check** asks every server of the permuted list which shares of the storage index it
//!   holds. Nothing is read, so a corrupt share counts as good.
//! * **verify** additionally reads every listed share completely and validates it: header, the
//!   share hash chain to the UEB's share root, the UEB against the cap's UEB hash, the whole
//!   block hash tree and every block. A share failing any check is reported corrupt, excluded
//!   from the counts, and a corruption advisory is sent to its server.
//! * **repair** (only when the file is unhealthy but recoverable) downloads and validates the
//!   plaintext, re-encodes it with the cap's own key and segment size and uploads it; the
//!   uploader's survey finds the shares already on the grid and writes only the missing share
//!   numbers, placing them on servers by the usual happiness rules. The re-encoding must give the
//!   same cap (same UEB), which is asserted before reporting success; then the file is checked
//!   again.
//!
//! Mutable files (and directories, which are mutable files): check is a servermap update, which
//! already validates signature, share hash chain and block hash tree of every share; verify
//! also reads every block of every share and checks it against the share's verified block
//! tree; repair republishes the newest recoverable contents under a new sequence number,
//! which writes all N shares (needs the write cap). Healthy needs a single version with N shares.
//!
//! Deep-check walks a tree depth first in name order, checks every node once (a node linked
//! twice, or a cycle, is visited once, keyed by storage index) and aggregates the results.
//!
//! Health follows Tahoe: *healthy* when all N distinct share numbers are good, *recoverable*
//! when at least k are, *needs rebalancing* when fewer servers hold good shares than there are
//! distinct good shares. LIT files hold no shares and are always healthy.
//!
//! Invariants: a verify never trusts a byte before it has been checked against the cap's chain;
//! caps and keys never appear in errors or reports (only the storage index, in base32).

use super::directory::{child_cap, DirectoryClient};
use super::immutable::{
    self as imm, download_bytes, upload_bytes, DownloadError, DownloadOptions, UploadError,
    UploadOptions,
};
use super::mutable::{is_corruption, MutableClient, NetMutableServer};
use super::secrets::ClientSecrets;
use super::ServerSet;
use crate::cap::{Cap, ChkCap, NodeCap};
use crate::crypto::hash::{self, Hash};
use crate::crypto::hashtree;
use crate::grid::happiness::servers_of_happiness;
use crate::immutable::decode::{self, ShareFault};
use crate::immutable::{EncodingParams, KeySource};
use crate::mutable::keys::{ReaderKeys, WriterKeys};
use crate::mutable::retrieve;
use crate::mutable::storage::MutableServer;
use crate::mutable::MutableError;
use crate::protocol::StorageIndex;
use std::collections::{BTreeMap, BTreeSet};
use thiserror::Error;
use tokio::task::JoinSet;

/// What to do besides listing shares.
#[derive(Clone, Debug, Default)]
pub struct CheckOptions {
    /// Read and validate every share completely.
    pub verify: bool,
    /// Repair an unhealthy, recoverable file.
    pub repair: bool,
    /// `shares.happy` for the repair upload (clamped to N; 0 means N's default of Tahoe, 7).
    pub happy: usize,
}

/// A share found corrupt by verify.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CorruptShare {
    pub server_id: String,
    pub shnum: u16,
    /// Why the share failed validation.
    pub reason: String,
}

/// The state of one file on the grid.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CheckResults {
    /// `None` for LIT files.
    pub storage_index: Option<StorageIndex>,
    pub needed: usize,
    pub total: usize,
    /// Share number → servers holding a good copy.
    pub sharemap: BTreeMap<u16, BTreeSet<String>>,
    /// Good share copies (a share on two servers counts twice).
    pub good_shares: usize,
    /// Distinct good share numbers.
    pub distinct_shares: usize,
    /// Servers holding at least one good share.
    pub good_hosts: usize,
    /// Servers-of-happiness of the good shares.
    pub happiness: usize,
    pub corrupt: Vec<CorruptShare>,
    /// Servers that did not answer.
    pub servers_failed: Vec<String>,
    /// Servers asked.
    pub servers_queried: usize,
    pub healthy: bool,
    pub recoverable: bool,
    pub needs_rebalancing: bool,
    /// Whether every share was read and validated.
    pub verified: bool,
    /// Mutable files: distinct versions seen, and how many of them are recoverable.
    pub versions: usize,
    pub recoverable_versions: usize,
}

impl CheckResults {
    /// Tahoe's one-line summary.
    pub fn summary(&self) -> String {
        if self.healthy {
            "Healthy".into()
        } else if self.recoverable {
            format!(
                "Not Healthy: {} shares (enc {}-of-{})",
                self.distinct_shares, self.needed, self.total
            )
        } else {
            format!(
                "Not Healthy: {} shares (enc {}-of-{}), Unrecoverable",
                self.distinct_shares, self.needed, self.total
            )
        }
    }
}

/// What a check-and-repair did.
#[derive(Clone, Debug, Default)]
pub struct CheckAndRepairResults {
    pub pre: CheckResults,
    pub repair_attempted: bool,
    pub repair_successful: bool,
    /// Shares the repair wrote (mutable: all N shares of the republished version).
    pub shares_pushed: usize,
    /// Why the repair failed, when it did (the post-repair check still runs).
    pub repair_error: Option<String>,
    /// The check after repair (`None` when no repair was attempted).
    pub post: Option<CheckResults>,
}

impl CheckAndRepairResults {
    /// The results that describe the file now.
    pub fn current(&self) -> &CheckResults {
        self.post.as_ref().unwrap_or(&self.pre)
    }
}

/// Why a check or repair failed. No variant carries key material.
#[derive(Debug, Error)]
pub enum CheckError {
    #[error("not a file cap this checker handles")]
    UnsupportedCap,
    #[error("repair download failed: {0}")]
    Download(#[from] DownloadError),
    #[error("repair upload failed: {0}")]
    Upload(#[from] UploadError),
    #[error("mutable file operation failed: {0}")]
    Mutable(#[from] MutableError),
    #[error("a read-only or verify cap cannot repair a mutable file")]
    MutableReadOnly,
    #[error("repair re-encoding gave a different file (UEB mismatch); nothing usable was written")]
    ReencodeMismatch,
}

/// Lists the shares of `si` on every server (concurrently), in permuted order.
async fn list_shares(
    servers: &ServerSet,
    si: &StorageIndex,
) -> (Vec<(usize, String, BTreeSet<u16>)>, Vec<String>, usize) {
    let permuted = servers.permuted(si, &[]);
    let mut set = JoinSet::new();
    for (i, s) in permuted.iter().enumerate() {
        let (s, si) = (s.clone(), *si);
        set.spawn(async move {
            let r = s.client.list_immutable_shares(&si).await;
            (i, s.desc.server_id.clone(), r)
        });
    }
    let mut found = Vec::new();
    let mut failed = Vec::new();
    while let Some(j) = set.join_next().await {
        match j {
            Ok((i, id, Ok(shares))) => {
                found.push((i, id, shares.into_iter().map(u16::from).collect()))
            }
            Ok((_, id, Err(_))) => failed.push(id),
            Err(_) => {}
        }
    }
    found.sort_by_key(|(i, _, _)| *i);
    failed.sort();
    (found, failed, permuted.len())
}

/// Reads share `shnum` of `si` completely and validates it against `cap`.
pub async fn verify_share(
    client: crate::protocol::client::StorageClient,
    si: StorageIndex,
    cap: ChkCap,
    shnum: u16,
) -> Result<(), ShareFault> {
    let (share, info) = imm::open_share(client.clone(), si, cap, 0, shnum).await?;
    let geom = &info.geom;
    let nseg = geom.num_segments;
    let o = share.layout.offsets.clone();
    // The whole block hash tree: every leaf is checked against the verified root below.
    let tree_len = hashtree::tree_size(nseg as usize) as u64 * 32;
    if o.block_hashes + tree_len > o.share_hashes {
        return Err(ShareFault::RegionsTooSmall);
    }
    let tree_bytes = imm::read_exact(&client, &si, shnum, o.block_hashes, tree_len).await?;
    let nodes: BTreeMap<usize, Hash> = tree_bytes
        .chunks_exact(32)
        .enumerate()
        .filter_map(|(i, c)| <[u8; 32]>::try_from(c).ok().map(|h| (i, h)))
        .collect();
    let mut offset = o.data;
    for seg in 0..nseg {
        let len = if seg + 1 == nseg {
            geom.tail_block_size
        } else {
            geom.block_size
        };
        if offset + len > o.plaintext_hash_tree {
            return Err(ShareFault::RegionsTooSmall);
        }
        let block = imm::read_exact(&client, &si, shnum, offset, len).await?;
        decode::check_block(
            &share.block_root,
            nseg,
            seg,
            &hash::block_hash(&block),
            &nodes,
        )?;
        offset += len;
    }
    Ok(())
}

fn tally(
    results: &mut CheckResults,
    sharemap: BTreeMap<u16, BTreeSet<String>>,
    corrupt: Vec<CorruptShare>,
) {
    results.good_shares = sharemap.values().map(BTreeSet::len).sum();
    results.distinct_shares = sharemap.len();
    results.good_hosts = sharemap.values().flatten().collect::<BTreeSet<_>>().len();
    results.happiness = servers_of_happiness(&sharemap);
    results.healthy = results.distinct_shares >= results.total;
    results.recoverable = results.distinct_shares >= results.needed;
    results.needs_rebalancing = results.good_hosts < results.distinct_shares;
    results.sharemap = sharemap;
    results.corrupt = corrupt;
}

/// Checks (and with `verify`, validates) the CHK file `cap`.
pub async fn check_chk(servers: &ServerSet, cap: &ChkCap, verify: bool) -> CheckResults {
    let si = hash::storage_index_hash(&cap.key);
    let (found, failed, queried) = list_shares(servers, &si).await;
    let mut results = CheckResults {
        storage_index: Some(si),
        needed: cap.needed as usize,
        total: cap.total as usize,
        servers_failed: failed,
        servers_queried: queried,
        verified: verify,
        ..CheckResults::default()
    };
    let by_id: BTreeMap<String, _> = servers
        .servers
        .iter()
        .map(|s| (s.desc.server_id.clone(), s.clone()))
        .collect();
    let mut sharemap: BTreeMap<u16, BTreeSet<String>> = BTreeMap::new();
    let mut corrupt = Vec::new();
    if verify {
        let mut set = JoinSet::new();
        for (_, id, shares) in &found {
            let Some(handle) = by_id.get(id) else {
                continue;
            };
            for &sh in shares {
                let (client, id, cap) = (handle.client.clone(), id.clone(), cap.clone());
                set.spawn(async move {
                    let r = verify_share(client.clone(), si, cap, sh).await;
                    if let (Err(f), Ok(s8)) = (&r, u8::try_from(sh)) {
                        // An unavailable share is not evidence of corruption.
                        if *f != ShareFault::Unavailable {
                            let _ = client
                                .advise_corrupt_immutable(&si, s8, &f.to_string())
                                .await;
                        }
                    }
                    (id, sh, r)
                });
            }
        }
        while let Some(j) = set.join_next().await {
            match j {
                Ok((id, sh, Ok(()))) => {
                    sharemap.entry(sh).or_default().insert(id);
                }
                Ok((server_id, shnum, Err(fault))) => corrupt.push(CorruptShare {
                    server_id,
                    shnum,
                    reason: fault.to_string(),
                }),
                Err(_) => {}
            }
        }
        corrupt.sort_by(|a, b| (a.shnum, &a.server_id).cmp(&(b.shnum, &b.server_id)));
    } else {
        for (_, id, shares) in found {
            for sh in shares {
                sharemap.entry(sh).or_default().insert(id.clone());
            }
        }
    }
    tally(&mut results, sharemap, corrupt);
    // An immutable file has one version; Tahoe counts it recoverable or not.
    results.versions = usize::from(results.distinct_shares > 0);
    results.recoverable_versions = usize::from(results.recoverable);
    results
}

/// Checks any immutable file cap (LIT is always healthy).
pub async fn check(
    servers: &ServerSet,
    cap: &NodeCap,
    verify: bool,
) -> Result<CheckResults, CheckError> {
    match cap {
        NodeCap::Lit(_) => Ok(CheckResults {
            healthy: true,
            recoverable: true,
            verified: verify,
            ..CheckResults::default()
        }),
        NodeCap::Chk(c) => Ok(check_chk(servers, c, verify).await),
        _ => Err(CheckError::UnsupportedCap),
    }
}

/// Checks `cap` and, with `opts.repair`, repairs it when unhealthy but recoverable.
pub async fn check_and_repair(
    servers: &ServerSet,
    secrets: &ClientSecrets,
    cap: &NodeCap,
    opts: &CheckOptions,
) -> Result<CheckAndRepairResults, CheckError> {
    let pre = check(servers, cap, opts.verify).await?;
    let mut out = CheckAndRepairResults {
        pre,
        ..CheckAndRepairResults::default()
    };
    let NodeCap::Chk(chk) = cap else {
        return Ok(out);
    };
    if !opts.repair || out.pre.healthy || !out.pre.recoverable {
        return Ok(out);
    }
    out.repair_attempted = true;
    match repair_chk(servers, secrets, cap, chk, opts).await {
        Ok(pushed) => out.shares_pushed = pushed,
        Err(e) => out.repair_error = Some(e.to_string()),
    }
    let post = check_chk(servers, chk, opts.verify).await;
    out.repair_successful = out.repair_error.is_none() && post.healthy;
    out.post = Some(post);
    Ok(out)
}

/// Re-encodes the file with its own key and segment size and uploads it; the upload writes
/// only the share numbers no live server holds. Returns the shares written.
async fn repair_chk(
    servers: &ServerSet,
    secrets: &ClientSecrets,
    cap: &NodeCap,
    chk: &ChkCap,
    opts: &CheckOptions,
) -> Result<usize, CheckError> {
    let (plain, _report) = download_bytes(servers, cap, &DownloadOptions::default()).await?;
    let total = chk.total as usize;
    let happy = if opts.happy == 0 { 7 } else { opts.happy };
    // The segment size must be the file's own (from a validated UEB) for the UEB, hence the
    // cap, to come out identical; any share that was found will have given it.
    let max_segment_size = repair_segment_size(servers, chk)
        .await
        .unwrap_or(128 * 1024);
    let params = EncodingParams {
        needed: chk.needed as usize,
        happy: happy.clamp(1, total),
        total,
        max_segment_size,
    };
    let mut uopts = UploadOptions::convergent(params, b"");
    uopts.key = KeySource::Fixed(chk.key);
    let r = upload_bytes(servers, secrets, plain, &uopts).await?;
    if r.cap != *cap {
        return Err(CheckError::ReencodeMismatch);
    }
    Ok(r.pushed_shares)
}

/// The file's segment size, read from the first share whose UEB validates.
async fn repair_segment_size(servers: &ServerSet, chk: &ChkCap) -> Option<u64> {
    let si = hash::storage_index_hash(&chk.key);
    let (found, _, _) = list_shares(servers, &si).await;
    let by_id: BTreeMap<String, _> = servers
        .servers
        .iter()
        .map(|s| (s.desc.server_id.clone(), s.clone()))
        .collect();
    for (_, id, shares) in found {
        let Some(h) = by_id.get(&id) else { continue };
        for sh in shares {
            if let Ok((_, info)) = imm::open_share(h.client.clone(), si, chk.clone(), 0, sh).await {
                return Some(info.geom.segment_size);
            }
        }
    }
    None
}

// ------------------------------------------------------------------------------------------
// Mutable files
// ------------------------------------------------------------------------------------------

/// Checks the mutable file of `reader` (after Tahoe's `mutable/checker.py`): a servermap update
/// validates every share's signature, hash chain and block hash tree. With `verify`, the newest
/// recoverable version is also read completely, which checks every block it decodes from.
///
/// The counts describe the newest recoverable version (or the newest version when none is
/// recoverable). Healthy: one version only, with all N share numbers.
pub async fn check_mutable(servers: &ServerSet, reader: &ReaderKeys, verify: bool) -> CheckResults {
    let si = reader.storage_index;
    let handles = servers.permuted(&si, &[]);
    let net: Vec<NetMutableServer> = handles
        .iter()
        .map(|h| NetMutableServer { handle: h.clone() })
        .collect();
    let refs: Vec<&dyn MutableServer> = net.iter().map(|s| s as &dyn MutableServer).collect();
    let map = retrieve::map_update(&refs, reader).await;
    let versions = map.versions();
    let distinct_of = |v| {
        map.shares_of(v)
            .iter()
            .map(|s| s.shnum)
            .collect::<BTreeSet<_>>()
    };
    let recoverable_versions = versions
        .iter()
        .filter(|v| distinct_of(v).len() >= usize::from(v.k))
        .count();
    let best = versions
        .iter()
        .find(|v| distinct_of(v).len() >= usize::from(v.k))
        .or(versions.first())
        .cloned();
    // Verify: every block of every validly signed share, against the share's verified block
    // tree leaves. A share failing is corrupt like one the map update rejected.
    let mut block_faults: Vec<(usize, u32, String)> = Vec::new();
    if verify {
        let checks = map.verified.iter().map(|share| {
            let server = refs.get(share.server).copied();
            async move {
                let server = server?;
                for seg in 0..share.block_leaves.len() as u64 {
                    if let Err(e) = retrieve::fetch_block(server, &si, share, seg).await {
                        return Some((share.server, share.shnum, e.to_string()));
                    }
                }
                None
            }
        });
        block_faults = futures::future::join_all(checks)
            .await
            .into_iter()
            .flatten()
            .collect();
    }
    let id_of = |i: usize| handles.get(i).map(|h| h.desc.server_id.clone());
    let mut corrupt = Vec::new();
    let mut bad: BTreeSet<(usize, u16)> = BTreeSet::new();
    let faults = map
        .problems
        .iter()
        .filter(|p| is_corruption(p))
        .map(|p| (p.server, p.shnum, p.error.to_string()))
        .chain(block_faults);
    for (server, shnum32, why) in faults {
        let Some(server_id) = id_of(server) else {
            continue;
        };
        let (Ok(shnum), Ok(sh8)) = (u16::try_from(shnum32), u8::try_from(shnum32)) else {
            continue;
        };
        if bad.insert((server, shnum)) {
            if let Some(h) = handles.get(server) {
                let reason = format!("lafs check: mutable share failed verification: {why}");
                let _ = h.client.advise_corrupt_mutable(&si, sh8, &reason).await;
            }
            corrupt.push(CorruptShare {
                server_id,
                shnum,
                reason: why,
            });
        }
    }
    let mut sharemap: BTreeMap<u16, BTreeSet<String>> = BTreeMap::new();
    let (mut needed, mut total) = (0, 0);
    if let Some(b) = &best {
        needed = usize::from(b.k);
        total = usize::from(b.n);
        for s in map.shares_of(b) {
            let Ok(shnum) = u16::try_from(s.shnum) else {
                continue;
            };
            if bad.contains(&(s.server, shnum)) {
                continue;
            }
            if let Some(id) = id_of(s.server) {
                sharemap.entry(shnum).or_default().insert(id);
            }
        }
    }
    let mut results = CheckResults {
        storage_index: Some(si),
        needed,
        total,
        servers_failed: Vec::new(),
        servers_queried: handles.len(),
        verified: verify,
        versions: versions.len(),
        recoverable_versions,
        ..CheckResults::default()
    };
    tally(&mut results, sharemap, corrupt);
    results.recoverable = best.is_some() && results.distinct_shares >= needed;
    results.healthy = results.healthy && versions.len() == 1 && total > 0;
    // Tahoe's mutable rule: fewer hosts for the best version than N shares.
    results.needs_rebalancing = results.recoverable && results.good_hosts < total;
    results
}

/// Checks a mutable file and, with `opts.repair` and a write cap, repairs it when it is
/// unhealthy but recoverable by publishing the newest recoverable contents again (a new
/// sequence number, as Tahoe's repairer does), which places all N shares.
pub async fn check_and_repair_mutable(
    client: &MutableClient,
    cap: &NodeCap,
    opts: &CheckOptions,
) -> Result<CheckAndRepairResults, CheckError> {
    let (reader, writecap) = match cap {
        NodeCap::MutableWrite(w) => (WriterKeys::from_cap(w).reader, Some(w)),
        NodeCap::MutableRead(r) => (ReaderKeys::from_cap(r), None),
        _ => return Err(CheckError::UnsupportedCap),
    };
    let pre = check_mutable(client.servers(), &reader, opts.verify).await;
    let mut out = CheckAndRepairResults {
        pre,
        ..CheckAndRepairResults::default()
    };
    if !opts.repair || out.pre.healthy || !out.pre.recoverable {
        return Ok(out);
    }
    let w = writecap.ok_or(CheckError::MutableReadOnly)?;
    out.repair_attempted = true;
    let republish = async {
        let (contents, mut map) = client.read_for_write(w).await?;
        client.publish_against(w, &mut map, &contents.data).await
    };
    match republish.await {
        Ok(_) => out.shares_pushed = out.pre.total,
        Err(e) => out.repair_error = Some(e.to_string()),
    }
    let post = check_mutable(client.servers(), &reader, opts.verify).await;
    out.repair_successful = out.repair_error.is_none() && post.healthy;
    out.post = Some(post);
    Ok(out)
}

// ------------------------------------------------------------------------------------------
// Any node, and deep-check over a directory tree
// ------------------------------------------------------------------------------------------

/// Checks (and repairs) the file or directory node `cap`: immutable nodes through the CHK
/// checker, mutable ones (files and directories) through the mutable checker.
pub async fn check_node(
    dirs: &DirectoryClient,
    secrets: &ClientSecrets,
    cap: &Cap,
    opts: &CheckOptions,
) -> Result<CheckAndRepairResults, CheckError> {
    let node = match cap {
        Cap::File(n) | Cap::Dir(n) => n,
        Cap::Unknown(_) => return Err(CheckError::UnsupportedCap),
    };
    match node {
        NodeCap::Lit(_) | NodeCap::Chk(_) => {
            check_and_repair(dirs.files().servers(), secrets, node, opts).await
        }
        NodeCap::MutableWrite(_) | NodeCap::MutableRead(_) => {
            check_and_repair_mutable(dirs.files(), node, opts).await
        }
        NodeCap::ChkVerifier(_) | NodeCap::MutableVerifier(_) => Err(CheckError::UnsupportedCap),
    }
}

/// One node visited by a deep-check.
#[derive(Clone, Debug)]
pub struct DeepCheckEntry {
    /// Path from the root (`""` for the root), components joined by `/`.
    pub path: String,
    pub is_directory: bool,
    pub results: Result<CheckAndRepairResults, String>,
}

/// What a deep-check found over a tree.
#[derive(Clone, Debug, Default)]
pub struct DeepCheckResults {
    pub entries: Vec<DeepCheckEntry>,
    /// Directories whose children could not be listed: (path, why).
    pub list_errors: Vec<(String, String)>,
}

impl DeepCheckResults {
    pub fn objects_checked(&self) -> usize {
        self.entries.len()
    }
    fn count(&self, f: impl Fn(&CheckAndRepairResults) -> bool) -> usize {
        self.entries
            .iter()
            .filter(|e| e.results.as_ref().is_ok_and(&f))
            .count()
    }
    /// Healthy before any repair.
    pub fn healthy_pre(&self) -> usize {
        self.count(|r| r.pre.healthy)
    }
    /// Healthy now (after repair when one ran).
    pub fn healthy_post(&self) -> usize {
        self.count(|r| r.current().healthy)
    }
    pub fn unrecoverable(&self) -> usize {
        self.count(|r| !r.current().recoverable)
    }
    pub fn repairs_attempted(&self) -> usize {
        self.count(|r| r.repair_attempted)
    }
    pub fn repairs_successful(&self) -> usize {
        self.count(|r| r.repair_successful)
    }
    pub fn corrupt_shares(&self) -> usize {
        self.entries
            .iter()
            .filter_map(|e| e.results.as_ref().ok())
            .map(|r| r.pre.corrupt.len())
            .sum()
    }
}

/// A key identifying a node for cycle detection (its storage index, or its bytes for LIT).
fn node_key(cap: &Cap) -> Option<Vec<u8>> {
    let node = match cap {
        Cap::File(n) | Cap::Dir(n) => n,
        Cap::Unknown(_) => return None,
    };
    Some(match node {
        NodeCap::Chk(c) => hash::storage_index_hash(&c.key).to_vec(),
        NodeCap::MutableWrite(w) => WriterKeys::from_cap(w).reader.storage_index.to_vec(),
        NodeCap::MutableRead(r) => ReaderKeys::from_cap(r).storage_index.to_vec(),
        // LIT nodes and verify caps: no shared identity worth tracking; never cyclic.
        _ => return None,
    })
}

/// Walks the tree under the directory `root` (depth first, each node once even when linked
/// several times or in a cycle), checking and, with `opts.repair`, repairing every node.
pub async fn deep_check(
    dirs: &DirectoryClient,
    secrets: &ClientSecrets,
    root: &Cap,
    opts: &CheckOptions,
) -> DeepCheckResults {
    let mut out = DeepCheckResults::default();
    let mut seen: BTreeSet<Vec<u8>> = BTreeSet::new();
    let mut stack: Vec<(String, Cap)> = vec![(String::new(), root.clone())];
    while let Some((path, cap)) = stack.pop() {
        if let Some(k) = node_key(&cap) {
            if !seen.insert(k) {
                continue;
            }
        }
        let is_directory = cap.is_directory();
        let results = check_node(dirs, secrets, &cap, opts)
            .await
            .map_err(|e| e.to_string());
        out.entries.push(DeepCheckEntry {
            path: path.clone(),
            is_directory,
            results,
        });
        if !is_directory {
            continue;
        }
        let listed = match dirs.open(&cap) {
            Ok(d) => d.list().await,
            Err(e) => Err(e),
        };
        match listed {
            Ok(dir) => {
                let mut kids: Vec<(String, Cap)> = Vec::new();
                for (name, child) in dir.iter() {
                    let p = if path.is_empty() {
                        name.to_string()
                    } else {
                        format!("{path}/{name}")
                    };
                    match child_cap(child) {
                        Ok(c) => kids.push((p, c)),
                        Err(e) => out.list_errors.push((p, e.to_string())),
                    }
                }
                // Reversed so the stack pops children in name order.
                stack.extend(kids.into_iter().rev());
            }
            Err(e) => out.list_errors.push((path, e.to_string())),
        }
    }
    out
}
