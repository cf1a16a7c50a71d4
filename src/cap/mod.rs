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
//! Parsing (Tahoe's `from_string`, its quirks and the `ro.`/`imm.` prefixes) is in `parse`; see
//! its module doc for the exact grammar.
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

mod parse;
#[cfg(test)]
mod tests;

pub use parse::{parse_bytes, split_alleged_prefix, strip_prefix_for_ro, AllegedPrefix, CapError};

use crate::crypto::hash;
use crate::util::base32;
use std::fmt;

impl MutableFormat {
    fn file_prefix(self) -> &'static str {
        match self {
            MutableFormat::Sdmf => "SSK",
            MutableFormat::Mdmf => "MDMF",
        }
    }

    fn dir_prefix(self) -> &'static str {
        match self {
            MutableFormat::Sdmf => "DIR2",
            MutableFormat::Mdmf => "DIR2-MDMF",
        }
    }
}

impl NodeCap {
    /// The kind as Tahoe names it after `URI:` for a file (`CHK`, `SSK-RO`, …) and for a directory
    /// (`DIR2-CHK`, `DIR2-RO`, …).
    fn kind_names(&self) -> (String, String) {
        let (file, dir, suffix) = match self {
            NodeCap::Lit(_) => ("LIT".to_string(), "DIR2-LIT".to_string(), ""),
            NodeCap::Chk(_) => ("CHK".to_string(), "DIR2-CHK".to_string(), ""),
            NodeCap::ChkVerifier(_) => (
                "CHK-Verifier".to_string(),
                "DIR2-CHK-Verifier".to_string(),
                "",
            ),
            NodeCap::MutableWrite(c) => (
                c.format.file_prefix().to_string(),
                c.format.dir_prefix().to_string(),
                "",
            ),
            NodeCap::MutableRead(c) => (
                c.format.file_prefix().to_string(),
                c.format.dir_prefix().to_string(),
                "-RO",
            ),
            NodeCap::MutableVerifier(c) => (
                c.format.file_prefix().to_string(),
                c.format.dir_prefix().to_string(),
                "-Verifier",
            ),
        };
        (format!("{file}{suffix}"), format!("{dir}{suffix}"))
    }

    /// The text after `URI:KIND:`, shared by a file cap and its directory counterpart.
    fn body(&self) -> String {
        let b = base32::encode;
        match self {
            NodeCap::Lit(c) => b(&c.data),
            NodeCap::Chk(c) => format!(
                "{}:{}:{}:{}:{}",
                b(&c.key),
                b(&c.ueb_hash),
                c.needed,
                c.total,
                c.size
            ),
            NodeCap::ChkVerifier(c) => format!(
                "{}:{}:{}:{}:{}",
                b(&c.storage_index),
                b(&c.ueb_hash),
                c.needed,
                c.total,
                c.size
            ),
            NodeCap::MutableWrite(c) => format!("{}:{}", b(&c.writekey), b(&c.fingerprint)),
            NodeCap::MutableRead(c) => format!("{}:{}", b(&c.readkey), b(&c.fingerprint)),
            NodeCap::MutableVerifier(c) => {
                format!("{}:{}", b(&c.storage_index), b(&c.fingerprint))
            }
        }
    }

    /// The storage index the shares live under; `None` for LIT (no shares).
    pub fn storage_index(&self) -> Option<[u8; 16]> {
        match self {
            NodeCap::Lit(_) => None,
            NodeCap::Chk(c) => Some(hash::storage_index_hash(&c.key)),
            NodeCap::ChkVerifier(c) => Some(c.storage_index),
            NodeCap::MutableWrite(c) => Some(hash::ssk_storage_index_hash(
                &hash::ssk_readkey_hash(&c.writekey),
            )),
            NodeCap::MutableRead(c) => Some(hash::ssk_storage_index_hash(&c.readkey)),
            NodeCap::MutableVerifier(c) => Some(c.storage_index),
        }
    }

    /// The read-only form: itself for read caps, the diminished cap for write caps, `None` for
    /// verify caps (they cannot read).
    pub fn readonly(&self) -> Option<NodeCap> {
        match self {
            NodeCap::Lit(_) | NodeCap::Chk(_) | NodeCap::MutableRead(_) => Some(self.clone()),
            NodeCap::ChkVerifier(_) | NodeCap::MutableVerifier(_) => None,
            NodeCap::MutableWrite(c) => Some(NodeCap::MutableRead(MutableReadCap {
                format: c.format,
                readkey: hash::ssk_readkey_hash(&c.writekey),
                fingerprint: c.fingerprint,
            })),
        }
    }

    /// The verify cap; `None` for LIT (nothing to verify).
    pub fn verifier(&self) -> Option<NodeCap> {
        match self {
            NodeCap::Lit(_) => None,
            NodeCap::Chk(c) => Some(NodeCap::ChkVerifier(ChkVerifierCap {
                storage_index: hash::storage_index_hash(&c.key),
                ueb_hash: c.ueb_hash,
                needed: c.needed,
                total: c.total,
                size: c.size,
            })),
            NodeCap::ChkVerifier(_) | NodeCap::MutableVerifier(_) => Some(self.clone()),
            NodeCap::MutableWrite(_) | NodeCap::MutableRead(_) => {
                let (format, fingerprint) = match self {
                    NodeCap::MutableWrite(c) => (c.format, c.fingerprint),
                    NodeCap::MutableRead(c) => (c.format, c.fingerprint),
                    _ => unreachable!("matched above"),
                };
                Some(NodeCap::MutableVerifier(MutableVerifierCap {
                    format,
                    storage_index: self.storage_index().expect("mutable caps have an index"),
                    fingerprint,
                }))
            }
        }
    }

    pub fn is_mutable(&self) -> bool {
        matches!(
            self,
            NodeCap::MutableWrite(_) | NodeCap::MutableRead(_) | NodeCap::MutableVerifier(_)
        )
    }

    /// True when the cap cannot modify anything (read and verify caps, and all immutable caps).
    pub fn is_readonly(&self) -> bool {
        !matches!(self, NodeCap::MutableWrite(_))
    }

    /// A short name of the kind without any secret, for logs and `Debug`.
    pub fn kind(&self) -> String {
        self.kind_names().0
    }
}

impl fmt::Display for NodeCap {
    /// The cap string. This prints the secret: use it only where the cap is meant to be shown.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "URI:{}:{}", self.kind_names().0, self.body())
    }
}

impl Cap {
    /// The file-level cap, for files and directories alike.
    pub fn node(&self) -> Option<&NodeCap> {
        match self {
            Cap::File(n) | Cap::Dir(n) => Some(n),
            Cap::Unknown(_) => None,
        }
    }

    pub fn is_directory(&self) -> bool {
        matches!(self, Cap::Dir(_))
    }

    pub fn storage_index(&self) -> Option<[u8; 16]> {
        self.node().and_then(NodeCap::storage_index)
    }

    /// The read-only form; `None` for verify caps and unknown caps.
    pub fn readonly(&self) -> Option<Cap> {
        match self {
            Cap::File(n) => n.readonly().map(Cap::File),
            Cap::Dir(n) => n.readonly().map(Cap::Dir),
            Cap::Unknown(_) => None,
        }
    }

    /// The verify cap; `None` for LIT files and directories, and unknown caps.
    pub fn verifier(&self) -> Option<Cap> {
        match self {
            Cap::File(n) => n.verifier().map(Cap::File),
            Cap::Dir(n) => n.verifier().map(Cap::Dir),
            Cap::Unknown(_) => None,
        }
    }
}

impl fmt::Display for Cap {
    /// The cap string. This prints the secret: use it only where the cap is meant to be shown.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cap::File(n) => n.fmt(f),
            Cap::Dir(n) => write!(f, "URI:{}:{}", n.kind_names().1, n.body()),
            Cap::Unknown(s) => f.write_str(s),
        }
    }
}

/// `Debug` never shows key material: the kind and, where there is one, the storage index (which is
/// not a secret: servers see it).
impl fmt::Debug for NodeCap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.storage_index() {
            Some(si) => write!(f, "{}(si={})", self.kind(), base32::encode(&si)),
            None => write!(f, "{}(..)", self.kind()),
        }
    }
}

impl fmt::Debug for Cap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cap::File(n) => write!(f, "File({n:?})"),
            Cap::Dir(n) => write!(f, "Dir({n:?})"),
            Cap::Unknown(_) => f.write_str("Unknown(..)"),
        }
    }
}

macro_rules! redacted_debug {
    ($($t:ty),*) => {$(
        impl fmt::Debug for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(concat!(stringify!($t), "(..)"))
            }
        }
    )*};
}
redacted_debug!(
    LitCap,
    ChkCap,
    ChkVerifierCap,
    MutableWriteCap,
    MutableReadCap,
    MutableVerifierCap
);

#[cfg(test)]
mod display_tests {
    use super::*;

    #[test]
    fn diminish_examples_from_the_digest() {
        // URI:SSK:fs6ul2fju2fvb2cfx7gt6ngycm:hncp... -> RO -> Verifier (checked against Tahoe).
        let fp: [u8; 32] =
            base32::decode_array("hncpinwszbggrurbvuaaexnftk3j5wfr7473pj2g734mo2isxlbq").unwrap();
        let w = NodeCap::MutableWrite(MutableWriteCap {
            format: MutableFormat::Sdmf,
            writekey: base32::decode_array("fs6ul2fju2fvb2cfx7gt6ngycm").unwrap(),
            fingerprint: fp,
        });
        assert_eq!(
            w.readonly().unwrap().to_string(),
            "URI:SSK-RO:65ruo2zytr3uxnaxkptdoqkth4:hncpinwszbggrurbvuaaexnftk3j5wfr7473pj2g734mo2isxlbq"
        );
        assert_eq!(
            w.verifier().unwrap().to_string(),
            "URI:SSK-Verifier:axxzm642zi4vozwfjdijoafbrm:hncpinwszbggrurbvuaaexnftk3j5wfr7473pj2g734mo2isxlbq"
        );
        let d = Cap::Dir(w.clone());
        assert!(d
            .to_string()
            .starts_with("URI:DIR2:fs6ul2fju2fvb2cfx7gt6ngycm:"));
        assert!(d
            .readonly()
            .unwrap()
            .to_string()
            .starts_with("URI:DIR2-RO:65ruo2"));
        assert!(format!("{d:?}").contains("si=axxzm642zi4vozwfjdijoafbrm"));
        assert!(!format!("{d:?}").contains("fs6ul2"));

        let chk = NodeCap::Chk(ChkCap {
            key: base32::decode_array("sahdbyodi7pld462vbem4hpeka").unwrap(),
            ueb_hash: base32::decode_array("k7lfpivabxhzwdflub5lhavihe7uj3rueox3kvigsxfgrviwgyba")
                .unwrap(),
            needed: 3,
            total: 10,
            size: 1000,
        });
        assert_eq!(
            chk.verifier().unwrap().to_string(),
            "URI:CHK-Verifier:kgaknm4msa2gnygslxmer2icwe:k7lfpivabxhzwdflub5lhavihe7uj3rueox3kvigsxfgrviwgyba:3:10:1000"
        );
        assert_eq!(
            Cap::Dir(chk).to_string(),
            "URI:DIR2-CHK:sahdbyodi7pld462vbem4hpeka:k7lfpivabxhzwdflub5lhavihe7uj3rueox3kvigsxfgrviwgyba:3:10:1000"
        );

        let mdmf = NodeCap::MutableWrite(MutableWriteCap {
            format: MutableFormat::Mdmf,
            writekey: [1; 16],
            fingerprint: [2; 32],
        });
        assert_eq!(
            mdmf.to_string(),
            "URI:MDMF:aeaqcaibaeaqcaibaeaqcaibae:aibaeaqcaibaeaqcaibaeaqcaibaeaqcaibaeaqcaibaeaqcaiba"
        );
        assert!(mdmf
            .readonly()
            .unwrap()
            .to_string()
            .starts_with("URI:MDMF-RO:nvgh5vj2ekzzkim5fgtb4gey5y:"));
        assert!(mdmf
            .verifier()
            .unwrap()
            .to_string()
            .starts_with("URI:MDMF-Verifier:nt4fwemuw7flestsezvo2eveke:"));
        let lit = NodeCap::Lit(LitCap { data: vec![] });
        assert_eq!(lit.to_string(), "URI:LIT:");
        assert_eq!(Cap::Dir(lit.clone()).verifier(), None);
    }
}
