//! Dialling storage servers through Tor with an in-process arti client (cargo feature `tor`).
//!
//! Design: one [`TorDialer`] per grid (node directory) holds at most one arti `TorClient`,
//! created and bootstrapped lazily on the first Tor connection and shared by every storage
//! client of the grid (arti multiplexes all streams over its circuits). A failed bootstrap is
//! not cached: the next connection tries again. The dialer only yields a byte stream; the
//! storage client runs the same SPKI-pinning TLS layer over it as over plain TCP, so a Tor
//! path never weakens server authentication.
//!
//! Configuration: [`TorDialer::for_node_dir`] reads arti's own TOML format from the optional
//! `private/arti.toml` of the node directory (see [`crate::config::tor`]). Everything arti
//! accepts can be set there, e.g. for a private test network:
//!
//! ```toml
//! [tor_network]
//! fallback_caches = [ { rsa_identity = "HEX", ed_identity = "BASE64", orports = ["127.0.0.1:5000"] } ]
//! [tor_network.authorities]
//! v3idents = ["HEX"]
//! [path_rules]
//! ipv4_subnet_family_prefix = 33   # no /16 family rule: every relay is on 127.0.0.1
//! ipv6_subnet_family_prefix = 129
//! [address_filter]
//! allow_local_addrs = true         # `tcp = tor` to loopback servers
//! ```
//!
//! Unless the file sets `storage.state_dir` / `storage.cache_dir`, arti keeps its state and
//! cache under `private/arti/` of the node directory, never in the user's global arti dirs.
//!
//! The same configuration starts the arti client of a storage node's onion service
//! ([`crate::server::onion`]), with one addition: a read-only C-tor service keystore holding the
//! service's identity key ([`arti_config_with`]).
//!
//! Invariants: the dialer never sees a swissnum or cap (it gets a host and a port), and its
//! errors carry arti's message about the host, never request data.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arti_client::config::{CfgPath, TorClientConfigBuilder};
use arti_client::{DataStream, StreamPrefs, TorClient, TorClientConfig};
use tor_rtcompat::PreferredRuntime;

use crate::config::tor::{ARTI_CACHE_DIR, ARTI_CONFIG_FILE, ARTI_STATE_DIR};

/// Errors of the Tor transport.
#[derive(Debug, thiserror::Error)]
pub enum TorError {
    /// The arti configuration is unreadable or invalid.
    #[error("arti configuration {path}: {reason}")]
    Config {
        /// Which file (or `<built-in>`).
        path: String,
        /// What was wrong.
        reason: String,
    },
    /// No tokio runtime is running.
    #[error("the Tor client needs a tokio runtime: {0}")]
    Runtime(String),
    /// Bootstrapping the Tor client failed.
    #[error("Tor bootstrap failed: {0}")]
    Bootstrap(String),
    /// Bootstrapping did not finish in time.
    #[error("Tor bootstrap did not finish within {0:?}")]
    BootstrapTimeout(Duration),
    /// Opening the stream through Tor failed.
    #[error("Tor connection to {addr} failed: {reason}")]
    Connect {
        /// host:port.
        addr: String,
        /// arti's error.
        reason: String,
    },
}

/// A lazily bootstrapped arti client shared by the storage clients of one grid.
pub struct TorDialer {
    config: TorClientConfig,
    /// Where the configuration came from, for messages.
    source: String,
    client: tokio::sync::OnceCell<Arc<TorClient<PreferredRuntime>>>,
    /// Deadline for the first bootstrap.
    pub bootstrap_timeout: Duration,
    /// Deadline for opening one stream (circuit building, onion service rendezvous).
    pub connect_timeout: Duration,
}

impl std::fmt::Debug for TorDialer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TorDialer")
            .field("source", &self.source)
            .field("bootstrapped", &self.client.initialized())
            .finish_non_exhaustive()
    }
}

/// A read-only C-tor `HiddenServiceDir` keystore holding one onion service's identity key
/// (see [`crate::server::onion`]).
#[derive(Debug, Clone)]
pub struct CtorServiceStore {
    /// arti's nickname of the service.
    pub nickname: String,
    /// The directory with `hs_ed25519_secret_key`.
    pub dir: PathBuf,
}

/// Parses arti's TOML configuration text and puts the state and cache directories under
/// `basedir` unless the text sets them.
pub fn arti_config(
    toml_text: &str,
    basedir: &Path,
    source: &str,
) -> Result<TorClientConfig, TorError> {
    arti_config_with(toml_text, basedir, source, None)
}

/// [`arti_config`], plus a C-tor service keystore (`storage.keystore.ctor.services`).
pub fn arti_config_with(
    toml_text: &str,
    basedir: &Path,
    source: &str,
    ctor_service: Option<&CtorServiceStore>,
) -> Result<TorClientConfig, TorError> {
    let bad = |reason: String| TorError::Config {
        path: source.to_string(),
        reason,
    };
    let mut table: toml::Table = toml::from_str(toml_text).map_err(|e| bad(e.to_string()))?;
    if let Some(store) = ctor_service {
        let mut entry = toml::Table::new();
        entry.insert("id".into(), format!("{}-ctor", store.nickname).into());
        let dir = store
            .dir
            .to_str()
            .ok_or_else(|| bad("the node directory path is not UTF-8".into()))?;
        entry.insert("path".into(), dir.into());
        let mut node = &mut table;
        for key in ["storage", "keystore", "ctor", "services"] {
            node = node
                .entry(key)
                .or_insert_with(|| toml::Table::new().into())
                .as_table_mut()
                .ok_or_else(|| bad(format!("{key} is not a table")))?;
        }
        node.insert(store.nickname.clone(), entry.into());
    }
    let storage = table.get("storage").and_then(toml::Value::as_table);
    let has = |key: &str| storage.is_some_and(|s| s.contains_key(key));
    let (has_state, has_cache) = (has("state_dir"), has("cache_dir"));
    let mut builder: TorClientConfigBuilder = toml::Value::Table(table)
        .try_into()
        .map_err(|e: toml::de::Error| bad(e.to_string()))?;
    if !has_state {
        builder
            .storage()
            .state_dir(CfgPath::new_literal(basedir.join(ARTI_STATE_DIR)));
    }
    if !has_cache {
        builder
            .storage()
            .cache_dir(CfgPath::new_literal(basedir.join(ARTI_CACHE_DIR)));
    }
    builder.build().map_err(|e| bad(e.to_string()))
}

/// The arti configuration of the node directory `basedir` (`private/arti.toml` if present,
/// else arti's defaults: the public Tor network), and where it came from.
pub fn arti_config_for_node_dir(
    basedir: &Path,
    ctor_service: Option<&CtorServiceStore>,
) -> Result<(TorClientConfig, String), TorError> {
    let path: PathBuf = basedir.join(ARTI_CONFIG_FILE);
    let (text, source) = match std::fs::read_to_string(&path) {
        Ok(t) => (t, path.display().to_string()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            (String::new(), "<built-in>".to_string())
        }
        Err(e) => {
            return Err(TorError::Config {
                path: path.display().to_string(),
                reason: e.to_string(),
            })
        }
    };
    let config = arti_config_with(&text, basedir, &source, ctor_service)?;
    Ok((config, source))
}

impl TorDialer {
    /// A dialer with the arti configuration of the node directory `basedir`
    /// (`private/arti.toml` if present, else arti's defaults: the public Tor network).
    pub fn for_node_dir(basedir: &Path) -> Result<TorDialer, TorError> {
        let (config, source) = arti_config_for_node_dir(basedir, None)?;
        Ok(TorDialer::new(config, source))
    }

    /// A dialer with an explicit arti configuration.
    pub fn new(config: TorClientConfig, source: String) -> TorDialer {
        TorDialer {
            config,
            source,
            client: tokio::sync::OnceCell::new(),
            bootstrap_timeout: Duration::from_secs(180),
            connect_timeout: Duration::from_secs(120),
        }
    }

    /// The shared client, bootstrapping it on first use. Concurrent callers wait for the same
    /// bootstrap; a failure leaves the cell empty so that a later call retries.
    pub async fn client(&self) -> Result<&Arc<TorClient<PreferredRuntime>>, TorError> {
        self.client
            .get_or_try_init(|| async {
                let runtime =
                    PreferredRuntime::current().map_err(|e| TorError::Runtime(e.to_string()))?;
                tracing::info!(config = %self.source, "bootstrapping the Tor client");
                let started = std::time::Instant::now();
                let mut builder = TorClient::with_runtime(runtime);
                builder = builder.config(self.config.clone());
                let client =
                    tokio::time::timeout(self.bootstrap_timeout, builder.create_bootstrapped())
                        .await
                        .map_err(|_| TorError::BootstrapTimeout(self.bootstrap_timeout))?
                        .map_err(|e| TorError::Bootstrap(e.to_string()))?;
                tracing::info!(elapsed = ?started.elapsed(), "Tor client bootstrapped");
                Ok(client)
            })
            .await
    }

    /// Opens a stream to `host:port` through Tor (onion services included). The caller
    /// bounds the whole call with its own deadline; this one bounds the stream opening.
    pub async fn connect(&self, host: &str, port: u16) -> Result<DataStream, TorError> {
        let client = self.client().await?;
        let addr = format!("{host}:{port}");
        let mut prefs = StreamPrefs::new();
        prefs.connect_to_onion_services(arti_client::config::BoolOrAuto::Explicit(true));
        let fut = client.connect_with_prefs((host, port), &prefs);
        match tokio::time::timeout(self.connect_timeout, fut).await {
            Ok(Ok(stream)) => Ok(stream),
            Ok(Err(e)) => Err(TorError::Connect {
                addr,
                reason: e.to_string(),
            }),
            Err(_) => Err(TorError::Connect {
                addr,
                reason: format!("timed out after {:?}", self.connect_timeout),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_config_puts_dirs_under_the_node_dir() {
        let base = Path::new("/nodes/n1");
        let cfg = arti_config("", base, "<built-in>").unwrap();
        let dbg = format!("{cfg:?}");
        assert!(dbg.contains("/nodes/n1/private/arti/state"), "{dbg}");
        assert!(dbg.contains("/nodes/n1/private/arti/cache"), "{dbg}");
    }

    #[test]
    fn private_network_config_is_accepted() {
        // The shape a private test network needs (as chutney writes it for arti).
        let text = r#"
[tor_network]
fallback_caches = [
  { rsa_identity = "0123456789ABCDEF0123456789ABCDEF01234567", ed_identity = "2hPb2MTA8UfDWDCxWwHWHxZaG/4D2dJ8d2T7/cDgy+U", orports = ["127.0.0.1:5000"] },
]
[tor_network.authorities]
v3idents = ["89ABCDEF0123456789ABCDEF0123456789ABCDEF"]
[path_rules]
ipv4_subnet_family_prefix = 33
ipv6_subnet_family_prefix = 129
[address_filter]
allow_local_addrs = true
[storage]
state_dir = "/elsewhere/state"
"#;
        let cfg = arti_config(text, Path::new("/nodes/n1"), "arti.toml").unwrap();
        let dbg = format!("{cfg:?}");
        assert!(dbg.contains("127.0.0.1:5000"), "{dbg}");
        assert!(dbg.contains("/elsewhere/state"), "{dbg}");
        assert!(!dbg.contains("/nodes/n1/private/arti/state"), "{dbg}");
        assert!(dbg.contains("/nodes/n1/private/arti/cache"), "{dbg}");
    }

    #[test]
    fn bad_configs_are_refused() {
        let base = Path::new("/n");
        assert!(matches!(
            arti_config("[tor_network\n", base, "x"),
            Err(TorError::Config { .. })
        ));
        // Custom authorities without fallback caches: arti refuses the mix.
        let text = "[tor_network.authorities]\nv3idents = [\"89ABCDEF0123456789ABCDEF0123456789ABCDEF\"]\n";
        assert!(matches!(
            arti_config(text, base, "x"),
            Err(TorError::Config { .. })
        ));
        assert!(matches!(
            arti_config(
                "[path_rules]\nipv4_subnet_family_prefix = \"wide\"\n",
                base,
                "x"
            ),
            Err(TorError::Config { .. })
        ));
    }

    #[test]
    fn ctor_service_keystore_is_added() {
        let store = CtorServiceStore {
            nickname: "lafs-storage-abc".into(),
            dir: PathBuf::from("/nodes/n1/private/arti/onion-service"),
        };
        let text = "[storage.keystore]\nenabled = true\n";
        let cfg = arti_config_with(text, Path::new("/nodes/n1"), "x", Some(&store)).unwrap();
        let dbg = format!("{cfg:?}");
        assert!(
            dbg.contains("/nodes/n1/private/arti/onion-service"),
            "{dbg}"
        );
        assert!(dbg.contains("lafs-storage-abc"), "{dbg}");
        assert!(arti_config_with(
            "[storage]\nkeystore = 3\n",
            Path::new("/n"),
            "x",
            Some(&store)
        )
        .is_err());
    }

    #[test]
    fn dialer_reads_the_node_dir_file() {
        let dir = tempfile::tempdir().unwrap();
        let d = TorDialer::for_node_dir(dir.path()).unwrap();
        assert_eq!(d.source, "<built-in>");
        std::fs::create_dir_all(dir.path().join("private")).unwrap();
        std::fs::write(dir.path().join(ARTI_CONFIG_FILE), "[bogus\n").unwrap();
        assert!(TorDialer::for_node_dir(dir.path()).is_err());
        std::fs::write(
            dir.path().join(ARTI_CONFIG_FILE),
            "[address_filter]\nallow_local_addrs = true\n",
        )
        .unwrap();
        let d = TorDialer::for_node_dir(dir.path()).unwrap();
        assert!(d.source.ends_with("arti.toml"));
        assert!(!format!("{d:?}").is_empty());
    }
}
