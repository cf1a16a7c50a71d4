//! `lafs run`: a storage node serving Tahoe's HTTPS storage protocol from a node directory.
//!
//! Start-up: load `tahoe.cfg` (refusing a node without storage), complete the identity files
//! ([`NodeFiles::ensure`]), open the [`DiskStore`] at the storage directory with
//! `reserved_space`, `readonly` and the `expire.*` policy, bind every `tub.port` endpoint, then
//! write `private/storage.nurl` and `private/announcement.yaml` and hand the announcement to
//! the caller (the CLI prints it).
//!
//! With `[tor] onion = true` (cargo feature `tor`) the node also hosts its onion service
//! in-process ([`super::onion`]) and serves its streams with the same TLS/HTTP server.
//!
//! Deviation from Tahoe: Tahoe 1.20 serves Foolscap and HTTPS on the same port, telling them
//! apart by the first bytes of a connection; lafs serves HTTPS only, so clients configured with
//! `force_foolscap` (or older than 1.19) cannot use a lafs server.
//!
//! Background work: stale uploads (no write for 30 minutes) are aborted every minute; when
//! lease expiration is enabled, the garbage collector examines a bounded number of buckets per
//! tick, so a full pass over a large store is spread over time like Tahoe's crawler.
//!
//! Shutdown: SIGINT or SIGTERM stops the listeners; in-flight requests get a short grace
//! period. Every share write is atomic in the store, so an interrupted request leaves no half
//! share in place.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::backend::DiskBackend;
use super::nodedir::{listen_addrs, storage_dir, NodeDirError, NodeFiles};
use crate::config::tahoe_cfg::ExpireMode;
use crate::config::{NodeConfig, NodeDir};
use crate::protocol::server::{serve_with, ConnectionServer, ServerLimits, StorageServer};
use crate::storage::disk::{
    DiskStore, ExpirationMode, ExpirationPolicy, GcCursor, StoreConfig, StoreError,
};

/// Errors of running a node.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    NodeDir(#[from] NodeDirError),
    #[error("opening the share store: {0}")]
    Store(#[from] StoreError),
    #[error("listening on {addr}: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("installing signal handlers: {0}")]
    Signal(std::io::Error),
    #[cfg(feature = "tor")]
    #[error("onion service: {0}")]
    Onion(#[from] super::onion::OnionError),
}

/// How often stale uploads are looked for.
const UPLOAD_EXPIRY_INTERVAL: Duration = Duration::from_secs(60);
/// How often the garbage collector takes a step, and how many buckets a step examines.
const GC_INTERVAL: Duration = Duration::from_secs(10);
const GC_BUCKETS_PER_STEP: usize = 256;
/// Grace period for in-flight requests at shutdown.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// What a started node announces.
#[derive(Debug)]
pub struct Started {
    pub files: NodeFiles,
    pub listening: Vec<std::net::SocketAddr>,
}

/// The `[storage]expire.*` settings as the store's policy.
pub fn expiration_policy(config: &NodeConfig) -> ExpirationPolicy {
    let Some(s) = &config.storage else {
        return ExpirationPolicy::default();
    };
    let secs = |v: i64| u64::try_from(v).unwrap_or(0);
    ExpirationPolicy {
        enabled: s.expire.enabled,
        mode: match s.expire.mode {
            ExpireMode::Age {
                override_lease_duration,
            } => ExpirationMode::Age {
                override_lease_duration: override_lease_duration.map(secs),
            },
            ExpireMode::CutoffDate { cutoff } => ExpirationMode::CutoffDate {
                cutoff: secs(cutoff),
            },
        },
        immutable: s.expire.immutable,
        mutable: s.expire.mutable,
    }
}

/// Opens the node's store with its `[storage]` settings.
pub fn open_store(
    basedir: &Path,
    config: &NodeConfig,
    nodeid: [u8; 20],
) -> Result<DiskStore, RunError> {
    let s = config
        .storage
        .as_ref()
        .ok_or(NodeDirError::StorageDisabled)?;
    let mut cfg = StoreConfig::new(storage_dir(basedir, config), nodeid);
    cfg.reserved_space = s.reserved_space;
    cfg.readonly = s.readonly;
    cfg.expiration = expiration_policy(config);
    Ok(DiskStore::open(cfg)?)
}

/// A node started by [`start`]: serving until [`RunningNode::shutdown`].
pub struct RunningNode {
    pub started: Started,
    running: Vec<crate::protocol::server::RunningServer>,
    maintenance: tokio::task::JoinHandle<()>,
    #[cfg(feature = "tor")]
    onion: Option<super::onion::OnionHost>,
}

impl RunningNode {
    /// Stops the listeners and the background work (in-flight requests get their grace
    /// period from the protocol server).
    pub fn shutdown(self) {
        self.maintenance.abort();
        #[cfg(feature = "tor")]
        drop(self.onion);
        for r in self.running {
            r.shutdown();
        }
    }
}

/// Runs the node in `basedir` until SIGINT/SIGTERM. `on_ready` is called once the node
/// listens and its announcement files are written.
pub async fn run(basedir: PathBuf, on_ready: impl FnOnce(&Started)) -> Result<(), RunError> {
    use tokio::signal::unix::{signal, SignalKind};
    tune_allocator();
    // Install the handlers first: a signal arriving during start-up must not kill us
    // half-initialised (the default action) but stop us cleanly once started.
    let mut sigterm = signal(SignalKind::terminate()).map_err(RunError::Signal)?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(RunError::Signal)?;
    let node = start(basedir).await?;
    on_ready(&node.started);
    tokio::select! {
        _ = sigterm.recv() => tracing::info!("SIGTERM: stopping"),
        _ = sigint.recv() => tracing::info!("SIGINT: stopping"),
    }
    node.shutdown();
    Ok(())
}

/// Starts the node in `basedir` on the current tokio runtime (`lafs run`, and the embedded
/// servers of `lafs up`): once this returns it listens and its announcement files are written.
pub async fn start(basedir: PathBuf) -> Result<RunningNode, RunError> {
    let node = NodeDir::load(&basedir).map_err(NodeDirError::from)?;
    let config = node.config;
    if !config.storage_enabled {
        return Err(NodeDirError::StorageDisabled.into());
    }
    let addrs = listen_addrs(&config)?;
    let files = NodeFiles::ensure(&basedir, &config)?;
    let store = Arc::new(open_store(
        &basedir,
        &config,
        files.identity.tub_id_bytes(),
    )?);
    let backend = DiskBackend::new(store.clone());
    let server = Arc::new(StorageServer::new(
        Arc::new(backend),
        files.swissnum(),
        ServerLimits::default(),
    ));
    let tls = files.identity.server_config().map_err(NodeDirError::from)?;
    // One connection server, so the TCP listeners and the onion service share one cap.
    let conns = ConnectionServer::new(tls, server);
    let mut running = Vec::new();
    for addr in &addrs {
        let std_listener =
            std::net::TcpListener::bind(addr).map_err(|source| RunError::Listen {
                addr: *addr,
                source,
            })?;
        std_listener
            .set_nonblocking(true)
            .map_err(|source| RunError::Listen {
                addr: *addr,
                source,
            })?;
        let listener =
            tokio::net::TcpListener::from_std(std_listener).map_err(|source| RunError::Listen {
                addr: *addr,
                source,
            })?;
        let r = serve_with(listener, conns.clone()).map_err(|source| RunError::Listen {
            addr: *addr,
            source,
        })?;
        running.push(r);
    }
    #[cfg(feature = "tor")]
    let onion = match &files.onion {
        Some(o) => {
            Some(super::onion::host(&basedir, &o.key, o.external_port, conns.clone()).await?)
        }
        None => None,
    };
    #[cfg(not(feature = "tor"))]
    drop(conns);
    files.write_announcement()?;
    let started = Started {
        listening: running.iter().map(|r| r.local_addr).collect(),
        files,
    };
    tracing::info!(
        tub_id = %started.files.identity.tub_id(),
        server_id = %started.files.server_id(),
        listening = ?started.listening,
        storage_dir = %store.config().storage_dir.display(),
        reserved_space = store.config().reserved_space,
        expiration = ?store.config().expiration,
        "storage node running (HTTPS storage protocol only; no Foolscap)"
    );
    #[cfg(feature = "tor")]
    if let Some(o) = &onion {
        tracing::info!(
            onion_address = %o.address,
            "serving the onion service in-process (its descriptor is published in the background)"
        );
    }
    let maintenance = tokio::spawn(maintenance(store.clone()));
    Ok(RunningNode {
        started,
        running,
        maintenance,
        #[cfg(feature = "tor")]
        onion,
    })
}

/// Keeps request-sized buffers (PATCH bodies and share reads of up to 1 MiB, allocated and
/// freed for every request) in the allocator's heap. By default glibc serves such sizes with
/// fresh `mmap`s or gives the memory back to the kernel as soon as a few are freed, so every
/// request paid page faults and page zeroing for its buffers (a fifth of a server's CPU time
/// during an upload). The cost is that up to `TRIM` bytes of freed memory per arena stay
/// mapped.
fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        const MMAP: libc::c_int = 16 << 20;
        const TRIM: libc::c_int = 32 << 20;
        // SAFETY: mallopt only sets allocator parameters; it is called before the server
        // allocates request buffers, and a refused setting (return 0) leaves the default.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP);
            libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM);
        }
    }
}

/// Periodic upload expiry and garbage collection; runs until aborted.
async fn maintenance(store: Arc<DiskStore>) {
    let gc_enabled = store.config().expiration.enabled;
    let mut uploads = tokio::time::interval(UPLOAD_EXPIRY_INTERVAL);
    let mut gc = tokio::time::interval(GC_INTERVAL);
    let mut cursor = GcCursor::default();
    loop {
        tokio::select! {
            _ = uploads.tick() => {
                let s = store.clone();
                let _ = tokio::task::spawn_blocking(move || s.expire_stale_uploads()).await;
            }
            _ = gc.tick(), if gc_enabled => {
                let s = store.clone();
                let mut c = std::mem::take(&mut cursor);
                let res = tokio::task::spawn_blocking(move || {
                    let r = s.gc_step(&mut c, GC_BUCKETS_PER_STEP);
                    (c, r)
                })
                .await;
                match res {
                    Ok((c, Ok(report))) => {
                        cursor = c;
                        if report.leases_expired > 0 || report.shares_deleted > 0 {
                            tracing::info!(
                                leases_expired = report.leases_expired,
                                shares_deleted = report.shares_deleted,
                                "lease expiration"
                            );
                        }
                        for (si, shnum) in &report.corrupt_shares {
                            tracing::warn!(si = %si, shnum, "unreadable share found by the lease crawler");
                        }
                        if report.cycle_finished {
                            tracing::debug!(cycles = cursor.cycles_completed, "lease crawl cycle finished");
                        }
                    }
                    Ok((c, Err(e))) => {
                        cursor = c;
                        tracing::error!(error = %e, "lease crawler step failed");
                    }
                    Err(_) => tracing::error!("lease crawler task failed"),
                }
            }
        }
    }
}
