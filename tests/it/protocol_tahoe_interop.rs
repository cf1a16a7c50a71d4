//! Interop: our client against a real Tahoe-LAFS 1.20 storage server.
//!
//! The venv comes from `$LAFS_TAHOE_VENV` (default `$HOME/.cache/lafs/tahoe-venv`). Without it
//! the test is skipped with a message, except with `CI=true`, where it fails. The node runs in
//! a temp dir, is always killed (drop guard), and every wait is bounded; the whole exchange is
//! capped at 120 s.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use lafs::protocol::client::{ClientError, ClientOptions, StorageClient};
use lafs::protocol::messages::*;
use lafs::protocol::tls::NodeIdentity;
use lafs::protocol::LeaseSecrets;

fn tahoe_bin() -> Option<PathBuf> {
    let venv = std::env::var_os("LAFS_TAHOE_VENV")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/lafs/tahoe-venv"))
        });
    let bin = venv.map(|v| v.join("bin/tahoe"));
    match bin {
        Some(b) if b.exists() => Some(b),
        other => {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("tahoe venv missing ({other:?}); set LAFS_TAHOE_VENV");
            }
            eprintln!("tahoe venv not found ({other:?}); skipping the interop test");
            None
        }
    }
}

/// Kills the node when dropped, whatever happened.
struct NodeGuard(Child);

impl Drop for NodeGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_for(path: &Path, deadline: Instant) -> bool {
    while Instant::now() < deadline {
        if path.exists()
            && std::fs::metadata(path)
                .map(|m| m.len() > 0)
                .unwrap_or(false)
        {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    false
}

fn lease() -> LeaseSecrets {
    LeaseSecrets {
        renew: [0x11; 32],
        cancel: [0x22; 32],
    }
}

#[test]
fn interop_with_tahoe_1_20_storage_server() {
    let _heavy = crate::common::heavy();
    let Some(tahoe) = tahoe_bin() else { return };
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let node = dir.path().join("node");
    let port = free_port();
    let status = Command::new(&tahoe)
        .args([
            "create-node",
            "--webport",
            "none",
            "--nickname",
            "lafs-interop",
        ])
        .arg(format!("--port=tcp:{port}:interface=127.0.0.1"))
        .arg(format!("--location=tcp:127.0.0.1:{port}"))
        .arg(&node)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "tahoe create-node failed");
    // The default reserved space (1G) would refuse allocations on a small disk.
    let cfg = node.join("tahoe.cfg");
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(
        &cfg,
        text.replace("reserved_space = 1G", "reserved_space = 0"),
    )
    .unwrap();

    let log = std::fs::File::create(dir.path().join("node.log")).unwrap();
    let child = Command::new(&tahoe)
        .args(["run", "--allow-stdin-close"])
        .arg(&node)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let _guard = NodeGuard(child);
    let deadline = Instant::now() + Duration::from_secs(90);
    let furl_path = node.join("private/storage.furl");
    assert!(
        wait_for(&furl_path, deadline),
        "node did not write storage.furl"
    );
    let pem_path = node.join("private/node.pem");
    assert!(wait_for(&pem_path, deadline));

    // The NURL as Tahoe builds it: SPKI pin of node.pem's cert, the storage fURL's swissnum.
    let furl = std::fs::read_to_string(&furl_path).unwrap();
    let furl = furl.trim();
    let (tubid, swissnum) = {
        let rest = furl.strip_prefix("pb://").unwrap();
        let (tubid, rest) = rest.split_once('@').unwrap();
        (
            tubid.to_string(),
            rest.rsplit_once('/').unwrap().1.to_string(),
        )
    };
    let identity = NodeIdentity::from_pem(&std::fs::read(&pem_path).unwrap()).unwrap();
    // Our TubID derivation must agree with Foolscap's.
    assert_eq!(identity.tub_id(), tubid);
    let nurl = format!(
        "pb://{}@127.0.0.1:{port}/{swissnum}#v=1",
        identity.pin().unwrap()
    );

    // Wait until the port accepts.
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "node never listened");
        std::thread::sleep(Duration::from_millis(200));
    }
    let boot = started.elapsed();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(120), exercise(&nurl))
            .await
            .expect("interop exchange exceeded 120 s");
    });
    eprintln!(
        "interop: node boot {:.1} s, total {:.1} s",
        boot.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
}

async fn exercise(nurl: &str) {
    let c = StorageClient::new(nurl, ClientOptions::default()).unwrap();
    let v = c.version().await.unwrap();
    assert!(
        v.application_version.starts_with(b"tahoe-lafs/1.20"),
        "{:?}",
        v
    );
    assert_eq!(v.maximum_mutable_share_size, 69_105 * 1_000_000_000_000);

    // Immutable: allocate two shares, write one in two chunks, abort the other.
    let si = [0x42u8; 16];
    let up = [0x33u8; 20];
    let shares: BTreeSet<u8> = [1, 4].into_iter().collect();
    let data = (0..1000u32)
        .map(|i| (i * 7 % 251) as u8)
        .collect::<Vec<u8>>();
    let a = c
        .allocate_buckets(&si, &lease(), &up, &shares, 1000)
        .await
        .unwrap();
    assert_eq!(a.allocated, shares);
    assert!(a.already_have.is_empty());
    let p = c
        .write_share_chunk(&si, 1, &up, 0, Bytes::copy_from_slice(&data[..600]))
        .await
        .unwrap();
    assert!(!p.finished);
    assert_eq!(
        p.required,
        vec![RequiredRange {
            begin: 600,
            end: 1000
        }]
    );
    match c
        .write_share_chunk(&si, 1, b"wrong-secret", 600, Bytes::from_static(b"x"))
        .await
    {
        Err(ClientError::Status { status: 401, .. }) => {}
        other => panic!("{other:?}"),
    }
    let p = c
        .write_share_chunk(&si, 1, &up, 600, Bytes::copy_from_slice(&data[600..]))
        .await
        .unwrap();
    assert!(p.finished);
    c.abort_upload(&si, 4, &up).await.unwrap();
    assert!(matches!(
        c.abort_upload(&si, 1, &up).await,
        Err(ClientError::Status { status: 405, .. })
    ));
    assert_eq!(
        c.list_immutable_shares(&si).await.unwrap(),
        [1].into_iter().collect()
    );
    assert_eq!(
        &c.read_immutable_share(&si, 1, 0, 1000).await.unwrap()[..],
        &data[..]
    );
    assert_eq!(
        &c.read_immutable_share(&si, 1, 990, 100).await.unwrap()[..],
        &data[990..]
    );
    assert!(c
        .read_immutable_share(&si, 1, 1000, 10)
        .await
        .unwrap()
        .is_empty());
    assert!(matches!(
        c.read_immutable_share(&si, 4, 0, 10).await,
        Err(ClientError::NotFound { .. })
    ));
    let again = c
        .allocate_buckets(&si, &lease(), &up, &shares, 1000)
        .await
        .unwrap();
    assert_eq!(again.already_have, [1].into_iter().collect());
    c.advise_corrupt_immutable(&si, 1, "interop test")
        .await
        .unwrap();

    // Mutable: create-if-absent, then a failing test that still returns reads.
    let msi = [0x24u8; 16];
    let we = [0x55u8; 32];
    let mut req = ReadTestWriteRequest::default();
    req.test_write_vectors.insert(
        0,
        TestWriteVectors {
            test: vec![TestVector {
                offset: 0,
                size: 1,
                specimen: vec![],
            }],
            write: vec![WriteVector {
                offset: 0,
                data: b"mutable share data".to_vec(),
            }],
            new_length: None,
        },
    );
    req.read_vector = vec![ReadVector { offset: 0, size: 7 }];
    let r = c.read_test_write(&msi, &we, &lease(), &req).await.unwrap();
    assert!(r.success);
    assert!(r.data.is_empty());
    let r = c.read_test_write(&msi, &we, &lease(), &req).await.unwrap();
    assert!(!r.success);
    assert_eq!(r.data, BTreeMap::from([(0u8, vec![b"mutable".to_vec()])]));
    match c.read_test_write(&msi, &[0x66; 32], &lease(), &req).await {
        Err(ClientError::Status { status: 401, .. }) => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(
        &c.read_mutable_share(&msi, 0, 0, 100).await.unwrap()[..],
        b"mutable share data"
    );
    assert_eq!(
        &c.read_mutable_share(&msi, 0, 8, 5).await.unwrap()[..],
        b"share"
    );
    assert_eq!(
        c.list_mutable_shares(&msi).await.unwrap(),
        [0].into_iter().collect()
    );
    c.advise_corrupt_mutable(&msi, 0, "interop test")
        .await
        .unwrap();

    // Leases.
    c.add_or_renew_lease(&si, &lease()).await.unwrap();
    c.add_or_renew_lease(&msi, &lease()).await.unwrap();
    assert!(matches!(
        c.add_or_renew_lease(&[0u8; 16], &lease()).await,
        Err(ClientError::NotFound { .. })
    ));
}
