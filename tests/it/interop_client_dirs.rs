//! Interop of the lafs directory and mutable-file client with real Tahoe-LAFS 1.20 over HTTPS:
//! - our client writes mutable files (SDMF and MDMF, created, then overwritten) and mutable
//!   directories (SDMF and MDMF, nested, with `ln`-style links of one cap under two names) to a
//!   grid of tahoe storage servers; the tahoe client lists them (`tahoe ls`, `tahoe ls --json`
//!   with sane metadata and our caps) and reads every file back byte-identical (`tahoe get` and
//!   `GET /uri/DIRCAP/path`);
//! - tahoe makes immutable directories (`POST /uri?t=mkdir-immutable`, a DIR2-CHK holding a CHK
//!   file, a LIT file and a nested DIR2-CHK); our client lists them, resolves paths through them
//!   and reads the files; a DIR2-CHK refuses writes.
//!
//! Expected values are the bytes and names the test itself wrote, and Tahoe's own answers.
//! Needs the venv from `.ci/setup` (skips with a message without it, fails under CI=true). Every
//! step is bounded.

use crate::common;
use crate::common::grid;

use grid::{ClientSpec, Grid};
use lafs::cap::{Cap, MutableFormat, NodeCap};
use lafs::client::directory::{child_cap, DirectoryClient};
use lafs::client::immutable::{download_bytes, upload_bytes, DownloadOptions, UploadOptions};
use lafs::client::mutable::{MutableClient, MutableParams};
use lafs::client::secrets::ClientSecrets;
use lafs::immutable::EncodingParams;
use lafs::mutable::keys::KeyPool;
use serde_json::Value;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const CONVERGENCE: &[u8] = b"lafs interop dirs convergence!!!";
const T: Duration = Duration::from_secs(120);

fn data(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| ((i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 29) as u8 ^ seed)
        .collect()
}

fn run<F: std::future::Future>(rt: &tokio::runtime::Runtime, f: F) -> F::Output {
    rt.block_on(async { tokio::time::timeout(T, f).await })
        .expect("lafs client operation timed out")
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64()
}

/// The children of a `?t=json` / `ls --json` dirnode answer.
fn children(json: &Value) -> &serde_json::Map<String, Value> {
    assert_eq!(json[0], "dirnode", "{json}");
    json[1]["children"].as_object().expect("children")
}

/// The body Tahoe serves for `GET /uri/<cap>[/path]`.
fn tahoe_read(g: &Grid, cap: &str, path: &str) -> Vec<u8> {
    let target = if path.is_empty() {
        format!("/uri/{cap}")
    } else {
        format!("/uri/{cap}/{path}")
    };
    let r = g.http("a", "GET", &target, b"", T);
    assert_eq!(
        r.status,
        200,
        "tahoe GET {path}: {}",
        String::from_utf8_lossy(&r.body)
    );
    r.body
}

#[test]
fn lafs_directories_and_mutable_files_on_a_tahoe_grid() {
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
        .expect("runtime");
    let files = MutableClient::new(
        set.clone(),
        [0x17; 32],
        MutableParams { k: 3, n: 5 },
        Arc::new(KeyPool::new(0)),
    );
    let dirs = DirectoryClient::new(files.clone());
    let secrets = ClientSecrets::from_lease_secret(&[0x17; 32]);
    let params = EncodingParams {
        needed: 3,
        happy: 4,
        total: 5,
        max_segment_size: 1 << 20,
    };
    let before = now();

    // --- 1. lafs writes: files (CHK, SDMF and MDMF, the mutable ones overwritten) and a tree.
    let chk_plain = data(70_000, 1);
    let chk = run(
        &rt,
        upload_bytes(
            &set,
            &secrets,
            chk_plain.clone(),
            &UploadOptions::convergent(params.clone(), CONVERGENCE),
        ),
    )
    .expect("CHK upload")
    .cap;
    let chk = Cap::File(chk);

    let sdmf_v1 = b"first version of an SDMF file written by lafs\n".repeat(10);
    let sdmf_v2 = b"second, longer version of the SDMF file written by lafs\n".repeat(40);
    let (sdmf, _) = run(&rt, files.create(MutableFormat::Sdmf, &sdmf_v1)).expect("SDMF create");
    run(&rt, files.overwrite(&sdmf, &sdmf_v2)).expect("SDMF overwrite");
    let sdmf = Cap::File(NodeCap::MutableWrite(sdmf));

    // MDMF over several segments (128 KiB each), overwritten with a different length.
    let mdmf_v1 = data(300_000, 2);
    let mdmf_v2 = data(400_001, 3);
    let (mdmf, _) = run(&rt, files.create(MutableFormat::Mdmf, &mdmf_v1)).expect("MDMF create");
    run(&rt, files.overwrite(&mdmf, &mdmf_v2)).expect("MDMF overwrite");
    let mdmf = Cap::File(NodeCap::MutableWrite(mdmf));

    let (root, sub, deeper) = run(&rt, async {
        let root = dirs.create(MutableFormat::Sdmf).await?;
        let sub = dirs
            .create_subdirectory(&root, "sub", MutableFormat::Mdmf)
            .await?;
        let deeper = dirs
            .create_subdirectory(&sub, "deeper", MutableFormat::Sdmf)
            .await?;
        root.link("chk.bin", &chk, false).await?;
        root.link("sdmf.txt", &sdmf, false).await?;
        sub.link("mdmf.bin", &mdmf, false).await?;
        // `ln`: the same file under a second name elsewhere, and a unicode name.
        deeper.link("also-sdmf.txt", &sdmf, false).await?;
        deeper.link("caf\u{e9}.bin", &chk, false).await?;
        // A link replaced, and one removed: only the final state must show.
        root.link("gone", &chk, false).await?;
        root.remove("gone").await?;
        Ok::<_, lafs::client::directory::DirectoryError>((root, sub, deeper))
    })
    .expect("building the tree");
    let root_cap = root.cap().to_string();
    assert!(root_cap.starts_with("URI:DIR2:"), "an SDMF directory");
    assert!(sub.cap().to_string().starts_with("URI:DIR2-MDMF:"));
    assert!(deeper.cap().to_string().starts_with("URI:DIR2:"));

    // --- 2. tahoe reads the tree.
    let ls = g.tahoe_cli("a", &["ls", &root_cap], None, T);
    let mut names: Vec<&str> = ls.lines().collect();
    names.sort_unstable();
    assert_eq!(
        names,
        ["chk.bin", "sdmf.txt", "sub"],
        "tahoe ls of the root"
    );
    let ls_deeper = g.tahoe_cli("a", &["ls", &format!("{root_cap}/sub/deeper")], None, T);
    let mut names: Vec<&str> = ls_deeper.lines().collect();
    names.sort_unstable();
    assert_eq!(
        names,
        ["also-sdmf.txt", "caf\u{e9}.bin"],
        "tahoe ls of a nested directory"
    );

    let json: Value =
        serde_json::from_str(&g.tahoe_cli("a", &["ls", "--json", &root_cap], None, T))
            .expect("tahoe ls --json is JSON");
    assert_eq!(json[1]["mutable"], true);
    assert_eq!(json[1]["rw_uri"], root_cap.as_str());
    let kids = children(&json);
    let after = now();
    for (name, cap, kind, format, mutable) in [
        ("chk.bin", &chk, "filenode", "CHK", false),
        ("sdmf.txt", &sdmf, "filenode", "SDMF", true),
        ("sub", sub.cap(), "dirnode", "", true),
    ] {
        let entry = &kids[name];
        assert_eq!(entry[0], kind, "{name}: {entry}");
        let attrs = &entry[1];
        assert_eq!(attrs["mutable"], mutable, "{name}: {entry}");
        if !format.is_empty() {
            assert_eq!(attrs["format"], format, "{name}: {entry}");
        }
        let ro = cap.readonly().expect("read cap").to_string();
        assert_eq!(
            attrs["ro_uri"],
            ro.as_str(),
            "{name}: read cap as tahoe sees it"
        );
        if mutable {
            assert_eq!(
                attrs["rw_uri"],
                cap.to_string().as_str(),
                "{name}: write cap"
            );
        } else {
            assert!(
                attrs.get("rw_uri").is_none(),
                "{name}: an immutable file has no rw_uri"
            );
        }
        let md = &attrs["metadata"]["tahoe"];
        for key in ["linkcrtime", "linkmotime"] {
            let t = md[key]
                .as_f64()
                .unwrap_or_else(|| panic!("{name}: {key} in {entry}"));
            assert!(
                t >= before - 5.0 && t <= after + 5.0,
                "{name}: {key} {t} is not the time of the link"
            );
        }
    }
    assert_eq!(kids["chk.bin"][1]["size"], chk_plain.len() as u64);

    let tahoe_get = g.tahoe_cli("a", &["get", &format!("{root_cap}/sdmf.txt")], None, T);
    assert!(
        tahoe_get.as_bytes() == sdmf_v2,
        "tahoe get of the overwritten SDMF file"
    );
    assert!(
        tahoe_read(&g, &root_cap, "sub/mdmf.bin") == mdmf_v2,
        "MDMF through tahoe"
    );
    assert!(tahoe_read(&g, &root_cap, "chk.bin") == chk_plain);
    assert!(tahoe_read(&g, &root_cap, "sub/deeper/also-sdmf.txt") == sdmf_v2);
    assert!(tahoe_read(&g, &root_cap, "sub/deeper/caf%C3%A9.bin") == chk_plain);
    // Through the read-only cap as well.
    let ro_root = root.readonly_cap().expect("ro cap").to_string();
    assert!(tahoe_read(&g, &ro_root, "sub/mdmf.bin") == mdmf_v2);

    // --- 3. tahoe makes immutable directories; lafs reads through them.
    let lit = "URI:LIT:nbswy3dpeb3w64tmmqqq"; // "hello world!"
    let inner_body = serde_json::json!({
        "inner.bin": ["filenode", {"ro_uri": chk.to_string(), "metadata": {"k": "v"}}],
    });
    let r = g.http(
        "a",
        "POST",
        "/uri?t=mkdir-immutable",
        inner_body.to_string().as_bytes(),
        T,
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let inner_cap = String::from_utf8(r.body)
        .expect("cap text")
        .trim()
        .to_string();
    assert!(inner_cap.starts_with("URI:DIR2-CHK:"), "{inner_cap}");
    let outer_body = serde_json::json!({
        "file.bin": ["filenode", {"ro_uri": chk.to_string()}],
        "small.txt": ["filenode", {"ro_uri": lit}],
        "nested": ["dirnode", {"ro_uri": inner_cap}],
    });
    let r = g.http(
        "a",
        "POST",
        "/uri?t=mkdir-immutable",
        outer_body.to_string().as_bytes(),
        T,
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let outer_cap = String::from_utf8(r.body)
        .expect("cap text")
        .trim()
        .to_string();
    assert!(outer_cap.starts_with("URI:DIR2-CHK:"), "{outer_cap}");
    let outer = Cap::parse_strict(&outer_cap).expect("DIR2-CHK parses");

    let opts = DownloadOptions::default();
    run(&rt, async {
        let dir = dirs.open(&outer).expect("open DIR2-CHK");
        assert!(!dir.is_writeable());
        let listing = dir.list().await.expect("list DIR2-CHK");
        let mut names: Vec<&str> = listing.iter().map(|(n, _)| n).collect();
        names.sort_unstable();
        assert_eq!(names, ["file.bin", "nested", "small.txt"]);
        let file = child_cap(listing.get("file.bin").expect("file.bin")).expect("child cap");
        assert_eq!(file.to_string(), chk.to_string());
        let small = child_cap(listing.get("small.txt").expect("small.txt")).expect("child cap");
        assert_eq!(small.to_string(), lit);
        // A path through two immutable directories.
        let inner_file = dirs
            .resolve(&outer, "nested/inner.bin")
            .await
            .expect("resolve through DIR2-CHKs");
        let node = inner_file.node().expect("file cap").clone();
        let (got, _) = download_bytes(&set, &node, &opts).await.expect("download");
        assert!(
            got == chk_plain,
            "file read through tahoe's immutable directories"
        );
        let inner = dirs.open_path(&outer, "nested").await.expect("open nested");
        let md = inner
            .lookup("inner.bin")
            .await
            .expect("lookup")
            .expect("inner.bin")
            .metadata;
        assert_eq!(
            md.as_map().get("k"),
            Some(&Value::from("v")),
            "metadata kept"
        );
        // Writes are refused.
        assert!(dir.link("x", &file, false).await.is_err());
        assert!(dir.remove("file.bin").await.is_err());
    });

    // A DIR2-CHK linked into our mutable tree reads back through tahoe too.
    run(&rt, root.link("frozen", &outer, false)).expect("link the DIR2-CHK");
    assert!(tahoe_read(&g, &root_cap, "frozen/nested/inner.bin") == chk_plain);
}
