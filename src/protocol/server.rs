//! The HTTPS storage server: HTTP/1.1 over tokio-rustls, speaking Tahoe 1.20's endpoints and
//! status codes over a [`StorageBackend`].
//!
//! Request handling follows Tahoe's order of checks, because clients observe it:
//! routing (404 unknown path, 405 wrong method) → `Authorization` (401) →
//! `X-Tahoe-Authorization` set (400) → endpoint checks (Content-Type 415, body size 413,
//! schema 400, ranges 416, 404/405/409 from the store) → `Accept` (406, checked only when a CBOR
//! body is about to be sent, exactly like Tahoe, so the side effects have already happened).
//!
//! Bounds: each endpoint has a body limit ([`ServerLimits`]); bodies are read with a timeout;
//! the number of concurrent connections is capped by a semaphore; a share read of up to 1 MiB is
//! one backend call and one body buffer, larger ranges stream in 1 MiB chunks, so a large range
//! never sits in memory whole. Backend calls are synchronous and run
//! on the blocking pool, so a slow disk never stalls the reactor.
//!
//! The upload secret binding (which secret may write which in-progress share) lives here, like
//! Tahoe's `UploadsInProgress`: an entry is added for each newly allocated share and removed
//! when the share completes or is aborted.
//!
//! Secrets never reach logs or error bodies; error bodies are short fixed texts.

use std::collections::{BTreeSet, HashMap};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::BodyExt as _;
use hyper::body::{Body, Frame, Incoming};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, Semaphore};

use super::messages::{
    AllocateRequest, AllocateResponse, CorruptRequest, ReadTestWriteRequest, ReadTestWriteResponse,
    RequiredRange, ShareList, ShareNum, VersionInfo, WriteResponse, ALLOCATE_MAX_BODY, CBOR_MIME,
    CORRUPT_MAX_BODY,
};
use super::{authorization_value, si_from_path, LeaseSecrets, SecretKind, StorageIndex};

/// Which namespace a share lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShareKind {
    /// Immutable (CHK) share.
    Immutable,
    /// Mutable (SDMF/MDMF) share.
    Mutable,
}

/// Errors a backend reports; each maps to one HTTP status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackendError {
    /// No such share, upload or storage index (404).
    #[error("not found")]
    NotFound,
    /// The operation is not allowed in the share's state, e.g. aborting a complete share (405).
    #[error("not allowed")]
    NotAllowed,
    /// A write conflicts with bytes already written (409).
    #[error("conflicting write")]
    Conflict,
    /// The mutable write enabler does not match (401).
    #[error("bad write enabler")]
    BadWriteEnabler,
    /// A write falls outside the allocated size (400; Tahoe answers 500 here).
    #[error("write outside the allocated size")]
    OutOfBounds,
    /// Any other failure (500). The text must not contain secrets.
    #[error("storage failure: {0}")]
    Internal(String),
}

/// The outcome of an immutable write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteOutcome {
    /// Ranges still to be written.
    pub required: Vec<RequiredRange>,
    /// True when this write completed the share (it is then moved into place).
    pub complete: bool,
}

/// One chunk of a share read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShareRead {
    /// The share's data length (reads are clamped to it).
    pub share_length: u64,
    /// The bytes of `[offset, min(offset+length, share_length))`.
    pub data: Vec<u8>,
}

/// The storage operations behind the HTTP endpoints. Methods are synchronous and are called on
/// tokio's blocking pool. Implementations do their own locking.
pub trait StorageBackend: Send + Sync + 'static {
    /// Parameters for `GET /version`.
    fn version(&self) -> Result<VersionInfo, BackendError>;
    /// Allocates in-progress immutable shares (new shares get a lease, owner 0); existing
    /// complete shares get their lease renewed and are reported in `already_have`.
    fn allocate_buckets(
        &self,
        si: &StorageIndex,
        lease: &LeaseSecrets,
        share_numbers: &BTreeSet<ShareNum>,
        allocated_size: u64,
    ) -> Result<AllocateResponse, BackendError>;
    /// Writes to an in-progress immutable share.
    fn write(
        &self,
        si: &StorageIndex,
        shnum: ShareNum,
        offset: u64,
        data: &[u8],
    ) -> Result<WriteOutcome, BackendError>;
    /// Aborts an in-progress upload (`NotFound` if none; the server turns that into 405 when a
    /// complete share exists).
    fn abort(&self, si: &StorageIndex, shnum: ShareNum) -> Result<(), BackendError>;
    /// Complete immutable shares of `si` (empty for an unknown SI).
    fn list_immutable(&self, si: &StorageIndex) -> Result<BTreeSet<ShareNum>, BackendError>;
    /// Reads a complete immutable share (`NotFound` if absent).
    fn read_immutable(
        &self,
        si: &StorageIndex,
        shnum: ShareNum,
        offset: u64,
        length: u64,
    ) -> Result<ShareRead, BackendError>;
    /// Records a corruption advisory.
    fn advise_corrupt(
        &self,
        kind: ShareKind,
        si: &StorageIndex,
        shnum: ShareNum,
        reason: &str,
    ) -> Result<(), BackendError>;
    /// Mutable read-test-write (digest §4.5).
    fn read_test_write(
        &self,
        si: &StorageIndex,
        write_enabler: &[u8],
        lease: &LeaseSecrets,
        request: &ReadTestWriteRequest,
    ) -> Result<ReadTestWriteResponse, BackendError>;
    /// Reads a mutable share (`NotFound` if absent).
    fn read_mutable(
        &self,
        si: &StorageIndex,
        shnum: ShareNum,
        offset: u64,
        length: u64,
    ) -> Result<ShareRead, BackendError>;
    /// Mutable shares of `si`.
    fn list_mutable(&self, si: &StorageIndex) -> Result<BTreeSet<ShareNum>, BackendError>;
    /// Adds or renews a lease (owner 1) on every share of `si`; `NotFound` if there is none.
    fn add_lease(&self, si: &StorageIndex, lease: &LeaseSecrets) -> Result<(), BackendError>;
}

/// Resource limits of the server.
#[derive(Debug, Clone)]
pub struct ServerLimits {
    /// Largest PATCH body (one immutable write).
    pub max_write_body: usize,
    /// Largest read-test-write body (Tahoe allows 2⁴⁸; we bound memory).
    pub max_rtw_body: usize,
    /// Concurrent connections.
    pub max_connections: usize,
    /// Time allowed to receive a request's headers and body.
    pub request_timeout: Duration,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            max_write_body: 64 * 1024 * 1024,
            max_rtw_body: 256 * 1024 * 1024,
            max_connections: 256,
            request_timeout: Duration::from_secs(120),
        }
    }
}

/// The HTTP application: routing, authorization and encoding over a backend.
pub struct StorageServer {
    backend: Arc<dyn StorageBackend>,
    auth_header: Vec<u8>,
    limits: ServerLimits,
    uploads: Mutex<HashMap<(StorageIndex, ShareNum), Vec<u8>>>,
}

impl std::fmt::Debug for StorageServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StorageServer")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

type RespBody = ChannelBody;

/// A response body fed by a channel (or holding one buffer), so share reads can stream.
pub struct ChannelBody {
    first: Option<Bytes>,
    rx: Option<mpsc::Receiver<Bytes>>,
}

impl ChannelBody {
    fn full(data: impl Into<Bytes>) -> Self {
        let data = data.into();
        ChannelBody {
            first: (!data.is_empty()).then_some(data),
            rx: None,
        }
    }
}

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if let Some(b) = self.first.take() {
            return Poll::Ready(Some(Ok(Frame::data(b))));
        }
        match self.rx.as_mut() {
            None => Poll::Ready(None),
            Some(rx) => rx.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.first.is_none() && self.rx.is_none()
    }
}

fn status(code: StatusCode, body: &'static str) -> Response<RespBody> {
    let mut r = Response::new(ChannelBody::full(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = code;
    if !body.is_empty() {
        r.headers_mut().insert(
            http::header::CONTENT_TYPE,
            "text/plain".parse().expect("static"),
        );
    }
    r
}

fn backend_status(e: &BackendError) -> Response<RespBody> {
    match e {
        BackendError::NotFound => status(StatusCode::NOT_FOUND, ""),
        BackendError::NotAllowed => status(StatusCode::METHOD_NOT_ALLOWED, ""),
        BackendError::Conflict => status(StatusCode::CONFLICT, ""),
        BackendError::BadWriteEnabler => status(StatusCode::UNAUTHORIZED, ""),
        BackendError::OutOfBounds => status(StatusCode::BAD_REQUEST, "write outside allocation"),
        BackendError::Internal(_) => status(StatusCode::INTERNAL_SERVER_ERROR, ""),
    }
}

/// The routes, after path parsing.
#[derive(Debug, Clone, Copy)]
enum Route {
    Version,
    Lease(StorageIndex),
    Allocate(StorageIndex),
    ImmutableShares(StorageIndex),
    ImmutableShare(StorageIndex, ShareNum),
    Abort(StorageIndex, ShareNum),
    Corrupt(ShareKind, StorageIndex, ShareNum),
    ReadTestWrite(StorageIndex),
    MutableShares(StorageIndex),
    MutableShare(StorageIndex, ShareNum),
}

impl Route {
    /// Parses a path; `None` is 404. Share numbers too large for a Tahoe share are 404 too.
    fn parse(path: &str) -> Option<Route> {
        let rest = path.strip_prefix("/storage/v1/")?;
        let parts: Vec<&str> = rest.split('/').collect();
        let si = |s: &str| si_from_path(s);
        let num = |s: &str| -> Option<ShareNum> {
            if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            s.parse().ok()
        };
        Some(match parts.as_slice() {
            ["version"] => Route::Version,
            ["lease", s] => Route::Lease(si(s)?),
            ["immutable", s] => Route::Allocate(si(s)?),
            ["immutable", s, "shares"] => Route::ImmutableShares(si(s)?),
            ["immutable", s, n] => Route::ImmutableShare(si(s)?, num(n)?),
            ["immutable", s, n, "abort"] => Route::Abort(si(s)?, num(n)?),
            ["immutable", s, n, "corrupt"] => Route::Corrupt(ShareKind::Immutable, si(s)?, num(n)?),
            ["mutable", s, "read-test-write"] => Route::ReadTestWrite(si(s)?),
            ["mutable", s, "shares"] => Route::MutableShares(si(s)?),
            ["mutable", s, n] => Route::MutableShare(si(s)?, num(n)?),
            ["mutable", s, n, "corrupt"] => Route::Corrupt(ShareKind::Mutable, si(s)?, num(n)?),
            _ => return None,
        })
    }

    /// Whether `m` is this route's method, and the secrets it requires.
    fn method_and_secrets(&self, m: &Method) -> Option<&'static [SecretKind]> {
        use SecretKind::*;
        let (want, secrets): (Method, &'static [SecretKind]) = match self {
            Route::Version | Route::ImmutableShares(_) | Route::MutableShares(_) => {
                (Method::GET, &[])
            }
            Route::MutableShare(..) => (Method::GET, &[]),
            Route::ImmutableShare(..) => {
                return match *m {
                    Method::GET => Some(&[]),
                    Method::PATCH => Some(&[Upload]),
                    _ => None,
                }
            }
            Route::Lease(_) => (Method::PUT, &[LeaseRenew, LeaseCancel]),
            Route::Allocate(_) => (Method::POST, &[LeaseRenew, LeaseCancel, Upload]),
            Route::Abort(..) => (Method::PUT, &[Upload]),
            Route::Corrupt(..) => (Method::POST, &[]),
            Route::ReadTestWrite(_) => (Method::POST, &[WriteEnabler, LeaseRenew, LeaseCancel]),
        };
        (*m == want).then_some(secrets)
    }
}

/// Secrets extracted from `X-Tahoe-Authorization` lines.
#[derive(Default)]
struct Secrets {
    values: HashMap<SecretKind, Vec<u8>>,
}

impl Secrets {
    fn get(&self, k: SecretKind) -> &[u8] {
        self.values.get(&k).map(Vec::as_slice).unwrap_or_default()
    }

    fn lease(&self) -> LeaseSecrets {
        let arr = |k| {
            let mut a = [0u8; 32];
            // Lengths were checked to be 32 at extraction.
            if let Some(v) = self.values.get(&k) {
                if v.len() == 32 {
                    a.copy_from_slice(v);
                }
            }
            a
        };
        LeaseSecrets {
            renew: arr(SecretKind::LeaseRenew),
            cancel: arr(SecretKind::LeaseCancel),
        }
    }
}

/// Parses the secret header lines; the provided set must equal `required` exactly.
fn extract_secrets(headers: &HeaderMap, required: &[SecretKind]) -> Option<Secrets> {
    let mut s = Secrets::default();
    for value in headers.get_all(super::headers::X_TAHOE_AUTHORIZATION) {
        let text = value.to_str().ok()?.trim();
        let (name, b64) = text.split_once(' ')?;
        let kind = SecretKind::from_name(name)?;
        let secret = base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .ok()?;
        if secret.is_empty() {
            return None;
        }
        if matches!(kind, SecretKind::LeaseRenew | SecretKind::LeaseCancel) && secret.len() != 32 {
            return None;
        }
        s.values.insert(kind, secret);
    }
    let provided: BTreeSet<SecretKind> = s.values.keys().copied().collect();
    let wanted: BTreeSet<SecretKind> = required.iter().copied().collect();
    (provided == wanted).then_some(s)
}

fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The media type of a header value, lowercased, without parameters.
fn media_type(v: &http::HeaderValue) -> String {
    let s = String::from_utf8_lossy(v.as_bytes());
    s.split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// werkzeug's `parse_accept_header(first).best == "application/cbor"`: the entry with the
/// highest (specificity, quality), the first one on ties; no header means CBOR.
fn accepts_cbor(headers: &HeaderMap) -> bool {
    let Some(first) = headers.get(http::header::ACCEPT) else {
        return true;
    };
    let text = String::from_utf8_lossy(first.as_bytes());
    let mut best: Option<((bool, bool), f64, String)> = None;
    for item in text.split(',') {
        let mut parts = item.split(';');
        let mime = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        if mime.is_empty() {
            continue;
        }
        let mut q = 1.0f64;
        for p in parts {
            if let Some(v) = p.trim().strip_prefix("q=") {
                q = v.trim().parse::<f64>().unwrap_or(1.0).clamp(0.0, 1.0);
            }
        }
        if q <= 0.0 {
            continue;
        }
        let (a, b) = mime.split_once('/').unwrap_or((mime.as_str(), ""));
        let spec = (a != "*", b != "*");
        let better = match &best {
            None => true,
            Some((bs, bq, _)) => (spec, q) > (*bs, *bq),
        };
        if better {
            best = Some((spec, q, mime));
        }
    }
    best.is_some_and(|(_, _, m)| m == CBOR_MIME)
}

fn cbor_response(headers: &HeaderMap, code: StatusCode, body: Vec<u8>) -> Response<RespBody> {
    if !accepts_cbor(headers) {
        return status(StatusCode::NOT_ACCEPTABLE, "");
    }
    let mut r = Response::new(ChannelBody::full(body));
    *r.status_mut() = code;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        CBOR_MIME.parse().expect("static"),
    );
    r
}

/// Checks the request Content-Type: absent or `application/cbor`.
fn cbor_content_type_ok(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .is_none_or(|v| media_type(v) == CBOR_MIME)
}

/// Parses `Range: bytes=a-b` (single range, explicit end). Returns `[a, b+1)`.
fn parse_range(v: &http::HeaderValue) -> Option<(u64, u64)> {
    let s = v.to_str().ok()?.trim();
    let spec = s.strip_prefix("bytes=")?;
    let (a, b) = spec.trim().split_once('-')?;
    let digits = |t: &str| !t.is_empty() && t.bytes().all(|c| c.is_ascii_digit());
    if !digits(a.trim()) || !digits(b.trim()) {
        return None;
    }
    let a: u64 = a.trim().parse().ok()?;
    let b: u64 = b.trim().parse().ok()?;
    if b < a {
        return None;
    }
    Some((a, b.checked_add(1)?))
}

/// Parses `Content-Range: bytes a-b/*` (or `/len` with len > b). Returns `[a, b+1)`.
fn parse_content_range(v: &http::HeaderValue) -> Option<(u64, u64)> {
    let s = v.to_str().ok()?.trim();
    let rest = s.strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (a, b) = range.split_once('-')?;
    let digits = |t: &str| !t.is_empty() && t.bytes().all(|c| c.is_ascii_digit());
    if !digits(a) || !digits(b) {
        return None;
    }
    let a: u64 = a.parse().ok()?;
    let b: u64 = b.parse().ok()?;
    if b < a {
        return None;
    }
    if total != "*" {
        let t: u64 = total.parse().ok()?;
        if t <= b {
            return None;
        }
    }
    Some((a, b.checked_add(1)?))
}

/// Bytes of a share read per blocking backend call (the backend caps one read at 1 MiB too).
/// Larger ranges stream chunk by chunk, so a response holds at most
/// `READ_CHUNK * (READ_QUEUE + 2)` bytes whatever its range.
const READ_CHUNK: u64 = 1024 * 1024;
/// Chunks read ahead of the socket for a streamed range.
const READ_QUEUE: usize = 2;

impl StorageServer {
    /// A server for `swissnum` over `backend`.
    pub fn new(backend: Arc<dyn StorageBackend>, swissnum: &str, limits: ServerLimits) -> Self {
        StorageServer {
            backend,
            auth_header: authorization_value(swissnum.as_bytes()).into_bytes(),
            limits,
            uploads: Mutex::new(HashMap::new()),
        }
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn StorageBackend) -> Result<T, BackendError> + Send + 'static,
    ) -> Result<T, BackendError> {
        let backend = self.backend.clone();
        tokio::task::spawn_blocking(move || f(backend.as_ref()))
            .await
            .unwrap_or_else(|_| Err(BackendError::Internal("backend task failed".into())))
    }

    async fn read_body(&self, body: Incoming, limit: usize) -> Result<Bytes, Response<RespBody>> {
        let limited = http_body_util::Limited::new(body, limit);
        match tokio::time::timeout(self.limits.request_timeout, limited.collect()).await {
            Err(_) => Err(status(StatusCode::REQUEST_TIMEOUT, "")),
            Ok(Err(e)) => {
                if e.downcast_ref::<http_body_util::LengthLimitError>()
                    .is_some()
                {
                    Err(status(StatusCode::PAYLOAD_TOO_LARGE, ""))
                } else {
                    Err(status(StatusCode::BAD_REQUEST, "unreadable body"))
                }
            }
            Ok(Ok(c)) => Ok(c.to_bytes()),
        }
    }

    /// Reads a CBOR request body: Content-Type check (415), size (413), then the decoder.
    async fn read_cbor(
        &self,
        headers: &HeaderMap,
        body: Incoming,
        limit: usize,
    ) -> Result<Bytes, Response<RespBody>> {
        if !cbor_content_type_ok(headers) {
            return Err(status(StatusCode::UNSUPPORTED_MEDIA_TYPE, ""));
        }
        self.read_body(body, limit).await
    }

    /// Handles one request.
    pub async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Response<RespBody> {
        let (parts, body) = req.into_parts();
        let Some(route) = Route::parse(parts.uri.path()) else {
            return status(StatusCode::NOT_FOUND, "");
        };
        let Some(required) = route.method_and_secrets(&parts.method) else {
            return status(StatusCode::METHOD_NOT_ALLOWED, "");
        };
        let auth = parts
            .headers
            .get(http::header::AUTHORIZATION)
            .map(|v| v.as_bytes())
            .unwrap_or_default();
        if !ct_eq(auth, &self.auth_header) {
            return status(StatusCode::UNAUTHORIZED, "");
        }
        let Some(secrets) = extract_secrets(&parts.headers, required) else {
            return status(
                StatusCode::BAD_REQUEST,
                "wrong set of X-Tahoe-Authorization secrets",
            );
        };
        let h = &parts.headers;
        match route {
            Route::Version => match self.blocking(|b| b.version()).await {
                Ok(v) => cbor_response(h, StatusCode::OK, v.to_cbor()),
                Err(e) => backend_status(&e),
            },
            Route::Allocate(si) => {
                let raw = match self.read_cbor(h, body, ALLOCATE_MAX_BODY).await {
                    Ok(b) => b,
                    Err(r) => return r,
                };
                let Ok(msg) = AllocateRequest::from_cbor(&raw) else {
                    return status(StatusCode::BAD_REQUEST, "invalid allocate request");
                };
                let lease = secrets.lease();
                let nums = msg.share_numbers.clone();
                let res = self
                    .blocking(move |b| b.allocate_buckets(&si, &lease, &nums, msg.allocated_size))
                    .await;
                match res {
                    Ok(resp) => {
                        if let Ok(mut up) = self.uploads.lock() {
                            for n in &resp.allocated {
                                up.insert((si, *n), secrets.get(SecretKind::Upload).to_vec());
                            }
                        }
                        cbor_response(h, StatusCode::OK, resp.to_cbor())
                    }
                    Err(e) => backend_status(&e),
                }
            }
            Route::ImmutableShare(si, n) if parts.method == Method::PATCH => {
                self.write(h, body, si, n, secrets.get(SecretKind::Upload))
                    .await
            }
            Route::ImmutableShare(si, n) => self.read(h, ShareKind::Immutable, si, n).await,
            Route::MutableShare(si, n) => self.read(h, ShareKind::Mutable, si, n).await,
            Route::Abort(si, n) => {
                match self.upload_known(&si, n, secrets.get(SecretKind::Upload)) {
                    Some(true) => {}
                    Some(false) => return status(StatusCode::UNAUTHORIZED, ""),
                    None => return self.abort_unknown(si, n).await,
                }
                match self.blocking(move |b| b.abort(&si, n)).await {
                    Ok(()) => {
                        self.forget_upload(&si, n);
                        status(StatusCode::OK, "")
                    }
                    Err(BackendError::NotFound) => {
                        self.forget_upload(&si, n);
                        self.abort_unknown(si, n).await
                    }
                    Err(e) => backend_status(&e),
                }
            }
            Route::ImmutableShares(si) => match self.blocking(move |b| b.list_immutable(&si)).await
            {
                Ok(s) => cbor_response(h, StatusCode::OK, ShareList(s).to_cbor()),
                Err(e) => backend_status(&e),
            },
            Route::MutableShares(si) => match self.blocking(move |b| b.list_mutable(&si)).await {
                Ok(s) => cbor_response(h, StatusCode::OK, ShareList(s).to_cbor()),
                Err(e) => backend_status(&e),
            },
            Route::Corrupt(kind, si, n) => {
                let listed = match kind {
                    ShareKind::Immutable => self.blocking(move |b| b.list_immutable(&si)).await,
                    ShareKind::Mutable => self.blocking(move |b| b.list_mutable(&si)).await,
                };
                match listed {
                    Ok(s) if s.contains(&n) => {}
                    Ok(_) => return status(StatusCode::NOT_FOUND, ""),
                    Err(e) => return backend_status(&e),
                }
                let raw = match self.read_cbor(h, body, CORRUPT_MAX_BODY).await {
                    Ok(b) => b,
                    Err(r) => return r,
                };
                let Ok(msg) = CorruptRequest::from_cbor(&raw) else {
                    return status(StatusCode::BAD_REQUEST, "invalid corruption advisory");
                };
                match self
                    .blocking(move |b| b.advise_corrupt(kind, &si, n, &msg.reason))
                    .await
                {
                    Ok(()) => status(StatusCode::OK, ""),
                    Err(e) => backend_status(&e),
                }
            }
            Route::ReadTestWrite(si) => {
                let raw = match self.read_cbor(h, body, self.limits.max_rtw_body).await {
                    Ok(b) => b,
                    Err(r) => return r,
                };
                let limit = self.limits.max_rtw_body;
                let Ok(msg) = ReadTestWriteRequest::from_cbor(&raw, limit) else {
                    return status(StatusCode::BAD_REQUEST, "invalid read-test-write request");
                };
                drop(raw);
                let we = secrets.get(SecretKind::WriteEnabler).to_vec();
                let lease = secrets.lease();
                match self
                    .blocking(move |b| b.read_test_write(&si, &we, &lease, &msg))
                    .await
                {
                    Ok(resp) => cbor_response(h, StatusCode::OK, resp.to_cbor()),
                    Err(e) => backend_status(&e),
                }
            }
            Route::Lease(si) => {
                let lease = secrets.lease();
                match self.blocking(move |b| b.add_lease(&si, &lease)).await {
                    Ok(()) => status(StatusCode::NO_CONTENT, ""),
                    Err(e) => backend_status(&e),
                }
            }
        }
    }

    /// `Some(true)` if an upload is tracked with this secret, `Some(false)` with another one,
    /// `None` if untracked.
    fn upload_known(&self, si: &StorageIndex, n: ShareNum, secret: &[u8]) -> Option<bool> {
        let up = self.uploads.lock().ok()?;
        up.get(&(*si, n)).map(|s| ct_eq(s, secret))
    }

    fn forget_upload(&self, si: &StorageIndex, n: ShareNum) {
        if let Ok(mut up) = self.uploads.lock() {
            up.remove(&(*si, n));
        }
    }

    /// Abort of an untracked upload: 405 if the share is complete, else 404.
    async fn abort_unknown(&self, si: StorageIndex, n: ShareNum) -> Response<RespBody> {
        match self.blocking(move |b| b.list_immutable(&si)).await {
            Ok(s) if s.contains(&n) => status(StatusCode::METHOD_NOT_ALLOWED, ""),
            Ok(_) => status(StatusCode::NOT_FOUND, ""),
            Err(e) => backend_status(&e),
        }
    }

    async fn write(
        &self,
        h: &HeaderMap,
        body: Incoming,
        si: StorageIndex,
        n: ShareNum,
        secret: &[u8],
    ) -> Response<RespBody> {
        let Some((start, end)) = h
            .get(http::header::CONTENT_RANGE)
            .and_then(parse_content_range)
        else {
            return status(StatusCode::RANGE_NOT_SATISFIABLE, "");
        };
        match self.upload_known(&si, n, secret) {
            Some(true) => {}
            Some(false) => return status(StatusCode::UNAUTHORIZED, ""),
            None => return status(StatusCode::NOT_FOUND, ""),
        }
        let len = end - start;
        if len > self.limits.max_write_body as u64 {
            return status(StatusCode::PAYLOAD_TOO_LARGE, "");
        }
        let data = match self.read_body(body, self.limits.max_write_body).await {
            Ok(d) => d,
            Err(r) => return r,
        };
        if data.len() as u64 != len {
            return status(
                StatusCode::BAD_REQUEST,
                "body length differs from Content-Range",
            );
        }
        match self.blocking(move |b| b.write(&si, n, start, &data)).await {
            Ok(out) => {
                let code = if out.complete {
                    self.forget_upload(&si, n);
                    StatusCode::CREATED
                } else {
                    StatusCode::OK
                };
                let body = WriteResponse {
                    required: out.required,
                }
                .to_cbor();
                cbor_response(h, code, body)
            }
            Err(BackendError::NotFound) => {
                self.forget_upload(&si, n);
                status(StatusCode::NOT_FOUND, "")
            }
            Err(e) => backend_status(&e),
        }
    }

    async fn read(
        &self,
        h: &HeaderMap,
        kind: ShareKind,
        si: StorageIndex,
        n: ShareNum,
    ) -> Response<RespBody> {
        let (offset, want_end, ranged) = match h.get(http::header::RANGE) {
            None => (0u64, u64::MAX, false),
            Some(v) => match parse_range(v) {
                Some((a, b)) => (a, b, true),
                None => return status(StatusCode::RANGE_NOT_SATISFIABLE, ""),
            },
        };
        let backend = self.backend.clone();
        let read = move |off: u64, len: u64| {
            let backend = backend.clone();
            async move {
                tokio::task::spawn_blocking(move || match kind {
                    ShareKind::Immutable => backend.read_immutable(&si, n, off, len),
                    ShareKind::Mutable => backend.read_mutable(&si, n, off, len),
                })
                .await
                .unwrap_or_else(|_| Err(BackendError::Internal("backend task failed".into())))
            }
        };
        // One blocking call answers any range up to READ_CHUNK (every block and hash-tree read
        // of a download): one file open, one read, one buffer handed to hyper as it is.
        let first_len = want_end.saturating_sub(offset).min(READ_CHUNK);
        let first = match read(offset, first_len).await {
            Ok(r) => r,
            Err(e) => return backend_status(&e),
        };
        let end = want_end.min(first.share_length);
        if ranged && offset >= end {
            return status(StatusCode::NO_CONTENT, "");
        }
        let mut pos = offset + first.data.len() as u64;
        let first_data = Bytes::from(first.data);
        let rx = if pos < end && !first_data.is_empty() {
            let (tx, rx) = mpsc::channel::<Bytes>(READ_QUEUE);
            tokio::spawn(async move {
                while pos < end {
                    let len = (end - pos).min(READ_CHUNK);
                    match read(pos, len).await {
                        // A share that shrank or failed mid-stream ends the body early; the
                        // client detects the short body against Content-Range/length.
                        Ok(r) if !r.data.is_empty() && r.data.len() as u64 <= len => {
                            pos += r.data.len() as u64;
                            if tx.send(Bytes::from(r.data)).await.is_err() {
                                return;
                            }
                        }
                        _ => return,
                    }
                }
            });
            Some(rx)
        } else {
            None
        };
        let mut resp = Response::new(ChannelBody {
            first: (!first_data.is_empty()).then_some(first_data),
            rx,
        });
        let headers = resp.headers_mut();
        headers.insert(
            http::header::CONTENT_TYPE,
            "application/octet-stream".parse().expect("static"),
        );
        if ranged {
            *resp.status_mut() = StatusCode::PARTIAL_CONTENT;
            let cr = format!("bytes {}-{}/*", offset, end - 1);
            if let Ok(v) = cr.parse() {
                resp.headers_mut().insert(http::header::CONTENT_RANGE, v);
            }
            if let Ok(v) = (end - offset).to_string().parse() {
                resp.headers_mut().insert(http::header::CONTENT_LENGTH, v);
            }
        } else if let Ok(v) = (first.share_length.saturating_sub(0)).to_string().parse() {
            resp.headers_mut().insert(http::header::CONTENT_LENGTH, v);
        }
        resp
    }
}

/// A running server; dropping it does not stop it, call [`RunningServer::shutdown`].
#[derive(Debug)]
pub struct RunningServer {
    /// The bound address.
    pub local_addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl RunningServer {
    /// Stops accepting connections (in-flight connections finish on their own).
    pub fn shutdown(self) {
        self.task.abort();
    }
}

/// Serves TLS connections for one [`StorageServer`], over any byte stream: accepted TCP
/// connections ([`serve`]) or onion-service streams. Clones share one connection cap
/// ([`ServerLimits::max_connections`]).
#[derive(Clone)]
pub struct ConnectionServer {
    acceptor: tokio_rustls::TlsAcceptor,
    server: Arc<StorageServer>,
    permits: Arc<Semaphore>,
}

impl std::fmt::Debug for ConnectionServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionServer")
            .field("available_permits", &self.permits.available_permits())
            .finish_non_exhaustive()
    }
}

impl ConnectionServer {
    /// A connection server for `server` with the TLS configuration `tls`.
    pub fn new(tls: Arc<rustls::ServerConfig>, server: Arc<StorageServer>) -> Self {
        let permits = Arc::new(Semaphore::new(server.limits.max_connections.max(1)));
        ConnectionServer {
            acceptor: tokio_rustls::TlsAcceptor::from(tls),
            server,
            permits,
        }
    }

    /// Waits for a free connection slot: the caller accepts its next connection only then, so
    /// that excess connections queue in the listener instead of in memory.
    pub async fn reserve(&self) -> Option<ConnectionSlot> {
        self.permits
            .clone()
            .acquire_owned()
            .await
            .ok()
            .map(ConnectionSlot)
    }

    /// Runs the TLS handshake and HTTP/1.1 on `io` in a task of its own, holding `slot` until
    /// the connection ends. The handshake is bounded by the request timeout.
    pub fn spawn<S>(&self, slot: ConnectionSlot, io: S)
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let acceptor = self.acceptor.clone();
        let server = self.server.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let timeout = server.limits.request_timeout;
            let Ok(Ok(tls)) = tokio::time::timeout(timeout, acceptor.accept(io)).await else {
                return;
            };
            let svc = hyper::service::service_fn(move |req| {
                let server = server.clone();
                async move { Ok::<_, Infallible>(server.handle(req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(timeout)
                .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                .await;
        });
    }
}

/// One of the [`ConnectionServer`]'s connection slots.
#[derive(Debug)]
pub struct ConnectionSlot(#[allow(dead_code)] tokio::sync::OwnedSemaphorePermit);

/// Serves `server` with TLS on `listener` until shut down.
pub fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    server: Arc<StorageServer>,
) -> std::io::Result<RunningServer> {
    serve_with(listener, ConnectionServer::new(tls, server))
}

/// Serves the connections of `listener` with `conns` until shut down.
pub fn serve_with(
    listener: TcpListener,
    conns: ConnectionServer,
) -> std::io::Result<RunningServer> {
    let local_addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        loop {
            let Some(slot) = conns.reserve().await else {
                return;
            };
            let Ok((tcp, _peer)) = listener.accept().await else {
                // Transient accept errors (e.g. EMFILE): back off briefly.
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            // Without TCP_NODELAY the last partial segment of a response waits for the peer's
            // delayed ACK (up to 40 ms per request): it made downloads latency-bound.
            let _ = tcp.set_nodelay(true);
            conns.spawn(slot, tcp);
        }
    });
    Ok(RunningServer { local_addr, task })
}
