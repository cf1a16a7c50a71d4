//! Pure encoding of mutable contents into shares and decoding back (digest §4.1, §4.2).
//!
//! Per segment: `key = P(DATAKEY_TAG, salt, readkey)[:16]` (the SDMF IV is its single segment's
//! salt), AES-CTR from counter 0, zero-pad to `segsize` (the tail to `next_multiple(tail, k)`),
//! split into k pieces, zfec-encode into N blocks. Block hashes are `T(block)` for SDMF and
//! `T(salt ‖ block)` for MDMF; each share's block hash tree root is a leaf of the share hash tree
//! whose root `R` is signed in the prefix.

use super::keys::{ReaderKeys, SigningKeyPair};
use super::layout::{self, Geometry, Share, SignedPrefix, StoredBlock};
use super::MutableError;
use crate::cap::MutableFormat;
use crate::codec::Codec;
use crate::crypto::aes::ctr_in_place;
use crate::crypto::hash::{block_hash, Hash};
use crate::crypto::hashtree;
use std::collections::BTreeMap;

/// Tahoe's `DEFAULT_MUTABLE_MAX_SEGMENT_SIZE`.
pub const MDMF_MAX_SEGMENT_SIZE: u64 = 128 * 1024;

/// The geometry of new contents of `datalen` bytes.
pub fn new_geometry(
    format: MutableFormat,
    k: u8,
    n: u8,
    datalen: u64,
) -> Result<Geometry, MutableError> {
    let kk = u64::from(k.max(1));
    let segsize = match format {
        MutableFormat::Sdmf => layout::next_multiple(datalen, kk),
        MutableFormat::Mdmf => layout::next_multiple(MDMF_MAX_SEGMENT_SIZE, kk),
    };
    Ok(Geometry::new(
        format,
        u64::from(k),
        u64::from(n),
        segsize,
        datalen,
    )?)
}

/// The block hash tree leaf of one block.
pub fn block_leaf(format: MutableFormat, salt: &[u8; 16], block: &[u8]) -> Hash {
    match format {
        MutableFormat::Sdmf => block_hash(block),
        MutableFormat::Mdmf => {
            let mut h = crate::crypto::hash::TaggedHasher::new(crate::crypto::hash::tags::BLOCK);
            h.update(salt);
            h.update(block);
            h.finalize()
        }
    }
}

/// One encoded segment: its salt (SDMF: the IV) and its N blocks, by share number.
#[derive(Clone, Debug)]
pub struct EncodedSegment {
    pub salt: [u8; 16],
    pub blocks: Vec<Vec<u8>>,
}

/// Encrypts and erasure-codes segment `seg` (whose plaintext is `plain`, of exactly
/// `g.segment_len(seg)` bytes).
pub fn encode_segment(
    g: &Geometry,
    codec: &Codec,
    reader: &ReaderKeys,
    seg: u64,
    plain: &[u8],
    salt: [u8; 16],
) -> Result<EncodedSegment, MutableError> {
    if plain.len() as u64 != g.segment_len(seg) {
        return Err(MutableError::Internal("segment length"));
    }
    let bl = g.block_len(seg) as usize;
    if bl == 0 {
        // A segment exists only for non-empty data, so its blocks are never empty.
        return Err(MutableError::Internal("empty segment"));
    }
    let mut padded = vec![0u8; bl * g.k];
    padded[..plain.len()].copy_from_slice(plain);
    ctr_in_place(&reader.data_key(&salt), &mut padded[..plain.len()]);
    let inputs: Vec<&[u8]> = padded.chunks(bl).collect();
    let mut parity = vec![vec![0u8; bl]; g.n - g.k];
    {
        let mut outs: Vec<&mut [u8]> = parity.iter_mut().map(|p| p.as_mut_slice()).collect();
        codec.encode(&inputs, &mut outs)?;
    }
    let mut blocks: Vec<Vec<u8>> = inputs.iter().map(|b| b.to_vec()).collect();
    blocks.extend(parity);
    Ok(EncodedSegment { salt, blocks })
}

/// Decodes segment `seg` from k verified blocks (`(shnum, block)`), decrypts it with `salt`'s key
/// and returns its plaintext (truncated to the segment length).
pub fn decode_segment(
    g: &Geometry,
    codec: &Codec,
    reader: &ReaderKeys,
    seg: u64,
    salt: &[u8; 16],
    blocks: &[(usize, &[u8])],
) -> Result<Vec<u8>, MutableError> {
    let bl = g.block_len(seg) as usize;
    let ids: Vec<usize> = blocks.iter().map(|b| b.0).collect();
    let dec = codec.decoder(&ids)?;
    let ins: Vec<&[u8]> = blocks.iter().map(|b| b.1).collect();
    let mut pieces = vec![vec![0u8; bl]; g.k];
    {
        let mut outs: Vec<&mut [u8]> = pieces.iter_mut().map(|p| p.as_mut_slice()).collect();
        dec.decode(&ins, &mut outs)?;
    }
    let mut plain: Vec<u8> = pieces.concat();
    plain.truncate(g.segment_len(seg) as usize);
    ctr_in_place(&reader.data_key(salt), &mut plain);
    Ok(plain)
}

/// A signed version: the prefix, its signature, every share's block hash tree and the share tree.
#[derive(Clone, Debug)]
pub struct SignedVersion {
    pub prefix: SignedPrefix,
    pub signature: Vec<u8>,
    pub block_trees: Vec<Vec<Hash>>,
    pub share_tree: Vec<Hash>,
}

impl SignedVersion {
    /// Builds the trees over each share's block-hash leaves (`leaves[shnum][seg]`), and signs.
    pub fn sign(
        g: &Geometry,
        seqnum: u64,
        iv: [u8; 16],
        leaves: &[Vec<Hash>],
        keypair: &SigningKeyPair,
    ) -> Result<Self, MutableError> {
        let block_trees: Vec<Vec<Hash>> = leaves.iter().map(|l| hashtree::build(l)).collect();
        let roots: Vec<Hash> = block_trees.iter().map(|t| t[0]).collect();
        let share_tree = hashtree::build(&roots);
        let prefix = SignedPrefix {
            format: g.format,
            seqnum,
            root_hash: share_tree[0],
            iv: if g.format == MutableFormat::Sdmf {
                iv
            } else {
                [0; 16]
            },
            k: g.k as u8,
            n: g.n as u8,
            segsize: g.segsize,
            datalen: g.datalen,
        };
        let signature = keypair.sign(&prefix.to_bytes())?;
        Ok(SignedVersion {
            prefix,
            signature,
            block_trees,
            share_tree,
        })
    }

    /// The share hash chain of share `shnum`.
    pub fn chain(&self, shnum: usize) -> BTreeMap<usize, Hash> {
        layout::share_hash_chain(&self.share_tree, self.prefix.n as usize, shnum)
    }
}

fn random_salt() -> [u8; 16] {
    use rand::RngCore;
    let mut s = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut s);
    s
}

/// Encodes `plaintext` as a complete new version: every share, ready to lay out.
pub fn encode_version(
    format: MutableFormat,
    k: u8,
    n: u8,
    seqnum: u64,
    plaintext: &[u8],
    keypair: &SigningKeyPair,
) -> Result<Vec<Share>, MutableError> {
    let g = new_geometry(format, k, n, plaintext.len() as u64)?;
    let codec = Codec::new(g.k, g.n)?;
    let keys = keypair.file_keys();
    let iv = random_salt();
    let mut segments = Vec::with_capacity(g.num_segments as usize);
    let mut leaves = vec![Vec::with_capacity(g.num_segments as usize); g.n];
    for seg in 0..g.num_segments {
        let start = (seg * g.segsize) as usize;
        let end = start + g.segment_len(seg) as usize;
        let salt = match format {
            MutableFormat::Sdmf => iv,
            MutableFormat::Mdmf => random_salt(),
        };
        let es = encode_segment(&g, &codec, &keys.reader, seg, &plaintext[start..end], salt)?;
        for (sh, b) in es.blocks.iter().enumerate() {
            leaves[sh].push(block_leaf(format, &es.salt, b));
        }
        segments.push(es);
    }
    let sv = SignedVersion::sign(&g, seqnum, iv, &leaves, keypair)?;
    let enc_privkey = keys.encrypt_private_key(keypair.pkcs8_der());
    Ok((0..g.n)
        .map(|sh| Share {
            prefix: sv.prefix.clone(),
            verification_key: keypair.spki_der().to_vec(),
            signature: sv.signature.clone(),
            share_hash_chain: sv.chain(sh),
            block_hash_tree: sv.block_trees[sh].clone(),
            blocks: segments
                .iter()
                .map(|s| StoredBlock {
                    salt: (format == MutableFormat::Mdmf).then_some(s.salt),
                    data: s.blocks[sh].clone(),
                })
                .collect(),
            enc_privkey: enc_privkey.clone(),
        })
        .collect())
}

/// A fresh random salt (exposed for partial MDMF updates).
pub fn fresh_salt() -> [u8; 16] {
    random_salt()
}
