//! A `lafs run` storage node started from the built binary, for integration tests: it waits
//! (bounded) for the node's `ready` line, keeps the fURL, NURL and server id it printed, stops it
//! with SIGTERM on request, and kills it when dropped (also on panic), so no test leaves a node
//! behind.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long a node may take to print `ready`.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// A running `lafs run DIR`.
pub struct LafsNode {
    child: Child,
    pub nurl: String,
    pub furl: String,
    pub server_id: String,
}

impl LafsNode {
    /// Starts `lafs run dir` and waits until it prints `ready`.
    pub fn start(dir: &Path) -> LafsNode {
        Self::start_with(dir, Stdio::inherit(), None)
    }

    /// [`LafsNode::start`] with the node's log (stderr) appended to `log`, filtered by
    /// `rust_log`.
    // Only the Tor test (feature `tor`) uses it.
    #[cfg_attr(not(feature = "tor"), allow(dead_code))]
    pub fn start_logging(dir: &Path, log: &Path, rust_log: &str) -> LafsNode {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("node log file");
        Self::start_with(dir, Stdio::from(file), Some(rust_log))
    }

    fn start_with(dir: &Path, stderr: Stdio, rust_log: Option<&str>) -> LafsNode {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_lafs"));
        cmd.arg("run")
            .arg(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr);
        if let Some(f) = rust_log {
            cmd.env("RUST_LOG", f);
        }
        let mut child = cmd.spawn().expect("spawn lafs run");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut node = LafsNode {
            child,
            nurl: String::new(),
            furl: String::new(),
            server_id: String::new(),
        };
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(l) if l == "ready" => break,
                Ok(l) => {
                    if let Some(v) = l.strip_prefix("nurl: ") {
                        node.nurl = v.to_string();
                    } else if let Some(v) = l.strip_prefix("furl: ") {
                        node.furl = v.to_string();
                    } else if let Some(v) = l.strip_prefix("server-id: ") {
                        node.server_id = v.to_string();
                    }
                }
                Err(e) => panic!("lafs run on {} did not become ready: {e:?}", dir.display()),
            }
        }
        assert!(node.nurl.ends_with("#v=1"), "lafs run printed a NURL");
        node
    }

    /// SIGTERM, then a bounded wait for a clean exit (status 0).
    pub fn stop(mut self) {
        let pid = i32::try_from(self.child.id()).expect("pid");
        // SAFETY: plain kill(2) on our own child's pid, which has not been waited for yet.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(st) = self.child.try_wait().expect("wait") {
                assert!(st.success(), "lafs run exits 0 on SIGTERM, got {st}");
                return;
            }
            assert!(Instant::now() < deadline, "lafs run ignored SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for LafsNode {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A TCP port that was free on 127.0.0.1 a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}
