//! Interoperability with Tahoe 1.20's own storage server code: Python's
//! `allmydata.storage.server.StorageServer` (in-process, no network) writes shares that our
//! store must read and lease-match, and reads shares our store wrote.
//!
//! Needs the Tahoe venv at `$HOME/.cache/lafs/tahoe-venv/bin/python` (override with env
//! `LAFS_TAHOE_PYTHON`). Without it the test prints a message and passes, unless `CI=true`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use lafs::storage::disk::{DiskStore, StoreConfig, TestWriteVectors, WriteVector};

const NODE: [u8; 20] = [0x4e; 20];

const SCRIPT: &str = r#"
import sys, json
from allmydata.storage.server import StorageServer
mode, d = sys.argv[1], sys.argv[2]
ss = StorageServer(d, b"\x4e" * 20)
out = {}
if mode == "write":
    already, bws = ss.allocate_buckets(b"\x11" * 16, b"\x01" * 32, b"\x02" * 32, {0, 3}, 10)
    for n, bw in bws.items():
        bw.write(0, b"py-share-%d" % n)
        bw.close()
    ok, _ = ss.slot_testv_and_readv_and_writev(
        b"\x22" * 16, (b"\x05" * 32, b"\x01" * 32, b"\x02" * 32),
        {1: ([(0, 1, b"eq", b"")], [(0, b"python mutable"), (20, b"!")], None)}, [])
    out["mutable_ok"] = ok
else:
    r = ss.get_buckets(b"\x33" * 16)
    out["imm"] = {str(n): b.read(0, 100).decode() for n, b in r.items()}
    out["imm_leases"] = [[l.owner_num, l.is_renew_secret(b"\x07" * 32)] for l in ss.get_leases(b"\x33" * 16)]
    out["mut"] = {str(k): [x.decode("latin-1") for x in v] for k, v in ss.slot_readv(b"\x44" * 16, [], [(0, 100)]).items()}
    out["mut_leases"] = [[l.owner_num, l.is_renew_secret(b"\x07" * 32), l.nodeid.hex()] for l in ss.get_slot_leases(b"\x44" * 16)]
    ok, reads = ss.slot_testv_and_readv_and_writev(
        b"\x44" * 16, (b"\x09" * 32, b"\x07" * 32, b"\x08" * 32),
        {2: ([(0, 4, b"eq", b"rust")], [(0, b"RUST")], None)}, [(0, 4)])
    out["py_rtw_ok"] = ok
    out["mut_leases_after"] = len(list(ss.get_slot_leases(b"\x44" * 16)))
print(json.dumps(out))
"#;

fn python() -> Option<PathBuf> {
    let p = match std::env::var_os("LAFS_TAHOE_PYTHON") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(std::env::var_os("HOME")?).join(".cache/lafs/tahoe-venv/bin/python"),
    };
    let ok = Command::new(&p)
        .args(["-c", "import allmydata"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    ok.then_some(p)
}

fn run(py: &Path, mode: &str, dir: &Path) -> serde_json::Value {
    let out = Command::new(py)
        .args(["-c", SCRIPT, mode])
        .arg(dir)
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    serde_json::from_str(stdout.lines().last().expect("json line")).unwrap()
}

#[test]
fn tahoe_and_lafs_read_each_others_shares() {
    let _heavy = crate::common::heavy();
    let Some(py) = python() else {
        let msg =
            "Tahoe venv not found ($HOME/.cache/lafs/tahoe-venv); skipping storage interop test";
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{msg}");
        }
        eprintln!("{msg}");
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let storage = tmp.path().join("storage");

    // Python writes; we read.
    let w = run(&py, "write", &storage);
    assert_eq!(w["mutable_ok"], true);
    let store = DiskStore::open(StoreConfig::new(&storage, NODE)).unwrap();
    let si1 = [0x11; 16];
    assert_eq!(store.list_shares(&si1).unwrap(), BTreeSet::from([0, 3]));
    assert_eq!(
        store.read_immutable(&si1, 3, 0, 100).unwrap(),
        b"py-share-3"
    );
    let leases = store.leases(&si1, 0).unwrap();
    assert_eq!(leases.len(), 1);
    assert_eq!(leases[0].owner_num, 0);
    // Same renew secret: renewed (hashes agree), not appended.
    store.add_lease(&si1, &[1; 32], &[2; 32]).unwrap();
    assert_eq!(store.leases(&si1, 0).unwrap().len(), 1);
    let si2 = [0x22; 16];
    assert_eq!(
        store.read_mutable(&si2, 1, 0, 100).unwrap(),
        b"python mutable\0\0\0\0\0\0!"
    );
    // The write enabler Python stored is ours too, and its lease renews.
    let v = BTreeMap::from([(
        1,
        TestWriteVectors {
            write: vec![WriteVector {
                offset: 0,
                data: b"P".to_vec(),
            }],
            ..Default::default()
        },
    )]);
    assert!(
        store
            .read_test_write(&si2, &[5; 32], &[1; 32], &[2; 32], &v, &[])
            .unwrap()
            .success
    );
    assert_eq!(store.leases(&si2, 1).unwrap().len(), 1);

    // We write; Python reads.
    let si3 = [0x33; 16];
    store
        .allocate_buckets(&si3, &[7; 32], &[8; 32], &BTreeSet::from([5]), 7, b"u")
        .unwrap();
    store.write_immutable(&si3, 5, b"u", 4, b"-ok").unwrap();
    assert!(
        store
            .write_immutable(&si3, 5, b"u", 0, b"rust")
            .unwrap()
            .complete
    );
    let si4 = [0x44; 16];
    let v = BTreeMap::from([(
        2,
        TestWriteVectors {
            write: vec![WriteVector {
                offset: 0,
                data: b"rust mutable".to_vec(),
            }],
            ..Default::default()
        },
    )]);
    assert!(
        store
            .read_test_write(&si4, &[9; 32], &[7; 32], &[8; 32], &v, &[])
            .unwrap()
            .success
    );
    // Five leases: one spills into the extra-lease block after the data.
    for i in 0..4u8 {
        store.add_lease(&si4, &[100 + i; 32], &[8; 32]).unwrap();
    }
    // Growing the data now moves the extra-lease block.
    let v = BTreeMap::from([(
        2,
        TestWriteVectors {
            write: vec![WriteVector {
                offset: 12,
                data: b" grown".to_vec(),
            }],
            ..Default::default()
        },
    )]);
    assert!(
        store
            .read_test_write(&si4, &[9; 32], &[7; 32], &[8; 32], &v, &[])
            .unwrap()
            .success
    );
    drop(store);

    let r = run(&py, "read", &storage);
    assert_eq!(r["imm"]["5"], "rust-ok");
    assert_eq!(r["imm_leases"], serde_json::json!([[0, true]]));
    assert_eq!(r["mut"]["2"], serde_json::json!(["rust mutable grown"]));
    let ml = r["mut_leases"].as_array().unwrap();
    assert_eq!(ml.len(), 5);
    assert_eq!(ml[0], serde_json::json!([1, true, "4e".repeat(20)]));
    assert_eq!(r["py_rtw_ok"], true);
    assert_eq!(
        r["mut_leases_after"], 5,
        "Python renewed our hashed lease instead of adding one"
    );
}
