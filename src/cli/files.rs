//! The file verbs of the command line: `put`, `get`, `ls`, `mkdir`, `ln`, `mv`, `rm`.
//!
//! Each verb loads the node directory ([`Grid::open`]), reads its path arguments as tahoe does
//! ([`paths::parse_location`]) and works on the grid directly: there is no client node in
//! between, so a verb returns only once its writes are on the servers (mutable publishes are
//! checked against `shares.happy`). The semantics follow tahoe's CLI over its web API:
//! - `put FILE [TARGET]`: no TARGET uploads unlinked; `put FILE WRITECAP` and `put FILE PATH` onto
//!   an existing mutable file overwrite it in place; otherwise the new file is linked at PATH
//!   (missing intermediate directories are created) and its cap printed.
//! - `ln`/`mv FROM TO`: `TO` ending in `/` means "into that directory under FROM's name"; an
//!   existing file at TO is replaced, an existing directory is not (tahoe's
//!   `replace=only-files`). `mv` within one directory is a single rename publish.
//! - `ls --json` prints what tahoe's `?t=json` prints (Python `json.dumps(indent=1)` layout).
//!
//! Caps are printed only on stdout and only where tahoe prints them; errors never carry one.
//!
//! Memory: `put` of a local file to CHK streams it from disk (positioned reads; a convergent key
//! costs a first pass that hashes the file, as Tahoe's does, so the file is read twice); only
//! stdin input and mutable files (whose formats hold the whole contents) are read into memory.
//! `get` of a CHK file streams to its output.
//!
//! CPU: the verbs are short-lived processes that move large buffers (segments, 1 MiB PATCH
//! chunks, download batches), so [`tune_malloc`] keeps freed memory in the process instead of
//! unmapping and faulting it in again for every buffer; `get` writes its output file directly
//! ([`DirectFile`]) rather than through `tokio::fs`, which copies every buffer once more.
//!
//! Progress: a put or get of at least [`PROGRESS_MIN`] bytes draws a progress bar on stderr when,
//! and only when, stderr is a terminal; scripts (stderr a pipe or file) see no change at all.

use super::grid::{default_node_dir, Grid};
use super::paths::{parse_location, Location};
use anyhow::{anyhow, bail, Context};
use clap::{Args, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use lafs::cap::{Cap, MutableFormat, NodeCap};
use lafs::client::directory::{child_cap, NetDirectory};
use lafs::client::immutable::{self, DownloadOptions, FileSource, UploadOptions, VecSource};
use lafs::client::secrets::ClientSecrets;
use lafs::dirnode::pyjson;
use lafs::dirnode::Child;
use lafs::immutable::{BoxError, PlaintextSource};
use serde_json::{Map, Value};
use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};

/// The format names of `--format` (case-insensitive, as tahoe's).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "UPPER")]
pub enum Format {
    Chk,
    Sdmf,
    Mdmf,
}

#[derive(Subcommand, Debug)]
pub enum FileCommand {
    /// Upload a file (stdin for `-`) and print its cap.
    Put(PutArgs),
    /// Download a file to OUTFILE, or to stdout.
    Get(GetArgs),
    /// List a directory.
    Ls(LsArgs),
    /// Create a directory and print its cap.
    Mkdir(MkdirArgs),
    /// Link FROM (a path or a cap) at TO.
    Ln(TwoPaths),
    /// Move FROM to TO.
    Mv(TwoPaths),
    /// Unlink a file or directory from its parent.
    #[command(alias = "unlink")]
    Rm(RmArgs),
}

#[derive(Args, Debug)]
pub struct PutArgs {
    /// Create a mutable file (in the format of tahoe.cfg's mutable.format unless --format).
    #[arg(short = 'm', long)]
    pub mutable: bool,
    /// CHK (immutable), SDMF or MDMF (the last two imply --mutable).
    #[arg(long, ignore_case = true)]
    pub format: Option<Format>,
    /// The local file (`-` for stdin).
    pub file: String,
    /// Where to link the upload: PATH, alias:PATH, CAP/PATH, or a mutable write cap to overwrite.
    pub target: Option<String>,
}

#[derive(Args, Debug)]
pub struct GetArgs {
    pub source: String,
    pub outfile: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct LsArgs {
    /// Print tahoe's JSON description of the node.
    #[arg(long)]
    pub json: bool,
    /// The directory (default `tahoe:`).
    pub source: Option<String>,
}

#[derive(Args, Debug)]
pub struct MkdirArgs {
    /// SDMF or MDMF (the default is SDMF, as tahoe's).
    #[arg(long, ignore_case = true)]
    pub format: Option<Format>,
    pub target: Option<String>,
}

#[derive(Args, Debug)]
pub struct TwoPaths {
    pub from: String,
    pub to: String,
}

#[derive(Args, Debug)]
pub struct RmArgs {
    pub path: String,
}

/// Runs a file verb against the node directory `node_dir` (default `~/.tahoe`).
pub fn run(node_dir: Option<PathBuf>, cmd: FileCommand) -> anyhow::Result<()> {
    tune_malloc();
    let basedir = node_dir.unwrap_or_else(default_node_dir);
    // Multi-threaded: directory operations block on the runtime from tokio's blocking pool.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async move {
        let grid = Grid::open(&basedir)?;
        // Not locked: the CHK download writes to stdout from a blocking thread.
        let mut out = std::io::stdout();
        match cmd {
            FileCommand::Put(a) => put(&grid, a, &mut out).await,
            FileCommand::Get(a) => get(&grid, a, &mut out).await,
            FileCommand::Ls(a) => ls(&grid, a, &mut out).await,
            FileCommand::Mkdir(a) => mkdir(&grid, a, &mut out).await,
            FileCommand::Ln(a) => link_or_move(&grid, a, false, &mut out).await,
            FileCommand::Mv(a) => link_or_move(&grid, a, true, &mut out).await,
            FileCommand::Rm(a) => rm(&grid, a).await,
        }
    })
}

fn location(grid: &Grid, arg: &str) -> anyhow::Result<Location> {
    parse_location(&grid.node.aliases, arg)
}

/// The cap a location leads to.
pub(super) async fn resolve(grid: &Grid, loc: &Location) -> anyhow::Result<Cap> {
    if loc.path.is_empty() {
        return Ok(loc.root.clone());
    }
    grid.dirs
        .resolve(&loc.root, &loc.path_text())
        .await
        .with_context(|| format!("cannot find '{}'", loc.path_text()))
}

/// Opens the directory at `components` under `root`, creating missing directories on the way
/// (what tahoe's web API does for a PUT or mkdir below missing directories).
async fn ensure_dir(
    grid: &Grid,
    root: &Cap,
    components: &[String],
) -> anyhow::Result<NetDirectory> {
    let mut dir = grid
        .dirs
        .open(root)
        .context("the root is not a directory")?;
    for (i, name) in components.iter().enumerate() {
        let walked = components[..=i].join("/");
        dir = match dir.lookup(name).await? {
            Some(child) => {
                let cap = child_cap(&child)?;
                if !cap.is_directory() {
                    bail!("'{walked}' is not a directory");
                }
                grid.dirs.open(&cap)?
            }
            None => grid
                .dirs
                .create_subdirectory(&dir, name, MutableFormat::Sdmf)
                .await
                .with_context(|| format!("creating directory '{walked}'"))?,
        };
    }
    Ok(dir)
}

/// The parent directory of `loc` (created if missing) and the name in it.
async fn parent_and_name(grid: &Grid, loc: &Location) -> anyhow::Result<(NetDirectory, String)> {
    let Some(name) = loc.name() else {
        bail!("a path below the directory is needed here");
    };
    let parent = ensure_dir(grid, &loc.root, &loc.path[..loc.path.len() - 1]).await?;
    if !parent.is_writeable() {
        bail!("the directory holding '{}' is read-only", loc.path_text());
    }
    Ok((parent, name.to_string()))
}

/// glibc malloc serves blocks above its mmap threshold (dynamic, from 128 KiB) with fresh
/// mappings and trims the heap top above twice that, so each segment-sized or chunk-sized
/// buffer freed and allocated again costs page faults and page clearing (10–15% of a
/// `put`'s CPU). A file verb is one short process whose peak memory is bounded by its
/// pipeline (a few tens of MiB), so keep freed memory for reuse: only blocks of 64 MiB and
/// more are mapped on their own, and the heap is trimmed only above 128 MiB of free top.
fn tune_malloc() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters (glibc serialises it with the arenas'
    // locks); it takes no pointers.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 64 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 128 << 20);
    }
}

/// An output file written from the async task itself: `tokio::fs::File` copies each buffer
/// into its own and hands the copy to the blocking pool. A write to a local file goes to the
/// page cache and is short; on a multi-threaded runtime it runs in `block_in_place`, so the
/// other tasks of this worker move on meanwhile.
struct DirectFile(std::fs::File);

impl tokio::io::AsyncWrite for DirectFile {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let f = &mut self.get_mut().0;
        let multi = tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
        Poll::Ready(if multi {
            tokio::task::block_in_place(|| f.write(buf))
        } else {
            f.write(buf)
        })
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// The input of `put`: a local file (read when needed, streamed for CHK) or stdin (buffered).
enum Input {
    File(PathBuf),
    Stdin(Vec<u8>),
}

impl Input {
    fn open(file: &str) -> anyhow::Result<Input> {
        if file == "-" {
            let mut data = Vec::new();
            std::io::stdin()
                .read_to_end(&mut data)
                .context("reading stdin")?;
            Ok(Input::Stdin(data))
        } else {
            let p = PathBuf::from(file);
            // Fail before touching the grid when the file cannot be read.
            std::fs::File::open(&p).with_context(|| format!("reading {file}"))?;
            Ok(Input::File(p))
        }
    }

    /// The whole contents (mutable files are built in memory).
    fn bytes(&self) -> anyhow::Result<std::borrow::Cow<'_, [u8]>> {
        match self {
            Input::Stdin(d) => Ok(std::borrow::Cow::Borrowed(d)),
            Input::File(p) => Ok(std::borrow::Cow::Owned(
                std::fs::read(p).with_context(|| format!("reading {}", p.display()))?,
            )),
        }
    }
}

/// Transfers of at least this many bytes get a progress bar (on a terminal).
pub const PROGRESS_MIN: u64 = 1 << 20;

/// A progress bar of `total` bytes on stderr, or a hidden one unless stderr is a terminal and
/// the transfer is long enough to be worth one.
fn progress_bar(total: u64, what: &str) -> ProgressBar {
    if total < PROGRESS_MIN || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(
        "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(what.to_string());
    bar
}

/// A plaintext source that advances a progress bar by the bytes read. The bar's length counts
/// every planned pass (two for a convergent upload: hashing, then encoding).
struct ProgressSource<P> {
    inner: P,
    bar: ProgressBar,
    /// In the first of the two passes (the bar says "hashing").
    hashing: bool,
}

impl<P: PlaintextSource> PlaintextSource for ProgressSource<P> {
    fn size(&self) -> u64 {
        self.inner.size()
    }

    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), BoxError> {
        self.inner.read_at(offset, buf)?;
        // A pass repeated after a server failed reads again: never past the end of the bar.
        let len = self.bar.length().unwrap_or(0);
        let pos = (self.bar.position() + buf.len() as u64).min(len);
        self.bar.set_position(pos);
        if self.hashing && pos >= self.inner.size() {
            // The first pass (the convergent hash) is over: the encoding pass uploads.
            self.hashing = false;
            self.bar.set_message("uploading");
        }
        Ok(())
    }
}

/// An output that advances a progress bar by the bytes written.
struct ProgressWriter<W> {
    inner: W,
    bar: ProgressBar,
}

impl<W: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for ProgressWriter<W> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &r {
            self.bar.inc(*n as u64);
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

fn mutable_format(f: Format) -> Option<MutableFormat> {
    match f {
        Format::Chk => None,
        Format::Sdmf => Some(MutableFormat::Sdmf),
        Format::Mdmf => Some(MutableFormat::Mdmf),
    }
}

/// Overwrites a mutable file in place, with the happiness check.
async fn overwrite(grid: &Grid, cap: &Cap, data: &[u8]) -> anyhow::Result<()> {
    let Cap::File(NodeCap::MutableWrite(w)) = cap else {
        bail!("only a mutable file's write cap can be overwritten");
    };
    let out = grid
        .files()
        .overwrite(w, data)
        .await
        .context("overwriting the mutable file")?;
    grid.check_mutable_happiness(&out)
}

/// Uploads the input as a new file and returns its cap.
async fn upload(grid: &Grid, input: &Input, mutable: Option<MutableFormat>) -> anyhow::Result<Cap> {
    match mutable {
        Some(format) => {
            let data = input.bytes()?;
            let (w, out) = grid
                .files()
                .create(format, &data)
                .await
                .context("creating the mutable file")?;
            grid.check_mutable_happiness(&out)?;
            Ok(Cap::File(NodeCap::MutableWrite(w)))
        }
        None => match input {
            Input::Stdin(d) => upload_immutable(grid, VecSource(d.clone())).await,
            Input::File(p) => {
                let source =
                    FileSource::open(p).with_context(|| format!("reading {}", p.display()))?;
                upload_immutable(grid, source).await
            }
        },
    }
}

/// A CHK upload (LIT for 55 bytes or less), convergent with `private/convergence`; the
/// uploader fails unless servers-of-happiness reaches `shares.happy`.
async fn upload_immutable<P: PlaintextSource + Send + 'static>(
    grid: &Grid,
    source: P,
) -> anyhow::Result<Cap> {
    let mut opts = UploadOptions::convergent(grid.encoding_params(), &grid.convergence);
    opts.preferred = grid.node.config.client.peers_preferred.clone();
    let secrets = ClientSecrets::from_lease_secret(&grid.lease_secret);
    // Two passes: the convergent hash, then the encoding.
    let bar = progress_bar(source.size().saturating_mul(2), "hashing");
    let source = ProgressSource {
        inner: source,
        bar: bar.clone(),
        hashing: true,
    };
    let r = immutable::upload(&grid.servers, &secrets, source, &opts).await;
    bar.finish_and_clear();
    let r = r.context("uploading the immutable file")?;
    Ok(Cap::File(r.cap))
}

async fn put(grid: &Grid, a: PutArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let mutable = match a.format {
        Some(f @ (Format::Sdmf | Format::Mdmf)) => mutable_format(f),
        Some(Format::Chk) if a.mutable => bail!("--mutable and --format=CHK contradict"),
        Some(Format::Chk) => None,
        None if a.mutable => Some(grid.mutable_format),
        None => None,
    };
    let input = Input::open(&a.file)?;
    let Some(target) = a.target else {
        let cap = upload(grid, &input, mutable).await?;
        writeln!(out, "{cap}")?;
        return Ok(());
    };
    let mut loc = location(grid, &target)?;
    if loc.path.is_empty() {
        // `put FILE WRITECAP`: overwrite in place.
        if !loc.bare_cap {
            bail!("put needs a name to link the file under");
        }
        match &loc.root {
            Cap::File(NodeCap::MutableWrite(_)) => {
                overwrite(grid, &loc.root, &input.bytes()?).await?;
                writeln!(out, "{}", loc.root)?;
                return Ok(());
            }
            Cap::File(_) => bail!("the target cap is not a mutable write cap"),
            _ => bail!("put into a directory needs a name (CAP/NAME)"),
        }
    }
    if loc.trailing_slash {
        // `put FILE dir/`: under the local file's name.
        let name = std::path::Path::new(&a.file)
            .file_name()
            .and_then(|n| n.to_str())
            .filter(|_| a.file != "-")
            .ok_or_else(|| anyhow!("put from stdin into a directory needs a name"))?;
        loc.path.push(name.to_string());
    }
    let (parent, name) = parent_and_name(grid, &loc).await?;
    if let Some(existing) = parent.lookup(&name).await? {
        // Tahoe edits an existing mutable file in place.
        if let Ok(cap @ Cap::File(NodeCap::MutableWrite(_))) = child_cap(&existing) {
            overwrite(grid, &cap, &input.bytes()?).await?;
            writeln!(out, "{cap}")?;
            return Ok(());
        }
    }
    let cap = upload(grid, &input, mutable).await?;
    parent
        .link(&name, &cap, true)
        .await
        .with_context(|| format!("linking '{}'", loc.path_text()))?;
    writeln!(out, "{cap}")?;
    Ok(())
}

/// Reads the whole contents of a file cap.
async fn read_file(grid: &Grid, cap: &Cap) -> anyhow::Result<Vec<u8>> {
    let node = match cap {
        Cap::File(n) => n,
        Cap::Dir(_) => bail!("it is a directory, not a file"),
        Cap::Unknown(_) => bail!("it is a cap of an unknown kind"),
    };
    match node {
        NodeCap::Lit(l) => Ok(l.data.clone()),
        NodeCap::MutableWrite(w) => Ok(grid.files().read_writeable(w, None).await?.data),
        NodeCap::MutableRead(r) => Ok(grid.files().read(r, None).await?.data),
        NodeCap::Chk(_) => read_immutable(grid, cap).await,
        NodeCap::ChkVerifier(_) | NodeCap::MutableVerifier(_) => {
            bail!("a verify cap cannot read a file")
        }
    }
}

fn download_options(grid: &Grid) -> DownloadOptions {
    DownloadOptions {
        preferred: grid.node.config.client.peers_preferred.clone(),
        ..DownloadOptions::default()
    }
}

async fn read_immutable(grid: &Grid, cap: &Cap) -> anyhow::Result<Vec<u8>> {
    let Cap::File(node) = cap else {
        bail!("not a file cap");
    };
    let (data, _) = immutable::download_bytes(&grid.servers, node, &download_options(grid)).await?;
    Ok(data)
}

/// Streams a CHK file to `outfile` or stdout (memory bounded by the downloader's window).
async fn stream_immutable(
    grid: &Grid,
    node: &NodeCap,
    outfile: Option<&Path>,
) -> anyhow::Result<()> {
    let opts = download_options(grid);
    let size = match node {
        NodeCap::Chk(c) => c.size,
        _ => 0,
    };
    let bar = progress_bar(size, "downloading");
    let r = async {
        match outfile {
            Some(p) => {
                let f = std::fs::File::create(p)
                    .with_context(|| format!("creating {}", p.display()))?;
                let mut w = ProgressWriter {
                    inner: DirectFile(f),
                    bar: bar.clone(),
                };
                immutable::download(&grid.servers, node, &mut w, &opts).await?;
                let f = w.inner.0;
                tokio::task::spawn_blocking(move || f.sync_all())
                    .await
                    .context("syncing the output")??;
            }
            None => {
                let mut w = ProgressWriter {
                    inner: tokio::io::stdout(),
                    bar: bar.clone(),
                };
                immutable::download(&grid.servers, node, &mut w, &opts).await?;
            }
        }
        Ok(())
    }
    .await;
    bar.finish_and_clear();
    r
}

async fn get(grid: &Grid, a: GetArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let loc = location(grid, &a.source)?;
    let cap = resolve(grid, &loc).await?;
    if let Cap::File(node @ NodeCap::Chk(_)) = &cap {
        out.flush()?;
        return stream_immutable(grid, node, a.outfile.as_deref())
            .await
            .with_context(|| format!("cannot read '{}'", display_source(&loc)));
    }
    let data = read_file(grid, &cap)
        .await
        .with_context(|| format!("cannot read '{}'", display_source(&loc)))?;
    match a.outfile {
        Some(p) => {
            std::fs::write(&p, &data).with_context(|| format!("writing {}", p.display()))?;
        }
        None => {
            out.write_all(&data)?;
            out.flush()?;
        }
    }
    Ok(())
}

/// How a location is named in messages: its path, or "the cap" (never the cap itself).
fn display_source(loc: &Location) -> String {
    if loc.path.is_empty() {
        "the given cap".to_string()
    } else {
        loc.path_text()
    }
}

async fn ls(grid: &Grid, a: LsArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let loc = location(grid, a.source.as_deref().unwrap_or("tahoe:"))?;
    let cap = resolve(grid, &loc).await?;
    if !cap.is_directory() {
        if a.json {
            let (kind, attrs) = node_json(&cap, None);
            let text = json_indent1(&Value::Array(vec![Value::from(kind), Value::Object(attrs)]));
            write!(out, "{text}\n\n")?;
        } else {
            writeln!(out, "{}", loc.name().unwrap_or(""))?;
        }
        return Ok(());
    }
    let dir = grid.dirs.open(&cap)?;
    let listing = dir
        .list()
        .await
        .with_context(|| format!("cannot list '{}'", display_source(&loc)))?;
    if a.json {
        let mut kids = Map::new();
        for (name, child) in listing.iter() {
            let (kind, attrs) = child_json(child);
            kids.insert(
                name.to_string(),
                Value::Array(vec![Value::from(kind), Value::Object(attrs)]),
            );
        }
        let mut contents = Map::new();
        contents.insert("children".into(), Value::Object(kids));
        let (_, attrs) = node_json(&cap, None);
        for key in ["ro_uri", "rw_uri", "verify_uri", "mutable"] {
            if let Some(v) = attrs.get(key) {
                contents.insert(key.into(), v.clone());
            }
        }
        let data = Value::Array(vec![Value::from("dirnode"), Value::Object(contents)]);
        // tahoe prints the web API's body (which ends in a newline) with print().
        write!(out, "{}\n\n", json_indent1(&data))?;
    } else {
        let mut names: Vec<&str> = listing.iter().map(|(n, _)| n).collect();
        names.sort_unstable();
        for n in names {
            writeln!(out, "{n}")?;
        }
    }
    Ok(())
}

/// Tahoe's `get_filenode_metadata` / dirnode attributes, then the caps of the node
/// (`rw_uri`, `ro_uri`, `verify_uri`), with `metadata` between them when given (the order of
/// tahoe's dict insertions, which `json.dumps` keeps).
fn node_json(cap: &Cap, metadata: Option<Value>) -> (&'static str, Map<String, Value>) {
    let mut m = Map::new();
    let kind = match cap {
        Cap::File(node) => {
            m.insert("mutable".into(), Value::Bool(node.is_mutable()));
            let (format, size) = match node {
                NodeCap::MutableWrite(c) => (mutable_format_name(c.format), None),
                NodeCap::MutableRead(c) => (mutable_format_name(c.format), None),
                NodeCap::MutableVerifier(c) => (mutable_format_name(c.format), None),
                NodeCap::Chk(c) => ("CHK", Some(c.size)),
                NodeCap::ChkVerifier(c) => ("CHK", Some(c.size)),
                NodeCap::Lit(l) => ("CHK", Some(l.data.len() as u64)),
            };
            m.insert("format".into(), Value::from(format));
            if let Some(s) = size {
                m.insert("size".into(), Value::from(s));
            }
            "filenode"
        }
        Cap::Dir(node) => {
            m.insert("mutable".into(), Value::Bool(node.is_mutable()));
            "dirnode"
        }
        Cap::Unknown(_) => "unknown",
    };
    if let Some(md) = metadata {
        m.insert("metadata".into(), md);
    }
    if let Cap::Unknown(_) = cap {
        return (kind, m);
    }
    let writeable = cap.node().is_some_and(|n| !n.is_readonly());
    if writeable {
        m.insert("rw_uri".into(), Value::from(cap.to_string()));
    }
    if let Some(ro) = cap.readonly() {
        m.insert("ro_uri".into(), Value::from(ro.to_string()));
    }
    if let Some(v) = cap.verifier() {
        m.insert("verify_uri".into(), Value::from(v.to_string()));
    }
    (kind, m)
}

fn mutable_format_name(f: MutableFormat) -> &'static str {
    match f {
        MutableFormat::Sdmf => "SDMF",
        MutableFormat::Mdmf => "MDMF",
    }
}

/// One child of a `?t=json` listing.
fn child_json(child: &Child) -> (&'static str, Map<String, Value>) {
    let metadata = Value::Object(child.metadata.as_map().clone());
    match child_cap(child) {
        Ok(cap @ (Cap::File(_) | Cap::Dir(_))) => node_json(&cap, Some(metadata)),
        _ => {
            // Unknown node: its caps as stored.
            let mut m = Map::new();
            m.insert("metadata".into(), metadata);
            if let Some(rw) = child.rw_uri() {
                m.insert(
                    "rw_uri".into(),
                    Value::from(String::from_utf8_lossy(rw).into_owned()),
                );
            }
            if let Some(ro) = child.ro_uri() {
                m.insert(
                    "ro_uri".into(),
                    Value::from(String::from_utf8_lossy(ro).into_owned()),
                );
            }
            ("unknown", m)
        }
    }
}

/// Python's `json.dumps(v, indent=1)`: items separated by `,` and a newline, one space of
/// indentation per level, `": "` after keys, ASCII-only escapes, Python float reprs (leaves are
/// written by [`pyjson::dumps`]).
fn json_indent1(v: &Value) -> String {
    fn go(v: &Value, level: usize, out: &mut String) {
        match v {
            Value::Array(items) if !items.is_empty() => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    out.push_str(if i == 0 { "\n" } else { ",\n" });
                    out.push_str(&" ".repeat(level + 1));
                    go(item, level + 1, out);
                }
                out.push('\n');
                out.push_str(&" ".repeat(level));
                out.push(']');
            }
            Value::Object(map) if !map.is_empty() => {
                out.push('{');
                for (i, (k, item)) in map.iter().enumerate() {
                    out.push_str(if i == 0 { "\n" } else { ",\n" });
                    out.push_str(&" ".repeat(level + 1));
                    out.push_str(&pyjson::dumps(&Value::String(k.clone())));
                    out.push_str(": ");
                    go(item, level + 1, out);
                }
                out.push('\n');
                out.push_str(&" ".repeat(level));
                out.push('}');
            }
            leaf => out.push_str(&pyjson::dumps(leaf)),
        }
    }
    let mut out = String::new();
    go(v, 0, &mut out);
    out
}

async fn mkdir(grid: &Grid, a: MkdirArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let format = match a.format {
        None | Some(Format::Sdmf) => MutableFormat::Sdmf,
        Some(Format::Mdmf) => MutableFormat::Mdmf,
        Some(Format::Chk) => bail!("directories are SDMF or MDMF"),
    };
    let Some(target) = a.target else {
        let dir = grid
            .dirs
            .create(format)
            .await
            .context("creating the directory")?;
        writeln!(out, "{}", dir.cap())?;
        return Ok(());
    };
    let loc = location(grid, &target)?;
    let (parent, name) = parent_and_name(grid, &loc).await?;
    if parent.lookup(&name).await?.is_some() {
        bail!("'{}' already exists", loc.path_text());
    }
    let dir = grid
        .dirs
        .create_subdirectory(&parent, &name, format)
        .await
        .with_context(|| format!("creating directory '{}'", loc.path_text()))?;
    writeln!(out, "{}", dir.cap())?;
    Ok(())
}

async fn link_or_move(
    grid: &Grid,
    a: TwoPaths,
    moving: bool,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let from = location(grid, &a.from)?;
    if moving && from.path.is_empty() {
        bail!("mv needs a path to move, not a bare cap");
    }
    let cap = resolve(grid, &from).await?;
    let mut to = location(grid, &a.to)?;
    if to.trailing_slash || to.path.is_empty() {
        // "mv foo.txt bar/" == "mv foo.txt bar/foo.txt"
        let Some(name) = from.name() else {
            bail!("the target needs a name when the source is a bare cap");
        };
        to.path.push(name.to_string());
    }
    let (parent, name) = parent_and_name(grid, &to).await?;
    if let Some(existing) = parent.lookup(&name).await? {
        if child_cap(&existing).is_ok_and(|c| c.is_directory()) {
            bail!("You can't overwrite a directory with a file");
        }
    }
    let same_dir = moving
        && from.root == to.root
        && from.path[..from.path.len() - 1] == to.path[..to.path.len() - 1];
    if same_dir {
        if let Some(src_name) = from.name() {
            if src_name != name {
                parent
                    .rename(src_name, &name, true)
                    .await
                    .context("renaming")?;
            }
            writeln!(out, "OK")?;
            return Ok(());
        }
    }
    parent
        .link(&name, &cap, true)
        .await
        .with_context(|| format!("linking '{}'", to.path_text()))?;
    if moving {
        let (src_parent, src_name) = parent_and_name(grid, &from).await?;
        src_parent
            .remove(&src_name)
            .await
            .context("Error deleting original after move")?;
    }
    writeln!(out, "OK")?;
    Ok(())
}

async fn rm(grid: &Grid, a: RmArgs) -> anyhow::Result<()> {
    let loc = location(grid, &a.path)?;
    if loc.path.is_empty() {
        bail!("rm needs a path below a directory");
    }
    let parent_loc = loc.parent();
    let parent_cap = resolve(grid, &parent_loc).await?;
    let parent = grid
        .dirs
        .open(&parent_cap)
        .with_context(|| format!("the parent of '{}' is not a directory", loc.path_text()))?;
    let name = loc.name().unwrap_or_default();
    parent
        .remove(name)
        .await
        .with_context(|| format!("cannot remove '{}'", loc.path_text()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Expected texts are what CPython's `json.dumps(v, indent=1)` prints for these values.
    #[test]
    fn json_indent_matches_python() {
        let v: Value = serde_json::from_str(
            r#"["dirnode", {"children": {}, "mutable": true, "l": [], "n": [1, "\u00e9"]}]"#,
        )
        .unwrap();
        let expected = "[\n \"dirnode\",\n {\n  \"children\": {},\n  \"mutable\": true,\n  \"l\": [],\n  \"n\": [\n   1,\n   \"\\u00e9\"\n  ]\n }\n]";
        assert_eq!(json_indent1(&v), expected);
    }
}
