//! Capabilities: the strings that are necessary and sufficient to read, verify or modify a file or
//! directory.
//!
//! Design: a cap is a [`NodeCap`] (the file-level key material of one of Tahoe's file kinds) and a
//! flag saying whether it names a directory stored in that file; every Tahoe kind has a directory
//! counterpart (`URI:CHK:` ↔ `URI:DIR2-CHK:`, `URI:SSK:` ↔ `URI:DIR2:` …), so [`Cap`] is
//! `File(NodeCap) | Dir(NodeCap) | Unknown(String)`. Parsing follows Tahoe 1.20's regexes exactly,
//! including their quirks (canonical lowercase base32, anchored or not, MDMF suffixes ignored);
//! what Tahoe would turn into an `UnknownURI` becomes [`Cap::Unknown`] and is kept verbatim.
//!
//! Caps are secrets: `Debug` prints the kind and the storage index only (never a key), and no error
//! in this module contains the input text.

/// Mutable file formats: both use the same keys and differ in share layout and cap prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MutableFormat {
    Sdmf,
    Mdmf,
}

/// A literal file: the whole content is in the cap (55 bytes or less when Tahoe writes it).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct LitCap {
    pub data: Vec<u8>,
}

/// A CHK read cap: `URI:CHK:key:ueb_hash:k:N:size`.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ChkCap {
    pub key: [u8; 16],
    pub ueb_hash: [u8; 32],
    pub needed: u32,
    pub total: u32,
    pub size: u64,
}

/// A CHK verify cap: the storage index in place of the key.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ChkVerifierCap {
    pub storage_index: [u8; 16],
    pub ueb_hash: [u8; 32],
    pub needed: u32,
    pub total: u32,
    pub size: u64,
}

/// A mutable write cap (`URI:SSK:` / `URI:MDMF:`).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct MutableWriteCap {
    pub format: MutableFormat,
    pub writekey: [u8; 16],
    pub fingerprint: [u8; 32],
}

/// A mutable read cap (`URI:SSK-RO:` / `URI:MDMF-RO:`).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct MutableReadCap {
    pub format: MutableFormat,
    pub readkey: [u8; 16],
    pub fingerprint: [u8; 32],
}

/// A mutable verify cap (`URI:SSK-Verifier:` / `URI:MDMF-Verifier:`).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct MutableVerifierCap {
    pub format: MutableFormat,
    pub storage_index: [u8; 16],
    pub fingerprint: [u8; 32],
}

/// The key material of one file, whatever its kind.
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum NodeCap {
    Lit(LitCap),
    Chk(ChkCap),
    ChkVerifier(ChkVerifierCap),
    MutableWrite(MutableWriteCap),
    MutableRead(MutableReadCap),
    MutableVerifier(MutableVerifierCap),
}

/// Any capability string Tahoe 1.20 can hold.
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum Cap {
    /// A file.
    File(NodeCap),
    /// A directory stored in the file `NodeCap` names.
    Dir(NodeCap),
    /// A string Tahoe would parse as `UnknownURI`, kept verbatim so that directories preserve it.
    Unknown(String),
}
