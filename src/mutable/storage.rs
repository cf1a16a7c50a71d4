//! The mutable-share storage interface, in the shape of Tahoe's HTTP storage protocol
//! (`GET /storage/v1/mutable/:si/shares`, `GET /storage/v1/mutable/:si/:shnum` with a range, and
//! `POST /storage/v1/mutable/:si/read-test-write`; digest §4.5, §6.3), and [`MemoryServer`], an
//! in-memory server with exactly the 1.20 server semantics. It is the reference model for the
//! real server.
//!
//! `read-test-write` semantics (§4.5, §10 item 21), all enforced by [`MemoryServer`]:
//! 1. the write enabler is checked against **every existing share** of the storage index;
//! 2. every test vector is evaluated before anything is written; the only operator is equality,
//!    and a test reads `min(size, len - offset)` bytes (an absent share reads `b""`), so
//!    `(0, 1, b"")` means "absent or empty";
//! 3. read vectors are evaluated before the writes, over **all** existing shares;
//! 4. if every test passed, writes are applied in order (data grows; holes read as zero), then
//!    `new_length` truncates when smaller, and `new_length == 0` deletes the share. A share named
//!    in the request is created even when its write list is empty.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;
use thiserror::Error;

pub type StorageIndex = [u8; 16];
pub type ShareNum = u32;

/// Errors a server (or the transport to it) reports.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum StorageError {
    #[error("storage: no such share")]
    NoSuchShare,
    #[error("storage: the write enabler does not match an existing share")]
    BadWriteEnabler,
    #[error("storage: request rejected: {0}")]
    BadRequest(&'static str),
    #[error("storage: server unavailable: {0}")]
    Unavailable(String),
}

/// The secrets a `read-test-write` carries (HTTP `X-Tahoe-Authorization` write-enabler,
/// lease-renew-secret, lease-cancel-secret).
#[derive(Clone, PartialEq, Eq)]
pub struct WriteSecrets {
    pub write_enabler: [u8; 32],
    pub renew_secret: [u8; 32],
    pub cancel_secret: [u8; 32],
}

impl std::fmt::Debug for WriteSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WriteSecrets(..)")
    }
}

/// One equality test: the bytes at `[offset, offset+size)` (clamped to the share) must equal
/// `specimen`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestVector {
    pub offset: u64,
    pub size: u64,
    pub specimen: Vec<u8>,
}

/// Tests, writes and an optional new length for one share.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TestWriteVectors {
    pub test: Vec<TestVector>,
    pub write: Vec<(u64, Vec<u8>)>,
    pub new_length: Option<u64>,
}

/// A range to read from every share: `(offset, size)`.
pub type ReadVector = (u64, u64);

/// The answer of `read-test-write`: whether the tests passed (and so the writes happened), and the
/// pre-write reads of every share of the storage index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadTestWriteResult {
    pub success: bool,
    pub reads: BTreeMap<ShareNum, Vec<Vec<u8>>>,
}

/// A boxed, `Send` future: the trait below stays object-safe (`&dyn MutableServer`) while its
/// implementations do network I/O.
pub type BoxFut<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// One storage server, as the mutable-file layer sees it. Async so that a network implementation
/// can serve many requests concurrently; the drivers query servers in parallel.
pub trait MutableServer: Send + Sync {
    /// The server's 20-byte node id (Foolscap TubID): the write-enabler and lease seed.
    fn node_id(&self) -> [u8; 20];

    /// The share numbers the server holds for `si` (empty when none).
    fn list_shares<'a>(
        &'a self,
        si: &'a StorageIndex,
    ) -> BoxFut<'a, Result<BTreeSet<ShareNum>, StorageError>>;

    /// Up to `len` bytes of a share from `offset` (shorter at the end of the share).
    fn read<'a>(
        &'a self,
        si: &'a StorageIndex,
        shnum: ShareNum,
        offset: u64,
        len: u64,
    ) -> BoxFut<'a, Result<Vec<u8>, StorageError>>;

    /// Tahoe's `slot_testv_and_readv_and_writev`.
    fn read_test_write<'a>(
        &'a self,
        si: &'a StorageIndex,
        secrets: &'a WriteSecrets,
        tw_vectors: &'a BTreeMap<ShareNum, TestWriteVectors>,
        read_vector: &'a [ReadVector],
    ) -> BoxFut<'a, Result<ReadTestWriteResult, StorageError>>;
}

struct StoredShare {
    write_enabler: [u8; 32],
    data: Vec<u8>,
}

/// Reads `[offset, offset+size)` clamped to the data, as the server's `_read_share_data` does.
fn read_clamped(data: &[u8], offset: u64, size: u64) -> Vec<u8> {
    let len = data.len() as u64;
    if offset >= len {
        return Vec::new();
    }
    let end = offset.saturating_add(size).min(len);
    data[offset as usize..end as usize].to_vec()
}

/// The largest share the in-memory server accepts (Python announces 69105 TB; memory is smaller).
const MAX_MEMORY_SHARE: u64 = 1 << 32;

type ShareTable = HashMap<StorageIndex, BTreeMap<ShareNum, StoredShare>>;

/// An in-memory storage server with Tahoe 1.20's mutable-share semantics.
pub struct MemoryServer {
    node_id: [u8; 20],
    shares: Mutex<ShareTable>,
}

impl std::fmt::Debug for MemoryServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "MemoryServer({})",
            crate::util::base32::encode(&self.node_id)
        )
    }
}

impl MemoryServer {
    pub fn new(node_id: [u8; 20]) -> Self {
        MemoryServer {
            node_id,
            shares: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, ShareTable>, StorageError> {
        self.shares
            .lock()
            .map_err(|_| StorageError::Unavailable("poisoned".into()))
    }

    /// Test hook: the raw share bytes, if present.
    pub fn share_bytes(&self, si: &StorageIndex, shnum: ShareNum) -> Option<Vec<u8>> {
        let g = self.lock().ok()?;
        g.get(si)?.get(&shnum).map(|s| s.data.clone())
    }

    /// Test hook: replaces a share's bytes (to simulate corruption), keeping its write enabler.
    pub fn set_share_bytes(&self, si: &StorageIndex, shnum: ShareNum, data: Vec<u8>) {
        if let Ok(mut g) = self.lock() {
            if let Some(s) = g.get_mut(si).and_then(|m| m.get_mut(&shnum)) {
                s.data = data;
            }
        }
    }

    /// Test hook: deletes a share.
    pub fn remove_share(&self, si: &StorageIndex, shnum: ShareNum) {
        if let Ok(mut g) = self.lock() {
            if let Some(m) = g.get_mut(si) {
                m.remove(&shnum);
            }
        }
    }
}

impl MutableServer for MemoryServer {
    fn node_id(&self) -> [u8; 20] {
        self.node_id
    }

    fn list_shares<'a>(
        &'a self,
        si: &'a StorageIndex,
    ) -> BoxFut<'a, Result<BTreeSet<ShareNum>, StorageError>> {
        Box::pin(std::future::ready(MemoryServer::list_shares(self, si)))
    }

    fn read<'a>(
        &'a self,
        si: &'a StorageIndex,
        shnum: ShareNum,
        offset: u64,
        len: u64,
    ) -> BoxFut<'a, Result<Vec<u8>, StorageError>> {
        Box::pin(std::future::ready(MemoryServer::read(
            self, si, shnum, offset, len,
        )))
    }

    fn read_test_write<'a>(
        &'a self,
        si: &'a StorageIndex,
        secrets: &'a WriteSecrets,
        tw_vectors: &'a BTreeMap<ShareNum, TestWriteVectors>,
        read_vector: &'a [ReadVector],
    ) -> BoxFut<'a, Result<ReadTestWriteResult, StorageError>> {
        Box::pin(std::future::ready(MemoryServer::read_test_write(
            self,
            si,
            secrets,
            tw_vectors,
            read_vector,
        )))
    }
}

/// The synchronous server model (the trait implementation above wraps these in ready futures).
impl MemoryServer {
    /// The node id.
    pub fn node_id(&self) -> [u8; 20] {
        self.node_id
    }

    pub fn list_shares(&self, si: &StorageIndex) -> Result<BTreeSet<ShareNum>, StorageError> {
        Ok(self
            .lock()?
            .get(si)
            .map(|m| m.keys().copied().collect())
            .unwrap_or_default())
    }

    pub fn read(
        &self,
        si: &StorageIndex,
        shnum: ShareNum,
        offset: u64,
        len: u64,
    ) -> Result<Vec<u8>, StorageError> {
        let g = self.lock()?;
        let s = g
            .get(si)
            .and_then(|m| m.get(&shnum))
            .ok_or(StorageError::NoSuchShare)?;
        Ok(read_clamped(&s.data, offset, len))
    }

    /// Tahoe's `slot_testv_and_readv_and_writev`.
    pub fn read_test_write(
        &self,
        si: &StorageIndex,
        secrets: &WriteSecrets,
        tw_vectors: &BTreeMap<ShareNum, TestWriteVectors>,
        read_vector: &[ReadVector],
    ) -> Result<ReadTestWriteResult, StorageError> {
        // Bounds the server would refuse (HTTP CDDL: at most 30 tests/reads); also keeps the
        // model from allocating absurd buffers.
        if read_vector.len() > 30 || tw_vectors.values().any(|v| v.test.len() > 30) {
            return Err(StorageError::BadRequest("too many test or read vectors"));
        }
        for v in tw_vectors.values() {
            for (off, data) in &v.write {
                if off.saturating_add(data.len() as u64) > MAX_MEMORY_SHARE {
                    return Err(StorageError::BadRequest(
                        "write beyond the maximum share size",
                    ));
                }
            }
        }
        let mut g = self.lock()?;
        let shares = g.entry(*si).or_default();
        // 1. The write enabler of every existing share.
        if shares
            .values()
            .any(|s| s.write_enabler != secrets.write_enabler)
        {
            return Err(StorageError::BadWriteEnabler);
        }
        // 2. All tests, before any write.
        let empty: &[u8] = &[];
        let success = tw_vectors.iter().all(|(shnum, v)| {
            let data = shares
                .get(shnum)
                .map(|s| s.data.as_slice())
                .unwrap_or(empty);
            v.test
                .iter()
                .all(|t| read_clamped(data, t.offset, t.size) == t.specimen)
        });
        // 3. Reads over all existing shares, before the writes.
        let reads = shares
            .iter()
            .map(|(&n, s)| {
                let r = read_vector
                    .iter()
                    .map(|&(o, l)| read_clamped(&s.data, o, l))
                    .collect();
                (n, r)
            })
            .collect();
        // 4. Writes.
        if success {
            for (&shnum, v) in tw_vectors {
                if v.new_length == Some(0) {
                    shares.remove(&shnum);
                    continue;
                }
                let share = shares.entry(shnum).or_insert_with(|| StoredShare {
                    write_enabler: secrets.write_enabler,
                    data: Vec::new(),
                });
                for (off, data) in &v.write {
                    let end = *off as usize + data.len();
                    if share.data.len() < end {
                        share.data.resize(end, 0);
                    }
                    share.data[*off as usize..end].copy_from_slice(data);
                }
                if let Some(l) = v.new_length {
                    if (l as usize) < share.data.len() {
                        share.data.truncate(l as usize);
                    }
                }
            }
        }
        if shares.is_empty() {
            g.remove(si);
        }
        Ok(ReadTestWriteResult { success, reads })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secrets(we: u8) -> WriteSecrets {
        WriteSecrets {
            write_enabler: [we; 32],
            renew_secret: [0; 32],
            cancel_secret: [0; 32],
        }
    }

    fn tw(
        test: Vec<(u64, u64, &[u8])>,
        write: Vec<(u64, &[u8])>,
        nl: Option<u64>,
    ) -> TestWriteVectors {
        TestWriteVectors {
            test: test
                .into_iter()
                .map(|(offset, size, s)| TestVector {
                    offset,
                    size,
                    specimen: s.to_vec(),
                })
                .collect(),
            write: write.into_iter().map(|(o, d)| (o, d.to_vec())).collect(),
            new_length: nl,
        }
    }

    #[test]
    fn server_semantics() {
        let s = MemoryServer::new([1; 20]);
        let si = [5; 16];
        // Create-if-absent passes on an absent share.
        let mut m = BTreeMap::new();
        m.insert(0, tw(vec![(0, 1, b"")], vec![(0, b"hello")], None));
        let r = s.read_test_write(&si, &secrets(1), &m, &[(0, 3)]).unwrap();
        assert!(r.success);
        assert!(r.reads.is_empty());
        // It fails once the share exists; reads show pre-write data of all shares.
        let r = s
            .read_test_write(&si, &secrets(1), &m, &[(0, 3), (4, 10)])
            .unwrap();
        assert!(!r.success);
        assert_eq!(r.reads[&0], vec![b"hel".to_vec(), b"o".to_vec()]);
        // Wrong write enabler.
        assert_eq!(
            s.read_test_write(&si, &secrets(2), &BTreeMap::new(), &[]),
            Err(StorageError::BadWriteEnabler)
        );
        // Equality test with clamping, write with a hole, reads are pre-write.
        let mut m = BTreeMap::new();
        m.insert(0, tw(vec![(3, 10, b"lo")], vec![(8, b"X")], None));
        m.insert(1, tw(vec![], vec![], None));
        let r = s
            .read_test_write(&si, &secrets(1), &m, &[(0, 100)])
            .unwrap();
        assert!(r.success);
        assert_eq!(r.reads[&0], vec![b"hello".to_vec()]);
        assert_eq!(s.read(&si, 0, 0, 100).unwrap(), b"hello\0\0\0X".to_vec());
        // The empty write list still created share 1.
        assert_eq!(s.list_shares(&si).unwrap(), [0, 1].into_iter().collect());
        assert_eq!(s.read(&si, 1, 0, 10).unwrap(), Vec::<u8>::new());
        // new_length truncates; 0 deletes.
        let mut m = BTreeMap::new();
        m.insert(0, tw(vec![], vec![], Some(2)));
        m.insert(1, tw(vec![], vec![], Some(0)));
        assert!(
            s.read_test_write(&si, &secrets(1), &m, &[])
                .unwrap()
                .success
        );
        assert_eq!(s.read(&si, 0, 0, 100).unwrap(), b"he".to_vec());
        assert_eq!(s.read(&si, 1, 0, 1), Err(StorageError::NoSuchShare));
        // new_length larger than the data does not extend it.
        let mut m = BTreeMap::new();
        m.insert(0, tw(vec![(0, 2, b"he")], vec![], Some(50)));
        assert!(
            s.read_test_write(&si, &secrets(1), &m, &[])
                .unwrap()
                .success
        );
        assert_eq!(s.read(&si, 0, 0, 100).unwrap(), b"he".to_vec());
        // A failing test on one share blocks the writes to all.
        let mut m = BTreeMap::new();
        m.insert(0, tw(vec![], vec![(0, b"ZZ")], None));
        m.insert(3, tw(vec![(0, 1, b"q")], vec![(0, b"new")], None));
        assert!(
            !s.read_test_write(&si, &secrets(1), &m, &[])
                .unwrap()
                .success
        );
        assert_eq!(s.read(&si, 0, 0, 100).unwrap(), b"he".to_vec());
        assert_eq!(s.read(&si, 3, 0, 1), Err(StorageError::NoSuchShare));
    }
}
