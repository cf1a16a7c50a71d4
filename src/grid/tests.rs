//! Grid tests: URL round trips, seeds, permutation, happiness against brute force.

use super::*;
use crate::config::Announcement;
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};

const FURL: &str = "pb://sdsvwb4i5uasumonzikmsbfn3gy5v7db@tcp:10.0.0.2:35619,tor:abc.onion:80,[::1]:9/v2ca4oxc3gk4yymr2wcvnpu7xtryi7gl";
// The digest's example NURL (§6.1).
const NURL: &str = "pb://JIj6ezHkdSBlHhrnezAgIC_mrVQHy4KAFyL-8ZNPGPM@example.com:443/eiu2i7p6d6mm4ihmss7ieou5hac3wn6b#v=1";

#[test]
fn furl_parse_display() {
    let f = Furl::parse(FURL).unwrap();
    assert_eq!(f.to_string(), FURL);
    assert_eq!(
        f.tubid().to_vec(),
        crate::util::base32::decode("sdsvwb4i5uasumonzikmsbfn3gy5v7db").unwrap()
    );
    assert_eq!(
        f.hints()[0].endpoint(),
        Some((HintKind::Tcp, "10.0.0.2", 35619))
    );
    assert_eq!(
        f.hints()[1].endpoint(),
        Some((HintKind::Tor, "abc.onion", 80))
    );
    assert_eq!(f.hints()[2].endpoint(), Some((HintKind::Tcp, "::1", 9)));
    assert!(!format!("{f:?}").contains("v2ca4"));
    // Tahoe lowercases the TubID.
    assert_eq!(
        Furl::parse(&FURL.replace("sdsvwb4i", "SDSVWB4I")).unwrap(),
        f
    );
    for bad in [
        "http://x@y/z",
        "pb://sdsvwb4i5uasumonzikmsbfn3gy5v7db/z",
        "pb://short@h:1/z",
        "pb://sdsvwb4i5uasumonzikmsbfn3gy5v7db@h:1/",
        "pb://sdsvwb4i5uasumonzikmsbfn3gy5v7db@h:1,,x/s",
    ] {
        assert!(Furl::parse(bad).is_err(), "{bad}");
    }
}

#[test]
fn nurl_parse_display() {
    let n = Nurl::parse(NURL).unwrap();
    assert_eq!(n.to_string(), NURL);
    assert_eq!(
        (n.host(), n.port(), n.scheme()),
        ("example.com", 443, NurlScheme::Pb)
    );
    assert_eq!(n.base_url(), "https://example.com:443");
    assert_eq!(n.swissnum(), "eiu2i7p6d6mm4ihmss7ieou5hac3wn6b");
    let v6 = NURL
        .replace("example.com", "[2001:db8::1]")
        .replace("pb://", "pb+tor://");
    let n6 = Nurl::parse(&v6).unwrap();
    assert_eq!(n6.to_string(), v6);
    assert_eq!(n6.base_url(), "https://[2001:db8::1]:443");
    for bad in [
        NURL.replace("#v=1", ""),
        NURL.replace("v=1", "v=2"),
        NURL.replace("GPM@", "GPN@"),
        NURL.replace("GPM@", "GP@"),
        NURL.replace(":443", ""),
        NURL.replace("example.com", "2001:db8::1"),
        NURL.replace("pb://", "https://"),
    ] {
        assert!(Nurl::parse(&bad).is_err(), "{bad}");
    }
}

#[test]
fn seeds() {
    let key = "cqiv4xn5p3mdbx4aewhiw5pvxvkpyjzxm5yrvwnrbpz7xwlhyyvq";
    let id = format!("v0-{key}");
    assert_eq!(
        permutation_seed(&id, None).unwrap(),
        crate::util::base32::decode(key).unwrap()
    );
    assert_eq!(permutation_seed(&id, Some("aaaa")).unwrap(), vec![0, 0]);
    assert!(permutation_seed(&id, Some("AAAA")).is_err());
    assert!(permutation_seed(&id.to_uppercase().replace("V0-", "v0-"), None).is_err());
    use sha2::Digest;
    assert_eq!(
        permutation_seed("server-7", None).unwrap(),
        sha2::Sha256::digest(b"server-7").to_vec()
    );
    let ann = Announcement {
        anonymous_storage_furl: Some(FURL.into()),
        anonymous_storage_nurls: Some(vec![NURL.into()]),
        ..Default::default()
    };
    let d = StorageServerDesc::from_announcement(&id, &ann).unwrap();
    assert_eq!(d.lease_seed, Furl::parse(FURL).unwrap().tubid());
    assert!(d.uses_http(false) && !d.uses_http(true));
    let no_furl = Announcement {
        anonymous_storage_furl: None,
        ..ann.clone()
    };
    assert_eq!(
        StorageServerDesc::from_announcement(&id, &no_furl),
        Err(ServerError::NoFurl)
    );
}

fn desc(id: &str, seed: &[u8]) -> StorageServerDesc {
    StorageServerDesc {
        server_id: id.into(),
        nickname: String::new(),
        furl: None,
        nurls: vec![],
        permutation_seed: seed.to_vec(),
        lease_seed: [0; 20],
    }
}

#[test]
fn permutation_order() {
    use sha1::Digest;
    let servers: Vec<_> = (0..8u8).map(|i| desc(&format!("s{i}"), &[i; 32])).collect();
    let si = [7u8; 16];
    let key = |s: &StorageServerDesc| {
        let mut h = sha1::Sha1::new();
        h.update(si);
        h.update(&s.permutation_seed);
        h.finalize().to_vec()
    };
    let mut expected: Vec<&StorageServerDesc> = servers.iter().collect();
    expected.sort_by_key(|s| key(s));
    assert_eq!(permuted_servers(&servers, &si, &[]), expected);
    let got = permuted_servers(&servers, &si, &["s5".into(), "s2".into()]);
    let first: BTreeSet<_> = got[..2].iter().map(|s| s.server_id.as_str()).collect();
    assert_eq!(first, BTreeSet::from(["s2", "s5"]));
    assert!(key(got[0]) < key(got[1]));
    // Equal seeds keep input order (stable sort, like Python's sorted).
    let twins = vec![desc("b", b"x"), desc("a", b"x")];
    assert_eq!(permuted_servers(&twins, &si, &[])[0].server_id, "b");
}

fn sharemap(pairs: &[(u16, u32)]) -> BTreeMap<u16, BTreeSet<u32>> {
    let mut m: BTreeMap<u16, BTreeSet<u32>> = BTreeMap::new();
    for (sh, srv) in pairs {
        m.entry(*sh).or_default().insert(*srv);
    }
    m
}

#[test]
fn happiness_examples() {
    // happinessutil.servers_of_happiness docstring: server 1 holds 1,2,3,4; 2 holds 6; 3 holds 3;
    // 4 holds 4; 5 holds 2 -> 5.
    let m = sharemap(&[
        (1, 1),
        (2, 1),
        (3, 1),
        (4, 1),
        (6, 2),
        (3, 3),
        (4, 4),
        (2, 5),
    ]);
    assert_eq!(servers_of_happiness(&m), 5);
    // servers-of-happiness.rst: k=3, ten servers each holding all three shares -> 3.
    let all: Vec<(u16, u32)> = (0..10)
        .flat_map(|s| (0..3).map(move |sh| (sh, s)))
        .collect();
    assert_eq!(servers_of_happiness(&sharemap(&all)), 3);
    assert_eq!(servers_of_happiness::<u32>(&BTreeMap::new()), 0);
}

fn brute_force(m: &BTreeMap<u16, BTreeSet<u32>>) -> usize {
    fn go(shares: &[(u16, Vec<u32>)], used: &mut BTreeSet<u32>) -> usize {
        let Some(((_, srvs), rest)) = shares.split_first() else {
            return 0;
        };
        let mut best = go(rest, used);
        for s in srvs {
            if used.insert(*s) {
                best = best.max(1 + go(rest, used));
                used.remove(s);
            }
        }
        best
    }
    let shares: Vec<(u16, Vec<u32>)> = m
        .iter()
        .map(|(k, v)| (*k, v.iter().copied().collect()))
        .collect();
    go(&shares, &mut BTreeSet::new())
}

fn request(
    n_servers: u32,
    readonly: &[u32],
    existing: &BTreeMap<u32, BTreeSet<u16>>,
    k: u16,
    happy: u16,
    total: u16,
) -> PlacementRequest<u32> {
    PlacementRequest {
        candidates: (0..n_servers)
            .map(|id| Candidate {
                id,
                max_share_size: if readonly.contains(&id) { 10 } else { 1000 },
            })
            .collect(),
        allocated_size: 100,
        existing: existing.clone(),
        needed: k,
        happy,
        total,
    }
}

#[test]
fn placement_basic() {
    // Ten fresh servers, 3-of-10, happy 7: one share each.
    let p = place(&request(10, &[], &BTreeMap::new(), 3, 7, 10)).unwrap();
    assert_eq!(p.shares.len(), 10);
    assert_eq!(p.happiness, 10);
    // Only 4 servers: all shares placed, happiness 4 < 7 -> Tahoe's message.
    let err = place(&request(4, &[], &BTreeMap::new(), 3, 7, 10)).unwrap_err();
    assert_eq!(
        err,
        PlacementError::Unhappy {
            peer_count: 4,
            k: 3,
            happy: 7,
            effective_happy: 4
        }
    );
    assert!(err
        .to_string()
        .starts_with("shares could be placed on only 4 server(s)"));
    // Existing shares on a read-only server are kept there.
    let existing = BTreeMap::from([(0u32, BTreeSet::from([5u16]))]);
    let p = place(&request(12, &[0], &existing, 3, 7, 10)).unwrap();
    assert_eq!(p.shares.get(&5), Some(&0));
    assert!(p.shares.iter().all(|(s, srv)| *srv != 0 || *s == 5));
    assert_eq!(
        place(&request(0, &[], &BTreeMap::new(), 3, 7, 10)),
        Err(PlacementError::NoServers)
    );
}

proptest! {
    #[test]
    fn happiness_is_maximum_matching(pairs in proptest::collection::vec((0u16..6, 0u32..6), 0..14)) {
        let m = sharemap(&pairs);
        prop_assert_eq!(servers_of_happiness(&m), brute_force(&m));
    }

    #[test]
    fn placement_properties(
        n_servers in 0u32..14,
        total in 1u16..9,
        k_frac in 0u16..100,
        happy in 0u16..9,
        ro in proptest::collection::vec(0u32..14, 0..5),
        ex in proptest::collection::vec((0u32..14, 0u16..10), 0..10),
    ) {
        let k = 1 + k_frac % total;
        let happy = happy.min(total);
        let mut existing: BTreeMap<u32, BTreeSet<u16>> = BTreeMap::new();
        for (srv, sh) in ex { existing.entry(srv).or_default().insert(sh); }
        let req = request(n_servers, &ro, &existing, k, happy, total);
        let considered: Vec<u32> = (0..n_servers).take(2 * usize::from(total)).collect();
        let writable: Vec<u32> = considered.iter().copied().filter(|s| !ro.contains(s)).collect();
        let shares = share_placement(&writable, &considered.iter().copied().filter(|s| ro.contains(s)).collect::<Vec<_>>(), total,
            &existing.iter().filter(|(s, _)| considered.contains(s)).map(|(s, v)| (*s, v.clone())).collect());
        if !writable.is_empty() {
            // Every share is placed when there is a writable server.
            prop_assert_eq!(shares.len(), usize::from(total));
        }
        for (sh, srv) in &shares {
            prop_assert!(considered.contains(srv));
            // Read-only servers only keep shares they already have.
            if ro.contains(srv) {
                prop_assert!(existing.get(srv).is_some_and(|h| h.contains(sh)));
            }
        }
        prop_assert_eq!(happiness(&shares), shares.values().collect::<BTreeSet<_>>().len());
        // The merged layout's happiness decides success, and equals brute force.
        let mut merged: BTreeMap<u16, BTreeSet<u32>> = BTreeMap::new();
        for (srv, h) in existing.iter().filter(|(s, _)| considered.contains(s)) {
            for sh in h { merged.entry(*sh).or_default().insert(*srv); }
        }
        for (sh, srv) in &shares { merged.entry(*sh).or_default().insert(*srv); }
        let h = brute_force(&merged);
        match place(&req) {
            Ok(p) => { prop_assert!(p.happiness >= usize::from(happy)); prop_assert_eq!(p.happiness, h); prop_assert_eq!(p.shares, shares); }
            Err(PlacementError::Unhappy { effective_happy, .. }) => { prop_assert!(effective_happy < usize::from(happy)); prop_assert_eq!(effective_happy, h); }
            Err(PlacementError::NoServers) => prop_assert_eq!(n_servers, 0),
            Err(e) => prop_assert!(false, "{e}"),
        }
        // With only fresh writable servers the placement reaches min(servers, N).
        if existing.is_empty() && ro.is_empty() && n_servers > 0 {
            prop_assert_eq!(h, (n_servers as usize).min(usize::from(total)));
        }
    }

    #[test]
    fn furl_nurl_never_panic_and_round_trip(s in "(pb(\\+tor)?://)?[A-Za-z0-9_@:/,\\[\\]#=.-]{0,60}") {
        if let Ok(f) = Furl::parse(&s) { prop_assert_eq!(Furl::parse(&f.to_string()).unwrap(), f); }
        if let Ok(n) = Nurl::parse(&s) { prop_assert_eq!(Nurl::parse(&n.to_string()).unwrap(), n); }
        let _ = furl::tubid_from_furl(&s);
    }

    #[test]
    fn nurl_round_trip(pin in proptest::array::uniform32(any::<u8>()), host in "[a-z]{1,8}(\\.[a-z]{1,5})?", port in any::<u16>(), swiss in "[a-z2-7]{32}") {
        use base64::Engine;
        let text = format!("pb://{}@{host}:{port}/{swiss}#v=1", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(pin));
        let n = Nurl::parse(&text).unwrap();
        prop_assert_eq!(n.to_string(), text);
        prop_assert_eq!(n.spki_hash(), pin);
    }
}
