//! Untrusted CHK share bytes: the share body parser, the UEB parser and validator, and the
//! share hash chain parser must return errors, never panic.
#![no_main]

use lafs::immutable::{layout, ueb::Ueb};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(body) = layout::parse_share_body(data) {
        if let Ok(u) = Ueb::parse(body.ueb) {
            let _ = u.validate(3, 10, body.layout.data_size.saturating_mul(3));
        }
    }
    if let Ok(u) = Ueb::parse(data) {
        for (k, n, size) in [(1, 1, 56), (3, 10, 1000), (101, 256, u64::MAX / 2)] {
            let _ = u.validate(k, n, size);
        }
    }
    let _ = layout::parse_share_hashes(data);
    let _ = layout::ShareLayout::parse(data);
});
