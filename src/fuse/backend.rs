//! [`GridBackend`]: the filesystem layer's [`Backend`] over a real grid.
//!
//! - `upload_file`: a CHK (or LIT) upload of the local file, convergent with the node's secret
//!   and its `shares.*` parameters. Its [`ContentHasher`] is Tahoe's convergence hasher for the
//!   segment size of a file of at least `max_segment_size` bytes, so a file written
//!   sequentially gets its key without a second pass; for a smaller file (whose segment size,
//!   and so whose hash tag, depends on its size) it gives no key and the upload computes it
//!   (exactly Tahoe's convergence either way); `read_file`: a ranged CHK/LIT download (or a ranged read of a
//!   mutable file), fetching only the segments the range touches.
//! - `read_dir` / `publish_dir`: a directory is the body of its SDMF/MDMF backing file. A
//!   [`DirVersion`] is the 8-byte big-endian seqnum followed by the 32-byte root hash of the
//!   version read, or the seqnum alone right after our own publish (the publish does not report
//!   its root hash).
//! - `reserve_dir` / `create_dir`: a new mutable file as a directory, created holding its first
//!   body. Its RSA key comes from a pool that a background thread at idle priority keeps ready
//!   once the mount made its first directory: [`KEY_POOL`] keys, more (up to [`KEY_AHEAD`])
//!   while `mkdir`s announced by `prepare_dirs` are waiting for theirs (key generation is most
//!   of the cost of a directory: 85% of the daemon's CPU time during an rsync of a tree of 126
//!   directories). With the pool drained, a creation generates its key inline at normal
//!   priority, so a burst runs two generators at once or more.
//! - Reads of CHK files go through read streams: each `download_range` pays for locating the
//!   shares and fetching their headers and hash trees, so a read that starts where an earlier
//!   stream of the same file ends opens a stream to the end of the file, which downloads in the
//!   background with the downloader's own pipelining; later reads inside it wait for its bytes
//!   instead of starting downloads of their own. Flow control bounds it: the download pauses
//!   while it is [`STREAM_AHEAD`] bytes past the furthest byte a reader asked for, and bytes
//!   more than [`STREAM_KEEP`] behind the furthest read start are dropped. So a sequential
//!   reader of a large file pays for locating the shares once, and a reader that stops costs at
//!   most `STREAM_AHEAD` bytes fetched for nothing. A read elsewhere opens a stream of exactly
//!   its own length (random reads fetch nothing extra). At most [`MAX_STREAMS`] streams are
//!   kept (the least recently used is dropped; its download stops once no reader waits on it),
//!   so memory stays bounded by about `MAX_STREAMS * (STREAM_KEEP + STREAM_AHEAD)` plus the
//!   ranges readers wait on. A stream that fails, or that already dropped the bytes a reader
//!   wants, leaves that reader to a direct ranged download of its own range.
//! - Each range is fetched once by the streams, even when reads arrive out of order. A read
//!   less than `STREAM_KEEP` behind the bytes a stream still holds is a straggler of that
//!   stream's reader (the kernel's and the layer's reads run concurrently, and a loaded machine
//!   delays some): it gets a direct download of its own range and opens no stream, so it can
//!   neither push the stream out of the kept set nor be continued into a second stream to the
//!   end of the file. A read that more than one stream covers goes to the one furthest along,
//!   so a stream behind another (a second reader's, caught up) is not driven on to fetch again
//!   what the other holds. [`GridBackend::read_counters`] counts the bytes fetched for reads.
//!
//! Invariants: `publish_dir` is a test-and-write. It publishes against the server map of the
//! read that produced `expected` (kept per directory), or against a fresh map whose version is
//! `expected`; a share changed by another writer in between makes the servers refuse the write,
//! reported as [`BackendError::Conflict`]. A publish succeeds only when the shares it wrote
//! reach `shares.happy` distinct servers. No cap ever reaches an error message.

use crate::cap::{Cap, MutableFormat, MutableWriteCap, NodeCap};
use crate::client::directory::DirectoryClient;
use crate::client::immutable::{self, DownloadOptions, FileSource, UploadOptions};
use crate::client::mutable::MutableClient;
use crate::client::mutable::NetMutableServer;
use crate::client::secrets::ClientSecrets;
use crate::client::ServerSet;
use crate::immutable::{EncodingParams, Geometry, KeySource, PlaintextSource};
use crate::mutable::keys::KeyPool;
use crate::mutable::publish::{self, PublishOutcome, PublishParams};
use crate::mutable::retrieve::ServerMap;
use crate::mutable::storage::MutableServer;
use crate::mutable::MutableError;
use crate::vfs::backend::{
    Backend, BackendError, BoxFuture, ContentHasher, ContentKey, DirVersion, NewDirKey,
};
use crate::vfs::pagecache::ReadOnce;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use tokio::sync::watch;

/// Server maps kept per directory; bounded so a long mount over many directories does not grow
/// without limit (a missing map only costs one more mapping round).
const MAX_MAPS: usize = 1024;

/// RSA keys kept ready for new directories.
pub const KEY_POOL: usize = 8;
/// RSA keys generated ahead at most while announced directories wait for theirs (about 4 KiB of
/// memory each).
pub const KEY_AHEAD: usize = 64;
/// Where a read stream cuts the bytes it receives: at multiples of this (the filesystem layer's
/// default segment size, [`crate::vfs::Config`]), so a segment read is one chunk, handed out
/// without a copy. Another segment size still reads correctly, through a copy.
pub const STREAM_CUT: u64 = 128 * 1024;
/// Read streams kept at once.
pub const MAX_STREAMS: usize = 3;
/// How far a read stream downloads past the furthest byte its readers asked for.
pub const STREAM_AHEAD: u64 = 8 << 20;
/// How far behind the furthest read start a stream keeps its bytes (readers of nearby ranges
/// arrive out of order: the kernel's and the layer's read-ahead run concurrently).
pub const STREAM_KEEP: u64 = 4 << 20;

/// One background ranged download of a CHK file: `start .. start + len`, its bytes so far.
struct ReadStream {
    cap: String,
    start: u64,
    len: u64,
    buf: Arc<Mutex<StreamBuf>>,
    /// Bumped at each arrival; the sender lives in the download task, so a stopped (dropped)
    /// download closes the channel.
    progress: watch::Receiver<u64>,
    task: tokio::task::AbortHandle,
}

/// What the reads of a [`GridBackend`] fetched so far (all files, all readers).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReadCounters {
    /// Plaintext bytes of CHK files downloaded: by read streams and by direct ranged downloads.
    pub fetched: u64,
    /// Plaintext bytes handed to readers of CHK files.
    pub served: u64,
    /// Read streams opened to the end of a file (a sequential reader found).
    pub streams_to_end: u64,
    /// Reads behind the window a stream still holds, served by a direct download.
    pub stragglers: u64,
}

#[derive(Debug, Default)]
struct Counters {
    fetched: AtomicU64,
    served: AtomicU64,
    streams_to_end: AtomicU64,
    stragglers: AtomicU64,
}

/// The bytes of a stream still held, and its flow control.
struct StreamBuf {
    /// Received chunks in order, as (absolute offset, bytes): one per write of the download,
    /// also cut at multiples of [`STREAM_CUT`] (the layer's segment size; no chunk crosses
    /// one). The download writes whole CHK segments, so a reader of exactly one such range (the
    /// layer reads whole segments) gets the chunk itself, shared, not a copy.
    chunks: VecDeque<(u64, Arc<Vec<u8>>)>,
    /// Absolute offset of the first byte held (bytes below it were dropped).
    held_from: u64,
    /// Absolute end of the bytes received.
    received: u64,
    /// The furthest end a reader asked for: the download runs at most [`STREAM_AHEAD`] past it.
    want: u64,
    /// Chunks wholly below this offset are dropped ([`STREAM_KEEP`] behind the furthest read start).
    low: u64,
    failed: bool,
    /// The download, waiting for readers to ask for more.
    waker: Option<std::task::Waker>,
}

impl StreamBuf {
    fn new(start: u64, want: u64) -> Self {
        StreamBuf {
            chunks: VecDeque::new(),
            held_from: start,
            received: start,
            want,
            low: 0,
            failed: false,
            waker: None,
        }
    }

    fn trim(&mut self) {
        while let Some((off, c)) = self.chunks.front() {
            if off + c.len() as u64 > self.low {
                break;
            }
            self.held_from = off + c.len() as u64;
            self.chunks.pop_front();
        }
    }

    /// Bytes `off .. off + len`, all held: the chunk itself when it is exactly that range, else
    /// a copy.
    fn copy(&self, off: u64, len: u64) -> Option<Arc<Vec<u8>>> {
        let end = off + len;
        // The first chunk ending after `off` (chunks are in order and contiguous).
        let first = self
            .chunks
            .partition_point(|(c_off, c)| c_off + c.len() as u64 <= off);
        if let Some((c_off, c)) = self.chunks.get(first) {
            if *c_off == off && c.len() as u64 == len {
                return Some(Arc::clone(c));
            }
        }
        let mut out = Vec::with_capacity(usize::try_from(len).ok()?);
        // From `first` on every chunk ends after `off`; stop at the first that starts at `end`.
        for (c_off, c) in self.chunks.range(first..) {
            if *c_off >= end {
                break;
            }
            let c_end = c_off + c.len() as u64;
            let a = usize::try_from(off.max(*c_off) - c_off).ok()?;
            let b = usize::try_from(end.min(c_end) - c_off).ok()?;
            out.extend_from_slice(c.get(a..b)?);
        }
        (out.len() as u64 == len).then(|| Arc::new(out))
    }
}

impl ReadStream {
    /// Whether this stream can serve `off .. off + len` of `cap`: if so, how far it has
    /// received.
    fn covering(&self, cap: &str, off: u64, len: u64) -> Option<u64> {
        if self.cap != cap || off + len > self.start + self.len {
            return None;
        }
        let b = self.buf.lock().ok()?;
        (!b.failed && b.held_from <= off).then_some(b.received)
    }

    /// Whether `off` of `cap` is a straggler of this stream's reader: inside the stream, behind
    /// the bytes it still holds, by less than [`STREAM_KEEP`]. (A read further behind is taken
    /// for another reader of the file.)
    fn left_behind(&self, cap: &str, off: u64) -> bool {
        self.cap == cap
            && self.start <= off
            && off < self.start + self.len
            && self
                .buf
                .lock()
                .is_ok_and(|b| off < b.held_from && off + STREAM_KEEP >= b.held_from)
    }

    /// Asks for bytes `off .. off + len` (inside the stream): moves the flow control on (the
    /// download may run [`STREAM_AHEAD`] past them; bytes [`STREAM_KEEP`] behind `off` go) and
    /// wakes the download if it waits for that.
    fn ask(b: &mut StreamBuf, off: u64, len: u64) {
        b.want = b.want.max(off + len);
        b.low = b.low.max(off.saturating_sub(STREAM_KEEP));
        b.trim();
        if b.received < b.want + STREAM_AHEAD {
            if let Some(w) = b.waker.take() {
                w.wake();
            }
        }
    }

    /// Bytes `off .. off + len` (inside the stream) if received already, asking for them
    /// either way.
    fn ready(&self, off: u64, len: u64) -> Option<Arc<Vec<u8>>> {
        let mut b = self.buf.lock().ok()?;
        Self::ask(&mut b, off, len);
        if b.failed || off < b.held_from || b.received < off + len {
            return None;
        }
        b.copy(off, len)
    }

    /// Waits for bytes `off .. off + len` (inside the stream); `None` when the stream failed,
    /// was stopped, or already dropped those bytes.
    async fn wait(&self, off: u64, len: u64) -> Option<Arc<Vec<u8>>> {
        let need = off + len;
        Self::ask(&mut *self.buf.lock().ok()?, off, len);
        let mut rx = self.progress.clone();
        loop {
            {
                let b = self.buf.lock().ok()?;
                if b.failed || off < b.held_from {
                    return None;
                }
                if b.received >= need {
                    return b.copy(off, len);
                }
            }
            rx.changed().await.ok()?;
        }
    }
}

impl Drop for ReadStream {
    fn drop(&mut self) {
        if let Ok(b) = self.buf.lock() {
            tracing::debug!(
                start = self.start,
                len = self.len,
                fetched = b.received - self.start,
                "read stream dropped"
            );
        }
        self.task.abort();
    }
}

/// Of the `streams` covering `off .. off + len` of `cap`, the one furthest along, made the most
/// recently used (last: the oldest stream is the one dropped).
fn take_covering(
    streams: &mut VecDeque<Arc<ReadStream>>,
    cap: &str,
    off: u64,
    len: u64,
) -> Option<Arc<ReadStream>> {
    let (i, _) = streams
        .iter()
        .enumerate()
        .filter_map(|(i, s)| Some((i, s.covering(cap, off, len)?)))
        .max_by_key(|&(_, received)| received)?;
    let s = streams.remove(i)?;
    streams.push_back(Arc::clone(&s));
    Some(s)
}

/// The download's output: appends to the stream's buffer and reports progress. It holds the
/// buffer, not the stream, so dropping the last [`ReadStream`] stops the download. It waits
/// (flow control) while it is [`STREAM_AHEAD`] bytes past what readers asked for.
struct StreamWriter {
    buf: Arc<Mutex<StreamBuf>>,
    progress: watch::Sender<u64>,
    counters: Arc<Counters>,
}

impl tokio::io::AsyncWrite for StreamWriter {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bytes: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let n = match self.buf.lock() {
            Ok(mut b) => {
                if b.received >= b.want + STREAM_AHEAD {
                    b.waker = Some(cx.waker().clone());
                    return Poll::Pending;
                }
                let mut rest = bytes;
                while !rest.is_empty() {
                    let at = b.received;
                    let room = STREAM_CUT - at % STREAM_CUT;
                    let (piece, more) = rest.split_at(rest.len().min(room as usize));
                    b.chunks.push_back((at, Arc::new(piece.to_vec())));
                    b.received += piece.len() as u64;
                    rest = more;
                }
                b.trim();
                b.received
            }
            Err(_) => return Poll::Ready(Err(std::io::Error::other("read stream poisoned"))),
        };
        self.counters
            .fetched
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        self.progress.send_replace(n);
        Poll::Ready(Ok(bytes.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// A cache file read by one upload pass, in order: a [`FileSource`] with read-ahead and
/// drop-behind ([`ReadOnce`]); a second pass (a share placed again) reads it from disk.
struct OnceSource {
    inner: FileSource,
    pages: Option<ReadOnce>,
}

impl OnceSource {
    fn open(path: &Path) -> std::io::Result<Self> {
        let inner = FileSource::open(path)?;
        let pages = ReadOnce::new(inner.size());
        Ok(OnceSource { inner, pages })
    }
}

impl PlaintextSource for OnceSource {
    fn size(&self) -> u64 {
        self.inner.size()
    }

    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), crate::immutable::BoxError> {
        let len = buf.len() as u64;
        if let Some(p) = self.pages.as_mut() {
            p.before(self.inner.file(), offset, len);
        }
        self.inner.read_at(offset, buf)?;
        if let Some(p) = self.pages.as_mut() {
            p.after(self.inner.file(), offset + len);
        }
        Ok(())
    }
}

/// Tahoe's convergence hasher fed while a file is written: it assumes the segment size of a
/// file of at least `max_segment_size` bytes, and gives a key only for such a file.
struct ConvergentHasher {
    hasher: crate::crypto::hash::TaggedHasher,
    params: EncodingParams,
    segment_size: u64,
}

impl ConvergentHasher {
    fn new(params: &EncodingParams, secret: &[u8]) -> Option<Self> {
        let geom = Geometry::new(params.max_segment_size, params).ok()?;
        let hasher = crate::crypto::hash::convergence_hasher(
            params.needed,
            params.total,
            geom.segment_size,
            secret,
        );
        Some(ConvergentHasher {
            hasher,
            params: params.clone(),
            segment_size: geom.segment_size,
        })
    }
}

impl ContentHasher for ConvergentHasher {
    fn update(&mut self, data: &[u8]) {
        self.hasher.update(data);
    }

    fn finish(self: Box<Self>, size: u64) -> Option<ContentKey> {
        let geom = Geometry::new(size, &self.params).ok()?;
        (size > crate::immutable::params::LIT_THRESHOLD && geom.segment_size == self.segment_size)
            .then(|| ContentKey(crate::crypto::hash::convergent_key(self.hasher)))
    }
}

/// The grid operations of a mount, over a node's servers.
pub struct GridBackend {
    servers: ServerSet,
    dirs: DirectoryClient,
    upload: UploadOptions,
    secrets: ClientSecrets,
    download: DownloadOptions,
    format: MutableFormat,
    happy: usize,
    /// Directory write cap -> (version read, the map it was read with).
    maps: Mutex<HashMap<String, (DirVersion, ServerMap)>>,
    /// The read streams, oldest first.
    streams: Mutex<VecDeque<Arc<ReadStream>>>,
    counters: Arc<Counters>,
    lease_secret: [u8; 32],
    /// See [`GridBackend::creator`].
    creator: OnceLock<MutableClient>,
}

impl std::fmt::Debug for GridBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GridBackend")
            .field("servers", &self.servers.servers.len())
            .field("happy", &self.happy)
            .finish_non_exhaustive()
    }
}

fn version_bytes(seqnum: u64, root: Option<&[u8; 32]>) -> DirVersion {
    let mut v = seqnum.to_be_bytes().to_vec();
    if let Some(r) = root {
        v.extend_from_slice(r);
    }
    DirVersion(v)
}

/// Whether the version just read (`seen`, full) is the `expected` one. An `expected` of the
/// seqnum alone (after our own publish) matches on the seqnum.
fn same_version(expected: &DirVersion, seen: &DirVersion) -> bool {
    match expected.0.len() {
        8 => seen.0.get(..8) == Some(&expected.0[..]),
        _ => expected == seen,
    }
}

fn mutable_error(e: MutableError) -> BackendError {
    match e {
        MutableError::UncoordinatedWrite { .. } => BackendError::Conflict,
        MutableError::NoVersions {
            problems: 0,
            unreachable: 0,
        } => BackendError::NotFound,
        other => BackendError::Other(other.to_string()),
    }
}

fn other<E: std::fmt::Display>(e: E) -> BackendError {
    BackendError::Other(e.to_string())
}

impl GridBackend {
    /// A backend over `servers`. `dirs` carries the mutable parameters and key pool;
    /// `upload` the immutable encoding parameters and convergence; `lease_secret` is the node's
    /// `private/secret`; `happy` is `shares.happy`; `format` the format of new directories.
    pub fn new(
        servers: ServerSet,
        dirs: DirectoryClient,
        upload: UploadOptions,
        lease_secret: &[u8; 32],
        happy: usize,
        format: MutableFormat,
    ) -> Self {
        GridBackend {
            servers,
            dirs,
            upload,
            secrets: ClientSecrets::from_lease_secret(lease_secret),
            download: DownloadOptions::default(),
            format,
            happy,
            maps: Mutex::new(HashMap::new()),
            streams: Mutex::new(VecDeque::new()),
            counters: Arc::default(),
            lease_secret: *lease_secret,
            creator: OnceLock::new(),
        }
    }

    /// The client new directories are made with. A mount makes directories in bursts (`mkdir
    /// -p`, rsync of a tree) and each needs a fresh RSA key, so from the first `mkdir` on a
    /// background thread at idle priority keeps [`KEY_POOL`] keys ready, and more while
    /// announced directories wait (`take` generates inline when the pool is empty, so a burst
    /// runs two generators at once or more). Not before: a mount that never makes a directory
    /// spends no CPU on keys.
    fn creator(&self) -> &MutableClient {
        self.creator.get_or_init(|| {
            MutableClient::new(
                self.servers.clone(),
                self.lease_secret,
                self.dirs.params(),
                Arc::new(KeyPool::with_ahead(KEY_POOL, KEY_AHEAD)),
            )
            .with_preferred(self.upload.preferred.clone())
        })
    }

    /// What the reads fetched and served so far.
    pub fn read_counters(&self) -> ReadCounters {
        let c = &self.counters;
        ReadCounters {
            fetched: c.fetched.load(Ordering::Relaxed),
            served: c.served.load(Ordering::Relaxed),
            streams_to_end: c.streams_to_end.load(Ordering::Relaxed),
            stragglers: c.stragglers.load(Ordering::Relaxed),
        }
    }

    /// The stream to read `off .. off + len` of `cap` (a CHK file of `size` bytes) from: of
    /// those that cover it, the one furthest along; else a new one (to the end of the file when
    /// it continues an earlier stream). `None` for a straggler (see the module doc): it reads
    /// its own range directly.
    fn stream_for(
        &self,
        node: &NodeCap,
        cap: &str,
        off: u64,
        len: u64,
        size: u64,
    ) -> Option<Arc<ReadStream>> {
        let mut streams = self.streams.lock().ok()?;
        if let Some(s) = take_covering(&mut streams, cap, off, len) {
            return Some(s);
        }
        if streams.iter().any(|s| s.left_behind(cap, off)) {
            self.counters.stragglers.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(off, len, "read behind a stream's kept window");
            return None;
        }
        let continues = streams
            .iter()
            .any(|s| s.cap == cap && s.start + s.len == off);
        // A read that continues an earlier stream is sequential: stream to the end of the
        // file (flow control bounds what is fetched ahead). Any other read: its own range.
        let slen = if continues { size - off } else { len };
        if continues {
            self.counters.streams_to_end.fetch_add(1, Ordering::Relaxed);
        }
        tracing::debug!(off, len = slen, to_end = continues, "read stream opened");
        let (tx, rx) = watch::channel(0u64);
        let buf = Arc::new(Mutex::new(StreamBuf::new(off, off + len)));
        let mut writer = StreamWriter {
            buf: Arc::clone(&buf),
            progress: tx,
            counters: Arc::clone(&self.counters),
        };
        let servers = self.servers.clone();
        let opts = self.download.clone();
        let node = node.clone();
        let task = tokio::spawn(async move {
            let r = immutable::download_range(&servers, &node, off, slen, &mut writer, &opts).await;
            if r.is_err() {
                if let Ok(mut b) = writer.buf.lock() {
                    b.failed = true;
                }
            }
            // Readers re-check (the failure, or the last bytes).
            writer.progress.send_modify(|_| {});
        });
        let stream = Arc::new(ReadStream {
            cap: cap.to_string(),
            start: off,
            len: slen,
            buf,
            progress: rx,
            task: task.abort_handle(),
        });
        if streams.len() >= MAX_STREAMS {
            streams.pop_front();
        }
        streams.push_back(Arc::clone(&stream));
        Some(stream)
    }

    fn check_happiness(&self, out: &PublishOutcome) -> Result<(), BackendError> {
        let mut map: BTreeMap<u16, BTreeSet<usize>> = BTreeMap::new();
        for &(server, shnum) in &out.written {
            if let Ok(sh) = u16::try_from(shnum) {
                map.entry(sh).or_default().insert(server);
            }
        }
        let h = crate::grid::servers_of_happiness(&map);
        if h < self.happy {
            return Err(BackendError::Other(format!(
                "directory shares reached only {h} servers, fewer than shares.happy={}",
                self.happy
            )));
        }
        Ok(())
    }

    fn remember(&self, cap: &str, v: DirVersion, map: ServerMap) {
        if let Ok(mut m) = self.maps.lock() {
            if m.len() >= MAX_MAPS && !m.contains_key(cap) {
                m.clear();
            }
            m.insert(cap.to_string(), (v, map));
        }
    }

    fn take_map(&self, cap: &str) -> Option<(DirVersion, ServerMap)> {
        self.maps.lock().ok().and_then(|mut m| m.remove(cap))
    }

    async fn write_cap_of(cap: &str) -> Result<MutableWriteCap, BackendError> {
        match Cap::parse(cap) {
            Cap::Dir(NodeCap::MutableWrite(w)) => Ok(w),
            Cap::Dir(_) => Err(BackendError::Other("the directory is read-only".into())),
            _ => Err(BackendError::Other("not a directory cap".into())),
        }
    }

    async fn do_read_dir(&self, cap: &str) -> Result<(Vec<u8>, DirVersion), BackendError> {
        let files = self.dirs.files();
        match Cap::parse(cap) {
            Cap::Dir(NodeCap::MutableWrite(w)) => {
                let (r, map) = files.read_for_write(&w).await.map_err(mutable_error)?;
                let v = version_bytes(r.version.seqnum, Some(&r.version.root_hash));
                self.remember(cap, v.clone(), map);
                Ok((r.data, v))
            }
            Cap::Dir(NodeCap::MutableRead(rc)) => {
                let r = files.read(&rc, None).await.map_err(mutable_error)?;
                let v = version_bytes(r.version.seqnum, Some(&r.version.root_hash));
                Ok((r.data, v))
            }
            Cap::Dir(node @ (NodeCap::Lit(_) | NodeCap::Chk(_))) => {
                // Immutable directories never change: one version.
                let (data, _) = immutable::download_bytes(&self.servers, &node, &self.download)
                    .await
                    .map_err(other)?;
                Ok((data, DirVersion(Vec::new())))
            }
            _ => Err(BackendError::Other("not a readable directory cap".into())),
        }
    }

    async fn do_publish_dir(
        &self,
        cap: &str,
        expected: &DirVersion,
        body: Vec<u8>,
    ) -> Result<DirVersion, BackendError> {
        let w = Self::write_cap_of(cap).await?;
        let files = self.dirs.files();
        let mut map = match self.take_map(cap) {
            Some((v, map)) if &v == expected => map,
            _ => {
                // No map of the expected version: map again; a file that moved on is a
                // conflict.
                let (r, map) = files.read_for_write(&w).await.map_err(mutable_error)?;
                let seen = version_bytes(r.version.seqnum, Some(&r.version.root_hash));
                if !same_version(expected, &seen) {
                    return Err(BackendError::Conflict);
                }
                map
            }
        };
        let out = files
            .publish_against(&w, &mut map, &body)
            .await
            .map_err(mutable_error)?;
        self.check_happiness(&out)?;
        Ok(version_bytes(out.seqnum, None))
    }
}

impl Backend for GridBackend {
    fn content_hasher(&self) -> Option<Box<dyn ContentHasher>> {
        match &self.upload.key {
            KeySource::Convergent(secret) => {
                let h = ConvergentHasher::new(&self.upload.params, secret)?;
                Some(Box::new(h))
            }
            _ => None,
        }
    }

    fn upload_file<'a>(&'a self, path: &'a Path) -> BoxFuture<'a, String> {
        self.upload_file_keyed(path, None)
    }

    fn upload_file_keyed<'a>(
        &'a self,
        path: &'a Path,
        key: Option<ContentKey>,
    ) -> BoxFuture<'a, String> {
        Box::pin(async move {
            // Uploads of one storage index (identical content) take turns inside
            // `immutable::upload`, so two closes of equal files do not race on the servers.
            let result = match key {
                // Computed over exactly these bytes by the convergence hasher: the same key
                // the upload's own pass would find. With the key known, the upload reads the
                // file once, in order: it need not stay in the page cache.
                Some(ContentKey(k)) => {
                    let opts = UploadOptions {
                        key: KeySource::Fixed(k),
                        ..self.upload.clone()
                    };
                    let source = OnceSource::open(path).map_err(other)?;
                    immutable::upload(&self.servers, &self.secrets, source, &opts).await
                }
                None => {
                    let source = FileSource::open(path).map_err(other)?;
                    immutable::upload(&self.servers, &self.secrets, source, &self.upload).await
                }
            };
            Ok(Cap::File(result.map_err(other)?.cap).to_string())
        })
    }

    fn read_file<'a>(&'a self, cap: &'a str, offset: u64, len: u64) -> BoxFuture<'a, Vec<u8>> {
        Box::pin(async move {
            let d = self.read_file_shared(cap, offset, len).await?;
            Ok(Arc::try_unwrap(d).unwrap_or_else(|d| d.as_ref().clone()))
        })
    }

    fn read_ready(&self, cap: &str, offset: u64, len: u64) -> Option<Arc<Vec<u8>>> {
        let s = take_covering(&mut *self.streams.lock().ok()?, cap, offset, len)?;
        let d = s.ready(offset, len)?;
        self.counters.served.fetch_add(len, Ordering::Relaxed);
        Some(d)
    }

    fn read_pending(&self, cap: &str, offset: u64, len: u64) -> bool {
        self.streams
            .lock()
            .is_ok_and(|st| st.iter().any(|s| s.covering(cap, offset, len).is_some()))
    }

    fn read_file_shared<'a>(
        &'a self,
        cap: &'a str,
        offset: u64,
        len: u64,
    ) -> BoxFuture<'a, Arc<Vec<u8>>> {
        Box::pin(async move {
            match Cap::parse(cap) {
                Cap::File(node @ (NodeCap::Lit(_) | NodeCap::Chk(_))) => {
                    let size = match &node {
                        NodeCap::Lit(l) => l.data.len() as u64,
                        NodeCap::Chk(c) => c.size,
                        _ => 0,
                    };
                    let start = offset.min(size);
                    let len = len.min(size - start);
                    if matches!(node, NodeCap::Chk(_)) && len > 0 {
                        if let Some(s) = self.stream_for(&node, cap, start, len, size) {
                            if let Some(d) = s.wait(start, len).await {
                                self.counters.served.fetch_add(len, Ordering::Relaxed);
                                return Ok(d);
                            }
                        }
                        // The stream failed or was dropped: a download of our own.
                    }
                    let mut out = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
                    immutable::download_range(
                        &self.servers,
                        &node,
                        start,
                        len,
                        &mut out,
                        &self.download,
                    )
                    .await
                    .map_err(other)?;
                    if matches!(node, NodeCap::Chk(_)) {
                        let n = out.len() as u64;
                        self.counters.fetched.fetch_add(n, Ordering::Relaxed);
                        self.counters.served.fetch_add(n, Ordering::Relaxed);
                    }
                    Ok(Arc::new(out))
                }
                Cap::File(NodeCap::MutableWrite(w)) => {
                    let r = self
                        .dirs
                        .files()
                        .read_writeable(&w, Some((offset, len)))
                        .await
                        .map_err(mutable_error)?;
                    Ok(Arc::new(r.data))
                }
                Cap::File(NodeCap::MutableRead(rc)) => {
                    let r = self
                        .dirs
                        .files()
                        .read(&rc, Some((offset, len)))
                        .await
                        .map_err(mutable_error)?;
                    Ok(Arc::new(r.data))
                }
                _ => Err(BackendError::Other("not a readable file cap".into())),
            }
        })
    }

    fn read_dir<'a>(&'a self, cap: &'a str) -> BoxFuture<'a, (Vec<u8>, DirVersion)> {
        Box::pin(self.do_read_dir(cap))
    }

    fn publish_dir<'a>(
        &'a self,
        cap: &'a str,
        expected: &'a DirVersion,
        body: Vec<u8>,
    ) -> BoxFuture<'a, DirVersion> {
        Box::pin(self.do_publish_dir(cap, expected, body))
    }

    fn reserve_dir(&self) -> BoxFuture<'_, NewDirKey> {
        Box::pin(async move {
            let keys = Arc::clone(self.creator().key_pool());
            // `take` generates inline when the pool is empty: keep RSA off the async workers.
            let pair = tokio::task::spawn_blocking(move || keys.take())
                .await
                .map_err(|_| BackendError::Other("key generation task failed".into()))?
                .map_err(other)?;
            let w = pair.file_keys().write_cap(self.format);
            Ok(NewDirKey {
                cap: Cap::Dir(NodeCap::MutableWrite(w)).to_string(),
                key: Some(Arc::new(pair)),
            })
        })
    }

    fn create_dir<'a>(&'a self, key: &'a NewDirKey, body: Vec<u8>) -> BoxFuture<'a, DirVersion> {
        Box::pin(async move {
            let pair = key
                .key
                .as_deref()
                .ok_or_else(|| BackendError::Other("not a reserved directory".into()))?;
            let creator = self.creator();
            let si = pair.file_keys().reader.storage_index;
            // The placement `MutableClient::create` uses, with our key.
            let servers: Vec<NetMutableServer> = creator
                .servers()
                .permuted(&si, creator.preferred())
                .into_iter()
                .map(|handle| NetMutableServer { handle })
                .collect();
            let refs: Vec<&dyn MutableServer> =
                servers.iter().map(|s| s as &dyn MutableServer).collect();
            let params = creator.params();
            let (_, out) = publish::create(
                &refs,
                pair,
                self.format,
                &body,
                &PublishParams {
                    k: params.k,
                    n: params.n,
                    lease_secret: self.lease_secret,
                },
            )
            .await
            .map_err(mutable_error)?;
            self.check_happiness(&out)?;
            Ok(version_bytes(out.seqnum, None))
        })
    }

    fn prepare_dirs(&self, n: usize) {
        self.creator().key_pool().want(n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::mutable::MutableParams;
    use crate::client::testgrid::TestGrid;

    /// A backend over `grid` (2-of-4, happy 3, 128 KiB segments) and a CHK file of `data`
    /// uploaded to it, by its cap.
    async fn grid_file(grid: &TestGrid, data: Vec<u8>) -> (GridBackend, String) {
        let secret = [7u8; 32];
        let files = MutableClient::new(
            grid.server_set(),
            secret,
            MutableParams { k: 2, n: 4 },
            Arc::new(KeyPool::new(0)),
        );
        let params = EncodingParams {
            needed: 2,
            happy: 3,
            total: 4,
            max_segment_size: STREAM_CUT,
        };
        let upload = UploadOptions::convergent(params, b"convergence secret");
        let secrets = ClientSecrets::from_lease_secret(&secret);
        let r = immutable::upload(
            &grid.server_set(),
            &secrets,
            immutable::VecSource(data),
            &upload,
        )
        .await
        .unwrap();
        let b = GridBackend::new(
            grid.server_set(),
            DirectoryClient::new(files),
            upload,
            &secret,
            3,
            MutableFormat::Sdmf,
        );
        (b, Cap::File(r.cap).to_string())
    }

    fn content(size: u64) -> Vec<u8> {
        (0..size as u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect()
    }

    /// Reads segment-sized pieces `from .. to` of `cap` in order and checks them.
    async fn read_in_order(b: &GridBackend, cap: &str, data: &[u8], from: u64, to: u64) {
        let mut off = from;
        while off < to {
            let d = b.read_file_shared(cap, off, STREAM_CUT).await.unwrap();
            let end = (off + STREAM_CUT).min(data.len() as u64);
            assert_eq!(&d[..], &data[off as usize..end as usize], "at {off}");
            off += STREAM_CUT;
        }
    }

    /// Found as a 1 GiB sequential read through the mount for which the servers sent 1.6 GiB.
    /// Two reads arrived (late, in order) behind what the reader's stream still held: the first
    /// opened a stream of its own range, the second continued it into a second stream to the end
    /// of the file, and the reads after took turns between the two streams (each use made the
    /// other the least recently used, the first found), so both fetched the rest of the file.
    /// Now such stragglers read their own range directly and open no stream: every byte is
    /// fetched once by the streams, the stragglers' ranges once more.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_read_behind_a_streams_window_does_not_restart_the_stream() {
        let grid = TestGrid::start(4).await.unwrap();
        let size = 24 << 20;
        let data = content(size);
        let (b, cap) = grid_file(&grid, data.clone()).await;
        read_in_order(&b, &cap, &data, 0, 12 << 20).await;
        // The stream now holds from about 8 MiB (STREAM_KEEP behind the last read): 6 MiB is
        // behind it, by less than STREAM_KEEP.
        let late = 6 << 20;
        read_in_order(&b, &cap, &data, late, late + 2 * STREAM_CUT).await;
        read_in_order(&b, &cap, &data, 12 << 20, size).await;
        let c = b.read_counters();
        assert_eq!(c.served, size + 2 * STREAM_CUT);
        assert_eq!(c.stragglers, 2);
        assert_eq!(c.streams_to_end, 1);
        assert_eq!(c.fetched, size + 2 * STREAM_CUT, "{c:?}");
    }

    /// A sequential reader's stream hands out the bytes it received at once (`read_ready`,
    /// the FUSE thread's path), asking for them as a waiting read does (so the download goes on
    /// past them), and counts them served but not fetched again. A range no stream covers is
    /// neither ready nor pending.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stream_hands_out_received_bytes_without_a_wait() {
        let grid = TestGrid::start(4).await.unwrap();
        let size = 24 << 20;
        let data = content(size);
        let (b, cap) = grid_file(&grid, data.clone()).await;
        // The second read continues the first: a stream to the end of the file.
        read_in_order(&b, &cap, &data, 0, 2 * STREAM_CUT).await;
        assert_eq!(b.read_counters().streams_to_end, 1);
        let mut off = 2 * STREAM_CUT;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while off < size {
            assert!(b.read_pending(&cap, off, STREAM_CUT), "at {off}");
            match b.read_ready(&cap, off, STREAM_CUT) {
                Some(d) => {
                    assert_eq!(&d[..], &data[off as usize..(off + STREAM_CUT) as usize]);
                    off += STREAM_CUT;
                }
                None => {
                    assert!(std::time::Instant::now() < deadline, "stuck at {off}");
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                }
            }
        }
        let c = b.read_counters();
        assert_eq!(c.served, size);
        assert_eq!(c.fetched, size, "{c:?}");
        assert_eq!(c.streams_to_end, 1);
        // Another file of the grid (its own backend's streams play no part).
        let (_, other) = grid_file(&grid, content(1 << 20)).await;
        assert!(!b.read_pending(&other, 0, STREAM_CUT));
        assert!(b.read_ready(&other, 0, STREAM_CUT).is_none());
    }

    /// A second reader of a file, started far behind where the first stopped (so on a stream
    /// of its own), that catches up with the first stream's window reads from the first stream
    /// from then on: its own stream, behind, stops at most STREAM_AHEAD past its last read
    /// instead of fetching the rest of the file a second time.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_reader_catching_up_with_another_stream_does_not_drive_its_own_on() {
        let grid = TestGrid::start(4).await.unwrap();
        let size = 40 << 20;
        let data = content(size);
        let (b, cap) = grid_file(&grid, data.clone()).await;
        let first = 20 << 20;
        read_in_order(&b, &cap, &data, 0, first).await;
        read_in_order(&b, &cap, &data, 0, size).await;
        let c = b.read_counters();
        assert_eq!(c.served, first + size);
        assert_eq!(c.streams_to_end, 2);
        // The second reader's stream reads its own until the first's window (which starts
        // STREAM_KEEP behind the first reader's last read), then runs at most STREAM_AHEAD
        // further, give or take a download batch (1 MiB).
        let bound = size + first - STREAM_KEEP + STREAM_AHEAD + (2 << 20);
        assert!(c.fetched <= bound, "{c:?}, bound {bound}");
    }

    /// The download writes whole CHK segments (1 MiB by default) while the layer reads
    /// 128 KiB segments: the stream cuts what it receives at [`STREAM_CUT`] multiples, so an
    /// aligned segment read is a chunk handed out shared (the same buffer each time), and any
    /// other range is still its exact bytes.
    #[test]
    fn stream_hands_out_aligned_segments_without_copying() {
        let start = STREAM_CUT;
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let buf = Arc::new(Mutex::new(StreamBuf::new(start, u64::MAX - STREAM_AHEAD)));
        let (tx, _rx) = watch::channel(0u64);
        let mut w = StreamWriter {
            buf: Arc::clone(&buf),
            progress: tx,
            counters: Arc::default(),
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            use tokio::io::AsyncWriteExt;
            for piece in [
                &data[..100_000],
                &data[100_000..1_200_000],
                &data[1_200_000..],
            ] {
                w.write_all(piece).await.unwrap();
            }
        });
        let b = buf.lock().unwrap();
        assert_eq!(b.received, start + data.len() as u64);
        for (off, c) in &b.chunks {
            let end = off + c.len() as u64;
            // No chunk crosses a cut (a chunk may end earlier, where a write ended).
            assert_eq!(off / STREAM_CUT, (end - 1) / STREAM_CUT);
        }
        let seg = 4 * STREAM_CUT;
        let one = b.copy(seg, STREAM_CUT).unwrap();
        let again = b.copy(seg, STREAM_CUT).unwrap();
        assert!(Arc::ptr_eq(&one, &again));
        let rel = (seg - start) as usize;
        assert_eq!(&one[..], &data[rel..rel + STREAM_CUT as usize]);
        for (off, len) in [
            (start, 10u64),
            (start + 99_990, 20),
            (seg - 5, STREAM_CUT + 10),
        ] {
            let rel = (off - start) as usize;
            assert_eq!(
                &b.copy(off, len).unwrap()[..],
                &data[rel..rel + len as usize]
            );
        }
        assert!(b.copy(b.received - 10, 11).is_none());
    }

    /// The key fed in pieces while a file is written is the key of Tahoe's one pass over the
    /// whole file (`resolve_key`, checked against Tahoe's vectors in the immutable tests), for
    /// files of at least one full segment; smaller files get no key.
    #[test]
    fn convergent_hasher_matches_the_one_pass_key() {
        let params = EncodingParams {
            needed: 3,
            happy: 5,
            total: 7,
            max_segment_size: 4096,
        };
        let secret = b"a convergence secret";
        let opts = UploadOptions::convergent(params.clone(), secret);
        let backend_hasher = || -> Box<dyn ContentHasher> {
            Box::new(ConvergentHasher::new(&opts.params, secret).unwrap())
        };
        for size in [0usize, 55, 100, 4095, 4096, 4097, 3 * 4096 + 17, 50_000] {
            let data: Vec<u8> = (0..size).map(|i| (i * 7 + i / 251) as u8).collect();
            let mut h = backend_hasher();
            for piece in data.chunks(1000) {
                h.update(piece);
            }
            let got = h.finish(size as u64);
            let geom = Geometry::new(size as u64, &params);
            if size < 4096 {
                assert!(
                    got.is_none(),
                    "size {size}: the segment size depends on the size"
                );
                continue;
            }
            let mut src = immutable::VecSource(data);
            let want = crate::immutable::resolve_key(&mut src, &geom.unwrap(), &opts.key).unwrap();
            assert_eq!(got.map(|k| k.0), Some(want), "size {size}");
        }
    }

    #[test]
    fn versions_compare_by_seqnum_after_own_publish() {
        let full = version_bytes(7, Some(&[1; 32]));
        assert!(same_version(&version_bytes(7, None), &full));
        assert!(!same_version(&version_bytes(6, None), &full));
        assert!(same_version(&full, &full));
        assert!(!same_version(&version_bytes(7, Some(&[2; 32])), &full));
    }
}
