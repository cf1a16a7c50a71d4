//! Parses arbitrary bytes as an SDMF or MDMF share (header, offsets, whole share): must never
//! panic, whatever the input.
#![no_main]

use lafs::mutable::layout::{Share, ShareHeader, SignedPrefix};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = SignedPrefix::parse(data);
    if let Ok(h) = ShareHeader::parse(data) {
        for seg in 0..h.geometry.num_segments.min(4) {
            let _ = h.segment_range(seg);
        }
    }
    if let Ok(s) = Share::parse(data) {
        // A parsed share re-serializes without panicking.
        let _ = s.to_bytes();
    }
});
