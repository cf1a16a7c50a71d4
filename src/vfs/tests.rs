//! Tests of the filesystem layer against the in-memory grid. Expected grid states are read back
//! independently: the directory body is unpacked with the dirnode layer and file bytes are
//! fetched from the in-memory grid, never from the layer's own view.

use super::*;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

fn cfg(dir: &std::path::Path, delay_ms: u64) -> Config {
    let mut c = Config::new(dir.to_path_buf());
    c.write_back_delay = Duration::from_millis(delay_ms);
    c.retry_delay = Duration::from_millis(20);
    c.dir_refresh = Duration::from_secs(3600);
    c.uid = 1000;
    c.gid = 1000;
    // The same machine boot across restarts unless a test simulates a power cut.
    c.boot_id = Some(BOOT.into());
    // Sealed at once unless a test holds the sealer off.
    c.seal_delay = Duration::ZERO;
    c
}

const BOOT: &str = "boot-1";

/// The layer over `b` at `root`, its cache in `dir`, write-back delayed by an hour (so nothing
/// goes up unless a test asks).
async fn mount(b: &MemBackend, root: &str, dir: &std::path::Path) -> Vfs {
    Vfs::new(Arc::new(b.clone()), root, cfg(dir, 3_600_000))
        .await
        .unwrap()
}

fn os(s: &str) -> &OsStr {
    OsStr::new(s)
}

/// The grid listing of `cap`, read as another client would.
fn grid_listing(b: &MemBackend, cap: &str) -> Directory {
    let (body, _) = b.dir_body(cap).expect("dir");
    Directory::unpack(dir_kind(cap), &body).expect("unpack")
}

fn grid_file(b: &MemBackend, dircap: &str, name: &str) -> Option<Vec<u8>> {
    let l = grid_listing(b, dircap);
    let c = l.get(name)?;
    b.get_bytes(&child_cap(c)?)
}

async fn put(v: &Vfs, parent: Ino, name: &str, data: &[u8]) -> Ino {
    let (a, fh) = v
        .create(
            parent,
            os(name),
            0o644,
            libc::O_WRONLY | libc::O_EXCL,
            1000,
            1000,
        )
        .await
        .unwrap();
    v.write(a.ino, fh, 0, data).await.unwrap();
    v.flush(a.ino, fh).await.unwrap();
    v.release(a.ino, fh).await.unwrap();
    a.ino
}

async fn cat(v: &Vfs, ino: Ino) -> Vec<u8> {
    let fh = v.open(ino, libc::O_RDONLY).await.unwrap();
    let a = v.getattr(ino).await.unwrap();
    let d = v.read(ino, fh, 0, a.size as u32 + 10).await.unwrap();
    v.release(ino, fh).await.unwrap();
    d
}

#[tokio::test]
async fn write_close_uploads_after_delay_and_fsync_publishes() {
    let b = MemBackend::new();
    let root = b.new_dir();
    let tmp = tempfile::tempdir().unwrap();
    let v = mount(&b, &root, tmp.path()).await;
    let ino = put(&v, ROOT_INO, "hello.txt", &[7u8; 1000]).await;
    // Local speed: nothing on the grid yet (the delay is an hour).
    assert_eq!(b.publish_count(), 0);
    let st = v.status();
    assert_eq!(
        (st.uploads_queued, st.bytes_dirty, st.pending_dir_changes),
        (1, 1000, 1)
    );
    assert_eq!(cat(&v, ino).await, vec![7u8; 1000]);
    v.fsync(ino, 0).await.unwrap();
    assert_eq!(grid_file(&b, &root, "hello.txt"), Some(vec![7u8; 1000]));
    // The entry carries tahoe backup's keys and ours.
    let l = grid_listing(&b, &root);
    let md = &l.get("hello.txt").unwrap().metadata;
    assert_eq!(md.st_mode(), Some(0o100644));
    assert_eq!(md.st_uid(), Some(1000));
    assert!(md.mtime().is_some() && md.get("lafs").is_some());
    assert_eq!(v.status().pending_dir_changes, 0);
    assert_eq!(v.status().cache_used, 0, "cache file freed after upload");
    // Read back through the grid path (segment cache).
    assert_eq!(cat(&v, ino).await, vec![7u8; 1000]);
}

#[tokio::test]
async fn background_write_back_without_fsync() {
    let b = MemBackend::new();
    let root = b.new_dir();
    let tmp = tempfile::tempdir().unwrap();
    let v = Vfs::new(Arc::new(b.clone()), &root, cfg(tmp.path(), 10))
        .await
        .unwrap();
    put(&v, ROOT_INO, "f", b"abc").await;
    for _ in 0..200 {
        if grid_file(&b, &root, "f").is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(grid_file(&b, &root, "f"), Some(b"abc".to_vec()));
}

#[tokio::test]
async fn thousand_creates_coalesce_into_few_publishes() {
    let b = MemBackend::new();
    let root = b.new_dir();
    let tmp = tempfile::tempdir().unwrap();
    let v = Vfs::new(Arc::new(b.clone()), &root, cfg(tmp.path(), 200))
        .await
        .unwrap();
    for i in 0..1000 {
        put(
            &v,
            ROOT_INO,
            &format!("file{i}"),
            format!("content {i}").as_bytes(),
        )
        .await;
    }
    v.flush_all().await.unwrap();
    let l = grid_listing(&b, &root);
    assert_eq!(l.len(), 1000);
    assert_eq!(
        grid_file(&b, &root, "file567"),
        Some(b"content 567".to_vec())
    );
    assert!(b.publish_count() <= 5, "publishes: {}", b.publish_count());
}

#[tokio::test]
async fn upload_error_reported_by_fsync_and_flush_and_status_then_retried() {
    let b = MemBackend::new();
    let root = b.new_dir();
    let tmp = tempfile::tempdir().unwrap();
    let v = Vfs::new(Arc::new(b.clone()), &root, cfg(tmp.path(), 0))
        .await
        .unwrap();
    b.fail_all_uploads(true);
    let (a, fh) = v
        .create(ROOT_INO, os("x"), 0o644, libc::O_RDWR, 1000, 1000)
        .await
        .unwrap();
    v.write(a.ino, fh, 0, &[1u8; 100]).await.unwrap();
    let e = v.fsync(a.ino, fh).await.unwrap_err();
    assert_eq!(e.to_errno(), libc::EIO);
    assert!(!v.status().last_errors.is_empty());
    let failed = b.failed_upload_count();
    v.release(a.ino, fh).await.unwrap();
    // Closed: the retry fails again; the close of the next writer reports it. A reader reads
    // the data from the cache and closes without an error, and leaves the report in place.
    // Wait (bounded) for that retry to have failed and been recorded (the failure and the end
    // of the upload are recorded together).
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while b.failed_upload_count() == failed || v.status().uploads_in_flight > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "no retry after the close"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let fh = v.open(a.ino, libc::O_RDONLY).await.unwrap();
    assert_eq!(v.read(a.ino, fh, 0, 200).await.unwrap(), vec![1u8; 100]);
    v.flush(a.ino, fh).await.unwrap();
    v.release(a.ino, fh).await.unwrap();
    let fh = v.open(a.ino, libc::O_WRONLY).await.unwrap();
    assert_eq!(v.flush(a.ino, fh).await.unwrap_err().to_errno(), libc::EIO);
    v.release(a.ino, fh).await.unwrap();
    // The grid comes back: the data was never lost.
    b.fail_all_uploads(false);
    v.flush_all().await.unwrap_or(());
    v.flush_all().await.unwrap();
    assert_eq!(grid_file(&b, &root, "x"), Some(vec![1u8; 100]));
}

#[tokio::test]
async fn crash_then_restart_resumes_pending_uploads() {
    let b = MemBackend::new();
    let root = b.new_dir();
    let tmp = tempfile::tempdir().unwrap();
    let v = mount(&b, &root, tmp.path()).await;
    let d = v
        .mkdir(ROOT_INO, os("sub"), 0o700, 1000, 1000)
        .await
        .unwrap();
    put(&v, d.ino, "inner", &[9u8; 5000]).await;
    put(&v, ROOT_INO, "top", b"top").await;
    v.rename(ROOT_INO, os("top"), ROOT_INO, os("top2"), 0)
        .await
        .unwrap();
    v.crash().await;
    assert!(
        grid_listing(&b, &root).is_empty(),
        "nothing was published before the crash"
    );
    let v = mount(&b, &root, tmp.path()).await;
    // The view after restart already shows the pending state.
    let top = v.lookup(ROOT_INO, os("top2")).await.unwrap();
    assert_eq!(cat(&v, top.ino).await, b"top");
    assert!(v.lookup(ROOT_INO, os("top")).await.is_err());
    v.flush_all().await.unwrap();
    let l = grid_listing(&b, &root);
    let sub = child_cap(l.get("sub").unwrap()).unwrap();
    assert_eq!(grid_file(&b, &sub, "inner"), Some(vec![9u8; 5000]));
    assert_eq!(grid_file(&b, &root, "top2"), Some(b"top".to_vec()));
    assert!(l.get("top").is_none());
    assert_eq!(l.get("sub").unwrap().metadata.st_mode(), Some(0o040700));
}

#[tokio::test]
async fn rename_over_existing_is_one_publish() {
    let b = MemBackend::new();
    let root = b.new_dir();
    let tmp = tempfile::tempdir().unwrap();
    let v = mount(&b, &root, tmp.path()).await;
    let t = put(&v, ROOT_INO, "target", b"old").await;
    v.fsync(t, 0).await.unwrap();
    let n0 = b.publish_count();
    let tmpf = put(&v, ROOT_INO, ".target.XXXX", b"new").await;
    v.rename(ROOT_INO, os(".target.XXXX"), ROOT_INO, os("target"), 0)
        .await
        .unwrap();
    v.fsync(tmpf, 0).await.unwrap();
    assert_eq!(b.publish_count(), n0 + 1);
    assert_eq!(grid_file(&b, &root, "target"), Some(b"new".to_vec()));
    assert!(grid_listing(&b, &root).get(".target.XXXX").is_none());
    // NOREPLACE and EXCHANGE.
    put(&v, ROOT_INO, "other", b"o").await;
    let e = v
        .rename(
            ROOT_INO,
            os("other"),
            ROOT_INO,
            os("target"),
            RENAME_NOREPLACE,
        )
        .await
        .unwrap_err();
    assert_eq!(e.to_errno(), libc::EEXIST);
    v.rename(
        ROOT_INO,
        os("other"),
        ROOT_INO,
        os("target"),
        RENAME_EXCHANGE,
    )
    .await
    .unwrap();
    v.flush_all().await.unwrap();
    assert_eq!(grid_file(&b, &root, "target"), Some(b"o".to_vec()));
    assert_eq!(grid_file(&b, &root, "other"), Some(b"new".to_vec()));
}

#[tokio::test]
async fn names_errors_and_link() {
    let b = MemBackend::new();
    let root = b.new_dir();
    let tmp = tempfile::tempdir().unwrap();
    let v = mount(&b, &root, tmp.path()).await;
    let bad = OsStr::from_bytes(b"\xff\xfe");
    assert_eq!(
        v.lookup(ROOT_INO, bad).await.unwrap_err().to_errno(),
        libc::EILSEQ
    );
    let long = "a".repeat(256);
    assert_eq!(
        v.create(ROOT_INO, os(&long), 0o644, 0, 0, 0)
            .await
            .unwrap_err()
            .to_errno(),
        libc::ENAMETOOLONG
    );
    assert!(v
        .create(ROOT_INO, os(&"a".repeat(255)), 0o644, 0, 0, 0)
        .await
        .is_ok());
    // NFC: created decomposed, found composed.
    let f = put(&v, ROOT_INO, "cafe\u{301}", b"x").await;
    assert_eq!(v.lookup(ROOT_INO, os("caf\u{e9}")).await.unwrap().ino, f);
    assert_eq!(
        v.link(f, ROOT_INO, os("l")).await.unwrap_err().to_errno(),
        libc::EPERM
    );
    let d = v.mkdir(ROOT_INO, os("d"), 0o755, 0, 0).await.unwrap();
    put(&v, d.ino, "x", b"").await;
    assert_eq!(
        v.rmdir(ROOT_INO, os("d")).await.unwrap_err().to_errno(),
        libc::ENOTEMPTY
    );
    assert_eq!(
        v.unlink(ROOT_INO, os("d")).await.unwrap_err().to_errno(),
        libc::EISDIR
    );
    assert_eq!(
        v.rename(ROOT_INO, os("d"), d.ino, os("dd"), 0)
            .await
            .unwrap_err()
            .to_errno(),
        libc::EINVAL
    );
    assert_eq!(
        v.mkdir(ROOT_INO, os("d"), 0o755, 0, 0)
            .await
            .unwrap_err()
            .to_errno(),
        libc::EEXIST
    );
    assert_eq!(
        v.unlink(ROOT_INO, os("nope")).await.unwrap_err().to_errno(),
        libc::ENOENT
    );
}

#[tokio::test]
async fn attributes_symlinks_specials_xattrs_round_trip_through_the_grid() {
    let b = MemBackend::new();
    let root = b.new_dir();
    let tmp = tempfile::tempdir().unwrap();
    let v = mount(&b, &root, tmp.path()).await;
    let f = put(&v, ROOT_INO, "f", b"data").await;
    let a0 = v.getattr(f).await.unwrap();
    // utimens with UTIME_OMIT for atime.
    let a = v
        .setattr(
            f,
            SetAttr {
                mtime: Some(TimeSet::At(1_234_567_890_123_456_789)),
                mode: Some(0o4751),
                uid: Some(7),
                gid: Some(8),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(a.atime_ns, a0.atime_ns);
    assert_eq!(a.mtime_ns, 1_234_567_890_123_456_789);
    let s = v
        .symlink(ROOT_INO, os("ln"), os("../some/where"), 1000, 1000)
        .await
        .unwrap();
    assert_eq!(s.kind, FileKind::Symlink);
    let long_target = "t/".repeat(100);
    v.symlink(ROOT_INO, os("ln2"), os(&long_target), 1000, 1000)
        .await
        .unwrap();
    let p = v
        .mknod(ROOT_INO, os("fifo"), 0o010640, 0, 0, 0)
        .await
        .unwrap();
    assert_eq!(p.kind, FileKind::Fifo);
    let c = v
        .mknod(ROOT_INO, os("tty"), 0o020600, 0x0501, 0, 0)
        .await
        .unwrap();
    v.setxattr(f, os("user.k"), b"\x00\x01v", 0).await.unwrap();
    assert_eq!(
        v.setxattr(f, os("user.k"), b"x", XATTR_CREATE)
            .await
            .unwrap_err()
            .to_errno(),
        libc::EEXIST
    );
    assert_eq!(
        v.setxattr(f, os("trusted.k"), b"x", 0)
            .await
            .unwrap_err()
            .to_errno(),
        libc::EOPNOTSUPP
    );
    assert_eq!(
        v.getxattr(f, os("user.none")).await.unwrap_err().to_errno(),
        libc::ENODATA
    );
    v.setxattr(f, os("user.gone"), b"1", 0).await.unwrap();
    v.removexattr(f, os("user.gone")).await.unwrap();
    v.flush_all().await.unwrap();
    // The symlink is a small file holding its target (what `tahoe get` shows).
    assert_eq!(grid_file(&b, &root, "ln"), Some(b"../some/where".to_vec()));
    assert_eq!(
        grid_file(&b, &root, "ln2"),
        Some(long_target.as_bytes().to_vec())
    );
    assert_eq!(grid_file(&b, &root, "fifo"), Some(vec![]));
    // A fresh mount (new cache) sees everything from the grid alone.
    let tmp2 = tempfile::tempdir().unwrap();
    let w = Vfs::new(Arc::new(b.clone()), &root, cfg(tmp2.path(), 3_600_000))
        .await
        .unwrap();
    let f2 = w.lookup(ROOT_INO, os("f")).await.unwrap();
    assert_eq!(
        (f2.perm, f2.uid, f2.gid, f2.mtime_ns, f2.size),
        (0o4751, 7, 8, 1_234_567_890_123_456_789, 4)
    );
    assert_eq!(
        w.getxattr(f2.ino, os("user.k")).await.unwrap(),
        b"\x00\x01v"
    );
    assert_eq!(
        w.listxattr(f2.ino).await.unwrap(),
        vec!["user.k".to_string()]
    );
    let l = w.lookup(ROOT_INO, os("ln")).await.unwrap();
    assert_eq!(w.readlink(l.ino).await.unwrap(), b"../some/where");
    assert_eq!(
        w.lookup(ROOT_INO, os("fifo")).await.unwrap().kind,
        FileKind::Fifo
    );
    let c2 = w.lookup(ROOT_INO, os("tty")).await.unwrap();
    assert_eq!(
        (c2.kind, c2.rdev, c2.perm),
        (FileKind::CharDevice, 0x0501, 0o600)
    );
    let _ = c;
}

#[tokio::test]
async fn truncate_and_random_offset_writes_of_a_grid_file() {
    let b = MemBackend::new();
    let root = b.new_dir();
    let tmp = tempfile::tempdir().unwrap();
    let v = mount(&b, &root, tmp.path()).await;
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let f = put(&v, ROOT_INO, "big", &data).await;
    v.fsync(f, 0).await.unwrap();
    let fh = v.open(f, libc::O_RDWR).await.unwrap();
    v.write(f, fh, 1000, b"XYZ").await.unwrap();
    v.write(f, fh, 400_000, b"end").await.unwrap();
    v.release(f, fh).await.unwrap();
    v.setattr(
        f,
        SetAttr {
            size: Some(400_001),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    v.fsync(f, 0).await.unwrap();
    let mut want = data.clone();
    want[1000..1003].copy_from_slice(b"XYZ");
    want.resize(400_001, 0);
    want[400_000] = b'e';
    assert_eq!(grid_file(&b, &root, "big"), Some(want.clone()));
    assert_eq!(cat(&v, f).await, want);
}

#[tokio::test]
async fn other_writer_merged_when_disjoint_reported_when_overlapping() {
    let b = MemBackend::new();
    let root = b.new_dir();
    let tmp = tempfile::tempdir().unwrap();
    let v = mount(&b, &root, tmp.path()).await;
    let a = put(&v, ROOT_INO, "a", b"mine").await;
    v.fsync(a, 0).await.unwrap();
    // Another client adds "theirs" and changes "a".
    let mut l = grid_listing(&b, &root);
    let cap = b.put_bytes(b"their content");
    l.insert("theirs", child_for(&cap, Metadata::new()));
    b.set_dir_body(&root, l.pack().unwrap());
    // A disjoint change merges.
    let m = put(&v, ROOT_INO, "mine2", b"x").await;
    v.fsync(m, 0).await.unwrap();
    let l = grid_listing(&b, &root);
    assert!(l.get("theirs").is_some() && l.get("mine2").is_some() && l.get("a").is_some());
    // An overlapping change is reported, never overwritten silently.
    let mut l2 = l.clone();
    let cap2 = b.put_bytes(b"their a");
    l2.insert("a", child_for(&cap2, Metadata::new()));
    b.set_dir_body(&root, l2.pack().unwrap());
    v.setattr(
        a,
        SetAttr {
            mode: Some(0o600),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let e = v.fsync(a, 0).await.unwrap_err();
    assert_eq!(e.to_errno(), libc::EIO);
    assert_eq!(grid_file(&b, &root, "a"), Some(b"their a".to_vec()));
}

/// After a conflict the losing mount kept showing its own dropped version (the listing it was
/// based on was set to the winner's entry, so the refresh saw nothing new to adopt).
#[tokio::test]
async fn losing_side_of_a_conflict_shows_the_winners_version() {
    let b = MemBackend::new();
    let root = b.new_dir();
    let tmp = tempfile::tempdir().unwrap();
    let v = mount(&b, &root, tmp.path()).await;
    let a = put(&v, ROOT_INO, "a", b"v0").await;
    v.fsync(a, 0).await.unwrap();
    // Another client replaces "a"; we overwrite it too, based on v0.
    let mut l = grid_listing(&b, &root);
    let theirs = b.put_bytes(b"their version");
    l.insert("a", child_for(&theirs, Metadata::new()));
    b.set_dir_body(&root, l.pack().unwrap());
    let fh = v.open(a, libc::O_WRONLY | libc::O_TRUNC).await.unwrap();
    v.write(a, fh, 0, b"our version").await.unwrap();
    assert_eq!(v.fsync(a, fh).await.unwrap_err().to_errno(), libc::EIO);
    v.release(a, fh).await.unwrap();
    assert_eq!(grid_file(&b, &root, "a"), Some(b"their version".to_vec()));
    let now = v.lookup(ROOT_INO, os("a")).await.unwrap();
    assert_eq!(cat(&v, now.ino).await, b"their version");
    assert_eq!(now.size, 13);
    // Ours is kept beside it, on the grid and in the mount.
    assert_eq!(
        grid_file(&b, &root, "a.conflict"),
        Some(b"our version".to_vec())
    );
    let copy = v.lookup(ROOT_INO, os("a.conflict")).await.unwrap();
    assert_eq!(cat(&v, copy.ino).await, b"our version");
    assert!(v
        .status()
        .last_errors
        .iter()
        .any(|e| e.contains("a.conflict")));
    v.flush_all().await.unwrap();
    assert_eq!(grid_file(&b, &root, "a"), Some(b"their version".to_vec()));
}

#[test]
fn conflict_copy_names_are_free_fit_name_max_and_made_once() {
    let kind = DirKind::Mutable { writekey: None };
    let mut d = Directory::new(kind);
    assert_eq!(
        super::conflict_copy_name(&d, "x", "URI:LIT:aa").as_deref(),
        Some("x.conflict")
    );
    d.insert("x.conflict", child_for("URI:LIT:bb", Metadata::new()));
    assert_eq!(
        super::conflict_copy_name(&d, "x", "URI:LIT:aa").as_deref(),
        Some("x.conflict-2")
    );
    d.insert("x.conflict-2", child_for("URI:LIT:aa", Metadata::new()));
    assert_eq!(super::conflict_copy_name(&d, "x", "URI:LIT:aa"), None);
    let long = "é".repeat(127) + "z";
    let n = super::conflict_copy_name(&d, &long, "URI:LIT:aa").unwrap();
    assert!(n.len() <= NAME_MAX && n.ends_with(".conflict"), "{n}");
}

#[tokio::test]
async fn backpressure_keeps_the_cache_bounded() {
    let b = MemBackend::new();
    b.set_upload_delay(Duration::from_millis(5));
    let root = b.new_dir();
    let tmp = tempfile::tempdir().unwrap();
    let mut c = cfg(tmp.path(), 3_600_000);
    c.cache_size = 10_000;
    let v = Arc::new(Vfs::new(Arc::new(b.clone()), &root, c).await.unwrap());
    let mut max_used = 0;
    for i in 0..20 {
        put(&v, ROOT_INO, &format!("f{i}"), &[i as u8; 3000]).await;
        max_used = max_used.max(v.status().cache_used);
    }
    // Bound plus at most the one file being written.
    assert!(max_used <= 10_000 + 3000, "cache grew to {max_used}");
    assert!(b.upload_count() >= 10, "writers waited for uploads");
    v.flush_all().await.unwrap();
    assert_eq!(grid_listing(&b, &root).len(), 20);
}

/// `cache-size` bounds the cache directory as a whole: the read cache's segment files shrink as
/// written files grow, and grow back once they are gone.
#[tokio::test]
async fn read_cache_and_written_files_share_one_cache_size() {
    let b = MemBackend::new();
    let root = b.new_dir();
    let data: Vec<u8> = (0..40_960u32).map(|i| (i * 7 % 251) as u8).collect();
    let mut l = grid_listing(&b, &root);
    l.insert("f", child_for(&b.put_bytes(&data), Metadata::new()));
    b.set_dir_body(&root, l.pack().unwrap());
    let tmp = tempfile::tempdir().unwrap();
    let mut c = cfg(tmp.path(), 0);
    c.segment_size = 4096;
    c.segment_cache = 8192;
    c.read_ahead = 0;
    c.cache_size = 40_000;
    let v = Vfs::new(Arc::new(b.clone()), &root, c).await.unwrap();
    let f = v.lookup(ROOT_INO, os("f")).await.unwrap().ino;
    let read_all = || async {
        let fh = v.open(f, libc::O_RDONLY).await.unwrap();
        for pass in 0..2 {
            for s in 0..10u64 {
                let d = v.read(f, fh, s * 4096, 4096).await.unwrap();
                assert_eq!(
                    d,
                    data[s as usize * 4096..][..4096],
                    "pass {pass} segment {s}"
                );
            }
        }
        v.release(f, fh).await.unwrap();
    };
    read_all().await;
    let st = v.status();
    assert!(st.read_cache >= 32_768, "read twice, kept on disk: {st:?}");
    let bound = |st: &Status| {
        assert!(
            st.cache_used + st.read_cache <= 40_000,
            "over cache-size: {st:?}"
        );
    };
    bound(&st);
    let (a, fh) = v
        .create(ROOT_INO, os("w"), 0o644, libc::O_RDWR, 1000, 1000)
        .await
        .unwrap();
    for i in 0..6u64 {
        v.write(a.ino, fh, i * 5000, &[i as u8; 5000])
            .await
            .unwrap();
        bound(&v.status());
    }
    assert!(v.status().read_cache <= 10_000, "{:?}", v.status());
    v.setattr(
        a.ino,
        SetAttr {
            size: Some(35_000),
            ..SetAttr::default()
        },
    )
    .await
    .unwrap();
    bound(&v.status());
    v.release(a.ino, fh).await.unwrap();
    v.flush_all().await.unwrap();
    read_all().await;
    let st = v.status();
    bound(&st);
    assert!(
        st.read_cache >= 40_000 - st.cache_used - 4096,
        "the read cache grows back into what the written file left: {st:?}"
    );
}

#[tokio::test]
async fn read_only_cap_mounts_read_only() {
    let b = MemBackend::new();
    let root = b.new_dir();
    let tmp = tempfile::tempdir().unwrap();
    let v = Vfs::new(Arc::new(b.clone()), &root, cfg(tmp.path(), 0))
        .await
        .unwrap();
    put(&v, ROOT_INO, "f", b"1").await;
    v.flush_all().await.unwrap();
    let ro = Cap::parse(&root).readonly().unwrap().to_string();
    let tmp2 = tempfile::tempdir().unwrap();
    let r = Vfs::new(Arc::new(b.clone()), &ro, cfg(tmp2.path(), 0))
        .await
        .unwrap();
    let f = r.lookup(ROOT_INO, os("f")).await.unwrap();
    assert_eq!(cat(&r, f.ino).await, b"1");
    assert_eq!(
        r.create(ROOT_INO, os("g"), 0o644, 0, 0, 0)
            .await
            .unwrap_err()
            .to_errno(),
        libc::EROFS
    );
    assert_eq!(
        r.open(f.ino, libc::O_WRONLY).await.unwrap_err().to_errno(),
        libc::EROFS
    );
    assert_eq!(
        r.unlink(ROOT_INO, os("f")).await.unwrap_err().to_errno(),
        libc::EROFS
    );
    // The root's attributes too (they live in the journal, which a read cap never changes).
    let chmod = SetAttr {
        mode: Some(0o700),
        ..Default::default()
    };
    assert_eq!(
        r.setattr(ROOT_INO, chmod).await.unwrap_err().to_errno(),
        libc::EROFS
    );
    for e in [
        r.setxattr(ROOT_INO, os("user.k"), b"v", 0).await,
        r.removexattr(ROOT_INO, os("user.k")).await,
    ] {
        assert_eq!(e.unwrap_err().to_errno(), libc::EROFS);
    }
    assert!(r.listxattr(ROOT_INO).await.unwrap().is_empty());
}

/// The model test found it: after a restart, the first listing of a directory raced the
/// publish of its replayed changes. The listing was read before the publish, the publish retired
/// the changes, and the stale listing was then dropped without loading anything, so the
/// directory looked empty until its next refresh.
#[tokio::test]
async fn first_listing_overtaken_by_a_publish_shows_the_published_entries() {
    let b = MemBackend::new();
    let root = b.new_dir();
    let tmp = tempfile::tempdir().unwrap();
    let v = mount(&b, &root, tmp.path()).await;
    put(&v, ROOT_INO, "f", b"data").await;
    v.crash().await;
    let v = Arc::new(mount(&b, &root, tmp.path()).await);
    // The listing's read takes the grid's body before the publish and returns after it.
    b.stall_next_dir_reads(1, Duration::from_millis(300));
    let v2 = Arc::clone(&v);
    let listing = tokio::spawn(async move { v2.readdir(ROOT_INO).await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let before = b.publish_count();
    v.flush_all().await.unwrap();
    assert_eq!(b.publish_count(), before + 1);
    let names: Vec<String> = listing
        .await
        .unwrap()
        .unwrap()
        .into_iter()
        .skip(2)
        .map(|e| e.name)
        .collect();
    assert_eq!(names, vec!["f".to_string()]);
    let f = v.lookup(ROOT_INO, os("f")).await.unwrap();
    assert_eq!(cat(&v, f.ino).await, b"data");
}

/// access(W_OK) answered 0 for a read cap met inside a writable mount; changes there fail with
/// EROFS, so access says so first, as the kernel does on a read-only filesystem.
#[tokio::test]
async fn read_only_subdir_and_its_files_are_not_writable() {
    let b = MemBackend::new();
    let root = b.new_dir();
    let sub = b.new_dir();
    let mut l = grid_listing(&b, &sub);
    l.insert("f", child_for(&b.put_bytes(b"x"), Metadata::new()));
    b.set_dir_body(&sub, l.pack().unwrap());
    let ro = Cap::parse(&sub).readonly().unwrap().to_string();
    let mut l = grid_listing(&b, &root);
    l.insert("ro", child_for(&ro, Metadata::new()));
    b.set_dir_body(&root, l.pack().unwrap());
    let tmp = tempfile::tempdir().unwrap();
    let v = Vfs::new(Arc::new(b.clone()), &root, cfg(tmp.path(), 0))
        .await
        .unwrap();
    let top = put(&v, ROOT_INO, "top", b"1").await;
    let d = v.lookup(ROOT_INO, os("ro")).await.unwrap();
    let f = v.lookup(d.ino, os("f")).await.unwrap();
    assert!(v.writable(ROOT_INO).unwrap());
    assert!(v.writable(top).unwrap());
    assert!(!v.writable(d.ino).unwrap());
    assert!(!v.writable(f.ino).unwrap());
    // What `writable` predicts is what the changes do.
    assert_eq!(
        v.open(f.ino, libc::O_WRONLY).await.unwrap_err().to_errno(),
        libc::EROFS
    );
    assert_eq!(
        v.unlink(d.ino, os("f")).await.unwrap_err().to_errno(),
        libc::EROFS
    );
}

#[tokio::test]
async fn dir_refresh_shows_other_writers_entries() {
    let b = MemBackend::new();
    let root = b.new_dir();
    let tmp = tempfile::tempdir().unwrap();
    let mut c = cfg(tmp.path(), 0);
    c.dir_refresh = Duration::from_millis(30);
    let v = Vfs::new(Arc::new(b.clone()), &root, c).await.unwrap();
    assert!(v.lookup(ROOT_INO, os("new")).await.is_err());
    let mut l = grid_listing(&b, &root);
    l.insert("new", child_for(&b.put_bytes(b"hi"), Metadata::new()));
    b.set_dir_body(&root, l.pack().unwrap());
    tokio::time::sleep(Duration::from_millis(50)).await;
    let n = v.lookup(ROOT_INO, os("new")).await.unwrap();
    assert_eq!(
        (n.perm, n.uid),
        (0o644, 1000),
        "defaults for entries made by tahoe's tools"
    );
    assert_eq!(cat(&v, n.ino).await, b"hi");
}

/// SEMANTICS "Other writers": a lookup of a name the expired listing has is answered from it at
/// once while the re-read runs in the background (rsync's `lstat` of unchanged entries never
/// waits on the grid); a name it lacks waits for the re-read, and finds the other writer's entry.
#[tokio::test]
async fn lookup_in_an_expired_listing_answers_at_once_and_a_missing_name_waits_for_the_reread() {
    let b = MemBackend::new();
    let root = b.new_dir();
    let mut l = grid_listing(&b, &root);
    l.insert("old", child_for(&b.put_bytes(b"old"), Metadata::new()));
    b.set_dir_body(&root, l.pack().unwrap());
    let tmp = tempfile::tempdir().unwrap();
    let mut c = cfg(tmp.path(), 0);
    c.dir_refresh = Duration::from_millis(30);
    let v = Vfs::new(Arc::new(b.clone()), &root, c).await.unwrap();
    v.lookup(ROOT_INO, os("old")).await.unwrap();
    let mut l = grid_listing(&b, &root);
    l.insert("new", child_for(&b.put_bytes(b"new"), Metadata::new()));
    b.set_dir_body(&root, l.pack().unwrap());
    tokio::time::sleep(Duration::from_millis(50)).await;
    // The re-read the next lookup starts takes 3 s.
    let stall = Duration::from_secs(3);
    b.stall_next_dir_reads(1, stall);
    let t = std::time::Instant::now();
    let old = v.lookup(ROOT_INO, os("old")).await.unwrap();
    assert!(
        t.elapsed() < stall / 2,
        "a name the expired listing has waited {:?} for the re-read",
        t.elapsed()
    );
    assert_eq!(cat(&v, old.ino).await, b"old");
    let new = v.lookup(ROOT_INO, os("new")).await.unwrap();
    assert_eq!(cat(&v, new.ino).await, b"new");
}

// ---------------------------------------------------------------------------------------------
// Property test: random operation sequences against a reference model of a POSIX tree, with
// simulated crashes (the Vfs dropped without flushing, a new one on the same cache directory).
// A crash loses nothing a returned call did (SEMANTICS.md durability point 1), so the state after
// a restart must equal the model; at the end the grid alone (a fresh cache) must equal it too.

mod model {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    #[derive(Clone, Debug, PartialEq, Eq)]
    pub enum MKind {
        File(Vec<u8>),
        Dir,
        Symlink(Vec<u8>),
    }

    #[derive(Clone, Debug, PartialEq, Eq)]
    pub struct MNode {
        kind: MKind,
        perm: u32,
    }

    type Tree = BTreeMap<String, MNode>;

    #[derive(Clone, Debug)]
    pub enum MOp {
        Create(usize, usize, Vec<u8>),
        Write(usize, usize, u16, Vec<u8>),
        Truncate(usize, usize, u16),
        Mkdir(usize, usize),
        Unlink(usize, usize),
        Rmdir(usize, usize),
        Rename(usize, usize, usize, usize),
        Chmod(usize, usize, u32),
        Symlink(usize, usize, Vec<u8>),
        Fsync(usize, usize),
        Crash,
    }

    const NAMES: [&str; 3] = ["a", "b", "c"];
    const PARENTS: [&str; 4] = ["", "a", "b", "a/b"];

    fn path(p: usize, n: usize) -> String {
        if PARENTS[p].is_empty() {
            NAMES[n].to_string()
        } else {
            format!("{}/{}", PARENTS[p], NAMES[n])
        }
    }

    fn op() -> impl Strategy<Value = MOp> {
        let p = 0..PARENTS.len();
        let n = 0..NAMES.len();
        let data = proptest::collection::vec(any::<u8>(), 0..200);
        prop_oneof![
            (p.clone(), n.clone(), data.clone()).prop_map(|(p, n, d)| MOp::Create(p, n, d)),
            (p.clone(), n.clone(), 0u16..300, data.clone())
                .prop_map(|(p, n, o, d)| MOp::Write(p, n, o, d)),
            (p.clone(), n.clone(), 0u16..300).prop_map(|(p, n, s)| MOp::Truncate(p, n, s)),
            (p.clone(), n.clone()).prop_map(|(p, n)| MOp::Mkdir(p, n)),
            (p.clone(), n.clone()).prop_map(|(p, n)| MOp::Unlink(p, n)),
            (p.clone(), n.clone()).prop_map(|(p, n)| MOp::Rmdir(p, n)),
            (p.clone(), n.clone(), p.clone(), n.clone())
                .prop_map(|(a, b, c, d)| MOp::Rename(a, b, c, d)),
            (p.clone(), n.clone(), 0u32..0o1000).prop_map(|(p, n, m)| MOp::Chmod(p, n, m)),
            (
                p.clone(),
                n.clone(),
                proptest::collection::vec(1u8..255, 1..80)
            )
                .prop_map(|(p, n, t)| MOp::Symlink(p, n, t)),
            (p.clone(), n).prop_map(|(p, n)| MOp::Fsync(p, n)),
            Just(MOp::Crash),
        ]
    }

    fn parent_ok(t: &Tree, p: usize) -> std::result::Result<(), i32> {
        let pp = PARENTS[p];
        if pp.is_empty() {
            return Ok(());
        }
        // Walk the components like lookups do.
        let mut cur = String::new();
        for comp in pp.split('/') {
            cur = if cur.is_empty() {
                comp.to_string()
            } else {
                format!("{cur}/{comp}")
            };
            match t.get(&cur) {
                None => return Err(libc::ENOENT),
                Some(MNode {
                    kind: MKind::Dir, ..
                }) => {}
                Some(_) => return Err(libc::ENOTDIR),
            }
        }
        Ok(())
    }

    fn has_children(t: &Tree, p: &str) -> bool {
        let pre = format!("{p}/");
        t.keys().any(|k| k.starts_with(&pre))
    }

    async fn resolve(v: &Vfs, p: &str) -> std::result::Result<Ino, i32> {
        let mut ino = ROOT_INO;
        if p.is_empty() {
            return Ok(ino);
        }
        for comp in p.split('/') {
            ino = v.lookup(ino, os(comp)).await.map_err(|e| e.to_errno())?.ino;
        }
        Ok(ino)
    }

    /// Resolves a parent directory as the kernel's path walk does (ENOTDIR for a non-directory).
    async fn resolve_dir(v: &Vfs, p: &str) -> std::result::Result<Ino, i32> {
        let mut ino = ROOT_INO;
        if p.is_empty() {
            return Ok(ino);
        }
        for comp in p.split('/') {
            let a = v.lookup(ino, os(comp)).await.map_err(|e| e.to_errno())?;
            if a.kind != FileKind::Dir {
                return Err(libc::ENOTDIR);
            }
            ino = a.ino;
        }
        Ok(ino)
    }

    async fn snapshot(v: &Vfs) -> Tree {
        let mut out = Tree::new();
        let mut stack = vec![(ROOT_INO, String::new())];
        while let Some((ino, p)) = stack.pop() {
            for e in v.readdir(ino).await.unwrap().into_iter().skip(2) {
                let cp = if p.is_empty() {
                    e.name.clone()
                } else {
                    format!("{p}/{}", e.name)
                };
                let a = v.lookup(ino, os(&e.name)).await.unwrap();
                let kind = match a.kind {
                    FileKind::Dir => {
                        stack.push((a.ino, cp.clone()));
                        MKind::Dir
                    }
                    FileKind::Symlink => MKind::Symlink(v.readlink(a.ino).await.unwrap()),
                    _ => MKind::File(cat(v, a.ino).await),
                };
                out.insert(cp, MNode { kind, perm: a.perm });
            }
        }
        out
    }

    async fn run(ops: Vec<MOp>, delay_ms: u64) {
        let b = MemBackend::new();
        let root = b.new_dir();
        let tmp = tempfile::tempdir().unwrap();
        let mk = |d: &std::path::Path| cfg(d, delay_ms);
        let mut v = Vfs::new(Arc::new(b.clone()), &root, mk(tmp.path()))
            .await
            .unwrap();
        let mut t = Tree::new();
        for op in ops {
            match op {
                MOp::Create(p, n, d) => {
                    let want = parent_ok(&t, p).and_then(|_| {
                        if t.contains_key(&path(p, n)) {
                            Err(libc::EEXIST)
                        } else {
                            Ok(())
                        }
                    });
                    let got = async {
                        let pi = resolve_dir(&v, PARENTS[p]).await?;
                        let (a, fh) = v
                            .create(pi, os(NAMES[n]), 0o640, libc::O_WRONLY | libc::O_EXCL, 1, 1)
                            .await
                            .map_err(|e| e.to_errno())?;
                        v.write(a.ino, fh, 0, &d).await.map_err(|e| e.to_errno())?;
                        v.release(a.ino, fh).await.map_err(|e| e.to_errno())
                    }
                    .await;
                    assert_eq!(got, want, "create {}", path(p, n));
                    if want.is_ok() {
                        t.insert(
                            path(p, n),
                            MNode {
                                kind: MKind::File(d),
                                perm: 0o640,
                            },
                        );
                    }
                }
                MOp::Write(p, n, off, d) => {
                    let Some(MNode {
                        kind: MKind::File(cur),
                        ..
                    }) = t.get_mut(&path(p, n))
                    else {
                        continue;
                    };
                    let ino = resolve(&v, &path(p, n)).await.unwrap();
                    let fh = v.open(ino, libc::O_RDWR).await.unwrap();
                    v.write(ino, fh, off as u64, &d).await.unwrap();
                    v.release(ino, fh).await.unwrap();
                    let end = off as usize + d.len();
                    if !d.is_empty() {
                        if cur.len() < end {
                            cur.resize(end, 0);
                        }
                        cur[off as usize..end].copy_from_slice(&d);
                    }
                }
                MOp::Truncate(p, n, s) => {
                    let Some(MNode {
                        kind: MKind::File(cur),
                        ..
                    }) = t.get_mut(&path(p, n))
                    else {
                        continue;
                    };
                    let ino = resolve(&v, &path(p, n)).await.unwrap();
                    v.setattr(
                        ino,
                        SetAttr {
                            size: Some(s as u64),
                            ..Default::default()
                        },
                    )
                    .await
                    .unwrap();
                    cur.resize(s as usize, 0);
                }
                MOp::Mkdir(p, n) => {
                    let want = parent_ok(&t, p).and_then(|_| {
                        if t.contains_key(&path(p, n)) {
                            Err(libc::EEXIST)
                        } else {
                            Ok(())
                        }
                    });
                    let got = async {
                        let pi = resolve_dir(&v, PARENTS[p]).await?;
                        v.mkdir(pi, os(NAMES[n]), 0o750, 1, 1)
                            .await
                            .map(|_| ())
                            .map_err(|e| e.to_errno())
                    }
                    .await;
                    assert_eq!(got, want, "mkdir {}", path(p, n));
                    if want.is_ok() {
                        t.insert(
                            path(p, n),
                            MNode {
                                kind: MKind::Dir,
                                perm: 0o750,
                            },
                        );
                    }
                }
                MOp::Symlink(p, n, target) => {
                    let want = parent_ok(&t, p).and_then(|_| {
                        if t.contains_key(&path(p, n)) {
                            Err(libc::EEXIST)
                        } else {
                            Ok(())
                        }
                    });
                    let got = async {
                        let pi = resolve_dir(&v, PARENTS[p]).await?;
                        v.symlink(pi, os(NAMES[n]), OsStr::from_bytes(&target), 1, 1)
                            .await
                            .map(|_| ())
                            .map_err(|e| e.to_errno())
                    }
                    .await;
                    assert_eq!(got, want, "symlink {}", path(p, n));
                    if want.is_ok() {
                        t.insert(
                            path(p, n),
                            MNode {
                                kind: MKind::Symlink(target),
                                perm: 0o777,
                            },
                        );
                    }
                }
                MOp::Unlink(p, n) => {
                    let want = parent_ok(&t, p).and_then(|_| match t.get(&path(p, n)) {
                        None => Err(libc::ENOENT),
                        Some(MNode {
                            kind: MKind::Dir, ..
                        }) => Err(libc::EISDIR),
                        Some(_) => Ok(()),
                    });
                    let got = async {
                        let pi = resolve_dir(&v, PARENTS[p]).await?;
                        v.unlink(pi, os(NAMES[n])).await.map_err(|e| e.to_errno())
                    }
                    .await;
                    assert_eq!(got, want, "unlink {}", path(p, n));
                    if want.is_ok() {
                        t.remove(&path(p, n));
                    }
                }
                MOp::Rmdir(p, n) => {
                    let pa = path(p, n);
                    let want = parent_ok(&t, p).and_then(|_| match t.get(&pa) {
                        None => Err(libc::ENOENT),
                        Some(MNode {
                            kind: MKind::Dir, ..
                        }) if has_children(&t, &pa) => Err(libc::ENOTEMPTY),
                        Some(MNode {
                            kind: MKind::Dir, ..
                        }) => Ok(()),
                        Some(_) => Err(libc::ENOTDIR),
                    });
                    let got = async {
                        let pi = resolve_dir(&v, PARENTS[p]).await?;
                        v.rmdir(pi, os(NAMES[n])).await.map_err(|e| e.to_errno())
                    }
                    .await;
                    assert_eq!(got, want, "rmdir {pa}");
                    if want.is_ok() {
                        t.remove(&pa);
                    }
                }
                MOp::Rename(p, n, p2, n2) => {
                    let (s, d) = (path(p, n), path(p2, n2));
                    let want = parent_ok(&t, p)
                        .and_then(|_| parent_ok(&t, p2))
                        .and_then(|_| {
                            let sn = t.get(&s).ok_or(libc::ENOENT)?;
                            if s == d {
                                return Ok(false);
                            }
                            let np = PARENTS[p2];
                            if np == s || np.starts_with(&format!("{s}/")) {
                                return Err(libc::EINVAL);
                            }
                            match (t.get(&d), &sn.kind) {
                                (
                                    Some(MNode {
                                        kind: MKind::Dir, ..
                                    }),
                                    k,
                                ) if *k != MKind::Dir => Err(libc::EISDIR),
                                (Some(MNode { kind: k, .. }), MKind::Dir) if *k != MKind::Dir => {
                                    Err(libc::ENOTDIR)
                                }
                                (
                                    Some(MNode {
                                        kind: MKind::Dir, ..
                                    }),
                                    _,
                                ) if has_children(&t, &d) => Err(libc::ENOTEMPTY),
                                _ => Ok(true),
                            }
                        });
                    let got = async {
                        let pi = resolve_dir(&v, PARENTS[p]).await?;
                        let p2i = resolve_dir(&v, PARENTS[p2]).await?;
                        v.rename(pi, os(NAMES[n]), p2i, os(NAMES[n2]), 0)
                            .await
                            .map_err(|e| e.to_errno())
                    }
                    .await;
                    assert_eq!(got, want.map(|_| ()), "rename {s} {d}");
                    if want == Ok(true) {
                        t.remove(&d);
                        let pre = format!("{s}/");
                        let moved: Vec<String> = t
                            .keys()
                            .filter(|k| **k == s || k.starts_with(&pre))
                            .cloned()
                            .collect();
                        for k in moved {
                            let node = t.remove(&k).unwrap();
                            t.insert(format!("{d}{}", &k[s.len()..]), node);
                        }
                    }
                }
                MOp::Chmod(p, n, m) => {
                    let Some(node) = t.get_mut(&path(p, n)) else {
                        continue;
                    };
                    let ino = resolve(&v, &path(p, n)).await.unwrap();
                    v.setattr(
                        ino,
                        SetAttr {
                            mode: Some(m),
                            ..Default::default()
                        },
                    )
                    .await
                    .unwrap();
                    node.perm = m;
                }
                MOp::Fsync(p, n) => {
                    if let Ok(ino) = resolve(&v, &path(p, n)).await {
                        v.fsync(ino, 0).await.unwrap();
                    }
                }
                MOp::Crash => {
                    v.crash().await;
                    v = Vfs::new(Arc::new(b.clone()), &root, mk(tmp.path()))
                        .await
                        .unwrap();
                    assert_eq!(snapshot(&v).await, t, "after crash");
                }
            }
        }
        assert_eq!(snapshot(&v).await, t, "end");
        v.flush_all().await.unwrap();
        let fresh = tempfile::tempdir().unwrap();
        let w = Vfs::new(Arc::new(b.clone()), &root, mk(fresh.path()))
            .await
            .unwrap();
        assert_eq!(snapshot(&w).await, t, "grid alone");
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
        #[test]
        fn random_ops_match_model(ops in proptest::collection::vec(op(), 1..30), delay in prop_oneof![Just(0u64), Just(5), Just(3_600_000)]) {
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
            rt.block_on(run(ops, delay));
        }
    }
}

#[tokio::test]
async fn sequential_reads_of_a_grid_file_with_read_ahead() {
    let b = MemBackend::new();
    let root = b.new_dir();
    let tmp = tempfile::tempdir().unwrap();
    let mut c = cfg(tmp.path(), 0);
    c.segment_size = 4096;
    c.segment_cache = 64 * 1024; // smaller than the file: the LRU must evict
    let v = Vfs::new(Arc::new(b.clone()), &root, c).await.unwrap();
    let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 256) as u8).collect();
    let f = put(&v, ROOT_INO, "f", &data).await;
    v.fsync(f, 0).await.unwrap();
    let fh = v.open(f, libc::O_RDONLY).await.unwrap();
    let mut got = Vec::new();
    let mut off = 0u64;
    loop {
        let d = v.read(f, fh, off, 3000).await.unwrap();
        if d.is_empty() {
            break;
        }
        off += d.len() as u64;
        got.extend_from_slice(&d);
    }
    assert_eq!(got, data);
    // Random offsets after eviction.
    assert_eq!(
        v.read(f, fh, 12345, 10).await.unwrap(),
        data[12345..12355].to_vec()
    );
    assert_eq!(
        v.read(f, fh, 199_995, 100).await.unwrap(),
        data[199_995..].to_vec()
    );
    v.release(f, fh).await.unwrap();
}

/// Read-ahead happens: once reads are sequential (the second read continues the first), the
/// next `read_ahead` segments are fetched without being asked for, and reading them costs no
/// grid call; a reader that jumps around gets no read-ahead.
#[tokio::test]
async fn sequential_reader_gets_the_next_segments_fetched_ahead_and_a_random_one_does_not() {
    let b = MemBackend::new();
    let root = b.new_dir();
    // 10 segments of 4 KiB.
    let data: Vec<u8> = (0..40_960u32).map(|i| (i * 13 % 251) as u8).collect();
    let mut l = grid_listing(&b, &root);
    for name in ["f", "g"] {
        let cap = b.put_bytes(&data);
        l.insert(name, child_for(&cap, Metadata::new()));
    }
    b.set_dir_body(&root, l.pack().unwrap());
    let tmp = tempfile::tempdir().unwrap();
    let mut c = cfg(tmp.path(), 0);
    c.segment_size = 4096;
    c.read_ahead = 4;
    let v = Vfs::new(Arc::new(b.clone()), &root, c).await.unwrap();
    let f = v.lookup(ROOT_INO, os("f")).await.unwrap().ino;
    let g = v.lookup(ROOT_INO, os("g")).await.unwrap().ino;
    // Waits until the backend has seen no new call for a while (background fetches landed).
    async fn settle(b: &MemBackend) -> usize {
        let mut last = b.call_count();
        loop {
            tokio::time::sleep(Duration::from_millis(30)).await;
            let now = b.call_count();
            if now == last {
                return now;
            }
            last = now;
        }
    }
    let seg = |s: usize| data[s * 4096..(s + 1) * 4096].to_vec();
    let fh = v.open(f, libc::O_RDONLY).await.unwrap();
    let base = settle(&b).await;
    assert_eq!(v.read(f, fh, 0, 4096).await.unwrap(), seg(0));
    assert_eq!(settle(&b).await - base, 1, "the first read: one fetch");
    assert_eq!(v.read(f, fh, 4096, 4096).await.unwrap(), seg(1));
    let after_second = settle(&b).await;
    assert_eq!(
        after_second - base,
        1 + 1 + 4,
        "segment 1 and 4 segments ahead"
    );
    for s in 2..6 {
        assert_eq!(v.read(f, fh, s as u64 * 4096, 4096).await.unwrap(), seg(s));
    }
    // Segments 2-5 came from the read-ahead; each read fetched one more ahead (6-9).
    assert_eq!(settle(&b).await - after_second, 4, "no demand fetch");
    v.release(f, fh).await.unwrap();
    // A reader that jumps: one fetch per read, nothing ahead.
    let fh = v.open(g, libc::O_RDONLY).await.unwrap();
    let base = settle(&b).await;
    assert_eq!(
        v.read(g, fh, 3 * 4096 + 7, 10).await.unwrap(),
        data[3 * 4096 + 7..3 * 4096 + 17].to_vec()
    );
    assert_eq!(
        v.read(g, fh, 7 * 4096, 10).await.unwrap(),
        data[7 * 4096..7 * 4096 + 10].to_vec()
    );
    assert_eq!(
        settle(&b).await - base,
        2,
        "two demand fetches, nothing ahead"
    );
    v.release(g, fh).await.unwrap();
}

/// A read whose bytes are local is answered at once by `read_now` (the FUSE thread's path: no
/// task, no wait): a file still in the write-back cache, cached segments, and segments a
/// download under way holds (`Backend::read_ready`). A range with a segment neither holds is
/// left to `read_data`. With the backend holding a sequential reader's next segments, the
/// layer's read-ahead fetches nothing: the reads take them from the backend.
#[tokio::test]
async fn read_now_answers_local_bytes_and_leaves_the_rest_to_read_data() {
    let b = MemBackend::new();
    let root = b.new_dir();
    // 10 segments of 4 KiB.
    let data: Vec<u8> = (0..40_960u32).map(|i| (i * 13 % 251) as u8).collect();
    let mut l = grid_listing(&b, &root);
    l.insert("f", child_for(&b.put_bytes(&data), Metadata::new()));
    b.set_dir_body(&root, l.pack().unwrap());
    let tmp = tempfile::tempdir().unwrap();
    let mut c = cfg(tmp.path(), 3_600_000);
    c.segment_size = 4096;
    c.read_ahead = 4;
    let v = Vfs::new(Arc::new(b.clone()), &root, c).await.unwrap();
    let f = v.lookup(ROOT_INO, os("f")).await.unwrap().ino;
    let seg = |s: usize| data[s * 4096..(s + 1) * 4096].to_vec();
    let now = |fh: u64, off: u64, len: u32| {
        v.read_now(f, fh, off, len)
            .map(|r| r.unwrap().as_slice().to_vec())
    };
    let fh = v.open(f, libc::O_RDONLY).await.unwrap();
    let calls = b.call_count();
    assert_eq!(now(fh, 0, 4096), None, "nothing cached yet");
    assert_eq!(b.call_count(), calls, "read_now fetches nothing");
    assert_eq!(
        v.read_data(f, fh, 0, 4096).await.unwrap().as_slice(),
        seg(0)
    );
    let calls = b.call_count();
    assert_eq!(now(fh, 0, 4096), Some(seg(0)), "a cached segment");
    assert_eq!(now(fh, 100, 50), Some(data[100..150].to_vec()));
    assert_eq!(now(fh, 4000, 200), None, "segment 1 is not cached");
    assert_eq!(b.call_count(), calls);
    // The backend now holds every range (a read stream received them).
    b.hold_reads(true);
    for s in 1..10 {
        assert_eq!(now(fh, s as u64 * 4096, 4096), Some(seg(s)), "segment {s}");
    }
    assert_eq!(now(fh, 40_960, 4096), Some(Vec::new()), "at the end");
    assert_eq!(b.ready_count(), 9);
    // Give stray read-ahead tasks (there must be none) time to call the backend.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        b.call_count(),
        calls,
        "no read-ahead fetch, no demand fetch"
    );
    // Taken from the backend once: now in the segment cache.
    b.hold_reads(false);
    assert_eq!(now(fh, 5 * 4096, 4096), Some(seg(5)));
    assert_eq!(b.ready_count(), 9);
    v.release(f, fh).await.unwrap();
    // A file being written is read from the write-back cache.
    let (a, wfh) = v
        .create(ROOT_INO, os("w"), 0o644, libc::O_RDWR, 1000, 1000)
        .await
        .unwrap();
    v.write(a.ino, wfh, 0, b"written, not uploaded")
        .await
        .unwrap();
    let calls = b.call_count();
    assert_eq!(
        v.read_now(a.ino, wfh, 9, 3)
            .map(|r| r.unwrap().as_slice().to_vec()),
        Some(b"not".to_vec())
    );
    assert_eq!(b.call_count(), calls);
    v.release(a.ino, wfh).await.unwrap();
    // Errors come at once too.
    assert!(matches!(
        v.read_now(ROOT_INO, fh, 0, 10),
        Some(Err(VfsError::IsDir))
    ));
}

/// fsx (mount-tests/fsx.py) found: fstat of an open file after its unlink said nlink 1.
/// POSIX: the link count of an open, unlinked file is 0; its data stays readable and writable.
#[tokio::test]
async fn open_unlinked_file_has_nlink_zero_and_keeps_its_data() {
    let b = MemBackend::new();
    let root = b.new_dir();
    let tmp = tempfile::tempdir().unwrap();
    let v = Vfs::new(Arc::new(b.clone()), &root, cfg(tmp.path(), 0))
        .await
        .unwrap();
    let f = put(&v, ROOT_INO, "f", b"hello").await;
    assert_eq!(v.getattr(f).await.unwrap().nlink, 1);
    let fh = v.open(f, libc::O_RDWR).await.unwrap();
    v.unlink(ROOT_INO, os("f")).await.unwrap();
    let a = v.getattr(f).await.unwrap();
    assert_eq!((a.nlink, a.size), (0, 5));
    assert_eq!(v.write(f, fh, 5, b" world").await.unwrap(), 6);
    assert_eq!(
        v.read(f, fh, 0, 100).await.unwrap(),
        b"hello world".to_vec()
    );
    assert_eq!(v.getattr(f).await.unwrap().nlink, 0);
    v.release(f, fh).await.unwrap();
    assert_eq!(
        v.lookup(ROOT_INO, os("f")).await.unwrap_err().to_errno(),
        libc::ENOENT
    );
}

/// fsx (mount-tests/fsx.py) found: an upload that failed because the file changed under it (a
/// truncate shrank the cache file while the upload read it: early EOF) was reported by the next
/// fsync as EIO, although that content no longer existed. A failure of a stale generation is
/// not an error of the file; its current content is uploaded and fsync succeeds.
#[tokio::test]
async fn failure_of_an_upload_overtaken_by_a_change_is_not_reported() {
    let b = MemBackend::new();
    let root = b.new_dir();
    let tmp = tempfile::tempdir().unwrap();
    let v = Vfs::new(Arc::new(b.clone()), &root, cfg(tmp.path(), 0))
        .await
        .unwrap();
    b.set_upload_delay(Duration::from_millis(300));
    b.fail_next_uploads(1);
    let f = put(&v, ROOT_INO, "f", &[5u8; 1000]).await;
    // Wait until that upload (the one that will fail) is in flight.
    let t0 = Instant::now();
    while v.status().uploads_in_flight == 0 {
        assert!(t0.elapsed() < Duration::from_secs(10), "no upload started");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let set = SetAttr {
        size: Some(10),
        ..SetAttr::default()
    };
    v.setattr(f, set).await.unwrap();
    v.fsync(f, 0).await.unwrap();
    assert_eq!(grid_file(&b, &root, "f"), Some(vec![5u8; 10]));
}

#[tokio::test]
async fn unlinked_open_file_has_link_count_zero_and_stays_usable() {
    let b = MemBackend::new();
    let root = b.new_dir();
    let tmp = tempfile::tempdir().unwrap();
    let v = mount(&b, &root, tmp.path()).await;
    let (a, fh) = v
        .create(ROOT_INO, os("f"), 0o644, libc::O_RDWR, 1000, 1000)
        .await
        .unwrap();
    assert_eq!(a.nlink, 1);
    v.unlink(ROOT_INO, os("f")).await.unwrap();
    // POSIX fstat(2) of a removed file: st_nlink 0; its data stays readable and writable.
    assert_eq!(v.getattr(a.ino).await.unwrap().nlink, 0);
    v.write(a.ino, fh, 0, b"Hello").await.unwrap();
    assert_eq!(v.read(a.ino, fh, 0, 100).await.unwrap(), b"Hello");
    v.release(a.ino, fh).await.unwrap();
    // The same for a directory removed while the kernel still holds it.
    let d = v.mkdir(ROOT_INO, os("d"), 0o755, 0, 0).await.unwrap();
    assert_eq!(d.nlink, 2);
    v.rmdir(ROOT_INO, os("d")).await.unwrap();
    assert_eq!(v.getattr(d.ino).await.unwrap().nlink, 0);
    assert_eq!(v.getattr(ROOT_INO).await.unwrap().nlink, 2);
}

#[tokio::test]
async fn setgid_directory_passes_its_group_on() {
    let b = MemBackend::new();
    let root = b.new_dir();
    let tmp = tempfile::tempdir().unwrap();
    let v = mount(&b, &root, tmp.path()).await;
    let plain = v.mkdir(ROOT_INO, os("plain"), 0o755, 0, 0).await.unwrap();
    let sg = v.mkdir(ROOT_INO, os("sg"), 0o755, 0, 0).await.unwrap();
    let set = SetAttr {
        mode: Some(0o2775),
        gid: Some(50),
        ..SetAttr::default()
    };
    v.setattr(sg.ino, set).await.unwrap();
    // In a set-group-ID directory: the directory's group, and S_ISGID on new subdirectories
    // (not on files); elsewhere the creator's group.
    let (f, fh) = v
        .create(sg.ino, os("f"), 0o644, libc::O_WRONLY, 1000, 1000)
        .await
        .unwrap();
    v.release(f.ino, fh).await.unwrap();
    assert_eq!((f.gid, f.perm), (50, 0o644));
    let sub = v.mkdir(sg.ino, os("sub"), 0o755, 1000, 1000).await.unwrap();
    assert_eq!((sub.gid, sub.perm), (50, 0o2755));
    let fifo = v
        .mknod(sg.ino, os("p"), 0o010600, 0, 1000, 1000)
        .await
        .unwrap();
    assert_eq!(fifo.gid, 50);
    let l = v
        .symlink(sg.ino, os("l"), os("target"), 1000, 1000)
        .await
        .unwrap();
    assert_eq!(l.gid, 50);
    let sub2 = v.mkdir(sub.ino, os("deeper"), 0o700, 7, 7).await.unwrap();
    assert_eq!((sub2.gid, sub2.perm), (50, 0o2700));
    let d = v
        .mkdir(plain.ino, os("d"), 0o755, 1000, 1000)
        .await
        .unwrap();
    assert_eq!((d.gid, d.perm), (1000, 0o755));
    // Stored in the entry: a fresh mount sees the same.
    v.fsync(sub2.ino, 0).await.unwrap();
    let sg_cap = v.lock().dir_cap(sg.ino).unwrap();
    let l = grid_listing(&b, &sg_cap);
    assert_eq!(l.get("sub").unwrap().metadata.st_mode(), Some(0o042755));
    assert_eq!(l.get("sub").unwrap().metadata.st_gid(), Some(50));
}

/// The cap of the directory at `path` (names from the root), read from the grid alone.
fn grid_dir(b: &MemBackend, root: &str, path: &[&str]) -> Option<String> {
    let mut cap = root.to_string();
    for name in path {
        let l = grid_listing(b, &cap);
        cap = child_cap(l.get(name)?)?;
    }
    Some(cap)
}

#[tokio::test]
async fn mkdir_is_write_back_and_touches_no_grid() {
    let b = MemBackend::new();
    let root = b.new_dir();
    let tmp = tempfile::tempdir().unwrap();
    let v = mount(&b, &root, tmp.path()).await;
    v.readdir(ROOT_INO).await.unwrap();
    let calls = b.call_count();
    let a = v.mkdir(ROOT_INO, os("a"), 0o750, 1000, 1000).await.unwrap();
    let c = v.mkdir(a.ino, os("c"), 0o755, 1000, 1000).await.unwrap();
    let f = put(&v, c.ino, "f", b"data").await;
    assert_eq!(v.readdir(a.ino).await.unwrap().len(), 3);
    assert_eq!(v.lookup(c.ino, os("f")).await.unwrap().ino, f);
    assert_eq!(v.getattr(a.ino).await.unwrap().perm, 0o750);
    let st = v.status();
    assert_eq!(st.pending_dir_changes, 3, "two links and one file");
    assert_eq!(
        b.call_count(),
        calls,
        "mkdir and work inside made no grid call"
    );
    assert_eq!(b.create_count(), 0);
}

#[tokio::test]
async fn pending_dir_is_created_holding_its_files_in_one_publish() {
    let b = MemBackend::new();
    let root = b.new_dir();
    let tmp = tempfile::tempdir().unwrap();
    let v = mount(&b, &root, tmp.path()).await;
    let a = v.mkdir(ROOT_INO, os("a"), 0o755, 1000, 1000).await.unwrap();
    let c = v.mkdir(a.ino, os("c"), 0o700, 1000, 1000).await.unwrap();
    put(&v, a.ino, "big", &[5u8; 3000]).await;
    put(&v, c.ino, "small", b"s").await;
    v.flush_all().await.unwrap();
    // Deepest first: c is created holding its file, then a holding `big` and c; the root is
    // the only directory published after its creation.
    assert_eq!(b.create_count(), 2);
    assert_eq!(b.publish_count(), 1);
    let a_cap = grid_dir(&b, &root, &["a"]).unwrap();
    let c_cap = grid_dir(&b, &root, &["a", "c"]).unwrap();
    assert_eq!(grid_file(&b, &a_cap, "big"), Some(vec![5u8; 3000]));
    assert_eq!(grid_file(&b, &c_cap, "small"), Some(b"s".to_vec()));
    let l = grid_listing(&b, &a_cap);
    assert_eq!(l.get("c").unwrap().metadata.st_mode(), Some(0o040700));
    assert_eq!(v.status().pending_dir_changes, 0);
    // The created directory is an ordinary one now: later changes are publishes.
    put(&v, c.ino, "later", b"l").await;
    v.fsyncdir(c.ino).await.unwrap();
    assert_eq!(grid_file(&b, &c_cap, "later"), Some(b"l".to_vec()));
    assert_eq!(b.create_count(), 2);
}

#[tokio::test]
async fn rmdir_of_a_never_created_dir_makes_no_grid_call() {
    let b = MemBackend::new();
    let root = b.new_dir();
    let tmp = tempfile::tempdir().unwrap();
    let v = mount(&b, &root, tmp.path()).await;
    v.readdir(ROOT_INO).await.unwrap();
    let calls = b.call_count();
    let d = v.mkdir(ROOT_INO, os("d"), 0o755, 0, 0).await.unwrap();
    let e = v.mkdir(d.ino, os("e"), 0o755, 0, 0).await.unwrap();
    put(&v, e.ino, "f", b"x").await;
    v.unlink(e.ino, os("f")).await.unwrap();
    v.rmdir(d.ino, os("e")).await.unwrap();
    v.rmdir(ROOT_INO, os("d")).await.unwrap();
    assert_eq!(v.status().pending_dir_changes, 0);
    v.flush_all().await.unwrap();
    assert_eq!(b.call_count(), calls);
    assert!(grid_listing(&b, &root).is_empty());
}

#[tokio::test]
async fn rename_of_a_pending_dir_moves_it_before_it_exists() {
    let b = MemBackend::new();
    let root = b.new_dir();
    let tmp = tempfile::tempdir().unwrap();
    let v = mount(&b, &root, tmp.path()).await;
    let a = v.mkdir(ROOT_INO, os("a"), 0o755, 0, 0).await.unwrap();
    let bb = v.mkdir(ROOT_INO, os("b"), 0o755, 0, 0).await.unwrap();
    let x = v.mkdir(a.ino, os("x"), 0o755, 0, 0).await.unwrap();
    put(&v, x.ino, "f", b"in x").await;
    v.rename(a.ino, os("x"), bb.ino, os("y"), 0).await.unwrap();
    // Replace an empty pending directory by a rename: its own link goes away unpublished.
    v.mkdir(ROOT_INO, os("gone"), 0o755, 0, 0).await.unwrap();
    v.rename(ROOT_INO, os("b"), ROOT_INO, os("gone"), 0)
        .await
        .unwrap();
    v.flush_all().await.unwrap();
    assert_eq!(b.create_count(), 3, "a, b (now gone) and x (now gone/y)");
    let y = grid_dir(&b, &root, &["gone", "y"]).unwrap();
    assert_eq!(grid_file(&b, &y, "f"), Some(b"in x".to_vec()));
    let a_cap = grid_dir(&b, &root, &["a"]).unwrap();
    assert!(grid_listing(&b, &a_cap).is_empty());
    let names: Vec<String> = grid_listing(&b, &root)
        .iter()
        .map(|(n, _)| n.to_string())
        .collect();
    assert_eq!(names, vec!["a".to_string(), "gone".to_string()]);
}

#[tokio::test]
async fn crash_with_nested_pending_dirs_replays_and_creates_them() {
    let b = MemBackend::new();
    let root = b.new_dir();
    let tmp = tempfile::tempdir().unwrap();
    let v = mount(&b, &root, tmp.path()).await;
    let a = v.mkdir(ROOT_INO, os("a"), 0o755, 0, 0).await.unwrap();
    let bd = v.mkdir(a.ino, os("b"), 0o711, 0, 0).await.unwrap();
    let c = v.mkdir(bd.ino, os("c"), 0o755, 0, 0).await.unwrap();
    v.mkdir(c.ino, os("empty"), 0o755, 0, 0).await.unwrap();
    put(&v, c.ino, "f", &[3u8; 4000]).await;
    put(&v, a.ino, "g", b"g").await;
    v.crash().await;
    assert_eq!(b.create_count(), 0);
    let v = mount(&b, &root, tmp.path()).await;
    // The pending tree is back, before anything reached the grid.
    let a = v.lookup(ROOT_INO, os("a")).await.unwrap();
    let bd = v.lookup(a.ino, os("b")).await.unwrap();
    assert_eq!(bd.perm, 0o711);
    let c = v.lookup(bd.ino, os("c")).await.unwrap();
    let f = v.lookup(c.ino, os("f")).await.unwrap();
    assert_eq!(cat(&v, f.ino).await, vec![3u8; 4000]);
    assert!(v.lookup(c.ino, os("empty")).await.is_ok());
    assert_eq!(b.create_count(), 0);
    // A second crash before any lookup: the flusher alone (no node loaded) creates it all.
    v.crash().await;
    let v = mount(&b, &root, tmp.path()).await;
    v.flush_all().await.unwrap();
    assert_eq!(b.create_count(), 4);
    let c_cap = grid_dir(&b, &root, &["a", "b", "c"]).unwrap();
    assert_eq!(grid_file(&b, &c_cap, "f"), Some(vec![3u8; 4000]));
    assert!(grid_dir(&b, &root, &["a", "b", "c", "empty"]).is_some());
    let a_cap = grid_dir(&b, &root, &["a"]).unwrap();
    assert_eq!(grid_file(&b, &a_cap, "g"), Some(b"g".to_vec()));
}

#[tokio::test]
async fn crash_after_creation_before_the_link_is_published_keeps_the_created_dir() {
    let b = MemBackend::new();
    let root = b.new_dir();
    let tmp = tempfile::tempdir().unwrap();
    let v = mount(&b, &root, tmp.path()).await;
    let a = v.mkdir(ROOT_INO, os("a"), 0o755, 0, 0).await.unwrap();
    put(&v, a.ino, "f", b"f").await;
    b.fail_all_publishes(true);
    // The directory gets created; the root's publish (its link) fails.
    assert!(v.flush_all().await.is_err());
    assert_eq!(b.create_count(), 1);
    v.crash().await;
    b.fail_all_publishes(false);
    let v = mount(&b, &root, tmp.path()).await;
    let a = v.lookup(ROOT_INO, os("a")).await.unwrap();
    assert!(v.lookup(a.ino, os("f")).await.is_ok());
    v.flush_all().await.unwrap();
    // Not created again: the journal knew its cap.
    assert_eq!(b.create_count(), 1);
    let a_cap = grid_dir(&b, &root, &["a"]).unwrap();
    assert_eq!(grid_file(&b, &a_cap, "f"), Some(b"f".to_vec()));
}

#[tokio::test]
async fn fsync_inside_a_pending_dir_returns_once_the_chain_to_the_root_is_on_the_grid() {
    let b = MemBackend::new();
    let root = b.new_dir();
    let tmp = tempfile::tempdir().unwrap();
    let v = mount(&b, &root, tmp.path()).await;
    let a = v.mkdir(ROOT_INO, os("a"), 0o755, 0, 0).await.unwrap();
    let bd = v.mkdir(a.ino, os("b"), 0o755, 0, 0).await.unwrap();
    let f = put(&v, bd.ino, "f", b"deep").await;
    put(&v, ROOT_INO, "unrelated", b"u").await;
    v.fsync(f, 0).await.unwrap();
    let b_cap = grid_dir(&b, &root, &["a", "b"]).expect("the whole chain is linked");
    assert_eq!(grid_file(&b, &b_cap, "f"), Some(b"deep".to_vec()));
    // fsyncdir of an empty new directory: created and linked.
    let e = v.mkdir(bd.ino, os("e"), 0o755, 0, 0).await.unwrap();
    v.fsyncdir(e.ino).await.unwrap();
    assert!(grid_dir(&b, &root, &["a", "b", "e"]).is_some());
}

#[tokio::test]
async fn failed_creation_is_reported_by_fsync_and_status_then_retried() {
    let b = MemBackend::new();
    let root = b.new_dir();
    let tmp = tempfile::tempdir().unwrap();
    let v = mount(&b, &root, tmp.path()).await;
    b.fail_all_creates(true);
    let d = v.mkdir(ROOT_INO, os("d"), 0o755, 0, 0).await.unwrap();
    let f = put(&v, d.ino, "f", b"x").await;
    assert_eq!(v.fsync(f, 0).await.unwrap_err().to_errno(), libc::EIO);
    assert!(v
        .status()
        .last_errors
        .iter()
        .any(|e| e.contains("directory creation failed")));
    b.fail_all_creates(false);
    v.fsync(f, 0).await.unwrap();
    let d_cap = grid_dir(&b, &root, &["d"]).unwrap();
    assert_eq!(grid_file(&b, &d_cap, "f"), Some(b"x".to_vec()));
}

/// A file written only at its end from empty is uploaded with the content key the writes fed
/// (MemBackend checks the key against the bytes it uploads and fails the upload otherwise); a
/// file written out of order, truncated, or reopened and appended gets no key (the upload
/// computes it), and its content is still right.
#[tokio::test]
async fn sequential_writes_feed_the_content_key_others_fall_back() {
    let b = MemBackend::new();
    let root = b.new_dir();
    let tmp = tempfile::tempdir().unwrap();
    let v = mount(&b, &root, tmp.path()).await;
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let create = |name: &'static str| {
        let v = &v;
        async move {
            v.create(ROOT_INO, os(name), 0o644, libc::O_WRONLY, 1000, 1000)
                .await
                .unwrap()
        }
    };
    // Sequential, in pieces (the size 0 write at the start changes nothing).
    let (a, fh) = create("seq").await;
    v.write(a.ino, fh, 0, &[]).await.unwrap();
    for (i, piece) in data.chunks(65536).enumerate() {
        v.write(a.ino, fh, (i * 65536) as u64, piece).await.unwrap();
    }
    v.release(a.ino, fh).await.unwrap();
    v.fsync(a.ino, 0).await.unwrap();
    assert_eq!(grid_file(&b, &root, "seq"), Some(data.clone()));
    assert_eq!((b.upload_count(), b.keyed_upload_count()), (1, 1));

    // Out of order: the second half first.
    let (a, fh) = create("ooo").await;
    v.write(a.ino, fh, 150_000, &data[150_000..]).await.unwrap();
    v.write(a.ino, fh, 0, &data[..150_000]).await.unwrap();
    v.release(a.ino, fh).await.unwrap();
    v.fsync(a.ino, 0).await.unwrap();
    assert_eq!(grid_file(&b, &root, "ooo"), Some(data.clone()));
    assert_eq!((b.upload_count(), b.keyed_upload_count()), (2, 1));

    // An overwrite inside what was written, then appends.
    let (a, fh) = create("over").await;
    v.write(a.ino, fh, 0, &data[..1000]).await.unwrap();
    v.write(a.ino, fh, 10, &data[10..20]).await.unwrap();
    v.write(a.ino, fh, 1000, &data[1000..]).await.unwrap();
    v.release(a.ino, fh).await.unwrap();
    v.fsync(a.ino, 0).await.unwrap();
    assert_eq!(grid_file(&b, &root, "over"), Some(data.clone()));
    assert_eq!((b.upload_count(), b.keyed_upload_count()), (3, 1));

    // A shrinking truncate then appends at the new end: no key.
    let (a, fh) = create("trunc").await;
    v.write(a.ino, fh, 0, &data).await.unwrap();
    let set = SetAttr {
        size: Some(5000),
        ..SetAttr::default()
    };
    v.setattr(a.ino, set).await.unwrap();
    v.write(a.ino, fh, 5000, &data[5000..]).await.unwrap();
    v.release(a.ino, fh).await.unwrap();
    v.fsync(a.ino, 0).await.unwrap();
    assert_eq!(grid_file(&b, &root, "trunc"), Some(data.clone()));
    assert_eq!((b.upload_count(), b.keyed_upload_count()), (4, 1));

    // Truncated to empty (O_TRUNC), then written from the start again: keyed.
    let fh = v.open(a.ino, libc::O_WRONLY | libc::O_TRUNC).await.unwrap();
    v.write(a.ino, fh, 0, &data[..200_000]).await.unwrap();
    v.write(a.ino, fh, 200_000, &data[200_000..]).await.unwrap();
    v.release(a.ino, fh).await.unwrap();
    v.fsync(a.ino, 0).await.unwrap();
    assert_eq!(grid_file(&b, &root, "trunc"), Some(data.clone()));
    assert_eq!((b.upload_count(), b.keyed_upload_count()), (5, 2));

    // Reopened (content from the grid) and appended: no key, and the old bytes are kept.
    let fh = v.open(a.ino, libc::O_WRONLY).await.unwrap();
    v.write(a.ino, fh, data.len() as u64, b"tail")
        .await
        .unwrap();
    v.release(a.ino, fh).await.unwrap();
    v.fsync(a.ino, 0).await.unwrap();
    let mut want = data.clone();
    want.extend_from_slice(b"tail");
    assert_eq!(grid_file(&b, &root, "trunc"), Some(want));
    assert_eq!((b.upload_count(), b.keyed_upload_count()), (6, 2));
    assert!(
        v.status().last_errors.is_empty(),
        "{:?}",
        v.status().last_errors
    );
}

/// The FUSE thread's write: done at once for a file in the cache with room for it, exactly as
/// [`Vfs::write`] would; left to [`Vfs::write`] (`None`) when it might have to wait for cache
/// space; a bad or read-only handle is refused at once.
#[tokio::test]
async fn write_now_applies_only_writes_that_need_no_wait() {
    let b = MemBackend::new();
    let root = b.new_dir();
    let tmp = tempfile::tempdir().unwrap();
    let mut c = cfg(tmp.path(), 3_600_000);
    c.cache_size = 10_000;
    let v = Vfs::new(Arc::new(b.clone()), &root, c).await.unwrap();
    let (a, fh) = v
        .create(ROOT_INO, os("f"), 0o644, libc::O_RDWR, 1000, 1000)
        .await
        .unwrap();
    assert_eq!(v.write_now(a.ino, fh, 0, b"hello").unwrap().unwrap(), 5);
    assert_eq!(v.write_now(a.ino, fh, 3, b"p!").unwrap().unwrap(), 2);
    assert_eq!(v.getattr(a.ino).await.unwrap().size, 5);
    assert_eq!(v.read(a.ino, fh, 0, 100).await.unwrap(), b"help!");
    // Over the cache bound: the async path decides (here: no other file to free, so it writes).
    let big = vec![7u8; 20_000];
    assert!(v.write_now(a.ino, fh, 5, &big).is_none());
    assert_eq!(v.write(a.ino, fh, 5, &big).await.unwrap(), 20_000);
    // Inside what is there: no growth, no wait even over the bound.
    assert_eq!(v.write_now(a.ino, fh, 0, b"J").unwrap().unwrap(), 1);
    assert_eq!(
        v.write_now(a.ino, fh + 100, 0, b"x")
            .unwrap()
            .unwrap_err()
            .to_errno(),
        libc::EBADF
    );
    let ro = v.open(a.ino, libc::O_RDONLY).await.unwrap();
    assert_eq!(
        v.write_now(a.ino, ro, 0, b"x")
            .unwrap()
            .unwrap_err()
            .to_errno(),
        libc::EBADF
    );
    v.release(a.ino, ro).await.unwrap();
    v.release(a.ino, fh).await.unwrap();
    v.fsync(a.ino, 0).await.unwrap();
    let mut want = b"Jelp!".to_vec();
    want.extend_from_slice(&big);
    assert_eq!(grid_file(&b, &root, "f"), Some(want));
}

/// Large sequential writes are hashed beside the writes (read back from the cache file by a
/// background task): an fsync right after the last write waits for the hash and uploads with
/// its key (MemBackend fails an upload whose key is not the content's); an overwrite (the hash
/// may still be running) cancels it, and the upload computes the key itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_sequential_writes_are_hashed_beside_and_keyed_at_fsync() {
    let b = MemBackend::new();
    let root = b.new_dir();
    let tmp = tempfile::tempdir().unwrap();
    let v = mount(&b, &root, tmp.path()).await;
    let data: Vec<u8> = (0..(24u32 << 20) + 12345)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let (a, fh) = v
        .create(ROOT_INO, os("seq"), 0o644, libc::O_WRONLY, 1000, 1000)
        .await
        .unwrap();
    for (i, piece) in data.chunks(1 << 20).enumerate() {
        let n = v.write_now(a.ino, fh, (i << 20) as u64, piece).unwrap();
        assert_eq!(n.unwrap() as usize, piece.len());
    }
    v.fsync(a.ino, fh).await.unwrap();
    v.release(a.ino, fh).await.unwrap();
    assert_eq!(grid_file(&b, &root, "seq"), Some(data.clone()));
    assert_eq!((b.upload_count(), b.keyed_upload_count()), (1, 1));

    let (a, fh) = v
        .create(ROOT_INO, os("over"), 0o644, libc::O_WRONLY, 1000, 1000)
        .await
        .unwrap();
    for (i, piece) in data.chunks(4 << 20).enumerate() {
        v.write(a.ino, fh, (i << 22) as u64, piece).await.unwrap();
    }
    v.write(a.ino, fh, 1, b"\x00\x01").await.unwrap();
    v.fsync(a.ino, fh).await.unwrap();
    v.release(a.ino, fh).await.unwrap();
    let mut want = data.clone();
    want[1..3].copy_from_slice(b"\x00\x01");
    assert_eq!(grid_file(&b, &root, "over"), Some(want));
    assert_eq!((b.upload_count(), b.keyed_upload_count()), (2, 1));
    assert!(
        v.status().last_errors.is_empty(),
        "{:?}",
        v.status().last_errors
    );
}

/// Overwrites `name` (an existing file) with `data` and closes it, without fsync.
async fn overwrite(v: &Vfs, parent: Ino, name: &str, data: &[u8]) -> Ino {
    let a = v.lookup(parent, os(name)).await.unwrap();
    let fh = v.open(a.ino, libc::O_WRONLY | libc::O_TRUNC).await.unwrap();
    v.write(a.ino, fh, 0, data).await.unwrap();
    v.flush(a.ino, fh).await.unwrap();
    v.release(a.ino, fh).await.unwrap();
    a.ino
}

fn conflict_reported(v: &Vfs) -> bool {
    v.status()
        .last_errors
        .iter()
        .any(|e| e.contains("another writer"))
}

#[tokio::test]
async fn change_replayed_after_a_crash_does_not_overwrite_another_writers_change() {
    // Whether the remounted view lists the directory before its first publish (the base then
    // comes from a listing that already has the other writer's change) or not.
    for list_first in [false, true] {
        let b = MemBackend::new();
        let root = b.new_dir();
        let tmp = tempfile::tempdir().unwrap();
        let v = mount(&b, &root, tmp.path()).await;
        let a = put(&v, ROOT_INO, "a", b"mine").await;
        v.fsync(a, 0).await.unwrap();
        overwrite(&v, ROOT_INO, "a", b"mine, changed").await;
        put(&v, ROOT_INO, "b", b"other name").await;
        v.crash().await;
        // Another client changes "a" while the daemon is down.
        let mut l = grid_listing(&b, &root);
        let theirs = b.put_bytes(b"their a");
        l.insert("a", child_for(&theirs, Metadata::new()));
        b.set_dir_body(&root, l.pack().unwrap());
        let v = mount(&b, &root, tmp.path()).await;
        if list_first {
            v.lookup(ROOT_INO, os("b")).await.unwrap();
        }
        let e = v.flush_all().await.unwrap_err();
        assert_eq!(e.to_errno(), libc::EIO, "list_first={list_first}");
        assert!(conflict_reported(&v), "list_first={list_first}");
        assert_eq!(grid_file(&b, &root, "a"), Some(b"their a".to_vec()));
        // The change to the other name went up.
        assert_eq!(grid_file(&b, &root, "b"), Some(b"other name".to_vec()));
    }
}

#[tokio::test]
async fn publish_whose_reply_was_lost_is_not_taken_for_another_writers_change() {
    // In the same session, and replayed after a crash.
    for crash in [false, true] {
        let b = MemBackend::new();
        let root = b.new_dir();
        let tmp = tempfile::tempdir().unwrap();
        let v = mount(&b, &root, tmp.path()).await;
        let a = put(&v, ROOT_INO, "a", b"first").await;
        v.fsync(a, 0).await.unwrap();
        overwrite(&v, ROOT_INO, "a", b"second").await;
        b.lose_next_publish_replies(1);
        assert_eq!(v.fsync(a, 0).await.unwrap_err().to_errno(), libc::EIO);
        // The grid took it; the daemon does not know.
        assert_eq!(grid_file(&b, &root, "a"), Some(b"second".to_vec()));
        let v = if crash {
            v.crash().await;
            mount(&b, &root, tmp.path()).await
        } else {
            v
        };
        v.flush_all().await.unwrap();
        assert!(!conflict_reported(&v), "crash={crash}");
        assert_eq!(grid_file(&b, &root, "a"), Some(b"second".to_vec()));
    }
}

#[tokio::test]
async fn change_made_while_an_earlier_one_was_publishing_accepts_that_publish_after_a_crash() {
    let b = MemBackend::new();
    let root = b.new_dir();
    let tmp = tempfile::tempdir().unwrap();
    let v = mount(&b, &root, tmp.path()).await;
    let a = put(&v, ROOT_INO, "a", b"first").await;
    v.fsync(a, 0).await.unwrap();
    overwrite(&v, ROOT_INO, "a", b"second").await;
    b.lose_next_publish_replies(1);
    assert!(v.fsync(a, 0).await.is_err());
    // A newer change of the same name, made before the daemon learnt that "second" landed.
    overwrite(&v, ROOT_INO, "a", b"third").await;
    v.crash().await;
    let v = mount(&b, &root, tmp.path()).await;
    v.flush_all().await.unwrap();
    assert!(!conflict_reported(&v));
    assert_eq!(grid_file(&b, &root, "a"), Some(b"third".to_vec()));
}

#[tokio::test]
async fn entry_changed_while_its_new_dir_was_created_is_not_taken_for_another_writers_change() {
    // A directory made by mkdir is created on the grid holding its entries. An entry changed
    // while the creation is under way stays pending, to be published over the created entry.
    // Cases: all in one session; the directory's records replayed after a crash (the mount's
    // kill -9) and created in the next session, as the remounted fsx test meets them; and a
    // crash after the creation, before the changes made during it were published.
    for (crash_before, crash_after) in [(false, false), (true, false), (false, true)] {
        let case = format!("crash_before={crash_before} crash_after={crash_after}");
        let b = MemBackend::new();
        let root = b.new_dir();
        let tmp = tempfile::tempdir().unwrap();
        let v = mount(&b, &root, tmp.path()).await;
        let a = v.mkdir(ROOT_INO, os("a"), 0o755, 0, 0).await.unwrap();
        put(&v, a.ino, "f", b"f").await;
        let h = put(&v, a.ino, "h", b"h").await;
        let (v, a, h) = if crash_before {
            v.crash().await;
            let v = mount(&b, &root, tmp.path()).await;
            let a = v.lookup(ROOT_INO, os("a")).await.unwrap().ino;
            let h = v.lookup(a, os("h")).await.unwrap().ino;
            (v, a, h)
        } else {
            (v, a.ino, h)
        };
        let gate = b.hold_next_create();
        if crash_after {
            // The creation lands, the publishes after it do not: the changes made meanwhile
            // are still pending when the daemon dies.
            b.fail_all_publishes(true);
        }
        let change = async {
            gate.landed.notified().await;
            v.rename(a, os("f"), a, os("g"), 0).await.unwrap();
            let mode = SetAttr {
                mode: Some(0o600),
                ..Default::default()
            };
            v.setattr(h, mode).await.unwrap();
            gate.release.notify_one();
        };
        let (flushed, ()) = tokio::join!(v.flush_all(), change);
        assert_eq!(b.create_count(), 1, "{case}");
        let v = if crash_after {
            assert!(flushed.is_err(), "{case}");
            v.crash().await;
            b.fail_all_publishes(false);
            let v = mount(&b, &root, tmp.path()).await;
            v.flush_all().await.unwrap();
            v
        } else {
            assert!(flushed.is_ok(), "{case}: {:?}", v.status().last_errors);
            v
        };
        assert!(!conflict_reported(&v), "{case}: {:?}", v.status());
        let a_cap = grid_dir(&b, &root, &["a"]).unwrap();
        let names: Vec<String> = grid_listing(&b, &a_cap)
            .iter()
            .map(|(n, _)| n.to_string())
            .collect();
        assert_eq!(names, vec!["g".to_string(), "h".to_string()], "{case}");
        assert_eq!(grid_file(&b, &a_cap, "g"), Some(b"f".to_vec()), "{case}");
        let h_mode = grid_listing(&b, &a_cap)
            .get("h")
            .unwrap()
            .metadata
            .st_mode();
        assert_eq!(h_mode, Some(0o100600), "{case}");
        assert_eq!(b.create_count(), 1, "{case}");
    }
}

/// Everything the layer shows below `ino`: path -> the file's bytes, `None` for a directory.
async fn local_tree(v: &Vfs, ino: Ino) -> BTreeMap<String, Option<Vec<u8>>> {
    let mut out = BTreeMap::new();
    let mut todo = vec![(ino, String::new())];
    while let Some((d, prefix)) = todo.pop() {
        for e in v.readdir(d).await.unwrap() {
            if e.name == "." || e.name == ".." {
                continue;
            }
            let path = format!("{prefix}{}", e.name);
            let a = v.lookup(d, os(&e.name)).await.unwrap();
            if a.kind == FileKind::Dir {
                out.insert(path.clone(), None);
                todo.push((a.ino, format!("{path}/")));
            } else {
                out.insert(path, Some(cat(v, a.ino).await));
            }
        }
    }
    out
}

/// [`local_tree`] as another client reads it from the grid alone.
fn grid_tree(b: &MemBackend, cap: &str) -> BTreeMap<String, Option<Vec<u8>>> {
    let mut out = BTreeMap::new();
    let mut todo = vec![(cap.to_string(), String::new())];
    while let Some((d, prefix)) = todo.pop() {
        for (name, child) in grid_listing(b, &d).iter() {
            let path = format!("{prefix}{name}");
            let c = child_cap(child).expect("an entry with a cap");
            if Cap::parse(&c).is_directory() {
                out.insert(path.clone(), None);
                todo.push((c, format!("{path}/")));
            } else {
                out.insert(
                    path,
                    Some(b.get_bytes(&c).expect("the file is on the grid")),
                );
            }
        }
    }
    out
}

/// Where a test of a lost publish reply kills the daemon (kill -9) and remounts on the same
/// cache: the journal's replay must then do what the session would have.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CrashAt {
    Never,
    /// After the lost reply, before the local change.
    BeforeChange,
    /// After the local change, before anything more is published.
    AfterChange,
}

const CRASHES: [CrashAt; 3] = [CrashAt::Never, CrashAt::BeforeChange, CrashAt::AfterChange];

async fn crash_and_remount_if(
    yes: bool,
    v: Vfs,
    b: &MemBackend,
    root: &str,
    dir: &std::path::Path,
) -> Vfs {
    if !yes {
        return v;
    }
    v.crash().await;
    mount(b, root, dir).await
}

/// The fsync of a test marks the root urgent while it waits, so after its error a retry may be
/// under way or due (the test makes it fail). Waits until none is: the test's next change then
/// meets what a lost reply leaves, the change pending and no publish in flight (a removal made
/// during a publish is recorded whatever the listing says).
async fn wait_until_no_publish_is_under_way_or_due(v: &Vfs) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        {
            let st = v.lock();
            if st.publishing.is_empty() && st.urgent_dirs.is_empty() {
                break;
            }
        }
        assert!(Instant::now() < deadline, "a publish still in flight");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Publishes the root's pending changes (among them the entry of `name`, whose file or
/// directory the caller made) with the publish's reply lost: the grid has the entry, the
/// daemon does not know and keeps the change pending. Publishes then fail until
/// [`assert_grid_is_the_local_view`], so no retry (the fsync may have left the root urgent)
/// tells the daemon before the test's local change.
async fn publish_losing_the_reply(v: &Vfs, b: &MemBackend, root: &str, name: &str) {
    let ino = v.lookup(ROOT_INO, os(name)).await.unwrap().ino;
    let publishes = b.publish_count();
    b.lose_next_publish_replies(1);
    assert_eq!(v.fsync(ino, 0).await.unwrap_err().to_errno(), libc::EIO);
    b.fail_all_publishes(true);
    assert_eq!(b.publish_count(), publishes + 1, "the publish landed");
    assert!(
        grid_listing(b, root).get(name).is_some(),
        "the grid has {name}"
    );
    wait_until_no_publish_is_under_way_or_due(v).await;
    assert!(
        v.status().pending_dir_changes > 0,
        "the daemon does not know"
    );
}

/// After a flush, the grid holds exactly `want` (the view the layer showed right after the
/// local change), the layer still shows it, a mount with a fresh cache (which sees only the
/// grid) shows it too, and no conflict was reported.
async fn assert_grid_is_the_local_view(
    v: &Vfs,
    b: &MemBackend,
    root: &str,
    want: &BTreeMap<String, Option<Vec<u8>>>,
    case: &str,
) {
    b.fail_all_publishes(false);
    let flushed = v.flush_all().await;
    assert!(flushed.is_ok(), "{case}: {:?}", v.status().last_errors);
    assert!(
        !conflict_reported(v),
        "{case}: {:?}",
        v.status().last_errors
    );
    assert_eq!(&grid_tree(b, root), want, "{case}: the grid");
    assert_eq!(&local_tree(v, ROOT_INO).await, want, "{case}: the layer");
    let fresh = tempfile::tempdir().unwrap();
    let other = mount(b, root, fresh.path()).await;
    assert_eq!(
        &local_tree(&other, ROOT_INO).await,
        want,
        "{case}: a fresh mount"
    );
}

/// A file whose entry was published with the reply lost, then unlinked before the next
/// publish: the pending change must become a removal (the grid may have the entry), not be
/// dropped as if the name had never left the daemon, which left the entry on the grid.
#[tokio::test]
async fn unlink_after_a_lost_publish_reply_removes_the_entry_from_the_grid() {
    for crash in CRASHES {
        let case = format!("{crash:?}");
        let b = MemBackend::new();
        let root = b.new_dir();
        let tmp = tempfile::tempdir().unwrap();
        let v = mount(&b, &root, tmp.path()).await;
        let keep = put(&v, ROOT_INO, "keep", b"kept").await;
        v.fsync(keep, 0).await.unwrap();
        put(&v, ROOT_INO, "x", b"published, reply lost").await;
        publish_losing_the_reply(&v, &b, &root, "x").await;
        let v =
            crash_and_remount_if(crash == CrashAt::BeforeChange, v, &b, &root, tmp.path()).await;
        v.unlink(ROOT_INO, os("x")).await.unwrap();
        let want = local_tree(&v, ROOT_INO).await;
        assert_eq!(want.keys().collect::<Vec<_>>(), vec!["keep"], "{case}");
        let v = crash_and_remount_if(crash == CrashAt::AfterChange, v, &b, &root, tmp.path()).await;
        assert_grid_is_the_local_view(&v, &b, &root, &want, &case).await;
    }
}

/// As [`unlink_after_a_lost_publish_reply_removes_the_entry_from_the_grid`], for a directory
/// made by mkdir: created on the grid, linked by the publish whose reply was lost, then
/// removed by rmdir.
#[tokio::test]
async fn rmdir_after_a_lost_publish_reply_removes_the_entry_from_the_grid() {
    for crash in CRASHES {
        let case = format!("{crash:?}");
        let b = MemBackend::new();
        let root = b.new_dir();
        let tmp = tempfile::tempdir().unwrap();
        let v = mount(&b, &root, tmp.path()).await;
        let keep = put(&v, ROOT_INO, "keep", b"kept").await;
        v.fsync(keep, 0).await.unwrap();
        v.mkdir(ROOT_INO, os("d"), 0o755, 0, 0).await.unwrap();
        publish_losing_the_reply(&v, &b, &root, "d").await;
        assert_eq!(b.create_count(), 1, "{case}");
        let v =
            crash_and_remount_if(crash == CrashAt::BeforeChange, v, &b, &root, tmp.path()).await;
        v.rmdir(ROOT_INO, os("d")).await.unwrap();
        let want = local_tree(&v, ROOT_INO).await;
        assert_eq!(want.keys().collect::<Vec<_>>(), vec!["keep"], "{case}");
        let v = crash_and_remount_if(crash == CrashAt::AfterChange, v, &b, &root, tmp.path()).await;
        assert_grid_is_the_local_view(&v, &b, &root, &want, &case).await;
    }
}

/// A name published with the reply lost, then renamed away before the next publish (to a new
/// name in the same directory, into another directory, over another entry): the old name must
/// leave the grid, or the entry shows twice.
#[tokio::test]
async fn rename_away_after_a_lost_publish_reply_removes_the_old_name_from_the_grid() {
    for (to_dir, to_name) in [("", "y"), ("sub", "x"), ("", "z")] {
        for crash in CRASHES {
            let case = format!("to {to_dir}/{to_name}, {crash:?}");
            let b = MemBackend::new();
            let root = b.new_dir();
            let tmp = tempfile::tempdir().unwrap();
            let v = mount(&b, &root, tmp.path()).await;
            let sub = v.mkdir(ROOT_INO, os("sub"), 0o755, 0, 0).await.unwrap();
            let z = put(&v, ROOT_INO, "z", b"replaced").await;
            v.fsync(z, 0).await.unwrap();
            v.fsyncdir(sub.ino).await.unwrap();
            put(&v, ROOT_INO, "x", b"published, reply lost").await;
            publish_losing_the_reply(&v, &b, &root, "x").await;
            let v = crash_and_remount_if(crash == CrashAt::BeforeChange, v, &b, &root, tmp.path())
                .await;
            let dst = if to_dir.is_empty() {
                ROOT_INO
            } else {
                v.lookup(ROOT_INO, os(to_dir)).await.unwrap().ino
            };
            v.rename(ROOT_INO, os("x"), dst, os(to_name), 0)
                .await
                .unwrap();
            let want = local_tree(&v, ROOT_INO).await;
            assert!(!want.contains_key("x"), "{case}");
            let moved = if to_dir.is_empty() {
                to_name.to_string()
            } else {
                format!("{to_dir}/{to_name}")
            };
            assert_eq!(
                want.get(&moved),
                Some(&Some(b"published, reply lost".to_vec())),
                "{case}"
            );
            let v =
                crash_and_remount_if(crash == CrashAt::AfterChange, v, &b, &root, tmp.path()).await;
            assert_grid_is_the_local_view(&v, &b, &root, &want, &case).await;
        }
    }
}

/// Another entry renamed over a name published with the reply lost: the name's new entry
/// replaces ours on the grid (not taken for another writer's change), and the source name goes.
#[tokio::test]
async fn rename_over_a_name_published_with_a_lost_reply_replaces_it_on_the_grid() {
    for crash in CRASHES {
        let case = format!("{crash:?}");
        let b = MemBackend::new();
        let root = b.new_dir();
        let tmp = tempfile::tempdir().unwrap();
        let v = mount(&b, &root, tmp.path()).await;
        let y = put(&v, ROOT_INO, "y", b"moved over x").await;
        v.fsync(y, 0).await.unwrap();
        put(&v, ROOT_INO, "x", b"published, reply lost").await;
        publish_losing_the_reply(&v, &b, &root, "x").await;
        let v =
            crash_and_remount_if(crash == CrashAt::BeforeChange, v, &b, &root, tmp.path()).await;
        v.rename(ROOT_INO, os("y"), ROOT_INO, os("x"), 0)
            .await
            .unwrap();
        let want = local_tree(&v, ROOT_INO).await;
        let mut expect = BTreeMap::new();
        expect.insert("x".to_string(), Some(b"moved over x".to_vec()));
        assert_eq!(want, expect, "{case}");
        let v = crash_and_remount_if(crash == CrashAt::AfterChange, v, &b, &root, tmp.path()).await;
        assert_grid_is_the_local_view(&v, &b, &root, &want, &case).await;
    }
}

/// A name published with the reply lost, unlinked, then made again before the next publish:
/// the new entry replaces ours on the grid. Were the unlink to drop the pending change, the
/// new one would be based on the old listing (no such name), take our landed entry for
/// another writer's, and keep the new file aside as `x.conflict`, the old one at `x`.
#[tokio::test]
async fn name_made_again_after_a_lost_publish_reply_and_an_unlink_is_not_a_conflict() {
    for crash in CRASHES {
        let case = format!("{crash:?}");
        let b = MemBackend::new();
        let root = b.new_dir();
        let tmp = tempfile::tempdir().unwrap();
        let v = mount(&b, &root, tmp.path()).await;
        put(&v, ROOT_INO, "x", b"published, reply lost").await;
        publish_losing_the_reply(&v, &b, &root, "x").await;
        let v =
            crash_and_remount_if(crash == CrashAt::BeforeChange, v, &b, &root, tmp.path()).await;
        v.unlink(ROOT_INO, os("x")).await.unwrap();
        put(&v, ROOT_INO, "x", b"made again").await;
        let want = local_tree(&v, ROOT_INO).await;
        let mut expect = BTreeMap::new();
        expect.insert("x".to_string(), Some(b"made again".to_vec()));
        assert_eq!(want, expect, "{case}");
        let v = crash_and_remount_if(crash == CrashAt::AfterChange, v, &b, &root, tmp.path()).await;
        assert_grid_is_the_local_view(&v, &b, &root, &want, &case).await;
    }
}

/// The reverse: the removal of a name published with the reply lost (the grid no longer has
/// the name, the listing the changes are based on still does), then the name made again, and
/// removed again or kept. The grid ends as the local view: the removal is not lost, and the new
/// entry is not taken for another writer's.
#[tokio::test]
async fn removal_published_with_a_lost_reply_is_neither_lost_nor_taken_for_a_conflict() {
    for remove_again in [false, true] {
        for crash in CRASHES {
            let case = format!("remove_again={remove_again} {crash:?}");
            let b = MemBackend::new();
            let root = b.new_dir();
            let tmp = tempfile::tempdir().unwrap();
            let v = mount(&b, &root, tmp.path()).await;
            let x = put(&v, ROOT_INO, "x", b"old").await;
            v.fsync(x, 0).await.unwrap();
            v.unlink(ROOT_INO, os("x")).await.unwrap();
            b.lose_next_publish_replies(1);
            let e = v.fsyncdir(ROOT_INO).await.unwrap_err();
            assert_eq!(e.to_errno(), libc::EIO, "{case}");
            b.fail_all_publishes(true);
            assert!(grid_listing(&b, &root).get("x").is_none(), "{case}");
            wait_until_no_publish_is_under_way_or_due(&v).await;
            assert_eq!(v.status().pending_dir_changes, 1, "{case}");
            let v = crash_and_remount_if(crash == CrashAt::BeforeChange, v, &b, &root, tmp.path())
                .await;
            put(&v, ROOT_INO, "x", b"made again").await;
            if remove_again {
                v.unlink(ROOT_INO, os("x")).await.unwrap();
            }
            let want = local_tree(&v, ROOT_INO).await;
            assert_eq!(want.contains_key("x"), !remove_again, "{case}");
            let v =
                crash_and_remount_if(crash == CrashAt::AfterChange, v, &b, &root, tmp.path()).await;
            assert_grid_is_the_local_view(&v, &b, &root, &want, &case).await;
        }
    }
}

#[tokio::test]
async fn statfs_reports_name_max_and_counts_cache_use_and_nodes() {
    let b = MemBackend::new();
    let root = b.new_dir();
    let tmp = tempfile::tempdir().unwrap();
    let v = mount(&b, &root, tmp.path()).await;
    let s0 = v.statfs();
    assert_eq!((s0.namelen, s0.bsize), (255, 4096));
    assert!(s0.bfree <= s0.blocks && s0.bavail == s0.bfree && s0.ffree < s0.files);
    // 40 KiB not yet uploaded (write-back delay of an hour) take 10 blocks; one more node.
    put(&v, ROOT_INO, "f", &[1u8; 40960]).await;
    let s1 = v.statfs();
    assert_eq!(s0.bfree - s1.bfree, 10);
    assert_eq!(s0.ffree - s1.ffree, 1);
    assert_eq!(s1.blocks, s0.blocks);
}

/// The test config with the sealer held off (a file closed now is still unsealed when the
/// test's power cut comes), in machine boot `boot`.
fn unsealed_cfg(dir: &std::path::Path, boot: &str) -> Config {
    let mut c = cfg(dir, 3_600_000);
    c.seal_delay = Duration::from_secs(3600);
    c.boot_id = Some(boot.into());
    c
}

/// A mount of a fresh in-memory grid's root with [`unsealed_cfg`] in boot [`BOOT`]: the grid,
/// its root cap, the cache directory and the mount.
async fn unsealed_vfs() -> (MemBackend, String, tempfile::TempDir, Vfs) {
    let b = MemBackend::new();
    let root = b.new_dir();
    let tmp = tempfile::tempdir().unwrap();
    let v = Vfs::new(Arc::new(b.clone()), &root, unsealed_cfg(tmp.path(), BOOT))
        .await
        .unwrap();
    (b, root, tmp, v)
}

/// The test config after a reboot (another boot id).
fn rebooted_cfg(dir: &std::path::Path) -> Config {
    let mut c = cfg(dir, 3_600_000);
    c.boot_id = Some("boot-2".into());
    c
}

fn fid_of(v: &Vfs, ino: Ino) -> u64 {
    match v.lock().node(ino).unwrap().target {
        Target::File(f) => f,
        _ => panic!("not in the cache"),
    }
}

async fn wait_sealed(v: &Vfs, fid: u64) {
    for _ in 0..500 {
        if v.lock().journal.is_sealed(fid) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("data file {fid} was never sealed");
}

fn recovered_files(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir.join("recovered"))
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// A power cut (not a daemon crash) can leave a durable journal record naming a data file whose
/// content never reached the disk: here rsync's temp file, renamed over an existing file, not
/// fsync'd and not yet sealed, and torn. Replayed in the next boot it must not replace the good
/// version on the grid: its bytes go to `recovered/`, the status says so (name, never a cap).
#[tokio::test]
async fn power_cut_does_not_publish_a_torn_unsynced_file_over_the_previous_version() {
    let (b, root, tmp, v) = unsealed_vfs().await;
    let t = put(&v, ROOT_INO, "target", b"version 1").await;
    v.fsync(t, 0).await.unwrap();
    let tmpf = put(&v, ROOT_INO, ".target.XXXX", &[2u8; 10_000]).await;
    v.rename(ROOT_INO, os(".target.XXXX"), ROOT_INO, os("target"), 0)
        .await
        .unwrap();
    let fid = fid_of(&v, tmpf);
    v.crash().await;
    // What the disk may hold after the power cut: the record (the log was fdatasync'd), but
    // only part of the data file.
    let data = tmp.path().join("data").join(fid.to_string());
    fs::OpenOptions::new()
        .write(true)
        .open(&data)
        .unwrap()
        .set_len(4096)
        .unwrap();
    let v = Vfs::new(Arc::new(b.clone()), &root, rebooted_cfg(tmp.path()))
        .await
        .unwrap();
    v.flush_all().await.unwrap();
    assert_eq!(grid_file(&b, &root, "target"), Some(b"version 1".to_vec()));
    assert!(grid_listing(&b, &root).get(".target.XXXX").is_none());
    let a = v.lookup(ROOT_INO, os("target")).await.unwrap();
    assert_eq!(cat(&v, a.ino).await, b"version 1");
    // Moved aside, not deleted.
    assert!(!data.exists());
    assert_eq!(recovered_files(tmp.path()), vec![format!("{fid}-target")]);
    let kept = tmp.path().join("recovered").join(format!("{fid}-target"));
    assert_eq!(fs::read(&kept).unwrap(), vec![2u8; 4096]);
    let errs = v.status().last_errors;
    assert!(
        errs.iter().any(|e| e.contains("power cut")
            && e.contains("\"target\"")
            && e.contains(&kept.display().to_string())),
        "{errs:?}"
    );
    assert!(errs.iter().all(|e| !e.contains("URI:")), "{errs:?}");
    // Reported once: the next mount (same boot) has nothing left to set aside.
    v.crash().await;
    let v = Vfs::new(Arc::new(b.clone()), &root, rebooted_cfg(tmp.path()))
        .await
        .unwrap();
    assert!(v.status().last_errors.is_empty());
    assert_eq!(recovered_files(tmp.path()).len(), 1);
}

/// Files closed and sealed (fdatasync'd, then a seal frame) before the power cut are whole on
/// disk: the next boot publishes them as a restart would.
#[tokio::test]
async fn power_cut_publishes_files_sealed_before_it() {
    let b = MemBackend::new();
    let root = b.new_dir();
    let tmp = tempfile::tempdir().unwrap();
    let v = mount(&b, &root, tmp.path()).await;
    let t = put(&v, ROOT_INO, "target", b"version 1").await;
    v.fsync(t, 0).await.unwrap();
    let tmpf = put(&v, ROOT_INO, ".target.XXXX", &[2u8; 10_000]).await;
    v.rename(ROOT_INO, os(".target.XXXX"), ROOT_INO, os("target"), 0)
        .await
        .unwrap();
    let n = put(&v, ROOT_INO, "new", b"a new file").await;
    // Sealed by the background sealer after the release, nothing asked for it.
    wait_sealed(&v, fid_of(&v, tmpf)).await;
    wait_sealed(&v, fid_of(&v, n)).await;
    v.crash().await;
    let v = Vfs::new(Arc::new(b.clone()), &root, rebooted_cfg(tmp.path()))
        .await
        .unwrap();
    v.flush_all().await.unwrap();
    assert_eq!(grid_file(&b, &root, "target"), Some(vec![2u8; 10_000]));
    assert_eq!(grid_file(&b, &root, "new"), Some(b"a new file".to_vec()));
    assert!(recovered_files(tmp.path()).is_empty());
    assert!(v.status().last_errors.is_empty());
}

/// A daemon crash is not a power cut: the page cache kept every byte written, so unsealed files
/// are published by the next mount in the same boot, as before sealing existed.
#[tokio::test]
async fn kill_minus_9_still_publishes_unsealed_files() {
    let (b, root, tmp, v) = unsealed_vfs().await;
    let t = put(&v, ROOT_INO, "target", b"version 1").await;
    v.fsync(t, 0).await.unwrap();
    let tmpf = put(&v, ROOT_INO, ".target.XXXX", &[2u8; 10_000]).await;
    v.rename(ROOT_INO, os(".target.XXXX"), ROOT_INO, os("target"), 0)
        .await
        .unwrap();
    let n = put(&v, ROOT_INO, "new", b"a new file").await;
    for ino in [tmpf, n] {
        let fid = fid_of(&v, ino);
        assert!(!v.lock().journal.is_sealed(fid));
    }
    v.crash().await;
    let v = mount(&b, &root, tmp.path()).await;
    v.flush_all().await.unwrap();
    assert_eq!(grid_file(&b, &root, "target"), Some(vec![2u8; 10_000]));
    assert_eq!(grid_file(&b, &root, "new"), Some(b"a new file".to_vec()));
    assert!(recovered_files(tmp.path()).is_empty());
    assert!(v.status().last_errors.is_empty());
}

/// A sealed file changed again is unsealed first, durably, by every kind of change (a write in
/// place, an open with O_TRUNC, a truncate without a handle), even when the length ends up
/// the same: the next boot after a power cut does not take it for sealed. The FUSE thread's
/// `write_now` leaves a sealed file to the path that can wait for the disk.
#[tokio::test]
async fn write_after_seal_unseals_durably_first() {
    let (b, root, tmp, v) = unsealed_vfs().await;
    let mut inos = Vec::new();
    for name in ["a", "b", "c", "kept"] {
        inos.push(put(&v, ROOT_INO, name, b"version 1").await);
    }
    v.seal_all().await.unwrap();
    for &i in &inos {
        let fid = fid_of(&v, i);
        assert!(v.lock().journal.is_sealed(fid));
    }
    // a: a write in place.
    let fh = v.open(inos[0], libc::O_WRONLY).await.unwrap();
    assert!(v.write_now(inos[0], fh, 0, b"V").is_none());
    assert_eq!(v.write(inos[0], fh, 0, b"V").await.unwrap(), 1);
    // The write returned after the unseal frame (the only frame it wrote) was durable.
    assert!(v.lock().journal.all_durable());
    assert!(v.write_now(inos[0], fh, 1, b"E").is_some());
    v.release(inos[0], fh).await.unwrap();
    // b: O_TRUNC, then the same length again.
    let fh = v
        .open(inos[1], libc::O_WRONLY | libc::O_TRUNC)
        .await
        .unwrap();
    assert!(v.lock().journal.all_durable());
    v.write(inos[1], fh, 0, b"VERSION 2").await.unwrap();
    v.release(inos[1], fh).await.unwrap();
    // c: a truncate without a handle, then extended back.
    let set = SetAttr {
        size: Some(4),
        ..SetAttr::default()
    };
    v.setattr(inos[2], set).await.unwrap();
    let fh = v.open(inos[2], libc::O_WRONLY).await.unwrap();
    v.write(inos[2], fh, 4, b"ION 2").await.unwrap();
    v.release(inos[2], fh).await.unwrap();
    let fids: Vec<u64> = inos.iter().map(|&i| fid_of(&v, i)).collect();
    v.crash().await;
    let v = Vfs::new(Arc::new(b.clone()), &root, rebooted_cfg(tmp.path()))
        .await
        .unwrap();
    v.flush_all().await.unwrap();
    let l = grid_listing(&b, &root);
    assert!(l.get("a").is_none() && l.get("b").is_none() && l.get("c").is_none());
    assert_eq!(grid_file(&b, &root, "kept"), Some(b"version 1".to_vec()));
    assert_eq!(
        recovered_files(tmp.path()),
        vec![
            format!("{}-a", fids[0]),
            format!("{}-b", fids[1]),
            format!("{}-c", fids[2])
        ]
    );
    let got = |n: &str, f: u64| fs::read(tmp.path().join("recovered").join(format!("{f}-{n}")));
    assert_eq!(got("a", fids[0]).unwrap(), b"VErsion 1");
    assert_eq!(got("b", fids[1]).unwrap(), b"VERSION 2");
    assert_eq!(got("c", fids[2]).unwrap(), b"versION 2");
}

/// Opens `ino` for writing (`O_WRONLY | flags`), writes `data` at offset 0 and closes it.
async fn rewrite(v: &Vfs, ino: Ino, flags: i32, data: &[u8]) {
    let fh = v.open(ino, libc::O_WRONLY | flags).await.unwrap();
    v.write(ino, fh, 0, data).await.unwrap();
    v.flush(ino, fh).await.unwrap();
    v.release(ino, fh).await.unwrap();
}

/// A power cut of the machine: the daemon stops, and of each data file of `fids` only the first
/// 3 bytes reached the disk (its record did: the log was fdatasync'd). The next boot then mounts
/// the same cache and flushes everything it replays.
async fn power_cut(v: Vfs, b: &MemBackend, root: &str, dir: &std::path::Path, fids: &[u64]) -> Vfs {
    v.crash().await;
    for f in fids {
        fs::OpenOptions::new()
            .write(true)
            .open(dir.join("data").join(f.to_string()))
            .unwrap()
            .set_len(3)
            .unwrap();
    }
    let v = Vfs::new(Arc::new(b.clone()), root, rebooted_cfg(dir))
        .await
        .unwrap();
    v.flush_all().await.unwrap();
    v
}

/// The attributes of entry `name` of directory `dircap` on the grid.
fn grid_attr(b: &MemBackend, dircap: &str, name: &str) -> Attr {
    let l = grid_listing(b, dircap);
    attr::from_metadata(&l.get(name).expect("entry").metadata, false, (0, 0))
}

/// A file on the grid is changed (not sealed yet), its mode changed, then renamed, and the
/// machine loses power. The rename and the mode change replay like every namespace and
/// attribute change; only the doubtful content goes back to the file's previous version on
/// the grid, with that version's mtime. The old name's removal must not replay without the
/// new name: the file would vanish from the grid, its bytes left only in `recovered/`.
#[tokio::test]
async fn power_cut_after_renaming_a_changed_file_keeps_its_previous_version_at_the_new_name() {
    let (b, root, tmp, v) = unsealed_vfs().await;
    let x = put(&v, ROOT_INO, "x", b"version 1").await;
    v.fsync(x, 0).await.unwrap();
    let m1 = grid_attr(&b, &root, "x").mtime_ns;
    rewrite(&v, x, 0, b"VERSION 2, longer").await;
    let chmod = SetAttr {
        mode: Some(0o600),
        ..SetAttr::default()
    };
    v.setattr(x, chmod).await.unwrap();
    v.rename(ROOT_INO, os("x"), ROOT_INO, os("y"), 0)
        .await
        .unwrap();
    let fid = fid_of(&v, x);
    assert!(!v.lock().journal.is_sealed(fid));
    assert_ne!(v.getattr(x).await.unwrap().mtime_ns, m1);
    let v = power_cut(v, &b, &root, tmp.path(), &[fid]).await;
    assert!(grid_listing(&b, &root).get("x").is_none());
    assert_eq!(grid_file(&b, &root, "y"), Some(b"version 1".to_vec()));
    let a = grid_attr(&b, &root, "y");
    assert_eq!((a.perm, a.mtime_ns), (0o600, m1));
    let y = v.lookup(ROOT_INO, os("y")).await.unwrap();
    assert_eq!((y.size, y.perm, y.mtime_ns), (9, 0o600, m1));
    assert_eq!(cat(&v, y.ino).await, b"version 1");
    // The torn bytes are kept aside, under the name the file had last.
    assert_eq!(recovered_files(tmp.path()), vec![format!("{fid}-y")]);
    let kept = tmp.path().join("recovered").join(format!("{fid}-y"));
    assert_eq!(fs::read(&kept).unwrap(), b"VER");
    let errs = v.status().last_errors;
    assert!(
        errs.iter().any(|e| e.contains("power cut")
            && e.contains("\"y\"")
            && e.contains(&kept.display().to_string())),
        "{errs:?}"
    );
    assert!(errs.iter().all(|e| !e.contains("URI:")), "{errs:?}");
}

/// The same through a chain of renames (within a directory, across directories, then over an
/// existing entry) of a file emptied by `O_TRUNC` and rewritten: the last name holds the file's
/// previous version, the entry it replaced and every earlier name are gone, as the renames
/// said. A changed file renamed and then removed stays removed.
#[tokio::test]
async fn power_cut_after_moving_a_changed_file_over_another_keeps_its_previous_version_there() {
    let (b, root, tmp, v) = unsealed_vfs().await;
    let da = v.mkdir(ROOT_INO, os("a"), 0o755, 0, 0).await.unwrap().ino;
    let db = v.mkdir(ROOT_INO, os("b"), 0o755, 0, 0).await.unwrap().ino;
    let x = put(&v, da, "x", b"x version 1").await;
    let y = put(&v, db, "y", b"y version 1").await;
    let g = put(&v, da, "gone", b"gone version 1").await;
    for i in [x, y, g] {
        v.fsync(i, 0).await.unwrap();
    }
    let cap = |n: &str| child_cap(grid_listing(&b, &root).get(n).unwrap()).unwrap();
    let (a_cap, b_cap) = (cap("a"), cap("b"));
    let m1 = grid_attr(&b, &a_cap, "x").mtime_ns;
    rewrite(&v, x, libc::O_TRUNC, b"x version 2").await;
    v.rename(da, os("x"), da, os("t"), 0).await.unwrap();
    v.rename(da, os("t"), db, os("t2"), 0).await.unwrap();
    v.rename(db, os("t2"), db, os("y"), 0).await.unwrap();
    rewrite(&v, g, 0, b"gone version 2").await;
    v.rename(da, os("gone"), da, os("g2"), 0).await.unwrap();
    v.unlink(da, os("g2")).await.unwrap();
    let fid = fid_of(&v, x);
    let v = power_cut(v, &b, &root, tmp.path(), &[fid]).await;
    let la = grid_listing(&b, &a_cap);
    let lb = grid_listing(&b, &b_cap);
    for n in ["x", "t", "gone", "g2"] {
        assert!(la.get(n).is_none(), "{n}");
    }
    assert!(lb.get("t2").is_none());
    assert_eq!(grid_file(&b, &b_cap, "y"), Some(b"x version 1".to_vec()));
    assert_eq!(grid_attr(&b, &b_cap, "y").mtime_ns, m1);
    assert_eq!(recovered_files(tmp.path()), vec![format!("{fid}-y")]);
    drop(v);
}

/// What fsync acknowledged is never lost: a file changed and fsync'd while open (the grid has
/// that version), changed again, closed and renamed before a power cut shows the fsync'd
/// version at its new name, not the one it was opened from.
#[tokio::test]
async fn power_cut_after_renaming_a_file_changed_since_its_fsync_keeps_the_fsynced_version() {
    let (b, root, tmp, v) = unsealed_vfs().await;
    let x = put(&v, ROOT_INO, "x", b"version 1").await;
    v.fsync(x, 0).await.unwrap();
    let fh = v.open(x, libc::O_WRONLY).await.unwrap();
    v.write(x, fh, 0, b"version 2").await.unwrap();
    v.fsync(x, fh).await.unwrap();
    assert_eq!(grid_file(&b, &root, "x"), Some(b"version 2".to_vec()));
    let m2 = grid_attr(&b, &root, "x").mtime_ns;
    v.write(x, fh, 0, b"VERSION 3").await.unwrap();
    v.flush(x, fh).await.unwrap();
    v.release(x, fh).await.unwrap();
    v.rename(ROOT_INO, os("x"), ROOT_INO, os("y"), 0)
        .await
        .unwrap();
    let fid = fid_of(&v, x);
    let v = power_cut(v, &b, &root, tmp.path(), &[fid]).await;
    assert!(grid_listing(&b, &root).get("x").is_none());
    assert_eq!(grid_file(&b, &root, "y"), Some(b"version 2".to_vec()));
    assert_eq!(grid_attr(&b, &root, "y").mtime_ns, m2);
    assert_eq!(recovered_files(tmp.path()), vec![format!("{fid}-y")]);
    drop(v);
}

/// A seal vouches only for content that was synced: a write landing between the sealer's
/// fdatasync and its seal frame (here an overwrite of the same length, which the length cannot
/// reveal) leaves the file unsealed, so a power cut sets it aside instead of publishing bytes
/// that may never have reached the disk. Before any seal frame the pass has synced the file,
/// then the data directory (a new file's name must survive the power cut too).
#[tokio::test]
async fn write_racing_the_seal_sync_leaves_the_file_unsealed() {
    let (b, root, tmp, v) = unsealed_vfs().await;
    let x = put(&v, ROOT_INO, "x", b"version 1").await;
    let fid = fid_of(&v, x);
    let gate = Arc::new(SealGate::default());
    *v.inner.seal_gate.lock().unwrap() = Some(Arc::clone(&gate));
    let race = async {
        gate.synced.notified().await;
        assert_eq!(*gate.syncs.lock().unwrap(), vec![Some(fid), None]);
        let fh = v.open(x, libc::O_WRONLY).await.unwrap();
        assert_eq!(v.write(x, fh, 0, b"VERSION 1").await.unwrap(), 9);
        v.release(x, fh).await.unwrap();
        gate.resume.notify_one();
    };
    let (sealed, ()) = tokio::join!(v.seal_all(), race);
    sealed.unwrap();
    assert!(!v.lock().journal.is_sealed(fid));
    *v.inner.seal_gate.lock().unwrap() = None;
    let v = power_cut(v, &b, &root, tmp.path(), &[]).await;
    assert!(grid_listing(&b, &root).get("x").is_none());
    assert_eq!(recovered_files(tmp.path()), vec![format!("{fid}-x")]);
    drop(v);
}

/// The mount root has no entry in a parent directory, so its attributes used to live in memory
/// only: chmod, chown and utimens of the root were lost at the next mount (and rsync -a set
/// them again on every run), and its extended attributes failed with EOPNOTSUPP. They are kept
/// in the cache's journal: a restart on the same cache shows them, clean or after kill -9 (with
/// an earlier change superseded across a crash), and a fresh cache starts from the defaults.
#[tokio::test]
async fn root_attributes_and_xattrs_survive_a_restart_on_the_same_cache() {
    for crash in CRASHES {
        let case = format!("{crash:?}");
        let b = MemBackend::new();
        let root = b.new_dir();
        let tmp = tempfile::tempdir().unwrap();
        let v = mount(&b, &root, tmp.path()).await;
        // An earlier change, superseded below.
        v.setattr(
            ROOT_INO,
            SetAttr {
                mode: Some(0o700),
                mtime: Some(TimeSet::At(5)),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        v.setxattr(ROOT_INO, os("user.old"), b"1", 0).await.unwrap();
        let v =
            crash_and_remount_if(crash == CrashAt::BeforeChange, v, &b, &root, tmp.path()).await;
        v.setattr(
            ROOT_INO,
            SetAttr {
                mode: Some(0o2750),
                uid: Some(7),
                gid: Some(8),
                atime: Some(TimeSet::At(1_000_000_000_123_456_789)),
                mtime: Some(TimeSet::At(1_000_000_000_987_654_321)),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        v.setxattr(ROOT_INO, os("user.k"), b"v\x00\xff", 0)
            .await
            .unwrap();
        v.removexattr(ROOT_INO, os("user.old")).await.unwrap();
        assert_eq!(
            v.setxattr(ROOT_INO, os("user.k"), b"x", XATTR_CREATE)
                .await
                .unwrap_err()
                .to_errno(),
            libc::EEXIST,
            "{case}"
        );
        let want = v.getattr(ROOT_INO).await.unwrap();
        assert_eq!(
            (want.perm, want.uid, want.gid, want.mtime_ns),
            (0o2750, 7, 8, 1_000_000_000_987_654_321),
            "{case}"
        );
        let v = if crash == CrashAt::AfterChange {
            crash_and_remount_if(true, v, &b, &root, tmp.path()).await
        } else {
            // A clean unmount: everything flushed and sealed, then the daemon exits.
            v.flush_all().await.unwrap();
            v.seal_all().await.unwrap();
            crash_and_remount_if(true, v, &b, &root, tmp.path()).await
        };
        // Every field as it was, ctime included (exact nanoseconds).
        assert_eq!(v.getattr(ROOT_INO).await.unwrap(), want, "{case}");
        assert_eq!(
            v.listxattr(ROOT_INO).await.unwrap(),
            vec!["user.k".to_string()],
            "{case}"
        );
        assert_eq!(
            v.getxattr(ROOT_INO, os("user.k")).await.unwrap(),
            b"v\x00\xff",
            "{case}"
        );
        // Kept by the next restart too (the first one compacted the log).
        let v = crash_and_remount_if(true, v, &b, &root, tmp.path()).await;
        assert_eq!(v.getattr(ROOT_INO).await.unwrap(), want, "{case}");
        // Nothing of it is on the grid: another cache starts from the defaults.
        let fresh = tempfile::tempdir().unwrap();
        let other = mount(&b, &root, fresh.path()).await;
        let a = other.getattr(ROOT_INO).await.unwrap();
        assert_eq!((a.perm, a.uid, a.gid), (0o755, 1000, 1000), "{case}");
        assert!(a.mtime_ns > 1_000_000_000_987_654_321, "{case}: mount time");
        assert!(
            other.listxattr(ROOT_INO).await.unwrap().is_empty(),
            "{case}"
        );
        drop(v);
    }
}

/// fsyncdir (and fsync) of the root returns once the root's attributes are durable in the
/// journal: they survive a power cut right after it.
#[tokio::test]
async fn root_attributes_fsynced_survive_a_power_cut() {
    let (b, root, tmp, v) = unsealed_vfs().await;
    v.setattr(
        ROOT_INO,
        SetAttr {
            mode: Some(0o750),
            mtime: Some(TimeSet::At(1_000_000_000_000_000_000)),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    v.setxattr(ROOT_INO, os("user.k"), b"v", 0).await.unwrap();
    v.fsyncdir(ROOT_INO).await.unwrap();
    assert!(v.lock().journal.all_durable());
    let want = v.getattr(ROOT_INO).await.unwrap();
    let v = power_cut(v, &b, &root, tmp.path(), &[]).await;
    assert_eq!(v.getattr(ROOT_INO).await.unwrap(), want);
    assert_eq!(v.getxattr(ROOT_INO, os("user.k")).await.unwrap(), b"v");
}
