//! Fuzzes every CBOR message decoder of the storage protocol: none may panic, and whatever
//! decodes must re-encode to bytes that decode to the same message.
#![no_main]

use lafs::protocol::messages::*;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = AllocateRequest::from_cbor(data) {
        assert_eq!(AllocateRequest::from_cbor(&m.to_cbor()).unwrap(), m);
    }
    if let Ok(m) = AllocateResponse::from_cbor(data) {
        assert_eq!(AllocateResponse::from_cbor(&m.to_cbor()).unwrap(), m);
    }
    if let Ok(m) = WriteResponse::from_cbor(data) {
        assert_eq!(WriteResponse::from_cbor(&m.to_cbor()).unwrap(), m);
    }
    if let Ok(m) = ShareList::from_cbor(data) {
        assert_eq!(ShareList::from_cbor(&m.to_cbor()).unwrap(), m);
    }
    if let Ok(m) = CorruptRequest::from_cbor(data) {
        assert_eq!(CorruptRequest::from_cbor(&m.to_cbor()).unwrap(), m);
    }
    if let Ok(m) = VersionInfo::from_cbor(data) {
        assert_eq!(VersionInfo::from_cbor(&m.to_cbor()).unwrap(), m);
    }
    if let Ok(m) = ReadTestWriteRequest::from_cbor(data, 1 << 20) {
        assert_eq!(ReadTestWriteRequest::from_cbor(&m.to_cbor(), 1 << 21).unwrap(), m);
    }
    if let Ok(m) = ReadTestWriteResponse::from_cbor(data) {
        assert_eq!(ReadTestWriteResponse::from_cbor(&m.to_cbor()).unwrap(), m);
    }
});
