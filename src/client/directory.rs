//! Directories over the network.
//!
//! A mutable directory (DIR2 on SDMF, DIR2-MDMF) is a [`Dirnode`] over [`NetDirStore`], a
//! [`DirectoryStore`] backed by a network mutable file through [`MutableClient`]. The store's
//! test-and-write is the mutable layer's: `read` maps the file and keeps the map; `replace`
//! publishes against that same map, so every share is tested against the checkstring it had
//! when the directory was read, and a concurrent writer makes the publish fail with
//! `UncoordinatedWrite`, which the store reports as [`StoreError::Conflict`]. `Dirnode` then
//! re-reads, drops the changes that overlap the other writer's and republishes the rest: no
//! update is silently lost. A batch of changes is one publish.
//!
//! `Dirnode` is synchronous; [`NetDirectory`] runs it on tokio's blocking pool, where the store
//! drives the async mutable operations with the runtime handle captured at open time. Only call
//! the store's sync methods from outside the async workers (as `NetDirectory` does).
//!
//! Read-only caps (`URI:DIR2-RO:`, `URI:DIR2-MDMF-RO:`) open a store without the writekey: the
//! dirnode layer never decrypts a child write cap then, and every write is refused.
//! Immutable directories: DIR2-LIT bodies are in the cap and are read here; a DIR2-CHK body is a
//! CHK file, downloaded (and verified to the cap by the CHK downloader) on the first listing of
//! an open handle and kept by that handle (the body of an immutable cap never changes). Both
//! are unpacked as [`DirKind::Immutable`]: every child must be immutable, and every write is
//! refused.

use super::immutable::{download_bytes, DownloadError, DownloadOptions};
use super::mutable::{MutableClient, MutableParams};
use crate::cap::{parse_bytes, Cap, MutableFormat, MutableReadCap, MutableWriteCap, NodeCap};
use crate::dirnode::{
    BatchReport, Change, Child, DirKind, Directory, DirectoryStore, Dirnode, DirnodeError,
    Metadata, StoreError,
};
use crate::mutable::layout::SignedPrefix;
use crate::mutable::retrieve::ServerMap;
use crate::mutable::MutableError;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use thiserror::Error;

/// Errors of network directory operations. No cap appears in them.
#[derive(Debug, Error)]
pub enum DirectoryError {
    #[error(transparent)]
    Dirnode(#[from] DirnodeError),
    #[error(transparent)]
    Mutable(#[from] MutableError),
    #[error("reading the immutable directory: {0}")]
    Download(#[from] DownloadError),
    #[error("not a directory cap")]
    NotADirectory,
    #[error("{0} is not a directory")]
    ChildNotADirectory(String),
    #[error("no child named {0:?}")]
    NoSuchChild(String),
    #[error("unsupported: {0}")]
    Unsupported(&'static str),
    #[error("a child cap does not parse: {0}")]
    BadChildCap(String),
    #[error("directory task failed")]
    Task,
}

/// The backing file of a directory: read-write or read-only.
#[derive(Clone)]
enum FileCap {
    Write(MutableWriteCap),
    Read(MutableReadCap),
}

/// A version of the backing file: seqnum and root hash (root unknown right after our own
/// publish; `Dirnode` always reads before it replaces).
pub type DirVersion = (u64, Option<[u8; 32]>);

fn version_of(p: &SignedPrefix) -> DirVersion {
    (p.seqnum, Some(p.root_hash))
}

/// A [`DirectoryStore`] over a network mutable file.
pub struct NetDirStore {
    client: MutableClient,
    cap: FileCap,
    rt: tokio::runtime::Handle,
    /// The map of the last read, by the version it read: what `replace` tests against.
    last: Mutex<Option<(DirVersion, ServerMap)>>,
    publishes: Arc<AtomicUsize>,
}

fn backend(e: MutableError) -> StoreError {
    match e {
        MutableError::UncoordinatedWrite { .. } => StoreError::Conflict,
        other => StoreError::Backend(other.to_string()),
    }
}

impl NetDirStore {
    /// How many versions this store published.
    pub fn publish_count(&self) -> usize {
        self.publishes.load(Ordering::SeqCst)
    }
}

impl DirectoryStore for NetDirStore {
    type Version = DirVersion;

    fn read(&self) -> Result<(Vec<u8>, DirVersion), StoreError> {
        match &self.cap {
            FileCap::Write(cap) => {
                let (r, map) = self
                    .rt
                    .block_on(self.client.read_for_write(cap))
                    .map_err(backend)?;
                let v = version_of(&r.version);
                if let Ok(mut last) = self.last.lock() {
                    *last = Some((v, map));
                }
                Ok((r.data, v))
            }
            FileCap::Read(cap) => {
                let r = self
                    .rt
                    .block_on(self.client.read(cap, None))
                    .map_err(backend)?;
                Ok((r.data, version_of(&r.version)))
            }
        }
    }

    fn replace(&self, expected: &DirVersion, new: Vec<u8>) -> Result<DirVersion, StoreError> {
        let FileCap::Write(cap) = &self.cap else {
            return Err(StoreError::Backend("read-only directory".into()));
        };
        let cached = self.last.lock().ok().and_then(|mut l| l.take());
        let mut map = match cached {
            Some((v, map)) if &v == expected => map,
            _ => {
                // No map of the expected version: map again; if the file moved on, that is a
                // conflict.
                let (r, map) = self
                    .rt
                    .block_on(self.client.read_for_write(cap))
                    .map_err(backend)?;
                if &version_of(&r.version) != expected {
                    return Err(StoreError::Conflict);
                }
                map
            }
        };
        let out = match self
            .rt
            .block_on(self.client.publish_against(cap, &mut map, &new))
        {
            Ok(out) => out,
            Err(e) => {
                let e = backend(e);
                if e == StoreError::Conflict {
                    // Two writers that collided retry at once and collide again: a random
                    // pause desynchronises them.
                    std::thread::sleep(std::time::Duration::from_millis(
                        5 + rand::random::<u64>() % 50,
                    ));
                }
                return Err(e);
            }
        };
        self.publishes.fetch_add(1, Ordering::SeqCst);
        Ok((out.seqnum, None))
    }

    fn writekey(&self) -> Option<[u8; 16]> {
        match &self.cap {
            FileCap::Write(c) => Some(c.writekey),
            FileCap::Read(_) => None,
        }
    }
}

#[derive(Clone)]
enum Inner {
    Mutable(Arc<Dirnode<NetDirStore>>),
    /// An immutable directory whose body is already known (DIR2-LIT).
    Literal(Arc<Directory>),
    /// An immutable directory whose body is a CHK file (DIR2-CHK), read on first use.
    Chk(Arc<ChkDir>),
}

/// A DIR2-CHK directory: its file cap, where to read it, and its body once read.
struct ChkDir {
    file: NodeCap,
    files: MutableClient,
    body: tokio::sync::OnceCell<Arc<Directory>>,
}

impl ChkDir {
    async fn body(&self) -> Result<Arc<Directory>, DirectoryError> {
        self.body
            .get_or_try_init(|| async {
                let opts = DownloadOptions {
                    preferred: self.files.preferred().to_vec(),
                    ..DownloadOptions::default()
                };
                let (data, _) = download_bytes(self.files.servers(), &self.file, &opts).await?;
                Ok::<_, DirectoryError>(Arc::new(Directory::unpack(DirKind::Immutable, &data)?))
            })
            .await
            .cloned()
    }
}

/// An open directory on the grid. Cheap to clone.
#[derive(Clone)]
pub struct NetDirectory {
    cap: Cap,
    inner: Inner,
}

impl std::fmt::Debug for NetDirectory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetDirectory")
            .field("kind", &self.cap.node().map(|n| n.kind()))
            .finish()
    }
}

/// The cap a child link leads to: its write cap when present, else its read cap.
pub fn child_cap(child: &Child) -> Result<Cap, DirectoryError> {
    let (bytes, deep_immutable) = match (child.rw_uri(), child.ro_uri()) {
        (Some(rw), _) => (rw, false),
        (None, Some(ro)) => (ro, false),
        (None, None) => return Err(DirectoryError::BadChildCap("no cap".into())),
    };
    parse_bytes(bytes, deep_immutable).map_err(|e| DirectoryError::BadChildCap(e.to_string()))
}

impl NetDirectory {
    /// The directory's cap (write cap when opened with one). Contains the secret.
    pub fn cap(&self) -> &Cap {
        &self.cap
    }

    /// The read-only cap of this directory.
    pub fn readonly_cap(&self) -> Option<Cap> {
        self.cap.readonly()
    }

    pub fn is_writeable(&self) -> bool {
        match &self.inner {
            Inner::Mutable(d) => d.is_writeable(),
            Inner::Literal(_) | Inner::Chk(_) => false,
        }
    }

    /// How many versions this handle published (each batch is at most one).
    pub fn publish_count(&self) -> usize {
        match &self.inner {
            Inner::Mutable(d) => d.store().publish_count(),
            Inner::Literal(_) | Inner::Chk(_) => 0,
        }
    }

    async fn run<T, F>(&self, f: F) -> Result<T, DirectoryError>
    where
        T: Send + 'static,
        F: FnOnce(&Dirnode<NetDirStore>) -> Result<T, DirnodeError> + Send + 'static,
    {
        match &self.inner {
            Inner::Mutable(d) => {
                let d = Arc::clone(d);
                Ok(tokio::task::spawn_blocking(move || f(&d))
                    .await
                    .map_err(|_| DirectoryError::Task)??)
            }
            Inner::Literal(_) | Inner::Chk(_) => Err(DirnodeError::NotWriteable.into()),
        }
    }

    /// The children (write caps only through a write cap).
    pub async fn list(&self) -> Result<Directory, DirectoryError> {
        match &self.inner {
            Inner::Literal(d) => Ok((**d).clone()),
            Inner::Chk(c) => Ok((*c.body().await?).clone()),
            Inner::Mutable(_) => self.run(|d| d.list()).await,
        }
    }

    /// The child named `name`.
    pub async fn lookup(&self, name: &str) -> Result<Option<Child>, DirectoryError> {
        Ok(self.list().await?.get(name).cloned())
    }

    /// Adds or replaces a child link (`cap` bytes: write cap and/or read cap strings).
    pub async fn set_child(
        &self,
        name: &str,
        rw_uri: Option<Vec<u8>>,
        ro_uri: Option<Vec<u8>>,
        metadata: Option<Metadata>,
        overwrite: bool,
    ) -> Result<(), DirectoryError> {
        let name = name.to_string();
        self.run(move |d| d.set_child(&name, rw_uri, ro_uri, metadata, overwrite))
            .await
    }

    /// Links `cap` under `name` (its write form and read-only form, as Tahoe's `set_node`).
    pub async fn link(&self, name: &str, cap: &Cap, overwrite: bool) -> Result<(), DirectoryError> {
        let rw = (!cap.node().is_some_and(NodeCap::is_readonly)).then(|| cap.to_string());
        let ro = cap.readonly().map(|c| c.to_string());
        self.set_child(
            name,
            rw.map(String::into_bytes),
            ro.map(String::into_bytes),
            None,
            overwrite,
        )
        .await
    }

    /// Removes a child that must exist and returns it.
    pub async fn remove(&self, name: &str) -> Result<Child, DirectoryError> {
        let name = name.to_string();
        self.run(move |d| d.remove(&name)).await
    }

    /// Renames a child in one rewrite.
    pub async fn rename(
        &self,
        from: &str,
        to: &str,
        overwrite: bool,
    ) -> Result<(), DirectoryError> {
        let (from, to) = (from.to_string(), to.to_string());
        self.run(move |d| d.rename(&from, &to, overwrite)).await
    }

    /// Applies a batch of changes with one publish (see [`Dirnode::apply`]).
    pub async fn apply(&self, changes: Vec<Change>) -> Result<BatchReport, DirectoryError> {
        self.run(move |d| d.apply(&changes)).await
    }
}

/// Directory operations over a grid.
#[derive(Clone, Debug)]
pub struct DirectoryClient {
    files: MutableClient,
}

impl DirectoryClient {
    pub fn new(files: MutableClient) -> Self {
        DirectoryClient { files }
    }

    pub fn files(&self) -> &MutableClient {
        &self.files
    }

    pub fn params(&self) -> MutableParams {
        self.files.params()
    }

    /// Creates a new empty directory (key from the pool) and opens it.
    pub async fn create(&self, format: MutableFormat) -> Result<NetDirectory, DirectoryError> {
        let (wcap, _) = self.files.create(format, b"").await?;
        self.open(&Cap::Dir(NodeCap::MutableWrite(wcap)))
    }

    /// Creates a new directory as the child `name` of `parent` and opens it.
    pub async fn create_subdirectory(
        &self,
        parent: &NetDirectory,
        name: &str,
        format: MutableFormat,
    ) -> Result<NetDirectory, DirectoryError> {
        let child = self.create(format).await?;
        parent.link(name, child.cap(), false).await?;
        Ok(child)
    }

    /// Opens a directory cap. Must be called inside a tokio runtime (the handle is captured for
    /// the blocking directory operations).
    pub fn open(&self, cap: &Cap) -> Result<NetDirectory, DirectoryError> {
        let Cap::Dir(node) = cap else {
            return Err(DirectoryError::NotADirectory);
        };
        let file = match node {
            NodeCap::MutableWrite(c) => FileCap::Write(c.clone()),
            NodeCap::MutableRead(c) => FileCap::Read(c.clone()),
            NodeCap::Lit(lit) => {
                let dir = Directory::unpack(DirKind::Immutable, &lit.data)?;
                return Ok(NetDirectory {
                    cap: cap.clone(),
                    inner: Inner::Literal(Arc::new(dir)),
                });
            }
            NodeCap::Chk(_) => {
                return Ok(NetDirectory {
                    cap: cap.clone(),
                    inner: Inner::Chk(Arc::new(ChkDir {
                        file: node.clone(),
                        files: self.files.clone(),
                        body: tokio::sync::OnceCell::new(),
                    })),
                });
            }
            NodeCap::ChkVerifier(_) | NodeCap::MutableVerifier(_) => {
                return Err(DirectoryError::Unsupported("verify caps cannot read"))
            }
        };
        let rt = tokio::runtime::Handle::try_current()
            .map_err(|_| DirectoryError::Unsupported("open outside a tokio runtime"))?;
        let store = NetDirStore {
            client: self.files.clone(),
            cap: file,
            rt,
            last: Mutex::new(None),
            publishes: Arc::default(),
        };
        Ok(NetDirectory {
            cap: cap.clone(),
            inner: Inner::Mutable(Arc::new(Dirnode::new(store))),
        })
    }

    /// Follows `path` (`a/b/c`; empty components ignored) from `root` and returns the cap of the
    /// last component (`root` itself for an empty path).
    pub async fn resolve(&self, root: &Cap, path: &str) -> Result<Cap, DirectoryError> {
        let mut cur = root.clone();
        let mut walked = String::new();
        for part in path.split('/').filter(|p| !p.is_empty()) {
            if !cur.is_directory() {
                return Err(DirectoryError::ChildNotADirectory(walked));
            }
            let dir = self.open(&cur)?;
            let child = dir
                .lookup(part)
                .await?
                .ok_or_else(|| DirectoryError::NoSuchChild(part.to_string()))?;
            cur = child_cap(&child)?;
            if !walked.is_empty() {
                walked.push('/');
            }
            walked.push_str(part);
        }
        Ok(cur)
    }

    /// Opens the directory at `path` under `root`.
    pub async fn open_path(&self, root: &Cap, path: &str) -> Result<NetDirectory, DirectoryError> {
        let cap = self.resolve(root, path).await?;
        if !cap.is_directory() {
            return Err(DirectoryError::ChildNotADirectory(path.to_string()));
        }
        self.open(&cap)
    }
}
