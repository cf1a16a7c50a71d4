//! `lafs create-node` + `lafs run` end to end: the built binary serves a node directory, our
//! `StorageClient` talks to it through the NURL it prints, the data survives a SIGTERM and a
//! restart, and the shares sit in Tahoe's layout on disk.
//!
//! Every wait is bounded; a running node is killed when its guard drops (also on panic).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use bytes::Bytes;
use lafs::protocol::client::{ClientError, ClientOptions, StorageClient};
use lafs::protocol::messages::{
    ReadTestWriteRequest, ReadVector, TestVector, TestWriteVectors, WriteVector,
};
use lafs::protocol::LeaseSecrets;

use crate::common;
use common::lafs_node::{free_port, LafsNode};

const LAFS: &str = env!("CARGO_BIN_EXE_lafs");

/// `lafs create-node` of a storage node in `dir` listening on loopback `port`.
fn create_command(dir: &Path, port: u16) -> Command {
    let mut cmd = Command::new(LAFS);
    cmd.args([
        "create-node",
        "--storage",
        &format!("--port=tcp:{port}:interface=127.0.0.1"),
        &format!("--location=tcp:127.0.0.1:{port}"),
        "--nickname=test-node",
        "--webport=none",
        "--reserved-space=0",
    ])
    .arg(dir);
    cmd
}

fn create(dir: &Path, port: u16) {
    let out = create_command(dir, port).output().expect("run create-node");
    assert!(
        out.status.success(),
        "create-node failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn client(nurl: &str) -> StorageClient {
    StorageClient::new(nurl, ClientOptions::default()).expect("client from NURL")
}

const SI_IMM: [u8; 16] = *b"immutable-si-001";
const SI_MUT: [u8; 16] = *b"mutable-si-00001";
const WE: [u8; 32] = [7; 32];

fn lease() -> LeaseSecrets {
    LeaseSecrets {
        renew: [1; 32],
        cancel: [2; 32],
    }
}

fn share_data(n: u8) -> Vec<u8> {
    (0..100_000u32)
        .map(|i| (i.wrapping_mul(31) as u8) ^ n)
        .collect()
}

fn mutable_data() -> Vec<u8> {
    b"mutable share contents, version one".repeat(50)
}

#[test]
fn create_run_store_restart() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir: PathBuf = tmp.path().join("node");
    let port = free_port();
    create(&dir, port);
    for f in [
        "tahoe.cfg",
        "my_nodeid",
        "node.pubkey",
        "permutation-seed",
        "private/node.pem",
        "private/node.privkey",
        "private/storage.furl",
    ] {
        assert!(dir.join(f).is_file(), "{f} written by create-node");
    }
    let ann_before = Command::new(LAFS)
        .arg("announcement")
        .arg(&dir)
        .output()
        .expect("announcement");
    assert!(ann_before.status.success());

    let node = LafsNode::start(&dir);
    // The printed identity is the one in the node directory.
    let furl_file = std::fs::read_to_string(dir.join("private/storage.furl")).unwrap();
    assert_eq!(furl_file.trim(), node.furl);
    let tub = std::fs::read_to_string(dir.join("my_nodeid")).unwrap();
    assert!(node.furl.starts_with(&format!("pb://{}@", tub.trim())));
    assert!(node.nurl.contains(&format!("@127.0.0.1:{port}/")));
    let swiss = node.furl.rsplit('/').next().unwrap();
    assert!(
        node.nurl.ends_with(&format!("/{swiss}#v=1")),
        "same swissnum"
    );
    let yaml = std::fs::read_to_string(dir.join("private/announcement.yaml")).unwrap();
    let parsed = lafs::config::ServersYaml::parse(&yaml).expect("announcement parses");
    let entry = &parsed.storage[&node.server_id];
    assert_eq!(
        entry.ann.anonymous_storage_nurls.as_deref(),
        Some(&[node.nurl.clone()][..])
    );
    assert_eq!(
        String::from_utf8_lossy(&ann_before.stdout).trim(),
        yaml.trim()
    );

    let rt = rt();
    rt.block_on(async {
        let c = client(&node.nurl);
        let v = c.version().await.expect("version");
        assert!(v.available_space > 0);

        // Immutable: allocate two shares, write them in two chunks each, read back.
        let want: BTreeSet<u8> = [0, 3].into_iter().collect();
        let a = c
            .allocate_buckets(&SI_IMM, &lease(), b"upload-secret", &want, 100_000)
            .await
            .expect("allocate");
        assert_eq!(a.allocated, want);
        for n in [0u8, 3] {
            let d = share_data(n);
            let p = c
                .write_share_chunk(
                    &SI_IMM,
                    n,
                    b"upload-secret",
                    0,
                    Bytes::from(d[..60_000].to_vec()),
                )
                .await
                .expect("write 1");
            assert!(!p.finished);
            let p = c
                .write_share_chunk(
                    &SI_IMM,
                    n,
                    b"upload-secret",
                    60_000,
                    Bytes::from(d[60_000..].to_vec()),
                )
                .await
                .expect("write 2");
            assert!(p.finished);
        }
        let got = c
            .read_immutable_share(&SI_IMM, 3, 0, 100_000)
            .await
            .unwrap();
        assert_eq!(&got[..], &share_data(3)[..]);
        // A wrong upload secret cannot touch a share; a second allocation reports it present.
        let a = c
            .allocate_buckets(&SI_IMM, &lease(), b"other", &want, 100_000)
            .await
            .unwrap();
        assert_eq!(a.already_have, want);
        assert!(a.allocated.is_empty());

        // Mutable: create share 1, then a test-and-write that fails its test.
        let data = mutable_data();
        let mut tw = BTreeMap::new();
        tw.insert(
            1u8,
            TestWriteVectors {
                test: vec![TestVector {
                    offset: 0,
                    size: 1,
                    specimen: vec![],
                }],
                write: vec![WriteVector {
                    offset: 0,
                    data: data.clone(),
                }],
                new_length: None,
            },
        );
        let req = ReadTestWriteRequest {
            test_write_vectors: tw,
            read_vector: vec![ReadVector {
                offset: 0,
                size: 10,
            }],
        };
        let r = c
            .read_test_write(&SI_MUT, &WE, &lease(), &req)
            .await
            .unwrap();
        assert!(r.success);
        let mut bad = req.clone();
        if let Some(v) = bad.test_write_vectors.get_mut(&1) {
            v.test[0].specimen = b"x".to_vec();
            v.write[0].data = b"overwritten".to_vec();
        }
        let r = c
            .read_test_write(&SI_MUT, &WE, &lease(), &bad)
            .await
            .unwrap();
        assert!(!r.success);
        assert_eq!(r.data[&1], vec![data[..10].to_vec()]);
        // Wrong write enabler: 401.
        match c.read_test_write(&SI_MUT, &[9; 32], &lease(), &req).await {
            Err(ClientError::Status { status, .. }) => assert_eq!(status, 401),
            other => panic!("wrong write enabler accepted: {other:?}"),
        }
        // Wrong-length write enabler: refused too.
        assert!(c
            .read_test_write(&SI_MUT, &[9; 5], &lease(), &req)
            .await
            .is_err());
        c.add_or_renew_lease(
            &SI_MUT,
            &LeaseSecrets {
                renew: [3; 32],
                cancel: [4; 32],
            },
        )
        .await
        .expect("add lease");
    });
    let first_nurl = node.nurl.clone();
    node.stop();

    // Tahoe's layout on disk.
    let si_b32 = lafs::util::base32::encode(&SI_IMM);
    let bucket = dir.join("storage/shares").join(&si_b32[..2]).join(&si_b32);
    assert!(bucket.join("0").is_file() && bucket.join("3").is_file());

    // Restart: same identity, same data.
    let node2 = LafsNode::start(&dir);
    assert_eq!(node2.nurl, first_nurl);
    rt.block_on(async {
        let c = client(&node2.nurl);
        let got = c
            .read_immutable_share(&SI_IMM, 0, 0, 100_000)
            .await
            .unwrap();
        assert_eq!(&got[..], &share_data(0)[..]);
        let imm: BTreeSet<u8> = c.list_immutable_shares(&SI_IMM).await.unwrap();
        assert_eq!(imm, [0, 3].into_iter().collect());
        let got = c.read_mutable_share(&SI_MUT, 1, 0, 1 << 20).await.unwrap();
        assert_eq!(&got[..], &mutable_data()[..]);
    });
    node2.stop();
}

#[test]
fn create_node_refuses_bad_options() {
    let tmp = tempfile::tempdir().expect("tempdir");
    // Neither --hostname nor --port/--location.
    let out = Command::new(LAFS)
        .args(["create-node", "--storage"])
        .arg(tmp.path().join("a"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    // A non-empty directory is not overwritten.
    std::fs::write(tmp.path().join("keep"), b"x").unwrap();
    let out = Command::new(LAFS)
        .args(["create-node", "--storage", "--hostname=127.0.0.1"])
        .arg(tmp.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert_eq!(std::fs::read(tmp.path().join("keep")).unwrap(), b"x");
}

/// Regression: `lafs create-node` printed with `println!`, which panics when stdout is a closed
/// pipe (`lafs create-node ... | true`). It must create the node and fail with a plain error.
#[test]
fn create_node_with_stdout_closed_creates_the_node_without_a_panic() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("node");
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    let out = create_command(&dir, free_port())
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .output()
        .expect("run create-node");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_ne!(out.status.code(), Some(101), "{stderr}");
    assert!(dir.join("tahoe.cfg").is_file(), "the node was created");
}
