//! The filesystem layer over [`GridBackend`] on an in-process loopback grid: what one mount
//! writes and fsyncs is read back by a fresh mount (new cache directory, so nothing comes from the
//! first mount's journal) and, independently, by the directory and immutable clients.

use lafs::cap::{Cap, MutableFormat};
use lafs::client::directory::{child_cap, DirectoryClient};
use lafs::client::immutable::{self, DownloadOptions, UploadOptions};
use lafs::client::mutable::{MutableClient, MutableParams};
use lafs::client::testgrid::TestGrid;
use lafs::fuse::GridBackend;
use lafs::immutable::EncodingParams;
use lafs::mutable::keys::KeyPool;
use lafs::vfs::{Backend, BackendError, Config, FileKind, Vfs, ROOT_INO};
use std::ffi::OsStr;
use std::sync::Arc;
use std::time::Duration;

fn backend(grid: &TestGrid) -> Arc<GridBackend> {
    let secret = [7u8; 32];
    let files = MutableClient::new(
        grid.server_set(),
        secret,
        MutableParams { k: 2, n: 4 },
        Arc::new(KeyPool::new(0)),
    );
    let params = EncodingParams {
        needed: 2,
        happy: 3,
        total: 4,
        max_segment_size: 128 * 1024,
    };
    Arc::new(GridBackend::new(
        grid.server_set(),
        DirectoryClient::new(files),
        UploadOptions::convergent(params, b"convergence secret"),
        &secret,
        3,
        MutableFormat::Sdmf,
    ))
}

fn cfg(dir: &std::path::Path) -> Config {
    let mut c = Config::new(dir.to_path_buf());
    c.write_back_delay = Duration::from_millis(50);
    c.retry_delay = Duration::from_millis(50);
    c.uid = 1000;
    c.gid = 1000;
    c
}

async fn put(v: &Vfs, parent: u64, name: &str, data: &[u8]) -> u64 {
    let (a, fh) = v
        .create(
            parent,
            OsStr::new(name),
            0o640,
            libc::O_WRONLY | libc::O_EXCL,
            1000,
            1000,
        )
        .await
        .unwrap();
    v.write(a.ino, fh, 0, data).await.unwrap();
    v.fsync(a.ino, fh).await.unwrap();
    v.release(a.ino, fh).await.unwrap();
    a.ino
}

async fn cat(v: &Vfs, parent: u64, name: &str) -> Vec<u8> {
    let a = v.lookup(parent, OsStr::new(name)).await.unwrap();
    let fh = v.open(a.ino, libc::O_RDONLY).await.unwrap();
    let mut out = Vec::new();
    loop {
        let d = v.read(a.ino, fh, out.len() as u64, 65536).await.unwrap();
        if d.is_empty() {
            break;
        }
        out.extend_from_slice(&d);
    }
    v.release(a.ino, fh).await.unwrap();
    out
}

/// A new empty directory on the grid (the two steps the filesystem layer uses).
async fn new_dir(b: &dyn Backend) -> String {
    let key = b.reserve_dir().await.unwrap();
    b.create_dir(&key, Vec::new()).await.unwrap();
    key.cap.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_and_dirs_survive_a_remount() {
    let grid = TestGrid::start(4).await.unwrap();
    let b = backend(&grid);
    let root = new_dir(b.as_ref()).await;
    let small = b"a small file (LIT)".to_vec();
    let big: Vec<u8> = (0..300_000u32).map(|i| (i * 7 + i / 251) as u8).collect();

    let c1 = tempfile::tempdir().unwrap();
    let v = Vfs::new(b.clone(), &root, cfg(c1.path())).await.unwrap();
    put(&v, ROOT_INO, "small.txt", &small).await;
    let sub = v
        .mkdir(ROOT_INO, OsStr::new("sub"), 0o750, 1000, 1000)
        .await
        .unwrap();
    put(&v, sub.ino, "big.bin", &big).await;
    v.flush_all().await.unwrap();
    drop(v);

    // A fresh mount with an empty cache reads everything from the grid.
    let c2 = tempfile::tempdir().unwrap();
    let v2 = Vfs::new(b.clone(), &root, cfg(c2.path())).await.unwrap();
    let mut names: Vec<(String, FileKind)> = v2
        .readdir(ROOT_INO)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.name != "." && e.name != "..")
        .map(|e| (e.name, e.kind))
        .collect();
    names.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        names,
        vec![
            ("small.txt".to_string(), FileKind::File),
            ("sub".to_string(), FileKind::Dir)
        ]
    );
    assert_eq!(cat(&v2, ROOT_INO, "small.txt").await, small);
    let sub2 = v2.lookup(ROOT_INO, OsStr::new("sub")).await.unwrap();
    assert_eq!(sub2.perm & 0o777, 0o750);
    let a = v2.lookup(sub2.ino, OsStr::new("big.bin")).await.unwrap();
    assert_eq!(a.size, big.len() as u64);
    assert_eq!(a.perm & 0o777, 0o640);
    assert_eq!(cat(&v2, sub2.ino, "big.bin").await, big);
    drop(v2);

    // Independently, through the directory and immutable clients.
    let dc = DirectoryClient::new(MutableClient::new(
        grid.server_set(),
        [7u8; 32],
        MutableParams { k: 2, n: 4 },
        Arc::new(KeyPool::new(0)),
    ));
    let rootcap = Cap::parse(&root);
    let subdir = dc.open_path(&rootcap, "sub").await.unwrap();
    let child = subdir.lookup("big.bin").await.unwrap().expect("big.bin");
    let Cap::File(node) = child_cap(&child).unwrap() else {
        panic!("big.bin is not a file");
    };
    let (data, _) =
        immutable::download_bytes(&grid.server_set(), &node, &DownloadOptions::default())
            .await
            .unwrap();
    assert_eq!(data, big);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_against_a_stale_version_is_a_conflict() {
    let grid = TestGrid::start(4).await.unwrap();
    let b = backend(&grid);
    let other = backend(&grid);
    let root = new_dir(b.as_ref()).await;
    let (body, v0) = b.read_dir(&root).await.unwrap();
    assert!(body.is_empty());
    // Another client publishes first.
    let (_, ov) = other.read_dir(&root).await.unwrap();
    assert_eq!(ov, v0);
    other.publish_dir(&root, &ov, b"x".to_vec()).await.unwrap();
    assert_eq!(
        b.publish_dir(&root, &v0, b"y".to_vec()).await,
        Err(BackendError::Conflict)
    );
    // After a fresh read the publish goes through, and a second one against its result too.
    let (body, v1) = b.read_dir(&root).await.unwrap();
    assert_eq!(body, b"x");
    let v2 = b.publish_dir(&root, &v1, b"y".to_vec()).await.unwrap();
    b.publish_dir(&root, &v2, b"z".to_vec()).await.unwrap();
    assert_eq!(other.read_dir(&root).await.unwrap().0, b"z");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranged_reads_of_chk_files() {
    let grid = TestGrid::start(4).await.unwrap();
    let b = backend(&grid);
    let data: Vec<u8> = (0..200_000u32).map(|i| (i % 253) as u8).collect();
    let f = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(f.path(), &data).unwrap();
    let cap = b.upload_file(f.path()).await.unwrap();
    assert_eq!(b.file_size(&cap), Some(data.len() as u64));
    // The same bytes uploaded by the immutable client with the same convergence give the same cap.
    let params = EncodingParams {
        needed: 2,
        happy: 3,
        total: 4,
        max_segment_size: 128 * 1024,
    };
    let secrets = lafs::client::secrets::ClientSecrets::from_lease_secret(&[7u8; 32]);
    let r = immutable::upload(
        &grid.server_set(),
        &secrets,
        immutable::VecSource(data.clone()),
        &UploadOptions::convergent(params, b"convergence secret"),
    )
    .await
    .unwrap();
    assert_eq!(Cap::File(r.cap).to_string(), cap);
    assert_eq!(
        b.read_file(&cap, 130_000, 1000).await.unwrap(),
        &data[130_000..131_000]
    );
    assert_eq!(
        b.read_file(&cap, 199_990, 100).await.unwrap(),
        &data[199_990..]
    );
    assert!(b.read_file(&cap, 300_000, 10).await.unwrap().is_empty());
}

/// Found by mount-tests/git.test.sh: git writes files with identical content (`logs/HEAD` and
/// `logs/refs/heads/main`), the mount uploads them at the same time, and a server answers the
/// second upload's allocation of a share the first is still writing with neither "have" nor
/// "allocated": that upload missed servers-of-happiness. Concurrent uploads of identical
/// content must both succeed, with the same cap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_uploads_of_identical_content_both_succeed() {
    let grid = TestGrid::start(4).await.unwrap();
    let b = backend(&grid);
    for round in 0..4u32 {
        let data: Vec<u8> = (0..150_000u32).map(|i| (i * 31 + round) as u8).collect();
        let files: Vec<tempfile::NamedTempFile> = (0..3)
            .map(|_| {
                let f = tempfile::NamedTempFile::new().unwrap();
                std::fs::write(f.path(), &data).unwrap();
                f
            })
            .collect();
        let (a, c, d) = tokio::join!(
            b.upload_file(files[0].path()),
            b.upload_file(files[1].path()),
            b.upload_file(files[2].path())
        );
        let a = a.unwrap_or_else(|e| panic!("round {round}: first upload: {e}"));
        assert_eq!(
            c.unwrap_or_else(|e| panic!("round {round}: second: {e}")),
            a
        );
        assert_eq!(d.unwrap_or_else(|e| panic!("round {round}: third: {e}")), a);
        assert_eq!(b.read_file(&a, 0, 200_000).await.unwrap(), data);
    }
}
