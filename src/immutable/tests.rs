//! Round-trip, corruption and range tests of the encoder against the decoder. The reference
//! model is the plaintext itself: whatever the parameters, decoding must give it back, and a
//! corrupted share must be skipped and named.

use super::decode::{Downloader, ShareFault};
use super::encode::{encode_bytes_with, Encoder};
use super::layout::{self, Version};
use super::*;
use crate::cap::{ChkCap, NodeCap};
use proptest::prelude::*;
use rand::{Rng, SeedableRng};

fn chk(cap: &NodeCap) -> &ChkCap {
    match cap {
        NodeCap::Chk(c) => c,
        _ => panic!("expected a CHK cap"),
    }
}

fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..len).map(|_| rng.gen()).collect()
}

fn params(k: usize, n: usize, seg: u64) -> EncodingParams {
    EncodingParams {
        needed: k,
        happy: n,
        total: n,
        max_segment_size: seg,
    }
}

fn decode_with(cap: &ChkCap, shares: &[Vec<u8>], order: &[usize]) -> (Vec<u8>, Vec<ShareProblem>) {
    let mut store = MemoryShares::new(shares.to_vec());
    let mut d = Downloader::with_share_order(cap, &mut store, order.iter().copied()).unwrap();
    let mut out = Vec::new();
    d.read_all(&mut out).unwrap();
    (out, d.problems().to_vec())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn roundtrip_any_k_subset(
        size in prop_oneof![Just(55usize), Just(56), Just(57), 56usize..3000, Just(2 * 96), Just(96 * 5 + 1)],
        k in 1usize..6,
        extra in 0usize..6,
        seg in prop_oneof![Just(1u64), Just(7), Just(96), 1u64..400, Just(1 << 20)],
        seed in any::<u64>(),
    ) {
        let n = k + extra;
        let plain = data(size, seed);
        let f = encode_bytes(&plain, &params(k, n, seg), &KeySource::Convergent(b"s".to_vec())).unwrap();
        if size <= 55 {
            prop_assert!(matches!(f.cap, NodeCap::Lit(_)));
            return Ok(());
        }
        let cap = chk(&f.cap);
        prop_assert_eq!(f.shares.len(), n);
        // Every share body has the size the digest formula gives.
        let g = Geometry::new(size as u64, &params(k, n, seg)).unwrap();
        let p = crate::crypto::hashtree::padded_leaves(g.num_segments as usize) as u64;
        for s in &f.shares {
            let ueb_len = layout::parse_share_body(s).unwrap().ueb.len() as u64;
            prop_assert_eq!(s.len() as u64, 0x24 + g.share_size + 3 * (2 * p - 1) * 32
                + layout::share_hash_count(n) * 34 + 4 + ueb_len);
        }
        // A random k-subset, in random order.
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ 1);
        let mut order: Vec<usize> = (0..n).collect();
        rand::seq::SliceRandom::shuffle(&mut order[..], &mut rng);
        order.truncate(k);
        let (out, problems) = decode_with(cap, &f.shares, &order);
        prop_assert_eq!(&out, &plain);
        prop_assert!(problems.is_empty());
        // A random byte range.
        let a = rng.gen_range(0..size);
        let b = rng.gen_range(a..=size);
        let mut store = MemoryShares::new(f.shares.clone());
        let mut d = Downloader::new(cap, &mut store).unwrap();
        let mut part = Vec::new();
        d.read_range(a as u64, (b - a) as u64, &mut part).unwrap();
        prop_assert_eq!(&part[..], &plain[a..b]);
    }

    #[test]
    fn corrupted_shares_are_skipped_and_named(
        size in 56usize..2000,
        seg in 8u64..300,
        seed in any::<u64>(),
        bad_count in 1usize..5,
    ) {
        let (k, n) = (3, 8);
        let plain = data(size, seed);
        let f = encode_bytes(&plain, &params(k, n, seg), &KeySource::Random).unwrap();
        let cap = chk(&f.cap);
        let mut shares = f.shares.clone();
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut bad: Vec<usize> = (0..n).collect();
        rand::seq::SliceRandom::shuffle(&mut bad[..], &mut rng);
        bad.truncate(bad_count);
        for &b in &bad {
            // Flip a byte anywhere the reader looks: header, data, the used tree nodes, the
            // share hash chain or the UEB (not the unused plaintext tree).
            let s = &mut shares[b];
            let body = layout::parse_share_body(s).unwrap();
            let o = body.layout.offsets.clone();
            let at = loop {
                let at = rng.gen_range(0..s.len() as u64);
                let in_pt = (o.plaintext_hash_tree..o.crypttext_hash_tree).contains(&at);
                // Bytes 4..12 of the header are informational (block and data size).
                let informational = (4..12).contains(&at);
                // Unused tree nodes are never read: only corrupt the data for those regions.
                let in_trees = (o.crypttext_hash_tree..o.share_hashes).contains(&at);
                if !in_pt && !informational && !in_trees {
                    break at;
                }
            };
            s[at as usize] ^= 1 << rng.gen_range(0..8);
        }
        let (out, problems) = decode_with(cap, &shares, &(0..n).collect::<Vec<_>>());
        prop_assert_eq!(out, plain);
        let mut named: Vec<usize> = problems.iter().map(|p| p.shnum).collect();
        named.sort();
        named.dedup();
        // Every named share is a corrupted one; shares read after k good ones may go unnamed.
        for s in &named {
            prop_assert!(bad.contains(s), "share {} named but intact", s);
        }
    }
}

#[test]
fn corruption_in_used_shares_is_named() {
    let plain = data(5000, 9);
    let f = encode_bytes(&plain, &params(3, 10, 1000), &KeySource::Random).unwrap();
    let cap = chk(&f.cap);
    let mut shares = f.shares.clone();
    let o = layout::parse_share_body(&shares[1]).unwrap().layout.offsets;
    shares[1][o.data as usize + 1500] ^= 0x40; // a block of segment 4 (block size 334)
    let o = layout::parse_share_body(&shares[2]).unwrap().layout.offsets;
    shares[2][o.uri_extension as usize + 10] ^= 1; // the UEB
    shares[4].truncate(10); // missing
    let (out, problems) = decode_with(cap, &shares, &[0, 1, 2, 4, 5, 6]);
    assert_eq!(out, plain);
    let named: Vec<(usize, &ShareFault)> = problems.iter().map(|p| (p.shnum, &p.fault)).collect();
    assert_eq!(named.len(), 3, "{named:?}");
    assert!(matches!(named[0], (2, ShareFault::UebHashMismatch)));
    assert!(matches!(named[1], (4, ShareFault::Unavailable)));
    assert!(matches!(
        named[2],
        (1, ShareFault::Block { segment: 4, .. })
    ));
}

#[test]
fn too_few_good_shares_fails_with_the_list() {
    let plain = data(300, 3);
    let f = encode_bytes(&plain, &params(2, 3, 100), &KeySource::Random).unwrap();
    let cap = chk(&f.cap);
    let mut shares = f.shares.clone();
    shares[0].clear();
    shares[2][40] ^= 1;
    let mut store = MemoryShares::new(shares);
    let err = download(cap, &mut store, &mut Vec::new()).unwrap_err();
    match err {
        ImmutableError::NotEnoughShares { needed, problems } => {
            assert_eq!(needed, 2);
            let named: Vec<usize> = problems.iter().map(|p| p.shnum).collect();
            assert_eq!(named, vec![0, 2]);
        }
        e => panic!("unexpected {e}"),
    }
}

#[test]
fn decode_from_every_k_subset() {
    let plain = data(1000, 5);
    let (k, n) = (3, 6);
    let f = encode_bytes(&plain, &params(k, n, 256), &KeySource::Random).unwrap();
    let cap = chk(&f.cap);
    for a in 0..n {
        for b in a + 1..n {
            for c in b + 1..n {
                let (out, problems) = decode_with(cap, &f.shares, &[c, a, b]);
                assert_eq!(out, plain, "shares {a},{b},{c}");
                assert!(problems.is_empty());
            }
        }
    }
}

#[test]
fn v2_layout_roundtrip() {
    let plain = data(10_000, 7);
    let mut enc = Encoder::new(params(3, 10, 4096), KeySource::Fixed([5; 16]));
    let v1 = encode_bytes_with(&plain, &enc).unwrap();
    enc.force_v2 = true;
    let v2 = encode_bytes_with(&plain, &enc).unwrap();
    // The cap does not depend on the share layout.
    assert_eq!(v1.cap, v2.cap);
    for (a, b) in v1.shares.iter().zip(&v2.shares) {
        let (pa, pb) = (
            layout::parse_share_body(a).unwrap(),
            layout::parse_share_body(b).unwrap(),
        );
        assert_eq!(pb.layout.version, Version::V2);
        assert_eq!(pa.data, pb.data);
        assert_eq!(pa.ueb, pb.ueb);
        assert_eq!(b.len(), a.len() + 0x20 + 4);
    }
    let (out, problems) = decode_with(chk(&v2.cap), &v2.shares, &[9, 3, 5]);
    assert_eq!(out, plain);
    assert!(problems.is_empty());
}

#[test]
fn bad_ranges_are_rejected() {
    let plain = data(100, 1);
    let f = encode_bytes(&plain, &params(1, 2, 64), &KeySource::Random).unwrap();
    let mut store = MemoryShares::new(f.shares);
    let mut d = Downloader::new(chk(&f.cap), &mut store).unwrap();
    assert!(matches!(
        d.read_range(50, 51, &mut Vec::new()),
        Err(ImmutableError::BadRange { .. })
    ));
    assert!(d.read_range(100, 0, &mut Vec::new()).is_ok());
    assert!(d.read_range(u64::MAX, 2, &mut Vec::new()).is_err());
}

#[test]
fn segment_encoder_matches_file_encoder() {
    // The pure per-segment API gives the blocks the file encoder wrote.
    let plain = data(700, 2);
    let p = params(2, 4, 300);
    let key = [9u8; 16];
    let f = encode_bytes(&plain, &p, &KeySource::Fixed(key)).unwrap();
    let g = Geometry::new(700, &p).unwrap();
    let se = encode::SegmentEncoder::new(g.clone(), key).unwrap();
    for seg in 0..g.num_segments {
        let off = g.segment_offset(seg) as usize;
        let s = se
            .encode_segment(seg, &plain[off..off + g.segment_len(seg) as usize])
            .unwrap();
        for sh in 0..4 {
            let body = layout::parse_share_body(&f.shares[sh]).unwrap();
            let start = g.block_offset(seg) as usize;
            assert_eq!(
                s.block(sh),
                &body.data[start..start + g.block_len(seg) as usize]
            );
        }
    }
    assert!(se.encode_segment(0, &plain[..10]).is_err());
}
