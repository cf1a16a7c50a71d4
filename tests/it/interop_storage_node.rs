//! The lafs storage node against real Tahoe-LAFS 1.20 (needs the venv of `.ci/setup`; skipped
//! without it unless `CI=true`):
//!
//! - `tahoe_client_on_lafs_grid`: a grid of only `lafs run` servers (3) and a real Tahoe client
//!   whose `private/servers.yaml` lists their announcements (no introducer): `tahoe put` of a
//!   CHK, an SDMF and an MDMF file, `tahoe get` back, overwrites of both mutable files,
//!   `tahoe mkdir` + `tahoe ls`.
//! - `node_dir_moves_between_tahoe_and_lafs`: one storage node directory run by `tahoe run`
//!   (a Tahoe client stores files), then by `lafs run` (the client reads them, renews their
//!   leases with `t=check&add-lease=true`, overwrites the mutable file), then by `tahoe run`
//!   again (the client reads what was written during lafs's period).
//!
//! Every process is killed at the end (guards), every wait is bounded.

use crate::common;
use crate::common::grid;
use crate::common::nodes;
use common::lafs_node::{free_port, LafsNode};
use nodes::{
    connected_servers, count_share_files, create_lafs_node, data, servers_yaml, TahoeNode,
};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use grid::{run_bounded, ClientSpec, Grid};

const CMD_TIMEOUT: Duration = Duration::from_secs(180);

fn write_temp(dir: &Path, name: &str, data: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, data).expect("write temp file");
    p
}

/// `tahoe get CAP` into a file; returns the bytes.
fn tahoe_get(g: &Grid, client: &str, cap: &str, tmp: &Path) -> Vec<u8> {
    let out = tmp.join("got");
    let _ = std::fs::remove_file(&out);
    g.tahoe_cli(
        client,
        &["get", cap, out.to_str().expect("utf-8 path")],
        None,
        CMD_TIMEOUT,
    );
    std::fs::read(&out).expect("downloaded file")
}

fn tahoe_put(g: &Grid, client: &str, extra: &[&str], file: &Path) -> String {
    let mut args = vec!["put"];
    args.extend_from_slice(extra);
    args.push(file.to_str().expect("utf-8 path"));
    let cap = g
        .tahoe_cli(client, &args, None, CMD_TIMEOUT)
        .trim()
        .to_string();
    assert!(cap.starts_with("URI:"), "tahoe put printed a cap: {cap:?}");
    cap
}

/// After a server stopped: waits (bounded, not fatal) until the client notices, so that a
/// later "connected" is about the new server process.
fn wait_disconnected(g: &Grid, client: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if connected_servers(g, client) == 0 {
            return;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    eprintln!("client {client} still shows the stopped server as connected after {timeout:?}");
}

/// Waits (bounded) until something accepts TCP connections on 127.0.0.1:`port`.
fn wait_listening(port: u16, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    while std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on port {port}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Waits (bounded) until client `client` sees `n` storage servers connected.
fn wait_connected(g: &Grid, client: &str, n: usize, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        if connected_servers(g, client) >= n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "client {client} did not see {n} connected servers within {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Every share's lease expiration times, by (bucket, shnum), read with our container parser.
fn lease_expirations(storage: &Path) -> BTreeMap<(String, String), Vec<u32>> {
    use lafs::storage::disk::{DiskStore, StoreConfig};
    let store = DiskStore::open(StoreConfig::new(storage, [0; 20])).expect("open store");
    let mut out = BTreeMap::new();
    for p in std::fs::read_dir(storage.join("shares"))
        .expect("shares")
        .flatten()
    {
        if p.file_name() == "incoming" {
            continue;
        }
        for b in std::fs::read_dir(p.path()).expect("prefix").flatten() {
            let si_text = b.file_name().to_string_lossy().into_owned();
            let si: [u8; 16] = lafs::util::base32::decode_array(&si_text).expect("bucket name");
            for s in std::fs::read_dir(b.path()).expect("bucket").flatten() {
                let name = s.file_name().to_string_lossy().into_owned();
                let shnum: u32 = name.parse().expect("share number");
                let leases = store.leases(&si, shnum).expect("leases");
                out.insert(
                    (si_text.clone(), name),
                    leases.iter().map(|l| l.expiration).collect(),
                );
            }
        }
    }
    out
}

#[test]
fn tahoe_client_on_lafs_grid() {
    let _heavy = common::heavy();
    let Some(venv) = common::require("the Tahoe-LAFS 1.20 venv", common::tahoe_venv()) else {
        return;
    };
    let t0 = Instant::now();
    let tmp = tempfile::tempdir().expect("tempdir");
    let dirs: Vec<PathBuf> = (0..3)
        .map(|i| tmp.path().join(format!("lafs-{i}")))
        .collect();
    for (i, d) in dirs.iter().enumerate() {
        create_lafs_node(d, &format!("lafs-{i}"));
    }
    let nodes: Vec<LafsNode> = dirs.iter().map(|d| LafsNode::start(d)).collect();
    let yaml = servers_yaml(&dirs);
    let clients = [ClientSpec {
        name: "c",
        needed: 2,
        happy: 3,
        total: 3,
        max_segment_size: None,
    }];
    let g = Grid::up_static(
        &venv,
        &clients,
        &yaml,
        3,
        &[5u8; 32],
        Duration::from_secs(120),
    );
    eprintln!("lafs grid + tahoe client up in {:?}", t0.elapsed());

    // CHK (two segments), SDMF and MDMF.
    let chk = data(1, 1_500_000);
    let f = write_temp(tmp.path(), "chk", &chk);
    let chk_cap = tahoe_put(&g, "c", &[], &f);
    assert!(chk_cap.starts_with("URI:CHK:"));
    assert_eq!(tahoe_get(&g, "c", &chk_cap, tmp.path()), chk);

    let sdmf = data(2, 20_000);
    let f = write_temp(tmp.path(), "sdmf", &sdmf);
    let sdmf_cap = tahoe_put(&g, "c", &["--mutable", "--format=sdmf"], &f);
    assert!(sdmf_cap.starts_with("URI:SSK:"), "{sdmf_cap}");
    assert_eq!(tahoe_get(&g, "c", &sdmf_cap, tmp.path()), sdmf);

    let mdmf = data(3, 300_000);
    let f = write_temp(tmp.path(), "mdmf", &mdmf);
    let mdmf_cap = tahoe_put(&g, "c", &["--mutable", "--format=mdmf"], &f);
    assert!(mdmf_cap.starts_with("URI:MDMF:"), "{mdmf_cap}");
    assert_eq!(tahoe_get(&g, "c", &mdmf_cap, tmp.path()), mdmf);

    // Overwrites in place (`tahoe put FILE WRITECAP`).
    let sdmf2 = data(4, 25_000);
    let f = write_temp(tmp.path(), "sdmf2", &sdmf2);
    g.tahoe_cli(
        "c",
        &["put", f.to_str().unwrap(), &sdmf_cap],
        None,
        CMD_TIMEOUT,
    );
    assert_eq!(tahoe_get(&g, "c", &sdmf_cap, tmp.path()), sdmf2);
    let mdmf2 = data(5, 310_000);
    let f = write_temp(tmp.path(), "mdmf2", &mdmf2);
    g.tahoe_cli(
        "c",
        &["put", f.to_str().unwrap(), &mdmf_cap],
        None,
        CMD_TIMEOUT,
    );
    assert_eq!(tahoe_get(&g, "c", &mdmf_cap, tmp.path()), mdmf2);

    // Directories.
    let dircap = g
        .tahoe_cli("c", &["mkdir"], None, CMD_TIMEOUT)
        .trim()
        .to_string();
    assert!(dircap.starts_with("URI:DIR2:"), "{dircap}");
    let f = write_temp(tmp.path(), "child", b"a small file in a directory");
    g.tahoe_cli(
        "c",
        &["put", f.to_str().unwrap(), &format!("{dircap}/child.txt")],
        None,
        CMD_TIMEOUT,
    );
    g.tahoe_cli(
        "c",
        &["ln", &chk_cap, &format!("{dircap}/big.bin")],
        None,
        CMD_TIMEOUT,
    );
    let ls = g.tahoe_cli("c", &["ls", &dircap], None, CMD_TIMEOUT);
    let mut names: Vec<&str> = ls.lines().map(str::trim).collect();
    names.sort_unstable();
    assert_eq!(names, ["big.bin", "child.txt"]);
    assert_eq!(
        tahoe_get(&g, "c", &format!("{dircap}/child.txt"), tmp.path()),
        b"a small file in a directory"
    );

    // The shares are on the lafs servers, in Tahoe's layout: with happy = N = 3, each server
    // holds one share of each of the 4 stored files (CHK, SDMF, MDMF, directory; the 27-byte
    // child is a LIT file, held in the directory entry itself).
    for d in &dirs {
        assert_eq!(count_share_files(&d.join("storage")), 4, "{}", d.display());
    }
    drop(g);
    for n in nodes {
        n.stop();
    }
    eprintln!("tahoe_client_on_lafs_grid took {:?}", t0.elapsed());
}

#[test]
fn node_dir_moves_between_tahoe_and_lafs() {
    let _heavy = common::heavy();
    let Some(venv) = common::require("the Tahoe-LAFS 1.20 venv", common::tahoe_venv()) else {
        return;
    };
    let t0 = Instant::now();
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("server");
    let port = free_port();
    let mut create = Command::new(venv.join("bin/tahoe"));
    create.args([
        "create-node",
        &format!("--port=tcp:{port}:interface=127.0.0.1"),
        &format!("--location=tcp:127.0.0.1:{port}"),
        "--nickname=moving",
        "--webport=none",
        dir.to_str().unwrap(),
    ]);
    let out = run_bounded(create, Duration::from_secs(120));
    assert!(out.ok, "tahoe create-node: {}", out.stderr);
    // create-node reserves 1G; a nearly full test disk must not refuse shares.
    let cfg_path = dir.join("tahoe.cfg");
    let cfg = std::fs::read_to_string(&cfg_path).unwrap();
    assert!(cfg.contains("reserved_space = 1G"));
    std::fs::write(
        &cfg_path,
        cfg.replace("reserved_space = 1G", "reserved_space = 0"),
    )
    .unwrap();

    // Period 1: Tahoe.
    let tahoe = TahoeNode::start(&venv, &dir);
    let deadline = Instant::now() + Duration::from_secs(90);
    while !(dir.join("private/storage.furl").is_file()
        && dir.join("permutation-seed").is_file()
        && dir.join("my_nodeid").is_file())
    {
        assert!(
            Instant::now() < deadline,
            "tahoe run did not write its identity files"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let tahoe_furl = std::fs::read_to_string(dir.join("private/storage.furl")).unwrap();
    let yaml = servers_yaml(std::slice::from_ref(&dir));
    let clients = [ClientSpec {
        name: "c",
        needed: 1,
        happy: 1,
        total: 1,
        max_segment_size: None,
    }];
    let g = Grid::up_static(
        &venv,
        &clients,
        &yaml,
        1,
        &[6u8; 32],
        Duration::from_secs(120),
    );
    eprintln!("tahoe server + client up in {:?}", t0.elapsed());
    let chk = data(10, 200_000);
    let f = write_temp(tmp.path(), "chk", &chk);
    let chk_cap = tahoe_put(&g, "c", &[], &f);
    let v1 = data(11, 5_000);
    let f = write_temp(tmp.path(), "v1", &v1);
    let sdmf_cap = tahoe_put(&g, "c", &["--mutable", "--format=sdmf"], &f);
    let m1 = data(12, 70_000);
    let f = write_temp(tmp.path(), "m1", &m1);
    let mdmf_cap = tahoe_put(&g, "c", &["--mutable", "--format=mdmf"], &f);
    tahoe.stop();
    wait_disconnected(&g, "c", Duration::from_secs(60));
    let storage = dir.join("storage");
    let before = lease_expirations(&storage);
    assert_eq!(before.len(), 3, "three shares stored by tahoe");
    // Expiration times have one-second resolution: make the renewal visibly later.
    std::thread::sleep(Duration::from_millis(1100));

    // Period 2: lafs, with Tahoe's identity.
    let node = LafsNode::start(&dir);
    assert_eq!(
        std::fs::read_to_string(dir.join("private/storage.furl")).unwrap(),
        tahoe_furl,
        "lafs keeps Tahoe's fURL (TubID and swissnum)"
    );
    assert!(
        yaml.contains(&node.nurl),
        "lafs serves the NURL Tahoe's files imply"
    );
    wait_connected(&g, "c", 1, Duration::from_secs(120));
    assert_eq!(tahoe_get(&g, "c", &chk_cap, tmp.path()), chk);
    assert_eq!(tahoe_get(&g, "c", &sdmf_cap, tmp.path()), v1);
    assert_eq!(tahoe_get(&g, "c", &mdmf_cap, tmp.path()), m1);
    for cap in [&chk_cap, &sdmf_cap, &mdmf_cap] {
        let target = format!("/uri/{}?t=check&add-lease=true&output=JSON", urlencode(cap));
        let r = g.http("c", "POST", &target, b"", CMD_TIMEOUT);
        assert_eq!(r.status, 200, "check+add-lease: {}", r.text());
    }
    let v2 = data(13, 6_000);
    let f = write_temp(tmp.path(), "v2", &v2);
    g.tahoe_cli(
        "c",
        &["put", f.to_str().unwrap(), &sdmf_cap],
        None,
        CMD_TIMEOUT,
    );
    let m2 = data(14, 90_000);
    let f = write_temp(tmp.path(), "m2", &m2);
    g.tahoe_cli(
        "c",
        &["put", f.to_str().unwrap(), &mdmf_cap],
        None,
        CMD_TIMEOUT,
    );
    assert_eq!(tahoe_get(&g, "c", &sdmf_cap, tmp.path()), v2);
    node.stop();
    wait_disconnected(&g, "c", Duration::from_secs(60));
    let after = lease_expirations(&storage);
    assert_eq!(
        after.keys().collect::<Vec<_>>(),
        before.keys().collect::<Vec<_>>()
    );
    for (k, old) in &before {
        let new = &after[k];
        let old_max = old.iter().max().copied().unwrap_or(0);
        let new_max = new.iter().max().copied().unwrap_or(0);
        assert!(
            new_max > old_max,
            "lease of {k:?} renewed under lafs ({old:?} -> {new:?})"
        );
    }

    // Period 3: Tahoe again reads (and overwrites) what lafs stored.
    let tahoe = TahoeNode::start(&venv, &dir);
    wait_listening(port, Duration::from_secs(90));
    wait_connected(&g, "c", 1, Duration::from_secs(120));
    assert_eq!(tahoe_get(&g, "c", &sdmf_cap, tmp.path()), v2);
    assert_eq!(tahoe_get(&g, "c", &mdmf_cap, tmp.path()), m2);
    assert_eq!(tahoe_get(&g, "c", &chk_cap, tmp.path()), chk);
    let v3 = data(15, 7_000);
    let f = write_temp(tmp.path(), "v3", &v3);
    g.tahoe_cli(
        "c",
        &["put", f.to_str().unwrap(), &sdmf_cap],
        None,
        CMD_TIMEOUT,
    );
    assert_eq!(tahoe_get(&g, "c", &sdmf_cap, tmp.path()), v3);
    drop(g);
    tahoe.stop();
    eprintln!(
        "node_dir_moves_between_tahoe_and_lafs took {:?}",
        t0.elapsed()
    );
}

/// Percent-encodes a cap for a URL path segment (caps use `:` and base32 only, but be safe).
fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b':' | b'-' | b'_' | b'.') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
