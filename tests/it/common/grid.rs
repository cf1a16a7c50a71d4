//! Rust side of the loopback Tahoe grid: drives `tests/interop/tahoe_grid.py` (see its docstring)
//! for the interop tests (`use crate::common::grid;`).
//!
//! Invariants:
//! - every wait is bounded: the grid start, each command (killed at its deadline) and the
//!   shutdown in `Drop`;
//! - the grid never outlives the test: the supervisor (`tahoe_grid.py up`) reads our pipe as its
//!   stdin and stops all nodes when it closes, which happens in `Drop`, on a panic, or when the
//!   test process dies; `--lifetime` is a last-resort bound should the pipe stay open.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Encoding parameters of one client node of the grid (Tahoe reads them at node start-up).
pub struct ClientSpec {
    pub name: &'static str,
    pub needed: u32,
    pub happy: u32,
    pub total: u32,
    /// `[client] shares._max_immutable_segment_size_for_testing`; `None` keeps Tahoe's 1 MiB.
    pub max_segment_size: Option<u64>,
}

/// One share file found on a server.
pub struct ShareFile {
    pub server: String,
    pub shnum: u32,
    pub path: PathBuf,
}

/// A running grid; dropped = stopped.
pub struct Grid {
    dir: tempfile::TempDir,
    python: PathBuf,
    script: PathBuf,
    supervisor: Child,
    stdin: Option<ChildStdin>,
}

/// How long the supervisor may live at most, whatever happens to the test.
const LIFETIME: Duration = Duration::from_secs(600);

fn script_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/interop/tahoe_grid.py")
}

impl Grid {
    /// Creates and starts a grid of `servers` storage nodes and the given clients, all with the
    /// same convergence secret; returns once every client is connected to every server.
    pub fn up(
        venv: &Path,
        servers: usize,
        clients: &[ClientSpec],
        convergence_secret: &[u8],
        timeout: Duration,
    ) -> Grid {
        Self::up_with(venv, servers, clients, convergence_secret, timeout, &[])
    }

    /// A grid of client nodes only, with no introducer: each client's `private/servers.yaml`
    /// is `servers_yaml` (storage servers run elsewhere, e.g. by lafs). Returns once every
    /// client sees `expect_servers` servers connected.
    pub fn up_static(
        venv: &Path,
        clients: &[ClientSpec],
        servers_yaml: &str,
        expect_servers: usize,
        convergence_secret: &[u8],
        timeout: Duration,
    ) -> Grid {
        let file = std::env::temp_dir().join(format!(
            "lafs-servers-{}-{}.yaml",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        ));
        std::fs::write(&file, servers_yaml).expect("write servers.yaml");
        let extra = [
            "--no-introducer".to_string(),
            "--servers-yaml".to_string(),
            file.to_str().expect("utf-8 temp path").to_string(),
            "--expect-servers".to_string(),
            expect_servers.to_string(),
        ];
        let g = Self::up_with(venv, 0, clients, convergence_secret, timeout, &extra);
        let _ = std::fs::remove_file(&file);
        g
    }

    fn up_with(
        venv: &Path,
        servers: usize,
        clients: &[ClientSpec],
        convergence_secret: &[u8],
        timeout: Duration,
        extra: &[String],
    ) -> Grid {
        let dir = tempfile::Builder::new()
            .prefix("lafs-tahoe-grid-")
            .tempdir()
            .expect("create temp dir for the grid");
        let python = venv.join("bin/python3");
        let script = script_path();
        let log_path = dir.path().join("supervisor.log");
        let log = std::fs::File::create(&log_path).expect("create supervisor.log");
        let mut cmd = Command::new(&python);
        cmd.arg(&script)
            .arg("--tahoe")
            .arg(venv.join("bin/tahoe"))
            .arg("up")
            .arg("--dir")
            .arg(dir.path().join("grid"))
            .arg("--servers")
            .arg(servers.to_string())
            .arg("--convergence-b32")
            .arg(lafs::util::base32::encode(convergence_secret))
            .arg("--timeout")
            .arg(timeout.as_secs().to_string())
            .arg("--lifetime")
            .arg(LIFETIME.as_secs().to_string())
            .args(extra);
        for c in clients {
            let seg = c
                .max_segment_size
                .map(|s| s.to_string())
                .unwrap_or_default();
            cmd.arg("--client").arg(format!(
                "{}:{}:{}:{}:{}",
                c.name, c.needed, c.happy, c.total, seg
            ));
        }
        let mut supervisor = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("spawn tahoe_grid.py up");
        let stdin = supervisor.stdin.take();
        let stdout = supervisor.stdout.take().expect("supervisor stdout");
        let grid = Grid {
            dir,
            python,
            script,
            supervisor,
            stdin,
        };

        // Wait for the READY line, bounded. Node creation is part of `up`, so allow for it on a
        // loaded machine on top of `timeout` (which bounds the start-up wait inside the script).
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + timeout + Duration::from_secs(150);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) if line.starts_with("READY ") => break,
                Ok(_) => continue,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    let log = grid.log();
                    drop(grid);
                    panic!("tahoe grid not ready in time; supervisor.log:\n{log}");
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let log = grid.log();
                    drop(grid);
                    panic!("tahoe grid failed to start; supervisor.log:\n{log}");
                }
            }
        }
        grid
    }

    /// The grid directory (node dirs, grid.json).
    pub fn grid_dir(&self) -> PathBuf {
        self.dir.path().join("grid")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("supervisor.log")).unwrap_or_default()
    }

    /// Runs a `tahoe_grid.py` subcommand on this grid; returns stdout. Panics on failure or after
    /// `timeout` (the child is killed).
    pub fn run(&self, args: &[&str], timeout: Duration) -> String {
        let mut cmd = Command::new(&self.python);
        cmd.arg(&self.script).args(args);
        let out = run_bounded(cmd, timeout);
        assert!(
            out.ok,
            "tahoe_grid.py {} failed:\n{}\n{}",
            args.first().unwrap_or(&""),
            out.stdout,
            out.stderr
        );
        out.stdout
    }

    /// The `tahoe` executable of the grid's venv.
    pub fn tahoe(&self) -> PathBuf {
        self.python.with_file_name("tahoe")
    }

    /// Runs the `tahoe` CLI against client `client` (`tahoe -d DIR ARGS...`), bounded; returns
    /// stdout, panics with the output on failure.
    pub fn tahoe_cli(
        &self,
        client: &str,
        args: &[&str],
        stdin: Option<&[u8]>,
        timeout: Duration,
    ) -> String {
        let mut cmd = Command::new(self.tahoe());
        cmd.arg("-d").arg(self.client_dir(client)).args(args);
        let out = match stdin {
            None => run_bounded(cmd, timeout),
            Some(data) => {
                let file = tempfile::NamedTempFile::new_in(self.dir.path()).expect("temp file");
                std::fs::write(file.path(), data).expect("write stdin file");
                let f = std::fs::File::open(file.path()).expect("open stdin file");
                run_bounded_stdin(cmd, Stdio::from(f), timeout)
            }
        };
        assert!(
            out.ok,
            "tahoe {} failed:\n{}\n{}",
            args.join(" "),
            out.stdout,
            out.stderr
        );
        out.stdout
    }

    /// Uploads `data` with `tahoe put` through client `client`; returns the cap.
    pub fn put(&self, client: &str, data: &[u8], timeout: Duration) -> String {
        let file = tempfile::NamedTempFile::new_in(self.dir.path()).expect("temp file");
        std::fs::write(file.path(), data).expect("write upload file");
        let dir = self.grid_dir();
        let out = self.run(
            &[
                "put",
                "--dir",
                dir.to_str().expect("utf-8 temp path"),
                "--client",
                client,
                "--timeout",
                &timeout.as_secs().to_string(),
                file.path().to_str().expect("utf-8 temp path"),
            ],
            timeout + Duration::from_secs(30),
        );
        out.trim().to_string()
    }

    /// Every share file of storage index `si` (lowercase base32) on the grid's servers.
    pub fn shares_of_si(&self, si: &str, timeout: Duration) -> Vec<ShareFile> {
        self.shares_by(&["--si", si], timeout)
    }

    fn shares_by(&self, which: &[&str], timeout: Duration) -> Vec<ShareFile> {
        let dir = self.grid_dir();
        let mut args = vec!["shares", "--dir", dir.to_str().expect("utf-8 temp path")];
        args.extend_from_slice(which);
        let out = self.run(&args, timeout);
        let v: serde_json::Value = serde_json::from_str(&out).expect("shares JSON");
        v["shares"]
            .as_array()
            .expect("shares array")
            .iter()
            .map(|s| ShareFile {
                server: s["server"].as_str().expect("server").to_string(),
                shnum: u32::try_from(s["shnum"].as_u64().expect("shnum")).expect("shnum fits"),
                path: PathBuf::from(s["path"].as_str().expect("path")),
            })
            .collect()
    }
}

/// One storage server of the grid, from grid.json.
pub struct ServerInfo {
    pub name: String,
    /// The 20-byte node id (Foolscap TubID): write-enabler and lease seed.
    pub nodeid: [u8; 20],
    /// `<node dir>/storage`; shares live in `shares/<si[:2]>/<si>/<shnum>` below it.
    pub storage_dir: PathBuf,
}

/// The answer of a web-API request.
pub struct HttpResponse {
    pub status: u16,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

impl Grid {
    /// grid.json as written by the harness (node dirs, ports, server node ids).
    pub fn description(&self) -> serde_json::Value {
        let text = std::fs::read_to_string(self.grid_dir().join("grid.json")).expect("grid.json");
        serde_json::from_str(&text).expect("grid.json is JSON")
    }

    /// The storage servers with their node ids (from each server's `my_nodeid`).
    pub fn servers(&self) -> Vec<ServerInfo> {
        let desc = self.description();
        desc["servers"]
            .as_array()
            .expect("servers array")
            .iter()
            .map(|s| {
                let b32 = s["nodeid"].as_str().expect("server nodeid in grid.json");
                let raw = lafs::util::base32::decode(b32.trim()).expect("nodeid is base32");
                ServerInfo {
                    name: s["name"].as_str().expect("name").to_string(),
                    nodeid: raw.as_slice().try_into().expect("20-byte nodeid"),
                    storage_dir: PathBuf::from(s["storage_dir"].as_str().expect("storage_dir")),
                }
            })
            .collect()
    }

    fn client_desc(&self, client: &str) -> serde_json::Value {
        let desc = self.description();
        desc["clients"]
            .as_array()
            .expect("clients array")
            .iter()
            .find(|c| c["name"] == client)
            .unwrap_or_else(|| panic!("no client {client:?} in grid.json"))
            .clone()
    }

    /// The node directory of client `client`.
    pub fn client_dir(&self, client: &str) -> PathBuf {
        PathBuf::from(
            self.client_desc(client)["dir"]
                .as_str()
                .expect("client dir"),
        )
    }

    /// The lafs client's view of the grid's storage nodes (HTTPS). Each server's NURL is built as
    /// Tahoe does: the SPKI pin of `private/node.pem`, the swissnum of `private/storage.furl`,
    /// the tub port; its lease seed is the fURL's TubID.
    pub fn server_set(&self) -> lafs::client::ServerSet {
        let desc = self.description();
        let mut servers = Vec::new();
        for s in desc["servers"].as_array().expect("servers") {
            let dir = PathBuf::from(s["dir"].as_str().expect("server dir"));
            let port = s["tub_port"].as_u64().expect("tub_port");
            let name = s["name"].as_str().expect("name").to_string();
            let furl =
                std::fs::read_to_string(dir.join("private/storage.furl")).expect("storage.furl");
            let furl = furl.trim();
            let swissnum = furl.rsplit_once('/').expect("fURL swissnum").1;
            let tubid = lafs::grid::furl::tubid_from_furl(furl).expect("fURL TubID");
            let pem = std::fs::read(dir.join("private/node.pem")).expect("node.pem");
            let id = lafs::protocol::tls::NodeIdentity::from_pem(&pem).expect("node.pem parses");
            assert_eq!(
                id.tub_id_bytes(),
                tubid,
                "TubID of node.pem and of the fURL"
            );
            let nurl = format!(
                "pb://{}@127.0.0.1:{port}/{swissnum}#v=1",
                id.pin().expect("pin")
            );
            let client = lafs::protocol::client::StorageClient::new(
                &nurl,
                lafs::protocol::client::ClientOptions::default(),
            )
            .expect("client");
            servers.push(std::sync::Arc::new(lafs::client::ServerHandle {
                desc: lafs::grid::server::StorageServerDesc {
                    // The permutation seed only orders servers; Tahoe's own (from the node key) is
                    // not needed for interop.
                    permutation_seed: <sha2::Sha256 as sha2::Digest>::digest(name.as_bytes())
                        .to_vec(),
                    server_id: name.clone(),
                    nickname: name,
                    furl: lafs::grid::furl::Furl::parse(furl).ok(),
                    nurls: lafs::grid::furl::Nurl::parse(&nurl).into_iter().collect(),
                    lease_seed: tubid,
                },
                client,
            }));
        }
        lafs::client::ServerSet { servers }
    }

    /// One HTTP/1.0 request to client `client`'s web API (`target` = path and query, already
    /// percent-encoded). Bounded: connect, every read and every write time out at `timeout`, and
    /// the whole exchange is abandoned after it.
    pub fn http(
        &self,
        client: &str,
        method: &str,
        target: &str,
        body: &[u8],
        timeout: Duration,
    ) -> HttpResponse {
        use std::io::Write;
        let port = self.client_desc(client)["web_port"]
            .as_u64()
            .expect("client web_port");
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port as u16));
        let deadline = Instant::now() + timeout;
        let mut s = std::net::TcpStream::connect_timeout(&addr, timeout).expect("connect web API");
        s.set_read_timeout(Some(timeout)).expect("read timeout");
        s.set_write_timeout(Some(timeout)).expect("write timeout");
        // HTTP/1.0 without keep-alive: the server closes after the answer and never chunks it.
        let head = format!(
            "{method} {target} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n",
            body.len()
        );
        s.write_all(head.as_bytes()).expect("send request");
        s.write_all(body).expect("send body");
        let mut raw = Vec::new();
        let mut buf = [0u8; 65536];
        loop {
            assert!(
                Instant::now() < deadline,
                "{method} {target}: no complete answer within {timeout:?}"
            );
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => raw.extend_from_slice(&buf[..n]),
                Err(e) => panic!("{method} {target}: reading the answer: {e}"),
            }
        }
        let split = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("HTTP answer has a header");
        let headers = String::from_utf8_lossy(&raw[..split]).into_owned();
        let status: u16 = headers
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .expect("HTTP status code");
        let mut body = raw[split + 4..].to_vec();
        if headers
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
        {
            body = dechunk(&body);
        }
        HttpResponse { status, body }
    }
}

/// Decodes a chunked HTTP body (should an HTTP/1.0 answer use it anyway).
fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let eol = b
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("chunk size line");
        let size_text = String::from_utf8_lossy(&b[..eol]).into_owned();
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .expect("chunk size");
        b = &b[eol + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&b[..size]);
        b = &b[size + 2..];
    }
}

impl Drop for Grid {
    fn drop(&mut self) {
        // Closing the supervisor's stdin makes it stop every node (bounded inside the script:
        // SIGTERM, then SIGKILL after a grace period). Bound our own wait as well.
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match self.supervisor.try_wait() {
                Ok(Some(_)) => return,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(100))
                }
                _ => break,
            }
        }
        // The supervisor hung: kill it; its nodes then see their stdin close and exit.
        let _ = self.supervisor.kill();
        let _ = self.supervisor.wait();
    }
}

/// Output of a bounded command.
pub struct Bounded {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `cmd` with no stdin, capturing output; kills it at `timeout` (then `ok` is false and
/// stderr says so).
pub fn run_bounded(cmd: Command, timeout: Duration) -> Bounded {
    run_bounded_stdin(cmd, Stdio::null(), timeout)
}

/// [`run_bounded`] with the given stdin.
pub fn run_bounded_stdin(mut cmd: Command, stdin: Stdio, timeout: Duration) -> Bounded {
    let mut child = cmd
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn command");
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    // Read both pipes on threads so a chatty child never blocks on a full pipe.
    let t_out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let t_err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait().expect("wait for command") {
            Some(st) => break Some(st),
            None if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            None => std::thread::sleep(Duration::from_millis(50)),
        }
    };
    let stdout = t_out.join().unwrap_or_default();
    let mut stderr = t_err.join().unwrap_or_default();
    if status.is_none() {
        stderr.push_str(&format!("\n(killed after {timeout:?})"));
    }
    Bounded {
        ok: status.is_some_and(|s| s.success()),
        stdout,
        stderr,
    }
}
