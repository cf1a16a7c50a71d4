//! `pb+tor://` end to end on a private Tor network on 127.0.0.1.
//!
//! The harness starts a TestingTorNetwork made with Debian's `tor` and `tor-gencert`: three
//! directory authorities (keys from `tor-gencert`), three more relays, every one voted Guard,
//! Exit and HSDir, with 15-second voting (chutney's "rapid bootstrap" settings, written anew
//! here; 15 s rather than 10 so that C-tor and arti agree on the onion-service time period,
//! see `HSDIR_INTERVAL_MINUTES`), plus one C-tor onion service whose `HiddenServicePort` points at a `lafs run` storage
//! node listening on loopback. A client node directory then lists that server only by a
//! `pb+tor://PIN@ONION.onion:80/SWISSNUM#v=1` NURL and a `private/arti.toml` naming the private
//! network (its authorities and fallback caches, relaxed path rules); `lafs put` and `lafs get`
//! go through lafs's in-process arti client and the bytes must round-trip.
//!
//! The same network then carries a second case, the one without a Tor daemon in front of lafs:
//! a storage node made by `lafs create-node --listen=tor` hosts its onion service itself, through
//! its in-process arti (`[tor] onion = true`), and publishes the descriptor on the private
//! network. A second client, knowing only that node's `pb+tor://` NURL, puts and gets through
//! it; the node is restarted, must announce the same onion address (the key file is reused),
//! and must serve the file again. One network serves both cases because bootstrapping it is
//! the slow part.
//!
//! Everything is bounded: each wait has a deadline, every child (tor, lafs) is killed when its
//! guard drops, also on panic. Only 127.0.0.1 is used. Without `tor`/`tor-gencert` the test
//! says so and returns, except with `CI=true`, where that is a failure.
#![cfg(feature = "tor")]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;

use crate::common;
use common::lafs_node::{free_port, LafsNode};
use common::run_bounded;

const LAFS: &str = env!("CARGO_BIN_EXE_lafs");
/// Deadline for the Tor network to bootstrap and the onion service to publish.
const NETWORK_TIMEOUT: Duration = Duration::from_secs(120);
/// Deadline of one `lafs` command (it bootstraps arti, then reaches the onion service).
const CMD_TIMEOUT: Duration = Duration::from_secs(45);
/// Deadline for the first successful `lafs put` (the service descriptor may still be spreading).
const PUT_TIMEOUT: Duration = Duration::from_secs(60);
/// Deadline for the first success through an arti-hosted service: it bootstraps, establishes
/// introduction points and uploads its descriptor first.
const ARTI_SERVICE_TIMEOUT: Duration = Duration::from_secs(150);

/// `tor` and `tor-gencert`, from PATH or Debian's locations.
fn find_tool(name: &str) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.extend(["/usr/sbin", "/usr/bin"].map(PathBuf::from));
    dirs.into_iter().map(|d| d.join(name)).find(|p| p.is_file())
}

/// The last `n` lines of a file, for failure messages.
fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// One tor process of the network.
struct TorNode {
    nick: String,
    dir: PathBuf,
    or_port: Option<u16>,
    dir_port: Option<u16>,
}

/// The running network; every tor is killed on drop.
struct TorNet {
    children: Vec<Child>,
    nodes: Vec<TorNode>,
    v3idents: Vec<String>,
    hs_dir: PathBuf,
}

impl Drop for TorNet {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
        }
        for c in &mut self.children {
            let _ = c.wait();
        }
    }
}

impl TorNet {
    fn diagnostics(&self) -> String {
        let mut s = String::new();
        for n in &self.nodes {
            s += &format!(
                "--- {} notice.log ---\n{}\n",
                n.nick,
                tail(&n.dir.join("notice.log"), 8)
            );
        }
        s
    }
}

const COMMON: &str = "\
TestingTorNetwork 1
AssumeReachable 1
PathsNeededToBuildCircuits 0.25
TestingDirAuthVoteExit *
TestingDirAuthVoteGuard *
TestingDirAuthVoteHSDir *
TestingMinExitFlagThreshold 0
V3AuthNIntervalsValid 2
RunAsDaemon 0
ShutdownWaitLength 0
SafeLogging 0
ProtocolWarnings 1
DisableDebuggerAttachment 0
ClientUseIPv6 0
";

/// Seconds between consensuses, also the first one's (so every consensus has the same voting
/// period). It fixes the onion-service time period on both sides, see `HSDIR_INTERVAL_MINUTES`.
const VOTING_INTERVAL_SECS: u64 = 15;

/// The onion-service time period (the blinded key and the hsdir ring change with it).
/// Under `TestingTorNetwork` C-tor ignores the `hsdir_interval` consensus parameter and uses
/// one shared-random protocol run, 24 voting rounds, as the period (`get_time_period_length`
/// in tor's hs_common.c); arti always reads `hsdir_interval` (default 1440 minutes, at least 5).
/// Left alone, the C-tor service publishes under a 4-minute period and arti looks for a
/// one-day period: every hsdir answers 404 and arti reports "Onion Service not found". So the
/// voting interval makes C-tor's period a whole number of minutes that arti accepts (>= 5),
/// and arti.toml overrides `hsdir_interval` to the same value. Both take the period's offset
/// from the consensus (12 voting periods), so they agree on period numbers too.
const HSDIR_INTERVAL_MINUTES: u64 = 24 * VOTING_INTERVAL_SECS / 60;
const _: () =
    assert!((24 * VOTING_INTERVAL_SECS).is_multiple_of(60) && HSDIR_INTERVAL_MINUTES >= 5);

fn authority_torrc() -> String {
    format!(
        "AuthoritativeDirectory 1\n\
V3AuthoritativeDirectory 1\n\
TestingV3AuthInitialVotingInterval {VOTING_INTERVAL_SECS}\n\
V3AuthVotingInterval {VOTING_INTERVAL_SECS}\n\
TestingV3AuthInitialVoteDelay 2\n\
V3AuthVoteDelay 2\n\
TestingV3AuthInitialDistDelay 2\n\
V3AuthDistDelay 2\n"
    )
}

const RELAY: &str = "\
ExitRelay 1
ExitPolicyRejectPrivate 0
ExitPolicy accept 127.0.0.0/8:*
ExitPolicy reject *:*
";

fn launch_network(base: &Path, tor: &Path, gencert: &Path, lafs_port: u16) -> TorNet {
    let mut nodes = Vec::new();
    let mut v3idents = Vec::new();
    let mut dirauth_lines = String::new();
    // Authorities: tor-gencert makes the v3 keys; `tor --list-fingerprint` makes the relay keys.
    for i in 0..3 {
        let nick = format!("auth{i}");
        let dir = base.join(&nick);
        std::fs::create_dir_all(dir.join("keys")).expect("auth dir");
        let (or_port, dir_port) = (free_port(), free_port());
        let out = run_bounded(
            Command::new(gencert)
                .current_dir(dir.join("keys"))
                .args([
                    "--create-identity-key",
                    "--passphrase-fd",
                    "0",
                    "-i",
                    "authority_identity_key",
                    "-s",
                    "authority_signing_key",
                    "-c",
                    "authority_certificate",
                    "-m",
                    "12",
                    "-a",
                ])
                .arg(format!("127.0.0.1:{dir_port}")),
            Some(b"\n"),
            Duration::from_secs(60),
        );
        assert!(
            out.status.success(),
            "tor-gencert: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let cert = std::fs::read_to_string(dir.join("keys/authority_certificate"))
            .expect("authority certificate");
        let v3 = cert
            .lines()
            .find_map(|l| l.strip_prefix("fingerprint "))
            .expect("certificate fingerprint")
            .trim()
            .to_string();
        let out = run_bounded(
            Command::new(tor)
                .args(["--ignore-missing-torrc", "-f", "/dev/null", "--quiet"])
                .args(["--list-fingerprint", "--orport", "1", "--datadirectory"])
                .arg(&dir)
                .args(["--nickname", &nick]),
            None,
            Duration::from_secs(60),
        );
        let text = String::from_utf8_lossy(&out.stdout);
        let fp: String = text
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{nick} ")))
            .unwrap_or_else(|| {
                panic!(
                    "tor --list-fingerprint printed no fingerprint: {text} {}",
                    String::from_utf8_lossy(&out.stderr)
                )
            })
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect();
        dirauth_lines += &format!(
            "DirAuthority {nick} orport={or_port} no-v2 v3ident={v3} 127.0.0.1:{dir_port} {fp}\n"
        );
        v3idents.push(v3);
        nodes.push(TorNode {
            nick,
            dir,
            or_port: Some(or_port),
            dir_port: Some(dir_port),
        });
    }
    for i in 0..3 {
        let nick = format!("relay{i}");
        let dir = base.join(&nick);
        std::fs::create_dir_all(&dir).expect("relay dir");
        nodes.push(TorNode {
            nick,
            dir,
            or_port: Some(free_port()),
            dir_port: Some(free_port()),
        });
    }
    let hs_node = base.join("hs");
    std::fs::create_dir_all(&hs_node).expect("hs dir");
    let hs_dir = hs_node.join("service");
    nodes.push(TorNode {
        nick: "hs".into(),
        dir: hs_node.clone(),
        or_port: None,
        dir_port: None,
    });

    let mut children = Vec::new();
    for (i, n) in nodes.iter().enumerate() {
        let mut torrc = format!(
            "{COMMON}{dirauth_lines}DataDirectory {dir}\nNickname {nick}\nLog notice file {dir}/notice.log\nPidFile {dir}/pid\nSocksPort 0\n",
            dir = n.dir.display(),
            nick = n.nick
        );
        if let (Some(or), Some(dp)) = (n.or_port, n.dir_port) {
            torrc += &format!(
                "Address 127.0.0.1\nORPort 127.0.0.1:{or}\nDirPort 127.0.0.1:{dp}\nContactInfo {}@test.test\n{RELAY}",
                n.nick
            );
            if i < 3 {
                torrc += &authority_torrc();
            }
        } else {
            torrc += &format!(
                "Log info file {dir}/info.log\nHiddenServiceDir {hs}\nHiddenServicePort 80 127.0.0.1:{lafs_port}\n",
                dir = n.dir.display(),
                hs = hs_dir.display()
            );
        }
        let torrc_path = n.dir.join("torrc");
        std::fs::write(&torrc_path, torrc).expect("torrc");
        let child = Command::new(tor)
            .arg("-f")
            .arg(&torrc_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn tor");
        children.push(child);
    }
    TorNet {
        children,
        nodes,
        v3idents,
        hs_dir,
    }
}

impl TorNet {
    /// Waits (bounded) until every node has bootstrapped and the onion service has published.
    fn wait_ready(&self) {
        let net = self;
        let hs_node = net.hs_dir.parent().expect("hs node dir").to_path_buf();
        // Every node bootstrapped (it has a consensus and built circuits), then the onion service
        // has uploaded its descriptor.
        let deadline = Instant::now() + NETWORK_TIMEOUT;
        let started = Instant::now();
        for n in &net.nodes {
            while !std::fs::read_to_string(n.dir.join("notice.log"))
                .unwrap_or_default()
                .contains("Bootstrapped 100%")
            {
                assert!(
                    Instant::now() < deadline,
                    "the Tor network did not bootstrap in {NETWORK_TIMEOUT:?}:\n{}",
                    net.diagnostics()
                );
                std::thread::sleep(Duration::from_millis(500));
            }
        }
        eprintln!(
            "tor network: all nodes bootstrapped after {:?}",
            started.elapsed()
        );
        while !std::fs::read_to_string(hs_node.join("info.log"))
            .unwrap_or_default()
            .to_ascii_lowercase()
            .contains("uploaded hidden service descriptor (status 200")
        {
            if Instant::now() > deadline {
                // Not fatal: the client retries below; the log line may have changed wording.
                eprintln!("tor network: no descriptor upload seen in the onion service's log");
                break;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        eprintln!(
            "tor network: onion service ready after {:?}",
            started.elapsed()
        );
    }

    /// The onion address, once the service's tor has written it (bounded wait).
    fn wait_onion(&self) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(h) = std::fs::read_to_string(self.hs_dir.join("hostname")) {
                if h.trim().ends_with(".onion") {
                    return h.trim().to_string();
                }
            }
            assert!(
                Instant::now() < deadline,
                "the onion service wrote no hostname:\n{}",
                self.diagnostics()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// The arti configuration of the private network: its authorities, every relay as a fallback
/// cache, no subnet-family rule (all relays share 127.0.0.1), local addresses allowed, C-tor's
/// testing-network onion-service time period (`HSDIR_INTERVAL_MINUTES`), and a fixed circuit
/// build timeout: arti's learned timeout, fitted to loopback build times of a few
/// milliseconds, otherwise abandons hsdir circuits on a loaded machine ("Circuit took too long
/// to build").
fn arti_toml(net: &TorNet) -> String {
    let mut fallbacks = String::new();
    let mut addrs = Vec::new();
    for n in &net.nodes {
        let Some(or) = n.or_port else { continue };
        let word = |file: &str| -> String {
            std::fs::read_to_string(n.dir.join(file))
                .unwrap_or_else(|e| panic!("{}/{file}: {e}", n.nick))
                .split_whitespace()
                .nth(1)
                .expect("fingerprint file has two words")
                .to_string()
        };
        fallbacks += &format!(
            "  {{ rsa_identity = \"{}\", ed_identity = \"{}\", orports = [\"127.0.0.1:{or}\"] }},\n",
            word("fingerprint"),
            word("fingerprint-ed25519")
        );
        if n.nick.starts_with("auth") {
            addrs.push(format!("[\"127.0.0.1:{}\"]", n.dir_port.unwrap_or(1)));
        }
    }
    let idents: Vec<String> = net.v3idents.iter().map(|v| format!("\"{v}\"")).collect();
    let addrs = addrs.join(", ");
    format!(
        "[tor_network]\nfallback_caches = [\n{fallbacks}]\n\n[tor_network.authorities]\nv3idents = [{}]\nuploads = [{addrs}]\ndownloads = [{addrs}]\nvotes = [{addrs}]\n\n\
[path_rules]\nipv4_subnet_family_prefix = 33\nipv6_subnet_family_prefix = 129\n\n\
[address_filter]\nallow_local_addrs = true\n\n\
[override_net_params]\nhsdir_interval = {HSDIR_INTERVAL_MINUTES}\ncbtdisabled = 1\ncbtinitialtimeout = 30000\ncbtmintimeout = 5000\nguard-min-filtered-sample-size = 2\nguard-n-primary-guards-to-use = 2\n\n\
[storage.permissions]\ndangerously_trust_everyone = true\n",
        idents.join(", ")
    )
}

fn lafs(client: &Path, args: &[&str]) -> Output {
    let out = run_bounded(
        Command::new(LAFS).arg("-d").arg(client).args(args).env(
            "RUST_LOG",
            "warn,lafs=info,arti_client=info,tor_hsclient=info",
        ),
        None,
        CMD_TIMEOUT,
    );
    eprintln!(
        "lafs {args:?}: {} (stderr tail:\n{})",
        out.status,
        String::from_utf8_lossy(&out.stderr)
            .lines()
            .rev()
            .take(12)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n")
    );
    out
}

#[test]
fn put_and_get_through_a_private_tor_network() {
    let _heavy = common::heavy();
    let started = Instant::now();
    let (Some(tor), Some(gencert)) = (find_tool("tor"), find_tool("tor-gencert")) else {
        let msg = "tor / tor-gencert not installed (Debian package `tor`; .ci/setup installs it)";
        if common::ci() {
            panic!("{msg}; CI=true, so this is a failure");
        }
        eprintln!("SKIPPED: {msg}");
        return;
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let base = tmp.path();

    // The network first (its onion service forwards port 80 to the port lafs will listen on),
    // then the storage node, created with Tahoe's manual onion recipe: listen on loopback,
    // announce `tor:ONION:80`, which lafs turns into a `pb+tor://` NURL.
    let port = free_port();
    let net = launch_network(&base.join("tor"), &tor, &gencert, port);
    let onion = net.wait_onion();
    // lafs's key handling agrees with C-tor's: C-tor's service key, in Tahoe's `ED25519-V3:`
    // form (which is what lafs reads), gives the address C-tor chose.
    let secret = std::fs::read(net.hs_dir.join("hs_ed25519_secret_key")).expect("C-tor hs key");
    assert_eq!(
        secret.len(),
        96,
        "C-tor's key file: 32-byte tag, 64-byte key"
    );
    let tahoe_form = format!(
        "ED25519-V3:{}",
        base64::engine::general_purpose::STANDARD.encode(&secret[32..])
    );
    let ctor_key = lafs::server::onion::OnionKey::parse_tahoe(&tahoe_form).expect("key parses");
    assert_eq!(
        ctor_key.onion_address(),
        onion,
        "the address of C-tor's key"
    );
    let server_dir = base.join("server");
    let out = run_bounded(
        Command::new(LAFS).args([
            "create-node",
            "--storage",
            &format!("--port=tcp:{port}:interface=127.0.0.1"),
            &format!("--location=tor:{onion}:80"),
            "--nickname=onion-server",
            "--webport=none",
            "--reserved-space=0",
            server_dir.to_str().expect("utf-8 path"),
        ]),
        None,
        Duration::from_secs(60),
    );
    assert!(
        out.status.success(),
        "create-node: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let server = LafsNode::start(&server_dir);
    assert!(
        server.nurl.starts_with("pb+tor://") && server.nurl.contains(&format!("@{onion}:80/")),
        "a tor: location announces a pb+tor NURL"
    );
    net.wait_ready();

    // The client knows the server only by its announcement: a pb+tor NURL and no TCP address.
    let out = run_bounded(
        Command::new(LAFS).arg("announcement").arg(&server_dir),
        None,
        Duration::from_secs(30),
    );
    assert!(out.status.success(), "lafs announcement");
    let client = base.join("client");
    tor_client(&net, &client, &out.stdout);

    let data: Vec<u8> = (0..300_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let file = base.join("data.bin");
    std::fs::write(&file, &data).expect("data file");

    let diag = || net.diagnostics();
    let cap = lafs_until_ok(
        &client,
        &["put", file.to_str().expect("utf-8 path")],
        PUT_TIMEOUT,
        &diag,
    );
    let cap = String::from_utf8(cap)
        .expect("utf-8 cap")
        .trim()
        .to_string();
    assert!(cap.starts_with("URI:CHK:"), "put printed a CHK cap");
    let out = lafs(&client, &["get", &cap]);
    assert!(
        out.status.success(),
        "lafs get through Tor: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout == data, "the bytes round-trip through Tor");
    // The server holds the share: it really was the onion service that stored it.
    let stored = walk(&server_dir.join("storage/shares"));
    assert!(stored > 0, "the onion server stores the share");
    eprintln!(
        "tor end-to-end, C-tor onion service: done after {:?}",
        started.elapsed()
    );
    drop(server);

    arti_hosted_onion_service(&net, base, &file, &data);
    eprintln!("tor end-to-end test took {:?}", started.elapsed());
}

/// A client node directory that knows only the servers of `announcement` (the output of `lafs
/// announcement`), whose NURLs must all be `pb+tor://`, and the private network.
fn tor_client(net: &TorNet, dir: &Path, announcement: &[u8]) {
    let servers =
        lafs::config::ServersYaml::parse(std::str::from_utf8(announcement).expect("utf-8"))
            .expect("announcement parses");
    for entry in servers.storage.values() {
        let nurls = entry
            .ann
            .anonymous_storage_nurls
            .clone()
            .unwrap_or_default();
        assert!(
            !nurls.is_empty() && nurls.iter().all(|n| n.starts_with("pb+tor://")),
            "only pb+tor NURLs are announced"
        );
    }
    std::fs::create_dir_all(dir.join("private")).expect("client dir");
    std::fs::write(
        dir.join("tahoe.cfg"),
        "[node]\nnickname = client\n\n[client]\nshares.needed = 1\nshares.happy = 1\nshares.total = 1\n\n[storage]\nenabled = false\n",
    )
    .expect("tahoe.cfg");
    std::fs::write(
        dir.join("private/servers.yaml"),
        servers.to_yaml_string().expect("servers.yaml"),
    )
    .expect("servers.yaml");
    std::fs::write(dir.join("private/arti.toml"), arti_toml(net)).expect("arti.toml");
}

/// Runs `lafs ARGS` on `client` until it succeeds or `timeout` passes; its stdout.
fn lafs_until_ok(
    client: &Path,
    args: &[&str],
    timeout: Duration,
    diag: &dyn Fn() -> String,
) -> Vec<u8> {
    let deadline = Instant::now() + timeout;
    loop {
        let out = lafs(client, args);
        if out.status.success() {
            return out.stdout;
        }
        assert!(
            Instant::now() < deadline,
            "lafs {args:?} through Tor did not succeed in {timeout:?}: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            diag()
        );
        std::thread::sleep(Duration::from_secs(5));
    }
}

/// The second case: `lafs create-node --listen=tor`, `lafs run` hosting the onion service
/// through arti, a client reaching it, and a restart keeping the address.
fn arti_hosted_onion_service(net: &TorNet, base: &Path, file: &Path, data: &[u8]) {
    let started = Instant::now();
    let dir = base.join("arti-server");
    let out = run_bounded(
        Command::new(LAFS).args([
            "create-node",
            "--listen=tor",
            "--nickname=arti-onion",
            "--webport=none",
            "--reserved-space=0",
            dir.to_str().expect("utf-8 path"),
        ]),
        None,
        Duration::from_secs(60),
    );
    assert!(
        out.status.success(),
        "create-node --listen=tor: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(dir.join("private/arti.toml"), arti_toml(net)).expect("arti.toml");
    let key_text =
        std::fs::read_to_string(dir.join("private/tor_onion.privkey")).expect("onion key file");
    let address = lafs::server::onion::OnionKey::parse_tahoe(&key_text)
        .expect("Tahoe's key format")
        .onion_address();

    let log = base.join("arti-server.log");
    let rust_log = "info,tor_hsservice=debug,arti_client=info";
    let server = LafsNode::start_logging(&dir, &log, rust_log);
    assert!(
        server.nurl.starts_with("pb+tor://") && server.nurl.contains(&format!("@{address}:3457/")),
        "the node announces its key's address on Tahoe's port"
    );
    let out = run_bounded(
        Command::new(LAFS).arg("announcement").arg(&dir),
        None,
        Duration::from_secs(30),
    );
    assert!(out.status.success(), "lafs announcement");
    let client = base.join("client-arti");
    tor_client(net, &client, &out.stdout);
    let diag = || {
        format!(
            "--- arti-server log ---\n{}\n{}",
            tail(&log, 25),
            net.diagnostics()
        )
    };

    let file_arg = file.to_str().expect("utf-8 path");
    let cap = lafs_until_ok(&client, &["put", file_arg], ARTI_SERVICE_TIMEOUT, &diag);
    let cap = String::from_utf8(cap)
        .expect("utf-8 cap")
        .trim()
        .to_string();
    assert!(cap.starts_with("URI:CHK:"), "put printed a CHK cap");
    eprintln!(
        "arti-hosted onion service: first put after {:?}",
        started.elapsed()
    );
    let got = lafs_until_ok(&client, &["get", &cap], CMD_TIMEOUT, &diag);
    assert!(
        got == data,
        "the bytes round-trip through the arti-hosted service"
    );
    assert!(
        walk(&dir.join("storage/shares")) > 0,
        "the arti-hosted node stores the share"
    );

    // A restart keeps the identity: the same NURL (address and swissnum), and the service comes
    // back (a new descriptor, with a higher revision counter, replaces the old one).
    let nurl = server.nurl.clone();
    server.stop();
    let restarted = Instant::now();
    let server = LafsNode::start_logging(&dir, &log, rust_log);
    assert_eq!(
        server.nurl, nurl,
        "the restarted node announces the same NURL"
    );
    let got = lafs_until_ok(&client, &["get", &cap], ARTI_SERVICE_TIMEOUT, &diag);
    assert!(got == data, "the restarted service serves the file");
    eprintln!(
        "arti-hosted onion service: get after restart took {:?}; case done after {:?}",
        restarted.elapsed(),
        started.elapsed()
    );
    drop(server);
    // For the record (not asserted: log wording is arti's): what the service logged about
    // its descriptors.
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    for l in text
        .lines()
        .filter(|l| l.to_ascii_lowercase().contains("descriptor"))
        .take(8)
    {
        eprintln!("arti-server log: {l}");
    }
}

/// Counts the files under `dir`.
fn walk(dir: &Path) -> usize {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    rd.flatten()
        .map(|e| {
            let p = e.path();
            if p.is_dir() {
                walk(&p)
            } else {
                1
            }
        })
        .sum()
}
