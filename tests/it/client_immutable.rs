//! CHK upload and download over in-process loopback grids of lafs storage servers
//! (`lafs::client::testgrid`). Expected caps come from the in-memory encoder (checked against
//! Tahoe's vectors elsewhere), expected bytes from the test's own plaintext.
//!
//! Every test runs under a timeout so a hang fails instead of blocking CI.

use lafs::cap::NodeCap;
use lafs::client::immutable::{
    download_bytes, download_range, upload_bytes, DownloadError, DownloadOptions, UploadError,
    UploadOptions,
};
use lafs::client::secrets::ClientSecrets;
use lafs::client::testgrid::TestGrid;
use lafs::immutable::{encode_bytes, EncodingParams, KeySource};
use std::collections::BTreeSet;
use std::time::Duration;

const CONVERGENCE: &[u8] = b"test convergence secret, 32 byte";

fn data(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).rotate_left(7) as u8 ^ seed)
        .collect()
}

fn params(k: usize, happy: usize, n: usize) -> EncodingParams {
    EncodingParams {
        needed: k,
        happy,
        total: n,
        max_segment_size: 1 << 20,
    }
}

async fn bounded<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(300), f)
        .await
        .expect("test timed out")
}

/// The cap the in-memory encoder gives for the same inputs.
fn expected_cap(plain: &[u8], p: &EncodingParams) -> String {
    encode_bytes(plain, p, &KeySource::Convergent(CONVERGENCE.to_vec()))
        .unwrap()
        .cap
        .to_string()
}

async fn roundtrip_on(servers: usize, p: EncodingParams) {
    let grid = TestGrid::start(servers).await.unwrap();
    let set = grid.server_set();
    let secrets = ClientSecrets::random();
    let opts = UploadOptions::convergent(p.clone(), CONVERGENCE);
    for (i, size) in [0usize, 55, 56, (1 << 20) + 1, 5 << 20]
        .into_iter()
        .enumerate()
    {
        let plain = data(size, i as u8);
        let writes_before = grid.total_writes();
        let r = upload_bytes(&set, &secrets, plain.clone(), &opts)
            .await
            .unwrap_or_else(|e| panic!("upload of {size} bytes: {e}"));
        assert_eq!(r.cap.to_string(), expected_cap(&plain, &p), "size {size}");
        if size <= 55 {
            assert!(matches!(r.cap, NodeCap::Lit(_)));
            assert_eq!(grid.total_writes(), writes_before, "LIT writes nothing");
        } else {
            let si = r.storage_index.unwrap();
            let held: Vec<BTreeSet<u8>> = grid.shares_of(&si);
            let all: BTreeSet<u8> = held.iter().flatten().copied().collect();
            assert_eq!(all.len(), p.total, "every share placed");
            let servers_with = held.iter().filter(|h| !h.is_empty()).count();
            assert!(
                servers_with >= p.happy,
                "{servers_with} servers hold shares"
            );
            assert!(r.happiness >= p.happy);
            assert_eq!(r.pushed_shares, p.total);
        }
        let (got, report) = download_bytes(&set, &r.cap, &DownloadOptions::default())
            .await
            .unwrap();
        assert!(got == plain, "download of {size} bytes differs");
        assert!(report.problems.is_empty(), "{:?}", report.problems);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roundtrip_3_of_10_on_10_servers() {
    bounded(roundtrip_on(10, params(3, 7, 10))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roundtrip_3_of_10_on_4_servers_happy_4() {
    bounded(roundtrip_on(4, params(3, 4, 10))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_upload_writes_nothing() {
    bounded(async {
        let grid = TestGrid::start(5).await.unwrap();
        let set = grid.server_set();
        let opts = UploadOptions::convergent(params(3, 4, 5), CONVERGENCE);
        let plain = data(300_000, 9);
        let first = upload_bytes(&set, &ClientSecrets::random(), plain.clone(), &opts)
            .await
            .unwrap();
        let writes = grid.total_writes();
        assert!(writes >= 5);
        // Another client (other lease secret) uploads the same file.
        let second = upload_bytes(&set, &ClientSecrets::random(), plain, &opts)
            .await
            .unwrap();
        assert_eq!(grid.total_writes(), writes, "the second upload wrote");
        assert_eq!(second.cap.to_string(), first.cap.to_string());
        assert_eq!(second.pushed_shares, 0);
        assert_eq!(second.preexisting_shares, 5);
        assert!(second.happiness >= 4);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_failing_mid_upload_is_replaced() {
    bounded(async {
        let grid = TestGrid::start(10).await.unwrap();
        let set = grid.server_set();
        let mut opts = UploadOptions::convergent(params(3, 7, 10), CONVERGENCE);
        opts.chunk_size = 16 * 1024;
        let plain = data((1 << 20) + 1, 3);
        // Two servers accept a couple of writes, then fail every write.
        grid.servers[2].faults().fail_writes_after(5);
        grid.servers[7].faults().fail_writes_after(9);
        let r = upload_bytes(&set, &ClientSecrets::random(), plain.clone(), &opts)
            .await
            .unwrap();
        let si = r.storage_index.unwrap();
        let held = grid.shares_of(&si);
        assert!(held[2].is_empty() && held[7].is_empty(), "{held:?}");
        let all: BTreeSet<u8> = held.iter().flatten().copied().collect();
        assert_eq!(all.len(), 10, "lost shares were placed again: {held:?}");
        assert!(r.happiness >= 7);
        let (got, _) = download_bytes(&set, &r.cap, &DownloadOptions::default())
            .await
            .unwrap();
        assert!(got == plain);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failure_mid_upload_that_breaks_happiness_is_an_error() {
    bounded(async {
        let grid = TestGrid::start(4).await.unwrap();
        let set = grid.server_set();
        let mut opts = UploadOptions::convergent(params(3, 4, 10), CONVERGENCE);
        opts.chunk_size = 16 * 1024;
        grid.servers[1].faults().fail_writes_after(1);
        let err = upload_bytes(&set, &ClientSecrets::random(), data(500_000, 4), &opts)
            .await
            .unwrap_err();
        match err {
            UploadError::HappinessNotMet {
                happy, achieved, ..
            } => {
                assert_eq!(happy, 4);
                assert_eq!(achieved, 3);
            }
            e => panic!("unexpected error {e}"),
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_few_servers_is_happiness_not_met() {
    bounded(async {
        let grid = TestGrid::start(3).await.unwrap();
        let set = grid.server_set();
        let opts = UploadOptions::convergent(params(3, 4, 10), CONVERGENCE);
        let err = upload_bytes(&set, &ClientSecrets::random(), data(1000, 1), &opts)
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                UploadError::HappinessNotMet {
                    happy: 4,
                    achieved: 3,
                    needed: 3,
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(grid.total_writes(), 0, "nothing written when unhappy");
        // Nothing is left allocated: a later upload with happy 3 succeeds.
        let opts = UploadOptions::convergent(params(3, 3, 10), CONVERGENCE);
        upload_bytes(&set, &ClientSecrets::random(), data(1000, 1), &opts)
            .await
            .unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn download_with_servers_stopped() {
    bounded(async {
        let grid = TestGrid::start(10).await.unwrap();
        let set = grid.server_set();
        let opts = UploadOptions::convergent(params(3, 10, 10), CONVERGENCE);
        let plain = data(700_000, 5);
        let r = upload_bytes(&set, &ClientSecrets::random(), plain.clone(), &opts)
            .await
            .unwrap();
        // Stop servers one by one, up to n - k of them (each holds one share).
        for stopped in 1..=7 {
            grid.servers[stopped - 1].faults().set_offline(true);
            let (got, report) = download_bytes(&set, &r.cap, &DownloadOptions::default())
                .await
                .unwrap_or_else(|e| panic!("{stopped} stopped: {e}"));
            assert!(got == plain, "{stopped} stopped");
            assert!(report.advisories.is_empty());
        }
        grid.servers[7].faults().set_offline(true);
        let err = download_bytes(&set, &r.cap, &DownloadOptions::default())
            .await
            .unwrap_err();
        assert!(
            matches!(err, DownloadError::NotEnoughShares { needed: 3, .. }),
            "{err}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_stopped_during_download() {
    bounded(async {
        let grid = TestGrid::start(5).await.unwrap();
        let set = grid.server_set();
        let mut p = params(3, 5, 5);
        p.max_segment_size = 32 * 1024;
        let opts = UploadOptions::convergent(p, CONVERGENCE);
        let plain = data(1_000_000, 6);
        let r = upload_bytes(&set, &ClientSecrets::random(), plain.clone(), &opts)
            .await
            .unwrap();
        // Every server goes away after some reads: two of them mid-download.
        let set2 = set.clone();
        let cap = r.cap.clone();
        let dl =
            tokio::spawn(
                async move { download_bytes(&set2, &cap, &DownloadOptions::default()).await },
            );
        let mut stopped = 0;
        while stopped < 2 {
            for s in &grid.servers {
                if stopped < 2
                    && !s.faults().offline.load(std::sync::atomic::Ordering::SeqCst)
                    && s.faults().reads.load(std::sync::atomic::Ordering::SeqCst) > 10
                {
                    s.faults().set_offline(true);
                    stopped += 1;
                }
            }
            if dl.is_finished() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let (got, _) = dl.await.unwrap().unwrap();
        assert!(got == plain);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_share_is_skipped_and_reported() {
    bounded(async {
        let grid = TestGrid::start(4).await.unwrap();
        let set = grid.server_set();
        let opts = UploadOptions::convergent(params(3, 4, 10), CONVERGENCE);
        let plain = data(400_000, 7);
        let r = upload_bytes(&set, &ClientSecrets::random(), plain.clone(), &opts)
            .await
            .unwrap();
        let si = r.storage_index.unwrap();
        // Two of the four servers return shares whose first block bytes are inverted (the
        // v1 data region starts at 0x24). The downloader starts on three distinct servers, so it
        // meets at least one bad share.
        for s in [0, 1] {
            grid.servers[s].faults().corrupt_reads(0x24, 0x24 + 16);
        }
        // Which shares a download opens depends on which servers answer first, so a download may
        // meet only good shares; every download must return the right bytes, and within a few
        // downloads one must meet (and report) a bad share.
        let mut report = None;
        for _ in 0..8 {
            let (got, rep) = download_bytes(&set, &r.cap, &DownloadOptions::default())
                .await
                .unwrap();
            assert!(got == plain);
            if !rep.advisories.is_empty() {
                report = Some(rep);
                break;
            }
        }
        let report = report.expect("no download of 8 met a corrupt share");
        let bad: BTreeSet<String> = [0, 1]
            .iter()
            .map(|&i| grid.servers[i].handle.desc.server_id.clone())
            .collect();
        for (server, shnum) in &report.advisories {
            assert!(bad.contains(server), "advisory for good server {server}");
            let idx = grid
                .servers
                .iter()
                .position(|s| s.handle.desc.server_id == *server)
                .unwrap();
            assert!(grid.shares_of(&si)[idx].contains(&(*shnum as u8)));
        }
        let received: usize = grid
            .servers
            .iter()
            .map(|s| s.memory().advisories().len())
            .sum();
        assert_eq!(received, report.advisories.len());
        assert!(grid.servers[2].memory().advisories().is_empty());
        assert!(grid.servers[3].memory().advisories().is_empty());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn range_reads_fetch_only_needed_segments() {
    bounded(async {
        let grid = TestGrid::start(5).await.unwrap();
        let set = grid.server_set();
        let mut p = params(3, 5, 5);
        p.max_segment_size = 64 * 1024;
        let opts = UploadOptions::convergent(p, CONVERGENCE);
        let plain = data(1_000_003, 8);
        let r = upload_bytes(&set, &ClientSecrets::random(), plain.clone(), &opts)
            .await
            .unwrap();
        let seg = 65_538u64; // 64 KiB rounded up to a multiple of k = 3
        let size = plain.len() as u64;
        let reads = || -> u64 {
            grid.servers
                .iter()
                .map(|s| s.faults().reads.load(std::sync::atomic::Ordering::SeqCst))
                .sum()
        };
        for (off, len) in [
            (0, 1),
            (seg - 1, 2),
            (size - 1, 1),
            (12_345, 300_000),
            (0, size),
            (size, 0),
            (seg * 3, seg),
        ] {
            let before = reads();
            let mut out = Vec::new();
            download_range(
                &set,
                &r.cap,
                off,
                len,
                &mut out,
                &DownloadOptions::default(),
            )
            .await
            .unwrap();
            assert!(
                out[..] == plain[off as usize..(off + len) as usize],
                "{off}+{len}"
            );
            let used = reads() - before;
            if len == 1 {
                // Locate + open 3 shares (2 reads each) + nodes (a few) + 3 blocks: far fewer
                // than the 16 segments × 3 blocks of the whole file.
                assert!(used < 30, "{used} reads for one byte");
            }
        }
        let err = download_range(
            &set,
            &r.cap,
            size,
            1,
            &mut Vec::new(),
            &DownloadOptions::default(),
        )
        .await
        .unwrap_err();
        assert!(matches!(err, DownloadError::BadRange { .. }));
    })
    .await;
}

/// Servers on loopback answer the share search within a few milliseconds of each other, so
/// they count as equally fast and the download reads the primary shares (0 and 1 of 2-of-4),
/// which need no decoding. Answer order alone would pick them in one download of six.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn equally_fast_servers_give_the_primary_shares() {
    bounded(async {
        let grid = TestGrid::start(4).await.unwrap();
        let set = grid.server_set();
        let mut p = params(2, 4, 4);
        p.max_segment_size = 64 * 1024;
        let opts = UploadOptions::convergent(p, CONVERGENCE);
        let plain = data(300_001, 11);
        let r = upload_bytes(&set, &ClientSecrets::random(), plain.clone(), &opts)
            .await
            .unwrap();
        let si = r.cap.storage_index().unwrap();
        let placed = grid.shares_of(&si);
        assert!(placed.iter().all(|s| s.len() == 1), "{placed:?}");
        let primary_holders: BTreeSet<usize> = placed
            .iter()
            .enumerate()
            .filter(|(_, s)| s.iter().any(|&sh| sh < 2))
            .map(|(i, _)| i)
            .collect();
        let reads = |i: usize| {
            grid.servers[i]
                .faults()
                .reads
                .load(std::sync::atomic::Ordering::SeqCst)
        };
        for round in 0..12 {
            let before: Vec<u64> = (0..4).map(reads).collect();
            let (got, _) = download_bytes(&set, &r.cap, &DownloadOptions::default())
                .await
                .unwrap();
            assert!(got == plain, "round {round}");
            let read_from: BTreeSet<usize> = (0..4).filter(|&i| reads(i) > before[i]).collect();
            assert_eq!(read_from, primary_holders, "round {round}");
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_source_with_random_key() {
    bounded(async {
        let grid = TestGrid::start(4).await.unwrap();
        let set = grid.server_set();
        let plain = data(200_001, 11);
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), &plain).unwrap();
        let src = lafs::client::immutable::FileSource::open(file.path()).unwrap();
        let opts = UploadOptions::random(params(2, 4, 4));
        let r = lafs::client::immutable::upload(&set, &ClientSecrets::random(), src, &opts)
            .await
            .unwrap();
        // A random key: not the convergent cap, and every server got one share.
        assert_ne!(r.cap.to_string(), expected_cap(&plain, &params(2, 4, 4)));
        assert!(grid
            .shares_of(&r.storage_index.unwrap())
            .iter()
            .all(|s| s.len() == 1));
        let (got, _) = download_bytes(&set, &r.cap, &DownloadOptions::default())
            .await
            .unwrap();
        assert!(got == plain);
    })
    .await;
}

/// More segments than one run of fetched hash tree nodes (64), so the node caches refill.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_segments_roundtrip_and_range() {
    bounded(async {
        let grid = TestGrid::start(5).await.unwrap();
        let set = grid.server_set();
        let mut p = params(3, 5, 5);
        p.max_segment_size = 4096;
        let plain = data(600_001, 12);
        let opts = UploadOptions::convergent(p.clone(), CONVERGENCE);
        let r = upload_bytes(&set, &ClientSecrets::random(), plain.clone(), &opts)
            .await
            .unwrap();
        assert_eq!(r.cap.to_string(), expected_cap(&plain, &p));
        let (got, report) = download_bytes(&set, &r.cap, &DownloadOptions::default())
            .await
            .unwrap();
        assert!(got == plain);
        assert!(report.problems.is_empty(), "{:?}", report.problems);
        let mut out = Vec::new();
        download_range(
            &set,
            &r.cap,
            300_000,
            250_000,
            &mut out,
            &DownloadOptions::default(),
        )
        .await
        .unwrap();
        assert!(out[..] == plain[300_000..550_000]);
    })
    .await;
}

/// A download of many batches reuses the buffers of batches already written for the next ones:
/// every batch, the short last one included, must come out with only its own bytes (a reused
/// buffer holds the previous batch's plaintext).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_buffers_reused_across_many_batches_hold_only_their_batch() {
    bounded(async {
        let grid = TestGrid::start(5).await.unwrap();
        let set = grid.server_set();
        let mut p = params(3, 5, 5);
        p.max_segment_size = 4096;
        let plain = data(300_001, 13);
        let opts = UploadOptions::convergent(p, CONVERGENCE);
        let r = upload_bytes(&set, &ClientSecrets::random(), plain.clone(), &opts)
            .await
            .unwrap();
        // Two segments' worth of bytes per batch: 74 segments make dozens of batches, the last
        // one shorter than the others.
        let dl = DownloadOptions {
            batch_bytes: 8192,
            ..DownloadOptions::default()
        };
        let (got, report) = download_bytes(&set, &r.cap, &dl).await.unwrap();
        assert!(got == plain);
        assert!(report.problems.is_empty(), "{:?}", report.problems);
        let mut out = Vec::new();
        download_range(&set, &r.cap, 5000, 290_000, &mut out, &dl)
            .await
            .unwrap();
        assert!(out[..] == plain[5000..295_000]);
    })
    .await;
}

/// Regression (found by mount-tests/crash.test.sh and fsx.test.sh): an upload whose process died
/// (kill -9) leaves allocated, unfinished buckets on every server; servers refuse to allocate a
/// share another upload is still writing, so the next upload of the same file failed
/// servers-of-happiness until those buckets expired. The upload secret is now deterministic per
/// client and file, so the next upload aborts its own dead buckets and places every share.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_after_a_dead_upload_of_the_same_file_aborts_its_buckets() {
    let grid = TestGrid::start(4).await.unwrap();
    let set = grid.server_set();
    let secrets = ClientSecrets::random();
    let p = params(2, 3, 4);
    let plain = data(200_000, 9);
    let cap = lafs::cap::Cap::parse_strict(&expected_cap(&plain, &p)).unwrap();
    let si = cap.storage_index().unwrap();
    // The dead upload: every share allocated on every server with this client's upload secret,
    // a few bytes written, never finished nor aborted.
    let file = secrets.for_file(&si);
    let all: BTreeSet<u8> = (0..4).collect();
    for h in &set.servers {
        let lease = file.for_server(h.nodeid());
        let r = h
            .client
            .allocate_buckets(&si, &lease, &file.upload_secret(), &all, 100_000)
            .await
            .unwrap();
        assert_eq!(r.allocated.len(), 4 - r.already_have.len());
        for &sh in &r.allocated {
            h.client
                .write_share_chunk(
                    &si,
                    sh,
                    &file.upload_secret(),
                    0,
                    bytes::Bytes::from_static(b"partial"),
                )
                .await
                .unwrap();
        }
    }
    let opts = UploadOptions::convergent(p.clone(), CONVERGENCE);
    let r = bounded(upload_bytes(&set, &secrets, plain.clone(), &opts))
        .await
        .expect("the upload after a dead one");
    assert_eq!(r.cap.to_string(), cap.to_string());
    assert!(r.happiness >= 3);
    let (got, _) = download_bytes(&set, &r.cap, &DownloadOptions::default())
        .await
        .unwrap();
    assert_eq!(got, plain);
}

/// Regression (fsx.test.sh, CI of stop 13): the daemon was killed just after sending an upload's
/// last write. The server was still making that share durable when the next daemon's upload of
/// the same file asked for it, so it answered neither "already have" nor "allocated"; the abort
/// that followed failed because the share had completed meanwhile, and the upload gave up on
/// that server: servers-of-happiness not met on a 3-server grid. The upload now asks again for
/// every such share after the aborts and finds it in place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_after_a_dead_upload_that_completed_meanwhile_finds_its_shares() {
    let grid = TestGrid::start(3).await.unwrap();
    let set = grid.server_set();
    let secrets = ClientSecrets::random();
    let p = params(2, 3, 3);
    let opts = UploadOptions::convergent(p.clone(), CONVERGENCE);
    let plain = data(150_000, 33);
    // The dead process's upload, whose last writes reached the servers.
    let first = bounded(upload_bytes(&set, &secrets, plain.clone(), &opts))
        .await
        .unwrap();
    for s in &grid.servers {
        s.faults().finishing_once();
    }
    let r = bounded(upload_bytes(&set, &secrets, plain.clone(), &opts))
        .await
        .expect("the upload after a dead one whose shares completed meanwhile");
    assert_eq!(r.cap.to_string(), first.cap.to_string());
    assert!(r.happiness >= 3, "happiness {}", r.happiness);
    assert_eq!(r.pushed_shares, 0, "every share was already in place");
    let (got, _) = download_bytes(&set, &r.cap, &DownloadOptions::default())
        .await
        .unwrap();
    assert_eq!(got, plain);
}

/// Regression: two uploads of the same bytes by one client at the same time. Same content, same
/// key, same storage index and (deterministic) upload secret: without the per-storage-index turn
/// in `upload`, each upload aborted the other's unfinished buckets as if a dead predecessor had
/// left them, and one or both failed. Both must succeed with the same cap, and the file must be
/// complete and readable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_uploads_of_the_same_bytes_both_succeed() {
    let grid = TestGrid::start(5).await.unwrap();
    let set = grid.server_set();
    let secrets = ClientSecrets::random();
    let p = params(3, 5, 5);
    let opts = UploadOptions {
        // Small chunks: many PATCHes, so the two uploads overlap on the servers.
        chunk_size: 16 << 10,
        ..UploadOptions::convergent(p.clone(), CONVERGENCE)
    };
    for round in 0..3u8 {
        let plain = data(3 << 20, 21 ^ (round << 4));
        let want = expected_cap(&plain, &p);
        let (a, b) = bounded(async {
            tokio::join!(
                upload_bytes(&set, &secrets, plain.clone(), &opts),
                upload_bytes(&set, &secrets, plain.clone(), &opts),
            )
        })
        .await;
        let a = a.unwrap_or_else(|e| panic!("round {round}, first upload: {e}"));
        let b = b.unwrap_or_else(|e| panic!("round {round}, second upload: {e}"));
        assert_eq!(a.cap.to_string(), want, "round {round}");
        assert_eq!(b.cap.to_string(), want, "round {round}");
        assert!(a.happiness >= 5 && b.happiness >= 5, "round {round}");
        // One of them wrote the shares, the other found them in place.
        assert_eq!(a.pushed_shares + b.pushed_shares, 5, "round {round}");
        let (got, report) = download_bytes(&set, &a.cap, &DownloadOptions::default())
            .await
            .unwrap();
        assert!(got == plain, "round {round}");
        assert!(report.problems.is_empty(), "{:?}", report.problems);
    }
}
