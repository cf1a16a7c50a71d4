//! SDMF (version 0) and MDMF (version 1) share layouts, exactly as Tahoe 1.20 writes them
//! (`mutable/layout.py`, digest §4.3/§4.4), and the parser for untrusted share bytes.
//!
//! Invariants:
//! - the signed prefix is 75 bytes for SDMF (it includes the IV) and 59 for MDMF (no salt); the
//!   checkstring a writer tests against is its first 57 (SDMF) or 41 (MDMF) bytes;
//! - the share hash chain excludes the leaf and is written sorted by node index; readers accept
//!   any order;
//! - MDMF share data always starts at [`MDMF_DATA_OFFSET`] (2167); the bytes between the end of
//!   the verification key and 2167 are junk. Readers never compute positions: every region is
//!   located through the offset table, and every offset is checked against the bytes at hand;
//! - parsing never panics and never allocates more than the input it was given.

use crate::cap::MutableFormat;
use crate::crypto::hash::Hash;
use crate::crypto::hashtree;
use std::collections::BTreeMap;
use std::ops::Range;
use thiserror::Error;

pub const SDMF_VERSION: u8 = 0;
pub const MDMF_VERSION: u8 = 1;
pub const SDMF_SIGNED_PREFIX_LEN: usize = 75;
pub const MDMF_SIGNED_PREFIX_LEN: usize = 59;
pub const SDMF_CHECKSTRING_LEN: usize = 57;
pub const MDMF_CHECKSTRING_LEN: usize = 41;
pub const SDMF_HEADER_LEN: usize = 107;
pub const MDMF_HEADER_LEN: usize = 123;
/// Reading this many bytes from the start of a share gives the header of either format.
pub const MAX_HEADER_LEN: usize = MDMF_HEADER_LEN;
/// Where MDMF share data starts (123 + 1220 + 260 + 292 + 272).
pub const MDMF_DATA_OFFSET: u64 = 2167;
/// MDMF salts are 16 bytes, stored before each block.
pub const SALT_LEN: usize = 16;
/// One share hash chain entry: u16 node index and a 32-byte hash.
pub const HASH_CHAIN_ENTRY_LEN: usize = 34;
/// Segment counts above this are refused (a 2^32-segment file is ~2^49 bytes).
const MAX_SEGMENTS: u64 = 1 << 32;

/// Why share bytes could not be parsed or a share could not be laid out.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum LayoutError {
    #[error("mutable share: truncated: need {need} bytes, have {have}")]
    Truncated { need: u64, have: u64 },
    #[error("mutable share: unknown version byte {0}")]
    UnknownVersion(u8),
    #[error("mutable share: bad offset table ({0})")]
    BadOffsets(&'static str),
    #[error("mutable share: bad encoding parameters ({0})")]
    BadParameters(&'static str),
    #[error("mutable share: share hash chain region of {0} bytes is not a multiple of 34")]
    BadHashChainLength(u64),
    #[error("mutable share: block hash tree has {got} bytes, expected {expected}")]
    BadBlockHashTreeLength { got: u64, expected: u64 },
    #[error("mutable share: share data has {got} bytes, expected {expected}")]
    BadShareDataLength { got: u64, expected: u64 },
    #[error("mutable share: a field does not fit the layout ({0})")]
    FieldTooLarge(&'static str),
}

fn be_u64(b: &[u8], at: usize) -> Result<u64, LayoutError> {
    b.get(at..at + 8)
        .and_then(|s| <[u8; 8]>::try_from(s).ok())
        .map(u64::from_be_bytes)
        .ok_or(LayoutError::Truncated {
            need: (at + 8) as u64,
            have: b.len() as u64,
        })
}

fn be_u32(b: &[u8], at: usize) -> Result<u64, LayoutError> {
    b.get(at..at + 4)
        .and_then(|s| <[u8; 4]>::try_from(s).ok())
        .map(|a| u64::from(u32::from_be_bytes(a)))
        .ok_or(LayoutError::Truncated {
            need: (at + 4) as u64,
            have: b.len() as u64,
        })
}

fn array<const N: usize>(b: &[u8], at: usize) -> Result<[u8; N], LayoutError> {
    b.get(at..at + N)
        .and_then(|s| <[u8; N]>::try_from(s).ok())
        .ok_or(LayoutError::Truncated {
            need: (at + N) as u64,
            have: b.len() as u64,
        })
}

pub fn next_multiple(x: u64, k: u64) -> u64 {
    x.div_ceil(k) * k
}

/// The signed part of a share's header: the version identity and the encoding parameters.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SignedPrefix {
    pub format: MutableFormat,
    pub seqnum: u64,
    pub root_hash: Hash,
    /// The SDMF IV; MDMF has none (all zero, never serialized).
    pub iv: [u8; 16],
    pub k: u8,
    pub n: u8,
    pub segsize: u64,
    pub datalen: u64,
}

impl SignedPrefix {
    /// The exact signed bytes: `>BQ32s16sBBQQ` (SDMF, 75 bytes) or `>BQ32sBBQQ` (MDMF, 59).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(SDMF_SIGNED_PREFIX_LEN);
        out.push(match self.format {
            MutableFormat::Sdmf => SDMF_VERSION,
            MutableFormat::Mdmf => MDMF_VERSION,
        });
        out.extend_from_slice(&self.seqnum.to_be_bytes());
        out.extend_from_slice(&self.root_hash);
        if self.format == MutableFormat::Sdmf {
            out.extend_from_slice(&self.iv);
        }
        out.push(self.k);
        out.push(self.n);
        out.extend_from_slice(&self.segsize.to_be_bytes());
        out.extend_from_slice(&self.datalen.to_be_bytes());
        out
    }

    /// The checkstring a writer puts in its test vector: 57 (SDMF) or 41 (MDMF) bytes.
    pub fn checkstring(&self) -> Vec<u8> {
        let mut b = self.to_bytes();
        b.truncate(checkstring_len(self.format));
        b
    }

    /// Parses the signed prefix at the start of `b`.
    pub fn parse(b: &[u8]) -> Result<Self, LayoutError> {
        let version = *b
            .first()
            .ok_or(LayoutError::Truncated { need: 1, have: 0 })?;
        let format = match version {
            SDMF_VERSION => MutableFormat::Sdmf,
            MDMF_VERSION => MutableFormat::Mdmf,
            v => return Err(LayoutError::UnknownVersion(v)),
        };
        let need = signed_prefix_len(format);
        if b.len() < need {
            return Err(LayoutError::Truncated {
                need: need as u64,
                have: b.len() as u64,
            });
        }
        let (iv, p) = match format {
            MutableFormat::Sdmf => (array::<16>(b, 41)?, 57),
            MutableFormat::Mdmf => ([0u8; 16], 41),
        };
        Ok(SignedPrefix {
            format,
            seqnum: be_u64(b, 1)?,
            root_hash: array::<32>(b, 9)?,
            iv,
            k: b[p],
            n: b[p + 1],
            segsize: be_u64(b, p + 2)?,
            datalen: be_u64(b, p + 10)?,
        })
    }

    /// The segment geometry these parameters imply, checked for consistency.
    pub fn geometry(&self) -> Result<Geometry, LayoutError> {
        Geometry::new(
            self.format,
            u64::from(self.k),
            u64::from(self.n),
            self.segsize,
            self.datalen,
        )
    }
}

pub fn signed_prefix_len(format: MutableFormat) -> usize {
    match format {
        MutableFormat::Sdmf => SDMF_SIGNED_PREFIX_LEN,
        MutableFormat::Mdmf => MDMF_SIGNED_PREFIX_LEN,
    }
}

pub fn checkstring_len(format: MutableFormat) -> usize {
    match format {
        MutableFormat::Sdmf => SDMF_CHECKSTRING_LEN,
        MutableFormat::Mdmf => MDMF_CHECKSTRING_LEN,
    }
}

pub fn header_len(format: MutableFormat) -> usize {
    match format {
        MutableFormat::Sdmf => SDMF_HEADER_LEN,
        MutableFormat::Mdmf => MDMF_HEADER_LEN,
    }
}

/// Segment geometry (digest §4.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    pub format: MutableFormat,
    pub k: usize,
    pub n: usize,
    pub segsize: u64,
    pub datalen: u64,
    pub num_segments: u64,
    /// `segsize / k`: the block length of every segment but the last.
    pub block_size: u64,
    /// The block length of the last segment: `next_multiple(tail, k) / k`.
    pub tail_block_size: u64,
    /// The unpadded length of the last segment.
    pub tail_segment_len: u64,
}

impl Geometry {
    pub fn new(
        format: MutableFormat,
        k: u64,
        n: u64,
        segsize: u64,
        datalen: u64,
    ) -> Result<Self, LayoutError> {
        if k == 0 || k > n || n > 255 {
            return Err(LayoutError::BadParameters(
                "k and N must satisfy 1 <= k <= N <= 255",
            ));
        }
        if !segsize.is_multiple_of(k) {
            return Err(LayoutError::BadParameters(
                "segment size is not a multiple of k",
            ));
        }
        // segsize = 0 with datalen = 0 means zero segments (digest §4.4).
        let num_segments = if segsize == 0 {
            if datalen != 0 {
                return Err(LayoutError::BadParameters("zero segment size with data"));
            }
            0
        } else {
            datalen.div_ceil(segsize)
        };
        if num_segments > MAX_SEGMENTS {
            return Err(LayoutError::BadParameters("too many segments"));
        }
        if format == MutableFormat::Sdmf && num_segments > 1 {
            return Err(LayoutError::BadParameters("SDMF has at most one segment"));
        }
        let block_size = segsize / k;
        let (tail_segment_len, tail_block_size) = if num_segments == 0 {
            (0, 0)
        } else {
            let tail = datalen - segsize * (num_segments - 1);
            (tail, next_multiple(tail, k) / k)
        };
        Ok(Geometry {
            format,
            k: k as usize,
            n: n as usize,
            segsize,
            datalen,
            num_segments,
            block_size,
            tail_block_size,
            tail_segment_len,
        })
    }

    /// The block length of segment `seg`.
    pub fn block_len(&self, seg: u64) -> u64 {
        if seg + 1 == self.num_segments {
            self.tail_block_size
        } else {
            self.block_size
        }
    }

    /// The unpadded plaintext length of segment `seg`.
    pub fn segment_len(&self, seg: u64) -> u64 {
        if seg + 1 == self.num_segments {
            self.tail_segment_len
        } else {
            self.segsize
        }
    }

    /// The length of the share data region: all blocks (and MDMF salts).
    pub fn share_data_len(&self) -> u64 {
        if self.num_segments == 0 {
            return 0;
        }
        let per_salt = match self.format {
            MutableFormat::Sdmf => 0,
            MutableFormat::Mdmf => SALT_LEN as u64,
        };
        (self.block_size + per_salt) * (self.num_segments - 1) + self.tail_block_size + per_salt
    }

    /// The number of hashes in the flattened block hash tree.
    pub fn block_hash_tree_len(&self) -> u64 {
        (self.num_segments.max(1).next_power_of_two()) * 2 - 1
    }
}

/// A share's header: the signed prefix and where each region is, taken from the offset table and
/// checked to be ordered and within `u64` arithmetic (not yet against the share length, which a
/// reader may not know).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShareHeader {
    pub prefix: SignedPrefix,
    /// The raw signed prefix bytes (the signature covers exactly these).
    pub prefix_bytes: Vec<u8>,
    pub geometry: Geometry,
    pub verification_key: Range<u64>,
    pub signature: Range<u64>,
    pub share_hash_chain: Range<u64>,
    pub block_hash_tree: Range<u64>,
    pub share_data: Range<u64>,
    pub enc_privkey: Range<u64>,
    pub eof: u64,
}

fn range(start: u64, end: u64, what: &'static str) -> Result<Range<u64>, LayoutError> {
    if start > end {
        return Err(LayoutError::BadOffsets(what));
    }
    Ok(start..end)
}

impl ShareHeader {
    /// Parses the header (signed prefix and offset table) from the first bytes of a share:
    /// 107 bytes suffice for SDMF, 123 for MDMF.
    pub fn parse(b: &[u8]) -> Result<Self, LayoutError> {
        let prefix = SignedPrefix::parse(b)?;
        let geometry = prefix.geometry()?;
        let hl = header_len(prefix.format);
        if b.len() < hl {
            return Err(LayoutError::Truncated {
                need: hl as u64,
                have: b.len() as u64,
            });
        }
        let prefix_bytes = b[..signed_prefix_len(prefix.format)].to_vec();
        let h = match prefix.format {
            MutableFormat::Sdmf => {
                let sig = be_u32(b, 75)?;
                let shc = be_u32(b, 79)?;
                let bht = be_u32(b, 83)?;
                let sd = be_u32(b, 87)?;
                let epk = be_u64(b, 91)?;
                let eof = be_u64(b, 99)?;
                ShareHeader {
                    verification_key: range(SDMF_HEADER_LEN as u64, sig, "verification key")?,
                    signature: range(sig, shc, "signature")?,
                    share_hash_chain: range(shc, bht, "share hash chain")?,
                    block_hash_tree: range(bht, sd, "block hash tree")?,
                    share_data: range(sd, epk, "share data")?,
                    enc_privkey: range(epk, eof, "encrypted private key")?,
                    eof,
                    prefix,
                    prefix_bytes,
                    geometry,
                }
            }
            MutableFormat::Mdmf => {
                let epk = be_u64(b, 59)?;
                let shc = be_u64(b, 67)?;
                let sig = be_u64(b, 75)?;
                let vk = be_u64(b, 83)?;
                let vk_end = be_u64(b, 91)?;
                let sd = be_u64(b, 99)?;
                let bht = be_u64(b, 107)?;
                let eof = be_u64(b, 115)?;
                if epk < MDMF_HEADER_LEN as u64 || vk_end > sd {
                    return Err(LayoutError::BadOffsets("metadata overlaps header or data"));
                }
                ShareHeader {
                    enc_privkey: range(epk, shc, "encrypted private key")?,
                    share_hash_chain: range(shc, sig, "share hash chain")?,
                    signature: range(sig, vk, "signature")?,
                    verification_key: range(vk, vk_end, "verification key")?,
                    share_data: range(sd, bht, "share data")?,
                    block_hash_tree: range(bht, eof, "block hash tree")?,
                    eof,
                    prefix,
                    prefix_bytes,
                    geometry,
                }
            }
        };
        let chain_len = h.share_hash_chain.end - h.share_hash_chain.start;
        if chain_len % HASH_CHAIN_ENTRY_LEN as u64 != 0 {
            return Err(LayoutError::BadHashChainLength(chain_len));
        }
        let bht_len = h.block_hash_tree.end - h.block_hash_tree.start;
        let expected = geometry.block_hash_tree_len() * 32;
        if bht_len != expected {
            return Err(LayoutError::BadBlockHashTreeLength {
                got: bht_len,
                expected,
            });
        }
        let sd_len = h.share_data.end - h.share_data.start;
        if sd_len != geometry.share_data_len() {
            return Err(LayoutError::BadShareDataLength {
                got: sd_len,
                expected: geometry.share_data_len(),
            });
        }
        Ok(h)
    }

    /// Where segment `seg`'s stored block is (for MDMF: salt ‖ block).
    pub fn segment_range(&self, seg: u64) -> Option<Range<u64>> {
        let g = &self.geometry;
        if seg >= g.num_segments {
            return None;
        }
        let start = match g.format {
            MutableFormat::Sdmf => self.share_data.start,
            MutableFormat::Mdmf => self.share_data.start + seg * (g.block_size + SALT_LEN as u64),
        };
        let salt = match g.format {
            MutableFormat::Sdmf => 0,
            MutableFormat::Mdmf => SALT_LEN as u64,
        };
        Some(start..start + salt + g.block_len(seg))
    }
}

/// Parses a share hash chain region: `u16be index ‖ hash` entries, in any order.
pub fn parse_hash_chain(b: &[u8]) -> Result<BTreeMap<usize, Hash>, LayoutError> {
    if !b.len().is_multiple_of(HASH_CHAIN_ENTRY_LEN) {
        return Err(LayoutError::BadHashChainLength(b.len() as u64));
    }
    let mut out = BTreeMap::new();
    for e in b.chunks_exact(HASH_CHAIN_ENTRY_LEN) {
        let idx = u16::from_be_bytes([e[0], e[1]]) as usize;
        let h = array::<32>(e, 2)?;
        out.insert(idx, h);
    }
    Ok(out)
}

/// Parses a flattened hash tree region into hashes.
pub fn parse_hashes(b: &[u8]) -> Result<Vec<Hash>, LayoutError> {
    if !b.len().is_multiple_of(32) {
        return Err(LayoutError::BadBlockHashTreeLength {
            got: b.len() as u64,
            expected: (b.len() as u64 / 32) * 32,
        });
    }
    Ok(b.chunks_exact(32)
        .map(|c| {
            let mut h = [0u8; 32];
            h.copy_from_slice(c);
            h
        })
        .collect())
}

/// One stored block: the MDMF salt (SDMF blocks have none; the IV is in the prefix) and the
/// erasure-coded block bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredBlock {
    pub salt: Option<[u8; 16]>,
    pub data: Vec<u8>,
}

/// Every field of one share, as written or fully parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Share {
    pub prefix: SignedPrefix,
    pub verification_key: Vec<u8>,
    pub signature: Vec<u8>,
    /// The share hash chain (leaf excluded), by node index; written ascending.
    pub share_hash_chain: BTreeMap<usize, Hash>,
    pub block_hash_tree: Vec<Hash>,
    pub blocks: Vec<StoredBlock>,
    pub enc_privkey: Vec<u8>,
}

fn u32_field(v: usize, what: &'static str) -> Result<[u8; 4], LayoutError> {
    u32::try_from(v)
        .map(u32::to_be_bytes)
        .map_err(|_| LayoutError::FieldTooLarge(what))
}

impl Share {
    fn chain_bytes(&self) -> Result<Vec<u8>, LayoutError> {
        let mut out = Vec::with_capacity(self.share_hash_chain.len() * HASH_CHAIN_ENTRY_LEN);
        for (&i, h) in &self.share_hash_chain {
            let i = u16::try_from(i).map_err(|_| LayoutError::FieldTooLarge("hash index"))?;
            out.extend_from_slice(&i.to_be_bytes());
            out.extend_from_slice(h);
        }
        Ok(out)
    }

    fn data_bytes(&self) -> Result<Vec<u8>, LayoutError> {
        let mut out = Vec::new();
        for b in &self.blocks {
            match (self.prefix.format, b.salt) {
                (MutableFormat::Mdmf, Some(s)) => out.extend_from_slice(&s),
                (MutableFormat::Sdmf, None) => {}
                _ => {
                    return Err(LayoutError::BadParameters(
                        "salt presence does not match format",
                    ))
                }
            }
            out.extend_from_slice(&b.data);
        }
        Ok(out)
    }

    /// The MDMF metadata region written at offset 123: encprivkey ‖ chain ‖ signature ‖
    /// verification key, and the 123-byte header pointing at it. Errors if it would run into
    /// the share data at 2167.
    /// `data_len` is the length of the share data region (see [`Geometry::share_data_len`]); the
    /// blocks of `self` are not used, so a partial update can lay out the metadata alone.
    pub fn mdmf_header_and_metadata(
        &self,
        data_len: u64,
    ) -> Result<(Vec<u8>, Vec<u8>), LayoutError> {
        let chain = self.chain_bytes()?;
        let epk = MDMF_HEADER_LEN as u64;
        let shc = epk + self.enc_privkey.len() as u64;
        let sig = shc + chain.len() as u64;
        let vk = sig + self.signature.len() as u64;
        let vk_end = vk + self.verification_key.len() as u64;
        if vk_end > MDMF_DATA_OFFSET {
            return Err(LayoutError::FieldTooLarge(
                "MDMF metadata exceeds its reserved space",
            ));
        }
        let bht = MDMF_DATA_OFFSET + data_len;
        let eof = bht + self.block_hash_tree.len() as u64 * 32;
        let mut header = self.prefix.to_bytes();
        for o in [epk, shc, sig, vk, vk_end, MDMF_DATA_OFFSET, bht, eof] {
            header.extend_from_slice(&o.to_be_bytes());
        }
        let mut meta = Vec::with_capacity((vk_end - epk) as usize);
        meta.extend_from_slice(&self.enc_privkey);
        meta.extend_from_slice(&chain);
        meta.extend_from_slice(&self.signature);
        meta.extend_from_slice(&self.verification_key);
        Ok((header, meta))
    }

    /// The flattened block hash tree bytes.
    pub fn block_hash_tree_bytes(&self) -> Vec<u8> {
        self.block_hash_tree.iter().flatten().copied().collect()
    }

    /// The whole share as Tahoe lays it out.
    pub fn to_bytes(&self) -> Result<Vec<u8>, LayoutError> {
        match self.prefix.format {
            MutableFormat::Sdmf => {
                let chain = self.chain_bytes()?;
                let data = self.data_bytes()?;
                let sig = SDMF_HEADER_LEN + self.verification_key.len();
                let shc = sig + self.signature.len();
                let bht = shc + chain.len();
                let sd = bht + self.block_hash_tree.len() * 32;
                let epk = sd + data.len();
                let eof = epk + self.enc_privkey.len();
                let mut out = self.prefix.to_bytes();
                out.extend_from_slice(&u32_field(sig, "signature offset")?);
                out.extend_from_slice(&u32_field(shc, "share hash chain offset")?);
                out.extend_from_slice(&u32_field(bht, "block hash tree offset")?);
                out.extend_from_slice(&u32_field(sd, "share data offset")?);
                out.extend_from_slice(&(epk as u64).to_be_bytes());
                out.extend_from_slice(&(eof as u64).to_be_bytes());
                out.reserve(eof - out.len());
                out.extend_from_slice(&self.verification_key);
                out.extend_from_slice(&self.signature);
                out.extend_from_slice(&chain);
                out.extend_from_slice(&self.block_hash_tree_bytes());
                out.extend_from_slice(&data);
                out.extend_from_slice(&self.enc_privkey);
                Ok(out)
            }
            MutableFormat::Mdmf => {
                let data = self.data_bytes()?;
                let (mut out, meta) = self.mdmf_header_and_metadata(data.len() as u64)?;
                out.extend_from_slice(&meta);
                // The gap up to the share data is zero in a fresh share.
                out.resize(MDMF_DATA_OFFSET as usize, 0);
                out.extend_from_slice(&data);
                out.extend_from_slice(&self.block_hash_tree_bytes());
                Ok(out)
            }
        }
    }

    /// Parses a whole share from untrusted bytes (structure only: no hash or signature is
    /// checked here). Bytes past EOF are ignored.
    pub fn parse(b: &[u8]) -> Result<Self, LayoutError> {
        let h = ShareHeader::parse(b)?;
        let slice = |r: &Range<u64>| -> Result<&[u8], LayoutError> {
            let start =
                usize::try_from(r.start).map_err(|_| LayoutError::FieldTooLarge("offset"))?;
            let end = usize::try_from(r.end).map_err(|_| LayoutError::FieldTooLarge("offset"))?;
            b.get(start..end).ok_or(LayoutError::Truncated {
                need: r.end,
                have: b.len() as u64,
            })
        };
        let share_hash_chain = parse_hash_chain(slice(&h.share_hash_chain)?)?;
        let block_hash_tree = parse_hashes(slice(&h.block_hash_tree)?)?;
        let mut blocks = Vec::new();
        for seg in 0..h.geometry.num_segments {
            let r = h
                .segment_range(seg)
                .ok_or(LayoutError::BadOffsets("segment"))?;
            blocks.push(split_block(h.prefix.format, slice(&r)?)?);
        }
        Ok(Share {
            verification_key: slice(&h.verification_key)?.to_vec(),
            signature: slice(&h.signature)?.to_vec(),
            enc_privkey: slice(&h.enc_privkey)?.to_vec(),
            prefix: h.prefix,
            share_hash_chain,
            block_hash_tree,
            blocks,
        })
    }
}

/// Splits a stored block into (salt, block) for MDMF; SDMF blocks are stored bare.
pub fn split_block(format: MutableFormat, b: &[u8]) -> Result<StoredBlock, LayoutError> {
    match format {
        MutableFormat::Sdmf => Ok(StoredBlock {
            salt: None,
            data: b.to_vec(),
        }),
        MutableFormat::Mdmf => {
            let salt = array::<16>(b, 0)?;
            Ok(StoredBlock {
                salt: Some(salt),
                data: b[SALT_LEN..].to_vec(),
            })
        }
    }
}

/// The mutable share hash chain for share `shnum` of `n`: the sibling hashes of the share tree,
/// leaf excluded (digest §4.2).
pub fn share_hash_chain(share_tree: &[Hash], n: usize, shnum: usize) -> BTreeMap<usize, Hash> {
    hashtree::needed_hashes(n, shnum, false)
        .into_iter()
        .filter_map(|i| share_tree.get(i).map(|h| (i, *h)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn prefix(format: MutableFormat) -> SignedPrefix {
        SignedPrefix {
            format,
            seqnum: 0x0102030405060708,
            root_hash: [0xaa; 32],
            iv: if format == MutableFormat::Sdmf {
                [0xbb; 16]
            } else {
                [0; 16]
            },
            k: 3,
            n: 10,
            segsize: 171,
            datalen: 170,
        }
    }

    #[test]
    fn prefix_layout_matches_struct_formats() {
        // SDMF ">BQ32s16sBBQQ" = 1+8+32+16+1+1+8+8 = 75, MDMF ">BQ32sBBQQ" = 59.
        let s = prefix(MutableFormat::Sdmf).to_bytes();
        assert_eq!(s.len(), 75);
        assert_eq!(s[0], 0);
        assert_eq!(&s[1..9], &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(&s[41..57], &[0xbb; 16]);
        assert_eq!((s[57], s[58]), (3, 10));
        assert_eq!(&s[59..67], &171u64.to_be_bytes());
        assert_eq!(&s[67..75], &170u64.to_be_bytes());
        assert_eq!(prefix(MutableFormat::Sdmf).checkstring(), s[..57].to_vec());
        let m = prefix(MutableFormat::Mdmf).to_bytes();
        assert_eq!(m.len(), 59);
        assert_eq!(m[0], 1);
        assert_eq!((m[41], m[42]), (3, 10));
        assert_eq!(prefix(MutableFormat::Mdmf).checkstring().len(), 41);
        assert_eq!(
            SignedPrefix::parse(&s).unwrap(),
            prefix(MutableFormat::Sdmf)
        );
        assert_eq!(
            SignedPrefix::parse(&m).unwrap(),
            prefix(MutableFormat::Mdmf)
        );
    }

    fn sample_share(format: MutableFormat) -> Share {
        let p = prefix(format);
        let g = p.geometry().unwrap();
        Share {
            verification_key: vec![1; 294],
            signature: vec![2; 256],
            share_hash_chain: [
                (2usize, [3u8; 32]),
                (4, [4; 32]),
                (8, [5; 32]),
                (16, [6; 32]),
            ]
            .into_iter()
            .collect(),
            block_hash_tree: vec![[7; 32]],
            blocks: vec![StoredBlock {
                salt: (format == MutableFormat::Mdmf).then_some([9; 16]),
                data: vec![8; g.tail_block_size as usize],
            }],
            enc_privkey: vec![10; 1217],
            prefix: p,
        }
    }

    #[test]
    fn sdmf_offsets_match_tahoe_measurement() {
        // Digest §4.3: a 170-byte 3-of-10 SDMF share has offsets 401/657/793/825/882/2099.
        let s = sample_share(MutableFormat::Sdmf);
        let b = s.to_bytes().unwrap();
        let offs: Vec<u64> = vec![
            be_u32(&b, 75).unwrap(),
            be_u32(&b, 79).unwrap(),
            be_u32(&b, 83).unwrap(),
            be_u32(&b, 87).unwrap(),
            be_u64(&b, 91).unwrap(),
            be_u64(&b, 99).unwrap(),
        ];
        assert_eq!(offs, vec![401, 657, 793, 825, 882, 2099]);
        assert_eq!(b.len(), 2099);
        assert_eq!(Share::parse(&b).unwrap(), s);
    }

    #[test]
    fn mdmf_offsets_match_tahoe_measurement() {
        // Digest §4.4: 300000 bytes, 3-of-10: offsets 123, 1340, 1476, 1732, 2026, 2167, 102215,
        // 102439 (enc privkey 1217 bytes, 4 chain entries, 3 segments of block 43691).
        let mut s = sample_share(MutableFormat::Mdmf);
        s.prefix.segsize = 131073;
        s.prefix.datalen = 300000;
        let g = s.prefix.geometry().unwrap();
        assert_eq!(g.num_segments, 3);
        s.blocks = (0..3)
            .map(|i| StoredBlock {
                salt: Some([i as u8; 16]),
                data: vec![i as u8; g.block_len(i) as usize],
            })
            .collect();
        s.block_hash_tree = vec![[7; 32]; 7];
        let b = s.to_bytes().unwrap();
        let offs: Vec<u64> = (0..8).map(|i| be_u64(&b, 59 + 8 * i).unwrap()).collect();
        assert_eq!(
            offs,
            vec![123, 1340, 1476, 1732, 2026, 2167, 102215, 102439]
        );
        assert!(b[2026..2167].iter().all(|&x| x == 0));
        assert_eq!(Share::parse(&b).unwrap(), s);
        let h = ShareHeader::parse(&b[..123]).unwrap();
        assert_eq!(h.segment_range(1), Some(2167 + 43707..2167 + 2 * 43707));
    }

    #[test]
    fn empty_mdmf_eof_is_2199() {
        // Digest §4.4: empty MDMF has EOF 2199 (block tree = [empty_leaf(0)]).
        let mut s = sample_share(MutableFormat::Mdmf);
        s.prefix.segsize = 131073;
        s.prefix.datalen = 0;
        s.blocks.clear();
        s.block_hash_tree = hashtree::build(&[]);
        let b = s.to_bytes().unwrap();
        assert_eq!(b.len(), 2199);
        assert_eq!(Share::parse(&b).unwrap(), s);
    }

    #[test]
    fn typed_errors() {
        let b = sample_share(MutableFormat::Sdmf).to_bytes().unwrap();
        assert!(matches!(
            Share::parse(&b[..1000]),
            Err(LayoutError::Truncated { .. })
        ));
        let mut v = b.clone();
        v[0] = 7;
        assert_eq!(Share::parse(&v), Err(LayoutError::UnknownVersion(7)));
        let mut v = b.clone();
        v[57] = 0;
        assert!(matches!(
            Share::parse(&v),
            Err(LayoutError::BadParameters(_))
        ));
        let mut v = b.clone();
        v[75..79].copy_from_slice(&5000u32.to_be_bytes());
        assert!(matches!(Share::parse(&v), Err(LayoutError::BadOffsets(_))));
        assert_eq!(
            Share::parse(&[]),
            Err(LayoutError::Truncated { need: 1, have: 0 })
        );
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..3000)) {
            let _ = Share::parse(&b);
            let _ = ShareHeader::parse(&b);
        }

        #[test]
        fn mutated_shares_never_panic(
            fmt in prop::bool::ANY,
            edits in proptest::collection::vec((0usize..2300, any::<u8>()), 1..8),
            cut in 0usize..2400,
        ) {
            let f = if fmt { MutableFormat::Mdmf } else { MutableFormat::Sdmf };
            let mut b = sample_share(f).to_bytes().unwrap();
            for (i, x) in edits {
                if let Some(p) = b.get_mut(i) { *p = x; }
            }
            b.truncate(cut);
            let _ = Share::parse(&b);
        }
    }
}
