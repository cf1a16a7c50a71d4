//! Property tests of the CBOR messages: arbitrary bytes never panic the decoders, and every
//! message round-trips through its encoding. The reference model is the message value itself.

use std::collections::{BTreeMap, BTreeSet};

use lafs::protocol::messages::*;
use proptest::prelude::*;

fn rtw_request() -> impl Strategy<Value = ReadTestWriteRequest> {
    let test = (
        any::<u64>(),
        any::<u64>(),
        prop::collection::vec(any::<u8>(), 0..8),
    )
        .prop_map(|(offset, size, specimen)| TestVector {
            offset,
            size,
            specimen,
        });
    let write = (any::<u64>(), prop::collection::vec(any::<u8>(), 0..8))
        .prop_map(|(offset, data)| WriteVector { offset, data });
    let twv = (
        prop::collection::vec(test, 0..4),
        prop::collection::vec(write, 0..4),
        prop::option::of(any::<u64>()),
    )
        .prop_map(|(test, write, new_length)| TestWriteVectors {
            test,
            write,
            new_length,
        });
    let read = (any::<u64>(), any::<u64>()).prop_map(|(offset, size)| ReadVector { offset, size });
    (
        prop::collection::btree_map(any::<u8>(), twv, 0..4),
        prop::collection::vec(read, 0..4),
    )
        .prop_map(|(test_write_vectors, read_vector)| ReadTestWriteRequest {
            test_write_vectors,
            read_vector,
        })
}

proptest! {
    #[test]
    fn hostile_bytes_never_panic(data in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = AllocateRequest::from_cbor(&data);
        let _ = AllocateResponse::from_cbor(&data);
        let _ = WriteResponse::from_cbor(&data);
        let _ = ShareList::from_cbor(&data);
        let _ = CorruptRequest::from_cbor(&data);
        let _ = VersionInfo::from_cbor(&data);
        let _ = ReadTestWriteRequest::from_cbor(&data, 1 << 20);
        let _ = ReadTestWriteResponse::from_cbor(&data);
    }

    #[test]
    fn mutated_valid_messages_never_panic(req in rtw_request(), idx in any::<usize>(), byte in any::<u8>()) {
        let mut bytes = req.to_cbor();
        let i = idx % bytes.len();
        bytes[i] = byte;
        let _ = ReadTestWriteRequest::from_cbor(&bytes, 1 << 20);
        bytes.truncate(i);
        let _ = ReadTestWriteRequest::from_cbor(&bytes, 1 << 20);
    }

    #[test]
    fn rtw_request_roundtrip(req in rtw_request()) {
        prop_assert_eq!(ReadTestWriteRequest::from_cbor(&req.to_cbor(), 1 << 20).unwrap(), req);
    }

    #[test]
    fn allocate_roundtrip(nums in prop::collection::btree_set(any::<u8>(), 0..20), size in any::<u64>()) {
        let m = AllocateRequest { share_numbers: nums, allocated_size: size };
        prop_assert_eq!(AllocateRequest::from_cbor(&m.to_cbor()).unwrap(), m);
    }

    #[test]
    fn rtw_response_roundtrip(
        success in any::<bool>(),
        data in prop::collection::btree_map(any::<u8>(), prop::collection::vec(prop::collection::vec(any::<u8>(), 0..6), 0..3), 0..4),
    ) {
        let m = ReadTestWriteResponse { success, data };
        prop_assert_eq!(ReadTestWriteResponse::from_cbor(&m.to_cbor()).unwrap(), m);
    }
}

#[test]
fn size_limits_enforced() {
    let big = AllocateRequest {
        share_numbers: BTreeSet::new(),
        allocated_size: 0,
    }
    .to_cbor();
    let mut padded = big.clone();
    padded.resize(ALLOCATE_MAX_BODY + 1, 0);
    assert!(matches!(
        AllocateRequest::from_cbor(&padded),
        Err(MessageError::TooLarge { .. })
    ));
    let req = ReadTestWriteRequest {
        test_write_vectors: BTreeMap::new(),
        read_vector: vec![ReadVector { offset: 0, size: 1 }; 31],
    };
    assert!(ReadTestWriteRequest::from_cbor(&req.to_cbor(), 1 << 20).is_err());
    // A declared 2^62-byte string in a tiny body is refused without allocating it.
    let hostile = [0x5b, 0x40, 0, 0, 0, 0, 0, 0, 0, 0x00];
    assert!(ShareList::from_cbor(&hostile).is_err());
    // Deep nesting is refused.
    let deep = vec![0x81u8; 10_000];
    assert!(ShareList::from_cbor(&deep).is_err());
}
