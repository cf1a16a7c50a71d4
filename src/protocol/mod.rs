//! The HTTPS storage protocol of Tahoe-LAFS 1.20 ("Great Black Swamp", digest §6).
//!
//! Layout:
//! - [`tls`]: SPKI pins, the pinning rustls verifier, node identities (`node.pem`, TubID);
//! - [`messages`]: the CBOR bodies with strict schema checks;
//! - [`client`]: an async client for one storage server, addressed by its NURL, dialled over
//!   TCP or (cargo feature `tor`) through the in-process arti client of `tor`;
//! - [`server`]: an HTTP/1.1-over-TLS server over a [`server::StorageBackend`], with an
//!   in-memory backend for tests.
//!
//! Invariants shared by both sides:
//! - the swissnum and every `X-Tahoe-Authorization` secret are secrets: they are never part of
//!   an error message or `Debug` output;
//! - paths name storage indexes in lowercase canonical base32 (26 characters) and share numbers
//!   in decimal;
//! - one `X-Tahoe-Authorization` header line per secret.

pub mod client;
pub mod memory;
pub mod messages;
mod nurl;
pub mod server;
pub mod tls;
#[cfg(feature = "tor")]
pub mod tor;

use base64::Engine as _;

pub use nurl::{Nurl, NurlError};

/// A 16-byte storage index.
pub type StorageIndex = [u8; 16];

/// The storage index as it appears in paths: 26 lowercase base32 characters.
pub fn si_to_path(si: &StorageIndex) -> String {
    crate::util::base32::encode(si)
}

/// Parses a path storage index (canonical lowercase base32, exactly 26 characters).
pub fn si_from_path(text: &str) -> Option<StorageIndex> {
    crate::util::base32::decode_array::<16>(text)
}

/// The names of the `X-Tahoe-Authorization` secrets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SecretKind {
    /// `lease-renew-secret` (32 bytes).
    LeaseRenew,
    /// `lease-cancel-secret` (32 bytes).
    LeaseCancel,
    /// `upload-secret` (non-empty).
    Upload,
    /// `write-enabler` (non-empty).
    WriteEnabler,
}

impl SecretKind {
    /// The header name of the secret.
    pub fn name(self) -> &'static str {
        match self {
            SecretKind::LeaseRenew => "lease-renew-secret",
            SecretKind::LeaseCancel => "lease-cancel-secret",
            SecretKind::Upload => "upload-secret",
            SecretKind::WriteEnabler => "write-enabler",
        }
    }

    /// Parses a header name.
    pub fn from_name(name: &str) -> Option<Self> {
        [
            SecretKind::LeaseRenew,
            SecretKind::LeaseCancel,
            SecretKind::Upload,
            SecretKind::WriteEnabler,
        ]
        .into_iter()
        .find(|k| k.name() == name)
    }
}

/// The lease secrets of one (file, server) pair.
#[derive(Clone, PartialEq, Eq)]
pub struct LeaseSecrets {
    /// Renew secret.
    pub renew: [u8; 32],
    /// Cancel secret.
    pub cancel: [u8; 32],
}

impl std::fmt::Debug for LeaseSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LeaseSecrets(..)")
    }
}

/// The `Authorization` header value for a swissnum: `Tahoe-LAFS <b64(swissnum)>`.
pub fn authorization_value(swissnum: &[u8]) -> String {
    format!(
        "Tahoe-LAFS {}",
        base64::engine::general_purpose::STANDARD.encode(swissnum)
    )
}

/// One `X-Tahoe-Authorization` header value: `<name> <b64(secret)>`.
pub fn secret_header_value(kind: SecretKind, secret: &[u8]) -> String {
    format!(
        "{} {}",
        kind.name(),
        base64::engine::general_purpose::STANDARD.encode(secret)
    )
}

/// Header names used by the protocol.
pub mod headers {
    /// Per-secret authorization header.
    pub const X_TAHOE_AUTHORIZATION: &str = "x-tahoe-authorization";
}
