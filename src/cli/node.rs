//! `lafs create-node`, `lafs run` and `lafs announcement`: the storage node commands.
//!
//! `run` logs with `tracing` to stderr (`RUST_LOG` overrides the `info` default) and prints the
//! announcement on stdout once the node listens: `server-id:`, `furl:` and one `nurl:` line per
//! NURL, then `ready`. Those lines carry the swissnum, which is why they go to stdout for the
//! operator (like Tahoe's `private/storage.furl`) and never into the log.

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use lafs::server::nodedir::{create_node, CreateOptions, NodeFiles};
use lafs::server::service::{self, SHUTDOWN_GRACE};

#[derive(Subcommand, Debug)]
pub enum NodeCommand {
    /// Create a Tahoe-compatible storage node directory.
    CreateNode(CreateNodeArgs),
    /// Run the storage node of a node directory (lafs- or Tahoe-created) until SIGINT/SIGTERM;
    /// with `[tor] onion = true` (feature `tor`) it also hosts its onion service in-process.
    Run(DirArgs),
    /// Print the node's servers.yaml entry (`storage: {server-id: {ann: ...}}`).
    Announcement(DirArgs),
}

#[derive(Args, Debug)]
pub struct CreateNodeArgs {
    /// Provide storage service (the only kind of node lafs creates; accepted for Tahoe parity).
    #[arg(long, default_value_t = true)]
    pub storage: bool,
    /// Hostname or IP address to announce; a free port is allocated.
    #[arg(long, conflicts_with_all = ["port", "location"])]
    pub hostname: Option<String>,
    /// The tub.port endpoint, e.g. tcp:3457:interface=127.0.0.1 (needs --location).
    #[arg(long, requires = "location")]
    pub port: Option<String>,
    /// The tub.location hints, e.g. tcp:example.net:3457 (needs --port).
    #[arg(long, requires = "port")]
    pub location: Option<String>,
    /// Tahoe's `--listen` (comma-separated `tcp`, `tor`; `i2p` is not supported). `tor` (cargo
    /// feature `tor`) makes an onion service that `lafs run` hosts in-process with arti: it
    /// writes the key to private/tor_onion.privkey and `[tor] onion = true` with Tahoe's
    /// `onion.*` options, and announces `tor:ONION.onion:3457` (a `pb+tor://` NURL). Tor
    /// settings (e.g. a private network) go in private/arti.toml. `--listen=tor` alone needs no
    /// --hostname/--port/--location; `--listen=tcp,tor` announces both.
    #[arg(long, default_value = "tcp")]
    pub listen: String,
    #[arg(long)]
    pub nickname: Option<String>,
    /// The web.port written to tahoe.cfg (`none` for none); lafs itself serves no web UI.
    #[arg(long)]
    pub webport: Option<String>,
    /// [storage]reserved_space (default 1G, as Tahoe's create-node).
    #[arg(long)]
    pub reserved_space: Option<String>,
    /// The node directory.
    pub dir: PathBuf,
}

#[derive(Args, Debug)]
pub struct DirArgs {
    /// The node directory.
    pub dir: PathBuf,
}

pub fn run(cmd: NodeCommand) -> anyhow::Result<()> {
    match cmd {
        NodeCommand::CreateNode(a) => {
            let (mut tcp, mut onion) = (false, false);
            for l in a.listen.split(',').map(str::trim) {
                match l {
                    "tcp" => tcp = true,
                    "tor" if cfg!(feature = "tor") => onion = true,
                    "tor" => anyhow::bail!(
                        "--listen=tor needs lafs built with the cargo feature `tor` (or run a Tor onion service with HiddenServicePort VIRTPORT 127.0.0.1:PORT and create the node with --port=tcp:PORT:interface=127.0.0.1 --location=tor:ONION.onion:VIRTPORT)"
                    ),
                    other => anyhow::bail!("--listen={other} is not supported (tcp, tor)"),
                }
            }
            if !tcp && (a.hostname.is_some() || a.port.is_some()) {
                anyhow::bail!("--hostname/--port/--location need --listen to include tcp");
            }
            let opts = CreateOptions {
                nickname: a.nickname,
                hostname: a.hostname,
                port: a.port,
                location: a.location,
                webport: a.webport,
                reserved_space: a.reserved_space,
                onion,
            };
            let files = create_node(&a.dir, &opts)
                .with_context(|| format!("creating a node in {}", a.dir.display()))?;
            let mut out = std::io::stdout().lock();
            writeln!(out, "Node created in {}", a.dir.display())?;
            writeln!(out, "server-id: {}", files.server_id())?;
            writeln!(out, "Run it with: lafs run {}", a.dir.display())?;
            Ok(())
        }
        NodeCommand::Announcement(a) => {
            let node = lafs::config::NodeDir::load(&a.dir)
                .with_context(|| format!("loading {}", a.dir.display()))?;
            let files = NodeFiles::load(&a.dir, &node.config)
                .context("the node has not been created or run yet")?;
            writeln!(std::io::stdout().lock(), "{}", files.announcement_yaml()?)?;
            Ok(())
        }
        NodeCommand::Run(a) => {
            init_tracing();
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("starting the async runtime")?;
            let res = rt.block_on(service::run(a.dir.clone(), |started| {
                use std::io::Write as _;
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "server-id: {}", started.files.server_id());
                let _ = writeln!(out, "furl: {}", started.files.furl());
                for n in started.files.nurls().unwrap_or_default() {
                    let _ = writeln!(out, "nurl: {n}");
                }
                let _ = writeln!(out, "ready");
                let _ = out.flush();
            }));
            rt.shutdown_timeout(SHUTDOWN_GRACE);
            res.with_context(|| format!("running the node in {}", a.dir.display()))?;
            tracing::info!("stopped");
            Ok(())
        }
    }
}

/// Logs (warnings, upload errors) to stderr: a mount daemon's stderr is `logs/mount.log`.
pub(super) fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}
