//! Protocol tests: SPKI pin vectors, CBOR golden bytes, and our client against our server over
//! loopback TLS with the in-memory backend.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use lafs::protocol::client::{ClientError, ClientOptions, StorageClient};
use lafs::protocol::memory::MemoryBackend;
use lafs::protocol::messages::*;
use lafs::protocol::server::{serve, ServerLimits, StorageServer};
use lafs::protocol::tls::{cert_pin, cert_spki_der, NodeIdentity};
use lafs::protocol::LeaseSecrets;

fn vectors_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("LAFS_VECTORS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/vectors"));
    let file = dir.join("tahoe-spki-hash-test-vectors.yaml");
    if file.exists() {
        return Some(file);
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("SPKI vectors missing at {}", file.display());
    }
    eprintln!("SPKI vectors not found at {}; skipping", file.display());
    None
}

#[test]
fn spki_pin_vectors() {
    use base64::Engine as _;
    let Some(file) = vectors_dir() else { return };
    let text = std::fs::read_to_string(file).unwrap();
    let doc: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    let vectors = doc["vector"].as_sequence().unwrap();
    assert!(!vectors.is_empty());
    for v in vectors {
        let pem = v["certificate"].as_str().unwrap();
        let der = rustls_pki_types_der(pem);
        let spki = base64::engine::general_purpose::STANDARD
            .decode(v["expected-spki"].as_str().unwrap().trim())
            .unwrap();
        assert_eq!(cert_spki_der(&der).unwrap(), spki);
        assert_eq!(
            cert_pin(&der).unwrap(),
            v["expected-hash"].as_str().unwrap().trim()
        );
    }
}

fn rustls_pki_types_der(pem: &str) -> Vec<u8> {
    use base64::Engine as _;
    let b64: String = pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .map(str::trim)
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap()
}

// ----- CBOR golden bytes (hand-assembled from RFC 8949, not from our encoder) --------------

#[test]
fn golden_allocate_request() {
    // {"share-numbers": 258([1, 7]), "allocated-size": 1000}
    let mut want = vec![0xa2, 0x6d];
    want.extend_from_slice(b"share-numbers");
    want.extend_from_slice(&[0xd9, 0x01, 0x02, 0x82, 0x01, 0x07, 0x6e]);
    want.extend_from_slice(b"allocated-size");
    want.extend_from_slice(&[0x19, 0x03, 0xe8]);
    let msg = AllocateRequest {
        share_numbers: [1, 7].into_iter().collect(),
        allocated_size: 1000,
    };
    assert_eq!(msg.to_cbor(), want);
    assert_eq!(AllocateRequest::from_cbor(&want).unwrap(), msg);
    // Without tag 258 the set is refused (pycddl does the same).
    let mut untagged = want.clone();
    let pos = untagged
        .windows(3)
        .position(|w| w == [0xd9, 0x01, 0x02])
        .unwrap();
    untagged.drain(pos..pos + 3);
    assert!(AllocateRequest::from_cbor(&untagged).is_err());
}

#[test]
fn golden_share_list_and_strictness() {
    assert_eq!(
        ShareList(BTreeSet::new()).to_cbor(),
        [0xd9, 0x01, 0x02, 0x80]
    );
    assert_eq!(
        ShareList::from_cbor(&[0xd9, 0x01, 0x02, 0x82, 0x00, 0x18, 0xff])
            .unwrap()
            .0,
        [0u8, 255].into_iter().collect()
    );
    // 256 is not a share number; an untagged array and trailing bytes are refused.
    assert!(ShareList::from_cbor(&[0xd9, 0x01, 0x02, 0x81, 0x19, 0x01, 0x00]).is_err());
    assert!(ShareList::from_cbor(&[0x80]).is_err());
    assert!(ShareList::from_cbor(&[0xd9, 0x01, 0x02, 0x80, 0x00]).is_err());
    // {"reason": "x", "extra": 1}: extra key refused; {"reason": "x"} accepted.
    let mut ok = vec![0xa1, 0x66];
    ok.extend_from_slice(b"reason");
    ok.extend_from_slice(&[0x61, b'x']);
    assert_eq!(CorruptRequest::from_cbor(&ok).unwrap().reason, "x");
    let mut extra = ok.clone();
    extra[0] = 0xa2;
    extra.extend_from_slice(&[0x65]);
    extra.extend_from_slice(b"extra");
    extra.push(0x01);
    assert!(CorruptRequest::from_cbor(&extra).is_err());
    // Empty reason refused.
    let mut empty = vec![0xa1, 0x66];
    empty.extend_from_slice(b"reason");
    empty.push(0x60);
    assert!(CorruptRequest::from_cbor(&empty).is_err());
}

#[test]
fn golden_version_bytes_keys() {
    // Byte-string keys (major type 2), as the Python server sends them.
    let bkey = |s: &str| {
        // Major type 2: lengths below 24 fit the initial byte, others take one extra byte.
        let mut v = if s.len() < 24 {
            vec![0x40 | s.len() as u8]
        } else {
            vec![0x58, s.len() as u8]
        };
        v.extend_from_slice(s.as_bytes());
        v
    };
    let mut want = vec![0xa2];
    want.extend(bkey("http://allmydata.org/tahoe/protocols/storage/v1"));
    want.push(0xa3);
    want.extend(bkey("maximum-immutable-share-size"));
    want.extend_from_slice(&[0x0a]);
    want.extend(bkey("maximum-mutable-share-size"));
    want.extend_from_slice(&[0x0b]);
    want.extend(bkey("available-space"));
    want.extend_from_slice(&[0x0c]);
    want.extend(bkey("application-version"));
    want.extend_from_slice(&[0x43, b'a', b'/', b'1']);
    let v = VersionInfo::from_cbor(&want).unwrap();
    assert_eq!(v.maximum_immutable_share_size, 10);
    assert_eq!(v.maximum_mutable_share_size, 11);
    assert_eq!(v.available_space, 12);
    assert_eq!(v.application_version, b"a/1");
    assert_eq!(v.to_cbor(), want);
    // The same map with a text key is refused.
    let mut texty = want.clone();
    let pos = texty.iter().position(|b| *b == 0x53).unwrap();
    texty[pos] = 0x73;
    assert!(VersionInfo::from_cbor(&texty).is_err());
}

// ----- loopback ------------------------------------------------------------------------------

fn identity() -> &'static NodeIdentity {
    static ID: OnceLock<NodeIdentity> = OnceLock::new();
    ID.get_or_init(|| NodeIdentity::generate().unwrap())
}

const SWISSNUM: &str = "eiu2i7p6d6mm4ihmss7ieou5hac3wn6b";

struct Fixture {
    nurl: String,
    backend: Arc<MemoryBackend>,
    addr: std::net::SocketAddr,
    _server: lafs::protocol::server::RunningServer,
}

async fn start() -> Fixture {
    let id = identity();
    let backend = Arc::new(MemoryBackend::new(1 << 30));
    let server = Arc::new(StorageServer::new(
        backend.clone(),
        SWISSNUM,
        ServerLimits::default(),
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let running = serve(listener, id.server_config().unwrap(), server).unwrap();
    let addr = running.local_addr;
    Fixture {
        nurl: format!(
            "pb://{}@127.0.0.1:{}/{SWISSNUM}#v=1",
            id.pin().unwrap(),
            addr.port()
        ),
        backend,
        addr,
        _server: running,
    }
}

fn lease() -> LeaseSecrets {
    LeaseSecrets {
        renew: [1; 32],
        cancel: [2; 32],
    }
}

#[test]
fn generated_identity_roundtrips_pem() {
    let id = identity();
    let pem = id.to_pem();
    assert!(pem.starts_with("-----BEGIN CERTIFICATE-----\n"));
    assert!(pem.contains("-----BEGIN PRIVATE KEY-----\n"));
    let back = NodeIdentity::from_pem(pem.as_bytes()).unwrap();
    assert_eq!(back.cert_der(), id.cert_der());
    assert_eq!(back.tub_id().len(), 32);
    // X.509 v1: the TBSCertificate starts with the serial INTEGER, not an [0] version tag.
    let der = id.cert_der();
    let tbs_hdr = if der[1] == 0x82 { 4 } else { 3 };
    let tbs = &der[tbs_hdr..];
    let inner = if tbs[1] == 0x82 { 4 } else { 3 };
    assert_eq!(
        tbs[inner], 0x02,
        "TBSCertificate must begin with the serial number"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loopback_every_endpoint() {
    let f = start().await;
    let c = StorageClient::new(&f.nurl, ClientOptions::default()).unwrap();
    let v = c.version().await.unwrap();
    assert_eq!(v.available_space, 1 << 30);

    let si = [7u8; 16];
    let up = b"upload-secret-20byte";
    let shares: BTreeSet<u8> = [0, 3].into_iter().collect();
    let a = c
        .allocate_buckets(&si, &lease(), up, &shares, 10)
        .await
        .unwrap();
    assert_eq!(a.allocated, shares);
    assert!(a.already_have.is_empty());

    let p = c
        .write_share_chunk(&si, 0, up, 0, Bytes::from_static(b"hello"))
        .await
        .unwrap();
    assert!(!p.finished);
    assert_eq!(p.required, vec![RequiredRange { begin: 5, end: 10 }]);
    // Wrong upload secret: 401.
    match c
        .write_share_chunk(&si, 0, b"other", 5, Bytes::from_static(b"x"))
        .await
    {
        Err(ClientError::Status { status: 401, .. }) => {}
        other => panic!("{other:?}"),
    }
    // Conflicting overwrite: 409.
    match c
        .write_share_chunk(&si, 0, up, 0, Bytes::from_static(b"J"))
        .await
    {
        Err(ClientError::Status { status: 409, .. }) => {}
        other => panic!("{other:?}"),
    }
    let p = c
        .write_share_chunk(&si, 0, up, 5, Bytes::from_static(b"world"))
        .await
        .unwrap();
    assert!(p.finished);
    assert!(p.required.is_empty());
    // Writing a finished share: 404 (no upload in progress).
    assert!(matches!(
        c.write_share_chunk(&si, 0, up, 0, Bytes::from_static(b"h"))
            .await,
        Err(ClientError::NotFound { .. })
    ));
    // Abort: share 0 is complete (405), share 3 in progress (200), then unknown (404).
    assert!(matches!(
        c.abort_upload(&si, 0, up).await,
        Err(ClientError::Status { status: 405, .. })
    ));
    c.abort_upload(&si, 3, up).await.unwrap();
    assert!(matches!(
        c.abort_upload(&si, 3, up).await,
        Err(ClientError::NotFound { .. })
    ));

    assert_eq!(
        c.list_immutable_shares(&si).await.unwrap(),
        [0].into_iter().collect()
    );
    assert_eq!(
        &c.read_immutable_share(&si, 0, 0, 10).await.unwrap()[..],
        b"helloworld"
    );
    assert_eq!(
        &c.read_immutable_share(&si, 0, 3, 4).await.unwrap()[..],
        b"lowo"
    );
    // Past the end: shorter (206), then empty (204).
    assert_eq!(
        &c.read_immutable_share(&si, 0, 8, 100).await.unwrap()[..],
        b"ld"
    );
    assert!(c
        .read_immutable_share(&si, 0, 10, 5)
        .await
        .unwrap()
        .is_empty());
    assert!(matches!(
        c.read_immutable_share(&si, 1, 0, 5).await,
        Err(ClientError::NotFound { .. })
    ));
    let again = c
        .allocate_buckets(&si, &lease(), up, &shares, 10)
        .await
        .unwrap();
    assert_eq!(again.already_have, [0].into_iter().collect());
    assert_eq!(again.allocated, [3].into_iter().collect());

    c.advise_corrupt_immutable(&si, 0, "bad hash")
        .await
        .unwrap();
    assert!(matches!(
        c.advise_corrupt_immutable(&si, 9, "bad").await,
        Err(ClientError::NotFound { .. })
    ));
    assert_eq!(f.backend.advisories().len(), 1);

    // Mutable.
    let msi = [9u8; 16];
    let we = [5u8; 32];
    let mut req = ReadTestWriteRequest::default();
    req.test_write_vectors.insert(
        2,
        TestWriteVectors {
            test: vec![TestVector {
                offset: 0,
                size: 1,
                specimen: vec![],
            }],
            write: vec![WriteVector {
                offset: 0,
                data: b"mutable!".to_vec(),
            }],
            new_length: None,
        },
    );
    req.read_vector = vec![ReadVector { offset: 0, size: 3 }];
    let r = c.read_test_write(&msi, &we, &lease(), &req).await.unwrap();
    assert!(r.success);
    assert!(r.data.is_empty());
    let r = c.read_test_write(&msi, &we, &lease(), &req).await.unwrap();
    assert!(
        !r.success,
        "the create-if-absent test fails once the share exists"
    );
    assert_eq!(r.data, BTreeMap::from([(2u8, vec![b"mut".to_vec()])]));
    match c.read_test_write(&msi, &[6u8; 32], &lease(), &req).await {
        Err(ClientError::Status { status: 401, .. }) => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(
        &c.read_mutable_share(&msi, 2, 0, 100).await.unwrap()[..],
        b"mutable!"
    );
    assert_eq!(
        c.list_mutable_shares(&msi).await.unwrap(),
        [2].into_iter().collect()
    );
    c.advise_corrupt_mutable(&msi, 2, "sig").await.unwrap();

    // Leases.
    let before = f.backend.lease_count(&si);
    c.add_or_renew_lease(&si, &lease()).await.unwrap();
    assert_eq!(f.backend.lease_count(&si), before + 1);
    c.add_or_renew_lease(&msi, &lease()).await.unwrap();
    assert!(matches!(
        c.add_or_renew_lease(&[0u8; 16], &lease()).await,
        Err(ClientError::NotFound { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_pin_and_wrong_swissnum() {
    let f = start().await;
    let other_pin = "JIj6ezHkdSBlHhrnezAgIC_mrVQHy4KAFyL-8ZNPGPM";
    let nurl = format!(
        "pb://{other_pin}@127.0.0.1:{}/{SWISSNUM}#v=1",
        f.addr.port()
    );
    let c = StorageClient::new(&nurl, ClientOptions::default()).unwrap();
    let err = c.version().await.unwrap_err().to_string();
    assert!(err.contains("pin mismatch"), "{err}");
    assert!(err.contains(other_pin), "{err}");
    assert!(!err.contains(SWISSNUM));

    let bad = f.nurl.replace(SWISSNUM, "wrongswissnum");
    let c = StorageClient::new(&bad, ClientOptions::default()).unwrap();
    match c.version().await {
        Err(ClientError::Status { status: 401, .. }) => {}
        other => panic!("{other:?}"),
    }
}

/// Raw HTTP over the pinned TLS config, to check statuses our client never provokes.
async fn raw(f: &Fixture, req: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let pin = identity().pin().unwrap();
    let cfg = lafs::protocol::tls::client_config(pin).unwrap();
    let tcp = tokio::net::TcpStream::connect(f.addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(cfg)
        .connect(name, tcp)
        .await
        .unwrap();
    tls.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        tls.read_to_end(&mut out),
    )
    .await;
    let text = String::from_utf8_lossy(&out).to_string();
    let code = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    (code, text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_statuses() {
    let f = start().await;
    let auth = lafs::protocol::authorization_value(SWISSNUM.as_bytes());
    let si = "aaaaaaaaaaaaaaaaaaaaaaaaaa";
    let get = |path: &str, extra: &str| {
        format!("GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\n{extra}Connection: close\r\n\r\n")
    };
    assert_eq!(raw(&f, &get("/storage/v1/version", "")).await.0, 200);
    assert_eq!(
        raw(&f, &get("/storage/v1/version", "Accept: */*\r\n"))
            .await
            .0,
        406
    );
    assert_eq!(
        raw(
            &f,
            &get(
                "/storage/v1/version",
                "Accept: application/json, application/cbor\r\n"
            )
        )
        .await
        .0,
        406
    );
    assert_eq!(
        raw(
            &f,
            &get(
                "/storage/v1/version",
                "Accept: */*;q=0.5, application/cbor\r\n"
            )
        )
        .await
        .0,
        200
    );
    assert_eq!(raw(&f, &get("/storage/v1/nothing", "")).await.0, 404);
    assert_eq!(
        raw(
            &f,
            &get(
                "/storage/v1/immutable/AAAAAAAAAAAAAAAAAAAAAAAAAA/shares",
                ""
            )
        )
        .await
        .0,
        404
    );
    let put = format!("PUT /storage/v1/version HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    assert_eq!(raw(&f, &put).await.0, 405);
    let noauth = "GET /storage/v1/version HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    assert_eq!(raw(&f, noauth).await.0, 401);
    // A secret on an endpoint that takes none: 400.
    let extra = "X-Tahoe-Authorization: upload-secret AAAA\r\n";
    assert_eq!(raw(&f, &get("/storage/v1/version", extra)).await.0, 400);
    // Lease with one of two secrets, or a comma-joined line: 400.
    let b32 = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=";
    let lease_req = |secrets: &str| {
        format!("PUT /storage/v1/lease/{si} HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\n{secrets}Content-Length: 0\r\nConnection: close\r\n\r\n")
    };
    let one = format!("X-Tahoe-Authorization: lease-renew-secret {b32}\r\n");
    assert_eq!(raw(&f, &lease_req(&one)).await.0, 400);
    let joined =
        format!("X-Tahoe-Authorization: lease-renew-secret {b32}, lease-cancel-secret {b32}\r\n");
    assert_eq!(raw(&f, &lease_req(&joined)).await.0, 400);
    let both = format!("{one}X-Tahoe-Authorization: lease-cancel-secret {b32}\r\n");
    assert_eq!(raw(&f, &lease_req(&both)).await.0, 404);
    // Allocate with a JSON body type: 415; with a bad CBOR body: 400.
    let alloc = |ct: &str, body: &str| {
        format!("POST /storage/v1/immutable/{si} HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\n{both}X-Tahoe-Authorization: upload-secret AAAA\r\n{ct}Content-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len())
    };
    assert_eq!(
        raw(&f, &alloc("Content-Type: application/json\r\n", "{}"))
            .await
            .0,
        415
    );
    assert_eq!(raw(&f, &alloc("", "\u{1}")).await.0, 400);
    // Reads: bad ranges are 416.
    let c = StorageClient::new(&f.nurl, ClientOptions::default()).unwrap();
    let sib = lafs::protocol::si_from_path(si).unwrap();
    c.allocate_buckets(&sib, &lease(), b"u", &[0].into_iter().collect(), 4)
        .await
        .unwrap();
    c.write_share_chunk(&sib, 0, b"u", 0, Bytes::from_static(b"abcd"))
        .await
        .unwrap();
    let path = format!("/storage/v1/immutable/{si}/0");
    for bad in [
        "Range: bytes=0-\r\n",
        "Range: bytes=0-1,3-4\r\n",
        "Range: items=0-1\r\n",
        "Range: bytes=-2\r\n",
    ] {
        assert_eq!(raw(&f, &get(&path, bad)).await.0, 416, "{bad}");
    }
    let (code, text) = raw(&f, &get(&path, "Range: bytes=1-2\r\n")).await;
    assert_eq!(code, 206);
    assert!(
        text.to_ascii_lowercase()
            .contains("content-range: bytes 1-2/*"),
        "{text}"
    );
    let (code, text) = raw(&f, &get(&path, "")).await;
    assert_eq!(code, 200);
    assert!(text.ends_with("abcd"));
    // PATCH without Content-Range: 416.
    let patch = format!("PATCH {path} HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\nX-Tahoe-Authorization: upload-secret AAAA\r\nContent-Length: 1\r\nConnection: close\r\n\r\nx");
    assert_eq!(raw(&f, &patch).await.0, 416);
}

/// Reads larger than the server's per-call read size (1 MiB) are streamed in several pieces;
/// the client must get exactly the requested bytes, whatever the chunk boundaries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_reads_stream_across_server_chunks() {
    let f = start().await;
    let c = StorageClient::new(&f.nurl, ClientOptions::default()).unwrap();
    let si = [9u8; 16];
    let up = b"upload-secret-large!";
    // 2.5 MiB + 7 bytes of an xorshift stream (independent of the code under test).
    let len = (5 << 19) + 7;
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let data: Vec<u8> = (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect();
    let shares: BTreeSet<u8> = [0].into_iter().collect();
    c.allocate_buckets(&si, &lease(), up, &shares, len as u64)
        .await
        .unwrap();
    let mut last = None;
    for (i, part) in data.chunks(1 << 20).enumerate() {
        let off = (i << 20) as u64;
        last = Some(
            c.write_share_chunk(&si, 0, up, off, Bytes::copy_from_slice(part))
                .await
                .unwrap(),
        );
    }
    assert!(last.unwrap().finished);
    let whole = c.read_immutable_share(&si, 0, 0, len as u64).await.unwrap();
    assert!(whole[..] == data[..], "whole share");
    for (off, n) in [
        (1u64 << 20, 1u64 << 20),
        ((1 << 20) - 3, (1 << 20) + 6),
        (5, (2 << 20) + 1),
        (len as u64 - 10, 100),
    ] {
        let got = c.read_immutable_share(&si, 0, off, n).await.unwrap();
        let end = (off + n).min(len as u64) as usize;
        assert!(got[..] == data[off as usize..end], "range {off}+{n}");
    }
}
