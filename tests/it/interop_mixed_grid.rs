//! A mixed grid against real Tahoe-LAFS 1.20 (needs the venv of `.ci/setup`; skipped without it
//! unless `CI=true`): two `tahoe run` storage servers and two `lafs run` storage servers, with no
//! introducer. A Tahoe client and a lafs client node directory both list all four servers in
//! `private/servers.yaml` and encode 2-of-4 with happy = 4, so every server holds one share.
//!
//! `mixed_grid_survives_one_server_of_each_kind_stopping`: a ~1 MiB file uploaded by `tahoe put`
//! and another by `lafs put`; then one Tahoe server and one lafs server are stopped, and both
//! files are downloaded by `tahoe get` and by `lafs get`: the bytes the test wrote, from the two
//! surviving shares (one on a Tahoe server, one on a lafs server).
//!
//! Every process is killed at the end (guards, also on panic); every wait is bounded.

use crate::common;
use crate::common::grid;
use crate::common::nodes;
use common::lafs_node::{free_port, LafsNode};
use nodes::{
    connected_servers, count_share_files, create_lafs_node, data, lafs, servers_yaml, TahoeNode,
};

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use grid::{run_bounded, ClientSpec, Grid};

const CMD_TIMEOUT: Duration = Duration::from_secs(180);

/// `tahoe create-node` of a storage server, with no reserved space (create-node reserves 1G,
/// which a nearly full test disk would not have).
fn create_tahoe_node(venv: &Path, dir: &Path, name: &str) {
    let port = free_port();
    let mut create = Command::new(venv.join("bin/tahoe"));
    create.args([
        "create-node",
        &format!("--port=tcp:{port}:interface=127.0.0.1"),
        &format!("--location=tcp:127.0.0.1:{port}"),
        &format!("--nickname={name}"),
        "--webport=none",
        dir.to_str().expect("utf-8 path"),
    ]);
    let out = run_bounded(create, CMD_TIMEOUT);
    assert!(out.ok, "tahoe create-node: {}", out.stderr);
    let cfg_path = dir.join("tahoe.cfg");
    let cfg = std::fs::read_to_string(&cfg_path).expect("tahoe.cfg");
    assert!(cfg.contains("reserved_space = 1G"), "{cfg}");
    std::fs::write(
        &cfg_path,
        cfg.replace("reserved_space = 1G", "reserved_space = 0"),
    )
    .expect("write tahoe.cfg");
}

/// Waits (bounded) until `tahoe run` has written the identity files its announcement is made of.
fn wait_tahoe_identity(dir: &Path) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !(dir.join("private/storage.furl").is_file()
        && dir.join("permutation-seed").is_file()
        && dir.join("my_nodeid").is_file())
    {
        assert!(
            Instant::now() < deadline,
            "tahoe run on {} did not write its identity files",
            dir.display()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Waits (bounded, not fatal) until the Tahoe client shows at most `n` servers connected, so
/// that its download does not start from a stale view of the grid; a download must work either
/// way, so this only prints when the client is slow to notice.
fn wait_connected_at_most(g: &Grid, client: &str, n: usize, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if connected_servers(g, client) <= n {
            return;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    eprintln!("client {client} still shows more than {n} servers connected after {timeout:?}");
}

/// `tahoe get CAP` into a file; returns the bytes.
fn tahoe_get(g: &Grid, cap: &str, tmp: &Path) -> Vec<u8> {
    let out = tmp.join("tahoe-got");
    let _ = std::fs::remove_file(&out);
    g.tahoe_cli(
        "c",
        &["get", cap, out.to_str().expect("utf-8 path")],
        None,
        CMD_TIMEOUT,
    );
    std::fs::read(&out).expect("downloaded file")
}

/// `lafs -d CLIENT get CAP` into a file; returns the bytes.
fn lafs_get(client: &Path, cap: &str, tmp: &Path) -> Vec<u8> {
    let out = tmp.join("lafs-got");
    let _ = std::fs::remove_file(&out);
    lafs(&[
        "-d",
        client.to_str().expect("utf-8 path"),
        "get",
        cap,
        out.to_str().expect("utf-8 path"),
    ]);
    std::fs::read(&out).expect("downloaded file")
}

#[test]
fn mixed_grid_survives_one_server_of_each_kind_stopping() {
    let _heavy = common::heavy();
    let Some(venv) = common::require("the Tahoe-LAFS 1.20 venv", common::tahoe_venv()) else {
        return;
    };
    let t0 = Instant::now();
    let tmp = tempfile::tempdir().expect("tempdir");

    // Two Tahoe storage servers; started first since their identity files appear only once
    // `tahoe run` has started. lafs nodes are created meanwhile.
    let tahoe_dirs: Vec<PathBuf> = (0..2)
        .map(|i| tmp.path().join(format!("tahoe-{i}")))
        .collect();
    for (i, d) in tahoe_dirs.iter().enumerate() {
        create_tahoe_node(&venv, d, &format!("tahoe-{i}"));
    }
    let mut tahoe_nodes: Vec<TahoeNode> = tahoe_dirs
        .iter()
        .map(|d| TahoeNode::start(&venv, d))
        .collect();
    let lafs_dirs: Vec<PathBuf> = (0..2)
        .map(|i| tmp.path().join(format!("lafs-{i}")))
        .collect();
    for (i, d) in lafs_dirs.iter().enumerate() {
        create_lafs_node(d, &format!("lafs-{i}"));
    }
    let mut lafs_nodes: Vec<LafsNode> = lafs_dirs.iter().map(|d| LafsNode::start(d)).collect();
    for d in &tahoe_dirs {
        wait_tahoe_identity(d);
    }
    let all_dirs: Vec<PathBuf> = tahoe_dirs.iter().chain(&lafs_dirs).cloned().collect();
    let yaml = servers_yaml(&all_dirs);

    // Tahoe client, 2-of-4, happy 4: one share per server.
    let clients = [ClientSpec {
        name: "c",
        needed: 2,
        happy: 4,
        total: 4,
        max_segment_size: None,
    }];
    let g = Grid::up_static(
        &venv,
        &clients,
        &yaml,
        4,
        &[7u8; 32],
        Duration::from_secs(180),
    );
    // lafs client node directory listing the same four servers.
    let lafs_client = tmp.path().join("lafs-client");
    std::fs::create_dir_all(lafs_client.join("private")).expect("client dir");
    std::fs::write(
        lafs_client.join("tahoe.cfg"),
        "[node]\nnickname = lafs-client\n\n[client]\nshares.needed = 2\nshares.happy = 4\n\
         shares.total = 4\n\n[storage]\nenabled = false\n",
    )
    .expect("tahoe.cfg");
    std::fs::write(lafs_client.join("private/servers.yaml"), &yaml).expect("servers.yaml");
    eprintln!("mixed grid up in {:?}", t0.elapsed());

    // Uploads: one by Tahoe, one by lafs (two 1 MiB segments when over 1 MiB).
    let by_tahoe = data(1, 1_100_000);
    let f = tmp.path().join("by-tahoe");
    std::fs::write(&f, &by_tahoe).expect("write file");
    let tahoe_cap = g
        .tahoe_cli("c", &["put", f.to_str().expect("utf-8")], None, CMD_TIMEOUT)
        .trim()
        .to_string();
    assert!(tahoe_cap.starts_with("URI:CHK:"), "{tahoe_cap:?}");

    let by_lafs = data(2, 1_000_000);
    let f = tmp.path().join("by-lafs");
    std::fs::write(&f, &by_lafs).expect("write file");
    let lafs_cap = lafs(&[
        "-d",
        lafs_client.to_str().expect("utf-8"),
        "put",
        f.to_str().expect("utf-8"),
    ])
    .trim()
    .to_string();
    assert!(lafs_cap.starts_with("URI:CHK:"), "{lafs_cap:?}");

    // Every server holds one share of each file.
    for d in &all_dirs {
        assert_eq!(
            count_share_files(&d.join("storage")),
            2,
            "shares on {}",
            d.display()
        );
    }

    // Stop one server of each kind.
    tahoe_nodes.remove(0).stop();
    lafs_nodes.remove(0).stop();
    wait_connected_at_most(&g, "c", 2, Duration::from_secs(60));

    for (cap, want) in [(&tahoe_cap, &by_tahoe), (&lafs_cap, &by_lafs)] {
        assert!(
            tahoe_get(&g, cap, tmp.path()) == *want,
            "tahoe get after the stops"
        );
        assert!(
            lafs_get(&lafs_client, cap, tmp.path()) == *want,
            "lafs get after the stops"
        );
    }

    drop(g);
    for n in lafs_nodes {
        n.stop();
    }
    for n in tahoe_nodes {
        n.stop();
    }
    eprintln!(
        "mixed_grid_survives_one_server_of_each_kind_stopping took {:?}",
        t0.elapsed()
    );
}
