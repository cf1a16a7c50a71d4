//! The immutable share body (digest §3.6): what a client writes at offset 0 of a share.
//!
//! ```text
//! header (v1: 9 × u32 = 0x24 bytes; v2: u32 + 8 × u64 = 0x44 bytes)
//! data               share_size bytes: the blocks of every segment, in order
//! plaintext tree     (2P−1)·32 zero bytes (unused since Tahoe 1.3)
//! crypttext tree     (2P−1)·32 bytes, the full flattened crypttext segment hash tree
//! block hash tree    (2P−1)·32 bytes, this share's full flattened block hash tree
//! share hash chain   (u16be index ‖ 32-byte hash)*, in CPython set order
//! UEB                u32 (v1) / u64 (v2) length ‖ UEB bytes
//! ```
//! `P = next_pow2(num_segments)`. v2 is used only when a value does not fit in 32 bits (or when
//! forced, for tests). Readers use the offset table, never the computed positions; the parsers
//! here take untrusted bytes and return typed errors, never panic.
//!
//! The share hash chain order reproduces Tahoe byte for byte: Python builds
//! `set(siblings)`, adds the leaf, and iterates the set; [`share_hash_chain_indices`] simulates
//! CPython's set table for small integers (whose hash is the integer itself).

use super::params::Geometry;
use crate::crypto::hash::Hash;
use crate::crypto::hashtree;
use std::collections::BTreeMap;
use thiserror::Error;

pub const HEADER_V1_LEN: u64 = 0x24;
pub const HEADER_V2_LEN: u64 = 0x44;
/// Bytes of one share hash chain entry (u16 index + hash).
pub const SHARE_HASH_ENTRY_LEN: u64 = 34;

/// Why share bytes could not be parsed.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum LayoutError {
    #[error("share: {needed} bytes needed, {got} available")]
    Truncated { needed: u64, got: u64 },
    #[error("share: unknown layout version {0}")]
    UnknownVersion(u32),
    #[error("share: offset table is inconsistent")]
    BadOffsets,
    #[error("share: share hash chain length is not a multiple of 34")]
    BadShareHashes,
    #[error("share: conflicting entries for share hash node {0}")]
    ConflictingShareHash(usize),
    #[error("share: URI extension length {0} is too large")]
    UebTooLong(u64),
}

/// Share layout version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

/// The offset table, every offset from the start of the share body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Offsets {
    pub data: u64,
    pub plaintext_hash_tree: u64,
    pub crypttext_hash_tree: u64,
    pub block_hashes: u64,
    pub share_hashes: u64,
    pub uri_extension: u64,
}

/// A share's header: version, the informational sizes and the offset table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShareLayout {
    pub version: Version,
    pub block_size: u64,
    pub data_size: u64,
    pub offsets: Offsets,
}

/// The number of share hash chain entries for `total` shares: `log2(next_pow2(N)) + 1`.
pub fn share_hash_count(total: usize) -> u64 {
    u64::from(hashtree::padded_leaves(total).trailing_zeros()) + 1
}

impl ShareLayout {
    /// The layout Tahoe's uploader writes for `geom`: v1 when everything fits in 32 bits.
    pub fn new(geom: &Geometry, force_v2: bool) -> ShareLayout {
        let tree = hashtree::tree_size(geom.num_segments as usize) as u64 * 32;
        let shares = share_hash_count(geom.total) * SHARE_HASH_ENTRY_LEN;
        let make = |version: Version, start: u64| {
            let data = start;
            let pt = data + geom.share_size;
            let ct = pt + tree;
            let bh = ct + tree;
            let sh = bh + tree;
            ShareLayout {
                version,
                block_size: geom.block_size,
                data_size: geom.share_size,
                offsets: Offsets {
                    data,
                    plaintext_hash_tree: pt,
                    crypttext_hash_tree: ct,
                    block_hashes: bh,
                    share_hashes: sh,
                    uri_extension: sh + shares,
                },
            }
        };
        let v1 = make(Version::V1, HEADER_V1_LEN);
        let fits = |x: u64| x < 1 << 32;
        if !force_v2 && fits(v1.block_size) && fits(v1.data_size) && fits(v1.offsets.uri_extension)
        {
            v1
        } else {
            make(Version::V2, HEADER_V2_LEN)
        }
    }

    pub fn header_len(&self) -> u64 {
        match self.version {
            Version::V1 => HEADER_V1_LEN,
            Version::V2 => HEADER_V2_LEN,
        }
    }

    /// Width of the UEB length field (4 or 8).
    pub fn ueb_length_size(&self) -> u64 {
        match self.version {
            Version::V1 => 4,
            Version::V2 => 8,
        }
    }

    /// The serialized header.
    pub fn header(&self) -> Vec<u8> {
        let o = &self.offsets;
        let fields = [
            self.block_size,
            self.data_size,
            o.data,
            o.plaintext_hash_tree,
            o.crypttext_hash_tree,
            o.block_hashes,
            o.share_hashes,
            o.uri_extension,
        ];
        let mut out = Vec::with_capacity(self.header_len() as usize);
        match self.version {
            Version::V1 => {
                out.extend_from_slice(&1u32.to_be_bytes());
                for f in fields {
                    out.extend_from_slice(&(f as u32).to_be_bytes());
                }
            }
            Version::V2 => {
                out.extend_from_slice(&2u32.to_be_bytes());
                for f in fields {
                    out.extend_from_slice(&f.to_be_bytes());
                }
            }
        }
        out
    }

    /// How many header bytes a reader needs, from the first 4 bytes of a share.
    pub fn header_len_from_version(first4: &[u8]) -> Result<u64, LayoutError> {
        match read_u32(first4, 0)? {
            1 => Ok(HEADER_V1_LEN),
            2 => Ok(HEADER_V2_LEN),
            v => Err(LayoutError::UnknownVersion(v)),
        }
    }

    /// Parses an untrusted header. Requires the offsets to be ordered, the data to start after
    /// the header, and Tahoe's divisibility rules for the block and share hash regions.
    pub fn parse(header: &[u8]) -> Result<ShareLayout, LayoutError> {
        let (version, fields) = match read_u32(header, 0)? {
            1 => {
                let mut f = [0u64; 8];
                for (i, v) in f.iter_mut().enumerate() {
                    *v = u64::from(read_u32(header, 4 + 4 * i)?);
                }
                (Version::V1, f)
            }
            2 => {
                let mut f = [0u64; 8];
                for (i, v) in f.iter_mut().enumerate() {
                    *v = read_u64(header, 4 + 8 * i)?;
                }
                (Version::V2, f)
            }
            v => return Err(LayoutError::UnknownVersion(v)),
        };
        let layout = ShareLayout {
            version,
            block_size: fields[0],
            data_size: fields[1],
            offsets: Offsets {
                data: fields[2],
                plaintext_hash_tree: fields[3],
                crypttext_hash_tree: fields[4],
                block_hashes: fields[5],
                share_hashes: fields[6],
                uri_extension: fields[7],
            },
        };
        let o = &layout.offsets;
        let ordered = [
            layout.header_len(),
            o.data,
            o.plaintext_hash_tree,
            o.crypttext_hash_tree,
            o.block_hashes,
            o.share_hashes,
            o.uri_extension,
        ]
        .windows(2)
        .all(|w| w[0] <= w[1]);
        if !ordered || o.uri_extension > 1 << 62 {
            return Err(LayoutError::BadOffsets);
        }
        if !(o.uri_extension - o.share_hashes).is_multiple_of(SHARE_HASH_ENTRY_LEN)
            || !(o.share_hashes - o.block_hashes).is_multiple_of(32)
        {
            return Err(LayoutError::BadShareHashes);
        }
        Ok(layout)
    }
}

fn read_u32(b: &[u8], at: usize) -> Result<u32, LayoutError> {
    b.get(at..at + 4)
        .and_then(|s| s.try_into().ok())
        .map(u32::from_be_bytes)
        .ok_or(LayoutError::Truncated {
            needed: at as u64 + 4,
            got: b.len() as u64,
        })
}

fn read_u64(b: &[u8], at: usize) -> Result<u64, LayoutError> {
    b.get(at..at + 8)
        .and_then(|s| s.try_into().ok())
        .map(u64::from_be_bytes)
        .ok_or(LayoutError::Truncated {
            needed: at as u64 + 8,
            got: b.len() as u64,
        })
}

/// Reads the UEB length field (`field` is 4 or 8 bytes, as the version says).
pub fn parse_ueb_length(layout: &ShareLayout, field: &[u8]) -> Result<u64, LayoutError> {
    let len = match layout.version {
        Version::V1 => u64::from(read_u32(field, 0)?),
        Version::V2 => read_u64(field, 0)?,
    };
    if len >= super::ueb::MAX_UEB_SIZE as u64 {
        return Err(LayoutError::UebTooLong(len));
    }
    Ok(len)
}

/// A small model of CPython's `set` table, enough to reproduce the iteration order of a set of
/// small non-negative ints built by successive `add`s (`setobject.c`: 8 slots initially, 9
/// linear probes when they fit below the mask, then perturbed probing with shift 5; the table is
/// rebuilt at `used*4` slots when `fill*5 >= mask*3`, reinserting in old slot order).
struct PySet {
    table: Vec<Option<usize>>,
    used: usize,
}

impl PySet {
    const LINEAR_PROBES: usize = 9;
    const PERTURB_SHIFT: u32 = 5;

    fn new() -> Self {
        PySet {
            table: vec![None; 8],
            used: 0,
        }
    }

    /// The slot `key` goes to (or is already in) in `table`.
    fn probe(table: &[Option<usize>], key: usize) -> usize {
        let mask = table.len() - 1;
        let mut i = key & mask;
        let mut perturb = key;
        loop {
            let probes = if i + Self::LINEAR_PROBES <= mask {
                Self::LINEAR_PROBES
            } else {
                0
            };
            for (j, slot) in table.iter().enumerate().skip(i).take(probes + 1) {
                match slot {
                    None => return j,
                    Some(k) if *k == key => return j,
                    Some(_) => {}
                }
            }
            perturb >>= Self::PERTURB_SHIFT;
            i = (i * 5 + 1 + perturb) & mask;
        }
    }

    fn add(&mut self, key: usize) {
        let slot = Self::probe(&self.table, key);
        if self.table[slot].is_some() {
            return;
        }
        self.table[slot] = Some(key);
        self.used += 1;
        // No deletions ever happen, so fill == used.
        let mask = self.table.len() - 1;
        if self.used * 5 >= mask * 3 {
            let minused = if self.used > 50000 {
                self.used * 2
            } else {
                self.used * 4
            };
            let mut size = 8;
            while size <= minused {
                size <<= 1;
            }
            let mut table = vec![None; size];
            for key in self.table.iter().flatten() {
                let s = Self::probe(&table, *key);
                table[s] = Some(*key);
            }
            self.table = table;
        }
    }

    fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        self.table.iter().flatten().copied()
    }
}

/// The node indices of share `shnum`'s hash chain in the share hash tree of `total` leaves, in
/// the order Tahoe 1.20 writes them: `set(needed_for(leaf))`, then `add(leaf)`, iterated.
pub fn share_hash_chain_indices(total: usize, shnum: usize) -> Vec<usize> {
    let p = hashtree::padded_leaves(total);
    let leaf = p - 1 + shnum;
    let mut set = PySet::new();
    let mut here = leaf;
    while here != 0 {
        let sibling = if here % 2 == 1 { here + 1 } else { here - 1 };
        set.add(sibling);
        here = (here - 1) / 2;
    }
    set.add(leaf);
    set.iter().collect()
}

/// Serializes share hash chain entries.
pub fn serialize_share_hashes(entries: &[(usize, Hash)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(entries.len() * 34);
    for (i, h) in entries {
        out.extend_from_slice(&(*i as u16).to_be_bytes());
        out.extend_from_slice(h);
    }
    out
}

/// Parses an untrusted share hash chain (any order; repeated identical entries are tolerated).
pub fn parse_share_hashes(data: &[u8]) -> Result<BTreeMap<usize, Hash>, LayoutError> {
    if !data.len().is_multiple_of(34) {
        return Err(LayoutError::BadShareHashes);
    }
    let mut out = BTreeMap::new();
    for entry in data.chunks_exact(34) {
        let idx = usize::from(u16::from_be_bytes([entry[0], entry[1]]));
        let mut h = [0u8; 32];
        h.copy_from_slice(&entry[2..]);
        if out.insert(idx, h).is_some_and(|old| old != h) {
            return Err(LayoutError::ConflictingShareHash(idx));
        }
    }
    Ok(out)
}

/// Everything after the data region of one share: zero plaintext tree, crypttext tree, block
/// hash tree, share hash chain, UEB length and UEB.
pub fn trailer(
    layout: &ShareLayout,
    crypttext_tree: &[Hash],
    block_tree: &[Hash],
    share_hashes: &[(usize, Hash)],
    ueb: &[u8],
) -> Vec<u8> {
    let tree_bytes = crypttext_tree.len() * 32;
    let mut out = Vec::with_capacity(3 * tree_bytes + share_hashes.len() * 34 + 8 + ueb.len());
    out.resize(tree_bytes, 0);
    for h in crypttext_tree.iter().chain(block_tree) {
        out.extend_from_slice(h);
    }
    out.extend_from_slice(&serialize_share_hashes(share_hashes));
    match layout.version {
        Version::V1 => out.extend_from_slice(&(ueb.len() as u32).to_be_bytes()),
        Version::V2 => out.extend_from_slice(&(ueb.len() as u64).to_be_bytes()),
    }
    out.extend_from_slice(ueb);
    out
}

/// A whole share body split into its regions (for tools, tests and fuzzing; the downloader
/// reads only the ranges it needs).
#[derive(Debug)]
pub struct ShareBody<'a> {
    pub layout: ShareLayout,
    pub data: &'a [u8],
    pub crypttext_hash_tree: &'a [u8],
    pub block_hash_tree: &'a [u8],
    pub share_hashes: BTreeMap<usize, Hash>,
    pub ueb: &'a [u8],
}

/// Splits untrusted share bytes by the offset table.
pub fn parse_share_body(body: &[u8]) -> Result<ShareBody<'_>, LayoutError> {
    let hl = ShareLayout::header_len_from_version(body)?;
    let layout = ShareLayout::parse(body.get(..hl as usize).ok_or(LayoutError::Truncated {
        needed: hl,
        got: body.len() as u64,
    })?)?;
    let region = |a: u64, b: u64| -> Result<&[u8], LayoutError> {
        let got = body.len() as u64;
        if b > got {
            return Err(LayoutError::Truncated { needed: b, got });
        }
        Ok(&body[a as usize..b as usize])
    };
    let o = &layout.offsets;
    let data = region(o.data, o.plaintext_hash_tree)?;
    let crypttext_hash_tree = region(o.crypttext_hash_tree, o.block_hashes)?;
    let block_hash_tree = region(o.block_hashes, o.share_hashes)?;
    let share_hashes = parse_share_hashes(region(o.share_hashes, o.uri_extension)?)?;
    let lsize = layout.ueb_length_size();
    let len = parse_ueb_length(&layout, region(o.uri_extension, o.uri_extension + lsize)?)?;
    let ueb_start = o.uri_extension + lsize;
    let ueb = region(ueb_start, ueb_start + len)?;
    Ok(ShareBody {
        layout: layout.clone(),
        data,
        crypttext_hash_tree,
        block_hash_tree,
        share_hashes,
        ueb,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::immutable::params::EncodingParams;

    #[test]
    fn chain_order_matches_cpython() {
        // Digest §3.6: N=5, shnum 4 → [1, 11, 12, 6].
        assert_eq!(share_hash_chain_indices(5, 4), vec![1, 11, 12, 6]);
        // N=10 happens to be ascending (digest §3.6).
        for sh in 0..10 {
            let got = share_hash_chain_indices(10, sh);
            let mut sorted = got.clone();
            sorted.sort();
            assert_eq!(got, sorted);
        }
        // N=1: the chain is the leaf, which is the root.
        assert_eq!(share_hash_chain_indices(1, 0), vec![0]);
        // Same members as the tree's needed set, count log2(P)+1.
        for n in [1usize, 2, 3, 4, 5, 8, 9, 16, 17, 100, 255, 256] {
            for sh in [0, n / 2, n - 1] {
                let got = share_hash_chain_indices(n, sh);
                assert_eq!(got.len() as u64, share_hash_count(n));
                let mut want: Vec<usize> =
                    hashtree::needed_hashes(n, sh, true).into_iter().collect();
                if n == 1 {
                    want = vec![0];
                }
                let mut g2 = got.clone();
                g2.sort();
                assert_eq!(g2, want, "n={n} sh={sh}");
            }
        }
    }

    /// Independent check of a few orders computed by hand with CPython's rules: N=3, sh 0:
    /// P=4, leaf 3, siblings [4, 2] → slots 4, 2; add 3 → slot 3 ⇒ iteration [2, 3, 4].
    #[test]
    fn chain_order_small_examples() {
        assert_eq!(share_hash_chain_indices(3, 0), vec![2, 3, 4]);
        // N=2, sh 1: P=2, leaf 2, sibling 1 → [1, 2].
        assert_eq!(share_hash_chain_indices(2, 1), vec![1, 2]);
        // N=4, sh 3: leaf 6, siblings [5, 1] → slots 5, 1; add 6 ⇒ [1, 5, 6].
        assert_eq!(share_hash_chain_indices(4, 3), vec![1, 5, 6]);
    }

    #[test]
    fn header_roundtrip_v1_v2() {
        let g = Geometry::new(1000, &EncodingParams::new(3, 10)).unwrap();
        for force in [false, true] {
            let l = ShareLayout::new(&g, force);
            assert_eq!(l.version, if force { Version::V2 } else { Version::V1 });
            let h = l.header();
            assert_eq!(h.len() as u64, l.header_len());
            assert_eq!(l.offsets.data, l.header_len());
            assert_eq!(ShareLayout::parse(&h).unwrap(), l);
        }
        let l = ShareLayout::new(&g, false);
        // 0x24 + 334 + 3*32 per tree; 5 share hashes.
        assert_eq!(l.offsets.plaintext_hash_tree, 0x24 + 334);
        assert_eq!(l.offsets.uri_extension, 0x24 + 334 + 96 + 5 * 34);
    }

    #[test]
    fn big_file_is_v2() {
        let g = Geometry::new((1u64 << 32) * 3 + 7, &EncodingParams::new(3, 10)).unwrap();
        assert_eq!(ShareLayout::new(&g, false).version, Version::V2);
    }

    #[test]
    fn parse_rejects() {
        assert!(matches!(
            ShareLayout::parse(&[0, 0, 0, 3]),
            Err(LayoutError::UnknownVersion(3))
        ));
        assert!(matches!(
            ShareLayout::parse(&[0, 0, 0, 1, 0]),
            Err(LayoutError::Truncated { .. })
        ));
        let g = Geometry::new(1000, &EncodingParams::new(3, 10)).unwrap();
        let mut h = ShareLayout::new(&g, false).header();
        h[0x23] ^= 1; // uri_extension offset no longer share_hashes + 34m
        assert!(ShareLayout::parse(&h).is_err());
        let mut h = ShareLayout::new(&g, false).header();
        h[0x0f] = 0; // data offset before the end of the header
        assert_eq!(ShareLayout::parse(&h), Err(LayoutError::BadOffsets));
        assert_eq!(
            parse_share_hashes(&[0; 33]),
            Err(LayoutError::BadShareHashes)
        );
        let mut two = vec![0u8; 68];
        two[35] = 0;
        two[40] = 1;
        assert_eq!(
            parse_share_hashes(&two),
            Err(LayoutError::ConflictingShareHash(0))
        );
    }
}
