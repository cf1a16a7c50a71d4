//! Interop: CHK shares written by real Tahoe-LAFS 1.20 are byte-identical to ours.
//!
//! One loopback grid (tests/interop/tahoe_grid.py) with two clients, one per encoding, and a
//! fixed convergence secret. For each case the file is uploaded through a Tahoe client node
//! (`PUT /uri`, what `tahoe put` does), every share
//! file is read from the servers' `storage/shares/<si[:2]>/<si>/<shnum>`, the immutable container
//! (digest §7) is stripped, and:
//! - independently of our encoder, the body is checked against the digest (§3.6: layout v1,
//!   total size formula, UEB hash = the cap's UEB hash);
//! - the cap and every body must equal `lafs::immutable::encode_bytes` of the same plaintext;
//! - `lafs debug encode`, given the secret as a node's `private/convergence` text, prints the same cap.
//!
//! Needs the venv from `.ci/setup` (skips with a message without it, fails under CI=true). The
//! whole test is bounded: grid start, each command and the shutdown have deadlines.

use crate::common;
use crate::common::grid;

use std::time::{Duration, Instant};

use grid::{ClientSpec, Grid};
use lafs::crypto::hash::uri_extension_hash;
use lafs::immutable::{encode_bytes, EncodingParams, KeySource};

/// Exactly 32 bytes, like the secret a real node keeps in `private/convergence`.
const SECRET: &[u8; 32] = b"lafs interop: convergence secret";
const CMD_TIMEOUT: Duration = Duration::from_secs(60);

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

/// Runs `lafs debug encode` the way a user would: the secret as the base32 text of a node's
/// `private/convergence` file (with its trailing newline), the file on disk, and the
/// `--max-segment-size` flag only where the case departs from the 1 MiB default.
fn debug_encode_cli(data: &[u8], case: &Case) -> String {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("plaintext");
    std::fs::write(&file, data).expect("write plaintext");
    let secret = format!("{}\n", lafs::util::base32::encode(SECRET));
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_lafs"));
    cmd.args(["debug", "encode", "--convergence", secret.as_str()])
        .args(["--needed", &case.needed.to_string()])
        .args(["--total", &case.total.to_string()]);
    if case.max_segment_size != 1 << 20 {
        cmd.args(["--max-segment-size", &case.max_segment_size.to_string()]);
    }
    let out = cmd.arg(&file).output().expect("run lafs");
    assert!(
        out.status.success(),
        "{}: lafs debug encode failed: {}",
        case.name,
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).expect("UTF-8 stdout");
    assert!(
        stdout.ends_with('\n') && stdout.lines().count() == 1,
        "{}: one line of output",
        case.name
    );
    stdout.trim_end().to_string()
}

fn be32(b: &[u8], off: usize) -> u32 {
    let s = b.get(off..off + 4).expect("field within share");
    u32::from_be_bytes(s.try_into().expect("4 bytes"))
}

/// Strips Tahoe's immutable share container (digest §7): 12-byte header (version, data length,
/// lease count), the body, then 72-byte lease records.
fn strip_container(file: &[u8]) -> &[u8] {
    let version = be32(file, 0);
    assert!(version == 1 || version == 2, "container version {version}");
    let data_len = be32(file, 4) as usize;
    let leases = be32(file, 8) as usize;
    assert!(leases >= 1, "an uploaded share carries its first lease");
    let body_len = file
        .len()
        .checked_sub(12 + 72 * leases)
        .expect("file holds header and leases");
    assert_eq!(
        data_len, body_len,
        "container data length = allocated body size"
    );
    &file[12..12 + body_len]
}

/// Geometry of a CHK file (digest §3.1), computed here independently of the library.
struct Geometry {
    segsize: u64,
    num_segments: u64,
    share_size: u64,
}

fn geometry(size: u64, k: u64, max_segsize: u64) -> Geometry {
    let next_multiple = |x: u64, k: u64| x.div_ceil(k) * k;
    let segsize = next_multiple(max_segsize.min(size), k);
    Geometry {
        segsize,
        num_segments: size.div_ceil(segsize),
        share_size: size.div_ceil(k),
    }
}

/// Checks a v1 share body against the digest (§3.6) and the cap; returns nothing, panics with
/// the case name on mismatch.
fn check_body(case: &str, shnum: u32, body: &[u8], cap: &str, max_segsize: u64) {
    let fields: Vec<&str> = cap.split(':').collect();
    assert_eq!(fields.len(), 7, "{case}: CHK cap has 7 fields");
    assert_eq!(&fields[..2], &["URI", "CHK"], "{case}: CHK cap");
    let ueb_hash = lafs::util::base32::decode(fields[3]).expect("cap UEB hash is base32");
    let k: u64 = fields[4].parse().expect("k");
    let n: u64 = fields[5].parse().expect("N");
    let size: u64 = fields[6].parse().expect("size");
    let g = geometry(size, k, max_segsize);

    assert_eq!(be32(body, 0), 1, "{case} sh{shnum}: body layout v1");
    assert_eq!(
        u64::from(be32(body, 4)),
        g.segsize / k,
        "{case} sh{shnum}: block size"
    );
    assert_eq!(
        u64::from(be32(body, 8)),
        g.share_size,
        "{case} sh{shnum}: data size"
    );
    assert_eq!(be32(body, 12), 0x24, "{case} sh{shnum}: data offset");
    let ueb_off = be32(body, 32) as usize;
    let ueb_len = be32(body, ueb_off) as usize;
    let ueb = body
        .get(ueb_off + 4..ueb_off + 4 + ueb_len)
        .expect("UEB within body");
    assert_eq!(
        uri_extension_hash(ueb).as_slice(),
        ueb_hash.as_slice(),
        "{case} sh{shnum}: UEB hash in share = UEB hash in cap"
    );
    // Total size: hdr + data + 3 trees of 2P-1 hashes + share hash chain + UEB length + UEB.
    let p = g.num_segments.next_power_of_two();
    let chain = u64::from(n.next_power_of_two().trailing_zeros()) + 1;
    let expect = 0x24 + g.share_size + 3 * (2 * p - 1) * 32 + chain * 34 + 4 + ueb_len as u64;
    assert_eq!(body.len() as u64, expect, "{case} sh{shnum}: body size");
}

/// The lowercase base32 storage index of a CHK cap string.
fn chk_storage_index(cap: &str) -> String {
    let key_b32 = cap.split(':').nth(2).expect("CHK cap key field");
    let key = lafs::util::base32::decode(key_b32).expect("cap key is base32");
    lafs::util::base32::encode(&lafs::crypto::hash::storage_index_hash(&key))
}

/// Index of the first differing byte, for a readable failure on multi-MB bodies.
fn first_difference(a: &[u8], b: &[u8]) -> Option<usize> {
    a.iter()
        .zip(b)
        .position(|(x, y)| x != y)
        .or((a.len() != b.len()).then_some(a.len().min(b.len())))
}

struct Case {
    name: &'static str,
    client: &'static str,
    size: usize,
    needed: u32,
    happy: u32,
    total: u32,
    max_segment_size: u64,
}

#[test]
fn tahoe_chk_shares_equal_ours() {
    let _heavy = common::heavy();
    let Some(venv) = common::require("the Tahoe-LAFS 1.20 venv", common::tahoe_venv()) else {
        return;
    };
    let started = Instant::now();
    const MIB: u64 = 1 << 20;
    let clients = [
        ClientSpec {
            name: "k3n10",
            needed: 3,
            happy: 5,
            total: 10,
            max_segment_size: None, // Tahoe's default, 1 MiB
        },
        ClientSpec {
            name: "k1n3",
            needed: 1,
            happy: 3,
            total: 3,
            max_segment_size: Some(131_072),
        },
    ];
    let cases = [
        // (a) one segment.
        Case {
            name: "one-segment 1000 B 3-of-10",
            client: "k3n10",
            size: 1000,
            needed: 3,
            happy: 5,
            total: 10,
            max_segment_size: MIB,
        },
        // (b) 2.5 MiB: segsize 1048578, two full segments and a 524284-byte tail.
        Case {
            name: "multi-segment 2.5 MiB 3-of-10",
            client: "k3n10",
            size: 5 * (1 << 19),
            needed: 3,
            happy: 5,
            total: 10,
            max_segment_size: MIB,
        },
        // (c) k = 1, and the max-segment-size knob: 3 segments of 128 KiB, tail 37856.
        Case {
            name: "k=1 1-of-3 300000 B, 128 KiB segments",
            client: "k1n3",
            size: 300_000,
            needed: 1,
            happy: 3,
            total: 3,
            max_segment_size: 131_072,
        },
    ];

    // 5 servers: happy ≤ 5, so 3-of-10 places two shares per server; placement does not affect
    // share contents, and fewer nodes start faster.
    let grid = Grid::up(&venv, 5, &clients, SECRET, Duration::from_secs(90));
    let grid_ready = started.elapsed();
    eprintln!("tahoe grid up in {grid_ready:.1?}");

    for (i, case) in cases.iter().enumerate() {
        let t = Instant::now();
        let data = plaintext(case.size, i as u64 + 1);
        let cap = grid.put(case.client, &data, CMD_TIMEOUT);
        // The storage index by our derivation: if it were wrong, no share would be found.
        let shares = grid.shares_of_si(&chk_storage_index(&cap), CMD_TIMEOUT);
        eprintln!(
            "{}: tahoe put + share scan in {:.1?}",
            case.name,
            t.elapsed()
        );

        // Every share number exactly once.
        let mut shnums: Vec<u32> = shares.iter().map(|s| s.shnum).collect();
        shnums.sort_unstable();
        assert_eq!(
            shnums,
            (0..case.total).collect::<Vec<_>>(),
            "{}: each of the N shares stored once",
            case.name
        );

        let params = EncodingParams {
            needed: case.needed as _,
            happy: case.happy as _,
            total: case.total as _,
            max_segment_size: case.max_segment_size as _,
        };
        let ours = encode_bytes(&data, &params, &KeySource::Convergent(SECRET.to_vec()))
            .unwrap_or_else(|e| panic!("{}: encode_bytes failed: {e}", case.name));
        assert_eq!(
            ours.cap.to_string(),
            cap,
            "{}: our cap vs Tahoe's",
            case.name
        );
        assert_eq!(
            ours.shares.len(),
            case.total as usize,
            "{}: share count",
            case.name
        );
        assert_eq!(
            debug_encode_cli(&data, case),
            cap,
            "{}: `lafs debug encode` vs Tahoe's cap",
            case.name
        );

        for s in &shares {
            let file = std::fs::read(&s.path).expect("read share file");
            let body = strip_container(&file);
            check_body(case.name, s.shnum, body, &cap, case.max_segment_size);
            let mine = &ours.shares[s.shnum as usize];
            if let Some(at) = first_difference(body, mine) {
                panic!(
                    "{}: share {} (on {}) differs from ours at byte {at} (tahoe {} bytes, ours {})",
                    case.name,
                    s.shnum,
                    s.server,
                    body.len(),
                    mine.len()
                );
            }
        }
    }
    drop(grid);
    eprintln!("whole interop_chk test: {:.1?}", started.elapsed());
}
