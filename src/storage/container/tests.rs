//! Container tests. Expected bytes are built here by hand from the digest's layout (§7), never
//! from the code under test.

use super::immutable::{self, ImmutableShare, ImmutableVersion};
use super::lease::{LeaseRecord, SecretStorage};
use super::mutable::{self, MutableShare, MutableVersion};
use super::{detect_kind, ContainerError, ShareKind};
use proptest::prelude::*;

const NODE: [u8; 20] = [7; 20];
const WE: [u8; 32] = [9; 32];

fn be32(v: u32) -> [u8; 4] {
    v.to_be_bytes()
}

#[test]
fn mutable_magics_match_digest() {
    let mut v2 = b"Tahoe mutable container v2\n".to_vec();
    v2.extend_from_slice(&[0xc3, 0x55, 0x21, 0x99, 0x25]);
    assert_eq!(mutable::MAGIC_V2.as_slice(), v2.as_slice());
    // Independently: the 5 bytes are tagged_hash("allmydata_mutable_container_header", text)[:5].
    let h = crate::crypto::hash::tagged_hash(
        b"allmydata_mutable_container_header",
        b"Tahoe mutable container v2\n",
    );
    assert_eq!(&h[..5], &[0xc3, 0x55, 0x21, 0x99, 0x25]);
    let mut v1 = b"Tahoe mutable container v1\n".to_vec();
    v1.extend_from_slice(&[0x75, 0x09, 0x44, 0x03, 0x8e]);
    assert_eq!(mutable::MAGIC_V1.as_slice(), v1.as_slice());
}

#[test]
fn fresh_mutable_container_known_bytes() {
    let got = mutable::fresh_container(MutableVersion::V2, &NODE, &WE);
    let mut want = b"Tahoe mutable container v2\n".to_vec();
    want.extend_from_slice(&[0xc3, 0x55, 0x21, 0x99, 0x25]);
    want.extend_from_slice(&NODE);
    want.extend_from_slice(&WE);
    want.extend_from_slice(&[0; 8]); // data length 0
    want.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0x01, 0xd4]); // extra-lease offset 468
    want.extend_from_slice(&[0; 368]); // four empty lease slots
    want.extend_from_slice(&[0; 4]); // no extra leases
    assert_eq!(want.len(), 472);
    assert_eq!(got, want);
    let share = MutableShare::open(got).unwrap();
    assert_eq!(share.data_len(), 0);
    assert!(share.write_enabler_matches(&WE));
    assert!(!share.write_enabler_matches(&[8; 32]));
    assert_eq!(detect_kind(share.store()), Some(ShareKind::Mutable));
}

#[test]
fn immutable_create_known_bytes() {
    let lease = LeaseRecord {
        owner_num: 0,
        expiration: 0x0102_0304,
        renew_stored: [0xaa; 32],
        cancel_stored: [0xbb; 32],
        nodeid: [0; 20],
    };
    let mut share = ImmutableShare::create(Vec::new(), ImmutableVersion::V1, 5, &lease).unwrap();
    share.write(0, b"hello").unwrap();
    let mut want = Vec::new();
    want.extend_from_slice(&be32(1));
    want.extend_from_slice(&be32(5));
    want.extend_from_slice(&be32(1));
    want.extend_from_slice(b"hello");
    want.extend_from_slice(&be32(0));
    want.extend_from_slice(&[0xaa; 32]);
    want.extend_from_slice(&[0xbb; 32]);
    want.extend_from_slice(&[1, 2, 3, 4]);
    assert_eq!(share.store(), &want);
    assert_eq!(detect_kind(&want), Some(ShareKind::Immutable));
    // Saturated data-length field for large allocations.
    assert_eq!(
        immutable::encode_header(ImmutableVersion::V2, 1 << 40, 0),
        [0, 0, 0, 2, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0]
    );
}

#[test]
fn immutable_reads_clamp_and_writes_bounded() {
    let lease = LeaseRecord::new(SecretStorage::Blake2b, 0, &[1; 32], &[2; 32], 100, [0; 20]);
    let mut share = ImmutableShare::create(Vec::new(), ImmutableVersion::V2, 10, &lease).unwrap();
    share.write(0, b"0123456789").unwrap();
    assert!(matches!(
        share.write(8, b"abc"),
        Err(ContainerError::OutOfBounds { .. })
    ));
    assert!(matches!(
        share.write(u64::MAX, b"a"),
        Err(ContainerError::OutOfBounds { .. })
    ));
    let reopened = ImmutableShare::open(share.into_store()).unwrap();
    assert_eq!(reopened.data_len(), 10);
    assert_eq!(reopened.read(8, 100).unwrap(), b"89");
    assert_eq!(reopened.read(10, 5).unwrap(), b"");
    assert_eq!(reopened.read(u64::MAX, u64::MAX).unwrap(), b"");
    let leases = reopened.leases().unwrap();
    assert_eq!(leases.len(), 1);
    // v2 stores hashes, not the secrets.
    assert_ne!(leases[0].renew_stored, [1; 32]);
    assert!(leases[0].renew_matches(SecretStorage::Blake2b, &[1; 32]));
    assert!(leases[0].cancel_matches(SecretStorage::Blake2b, &[2; 32]));
}

#[test]
fn immutable_renew_vs_append_and_retain() {
    let lease = LeaseRecord::new(SecretStorage::Blake2b, 0, &[1; 32], &[2; 32], 100, [0; 20]);
    let mut share = ImmutableShare::create(Vec::new(), ImmutableVersion::V2, 4, &lease).unwrap();
    share
        .add_or_renew_lease(1, &[1; 32], &[2; 32], 200)
        .unwrap(); // renews
    share
        .add_or_renew_lease(1, &[1; 32], &[2; 32], 150)
        .unwrap(); // never backwards
    share
        .add_or_renew_lease(1, &[3; 32], &[4; 32], 300)
        .unwrap(); // appends
    let leases = share.leases().unwrap();
    assert_eq!(
        leases
            .iter()
            .map(|l| (l.owner_num, l.expiration))
            .collect::<Vec<_>>(),
        vec![(0, 200), (1, 300)]
    );
    assert_eq!(share.store().len(), 12 + 4 + 2 * 72);
    assert_eq!(share.retain_leases(|l| l.expiration > 250).unwrap(), 1);
    assert_eq!(share.store().len(), 12 + 4 + 72);
    assert_eq!(share.leases().unwrap()[0].expiration, 300);
}

#[test]
fn mutable_leases_slots_and_extra_block_moves_on_growth() {
    let mut share = MutableShare::create(Vec::new(), MutableVersion::V2, &NODE, &WE).unwrap();
    for i in 0..5u8 {
        share
            .add_or_renew_lease(1, &[i; 32], &[i; 32], 1000 + u32::from(i), &NODE)
            .unwrap();
    }
    // 4 header slots + 1 extra lease after the (empty) data.
    let bytes = share.store().clone();
    assert_eq!(bytes.len(), 472 + 92);
    assert_eq!(&bytes[468..472], &be32(1));
    assert_eq!(&bytes[100..104], &be32(1)); // slot 0 owner
    assert_eq!(&bytes[104..108], &be32(1000)); // slot 0 expiration
    assert_eq!(&bytes[172..192], &NODE); // slot 0 nodeid
    let extra = bytes[472..564].to_vec();
    share.write(0, b"abcdef").unwrap();
    let bytes = share.store().clone();
    assert_eq!(&bytes[84..92], &6u64.to_be_bytes());
    assert_eq!(&bytes[92..100], &(468u64 + 6).to_be_bytes());
    assert_eq!(&bytes[468..474], b"abcdef");
    assert_eq!(&bytes[474..478], &be32(1));
    assert_eq!(&bytes[478..570], extra.as_slice());
    // A hole is zero-filled and a later truncation keeps the container size.
    share.write(10, b"Z").unwrap();
    assert_eq!(share.read(0, 100).unwrap(), b"abcdef\0\0\0\0Z");
    let size = share.store().len();
    share.truncate_data(3).unwrap();
    assert_eq!(share.read(0, 100).unwrap(), b"abc");
    assert_eq!(share.store().len(), size);
    // Writing again past the truncated length zero-fills stale bytes.
    share.write(5, b"Q").unwrap();
    assert_eq!(share.read(0, 100).unwrap(), b"abc\0\0Q");
    assert_eq!(share.leases().unwrap().len(), 5);
    // Renew matches the 5th (extra) lease.
    share
        .add_or_renew_lease(1, &[4; 32], &[4; 32], 5000, &NODE)
        .unwrap();
    assert_eq!(share.leases().unwrap()[4].1.expiration, 5000);
    // Blank two, then a new lease refills the first empty slot.
    assert_eq!(
        share
            .retain_leases(|l| l.expiration != 1000 && l.expiration != 1002)
            .unwrap(),
        3
    );
    share
        .add_or_renew_lease(1, &[9; 32], &[9; 32], 7, &NODE)
        .unwrap();
    let slots: Vec<u32> = share.leases().unwrap().iter().map(|(s, _)| *s).collect();
    assert_eq!(slots, vec![0, 1, 3, 4]);
}

#[test]
fn mutable_v1_leases_are_cleartext() {
    let mut share = MutableShare::create(Vec::new(), MutableVersion::V1, &NODE, &WE).unwrap();
    share
        .add_or_renew_lease(1, &[5; 32], &[6; 32], 42, &NODE)
        .unwrap();
    let b = share.store();
    assert_eq!(&b[108..140], &[5; 32]);
    assert_eq!(&b[140..172], &[6; 32]);
}

#[test]
fn corrupt_mutable_headers_are_typed_errors() {
    let mut c = mutable::fresh_container(MutableVersion::V2, &NODE, &WE);
    c[84..92].copy_from_slice(&1000u64.to_be_bytes()); // data length beyond capacity
    assert!(matches!(
        MutableShare::open(c.clone()),
        Err(ContainerError::Corrupt(_))
    ));
    let mut c = mutable::fresh_container(MutableVersion::V2, &NODE, &WE);
    c[468..472].copy_from_slice(&be32(u32::MAX)); // absurd extra-lease count
    assert!(matches!(
        MutableShare::open(c),
        Err(ContainerError::Truncated { .. })
    ));
    assert!(matches!(
        MutableShare::open(vec![0u8; 10]),
        Err(ContainerError::Truncated { .. })
    ));
    assert!(matches!(
        MutableShare::open(vec![0u8; 600]),
        Err(ContainerError::UnknownMutableMagic)
    ));
    let mut im = immutable::encode_header(ImmutableVersion::V2, 0, 0).to_vec();
    im[8..12].copy_from_slice(&be32(u32::MAX));
    assert!(matches!(
        ImmutableShare::open(im),
        Err(ContainerError::Truncated { .. })
    ));
    assert!(matches!(
        ImmutableShare::open(vec![0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 0]),
        Err(ContainerError::UnknownImmutableVersion(3))
    ));
}

proptest! {
    #[test]
    fn parsers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..700), off in any::<u64>(), len in 0u64..10_000) {
        let _ = detect_kind(&bytes);
        let _ = immutable::parse_header(&bytes);
        let _ = mutable::parse_header(&bytes);
        if let Ok(s) = ImmutableShare::open(bytes.clone()) {
            let _ = s.read(off, len);
            let _ = s.leases();
        }
        if let Ok(s) = MutableShare::open(bytes.clone()) {
            let _ = s.read(off, len);
            let _ = s.leases();
        }
    }

    #[test]
    fn mutable_headers_with_random_fields_never_panic(dl in any::<u64>(), elo in any::<u64>(), count in any::<u32>(), tail in 0usize..400) {
        let mut c = mutable::fresh_container(MutableVersion::V2, &NODE, &WE);
        c[84..92].copy_from_slice(&dl.to_be_bytes());
        c[92..100].copy_from_slice(&elo.to_be_bytes());
        c.resize(472 + tail, 0);
        if let Some(slot) = c.get_mut(468..472) { slot.copy_from_slice(&count.to_be_bytes()); }
        if let Ok(mut s) = MutableShare::open(c) {
            let _ = s.read(0, 1000);
            let _ = s.leases();
            let _ = s.add_or_renew_lease(1, &[1; 32], &[1; 32], 5, &NODE);
            let _ = s.write(3, b"xyz");
        }
    }

    #[test]
    fn lease_records_round_trip(owner in any::<u32>(), exp in any::<u32>(), r in any::<[u8; 32]>(), c in any::<[u8; 32]>(), n in any::<[u8; 20]>()) {
        let l = LeaseRecord { owner_num: owner, expiration: exp, renew_stored: r, cancel_stored: c, nodeid: n };
        prop_assert_eq!(LeaseRecord::from_mutable_bytes(&l.to_mutable_bytes()), l.clone());
        let im = LeaseRecord::from_immutable_bytes(&l.to_immutable_bytes());
        prop_assert_eq!(im, LeaseRecord { nodeid: [0; 20], ..l });
    }
}
