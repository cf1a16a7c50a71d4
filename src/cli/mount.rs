//! `lafs mount SOURCE MOUNTPOINT [--foreground] [-o OPTIONS]` and the `mount.lafs` personality.
//!
//! SOURCE is a directory cap or an `alias:`/`alias:path` of the node directory (`-d`, or
//! `-o node-directory=DIR`). Without `--foreground` the command starts itself again in the
//! foreground as a detached process (its own process group, stdio to `mount.log` in the cache
//! directory) and returns once the mount shows in /proc/self/mountinfo, or fails with the
//! child's exit when it dies first. The foreground process serves FUSE until unmounted
//! (`fusermount3 -u`), then flushes pending uploads and exits.
//!
//! The write-back cache (the layer's journal) defaults to `NODEDIR/private/mount-cache/ID` with
//! ID derived from the root cap, so a remount of the same root resumes its pending uploads.
//! Caps never reach a message: errors name the alias or path, not the cap.

use super::grid::{default_node_dir, Grid};
use super::paths::parse_location;
use anyhow::{bail, Context};
use clap::Args;
use lafs::cap::{Cap, NodeCap};
use lafs::client::immutable::UploadOptions;
use lafs::fuse::{GridBackend, LafsFs};
use lafs::vfs::{Config, Vfs};
use std::ffi::OsString;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Args, Debug, Clone)]
pub struct MountArgs {
    /// A directory cap, or alias:path.
    pub source: String,
    /// Where to mount it.
    pub mountpoint: PathBuf,
    /// Stay attached (serve in this process until unmounted).
    #[arg(long, short = 'F')]
    pub foreground: bool,
    /// Comma-separated mount options (may be repeated).
    #[arg(short = 'o', value_name = "OPTIONS")]
    pub options: Vec<String>,
}

/// The options we read; everything else standard is accepted and ignored where it does not
/// apply.
#[derive(Debug, Default)]
struct Opts {
    node_dir: Option<PathBuf>,
    cache_dir: Option<PathBuf>,
    cache_size: Option<u64>,
    write_back_delay: Option<Duration>,
    dir_refresh: Option<Duration>,
    ro: bool,
    allow_other: bool,
    default_permissions: bool,
}

fn seconds(v: &str, what: &str) -> anyhow::Result<Duration> {
    let s: f64 = v
        .parse()
        .with_context(|| format!("{what}={v}: not a number of seconds"))?;
    if !(0.0..=86_400.0).contains(&s) {
        bail!("{what}={v}: out of range");
    }
    Ok(Duration::from_secs_f64(s))
}

fn parse_opts(list: &[String]) -> anyhow::Result<Opts> {
    let mut o = Opts::default();
    for item in list
        .iter()
        .flat_map(|s| s.split(','))
        .filter(|s| !s.is_empty())
    {
        let (k, v) = match item.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (item, None),
        };
        match (k, v) {
            ("node-directory", Some(v)) => o.node_dir = Some(PathBuf::from(v)),
            ("cache-dir", Some(v)) => o.cache_dir = Some(PathBuf::from(v)),
            ("cache-size", Some(v)) => {
                o.cache_size = Some(v.parse().with_context(|| format!("cache-size={v}"))?)
            }
            ("write-back-delay", Some(v)) => o.write_back_delay = Some(seconds(v, k)?),
            ("dir-refresh", Some(v)) => o.dir_refresh = Some(seconds(v, k)?),
            ("ro", None) => o.ro = true,
            ("rw", None) => o.ro = false,
            ("allow_other", None) => o.allow_other = true,
            ("default_permissions", None) => o.default_permissions = true,
            // Standard options with no meaning for us.
            ("_netdev" | "noauto" | "auto" | "user" | "nouser" | "users" | "defaults", None)
            | ("nofail" | "exec" | "noexec" | "suid" | "nosuid" | "dev" | "nodev", None)
            | ("atime" | "noatime" | "relatime" | "async" | "allow_root", None) => {}
            (k, _) if k.starts_with("x-") => {}
            _ => bail!("unknown mount option '{k}'"),
        }
    }
    Ok(o)
}

/// Whether `path` is a mount point now (a line of /proc/self/mountinfo names it).
fn is_mounted(path: &Path) -> bool {
    let Ok(canon) = path.canonicalize() else {
        return false;
    };
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let want = canon.to_string_lossy().replace(' ', "\\040");
    info.lines()
        .any(|l| l.split(' ').nth(4) == Some(want.as_str()))
}

pub fn run(node_dir: Option<PathBuf>, args: MountArgs) -> anyhow::Result<()> {
    let opts = parse_opts(&args.options)?;
    if !args.mountpoint.is_dir() {
        bail!(
            "mount point {} is not a directory",
            args.mountpoint.display()
        );
    }
    let basedir = opts
        .node_dir
        .clone()
        .or(node_dir)
        .unwrap_or_else(default_node_dir);
    if args.foreground {
        return serve(&basedir, &args, &opts);
    }
    background(&basedir, &args)
}

/// Starts `lafs mount --foreground` detached and waits until the mount is up.
fn background(basedir: &Path, args: &MountArgs) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("finding the lafs executable")?;
    let log_dir = basedir.join("logs");
    std::fs::create_dir_all(&log_dir).ok();
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_dir.join("mount.log"))
        .context("opening logs/mount.log")?;
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("-d")
        .arg(basedir)
        .arg("mount")
        .arg("--foreground")
        .arg(&args.source)
        .arg(&args.mountpoint);
    for o in &args.options {
        cmd.arg("-o").arg(o);
    }
    use std::os::unix::process::CommandExt;
    cmd.process_group(0)
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone().context("log file")?)
        .stderr(log);
    let mut child = cmd.spawn().context("starting the mount daemon")?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if is_mounted(&args.mountpoint) {
            return Ok(());
        }
        if let Some(status) = child.try_wait()? {
            bail!(
                "the mount daemon exited ({status}) before the mount was up; see {}",
                log_dir.join("mount.log").display()
            );
        }
        if Instant::now() > deadline {
            bail!("the mount did not come up within 60 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Serves the mount in this process until it is unmounted.
fn serve(basedir: &Path, args: &MountArgs, opts: &Opts) -> anyhow::Result<()> {
    // Warnings of the write-back (failed uploads and publishes) go to stderr, which is
    // logs/mount.log for a background mount.
    super::node::init_tracing();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let meta = std::fs::metadata(&args.mountpoint).context("reading the mount point")?;
    let (vfs, read_only) = rt.block_on(async {
        let grid = Grid::open(basedir)?;
        let loc = parse_location(&grid.node.aliases, &args.source)?;
        let root = if loc.path.is_empty() {
            loc.root.clone()
        } else {
            grid.dirs
                .resolve(&loc.root, &loc.path_text())
                .await
                .with_context(|| format!("cannot find '{}'", loc.path_text()))?
        };
        if !root.is_directory() {
            bail!("the source is not a directory");
        }
        let read_only = opts.ro || !matches!(root, Cap::Dir(NodeCap::MutableWrite(_)));
        let root_text = root.to_string();
        let cache_dir = match &opts.cache_dir {
            Some(d) => d.clone(),
            None => {
                let id =
                    lafs::crypto::hash::tagged_hash(b"lafs-mount-cache-v1", root_text.as_bytes());
                let id = lafs::util::base32::encode(id.get(..16).unwrap_or(&id[..]));
                basedir.join("private").join("mount-cache").join(id)
            }
        };
        std::fs::create_dir_all(&cache_dir)
            .with_context(|| format!("creating cache directory {}", cache_dir.display()))?;
        let mut cfg = Config::new(cache_dir);
        cfg.uid = meta.uid();
        cfg.gid = meta.gid();
        if let Some(s) = opts.cache_size {
            cfg.cache_size = s;
        }
        if let Some(d) = opts.write_back_delay {
            cfg.write_back_delay = d;
        }
        if let Some(d) = opts.dir_refresh {
            cfg.dir_refresh = d;
        }
        let mut upload = UploadOptions::convergent(grid.encoding_params(), &grid.convergence);
        upload.preferred = grid.node.config.client.peers_preferred.clone();
        let backend = GridBackend::new(
            grid.servers.clone(),
            grid.dirs.clone(),
            upload,
            &grid.lease_secret,
            usize::from(grid.happy),
            grid.mutable_format,
        );
        let vfs = Vfs::new(Arc::new(backend), &root_text, cfg)
            .await
            .map_err(|e| anyhow::anyhow!("opening the mount: {e}"))?;
        Ok((vfs, read_only))
    })?;
    let mut mopts = vec![
        fuser::MountOption::FSName("lafs".into()),
        fuser::MountOption::Subtype("lafs".into()),
        fuser::MountOption::NoDev,
        fuser::MountOption::NoSuid,
    ];
    if read_only {
        mopts.push(fuser::MountOption::RO);
    }
    if opts.default_permissions {
        mopts.push(fuser::MountOption::DefaultPermissions);
    }
    let mut config = fuser::Config::default();
    config.mount_options = mopts;
    if opts.allow_other {
        config.acl = fuser::SessionACL::All;
    }
    let fs = LafsFs::new(Arc::new(vfs), rt.handle().clone());
    let session = fuser::spawn_mount(fs, &args.mountpoint, &config)
        .with_context(|| format!("mounting on {}", args.mountpoint.display()))?;
    // Serve until unmounted from outside, or SIGINT/SIGTERM (then unmount ourselves; the
    // filesystem's destroy flushes pending uploads either way).
    let signalled = rt.block_on(async {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => return anyhow::Ok(true),
                _ = term.recv() => return Ok(true),
                _ = tokio::time::sleep(Duration::from_millis(200)) => {
                    if session.guard.is_finished() {
                        return Ok(false);
                    }
                }
            }
        }
    })?;
    if signalled {
        session.umount_and_join().context("unmounting")?;
    } else {
        session.join().context("the FUSE session")?;
    }
    Ok(())
}

/// `mount.lafs SOURCE MOUNTPOINT [-sfnv] [-o OPTIONS]` (the mount(8) helper convention): the
/// same as `lafs mount SOURCE MOUNTPOINT -o OPTIONS`. `-s` (sloppy), `-n` (no mtab) and `-v`
/// are accepted; `-f` (fake) does everything but the mount.
pub fn mount_helper(args: Vec<OsString>) -> anyhow::Result<()> {
    let mut positional = Vec::new();
    let mut options = Vec::new();
    let mut fake = false;
    let mut it = args.into_iter().skip(1);
    while let Some(a) = it.next() {
        let s = a.to_string_lossy().into_owned();
        if s == "-o" {
            let v = it.next().context("-o needs a value")?;
            options.push(v.to_string_lossy().into_owned());
        } else if let Some(v) = s.strip_prefix("-o") {
            options.push(v.to_string());
        } else if s.starts_with('-') && s.len() > 1 {
            for c in s.chars().skip(1) {
                match c {
                    'f' => fake = true,
                    's' | 'n' | 'v' => {}
                    _ => bail!("mount.lafs: unknown flag -{c}"),
                }
            }
        } else {
            positional.push(a);
        }
    }
    let [source, mountpoint] = <[OsString; 2]>::try_from(positional)
        .map_err(|_| anyhow::anyhow!("usage: mount.lafs SOURCE MOUNTPOINT [-sfnv] [-o OPTIONS]"))?;
    let parsed = parse_opts(&options)?;
    if fake {
        return Ok(());
    }
    let args = MountArgs {
        source: source.to_string_lossy().into_owned(),
        mountpoint: PathBuf::from(mountpoint),
        foreground: false,
        options,
    };
    let basedir = parsed.node_dir.unwrap_or_else(default_node_dir);
    run(Some(basedir), args)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_are_read_and_standard_ones_ignored() {
        let o = parse_opts(&[
            "ro,allow_other,_netdev,noauto,x-systemd.automount".into(),
            "cache-size=1000,write-back-delay=2.5,dir-refresh=30,node-directory=/n".into(),
        ])
        .unwrap();
        assert!(o.ro && o.allow_other && !o.default_permissions);
        assert_eq!(o.cache_size, Some(1000));
        assert_eq!(o.write_back_delay, Some(Duration::from_millis(2500)));
        assert_eq!(o.dir_refresh, Some(Duration::from_secs(30)));
        assert_eq!(o.node_dir, Some(PathBuf::from("/n")));
        assert!(parse_opts(&["frobnicate".into()]).is_err());
        assert!(parse_opts(&["write-back-delay=-1".into()]).is_err());
    }
}
