//! The directory body: packing and unpacking Tahoe's child list.
//!
//! Body = concatenation, sorted by NFC name (code-point order = UTF-8 byte order), of
//! `ns(ns(name) ‖ ns(ro_uri) ‖ ns(rwcapdata) ‖ ns(metadata_json))`.
//!
//! Invariants:
//! - names are stored in NFC; lookups normalise the query the same way;
//! - a child's write cap is present in a [`Child`] only when the directory was read with its
//!   writekey: a read-only view never decrypts (so never exposes) `rwcapdata`;
//! - an entry that has not been modified since it was unpacked is re-emitted verbatim (as Tahoe's
//!   `AuxValueDict` does), so data this module does not model (unusual JSON, non-deterministic
//!   salts from other writers, non-NFC names) survives a rewrite byte for byte. Any change through
//!   the API drops that cached text and the entry is packed afresh;
//! - caps are opaque byte strings here (validated by the cap layer); unknown caps are kept
//!   verbatim. `Debug` never prints them.
//!
//! Deviation from Tahoe: children whose caps violate constraints (e.g. a mutable cap in an
//! immutable directory) are skipped by Tahoe's reader, which needs cap parsing; this layer keeps
//! them and leaves that check to the caller.

use super::metadata::Metadata;
use super::DirnodeError;
use crate::crypto::aes::ctr_in_place;
use crate::crypto::hash::{mutable_rwcap_key_hash, mutable_rwcap_salt_hash, tahoe_hmac};
use crate::util::netstring;
use std::collections::BTreeMap;
use std::fmt;
use unicode_normalization::UnicodeNormalization;

/// Tahoe's name normalisation (`unicodedata.normalize('NFC', name)`).
pub fn normalize(name: &str) -> String {
    name.nfc().collect()
}

/// One child link: its caps (opaque bytes, `None` when absent) and metadata.
#[derive(Clone, PartialEq)]
pub struct Child {
    rw_uri: Option<Vec<u8>>,
    ro_uri: Option<Vec<u8>>,
    pub metadata: Metadata,
}

fn non_empty(v: Option<Vec<u8>>) -> Option<Vec<u8>> {
    v.filter(|v| !v.is_empty())
}

impl Child {
    /// A child with the given caps; an empty cap counts as absent.
    pub fn new(rw_uri: Option<Vec<u8>>, ro_uri: Option<Vec<u8>>, metadata: Metadata) -> Self {
        Child {
            rw_uri: non_empty(rw_uri),
            ro_uri: non_empty(ro_uri),
            metadata,
        }
    }

    /// The write cap, when the child has one and the directory was read with its writekey.
    pub fn rw_uri(&self) -> Option<&[u8]> {
        self.rw_uri.as_deref()
    }

    /// The read-only slot as stored (an unknown cap here has its `ro.` prefix stripped; an
    /// `imm.` prefix is kept in mutable directories).
    pub fn ro_uri(&self) -> Option<&[u8]> {
        self.ro_uri.as_deref()
    }

    /// This child as a read-only view shows it: without the write cap.
    pub fn without_write_cap(&self) -> Child {
        Child {
            rw_uri: None,
            ro_uri: self.ro_uri.clone(),
            metadata: self.metadata.clone(),
        }
    }
}

impl fmt::Debug for Child {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Caps are secrets: show only whether they are present.
        f.debug_struct("Child")
            .field("has_rw_uri", &self.rw_uri.is_some())
            .field("has_ro_uri", &self.ro_uri.is_some())
            .field("metadata", &self.metadata)
            .finish()
    }
}

/// What kind of directory a body belongs to; decides how `rwcapdata` is written and read.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum DirKind {
    /// A mutable directory (SSK/MDMF), writeable when the writekey is known.
    Mutable { writekey: Option<[u8; 16]> },
    /// An immutable directory (CHK/LIT): `rwcapdata` is always empty.
    Immutable,
}

impl DirKind {
    pub fn is_mutable(&self) -> bool {
        matches!(self, DirKind::Mutable { .. })
    }

    pub fn writekey(&self) -> Option<&[u8; 16]> {
        match self {
            DirKind::Mutable { writekey } => writekey.as_ref(),
            DirKind::Immutable => None,
        }
    }
}

impl fmt::Debug for DirKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DirKind::Mutable { writekey } => f
                .debug_struct("Mutable")
                .field("writeable", &writekey.is_some())
                .finish(),
            DirKind::Immutable => f.write_str("Immutable"),
        }
    }
}

/// `salt ‖ AES-CTR(key, rw_uri) ‖ tahoe_hmac(key, salt ‖ ct)` with the deterministic salt.
pub fn encrypt_rw_uri(writekey: &[u8; 16], rw_uri: &[u8]) -> Vec<u8> {
    let salt = mutable_rwcap_salt_hash(rw_uri);
    let key = mutable_rwcap_key_hash(&salt, writekey);
    let mut out = Vec::with_capacity(16 + rw_uri.len() + 32);
    out.extend_from_slice(&salt);
    out.extend_from_slice(rw_uri);
    ctr_in_place(&key, &mut out[16..]);
    let mac = tahoe_hmac(&key, &out);
    out.extend_from_slice(&mac);
    out
}

/// Decrypts `rwcapdata` as Tahoe does: salt = first 16 bytes, ciphertext = `[16:-32]` with
/// Python slice semantics (empty when the field is shorter than 48 bytes). The MAC is not checked
/// (Tahoe ≥ 1.3 ignores it).
pub fn decrypt_rw_uri(writekey: &[u8; 16], rwcapdata: &[u8]) -> Vec<u8> {
    let salt = rwcapdata.get(..16).unwrap_or(rwcapdata);
    let end = rwcapdata.len().saturating_sub(32);
    let mut ct = rwcapdata.get(16..end).unwrap_or(&[]).to_vec();
    let key = mutable_rwcap_key_hash(salt, writekey);
    ctr_in_place(&key, &mut ct);
    ct
}

/// Tahoe's `strip_prefix_for_ro`: `ro.` is always implied by the slot; `imm.` only in an
/// immutable directory.
pub fn strip_prefix_for_ro(ro_uri: &[u8], deep_immutable: bool) -> &[u8] {
    if let Some(rest) = ro_uri.strip_prefix(b"imm.") {
        if deep_immutable {
            rest
        } else {
            ro_uri
        }
    } else if let Some(rest) = ro_uri.strip_prefix(b"ro.") {
        rest
    } else {
        ro_uri
    }
}

/// Packs one entry's inner bytes (`ns(name) ‖ ns(ro) ‖ ns(rwcapdata) ‖ ns(metadata)`).
fn pack_entry(name: &str, child: &Child, kind: &DirKind) -> Result<Vec<u8>, DirnodeError> {
    let deep_immutable = !kind.is_mutable();
    if deep_immutable && child.rw_uri.is_some() {
        return Err(DirnodeError::MustBeDeepImmutable(name.to_string()));
    }
    let ro = strip_prefix_for_ro(child.ro_uri().unwrap_or(b""), deep_immutable);
    let rwcapdata = match kind.writekey() {
        Some(wk) => encrypt_rw_uri(wk, child.rw_uri().unwrap_or(b"")),
        None => Vec::new(),
    };
    let md = child.metadata.to_json();
    let mut e = Vec::with_capacity(name.len() + ro.len() + rwcapdata.len() + md.len() + 24);
    netstring::write(&mut e, name.as_bytes());
    netstring::write(&mut e, ro);
    netstring::write(&mut e, &rwcapdata);
    netstring::write(&mut e, md.as_bytes());
    Ok(e)
}

/// Tahoe's `pack_children(children, writekey, deep_immutable)`: names are NFC-normalised (a later
/// duplicate wins), entries sorted, metadata stored verbatim (no timestamp update). With
/// `writekey = None` the `rwcapdata` fields are empty, and with `deep_immutable` a child carrying
/// a write cap is an error.
pub fn pack_children<'a, I>(
    children: I,
    writekey: Option<&[u8; 16]>,
    deep_immutable: bool,
) -> Result<Vec<u8>, DirnodeError>
where
    I: IntoIterator<Item = (&'a str, &'a Child)>,
{
    let kind = if deep_immutable {
        DirKind::Immutable
    } else {
        DirKind::Mutable {
            writekey: writekey.copied(),
        }
    };
    let sorted: BTreeMap<String, &Child> = children
        .into_iter()
        .map(|(n, c)| (normalize(n), c))
        .collect();
    let mut out = Vec::new();
    for (name, child) in &sorted {
        netstring::write(&mut out, &pack_entry(name, child, &kind)?);
    }
    Ok(out)
}

#[derive(Clone)]
struct Entry {
    child: Child,
    /// The entry's inner bytes as read, while the entry is unchanged since unpacking.
    packed: Option<Vec<u8>>,
}

/// A parsed directory body: children by NFC name, in packing order.
#[derive(Clone)]
pub struct Directory {
    kind: DirKind,
    entries: BTreeMap<String, Entry>,
}

impl fmt::Debug for Directory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Directory")
            .field("kind", &self.kind)
            .field("children", &self.entries.len())
            .finish()
    }
}

impl Directory {
    /// An empty directory (its body is the empty string).
    pub fn new(kind: DirKind) -> Self {
        Directory {
            kind,
            entries: BTreeMap::new(),
        }
    }

    pub fn kind(&self) -> DirKind {
        self.kind
    }

    /// Parses a body as Tahoe's `_unpack_contents` does. Names are NFC-normalised (a later entry
    /// with the same normalised name replaces an earlier one), caps are `rstrip(b" ")`ed and an
    /// empty cap is absent, the write cap is decrypted only with the writekey, and the metadata
    /// must be a JSON object. Any malformed entry fails the whole body, as in Tahoe.
    pub fn unpack(kind: DirKind, data: &[u8]) -> Result<Self, DirnodeError> {
        let mut dir = Directory::new(kind);
        let mut rest = data;
        while !rest.is_empty() {
            let (entry, r) = netstring::parse(rest).map_err(DirnodeError::Framing)?;
            rest = r;
            let fields = netstring::split(entry, 4).map_err(DirnodeError::Framing)?;
            let (name_b, ro, rwcapdata, md) = match fields.as_slice() {
                [a, b, c, d] => (*a, *b, *c, *d),
                _ => return Err(DirnodeError::Framing(netstring::NetstringError::NoComma)),
            };
            if !kind.is_mutable() && !rwcapdata.is_empty() {
                return Err(DirnodeError::RwcapInImmutable);
            }
            let name = std::str::from_utf8(name_b).map_err(|_| DirnodeError::NameNotUtf8)?;
            let name = normalize(name);
            let rw = kind
                .writekey()
                .map(|wk| rstrip_spaces(decrypt_rw_uri(wk, rwcapdata)));
            let ro = rstrip_spaces(ro.to_vec());
            let metadata = Metadata::from_json(md)?;
            // A read-only view of a mutable directory keeps no copy of the entry bytes: it can
            // never be re-packed, and the cache would be the only place its encrypted write cap
            // lingers.
            let packed = (kind.writekey().is_some() || !kind.is_mutable()).then(|| entry.to_vec());
            dir.entries.insert(
                name,
                Entry {
                    child: Child::new(rw, Some(ro), metadata),
                    packed,
                },
            );
        }
        Ok(dir)
    }

    /// Packs this directory. Unchanged entries are emitted as read; changed ones are encrypted
    /// under the writekey. A mutable directory read without its writekey cannot be packed.
    pub fn pack(&self) -> Result<Vec<u8>, DirnodeError> {
        if self.kind.is_mutable() && self.kind.writekey().is_none() {
            return Err(DirnodeError::NotWriteable);
        }
        let mut out = Vec::new();
        for (name, e) in &self.entries {
            match &e.packed {
                Some(raw) => netstring::write(&mut out, raw),
                None => netstring::write(&mut out, &pack_entry(name, &e.child, &self.kind)?),
            }
        }
        Ok(out)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The child named `name` (normalised before lookup).
    pub fn get(&self, name: &str) -> Option<&Child> {
        self.entries.get(&normalize(name)).map(|e| &e.child)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.entries.contains_key(&normalize(name))
    }

    /// Children in packing order (sorted NFC names).
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Child)> {
        self.entries.iter().map(|(n, e)| (n.as_str(), &e.child))
    }

    /// Stores `child` under `name` exactly as given (no metadata update), replacing any old one.
    pub fn insert(&mut self, name: &str, child: Child) -> Option<Child> {
        self.entries
            .insert(
                normalize(name),
                Entry {
                    child,
                    packed: None,
                },
            )
            .map(|e| e.child)
    }

    /// Removes and returns the child named `name`.
    pub fn remove(&mut self, name: &str) -> Option<Child> {
        self.entries.remove(&normalize(name)).map(|e| e.child)
    }
}

fn rstrip_spaces(mut v: Vec<u8>) -> Vec<u8> {
    while v.last() == Some(&b' ') {
        v.pop();
    }
    v
}
