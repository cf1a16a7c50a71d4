//! End-to-end tests of publish and retrieve over in-memory servers.

use super::keys::{ReaderKeys, SigningKeyPair, WriterKeys};
use super::layout::{self, Share, ShareHeader};
use super::publish::{PublishOutcome, PublishParams};
use super::retrieve::{Retrieved, ServerMap};
use super::storage::{
    BoxFut, MemoryServer, MutableServer, ReadTestWriteResult, ReadVector, ShareNum, StorageError,
    StorageIndex, TestWriteVectors, WriteSecrets,
};
use super::{MutableError, ShareError};
use crate::cap::{MutableFormat, MutableWriteCap, NodeCap};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;

// The drivers are async; `MemoryServer` answers with ready futures, so a trivial executor runs
// them. These wrappers keep the tests below in their synchronous shape.
use futures::executor::block_on;

fn create(
    servers: &[&dyn MutableServer],
    keypair: &SigningKeyPair,
    format: MutableFormat,
    contents: &[u8],
    params: &PublishParams,
) -> Result<(MutableWriteCap, PublishOutcome), MutableError> {
    block_on(super::publish::create(
        servers, keypair, format, contents, params,
    ))
}

fn overwrite(
    servers: &[&dyn MutableServer],
    cap: &MutableWriteCap,
    contents: &[u8],
    params: &PublishParams,
) -> Result<PublishOutcome, MutableError> {
    block_on(super::publish::overwrite(servers, cap, contents, params))
}

fn publish_with_map(
    servers: &[&dyn MutableServer],
    cap: &MutableWriteCap,
    map: &mut ServerMap,
    contents: &[u8],
    params: &PublishParams,
) -> Result<PublishOutcome, MutableError> {
    block_on(super::publish::publish_with_map(
        servers, cap, map, contents, params,
    ))
}

fn update(
    servers: &[&dyn MutableServer],
    cap: &MutableWriteCap,
    offset: u64,
    data: &[u8],
    params: &PublishParams,
) -> Result<PublishOutcome, MutableError> {
    block_on(super::publish::update(servers, cap, offset, data, params))
}

fn update_with_map(
    servers: &[&dyn MutableServer],
    cap: &MutableWriteCap,
    map: &mut ServerMap,
    offset: u64,
    data: &[u8],
    params: &PublishParams,
) -> Result<PublishOutcome, MutableError> {
    block_on(super::publish::update_with_map(
        servers, cap, map, offset, data, params,
    ))
}

fn map_update_for_write(servers: &[&dyn MutableServer], writer: &WriterKeys) -> ServerMap {
    block_on(super::retrieve::map_update_for_write(servers, writer))
}

fn retrieve(
    servers: &[&dyn MutableServer],
    reader: &ReaderKeys,
    range: Option<(u64, u64)>,
) -> Result<Retrieved, MutableError> {
    block_on(super::retrieve::retrieve(servers, reader, range))
}

fn key() -> &'static SigningKeyPair {
    static K: OnceLock<SigningKeyPair> = OnceLock::new();
    K.get_or_init(|| SigningKeyPair::generate().unwrap())
}

fn key2() -> &'static SigningKeyPair {
    static K: OnceLock<SigningKeyPair> = OnceLock::new();
    K.get_or_init(|| SigningKeyPair::generate().unwrap())
}

fn grid(n: usize) -> Vec<MemoryServer> {
    (0..n)
        .map(|i| MemoryServer::new([i as u8 + 1; 20]))
        .collect()
}

fn refs(g: &[MemoryServer]) -> Vec<&dyn MutableServer> {
    g.iter().map(|s| s as &dyn MutableServer).collect()
}

fn data(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 8) as u8)
        .collect()
}

fn params(k: u8, n: u8) -> PublishParams {
    PublishParams {
        k,
        n,
        lease_secret: [9; 32],
    }
}

fn reader(cap: &MutableWriteCap) -> ReaderKeys {
    WriterKeys::from_cap(cap).reader
}

fn si(cap: &MutableWriteCap) -> [u8; 16] {
    reader(cap).storage_index
}

const BIG: usize = 131073 * 2 + 5;

#[test]
fn round_trips() {
    let cases: &[(u8, u8, usize)] = &[(3, 10, 4), (1, 1, 1), (2, 3, 3), (1, 3, 2), (5, 7, 7)];
    for format in [MutableFormat::Sdmf, MutableFormat::Mdmf] {
        for &(k, n, servers) in cases {
            for size in [0usize, 1, 55, 56, 1000, BIG] {
                if (k, n) != (3, 10) && size == BIG {
                    continue; // keep the debug-build run time reasonable
                }
                let g = grid(servers);
                let contents = data(size, k);
                let (cap, out) =
                    create(&refs(&g), key(), format, &contents, &params(k, n)).unwrap();
                assert_eq!(out.seqnum, 1);
                assert_eq!(out.written.len(), n as usize);
                // Share i is on server i % servers.
                for sh in 0..n as u32 {
                    assert!(g[sh as usize % servers]
                        .share_bytes(&si(&cap), sh)
                        .is_some());
                }
                let got = retrieve(&refs(&g), &reader(&cap), None).unwrap();
                assert_eq!(got.data, contents, "{format:?} k={k} n={n} size={size}");
                assert!(got.problems.is_empty());
                assert_eq!(got.version.seqnum, 1);
                assert_eq!(got.version.format, format);
            }
        }
    }
}

#[test]
fn share_geometry_matches_digest() {
    // MDMF 3-of-10: segsize 131073, data at 2167; SDMF: one segment of next_multiple(len, k).
    let g = grid(1);
    let contents = data(BIG, 1);
    let (cap, _) = create(
        &refs(&g),
        key(),
        MutableFormat::Mdmf,
        &contents,
        &params(3, 10),
    )
    .unwrap();
    let b = g[0].share_bytes(&si(&cap), 0).unwrap();
    let h = ShareHeader::parse(&b).unwrap();
    assert_eq!(h.prefix.segsize, 131073);
    assert_eq!(h.prefix.datalen, BIG as u64);
    assert_eq!(h.geometry.num_segments, 3);
    assert_eq!(h.share_data.start, 2167);
    assert_eq!(h.enc_privkey.start, 123);
    assert_eq!(h.verification_key.end - h.verification_key.start, 294);
    assert_eq!(h.signature.end - h.signature.start, 256);
    // Share hash chain for N=10 has 4 entries, ascending.
    let share = Share::parse(&b).unwrap();
    assert_eq!(
        share.share_hash_chain.keys().copied().collect::<Vec<_>>(),
        vec![2, 4, 8, 16]
    );
    let mut chain_idx = Vec::new();
    for e in b[h.share_hash_chain.start as usize..h.share_hash_chain.end as usize].chunks(34) {
        chain_idx.push(u16::from_be_bytes([e[0], e[1]]));
    }
    assert_eq!(chain_idx, vec![2, 4, 8, 16]);

    let (cap, _) = create(
        &refs(&g),
        key2(),
        MutableFormat::Sdmf,
        &data(170, 2),
        &params(3, 10),
    )
    .unwrap();
    let b = g[0].share_bytes(&si(&cap), 0).unwrap();
    let h = ShareHeader::parse(&b).unwrap();
    assert_eq!((h.prefix.segsize, h.prefix.datalen), (171, 170));
    assert_eq!(h.verification_key.start, 107);
    assert_eq!(h.share_data.end - h.share_data.start, 57);
    assert_eq!(h.block_hash_tree.end - h.block_hash_tree.start, 32);
}

#[test]
fn independent_crypto_check_k1() {
    // With k=1 the single SDMF block is the ciphertext: recompute it with the `aes`/`ctr` crates
    // and the digest's derivation P(DATAKEY, IV, readkey)[:16], and check the PSS signature with
    // the rsa crate directly (salt 32).
    use aes::cipher::{KeyIvInit, StreamCipher};
    use rsa::pkcs8::DecodePublicKey;
    use rsa::signature::Verifier;
    let g = grid(1);
    let contents = data(1000, 7);
    let (cap, _) = create(
        &refs(&g),
        key(),
        MutableFormat::Sdmf,
        &contents,
        &params(1, 2),
    )
    .unwrap();
    let b = g[0].share_bytes(&si(&cap), 0).unwrap();
    let share = Share::parse(&b).unwrap();
    let rk = crate::crypto::hash::tagged_hash(
        b"allmydata_mutable_writekey_to_readkey_v1",
        &cap.writekey,
    );
    let dk = crate::crypto::hash::tagged_pair_hash(
        b"allmydata_mutable_readkey_to_datakey_v1",
        &share.prefix.iv,
        &rk[..16],
    );
    let mut expect = contents.clone();
    ctr::Ctr128BE::<aes::Aes128>::new(dk[..16].into(), &[0u8; 16].into())
        .apply_keystream(&mut expect);
    assert_eq!(share.blocks[0].data, expect);
    let pk = rsa::RsaPublicKey::from_public_key_der(&share.verification_key).unwrap();
    let v = rsa::pss::VerifyingKey::<sha2::Sha256>::new_with_salt_len(pk, 32);
    let sig = rsa::pss::Signature::try_from(share.signature.as_slice()).unwrap();
    v.verify(&b[..75], &sig).unwrap();
    // The encrypted private key decrypts (AES-CTR under the writekey) to the exact PKCS#8 bytes.
    let mut pk8 = share.enc_privkey.clone();
    ctr::Ctr128BE::<aes::Aes128>::new((&cap.writekey).into(), &[0u8; 16].into())
        .apply_keystream(&mut pk8);
    assert_eq!(pk8, key().pkcs8_der());
    // The cap prints as Tahoe's grammar says.
    let s = NodeCap::MutableWrite(cap.clone()).to_string();
    assert!(s.starts_with("URI:SSK:") && s.len() == 8 + 26 + 1 + 52);
}

#[test]
fn overwrite_bumps_seqnum_and_readers_see_newest() {
    for format in [MutableFormat::Sdmf, MutableFormat::Mdmf] {
        let g = grid(3);
        let (cap, _) = create(&refs(&g), key(), format, b"first", &params(2, 5)).unwrap();
        let o = overwrite(&refs(&g), &cap, b"second version", &params(3, 10)).unwrap();
        assert_eq!(o.seqnum, 2);
        let got = retrieve(&refs(&g), &reader(&cap), None).unwrap();
        assert_eq!(got.data, b"second version");
        assert_eq!(got.version.seqnum, 2);
        // k and N of the existing file are kept.
        assert_eq!((got.version.k, got.version.n), (2, 5));
        let o = overwrite(&refs(&g), &cap, b"", &params(3, 10)).unwrap();
        assert_eq!(o.seqnum, 3);
        assert_eq!(retrieve(&refs(&g), &reader(&cap), None).unwrap().data, b"");
        // A stale share of an old version left on a server does not win.
        let old = g[0].share_bytes(&si(&cap), 0).unwrap();
        overwrite(&refs(&g), &cap, b"fourth", &params(3, 10)).unwrap();
        g[0].set_share_bytes(&si(&cap), 0, old);
        let got = retrieve(&refs(&g), &reader(&cap), None).unwrap();
        assert_eq!(
            (got.data.as_slice(), got.version.seqnum),
            (&b"fourth"[..], 4)
        );
    }
}

fn segment_bytes(b: &[u8], seg: u64) -> Vec<u8> {
    let h = ShareHeader::parse(b).unwrap();
    let r = h.segment_range(seg).unwrap();
    b[r.start as usize..r.end as usize].to_vec()
}

#[test]
fn mdmf_partial_update_rewrites_only_touched_segments() {
    let g = grid(4);
    let mut contents = data(BIG, 3);
    let (cap, _) = create(
        &refs(&g),
        key(),
        MutableFormat::Mdmf,
        &contents,
        &params(3, 10),
    )
    .unwrap();
    let sidx = si(&cap);
    let before: Vec<Vec<u8>> = (0..10u32)
        .map(|sh| g[sh as usize % 4].share_bytes(&sidx, sh).unwrap())
        .collect();
    // Touch segment 1 only.
    let patch = data(5000, 99);
    let off = 131073 + 1000;
    update(&refs(&g), &cap, off as u64, &patch, &params(3, 10)).unwrap();
    contents[off..off + patch.len()].copy_from_slice(&patch);
    for sh in 0..10u32 {
        let after = g[sh as usize % 4].share_bytes(&sidx, sh).unwrap();
        assert_eq!(
            segment_bytes(&after, 0),
            segment_bytes(&before[sh as usize], 0)
        );
        assert_eq!(
            segment_bytes(&after, 2),
            segment_bytes(&before[sh as usize], 2)
        );
        assert_ne!(
            segment_bytes(&after, 1),
            segment_bytes(&before[sh as usize], 1)
        );
        // The raw bytes of the untouched segments' regions are unchanged too.
        let r0 = ShareHeader::parse(&after)
            .unwrap()
            .segment_range(0)
            .unwrap();
        assert_eq!(
            after[..r0.end as usize][2167..],
            before[sh as usize][..r0.end as usize][2167..]
        );
    }
    let got = retrieve(&refs(&g), &reader(&cap), None).unwrap();
    assert_eq!(got.version.seqnum, 2);
    assert_eq!(got.data, contents);
    // Ranged reads, across segment boundaries.
    for (o, l) in [
        (0u64, 10u64),
        (131070, 10),
        (131073 * 2, 5),
        (131073 * 2 + 3, 100),
        (5, 0),
    ] {
        let got = retrieve(&refs(&g), &reader(&cap), Some((o, l))).unwrap();
        let e = (o + l).min(BIG as u64) as usize;
        assert_eq!(got.data, contents[o as usize..e], "range {o}+{l}");
    }
    // Growing update: append past the end (touches the old tail and adds a segment).
    let tail = data(131073, 5);
    update(&refs(&g), &cap, BIG as u64 - 2, &tail, &params(3, 10)).unwrap();
    contents.truncate(BIG - 2);
    contents.extend_from_slice(&tail);
    let got = retrieve(&refs(&g), &reader(&cap), None).unwrap();
    assert_eq!(got.version.seqnum, 3);
    assert_eq!(got.version.datalen, contents.len() as u64);
    assert_eq!(got.data, contents);
    // Past-the-end offsets are refused.
    assert_eq!(
        update(
            &refs(&g),
            &cap,
            contents.len() as u64 + 1,
            b"x",
            &params(3, 10)
        )
        .unwrap_err(),
        MutableError::BadRange
    );
}

#[test]
fn sdmf_update_and_degraded_mdmf_update_republish() {
    let g = grid(5);
    let (cap, _) = create(
        &refs(&g),
        key(),
        MutableFormat::Sdmf,
        b"hello world",
        &params(3, 10),
    )
    .unwrap();
    update(&refs(&g), &cap, 6, b"there!", &params(3, 10)).unwrap();
    assert_eq!(
        retrieve(&refs(&g), &reader(&cap), None).unwrap().data,
        b"hello there!"
    );
    let (cap, _) = create(
        &refs(&g),
        key2(),
        MutableFormat::Mdmf,
        b"abcdef",
        &params(3, 10),
    )
    .unwrap();
    g[1].remove_share(&si(&cap), 1);
    update(&refs(&g), &cap, 2, b"XY", &params(3, 10)).unwrap();
    let got = retrieve(&refs(&g), &reader(&cap), None).unwrap();
    assert_eq!(got.data, b"abXYef");
    // The full re-publish recreated share 1.
    assert!(g[1].share_bytes(&si(&cap), 1).is_some());
}

#[test]
fn concurrent_writer_is_detected() {
    for format in [MutableFormat::Sdmf, MutableFormat::Mdmf] {
        let g = grid(3);
        let (cap, _) = create(&refs(&g), key(), format, &data(2000, 1), &params(3, 10)).unwrap();
        // We read the map; another writer publishes; then we write against the stale map.
        let mut stale = map_update_for_write(&refs(&g), &WriterKeys::from_cap(&cap));
        let mut stale2 = stale.clone();
        overwrite(&refs(&g), &cap, b"the other writer", &params(3, 10)).unwrap();
        let e = publish_with_map(&refs(&g), &cap, &mut stale, b"ours", &params(3, 10)).unwrap_err();
        match e {
            MutableError::UncoordinatedWrite { refused, written } => {
                assert_eq!(refused.len(), 10);
                assert_eq!(written, 0);
            }
            other => panic!("expected UncoordinatedWrite, got {other:?}"),
        }
        let e =
            update_with_map(&refs(&g), &cap, &mut stale2, 0, b"zz", &params(3, 10)).unwrap_err();
        assert!(
            matches!(e, MutableError::UncoordinatedWrite { .. }),
            "{e:?}"
        );
        // The other writer's data survived.
        assert_eq!(
            retrieve(&refs(&g), &reader(&cap), None).unwrap().data,
            b"the other writer"
        );
    }
}

#[test]
fn create_refuses_to_clobber_existing_shares() {
    let g = grid(2);
    create(
        &refs(&g),
        key2(),
        MutableFormat::Sdmf,
        b"one",
        &params(3, 10),
    )
    .unwrap();
    let e = create(
        &refs(&g),
        key2(),
        MutableFormat::Sdmf,
        b"two",
        &params(3, 10),
    )
    .unwrap_err();
    assert!(matches!(e, MutableError::UncoordinatedWrite { .. }));
}

#[test]
fn corrupted_shares_are_rejected_and_file_still_reads() {
    for format in [MutableFormat::Sdmf, MutableFormat::Mdmf] {
        let g = grid(10);
        let contents = data(3000, 4);
        let (cap, _) = create(&refs(&g), key(), format, &contents, &params(3, 10)).unwrap();
        let sidx = si(&cap);
        let raw = |sh: u32| g[sh as usize].share_bytes(&sidx, sh).unwrap();
        // Share 0: bad signature.
        let mut b = raw(0);
        let h = ShareHeader::parse(&b).unwrap();
        b[h.signature.start as usize + 10] ^= 1;
        g[0].set_share_bytes(&sidx, 0, b);
        // Share 1: flipped block byte.
        let mut b = raw(1);
        let r = ShareHeader::parse(&b).unwrap().segment_range(0).unwrap();
        b[r.end as usize - 1] ^= 0x80;
        g[1].set_share_bytes(&sidx, 1, b);
        // Share 2: truncated.
        let mut b = raw(2);
        b.truncate(b.len() / 2);
        g[2].set_share_bytes(&sidx, 2, b);
        // Share 3: forged higher seqnum without a valid signature.
        let mut b = raw(3);
        b[1..9].copy_from_slice(&99u64.to_be_bytes());
        g[3].set_share_bytes(&sidx, 3, b);
        // Share 4: flipped byte in the share hash chain.
        let mut b = raw(4);
        let h = ShareHeader::parse(&b).unwrap();
        b[h.share_hash_chain.start as usize + 5] ^= 1;
        g[4].set_share_bytes(&sidx, 4, b);
        // Share 5: verification key of another file.
        let mut b = raw(5);
        let h = ShareHeader::parse(&b).unwrap();
        b[h.verification_key.start as usize + 40] ^= 1;
        g[5].set_share_bytes(&sidx, 5, b);

        let got = retrieve(&refs(&g), &reader(&cap), None).unwrap();
        assert_eq!(got.data, contents);
        assert_eq!(got.version.seqnum, 1);
        let err_of = |sh: u32| {
            got.problems
                .iter()
                .find(|p| p.shnum == sh)
                .map(|p| p.error.clone())
                .unwrap_or_else(|| panic!("share {sh} not reported"))
        };
        assert_eq!(err_of(0), ShareError::BadSignature);
        assert_eq!(err_of(1), ShareError::BadBlockHash { segment: 0 });
        assert!(matches!(
            err_of(2),
            ShareError::Layout(layout::LayoutError::Truncated { .. })
        ));
        assert_eq!(err_of(3), ShareError::BadSignature);
        assert!(matches!(err_of(4), ShareError::BadShareHashChain(_)));
        assert_eq!(err_of(5), ShareError::WrongFingerprint);
        // An overwrite still works (it tests against the corrupt bytes it saw, and repairs them).
        overwrite(&refs(&g), &cap, b"fresh", &params(3, 10)).unwrap();
        let got = retrieve(&refs(&g), &reader(&cap), None).unwrap();
        assert_eq!(got.version.seqnum, 2);
        assert_eq!(got.data, b"fresh");
        assert!(got.problems.is_empty());
    }
}

#[test]
fn unrecoverable_is_a_typed_error() {
    let g = grid(10);
    let (cap, _) = create(
        &refs(&g),
        key(),
        MutableFormat::Mdmf,
        &data(500, 1),
        &params(3, 10),
    )
    .unwrap();
    for sh in 0..8u32 {
        g[sh as usize].remove_share(&si(&cap), sh);
    }
    let e = retrieve(&refs(&g), &reader(&cap), None).unwrap_err();
    assert!(
        matches!(
            e,
            MutableError::NotEnoughShares {
                needed: 3,
                found: 2
            }
        ),
        "{e:?}"
    );
    let empty = grid(2);
    assert_eq!(
        retrieve(&refs(&empty), &reader(&cap), None).unwrap_err(),
        MutableError::NoVersions {
            problems: 0,
            unreachable: 0
        }
    );
}

/// A server that answers nothing (connection refused, say).
struct DownServer;

fn down<'a, T: Send + 'a>() -> BoxFut<'a, Result<T, StorageError>> {
    Box::pin(async { Err(StorageError::Unavailable("down".into())) })
}

impl MutableServer for DownServer {
    fn node_id(&self) -> [u8; 20] {
        [7; 20]
    }
    fn list_shares<'a>(
        &'a self,
        _si: &'a StorageIndex,
    ) -> BoxFut<'a, Result<BTreeSet<ShareNum>, StorageError>> {
        down()
    }
    fn read<'a>(
        &'a self,
        _si: &'a StorageIndex,
        _shnum: ShareNum,
        _offset: u64,
        _len: u64,
    ) -> BoxFut<'a, Result<Vec<u8>, StorageError>> {
        down()
    }
    fn read_test_write<'a>(
        &'a self,
        _si: &'a StorageIndex,
        _secrets: &'a WriteSecrets,
        _tw: &'a BTreeMap<ShareNum, TestWriteVectors>,
        _rv: &'a [ReadVector],
    ) -> BoxFut<'a, Result<ReadTestWriteResult, StorageError>> {
        down()
    }
}

/// With every server down, the error said "3 shares rejected", as if the shares were corrupt.
#[test]
fn servers_that_do_not_answer_are_not_counted_as_rejected_shares() {
    let g = grid(3);
    let (cap, _) = create(
        &refs(&g),
        key(),
        MutableFormat::Sdmf,
        &data(100, 2),
        &params(2, 3),
    )
    .unwrap();
    let down = [DownServer, DownServer, DownServer];
    let servers: Vec<&dyn MutableServer> = down.iter().map(|s| s as &dyn MutableServer).collect();
    let e = retrieve(&servers, &reader(&cap), None).unwrap_err();
    assert_eq!(
        e,
        MutableError::NoVersions {
            problems: 0,
            unreachable: 3
        }
    );
    assert!(e.to_string().contains("3 servers did not answer"), "{e}");
    let e = update(&servers, &cap, 0, b"x", &params(2, 3)).unwrap_err();
    assert_eq!(
        e,
        MutableError::NoVersions {
            problems: 0,
            unreachable: 3
        }
    );
}

#[test]
fn key_pool_hands_out_keys() {
    let pool = super::keys::KeyPool::new(1);
    let a = pool.take().unwrap();
    let b = pool.take().unwrap();
    assert_ne!(a.pkcs8_der(), b.pkcs8_der());
    let zero = super::keys::KeyPool::new(0);
    assert_eq!(zero.ready(), 0);
    let c = zero.take().unwrap();
    assert_eq!(c.spki_der().len(), 294);
}
