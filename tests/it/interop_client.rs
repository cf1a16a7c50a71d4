//! Interop of the lafs CHK client with real Tahoe-LAFS 1.20 storage servers over HTTPS:
//! - our client uploads to a loopback grid of tahoe storage nodes, and the tahoe client reads the
//!   files back (`GET /uri/CAP`) byte-identical; the caps equal `tahoe put`'s for the same file,
//!   convergence secret and parameters;
//! - `tahoe put` uploads, our client downloads (whole file and a range);
//! - a second upload by our client of a file tahoe already stored writes nothing.
//!
//! Each server's NURL is built as Tahoe does: the SPKI pin of `private/node.pem`, the swissnum
//! of `private/storage.furl`, the tub port; its lease seed is the fURL's TubID.
//!
//! Needs the venv from `.ci/setup` (skips with a message without it, fails under CI=true). The
//! grid start, each command and the whole exchange are bounded.

use crate::common;
use crate::common::grid;

use grid::{ClientSpec, Grid};
use lafs::client::immutable::{
    download_bytes, download_range, upload_bytes, DownloadOptions, UploadOptions,
};
use lafs::client::secrets::ClientSecrets;
use lafs::immutable::EncodingParams;
use std::time::Duration;

const CONVERGENCE: &[u8] = b"lafs interop client convergence!!";
const T: Duration = Duration::from_secs(120);

fn data(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| ((i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 29) as u8 ^ seed)
        .collect()
}

/// Runs `f` on `rt`, bounded by `T`.
fn run<F: std::future::Future>(rt: &tokio::runtime::Runtime, f: F) -> F::Output {
    rt.block_on(async { tokio::time::timeout(T, f).await })
        .expect("lafs client operation timed out")
}

#[test]
fn lafs_client_and_tahoe_client_share_a_tahoe_grid() {
    let _heavy = common::heavy();
    let Some(venv) = common::require("the Tahoe-LAFS 1.20 venv", common::tahoe_venv()) else {
        return;
    };
    let g = Grid::up(
        &venv,
        5,
        &[ClientSpec {
            name: "a",
            needed: 3,
            happy: 4,
            total: 5,
            max_segment_size: None,
        }],
        CONVERGENCE,
        Duration::from_secs(90),
    );
    let set = g.server_set();
    assert_eq!(set.servers.len(), 5);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let params = EncodingParams {
        needed: 3,
        happy: 4,
        total: 5,
        max_segment_size: 1 << 20,
    };
    let opts = UploadOptions::convergent(params, CONVERGENCE);
    let secrets = ClientSecrets::from_lease_secret(&[0x42; 32]);

    // 1. lafs uploads, tahoe reads; the cap is the one tahoe computes for the same file.
    for (i, size) in [56usize, 1000, (1 << 20) + 1, 2_500_000]
        .into_iter()
        .enumerate()
    {
        let plain = data(size, i as u8);
        let r = run(&rt, upload_bytes(&set, &secrets, plain.clone(), &opts))
            .unwrap_or_else(|e| panic!("lafs upload of {size} bytes to tahoe servers: {e}"));
        assert!(r.happiness >= 4);
        let cap = r.cap.to_string();
        let got = g.http("a", "GET", &format!("/uri/{cap}"), b"", T);
        assert_eq!(got.status, 200, "tahoe GET of our upload ({size} bytes)");
        assert!(
            got.body == plain,
            "tahoe read back different bytes ({size})"
        );
        // Same file through tahoe: same cap, and tahoe finds the shares already there.
        let tahoe_cap = g.put("a", &plain, T);
        assert_eq!(tahoe_cap, cap, "caps of lafs and tahoe for the same file");
    }

    // 2. tahoe uploads, lafs reads (whole and a range); then a lafs re-upload writes nothing.
    let plain = data(1_800_000, 77);
    let cap_text = g.put("a", &plain, T);
    let cap = lafs::cap::Cap::parse_strict(&cap_text)
        .expect("tahoe's cap parses")
        .node()
        .expect("a file cap")
        .clone();
    let (got, report) = run(&rt, download_bytes(&set, &cap, &DownloadOptions::default()))
        .expect("lafs download of tahoe's upload");
    assert!(got == plain, "lafs read back different bytes");
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    let mut part = Vec::new();
    run(
        &rt,
        download_range(
            &set,
            &cap,
            1_048_570,
            20,
            &mut part,
            &DownloadOptions::default(),
        ),
    )
    .expect("range read");
    assert!(part[..] == plain[1_048_570..1_048_590]);
    let again = run(&rt, upload_bytes(&set, &secrets, plain, &opts)).expect("re-upload");
    assert_eq!(again.cap.to_string(), cap_text);
    assert_eq!(
        again.pushed_shares, 0,
        "re-upload of tahoe's file wrote shares"
    );
}
