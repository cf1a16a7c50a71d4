//! Disk store tests: immutable uploads, mutable test-and-write case by case (digest §4.5),
//! leases and GC with an injected clock, and a proptest against an in-memory reference model.

use super::*;
use crate::storage::container::lease::SecretStorage;
use proptest::prelude::*;
use std::sync::atomic::AtomicU64;

const NODE: NodeId = [3; 20];
const SI: StorageIndex = [0x42; 16];
const WE: [u8; 32] = [5; 32];
const R1: [u8; 32] = [1; 32];
const C1: [u8; 32] = [2; 32];
const T0: u64 = 1_700_000_000;

struct Fixture {
    dir: tempfile::TempDir,
    time: Arc<AtomicU64>,
    store: DiskStore,
}

fn fixture_with(f: impl FnOnce(&mut StoreConfig)) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = StoreConfig::new(dir.path().join("storage"), NODE);
    f(&mut cfg);
    let time = Arc::new(AtomicU64::new(T0));
    let t = time.clone();
    let clock: Clock = Arc::new(move || Duration::from_secs(t.load(Ordering::SeqCst)));
    let store = DiskStore::open_with_clock(cfg, clock).unwrap();
    Fixture { dir, time, store }
}

fn fixture() -> Fixture {
    fixture_with(|_| {})
}

fn set(v: &[ShareNum]) -> BTreeSet<ShareNum> {
    v.iter().copied().collect()
}

fn share_file(fx: &Fixture, shnum: ShareNum) -> PathBuf {
    let s = si_b2a(&SI);
    fx.dir
        .path()
        .join("storage/shares")
        .join(&s[..2])
        .join(&s)
        .join(shnum.to_string())
}

fn incoming_file(fx: &Fixture, shnum: ShareNum) -> PathBuf {
    let s = si_b2a(&SI);
    fx.dir
        .path()
        .join("storage/shares/incoming")
        .join(&s[..2])
        .join(&s)
        .join(shnum.to_string())
}

// ---------------------------------------------------------------- immutable

#[test]
fn upload_partial_writes_complete_and_move_into_place() {
    let fx = fixture();
    let a = fx
        .store
        .allocate_buckets(&SI, &R1, &C1, &set(&[0, 1]), 10, b"up")
        .unwrap();
    assert_eq!(a.allocated, set(&[0, 1]));
    assert!(a.already_have.is_empty());
    assert!(incoming_file(&fx, 0).exists());
    let o = fx.store.write_immutable(&SI, 0, b"up", 2, b"2345").unwrap();
    assert_eq!(
        o,
        WriteOutcome {
            complete: false,
            required: vec![0..2, 6..10]
        }
    );
    // Same bytes again: fine. Different bytes over written ones: conflict.
    assert!(fx.store.write_immutable(&SI, 0, b"up", 3, b"34").is_ok());
    assert!(
        matches!(fx.store.write_immutable(&SI, 0, b"up", 5, b"X6"), Err(StoreError::ConflictingWrite(r)) if r == (5..6))
    );
    assert!(matches!(
        fx.store.write_immutable(&SI, 0, b"up", 8, b"abc"),
        Err(StoreError::OutOfBounds { .. })
    ));
    assert!(matches!(
        fx.store.write_immutable(&SI, 0, b"other", 0, b"01"),
        Err(StoreError::BadUploadSecret)
    ));
    assert!(!share_file(&fx, 0).exists(), "no half share in shares/");
    assert_eq!(fx.store.list_shares(&SI).unwrap(), set(&[]));
    let o = fx.store.write_immutable(&SI, 0, b"up", 0, b"01").unwrap();
    assert!(!o.complete);
    let o = fx
        .store
        .write_immutable(&SI, 0, b"up", 5, b"56789")
        .unwrap();
    assert_eq!(
        o,
        WriteOutcome {
            complete: true,
            required: vec![]
        }
    );
    assert!(share_file(&fx, 0).exists());
    assert!(!incoming_file(&fx, 0).exists());
    assert_eq!(fx.store.list_shares(&SI).unwrap(), set(&[0]));
    assert_eq!(
        fx.store.read_immutable(&SI, 0, 0, 100).unwrap(),
        b"0123456789"
    );
    assert_eq!(fx.store.read_immutable(&SI, 0, 7, 100).unwrap(), b"789");
    assert_eq!(fx.store.read_immutable(&SI, 0, 10, 5).unwrap(), b"");
    assert_eq!(fx.store.immutable_share_len(&SI, 0).unwrap(), 10);
    // Known bytes of the final file: v2 header, data, one owner-0 lease with hashed secrets.
    let bytes = fs::read(share_file(&fx, 0)).unwrap();
    assert_eq!(&bytes[..12], &[0, 0, 0, 2, 0, 0, 0, 10, 0, 0, 0, 1]);
    assert_eq!(&bytes[12..22], b"0123456789");
    assert_eq!(bytes.len(), 12 + 10 + 72);
    assert_eq!(&bytes[22..26], &[0, 0, 0, 0]);
    assert_eq!(&bytes[26..58], &SecretStorage::Blake2b.stored_form(&R1));
    assert_eq!(
        &bytes[90..94],
        &((T0 + LEASE_DURATION_SECS) as u32).to_be_bytes()
    );
    // Writes after completion: the upload is gone.
    assert!(matches!(
        fx.store.write_immutable(&SI, 0, b"up", 0, b"0"),
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        fx.store.abort_immutable(&SI, 0, b"up"),
        Err(StoreError::AlreadyComplete)
    ));
    // A second allocation reports what is there, and renews the lease instead of adding one.
    fx.time.store(T0 + 100, Ordering::SeqCst);
    let a = fx
        .store
        .allocate_buckets(&SI, &R1, &C1, &set(&[0, 1, 2]), 10, b"up2")
        .unwrap();
    assert_eq!(a.already_have, set(&[0]));
    assert_eq!(a.allocated, set(&[2]), "1 is in progress, 0 complete");
    let leases = fx.store.leases(&SI, 0).unwrap();
    assert_eq!(leases.len(), 1);
    assert_eq!(
        u64::from(leases[0].expiration),
        T0 + 100 + LEASE_DURATION_SECS
    );
    // A different renew secret appends a lease.
    fx.store
        .allocate_buckets(&SI, &[8; 32], &[9; 32], &set(&[]), 10, b"up3")
        .unwrap();
    assert_eq!(fx.store.leases(&SI, 0).unwrap().len(), 2);
}

#[test]
fn abort_and_unknown_uploads() {
    let fx = fixture();
    fx.store
        .allocate_buckets(&SI, &R1, &C1, &set(&[3]), 5, b"s")
        .unwrap();
    fx.store.write_immutable(&SI, 3, b"s", 0, b"ab").unwrap();
    assert!(matches!(
        fx.store.abort_immutable(&SI, 3, b"wrong"),
        Err(StoreError::BadUploadSecret)
    ));
    fx.store.abort_immutable(&SI, 3, b"s").unwrap();
    assert!(!incoming_file(&fx, 3).exists());
    assert!(
        !incoming_file(&fx, 3).parent().unwrap().exists(),
        "empty incoming bucket dir removed"
    );
    assert!(matches!(
        fx.store.abort_immutable(&SI, 3, b"s"),
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        fx.store.write_immutable(&SI, 3, b"s", 0, b"a"),
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        fx.store.read_immutable(&SI, 3, 0, 1),
        Err(StoreError::NotFound)
    ));
    // Re-allocation after abort works.
    assert_eq!(
        fx.store
            .allocate_buckets(&SI, &R1, &C1, &set(&[3]), 5, b"t")
            .unwrap()
            .allocated,
        set(&[3])
    );
}

#[test]
fn incoming_is_wiped_at_startup() {
    let fx = fixture();
    fx.store
        .allocate_buckets(&SI, &R1, &C1, &set(&[0]), 5, b"s")
        .unwrap();
    fx.store.write_immutable(&SI, 0, b"s", 0, b"ab").unwrap();
    assert!(incoming_file(&fx, 0).exists());
    let cfg = fx.store.config().clone();
    drop(fx.store);
    let store = DiskStore::open(cfg).unwrap();
    let s = si_b2a(&SI);
    assert!(!fx
        .dir
        .path()
        .join("storage/shares/incoming")
        .join(&s[..2])
        .exists());
    assert!(store.list_shares(&SI).unwrap().is_empty());
    assert!(matches!(
        store.write_immutable(&SI, 0, b"s", 2, b"c"),
        Err(StoreError::NotFound)
    ));
}

#[test]
fn reserved_space_refuses_allocation_and_stale_uploads_expire() {
    let fx = fixture_with(|c| c.reserved_space = u64::MAX);
    assert_eq!(fx.store.available_space().unwrap(), 0);
    let a = fx
        .store
        .allocate_buckets(&SI, &R1, &C1, &set(&[0]), 1, b"s")
        .unwrap();
    assert!(a.allocated.is_empty());
    let fx = fixture();
    let free = fx.store.available_space().unwrap();
    assert!(free > 0);
    // Two allocations that each fit but together do not: only the first is granted. Each is
    // two thirds of the free space, not half of it plus one byte: the file system is the real
    // one, shared with the tests running beside this one, and its free space moves between the
    // measure and the allocation (a freed block made both halves fit, in a CI run). Two thirds
    // holds while the free space stays within a third of what was measured.
    let a = fx
        .store
        .allocate_buckets(&SI, &R1, &C1, &set(&[0, 1]), free / 3 * 2, b"s")
        .unwrap();
    assert_eq!(a.allocated, set(&[0]));
    fx.time
        .store(T0 + UPLOAD_TIMEOUT_SECS + 1, Ordering::SeqCst);
    fx.store.expire_stale_uploads();
    assert!(matches!(
        fx.store.write_immutable(&SI, 0, b"s", 0, b"a"),
        Err(StoreError::NotFound)
    ));
    assert_eq!(fx.store.allocated_size(), 0);
}

// ---------------------------------------------------------------- mutable

fn tw(
    test: &[(u64, u64, &[u8])],
    write: &[(u64, &[u8])],
    new_length: Option<u64>,
) -> TestWriteVectors {
    TestWriteVectors {
        test: test
            .iter()
            .map(|(o, s, d)| TestVector {
                offset: *o,
                size: *s,
                specimen: d.to_vec(),
            })
            .collect(),
        write: write
            .iter()
            .map(|(o, d)| WriteVector {
                offset: *o,
                data: d.to_vec(),
            })
            .collect(),
        new_length,
    }
}

fn rtw(
    fx: &Fixture,
    we: &[u8; 32],
    v: Vec<(ShareNum, TestWriteVectors)>,
    reads: &[(u64, u64)],
) -> Result<RtwResult, StoreError> {
    let v: BTreeMap<_, _> = v.into_iter().collect();
    let r: Vec<ReadVector> = reads
        .iter()
        .map(|(o, s)| ReadVector {
            offset: *o,
            size: *s,
        })
        .collect();
    fx.store.read_test_write(&SI, we, &R1, &C1, &v, &r)
}

#[test]
fn mutable_create_if_absent_then_checkstring_update() {
    let fx = fixture();
    // New share: test (0, 1, "") passes on an absent share.
    let r = rtw(
        &fx,
        &WE,
        vec![(0, tw(&[(0, 1, b"")], &[(0, b"version1")], None))],
        &[(0, 4)],
    )
    .unwrap();
    assert!(r.success);
    assert!(r.data.is_empty(), "no share existed before the write");
    assert_eq!(fx.store.read_mutable(&SI, 0, 0, 100).unwrap(), b"version1");
    let bytes = fs::read(share_file(&fx, 0)).unwrap();
    assert_eq!(
        &bytes[..32],
        b"Tahoe mutable container v2\n\xc3\x55\x21\x99\x25".as_slice()
    );
    assert_eq!(&bytes[32..52], &NODE);
    assert_eq!(&bytes[52..84], &WE);
    assert_eq!(&bytes[84..92], &8u64.to_be_bytes());
    // Lease owner 1, renew secret hashed, nodeid = ours.
    assert_eq!(&bytes[100..104], &[0, 0, 0, 1]);
    assert_eq!(&bytes[108..140], &SecretStorage::Blake2b.stored_form(&R1));
    assert_eq!(&bytes[172..192], &NODE);
    // Create-if-absent now fails (share exists and is non-empty), and reads still come back.
    let r = rtw(
        &fx,
        &WE,
        vec![(0, tw(&[(0, 1, b"")], &[(0, b"XX")], None))],
        &[(0, 4)],
    )
    .unwrap();
    assert!(!r.success);
    assert_eq!(r.data, BTreeMap::from([(0, vec![b"vers".to_vec()])]));
    assert_eq!(fx.store.read_mutable(&SI, 0, 0, 100).unwrap(), b"version1");
    // Checkstring test against the current bytes passes; reads return pre-write data.
    let r = rtw(
        &fx,
        &WE,
        vec![(0, tw(&[(0, 8, b"version1")], &[(0, b"VERSION2")], None))],
        &[(0, 8)],
    )
    .unwrap();
    assert!(r.success);
    assert_eq!(r.data[&0], vec![b"version1".to_vec()]);
    assert_eq!(fx.store.read_mutable(&SI, 0, 0, 100).unwrap(), b"VERSION2");
    // A test reads min(size, len - offset): a specimen longer than the data fails.
    let r = rtw(&fx, &WE, vec![(0, tw(&[(4, 10, b"ION2")], &[], None))], &[]).unwrap();
    assert!(r.success);
    let r = rtw(
        &fx,
        &WE,
        vec![(0, tw(&[(4, 10, b"ION2\0\0")], &[], None))],
        &[],
    )
    .unwrap();
    assert!(!r.success);
    // Renewal with the same secret does not add leases.
    assert_eq!(fx.store.leases(&SI, 0).unwrap().len(), 1);
}

#[test]
fn mutable_bad_write_enabler_checked_on_every_share() {
    let fx = fixture();
    rtw(
        &fx,
        &WE,
        vec![
            (0, tw(&[], &[(0, b"a")], None)),
            (1, tw(&[], &[(0, b"b")], None)),
        ],
        &[],
    )
    .unwrap();
    // Touching only share 5 still checks shares 0 and 1.
    let e = rtw(&fx, &[6; 32], vec![(5, tw(&[], &[(0, b"c")], None))], &[]);
    assert!(matches!(e, Err(StoreError::BadWriteEnabler)));
    assert_eq!(fx.store.list_shares(&SI).unwrap(), set(&[0, 1]));
}

#[test]
fn mutable_reads_cover_all_shares_and_precede_writes() {
    let fx = fixture();
    rtw(
        &fx,
        &WE,
        vec![
            (0, tw(&[], &[(0, b"zero")], None)),
            (2, tw(&[], &[(0, b"two!")], None)),
        ],
        &[],
    )
    .unwrap();
    let r = rtw(
        &fx,
        &WE,
        vec![(2, tw(&[], &[(0, b"TWO")], None))],
        &[(0, 2), (2, 10)],
    )
    .unwrap();
    assert!(r.success);
    assert_eq!(
        r.data,
        BTreeMap::from([
            (0, vec![b"ze".to_vec(), b"ro".to_vec()]),
            (2, vec![b"tw".to_vec(), b"o!".to_vec()])
        ])
    );
    assert_eq!(fx.store.read_mutable(&SI, 2, 0, 10).unwrap(), b"TWO!");
}

#[test]
fn mutable_any_failing_test_blocks_all_writes() {
    let fx = fixture();
    rtw(
        &fx,
        &WE,
        vec![
            (0, tw(&[], &[(0, b"aa")], None)),
            (1, tw(&[], &[(0, b"bb")], None)),
        ],
        &[],
    )
    .unwrap();
    let r = rtw(
        &fx,
        &WE,
        vec![
            (0, tw(&[(0, 2, b"aa")], &[(0, b"AA")], None)),
            (1, tw(&[(0, 2, b"xx")], &[(0, b"BB")], None)),
        ],
        &[],
    )
    .unwrap();
    assert!(!r.success);
    assert_eq!(fx.store.read_mutable(&SI, 0, 0, 9).unwrap(), b"aa");
    assert_eq!(fx.store.read_mutable(&SI, 1, 0, 9).unwrap(), b"bb");
}

#[test]
fn mutable_holes_truncation_and_delete() {
    let fx = fixture();
    rtw(
        &fx,
        &WE,
        vec![(0, tw(&[], &[(0, b"abc"), (6, b"g")], None))],
        &[],
    )
    .unwrap();
    assert_eq!(
        fx.store.read_mutable(&SI, 0, 0, 100).unwrap(),
        b"abc\0\0\0g"
    );
    rtw(&fx, &WE, vec![(0, tw(&[], &[], Some(2)))], &[]).unwrap();
    assert_eq!(fx.store.read_mutable(&SI, 0, 0, 100).unwrap(), b"ab");
    assert_eq!(fx.store.mutable_share_len(&SI, 0).unwrap(), 2);
    // A larger new_length does not extend.
    rtw(&fx, &WE, vec![(0, tw(&[], &[], Some(50)))], &[]).unwrap();
    assert_eq!(fx.store.mutable_share_len(&SI, 0).unwrap(), 2);
    // Stale bytes beyond the data length come back as zeros when a hole re-exposes them.
    rtw(&fx, &WE, vec![(0, tw(&[], &[(5, b"F")], None))], &[]).unwrap();
    assert_eq!(fx.store.read_mutable(&SI, 0, 0, 100).unwrap(), b"ab\0\0\0F");
    // new_length 0 deletes the share and then the empty bucket directory.
    let r = rtw(
        &fx,
        &WE,
        vec![(0, tw(&[], &[(0, b"ignored")], Some(0)))],
        &[],
    )
    .unwrap();
    assert!(r.success);
    assert!(!share_file(&fx, 0).exists());
    assert!(!share_file(&fx, 0).parent().unwrap().exists());
    assert!(matches!(
        fx.store.read_mutable(&SI, 0, 0, 1),
        Err(StoreError::NotFound)
    ));
    // Deleting an absent share is a successful no-op.
    assert!(
        rtw(&fx, &WE, vec![(4, tw(&[], &[], Some(0)))], &[])
            .unwrap()
            .success
    );
    assert!(fx.store.list_shares(&SI).unwrap().is_empty());
}

#[test]
fn mutable_hostile_growth_is_refused() {
    let fx = fixture();
    let e = rtw(&fx, &WE, vec![(0, tw(&[], &[(1 << 60, b"x")], None))], &[]);
    assert!(matches!(e, Err(StoreError::NoSpace)));
    assert!(fx.store.list_shares(&SI).unwrap().is_empty());
}

#[test]
fn wrong_share_kind_is_typed() {
    let fx = fixture();
    rtw(&fx, &WE, vec![(0, tw(&[], &[(0, b"m")], None))], &[]).unwrap();
    assert!(matches!(
        fx.store.read_immutable(&SI, 0, 0, 1),
        Err(StoreError::WrongShareType(0))
    ));
    assert!(matches!(
        fx.store
            .allocate_buckets(&SI, &R1, &C1, &set(&[1]), 1, b"s"),
        Err(StoreError::WrongShareType(0))
    ));
}

// ---------------------------------------------------------------- leases, GC, advisories

#[test]
fn add_lease_renews_or_appends_on_all_shares() {
    let fx = fixture();
    assert!(matches!(
        fx.store.add_lease(&SI, &R1, &C1),
        Err(StoreError::NotFound)
    ));
    rtw(&fx, &WE, vec![(0, tw(&[], &[(0, b"m")], None))], &[]).unwrap();
    fx.time.store(T0 + 10, Ordering::SeqCst);
    fx.store.add_lease(&SI, &R1, &C1).unwrap();
    let l = fx.store.leases(&SI, 0).unwrap();
    assert_eq!(l.len(), 1);
    assert_eq!(u64::from(l[0].expiration), T0 + 10 + LEASE_DURATION_SECS);
    for i in 0..5u8 {
        fx.store.add_lease(&SI, &[100 + i; 32], &C1).unwrap();
    }
    let l = fx.store.leases(&SI, 0).unwrap();
    assert_eq!(l.len(), 6);
    assert!(l.iter().all(|l| l.owner_num == 1 && l.nodeid == NODE));
}

#[test]
fn gc_deletes_only_fully_expired_shares() {
    let fx = fixture_with(|c| {
        c.expiration = ExpirationPolicy {
            enabled: true,
            ..Default::default()
        }
    });
    let si2: StorageIndex = [0x99; 16];
    // Share A (immutable, SI) gets one lease at T0; share B (mutable, si2) a lease at T0 and
    // another renewed later.
    fx.store
        .allocate_buckets(&SI, &R1, &C1, &set(&[0]), 2, b"s")
        .unwrap();
    fx.store.write_immutable(&SI, 0, b"s", 0, b"ab").unwrap();
    let v = BTreeMap::from([(0, tw(&[], &[(0, b"m")], None))]);
    fx.store
        .read_test_write(&si2, &WE, &R1, &C1, &v, &[])
        .unwrap();
    fx.time.store(T0 + 20 * 86_400, Ordering::SeqCst);
    fx.store
        .read_test_write(&si2, &WE, &[7; 32], &C1, &v, &[])
        .unwrap();
    assert_eq!(fx.store.leases(&si2, 0).unwrap().len(), 2);
    // Before anything expires nothing changes.
    let mut cur = GcCursor::default();
    let rep = fx.store.gc_step(&mut cur, 100).unwrap();
    assert_eq!(
        (rep.shares_examined, rep.shares_deleted, rep.leases_expired),
        (2, 0, 0)
    );
    assert!(rep.cycle_finished);
    // Past the first leases' expiry: A goes, B loses one lease and stays.
    fx.time
        .store(T0 + LEASE_DURATION_SECS + 1, Ordering::SeqCst);
    let rep = fx.store.gc_step(&mut cur, 100).unwrap();
    assert_eq!((rep.shares_deleted, rep.leases_expired), (1, 2));
    assert!(fx.store.list_shares(&SI).unwrap().is_empty());
    assert_eq!(fx.store.list_shares(&si2).unwrap(), set(&[0]));
    assert_eq!(fx.store.leases(&si2, 0).unwrap().len(), 1);
    // Later still, B goes too.
    fx.time
        .store(T0 + 20 * 86_400 + LEASE_DURATION_SECS + 1, Ordering::SeqCst);
    let rep = fx.store.gc_step(&mut cur, 100).unwrap();
    assert_eq!(rep.shares_deleted, 1);
    assert!(fx.store.list_shares(&si2).unwrap().is_empty());
}

#[test]
fn gc_is_incremental_and_honours_share_type_switches() {
    let fx = fixture_with(|c| {
        c.expiration = ExpirationPolicy {
            enabled: true,
            mode: ExpirationMode::CutoffDate { cutoff: T0 + 1 },
            immutable: false,
            mutable: true,
        }
    });
    let v = BTreeMap::from([(0, tw(&[], &[(0, b"m")], None))]);
    for i in 0..5u8 {
        fx.store
            .read_test_write(&[i * 50; 16], &WE, &R1, &C1, &v, &[])
            .unwrap();
    }
    fx.store
        .allocate_buckets(&SI, &R1, &C1, &set(&[0]), 1, b"s")
        .unwrap();
    fx.store.write_immutable(&SI, 0, b"s", 0, b"a").unwrap();
    let mut cur = GcCursor::default();
    let mut deleted = 0;
    let mut steps = 0;
    loop {
        let rep = fx.store.gc_step(&mut cur, 2).unwrap();
        assert!(rep.buckets_examined <= 2);
        deleted += rep.shares_deleted;
        steps += 1;
        if rep.cycle_finished {
            break;
        }
    }
    assert!(steps >= 3);
    assert_eq!(
        deleted, 5,
        "all mutable shares granted before the cutoff go"
    );
    assert_eq!(
        fx.store.list_shares(&SI).unwrap(),
        set(&[0]),
        "immutable expiry is switched off"
    );
}

#[test]
fn expiration_modes() {
    let age = |o| ExpirationPolicy {
        enabled: true,
        mode: ExpirationMode::Age {
            override_lease_duration: o,
        },
        ..Default::default()
    };
    let exp = (T0 + LEASE_DURATION_SECS) as u32; // granted at T0
    assert!(!age(None).lease_expired(ShareKind::Immutable, exp, T0 + LEASE_DURATION_SECS));
    assert!(age(None).lease_expired(ShareKind::Immutable, exp, T0 + LEASE_DURATION_SECS + 1));
    assert!(!age(Some(100)).lease_expired(ShareKind::Mutable, exp, T0 + 100));
    assert!(age(Some(100)).lease_expired(ShareKind::Mutable, exp, T0 + 101));
    let cut = |c| ExpirationPolicy {
        enabled: true,
        mode: ExpirationMode::CutoffDate { cutoff: c },
        ..Default::default()
    };
    assert!(cut(T0 + 1).lease_expired(ShareKind::Mutable, exp, T0));
    assert!(!cut(T0).lease_expired(ShareKind::Mutable, exp, T0 + 10_000_000));
}

#[test]
fn corruption_advisory_file() {
    let fx = fixture();
    fx.time.store(1_234_567_890, Ordering::SeqCst); // 2009-02-13T23:31:30 UTC
    assert!(matches!(
        fx.store.advise_corrupt(ShareKind::Mutable, &SI, 0, "bad"),
        Err(StoreError::NotFound)
    ));
    rtw(&fx, &WE, vec![(0, tw(&[], &[(0, b"m")], None))], &[]).unwrap();
    fx.store
        .advise_corrupt(ShareKind::Mutable, &SI, 0, "block hash mismatch")
        .unwrap();
    let name = format!("2009-02-13T233130--{}-0", si_b2a(&SI));
    let text = fs::read_to_string(fx.store.advisories_dir().join(name)).unwrap();
    assert_eq!(
        text,
        format!("report: Share Corruption\ntype: mutable\nstorage_index: {}\nshare_number: 0\n\nblock hash mismatch\n\n", si_b2a(&SI))
    );
}

#[test]
fn iso_utc_matches_python() {
    // datetime.utcfromtimestamp(951782400.5).isoformat("T") == '2000-02-29T00:00:00.500000'
    assert_eq!(
        iso_utc(Duration::from_millis(951_782_400_500)),
        "2000-02-29T00:00:00.500000"
    );
    assert_eq!(iso_utc(Duration::from_secs(0)), "1970-01-01T00:00:00");
}

// ---------------------------------------------------------------- model proptest

/// The reference model: each share is its write enabler and plain data bytes.
#[derive(Default)]
struct Model {
    shares: BTreeMap<ShareNum, ([u8; 32], Vec<u8>)>,
}

impl Model {
    fn read(data: &[u8], off: u64, size: u64) -> Vec<u8> {
        let start = (off as usize).min(data.len());
        let end = ((off + size) as usize).min(data.len());
        data[start..end.max(start)].to_vec()
    }

    fn rtw(
        &mut self,
        we: [u8; 32],
        v: &BTreeMap<ShareNum, TestWriteVectors>,
        reads: &[ReadVector],
    ) -> Result<RtwResult, ()> {
        if self.shares.values().any(|(w, _)| *w != we) {
            return Err(());
        }
        let ok = v.iter().all(|(n, t)| {
            let data = self
                .shares
                .get(n)
                .map(|(_, d)| d.clone())
                .unwrap_or_default();
            t.test
                .iter()
                .all(|t| Self::read(&data, t.offset, t.size) == t.specimen)
        });
        let data = self
            .shares
            .iter()
            .map(|(n, (_, d))| {
                (
                    *n,
                    reads
                        .iter()
                        .map(|r| Self::read(d, r.offset, r.size))
                        .collect(),
                )
            })
            .collect();
        if ok {
            for (n, t) in v {
                if t.new_length == Some(0) {
                    self.shares.remove(n);
                    continue;
                }
                let d = &mut self.shares.entry(*n).or_insert((we, Vec::new())).1;
                for w in &t.write {
                    let end = w.offset as usize + w.data.len();
                    if d.len() < end {
                        d.resize(end, 0);
                    }
                    d[w.offset as usize..end].copy_from_slice(&w.data);
                }
                if let Some(l) = t.new_length {
                    d.truncate(l as usize);
                }
            }
        }
        Ok(RtwResult { success: ok, data })
    }
}

fn arb_tw() -> impl Strategy<Value = TestWriteVectors> {
    let test = proptest::collection::vec(
        (0u64..40, 0u64..12, proptest::collection::vec(0u8..3, 0..6)),
        0..2,
    );
    let write =
        proptest::collection::vec((0u64..60, proptest::collection::vec(0u8..3, 0..20)), 0..3);
    let nl = prop_oneof![3 => Just(None), 1 => Just(Some(0u64)), 3 => (1u64..30).prop_map(Some)];
    (test, write, nl).prop_map(|(t, w, new_length)| TestWriteVectors {
        test: t
            .into_iter()
            .map(|(offset, size, specimen)| TestVector {
                offset,
                size,
                specimen,
            })
            .collect(),
        write: w
            .into_iter()
            .map(|(offset, data)| WriteVector { offset, data })
            .collect(),
        new_length,
    })
}

fn arb_op() -> impl Strategy<Value = (bool, BTreeMap<ShareNum, TestWriteVectors>, Vec<ReadVector>)>
{
    (
        prop::bool::weighted(0.1),
        proptest::collection::btree_map(0u32..4, arb_tw(), 0..3),
        proptest::collection::vec(
            (0u64..60, 0u64..30).prop_map(|(offset, size)| ReadVector { offset, size }),
            0..3,
        ),
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]
    #[test]
    fn mutable_store_matches_model(ops in proptest::collection::vec(arb_op(), 1..16)) {
        let fx = fixture();
        let mut model = Model::default();
        for (bad_we, v, reads) in ops {
            let we = if bad_we { [0xee; 32] } else { WE };
            let got = fx.store.read_test_write(&SI, &we, &R1, &C1, &v, &reads);
            let want = model.rtw(we, &v, &reads);
            match (got, want) {
                (Ok(g), Ok(w)) => prop_assert_eq!(g, w),
                (Err(StoreError::BadWriteEnabler), Err(())) => {}
                (g, w) => prop_assert!(false, "store {:?} vs model {:?}", g, w.is_ok()),
            }
            prop_assert_eq!(fx.store.list_shares(&SI).unwrap(), model.shares.keys().copied().collect::<BTreeSet<_>>());
            for (n, (_, d)) in &model.shares {
                prop_assert_eq!(&fx.store.read_mutable(&SI, *n, 0, 1000).unwrap(), d);
            }
        }
    }
}

/// Regression (found by mount-tests/rsync.test.sh hanging at unmount): a write completing a
/// share held its upload's lock and waited for the stripe, while an allocation of another index
/// on the same stripe held the stripe and, summing outstanding allocations, waited for that
/// upload's lock; aborts (upload lock, then the uploads map) crossed allocations the same way.
/// Many threads allocating, completing and aborting on one stripe must all finish.
#[test]
fn concurrent_allocate_complete_and_abort_do_not_deadlock() {
    let fx = Arc::new(fixture());
    let (tx, rx) = std::sync::mpsc::channel();
    for t in 0..6u8 {
        let fx = Arc::clone(&fx);
        let tx = tx.clone();
        std::thread::spawn(move || {
            for i in 0..150u8 {
                // Same first byte: every index lands on one stripe.
                let mut si = SI;
                si[1] = t;
                si[2] = i;
                let secret = [t; 32];
                let a = fx
                    .store
                    .allocate_buckets(&si, &R1, &C1, &set(&[0, 1]), 4, &secret)
                    .unwrap();
                if a.allocated.contains(&0) {
                    fx.store
                        .write_immutable(&si, 0, &secret, 0, b"abcd")
                        .unwrap();
                }
                if a.allocated.contains(&1) {
                    fx.store.abort_immutable(&si, 1, &secret).unwrap();
                }
            }
            tx.send(()).unwrap();
        });
    }
    drop(tx);
    for _ in 0..6 {
        rx.recv_timeout(Duration::from_secs(60))
            .expect("a thread is stuck: lock-order deadlock in the disk store");
    }
}
