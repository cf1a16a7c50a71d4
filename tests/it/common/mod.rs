//! Helpers shared by the integration tests: where the Tahoe-LAFS 1.20 venv made by `.ci/setup`
//! lives, and the rule for when an external input (that venv, Tahoe's conformance vectors) is
//! missing.
//!
//! The rule: a test whose input is absent prints a clear message and returns (a developer box
//! without the vectors or without Tahoe still gets a green `cargo test`), except when the
//! environment has `CI=true`, where absence is a failure so that CI can never pass by skipping.
//!
//! Submodules: `lafs_node` (a `lafs run` storage node), `grid` (the loopback Tahoe grid of
//! `tests/interop/tahoe_grid.py`), `nodes` (Tahoe and lafs storage nodes for mixed grids).

use std::io::{Read as _, Write as _};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

pub mod grid;
pub mod lafs_node;
pub mod nodes;

/// True when running in CI (`CI=true`): missing inputs fail instead of skipping.
pub fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// The Tahoe-LAFS 1.20 venv made by `.ci/setup`: `$LAFS_TAHOE_VENV`, else
/// `$HOME/.cache/lafs/tahoe-venv` (possibly a symlink). `None` unless `bin/tahoe` and
/// `bin/python3` exist in it.
pub fn tahoe_venv() -> Option<PathBuf> {
    let venv = match std::env::var_os("LAFS_TAHOE_VENV") {
        Some(v) => PathBuf::from(v),
        None => PathBuf::from(std::env::var_os("HOME")?).join(".cache/lafs/tahoe-venv"),
    };
    (venv.join("bin/tahoe").is_file() && venv.join("bin/python3").exists()).then_some(venv)
}

/// Returns `found` when it is `Some`. When it is `None`, prints why the test is skipped and
/// returns `None`, or panics under `CI=true`. Use as
/// `let Some(venv) = common::require("the Tahoe-LAFS 1.20 venv", common::tahoe_venv()) else { return };`.
pub fn require<T>(what: &str, found: Option<T>) -> Option<T> {
    if found.is_none() {
        let msg =
            format!("{what} not found (set LAFS_VECTORS_DIR / LAFS_TAHOE_VENV, or run .ci/setup)");
        if ci() {
            panic!("{msg}; CI=true, so this is a failure");
        }
        eprintln!("SKIPPED: {msg}");
    }
    found
}

/// Held for the whole of each heavy test: those that run real Tahoe-LAFS nodes (loopback grids,
/// storage servers, Python's zfec and storage code), the private Tor network, and the vector
/// tests that keep every core busy. All integration tests share one process and run on parallel
/// test threads; two heavy ones at once on a 2-core machine would stretch each other's bounded
/// waits (grid start-up, Tor bootstrap), so they take turns, as they did when each was a test
/// binary of its own. Light tests still run beside them.
pub fn heavy() -> MutexGuard<'static, ()> {
    static HEAVY: Mutex<()> = Mutex::new(());
    // The guarded `()` holds no state a panicking test could leave half-updated.
    HEAVY.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Runs a command to completion with a deadline, feeding it `stdin` and collecting its output;
/// the child is killed past the deadline (then `timed_out` is true).
pub fn run_bounded_timed(
    cmd: &mut Command,
    stdin: Option<&[u8]>,
    timeout: Duration,
) -> (Output, bool) {
    let mut child = cmd
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    if let Some(data) = stdin {
        let mut w = child.stdin.take().expect("stdin");
        let data = data.to_vec();
        std::thread::spawn(move || {
            let _ = w.write_all(&data);
        });
    }
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let t_out = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let t_err = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    let deadline = Instant::now() + timeout;
    let (status, timed_out) = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break (st, false);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            break (child.wait().expect("wait after kill"), true);
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = Output {
        status,
        stdout: t_out.join().expect("stdout reader"),
        stderr: t_err.join().expect("stderr reader"),
    };
    (out, timed_out)
}

/// [`run_bounded_timed`] without the flag: a killed child shows as its (signal) exit status.
// Only the Tor test (feature `tor`) uses it.
#[cfg_attr(not(feature = "tor"), allow(dead_code))]
pub fn run_bounded(cmd: &mut Command, stdin: Option<&[u8]>, timeout: Duration) -> Output {
    run_bounded_timed(cmd, stdin, timeout).0
}
