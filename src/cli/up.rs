//! `lafs up [DIR] [--servers N] [--mountpoint PATH] [-o OPTIONS]`: a local grid, mounted.
//!
//! In one foreground process: N storage servers (the same code as `lafs run`,
//! [`lafs::server::service::start`]) on loopback TLS ports, each storing under `DIR/storageI`;
//! a client node directory `DIR/client` whose `private/servers.yaml` lists them and whose
//! `private/aliases` holds the root directory as `tahoe:`; and the mount of `tahoe:` at
//! `DIR/mnt` (the same code as `lafs mount`, [`super::mount::serve`]).
//!
//! Re-running with the same DIR reuses everything: the node directories (their identities,
//! ports and shares), the client's secrets and root cap, and the mount's cache (pending uploads
//! of an interrupted run go up now). `--servers` only matters when DIR is new.
//!
//! SIGINT/SIGTERM unmount (the filesystem uploads what is pending first, while the servers
//! still run), then stop the servers. An unmount from outside (`lafs umount`) leaves the grid
//! running until the signal, so `lafs -d DIR/client ...` keeps working.
//!
//! The client node directory is also a Tahoe 1.20 client node directory (tahoe.cfg with a web
//! port on loopback, no Tub): `tahoe run DIR/client` then `tahoe -d DIR/client ls tahoe:`.

use super::grid::Grid;
use super::mount::{self, Ended, Stopper};
use anyhow::{bail, Context};
use clap::Args;
use lafs::cap::MutableFormat;
use lafs::config::ServersYaml;
use lafs::server::nodedir::{create_node, write_atomic, CreateOptions};
use lafs::server::service::{self, RunningNode};
use std::path::{Path, PathBuf};

#[derive(Args, Debug)]
pub struct UpArgs {
    /// Where the grid lives (default ~/lafs-demo): storageI/, client/, mnt/.
    pub dir: Option<PathBuf>,
    /// How many storage servers a new grid gets.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=32))]
    pub servers: u16,
    /// Mount here instead of DIR/mnt.
    #[arg(long)]
    pub mountpoint: Option<PathBuf>,
    /// Mount options, as for `lafs mount` (cache-size=, write-back-delay=, ...).
    #[arg(short = 'o', value_name = "OPTIONS")]
    pub options: Vec<String>,
}

/// The client's encoding for `n` servers: every server holds one share, any half (rounded
/// up) of them can rebuild a file, and an upload needs all of them (a local grid has them all).
pub fn encoding(n: u16) -> (u16, u16, u16) {
    let n = n.max(1);
    (n.div_ceil(2), n, n)
}

/// A free loopback TCP port (bound and released: the node binds it again moments later).
fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind(("127.0.0.1", 0)).context("finding a free port")?;
    Ok(l.local_addr()?.port())
}

/// The storage node directories of DIR (`storage0`, `storage1`, ...), in order.
fn existing_servers(dir: &Path) -> Vec<PathBuf> {
    let mut v = Vec::new();
    for i in 0.. {
        let d = dir.join(format!("storage{i}"));
        if !d.join("tahoe.cfg").is_file() {
            break;
        }
        v.push(d);
    }
    v
}

const TAC_TEXT: &str =
    "# A Tahoe-LAFS client node directory, written by `lafs up`; Tahoe only checks this name.\n";

/// The client's tahoe.cfg (Tahoe's layout for a client-only node without a Tub).
fn client_cfg(needed: u16, happy: u16, total: u16, web_port: u16) -> String {
    format!(
        "[node]\nnickname = lafs-up\nweb.port = tcp:{web_port}:interface=127.0.0.1\n\
         web.static = public_html\ntub.port = disabled\ntub.location = disabled\n\n\
         [client]\nshares.needed = {needed}\nshares.happy = {happy}\nshares.total = {total}\n\n\
         [storage]\nenabled = false\n\n[helper]\nenabled = false\n"
    )
}

/// The web port in the client's tahoe.cfg, for the hint about real tahoe.
fn web_port(cfg: &str) -> Option<&str> {
    let line = cfg
        .lines()
        .find(|l| l.trim_start().starts_with("web.port"))?;
    line.split(':').nth(1)
}

pub fn run(a: UpArgs) -> anyhow::Result<()> {
    let dir = match a.dir {
        Some(d) => d,
        None => {
            PathBuf::from(std::env::var_os("HOME").context("HOME is not set")?).join("lafs-demo")
        }
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let dir = dir.canonicalize()?;
    let mountpoint = a.mountpoint.unwrap_or_else(|| dir.join("mnt"));
    let opts = mount::parse_opts(&a.options)?;
    super::node::init_tracing();

    // The storage node directories.
    let mut servers = existing_servers(&dir);
    if servers.is_empty() {
        for i in 0..a.servers {
            let d = dir.join(format!("storage{i}"));
            let port = free_port()?;
            let o = CreateOptions {
                nickname: Some(format!("storage{i}")),
                hostname: None,
                port: Some(format!("tcp:{port}:interface=127.0.0.1")),
                location: Some(format!("tcp:127.0.0.1:{port}")),
                webport: Some("none".into()),
                reserved_space: Some("0".into()),
                onion: false,
            };
            create_node(&d, &o).with_context(|| format!("creating {}", d.display()))?;
            servers.push(d);
        }
    } else if servers.len() != usize::from(a.servers) {
        eprintln!(
            "lafs up: {} already has {} storage servers; using them",
            dir.display(),
            servers.len()
        );
    }
    let n = u16::try_from(servers.len()).unwrap_or(u16::MAX);

    let rt = mount::runtime()?;
    let mut stopper = Stopper::new(&rt)?;
    let nodes: Vec<RunningNode> = rt.block_on(async {
        let mut v = Vec::new();
        for d in &servers {
            v.push(
                service::start(d.clone())
                    .await
                    .with_context(|| format!("starting the storage server in {}", d.display()))?,
            );
        }
        anyhow::Ok(v)
    })?;
    let res = with_grid(&rt, &mut stopper, &dir, &nodes, n, &mountpoint, &opts);
    for node in nodes {
        node.shutdown();
    }
    rt.shutdown_timeout(service::SHUTDOWN_GRACE);
    res?;
    show("lafs up: stopped\n");
    Ok(())
}

/// Everything once the servers run: the client, the root, the mount, the wait for a signal.
fn with_grid(
    rt: &tokio::runtime::Runtime,
    stopper: &mut Stopper,
    dir: &Path,
    nodes: &[RunningNode],
    n: u16,
    mountpoint: &Path,
    opts: &mount::Opts,
) -> anyhow::Result<()> {
    // The client node directory: tahoe.cfg once, servers.yaml at every start (the servers'
    // announcements are stable, but a re-created server would change).
    let client = dir.join("client");
    lafs::server::nodedir::ensure_private_dir(&client)?;
    let cfg_path = client.join("tahoe.cfg");
    if !cfg_path.is_file() {
        let (k, h, total) = encoding(n);
        std::fs::write(&cfg_path, client_cfg(k, h, total, free_port()?))
            .with_context(|| format!("writing {}", cfg_path.display()))?;
    }
    // `tahoe run` recognises a client node directory by a file of this name (it reads nothing
    // from it).
    let tac = client.join("tahoe-client.tac");
    if !tac.is_file() {
        std::fs::write(&tac, TAC_TEXT).with_context(|| format!("writing {}", tac.display()))?;
    }
    let mut yaml = ServersYaml::default();
    for node in nodes {
        yaml.storage
            .extend(node.started.files.servers_yaml()?.storage);
    }
    let text = yaml
        .to_yaml_string()
        .map_err(|_| anyhow::anyhow!("servers.yaml serialization failed"))?;
    write_atomic(
        &client.join("private").join("servers.yaml"),
        format!("{text}\n").as_bytes(),
        true,
    )?;

    // The root directory: `tahoe:` of private/aliases, created on the first run.
    let root = rt.block_on(async {
        let grid = Grid::open(&client)?;
        if let Some(cap) = grid.node.aliases.get("tahoe") {
            return anyhow::Ok(cap.to_string());
        }
        let d = grid
            .dirs
            .create(MutableFormat::Sdmf)
            .await
            .context("creating the root directory")?;
        let cap = d.cap().to_string();
        write_atomic(
            &client.join("private").join("aliases"),
            format!("tahoe: {cap}\n").as_bytes(),
            true,
        )?;
        Ok(cap)
    })?;

    // A mount left over by a killed run answers ENOTCONN: clear it.
    if let Err(e) = std::fs::metadata(mountpoint) {
        if e.raw_os_error() == Some(libc::ENOTCONN) {
            mount::unmount(mountpoint, true)?;
        }
    }
    std::fs::create_dir_all(mountpoint)
        .with_context(|| format!("creating {}", mountpoint.display()))?;
    if mount::mount_device(mountpoint).is_some() {
        bail!("{} is already a mount point", mountpoint.display());
    }
    let cfg_text = std::fs::read_to_string(&cfg_path).unwrap_or_default();
    let web = web_port(&cfg_text).unwrap_or("?").to_string();
    let (k, _, total) = encoding(n);
    // The read cap, to share the tree read-only; an alias that is not a directory write cap has
    // none to offer.
    let read_cap = root
        .parse::<lafs::cap::Cap>()
        .ok()
        .filter(|c| c.is_directory())
        .and_then(|c| c.readonly())
        .map(|c| c.to_string())
        .filter(|c| *c != root);
    let ended = mount::serve(
        rt,
        &client,
        "tahoe:",
        mountpoint,
        opts,
        false,
        |m| {
            let c = client.display();
            let mnt = mountpoint.display();
            let mut t = format!(
                "lafs up: {n} storage servers on loopback, storing in {}\n",
                dir.display()
            );
            t += &format!(
                "  files are encoded {k}-of-{total}; the root directory (alias tahoe:) is\n"
            );
            t += &format!("  {root}\n");
            if let Some(ro) = &read_cap {
                t += &format!("  read-only (to share it): {ro}\n");
            }
            t += &format!("  mounted at {mnt} (cache {})\n", m.cache_dir.display());
            t += &format!("  lafs status {mnt};  lafs umount --flush {mnt}\n");
            t += &format!("  lafs -d {c} ls tahoe:   (put, get, mkdir, ln, mv, rm, check)\n");
            t += &format!("  real Tahoe: tahoe run {c}   (web API on 127.0.0.1:{web}), then\n");
            t += &format!("              tahoe -d {c} ls tahoe:\n");
            t += "  Ctrl-C unmounts (after uploading what is pending) and stops the servers.\n";
            t += "lafs up: ready\n";
            show(&t);
        },
        stopper.wait(),
    )?;
    if ended == Ended::Unmounted {
        show("lafs up: unmounted; the grid keeps running until Ctrl-C\n");
        rt.block_on(stopper.wait());
    }
    Ok(())
}

/// Writes a status message to stdout. A closed or broken stdout (`lafs up | head -3`) is
/// ignored: the grid and the mount must keep running, and `println!` would panic instead.
fn show(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn encoding_gives_every_server_a_share_and_needs_half() {
        assert_eq!(encoding(1), (1, 1, 1));
        assert_eq!(encoding(2), (1, 2, 2));
        assert_eq!(encoding(3), (2, 3, 3));
        assert_eq!(encoding(4), (2, 4, 4));
        assert_eq!(encoding(5), (3, 5, 5));
    }

    #[test]
    fn client_cfg_is_read_back_by_the_config_parser() {
        let text = client_cfg(2, 3, 3, 4567);
        let cfg = lafs::config::NodeConfig::parse(&text).unwrap();
        assert_eq!(cfg.client.shares_needed, 2);
        assert_eq!(cfg.client.shares_happy, 3);
        assert_eq!(cfg.client.shares_total, 3);
        assert!(!cfg.storage_enabled);
        assert_eq!(web_port(&text), Some("4567"));
    }

    #[test]
    fn up_arguments() {
        let cli = crate::cli::Cli::try_parse_from(["lafs", "up"]).unwrap();
        let crate::cli::Command::Up(a) = cli.command else {
            panic!("not up")
        };
        assert_eq!((a.dir, a.servers, a.mountpoint), (None, 3, None));
        let cli = crate::cli::Cli::try_parse_from([
            "lafs",
            "up",
            "/g",
            "--servers",
            "5",
            "--mountpoint",
            "/m",
            "-o",
            "cache-size=100",
        ])
        .unwrap();
        let crate::cli::Command::Up(a) = cli.command else {
            panic!("not up")
        };
        assert_eq!(a.dir, Some(PathBuf::from("/g")));
        assert_eq!(a.servers, 5);
        assert_eq!(a.mountpoint, Some(PathBuf::from("/m")));
        assert_eq!(a.options, vec!["cache-size=100".to_string()]);
        assert!(crate::cli::Cli::try_parse_from(["lafs", "up", "--servers", "0"]).is_err());
    }
}
