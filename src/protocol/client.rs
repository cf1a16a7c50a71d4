//! An async client for one HTTPS storage server, addressed by its NURL.
//!
//! Design: a small pool of idle HTTP/1.1 connections over tokio-rustls (pinned by the NURL's
//! SPKI hash, no SNI, no ALPN). A request takes an idle connection or dials a new one; after
//! the response body has been read the connection goes back to the pool. A request that hyper
//! reports as never sent (a stale pooled connection) is retried on a fresh connection whatever
//! its method; requests that may have reached the server are retried only when idempotent
//! (GET, lease PUT), at most [`ClientOptions::retries`] times.
//!
//! Headers on every request: `Authorization: Tahoe-LAFS <b64(swissnum)>`,
//! `Accept: application/cbor` (never `*/*`, which Tahoe answers with 406), one
//! `X-Tahoe-Authorization` line per secret, and `Content-Type: application/cbor` on CBOR bodies.
//!
//! Invariants: errors never contain the swissnum, secrets, or server-provided bodies (a Tahoe
//! 400 body can echo the secret headers); every response body is size-limited; every request
//! has a deadline.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, StatusCode};
use http_body_util::BodyExt as _;
use hyper::client::conn::http1::SendRequest;
use rustls::pki_types::ServerName;

use super::messages::{
    AllocateRequest, AllocateResponse, CorruptRequest, MessageError, ReadTestWriteRequest,
    ReadTestWriteResponse, RequiredRange, ShareList, ShareNum, VersionInfo, WriteResponse,
    CBOR_MIME, MAX_CBOR_RESPONSE,
};
use super::nurl::{Nurl, NurlError};
use super::tls::{client_config, TlsError};
use super::StorageIndex;
use super::{authorization_value, secret_header_value, si_to_path, LeaseSecrets, SecretKind};
use crate::config::tor::{TcpHandler, TorOptions};

/// A type-erased connection attempt (the Tor route boxes arti's deeply nested futures).
#[cfg(feature = "tor")]
type BoxedConnect<'a> = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<SendRequest<PartsBody>, ClientError>> + Send + 'a>,
>;

/// Client errors. None of them carries a secret.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The NURL is malformed.
    #[error(transparent)]
    Nurl(#[from] NurlError),
    /// The NURL needs Tor (`pb+tor`, an `.onion` host, or `[connections] tcp = tor`), and this
    /// build has no Tor support (cargo feature `tor`).
    #[error("Tor NURLs are not supported by this client (built without the `tor` feature)")]
    TorUnsupported,
    /// The NURL needs Tor, and Tor is turned off (`[tor] enabled = false`).
    #[error("this NURL needs Tor, which is disabled ([tor] enabled = false)")]
    TorDisabled,
    /// The NURL needs a direct TCP connection, and `[connections] tcp = disabled`.
    #[error("direct TCP connections are disabled ([connections] tcp = disabled)")]
    TcpDisabled,
    /// TLS configuration failed.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// TCP connect or TLS handshake failed (including a pin mismatch).
    #[error("connecting to {addr}: {reason}")]
    Connect {
        /// host:port.
        addr: String,
        /// What failed.
        reason: String,
    },
    /// The request did not finish in time.
    #[error("request to {endpoint} timed out")]
    Timeout {
        /// Which endpoint.
        endpoint: &'static str,
    },
    /// The HTTP exchange failed (connection reset, malformed response...).
    #[error("HTTP failure on {endpoint}: {reason}")]
    Http {
        /// Which endpoint.
        endpoint: &'static str,
        /// What failed.
        reason: String,
    },
    /// The server answered 404.
    #[error("{endpoint}: not found")]
    NotFound {
        /// Which endpoint.
        endpoint: &'static str,
    },
    /// The server answered an unexpected status.
    #[error("{endpoint}: unexpected HTTP status {status}")]
    Status {
        /// Which endpoint.
        endpoint: &'static str,
        /// The status code.
        status: u16,
    },
    /// The response had the wrong Content-Type.
    #[error("{endpoint}: expected Content-Type {expected}, got {got:?}")]
    ContentType {
        /// Which endpoint.
        endpoint: &'static str,
        /// Expected type.
        expected: &'static str,
        /// Received type.
        got: String,
    },
    /// The response body exceeds the limit.
    #[error("{endpoint}: response body exceeds {limit} bytes")]
    TooLarge {
        /// Which endpoint.
        endpoint: &'static str,
        /// The limit.
        limit: usize,
    },
    /// The CBOR body is invalid.
    #[error("{endpoint}: {source}")]
    Message {
        /// Which endpoint.
        endpoint: &'static str,
        /// The decoding error.
        source: MessageError,
    },
    /// The response violates the protocol (bad Content-Range, length mismatch...).
    #[error("{endpoint}: protocol violation: {problem}")]
    Protocol {
        /// Which endpoint.
        endpoint: &'static str,
        /// What was wrong.
        problem: &'static str,
    },
    /// A request argument is invalid (e.g. an empty corruption reason).
    #[error("invalid argument: {0}")]
    Argument(&'static str),
}

/// Client tuning.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// TCP connect + TLS handshake deadline.
    pub connect_timeout: Duration,
    /// Deadline of one request, including reading the response body.
    pub request_timeout: Duration,
    /// Extra attempts for idempotent requests after a connection failure.
    pub retries: u32,
    /// Idle connections kept for reuse.
    pub max_idle: usize,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(60),
            retries: 2,
            max_idle: 8,
        }
    }
}

/// The result of an immutable write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadProgress {
    /// True when the share is complete (HTTP 201).
    pub finished: bool,
    /// Ranges the server still needs.
    pub required: Vec<RequiredRange>,
}

/// How NURLs are dialled: the `[connections] tcp` handler and, with the `tor` feature, the
/// shared Tor dialer. The default dials every `pb://` NURL directly and refuses Tor ones.
#[derive(Debug, Clone, Default)]
pub struct Transport {
    /// `[connections] tcp`.
    pub tcp: TcpHandler,
    /// The grid's Tor dialer; `None` when Tor is disabled.
    #[cfg(feature = "tor")]
    pub tor: Option<Arc<super::tor::TorDialer>>,
}

impl Transport {
    /// The transport a node directory asks for (`tahoe.cfg` `[connections]`, `[tor]`, and
    /// `private/arti.toml`). Without the `tor` feature, `tcp = tor` is refused here.
    pub fn for_node_dir(node: &crate::config::NodeDir) -> Result<Transport, TransportError> {
        let opts = TorOptions::from_ini(&node.config.ini)?;
        for o in &opts.ignored {
            tracing::warn!(
                "tahoe.cfg [tor]{o} configures a Tor daemon; lafs uses an in-process arti client and ignores it"
            );
        }
        #[cfg(feature = "tor")]
        {
            let tor = if opts.enabled {
                Some(Arc::new(super::tor::TorDialer::for_node_dir(
                    &node.basedir,
                )?))
            } else {
                None
            };
            Ok(Transport { tcp: opts.tcp, tor })
        }
        #[cfg(not(feature = "tor"))]
        {
            if opts.tcp == TcpHandler::Tor {
                return Err(TransportError::NoTorSupport);
            }
            Ok(Transport { tcp: opts.tcp })
        }
    }

    /// Whether this transport can reach Tor-only NURLs.
    pub fn tor_available(&self) -> bool {
        #[cfg(feature = "tor")]
        {
            self.tor.is_some()
        }
        #[cfg(not(feature = "tor"))]
        {
            false
        }
    }
}

/// Why a node directory's transport cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The Tor options of `tahoe.cfg` are invalid.
    #[error("tahoe.cfg: {0}")]
    Config(#[from] crate::config::tor::TorConfigError),
    /// The arti configuration is invalid.
    #[cfg(feature = "tor")]
    #[error(transparent)]
    Tor(#[from] super::tor::TorError),
    /// `[connections] tcp = tor` in a build without Tor.
    #[error("[connections] tcp = tor needs Tor support, which is not available in this build (cargo feature `tor`)")]
    NoTorSupport,
}

/// How one storage client reaches its server.
#[derive(Debug)]
enum Route {
    Tcp,
    #[cfg(feature = "tor")]
    Tor(Arc<super::tor::TorDialer>),
}

struct Inner {
    addr: String,
    /// The NURL's host and port, which the Tor route dials by name (no local DNS lookup).
    #[cfg_attr(not(feature = "tor"), allow(dead_code))]
    host: String,
    #[cfg_attr(not(feature = "tor"), allow(dead_code))]
    port: u16,
    route: Route,
    host_header: HeaderValue,
    server_name: ServerName<'static>,
    auth: HeaderValue,
    connector: tokio_rustls::TlsConnector,
    options: ClientOptions,
    idle: Mutex<Vec<SendRequest<PartsBody>>>,
}

/// A client for one storage server. Cheap to clone; clones share the connection pool.
#[derive(Clone)]
pub struct StorageClient {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for StorageClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StorageClient")
            .field("addr", &self.inner.addr)
            .finish_non_exhaustive()
    }
}

/// What the caller wants from a response.
struct Reply {
    status: StatusCode,
    headers: http::HeaderMap,
    body: Bytes,
}

/// A request body of several buffers, one frame each: a share chunk made of blocks that sit in
/// different encoder buffers goes out without being copied into one buffer first (hyper queues
/// the frames and writes them vectored). Cheap to clone (for retries).
#[derive(Clone, Debug, Default)]
pub struct PartsBody {
    /// The buffers not yet sent, none empty.
    parts: std::collections::VecDeque<Bytes>,
    /// Their total length.
    len: u64,
}

impl PartsBody {
    fn new(parts: Vec<Bytes>) -> PartsBody {
        let parts: std::collections::VecDeque<Bytes> =
            parts.into_iter().filter(|p| !p.is_empty()).collect();
        let len = parts.iter().map(|p| p.len() as u64).sum();
        PartsBody { parts, len }
    }
}

impl From<Vec<u8>> for PartsBody {
    fn from(v: Vec<u8>) -> PartsBody {
        PartsBody::new(vec![Bytes::from(v)])
    }
}

impl hyper::body::Body for PartsBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        let frame = this.parts.pop_front().map(|b| {
            this.len -= b.len() as u64;
            Ok(hyper::body::Frame::data(b))
        });
        std::task::Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.parts.is_empty()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        hyper::body::SizeHint::with_exact(self.len)
    }
}

/// One request, reusable across retries.
struct Call {
    endpoint: &'static str,
    method: Method,
    path: String,
    secrets: Vec<(SecretKind, Vec<u8>)>,
    extra: Vec<(http::HeaderName, String)>,
    body: PartsBody,
    cbor_body: bool,
    idempotent: bool,
    limit: usize,
}

enum Attempt {
    /// Never reached the server: retry on a fresh connection.
    NotSent(ClientError),
    /// May have reached the server.
    Failed(ClientError),
}

impl StorageClient {
    /// A client for the server of `nurl` (`pb://<pin>@<host>:<port>/<swissnum>#v=1`).
    pub fn new(nurl: &str, options: ClientOptions) -> Result<Self, ClientError> {
        Self::with_transport(nurl, options, &Transport::default())
    }

    /// A client for the server of `nurl`, dialled as `transport` says: through Tor for
    /// `pb+tor://` NURLs, `.onion` hosts, and every NURL with `[connections] tcp = tor`.
    pub fn with_transport(
        nurl: &str,
        options: ClientOptions,
        transport: &Transport,
    ) -> Result<Self, ClientError> {
        let nurl = Nurl::parse(nurl)?;
        let wants_tor = nurl.tor
            || crate::config::tor::is_onion(&nurl.host)
            || transport.tcp == TcpHandler::Tor;
        let route = if wants_tor {
            #[cfg(feature = "tor")]
            {
                match &transport.tor {
                    Some(d) => Route::Tor(d.clone()),
                    None => return Err(ClientError::TorDisabled),
                }
            }
            #[cfg(not(feature = "tor"))]
            {
                return Err(ClientError::TorUnsupported);
            }
        } else if transport.tcp == TcpHandler::Disabled {
            return Err(ClientError::TcpDisabled);
        } else {
            Route::Tcp
        };
        let config = client_config(nurl.pin.clone())?;
        let bracketed = if nurl.host.contains(':') {
            format!("[{}]", nurl.host)
        } else {
            nurl.host.clone()
        };
        let addr = format!("{bracketed}:{}", nurl.port);
        // SNI is disabled in the config; the name only has to be syntactically valid.
        let server_name = match nurl.host.parse::<std::net::IpAddr>() {
            Ok(ip) => ServerName::IpAddress(ip.into()),
            Err(_) => ServerName::try_from(nurl.host.clone())
                .unwrap_or_else(|_| ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into())),
        };
        let host_header = HeaderValue::from_str(&addr)
            .map_err(|_| NurlError::Malformed("host is not a valid header value"))?;
        let mut auth = HeaderValue::from_str(&authorization_value(nurl.swissnum.as_bytes()))
            .map_err(|_| NurlError::Malformed("bad swissnum"))?;
        auth.set_sensitive(true);
        Ok(StorageClient {
            inner: Arc::new(Inner {
                addr,
                host: nurl.host.clone(),
                port: nurl.port,
                route,
                host_header,
                server_name,
                auth,
                connector: tokio_rustls::TlsConnector::from(config),
                options,
                idle: Mutex::new(Vec::new()),
            }),
        })
    }

    async fn connect(&self) -> Result<SendRequest<PartsBody>, ClientError> {
        let inner = &self.inner;
        let err = |reason: String| ClientError::Connect {
            addr: inner.addr.clone(),
            reason,
        };
        match &inner.route {
            Route::Tcp => {
                let fut = async {
                    let tcp = tokio::net::TcpStream::connect(&inner.addr)
                        .await
                        .map_err(|e| err(e.to_string()))?;
                    let _ = tcp.set_nodelay(true);
                    self.tls_http(tcp).await
                };
                tokio::time::timeout(inner.options.connect_timeout, fut)
                    .await
                    .map_err(|_| err("timed out".into()))?
            }
            #[cfg(feature = "tor")]
            Route::Tor(dialer) => {
                // Boxed and type-erased: arti's futures are deeply nested types, and keeping
                // them out of `connect`'s own type keeps every caller's future shallow.
                let fut: BoxedConnect<'_> = Box::pin(async move {
                    // The bootstrap has its own (longer) deadline, shared by every client of
                    // the grid; then stream + TLS get the larger of the two connect deadlines.
                    dialer.client().await.map_err(|e| err(e.to_string()))?;
                    let deadline = inner.options.connect_timeout.max(dialer.connect_timeout);
                    let fut = async {
                        let stream = dialer
                            .connect(&inner.host, inner.port)
                            .await
                            .map_err(|e| err(e.to_string()))?;
                        self.tls_http(stream).await
                    };
                    tokio::time::timeout(deadline, fut)
                        .await
                        .map_err(|_| err("timed out".into()))?
                });
                fut.await
            }
        }
    }

    /// The pinned TLS handshake and the HTTP/1.1 handshake over any byte stream (TCP or Tor):
    /// the same pinning whatever carries the bytes.
    async fn tls_http<S>(&self, stream: S) -> Result<SendRequest<PartsBody>, ClientError>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let inner = &self.inner;
        let err = |reason: String| ClientError::Connect {
            addr: inner.addr.clone(),
            reason,
        };
        let tls = inner
            .connector
            .connect(inner.server_name.clone(), stream)
            .await
            .map_err(|e| err(e.to_string()))?;
        let (sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
                .await
                .map_err(|e| err(e.to_string()))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(sender)
    }

    fn take_idle(&self) -> Option<SendRequest<PartsBody>> {
        let mut idle = self.inner.idle.lock().ok()?;
        while let Some(s) = idle.pop() {
            if s.is_ready() && !s.is_closed() {
                return Some(s);
            }
        }
        None
    }

    fn put_idle(&self, s: SendRequest<PartsBody>) {
        if let Ok(mut idle) = self.inner.idle.lock() {
            if idle.len() < self.inner.options.max_idle && !s.is_closed() {
                idle.push(s);
            }
        }
    }

    fn build(&self, call: &Call) -> Result<Request<PartsBody>, ClientError> {
        let bad = |_| ClientError::Argument("unencodable header");
        let mut req = Request::builder()
            .method(call.method.clone())
            .uri(call.path.as_str())
            .header(http::header::HOST, self.inner.host_header.clone())
            .header(http::header::AUTHORIZATION, self.inner.auth.clone())
            .header(http::header::ACCEPT, CBOR_MIME);
        for (kind, secret) in &call.secrets {
            let mut v = HeaderValue::from_str(&secret_header_value(*kind, secret)).map_err(bad)?;
            v.set_sensitive(true);
            req = req.header(super::headers::X_TAHOE_AUTHORIZATION, v);
        }
        for (name, value) in &call.extra {
            req = req.header(name, HeaderValue::from_str(value).map_err(bad)?);
        }
        if call.cbor_body {
            req = req.header(http::header::CONTENT_TYPE, CBOR_MIME);
        }
        req.body(call.body.clone())
            .map_err(|_| ClientError::Argument("unbuildable request"))
    }

    async fn attempt(&self, call: &Call) -> Result<Reply, Attempt> {
        let endpoint = call.endpoint;
        let mut sender = match self.take_idle() {
            Some(s) => s,
            // Nothing reached the server when dialing fails.
            None => self.connect().await.map_err(Attempt::NotSent)?,
        };
        let req = self.build(call).map_err(Attempt::Failed)?;
        let response = match sender.try_send_request(req).await {
            Ok(r) => r,
            Err(mut e) => {
                let err = ClientError::Http {
                    endpoint,
                    reason: e.error().to_string(),
                };
                // A request hyper hands back was never written: safe to resend anywhere.
                return Err(if e.take_message().is_some() {
                    Attempt::NotSent(err)
                } else {
                    Attempt::Failed(err)
                });
            }
        };
        let (parts, body) = response.into_parts();
        let body = match collect_body(body, call.limit).await {
            Ok(b) => b,
            Err(BodyError::TooLarge) => {
                return Err(Attempt::Failed(ClientError::TooLarge {
                    endpoint,
                    limit: call.limit,
                }))
            }
            Err(BodyError::Http(e)) => {
                return Err(Attempt::Failed(ClientError::Http {
                    endpoint,
                    reason: e.to_string(),
                }))
            }
        };
        self.put_idle(sender);
        Ok(Reply {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }

    async fn send(&self, call: Call) -> Result<Reply, ClientError> {
        let deadline = self.inner.options.request_timeout;
        let endpoint = call.endpoint;
        let run = async {
            let mut tries = 0u32;
            loop {
                match self.attempt(&call).await {
                    Ok(r) => return Ok(r),
                    Err(Attempt::NotSent(e)) | Err(Attempt::Failed(e))
                        if tries >= self.inner.options.retries =>
                    {
                        return Err(e)
                    }
                    Err(Attempt::NotSent(_)) => {}
                    Err(Attempt::Failed(e)) if !call.idempotent => return Err(e),
                    Err(Attempt::Failed(_)) => {
                        tokio::time::sleep(Duration::from_millis(100 << tries.min(4))).await;
                    }
                }
                tries += 1;
            }
        };
        tokio::time::timeout(deadline, run)
            .await
            .map_err(|_| ClientError::Timeout { endpoint })?
    }

    fn call(endpoint: &'static str, method: Method, path: String) -> Call {
        let idempotent = method == Method::GET;
        Call {
            endpoint,
            method,
            path,
            secrets: Vec::new(),
            extra: Vec::new(),
            body: PartsBody::default(),
            cbor_body: false,
            idempotent,
            limit: MAX_CBOR_RESPONSE,
        }
    }

    /// Checks a 2xx CBOR reply and returns its body; other statuses become errors.
    fn cbor_body(
        reply: Reply,
        endpoint: &'static str,
        ok: &[StatusCode],
    ) -> Result<Bytes, ClientError> {
        if !ok.contains(&reply.status) {
            return Err(status_error(endpoint, reply.status));
        }
        let ct = content_type(&reply.headers);
        if ct != CBOR_MIME {
            return Err(ClientError::ContentType {
                endpoint,
                expected: CBOR_MIME,
                got: ct,
            });
        }
        Ok(reply.body)
    }

    /// `GET /storage/v1/version`.
    pub async fn version(&self) -> Result<VersionInfo, ClientError> {
        const EP: &str = "version";
        let reply = self
            .send(Self::call(EP, Method::GET, "/storage/v1/version".into()))
            .await?;
        let body = Self::cbor_body(reply, EP, &[StatusCode::OK])?;
        VersionInfo::from_cbor(&body).map_err(|source| ClientError::Message {
            endpoint: EP,
            source,
        })
    }

    /// `POST /storage/v1/immutable/:si`: allocates share uploads.
    pub async fn allocate_buckets(
        &self,
        si: &StorageIndex,
        lease: &LeaseSecrets,
        upload_secret: &[u8],
        share_numbers: &BTreeSet<ShareNum>,
        allocated_size: u64,
    ) -> Result<AllocateResponse, ClientError> {
        const EP: &str = "allocate";
        if upload_secret.is_empty() {
            return Err(ClientError::Argument("empty upload secret"));
        }
        let mut c = Self::call(
            EP,
            Method::POST,
            format!("/storage/v1/immutable/{}", si_to_path(si)),
        );
        c.secrets = vec![
            (SecretKind::LeaseRenew, lease.renew.to_vec()),
            (SecretKind::LeaseCancel, lease.cancel.to_vec()),
            (SecretKind::Upload, upload_secret.to_vec()),
        ];
        c.body = AllocateRequest {
            share_numbers: share_numbers.clone(),
            allocated_size,
        }
        .to_cbor()
        .into();
        c.cbor_body = true;
        let body = Self::cbor_body(self.send(c).await?, EP, &[StatusCode::OK])?;
        AllocateResponse::from_cbor(&body).map_err(|source| ClientError::Message {
            endpoint: EP,
            source,
        })
    }

    /// `PATCH /storage/v1/immutable/:si/:shnum`: writes `data` at `offset`.
    pub async fn write_share_chunk(
        &self,
        si: &StorageIndex,
        shnum: ShareNum,
        upload_secret: &[u8],
        offset: u64,
        data: Bytes,
    ) -> Result<UploadProgress, ClientError> {
        self.write_share_parts(si, shnum, upload_secret, offset, vec![data])
            .await
    }

    /// [`Self::write_share_chunk`] of the concatenation of `parts`, sent as they are (no copy
    /// into one buffer).
    pub async fn write_share_parts(
        &self,
        si: &StorageIndex,
        shnum: ShareNum,
        upload_secret: &[u8],
        offset: u64,
        parts: Vec<Bytes>,
    ) -> Result<UploadProgress, ClientError> {
        const EP: &str = "immutable write";
        let body = PartsBody::new(parts);
        if body.len == 0 {
            return Err(ClientError::Argument("empty write"));
        }
        let last = offset
            .checked_add(body.len - 1)
            .ok_or(ClientError::Argument("write past 2^64"))?;
        let mut c = Self::call(
            EP,
            Method::PATCH,
            format!("/storage/v1/immutable/{}/{}", si_to_path(si), shnum),
        );
        c.secrets = vec![(SecretKind::Upload, upload_secret.to_vec())];
        c.extra = vec![(
            http::header::CONTENT_RANGE,
            format!("bytes {offset}-{last}/*"),
        )];
        c.body = body;
        let reply = self.send(c).await?;
        let finished = reply.status == StatusCode::CREATED;
        let body = Self::cbor_body(reply, EP, &[StatusCode::OK, StatusCode::CREATED])?;
        let resp = WriteResponse::from_cbor(&body).map_err(|source| ClientError::Message {
            endpoint: EP,
            source,
        })?;
        Ok(UploadProgress {
            finished,
            required: resp.required,
        })
    }

    /// `PUT /storage/v1/immutable/:si/:shnum/abort`.
    pub async fn abort_upload(
        &self,
        si: &StorageIndex,
        shnum: ShareNum,
        upload_secret: &[u8],
    ) -> Result<(), ClientError> {
        const EP: &str = "abort";
        let mut c = Self::call(
            EP,
            Method::PUT,
            format!("/storage/v1/immutable/{}/{}/abort", si_to_path(si), shnum),
        );
        c.secrets = vec![(SecretKind::Upload, upload_secret.to_vec())];
        let reply = self.send(c).await?;
        expect_status(EP, reply.status, StatusCode::OK)
    }

    async fn list(
        &self,
        kind: &str,
        endpoint: &'static str,
        si: &StorageIndex,
    ) -> Result<BTreeSet<ShareNum>, ClientError> {
        let c = Self::call(
            endpoint,
            Method::GET,
            format!("/storage/v1/{kind}/{}/shares", si_to_path(si)),
        );
        let body = Self::cbor_body(self.send(c).await?, endpoint, &[StatusCode::OK])?;
        ShareList::from_cbor(&body)
            .map(|l| l.0)
            .map_err(|source| ClientError::Message { endpoint, source })
    }

    /// `GET /storage/v1/immutable/:si/shares`.
    pub async fn list_immutable_shares(
        &self,
        si: &StorageIndex,
    ) -> Result<BTreeSet<ShareNum>, ClientError> {
        self.list("immutable", "list immutable", si).await
    }

    /// `GET /storage/v1/mutable/:si/shares`.
    pub async fn list_mutable_shares(
        &self,
        si: &StorageIndex,
    ) -> Result<BTreeSet<ShareNum>, ClientError> {
        self.list("mutable", "list mutable", si).await
    }

    async fn read(
        &self,
        kind: &str,
        endpoint: &'static str,
        si: &StorageIndex,
        shnum: ShareNum,
        offset: u64,
        length: u64,
    ) -> Result<Bytes, ClientError> {
        if length == 0 {
            return Ok(Bytes::new());
        }
        let last = offset
            .checked_add(length - 1)
            .ok_or(ClientError::Argument("read past 2^64"))?;
        let mut c = Self::call(
            endpoint,
            Method::GET,
            format!("/storage/v1/{kind}/{}/{}", si_to_path(si), shnum),
        );
        c.extra = vec![(http::header::RANGE, format!("bytes={offset}-{last}"))];
        c.limit = usize::try_from(length).unwrap_or(usize::MAX);
        let reply = self.send(c).await?;
        if reply.status == StatusCode::NO_CONTENT {
            return Ok(Bytes::new());
        }
        if reply.status != StatusCode::PARTIAL_CONTENT {
            return Err(status_error(endpoint, reply.status));
        }
        let ct = content_type(&reply.headers);
        if ct != "application/octet-stream" {
            return Err(ClientError::ContentType {
                endpoint,
                expected: "application/octet-stream",
                got: ct,
            });
        }
        let bad = |problem| ClientError::Protocol { endpoint, problem };
        let (start, end) = reply
            .headers
            .get(http::header::CONTENT_RANGE)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_response_content_range)
            .ok_or(bad("missing or invalid Content-Range"))?;
        if start != offset {
            return Err(bad("Content-Range starts elsewhere than requested"));
        }
        if end - start > length {
            return Err(bad("server sent more than requested"));
        }
        if reply.body.len() as u64 != end - start {
            return Err(bad("body length differs from Content-Range"));
        }
        Ok(reply.body)
    }

    /// `GET /storage/v1/immutable/:si/:shnum` with `Range`: up to `length` bytes at `offset`
    /// (shorter at the end of the share, empty past it).
    pub async fn read_immutable_share(
        &self,
        si: &StorageIndex,
        shnum: ShareNum,
        offset: u64,
        length: u64,
    ) -> Result<Bytes, ClientError> {
        self.read("immutable", "immutable read", si, shnum, offset, length)
            .await
    }

    /// `GET /storage/v1/mutable/:si/:shnum` with `Range`.
    pub async fn read_mutable_share(
        &self,
        si: &StorageIndex,
        shnum: ShareNum,
        offset: u64,
        length: u64,
    ) -> Result<Bytes, ClientError> {
        self.read("mutable", "mutable read", si, shnum, offset, length)
            .await
    }

    async fn corrupt(
        &self,
        kind: &str,
        endpoint: &'static str,
        si: &StorageIndex,
        shnum: ShareNum,
        reason: &str,
    ) -> Result<(), ClientError> {
        let msg = CorruptRequest {
            reason: reason.to_string(),
        };
        msg.validate()
            .map_err(|_| ClientError::Argument("reason must be 1..=32765 bytes"))?;
        let mut c = Self::call(
            endpoint,
            Method::POST,
            format!("/storage/v1/{kind}/{}/{}/corrupt", si_to_path(si), shnum),
        );
        c.body = msg.to_cbor().into();
        c.cbor_body = true;
        let reply = self.send(c).await?;
        expect_status(endpoint, reply.status, StatusCode::OK)
    }

    /// `POST /storage/v1/immutable/:si/:shnum/corrupt`.
    pub async fn advise_corrupt_immutable(
        &self,
        si: &StorageIndex,
        shnum: ShareNum,
        reason: &str,
    ) -> Result<(), ClientError> {
        self.corrupt("immutable", "immutable corrupt", si, shnum, reason)
            .await
    }

    /// `POST /storage/v1/mutable/:si/:shnum/corrupt`.
    pub async fn advise_corrupt_mutable(
        &self,
        si: &StorageIndex,
        shnum: ShareNum,
        reason: &str,
    ) -> Result<(), ClientError> {
        self.corrupt("mutable", "mutable corrupt", si, shnum, reason)
            .await
    }

    /// `POST /storage/v1/mutable/:si/read-test-write`. A bad write enabler is
    /// `ClientError::Status { status: 401, .. }`.
    pub async fn read_test_write(
        &self,
        si: &StorageIndex,
        write_enabler: &[u8],
        lease: &LeaseSecrets,
        request: &ReadTestWriteRequest,
    ) -> Result<ReadTestWriteResponse, ClientError> {
        const EP: &str = "read-test-write";
        if write_enabler.is_empty() {
            return Err(ClientError::Argument("empty write enabler"));
        }
        let mut c = Self::call(
            EP,
            Method::POST,
            format!("/storage/v1/mutable/{}/read-test-write", si_to_path(si)),
        );
        c.secrets = vec![
            (SecretKind::WriteEnabler, write_enabler.to_vec()),
            (SecretKind::LeaseRenew, lease.renew.to_vec()),
            (SecretKind::LeaseCancel, lease.cancel.to_vec()),
        ];
        c.body = request.to_cbor().into();
        c.cbor_body = true;
        let body = Self::cbor_body(self.send(c).await?, EP, &[StatusCode::OK])?;
        ReadTestWriteResponse::from_cbor(&body).map_err(|source| ClientError::Message {
            endpoint: EP,
            source,
        })
    }

    /// `PUT /storage/v1/lease/:si`: adds or renews a lease on every share of `si`.
    /// `ClientError::NotFound` when the server has no share of `si`.
    pub async fn add_or_renew_lease(
        &self,
        si: &StorageIndex,
        lease: &LeaseSecrets,
    ) -> Result<(), ClientError> {
        const EP: &str = "lease";
        let mut c = Self::call(
            EP,
            Method::PUT,
            format!("/storage/v1/lease/{}", si_to_path(si)),
        );
        c.secrets = vec![
            (SecretKind::LeaseRenew, lease.renew.to_vec()),
            (SecretKind::LeaseCancel, lease.cancel.to_vec()),
        ];
        c.idempotent = true;
        let reply = self.send(c).await?;
        expect_status(EP, reply.status, StatusCode::NO_CONTENT)
    }
}

fn status_error(endpoint: &'static str, status: StatusCode) -> ClientError {
    if status == StatusCode::NOT_FOUND {
        ClientError::NotFound { endpoint }
    } else {
        ClientError::Status {
            endpoint,
            status: status.as_u16(),
        }
    }
}

fn expect_status(
    endpoint: &'static str,
    got: StatusCode,
    want: StatusCode,
) -> Result<(), ClientError> {
    if got == want {
        Ok(())
    } else {
        Err(status_error(endpoint, got))
    }
}

/// The media type of the response, lowercased, without parameters ("" if absent).
fn content_type(headers: &http::HeaderMap) -> String {
    headers
        .get(http::header::CONTENT_TYPE)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).to_string())
        .unwrap_or_default()
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// Parses a response `Content-Range: bytes a-b/*` (or `/len`) into `[a, b+1)`.
fn parse_response_content_range(s: &str) -> Option<(u64, u64)> {
    let rest = s.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (a, b) = range.split_once('-')?;
    let num = |t: &str| -> Option<u64> {
        (!t.is_empty() && t.bytes().all(|c| c.is_ascii_digit()))
            .then(|| t.parse().ok())
            .flatten()
    };
    let (a, b) = (num(a)?, num(b)?);
    if b < a {
        return None;
    }
    if total != "*" && num(total)? <= b {
        return None;
    }
    Some((a, b.checked_add(1)?))
}

/// Why a response body could not be read.
#[derive(Debug)]
enum BodyError<E> {
    TooLarge,
    Http(E),
}

/// Reads a response body of at most `limit` bytes into one buffer. The buffer is sized from the
/// body's announced length (refused above `limit`) and each frame is copied into it as it
/// arrives, so a large body (a share read of several MiB) is held once, not once as frames
/// and again as their concatenation.
async fn collect_body<B>(mut body: B, limit: usize) -> Result<Bytes, BodyError<B::Error>>
where
    B: hyper::body::Body<Data = Bytes> + Unpin,
{
    let hint = body.size_hint().lower();
    if hint > limit as u64 {
        return Err(BodyError::TooLarge);
    }
    let mut buf = bytes::BytesMut::with_capacity(hint as usize);
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.map_err(BodyError::Http)?.into_data() {
            // buf.len() <= limit: checked before every extend.
            if data.len() > limit - buf.len() {
                return Err(BodyError::TooLarge);
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(buf.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A body of the given frames, announcing `hint` bytes.
    struct Frames(std::collections::VecDeque<Bytes>, u64);

    impl hyper::body::Body for Frames {
        type Data = Bytes;
        type Error = std::convert::Infallible;
        fn poll_frame(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
            std::task::Poll::Ready(self.0.pop_front().map(|b| Ok(hyper::body::Frame::data(b))))
        }
        fn size_hint(&self) -> hyper::body::SizeHint {
            let mut h = hyper::body::SizeHint::new();
            h.set_lower(self.1);
            h
        }
    }

    fn frames(parts: &[&[u8]], hint: u64) -> Frames {
        Frames(
            parts.iter().map(|p| Bytes::copy_from_slice(p)).collect(),
            hint,
        )
    }

    #[tokio::test]
    async fn collect_body_joins_frames_up_to_the_limit() {
        let got = collect_body(frames(&[b"abc", b"", b"defg"], 7), 7)
            .await
            .unwrap();
        assert_eq!(&got[..], b"abcdefg");
        // An announced length below the real one only sizes the first allocation.
        let got = collect_body(frames(&[b"abc", b"defg"], 2), 7)
            .await
            .unwrap();
        assert_eq!(&got[..], b"abcdefg");
    }

    #[tokio::test]
    async fn collect_body_refuses_a_body_over_the_limit() {
        // Announced over the limit: refused before anything is read.
        let r = collect_body(frames(&[b"abcdefgh"], 8), 7).await;
        assert!(matches!(r, Err(BodyError::TooLarge)), "{r:?}");
        // Not announced, and the frames go one byte past the limit.
        let r = collect_body(frames(&[b"abcd", b"efgh"], 0), 7).await;
        assert!(matches!(r, Err(BodyError::TooLarge)), "{r:?}");
    }

    #[test]
    fn content_range_forms() {
        assert_eq!(parse_response_content_range("bytes 0-9/*"), Some((0, 10)));
        assert_eq!(parse_response_content_range("bytes 5-5/6"), Some((5, 6)));
        assert_eq!(parse_response_content_range("bytes 5-5/5"), None);
        assert_eq!(parse_response_content_range("bytes 6-5/*"), None);
        assert_eq!(parse_response_content_range("bytes */10"), None);
        assert_eq!(parse_response_content_range("items 0-1/*"), None);
    }

    const PIN: &str = "JIj6ezHkdSBlHhrnezAgIC_mrVQHy4KAFyL-8ZNPGPM";

    fn routed(nurl: &str, t: &Transport) -> Result<&'static str, ClientError> {
        StorageClient::with_transport(nurl, ClientOptions::default(), t).map(|c| {
            match c.inner.route {
                Route::Tcp => "tcp",
                #[cfg(feature = "tor")]
                Route::Tor(_) => "tor",
            }
        })
    }

    #[test]
    fn routes_follow_scheme_host_and_tcp_handler() {
        let plain = format!("pb://{PIN}@127.0.0.1:9/swiss#v=1");
        let tor = format!("pb+tor://{PIN}@{}.onion:80/swiss#v=1", "a".repeat(56));
        let onion_pb = format!("pb://{PIN}@{}.onion:80/swiss#v=1", "a".repeat(56));
        let direct = Transport::default();
        assert_eq!(routed(&plain, &direct).unwrap(), "tcp");
        // Without the `tor` feature `tcp` is the only field.
        #[allow(clippy::needless_update)]
        let disabled = Transport {
            tcp: TcpHandler::Disabled,
            ..Transport::default()
        };
        assert!(matches!(
            routed(&plain, &disabled),
            Err(ClientError::TcpDisabled)
        ));
        #[cfg(not(feature = "tor"))]
        for n in [&tor, &onion_pb] {
            let e = routed(n, &direct).unwrap_err();
            assert!(matches!(e, ClientError::TorUnsupported));
            assert!(!e.to_string().contains("swiss"));
        }
        #[cfg(feature = "tor")]
        {
            // Tor turned off: Tor NURLs are refused, plain ones still dialled directly.
            for n in [&tor, &onion_pb] {
                assert!(matches!(routed(n, &direct), Err(ClientError::TorDisabled)));
            }
            let dialer = Arc::new(super::super::tor::TorDialer::new(
                arti_client::TorClientConfig::default(),
                "test".into(),
            ));
            let with_tor = Transport {
                tcp: TcpHandler::Direct,
                tor: Some(dialer.clone()),
            };
            assert_eq!(routed(&tor, &with_tor).unwrap(), "tor");
            assert_eq!(routed(&onion_pb, &with_tor).unwrap(), "tor");
            assert_eq!(routed(&plain, &with_tor).unwrap(), "tcp");
            let all_tor = Transport {
                tcp: TcpHandler::Tor,
                tor: Some(dialer),
            };
            assert_eq!(routed(&plain, &all_tor).unwrap(), "tor");
            assert!(with_tor.tor_available() && !direct.tor_available());
        }
    }

    #[test]
    fn transport_from_node_dir() {
        let dir = tempfile::tempdir().unwrap();
        let write = |cfg: &str| {
            std::fs::write(dir.path().join("tahoe.cfg"), cfg).unwrap();
            crate::config::NodeDir::load(dir.path()).unwrap()
        };
        let t = Transport::for_node_dir(&write("[node]\nnickname = x\n")).unwrap();
        assert_eq!(t.tcp, TcpHandler::Direct);
        assert_eq!(t.tor_available(), cfg!(feature = "tor"));
        let r = Transport::for_node_dir(&write("[connections]\ntcp = tor\n"));
        #[cfg(feature = "tor")]
        assert_eq!(r.unwrap().tcp, TcpHandler::Tor);
        #[cfg(not(feature = "tor"))]
        assert!(matches!(r, Err(TransportError::NoTorSupport)));
        let t = Transport::for_node_dir(&write("[tor]\nenabled = false\n")).unwrap();
        assert!(!t.tor_available());
        assert!(matches!(
            Transport::for_node_dir(&write("[node]\nreveal-IP-address = false\n")),
            Err(TransportError::Config(_))
        ));
    }
}
