//! `lafs status [--json] MOUNTPOINT` and `lafs umount [--flush] MOUNTPOINT`.
//!
//! Both talk to the mount through its virtual files ([`lafs::fuse::status`]): `status` reads
//! `MOUNTPOINT/.lafs-status` (JSON) and prints it as it is (`--json`) or in human form.
//! `umount --flush` writes `flush` to `MOUNTPOINT/.lafs-control`, which returns once every
//! pending upload and directory publish is on the grid; when that fails it prints the mount's
//! errors and leaves the mount up (nothing is lost: retry, or unmount without `--flush`).
//! Then both unmount (`fusermount3 -u`; macOS: `umount`) and, when the serving process exits at
//! unmount (`lafs mount`; `lafs up` keeps its grid running), wait until it has: it uploads what
//! is still pending first (bounded; the rest stays in the cache for the next mount with that
//! cache).

use super::mount::unmount;
use anyhow::{bail, Context};
use clap::Args;
use lafs::fuse::status::{StatusReport, CONTROL_NAME, FLUSH_COMMAND, STATUS_NAME};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(Args, Debug)]
pub struct StatusArgs {
    /// Print the mount's status file as it is (JSON).
    #[arg(long)]
    pub json: bool,
    /// The mount point.
    pub mountpoint: PathBuf,
}

#[derive(Args, Debug)]
pub struct UmountArgs {
    /// First wait until everything written is on the grid (fails, still mounted, if it cannot).
    #[arg(long)]
    pub flush: bool,
    /// The mount point.
    pub mountpoint: PathBuf,
}

/// The mount's status: the file's text and its parsed form.
pub fn read_status(mountpoint: &Path) -> anyhow::Result<(String, StatusReport)> {
    let path = mountpoint.join(STATUS_NAME);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!("{} is not a lafs mount", mountpoint.display())
        }
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let report = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a lafs status file", path.display()))?;
    Ok((text, report))
}

pub fn status(a: StatusArgs) -> anyhow::Result<()> {
    let (text, report) = read_status(&a.mountpoint)?;
    let mut out = std::io::stdout().lock();
    if a.json {
        out.write_all(text.as_bytes())?;
    } else {
        out.write_all(report.human().as_bytes())?;
    }
    Ok(())
}

pub fn umount(a: UmountArgs) -> anyhow::Result<()> {
    let (_, before) = read_status(&a.mountpoint)?;
    // A read-only mount has nothing to flush (and the kernel refuses to open its control
    // file for writing).
    if a.flush && !before.mount.read_only {
        if !before.clean {
            eprintln!(
                "lafs umount: uploading {} files and {} directory changes first",
                before.uploads_queued + before.uploads_in_flight,
                before.pending_dir_changes
            );
        }
        let ctl = a.mountpoint.join(CONTROL_NAME);
        let res = std::fs::OpenOptions::new()
            .write(true)
            .open(&ctl)
            .and_then(|mut f| f.write_all(format!("{FLUSH_COMMAND}\n").as_bytes()));
        if let Err(e) = res {
            let detail = match read_status(&a.mountpoint) {
                Ok((_, r)) => r
                    .last_flush_error
                    .into_iter()
                    .chain(r.last_errors)
                    .map(|e| format!("\n  {e}"))
                    .collect::<String>(),
                Err(_) => String::new(),
            };
            bail!(
                "the flush failed ({e}); {} is still mounted{detail}",
                a.mountpoint.display()
            );
        }
    }
    unmount(&a.mountpoint, false)?;
    if before.mount.exits_on_unmount {
        wait_exit(before.mount.pid);
    }
    Ok(())
}

/// Waits until process `pid` (not our child), a daemon flushing at unmount, is gone. Not bounded
/// here: the daemon stops by itself once its uploads stop progressing for
/// [`lafs::fuse::FLUSH_AT_UNMOUNT`], and goes on while they progress, however long the backlog.
fn wait_exit(pid: u32) {
    let started = Instant::now();
    let mut told = false;
    while running(pid) {
        if !told && started.elapsed() > Duration::from_secs(3) {
            eprintln!(
                "lafs umount: the mount daemon (pid {pid}) is uploading what is pending; \
                 interrupting this wait leaves it uploading in the background"
            );
            told = true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Whether `pid` runs: gone, or a zombie nobody reaped yet (state `Z` after the `(comm)` of
/// /proc/PID/stat), is not running.
#[cfg(not(target_os = "macos"))]
fn running(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(st) => st
            .rsplit_once(") ")
            .is_none_or(|(_, rest)| !rest.starts_with('Z')),
        Err(_) => false,
    }
}

/// macOS has no /proc: `kill(pid, 0)` tells whether the process exists (EPERM: it does, as
/// another user's). The daemon is launchd's child by then, which reaps it at once.
#[cfg(target_os = "macos")]
fn running(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: signal 0 only checks that the process exists; nothing is sent.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}
