//! CHK encoding (digest §3.2): plaintext → AES-CTR → zfec → n shares, hashes, UEB, cap.
//!
//! Two levels:
//! - [`SegmentEncoder`] is pure: one plaintext segment in, the n blocks, their hashes and the
//!   crypttext segment hash out. The segment is laid out in one buffer of `n × block_len`
//!   bytes: the first `k` blocks are the ciphertext itself (encrypted in place, zero-padded),
//!   the parity blocks follow, so there is no copy between encryption, coding and hashing.
//! - [`Encoder::encode`] drives it over a [`PlaintextSource`] and a [`ShareSink`], by one of
//!   two plans (see [`Plan`]) chosen by the SHA-256 engine's width ([`multihash::lanes`]).
//!   SHA-256 is most of the CPU, and one SHA-256 stream is latency-bound (SHA-NI) or one lane
//!   of a SIMD engine (AVX-512), so every hash but the whole-file one runs in a batch of
//!   independent messages:
//!   - two lanes (pipelined plan): segments are encoded in batches of one per rayon thread while
//!     the previous batch is written out in segment order, so memory holds two batches; the
//!     block hashes of a segment pair up in the parallel stage; the in-order stage hashes each
//!     segment's crypttext into its segment hash and the whole-file hash side by side, and,
//!     when `n` is odd, the last block of two consecutive segments together;
//!   - sixteen lanes (grouped plan): segments are encoded a group at a time, as many as the
//!     engine has lanes (bounded in bytes); the group's segment hashes fill one batch, its
//!     blocks fill batches across segments, and the whole-file hash runs alone beside them;
//!     memory holds one group.
//!
//!   Each share is written strictly sequentially: header, then the blocks, then one trailer
//!   (trees, share hash chain, UEB), then [`ShareSink::finish`].
//!
//! With a convergent key the plaintext is read twice (the key is a hash of all of it).
//! Files of at most 55 bytes become LIT caps and produce no shares.

use super::layout::{self, ShareLayout};
use super::params::{EncodingParams, Geometry, LIT_THRESHOLD};
use super::ueb::Ueb;
use super::{BoxError, ImmutableError};
use crate::cap::{ChkCap, LitCap, NodeCap};
use crate::codec::Codec;
use crate::crypto::aes::AesCtr;
use crate::crypto::hash::{self, tags, Hash};
use crate::crypto::hashtree;
use crate::crypto::multihash::{self, Sha256Stream};
use bytes::Bytes;
use rayon::prelude::*;
use std::sync::Arc;

/// Where the plaintext comes from. `read_at` must fill `buf` completely.
pub trait PlaintextSource {
    fn size(&self) -> u64;
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), BoxError>;
}

/// Where share bytes go. For each share, writes come in increasing offset order with no gaps
/// (mirroring the HTTP protocol's PATCHes of byte ranges); `finish` follows the last write.
pub trait ShareSink {
    fn write(&mut self, shnum: usize, offset: u64, data: &[u8]) -> Result<(), BoxError>;
    /// [`Self::write`] of bytes the sink may keep as they are, without copying them (the
    /// encoder hands blocks over this way). By default they are written like any others.
    fn write_shared(&mut self, shnum: usize, offset: u64, data: Bytes) -> Result<(), BoxError> {
        self.write(shnum, offset, &data)
    }
    fn finish(&mut self) -> Result<(), BoxError>;
}

/// A plaintext held in memory.
#[derive(Clone, Copy, Debug)]
pub struct SliceSource<'a>(pub &'a [u8]);

#[derive(Debug, thiserror::Error)]
#[error("read past the end of the plaintext")]
struct PastEnd;

impl PlaintextSource for SliceSource<'_> {
    fn size(&self) -> u64 {
        self.0.len() as u64
    }

    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), BoxError> {
        let start = usize::try_from(offset)?;
        let src = start
            .checked_add(buf.len())
            .and_then(|end| self.0.get(start..end))
            .ok_or(PastEnd)?;
        buf.copy_from_slice(src);
        Ok(())
    }
}

/// How the AES key of a file is chosen.
#[derive(Clone)]
pub enum KeySource {
    /// Tahoe's convergent key from this secret (the raw bytes, not their base32).
    Convergent(Vec<u8>),
    /// 16 random bytes.
    Random,
    /// A given key.
    Fixed([u8; 16]),
}

impl std::fmt::Debug for KeySource {
    /// Never prints the secret or the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            KeySource::Convergent(_) => "KeySource::Convergent(..)",
            KeySource::Random => "KeySource::Random",
            KeySource::Fixed(_) => "KeySource::Fixed(..)",
        })
    }
}

/// One encoded segment; also the reusable buffer the file encoder keeps per slot.
#[derive(Clone, Default)]
pub struct EncodedSegment {
    pub index: u64,
    /// `n × block_len` bytes: block i at `i*block_len`. Shared with the sink once encoded
    /// ([`Self::block_shared`]); the encoder reuses it only when the sink has let go of it.
    buf: Arc<Vec<u8>>,
    block_len: usize,
    seg_len: usize,
    /// The hash of each block, by share number (one is a placeholder while `deferred`).
    pub block_hashes: Vec<Hash>,
    /// The crypttext segment hash (set by [`SegmentEncoder::encode_segment`]; the file
    /// encoder computes it in its in-order stage instead).
    pub crypttext_hash: Hash,
    /// A share whose block hash is left to the file encoder's in-order stage (with an odd
    /// number of blocks, the last one would otherwise run alone in a two-lane hasher).
    deferred: Option<usize>,
}

impl EncodedSegment {
    /// Block of share `shnum`.
    pub fn block(&self, shnum: usize) -> &[u8] {
        &self.buf[shnum * self.block_len..(shnum + 1) * self.block_len]
    }

    /// Block of share `shnum`, sharing the segment's buffer.
    pub fn block_shared(&self, shnum: usize) -> Bytes {
        Bytes::from_owner(SharedBuf(self.buf.clone()))
            .slice(shnum * self.block_len..(shnum + 1) * self.block_len)
    }

    /// The segment's unpadded ciphertext (the first k blocks, concatenated, truncated).
    pub fn crypttext(&self) -> &[u8] {
        &self.buf[..self.seg_len]
    }

    /// Sets up the buffer for segment `seg` and returns the region the plaintext goes in.
    fn prepare(&mut self, geom: &Geometry, seg: u64) -> &mut [u8] {
        self.index = seg;
        self.block_len = geom.block_len(seg) as usize;
        self.seg_len = geom.segment_len(seg) as usize;
        let k = geom.needed;
        let total = geom.total * self.block_len;
        // Unique here (see `read_segments`), so this does not copy.
        let buf = Arc::make_mut(&mut self.buf);
        buf.resize(total, 0);
        // Zero padding of the last piece(s); parity is overwritten by the codec.
        buf[self.seg_len..k * self.block_len].fill(0);
        &mut buf[..self.seg_len]
    }
}

/// A segment buffer as the owner of [`Bytes`] handed to a sink.
struct SharedBuf(Arc<Vec<u8>>);

impl AsRef<[u8]> for SharedBuf {
    fn as_ref(&self) -> &[u8] {
        self.0.as_slice()
    }
}

/// The pure per-segment step.
#[derive(Clone)]
pub struct SegmentEncoder {
    codec: Codec,
    key: [u8; 16],
    geom: Geometry,
}

impl std::fmt::Debug for SegmentEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SegmentEncoder")
            .field("geom", &self.geom)
            .finish_non_exhaustive()
    }
}

impl SegmentEncoder {
    pub fn new(geom: Geometry, key: [u8; 16]) -> Result<Self, ImmutableError> {
        Ok(SegmentEncoder {
            codec: Codec::new(geom.needed, geom.total)?,
            key,
            geom,
        })
    }

    pub fn geometry(&self) -> &Geometry {
        &self.geom
    }

    /// Encodes segment `seg` from its plaintext (exactly `segment_len(seg)` bytes).
    pub fn encode_segment(
        &self,
        seg: u64,
        plaintext: &[u8],
    ) -> Result<EncodedSegment, ImmutableError> {
        if seg >= self.geom.num_segments || plaintext.len() as u64 != self.geom.segment_len(seg) {
            return Err(ImmutableError::BadParameters(
                "segment number or length does not match the geometry",
            ));
        }
        let mut out = EncodedSegment::default();
        out.prepare(&self.geom, seg).copy_from_slice(plaintext);
        self.encode_prepared(&mut out, false)?;
        out.crypttext_hash = hash::crypttext_segment_hash(out.crypttext());
        Ok(out)
    }

    /// Encrypts, codes and hashes a prepared segment whose plaintext is in `crypttext()`: the
    /// block hashes only. The file encoder hashes the crypttext itself in its in-order stage
    /// (the segment hash with the whole-file hash, two lanes over the same bytes);
    /// [`Self::encode_segment`] hashes it here. With `defer_odd` and an odd number of
    /// blocks, the last block's hash is left to the in-order stage too (`deferred`).
    fn encode_prepared(
        &self,
        s: &mut EncodedSegment,
        defer_odd: bool,
    ) -> Result<(), ImmutableError> {
        self.encrypt_and_code(s)?;
        let (n, bl) = (self.geom.total, s.block_len);
        let blocks: Vec<&[u8]> = s.buf.chunks_exact(bl).collect();
        let hashed = if defer_odd && n % 2 == 1 { n - 1 } else { n };
        s.block_hashes = multihash::tagged_hash_many(tags::BLOCK, &blocks[..hashed]);
        s.block_hashes.resize(n, [0; 32]);
        s.deferred = (hashed < n).then_some(hashed);
        Ok(())
    }
}

impl SegmentEncoder {
    /// Encrypts a prepared segment in place and computes its parity blocks; no hashing.
    fn encrypt_and_code(&self, s: &mut EncodedSegment) -> Result<(), ImmutableError> {
        let (k, n, bl) = (self.geom.needed, self.geom.total, s.block_len);
        // Unique between `prepare` and the hand-over to the sink, so this does not copy.
        let buf = Arc::make_mut(&mut s.buf);
        AesCtr::at(&self.key, self.geom.segment_offset(s.index)).apply(&mut buf[..s.seg_len]);
        if n > k {
            let (data, parity) = buf.split_at_mut(k * bl);
            let inputs: Vec<&[u8]> = data.chunks_exact(bl).collect();
            let mut outputs: Vec<&mut [u8]> = parity.chunks_exact_mut(bl).collect();
            self.codec.encode(&inputs, &mut outputs)?;
        }
        Ok(())
    }
}

/// The block hashes of every segment of a group, segment after segment (`n` each), computed as
/// batches of [`multihash::lanes`] blocks taken across segments (one segment has too few blocks
/// to fill a wide engine's lanes).
fn block_hashes_across(segs: &[EncodedSegment], n: usize) -> Vec<Hash> {
    let blocks: Vec<&[u8]> = segs
        .iter()
        .flat_map(|s| (0..n).map(move |sh| s.block(sh)))
        .collect();
    blocks
        .par_chunks(multihash::lanes())
        .flat_map_iter(|c| multihash::tagged_hash_many(tags::BLOCK, c))
        .collect()
}

/// The file encoder's settings.
#[derive(Clone, Debug)]
pub struct Encoder {
    pub params: EncodingParams,
    pub key: KeySource,
    /// Write layout v2 even when v1 would do (Tahoe's `FORCE_V2`, for tests).
    #[doc(hidden)]
    pub force_v2: bool,
}

/// The largest number of segments encoded at once by the pipelined plan (bounds memory on
/// many-core machines).
const MAX_BATCH: usize = 32;

/// Plaintext bytes per rayon thread in a pipelined batch (one segment at least).
const BATCH_BYTES: u64 = 1 << 20;

/// The most bytes of encoded segments (`n` blocks each) a group of the grouped plan holds.
const GROUP_BYTES: u64 = 32 << 20;

/// How the file encoder walks the segments.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Plan {
    /// Two-lane engines: batches of `batch` segments, each encoded (blocks hashed by pairs)
    /// while the previous one is drained in order, its segment hashes paired with the
    /// whole-file hash (see [`Collected::drain`]). Memory: two batches.
    Pipelined { batch: usize },
    /// Wide engines: groups of `group` segments, encoded in parallel, then hashed all at once:
    /// the segment hashes of the group in one batch (one lane per segment), the blocks in
    /// batches across segments, while the whole-file hash runs on its own; then written out.
    /// A batch as wide as the engine needs as many segments as it has lanes, so a group is that
    /// many segments (fewer if they would take more than [`GROUP_BYTES`]). Memory: one group.
    Grouped { group: usize },
}

/// The plan for a file of geometry `geom`, with an engine of `lanes` lanes and `threads` rayon
/// threads.
fn choose_plan(geom: &Geometry, lanes: usize, threads: usize) -> Plan {
    if lanes <= 2 {
        // About BATCH_BYTES of plaintext per thread: every batch costs a hand-over between
        // threads (a wake-up, a context switch), so small segments go several at a time.
        let per_thread = (BATCH_BYTES / geom.segment_size.max(1)).max(1) as usize;
        return Plan::Pipelined {
            batch: (threads * per_thread).clamp(1, MAX_BATCH),
        };
    }
    let encoded = (geom.total as u64).saturating_mul(geom.block_len(0)).max(1);
    let by_memory = usize::try_from(GROUP_BYTES / encoded).unwrap_or(usize::MAX);
    Plan::Grouped {
        group: lanes.min(by_memory).max(1),
    }
}

impl Encoder {
    pub fn new(params: EncodingParams, key: KeySource) -> Self {
        Encoder {
            params,
            key,
            force_v2: false,
        }
    }

    /// Encodes the whole source into `sink` and returns the read cap.
    pub fn encode<P, S>(&self, source: &mut P, sink: &mut S) -> Result<NodeCap, ImmutableError>
    where
        P: PlaintextSource + ?Sized,
        S: ShareSink + Send + ?Sized,
    {
        self.encode_with_plan(source, sink, None)
    }

    /// [`Self::encode`] by `plan`, or by the plan for this machine when `None`.
    fn encode_with_plan<P, S>(
        &self,
        source: &mut P,
        sink: &mut S,
        plan: Option<Plan>,
    ) -> Result<NodeCap, ImmutableError>
    where
        P: PlaintextSource + ?Sized,
        S: ShareSink + Send + ?Sized,
    {
        self.params.validate()?;
        let size = source.size();
        if size <= LIT_THRESHOLD {
            let mut data = vec![0u8; size as usize];
            source
                .read_at(0, &mut data)
                .map_err(ImmutableError::Source)?;
            return Ok(NodeCap::Lit(LitCap { data }));
        }
        let geom = Geometry::new(size, &self.params)?;
        let key = resolve_key(source, &geom, &self.key)?;
        let (k, n) = (geom.needed, geom.total);
        let seg_enc = SegmentEncoder::new(geom.clone(), key)?;
        let layout = ShareLayout::new(&geom, self.force_v2);
        let header = layout.header();
        for sh in 0..n {
            sink.write(sh, 0, &header)
                .map_err(|source| ImmutableError::Sink { shnum: sh, source })?;
        }

        let nseg = geom.num_segments;
        let mut state = Collected {
            block_hashes: vec![Vec::with_capacity(nseg as usize); n],
            crypttext_hashes: Vec::with_capacity(nseg as usize),
            crypttext_hasher: Sha256Stream::tagged(tags::CRYPTTEXT),
            segment_hasher: Sha256Stream::tagged(tags::CRYPTTEXT_SEGMENT),
            block_hasher: Sha256Stream::tagged(tags::BLOCK),
        };
        let data_offset = layout.offsets.data;
        let plan = plan.unwrap_or_else(|| {
            choose_plan(&geom, multihash::lanes(), rayon::current_num_threads())
        });
        match plan {
            Plan::Pipelined { batch } => {
                state.pipelined(&seg_enc, batch, data_offset, source, sink)?;
            }
            Plan::Grouped { group } => {
                state.grouped(&seg_enc, group, data_offset, source, sink)?;
            }
        }

        let crypttext_hash = state.crypttext_hasher.finalize_sha256d();
        let ct_tree = hashtree::build(&state.crypttext_hashes);
        let block_trees: Vec<Vec<Hash>> = state
            .block_hashes
            .par_iter()
            .map(|h| hashtree::build(h))
            .collect();
        let share_roots: Vec<Hash> = block_trees.iter().map(|t| t[0]).collect();
        let share_tree = hashtree::build(&share_roots);
        let ueb = Ueb::for_file(&geom, crypttext_hash, ct_tree[0], share_tree[0]).to_bytes();
        let ueb_hash = hash::uri_extension_hash(&ueb);
        for (sh, tree) in block_trees.iter().enumerate() {
            let chain: Vec<(usize, Hash)> = layout::share_hash_chain_indices(n, sh)
                .into_iter()
                .map(|i| (i, share_tree[i]))
                .collect();
            let trailer = layout::trailer(&layout, &ct_tree, tree, &chain, &ueb);
            sink.write(sh, layout.offsets.plaintext_hash_tree, &trailer)
                .map_err(|source| ImmutableError::Sink { shnum: sh, source })?;
        }
        sink.finish().map_err(ImmutableError::SinkFinish)?;
        Ok(NodeCap::Chk(ChkCap {
            key,
            ueb_hash,
            needed: k as u32,
            total: n as u32,
            size,
        }))
    }
}

/// What the in-order stage accumulates.
struct Collected {
    block_hashes: Vec<Vec<Hash>>,
    crypttext_hashes: Vec<Hash>,
    /// The whole-file crypttext hash (UEB `crypttext_hash`), fed segment by segment.
    crypttext_hasher: Sha256Stream,
    /// A fresh crypttext segment hasher (`ns(tag)` fed), cloned for each segment.
    segment_hasher: Sha256Stream,
    /// A fresh block hasher, cloned for each deferred block.
    block_hasher: Sha256Stream,
}

impl Collected {
    /// [`Plan::Pipelined`] over every segment.
    fn pipelined<P, S>(
        &mut self,
        seg_enc: &SegmentEncoder,
        batch: usize,
        data_offset: u64,
        source: &mut P,
        sink: &mut S,
    ) -> Result<(), ImmutableError>
    where
        P: PlaintextSource + ?Sized,
        S: ShareSink + Send + ?Sized,
    {
        let geom = seg_enc.geometry();
        let nseg = geom.num_segments;
        let mut cur: Vec<EncodedSegment> = new_slots(batch);
        let mut prev: Vec<EncodedSegment> = new_slots(batch);
        let mut prev_count = 0usize;
        let mut spares = Vec::new();
        let mut next = 0u64;
        while next < nseg {
            let count = ((nseg - next) as usize).min(batch);
            read_segments(geom, next, &mut cur[..count], &mut spares, source)?;
            let (encoded, written) = rayon::join(
                || {
                    cur[..count]
                        .par_iter_mut()
                        .try_for_each(|s| seg_enc.encode_prepared(s, true))
                },
                || self.drain(&prev[..prev_count], geom, data_offset, sink),
            );
            encoded?;
            written?;
            std::mem::swap(&mut cur, &mut prev);
            prev_count = count;
            next += count as u64;
        }
        self.drain(&prev[..prev_count], geom, data_offset, sink)
    }

    /// [`Plan::Grouped`] over every segment.
    fn grouped<P, S>(
        &mut self,
        seg_enc: &SegmentEncoder,
        group: usize,
        data_offset: u64,
        source: &mut P,
        sink: &mut S,
    ) -> Result<(), ImmutableError>
    where
        P: PlaintextSource + ?Sized,
        S: ShareSink + Send + ?Sized,
    {
        let geom = seg_enc.geometry();
        let (n, nseg) = (geom.total, geom.num_segments);
        let mut slots: Vec<EncodedSegment> = new_slots(group.max(1));
        let mut spares = Vec::new();
        let mut next = 0u64;
        while next < nseg {
            let count = ((nseg - next) as usize).min(slots.len());
            read_segments(geom, next, &mut slots[..count], &mut spares, source)?;
            slots[..count]
                .par_iter_mut()
                .try_for_each(|s| seg_enc.encrypt_and_code(s))?;
            let segs = &slots[..count];
            let whole = &mut self.crypttext_hasher;
            let ((), (seg_hashes, block_hashes)) = rayon::join(
                || segs.iter().for_each(|s| whole.update(s.crypttext())),
                || {
                    rayon::join(
                        || {
                            let cts: Vec<&[u8]> = segs.iter().map(|s| s.crypttext()).collect();
                            multihash::tagged_hash_many(tags::CRYPTTEXT_SEGMENT, &cts)
                        },
                        || block_hashes_across(segs, n),
                    )
                },
            );
            self.crypttext_hashes.extend(seg_hashes);
            for (s, hashes) in segs.iter().zip(block_hashes.chunks_exact(n)) {
                let offset = data_offset + geom.block_offset(s.index);
                for (sh, acc) in self.block_hashes.iter_mut().enumerate() {
                    acc.push(hashes[sh]);
                    sink.write_shared(sh, offset, s.block_shared(sh))
                        .map_err(|source| ImmutableError::Sink { shnum: sh, source })?;
                }
            }
            next += count as u64;
        }
        Ok(())
    }

    fn drain<S: ShareSink + ?Sized>(
        &mut self,
        segs: &[EncodedSegment],
        geom: &Geometry,
        data_offset: u64,
        sink: &mut S,
    ) -> Result<(), ImmutableError> {
        // Segments go by pairs. The whole-file hash and each segment's hash read the same
        // crypttext side by side (two lanes, equal lengths); the pair's deferred blocks (one
        // each when n is odd, also equal lengths) join the first round.
        for pair in segs.chunks(2) {
            let mut seg_hashers = vec![self.segment_hasher.clone(); pair.len()];
            let mut deferred: Vec<(usize, usize, Sha256Stream)> = pair
                .iter()
                .enumerate()
                .filter_map(|(j, s)| s.deferred.map(|sh| (j, sh, self.block_hasher.clone())))
                .collect();
            for (j, (s, seg)) in pair.iter().zip(seg_hashers.iter_mut()).enumerate() {
                let mut streams: Vec<&mut Sha256Stream> = vec![&mut self.crypttext_hasher, seg];
                let mut data: Vec<&[u8]> = vec![s.crypttext(), s.crypttext()];
                if j == 0 {
                    for (jj, sh, h) in deferred.iter_mut() {
                        streams.push(h);
                        data.push(pair.get(*jj).map_or(&[][..], |d| d.block(*sh)));
                    }
                }
                multihash::update_many(&mut streams, &data);
            }
            for (j, (s, seg)) in pair.iter().zip(&seg_hashers).enumerate() {
                self.crypttext_hashes.push(seg.finalize_sha256d());
                let offset = data_offset + geom.block_offset(s.index);
                for (sh, hashes) in self.block_hashes.iter_mut().enumerate() {
                    let h = match deferred.iter().find(|d| d.0 == j && d.1 == sh) {
                        Some((_, _, d)) => d.finalize_sha256d(),
                        None => s.block_hashes[sh],
                    };
                    hashes.push(h);
                    sink.write_shared(sh, offset, s.block_shared(sh))
                        .map_err(|source| ImmutableError::Sink { shnum: sh, source })?;
                }
            }
        }
        Ok(())
    }
}

/// `count` empty slots, each with a buffer of its own.
fn new_slots(count: usize) -> Vec<EncodedSegment> {
    (0..count).map(|_| EncodedSegment::default()).collect()
}

/// Prepares `slots` for the segments from `first` on and reads their plaintext.
///
/// A slot whose buffer the sink still holds (blocks queued for the network) gets another one:
/// one from `spares` that the sink has let go of, else a new one. The slot's old buffer joins
/// `spares`, so their number is bounded by what the sink holds at once.
fn read_segments<P: PlaintextSource + ?Sized>(
    geom: &Geometry,
    first: u64,
    slots: &mut [EncodedSegment],
    spares: &mut Vec<Arc<Vec<u8>>>,
    source: &mut P,
) -> Result<(), ImmutableError> {
    for (j, slot) in slots.iter_mut().enumerate() {
        if Arc::get_mut(&mut slot.buf).is_none() {
            let free = spares.iter_mut().position(|b| Arc::get_mut(b).is_some());
            let fresh = free.map(|i| spares.swap_remove(i)).unwrap_or_default();
            spares.push(std::mem::replace(&mut slot.buf, fresh));
        }
        let seg = first + j as u64;
        let region = slot.prepare(geom, seg);
        source
            .read_at(geom.segment_offset(seg), region)
            .map_err(ImmutableError::Source)?;
    }
    Ok(())
}

/// The AES key a [`KeySource`] gives for this file (a convergent key reads the whole plaintext).
pub fn resolve_key<P: PlaintextSource + ?Sized>(
    source: &mut P,
    geom: &Geometry,
    key: &KeySource,
) -> Result<[u8; 16], ImmutableError> {
    Ok(match key {
        KeySource::Fixed(k) => *k,
        KeySource::Random => rand::random(),
        KeySource::Convergent(secret) => convergent_key(source, geom, secret)?,
    })
}

/// The convergent key: one pass over the whole plaintext.
fn convergent_key<P: PlaintextSource + ?Sized>(
    source: &mut P,
    geom: &Geometry,
    secret: &[u8],
) -> Result<[u8; 16], ImmutableError> {
    let mut hasher = hash::convergence_hasher(geom.needed, geom.total, geom.segment_size, secret);
    const CHUNK: u64 = 1 << 20;
    let mut buf = vec![0u8; CHUNK.min(geom.size) as usize];
    let mut off = 0;
    while off < geom.size {
        let len = CHUNK.min(geom.size - off) as usize;
        source
            .read_at(off, &mut buf[..len])
            .map_err(ImmutableError::Source)?;
        hasher.update(&buf[..len]);
        off += len as u64;
    }
    Ok(hash::convergent_key(hasher))
}

/// A file encoded in memory: the cap and the share bodies by share number (none for LIT).
#[derive(Clone, Debug)]
pub struct EncodedFile {
    pub cap: NodeCap,
    pub shares: Vec<Vec<u8>>,
}

/// Encodes `plaintext` entirely in memory.
pub fn encode_bytes(
    plaintext: &[u8],
    params: &EncodingParams,
    key: &KeySource,
) -> Result<EncodedFile, ImmutableError> {
    encode_bytes_with(plaintext, &Encoder::new(params.clone(), key.clone()))
}

/// [`encode_bytes`] with a fully configured [`Encoder`].
pub fn encode_bytes_with(plaintext: &[u8], enc: &Encoder) -> Result<EncodedFile, ImmutableError> {
    let mut store = super::store::MemoryShares::default();
    let cap = enc.encode(&mut SliceSource(plaintext), &mut store)?;
    Ok(EncodedFile {
        cap,
        shares: store.shares,
    })
}

/// Encodes a file from `source` into `sink` (see [`Encoder::encode`]).
pub fn encode_file<P, S>(
    source: &mut P,
    sink: &mut S,
    params: &EncodingParams,
    key: &KeySource,
) -> Result<NodeCap, ImmutableError>
where
    P: PlaintextSource + ?Sized,
    S: ShareSink + Send + ?Sized,
{
    Encoder::new(params.clone(), key.clone()).encode(source, sink)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Digest §2 worked example: 'a'×56, conv "aaaaaaaaaaaaaaaa", 3-of-10, max seg 131072.
    #[test]
    fn digest_worked_example() {
        let p = EncodingParams {
            needed: 3,
            happy: 7,
            total: 10,
            max_segment_size: 131072,
        };
        let f = encode_bytes(
            &[b'a'; 56],
            &p,
            &KeySource::Convergent(b"aaaaaaaaaaaaaaaa".to_vec()),
        )
        .unwrap();
        assert_eq!(
            f.cap.to_string(),
            "URI:CHK:hah7mxwfpqemm7icdh3hwsa5fa:6epvxt2uxh42obpnfn4wkrplqml7voh7aqpnqnapu7ffcyn2hk3q:3:10:56"
        );
        assert_eq!(f.shares.len(), 10);
        // Share size formula of digest §3.6: 0x24 + 19 + 3*32 + 5*34 + 4 + len(UEB).
        let body = layout::parse_share_body(&f.shares[0]).unwrap();
        assert_eq!(
            f.shares[0].len(),
            0x24 + 19 + 3 * 32 + 5 * 34 + 4 + body.ueb.len()
        );
    }

    #[test]
    fn lit_threshold() {
        let p = EncodingParams::default();
        let f = encode_bytes(b"", &p, &KeySource::Random).unwrap();
        assert_eq!(f.cap.to_string(), "URI:LIT:");
        assert!(f.shares.is_empty());
        let f = encode_bytes(&[b'x'; 55], &p, &KeySource::Random).unwrap();
        assert!(matches!(f.cap, NodeCap::Lit(_)));
        let f = encode_bytes(&[b'x'; 56], &p, &KeySource::Random).unwrap();
        assert!(matches!(f.cap, NodeCap::Chk(_)));
    }

    /// Encodes `plain` by `plan` into memory.
    fn encode_by(plain: &[u8], p: &EncodingParams, key: [u8; 16], plan: Plan) -> EncodedFile {
        let mut store = crate::immutable::store::MemoryShares::default();
        let cap = Encoder::new(p.clone(), KeySource::Fixed(key))
            .encode_with_plan(&mut SliceSource(plain), &mut store, Some(plan))
            .unwrap();
        EncodedFile {
            cap,
            shares: store.shares,
        }
    }

    fn tree_bytes(leaves: &[Hash]) -> Vec<u8> {
        hashtree::build(leaves).concat()
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

        /// The grouped plan's batched hashes (segment hashes one lane per segment, blocks
        /// across segments, whatever the group size and however the last group and the last
        /// segment fall) equal hashes computed one message at a time, and both plans write the
        /// same shares.
        #[test]
        fn grouped_hashes_equal_one_at_a_time(
            k in 1usize..=4,
            extra in 0usize..=4,
            seg in 1u64..=300,
            nseg in 1u64..=40,
            tail in 0u64..300,
            group in 1usize..=20,
            batch in 1usize..=5,
            seed in proptest::prelude::any::<u8>(),
        ) {
            let n = k + extra;
            let p = EncodingParams { needed: k, happy: n, total: n, max_segment_size: seg };
            let seg_size = seg.div_ceil(k as u64) * k as u64;
            let size = ((nseg - 1) * seg_size + 1 + tail % seg_size).max(LIT_THRESHOLD + 1);
            let plain: Vec<u8> = (0..size).map(|i| (i as u8).wrapping_mul(31) ^ seed).collect();
            let key = [seed; 16];
            let grouped = encode_by(&plain, &p, key, Plan::Grouped { group });
            let pipelined = encode_by(&plain, &p, key, Plan::Pipelined { batch });
            proptest::prop_assert_eq!(grouped.cap.to_string(), pipelined.cap.to_string());
            proptest::prop_assert!(grouped.shares == pipelined.shares);

            let g = Geometry::new(size, &p).unwrap();
            let se = SegmentEncoder::new(g.clone(), key).unwrap();
            let mut seg_hashes = Vec::new();
            let mut block_hashes = vec![Vec::new(); n];
            let mut crypttext = Vec::new();
            for s in 0..g.num_segments {
                let off = g.segment_offset(s) as usize;
                let e = se.encode_segment(s, &plain[off..off + g.segment_len(s) as usize]).unwrap();
                seg_hashes.push(hash::crypttext_segment_hash(e.crypttext()));
                crypttext.extend_from_slice(e.crypttext());
                for (sh, acc) in block_hashes.iter_mut().enumerate() {
                    acc.push(hash::block_hash(e.block(sh)));
                }
            }
            let whole = hash::tagged_hash(tags::CRYPTTEXT, &crypttext);
            for (sh, share) in grouped.shares.iter().enumerate() {
                let body = layout::parse_share_body(share).unwrap();
                proptest::prop_assert_eq!(body.crypttext_hash_tree, &tree_bytes(&seg_hashes)[..]);
                proptest::prop_assert_eq!(body.block_hash_tree, &tree_bytes(&block_hashes[sh])[..]);
                let ueb = Ueb::parse(body.ueb).unwrap();
                proptest::prop_assert_eq!(ueb.crypttext_hash, Some(whole));
            }
        }
    }

    #[test]
    fn grouped_plan_is_bounded_in_bytes() {
        let p = EncodingParams {
            needed: 3,
            happy: 5,
            total: 5,
            max_segment_size: 1 << 20,
        };
        let g = Geometry::new(256 << 20, &p).unwrap();
        assert_eq!(choose_plan(&g, 16, 2), Plan::Grouped { group: 16 });
        assert_eq!(
            choose_plan(&g, 2, 2),
            Plan::Pipelined { batch: 2 },
            "1 MiB segments: one per thread"
        );
        // 3-of-10, 1 MiB segments: 3.5 MB encoded each, so 9 fit in GROUP_BYTES.
        let p10 = EncodingParams {
            total: 10,
            ..p.clone()
        };
        let g = Geometry::new(256 << 20, &p10).unwrap();
        assert_eq!(choose_plan(&g, 16, 2), Plan::Grouped { group: 9 });
        // Segments larger than GROUP_BYTES still go one at a time.
        let huge = EncodingParams {
            max_segment_size: 64 << 20,
            ..p
        };
        let g = Geometry::new(256 << 20, &huge).unwrap();
        assert_eq!(choose_plan(&g, 16, 2), Plan::Grouped { group: 1 });
    }

    #[test]
    fn debug_hides_secrets() {
        let k = KeySource::Convergent(b"sekrit".to_vec());
        assert!(!format!("{k:?}").contains("sekrit"));
    }
}
