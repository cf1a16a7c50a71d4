//! Fuzzes cap parsing: any UTF-8 input parses without panicking (tolerant and strict parsers
//! agree on what is known); a known cap re-parses from its string to itself, and diminishing it
//! never panics and gives caps that re-parse to themselves.
#![no_main]

use lafs::cap::{parse_bytes, Cap};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The byte parser (dirnodes) must survive anything, in both contexts.
    let _ = parse_bytes(data, true);
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let cap = Cap::parse(s);
    assert_eq!(
        Cap::parse_strict(s).is_ok(),
        !matches!(cap, Cap::Unknown(_))
    );
    match &cap {
        Cap::Unknown(u) => assert_eq!(u, s),
        known => {
            assert_eq!(&Cap::parse(&known.to_string()), known);
            for diminished in [known.readonly(), known.verifier()].into_iter().flatten() {
                assert_eq!(Cap::parse(&diminished.to_string()), diminished);
                assert_eq!(diminished.storage_index(), known.storage_index());
            }
        }
    }
});
