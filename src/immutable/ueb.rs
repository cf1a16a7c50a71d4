//! The URI extension block (UEB, digest §3.5): the per-file metadata every share carries and the
//! cap commits to by hash.
//!
//! Writing produces exactly Tahoe 1.20's 11 keys, sorted, each as `key:` + netstring. Reading is
//! for untrusted bytes: the length is bounded ([`MAX_UEB_SIZE`]), keys must match
//! `[a-zA-Z_-]+`, numbers are plain ASCII decimal, duplicate keys are rejected, unknown keys are
//! ignored. [`Ueb::validate`] then applies the checker's consistency rules against the cap's
//! k / N / size, and yields the file's [`Geometry`].

use super::params::Geometry;
use crate::crypto::hash::Hash;
use crate::util::netstring;
use std::collections::BTreeMap;
use thiserror::Error;

/// Readers reject a UEB this long or longer (Tahoe's `ReadBucketProxy.MAX_UEB_SIZE`).
pub const MAX_UEB_SIZE: usize = 2000;

/// Why a UEB was rejected.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum UebError {
    #[error("UEB: {0} bytes is too long")]
    TooLong(usize),
    #[error("UEB: malformed key")]
    BadKey,
    #[error("UEB: malformed value: {0}")]
    BadValue(#[from] netstring::NetstringError),
    #[error("UEB: key {0} appears twice")]
    DuplicateKey(String),
    #[error("UEB: required key {0} is missing")]
    Missing(&'static str),
    #[error("UEB: {0} is not a decimal number")]
    BadNumber(&'static str),
    #[error("UEB: {0} must be 32 bytes")]
    BadHashLength(&'static str),
    #[error("UEB: unsupported codec")]
    UnsupportedCodec,
    #[error("UEB: {0} is inconsistent with the cap")]
    Inconsistent(&'static str),
}

/// The fields of a UEB that Tahoe writes. Optional ones may be absent in a UEB read from a share.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ueb {
    pub segment_size: u64,
    pub crypttext_root_hash: Hash,
    pub share_root_hash: Hash,
    pub crypttext_hash: Option<Hash>,
    pub codec_name: Option<Vec<u8>>,
    pub codec_params: Option<Vec<u8>>,
    pub tail_codec_params: Option<Vec<u8>>,
    pub size: Option<u64>,
    pub num_segments: Option<u64>,
    pub needed_shares: Option<u64>,
    pub total_shares: Option<u64>,
}

impl Ueb {
    /// The UEB the uploader writes for `geom` and the computed hashes.
    pub fn for_file(
        geom: &Geometry,
        crypttext_hash: Hash,
        crypttext_root_hash: Hash,
        share_root_hash: Hash,
    ) -> Ueb {
        let (k, n) = (geom.needed, geom.total);
        Ueb {
            segment_size: geom.segment_size,
            crypttext_root_hash,
            share_root_hash,
            crypttext_hash: Some(crypttext_hash),
            codec_name: Some(b"crs".to_vec()),
            codec_params: Some(format!("{}-{k}-{n}", geom.segment_size).into_bytes()),
            tail_codec_params: Some(format!("{}-{k}-{n}", geom.padded_tail).into_bytes()),
            size: Some(geom.size),
            num_segments: Some(geom.num_segments),
            needed_shares: Some(k as u64),
            total_shares: Some(n as u64),
        }
    }

    /// Serializes with keys in byte order, `key:` + netstring each, nothing in between.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut fields: BTreeMap<&str, Vec<u8>> = BTreeMap::new();
        let num = |v: u64| v.to_string().into_bytes();
        fields.insert("segment_size", num(self.segment_size));
        fields.insert("crypttext_root_hash", self.crypttext_root_hash.to_vec());
        fields.insert("share_root_hash", self.share_root_hash.to_vec());
        if let Some(h) = self.crypttext_hash {
            fields.insert("crypttext_hash", h.to_vec());
        }
        for (key, v) in [
            ("codec_name", &self.codec_name),
            ("codec_params", &self.codec_params),
            ("tail_codec_params", &self.tail_codec_params),
        ] {
            if let Some(v) = v {
                fields.insert(key, v.clone());
            }
        }
        for (key, v) in [
            ("size", self.size),
            ("num_segments", self.num_segments),
            ("needed_shares", self.needed_shares),
            ("total_shares", self.total_shares),
        ] {
            if let Some(v) = v {
                fields.insert(key, num(v));
            }
        }
        let mut out = Vec::with_capacity(340);
        for (key, value) in fields {
            out.extend_from_slice(key.as_bytes());
            out.push(b':');
            netstring::write(&mut out, &value);
        }
        out
    }

    /// Parses untrusted UEB bytes (no consistency checks: see [`Ueb::validate`]).
    pub fn parse(data: &[u8]) -> Result<Ueb, UebError> {
        if data.len() >= MAX_UEB_SIZE {
            return Err(UebError::TooLong(data.len()));
        }
        let mut map: BTreeMap<&[u8], &[u8]> = BTreeMap::new();
        let mut rest = data;
        while !rest.is_empty() {
            let colon = rest
                .iter()
                .position(|&b| b == b':')
                .ok_or(UebError::BadKey)?;
            let key = &rest[..colon];
            if key.is_empty()
                || !key
                    .iter()
                    .all(|&b| b.is_ascii_alphabetic() || b == b'_' || b == b'-')
            {
                return Err(UebError::BadKey);
            }
            let (value, r) = netstring::parse(&rest[colon + 1..])?;
            if map.insert(key, value).is_some() {
                return Err(UebError::DuplicateKey(
                    String::from_utf8_lossy(key).into_owned(),
                ));
            }
            rest = r;
        }
        let num = |name: &'static str| -> Result<Option<u64>, UebError> {
            match map.get(name.as_bytes()) {
                None => Ok(None),
                Some(v) => parse_decimal(v).map(Some).ok_or(UebError::BadNumber(name)),
            }
        };
        let hash = |name: &'static str| -> Result<Option<Hash>, UebError> {
            match map.get(name.as_bytes()) {
                None => Ok(None),
                Some(v) => Hash::try_from(*v)
                    .map(Some)
                    .map_err(|_| UebError::BadHashLength(name)),
            }
        };
        let bytes = |name: &str| map.get(name.as_bytes()).map(|v| v.to_vec());
        Ok(Ueb {
            segment_size: num("segment_size")?.ok_or(UebError::Missing("segment_size"))?,
            crypttext_root_hash: hash("crypttext_root_hash")?
                .ok_or(UebError::Missing("crypttext_root_hash"))?,
            share_root_hash: hash("share_root_hash")?
                .ok_or(UebError::Missing("share_root_hash"))?,
            crypttext_hash: hash("crypttext_hash")?,
            codec_name: bytes("codec_name"),
            codec_params: bytes("codec_params"),
            tail_codec_params: bytes("tail_codec_params"),
            size: num("size")?,
            num_segments: num("num_segments")?,
            needed_shares: num("needed_shares")?,
            total_shares: num("total_shares")?,
        })
    }

    /// Applies the checker's rules against the cap's `needed`, `total` and `size` and returns the
    /// geometry. The segment size must be a positive multiple of `needed` no larger than
    /// `next_multiple(size, needed)` (what any honest uploader writes; it bounds memory too).
    pub fn validate(&self, needed: usize, total: usize, size: u64) -> Result<Geometry, UebError> {
        let k = needed as u64;
        let max_segment = size.div_ceil(k.max(1)).checked_mul(k);
        if k == 0 || size == 0 || max_segment.is_none_or(|m| self.segment_size > m) {
            return Err(UebError::Inconsistent("segment_size"));
        }
        let geom = Geometry::with_segment_size(size, needed, total, self.segment_size)
            .map_err(|_| UebError::Inconsistent("segment_size"))?;
        if let Some(name) = &self.codec_name {
            if name != b"crs" {
                return Err(UebError::UnsupportedCodec);
            }
        }
        let params_ok = |v: &Option<Vec<u8>>, seg: u64| match v {
            None => true,
            Some(v) => parse_codec_params(v) == Some((seg, k, total as u64)),
        };
        if !params_ok(&self.codec_params, geom.segment_size) {
            return Err(UebError::Inconsistent("codec_params"));
        }
        if !params_ok(&self.tail_codec_params, geom.padded_tail) {
            return Err(UebError::Inconsistent("tail_codec_params"));
        }
        for (name, v, want) in [
            ("num_segments", self.num_segments, geom.num_segments),
            ("size", self.size, size),
            ("needed_shares", self.needed_shares, k),
            ("total_shares", self.total_shares, total as u64),
        ] {
            if v.is_some_and(|v| v != want) {
                return Err(UebError::Inconsistent(name));
            }
        }
        Ok(geom)
    }
}

/// ASCII decimal, digits only (leading zeros allowed, as Python's `int()` allows them).
fn parse_decimal(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 20 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// `"<segsize>-<k>-<n>"`.
fn parse_codec_params(v: &[u8]) -> Option<(u64, u64, u64)> {
    let mut it = v.split(|&b| b == b'-');
    let a = parse_decimal(it.next()?)?;
    let b = parse_decimal(it.next()?)?;
    let c = parse_decimal(it.next()?)?;
    if it.next().is_some() {
        return None;
    }
    Some((a, b, c))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::immutable::params::EncodingParams;

    fn sample() -> (Geometry, Ueb) {
        let g = Geometry::new(
            56,
            &EncodingParams {
                needed: 3,
                happy: 7,
                total: 10,
                max_segment_size: 131072,
            },
        )
        .unwrap();
        let u = Ueb::for_file(&g, [1; 32], [2; 32], [3; 32]);
        (g, u)
    }

    /// The serialization example of digest §3.5 (k=3, N=10, 56 bytes).
    #[test]
    fn digest_example_bytes() {
        let (_, u) = sample();
        let mut want = b"codec_name:3:crs,codec_params:7:57-3-10,crypttext_hash:32:".to_vec();
        want.extend_from_slice(&[1; 32]);
        want.extend_from_slice(b",crypttext_root_hash:32:");
        want.extend_from_slice(&[2; 32]);
        want.extend_from_slice(
            b",needed_shares:1:3,num_segments:1:1,segment_size:2:57,share_root_hash:32:",
        );
        want.extend_from_slice(&[3; 32]);
        want.extend_from_slice(b",size:2:56,tail_codec_params:7:57-3-10,total_shares:2:10,");
        assert_eq!(u.to_bytes(), want);
    }

    #[test]
    fn parse_roundtrip_and_validate() {
        let (g, u) = sample();
        let parsed = Ueb::parse(&u.to_bytes()).unwrap();
        assert_eq!(parsed, u);
        assert_eq!(parsed.validate(3, 10, 56).unwrap(), g);
        assert_eq!(
            parsed.validate(3, 9, 56),
            Err(UebError::Inconsistent("codec_params"))
        );
        assert_eq!(
            parsed.validate(3, 10, 57),
            Err(UebError::Inconsistent("size"))
        );
    }

    #[test]
    fn unknown_keys_ignored_and_minimal_accepted() {
        let mut b = b"plaintext_hash:3:abc,".to_vec();
        b.extend_from_slice(b"crypttext_root_hash:32:");
        b.extend_from_slice(&[2; 32]);
        b.extend_from_slice(b",segment_size:3:057,share_root_hash:32:");
        b.extend_from_slice(&[3; 32]);
        b.push(b',');
        let u = Ueb::parse(&b).unwrap();
        assert_eq!(u.segment_size, 57);
        assert!(u.validate(3, 10, 56).is_ok());
    }

    #[test]
    fn rejects_malformed() {
        let (_, u) = sample();
        let good = u.to_bytes();
        assert_eq!(Ueb::parse(&vec![b'a'; 2000]), Err(UebError::TooLong(2000)));
        assert!(Ueb::parse(&good[..good.len() - 1]).is_err());
        let mut dup = good.clone();
        dup.extend_from_slice(b"size:2:56,");
        assert_eq!(Ueb::parse(&dup), Err(UebError::DuplicateKey("size".into())));
        assert_eq!(Ueb::parse(b"s1ze:1:1,"), Err(UebError::BadKey));
        assert_eq!(
            Ueb::parse(b"size:1:1,"),
            Err(UebError::Missing("segment_size"))
        );
        assert_eq!(
            Ueb::parse(b"segment_size:2:+7,"),
            Err(UebError::BadNumber("segment_size"))
        );
        assert_eq!(
            Ueb::parse(b"segment_size:1:7,share_root_hash:1:x,crypttext_root_hash:1:x,"),
            Err(UebError::BadHashLength("crypttext_root_hash"))
        );
        let mut wrong_codec = u.clone();
        wrong_codec.codec_name = Some(b"xyz".to_vec());
        assert_eq!(
            wrong_codec.validate(3, 10, 56),
            Err(UebError::UnsupportedCodec)
        );
        let mut big_seg = u.clone();
        big_seg.segment_size = 60;
        big_seg.codec_params = None;
        assert_eq!(
            big_seg.validate(3, 10, 56),
            Err(UebError::Inconsistent("segment_size"))
        );
    }
}
