//! Check, verify and repair of CHK files over in-process loopback grids
//! (`lafs::client::testgrid`). Expected counts come from the grid's own storage (what the memory
//! backends hold) and from the faults the tests inject, never from the checker's output.
//!
//! Every test runs under a timeout so a hang fails instead of blocking CI.

use lafs::cap::Cap;
use lafs::cap::{MutableFormat, NodeCap};
use lafs::client::check::{
    check, check_and_repair, check_and_repair_mutable, deep_check, CheckOptions,
};
use lafs::client::directory::DirectoryClient;
use lafs::client::immutable::{download_bytes, upload_bytes, DownloadOptions, UploadOptions};
use lafs::client::mutable::{MutableClient, MutableParams};
use lafs::client::secrets::ClientSecrets;
use lafs::client::testgrid::TestGrid;
use lafs::immutable::EncodingParams;
use lafs::mutable::keys::{KeyPool, WriterKeys};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

const CONVERGENCE: &[u8] = b"test convergence secret, 32 byte";

fn data(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).rotate_left(7) as u8 ^ seed)
        .collect()
}

/// 3-of-10, happy 7, small segments so files have several.
fn params() -> EncodingParams {
    EncodingParams {
        needed: 3,
        happy: 7,
        total: 10,
        max_segment_size: 64 * 1024,
    }
}

async fn bounded<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(300), f)
        .await
        .expect("test timed out")
}

/// Indices of the servers that hold at least one share of `si`.
fn holders(grid: &TestGrid, si: &[u8; 16]) -> Vec<usize> {
    grid.shares_of(si)
        .iter()
        .enumerate()
        .filter(|(_, s)| !s.is_empty())
        .map(|(i, _)| i)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthy_file_then_missing_shares_repaired() {
    bounded(async {
        let grid = TestGrid::start(10).await.unwrap();
        let set = grid.server_set();
        let secrets = ClientSecrets::random();
        let plain = data(200_000, 1);
        let r = upload_bytes(
            &set,
            &secrets,
            plain.clone(),
            &UploadOptions::convergent(params(), CONVERGENCE),
        )
        .await
        .unwrap();
        let si = r.storage_index.unwrap();

        let c = check(&set, &r.cap, false).await.unwrap();
        let on_grid: usize = grid.shares_of(&si).iter().map(BTreeSet::len).sum();
        assert_eq!(c.good_shares, on_grid);
        assert_eq!(c.distinct_shares, 10);
        assert_eq!(c.good_hosts, holders(&grid, &si).len());
        assert!(c.healthy && c.recoverable, "{c:?}");
        assert_eq!(c.summary(), "Healthy");
        let v = check(&set, &r.cap, true).await.unwrap();
        assert!(v.healthy && v.corrupt.is_empty(), "{v:?}");

        // Two servers holding shares go away: their shares are missing.
        let gone: Vec<usize> = holders(&grid, &si).into_iter().take(2).collect();
        let lost: BTreeSet<u8> = gone
            .iter()
            .flat_map(|&i| grid.shares_of(&si)[i].clone())
            .collect();
        let kept: BTreeSet<u8> = (0..grid.servers.len())
            .filter(|i| !gone.contains(i))
            .flat_map(|i| grid.shares_of(&si)[i].clone())
            .collect();
        for &i in &gone {
            grid.servers[i].faults().set_offline(true);
        }
        let c = check(&set, &r.cap, false).await.unwrap();
        assert_eq!(c.distinct_shares, kept.len());
        assert!(kept.len() < 10 && !lost.is_empty());
        assert!(!c.healthy && c.recoverable, "{c:?}");
        assert_eq!(c.servers_failed.len(), 2);
        assert!(c.summary().starts_with("Not Healthy"));

        // Check alone changes nothing.
        let o = check_and_repair(&set, &secrets, &r.cap, &CheckOptions::default())
            .await
            .unwrap();
        assert!(!o.repair_attempted && o.post.is_none());

        let o = check_and_repair(
            &set,
            &secrets,
            &r.cap,
            &CheckOptions {
                repair: true,
                ..CheckOptions::default()
            },
        )
        .await
        .unwrap();
        assert!(o.repair_attempted && o.repair_successful, "{o:?}");
        assert_eq!(o.shares_pushed, 10 - kept.len());
        // The live servers now hold all ten share numbers.
        let now: BTreeSet<u8> = (0..grid.servers.len())
            .filter(|i| !gone.contains(i))
            .flat_map(|i| grid.shares_of(&si)[i].clone())
            .collect();
        assert_eq!(now.len(), 10);
        let c = check(&set, &r.cap, true).await.unwrap();
        assert!(c.healthy, "{c:?}");
        let (got, _) = download_bytes(&set, &r.cap, &DownloadOptions::default())
            .await
            .unwrap();
        assert!(got == plain);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_share_found_only_by_verify() {
    bounded(async {
        let grid = TestGrid::start(10).await.unwrap();
        let set = grid.server_set();
        let secrets = ClientSecrets::random();
        let r = upload_bytes(
            &set,
            &secrets,
            data(300_000, 2),
            &UploadOptions::convergent(params(), CONVERGENCE),
        )
        .await
        .unwrap();
        let si = r.storage_index.unwrap();
        let bad = holders(&grid, &si)[0];
        let bad_shares = grid.shares_of(&si)[bad].clone();
        // Invert bytes in the middle of the data region (blocks of a later segment): only a
        // full read sees them.
        grid.servers[bad]
            .faults()
            .corrupt_reads(0x24 + 60_000, 0x24 + 60_010);

        let c = check(&set, &r.cap, false).await.unwrap();
        assert!(c.healthy && c.corrupt.is_empty(), "{c:?}");

        let v = check(&set, &r.cap, true).await.unwrap();
        let bad_id = grid.servers[bad].handle.desc.server_id.clone();
        let found: BTreeSet<u8> = v
            .corrupt
            .iter()
            .map(|c| {
                assert_eq!(c.server_id, bad_id);
                c.shnum as u8
            })
            .collect();
        assert_eq!(found, bad_shares);
        assert_eq!(v.distinct_shares, 10 - bad_shares.len());
        assert!(!v.healthy && v.recoverable, "{v:?}");
        // Advisories reached the server that holds the bad shares, and only it.
        let adv: BTreeSet<u8> = grid.servers[bad]
            .memory()
            .advisories()
            .into_iter()
            .map(|(_, _, sh, _)| sh)
            .collect();
        assert_eq!(adv, bad_shares);
        for (i, s) in grid.servers.iter().enumerate() {
            if i != bad {
                assert!(s.memory().advisories().is_empty());
            }
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unrecoverable_file_is_reported_and_not_repaired() {
    bounded(async {
        let grid = TestGrid::start(10).await.unwrap();
        let set = grid.server_set();
        let secrets = ClientSecrets::random();
        let r = upload_bytes(
            &set,
            &secrets,
            data(100_000, 3),
            &UploadOptions::convergent(params(), CONVERGENCE),
        )
        .await
        .unwrap();
        let si = r.storage_index.unwrap();
        // Keep servers online until only two share numbers remain visible (k = 3).
        let mut visible: BTreeSet<u8> = BTreeSet::new();
        let mut keep = Vec::new();
        for i in holders(&grid, &si) {
            let s = &grid.shares_of(&si)[i];
            if visible.len() + s.len() <= 2 && s.iter().all(|x| !visible.contains(x)) {
                visible.extend(s.iter().copied());
                keep.push(i);
            }
        }
        for i in 0..grid.servers.len() {
            if !keep.contains(&i) {
                grid.servers[i].faults().set_offline(true);
            }
        }
        let o = check_and_repair(
            &set,
            &secrets,
            &r.cap,
            &CheckOptions {
                repair: true,
                ..CheckOptions::default()
            },
        )
        .await
        .unwrap();
        assert_eq!(o.pre.distinct_shares, visible.len());
        assert!(!o.pre.recoverable && !o.pre.healthy);
        assert!(o.pre.summary().ends_with("Unrecoverable"));
        assert!(!o.repair_attempted);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutable_file_missing_shares_repaired() {
    bounded(async {
        let grid = TestGrid::start(10).await.unwrap();
        let mc = MutableClient::new(
            grid.server_set(),
            [7; 32],
            MutableParams { k: 3, n: 10 },
            Arc::new(KeyPool::new(0)),
        );
        let contents = data(10_000, 4);
        let (wcap, _) = mc.create(MutableFormat::Sdmf, &contents).await.unwrap();
        let si = WriterKeys::from_cap(&wcap).reader.storage_index;
        let cap = NodeCap::MutableWrite(wcap.clone());
        let list = |i: usize| {
            let c = grid.servers[i].handle.client.clone();
            async move { c.list_mutable_shares(&si).await.unwrap_or_default() }
        };
        let mut held = Vec::new();
        for i in 0..10 {
            held.push(list(i).await);
        }
        let all: BTreeSet<u8> = held.iter().flatten().copied().collect();
        assert_eq!(all.len(), 10);
        let opts = CheckOptions::default();
        let c = check_and_repair_mutable(&mc, &cap, &opts).await.unwrap();
        assert!(c.pre.healthy && c.pre.versions == 1, "{:?}", c.pre);
        assert_eq!(c.pre.distinct_shares, 10);

        let gone: Vec<usize> = (0..10).filter(|&i| !held[i].is_empty()).take(2).collect();
        let lost: usize = gone.iter().map(|&i| held[i].len()).sum();
        for &i in &gone {
            grid.servers[i].faults().set_offline(true);
        }
        let repair = CheckOptions {
            repair: true,
            verify: true,
            ..CheckOptions::default()
        };
        let o = check_and_repair_mutable(&mc, &cap, &repair).await.unwrap();
        assert_eq!(o.pre.distinct_shares, 10 - lost);
        assert!(!o.pre.healthy && o.pre.recoverable, "{:?}", o.pre);
        assert!(o.repair_attempted && o.repair_successful, "{o:?}");
        let mut now = BTreeSet::new();
        for i in (0..10).filter(|i| !gone.contains(i)) {
            now.extend(list(i).await);
        }
        assert_eq!(now.len(), 10);
        let r = mc.read_writeable(&wcap, None).await.unwrap();
        assert!(r.data == contents);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deep_check_over_a_small_tree() {
    bounded(async {
        let grid = TestGrid::start(10).await.unwrap();
        let set = grid.server_set();
        let secrets = ClientSecrets::random();
        let mc = MutableClient::new(
            set.clone(),
            [7; 32],
            MutableParams { k: 3, n: 10 },
            Arc::new(KeyPool::new(0)),
        );
        let dirs = DirectoryClient::new(mc);
        let root = dirs.create(MutableFormat::Sdmf).await.unwrap();
        let sub = dirs
            .create_subdirectory(&root, "sub", MutableFormat::Sdmf)
            .await
            .unwrap();
        let up = UploadOptions::convergent(params(), CONVERGENCE);
        let big = upload_bytes(&set, &secrets, data(100_000, 5), &up)
            .await
            .unwrap();
        let small = upload_bytes(&set, &secrets, b"tiny".to_vec(), &up)
            .await
            .unwrap();
        sub.link("big", &Cap::File(big.cap.clone()), false)
            .await
            .unwrap();
        root.link("small", &Cap::File(small.cap.clone()), false)
            .await
            .unwrap();
        // A cycle back to the root must not loop.
        sub.link("up", root.cap(), false).await.unwrap();

        let d = deep_check(&dirs, &secrets, root.cap(), &CheckOptions::default()).await;
        let paths: Vec<&str> = d.entries.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["", "small", "sub", "sub/big"]);
        assert_eq!(d.objects_checked(), 4);
        assert_eq!(d.healthy_pre(), 4, "{d:?}");
        assert!(d.list_errors.is_empty());

        // The CHK file loses the shares of two servers; deep-check --repair restores them.
        let si = big.storage_index.unwrap();
        let gone: Vec<usize> = holders(&grid, &si).into_iter().take(2).collect();
        for &i in &gone {
            grid.servers[i].faults().set_offline(true);
        }
        let opts = CheckOptions {
            repair: true,
            ..CheckOptions::default()
        };
        let d = deep_check(&dirs, &secrets, root.cap(), &opts).await;
        assert_eq!(d.objects_checked(), 4);
        // The two directories also lost the shares on those servers (one share per server).
        assert!(d.healthy_pre() <= 2, "{d:?}");
        assert_eq!(d.repairs_attempted(), 4 - d.healthy_pre());
        assert_eq!(d.repairs_successful(), d.repairs_attempted());
        assert_eq!(d.healthy_post(), 4);
        let c = check(&set, &big.cap, true).await.unwrap();
        assert!(c.healthy, "{c:?}");
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repair_that_cannot_meet_happiness_reports_failure() {
    bounded(async {
        let grid = TestGrid::start(10).await.unwrap();
        let set = grid.server_set();
        let secrets = ClientSecrets::random();
        let r = upload_bytes(
            &set,
            &secrets,
            data(100_000, 6),
            &UploadOptions::convergent(params(), CONVERGENCE),
        )
        .await
        .unwrap();
        let si = r.storage_index.unwrap();
        // Five of the servers go away: five live servers cannot reach happiness 7.
        let gone: Vec<usize> = holders(&grid, &si).into_iter().take(5).collect();
        for &i in &gone {
            grid.servers[i].faults().set_offline(true);
        }
        let o = check_and_repair(
            &set,
            &secrets,
            &r.cap,
            &CheckOptions {
                repair: true,
                happy: 7,
                ..CheckOptions::default()
            },
        )
        .await
        .unwrap();
        assert!(o.pre.recoverable && !o.pre.healthy, "{:?}", o.pre);
        assert!(o.repair_attempted && !o.repair_successful, "{o:?}");
        assert!(o.repair_error.is_some());
        assert!(o.post.is_some());
    })
    .await
}
