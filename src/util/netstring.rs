//! Netstrings (`len:bytes,`), the framing of Tahoe's tagged hashes, URI extension blocks and
//! directory bodies.
//!
//! The writer never emits leading zeros; the reader accepts them, as Tahoe's `int()` parser does.

use thiserror::Error;

/// Why a netstring could not be parsed.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum NetstringError {
    #[error("netstring: missing ':' after the length")]
    NoColon,
    #[error("netstring: length is not a decimal number")]
    BadLength,
    #[error("netstring: length {len} runs past the end of the data ({available} bytes left)")]
    Truncated { len: usize, available: usize },
    #[error("netstring: missing ',' terminator")]
    NoComma,
}

/// Appends `ns(data)` to `out`.
pub fn write(out: &mut Vec<u8>, data: &[u8]) {
    out.extend_from_slice(data.len().to_string().as_bytes());
    out.push(b':');
    out.extend_from_slice(data);
    out.push(b',');
}

/// Returns `ns(data)`.
pub fn netstring(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 12);
    write(&mut out, data);
    out
}

/// Parses one netstring at the start of `input`, returning its payload and the rest.
pub fn parse(input: &[u8]) -> Result<(&[u8], &[u8]), NetstringError> {
    let colon = input
        .iter()
        .take(21)
        .position(|&b| b == b':')
        .ok_or(NetstringError::NoColon)?;
    let digits = &input[..colon];
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return Err(NetstringError::BadLength);
    }
    let len: usize = std::str::from_utf8(digits)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or(NetstringError::BadLength)?;
    let rest = &input[colon + 1..];
    if rest.len() < len {
        return Err(NetstringError::Truncated {
            len,
            available: rest.len(),
        });
    }
    let (payload, rest) = rest.split_at(len);
    match rest.split_first() {
        Some((b',', rest)) => Ok((payload, rest)),
        _ => Err(NetstringError::NoComma),
    }
}

/// Parses a concatenation of exactly `count` netstrings that fills all of `input`.
pub fn split(input: &[u8], count: usize) -> Result<Vec<&[u8]>, NetstringError> {
    let mut out = Vec::with_capacity(count);
    let mut rest = input;
    for _ in 0..count {
        let (item, r) = parse(rest)?;
        out.push(item);
        rest = r;
    }
    if !rest.is_empty() {
        return Err(NetstringError::NoComma);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values() {
        assert_eq!(netstring(b""), b"0:,");
        assert_eq!(netstring(b"abc"), b"3:abc,");
        assert_eq!(parse(b"3:abc,rest").unwrap(), (&b"abc"[..], &b"rest"[..]));
        assert_eq!(parse(b"03:abc,").unwrap().0, b"abc");
        assert_eq!(
            parse(b"3:ab"),
            Err(NetstringError::Truncated {
                len: 3,
                available: 2
            })
        );
        assert_eq!(parse(b"3:abcd"), Err(NetstringError::NoComma));
        assert_eq!(parse(b"x:"), Err(NetstringError::BadLength));
        assert_eq!(parse(b":"), Err(NetstringError::BadLength));
        assert_eq!(
            parse(b"99999999999999999999999:"),
            Err(NetstringError::NoColon)
        );
        assert_eq!(
            parse(b"99999999999999999999:"),
            Err(NetstringError::BadLength)
        );
        assert_eq!(split(b"1:a,2:bc,", 2).unwrap(), vec![&b"a"[..], &b"bc"[..]]);
        assert!(split(b"1:a,2:bc,x", 2).is_err());
    }

    proptest::proptest! {
        #[test]
        fn prop_round_trip(a in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..50),
                           b in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..50)) {
            let mut buf = netstring(&a);
            write(&mut buf, &b);
            let parts = split(&buf, 2).unwrap();
            proptest::prop_assert_eq!(parts, vec![&a[..], &b[..]]);
        }

        #[test]
        fn prop_never_panics(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..40)) {
            let _ = parse(&data);
        }
    }
}
