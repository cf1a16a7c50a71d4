//! Unit tests of the node directory and the store adapter. Expected values come from RFC 8032,
//! Tahoe's documented formats, or are computed independently in the test.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;

use super::backend::{map_store_error, DiskBackend, MAX_READ_CHUNK, MAX_RTW_READ_BYTES};
use super::nodedir::{self, listen_addrs, location_hints, tcp_hint, CreateOptions, NodeFiles};
use crate::config::NodeConfig;
use crate::protocol::messages::{ReadTestWriteRequest, ReadVector, TestWriteVectors, WriteVector};
use crate::protocol::server::{BackendError, StorageBackend};
use crate::protocol::LeaseSecrets;
use crate::storage::disk::{DiskStore, StoreConfig, StoreError};

fn cfg(node: &str) -> NodeConfig {
    NodeConfig::parse(&format!("[node]\n{node}\n[storage]\nenabled = true\n")).unwrap()
}

#[test]
fn tub_port_forms() {
    let a = listen_addrs(&cfg("tub.port = tcp:3457:interface=127.0.0.1")).unwrap();
    assert_eq!(a, vec!["127.0.0.1:3457".parse::<SocketAddr>().unwrap()]);
    let a = listen_addrs(&cfg("tub.port = tcp:3457")).unwrap();
    assert_eq!(a, vec!["0.0.0.0:3457".parse::<SocketAddr>().unwrap()]);
    let a = listen_addrs(&cfg("tub.port = 3457")).unwrap();
    assert_eq!(a[0].port(), 3457);
    let a = listen_addrs(&cfg("tub.port = tcp:1:interface=\\:\\:1,tcp:2")).unwrap();
    assert_eq!(a.len(), 2);
    assert_eq!(a[0], "[::1]:1".parse::<SocketAddr>().unwrap());
    for bad in [
        "tub.port = tcp:x",
        "tub.port = tcp:1:interface=nope",
        "tub.port = tor:1",
    ] {
        assert!(listen_addrs(&cfg(bad)).is_err(), "{bad}");
    }
    assert!(listen_addrs(&cfg("nickname = x")).is_err());
}

#[test]
fn location_and_hints() {
    let c = cfg("tub.port = tcp:9\ntub.location = tcp:example.org:9,tor:abc.onion:9");
    assert_eq!(
        location_hints(&c).unwrap(),
        ["tcp:example.org:9", "tor:abc.onion:9"]
    );
    let c = cfg("tub.port = tcp:9\ntub.location = AUTO");
    assert_eq!(location_hints(&c).unwrap(), ["tcp:127.0.0.1:9"]);
    assert_eq!(tcp_hint("tcp:h:12"), Some(("h".into(), 12)));
    assert_eq!(tcp_hint("tcp:[::1]:12"), Some(("[::1]".into(), 12)));
    assert_eq!(tcp_hint("tor:h:12"), None);
    assert_eq!(tcp_hint("tcp:h:99999"), None);
}

/// Tahoe refuses to start a node that hides its IP address but announces one (`PrivacyError`):
/// `AUTO` and TCP hints, new-style or legacy, are refused; Tor hints are not.
#[test]
fn hidden_ip_refuses_location_hints_that_reveal_it() {
    let hide = "reveal-IP-address = false\ntub.port = tcp:9:interface=127.0.0.1\n";
    for (loc, what) in [
        ("AUTO", "AUTO"),
        ("tcp:example.org:9", "a tcp: hint"),
        ("tor:abc.onion:9,example.org:9", "a tcp: hint"),
    ] {
        let err = location_hints(&cfg(&format!("{hide}tub.location = {loc}"))).unwrap_err();
        assert!(err.to_string().contains(what), "{loc}: {err}");
    }
    let err = location_hints(&cfg(hide)).unwrap_err();
    assert!(err.to_string().contains("AUTO"), "no tub.location: {err}");
    let c = cfg(&format!("{hide}tub.location = tor:abc.onion:9,i2p:xyz.i2p"));
    assert_eq!(
        location_hints(&c).unwrap(),
        ["tor:abc.onion:9", "i2p:xyz.i2p"]
    );
    // Revealing is the default: the same hints are fine without the option.
    let c = cfg("tub.port = tcp:9\ntub.location = example.org:9");
    assert_eq!(location_hints(&c).unwrap(), ["example.org:9"]);
}

/// RFC 8032 §7.1 test 1: the `priv-v0-` seed gives the `pub-v0-`/`v0-` public key.
#[test]
fn ed25519_node_key_rfc8032() {
    let dir = tempfile::tempdir().unwrap();
    let seed = [
        0x9d, 0x61, 0xb1, 0x9d, 0xef, 0xfd, 0x5a, 0x60, 0xba, 0x84, 0x4a, 0xf4, 0x92, 0xec, 0x2c,
        0xc4, 0x44, 0x49, 0xc5, 0x69, 0x7b, 0x32, 0x69, 0x19, 0x70, 0x3b, 0xac, 0x03, 0x1c, 0xae,
        0x7f, 0x60,
    ];
    let public = [
        0xd7, 0x5a, 0x98, 0x01, 0x82, 0xb1, 0x0a, 0xb7, 0xd5, 0x4b, 0xfe, 0xd3, 0xc9, 0x64, 0x07,
        0x3a, 0x0e, 0xe1, 0x72, 0xf3, 0xda, 0xa6, 0x23, 0x25, 0xaf, 0x02, 0x1a, 0x68, 0xf7, 0x07,
        0x51, 0x1a,
    ];
    std::fs::create_dir_all(dir.path().join("private")).unwrap();
    std::fs::write(
        dir.path().join("private/node.privkey"),
        format!("priv-v0-{}\n", crate::util::base32::encode(&seed)),
    )
    .unwrap();
    let c = cfg("tub.port = tcp:9\ntub.location = tcp:127.0.0.1:9");
    let files = NodeFiles::ensure(dir.path(), &c).unwrap();
    assert_eq!(files.node_pubkey, public);
    assert_eq!(
        files.server_id(),
        format!("v0-{}", crate::util::base32::encode(&public))
    );
    // A fresh server (no shares) seeds the permutation with its public key, like Tahoe.
    assert_eq!(files.permutation_seed, crate::util::base32::encode(&public));
    let pubfile = std::fs::read_to_string(dir.path().join("node.pubkey")).unwrap();
    assert_eq!(
        pubfile,
        format!("pub-v0-{}\n", crate::util::base32::encode(&public))
    );
    // my_nodeid is the TubID: base32 of SHA-1 of the certificate DER.
    use sha1::Digest as _;
    let tub = crate::util::base32::encode(&sha1::Sha1::digest(files.identity.cert_der()));
    assert_eq!(
        std::fs::read_to_string(dir.path().join("my_nodeid")).unwrap(),
        format!("{tub}\n")
    );
    // The fURL and the NURL share the swissnum; a reload keeps everything.
    let furl = files.furl();
    assert!(furl.starts_with(&format!("pb://{tub}@tcp:127.0.0.1:9/")));
    let again = NodeFiles::load(dir.path(), &c).unwrap();
    assert_eq!(again.furl(), furl);
    assert_eq!(again.nurls().unwrap(), files.nurls().unwrap());
    let nurl = crate::grid::furl::Nurl::parse(&files.nurls().unwrap()[0]).unwrap();
    assert_eq!(nurl.swissnum(), files.swissnum());
    assert_eq!(nurl.port(), 9);
}

#[test]
fn location_change_keeps_swissnum() {
    let dir = tempfile::tempdir().unwrap();
    let c1 = cfg("tub.port = tcp:9\ntub.location = tcp:a.example:9");
    let f1 = NodeFiles::ensure(dir.path(), &c1).unwrap();
    let c2 = cfg("tub.port = tcp:9\ntub.location = tcp:b.example:9");
    let f2 = NodeFiles::ensure(dir.path(), &c2).unwrap();
    assert_eq!(f1.swissnum(), f2.swissnum());
    assert_eq!(f1.identity.tub_id(), f2.identity.tub_id());
    let text = std::fs::read_to_string(dir.path().join("private/storage.furl")).unwrap();
    assert!(text.contains("@tcp:b.example:9/"));
}

#[test]
fn tor_location_hints_announce_pb_tor_nurls() {
    // Digest §6.1: one NURL per tcp:/tor: hint; Tor ones use the pb+tor scheme.
    let dir = tempfile::tempdir().unwrap();
    let onion = "a".repeat(56) + ".onion";
    let c = cfg(&format!(
        "tub.port = tcp:9:interface=127.0.0.1\ntub.location = tor:{onion}:80,tcp:b.example:9"
    ));
    let f = NodeFiles::ensure(dir.path(), &c).unwrap();
    let nurls = f.nurls().unwrap();
    assert_eq!(nurls.len(), 2);
    let tor = crate::grid::furl::Nurl::parse(&nurls[0]).unwrap();
    assert_eq!(tor.scheme(), crate::grid::furl::NurlScheme::PbTor);
    assert_eq!(tor.host(), onion);
    assert_eq!(tor.port(), 80);
    assert_eq!(tor.swissnum(), f.swissnum());
    assert!(nurls[1].starts_with("pb://"));
    assert!(nurls[1].contains("@b.example:9/"));
}

/// `[tor] onion = true`: the key file's address is announced as a `pb+tor://` NURL, added to
/// `tub.location` when no hint names it, and is the same on every load.
#[cfg(feature = "tor")]
#[test]
fn onion_hosting_announces_the_key_files_address() {
    let dir = tempfile::tempdir().unwrap();
    let c = NodeConfig::parse(
        "[node]\ntub.port = tcp:9:interface=127.0.0.1\ntub.location = tcp:127.0.0.1:9\n\
         [storage]\nenabled = true\n[tor]\nonion = true\nonion.external_port = 3457\n",
    )
    .unwrap();
    // Never run: the key is missing and `load` does not create it.
    assert!(NodeFiles::load(dir.path(), &c).is_err());
    let f = NodeFiles::ensure(dir.path(), &c).unwrap();
    let key = super::onion::OnionKey::load_or_create(
        &dir.path().join("private/tor_onion.privkey"),
        false,
    )
    .unwrap();
    let onion = key.onion_address();
    assert_eq!(
        f.location_hints,
        ["tcp:127.0.0.1:9".to_string(), format!("tor:{onion}:3457")]
    );
    let nurls = f.nurls().unwrap();
    let tor = crate::grid::furl::Nurl::parse(&nurls[1]).unwrap();
    assert_eq!(tor.scheme(), crate::grid::furl::NurlScheme::PbTor);
    assert_eq!(tor.host(), onion);
    assert_eq!(tor.port(), 3457);
    assert!(f.furl().contains(&format!(",tor:{onion}:3457/")));
    assert_eq!(f.onion.as_ref().unwrap().external_port, 3457);
    // Reloaded: the same address, the hint not duplicated.
    let g = NodeFiles::load(dir.path(), &c).unwrap();
    assert_eq!(g.location_hints, f.location_hints);
    // A tub.location that names the address already (Tahoe's create-node) is kept as is.
    let c2 = NodeConfig::parse(&format!(
        "[node]\ntub.port = tcp:9:interface=127.0.0.1\ntub.location = tor:{}:3457\n\
         [storage]\nenabled = true\n[tor]\nonion = true\nonion.external_port = 3457\n",
        onion.to_ascii_uppercase()
    ))
    .unwrap();
    let h = NodeFiles::load(dir.path(), &c2).unwrap();
    assert_eq!(h.location_hints.len(), 1);
}

#[cfg(feature = "tor")]
#[test]
fn create_node_listen_tor_writes_tahoes_onion_section() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("n");
    let opts = CreateOptions {
        webport: Some("none".into()),
        onion: true,
        ..Default::default()
    };
    let f = nodedir::create_node(&d, &opts).unwrap();
    let node = crate::config::NodeDir::load(&d).unwrap();
    let tor = crate::config::tor::TorOptions::from_ini(&node.config.ini).unwrap();
    let onion = tor.onion.unwrap();
    assert_eq!(onion.external_port, 3457);
    assert_eq!(onion.private_key_file, "private/tor_onion.privkey");
    let local = onion.local_port.unwrap();
    assert_eq!(
        node.config.node.tub_port.as_deref(),
        Some(format!("tcp:{local}:interface=127.0.0.1").as_str())
    );
    let text = std::fs::read_to_string(d.join("private/tor_onion.privkey")).unwrap();
    let key = super::onion::OnionKey::parse_tahoe(&text).unwrap();
    assert_eq!(
        f.location_hints,
        [format!("tor:{}:3457", key.onion_address())]
    );
    assert!(f.nurls().unwrap()[0].starts_with("pb+tor://"));
}

#[cfg(not(feature = "tor"))]
#[test]
fn onion_hosting_needs_the_tor_feature() {
    let dir = tempfile::tempdir().unwrap();
    let c = NodeConfig::parse(
        "[node]\ntub.port = tcp:9\ntub.location = tcp:a:9\n[storage]\nenabled = true\n\
         [tor]\nonion = true\nonion.external_port = 3457\n",
    )
    .unwrap();
    assert!(matches!(
        NodeFiles::ensure(dir.path(), &c),
        Err(nodedir::NodeDirError::OnionNeedsTor)
    ));
}

#[test]
fn load_refuses_a_node_never_run() {
    let dir = tempfile::tempdir().unwrap();
    let c = cfg("tub.port = tcp:9\ntub.location = tcp:a:9");
    assert!(NodeFiles::load(dir.path(), &c).is_err());
    assert!(!dir.path().join("private/node.pem").exists());
}

#[test]
fn create_node_writes_parseable_cfg() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("n");
    let opts = CreateOptions {
        nickname: Some("nick".into()),
        port: Some("tcp:4567:interface=127.0.0.1".into()),
        location: Some("tcp:127.0.0.1:4567".into()),
        webport: Some("none".into()),
        ..Default::default()
    };
    nodedir::create_node(&d, &opts).unwrap();
    let node = crate::config::NodeDir::load(&d).unwrap();
    assert!(node.config.storage_enabled);
    // private/ holds the key and secrets: the owner's only, as Tahoe makes it.
    let mode = |p: &std::path::Path| {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    };
    assert_eq!(mode(&d.join("private")), 0o700);
    assert_eq!(mode(&d.join("private/node.pem")), 0o600);
    assert_eq!(node.config.node.nickname, "nick");
    assert_eq!(
        node.config.node.tub_port.as_deref(),
        Some("tcp:4567:interface=127.0.0.1")
    );
    // Tahoe's create-node default.
    assert_eq!(node.config.storage.unwrap().reserved_space, 1_000_000_000);
    // Injection into tahoe.cfg is refused.
    let bad = CreateOptions {
        nickname: Some("x\n[storage]\nenabled = false".into()),
        hostname: Some("h".into()),
        ..Default::default()
    };
    assert!(nodedir::create_node(&dir.path().join("m"), &bad).is_err());
}

#[test]
fn ensure_private_dir_makes_0700_and_leaves_an_existing_ones_mode() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let fresh = dir.path().join("a/b");
    let p = nodedir::ensure_private_dir(&fresh).unwrap();
    assert_eq!(p, fresh.join("private"));
    assert_eq!(
        std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
        0o700
    );
    let old = dir.path().join("old");
    std::fs::create_dir_all(old.join("private")).unwrap();
    std::fs::set_permissions(old.join("private"), std::fs::Permissions::from_mode(0o750)).unwrap();
    nodedir::ensure_private_dir(&old).unwrap();
    assert_eq!(
        std::fs::metadata(old.join("private"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o750
    );
}

#[test]
fn store_errors_map_to_tahoe_statuses() {
    assert_eq!(
        map_store_error(StoreError::NotFound),
        BackendError::NotFound
    );
    assert_eq!(
        map_store_error(StoreError::BadWriteEnabler),
        BackendError::BadWriteEnabler
    );
    assert_eq!(
        map_store_error(StoreError::ConflictingWrite(0..1)),
        BackendError::Conflict
    );
    assert_eq!(
        map_store_error(StoreError::AlreadyComplete),
        BackendError::NotAllowed
    );
    assert_eq!(
        map_store_error(StoreError::OutOfBounds {
            offset: 1,
            len: 2,
            allocated: 2
        }),
        BackendError::OutOfBounds
    );
    // Internal errors carry a fixed text, never the OS message (which may hold paths).
    let e = map_store_error(StoreError::Io(std::io::Error::other("/secret/path")));
    assert_eq!(e, BackendError::Internal("I/O error".into()));
}

fn backend() -> (tempfile::TempDir, DiskBackend) {
    let dir = tempfile::tempdir().unwrap();
    let store = DiskStore::open(StoreConfig::new(dir.path().join("storage"), [3; 20])).unwrap();
    (dir, DiskBackend::new(Arc::new(store)))
}

fn lease() -> LeaseSecrets {
    LeaseSecrets {
        renew: [1; 32],
        cancel: [2; 32],
    }
}

#[test]
fn adapter_immutable_roundtrip_and_read_cap() {
    let (_d, b) = backend();
    let si = [9u8; 16];
    let size = MAX_READ_CHUNK + 10;
    let a = b
        .allocate_buckets(&si, &lease(), &BTreeSet::from([2u8]), size)
        .unwrap();
    assert_eq!(a.allocated, BTreeSet::from([2u8]));
    let data: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
    let o = b.write(&si, 2, 0, &data[..100]).unwrap();
    assert!(!o.complete);
    assert_eq!(o.required.len(), 1);
    assert_eq!((o.required[0].begin, o.required[0].end), (100, size));
    assert_eq!(b.write(&si, 2, 0, b"x"), Err(BackendError::Conflict));
    assert!(b.write(&si, 2, 100, &data[100..]).unwrap().complete);
    let r = b.read_immutable(&si, 2, 0, u64::MAX).unwrap();
    assert_eq!(r.share_length, size);
    assert_eq!(r.data.len() as u64, MAX_READ_CHUNK, "one read is capped");
    assert_eq!(r.data[..], data[..MAX_READ_CHUNK as usize]);
    // Abort of a complete share: NotFound (the server answers 405 after listing it).
    assert_eq!(b.abort(&si, 2), Err(BackendError::NotFound));
    assert_eq!(b.list_immutable(&si).unwrap(), BTreeSet::from([2u8]));
    assert_eq!(b.read_immutable(&si, 3, 0, 1), Err(BackendError::NotFound));
    b.add_lease(&si, &lease()).unwrap();
    assert_eq!(b.add_lease(&[0; 16], &lease()), Err(BackendError::NotFound));
}

#[test]
fn adapter_mutable_bounds() {
    let (_d, b) = backend();
    let si = [4u8; 16];
    let we = [5u8; 32];
    let write = |n: u8, data: Vec<u8>| ReadTestWriteRequest {
        test_write_vectors: BTreeMap::from([(
            n,
            TestWriteVectors {
                test: vec![],
                write: vec![WriteVector { offset: 0, data }],
                new_length: None,
            },
        )]),
        read_vector: vec![],
    };
    assert!(
        b.read_test_write(&si, &we, &lease(), &write(0, vec![1; 1000]))
            .unwrap()
            .success
    );
    // The write enabler must be 32 bytes.
    assert_eq!(
        b.read_test_write(&si, &we[..31], &lease(), &write(0, vec![1]))
            .unwrap_err(),
        BackendError::BadWriteEnabler
    );
    assert_eq!(
        b.read_test_write(&si, &[6; 32], &lease(), &write(0, vec![1]))
            .unwrap_err(),
        BackendError::BadWriteEnabler
    );
    // Huge read vectors are fine when the shares are small (bounded by what exists) ...
    let mut req = write(0, vec![2; 10]);
    req.read_vector = vec![
        ReadVector {
            offset: 0,
            size: u64::MAX
        };
        30
    ];
    let r = b.read_test_write(&si, &we, &lease(), &req).unwrap();
    assert_eq!(r.data[&0].len(), 30);
    assert_eq!(r.data[&0][0].len(), 1000);
    // ... but not when the shares would make the response too large.
    let big = (MAX_RTW_READ_BYTES / 10 + 1) as usize;
    assert!(
        b.read_test_write(&si, &we, &lease(), &write(1, vec![3; big]))
            .unwrap()
            .success
    );
    let mut req = write(0, vec![2; 10]);
    req.read_vector = vec![
        ReadVector {
            offset: 0,
            size: u64::MAX
        };
        10
    ];
    assert_eq!(
        b.read_test_write(&si, &we, &lease(), &req).unwrap_err(),
        BackendError::OutOfBounds
    );
    let r = b.read_mutable(&si, 1, 0, u64::MAX).unwrap();
    assert_eq!(r.share_length, big as u64);
    assert_eq!(r.data.len() as u64, MAX_READ_CHUNK);
}
