//! Storage nodes of both kinds for the interop tests: `tahoe run` and `lafs create-node` node
//! directories, the servers.yaml that lists them, and small probes of a running grid. Shared by
//! every test that mixes Tahoe and lafs servers.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::grid::{run_bounded, Grid};
use super::lafs_node::free_port;

const LAFS: &str = env!("CARGO_BIN_EXE_lafs");
const CMD_TIMEOUT: Duration = Duration::from_secs(180);

/// A `tahoe run` of one node directory, in its own process group, with a stdin pipe (Tahoe
/// exits by itself when it closes, so even a killed test leaves no node behind).
pub struct TahoeNode {
    child: Child,
}

impl TahoeNode {
    pub fn start(venv: &Path, dir: &Path) -> TahoeNode {
        use std::os::unix::process::CommandExt as _;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("run.log"))
            .expect("run.log");
        let child = Command::new(venv.join("bin/tahoe"))
            .arg("run")
            .arg(dir)
            .stdin(Stdio::piped())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .process_group(0)
            .spawn()
            .expect("spawn tahoe run");
        TahoeNode { child }
    }

    pub fn stop(mut self) {
        terminate(&mut self.child);
    }
}

impl Drop for TahoeNode {
    fn drop(&mut self) {
        terminate(&mut self.child);
    }
}

/// SIGTERM to the child's process group, a bounded wait, then SIGKILL.
pub fn terminate(child: &mut Child) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    let pid = i32::try_from(child.id()).expect("pid");
    // SAFETY: kill(2) on our own child's process group (it was started with process_group(0)).
    unsafe { libc::kill(-pid, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // SAFETY: as above.
    unsafe { libc::kill(-pid, libc::SIGKILL) };
    let _ = child.wait();
}

/// `lafs ARGS`, bounded, which must succeed; returns stdout.
pub fn lafs(args: &[&str]) -> String {
    let mut cmd = Command::new(LAFS);
    cmd.args(args);
    let out = run_bounded(cmd, CMD_TIMEOUT);
    assert!(out.ok, "lafs {args:?} failed: {}", out.stderr);
    out.stdout
}

pub fn create_lafs_node(dir: &Path, name: &str) {
    let port = free_port();
    lafs(&[
        "create-node",
        "--storage",
        &format!("--port=tcp:{port}:interface=127.0.0.1"),
        &format!("--location=tcp:127.0.0.1:{port}"),
        &format!("--nickname={name}"),
        "--webport=none",
        "--reserved-space=0",
        dir.to_str().expect("utf-8 path"),
    ]);
}

/// The servers.yaml text listing these nodes, Tahoe's or lafs's (`lafs announcement DIR`).
pub fn servers_yaml(dirs: &[PathBuf]) -> String {
    let mut all = lafs::config::ServersYaml::default();
    for d in dirs {
        let text = lafs(&["announcement", d.to_str().expect("utf-8 path")]);
        let y = lafs::config::ServersYaml::parse(&text).expect("announcement is servers.yaml");
        all.storage.extend(y.storage);
    }
    all.to_yaml_string().expect("servers.yaml text")
}

/// Deterministic test bytes (xorshift), independent of any code under test.
pub fn data(seed: u8, len: usize) -> Vec<u8> {
    let mut x = u32::from(seed) | 0x9e37_0000;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

/// How many storage servers client `client` shows as connected.
pub fn connected_servers(g: &Grid, client: &str) -> usize {
    let r = g.http(client, "GET", "/?t=json", b"", Duration::from_secs(10));
    if r.status != 200 {
        return 0;
    }
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap_or_default();
    v["servers"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|s| {
                    s["connection_status"]
                        .as_str()
                        .unwrap_or("")
                        .to_ascii_lowercase()
                        .starts_with("connected")
                })
                .count()
        })
        .unwrap_or(0)
}

pub fn count_share_files(storage: &Path) -> usize {
    let mut n = 0;
    let Ok(prefixes) = std::fs::read_dir(storage.join("shares")) else {
        return 0;
    };
    for p in prefixes.flatten() {
        if p.file_name() == "incoming" {
            continue;
        }
        for b in std::fs::read_dir(p.path()).into_iter().flatten().flatten() {
            n += std::fs::read_dir(b.path()).into_iter().flatten().count();
        }
    }
    n
}
