//! Parsing cap strings exactly as Tahoe 1.20's `allmydata.uri.from_string` does.
//!
//! Design: one strict core, [`parse_bytes`], returns either a known [`Cap`] or a [`CapError`]
//! saying why Tahoe would have produced an `UnknownURI`. The tolerant [`Cap::parse`] (Tahoe's
//! `from_string`, which never fails) maps every error to [`Cap::Unknown`] holding the original
//! text, so "`parse` gives a known cap" and "the strict parser succeeds" are the same set of
//! inputs by construction.
//!
//! The grammar, field by field, is that of Tahoe's regexes (digest §1.1/§1.2), including quirks:
//! - `URI:KIND:` is matched by exact prefix; kind names contain no `:`, so the kind is the text
//!   between `URI:` and the next `:`. Everything is case-sensitive.
//! - 16-byte fields are exactly 26 and 32-byte fields exactly 52 canonical lowercase base32
//!   characters (zero unused low bits), LIT data is canonical base32 of any length.
//! - Numbers are `[0-9]+` (ASCII only, leading zeros accepted, no sign). Tahoe's Python ints are
//!   unbounded; ours are `u32` (k, N) and `u64` (size), and a value that does not fit is an error
//!   (the one deliberate difference from Tahoe).
//! - End of cap: LIT, CHK and SSK* end with Python's `$`, which matches at the very end **or
//!   before a single trailing `\n`**, so one trailing newline is accepted and dropped. MDMF*
//!   accept `(:|$)` after the fingerprint: anything after a `:` is ignored. CHK-Verifier has no
//!   end anchor: anything after the size digits is ignored.
//! - Directory caps (`DIR2*`) parse their body with the grammar of the file kind they wrap.
//! - A leading `imm.` or `ro.` (only one, `imm.` tested first) is stripped and enforced: under
//!   `ro.` a write cap is refused; under `imm.` (or in a deep-immutable context) write caps and
//!   mutable read caps are refused. Verify caps of mutable files are accepted everywhere, as in
//!   Tahoe. The constraint is checked before the body is parsed, as Tahoe does.
//!
//! Errors never contain the input text: caps are secrets.

use super::{
    Cap, ChkCap, ChkVerifierCap, LitCap, MutableFormat, MutableReadCap, MutableVerifierCap,
    MutableWriteCap, NodeCap,
};
use crate::util::base32;
use std::str::FromStr;
use thiserror::Error;

/// Why a string is not a cap of a known kind. Names the kind and field, never the input text.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum CapError {
    /// Not `URI:<kind>:…` with a kind Tahoe 1.20 knows.
    #[error("not a capability of a known kind (expected URI:<kind>:...)")]
    UnknownKind,
    /// A fixed-length or LIT field is not canonical lowercase base32 of the right length.
    #[error("{kind} cap: the {field} field is not canonical lowercase base32 of the right length")]
    BadBase32 {
        kind: &'static str,
        field: &'static str,
    },
    /// The separator `:` expected after a field is missing.
    #[error("{kind} cap: expected ':' after the {field} field")]
    MissingSeparator {
        kind: &'static str,
        field: &'static str,
    },
    /// A numeric field is empty or not ASCII decimal.
    #[error("{kind} cap: the {field} field is not a decimal number")]
    BadNumber {
        kind: &'static str,
        field: &'static str,
    },
    /// A numeric field is decimal but too large for its type.
    #[error("{kind} cap: the {field} field does not fit in {bits} bits")]
    NumberTooLarge {
        kind: &'static str,
        field: &'static str,
        bits: u32,
    },
    /// Text after the last field where the kind's grammar ends the cap.
    #[error("{kind} cap: unexpected text after the last field")]
    TrailingData { kind: &'static str },
    /// A write cap under the `ro.` prefix.
    #[error("{kind} cap is a write cap but was marked read-only")]
    MustBeReadonly { kind: &'static str },
    /// A write cap or mutable read cap under `imm.` or in a deep-immutable context.
    #[error("{kind} cap is mutable but is used in an immutable context")]
    MustBeDeepImmutable { kind: &'static str },
}

/// The prefixes Tahoe puts in front of a cap to state what it is allowed to be
/// (`ALLEGED_READONLY_PREFIX`, `ALLEGED_IMMUTABLE_PREFIX`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AllegedPrefix {
    /// `ro.`: the cap must not be a write cap.
    ReadOnly,
    /// `imm.`: the cap must be neither a write cap nor a mutable read cap.
    Immutable,
}

impl AllegedPrefix {
    pub const fn as_str(self) -> &'static str {
        match self {
            AllegedPrefix::ReadOnly => "ro.",
            AllegedPrefix::Immutable => "imm.",
        }
    }
}

/// Splits off the alleged prefix the way `from_string` does: `imm.` first, else `ro.`, and only
/// one (`imm.ro.URI:…` leaves `ro.URI:…`, which then is no known cap).
pub fn split_alleged_prefix(s: &[u8]) -> (Option<AllegedPrefix>, &[u8]) {
    if let Some(rest) = s.strip_prefix(b"imm.") {
        (Some(AllegedPrefix::Immutable), rest)
    } else if let Some(rest) = s.strip_prefix(b"ro.") {
        (Some(AllegedPrefix::ReadOnly), rest)
    } else {
        (None, s)
    }
}

/// Tahoe's `unknown.strip_prefix_for_ro`: the form of a cap stored in a dirnode's `ro_uri` slot.
/// `ro.` is always stripped; `imm.` only in a deep-immutable directory (in a mutable one it
/// carries information the context does not imply).
pub fn strip_prefix_for_ro(ro_uri: &[u8], deep_immutable: bool) -> &[u8] {
    match split_alleged_prefix(ro_uri) {
        (Some(AllegedPrefix::Immutable), rest) if deep_immutable => rest,
        (Some(AllegedPrefix::Immutable), _) => ro_uri,
        (Some(AllegedPrefix::ReadOnly), rest) => rest,
        (None, _) => ro_uri,
    }
}

/// The shape of the text after `URI:KIND:`.
#[derive(Clone, Copy)]
enum Body {
    Lit,
    Chk,
    ChkVerifier,
    Write(MutableFormat),
    Read(MutableFormat),
    Verifier(MutableFormat),
}

/// Every kind Tahoe 1.20 parses: name after `URI:`, whether it is a directory, its body.
const KINDS: &[(&str, bool, Body)] = &[
    ("LIT", false, Body::Lit),
    ("CHK", false, Body::Chk),
    ("CHK-Verifier", false, Body::ChkVerifier),
    ("SSK", false, Body::Write(MutableFormat::Sdmf)),
    ("SSK-RO", false, Body::Read(MutableFormat::Sdmf)),
    ("SSK-Verifier", false, Body::Verifier(MutableFormat::Sdmf)),
    ("MDMF", false, Body::Write(MutableFormat::Mdmf)),
    ("MDMF-RO", false, Body::Read(MutableFormat::Mdmf)),
    ("MDMF-Verifier", false, Body::Verifier(MutableFormat::Mdmf)),
    ("DIR2", true, Body::Write(MutableFormat::Sdmf)),
    ("DIR2-RO", true, Body::Read(MutableFormat::Sdmf)),
    ("DIR2-Verifier", true, Body::Verifier(MutableFormat::Sdmf)),
    ("DIR2-CHK", true, Body::Chk),
    ("DIR2-CHK-Verifier", true, Body::ChkVerifier),
    ("DIR2-LIT", true, Body::Lit),
    ("DIR2-MDMF", true, Body::Write(MutableFormat::Mdmf)),
    ("DIR2-MDMF-RO", true, Body::Read(MutableFormat::Mdmf)),
    (
        "DIR2-MDMF-Verifier",
        true,
        Body::Verifier(MutableFormat::Mdmf),
    ),
];

/// Parses a cap given as bytes (as dirnodes store them), with Tahoe's `from_string` semantics:
/// the alleged prefix is stripped and enforced, and `deep_immutable` refuses mutable caps as
/// `imm.` does. Returns the error Tahoe would have recorded in its `UnknownURI` instead of a cap
/// of unknown kind.
pub fn parse_bytes(input: &[u8], deep_immutable: bool) -> Result<Cap, CapError> {
    let (prefix, s) = split_alleged_prefix(input);
    let can_be_mutable = !deep_immutable && prefix != Some(AllegedPrefix::Immutable);
    let can_be_writeable = can_be_mutable && prefix != Some(AllegedPrefix::ReadOnly);

    let rest = s.strip_prefix(b"URI:").ok_or(CapError::UnknownKind)?;
    let colon = rest
        .iter()
        .position(|&c| c == b':')
        .ok_or(CapError::UnknownKind)?;
    let (name, body) = (&rest[..colon], &rest[colon + 1..]);
    let &(kind, is_dir, shape) = KINDS
        .iter()
        .find(|(k, _, _)| k.as_bytes() == name)
        .ok_or(CapError::UnknownKind)?;

    // The constraint comes first, as in Tahoe: a malformed write cap under `ro.` reports the
    // constraint, not the syntax.
    let allowed = match shape {
        Body::Write(_) => can_be_writeable,
        Body::Read(_) => can_be_mutable,
        _ => true,
    };
    if !allowed {
        return Err(if can_be_mutable {
            CapError::MustBeReadonly { kind }
        } else {
            CapError::MustBeDeepImmutable { kind }
        });
    }

    let node = parse_body(kind, shape, body)?;
    Ok(if is_dir {
        Cap::Dir(node)
    } else {
        Cap::File(node)
    })
}

/// Reads the fields of one body shape from `body` (the text after `URI:KIND:`).
fn parse_body(kind: &'static str, shape: Body, body: &[u8]) -> Result<NodeCap, CapError> {
    let mut c = Fields { kind, rest: body };
    Ok(match shape {
        Body::Lit => {
            // The whole body up to the end anchor is the data.
            let text = body.strip_suffix(b"\n").unwrap_or(body);
            let data = std::str::from_utf8(text)
                .ok()
                .and_then(base32::decode)
                .ok_or(CapError::BadBase32 {
                    kind,
                    field: "data",
                })?;
            NodeCap::Lit(LitCap { data })
        }
        Body::Chk | Body::ChkVerifier => {
            let first = if matches!(shape, Body::Chk) {
                "key"
            } else {
                "storage index"
            };
            let key = c.b32::<16>(first)?;
            c.colon(first)?;
            let ueb_hash = c.b32::<32>("UEB hash")?;
            c.colon("UEB hash")?;
            let needed = c.number::<u32>("needed shares", 32)?;
            c.colon("needed shares")?;
            let total = c.number::<u32>("total shares", 32)?;
            c.colon("total shares")?;
            let size = c.number::<u64>("size", 64)?;
            if matches!(shape, Body::Chk) {
                // CHK ends with `$`; CHK-Verifier has no end anchor (anything may follow).
                c.end()?;
                NodeCap::Chk(ChkCap {
                    key,
                    ueb_hash,
                    needed,
                    total,
                    size,
                })
            } else {
                NodeCap::ChkVerifier(ChkVerifierCap {
                    storage_index: key,
                    ueb_hash,
                    needed,
                    total,
                    size,
                })
            }
        }
        Body::Write(format) | Body::Read(format) | Body::Verifier(format) => {
            let first = match shape {
                Body::Write(_) => "write key",
                Body::Read(_) => "read key",
                _ => "storage index",
            };
            let key = c.b32::<16>(first)?;
            c.colon(first)?;
            let fingerprint = c.b32::<32>("fingerprint")?;
            match format {
                MutableFormat::Sdmf => c.end()?,
                // `(:|$)`: whatever follows a colon is ignored (pre-1.9 extension hints).
                MutableFormat::Mdmf => {
                    if !c.rest.starts_with(b":") {
                        c.end()?;
                    }
                }
            }
            match shape {
                Body::Write(_) => NodeCap::MutableWrite(MutableWriteCap {
                    format,
                    writekey: key,
                    fingerprint,
                }),
                Body::Read(_) => NodeCap::MutableRead(MutableReadCap {
                    format,
                    readkey: key,
                    fingerprint,
                }),
                _ => NodeCap::MutableVerifier(MutableVerifierCap {
                    format,
                    storage_index: key,
                    fingerprint,
                }),
            }
        }
    })
}

/// A cursor over the fields of one body; every read is bounds-checked.
struct Fields<'a> {
    kind: &'static str,
    rest: &'a [u8],
}

impl Fields<'_> {
    /// Exactly `base32::encoded_len(N)` canonical characters.
    fn b32<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], CapError> {
        let len = base32::encoded_len(N);
        let bad = CapError::BadBase32 {
            kind: self.kind,
            field,
        };
        let text = self.rest.get(..len).ok_or(bad.clone())?;
        let value = std::str::from_utf8(text)
            .ok()
            .and_then(base32::decode_array::<N>)
            .ok_or(bad)?;
        self.rest = &self.rest[len..];
        Ok(value)
    }

    fn colon(&mut self, after: &'static str) -> Result<(), CapError> {
        self.rest = self
            .rest
            .strip_prefix(b":")
            .ok_or(CapError::MissingSeparator {
                kind: self.kind,
                field: after,
            })?;
        Ok(())
    }

    /// `[0-9]+`, greedy (as the regex is): the longest run of ASCII digits.
    fn number<T: FromStr>(&mut self, field: &'static str, bits: u32) -> Result<T, CapError> {
        let digits = self
            .rest
            .iter()
            .position(|c| !c.is_ascii_digit())
            .unwrap_or(self.rest.len());
        if digits == 0 {
            return Err(CapError::BadNumber {
                kind: self.kind,
                field,
            });
        }
        let (text, rest) = self.rest.split_at(digits);
        // Only ASCII digits here, so the one way `parse` can fail is overflow (Rust's integer
        // parser would also take a leading `+`, which the digit scan has excluded).
        let value = std::str::from_utf8(text)
            .ok()
            .and_then(|t| t.parse::<T>().ok())
            .ok_or(CapError::NumberTooLarge {
                kind: self.kind,
                field,
                bits,
            })?;
        self.rest = rest;
        Ok(value)
    }

    /// Python's `$` without MULTILINE: the end, or a single `\n` that ends the string.
    fn end(&self) -> Result<(), CapError> {
        if self.rest.is_empty() || self.rest == b"\n" {
            Ok(())
        } else {
            Err(CapError::TrailingData { kind: self.kind })
        }
    }
}

impl Cap {
    /// Tahoe's `from_string(s)`: never fails; whatever Tahoe would hold as an `UnknownURI`
    /// becomes [`Cap::Unknown`] with the original text (alleged prefix included).
    pub fn parse(s: &str) -> Cap {
        Cap::parse_in(s, false)
    }

    /// Tahoe's `from_string(s, deep_immutable)`: in a deep-immutable context (the children of an
    /// immutable directory) write caps and mutable read caps become [`Cap::Unknown`].
    pub fn parse_in(s: &str, deep_immutable: bool) -> Cap {
        parse_bytes(s.as_bytes(), deep_immutable).unwrap_or_else(|_| Cap::Unknown(s.to_owned()))
    }

    /// The strict parser for user input: the same accepted set as [`Cap::parse`] (prefixes
    /// included), with an error saying what is wrong instead of [`Cap::Unknown`].
    pub fn parse_strict(s: &str) -> Result<Cap, CapError> {
        parse_bytes(s.as_bytes(), false)
    }
}

impl FromStr for Cap {
    type Err = CapError;

    /// Same as [`Cap::parse_strict`].
    fn from_str(s: &str) -> Result<Cap, CapError> {
        Cap::parse_strict(s)
    }
}
