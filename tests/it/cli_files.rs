//! The file verbs of the `lafs` binary (`mkdir`, `put`, `get`, `ls`, `ln`, `mv`, `rm`) against a
//! loopback grid of `lafs run` storage nodes, through a client node directory whose
//! `private/servers.yaml` lists them (as a Tahoe client node directory would).
//!
//! The `check` / `deep-check` verbs are tested on the same kind of grid, with shares deleted or
//! corrupted on the servers' disks by the test (a real loss the checker must see, and the
//! repairer must mend). `ls`/`get` through an immutable directory (DIR2-CHK) whose body the test
//! packed and uploaded as a CHK file.
//!
//! Expected contents are the bytes the test wrote; expected listings follow tahoe's CLI
//! semantics (names sorted one per line; `ls --json` in the layout of tahoe's `?t=json`).
//! Every wait is bounded; the servers are killed when the grid guard drops (also on panic).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use crate::common;
use common::lafs_node::{free_port, LafsNode};

const LAFS: &str = env!("CARGO_BIN_EXE_lafs");
const CMD_TIMEOUT: Duration = Duration::from_secs(180);

/// Runs `lafs ARGS` with an optional stdin, killing it after [`CMD_TIMEOUT`].
fn run_lafs(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let (out, timed_out) =
        common::run_bounded_timed(Command::new(LAFS).args(args), stdin, CMD_TIMEOUT);
    assert!(
        !timed_out,
        "lafs {args:?} did not finish in {CMD_TIMEOUT:?}"
    );
    out
}

/// A loopback grid and a client node directory.
struct Grid {
    _nodes: Vec<LafsNode>,
    /// The storage nodes' directories (their shares are under `storage/shares`).
    servers: Vec<PathBuf>,
    client: PathBuf,
    _tmp: tempfile::TempDir,
}

impl Grid {
    fn start(servers: usize) -> Grid {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dirs: Vec<PathBuf> = (0..servers)
            .map(|i| tmp.path().join(format!("server{i}")))
            .collect();
        // Node identities take a while to generate: create the nodes in parallel.
        let creators: Vec<_> = dirs
            .iter()
            .enumerate()
            .map(|(i, d)| {
                let d = d.clone();
                std::thread::spawn(move || {
                    let port = free_port();
                    let out = run_lafs(
                        &[
                            "create-node",
                            "--storage",
                            &format!("--port=tcp:{port}:interface=127.0.0.1"),
                            &format!("--location=tcp:127.0.0.1:{port}"),
                            &format!("--nickname=server{i}"),
                            "--webport=none",
                            "--reserved-space=0",
                            d.to_str().expect("utf-8 path"),
                        ],
                        None,
                    );
                    assert!(
                        out.status.success(),
                        "create-node: {}",
                        String::from_utf8_lossy(&out.stderr)
                    );
                })
            })
            .collect();
        for c in creators {
            c.join().expect("create-node thread");
        }
        let nodes: Vec<LafsNode> = dirs.iter().map(|d| LafsNode::start(d)).collect();
        let mut all = lafs::config::ServersYaml::default();
        for d in &dirs {
            let out = run_lafs(&["announcement", d.to_str().expect("utf-8 path")], None);
            assert!(out.status.success(), "announcement");
            let text = String::from_utf8(out.stdout).expect("utf-8 announcement");
            let y = lafs::config::ServersYaml::parse(&text).expect("announcement parses");
            all.storage.extend(y.storage);
        }
        let client = tmp.path().join("client");
        std::fs::create_dir_all(client.join("private")).expect("client dir");
        std::fs::write(
            client.join("tahoe.cfg"),
            "[node]\nnickname = client\n\n[client]\nshares.needed = 2\nshares.happy = 3\nshares.total = 4\n\n[storage]\nenabled = false\n",
        )
        .expect("tahoe.cfg");
        std::fs::write(
            client.join("private/servers.yaml"),
            all.to_yaml_string().expect("servers.yaml"),
        )
        .expect("servers.yaml");
        Grid {
            _nodes: nodes,
            servers: dirs,
            client,
            _tmp: tmp,
        }
    }

    fn tmp(&self) -> &Path {
        self._tmp.path()
    }

    /// `lafs -d CLIENT ARGS`.
    fn lafs(&self, args: &[&str]) -> Output {
        let mut full = vec!["-d", self.client.to_str().expect("utf-8 path")];
        full.extend_from_slice(args);
        run_lafs(&full, None)
    }

    /// `lafs -d CLIENT ARGS`, which must succeed; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.lafs(args);
        assert!(
            out.status.success(),
            "lafs {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8 stdout")
    }

    /// `lafs get SOURCE` to stdout, which must succeed.
    fn get(&self, source: &str) -> Vec<u8> {
        let out = self.lafs(&["get", source]);
        assert!(
            out.status.success(),
            "lafs get failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    /// `lafs -d CLIENT ARGS`, which must fail; returns stderr.
    fn fails(&self, args: &[&str]) -> String {
        let out = self.lafs(args);
        assert!(!out.status.success(), "lafs {args:?} should have failed");
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    fn file(&self, name: &str, data: &[u8]) -> String {
        let p = self.tmp().join(name);
        std::fs::write(&p, data).expect("write local file");
        p.to_str().expect("utf-8 path").to_string()
    }

    fn set_aliases(&self, aliases: &[(&str, &str)]) {
        let text: String = aliases.iter().map(|(n, c)| format!("{n}: {c}\n")).collect();
        std::fs::write(self.client.join("private/aliases"), text).expect("aliases");
    }
}

fn data(seed: u8, len: usize) -> Vec<u8> {
    let mut x = u32::from(seed) | 0x9e37_0000;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

fn one_line(s: &str) -> String {
    let t = s.trim_end_matches('\n');
    assert!(!t.contains('\n'), "one line expected: {s:?}");
    t.to_string()
}

fn lines(s: &str) -> Vec<&str> {
    s.lines().collect()
}

#[test]
fn file_verbs_on_a_loopback_grid() {
    let g = Grid::start(3);

    // A bare path before the default alias exists is an error naming the alias.
    let e = g.fails(&["ls"]);
    assert!(e.contains("tahoe"), "{e}");

    // mkdir without a target prints a new directory cap; make it the default alias.
    let root = one_line(&g.ok(&["mkdir"]));
    assert!(root.starts_with("URI:DIR2:"), "a directory write cap");
    let other = one_line(&g.ok(&["mkdir", "--format=MDMF"]));
    assert!(other.starts_with("URI:DIR2-MDMF:"), "an MDMF directory cap");
    g.set_aliases(&[("tahoe", &root), ("work", &other)]);
    assert_eq!(g.ok(&["ls"]), "");
    // The node directory had no lease secret: the first write created one, as tahoe's node does.
    assert!(g.client.join("private/secret").is_file());

    // put --mutable into a missing subdirectory creates it and links the file.
    let a = data(1, 5000);
    let fa = g.file("a.txt", &a);
    let cap_a = one_line(&g.ok(&["put", "--mutable", &fa, "docs/a.txt"]));
    assert!(cap_a.starts_with("URI:SSK:"), "an SDMF write cap");
    assert_eq!(lines(&g.ok(&["ls"])), ["docs"]);
    assert_eq!(lines(&g.ok(&["ls", "tahoe:docs"])), ["a.txt"]);
    assert_eq!(g.get("docs/a.txt"), a);
    let out = g.tmp().join("out.bin");
    g.ok(&["get", "tahoe:docs/a.txt", out.to_str().unwrap()]);
    assert_eq!(std::fs::read(&out).unwrap(), a);

    // MDMF via --format, unlinked (printed cap only), then read by bare cap and CAP/path.
    let b = data(2, 300_000);
    let fb = g.file("b.bin", &b);
    let cap_b = one_line(&g.ok(&["put", "--format=mdmf", &fb]));
    assert!(cap_b.starts_with("URI:MDMF:"), "an MDMF write cap");
    assert_eq!(
        g.ok(&["ls"]).lines().count(),
        1,
        "unlinked put links nothing"
    );
    assert_eq!(g.get(&cap_b), b);

    // put FILE WRITECAP overwrites in place; put onto a linked mutable file keeps its cap.
    let b2 = data(3, 1234);
    let fb2 = g.file("b2.bin", &b2);
    assert_eq!(one_line(&g.ok(&["put", &fb2, &cap_b])), cap_b);
    assert_eq!(g.get(&cap_b), b2);
    let a2 = data(4, 70);
    let fa2 = g.file("a2.txt", &a2);
    assert_eq!(one_line(&g.ok(&["put", &fa2, "docs/a.txt"])), cap_a);
    assert_eq!(g.get(&format!("{root}/docs/a.txt")), a2);

    // ln: a bare cap, and a path into a directory (trailing slash keeps the name).
    assert_eq!(one_line(&g.ok(&["ln", &cap_b, "b.bin"])), "OK");
    g.ok(&["ln", "b.bin", "docs/"]);
    assert_eq!(lines(&g.ok(&["ls", "docs"])), ["a.txt", "b.bin"]);
    assert_eq!(lines(&g.ok(&["ls"])), ["b.bin", "docs"]);
    assert_eq!(g.get("docs/b.bin"), b2);

    // mv within a directory (rename) and across directories and aliases.
    g.ok(&["mv", "docs/a.txt", "docs/c.txt"]);
    assert_eq!(lines(&g.ok(&["ls", "docs"])), ["b.bin", "c.txt"]);
    g.ok(&["mv", "b.bin", "work:moved.bin"]);
    assert_eq!(lines(&g.ok(&["ls"])), ["docs"]);
    assert_eq!(lines(&g.ok(&["ls", "work:"])), ["moved.bin"]);
    assert_eq!(g.get("work:moved.bin"), b2);
    assert_eq!(lines(&g.ok(&["ls", &other])), ["moved.bin"]);

    // A directory is not overwritten by ln/mv of a file.
    g.ok(&["mkdir", "docs/sub"]);
    let e = g.fails(&["ln", "docs/c.txt", "docs/sub"]);
    assert!(e.contains("overwrite a directory"), "{e}");
    // mkdir onto an existing name fails.
    g.fails(&["mkdir", "docs/sub"]);

    // rm unlinks.
    g.ok(&["rm", "docs/b.bin"]);
    assert_eq!(lines(&g.ok(&["ls", "docs"])), ["c.txt", "sub"]);
    g.fails(&["rm", "docs/b.bin"]);

    // put from stdin into a linked path.
    let s = data(5, 999);
    let mut full = vec!["-d", g.client.to_str().unwrap()];
    full.extend_from_slice(&["put", "--mutable", "-", "work:stdin.txt"]);
    let out = run_lafs(&full, Some(&s));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(g.get("work:stdin.txt"), s);

    // CHK: an unlinked put prints a CHK cap (the same one `lafs debug encode` computes with this
    // node's convergence secret and 2-of-4), a linked put, get by path, cap and to a file.
    let c = data(6, 200_000);
    let fc = g.file("c.bin", &c);
    let cap_c = one_line(&g.ok(&["put", &fc]));
    assert!(cap_c.starts_with("URI:CHK:"), "a CHK cap");
    assert!(cap_c.ends_with(":2:4:200000"), "k:N:size in the cap");
    let conv = std::fs::read_to_string(g.client.join("private/convergence")).unwrap();
    let expected = g.ok(&[
        "debug",
        "encode",
        "--convergence",
        conv.trim(),
        "--needed=2",
        "--total=4",
        &fc,
    ]);
    assert_eq!(cap_c, one_line(&expected));
    assert_eq!(
        one_line(&g.ok(&["put", "--format=chk", &fc, "docs/c.bin"])),
        cap_c
    );
    assert_eq!(g.get("docs/c.bin"), c);
    assert_eq!(g.get(&cap_c), c);
    let outc = g.tmp().join("outc.bin");
    g.ok(&["get", &cap_c, outc.to_str().unwrap()]);
    assert_eq!(std::fs::read(&outc).unwrap(), c);
    // A small file is a LIT cap; no server is involved.
    let lit = g.file("lit.txt", b"hello");
    let cap_lit = one_line(&g.ok(&["put", &lit]));
    assert!(cap_lit.starts_with("URI:LIT:"));
    assert_eq!(g.get(&cap_lit), b"hello");
    g.ok(&["rm", "docs/c.bin"]);

    // ls --json: tahoe's `?t=json` layout.
    let text = g.ok(&["ls", "--json", "docs"]);
    assert!(
        text.starts_with("[\n \"dirnode\",\n {\n  \"children\": {"),
        "{text}"
    );
    assert!(
        text.ends_with("}\n]\n\n"),
        "json.dumps(indent=1) body printed by print()"
    );
    let v: serde_json::Value = serde_json::from_str(&text).expect("ls --json is JSON");
    assert_eq!(v[0], "dirnode");
    let d = &v[1];
    assert_eq!(d["mutable"], true);
    let rw = d["rw_uri"].as_str().expect("rw_uri");
    assert!(rw.starts_with("URI:DIR2:"));
    assert!(d["ro_uri"].as_str().unwrap().starts_with("URI:DIR2-RO:"));
    assert!(d["verify_uri"]
        .as_str()
        .unwrap()
        .starts_with("URI:DIR2-Verifier:"));
    let c = &d["children"]["c.txt"];
    assert_eq!(c[0], "filenode");
    assert_eq!(c[1]["mutable"], true);
    assert_eq!(c[1]["format"], "SDMF");
    assert_eq!(c[1]["rw_uri"], cap_a.as_str());
    assert!(c[1]["ro_uri"].as_str().unwrap().starts_with("URI:SSK-RO:"));
    assert!(c[1]["metadata"]["tahoe"]["linkcrtime"].is_number());
    let sub = &d["children"]["sub"];
    assert_eq!(sub[0], "dirnode");
    assert_eq!(sub[1]["mutable"], true);
    // Key order as tahoe inserts them.
    let keys: Vec<&str> = d.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        ["children", "ro_uri", "rw_uri", "verify_uri", "mutable"]
    );
    let ckeys: Vec<&str> = c[1]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        ckeys,
        [
            "mutable",
            "format",
            "metadata",
            "rw_uri",
            "ro_uri",
            "verify_uri"
        ]
    );

    // A read-only directory cap lists but refuses writes.
    let ro = d["ro_uri"].as_str().unwrap().to_string();
    assert_eq!(lines(&g.ok(&["ls", &ro])), ["c.txt", "sub"]);
    g.fails(&["ln", &cap_b, &format!("{ro}/x")]);

    // Errors: non-zero exit, message on stderr, no cap in it.
    for args in [
        vec!["get", "docs/missing"],
        vec!["ls", "nosuchalias:x"],
        vec!["get", "docs"],
        vec!["put", &fa, &format!("{root}/docs/c.txt/x")],
    ] {
        let e = g.fails(&args);
        assert!(!e.is_empty(), "an error message for {args:?}");
        for cap in [&root, &other, &cap_a, &cap_b] {
            let secret = cap.rsplit(':').nth(1).unwrap();
            assert!(!e.contains(secret), "no cap in the error of {args:?}: {e}");
        }
    }
}

/// The share files of storage index `si` (base32) on each server, by server.
fn share_files(g: &Grid, si: &str) -> Vec<Vec<PathBuf>> {
    fn find(dir: &Path, si: &str, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let p = e.path();
            if !p.is_dir() {
                continue;
            }
            if e.file_name() == si {
                out.extend(
                    std::fs::read_dir(&p)
                        .into_iter()
                        .flatten()
                        .flatten()
                        .map(|f| f.path()),
                );
            } else if e.file_name() != "incoming" {
                find(&p, si, out);
            }
        }
    }
    g.servers
        .iter()
        .map(|d| {
            let mut v = Vec::new();
            find(&d.join("storage/shares"), si, &mut v);
            v
        })
        .collect()
}

/// The storage index `check --raw` reports for `path`.
fn storage_index(g: &Grid, path: &str) -> String {
    let v: serde_json::Value =
        serde_json::from_str(&g.ok(&["check", "--raw", path])).expect("check --raw is JSON");
    let si = v["storage-index"]
        .as_str()
        .expect("storage-index")
        .to_string();
    assert_eq!(si.len(), 26, "a base32 storage index: {si}");
    si
}

#[test]
fn check_repair_and_deep_check_on_a_loopback_grid() {
    // 2-of-4 over 4 servers, happy 3: one share per server.
    let g = Grid::start(4);
    let root = one_line(&g.ok(&["mkdir"]));
    g.set_aliases(&[("tahoe", &root)]);
    let big = data(7, 300_000);
    g.ok(&["put", &g.file("big.bin", &big), "big.bin"]);
    let m = data(8, 100_000);
    g.ok(&["put", "--mutable", &g.file("m.txt", &m), "m.txt"]);
    let small = data(9, 5_000);
    g.ok(&["put", &g.file("s.bin", &small), "sub/s.bin"]);

    // Everything healthy: root, big.bin, m.txt, sub, sub/s.bin.
    for args in [
        vec!["check", "big.bin"],
        vec!["check", "--verify", "big.bin"],
        vec!["check", "m.txt"],
        vec!["check", "--verify", "m.txt"],
        vec!["check", "tahoe:"],
    ] {
        let out = g.ok(&args);
        assert!(out.starts_with("Summary: Healthy\n"), "{args:?}: {out}");
    }
    let out = g.ok(&["deep-check", "-v", "tahoe:"]);
    assert!(
        out.ends_with("done: 5 objects checked, 5 healthy, 0 unhealthy\n"),
        "{out}"
    );
    assert!(out.contains("'sub/s.bin': Healthy\n"), "{out}");

    // Two of big.bin's four shares deleted on disk: unhealthy but recoverable.
    let si = storage_index(&g, "big.bin");
    let shares = share_files(&g, &si);
    assert_eq!(shares.iter().map(Vec::len).sum::<usize>(), 4, "{shares:?}");
    let mut deleted = 0;
    for files in shares.iter().filter(|f| !f.is_empty()).take(2) {
        for f in files {
            std::fs::remove_file(f).expect("delete a share file");
            deleted += 1;
        }
    }
    assert_eq!(deleted, 2);
    let out = g.ok(&["check", "big.bin"]);
    assert!(
        out.starts_with("Summary: Not Healthy: 2 shares (enc 2-of-4)\n"),
        "{out}"
    );
    assert!(
        out.contains(" good-shares: 2 (encoding is 2-of-4)\n"),
        "{out}"
    );
    let out = g.ok(&["deep-check", "tahoe:"]);
    assert!(
        out.ends_with("done: 5 objects checked, 4 healthy, 1 unhealthy\n"),
        "{out}"
    );
    // The file still reads; repair restores its shares; a new check is healthy.
    assert_eq!(g.get("big.bin"), big);
    let out = g.ok(&["check", "--repair", "big.bin"]);
    assert!(out.starts_with("Summary: not healthy\n"), "{out}");
    assert!(out.ends_with(" repair successful\n"), "{out}");
    assert_eq!(
        share_files(&g, &si).iter().map(Vec::len).sum::<usize>(),
        4,
        "every share is back"
    );
    let out = g.ok(&["check", "--verify", "big.bin"]);
    assert!(out.starts_with("Summary: Healthy\n"), "{out}");

    // deep-check --repair mends what it finds: sub/s.bin loses three of its four shares' worth
    // down to k.
    let si_s = storage_index(&g, "sub/s.bin");
    for files in share_files(&g, &si_s)
        .iter()
        .filter(|f| !f.is_empty())
        .take(2)
    {
        for f in files {
            std::fs::remove_file(f).expect("delete a share file");
        }
    }
    let out = g.ok(&["deep-check", "--repair", "tahoe:"]);
    assert!(
        out.ends_with(
            "done: 5 objects checked\n pre-repair: 4 healthy, 1 unhealthy\n 1 repairs attempted, \
             1 successful, 0 failed\n post-repair: 5 healthy, 0 unhealthy\n"
        ),
        "{out}"
    );
    assert_eq!(g.get("sub/s.bin"), small);

    // A mutable share corrupted on disk (bytes in the middle of its share data): --verify
    // reports it corrupt, with its server and share number.
    let si_m = storage_index(&g, "m.txt");
    let m_shares = share_files(&g, &si_m);
    let victim = m_shares
        .iter()
        .flatten()
        .next()
        .expect("a share of m.txt")
        .clone();
    let shnum = victim
        .file_name()
        .and_then(|n| n.to_str())
        .expect("share file name")
        .to_string();
    let mut bytes = std::fs::read(&victim).expect("read share");
    let mid = bytes.len() / 2;
    for b in &mut bytes[mid..mid + 16] {
        *b ^= 0xff;
    }
    std::fs::write(&victim, &bytes).expect("write corrupted share");
    let out = g.ok(&["check", "--verify", "m.txt"]);
    assert!(out.starts_with("Summary: Not Healthy"), "{out}");
    assert!(out.contains(" corrupt shares:\n"), "{out}");
    assert!(
        out.contains(&format!("SI {si_m}, shnum {shnum}\n")),
        "the corrupt share is named: {out}"
    );
    let out = g.ok(&["deep-check", "--verify", "tahoe:"]);
    assert!(out.contains(" corrupt: server "), "{out}");
    assert!(
        out.ends_with("5 objects checked, 4 healthy, 1 unhealthy\n"),
        "{out}"
    );
    // The file still reads (the corrupt share is rejected), and a repair republishes it.
    assert_eq!(g.get("m.txt"), m);
    let out = g.ok(&["check", "--verify", "--repair", "m.txt"]);
    assert!(out.ends_with(" repair successful\n"), "{out}");
    let out = g.ok(&["check", "--verify", "m.txt"]);
    assert!(out.starts_with("Summary: Healthy\n"), "{out}");

    // An immutable directory (DIR2-CHK): its body packed here and uploaded as a CHK file.
    let mut dir = lafs::dirnode::Directory::new(lafs::dirnode::DirKind::Immutable);
    let inside = data(10, 80_000);
    let big_cap = one_line(&g.ok(&["put", &g.file("inside.bin", &inside)]));
    dir.insert(
        "inside.bin",
        lafs::dirnode::Child::new(
            None,
            Some(big_cap.clone().into_bytes()),
            lafs::dirnode::Metadata::new(),
        ),
    );
    let body = dir.pack().expect("pack an immutable directory");
    assert!(body.len() > 55, "not a LIT");
    let body_cap = one_line(&g.ok(&["put", &g.file("dirbody", &body)]));
    let dircap = body_cap.replacen("URI:CHK:", "URI:DIR2-CHK:", 1);
    assert!(dircap.starts_with("URI:DIR2-CHK:"), "{dircap}");
    assert_eq!(lines(&g.ok(&["ls", &dircap])), ["inside.bin"]);
    assert_eq!(g.get(&format!("{dircap}/inside.bin")), inside);
    let v: serde_json::Value =
        serde_json::from_str(&g.ok(&["ls", "--json", &dircap])).expect("JSON");
    assert_eq!(v[1]["mutable"], false);
    assert_eq!(
        v[1]["children"]["inside.bin"][1]["ro_uri"],
        big_cap.as_str()
    );
    // Linked into the tree, it is walked by deep-check and read through paths.
    g.ok(&["ln", &dircap, "frozen"]);
    assert_eq!(g.get("frozen/inside.bin"), inside);
    g.fails(&[
        "put",
        &g.file("x", b"a file too big to be a literal cap, surely........"),
        "frozen/x",
    ]);
    let out = g.ok(&["deep-check", "-v", "tahoe:"]);
    assert!(out.contains("'frozen': Healthy\n"), "{out}");
    assert!(out.contains("'frozen/inside.bin': Healthy\n"), "{out}");
}
