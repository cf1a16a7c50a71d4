//! The client side of a node directory: what every file verb (`put`, `get`, `ls`, `mkdir`,
//! `ln`, `mv`, `rm`) needs before it touches the grid.
//!
//! [`Grid::open`] loads the node directory (`-d`, default `~/.tahoe` as tahoe's), makes one
//! HTTPS [`StorageClient`] per server of `private/servers.yaml` that announces a NURL, and builds
//! the mutable and directory clients with the encoding parameters of `tahoe.cfg` `[client]`.
//! Servers that cannot be used (no NURL, a bad announcement) are skipped with a warning, as Tahoe
//! skips them; connections are made lazily by the storage client, so an unreachable server only
//! costs a timeout when an operation needs it.
//!
//! Tor: a server whose every NURL is `pb+tor://` (or names a `.onion` host) can only be reached
//! through Tor. With the cargo feature `tor` it is dialled through the grid's one arti client
//! ([`Transport::for_node_dir`]: `[connections]`, `[tor]`, `private/arti.toml`); in a build
//! without it, or with `[tor] enabled = false`, it is skipped with a warning that says so, and
//! when no other server is left [`Grid::open`] fails with [`TOR_UNAVAILABLE`] rather than letting
//! a later operation fail for want of servers. A server that also announces a plain `pb://`
//! NURL is used through that one.
//!
//! Invariant: a write verb succeeds only when [`Grid::check_mutable_happiness`] (or the
//! immutable uploader's own check) says the shares it wrote meet `shares.happy`; nothing is left
//! to a background process.

use anyhow::{bail, Context};
use lafs::cap::MutableFormat;
use lafs::client::directory::DirectoryClient;
use lafs::client::mutable::{MutableClient, MutableParams};
use lafs::client::{ServerHandle, ServerSet};
use lafs::config::NodeDir;
use lafs::grid::furl::{Nurl, NurlScheme};
use lafs::grid::server::StorageServerDesc;
use lafs::grid::servers_from_yaml;
use lafs::mutable::keys::KeyPool;
use lafs::mutable::publish::PublishOutcome;
use lafs::protocol::client::{ClientOptions, StorageClient, Transport};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The default node directory: `~/.tahoe`.
pub fn default_node_dir() -> PathBuf {
    match std::env::var_os("HOME") {
        Some(home) => PathBuf::from(home).join(".tahoe"),
        None => PathBuf::from(".tahoe"),
    }
}

/// What is said of a server (or a grid) that only Tor reaches when Tor cannot be used: in a
/// build with Tor only `[tor] enabled = false` turns it off, so that is what is said there.
#[cfg(feature = "tor")]
pub const TOR_UNAVAILABLE: &str = "Tor is disabled in tahoe.cfg ([tor] enabled = false)";
#[cfg(not(feature = "tor"))]
pub const TOR_UNAVAILABLE: &str =
    "Tor support is not available in this build (it needs the cargo feature `tor`)";

/// Why a server announcement cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unusable {
    /// No NURL at all: a Foolscap-only server.
    NoNurl,
    /// Every NURL needs Tor (`pb+tor://`, or a `.onion` host).
    TorOnly,
}

impl std::fmt::Display for Unusable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unusable::NoNurl => f.write_str("it announces no NURL (Foolscap is not supported)"),
            Unusable::TorOnly => write!(f, "it is reachable only through Tor: {TOR_UNAVAILABLE}"),
        }
    }
}

fn needs_tor(n: &Nurl) -> bool {
    n.scheme() == NurlScheme::PbTor
        || n.host()
            .trim_end_matches('.')
            .to_ascii_lowercase()
            .ends_with(".onion")
}

/// The NURL to reach `desc` with: the first one that needs no Tor, else (when `tor` says Tor
/// can be dialled) the first Tor one.
pub fn usable_nurl(desc: &StorageServerDesc, tor: bool) -> Result<&Nurl, Unusable> {
    if desc.nurls.is_empty() {
        return Err(Unusable::NoNurl);
    }
    desc.nurls
        .iter()
        .find(|n| !needs_tor(n))
        .or_else(|| desc.nurls.iter().find(|_| tor))
        .ok_or(Unusable::TorOnly)
}

/// A loaded node directory with its grid connections.
pub struct Grid {
    pub node: NodeDir,
    pub servers: ServerSet,
    pub dirs: DirectoryClient,
    /// `shares.needed`, `shares.happy`, `shares.total`.
    pub needed: u16,
    pub happy: u16,
    pub total: u16,
    /// `[client]mutable.format`: the format of new mutable files without `--format`.
    pub mutable_format: MutableFormat,
    /// `private/secret`, raw.
    pub lease_secret: [u8; 32],
    /// `private/convergence`, raw.
    pub convergence: Vec<u8>,
}

impl Grid {
    /// Loads `basedir` and prepares a client for each of its servers. Must run inside a tokio
    /// runtime (the storage clients spawn their connection tasks there).
    pub fn open(basedir: &Path) -> anyhow::Result<Grid> {
        if !basedir.is_dir() {
            bail!("node directory {} does not exist", basedir.display());
        }
        let node = NodeDir::load(basedir)
            .with_context(|| format!("loading node directory {}", basedir.display()))?;
        let (descs, bad) = servers_from_yaml(&node.servers);
        for (id, e) in bad {
            eprintln!("lafs: warning: skipping server {id}: {e}");
        }
        // One transport (and so at most one lazily bootstrapped Tor client) for the grid.
        let transport = Transport::for_node_dir(&node)?;
        let mut handles = Vec::new();
        let mut tor_only = 0usize;
        for desc in descs {
            let nurl = match usable_nurl(&desc, transport.tor_available()) {
                Ok(n) => n.to_string(),
                Err(why) => {
                    tor_only += usize::from(why == Unusable::TorOnly);
                    eprintln!("lafs: warning: skipping server {}: {why}", desc.server_id);
                    continue;
                }
            };
            match StorageClient::with_transport(&nurl, ClientOptions::default(), &transport) {
                Ok(client) => handles.push(Arc::new(ServerHandle { desc, client })),
                Err(e) => eprintln!("lafs: warning: skipping server {}: {e}", desc.server_id),
            }
        }
        if handles.is_empty() && tor_only > 0 {
            bail!(
                "no usable storage server: {tor_only} server(s) in private/servers.yaml are reachable only through Tor (pb+tor:// or .onion), and {TOR_UNAVAILABLE}"
            );
        }
        let servers = ServerSet { servers: handles };
        let c = &node.config.client;
        let (needed, happy, total) = (c.shares_needed, c.shares_happy, c.shares_total);
        let params = MutableParams {
            k: u8::try_from(needed).context("shares.needed is above 255")?,
            n: u8::try_from(total).context("shares.total is above 255")?,
        };
        let mutable_format = match c.mutable_format {
            lafs::config::tahoe_cfg::MutableFormat::Sdmf => MutableFormat::Sdmf,
            lafs::config::tahoe_cfg::MutableFormat::Mdmf => MutableFormat::Mdmf,
        };
        let lease_secret = lease_secret(&node)?;
        let convergence = convergence(&node)?;
        // No background key generation: a command creates at most a few files.
        let files = MutableClient::new(
            servers.clone(),
            lease_secret,
            params,
            Arc::new(KeyPool::new(0)),
        )
        .with_preferred(c.peers_preferred.clone());
        Ok(Grid {
            node,
            servers,
            dirs: DirectoryClient::new(files),
            needed,
            happy,
            total,
            mutable_format,
            lease_secret,
            convergence,
        })
    }

    /// The immutable encoding parameters of tahoe.cfg.
    pub fn encoding_params(&self) -> lafs::immutable::EncodingParams {
        lafs::immutable::EncodingParams {
            needed: usize::from(self.needed),
            happy: usize::from(self.happy),
            total: usize::from(self.total),
            max_segment_size: self.node.config.client.max_segment_size,
        }
    }

    pub fn files(&self) -> &MutableClient {
        self.dirs.files()
    }

    /// Fails unless the shares a mutable publish wrote reach `shares.happy` distinct servers
    /// (servers-of-happiness of the written placement).
    pub fn check_mutable_happiness(&self, out: &PublishOutcome) -> anyhow::Result<()> {
        let mut map: BTreeMap<u16, BTreeSet<usize>> = BTreeMap::new();
        for &(server, shnum) in &out.written {
            if let Ok(sh) = u16::try_from(shnum) {
                map.entry(sh).or_default().insert(server);
            }
        }
        let h = lafs::grid::servers_of_happiness(&map);
        if h < usize::from(self.happy) {
            bail!(
                "shares were placed on only {h} servers, fewer than shares.happy={} (the grid has {} usable servers)",
                self.happy,
                self.servers.servers.len()
            );
        }
        Ok(())
    }
}

/// The 32-byte lease secret of `private/secret`, created as Tahoe's node does on first start
/// (32 random bytes, base32 and a newline) when the directory has none, so that later runs
/// renew the same leases.
fn lease_secret(node: &NodeDir) -> anyhow::Result<[u8; 32]> {
    get_or_create(node, node.lease_secret.as_ref(), "secret")?
        .as_slice()
        .try_into()
        .map_err(|_| anyhow::anyhow!("private/secret is not a 32-byte secret"))
}

/// `private/convergence`, created as Tahoe's node does (32 random bytes) when missing.
fn convergence(node: &NodeDir) -> anyhow::Result<Vec<u8>> {
    get_or_create(node, node.convergence.as_ref(), "convergence")
}

/// Tahoe's `get_or_create_private_config` for a 32-byte secret.
fn get_or_create(
    node: &NodeDir,
    existing: Option<&lafs::config::Secret>,
    file: &str,
) -> anyhow::Result<Vec<u8>> {
    if let Some(s) = existing {
        return Ok(s.as_bytes().to_vec());
    }
    let fresh: [u8; 32] = rand::random();
    let secret = lafs::config::Secret::from_bytes(fresh.to_vec());
    let path = node.basedir.join("private").join(file);
    lafs::server::nodedir::ensure_private_dir(&node.basedir)?;
    std::fs::write(&path, secret.to_file_text())
        .with_context(|| format!("creating {}", path.display()))?;
    Ok(fresh.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PIN: &str = "1d1p0hVVI2uSXvHOkvmm9szyeNlLoSAhOcOyDnhrGPM";
    const SWISS: &str = "eiu2i7p6d6mm4ihmss7ieou5hac3wn6b";

    fn desc(nurls: &[String]) -> StorageServerDesc {
        StorageServerDesc {
            server_id: "v0-test".into(),
            nickname: "test".into(),
            furl: None,
            nurls: nurls
                .iter()
                .map(|n| Nurl::parse(n).expect("NURL"))
                .collect(),
            permutation_seed: vec![0; 32],
            lease_seed: [0; 20],
        }
    }

    #[test]
    fn tor_nurls_are_recognised_and_refused_clearly() {
        let tor = format!("pb+tor://{PIN}@abcdefghij234567.onion:80/{SWISS}#v=1");
        let onion = format!("pb://{PIN}@abcdefghij234567.onion:80/{SWISS}#v=1");
        let tcp = format!("pb://{PIN}@127.0.0.1:8098/{SWISS}#v=1");
        assert_eq!(usable_nurl(&desc(&[]), false), Err(Unusable::NoNurl));
        assert_eq!(usable_nurl(&desc(&[]), true), Err(Unusable::NoNurl));
        assert_eq!(
            usable_nurl(&desc(std::slice::from_ref(&tor)), false),
            Err(Unusable::TorOnly)
        );
        assert_eq!(
            usable_nurl(&desc(&[tor.clone(), onion.clone()]), false),
            Err(Unusable::TorOnly)
        );
        // With Tor available, the first Tor NURL is used.
        assert_eq!(
            usable_nurl(&desc(&[tor.clone(), onion]), true).map(|n| n.to_string()),
            Ok(tor.clone())
        );
        // A server that also announces a direct NURL is used through it, Tor or not.
        let d = desc(&[tor, tcp.clone()]);
        assert_eq!(
            usable_nurl(&d, false).map(|n| n.to_string()),
            Ok(tcp.clone())
        );
        assert_eq!(usable_nurl(&d, true).map(|n| n.to_string()), Ok(tcp));
        let msg = Unusable::TorOnly.to_string();
        let why = if cfg!(feature = "tor") {
            "[tor] enabled = false"
        } else {
            "not available in this build"
        };
        assert!(msg.contains(why), "{msg}");
    }

    /// A node directory whose servers.yaml lists only a Tor server fails to open with the Tor
    /// message, not later with "no servers".
    #[test]
    fn a_grid_of_tor_servers_fails_with_the_tor_message() {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir_all(dir.path().join("private")).expect("private/");
        std::fs::write(
            dir.path().join("tahoe.cfg"),
            // `[tor] enabled = false`: with the `tor` feature such a grid would open.
            "[node]\nnickname = t\n[client]\nshares.needed = 1\nshares.happy = 1\nshares.total = 1\n[tor]\nenabled = false\n",
        )
        .expect("tahoe.cfg");
        let yaml = format!(
            "storage:\n  v0-aaaa:\n    ann:\n      nickname: tor\n      anonymous-storage-FURL: pb://aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa@tor:abcdefghij234567.onion:80/{SWISS}\n      permutation-seed-base32: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\n      anonymous-storage-NURLs:\n      - pb+tor://{PIN}@abcdefghij234567.onion:80/{SWISS}#v=1\n"
        );
        std::fs::write(dir.path().join("private/servers.yaml"), yaml).expect("servers.yaml");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let err = rt
            .block_on(async { Grid::open(dir.path()).map(|_| ()) })
            .expect_err("a Tor-only grid must not open");
        let msg = format!("{err:#}");
        assert!(msg.contains(TOR_UNAVAILABLE), "{msg}");
    }
}
