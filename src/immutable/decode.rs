//! CHK download validation (digest §3.7) and a download driver.
//!
//! The validation core is a set of pure checks, each taking untrusted bytes and the already
//! trusted values above them: [`check_ueb`] (UEB hash against the cap, then the UEB rules),
//! [`check_share_hashes`] (the share's leaf of the share hash tree against the UEB's
//! `share_root_hash`), [`check_block`] (a block's hash against the share's block hash tree,
//! whose root is that leaf) and [`check_crypttext_segment`] (a decoded segment against the
//! crypttext hash tree, whose root is the UEB's `crypttext_root_hash`). A network layer can
//! drive these directly.
//!
//! [`Downloader`] drives them over a [`ShareSource`]: it opens shares one by one until it has
//! k good ones, fetches for each needed segment only the k blocks and the hash-tree nodes that
//! segment needs, drops a share at the first fault (recording a [`ShareProblem`]) and retries
//! the segment with another one, and writes plaintext in order to an [`OutputSink`]. Memory is
//! one segment plus k blocks, whatever the file size. A byte is written out only after its
//! block and crypttext hashes chain up to the cap.

use super::layout::{self, ShareLayout};
use super::params::Geometry;
use super::ueb::{Ueb, UebError};
use super::{BoxError, ImmutableError};
use crate::cap::ChkCap;
use crate::codec::{Codec, Decoder};
use crate::crypto::aes::AesCtr;
use crate::crypto::hash::{self, tags, Hash};
use crate::crypto::hashtree::{self, HashTreeError};
use crate::crypto::multihash;
use std::collections::{BTreeMap, VecDeque};
use thiserror::Error;

/// Reads share bytes. `read` fills `buf` from `offset` of share `shnum`, or fails (the share is
/// missing, short or its server unreachable); a failure only disqualifies that share.
pub trait ShareSource {
    fn read(&mut self, shnum: usize, offset: u64, buf: &mut [u8]) -> Result<(), BoxError>;
}

/// Receives the verified plaintext, in order.
pub trait OutputSink {
    fn write(&mut self, data: &[u8]) -> Result<(), BoxError>;
}

impl OutputSink for Vec<u8> {
    fn write(&mut self, data: &[u8]) -> Result<(), BoxError> {
        self.extend_from_slice(data);
        Ok(())
    }
}

/// What was wrong with one share.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ShareFault {
    #[error("unavailable or truncated")]
    Unavailable,
    #[error(transparent)]
    Layout(#[from] layout::LayoutError),
    #[error("URI extension block does not match the cap")]
    UebHashMismatch,
    #[error(transparent)]
    Ueb(#[from] UebError),
    #[error("share regions are too small for the file")]
    RegionsTooSmall,
    #[error("share hash chain: {0}")]
    ShareHashes(HashTreeError),
    #[error("block of segment {segment}: {err}")]
    Block { segment: u64, err: HashTreeError },
    #[error("crypttext hash tree at segment {segment}: {err}")]
    Crypttext { segment: u64, err: HashTreeError },
}

/// A share that could not be used, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShareProblem {
    pub shnum: usize,
    pub fault: ShareFault,
}

/// Checks untrusted UEB bytes against the cap and returns the parsed UEB and file geometry.
pub fn check_ueb(cap: &ChkCap, ueb_bytes: &[u8]) -> Result<(Ueb, Geometry), ShareFault> {
    if hash::uri_extension_hash(ueb_bytes) != cap.ueb_hash {
        return Err(ShareFault::UebHashMismatch);
    }
    let ueb = Ueb::parse(ueb_bytes)?;
    let geom = ueb.validate(cap.needed as usize, cap.total as usize, cap.size)?;
    Ok((ueb, geom))
}

/// Checks share `shnum`'s hash chain (untrusted `(index, hash)` entries) and returns its leaf,
/// the verified root of its block hash tree.
pub fn check_share_hashes(
    share_root_hash: &Hash,
    total: usize,
    shnum: usize,
    chain: &BTreeMap<usize, Hash>,
) -> Result<Hash, ShareFault> {
    let leaf_index = hashtree::padded_leaves(total) - 1 + shnum;
    let leaf =
        *chain
            .get(&leaf_index)
            .ok_or(ShareFault::ShareHashes(HashTreeError::MissingNode(
                leaf_index,
            )))?;
    hashtree::verify_leaf(share_root_hash, total, shnum, &leaf, chain)
        .map_err(ShareFault::ShareHashes)?;
    Ok(leaf)
}

/// Checks a block of segment `segment` against the share's verified block tree root, with the
/// untrusted sibling nodes `chain` (indices from `hashtree::needed_hashes(nseg, segment, false)`).
pub fn check_block(
    block_root: &Hash,
    num_segments: u64,
    segment: u64,
    block_hash: &Hash,
    chain: &BTreeMap<usize, Hash>,
) -> Result<(), ShareFault> {
    hashtree::verify_leaf(
        block_root,
        num_segments as usize,
        segment as usize,
        block_hash,
        chain,
    )
    .map_err(|err| ShareFault::Block { segment, err })
}

/// Checks a decoded, unpadded crypttext segment against the UEB's crypttext root.
pub fn check_crypttext_segment(
    crypttext_root: &Hash,
    num_segments: u64,
    segment: u64,
    crypttext: &[u8],
    chain: &BTreeMap<usize, Hash>,
) -> Result<(), ShareFault> {
    let leaf = hash::crypttext_segment_hash(crypttext);
    hashtree::verify_leaf(
        crypttext_root,
        num_segments as usize,
        segment as usize,
        &leaf,
        chain,
    )
    .map_err(|err| ShareFault::Crypttext { segment, err })
}

/// Checks that a share's regions can hold what the geometry says they hold.
fn check_regions(l: &ShareLayout, geom: &Geometry) -> Result<(), ShareFault> {
    let o = &l.offsets;
    let tree = hashtree::tree_size(geom.num_segments as usize) as u64 * 32;
    let ok = o.plaintext_hash_tree - o.data >= geom.share_size
        && o.block_hashes - o.crypttext_hash_tree >= tree
        && o.share_hashes - o.block_hashes >= tree
        && o.uri_extension - o.share_hashes <= 256 * layout::SHARE_HASH_ENTRY_LEN;
    if ok {
        Ok(())
    } else {
        Err(ShareFault::RegionsTooSmall)
    }
}

/// A share whose header, UEB and share hash chain have been verified.
struct OpenShare {
    shnum: usize,
    layout: ShareLayout,
    block_root: Hash,
}

/// Downloads (parts of) one CHK file from a [`ShareSource`].
pub struct Downloader<'s, S: ShareSource + ?Sized> {
    cap: ChkCap,
    source: &'s mut S,
    codec: Codec,
    candidates: VecDeque<usize>,
    active: Vec<OpenShare>,
    problems: Vec<ShareProblem>,
    file: Option<(Ueb, Geometry)>,
    decoder: Option<Decoder>,
}

impl<S: ShareSource + ?Sized> std::fmt::Debug for Downloader<'_, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Downloader")
            .field("problems", &self.problems)
            .finish_non_exhaustive()
    }
}

impl<'s, S: ShareSource + ?Sized> Downloader<'s, S> {
    /// Shares are tried in ascending share number (the systematic ones first: no decoding).
    pub fn new(cap: &ChkCap, source: &'s mut S) -> Result<Self, ImmutableError> {
        Self::with_share_order(cap, source, 0..cap.total as usize)
    }

    /// Shares are tried in the given order (unknown numbers are ignored).
    pub fn with_share_order(
        cap: &ChkCap,
        source: &'s mut S,
        order: impl IntoIterator<Item = usize>,
    ) -> Result<Self, ImmutableError> {
        let codec = Codec::new(cap.needed as usize, cap.total as usize)?;
        let total = cap.total as usize;
        let mut seen = vec![false; total];
        let candidates = order
            .into_iter()
            .filter(|&s| s < total && !std::mem::replace(&mut seen[s], true))
            .collect();
        Ok(Downloader {
            cap: cap.clone(),
            source,
            codec,
            candidates,
            active: Vec::new(),
            problems: Vec::new(),
            file: None,
            decoder: None,
        })
    }

    /// Shares found bad or missing so far.
    pub fn problems(&self) -> &[ShareProblem] {
        &self.problems
    }

    fn read(&mut self, shnum: usize, offset: u64, len: u64) -> Result<Vec<u8>, ShareFault> {
        // Bounded by the caller: every length read here is checked against the geometry or a
        // format limit first.
        let mut buf = vec![0u8; usize::try_from(len).map_err(|_| ShareFault::Unavailable)?];
        self.source
            .read(shnum, offset, &mut buf)
            .map_err(|_| ShareFault::Unavailable)?;
        Ok(buf)
    }

    fn open(&mut self, shnum: usize) -> Result<OpenShare, ShareFault> {
        let first = self.read(shnum, 0, 4)?;
        let hl = ShareLayout::header_len_from_version(&first)?;
        let layout = ShareLayout::parse(&self.read(shnum, 0, hl)?)?;
        let lsize = layout.ueb_length_size();
        let o = layout.offsets.clone();
        let len = layout::parse_ueb_length(&layout, &self.read(shnum, o.uri_extension, lsize)?)?;
        let ueb_bytes = self.read(shnum, o.uri_extension + lsize, len)?;
        let (ueb, geom) = check_ueb(&self.cap, &ueb_bytes)?;
        check_regions(&layout, &geom)?;
        let chain_bytes = self.read(shnum, o.share_hashes, o.uri_extension - o.share_hashes)?;
        let chain = layout::parse_share_hashes(&chain_bytes)?;
        let block_root = check_share_hashes(&ueb.share_root_hash, geom.total, shnum, &chain)?;
        if self.file.is_none() {
            self.file = Some((ueb, geom));
        }
        Ok(OpenShare {
            shnum,
            layout,
            block_root,
        })
    }

    /// Opens candidates until k shares are active.
    fn fill(&mut self) -> Result<(), ImmutableError> {
        let k = self.cap.needed as usize;
        while self.active.len() < k {
            let Some(shnum) = self.candidates.pop_front() else {
                return Err(ImmutableError::NotEnoughShares {
                    needed: k,
                    problems: self.problems.clone(),
                });
            };
            match self.open(shnum) {
                Ok(s) => {
                    self.active.push(s);
                    self.decoder = None;
                }
                Err(fault) => self.problems.push(ShareProblem { shnum, fault }),
            }
        }
        Ok(())
    }

    fn drop_share(&mut self, pos: usize, fault: ShareFault) {
        let s = self.active.remove(pos);
        self.problems.push(ShareProblem {
            shnum: s.shnum,
            fault,
        });
        self.decoder = None;
    }

    /// Reads the nodes `indices` of the tree stored at `base` in share `shnum`.
    fn read_nodes(
        &mut self,
        shnum: usize,
        base: u64,
        indices: impl IntoIterator<Item = usize>,
    ) -> Result<BTreeMap<usize, Hash>, ShareFault> {
        let mut out = BTreeMap::new();
        for i in indices {
            let mut h = [0u8; 32];
            self.source
                .read(shnum, base + i as u64 * 32, &mut h)
                .map_err(|_| ShareFault::Unavailable)?;
            out.insert(i, h);
        }
        Ok(out)
    }

    /// The file geometry, opening shares if needed.
    pub fn geometry(&mut self) -> Result<Geometry, ImmutableError> {
        self.fill()?;
        Ok(self
            .file
            .as_ref()
            .expect("set when a share opens")
            .1
            .clone())
    }

    /// Fetches, verifies and decodes segment `seg` into `out` (unpadded crypttext).
    fn segment(&mut self, seg: u64, out: &mut Vec<u8>) -> Result<(), ImmutableError> {
        'retry: loop {
            self.fill()?;
            let (ueb, geom) = self.file.as_ref().expect("set when a share opens");
            let (ct_root, geom) = (ueb.crypttext_root_hash, geom.clone());
            let k = geom.needed;
            let bl = geom.block_len(seg) as usize;
            let nseg = geom.num_segments;
            let needed: Vec<usize> = hashtree::needed_hashes(nseg as usize, seg as usize, false)
                .into_iter()
                .collect();
            let mut blocks = vec![0u8; k * bl];
            for pos in 0..k {
                let (shnum, offset, bh_base, root) = {
                    let s = &self.active[pos];
                    (
                        s.shnum,
                        s.layout.offsets.data + geom.block_offset(seg),
                        s.layout.offsets.block_hashes,
                        s.block_root,
                    )
                };
                let block = &mut blocks[pos * bl..(pos + 1) * bl];
                if self.source.read(shnum, offset, block).is_err() {
                    self.drop_share(pos, ShareFault::Unavailable);
                    continue 'retry;
                }
                let chain = match self.read_nodes(shnum, bh_base, needed.iter().copied()) {
                    Ok(c) => c,
                    Err(f) => {
                        self.drop_share(pos, f);
                        continue 'retry;
                    }
                };
                let bh = multihash::tagged_hash_many(tags::BLOCK, &[block])[0];
                if let Err(f) = check_block(&root, nseg, seg, &bh, &chain) {
                    self.drop_share(pos, f);
                    continue 'retry;
                }
            }
            if self.decoder.is_none() {
                let ids: Vec<usize> = self.active.iter().map(|s| s.shnum).collect();
                self.decoder = Some(self.codec.decoder(&ids)?);
            }
            out.resize(k * bl, 0);
            {
                let inputs: Vec<&[u8]> = blocks.chunks_exact(bl).collect();
                let mut outputs: Vec<&mut [u8]> = out.chunks_exact_mut(bl).collect();
                self.decoder
                    .as_ref()
                    .expect("set above")
                    .decode(&inputs, &mut outputs)?;
            }
            out.truncate(geom.segment_len(seg) as usize);
            // The crypttext tree nodes come from the active shares, first one that verifies.
            let pos = 0;
            loop {
                if pos >= self.active.len() {
                    continue 'retry;
                }
                let (shnum, base) = {
                    let s = &self.active[pos];
                    (s.shnum, s.layout.offsets.crypttext_hash_tree)
                };
                let res = self
                    .read_nodes(shnum, base, needed.iter().copied())
                    .and_then(|chain| check_crypttext_segment(&ct_root, nseg, seg, out, &chain));
                match res {
                    Ok(()) => return Ok(()),
                    // The dropped share's successor moves into `pos`.
                    Err(f) => self.drop_share(pos, f),
                }
            }
        }
    }

    /// Writes plaintext bytes `offset .. offset+len` to `sink`, fetching only the segments
    /// that overlap the range.
    pub fn read_range(
        &mut self,
        offset: u64,
        len: u64,
        sink: &mut (impl OutputSink + ?Sized),
    ) -> Result<(), ImmutableError> {
        let size = self.cap.size;
        if offset.checked_add(len).is_none_or(|end| end > size) {
            return Err(ImmutableError::BadRange { offset, len, size });
        }
        if len == 0 {
            return Ok(());
        }
        let geom = self.geometry()?;
        let key = self.cap.key;
        let end = offset + len;
        let mut buf = Vec::new();
        for seg in offset / geom.segment_size..=(end - 1) / geom.segment_size {
            self.segment(seg, &mut buf)?;
            let seg_start = geom.segment_offset(seg);
            let a = offset.max(seg_start) - seg_start;
            let b = end.min(seg_start + buf.len() as u64) - seg_start;
            let part = &mut buf[a as usize..b as usize];
            AesCtr::at(&key, seg_start + a).apply(part);
            sink.write(part).map_err(ImmutableError::Output)?;
        }
        Ok(())
    }

    /// Writes the whole file to `sink`.
    pub fn read_all(
        &mut self,
        sink: &mut (impl OutputSink + ?Sized),
    ) -> Result<(), ImmutableError> {
        let size = self.cap.size;
        self.read_range(0, size, sink)
    }
}

/// Downloads the whole file to `sink`; returns the problems met with shares that were skipped.
pub fn download<S: ShareSource + ?Sized>(
    cap: &ChkCap,
    source: &mut S,
    sink: &mut (impl OutputSink + ?Sized),
) -> Result<Vec<ShareProblem>, ImmutableError> {
    let mut d = Downloader::new(cap, source)?;
    d.read_all(sink)?;
    Ok(d.problems().to_vec())
}
