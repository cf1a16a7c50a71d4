//! CHK encoding (digest §3.2): plaintext → AES-CTR → zfec → n shares, hashes, UEB, cap.
//!
//! Two levels:
//! - [`SegmentEncoder`] is pure: one plaintext segment in, the n blocks, their hashes and the
//!   crypttext segment hash out. The segment is laid out in one buffer of `n × block_len`
//!   bytes: the first `k` blocks are the ciphertext itself (encrypted in place, zero-padded),
//!   the parity blocks follow, so there is no copy between encryption, coding and hashing.
//! - [`Encoder::encode`] drives it over a [`PlaintextSource`] and a [`ShareSink`]. Segments are
//!   encoded in batches of one per rayon thread while the previous batch is hashed into the
//!   whole-file crypttext hash and written out, in segment order, so memory holds at most two
//!   batches whatever the file size.
//! - SHA-256 is most of the CPU, and one SHA-256 stream is latency-bound, so every hash runs
//!   in a two-lane [`multihash`] batch with an independent one of the same length: the block
//!   hashes of a segment pair up in the parallel stage; the in-order stage hashes each
//!   segment's crypttext into its segment hash and the whole-file hash side by side, and, when
//!   `n` is odd, the last block of two consecutive segments together. With a wide engine
//!   (sixteen AVX-512 lanes, [`multihash::lanes`]) the batches are drawn across the segments
//!   of a batch instead: all their blocks in the parallel stage, all their segment hashes in
//!   the in-order stage, while the whole-file hash runs alone.
//!   Each share is written strictly sequentially: header, then
//!   the blocks, then one trailer (trees, share hash chain, UEB), then [`ShareSink::finish`].
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
use rayon::prelude::*;

/// Where the plaintext comes from. `read_at` must fill `buf` completely.
pub trait PlaintextSource {
    fn size(&self) -> u64;
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), BoxError>;
}

/// Where share bytes go. For each share, writes come in increasing offset order with no gaps
/// (mirroring the HTTP protocol's PATCHes of byte ranges); `finish` follows the last write.
pub trait ShareSink {
    fn write(&mut self, shnum: usize, offset: u64, data: &[u8]) -> Result<(), BoxError>;
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
    /// `n × block_len` bytes: block i at `i*block_len`.
    buf: Vec<u8>,
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
        self.buf.resize(total, 0);
        // Zero padding of the last piece(s); parity is overwritten by the codec.
        self.buf[self.seg_len..k * self.block_len].fill(0);
        &mut self.buf[..self.seg_len]
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
        AesCtr::at(&self.key, self.geom.segment_offset(s.index)).apply(&mut s.buf[..s.seg_len]);
        if n > k {
            let (data, parity) = s.buf.split_at_mut(k * bl);
            let inputs: Vec<&[u8]> = data.chunks_exact(bl).collect();
            let mut outputs: Vec<&mut [u8]> = parity.chunks_exact_mut(bl).collect();
            self.codec.encode(&inputs, &mut outputs)?;
        }
        Ok(())
    }
}

/// The block hashes of every segment of a batch, as batches of [`multihash::lanes`] blocks
/// taken across segments (one segment has too few blocks to fill a wide engine's lanes).
fn hash_blocks_across(segs: &mut [EncodedSegment], n: usize) {
    let blocks: Vec<&[u8]> = segs
        .iter()
        .flat_map(|s| (0..n).map(move |sh| s.block(sh)))
        .collect();
    let hashes: Vec<Hash> = blocks
        .par_chunks(multihash::lanes())
        .flat_map_iter(|c| multihash::tagged_hash_many(tags::BLOCK, c))
        .collect();
    for (s, h) in segs.iter_mut().zip(hashes.chunks_exact(n)) {
        s.block_hashes = h.to_vec();
        s.deferred = None;
    }
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

/// The largest number of segments encoded at once (bounds memory on many-core machines).
const MAX_BATCH: usize = 32;

/// Plaintext bytes per rayon thread in a batch (one segment at least).
const BATCH_BYTES: u64 = 1 << 20;

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
        // About BATCH_BYTES of plaintext per thread: every batch costs a hand-over between
        // threads (a wake-up, a context switch), so small segments go several at a time.
        let per_thread = (BATCH_BYTES / geom.segment_size.max(1)).max(1) as usize;
        let batch = (rayon::current_num_threads() * per_thread).clamp(1, MAX_BATCH);
        let mut cur: Vec<EncodedSegment> = vec![EncodedSegment::default(); batch];
        let mut prev: Vec<EncodedSegment> = vec![EncodedSegment::default(); batch];
        let mut prev_count = 0usize;
        let mut state = Collected {
            block_hashes: vec![Vec::with_capacity(nseg as usize); n],
            crypttext_hashes: Vec::with_capacity(nseg as usize),
            crypttext_hasher: Sha256Stream::tagged(tags::CRYPTTEXT),
            segment_hasher: Sha256Stream::tagged(tags::CRYPTTEXT_SEGMENT),
            block_hasher: Sha256Stream::tagged(tags::BLOCK),
            wide: multihash::lanes() > 2,
        };
        let wide = state.wide;
        let data_offset = layout.offsets.data;
        let mut next = 0u64;
        while next < nseg {
            let count = ((nseg - next) as usize).min(batch);
            for (j, slot) in cur.iter_mut().take(count).enumerate() {
                let seg = next + j as u64;
                let region = slot.prepare(&geom, seg);
                source
                    .read_at(geom.segment_offset(seg), region)
                    .map_err(ImmutableError::Source)?;
            }
            let (encoded, written) = rayon::join(
                || {
                    if !wide {
                        return cur[..count]
                            .par_iter_mut()
                            .try_for_each(|s| seg_enc.encode_prepared(s, true));
                    }
                    cur[..count]
                        .par_iter_mut()
                        .try_for_each(|s| seg_enc.encrypt_and_code(s))?;
                    hash_blocks_across(&mut cur[..count], n);
                    Ok(())
                },
                || state.drain(&prev[..prev_count], &geom, data_offset, sink),
            );
            encoded?;
            written?;
            std::mem::swap(&mut cur, &mut prev);
            prev_count = count;
            next += count as u64;
        }
        state.drain(&prev[..prev_count], &geom, data_offset, sink)?;
        drop((cur, prev));

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
    /// The hash engine has more than two lanes: block hashes are batched across the segments
    /// of a batch (none deferred), segment hashes across the batch too, and the whole-file
    /// hash runs alone (a wide lane fed one segment at a time would leave the others idle).
    wide: bool,
}

impl Collected {
    fn drain<S: ShareSink + ?Sized>(
        &mut self,
        segs: &[EncodedSegment],
        geom: &Geometry,
        data_offset: u64,
        sink: &mut S,
    ) -> Result<(), ImmutableError> {
        if self.wide {
            let cts: Vec<&[u8]> = segs.iter().map(|s| s.crypttext()).collect();
            let seg_hashes = multihash::tagged_hash_many(tags::CRYPTTEXT_SEGMENT, &cts);
            self.crypttext_hashes.extend(seg_hashes);
            for s in segs {
                self.crypttext_hasher.update(s.crypttext());
                let offset = data_offset + geom.block_offset(s.index);
                for (sh, hashes) in self.block_hashes.iter_mut().enumerate() {
                    hashes.push(s.block_hashes[sh]);
                    sink.write(sh, offset, s.block(sh))
                        .map_err(|source| ImmutableError::Sink { shnum: sh, source })?;
                }
            }
            return Ok(());
        }
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
                    sink.write(sh, offset, s.block(sh))
                        .map_err(|source| ImmutableError::Sink { shnum: sh, source })?;
                }
            }
        }
        Ok(())
    }
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

    #[test]
    fn debug_hides_secrets() {
        let k = KeySource::Convergent(b"sekrit".to_vec());
        assert!(!format!("{k:?}").contains("sekrit"));
    }
}
