//! In-process loopback grids for tests: N lafs storage servers over HTTPS on 127.0.0.1, each
//! with a [`MemoryBackend`] behind a fault-injecting wrapper, and the [`ServerSet`] a client
//! uses to reach them.
//!
//! Design: every server of a process shares one TLS identity (RSA key generation is slow), but
//! each gets its own swissnum, port, server id, permutation seed and lease seed (the "TubID"
//! clients derive lease secrets from; the memory backend does not check it). Faults are switched
//! per server at run time through [`Faults`]: refuse everything (a stopped server), fail writes
//! after a number of successful ones, or flip bytes of what immutable reads return.
//!
//! Invariant: a fault only changes what the backend answers; the HTTP layer and the client are
//! the real ones, so tests exercise the same code paths as a real grid.

use super::{ServerHandle, ServerSet};
use crate::grid::furl::Nurl as GridNurl;
use crate::grid::server::StorageServerDesc;
use crate::protocol::client::{ClientOptions, StorageClient};
use crate::protocol::memory::MemoryBackend;
use crate::protocol::messages::{
    AllocateResponse, ReadTestWriteRequest, ReadTestWriteResponse, ShareNum, VersionInfo,
};
use crate::protocol::server::{
    serve, BackendError, RunningServer, ServerLimits, ShareKind, ShareRead, StorageBackend,
    StorageServer, WriteOutcome,
};
use crate::protocol::tls::NodeIdentity;
use crate::protocol::{LeaseSecrets, StorageIndex};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// Run-time fault switches of one test server.
#[derive(Debug, Default)]
pub struct Faults {
    /// Every request fails (HTTP 500), as if the server were gone.
    pub offline: AtomicBool,
    /// Writes fail once this many more have succeeded (`u64::MAX`: never).
    writes_left: AtomicU64,
    /// Byte range `[start, end)` of every immutable share whose read bytes are inverted.
    corrupt: Mutex<Option<(u64, u64)>>,
    /// Successful immutable writes (PATCHes) so far.
    pub writes: AtomicU64,
    /// Immutable share reads served so far.
    pub reads: AtomicU64,
    /// Until the next allocation, listings leave out the shares this server holds, and that
    /// allocation answers neither "already have" nor "allocated" for them: what a server
    /// answers while another upload's last write of them is being made durable (the share
    /// completes an instant later).
    finishing_once: AtomicBool,
}

impl Faults {
    fn new() -> Self {
        Faults {
            writes_left: AtomicU64::new(u64::MAX),
            ..Faults::default()
        }
    }

    /// Takes the server off (true) or back on line.
    pub fn set_offline(&self, off: bool) {
        self.offline.store(off, Ordering::SeqCst);
    }

    /// Lets `n` more writes succeed, then fails every write.
    pub fn fail_writes_after(&self, n: u64) {
        self.writes_left.store(n, Ordering::SeqCst);
    }

    /// Until the next allocation, the shares this server holds look like shares another upload
    /// is still writing: not listed, and neither held nor granted by that allocation. Later
    /// requests answer normally.
    pub fn finishing_once(&self) {
        self.finishing_once.store(true, Ordering::SeqCst);
    }

    /// Inverts the bytes `[start, end)` of every immutable share this server returns.
    pub fn corrupt_reads(&self, start: u64, end: u64) {
        if let Ok(mut c) = self.corrupt.lock() {
            *c = Some((start, end));
        }
    }

    /// Successful immutable writes so far.
    pub fn write_count(&self) -> u64 {
        self.writes.load(Ordering::SeqCst)
    }

    fn check(&self) -> Result<(), BackendError> {
        if self.offline.load(Ordering::SeqCst) {
            Err(BackendError::Internal("test server is offline".into()))
        } else {
            Ok(())
        }
    }
}

/// A [`MemoryBackend`] with [`Faults`].
#[derive(Debug)]
pub struct FaultyBackend {
    pub inner: MemoryBackend,
    pub faults: Arc<Faults>,
}

impl StorageBackend for FaultyBackend {
    fn version(&self) -> Result<VersionInfo, BackendError> {
        self.faults.check()?;
        self.inner.version()
    }

    fn allocate_buckets(
        &self,
        si: &StorageIndex,
        lease: &LeaseSecrets,
        share_numbers: &BTreeSet<ShareNum>,
        allocated_size: u64,
    ) -> Result<AllocateResponse, BackendError> {
        self.faults.check()?;
        let mut r = self
            .inner
            .allocate_buckets(si, lease, share_numbers, allocated_size)?;
        if self.faults.finishing_once.swap(false, Ordering::SeqCst) {
            r.already_have.clear();
        }
        Ok(r)
    }

    fn write(
        &self,
        si: &StorageIndex,
        shnum: ShareNum,
        offset: u64,
        data: &[u8],
    ) -> Result<WriteOutcome, BackendError> {
        self.faults.check()?;
        let left = self.faults.writes_left.load(Ordering::SeqCst);
        if left == 0 {
            return Err(BackendError::Internal("test server write failure".into()));
        }
        if left != u64::MAX {
            self.faults.writes_left.store(left - 1, Ordering::SeqCst);
        }
        let r = self.inner.write(si, shnum, offset, data)?;
        self.faults.writes.fetch_add(1, Ordering::SeqCst);
        Ok(r)
    }

    fn abort(&self, si: &StorageIndex, shnum: ShareNum) -> Result<(), BackendError> {
        self.faults.check()?;
        self.inner.abort(si, shnum)
    }

    fn list_immutable(&self, si: &StorageIndex) -> Result<BTreeSet<ShareNum>, BackendError> {
        self.faults.check()?;
        if self.faults.finishing_once.load(Ordering::SeqCst) {
            return Ok(BTreeSet::new());
        }
        self.inner.list_immutable(si)
    }

    fn read_immutable(
        &self,
        si: &StorageIndex,
        shnum: ShareNum,
        offset: u64,
        length: u64,
    ) -> Result<ShareRead, BackendError> {
        self.faults.check()?;
        self.faults.reads.fetch_add(1, Ordering::SeqCst);
        let mut r = self.inner.read_immutable(si, shnum, offset, length)?;
        let corrupt = self.faults.corrupt.lock().ok().and_then(|c| *c);
        if let Some((a, b)) = corrupt {
            for (i, byte) in r.data.iter_mut().enumerate() {
                let pos = offset + i as u64;
                if pos >= a && pos < b {
                    *byte ^= 0xff;
                }
            }
        }
        Ok(r)
    }

    fn advise_corrupt(
        &self,
        kind: ShareKind,
        si: &StorageIndex,
        shnum: ShareNum,
        reason: &str,
    ) -> Result<(), BackendError> {
        self.faults.check()?;
        self.inner.advise_corrupt(kind, si, shnum, reason)
    }

    fn read_test_write(
        &self,
        si: &StorageIndex,
        write_enabler: &[u8],
        lease: &LeaseSecrets,
        request: &ReadTestWriteRequest,
    ) -> Result<ReadTestWriteResponse, BackendError> {
        self.faults.check()?;
        self.inner
            .read_test_write(si, write_enabler, lease, request)
    }

    fn read_mutable(
        &self,
        si: &StorageIndex,
        shnum: ShareNum,
        offset: u64,
        length: u64,
    ) -> Result<ShareRead, BackendError> {
        self.faults.check()?;
        self.inner.read_mutable(si, shnum, offset, length)
    }

    fn list_mutable(&self, si: &StorageIndex) -> Result<BTreeSet<ShareNum>, BackendError> {
        self.faults.check()?;
        self.inner.list_mutable(si)
    }

    fn add_lease(&self, si: &StorageIndex, lease: &LeaseSecrets) -> Result<(), BackendError> {
        self.faults.check()?;
        self.inner.add_lease(si, lease)
    }
}

/// One running test server.
#[derive(Debug)]
pub struct TestServer {
    pub backend: Arc<FaultyBackend>,
    pub handle: Arc<ServerHandle>,
    pub nurl: String,
    running: Option<RunningServer>,
}

impl TestServer {
    /// The server's fault switches.
    pub fn faults(&self) -> &Faults {
        &self.backend.faults
    }

    /// The memory backend (shares, leases, corruption advisories).
    pub fn memory(&self) -> &MemoryBackend {
        &self.backend.inner
    }
}

/// A loopback grid of lafs storage servers.
#[derive(Debug)]
pub struct TestGrid {
    pub servers: Vec<TestServer>,
}

/// The process-wide TLS identity of test servers.
fn identity() -> &'static NodeIdentity {
    static ID: OnceLock<NodeIdentity> = OnceLock::new();
    ID.get_or_init(|| NodeIdentity::generate().expect("RSA key generation"))
}

/// Options of a test grid.
#[derive(Debug, Clone)]
pub struct TestGridOptions {
    /// Bytes of space per server.
    pub capacity: u64,
    /// Client options for the handles (short timeouts keep failing tests bounded).
    pub client: ClientOptions,
}

impl Default for TestGridOptions {
    fn default() -> Self {
        TestGridOptions {
            capacity: 1 << 32,
            client: ClientOptions {
                connect_timeout: Duration::from_secs(5),
                request_timeout: Duration::from_secs(20),
                retries: 1,
                max_idle: 16,
            },
        }
    }
}

impl TestGrid {
    /// Starts `n` servers with the default options. Needs a tokio runtime.
    pub async fn start(n: usize) -> std::io::Result<TestGrid> {
        Self::start_with(n, TestGridOptions::default()).await
    }

    /// Starts `n` servers.
    pub async fn start_with(n: usize, opts: TestGridOptions) -> std::io::Result<TestGrid> {
        let id = identity();
        let pin = id
            .pin()
            .map_err(|e| std::io::Error::other(e.to_string()))?
            .to_string();
        let tls = id
            .server_config()
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        let mut servers = Vec::with_capacity(n);
        for i in 0..n {
            let faults = Arc::new(Faults::new());
            let backend = Arc::new(FaultyBackend {
                inner: MemoryBackend::new(opts.capacity),
                faults,
            });
            let swissnum = crate::util::base32::encode(&rand::random::<[u8; 20]>());
            let server = Arc::new(StorageServer::new(
                backend.clone(),
                &swissnum,
                ServerLimits::default(),
            ));
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            let running = serve(listener, tls.clone(), server)?;
            let nurl = format!(
                "pb://{pin}@127.0.0.1:{}/{swissnum}#v=1",
                running.local_addr.port()
            );
            let client = StorageClient::new(&nurl, opts.client.clone())
                .map_err(|e| std::io::Error::other(e.to_string()))?;
            let seed: [u8; 32] = rand::random();
            let desc = StorageServerDesc {
                server_id: format!("v0-testserver{i:03}-{}", crate::util::base32::encode(&seed)),
                nickname: format!("test{i}"),
                furl: None,
                nurls: GridNurl::parse(&nurl).into_iter().collect(),
                permutation_seed: seed.to_vec(),
                lease_seed: rand::random(),
            };
            servers.push(TestServer {
                backend,
                handle: Arc::new(ServerHandle { desc, client }),
                nurl,
                running: Some(running),
            });
        }
        Ok(TestGrid { servers })
    }

    /// The client's view of every server.
    pub fn server_set(&self) -> ServerSet {
        ServerSet {
            servers: self.servers.iter().map(|s| s.handle.clone()).collect(),
        }
    }

    /// The server whose handle is `handle` (by server id).
    pub fn by_id(&self, server_id: &str) -> Option<&TestServer> {
        self.servers
            .iter()
            .find(|s| s.handle.desc.server_id == server_id)
    }

    /// Complete immutable shares of `si` per server, in server order.
    pub fn shares_of(&self, si: &StorageIndex) -> Vec<BTreeSet<ShareNum>> {
        self.servers
            .iter()
            .map(|s| s.memory().list_immutable(si).unwrap_or_default())
            .collect()
    }

    /// Successful immutable writes on all servers.
    pub fn total_writes(&self) -> u64 {
        self.servers.iter().map(|s| s.faults().write_count()).sum()
    }
}

impl Drop for TestGrid {
    fn drop(&mut self) {
        for s in &mut self.servers {
            if let Some(r) = s.running.take() {
                r.shutdown();
            }
        }
    }
}
