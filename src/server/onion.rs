//! The storage node's onion service, hosted in-process by arti (`[tor] onion = true`, cargo
//! feature `tor`).
//!
//! Identity: Tahoe keeps the service key in `onion.private_key_file` (default
//! `private/tor_onion.privkey`) as C-tor's `ADD_ONION` blob, `ED25519-V3:<base64 of the 64-byte
//! expanded secret key>`. lafs reads (or creates) that file and is the only owner of the key:
//! before each start it writes the key, in C-tor's `HiddenServiceDir` layout
//! (`hs_ed25519_secret_key`), to [`ONION_CTOR_DIR`] and gives arti that directory as a read-only
//! C-tor service keystore. arti then finds the identity there and never generates its own, so
//! the `.onion` address is the key file's, across restarts and across Tahoe and lafs.
//!
//! The arti service nickname is derived from the address ([`OnionKey::nickname`]): arti keeps
//! per-service state (blinded keys, introduction point keys, replay logs) under the nickname, and
//! a new key must never meet an old key's state.
//!
//! Serving: every rendezvous is accepted; on it, only `BEGIN` to `onion.external_port` is
//! accepted (others get `END DONE`, as C-tor answers an unconfigured port), and the accepted
//! stream goes straight into the node's TLS/HTTP server, with no loopback hop.
//!
//! Invariants: the secret key never reaches `Debug` output, logs or error messages; a key file
//! is written with mode 0600.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine as _;
use futures::StreamExt as _;
use rand::RngCore as _;

use crate::protocol::server::ConnectionServer;
use crate::protocol::tor::{arti_config_for_node_dir, CtorServiceStore, TorError};

/// Where lafs puts the C-tor-layout copy of the key for arti, relative to the node directory.
pub const ONION_CTOR_DIR: &str = "private/arti/onion-service";

const TAHOE_PREFIX: &str = "ED25519-V3:";
const CTOR_SECRET_TAG: &[u8; 32] = b"== ed25519v1-secret: type0 ==\0\0\0";
const CTOR_PUBLIC_TAG: &[u8; 32] = b"== ed25519v1-public: type0 ==\0\0\0";

/// Errors of the onion service.
#[derive(Debug, thiserror::Error)]
pub enum OnionError {
    /// The key file is unreadable or unwritable.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The key file is not an `ED25519-V3:` key.
    #[error("{0}: not an ED25519-V3 onion service key")]
    BadKey(PathBuf),
    /// arti's configuration or client failed.
    #[error(transparent)]
    Tor(#[from] TorError),
    /// arti refused to launch the service.
    #[error("launching the onion service: {0}")]
    Launch(String),
}

/// An onion service identity key: Ed25519, in expanded form (scalar, then hash prefix).
#[derive(Clone)]
pub struct OnionKey {
    expanded: [u8; 64],
    public: [u8; 32],
}

impl std::fmt::Debug for OnionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnionKey")
            .field("address", &self.onion_address())
            .finish_non_exhaustive()
    }
}

impl OnionKey {
    /// The key of the 64-byte expanded secret; `None` if arti cannot use it.
    pub fn from_expanded(expanded: [u8; 64]) -> Option<OnionKey> {
        let kp = tor_llcrypto::pk::ed25519::ExpandedKeypair::from_secret_key_bytes(expanded)?;
        Some(OnionKey {
            expanded,
            public: kp.public().to_bytes(),
        })
    }

    /// A new random key (an Ed25519 seed, expanded as RFC 8032 and C-tor do).
    pub fn generate() -> OnionKey {
        let mut seed = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut seed);
        let kp = tor_llcrypto::pk::ed25519::Keypair::from_bytes(&seed);
        let expanded = tor_llcrypto::pk::ed25519::ExpandedKeypair::from(&kp);
        OnionKey {
            expanded: expanded.to_secret_key_bytes(),
            public: expanded.public().to_bytes(),
        }
    }

    /// Parses Tahoe's key file text, `ED25519-V3:<base64>` (padding optional). The bare base64
    /// of a 64-byte key is accepted too, in case a writer dropped the key-type prefix; any other
    /// prefix (`RSA1024:`, v2 onion services) is refused.
    pub fn parse_tahoe(text: &str) -> Option<OnionKey> {
        let text = text.trim();
        let b64 = text.strip_prefix(TAHOE_PREFIX).unwrap_or(text);
        let b64 = b64.trim_end_matches('=');
        let raw = base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(b64)
            .ok()?;
        OnionKey::from_expanded(raw.try_into().ok()?)
    }

    /// Tahoe's key file text (what C-tor's `ADD_ONION` returns, and what Tahoe stores).
    pub fn to_tahoe(&self) -> String {
        format!(
            "{TAHOE_PREFIX}{}",
            base64::engine::general_purpose::STANDARD.encode(self.expanded)
        )
    }

    /// The Ed25519 public key (the service identity).
    pub fn public(&self) -> [u8; 32] {
        self.public
    }

    /// `<56 base32 characters>.onion` (rend-spec-v3 "ONIONADDRESS": key, checksum, version 3).
    pub fn onion_address(&self) -> String {
        use sha2::Digest as _;
        use tor_llcrypto::d::Sha3_256;
        let mut h = Sha3_256::new();
        h.update(b".onion checksum");
        h.update(self.public);
        h.update([3u8]);
        let checksum = h.finalize();
        let mut raw = Vec::with_capacity(35);
        raw.extend_from_slice(&self.public);
        raw.extend_from_slice(&checksum[..2]);
        raw.push(3);
        let mut b32 = data_encoding::BASE32_NOPAD.encode(&raw);
        b32.make_ascii_lowercase();
        format!("{b32}.onion")
    }

    /// The arti service nickname for this key: `lafs-storage-` and the first 16 characters
    /// of the address (a valid arti slug: lowercase alphanumerics and hyphens).
    pub fn nickname(&self) -> String {
        format!("lafs-storage-{}", &self.onion_address()[..16])
    }

    /// Reads the key at `path`, or, when it is missing and `create` is set, writes a new one.
    pub fn load_or_create(path: &Path, create: bool) -> Result<OnionKey, OnionError> {
        let io = |source| OnionError::Io {
            path: path.to_path_buf(),
            source,
        };
        match std::fs::read_to_string(path) {
            Ok(text) => OnionKey::parse_tahoe(&text).ok_or(OnionError::BadKey(path.to_path_buf())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {
                let key = OnionKey::generate();
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir).map_err(io)?;
                }
                super::nodedir::write_atomic(path, key.to_tahoe().as_bytes(), true).map_err(
                    |e| match e {
                        super::nodedir::NodeDirError::Io { source, .. } => io(source),
                        other => io(std::io::Error::other(other.to_string())),
                    },
                )?;
                Ok(key)
            }
            Err(e) => Err(io(e)),
        }
    }

    /// Writes the key as a C-tor `HiddenServiceDir` (`hs_ed25519_secret_key`,
    /// `hs_ed25519_public_key`, `hostname`) into `dir`, mode 0700, files 0600, where arti's
    /// C-tor service keystore reads it.
    pub fn write_ctor_dir(&self, dir: &Path) -> Result<(), OnionError> {
        use std::os::unix::fs::PermissionsExt as _;
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| OnionError::Io { path, source }
        };
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io(dir))?;
        let mut secret = CTOR_SECRET_TAG.to_vec();
        secret.extend_from_slice(&self.expanded);
        let mut public = CTOR_PUBLIC_TAG.to_vec();
        public.extend_from_slice(&self.public);
        let hostname = format!("{}\n", self.onion_address());
        for (name, data) in [
            ("hs_ed25519_secret_key", &secret[..]),
            ("hs_ed25519_public_key", &public[..]),
            ("hostname", hostname.as_bytes()),
        ] {
            let path = dir.join(name);
            super::nodedir::write_atomic(&path, data, true).map_err(|e| OnionError::Io {
                path: path.clone(),
                source: std::io::Error::other(e.to_string()),
            })?;
        }
        Ok(())
    }
}

/// A running onion service; dropping it stops the service.
pub struct OnionHost {
    /// The address served.
    pub address: String,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for OnionHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnionHost")
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

impl Drop for OnionHost {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Starts arti with the node directory's configuration and launches the onion service of
/// `key`, serving virtual port `port` with `conns`. Returns once the service is launched;
/// bootstrapping, introduction points and descriptor publication continue in the background
/// (arti logs their progress).
pub async fn host(
    basedir: &Path,
    key: &OnionKey,
    port: u16,
    conns: ConnectionServer,
) -> Result<OnionHost, OnionError> {
    use arti_client::TorClient;
    use tor_hsservice::config::OnionServiceConfigBuilder;
    use tor_hsservice::HsNickname;

    let ctor_dir = basedir.join(ONION_CTOR_DIR);
    key.write_ctor_dir(&ctor_dir)?;
    let nickname = key.nickname();
    let (config, source) = arti_config_for_node_dir(
        basedir,
        Some(&CtorServiceStore {
            nickname: nickname.clone(),
            dir: ctor_dir,
        }),
    )?;
    let runtime =
        tor_rtcompat::PreferredRuntime::current().map_err(|e| TorError::Runtime(e.to_string()))?;
    tracing::info!(config = %source, "starting the Tor client for the onion service");
    let client = TorClient::with_runtime(runtime)
        .config(config)
        .create_unbootstrapped()
        .map_err(|e| TorError::Bootstrap(e.to_string()))?;
    let nick = HsNickname::new(nickname).map_err(|e| OnionError::Launch(e.to_string()))?;
    let svc_config = OnionServiceConfigBuilder::default()
        .nickname(nick)
        .build()
        .map_err(|e| OnionError::Launch(e.to_string()))?;
    let (service, rend_requests) = client
        .launch_onion_service(svc_config)
        .map_err(|e| OnionError::Launch(e.to_string()))?
        .ok_or_else(|| OnionError::Launch("the service is disabled".into()))?;
    let address = key.onion_address();
    // The identity arti loaded must be the key file's: a mismatch would announce an address
    // nobody serves.
    if let Some(id) = service.onion_address() {
        let public: &[u8] = id.as_ref();
        if public != key.public() {
            return Err(OnionError::Launch(
                "arti's service identity differs from the key file".into(),
            ));
        }
    }
    // Launching does not download the directory; bootstrapping does, and the service waits
    // for it. A failure is retried: the node keeps serving TCP meanwhile.
    let boot = client.clone();
    let bootstrap = tokio::spawn(async move {
        let started = std::time::Instant::now();
        loop {
            match boot.bootstrap().await {
                Ok(()) => {
                    tracing::info!(elapsed = ?started.elapsed(), "Tor client of the onion service bootstrapped");
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "Tor bootstrap for the onion service failed; retrying");
                    tokio::time::sleep(std::time::Duration::from_secs(10)).await;
                }
            }
        }
    });
    tracing::info!(port, "onion service launched; publishing its descriptor");
    let serving = tokio::spawn(serve_streams(client, service, rend_requests, port, conns));
    Ok(OnionHost {
        address,
        tasks: vec![bootstrap, serving],
    })
}

/// Accepts the streams of every rendezvous and serves those for `port`; runs until aborted.
/// `client` and `service` live as long as the loop: dropping them stops the service.
async fn serve_streams<R>(
    client: Arc<arti_client::TorClient<tor_rtcompat::PreferredRuntime>>,
    service: Arc<tor_hsservice::RunningOnionService>,
    rend_requests: R,
    port: u16,
    conns: ConnectionServer,
) where
    R: futures::Stream<Item = tor_hsservice::RendRequest> + Send + 'static,
{
    use tor_cell::relaycell::msg::{Connected, End, EndReason};
    use tor_proto::stream::IncomingStreamRequest;

    let _keep = (client, service);
    let mut streams = Box::pin(tor_hsservice::handle_rend_requests(rend_requests));
    while let Some(req) = streams.next().await {
        let wanted = matches!(req.request(), IncomingStreamRequest::Begin(b) if b.port() == port);
        if !wanted {
            tokio::spawn(async move {
                let _ = req.reject(End::new_with_reason(EndReason::DONE)).await;
            });
            continue;
        }
        let Some(slot) = conns.reserve().await else {
            return;
        };
        let conns = conns.clone();
        tokio::spawn(async move {
            match req.accept(Connected::new_empty()).await {
                Ok(stream) => conns.spawn(slot, stream),
                Err(e) => tracing::debug!(error = %e, "onion stream not accepted"),
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn onion_address_matches_arti() {
        let key = OnionKey::generate();
        let addr = key.onion_address();
        assert_eq!(addr.len(), 56 + ".onion".len());
        // arti's parser checks the checksum and version.
        let id: tor_hscrypto::pk::HsId = addr.parse().expect("arti parses the address");
        let public: &[u8] = id.as_ref();
        assert_eq!(public, key.public());
        let nick = key.nickname();
        assert!(tor_hsservice::HsNickname::new(nick).is_ok());
    }

    #[test]
    fn tahoe_key_file_round_trips() {
        let key = OnionKey::generate();
        let text = key.to_tahoe();
        assert!(text.starts_with("ED25519-V3:"));
        let back = OnionKey::parse_tahoe(&format!("{text}\n")).unwrap();
        assert_eq!(back.public(), key.public());
        // Unpadded base64 (as some writers emit it) is the same key.
        let unpadded = text.trim_end_matches('=');
        assert_eq!(
            OnionKey::parse_tahoe(unpadded).unwrap().public(),
            key.public()
        );
        assert_eq!(
            OnionKey::parse_tahoe(&text[11..]).unwrap().public(),
            key.public()
        );
        assert!(OnionKey::parse_tahoe(&format!("RSA1024:{}", &text[11..])).is_none());
        assert!(OnionKey::parse_tahoe("RSA1024:AAAA").is_none());
        assert!(OnionKey::parse_tahoe("ED25519-V3:AAAA").is_none());
        assert!(OnionKey::parse_tahoe("ED25519-V3:!!").is_none());
        assert!(!format!("{key:?}").contains(&text[11..30]));
    }

    #[test]
    fn expanded_rfc8032_key_has_the_rfcs_public_key() {
        // RFC 8032 section 7.1, test 1: the expanded form of the seed keeps its public key,
        // whose address is the one C-tor's test suite uses (test_hs_common.c,
        // `test_build_address`).
        let seed: [u8; 32] = data_encoding::HEXLOWER
            .decode(b"9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
            .unwrap()
            .try_into()
            .unwrap();
        let kp = tor_llcrypto::pk::ed25519::Keypair::from_bytes(&seed);
        let expanded = tor_llcrypto::pk::ed25519::ExpandedKeypair::from(&kp);
        let key = OnionKey::from_expanded(expanded.to_secret_key_bytes()).unwrap();
        assert_eq!(
            data_encoding::HEXLOWER.encode(&key.public()),
            "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
        );
        assert_eq!(
            key.onion_address(),
            "25njqamcweflpvkl73j4szahhihoc4xt3ktcgjnpaingr5yhkenl5sid.onion"
        );
    }

    #[test]
    fn key_file_is_created_once_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("private/tor_onion.privkey");
        assert!(matches!(
            OnionKey::load_or_create(&path, false),
            Err(OnionError::Io { .. })
        ));
        let a = OnionKey::load_or_create(&path, true).unwrap();
        let b = OnionKey::load_or_create(&path, true).unwrap();
        assert_eq!(a.onion_address(), b.onion_address());
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0);
        std::fs::write(&path, "garbage").unwrap();
        assert!(matches!(
            OnionKey::load_or_create(&path, true),
            Err(OnionError::BadKey(_))
        ));
        let ctor = dir.path().join("ctor");
        a.write_ctor_dir(&ctor).unwrap();
        let secret = std::fs::read(ctor.join("hs_ed25519_secret_key")).unwrap();
        assert_eq!(secret.len(), 96);
        assert_eq!(&secret[..32], CTOR_SECRET_TAG);
        assert_eq!(
            std::fs::read_to_string(ctor.join("hostname"))
                .unwrap()
                .trim(),
            a.onion_address()
        );
    }
}
