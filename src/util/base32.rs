//! Tahoe-LAFS base32: RFC 4648 with a lowercase alphabet, no padding.
//!
//! Tahoe only accepts the canonical spelling of a value: lowercase, and the unused low bits of the
//! last character zero. Decoding enforces both, so a value has exactly one accepted string, which
//! is what makes caps comparable as strings.

use data_encoding::{Encoding, Specification};
use std::sync::OnceLock;

fn encoding() -> &'static Encoding {
    static ENC: OnceLock<Encoding> = OnceLock::new();
    ENC.get_or_init(|| {
        let mut spec = Specification::new();
        spec.symbols.push_str("abcdefghijklmnopqrstuvwxyz234567");
        spec.check_trailing_bits = true;
        spec.encoding().expect("valid base32 specification")
    })
}

/// Encodes bytes as lowercase unpadded base32.
pub fn encode(data: &[u8]) -> String {
    encoding().encode(data)
}

/// The number of characters `encode` produces for `len` bytes.
pub fn encoded_len(len: usize) -> usize {
    (len * 8).div_ceil(5)
}

/// Decodes canonical Tahoe base32. Returns `None` for any character outside the lowercase
/// alphabet, an impossible length, or non-zero trailing bits.
pub fn decode(text: &str) -> Option<Vec<u8>> {
    encoding().decode(text.as_bytes()).ok()
}

/// Decodes exactly `N` bytes of canonical base32.
pub fn decode_array<const N: usize>(text: &str) -> Option<[u8; N]> {
    if text.len() != encoded_len(N) {
        return None;
    }
    decode(text)?.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_canonical() {
        assert_eq!(encode(b""), "");
        assert_eq!(encode(&[0u8; 16]), "aaaaaaaaaaaaaaaaaaaaaaaaaa");
        assert_eq!(encode(b"x"), "pa");
        assert_eq!(decode("pa").unwrap(), b"x");
        // Non-zero trailing bits are not canonical.
        assert!(decode("pb").is_none());
        assert!(decode("PA").is_none());
        assert!(decode("p").is_none());
        assert!(decode("p1").is_none());
        assert_eq!(encoded_len(16), 26);
        assert_eq!(encoded_len(32), 52);
        assert_eq!(encoded_len(20), 32);
        let a: [u8; 2] = decode_array("aeba").unwrap();
        assert_eq!(a, [1, 2]);
        assert!(decode_array::<3>("aeba").is_none());
    }

    proptest::proptest! {
        #[test]
        fn prop_round_trip(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..100)) {
            let s = encode(&data);
            proptest::prop_assert_eq!(s.len(), encoded_len(data.len()));
            proptest::prop_assert_eq!(decode(&s).unwrap(), data);
        }
    }
}
