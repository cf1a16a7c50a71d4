//! Tests of the directory layer. Expected bytes are built independently from the digest's
//! formulas (SHA-256, AES-CTR and the nonstandard HMAC straight from the `sha2`/`aes`/`ctr`
//! crates), never from this module's own output.

use super::*;
use proptest::prelude::*;
use sha2::{Digest, Sha256};
use std::sync::Mutex;

// ---- independent reference implementation of the digest's §0 and §5 formulas ----

fn ns(x: &[u8]) -> Vec<u8> {
    let mut v = format!("{}:", x.len()).into_bytes();
    v.extend_from_slice(x);
    v.push(b',');
    v
}

fn sha256d(x: &[u8]) -> [u8; 32] {
    Sha256::digest(Sha256::digest(x)).into()
}

fn ref_rwcapdata(writekey: &[u8; 16], rw: &[u8]) -> Vec<u8> {
    use aes::cipher::{KeyIvInit, StreamCipher};
    let mut t = ns(b"allmydata_dirnode_child_rwcap_to_salt_v1");
    t.extend_from_slice(rw);
    let salt = &sha256d(&t)[..16];
    let mut t = ns(b"allmydata_mutable_writekey_and_salt_to_dirnode_child_capkey_v1");
    t.extend(ns(salt));
    t.extend(ns(writekey));
    let key: [u8; 16] = sha256d(&t)[..16].try_into().unwrap();
    let mut ct = rw.to_vec();
    ctr::Ctr128BE::<aes::Aes128>::new(&key.into(), &[0u8; 16].into()).apply_keystream(&mut ct);
    let mut salted = salt.to_vec();
    salted.extend_from_slice(&ct);
    let inner: Vec<u8> = key.iter().map(|b| b ^ 0x36).chain(salted.clone()).collect();
    let outer: Vec<u8> = key
        .iter()
        .map(|b| b ^ 0x5c)
        .chain(Sha256::digest(&inner))
        .collect();
    salted.extend_from_slice(&Sha256::digest(&outer));
    salted
}

fn ref_entry(name: &str, ro: &[u8], rwcapdata: &[u8], md: &str) -> Vec<u8> {
    let mut e = ns(name.as_bytes());
    e.extend(ns(ro));
    e.extend(ns(rwcapdata));
    e.extend(ns(md.as_bytes()));
    ns(&e)
}

const WK: [u8; 16] = *b"0123456789abcdef";
const SSK_W: &[u8] =
    b"URI:SSK:vrykn3pffwzbdbdktzxlvqfnpm:i4pt7qmz4f3mxinosmemimygn2h4qtecydo2jagsokqoyd7lppea";
const SSK_R: &[u8] =
    b"URI:SSK-RO:hhtw3vthjcwdnkucy5agftuqwm:i4pt7qmz4f3mxinosmemimygn2h4qtecydo2jagsokqoyd7lppea";
const CHK: &[u8] = b"URI:CHK:ib5vq2cqvqbctvkppkfu7dhjim:ny4bbrsogj6qbdglgdqlb6jzjqgtnsfmx5mqedtttybrbxqixpva:3:10:1234";

fn md(s: &str) -> Metadata {
    Metadata::from_json(s.as_bytes()).unwrap()
}

fn mutable() -> DirKind {
    DirKind::Mutable { writekey: Some(WK) }
}

// ---- packing: known bytes ----

#[test]
fn digest_constants() {
    assert_eq!(
        crate::crypto::hash::mutable_rwcap_salt_hash(b""),
        [
            0xd0, 0x5f, 0x73, 0x8a, 0x04, 0x3b, 0x84, 0x04, 0xb7, 0x49, 0x5c, 0xcb, 0x5d, 0x55,
            0x01, 0x86
        ]
    );
    assert_eq!(SSK_W.len(), 87);
    assert_eq!(pack::encrypt_rw_uri(&WK, b"").len(), 48);
    assert_eq!(
        &pack::encrypt_rw_uri(&WK, b"")[..16],
        &ref_rwcapdata(&WK, b"")[..16]
    );
    assert_eq!(pack::encrypt_rw_uri(&WK, SSK_W).len(), 135);
}

#[test]
fn known_bytes_mutable_directory() {
    let note = r#"{"note": "caf\u00e9", "tahoe": {"linkcrtime": 1795946854.2489998, "linkmotime": 1795946854.2489998}}"#;
    let sub = Child::new(Some(SSK_W.to_vec()), Some(SSK_R.to_vec()), md(note));
    let file = Child::new(None, Some(CHK.to_vec()), md("{}"));
    let unknown_ro = Child::new(
        None,
        Some(b"ro.x-future:abc".to_vec()),
        md(r#"{"k": [1, 2.5]}"#),
    );
    let unknown_imm = Child::new(None, Some(b"imm.x-future:def".to_vec()), md("{}"));
    let got = pack_children(
        [
            ("sub", &sub),
            ("file", &file),
            ("u1", &unknown_ro),
            ("u0", &unknown_imm),
        ],
        Some(&WK),
        false,
    )
    .unwrap();
    let mut want = Vec::new();
    want.extend(ref_entry("file", CHK, &ref_rwcapdata(&WK, b""), "{}"));
    want.extend(ref_entry("sub", SSK_R, &ref_rwcapdata(&WK, SSK_W), note));
    // In a mutable directory `imm.` is kept, `ro.` is stripped.
    want.extend(ref_entry(
        "u0",
        b"imm.x-future:def",
        &ref_rwcapdata(&WK, b""),
        "{}",
    ));
    want.extend(ref_entry(
        "u1",
        b"x-future:abc",
        &ref_rwcapdata(&WK, b""),
        r#"{"k": [1, 2.5]}"#,
    ));
    assert_eq!(got, want);

    // And back: the write cap is recovered with the writekey, the ro slot is as stored.
    let dir = Directory::unpack(mutable(), &got).unwrap();
    assert_eq!(dir.len(), 4);
    let s = dir.get("sub").unwrap();
    assert_eq!(s.rw_uri(), Some(SSK_W));
    assert_eq!(s.ro_uri(), Some(SSK_R));
    assert_eq!(s.metadata.to_json(), note);
    assert_eq!(dir.get("file").unwrap().rw_uri(), None);
    assert_eq!(dir.get("u1").unwrap().ro_uri(), Some(&b"x-future:abc"[..]));
    assert_eq!(dir.pack().unwrap(), want);
}

#[test]
fn known_bytes_immutable_and_without_writekey() {
    let file = Child::new(None, Some(CHK.to_vec()), md("{}"));
    let unk = Child::new(None, Some(b"imm.x-future:def".to_vec()), md("{}"));
    let got = pack_children([("f", &file), ("u", &unk)], None, true).unwrap();
    let mut want = ref_entry("f", CHK, b"", "{}");
    want.extend(ref_entry("u", b"x-future:def", b"", "{}"));
    assert_eq!(got, want);
    let dir = Directory::unpack(DirKind::Immutable, &got).unwrap();
    assert_eq!(dir.pack().unwrap(), want);

    // A write cap cannot go into an immutable directory.
    let w = Child::new(Some(SSK_W.to_vec()), None, md("{}"));
    assert_eq!(
        pack_children([("w", &w)], None, true),
        Err(DirnodeError::MustBeDeepImmutable("w".into()))
    );
    // Packing a mutable directory without the writekey leaves rwcapdata empty.
    let got = pack_children([("w", &w)], None, false).unwrap();
    assert_eq!(got, ref_entry("w", b"", b"", "{}"));
    // The empty directory is the empty string.
    assert_eq!(pack_children([], Some(&WK), false).unwrap(), b"");
    assert!(Directory::unpack(mutable(), b"").unwrap().is_empty());
}

// ---- unpacking ----

#[test]
fn read_only_view_hides_write_caps() {
    let sub = Child::new(Some(SSK_W.to_vec()), Some(SSK_R.to_vec()), md("{}"));
    let body = pack_children([("sub", &sub)], Some(&WK), false).unwrap();
    let ro = Directory::unpack(DirKind::Mutable { writekey: None }, &body).unwrap();
    let c = ro.get("sub").unwrap();
    assert_eq!(c.rw_uri(), None);
    assert_eq!(c.ro_uri(), Some(SSK_R));
    assert_eq!(ro.pack(), Err(DirnodeError::NotWriteable));
    // Debug output never shows a cap.
    let dbg = format!("{c:?} {ro:?} {:?}", ro.kind());
    assert!(!dbg.contains("URI:"), "{dbg}");
    let rw = Directory::unpack(mutable(), &body).unwrap();
    let dbg = format!("{:?}", rw.get("sub").unwrap());
    assert!(!dbg.contains("URI:") && !dbg.contains("vrykn"), "{dbg}");
}

#[test]
fn caps_are_rstripped_and_empty_is_none() {
    let body = ref_entry("a", b"URI:X  ", &ref_rwcapdata(&WK, b"URI:W "), "{}");
    let dir = Directory::unpack(mutable(), &body).unwrap();
    assert_eq!(dir.get("a").unwrap().ro_uri(), Some(&b"URI:X"[..]));
    assert_eq!(dir.get("a").unwrap().rw_uri(), Some(&b"URI:W"[..]));
    let body = ref_entry("a", b"   ", &ref_rwcapdata(&WK, b"  "), "{}");
    let dir = Directory::unpack(mutable(), &body).unwrap();
    assert_eq!(dir.get("a").unwrap().ro_uri(), None);
    assert_eq!(dir.get("a").unwrap().rw_uri(), None);
    // Short rwcapdata (Python slicing gives an empty ciphertext) and a bad MAC are tolerated.
    for short in [&b""[..], b"x", &[7u8; 47][..], &[7u8; 48][..]] {
        let dir = Directory::unpack(mutable(), &ref_entry("a", b"", short, "{}")).unwrap();
        assert_eq!(dir.get("a").unwrap().rw_uri(), None);
    }
    let mut data = ref_rwcapdata(&WK, SSK_W);
    let n = data.len();
    data[n - 1] ^= 1;
    let dir = Directory::unpack(mutable(), &ref_entry("a", b"", &data, "{}")).unwrap();
    assert_eq!(dir.get("a").unwrap().rw_uri(), Some(SSK_W));
}

#[test]
fn malformed_bodies_are_errors() {
    let e = |kind, body: &[u8]| Directory::unpack(kind, body).unwrap_err();
    assert_eq!(
        e(DirKind::Immutable, &ref_entry("a", b"", b"x", "{}")),
        DirnodeError::RwcapInImmutable
    );
    assert_eq!(
        e(mutable(), &ref_entry("a", b"", b"", "[]")),
        DirnodeError::MetadataNotObject
    );
    assert_eq!(
        e(mutable(), &ref_entry("a", b"", b"", "{x")),
        DirnodeError::MetadataNotJson
    );
    let mut bad_name = ns(&[0xff]);
    bad_name.extend(ns(b""));
    bad_name.extend(ns(b""));
    bad_name.extend(ns(b"{}"));
    assert_eq!(e(mutable(), &ns(&bad_name)), DirnodeError::NameNotUtf8);
    assert!(matches!(e(mutable(), b"3:abc"), DirnodeError::Framing(_)));
    assert!(matches!(
        e(mutable(), &ns(b"1:a,")),
        DirnodeError::Framing(_)
    ));
}

#[test]
fn nfd_names_are_stored_and_found_as_nfc() {
    let nfd = "cafe\u{301}";
    let nfc = "caf\u{e9}";
    let store = MemoryStore::new(Some(WK));
    let d = Dirnode::new(store.clone()).with_clock(|| 7.0);
    d.set_child(nfd, None, Some(CHK.to_vec()), None, true)
        .unwrap();
    let body = store.body();
    let md = r#"{"tahoe": {"linkcrtime": 7.0, "linkmotime": 7.0}}"#;
    assert_eq!(body, ref_entry(nfc, CHK, &ref_rwcapdata(&WK, b""), md));
    assert!(d.lookup(nfd).unwrap().is_some());
    assert!(d.lookup(nfc).unwrap().is_some());
    assert_eq!(d.list().unwrap().iter().next().unwrap().0, nfc);
    // A body written by someone else with an NFD name is read as NFC.
    let dir = Directory::unpack(mutable(), &ref_entry(nfd, CHK, b"", "{}")).unwrap();
    assert!(dir.get(nfc).is_some());
}

#[test]
fn unchanged_entries_survive_rewrites_verbatim() {
    // Written by "another client": compact JSON, a huge integer, a random (non-derived) salt.
    let mut odd = vec![9u8; 16];
    odd.extend_from_slice(b"URI:SSK:odd");
    odd.extend_from_slice(&[1u8; 32]);
    let keep = ref_entry(
        "keep",
        b"URI:X",
        &odd,
        r#"{"big":123456789012345678901234567890,"t":1e300}"#,
    );
    let store = MemoryStore::with_body(Some(WK), keep.clone());
    let d = Dirnode::new(store.clone()).with_clock(|| 1.5);
    d.set_child("new", None, Some(CHK.to_vec()), None, true)
        .unwrap();
    let body = store.body();
    assert!(
        body.starts_with(&keep),
        "untouched entry must be byte-identical"
    );
    // Unknown keys of a child we touch survive, in order, with the tahoe times updated.
    let body = ref_entry(
        "a",
        CHK,
        &ref_rwcapdata(&WK, b""),
        r#"{"zz": {"nested": [1, "\u00e9"]}, "mtime": 5.0, "tahoe": {"linkcrtime": 1.0, "linkmotime": 1.0}}"#,
    );
    let store = MemoryStore::with_body(Some(WK), body);
    let d = Dirnode::new(store.clone()).with_clock(|| 2.0);
    d.set_child("a", None, Some(CHK.to_vec()), None, true)
        .unwrap();
    assert_eq!(
        store.body(),
        ref_entry(
            "a",
            CHK,
            &ref_rwcapdata(&WK, b""),
            r#"{"zz": {"nested": [1, "\u00e9"]}, "mtime": 5.0, "tahoe": {"linkcrtime": 1.0, "linkmotime": 2.0}}"#,
        )
    );
}

// ---- operations ----

#[test]
fn basic_operations() {
    let store = MemoryStore::new(Some(WK));
    let d = Dirnode::new(store.clone()).with_clock(|| 10.0);
    d.set_child(
        "f",
        None,
        Some(CHK.to_vec()),
        Some(md(r#"{"mtime": 3.0}"#)),
        true,
    )
    .unwrap();
    d.set_child("s", Some(SSK_W.to_vec()), Some(SSK_R.to_vec()), None, false)
        .unwrap();
    assert_eq!(
        d.set_child("s", None, None, None, false),
        Err(DirnodeError::ExistingChild("s".into()))
    );
    let f = d.lookup("f").unwrap().unwrap();
    assert_eq!(f.metadata.mtime(), Some(3.0));
    assert_eq!(f.metadata.linkcrtime(), Some(10.0));
    assert_eq!(d.lookup("s").unwrap().unwrap().rw_uri(), Some(SSK_W));

    // Rename: one rewrite, caps move, the link gets fresh tahoe times (Tahoe's move_child_to).
    let before = store.replace_count();
    let d = Dirnode::new(store.clone()).with_clock(|| 20.0);
    d.rename("f", "g", false).unwrap();
    assert_eq!(store.replace_count(), before + 1);
    assert!(d.lookup("f").unwrap().is_none());
    let g = d.lookup("g").unwrap().unwrap();
    assert_eq!(g.ro_uri(), Some(CHK));
    assert_eq!(
        g.metadata.to_json(),
        r#"{"mtime": 3.0, "tahoe": {"linkcrtime": 20.0, "linkmotime": 20.0}}"#
    );
    assert_eq!(
        d.rename("g", "s", false),
        Err(DirnodeError::ExistingChild("s".into()))
    );
    assert_eq!(
        d.rename("nope", "x", true),
        Err(DirnodeError::NoSuchChild("nope".into()))
    );
    d.rename("g", "g", false).unwrap();

    // Metadata: no-write drops the write cap.
    d.set_metadata("s", md(r#"{"no-write": true}"#)).unwrap();
    let s = d.lookup("s").unwrap().unwrap();
    assert_eq!(s.rw_uri(), None);
    assert_eq!(s.ro_uri(), Some(SSK_R));
    assert_eq!(s.metadata.linkcrtime(), Some(10.0));
    assert_eq!(s.metadata.linkmotime(), Some(20.0));

    let removed = d.remove("s").unwrap();
    assert_eq!(removed.ro_uri(), Some(SSK_R));
    assert_eq!(
        d.remove("s").unwrap_err(),
        DirnodeError::NoSuchChild("s".into())
    );

    // A read-only handle lists without write caps and cannot write.
    d.set_child("s", Some(SSK_W.to_vec()), Some(SSK_R.to_vec()), None, true)
        .unwrap();
    let ro = Dirnode::new(store.read_only());
    assert_eq!(ro.lookup("s").unwrap().unwrap().rw_uri(), None);
    assert_eq!(
        ro.set_child("x", None, None, None, true),
        Err(DirnodeError::NotWriteable)
    );
}

#[test]
fn batch_of_1000_adds_is_one_replace() {
    let store = MemoryStore::new(Some(WK));
    let d = Dirnode::new(store.clone()).with_clock(|| 1.0);
    let changes: Vec<Change> = (0..1000)
        .map(|i| Change::Set {
            name: format!("file{i:04}"),
            rw_uri: None,
            ro_uri: Some(format!("URI:LIT:{i}").into_bytes()),
            metadata: None,
            overwrite: false,
        })
        .collect();
    let report = d.apply(&changes).unwrap();
    assert!(report.published && report.conflicts.is_empty());
    assert_eq!(store.replace_count(), 1);
    assert_eq!(d.list().unwrap().len(), 1000);
    // A batch that changes nothing publishes nothing.
    let noop = [Change::Remove {
        name: "absent".into(),
        must_exist: false,
    }];
    assert!(!d.apply(&noop).unwrap().published);
    assert_eq!(store.replace_count(), 1);
    // A failing change aborts the whole batch.
    let bad = [
        Change::Remove {
            name: "file0001".into(),
            must_exist: true,
        },
        Change::Remove {
            name: "absent".into(),
            must_exist: true,
        },
    ];
    assert!(d.apply(&bad).is_err());
    assert_eq!(store.replace_count(), 1);
    assert!(d.lookup("file0001").unwrap().is_some());
}

type OtherWriter = Box<dyn FnOnce(&MemoryStore) + Send>;

/// A store where another writer acts (once) between our read and our replace.
struct RacingStore {
    inner: MemoryStore,
    other: Mutex<Option<OtherWriter>>,
}

impl DirectoryStore for RacingStore {
    type Version = u64;
    fn read(&self) -> Result<(Vec<u8>, u64), StoreError> {
        self.inner.read()
    }
    fn replace(&self, expected: &u64, new: Vec<u8>) -> Result<u64, StoreError> {
        if let Some(f) = self.other.lock().unwrap().take() {
            f(&self.inner);
        }
        self.inner.replace(expected, new)
    }
    fn writekey(&self) -> Option<[u8; 16]> {
        self.inner.writekey()
    }
}

fn racing(
    store: &MemoryStore,
    other: impl FnOnce(&MemoryStore) + Send + 'static,
) -> Dirnode<RacingStore> {
    Dirnode::new(RacingStore {
        inner: store.clone(),
        other: Mutex::new(Some(Box::new(other))),
    })
    .with_clock(|| 5.0)
}

fn set(name: &str, ro: &[u8]) -> Change {
    Change::Set {
        name: name.into(),
        rw_uri: None,
        ro_uri: Some(ro.to_vec()),
        metadata: None,
        overwrite: true,
    }
}

#[test]
fn concurrent_non_overlapping_changes_are_merged() {
    let store = MemoryStore::new(Some(WK));
    Dirnode::new(store.clone())
        .apply(&[set("a", b"URI:A"), set("b", b"URI:B")])
        .unwrap();
    let d = racing(&store, |s| {
        Dirnode::new(s.clone())
            .apply(&[
                set("x", b"URI:X"),
                Change::Remove {
                    name: "b".into(),
                    must_exist: true,
                },
            ])
            .unwrap();
    });
    let report = d
        .apply(&[
            set("y", b"URI:Y"),
            Change::Rename {
                from: "a".into(),
                to: "c".into(),
                overwrite: false,
            },
        ])
        .unwrap();
    assert!(report.published);
    assert!(report.conflicts.is_empty());
    assert_eq!(report.attempts, 2);
    let names: Vec<String> = d
        .list()
        .unwrap()
        .iter()
        .map(|(n, _)| n.to_string())
        .collect();
    assert_eq!(names, ["c", "x", "y"]);
    assert_eq!(store.replace_count(), 3);
}

#[test]
fn concurrent_overlapping_changes_are_reported_not_overwritten() {
    let store = MemoryStore::new(Some(WK));
    Dirnode::new(store.clone())
        .apply(&[set("a", b"URI:A"), set("b", b"URI:B")])
        .unwrap();
    let d = racing(&store, |s| {
        Dirnode::new(s.clone())
            .apply(&[set("a", b"URI:A2")])
            .unwrap();
    });
    let report = d
        .apply(&[
            Change::Remove {
                name: "a".into(),
                must_exist: true,
            },
            set("z", b"URI:Z"),
            Change::Rename {
                from: "b".into(),
                to: "a".into(),
                overwrite: true,
            },
        ])
        .unwrap();
    assert_eq!(
        report.conflicts,
        vec![
            ChangeConflict {
                index: 0,
                names: vec!["a".into()]
            },
            ChangeConflict {
                index: 2,
                names: vec!["a".into()]
            },
        ]
    );
    let dir = d.list().unwrap();
    assert_eq!(dir.get("a").unwrap().ro_uri(), Some(&b"URI:A2"[..]));
    assert_eq!(dir.get("b").unwrap().ro_uri(), Some(&b"URI:B"[..]));
    assert_eq!(dir.get("z").unwrap().ro_uri(), Some(&b"URI:Z"[..]));
    assert!(report.removed.is_empty());

    // The single-op API turns the overlap into a typed error.
    let d = racing(&store, |s| {
        Dirnode::new(s.clone()).remove("z").unwrap();
    });
    assert_eq!(
        d.set_child("z", None, Some(b"URI:Z3".to_vec()), None, true),
        Err(DirnodeError::Conflict(vec!["z".into()]))
    );
    assert!(d.lookup("z").unwrap().is_none());
}

// ---- properties ----

fn json_leaf() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value;
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |x| x.is_finite())
            .prop_map(Value::from),
        any::<String>().prop_map(Value::String),
    ]
}

fn json_value() -> impl Strategy<Value = serde_json::Value> {
    json_leaf().prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::Array),
            proptest::collection::vec((any::<String>(), inner), 0..4)
                .prop_map(|kv| serde_json::Value::Object(kv.into_iter().collect())),
        ]
    })
}

fn metadata_strategy() -> impl Strategy<Value = Metadata> {
    proptest::collection::vec((any::<String>(), json_value()), 0..4)
        .prop_map(|kv| Metadata::from_map(kv.into_iter().collect()))
}

fn cap_strategy() -> impl Strategy<Value = Option<Vec<u8>>> {
    proptest::option::of("URI:[A-Za-z0-9:]{0,90}".prop_map(String::into_bytes))
}

type ModelChild = (String, Option<Vec<u8>>, Option<Vec<u8>>, Metadata);

fn children_strategy() -> impl Strategy<Value = Vec<ModelChild>> {
    proptest::collection::vec(
        (
            prop_oneof![
                "[a-z]{1,6}",
                any::<String>(),
                "(e\u{301}|\u{e9}|a|\u{1F600}){1,3}"
            ],
            cap_strategy(),
            cap_strategy(),
            metadata_strategy(),
        ),
        0..8,
    )
}

proptest! {
    #[test]
    fn prop_pack_unpack_round_trip(children in children_strategy(), writeable in any::<bool>()) {
        let (kind, wk) = if writeable { (mutable(), Some(&WK)) } else { (DirKind::Immutable, None) };
        let built: Vec<(String, Child)> = children
            .into_iter()
            .map(|(n, rw, ro, m)| (n, Child::new(if writeable { rw } else { None }, ro, m)))
            .collect();
        let body = pack_children(built.iter().map(|(n, c)| (n.as_str(), c)), wk, !writeable).unwrap();
        let dir = Directory::unpack(kind, &body).unwrap();
        // Reference model: NFC names, a later duplicate wins.
        let mut model = std::collections::BTreeMap::new();
        for (n, c) in &built {
            model.insert(normalize(n), c.clone());
        }
        prop_assert_eq!(dir.len(), model.len());
        for (name, want) in &model {
            prop_assert_eq!(dir.get(name), Some(want));
        }
        prop_assert_eq!(dir.pack().unwrap(), body.clone());
        // Re-encoding from the parsed model (no cached entry bytes) gives the same bytes.
        let again = pack_children(dir.iter(), wk, !writeable).unwrap();
        prop_assert_eq!(again, body);
    }

    #[test]
    fn prop_unpack_arbitrary_bytes_never_panics(data in proptest::collection::vec(any::<u8>(), 0..300)) {
        for kind in [mutable(), DirKind::Mutable { writekey: None }, DirKind::Immutable] {
            if let Ok(d) = Directory::unpack(kind, &data) {
                let _ = d.pack();
            }
        }
    }

    #[test]
    fn prop_unpack_structured_garbage_never_panics(
        fields in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..60), 4..9)
    ) {
        // Well-framed entries with arbitrary field contents reach the deeper parsing paths.
        let mut inner = Vec::new();
        for f in &fields[..4] {
            inner.extend(ns(f));
        }
        let mut body = ns(&inner);
        for f in &fields[4..] {
            body.extend(ns(f));
        }
        for kind in [mutable(), DirKind::Mutable { writekey: None }, DirKind::Immutable] {
            if let Ok(d) = Directory::unpack(kind, &body) {
                if let Ok(packed) = d.pack() {
                    // Canonicalisation is a fixed point, and a canonical body re-packs verbatim.
                    let again = Directory::unpack(kind, &packed).unwrap();
                    prop_assert_eq!(again.pack().unwrap(), packed);
                    if fields.len() == 4 && normalize(std::str::from_utf8(&fields[0]).unwrap()).as_bytes() == &fields[0][..] {
                        prop_assert_eq!(d.pack().unwrap(), body.clone());
                    }
                }
            }
        }
    }

    #[test]
    fn prop_operations_match_model(ops in proptest::collection::vec((0u8..3, 0usize..4, 0usize..4), 1..20)) {
        // Reference model: name -> ro cap. Ops: 0 = set, 1 = remove (if present), 2 = rename.
        let names = ["a", "b", "\u{e9}", "e\u{301}x"];
        let store = MemoryStore::new(Some(WK));
        let d = Dirnode::new(store.clone()).with_clock(|| 1.0);
        let mut model = std::collections::BTreeMap::new();
        let mut batch = Vec::new();
        for (step, (op, i, j)) in ops.into_iter().enumerate() {
            let (n, m) = (names[i], names[j]);
            match op {
                0 => {
                    let cap = format!("URI:LIT:{step}").into_bytes();
                    model.insert(normalize(n), cap.clone());
                    batch.push(set(n, &cap));
                }
                1 => {
                    model.remove(&normalize(n));
                    batch.push(Change::Remove { name: n.into(), must_exist: false });
                }
                _ => {
                    if let Some(cap) = model.get(&normalize(n)).cloned() {
                        model.remove(&normalize(n));
                        model.insert(normalize(m), cap);
                        batch.push(Change::Rename { from: n.into(), to: m.into(), overwrite: true });
                    }
                }
            }
        }
        d.apply(&batch).unwrap();
        let dir = d.list().unwrap();
        let got: std::collections::BTreeMap<String, Vec<u8>> = dir
            .iter()
            .map(|(n, c)| (n.to_string(), c.ro_uri().unwrap().to_vec()))
            .collect();
        prop_assert_eq!(got, model);
        prop_assert!(store.replace_count() <= 1);
    }
}

/// A store whose first `replace` is applied but reported as a conflict: what a mutable publish
/// racing another writer can do when its shares still win on enough servers.
struct WonButConflicted {
    inner: MemoryStore,
    first: Mutex<bool>,
}

impl DirectoryStore for WonButConflicted {
    type Version = u64;

    fn read(&self) -> Result<(Vec<u8>, u64), StoreError> {
        self.inner.read()
    }

    fn replace(&self, expected: &u64, new: Vec<u8>) -> Result<u64, StoreError> {
        let v = self.inner.replace(expected, new)?;
        let mut first = self.first.lock().unwrap();
        if std::mem::take(&mut *first) {
            return Err(StoreError::Conflict);
        }
        Ok(v)
    }

    fn writekey(&self) -> Option<[u8; 16]> {
        self.inner.writekey()
    }
}

/// Regression: a batch whose publish won although it reported a conflict named its own,
/// already-applied changes as conflicts (seen as a flaky `Conflict(["y"])` with two writers
/// adding different names to one directory over the network).
#[test]
fn own_change_already_applied_after_a_conflict_is_not_a_conflict() {
    let store = MemoryStore::new(Some(WK));
    let d = Dirnode::new(WonButConflicted {
        inner: store.clone(),
        first: Mutex::new(true),
    })
    .with_clock(|| 5.0);
    let strict_add = Change::Set {
        name: "y".into(),
        rw_uri: None,
        ro_uri: Some(b"URI:Y".to_vec()),
        metadata: None,
        overwrite: false,
    };
    let report = d.apply(&[strict_add]).unwrap();
    assert!(report.conflicts.is_empty(), "{:?}", report.conflicts);
    let names: Vec<String> = d
        .list()
        .unwrap()
        .iter()
        .map(|(n, _)| n.to_string())
        .collect();
    assert_eq!(names, ["y"]);
    assert_eq!(store.replace_count(), 1);
}
