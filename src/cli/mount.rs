//! `lafs mount SOURCE MOUNTPOINT [--foreground] [-o OPTIONS]` and the `mount.lafs` personality.
//!
//! SOURCE is a directory cap or an `alias:`/`alias:path` of the node directory (`-d`, or
//! `-o node-directory=DIR`). Without `--foreground` the command starts itself again in the
//! foreground as a detached process (its own process group, stderr to `logs/mount.log` of the
//! node directory, stdout a pipe back to the starter) and returns once the daemon writes its
//! readiness line, which it does right after fuser's mount succeeded; when the daemon fails
//! first, the starter reports its exit status and the tail of its log. The daemon serves FUSE
//! until unmounted (`lafs umount`, `fusermount3 -u`) or SIGINT/SIGTERM (it unmounts itself),
//! then flushes pending uploads (while they progress, bounded by [`FLUSH_AT_UNMOUNT`] without
//! progress; what is left stays in the
//! cache and goes up at the next mount with that cache) and exits.
//!
//! The write-back cache (the layer's journal) defaults to `NODEDIR/private/mount-cache/ID` with
//! ID derived from the root cap, so a remount of the same root resumes its pending uploads.
//! Caps never reach a message: errors name the alias or path, not the cap; the mount's
//! `.lafs-status` names a cap source `(a directory cap)`.
//!
//! Invariant: a mount is only ever unmounted by us while it is ours (same device number as
//! when we mounted it); see [`serve`] for the fuser behaviour this avoids.

use super::grid::{default_node_dir, Grid};
use super::paths::parse_location;
use anyhow::{bail, Context};
use clap::Args;
use lafs::cap::{Cap, NodeCap};
use lafs::client::immutable::UploadOptions;
use lafs::fuse::status::{Control, MountInfo};
use lafs::fuse::{FlushProgress, GridBackend, LafsFs, FLUSH_AT_UNMOUNT};
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
    /// Comma-separated mount options (may be repeated): listed below, and in mount.lafs(8).
    #[arg(short = 'o', value_name = "OPTIONS")]
    pub options: Vec<String>,
    /// Internal (the background daemon): SOURCE is a placeholder; the real one is in the
    /// environment variable LAFS_MOUNT_SOURCE, so that a cap never shows in the daemon's
    /// command line, which every local user can read in /proc.
    #[arg(long, hide = true)]
    pub source_from_env: bool,
}

/// The options we read; everything else standard is accepted and ignored where it does not
/// apply.
#[derive(Debug, Default)]
pub struct Opts {
    pub node_dir: Option<PathBuf>,
    pub cache_dir: Option<PathBuf>,
    pub cache_size: Option<u64>,
    pub write_back_delay: Option<Duration>,
    pub dir_refresh: Option<Duration>,
    pub ro: bool,
    pub allow_other: bool,
    pub default_permissions: bool,
    /// `noexec` (the last of `exec`/`noexec` wins).
    pub noexec: bool,
    /// `allow_root`: root may use the mount besides its owner (`allow_other` wins).
    pub allow_root: bool,
    /// macFUSE's `noapplexattr` and `noappledouble`, passed to macFUSE on macOS only.
    pub macos: Vec<String>,
    /// `read-ahead-kb`: the kernel's read-ahead for the mount (0: leave the kernel's).
    pub read_ahead_kb: Option<u32>,
}

/// The kernel read-ahead a mount asks for by default, in KiB: 0 leaves the kernel's (128 KiB
/// for a FUSE mount). `read-ahead-kb=N` raises it (the kernel then sends read requests of up to
/// 1 MiB, several at once). Not raised by default: measured on a loaded 2-core machine, 4 MiB
/// made sequential reads slower (readers far ahead of a read stream's kept window fall back to
/// direct ranged downloads).
pub const READ_AHEAD_KB: u32 = 0;

/// Sets the read-ahead of the mount's device `dev` ("major:minor") through sysfs. Only root may;
/// otherwise the kernel's default stays (reads are then slower, not wrong).
fn set_read_ahead(dev: &str, kb: u32) {
    let path = format!("/sys/class/bdi/{dev}/read_ahead_kb");
    if let Err(e) = std::fs::write(&path, format!("{kb}\n")) {
        tracing::debug!("cannot set the kernel read-ahead ({path}): {e}");
    }
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

pub fn parse_opts(list: &[String]) -> anyhow::Result<Opts> {
    parse_opts_sloppy(list, false).map(|(o, _)| o)
}

/// [`parse_opts`], except that with `sloppy` (mount(8)'s `-s`) an option we do not know is
/// returned in the second list instead of refused. A known option with a bad value is refused
/// either way.
fn parse_opts_sloppy(list: &[String], sloppy: bool) -> anyhow::Result<(Opts, Vec<String>)> {
    let mut o = Opts::default();
    let mut unknown = Vec::new();
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
            ("read-ahead-kb", Some(v)) => {
                let kb: u32 = v.parse().with_context(|| format!("read-ahead-kb={v}"))?;
                if kb > 1 << 20 {
                    bail!("read-ahead-kb={v}: out of range");
                }
                o.read_ahead_kb = Some(kb);
            }
            ("ro", None) => o.ro = true,
            ("rw", None) => o.ro = false,
            ("allow_other", None) => o.allow_other = true,
            ("default_permissions", None) => o.default_permissions = true,
            ("exec", None) => o.noexec = false,
            ("noexec", None) => o.noexec = true,
            ("allow_root", None) => o.allow_root = true,
            ("noapplexattr" | "noappledouble", None) => o.macos.push(k.to_string()),
            // Standard options with no meaning for us. The mount is always nodev and nosuid
            // (device nodes are entries only), so `dev` and `suid` cannot be granted.
            ("_netdev" | "noauto" | "auto" | "user" | "nouser" | "users" | "defaults", None)
            | ("nofail" | "suid" | "nosuid" | "dev" | "nodev", None)
            | ("atime" | "noatime" | "relatime" | "async", None) => {}
            (k, _) if k.starts_with("x-") => {}
            _ if sloppy => unknown.push(item.to_string()),
            _ => bail!("unknown mount option '{k}'"),
        }
    }
    Ok((o, unknown))
}

/// The cache size when `cache-size` is not given: a tenth of the free space of the cache's
/// filesystem, at least 256 MiB (a small disk still caches a few files) and at most 64 GiB;
/// 1 GiB when the free space is unknown.
fn default_cache_size(free: Option<u64>) -> u64 {
    const MIN: u64 = 256 << 20;
    const MAX: u64 = 64 << 30;
    free.map_or(1 << 30, |f| (f / 10).clamp(MIN, MAX))
}

/// Bytes free for an unprivileged user on the filesystem holding `dir` (statvfs).
fn free_space(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt as _;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
    // SAFETY: `c` is a NUL-terminated path and `st` is a writable statvfs buffer.
    let r = unsafe { libc::statvfs(c.as_ptr(), st.as_mut_ptr()) };
    if r != 0 {
        return None;
    }
    // SAFETY: statvfs returned 0, so it filled the buffer.
    let st = unsafe { st.assume_init() };
    // The field types differ by platform (u64 on Linux, u32 and u64 on macOS).
    #[allow(clippy::unnecessary_cast)]
    let (avail, frsize) = (st.f_bavail as u64, st.f_frsize as u64);
    Some(avail.saturating_mul(frsize))
}

pub fn run(node_dir: Option<PathBuf>, mut args: MountArgs) -> anyhow::Result<()> {
    if args.source_from_env {
        args.source = std::env::var(SOURCE_ENV)
            .with_context(|| format!("--source-from-env: {SOURCE_ENV} is not set"))?;
    }
    let opts = parse_opts(&args.options)?;
    let basedir = opts
        .node_dir
        .clone()
        .or(node_dir)
        .unwrap_or_else(default_node_dir);
    preflight(&basedir, &args)?;
    if args.foreground {
        super::node::init_tracing();
        let notify = std::env::var_os(NOTIFY_ENV).is_some();
        let rt = runtime()?;
        let mut stopper = Stopper::new(&rt)?;
        serve(
            &rt,
            &basedir,
            &args.source,
            &args.mountpoint,
            &opts,
            true,
            |_| {
                if notify {
                    // The readiness line for `background` (our stdout is its pipe). Nothing
                    // else is ever written to stdout: the parent is gone after this line.
                    use std::io::Write as _;
                    let mut out = std::io::stdout().lock();
                    let _ = out.write_all(READY_LINE.as_bytes());
                    let _ = out.flush();
                }
            },
            stopper.wait(),
        )?;
        return Ok(());
    }
    background(&basedir, &args)
}

/// What can be checked before anything is created or started: the mount point is a directory,
/// the node directory exists and loads, and SOURCE parses against its aliases. A mistyped
/// `node-directory` must not be created (the daemon's log goes into it), and `mount.lafs -f`
/// promises this check.
fn preflight(basedir: &Path, args: &MountArgs) -> anyhow::Result<()> {
    if !args.mountpoint.is_dir() {
        bail!(
            "mount point {} is not a directory",
            args.mountpoint.display()
        );
    }
    if !basedir.is_dir() {
        bail!("node directory {} does not exist", basedir.display());
    }
    let node = lafs::config::NodeDir::load(basedir)
        .with_context(|| format!("loading node directory {}", basedir.display()))?;
    parse_location(&node.aliases, &args.source)?;
    Ok(())
}

/// Set in the environment of the daemon `background` starts: it writes [`READY_LINE`] on its
/// stdout once the mount is up.
const NOTIFY_ENV: &str = "LAFS_MOUNT_NOTIFY";
/// Carries a cap SOURCE to the daemon `background` starts (see `MountArgs::source_from_env`):
/// /proc/PID/environ is readable by the owner only, /proc/PID/cmdline by everyone.
const SOURCE_ENV: &str = "LAFS_MOUNT_SOURCE";

/// The daemon's command line after `lafs -d DIR`: the source itself when it is an alias path,
/// a placeholder when it holds a cap (then `background` passes it in [`SOURCE_ENV`]).
fn daemon_args(args: &MountArgs) -> Vec<std::ffi::OsString> {
    let mut v: Vec<std::ffi::OsString> = vec!["mount".into(), "--foreground".into()];
    if holds_cap(&args.source) {
        v.push("--source-from-env".into());
        v.push("-".into());
    } else {
        v.push(args.source.clone().into());
    }
    v.push(args.mountpoint.clone().into());
    for o in &args.options {
        v.push("-o".into());
        v.push(o.into());
    }
    v
}

/// Whether a mount source contains a cap (a bare cap, `CAP/path`): anything with `URI:` in it is
/// treated as secret.
fn holds_cap(source: &str) -> bool {
    source.contains("URI:")
}
const READY_LINE: &str = "mounted\n";
/// How long `background` waits for the daemon's readiness line (it opens the root directory on
/// the grid first).
const START_TIMEOUT: Duration = Duration::from_secs(120);
/// How many lines of the daemon's log a start failure shows.
const LOG_TAIL_LINES: usize = 20;

/// The async runtime of a mount.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    one_malloc_arena();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// A mount's buffers (segments, read-stream chunks, upload batches) are allocated on many
/// threads: the FUSE thread, the runtime's workers and the blocking pool. glibc attaches each
/// thread that contends for the heap to an arena of its own; a freed buffer goes back to the
/// arena it came from and is reused only by the threads attached there, so each arena grows
/// toward the whole working set: a 1 GiB read through the mount peaked at 153–173 MiB of RSS,
/// against 86–87 MiB with one arena, for the same time and CPU. Small blocks still come from
/// each thread's own cache (tcache), without the arena's lock. Called before the runtime
/// starts its threads.
fn one_malloc_arena() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; a refused setting (return 0) leaves
    // the default.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

/// SIGINT and SIGTERM, caught from its creation on (a signal during start-up is not lost and
/// does not kill the process half-way).
pub struct Stopper {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Stopper {
    /// Installs the handlers (on `rt`'s signal driver).
    pub fn new(rt: &tokio::runtime::Runtime) -> anyhow::Result<Stopper> {
        use tokio::signal::unix::{signal, SignalKind};
        let _in_rt = rt.enter();
        Ok(Stopper {
            term: signal(SignalKind::terminate()).context("SIGTERM handler")?,
            int: signal(SignalKind::interrupt()).context("SIGINT handler")?,
        })
    }

    /// Resolves at the next SIGINT or SIGTERM.
    pub async fn wait(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}

/// The last `n` lines of `text`.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Starts `lafs mount --foreground` detached (its own process group, stderr to
/// `logs/mount.log`, stdout a pipe to us) and waits for its readiness line, written once
/// fuser's mount succeeded. EOF on the pipe without it means the daemon failed: its exit
/// status and the tail of what it logged are the error. No polling of the mount table: a mount
/// that comes and goes (or someone else's mount at the same place) cannot fool the wait.
fn background(basedir: &Path, args: &MountArgs) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("finding the lafs executable")?;
    let log_dir = basedir.join("logs");
    std::fs::create_dir_all(&log_dir).ok();
    let log_path = log_dir.join("mount.log");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .context("opening logs/mount.log")?;
    let log_start = log.metadata().map(|m| m.len()).unwrap_or(0);
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("-d").arg(basedir).args(daemon_args(args));
    if holds_cap(&args.source) {
        cmd.env(SOURCE_ENV, &args.source);
    }
    use std::os::unix::process::CommandExt;
    cmd.process_group(0)
        .env(NOTIFY_ENV, "1")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(log);
    let mut child = cmd.spawn().context("starting the mount daemon")?;
    let out = child.stdout.take().context("the daemon's stdout")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead as _;
        let mut line = String::new();
        let _ = std::io::BufReader::new(out).read_line(&mut line);
        let _ = tx.send(line);
    });
    let log_tail = || {
        let text = std::fs::read(&log_path).unwrap_or_default();
        let from = usize::try_from(log_start).unwrap_or(0).min(text.len());
        tail(&String::from_utf8_lossy(&text[from..]), LOG_TAIL_LINES)
    };
    match rx.recv_timeout(START_TIMEOUT) {
        Ok(line) if line == READY_LINE => Ok(()),
        Ok(_) => {
            let status = child.wait().context("waiting for the mount daemon")?;
            bail!(
                "the mount daemon failed ({status}); {}:\n{}",
                log_path.display(),
                log_tail()
            )
        }
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "the mount did not come up within {} s (daemon stopped); {}:\n{}",
                START_TIMEOUT.as_secs(),
                log_path.display(),
                log_tail()
            )
        }
    }
}

/// The device of the mount at `path` (the topmost one): Linux's `major:minor` from
/// /proc/self/mountinfo, macOS's `f_fsid` from the kernel's mount list.
pub fn mount_device(path: &Path) -> Option<String> {
    device_at_canonical(&path.canonicalize().ok()?)
}

/// [`mount_device`] of a canonical path, without touching the path itself (no request to a
/// FUSE mount there).
#[cfg(not(target_os = "macos"))]
fn device_at_canonical(canon: &Path) -> Option<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    mountinfo_device(&info, &canon.to_string_lossy())
}

/// macOS has no /proc: `getfsstat(MNT_NOWAIT)` lists the mounts from the kernel's table
/// without asking any filesystem (no request reaches a FUSE mount), in mount order, so the
/// last entry mounted on `canon` is the topmost. Its `f_fsid` identifies the mount (a new
/// mount at the same place has a new one).
#[cfg(target_os = "macos")]
fn device_at_canonical(canon: &Path) -> Option<String> {
    use std::os::unix::ffi::OsStrExt as _;
    // SAFETY: with a null buffer getfsstat only counts the mounts.
    let n = unsafe { libc::getfsstat(std::ptr::null_mut(), 0, libc::MNT_NOWAIT) };
    // Room for a few mounts made since the count.
    let cap = usize::try_from(n).ok()? + 8;
    let mut buf: Vec<libc::statfs> = Vec::with_capacity(cap);
    let bytes = libc::c_int::try_from(cap * std::mem::size_of::<libc::statfs>()).ok()?;
    // SAFETY: the kernel writes at most `bytes` bytes, the capacity of `buf`, and returns how
    // many records it wrote; only those are exposed by set_len.
    let got = unsafe { libc::getfsstat(buf.as_mut_ptr(), bytes, libc::MNT_NOWAIT) };
    let got = usize::try_from(got).ok()?.min(cap);
    // SAFETY: see above: `got` records were written.
    unsafe { buf.set_len(got) };
    let want = canon.as_os_str().as_bytes();
    buf.iter().rev().find_map(|s| {
        let on: Vec<u8> = s
            .f_mntonname
            .iter()
            .take_while(|&&c| c != 0)
            .map(|&c| c as u8)
            .collect();
        // SAFETY: fsid_t is `struct { int32_t val[2]; }` (its field is private in libc).
        let fsid: [i32; 2] = unsafe { std::mem::transmute(s.f_fsid) };
        (on == want).then(|| format!("{:x}:{:x}", fsid[0], fsid[1]))
    })
}

#[cfg_attr(target_os = "macos", allow(dead_code))]
fn mountinfo_device(info: &str, path: &str) -> Option<String> {
    // mountinfo escapes space, tab, newline and backslash in paths as octal.
    let want = path
        .replace('\\', "\\134")
        .replace(' ', "\\040")
        .replace('\t', "\\011")
        .replace('\n', "\\012");
    info.lines().rev().find_map(|l| {
        let mut f = l.split(' ');
        let dev = f.nth(2)?;
        (f.nth(1)? == want).then(|| dev.to_string())
    })
}

/// What a started mount tells its caller.
pub struct Mounted {
    pub cache_dir: PathBuf,
    pub read_only: bool,
}

/// How [`serve`] ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Ended {
    /// Unmounted from outside (`lafs umount`, `fusermount3 -u`).
    Unmounted,
    /// `stop` resolved: we unmounted.
    Stopped,
}

/// Serves SOURCE at MOUNTPOINT on `rt` until it is unmounted from outside or `stop` resolves
/// (then unmounts it). `on_mounted` runs once fuser's mount has succeeded. Either way the
/// filesystem's destroy flushes pending uploads (bounded) before this returns.
///
/// fuser 0.18 unmounts the mount point again when its session object is dropped, and its
/// check that the mount is still its own reads a dead connection as alive: after an unmount
/// from outside, that second unmount hits whatever is mounted there by then (a remount in
/// progress: the old flake, a new daemon exiting 0 at once). So the session object is never
/// dropped: we unmount ourselves, only a mount with our device number, wait for the session
/// thread and then forget the session.
#[allow(clippy::too_many_arguments)]
pub fn serve(
    rt: &tokio::runtime::Runtime,
    basedir: &Path,
    source: &str,
    mountpoint: &Path,
    opts: &Opts,
    exits_on_unmount: bool,
    on_mounted: impl FnOnce(&Mounted),
    stop: impl std::future::Future<Output = ()>,
) -> anyhow::Result<Ended> {
    let meta = std::fs::metadata(mountpoint).context("reading the mount point")?;
    // `_lock` is held until we return: one mount per cache at a time.
    let (vfs, mounted, _lock) = rt.block_on(async {
        let grid = Grid::open(basedir)?;
        let loc = parse_location(&grid.node.aliases, source)?;
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
        let lock = lock_cache(&cache_dir).await?;
        let mut cfg = Config::new(cache_dir.clone());
        cfg.uid = meta.uid();
        cfg.gid = meta.gid();
        cfg.cache_size = match opts.cache_size {
            Some(s) => s,
            None => default_cache_size(free_space(&cache_dir)),
        };
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
        let mounted = Mounted {
            cache_dir,
            read_only,
        };
        Ok((vfs, mounted, lock))
    })?;
    let mut mopts = vec![
        fuser::MountOption::FSName("lafs".into()),
        fuser::MountOption::Subtype("lafs".into()),
        fuser::MountOption::NoDev,
        fuser::MountOption::NoSuid,
    ];
    if mounted.read_only {
        mopts.push(fuser::MountOption::RO);
    }
    if opts.default_permissions {
        mopts.push(fuser::MountOption::DefaultPermissions);
    }
    if opts.noexec {
        mopts.push(fuser::MountOption::NoExec);
    }
    if cfg!(target_os = "macos") {
        mopts.extend(opts.macos.iter().cloned().map(fuser::MountOption::CUSTOM));
    }
    let mut config = fuser::Config::default();
    config.mount_options = mopts;
    if opts.allow_other {
        config.acl = fuser::SessionACL::All;
    } else if opts.allow_root {
        config.acl = fuser::SessionACL::RootAndOwner;
    }
    let abs_mountpoint = mountpoint
        .canonicalize()
        .unwrap_or_else(|_| mountpoint.to_path_buf());
    let info = MountInfo {
        pid: std::process::id(),
        exits_on_unmount,
        mountpoint: abs_mountpoint.to_string_lossy().into_owned(),
        source: if holds_cap(source) {
            "(a directory cap)".to_string()
        } else {
            source.to_string()
        },
        read_only: mounted.read_only,
        cache_dir: mounted.cache_dir.to_string_lossy().into_owned(),
    };
    let control = Arc::new(Control::new(info, meta.uid(), meta.gid()));
    let vfs = Arc::new(vfs);
    let fs = LafsFs::new(Arc::clone(&vfs), rt.handle().clone()).with_control(control);
    let notifier = fs.notifier_slot();
    let session = match mount_typed(mountpoint, meta.mode(), &mounted, opts) {
        Some(fd) => fuser::Session::from_fd(fs, fd, config.acl, config.clone())
            .and_then(fuser::Session::spawn)
            .inspect_err(|_| {
                // The kernel mount exists but no session serves it: detach it.
                let _ = unmount(&abs_mountpoint, true);
            }),
        None => fuser::spawn_mount(fs, mountpoint, &config),
    }
    .with_context(|| format!("mounting on {}", mountpoint.display()))?;
    let _ = notifier.set(session.notifier());
    let ours = device_at_canonical(&abs_mountpoint);
    match (opts.read_ahead_kb.unwrap_or(READ_AHEAD_KB), &ours) {
        (0, _) | (_, None) => {}
        (kb, Some(dev)) => set_read_ahead(dev, kb),
    }
    tracing::info!(mountpoint = %abs_mountpoint.display(), "mounted");
    on_mounted(&mounted);
    let stopped = rt.block_on(async {
        tokio::pin!(stop);
        loop {
            tokio::select! {
                _ = &mut stop => return true,
                _ = tokio::time::sleep(Duration::from_millis(100)) => {
                    if session.guard.is_finished() {
                        return false;
                    }
                }
            }
        }
    });
    if stopped && !session.guard.is_finished() {
        if ours.is_some() && device_at_canonical(&abs_mountpoint) == ours {
            // Not `?`: whatever happens, the session must not be dropped (see above).
            if let Err(e) = unmount(&abs_mountpoint, true) {
                tracing::warn!("unmounting: {e:#}");
            }
        }
        // The session ends once the kernel lets go (destroy flushes first, bounded by its
        // progress). Waited for as long as uploads progress, with a margin over destroy's own
        // bound; if the kernel never lets go, what is pending stays in the cache.
        let mut progress = FlushProgress::new(&vfs.status());
        let mut polls = 0u32;
        while !session.guard.is_finished() {
            std::thread::sleep(Duration::from_millis(50));
            polls += 1;
            if polls.is_multiple_of(20)
                && progress.idle(&vfs.status()) > FLUSH_AT_UNMOUNT + Duration::from_secs(30)
            {
                break;
            }
        }
    }
    tracing::info!(mountpoint = %abs_mountpoint.display(), "unmounted");
    // See above: dropping the session could unmount someone else's mount.
    std::mem::forget(session);
    Ok(if stopped {
        Ended::Stopped
    } else {
        Ended::Unmounted
    })
}

/// How long a mount waits for another process to let go of its cache (an unmounted daemon
/// still uploading).
const CACHE_LOCK_WAIT: Duration = Duration::from_secs(60);

/// Takes the exclusive lock of `cache_dir` (flock of `cache_dir/lock`), waiting up to
/// [`CACHE_LOCK_WAIT`]: two processes must never work on one journal.
async fn lock_cache(cache_dir: &Path) -> anyhow::Result<std::fs::File> {
    use std::os::fd::AsRawFd as _;
    let path = cache_dir.join("lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    let deadline = Instant::now() + CACHE_LOCK_WAIT;
    let mut said = false;
    loop {
        // SAFETY: flock(2) on a descriptor `file` owns and keeps open; no memory is involved.
        let r = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if r == 0 {
            return Ok(file);
        }
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EWOULDBLOCK) {
            return Err(e).with_context(|| format!("locking {}", path.display()));
        }
        if Instant::now() > deadline {
            bail!(
                "the cache {} is in use by another lafs mount",
                cache_dir.display()
            );
        }
        if !said {
            tracing::info!(cache = %cache_dir.display(), "waiting for another mount of this cache to finish");
            said = true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The unmount command: Linux `fusermount3 -u` (`-z`: lazy, detached at once and gone when
/// no longer busy); macOS `umount` (`-f`: forced, macOS has no lazy unmount), which a user may
/// run on a macFUSE mount of their own.
fn unmount_command(mountpoint: &Path, forced: bool) -> std::process::Command {
    let mut c;
    if cfg!(target_os = "macos") {
        c = std::process::Command::new("umount");
        if forced {
            c.arg("-f");
        }
    } else {
        c = std::process::Command::new("fusermount3");
        c.arg("-u");
        if forced {
            c.arg("-z");
        }
    }
    c.arg(mountpoint).stdin(std::process::Stdio::null());
    c
}

/// Unmounts `mountpoint` (see [`unmount_command`]; when it is busy, lazily or forced if
/// `lazy_when_busy`).
pub fn unmount(mountpoint: &Path, lazy_when_busy: bool) -> anyhow::Result<()> {
    let cmd = unmount_command(mountpoint, false);
    let tool = cmd.get_program().to_string_lossy().into_owned();
    // The command as a message shows it (`fusermount3 -u /m`).
    let shown = std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| a.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ");
    let run = |forced: bool| unmount_command(mountpoint, forced).status();
    let failed = |s| anyhow::anyhow!("{shown} failed ({s})");
    match run(false) {
        Ok(s) if s.success() => Ok(()),
        Ok(s) if !lazy_when_busy => Err(failed(s)),
        Err(e) if !lazy_when_busy => Err(e).with_context(|| format!("running {tool}")),
        _ => match run(true).with_context(|| format!("running {tool}"))? {
            s if s.success() => Ok(()),
            s => Err(failed(s)),
        },
    }
}

/// The arguments mount(8) gives a helper: `SOURCE MOUNTPOINT [-sfnv] [-N NAMESPACE] [-o OPTIONS]
/// [-t TYPE]`.
#[derive(Debug, PartialEq, Eq)]
struct HelperArgs {
    source: OsString,
    mountpoint: PathBuf,
    options: Vec<String>,
    /// `-f`: everything but the mount itself.
    fake: bool,
    /// `-N`: the mount namespace to mount in (a PID or a namespace file).
    namespace: Option<OsString>,
    /// `-s`: unknown options are ignored (with a warning) instead of refused.
    sloppy: bool,
}

/// What the helper's arguments ask for.
enum Helper {
    /// `-h` or `--help`.
    Help,
    Mount(HelperArgs),
}

const HELPER_USAGE: &str =
    "usage: mount.lafs SOURCE MOUNTPOINT [-sfnv] [-N NAMESPACE] [-o OPTIONS] [-t lafs]";

/// Reads a helper's arguments (`args` without argv[0]). Flags may come before, between or after
/// the two operands and may be grouped (`-nv`); `-o`, `-t` and `-N` take a value, attached or
/// as the next argument. `-t` is accepted when it names this filesystem (`lafs`, or a
/// `TYPE.lafs` subtype such as `fuse.lafs`); `-s` (sloppy) lets unknown `-o` options through with
/// a warning; `-n` (no mtab) and `-v` change nothing for us. `-h`/`--help` asks for the usage.
fn parse_helper_args(args: Vec<OsString>) -> anyhow::Result<Helper> {
    let mut positional = Vec::new();
    let mut options = Vec::new();
    let mut fake = false;
    let mut sloppy = false;
    let mut namespace = None;
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        let s = a.to_string_lossy().into_owned();
        if s == "-h" || s == "--help" {
            return Ok(Helper::Help);
        }
        if !(s.starts_with('-') && s.len() > 1) {
            positional.push(a);
            continue;
        }
        for (i, c) in s[1..].char_indices() {
            match c {
                'f' => fake = true,
                's' => sloppy = true,
                'n' | 'v' => {}
                'h' => return Ok(Helper::Help),
                'o' | 't' | 'N' => {
                    let rest = &s[1 + i + c.len_utf8()..];
                    let value = if rest.is_empty() {
                        it.next()
                            .with_context(|| format!("mount.lafs: -{c} needs a value"))?
                    } else {
                        OsString::from(rest)
                    };
                    match c {
                        'o' => options.push(value.to_string_lossy().into_owned()),
                        'N' => namespace = Some(value),
                        _ => {
                            let t = value.to_string_lossy();
                            if t != "lafs" && !t.ends_with(".lafs") {
                                bail!("mount.lafs: -t {t}: this helper mounts type lafs only");
                            }
                        }
                    }
                    break;
                }
                _ => bail!("mount.lafs: unknown flag -{c}\n{HELPER_USAGE}"),
            }
        }
    }
    let [source, mountpoint] =
        <[OsString; 2]>::try_from(positional).map_err(|_| anyhow::anyhow!("{HELPER_USAGE}"))?;
    Ok(Helper::Mount(HelperArgs {
        source,
        mountpoint: PathBuf::from(mountpoint),
        options,
        fake,
        namespace,
        sloppy,
    }))
}

/// The `-o` options of `lafs mount` and `mount.lafs`, for their `--help` (a macro so that
/// `concat!` can build [`HELPER_OPTIONS`] from it).
macro_rules! mount_options {
    () => {
        "\
options (-o, comma-separated):
  ro, rw                   mount read-only / read-write (a read cap always mounts read-only)
  allow_other              let other users in (needs user_allow_other in /etc/fuse.conf)
  allow_root               let root in besides the owner (the same fuse.conf setting)
  noexec, exec             forbid / allow executing files (default exec; always nodev,nosuid)
  noapplexattr, noappledouble  macFUSE's options (macOS only; ignored elsewhere)
  default_permissions      let the kernel check permissions from the modes
  node-directory=DIR       the Tahoe node directory (default ~/.tahoe)
  cache-dir=PATH           the write-back and read cache (default NODEDIR/private/mount-cache/...)
  cache-size=BYTES         the cache's bound (default a tenth of the free space, 256 MiB..64 GiB)
  write-back-delay=SECS    upload a closed file after this delay (default 5)
  dir-refresh=SECS         re-read a directory listing after this time (default 30)
  read-ahead-kb=KB         the kernel's read-ahead for the mount (default: the kernel's)
  _netdev, noauto, nofail, x-*, ...  accepted and ignored"
    };
}

/// The options of `lafs mount -o`, shown after its `--help`.
pub const MOUNT_OPTIONS: &str = mount_options!();

/// The options and flags of `mount.lafs`, for its `--help`.
const HELPER_OPTIONS: &str = concat!(
    mount_options!(),
    "
flags: -f fake (check, do not mount)  -s sloppy (ignore unknown options)  -n -v (no effect)
       -N NAMESPACE (mount in that mount namespace)  -t lafs  -h, --help"
);

/// Mounts `/dev/fuse` at `mountpoint` with mount(2) and the filesystem type `fuse.lafs`, when
/// the process may (root, or CAP_SYS_ADMIN in its mount namespace); returns the device to
/// serve, or None to let fuser mount (it goes through `fusermount3`, which names the type
/// `fuse.lafs` itself). fuser's own mount(2) path would name the type plain `fuse`, so
/// `findmnt -t fuse.lafs`, `umount -a -t fuse.lafs` and `mount -a -t nofuse.lafs` would miss
/// root mounts. The options are those fuser would pass: the device's fd, the root's mode
/// (`mode`, the mount point's `st_mode`), the
/// caller's ids, and the two permission options the kernel itself implements.
#[cfg(target_os = "linux")]
fn mount_typed(
    mountpoint: &Path,
    mode: u32,
    mounted: &Mounted,
    opts: &Opts,
) -> Option<std::os::fd::OwnedFd> {
    use std::os::fd::{AsRawFd, OwnedFd};
    use std::os::unix::ffi::OsStrExt as _;
    let dev = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")
        .ok()?;
    // SAFETY: getuid and getgid cannot fail.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    let mut data = format!(
        "fd={},rootmode={mode:o},user_id={uid},group_id={gid}",
        dev.as_raw_fd()
    );
    if opts.default_permissions {
        data.push_str(",default_permissions");
    }
    // The kernel knows only allow_other; `allow_root` narrows it to root and the owner in the
    // session's own check of each request (fuser's `SessionACL::RootAndOwner`).
    if opts.allow_other || opts.allow_root {
        data.push_str(",allow_other");
    }
    let mut flags = libc::MS_NODEV | libc::MS_NOSUID;
    if mounted.read_only {
        flags |= libc::MS_RDONLY;
    }
    if opts.noexec {
        flags |= libc::MS_NOEXEC;
    }
    let target = std::ffi::CString::new(mountpoint.as_os_str().as_bytes()).ok()?;
    let data = std::ffi::CString::new(data).ok()?;
    // SAFETY: every pointer is a NUL-terminated string that outlives the call.
    let r = unsafe {
        libc::mount(
            c"lafs".as_ptr(),
            target.as_ptr(),
            c"fuse.lafs".as_ptr(),
            flags,
            data.as_ptr().cast(),
        )
    };
    if r != 0 {
        tracing::debug!(
            "mount(2) as fuse.lafs: {}; mounting through fuser",
            std::io::Error::last_os_error()
        );
        return None;
    }
    Some(OwnedFd::from(dev))
}

#[cfg(not(target_os = "linux"))]
fn mount_typed(
    _mountpoint: &Path,
    _mode: u32,
    _mounted: &Mounted,
    _opts: &Opts,
) -> Option<std::os::fd::OwnedFd> {
    None
}

/// Enters the mount namespace `ns` (mount(8)'s `-N`: a PID, or the path of a namespace file
/// such as `/proc/PID/ns/mnt`). Must run while the process has one thread (setns(2) refuses
/// CLONE_NEWNS otherwise), i.e. before any runtime starts; the daemon started later inherits it.
#[cfg(target_os = "linux")]
fn enter_namespace(ns: &std::ffi::OsStr) -> anyhow::Result<()> {
    use std::os::fd::AsRawFd;
    let text = ns.to_string_lossy();
    let path = if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        PathBuf::from(format!("/proc/{text}/ns/mnt"))
    } else {
        PathBuf::from(ns)
    };
    let f = std::fs::File::open(&path)
        .with_context(|| format!("opening namespace {}", path.display()))?;
    // SAFETY: setns takes a valid open descriptor (owned by `f` for the call) and a flag.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNS) } != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("entering mount namespace {}", path.display()));
    }
    Ok(())
}

#[cfg(not(target_os = "linux"))]
fn enter_namespace(_ns: &std::ffi::OsStr) -> anyhow::Result<()> {
    bail!("mount.lafs: -N (mount namespaces) exists on Linux only")
}

/// mount(8)'s exit statuses (util-linux `MNT_EX_USAGE`, `MNT_EX_FAIL`): `mount -t lafs` exits
/// with the helper's status, and systemd and scripts read it.
pub const MNT_EX_USAGE: u8 = 1;
pub const MNT_EX_FAIL: u8 = 32;

/// The context that marks a helper error as bad usage (arguments or options).
#[derive(Debug)]
struct HelperUsage;

impl std::fmt::Display for HelperUsage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("bad usage")
    }
}

/// The exit status of `mount.lafs` for an error it returned: 1 for bad arguments or options,
/// else 32 (the mount failed).
pub fn helper_exit_status(e: &anyhow::Error) -> u8 {
    if e.downcast_ref::<HelperUsage>().is_some() {
        MNT_EX_USAGE
    } else {
        MNT_EX_FAIL
    }
}

/// `mount.lafs SOURCE MOUNTPOINT [-sfnv] [-N NAMESPACE] [-o OPTIONS] [-t lafs]` (the mount(8)
/// helper convention, so `mount -t lafs` and fstab lines work): the same as
/// `lafs mount SOURCE MOUNTPOINT -o OPTIONS`; `-f` (fake) checks everything but mounts nothing.
pub fn mount_helper(args: Vec<OsString>) -> anyhow::Result<()> {
    let parsed = parse_helper_args(args.into_iter().skip(1).collect()).context(HelperUsage)?;
    let mut h = match parsed {
        Helper::Help => {
            use std::io::Write as _;
            writeln!(std::io::stdout().lock(), "{HELPER_USAGE}\n{HELPER_OPTIONS}")?;
            return Ok(());
        }
        Helper::Mount(h) => h,
    };
    let (parsed, unknown) = parse_opts_sloppy(&h.options, h.sloppy).context(HelperUsage)?;
    if !unknown.is_empty() {
        let names: Vec<&str> = unknown
            .iter()
            .map(|o| o.split_once('=').map_or(o.as_str(), |(k, _)| k))
            .collect();
        eprintln!(
            "mount.lafs: ignoring unknown options (-s): {}",
            names.join(", ")
        );
        h.options = known_options(&h.options, &unknown);
    }
    if let Some(ns) = &h.namespace {
        enter_namespace(ns)?;
    }
    let args = MountArgs {
        source: h.source.to_string_lossy().into_owned(),
        mountpoint: h.mountpoint,
        foreground: false,
        options: h.options,
        source_from_env: false,
    };
    let basedir = parsed.node_dir.unwrap_or_else(default_node_dir);
    if h.fake {
        return preflight(&basedir, &args);
    }
    run(Some(basedir), args)
}

/// The `-o` lists without the items in `unknown`, so that a sloppy mount's options parse again
/// in the daemon.
fn known_options(lists: &[String], unknown: &[String]) -> Vec<String> {
    let kept: Vec<&str> = lists
        .iter()
        .flat_map(|s| s.split(','))
        .filter(|i| !i.is_empty() && !unknown.iter().any(|u| u == i))
        .collect();
    if kept.is_empty() {
        Vec::new()
    } else {
        vec![kept.join(",")]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_cache_size_is_a_tenth_of_free_space_within_bounds() {
        assert_eq!(default_cache_size(Some(100 << 30)), 10 << 30);
        assert_eq!(default_cache_size(Some(1 << 30)), 256 << 20);
        assert_eq!(default_cache_size(Some(10 << 40)), 64 << 30);
        assert_eq!(default_cache_size(None), 1 << 30);
        let here = free_space(Path::new("/")).expect("statvfs of /");
        assert!(here > 0);
    }

    #[test]
    fn options_are_read_and_standard_ones_ignored() {
        let o = parse_opts(&[
            "ro,allow_other,_netdev,noauto,x-systemd.automount".into(),
            "cache-size=1000,write-back-delay=2.5,dir-refresh=30,node-directory=/n,read-ahead-kb=512".into(),
        ])
        .unwrap();
        assert!(o.ro && o.allow_other && !o.default_permissions);
        assert_eq!(o.cache_size, Some(1000));
        assert_eq!(o.write_back_delay, Some(Duration::from_millis(2500)));
        assert_eq!(o.dir_refresh, Some(Duration::from_secs(30)));
        assert_eq!(o.node_dir, Some(PathBuf::from("/n")));
        assert_eq!(o.read_ahead_kb, Some(512));
        assert!(parse_opts(&["read-ahead-kb=-1".into()]).is_err());
        assert!(parse_opts(&["frobnicate".into()]).is_err());
        assert!(parse_opts(&["write-back-delay=-1".into()]).is_err());
    }

    #[test]
    fn noexec_allow_root_and_macfuse_options_are_kept_not_dropped() {
        let o = parse_opts(&["noexec,allow_root,noapplexattr,noappledouble".into()]).unwrap();
        assert!(o.noexec && o.allow_root && !o.allow_other);
        assert_eq!(o.macos, ["noapplexattr", "noappledouble"]);
        let o = parse_opts(&["noexec".into(), "exec".into()]).unwrap();
        assert!(!o.noexec);
    }

    fn mount_args(source: &str) -> MountArgs {
        MountArgs {
            source: source.into(),
            mountpoint: "/mnt/x".into(),
            foreground: false,
            options: vec!["ro".into()],
            source_from_env: false,
        }
    }

    #[test]
    fn a_cap_source_stays_out_of_the_daemons_command_line() {
        let cap = "URI:DIR2:aaaaaaaaaaaaaaaaaaaaaaaaaa:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
        for source in [cap.to_string(), format!("{cap}/sub/dir")] {
            let argv = daemon_args(&mount_args(&source));
            assert!(
                argv.iter().all(|a| !a.to_string_lossy().contains("URI:")),
                "{argv:?}"
            );
            assert!(argv.contains(&OsString::from("--source-from-env")));
        }
        let argv = daemon_args(&mount_args("tahoe:sub"));
        let want: Vec<OsString> = ["mount", "--foreground", "tahoe:sub", "/mnt/x", "-o", "ro"]
            .into_iter()
            .map(OsString::from)
            .collect();
        assert_eq!(argv, want);
    }

    #[test]
    fn the_daemons_command_line_parses_back_to_the_same_mount() {
        use clap::Parser as _;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(subcommand)]
            cmd: Cmd,
        }
        #[derive(clap::Subcommand)]
        enum Cmd {
            Mount(MountArgs),
        }
        let cap = "URI:DIR2:aaaaaaaaaaaaaaaaaaaaaaaaaa:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
        for source in [cap, "tahoe:sub"] {
            let argv =
                std::iter::once(OsString::from("lafs")).chain(daemon_args(&mount_args(source)));
            let Cmd::Mount(m) = Cli::try_parse_from(argv).unwrap().cmd;
            assert!(m.foreground);
            assert_eq!(m.source_from_env, holds_cap(source));
            if !m.source_from_env {
                assert_eq!(m.source, source);
            }
            assert_eq!(m.mountpoint, PathBuf::from("/mnt/x"));
            assert_eq!(m.options, ["ro"]);
        }
    }

    fn helper(args: &[&str]) -> anyhow::Result<HelperArgs> {
        match parse_helper_args(args.iter().map(OsString::from).collect())? {
            Helper::Mount(h) => Ok(h),
            Helper::Help => anyhow::bail!("help"),
        }
    }

    #[test]
    fn helper_help_flag_asks_for_the_usage() {
        for args in [&["--help"][..], &["-h"], &["a:", "/m", "--help"], &["-vh"]] {
            let r = parse_helper_args(args.iter().map(OsString::from).collect()).unwrap();
            assert!(matches!(r, Helper::Help), "{args:?}");
        }
        // What `mount.lafs -h` runs: it prints the usage and succeeds (exit status 0).
        assert!(mount_helper(vec!["mount.lafs".into(), "-h".into()]).is_ok());
    }

    /// The helper's exit statuses follow mount(8): bad arguments or options are 1, a mount that
    /// fails (here: the checks of `-f` on a missing node directory or mount point) is 32.
    #[test]
    fn helper_errors_give_mounts_exit_statuses() {
        let status = |args: &[&str]| {
            let mut v: Vec<OsString> = vec!["mount.lafs".into()];
            v.extend(args.iter().map(OsString::from));
            helper_exit_status(&mount_helper(v).expect_err("the helper succeeded"))
        };
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap();
        let nonode = format!("node-directory={d}/nonode");
        assert_eq!(status(&["tahoe:"]), MNT_EX_USAGE, "no mount point");
        assert_eq!(status(&["tahoe:", d, "-o", "frobnicate"]), MNT_EX_USAGE);
        assert_eq!(
            status(&["tahoe:", d, "-o", "cache-size=lots"]),
            MNT_EX_USAGE
        );
        assert_eq!(status(&["-f", "tahoe:", d, "-o", &nonode]), MNT_EX_FAIL);
        let nodir = format!("{d}/nodir");
        assert_eq!(
            status(&["-f", "tahoe:", &nodir, "-o", &nonode]),
            MNT_EX_FAIL
        );
        // The message still says what was wrong.
        let e = mount_helper(vec![
            "mount.lafs".into(),
            "tahoe:".into(),
            d.into(),
            "-o".into(),
            "frobnicate".into(),
        ])
        .unwrap_err();
        assert!(format!("{e:#}").contains("frobnicate"), "{e:#}");
    }

    /// mount(8)'s `-s`: an option this helper does not know is let through (and dropped from
    /// the list the daemon parses again); without `-s` it is refused; a known option with a bad
    /// value is refused even with `-s`.
    #[test]
    fn sloppy_flag_lets_unknown_options_through() {
        let h = helper(&["a:", "/m", "-s", "-o", "ro,frobnicate,zap=1,cache-size=9"]).unwrap();
        assert!(h.sloppy);
        let (o, unknown) = parse_opts_sloppy(&h.options, h.sloppy).unwrap();
        assert!(o.ro);
        assert_eq!(o.cache_size, Some(9));
        assert_eq!(unknown, ["frobnicate", "zap=1"]);
        assert_eq!(known_options(&h.options, &unknown), ["ro,cache-size=9"]);
        assert!(parse_opts(&h.options).is_err());
        assert!(!helper(&["a:", "/m", "-o", "frobnicate"]).unwrap().sloppy);
        assert!(parse_opts_sloppy(&["cache-size=lots".into()], true).is_err());
        assert!(known_options(&["frobnicate".into()], &["frobnicate".into()]).is_empty());
    }

    /// The forms util-linux mount(8) uses: `mount.lafs SPEC DIR [-sfnv] [-N NS] [-o OPTS] [-t
    /// TYPE]`, flags anywhere, grouped, values attached or apart.
    #[test]
    fn helper_arguments_in_every_form_mount_8_passes_them() {
        let h = helper(&[
            "tahoe:",
            "/mnt",
            "-n",
            "-o",
            "ro,cache-size=1",
            "-t",
            "lafs",
        ])
        .unwrap();
        assert_eq!(h.source, OsString::from("tahoe:"));
        assert_eq!(h.mountpoint, PathBuf::from("/mnt"));
        assert_eq!(h.options, ["ro,cache-size=1"]);
        assert!(!h.fake && h.namespace.is_none());
        let h = helper(&[
            "-svn",
            "-oro",
            "-tfuse.lafs",
            "-N",
            "1234",
            "a:",
            "/m",
            "-o",
            "rw",
        ])
        .unwrap();
        assert_eq!(h.options, ["ro", "rw"]);
        assert_eq!(h.namespace, Some(OsString::from("1234")));
        let h = helper(&["a:", "/m", "-fvN/proc/1/ns/mnt"]).unwrap();
        assert!(h.fake);
        assert_eq!(h.namespace, Some(OsString::from("/proc/1/ns/mnt")));
        assert!(helper(&["a:", "/m", "-t", "nfs"]).is_err());
        assert!(helper(&["a:", "/m", "-x"]).is_err());
        assert!(helper(&["a:", "/m", "-o"]).is_err());
        assert!(helper(&["a:"]).is_err());
        assert!(helper(&["a:", "/m", "/extra"]).is_err());
    }

    #[test]
    fn the_topmost_mount_at_a_path_gives_the_device() {
        let info = "\
22 1 0:21 / / rw,relatime shared:1 - ext4 /dev/vda rw
40 22 0:45 / /tmp/a\\040b rw,nosuid,nodev - fuse.lafs lafs rw,user_id=0,group_id=0
41 22 0:46 / /tmp/m rw,nosuid,nodev - fuse.lafs lafs rw,user_id=0,group_id=0
42 41 0:47 / /tmp/m rw,nosuid,nodev - fuse.lafs lafs rw,user_id=0,group_id=0
43 22 0:48 / /tmp/m/sub rw - tmpfs tmpfs rw
";
        assert_eq!(mountinfo_device(info, "/tmp/m").as_deref(), Some("0:47"));
        assert_eq!(mountinfo_device(info, "/tmp/a b").as_deref(), Some("0:45"));
        assert_eq!(mountinfo_device(info, "/"), Some("0:21".into()));
        assert_eq!(mountinfo_device(info, "/tmp"), None);
        assert_eq!(mountinfo_device(info, "/tmp/a"), None);
    }

    #[test]
    fn unmount_runs_the_platforms_tool() {
        let args = |forced| {
            let c = unmount_command(Path::new("/m"), forced);
            std::iter::once(c.get_program())
                .chain(c.get_args())
                .map(|a| a.to_string_lossy().into_owned())
                .collect::<Vec<_>>()
        };
        if cfg!(target_os = "macos") {
            assert_eq!(args(false), ["umount", "/m"]);
            assert_eq!(args(true), ["umount", "-f", "/m"]);
        } else {
            assert_eq!(args(false), ["fusermount3", "-u", "/m"]);
            assert_eq!(args(true), ["fusermount3", "-u", "-z", "/m"]);
        }
    }

    #[test]
    fn a_start_failure_shows_the_last_lines_of_the_log() {
        assert_eq!(tail("a\nb\nc\n", 2), "b\nc");
        assert_eq!(tail("a", 5), "a");
        assert_eq!(tail("", 5), "");
    }

    #[test]
    fn umount_and_status_arguments() {
        use clap::Parser;
        let cli = crate::cli::Cli::try_parse_from(["lafs", "umount", "--flush", "/m"]).unwrap();
        let crate::cli::Command::Umount(a) = cli.command else {
            panic!("not umount")
        };
        assert!(a.flush);
        assert_eq!(a.mountpoint, PathBuf::from("/m"));
        let cli = crate::cli::Cli::try_parse_from(["lafs", "umount", "/m"]).unwrap();
        assert!(matches!(cli.command, crate::cli::Command::Umount(a) if !a.flush));
        let cli = crate::cli::Cli::try_parse_from(["lafs", "status", "--json", "/m"]).unwrap();
        assert!(matches!(cli.command, crate::cli::Command::Status(a) if a.json));
        assert!(crate::cli::Cli::try_parse_from(["lafs", "status"]).is_err());
    }
}
