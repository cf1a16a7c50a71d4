//! A minimal NURL parser for the storage client: `pb://<pin>@<host>:<port>/<swissnum>#v=1`.
//!
//! Kept private and small; the grid layer owns the general NURL handling. Invariants: the
//! fragment is exactly `v=1`; the scheme is `pb` (`pb+tor` parses but is flagged, since this
//! client only dials TCP); the pin is a canonical 43-character SPKI pin; IPv6 hosts are
//! bracketed; the swissnum is non-empty ASCII without `/`. The swissnum is a secret: `Debug`
//! and errors never show it.

use super::tls::SpkiPin;

/// Why a NURL was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NurlError {
    /// The text does not have the NURL shape.
    #[error("malformed NURL: {0}")]
    Malformed(&'static str),
}

/// A parsed HTTPS storage NURL.
#[derive(Clone, PartialEq, Eq)]
pub struct Nurl {
    /// The server's SPKI pin.
    pub pin: SpkiPin,
    /// Host name or IP address (without brackets).
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// The swissnum (secret).
    pub swissnum: String,
    /// `pb+tor` scheme.
    pub tor: bool,
}

impl std::fmt::Debug for Nurl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Nurl")
            .field("pin", &self.pin)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tor", &self.tor)
            .finish_non_exhaustive()
    }
}

impl Nurl {
    /// Parses a NURL.
    pub fn parse(text: &str) -> Result<Self, NurlError> {
        let bad = NurlError::Malformed;
        let (scheme, rest) = text.split_once("://").ok_or(bad("no scheme"))?;
        let tor = match scheme {
            "pb" => false,
            "pb+tor" => true,
            _ => return Err(bad("scheme is not pb or pb+tor")),
        };
        let (rest, fragment) = rest.split_once('#').ok_or(bad("no #v=1 fragment"))?;
        if fragment != "v=1" {
            return Err(bad("fragment is not v=1"));
        }
        let (pin, rest) = rest.split_once('@').ok_or(bad("no pin"))?;
        let pin = SpkiPin::parse(pin).map_err(|_| bad("bad pin"))?;
        let (hostport, swissnum) = rest.split_once('/').ok_or(bad("no swissnum"))?;
        if swissnum.is_empty()
            || !swissnum
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.~".contains(&b))
        {
            return Err(bad("bad swissnum"));
        }
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let (host, port) = v6.split_once("]:").ok_or(bad("bad IPv6 host"))?;
            host.parse::<std::net::Ipv6Addr>()
                .map_err(|_| bad("bad IPv6 host"))?;
            (host, port)
        } else {
            hostport.rsplit_once(':').ok_or(bad("no port"))?
        };
        if host.is_empty()
            || host.contains(['/', '@', '[', ']', ' '])
            || (!hostport.starts_with('[') && host.contains(':'))
        {
            return Err(bad("bad host"));
        }
        if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad("bad port"));
        }
        let port: u16 = port.parse().map_err(|_| bad("bad port"))?;
        Ok(Nurl {
            pin,
            host: host.to_string(),
            port,
            swissnum: swissnum.to_string(),
            tor,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_example() {
        // The example NURL of digest §6.1.
        let n = Nurl::parse(
            "pb://JIj6ezHkdSBlHhrnezAgIC_mrVQHy4KAFyL-8ZNPGPM@example.com:443/eiu2i7p6d6mm4ihmss7ieou5hac3wn6b#v=1",
        )
        .unwrap();
        assert_eq!(n.host, "example.com");
        assert_eq!(n.port, 443);
        assert_eq!(n.swissnum, "eiu2i7p6d6mm4ihmss7ieou5hac3wn6b");
        assert_eq!(
            n.pin.to_string(),
            "JIj6ezHkdSBlHhrnezAgIC_mrVQHy4KAFyL-8ZNPGPM"
        );
        assert!(!n.tor);
        assert!(!format!("{n:?}").contains("eiu2i7p6"));
    }

    #[test]
    fn ipv6_and_rejects() {
        let pin = "JIj6ezHkdSBlHhrnezAgIC_mrVQHy4KAFyL-8ZNPGPM";
        let n = Nurl::parse(&format!("pb://{pin}@[::1]:8080/abc#v=1")).unwrap();
        assert_eq!(n.host, "::1");
        assert_eq!(n.port, 8080);
        for bad in [
            format!("pb://{pin}@h:1/abc"),
            format!("pb://{pin}@h:1/abc#v=2"),
            format!("http://{pin}@h:1/abc#v=1"),
            format!("pb://{pin}@h/abc#v=1"),
            format!("pb://{pin}@h:99999/abc#v=1"),
            format!("pb://{pin}@h:1/#v=1"),
            format!("pb://{pin}x@h:1/abc#v=1"),
            format!("pb://{pin}@::1:1/abc#v=1"),
            "pb://tubid@tcp:h:1/abc".to_string(),
        ] {
            assert!(Nurl::parse(&bad).is_err(), "{bad}");
        }
    }
}
