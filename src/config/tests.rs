//! Node-directory tests with hand-written files shaped like Tahoe's own.

use super::tahoe_cfg::{
    parse_abbreviated_size, parse_date, parse_duration, ExpireMode, MutableFormat,
};
use super::*;
use proptest::prelude::*;

/// Shaped like the file `tahoe create-client` 1.20 writes (comments, empty values, mixed case).
const CREATE_CLIENT_CFG: &str = "# -*- mode: conf; coding: utf-8 -*-\n\n\
# This file controls the configuration of the Tahoe node that\n# lives in this directory.\n\n\n\
[node]\nnickname = \nreveal-IP-address = true\nweb.port = tcp:3456:interface=127.0.0.1\n\
web.static = public_html\ntub.port = disabled\ntub.location = disabled\n\n#log_gatherer.furl =\n\n\
[client]\nhelper.furl =\n\n# Encoding parameters\nshares.needed = 3\nshares.happy = 7\nshares.total = 10\n\n\
[storage]\n# Shall this node provide storage service?\nenabled = false\n#readonly =\nreserved_space = 1G\n\
#storage_dir =\n#expire.enabled =\n#expire.mode =\n\n[helper]\n# Shall this node run a helper service?\nenabled = false\n";

#[test]
fn create_client_cfg() {
    let cfg = NodeConfig::parse(CREATE_CLIENT_CFG).unwrap();
    assert_eq!(cfg.node.nickname, "");
    assert_eq!(
        cfg.node.web_port.as_deref(),
        Some("tcp:3456:interface=127.0.0.1")
    );
    assert_eq!(cfg.node.tub_port.as_deref(), Some("disabled"));
    assert_eq!(cfg.client.helper_furl, None);
    assert_eq!(
        (
            cfg.client.shares_needed,
            cfg.client.shares_happy,
            cfg.client.shares_total
        ),
        (3, 7, 10)
    );
    assert_eq!(cfg.client.mutable_format, MutableFormat::Sdmf);
    assert_eq!(cfg.client.max_segment_size, 1024 * 1024);
    assert!(!cfg.storage_enabled);
    assert!(cfg.storage.is_none());
    assert_eq!(
        cfg.ini.get("node", "reveal-ip-address").unwrap().as_deref(),
        Some("true")
    );
}

#[test]
fn storage_node_cfg() {
    let text = "[node]\nnickname = srv\n[client]\nintroducer.furl = pb://aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa@tcp:h:1/x\n\
shares.needed = 2\nshares.total = 5\nshares.happy = 4\nmutable.format = mdmf\n\
shares._max_immutable_segment_size_for_testing = 131072\npeers.preferred = v0-a, v0-b,\n\
[storage]\nreserved_space = 10GiB\nexpire.enabled = True\nexpire.mode = cutoff-date\nexpire.cutoff_date = 2009-03-18\nexpire.mutable = no\n";
    let cfg = NodeConfig::parse(text).unwrap();
    assert_eq!(cfg.client.mutable_format, MutableFormat::Mdmf);
    assert_eq!(cfg.client.max_segment_size, 131072);
    assert_eq!(cfg.client.peers_preferred, vec!["v0-a", "v0-b"]);
    let st = cfg.storage.unwrap();
    assert_eq!(st.reserved_space, 10 * 1024 * 1024 * 1024);
    assert!(st.expire.enabled && st.expire.immutable && !st.expire.mutable);
    // 2009-03-18T00:00:00Z, from `date -u -d 2009-03-18 +%s`.
    assert_eq!(
        st.expire.mode,
        ExpireMode::CutoffDate { cutoff: 1237334400 }
    );
    // The FURL never appears in Debug output.
    assert!(!format!("{:?}", cfg.client).contains("pb://"));
}

#[test]
fn cfg_errors() {
    assert!(matches!(
        NodeConfig::parse("[bogus]\n"),
        Err(CfgError::UnknownSection(_))
    ));
    assert!(matches!(
        NodeConfig::parse("[node]\nfoo = 1\n"),
        Err(CfgError::UnknownOption { .. })
    ));
    assert!(NodeConfig::parse("[storageclient.plugins.x]\nanything = 1\n").is_ok());
    assert!(matches!(
        NodeConfig::parse("[client]\nintroducer.furl = pb://x@y/z # c\n"),
        Err(CfgError::UnescapedHash { .. })
    ));
    assert!(matches!(
        NodeConfig::parse("[client]\nshares.needed = three\n"),
        Err(CfgError::NotInteger { .. })
    ));
    assert!(matches!(
        NodeConfig::parse("[client]\nshares.needed = 11\n"),
        Err(CfgError::BadEncoding { .. })
    ));
    assert!(matches!(
        NodeConfig::parse("[storage]\nexpire.enabled = true\n"),
        Err(CfgError::Missing { .. })
    ));
    assert!(matches!(
        NodeConfig::parse("[storage]\nexpire.mode = never\n"),
        Err(CfgError::BadExpireMode)
    ));
    assert!(matches!(
        NodeConfig::parse("[storage]\nreserved_space = 1X\n"),
        Err(CfgError::BadSize { .. })
    ));
    // A client-only node never reads [storage] values.
    assert!(NodeConfig::parse("[storage]\nenabled = false\nreserved_space = 1X\n").is_ok());
    assert_eq!(
        NodeConfig::parse("[client]\nshares.needed =  +0_3 \n")
            .unwrap()
            .client
            .shares_needed,
        3
    );
}

#[test]
fn sizes_durations_dates() {
    // Expected values from Tahoe's util/abbreviate.py multiplier table.
    for (s, v) in [
        ("", None),
        ("123", Some(123)),
        ("1K", Some(1000)),
        ("1kb", Some(1000)),
        ("1KiB", Some(1024)),
        ("1G", Some(1_000_000_000)),
        ("10GB", Some(10_000_000_000)),
        ("1GiB", Some(1 << 30)),
        ("5I", Some(5)),
        ("5B", Some(5)),
        ("2EiB", Some(2 << 60)),
    ] {
        assert_eq!(parse_abbreviated_size(s), Ok(v), "{s}");
    }
    for bad in [
        "G",
        "1 G",
        "1.5G",
        "-1",
        "1GG",
        "1BI",
        "99999999999999999999E",
    ] {
        assert!(parse_abbreviated_size(bad).is_err(), "{bad}");
    }
    assert_eq!(parse_duration("31days"), Some(31 * 86400));
    assert_eq!(parse_duration("2 months"), Some(2 * 31 * 86400));
    assert_eq!(parse_duration("1year"), Some(365 * 86400));
    assert_eq!(parse_duration("3mo"), Some(3 * 31 * 86400));
    assert_eq!(parse_duration("60"), None);
    assert_eq!(parse_date("1970-01-01"), Some(0));
    assert_eq!(parse_date("2000-03-01"), Some(951868800));
    assert_eq!(parse_date("2009-02-31"), parse_date("2009-03-03"));
    assert_eq!(parse_date("2009-13-01"), None);
    assert_eq!(parse_date("09-01-01"), None);
}

#[test]
fn secrets() {
    let s =
        private::parse_secret(b"  aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\n").unwrap();
    assert_eq!(s.as_bytes(), &[0u8; 32]);
    assert!(!format!("{s:?}").contains("aaaa"));
    assert_eq!(private::parse_secret(b"AAAA"), Err(PrivateError::BadBase32));
    assert_eq!(
        private::parse_secret(s.to_file_text().as_bytes()).unwrap(),
        s
    );
}

const DIRCAP: &str =
    "URI:DIR2:aaaaaaaaaaaaaaaaaaaaaaaaaa:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

#[test]
fn aliases() {
    let text =
        format!("# my aliases\n\ntahoe: {DIRCAP}\nwork:URI:DIR2-RO:x:y  \r\nspaced : URI:LIT:\n");
    let a = Aliases::parse(Some(text.as_bytes()), Some(b"URI:DIR2:root:root\n")).unwrap();
    assert_eq!(a.get("tahoe"), Some(DIRCAP));
    assert_eq!(a.get("work"), Some("URI:DIR2-RO:x:y"));
    assert_eq!(a.get("spaced "), Some("URI:LIT:"));
    assert_eq!(a.iter().next().map(|(n, _)| n), Some("tahoe"));
    let root_only = Aliases::parse(None, Some(b"URI:DIR2:root:root\n")).unwrap();
    assert_eq!(
        root_only.get(private::DEFAULT_ALIAS),
        Some("URI:DIR2:root:root")
    );
    assert_eq!(
        Aliases::parse(Some(b"ok: x\nbroken\n"), None),
        Err(AliasError::NoColon { line: 2 })
    );
    assert!(!format!("{a:?}").contains("URI:"));
    let written = private::append_alias("old: URI:LIT:", "new", DIRCAP).unwrap();
    assert_eq!(written, format!("old: URI:LIT:\nnew: {DIRCAP}\n"));
    for bad in ["a:b", "a b", "", "#x", "a\u{2028}b"] {
        assert_eq!(
            private::append_alias("", bad, DIRCAP),
            Err(AliasError::BadName),
            "{bad:?}"
        );
    }
    assert_eq!(
        private::append_alias("", "x", " cap"),
        Err(AliasError::BadCap)
    );
}

const SERVERS_YAML: &str = "\
storage:
  v0-cqiv4xn5p3mdbx4aewhiw5pvxvkpyjzxm5yrvwnrbpz7xwlhyyvq:
    ann:
      nickname: my-server-1
      anonymous-storage-FURL: pb://sdsvwb4i5uasumonzikmsbfn3gy5v7db@tcp:10.0.0.2:35619/v2ca4oxc3gk4yymr2wcvnpu7xtryi7gl
      anonymous-storage-NURLs:
        - pb://JIj6ezHkdSBlHhrnezAgIC_mrVQHy4KAFyL-8ZNPGPM@10.0.0.2:35619/v2ca4oxc3gk4yymr2wcvnpu7xtryi7gl#v=1
      permutation-seed-base32: cqiv4xn5p3mdbx4aewhiw5pvxvkpyjzxm5yrvwnrbpz7xwlhyyvq
      grid-manager-certificates: []
      my-version: tahoe-lafs/1.20.0
    connections:
      tcp: tcp
  v0-broken:
    nothing: here
introducers: {}
";

#[test]
fn servers_yaml_roundtrip() {
    let y = ServersYaml::parse(SERVERS_YAML).unwrap();
    assert_eq!(y.storage.len(), 1);
    assert_eq!(y.skipped.len(), 1);
    let (id, s) = y.storage.iter().next().unwrap();
    assert!(id.starts_with("v0-cqiv"));
    assert_eq!(s.ann.nickname.as_deref(), Some("my-server-1"));
    assert_eq!(
        s.ann.anonymous_storage_nurls.as_ref().map(Vec::len),
        Some(1)
    );
    assert!(s.ann.other.contains_key("my-version"));
    assert!(s.connections.is_some());
    assert!(!format!("{y:?}").contains("v2ca4oxc"));
    let again = ServersYaml::parse(&y.to_yaml_string().unwrap()).unwrap();
    assert_eq!(again.storage, y.storage);
    assert_eq!(
        ServersYaml::parse("").unwrap_err(),
        ServersYamlError::NotAMapping
    );
    assert_eq!(
        ServersYaml::parse("storage: 3").unwrap_err(),
        ServersYamlError::StorageNotAMapping
    );
    assert_eq!(
        ServersYaml::parse("storage: {1: {ann: {}}}").unwrap_err(),
        ServersYamlError::NonStringServerId
    );
    assert!(ServersYaml::parse("other: 1").unwrap().storage.is_empty());
}

/// PyYAML (YAML 1.1) must read our output back to the same data: checked with Tahoe's venv
/// when it is there.
#[test]
fn servers_yaml_readable_by_pyyaml() {
    let venv = std::env::var("LAFS_TAHOE_VENV")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| {
            std::path::PathBuf::from(std::env::var("HOME").unwrap_or_default())
                .join(".cache/lafs/tahoe-venv")
        });
    let py = venv.join("bin/python");
    if !py.exists() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "Tahoe venv missing under CI"
        );
        eprintln!("skipping: no Tahoe venv at {}", venv.display());
        return;
    }
    let mut y = ServersYaml::parse(SERVERS_YAML).unwrap();
    // Strings that YAML 1.1 would read as booleans or numbers must come back as strings.
    if let Some(s) = y.storage.values_mut().next() {
        s.ann.nickname = Some("yes".into());
        s.ann
            .other
            .insert("odd".into(), serde_yaml::Value::String("0o17".into()));
        s.ann
            .other
            .insert("odd2".into(), serde_yaml::Value::String("on".into()));
    }
    let text = y.to_yaml_string().unwrap();
    let out = std::process::Command::new(py)
        .args(["-c", "import sys,yaml,json; print(json.dumps(yaml.safe_load(sys.stdin.read()), sort_keys=True))"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(text.as_bytes())?;
            c.wait_with_output()
        })
        .unwrap();
    let got: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let ann = &got["storage"]["v0-cqiv4xn5p3mdbx4aewhiw5pvxvkpyjzxm5yrvwnrbpz7xwlhyyvq"]["ann"];
    assert_eq!(ann["nickname"], "yes");
    assert_eq!(ann["odd2"], "on");
    assert_eq!(ann["odd"], "0o17");
    assert_eq!(
        ann["anonymous-storage-NURLs"][0],
        "pb://JIj6ezHkdSBlHhrnezAgIC_mrVQHy4KAFyL-8ZNPGPM@10.0.0.2:35619/v2ca4oxc3gk4yymr2wcvnpu7xtryi7gl#v=1"
    );
}

#[test]
fn load_node_dir() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("private")).unwrap();
    std::fs::write(
        dir.path().join("tahoe.cfg"),
        format!("\u{feff}{CREATE_CLIENT_CFG}"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("private/convergence"),
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("private/servers.yaml"), SERVERS_YAML).unwrap();
    std::fs::write(
        dir.path().join("private/aliases"),
        format!("tahoe: {DIRCAP}\n"),
    )
    .unwrap();
    let nd = NodeDir::load(dir.path()).unwrap();
    assert_eq!(nd.convergence.unwrap().as_bytes(), &[0u8; 32]);
    assert!(nd.lease_secret.is_none());
    assert_eq!(nd.aliases.get("tahoe"), Some(DIRCAP));
    assert_eq!(nd.servers.storage.len(), 1);
    let empty = tempfile::tempdir().unwrap();
    let nd = NodeDir::load(empty.path()).unwrap();
    assert!(nd.config.storage_enabled);
}

proptest! {
    #[test]
    fn parsers_never_panic(s in "(\\PC|\n|\r|\t| ){0,200}") {
        let _ = Ini::parse(&s).map(|i| { for sec in i.sections() { for o in i.options(sec) { let _ = i.get(sec, o); } } });
        let _ = NodeConfig::parse(&s);
        let _ = ServersYaml::parse(&s);
        let _ = Aliases::parse(Some(s.as_bytes()), Some(s.as_bytes()));
        let _ = private::parse_secret(s.as_bytes());
        let _ = parse_abbreviated_size(&s);
        let _ = parse_duration(&s);
        let _ = parse_date(&s);
    }

    #[test]
    fn ini_shaped_never_panic(lines in proptest::collection::vec("[ \t]{0,2}(\\[[a-z\\]%()]{0,4}\\]|[a-zA-Z%()s]{0,4} ?[=:] ?[a-z%()s ]{0,6}|[#;].{0,3}|)", 0..12)) {
        let text = lines.join("\n");
        if let Ok(ini) = Ini::parse(&text) {
            for sec in ini.sections() { for o in ini.options(sec) { let _ = ini.get(sec, o); let _ = ini.get_bool(sec, o); } }
        }
    }

    /// Any alias the writer accepts is read back unchanged.
    #[test]
    fn aliases_write_read(entries in proptest::collection::vec(("[a-z0-9_.-]{1,8}", "URI:[A-Za-z0-9:]{1,20}"), 0..6)) {
        let mut a = Aliases::default();
        for (n, c) in &entries { a.insert(n, c); }
        let text = private::write_aliases(&a).unwrap();
        prop_assert_eq!(Aliases::parse(Some(text.as_bytes()), None).unwrap(), a);
    }
}
