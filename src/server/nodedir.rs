//! A storage node's directory, laid out as Tahoe-LAFS 1.20 lays it out, so that a node
//! directory created by `tahoe create-node` can be run by lafs and the other way round.
//!
//! Files (all written atomically: temporary file, fsync, rename; secrets with mode 0600):
//! - `tahoe.cfg` — written by [`create_node`]; `[node] tub.port/tub.location`, `[storage]`;
//! - `private/node.pem` — the TLS certificate and key (Foolscap's; the TubID is SHA-1 of the
//!   certificate and the NURL pin is SHA-256 of its SPKI). Reused whenever present, since write
//!   enablers and lease secrets are derived from the TubID;
//! - `private/storage.furl` — `pb://TUBID@HINTS/SWISSNUM`, where Tahoe 1.20 keeps the storage
//!   swissnum (Foolscap's `registerReference(furlFile=...)`). The swissnum is reused; the hints
//!   are rewritten when `tub.location` changes, as Foolscap does;
//! - `private/node.privkey` (`priv-v0-<base32 seed>`) and `node.pubkey` (`pub-v0-<base32>`) —
//!   the Ed25519 node key whose public half names the server in `servers.yaml` (`v0-<base32>`);
//! - `my_nodeid` — the TubID in base32;
//! - `permutation-seed` — base32 seed of the server's place in the permuted ring: the TubID for
//!   a server that already holds shares (pre-#466 servers), else the Ed25519 public key, like
//!   Tahoe's `_init_permutation_seed`;
//! - `private/tor_onion.privkey` (Tahoe's `[tor] onion.private_key_file`) — with `[tor] onion =
//!   true`, the onion service key (`ED25519-V3:<base64>`); its address is announced as a
//!   `tor:ONION.onion:PORT` hint (cargo feature `tor`, see `server::onion`);
//! - `private/storage.nurl` and `private/announcement.yaml` — written by `lafs run`: the NURLs,
//!   and the `servers.yaml` entry a client needs. They live in `private/` because fURLs and
//!   NURLs carry the swissnum, a bearer secret.
//!
//! Secrets (keys, swissnum) never reach `Debug` output, logs or error messages.

use std::fs;
use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use rand::RngCore as _;
use ring::signature::KeyPair as _;

use crate::config::{Announcement, NodeConfig, ServersYaml, StaticServer};
use crate::grid::furl::Furl;
use crate::protocol::tls::NodeIdentity;
use crate::util::base32;

/// Errors of node directory handling. Messages name files, never their contents.
#[derive(Debug, thiserror::Error)]
pub enum NodeDirError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the directory {0} is not empty; refusing to overwrite it")]
    NotEmpty(PathBuf),
    #[error("{0}: unreadable or invalid")]
    BadFile(PathBuf),
    #[error("tahoe.cfg: {0}")]
    Config(#[from] crate::config::ConfigError),
    #[error("[storage]enabled is false: lafs runs storage nodes only")]
    StorageDisabled,
    #[error("[node]tub.port {0:?} is not supported (want tcp:PORT[:interface=IP])")]
    BadTubPort(String),
    #[error("[node]tub.port is not set")]
    NoTubPort,
    #[error("[node]tub.location has no usable tcp:HOST:PORT hint")]
    NoLocation,
    #[error("[node]reveal-IP-address = false, but [node]tub.location uses {0}, which reveals the address")]
    RevealsAddress(&'static str),
    #[error("bad option: {0}")]
    Option(String),
    #[error("TLS identity: {0}")]
    Tls(#[from] crate::protocol::tls::TlsError),
    #[error("Ed25519 node key is invalid")]
    BadNodeKey,
    #[error("tahoe.cfg: {0}")]
    TorConfig(#[from] crate::config::tor::TorConfigError),
    #[error("[tor]onion = true needs lafs built with the cargo feature `tor`")]
    OnionNeedsTor,
    #[cfg(feature = "tor")]
    #[error(transparent)]
    Onion(#[from] super::onion::OnionError),
}

/// The onion service a node hosts (`[tor] onion = true`).
#[cfg(feature = "tor")]
#[derive(Debug, Clone)]
pub struct OnionService {
    /// The identity key (from `onion.private_key_file`).
    pub key: super::onion::OnionKey,
    /// `onion.external_port`.
    pub external_port: u16,
}

#[cfg(feature = "tor")]
type MaybeOnion = Option<OnionService>;
#[cfg(not(feature = "tor"))]
type MaybeOnion = ();

/// The onion service of `[tor] onion = true`: its key is read (created when missing and
/// `create` is set), and a `tor:ONION.onion:EXTERNAL_PORT` hint is appended to `hints` unless
/// one names that address already (Tahoe's `create-node --listen=tor` writes it into
/// `tub.location`; a hand-made configuration may lack it).
fn onion_service(
    basedir: &Path,
    config: &NodeConfig,
    create: bool,
    hints: &mut Vec<String>,
) -> Result<MaybeOnion, NodeDirError> {
    let opts = crate::config::tor::TorOptions::from_ini(&config.ini)?;
    let Some(onion) = opts.onion else {
        #[cfg(feature = "tor")]
        return Ok(None);
        #[cfg(not(feature = "tor"))]
        return Ok(());
    };
    #[cfg(not(feature = "tor"))]
    {
        let _ = (basedir, create, hints, onion);
        Err(NodeDirError::OnionNeedsTor)
    }
    #[cfg(feature = "tor")]
    {
        let key =
            super::onion::OnionKey::load_or_create(&basedir.join(&onion.private_key_file), create)?;
        let address = key.onion_address();
        let named = hints.iter().any(|h| {
            h.strip_prefix("tor:")
                .and_then(|r| r.rsplit_once(':'))
                .is_some_and(|(host, _)| host.eq_ignore_ascii_case(&address))
        });
        if !named {
            hints.push(format!("tor:{address}:{}", onion.external_port));
        }
        Ok(Some(OnionService {
            key,
            external_port: onion.external_port,
        }))
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> NodeDirError + '_ {
    move |source| NodeDirError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Makes `basedir/private` (and `basedir`) when missing, `private` with mode 0700 as Tahoe's
/// `create_node_dir` does: it holds the node's key, secrets and aliases. An existing directory
/// keeps its mode (the owner chose it).
pub fn ensure_private_dir(basedir: &Path) -> Result<PathBuf, NodeDirError> {
    use std::os::unix::fs::DirBuilderExt as _;
    let private = basedir.join("private");
    if !private.is_dir() {
        fs::create_dir_all(basedir).map_err(io_err(basedir))?;
        match fs::DirBuilder::new().mode(0o700).create(&private) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io_err(&private)(e)),
        }
    }
    Ok(private)
}

/// Writes `data` to `path` atomically (temporary file in the same directory, fsync, rename).
/// `secret` files get mode 0600.
pub fn write_atomic(path: &Path, data: &[u8], secret: bool) -> Result<(), NodeDirError> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(io_err(dir))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp{}", std::process::id()));
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    if secret {
        opts.mode(0o600);
    }
    let res = (|| {
        let mut f = opts.open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if res.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    res.map_err(io_err(path))
}

fn read_optional(path: &Path) -> Result<Option<Vec<u8>>, NodeDirError> {
    match fs::read(path) {
        Ok(d) => Ok(Some(d)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err(path)(e)),
    }
}

fn read_optional_text(path: &Path) -> Result<Option<String>, NodeDirError> {
    Ok(read_optional(path)?
        .map(|d| String::from_utf8_lossy(&d).trim().to_string())
        .filter(|s| !s.is_empty()))
}

/// Options of `lafs create-node --storage`.
#[derive(Debug, Clone, Default)]
pub struct CreateOptions {
    pub nickname: Option<String>,
    /// `--hostname H`: listen on a newly allocated port on every interface, announce `H`.
    pub hostname: Option<String>,
    /// `--port` (a `tub.port` value), with `--location`.
    pub port: Option<String>,
    /// `--location` (a `tub.location` value), with `--port`.
    pub location: Option<String>,
    /// `--webport` (`none` disables it); lafs does not serve a web UI, this only goes to tahoe.cfg.
    pub webport: Option<String>,
    /// `[storage]reserved_space` (Tahoe's `create-node` writes `1G`).
    pub reserved_space: Option<String>,
    /// `--listen=tor`: an onion service hosted by `lafs run` (cargo feature `tor`), set up as
    /// Tahoe's `create-node --listen=tor` does (key file, `[tor] onion*`, a loopback `tub.port`,
    /// `tor:ONION.onion:3457` in `tub.location`), but without a Tor daemon: the key is made
    /// locally.
    pub onion: bool,
}

/// The virtual port Tahoe's `create-node --listen=tor` announces.
pub const ONION_EXTERNAL_PORT: u16 = 3457;

/// A free TCP port, like Tahoe's `allocate_tcp_port` (bound on every interface, then released).
fn allocate_tcp_port() -> Result<u16, NodeDirError> {
    let l = std::net::TcpListener::bind(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0))
        .map_err(io_err(Path::new("<tcp port allocation>")))?;
    Ok(l.local_addr()
        .map_err(io_err(Path::new("<tcp port allocation>")))?
        .port())
}

fn check_cfg_value(what: &str, v: &str) -> Result<(), NodeDirError> {
    // A newline or '#' would change the meaning of tahoe.cfg.
    if v.contains(['\n', '\r', '#']) {
        return Err(NodeDirError::Option(format!(
            "{what} must not contain newlines or '#'"
        )));
    }
    Ok(())
}

/// The `tahoe.cfg` text of a new storage node (Tahoe's layout and defaults).
pub fn storage_node_cfg(
    nickname: &str,
    webport: &str,
    tub_port: &str,
    tub_location: &str,
    reserved_space: &str,
) -> String {
    format!(
        "# -*- mode: conf; coding: utf-8 -*-\n\
         \n\
         # This file controls the configuration of the node that lives in this directory.\n\
         # It was written by `lafs create-node` in the layout of Tahoe-LAFS 1.20; both\n\
         # `lafs run` and `tahoe run` can run this node.\n\
         \n\
         [node]\n\
         nickname = {nickname}\n\
         web.port = {webport}\n\
         web.static = public_html\n\
         tub.port = {tub_port}\n\
         tub.location = {tub_location}\n\
         \n\
         [client]\n\
         # Which services should this client connect to?\n\
         shares.needed = 3\n\
         shares.happy = 7\n\
         shares.total = 10\n\
         \n\
         [storage]\n\
         # Shall this node provide storage service?\n\
         enabled = true\n\
         reserved_space = {reserved_space}\n\
         \n\
         [helper]\n\
         # Shall this node run a helper service that clients can use?\n\
         enabled = false\n"
    )
}

/// `lafs create-node --storage DIR`: the directory, `tahoe.cfg` and every identity file, so the
/// announcement is known before the first run. Refuses a non-empty directory (as Tahoe does).
pub fn create_node(dir: &Path, opts: &CreateOptions) -> Result<NodeFiles, NodeDirError> {
    if let Ok(mut entries) = fs::read_dir(dir) {
        if entries.next().is_some() {
            return Err(NodeDirError::NotEmpty(dir.to_path_buf()));
        }
    }
    let tcp = opts.hostname.is_some() || opts.port.is_some() || opts.location.is_some();
    let (mut tub_port, mut tub_location) = if !tcp && opts.onion {
        (String::new(), String::new())
    } else {
        tcp_port_location(opts)?
    };
    let mut tor_section = String::new();
    if opts.onion {
        let (port, location, section) = onion_create(dir)?;
        for (list, item) in [(&mut tub_port, port), (&mut tub_location, location)] {
            if !list.is_empty() {
                list.push(',');
            }
            list.push_str(&item);
        }
        tor_section = section;
    }
    let nickname = opts.nickname.clone().unwrap_or_default();
    check_cfg_value("--nickname", &nickname)?;
    let webport = match opts.webport.as_deref() {
        None => "tcp:3456:interface=127.0.0.1".to_string(),
        Some("none") => String::new(),
        Some(w) => w.to_string(),
    };
    check_cfg_value("--webport", &webport)?;
    let reserved = opts.reserved_space.clone().unwrap_or_else(|| "1G".into());
    check_cfg_value("--reserved-space", &reserved)?;
    let mut cfg = storage_node_cfg(&nickname, &webport, &tub_port, &tub_location, &reserved);
    cfg.push_str(&tor_section);
    // Validate what we wrote with the same parser `lafs run` uses.
    let parsed = NodeConfig::parse(&cfg).map_err(crate::config::ConfigError::Cfg)?;
    ensure_private_dir(dir)?;
    write_atomic(&dir.join("tahoe.cfg"), cfg.as_bytes(), false)?;
    NodeFiles::ensure(dir, &parsed)
}

/// The onion part of `create-node --listen=tor`: writes the key file and returns the
/// `tub.port` entry, the `tub.location` hint and the `[tor]` section.
#[cfg(feature = "tor")]
fn onion_create(dir: &Path) -> Result<(String, String, String), NodeDirError> {
    use crate::config::tor::ONION_KEY_FILE;
    let key = super::onion::OnionKey::load_or_create(&dir.join(ONION_KEY_FILE), true)?;
    let local = allocate_tcp_port()?;
    let section = format!(
        "\n[tor]\n\
         # lafs hosts the onion service in-process with arti (`launch` is for `tahoe run`).\n\
         launch = true\n\
         onion = true\n\
         onion.local_port = {local}\n\
         onion.external_port = {ONION_EXTERNAL_PORT}\n\
         onion.private_key_file = {ONION_KEY_FILE}\n"
    );
    Ok((
        format!("tcp:{local}:interface=127.0.0.1"),
        format!("tor:{}:{ONION_EXTERNAL_PORT}", key.onion_address()),
        section,
    ))
}

#[cfg(not(feature = "tor"))]
fn onion_create(_dir: &Path) -> Result<(String, String, String), NodeDirError> {
    Err(NodeDirError::OnionNeedsTor)
}

/// `tub.port` and `tub.location` from `--hostname`, or `--port` with `--location`.
fn tcp_port_location(opts: &CreateOptions) -> Result<(String, String), NodeDirError> {
    Ok(match (&opts.hostname, &opts.port, &opts.location) {
        (Some(h), None, None) => {
            check_cfg_value("--hostname", h)?;
            let port = allocate_tcp_port()?;
            (format!("tcp:{port}"), format!("tcp:{h}:{port}"))
        }
        (None, Some(p), Some(l)) => {
            check_cfg_value("--port", p)?;
            check_cfg_value("--location", l)?;
            (p.clone(), l.clone())
        }
        (Some(_), _, _) => {
            return Err(NodeDirError::Option(
                "--hostname cannot be combined with --port/--location".into(),
            ))
        }
        _ => {
            return Err(NodeDirError::Option(
                "give --hostname, or both --port and --location".into(),
            ))
        }
    })
}

/// The identity of a storage node, loaded from (and completed in) its directory.
pub struct NodeFiles {
    pub basedir: PathBuf,
    pub identity: NodeIdentity,
    swissnum: String,
    /// The Ed25519 public key (the server id is `v0-` + its base32).
    pub node_pubkey: [u8; 32],
    /// `permutation-seed` (base32 text).
    pub permutation_seed: String,
    /// The `tub.location` hints, verbatim, plus the hosted onion service's (see
    /// [`NodeFiles::onion`]).
    pub location_hints: Vec<String>,
    pub nickname: String,
    /// The onion service to host (`[tor] onion = true`).
    #[cfg(feature = "tor")]
    pub onion: Option<OnionService>,
}

impl std::fmt::Debug for NodeFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeFiles")
            .field("basedir", &self.basedir)
            .field("tub_id", &self.identity.tub_id())
            .field("server_id", &self.server_id())
            .finish_non_exhaustive()
    }
}

/// Parses `priv-v0-<base32 32-byte seed>`.
fn parse_privkey(text: &str) -> Option<[u8; 32]> {
    base32::decode_array::<32>(text.trim().strip_prefix("priv-v0-")?)
}

fn ed25519_public(seed: &[u8; 32]) -> Result<[u8; 32], NodeDirError> {
    let pair = ring::signature::Ed25519KeyPair::from_seed_unchecked(seed)
        .map_err(|_| NodeDirError::BadNodeKey)?;
    pair.public_key()
        .as_ref()
        .try_into()
        .map_err(|_| NodeDirError::BadNodeKey)
}

/// Tahoe's "this server already has shares": any bucket under `storage/shares/`.
fn have_shares(storage_dir: &Path) -> bool {
    let Ok(prefixes) = fs::read_dir(storage_dir.join("shares")) else {
        return false;
    };
    prefixes.flatten().any(|p| {
        p.file_name().len() == 2 && fs::read_dir(p.path()).is_ok_and(|mut b| b.next().is_some())
    })
}

/// The storage directory of a node (`[storage]storage_dir`, default `storage`, relative to the
/// node directory).
pub fn storage_dir(basedir: &Path, config: &NodeConfig) -> PathBuf {
    let rel = config
        .storage
        .as_ref()
        .and_then(|s| s.storage_dir.clone())
        .unwrap_or_else(|| "storage".into());
    basedir.join(rel)
}

/// The `tub.location` hints; `AUTO` (Tahoe's default) becomes `tcp:127.0.0.1:PORT` for each
/// listening port (Tahoe would announce every local address; lafs announces loopback only).
///
/// With `[node] reveal-IP-address = false` a hint that gives an address away is refused, as
/// Tahoe refuses to start such a node (its `PrivacyError`): `AUTO`, and any TCP hint, whether
/// written `tcp:HOST:PORT` or in Foolscap's legacy form `HOST:PORT`.
pub fn location_hints(config: &NodeConfig) -> Result<Vec<String>, NodeDirError> {
    let loc = config
        .node
        .tub_location
        .clone()
        .unwrap_or_else(|| "AUTO".into());
    let reveal_ip = config
        .ini
        .get_bool("node", "reveal-ip-address")
        .map_err(|_| NodeDirError::Option("[node]reveal-IP-address is not a boolean".into()))?
        .unwrap_or(true);
    let mut hints = Vec::new();
    for h in loc.split(',').map(str::trim).filter(|h| !h.is_empty()) {
        if !reveal_ip && (h == "AUTO" || is_tcp_hint(h)) {
            return Err(NodeDirError::RevealsAddress(if h == "AUTO" {
                "AUTO"
            } else {
                "a tcp: hint"
            }));
        }
        if h == "AUTO" {
            for l in listen_addrs(config)? {
                hints.push(format!("tcp:127.0.0.1:{}", l.port()));
            }
        } else {
            hints.push(h.to_string());
        }
    }
    Ok(hints)
}

/// Whether a connection hint is a TCP one: `tcp:...`, or Foolscap's legacy `HOST:PORT` (a hint
/// of exactly two colon-separated parts, the second all digits, means `tcp:HOST:PORT`).
fn is_tcp_hint(hint: &str) -> bool {
    if hint.starts_with("tcp:") {
        return true;
    }
    match hint.split_once(':') {
        Some((host, port)) => {
            !host.is_empty()
                && !host.contains(':')
                && !port.is_empty()
                && port.bytes().all(|b| b.is_ascii_digit())
        }
        None => false,
    }
}

/// The addresses of `tub.port`: `tcp:PORT[:interface=IP]`, or a bare `PORT`, comma-separated.
pub fn listen_addrs(config: &NodeConfig) -> Result<Vec<SocketAddr>, NodeDirError> {
    let spec = config
        .node
        .tub_port
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .ok_or(NodeDirError::NoTubPort)?;
    spec.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(parse_endpoint)
        .collect()
}

fn parse_endpoint(ep: &str) -> Result<SocketAddr, NodeDirError> {
    let bad = || NodeDirError::BadTubPort(ep.to_string());
    // Twisted's endpoint syntax escapes colons in values (`interface=\:\:1`); NUL cannot
    // occur in tahoe.cfg values, so it stands in for an escaped colon while splitting.
    let unescaped = ep.replace("\\:", "\0");
    let parts: Vec<String> = unescaped.split(':').map(|p| p.replace('\0', ":")).collect();
    let mut parts = parts.iter().map(String::as_str);
    let first = parts.next().ok_or_else(bad)?;
    let (port_text, rest): (&str, Vec<&str>) = if first == "tcp" {
        let p = parts.next().ok_or_else(bad)?;
        (p, parts.collect())
    } else {
        (first, parts.collect())
    };
    let port_text = port_text.strip_prefix("port=").unwrap_or(port_text);
    let port: u16 = port_text.parse().map_err(|_| bad())?;
    let mut ip = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
    for kv in rest {
        match kv.split_once('=') {
            Some(("interface", v)) => ip = v.parse().map_err(|_| bad())?,
            Some(("backlog", _)) => {}
            _ => return Err(bad()),
        }
    }
    Ok(SocketAddr::new(ip, port))
}

/// `(host, port)` of a `tcp:HOST:PORT` hint (IPv6 hosts in brackets); `None` for other kinds.
pub fn tcp_hint(hint: &str) -> Option<(String, u16)> {
    let rest = hint.strip_prefix("tcp:")?;
    let (host, port) = rest.rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    (!host.is_empty()).then(|| (host.to_string(), port))
}

impl NodeFiles {
    /// Loads the node's identity files, creating the missing ones as `tahoe run` would
    /// (certificate, swissnum, Ed25519 key, `my_nodeid`, `permutation-seed`).
    pub fn ensure(basedir: &Path, config: &NodeConfig) -> Result<NodeFiles, NodeDirError> {
        Self::open(basedir, config, true)
    }

    /// Loads the node's identity files without writing anything; a missing file is an error
    /// (a Tahoe node directory that has never been run has none yet).
    pub fn load(basedir: &Path, config: &NodeConfig) -> Result<NodeFiles, NodeDirError> {
        Self::open(basedir, config, false)
    }

    fn open(basedir: &Path, config: &NodeConfig, create: bool) -> Result<NodeFiles, NodeDirError> {
        let private = basedir.join("private");
        let missing = |p: &Path| NodeDirError::Io {
            path: p.to_path_buf(),
            source: std::io::ErrorKind::NotFound.into(),
        };
        if create {
            ensure_private_dir(basedir)?;
        }

        let pem_path = private.join("node.pem");
        let identity = match read_optional(&pem_path)? {
            Some(pem) => {
                NodeIdentity::from_pem(&pem).map_err(|_| NodeDirError::BadFile(pem_path.clone()))?
            }
            None if !create => return Err(missing(&pem_path)),
            None => {
                let id = NodeIdentity::generate()?;
                write_atomic(&pem_path, id.to_pem().as_bytes(), true)?;
                id
            }
        };
        let tub_id = identity.tub_id();
        if create {
            write_atomic(
                &basedir.join("my_nodeid"),
                format!("{tub_id}\n").as_bytes(),
                false,
            )?;
        }

        let key_path = private.join("node.privkey");
        let seed = match read_optional_text(&key_path)? {
            Some(t) => parse_privkey(&t).ok_or_else(|| NodeDirError::BadFile(key_path.clone()))?,
            None if !create => return Err(missing(&key_path)),
            None => {
                let mut seed = [0u8; 32];
                rand::rngs::OsRng.fill_bytes(&mut seed);
                let text = format!("priv-v0-{}\n", base32::encode(&seed));
                write_atomic(&key_path, text.as_bytes(), true)?;
                seed
            }
        };
        let node_pubkey = ed25519_public(&seed)?;
        if create {
            write_atomic(
                &basedir.join("node.pubkey"),
                format!("pub-v0-{}\n", base32::encode(&node_pubkey)).as_bytes(),
                false,
            )?;
        }

        let seed_path = basedir.join("permutation-seed");
        let permutation_seed = match read_optional_text(&seed_path)? {
            Some(s) => s,
            None if !create => return Err(missing(&seed_path)),
            None => {
                let s = if have_shares(&storage_dir(basedir, config)) {
                    tub_id.clone()
                } else {
                    base32::encode(&node_pubkey)
                };
                write_atomic(&seed_path, format!("{s}\n").as_bytes(), false)?;
                s
            }
        };

        let mut location_hints = location_hints(config)?;
        #[allow(clippy::let_unit_value)]
        let onion = onion_service(basedir, config, create, &mut location_hints)?;
        let furl_path = private.join("storage.furl");
        let old = read_optional_text(&furl_path)?;
        let swissnum = match old.as_deref().map(Furl::parse) {
            Some(Ok(f)) => f.swissnum().to_string(),
            Some(Err(_)) => return Err(NodeDirError::BadFile(furl_path)),
            None if !create => return Err(missing(&furl_path)),
            None => {
                // Foolscap's swissnums: 160 random bits in base32.
                let mut raw = [0u8; 20];
                rand::rngs::OsRng.fill_bytes(&mut raw);
                base32::encode(&raw)
            }
        };
        let files = NodeFiles {
            basedir: basedir.to_path_buf(),
            identity,
            swissnum,
            node_pubkey,
            permutation_seed,
            location_hints,
            nickname: config.node.nickname.clone(),
            #[cfg(feature = "tor")]
            onion,
        };
        #[cfg(not(feature = "tor"))]
        let () = onion;
        let furl = files.furl();
        if create && old.as_deref() != Some(furl.as_str()) {
            write_atomic(&furl_path, format!("{furl}\n").as_bytes(), true)?;
        }
        Ok(files)
    }

    /// The storage swissnum (a secret).
    pub fn swissnum(&self) -> &str {
        &self.swissnum
    }

    /// `v0-<base32 Ed25519 public key>`: the server id in `servers.yaml`.
    pub fn server_id(&self) -> String {
        format!("v0-{}", base32::encode(&self.node_pubkey))
    }

    /// `pb://TUBID@HINTS/SWISSNUM` (a secret).
    pub fn furl(&self) -> String {
        format!(
            "pb://{}@{}/{}",
            self.identity.tub_id(),
            self.location_hints.join(","),
            self.swissnum
        )
    }

    /// One NURL per `tcp:` location hint, `pb://PIN@HOST:PORT/SWISSNUM#v=1`, and per `tor:` hint,
    /// `pb+tor://PIN@ONION:PORT/SWISSNUM#v=1` (secrets).
    pub fn nurls(&self) -> Result<Vec<String>, NodeDirError> {
        let pin = self.identity.pin()?;
        let nurls: Vec<String> = self
            .location_hints
            .iter()
            .filter_map(|h| {
                // One NURL per `tcp:`/`tor:` hint, as Tahoe makes them; Tor ones are `pb+tor`.
                tcp_hint(h).map(|hp| ("pb", hp)).or_else(|| {
                    h.strip_prefix("tor:")
                        .and_then(|r| tcp_hint(&format!("tcp:{r}")))
                        .map(|hp| ("pb+tor", hp))
                })
            })
            .map(|(scheme, (host, port))| {
                format!("{scheme}://{pin}@{host}:{port}/{}#v=1", self.swissnum)
            })
            .collect();
        if nurls.is_empty() {
            return Err(NodeDirError::NoLocation);
        }
        Ok(nurls)
    }

    /// The `servers.yaml` entry announcing this server (Tahoe's announcement keys).
    pub fn servers_yaml(&self) -> Result<ServersYaml, NodeDirError> {
        let mut other = std::collections::BTreeMap::new();
        other.insert(
            "my-version".to_string(),
            serde_yaml::Value::String(super::backend::APPLICATION_VERSION.to_string()),
        );
        let ann = Announcement {
            nickname: Some(self.nickname.clone()),
            anonymous_storage_furl: Some(self.furl()),
            anonymous_storage_nurls: Some(self.nurls()?),
            permutation_seed_base32: Some(self.permutation_seed.clone()),
            other,
        };
        let mut y = ServersYaml::default();
        y.storage.insert(
            self.server_id(),
            StaticServer {
                ann,
                connections: None,
                other: Default::default(),
            },
        );
        Ok(y)
    }

    /// [`NodeFiles::servers_yaml`] as text.
    pub fn announcement_yaml(&self) -> Result<String, NodeDirError> {
        self.servers_yaml()?
            .to_yaml_string()
            .map_err(|_| NodeDirError::Option("servers.yaml serialization failed".into()))
    }

    /// Writes `private/storage.nurl` (one NURL per line) and `private/announcement.yaml`.
    pub fn write_announcement(&self) -> Result<(), NodeDirError> {
        let private = self.basedir.join("private");
        let mut nurls = self.nurls()?.join("\n");
        nurls.push('\n');
        write_atomic(&private.join("storage.nurl"), nurls.as_bytes(), true)?;
        let mut yaml = self.announcement_yaml()?;
        yaml.push('\n');
        write_atomic(&private.join("announcement.yaml"), yaml.as_bytes(), true)
    }
}
