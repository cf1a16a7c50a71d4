//! SHA-256d and Tahoe's tagged hashes.
//!
//! `tagged_hash(tag, v) = SHA256(SHA256(ns(tag) ‖ v))`, and the pair form hashes
//! `ns(tag) ‖ ns(a) ‖ ns(b)`. Every use in Tahoe has its own tag; each gets a named function here
//! so that callers cannot mix them up. Truncations are part of the function's return type.

use crate::util::netstring;
use sha2::{Digest, Sha256};

/// The tag strings, byte for byte as Tahoe 1.20 spells them.
pub mod tags {
    pub const STORAGE_INDEX: &[u8] = b"allmydata_immutable_key_to_storage_index_v1";
    pub const CONVERGENT_KEY: &[u8] = b"allmydata_immutable_content_to_key_with_added_secret_v1+";
    pub const BLOCK: &[u8] = b"allmydata_encoded_subshare_v1";
    pub const URI_EXTENSION: &[u8] = b"allmydata_uri_extension_v1";
    pub const CRYPTTEXT: &[u8] = b"allmydata_crypttext_v1";
    pub const CRYPTTEXT_SEGMENT: &[u8] = b"allmydata_crypttext_segment_v1";
    pub const PLAINTEXT: &[u8] = b"allmydata_plaintext_v1";
    pub const PLAINTEXT_SEGMENT: &[u8] = b"allmydata_plaintext_segment_v1";
    pub const MERKLE_EMPTY_LEAF: &[u8] = b"Merkle tree empty leaf";
    pub const MERKLE_INTERNAL: &[u8] = b"Merkle tree internal node";
    pub const MUTABLE_WRITEKEY: &[u8] = b"allmydata_mutable_privkey_to_writekey_v1";
    pub const MUTABLE_READKEY: &[u8] = b"allmydata_mutable_writekey_to_readkey_v1";
    pub const MUTABLE_STORAGE_INDEX: &[u8] = b"allmydata_mutable_readkey_to_storage_index_v1";
    pub const MUTABLE_PUBKEY: &[u8] = b"allmydata_mutable_pubkey_to_fingerprint_v1";
    pub const MUTABLE_DATAKEY: &[u8] = b"allmydata_mutable_readkey_to_datakey_v1";
    pub const WRITE_ENABLER_MASTER: &[u8] =
        b"allmydata_mutable_writekey_to_write_enabler_master_v1";
    pub const WRITE_ENABLER: &[u8] =
        b"allmydata_mutable_write_enabler_master_and_nodeid_to_write_enabler_v1";
    pub const CLIENT_RENEWAL_SECRET: &[u8] = b"allmydata_client_renewal_secret_v1";
    pub const CLIENT_CANCEL_SECRET: &[u8] = b"allmydata_client_cancel_secret_v1";
    pub const FILE_RENEWAL_SECRET: &[u8] = b"allmydata_file_renewal_secret_v1";
    pub const FILE_CANCEL_SECRET: &[u8] = b"allmydata_file_cancel_secret_v1";
    pub const BUCKET_RENEWAL_SECRET: &[u8] = b"allmydata_bucket_renewal_secret_v1";
    pub const BUCKET_CANCEL_SECRET: &[u8] = b"allmydata_bucket_cancel_secret_v1";
    pub const DIRNODE_CHILD_SALT: &[u8] = b"allmydata_dirnode_child_rwcap_to_salt_v1";
    pub const DIRNODE_CHILD_KEY: &[u8] =
        b"allmydata_mutable_writekey_and_salt_to_dirnode_child_capkey_v1";
    pub const MUTABLE_CONTAINER_HEADER: &[u8] = b"allmydata_mutable_container_header";
    pub const BACKUPDB_DIRHASH: &[u8] = b"allmydata_backupdb_dirhash_v1";
}

/// A 32-byte hash.
pub type Hash = [u8; 32];

/// SHA256(SHA256(data)).
pub fn sha256d(data: &[u8]) -> Hash {
    Sha256::digest(Sha256::digest(data)).into()
}

/// Streaming `tagged_hash`: `ns(tag)` first, then whatever is fed in.
#[derive(Clone)]
pub struct TaggedHasher(Sha256);

impl TaggedHasher {
    pub fn new(tag: &[u8]) -> Self {
        let mut h = Sha256::new();
        h.update(netstring::netstring(tag));
        TaggedHasher(h)
    }

    pub fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }

    pub fn finalize(self) -> Hash {
        Sha256::digest(self.0.finalize()).into()
    }
}

/// `SHA256d(ns(tag) ‖ val)`.
pub fn tagged_hash(tag: &[u8], val: &[u8]) -> Hash {
    let mut h = TaggedHasher::new(tag);
    h.update(val);
    h.finalize()
}

/// `SHA256d(ns(tag) ‖ ns(a) ‖ ns(b))`.
pub fn tagged_pair_hash(tag: &[u8], a: &[u8], b: &[u8]) -> Hash {
    let mut h = TaggedHasher::new(tag);
    h.update(&netstring::netstring(a));
    h.update(&netstring::netstring(b));
    h.finalize()
}

fn trunc16(h: Hash) -> [u8; 16] {
    let mut out = [0u8; 16];
    out.copy_from_slice(&h[..16]);
    out
}

/// CHK storage index from the read key.
pub fn storage_index_hash(key: &[u8]) -> [u8; 16] {
    trunc16(tagged_hash(tags::STORAGE_INDEX, key))
}

/// The hasher for a convergent CHK key; feed it the whole plaintext, then [`convergent_key`].
///
/// `segment_size` is the segment size after rounding up to a multiple of `k`.
pub fn convergence_hasher(k: usize, n: usize, segment_size: u64, secret: &[u8]) -> TaggedHasher {
    let mut tag = tags::CONVERGENT_KEY.to_vec();
    netstring::write(&mut tag, secret);
    netstring::write(&mut tag, format!("{k},{n},{segment_size}").as_bytes());
    TaggedHasher::new(&tag)
}

/// Finishes a [`convergence_hasher`] into the 16-byte AES key.
pub fn convergent_key(hasher: TaggedHasher) -> [u8; 16] {
    trunc16(hasher.finalize())
}

pub fn block_hash(block: &[u8]) -> Hash {
    tagged_hash(tags::BLOCK, block)
}

pub fn uri_extension_hash(ueb: &[u8]) -> Hash {
    tagged_hash(tags::URI_EXTENSION, ueb)
}

pub fn crypttext_hasher() -> TaggedHasher {
    TaggedHasher::new(tags::CRYPTTEXT)
}

pub fn crypttext_segment_hash(segment: &[u8]) -> Hash {
    tagged_hash(tags::CRYPTTEXT_SEGMENT, segment)
}

/// The hash of Merkle padding leaf number `i` (counted within the leaf row).
pub fn empty_leaf_hash(i: usize) -> Hash {
    tagged_hash(tags::MERKLE_EMPTY_LEAF, i.to_string().as_bytes())
}

pub fn internal_node_hash(left: &Hash, right: &Hash) -> Hash {
    tagged_pair_hash(tags::MERKLE_INTERNAL, left, right)
}

/// Mutable writekey from the PKCS#8 DER private key.
pub fn ssk_writekey_hash(privkey_pkcs8_der: &[u8]) -> [u8; 16] {
    trunc16(tagged_hash(tags::MUTABLE_WRITEKEY, privkey_pkcs8_der))
}

/// Mutable fingerprint from the SubjectPublicKeyInfo DER public key.
pub fn ssk_pubkey_fingerprint_hash(pubkey_spki_der: &[u8]) -> Hash {
    tagged_hash(tags::MUTABLE_PUBKEY, pubkey_spki_der)
}

pub fn ssk_readkey_hash(writekey: &[u8]) -> [u8; 16] {
    trunc16(tagged_hash(tags::MUTABLE_READKEY, writekey))
}

/// The AES key for mutable data encrypted under `salt_or_iv` (the salt comes first).
pub fn ssk_readkey_data_hash(salt_or_iv: &[u8], readkey: &[u8]) -> [u8; 16] {
    trunc16(tagged_pair_hash(tags::MUTABLE_DATAKEY, salt_or_iv, readkey))
}

pub fn ssk_storage_index_hash(readkey: &[u8]) -> [u8; 16] {
    trunc16(tagged_hash(tags::MUTABLE_STORAGE_INDEX, readkey))
}

pub fn ssk_write_enabler_master_hash(writekey: &[u8]) -> Hash {
    tagged_hash(tags::WRITE_ENABLER_MASTER, writekey)
}

/// The write enabler for one server, from the master and the server's 20-byte node id (TubID).
pub fn ssk_write_enabler_hash(write_enabler_master: &[u8], nodeid: &[u8]) -> Hash {
    tagged_pair_hash(tags::WRITE_ENABLER, write_enabler_master, nodeid)
}

/// The client's renewal secret. Tahoe swaps the arguments here: the node's lease secret is the
/// tag and the constant is the value.
pub fn my_renewal_secret_hash(lease_secret: &[u8]) -> Hash {
    tagged_hash(lease_secret, tags::CLIENT_RENEWAL_SECRET)
}

/// The client's cancel secret (arguments swapped, as for renewal).
pub fn my_cancel_secret_hash(lease_secret: &[u8]) -> Hash {
    tagged_hash(lease_secret, tags::CLIENT_CANCEL_SECRET)
}

pub fn file_renewal_secret_hash(client_renewal_secret: &[u8], storage_index: &[u8]) -> Hash {
    tagged_pair_hash(
        tags::FILE_RENEWAL_SECRET,
        client_renewal_secret,
        storage_index,
    )
}

pub fn file_cancel_secret_hash(client_cancel_secret: &[u8], storage_index: &[u8]) -> Hash {
    tagged_pair_hash(
        tags::FILE_CANCEL_SECRET,
        client_cancel_secret,
        storage_index,
    )
}

pub fn bucket_renewal_secret_hash(file_renewal_secret: &[u8], lease_seed: &[u8]) -> Hash {
    tagged_pair_hash(tags::BUCKET_RENEWAL_SECRET, file_renewal_secret, lease_seed)
}

pub fn bucket_cancel_secret_hash(file_cancel_secret: &[u8], lease_seed: &[u8]) -> Hash {
    tagged_pair_hash(tags::BUCKET_CANCEL_SECRET, file_cancel_secret, lease_seed)
}

/// Tahoe's nonstandard HMAC: the key is XORed with the pads at its own length, not padded to the
/// SHA-256 block. Only the dirnode write-cap MAC uses it.
pub fn tahoe_hmac(key: &[u8], data: &[u8]) -> Hash {
    let ikey: Vec<u8> = key.iter().map(|b| b ^ 0x36).collect();
    let okey: Vec<u8> = key.iter().map(|b| b ^ 0x5c).collect();
    let mut inner = Sha256::new();
    inner.update(&ikey);
    inner.update(data);
    let mut outer = Sha256::new();
    outer.update(&okey);
    outer.update(inner.finalize());
    outer.finalize().into()
}

/// The deterministic salt of a dirnode child's encrypted write-cap.
pub fn mutable_rwcap_salt_hash(rw_uri: &[u8]) -> [u8; 16] {
    trunc16(tagged_hash(tags::DIRNODE_CHILD_SALT, rw_uri))
}

/// The AES key of a dirnode child's write-cap.
pub fn mutable_rwcap_key_hash(salt: &[u8], dir_writekey: &[u8]) -> [u8; 16] {
    trunc16(tagged_pair_hash(
        tags::DIRNODE_CHILD_KEY,
        salt,
        dir_writekey,
    ))
}

/// The server ordering key: plain SHA-1 of `storage_index ‖ permutation_seed`.
pub fn permute_server_hash(storage_index: &[u8], permutation_seed: &[u8]) -> [u8; 20] {
    use sha1::Sha1;
    let mut h = Sha1::new();
    h.update(storage_index);
    h.update(permutation_seed);
    h.finalize().into()
}

#[cfg(test)]
mod tests {
    //! Known answers from Tahoe's `test_hashutil.py` and `derive_renewal_secret.py`.
    use super::*;
    use crate::util::base32::{decode, encode};

    fn b32(h: &[u8]) -> String {
        encode(h)
    }

    #[test]
    fn tahoe_known_answers() {
        assert_eq!(b32(&storage_index_hash(b"")), "qb5igbhcc5esa6lwqorsy7e6am");
        assert_eq!(
            b32(&storage_index_hash(&[b'x'; 16])),
            "wvggbrnrezdpa5yayrgiw5nzja"
        );
        assert_eq!(
            b32(&storage_index_hash(
                &decode("2ckv3dfzh6rgjis6ogfqhyxnzy").unwrap()
            )),
            "aarbseqqrpsfowduchcjbonscq"
        );
        assert_eq!(
            b32(&block_hash(b"")),
            "msjr5bh4evuh7fa3zw7uovixfbvlnstr5b65mrerwfnvjxig2jvq"
        );
        assert_eq!(
            b32(&uri_extension_hash(b"")),
            "wthsu45q7zewac2mnivoaa4ulh5xvbzdmsbuyztq2a5fzxdrnkka"
        );
        assert_eq!(
            b32(&crypttext_hasher().finalize()),
            "itdj6e4njtkoiavlrmxkvpreosscssklunhwtvxn6ggho4rkqwga"
        );
        assert_eq!(
            b32(&crypttext_segment_hash(b"")),
            "aovy5aa7jej6ym5ikgwyoi4pxawnoj3wtaludjz7e2nb5xijb7aa"
        );
        assert_eq!(
            b32(&convergent_key(convergence_hasher(3, 10, 100, b"converge"))),
            "3mo6ni7xweplycin6nowynw2we"
        );
        assert_eq!(
            b32(&my_renewal_secret_hash(b"")),
            "ujhr5k5f7ypkp67jkpx6jl4p47pyta7hu5m527cpcgvkafsefm6q"
        );
        assert_eq!(
            b32(&my_cancel_secret_hash(b"")),
            "rjwzmafe2duixvqy6h47f5wfrokdziry6zhx4smew4cj6iocsfaa"
        );
        assert_eq!(
            b32(&file_renewal_secret_hash(b"", b"si")),
            "hzshk2kf33gzbd5n3a6eszkf6q6o6kixmnag25pniusyaulqjnia"
        );
        assert_eq!(
            b32(&file_cancel_secret_hash(b"", b"si")),
            "bfciwvr6w7wcavsngxzxsxxaszj72dej54n4tu2idzp6b74g255q"
        );
        assert_eq!(
            b32(&bucket_renewal_secret_hash(b"", &[0u8; 20])),
            "e7imrzgzaoashsncacvy3oysdd2m5yvtooo4gmj4mjlopsazmvuq"
        );
        assert_eq!(
            b32(&bucket_cancel_secret_hash(b"", &[0u8; 20])),
            "dvdujeyxeirj6uux6g7xcf4lvesk632aulwkzjar7srildvtqwma"
        );
        assert_eq!(
            b32(&tahoe_hmac(b"tag", b"")),
            "c54ypfi6pevb3nvo6ba42jtglpkry2kbdopqsi7dgrm4r7tw5sra"
        );
        assert_eq!(
            b32(&mutable_rwcap_key_hash(b"iv", b"wk")),
            "6rvn2iqrghii5n4jbbwwqqsnqu"
        );
        assert_eq!(b32(&ssk_writekey_hash(b"")), "ykpgmdbpgbb6yqz5oluw2q26ye");
        assert_eq!(
            b32(&ssk_write_enabler_master_hash(b"")),
            "izbfbfkoait4dummruol3gy2bnixrrrslgye6ycmkuyujnenzpia"
        );
        assert_eq!(
            b32(&ssk_write_enabler_hash(
                &ssk_write_enabler_master_hash(b"wk"),
                &[0u8; 20]
            )),
            "fuu2dvx7g6gqu5x22vfhtyed7p4pd47y5hgxbqzgrlyvxoev62tq"
        );
        assert_eq!(
            b32(&ssk_pubkey_fingerprint_hash(b"")),
            "3opzw4hhm2sgncjx224qmt5ipqgagn7h5zivnfzqycvgqgmgz35q"
        );
        assert_eq!(b32(&ssk_readkey_hash(b"")), "vugid4as6qbqgeq2xczvvcedai");
        assert_eq!(
            b32(&ssk_readkey_data_hash(b"iv", b"rk")),
            "73wsaldnvdzqaf7v4pzbr2ae5a"
        );
        assert_eq!(
            b32(&ssk_storage_index_hash(b"")),
            "j7icz6kigb6hxrej3tv4z7ayym"
        );
        assert_eq!(
            b32(&permute_server_hash(
                b"SI",
                &decode("u33m4y7klhz3bypswqkozwetvabelhxt").unwrap()
            )),
            "kb4354zeeurpo3ze5e275wzbynm6hlap"
        );
        assert_eq!(
            b32(&empty_leaf_hash(0)),
            "4abeomayryw6kzfgs7gctb2apmsk47vwxcabsda2am32k5aokj5a"
        );
    }

    #[test]
    fn renewal_secret_chain_vector() {
        // From Tahoe's docs/specifications/derive_renewal_secret.py.
        let lease_secret = decode("boity2cdh7jvl3ltaeebuiobbspjmbuopnwbde2yeh4k6x7jioga").unwrap();
        let si = decode("vrttmwlicrzbt7gh5qsooogr7u").unwrap();
        let tubid = decode("v67jiisoty6ooyxlql5fuucitqiok2ic").unwrap();
        let client = my_renewal_secret_hash(&lease_secret);
        let file = file_renewal_secret_hash(&client, &si);
        let bucket = bucket_renewal_secret_hash(&file, &tubid);
        assert_eq!(
            b32(&bucket),
            "osd6wmc5vz4g3ukg64sitmzlfiaaordutrez7oxdp5kkze7zp5zq"
        );
    }

    #[test]
    fn convergence_worked_example() {
        let mut h = convergence_hasher(3, 10, 57, b"aaaaaaaaaaaaaaaa");
        h.update(&[b'a'; 56]);
        let key = convergent_key(h);
        assert_eq!(b32(&key), "hah7mxwfpqemm7icdh3hwsa5fa");
        assert_eq!(b32(&storage_index_hash(&key)), "5mwuz5yxisqrnhtrsljs7wkyb4");
    }
}
