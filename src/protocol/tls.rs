//! TLS for the HTTPS storage protocol: SPKI pins, the pinning client verifier, and node
//! identities (`private/node.pem`).
//!
//! Design (digest §6.1, §10 items 20 and 26):
//! - A server is identified by its **pin**: urlsafe base64, without `=`, of SHA-256 of the DER
//!   `SubjectPublicKeyInfo` of its certificate. Names, dates, issuers and chains are irrelevant.
//! - Tahoe (Foolscap) certificates are X.509 **v1** self-signed RSA-2048 certs that are usually
//!   expired. webpki rejects v1 certs, so the client verifier parses the certificate leniently
//!   with `x509-parser` and checks the handshake signature directly against the SPKI public key
//!   with ring. It never builds a webpki `EndEntityCert`.
//! - The server side serves the cert through a fixed `ResolvesServerCert` so that rustls never
//!   parses the (v1) certificate either.
//! - A node's Foolscap TubID is `base32(SHA1(cert DER))`; it seeds lease and write-enabler
//!   secrets (§8), so the same `node.pem` must be reused across restarts.
//!
//! Invariants: the verifier accepts a server iff it presents exactly one certificate whose SPKI
//! hash equals the pin (compared in constant time) and proves possession of the key in the
//! handshake. Pins are public values, so errors name both the expected and the received pin.
//! Private keys never appear in `Debug` output or errors.

use std::fmt;
use std::sync::Arc;

use base64::Engine as _;
use ring::signature;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, SignatureScheme};
use sha2::Digest as _;

/// Errors of the TLS layer.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The certificate is not parsable DER X.509.
    #[error("malformed certificate: {0}")]
    BadCertificate(String),
    /// A PEM file lacked a certificate or a private key, or held something unusable.
    #[error("bad node.pem: {0}")]
    BadPem(&'static str),
    /// The private key could not be loaded or generated.
    #[error("unusable private key")]
    BadKey,
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Config(String),
    /// A pin string is not 43 characters of urlsafe base64.
    #[error("malformed SPKI pin")]
    BadPin,
}

/// Urlsafe base64 without padding (the NURL pin alphabet).
fn b64url(data: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data)
}

/// The pin of a DER SubjectPublicKeyInfo: urlsafe-b64(SHA-256(spki)) without `=`.
pub fn spki_pin(spki_der: &[u8]) -> String {
    b64url(&sha2::Sha256::digest(spki_der))
}

/// Extracts the DER SubjectPublicKeyInfo of a DER certificate (parsed leniently: any version,
/// any validity, no extension required).
pub fn cert_spki_der(cert_der: &[u8]) -> Result<Vec<u8>, TlsError> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der)
        .map_err(|e| TlsError::BadCertificate(e.to_string()))?;
    Ok(cert.tbs_certificate.subject_pki.raw.to_vec())
}

/// The pin of a DER certificate.
pub fn cert_pin(cert_der: &[u8]) -> Result<String, TlsError> {
    Ok(spki_pin(&cert_spki_der(cert_der)?))
}

/// A validated SPKI pin (32 bytes, shown as 43 urlsafe-base64 characters).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct SpkiPin([u8; 32]);

impl SpkiPin {
    /// Parses the textual pin of a NURL.
    pub fn parse(text: &str) -> Result<Self, TlsError> {
        if text.len() != 43 {
            return Err(TlsError::BadPin);
        }
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(text)
            .map_err(|_| TlsError::BadPin)?;
        let arr: [u8; 32] = bytes.try_into().map_err(|_| TlsError::BadPin)?;
        // Canonical spelling only, so that a pin has one textual form.
        if b64url(&arr) != text {
            return Err(TlsError::BadPin);
        }
        Ok(SpkiPin(arr))
    }

    /// The pin of a DER certificate.
    pub fn of_cert(cert_der: &[u8]) -> Result<Self, TlsError> {
        Ok(SpkiPin(
            sha2::Sha256::digest(cert_spki_der(cert_der)?).into(),
        ))
    }

    /// The 32 hash bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for SpkiPin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&b64url(&self.0))
    }
}

impl fmt::Debug for SpkiPin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SpkiPin({self})")
    }
}

/// Constant-time equality of two byte strings of public length.
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A rustls server-certificate verifier that accepts exactly the pinned SPKI.
#[derive(Debug)]
pub struct PinnedVerifier {
    pin: SpkiPin,
}

impl PinnedVerifier {
    /// A verifier for one pin.
    pub fn new(pin: SpkiPin) -> Self {
        PinnedVerifier { pin }
    }
}

fn tls_err(msg: String) -> rustls::Error {
    rustls::Error::General(msg)
}

impl ServerCertVerifier for PinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // Python's OpenSSL callback runs for every chain element and only self-signed depth-0
        // certs pass, so a chain is never accepted.
        if !intermediates.is_empty() {
            return Err(tls_err(format!(
                "server presented {} certificates; exactly one is required",
                intermediates.len() + 1
            )));
        }
        let spki = cert_spki_der(end_entity)
            .map_err(|e| tls_err(format!("server certificate unparsable: {e}")))?;
        let got: [u8; 32] = sha2::Sha256::digest(&spki).into();
        if !ct_eq(&got, self.pin.as_bytes()) {
            return Err(tls_err(format!(
                "server SPKI pin mismatch: expected {}, got {}",
                self.pin,
                b64url(&got)
            )));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_signature(message, cert, dss.scheme, dss.signature(), false)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_signature(message, cert, dss.scheme, dss.signature(), true)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![
            SignatureScheme::RSA_PSS_SHA256,
            SignatureScheme::RSA_PSS_SHA384,
            SignatureScheme::RSA_PSS_SHA512,
            SignatureScheme::RSA_PKCS1_SHA256,
            SignatureScheme::RSA_PKCS1_SHA384,
            SignatureScheme::RSA_PKCS1_SHA512,
            SignatureScheme::ECDSA_NISTP256_SHA256,
            SignatureScheme::ECDSA_NISTP384_SHA384,
            SignatureScheme::ED25519,
        ]
    }
}

const OID_RSA: &str = "1.2.840.113549.1.1.1";
const OID_EC: &str = "1.2.840.10045.2.1";
const OID_P256: &str = "1.2.840.10045.3.1.7";
const OID_P384: &str = "1.3.132.0.34";
const OID_ED25519: &str = "1.3.101.112";

/// Verifies a handshake signature against the certificate's SPKI with ring, without webpki.
/// TLS 1.3 forbids PKCS#1 v1.5 handshake signatures.
fn verify_signature(
    message: &[u8],
    cert: &CertificateDer<'_>,
    scheme: SignatureScheme,
    sig: &[u8],
    tls13: bool,
) -> Result<HandshakeSignatureValid, rustls::Error> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert)
        .map_err(|e| tls_err(format!("server certificate unparsable: {e}")))?;
    let spki = &parsed.tbs_certificate.subject_pki;
    let key_oid = spki.algorithm.algorithm.to_id_string();
    let curve_oid = spki
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.as_oid().ok())
        .map(|o| o.to_id_string());
    let key = spki.subject_public_key.data.as_ref();
    let alg: &'static dyn signature::VerificationAlgorithm = match (scheme, key_oid.as_str()) {
        (SignatureScheme::RSA_PKCS1_SHA256, OID_RSA) if !tls13 => {
            &signature::RSA_PKCS1_2048_8192_SHA256
        }
        (SignatureScheme::RSA_PKCS1_SHA384, OID_RSA) if !tls13 => {
            &signature::RSA_PKCS1_2048_8192_SHA384
        }
        (SignatureScheme::RSA_PKCS1_SHA512, OID_RSA) if !tls13 => {
            &signature::RSA_PKCS1_2048_8192_SHA512
        }
        (SignatureScheme::RSA_PSS_SHA256, OID_RSA) => &signature::RSA_PSS_2048_8192_SHA256,
        (SignatureScheme::RSA_PSS_SHA384, OID_RSA) => &signature::RSA_PSS_2048_8192_SHA384,
        (SignatureScheme::RSA_PSS_SHA512, OID_RSA) => &signature::RSA_PSS_2048_8192_SHA512,
        (SignatureScheme::ECDSA_NISTP256_SHA256, OID_EC)
            if curve_oid.as_deref() == Some(OID_P256) =>
        {
            &signature::ECDSA_P256_SHA256_ASN1
        }
        (SignatureScheme::ECDSA_NISTP384_SHA384, OID_EC)
            if curve_oid.as_deref() == Some(OID_P384) =>
        {
            &signature::ECDSA_P384_SHA384_ASN1
        }
        (SignatureScheme::ED25519, OID_ED25519) => &signature::ED25519,
        _ => {
            return Err(rustls::Error::PeerMisbehaved(
                rustls::PeerMisbehaved::SignedHandshakeWithUnadvertisedSigScheme,
            ))
        }
    };
    signature::UnparsedPublicKey::new(alg, key)
        .verify(message, sig)
        .map_err(|_| rustls::Error::InvalidCertificate(rustls::CertificateError::BadSignature))?;
    Ok(HandshakeSignatureValid::assertion())
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A client configuration that trusts exactly `pin`: no SNI, no ALPN (HTTP/1.1 only).
pub fn client_config(pin: SpkiPin) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError::Config(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinnedVerifier::new(pin)))
        .with_no_client_auth();
    cfg.enable_sni = false;
    cfg.alpn_protocols = Vec::new();
    Ok(Arc::new(cfg))
}

/// A node's TLS identity: one self-signed certificate and its private key.
#[derive(Clone)]
pub struct NodeIdentity {
    cert_der: Vec<u8>,
    key_der: Vec<u8>,
    key_kind: KeyKind,
}

#[derive(Clone, Copy)]
enum KeyKind {
    Pkcs8,
    Pkcs1,
    Sec1,
}

impl fmt::Debug for NodeIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The key is a secret: only public facts are shown.
        f.debug_struct("NodeIdentity")
            .field("pin", &self.pin().map(|p| p.to_string()).ok())
            .field("tub_id", &self.tub_id())
            .finish_non_exhaustive()
    }
}

impl NodeIdentity {
    /// Loads a Foolscap/Tahoe `node.pem`: a PEM certificate followed by a PEM private key
    /// (`PRIVATE KEY`, or `RSA PRIVATE KEY` from older pyOpenSSL), in any order.
    pub fn from_pem(pem: &[u8]) -> Result<Self, TlsError> {
        let cert = CertificateDer::pem_slice_iter(pem)
            .next()
            .ok_or(TlsError::BadPem("no certificate"))?
            .map_err(|_| TlsError::BadPem("unreadable certificate"))?;
        let key = PrivateKeyDer::from_pem_slice(pem)
            .map_err(|_| TlsError::BadPem("no readable private key"))?;
        let (key_der, key_kind) = match key {
            PrivateKeyDer::Pkcs8(k) => (k.secret_pkcs8_der().to_vec(), KeyKind::Pkcs8),
            PrivateKeyDer::Pkcs1(k) => (k.secret_pkcs1_der().to_vec(), KeyKind::Pkcs1),
            PrivateKeyDer::Sec1(k) => (k.secret_sec1_der().to_vec(), KeyKind::Sec1),
            _ => return Err(TlsError::BadPem("unsupported private key type")),
        };
        let id = NodeIdentity {
            cert_der: cert.as_ref().to_vec(),
            key_der,
            key_kind,
        };
        // Fail now, not at the first handshake, if the cert or key is unusable.
        id.pin()?;
        id.signing_key()?;
        Ok(id)
    }

    /// Creates a new identity like Foolscap's: RSA-2048, X.509 v1 self-signed, serial 1,
    /// CN `newpb_thingy`, sha256WithRSAEncryption. Validity runs from now for 20 years
    /// (clients ignore dates; Foolscap uses one year).
    pub fn generate() -> Result<Self, TlsError> {
        use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey};
        let key =
            rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048).map_err(|_| TlsError::BadKey)?;
        let pkcs8 = key.to_pkcs8_der().map_err(|_| TlsError::BadKey)?;
        let spki = key
            .to_public_key()
            .to_public_key_der()
            .map_err(|_| TlsError::BadKey)?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let tbs = der::tbs_certificate(spki.as_bytes(), now, now + 20 * 365 * 86400);
        let pair =
            signature::RsaKeyPair::from_pkcs8(pkcs8.as_bytes()).map_err(|_| TlsError::BadKey)?;
        let mut sig = vec![0u8; pair.public().modulus_len()];
        pair.sign(
            &signature::RSA_PKCS1_SHA256,
            &ring::rand::SystemRandom::new(),
            &tbs,
            &mut sig,
        )
        .map_err(|_| TlsError::BadKey)?;
        let cert_der = der::certificate(&tbs, &sig);
        Ok(NodeIdentity {
            cert_der,
            key_der: pkcs8.as_bytes().to_vec(),
            key_kind: KeyKind::Pkcs8,
        })
    }

    /// The `node.pem` text: certificate then PKCS#8 private key, as Foolscap writes it.
    pub fn to_pem(&self) -> String {
        let label = match self.key_kind {
            KeyKind::Pkcs8 => "PRIVATE KEY",
            KeyKind::Pkcs1 => "RSA PRIVATE KEY",
            KeyKind::Sec1 => "EC PRIVATE KEY",
        };
        let mut out = pem_block("CERTIFICATE", &self.cert_der);
        out.push_str(&pem_block(label, &self.key_der));
        out
    }

    /// The DER certificate.
    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }

    /// The SPKI pin clients use in this node's NURL.
    pub fn pin(&self) -> Result<SpkiPin, TlsError> {
        SpkiPin::of_cert(&self.cert_der)
    }

    /// The Foolscap TubID: lowercase base32 of SHA-1 of the certificate DER (32 characters).
    pub fn tub_id(&self) -> String {
        crate::util::base32::encode(&self.tub_id_bytes())
    }

    /// The 20 raw TubID bytes (the lease and write-enabler seed, digest §8).
    pub fn tub_id_bytes(&self) -> [u8; 20] {
        use sha1::Digest as _;
        sha1::Sha1::digest(&self.cert_der).into()
    }

    fn key_der(&self) -> PrivateKeyDer<'static> {
        match self.key_kind {
            KeyKind::Pkcs8 => PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone())),
            KeyKind::Pkcs1 => PrivateKeyDer::Pkcs1(self.key_der.clone().into()),
            KeyKind::Sec1 => PrivateKeyDer::Sec1(self.key_der.clone().into()),
        }
    }

    fn signing_key(&self) -> Result<Arc<dyn rustls::sign::SigningKey>, TlsError> {
        provider()
            .key_provider
            .load_private_key(self.key_der())
            .map_err(|_| TlsError::BadKey)
    }

    /// A server configuration presenting this identity: one certificate, no client auth,
    /// TLS 1.2 and 1.3, ALPN none (HTTP/1.1).
    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let certified = Arc::new(CertifiedKey::new(
            vec![CertificateDer::from(self.cert_der.clone())],
            self.signing_key()?,
        ));
        let cfg = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(FixedCert(certified)));
        Ok(Arc::new(cfg))
    }
}

/// Serves one certificate regardless of SNI, without rustls parsing it (it may be X.509 v1).
#[derive(Debug)]
struct FixedCert(Arc<CertifiedKey>);

impl ResolvesServerCert for FixedCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

fn pem_block(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        // base64 output is ASCII, so each chunk is valid UTF-8.
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// A minimal DER writer for the one certificate shape we create.
mod der {
    fn len(out: &mut Vec<u8>, n: usize) {
        if n < 0x80 {
            out.push(n as u8);
        } else {
            let bytes = n.to_be_bytes();
            let skip = bytes.iter().take_while(|b| **b == 0).count();
            out.push(0x80 | (bytes.len() - skip) as u8);
            out.extend_from_slice(&bytes[skip..]);
        }
    }

    fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        len(&mut out, content.len());
        out.extend_from_slice(content);
        out
    }

    fn seq(parts: &[&[u8]]) -> Vec<u8> {
        tlv(0x30, &parts.concat())
    }

    /// AlgorithmIdentifier sha256WithRSAEncryption with NULL parameters.
    const SHA256_RSA: [u8; 15] = [
        0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b, 0x05, 0x00,
    ];

    fn name_cn(cn: &str) -> Vec<u8> {
        let atv = seq(&[&tlv(0x06, &[0x55, 0x04, 0x03]), &tlv(0x0c, cn.as_bytes())]);
        seq(&[&tlv(0x31, &atv)])
    }

    /// Days since 1970-01-01 to (year, month, day), proleptic Gregorian.
    fn civil(days: i64) -> (i64, u32, u32) {
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
        let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
        (yoe + era * 400 + i64::from(m <= 2), m, d)
    }

    /// UTCTime for years < 2050, GeneralizedTime after (RFC 5280 §4.1.2.5).
    fn time(unix: u64) -> Vec<u8> {
        let secs = unix as i64;
        let (y, mo, d) = civil(secs.div_euclid(86_400));
        let rem = secs.rem_euclid(86_400);
        let (h, mi, s) = (rem / 3600, rem % 3600 / 60, rem % 60);
        if y < 2050 {
            let t = format!("{:02}{mo:02}{d:02}{h:02}{mi:02}{s:02}Z", y % 100);
            tlv(0x17, t.as_bytes())
        } else {
            let t = format!("{y:04}{mo:02}{d:02}{h:02}{mi:02}{s:02}Z");
            tlv(0x18, t.as_bytes())
        }
    }

    /// A v1 TBSCertificate (no version field, no extensions), serial 1, CN newpb_thingy.
    pub(super) fn tbs_certificate(spki: &[u8], not_before: u64, not_after: u64) -> Vec<u8> {
        let name = name_cn("newpb_thingy");
        let validity = seq(&[&time(not_before), &time(not_after)]);
        seq(&[
            &[0x02, 0x01, 0x01],
            &SHA256_RSA,
            &name,
            &validity,
            &name,
            spki,
        ])
    }

    pub(super) fn certificate(tbs: &[u8], sig: &[u8]) -> Vec<u8> {
        let mut bits = vec![0u8];
        bits.extend_from_slice(sig);
        seq(&[tbs, &SHA256_RSA, &tlv(0x03, &bits)])
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn civil_known_dates() {
            assert_eq!(super::civil(0), (1970, 1, 1));
            // 2000-03-01 is day 11017 (independently: 30 years * 365 + 7 leap days + 59 + 1).
            assert_eq!(super::civil(11_017), (2000, 3, 1));
            assert_eq!(super::civil(19_782), (2024, 2, 29));
        }
    }
}
