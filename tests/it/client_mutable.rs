//! Mutable files and directories over in-process loopback grids of lafs storage servers
//! (`MemoryBackend` behind the HTTPS storage protocol on 127.0.0.1).
//!
//! Expected contents are the inputs the tests write; the independent checks are the servers'
//! own state (share placement, seqnums, corruption advisories) and the typed errors.

use lafs::cap::{Cap, LitCap, MutableFormat, NodeCap};
use lafs::client::directory::{child_cap, DirectoryClient, DirectoryError};
use lafs::client::mutable::{MutableClient, MutableParams, NetMutableServer};
use lafs::client::{ServerHandle, ServerSet};
use lafs::dirnode::{Change, Child, DirKind, Directory, DirnodeError, Metadata};
use lafs::grid::server::StorageServerDesc;
use lafs::grid::Nurl;
use lafs::mutable::keys::{KeyPool, WriterKeys};
use lafs::mutable::publish::write_secrets;
use lafs::mutable::storage::{MutableServer, TestWriteVectors};
use lafs::mutable::MutableError;
use lafs::protocol::client::{ClientOptions, StorageClient};
use lafs::protocol::memory::MemoryBackend;
use lafs::protocol::server::{serve, RunningServer, ServerLimits, StorageServer};
use lafs::protocol::tls::NodeIdentity;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

const LEASE_SECRET: [u8; 32] = [7; 32];

/// One TLS identity for every test server (generating RSA node keys is slow); each server still
/// has its own port, swissnum, TubID (write-enabler/lease seed) and server id.
fn identity() -> &'static NodeIdentity {
    static ID: OnceLock<NodeIdentity> = OnceLock::new();
    ID.get_or_init(|| NodeIdentity::generate().expect("identity"))
}

fn key_pool() -> Arc<KeyPool> {
    static POOL: OnceLock<Arc<KeyPool>> = OnceLock::new();
    Arc::clone(POOL.get_or_init(|| Arc::new(KeyPool::new(4))))
}

struct Grid {
    backends: Vec<Arc<MemoryBackend>>,
    running: Vec<Option<RunningServer>>,
    nurls: Vec<String>,
    descs: Vec<StorageServerDesc>,
}

impl Grid {
    async fn start(n: usize) -> Grid {
        let id = identity();
        let mut g = Grid {
            backends: Vec::new(),
            running: Vec::new(),
            nurls: Vec::new(),
            descs: Vec::new(),
        };
        for i in 0..n {
            let backend = Arc::new(MemoryBackend::new(1 << 30));
            let swissnum = format!("swissnum{i:024}");
            let server = Arc::new(StorageServer::new(
                backend.clone(),
                &swissnum,
                ServerLimits::default(),
            ));
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let running = serve(listener, id.server_config().unwrap(), server).unwrap();
            let nurl = format!(
                "pb://{}@127.0.0.1:{}/{swissnum}#v=1",
                id.pin().unwrap(),
                running.local_addr.port()
            );
            let server_id =
                format!("v0-{}", "a".repeat(51)) + &((b'a' + i as u8) as char).to_string();
            g.descs.push(StorageServerDesc {
                server_id: server_id.clone(),
                nickname: format!("s{i}"),
                furl: None,
                nurls: vec![Nurl::parse(&nurl).unwrap()],
                permutation_seed: server_id.into_bytes(),
                lease_seed: [i as u8 + 1; 20],
            });
            g.backends.push(backend);
            g.running.push(Some(running));
            g.nurls.push(nurl);
        }
        g
    }

    /// A fresh view of the grid (new connection pools), as a new client process would see it.
    fn set(&self) -> ServerSet {
        let options = ClientOptions {
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(20),
            retries: 1,
            max_idle: 4,
        };
        ServerSet {
            servers: self
                .descs
                .iter()
                .zip(&self.nurls)
                .map(|(desc, nurl)| {
                    Arc::new(ServerHandle {
                        desc: desc.clone(),
                        client: StorageClient::new(nurl, options.clone()).unwrap(),
                    })
                })
                .collect(),
        }
    }

    fn client(&self, k: u8, n: u8) -> MutableClient {
        MutableClient::new(self.set(), LEASE_SECRET, MutableParams { k, n }, key_pool())
    }

    /// Stops server `i`: it refuses new connections (fresh views cannot reach it).
    fn stop(&mut self, i: usize) {
        if let Some(r) = self.running[i].take() {
            r.shutdown();
        }
    }

    /// Which share numbers each server holds for `si`, read through a fresh view.
    async fn placement(&self, si: &[u8; 16]) -> Vec<BTreeSet<u8>> {
        let set = self.set();
        let mut out = Vec::new();
        for s in &set.servers {
            out.push(s.client.list_mutable_shares(si).await.unwrap_or_default());
        }
        out
    }
}

fn data(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2654435761).to_le_bytes()[1] ^ seed)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_read_overwrite_modify_sdmf_and_mdmf() {
    let grid = Grid::start(5).await;
    let files = grid.client(3, 5);
    for format in [MutableFormat::Sdmf, MutableFormat::Mdmf] {
        let first = data(20_000, 1);
        let (cap, out) = files.create(format, &first).await.unwrap();
        assert_eq!(cap.format, format);
        assert_eq!(out.seqnum, 1);
        // One share per server: 5 shares on 5 servers.
        let si = WriterKeys::from_cap(&cap).reader.storage_index;
        let placed = grid.placement(&si).await;
        assert!(
            placed.iter().all(|s| s.len() == 1),
            "{format:?}: {placed:?}"
        );
        let all: BTreeSet<u8> = placed.iter().flatten().copied().collect();
        assert_eq!(all, (0..5).collect());

        // A reader with the read cap, through another client (fresh connections).
        let rcap = match NodeCap::MutableWrite(cap.clone()).readonly() {
            Some(NodeCap::MutableRead(r)) => r,
            _ => panic!("readonly of a write cap"),
        };
        let other = grid.client(3, 5);
        let got = other.read(&rcap, None).await.unwrap();
        assert_eq!(got.data, first);
        assert_eq!(got.version.seqnum, 1);
        let part = other.read(&rcap, Some((1000, 50))).await.unwrap();
        assert_eq!(part.data, first[1000..1050]);

        let second = data(70_000, 2);
        assert_eq!(files.overwrite(&cap, &second).await.unwrap().seqnum, 2);
        assert_eq!(other.read(&rcap, None).await.unwrap().data, second);

        let mut third = second.clone();
        third[65_000..65_010].copy_from_slice(b"0123456789");
        files.update(&cap, 65_000, b"0123456789").await.unwrap();
        let got = other.read(&rcap, None).await.unwrap();
        assert_eq!(got.version.seqnum, 3);
        assert_eq!(got.data, third);

        let out = files
            .modify(&cap, |old| {
                let mut v = old.to_vec();
                v.extend_from_slice(b"tail");
                Some(v)
            })
            .await
            .unwrap()
            .expect("published");
        assert_eq!(out.seqnum, 4);
        third.extend_from_slice(b"tail");
        assert_eq!(other.read(&rcap, None).await.unwrap().data, third);
        // A modification that changes nothing publishes nothing.
        assert!(files.modify(&cap, |_| None).await.unwrap().is_none());
        assert_eq!(other.read(&rcap, None).await.unwrap().version.seqnum, 4);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_down_during_read_and_publish() {
    let mut grid = Grid::start(6).await;
    let files = grid.client(3, 5);
    let first = data(30_000, 3);
    let (cap, _) = files.create(MutableFormat::Mdmf, &first).await.unwrap();
    let si = WriterKeys::from_cap(&cap).reader.storage_index;
    let before = grid.placement(&si).await;
    // The permuted order puts shares on the first 5 permuted servers; stop two holders.
    let holders: Vec<usize> = (0..6).filter(|&i| !before[i].is_empty()).collect();
    assert_eq!(holders.len(), 5);
    grid.stop(holders[0]);
    grid.stop(holders[1]);
    let degraded = grid.client(3, 5);
    let got = degraded.read_writeable(&cap, None).await.unwrap();
    assert_eq!(got.data, first);
    assert!(
        got.problems.iter().any(|p| p.server != usize::MAX),
        "the unreachable servers are reported"
    );

    // Publish with two servers down: the two missing shares go to the remaining servers.
    let second = data(40_000, 4);
    let out = degraded.overwrite(&cap, &second).await.unwrap();
    assert_eq!(out.seqnum, 2);
    let distinct: BTreeSet<u32> = out.written.iter().map(|w| w.1).collect();
    assert_eq!(distinct, (0..5).collect(), "every share placed somewhere");
    assert_eq!(
        degraded.read_writeable(&cap, None).await.unwrap().data,
        second
    );
    // A third server down still leaves k=3 distinct shares of version 2 reachable.
    let live: Vec<usize> = (0..6).filter(|i| !holders[..2].contains(i)).collect();
    grid.stop(live[0]);
    let got = grid.client(3, 5).read_writeable(&cap, None).await.unwrap();
    assert_eq!(got.data, second);
    assert_eq!(got.version.seqnum, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uncoordinated_writer_is_detected() {
    let grid = Grid::start(4).await;
    let alice = grid.client(2, 4);
    let bob = grid.client(2, 4);
    let (cap, _) = alice.create(MutableFormat::Sdmf, b"v1").await.unwrap();
    // Alice reads (and keeps the map), Bob writes, then Alice publishes against her stale map.
    let (seen, mut map) = alice.read_for_write(&cap).await.unwrap();
    assert_eq!(seen.data, b"v1");
    bob.overwrite(&cap, b"bob's version").await.unwrap();
    let err = alice
        .publish_against(&cap, &mut map, b"alice's version")
        .await
        .unwrap_err();
    match err {
        MutableError::UncoordinatedWrite { refused, .. } => assert!(!refused.is_empty()),
        other => panic!("expected UncoordinatedWrite, got {other:?}"),
    }
    // Bob's update was not lost.
    let got = bob.read_writeable(&cap, None).await.unwrap();
    assert_eq!(got.data, b"bob's version");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_share_is_skipped_and_advised() {
    let grid = Grid::start(4).await;
    let files = grid.client(2, 4);
    let contents = data(5000, 9);
    let (cap, _) = files.create(MutableFormat::Sdmf, &contents).await.unwrap();
    let writer = WriterKeys::from_cap(&cap);
    let si = writer.reader.storage_index;
    // Corrupt the seqnum byte of one share (through the protocol, with its write enabler), so
    // its signature no longer verifies.
    let set = grid.set();
    let victim = Arc::clone(&set.servers[0]);
    let shnum = *grid.placement(&si).await[0].iter().next().expect("a share");
    let net = NetMutableServer { handle: victim };
    let secrets = write_secrets(&writer, &net, &LEASE_SECRET);
    let mut tw = BTreeMap::new();
    tw.insert(
        u32::from(shnum),
        TestWriteVectors {
            test: vec![],
            write: vec![(8, vec![0x55])],
            new_length: None,
        },
    );
    assert!(
        net.read_test_write(&si, &secrets, &tw, &[])
            .await
            .unwrap()
            .success
    );
    let got = files.read_writeable(&cap, None).await.unwrap();
    assert_eq!(got.data, contents);
    assert!(!got.problems.is_empty());
    let adv = grid.backends[0].advisories();
    assert_eq!(adv.len(), 1, "one advisory for the bad share");
    assert_eq!(adv[0].1, si);
    assert_eq!(adv[0].2, shnum);
}

fn file_cap_bytes(cap: &Cap) -> (Vec<u8>, Vec<u8>) {
    (
        cap.to_string().into_bytes(),
        cap.readonly().unwrap().to_string().into_bytes(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn directory_batch_of_200_is_one_publish_and_readonly_hides_write_caps() {
    let grid = Grid::start(5).await;
    let dirs = DirectoryClient::new(grid.client(3, 5));
    let dir = dirs.create(MutableFormat::Sdmf).await.unwrap();
    assert!(matches!(dir.cap(), Cap::Dir(NodeCap::MutableWrite(_))));
    assert!(dir.list().await.unwrap().is_empty());
    // Children with write caps: one real mutable file linked 200 times under different names.
    let (fcap, _) = dirs
        .files()
        .create(MutableFormat::Sdmf, b"child")
        .await
        .unwrap();
    let fcap = Cap::File(NodeCap::MutableWrite(fcap));
    let (rw, ro) = file_cap_bytes(&fcap);
    let changes: Vec<Change> = (0..200)
        .map(|i| Change::Set {
            name: format!("entry-{i:03}"),
            rw_uri: Some(rw.clone()),
            ro_uri: Some(ro.clone()),
            metadata: None,
            overwrite: false,
        })
        .collect();
    let report = dir.apply(changes).await.unwrap();
    assert!(report.published);
    assert_eq!(report.attempts, 1);
    assert!(report.conflicts.is_empty());
    assert_eq!(dir.publish_count(), 1);
    // Independently: the backing file went from seqnum 1 (create) to 2 (one publish).
    let Cap::Dir(NodeCap::MutableWrite(dcap)) = dir.cap().clone() else {
        unreachable!()
    };
    let file = dirs.files().read_writeable(&dcap, None).await.unwrap();
    assert_eq!(file.version.seqnum, 2);

    let listed = dir.list().await.unwrap();
    assert_eq!(listed.len(), 200);
    let c = listed.get("entry-123").unwrap();
    assert_eq!(c.rw_uri(), Some(rw.as_slice()));
    assert_eq!(child_cap(c).unwrap(), fcap);

    // The read-only view, opened from the RO cap by another client.
    let ro_cap = dir.readonly_cap().unwrap();
    assert!(matches!(ro_cap, Cap::Dir(NodeCap::MutableRead(_))));
    let ro_dirs = DirectoryClient::new(grid.client(3, 5));
    let ro_dir = ro_dirs.open(&ro_cap).unwrap();
    assert!(!ro_dir.is_writeable());
    let ro_list = ro_dir.list().await.unwrap();
    assert_eq!(ro_list.len(), 200);
    for (_, child) in ro_list.iter() {
        assert!(child.rw_uri().is_none(), "read-only view shows a write cap");
        assert_eq!(child.ro_uri(), Some(ro.as_slice()));
    }
    // The body a read-cap holder can fetch does not contain the child write cap in clear.
    let Cap::Dir(NodeCap::MutableRead(rcap)) = &ro_cap else {
        unreachable!()
    };
    let body = ro_dirs.files().read(rcap, None).await.unwrap().data;
    assert!(!body.windows(rw.len()).any(|w| w == rw.as_slice()));
    let err = ro_dir
        .set_child("x", None, Some(ro.clone()), None, false)
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        DirectoryError::Dirnode(DirnodeError::NotWriteable)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nested_directories_path_lookup_rename_remove_mdmf() {
    let grid = Grid::start(4).await;
    let dirs = DirectoryClient::new(grid.client(2, 4));
    let root = dirs.create(MutableFormat::Mdmf).await.unwrap();
    assert!(root.cap().to_string().starts_with("URI:DIR2-MDMF:"));
    let a = dirs
        .create_subdirectory(&root, "a", MutableFormat::Sdmf)
        .await
        .unwrap();
    let b = dirs
        .create_subdirectory(&a, "b", MutableFormat::Mdmf)
        .await
        .unwrap();
    let (fcap, _) = dirs
        .files()
        .create(MutableFormat::Sdmf, b"leaf")
        .await
        .unwrap();
    let fcap = Cap::File(NodeCap::MutableWrite(fcap));
    b.link("c", &fcap, false).await.unwrap();

    // A fresh client resolves the path from the root cap alone.
    let other = DirectoryClient::new(grid.client(2, 4));
    let root_cap = root.cap().clone();
    assert_eq!(other.resolve(&root_cap, "a/b/c").await.unwrap(), fcap);
    assert_eq!(other.resolve(&root_cap, "a/b").await.unwrap(), *b.cap());
    assert_eq!(other.resolve(&root_cap, "").await.unwrap(), root_cap);
    assert!(matches!(
        other.resolve(&root_cap, "a/nope/c").await,
        Err(DirectoryError::NoSuchChild(n)) if n == "nope"
    ));
    assert!(matches!(
        other.resolve(&root_cap, "a/b/c/d").await,
        Err(DirectoryError::ChildNotADirectory(p)) if p == "a/b/c"
    ));
    // Through the read-only root, the path leads to read-only caps only.
    let ro_root = root_cap.readonly().unwrap();
    let ro_c = other.resolve(&ro_root, "a/b/c").await.unwrap();
    assert_eq!(Some(ro_c), fcap.readonly());

    // Linking an existing name without overwrite fails; rename and remove work.
    let err = b.link("c", &fcap, false).await.unwrap_err();
    assert!(matches!(
        err,
        DirectoryError::Dirnode(DirnodeError::ExistingChild(_))
    ));
    let bb = other.open_path(&root_cap, "a/b").await.unwrap();
    bb.rename("c", "c2", false).await.unwrap();
    assert_eq!(other.resolve(&root_cap, "a/b/c2").await.unwrap(), fcap);
    assert!(b.lookup("c").await.unwrap().is_none());
    let removed = b.remove("c2").await.unwrap();
    assert_eq!(child_cap(&removed).unwrap(), fcap);
    assert!(b.list().await.unwrap().is_empty());
    // Two handles on one directory writing different names: both changes survive.
    let a2 = other.open_path(&root_cap, "a").await.unwrap();
    let (x, y) = tokio::join!(
        a.set_child("x", None, Some(b"URI:LIT:nbswy3dp".to_vec()), None, false),
        a2.set_child("y", None, Some(b"URI:LIT:nbswy3dp".to_vec()), None, false)
    );
    x.unwrap();
    y.unwrap();
    let names: Vec<String> = a
        .list()
        .await
        .unwrap()
        .iter()
        .map(|(n, _)| n.to_string())
        .collect();
    assert_eq!(names.len(), 3, "{names:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn literal_directory_is_readable_and_chk_without_shares_fails_to_list() {
    let grid = Grid::start(2).await;
    let dirs = DirectoryClient::new(grid.client(1, 2));
    let lit_file = Cap::File(NodeCap::Lit(LitCap {
        data: b"hello".to_vec(),
    }));
    let mut d = Directory::new(DirKind::Immutable);
    d.insert(
        "greeting",
        Child::new(
            None,
            Some(lit_file.to_string().into_bytes()),
            Metadata::new(),
        ),
    );
    let body = d.pack().unwrap();
    let cap = Cap::Dir(NodeCap::Lit(LitCap { data: body }));
    assert!(cap.to_string().starts_with("URI:DIR2-LIT:"));
    let opened = dirs.open(&cap).unwrap();
    assert!(!opened.is_writeable());
    let listed = opened.list().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(
        child_cap(listed.get("greeting").unwrap()).unwrap(),
        lit_file
    );
    assert_eq!(dirs.resolve(&cap, "greeting").await.unwrap(), lit_file);
    assert!(opened.remove("greeting").await.is_err());
    let chk = Cap::parse(
        "URI:DIR2-CHK:aaaaaaaaaaaaaaaaaaaaaaaaaa:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa:1:1:10",
    );
    // A DIR2-CHK opens read-only; its body is fetched on the first listing, which fails
    // (with no panic) when no server holds its shares.
    assert!(chk.is_directory());
    let opened = dirs.open(&chk).unwrap();
    assert!(!opened.is_writeable());
    assert!(opened.list().await.is_err());
    assert!(opened.remove("x").await.is_err());
}
