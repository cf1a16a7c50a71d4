//! Interop: mutable files (SDMF, MDMF) and directories exchanged with real Tahoe-LAFS 1.20 as
//! share files on its storage servers' disks (the network client comes later).
//!
//! One loopback grid (tests/interop/tahoe_grid.py; 4 servers, one client with 3-of-10), started
//! once for the whole test:
//!
//! (a) Tahoe -> lafs. Tahoe's web API creates SDMF and MDMF files (0 B, 1000 B, and a 3-segment
//!     300000 B MDMF file) and an SDMF and an MDMF directory with CHK, LIT, mutable, directory
//!     and non-ASCII-named children with metadata (stored verbatim by `t=mkdir-with-children`,
//!     through `update_metadata` by `t=set_children` and `PUT /uri/DIR/name`). Each share file is
//!     read from `storage/shares/<si[:2]>/<si>/<shnum>` and its mutable container checked against
//!     the digest (§7: v2 magic, the server's nodeid, the write enabler derived from the writekey,
//!     one owner-1 lease with BLAKE2b-hashed secrets derived from the client's lease secret); the
//!     share data is loaded into [`MemoryServer`]s and our `retrieve` must return exactly the
//!     bytes Tahoe was given. Directories are unpacked by our dirnode code (with and without the
//!     writekey) and compared with Tahoe's `GET /uri/DIRCAP?t=json`: names, caps, metadata.
//! (b) lafs -> Tahoe. Our `publish` creates an SDMF file, a 300000 B MDMF file and an SDMF
//!     directory (built and packed by our dirnode code) with the grid's k/N; each share is wrapped
//!     in a v2 mutable container written by this test ([`write_tahoe_mutable_container_v2`]) and
//!     placed on the server our publish chose. Tahoe must read our bytes (`GET /uri/CAP`), list
//!     our directory identically, and overwrite our SDMF file and modify our directory (which
//!     checks our write enablers and containers); we then read Tahoe's new versions back from the
//!     share files with our code.
//!
//! Needs the venv from `.ci/setup` (skips with a message without it, fails under CI=true).
//! Bounded: the grid start, every command and web request, and the shutdown have deadlines.

use crate::common;
use crate::common::grid;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use blake2::{Blake2b, Digest};
use grid::{ClientSpec, Grid, ServerInfo};
use lafs::cap::{Cap, MutableFormat, MutableWriteCap, NodeCap};
use lafs::crypto::hash;
use lafs::dirnode::{Child, DirKind, Directory, Metadata};
use lafs::mutable::keys::{SigningKeyPair, WriterKeys};
use lafs::mutable::publish::{self, PublishParams};
use lafs::mutable::retrieve::{self, Retrieved};
use lafs::mutable::storage::{MemoryServer, MutableServer, TestWriteVectors, WriteSecrets};
use lafs::util::base32;
use serde_json::{json, Value};

const CLIENT: &str = "m";
const K: u8 = 3;
const N: u8 = 10;
const SERVERS: usize = 4;
const CMD_TIMEOUT: Duration = Duration::from_secs(120);
/// Only used for the grid's CHK uploads (the CHK child); Tahoe reads it at node start.
const SECRET: &[u8; 32] = b"lafs interop: mutable conv secr.";

// ---- the mutable container (digest §7), written independently of the library ----------------

const MAGIC_V2: &[u8; 32] = b"Tahoe mutable container v2\n\xc3\x55\x21\x99\x25";
const MAGIC_V1: &[u8; 32] = b"Tahoe mutable container v1\n\x75\x09\x44\x03\x8e";
const WE_NODEID_OFFSET: usize = 32;
const WE_OFFSET: usize = 52;
const DATA_LENGTH_OFFSET: usize = 84;
const EXTRA_LEASE_OFFSET_FIELD: usize = 92;
const LEASES_OFFSET: usize = 100;
const LEASE_SIZE: usize = 92;
const DATA_OFFSET: usize = 468;
/// Tahoe's mutable lease duration.
const LEASE_SECONDS: u64 = 31 * 24 * 3600;

#[derive(Clone, Debug, PartialEq, Eq)]
struct Lease {
    owner: u32,
    expiration: u32,
    renew_hashed: [u8; 32],
    cancel_hashed: [u8; 32],
    nodeid: [u8; 20],
}

impl Lease {
    fn to_bytes(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(LEASE_SIZE);
        b.extend_from_slice(&self.owner.to_be_bytes());
        b.extend_from_slice(&self.expiration.to_be_bytes());
        b.extend_from_slice(&self.renew_hashed);
        b.extend_from_slice(&self.cancel_hashed);
        b.extend_from_slice(&self.nodeid);
        b
    }

    fn parse(b: &[u8]) -> Option<Lease> {
        let owner = u32::from_be_bytes(b[0..4].try_into().unwrap());
        (owner != 0).then(|| Lease {
            owner,
            expiration: u32::from_be_bytes(b[4..8].try_into().unwrap()),
            renew_hashed: b[8..40].try_into().unwrap(),
            cancel_hashed: b[40..72].try_into().unwrap(),
            nodeid: b[72..92].try_into().unwrap(),
        })
    }
}

/// A parsed mutable container.
struct Container {
    nodeid: [u8; 20],
    write_enabler: [u8; 32],
    data: Vec<u8>,
    extra_lease_offset: usize,
    leases: Vec<Lease>,
}

fn be_u64(b: &[u8], off: usize) -> u64 {
    u64::from_be_bytes(b[off..off + 8].try_into().unwrap())
}

/// Parses a mutable container as Tahoe 1.20 reads it (panics with `what` on a malformed one).
fn parse_mutable_container(what: &str, file: &[u8]) -> Container {
    assert!(file.len() >= DATA_OFFSET + 4, "{what}: container too short");
    assert!(
        &file[..32] == MAGIC_V2,
        "{what}: not a v2 mutable container (v1: {})",
        &file[..32] == MAGIC_V1
    );
    let data_len = be_u64(file, DATA_LENGTH_OFFSET) as usize;
    let extra = be_u64(file, EXTRA_LEASE_OFFSET_FIELD) as usize;
    assert!(
        extra >= DATA_OFFSET + data_len,
        "{what}: extra-lease block overlaps the data"
    );
    assert!(file.len() >= extra + 4, "{what}: no extra-lease count");
    let mut leases: Vec<Lease> = (0..4)
        .filter_map(|i| {
            let o = LEASES_OFFSET + i * LEASE_SIZE;
            Lease::parse(&file[o..o + LEASE_SIZE])
        })
        .collect();
    let n_extra = u32::from_be_bytes(file[extra..extra + 4].try_into().unwrap()) as usize;
    for i in 0..n_extra {
        let o = extra + 4 + i * LEASE_SIZE;
        leases.extend(Lease::parse(&file[o..o + LEASE_SIZE]));
    }
    Container {
        nodeid: file[WE_NODEID_OFFSET..WE_NODEID_OFFSET + 20]
            .try_into()
            .unwrap(),
        write_enabler: file[WE_OFFSET..WE_OFFSET + 32].try_into().unwrap(),
        data: file[DATA_OFFSET..DATA_OFFSET + data_len].to_vec(),
        extra_lease_offset: extra,
        leases,
    }
}

/// Wraps mutable share data in a v2 container exactly as a Tahoe 1.20 server leaves it after the
/// first write of the whole share: header (magic, the server's nodeid, the write enabler, data
/// length, extra-lease offset = 468 + data length), lease slot 0 = `lease`, three empty slots,
/// the data, and an extra-lease count of 0.
///
/// Stand-in written for this test; replace it with the library's container writer once that
/// lands.
fn write_tahoe_mutable_container_v2(
    nodeid: &[u8; 20],
    write_enabler: &[u8; 32],
    data: &[u8],
    lease: &Lease,
) -> Vec<u8> {
    let mut f = Vec::with_capacity(DATA_OFFSET + data.len() + 4);
    f.extend_from_slice(MAGIC_V2);
    f.extend_from_slice(nodeid);
    f.extend_from_slice(write_enabler);
    f.extend_from_slice(&(data.len() as u64).to_be_bytes());
    f.extend_from_slice(&((DATA_OFFSET + data.len()) as u64).to_be_bytes());
    f.extend_from_slice(&lease.to_bytes());
    f.resize(DATA_OFFSET, 0); // slots 1..3 empty (owner 0)
    f.extend_from_slice(data);
    f.extend_from_slice(&0u32.to_be_bytes());
    f
}

/// BLAKE2b with a 32-byte digest and no key: how v2 containers store lease secrets.
fn blake2b_256(x: &[u8]) -> [u8; 32] {
    let mut h = Blake2b::<blake2::digest::consts::U32>::new();
    h.update(x);
    h.finalize().into()
}

/// The write enabler of `writekey` at server `nodeid`, derived here from the hash primitives
/// (digest §2: WEM = T(tag, writekey), WE = P(tag, WEM, nodeid)).
fn write_enabler(writekey: &[u8; 16], nodeid: &[u8; 20]) -> [u8; 32] {
    hash::ssk_write_enabler_hash(&hash::ssk_write_enabler_master_hash(writekey), nodeid)
}

/// The lease a client with `lease_secret` puts on server `nodeid` for `si`, secrets hashed.
fn expected_lease(lease_secret: &[u8], si: &[u8; 16], nodeid: &[u8; 20], expiration: u32) -> Lease {
    let frs = hash::file_renewal_secret_hash(&hash::my_renewal_secret_hash(lease_secret), si);
    let fcs = hash::file_cancel_secret_hash(&hash::my_cancel_secret_hash(lease_secret), si);
    Lease {
        owner: 1,
        expiration,
        renew_hashed: blake2b_256(&hash::bucket_renewal_secret_hash(&frs, nodeid)),
        cancel_hashed: blake2b_256(&hash::bucket_cancel_secret_hash(&fcs, nodeid)),
        nodeid: *nodeid,
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

// ---- share files on the grid ---------------------------------------------------------------

fn share_dir(server: &ServerInfo, si: &[u8; 16]) -> PathBuf {
    let si_b32 = base32::encode(si);
    server
        .storage_dir
        .join("shares")
        .join(&si_b32[..2])
        .join(&si_b32)
}

/// One share file as found on disk.
struct FoundShare {
    server: usize,
    shnum: u32,
    container: Container,
}

/// Every share of `si` on the grid's disks.
fn read_share_files(what: &str, servers: &[ServerInfo], si: &[u8; 16]) -> Vec<FoundShare> {
    let mut found = Vec::new();
    for (i, s) in servers.iter().enumerate() {
        let dir = share_dir(s, si);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries {
            let e = e.expect("read share dir");
            let name = e.file_name().to_string_lossy().into_owned();
            let Ok(shnum) = name.parse::<u32>() else {
                continue;
            };
            let file = std::fs::read(e.path()).expect("read share file");
            let container =
                parse_mutable_container(&format!("{what} sh{shnum} on {}", s.name), &file);
            assert_eq!(
                container.nodeid, s.nodeid,
                "{what} sh{shnum}: container nodeid = the server's own nodeid"
            );
            found.push(FoundShare {
                server: i,
                shnum,
                container,
            });
        }
    }
    found.sort_by_key(|f| (f.shnum, f.server));
    found
}

/// One [`MemoryServer`] per grid server (same node id) holding the share data of `shares`, each
/// under the write enabler its container records.
fn load_memory_servers(
    servers: &[ServerInfo],
    si: &[u8; 16],
    shares: &[FoundShare],
) -> Vec<MemoryServer> {
    let mem: Vec<MemoryServer> = servers
        .iter()
        .map(|s| MemoryServer::new(s.nodeid))
        .collect();
    for f in shares {
        let secrets = WriteSecrets {
            write_enabler: f.container.write_enabler,
            renew_secret: [0; 32],
            cancel_secret: [0; 32],
        };
        let mut tw = BTreeMap::new();
        tw.insert(
            f.shnum,
            TestWriteVectors {
                test: Vec::new(),
                write: vec![(0, f.container.data.clone())],
                new_length: None,
            },
        );
        let r = mem[f.server]
            .read_test_write(si, &secrets, &tw, &[])
            .expect("load share into memory server");
        assert!(r.success, "loading a share into an empty memory server");
    }
    mem
}

/// Reads the newest version of the mutable file `cap` from the share files with our code.
fn retrieve_from_disk(
    what: &str,
    servers: &[ServerInfo],
    cap: &MutableWriteCap,
) -> (Retrieved, Vec<FoundShare>) {
    let writer = WriterKeys::from_cap(cap);
    let si = writer.reader.storage_index;
    let shares = read_share_files(what, servers, &si);
    assert!(
        !shares.is_empty(),
        "{what}: no share files found for its storage index"
    );
    let mem = load_memory_servers(servers, &si, &shares);
    let refs: Vec<&dyn MutableServer> = mem.iter().map(|m| m as &dyn MutableServer).collect();
    let got = futures::executor::block_on(retrieve::retrieve(&refs, &writer.reader, None))
        .unwrap_or_else(|e| panic!("{what}: our retrieve failed: {e}"));
    assert!(
        got.problems.is_empty(),
        "{what}: our retrieve rejected shares: {:?}",
        got.problems
    );
    (got, shares)
}

/// The mutable write cap a file or directory write cap string wraps.
fn write_cap_of(cap: &str) -> MutableWriteCap {
    match Cap::parse(cap) {
        Cap::File(NodeCap::MutableWrite(c)) | Cap::Dir(NodeCap::MutableWrite(c)) => c,
        _ => panic!("not a mutable write cap (file or directory)"),
    }
}

// ---- plaintext, web API ----------------------------------------------------------------------

/// Deterministic, incompressible-looking plaintext (xorshift64*), different per `seed`.
fn plaintext(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 56) as u8
        })
        .collect()
}

/// `target` with every cap replaced by `<cap>`: caps are secrets, never printed.
fn redact(target: &str) -> String {
    let mut out = String::new();
    let mut rest = target;
    while let Some(i) = rest.find("URI:") {
        out.push_str(&rest[..i]);
        out.push_str("<cap>");
        rest = &rest[i..];
        let end = rest.find(['/', '?', '&']).unwrap_or(rest.len());
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// A web-API call that must succeed (2xx); returns the body as text. On failure the message
/// shows the request (caps redacted) and the end of Tahoe's answer, where its traceback is.
fn web(grid: &Grid, method: &str, target: &str, body: &[u8]) -> String {
    let r = grid.http(CLIENT, method, target, body, CMD_TIMEOUT);
    if !(200..300).contains(&r.status) {
        let text = r.text();
        let tail: String = text
            .chars()
            .skip(text.chars().count().saturating_sub(3000))
            .collect();
        panic!("{method} {}: HTTP {}: ...{tail}", redact(target), r.status);
    }
    r.text()
}

fn web_bytes(grid: &Grid, target: &str) -> Vec<u8> {
    let r = grid.http(CLIENT, "GET", target, b"", CMD_TIMEOUT);
    assert_eq!(
        r.status,
        200,
        "GET: {}",
        r.text().chars().take(2000).collect::<String>()
    );
    r.body
}

fn tahoe_json(grid: &Grid, cap: &str) -> Value {
    let text = web(grid, "GET", &format!("/uri/{cap}?t=json"), b"");
    serde_json::from_str(&text).expect("t=json is JSON")
}

fn utf8(b: Option<&[u8]>) -> Option<&str> {
    b.map(|b| std::str::from_utf8(b).expect("cap is UTF-8"))
}

/// Our unpacked directory must list exactly what Tahoe's `t=json` lists: the same child names,
/// the same write caps (only when `writeable`), read caps and metadata.
fn assert_same_listing(what: &str, ours: &Directory, tahoe: &Value, writeable: bool) {
    assert_eq!(tahoe[0], "dirnode", "{what}: t=json of a directory");
    let kids = tahoe[1]["children"].as_object().expect("children object");
    let our_names: Vec<&str> = ours.iter().map(|(n, _)| n).collect();
    let mut their_names: Vec<&str> = kids.keys().map(String::as_str).collect();
    their_names.sort_unstable();
    assert_eq!(our_names, their_names, "{what}: child names");
    for (name, child) in ours.iter() {
        let props = &kids[name][1];
        if writeable {
            assert_eq!(
                utf8(child.rw_uri()),
                props.get("rw_uri").and_then(Value::as_str),
                "{what}: write cap of {name:?}"
            );
        } else {
            assert!(
                child.rw_uri().is_none(),
                "{what}: read-only view has no write cap"
            );
        }
        assert_eq!(
            utf8(child.ro_uri()),
            props.get("ro_uri").and_then(Value::as_str),
            "{what}: read cap of {name:?}"
        );
        assert_eq!(
            &Value::Object(child.metadata.as_map().clone()),
            &props["metadata"],
            "{what}: metadata of {name:?}"
        );
    }
}

/// (a) for one directory: read it from the share files with our code and compare with Tahoe's
/// listing through the write cap and through the read cap. Returns the number of children.
fn check_tahoe_directory(grid: &Grid, servers: &[ServerInfo], what: &str, dircap: &str) -> usize {
    let wcap = write_cap_of(dircap);
    let (got, shares) = retrieve_from_disk(what, servers, &wcap);
    check_tahoe_containers(grid, what, &wcap, &shares);
    let rw = Directory::unpack(
        DirKind::Mutable {
            writekey: Some(wcap.writekey),
        },
        &got.data,
    )
    .unwrap_or_else(|e| panic!("{what}: our unpack failed: {e}"));
    assert_same_listing(what, &rw, &tahoe_json(grid, dircap), true);
    let ro = Directory::unpack(DirKind::Mutable { writekey: None }, &got.data)
        .unwrap_or_else(|e| panic!("{what}: our read-only unpack failed: {e}"));
    let rocap = Cap::parse(dircap)
        .readonly()
        .expect("dir has a read cap")
        .to_string();
    assert_same_listing(
        &format!("{what} (read-only)"),
        &ro,
        &tahoe_json(grid, &rocap),
        false,
    );
    rw.len()
}

/// Checks the containers Tahoe wrote for a fresh file: each of the N shares once, the write
/// enabler derived from the writekey, one lease of the client's.
fn check_tahoe_containers(grid: &Grid, what: &str, cap: &MutableWriteCap, shares: &[FoundShare]) {
    let shnums: Vec<u32> = shares.iter().map(|s| s.shnum).collect();
    assert_eq!(
        shnums,
        (0..u32::from(N)).collect::<Vec<_>>(),
        "{what}: N shares, each once"
    );
    let secret_b32 = std::fs::read_to_string(grid.client_dir(CLIENT).join("private/secret"))
        .expect("lease secret");
    let lease_secret = base32::decode(secret_b32.trim()).expect("lease secret is base32");
    let si = WriterKeys::from_cap(cap).reader.storage_index;
    let now = now_secs();
    for s in shares {
        let c = &s.container;
        assert_eq!(
            c.write_enabler,
            write_enabler(&cap.writekey, &c.nodeid),
            "{what} sh{}: write enabler",
            s.shnum
        );
        assert_eq!(
            c.extra_lease_offset,
            DATA_OFFSET + c.data.len(),
            "{what} sh{}: container sized to the data",
            s.shnum
        );
        assert_eq!(c.leases.len(), 1, "{what} sh{}: one lease", s.shnum);
        let l = &c.leases[0];
        let exp = u64::from(l.expiration);
        assert!(
            exp + 3600 > now + LEASE_SECONDS && exp < now + LEASE_SECONDS + 60,
            "{what} sh{}: lease runs 31 days",
            s.shnum
        );
        assert_eq!(
            l,
            &expected_lease(&lease_secret, &si, &c.nodeid, l.expiration),
            "{what} sh{}: lease (owner 1, BLAKE2b-hashed secrets derived from the client's)",
            s.shnum
        );
    }
}

fn md(v: Value) -> Metadata {
    match v {
        Value::Object(m) => Metadata::from_map(m),
        _ => panic!("metadata must be an object"),
    }
}

/// NFC: "é" is U+00E9, "ü" U+00FC.
const NON_ASCII_NAME: &str = "caf\u{e9} \u{fc}ber \u{65e5}\u{672c}\u{8a9e} \u{2615}";

#[test]
fn tahoe_mutable_files_and_directories_interoperate() {
    let _heavy = common::heavy();
    let Some(venv) = common::require("the Tahoe-LAFS 1.20 venv", common::tahoe_venv()) else {
        return;
    };
    let started = Instant::now();
    let clients = [ClientSpec {
        name: CLIENT,
        needed: u32::from(K),
        happy: SERVERS as u32,
        total: u32::from(N),
        max_segment_size: None,
    }];
    let grid = Grid::up(&venv, SERVERS, &clients, SECRET, Duration::from_secs(90));
    eprintln!("tahoe grid up in {:.1?}", started.elapsed());
    let servers = grid.servers();
    assert_eq!(servers.len(), SERVERS);

    let t = Instant::now();
    let chk_cap = tahoe_to_lafs(&grid, &servers);
    eprintln!("(a) tahoe -> lafs in {:.1?}", t.elapsed());
    let t = Instant::now();
    lafs_to_tahoe(&grid, &servers, &chk_cap);
    eprintln!("(b) lafs -> tahoe in {:.1?}", t.elapsed());

    drop(grid);
    eprintln!("whole interop_mutable test: {:.1?}", started.elapsed());
}

/// (a); returns the cap of a CHK file on the grid for (b).
fn tahoe_to_lafs(grid: &Grid, servers: &[ServerInfo]) -> String {
    // Files.
    let cases: [(&str, &str, MutableFormat, usize); 5] = [
        ("SDMF 0 B", "sdmf", MutableFormat::Sdmf, 0),
        ("SDMF 1000 B", "sdmf", MutableFormat::Sdmf, 1000),
        ("MDMF 0 B", "mdmf", MutableFormat::Mdmf, 0),
        ("MDMF 1000 B", "mdmf", MutableFormat::Mdmf, 1000),
        (
            "MDMF 300000 B (3 segments)",
            "mdmf",
            MutableFormat::Mdmf,
            300_000,
        ),
    ];
    let mut file_caps = Vec::new();
    for (i, (what, fmt, format, size)) in cases.iter().enumerate() {
        let data = plaintext(*size, 100 + i as u64);
        let cap = web(
            grid,
            "PUT",
            &format!("/uri?mutable=true&format={fmt}"),
            &data,
        );
        let wcap = write_cap_of(cap.trim());
        assert_eq!(wcap.format, *format, "{what}: Tahoe made the asked format");
        let (got, shares) = retrieve_from_disk(what, servers, &wcap);
        check_tahoe_containers(grid, what, &wcap, &shares);
        let version_byte = match format {
            MutableFormat::Sdmf => 0,
            MutableFormat::Mdmf => 1,
        };
        for s in &shares {
            assert_eq!(
                s.container.data.first(),
                Some(&version_byte),
                "{what}: share version byte"
            );
        }
        assert_eq!(got.version.seqnum, 1, "{what}: first version");
        assert_eq!(
            (got.version.k, got.version.n),
            (K, N),
            "{what}: the grid's encoding"
        );
        assert!(
            got.data == data,
            "{what}: our retrieve returns the bytes Tahoe was given"
        );
        file_caps.push(cap.trim().to_string());
    }

    // Immutable children.
    let chk_cap = web(grid, "PUT", "/uri", &plaintext(1000, 7))
        .trim()
        .to_string();
    assert!(chk_cap.starts_with("URI:CHK:"), "a 1000-byte upload is CHK");
    let lit_cap = web(grid, "PUT", "/uri", b"a literal file's bytes")
        .trim()
        .to_string();
    assert!(lit_cap.starts_with("URI:LIT:"), "a 22-byte upload is LIT");
    let mut_rw = &file_caps[1];
    let mut_ro = Cap::parse(mut_rw).readonly().expect("ro").to_string();
    let mdmf_rw = &file_caps[4];
    let mdmf_ro = Cap::parse(mdmf_rw).readonly().expect("ro").to_string();

    // SDMF directory: children given at creation are stored with their metadata verbatim.
    let children = json!({
        "chk": ["filenode", {"ro_uri": chk_cap, "metadata": {"note": "plain ASCII", "n": 7}}],
        "lit": ["filenode", {"ro_uri": lit_cap, "metadata": {}}],
        "sdmf file": ["filenode", {"rw_uri": mut_rw, "ro_uri": mut_ro,
            "metadata": {"tahoe": {"linkcrtime": 1_700_000_000.25, "linkmotime": 1_700_000_001.5},
                         "mtime": 1_600_000_000.125, "st_mode": 33188}}],
        "mdmf read-only": ["filenode", {"ro_uri": mdmf_ro, "metadata": {"list": [1, "two", null, true]}}],
        NON_ASCII_NAME: ["filenode", {"ro_uri": chk_cap,
            "metadata": {"note": "caf\u{e9} \u{2615}", "nested": {"a": [0.1, -2]}}}],
    });
    let sdmf_dir = web(
        grid,
        "POST",
        "/uri?t=mkdir-with-children&format=sdmf",
        children.to_string().as_bytes(),
    )
    .trim()
    .to_string();
    assert!(sdmf_dir.starts_with("URI:DIR2:"), "an SDMF directory");
    // A subdirectory and a file added later go through update_metadata (tahoe link times).
    let sub = web(
        grid,
        "POST",
        &format!("/uri/{sdmf_dir}?t=mkdir&name=subdir"),
        b"",
    );
    assert!(sub.trim().starts_with("URI:DIR2:"), "subdirectory cap");
    web(
        grid,
        "PUT",
        &format!("/uri/{sdmf_dir}/put-file"),
        &plaintext(2000, 8),
    );

    // MDMF directory, filled by set_children (update_metadata over the given user metadata).
    let mdmf_dir = web(grid, "POST", "/uri?t=mkdir&format=mdmf", b"")
        .trim()
        .to_string();
    assert!(mdmf_dir.starts_with("URI:DIR2-MDMF:"), "an MDMF directory");
    let children = json!({
        "chk": ["filenode", {"ro_uri": chk_cap, "metadata": {"note": "via set_children"}}],
        "lit": ["filenode", {"ro_uri": lit_cap}],
        "mdmf file": ["filenode", {"rw_uri": mdmf_rw, "ro_uri": mdmf_ro, "metadata": {"x": 1.5}}],
        "the sdmf dir": ["dirnode", {"rw_uri": sdmf_dir,
            "ro_uri": Cap::parse(&sdmf_dir).readonly().expect("ro").to_string()}],
        NON_ASCII_NAME: ["filenode", {"ro_uri": lit_cap, "metadata": {"\u{e9}t\u{e9}": "\u{65e5}"}}],
    });
    web(
        grid,
        "POST",
        &format!("/uri/{mdmf_dir}?t=set_children"),
        children.to_string().as_bytes(),
    );
    web(
        grid,
        "POST",
        &format!("/uri/{mdmf_dir}?t=mkdir&name=mdmf-sub&format=mdmf"),
        b"",
    );

    assert_eq!(
        check_tahoe_directory(grid, servers, "SDMF dir", &sdmf_dir),
        7
    );
    assert_eq!(
        check_tahoe_directory(grid, servers, "MDMF dir", &mdmf_dir),
        6
    );
    chk_cap
}

/// Wraps every share our publish put in `mem` into a Tahoe container and writes it into the
/// share directory of the same server.
fn install_our_shares(
    servers: &[ServerInfo],
    mem: &[MemoryServer],
    cap: &MutableWriteCap,
    lease_secret: &[u8; 32],
) -> Vec<Lease> {
    let si = WriterKeys::from_cap(cap).reader.storage_index;
    let expiration = u32::try_from(now_secs() + LEASE_SECONDS).expect("expiration fits u32");
    let mut leases = Vec::new();
    for (s, m) in servers.iter().zip(mem) {
        let shnums = m.list_shares(&si).expect("list our shares");
        if shnums.is_empty() {
            continue;
        }
        let dir = share_dir(s, &si);
        std::fs::create_dir_all(&dir).expect("create share dir");
        for sh in shnums {
            let data = m.share_bytes(&si, sh).expect("our share");
            let lease = expected_lease(lease_secret, &si, &s.nodeid, expiration);
            let file = write_tahoe_mutable_container_v2(
                &s.nodeid,
                &write_enabler(&cap.writekey, &s.nodeid),
                &data,
                &lease,
            );
            std::fs::write(dir.join(sh.to_string()), file).expect("write share file");
            leases.push(lease);
        }
    }
    leases
}

/// (b).
fn lafs_to_tahoe(grid: &Grid, servers: &[ServerInfo], chk_cap: &str) {
    let mem: Vec<MemoryServer> = servers
        .iter()
        .map(|s| MemoryServer::new(s.nodeid))
        .collect();
    let refs: Vec<&dyn MutableServer> = mem.iter().map(|m| m as &dyn MutableServer).collect();
    let lease_secret = *b"lafs interop lease secret 32 b.!";
    let params = PublishParams {
        k: K,
        n: N,
        lease_secret,
    };
    let keypair = || SigningKeyPair::generate().expect("RSA key generation");

    // Files.
    let sdmf_data = plaintext(5000, 200);
    let (sdmf_cap, _) = futures::executor::block_on(publish::create(
        &refs,
        &keypair(),
        MutableFormat::Sdmf,
        &sdmf_data,
        &params,
    ))
    .expect("our SDMF create");
    let mdmf_data = plaintext(300_000, 201);
    let (mdmf_cap, _) = futures::executor::block_on(publish::create(
        &refs,
        &keypair(),
        MutableFormat::Mdmf,
        &mdmf_data,
        &params,
    ))
    .expect("our MDMF create");
    let sdmf_str = Cap::File(NodeCap::MutableWrite(sdmf_cap.clone())).to_string();
    let mdmf_str = Cap::File(NodeCap::MutableWrite(mdmf_cap.clone())).to_string();

    // Directory, built and packed by our dirnode code, stored as a new SDMF file.
    let dir_keys = keypair();
    let dir_writekey = dir_keys.file_keys().writekey;
    let mut dir = Directory::new(DirKind::Mutable {
        writekey: Some(dir_writekey),
    });
    let ro = |c: &str| {
        Cap::parse(c)
            .readonly()
            .expect("ro")
            .to_string()
            .into_bytes()
    };
    dir.insert(
        "our sdmf",
        Child::new(
            Some(sdmf_str.clone().into_bytes()),
            Some(ro(&sdmf_str)),
            md(
                json!({"tahoe": {"linkcrtime": 1_700_000_000.5, "linkmotime": 1_700_000_000.5},
                      "note": "written by lafs"}),
            ),
        ),
    );
    dir.insert(
        "our mdmf (read-only)",
        Child::new(None, Some(ro(&mdmf_str)), md(json!({"size": 300_000}))),
    );
    dir.insert(
        "tahoe chk",
        Child::new(None, Some(chk_cap.as_bytes().to_vec()), Metadata::new()),
    );
    dir.insert(
        NON_ASCII_NAME,
        Child::new(
            None,
            Some(format!("URI:LIT:{}", base32::encode(b"lit by lafs")).into_bytes()),
            md(json!({"note": "na\u{ef}ve \u{2615}", "f": 0.1})),
        ),
    );
    let body = dir.pack().expect("pack our directory");
    let (dir_file_cap, _) = futures::executor::block_on(publish::create(
        &refs,
        &dir_keys,
        MutableFormat::Sdmf,
        &body,
        &params,
    ))
    .expect("our directory create");
    let dir_str = Cap::Dir(NodeCap::MutableWrite(dir_file_cap.clone())).to_string();

    // Onto Tahoe's disks.
    let mut our_leases = BTreeMap::new();
    for cap in [&sdmf_cap, &mdmf_cap, &dir_file_cap] {
        let si = WriterKeys::from_cap(cap).reader.storage_index;
        our_leases.insert(si, install_our_shares(servers, &mem, cap, &lease_secret));
    }

    // Tahoe reads our files, through the write and the read caps.
    for (what, cap, data) in [
        ("our SDMF", &sdmf_str, &sdmf_data),
        ("our MDMF", &mdmf_str, &mdmf_data),
    ] {
        assert!(
            web_bytes(grid, &format!("/uri/{cap}")) == *data,
            "{what}: Tahoe reads our bytes"
        );
        let rocap = Cap::parse(cap).readonly().expect("ro").to_string();
        assert!(
            web_bytes(grid, &format!("/uri/{rocap}")) == *data,
            "{what}: Tahoe reads our bytes through the read cap"
        );
    }
    // Tahoe lists our directory as we built it.
    assert_same_listing("our dir", &dir, &tahoe_json(grid, &dir_str), true);

    // Tahoe overwrites our SDMF file: its publish must pass our write enablers.
    let new_data = plaintext(7000, 202);
    web(grid, "PUT", &format!("/uri/{sdmf_str}"), &new_data);
    let (got, shares) = retrieve_from_disk("our SDMF after Tahoe's overwrite", servers, &sdmf_cap);
    assert_eq!(got.version.seqnum, 2, "Tahoe published seqnum 2");
    assert!(
        got.data == new_data,
        "we read Tahoe's new version of our SDMF file"
    );
    let si = WriterKeys::from_cap(&sdmf_cap).reader.storage_index;
    for s in &shares {
        assert!(
            our_leases[&si].contains(&s.container.leases[0]),
            "sh{}: our lease survives Tahoe's write in slot 0",
            s.shnum
        );
        assert_eq!(
            s.container.write_enabler,
            write_enabler(&sdmf_cap.writekey, &servers[s.server].nodeid),
            "sh{}: write enabler unchanged",
            s.shnum
        );
    }

    // Tahoe updates a byte range of our MDMF file in place (across the segment 1/2 boundary,
    // growing nothing): only the touched segments are rewritten in our share layout.
    let patch = plaintext(5000, 203);
    let at = 2 * 131_072 - 2000;
    web(grid, "PUT", &format!("/uri/{mdmf_str}?offset={at}"), &patch);
    let mut expect = mdmf_data.clone();
    expect[at..at + patch.len()].copy_from_slice(&patch);
    let (got, _) = retrieve_from_disk("our MDMF after Tahoe's update", servers, &mdmf_cap);
    assert_eq!(
        got.version.seqnum, 2,
        "Tahoe published seqnum 2 of our MDMF file"
    );
    assert!(
        got.data == expect,
        "we read Tahoe's in-place update of our MDMF file"
    );

    // Tahoe modifies our directory; we read its version back.
    let more = json!({"added by tahoe": ["filenode", {"ro_uri": chk_cap, "metadata": {"k": "v"}}]});
    web(
        grid,
        "POST",
        &format!("/uri/{dir_str}?t=set_children"),
        more.to_string().as_bytes(),
    );
    let (got, _) = retrieve_from_disk("our dir after Tahoe's change", servers, &dir_file_cap);
    assert_eq!(got.version.seqnum, 2, "Tahoe published seqnum 2 of our dir");
    let after = Directory::unpack(
        DirKind::Mutable {
            writekey: Some(dir_writekey),
        },
        &got.data,
    )
    .expect("unpack Tahoe's version of our dir");
    assert_eq!(after.len(), 5, "our four children and Tahoe's");
    assert_same_listing(
        "our dir after Tahoe's change",
        &after,
        &tahoe_json(grid, &dir_str),
        true,
    );
}
