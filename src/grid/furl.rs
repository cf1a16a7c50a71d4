//! Foolscap fURLs and GBS NURLs (digest §6.1, §8).
//!
//! - fURL: `pb://TUBID@HINT,HINT,.../SWISSNUM`. The TubID is 20 bytes of base32 (32 chars);
//!   Tahoe lowercases it before decoding, so uppercase is accepted and printed back lowercase.
//!   Hints are kept verbatim (so printing round-trips); [`Hint::endpoint`] reads the usual forms
//!   `tcp:HOST:PORT`, `tor:HOST:PORT` and legacy `HOST:PORT`, with IPv6 hosts in brackets.
//! - NURL: `pb://PIN@HOST:PORT/SWISSNUM#v=1` or `pb+tor://...`; the pin is the unpadded urlsafe
//!   base64 (43 chars, canonical) of SHA-256 of the server's SPKI DER; the fragment must be `v=1`.
//!   lafs requires exactly one path segment (Python takes the first and ignores the rest).
//!
//! The swissnum is a bearer secret: `Debug` never prints it and errors never contain input text.

use base64::Engine;
use std::fmt;

/// Errors of fURL/NURL parsing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error("not a pb:// URL")]
    Scheme,
    #[error("missing '@'")]
    NoAt,
    #[error("bad TubID (need 32 base32 characters)")]
    TubId,
    #[error("bad location hint")]
    Hint,
    #[error("missing or bad swissnum")]
    Swissnum,
    #[error("bad SPKI pin (need 43 canonical urlsafe base64 characters)")]
    Pin,
    #[error("bad host or port")]
    HostPort,
    #[error("NURL fragment must be v=1")]
    Fragment,
}

fn swissnum_ok(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_graphic() && !matches!(c, '/' | '#' | '?' | '@'))
}

/// One connection hint of a fURL, verbatim.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Hint(String);

/// The kind of endpoint a hint names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HintKind {
    Tcp,
    Tor,
}

impl Hint {
    /// The hint text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `(kind, host, port)` for `tcp:`, `tor:` and legacy `host:port` hints (IPv6 unbracketed).
    pub fn endpoint(&self) -> Option<(HintKind, &str, u16)> {
        let (kind, rest) = if let Some(r) = self.0.strip_prefix("tcp:") {
            (HintKind::Tcp, r)
        } else if let Some(r) = self.0.strip_prefix("tor:") {
            (HintKind::Tor, r)
        } else {
            (HintKind::Tcp, self.0.as_str())
        };
        let (host, port) = split_host_port(rest)?;
        Some((kind, host, port))
    }
}

/// `host:port` or `[v6]:port`; the host is returned without brackets.
fn split_host_port(s: &str) -> Option<(&str, u16)> {
    let (host, port) = if let Some(r) = s.strip_prefix('[') {
        let (h, after) = r.split_once(']')?;
        if !h.contains(':') {
            return None;
        }
        (h, after.strip_prefix(':')?)
    } else {
        let (h, p) = s.rsplit_once(':')?;
        if h.contains(':') {
            return None;
        }
        (h, p)
    };
    let host_ok = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':' | '%'));
    if !host_ok || port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((host, port.parse().ok()?))
}

/// A Foolscap fURL.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Furl {
    tubid: [u8; 20],
    hints: Vec<Hint>,
    swissnum: String,
}

impl Furl {
    /// Parses a fURL.
    pub fn parse(s: &str) -> Result<Furl, UrlError> {
        let rest = s.strip_prefix("pb://").ok_or(UrlError::Scheme)?;
        let (tub, rest) = rest.split_once('@').ok_or(UrlError::NoAt)?;
        let tubid = tubid_from_text(tub).ok_or(UrlError::TubId)?;
        let (hints, swissnum) = rest.split_once('/').ok_or(UrlError::Swissnum)?;
        if !swissnum_ok(swissnum) {
            return Err(UrlError::Swissnum);
        }
        let hints = if hints.is_empty() {
            Vec::new()
        } else {
            hints
                .split(',')
                .map(|h| {
                    let ok = !h.is_empty() && h.chars().all(|c| c.is_ascii_graphic() && c != '@');
                    ok.then(|| Hint(h.to_string())).ok_or(UrlError::Hint)
                })
                .collect::<Result<_, _>>()?
        };
        Ok(Furl {
            tubid,
            hints,
            swissnum: swissnum.to_string(),
        })
    }

    /// The 20-byte TubID: the lease seed and write-enabler node id.
    pub fn tubid(&self) -> [u8; 20] {
        self.tubid
    }

    pub fn hints(&self) -> &[Hint] {
        &self.hints
    }

    /// The swissnum (a secret).
    pub fn swissnum(&self) -> &str {
        &self.swissnum
    }
}

/// `base32.a2b(m.group(1).lower())` for exactly 20 bytes.
fn tubid_from_text(tub: &str) -> Option<[u8; 20]> {
    if !tub.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return None;
    }
    crate::util::base32::decode_array::<20>(&tub.to_ascii_lowercase())
}

/// Tahoe's lease-seed rule: the TubID from `^pb://(\w+)@` of an announcement's FURL, even when
/// the rest of the FURL would not parse.
pub fn tubid_from_furl(furl: &str) -> Option<[u8; 20]> {
    let rest = furl.strip_prefix("pb://")?;
    let end = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))?;
    if end == 0 || !rest[end..].starts_with('@') {
        return None;
    }
    tubid_from_text(&rest[..end])
}

impl fmt::Display for Furl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pb://{}@", crate::util::base32::encode(&self.tubid))?;
        for (i, h) in self.hints.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            f.write_str(&h.0)?;
        }
        write!(f, "/{}", self.swissnum)
    }
}

impl fmt::Debug for Furl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Furl")
            .field("tubid", &crate::util::base32::encode(&self.tubid))
            .field("hints", &self.hints)
            .field("swissnum", &"<secret>")
            .finish()
    }
}

/// A NURL's scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NurlScheme {
    /// `pb://`: direct TCP.
    Pb,
    /// `pb+tor://`: through Tor.
    PbTor,
}

/// A GBS storage NURL.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Nurl {
    scheme: NurlScheme,
    pin: [u8; 32],
    host: String,
    port: u16,
    swissnum: String,
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
}

impl Nurl {
    /// Parses a NURL.
    pub fn parse(s: &str) -> Result<Nurl, UrlError> {
        let (scheme, rest) = if let Some(r) = s.strip_prefix("pb://") {
            (NurlScheme::Pb, r)
        } else if let Some(r) = s.strip_prefix("pb+tor://") {
            (NurlScheme::PbTor, r)
        } else {
            return Err(UrlError::Scheme);
        };
        let (rest, fragment) = rest.split_once('#').ok_or(UrlError::Fragment)?;
        if fragment != "v=1" {
            return Err(UrlError::Fragment);
        }
        let (pin, rest) = rest.split_once('@').ok_or(UrlError::NoAt)?;
        if pin.len() != 43 {
            return Err(UrlError::Pin);
        }
        let pin: [u8; 32] = b64()
            .decode(pin)
            .ok()
            .and_then(|v| v.try_into().ok())
            .ok_or(UrlError::Pin)?;
        let (hostport, swissnum) = rest.split_once('/').ok_or(UrlError::Swissnum)?;
        if !swissnum_ok(swissnum) {
            return Err(UrlError::Swissnum);
        }
        let (host, port) = split_host_port(hostport).ok_or(UrlError::HostPort)?;
        // A bracketed host must be IPv6 and an IPv6 host must be bracketed (checked by the split).
        Ok(Nurl {
            scheme,
            pin,
            host: host.to_string(),
            port,
            swissnum: swissnum.to_string(),
        })
    }

    pub fn scheme(&self) -> NurlScheme {
        self.scheme
    }

    /// SHA-256 of the server's SPKI DER.
    pub fn spki_hash(&self) -> [u8; 32] {
        self.pin
    }

    /// The host, without IPv6 brackets.
    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The swissnum (a secret; sent in `Authorization: Tahoe-LAFS <b64(swissnum)>`).
    pub fn swissnum(&self) -> &str {
        &self.swissnum
    }

    fn host_for_url(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        }
    }

    /// The HTTPS base URL, `https://host:port`.
    pub fn base_url(&self) -> String {
        format!("https://{}:{}", self.host_for_url(), self.port)
    }
}

impl fmt::Display for Nurl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = match self.scheme {
            NurlScheme::Pb => "pb",
            NurlScheme::PbTor => "pb+tor",
        };
        write!(
            f,
            "{scheme}://{}@{}:{}/{}#v=1",
            b64().encode(self.pin),
            self.host_for_url(),
            self.port,
            self.swissnum
        )
    }
}

impl fmt::Debug for Nurl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Nurl")
            .field("scheme", &self.scheme)
            .field("pin", &b64().encode(self.pin))
            .field("host", &self.host)
            .field("port", &self.port)
            .field("swissnum", &"<secret>")
            .finish()
    }
}
